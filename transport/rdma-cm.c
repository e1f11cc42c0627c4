/* RDMA connection setup with rdma_cm: device availability, listening, accepting, connecting,
 * and building and tearing down a connection's verbs resources (see rdma.c for the design). */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/common.h"
#include "transport/rdma-conn-internal.h"

#define RDMA_BACKLOG		64
#define RDMA_RESOLVE_MS_DEFAULT 30000 /* address and route resolution without a deadline */

struct transport_rdma_listener {
	struct rdma_event_channel *channel;
	struct rdma_cm_id *id;
	struct transport_rdma_params params;
};

DEFINE_TRIVIAL_CLEANUP_FUNC(struct rdma_conn *, transport_rdma_conn_destroy);

/* ---- availability ------------------------------------------------------------------------- */

static int set_reason(char **ret_reason, int result, const char *fmt, ...) _printf_(3, 4);
static int set_reason(char **ret_reason, int result, const char *fmt, ...)
{
	va_list ap;
	char *s;
	int k;

	if (!ret_reason)
		return result;
	va_start(ap, fmt);
	k = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (k < 0)
		return -ENOMEM;
	*ret_reason = s;
	return result;
}

/* The first active port of dev (> 0), 0 for none, or -errno when it cannot be opened. */
static int first_active_port(struct ibv_device *dev, const char **ret_link)
{
	struct ibv_context *ctx;
	struct ibv_device_attr attr;
	int found = 0;

	errno = 0;
	ctx = ibv_open_device(dev);
	if (!ctx)
		return NEG_ERRNO();
	if (ibv_query_device(ctx, &attr) == 0)
		for (unsigned p = 1; p <= attr.phys_port_cnt && !found; p++) {
			struct ibv_port_attr pa;

			if (ibv_query_port(ctx, (uint8_t)p, &pa) == 0 &&
			    pa.state == IBV_PORT_ACTIVE) {
				found = (int)p;
				*ret_link = pa.link_layer == IBV_LINK_LAYER_ETHERNET ? "RoCE"
										     : "InfiniBand";
			}
		}
	(void)ibv_close_device(ctx);
	return found;
}

int transport_rdma_available(char **ret_reason)
{
	struct ibv_device **list;
	struct rdma_event_channel *ch;
	char names[256] = "", dev[IBV_SYSFS_NAME_MAX] = "";
	const char *link = "";
	int n = 0, port = 0, open_error = 0;

	errno = 0;
	list = ibv_get_device_list(&n);
	if (!list) {
		int e = errno > 0 ? errno : ENODEV;

		/* libibverbs says ENOSYS when the kernel has no uverbs ABI at all. */
		return set_reason(ret_reason, 0,
				  "no RDMA devices (ibv_get_device_list failed: %s%s)", strerror(e),
				  e == ENOSYS ? "; no RDMA driver is loaded in this kernel" : "");
	}
	for (int i = 0; i < n && port <= 0; i++) {
		const char *name = ibv_get_device_name(list[i]);
		size_t used = strlen(names);

		snprintf(names + used, sizeof(names) - used, "%s%s", used ? ", " : "", strna(name));
		port = first_active_port(list[i], &link);
		if (port < 0)
			open_error = -port;
		else if (port > 0)
			strscpy(dev, strna(name), sizeof(dev));
	}
	ibv_free_device_list(list);
	if (n == 0)
		return set_reason(ret_reason, 0,
				  "no RDMA devices (ibv_get_device_list returned 0 devices)");
	if (port <= 0 && open_error)
		return set_reason(
			ret_reason, 0,
			"RDMA devices present (%s) but none has an active port (one could "
			"not be opened: %s)",
			names, strerror(open_error));
	if (port <= 0)
		return set_reason(ret_reason, 0,
				  "RDMA devices present (%s) but none has an active port", names);
	errno = 0;
	ch = rdma_create_event_channel();
	if (!ch)
		return set_reason(
			ret_reason, 0,
			"RDMA device %s port %d is active but rdma_cm is unavailable (%s; is "
			"rdma_ucm loaded?)",
			dev, port, strerror(errno > 0 ? errno : ENODEV));
	rdma_destroy_event_channel(ch);
	return set_reason(ret_reason, 1, "RDMA device %s port %d active (%s)", dev, port, link);
}

/* ---- connection objects ------------------------------------------------------------------- */

static int params_resolve(const struct transport_rdma_params *in, struct transport_rdma_params *ret)
{
	struct transport_rdma_params p = {
		.n_buffers = in && in->n_buffers ? in->n_buffers : TRANSPORT_RDMA_N_BUFFERS_DEFAULT,
		.buffer_size = in && in->buffer_size ? in->buffer_size
						     : TRANSPORT_RDMA_BUFFER_SIZE_DEFAULT,
	};

	if (p.n_buffers < TRANSPORT_RDMA_N_BUFFERS_MIN ||
	    p.n_buffers > TRANSPORT_RDMA_N_BUFFERS_MAX ||
	    p.buffer_size < TRANSPORT_RDMA_BUFFER_SIZE_MIN ||
	    p.buffer_size > TRANSPORT_RDMA_BUFFER_SIZE_MAX ||
	    (uint64_t)p.n_buffers * p.buffer_size > TRANSPORT_RDMA_POOL_MAX)
		return -EINVAL;
	*ret = p;
	return 0;
}

static int check_address(const struct sockaddr *addr, socklen_t len)
{
	if (!addr || len < sizeof(sa_family_t) || len > sizeof(struct sockaddr_storage))
		return -EINVAL;
	if (addr->sa_family != AF_INET && addr->sa_family != AF_INET6)
		return -EAFNOSUPPORT;
	return 0;
}

static int sync_init(struct rdma_conn *c)
{
	pthread_condattr_t attr;
	int r;

	r = pthread_condattr_init(&attr);
	if (r != 0)
		return -r;
	/* Deadlines are CLOCK_MONOTONIC. */
	r = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	if (r == 0)
		r = pthread_cond_init(&c->cond, &attr);
	pthread_condattr_destroy(&attr);
	if (r != 0)
		return -r;
	r = pthread_mutex_init(&c->lock, NULL);
	if (r != 0) {
		pthread_cond_destroy(&c->cond);
		return -r;
	}
	c->sync_init = true;
	return 0;
}

static int conn_new(const struct transport_rdma_params *p, struct rdma_conn **ret)
{
	_cleanup_(transport_rdma_conn_destroyp) struct rdma_conn *c = calloc(1, sizeof(*c));
	int r;

	if (!c)
		return -ENOMEM;
	c->conn.ops = &transport_rdma_conn_ops;
	c->wake_fd = -EBADF;
	atomic_init(&c->cancelled, false);
	atomic_init(&c->disconnected, false);
	c->n_buffers = p->n_buffers;
	c->buffer_size = p->buffer_size;
	r = sync_init(c);
	if (r < 0)
		return r;
	c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->wake_fd < 0)
		return NEG_ERRNO();
	c->free_send = calloc(c->n_buffers, sizeof(*c->free_send));
	if (!c->free_send)
		return -ENOMEM;
	for (uint32_t i = 0; i < c->n_buffers; i++)
		c->free_send[c->n_free_send++] = c->n_buffers - 1 - i;
	r = transport_rdma_rx_queue_init(&c->rx, c->n_buffers);
	if (r < 0)
		return r;
	errno = 0;
	c->channel = rdma_create_event_channel();
	if (!c->channel)
		return errno > 0 ? -errno : -ENODEV;
	r = transport_rdma_fd_setup(c->channel->fd);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(c);
	return 0;
}

static int alloc_pool(struct rdma_conn *c, uint8_t **ret_pool, struct ibv_mr **ret_mr)
{
	size_t size = (size_t)(c->n_buffers + TRANSPORT_RDMA_CTRL_SLOTS) * c->buffer_size;
	long page = sysconf(_SC_PAGESIZE);
	void *p;
	int r;

	r = posix_memalign(&p, page > 0 ? (size_t)page : 4096, size);
	if (r != 0)
		return -r;
	*ret_pool = p;
	errno = 0;
	*ret_mr = ibv_reg_mr(c->pd, p, size, IBV_ACCESS_LOCAL_WRITE);
	if (!*ret_mr)
		return log_debug_errno(NEG_ERRNO(), "rdma: ibv_reg_mr of %zu bytes failed: %m",
				       size);
	return 0;
}

/* PD, completion channel, CQ, registered pools and the QP on c->id, receives posted. */
static int conn_setup_qp(struct rdma_conn *c)
{
	struct ibv_context *v = c->id->verbs;
	uint32_t slots = c->n_buffers + TRANSPORT_RDMA_CTRL_SLOTS;
	struct ibv_qp_init_attr attr = {
		.qp_type = IBV_QPT_RC,
		.cap = {.max_send_wr = slots,
			.max_recv_wr = slots,
			.max_send_sge = 1,
			.max_recv_sge = 1},
	};
	int r;

	if (!v)
		return -ENODEV;
	errno = 0;
	c->pd = ibv_alloc_pd(v);
	if (!c->pd)
		return log_debug_errno(NEG_ERRNO(), "rdma: ibv_alloc_pd failed: %m");
	c->comp = ibv_create_comp_channel(v);
	if (!c->comp)
		return log_debug_errno(NEG_ERRNO(), "rdma: ibv_create_comp_channel failed: %m");
	r = transport_rdma_fd_setup(c->comp->fd);
	if (r < 0)
		return r;
	/* Every posted send and receive completes once: this never overflows. */
	c->cq = ibv_create_cq(v, (int)(2 * slots), c, c->comp, 0);
	if (!c->cq)
		return log_debug_errno(NEG_ERRNO(), "rdma: ibv_create_cq failed: %m");
	r = alloc_pool(c, &c->send_pool, &c->send_mr);
	if (r < 0)
		return r;
	r = alloc_pool(c, &c->recv_pool, &c->recv_mr);
	if (r < 0)
		return r;
	attr.send_cq = attr.recv_cq = c->cq;
	if (rdma_create_qp(c->id, c->pd, &attr) < 0)
		return log_debug_errno(NEG_ERRNO(), "rdma: rdma_create_qp failed: %m");
	c->qp_created = true;
	return transport_rdma_conn_post_recvs(c);
}

static void conn_start(struct rdma_conn *c, const struct transport_rdma_info *peer)
{
	transport_rdma_credits_init(&c->credits, c->n_buffers, peer->n_buffers);
	c->max_payload = MIN(c->buffer_size, peer->buffer_size) - TRANSPORT_RDMA_MSG_HEADER_SIZE;
}

static struct rdma_conn_param conn_param(const uint8_t info[TRANSPORT_RDMA_INFO_SIZE])
{
	/* SEND/RECV only: no RDMA READ resources. Transport retries 7 times (a dead peer shows
	 * as an error completion within about a second); RNR retries forever (7), the common
	 * choice: credits keep receives posted, and a stall would still end at a deadline. */
	return (struct rdma_conn_param){
		.private_data = info,
		.private_data_len = TRANSPORT_RDMA_INFO_SIZE,
		.retry_count = 7,
		.rnr_retry_count = 7,
	};
}

void transport_rdma_conn_destroy(struct rdma_conn *c)
{
	if (!c)
		return;
	if (c->established)
		transport_rdma_conn_disconnect(c);
	if (c->qp_created)
		rdma_destroy_qp(c->id);
	if (c->cq)
		(void)ibv_destroy_cq(c->cq);
	if (c->comp)
		(void)ibv_destroy_comp_channel(c->comp);
	if (c->send_mr)
		(void)ibv_dereg_mr(c->send_mr);
	if (c->recv_mr)
		(void)ibv_dereg_mr(c->recv_mr);
	if (c->pd)
		(void)ibv_dealloc_pd(c->pd);
	free(c->send_pool);
	free(c->recv_pool);
	if (c->id)
		(void)rdma_destroy_id(c->id);
	if (c->channel)
		rdma_destroy_event_channel(c->channel);
	transport_rdma_rx_queue_done(&c->rx);
	free(c->free_send);
	safe_close(c->wake_fd);
	if (c->sync_init) {
		pthread_cond_destroy(&c->cond);
		pthread_mutex_destroy(&c->lock);
	}
	free(c);
}

/* ---- rdma_cm events ----------------------------------------------------------------------- */

static int cm_next_event(struct rdma_event_channel *ch, usec_t deadline, struct rdma_cm_event **ret)
{
	for (;;) {
		struct pollfd p = {.fd = ch->fd, .events = POLLIN};
		int r;

		if (rdma_get_cm_event(ch, ret) == 0)
			return 0;
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			return NEG_ERRNO();
		r = poll(&p, 1, transport_rdma_poll_ms(deadline));
		if (r < 0 && errno != EINTR)
			return NEG_ERRNO();
		if (r == 0)
			return -ETIMEDOUT;
	}
}

/* Waits for the event want (returned, to be acked by the caller); events that end the attempt
 * become errors, others are acked and skipped. */
static int cm_expect(struct rdma_event_channel *ch, usec_t deadline, enum rdma_cm_event_type want,
		     struct rdma_cm_event **ret)
{
	for (;;) {
		struct rdma_cm_event *ev;
		enum rdma_cm_event_type type;
		int r, status;

		r = cm_next_event(ch, deadline, &ev);
		if (r < 0)
			return r;
		if (ev->event == want) {
			*ret = ev;
			return 0;
		}
		type = ev->event;
		status = ev->status;
		rdma_ack_cm_event(ev);
		log_debug("rdma: waiting for %s, got %s (status %d)", rdma_event_str(want),
			  rdma_event_str(type), status);
		switch (type) {
		case RDMA_CM_EVENT_ADDR_ERROR:
		case RDMA_CM_EVENT_ROUTE_ERROR:
		case RDMA_CM_EVENT_UNREACHABLE:
			return -EHOSTUNREACH;
		case RDMA_CM_EVENT_REJECTED:
			return -ECONNREFUSED;
		case RDMA_CM_EVENT_CONNECT_ERROR:
		case RDMA_CM_EVENT_DISCONNECTED:
			return -ECONNRESET;
		case RDMA_CM_EVENT_DEVICE_REMOVAL:
			return -ENODEV;
		default:
			continue;
		}
	}
}

static int resolve_ms(usec_t deadline)
{
	int ms = transport_rdma_poll_ms(deadline);

	return ms < 0 ? RDMA_RESOLVE_MS_DEFAULT : MAX(ms, 1);
}

/* ---- listening and accepting -------------------------------------------------------------- */

int transport_rdma_listen_with(const struct sockaddr *addr, socklen_t len,
			       const struct transport_rdma_params *params,
			       struct transport_rdma_listener **ret)
{
	_cleanup_(transport_rdma_listener_freep) struct transport_rdma_listener *l = NULL;
	int r;

	r = check_address(addr, len);
	if (r < 0)
		return r;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	r = params_resolve(params, &l->params);
	if (r < 0)
		return r;
	errno = 0;
	l->channel = rdma_create_event_channel();
	if (!l->channel)
		return log_debug_errno(errno > 0 ? -errno : -ENODEV,
				       "rdma: rdma_create_event_channel failed: %m");
	r = transport_rdma_fd_setup(l->channel->fd);
	if (r < 0)
		return r;
	if (rdma_create_id(l->channel, &l->id, l, RDMA_PS_TCP) < 0)
		return NEG_ERRNO();
	if (rdma_bind_addr(l->id, (struct sockaddr *)addr) < 0)
		return log_debug_errno(NEG_ERRNO(), "rdma: rdma_bind_addr failed: %m");
	if (rdma_listen(l->id, RDMA_BACKLOG) < 0)
		return log_debug_errno(NEG_ERRNO(), "rdma: rdma_listen failed: %m");
	*ret = TAKE_PTR(l);
	return 0;
}

int transport_rdma_listen(const struct sockaddr *addr, socklen_t len,
			  struct transport_rdma_listener **ret)
{
	return transport_rdma_listen_with(addr, len, NULL, ret);
}

struct transport_rdma_listener *transport_rdma_listener_free(struct transport_rdma_listener *l)
{
	if (!l)
		return NULL;
	if (l->id)
		(void)rdma_destroy_id(l->id);
	if (l->channel)
		rdma_destroy_event_channel(l->channel);
	free(l);
	return NULL;
}

int transport_rdma_listener_fd(struct transport_rdma_listener *l)
{
	return l ? l->channel->fd : -EBADF;
}

int transport_rdma_listener_address(struct transport_rdma_listener *l, struct sockaddr_storage *ret,
				    socklen_t *ret_len)
{
	const struct sockaddr *sa = rdma_get_local_addr(l->id);
	socklen_t len;

	if (sa->sa_family == AF_INET)
		len = sizeof(struct sockaddr_in);
	else if (sa->sa_family == AF_INET6)
		len = sizeof(struct sockaddr_in6);
	else
		return -EAFNOSUPPORT;
	memset(ret, 0, sizeof(*ret));
	memcpy(ret, sa, len);
	*ret_len = len;
	return 0;
}

/* The next connection request on the listener: its id and the peer's info (acked). */
static int next_request(struct transport_rdma_listener *l, usec_t deadline,
			struct rdma_cm_id **ret_id, struct transport_rdma_info *ret_peer)
{
	for (;;) {
		struct rdma_cm_event *ev;
		struct rdma_cm_id *id;
		const char *reason = NULL;
		int r;

		r = cm_next_event(l->channel, deadline, &ev);
		if (r < 0)
			return r;
		if (ev->event != RDMA_CM_EVENT_CONNECT_REQUEST) {
			log_debug("rdma: listener event %s", rdma_event_str(ev->event));
			rdma_ack_cm_event(ev);
			continue;
		}
		id = ev->id;
		r = transport_rdma_info_decode(ev->param.conn.private_data,
					       ev->param.conn.private_data_len, ret_peer, &reason);
		rdma_ack_cm_event(ev);
		if (r < 0) {
			log_debug("rdma: rejecting a connection request: %s", reason);
			(void)rdma_reject(id, NULL, 0);
			(void)rdma_destroy_id(id);
			return r;
		}
		*ret_id = id;
		return 0;
	}
}

int transport_rdma_accept(struct transport_rdma_listener *l, usec_t timeout,
			  struct transport_conn **ret)
{
	_cleanup_(transport_rdma_conn_destroyp) struct rdma_conn *c = NULL;
	usec_t deadline = transport_rdma_deadline(timeout);
	struct transport_rdma_info peer;
	uint8_t info[TRANSPORT_RDMA_INFO_SIZE];
	struct rdma_conn_param param;
	struct rdma_cm_event *ev;
	struct rdma_cm_id *id;
	int r;

	if (!l || !ret)
		return -EINVAL;
	r = next_request(l, deadline, &id, &peer);
	if (r < 0)
		return r;
	r = conn_new(&l->params, &c);
	if (r >= 0 && rdma_migrate_id(id, c->channel) < 0)
		r = NEG_ERRNO();
	if (r < 0) {
		(void)rdma_reject(id, NULL, 0);
		(void)rdma_destroy_id(id);
		return log_debug_errno(r, "rdma: cannot take a connection request: %m");
	}
	c->id = id;
	id->context = c;
	r = conn_setup_qp(c);
	if (r < 0) {
		(void)rdma_reject(id, NULL, 0);
		return r;
	}
	conn_start(c, &peer);
	transport_rdma_info_encode(&(struct transport_rdma_info){c->n_buffers, c->buffer_size},
				   info);
	param = conn_param(info);
	if (rdma_accept(id, &param) < 0)
		return log_debug_errno(NEG_ERRNO(), "rdma: rdma_accept failed: %m");
	c->established = true; /* from here on, destroying disconnects */
	r = cm_expect(c->channel, deadline, RDMA_CM_EVENT_ESTABLISHED, &ev);
	if (r < 0)
		return log_debug_errno(r, "rdma: accepted connection not established: %m");
	rdma_ack_cm_event(ev);
	*ret = &TAKE_PTR(c)->conn;
	return 0;
}

/* ---- connecting --------------------------------------------------------------------------- */

int transport_rdma_connect_with(const struct sockaddr *addr, socklen_t len,
				const struct transport_rdma_params *params, usec_t timeout,
				struct transport_conn **ret)
{
	_cleanup_(transport_rdma_conn_destroyp) struct rdma_conn *c = NULL;
	usec_t deadline = transport_rdma_deadline(timeout);
	struct transport_rdma_params p;
	struct transport_rdma_info peer;
	uint8_t info[TRANSPORT_RDMA_INFO_SIZE];
	struct rdma_conn_param param;
	struct rdma_cm_event *ev;
	const char *reason = NULL;
	int r;

	r = check_address(addr, len);
	if (r < 0)
		return r;
	r = params_resolve(params, &p);
	if (r < 0)
		return r;
	r = conn_new(&p, &c);
	if (r < 0)
		return log_debug_errno(r, "rdma: cannot create a connection: %m");
	if (rdma_create_id(c->channel, &c->id, c, RDMA_PS_TCP) < 0)
		return NEG_ERRNO();
	if (rdma_resolve_addr(c->id, NULL, (struct sockaddr *)addr, resolve_ms(deadline)) < 0)
		return log_debug_errno(NEG_ERRNO(), "rdma: rdma_resolve_addr failed: %m");
	r = cm_expect(c->channel, deadline, RDMA_CM_EVENT_ADDR_RESOLVED, &ev);
	if (r < 0)
		return r;
	rdma_ack_cm_event(ev);
	if (rdma_resolve_route(c->id, resolve_ms(deadline)) < 0)
		return log_debug_errno(NEG_ERRNO(), "rdma: rdma_resolve_route failed: %m");
	r = cm_expect(c->channel, deadline, RDMA_CM_EVENT_ROUTE_RESOLVED, &ev);
	if (r < 0)
		return r;
	rdma_ack_cm_event(ev);
	r = conn_setup_qp(c);
	if (r < 0)
		return r;
	transport_rdma_info_encode(&(struct transport_rdma_info){c->n_buffers, c->buffer_size},
				   info);
	param = conn_param(info);
	if (rdma_connect(c->id, &param) < 0)
		return log_debug_errno(NEG_ERRNO(), "rdma: rdma_connect failed: %m");
	r = cm_expect(c->channel, deadline, RDMA_CM_EVENT_ESTABLISHED, &ev);
	if (r < 0)
		return log_debug_errno(r, "rdma: connection not established: %m");
	c->established = true;
	r = transport_rdma_info_decode(ev->param.conn.private_data, ev->param.conn.private_data_len,
				       &peer, &reason);
	rdma_ack_cm_event(ev);
	if (r < 0)
		return log_debug_errno(r, "rdma: peer is not a migrd RDMA endpoint: %s", reason);
	conn_start(c, &peer);
	*ret = &TAKE_PTR(c)->conn;
	return 0;
}

int transport_rdma_connect(const struct sockaddr *addr, socklen_t len, usec_t timeout,
			   struct transport_conn **ret)
{
	return transport_rdma_connect_with(addr, len, NULL, timeout, ret);
}
