/* The `peer-test` verb: measures the link to a peer through a real migrd session. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/json-util.h"
#include "common/util.h"
#include "migctl/migctl-internal.h"

static const char peer_test_help[] =
	"Usage: migctl [GLOBAL OPTIONS] peer-test HOST [OPTIONS]\n"
	"\n"
	"Measure the link from this host to HOST the way migrations use it: a real transport\n"
	"session (mutual TLS, N parallel streams, framing with checksums, adaptive zstd), like\n"
	"iperf for migrd. The peer checks every byte; a mismatch fails the test.\n"
	"\n"
	"Options:\n"
	"  --size SIZE        bytes to send (K, M, G suffixes; default 1G)\n"
	"  --streams N        parallel data streams (default: [transport] streams)\n"
	"  --no-compress      do not compress (same as --level off)\n"
	"  --level L          auto (default), off, or a fixed zstd level from -7 to 19\n"
	"  --source SRC       zeros, random (default) or an absolute file path whose bytes are\n"
	"                     sent over and over (e.g. a memory image)\n"
	"  --plain            no encryption on the data streams (still authenticated)\n"
	"  --transport T      tcp, rdma or auto (RDMA needs --plain; auto says what it chose)\n"
	"  -h, --help         this help\n"
	"\n"
	"Example:\n"
	"  $ migctl peer-test h2 --size 2G --streams 4\n"
	"  peer          h2 (4 streams, TLS, tcp)\n"
	"  sent          2.0GiB in 1.9s: 1.1GiB/s\n"
	"  on the wire   2.0GiB (ratio 1.00, zstd level 0 = off)\n"
	"  cpu           sender 2.10s, receiver 1.70s\n"
	"  verified      yes\n";

int peer_test_print(FILE *f, json_t *r)
{
	char b1[32], b2[32], b3[32];
	json_t *cpu = json_object_get(r, "cpu_seconds");
	json_t *rcpu = json_object_get(cpu, "receiver");
	const char *peer = json_string_value(json_object_get(r, "peer"));
	double secs = json_number_value(json_object_get(r, "seconds"));
	double bps = json_number_value(json_object_get(r, "throughput_bytes_per_sec"));
	int level = (int)json_integer_value(json_object_get(r, "level"));

	if (!peer)
		return -EBADMSG;
	fprintf(f, "peer          %s (%d streams, %s, %s)\n", peer,
		(int)json_integer_value(json_object_get(r, "streams")),
		json_is_true(json_object_get(r, "encrypted")) ? "TLS" : "plain",
		strna(json_string_value(json_object_get(r, "transport"))));
	fprintf(f, "sent          %s in %.2fs: %s/s (%.2f Gbit/s)\n",
		format_bytes(b1, sizeof(b1),
			     (uint64_t)json_integer_value(json_object_get(r, "bytes"))),
		secs, format_bytes(b2, sizeof(b2), (uint64_t)bps), bps * 8 / 1e9);
	fprintf(f, "on the wire   %s (ratio %.2f, zstd level %d%s)\n",
		format_bytes(b3, sizeof(b3),
			     (uint64_t)json_integer_value(json_object_get(r, "wire_bytes"))),
		json_number_value(json_object_get(r, "ratio")), level, level == 0 ? " = off" : "");
	if (json_is_number(rcpu))
		fprintf(f, "cpu           sender %.2fs, receiver %.2fs\n",
			json_number_value(json_object_get(cpu, "sender")), json_number_value(rcpu));
	if (json_is_string(json_object_get(r, "transport_note")))
		fprintf(f, "transport     %s\n",
			json_string_value(json_object_get(r, "transport_note")));
	fprintf(f, "verified      %s\n",
		json_is_true(json_object_get(r, "verified")) ? "yes" : "NO");
	return 0;
}

int verb_peer_test(const struct migctl *m, int argc, char **argv)
{
	enum {
		ARG_SIZE = 0x100,
		ARG_STREAMS,
		ARG_NO_COMPRESS,
		ARG_LEVEL,
		ARG_SOURCE,
		ARG_PLAIN,
		ARG_TRANSPORT,
	};
	static const struct option options[] = {
		{"help", no_argument, NULL, 'h'},
		{"size", required_argument, NULL, ARG_SIZE},
		{"streams", required_argument, NULL, ARG_STREAMS},
		{"no-compress", no_argument, NULL, ARG_NO_COMPRESS},
		{"level", required_argument, NULL, ARG_LEVEL},
		{"source", required_argument, NULL, ARG_SOURCE},
		{"plain", no_argument, NULL, ARG_PLAIN},
		{"transport", required_argument, NULL, ARG_TRANSPORT},
		{},
	};
	_cleanup_json_ json_t *params = json_object(), *reply = NULL;
	struct migctl mm = *m;
	json_t *result;
	uint64_t u;
	int c, r, level;

	if (!params)
		return migctl_report_error(m, -ENOMEM);
	optind = 0;
	opterr = 0;
	/* Options may follow HOST (glibc permutes): migctl peer-test h2 --size 2G. */
	while ((c = getopt_long(argc, argv, ":h", options, NULL)) >= 0) {
		switch (c) {
		case 'h':
			fputs(peer_test_help, m->out);
			return MIGCTL_EXIT_OK;
		case ARG_SIZE:
			if (parse_size(optarg, &u) < 0 || u == 0)
				return migctl_usage_error(m, "peer-test", "invalid --size '%s'",
							  optarg);
			json_object_set_new(params, "size", json_integer((json_int_t)u));
			break;
		case ARG_STREAMS:
			if (parse_uint64(optarg, &u) < 0 || u == 0 || u > 64)
				return migctl_usage_error(m, "peer-test",
							  "--streams must be 1 to 64, not '%s'",
							  optarg);
			json_object_set_new(params, "streams", json_integer((json_int_t)u));
			break;
		case ARG_NO_COMPRESS:
			json_object_set_new(params, "compress", json_string("off"));
			break;
		case ARG_LEVEL:
			if (streq(optarg, "auto") || streq(optarg, "off"))
				json_object_set_new(params, "compress", json_string(optarg));
			else if (parse_int(optarg, &level) >= 0 && level >= -7 && level <= 19)
				json_object_set_new(params, "compress", json_integer(level));
			else
				return migctl_usage_error(m, "peer-test",
							  "--level must be auto, off or -7..19");
			break;
		case ARG_SOURCE:
			json_object_set_new(params, "source", json_string(optarg));
			break;
		case ARG_PLAIN:
			json_object_set_new(params, "encrypt", json_false());
			break;
		case ARG_TRANSPORT:
			if (!streq(optarg, "tcp") && !streq(optarg, "rdma") &&
			    !streq(optarg, "auto"))
				return migctl_usage_error(m, "peer-test",
							  "--transport must be tcp, rdma or auto");
			json_object_set_new(params, "transport", json_string(optarg));
			break;
		default:
			return migctl_option_error(m, "peer-test", c, argv);
		}
	}
	if (optind != argc - 1)
		return migctl_usage_error(m, "peer-test", "needs exactly one HOST");
	json_object_set_new(params, "host", json_string(argv[optind]));
	/* A transfer takes as long as it takes; the stall detection lives in migrd. */
	mm.timeout = MAX(m->timeout, 3600 * USEC_PER_SEC);
	r = migctl_request(&mm, "peer-test", params, &reply, &result);
	if (r != MIGCTL_EXIT_OK)
		return r;
	if (m->json)
		return migctl_print_json(m, result);
	r = peer_test_print(m->out, result);
	return r < 0 ? migctl_report_error(m, r) : MIGCTL_EXIT_OK;
}
