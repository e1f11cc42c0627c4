/* Unit tests for the cluster state machine: several simulated hosts on an in-memory, totally
 * ordered bus (as corosync CPG delivers), plus the state and message codecs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "migrd/cluster-msg.h"
#include "migrd/cluster.h"

#define MAX_NODES 5
#define MAX_QUEUE 256

struct bus;

struct node {
	struct bus *bus;
	uint32_t nodeid;
	struct cluster *c;
	bool up;
	unsigned saves;
	bool fail_send; /* simulates corosync flow control (-EAGAIN) */
};

struct queued {
	uint32_t from;
	void *msg;
	size_t len;
};

struct bus {
	struct node nodes[MAX_NODES + 1]; /* index = nodeid */
	struct queued q[MAX_QUEUE];
	size_t n_q;
};

static int node_send(void *userdata, const void *msg, size_t len)
{
	struct node *n = userdata;
	struct bus *b = n->bus;

	if (n->fail_send)
		return -EAGAIN;
	assert_true(b->n_q < MAX_QUEUE);
	b->q[b->n_q].from = n->nodeid;
	b->q[b->n_q].msg = malloc(len);
	memcpy(b->q[b->n_q].msg, msg, len);
	b->q[b->n_q].len = len;
	b->n_q++;
	return 0;
}

static void node_state_changed(void *userdata, const struct cluster_state *s)
{
	((struct node *)userdata)->saves++;
}

static const struct cluster_ops ops = {
	.send = node_send,
	.state_changed = node_state_changed,
};

static void node_start(struct bus *b, uint32_t id, struct cluster_state *initial)
{
	struct node *n = &b->nodes[id];
	struct cluster_state empty = {0};
	char name[16], addr[32];

	n->bus = b;
	n->nodeid = id;
	snprintf(name, sizeof(name), "h%u", id);
	snprintf(addr, sizeof(addr), "10.0.0.%u", id);
	assert_int_equal(cluster_new(name, addr, initial ?: &empty, &ops, n, &n->c), 0);
	cluster_connected(n->c, id);
	n->up = true;
}

static void node_stop(struct bus *b, uint32_t id)
{
	b->nodes[id].c = cluster_free(b->nodes[id].c);
	b->nodes[id].up = false;
}

/* A configuration change delivered to every up node, like CPG's confchg. */
static void bus_confchg(struct bus *b)
{
	uint32_t members[MAX_NODES];
	size_t n = 0;

	for (uint32_t id = 1; id <= MAX_NODES; id++)
		if (b->nodes[id].up)
			members[n++] = id;
	for (uint32_t id = 1; id <= MAX_NODES; id++)
		if (b->nodes[id].up)
			cluster_confchg(b->nodes[id].c, members, n);
}

static void bus_quorum(struct bus *b, bool quorate)
{
	for (uint32_t id = 1; id <= MAX_NODES; id++)
		if (b->nodes[id].up)
			cluster_quorum(b->nodes[id].c, quorate);
}

/* Flushes and delivers until nothing moves any more. */
static void bus_run(struct bus *b)
{
	for (int round = 0; round < 50; round++) {
		for (uint32_t id = 1; id <= MAX_NODES; id++)
			if (b->nodes[id].up)
				cluster_flush(b->nodes[id].c);
		if (b->n_q == 0)
			return;
		struct queued q = b->q[0];
		memmove(&b->q[0], &b->q[1], (b->n_q - 1) * sizeof(q));
		b->n_q--;
		for (uint32_t id = 1; id <= MAX_NODES; id++)
			if (b->nodes[id].up)
				cluster_deliver(b->nodes[id].c, q.from, q.msg, q.len, 1000);
		free(q.msg);
	}
	fail_msg("bus did not settle");
}

/* Nodes first..last start, see each other, have quorum, and settle. */
static void bus_form(struct bus *b, uint32_t first, uint32_t last)
{
	for (uint32_t id = first; id <= last; id++)
		node_start(b, id, NULL);
	bus_confchg(b);
	bus_quorum(b, true);
	bus_run(b);
}

static void bus_free(struct bus *b)
{
	for (uint32_t id = 1; id <= MAX_NODES; id++)
		if (b->nodes[id].c)
			node_stop(b, id);
	for (size_t i = 0; i < b->n_q; i++)
		free(b->q[i].msg);
}

static void assert_agree(struct bus *b, uint64_t epoch, size_t n_hosts)
{
	uint64_t hash = 0;

	for (uint32_t id = 1; id <= MAX_NODES; id++) {
		struct node *n = &b->nodes[id];
		if (!n->up)
			continue;
		assert_true(cluster_is_synced(n->c));
		assert_int_equal(cluster_get_state(n->c)->epoch, epoch);
		assert_int_equal(cluster_get_state(n->c)->n_hosts, n_hosts);
		if (!hash)
			hash = cluster_state_hash(cluster_get_state(n->c));
		assert_int_equal(cluster_state_hash(cluster_get_state(n->c)), hash);
	}
}

static void test_three_form_and_register(void **state)
{
	struct bus b = {0};

	for (uint32_t id = 1; id <= 3; id++)
		node_start(&b, id, NULL);
	bus_confchg(&b);
	bus_run(&b);
	/* Synced, but nobody registers before quorum. */
	assert_agree(&b, 0, 0);
	bus_quorum(&b, true);
	bus_run(&b);
	assert_agree(&b, 3, 3);
	for (uint32_t id = 1; id <= 3; id++) {
		assert_int_equal(cluster_coordinator(b.nodes[id].c), 1);
		assert_string_equal(cluster_node_name(b.nodes[id].c, 2), "h2");
	}
	assert_string_equal(cluster_get_state(b.nodes[3].c)->hosts[0].address, "10.0.0.1");
	bus_free(&b);
}

static void test_rejoin_adopts_newest(void **state)
{
	struct bus b = {0};
	struct cluster_state saved;

	bus_form(&b, 1, 3);
	assert_agree(&b, 3, 3);

	/* h3 goes away with its persisted copy; the others change the state meanwhile. */
	assert_int_equal(cluster_state_copy(cluster_get_state(b.nodes[3].c), &saved), 0);
	node_stop(&b, 3);
	bus_confchg(&b);
	bus_run(&b);
	node_start(&b, 4, NULL);
	cluster_quorum(b.nodes[4].c, true);
	bus_confchg(&b);
	bus_run(&b);
	assert_agree(&b, 4, 4);

	/* h3 comes back with epoch 3 and must end on the cluster's epoch-4 state. */
	node_start(&b, 3, &saved);
	cluster_quorum(b.nodes[3].c, true);
	bus_confchg(&b);
	bus_run(&b);
	assert_agree(&b, 4, 4);
	assert_non_null(cluster_state_find_host(cluster_get_state(b.nodes[3].c), 4));
	bus_free(&b);
}

/* A fresh, empty host joining never wipes the cluster's state. */
static void test_empty_joiner_does_not_win(void **state)
{
	struct bus b = {0};

	bus_form(&b, 2, 3);
	assert_agree(&b, 2, 2);
	node_start(&b, 1, NULL);
	bus_confchg(&b);
	bus_run(&b);
	/* h1 adopted epoch 2 (lowest node id but oldest state), then registered itself. */
	bus_quorum(&b, true);
	bus_run(&b);
	assert_agree(&b, 3, 3);
	bus_free(&b);
}

/* A state change delivered during an exchange is dropped by everyone alike and re-sent. */
static void test_registration_during_sync_is_retried(void **state)
{
	struct bus b = {0};

	bus_form(&b, 1, 2);
	assert_agree(&b, 2, 2);

	node_start(&b, 3, NULL);
	cluster_quorum(b.nodes[3].c, true);
	bus_confchg(&b);
	/* h1's summary is held back by flow control while the others proceed. */
	b.nodes[1].fail_send = true;
	for (int i = 0; i < 5; i++)
		bus_run(&b);
	assert_false(cluster_is_synced(b.nodes[2].c));
	/* A registration that was in flight across the change (from node 5, say) arrives now. */
	json_t *j = cluster_msg_register_to_json("h5", NULL);
	void *buf;
	size_t len;
	assert_int_equal(cluster_msg_encode(CLUSTER_MSG_HOST_REGISTER, j, &buf, &len), 0);
	for (uint32_t id = 1; id <= 3; id++)
		cluster_deliver(b.nodes[id].c, 5, buf, len, 0);
	json_decref(j);
	b.nodes[1].fail_send = false;
	bus_run(&b);
	/* Everyone dropped it alike; h3 registered once synced. */
	assert_agree(&b, 3, 3);
	assert_null(cluster_state_find_host(cluster_get_state(b.nodes[2].c), 5));
	/* The same message once synced is applied by all. */
	for (uint32_t id = 1; id <= 3; id++)
		cluster_deliver(b.nodes[id].c, 5, buf, len, 0);
	free(buf);
	assert_agree(&b, 4, 4);
	bus_free(&b);
}

static void test_not_quorate_changes_nothing(void **state)
{
	struct bus b = {0};

	node_start(&b, 1, NULL);
	bus_confchg(&b);
	bus_run(&b);
	assert_agree(&b, 0, 0);
	assert_int_equal(cluster_coordinator(b.nodes[1].c), 0);
	bus_free(&b);
}

static void test_hosts_view(void **state)
{
	struct bus b = {0};
	struct health_metrics m = {.cpu_busy_pct = 12.5,
				   .mem_total = 1000,
				   .mem_used = 10,
				   .n_cpus = 2,
				   .load = {0.5, 0.25, 0.125},
				   .psi_cpu = {.available = true, .some_avg10 = 1.5}};
	json_t *j, *hosts, *h;

	bus_form(&b, 1, 3);
	json_t *wl = json_pack("[{s:s,s:s,s:s,s:i}]", "name", "web1", "kind", "container", "state",
			       "running", "memory", 4096);
	assert_int_equal(cluster_publish_metrics(b.nodes[2].c, &m, wl), 0);
	json_decref(wl);
	/* A malformed list from node 3 is dropped, not shown. */
	wl = json_pack("[{s:s,s:s,s:s,s:i}]", "name", "../x", "kind", "container", "state",
		       "running", "memory", 1);
	assert_int_equal(cluster_publish_metrics(b.nodes[3].c, &m, wl), 0);
	json_decref(wl);
	bus_run(&b);
	{
		json_t *all = json_array();
		assert_int_equal(cluster_workloads_json(b.nodes[1].c, all), 0);
		assert_int_equal(json_array_size(all), 1);
		assert_string_equal(
			json_string_value(json_object_get(json_array_get(all, 0), "host")), "h2");
		assert_string_equal(
			json_string_value(json_object_get(json_array_get(all, 0), "name")), "web1");
		json_decref(all);
		/* The sender itself does not list its own published copy. */
		all = json_array();
		assert_int_equal(cluster_workloads_json(b.nodes[2].c, all), 0);
		assert_int_equal(json_array_size(all), 0);
		json_decref(all);
	}
	node_stop(&b, 3);
	bus_confchg(&b);
	bus_run(&b);

	j = cluster_hosts_json(b.nodes[1].c, 1500);
	hosts = json_object_get(j, "hosts");
	assert_int_equal(json_array_size(hosts), 3);
	h = json_array_get(hosts, 0);
	assert_true(json_is_true(json_object_get(h, "local")));
	assert_true(json_is_true(json_object_get(h, "coordinator")));
	h = json_array_get(hosts, 1);
	assert_string_equal(json_string_value(json_object_get(h, "name")), "h2");
	assert_true(json_is_true(json_object_get(h, "online")));
	assert_true(json_is_true(json_object_get(h, "quorate")));
	json_t *met = json_object_get(h, "metrics");
	assert_true(json_is_object(met));
	assert_int_equal(json_integer_value(json_object_get(met, "age_ms")), 0);
	assert_true(json_real_value(json_object_get(met, "cpu_busy_pct")) == 12.5);
	json_t *psi = json_object_get(met, "psi");
	assert_true(json_is_object(json_object_get(psi, "cpu")));
	assert_true(json_is_null(json_object_get(json_object_get(psi, "cpu"), "full")));
	assert_true(json_is_null(json_object_get(psi, "io")));
	h = json_array_get(hosts, 2);
	assert_string_equal(json_string_value(json_object_get(h, "name")), "h3");
	assert_true(json_is_false(json_object_get(h, "online")));
	assert_true(json_is_false(json_object_get(h, "quorate")));
	assert_true(json_is_null(json_object_get(h, "metrics")));
	json_decref(j);
	bus_free(&b);
}

static void test_malformed_messages_ignored(void **state)
{
	struct bus b = {0};
	static const char garbage[] =
		"\x4d\x47\x52\x44\x01\x00\x02\x00\x05\x00\x00\x00\x00\x00\x00\x00{\"a\"";
	static const char *bodies[] = {
		"{\"members\":[1,2],\"state\":{\"epoch\":99,\"hosts\":[]}}", /* wrong config */
		"{\"members\":[2,1],\"state\":{\"epoch\":99,\"hosts\":[]}}", /* unsorted */
		("{\"members\":[1],\"state\":{\"epoch\":99,\"hosts\":[{\"nodeid\":2,\"name\":\"a\"}"
		 ","
		 "{\"nodeid\":1,\"name\":\"b\"}]}}"), /* unsorted hosts */
		"{\"members\":[1],\"state\":{\"epoch\":99,\"hosts\":[{\"nodeid\":1,\"name\":\"../"
		"x\"}]}}",
		"{\"members\":[1],\"state\":{\"epoch\":-1,\"hosts\":[]}}",
		"{\"members\":[1],\"state\":\"x\"}",
		"[]",
	};
	uint64_t hash;

	node_start(&b, 1, NULL);
	bus_confchg(&b);
	bus_quorum(&b, true);
	bus_run(&b);
	assert_agree(&b, 1, 1);
	hash = cluster_state_hash(cluster_get_state(b.nodes[1].c));

	cluster_deliver(b.nodes[1].c, 1, garbage, sizeof(garbage) - 1, 0);
	cluster_deliver(b.nodes[1].c, 1, "x", 1, 0);
	cluster_deliver(b.nodes[1].c, 1, NULL, 0, 0);
	/* Start an exchange and feed it bad summaries: none may be taken. */
	bus_confchg(&b);
	for (size_t i = 0; i < ELEMENTSOF(bodies); i++) {
		json_t *j = json_loads(bodies[i], 0, NULL);
		void *buf;
		size_t len;
		assert_non_null(j);
		assert_int_equal(cluster_msg_encode(CLUSTER_MSG_SYNC, j, &buf, &len), 0);
		cluster_deliver(b.nodes[1].c, 1, buf, len, 0);
		free(buf);
		json_decref(j);
		assert_false(cluster_is_synced(b.nodes[1].c));
	}
	bus_run(&b);
	assert_agree(&b, 1, 1);
	assert_int_equal(cluster_state_hash(cluster_get_state(b.nodes[1].c)), hash);
	bus_free(&b);
}

static void test_state_json_roundtrip(void **state)
{
	struct cluster_state s = {0}, t;
	json_t *j;

	assert_int_equal(cluster_state_register_host(&s, 3, "c", NULL), 1);
	assert_int_equal(cluster_state_register_host(&s, 1, "a", "10.0.0.1"), 1);
	assert_int_equal(cluster_state_register_host(&s, 1, "a", "10.0.0.1"), 0);
	assert_int_equal(cluster_state_register_host(&s, 2, "a", NULL), -EEXIST);
	assert_int_equal(s.epoch, 2);
	assert_int_equal(s.hosts[0].nodeid, 1);
	j = cluster_state_to_json(&s);
	assert_int_equal(cluster_state_from_json(j, &t), 0);
	assert_int_equal(cluster_state_hash(&s), cluster_state_hash(&t));
	assert_int_equal(t.epoch, 2);
	assert_null(t.hosts[1].address);
	json_decref(j);
	cluster_state_done(&t);
	assert_int_equal(cluster_state_register_host(&s, 3, "c", "x"), 1);
	assert_int_not_equal(cluster_state_hash(&s), 0);
	cluster_state_done(&s);
}

static void test_owners_state(void **state)
{
	struct cluster_state s = {0}, t;
	uint64_t h0;
	json_t *j;

	assert_int_equal(cluster_state_register_host(&s, 1, "h1", NULL), 1);
	h0 = cluster_state_hash(&s);
	/* Claims: a new one, the same again, another host's claim of it, moves by CAS. */
	assert_int_equal(cluster_state_set_owner(&s, "vm1", "vm", "h1", NULL), 1);
	assert_int_equal(cluster_state_set_owner(&s, "vm1", "vm", "h1", NULL), 0);
	assert_int_equal(cluster_state_set_owner(&s, "vm1", "vm", "h2", NULL), -EBUSY);
	assert_int_equal(cluster_state_set_owner(&s, "vm1", "vm", "h2", "h3"), -EBUSY);
	assert_int_equal(cluster_state_set_owner(&s, "new", "vm", "h2", "h1"), -EBUSY);
	assert_int_equal(cluster_state_set_owner(&s, "vm1", "vm", "h2", "h1"), 1);
	assert_int_equal(cluster_state_set_owner(&s, "vm1", "vm", "h3", "h1"), -EBUSY);
	assert_int_equal(cluster_state_set_owner(&s, "a-ct", "container", "h1", NULL), 1);
	assert_int_equal(cluster_state_set_owner(&s, "../x", "vm", "h1", NULL), -EINVAL);
	assert_int_equal(cluster_state_set_owner(&s, "x", "toaster", "h1", NULL), -EINVAL);
	assert_int_equal(s.n_workloads, 2);
	assert_string_equal(s.workloads[0].name, "a-ct"); /* sorted */
	assert_string_equal(cluster_state_find_workload(&s, "vm1")->host, "h2");
	assert_int_equal(cluster_state_find_workload(&s, "vm1")->moves, 1);
	assert_int_equal(s.epoch, 4);
	assert_int_not_equal(cluster_state_hash(&s), h0);
	/* Through JSON and a copy, all of it survives. */
	j = cluster_state_to_json(&s);
	assert_int_equal(cluster_state_from_json(j, &t), 0);
	assert_int_equal(cluster_state_hash(&s), cluster_state_hash(&t));
	cluster_state_done(&t);
	assert_int_equal(cluster_state_copy(&s, &t), 0);
	assert_int_equal(cluster_state_hash(&s), cluster_state_hash(&t));
	cluster_state_done(&t);
	/* Unsorted or malformed owners are refused. */
	json_array_append_new(json_object_get(j, "workloads"),
			      json_pack("{s:s,s:s,s:s}", "name", "b", "kind", "vm", "host", "h1"));
	assert_int_equal(cluster_state_from_json(j, &t), -EINVAL);
	json_array_remove(json_object_get(j, "workloads"), 2);
	json_object_set_new(json_array_get(json_object_get(j, "workloads"), 0), "kind",
			    json_string("toaster"));
	assert_int_equal(cluster_state_from_json(j, &t), -EINVAL);
	json_decref(j);
	/* Dropping: only by the owner. */
	assert_int_equal(cluster_state_drop_owner(&s, "vm1", "h1"), -EBUSY);
	assert_int_equal(cluster_state_drop_owner(&s, "vm1", "h2"), 1);
	assert_int_equal(cluster_state_drop_owner(&s, "vm1", "h2"), 0);
	assert_null(cluster_state_find_workload(&s, "vm1"));
	cluster_state_done(&s);
}

static void test_owner_messages_ordered(void **state)
{
	struct bus b = {0};

	bus_form(&b, 1, 3);
	assert_agree(&b, 3, 3);
	/* Two hosts claim the same VM at once: the first in the agreed order wins on all. */
	assert_int_equal(cluster_request_owner(b.nodes[2].c, "vm1", "vm", "h2", NULL, false), 0);
	assert_int_equal(cluster_request_owner(b.nodes[3].c, "vm1", "vm", "h3", NULL, false), 0);
	bus_run(&b);
	assert_agree(&b, 4, 3);
	for (uint32_t id = 1; id <= 3; id++)
		assert_string_equal(
			cluster_state_find_workload(cluster_get_state(b.nodes[id].c), "vm1")->host,
			"h2");
	/* A move, sent twice (by source and destination): applied once. */
	assert_int_equal(cluster_request_owner(b.nodes[2].c, "vm1", "vm", "h1", "h2", false), 0);
	assert_int_equal(cluster_request_owner(b.nodes[1].c, "vm1", "vm", "h1", "h2", false), 0);
	bus_run(&b);
	assert_agree(&b, 5, 3);
	assert_string_equal(
		cluster_state_find_workload(cluster_get_state(b.nodes[3].c), "vm1")->host, "h1");
	/* Without quorum a request waits, and goes out once quorum is back. */
	bus_quorum(&b, false);
	assert_int_equal(cluster_request_owner(b.nodes[1].c, "vm2", "vm", "h1", NULL, false), 0);
	bus_run(&b);
	assert_agree(&b, 5, 3);
	assert_true(cluster_flush(b.nodes[1].c));
	bus_quorum(&b, true);
	bus_run(&b);
	assert_agree(&b, 6, 3);
	assert_false(cluster_flush(b.nodes[1].c));
	/* A malformed owner message is ignored by all. */
	{
		json_t *j =
			json_pack("{s:s,s:s,s:s}", "name", "../etc", "kind", "vm", "host", "h1");
		void *buf;
		size_t len;

		assert_int_equal(cluster_msg_encode(CLUSTER_MSG_OWNER, j, &buf, &len), 0);
		for (uint32_t id = 1; id <= 3; id++)
			cluster_deliver(b.nodes[id].c, 1, buf, len, 0);
		free(buf);
		json_decref(j);
	}
	assert_agree(&b, 6, 3);
	bus_free(&b);
}

/* The list of another host's workloads: one entry per workload, on the host the cluster
 * state records, even between a move and the new owner's next publication. */
static json_t *listed_on(struct bus *b, uint32_t id, const char *name)
{
	json_t *all = json_array(), *w, *found = NULL;
	size_t i, n = 0;

	assert_int_equal(cluster_workloads_json(b->nodes[id].c, all), 0);
	json_array_foreach(all, i, w)
	{
		if (!streq(json_string_value(json_object_get(w, "name")), name))
			continue;
		found = json_incref(w);
		n++;
	}
	assert_true(n <= 1);
	json_decref(all);
	return found;
}

static void publish(struct bus *b, uint32_t id, const char *vm)
{
	struct health_metrics m = {.mem_total = 1000, .n_cpus = 2};
	json_t *wl = vm ? json_pack("[{s:s,s:s,s:s,s:i}]", "name", vm, "kind", "vm", "state",
				    "running", "memory", 4096)
			: json_array();

	assert_int_equal(cluster_publish_metrics(b->nodes[id].c, &m, wl), 0);
	json_decref(wl);
}

static void assert_listed(struct bus *b, uint32_t id, const char *host, const char *state)
{
	json_t *w = listed_on(b, id, "vm1");

	assert_non_null(w);
	assert_string_equal(json_string_value(json_object_get(w, "host")), host);
	assert_string_equal(json_string_value(json_object_get(w, "state")), state);
	json_decref(w);
}

static void test_listed_by_owner(void **state)
{
	struct bus b = {0};

	bus_form(&b, 1, 3);
	publish(&b, 2, "vm1");
	publish(&b, 3, NULL);
	assert_int_equal(cluster_request_owner(b.nodes[2].c, "vm1", "vm", "h2", NULL, false), 0);
	bus_run(&b);
	assert_listed(&b, 1, "h2", "running");
	/* Moved to h3, which has not published since, and h2's last list still has it. */
	assert_int_equal(cluster_request_owner(b.nodes[2].c, "vm1", "vm", "h3", "h2", false), 0);
	bus_run(&b);
	assert_listed(&b, 1, "h3", "unreported");
	assert_listed(&b, 2, "h3", "unreported");
	/* h3's own list does not come from the bus. */
	assert_null(listed_on(&b, 3, "vm1"));
	publish(&b, 3, "vm1");
	publish(&b, 2, NULL);
	bus_run(&b);
	assert_listed(&b, 1, "h3", "running");
	/* Released: no record, nothing listed in its name. */
	assert_int_equal(cluster_request_owner(b.nodes[3].c, "vm1", "vm", "h3", NULL, true), 0);
	publish(&b, 3, NULL);
	bus_run(&b);
	assert_null(listed_on(&b, 1, "vm1"));
	bus_free(&b);
}

static void test_msg_header_checks(void **state)
{
	json_t *j = json_pack("{s:s}", "name", "h1"), *body;
	enum cluster_msg_type type;
	unsigned char *buf;
	size_t len;

	assert_int_equal(cluster_msg_encode(CLUSTER_MSG_HOST_REGISTER, j, (void **)&buf, &len), 0);
	assert_int_equal(cluster_msg_decode(buf, len, &type, &body), 0);
	assert_int_equal(type, CLUSTER_MSG_HOST_REGISTER);
	json_decref(body);
	assert_int_equal(cluster_msg_decode(buf, len - 1, &type, &body), -EBADMSG); /* short */
	buf[0] ^= 1;
	assert_int_equal(cluster_msg_decode(buf, len, &type, &body), -EBADMSG); /* magic */
	buf[0] ^= 1;
	buf[6] = 77;
	assert_int_equal(cluster_msg_decode(buf, len, &type, &body), -EBADMSG); /* type */
	free(buf);
	json_decref(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_three_form_and_register),
		cmocka_unit_test(test_rejoin_adopts_newest),
		cmocka_unit_test(test_empty_joiner_does_not_win),
		cmocka_unit_test(test_registration_during_sync_is_retried),
		cmocka_unit_test(test_not_quorate_changes_nothing),
		cmocka_unit_test(test_hosts_view),
		cmocka_unit_test(test_malformed_messages_ignored),
		cmocka_unit_test(test_state_json_roundtrip),
		cmocka_unit_test(test_msg_header_checks),
		cmocka_unit_test(test_owners_state),
		cmocka_unit_test(test_owner_messages_ordered),
		cmocka_unit_test(test_listed_by_owner),
	};
	log_set_max_level(LOG_ERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
