/* Cluster messages carried by corosync CPG: a fixed binary header and a JSON body, with one
 * typed, size-checked decoder per message type. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "health/health.h"
#include "migrd/cluster-state.h"
#include "migrd/config.h"

#define CLUSTER_MSG_MAGIC    0x4452474dU /* "MGRD" little-endian */
#define CLUSTER_MSG_VERSION  1
#define CLUSTER_MSG_MAX_BODY (1024 * 1024)

enum cluster_msg_type {
	CLUSTER_MSG_METRICS = 1,       /* live: a host's metrics and its view of quorum */
	CLUSTER_MSG_SYNC = 2,	       /* a member's state after a membership change */
	CLUSTER_MSG_HOST_REGISTER = 3, /* state-changing: name and address of the sender */
	CLUSTER_MSG_OWNER = 4,	       /* state-changing: a workload's owner, set or dropped */
	_CLUSTER_MSG_TYPE_MAX,
};
const char *cluster_msg_type_to_string(enum cluster_msg_type t);

struct cluster_msg_header {
	uint32_t magic;
	uint16_t version;
	uint16_t type;
	uint32_t body_len; /* bytes of JSON after the header */
	uint32_t reserved;
} __attribute__((packed));

struct cluster_msg_metrics {
	char name[MIGRD_HOST_NAME_MAX + 1];
	bool quorate;
	struct health_metrics metrics;
};

struct cluster_msg_sync {
	uint32_t *members; /* the configuration the sender saw, sorted */
	size_t n_members;
	struct cluster_state state;
};

struct cluster_msg_register {
	char name[MIGRD_HOST_NAME_MAX + 1];
	char *address; /* may be NULL */
};

/* A workload's owner: name becomes host's if `from` owns it now (empty from: not recorded);
 * with drop, host forgets it. */
struct cluster_msg_owner {
	char name[64];
	char kind[16];
	char host[MIGRD_HOST_NAME_MAX + 1];
	char from[MIGRD_HOST_NAME_MAX + 1];
	bool drop;
};

/* Frames a body; ret is malloc'd. */
int cluster_msg_encode(enum cluster_msg_type type, json_t *body, void **ret, size_t *ret_size);
/* Checks the header and parses the JSON body (object); -EBADMSG on anything malformed. */
int cluster_msg_decode(const void *data, size_t size, enum cluster_msg_type *ret_type,
		       json_t **ret_body);

json_t *cluster_msg_metrics_to_json(const struct cluster_msg_metrics *m);
int cluster_msg_metrics_from_json(json_t *j, struct cluster_msg_metrics *ret);

json_t *cluster_msg_sync_to_json(const uint32_t *members, size_t n_members,
				 const struct cluster_state *s);
int cluster_msg_sync_from_json(json_t *j, struct cluster_msg_sync *ret);
void cluster_msg_sync_done(struct cluster_msg_sync *m);

json_t *cluster_msg_register_to_json(const char *name, const char *address);
int cluster_msg_register_from_json(json_t *j, struct cluster_msg_register *ret);
void cluster_msg_register_done(struct cluster_msg_register *m);

json_t *cluster_msg_owner_to_json(const struct cluster_msg_owner *m);
/* Checks (names, kind) and fills *m; -EINVAL when a field is not valid. */
int cluster_msg_owner_init(struct cluster_msg_owner *m, const char *name, const char *kind,
			   const char *host, const char *from, bool drop);
int cluster_msg_owner_from_json(json_t *j, struct cluster_msg_owner *ret);

/* The metrics as the control API shows them (with age_ms from the receive time). */
json_t *health_metrics_to_json(const struct health_metrics *m, int64_t age_ms);
