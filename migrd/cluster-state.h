/* The replicated cluster state: what every host agrees on, its JSON form and its hash. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CLUSTER_MAX_HOSTS 256

struct cluster_host {
	uint32_t nodeid;
	char *name;
	char *address; /* may be NULL */
	bool maintenance;
};

struct cluster_state {
	uint64_t epoch; /* counts applied state-changing messages; the newest state wins a merge */
	struct cluster_host *hosts; /* sorted by nodeid */
	size_t n_hosts;
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

/* Adds or updates a host. Returns 1 when the state changed (epoch bumped), 0 when it already
 * held exactly this, -EEXIST when another node id owns the name, -E2BIG past the host cap. */
int cluster_state_register_host(struct cluster_state *s, uint32_t nodeid, const char *name,
				const char *address);
