/* Local stream sockets carried over a transport session (see vm-tunnel.h). One accept thread on
 * the source; per carried connection two pump threads, one per direction. */
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

struct listener {
	int fd;
	char *path;
	char *target;
};

struct conn {
	struct vm_tunnel *t;
	unsigned stream;
	int fd;
	pthread_t up, down; /* local -> stream, stream -> local */
	bool has_up, has_down;
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

int vm_tunnel_new(struct transport_session *s, size_t frame_size, bool gather,
		  struct vm_tunnel **ret)
{
	struct vm_tunnel *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	t->s = s;
	t->frame_size = MIN(frame_size ?: 64 * 1024,
			    (size_t)(gather ? TUNNEL_FRAME_MAX : TUNNEL_FRAME_PLAIN));
	t->gather = gather;
	t->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (t->stop_fd < 0) {
		free(t);
		return -errno;
	}
	/* Stream 0 first: connections take streams in accept order. */
	pthread_mutex_init(&t->lock, NULL);
	pthread_cond_init(&t->cond, NULL);
	*ret = t;
	return 0;
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
			(void)transport_session_end_stream(t->s, c->stream);
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
		r = transport_session_send_borrowed(t->s, c->stream, buf, len, free, buf);
		if (r < 0)
			break; /* the session's error says why (buf was released) */
		pthread_mutex_lock(&t->lock);
		t->local_in += len;
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
			break;
		}
		if (r < 0) {
			(void)shutdown(c->fd, SHUT_RDWR);
			break;
		}
		if (!discard) {
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
				pthread_mutex_unlock(&t->lock);
			}
		}
		transport_buf_free(b);
	}
	pump_ended(t);
	return NULL;
}

static int attach(struct vm_tunnel *t, unsigned stream, int fd)
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
	/* Room for a whole frame in the kernel, so a write to the local end rarely waits. */
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &(int){LOCAL_SNDBUF}, sizeof(int));
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
			if (stream >= transport_session_n_streams(t->s)) {
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
				r = attach(t, stream, fd);
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

int vm_tunnel_connect(struct vm_tunnel *t, unsigned stream, const char *path, char **ret_error)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd, r;

	*ret_error = NULL;
	if (stream >= transport_session_n_streams(t->s)) {
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
	r = attach(t, stream, fd);
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
	free(t);
	return NULL;
}
