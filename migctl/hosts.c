/* The `hosts` verb: every host the cluster knows, one aligned row each. */
#include <errno.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/json-util.h"
#include "migctl/migctl-internal.h"

static const char hosts_help[] =
	"Usage: migctl [GLOBAL OPTIONS] hosts [-h]\n"
	"\n"
	"Show every host the cluster knows, sorted by node id, with its membership and the load\n"
	"it last published (hosts publish metrics every second; an offline host shows '-').\n"
	"\n"
	"Columns:\n"
	"  NAME            host name; '(local)' marks the host whose migrd answered\n"
	"  NODEID          corosync node id\n"
	"  ONLINE          whether the host is in the current membership\n"
	"  QUORATE         whether that host last reported its partition as quorate\n"
	"  COORD           '*' on the coordinator, which makes the cluster's decisions\n"
	"  CPU%            CPU busy over the last second\n"
	"  MEM             memory used/total (used = total - available)\n"
	"  PSI CPU/MEM/IO  pressure stall 'some' avg10 in percent: the share of the last 10 s in\n"
	"                  which some task waited for CPU, memory or I/O; '-' where the host has\n"
	"                  no /proc/pressure file for it\n"
	"  LOAD1           1-minute load average\n"
	"\n"
	"Example:\n"
	"  $ migctl hosts\n"
	"  NAME        NODEID  ONLINE  QUORATE  COORD  CPU%  MEM         PSI CPU/MEM/IO  LOAD1\n"
	"  h1 (local)       1  yes     yes      *       3.2  1.2G/23.4G  0.0/0.0/-        0.10\n"
	"  h2               2  yes     yes             61.0  7.9G/23.4G  12.5/0.3/1.1     1.87\n"
	"  h3               3  no      no                 -  -           -                   -\n"
	"\n"
	"With 'migctl --json hosts', prints migrd's result object instead.\n";

static const struct table_column hosts_columns[] = {
	{.header = "NAME"},
	{.header = "NODEID", .right = true},
	{.header = "ONLINE"},
	{.header = "QUORATE"},
	{.header = "COORD"},
	{.header = "CPU%", .right = true},
	{.header = "MEM"},
	{.header = "PSI CPU/MEM/IO"},
	{.header = "LOAD1", .right = true},
};

static char *format_name(char *buf, size_t len, json_t *host)
{
	format_json_string(buf, len, json_object_get(host, "name"));
	if (json_is_true(json_object_get(host, "local")))
		strncat(buf, " (local)", len - strlen(buf) - 1);
	return buf;
}

static char *format_mem(char *buf, size_t len, json_t *metrics)
{
	json_t *used = json_object_get(metrics, "mem_used"),
	       *total = json_object_get(metrics, "mem_total");
	char u[32], t[32];

	if (!json_is_integer(used) || !json_is_integer(total) || json_integer_value(used) < 0 ||
	    json_integer_value(total) < 0) {
		strscpy(buf, "-", len);
		return buf;
	}
	snprintf(buf, len, "%s/%s",
		 format_bytes_short(u, sizeof(u), (uint64_t)json_integer_value(used)),
		 format_bytes_short(t, sizeof(t), (uint64_t)json_integer_value(total)));
	return buf;
}

/* "some" avg10 of cpu/memory/io, "-" for a resource that is null (no /proc/pressure file). */
static char *format_psi(char *buf, size_t len, json_t *metrics)
{
	static const char *const resources[] = {"cpu", "memory", "io"};
	json_t *psi = json_object_get(metrics, "psi");
	char v[3][32];

	if (!json_is_object(psi)) {
		strscpy(buf, "-", len);
		return buf;
	}
	for (size_t i = 0; i < ELEMENTSOF(resources); i++)
		format_json_number(v[i], sizeof(v[i]),
				   json_object_get(json_object_get(psi, resources[i]), "some"), 1);
	snprintf(buf, len, "%s/%s/%s", v[0], v[1], v[2]);
	return buf;
}

static int hosts_add_row(struct table *t, json_t *host)
{
	char name[300], nodeid[32], online[8], quorate[8], cpu[32], mem[80], psi[112], load[32];
	json_t *metrics = json_object_get(host, "metrics");
	json_t *busy = json_object_get(metrics, "cpu_busy_pct");
	const char *cells[] = {
		format_name(name, sizeof(name), host),
		format_json_integer(nodeid, sizeof(nodeid), json_object_get(host, "nodeid")),
		format_json_bool(online, sizeof(online), json_object_get(host, "online")),
		format_json_bool(quorate, sizeof(quorate), json_object_get(host, "quorate")),
		json_is_true(json_object_get(host, "coordinator")) ? "*" : "",
		/* migrd reports -1 before it has two samples to compare. */
		json_is_number(busy) && json_number_value(busy) >= 0
			? format_json_number(cpu, sizeof(cpu), busy, 1)
			: "-",
		format_mem(mem, sizeof(mem), metrics),
		format_psi(psi, sizeof(psi), metrics),
		format_json_number(load, sizeof(load),
				   json_array_get(json_object_get(metrics, "load"), 0), 2),
	};

	return table_add_row(t, cells);
}

int hosts_print(FILE *f, json_t *result)
{
	_cleanup_table_ struct table *t = NULL;
	json_t *hosts = json_object_get(result, "hosts");
	int r;

	if (!json_is_array(hosts))
		return -EBADMSG;
	if (json_array_size(hosts) == 0) {
		fputs("No hosts.\n", f);
		return 0;
	}
	t = table_new(hosts_columns, ELEMENTSOF(hosts_columns));
	if (!t)
		return -ENOMEM;
	for (size_t i = 0; i < json_array_size(hosts); i++) {
		r = hosts_add_row(t, json_array_get(hosts, i));
		if (r < 0)
			return r;
	}
	return table_print(t, f);
}

int verb_hosts(const struct migctl *m, int argc, char **argv)
{
	_cleanup_json_ json_t *reply = NULL;
	json_t *result;
	bool done;
	int r;

	r = migctl_parse_verb_args(m, argc, argv, "hosts", hosts_help, &done);
	if (done)
		return r;
	r = migctl_request(m, "hosts", NULL, &reply, &result);
	if (r != MIGCTL_EXIT_OK)
		return r;
	if (m->json)
		return migctl_print_json(m, result);
	r = hosts_print(m->out, result);
	return r < 0 ? migctl_report_error(m, r) : MIGCTL_EXIT_OK;
}
