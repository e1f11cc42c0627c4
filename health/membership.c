/* corosync membership: the CPG group (configurations, agreed messages), votequorum's view and
 * cmap's node names, dispatched from an sd-event loop. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/uio.h>
#include <time.h>

#include <corosync/cmap.h>
#include <corosync/corotypes.h>
#include <corosync/cpg.h>
#include <corosync/votequorum.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "health/health.h"
#include "health/membership-internal.h"

/* cpg_join may answer CS_ERR_TRY_AGAIN while corosync syncs a new membership. new() retries
 * for half a second at most, then returns -EAGAIN and the owner's reconnect timer takes over. */
#define JOIN_ATTEMPTS	10
#define JOIN_RETRY_NSEC (50 * 1000 * 1000L)

/* nodelist.node.N entries we look through for a name; corosync supports far fewer nodes. */
#define NODELIST_MAX 1024

struct health_membership {
	sd_event *event;
	struct health_membership_ops ops;
	void *userdata;

	cpg_handle_t cpg;
	votequorum_handle_t vq;
	cmap_handle_t cmap;
	bool cpg_open, vq_open, cmap_open;
	struct cpg_name group;
	uint32_t local_nodeid;
	size_t max_msg_size;

	sd_event_source *cpg_source, *vq_source;
	/* Allocated up front (off) so reporting a broken connection cannot fail. */
	sd_event_source *disconnect_source;

	/* > 0 while we are inside a corosync dispatch or one of the owner's callbacks: freeing
	 * then only marks the object, and the outermost frame destroys it on the way out,
	 * because libcpg/libvotequorum keep using the handle after a callback returns. */
	unsigned busy;
	bool free_requested;
	bool broken;
	int broken_error;
};

int cs_error_to_errno(cs_error_t err)
{
	switch (err) {
	case CS_OK:
		return 0;
	case CS_ERR_LIBRARY:
		return -ECONNREFUSED;
	case CS_ERR_VERSION:
		return -EPROTO;
	case CS_ERR_INIT:
		return -EHOSTDOWN;
	case CS_ERR_TIMEOUT:
		return -ETIMEDOUT;
	case CS_ERR_TRY_AGAIN:
		return -EAGAIN;
	case CS_ERR_INVALID_PARAM:
	case CS_ERR_BAD_FLAGS:
	case CS_ERR_BAD_OPERATION:
		return -EINVAL;
	case CS_ERR_NO_MEMORY:
		return -ENOMEM;
	case CS_ERR_BAD_HANDLE:
		return -EBADF;
	case CS_ERR_BUSY:
		return -EBUSY;
	case CS_ERR_ACCESS:
	case CS_ERR_SECURITY:
		return -EACCES;
	case CS_ERR_NOT_EXIST:
	case CS_ERR_NAME_NOT_FOUND:
	case CS_ERR_CONTEXT_NOT_FOUND:
		return -ENOENT;
	case CS_ERR_NAME_TOO_LONG:
		return -ENAMETOOLONG;
	case CS_ERR_EXIST:
		return -EEXIST;
	case CS_ERR_NO_SPACE:
	case CS_ERR_TOO_MANY_GROUPS:
		return -ENOSPC;
	case CS_ERR_INTERRUPT:
		return -EINTR;
	case CS_ERR_NO_RESOURCES:
	case CS_ERR_QUEUE_FULL:
	case CS_ERR_QUEUE_NOT_AVAILABLE:
		return -ENOBUFS;
	case CS_ERR_NOT_SUPPORTED:
		return -EOPNOTSUPP;
	case CS_ERR_MESSAGE_ERROR:
		return -EBADMSG;
	case CS_ERR_TOO_BIG:
		return -EMSGSIZE;
	case CS_ERR_NO_SECTIONS:
		return -ENODATA;
	case CS_ERR_FAILED_OPERATION:
	default:
		return -EIO;
	}
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

size_t health_nodeids_sort_unique(uint32_t *ids, size_t n)
{
	size_t k = 0;

	if (n == 0)
		return 0;
	qsort(ids, n, sizeof(*ids), cmp_u32);
	for (size_t i = 1; i < n; i++)
		if (ids[i] != ids[k])
			ids[++k] = ids[i];
	return k + 1;
}

/* Node ids of a CPG address list; a node with several processes in the group appears once. */
static size_t cpg_nodeids(const struct cpg_address *list, size_t n, uint32_t ret[CPG_MEMBERS_MAX])
{
	n = MIN(n, (size_t)CPG_MEMBERS_MAX);
	for (size_t i = 0; i < n; i++)
		ret[i] = list[i].nodeid;
	return health_nodeids_sort_unique(ret, n);
}

/* Removes from ids (sorted) every id found in sorted; returns the new count. */
static size_t nodeids_subtract(uint32_t *ids, size_t n, const uint32_t *sorted, size_t n_sorted)
{
	size_t k = 0;

	for (size_t i = 0; i < n; i++)
		if (!bsearch(&ids[i], sorted, n_sorted, sizeof(*sorted), cmp_u32))
			ids[k++] = ids[i];
	return k;
}

static void membership_destroy(struct health_membership *m)
{
	/* Sources first: they point at fds the corosync libraries close when finalizing. */
	m->cpg_source = sd_event_source_disable_unref(m->cpg_source);
	m->vq_source = sd_event_source_disable_unref(m->vq_source);
	m->disconnect_source = sd_event_source_disable_unref(m->disconnect_source);
	/* Finalizing a broken connection fails; the libraries free the handle all the same. */
	if (m->cpg_open)
		(void)cpg_finalize(m->cpg);
	if (m->vq_open)
		(void)votequorum_finalize(m->vq);
	if (m->cmap_open)
		(void)cmap_finalize(m->cmap);
	sd_event_unref(m->event);
	free(m);
}

static void membership_enter(struct health_membership *m)
{
	m->busy++;
}

/* Frees m when this was the outermost frame and the owner asked for it meanwhile; the caller
 * must not touch m afterwards. */
static void membership_leave(struct health_membership *m)
{
	if (--m->busy == 0 && m->free_requested)
		membership_destroy(m);
}

/* Callbacks are suppressed once the owner let go of m, or after the disconnect report. */
static bool membership_live(struct health_membership *m)
{
	return !m->free_requested && !m->broken;
}

static void membership_break(struct health_membership *m, int error)
{
	if (m->broken)
		return;
	log_debug_errno(error, "Lost connection to corosync: %m");
	m->broken = true;
	m->broken_error = error;
	/* The fds now poll as hung up forever; leaving the sources on would spin the loop. */
	(void)sd_event_source_set_enabled(m->cpg_source, SD_EVENT_OFF);
	(void)sd_event_source_set_enabled(m->vq_source, SD_EVENT_OFF);
	(void)sd_event_source_set_enabled(m->disconnect_source, SD_EVENT_ONESHOT);
}

static struct health_membership *membership_from_cpg(cpg_handle_t handle)
{
	void *ctx = NULL;

	if (cpg_context_get(handle, &ctx) != CS_OK)
		return NULL;
	return ctx;
}

static void on_cpg_deliver(cpg_handle_t handle, const struct cpg_name *group, uint32_t nodeid,
			   uint32_t pid, void *msg, size_t len)
{
	struct health_membership *m = membership_from_cpg(handle);

	if (!m || !membership_live(m) || !m->ops.deliver)
		return;
	membership_enter(m);
	m->ops.deliver(m->userdata, nodeid, msg, len);
	membership_leave(m); /* never the last frame: the dispatch holds one */
}

static void on_cpg_confchg(cpg_handle_t handle, const struct cpg_name *group,
			   const struct cpg_address *members, size_t n_members,
			   const struct cpg_address *left, size_t n_left,
			   const struct cpg_address *joined, size_t n_joined)
{
	struct health_membership *m = membership_from_cpg(handle);
	uint32_t mem[CPG_MEMBERS_MAX], lef[CPG_MEMBERS_MAX], joi[CPG_MEMBERS_MAX];
	size_t nm, nl, nj;

	if (!m || !membership_live(m))
		return;
	nm = cpg_nodeids(members, n_members, mem);
	nl = cpg_nodeids(left, n_left, lef);
	nj = cpg_nodeids(joined, n_joined, joi);
	/* CPG tracks processes; we report nodes. A process leaving while another one of its
	 * node stays is not the node leaving (that would look like a failure to fence). */
	nl = nodeids_subtract(lef, nl, mem, nm);
	log_debug("CPG %s: %zu members, %zu left, %zu joined", m->group.value, nm, nl, nj);
	if (!m->ops.confchg || (nl == 0 && nj == 0))
		return;
	membership_enter(m);
	m->ops.confchg(m->userdata, mem, nm, lef, nl, joi, nj);
	membership_leave(m);
}

static void on_quorum_notify(votequorum_handle_t handle, uint64_t context, uint32_t quorate,
			     uint32_t n_nodes, votequorum_node_t nodes[])
{
	struct health_membership *m = (struct health_membership *)(uintptr_t)context;
	uint32_t ids[CPG_MEMBERS_MAX];
	size_t n = 0;

	if (!m || !membership_live(m))
		return;
	/* votequorum lists every node it knows of, dead ones too; we report the members. */
	for (uint32_t i = 0; i < n_nodes && n < ELEMENTSOF(ids); i++)
		if (nodes[i].state == VOTEQUORUM_NODESTATE_MEMBER)
			ids[n++] = nodes[i].nodeid;
	n = health_nodeids_sort_unique(ids, n);
	log_debug("votequorum: %s, %zu members", quorate ? "quorate" : "not quorate", n);
	if (!m->ops.quorum)
		return;
	membership_enter(m);
	m->ops.quorum(m->userdata, quorate != 0, ids, n);
	membership_leave(m);
}

/* After draining, a hung-up fd means corosync closed its end even if dispatch said OK. */
static void membership_check_dispatch(struct health_membership *m, cs_error_t err, uint32_t revents,
				      const char *what)
{
	if (!membership_live(m))
		return;
	if (err != CS_OK && err != CS_ERR_TRY_AGAIN) {
		log_debug("%s dispatch failed: %s", what, cs_strerror(err));
		/* LIBRARY is what a closed IPC connection gives: corosync went away. */
		membership_break(m, err == CS_ERR_LIBRARY || err == CS_ERR_BAD_HANDLE
					    ? -ECONNRESET
					    : cs_error_to_errno(err));
	} else if (revents & (EPOLLHUP | EPOLLERR)) {
		log_debug("%s connection hung up", what);
		membership_break(m, -ECONNRESET);
	}
}

static int on_cpg_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct health_membership *m = userdata;
	cs_error_t err;

	if (!membership_live(m))
		return 0;
	membership_enter(m);
	err = cpg_dispatch(m->cpg, CS_DISPATCH_ALL);
	membership_check_dispatch(m, err, revents, "CPG");
	membership_leave(m);
	return 0;
}

static int on_vq_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct health_membership *m = userdata;
	cs_error_t err;

	if (!membership_live(m))
		return 0;
	membership_enter(m);
	err = votequorum_dispatch(m->vq, CS_DISPATCH_ALL);
	membership_check_dispatch(m, err, revents, "votequorum");
	membership_leave(m);
	return 0;
}

/* Runs from its own event source, never inside a corosync dispatch, so the owner may free m
 * (or anything else) from the callback. */
static int on_disconnect(sd_event_source *s, void *userdata)
{
	struct health_membership *m = userdata;

	if (m->free_requested || !m->ops.disconnected)
		return 0;
	membership_enter(m);
	m->ops.disconnected(m->userdata, m->broken_error);
	membership_leave(m);
	return 0;
}

static int membership_add_io(struct health_membership *m, int fd, sd_event_io_handler_t handler,
			     sd_event_source **ret)
{
	/* libqb opens its sockets O_CLOEXEC already; the fd stays owned by the library. */
	return sd_event_add_io(m->event, ret, fd, EPOLLIN, handler, m);
}

static void sleep_nsec(long nsec)
{
	struct timespec ts = {.tv_nsec = nsec};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int membership_connect_cpg(struct health_membership *m)
{
	cpg_model_v1_data_t model = {
		.model = CPG_MODEL_V1,
		.cpg_deliver_fn = on_cpg_deliver,
		.cpg_confchg_fn = on_cpg_confchg,
	};
	unsigned int nodeid;
	uint32_t max;
	cs_error_t err;
	int fd, r;

	err = cpg_model_initialize(&m->cpg, CPG_MODEL_V1, (cpg_model_data_t *)&model, m);
	if (err != CS_OK)
		return log_debug_errno(cs_error_to_errno(err), "cpg_model_initialize: %s",
				       cs_strerror(err));
	m->cpg_open = true;

	err = cpg_local_get(m->cpg, &nodeid);
	if (err != CS_OK)
		return log_debug_errno(cs_error_to_errno(err), "cpg_local_get: %s",
				       cs_strerror(err));
	m->local_nodeid = nodeid;

	/* Bigger messages go through libcpg's fragmentation, which sleeps in a retry loop,
	 * prints to stderr, and leaves every receiver holding a partial buffer of the full
	 * announced size when the sender gives up half way: we refuse them instead. */
	err = cpg_max_atomic_msgsize_get(m->cpg, &max);
	if (err != CS_OK)
		return log_debug_errno(cs_error_to_errno(err), "cpg_max_atomic_msgsize_get: %s",
				       cs_strerror(err));
	m->max_msg_size = max;

	err = cpg_fd_get(m->cpg, &fd);
	if (err != CS_OK)
		return log_debug_errno(cs_error_to_errno(err), "cpg_fd_get: %s", cs_strerror(err));
	r = membership_add_io(m, fd, on_cpg_io, &m->cpg_source);
	if (r < 0)
		return log_debug_errno(r, "Failed to watch the CPG fd: %m");

	for (unsigned i = 0;; i++) {
		err = cpg_join(m->cpg, &m->group);
		if (err != CS_ERR_TRY_AGAIN || i + 1 >= JOIN_ATTEMPTS)
			break;
		sleep_nsec(JOIN_RETRY_NSEC);
	}
	if (err != CS_OK)
		return log_debug_errno(cs_error_to_errno(err), "cpg_join(%s): %s", m->group.value,
				       cs_strerror(err));
	return 0;
}

static int membership_connect_votequorum(struct health_membership *m)
{
	votequorum_callbacks_t callbacks = {
		.votequorum_quorum_notify_fn = on_quorum_notify,
	};
	cs_error_t err;
	int fd, r;

	err = votequorum_initialize(&m->vq, &callbacks);
	if (err != CS_OK)
		return log_debug_errno(cs_error_to_errno(err), "votequorum_initialize: %s",
				       cs_strerror(err));
	m->vq_open = true;

	err = votequorum_fd_get(m->vq, &fd);
	if (err != CS_OK)
		return log_debug_errno(cs_error_to_errno(err), "votequorum_fd_get: %s",
				       cs_strerror(err));
	r = membership_add_io(m, fd, on_vq_io, &m->vq_source);
	if (r < 0)
		return log_debug_errno(r, "Failed to watch the votequorum fd: %m");

	/* Besides changes, CS_TRACK_CHANGES makes votequorum send the current state at once,
	 * which gives the owner its first quorum callback from the loop. */
	err = votequorum_trackstart(m->vq, (uint64_t)(uintptr_t)m, CS_TRACK_CHANGES);
	if (err != CS_OK)
		return log_debug_errno(cs_error_to_errno(err), "votequorum_trackstart: %s",
				       cs_strerror(err));
	return 0;
}

int health_membership_new(sd_event *e, const char *group, const struct health_membership_ops *ops,
			  void *userdata, struct health_membership **ret)
{
	struct health_membership *m;
	size_t len;
	cs_error_t err;
	int r;

	if (!e || !group || !ops || !ret)
		return -EINVAL;
	len = strlen(group);
	if (len == 0 || len >= CPG_MAX_NAME_LENGTH)
		return -EINVAL;

	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->event = sd_event_ref(e);
	m->ops = *ops;
	m->userdata = userdata;
	memcpy(m->group.value, group, len);
	m->group.length = (uint32_t)len;

	r = sd_event_add_defer(e, &m->disconnect_source, on_disconnect, m);
	if (r >= 0)
		r = sd_event_source_set_enabled(m->disconnect_source, SD_EVENT_OFF);
	if (r < 0) {
		membership_destroy(m);
		return log_debug_errno(r, "Failed to add the disconnect event source: %m");
	}

	r = membership_connect_cpg(m);
	if (r >= 0)
		r = membership_connect_votequorum(m);
	if (r >= 0) {
		err = cmap_initialize(&m->cmap);
		if (err == CS_OK)
			m->cmap_open = true;
		else
			r = log_debug_errno(cs_error_to_errno(err), "cmap_initialize: %s",
					    cs_strerror(err));
	}
	if (r < 0) {
		membership_destroy(m);
		return r;
	}

	log_debug("Joined CPG group %s as node %" PRIu32, m->group.value, m->local_nodeid);
	*ret = m;
	return 0;
}

struct health_membership *health_membership_free(struct health_membership *m)
{
	if (!m)
		return NULL;
	if (m->busy > 0) {
		/* Called from one of our callbacks: stop everything now, free on the way out. */
		m->free_requested = true;
		(void)sd_event_source_set_enabled(m->cpg_source, SD_EVENT_OFF);
		(void)sd_event_source_set_enabled(m->vq_source, SD_EVENT_OFF);
		(void)sd_event_source_set_enabled(m->disconnect_source, SD_EVENT_OFF);
		return NULL;
	}
	membership_destroy(m);
	return NULL;
}

uint32_t health_membership_local_nodeid(struct health_membership *m)
{
	return m ? m->local_nodeid : 0;
}

size_t health_membership_max_message_size(struct health_membership *m)
{
	return m ? m->max_msg_size : 0;
}

int health_membership_send(struct health_membership *m, const void *msg, size_t len)
{
	struct iovec iov = {.iov_base = (void *)msg, .iov_len = len};
	cs_error_t err;

	if (!m || (!msg && len > 0))
		return -EINVAL;
	if (!membership_live(m))
		return -ENOTCONN;
	if (len > m->max_msg_size)
		return log_debug_errno(EMSGSIZE, "Message of %zu bytes exceeds the %zu byte limit",
				       len, m->max_msg_size);
	err = cpg_mcast_joined(m->cpg, CPG_TYPE_AGREED, &iov, 1);
	if (err != CS_OK)
		return log_debug_errno(cs_error_to_errno(err), "cpg_mcast_joined(%zu bytes): %s",
				       len, cs_strerror(err));
	return 0;
}

int health_membership_node_name(struct health_membership *m, uint32_t nodeid, char **ret)
{
	char key[64];
	cs_error_t err;

	if (!m || !ret)
		return -EINVAL;
	if (!membership_live(m))
		return -ENOTCONN;
	for (unsigned i = 0; i < NODELIST_MAX; i++) {
		uint32_t id;
		char *name = NULL;

		snprintf(key, sizeof(key), "nodelist.node.%u.nodeid", i);
		err = cmap_get_uint32(m->cmap, key, &id);
		if (err == CS_ERR_NOT_EXIST)
			break;
		if (err != CS_OK)
			return log_debug_errno(cs_error_to_errno(err), "cmap %s: %s", key,
					       cs_strerror(err));
		if (id != nodeid)
			continue;

		snprintf(key, sizeof(key), "nodelist.node.%u.name", i);
		err = cmap_get_string(m->cmap, key, &name);
		if (err == CS_ERR_NOT_EXIST)
			return -ENOENT;
		if (err != CS_OK)
			return log_debug_errno(cs_error_to_errno(err), "cmap %s: %s", key,
					       cs_strerror(err));
		*ret = name;
		return 0;
	}
	return -ENOENT;
}
