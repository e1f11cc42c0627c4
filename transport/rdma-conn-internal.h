/* The RDMA connection object shared by its data path (rdma.c) and its setup (rdma-cm.c). */
#pragma once

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>
#include <pthread.h>
#include <stdatomic.h>

#include "transport/rdma-internal.h"

struct rdma_conn {
	struct transport_conn conn;

	struct rdma_event_channel *channel; /* this connection's own */
	struct rdma_cm_id *id;
	struct ibv_pd *pd;
	struct ibv_comp_channel *comp;
	struct ibv_cq *cq; /* send and receive completions */
	bool qp_created;

	uint32_t n_buffers;   /* data slots each direction (+ TRANSPORT_RDMA_CTRL_SLOTS) */
	uint32_t buffer_size; /* our slot size */
	size_t max_payload;   /* per message, for the smaller of the two sides' slots */
	uint8_t *send_pool, *recv_pool;
	struct ibv_mr *send_mr, *recv_mr;

	uint32_t *free_send; /* stack of free data send slots */
	uint32_t n_free_send;
	bool ctrl_send_busy; /* send slot n_buffers (control) is posted */
	uint32_t sends_in_flight;

	struct transport_rdma_credits credits;
	struct transport_rdma_rx_queue rx;
	bool cq_armed;
	bool established;
	int error; /* sticky, the first one */

	/* One sender and one receiver thread may use the connection at once: everything above
	 * is under lock; one caller at a time polls the fds (polling), the other waits on cond. */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool sync_init;
	bool polling;

	int wake_fd; /* eventfd written by shutdown() */
	atomic_bool cancelled;
	atomic_bool disconnected;
};

extern const struct transport_conn_ops transport_rdma_conn_ops;

/* Absolute CLOCK_MONOTONIC deadline for a relative timeout (USEC_INFINITY stays infinite). */
usec_t transport_rdma_deadline(usec_t timeout);
/* Milliseconds left for poll(): -1 for none, 0 once passed. */
int transport_rdma_poll_ms(usec_t deadline);
/* Library-created fds: non-blocking and close-on-exec. */
int transport_rdma_fd_setup(int fd);
/* Posts every receive slot (before connecting or accepting: the peer's first credits). */
int transport_rdma_conn_post_recvs(struct rdma_conn *c);
/* rdma_disconnect() once (any thread). */
void transport_rdma_conn_disconnect(struct rdma_conn *c);
/* Releases everything in reverse order of creation; accepts a half-built connection. */
void transport_rdma_conn_destroy(struct rdma_conn *c);
