/* Local persistence of the replicated cluster state in SQLite (WAL). */
#pragma once

#include "migrd/cluster-state.h"

struct state_db;

/* Opens (creating if needed) DIR/state.db, 0600, WAL mode, schema migrated. */
int state_db_open(const char *state_dir, struct state_db **ret);
struct state_db *state_db_close(struct state_db *db);

/* Loads the stored state (an empty state at epoch 0 on a fresh database). */
int state_db_load(struct state_db *db, struct cluster_state *ret);
/* Replaces the stored state in one transaction. */
int state_db_save(struct state_db *db, const struct cluster_state *s);
