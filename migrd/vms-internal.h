/* VMs internals shared by vms.c (adoption, states) and vms-move.c (moves between hosts). */
#pragma once

#include <jansson.h>

#include "migrd/vms.h"

struct move;

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
