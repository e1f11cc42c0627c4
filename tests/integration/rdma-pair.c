/* rdma-pair: the two ends of an RDMA transfer over the transport's "rdma" connections, for
 * test_transport_rdma.py (and by hand between two hosts):
 *
 *   rdma-pair available                      device check; exit 0 (usable) or 2, with the reason
 *   rdma-pair server ADDR[:PORT] [options]   accepts one connection, verifies what arrives
 *   rdma-pair client ADDR:PORT [options]     sends --size MiB of a checkable pattern
 *
 * options: --size MIB (client; default 64), --buffers N, --buffer-size BYTES, --timeout SEC
 * (default 10).
 * The server prints "listening ADDR:PORT" once it listens (without a port it picks one). Every
 * 8-byte word of the stream is a function of its offset, so the server checks each byte as it
 * arrives and reports the first bad offset. Exit 0 on success, 1 on any failure (with the reason).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "transport/rdma-internal.h"
#include "transport/transport.h"

#define HELLO_MAGIC UINT64_C(0x5249415041524447) /* "GDRAPAIR" */
#define CHUNK	    (4U << 20)

struct options {
	const char *addr;
	uint64_t size;
	struct transport_rdma_params params;
	usec_t timeout;
};

static uint64_t pattern(uint64_t word)
{
	/* splitmix64 */
	uint64_t z = word + UINT64_C(0x9E3779B97F4A7C15);
	z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
	return z ^ (z >> 31);
}

static void fill(uint8_t *buf, uint64_t offset, size_t len)
{
	for (size_t i = 0; i < len;) {
		uint64_t o = offset + i, w = pattern(o / 8);
		size_t b = (size_t)(o % 8), k = MIN(8 - b, len - i);

		for (size_t j = 0; j < k; j++)
			buf[i + j] = (uint8_t)(w >> ((b + j) * 8));
		i += k;
	}
}

static int fail(int r, const char *what)
{
	fprintf(stderr, "rdma-pair: %s: %s\n", what, strerror(ERRNO_VALUE(r)));
	return 1;
}

static int cmd_available(void)
{
	_cleanup_free_ char *reason = NULL;
	int r = transport_rdma_available(&reason);

	if (r < 0)
		return fail(r, "checking for RDMA devices");
	printf("%s: %s\n", r ? "available" : "unavailable", reason);
	return r ? 0 : 2;
}

static int parse_options(int argc, char **argv, struct options *o)
{
	*o = (struct options){.size = 64, .timeout = 10 * USEC_PER_SEC};
	if (argc < 3)
		return -EINVAL;
	o->addr = argv[2];
	for (int i = 3; i < argc; i += 2) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		uint32_t u;

		if (!v)
			return -EINVAL;
		if (streq(argv[i], "--size")) {
			if (parse_uint64(v, &o->size) < 0 || o->size == 0 || o->size > (1U << 20))
				return -EINVAL;
		} else if (streq(argv[i], "--buffers")) {
			if (parse_uint32(v, &u) < 0)
				return -EINVAL;
			o->params.n_buffers = u;
		} else if (streq(argv[i], "--buffer-size")) {
			if (parse_uint32(v, &u) < 0)
				return -EINVAL;
			o->params.buffer_size = u;
		} else if (streq(argv[i], "--timeout")) {
			if (parse_uint32(v, &u) < 0 || u == 0)
				return -EINVAL;
			o->timeout = u * USEC_PER_SEC;
		} else
			return -EINVAL;
	}
	o->size <<= 20;
	return 0;
}

static int cmd_server(const struct options *o)
{
	_cleanup_(transport_rdma_listener_freep) struct transport_rdma_listener *l = NULL;
	_cleanup_free_ uint8_t *buf = malloc(CHUNK), *expect = malloc(CHUNK);
	struct transport_conn *c = NULL;
	struct sockaddr_storage ss;
	uint64_t hello[2], got = 0, reply[2];
	char text[128];
	socklen_t len;
	usec_t t0;
	int r;

	if (!buf || !expect)
		return fail(-ENOMEM, "allocating");
	r = transport_parse_address(o->addr, 0, &ss, &len);
	if (r < 0)
		return fail(r, "parsing the address");
	r = transport_rdma_listen_with((struct sockaddr *)&ss, len, &o->params, &l);
	if (r < 0)
		return fail(r, "listening");
	r = transport_rdma_listener_address(l, &ss, &len);
	if (r < 0)
		return fail(r, "reading the bound address");
	printf("listening %s\n",
	       transport_format_address((struct sockaddr *)&ss, len, text, sizeof(text)));
	fflush(stdout);
	r = transport_rdma_accept(l, o->timeout, &c);
	if (r < 0)
		return fail(r, "accepting");
	t0 = now_usec(CLOCK_MONOTONIC);
	r = transport_conn_recv_full(c, hello, sizeof(hello), o->timeout);
	if (r < 0 || hello[0] != HELLO_MAGIC) {
		transport_conn_free(c);
		return r < 0 ? fail(r, "receiving the hello") : fail(-EBADMSG, "hello");
	}
	while (got < hello[1]) {
		size_t n = (size_t)MIN((uint64_t)CHUNK, hello[1] - got);

		r = transport_conn_recv_full(c, buf, n, o->timeout);
		if (r < 0) {
			fprintf(stderr, "rdma-pair: after %" PRIu64 " bytes: ", got);
			transport_conn_free(c);
			return fail(r, "receiving");
		}
		fill(expect, got, n);
		if (memcmp(buf, expect, n) != 0) {
			size_t i = 0;

			while (buf[i] == expect[i])
				i++;
			fprintf(stderr, "rdma-pair: wrong byte at offset %" PRIu64 "\n", got + i);
			transport_conn_free(c);
			return 1;
		}
		got += n;
	}
	reply[0] = HELLO_MAGIC;
	reply[1] = got;
	r = transport_conn_send(c, reply, sizeof(reply), o->timeout);
	transport_conn_free(c);
	if (r < 0)
		return fail(r, "sending the reply");
	printf("verified %" PRIu64 " bytes in %.3f s\n", got,
	       (double)(now_usec(CLOCK_MONOTONIC) - t0) / USEC_PER_SEC);
	return 0;
}

static int cmd_client(const struct options *o)
{
	_cleanup_free_ uint8_t *buf = malloc(CHUNK);
	struct transport_conn *c = NULL;
	struct sockaddr_storage ss;
	uint64_t hello[2] = {HELLO_MAGIC, o->size}, sent = 0, reply[2];
	socklen_t len;
	usec_t t0;
	double secs;
	int r;

	if (!buf)
		return fail(-ENOMEM, "allocating");
	r = transport_parse_address(o->addr, 0, &ss, &len);
	if (r < 0)
		return fail(r, "parsing the address");
	r = transport_rdma_connect_with((struct sockaddr *)&ss, len, &o->params, o->timeout, &c);
	if (r < 0)
		return fail(r, "connecting");
	t0 = now_usec(CLOCK_MONOTONIC);
	r = transport_conn_send(c, hello, sizeof(hello), o->timeout);
	while (r >= 0 && sent < o->size) {
		size_t n = (size_t)MIN((uint64_t)CHUNK, o->size - sent), h = MIN(n, (size_t)48);
		/* Frame-like: a small header iovec and a payload one. */
		struct iovec iov[2] = {{buf, h}, {buf + h, n - h}};

		fill(buf, sent, n);
		r = transport_conn_sendv(c, iov, 2, o->timeout);
		if (r >= 0)
			sent += n;
	}
	if (r >= 0)
		r = transport_conn_recv_full(c, reply, sizeof(reply), o->timeout);
	transport_conn_free(c);
	if (r < 0) {
		fprintf(stderr, "rdma-pair: after %" PRIu64 " bytes: ", sent);
		return fail(r, "sending");
	}
	if (reply[0] != HELLO_MAGIC || reply[1] != o->size)
		return fail(-EBADMSG, "the server's reply");
	secs = (double)(now_usec(CLOCK_MONOTONIC) - t0) / USEC_PER_SEC;
	printf("sent %" PRIu64 " bytes in %.3f s (%.1f MiB/s)\n", sent, secs,
	       secs > 0 ? (double)sent / secs / (1 << 20) : 0.0);
	return 0;
}

int main(int argc, char **argv)
{
	struct options o;

	if (argc >= 2 && streq(argv[1], "available"))
		return cmd_available();
	if (argc < 3 || parse_options(argc, argv, &o) < 0) {
		fprintf(stderr,
			"usage: rdma-pair available | server ADDR[:PORT] [options] | client "
			"ADDR:PORT [options]\n"
			"options: --size MIB --buffers N --buffer-size BYTES --timeout SEC\n");
		return 1;
	}
	if (streq(argv[1], "server"))
		return cmd_server(&o);
	if (streq(argv[1], "client"))
		return cmd_client(&o);
	return fail(-EINVAL, argv[1]);
}
