/* Plain TCP connections: non-blocking sockets driven by poll() against a deadline. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/common.h"
#include "transport/conn-internal.h"
#include "transport/tcp-internal.h"

struct tcp_conn {
	struct transport_conn conn;
	int fd;
	atomic_bool cancelled;
};

int transport_fd_wait(int fd, short events, usec_t deadline, const atomic_bool *cancelled)
{
	for (;;) {
		struct pollfd p = {.fd = fd, .events = events};
		usec_t now = now_usec(CLOCK_MONOTONIC);
		int r, ms;

		if (cancelled && atomic_load(cancelled))
			return -ECANCELED;
		if (now >= deadline)
			return -ETIMEDOUT;
		/* Wake at least every 200 ms to notice cancellation from another thread. */
		ms = (int)MIN((deadline - now + 999) / 1000, 200);
		r = poll(&p, 1, ms);
		if (r < 0 && errno != EINTR)
			return NEG_ERRNO();
		if (r > 0)
			return 0;
	}
}

/* After a failed non-blocking send/recv: 0 to try again (interrupted, or the socket became
 * ready), or the error (the socket's, -ETIMEDOUT, -ECANCELED). */
static int tcp_retry(struct tcp_conn *t, short events, usec_t deadline)
{
	if (errno == EINTR)
		return 0;
	if (errno != EAGAIN)
		return NEG_ERRNO();
	return transport_fd_wait(t->fd, events, deadline, &t->cancelled);
}

static int tcp_sendv(struct transport_conn *c, const struct iovec *iov_in, int n_iov,
		     usec_t timeout)
{
	struct tcp_conn *t = (struct tcp_conn *)c;
	usec_t deadline = usec_add(now_usec(CLOCK_MONOTONIC), timeout);
	struct iovec iov[64];
	int n = MIN(n_iov, (int)ELEMENTSOF(iov)), first = 0;

	if (n_iov > (int)ELEMENTSOF(iov))
		return -EINVAL;
	memcpy(iov, iov_in, sizeof(*iov) * (size_t)n);
	while (first < n) {
		struct msghdr mh = {.msg_iov = iov + first, .msg_iovlen = (size_t)(n - first)};
		ssize_t k;

		if (atomic_load(&t->cancelled))
			return -ECANCELED;
		k = sendmsg(t->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (k < 0) {
			int r = tcp_retry(t, POLLOUT, deadline);
			if (r < 0)
				return r;
			continue;
		}
		c->bytes_sent += (uint64_t)k;
		while (first < n && (size_t)k >= iov[first].iov_len) {
			k -= (ssize_t)iov[first].iov_len;
			first++;
		}
		if (first < n) {
			iov[first].iov_base = (char *)iov[first].iov_base + k;
			iov[first].iov_len -= (size_t)k;
		}
	}
	return 0;
}

static int tcp_recv_full(struct transport_conn *c, void *buf, size_t len, usec_t timeout)
{
	struct tcp_conn *t = (struct tcp_conn *)c;
	usec_t deadline = usec_add(now_usec(CLOCK_MONOTONIC), timeout);
	char *p = buf;

	while (len > 0) {
		ssize_t k;

		if (atomic_load(&t->cancelled))
			return -ECANCELED;
		k = recv(t->fd, p, len, MSG_DONTWAIT);
		if (k == 0)
			return -ECONNRESET;
		if (k < 0) {
			int r = tcp_retry(t, POLLIN, deadline);
			if (r < 0)
				return r;
			continue;
		}
		c->bytes_received += (uint64_t)k;
		p += k;
		len -= (size_t)k;
	}
	return 0;
}

static void tcp_shutdown(struct transport_conn *c)
{
	struct tcp_conn *t = (struct tcp_conn *)c;

	atomic_store(&t->cancelled, true);
	(void)shutdown(t->fd, SHUT_RDWR);
}

static void tcp_free(struct transport_conn *c)
{
	struct tcp_conn *t = (struct tcp_conn *)c;

	safe_close(t->fd);
	free(t);
}

static const struct transport_conn_ops tcp_ops = {
	.name = "tcp",
	.sendv = tcp_sendv,
	.recv_full = tcp_recv_full,
	.shutdown = tcp_shutdown,
	.free = tcp_free,
};

int transport_socket_tune(int fd)
{
	int one = 1, flags = fcntl(fd, F_GETFL);

	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
		return NEG_ERRNO();
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	(void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	return 0;
}

int transport_conn_tcp_new(int fd, struct transport_conn **ret)
{
	struct tcp_conn *t;
	int r = transport_socket_tune(fd);

	if (r < 0) {
		safe_close(fd);
		return r;
	}
	t = calloc(1, sizeof(*t));
	if (!t) {
		safe_close(fd);
		return -ENOMEM;
	}
	t->conn.ops = &tcp_ops;
	t->fd = fd;
	*ret = &t->conn;
	return 0;
}

int transport_tcp_connect(const struct sockaddr *sa, socklen_t len, usec_t timeout, int *ret_fd)
{
	_cleanup_close_ int fd =
		socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int r, err = 0;
	socklen_t elen = sizeof(err);

	if (fd < 0)
		return NEG_ERRNO();
	if (connect(fd, sa, len) < 0) {
		if (errno != EINPROGRESS)
			return NEG_ERRNO();
		r = transport_fd_wait(fd, POLLOUT, usec_add(now_usec(CLOCK_MONOTONIC), timeout),
				      NULL);
		if (r < 0)
			return r;
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
			return NEG_ERRNO();
		if (err)
			return -err;
	}
	r = transport_socket_tune(fd);
	if (r < 0)
		return r;
	*ret_fd = TAKE_FD(fd);
	return 0;
}
