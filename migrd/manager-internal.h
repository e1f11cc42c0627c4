/* Manager internals shared by manager.c and the control methods. */
#pragma once

#include "common/util.h"
#include "health/health.h"
#include "migrd/cluster.h"
#include "migrd/config.h"
#include "migrd/control.h"
#include "migrd/manager.h"
#include "migrd/state-db.h"

struct manager {
	sd_event *event;
	struct migrd_config config;
	char *config_path;
	usec_t start_time;

	struct state_db *db;
	struct cluster *cluster;
	struct health_membership *membership;
	struct health_probe *probe;
	struct control_server *control;

	sd_event_source *metrics_timer;
	sd_event_source *reconnect_timer;
	sd_event_source *flush_timer;
	sd_event_source *disconnect_defer;
	bool corosync_warned;
	char last_status[256];
};

extern const struct control_method manager_control_methods[];
extern const size_t manager_n_control_methods;

void manager_update_status(struct manager *m);
