/* The session data plane: per stream a sender thread (seal: zero check, zstd, checksum; write)
 * and a receiver thread (read, check, open), bounded queues between them and the caller, and
 * a control connection with heartbeats that notices a vanished peer. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#include "common/common.h"
#include "common/hash.h"
#include "transport/session-internal.h"

#define CONTROL_QUEUE	  64
#define HEARTBEAT_DIVISOR 4

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int control_write(struct transport_session *s, json_t *msg, usec_t timeout);

/* With s->lock held: every waiter re-checks (errors, shutdown). */
static void session_wake_all(struct transport_session *s)
{
	pthread_cond_broadcast(&s->cond);
	pthread_cond_broadcast(&s->space_cond);
	for (unsigned i = 0; s->streams && i < s->n_streams; i++) {
		pthread_cond_broadcast(&s->streams[i].send_cond);
		pthread_cond_broadcast(&s->streams[i].recv_cond);
		pthread_cond_broadcast(&s->streams[i].recv_space_cond);
	}
}

/* Errors that mean the peer or the link went away: nothing to tell the peer then. */
static bool error_is_disconnect(int error)
{
	error = ERRNO_VALUE(error);
	return error == ECONNRESET || error == EPIPE || error == ECANCELED || error == ETIMEDOUT ||
	       error == ECONNABORTED || error == ESHUTDOWN;
}

/* A stream closed under us: the peer usually says why on the control connection just before,
 * so give that a moment to arrive and be the session's error instead of a bare reset. */
static void session_fail_peer_closed(struct transport_session *s, int error, const char *what,
				     unsigned stream)
{
	struct timespec deadline;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 1;
	pthread_mutex_lock(&s->lock);
	while (!s->error && s->control_started) {
		if (pthread_cond_timedwait(&s->cond, &s->lock, &deadline) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&s->lock);
	session_fail(s, error, "%s stream %u with %s: %s", what, stream, s->peer,
		     strerror(ERRNO_VALUE(error)));
}

void session_fail(struct transport_session *s, int error, const char *fmt, ...)
{
	bool first;
	va_list ap;

	pthread_mutex_lock(&s->lock);
	first = s->error == 0;
	if (first) {
		s->error = -ERRNO_VALUE(error ?: EIO);
		va_start(ap, fmt);
		if (vasprintf(&s->error_message, fmt, ap) < 0)
			s->error_message = NULL;
		va_end(ap);
	}
	session_wake_all(s);
	pthread_mutex_unlock(&s->lock);
	if (!first)
		return;
	log_debug("transport session with %s failed: %s", s->peer, strna(s->error_message));
	/* Found here (a corrupt frame, a local failure): tell the peer why before hanging up. */
	if (s->control_started && !error_is_disconnect(error) && s->error_message) {
		json_t *j = json_pack("{s:s,s:s}", "type", "abort", "message", s->error_message);
		if (j)
			(void)control_write(s, j, 500 * USEC_PER_MSEC);
		json_decref(j);
	}
	/* Wake every thread blocked on a connection. */
	transport_conn_shutdown(s->control);
	for (unsigned i = 0; i < s->n_streams; i++)
		transport_conn_shutdown(s->streams[i].conn);
}

int session_new(struct transport_context *ctx, bool is_server, unsigned n_streams,
		struct transport_session **ret)
{
	struct transport_session *s;
	unsigned depth = ctx->settings.queue_depth;
	size_t frame = ctx->settings.frame_size;

	if (n_streams == 0 || n_streams > TRANSPORT_MAX_STREAMS)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->ctx = ctx;
	s->is_server = is_server;
	s->n_streams = n_streams;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	pthread_cond_init(&s->space_cond, NULL);
	pthread_mutex_init(&s->control_send_lock, NULL);
	s->streams = calloc(n_streams, sizeof(*s->streams));
	s->cq = calloc(CONTROL_QUEUE, sizeof(*s->cq));
	if (!s->streams || !s->cq)
		goto oom;
	for (unsigned i = 0; i < n_streams; i++) {
		struct stream *st = &s->streams[i];

		st->s = s;
		st->index = i;
		pthread_cond_init(&st->send_cond, NULL);
		pthread_cond_init(&st->recv_cond, NULL);
		pthread_cond_init(&st->recv_space_cond, NULL);
		st->sq = calloc(depth, sizeof(*st->sq));
		st->rq = calloc(depth, sizeof(*st->rq));
		st->wire_out = malloc(transport_wire_bound(frame));
		st->wire_in = malloc(transport_wire_bound(frame));
		if (!st->sq || !st->rq || !st->wire_out || !st->wire_in ||
		    transport_sealer_new_stream(&st->sealer) < 0 ||
		    transport_opener_new(&st->opener) < 0)
			goto oom;
	}
	*ret = s;
	return 0;
oom:
	transport_session_free(s);
	return -ENOMEM;
}

/* ---- sending ------------------------------------------------------------------------- */

static int write_frame(struct stream *st, uint8_t type, const void *raw, size_t len)
{
	struct transport_session *s = st->s;
	uint8_t hdr[TRANSPORT_FRAME_HEADER_SIZE];
	struct transport_frame f = {.type = type, .stream = st->index, .seq = st->send_seq};
	uint64_t cns = 0, t0;
	const void *wire = NULL;
	int level = 0, r;

	if (type == TRANSPORT_FRAME_DATA || type == TRANSPORT_FRAME_PAGES)
		level = transport_adapt_next_level(s->adapt);
	r = transport_seal_ref(st->sealer, level, raw, len, st->wire_out, &f, &cns, &wire);
	if (r < 0)
		return r;
	if (type == TRANSPORT_FRAME_DATA || type == TRANSPORT_FRAME_PAGES)
		transport_adapt_record_frame(s->adapt, st->index, level, len, f.wire_len, cns);
	transport_frame_header_encode(&f, hdr);
	struct iovec iov[2] = {{hdr, sizeof(hdr)}, {(void *)wire, f.wire_len}};
	t0 = mono_ns();
	r = transport_conn_sendv(st->conn, iov, f.wire_len ? 2 : 1, s->ctx->settings.stall_timeout);
	if (r < 0)
		return r;
	if (f.wire_len)
		transport_adapt_record_write(s->adapt, f.wire_len + sizeof(hdr), mono_ns() - t0);
	st->send_seq++;
	pthread_mutex_lock(&s->lock);
	if (type == TRANSPORT_FRAME_DATA || type == TRANSPORT_FRAME_PAGES) {
		st->sent_digest = transport_digest_fold(st->sent_digest, f.checksum, len);
		st->data_sent += len;
	}
	st->raw_sent += len;
	st->frames_sent++;
	if (f.flags & TRANSPORT_FRAME_ZERO)
		st->zero_frames++;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

static void send_item_done(struct send_item *item)
{
	if (!item->borrowed)
		free(item->data);
	else if (item->release)
		item->release(item->opaque);
}

static void *send_thread(void *arg)
{
	struct stream *st = arg;
	struct transport_session *s = st->s;
	unsigned depth = s->ctx->settings.queue_depth;

	for (;;) {
		struct send_item item;
		int r;

		pthread_mutex_lock(&s->lock);
		while (st->sq_len == 0 && !s->error && !s->stopping)
			pthread_cond_wait(&st->send_cond, &s->lock);
		if (s->error || st->sq_len == 0) {
			pthread_mutex_unlock(&s->lock);
			break;
		}
		item = st->sq[st->sq_head];
		st->sending = true;
		pthread_mutex_unlock(&s->lock);

		r = write_frame(st, item.type, item.data, item.len);
		send_item_done(&item);

		pthread_mutex_lock(&s->lock);
		st->sq_head = (st->sq_head + 1) % depth;
		st->sq_len--;
		st->sending = false;
		pthread_cond_broadcast(&s->space_cond);
		pthread_mutex_unlock(&s->lock);
		if (r < 0) {
			if (error_is_disconnect(r))
				session_fail_peer_closed(s, r, "sending on", st->index);
			else
				session_fail(s, r, "sending on stream %u to %s: %s", st->index,
					     s->peer, strerror(-r));
			break;
		}
		if (item.type == TRANSPORT_FRAME_END)
			break;
	}
	return NULL;
}

static int enqueue(struct transport_session *s, uint32_t stream, uint8_t type, const void *buf,
		   size_t len, bool copy_data, void (*release)(void *), void *opaque)
{
	unsigned depth = s->ctx->settings.queue_depth;
	struct stream *st;
	uint8_t *copy = NULL;
	int r;

	if (len > s->ctx->settings.frame_size)
		return -EMSGSIZE;
	if (stream != TRANSPORT_ANY_STREAM && stream >= s->n_streams)
		return -EINVAL;
	if (len > 0 && copy_data) {
		copy = malloc(len);
		if (!copy)
			return -ENOMEM;
		memcpy(copy, buf, len);
	}
	pthread_mutex_lock(&s->lock);
	for (;;) {
		if (s->error) {
			r = s->error;
			pthread_mutex_unlock(&s->lock);
			free(copy);
			if (!copy_data && release)
				release(opaque);
			return r;
		}
		if (stream == TRANSPORT_ANY_STREAM) {
			/* The least busy stream, scanning from a rotating start. */
			unsigned best = UINT32_MAX;
			for (unsigned k = 0; k < s->n_streams; k++) {
				unsigned i = (s->next_stream + k) % s->n_streams;
				if (s->streams[i].sq_len < depth &&
				    (best == UINT32_MAX ||
				     s->streams[i].sq_len < s->streams[best].sq_len))
					best = i;
			}
			if (best != UINT32_MAX) {
				st = &s->streams[best];
				s->next_stream = (best + 1) % s->n_streams;
				break;
			}
		} else if (s->streams[stream].sq_len < depth) {
			st = &s->streams[stream];
			break;
		}
		pthread_cond_wait(&s->space_cond, &s->lock);
	}
	st->sq[(st->sq_head + st->sq_len) % depth] = (struct send_item){
		.type = type,
		.len = len,
		.data = copy_data ? copy : (uint8_t *)buf,
		.borrowed = !copy_data,
		.release = release,
		.opaque = opaque,
	};
	st->sq_len++;
	pthread_cond_signal(&st->send_cond);
	pthread_mutex_unlock(&s->lock);
	return (int)st->index;
}

int transport_session_send(struct transport_session *s, uint32_t stream, const void *buf,
			   size_t len)
{
	return enqueue(s, stream, TRANSPORT_FRAME_DATA, buf, len, true, NULL, NULL);
}

int transport_session_send_borrowed(struct transport_session *s, uint32_t stream, const void *buf,
				    size_t len, void (*release)(void *opaque), void *opaque)
{
	return enqueue(s, stream, TRANSPORT_FRAME_DATA, buf, len, false, release, opaque);
}

int transport_session_end_stream(struct transport_session *s, uint32_t stream)
{
	if (stream >= s->n_streams)
		return -EINVAL;
	return enqueue(s, stream, TRANSPORT_FRAME_END, NULL, 0, true, NULL, NULL);
}

int transport_session_finish(struct transport_session *s)
{
	int r = 0;

	for (unsigned i = 0; i < s->n_streams && r >= 0; i++)
		r = enqueue(s, i, TRANSPORT_FRAME_END, NULL, 0, true, NULL, NULL);
	if (r < 0)
		return r;
	pthread_mutex_lock(&s->lock);
	for (;;) {
		bool drained = true;
		for (unsigned i = 0; i < s->n_streams; i++)
			drained = drained && s->streams[i].sq_len == 0 && !s->streams[i].sending;
		if (s->error || drained)
			break;
		pthread_cond_wait(&s->space_cond, &s->lock);
	}
	r = s->error;
	pthread_mutex_unlock(&s->lock);
	return r;
}

/* ---- receiving ----------------------------------------------------------------------- */

void transport_buf_free(struct transport_buf *b)
{
	if (!b)
		return;
	free(b->data);
	free(b);
}

/* Reads one frame; header wait is unbounded (streams may idle), the payload is not. */
static int read_frame(struct stream *st, struct transport_buf **ret)
{
	struct transport_session *s = st->s;
	uint8_t hdr[TRANSPORT_FRAME_HEADER_SIZE];
	struct transport_frame f;
	struct transport_buf *b;
	const char *reason = NULL;
	bool raw_direct;
	int r;

	r = transport_conn_recv_full(st->conn, hdr, sizeof(hdr), USEC_INFINITY);
	if (r < 0)
		return r;
	r = transport_frame_header_decode(hdr, st->index, st->recv_seq, s->ctx->settings.frame_size,
					  &f, &reason);
	if (r < 0) {
		session_fail(s, -EBADMSG, "stream %u from %s: corrupt frame: %s", st->index,
			     s->peer, strna(reason));
		return -EBADMSG;
	}
	b = calloc(1, sizeof(*b));
	if (!b || (f.raw_len && !(b->data = malloc(f.raw_len)))) {
		free(b);
		return -ENOMEM;
	}
	b->stream = st->index;
	b->type = f.type;
	b->len = f.raw_len;
	b->checksum = f.checksum;
	/* An uncompressed payload goes straight into the buffer handed up: one copy less. */
	raw_direct = !(f.flags & (TRANSPORT_FRAME_COMPRESSED | TRANSPORT_FRAME_ZERO));
	r = transport_conn_recv_full(st->conn, raw_direct ? b->data : st->wire_in, f.wire_len,
				     s->ctx->settings.stall_timeout);
	if (r < 0) {
		transport_buf_free(b);
		return r;
	}
	if (raw_direct)
		r = hash_xxh3(b->data, f.raw_len) == f.checksum ? 0 : -EBADMSG;
	else
		r = transport_open(st->opener, &f, st->wire_in, b->data);
	if (r < 0) {
		transport_buf_free(b);
		session_fail(s, -EBADMSG,
			     "stream %u from %s: frame %llu fails its checksum: data corrupted in "
			     "transit",
			     st->index, s->peer, (unsigned long long)f.seq);
		return -EBADMSG;
	}
	st->recv_seq++;
	*ret = b;
	return 0;
}

static void *recv_thread(void *arg)
{
	struct stream *st = arg;
	struct transport_session *s = st->s;
	unsigned depth = s->ctx->settings.queue_depth;

	for (;;) {
		struct transport_buf *b = NULL;
		int r = read_frame(st, &b);

		if (r < 0) {
			if (error_is_disconnect(r))
				session_fail_peer_closed(s, r, "receiving on", st->index);
			else
				session_fail(s, r, "receiving on stream %u from %s: %s", st->index,
					     s->peer, strerror(-r));
			break;
		}
		if (b->type == TRANSPORT_FRAME_ERROR) {
			session_fail(s, ECONNABORTED, "%s aborted: %.*s", s->peer, (int)b->len,
				     (char *)b->data);
			transport_buf_free(b);
			break;
		}
		pthread_mutex_lock(&s->lock);
		if (b->type == TRANSPORT_FRAME_END) {
			st->recv_ended = true;
			pthread_cond_broadcast(&st->recv_cond);
			pthread_mutex_unlock(&s->lock);
			transport_buf_free(b);
			break;
		}
		while (st->rq_len >= depth && !s->error)
			pthread_cond_wait(&st->recv_space_cond, &s->lock);
		if (s->error) {
			pthread_mutex_unlock(&s->lock);
			transport_buf_free(b);
			break;
		}
		st->rq[(st->rq_head + st->rq_len) % depth] = b;
		st->rq_len++;
		st->raw_received += b->len;
		st->frames_received++;
		pthread_cond_signal(&st->recv_cond);
		pthread_mutex_unlock(&s->lock);
	}
	return NULL;
}

static struct timespec abs_deadline(usec_t timeout)
{
	struct timespec ts;
	usec_t t = MIN(timeout, 365ULL * 24 * 3600 * USEC_PER_SEC);

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += (time_t)(t / USEC_PER_SEC);
	ts.tv_nsec += (long)(t % USEC_PER_SEC) * 1000;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

int transport_session_recv(struct transport_session *s, uint32_t stream, usec_t timeout,
			   struct transport_buf **ret)
{
	unsigned depth = s->ctx->settings.queue_depth;
	struct timespec deadline = abs_deadline(timeout);
	struct stream *st;
	int r = 0;

	if (stream >= s->n_streams)
		return -EINVAL;
	st = &s->streams[stream];
	pthread_mutex_lock(&s->lock);
	while (st->rq_len == 0 && !st->recv_ended && !s->error && r == 0)
		r = pthread_cond_timedwait(&st->recv_cond, &s->lock, &deadline);
	if (st->rq_len > 0) {
		*ret = st->rq[st->rq_head];
		st->rq_head = (st->rq_head + 1) % depth;
		st->rq_len--;
		pthread_cond_signal(&st->recv_space_cond);
		r = 0;
	} else if (st->recv_ended) {
		r = -EPIPE;
	} else if (s->error) {
		r = s->error;
	} else {
		r = -ETIMEDOUT;
	}
	pthread_mutex_unlock(&s->lock);
	return r;
}

/* ---- control ------------------------------------------------------------------------- */

static int control_write(struct transport_session *s, json_t *msg, usec_t timeout)
{
	_cleanup_free_ char *text = json_dumps(msg, JSON_COMPACT);
	uint8_t hdr[TRANSPORT_FRAME_HEADER_SIZE];
	struct transport_frame f = {.type = TRANSPORT_FRAME_CONTROL,
				    .stream = TRANSPORT_CONTROL_STREAM};
	uint64_t ns;
	size_t len;
	int r;

	if (!text)
		return -ENOMEM;
	len = strlen(text);
	if (len > TRANSPORT_MSG_MAX)
		return -EMSGSIZE;
	pthread_mutex_lock(&s->control_send_lock);
	f.seq = s->control_send_seq;
	/* Small: never compressed, always checksummed. */
	r = transport_seal(s->control_sealer, TRANSPORT_LEVEL_OFF, text, len, s->control_out, &f,
			   &ns);
	if (r >= 0) {
		struct iovec iov[2] = {{hdr, sizeof(hdr)}, {s->control_out, f.wire_len}};
		transport_frame_header_encode(&f, hdr);
		r = transport_conn_sendv(s->control, iov, f.wire_len ? 2 : 1, timeout);
		if (r >= 0)
			s->control_send_seq++;
	}
	pthread_mutex_unlock(&s->control_send_lock);
	return r;
}

static int control_read(struct transport_session *s, usec_t timeout, json_t **ret)
{
	uint8_t hdr[TRANSPORT_FRAME_HEADER_SIZE];
	struct transport_frame f;
	const char *reason = NULL;
	json_t *j;
	int r;

	r = transport_conn_recv_full(s->control, hdr, sizeof(hdr), timeout);
	if (r < 0)
		return r;
	r = transport_frame_header_decode(hdr, TRANSPORT_CONTROL_STREAM, s->control_recv_seq,
					  TRANSPORT_MSG_MAX, &f, &reason);
	if (r < 0 || f.type != TRANSPORT_FRAME_CONTROL) {
		session_fail(s, -EBADMSG, "control connection from %s: corrupt frame: %s", s->peer,
			     reason ?: "unexpected frame type");
		return -EBADMSG;
	}
	r = transport_conn_recv_full(s->control, s->control_in, f.wire_len,
				     s->ctx->settings.stall_timeout);
	if (r < 0)
		return r;
	_cleanup_free_ char *raw = malloc(f.raw_len + 1);
	if (!raw)
		return -ENOMEM;
	r = transport_open(s->control_opener, &f, s->control_in, raw);
	if (r < 0) {
		session_fail(s, -EBADMSG, "control frame from %s fails its checksum", s->peer);
		return -EBADMSG;
	}
	s->control_recv_seq++;
	j = json_loadb(raw, f.raw_len, 0, NULL);
	if (!json_is_object(j)) {
		json_decref(j);
		session_fail(s, -EBADMSG, "control message from %s is not a JSON object", s->peer);
		return -EBADMSG;
	}
	*ret = j;
	return 0;
}

/* Reads control messages; heartbeats only prove the peer alive. Silence for stall_timeout
 * (a vanished host, a cut link) ends the session. */
static void *control_thread(void *arg)
{
	struct transport_session *s = arg;

	for (;;) {
		json_t *j = NULL;
		const char *type = NULL;
		int r = control_read(s, s->ctx->settings.stall_timeout, &j);

		if (r < 0) {
			if (r == -ETIMEDOUT)
				session_fail(s, r,
					     "%s sent nothing for %.1fs: peer gone or link down",
					     s->peer,
					     (double)s->ctx->settings.stall_timeout / USEC_PER_SEC);
			else
				session_fail(s, r, "control connection to %s: %s", s->peer,
					     strerror(-r));
			break;
		}
		(void)json_get_string(j, "type", &type);
		if (type && streq(type, "heartbeat")) {
			json_decref(j);
			continue;
		}
		if (type && streq(type, "abort")) {
			const char *m = NULL;
			(void)json_get_string(j, "message", &m);
			session_fail(s, ECONNABORTED, "%s reported: %s", s->peer, strna(m));
			json_decref(j);
			break;
		}
		pthread_mutex_lock(&s->lock);
		while (s->cq_len >= CONTROL_QUEUE && !s->error)
			pthread_cond_wait(&s->cond, &s->lock);
		if (s->error) {
			pthread_mutex_unlock(&s->lock);
			json_decref(j);
			break;
		}
		s->cq[(s->cq_head + s->cq_len) % CONTROL_QUEUE] = j;
		s->cq_len++;
		pthread_cond_broadcast(&s->cond);
		pthread_mutex_unlock(&s->lock);
	}
	return NULL;
}

static void *heartbeat_thread(void *arg)
{
	struct transport_session *s = arg;
	usec_t interval = s->ctx->settings.stall_timeout / HEARTBEAT_DIVISOR;
	json_t *hb = json_pack("{s:s}", "type", "heartbeat");

	pthread_mutex_lock(&s->lock);
	while (!s->error && !s->stopping && hb) {
		struct timespec deadline = abs_deadline(interval);
		int r = pthread_cond_timedwait(&s->cond, &s->lock, &deadline);

		if (r != ETIMEDOUT || s->error || s->stopping)
			continue;
		pthread_mutex_unlock(&s->lock);
		r = control_write(s, hb, s->ctx->settings.stall_timeout);
		pthread_mutex_lock(&s->lock);
		if (r < 0 && !s->error) {
			pthread_mutex_unlock(&s->lock);
			session_fail(s, r, "control connection to %s: %s", s->peer, strerror(-r));
			pthread_mutex_lock(&s->lock);
		}
	}
	pthread_mutex_unlock(&s->lock);
	json_decref(hb);
	return NULL;
}

int transport_session_send_control(struct transport_session *s, json_t *msg)
{
	int r = transport_session_error(s, NULL);

	if (r < 0)
		return r;
	r = control_write(s, msg, s->ctx->settings.stall_timeout);
	if (r < 0)
		session_fail(s, r, "control connection to %s: %s", s->peer, strerror(-r));
	return r;
}

int transport_session_recv_control(struct transport_session *s, usec_t timeout, json_t **ret)
{
	struct timespec deadline = abs_deadline(timeout);
	int r = 0;

	pthread_mutex_lock(&s->lock);
	while (s->cq_len == 0 && !s->error && r == 0)
		r = pthread_cond_timedwait(&s->cond, &s->lock, &deadline);
	if (s->cq_len > 0) {
		*ret = s->cq[s->cq_head];
		s->cq_head = (s->cq_head + 1) % CONTROL_QUEUE;
		s->cq_len--;
		pthread_cond_broadcast(&s->cond);
		r = 0;
	} else {
		r = s->error ?: -ETIMEDOUT;
	}
	pthread_mutex_unlock(&s->lock);
	return r;
}

/* ---- lifecycle ----------------------------------------------------------------------- */

int session_start(struct transport_session *s)
{
	int r;

	s->control_out = malloc(transport_wire_bound(TRANSPORT_MSG_MAX));
	s->control_in = malloc(transport_wire_bound(TRANSPORT_MSG_MAX));
	if (!s->control_out || !s->control_in || transport_sealer_new(&s->control_sealer) < 0 ||
	    transport_opener_new(&s->control_opener) < 0)
		return -ENOMEM;
	for (unsigned i = 0; i < s->n_streams; i++) {
		struct stream *st = &s->streams[i];

		r = -pthread_create(&st->send_thread, NULL, send_thread, st);
		if (r == 0) {
			r = -pthread_create(&st->recv_thread, NULL, recv_thread, st);
			if (r < 0) {
				session_fail(s, r, "cannot start threads");
				pthread_join(st->send_thread, NULL);
			}
		}
		if (r < 0) {
			session_fail(s, r, "cannot start threads");
			return r;
		}
		st->threads_started = true;
	}
	r = -pthread_create(&s->control_thread, NULL, control_thread, s);
	if (r == 0) {
		r = -pthread_create(&s->heartbeat_thread, NULL, heartbeat_thread, s);
		if (r < 0) {
			session_fail(s, r, "cannot start threads");
			pthread_join(s->control_thread, NULL);
		}
	}
	if (r < 0) {
		session_fail(s, r, "cannot start threads");
		return r;
	}
	s->control_started = true;
	return 0;
}

void transport_session_abort(struct transport_session *s, int error, const char *message)
{
	json_t *j = json_pack("{s:s,s:s}", "type", "abort", "message", message ?: "aborted");

	if (j && s->control_started && transport_session_error(s, NULL) == 0)
		(void)control_write(s, j, USEC_PER_SEC);
	json_decref(j);
	session_fail(s, error ?: ECONNABORTED, "aborted: %s", message ?: "no reason given");
}

int transport_session_error(struct transport_session *s, const char **ret_message)
{
	int r;

	pthread_mutex_lock(&s->lock);
	r = s->error;
	if (ret_message)
		*ret_message = s->error_message;
	pthread_mutex_unlock(&s->lock);
	return r;
}

void transport_session_get_stats(struct transport_session *s, struct transport_stats *ret)
{
	struct transport_adapt_stats a = {0};
	struct transport_stats st = {0};

	if (s->adapt)
		transport_adapt_get_stats(s->adapt, &a);
	pthread_mutex_lock(&s->lock);
	for (unsigned i = 0; i < s->n_streams; i++) {
		struct stream *x = &s->streams[i];
		st.raw_bytes_sent += x->raw_sent;
		st.raw_bytes_received += x->raw_received;
		st.frames_sent += x->frames_sent;
		st.frames_received += x->frames_received;
		st.zero_frames_sent += x->zero_frames;
		if (x->conn) {
			st.wire_bytes_sent += x->conn->bytes_sent;
			st.wire_bytes_received += x->conn->bytes_received;
		}
	}
	pthread_mutex_unlock(&s->lock);
	st.level = a.level;
	st.link_bytes_per_sec = a.link_bytes_per_sec;
	*ret = st;
}

uint64_t transport_digest_fold(uint64_t digest, uint64_t checksum, uint64_t len)
{
	uint8_t rec[16];

	for (unsigned i = 0; i < 8; i++) {
		rec[i] = (uint8_t)(checksum >> (8 * i));
		rec[8 + i] = (uint8_t)(len >> (8 * i));
	}
	return XXH3_64bits_withSeed(rec, sizeof(rec), digest);
}

int transport_session_stream_sent(struct transport_session *s, uint32_t stream, uint64_t *ret_bytes,
				  uint64_t *ret_digest)
{
	if (stream >= s->n_streams)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	*ret_bytes = s->streams[stream].data_sent;
	*ret_digest = s->streams[stream].sent_digest;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

const char *transport_session_peer(struct transport_session *s)
{
	return s->peer;
}

const char *transport_session_purpose(struct transport_session *s)
{
	return s->purpose;
}

json_t *transport_session_args(struct transport_session *s)
{
	return s->args;
}

unsigned transport_session_n_streams(struct transport_session *s)
{
	return s->n_streams;
}

bool transport_session_encrypted(struct transport_session *s)
{
	return s->encrypt;
}

void transport_session_note_receiver_busy(struct transport_session *s, uint64_t blocked_ns)
{
	if (s->adapt)
		transport_adapt_record_receiver(s->adapt, blocked_ns);
}

const char *transport_session_transport(struct transport_session *s)
{
	return s->rdma ? "rdma" : "tcp";
}

const char *transport_session_note(struct transport_session *s)
{
	return s->note;
}

void transport_session_free(struct transport_session *s)
{
	unsigned depth;

	if (!s)
		return;
	depth = s->ctx->settings.queue_depth;
	pthread_mutex_lock(&s->lock);
	s->stopping = true;
	session_wake_all(s);
	pthread_mutex_unlock(&s->lock);
	if (transport_session_error(s, NULL) == 0)
		session_fail(s, ECANCELED, "session closed");
	if (s->control_started) {
		pthread_join(s->control_thread, NULL);
		pthread_join(s->heartbeat_thread, NULL);
	}
	for (unsigned i = 0; s->streams && i < s->n_streams; i++) {
		struct stream *st = &s->streams[i];

		if (st->threads_started) {
			pthread_join(st->send_thread, NULL);
			pthread_join(st->recv_thread, NULL);
		}
		for (unsigned k = 0; st->sq && k < st->sq_len; k++)
			send_item_done(&st->sq[(st->sq_head + k) % depth]);
		for (unsigned k = 0; st->rq && k < st->rq_len; k++)
			transport_buf_free(st->rq[(st->rq_head + k) % depth]);
		free(st->sq);
		free(st->rq);
		free(st->wire_out);
		free(st->wire_in);
		transport_sealer_free(st->sealer);
		transport_opener_free(st->opener);
		transport_conn_free(st->conn);
		pthread_cond_destroy(&st->send_cond);
		pthread_cond_destroy(&st->recv_cond);
		pthread_cond_destroy(&st->recv_space_cond);
	}
	for (unsigned k = 0; s->cq && k < s->cq_len; k++)
		json_decref(s->cq[(s->cq_head + k) % CONTROL_QUEUE]);
	free(s->cq);
	free(s->streams);
	transport_conn_free(s->control);
	transport_sealer_free(s->control_sealer);
	transport_opener_free(s->control_opener);
	free(s->control_out);
	free(s->control_in);
	transport_adapt_free(s->adapt);
	json_decref(s->args);
	free(s->note);
	free(s->error_message);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
	pthread_cond_destroy(&s->space_cond);
	pthread_mutex_destroy(&s->control_send_lock);
	explicit_bzero(s->key, sizeof(s->key));
	free(s);
}
