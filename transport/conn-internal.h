/* A connection: one reliable, ordered channel between two hosts (TCP, TCP+TLS, or an RDMA
 * queue pair) behind a small ops table. Calls block with a deadline; a connection is used by
 * at most one thread per direction, and only TCP allows both directions at once. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "common/util.h"

struct transport_conn;

struct transport_conn_ops {
	const char *name; /* "tcp", "tls", "rdma" */
	/* Sends all of iov or fails: -ETIMEDOUT past the timeout, -EPIPE/-ECONNRESET when the
	 * peer is gone, -ECANCELED after shutdown(). */
	int (*sendv)(struct transport_conn *c, const struct iovec *iov, int n_iov, usec_t timeout);
	/* Receives exactly len bytes: -ECONNRESET when the peer closed before that (even
	 * cleanly), -ETIMEDOUT, -ECANCELED after shutdown(). */
	int (*recv_full)(struct transport_conn *c, void *buf, size_t len, usec_t timeout);
	/* Wakes up and fails every blocked call; safe from any thread, idempotent. */
	void (*shutdown)(struct transport_conn *c);
	void (*free)(struct transport_conn *c);
};

struct transport_conn {
	const struct transport_conn_ops *ops;
	uint64_t bytes_sent; /* on the wire, after TLS framing is not counted */
	uint64_t bytes_received;
	char peer_name[64]; /* verified name of the peer host ("" before authentication) */
};

static inline int transport_conn_sendv(struct transport_conn *c, const struct iovec *iov, int n_iov,
				       usec_t timeout)
{
	return c->ops->sendv(c, iov, n_iov, timeout);
}

static inline int transport_conn_send(struct transport_conn *c, const void *buf, size_t len,
				      usec_t timeout)
{
	struct iovec iov = {(void *)buf, len};
	return c->ops->sendv(c, &iov, 1, timeout);
}

static inline int transport_conn_recv_full(struct transport_conn *c, void *buf, size_t len,
					   usec_t timeout)
{
	return c->ops->recv_full(c, buf, len, timeout);
}

static inline void transport_conn_shutdown(struct transport_conn *c)
{
	if (c)
		c->ops->shutdown(c);
}

static inline struct transport_conn *transport_conn_free(struct transport_conn *c)
{
	if (c)
		c->ops->free(c);
	return NULL;
}

/* Plain TCP over a connected socket (taken; made non-blocking, TCP_NODELAY). */
int transport_conn_tcp_new(int fd, struct transport_conn **ret);
