/* The server side: accepts on the event loop, runs each handshake in a thread of its own
 * (bounded in number and time), builds sessions and hands complete ones to the handler. */
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/common.h"
#include "transport/rdma-internal.h"
#include "transport/session-internal.h"
#include "transport/tcp-internal.h"

#define TLS_RECORD_HANDSHAKE 0x16

struct transport_listener {
	struct transport_context *ctx;
	sd_event_source *source;
	int fd;
	transport_session_handler_t handler;
	void *userdata;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned handshaking;
	uint64_t accepted, refused;
	bool closing;
	/* RDMA data connections, when this host has a device. */
	struct transport_rdma_listener *rdma;
	sd_event_source *rdma_source, *rdma_wake_source;
	int rdma_wake;
	char *rdma_note; /* why there is no RDMA listener */
};

struct handshake {
	struct transport_listener *l;
	int fd; /* a TCP connection, or -1 for the next RDMA connection request */
};

static bool name_ok(void *userdata, const char *name)
{
	struct transport_context *ctx = userdata;

	return ctx->settings.is_cluster_host &&
	       ctx->settings.is_cluster_host(ctx->settings.userdata, name);
}

static void refuse(struct transport_conn *c, const char *message)
{
	json_t *j = json_pack("{s:s,s:s}", "type", "refuse", "message", message);

	if (j)
		(void)transport_msg_send(c, j, USEC_PER_SEC);
	json_decref(j);
}

static struct transport_session *pending_take(struct transport_context *ctx, const uint8_t *id)
{
	struct transport_session *s;

	for (s = ctx->pending; s; s = s->next_pending)
		if (memcmp(s->id, id, sizeof(s->id)) == 0)
			return s;
	return NULL;
}

static void pending_remove(struct transport_context *ctx, struct transport_session *s)
{
	for (struct transport_session **p = &ctx->pending; *p; p = &(*p)->next_pending)
		if (*p == s) {
			*p = s->next_pending;
			return;
		}
}

/* A data connection (TLS or plain with its proof) joins its pending session. */
static int attach_data(struct transport_context *ctx, struct transport_conn *c, json_t *hello,
		       bool plain)
{
	uint8_t id[TRANSPORT_SESSION_ID_SIZE];
	const char *sid = NULL;
	struct transport_session *s;
	uint64_t stream;
	int r = 0;

	if (json_get_string(hello, "session", &sid) < 0 ||
	    transport_unhex(sid, id, sizeof(id)) < 0 ||
	    json_get_uint64(hello, "stream", &stream) < 0)
		return -EBADMSG;
	pthread_mutex_lock(&ctx->lock);
	s = pending_take(ctx, id);
	if (!s || stream >= s->n_streams || s->streams[stream].conn)
		r = -ENOENT;
	else if (plain) {
		uint8_t nonce[16], mac[32], want[32];
		const char *n = NULL, *m = NULL;

		if (s->encrypt || json_get_string(hello, "nonce", &n) < 0 ||
		    json_get_string(hello, "mac", &m) < 0 || transport_unhex(n, nonce, 16) < 0 ||
		    transport_unhex(m, mac, 32) < 0)
			r = -EACCES;
		else if (transport_data_mac(s, (uint32_t)stream, nonce, want) < 0)
			r = -EIO;
		else {
			unsigned char diff = 0;
			for (size_t i = 0; i < 32; i++)
				diff |= (unsigned char)(want[i] ^ mac[i]);
			if (diff)
				r = -EACCES;
		}
	} else if (!streq(c->peer_name, s->peer))
		r = -EACCES; /* another host may not add streams to this session */
	if (r == 0) {
		/* Said before the stream joins, so no session thread can be using c yet; a tiny
		 * message into an empty socket buffer, it does not hold the lock for long. */
		json_t *ok = json_pack("{s:s}", "type", "ok");
		r = ok ? transport_msg_send(c, ok, USEC_PER_SEC) : -ENOMEM;
		json_decref(ok);
	}
	if (r == 0) {
		strscpy(c->peer_name, s->peer, sizeof(c->peer_name));
		s->streams[stream].conn = c;
		s->n_attached++;
		pthread_cond_broadcast(&s->cond);
	}
	pthread_mutex_unlock(&ctx->lock);
	return r;
}

static int serve_control(struct transport_listener *l, struct transport_conn *c, json_t *hello)
{
	struct transport_context *ctx = l->ctx;
	struct transport_session *s = NULL;
	_cleanup_json_ json_t *reply = NULL;
	const char *purpose = NULL;
	uint64_t version, streams;
	bool encrypt = true;
	char id[2 * TRANSPORT_SESSION_ID_SIZE + 1];
	struct timespec deadline;
	int r;

	if (json_get_uint64(hello, "version", &version) < 0 || version != 1 ||
	    json_get_uint64(hello, "streams", &streams) < 0 || streams == 0 ||
	    streams > TRANSPORT_MAX_STREAMS || json_get_string(hello, "purpose", &purpose) < 0 ||
	    json_get_bool(hello, "encrypt", &encrypt) < 0) {
		refuse(c, "malformed session request");
		transport_conn_free(c);
		return -EBADMSG;
	}
	r = session_new(ctx, true, (unsigned)streams, &s);
	if (r < 0) {
		transport_conn_free(c);
		return r;
	}
	s->control = c;
	s->encrypt = encrypt;
	strscpy(s->peer, c->peer_name, sizeof(s->peer));
	strscpy(s->purpose, purpose, sizeof(s->purpose));
	s->args = json_incref(json_object_get(hello, "args"));
	/* The receiving side never compresses; its adaptive state only serves stats. */
	if (getrandom(s->id, sizeof(s->id), 0) != sizeof(s->id) ||
	    transport_adapt_new(TRANSPORT_ADAPT_FIXED, 0, s->n_streams, &s->adapt) < 0 ||
	    transport_session_export_key(s) < 0) {
		transport_session_free(s);
		return -EIO;
	}
	transport_hex(s->id, sizeof(s->id), id);
	reply = json_pack("{s:s,s:s,s:b,s:s*}", "type", "accept", "session", id, "rdma",
			  l->rdma != NULL, "rdma_note", l->rdma ? NULL : l->rdma_note);
	pthread_mutex_lock(&ctx->lock);
	s->next_pending = ctx->pending;
	ctx->pending = s;
	pthread_mutex_unlock(&ctx->lock);
	r = reply ? transport_msg_send(c, reply, ctx->settings.handshake_timeout) : -ENOMEM;

	/* Wait for every data connection (each arrives through its own handshake). */
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += (time_t)(2 * ctx->settings.handshake_timeout / USEC_PER_SEC) + 1;
	pthread_mutex_lock(&ctx->lock);
	while (r >= 0 && s->n_attached < s->n_streams) {
		int w = pthread_cond_timedwait(&s->cond, &ctx->lock, &deadline);
		if (w == ETIMEDOUT)
			r = -ETIMEDOUT;
	}
	pending_remove(ctx, s);
	pthread_mutex_unlock(&ctx->lock);
	if (r >= 0)
		r = session_start(s);
	if (r < 0) {
		log_debug("transport: session from %s not completed: %s", s->peer, strerror(-r));
		transport_session_free(s);
		return r;
	}
	pthread_mutex_lock(&l->lock);
	l->accepted++;
	pthread_mutex_unlock(&l->lock);
	l->handler(l->userdata, s);
	return 0;
}

static int peek_first_byte(int fd, usec_t timeout, uint8_t *ret)
{
	int r = transport_fd_wait(fd, POLLIN, now_usec(CLOCK_MONOTONIC) + timeout, NULL);
	ssize_t k;

	if (r < 0)
		return r;
	k = recv(fd, ret, 1, MSG_PEEK | MSG_DONTWAIT);
	if (k == 0)
		return -ECONNRESET;
	return k < 0 ? NEG_ERRNO() : 0;
}

static int handshake_conn(struct transport_listener *l, struct transport_conn *c, bool plain);

static int handshake_run(struct transport_listener *l, int fd)
{
	struct transport_context *ctx = l->ctx;
	usec_t t = ctx->settings.handshake_timeout;
	struct transport_conn *c = NULL;
	_cleanup_free_ char *error = NULL;
	bool plain = false;
	uint8_t first;
	int r;

	r = transport_socket_tune(fd);
	if (r >= 0)
		r = peek_first_byte(fd, t, &first);
	if (r < 0) {
		safe_close(fd);
		return r;
	}
	if (first == TLS_RECORD_HANDSHAKE) {
		r = transport_tls_handshake(ctx->tls, fd, true, NULL, name_ok, ctx, t, &c, &error);
		if (r < 0) {
			log_debug("transport: refused a connection: %s", strna(error));
			return r;
		}
	} else {
		r = transport_conn_tcp_new(fd, &c);
		if (r < 0)
			return r;
		plain = true;
	}
	return handshake_conn(l, c, plain);
}

/* After TLS (plain = false) or on a plain TCP or RDMA connection, which must then start with
 * the data stream preface and prove the session key. */
static int handshake_conn(struct transport_listener *l, struct transport_conn *c, bool plain)
{
	struct transport_context *ctx = l->ctx;
	usec_t t = ctx->settings.handshake_timeout;
	_cleanup_json_ json_t *hello = NULL;
	const char *type = NULL;
	int r;

	if (plain) {
		char preface[PLAIN_PREFACE_LEN];

		r = transport_conn_recv_full(c, preface, sizeof(preface), t);
		if (r < 0 || memcmp(preface, PLAIN_PREFACE, PLAIN_PREFACE_LEN) != 0) {
			log_debug("transport: refused a %s connection that speaks neither TLS nor "
				  "the data stream protocol",
				  c->ops->name);
			transport_conn_free(c);
			return -EPROTO;
		}
	}
	r = transport_msg_recv(c, t, &hello);
	if (r >= 0)
		r = json_get_string(hello, "type", &type);
	if (r < 0) {
		transport_conn_free(c);
		return r < 0 ? r : -EBADMSG;
	}
	if (streq(type, "session") && !plain)
		return serve_control(l, c, hello);
	if (streq(type, "data")) {
		r = attach_data(ctx, c, hello, plain);
		if (r == 0)
			return 0; /* the session owns c now */
		refuse(c, r == -EACCES ? "not authorized for this session" : "no such session");
		transport_conn_free(c);
		return r;
	}
	refuse(c, "unexpected message");
	transport_conn_free(c);
	return -EBADMSG;
}

static void *handshake_thread(void *arg)
{
	struct handshake *h = arg;
	struct transport_listener *l = h->l;
	int r;

	if (h->fd >= 0)
		r = handshake_run(l, h->fd);
	else {
		struct transport_conn *c = NULL;
		uint64_t one = 1;

		r = transport_rdma_accept(l->rdma, l->ctx->settings.handshake_timeout, &c);
		/* The request is off the channel: the loop may watch for the next one. */
		(void)!write(l->rdma_wake, &one, sizeof(one));
		if (r >= 0)
			r = handshake_conn(l, c, true);
	}

	pthread_mutex_lock(&l->lock);
	if (r < 0 && r != -ETIMEDOUT)
		l->refused++;
	l->handshaking--;
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
	free(h);
	return NULL;
}

/* Runs a handshake thread for fd (or an RDMA request with fd -1); false when shed. */
static bool spawn_handshake(struct transport_listener *l, int fd)
{
	struct handshake *h;
	pthread_attr_t attr;
	pthread_t tid;
	bool ok = false;

	pthread_mutex_lock(&l->lock);
	if (l->handshaking >= l->ctx->settings.max_handshakes || l->closing) {
		l->refused++;
		pthread_mutex_unlock(&l->lock);
		return false;
	}
	l->handshaking++;
	pthread_mutex_unlock(&l->lock);
	h = malloc(sizeof(*h));
	if (h) {
		*h = (struct handshake){.l = l, .fd = fd};
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		pthread_attr_setstacksize(&attr, 256 * 1024);
		ok = pthread_create(&tid, &attr, handshake_thread, h) == 0;
		pthread_attr_destroy(&attr);
		if (!ok)
			free(h);
	}
	if (!ok) {
		pthread_mutex_lock(&l->lock);
		l->handshaking--;
		pthread_mutex_unlock(&l->lock);
	}
	return ok;
}

static int on_rdma_request(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
	struct transport_listener *l = userdata;

	/* One thread takes the request off the channel; the source is one-shot and re-armed
	 * through rdma_wake once it has (or at once when the request was shed). */
	if (!spawn_handshake(l, -1)) {
		uint64_t one = 1;
		(void)!write(l->rdma_wake, &one, sizeof(one));
	}
	return 0;
}

static int on_rdma_wake(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
	struct transport_listener *l = userdata;
	uint64_t v;

	(void)!read(fd, &v, sizeof(v));
	(void)sd_event_source_set_enabled(l->rdma_source, SD_EVENT_ONESHOT);
	return 0;
}

/* RDMA data connections on the same address and port (rdma_cm's own port space), when this
 * host has a device; otherwise why not, for sessions that ask. */
static void listener_setup_rdma(struct transport_listener *l, sd_event *e,
				const struct sockaddr *addr, socklen_t addr_len)
{
	char *reason = NULL;
	int r = transport_rdma_available(&reason);

	if (r <= 0) {
		l->rdma_note = reason;
		return;
	}
	free(reason);
	r = transport_rdma_listen(addr, addr_len, &l->rdma);
	if (r >= 0) {
		l->rdma_wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (l->rdma_wake < 0)
			r = NEG_ERRNO();
	}
	if (r >= 0)
		r = sd_event_add_io(e, &l->rdma_source, transport_rdma_listener_fd(l->rdma),
				    EPOLLIN, on_rdma_request, l);
	if (r >= 0)
		r = sd_event_source_set_enabled(l->rdma_source, SD_EVENT_ONESHOT);
	if (r >= 0)
		r = sd_event_add_io(e, &l->rdma_wake_source, l->rdma_wake, EPOLLIN, on_rdma_wake,
				    l);
	if (r < 0) {
		if (asprintf(&l->rdma_note, "cannot listen for RDMA: %s", strerror(-r)) < 0)
			l->rdma_note = NULL;
		l->rdma_source = sd_event_source_disable_unref(l->rdma_source);
		l->rdma_wake_source = sd_event_source_disable_unref(l->rdma_wake_source);
		l->rdma = transport_rdma_listener_free(l->rdma);
		l->rdma_wake = safe_close(l->rdma_wake);
	}
}

static int on_accept(sd_event_source *source, int lfd, uint32_t revents, void *userdata)
{
	struct transport_listener *l = userdata;

	for (unsigned i = 0; i < 64; i++) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

		if (fd < 0)
			return 0;
		if (!spawn_handshake(l, fd))
			safe_close(fd); /* a burst: shed it rather than grow */
	}
	return 0;
}

int transport_listener_new(struct transport_context *ctx, sd_event *e, const struct sockaddr *addr,
			   socklen_t addr_len, transport_session_handler_t handler, void *userdata,
			   struct transport_listener **ret)
{
	struct transport_listener *l;
	int one = 1, r;

	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->rdma_wake = -EBADF;
	l->ctx = ctx;
	l->handler = handler;
	l->userdata = userdata;
	pthread_mutex_init(&l->lock, NULL);
	pthread_cond_init(&l->cond, NULL);
	l->fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (l->fd < 0) {
		r = NEG_ERRNO();
		goto fail;
	}
	(void)setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(l->fd, addr, addr_len) < 0 || listen(l->fd, 128) < 0) {
		r = NEG_ERRNO();
		goto fail;
	}
	r = sd_event_add_io(e, &l->source, l->fd, EPOLLIN, on_accept, l);
	if (r < 0)
		goto fail;
	listener_setup_rdma(l, e, addr, addr_len);
	*ret = l;
	return 0;
fail:
	transport_listener_free(l);
	return r;
}

struct transport_listener *transport_listener_free(struct transport_listener *l)
{
	if (!l)
		return NULL;
	sd_event_source_disable_unref(l->source);
	sd_event_source_disable_unref(l->rdma_source);
	sd_event_source_disable_unref(l->rdma_wake_source);
	safe_close(l->fd);
	/* Handshake threads are bounded in time; let them finish before l goes away. */
	pthread_mutex_lock(&l->lock);
	l->closing = true;
	while (l->handshaking > 0)
		pthread_cond_wait(&l->cond, &l->lock);
	pthread_mutex_unlock(&l->lock);
	transport_rdma_listener_free(l->rdma);
	safe_close(l->rdma_wake);
	free(l->rdma_note);
	pthread_mutex_destroy(&l->lock);
	pthread_cond_destroy(&l->cond);
	free(l);
	return NULL;
}

void transport_listener_counters(struct transport_listener *l, unsigned *ret_handshaking,
				 uint64_t *ret_accepted, uint64_t *ret_refused)
{
	pthread_mutex_lock(&l->lock);
	*ret_handshaking = l->handshaking;
	*ret_accepted = l->accepted;
	*ret_refused = l->refused;
	pthread_mutex_unlock(&l->lock);
}
