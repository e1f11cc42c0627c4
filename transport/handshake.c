/* Session setup: the client's connect, the server's listener and handshake threads, and the
 * binding of data connections to their session (TLS, or a key proof for plain ones). */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/common.h"
#include "transport/rdma-internal.h"
#include "transport/session-internal.h"
#include "transport/tcp-internal.h"

#define PROTOCOL_VERSION 1

/* ---- messages ------------------------------------------------------------------------ */

int transport_msg_send(struct transport_conn *c, json_t *msg, usec_t timeout)
{
	_cleanup_free_ char *text = json_dumps(msg, JSON_COMPACT);
	uint8_t len[4];
	size_t n;

	if (!text)
		return -ENOMEM;
	n = strlen(text);
	if (n > TRANSPORT_MSG_MAX)
		return -EMSGSIZE;
	len[0] = (uint8_t)n;
	len[1] = (uint8_t)(n >> 8);
	len[2] = (uint8_t)(n >> 16);
	len[3] = (uint8_t)(n >> 24);
	struct iovec iov[2] = {{len, 4}, {text, n}};
	return transport_conn_sendv(c, iov, 2, timeout);
}

int transport_msg_recv(struct transport_conn *c, usec_t timeout, json_t **ret)
{
	_cleanup_free_ char *text = NULL;
	uint8_t len[4];
	size_t n;
	json_t *j;
	int r;

	r = transport_conn_recv_full(c, len, 4, timeout);
	if (r < 0)
		return r;
	n = len[0] | (size_t)len[1] << 8 | (size_t)len[2] << 16 | (size_t)len[3] << 24;
	if (n == 0 || n > TRANSPORT_MSG_MAX)
		return -EBADMSG;
	text = malloc(n);
	if (!text)
		return -ENOMEM;
	r = transport_conn_recv_full(c, text, n, timeout);
	if (r < 0)
		return r;
	j = json_loadb(text, n, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(j)) {
		json_decref(j);
		return -EBADMSG;
	}
	*ret = j;
	return 0;
}

void transport_hex(const uint8_t *b, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
}

int transport_unhex(const char *s, uint8_t *out, size_t n)
{
	if (!s || strlen(s) != 2 * n)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -EINVAL;
		out[i] = (uint8_t)v;
	}
	return 0;
}

/* The proof a plain data connection gives: HMAC(session key, id || stream || nonce). */
int transport_data_mac(const struct transport_session *s, uint32_t stream, const uint8_t nonce[16],
		       uint8_t out[32])
{
	uint8_t msg[TRANSPORT_SESSION_ID_SIZE + 4 + 16];

	memcpy(msg, s->id, TRANSPORT_SESSION_ID_SIZE);
	memcpy(msg + TRANSPORT_SESSION_ID_SIZE, &stream, 4);
	memcpy(msg + TRANSPORT_SESSION_ID_SIZE + 4, nonce, 16);
	return transport_hmac_sha256(s->key, sizeof(s->key), msg, sizeof(msg), out);
}

int transport_session_export_key(struct transport_session *s)
{
	return transport_tls_export_key(s->control, EXPORTER_LABEL, s->id, sizeof(s->id), s->key,
					sizeof(s->key));
}

/* ---- context ------------------------------------------------------------------------- */

int transport_context_new(const struct transport_settings *settings, struct transport_context **ret,
			  char **ret_error)
{
	struct transport_context *ctx = calloc(1, sizeof(*ctx));
	int r;

	if (!ctx)
		return -ENOMEM;
	ctx->settings = *settings;
	if (!ctx->settings.handshake_timeout)
		ctx->settings.handshake_timeout = 5 * USEC_PER_SEC;
	if (!ctx->settings.stall_timeout)
		ctx->settings.stall_timeout = 10 * USEC_PER_SEC;
	if (!ctx->settings.frame_size)
		ctx->settings.frame_size = 1024 * 1024;
	ctx->settings.frame_size = MIN(ctx->settings.frame_size, (size_t)TRANSPORT_FRAME_MAX_RAW);
	if (!ctx->settings.queue_depth)
		ctx->settings.queue_depth = 4;
	if (!ctx->settings.max_handshakes)
		ctx->settings.max_handshakes = 32;
	pthread_mutex_init(&ctx->lock, NULL);
	r = transport_tls_new(settings->ca_file, settings->cert_file, settings->key_file, &ctx->tls,
			      ret_error);
	if (r < 0) {
		pthread_mutex_destroy(&ctx->lock);
		free(ctx);
		return r;
	}
	*ret = ctx;
	return 0;
}

struct transport_context *transport_context_free(struct transport_context *ctx)
{
	if (!ctx)
		return NULL;
	transport_tls_free(ctx->tls);
	pthread_mutex_destroy(&ctx->lock);
	free(ctx);
	return NULL;
}

const char *transport_context_own_name(struct transport_context *ctx)
{
	return transport_tls_own_name(ctx->tls);
}

static int make_adapt(struct transport_session *s, bool compress_auto, int level)
{
	return transport_adapt_new(compress_auto ? TRANSPORT_ADAPT_AUTO : TRANSPORT_ADAPT_FIXED,
				   level, s->n_streams, &s->adapt);
}

/* ---- client -------------------------------------------------------------------------- */

static void set_sndbuf(int fd, int sndbuf)
{
	if (sndbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)) < 0)
		log_debug_errno(errno, "transport: SO_SNDBUF %d: %m", sndbuf);
}

static int connect_tls(struct transport_context *ctx, const char *peer_name,
		       const struct sockaddr *addr, socklen_t len, int sndbuf,
		       struct transport_conn **ret, char **ret_error)
{
	usec_t t = ctx->settings.handshake_timeout;
	char a[64];
	int fd, r;

	r = transport_tcp_connect(addr, len, t, &fd);
	if (r < 0) {
		if (asprintf(ret_error, "cannot connect to %s at %s: %s", peer_name,
			     transport_format_address(addr, len, a, sizeof(a)), strerror(-r)) < 0)
			*ret_error = NULL;
		return r;
	}
	set_sndbuf(fd, sndbuf);
	return transport_tls_handshake(ctx->tls, fd, false, peer_name, NULL, NULL, t, ret,
				       ret_error);
}

static int connect_data(struct transport_session *s, const struct sockaddr *addr,
			socklen_t addr_len, uint32_t stream, char **ret_error)
{
	struct transport_context *ctx = s->ctx;
	usec_t t = ctx->settings.handshake_timeout;
	_cleanup_json_ json_t *hello = NULL, *reply = NULL;
	struct transport_conn *c = NULL;
	char id[2 * TRANSPORT_SESSION_ID_SIZE + 1];
	const char *type = NULL;
	int r;

	transport_hex(s->id, sizeof(s->id), id);
	if (s->encrypt) {
		r = connect_tls(ctx, s->peer, addr, addr_len, s->sndbuf, &c, ret_error);
		if (r < 0)
			return r;
		hello = json_pack("{s:s,s:s,s:i}", "type", "data", "session", id, "stream",
				  (int)stream);
	} else {
		uint8_t nonce[16], mac[32];
		char nonce_hex[33], mac_hex[65];
		int fd;

		if (s->rdma) {
			r = transport_rdma_connect(addr, addr_len, t, &c);
			if (r < 0) {
				if (asprintf(ret_error, "RDMA data stream %u to %s: %s", stream,
					     s->peer, strerror(-r)) < 0)
					*ret_error = NULL;
				return r;
			}
		} else {
			r = transport_tcp_connect(addr, addr_len, t, &fd);
			if (r < 0)
				return r;
			set_sndbuf(fd, s->sndbuf);
			r = transport_conn_tcp_new(fd, &c);
			if (r < 0)
				return r;
		}
		if (getrandom(nonce, sizeof(nonce), 0) != sizeof(nonce) ||
		    transport_data_mac(s, stream, nonce, mac) < 0) {
			transport_conn_free(c);
			return -EIO;
		}
		transport_hex(nonce, sizeof(nonce), nonce_hex);
		transport_hex(mac, sizeof(mac), mac_hex);
		r = transport_conn_send(c, PLAIN_PREFACE, PLAIN_PREFACE_LEN, t);
		if (r < 0) {
			transport_conn_free(c);
			return r;
		}
		hello = json_pack("{s:s,s:s,s:i,s:s,s:s}", "type", "data", "session", id, "stream",
				  (int)stream, "nonce", nonce_hex, "mac", mac_hex);
	}
	if (!hello) {
		transport_conn_free(c);
		return -ENOMEM;
	}
	r = transport_msg_send(c, hello, t);
	if (r >= 0)
		r = transport_msg_recv(c, t, &reply);
	if (r >= 0 && (json_get_string(reply, "type", &type) < 0 || !streq(type, "ok")))
		r = -EPROTO;
	if (r < 0) {
		transport_conn_free(c);
		if (asprintf(ret_error, "%s did not accept data stream %u: %s", s->peer, stream,
			     strerror(-r)) < 0)
			*ret_error = NULL;
		return r;
	}
	strscpy(c->peer_name, s->peer, sizeof(c->peer_name));
	s->streams[stream].conn = c;
	return 0;
}

_printf_(2, 3) static void set_note(struct transport_session *s, const char *fmt, ...)
{
	va_list ap;

	free(s->note);
	va_start(ap, fmt);
	if (vasprintf(&s->note, fmt, ap) < 0)
		s->note = NULL;
	va_end(ap);
}

/* RDMA carries data streams only unencrypted (verbs have no TLS) and only with a device here;
 * the peer says in its accept whether it has one. */
static int choose_rdma(struct transport_session *s, enum transport_kind kind, char **ret_error)
{
	_cleanup_free_ char *reason = NULL;
	int r;

	s->rdma = false;
	if (kind == TRANSPORT_KIND_TCP)
		return 0;
	if (s->encrypt) {
		if (kind == TRANSPORT_KIND_RDMA) {
			if (asprintf(ret_error,
				     "RDMA data streams cannot be encrypted: set encrypt = no for "
				     "%s "
				     "to use RDMA (authentication stays)",
				     s->peer) < 0)
				*ret_error = NULL;
			return -EPROTONOSUPPORT;
		}
		set_note(s, "auto: TCP, the link to %s is encrypted and RDMA streams cannot be",
			 s->peer);
		return 0;
	}
	r = transport_rdma_available(&reason);
	if (r < 0)
		return r;
	if (r == 0) {
		if (kind == TRANSPORT_KIND_RDMA) {
			if (asprintf(ret_error, "RDMA requested, but this host has none: %s",
				     strna(reason)) < 0)
				*ret_error = NULL;
			return -EPROTONOSUPPORT;
		}
		set_note(s, "auto: TCP, this host has no RDMA (%s)", strna(reason));
		return 0;
	}
	s->rdma = true;
	set_note(s, "RDMA: %s", strna(reason));
	return 0;
}

int transport_session_connect(struct transport_context *ctx, const char *peer_name,
			      const struct sockaddr *addr, socklen_t addr_len,
			      const struct transport_session_params *p,
			      struct transport_session **ret, char **ret_error)
{
	struct transport_session *s = NULL;
	_cleanup_json_ json_t *hello = NULL, *reply = NULL;
	usec_t t = ctx->settings.handshake_timeout;
	const char *type = NULL, *id = NULL, *msg = NULL;
	int r;

	*ret_error = NULL;
	r = session_new(ctx, false, p->n_streams, &s);
	if (r < 0)
		return r;
	strscpy(s->peer, peer_name, sizeof(s->peer));
	strscpy(s->purpose, p->purpose ?: "", sizeof(s->purpose));
	s->encrypt = p->encrypt;
	s->sndbuf = p->sndbuf;
	s->args = p->args ? json_incref(p->args) : NULL;
	r = make_adapt(s, p->compress_auto, p->compress_level);
	if (r < 0)
		goto fail;
	r = choose_rdma(s, p->kind, ret_error);
	if (r < 0)
		goto fail;
	r = connect_tls(ctx, peer_name, addr, addr_len, 0, &s->control, ret_error);
	if (r < 0)
		goto fail;
	hello = json_pack("{s:s,s:i,s:s,s:i,s:b,s:s,s:O?}", "type", "session", "version",
			  PROTOCOL_VERSION, "purpose", s->purpose, "streams", (int)s->n_streams,
			  "encrypt", s->encrypt, "data", s->rdma ? "rdma" : "tcp", "args", s->args);
	if (!hello) {
		r = -ENOMEM;
		goto fail;
	}
	r = transport_msg_send(s->control, hello, t);
	if (r >= 0)
		r = transport_msg_recv(s->control, t, &reply);
	if (r < 0) {
		if (asprintf(ret_error, "%s: session request failed: %s", peer_name, strerror(-r)) <
		    0)
			*ret_error = NULL;
		goto fail;
	}
	(void)json_get_string(reply, "type", &type);
	if (!type || !streq(type, "accept") || json_get_string(reply, "session", &id) < 0 ||
	    transport_unhex(id, s->id, sizeof(s->id)) < 0) {
		(void)json_get_string(reply, "message", &msg);
		r = -ECONNREFUSED;
		if (asprintf(ret_error, "%s refused the session: %s", peer_name,
			     msg ?: "malformed reply") < 0)
			*ret_error = NULL;
		goto fail;
	}
	r = transport_session_export_key(s);
	if (r < 0)
		goto fail;
	if (s->rdma) {
		bool peer_rdma = false;
		const char *why = NULL;

		(void)json_get_bool(reply, "rdma", &peer_rdma);
		(void)json_get_string(reply, "rdma_note", &why);
		if (!peer_rdma && p->kind == TRANSPORT_KIND_RDMA) {
			r = -EPROTONOSUPPORT;
			if (asprintf(ret_error, "RDMA requested, but %s has none: %s", peer_name,
				     why ?: "no RDMA listener") < 0)
				*ret_error = NULL;
			goto fail;
		}
		if (!peer_rdma) {
			s->rdma = false;
			set_note(s, "auto: TCP, %s has no RDMA (%s)", peer_name,
				 why ?: "no RDMA listener");
		}
	}
	for (unsigned i = 0; i < s->n_streams; i++) {
		r = connect_data(s, addr, addr_len, i, ret_error);
		if (r < 0)
			goto fail;
	}
	r = session_start(s);
	if (r < 0)
		goto fail;
	*ret = s;
	return 0;
fail:
	if (!*ret_error && asprintf(ret_error, "session with %s: %s", peer_name, strerror(-r)) < 0)
		*ret_error = NULL;
	transport_session_free(s);
	return r;
}
