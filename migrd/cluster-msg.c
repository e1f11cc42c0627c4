/* Encoding and validating decoding of the CPG messages between migrd hosts. */
#include <endian.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "checkpoint/workload.h"
#include "migrd/cluster-msg.h"

#define CLUSTER_MSG_MAX_MEMBERS 1024

static const char *const msg_type_table[_CLUSTER_MSG_TYPE_MAX] = {
	[CLUSTER_MSG_METRICS] = "metrics",
	[CLUSTER_MSG_SYNC] = "sync",
	[CLUSTER_MSG_HOST_REGISTER] = "host-register",
	[CLUSTER_MSG_OWNER] = "owner",
};

const char *cluster_msg_type_to_string(enum cluster_msg_type t)
{
	if ((size_t)t >= ELEMENTSOF(msg_type_table) || !msg_type_table[t])
		return "unknown";
	return msg_type_table[t];
}

int cluster_msg_encode(enum cluster_msg_type type, json_t *body, void **ret, size_t *ret_size)
{
	_cleanup_free_ char *text = json_dumps_canonical(body);
	struct cluster_msg_header h;
	size_t len;
	char *buf;

	if (!text)
		return -ENOMEM;
	len = strlen(text);
	if (len > CLUSTER_MSG_MAX_BODY)
		return -EMSGSIZE;
	h = (struct cluster_msg_header){
		.magic = htole32(CLUSTER_MSG_MAGIC),
		.version = htole16(CLUSTER_MSG_VERSION),
		.type = htole16((uint16_t)type),
		.body_len = htole32((uint32_t)len),
	};
	buf = malloc(sizeof(h) + len);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, &h, sizeof(h));
	memcpy(buf + sizeof(h), text, len);
	*ret = buf;
	*ret_size = sizeof(h) + len;
	return 0;
}

int cluster_msg_decode(const void *data, size_t size, enum cluster_msg_type *ret_type,
		       json_t **ret_body)
{
	struct cluster_msg_header h;
	json_t *j;
	uint16_t type;

	if (size < sizeof(h))
		return -EBADMSG;
	memcpy(&h, data, sizeof(h));
	if (le32toh(h.magic) != CLUSTER_MSG_MAGIC || le16toh(h.version) != CLUSTER_MSG_VERSION)
		return -EBADMSG;
	type = le16toh(h.type);
	if (type == 0 || type >= _CLUSTER_MSG_TYPE_MAX)
		return -EBADMSG;
	if (le32toh(h.body_len) != size - sizeof(h) || size - sizeof(h) > CLUSTER_MSG_MAX_BODY)
		return -EBADMSG;
	j = json_loadb((const char *)data + sizeof(h), size - sizeof(h), JSON_REJECT_DUPLICATES,
		       NULL);
	if (!j)
		return -EBADMSG;
	if (!json_is_object(j)) {
		json_decref(j);
		return -EBADMSG;
	}
	*ret_type = (enum cluster_msg_type)type;
	*ret_body = j;
	return 0;
}

static json_t *psi_to_json(const struct health_psi *p)
{
	if (!p->available)
		return json_null();
	return json_pack("{s:f,s:o}", "some", p->some_avg10, "full",
			 p->has_full ? json_real(p->full_avg10) : json_null());
}

json_t *health_metrics_to_json(const struct health_metrics *m, int64_t age_ms)
{
	json_t *j = json_pack("{s:f,s:i,s:I,s:I,s:[f,f,f],s:{s:o,s:o,s:o}}", "cpu_busy_pct",
			      m->cpu_busy_pct, "n_cpus", (int)m->n_cpus, "mem_used",
			      (json_int_t)m->mem_used, "mem_total", (json_int_t)m->mem_total,
			      "load", m->load[0], m->load[1], m->load[2], "psi", "cpu",
			      psi_to_json(&m->psi_cpu), "memory", psi_to_json(&m->psi_memory), "io",
			      psi_to_json(&m->psi_io));
	if (j && age_ms >= 0)
		json_object_set_new(j, "age_ms", json_integer(age_ms));
	return j;
}

static int get_real(json_t *o, const char *key, double lo, double hi, double *ret)
{
	json_t *v = json_object_get(o, key);
	double d;

	if (!json_is_number(v))
		return -EBADMSG;
	d = json_number_value(v);
	if (!isfinite(d) || d < lo || d > hi)
		return -EBADMSG;
	*ret = d;
	return 0;
}

static int psi_from_json(json_t *j, struct health_psi *ret)
{
	struct health_psi p = {0};
	json_t *full;

	if (json_is_null(j)) {
		*ret = p;
		return 0;
	}
	if (!json_is_object(j) || get_real(j, "some", 0, 100, &p.some_avg10) < 0)
		return -EBADMSG;
	full = json_object_get(j, "full");
	if (full && !json_is_null(full)) {
		if (get_real(j, "full", 0, 100, &p.full_avg10) < 0)
			return -EBADMSG;
		p.has_full = true;
	}
	p.available = true;
	*ret = p;
	return 0;
}

json_t *cluster_msg_metrics_to_json(const struct cluster_msg_metrics *m)
{
	json_t *metrics = health_metrics_to_json(&m->metrics, -1);

	if (!metrics)
		return NULL;
	return json_pack("{s:s,s:b,s:I,s:o}", "name", m->name, "quorate", m->quorate, "timestamp",
			 (json_int_t)m->metrics.timestamp_usec, "metrics", metrics);
}

int cluster_msg_metrics_from_json(json_t *j, struct cluster_msg_metrics *ret)
{
	struct cluster_msg_metrics m = {0};
	json_t *metrics, *load, *psi;
	const char *name;
	uint64_t u;

	if (json_get_string(j, "name", &name) < 0 ||
	    !string_is_safe_name(name, MIGRD_HOST_NAME_MAX) ||
	    json_get_bool(j, "quorate", &m.quorate) < 0 ||
	    json_get_uint64(j, "timestamp", &m.metrics.timestamp_usec) < 0)
		return -EBADMSG;
	strscpy(m.name, name, sizeof(m.name));
	metrics = json_object_get(j, "metrics");
	if (!json_is_object(metrics) ||
	    get_real(metrics, "cpu_busy_pct", -1, 100, &m.metrics.cpu_busy_pct) < 0 ||
	    json_get_uint64(metrics, "mem_used", &m.metrics.mem_used) < 0 ||
	    json_get_uint64(metrics, "mem_total", &m.metrics.mem_total) < 0 ||
	    json_get_uint64(metrics, "n_cpus", &u) < 0 || u > 65536)
		return -EBADMSG;
	m.metrics.n_cpus = (unsigned)u;
	load = json_object_get(metrics, "load");
	if (!json_is_array(load) || json_array_size(load) != 3)
		return -EBADMSG;
	for (size_t i = 0; i < 3; i++) {
		json_t *v = json_array_get(load, i);
		if (!json_is_number(v) || !isfinite(json_number_value(v)) ||
		    json_number_value(v) < 0 || json_number_value(v) > 1e9)
			return -EBADMSG;
		m.metrics.load[i] = json_number_value(v);
	}
	psi = json_object_get(metrics, "psi");
	if (!json_is_object(psi) ||
	    psi_from_json(json_object_get(psi, "cpu"), &m.metrics.psi_cpu) < 0 ||
	    psi_from_json(json_object_get(psi, "memory"), &m.metrics.psi_memory) < 0 ||
	    psi_from_json(json_object_get(psi, "io"), &m.metrics.psi_io) < 0)
		return -EBADMSG;
	*ret = m;
	return 0;
}

static json_t *nodeids_to_json(const uint32_t *ids, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < n; i++)
		if (json_array_append_new(a, json_integer(ids[i])) < 0) {
			json_decref(a);
			return NULL;
		}
	return a;
}

json_t *cluster_msg_sync_to_json(const uint32_t *members, size_t n_members,
				 const struct cluster_state *s)
{
	json_t *m = nodeids_to_json(members, n_members);
	json_t *st = cluster_state_to_json(s);

	if (!m || !st) {
		json_decref(m);
		json_decref(st);
		return NULL;
	}
	return json_pack("{s:o,s:o}", "members", m, "state", st);
}

int cluster_msg_sync_from_json(json_t *j, struct cluster_msg_sync *ret)
{
	struct cluster_msg_sync m = {0};
	json_t *members = json_object_get(j, "members"), *v;
	size_t i;
	int r;

	if (!json_is_array(members) || json_array_size(members) == 0 ||
	    json_array_size(members) > CLUSTER_MSG_MAX_MEMBERS)
		return -EBADMSG;
	m.members = calloc(json_array_size(members), sizeof(uint32_t));
	if (!m.members)
		return -ENOMEM;
	json_array_foreach(members, i, v)
	{
		json_int_t id = json_is_integer(v) ? json_integer_value(v) : -1;
		if (id <= 0 || id > UINT32_MAX || (i > 0 && (uint32_t)id <= m.members[i - 1])) {
			free(m.members);
			return -EBADMSG;
		}
		m.members[m.n_members++] = (uint32_t)id;
	}
	r = cluster_state_from_json(json_object_get(j, "state"), &m.state);
	if (r < 0) {
		free(m.members);
		return r == -ENOMEM ? r : -EBADMSG;
	}
	*ret = m;
	return 0;
}

void cluster_msg_sync_done(struct cluster_msg_sync *m)
{
	free(m->members);
	cluster_state_done(&m->state);
	*m = (struct cluster_msg_sync){0};
}

json_t *cluster_msg_register_to_json(const char *name, const char *address)
{
	return json_pack("{s:s,s:s*}", "name", name, "address", address);
}

int cluster_msg_register_from_json(json_t *j, struct cluster_msg_register *ret)
{
	struct cluster_msg_register m = {0};
	const char *name, *address = NULL;
	int r;

	if (json_get_string(j, "name", &name) < 0 ||
	    !string_is_safe_name(name, MIGRD_HOST_NAME_MAX))
		return -EBADMSG;
	r = json_get_string(j, "address", &address);
	if ((r < 0 && r != -ENOENT) || (address && !cluster_address_valid(address)))
		return -EBADMSG;
	strscpy(m.name, name, sizeof(m.name));
	if (address && !(m.address = strdup(address)))
		return -ENOMEM;
	*ret = m;
	return 0;
}

void cluster_msg_register_done(struct cluster_msg_register *m)
{
	free(m->address);
	m->address = NULL;
}

json_t *cluster_msg_owner_to_json(const struct cluster_msg_owner *m)
{
	return json_pack("{s:s,s:s,s:s,s:s*,s:b}", "name", m->name, "kind", m->kind, "host",
			 m->host, "from", m->from[0] ? m->from : NULL, "drop", m->drop);
}

int cluster_msg_owner_init(struct cluster_msg_owner *m, const char *name, const char *kind,
			   const char *host, const char *from, bool drop)
{
	if (!workload_name_is_valid(name) || strlen(name) >= sizeof(m->name) ||
	    !(streq(kind, "vm") || streq(kind, "container")) ||
	    !string_is_safe_name(host, MIGRD_HOST_NAME_MAX) ||
	    (from && !string_is_safe_name(from, MIGRD_HOST_NAME_MAX)))
		return -EINVAL;
	memset(m, 0, sizeof(*m));
	m->drop = drop;
	strscpy(m->name, name, sizeof(m->name));
	strscpy(m->kind, kind, sizeof(m->kind));
	strscpy(m->host, host, sizeof(m->host));
	if (from)
		strscpy(m->from, from, sizeof(m->from));
	return 0;
}

int cluster_msg_owner_from_json(json_t *j, struct cluster_msg_owner *ret)
{
	const char *name, *kind, *host, *from = NULL;
	bool drop = false;
	int r;

	if (json_get_string(j, "name", &name) < 0 || json_get_string(j, "kind", &kind) < 0 ||
	    json_get_string(j, "host", &host) < 0)
		return -EBADMSG;
	r = json_get_string(j, "from", &from);
	if (r < 0 && r != -ENOENT)
		return -EBADMSG;
	r = json_get_bool(j, "drop", &drop);
	if (r < 0 && r != -ENOENT)
		return -EBADMSG;
	return cluster_msg_owner_init(ret, name, kind, host, from, drop) < 0 ? -EBADMSG : 0;
}
