/* The Manager: wires the event loop, corosync membership, the cluster state machine, the state
 * store, the metrics probe and the control socket together. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <grp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>

#include "common/common.h"
#include "migrd/containers.h"
#include "migrd/vms.h"
#include "migrd/manager-internal.h"

#define RECONNECT_INTERVAL (1 * USEC_PER_SEC)
#define FLUSH_INTERVAL	   (50 * USEC_PER_MSEC)

static void manager_schedule_reconnect(struct manager *m);
static int manager_connect(struct manager *m);

/* ---- cluster state machine → the outside world ----------------------------------- */

static int cluster_send(void *userdata, const void *msg, size_t len)
{
	struct manager *m = userdata;

	if (!m->membership)
		return -ENOTCONN;
	return health_membership_send(m->membership, msg, len);
}

static void cluster_state_changed(void *userdata, const struct cluster_state *s)
{
	struct manager *m = userdata;
	int r = state_db_save(m->db, s);

	manager_update_host_names(m, s);
	if (r < 0)
		log_error_errno(r, "Failed to persist cluster state at epoch %" PRIu64 ": %m",
				s->epoch);
}

static void cluster_view_changed(void *userdata)
{
	manager_update_status(userdata);
}

static const struct cluster_ops cluster_ops = {
	.send = cluster_send,
	.state_changed = cluster_state_changed,
	.view_changed = cluster_view_changed,
};

void manager_update_status(struct manager *m)
{
	char status[256], members[128] = "";
	size_t n, off = 0;
	const uint32_t *mem = cluster_members(m->cluster, &n);
	uint32_t coord = cluster_coordinator(m->cluster);

	for (size_t i = 0; i < n && off < sizeof(members) - 12; i++)
		off += (size_t)snprintf(members + off, sizeof(members) - off, "%s%" PRIu32,
					i ? " " : "", mem[i]);
	if (!cluster_is_connected(m->cluster))
		snprintf(status, sizeof(status), "Waiting for corosync");
	else
		snprintf(status, sizeof(status),
			 "%zu member%s [%s], %s%s, coordinator %s, epoch %" PRIu64, n,
			 n == 1 ? "" : "s", members,
			 cluster_is_quorate(m->cluster) ? "quorate" : "NOT quorate",
			 cluster_is_synced(m->cluster) ? "" : " (syncing)",
			 coord ? strna(cluster_node_name(m->cluster, coord)) : "none",
			 cluster_get_state(m->cluster)->epoch);
	if (streq(status, m->last_status))
		return;
	strscpy(m->last_status, status, sizeof(m->last_status));
	log_struct_errno(LOG_INFO, 0, LOG_FIELDS("MIGRD_EVENT=cluster-view"), "Cluster: %s",
			 status);
	(void)sd_notifyf(false, "STATUS=%s", status);
}

/* ---- corosync membership → cluster state machine --------------------------------- */

void manager_arm_flush(struct manager *m)
{
	if (cluster_flush(m->cluster))
		(void)sd_event_source_set_enabled(m->flush_timer, SD_EVENT_ON);
}

static void on_confchg(void *userdata, const uint32_t *members, size_t n_members,
		       const uint32_t *left, size_t n_left, const uint32_t *joined, size_t n_joined)
{
	struct manager *m = userdata;

	for (size_t i = 0; i < n_left; i++)
		log_struct_errno(LOG_NOTICE, 0, LOG_FIELDS("MIGRD_EVENT=host-left"),
				 "Host %s (node %" PRIu32 ") left the cluster",
				 strna(cluster_node_name(m->cluster, left[i])), left[i]);
	for (size_t i = 0; i < n_joined; i++)
		log_struct_errno(LOG_INFO, 0, LOG_FIELDS("MIGRD_EVENT=host-joined"),
				 "Node %" PRIu32 " joined the cluster", joined[i]);
	cluster_confchg(m->cluster, members, n_members);
	manager_arm_flush(m);
}

static void on_deliver(void *userdata, uint32_t nodeid, const void *msg, size_t len)
{
	struct manager *m = userdata;

	cluster_deliver(m->cluster, nodeid, msg, len, now_usec(CLOCK_MONOTONIC));
	manager_arm_flush(m);
}

static void on_quorum(void *userdata, bool quorate, const uint32_t *nodes, size_t n_nodes)
{
	struct manager *m = userdata;

	cluster_quorum(m->cluster, quorate);
	manager_arm_flush(m);
}

static int on_disconnect_defer(sd_event_source *s, void *userdata)
{
	struct manager *m = userdata;

	m->disconnect_defer = sd_event_source_disable_unref(m->disconnect_defer);
	m->membership = health_membership_free(m->membership);
	cluster_disconnected(m->cluster);
	manager_schedule_reconnect(m);
	return 0;
}

static void on_disconnected(void *userdata, int error)
{
	struct manager *m = userdata;
	int r;

	log_warning_errno(error, "Lost the connection to corosync: %m. Reconnecting.");
	m->corosync_warned = true;
	if (m->disconnect_defer)
		return;
	/* Freed outside of the membership's own dispatch. */
	r = sd_event_add_defer(m->event, &m->disconnect_defer, on_disconnect_defer, m);
	if (r < 0)
		log_error_errno(r, "Failed to schedule corosync reconnection: %m");
}

static const struct health_membership_ops membership_ops = {
	.confchg = on_confchg,
	.deliver = on_deliver,
	.quorum = on_quorum,
	.disconnected = on_disconnected,
};

static int manager_connect(struct manager *m)
{
	int r;

	r = health_membership_new(m->event, m->config.cpg_group, &membership_ops, m,
				  &m->membership);
	if (r < 0) {
		if (!m->corosync_warned)
			log_warning_errno(
				r, "Cannot connect to corosync (%m); retrying every second.");
		m->corosync_warned = true;
		return r;
	}
	log_info("Connected to corosync as node %" PRIu32 ", group '%s'",
		 health_membership_local_nodeid(m->membership), m->config.cpg_group);
	m->corosync_warned = false;
	cluster_connected(m->cluster, health_membership_local_nodeid(m->membership));
	return 0;
}

static int on_reconnect(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct manager *m = userdata;

	if (!m->membership && manager_connect(m) < 0)
		manager_schedule_reconnect(m);
	return 0;
}

static void manager_schedule_reconnect(struct manager *m)
{
	(void)sd_event_source_set_time(m->reconnect_timer,
				       now_usec(CLOCK_MONOTONIC) + RECONNECT_INTERVAL);
	(void)sd_event_source_set_enabled(m->reconnect_timer, SD_EVENT_ONESHOT);
}

static int on_flush(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct manager *m = userdata;

	if (cluster_flush(m->cluster))
		(void)sd_event_source_set_time(s, now_usec(CLOCK_MONOTONIC) + FLUSH_INTERVAL);
	else
		(void)sd_event_source_set_enabled(s, SD_EVENT_OFF);
	return 0;
}

static int on_metrics(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct manager *m = userdata;
	struct health_metrics metrics;
	int r;

	(void)sd_event_source_set_time(s, usec + m->config.metrics_interval);
	r = health_probe_sample(m->probe, &metrics);
	if (r < 0) {
		log_debug_errno(r, "Failed to sample local metrics: %m");
		return 0;
	}
	if (!cluster_is_connected(m->cluster))
		return 0;
	_cleanup_json_ json_t *workloads = json_array();
	if (workloads && containers_list(m, workloads) >= 0 && vms_list(m, workloads) >= 0) {
		/* Peers learn the host from who sent it. */
		size_t i;
		json_t *w;
		json_array_foreach(workloads, i, w)
		{
			json_object_del(w, "host");
			json_object_del(w, "pid");
		}
	}
	r = cluster_publish_metrics(m->cluster, &metrics, workloads);
	if (r < 0 && r != -EAGAIN)
		log_debug_errno(r, "Failed to publish metrics: %m");
	return 0;
}

/* ---- lifecycle ------------------------------------------------------------------- */

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
	struct manager *m = userdata;

	if (si->ssi_signo == SIGHUP) {
		struct migrd_config c;
		_cleanup_free_ char *errors = NULL;
		int r = migrd_config_init_defaults(&c);

		/* Only the log level changes at run time; the rest needs a restart. */
		if (r >= 0)
			r = migrd_config_load(&c, m->config_path, false, &errors);
		if (r < 0)
			log_error("Reload of %s failed, keeping the running configuration:\n%s",
				  m->config_path, strna(errors));
		else {
			log_set_max_level(c.log_level);
			log_info("Reloaded %s (log level %s)", m->config_path,
				 log_level_to_string(c.log_level));
		}
		migrd_config_done(&c);
		return 0;
	}
	log_info("Received %s, shutting down", strsignal((int)si->ssi_signo));
	(void)sd_notify(false, "STOPPING=1\nSTATUS=Shutting down");
	return sd_event_exit(sd_event_source_get_event(s), 0);
}

int manager_new(struct migrd_config *config, const char *config_path, struct manager **ret)
{
	struct manager *m = calloc(1, sizeof(*m));
	sigset_t ss;
	int r;

	if (!m)
		return -ENOMEM;
	m->config = *config;
	*config = (struct migrd_config){0};
	m->config_path = strdup(config_path);
	m->start_time = now_usec(CLOCK_MONOTONIC);
	pthread_mutex_init(&m->shared_lock, NULL);
	if (!m->config_path) {
		manager_free(m);
		return -ENOMEM;
	}
	r = sd_event_default(&m->event);
	if (r < 0)
		goto fail;
	/* Pings the systemd watchdog from the loop itself, so a hung loop gets us restarted. */
	(void)sd_event_set_watchdog(m->event, true);
	sigemptyset(&ss);
	sigaddset(&ss, SIGTERM);
	sigaddset(&ss, SIGINT);
	sigaddset(&ss, SIGHUP);
	sigprocmask(SIG_BLOCK, &ss, NULL);
	signal(SIGPIPE, SIG_IGN);
	if ((r = sd_event_add_signal(m->event, NULL, SIGTERM, on_signal, m)) < 0 ||
	    (r = sd_event_add_signal(m->event, NULL, SIGINT, on_signal, m)) < 0 ||
	    (r = sd_event_add_signal(m->event, NULL, SIGHUP, on_signal, m)) < 0)
		goto fail;
	*ret = m;
	return 0;
fail:
	manager_free(m);
	return r;
}

struct manager *manager_free(struct manager *m)
{
	if (!m)
		return NULL;
	m->control = control_server_free(m->control);
	containers_free(m);
	vms_free(m);
	manager_transport_teardown(m);
	m->membership = health_membership_free(m->membership);
	sd_event_source_disable_unref(m->disconnect_defer);
	sd_event_source_disable_unref(m->metrics_timer);
	sd_event_source_disable_unref(m->reconnect_timer);
	sd_event_source_disable_unref(m->flush_timer);
	m->cluster = cluster_free(m->cluster);
	m->probe = health_probe_free(m->probe);
	m->db = state_db_close(m->db);
	sd_event_unref(m->event);
	migrd_config_done(&m->config);
	free(m->config_path);
	pthread_mutex_destroy(&m->shared_lock);
	free(m);
	return NULL;
}

/* A listening AF_UNIX stream socket from systemd socket activation, or -EBADF. */
static int inherited_control_fd(void)
{
	int n = sd_listen_fds(true);

	for (int fd = SD_LISTEN_FDS_START; fd < SD_LISTEN_FDS_START + n; fd++) {
		int flags;

		if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0)
			continue;
		/* Inherited sockets may be blocking; the accept loop drains until EAGAIN. */
		flags = fcntl(fd, F_GETFL);
		if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 ||
		    fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
			return NEG_ERRNO();
		return fd;
	}
	return -EBADF;
}

int manager_startup(struct manager *m)
{
	struct control_limits limits = {
		.max_request = m->config.control_max_request,
		.max_clients = m->config.control_max_clients,
		.max_inflight = m->config.control_max_inflight,
	};
	struct cluster_state state = {0};
	usec_t now = now_usec(CLOCK_MONOTONIC);
	gid_t gid = 0;
	int fd, r;

	r = state_db_open(m->config.state_dir, &m->db);
	if (r < 0)
		return log_error_errno(r, "Failed to open the state store in %s: %m",
				       m->config.state_dir);
	r = state_db_load(m->db, &state);
	if (r < 0)
		return log_error_errno(r, "Failed to load the state store in %s: %m",
				       m->config.state_dir);
	log_info("Loaded cluster state at epoch %" PRIu64 " (%zu hosts) from %s", state.epoch,
		 state.n_hosts, m->config.state_dir);
	r = cluster_new(m->config.host_name, m->config.address, &state, &cluster_ops, m,
			&m->cluster);
	if (r < 0) {
		cluster_state_done(&state);
		return log_oom();
	}
	manager_update_host_names(m, cluster_get_state(m->cluster));
	r = containers_load(m);
	if (r >= 0)
		r = vms_load(m);
	if (r < 0)
		return r;
	r = manager_transport_setup(m);
	if (r < 0)
		return r;
	r = health_probe_new("/proc", &m->probe);
	if (r < 0)
		return log_error_errno(r, "Failed to set up the metrics probe: %m");

	fd = inherited_control_fd();
	if (fd < 0 && fd != -EBADF)
		return log_error_errno(fd, "Failed to set up the control socket from systemd: %m");
	if (fd >= 0) {
		struct group *gr = getgrnam(m->config.control_group);
		gid = gr ? gr->gr_gid : 0;
		log_info("Using the control socket passed by systemd");
	} else {
		r = control_listen(m->config.control_socket, m->config.control_group, &fd, &gid);
		if (r < 0)
			return log_error_errno(r, "Failed to listen on %s: %m",
					       m->config.control_socket);
		if (gid == 0)
			log_warning(
				"Group '%s' does not exist: the control socket is for root only",
				m->config.control_group);
	}
	r = control_server_new(m->event, fd, gid, &limits, manager_control_methods,
			       manager_n_control_methods, m, &m->control);
	if (r < 0) {
		safe_close(fd);
		return log_error_errno(r, "Failed to start the control server: %m");
	}

	if ((r = sd_event_add_time(m->event, &m->metrics_timer, CLOCK_MONOTONIC, now, 0, on_metrics,
				   m)) < 0 ||
	    (r = sd_event_add_time(m->event, &m->reconnect_timer, CLOCK_MONOTONIC, USEC_INFINITY, 0,
				   on_reconnect, m)) < 0 ||
	    (r = sd_event_add_time(m->event, &m->flush_timer, CLOCK_MONOTONIC, now, 0, on_flush,
				   m)) < 0)
		return log_error_errno(r, "Failed to set up timers: %m");
	(void)sd_event_source_set_enabled(m->metrics_timer, SD_EVENT_ON);
	(void)sd_event_source_set_enabled(m->flush_timer, SD_EVENT_OFF);

	if (manager_connect(m) < 0)
		manager_schedule_reconnect(m);
	manager_update_status(m);
	log_info("migrd %s running as host %s, control socket %s", MIGRD_VERSION,
		 m->config.host_name, m->config.control_socket);
	(void)sd_notify(false, "READY=1");
	return 0;
}

int manager_run(struct manager *m)
{
	return sd_event_loop(m->event);
}
