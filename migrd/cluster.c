/* The cluster state machine: state exchange, ordered state changes, live membership view. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "migrd/cluster-msg.h"
#include "migrd/cluster.h"

struct node_live {
	uint32_t nodeid;
	bool have_metrics;
	usec_t received; /* CLOCK_MONOTONIC of the last metrics message */
	struct cluster_msg_metrics m;
	json_t *workloads; /* what that host last said it runs (validated), or NULL */
};

#define MAX_PUBLISHED_WORKLOADS 512
#define MAX_OWNER_REQUESTS	64

struct owner_request {
	struct cluster_msg_owner m;
	bool sent; /* waiting for it to come back in order */
};

struct sync_entry {
	uint32_t nodeid;
	bool received;
	struct cluster_state state;
};

struct cluster {
	const struct cluster_ops *ops;
	void *userdata;
	char *local_name;
	char *local_address;
	uint32_t local_nodeid;
	bool connected;
	bool quorate;

	struct cluster_state state;

	uint32_t *members; /* current CPG configuration, sorted */
	size_t n_members;

	/* State exchange: between a configuration change and the last member's summary, no
	 * state-changing message is applied, by anyone, so all members stay identical. */
	bool synced;
	struct sync_entry *sync;
	size_t n_sync;
	bool sync_pending;     /* our summary still has to be sent */
	bool register_pending; /* our host entry is missing or stale */
	bool register_sent;    /* sent, waiting for it to come back in order */

	struct node_live *live; /* sorted by nodeid, only members */
	size_t n_live;

	/* Owner changes this host asked for, kept until they come back in order. */
	struct owner_request owner_q[MAX_OWNER_REQUESTS];
	size_t n_owner_q;
};

int cluster_new(const char *local_name, const char *local_address, struct cluster_state *initial,
		const struct cluster_ops *ops, void *userdata, struct cluster **ret)
{
	struct cluster *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->ops = ops;
	c->userdata = userdata;
	c->local_name = strdup(local_name);
	c->local_address = local_address ? strdup(local_address) : NULL;
	if (!c->local_name || (local_address && !c->local_address)) {
		cluster_free(c);
		return -ENOMEM;
	}
	c->state = *initial;
	*initial = (struct cluster_state){0};
	*ret = c;
	return 0;
}

static void sync_reset(struct cluster *c)
{
	for (size_t i = 0; i < c->n_sync; i++)
		cluster_state_done(&c->sync[i].state);
	free(c->sync);
	c->sync = NULL;
	c->n_sync = 0;
}

struct cluster *cluster_free(struct cluster *c)
{
	if (!c)
		return NULL;
	sync_reset(c);
	cluster_state_done(&c->state);
	free(c->members);
	for (size_t i = 0; i < c->n_live; i++)
		json_decref(c->live[i].workloads);
	free(c->live);
	free(c->local_name);
	free(c->local_address);
	free(c);
	return NULL;
}

static void notify_view(struct cluster *c)
{
	if (c->ops->view_changed)
		c->ops->view_changed(c->userdata);
}

static void notify_state(struct cluster *c)
{
	if (c->ops->state_changed)
		c->ops->state_changed(c->userdata, &c->state);
}

void cluster_connected(struct cluster *c, uint32_t local_nodeid)
{
	c->local_nodeid = local_nodeid;
	c->connected = true;
	notify_view(c);
}

void cluster_disconnected(struct cluster *c)
{
	c->connected = false;
	c->quorate = false;
	c->synced = false;
	c->sync_pending = c->register_pending = c->register_sent = false;
	sync_reset(c);
	free(c->members);
	c->members = NULL;
	c->n_members = 0;
	for (size_t i = 0; i < c->n_live; i++)
		json_decref(c->live[i].workloads);
	c->n_live = 0;
	notify_view(c);
}

static bool is_member(struct cluster *c, uint32_t nodeid)
{
	for (size_t i = 0; i < c->n_members; i++)
		if (c->members[i] == nodeid)
			return true;
	return false;
}

static struct node_live *live_find(struct cluster *c, uint32_t nodeid)
{
	for (size_t i = 0; i < c->n_live; i++)
		if (c->live[i].nodeid == nodeid)
			return &c->live[i];
	return NULL;
}

/* Keeps live entries for exactly the current members. */
static int live_update(struct cluster *c)
{
	struct node_live *nl = calloc(c->n_members ?: 1, sizeof(*nl));

	if (!nl)
		return -ENOMEM;
	for (size_t i = 0; i < c->n_members; i++) {
		struct node_live *old = live_find(c, c->members[i]);
		nl[i] = old ? *old : (struct node_live){.nodeid = c->members[i]};
		if (old)
			old->workloads = NULL; /* moved */
	}
	for (size_t i = 0; i < c->n_live; i++)
		json_decref(c->live[i].workloads); /* hosts that left */
	free(c->live);
	c->live = nl;
	c->n_live = c->n_members;
	return 0;
}

void cluster_confchg(struct cluster *c, const uint32_t *members, size_t n_members)
{
	uint32_t *m = malloc((n_members ?: 1) * sizeof(*m));

	if (!m) {
		log_oom();
		return;
	}
	memcpy(m, members, n_members * sizeof(*m));
	free(c->members);
	c->members = m;
	c->n_members = n_members;
	(void)live_update(c);

	sync_reset(c);
	c->sync = calloc(n_members ?: 1, sizeof(*c->sync));
	if (!c->sync) {
		log_oom();
		return;
	}
	for (size_t i = 0; i < n_members; i++)
		c->sync[i].nodeid = members[i];
	c->n_sync = n_members;
	c->synced = false;
	c->sync_pending = true;
	c->register_sent = false;
	log_debug("Configuration change: %zu members, starting state exchange at epoch %" PRIu64,
		  n_members, c->state.epoch);
	notify_view(c);
}

void cluster_quorum(struct cluster *c, bool quorate)
{
	if (c->quorate == quorate)
		return;
	c->quorate = quorate;
	notify_view(c);
}

static bool members_equal(const uint32_t *a, size_t na, const uint32_t *b, size_t nb)
{
	return na == nb && memcmp(a, b, na * sizeof(*a)) == 0;
}

static void check_registration(struct cluster *c)
{
	const struct cluster_host *h;

	if (!c->synced || c->register_sent)
		return;
	h = cluster_state_find_host(&c->state, c->local_nodeid);
	c->register_pending =
		!h || !streq(h->name, c->local_name) ||
		!((!h->address && !c->local_address) ||
		  (h->address && c->local_address && streq(h->address, c->local_address)));
}

/* All members' summaries are in: everyone picks the same one, the newest (highest epoch;
 * on a tie the lowest node id), so all members leave the exchange with identical state. */
static void sync_complete(struct cluster *c)
{
	struct sync_entry *best = NULL;

	for (size_t i = 0; i < c->n_sync; i++)
		if (!best || c->sync[i].state.epoch > best->state.epoch)
			best = &c->sync[i];
	if (best && cluster_state_hash(&best->state) != cluster_state_hash(&c->state)) {
		log_info("State exchange: adopting epoch %" PRIu64 " from node %" PRIu32
			 " (had epoch %" PRIu64 ")",
			 best->state.epoch, best->nodeid, c->state.epoch);
		cluster_state_done(&c->state);
		c->state = best->state;
		best->state = (struct cluster_state){0};
		notify_state(c);
	} else {
		log_debug("State exchange complete at epoch %" PRIu64, c->state.epoch);
	}
	sync_reset(c);
	c->synced = true;
	check_registration(c);
	notify_view(c);
}

static void deliver_sync(struct cluster *c, uint32_t from, json_t *body)
{
	struct cluster_msg_sync m;
	bool all = true;
	int r;

	r = cluster_msg_sync_from_json(body, &m);
	if (r < 0) {
		log_warning_errno(r, "Ignoring malformed state summary from node %" PRIu32, from);
		return;
	}
	/* A summary made for another configuration is stale: a newer change restarted the
	 * exchange and everyone ignores it alike. */
	if (c->synced || !members_equal(m.members, m.n_members, c->members, c->n_members)) {
		cluster_msg_sync_done(&m);
		return;
	}
	for (size_t i = 0; i < c->n_sync; i++) {
		struct sync_entry *e = &c->sync[i];
		if (e->nodeid == from && !e->received) {
			e->received = true;
			e->state = m.state;
			m.state = (struct cluster_state){0};
		}
		all = all && e->received;
	}
	cluster_msg_sync_done(&m);
	if (all)
		sync_complete(c);
}

static void deliver_register(struct cluster *c, uint32_t from, json_t *body)
{
	struct cluster_msg_register m;
	int r;

	r = cluster_msg_register_from_json(body, &m);
	if (r < 0) {
		log_warning_errno(r, "Ignoring malformed host registration from node %" PRIu32,
				  from);
		return;
	}
	if (from == c->local_nodeid)
		c->register_sent = false;
	if (!c->synced) {
		/* Dropped by every member alike; the sender registers again once synced. */
		log_debug("Dropping registration of node %" PRIu32 " during state exchange", from);
		cluster_msg_register_done(&m);
		check_registration(c);
		return;
	}
	r = cluster_state_register_host(&c->state, from, m.name, m.address);
	if (r == -EEXIST)
		log_error("Host name '%s' of node %" PRIu32
			  " is already registered to node %" PRIu32 "; rename one of them",
			  m.name, from, cluster_state_find_host_by_name(&c->state, m.name)->nodeid);
	else if (r < 0)
		log_error_errno(r, "Failed to register node %" PRIu32 ": %m", from);
	else if (r > 0) {
		log_info("Host %s (node %" PRIu32 ", %s) registered, epoch %" PRIu64, m.name, from,
			 strna(m.address), c->state.epoch);
		notify_state(c);
	}
	cluster_msg_register_done(&m);
	check_registration(c);
	if (from == c->local_nodeid && r == -EEXIST)
		c->register_pending = false; /* retrying cannot help */
}

static bool owner_msg_equal(const struct cluster_msg_owner *a, const struct cluster_msg_owner *b)
{
	return streq(a->name, b->name) && streq(a->kind, b->kind) && streq(a->host, b->host) &&
	       streq(a->from, b->from) && a->drop == b->drop;
}

static struct owner_request *owner_sent(struct cluster *c, const struct cluster_msg_owner *m)
{
	for (size_t i = 0; i < c->n_owner_q; i++)
		if (c->owner_q[i].sent && owner_msg_equal(&c->owner_q[i].m, m))
			return &c->owner_q[i];
	return NULL;
}

static void deliver_owner(struct cluster *c, uint32_t from, json_t *body)
{
	struct cluster_msg_owner m;
	struct owner_request *mine;
	int r;

	r = cluster_msg_owner_from_json(body, &m);
	if (r < 0) {
		log_warning_errno(r, "Ignoring malformed owner message from node %" PRIu32, from);
		return;
	}
	mine = from == c->local_nodeid ? owner_sent(c, &m) : NULL;
	if (!c->synced) {
		/* Dropped by every member alike; ours is sent again once synced. */
		if (mine)
			mine->sent = false;
		return;
	}
	r = m.drop ? cluster_state_drop_owner(&c->state, m.name, m.host)
		   : cluster_state_set_owner(&c->state, m.name, m.kind, m.host,
					     m.from[0] ? m.from : NULL);
	if (r > 0) {
		log_info("%s %s: %s%s%s, epoch %" PRIu64, m.kind, m.name,
			 m.drop ? "no longer on " : "owned by ", m.host,
			 !m.drop && m.from[0] ? " (moved)" : "", c->state.epoch);
		notify_state(c);
	} else if (r == -EBUSY) {
		const struct cluster_workload *w = cluster_state_find_workload(&c->state, m.name);
		log_warning("Refused: %s %s to %s%s%s: the cluster state says %s owns it", m.kind,
			    m.name, m.host, m.from[0] ? " from " : "", m.from,
			    w ? w->host : "nobody");
	} else if (r < 0)
		log_error_errno(r, "Failed to record the owner of %s: %m", m.name);
	if (mine) {
		size_t i = (size_t)(mine - c->owner_q);
		memmove(&c->owner_q[i], &c->owner_q[i + 1],
			(c->n_owner_q - i - 1) * sizeof(*c->owner_q));
		c->n_owner_q--;
	}
}

int cluster_request_owner(struct cluster *c, const char *name, const char *kind, const char *host,
			  const char *from, bool drop)
{
	struct cluster_msg_owner m;

	if (c->n_owner_q >= MAX_OWNER_REQUESTS)
		return -EBUSY;
	if (cluster_msg_owner_init(&m, name, kind, host, from, drop) < 0)
		return -EINVAL;
	c->owner_q[c->n_owner_q++] = (struct owner_request){.m = m};
	return 0;
}

/* A host's published workloads, each checked and copied field by field: nothing else of a
 * peer's message reaches the control API. NULL when absent or malformed. */
static json_t *workloads_from_json(json_t *in)
{
	json_t *out, *w;
	size_t i;

	if (!json_is_array(in) || json_array_size(in) > MAX_PUBLISHED_WORKLOADS)
		return NULL;
	out = json_array();
	json_array_foreach(in, i, w)
	{
		const char *name = NULL, *kind = NULL, *state = NULL;
		uint64_t memory = 0;

		if (json_get_string(w, "name", &name) < 0 ||
		    !string_is_safe_name(name, MIGRD_HOST_NAME_MAX) ||
		    json_get_string(w, "kind", &kind) < 0 ||
		    (!streq(kind, "container") && !streq(kind, "vm")) ||
		    json_get_string(w, "state", &state) < 0 || !string_is_safe_name(state, 32) ||
		    json_get_uint64(w, "memory", &memory) < 0) {
			json_decref(out);
			return NULL;
		}
		json_array_append_new(out,
				      json_pack("{s:s,s:s,s:s,s:I}", "name", name, "kind", kind,
						"state", state, "memory", (json_int_t)memory));
	}
	return out;
}

static void deliver_metrics(struct cluster *c, uint32_t from, json_t *body, usec_t now)
{
	struct node_live *l = live_find(c, from);
	struct cluster_msg_metrics m;

	if (!l)
		return; /* from a configuration we already left */
	if (cluster_msg_metrics_from_json(body, &m) < 0) {
		log_debug("Ignoring malformed metrics from node %" PRIu32, from);
		return;
	}
	l->m = m;
	l->have_metrics = true;
	l->received = now;
	json_decref(l->workloads);
	l->workloads = workloads_from_json(json_object_get(body, "workloads"));
}

void cluster_deliver(struct cluster *c, uint32_t from, const void *msg, size_t len, usec_t now)
{
	_cleanup_json_ json_t *body = NULL;
	enum cluster_msg_type type;
	int r;

	r = cluster_msg_decode(msg, len, &type, &body);
	if (r < 0) {
		log_warning("Ignoring malformed cluster message (%zu bytes) from node %" PRIu32,
			    len, from);
		return;
	}
	switch (type) {
	case CLUSTER_MSG_METRICS:
		deliver_metrics(c, from, body, now);
		break;
	case CLUSTER_MSG_SYNC:
		deliver_sync(c, from, body);
		break;
	case CLUSTER_MSG_HOST_REGISTER:
		deliver_register(c, from, body);
		break;
	case CLUSTER_MSG_OWNER:
		deliver_owner(c, from, body);
		break;
	default:
		break;
	}
}

static int send_json(struct cluster *c, enum cluster_msg_type type, json_t *body)
{
	_cleanup_free_ void *buf = NULL;
	size_t size;
	int r;

	if (!body)
		return -ENOMEM;
	r = cluster_msg_encode(type, body, &buf, &size);
	json_decref(body);
	if (r < 0)
		return r;
	return c->ops->send(c->userdata, buf, size);
}

bool cluster_flush(struct cluster *c)
{
	int r;

	if (!c->connected)
		return false;
	if (c->sync_pending) {
		r = send_json(c, CLUSTER_MSG_SYNC,
			      cluster_msg_sync_to_json(c->members, c->n_members, &c->state));
		if (r >= 0)
			c->sync_pending = false;
		else if (r != -EAGAIN)
			log_warning_errno(r, "Failed to send state summary: %m");
	}
	/* Only a quorate partition changes the replicated state, so two partitions can never
	 * both advance the epoch. */
	if (c->register_pending && !c->register_sent && c->synced && c->quorate) {
		r = send_json(c, CLUSTER_MSG_HOST_REGISTER,
			      cluster_msg_register_to_json(c->local_name, c->local_address));
		if (r >= 0) {
			c->register_sent = true;
			c->register_pending = false;
		} else if (r != -EAGAIN)
			log_warning_errno(r, "Failed to send host registration: %m");
	}
	for (size_t i = 0; i < c->n_owner_q && c->synced && c->quorate; i++) {
		if (c->owner_q[i].sent)
			continue;
		r = send_json(c, CLUSTER_MSG_OWNER, cluster_msg_owner_to_json(&c->owner_q[i].m));
		if (r < 0) {
			if (r != -EAGAIN)
				log_warning_errno(r, "Failed to send an owner change: %m");
			break;
		}
		c->owner_q[i].sent = true;
	}
	for (size_t i = 0; i < c->n_owner_q; i++)
		if (!c->owner_q[i].sent)
			return true;
	return c->sync_pending || (c->register_pending && c->synced && c->quorate);
}

int cluster_publish_metrics(struct cluster *c, const struct health_metrics *m, json_t *workloads)
{
	struct cluster_msg_metrics msg = {.quorate = c->quorate, .metrics = *m};
	json_t *j;

	if (!c->connected)
		return -ENOTCONN;
	strscpy(msg.name, c->local_name, sizeof(msg.name));
	j = cluster_msg_metrics_to_json(&msg);
	if (j && workloads && json_array_size(workloads) <= MAX_PUBLISHED_WORKLOADS)
		json_object_set(j, "workloads", workloads);
	return send_json(c, CLUSTER_MSG_METRICS, j);
}

static bool listed(json_t *array, const char *name)
{
	json_t *w;
	size_t k;

	json_array_foreach(array, k, w)
	{
		const char *n = json_string_value(json_object_get(w, "name"));

		if (n && streq(n, name))
			return true;
	}
	return false;
}

int cluster_workloads_json(struct cluster *c, json_t *array)
{
	for (size_t i = 0; i < c->n_live; i++) {
		struct node_live *l = &c->live[i];
		const char *host = cluster_node_name(c, l->nodeid);
		json_t *w;
		size_t k;

		/* The local host's workloads come fresh from their owner, not from the bus. */
		if (l->nodeid == c->local_nodeid || !l->workloads || !host)
			continue;
		json_array_foreach(l->workloads, k, w)
		{
			const char *name = json_string_value(json_object_get(w, "name"));
			const struct cluster_workload *o =
				name ? cluster_state_find_workload(&c->state, name) : NULL;
			json_t *copy;

			/* Published before it moved: the cluster records it elsewhere now. */
			if (o && o->host && !streq(o->host, host))
				continue;
			copy = json_deep_copy(w);
			if (!copy || json_object_set_new(copy, "host", json_string(host)) < 0 ||
			    json_array_append_new(array, copy) < 0)
				return -ENOMEM;
		}
	}
	/* Moved to an online host that has not published since (it does every second):
	 * listed from the cluster's record, so that a workload is never missing from the list
	 * while it moves. */
	for (size_t i = 0; i < c->state.n_workloads; i++) {
		const struct cluster_workload *o = &c->state.workloads[i];
		const struct cluster_host *h =
			o->host ? cluster_state_find_host_by_name(&c->state, o->host) : NULL;
		struct node_live *l;
		json_t *w;

		if (!h || h->nodeid == c->local_nodeid || listed(array, o->name))
			continue;
		l = live_find(c, h->nodeid);
		if (!l || !l->workloads)
			continue;
		w = json_pack("{s:s,s:s,s:s,s:s}", "name", o->name, "kind", o->kind ?: "unknown",
			      "host", o->host, "state", "unreported");
		if (!w || json_array_append_new(array, w) < 0)
			return -ENOMEM;
	}
	return 0;
}

bool cluster_is_connected(struct cluster *c)
{
	return c->connected;
}

bool cluster_is_synced(struct cluster *c)
{
	return c->synced;
}

bool cluster_is_quorate(struct cluster *c)
{
	return c->connected && c->quorate;
}

uint32_t cluster_local_nodeid(struct cluster *c)
{
	return c->local_nodeid;
}

uint32_t cluster_coordinator(struct cluster *c)
{
	if (!cluster_is_quorate(c) || c->n_members == 0)
		return 0;
	return c->members[0];
}

const struct cluster_state *cluster_get_state(struct cluster *c)
{
	return &c->state;
}

const uint32_t *cluster_members(struct cluster *c, size_t *ret_n)
{
	*ret_n = c->n_members;
	return c->members;
}

const char *cluster_node_name(struct cluster *c, uint32_t nodeid)
{
	const struct cluster_host *h = cluster_state_find_host(&c->state, nodeid);
	struct node_live *l;

	if (h)
		return h->name;
	if (nodeid == c->local_nodeid)
		return c->local_name;
	l = live_find(c, nodeid);
	return l && l->have_metrics ? l->m.name : NULL;
}

json_t *cluster_status_json(struct cluster *c)
{
	uint32_t coord = cluster_coordinator(c);
	json_t *members = json_array(), *coordinator, *owners = json_object();
	char hash[17];

	for (size_t i = 0; owners && i < c->state.n_workloads; i++)
		json_object_set_new(owners, c->state.workloads[i].name,
				    json_string(c->state.workloads[i].host));
	for (size_t i = 0; members && i < c->n_members; i++)
		json_array_append_new(members, json_integer(c->members[i]));
	coordinator = coord ? json_pack("{s:I,s:s?}", "nodeid", (json_int_t)coord, "name",
					cluster_node_name(c, coord))
			    : json_null();
	snprintf(hash, sizeof(hash), "%016" PRIx64, cluster_state_hash(&c->state));
	return json_pack("{s:s,s:I,s:s,s:b,s:b,s:o,s:o,s:I,s:s,s:I,s:o}", "host", c->local_name,
			 "nodeid", (json_int_t)c->local_nodeid, "corosync",
			 c->connected ? "connected" : "disconnected", "quorate",
			 cluster_is_quorate(c), "synced", c->synced, "members", members,
			 "coordinator", coordinator, "epoch", (json_int_t)c->state.epoch,
			 "state_hash", hash, "workloads", (json_int_t)c->state.n_workloads,
			 "owners", owners);
}

static json_t *host_json(struct cluster *c, uint32_t nodeid, const char *name, const char *address,
			 bool maintenance, usec_t now)
{
	struct node_live *l = is_member(c, nodeid) ? live_find(c, nodeid) : NULL;
	bool local = nodeid == c->local_nodeid && c->connected;
	bool quorate = local ? cluster_is_quorate(c) : (l && l->have_metrics && l->m.quorate);
	json_t *metrics = json_null();
	char fallback[32];

	if (l && l->have_metrics)
		metrics = health_metrics_to_json(&l->m.metrics,
						 (int64_t)((now - l->received) / USEC_PER_MSEC));
	if (!name) {
		snprintf(fallback, sizeof(fallback), "node%" PRIu32, nodeid);
		name = fallback;
	}
	return json_pack("{s:s,s:I,s:s?,s:b,s:b,s:b,s:b,s:b,s:o}", "name", name, "nodeid",
			 (json_int_t)nodeid, "address", address, "online", l != NULL, "quorate",
			 quorate, "coordinator", nodeid == cluster_coordinator(c), "local", local,
			 "maintenance", maintenance, "metrics", metrics ?: json_null());
}

json_t *cluster_hosts_json(struct cluster *c, usec_t now)
{
	json_t *hosts = json_array();
	size_t i = 0, k = 0;

	if (!hosts)
		return NULL;
	/* Merge the registered hosts with current members not registered (yet). */
	while (i < c->state.n_hosts || k < c->n_members) {
		const struct cluster_host *h = i < c->state.n_hosts ? &c->state.hosts[i] : NULL;
		uint32_t m = k < c->n_members ? c->members[k] : UINT32_MAX;
		json_t *o;

		if (h && h->nodeid <= m) {
			o = host_json(c, h->nodeid, h->name, h->address, h->maintenance, now);
			i++;
			if (h->nodeid == m)
				k++;
		} else {
			o = host_json(c, m, cluster_node_name(c, m), NULL, false, now);
			k++;
		}
		if (!o || json_array_append_new(hosts, o) < 0) {
			json_decref(hosts);
			return NULL;
		}
	}
	return json_pack("{s:o}", "hosts", hosts);
}
