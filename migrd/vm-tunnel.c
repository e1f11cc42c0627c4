/* Local stream sockets carried over a transport session (see vm-tunnel.h). One accept thread on
 * the source; per carried connection two pump threads, one per direction. */
#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/common.h"
#include "migrd/vm-tunnel.h"

#define MAX_LISTENERS 4
#define RECV_POLL     (250 * USEC_PER_MSEC)
#define STOP_GRACE    (2 * USEC_PER_SEC)
#define MAX_CONNS     TRANSPORT_MAX_STREAMS
#define LOCAL_SNDBUF  (4 << 20)
/* Compressed sessions: 256 KiB frames gathered while the stream flows. The transport keeps one
 * zstd stream per stream, so the redundancy between pages spans frames and larger frames no
 * longer pay: streamed, 256 KiB frames sent as few bytes as 1 MiB ones (0.42-0.49x of native
 * migration's, bench/vm), in a quarter of the memory. With one-shot frames 1 MiB had
 * compressed guest memory ~25% better. Uncompressed sessions: 128 KiB frames that leave at
 * once, so little waits in buffers when the VM stops. */
#define TUNNEL_FRAME_MAX   (256 * 1024)
#define TUNNEL_FRAME_PLAIN (128 * 1024)
#define GATHER_MS	   1
/* Credits (see vm_tunnel_new): the destination reports what it handed to its local sockets,
 * in one 20-byte record per stream (le32 stream, le64 bytes so far, le64 nanoseconds its
 * writes to the local socket took so far), every eighth of the window; its local sockets then
 * hold little beyond the window themselves. The time tells the source's adaptive compression
 * when the destination's QEMU, not the link, sets the pace. */
#define CREDIT_RECORD 20
#define CREDIT_POLL   (25 * USEC_PER_MSEC) /* the source's reader notices the end */
#define CREDIT_SNDBUF (256 * 1024)

struct listener {
	int fd;
	char *path;
	char *target;
};

struct conn {
	struct vm_tunnel *t;
	unsigned stream;
	char target[16];
	int fd;
	pthread_t up, down; /* local -> stream, stream -> local */
	bool has_up, has_down;
	/* With credits (under t->lock): the source counts what it sent and what the
	 * destination reported written; the destination what it wrote and reported. */
	uint64_t sent, credited;
	uint64_t written, reported;
	uint64_t write_ns, peer_write_ns; /* destination's time in local writes; as reported */
	/* The source -> destination half (under t->lock): on the source the bytes handed to the
	 * session and whether the local end's EOF went out as the stream's end; on the
	 * destination the digest of what was written (over .written) and whether the stream's
	 * end came after all of it. */
	uint64_t handed, digest;
	bool half_ended;
};

struct vm_tunnel {
	struct transport_session *s;
	size_t frame_size;
	bool gather;
	struct listener listeners[MAX_LISTENERS];
	unsigned n_listeners;
	int stop_fd;
	pthread_t accept_thread;
	bool accepting;

	pthread_mutex_t lock;
	pthread_cond_t cond; /* a pump ended */
	bool stopping;
	struct conn *conns[MAX_CONNS];
	unsigned n_conns;
	unsigned running; /* pump threads alive */
	unsigned next_stream;
	uint64_t local_in, local_out;
	char *error;

	/* Credits: 0, or the most a stream may have in flight (source) */
	size_t window;
	unsigned credit_stream;	 /* the session's last stream */
	pthread_t credit_thread; /* source: reads credits; destination: sends them */
	bool has_credit_thread;
	bool credit_dead; /* source: no more credits will come; stop waiting for them */
	bool credit_due;  /* destination: a stream has news for the source */
	pthread_cond_t credit_cond;
};

static void tunnel_fail(struct vm_tunnel *t, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void tunnel_fail(struct vm_tunnel *t, const char *fmt, ...)
{
	va_list ap;
	char *msg = NULL;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	pthread_mutex_lock(&t->lock);
	if (!t->error && !t->stopping) {
		t->error = msg;
		msg = NULL;
	}
	pthread_mutex_unlock(&t->lock);
	free(msg);
}

int vm_tunnel_new(struct transport_session *s, size_t frame_size, bool gather, size_t window,
		  struct vm_tunnel **ret)
{
	struct vm_tunnel *t;
	size_t fs = MIN(frame_size ?: 64 * 1024,
			(size_t)(gather ? TUNNEL_FRAME_MAX : TUNNEL_FRAME_PLAIN));

	/* The destination reports every eighth of the window: a full frame must fit beside what
	 * it has not reported yet, or the source could wait for a report that never comes. */
	if (window > 0 && (window < 4 * fs || transport_session_n_streams(s) < 2))
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->s = s;
	t->frame_size = fs;
	t->gather = gather;
	t->window = window;
	t->credit_stream = transport_session_n_streams(s) - 1;
	t->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (t->stop_fd < 0) {
		free(t);
		return -errno;
	}
	/* Stream 0 first: connections take streams in accept order. */
	pthread_mutex_init(&t->lock, NULL);
	pthread_cond_init(&t->cond, NULL);
	pthread_cond_init(&t->credit_cond, NULL);
	*ret = t;
	return 0;
}

static bool is_stopping(struct vm_tunnel *t);
static void pump_ended(struct vm_tunnel *t);

/* Number of streams that carry connections (the last one carries credits, if any). */
static unsigned data_streams(struct vm_tunnel *t)
{
	return transport_session_n_streams(t->s) - (t->window > 0 ? 1 : 0);
}

/* Source: waits until len more bytes on c's stream keep it within the window. */
static void credit_wait(struct conn *c, size_t len)
{
	struct vm_tunnel *t = c->t;

	pthread_mutex_lock(&t->lock);
	while (!t->stopping && !t->credit_dead && c->sent + len - c->credited > t->window)
		pthread_cond_wait(&t->credit_cond, &t->lock);
	c->sent += len;
	pthread_mutex_unlock(&t->lock);
}

/* Source: applies the destination's reports. A report for no stream of ours, or of more than
 * was sent, is a broken peer: the session ends. */
static int credit_apply(struct vm_tunnel *t, const uint8_t *p, size_t len)
{
	uint64_t blocked = 0;

	if (len == 0 || len % CREDIT_RECORD != 0)
		return -EBADMSG;
	pthread_mutex_lock(&t->lock);
	for (; len > 0; p += CREDIT_RECORD, len -= CREDIT_RECORD) {
		uint32_t stream;
		uint64_t total, ns;
		struct conn *c = NULL;

		memcpy(&stream, p, sizeof(stream));
		memcpy(&total, p + 4, sizeof(total));
		memcpy(&ns, p + 12, sizeof(ns));
		stream = le32toh(stream);
		total = le64toh(total);
		ns = le64toh(ns);
		for (unsigned i = 0; i < t->n_conns && !c; i++)
			if (t->conns[i]->stream == stream)
				c = t->conns[i];
		if (!c || total > c->sent || ns < c->peer_write_ns) {
			pthread_mutex_unlock(&t->lock);
			return -EBADMSG;
		}
		c->credited = MAX(c->credited, total);
		blocked += ns - c->peer_write_ns;
		c->peer_write_ns = ns;
	}
	pthread_cond_broadcast(&t->credit_cond);
	pthread_mutex_unlock(&t->lock);
	if (blocked > 0)
		transport_session_note_receiver_busy(t->s, blocked);
	return 0;
}

static void *credit_reader(void *arg)
{
	struct vm_tunnel *t = arg;

	for (;;) {
		struct transport_buf *b = NULL;
		int r = transport_session_recv(t->s, t->credit_stream, CREDIT_POLL, &b);

		if (r == -ETIMEDOUT) {
			if (is_stopping(t))
				break;
			continue;
		}
		if (r < 0)
			break; /* the session's end, or its error */
		r = credit_apply(t, b->data, b->len);
		transport_buf_free(b);
		if (r < 0) {
			tunnel_fail(t, "malformed credits from the destination");
			transport_session_abort(t->s, EBADMSG,
						"malformed credits in the VM tunnel");
			break;
		}
	}
	pthread_mutex_lock(&t->lock);
	t->credit_dead = true;
	pthread_cond_broadcast(&t->credit_cond);
	pthread_mutex_unlock(&t->lock);
	pump_ended(t);
	return NULL;
}

/* Destination: sends the totals of the streams with news. Reports are cumulative, so one that
 * waits for room in the session only grows; the pumps never wait for it. */
static void *credit_writer(void *arg)
{
	struct vm_tunnel *t = arg;
	uint8_t rec[MAX_CONNS * CREDIT_RECORD];

	for (;;) {
		size_t n = 0;
		int r;

		pthread_mutex_lock(&t->lock);
		while (!t->stopping && !t->credit_due)
			pthread_cond_wait(&t->credit_cond, &t->lock);
		if (t->stopping) {
			pthread_mutex_unlock(&t->lock);
			break;
		}
		t->credit_due = false;
		for (unsigned i = 0; i < t->n_conns; i++) {
			struct conn *c = t->conns[i];
			uint32_t stream = htole32(c->stream);
			uint64_t total = htole64(c->written), ns = htole64(c->write_ns);

			if (c->written == c->reported)
				continue;
			memcpy(rec + n, &stream, sizeof(stream));
			memcpy(rec + n + 4, &total, sizeof(total));
			memcpy(rec + n + 12, &ns, sizeof(ns));
			n += CREDIT_RECORD;
			c->reported = c->written;
		}
		pthread_mutex_unlock(&t->lock);
		if (n == 0)
			continue;
		r = transport_session_send(t->s, t->credit_stream, rec, n);
		if (r < 0)
			break; /* the session's error says why */
	}
	pump_ended(t);
	return NULL;
}

/* The credit thread starts with the first connection: the source's reader, the destination's
 * writer. It counts as a pump. With t->lock held. */
static int credit_start(struct vm_tunnel *t, bool source)
{
	int r;

	if (t->window == 0 || t->has_credit_thread)
		return 0;
	r = -pthread_create(&t->credit_thread, NULL, source ? credit_reader : credit_writer, t);
	t->has_credit_thread = r == 0;
	t->running += r == 0;
	return r;
}

static bool is_stopping(struct vm_tunnel *t)
{
	bool s;

	pthread_mutex_lock(&t->lock);
	s = t->stopping;
	pthread_mutex_unlock(&t->lock);
	return s;
}

static void pump_ended(struct vm_tunnel *t)
{
	pthread_mutex_lock(&t->lock);
	t->running--;
	pthread_cond_broadcast(&t->cond);
	pthread_mutex_unlock(&t->lock);
}

/* Local socket -> stream: what one blocking read returns, topped up with what arrives without a
 * pause of GATHER_MS, goes out as one frame. The buffer is lent
 * to the session, not copied. */
static void *pump_up(void *arg)
{
	struct conn *c = arg;
	struct vm_tunnel *t = c->t;
	int r;

	for (;;) {
		uint8_t *buf = malloc(t->frame_size);
		size_t len = 0;
		ssize_t n;

		if (!buf) {
			tunnel_fail(t, "out of memory");
			transport_session_abort(t->s, ENOMEM, "out of memory in the VM tunnel");
			break;
		}
		do
			n = read(c->fd, buf, t->frame_size);
		while (n < 0 && errno == EINTR);
		if (n < 0 && !is_stopping(t))
			tunnel_fail(t, "reading the local socket of stream %u: %s", c->stream,
				    strerror(errno));
		if (n <= 0) {
			/* The other side learns it as the stream's end. */
			free(buf);
			r = transport_session_end_stream(t->s, c->stream);
			if (n == 0 && r >= 0) {
				pthread_mutex_lock(&t->lock);
				c->half_ended = true;
				pthread_mutex_unlock(&t->lock);
			}
			break;
		}
		len = (size_t)n;
		/* A stream in full flow fills the frame (zstd then finds the redundancy between
		 * pages); a message that nothing follows within GATHER_MS leaves at once. */
		while (len < t->frame_size) {
			struct pollfd pfd = {.fd = c->fd, .events = POLLIN};

			if (poll(&pfd, 1, t->gather ? GATHER_MS : 0) <= 0)
				break;
			n = recv(c->fd, buf + len, t->frame_size - len, MSG_DONTWAIT);
			if (n <= 0)
				break; /* EOF or an error: the next read says */
			len += (size_t)n;
		}
		if (t->window > 0)
			credit_wait(c, len);
		r = transport_session_send_borrowed(t->s, c->stream, buf, len, free, buf);
		if (r < 0)
			break; /* the session's error says why (buf was released) */
		pthread_mutex_lock(&t->lock);
		t->local_in += len;
		c->handed += len;
		pthread_mutex_unlock(&t->lock);
	}
	pump_ended(t);
	return NULL;
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Stream -> local socket; the stream's end becomes a half close. */
static void *pump_down(void *arg)
{
	struct conn *c = arg;
	struct vm_tunnel *t = c->t;
	bool discard = false;

	for (;;) {
		struct transport_buf *b = NULL;
		int r = transport_session_recv(t->s, c->stream, RECV_POLL, &b);

		if (r == -ETIMEDOUT) {
			if (is_stopping(t))
				break;
			continue;
		}
		if (r == -EPIPE) {
			(void)shutdown(c->fd, SHUT_WR);
			pthread_mutex_lock(&t->lock);
			c->half_ended = !discard;
			pthread_mutex_unlock(&t->lock);
			break;
		}
		if (r < 0) {
			(void)shutdown(c->fd, SHUT_RDWR);
			break;
		}
		if (!discard) {
			usec_t t0 = now_usec(CLOCK_MONOTONIC);

			r = write_all(c->fd, b->data, b->len);
			if (r < 0) {
				/* The local end closed: what the peer still sends is of no use
				 * to anyone, but keep draining so its sender never blocks. */
				if (r != -EPIPE && r != -ECONNRESET && !is_stopping(t))
					tunnel_fail(t, "writing the local socket of stream %u: %s",
						    c->stream, strerror(-r));
				discard = true;
			} else {
				pthread_mutex_lock(&t->lock);
				t->local_out += b->len;
				c->written += b->len;
				c->digest = transport_digest_fold(c->digest, b->checksum, b->len);
				c->write_ns += (now_usec(CLOCK_MONOTONIC) - t0) * 1000;
				if (t->window > 0 && c->written - c->reported >= t->window / 8) {
					t->credit_due = true;
					pthread_cond_broadcast(&t->credit_cond);
				}
				pthread_mutex_unlock(&t->lock);
			}
		}
		transport_buf_free(b);
	}
	pump_ended(t);
	return NULL;
}

static int attach(struct vm_tunnel *t, unsigned stream, int fd, const char *target, bool source)
{
	struct conn *c;
	int r;

	pthread_mutex_lock(&t->lock);
	if (t->stopping || t->n_conns >= MAX_CONNS) {
		pthread_mutex_unlock(&t->lock);
		return -ESHUTDOWN;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		pthread_mutex_unlock(&t->lock);
		return -ENOMEM;
	}
	*c = (struct conn){.t = t, .stream = stream, .fd = fd};
	strscpy(c->target, target, sizeof(c->target));
	/* Room for a whole frame in the kernel, so a write to the local end rarely waits; with
	 * credits, what waits there is outside the window, so a little less. */
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF,
			 &(int){t->window ? CREDIT_SNDBUF : LOCAL_SNDBUF}, sizeof(int));
	r = credit_start(t, source);
	if (r < 0) {
		pthread_mutex_unlock(&t->lock);
		free(c);
		return r;
	}
	t->conns[t->n_conns++] = c;
	t->running += 2;
	r = -pthread_create(&c->up, NULL, pump_up, c);
	c->has_up = r == 0;
	if (r == 0) {
		r = -pthread_create(&c->down, NULL, pump_down, c);
		c->has_down = r == 0;
		if (r < 0) {
			/* up runs, down never will: its count goes, the fd wakes up. */
			t->running--;
			(void)shutdown(fd, SHUT_RDWR);
		}
	} else
		t->running -= 2;
	pthread_mutex_unlock(&t->lock);
	return r;
}

int vm_tunnel_listen(struct vm_tunnel *t, const char *path, const char *target)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct listener *l;
	int fd;

	if (t->n_listeners >= MAX_LISTENERS || strlen(path) >= sizeof(sa.sun_path))
		return -EINVAL;
	strscpy(sa.sun_path, path, sizeof(sa.sun_path));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	(void)unlink(path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(path, 0600) < 0 ||
	    listen(fd, 16) < 0) {
		int r = -errno;
		close(fd);
		return r;
	}
	l = &t->listeners[t->n_listeners];
	l->path = strdup(path);
	l->target = strdup(target);
	if (!l->path || !l->target) {
		free(l->path);
		free(l->target);
		close(fd);
		unlink(path);
		return -ENOMEM;
	}
	l->fd = fd;
	t->n_listeners++;
	return 0;
}

static void *accept_thread(void *arg)
{
	struct vm_tunnel *t = arg;
	struct pollfd pfd[MAX_LISTENERS + 1];

	for (;;) {
		unsigned n = t->n_listeners;

		for (unsigned i = 0; i < n; i++)
			pfd[i] = (struct pollfd){.fd = t->listeners[i].fd, .events = POLLIN};
		pfd[n] = (struct pollfd){.fd = t->stop_fd, .events = POLLIN};
		if (poll(pfd, n + 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			tunnel_fail(t, "poll: %s", strerror(errno));
			break;
		}
		if (pfd[n].revents)
			break;
		for (unsigned i = 0; i < n; i++) {
			json_t *msg;
			unsigned stream;
			int fd, r;

			if (!(pfd[i].revents & POLLIN))
				continue;
			fd = accept4(t->listeners[i].fd, NULL, NULL, SOCK_CLOEXEC);
			if (fd < 0)
				continue;
			pthread_mutex_lock(&t->lock);
			stream = t->next_stream++;
			pthread_mutex_unlock(&t->lock);
			if (stream >= data_streams(t)) {
				tunnel_fail(t, "more connections (%u) than the session has streams",
					    stream + 1);
				close(fd);
				continue;
			}
			/* The open goes first on the ordered control connection, so the
			 * destination connects in accept order. */
			msg = json_pack("{s:s,s:i,s:s}", "type", "open", "stream", (int)stream,
					"target", t->listeners[i].target);
			r = msg ? transport_session_send_control(t->s, msg) : -ENOMEM;
			json_decref(msg);
			if (r >= 0)
				r = attach(t, stream, fd, t->listeners[i].target, true);
			if (r < 0) {
				close(fd);
				if (r != -ESHUTDOWN)
					tunnel_fail(t, "carrying a %s connection: %s",
						    t->listeners[i].target, strerror(-r));
			}
		}
	}
	return NULL;
}

int vm_tunnel_start(struct vm_tunnel *t)
{
	int r = -pthread_create(&t->accept_thread, NULL, accept_thread, t);

	if (r == 0)
		t->accepting = true;
	return r;
}

int vm_tunnel_connect(struct vm_tunnel *t, unsigned stream, const char *target, const char *path,
		      char **ret_error)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd, r;

	*ret_error = NULL;
	if (stream >= data_streams(t)) {
		(void)!asprintf(ret_error, "stream %u is not in the session", stream);
		return -EINVAL;
	}
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strscpy(sa.sun_path, path, sizeof(sa.sun_path));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		(void)!asprintf(ret_error, "cannot connect to %s: %s", path, strerror(-r));
		close(fd);
		return r;
	}
	r = attach(t, stream, fd, target, false);
	if (r < 0)
		close(fd);
	return r;
}

void vm_tunnel_stats(struct vm_tunnel *t, unsigned *ret_conns, uint64_t *ret_local_in,
		     uint64_t *ret_local_out)
{
	pthread_mutex_lock(&t->lock);
	*ret_conns = t->n_conns;
	*ret_local_in = t->local_in;
	*ret_local_out = t->local_out;
	pthread_mutex_unlock(&t->lock);
}

/* With t->lock held: the state of c's source -> destination half; false while it has not
 * ended (on the source: or the session has not put all of it on the wire). */
static bool half_state(struct vm_tunnel *t, struct conn *c, bool source,
		       struct vm_tunnel_digest *ret)
{
	*ret = (struct vm_tunnel_digest){.stream = c->stream};
	if (source) {
		if (transport_session_stream_sent(t->s, c->stream, &ret->bytes, &ret->digest) < 0)
			return false;
		ret->complete = c->half_ended && ret->bytes == c->handed;
	} else {
		ret->bytes = c->written;
		ret->digest = c->digest;
		ret->complete = c->half_ended;
	}
	return ret->complete;
}

int vm_tunnel_digests(struct vm_tunnel *t, const char *target, bool source, usec_t timeout,
		      struct vm_tunnel_digest *ret, unsigned max)
{
	usec_t deadline = usec_add(now_usec(CLOCK_MONOTONIC), timeout);

	for (;;) {
		unsigned n = 0;
		bool all = true;

		pthread_mutex_lock(&t->lock);
		for (unsigned i = 0; i < t->n_conns; i++) {
			struct vm_tunnel_digest d;

			if (!streq(t->conns[i]->target, target))
				continue;
			all = half_state(t, t->conns[i], source, &d) && all;
			if (n < max)
				ret[n] = d;
			n++;
		}
		pthread_mutex_unlock(&t->lock);
		if (n > max)
			return -ENOBUFS;
		if (all || now_usec(CLOCK_MONOTONIC) >= deadline)
			return (int)n;
		usleep(5 * USEC_PER_MSEC);
	}
}

const char *vm_tunnel_error(struct vm_tunnel *t)
{
	const char *e;

	pthread_mutex_lock(&t->lock);
	e = t->error;
	pthread_mutex_unlock(&t->lock);
	return e;
}

struct vm_tunnel *vm_tunnel_free(struct vm_tunnel *t)
{
	uint64_t one = 1;
	struct timespec deadline;

	if (!t)
		return NULL;
	pthread_mutex_lock(&t->lock);
	t->stopping = true;
	pthread_cond_broadcast(&t->credit_cond);
	pthread_mutex_unlock(&t->lock);
	(void)!write(t->stop_fd, &one, sizeof(one));
	if (t->accepting)
		pthread_join(t->accept_thread, NULL);
	/* Wake the readers; writers blocked on a full stream wait for the peer, so give them a
	 * moment, then end the session under them. */
	pthread_mutex_lock(&t->lock);
	for (unsigned i = 0; i < t->n_conns; i++)
		(void)shutdown(t->conns[i]->fd, SHUT_RDWR);
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += STOP_GRACE / USEC_PER_SEC;
	while (t->running > 0)
		if (pthread_cond_timedwait(&t->cond, &t->lock, &deadline) == ETIMEDOUT)
			break;
	if (t->running > 0) {
		pthread_mutex_unlock(&t->lock);
		transport_session_abort(t->s, ECANCELED, "the VM tunnel closed");
		pthread_mutex_lock(&t->lock);
	}
	pthread_mutex_unlock(&t->lock);
	for (unsigned i = 0; i < t->n_conns; i++) {
		struct conn *c = t->conns[i];

		if (c->has_up)
			pthread_join(c->up, NULL);
		if (c->has_down)
			pthread_join(c->down, NULL);
		close(c->fd);
		free(c);
	}
	if (t->has_credit_thread)
		pthread_join(t->credit_thread, NULL);
	for (unsigned i = 0; i < t->n_listeners; i++) {
		close(t->listeners[i].fd);
		(void)unlink(t->listeners[i].path);
		free(t->listeners[i].path);
		free(t->listeners[i].target);
	}
	close(t->stop_fd);
	free(t->error);
	pthread_mutex_destroy(&t->lock);
	pthread_cond_destroy(&t->cond);
	pthread_cond_destroy(&t->credit_cond);
	free(t);
	return NULL;
}
