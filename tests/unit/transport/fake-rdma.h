/* The fake RDMA device's shared state (fake-verbs.c: devices, memory, queues; fake-rdma-cm.c:
 * connection management). See fake-verbs.c for what it emulates. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include "test-rdma.h"

#define CONNECT_PDATA 56
#define ACCEPT_PDATA  196

struct fake_event {
	struct rdma_cm_event ev;
	uint8_t pdata[ACCEPT_PDATA];
	struct fake_event *next;
};

struct fake_channel {
	struct rdma_event_channel ch;
	int wfd;
	struct fake_event *head, *tail;
};

struct fake_id {
	struct rdma_cm_id id;
	bool listening, connected, unreachable, disconnect_seen;
	struct fake_id *peer; /* the other end: pending (request) or connected */
	struct fake_id *next_listener;
};

struct fake_mr {
	struct ibv_mr mr;
	struct fake_mr *next;
};

struct fake_comp {
	struct ibv_comp_channel ch;
	int wfd;
	struct fake_cq *cq;
};

struct fake_cq {
	struct ibv_cq cq;
	struct ibv_wc *wc;
	int head, n;
	bool armed;
	unsigned unacked;
};

struct fake_recv {
	uint64_t wr_id;
	uint64_t addr;
	uint32_t length, lkey;
};

struct fake_qp {
	struct ibv_qp qp;
	struct fake_id *id;
	struct fake_recv *rq;
	uint32_t rq_head, rq_n, max_recv, max_send, sq_n;
	bool error, link_down;
	struct fake_qp *next;
};

extern pthread_mutex_t fake_lock; /* one lock for everything */
extern enum fake_devices fake_device_mode;
extern struct ibv_context fake_context;
extern struct fake_qp *fake_qps;
extern int fake_live;
extern unsigned fake_violations; /* see fake_rdma_violations() */
#define LIVE(d) __atomic_add_fetch(&fake_live, (d), __ATOMIC_SEQ_CST)

/* The QP moves to the error state: its posted receives complete as flushed. Called locked. */
void fake_qp_error(struct fake_qp *qp);
