/* The `run` verb: starts a container on this host. */
#include <errno.h>
#include <getopt.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/json-util.h"
#include "common/util.h"
#include "migctl/migctl-internal.h"

static const char run_help[] =
	"Usage: migctl [GLOBAL OPTIONS] run NAME [OPTIONS] -- CMD [ARG...]\n"
	"\n"
	"Start CMD as PID 1 of a container on this host: new PID, UTS, IPC and mount\n"
	"namespaces (and a network namespace with --netns), its own cgroup, its output in a\n"
	"log file (see 'migctl logs NAME'). It keeps running when migrd restarts.\n"
	"\n"
	"Options:\n"
	"  --cpus X         CPU quota in cores (e.g. 0.5)\n"
	"  --memory SIZE    memory limit (K, M, G suffixes; at least 4M)\n"
	"  --cwd DIR        working directory (default /)\n"
	"  --env K=V        an environment variable (repeat for more)\n"
	"  --netns          a network namespace of its own (only lo)\n"
	"  -h, --help       this help\n"
	"\n"
	"Example:\n"
	"  $ migctl run web1 --memory 512M -- python3 -m http.server 8080\n"
	"  web1 running as pid 4242\n";

int verb_run(const struct migctl *m, int argc, char **argv)
{
	enum { ARG_CPUS = 0x100, ARG_MEMORY, ARG_CWD, ARG_ENV, ARG_NETNS };
	static const struct option options[] = {
		{"help", no_argument, NULL, 'h'},
		{"cpus", required_argument, NULL, ARG_CPUS},
		{"memory", required_argument, NULL, ARG_MEMORY},
		{"cwd", required_argument, NULL, ARG_CWD},
		{"env", required_argument, NULL, ARG_ENV},
		{"netns", no_argument, NULL, ARG_NETNS},
		{},
	};
	_cleanup_json_ json_t *params = json_object(), *reply = NULL, *env = json_array(),
			      *cmd = json_array();
	json_t *result;
	uint64_t u;
	double cpus;
	char *end;
	int c, r;

	if (!params || !env || !cmd)
		return migctl_report_error(m, -ENOMEM);
	optind = 0;
	opterr = 0;
	/* '+': stop at the first non-option (NAME), then options, then "--" and the command. */
	while ((c = getopt_long(argc, argv, "+:h", options, NULL)) >= 0 || optind < argc) {
		if (c < 0) {
			if (streq(argv[optind], "--")) {
				optind++;
				break;
			}
			if (json_object_get(params, "name"))
				break; /* the command starts without "--" */
			json_object_set_new(params, "name", json_string(argv[optind++]));
			continue;
		}
		switch (c) {
		case 'h':
			fputs(run_help, m->out);
			return MIGCTL_EXIT_OK;
		case ARG_CPUS:
			cpus = strtod(optarg, &end);
			if (*end || cpus <= 0)
				return migctl_usage_error(m, "run", "invalid --cpus '%s'", optarg);
			json_object_set_new(params, "cpus", json_real(cpus));
			break;
		case ARG_MEMORY:
			if (parse_size(optarg, &u) < 0)
				return migctl_usage_error(m, "run", "invalid --memory '%s'",
							  optarg);
			json_object_set_new(params, "memory", json_integer((json_int_t)u));
			break;
		case ARG_CWD:
			json_object_set_new(params, "cwd", json_string(optarg));
			break;
		case ARG_ENV:
			json_array_append_new(env, json_string(optarg));
			break;
		case ARG_NETNS:
			json_object_set_new(params, "netns", json_true());
			break;
		default:
			return migctl_option_error(m, "run", c, argv);
		}
	}
	if (!json_object_get(params, "name"))
		return migctl_usage_error(m, "run", "needs a container NAME");
	for (; optind < argc; optind++)
		json_array_append_new(cmd, json_string(argv[optind]));
	if (json_array_size(cmd) == 0)
		return migctl_usage_error(m, "run",
					  "needs a command after NAME (use -- CMD ARG...)");
	json_object_set(params, "argv", cmd);
	if (json_array_size(env) > 0)
		json_object_set(params, "env", env);
	r = migctl_request(m, "run", params, &reply, &result);
	if (r != MIGCTL_EXIT_OK)
		return r;
	if (m->json)
		return migctl_print_json(m, result);
	fprintf(m->out, "%s running as pid %d\n",
		json_string_value(json_object_get(result, "name")),
		(int)json_integer_value(json_object_get(result, "pid")));
	return MIGCTL_EXIT_OK;
}
