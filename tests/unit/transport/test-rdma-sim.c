/* A model of two RDMA endpoints running the backend's flow-control rules (the pure functions of
 * rdma-proto.c, driven the way rdma.c drives them) over a strict wire: a SEND that finds no
 * posted receive fails the test. A random scheduler interleaves the two sides and lets either
 * pause; the run fails on a deadlock (both blocked, nothing to process), on corrupt data, or
 * when the credit invariants break. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "transport/rdma-internal.h"
#include "test-rdma.h"

#define HDR	    TRANSPORT_RDMA_MSG_HEADER_SIZE
#define K	    TRANSPORT_RDMA_CTRL_SLOTS
#define MAX_SLOTS   64
#define MAX_OPS	    64
#define MAX_STREAM  (1 << 20)
#define WR_RECV	    0x80000000U
#define CQ_CAPACITY (4 * (MAX_SLOTS + 1))
#define STEP_LIMIT  5000000

struct op {
	bool send;
	size_t len;
};

struct end {
	const char *name;
	struct end *peer;
	struct transport_rdma_credits cr;
	uint32_t n, slot_size;
	size_t max_payload;
	uint8_t *send_pool, *recv_pool;
	uint32_t posted[MAX_SLOTS + K], posted_head, n_posted; /* FIFO of posted receive slots */
	uint32_t cq[CQ_CAPACITY], cq_len[CQ_CAPACITY], cq_head, cq_n;
	uint32_t free_send[MAX_SLOTS], n_free_send;
	bool ctrl_busy;
	struct transport_rdma_rx_queue rx;

	uint8_t *tx, *rx_buf; /* this side's outgoing stream, and where the incoming one lands */
	size_t tx_off, rx_off, rx_expected;
	struct op ops[MAX_OPS];
	unsigned n_ops, op;
	size_t op_done; /* bytes of the current op */
	bool blocked;	/* its last step found nothing to do */
	unsigned pause; /* steps it spends outside any call */
	uint64_t data_received, credit_sent;
};

static void cq_push(struct end *e, uint32_t wr, uint32_t len)
{
	uint32_t i = (e->cq_head + e->cq_n) % CQ_CAPACITY;

	assert_true(e->cq_n < CQ_CAPACITY); /* the CQ never overflows */
	e->cq[i] = wr;
	e->cq_len[i] = len;
	e->cq_n++;
}

static void post_recv(struct end *e, uint32_t slot)
{
	assert_true(e->n_posted < e->n + K);
	e->posted[(e->posted_head + e->n_posted) % (e->n + K)] = slot;
	e->n_posted++;
}

/* The wire: the message lands in the peer's oldest posted receive at once. false when there
 * is none (on hardware: an RNR, here a flow-control bug). */
static bool wire_try_send(struct end *e, uint32_t slot, size_t len)
{
	struct end *p = e->peer;
	uint32_t rslot;

	assert_true(len <= p->slot_size);
	if (p->n_posted == 0)
		return false;
	rslot = p->posted[p->posted_head];
	p->posted_head = (p->posted_head + 1) % (p->n + K);
	p->n_posted--;
	memcpy(p->recv_pool + (size_t)rslot * p->slot_size,
	       e->send_pool + (size_t)slot * e->slot_size, len);
	cq_push(p, WR_RECV | rslot, (uint32_t)len);
	cq_push(e, slot, 0);
	return true;
}

static void wire_send(struct end *e, uint32_t slot, size_t len)
{
	assert_true(wire_try_send(e, slot, len));
}

static void drain(struct end *e)
{
	while (e->cq_n > 0) {
		uint32_t wr = e->cq[e->cq_head], len = e->cq_len[e->cq_head];
		struct transport_rdma_msg m;
		uint32_t slot = wr & ~WR_RECV;

		e->cq_head = (e->cq_head + 1) % CQ_CAPACITY;
		e->cq_n--;
		if (!(wr & WR_RECV)) {
			if (slot < e->n)
				e->free_send[e->n_free_send++] = slot;
			else
				e->ctrl_busy = false;
			continue;
		}
		assert_int_equal(
			transport_rdma_msg_decode(e->recv_pool + (size_t)slot * e->slot_size, len,
						  e->max_payload, &m, NULL),
			0);
		assert_int_equal(transport_rdma_credits_receive(&e->cr, &m), 0);
		if (m.type == TRANSPORT_RDMA_MSG_CREDIT) {
			post_recv(e, slot);
			continue;
		}
		e->data_received++;
		assert_int_equal(transport_rdma_rx_queue_push(&e->rx, slot, HDR, m.len), 0);
	}
}

static void send_credit(struct end *e)
{
	struct transport_rdma_msg m;

	assert_int_equal(transport_rdma_credits_take(&e->cr, TRANSPORT_RDMA_MSG_CREDIT, &m), 0);
	m.len = 0;
	transport_rdma_msg_encode(&m, e->send_pool + (size_t)e->n * e->slot_size);
	e->ctrl_busy = true;
	e->credit_sent++;
	wire_send(e, e->n, HDR);
}

static void send_data(struct end *e, struct transport_rdma_iov_cursor *cur)
{
	uint32_t slot = e->free_send[--e->n_free_send];
	uint8_t *p = e->send_pool + (size_t)slot * e->slot_size;
	struct transport_rdma_msg m;

	assert_int_equal(transport_rdma_credits_take(&e->cr, TRANSPORT_RDMA_MSG_DATA, &m), 0);
	m.len = (uint32_t)transport_rdma_iov_cursor_copy(cur, p + HDR, e->max_payload);
	assert_true(m.len > 0);
	transport_rdma_msg_encode(&m, p);
	wire_send(e, slot, HDR + m.len);
}

static int release(void *userdata, uint32_t slot)
{
	struct end *e = userdata;

	post_recv(e, slot);
	transport_rdma_credits_reposted(&e->cr);
	return 0;
}

/* One step of the current call, as rdma.c's sendv/recv_full loops run it. Returns whether it
 * did something. */
static bool step(struct end *e)
{
	struct op *op = &e->ops[e->op];

	drain(e);
	if (op->len == 0) {
		/* sendv and recv_full return at once for zero bytes. */
	} else if (op->send) {
		/* The iovec is rebuilt per step from what is left (sendv keeps a cursor). */
		struct iovec iov = {e->tx + e->tx_off, op->len - e->op_done};
		struct transport_rdma_iov_cursor cur;
		size_t before;

		assert_int_equal(transport_rdma_iov_cursor_init(&cur, &iov, 1), 0);
		switch (transport_rdma_next_step(&e->cr, true, e->n_free_send > 0, !e->ctrl_busy)) {
		case TRANSPORT_RDMA_STEP_SEND_DATA:
			before = cur.remaining;
			send_data(e, &cur);
			e->tx_off += before - cur.remaining;
			e->op_done += before - cur.remaining;
			break;
		case TRANSPORT_RDMA_STEP_SEND_CREDIT:
			send_credit(e);
			break;
		case TRANSPORT_RDMA_STEP_WAIT:
			return false;
		}
	} else {
		size_t k;

		assert_int_equal(transport_rdma_rx_queue_read(&e->rx, e->recv_pool, e->slot_size,
							      e->rx_buf + e->rx_off,
							      op->len - e->op_done, release, e, &k),
				 0);
		e->rx_off += k;
		e->op_done += k;
		if (e->op_done == op->len) {
			if (!e->ctrl_busy && transport_rdma_credits_want_update(&e->cr, false))
				send_credit(e);
		} else if (!e->ctrl_busy && transport_rdma_credits_want_update(&e->cr, true)) {
			send_credit(e);
		} else if (k == 0) {
			return false;
		}
	}
	if (e->op_done == op->len) {
		e->op++;
		e->op_done = 0;
	}
	return true;
}

/* Both directions' credits add up at every step (messages in a CQ are "in flight"). */
static void check_invariants(const struct end *e)
{
	const struct end *p = e->peer;
	uint32_t data_in_cq = 0, credit_in_cq = 0, credits_riding = 0, acks_riding = 0;

	for (uint32_t i = 0; i < p->cq_n; i++) {
		uint32_t j = (p->cq_head + i) % CQ_CAPACITY;
		struct transport_rdma_msg m;

		if (!(p->cq[j] & WR_RECV))
			continue;
		assert_int_equal(
			transport_rdma_msg_decode(p->recv_pool + (size_t)(p->cq[j] & ~WR_RECV) *
									 p->slot_size,
						  p->cq_len[j], p->max_payload, &m, NULL),
			0);
		if (m.type == TRANSPORT_RDMA_MSG_DATA)
			data_in_cq++;
		else
			credit_in_cq++;
	}
	for (uint32_t i = 0; i < e->cq_n; i++) {
		uint32_t j = (e->cq_head + i) % CQ_CAPACITY;
		struct transport_rdma_msg m;

		if (!(e->cq[j] & WR_RECV))
			continue;
		assert_int_equal(
			transport_rdma_msg_decode(e->recv_pool + (size_t)(e->cq[j] & ~WR_RECV) *
									 e->slot_size,
						  e->cq_len[j], e->max_payload, &m, NULL),
			0);
		credits_riding += m.credits;
		acks_riding += m.acks;
	}
	/* e's view of p's data slots + everything in between == p's data slots. */
	assert_int_equal(e->cr.send_avail + data_in_cq + p->rx.n + p->cr.owed + credits_riding,
			 p->n);
	assert_int_equal(e->cr.ctrl_avail + credit_in_cq + p->cr.acks_owed + acks_riding, K);
	/* Hence no SEND can meet an empty receive queue. */
	assert_true(p->n_posted >= e->cr.send_avail + e->cr.ctrl_avail);
}

static void end_init(struct end *e, const char *name, uint32_t n, uint32_t slot_size, size_t stream)
{
	*e = (struct end){.name = name, .n = n, .slot_size = slot_size};
	e->send_pool = malloc((size_t)(n + K) * slot_size);
	e->recv_pool = malloc((size_t)(n + K) * slot_size);
	e->tx = malloc(stream + 1);
	e->rx_buf = malloc(stream + 1);
	assert_non_null(e->send_pool);
	assert_non_null(e->recv_pool);
	assert_non_null(e->tx);
	assert_non_null(e->rx_buf);
	for (uint32_t i = 0; i < n; i++)
		e->free_send[e->n_free_send++] = i;
	for (uint32_t i = 0; i < n + K; i++)
		post_recv(e, i);
	assert_int_equal(transport_rdma_rx_queue_init(&e->rx, n), 0);
}

static void end_done(struct end *e)
{
	free(e->send_pool);
	free(e->recv_pool);
	free(e->tx);
	free(e->rx_buf);
	transport_rdma_rx_queue_done(&e->rx);
}

static void connect_ends(struct end *a, struct end *b)
{
	a->peer = b;
	b->peer = a;
	transport_rdma_credits_init(&a->cr, a->n, b->n);
	transport_rdma_credits_init(&b->cr, b->n, a->n);
	a->max_payload = b->max_payload = MIN(a->slot_size, b->slot_size) - HDR;
}

static void dump(struct end *const ends[2])
{
	for (size_t i = 0; i < 2; i++) {
		const struct end *x = ends[i];
		const struct op *op = x->op < x->n_ops ? &x->ops[x->op] : NULL;

		print_error("%s: op %u/%u (%s %zu, %zu done); credits: send %u ctrl %u owed %u "
			    "acks %u allowed %u/%u; free send %u ctrl busy %d; rx %u posted %u "
			    "cq %u\n",
			    x->name, x->op, x->n_ops, op && op->send ? "send" : "recv",
			    op ? op->len : 0, x->op_done, x->cr.send_avail, x->cr.ctrl_avail,
			    x->cr.owed, x->cr.acks_owed, x->cr.recv_allowed,
			    x->cr.ctrl_recv_allowed, x->n_free_send, x->ctrl_busy, x->rx.n,
			    x->n_posted, x->cq_n);
	}
}

/* Runs both scripts to the end under a random schedule; fails on a deadlock. */
static void run(struct end *a, struct end *b, uint64_t seed, unsigned pause_pct)
{
	struct end *ends[2] = {a, b};
	uint64_t steps = 0;

	for (size_t i = 0; i < 2; i++) {
		size_t out = 0;
		for (unsigned j = 0; j < ends[i]->n_ops; j++)
			if (ends[i]->ops[j].send)
				out += ends[i]->ops[j].len;
		for (size_t j = 0; j < out; j++)
			ends[i]->tx[j] = (uint8_t)test_rand(&seed);
	}
	while (a->op < a->n_ops || b->op < b->n_ops) {
		struct end *e = ends[test_rand(&seed) % 2];

		assert_true(++steps < STEP_LIMIT);
		if (e->op == e->n_ops)
			continue;
		if (e->pause > 0) {
			e->pause--;
			continue;
		}
		e->blocked = !step(e);
		if (test_rand(&seed) % 100 < pause_pct)
			e->pause = (unsigned)(test_rand(&seed) % 20);
		check_invariants(a);
		check_invariants(b);
		/* Deadlock: each side is done or blocked with nothing in its CQ. */
		bool stuck = a->op < a->n_ops || b->op < b->n_ops;
		for (size_t i = 0; i < 2; i++) {
			struct end *x = ends[i];
			if (x->op < x->n_ops && (!x->blocked || x->cq_n > 0 || x->pause > 0))
				stuck = false;
		}
		if (stuck)
			dump(ends);
		assert_false(stuck);
	}
	assert_int_equal(a->rx_off, b->tx_off);
	assert_int_equal(b->rx_off, a->tx_off);
	assert_memory_equal(a->rx_buf, b->tx, a->rx_off);
	assert_memory_equal(b->rx_buf, a->tx, b->rx_off);
	/* No ping-pong: every credit message returns at least one drained data slot. */
	assert_true(a->credit_sent <= a->data_received);
	assert_true(b->credit_sent <= b->data_received);
}

static void add_op(struct end *e, bool send, size_t len)
{
	assert_true(e->n_ops < MAX_OPS);
	e->ops[e->n_ops++] = (struct op){send, len};
}

static const struct {
	uint32_t n_a, size_a, n_b, size_b;
} configs[] = {
	{1, 64, 1, 64},	  {2, 64, 2, 64},  {16, 256, 16, 256}, {1, 4096, 8, 64},
	{8, 64, 1, 4096}, {3, 100, 5, 33}, {64, 40, 2, 1000},
};

void test_sim_one_way(void **state)
{
	uint64_t seed = 7;

	for (size_t c = 0; c < ELEMENTSOF(configs); c++)
		for (unsigned round = 0; round < 20; round++) {
			struct end a, b;
			size_t total = 0;

			end_init(&a, "A", configs[c].n_a, configs[c].size_a, MAX_STREAM);
			end_init(&b, "B", configs[c].n_b, configs[c].size_b, MAX_STREAM);
			connect_ends(&a, &b);
			for (unsigned i = 0; i < 20; i++) {
				size_t len = test_rand(&seed) % 3000;
				add_op(&a, true, len);
				total += len;
			}
			/* The reader asks in its own sizes: tiny, odd, large. */
			while (total > 0) {
				size_t want = 1 + test_rand(&seed) % 4000;
				size_t len = MIN(total, want);
				if (b.n_ops == MAX_OPS - 1)
					len = total;
				add_op(&b, false, len);
				total -= len;
			}
			run(&a, &b, seed + round, round % 2 ? 30 : 0);
			end_done(&a);
			end_done(&b);
		}
}

void test_sim_ping_pong(void **state)
{
	uint64_t seed = 11;

	for (size_t c = 0; c < ELEMENTSOF(configs); c++)
		for (unsigned round = 0; round < 20; round++) {
			struct end a, b;

			end_init(&a, "A", configs[c].n_a, configs[c].size_a, MAX_STREAM);
			end_init(&b, "B", configs[c].n_b, configs[c].size_b, MAX_STREAM);
			connect_ends(&a, &b);
			for (unsigned i = 0; i < MAX_OPS / 2; i++) {
				size_t req = 1 + test_rand(&seed) % 2000;
				size_t resp = 1 + test_rand(&seed) % 2000;
				add_op(&a, true, req);
				add_op(&b, false, req);
				add_op(&b, true, resp);
				add_op(&a, false, resp);
			}
			run(&a, &b, seed + round, round % 2 ? 30 : 0);
			end_done(&a);
			end_done(&b);
		}
}

/* Both send first, then both read: completes whenever each side's data fits in the other's
 * receive slots (as TCP needs it to fit in the socket buffers). */
void test_sim_duplex(void **state)
{
	uint64_t seed = 13;

	for (size_t c = 0; c < ELEMENTSOF(configs); c++)
		for (unsigned round = 0; round < 20; round++) {
			struct end a, b;
			size_t payload = MIN(configs[c].size_a, configs[c].size_b) - HDR;
			size_t fit_b = configs[c].n_b * payload, fit_a = configs[c].n_a * payload;

			end_init(&a, "A", configs[c].n_a, configs[c].size_a, MAX_STREAM);
			end_init(&b, "B", configs[c].n_b, configs[c].size_b, MAX_STREAM);
			connect_ends(&a, &b);
			for (unsigned i = 0; i < MAX_OPS / 2; i++) {
				size_t ab = 1 + test_rand(&seed) % fit_b;
				size_t ba = 1 + test_rand(&seed) % fit_a;
				add_op(&a, true, ab);
				add_op(&b, true, ba);
				add_op(&a, false, ba);
				add_op(&b, false, ab);
			}
			run(&a, &b, seed + round, round % 2 ? 30 : 0);
			end_done(&a);
			end_done(&b);
		}
}

/* The wire check itself works: a sender that ignores its credits is caught. */
void test_sim_overrun_detected(void **state)
{
	struct end a, b;
	struct transport_rdma_credits cr;
	struct transport_rdma_msg m;

	end_init(&a, "A", 2, 64, 64);
	end_init(&b, "B", 2, 64, 64);
	connect_ends(&a, &b);
	/* b posted 2 + 1 receives: a third DATA is refused by the receiver's accounting... */
	transport_rdma_credits_init(&cr, 2, 2);
	m = (struct transport_rdma_msg){.type = TRANSPORT_RDMA_MSG_DATA, .len = 1};
	for (int i = 0; i < 2; i++)
		assert_int_equal(transport_rdma_credits_receive(&cr, &m), 0);
	assert_int_equal(transport_rdma_credits_receive(&cr, &m), -EPROTO);
	/* ...and a fourth SEND has no receive to land in. */
	transport_rdma_msg_encode(&m, a.send_pool);
	for (int i = 0; i < 3; i++)
		assert_true(wire_try_send(&a, 0, HDR + 1));
	assert_false(wire_try_send(&a, 0, HDR + 1));
	end_done(&a);
	end_done(&b);
}
