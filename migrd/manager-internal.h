/* Manager internals shared by manager.c and the control methods. */
#pragma once

#include <pthread.h>

#include "common/util.h"
#include "migrd/jobs.h"
#include "transport/transport.h"
#include "health/health.h"
#include "migrd/cluster.h"
#include "migrd/config.h"
#include "migrd/control.h"
#include "migrd/manager.h"
#include "migrd/state-db.h"

struct container;
struct vm;
struct vm_events;

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

	/* Transport: absent (NULL) until certificates are configured. */
	struct transport_context *transport;
	struct transport_listener *listener;
	char *transport_error; /* why there is no transport, for clear errors */
	struct job_queue *jobs;
	/* Read by handshake threads: the names of cluster hosts, and live sessions to abort at
	 * shutdown. */
	pthread_mutex_t shared_lock;
	char **host_names;
	struct transport_session **sessions;
	size_t n_sessions;

	struct container **containers; /* this host's, see containers.c */
	size_t n_containers;
	struct vm **vms; /* this host's, see vms.c */
	size_t n_vms;
	sd_event_source *vm_refresh_timer;
	struct vm_events *vm_events; /* libvirt's lifecycle events, from the first VM on */
	sd_event_source *vm_event_source;
	bool vm_refresh_running, vm_libvirt_warned;
	char last_status[256];
};

extern const struct control_method manager_control_methods[];
extern const size_t manager_n_control_methods;

void manager_update_status(struct manager *m);
/* Sends what the cluster has pending now, and keeps retrying while something is. */
void manager_arm_flush(struct manager *m);
int manager_transport_setup(struct manager *m);
void manager_transport_teardown(struct manager *m);
void manager_update_host_names(struct manager *m, const struct cluster_state *s);
int manager_session_register(struct manager *m, struct transport_session *s);
void manager_session_unregister(struct manager *m, struct transport_session *s);
/* For requests that talk to another host: its address (a [peer] override, else what it
 * registered), or the request answered with the error (transport-unavailable, not-found) and
 * that error returned. */
int manager_peer_address(struct manager *m, struct control_request *req, const char *host,
			 const char **ret_address);
/* A control API "compress" value ("auto", "off" or a zstd level -7..19) into a level
 * (COMPRESS_AUTO for auto); absent (NULL) leaves *level alone. -EINVAL otherwise. */
int manager_parse_compress(json_t *v, int *level);
