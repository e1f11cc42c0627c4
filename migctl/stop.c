/* The `stop` and `rm` verbs: end a container, forget a container. */
#include <errno.h>
#include <getopt.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/json-util.h"
#include "common/util.h"
#include "migctl/migctl-internal.h"

static const char stop_help[] =
	"Usage: migctl [GLOBAL OPTIONS] stop NAME [--timeout SECONDS]\n"
	"\n"
	"Stop a container: SIGTERM to its PID 1, and after the timeout (default 10 s) every\n"
	"process of its cgroup is killed. Returns once it is gone. The container stays listed\n"
	"(state 'stopped') with its log until 'migctl rm NAME'.\n";

static const char rm_help[] =
	"Usage: migctl [GLOBAL OPTIONS] rm NAME [--force]\n"
	"\n"
	"Forget a stopped container: its record, cgroup and log. --force kills it first if it\n"
	"is still running.\n";

static int name_verb(const struct migctl *m, int argc, char **argv, const char *verb,
		     const char *help)
{
	static const struct option options[] = {
		{"help", no_argument, NULL, 'h'},
		{"timeout", required_argument, NULL, 't'},
		{"force", no_argument, NULL, 'f'},
		{},
	};
	_cleanup_json_ json_t *params = json_object(), *reply = NULL;
	struct migctl mm = *m;
	json_t *result;
	uint64_t u;
	int c, r;

	if (!params)
		return migctl_report_error(m, -ENOMEM);
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", options, NULL)) >= 0) {
		if (c == 'h') {
			fputs(help, m->out);
			return MIGCTL_EXIT_OK;
		} else if (c == 't' && streq(verb, "stop")) {
			if (parse_uint64(optarg, &u) < 0 || u > 3600)
				return migctl_usage_error(m, verb, "invalid --timeout '%s'",
							  optarg);
			json_object_set_new(params, "timeout", json_integer((json_int_t)u));
			mm.timeout = MAX(m->timeout, (u + 15) * USEC_PER_SEC);
		} else if (c == 'f' && streq(verb, "rm")) {
			json_object_set_new(params, "force", json_true());
		} else
			return migctl_option_error(m, verb, c, argv);
	}
	if (optind != argc - 1)
		return migctl_usage_error(m, verb, "needs exactly one container NAME");
	json_object_set_new(params, "name", json_string(argv[optind]));
	if (streq(verb, "stop"))
		mm.timeout = MAX(mm.timeout, 30 * USEC_PER_SEC);
	r = migctl_request(&mm, verb, params, &reply, &result);
	if (r != MIGCTL_EXIT_OK)
		return r;
	if (m->json)
		return migctl_print_json(m, result);
	if (streq(verb, "stop"))
		fprintf(m->out, "%s %s\n", argv[optind],
			strna(json_string_value(json_object_get(result, "state"))));
	else
		fprintf(m->out, "%s removed\n", argv[optind]);
	return MIGCTL_EXIT_OK;
}

int verb_stop(const struct migctl *m, int argc, char **argv)
{
	return name_verb(m, argc, argv, "stop", stop_help);
}

int verb_rm(const struct migctl *m, int argc, char **argv)
{
	return name_verb(m, argc, argv, "rm", rm_help);
}
