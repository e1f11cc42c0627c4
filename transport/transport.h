/* The transport module's public header: authenticated, checksummed, compressed byte streams
 * between migrd hosts. A session = one control connection (always TLS 1.3, mutually
 * authenticated) + N data connections (TLS, or plain TCP bound to the session's key when
 * encryption is off for the peer). It knows nothing of what it carries. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <systemd/sd-event.h>

#include "common/util.h"

/* Parses "10.0.0.1", "10.0.0.1:7870", "[fd00::1]:7870", "fd00::1" or "hostB[:port]" (resolved
 * with getaddrinfo, numeric first). default_port applies when none is given. */
int transport_parse_address(const char *s, uint16_t default_port, struct sockaddr_storage *ret,
			    socklen_t *ret_len);
/* "10.0.0.1:7870" / "[fd00::1]:7870" */
char *transport_format_address(const struct sockaddr *sa, socklen_t len, char *buf, size_t size);

/* ---- sessions ------------------------------------------------------------------------ */

#define TRANSPORT_MAX_STREAMS 64
#define TRANSPORT_ANY_STREAM  UINT32_MAX

struct transport_settings {
	const char *ca_file, *cert_file, *key_file;
	usec_t handshake_timeout; /* a connection that has not completed its handshake by then */
	usec_t stall_timeout;	  /* no progress (and no heartbeat) from the peer for this long */
	size_t frame_size;	  /* raw bytes per frame (default 1 MiB) */
	unsigned queue_depth;	  /* frames queued per stream and direction (default 4) */
	unsigned max_handshakes;  /* concurrent incoming handshakes (default 32) */
	/* Server side: whether a certificate name is a cluster host (called from any thread). */
	bool (*is_cluster_host)(void *userdata, const char *name);
	void *userdata;
};

struct transport_context;
/* Loads the certificates; fails with a message naming the file and the problem. */
int transport_context_new(const struct transport_settings *s, struct transport_context **ret,
			  char **ret_error);
struct transport_context *transport_context_free(struct transport_context *ctx);
const char *transport_context_own_name(struct transport_context *ctx);

enum transport_kind {
	TRANSPORT_KIND_TCP,
	TRANSPORT_KIND_RDMA, /* data streams over RDMA, or fail saying why not */
	TRANSPORT_KIND_AUTO, /* RDMA when both ends can and the link is not encrypted, else TCP */
};

struct transport_session_params {
	enum transport_kind kind;
	unsigned n_streams;
	bool encrypt;
	int compress_level; /* with compress_auto false: 0 = off, else a zstd level */
	bool compress_auto;
	const char *purpose; /* what the session is for, e.g. "peer-test" */
	json_t *args;	     /* purpose-specific arguments, may be NULL */
	/* The SO_SNDBUF of the client's TCP data streams; 0: the kernel's autotuning. What the
	 * kernel queues is what must drain once the sender has nothing more (see vms-move.c). */
	int sndbuf;
};

struct transport_session;

/* Client: connects to peer (its certificate must carry peer_name) and opens all streams.
 * Blocks; call it from a worker thread. ret_error says what failed and on which side. */
int transport_session_connect(struct transport_context *ctx, const char *peer_name,
			      const struct sockaddr *addr, socklen_t addr_len,
			      const struct transport_session_params *p,
			      struct transport_session **ret, char **ret_error);

/* Server: called from a handshake thread once a session is complete. It owns s from then on
 * (and must eventually transport_session_free() it). */
typedef void (*transport_session_handler_t)(void *userdata, struct transport_session *s);

struct transport_listener;
int transport_listener_new(struct transport_context *ctx, sd_event *e, const struct sockaddr *addr,
			   socklen_t addr_len, transport_session_handler_t handler, void *userdata,
			   struct transport_listener **ret);
struct transport_listener *transport_listener_free(struct transport_listener *l);
/* For tests and status: handshakes in progress, sessions accepted, connections refused. */
void transport_listener_counters(struct transport_listener *l, unsigned *ret_handshaking,
				 uint64_t *ret_accepted, uint64_t *ret_refused);

const char *transport_session_peer(struct transport_session *s);
const char *transport_session_purpose(struct transport_session *s);
json_t *transport_session_args(struct transport_session *s);
unsigned transport_session_n_streams(struct transport_session *s);
bool transport_session_encrypted(struct transport_session *s);
/* "tcp" or "rdma": what carries the data streams. */
const char *transport_session_transport(struct transport_session *s);
/* Why auto chose what it chose (NULL when nothing needed saying). */
const char *transport_session_note(struct transport_session *s);
/* Sender: the peer's application was blocked for blocked_ns handing on what this session sent
 * (its own flow control reports it, summed over streams). Adaptive compression then tells a
 * receiver that cannot keep up from a slow link, and compresses only for the latter. */
void transport_session_note_receiver_busy(struct transport_session *s, uint64_t blocked_ns);

/* Queues len bytes (copied) as one frame on stream (or the least busy one with
 * TRANSPORT_ANY_STREAM), blocking while the stream's queue is full. Returns the stream used,
 * or the session's error (-ECONNRESET, -ETIMEDOUT, …) once it failed. */
int transport_session_send(struct transport_session *s, uint32_t stream, const void *buf,
			   size_t len);
/* The same without the copy: buf stays the caller's, unchanged, until release(opaque) runs
 * (from a session thread, once the frame is on the wire or the session failed; release may be
 * NULL when buf outlives the session). */
int transport_session_send_borrowed(struct transport_session *s, uint32_t stream, const void *buf,
				    size_t len, void (*release)(void *opaque), void *opaque);
/* Queues END on one stream: the peer's transport_session_recv() on it then returns -EPIPE.
 * Nothing more may be sent on that stream (nor transport_session_finish() called). */
int transport_session_end_stream(struct transport_session *s, uint32_t stream);
/* Sends END on every stream and waits until all queued frames are on the wire. */
int transport_session_finish(struct transport_session *s);

/* End-to-end digests of a stream's data: every frame's checksum (XXH3-64 of its raw payload)
 * and length folded in order, from 0. What the sender folded as it sent equals what the
 * receiver folds over the buffers it hands on (transport_buf.checksum, .len) only when the
 * same bytes went through in the same order. */
uint64_t transport_digest_fold(uint64_t digest, uint64_t checksum, uint64_t len);
/* Sender: the bytes of the data frames on the wire on stream so far, and their digest. */
int transport_session_stream_sent(struct transport_session *s, uint32_t stream, uint64_t *ret_bytes,
				  uint64_t *ret_digest);

struct transport_buf {
	uint32_t stream;
	uint8_t type;
	size_t len;
	uint8_t *data;
	uint64_t checksum; /* XXH3-64 of data, as the sender computed it and this side verified */
};
void transport_buf_free(struct transport_buf *b);
/* The next frame of a stream, in order: 0 and a buffer; -EPIPE once the peer ended the stream
 * cleanly; the session's error otherwise. */
int transport_session_recv(struct transport_session *s, uint32_t stream, usec_t timeout,
			   struct transport_buf **ret);

/* Small JSON messages on the control connection, in order. */
int transport_session_send_control(struct transport_session *s, json_t *msg);
int transport_session_recv_control(struct transport_session *s, usec_t timeout, json_t **ret);

/* Ends the session with an error (told to the peer when possible); wakes every waiter. */
void transport_session_abort(struct transport_session *s, int error, const char *message);
/* The first error and its message (0 and NULL while healthy). */
int transport_session_error(struct transport_session *s, const char **ret_message);

struct transport_stats {
	uint64_t raw_bytes_sent, wire_bytes_sent;
	uint64_t raw_bytes_received, wire_bytes_received;
	uint64_t frames_sent, frames_received, zero_frames_sent;
	int level;		   /* compression level in use (0 = off) */
	double link_bytes_per_sec; /* the adaptive controller's link estimate */
};
void transport_session_get_stats(struct transport_session *s, struct transport_stats *ret);
void transport_session_free(struct transport_session *s);

/* ---- The cluster PKI (pki.c): the CA and host certificates TLS authenticates with --------- */

#define TRANSPORT_PKI_DIR_DEFAULT "/etc/migrd/pki"
#define TRANSPORT_PKI_CA_CERT	  "ca.crt"
#define TRANSPORT_PKI_CA_KEY	  "ca.key"

/* Creates dir (mode 0700, parents as needed) holding the cluster CA: ca.key (0600, EC P-256)
 * and ca.crt (self-signed, valid 10 years, CA:TRUE, keyCertSign). cluster_name (NULL:
 * "migrd") names the CA in its subject. Refuses with -EEXIST when either file exists: a new
 * CA would lock out every host certified by the old one. On failure, *ret_error (when
 * ret_error is not NULL) is a message to free(). */
int transport_pki_ca_init(const char *dir, const char *cluster_name, char **ret_error);

/* Issues a key and certificate for host with the CA in ca_dir: subjectAltName DNS:host,
 * CN=host, valid 2 years (never past the CA), CA:FALSE, extendedKeyUsage serverAuth and
 * clientAuth. Writes out_dir/HOST.key (0600), out_dir/HOST.crt and out_dir/ca.crt, so one
 * directory holds what the host needs. host must be a plain name (letters, digits, '-', '_',
 * '.'; at most 63 bytes): -EINVAL otherwise. Refuses with -EEXIST to replace an existing key
 * or certificate, or a different ca.crt. Messages as for transport_pki_ca_init(). */
int transport_pki_issue(const char *ca_dir, const char *host, const char *out_dir,
			char **ret_error);
