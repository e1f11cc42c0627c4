/* The `list` verb: the workloads the cluster knows, one aligned row each. */
#include <errno.h>

#include "common/cleanup.h"
#include "common/json-util.h"
#include "migctl/migctl-internal.h"

static const char list_help[] =
	"Usage: migctl [GLOBAL OPTIONS] list [-h]\n"
	"\n"
	"Show the workloads the cluster knows, whichever host runs them.\n"
	"\n"
	"Columns:\n"
	"  NAME    workload name\n"
	"  KIND    'container' (checkpointed by migrd) or 'vm' (a libvirt domain)\n"
	"  HOST    the host that owns it now\n"
	"  STATE   e.g. running, stopped, migrating\n"
	"  MEMORY  its memory size, which is roughly what a migration has to copy\n"
	"\n"
	"Prints 'No workloads.' when there are none.\n"
	"\n"
	"Example:\n"
	"  $ migctl list\n"
	"  NAME  KIND       HOST  STATE      MEMORY\n"
	"  web1  container  h2    running  256.0MiB\n"
	"  db1   vm         h1    running    4.0GiB\n"
	"\n"
	"With 'migctl --json list', prints migrd's result object instead.\n";

static const struct table_column list_columns[] = {
	{.header = "NAME"},
	{.header = "KIND"},
	{.header = "HOST"},
	{.header = "STATE"},
	{.header = "MEMORY", .right = true},
};

int list_print(FILE *f, json_t *result)
{
	_cleanup_table_ struct table *t = NULL;
	json_t *workloads = json_object_get(result, "workloads");
	int r;

	if (!json_is_array(workloads))
		return -EBADMSG;
	if (json_array_size(workloads) == 0) {
		fputs("No workloads.\n", f);
		return 0;
	}
	t = table_new(list_columns, ELEMENTSOF(list_columns));
	if (!t)
		return -ENOMEM;
	for (size_t i = 0; i < json_array_size(workloads); i++) {
		json_t *w = json_array_get(workloads, i);
		char name[256], kind[64], host[256], state[64], memory[32];
		const char *cells[] = {
			format_json_string(name, sizeof(name), json_object_get(w, "name")),
			format_json_string(kind, sizeof(kind), json_object_get(w, "kind")),
			format_json_string(host, sizeof(host), json_object_get(w, "host")),
			format_json_string(state, sizeof(state), json_object_get(w, "state")),
			format_json_bytes(memory, sizeof(memory), json_object_get(w, "memory")),
		};

		r = table_add_row(t, cells);
		if (r < 0)
			return r;
	}
	return table_print(t, f);
}

int verb_list(const struct migctl *m, int argc, char **argv)
{
	_cleanup_json_ json_t *reply = NULL;
	json_t *result;
	bool done;
	int r;

	r = migctl_parse_verb_args(m, argc, argv, "list", list_help, &done);
	if (done)
		return r;
	r = migctl_request(m, "list", NULL, &reply, &result);
	if (r != MIGCTL_EXIT_OK)
		return r;
	if (m->json)
		return migctl_print_json(m, result);
	r = list_print(m->out, result);
	return r < 0 ? migctl_report_error(m, r) : MIGCTL_EXIT_OK;
}
