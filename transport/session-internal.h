/* Session internals shared by session.c (data plane) and handshake.c (connect, listen). */
#pragma once

#include <pthread.h>

#include "transport/compress-internal.h"
#include "transport/conn-internal.h"
#include "transport/tls-internal.h"
#include "transport/transport.h"

#define TRANSPORT_SESSION_ID_SIZE 16
#define TRANSPORT_KEY_SIZE	  32
#define TRANSPORT_MSG_MAX	  (64 * 1024)
#define TRANSPORT_CONTROL_STREAM  UINT32_MAX

struct send_item {
	uint8_t type;
	size_t len;
	uint8_t *data;
	bool borrowed; /* data is the caller's: release, do not free */
	void (*release)(void *opaque);
	void *opaque;
};

struct stream {
	struct transport_session *s;
	uint32_t index;
	struct transport_conn *conn;
	pthread_t send_thread, recv_thread;
	bool threads_started;
	pthread_cond_t send_cond;	/* an item was queued */
	pthread_cond_t recv_cond;	/* a frame arrived, or the stream ended */
	pthread_cond_t recv_space_cond; /* the consumer took a frame */

	struct send_item *sq; /* ring of queue_depth items */
	unsigned sq_head, sq_len;
	bool sending;		   /* the send thread holds an item */
	struct transport_buf **rq; /* ring of queue_depth received frames */
	unsigned rq_head, rq_len;
	bool recv_ended;

	uint64_t send_seq, recv_seq;
	struct transport_sealer *sealer;
	struct transport_opener *opener;
	uint8_t *wire_out, *wire_in;

	uint64_t raw_sent, frames_sent, zero_frames, raw_received, frames_received;
	uint64_t data_sent, sent_digest; /* data frames' bytes, transport_digest_fold() of them */
};

struct transport_context {
	struct transport_settings settings;
	struct transport_tls *tls;
	pthread_mutex_t lock;
	struct transport_session *pending; /* server sessions waiting for their data streams */
};

struct transport_session {
	struct transport_context *ctx;
	bool is_server;
	char peer[64];
	char purpose[64];
	json_t *args;
	uint8_t id[TRANSPORT_SESSION_ID_SIZE];
	uint8_t key[TRANSPORT_KEY_SIZE]; /* binds plain data connections to the control's TLS */
	unsigned n_streams;
	unsigned n_attached;
	bool encrypt;
	int sndbuf; /* the client's data streams: SO_SNDBUF, 0 = autotuned */
	bool rdma;  /* data streams over RDMA */
	char *note;
	struct transport_conn *control;
	struct stream *streams;
	struct transport_adapt *adapt;
	struct transport_session *next_pending;

	pthread_mutex_t lock;
	pthread_cond_t cond;	   /* errors, control messages, peer-closed waits */
	pthread_cond_t space_cond; /* a send queue has room or drained */
	int error;
	char *error_message;
	bool stopping;

	pthread_mutex_t control_send_lock;
	struct transport_sealer *control_sealer;
	struct transport_opener *control_opener;
	uint8_t *control_out, *control_in;
	usec_t control_heard; /* CLOCK_MONOTONIC of the last control frame from the peer */
	pthread_t control_thread, heartbeat_thread;
	bool control_started;
	uint64_t control_send_seq, control_recv_seq;
	json_t **cq; /* ring of received control messages */
	unsigned cq_head, cq_len;
	unsigned next_stream; /* round robin start for TRANSPORT_ANY_STREAM */
};

int session_new(struct transport_context *ctx, bool is_server, unsigned n_streams,
		struct transport_session **ret);
/* Starts the per-stream and control threads once every connection is in place. */
int session_start(struct transport_session *s);
void session_fail(struct transport_session *s, int error, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define PLAIN_PREFACE	  "MGRDDATA"
#define PLAIN_PREFACE_LEN 8
#define EXPORTER_LABEL	  "EXPORTER-migrd-data-streams"

void transport_hex(const uint8_t *b, size_t n, char *out);
int transport_unhex(const char *s, uint8_t *out, size_t n);
/* s->key from the control connection's TLS keying material and the session id. */
int transport_session_export_key(struct transport_session *s);
/* The proof a plain data connection gives: HMAC(session key, id || stream || nonce). */
int transport_data_mac(const struct transport_session *s, uint32_t stream, const uint8_t nonce[16],
		       uint8_t out[32]);

/* Length-prefixed JSON messages used during the handshake. */
int transport_msg_send(struct transport_conn *c, json_t *msg, usec_t timeout);
int transport_msg_recv(struct transport_conn *c, usec_t timeout, json_t **ret);
