/* Local persistence of the replicated cluster state in SQLite (WAL). */
#pragma once

#include <jansson.h>

#include "migrd/cluster-state.h"

struct state_db;

/* Opens (creating if needed) DIR/state.db, 0600, WAL mode, schema migrated. */
int state_db_open(const char *state_dir, struct state_db **ret);
struct state_db *state_db_close(struct state_db *db);

/* Loads the stored state (an empty state at epoch 0 on a fresh database). */
int state_db_load(struct state_db *db, struct cluster_state *ret);
/* This host's containers, each a JSON record (see containers.c). */
int state_db_container_put(struct state_db *db, const char *name, json_t *record);
int state_db_container_delete(struct state_db *db, const char *name);
/* All records, as an array of objects (malformed rows are skipped and logged). */
int state_db_containers_load(struct state_db *db, json_t **ret);
/* The same for the VMs under this host's care. */
int state_db_vm_put(struct state_db *db, const char *name, json_t *record);
int state_db_vm_delete(struct state_db *db, const char *name);
int state_db_vms_load(struct state_db *db, json_t **ret);

/* Replaces the stored state in one transaction. */
int state_db_save(struct state_db *db, const struct cluster_state *s);
