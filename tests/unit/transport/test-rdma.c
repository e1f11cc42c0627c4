/* Unit tests of the RDMA backend's device-independent protocol: message and connection-info
 * packing, credit accounting, slicing an iovec into messages and reassembling them, and a
 * simulation of two endpoints over a strict wire (a SEND without a posted receive fails). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "transport/rdma-internal.h"
#include "test-rdma.h"

#define HDR TRANSPORT_RDMA_MSG_HEADER_SIZE

uint64_t test_rand(uint64_t *s)
{
	/* xorshift64*: reproducible streams from a fixed seed. */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545F4914F6CDD1DULL;
}

/* ---- connection info ---------------------------------------------------------------------- */

static void test_info_round_trip(void **state)
{
	struct transport_rdma_info in = {.n_buffers = 16, .buffer_size = 1 << 20}, out;
	uint8_t b[TRANSPORT_RDMA_INFO_SIZE];
	const uint8_t expect[] = {0x47, 0x52, 0x44, 0x43, 1, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0x10, 0};
	const char *reason = NULL;

	transport_rdma_info_encode(&in, b);
	assert_memory_equal(b, expect, sizeof(expect)); /* little-endian, fixed layout */
	assert_int_equal(transport_rdma_info_decode(b, sizeof(b), &out, &reason), 0);
	assert_int_equal(out.n_buffers, 16);
	assert_int_equal(out.buffer_size, 1 << 20);
}

static void test_info_padded(void **state)
{
	/* IB delivers private data padded with zeros (56 bytes on connect, 196 on accept). */
	struct transport_rdma_info in = {.n_buffers = 3, .buffer_size = 8192}, out;
	uint8_t b[196] = {};

	transport_rdma_info_encode(&in, b);
	assert_int_equal(transport_rdma_info_decode(b, 56, &out, NULL), 0);
	assert_int_equal(transport_rdma_info_decode(b, 196, &out, NULL), 0);
	assert_int_equal(out.n_buffers, 3);
	assert_int_equal(out.buffer_size, 8192);
}

static void test_info_bad(void **state)
{
	struct transport_rdma_info in = {.n_buffers = 16, .buffer_size = 1 << 20};
	struct transport_rdma_info out = {.n_buffers = 99, .buffer_size = 99};
	uint8_t b[TRANSPORT_RDMA_INFO_SIZE];
	const char *reason = NULL;
	static const struct {
		struct transport_rdma_info info;
		const char *reason;
	} ranges[] = {
		{{0, 4096}, "peer buffer count out of range"},
		{{TRANSPORT_RDMA_N_BUFFERS_MAX + 1, 4096}, "peer buffer count out of range"},
		{{1, TRANSPORT_RDMA_BUFFER_SIZE_MIN - 1}, "peer buffer size out of range"},
		{{1, TRANSPORT_RDMA_BUFFER_SIZE_MAX + 1}, "peer buffer size out of range"},
	};

	assert_int_equal(transport_rdma_info_decode(NULL, 0, &out, &reason), -EPROTO);
	transport_rdma_info_encode(&in, b);
	assert_int_equal(transport_rdma_info_decode(b, sizeof(b) - 1, &out, &reason), -EPROTO);
	assert_string_equal(reason, "connection info too short");

	b[0] ^= 1;
	assert_int_equal(transport_rdma_info_decode(b, sizeof(b), &out, &reason), -EPROTO);
	assert_string_equal(reason, "not a migrd RDMA peer (bad magic)");
	b[0] ^= 1;
	b[4] = 2;
	assert_int_equal(transport_rdma_info_decode(b, sizeof(b), &out, &reason), -EPROTO);
	assert_string_equal(reason, "unsupported RDMA protocol version");
	b[4] = 1;
	b[7] = 0x80;
	assert_int_equal(transport_rdma_info_decode(b, sizeof(b), &out, &reason), -EPROTO);
	assert_string_equal(reason, "reserved connection info bits set");

	for (size_t i = 0; i < ELEMENTSOF(ranges); i++) {
		transport_rdma_info_encode(&ranges[i].info, b);
		assert_int_equal(transport_rdma_info_decode(b, sizeof(b), &out, &reason), -EPROTO);
		assert_string_equal(reason, ranges[i].reason);
	}
	/* Untouched on failure. */
	assert_int_equal(out.n_buffers, 99);
	assert_int_equal(out.buffer_size, 99);
}

/* ---- message header ----------------------------------------------------------------------- */

static int decode(const uint8_t *b, size_t byte_len, size_t max, struct transport_rdma_msg *m,
		  const char **reason)
{
	return transport_rdma_msg_decode(b, byte_len, max, m, reason);
}

static void test_msg_round_trip(void **state)
{
	const struct transport_rdma_msg in = {
		.type = TRANSPORT_RDMA_MSG_DATA, .acks = 0xfffe, .credits = 0xfffffff0, .len = 100};
	const uint8_t expect[HDR] = {0x47, 0x52, 0x44, 0x4d, 1,	  0, 0xfe, 0xff,
				     0xf0, 0xff, 0xff, 0xff, 100, 0, 0,	   0};
	struct transport_rdma_msg out;
	uint8_t b[HDR + 100];
	const char *reason = NULL;

	transport_rdma_msg_encode(&in, b);
	assert_memory_equal(b, expect, HDR);
	assert_int_equal(decode(b, sizeof(b), 100, &out, &reason), 0);
	assert_int_equal(out.type, in.type);
	assert_int_equal(out.acks, in.acks);
	assert_int_equal(out.credits, in.credits);
	assert_int_equal(out.len, in.len);

	transport_rdma_msg_encode(
		&(struct transport_rdma_msg){.type = TRANSPORT_RDMA_MSG_CREDIT, .credits = 7}, b);
	assert_int_equal(decode(b, HDR, 0, &out, &reason), 0);
	assert_int_equal(out.type, TRANSPORT_RDMA_MSG_CREDIT);
	assert_int_equal(out.credits, 7);
	assert_int_equal(out.acks, 0);
	assert_int_equal(out.len, 0);
}

static void expect_bad(const uint8_t *b, size_t byte_len, size_t max, const char *why)
{
	struct transport_rdma_msg out = {.type = 77};
	const char *reason = NULL;

	assert_int_equal(decode(b, byte_len, max, &out, &reason), -EBADMSG);
	assert_non_null(reason);
	assert_string_equal(reason, why);
	assert_int_equal(out.type, 77); /* untouched */
}

static void test_msg_bad(void **state)
{
	uint8_t b[HDR + 64] = {};
	struct transport_rdma_msg m = {.type = TRANSPORT_RDMA_MSG_DATA, .credits = 1, .len = 64};

	expect_bad(NULL, 0, 64, "message shorter than its header");
	transport_rdma_msg_encode(&m, b);
	expect_bad(b, HDR - 1, 64, "message shorter than its header");
	expect_bad(b, HDR + 63, 64, "message length does not match what arrived");
	expect_bad(b, HDR + 64, 63, "data message larger than a buffer");
	b[1] ^= 0x10;
	expect_bad(b, sizeof(b), 64, "bad message magic");
	b[1] ^= 0x10;
	b[5] = 1;
	expect_bad(b, sizeof(b), 64, "reserved message bits set");
	b[5] = 0;
	for (unsigned t = 0; t < 256; t++) {
		if (t == TRANSPORT_RDMA_MSG_DATA || t == TRANSPORT_RDMA_MSG_CREDIT)
			continue;
		b[4] = (uint8_t)t;
		expect_bad(b, sizeof(b), 64, "unknown message type");
	}

	m.len = 0; /* a sender never sends an empty DATA: a receiver refuses one */
	transport_rdma_msg_encode(&m, b);
	expect_bad(b, HDR, 64, "empty data message");

	m = (struct transport_rdma_msg){.type = TRANSPORT_RDMA_MSG_CREDIT, .credits = 1, .len = 1};
	transport_rdma_msg_encode(&m, b);
	expect_bad(b, HDR + 1, 64, "credit message with payload");
	m = (struct transport_rdma_msg){.type = TRANSPORT_RDMA_MSG_CREDIT, .acks = 1};
	transport_rdma_msg_encode(&m, b);
	expect_bad(b, HDR, 64, "credit message without credits");
}

static void test_msg_random_bytes(void **state)
{
	uint64_t seed = 0x1234;
	uint8_t b[HDR + 32];

	/* Arbitrary bytes either decode into something consistent or fail with a reason. */
	for (unsigned i = 0; i < 200000; i++) {
		size_t len = test_rand(&seed) % sizeof(b);
		struct transport_rdma_msg m;
		const char *reason = NULL;
		int r;

		for (size_t k = 0; k < sizeof(b); k++)
			b[k] = (uint8_t)test_rand(&seed);
		if (i % 2) /* keep the magic often, so the later checks are reached */
			transport_rdma_msg_encode(&(struct transport_rdma_msg){.type = b[20] % 3,
									       .credits = b[21] % 2,
									       .len = b[22] % 40},
						  b);
		r = decode(b, len, 32, &m, &reason);
		if (r == 0) {
			assert_int_equal(m.len + HDR, len);
			assert_true(m.type == TRANSPORT_RDMA_MSG_DATA ||
				    m.type == TRANSPORT_RDMA_MSG_CREDIT);
		} else {
			assert_int_equal(r, -EBADMSG);
			assert_non_null(reason);
		}
	}
}

/* ---- credits ------------------------------------------------------------------------------ */

static void test_credits_exhausted_waits(void **state)
{
	struct transport_rdma_credits cr;
	struct transport_rdma_msg m;

	transport_rdma_credits_init(&cr, 4, 3);
	for (int i = 0; i < 3; i++) {
		assert_true(transport_rdma_credits_can_send_data(&cr));
		assert_int_equal(transport_rdma_next_step(&cr, true, true, true),
				 TRANSPORT_RDMA_STEP_SEND_DATA);
		assert_int_equal(transport_rdma_credits_take(&cr, TRANSPORT_RDMA_MSG_DATA, &m), 0);
		assert_int_equal(m.type, TRANSPORT_RDMA_MSG_DATA);
		assert_int_equal(m.credits, 0);
	}
	/* Out of credits: data waits, and nothing is owed so no credit message either. */
	assert_false(transport_rdma_credits_can_send_data(&cr));
	assert_int_equal(transport_rdma_credits_take(&cr, TRANSPORT_RDMA_MSG_DATA, &m), -EAGAIN);
	assert_int_equal(transport_rdma_credits_take(&cr, TRANSPORT_RDMA_MSG_CREDIT, &m), -EAGAIN);
	assert_int_equal(transport_rdma_next_step(&cr, true, true, true), TRANSPORT_RDMA_STEP_WAIT);
	assert_int_equal(transport_rdma_next_step(&cr, false, true, true),
			 TRANSPORT_RDMA_STEP_WAIT);

	/* A credit message from the peer unblocks exactly as many messages as it returns. */
	m = (struct transport_rdma_msg){.type = TRANSPORT_RDMA_MSG_CREDIT, .credits = 2};
	assert_int_equal(transport_rdma_credits_receive(&cr, &m), 0);
	assert_int_equal(cr.send_avail, 2);
	assert_int_equal(cr.acks_owed, 1);
	assert_int_equal(transport_rdma_credits_take(&cr, TRANSPORT_RDMA_MSG_DATA, &m), 0);
	assert_int_equal(m.acks, 1); /* the next message of any kind acks the credit message */
	assert_int_equal(cr.acks_owed, 0);
	assert_int_equal(transport_rdma_credits_take(&cr, TRANSPORT_RDMA_MSG_DATA, &m), 0);
	assert_int_equal(m.acks, 0);
	assert_int_equal(transport_rdma_next_step(&cr, true, true, true), TRANSPORT_RDMA_STEP_WAIT);
}

static void test_credits_no_send_buffer_waits(void **state)
{
	struct transport_rdma_credits cr;

	transport_rdma_credits_init(&cr, 4, 4);
	assert_int_equal(transport_rdma_next_step(&cr, true, false, true),
			 TRANSPORT_RDMA_STEP_WAIT);
	transport_rdma_credits_reposted(&cr);
	/* Blocked on send buffers but owing credits: hand them back while waiting. */
	assert_int_equal(transport_rdma_next_step(&cr, true, false, true),
			 TRANSPORT_RDMA_STEP_SEND_CREDIT);
	assert_int_equal(transport_rdma_next_step(&cr, true, false, false),
			 TRANSPORT_RDMA_STEP_WAIT);
}

static void test_credits_return(void **state)
{
	struct transport_rdma_credits cr;
	struct transport_rdma_msg m, data = {.type = TRANSPORT_RDMA_MSG_DATA, .len = 1};

	transport_rdma_credits_init(&cr, 8, 8);
	assert_int_equal(cr.threshold, 2);
	for (int i = 0; i < 3; i++)
		assert_int_equal(transport_rdma_credits_receive(&cr, &data), 0);
	assert_int_equal(cr.recv_allowed, 5);

	assert_false(transport_rdma_credits_want_update(&cr, true)); /* nothing reposted yet */
	transport_rdma_credits_reposted(&cr);
	assert_false(transport_rdma_credits_want_update(&cr, false)); /* below the threshold */
	assert_true(transport_rdma_credits_want_update(&cr, true));   /* but about to wait */
	transport_rdma_credits_reposted(&cr);
	assert_true(transport_rdma_credits_want_update(&cr, false));

	assert_int_equal(transport_rdma_credits_take(&cr, TRANSPORT_RDMA_MSG_CREDIT, &m), 0);
	assert_int_equal(m.type, TRANSPORT_RDMA_MSG_CREDIT);
	assert_int_equal(m.credits, 2);
	assert_int_equal(cr.owed, 0);
	assert_int_equal(cr.recv_allowed, 7);
	/* The token is out until the peer acks it: owed credits then ride on data only. */
	transport_rdma_credits_reposted(&cr);
	assert_int_equal(cr.ctrl_avail, 0);
	assert_false(transport_rdma_credits_want_update(&cr, true));
	assert_int_equal(transport_rdma_next_step(&cr, false, true, true),
			 TRANSPORT_RDMA_STEP_WAIT);
	assert_int_equal(transport_rdma_credits_take(&cr, TRANSPORT_RDMA_MSG_CREDIT, &m), -EAGAIN);
	assert_int_equal(transport_rdma_credits_take(&cr, TRANSPORT_RDMA_MSG_DATA, &m), 0);
	assert_int_equal(m.credits, 1);

	m = (struct transport_rdma_msg){.type = TRANSPORT_RDMA_MSG_DATA, .acks = 1, .len = 1};
	assert_int_equal(transport_rdma_credits_receive(&cr, &m), 0);
	assert_int_equal(cr.ctrl_avail, 1);
}

static void test_credits_violations(void **state)
{
	struct transport_rdma_credits cr;
	struct transport_rdma_msg m;

	/* The peer sends more DATA than we announced. */
	transport_rdma_credits_init(&cr, 2, 2);
	m = (struct transport_rdma_msg){.type = TRANSPORT_RDMA_MSG_DATA, .len = 1};
	assert_int_equal(transport_rdma_credits_receive(&cr, &m), 0);
	assert_int_equal(transport_rdma_credits_receive(&cr, &m), 0);
	assert_int_equal(transport_rdma_credits_receive(&cr, &m), -EPROTO);

	/* A second CREDIT before we acked the first. */
	transport_rdma_credits_init(&cr, 2, 2);
	assert_int_equal(transport_rdma_credits_take(&cr, TRANSPORT_RDMA_MSG_DATA, &m), 0);
	m = (struct transport_rdma_msg){.type = TRANSPORT_RDMA_MSG_CREDIT, .credits = 1};
	assert_int_equal(transport_rdma_credits_receive(&cr, &m), 0);
	assert_int_equal(transport_rdma_credits_receive(&cr, &m), -EPROTO);

	/* Credits for slots we never used. */
	transport_rdma_credits_init(&cr, 2, 2);
	m = (struct transport_rdma_msg){.type = TRANSPORT_RDMA_MSG_DATA, .credits = 1, .len = 1};
	assert_int_equal(transport_rdma_credits_receive(&cr, &m), -EPROTO);
	assert_int_equal(cr.send_avail, 2); /* nothing applied */
	assert_int_equal(cr.recv_allowed, 2);

	/* An ack for a credit message we never sent. */
	transport_rdma_credits_init(&cr, 2, 2);
	m = (struct transport_rdma_msg){.type = TRANSPORT_RDMA_MSG_DATA, .acks = 1, .len = 1};
	assert_int_equal(transport_rdma_credits_receive(&cr, &m), -EPROTO);

	m = (struct transport_rdma_msg){.type = 9};
	assert_int_equal(transport_rdma_credits_receive(&cr, &m), -EPROTO);
	assert_int_equal(transport_rdma_credits_take(&cr, 9, &m), -EINVAL);
}

static void test_credits_threshold(void **state)
{
	struct transport_rdma_credits cr;

	transport_rdma_credits_init(&cr, 1, 1);
	assert_int_equal(cr.threshold, 1);
	transport_rdma_credits_init(&cr, 16, 1);
	assert_int_equal(cr.threshold, 4);
	assert_int_equal(cr.send_avail, 1);
	assert_int_equal(cr.recv_allowed, 16);
}

/* ---- slicing and reassembly --------------------------------------------------------------- */

static void test_cursor_invalid(void **state)
{
	struct transport_rdma_iov_cursor cur = {.remaining = 77};
	struct iovec big[2] = {{(void *)1, SIZE_MAX}, {(void *)1, 1}};
	struct iovec null_base = {NULL, 1};

	assert_int_equal(transport_rdma_iov_cursor_init(&cur, NULL, -1), -EINVAL);
	assert_int_equal(transport_rdma_iov_cursor_init(&cur, NULL, 1), -EINVAL);
	assert_int_equal(transport_rdma_iov_cursor_init(&cur, big, 2), -EINVAL);
	assert_int_equal(transport_rdma_iov_cursor_init(&cur, &null_base, 1), -EINVAL);
	assert_int_equal(cur.remaining, 77);
}

static void test_cursor_zero_length(void **state)
{
	struct transport_rdma_iov_cursor cur;
	struct iovec empties[3] = {{NULL, 0}, {(void *)"x", 0}, {NULL, 0}};
	uint8_t dst[4] = {9, 9, 9, 9};

	assert_int_equal(transport_rdma_iov_cursor_init(&cur, NULL, 0), 0);
	assert_int_equal(cur.remaining, 0);
	assert_int_equal(transport_rdma_iov_cursor_copy(&cur, dst, sizeof(dst)), 0);
	assert_int_equal(transport_rdma_iov_cursor_init(&cur, empties, 3), 0);
	assert_int_equal(cur.remaining, 0);
	assert_int_equal(transport_rdma_iov_cursor_copy(&cur, dst, sizeof(dst)), 0);
	assert_int_equal(dst[0], 9);
	assert_int_equal(transport_rdma_msg_count(0, 100), 0);
	assert_int_equal(transport_rdma_msg_count(1, 100), 1);
	assert_int_equal(transport_rdma_msg_count(100, 100), 1);
	assert_int_equal(transport_rdma_msg_count(101, 100), 2);
	assert_int_equal(transport_rdma_msg_count(SIZE_MAX, 1), SIZE_MAX);
	assert_int_equal(transport_rdma_msg_count(5, 0), 0);
}

struct release_log {
	uint32_t slots[256];
	size_t n;
	int fail_at; /* release number that fails, -1 for none */
};

static int log_release(void *userdata, uint32_t slot)
{
	struct release_log *l = userdata;

	if ((int)l->n == l->fail_at)
		return -EIO;
	l->slots[l->n++] = slot;
	return 0;
}

/* Slices iov into messages of max_payload bytes (as sendv does), lands them in slots of a
 * receive pool in a scrambled slot order (as receives complete in whatever slots were posted),
 * then reads them back in chunks of read_size (as recv_full does) and compares. */
static void slice_and_reassemble(const struct iovec *iov, int n_iov, size_t max_payload,
				 size_t read_size, uint64_t seed)
{
	size_t slot_size = max_payload + HDR, total = 0, n_msgs, copied, got = 0;
	struct transport_rdma_iov_cursor cur;
	struct transport_rdma_rx_queue q;
	struct release_log rl = {.fail_at = -1};
	uint8_t *flat, *out, *pool;
	uint32_t *slot_of;

	for (int i = 0; i < n_iov; i++)
		total += iov[i].iov_len;
	n_msgs = transport_rdma_msg_count(total, max_payload);
	assert_true(n_msgs <= ELEMENTSOF(rl.slots));
	flat = malloc(total + 1);
	out = malloc(total + 1);
	pool = calloc(n_msgs + 1, slot_size);
	slot_of = calloc(n_msgs + 1, sizeof(*slot_of));
	assert_non_null(flat);
	assert_non_null(out);
	assert_non_null(pool);
	assert_non_null(slot_of);
	for (int i = 0, off = 0; i < n_iov; off += (int)iov[i].iov_len, i++)
		if (iov[i].iov_len > 0)
			memcpy(flat + off, iov[i].iov_base, iov[i].iov_len);

	/* A permutation of slots. */
	for (size_t i = 0; i < n_msgs; i++)
		slot_of[i] = (uint32_t)i;
	for (size_t i = n_msgs; i > 1; i--) {
		size_t j = test_rand(&seed) % i;
		uint32_t t = slot_of[i - 1];
		slot_of[i - 1] = slot_of[j];
		slot_of[j] = t;
	}

	assert_int_equal(transport_rdma_iov_cursor_init(&cur, iov, n_iov), 0);
	assert_int_equal(cur.remaining, total);
	assert_int_equal(transport_rdma_rx_queue_init(&q, (uint32_t)MAX(n_msgs, (size_t)1)), 0);
	for (size_t i = 0; i < n_msgs; i++) {
		uint8_t *slot = pool + slot_of[i] * slot_size;
		size_t k = transport_rdma_iov_cursor_copy(&cur, slot + HDR, max_payload);
		struct transport_rdma_msg m = {.type = TRANSPORT_RDMA_MSG_DATA, .len = (uint32_t)k};
		struct transport_rdma_msg d;

		/* Every message but the last is full; none is empty. */
		assert_int_equal(k, i + 1 < n_msgs ? max_payload : total - i * max_payload);
		transport_rdma_msg_encode(&m, slot);
		assert_int_equal(transport_rdma_msg_decode(slot, HDR + k, max_payload, &d, NULL),
				 0);
		assert_int_equal(transport_rdma_rx_queue_push(&q, slot_of[i], HDR, d.len), 0);
	}
	assert_int_equal(cur.remaining, 0);
	assert_int_equal(transport_rdma_iov_cursor_copy(&cur, out, 1), 0);
	assert_int_equal(q.bytes, total);

	while (got < total) {
		size_t want = MIN(read_size, total - got);
		assert_int_equal(transport_rdma_rx_queue_read(&q, pool, slot_size, out + got, want,
							      log_release, &rl, &copied),
				 0);
		assert_int_equal(copied, want);
		got += copied;
	}
	assert_memory_equal(out, flat, total);
	/* Each slot released once, in arrival order, after its last byte was read. */
	assert_int_equal(rl.n, n_msgs);
	for (size_t i = 0; i < n_msgs; i++)
		assert_int_equal(rl.slots[i], slot_of[i]);
	assert_int_equal(q.n, 0);
	assert_int_equal(q.bytes, 0);
	transport_rdma_rx_queue_done(&q);
	free(flat);
	free(out);
	free(pool);
	free(slot_of);
}

static void test_slicing_many_buffers(void **state)
{
	uint64_t seed = 42;
	static uint8_t data[200000];
	struct iovec iov[300];

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)test_rand(&seed);

	/* One iovec over many messages; a message over many iovecs; exact multiples. */
	iov[0] = (struct iovec){data, 100000};
	slice_and_reassemble(iov, 1, 4096, 48, 1);
	slice_and_reassemble(iov, 1, 4096, 100000, 2);
	slice_and_reassemble(iov, 1, 1000, 1000, 3);
	for (int i = 0; i < 100; i++)
		iov[i] = (struct iovec){data + i * 7, 7};
	slice_and_reassemble(iov, 100, 4096, 1, 4);
	slice_and_reassemble(iov, 100, 7, 13, 5);

	/* Random sizes, zero-length elements among them, random read sizes. */
	for (unsigned round = 0; round < 40; round++) {
		int n = 1 + (int)(test_rand(&seed) % ELEMENTSOF(iov));
		size_t off = 0, max_payload = 1 + test_rand(&seed) % 3000;

		for (int i = 0; i < n; i++) {
			size_t len = test_rand(&seed) % 4 == 0 ? 0 : test_rand(&seed) % 900;
			len = MIN(len, sizeof(data) - off);
			iov[i] = (struct iovec){len ? data + off : NULL, len};
			off += len;
		}
		if (transport_rdma_msg_count(off, max_payload) > 256)
			max_payload = off / 200 + 1;
		slice_and_reassemble(iov, n, max_payload, 1 + test_rand(&seed) % 5000, round);
	}
}

static void test_rx_queue_edges(void **state)
{
	uint8_t pool[4 * 16], out[64];
	struct transport_rdma_rx_queue q;
	struct release_log rl = {.fail_at = -1};
	size_t copied = 99;

	for (size_t i = 0; i < sizeof(pool); i++)
		pool[i] = (uint8_t)i;
	assert_int_equal(transport_rdma_rx_queue_init(&q, 0), -EINVAL);
	assert_int_equal(transport_rdma_rx_queue_init(&q, 2), 0);

	/* Nothing queued, or nothing wanted: nothing copied, nothing released. */
	assert_int_equal(
		transport_rdma_rx_queue_read(&q, pool, 16, out, 10, log_release, &rl, &copied), 0);
	assert_int_equal(copied, 0);
	assert_int_equal(transport_rdma_rx_queue_push(&q, 3, 2, 10), 0);
	assert_int_equal(transport_rdma_rx_queue_push(&q, 1, 0, 16), 0);
	assert_int_equal(transport_rdma_rx_queue_push(&q, 0, 0, 1), -ENOBUFS);
	assert_int_equal(
		transport_rdma_rx_queue_read(&q, pool, 16, out, 0, log_release, &rl, &copied), 0);
	assert_int_equal(copied, 0);
	assert_int_equal(rl.n, 0);

	/* A partial read keeps the slot; finishing it releases it. */
	assert_int_equal(
		transport_rdma_rx_queue_read(&q, pool, 16, out, 4, log_release, &rl, &copied), 0);
	assert_int_equal(copied, 4);
	assert_memory_equal(out, pool + 3 * 16 + 2, 4);
	assert_int_equal(rl.n, 0);

	/* A failing release stops the read; what was copied is reported. */
	rl.fail_at = 0;
	assert_int_equal(
		transport_rdma_rx_queue_read(&q, pool, 16, out, 64, log_release, &rl, &copied),
		-EIO);
	assert_int_equal(copied, 6);
	assert_memory_equal(out, pool + 3 * 16 + 6, 6);
	assert_int_equal(q.n, 1);
	rl.fail_at = -1;
	assert_int_equal(
		transport_rdma_rx_queue_read(&q, pool, 16, out, 64, log_release, &rl, &copied), 0);
	assert_int_equal(copied, 16);
	assert_int_equal(rl.n, 1);
	assert_int_equal(rl.slots[0], 1);
	/* The ring wraps. */
	for (int i = 0; i < 5; i++) {
		assert_int_equal(transport_rdma_rx_queue_push(&q, (uint32_t)i % 4, 0, 16), 0);
		assert_int_equal(
			transport_rdma_rx_queue_read(&q, pool, 16, out, 16, NULL, NULL, &copied),
			0);
		assert_memory_equal(out, pool + (i % 4) * 16, 16);
	}
	transport_rdma_rx_queue_done(&q);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_info_round_trip),
		cmocka_unit_test(test_info_padded),
		cmocka_unit_test(test_info_bad),
		cmocka_unit_test(test_msg_round_trip),
		cmocka_unit_test(test_msg_bad),
		cmocka_unit_test(test_msg_random_bytes),
		cmocka_unit_test(test_credits_exhausted_waits),
		cmocka_unit_test(test_credits_no_send_buffer_waits),
		cmocka_unit_test(test_credits_return),
		cmocka_unit_test(test_credits_violations),
		cmocka_unit_test(test_credits_threshold),
		cmocka_unit_test(test_cursor_invalid),
		cmocka_unit_test(test_cursor_zero_length),
		cmocka_unit_test(test_slicing_many_buffers),
		cmocka_unit_test(test_rx_queue_edges),
		cmocka_unit_test(test_sim_one_way),
		cmocka_unit_test(test_sim_ping_pong),
		cmocka_unit_test(test_sim_duplex),
		cmocka_unit_test(test_sim_overrun_detected),
		cmocka_unit_test(test_conn_transfer),
		cmocka_unit_test(test_conn_small_buffers_slow_reader),
		cmocka_unit_test(test_conn_ping_pong),
		cmocka_unit_test(test_conn_full_duplex),
		cmocka_unit_test(test_conn_timeouts),
		cmocka_unit_test(test_conn_shutdown_wakes),
		cmocka_unit_test(test_conn_peer_closes),
		cmocka_unit_test(test_conn_peer_dies),
		cmocka_unit_test(test_conn_corrupt_header),
		cmocka_unit_test(test_conn_setup_errors),
		cmocka_unit_test(test_available),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
