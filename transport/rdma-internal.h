/* The RDMA backend of transport_conn (librdmacm + libibverbs), and the device-independent
 * pieces of its wire protocol (message header, connection info, credits, slicing, reassembly)
 * that rdma-proto.c keeps pure so they can be tested without a device. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "common/cleanup.h"
#include "common/util.h"
#include "transport/conn-internal.h"

/* ---- connections -------------------------------------------------------------------------- */

/* Buffers of one connection: n_buffers receive slots (the peer's credits) and n_buffers send
 * slots, buffer_size bytes each, plus one control slot each way, registered once (so defaults
 * pin 2 x 17 MiB per connection). */
struct transport_rdma_params {
	uint32_t n_buffers;   /* default 16 */
	uint32_t buffer_size; /* default 1 MiB; one message per buffer, header included */
};

#define TRANSPORT_RDMA_N_BUFFERS_DEFAULT   16U
#define TRANSPORT_RDMA_BUFFER_SIZE_DEFAULT (1U << 20)
#define TRANSPORT_RDMA_N_BUFFERS_MIN	   1U
#define TRANSPORT_RDMA_N_BUFFERS_MAX	   1024U
#define TRANSPORT_RDMA_BUFFER_SIZE_MIN	   4096U
#define TRANSPORT_RDMA_BUFFER_SIZE_MAX	   (64U << 20)
#define TRANSPORT_RDMA_POOL_MAX		   (UINT64_C(1) << 30) /* n_buffers x buffer_size */

/* 1 when a usable device exists (ret_reason names it), 0 when not (ret_reason says why, e.g.
 * "no RDMA devices (ibv_get_device_list returned 0 devices)"); -ENOMEM. ret_reason may be
 * NULL; otherwise it is set on 0 and 1 and must be freed. */
int transport_rdma_available(char **ret_reason);

struct transport_rdma_listener;

/* Binds and listens on addr (its own rdma_cm event channel). Errors: -ENODEV without RDMA
 * support, -EADDRINUSE, -EADDRNOTAVAIL (no RDMA device has that address), … */
int transport_rdma_listen(const struct sockaddr *addr, socklen_t len,
			  struct transport_rdma_listener **ret);
/* params NULL (or 0 fields): the defaults; -EINVAL out of the bounds above. They bound what this
 * side accepts: the buffer size used on a connection is the smaller of the two sides'. */
int transport_rdma_listen_with(const struct sockaddr *addr, socklen_t len,
			       const struct transport_rdma_params *params,
			       struct transport_rdma_listener **ret);
struct transport_rdma_listener *transport_rdma_listener_free(struct transport_rdma_listener *l);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct transport_rdma_listener *, transport_rdma_listener_free);
/* Readable (POLLIN) when a connection request waits: for an sd-event I/O source. Non-blocking
 * and close-on-exec; owned by the listener. */
int transport_rdma_listener_fd(struct transport_rdma_listener *l);
/* The bound address (with the port chosen when addr had port 0). */
int transport_rdma_listener_address(struct transport_rdma_listener *l, struct sockaddr_storage *ret,
				    socklen_t *ret_len);
/* Takes the next connection request and completes the connection, both within timeout
 * (relative; USEC_INFINITY for none): a connection with ops name "rdma". Blocks until the
 * peer's ESTABLISHED arrives, so a daemon runs it off its event loop or with a short timeout.
 * -ETIMEDOUT when no request came; -EPROTO for a peer that is not ours (rejected). */
int transport_rdma_accept(struct transport_rdma_listener *l, usec_t timeout,
			  struct transport_conn **ret);
/* Resolves addr and route, connects: -ECONNREFUSED (rejected or nobody listening),
 * -EHOSTUNREACH (no route, or addr not reachable over RDMA), -ECONNRESET, -ETIMEDOUT, -ENODEV
 * (no RDMA support), -EPROTO (the peer is not ours), -EINVAL/-EAFNOSUPPORT (IPv4/IPv6 only).
 *
 * A connection is not authenticated (peer_name stays ""): a session binds it to its TLS
 * control connection as it does plain TCP data connections. One sending and one receiving
 * thread may use it at once. */
int transport_rdma_connect(const struct sockaddr *addr, socklen_t len, usec_t timeout,
			   struct transport_conn **ret);
int transport_rdma_connect_with(const struct sockaddr *addr, socklen_t len,
				const struct transport_rdma_params *params, usec_t timeout,
				struct transport_conn **ret);

/* ---- wire protocol (pure; rdma-proto.c) -------------------------------------------------- */

/* Connection info, exchanged as rdma_cm private data (connect and accept). IB pads private
 * data (to 56 bytes on connect, 196 on accept), so trailing bytes are ignored. */
#define TRANSPORT_RDMA_INFO_MAGIC   0x43445247U /* "GRDC" little-endian */
#define TRANSPORT_RDMA_INFO_VERSION 1
#define TRANSPORT_RDMA_INFO_SIZE    16

struct transport_rdma_info {
	uint32_t n_buffers;   /* data receive slots the sender announces (its peer's credits) */
	uint32_t buffer_size; /* bytes per receive slot */
};

void transport_rdma_info_encode(const struct transport_rdma_info *info,
				uint8_t out[TRANSPORT_RDMA_INFO_SIZE]);
/* -EPROTO (with a reason) for a short blob, wrong magic or version, or values out of the
 * TRANSPORT_RDMA_* bounds. */
int transport_rdma_info_decode(const void *data, size_t len, struct transport_rdma_info *ret,
			       const char **ret_reason);

/* Every SEND starts with this header. */
#define TRANSPORT_RDMA_MSG_MAGIC       0x4d445247U /* "GRDM" little-endian */
#define TRANSPORT_RDMA_MSG_HEADER_SIZE 16

enum transport_rdma_msg_type {
	TRANSPORT_RDMA_MSG_DATA = 1,   /* 1..max payload bytes of the stream */
	TRANSPORT_RDMA_MSG_CREDIT = 2, /* no payload: only returns credits */
};

struct transport_rdma_msg {
	uint8_t type;
	uint16_t acks;	  /* peer CREDIT messages received since our last message */
	uint32_t credits; /* data receive slots reposted since our last message */
	uint32_t len;	  /* payload bytes after the header */
};

void transport_rdma_msg_encode(const struct transport_rdma_msg *m,
			       uint8_t out[TRANSPORT_RDMA_MSG_HEADER_SIZE]);
/* Decodes a received message of byte_len bytes (header included): -EBADMSG with a reason for
 * a short message, wrong magic, unknown type, non-zero reserved bits, a length that is not
 * byte_len minus the header, an empty DATA, a CREDIT with payload or without credits, or a
 * payload over max_payload. */
int transport_rdma_msg_decode(const void *data, size_t byte_len, size_t max_payload,
			      struct transport_rdma_msg *ret, const char **ret_reason);

/* Credit-based flow control. A side may SEND a DATA message only into a data receive slot the
 * peer announced free (send_avail), and a CREDIT message only with the single control token
 * (ctrl_avail): each side posts n_buffers + TRANSPORT_RDMA_CTRL_SLOTS receives, so no SEND
 * ever meets an empty receive queue. Every message carries the slots its sender reposted
 * since its last message (credits) and the CREDIT messages it received (acks, which return
 * the token). A CREDIT message is only sent to return credits (never to ack a CREDIT), so two
 * idle sides never ping-pong; the receiver side counts what the peer may still send and
 * refuses a peer that overruns it. */
#define TRANSPORT_RDMA_CTRL_SLOTS 1U

struct transport_rdma_credits {
	uint32_t own_slots;	    /* our data receive slots */
	uint32_t peer_slots;	    /* the peer's data receive slots */
	uint32_t send_avail;	    /* DATA messages we may send now */
	uint32_t ctrl_avail;	    /* CREDIT messages we may send now */
	uint32_t owed;		    /* our data slots reposted, not yet announced */
	uint32_t acks_owed;	    /* peer CREDIT messages received, not yet acked */
	uint32_t recv_allowed;	    /* DATA messages the peer may send us (as we announced) */
	uint32_t ctrl_recv_allowed; /* CREDIT messages the peer may send us */
	uint32_t threshold;	    /* announce eagerly once this many are owed */
};

void transport_rdma_credits_init(struct transport_rdma_credits *cr, uint32_t own_slots,
				 uint32_t peer_slots);
bool transport_rdma_credits_can_send_data(const struct transport_rdma_credits *cr);
/* Whether to send a CREDIT message now: something is owed, the token is here, and either we
 * are about to wait (the peer may be waiting for exactly these) or the threshold is reached. */
bool transport_rdma_credits_want_update(const struct transport_rdma_credits *cr,
					bool about_to_wait);
/* Takes the credit (or token) for a message of type and fills m->type, credits and acks
 * (len is left to the caller). -EAGAIN when the credit is not there. */
int transport_rdma_credits_take(struct transport_rdma_credits *cr, uint8_t type,
				struct transport_rdma_msg *m);
/* Accounts for a received, decoded message. A CREDIT's slot counts as reposted at once (the
 * caller reposts it before sending anything). -EPROTO when the peer overran what we allowed
 * or returned more than it had. */
int transport_rdma_credits_receive(struct transport_rdma_credits *cr,
				   const struct transport_rdma_msg *m);
/* A data receive slot was drained and reposted. */
void transport_rdma_credits_reposted(struct transport_rdma_credits *cr);

enum transport_rdma_step {
	TRANSPORT_RDMA_STEP_SEND_DATA,
	TRANSPORT_RDMA_STEP_SEND_CREDIT,
	TRANSPORT_RDMA_STEP_WAIT,
};

/* What a blocked caller does next: send DATA when it has some and the credit and a send
 * buffer are there; else return credits if it owes some; else wait for a completion. */
enum transport_rdma_step transport_rdma_next_step(const struct transport_rdma_credits *cr,
						  bool have_data, bool data_buffer_free,
						  bool ctrl_buffer_free);

/* Walks an iovec, copying it out in pieces (one message payload at a time). */
struct transport_rdma_iov_cursor {
	const struct iovec *iov;
	size_t n_iov;
	size_t index;  /* current element */
	size_t offset; /* within it */
	size_t remaining;
};

/* -EINVAL for n_iov < 0, a NULL base with a length, or a total that overflows size_t. */
int transport_rdma_iov_cursor_init(struct transport_rdma_iov_cursor *cur, const struct iovec *iov,
				   int n_iov);
/* Copies up to max bytes to dst and advances; returns the bytes copied. */
size_t transport_rdma_iov_cursor_copy(struct transport_rdma_iov_cursor *cur, void *dst, size_t max);
/* Messages needed for total bytes at max_payload each (0 for 0). */
size_t transport_rdma_msg_count(size_t total, size_t max_payload);

/* Received DATA payloads waiting to be read, in arrival order. */
struct transport_rdma_rx_entry {
	uint32_t slot;
	uint32_t offset; /* of the next unread byte in the slot */
	uint32_t len;	 /* unread bytes */
};

struct transport_rdma_rx_queue {
	struct transport_rdma_rx_entry *entries;
	uint32_t capacity, head, n;
	size_t bytes; /* unread bytes in all entries */
};

int transport_rdma_rx_queue_init(struct transport_rdma_rx_queue *q, uint32_t capacity);
void transport_rdma_rx_queue_done(struct transport_rdma_rx_queue *q);
/* -ENOBUFS when full (a peer past its credits is caught before that). */
int transport_rdma_rx_queue_push(struct transport_rdma_rx_queue *q, uint32_t slot, uint32_t offset,
				 uint32_t len);

/* Called for each slot read to its end, which can then be reposted. */
typedef int (*transport_rdma_release_t)(void *userdata, uint32_t slot);

/* Copies up to want bytes from the queue (slot i's bytes at pool + i * slot_size) to dst,
 * releasing each drained slot in order; *ret_copied says how many bytes were copied, also
 * when release fails (its error is returned). */
int transport_rdma_rx_queue_read(struct transport_rdma_rx_queue *q, const uint8_t *pool,
				 size_t slot_size, void *dst, size_t want,
				 transport_rdma_release_t release, void *userdata,
				 size_t *ret_copied);
