/* The `ca` verb: the cluster CA and host certificates (init, issue), without migrd. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/json-util.h"
#include "migctl/migctl-internal.h"
#include "transport/transport.h"

/* Where a host's files go on that host, and so what its migrd.conf names. */
#define HOST_PKI_DIR TRANSPORT_PKI_DIR_DEFAULT

static const char ca_help[] =
	"Usage: migctl ca init [--dir DIR] [--cluster NAME]\n"
	"       migctl ca issue HOST [--dir DIR] [--out DIR]\n"
	"\n"
	"Set up the certificates migrd hosts authenticate each other with. Every connection\n"
	"between hosts is TLS 1.3 with certificates on both sides: a host is accepted only with\n"
	"a certificate signed by the cluster CA whose name is a cluster host. These commands do\n"
	"not need migrd; run them on one trusted machine, which keeps the CA key.\n"
	"\n"
	"  1. migctl ca init         once: create the cluster CA in " TRANSPORT_PKI_DIR_DEFAULT "\n"
	"  2. migctl ca issue HOST   for every host: a key and certificate for HOST and a copy\n"
	"                            of the CA certificate, in " TRANSPORT_PKI_DIR_DEFAULT
	"/hosts/HOST/\n"
	"\n"
	"Then copy each hosts/HOST/ directory to HOST as " HOST_PKI_DIR "/ and point the\n"
	"[transport] section of HOST's migrd.conf at the files (ca_file, cert_file, key_file);\n"
	"'ca issue' prints the lines.\n"
	"\n"
	"'migctl ca init --help' and 'migctl ca issue --help' explain each step.\n";

static const char ca_init_help[] =
	"Usage: migctl ca init [--dir DIR] [--cluster NAME]\n"
	"\n"
	"Create the cluster CA: DIR/ca.key, its private key (EC P-256, mode 0600), and\n"
	"DIR/ca.crt, its self-signed certificate (valid 10 years). DIR is created with mode 0700.\n"
	"Keep ca.key secret and on this machine only: whoever holds it can admit hosts to the\n"
	"cluster. An existing CA is never replaced, since hosts certified by it would no longer\n"
	"be accepted.\n"
	"\n"
	"Options:\n"
	"  --dir DIR        where the CA lives (default: " TRANSPORT_PKI_DIR_DEFAULT ")\n"
	"  --cluster NAME   the cluster's name, shown in the certificates (default: migrd)\n"
	"  -h, --help       show this help\n"
	"\n"
	"Next: 'migctl ca issue HOST' for every host.\n"
	"\n"
	"Example:\n"
	"  $ migctl ca init --cluster prod\n"
	"  Created the cluster CA in " TRANSPORT_PKI_DIR_DEFAULT ":\n"
	"    " TRANSPORT_PKI_DIR_DEFAULT "/ca.crt  certificate: every host gets a copy\n"
	"    " TRANSPORT_PKI_DIR_DEFAULT "/ca.key  private key: keep it secret, here\n"
	"  Next, for every host: migctl ca issue HOST\n";

static const char ca_issue_help[] =
	"Usage: migctl ca issue HOST [--dir DIR] [--out DIR]\n"
	"\n"
	"Issue a key and certificate for HOST, signed by the CA in DIR, into one directory:\n"
	"  HOST.key  its private key (EC P-256, mode 0600)\n"
	"  HOST.crt  its certificate, named HOST, valid 2 years, for TLS client and server use\n"
	"  ca.crt    a copy of the CA certificate\n"
	"HOST is the host's cluster name: [host] name in its migrd.conf, by default its hostname.\n"
	"Existing files are never replaced; remove the directory to issue anew (e.g. to renew).\n"
	"\n"
	"Copy the directory to HOST as " HOST_PKI_DIR "/ (the key must stay private) and\n"
	"put in HOST's migrd.conf:\n"
	"  [transport]\n"
	"  ca_file = " HOST_PKI_DIR "/ca.crt\n"
	"  cert_file = " HOST_PKI_DIR "/HOST.crt\n"
	"  key_file = " HOST_PKI_DIR "/HOST.key\n"
	"\n"
	"Options:\n"
	"  --dir DIR   where the CA lives (default: " TRANSPORT_PKI_DIR_DEFAULT ")\n"
	"  --out DIR   where to write the files (default: DIR/hosts/HOST)\n"
	"  -h, --help  show this help\n"
	"\n"
	"Example:\n"
	"  $ migctl ca issue h2\n"
	"  Issued a key and certificate for h2 in " TRANSPORT_PKI_DIR_DEFAULT "/hosts/h2:\n"
	"    h2.crt  h2.key  ca.crt\n"
	"  ...\n";

enum {
	ARG_DIR = 0x100,
	ARG_CLUSTER,
	ARG_OUT,
};

struct ca_args {
	const char *dir;
	const char *cluster;
	const char *out;
	const char *host;
};

/* Parses the options of one subcommand (argv[0] is the subcommand). Returns an exit status;
 * *ret_done when the caller should return it right away. */
static int ca_parse(const struct migctl *m, int argc, char **argv, bool issue, struct ca_args *a,
		    bool *ret_done)
{
	static const struct option options[] = {
		{"dir", required_argument, NULL, ARG_DIR},
		{"cluster", required_argument, NULL, ARG_CLUSTER},
		{"out", required_argument, NULL, ARG_OUT},
		{"help", no_argument, NULL, 'h'},
		{},
	};
	const char *verb = issue ? "ca issue" : "ca init";
	int c;

	*ret_done = true;
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", options, NULL)) >= 0) {
		switch (c) {
		case 'h':
			fputs(issue ? ca_issue_help : ca_init_help, m->out);
			return MIGCTL_EXIT_OK;
		case ARG_DIR:
			a->dir = optarg;
			break;
		case ARG_CLUSTER:
			if (issue)
				return migctl_usage_error(m, verb,
							  "--cluster belongs to 'ca init'; 'ca "
							  "issue' takes the cluster from the CA");
			a->cluster = optarg;
			break;
		case ARG_OUT:
			if (!issue)
				return migctl_usage_error(m, verb, "--out belongs to 'ca issue'");
			a->out = optarg;
			break;
		default:
			return migctl_option_error(m, verb, c, argv);
		}
	}
	if (strempty(a->dir) || (a->out && !*a->out) || (a->cluster && !*a->cluster))
		return migctl_usage_error(m, verb, "an option's value is empty");
	if (issue) {
		if (optind >= argc)
			return migctl_usage_error(m, verb, "the host name is missing");
		a->host = argv[optind++];
	}
	if (optind < argc)
		return migctl_usage_error(m, verb, "unexpected argument '%s'", argv[optind]);
	*ret_done = false;
	return MIGCTL_EXIT_OK;
}

static int ca_failed(const struct migctl *m, char *error)
{
	fprintf(m->err, "migctl: %s\n", strna(error));
	free(error);
	return MIGCTL_EXIT_FAILURE;
}

static int ca_init(const struct migctl *m, int argc, char **argv)
{
	struct ca_args a = {.dir = TRANSPORT_PKI_DIR_DEFAULT};
	char *error = NULL;
	bool done;
	int r;

	r = ca_parse(m, argc, argv, false, &a, &done);
	if (done)
		return r;
	if (transport_pki_ca_init(a.dir, a.cluster, &error) < 0)
		return ca_failed(m, error);

	if (m->json) {
		_cleanup_json_ json_t *j = json_pack("{s:s, s:s+, s:s+}", "dir", a.dir, "ca_cert",
						     a.dir, "/" TRANSPORT_PKI_CA_CERT, "ca_key",
						     a.dir, "/" TRANSPORT_PKI_CA_KEY);

		return j ? migctl_print_json(m, j) : ca_failed(m, strdup("out of memory"));
	}
	fprintf(m->out,
		"Created the cluster CA in %1$s:\n"
		"  %1$s/" TRANSPORT_PKI_CA_CERT "  certificate: every host gets a copy\n"
		"  %1$s/" TRANSPORT_PKI_CA_KEY "  private key: keep it secret, here\n"
		"Next, for every host: migctl ca issue HOST%2$s%3$s\n",
		a.dir, streq(a.dir, TRANSPORT_PKI_DIR_DEFAULT) ? "" : " --dir ",
		streq(a.dir, TRANSPORT_PKI_DIR_DEFAULT) ? "" : a.dir);
	return MIGCTL_EXIT_OK;
}

static int ca_issue(const struct migctl *m, int argc, char **argv)
{
	struct ca_args a = {.dir = TRANSPORT_PKI_DIR_DEFAULT};
	_cleanup_free_ char *out = NULL;
	char *error = NULL;
	bool done;
	int r;

	r = ca_parse(m, argc, argv, true, &a, &done);
	if (done)
		return r;
	if (a.out)
		out = strdup(a.out);
	else if (asprintf(&out, "%s/hosts/%s", a.dir, a.host) < 0)
		out = NULL;
	if (!out)
		return ca_failed(m, strdup("out of memory"));
	if (transport_pki_issue(a.dir, a.host, out, &error) < 0)
		return ca_failed(m, error);

	if (m->json) {
		_cleanup_json_ json_t *j =
			json_pack("{s:s, s:s, s:{s:s, s:s++, s:s++}}", "host", a.host, "dir", out,
				  "config", "ca_file", HOST_PKI_DIR "/" TRANSPORT_PKI_CA_CERT,
				  "cert_file", HOST_PKI_DIR "/", a.host, ".crt", "key_file",
				  HOST_PKI_DIR "/", a.host, ".key");

		return j ? migctl_print_json(m, j) : ca_failed(m, strdup("out of memory"));
	}
	fprintf(m->out,
		"Issued a key and certificate for %1$s in %2$s:\n"
		"  %1$s.crt  %1$s.key  " TRANSPORT_PKI_CA_CERT "\n"
		"Copy them to %1$s (the key must stay private), e.g.:\n"
		"  ssh %1$s install -d -m 0700 " HOST_PKI_DIR "\n"
		"  scp -p %2$s/* %1$s:" HOST_PKI_DIR "/\n"
		"and put these lines in %1$s's migrd.conf:\n"
		"[transport]\n"
		"ca_file = " HOST_PKI_DIR "/" TRANSPORT_PKI_CA_CERT "\n"
		"cert_file = " HOST_PKI_DIR "/%1$s.crt\n"
		"key_file = " HOST_PKI_DIR "/%1$s.key\n",
		a.host, out);
	return MIGCTL_EXIT_OK;
}

int verb_ca(const struct migctl *m, int argc, char **argv)
{
	const char *sub = argc > 1 ? argv[1] : NULL;

	if (!sub)
		return migctl_usage_error(m, "ca", "expected 'init' or 'issue'");
	if (streq(sub, "-h") || streq(sub, "--help")) {
		fputs(ca_help, m->out);
		return MIGCTL_EXIT_OK;
	}
	if (streq(sub, "init"))
		return ca_init(m, argc - 1, argv + 1);
	if (streq(sub, "issue"))
		return ca_issue(m, argc - 1, argv + 1);
	return migctl_usage_error(m, "ca", "unknown subcommand '%s': expected 'init' or 'issue'",
				  sub);
}
