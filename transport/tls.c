/* TLS 1.3 connections: the handshake (driven with poll() against a deadline) and the "tls"
 * transport_conn over a socket BIO of our own. Certificate checks are in tls-auth.c.
 *
 * A tls conn may be used by one sending and one receiving thread at once: every call into the
 * SSL object (and so into the socket BIO below it) holds c->lock, and the lock is never held
 * across poll(), so a reader blocked waiting for data never stalls a writer or vice versa. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "common/common.h"
#include "transport/tls-auth-internal.h"

#define TLS_RECORD_MAX SSL3_RT_MAX_PLAIN_LENGTH /* 16 KiB, the largest TLS record */
/* Encrypted records are gathered and sent with one send() per this many bytes: a system call
 * per 16 KiB record costs more than the copy (loopback, 1 GiB: 0.85 GB/s sending each record
 * at once, 1.8 GB/s gathered). */
#define TLS_IO_BUFFER ((size_t)256 << 10)
/* In TLS 1.3 the client completes its handshake before the server has checked the client's
 * certificate. So the server sends this byte once it has accepted the client, and the client
 * waits for it: a refused client learns it (and why, from the alert) in the handshake, not at
 * its first read. */
#define TLS_ACCEPTED_BYTE 0x4d

struct tls_conn {
	struct transport_conn conn; /* first: the ops get &conn */
	pthread_mutex_t lock;	    /* held around every call into ssl */
	SSL *ssl;
	int fd;
	int wake_fd; /* eventfd: shutdown() wakes a thread blocked in poll() */
	atomic_bool shut;
	bool established; /* handshake complete */
	bool failed;	  /* fatal error: no close_notify on free */
	bool eof;	  /* the socket returned end of file */
	int io_errno;	  /* the last socket error the BIO saw */
	struct tls_handshake *hs;
	uint8_t *wbuf; /* encrypted records not yet sent: [wbuf_head, wbuf_len) */
	size_t wbuf_head, wbuf_len;
	uint8_t stage[TLS_RECORD_MAX]; /* small iovec pieces gathered into full records */
};

static const struct transport_conn_ops tls_conn_ops;

static usec_t deadline_after(usec_t timeout)
{
	usec_t now = now_usec(CLOCK_MONOTONIC);

	return timeout >= USEC_INFINITY - now ? USEC_INFINITY : now + timeout;
}

/* ---- the socket BIO: send(MSG_NOSIGNAL) through a write buffer, exact byte counts ---------- */

/* Sends what is buffered: 0 when all is out, -EAGAIN when the socket is full. */
static int wbuf_flush(struct tls_conn *c)
{
	while (c->wbuf_head < c->wbuf_len) {
		ssize_t k = send(c->fd, c->wbuf + c->wbuf_head, c->wbuf_len - c->wbuf_head,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (k < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return -EAGAIN;
			c->io_errno = errno;
			return -errno;
		}
		c->wbuf_head += (size_t)k;
		c->conn.bytes_sent += (uint64_t)k;
	}
	c->wbuf_head = c->wbuf_len = 0;
	return 0;
}

static int sock_bio_write(BIO *b, const char *data, size_t len, size_t *written)
{
	struct tls_conn *c = BIO_get_data(b);
	size_t n;

	BIO_clear_retry_flags(b);
	if (c->wbuf_len + len > TLS_IO_BUFFER) {
		int r = wbuf_flush(c);

		if (r < 0 && r != -EAGAIN)
			return 0;
		if (c->wbuf_head > 0) {
			memmove(c->wbuf, c->wbuf + c->wbuf_head, c->wbuf_len - c->wbuf_head);
			c->wbuf_len -= c->wbuf_head;
			c->wbuf_head = 0;
		}
	}
	n = MIN(len, TLS_IO_BUFFER - c->wbuf_len);
	if (n == 0) {
		BIO_set_retry_write(b);
		return 0;
	}
	memcpy(c->wbuf + c->wbuf_len, data, n);
	c->wbuf_len += n;
	*written = n;
	return 1;
}

static int sock_bio_read(BIO *b, char *buf, size_t len, size_t *readbytes)
{
	struct tls_conn *c = BIO_get_data(b);
	ssize_t k;

	BIO_clear_retry_flags(b);
	do
		k = recv(c->fd, buf, len, MSG_DONTWAIT);
	while (k < 0 && errno == EINTR);
	if (k > 0) {
		c->conn.bytes_received += (uint64_t)k;
		*readbytes = (size_t)k;
		return 1;
	}
	if (k == 0)
		c->eof = true;
	else if (errno == EAGAIN || errno == EWOULDBLOCK)
		BIO_set_retry_read(b);
	else
		c->io_errno = errno;
	return 0;
}

static long sock_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	struct tls_conn *c = BIO_get_data(b);
	int r;

	switch (cmd) {
	case BIO_CTRL_FLUSH:
		BIO_clear_retry_flags(b);
		r = wbuf_flush(c);
		if (r == -EAGAIN)
			BIO_set_retry_write(b);
		return r == 0;
	case BIO_CTRL_EOF:
		return c->eof;
	case BIO_CTRL_WPENDING:
		return (long)(c->wbuf_len - c->wbuf_head);
	default:
		return 0;
	}
}

static int sock_bio_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static BIO_METHOD *sock_bio_method;

static void sock_bio_method_init(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "migrd socket");

	if (m && BIO_meth_set_write_ex(m, sock_bio_write) &&
	    BIO_meth_set_read_ex(m, sock_bio_read) && BIO_meth_set_ctrl(m, sock_bio_ctrl) &&
	    BIO_meth_set_create(m, sock_bio_create))
		sock_bio_method = m;
	else
		BIO_meth_free(m);
}

/* ---- the connection ------------------------------------------------------------------------ */

/* Waits until fd has events, the deadline passes (-ETIMEDOUT) or shutdown() (-ECANCELED). */
static int tls_wait(struct tls_conn *c, short events, usec_t deadline)
{
	struct pollfd p[2] = {
		{.fd = c->fd, .events = events},
		{.fd = c->wake_fd, .events = POLLIN},
	};

	for (;;) {
		usec_t now = now_usec(CLOCK_MONOTONIC);
		int ms = -1, k;

		if (atomic_load(&c->shut))
			return -ECANCELED;
		if (deadline != USEC_INFINITY) {
			if (now >= deadline)
				return -ETIMEDOUT;
			ms = (int)MIN((deadline - now + USEC_PER_MSEC - 1) / USEC_PER_MSEC,
				      (usec_t)INT_MAX);
		}
		k = poll(p, ELEMENTSOF(p), ms);
		if (k < 0 && errno != EINTR)
			return -errno;
		if (atomic_load(&c->shut))
			return -ECANCELED;
		if (k > 0 && p[0].revents)
			return 0; /* including POLLERR/POLLHUP: the next SSL call finds out */
	}
}

/* Maps a failed SSL call in the data phase (under the lock) to "wait for events" (0) or an
 * error; the reason goes to the debug log, since these calls have no message to return. */
static int tls_io_result(struct tls_conn *c, int k, bool sending, short *ret_events)
{
	char reason[128];
	unsigned long e;

	switch (SSL_get_error(c->ssl, k)) {
	case SSL_ERROR_WANT_READ:
		*ret_events = POLLIN;
		return 0;
	case SSL_ERROR_WANT_WRITE:
		*ret_events = POLLOUT;
		return 0;
	case SSL_ERROR_ZERO_RETURN:
		log_debug("TLS: %s closed the connection", c->conn.peer_name);
		return sending ? -EPIPE : -ECONNRESET;
	case SSL_ERROR_SYSCALL:
		c->failed = true;
		if (c->eof || c->io_errno == 0)
			return sending ? -EPIPE : -ECONNRESET;
		return -c->io_errno;
	default:
		c->failed = true;
		e = ERR_peek_error();
		if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
		    ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
			ERR_clear_error();
			return sending ? -EPIPE : -ECONNRESET;
		}
		log_debug("TLS connection with %s failed: %s", c->conn.peer_name,
			  transport_openssl_reason(reason, sizeof(reason)));
		return -EPROTO;
	}
}

/* Moves len bytes through SSL in either direction, waiting on the socket as OpenSSL asks,
 * until done, the deadline, or shutdown. Writes go as records into the BIO, which sends when
 * its buffer fills. */
static int tls_io_all(struct tls_conn *c, uint8_t *p, size_t len, bool write, usec_t deadline)
{
	while (len > 0) {
		short events = 0;
		size_t n = 0;
		int k, r = 0;

		if (atomic_load(&c->shut))
			return -ECANCELED;
		pthread_mutex_lock(&c->lock);
		ERR_clear_error();
		k = write ? SSL_write_ex(c->ssl, p, len, &n) : SSL_read_ex(c->ssl, p, len, &n);
		if (k <= 0) {
			r = tls_io_result(c, k, write, &events);
			ERR_clear_error();
		}
		pthread_mutex_unlock(&c->lock);
		if (k > 0) {
			p += n;
			len -= n;
			continue;
		}
		if (r == 0)
			r = tls_wait(c, events, deadline);
		if (r < 0)
			return atomic_load(&c->shut) ? -ECANCELED : r;
	}
	return 0;
}

static int tls_write_all(struct tls_conn *c, const uint8_t *p, size_t len, usec_t deadline)
{
	return tls_io_all(c, (uint8_t *)p, len, true, deadline);
}

static int tls_flush(struct tls_conn *c, usec_t deadline)
{
	for (;;) {
		int r;

		if (atomic_load(&c->shut))
			return -ECANCELED;
		pthread_mutex_lock(&c->lock);
		r = wbuf_flush(c);
		if (r < 0 && r != -EAGAIN)
			c->failed = true;
		pthread_mutex_unlock(&c->lock);
		if (r != -EAGAIN)
			return atomic_load(&c->shut) && r < 0 ? -ECANCELED : r;
		r = tls_wait(c, POLLOUT, deadline);
		if (r < 0)
			return r;
	}
}

/* Whole records go straight from the caller's buffers; pieces smaller than a record (a frame
 * header, a short tail) are gathered in c->stage, so records stay full. */
static int tls_sendv(struct transport_conn *conn, const struct iovec *iov, int n_iov,
		     usec_t timeout)
{
	struct tls_conn *c = (struct tls_conn *)conn;
	usec_t deadline = deadline_after(timeout);
	size_t staged = 0;
	int r;

	if (atomic_load(&c->shut))
		return -ECANCELED;
	for (int i = 0; i < n_iov; i++) {
		const uint8_t *p = iov[i].iov_base;
		size_t left = iov[i].iov_len;

		while (left > 0) {
			size_t n;

			if (staged == 0 && left >= TLS_RECORD_MAX) {
				n = left - left % TLS_RECORD_MAX;
				r = tls_write_all(c, p, n, deadline);
			} else {
				n = MIN(left, TLS_RECORD_MAX - staged);
				memcpy(c->stage + staged, p, n);
				staged += n;
				r = 0;
				if (staged == TLS_RECORD_MAX) {
					r = tls_write_all(c, c->stage, staged, deadline);
					staged = 0;
				}
			}
			if (r < 0)
				return r;
			p += n;
			left -= n;
		}
	}
	if (staged > 0) {
		r = tls_write_all(c, c->stage, staged, deadline);
		if (r < 0)
			return r;
	}
	return tls_flush(c, deadline);
}

static int tls_recv_full(struct transport_conn *conn, void *buf, size_t len, usec_t timeout)
{
	struct tls_conn *c = (struct tls_conn *)conn;

	return tls_io_all(c, buf, len, false, deadline_after(timeout));
}

static void tls_shutdown(struct transport_conn *conn)
{
	struct tls_conn *c = (struct tls_conn *)conn;
	uint64_t one = 1;

	if (atomic_exchange(&c->shut, true))
		return;
	/* The fd stays open until free(), so a concurrent poll() never sees a reused number. */
	if (write(c->wake_fd, &one, sizeof(one)) < 0)
		log_debug("TLS: cannot wake waiters of %s: %m", c->conn.peer_name);
	(void)shutdown(c->fd, SHUT_RDWR);
}

static void tls_conn_free(struct tls_conn *c)
{
	if (!c)
		return;
	if (c->ssl) {
		/* A courtesy close_notify (or the alert of a failed handshake that did not fit into
		 * the socket yet), without waiting for the socket. */
		if (c->established && !c->failed && !atomic_load(&c->shut)) {
			ERR_clear_error();
			(void)SSL_shutdown(c->ssl);
		}
		if (!atomic_load(&c->shut))
			(void)wbuf_flush(c);
		SSL_free(c->ssl);
	}
	ERR_clear_error();
	safe_close(c->fd);
	safe_close(c->wake_fd);
	free(c->wbuf);
	pthread_mutex_destroy(&c->lock);
	free(c);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(struct tls_conn *, tls_conn_free);

static void tls_free(struct transport_conn *conn)
{
	tls_conn_free((struct tls_conn *)conn);
}

static const struct transport_conn_ops tls_conn_ops = {
	.name = "tls",
	.sendv = tls_sendv,
	.recv_full = tls_recv_full,
	.shutdown = tls_shutdown,
	.free = tls_free,
};

/* Takes fd (closes it on failure). */
static int tls_conn_new(struct transport_tls *t, int fd, struct tls_conn **ret)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	_cleanup_close_ int fd_owned = fd;
	_cleanup_(tls_conn_freep) struct tls_conn *c = NULL;
	int flags, one = 1;
	BIO *b;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->conn.ops = &tls_conn_ops;
	c->fd = TAKE_FD(fd_owned);
	c->wake_fd = -EBADF;
	pthread_mutex_init(&c->lock, NULL);
	c->wbuf = malloc(TLS_IO_BUFFER);
	if (!c->wbuf)
		return -ENOMEM;
	c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->wake_fd < 0)
		return NEG_ERRNO();
	flags = fcntl(c->fd, F_GETFL);
	if (flags < 0 || fcntl(c->fd, F_SETFL, flags | O_NONBLOCK) < 0)
		return NEG_ERRNO();
	/* Fails harmlessly on a non-TCP socket (tests use socketpairs). */
	(void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

	pthread_once(&once, sock_bio_method_init);
	if (!sock_bio_method)
		return -ENOMEM;
	c->ssl = SSL_new(t->ctx);
	b = BIO_new(sock_bio_method);
	if (!c->ssl || !b) {
		BIO_free(b);
		return -ENOMEM;
	}
	BIO_set_data(b, c);
	SSL_set_bio(c->ssl, b, b);
	*ret = TAKE_PTR(c);
	return 0;
}

static const char hs_closed[] = "peer closed the connection during the TLS handshake";

/* Maps a failed SSL call during the handshake (under the lock) to "wait for events" (0) or
 * an error with its message. */
static int hs_result(struct tls_conn *c, int k, short *ret_events, char **ret_error)
{
	char reason[128];
	unsigned long e;
	int why;

	switch (SSL_get_error(c->ssl, k)) {
	case SSL_ERROR_WANT_READ:
		*ret_events = POLLIN;
		return 0;
	case SSL_ERROR_WANT_WRITE:
		*ret_events = POLLOUT;
		return 0;
	case SSL_ERROR_ZERO_RETURN:
		return transport_error(ret_error, ECONNRESET, "%s", hs_closed);
	case SSL_ERROR_SYSCALL:
		if (c->eof || c->io_errno == 0 || c->io_errno == ECONNRESET || c->io_errno == EPIPE)
			return transport_error(ret_error, ECONNRESET, "%s", hs_closed);
		return transport_error(ret_error, c->io_errno, "TLS handshake: %s",
				       strerror(c->io_errno));
	}
	if (c->hs->error)
		return transport_error(ret_error, EACCES, "%s", c->hs->error);
	e = ERR_peek_error();
	why = ERR_GET_LIB(e) == ERR_LIB_SSL ? ERR_GET_REASON(e) : 0;
	if (why == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
		return transport_error(ret_error, EACCES, "peer sent no certificate");
	if (why == SSL_R_UNEXPECTED_EOF_WHILE_READING)
		return transport_error(ret_error, ECONNRESET, "%s", hs_closed);
	if (why > SSL_AD_REASON_OFFSET)
		return tls_alert_error(why - SSL_AD_REASON_OFFSET, ret_error);
	transport_openssl_reason(reason, sizeof(reason));
	if (tls_reason_is_not_tls(why))
		return transport_error(ret_error, EPROTO, "peer does not speak TLS 1.3 (%s)",
				       reason);
	return transport_error(ret_error, EPROTO, "TLS handshake failed: %s", reason);
}

enum hs_step { HS_HANDSHAKE, HS_SEND_ACCEPTED, HS_RECV_ACCEPTED };

/* One non-blocking step; > 0 when done. */
static int hs_call(struct tls_conn *c, enum hs_step step, short *ret_events, char **ret_error)
{
	uint8_t byte = TLS_ACCEPTED_BYTE;
	size_t n = 0;
	int k, r = 1;

	pthread_mutex_lock(&c->lock);
	ERR_clear_error();
	if (step == HS_HANDSHAKE)
		k = SSL_do_handshake(c->ssl);
	else if (step == HS_SEND_ACCEPTED)
		k = SSL_write_ex(c->ssl, &byte, 1, &n);
	else
		k = SSL_read_ex(c->ssl, &byte, 1, &n);
	if (k <= 0) {
		r = hs_result(c, k, ret_events, ret_error);
		ERR_clear_error(); /* leave nothing for the caller's next OpenSSL call */
	} else if (step == HS_RECV_ACCEPTED && byte != TLS_ACCEPTED_BYTE)
		r = transport_error(
			ret_error, EPROTO,
			"peer is not migrd: unexpected byte %#x after the TLS handshake", byte);
	pthread_mutex_unlock(&c->lock);
	return r;
}

/* "10s", "300ms": as the timeout was most likely written. */
static char *format_timeout(char *buf, size_t size, usec_t t)
{
	if (t % USEC_PER_SEC == 0)
		snprintf(buf, size, "%" PRIu64 "s", t / USEC_PER_SEC);
	else if (t % USEC_PER_MSEC == 0)
		snprintf(buf, size, "%" PRIu64 "ms", t / USEC_PER_MSEC);
	else
		format_duration(buf, size, t);
	return buf;
}

/* Runs step to its end, then sends whatever it left in the write buffer. */
static int hs_run(struct tls_conn *c, enum hs_step step, usec_t timeout, usec_t deadline,
		  char **ret_error)
{
	char buf[32];
	int r;

	for (;;) {
		short events = 0;

		r = hs_call(c, step, &events, ret_error);
		if (r > 0)
			break;
		if (r < 0)
			return r;
		r = tls_wait(c, events, deadline);
		if (r < 0)
			break;
	}
	if (r > 0)
		r = tls_flush(c, deadline);
	if (r == -ETIMEDOUT)
		return transport_error(ret_error, r, "TLS handshake timed out after %s",
				       format_timeout(buf, sizeof(buf), timeout));
	if (r == -EPIPE || r == -ECONNRESET)
		return transport_error(ret_error, ECONNRESET, "%s", hs_closed);
	if (r < 0)
		return transport_error(ret_error, r, "TLS handshake: %s", strerror(-r));
	return 0;
}

int transport_tls_handshake(struct transport_tls *t, int fd, bool is_server,
			    const char *expected_name, transport_name_check_t name_ok,
			    void *userdata, usec_t timeout, struct transport_conn **ret,
			    char **ret_error)
{
	_cleanup_close_ int fd_owned = fd;
	_cleanup_(tls_conn_freep) struct tls_conn *c = NULL;
	struct tls_handshake hs = {
		.is_server = is_server,
		.expected_name = expected_name,
		.name_ok = name_ok,
		.userdata = userdata,
	};
	usec_t deadline = deadline_after(timeout);
	int r;

	if (!t || fd < 0 || !ret || (is_server ? !name_ok : strempty(expected_name)))
		return transport_error(ret_error, EINVAL, "invalid TLS handshake arguments");
	r = tls_conn_new(t, TAKE_FD(fd_owned), &c);
	if (r < 0)
		return transport_error(ret_error, r, "cannot set up a TLS connection: %s",
				       strerror(-r));
	if (is_server)
		SSL_set_accept_state(c->ssl);
	else
		SSL_set_connect_state(c->ssl);

	c->hs = &hs;
	SSL_set_app_data(c->ssl, &hs);
	r = hs_run(c, HS_HANDSHAKE, timeout, deadline, ret_error);
	if (r >= 0)
		r = hs_run(c, is_server ? HS_SEND_ACCEPTED : HS_RECV_ACCEPTED, timeout, deadline,
			   ret_error);
	SSL_set_app_data(c->ssl, NULL);
	c->hs = NULL;
	if (r >= 0 && !hs.peer_name[0]) /* cannot happen: the verify callback ran */
		r = transport_error(ret_error, EACCES, "peer was not authenticated");
	free(hs.error);
	if (r < 0) {
		c->failed = true;
		return r;
	}
	strscpy(c->conn.peer_name, hs.peer_name, sizeof(c->conn.peer_name));
	c->established = true;
	*ret = &TAKE_PTR(c)->conn;
	return 0;
}

/* ---- keys ---------------------------------------------------------------------------------- */

int transport_tls_export_key(struct transport_conn *conn, const char *label, const void *context,
			     size_t context_len, uint8_t *out, size_t out_len)
{
	struct tls_conn *c = (struct tls_conn *)conn;
	int k;

	if (!conn || conn->ops != &tls_conn_ops || !label || !out || (!context && context_len))
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	ERR_clear_error();
	k = SSL_export_keying_material(c->ssl, out, out_len, label, strlen(label),
				       context ? context : (const void *)"", context_len, 1);
	ERR_clear_error();
	pthread_mutex_unlock(&c->lock);
	return k == 1 ? 0 : -EPROTO;
}
