/* VMs internals shared by vms.c (adoption, states) and vms-move.c (moves between hosts). */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <sys/socket.h>

#include "migrd/vms.h"

struct move;
struct transport_context;

/* A host a VM could move to, as the event loop saw it (for a job thread). */
struct vm_peer {
	char name[64];
	struct sockaddr_storage addr;
	socklen_t addr_len;
	bool encrypt;
};

struct vm {
	char *name;
	json_t *record;	   /* name, uuid, state, memory (bytes), vcpus, persistent, adopted */
	struct move *move; /* the move in progress (owned by its job), or NULL */
};

struct vm *vms_find(struct manager *m, const char *name);
void vms_persist(struct manager *m, struct vm *v);
void vms_events_start(struct manager *m);
/* Takes a VM under this host's care with this record (a move arrived, or an adoption). */
int vms_take(struct manager *m, const char *name, json_t *record);
/* Forgets a VM (it moved away). */
void vms_forget(struct manager *m, const char *name);
/* Records in the cluster state (an ordered message) that this host owns name now, taken from
 * `from` (NULL: it was not recorded). */
void vms_claim(struct manager *m, const char *name, const char *from);
/* "migrating to HOST" while a move runs, else NULL (for the list). */
const char *vms_move_state(struct vm *v);
/* Why this host's libvirt (version as virConnectGetLibVersion gives it, 0 if unknown) cannot
 * make a carried move of name, or NULL when it can (the caller frees the message). */
char *vms_carried_refusal(const char *host, const char *name, unsigned long libvirt_version);

/* The other registered hosts with an address (malloc'd array). */
int vms_peers(struct manager *m, struct vm_peer **ret, size_t *ret_n);
/* From a job thread: asks each peer whether it could run the domain (a "vm-check" session);
 * {"h2": "ok", "h3": "h3 cannot run vm1: disk /x: No such file or directory", ...}. */
json_t *vms_check_peers(struct transport_context *ctx, const struct vm_peer *peers, size_t n,
			const char *name, const char *xml);
