/* The replicated cluster state: what every host agrees on, its JSON form and its hash. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CLUSTER_MAX_HOSTS     256
#define CLUSTER_MAX_WORKLOADS 4096

struct cluster_host {
	uint32_t nodeid;
	char *name;
	char *address; /* may be NULL */
	bool maintenance;
};

/* Who owns a workload: the one host that may run it (safety invariant 1). */
struct cluster_workload {
	char *name;
	char *kind; /* "vm", "container" */
	char *host;
	uint64_t moves; /* owner changes so far */
};

struct cluster_state {
	uint64_t epoch; /* counts applied state-changing messages; the newest state wins a merge */
	struct cluster_host *hosts; /* sorted by nodeid */
	size_t n_hosts;
	struct cluster_workload *workloads; /* sorted by name */
	size_t n_workloads;
};

void cluster_state_done(struct cluster_state *s);
int cluster_state_copy(const struct cluster_state *s, struct cluster_state *ret);

/* Canonical JSON: equal states give equal bytes. */
json_t *cluster_state_to_json(const struct cluster_state *s);
/* Validates everything (types, bounds, names, sorted unique node ids). */
int cluster_state_from_json(json_t *j, struct cluster_state *ret);
uint64_t cluster_state_hash(const struct cluster_state *s);

/* A peer-facing address: printable ASCII without spaces, 1-255 bytes. */
bool cluster_address_valid(const char *a);

const struct cluster_host *cluster_state_find_host(const struct cluster_state *s, uint32_t nodeid);
const struct cluster_host *cluster_state_find_host_by_name(const struct cluster_state *s,
							   const char *name);

const struct cluster_workload *cluster_state_find_workload(const struct cluster_state *s,
							   const char *name);
/* Compare-and-set of a workload's owner: name becomes host's when its owner is now `from`
 * (NULL: not recorded yet). Returns 1 when changed (epoch bumped), 0 when host owns it
 * already, -EBUSY when another host owns it, -EINVAL for bad names, -E2BIG past the cap. */
int cluster_state_set_owner(struct cluster_state *s, const char *name, const char *kind,
			    const char *host, const char *from);
/* Forgets a workload host owns (it was removed). 1 when removed, 0 when not recorded,
 * -EBUSY when another host owns it. */
int cluster_state_drop_owner(struct cluster_state *s, const char *name, const char *host);

/* Adds or updates a host. Returns 1 when the state changed (epoch bumped), 0 when it already
 * held exactly this, -EEXIST when another node id owns the name, -E2BIG past the host cap. */
int cluster_state_register_host(struct cluster_state *s, uint32_t nodeid, const char *name,
				const char *address);
