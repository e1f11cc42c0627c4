/* Unit tests for TLS 1.3 mutual authentication, the "tls" connection and the cluster PKI
 * (transport/tls.c, transport/pki.c) and for `migctl ca`: real handshakes over socketpairs,
 * with a second thread as the peer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "common/common.h"
#include "migctl/migctl.h"
#include "transport/pki-internal.h"
#include "transport/tls-internal.h"
#include "transport/transport.h"

#define HANDSHAKE_TIMEOUT (10 * USEC_PER_SEC)
#define IO_TIMEOUT	  (30 * USEC_PER_SEC)

/* The PKI every test uses, made once: our CA with hosts h1..h3 (cluster hosts) and h9 (signed
 * by our CA, but not a cluster host); a foreign CA with its own h1 and h2. */
static char tmp_dir[] = "/tmp/test-tls-XXXXXX";
static char *ca_dir, *foreign_dir;

static char *path(const char *dir, const char *file)
{
	char *p;

	assert_true(asprintf(&p, "%s/%s", dir, file) > 0);
	return p;
}

static char *host_dir(const char *ca, const char *host)
{
	char *p;

	assert_true(asprintf(&p, "%s/hosts/%s", ca, host) > 0);
	return p;
}

static void issue(const char *ca, const char *host)
{
	_cleanup_free_ char *out = host_dir(ca, host);
	char *error = NULL;
	int r = transport_pki_issue(ca, host, out, &error);

	if (r < 0)
		fail_msg("issuing %s: %s", host, error);
}

/* A context for host from the PKI rooted at ca (its files as `ca issue` lays them out). */
static struct transport_tls *tls_for(const char *ca, const char *host)
{
	_cleanup_free_ char *dir = host_dir(ca, host), *crt = NULL, *key = NULL, *ca_file = NULL;
	struct transport_tls *t = NULL;
	char *error = NULL;
	char name[80];

	snprintf(name, sizeof(name), "%s.crt", host);
	crt = path(dir, name);
	snprintf(name, sizeof(name), "%s.key", host);
	key = path(dir, name);
	ca_file = path(dir, TRANSPORT_PKI_CA_CERT);
	if (transport_tls_new(ca_file, crt, key, &t, &error) < 0)
		fail_msg("context for %s: %s", host, error);
	assert_string_equal(transport_tls_own_name(t), host);
	return t;
}

static int setup_pki(void **state)
{
	char *error = NULL;

	assert_non_null(mkdtemp(tmp_dir));
	ca_dir = path(tmp_dir, "ca");
	foreign_dir = path(tmp_dir, "foreign");
	if (transport_pki_ca_init(ca_dir, "test", &error) < 0 ||
	    transport_pki_ca_init(foreign_dir, "other", &error) < 0)
		fail_msg("ca init: %s", error);
	issue(ca_dir, "h1");
	issue(ca_dir, "h2");
	issue(ca_dir, "h3");
	issue(ca_dir, "h9");
	issue(foreign_dir, "h1");
	issue(foreign_dir, "h2");
	return 0;
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(p);
}

static int teardown_pki(void **state)
{
	nftw(tmp_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(ca_dir);
	free(foreign_dir);
	return 0;
}

/* ---- running both ends of a handshake ----------------------------------------------------- */

static bool is_cluster_host(void *userdata, const char *name)
{
	return streq(name, "h1") || streq(name, "h2") || streq(name, "h3");
}

struct end {
	struct transport_tls *tls;
	int fd;
	bool is_server;
	const char *expected; /* client */
	usec_t timeout;
	int r;
	char *error;
	struct transport_conn *conn;
	usec_t elapsed;
};

static void end_run(struct end *e)
{
	usec_t start = now_usec(CLOCK_MONOTONIC);

	e->r = transport_tls_handshake(
		e->tls, e->fd, e->is_server, e->expected, e->is_server ? is_cluster_host : NULL,
		NULL, e->timeout ? e->timeout : HANDSHAKE_TIMEOUT, &e->conn, &e->error);
	e->fd = -EBADF;
	e->elapsed = now_usec(CLOCK_MONOTONIC) - start;
}

static void *end_thread(void *p)
{
	end_run(p);
	return NULL;
}

static void end_done(struct end *e)
{
	transport_conn_free(e->conn);
	free(e->error);
	*e = (struct end){};
}

/* Runs a server (thread) and a client (here) over a socketpair. */
static void handshake_pair(struct transport_tls *server_tls, struct transport_tls *client_tls,
			   const char *expected, struct end *server, struct end *client)
{
	int sv[2];
	pthread_t t;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	*server = (struct end){.tls = server_tls, .fd = sv[0], .is_server = true};
	*client = (struct end){.tls = client_tls, .fd = sv[1], .expected = expected};
	assert_int_equal(pthread_create(&t, NULL, end_thread, server), 0);
	end_run(client);
	assert_int_equal(pthread_join(t, NULL), 0);
}

static void assert_error(const struct end *e, int r, const char *text)
{
	if (e->r != r)
		fail_msg("expected %d, got %d (%s)", r, e->r, strna(e->error));
	assert_non_null(e->error);
	if (getenv("TEST_TLS_VERBOSE"))
		print_message("%s: %d %s\n", e->is_server ? "server" : "client", e->r, e->error);
	if (!strstr(e->error, text))
		fail_msg("expected a message with \"%s\", got \"%s\"", text, e->error);
	assert_null(e->conn);
}

/* Peers that are not us: raw OpenSSL, garbage, silence. They run in a thread that blocks
 * SIGPIPE, so only the code under test could be killed by one. */
struct raw_peer {
	int fd;
	const char *ca, *cert, *key; /* raw OpenSSL client; cert/key NULL: no certificate */
	int max_version;	     /* of the raw client; 0: any */
	const void *garbage;	     /* else: send these bytes, then read until EOF */
	size_t garbage_len;
};

static void *raw_peer_thread(void *p)
{
	struct raw_peer *rp = p;
	sigset_t ss;
	char buf[4096];

	sigemptyset(&ss);
	sigaddset(&ss, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &ss, NULL);
	if (rp->ca) {
		SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
		SSL *ssl;

		assert_non_null(ctx);
		assert_int_equal(SSL_CTX_load_verify_locations(ctx, rp->ca, NULL), 1);
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
		if (rp->max_version)
			SSL_CTX_set_max_proto_version(ctx, rp->max_version);
		if (rp->cert) {
			assert_int_equal(
				SSL_CTX_use_certificate_file(ctx, rp->cert, SSL_FILETYPE_PEM), 1);
			assert_int_equal(
				SSL_CTX_use_PrivateKey_file(ctx, rp->key, SSL_FILETYPE_PEM), 1);
		}
		ssl = SSL_new(ctx);
		SSL_set_fd(ssl, rp->fd);
		if (SSL_connect(ssl) == 1)
			(void)SSL_read(ssl, buf, sizeof(buf)); /* the server's verdict */
		SSL_free(ssl);
		SSL_CTX_free(ctx);
		ERR_clear_error();
	} else {
		if (rp->garbage_len)
			(void)send(rp->fd, rp->garbage, rp->garbage_len, MSG_NOSIGNAL);
		while (read(rp->fd, buf, sizeof(buf)) > 0)
			;
	}
	close(rp->fd);
	return NULL;
}

/* Runs our server against a raw peer. */
static void server_vs_raw(struct transport_tls *tls, struct raw_peer *rp, usec_t timeout,
			  struct end *server)
{
	int sv[2];
	pthread_t t;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	rp->fd = sv[1];
	*server = (struct end){.tls = tls, .fd = sv[0], .is_server = true, .timeout = timeout};
	assert_int_equal(pthread_create(&t, NULL, raw_peer_thread, rp), 0);
	end_run(server);
	assert_int_equal(pthread_join(t, NULL), 0);
}

/* ---- data --------------------------------------------------------------------------------- */

static void pattern(uint8_t *p, size_t len, uint64_t offset)
{
	for (size_t i = 0; i < len; i++) {
		uint64_t x = (offset + i) * 0x9e3779b97f4a7c15ULL;
		p[i] = (uint8_t)(x >> 56);
	}
}

struct transfer {
	struct transport_conn *conn;
	size_t total, chunk;
	int r;
	bool mismatch;
};

/* Sends total bytes as frames of a 48-byte header + chunk bytes (as the session layer does). */
static void *send_thread(void *p)
{
	struct transfer *x = p;
	uint8_t header[48];
	uint8_t *buf = malloc(x->chunk);

	assert_non_null(buf);
	for (size_t off = 0; off < x->total && x->r == 0; off += x->chunk) {
		struct iovec iov[2] = {{header, sizeof(header)}, {buf, x->chunk}};

		memset(header, (int)(off / x->chunk), sizeof(header));
		pattern(buf, x->chunk, off);
		x->r = transport_conn_sendv(x->conn, iov, 2, IO_TIMEOUT);
	}
	free(buf);
	return NULL;
}

static void *recv_thread(void *p)
{
	struct transfer *x = p;
	uint8_t header[48], expected[48];
	uint8_t *buf = malloc(x->chunk), *want = malloc(x->chunk);

	assert_non_null(buf);
	assert_non_null(want);
	for (size_t off = 0; off < x->total && x->r == 0; off += x->chunk) {
		x->r = transport_conn_recv_full(x->conn, header, sizeof(header), IO_TIMEOUT);
		if (x->r == 0)
			x->r = transport_conn_recv_full(x->conn, buf, x->chunk, IO_TIMEOUT);
		memset(expected, (int)(off / x->chunk), sizeof(expected));
		pattern(want, x->chunk, off);
		if (x->r == 0 && (memcmp(header, expected, sizeof(header)) != 0 ||
				  memcmp(buf, want, x->chunk) != 0))
			x->mismatch = true;
	}
	free(buf);
	free(want);
	return NULL;
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_handshake_and_data(void **state)
{
	struct transport_tls *h1 = tls_for(ca_dir, "h1"), *h2 = tls_for(ca_dir, "h2");
	struct end server, client;
	struct transfer up, down;
	pthread_t t1, t2;
	char hello[12] = "hello, h2!", reply[12] = {0};
	struct iovec iov[3] = {{hello, 3}, {hello + 3, 0}, {hello + 3, sizeof(hello) - 3}};

	handshake_pair(h2, h1, "h2", &server, &client);
	assert_int_equal(client.r, 0);
	assert_int_equal(server.r, 0);
	assert_string_equal(client.conn->ops->name, "tls");
	assert_string_equal(client.conn->peer_name, "h2");
	assert_string_equal(server.conn->peer_name, "h1");

	/* Small messages both ways, from several iovec pieces. */
	assert_int_equal(transport_conn_sendv(client.conn, iov, 3, IO_TIMEOUT), 0);
	assert_int_equal(transport_conn_recv_full(server.conn, reply, sizeof(hello), IO_TIMEOUT),
			 0);
	assert_memory_equal(reply, hello, sizeof(hello));
	assert_int_equal(transport_conn_send(server.conn, "ok", 2, IO_TIMEOUT), 0);
	assert_int_equal(transport_conn_recv_full(client.conn, reply, 2, IO_TIMEOUT), 0);
	assert_memory_equal(reply, "ok", 2);

	/* 64 MiB from client to server, checked byte by byte. */
	up = (struct transfer){.conn = client.conn, .total = 64 << 20, .chunk = 1 << 20};
	down = (struct transfer){.conn = server.conn, .total = 64 << 20, .chunk = 1 << 20};
	assert_int_equal(pthread_create(&t1, NULL, send_thread, &up), 0);
	recv_thread(&down);
	assert_int_equal(pthread_join(t1, NULL), 0);
	assert_int_equal(up.r, 0);
	assert_int_equal(down.r, 0);
	assert_false(down.mismatch);
	/* Counters are TCP bytes: all that one end sent, the other received; TLS adds little. */
	assert_int_equal(client.conn->bytes_sent, server.conn->bytes_received);
	assert_int_equal(server.conn->bytes_sent, client.conn->bytes_received);
	assert_true(client.conn->bytes_sent > up.total);
	assert_true(client.conn->bytes_sent < up.total + up.total / 500 + 8192);

	/* Both directions at once, each by its own thread (odd chunk sizes: partial records). */
	up = (struct transfer){.conn = client.conn, .total = 8 * 100003, .chunk = 100003};
	down = (struct transfer){.conn = server.conn, .total = 8 * 100003, .chunk = 100003};
	{
		struct transfer up_recv = {.conn = server.conn,
					   .total = up.total,
					   .chunk = up.chunk},
				down_recv = {.conn = client.conn,
					     .total = down.total,
					     .chunk = down.chunk};

		assert_int_equal(pthread_create(&t1, NULL, send_thread, &up), 0);
		assert_int_equal(pthread_create(&t2, NULL, send_thread, &down), 0);
		pthread_t t3, t4;
		assert_int_equal(pthread_create(&t3, NULL, recv_thread, &up_recv), 0);
		assert_int_equal(pthread_create(&t4, NULL, recv_thread, &down_recv), 0);
		assert_int_equal(pthread_join(t1, NULL), 0);
		assert_int_equal(pthread_join(t2, NULL), 0);
		assert_int_equal(pthread_join(t3, NULL), 0);
		assert_int_equal(pthread_join(t4, NULL), 0);
		assert_int_equal(up.r, 0);
		assert_int_equal(down.r, 0);
		assert_int_equal(up_recv.r, 0);
		assert_int_equal(down_recv.r, 0);
		assert_false(up_recv.mismatch);
		assert_false(down_recv.mismatch);
	}

	/* The peer goes away: a clean close reads as -ECONNRESET. */
	transport_conn_free(TAKE_PTR(server.conn));
	assert_int_equal(transport_conn_recv_full(client.conn, reply, 1, IO_TIMEOUT), -ECONNRESET);
	end_done(&server);
	end_done(&client);
	transport_tls_free(h1);
	transport_tls_free(h2);
}

static void test_wrong_server_name(void **state)
{
	struct transport_tls *h1 = tls_for(ca_dir, "h1"), *h3 = tls_for(ca_dir, "h3");
	struct end server, client;

	handshake_pair(h3, h1, "h2", &server, &client);
	assert_error(&client, -EACCES, "peer presented certificate for 'h3', expected 'h2'");
	assert_error(&server, -EACCES, "peer refused our certificate");
	end_done(&server);
	end_done(&client);
	transport_tls_free(h1);
	transport_tls_free(h3);
}

static void test_not_a_cluster_host(void **state)
{
	struct transport_tls *h9 = tls_for(ca_dir, "h9"), *h2 = tls_for(ca_dir, "h2");
	struct end server, client;

	handshake_pair(h2, h9, "h2", &server, &client);
	assert_error(&server, -EACCES, "'h9' is not a cluster host");
	/* The client learns it in its handshake, from the server's alert. */
	assert_error(&client, -EACCES, "peer refused our certificate");
	end_done(&server);
	end_done(&client);
	transport_tls_free(h9);
	transport_tls_free(h2);
}

static void test_foreign_ca(void **state)
{
	_cleanup_free_ char *fdir = host_dir(foreign_dir, "h1"), *hdir = host_dir(ca_dir, "h1"),
			    *cert = path(fdir, "h1.crt"), *key = path(fdir, "h1.key"),
			    *ca = path(hdir, "ca.crt");
	struct transport_tls *h2 = tls_for(ca_dir, "h2"), *h1 = tls_for(ca_dir, "h1"),
			     *foreign_h2 = tls_for(foreign_dir, "h2");
	struct raw_peer rp = {.ca = ca, .cert = cert, .key = key};
	struct end server, client;

	/* A client whose certificate comes from another CA (it trusts ours). */
	server_vs_raw(h2, &rp, 0, &server);
	assert_error(&server, -EACCES, "peer certificate is not signed by the cluster CA");
	end_done(&server);

	/* A server of another cluster, with the very name we expect. */
	handshake_pair(foreign_h2, h1, "h2", &server, &client);
	assert_error(&client, -EACCES, "peer certificate is not signed by the cluster CA");
	assert_error(&server, -EACCES, "peer refused our certificate");
	end_done(&server);
	end_done(&client);
	transport_tls_free(h1);
	transport_tls_free(h2);
	transport_tls_free(foreign_h2);
}

static void test_client_without_certificate(void **state)
{
	_cleanup_free_ char *hdir = host_dir(ca_dir, "h1"), *ca = path(hdir, "ca.crt"),
			    *cert = path(hdir, "h1.crt"), *key = path(hdir, "h1.key");
	struct transport_tls *h2 = tls_for(ca_dir, "h2");
	struct raw_peer rp = {.ca = ca};
	struct end server;

	server_vs_raw(h2, &rp, 0, &server);
	assert_error(&server, -EACCES, "peer sent no certificate");
	end_done(&server);

	/* A good certificate, but TLS 1.2 at most. */
	rp = (struct raw_peer){.ca = ca, .cert = cert, .key = key, .max_version = TLS1_2_VERSION};
	server_vs_raw(h2, &rp, 0, &server);
	assert_error(&server, -EPROTO, "peer does not speak TLS 1.3");
	end_done(&server);
	transport_tls_free(h2);
}

static void test_garbage_peer(void **state)
{
	static const char http[] = "GET / HTTP/1.1\r\nHost: h2\r\n\r\n";
	static const char ssh[] = "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n";
	struct transport_tls *h2 = tls_for(ca_dir, "h2"), *h1 = tls_for(ca_dir, "h1");
	struct raw_peer rp = {.garbage = http, .garbage_len = strlen(http)};
	uint8_t noise[600];
	struct end e;
	int sv[2];
	pthread_t t;

	server_vs_raw(h2, &rp, 0, &e);
	assert_error(&e, -EPROTO, "peer does not speak TLS 1.3");
	end_done(&e);

	pattern(noise, sizeof(noise), 7);
	rp = (struct raw_peer){.garbage = noise, .garbage_len = sizeof(noise)};
	server_vs_raw(h2, &rp, 0, &e);
	assert_int_equal(e.r, -EPROTO);
	end_done(&e);

	/* A client that reaches something else (here: an SSH server greeting). */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	rp = (struct raw_peer){.fd = sv[1], .garbage = ssh, .garbage_len = strlen(ssh)};
	assert_int_equal(pthread_create(&t, NULL, raw_peer_thread, &rp), 0);
	e = (struct end){.tls = h1, .fd = sv[0], .expected = "h2"};
	end_run(&e);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_error(&e, -EPROTO, "peer does not speak TLS 1.3");
	end_done(&e);
	transport_tls_free(h1);
	transport_tls_free(h2);
}

static void test_silent_and_vanishing_peers(void **state)
{
	struct transport_tls *h2 = tls_for(ca_dir, "h2"), *h1 = tls_for(ca_dir, "h1");
	struct end e;
	int sv[2];

	/* Connects and sends nothing: both sides give up at their timeout. */
	for (int is_server = 0; is_server < 2; is_server++) {
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
		e = (struct end){.tls = is_server ? h2 : h1,
				 .fd = sv[0],
				 .is_server = is_server,
				 .expected = "h2",
				 .timeout = 300 * USEC_PER_MSEC};
		end_run(&e);
		close(sv[1]);
		assert_error(&e, -ETIMEDOUT, "TLS handshake timed out after 300ms");
		assert_true(e.elapsed >= 290 * USEC_PER_MSEC);
		assert_true(e.elapsed < 1500 * USEC_PER_MSEC);
		end_done(&e);
	}

	/* Closes at once. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	close(sv[1]);
	e = (struct end){.tls = h2, .fd = sv[0], .is_server = true};
	end_run(&e);
	assert_error(&e, -ECONNRESET, "peer closed the connection during the TLS handshake");
	end_done(&e);
	transport_tls_free(h1);
	transport_tls_free(h2);
}

struct blocked {
	struct transport_conn *conn;
	int r;
	usec_t returned;
};

static void *blocked_recv(void *p)
{
	struct blocked *b = p;
	char buf[16];

	b->r = transport_conn_recv_full(b->conn, buf, sizeof(buf), USEC_INFINITY);
	b->returned = now_usec(CLOCK_MONOTONIC);
	return NULL;
}

static void test_shutdown_and_timeouts(void **state)
{
	struct transport_tls *h1 = tls_for(ca_dir, "h1"), *h2 = tls_for(ca_dir, "h2");
	struct blocked b = {.r = 1};
	struct end server, client;
	usec_t start, called;
	char buf[4];
	pthread_t t;

	handshake_pair(h2, h1, "h2", &server, &client);
	assert_int_equal(server.r, 0);
	assert_int_equal(client.r, 0);

	/* Nothing comes: recv_full gives up at its timeout. */
	start = now_usec(CLOCK_MONOTONIC);
	assert_int_equal(transport_conn_recv_full(client.conn, buf, 1, 100 * USEC_PER_MSEC),
			 -ETIMEDOUT);
	assert_true(now_usec(CLOCK_MONOTONIC) - start >= 95 * USEC_PER_MSEC);

	/* shutdown() from here wakes a thread blocked without timeout. */
	b.conn = client.conn;
	assert_int_equal(pthread_create(&t, NULL, blocked_recv, &b), 0);
	usleep(100 * 1000);
	called = now_usec(CLOCK_MONOTONIC);
	transport_conn_shutdown(client.conn);
	transport_conn_shutdown(client.conn); /* idempotent */
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(b.r, -ECANCELED);
	assert_true(b.returned - called < 500 * USEC_PER_MSEC);
	assert_int_equal(transport_conn_send(client.conn, "x", 1, IO_TIMEOUT), -ECANCELED);
	assert_int_equal(transport_conn_recv_full(client.conn, buf, 1, IO_TIMEOUT), -ECANCELED);
	/* The peer sees the connection end. */
	assert_int_equal(transport_conn_recv_full(server.conn, buf, 1, IO_TIMEOUT), -ECONNRESET);

	end_done(&server);
	end_done(&client);
	transport_tls_free(h1);
	transport_tls_free(h2);
}

static void test_export_key_and_hmac(void **state)
{
	static const uint8_t rfc4231_2[32] = {
		0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24,
		0x26, 0x08, 0x95, 0x75, 0xc7, 0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27,
		0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9, 0x64, 0xec, 0x38, 0x43,
	};
	struct transport_tls *h1 = tls_for(ca_dir, "h1"), *h2 = tls_for(ca_dir, "h2");
	uint8_t a[32], b[32], c[32], mac[32];
	struct end server, client, server2, client2;

	handshake_pair(h2, h1, "h2", &server, &client);
	assert_int_equal(server.r, 0);
	assert_int_equal(client.r, 0);
	assert_int_equal(transport_tls_export_key(client.conn, "EXPORTER-migrd", "s1", 2, a, 32),
			 0);
	assert_int_equal(transport_tls_export_key(server.conn, "EXPORTER-migrd", "s1", 2, b, 32),
			 0);
	assert_memory_equal(a, b, 32);
	assert_int_equal(transport_tls_export_key(server.conn, "EXPORTER-migrd", "s2", 2, c, 32),
			 0);
	assert_memory_not_equal(a, c, 32);
	assert_int_equal(transport_tls_export_key(server.conn, "EXPORTER-migrd", NULL, 0, c, 32),
			 0);
	assert_memory_not_equal(a, c, 32);

	/* Another session: another key. */
	handshake_pair(h2, h1, "h2", &server2, &client2);
	assert_int_equal(client2.r, 0);
	assert_int_equal(transport_tls_export_key(client2.conn, "EXPORTER-migrd", "s1", 2, c, 32),
			 0);
	assert_memory_not_equal(a, c, 32);

	assert_int_equal(transport_hmac_sha256((const uint8_t *)"Jefe", 4,
					       "what do ya want for nothing?", 28, mac),
			 0);
	assert_memory_equal(mac, rfc4231_2, 32);

	end_done(&server);
	end_done(&client);
	end_done(&server2);
	end_done(&client2);
	transport_tls_free(h1);
	transport_tls_free(h2);
}

static void assert_tls_new_fails(const char *ca, const char *crt, const char *key, int r,
				 const char *text)
{
	struct transport_tls *t = NULL;
	char *error = NULL;
	int k = transport_tls_new(ca, crt, key, &t, &error);

	if (k != r)
		fail_msg("expected %d, got %d (%s)", r, k, strna(error));
	assert_null(t);
	assert_non_null(error);
	if (getenv("TEST_TLS_VERBOSE"))
		print_message("tls_new: %d %s\n", k, error);
	if (!strstr(error, text))
		fail_msg("expected a message with \"%s\", got \"%s\"", text, error);
	free(error);
}

static void test_tls_new_errors(void **state)
{
	_cleanup_free_ char *d1 = host_dir(ca_dir, "h1"), *d2 = host_dir(ca_dir, "h2"),
			    *fd1 = host_dir(foreign_dir, "h1"), *old = path(tmp_dir, "old"),
			    *ca = path(d1, "ca.crt"), *crt1 = path(d1, "h1.crt"),
			    *key1 = path(d1, "h1.key"), *key2 = path(d2, "h2.key"),
			    *fcrt = path(fd1, "h1.crt"), *fkey = path(fd1, "h1.key"),
			    *old_crt = path(old, "h4.crt"), *old_key = path(old, "h4.key"),
			    *missing = path(tmp_dir, "missing.crt"), *junk = path(tmp_dir, "junk");
	time_t now = time(NULL);
	char *error = NULL;

	assert_tls_new_fails(ca, missing, key1, -ENOENT, "cannot read certificate");
	assert_tls_new_fails(ca, crt1, key2, -EINVAL, "does not match certificate");
	assert_tls_new_fails(ca, fcrt, fkey, -EINVAL, "is not signed by the CA in");
	assert_tls_new_fails(crt1, crt1, key1, -EINVAL, "is not a CA certificate");
	assert_int_equal(write_file_atomic(junk, "not PEM\n", 8, 0644), 0);
	assert_tls_new_fails(ca, junk, key1, -EINVAL, "holds no PEM certificate");
	assert_tls_new_fails(ca, crt1, junk, -EINVAL, "holds no unencrypted PEM private key");

	/* Expired two days ago. */
	if (transport_pki_issue_validity(ca_dir, "h4", old, now - 5 * 86400, now - 2 * 86400,
					 &error) < 0)
		fail_msg("%s", error);
	assert_tls_new_fails(ca, old_crt, old_key, -EKEYEXPIRED, "expired on");

	/* A peer presenting it is refused too. */
	{
		struct transport_tls *h2 = tls_for(ca_dir, "h2");
		struct raw_peer rp = {.ca = ca, .cert = old_crt, .key = old_key};
		struct end server;

		server_vs_raw(h2, &rp, 0, &server);
		assert_error(&server, -EACCES, "peer certificate expired on");
		end_done(&server);
		transport_tls_free(h2);
	}
}

static X509 *read_cert(const char *p)
{
	X509 *x = NULL;

	assert_int_equal(transport_load_cert(p, "certificate", &x, NULL), 0);
	return x;
}

static mode_t mode_of(const char *p)
{
	struct stat st;

	assert_int_equal(stat(p, &st), 0);
	return st.st_mode & 07777;
}

static void test_pki(void **state)
{
	_cleanup_free_ char *d1 = host_dir(ca_dir, "h1"), *ca_key = path(ca_dir, "ca.key"),
			    *ca_crt = path(ca_dir, "ca.crt"), *crt = path(d1, "h1.crt"),
			    *key = path(d1, "h1.key"), *shared = path(tmp_dir, "shared");
	_cleanup_strv_free_ char **names = NULL;
	char *error = NULL;
	X509 *ca, *x;
	EXTENDED_KEY_USAGE *eku;
	int days, secs;

	assert_int_equal(mode_of(ca_dir), 0700);
	assert_int_equal(mode_of(ca_key), 0600);
	assert_int_equal(mode_of(ca_crt), 0644);
	assert_int_equal(mode_of(d1), 0700);
	assert_int_equal(mode_of(key), 0600);

	/* The CA: self-signed, a CA, 10 years. */
	ca = read_cert(ca_crt);
	assert_int_equal(X509_check_ca(ca), 1);
	assert_int_equal(X509_check_issued(ca, ca), X509_V_OK);
	assert_int_equal(
		ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(ca), X509_get0_notAfter(ca)), 1);
	assert_in_range(days, 3649, 3651);

	/* A host: SAN DNS:h1, CN=h1, CA:FALSE, serverAuth+clientAuth, 2 years. */
	x = read_cert(crt);
	assert_int_equal(X509_check_issued(ca, x), X509_V_OK);
	assert_int_equal(X509_check_ca(x), 0);
	assert_int_equal(transport_cert_names(x, &names), 0);
	assert_string_equal(names[0], "h1");
	assert_null(names[1]);
	eku = X509_get_ext_d2i(x, NID_ext_key_usage, NULL, NULL);
	assert_non_null(eku);
	assert_int_equal(sk_ASN1_OBJECT_num(eku), 2);
	EXTENDED_KEY_USAGE_free(eku);
	assert_int_equal(X509_check_purpose(x, X509_PURPOSE_SSL_SERVER, 0), 1);
	assert_int_equal(X509_check_purpose(x, X509_PURPOSE_SSL_CLIENT, 0), 1);
	assert_int_equal(
		ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x)), 1);
	assert_in_range(days, 729, 731);
	X509_free(x);
	X509_free(ca);

	/* Never replaces a CA, a host's files, or another CA's ca.crt. */
	assert_int_equal(transport_pki_ca_init(ca_dir, "test", &error), -EEXIST);
	assert_non_null(strstr(error, "a CA already exists"));
	free(TAKE_PTR(error));
	assert_int_equal(transport_pki_issue(ca_dir, "h1", d1, &error), -EEXIST);
	assert_non_null(strstr(error, "already exists"));
	free(TAKE_PTR(error));
	assert_int_equal(transport_pki_issue(ca_dir, "h5", shared, NULL), 0);
	assert_int_equal(transport_pki_issue(ca_dir, "h6", shared, NULL), 0); /* same ca.crt */
	assert_int_equal(transport_pki_issue(foreign_dir, "h7", shared, &error), -EEXIST);
	assert_non_null(strstr(error, "is not this cluster's CA certificate"));
	free(TAKE_PTR(error));
	assert_int_equal(access(shared, F_OK), 0);

	/* Host names are plain names. */
	assert_int_equal(transport_pki_issue(ca_dir, "../h1", shared, &error), -EINVAL);
	assert_non_null(strstr(error, "invalid host name '../h1'"));
	free(TAKE_PTR(error));
	assert_int_equal(transport_pki_issue(ca_dir, "h 1", shared, NULL), -EINVAL);
	assert_int_equal(transport_pki_issue(ca_dir, "", shared, NULL), -EINVAL);
	assert_int_equal(transport_pki_ca_init(shared, "bad name", NULL), -EINVAL);
	/* A CA directory that is not one. */
	assert_int_equal(transport_pki_issue(shared, "h8", shared, &error), -ENOENT);
	assert_non_null(strstr(error, "ca.key"));
	free(TAKE_PTR(error));
}

struct run_result {
	int status;
	char *out, *err;
};

static void run_migctl(struct run_result *ret, ...)
{
	char *argv[16] = {strdup("migctl")};
	size_t argc = 1, out_len, err_len;
	FILE *out, *err;
	const char *a;
	va_list ap;

	va_start(ap, ret);
	while ((a = va_arg(ap, const char *))) {
		assert_true(argc < ELEMENTSOF(argv) - 1);
		argv[argc++] = strdup(a);
	}
	va_end(ap);
	out = open_memstream(&ret->out, &out_len);
	err = open_memstream(&ret->err, &err_len);
	ret->status = migctl_main((int)argc, argv, out, err);
	fclose(out);
	fclose(err);
	for (size_t i = 0; i < argc; i++)
		free(argv[i]);
}

static void run_done(struct run_result *r)
{
	free(r->out);
	free(r->err);
}

static void test_migctl_ca(void **state)
{
	_cleanup_free_ char *dir = path(tmp_dir, "migctl-pki"), *h5 = host_dir(dir, "h5"),
			    *crt = path(h5, "h5.crt"), *key = path(h5, "h5.key"),
			    *ca = path(h5, "ca.crt"), *other = path(tmp_dir, "elsewhere");
	struct transport_tls *t = NULL;
	struct run_result r;
	char *error = NULL;

	run_migctl(&r, "ca", "init", "--dir", dir, "--cluster", "prod", NULL);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "Created the cluster CA in"));
	assert_non_null(strstr(r.out, "migctl ca issue HOST --dir "));
	run_done(&r);

	/* Options after the host name are fine. */
	run_migctl(&r, "ca", "issue", "h5", "--dir", dir, NULL);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "[transport]\n"
				      "ca_file = /etc/migrd/pki/ca.crt\n"
				      "cert_file = /etc/migrd/pki/h5.crt\n"
				      "key_file = /etc/migrd/pki/h5.key\n"));
	run_done(&r);
	assert_int_equal(transport_tls_new(ca, crt, key, &t, &error), 0);
	assert_string_equal(transport_tls_own_name(t), "h5");
	t = transport_tls_free(t);

	run_migctl(&r, "--json", "ca", "issue", "--out", other, "--dir", dir, "h6", NULL);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "\"cert_file\""));
	assert_non_null(strstr(r.out, "\"/etc/migrd/pki/h6.crt\""));
	run_done(&r);

	/* Failures (1) and usage errors (2). */
	run_migctl(&r, "ca", "init", "--dir", dir, NULL);
	assert_int_equal(r.status, 1);
	assert_non_null(strstr(r.err, "a CA already exists"));
	run_done(&r);
	run_migctl(&r, "ca", "issue", "h5", "--dir", dir, NULL);
	assert_int_equal(r.status, 1);
	assert_non_null(strstr(r.err, "already exists"));
	run_done(&r);
	run_migctl(&r, "ca", "issue", "bad/name", "--dir", dir, NULL);
	assert_int_equal(r.status, 1);
	assert_non_null(strstr(r.err, "invalid host name"));
	run_done(&r);
	run_migctl(&r, "ca", "issue", "--dir", dir, NULL);
	assert_int_equal(r.status, 2);
	assert_non_null(strstr(r.err, "the host name is missing"));
	run_done(&r);
	run_migctl(&r, "ca", "issue", "h7", "h8", "--dir", dir, NULL);
	assert_int_equal(r.status, 2);
	run_done(&r);
	run_migctl(&r, "ca", "init", "--out", dir, NULL);
	assert_int_equal(r.status, 2);
	run_done(&r);
	run_migctl(&r, "ca", "renew", NULL);
	assert_int_equal(r.status, 2);
	assert_non_null(strstr(r.err, "unknown subcommand 'renew'"));
	run_done(&r);
	run_migctl(&r, "ca", NULL);
	assert_int_equal(r.status, 2);
	run_done(&r);

	/* Help: the two-command setup and the migrd.conf keys. */
	run_migctl(&r, "ca", "--help", NULL);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "migctl ca init"));
	assert_non_null(strstr(r.out, "migctl ca issue HOST"));
	run_done(&r);
	run_migctl(&r, "ca", "issue", "-h", NULL);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "cert_file = /etc/migrd/pki/HOST.crt"));
	run_done(&r);
	run_migctl(&r, "ca", "init", "--help", NULL);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "--cluster NAME"));
	run_done(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_handshake_and_data),
		cmocka_unit_test(test_wrong_server_name),
		cmocka_unit_test(test_not_a_cluster_host),
		cmocka_unit_test(test_foreign_ca),
		cmocka_unit_test(test_client_without_certificate),
		cmocka_unit_test(test_garbage_peer),
		cmocka_unit_test(test_silent_and_vanishing_peers),
		cmocka_unit_test(test_shutdown_and_timeouts),
		cmocka_unit_test(test_export_key_and_hmac),
		cmocka_unit_test(test_tls_new_errors),
		cmocka_unit_test(test_pki),
		cmocka_unit_test(test_migctl_ca),
	};

	return cmocka_run_group_tests(tests, setup_pki, teardown_pki);
}
