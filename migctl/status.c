/* The `status` verb: this host's view of itself and of the cluster, as a key: value block. */
#include <errno.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/json-util.h"
#include "migctl/migctl-internal.h"

static const char status_help[] =
	"Usage: migctl [GLOBAL OPTIONS] status [-h]\n"
	"\n"
	"Show how migrd on this host sees itself and the cluster: its host name and corosync\n"
	"node id, whether corosync is connected, whether this host's partition is quorate and\n"
	"its copy of the cluster state synced, the member node ids, the coordinator (lowest node\n"
	"id of the quorate membership), the state epoch and hash (equal hash on two hosts = they\n"
	"agree), the number of workloads and migrd's uptime.\n"
	"\n"
	"Example:\n"
	"  $ migctl status\n"
	"         host: h1\n"
	"      node id: 1\n"
	"     corosync: connected\n"
	"      quorate: yes\n"
	"       synced: yes\n"
	"      members: 1 2 3\n"
	"  coordinator: h1 (node 1)\n"
	"        epoch: 4\n"
	"   state hash: 9f2c41d0\n"
	"    workloads: 0\n"
	"       uptime: 2h 13m\n"
	"\n"
	"With 'migctl --json status', prints migrd's result object instead.\n";

/* "1 2 3"; "-" when the field is not an array of integers. */
static char *format_members(char *buf, size_t len, json_t *members)
{
	size_t n = 0;

	strscpy(buf, "-", len);
	if (!json_is_array(members))
		return buf;
	if (json_array_size(members) == 0)
		strscpy(buf, "none", len);
	for (size_t i = 0; i < json_array_size(members); i++) {
		json_t *v = json_array_get(members, i);
		int k;

		if (!json_is_integer(v)) {
			strscpy(buf, "-", len);
			return buf;
		}
		k = snprintf(buf + n, len - n, "%s%" JSON_INTEGER_FORMAT, i ? " " : "",
			     json_integer_value(v));
		if (k < 0 || (size_t)k >= len - n)
			return buf; /* truncated: what fits is still true */
		n += (size_t)k;
	}
	return buf;
}

static char *format_coordinator(char *buf, size_t len, json_t *coord)
{
	char name[256], id[32];

	if (json_is_null(coord))
		strscpy(buf, "none", len);
	else if (!json_is_object(coord))
		strscpy(buf, "-", len);
	else
		snprintf(buf, len, "%s (node %s)",
			 format_json_string(name, sizeof(name), json_object_get(coord, "name")),
			 format_json_integer(id, sizeof(id), json_object_get(coord, "nodeid")));
	return buf;
}

int status_print(FILE *f, json_t *result)
{
	char host[256], nodeid[32], corosync[64], quorate[8], synced[8], members[512], coord[320],
		epoch[32], hash[256], workloads[32], uptime[64];
	json_t *v = json_object_get(result, "uptime_s");
	const struct key_value rows[] = {
		{"host", format_json_string(host, sizeof(host), json_object_get(result, "host"))},
		{"node id",
		 format_json_integer(nodeid, sizeof(nodeid), json_object_get(result, "nodeid"))},
		{"corosync", format_json_string(corosync, sizeof(corosync),
						json_object_get(result, "corosync"))},
		{"quorate",
		 format_json_bool(quorate, sizeof(quorate), json_object_get(result, "quorate"))},
		{"synced",
		 format_json_bool(synced, sizeof(synced), json_object_get(result, "synced"))},
		{"members",
		 format_members(members, sizeof(members), json_object_get(result, "members"))},
		{"coordinator",
		 format_coordinator(coord, sizeof(coord), json_object_get(result, "coordinator"))},
		{"epoch",
		 format_json_integer(epoch, sizeof(epoch), json_object_get(result, "epoch"))},
		{"state hash",
		 format_json_string(hash, sizeof(hash), json_object_get(result, "state_hash"))},
		{"workloads", format_json_integer(workloads, sizeof(workloads),
						  json_object_get(result, "workloads"))},
		{"uptime", format_uptime(uptime, sizeof(uptime),
					 json_is_number(v) ? json_number_value(v) : -1)},
	};

	if (!json_is_object(result))
		return -EBADMSG;
	print_key_values(f, rows, ELEMENTSOF(rows));
	return 0;
}

int verb_status(const struct migctl *m, int argc, char **argv)
{
	_cleanup_json_ json_t *reply = NULL;
	json_t *result;
	bool done;
	int r;

	r = migctl_parse_verb_args(m, argc, argv, "status", status_help, &done);
	if (done)
		return r;
	r = migctl_request(m, "status", NULL, &reply, &result);
	if (r != MIGCTL_EXIT_OK)
		return r;
	if (m->json)
		return migctl_print_json(m, result);
	r = status_print(m->out, result);
	return r < 0 ? migctl_report_error(m, r) : MIGCTL_EXIT_OK;
}
