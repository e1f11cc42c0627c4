/* The `logs` verb: a container's output, once or followed. */
#include <errno.h>
#include <getopt.h>
#include <string.h>
#include <time.h>

#include "common/cleanup.h"
#include "common/json-util.h"
#include "common/util.h"
#include "migctl/migctl-internal.h"

static const char logs_help[] =
	"Usage: migctl [GLOBAL OPTIONS] logs NAME [-f]\n"
	"\n"
	"Print what the container wrote to stdout and stderr. -f keeps following the log\n"
	"until the container ends (or Ctrl-C).\n";

int verb_logs(const struct migctl *m, int argc, char **argv)
{
	static const struct option options[] = {
		{"help", no_argument, NULL, 'h'},
		{"follow", no_argument, NULL, 'f'},
		{},
	};
	uint64_t offset = 0;
	bool follow = false;
	int c, r;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hf", options, NULL)) >= 0) {
		if (c == 'h') {
			fputs(logs_help, m->out);
			return MIGCTL_EXIT_OK;
		} else if (c == 'f')
			follow = true;
		else
			return migctl_option_error(m, "logs", c, argv);
	}
	if (optind != argc - 1)
		return migctl_usage_error(m, "logs", "needs exactly one container NAME");
	for (;;) {
		_cleanup_json_ json_t *params =
			json_pack("{s:s,s:I}", "name", argv[optind], "offset", (json_int_t)offset);
		_cleanup_json_ json_t *reply = NULL;
		json_t *result;
		uint64_t next = offset;
		const char *data;

		if (!params)
			return migctl_report_error(m, -ENOMEM);
		r = migctl_request(m, "logs", params, &reply, &result);
		if (r != MIGCTL_EXIT_OK)
			return r;
		data = json_string_value(json_object_get(result, "data"));
		(void)json_get_uint64(result, "offset", &next);
		if (data)
			fwrite(data, 1, json_string_length(json_object_get(result, "data")),
			       m->out);
		fflush(m->out);
		if (next > offset) {
			offset = next;
			continue; /* more may be waiting */
		}
		if (!follow || !json_is_true(json_object_get(result, "running")))
			return MIGCTL_EXIT_OK;
		nanosleep(&(struct timespec){0, 250 * 1000 * 1000}, NULL);
	}
}
