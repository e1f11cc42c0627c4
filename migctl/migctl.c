/* migctl's entry point: global options, the verb table, and argument helpers the verbs share. */
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "common/log.h"
#include "migctl/migctl-internal.h"
#include "migctl/migctl.h"

struct verb {
	const char *name;
	int (*run)(const struct migctl *m, int argc, char **argv);
	const char *summary;
};

/* Adding a verb: a file with verb_NAME() and its help text, a prototype, and a row here. */
static const struct verb verbs[] = {
	{"status", verb_status, "this host's view of itself and the cluster"},
	{"hosts", verb_hosts, "every host: membership, coordinator, CPU, memory, pressure, load"},
	{"list", verb_list, "workloads: name, kind, host, state, memory"},
	{"version", verb_version, "the versions of migctl and of migrd"},
	{"ca", verb_ca, "the cluster CA and host certificates (works without migrd)"},
	{"run", verb_run, "start a container on this host: CMD as PID 1 in new namespaces"},
	{"logs", verb_logs, "a container's output (-f to follow)"},
	{"checkpoint", verb_checkpoint, "write a container's complete state to an image directory"},
	{"restore", verb_restore, "restore a container from an image directory"},
	{"vm", verb_vm, "libvirt domains under migrd's care (vm adopt NAME, vm release NAME)"},
	{"move", verb_move, "live-migrate a VM to another host, carried by migrd (or --native)"},
	{"stop", verb_stop, "stop a container (SIGTERM, then kill after a timeout)"},
	{"rm", verb_rm, "forget a stopped container"},
	{"peer-test", verb_peer_test,
	 "measure the link to a peer through a real transport session"},
	{"image", verb_image, "decode a container checkpoint image (works without migrd)"},
};

enum {
	ARG_SOCKET = 0x100,
	ARG_TIMEOUT,
	ARG_JSON,
	ARG_VERSION,
};

static const struct option global_options[] = {
	{"socket", required_argument, NULL, ARG_SOCKET},
	{"timeout", required_argument, NULL, ARG_TIMEOUT},
	{"json", no_argument, NULL, ARG_JSON},
	{"help", no_argument, NULL, 'h'},
	{"version", no_argument, NULL, ARG_VERSION},
	{},
};

static void print_help(FILE *f)
{
	fputs("Usage: migctl [--socket PATH] [--timeout DURATION] [--json] VERB [ARGS...]\n"
	      "       migctl --help | --version\n"
	      "\n"
	      "Ask migrd, the live-migration daemon of this host, about the cluster.\n"
	      "Without a verb, migctl runs 'status'.\n"
	      "\n"
	      "Verbs:\n",
	      f);
	for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
		fprintf(f, "  %-10s %s\n", verbs[i].name, verbs[i].summary);
	fputs("\n"
	      "Global options (before the verb):\n"
	      "  --socket PATH       migrd's control socket\n"
	      "                      (default: $MIGRD_SOCKET, else " MIGCTL_SOCKET_DEFAULT ")\n"
	      "  --timeout DURATION  how long to wait for migrd, e.g. 500ms, 30s (default: 10s)\n"
	      "  --json              print migrd's result (or error) as one JSON document\n"
	      "  -h, --help          show this help; 'migctl VERB --help' explains a verb\n"
	      "  --version           print migctl's version\n"
	      "\n"
	      "Exit status: 0 success; 1 migrd answered with an error; 2 usage error;\n"
	      "69 migrd unreachable (not running, no permission, no reply in time).\n"
	      "\n"
	      "Examples:\n"
	      "  migctl status                  is this host quorate, synced, who coordinates?\n"
	      "  migctl hosts                   load and membership of every host\n"
	      "  migctl --json list | jq .      workloads, for scripts\n"
	      "  migctl --socket /tmp/h2.sock --timeout 2s hosts\n"
	      "\n"
	      "See migctl(8) for more.\n",
	      f);
}

static bool is_global_option(const char *arg)
{
	for (const struct option *o = global_options; o->name; o++) {
		size_t n = strlen(o->name);

		if (strneq(arg, "--", 2) && strneq(arg + 2, o->name, n) &&
		    (arg[2 + n] == 0 || arg[2 + n] == '='))
			return true;
	}
	return false;
}

int migctl_usage_error(const struct migctl *m, const char *verb, const char *format, ...)
{
	va_list ap;

	fputs("migctl: ", m->err);
	va_start(ap, format);
	vfprintf(m->err, format, ap);
	va_end(ap);
	fprintf(m->err, "\nTry 'migctl %s%s--help' for more information.\n",
		strempty(verb) ? "" : verb, strempty(verb) ? "" : " ");
	return MIGCTL_EXIT_USAGE;
}

int migctl_option_error(const struct migctl *m, const char *verb, int c, char **argv)
{
	/* getopt left the offending word before optind; for short options optopt has it too. */
	const char *arg = argv[optind - 1];

	if (c == ':')
		return migctl_usage_error(m, verb, "option '%s' needs an argument", arg);
	if (!strneq(arg, "--", 2))
		return migctl_usage_error(m, verb, "unknown option '-%c'", optopt);
	/* A known long option without arguments that got "=value" sets optopt to its id. */
	if (optopt != 0)
		return migctl_usage_error(m, verb, "option '%.*s' takes no argument",
					  (int)strcspn(arg, "="), arg);
	if (verb && is_global_option(arg))
		return migctl_usage_error(m, verb,
					  "'%s' is a global option and goes before the verb, e.g. "
					  "'migctl %s %s'",
					  arg, arg, verb);
	return migctl_usage_error(m, verb, "unknown option '%s'", arg);
}

int migctl_parse_verb_args(const struct migctl *m, int argc, char **argv, const char *verb,
			   const char *help, bool *ret_done)
{
	static const struct option options[] = {
		{"help", no_argument, NULL, 'h'},
		{},
	};
	int c;

	/* optind = 0 makes glibc's getopt start over (main already used it for global options). */
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+:h", options, NULL)) >= 0) {
		*ret_done = true;
		if (c == 'h') {
			fputs(help, m->out);
			return MIGCTL_EXIT_OK;
		}
		return migctl_option_error(m, verb, c, argv);
	}
	if (optind < argc) {
		*ret_done = true;
		return migctl_usage_error(m, verb, "'%s' takes no arguments, got '%s'", verb,
					  argv[optind]);
	}
	*ret_done = false;
	return MIGCTL_EXIT_OK;
}

#define SUN_PATH_MAX sizeof(((struct sockaddr_un *)NULL)->sun_path)

static int parse_socket_path(const struct migctl *m, const char *path, const char **ret)
{
	if (strempty(path))
		return migctl_usage_error(m, NULL, "the socket path is empty");
	if (strlen(path) >= SUN_PATH_MAX)
		return migctl_usage_error(m, NULL,
					  "socket path '%s' is too long (at most %zu bytes)", path,
					  SUN_PATH_MAX - 1);
	*ret = path;
	return MIGCTL_EXIT_OK;
}

int migctl_main(int argc, char **argv, FILE *out, FILE *err)
{
	struct migctl m = {
		.socket_path = MIGCTL_SOCKET_DEFAULT,
		.timeout = MIGCTL_TIMEOUT_DEFAULT,
		.reply_max = MIGCTL_REPLY_MAX,
		.out = out,
		.err = err,
	};
	const char *env = secure_getenv("MIGRD_SOCKET");
	const char *verb = "status";
	int c, r;

	if (!strempty(env)) {
		r = parse_socket_path(&m, env, &m.socket_path);
		if (r != 0)
			return r;
	}

	optind = 0;
	opterr = 0;
	/* "+": stop at the verb, whose options are its own. */
	while ((c = getopt_long(argc, argv, "+:h", global_options, NULL)) >= 0) {
		switch (c) {
		case ARG_SOCKET:
			r = parse_socket_path(&m, optarg, &m.socket_path);
			if (r != 0)
				return r;
			break;
		case ARG_TIMEOUT:
			if (parse_duration(optarg, &m.timeout) < 0 || m.timeout == 0)
				return migctl_usage_error(
					&m, NULL,
					"invalid --timeout '%s': expected a positive "
					"duration such as 500ms, 10s or 2m",
					optarg);
			break;
		case ARG_JSON:
			m.json = true;
			break;
		case 'h':
			print_help(out);
			return MIGCTL_EXIT_OK;
		case ARG_VERSION:
			fputs("migctl " MIGRD_VERSION "\n", out);
			return MIGCTL_EXIT_OK;
		default:
			return migctl_option_error(&m, NULL, c, argv);
		}
	}

	if (optind < argc)
		verb = argv[optind];
	for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
		if (!streq(verbs[i].name, verb))
			continue;
		if (optind < argc)
			r = verbs[i].run(&m, argc - optind, argv + optind);
		else {
			char *only[] = {(char *)verb, NULL};
			r = verbs[i].run(&m, 1, only);
		}
		if (fflush(out) != 0 || ferror(out)) {
			fputs("migctl: failed to write output\n", err);
			if (r == MIGCTL_EXIT_OK)
				r = MIGCTL_EXIT_FAILURE;
		}
		return r;
	}
	return migctl_usage_error(&m, NULL, "unknown verb '%s'", verb);
}
