/* The replicated cluster state: hosts and the owners of workloads. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common/common.h"
#include "checkpoint/workload.h"
#include "migrd/cluster-state.h"
#include "migrd/config.h"

static void host_done(struct cluster_host *h)
{
	free(h->name);
	free(h->address);
	*h = (struct cluster_host){0};
}

static void workload_done(struct cluster_workload *w)
{
	free(w->name);
	free(w->kind);
	free(w->host);
	*w = (struct cluster_workload){0};
}

void cluster_state_done(struct cluster_state *s)
{
	for (size_t i = 0; i < s->n_hosts; i++)
		host_done(&s->hosts[i]);
	free(s->hosts);
	for (size_t i = 0; i < s->n_workloads; i++)
		workload_done(&s->workloads[i]);
	free(s->workloads);
	*s = (struct cluster_state){0};
}

static int workload_set(struct cluster_workload *w, const char *name, const char *kind,
			const char *host, uint64_t moves)
{
	struct cluster_workload c = {
		.name = strdup(name), .kind = strdup(kind), .host = strdup(host), .moves = moves};

	if (!c.name || !c.kind || !c.host) {
		workload_done(&c);
		return -ENOMEM;
	}
	workload_done(w);
	*w = c;
	return 0;
}

static int host_copy(const struct cluster_host *h, struct cluster_host *ret)
{
	struct cluster_host c = {.nodeid = h->nodeid, .maintenance = h->maintenance};

	c.name = strdup(h->name);
	c.address = h->address ? strdup(h->address) : NULL;
	if (!c.name || (h->address && !c.address)) {
		host_done(&c);
		return -ENOMEM;
	}
	*ret = c;
	return 0;
}

int cluster_state_copy(const struct cluster_state *s, struct cluster_state *ret)
{
	struct cluster_state c = {.epoch = s->epoch};

	if (s->n_hosts > 0) {
		c.hosts = calloc(s->n_hosts, sizeof(*c.hosts));
		if (!c.hosts)
			return -ENOMEM;
	}
	for (size_t i = 0; i < s->n_hosts; i++) {
		if (host_copy(&s->hosts[i], &c.hosts[i]) < 0) {
			cluster_state_done(&c);
			return -ENOMEM;
		}
		c.n_hosts++;
	}
	if (s->n_workloads > 0) {
		c.workloads = calloc(s->n_workloads, sizeof(*c.workloads));
		if (!c.workloads) {
			cluster_state_done(&c);
			return -ENOMEM;
		}
	}
	for (size_t i = 0; i < s->n_workloads; i++) {
		const struct cluster_workload *w = &s->workloads[i];

		if (workload_set(&c.workloads[i], w->name, w->kind, w->host, w->moves) < 0) {
			cluster_state_done(&c);
			return -ENOMEM;
		}
		c.n_workloads++;
	}
	*ret = c;
	return 0;
}

json_t *cluster_state_to_json(const struct cluster_state *s)
{
	json_t *hosts = json_array();
	json_t *j;

	if (!hosts)
		return NULL;
	for (size_t i = 0; i < s->n_hosts; i++) {
		const struct cluster_host *h = &s->hosts[i];
		json_t *o =
			json_pack("{s:I,s:s,s:s*,s:b}", "nodeid", (json_int_t)h->nodeid, "name",
				  h->name, "address", h->address, "maintenance", h->maintenance);
		if (!o || json_array_append_new(hosts, o) < 0) {
			json_decref(hosts);
			return NULL;
		}
	}
	j = json_pack("{s:I,s:o}", "epoch", (json_int_t)s->epoch, "hosts", hosts);
	/* Only with owners: a state without them hashes as before they existed. */
	if (j && s->n_workloads > 0) {
		json_t *ws = json_array();

		for (size_t i = 0; ws && i < s->n_workloads; i++) {
			const struct cluster_workload *w = &s->workloads[i];
			json_t *o = json_pack("{s:s,s:s,s:s,s:I}", "name", w->name, "kind", w->kind,
					      "host", w->host, "moves", (json_int_t)w->moves);
			if (!o || json_array_append_new(ws, o) < 0) {
				json_decref(ws);
				ws = NULL;
			}
		}
		if (!ws || json_object_set_new(j, "workloads", ws) < 0) {
			json_decref(j);
			return NULL;
		}
	}
	return j;
}

bool cluster_address_valid(const char *a)
{
	if (strlen(a) > 255 || !*a)
		return false;
	for (const char *p = a; *p; p++)
		if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
			return false;
	return true;
}

static bool kind_valid(const char *k)
{
	return streq(k, "vm") || streq(k, "container");
}

/* Absent is fine (a state from before owners existed); sorted unique names, known hosts. */
static int workloads_from_json(json_t *ws, struct cluster_state *s)
{
	json_t *v;
	size_t i;

	if (!ws)
		return 0;
	if (!json_is_array(ws) || json_array_size(ws) > CLUSTER_MAX_WORKLOADS)
		return -EINVAL;
	if (json_array_size(ws) > 0) {
		s->workloads = calloc(json_array_size(ws), sizeof(*s->workloads));
		if (!s->workloads)
			return -ENOMEM;
	}
	json_array_foreach(ws, i, v)
	{
		const char *name, *kind, *host;
		uint64_t moves = 0;

		if (!json_is_object(v) || json_get_string(v, "name", &name) < 0 ||
		    json_get_string(v, "kind", &kind) < 0 ||
		    json_get_string(v, "host", &host) < 0 ||
		    (json_object_get(v, "moves") && json_get_uint64(v, "moves", &moves) < 0) ||
		    !workload_name_is_valid(name) || !kind_valid(kind) ||
		    !string_is_safe_name(host, MIGRD_HOST_NAME_MAX))
			return -EINVAL;
		if (s->n_workloads > 0 && strcmp(s->workloads[s->n_workloads - 1].name, name) >= 0)
			return -EINVAL;
		if (workload_set(&s->workloads[s->n_workloads], name, kind, host, moves) < 0)
			return -ENOMEM;
		s->n_workloads++;
	}
	return 0;
}

int cluster_state_from_json(json_t *j, struct cluster_state *ret)
{
	struct cluster_state s = {0};
	json_t *hosts, *v;
	size_t i;
	uint64_t u;
	int r;

	if (!json_is_object(j))
		return -EINVAL;
	r = json_get_uint64(j, "epoch", &s.epoch);
	if (r < 0)
		return -EINVAL;
	hosts = json_object_get(j, "hosts");
	if (!json_is_array(hosts) || json_array_size(hosts) > CLUSTER_MAX_HOSTS)
		return -EINVAL;
	if (json_array_size(hosts) > 0) {
		s.hosts = calloc(json_array_size(hosts), sizeof(*s.hosts));
		if (!s.hosts)
			return -ENOMEM;
	}
	json_array_foreach(hosts, i, v)
	{
		struct cluster_host *h = &s.hosts[s.n_hosts];
		const char *name, *address = NULL;
		bool maint = false;

		if (!json_is_object(v) || json_get_uint64(v, "nodeid", &u) < 0 || u == 0 ||
		    u > UINT32_MAX || json_get_string(v, "name", &name) < 0 ||
		    !string_is_safe_name(name, MIGRD_HOST_NAME_MAX))
			goto invalid;
		r = json_get_string(v, "address", &address);
		if ((r < 0 && r != -ENOENT) || (address && !cluster_address_valid(address)))
			goto invalid;
		r = json_get_bool(v, "maintenance", &maint);
		if (r < 0 && r != -ENOENT)
			goto invalid;
		/* Sorted, unique node ids and unique names keep lookups and hashes well-defined. */
		if (s.n_hosts > 0 && s.hosts[s.n_hosts - 1].nodeid >= u)
			goto invalid;
		if (cluster_state_find_host_by_name(&s, name))
			goto invalid;
		h->nodeid = (uint32_t)u;
		h->maintenance = maint;
		h->name = strdup(name);
		h->address = address ? strdup(address) : NULL;
		s.n_hosts++;
		if (!h->name || (address && !h->address)) {
			cluster_state_done(&s);
			return -ENOMEM;
		}
	}
	r = workloads_from_json(json_object_get(j, "workloads"), &s);
	if (r < 0) {
		cluster_state_done(&s);
		return r;
	}
	*ret = s;
	return 0;
invalid:
	cluster_state_done(&s);
	return -EINVAL;
}

uint64_t cluster_state_hash(const struct cluster_state *s)
{
	_cleanup_json_ json_t *j = cluster_state_to_json(s);
	_cleanup_free_ char *text = j ? json_dumps_canonical(j) : NULL;

	return text ? XXH3_64bits(text, strlen(text)) : 0;
}

const struct cluster_host *cluster_state_find_host(const struct cluster_state *s, uint32_t nodeid)
{
	for (size_t i = 0; i < s->n_hosts; i++)
		if (s->hosts[i].nodeid == nodeid)
			return &s->hosts[i];
	return NULL;
}

const struct cluster_host *cluster_state_find_host_by_name(const struct cluster_state *s,
							   const char *name)
{
	for (size_t i = 0; i < s->n_hosts; i++)
		if (streq(s->hosts[i].name, name))
			return &s->hosts[i];
	return NULL;
}

static bool str_eq_null(const char *a, const char *b)
{
	return (!a && !b) || (a && b && streq(a, b));
}

int cluster_state_register_host(struct cluster_state *s, uint32_t nodeid, const char *name,
				const char *address)
{
	const struct cluster_host *other = cluster_state_find_host_by_name(s, name);
	struct cluster_host *h = (struct cluster_host *)cluster_state_find_host(s, nodeid);
	char *n, *a = NULL;

	if (other && other->nodeid != nodeid)
		return -EEXIST;
	if (h && streq(h->name, name) && str_eq_null(h->address, address))
		return 0;
	n = strdup(name);
	if (address)
		a = strdup(address);
	if (!n || (address && !a)) {
		free(n);
		free(a);
		return -ENOMEM;
	}
	if (!h) {
		struct cluster_host *nh;
		size_t pos = 0;

		if (s->n_hosts >= CLUSTER_MAX_HOSTS) {
			free(n);
			free(a);
			return -E2BIG;
		}
		nh = realloc(s->hosts, (s->n_hosts + 1) * sizeof(*nh));
		if (!nh) {
			free(n);
			free(a);
			return -ENOMEM;
		}
		s->hosts = nh;
		while (pos < s->n_hosts && s->hosts[pos].nodeid < nodeid)
			pos++;
		memmove(&s->hosts[pos + 1], &s->hosts[pos], (s->n_hosts - pos) * sizeof(*nh));
		h = &s->hosts[pos];
		*h = (struct cluster_host){.nodeid = nodeid};
		s->n_hosts++;
	}
	free(h->name);
	free(h->address);
	h->name = n;
	h->address = a;
	s->epoch++;
	return 1;
}

const struct cluster_workload *cluster_state_find_workload(const struct cluster_state *s,
							   const char *name)
{
	for (size_t i = 0; i < s->n_workloads; i++)
		if (streq(s->workloads[i].name, name))
			return &s->workloads[i];
	return NULL;
}

int cluster_state_set_owner(struct cluster_state *s, const char *name, const char *kind,
			    const char *host, const char *from)
{
	struct cluster_workload *w =
		(struct cluster_workload *)cluster_state_find_workload(s, name);
	struct cluster_workload *nw;
	size_t pos = 0;
	int r;

	if (!workload_name_is_valid(name) || !kind_valid(kind) ||
	    !string_is_safe_name(host, MIGRD_HOST_NAME_MAX) ||
	    (from && !string_is_safe_name(from, MIGRD_HOST_NAME_MAX)))
		return -EINVAL;
	if (w) {
		if (streq(w->host, host) && streq(w->kind, kind))
			return 0;
		if (!from || !streq(w->host, from))
			return -EBUSY;
		r = workload_set(w, name, kind, host, w->moves + 1);
		if (r < 0)
			return r;
		s->epoch++;
		return 1;
	}
	if (from)
		return -EBUSY; /* it moved from a host that does not own it */
	if (s->n_workloads >= CLUSTER_MAX_WORKLOADS)
		return -E2BIG;
	nw = reallocarray(s->workloads, s->n_workloads + 1, sizeof(*nw));
	if (!nw)
		return -ENOMEM;
	s->workloads = nw;
	while (pos < s->n_workloads && strcmp(s->workloads[pos].name, name) < 0)
		pos++;
	memmove(&s->workloads[pos + 1], &s->workloads[pos], (s->n_workloads - pos) * sizeof(*nw));
	s->workloads[pos] = (struct cluster_workload){0};
	r = workload_set(&s->workloads[pos], name, kind, host, 0);
	if (r < 0) {
		memmove(&s->workloads[pos], &s->workloads[pos + 1],
			(s->n_workloads - pos) * sizeof(*nw));
		return r;
	}
	s->n_workloads++;
	s->epoch++;
	return 1;
}

int cluster_state_drop_owner(struct cluster_state *s, const char *name, const char *host)
{
	for (size_t i = 0; i < s->n_workloads; i++) {
		if (!streq(s->workloads[i].name, name))
			continue;
		if (!streq(s->workloads[i].host, host))
			return -EBUSY;
		workload_done(&s->workloads[i]);
		memmove(&s->workloads[i], &s->workloads[i + 1],
			(s->n_workloads - i - 1) * sizeof(*s->workloads));
		s->n_workloads--;
		s->epoch++;
		return 1;
	}
	return 0;
}
