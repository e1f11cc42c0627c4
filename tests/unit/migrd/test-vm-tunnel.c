/* Unit tests for the VM tunnel (migrd/vm-tunnel.c) over a real transport session on loopback:
 * credits bound what a compressed move has between the two local sockets, data arrives whole,
 * malformed credits end the session, and a tunnel whose destination stopped reading still
 * closes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <systemd/sd-event.h>

#include "common/common.h"
#include "migrd/vm-tunnel.h"
#include "transport/transport.h"

#define WINDOW	  (4U << 20)
#define FRAME	  (1U << 20)
#define N_STREAMS 3
/* What may wait outside the window: the source's local socket, the frame in the source pump's
 * hand, the destination's local socket (256 KiB, doubled by the kernel, plus overhead). */
#define SLACK (2U << 20)

static char tmp_dir[] = "/tmp/test-vm-tunnel-XXXXXX";

static char *path(const char *name)
{
	char *p = NULL;

	assert_true(asprintf(&p, "%s/%s", tmp_dir, name) > 0);
	return p;
}

static bool any_host(void *userdata, const char *name)
{
	return true;
}

static struct transport_context *context(const char *host)
{
	_cleanup_free_ char *dir = path(host), *ca = NULL, *crt = NULL, *key = NULL;
	_cleanup_free_ char *err = NULL;
	struct transport_context *ctx = NULL;
	_cleanup_free_ char *ca_dir = path("ca");

	assert_true(asprintf(&ca, "%s/ca.crt", dir) > 0);
	assert_true(asprintf(&crt, "%s/%s.crt", dir, host) > 0);
	if (access(crt, F_OK) < 0)
		assert_int_equal(transport_pki_issue(ca_dir, host, dir, &err), 0);
	assert_true(asprintf(&key, "%s/%s.key", dir, host) > 0);
	struct transport_settings s = {
		.ca_file = ca,
		.cert_file = crt,
		.key_file = key,
		.handshake_timeout = 5 * USEC_PER_SEC,
		.stall_timeout = 10 * USEC_PER_SEC,
		.frame_size = FRAME,
		.is_cluster_host = any_host,
	};
	assert_int_equal(transport_context_new(&s, &ctx, &err), 0);
	return ctx;
}

/* Two sessions joined over loopback: src the client, dst what the listener handed over. */
struct pair {
	struct transport_context *src_ctx, *dst_ctx;
	sd_event *e;
	struct transport_listener *l;
	pthread_t loop;
	bool stop;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct transport_session *src, *dst;
};

static void on_session(void *userdata, struct transport_session *s)
{
	struct pair *p = userdata;

	pthread_mutex_lock(&p->lock);
	p->dst = s;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

static void *loop_thread(void *arg)
{
	struct pair *p = arg;

	for (;;) {
		pthread_mutex_lock(&p->lock);
		bool stop = p->stop;
		pthread_mutex_unlock(&p->lock);
		if (stop)
			break;
		(void)sd_event_run(p->e, 50 * USEC_PER_MSEC);
	}
	return NULL;
}

static uint16_t free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

static void pair_open(struct pair *p, unsigned n_streams)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct transport_session_params sp = {
		.kind = TRANSPORT_KIND_TCP,
		.n_streams = n_streams,
		.compress_level = 1,
		.purpose = "vm-migrate",
	};
	_cleanup_free_ char *err = NULL;

	*p = (struct pair){};
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	p->src_ctx = context("src");
	p->dst_ctx = context("dst");
	assert_int_equal(sd_event_new(&p->e), 0);
	a.sin_port = htons(free_port());
	assert_int_equal(transport_listener_new(p->dst_ctx, p->e, (struct sockaddr *)&a, sizeof(a),
						on_session, p, &p->l),
			 0);
	assert_int_equal(pthread_create(&p->loop, NULL, loop_thread, p), 0);
	assert_int_equal(transport_session_connect(p->src_ctx, "dst", (struct sockaddr *)&a,
						   sizeof(a), &sp, &p->src, &err),
			 0);
	pthread_mutex_lock(&p->lock);
	while (!p->dst)
		pthread_cond_wait(&p->cond, &p->lock);
	pthread_mutex_unlock(&p->lock);
	assert_int_equal(transport_session_n_streams(p->dst), n_streams);
}

static void pair_close(struct pair *p)
{
	transport_session_free(p->src);
	transport_session_free(p->dst);
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_mutex_unlock(&p->lock);
	pthread_join(p->loop, NULL);
	transport_listener_free(p->l);
	sd_event_unref(p->e);
	transport_context_free(p->src_ctx);
	transport_context_free(p->dst_ctx);
}

static int unix_listen(const char *p)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	strscpy(sa.sun_path, p, sizeof(sa.sun_path));
	(void)unlink(p);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 4), 0);
	return fd;
}

static int unix_connect(const char *p)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	strscpy(sa.sun_path, p, sizeof(sa.sun_path));
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

/* The destination's half of the protocol: the "open" message, then the connection to the
 * local socket (the destination QEMU's stand-in, which the test accepts). */
static int carry_one(struct pair *p, struct vm_tunnel *src, struct vm_tunnel *dst, int *ret_in)
{
	_cleanup_free_ char *in = path("in.sock"), *out = path("out.sock"), *err = NULL;
	int lfd = unix_listen(out), fd;
	json_t *msg = NULL;
	json_int_t stream;

	assert_int_equal(vm_tunnel_listen(src, in, "qemu"), 0);
	assert_int_equal(vm_tunnel_start(src), 0);
	*ret_in = unix_connect(in);
	assert_int_equal(transport_session_recv_control(p->dst, 5 * USEC_PER_SEC, &msg), 0);
	assert_string_equal(json_string_value(json_object_get(msg, "type")), "open");
	stream = json_integer_value(json_object_get(msg, "stream"));
	json_decref(msg);
	assert_true(stream >= 0 && stream < N_STREAMS - 1);
	assert_int_equal(vm_tunnel_connect(dst, (unsigned)stream, "qemu", out, &err), 0);
	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	assert_true(fd >= 0);
	close(lfd);
	return fd;
}

/* A pattern zstd shrinks a lot (what makes buffers of compressed bytes hold much): the
 * position as a 64-bit counter every 8 bytes. */
static void fill(uint8_t *b, size_t len, uint64_t off)
{
	for (size_t i = 0; i < len; i++) {
		uint64_t pos = (off + i) & ~(uint64_t)7;

		b[i] = (uint8_t)(pos >> (8 * ((off + i) & 7)));
	}
}

/* Writes (non-blocking) until nothing more goes in for 1 s; returns the bytes written. */
static uint64_t write_until_blocked(int fd, uint64_t off)
{
	static uint8_t buf[64 * 1024];
	uint64_t start = off;

	assert_int_equal(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLOUT};
		ssize_t n;

		if (poll(&pfd, 1, 1000) == 0)
			break;
		fill(buf, sizeof(buf), off);
		n = write(fd, buf, sizeof(buf));
		if (n < 0 && errno == EAGAIN)
			continue;
		assert_true(n > 0);
		off += (uint64_t)n;
		if (off - start > (256U << 20))
			break; /* nothing holds it back */
	}
	return off - start;
}

struct writer {
	int fd;
	uint64_t off, total;
};

static void *write_rest(void *arg)
{
	struct writer *w = arg;
	static uint8_t buf[64 * 1024];

	assert_int_equal(fcntl(w->fd, F_SETFL, 0), 0);
	while (w->off < w->total) {
		size_t len = (size_t)MIN((uint64_t)sizeof(buf), w->total - w->off);
		ssize_t n;

		fill(buf, len, w->off);
		n = write(w->fd, buf, len);
		assert_true(n > 0);
		w->off += (uint64_t)n;
	}
	(void)shutdown(w->fd, SHUT_WR);
	return NULL;
}

/* Reads to the end, checking every byte; returns the bytes read. */
static uint64_t read_and_check(int fd)
{
	static uint8_t buf[64 * 1024], want[64 * 1024];
	uint64_t off = 0;

	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n == 0)
			break;
		assert_true(n > 0);
		fill(want, (size_t)n, off);
		assert_memory_equal(buf, want, (size_t)n);
		off += (uint64_t)n;
	}
	return off;
}

/* The connection's source -> destination half, end to end: the same bytes and digest on both
 * ends, complete once the source's local end closed. */
static void check_digests(struct vm_tunnel *src, struct vm_tunnel *dst, uint64_t total)
{
	struct vm_tunnel_digest a[2], b[2];

	assert_int_equal(vm_tunnel_digests(src, "qemu", true, 5 * USEC_PER_SEC, a, 2), 1);
	assert_int_equal(vm_tunnel_digests(dst, "qemu", false, 5 * USEC_PER_SEC, b, 2), 1);
	assert_true(a[0].complete && b[0].complete);
	assert_int_equal(a[0].stream, b[0].stream);
	assert_true(a[0].bytes == total && b[0].bytes == total);
	assert_true(a[0].digest == b[0].digest);
	/* No connection was carried for libvirt. */
	assert_int_equal(vm_tunnel_digests(src, "libvirt", true, 0, a, 2), 0);
	/* The digest depends on the order of the frames and on their lengths. */
	assert_true(transport_digest_fold(transport_digest_fold(0, 1, 10), 2, 10) !=
		    transport_digest_fold(transport_digest_fold(0, 2, 10), 1, 10));
	assert_true(transport_digest_fold(0, 1, 10) != transport_digest_fold(0, 1, 11));
}

/* How much the source's local socket takes while the destination's does not read, then
 * everything arrives whole. */
static uint64_t held_while_stalled(size_t window)
{
	struct pair p;
	struct vm_tunnel *src = NULL, *dst = NULL;
	struct writer w = {.total = 96U << 20};
	pthread_t th;
	uint64_t held;
	int out;

	pair_open(&p, N_STREAMS);
	assert_int_equal(vm_tunnel_new(p.src, FRAME, true, window, &src), 0);
	assert_int_equal(vm_tunnel_new(p.dst, FRAME, false, window, &dst), 0);
	out = carry_one(&p, src, dst, &w.fd);
	held = write_until_blocked(w.fd, 0);
	w.off = held;
	assert_int_equal(pthread_create(&th, NULL, write_rest, &w), 0);
	assert_true(read_and_check(out) == w.total);
	pthread_join(th, NULL);
	assert_null(vm_tunnel_error(src));
	assert_null(vm_tunnel_error(dst));
	check_digests(src, dst, w.total);
	close(out);
	vm_tunnel_free(src);
	vm_tunnel_free(dst);
	close(w.fd);
	pair_close(&p);
	return held;
}

static void test_credits_bound_the_backlog(void **state)
{
	uint64_t with = held_while_stalled(WINDOW), without = held_while_stalled(0);

	print_message("held while the destination did not read: %.1f MiB with a %u MiB window, "
		      "%.1f MiB without\n",
		      with / 1048576.0, WINDOW >> 20, without / 1048576.0);
	assert_true(with >= WINDOW / 2);
	assert_true(with <= WINDOW + SLACK);
	/* The control: without credits the buffers of compressed bytes take far more. */
	assert_true(without > 2 * (WINDOW + SLACK));
}

/* The destination's reports: what is sent as credits, one message after the other. */
static void malformed_credits(const void *first, size_t first_len, const void *then,
			      size_t then_len)
{
	struct pair p;
	struct vm_tunnel *src = NULL, *dst = NULL;
	const char *e = NULL;
	int in, out;

	pair_open(&p, N_STREAMS);
	assert_int_equal(vm_tunnel_new(p.src, FRAME, true, WINDOW, &src), 0);
	assert_int_equal(vm_tunnel_new(p.dst, FRAME, false, WINDOW, &dst), 0);
	out = carry_one(&p, src, dst, &in);
	if (first)
		assert_true(transport_session_send(p.dst, N_STREAMS - 1, first, first_len) >= 0);
	assert_true(transport_session_send(p.dst, N_STREAMS - 1, then, then_len) >= 0);
	/* The tunnel records its error, then aborts the session: wait for both. */
	for (int i = 0;
	     i < 100 && (!vm_tunnel_error(src) || transport_session_error(p.src, NULL) == 0); i++)
		usleep(50 * 1000);
	assert_non_null(vm_tunnel_error(src));
	assert_non_null(strstr(vm_tunnel_error(src), "malformed credits"));
	assert_true(transport_session_error(p.src, &e) < 0);
	close(in);
	close(out);
	vm_tunnel_free(src);
	vm_tunnel_free(dst);
	pair_close(&p);
}

/* A 20-byte record: le32 stream, le64 bytes written, le64 ns spent writing. */
static void record(uint8_t out[20], uint32_t stream, uint64_t written, uint64_t ns)
{
	stream = htole32(stream);
	written = htole64(written);
	ns = htole64(ns);
	memcpy(out, &stream, 4);
	memcpy(out + 4, &written, 8);
	memcpy(out + 12, &ns, 8);
}

static void test_malformed_credits_end_the_session(void **state)
{
	uint8_t a[20], b[20];

	/* Five bytes are no record. */
	malformed_credits(NULL, 0, "bogus", 5);
	/* More written than was sent. */
	record(a, 0, 1, 0);
	malformed_credits(NULL, 0, a, sizeof(a));
	/* The destination's time in writes going back (the first record is well formed). */
	record(a, 0, 0, 2000000);
	record(b, 0, 0, 1000000);
	malformed_credits(a, sizeof(a), b, sizeof(b));
}

static void test_closes_while_the_destination_does_not_read(void **state)
{
	struct pair p;
	struct vm_tunnel *src = NULL, *dst = NULL;
	usec_t t0;
	int in, out;

	pair_open(&p, N_STREAMS);
	assert_int_equal(vm_tunnel_new(p.src, FRAME, true, WINDOW, &src), 0);
	assert_int_equal(vm_tunnel_new(p.dst, FRAME, false, WINDOW, &dst), 0);
	out = carry_one(&p, src, dst, &in);
	assert_true(write_until_blocked(in, 0) > 0);
	/* The source's pump waits for credits that do not come; closing must not wait for
	 * them. */
	t0 = now_usec(CLOCK_MONOTONIC);
	vm_tunnel_free(src);
	vm_tunnel_free(dst);
	assert_true(now_usec(CLOCK_MONOTONIC) - t0 < 8 * USEC_PER_SEC);
	close(in);
	close(out);
	pair_close(&p);
}

static void test_window_checks(void **state)
{
	struct pair p;
	struct vm_tunnel *t = NULL;

	pair_open(&p, N_STREAMS);
	/* Less than four frames: reports every eighth could leave a frame waiting forever. */
	assert_int_equal(vm_tunnel_new(p.src, FRAME, true, 512 * 1024, &t), -EINVAL);
	assert_null(t);
	assert_int_equal(vm_tunnel_new(p.src, FRAME, true, 1U << 20, &t), 0);
	vm_tunnel_free(t);
	pair_close(&p);
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(p);
}

static int setup(void **state)
{
	_cleanup_free_ char *ca = NULL, *err = NULL;

	if (!mkdtemp(tmp_dir))
		return -1;
	ca = path("ca");
	return transport_pki_ca_init(ca, "test", &err);
}

static int teardown(void **state)
{
	return nftw(tmp_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_credits_bound_the_backlog),
		cmocka_unit_test(test_malformed_credits_end_the_session),
		cmocka_unit_test(test_closes_while_the_destination_does_not_read),
		cmocka_unit_test(test_window_checks),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
