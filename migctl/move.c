/* The `move` verb: live-migrate a VM to another host, with progress while it runs. */
#include <errno.h>
#include <inttypes.h>
#include <getopt.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/json-util.h"
#include "common/util.h"
#include "migctl/migctl-internal.h"

#define MOVE_TIMEOUT_DEFAULT (3600 * USEC_PER_SEC)
#define PROGRESS_INTERVAL_MS 500

static const char move_help[] =
	"Usage: migctl [GLOBAL OPTIONS] move NAME HOST [OPTIONS]\n"
	"\n"
	"Live-migrate the VM NAME (adopted with 'migctl vm adopt') from this host to HOST with\n"
	"QEMU's pre-copy. libvirt's control connection and QEMU's migration stream (with every\n"
	"parallel connection) go to local sockets that migrd carries to HOST over its transport:\n"
	"compressed, TLS-encrypted, or RDMA, as configured for that peer. HOST first checks that\n"
	"it can run the VM (emulator, kernel, disks); on any failure the VM keeps running here\n"
	"and the error says which side failed and why.\n"
	"\n"
	"Convergence: the downtime limit starts at --downtime; when pre-copy has not finished\n"
	"after --converge-timeout, migrd switches to post-copy if --postcopy allows it, else\n"
	"doubles the limit every quarter of that time up to --max-downtime, then aborts with\n"
	"the VM still running here. Auto-converge (CPU throttling) is on unless disabled.\n"
	"With compression QEMU gets the limit times the stream's compression ratio, so the\n"
	"limit holds even if what is left when the guest stops does not compress.\n"
	"\n"
	"--compress auto compresses only where it moves the guest faster: on a link slower than\n"
	"the destination's QEMU takes the stream. HOST reports how long its QEMU kept it\n"
	"waiting; where QEMU, not the link, sets the pace, auto sends uncompressed and spares\n"
	"both hosts the CPU.\n"
	"\n"
	"Options (defaults from [vm] and [transport]/[peer HOST] in migrd.conf):\n"
	"  --native                 libvirt's own connections (qemu+tcp), nothing carried\n"
	"  --parallel-connections N QEMU's parallel (multifd) migration with N channels\n"
	"  --compress auto|off|N    zstd on the carried stream (auto: if the link is the limit)\n"
	"  --encrypt yes|no         TLS on the carried stream\n"
	"  --transport tcp|rdma|auto\n"
	"  --bandwidth MIB          cap the migration at MIB MiB/s (0: unlimited)\n"
	"  --downtime MS            the initial downtime limit (default 300)\n"
	"  --max-downtime MS        the cap of the steps (default 2000)\n"
	"  --converge-timeout S     pre-copy time before escalating (default 60, 0: never)\n"
	"  --postcopy               allow post-copy when pre-copy does not converge\n"
	"  --no-auto-converge       no CPU throttling\n"
	"  --timeout S              give up waiting for migrd after S seconds (default 3600)\n"
	"  -h, --help               this help\n"
	"\n"
	"Progress shows on a terminal; with --json, one JSON object per line: progress events\n"
	"({\"event\":\"progress\",...}) every half second, then the result.\n"
	"\n"
	"Example:\n"
	"  $ migctl move vm1 hostB --compress auto\n"
	"  vm1 moved to hostB in 4.12 s: downtime 41 ms, 512.0MiB of memory, 131.2MiB on the\n"
	"  wire (3.9x), TLS, zstd auto\n";

static int parse_u64(const char *s, uint64_t max, uint64_t *ret)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || v > max || s[0] == '-')
		return -EINVAL;
	*ret = v;
	return 0;
}

static void print_progress(const struct migctl *m, json_t *p, bool tty)
{
	char done[32], total[32], rate[32], dirty[32], wire[32];
	uint64_t processed = (uint64_t)json_integer_value(json_object_get(p, "processed"));
	uint64_t tot = (uint64_t)json_integer_value(json_object_get(p, "total"));
	uint64_t remaining = (uint64_t)json_integer_value(json_object_get(p, "remaining"));
	uint64_t bps = (uint64_t)json_integer_value(json_object_get(p, "bps"));

	if (m->json) {
		json_object_set_new(p, "event", json_string("progress"));
		(void)json_dumpf(p, m->out, JSON_COMPACT);
		fputc('\n', m->out);
		fflush(m->out);
		return;
	}
	if (!tty)
		return;
	format_bytes_short(done, sizeof(done), processed);
	format_bytes_short(total, sizeof(total), tot);
	format_bytes_short(rate, sizeof(rate), bps);
	format_bytes_short(dirty, sizeof(dirty),
			   (uint64_t)json_integer_value(json_object_get(p, "dirty_rate")));
	format_bytes_short(wire, sizeof(wire),
			   (uint64_t)json_integer_value(json_object_get(p, "wire_bytes")));
	fprintf(m->err,
		"\r%-9s iter %-3" PRId64 " %8s/%-8s %8s/s dirty %8s/s wire %8s  downtime~%" PRId64
		"ms ETA %4.0fs ",
		strna(json_string_value(json_object_get(p, "phase"))),
		(int64_t)json_integer_value(json_object_get(p, "iteration")), done, total, rate,
		dirty, wire,
		(int64_t)json_integer_value(json_object_get(p, "expected_downtime_ms")),
		bps ? (double)remaining / (double)bps : 0.0);
	fflush(m->err);
}

int verb_move(const struct migctl *m, int argc, char **argv)
{
	enum {
		ARG_NATIVE = 0x100,
		ARG_PARALLEL,
		ARG_COMPRESS,
		ARG_ENCRYPT,
		ARG_TRANSPORT,
		ARG_BANDWIDTH,
		ARG_DOWNTIME,
		ARG_MAX_DOWNTIME,
		ARG_CONVERGE,
		ARG_POSTCOPY,
		ARG_NO_AUTO,
		ARG_TIMEOUT,
	};
	static const struct option options[] = {
		{"help", no_argument, NULL, 'h'},
		{"native", no_argument, NULL, ARG_NATIVE},
		{"parallel-connections", required_argument, NULL, ARG_PARALLEL},
		{"compress", required_argument, NULL, ARG_COMPRESS},
		{"encrypt", required_argument, NULL, ARG_ENCRYPT},
		{"transport", required_argument, NULL, ARG_TRANSPORT},
		{"bandwidth", required_argument, NULL, ARG_BANDWIDTH},
		{"downtime", required_argument, NULL, ARG_DOWNTIME},
		{"max-downtime", required_argument, NULL, ARG_MAX_DOWNTIME},
		{"converge-timeout", required_argument, NULL, ARG_CONVERGE},
		{"postcopy", no_argument, NULL, ARG_POSTCOPY},
		{"no-auto-converge", no_argument, NULL, ARG_NO_AUTO},
		{"timeout", required_argument, NULL, ARG_TIMEOUT},
		{},
	};
	_cleanup_json_ json_t *params = json_object(), *reply = NULL, *status_params = NULL;
	_cleanup_free_ char *line = NULL;
	_cleanup_close_ int fd = -EBADF;
	struct migctl mm = *m;
	bool tty = isatty(fileno(m->err)) && !m->json, shown = false;
	usec_t deadline;
	json_t *result;
	uint64_t u;
	size_t len;
	int c, r;

	if (!params)
		return migctl_report_error(m, -ENOMEM);
	mm.timeout = MOVE_TIMEOUT_DEFAULT;
	optind = 0;
	while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
		const char *key = NULL;
		uint64_t max = 0;

		switch (c) {
		case 'h':
			fputs(move_help, m->out);
			return MIGCTL_EXIT_OK;
		case ARG_NATIVE:
			json_object_set_new(params, "native", json_true());
			continue;
		case ARG_POSTCOPY:
			json_object_set_new(params, "postcopy", json_true());
			continue;
		case ARG_NO_AUTO:
			json_object_set_new(params, "auto_converge", json_false());
			continue;
		case ARG_COMPRESS:
			if (streq(optarg, "auto") || streq(optarg, "off"))
				json_object_set_new(params, "compress", json_string(optarg));
			else {
				char *end;
				long l = strtol(optarg, &end, 10);
				if (*end || end == optarg || l < -7 || l > 19)
					return migctl_usage_error(m, "move",
								  "--compress takes auto, off or a "
								  "zstd level -7..19");
				json_object_set_new(params, "compress", json_integer(l));
			}
			continue;
		case ARG_ENCRYPT:
			if (!streq(optarg, "yes") && !streq(optarg, "no"))
				return migctl_usage_error(m, "move", "--encrypt takes yes or no");
			json_object_set_new(params, "encrypt", json_boolean(streq(optarg, "yes")));
			continue;
		case ARG_TRANSPORT:
			json_object_set_new(params, "transport", json_string(optarg));
			continue;
		case ARG_PARALLEL:
			key = "parallel", max = 32;
			break;
		case ARG_BANDWIDTH:
			key = "bandwidth", max = 1 << 20;
			break;
		case ARG_DOWNTIME:
			key = "downtime_ms", max = 3600 * 1000;
			break;
		case ARG_MAX_DOWNTIME:
			key = "max_downtime_ms", max = 3600 * 1000;
			break;
		case ARG_CONVERGE:
			key = "converge_timeout_s", max = 86400;
			break;
		case ARG_TIMEOUT:
			if (parse_u64(optarg, 7 * 86400, &u) < 0 || u == 0)
				return migctl_usage_error(m, "move",
							  "--timeout takes seconds (1 to a week)");
			mm.timeout = u * USEC_PER_SEC;
			continue;
		default:
			return migctl_option_error(m, "move", c, argv);
		}
		if (parse_u64(optarg, max, &u) < 0)
			return migctl_usage_error(m, "move", "%s takes a number from 0 to %" PRIu64,
						  argv[optind - 1], max);
		json_object_set_new(params, key, json_integer((json_int_t)u));
	}
	if (argc - optind != 2)
		return migctl_usage_error(m, "move", "needs the VM's NAME and the HOST to move to");
	json_object_set_new(params, "name", json_string(argv[optind]));
	json_object_set_new(params, "host", json_string(argv[optind + 1]));
	status_params = json_pack("{s:s}", "name", argv[optind]);
	if (!status_params)
		return migctl_report_error(m, -ENOMEM);

	deadline = migctl_deadline_after(mm.timeout);
	r = migctl_connect(mm.socket_path, deadline, &fd);
	if (r >= 0)
		r = migctl_send_request(fd, "vm-move", params, deadline);
	if (r < 0)
		return migctl_report_error(m, r);
	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};

		r = poll(&pfd, 1, PROGRESS_INTERVAL_MS);
		if (r < 0 && errno != EINTR)
			return migctl_report_error(m, -errno);
		if (r > 0)
			break;
		if (now_usec(CLOCK_MONOTONIC) > deadline)
			return migctl_report_error(m, -ETIMEDOUT);
		if (tty || m->json) {
			_cleanup_json_ json_t *st = NULL;
			struct migctl q = *m;

			q.timeout = 5 * USEC_PER_SEC;
			if (migctl_call(&q, "vm-move-status", status_params, &st) >= 0 &&
			    json_is_object(json_object_get(st, "ok"))) {
				print_progress(m, json_object_get(st, "ok"), tty);
				shown = shown || tty;
			}
		}
	}
	if (shown)
		fputc('\n', m->err);
	r = migctl_read_reply(fd, mm.reply_max, deadline, &line, &len);
	if (r >= 0)
		r = migctl_reply_parse(line, len, MIGCTL_REQUEST_ID, &reply);
	if (r < 0)
		return migctl_report_error(m, r);
	r = migctl_reply_result(m, reply, &result);
	if (r != MIGCTL_EXIT_OK)
		return r;
	if (m->json)
		return migctl_print_json(m, result);
	{
		char data[32], wire[32];
		uint64_t d = (uint64_t)json_integer_value(json_object_get(result, "data_bytes"));
		uint64_t w = (uint64_t)json_integer_value(json_object_get(result, "wire_bytes"));
		bool native = json_is_true(json_object_get(result, "native"));
		int level = (int)json_integer_value(json_object_get(result, "compress_level"));
		bool autoz = json_is_true(json_object_get(result, "compress_auto"));
		const char *check;
		/* The mode asked for; the ratio printed says what it gained. */
		const char *zstd = autoz ? "zstd auto" : level ? "zstd" : "uncompressed";

		format_bytes(data, sizeof(data), d);
		format_bytes(wire, sizeof(wire), w);
		fprintf(m->out, "%s moved to %s in %.2f s: downtime %" PRId64 " ms, %s of memory",
			argv[optind], argv[optind + 1],
			(double)json_integer_value(json_object_get(result, "wall_ms")) / 1000.0,
			(int64_t)json_integer_value(json_object_get(result, "downtime_ms")), data);
		if (native)
			fputs(", native libvirt migration", m->out);
		else
			fprintf(m->out, ", %s on the wire (%.1fx), %s, %s%s", wire,
				w ? (double)d / (double)w : 0.0,
				json_is_true(json_object_get(result, "encrypted")) ? "TLS"
										   : "plain",
				zstd,
				json_is_true(json_object_get(result, "postcopy")) ? ", post-copy"
										  : "");
		check = json_string_value(json_object_get(result, "stream_check"));
		if (check && streq(check, "identical"))
			fputs(", stream verified end to end", m->out);
		fputc('\n', m->out);
		if (check && streq(check, "differ"))
			fprintf(m->err,
				"warning: the migration stream reached %s altered; the guest there "
				"may be damaged (migrd's journal on this host has the digests)\n",
				argv[optind + 1]);
		else if (check && !streq(check, "identical"))
			fprintf(m->err,
				"note: the migration stream could not be checked end to end (%s)\n",
				check);
	}
	return MIGCTL_EXIT_OK;
}
