/* The RDMA connection code (rdma.c, rdma-cm.c) run against the in-process fake device of
 * fake-verbs.c: transfers in both directions and with tiny buffers, timeouts, shutdown, a peer
 * that closes or dies, a corrupt header, setup failures, and device detection. Every test ends
 * with no fake object left alive, no receive overrun and no misuse of the verbs API. */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include "common/common.h"
#include "transport/rdma-internal.h"
#include "test-rdma.h"

#define SEC USEC_PER_SEC

static void check_clean(void)
{
	assert_int_equal(fake_rdma_rnr_count(), 0);
	assert_int_equal(fake_rdma_violations(), 0);
	assert_int_equal(fake_rdma_live_objects(), 0);
}

struct acceptor {
	struct transport_rdma_listener *l;
	usec_t timeout;
	struct transport_conn *conn;
	int r;
};

static void *accept_thread(void *arg)
{
	struct acceptor *a = arg;

	a->r = transport_rdma_accept(a->l, a->timeout, &a->conn);
	return NULL;
}

static void make_pair(const struct transport_rdma_params *client_params,
		      const struct transport_rdma_params *server_params,
		      struct transport_conn **ret_client, struct transport_conn **ret_server)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
	struct acceptor a = {.timeout = 5 * SEC};
	struct sockaddr_storage ss;
	socklen_t len;
	pthread_t t;

	assert_int_equal(transport_rdma_listen_with((struct sockaddr *)&sin, sizeof(sin),
						    server_params, &a.l),
			 0);
	assert_true(transport_rdma_listener_fd(a.l) >= 0);
	assert_int_equal(transport_rdma_listener_address(a.l, &ss, &len), 0);
	assert_int_equal(len, sizeof(struct sockaddr_in));
	assert_int_not_equal(((struct sockaddr_in *)&ss)->sin_port, 0); /* port 0 got one */
	assert_int_equal(pthread_create(&t, NULL, accept_thread, &a), 0);
	assert_int_equal(transport_rdma_connect_with((struct sockaddr *)&ss, len, client_params,
						     5 * SEC, ret_client),
			 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(a.r, 0);
	assert_string_equal((*ret_client)->ops->name, "rdma");
	assert_string_equal(a.conn->ops->name, "rdma");
	*ret_server = a.conn;
	transport_rdma_listener_free(a.l);
}

static void fill(uint8_t *p, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)test_rand(&seed);
}

/* ---- streaming ---------------------------------------------------------------------------- */

struct stream_job {
	struct transport_conn *c;
	const uint8_t *data;
	size_t len;
	uint64_t seed;
	unsigned pause_pct; /* how often the side dawdles between calls */
	int r;
};

/* Sends data in frame-like pieces (a 48-byte header iovec + a payload iovec) and odd splits. */
static void *send_thread(void *arg)
{
	struct stream_job *j = arg;
	size_t off = 0;

	j->r = 0;
	while (off < j->len && j->r == 0) {
		size_t want = 1 + test_rand(&j->seed) % (3U << 20);
		size_t n = MIN(j->len - off, want);
		size_t h = MIN(n, (size_t)48);
		struct iovec iov[3] = {
			{(void *)(j->data + off), h},
			{NULL, 0}, /* zero-length entries are skipped */
			{(void *)(j->data + off + h), n - h},
		};

		j->r = transport_conn_sendv(j->c, iov, 3, 10 * SEC);
		off += n;
		if (test_rand(&j->seed) % 100 < j->pause_pct)
			usleep((useconds_t)(test_rand(&j->seed) % 300));
	}
	return NULL;
}

static void *recv_thread(void *arg)
{
	struct stream_job *j = arg;
	uint8_t *buf = malloc(1 << 20);
	size_t off = 0;

	assert_non_null(buf);
	j->r = 0;
	while (off < j->len && j->r == 0) {
		size_t want = 1 + test_rand(&j->seed) % (1U << 20);
		size_t n = MIN(j->len - off, want);

		j->r = transport_conn_recv_full(j->c, buf, n, 10 * SEC);
		if (j->r == 0 && memcmp(buf, j->data + off, n) != 0)
			j->r = -EBADMSG;
		off += n;
		if (test_rand(&j->seed) % 100 < j->pause_pct)
			usleep((useconds_t)(test_rand(&j->seed) % 300));
	}
	free(buf);
	return NULL;
}

static void stream(struct transport_conn *from, struct transport_conn *to, size_t len,
		   uint64_t seed, unsigned pause_pct)
{
	uint8_t *data = malloc(len);
	struct stream_job s = {.c = from, .len = len, .seed = seed, .pause_pct = pause_pct};
	struct stream_job r = {.c = to, .len = len, .seed = seed * 3 + 1, .pause_pct = pause_pct};
	uint64_t sent = from->bytes_sent, received = to->bytes_received;
	pthread_t ts, tr;

	assert_non_null(data);
	fill(data, len, seed);
	s.data = r.data = data;
	assert_int_equal(pthread_create(&ts, NULL, send_thread, &s), 0);
	assert_int_equal(pthread_create(&tr, NULL, recv_thread, &r), 0);
	assert_int_equal(pthread_join(ts, NULL), 0);
	assert_int_equal(pthread_join(tr, NULL), 0);
	assert_int_equal(s.r, 0);
	assert_int_equal(r.r, 0);
	/* Counted on the wire: payload plus a header per message. */
	assert_true(from->bytes_sent - sent >= len);
	assert_true(to->bytes_received - received >= len);
	free(data);
}

void test_conn_transfer(void **state)
{
	struct transport_conn *c, *s;

	make_pair(NULL, NULL, &c, &s);
	stream(c, s, 48 << 20, 1, 0);
	stream(s, c, 16 << 20, 2, 0);
	/* Zero bytes: nothing sent, nothing to wait for. */
	assert_int_equal(transport_conn_sendv(c, NULL, 0, 0), 0);
	assert_int_equal(transport_conn_recv_full(s, NULL, 0, 0), 0);
	assert_int_equal(transport_conn_sendv(c, NULL, -1, 0), -EINVAL);
	transport_conn_free(c);
	transport_conn_free(s);
	check_clean();
}

void test_conn_small_buffers_slow_reader(void **state)
{
	static const struct transport_rdma_params p[][2] = {
		{{1, 4096}, {1, 4096}},
		{{2, 4096}, {3, 8192}},
		{{16, 65536}, {1, 4096}},
	};

	for (size_t i = 0; i < ELEMENTSOF(p); i++) {
		struct transport_conn *c, *s;

		make_pair(&p[i][0], &p[i][1], &c, &s);
		stream(c, s, 3 << 20, 10 + i, 20);
		stream(s, c, 3 << 20, 20 + i, 20);
		transport_conn_free(c);
		transport_conn_free(s);
		check_clean();
	}
}

/* A sender and a receiver thread on each end at once (as a session's stream runs them). */
void test_conn_full_duplex(void **state)
{
	static const struct transport_rdma_params p[] = {{1, 4096}, {4, 8192}, {16, 1 << 20}};

	for (size_t i = 0; i < ELEMENTSOF(p); i++) {
		size_t len = p[i].buffer_size > 65536 ? 32 << 20 : 2 << 20;
		uint8_t *ab = malloc(len), *ba = malloc(len);
		struct transport_conn *c, *s;
		struct stream_job j[4];
		pthread_t t[4];

		assert_non_null(ab);
		assert_non_null(ba);
		fill(ab, len, 100 + i);
		fill(ba, len, 200 + i);
		make_pair(&p[i], &p[i], &c, &s);
		j[0] = (struct stream_job){
			.c = c, .data = ab, .len = len, .seed = 1, .pause_pct = 10};
		j[1] = (struct stream_job){
			.c = s, .data = ab, .len = len, .seed = 2, .pause_pct = 10};
		j[2] = (struct stream_job){
			.c = s, .data = ba, .len = len, .seed = 3, .pause_pct = 10};
		j[3] = (struct stream_job){
			.c = c, .data = ba, .len = len, .seed = 4, .pause_pct = 10};
		for (int k = 0; k < 4; k++)
			assert_int_equal(pthread_create(&t[k], NULL,
							k % 2 ? recv_thread : send_thread, &j[k]),
					 0);
		for (int k = 0; k < 4; k++) {
			assert_int_equal(pthread_join(t[k], NULL), 0);
			assert_int_equal(j[k].r, 0);
		}
		transport_conn_free(c);
		transport_conn_free(s);
		free(ab);
		free(ba);
		check_clean();
	}
}

struct pp_job {
	struct transport_conn *c;
	bool initiator;
	uint64_t seed; /* the same on both sides: both know every size */
	int r;
};

/* Request/response rounds; then rounds where both send before either reads. */
static void *ping_pong_thread(void *arg)
{
	struct pp_job *j = arg;
	uint8_t *out = malloc(40000), *in = malloc(40000), *expect = malloc(40000);

	assert_non_null(out);
	assert_non_null(in);
	assert_non_null(expect);
	j->r = 0;
	for (unsigned i = 0; i < 400 && j->r == 0; i++) {
		size_t a = 1 + test_rand(&j->seed) % 40000, b = 1 + test_rand(&j->seed) % 40000;
		size_t mine = j->initiator ? a : b, theirs = j->initiator ? b : a;
		bool duplex = i >= 200;
		uint64_t s_mine = j->initiator ? i * 2 : i * 2 + 1, s_theirs = s_mine ^ 1;

		if (duplex) { /* both sides' sends fit in the peer's 16 x 4 KiB receive slots */
			mine = mine % 60000 / 2 + 1;
			theirs = theirs % 60000 / 2 + 1;
		}
		fill(out, mine, s_mine);
		fill(expect, theirs, s_theirs);
		if (j->initiator || duplex)
			j->r = transport_conn_send(j->c, out, mine, 5 * SEC);
		if (j->r == 0)
			j->r = transport_conn_recv_full(j->c, in, theirs, 5 * SEC);
		if (j->r == 0 && !j->initiator && !duplex)
			j->r = transport_conn_send(j->c, out, mine, 5 * SEC);
		if (j->r == 0 && memcmp(in, expect, theirs) != 0)
			j->r = -EBADMSG;
	}
	free(out);
	free(in);
	free(expect);
	return NULL;
}

void test_conn_ping_pong(void **state)
{
	const struct transport_rdma_params p = {16, 4096};
	struct transport_conn *c, *s;
	struct pp_job a, b;
	pthread_t ta, tb;

	make_pair(&p, &p, &c, &s);
	a = (struct pp_job){.c = c, .initiator = true, .seed = 5};
	b = (struct pp_job){.c = s, .initiator = false, .seed = 5};
	assert_int_equal(pthread_create(&ta, NULL, ping_pong_thread, &a), 0);
	assert_int_equal(pthread_create(&tb, NULL, ping_pong_thread, &b), 0);
	assert_int_equal(pthread_join(ta, NULL), 0);
	assert_int_equal(pthread_join(tb, NULL), 0);
	assert_int_equal(a.r, 0);
	assert_int_equal(b.r, 0);
	transport_conn_free(c);
	transport_conn_free(s);
	check_clean();
}

/* ---- deadlines, shutdown, peers going away ----------------------------------------------- */

void test_conn_timeouts(void **state)
{
	const struct transport_rdma_params p = {2, 4096};
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
	struct transport_rdma_listener *l;
	struct transport_conn *c, *s;
	struct sockaddr_storage ss;
	socklen_t len;
	uint8_t buf[64], *big = calloc(1, 1 << 20);
	usec_t t0;

	assert_non_null(big);
	make_pair(&p, &p, &c, &s);
	t0 = now_usec(CLOCK_MONOTONIC);
	assert_int_equal(transport_conn_recv_full(s, buf, sizeof(buf), 100 * USEC_PER_MSEC),
			 -ETIMEDOUT);
	assert_true(now_usec(CLOCK_MONOTONIC) - t0 >= 100 * USEC_PER_MSEC);
	assert_true(now_usec(CLOCK_MONOTONIC) - t0 < 2 * SEC);
	/* The reader never reads: the sender runs out of credits and times out. */
	t0 = now_usec(CLOCK_MONOTONIC);
	assert_int_equal(transport_conn_send(c, big, 1 << 20, 100 * USEC_PER_MSEC), -ETIMEDOUT);
	assert_true(now_usec(CLOCK_MONOTONIC) - t0 >= 100 * USEC_PER_MSEC);
	assert_true(now_usec(CLOCK_MONOTONIC) - t0 < 2 * SEC);
	transport_conn_free(c);
	transport_conn_free(s);

	/* Nobody connects; somebody connects but nobody accepts. */
	assert_int_equal(transport_rdma_listen((struct sockaddr *)&sin, sizeof(sin), &l), 0);
	assert_int_equal(transport_rdma_listener_address(l, &ss, &len), 0);
	assert_int_equal(transport_rdma_accept(l, 50 * USEC_PER_MSEC, &c), -ETIMEDOUT);
	assert_int_equal(
		transport_rdma_connect((struct sockaddr *)&ss, len, 100 * USEC_PER_MSEC, &c),
		-ETIMEDOUT);
	transport_rdma_listener_free(l);
	free(big);
	check_clean();
}

struct blocked {
	struct transport_conn *c;
	bool send;
	int r;
	usec_t took;
};

static uint8_t blocked_buf[1 << 16];

static void *blocked_thread(void *arg)
{
	struct blocked *b = arg;
	uint8_t *buf = blocked_buf;
	usec_t t0 = now_usec(CLOCK_MONOTONIC);

	if (b->send)
		b->r = transport_conn_send(b->c, buf, sizeof(blocked_buf), USEC_INFINITY);
	else
		b->r = transport_conn_recv_full(b->c, buf, sizeof(blocked_buf), USEC_INFINITY);
	b->took = now_usec(CLOCK_MONOTONIC) - t0;
	return NULL;
}

void test_conn_shutdown_wakes(void **state)
{
	const struct transport_rdma_params p = {1, 4096};

	for (int send = 0; send < 2; send++) {
		struct transport_conn *c, *s;
		struct blocked b;
		pthread_t t;
		uint8_t x;

		make_pair(&p, &p, &c, &s);
		b = (struct blocked){.c = c, .send = send};
		assert_int_equal(pthread_create(&t, NULL, blocked_thread, &b), 0);
		usleep(100 * 1000);
		transport_conn_shutdown(c);
		transport_conn_shutdown(c); /* idempotent */
		assert_int_equal(pthread_join(t, NULL), 0);
		assert_int_equal(b.r, -ECANCELED);
		assert_true(b.took < 2 * SEC);
		assert_int_equal(transport_conn_send(c, "x", 1, SEC), -ECANCELED);
		assert_int_equal(transport_conn_recv_full(c, &x, 1, SEC), -ECANCELED);
		/* The peer hears of it, after what was sent before. */
		int r = 0;
		for (unsigned i = 0; i <= sizeof(blocked_buf) && r == 0; i++)
			r = transport_conn_recv_full(s, &x, 1, 2 * SEC);
		assert_int_equal(r, -ECONNRESET);
		transport_conn_free(c);
		transport_conn_free(s);
		check_clean();
	}
}

void test_conn_peer_closes(void **state)
{
	struct transport_conn *c, *s;
	uint8_t out[100000], in[100000];

	make_pair(NULL, NULL, &c, &s);
	fill(out, sizeof(out), 77);
	assert_int_equal(transport_conn_send(c, out, sizeof(out), SEC), 0);
	transport_conn_free(c);
	/* What was sent before the close still arrives, then the close shows. */
	assert_int_equal(transport_conn_recv_full(s, in, sizeof(in), SEC), 0);
	assert_memory_equal(in, out, sizeof(in));
	assert_int_equal(transport_conn_recv_full(s, in, 1, SEC), -ECONNRESET);
	assert_int_equal(transport_conn_send(s, out, 10, SEC), -ECONNRESET);
	transport_conn_free(s);
	check_clean();
}

void test_conn_peer_dies(void **state)
{
	const struct transport_rdma_params p = {4, 4096};
	struct transport_conn *c, *s;
	uint8_t buf[8192] = {};
	int r = 0;

	make_pair(&p, &p, &c, &s);
	fake_rdma_kill_all(); /* no disconnect: the link is just gone */
	/* The sender learns from its first failed completion, at the latest on its next call. */
	for (int i = 0; i < 3 && r == 0; i++)
		r = transport_conn_send(c, buf, sizeof(buf), SEC);
	assert_int_equal(r, -ECONNRESET);
	/* A receiver that sends nothing cannot tell: its deadline ends the wait. */
	assert_int_equal(transport_conn_recv_full(s, buf, 1, 100 * USEC_PER_MSEC), -ETIMEDOUT);
	transport_conn_free(c);
	transport_conn_free(s);
	check_clean();
}

void test_conn_corrupt_header(void **state)
{
	struct transport_conn *c, *s;
	uint8_t buf[10] = {};

	make_pair(NULL, NULL, &c, &s);
	fake_rdma_corrupt_send(1);
	assert_int_equal(transport_conn_send(c, "0123456789", 10, SEC), 0);
	assert_int_equal(transport_conn_send(c, "abcdefghij", 10, SEC), 0);
	assert_int_equal(transport_conn_recv_full(s, buf, 10, SEC), 0);
	assert_memory_equal(buf, "0123456789", 10);
	assert_int_equal(transport_conn_recv_full(s, buf, 10, SEC), -EBADMSG);
	assert_int_equal(transport_conn_recv_full(s, buf, 10, SEC), -EBADMSG); /* sticky */
	transport_conn_free(c);
	transport_conn_free(s);
	check_clean();
}

/* ---- setup ------------------------------------------------------------------------------- */

/* A connector that does not speak our protocol: rejected by accept with -EPROTO. */
static void foreign_peer(const struct sockaddr *addr, struct transport_rdma_listener *l)
{
	struct rdma_event_channel *ch = rdma_create_event_channel();
	struct ibv_qp_init_attr attr = {.qp_type = IBV_QPT_RC,
					.cap = {.max_send_wr = 1, .max_recv_wr = 1}};
	struct rdma_conn_param param = {.private_data = "GET / HTTP/1.0", .private_data_len = 14};
	struct transport_conn *conn = NULL;
	struct rdma_cm_event *ev;
	struct rdma_cm_id *id;
	struct ibv_pd *pd;
	struct ibv_cq *cq;

	assert_non_null(ch);
	assert_int_equal(rdma_create_id(ch, &id, NULL, RDMA_PS_TCP), 0);
	assert_int_equal(rdma_resolve_addr(id, NULL, (struct sockaddr *)addr, 100), 0);
	assert_int_equal(rdma_get_cm_event(ch, &ev), 0);
	rdma_ack_cm_event(ev);
	assert_int_equal(rdma_resolve_route(id, 100), 0);
	assert_int_equal(rdma_get_cm_event(ch, &ev), 0);
	rdma_ack_cm_event(ev);
	pd = ibv_alloc_pd(id->verbs);
	cq = ibv_create_cq(id->verbs, 2, NULL, NULL, 0);
	attr.send_cq = attr.recv_cq = cq;
	assert_int_equal(rdma_create_qp(id, pd, &attr), 0);
	assert_int_equal(rdma_connect(id, &param), 0);

	assert_int_equal(transport_rdma_accept(l, SEC, &conn), -EPROTO);
	assert_null(conn);
	assert_int_equal(rdma_get_cm_event(ch, &ev), 0);
	assert_int_equal(ev->event, RDMA_CM_EVENT_REJECTED);
	rdma_ack_cm_event(ev);
	rdma_destroy_qp(id);
	ibv_destroy_cq(cq);
	ibv_dealloc_pd(pd);
	rdma_destroy_id(id);
	rdma_destroy_event_channel(ch);
}

void test_conn_setup_errors(void **state)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
	struct sockaddr_in nowhere = {.sin_family = AF_INET,
				      .sin_addr.s_addr = htonl(0xc0000201),
				      .sin_port = htons(7870)};
	struct sockaddr_un un = {.sun_family = AF_UNIX};
	const struct transport_rdma_params too_many = {TRANSPORT_RDMA_N_BUFFERS_MAX + 1, 4096};
	const struct transport_rdma_params too_small = {4, TRANSPORT_RDMA_BUFFER_SIZE_MIN - 1};
	const struct transport_rdma_params too_much = {64, TRANSPORT_RDMA_BUFFER_SIZE_MAX};
	struct transport_rdma_listener *l, *l2;
	struct transport_conn *c = NULL;
	struct sockaddr_storage ss;
	socklen_t len;

	/* Nobody listening on that port: refused. No route: unreachable. */
	sin.sin_port = htons(7);
	assert_int_equal(transport_rdma_connect((struct sockaddr *)&sin, sizeof(sin), SEC, &c),
			 -ECONNREFUSED);
	assert_int_equal(
		transport_rdma_connect((struct sockaddr *)&nowhere, sizeof(nowhere), SEC, &c),
		-EHOSTUNREACH);
	assert_null(c);

	/* Bad arguments. */
	assert_int_equal(transport_rdma_connect(NULL, 0, SEC, &c), -EINVAL);
	assert_int_equal(transport_rdma_connect((struct sockaddr *)&un, sizeof(un), SEC, &c),
			 -EAFNOSUPPORT);
	assert_int_equal(transport_rdma_connect_with((struct sockaddr *)&sin, sizeof(sin),
						     &too_many, SEC, &c),
			 -EINVAL);
	assert_int_equal(
		transport_rdma_listen_with((struct sockaddr *)&sin, sizeof(sin), &too_small, &l),
		-EINVAL);
	/* 4 GiB of registered memory each way: over TRANSPORT_RDMA_POOL_MAX. */
	assert_int_equal(
		transport_rdma_listen_with((struct sockaddr *)&sin, sizeof(sin), &too_much, &l),
		-EINVAL);

	/* A port in use; a foreign peer. */
	sin.sin_port = 0;
	assert_int_equal(transport_rdma_listen((struct sockaddr *)&sin, sizeof(sin), &l), 0);
	assert_int_equal(transport_rdma_listener_address(l, &ss, &len), 0);
	assert_int_equal(transport_rdma_listen((struct sockaddr *)&ss, len, &l2), -EADDRINUSE);
	foreign_peer((struct sockaddr *)&ss, l);
	transport_rdma_listener_free(l);

	/* No device at all. */
	fake_rdma_set_devices(FAKE_DEVICES_ZERO);
	assert_int_equal(transport_rdma_listen((struct sockaddr *)&sin, sizeof(sin), &l), -ENODEV);
	assert_int_equal(transport_rdma_connect((struct sockaddr *)&ss, len, SEC, &c), -ENODEV);
	fake_rdma_set_devices(FAKE_DEVICES_ONE);
	check_clean();
}

void test_available(void **state)
{
	static const struct {
		enum fake_devices d;
		int r;
		const char *reason;
	} cases[] = {
		{FAKE_DEVICES_NONE_LOADED, 0,
		 "no RDMA devices (ibv_get_device_list failed: Function not implemented; no RDMA "
		 "driver is loaded in this kernel)"},
		{FAKE_DEVICES_ZERO, 0, "no RDMA devices (ibv_get_device_list returned 0 devices)"},
		{FAKE_DEVICES_PORT_DOWN, 0,
		 "RDMA devices present (fake0) but none has an active port"},
		{FAKE_DEVICES_ONE, 1, "RDMA device fake0 port 1 active (RoCE)"},
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		char *reason = NULL;

		fake_rdma_set_devices(cases[i].d);
		assert_int_equal(transport_rdma_available(&reason), cases[i].r);
		assert_non_null(reason);
		assert_string_equal(reason, cases[i].reason);
		free(reason);
		assert_int_equal(transport_rdma_available(NULL), cases[i].r);
	}
	fake_rdma_set_devices(FAKE_DEVICES_ONE);
	check_clean();
}
