/* An in-process fake of the libibverbs and librdmacm (fake-rdma-cm.c) calls the RDMA backend
 * makes, so its real code runs here without a device. Definitions in the test executable take
 * precedence over the shared libraries' (symbol interposition); the inline verbs (post_send,
 * poll_cq, …) go through the fake context's ops table.
 *
 * It is strict where hardware would be: a SEND that finds no posted receive is an RNR error
 * (counted: the flow control must keep it at 0), a SEND larger than the receive buffer is a
 * length error, scatter entries must lie in a registered MR, CQs have the size asked for, a CQ
 * cannot be destroyed with unacked events. It emulates IB's padding of private data (56 bytes
 * on connect, 196 on accept). It is not a model of timing, ordering across QPs, or of real
 * devices' limits. One global lock; a wire thread delivers SENDs in order after random
 * short delays. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fake-rdma.h"

pthread_mutex_t fake_lock = PTHREAD_MUTEX_INITIALIZER;
enum fake_devices fake_device_mode = FAKE_DEVICES_ONE;
struct fake_qp *fake_qps;
int fake_live;
static struct ibv_device device = {.name = "fake0"};
static struct fake_mr *mrs;
unsigned fake_violations;
static unsigned rnr, corrupt_after;
static bool corrupt_armed;
static uint32_t next_key = 1;

void fake_rdma_set_devices(enum fake_devices d)
{
	fake_device_mode = d;
}

void fake_rdma_corrupt_send(unsigned after)
{
	pthread_mutex_lock(&fake_lock);
	corrupt_after = after;
	corrupt_armed = true;
	pthread_mutex_unlock(&fake_lock);
}

unsigned fake_rdma_rnr_count(void)
{
	return rnr;
}

unsigned fake_rdma_live_objects(void)
{
	return (unsigned)__atomic_load_n(&fake_live, __ATOMIC_SEQ_CST);
}

unsigned fake_rdma_violations(void)
{
	return fake_violations;
}

/* ---- completion queues ------------------------------------------------------------------- */

static void cq_push(struct fake_cq *cq, uint64_t wr_id, enum ibv_wc_status status,
		    enum ibv_wc_opcode opcode, uint32_t byte_len)
{
	struct fake_comp *comp = (struct fake_comp *)cq->cq.channel;

	if (cq->n == cq->cq.cqe) {
		fake_violations++; /* a CQ overrun: hardware would raise an async error */
		return;
	}
	cq->wc[(cq->head + cq->n) % cq->cq.cqe] = (struct ibv_wc){
		.wr_id = wr_id, .status = status, .opcode = opcode, .byte_len = byte_len};
	cq->n++;
	if (cq->armed && comp) {
		cq->armed = false;
		(void)!write(comp->wfd, "e", 1);
	}
}

static int fake_poll_cq(struct ibv_cq *ibcq, int num, struct ibv_wc *wc)
{
	struct fake_cq *cq = (struct fake_cq *)ibcq;
	int k = 0;

	pthread_mutex_lock(&fake_lock);
	for (; k < num && cq->n > 0; k++) {
		wc[k] = cq->wc[cq->head];
		cq->head = (cq->head + 1) % cq->cq.cqe;
		cq->n--;
	}
	pthread_mutex_unlock(&fake_lock);
	return k;
}

static int fake_req_notify_cq(struct ibv_cq *ibcq, int solicited_only)
{
	pthread_mutex_lock(&fake_lock);
	((struct fake_cq *)ibcq)->armed = true; /* fires for the next entry, not present ones */
	pthread_mutex_unlock(&fake_lock);
	return 0;
}

/* ---- queue pairs -------------------------------------------------------------------------- */

static bool in_mr(uint64_t addr, uint32_t length, uint32_t lkey)
{
	for (struct fake_mr *m = mrs; m; m = m->next)
		if (m->mr.lkey == lkey && addr >= (uintptr_t)m->mr.addr &&
		    addr + length <= (uintptr_t)m->mr.addr + m->mr.length)
			return true;
	return false;
}

/* The QP moves to the error state: its posted receives complete as flushed. */
void fake_qp_error(struct fake_qp *qp)
{
	if (qp->error)
		return;
	qp->error = true;
	for (; qp->rq_n > 0; qp->rq_n--) {
		cq_push((struct fake_cq *)qp->qp.recv_cq, qp->rq[qp->rq_head].wr_id,
			IBV_WC_WR_FLUSH_ERR, IBV_WC_RECV, 0);
		qp->rq_head = (qp->rq_head + 1) % qp->max_recv;
	}
}

static struct fake_qp *peer_qp(struct fake_qp *qp)
{
	struct fake_id *p = qp->id ? qp->id->peer : NULL;

	return p && p->id.qp ? (struct fake_qp *)p->id.qp : NULL;
}

static int fake_post_recv(struct ibv_qp *ibqp, struct ibv_recv_wr *wr, struct ibv_recv_wr **bad)
{
	struct fake_qp *qp = (struct fake_qp *)ibqp;
	int r = 0;

	pthread_mutex_lock(&fake_lock);
	for (; wr; wr = wr->next) {
		if (wr->num_sge != 1 ||
		    !in_mr(wr->sg_list[0].addr, wr->sg_list[0].length, wr->sg_list[0].lkey)) {
			r = EINVAL;
			break;
		}
		if (qp->error) {
			cq_push((struct fake_cq *)qp->qp.recv_cq, wr->wr_id, IBV_WC_WR_FLUSH_ERR,
				IBV_WC_RECV, 0);
			continue;
		}
		if (qp->rq_n == qp->max_recv) {
			r = ENOMEM;
			break;
		}
		qp->rq[(qp->rq_head + qp->rq_n) % qp->max_recv] = (struct fake_recv){
			.wr_id = wr->wr_id,
			.addr = wr->sg_list[0].addr,
			.length = wr->sg_list[0].length,
			.lkey = wr->sg_list[0].lkey,
		};
		qp->rq_n++;
	}
	if (r)
		*bad = wr;
	pthread_mutex_unlock(&fake_lock);
	return r;
}

/* A SEND on the wire: delivered by the wire thread, in order, after a random short delay
 * (the sender's buffer is read then, as a DMA would; it must not be reused before the send
 * completion). */
struct fake_send {
	struct fake_qp *qp;
	uint64_t wr_id, addr, seq;
	uint32_t length;
	bool signaled;
	struct fake_send *next;
};

static struct fake_send *wire_head, *wire_tail;
static pthread_cond_t wire_cond = PTHREAD_COND_INITIALIZER;
static pthread_once_t wire_once = PTHREAD_ONCE_INIT;
static uint64_t wire_seq;

static void deliver(const struct fake_send *s)
{
	struct fake_qp *qp = s->qp, *peer = peer_qp(qp);
	struct fake_cq *scq = (struct fake_cq *)qp->qp.send_cq;
	struct fake_recv rv;

	qp->sq_n--;
	if (qp->error) {
		cq_push(scq, s->wr_id, IBV_WC_WR_FLUSH_ERR, IBV_WC_SEND, 0);
		return;
	}
	if (!peer || peer->error || qp->link_down || !qp->id->connected) {
		/* Nobody acks: the transport retries run out. */
		cq_push(scq, s->wr_id, IBV_WC_RETRY_EXC_ERR, IBV_WC_SEND, 0);
		fake_qp_error(qp);
		return;
	}
	if (peer->rq_n == 0) {
		rnr++;
		cq_push(scq, s->wr_id, IBV_WC_RNR_RETRY_EXC_ERR, IBV_WC_SEND, 0);
		fake_qp_error(qp);
		return;
	}
	rv = peer->rq[peer->rq_head];
	peer->rq_head = (peer->rq_head + 1) % peer->max_recv;
	peer->rq_n--;
	if (s->length > rv.length) {
		cq_push((struct fake_cq *)peer->qp.recv_cq, rv.wr_id, IBV_WC_LOC_LEN_ERR,
			IBV_WC_RECV, 0);
		fake_qp_error(peer);
		cq_push(scq, s->wr_id, IBV_WC_REM_INV_REQ_ERR, IBV_WC_SEND, 0);
		fake_qp_error(qp);
		return;
	}
	memcpy((void *)(uintptr_t)rv.addr, (const void *)(uintptr_t)s->addr, s->length);
	if (corrupt_armed && corrupt_after-- == 0) {
		corrupt_armed = false;
		((uint8_t *)(uintptr_t)rv.addr)[0] ^= 0x01; /* the magic */
	}
	cq_push((struct fake_cq *)peer->qp.recv_cq, rv.wr_id, IBV_WC_SUCCESS, IBV_WC_RECV,
		s->length);
	if (s->signaled)
		cq_push(scq, s->wr_id, IBV_WC_SUCCESS, IBV_WC_SEND, 0);
}

static void *wire_thread(void *arg)
{
	uint64_t rnd = 0x9E3779B97F4A7C15ULL;

	pthread_mutex_lock(&fake_lock);
	for (;;) {
		struct fake_send *s;
		uint64_t seq;

		while (!wire_head)
			pthread_cond_wait(&wire_cond, &fake_lock);
		s = wire_head;
		seq = s->seq;
		if (test_rand(&rnd) % 4 == 0) {
			/* Latency, with the lock released: the callers race with the wire. */
			pthread_mutex_unlock(&fake_lock);
			usleep((useconds_t)(test_rand(&rnd) % 64));
			pthread_mutex_lock(&fake_lock);
			if (!wire_head || wire_head->seq != seq)
				continue; /* its QP was destroyed meanwhile */
		}
		wire_head = s->next;
		if (!wire_head)
			wire_tail = NULL;
		deliver(s);
		free(s);
	}
	return NULL;
}

static void wire_start(void)
{
	pthread_t t;

	if (pthread_create(&t, NULL, wire_thread, NULL) != 0 || pthread_detach(t) != 0)
		abort();
}

/* Drops what qp still has on the wire (it is being destroyed). Called locked. */
static void wire_forget(struct fake_qp *qp)
{
	struct fake_send **p = &wire_head;

	wire_tail = NULL;
	while (*p) {
		if ((*p)->qp == qp) {
			struct fake_send *s = *p;
			*p = s->next;
			free(s);
		} else {
			wire_tail = *p;
			p = &(*p)->next;
		}
	}
}

static int fake_post_send(struct ibv_qp *ibqp, struct ibv_send_wr *wr, struct ibv_send_wr **bad)
{
	struct fake_qp *qp = (struct fake_qp *)ibqp;
	int r = 0;

	pthread_once(&wire_once, wire_start);
	pthread_mutex_lock(&fake_lock);
	for (; wr; wr = wr->next) {
		struct fake_send *s;

		if (wr->opcode != IBV_WR_SEND || wr->num_sge != 1 ||
		    !in_mr(wr->sg_list[0].addr, wr->sg_list[0].length, wr->sg_list[0].lkey)) {
			r = EINVAL;
			break;
		}
		if (qp->sq_n == qp->max_send) {
			r = ENOMEM; /* more than max_send_wr outstanding */
			break;
		}
		s = calloc(1, sizeof(*s));
		if (!s)
			abort();
		*s = (struct fake_send){
			.qp = qp,
			.wr_id = wr->wr_id,
			.addr = wr->sg_list[0].addr,
			.length = wr->sg_list[0].length,
			.signaled = wr->send_flags & IBV_SEND_SIGNALED,
			.seq = ++wire_seq,
		};
		qp->sq_n++;
		if (wire_tail)
			wire_tail->next = s;
		else
			wire_head = s;
		wire_tail = s;
		pthread_cond_signal(&wire_cond);
	}
	if (r)
		*bad = wr;
	pthread_mutex_unlock(&fake_lock);
	return r;
}

void fake_rdma_kill_all(void)
{
	pthread_mutex_lock(&fake_lock);
	for (struct fake_qp *q = fake_qps; q; q = q->next)
		q->link_down = true;
	pthread_mutex_unlock(&fake_lock);
}

/* ---- devices ------------------------------------------------------------------------------ */

static int fake_query_port(struct ibv_context *ctx, uint8_t port, struct ibv_port_attr *attr)
{
	memset(attr, 0, sizeof(*attr));
	attr->state = fake_device_mode == FAKE_DEVICES_PORT_DOWN ? IBV_PORT_DOWN : IBV_PORT_ACTIVE;
	attr->link_layer = IBV_LINK_LAYER_ETHERNET;
	return 0;
}

/* Not an extended context (abi_compat NULL): ibv_query_port() takes the compat path. */
struct ibv_context fake_context = {
	.device = &device,
	.ops = {.poll_cq = fake_poll_cq,
		.req_notify_cq = fake_req_notify_cq,
		.post_send = fake_post_send,
		.post_recv = fake_post_recv},
};

struct ibv_device **ibv_get_device_list(int *num_devices)
{
	struct ibv_device **l;

	if (fake_device_mode == FAKE_DEVICES_NONE_LOADED) {
		errno = ENOSYS;
		return NULL;
	}
	l = calloc(2, sizeof(*l));
	if (!l)
		return NULL;
	*num_devices = fake_device_mode == FAKE_DEVICES_ZERO ? 0 : 1;
	if (*num_devices)
		l[0] = &device;
	return l;
}

void ibv_free_device_list(struct ibv_device **list)
{
	free(list);
}

const char *ibv_get_device_name(struct ibv_device *dev)
{
	return dev->name;
}

struct ibv_context *ibv_open_device(struct ibv_device *dev)
{
	if (fake_device_mode == FAKE_DEVICES_NO_ACCESS) {
		errno = EACCES;
		return NULL;
	}
	return &fake_context;
}

int ibv_close_device(struct ibv_context *ctx)
{
	return 0;
}

int ibv_query_device(struct ibv_context *ctx, struct ibv_device_attr *attr)
{
	memset(attr, 0, sizeof(*attr));
	attr->phys_port_cnt = 1;
	return 0;
}

int(ibv_query_port)(struct ibv_context *ctx, uint8_t port, struct _compat_ibv_port_attr *attr)
{
	return fake_query_port(ctx, port, (struct ibv_port_attr *)attr);
}

const char *ibv_wc_status_str(enum ibv_wc_status status)
{
	return status == IBV_WC_SUCCESS ? "success" : "error";
}

/* ---- protection domains, memory, completion channels and queues -------------------------- */

struct ibv_pd *ibv_alloc_pd(struct ibv_context *ctx)
{
	struct ibv_pd *pd = calloc(1, sizeof(*pd));

	if (!pd)
		return NULL;
	pd->context = ctx;
	LIVE(1);
	return pd;
}

int ibv_dealloc_pd(struct ibv_pd *pd)
{
	pthread_mutex_lock(&fake_lock);
	for (struct fake_mr *m = mrs; m; m = m->next)
		if (m->mr.pd == pd)
			fake_violations++; /* EBUSY on hardware */
	for (struct fake_qp *q = fake_qps; q; q = q->next)
		if (q->qp.pd == pd)
			fake_violations++;
	LIVE(-1);
	pthread_mutex_unlock(&fake_lock);
	free(pd);
	return 0;
}

struct ibv_mr *(ibv_reg_mr)(struct ibv_pd *pd, void *addr, size_t length, int access)
{
	struct fake_mr *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	pthread_mutex_lock(&fake_lock);
	m->mr = (struct ibv_mr){.context = pd->context, .pd = pd, .addr = addr, .length = length};
	m->mr.lkey = m->mr.rkey = next_key++;
	m->next = mrs;
	mrs = m;
	LIVE(1);
	pthread_mutex_unlock(&fake_lock);
	return &m->mr;
}

int ibv_dereg_mr(struct ibv_mr *mr)
{
	pthread_mutex_lock(&fake_lock);
	for (struct fake_mr **p = &mrs; *p; p = &(*p)->next)
		if (&(*p)->mr == mr) {
			struct fake_mr *m = *p;
			*p = m->next;
			free(m);
			LIVE(-1);
			break;
		}
	pthread_mutex_unlock(&fake_lock);
	return 0;
}

struct ibv_comp_channel *ibv_create_comp_channel(struct ibv_context *ctx)
{
	struct fake_comp *c = calloc(1, sizeof(*c));
	int fds[2];

	if (!c || pipe2(fds, O_CLOEXEC) < 0) {
		free(c);
		return NULL;
	}
	c->ch = (struct ibv_comp_channel){.context = ctx, .fd = fds[0]};
	c->wfd = fds[1];
	LIVE(1);
	return &c->ch;
}

int ibv_destroy_comp_channel(struct ibv_comp_channel *ch)
{
	struct fake_comp *c = (struct fake_comp *)ch;

	pthread_mutex_lock(&fake_lock);
	if (c->cq)
		fake_violations++; /* EBUSY: a CQ still uses it */
	LIVE(-1);
	pthread_mutex_unlock(&fake_lock);
	close(c->ch.fd);
	close(c->wfd);
	free(c);
	return 0;
}

struct ibv_cq *ibv_create_cq(struct ibv_context *ctx, int cqe, void *cq_context,
			     struct ibv_comp_channel *channel, int comp_vector)
{
	struct fake_cq *cq = calloc(1, sizeof(*cq));

	if (!cq || cqe <= 0 || !(cq->wc = calloc((size_t)cqe, sizeof(*cq->wc)))) {
		free(cq);
		return NULL;
	}
	cq->cq.context = ctx;
	cq->cq.channel = channel;
	cq->cq.cq_context = cq_context;
	cq->cq.cqe = cqe;
	pthread_mutex_lock(&fake_lock);
	if (channel)
		((struct fake_comp *)channel)->cq = cq;
	LIVE(1);
	pthread_mutex_unlock(&fake_lock);
	return &cq->cq;
}

int ibv_destroy_cq(struct ibv_cq *ibcq)
{
	struct fake_cq *cq = (struct fake_cq *)ibcq;

	pthread_mutex_lock(&fake_lock);
	if (cq->unacked)
		fake_violations++; /* libibverbs would wait forever for the acks */
	for (struct fake_qp *q = fake_qps; q; q = q->next)
		if (q->qp.send_cq == ibcq || q->qp.recv_cq == ibcq)
			fake_violations++;
	if (cq->cq.channel)
		((struct fake_comp *)cq->cq.channel)->cq = NULL;
	LIVE(-1);
	pthread_mutex_unlock(&fake_lock);
	free(cq->wc);
	free(cq);
	return 0;
}

int ibv_get_cq_event(struct ibv_comp_channel *ch, struct ibv_cq **ret_cq, void **ret_ctx)
{
	struct fake_comp *c = (struct fake_comp *)ch;
	char b;

	if (read(c->ch.fd, &b, 1) != 1)
		return -1;
	pthread_mutex_lock(&fake_lock);
	if (!c->cq) {
		pthread_mutex_unlock(&fake_lock);
		errno = EINVAL;
		return -1;
	}
	c->cq->unacked++;
	*ret_cq = &c->cq->cq;
	*ret_ctx = c->cq->cq.cq_context;
	pthread_mutex_unlock(&fake_lock);
	return 0;
}

void ibv_ack_cq_events(struct ibv_cq *ibcq, unsigned int n)
{
	struct fake_cq *cq = (struct fake_cq *)ibcq;

	pthread_mutex_lock(&fake_lock);
	if (n > cq->unacked)
		fake_violations++;
	else
		cq->unacked -= n;
	pthread_mutex_unlock(&fake_lock);
}

int rdma_create_qp(struct rdma_cm_id *id, struct ibv_pd *pd, struct ibv_qp_init_attr *attr)
{
	struct fake_qp *qp = calloc(1, sizeof(*qp));

	if (!qp || attr->qp_type != IBV_QPT_RC || attr->cap.max_recv_wr == 0 ||
	    !(qp->rq = calloc(attr->cap.max_recv_wr, sizeof(*qp->rq)))) {
		free(qp);
		errno = EINVAL;
		return -1;
	}
	qp->qp.context = &fake_context;
	qp->qp.pd = pd;
	qp->qp.send_cq = attr->send_cq;
	qp->qp.recv_cq = attr->recv_cq;
	qp->qp.qp_type = IBV_QPT_RC;
	qp->max_recv = attr->cap.max_recv_wr;
	qp->max_send = attr->cap.max_send_wr;
	qp->id = (struct fake_id *)id;
	pthread_mutex_lock(&fake_lock);
	qp->next = fake_qps;
	fake_qps = qp;
	LIVE(1);
	pthread_mutex_unlock(&fake_lock);
	id->qp = &qp->qp;
	return 0;
}

void rdma_destroy_qp(struct rdma_cm_id *id)
{
	struct fake_qp *qp = (struct fake_qp *)id->qp;

	pthread_mutex_lock(&fake_lock);
	for (struct fake_qp **p = &fake_qps; *p; p = &(*p)->next)
		if (*p == qp) {
			*p = qp->next;
			break;
		}
	LIVE(-1);
	id->qp = NULL;
	wire_forget(qp);
	pthread_mutex_unlock(&fake_lock);
	free(qp->rq);
	free(qp);
}
