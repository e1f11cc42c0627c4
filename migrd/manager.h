/* The Manager owns everything the daemon runs: config, event loop, state store, cluster state
 * machine, corosync membership, metrics probe and control socket. */
#pragma once

#include <systemd/sd-event.h>

#include "migrd/config.h"

struct manager;

/* Takes the config (moved out of *config). */
int manager_new(struct migrd_config *config, const char *config_path, struct manager **ret);
struct manager *manager_free(struct manager *m);
/* Opens the state store, the control socket (or the inherited one), starts the timers and the
 * first connection attempt to corosync. */
int manager_startup(struct manager *m);
int manager_run(struct manager *m);
