/* The RDMA backend of transport_conn: one reliable-connected queue pair per connection, set up
 * with librdmacm and carrying the stream in SEND/RECV messages under credit flow control.
 *
 * Design
 * - Connection management (rdma-cm.c): rdma_cm with event channels whose fds are non-blocking
 *   and polled against the caller's deadline. A listener owns one channel (its fd can go on an
 *   sd-event loop); each connection gets its own channel (an accepted id is migrated to it), so
 *   a connection's DISCONNECTED never lands on someone else's channel. The two sides exchange
 *   struct transport_rdma_info (buffer count and size) as rdma_cm private data; a peer that
 *   does not send ours is rejected.
 * - Buffers: per connection two registered pools (send, receive) of n_buffers data slots plus
 *   TRANSPORT_RDMA_CTRL_SLOTS control slots, buffer_size bytes each (default 16 x 1 MiB). A
 *   message is a 16-byte header (rdma-proto.c) and up to min(both buffer sizes) - 16 payload
 *   bytes; sendv copies the iovec into as many messages as it needs, recv_full copies out of
 *   the received slots in order and reposts each slot once it is drained.
 * - Flow control: credits in-band in every message header (portable: iWARP devices lack
 *   SEND-with-immediate), see struct transport_rdma_credits. A sender never SENDs without a
 *   receive posted for it, and a peer that overruns its credits is refused (-EPROTO).
 * - Waiting: one CQ for both directions with a completion channel. A blocked call drains the
 *   CQ, arms it (ibv_req_notify_cq), drains again to close the race, then polls the completion
 *   fd, the connection's rdma_cm fd (DISCONNECTED) and an eventfd written by shutdown() until
 *   its deadline; every CQ event is acked at once so destroying the CQ never waits.
 * - Threads: a sender and a receiver thread may use a connection at once (as a session's
 *   stream does). The state is under one mutex; one blocked caller polls the fds with it
 *   released, the other sleeps on a condition variable that every state change broadcasts.
 *   Copies into and out of the registered buffers happen under the mutex: simple, and the
 *   parallelism comes from a session's several connections.
 * - Errors are sticky: an error completion or the peer's disconnect gives -ECONNRESET (data that
 *   arrived before it is still delivered), a bad header -EBADMSG, a credit violation -EPROTO,
 *   a deadline -ETIMEDOUT (not sticky), shutdown() -ECANCELED.
 * - free() lingers up to RDMA_LINGER for its own SENDs to complete before disconnecting, as a
 *   TCP close delivers what was written; shutdown() disconnects at once.
 * - Portability (rdma-core 44 and older): only long-standing verbs (no ibv_wr_* API, no inline
 *   data, no immediate data); private data longer than ours (IB pads it) is accepted; fds are
 *   made O_NONBLOCK and FD_CLOEXEC here whatever the library version did. Registered memory
 *   needs no ibv_fork_init() on kernels >= 5.13 (copy-on-fork of pinned pages). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "common/common.h"
#include "transport/rdma-conn-internal.h"

#define RDMA_LINGER (2 * USEC_PER_SEC)
#define WR_ID_RECV  (UINT64_C(1) << 63)
#define WC_BATCH    16

_Static_assert(TRANSPORT_RDMA_CTRL_SLOTS == 1, "one control send slot is tracked by a bool");

usec_t transport_rdma_deadline(usec_t timeout)
{
	usec_t now = now_usec(CLOCK_MONOTONIC);

	return timeout >= USEC_INFINITY - now ? USEC_INFINITY : now + timeout;
}

int transport_rdma_poll_ms(usec_t deadline)
{
	usec_t now;

	if (deadline == USEC_INFINITY)
		return -1;
	now = now_usec(CLOCK_MONOTONIC);
	if (now >= deadline)
		return 0;
	return (int)MIN((deadline - now + USEC_PER_MSEC - 1) / USEC_PER_MSEC, (usec_t)INT_MAX);
}

int transport_rdma_fd_setup(int fd)
{
	int fl = fcntl(fd, F_GETFL), fdfl = fcntl(fd, F_GETFD);

	if (fl < 0 || fdfl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
	    fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) < 0)
		return NEG_ERRNO();
	return 0;
}

static void conn_fail(struct rdma_conn *c, int error, const char *why)
{
	if (c->error == 0) {
		log_debug_errno(error, "rdma: connection failed: %s", why);
		c->error = error;
		pthread_cond_broadcast(&c->cond);
	}
}

static uint8_t *send_slot(struct rdma_conn *c, uint32_t slot)
{
	return c->send_pool + (size_t)slot * c->buffer_size;
}

static int post_recv(struct rdma_conn *c, uint32_t slot)
{
	struct ibv_sge sge = {
		.addr = (uintptr_t)(c->recv_pool + (size_t)slot * c->buffer_size),
		.length = c->buffer_size,
		.lkey = c->recv_mr->lkey,
	};
	struct ibv_recv_wr wr = {.wr_id = WR_ID_RECV | slot, .sg_list = &sge, .num_sge = 1}, *bad;
	int r = ibv_post_recv(c->id->qp, &wr, &bad);

	if (r != 0) {
		conn_fail(c, -ERRNO_VALUE(r), "ibv_post_recv failed");
		return -ERRNO_VALUE(r);
	}
	return 0;
}

static int post_send(struct rdma_conn *c, uint32_t slot, size_t len)
{
	struct ibv_sge sge = {
		.addr = (uintptr_t)send_slot(c, slot),
		.length = (uint32_t)len,
		.lkey = c->send_mr->lkey,
	};
	struct ibv_send_wr wr = {
		.wr_id = slot,
		.sg_list = &sge,
		.num_sge = 1,
		.opcode = IBV_WR_SEND,
		.send_flags = IBV_SEND_SIGNALED,
	};
	struct ibv_send_wr *bad;
	int r = ibv_post_send(c->id->qp, &wr, &bad);

	if (r != 0) {
		conn_fail(c, -ERRNO_VALUE(r), "ibv_post_send failed");
		return -ERRNO_VALUE(r);
	}
	c->sends_in_flight++;
	c->conn.bytes_sent += len;
	return 0;
}

int transport_rdma_conn_post_recvs(struct rdma_conn *c)
{
	for (uint32_t i = 0; i < c->n_buffers + TRANSPORT_RDMA_CTRL_SLOTS; i++) {
		int r = post_recv(c, i);
		if (r < 0)
			return r;
	}
	return 0;
}

static int send_credit(struct rdma_conn *c)
{
	struct transport_rdma_msg m = {};
	uint32_t slot = c->n_buffers;
	int r;

	r = transport_rdma_credits_take(&c->credits, TRANSPORT_RDMA_MSG_CREDIT, &m);
	if (r < 0)
		return r;
	m.len = 0;
	transport_rdma_msg_encode(&m, send_slot(c, slot));
	r = post_send(c, slot, TRANSPORT_RDMA_MSG_HEADER_SIZE);
	if (r < 0)
		return r;
	c->ctrl_send_busy = true;
	return 0;
}

static int send_data(struct rdma_conn *c, struct transport_rdma_iov_cursor *cur)
{
	struct transport_rdma_msg m = {};
	uint32_t slot = c->free_send[c->n_free_send - 1];
	uint8_t *p = send_slot(c, slot);
	int r;

	r = transport_rdma_credits_take(&c->credits, TRANSPORT_RDMA_MSG_DATA, &m);
	if (r < 0)
		return r;
	c->n_free_send--;
	m.len = (uint32_t)transport_rdma_iov_cursor_copy(cur, p + TRANSPORT_RDMA_MSG_HEADER_SIZE,
							 c->max_payload);
	transport_rdma_msg_encode(&m, p);
	return post_send(c, slot, TRANSPORT_RDMA_MSG_HEADER_SIZE + (size_t)m.len);
}

static void handle_send_wc(struct rdma_conn *c, const struct ibv_wc *wc)
{
	uint32_t slot = (uint32_t)wc->wr_id;

	c->sends_in_flight--;
	if (slot < c->n_buffers)
		c->free_send[c->n_free_send++] = slot;
	else
		c->ctrl_send_busy = false;
	if (wc->status != IBV_WC_SUCCESS) {
		log_debug("rdma: send completion: %s", ibv_wc_status_str(wc->status));
		conn_fail(c, -ECONNRESET, "send completed with an error");
	}
}

static void handle_recv_wc(struct rdma_conn *c, const struct ibv_wc *wc)
{
	uint32_t slot = (uint32_t)(wc->wr_id & ~WR_ID_RECV);
	const uint8_t *p = c->recv_pool + (size_t)slot * c->buffer_size;
	struct transport_rdma_msg m;
	const char *reason = NULL;
	int r;

	if (wc->status != IBV_WC_SUCCESS) {
		/* Flushed receives after a disconnect are the normal end; report it once. */
		if (wc->status != IBV_WC_WR_FLUSH_ERR)
			log_debug("rdma: receive completion: %s", ibv_wc_status_str(wc->status));
		conn_fail(c, -ECONNRESET, "receive completed with an error (peer gone)");
		return;
	}
	if (c->error < 0)
		return; /* nothing more is accepted after a failure */
	c->conn.bytes_received += wc->byte_len;
	r = transport_rdma_msg_decode(p, wc->byte_len, c->max_payload, &m, &reason);
	if (r < 0) {
		conn_fail(c, r, reason);
		return;
	}
	r = transport_rdma_credits_receive(&c->credits, &m);
	if (r < 0) {
		conn_fail(c, r, "peer broke credit flow control");
		return;
	}
	if (m.type == TRANSPORT_RDMA_MSG_CREDIT) {
		/* Reposted before anything is sent: see transport_rdma_credits_receive(). */
		(void)post_recv(c, slot);
		return;
	}
	r = transport_rdma_rx_queue_push(&c->rx, slot, TRANSPORT_RDMA_MSG_HEADER_SIZE, m.len);
	if (r < 0)
		conn_fail(c, -EPROTO, "more data messages than receive slots");
}

/* Handles every completion that is ready; returns how many there were. */
static int cq_drain(struct rdma_conn *c)
{
	struct ibv_wc wc[WC_BATCH];
	int total = 0, k;

	do {
		k = ibv_poll_cq(c->cq, WC_BATCH, wc);
		if (k < 0) {
			conn_fail(c, -EIO, "ibv_poll_cq failed");
			return total;
		}
		for (int i = 0; i < k; i++) {
			if (wc[i].wr_id & WR_ID_RECV)
				handle_recv_wc(c, &wc[i]);
			else
				handle_send_wc(c, &wc[i]);
		}
		total += k;
	} while (k == WC_BATCH);
	if (total > 0)
		pthread_cond_broadcast(&c->cond); /* the other thread may be waiting for these */
	return total;
}

void transport_rdma_conn_disconnect(struct rdma_conn *c)
{
	if (c->id && !atomic_exchange(&c->disconnected, true))
		(void)rdma_disconnect(c->id);
}

static void cm_process(struct rdma_conn *c)
{
	struct rdma_cm_event *ev;

	while (rdma_get_cm_event(c->channel, &ev) == 0) {
		enum rdma_cm_event_type type = ev->event;

		rdma_ack_cm_event(ev);
		log_debug("rdma: connection event %s", rdma_event_str(type));
		if (type == RDMA_CM_EVENT_DISCONNECTED || type == RDMA_CM_EVENT_DEVICE_REMOVAL) {
			/* What arrived before the disconnect is already in the CQ: keep it. */
			(void)cq_drain(c);
			conn_fail(c, -ECONNRESET, "peer disconnected");
			transport_rdma_conn_disconnect(c);
		}
	}
}

static int cond_wait_until(struct rdma_conn *c, usec_t deadline)
{
	struct timespec ts;
	int r;

	if (deadline == USEC_INFINITY)
		return -pthread_cond_wait(&c->cond, &c->lock);
	ts.tv_sec = (time_t)(deadline / USEC_PER_SEC);
	ts.tv_nsec = (long)(deadline % USEC_PER_SEC * NSEC_PER_USEC);
	r = pthread_cond_timedwait(&c->cond, &c->lock, &ts);
	return r == ETIMEDOUT ? 0 : -r; /* the caller's deadline check says it */
}

/* The poller's sleep: arms the CQ, then polls the completion fd, the rdma_cm fd and the wake
 * eventfd with the lock released. */
static int poll_events(struct rdma_conn *c, usec_t deadline)
{
	struct pollfd p[3];
	int r;

	if (!c->cq_armed) {
		r = ibv_req_notify_cq(c->cq, 0);
		if (r != 0) {
			conn_fail(c, -ERRNO_VALUE(r), "ibv_req_notify_cq failed");
			return -ERRNO_VALUE(r);
		}
		c->cq_armed = true;
		/* A completion that came between the last drain and the arming raises no event. */
		if (cq_drain(c) > 0)
			return 0;
	}
	p[0] = (struct pollfd){.fd = c->comp->fd, .events = POLLIN};
	p[1] = (struct pollfd){.fd = c->channel->fd, .events = POLLIN};
	p[2] = (struct pollfd){.fd = c->wake_fd, .events = POLLIN};
	c->polling = true;
	pthread_mutex_unlock(&c->lock);
	r = poll(p, ELEMENTSOF(p), transport_rdma_poll_ms(deadline));
	if (r < 0)
		r = errno == EINTR ? 0 : NEG_ERRNO();
	pthread_mutex_lock(&c->lock);
	c->polling = false;
	if (r <= 0)
		return r;
	if (p[0].revents) {
		struct ibv_cq *cq;
		void *ctx;

		if (ibv_get_cq_event(c->comp, &cq, &ctx) == 0) {
			ibv_ack_cq_events(cq, 1);
			c->cq_armed = false;
		}
	}
	if (p[1].revents)
		cm_process(c);
	(void)cq_drain(c);
	return 0;
}

/* Called locked. Handles what is ready, or sleeps until something may have changed or the
 * deadline: 0 (callers look at the state again), -ETIMEDOUT, -ECANCELED or a verbs error.
 * With a sender and a receiver thread, one of them polls the fds while the other waits on the
 * condition variable; whoever changes the state wakes the other. */
static int conn_wait(struct rdma_conn *c, usec_t deadline)
{
	int r;

	if (atomic_load(&c->cancelled))
		return -ECANCELED;
	if (cq_drain(c) > 0)
		return 0;
	if (now_usec(CLOCK_MONOTONIC) >= deadline)
		return -ETIMEDOUT;
	if (c->polling)
		r = cond_wait_until(c, deadline);
	else {
		r = poll_events(c, deadline);
		pthread_cond_broadcast(&c->cond);
	}
	if (atomic_load(&c->cancelled))
		return -ECANCELED;
	return r;
}

static int conn_check(struct rdma_conn *c)
{
	if (atomic_load(&c->cancelled))
		return -ECANCELED;
	return c->error;
}

static int sendv_locked(struct rdma_conn *c, struct transport_rdma_iov_cursor *cur, usec_t deadline)
{
	while (cur->remaining > 0) {
		int r;

		(void)cq_drain(c);
		r = conn_check(c);
		if (r < 0)
			return r;
		switch (transport_rdma_next_step(&c->credits, true, c->n_free_send > 0,
						 !c->ctrl_send_busy)) {
		case TRANSPORT_RDMA_STEP_SEND_DATA:
			r = send_data(c, cur);
			break;
		case TRANSPORT_RDMA_STEP_SEND_CREDIT:
			r = send_credit(c);
			break;
		case TRANSPORT_RDMA_STEP_WAIT:
			r = conn_wait(c, deadline);
			break;
		}
		if (r < 0)
			return r;
	}
	return 0;
}

static int rdma_sendv(struct transport_conn *conn, const struct iovec *iov, int n_iov,
		      usec_t timeout)
{
	struct rdma_conn *c = (struct rdma_conn *)conn;
	struct transport_rdma_iov_cursor cur;
	usec_t deadline = transport_rdma_deadline(timeout);
	int r;

	r = transport_rdma_iov_cursor_init(&cur, iov, n_iov);
	if (r < 0 || cur.remaining == 0)
		return r;
	pthread_mutex_lock(&c->lock);
	r = sendv_locked(c, &cur, deadline);
	pthread_mutex_unlock(&c->lock);
	return r;
}

static int release_slot(void *userdata, uint32_t slot)
{
	struct rdma_conn *c = userdata;
	int r = post_recv(c, slot);

	if (r < 0)
		return r;
	transport_rdma_credits_reposted(&c->credits);
	return 0;
}

static int recv_locked(struct rdma_conn *c, uint8_t *out, size_t len, usec_t deadline)
{
	for (;;) {
		size_t k;
		int r;

		if (atomic_load(&c->cancelled))
			return -ECANCELED;
		(void)cq_drain(c);
		r = transport_rdma_rx_queue_read(&c->rx, c->recv_pool, c->buffer_size, out, len,
						 release_slot, c, &k);
		out += k;
		len -= k;
		if (r < 0)
			return r;
		if (len == 0)
			break;
		if (c->error < 0)
			return c->error;
		if (!c->ctrl_send_busy && transport_rdma_credits_want_update(&c->credits, true))
			r = send_credit(c);
		else
			r = conn_wait(c, deadline);
		if (r < 0)
			return r;
	}
	/* Satisfied: hand back a batch of credits now so the sender keeps going meanwhile. */
	if (c->error == 0 && !c->ctrl_send_busy &&
	    transport_rdma_credits_want_update(&c->credits, false))
		(void)send_credit(c);
	return 0;
}

static int rdma_recv_full(struct transport_conn *conn, void *buf, size_t len, usec_t timeout)
{
	struct rdma_conn *c = (struct rdma_conn *)conn;
	usec_t deadline = transport_rdma_deadline(timeout);
	int r;

	if (len == 0)
		return 0;
	if (!buf)
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	r = recv_locked(c, buf, len, deadline);
	pthread_mutex_unlock(&c->lock);
	return r;
}

static void rdma_shutdown(struct transport_conn *conn)
{
	struct rdma_conn *c = (struct rdma_conn *)conn;
	uint64_t one = 1;

	if (atomic_exchange(&c->cancelled, true))
		return;
	/* The eventfd is never read: it stays readable and wakes every later poll too. */
	(void)!write(c->wake_fd, &one, sizeof(one));
	transport_rdma_conn_disconnect(c);
	pthread_mutex_lock(&c->lock);
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

static void rdma_free(struct transport_conn *conn)
{
	struct rdma_conn *c = (struct rdma_conn *)conn;

	if (c->established) {
		usec_t deadline = transport_rdma_deadline(RDMA_LINGER);

		pthread_mutex_lock(&c->lock);
		while (c->sends_in_flight > 0 && conn_check(c) == 0)
			if (conn_wait(c, deadline) < 0)
				break;
		pthread_mutex_unlock(&c->lock);
	}
	transport_rdma_conn_destroy(c);
}

const struct transport_conn_ops transport_rdma_conn_ops = {
	.name = "rdma",
	.sendv = rdma_sendv,
	.recv_full = rdma_recv_full,
	.shutdown = rdma_shutdown,
	.free = rdma_free,
};
