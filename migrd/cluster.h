/* The cluster state machine: applies ordered CPG messages to the replicated state, runs the
 * state exchange after membership changes, and keeps the live view (members, quorum,
 * coordinator, metrics). It does no I/O itself: messages leave through ops->send. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"
#include "health/health.h"
#include "migrd/cluster-state.h"

struct cluster;

struct cluster_ops {
	/* Multicasts an encoded message in agreed order; -EAGAIN means "try again later". */
	int (*send)(void *userdata, const void *msg, size_t len);
	/* The replicated state changed (persist it). */
	void (*state_changed)(void *userdata, const struct cluster_state *s);
	/* Membership, quorum or coordinator changed (for status and logs). */
	void (*view_changed)(void *userdata);
};

/* Takes ownership of *initial (the persisted state, possibly empty). */
int cluster_new(const char *local_name, const char *local_address, struct cluster_state *initial,
		const struct cluster_ops *ops, void *userdata, struct cluster **ret);
struct cluster *cluster_free(struct cluster *c);

/* Inputs, from the membership layer, in delivery order. */
void cluster_connected(struct cluster *c, uint32_t local_nodeid);
void cluster_disconnected(struct cluster *c);
void cluster_confchg(struct cluster *c, const uint32_t *members, size_t n_members);
void cluster_deliver(struct cluster *c, uint32_t from, const void *msg, size_t len, usec_t now);
void cluster_quorum(struct cluster *c, bool quorate);

/* Sends what is pending (state summary, host registration); call after inputs and
 * periodically. Returns true while something is still pending. */
bool cluster_flush(struct cluster *c);
/* Asks the cluster to record a workload's owner: host takes name (kind "vm"/"container") from
 * `from` (NULL: it was not recorded), or with drop host gives it up. The change is ordered and
 * applied alike by every member once this partition is synced and quorate (kept and sent
 * again until then); a compare-and-set, so two hosts can never both take one workload.
 * -EBUSY when too many requests wait. */
int cluster_request_owner(struct cluster *c, const char *name, const char *kind, const char *host,
			  const char *from, bool drop);
/* workloads: this host's (as the control API's list shows them, without "host"), or NULL. */
int cluster_publish_metrics(struct cluster *c, const struct health_metrics *m, json_t *workloads);
/* Appends what the other online hosts last published they run, each with its "host". */
int cluster_workloads_json(struct cluster *c, json_t *array);

/* Queries. */
bool cluster_is_connected(struct cluster *c);
bool cluster_is_synced(struct cluster *c);
bool cluster_is_quorate(struct cluster *c);
uint32_t cluster_local_nodeid(struct cluster *c);
/* Lowest node id of the quorate membership, 0 when there is none. */
uint32_t cluster_coordinator(struct cluster *c);
const struct cluster_state *cluster_get_state(struct cluster *c);
const uint32_t *cluster_members(struct cluster *c, size_t *ret_n);
/* The name the cluster knows a node by (registered, else last metrics, else NULL). */
const char *cluster_node_name(struct cluster *c, uint32_t nodeid);

/* The control API's views (see docs/control-api.md). */
json_t *cluster_status_json(struct cluster *c);
json_t *cluster_hosts_json(struct cluster *c, usec_t now);
