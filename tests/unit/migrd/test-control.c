/* Unit tests for the control socket server: framing, errors, caps, pipelining, async replies,
 * against a real Unix socket and a real sd-event loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/common.h"
#include "migrd/control.h"

struct fixture {
	char dir[64];
	char path[128];
	sd_event *e;
	struct control_server *s;
	struct control_request *held; /* an async request not yet answered */
};

static int m_echo(struct control_request *req, json_t *params, void *userdata, json_t **ret)
{
	*ret = json_pack("{s:O}", "params", params);
	return CONTROL_REPLY_NOW;
}

static int m_fail(struct control_request *req, json_t *params, void *userdata, json_t **ret)
{
	return control_request_error(req, ENOENT, "not-found", "No workload named '%s'.", "web9");
}

static int m_errno(struct control_request *req, json_t *params, void *userdata, json_t **ret)
{
	return -EIO;
}

static int m_later(struct control_request *req, json_t *params, void *userdata, json_t **ret)
{
	struct fixture *f = userdata;
	f->held = req;
	return CONTROL_REPLY_LATER;
}

static const struct control_method methods[] = {
	{"echo", m_echo},
	{"fail", m_fail},
	{"errno", m_errno},
	{"later", m_later},
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct control_limits lim = {
		.max_request = 1024 * 1024, .max_clients = 3, .max_inflight = 1};
	gid_t gid;
	int fd;

	strcpy(f->dir, "/tmp/migrd-test-ctl-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/run/control.sock", f->dir);
	assert_int_equal(sd_event_new(&f->e), 0);
	assert_int_equal(control_listen(f->path, "no-such-group-here", &fd, &gid), 0);
	assert_int_equal(gid, 0);
	assert_int_equal(
		control_server_new(f->e, fd, gid, &lim, methods, ELEMENTSOF(methods), f, &f->s), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];

	control_server_free(f->s);
	sd_event_unref(f->e);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static int client_connect(struct fixture *f)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	strscpy(sa.sun_path, f->path, sizeof(sa.sun_path));
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static void client_write(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t k = send(fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (k < 0 && errno == EAGAIN) {
			/* the server reads on its loop: the test drives it */
			return;
		}
		assert_true(k > 0);
		data += k;
		len -= (size_t)k;
	}
}

static void client_write_str(int fd, const char *s)
{
	client_write(fd, s, strlen(s));
}

/* Runs the loop until a full line arrives on fd; returns it parsed (NULL on EOF). */
static json_t *client_read_reply(struct fixture *f, int fd)
{
	static char buf[1 << 16];
	static size_t len;
	static int last_fd = -1;

	if (fd != last_fd) {
		len = 0;
		last_fd = fd;
	}
	for (int i = 0; i < 400; i++) {
		char *nl = memchr(buf, '\n', len);
		if (nl) {
			json_t *j = json_loadb(buf, (size_t)(nl - buf), 0, NULL);
			size_t used = (size_t)(nl - buf) + 1;
			memmove(buf, buf + used, len - used);
			len -= used;
			assert_non_null(j);
			return j;
		}
		assert_true(sd_event_run(f->e, 10 * USEC_PER_MSEC) >= 0);
		ssize_t k = recv(fd, buf + len, sizeof(buf) - len, MSG_DONTWAIT);
		if (k == 0)
			return NULL;
		if (k > 0)
			len += (size_t)k;
	}
	fail_msg("no reply");
	return NULL;
}

static const char *error_code(json_t *reply)
{
	return json_string_value(json_object_get(json_object_get(reply, "error"), "code"));
}

static void test_ok_and_errors(void **state)
{
	struct fixture *f = *state;
	int fd = client_connect(f);
	json_t *r;

	client_write_str(fd, "{\"id\":7,\"method\":\"echo\",\"params\":{\"x\":1}}\n");
	r = client_read_reply(f, fd);
	assert_int_equal(json_integer_value(json_object_get(r, "id")), 7);
	assert_int_equal(json_integer_value(json_object_get(
				 json_object_get(json_object_get(r, "ok"), "params"), "x")),
			 1);
	json_decref(r);

	client_write_str(fd, "{not json\n");
	r = client_read_reply(f, fd);
	assert_string_equal(error_code(r), "parse-error");
	assert_true(json_is_null(json_object_get(r, "id")));
	json_decref(r);

	client_write_str(fd, "[1,2]\n");
	r = client_read_reply(f, fd);
	assert_string_equal(error_code(r), "invalid-request");
	json_decref(r);

	client_write_str(fd, "{\"id\":\"a\",\"method\":\"echo\",\"params\":5}\n");
	r = client_read_reply(f, fd);
	assert_string_equal(error_code(r), "invalid-request");
	assert_string_equal(json_string_value(json_object_get(r, "id")), "a");
	json_decref(r);

	client_write_str(fd, "{\"id\":1,\"method\":\"nosuch\"}\n");
	r = client_read_reply(f, fd);
	assert_string_equal(error_code(r), "unknown-method");
	assert_non_null(
		strstr(json_string_value(json_object_get(json_object_get(r, "error"), "message")),
		       "nosuch"));
	json_decref(r);

	client_write_str(fd, "{\"id\":2,\"method\":\"fail\"}\n");
	r = client_read_reply(f, fd);
	assert_string_equal(error_code(r), "not-found");
	assert_string_equal(
		json_string_value(json_object_get(json_object_get(r, "error"), "message")),
		"No workload named 'web9'.");
	json_decref(r);

	client_write_str(fd, "{\"id\":3,\"method\":\"errno\"}\n");
	r = client_read_reply(f, fd);
	assert_string_equal(error_code(r), "internal");
	json_decref(r);

	/* Still serving on the same connection after all that. */
	client_write_str(fd, "{\"id\":4,\"method\":\"echo\"}\n");
	r = client_read_reply(f, fd);
	assert_non_null(json_object_get(r, "ok"));
	json_decref(r);
	close(fd);
}

static void test_pipelined_in_order(void **state)
{
	struct fixture *f = *state;
	int fd = client_connect(f);
	const char req[] = "{\"id\":1,\"method\":\"echo\"}\n{\"id\":2,\"method\":\"fail\"}\n"
			   "{\"id\":3,\"method\":\"echo\"}\n";

	client_write(fd, req, sizeof(req) - 1);
	for (int i = 1; i <= 3; i++) {
		json_t *r = client_read_reply(f, fd);
		assert_int_equal(json_integer_value(json_object_get(r, "id")), i);
		json_decref(r);
	}
	close(fd);
}

static void test_too_large(void **state)
{
	struct fixture *f = *state;
	size_t size = 2 * 1024 * 1024;
	char *big = malloc(size);
	int fd = client_connect(f), fd2;
	size_t off = 0;
	json_t *r = NULL;

	memset(big, 'x', size);
	memcpy(big, "{\"id\":1,\"method\":\"echo\",\"params\":{\"s\":\"", 39);
	/* Interleave writing and running the loop until the server answers. */
	for (int i = 0; i < 2000 && !r; i++) {
		ssize_t k = off < size
				    ? send(fd, big + off, size - off, MSG_NOSIGNAL | MSG_DONTWAIT)
				    : 0;
		if (k > 0)
			off += (size_t)k;
		assert_true(sd_event_run(f->e, 5 * USEC_PER_MSEC) >= 0);
		char line[4096];
		ssize_t n = recv(fd, line, sizeof(line) - 1, MSG_DONTWAIT);
		if (n > 0) {
			line[n] = 0;
			r = json_loads(line, JSON_DISABLE_EOF_CHECK, NULL);
		}
	}
	assert_non_null(r);
	assert_string_equal(error_code(r), "request-too-large");
	json_decref(r);
	free(big);
	close(fd);

	/* A new connection is served as usual. */
	fd2 = client_connect(f);
	client_write_str(fd2, "{\"id\":9,\"method\":\"echo\"}\n");
	r = client_read_reply(f, fd2);
	assert_non_null(json_object_get(r, "ok"));
	json_decref(r);
	close(fd2);
}

static void test_client_cap(void **state)
{
	struct fixture *f = *state;
	int fds[3], extra;
	json_t *r;

	for (int i = 0; i < 3; i++)
		fds[i] = client_connect(f);
	for (int i = 0; i < 20; i++)
		sd_event_run(f->e, 1000);
	assert_int_equal(control_server_n_clients(f->s), 3);
	extra = client_connect(f);
	r = client_read_reply(f, extra);
	assert_string_equal(error_code(r), "busy");
	json_decref(r);
	assert_null(client_read_reply(f, extra)); /* then closed */
	close(extra);
	for (int i = 0; i < 3; i++)
		close(fds[i]);
	for (int i = 0; i < 20; i++)
		sd_event_run(f->e, 1000);
	assert_int_equal(control_server_n_clients(f->s), 0);
}

static void test_async_and_inflight_cap(void **state)
{
	struct fixture *f = *state;
	int a = client_connect(f), b = client_connect(f);
	json_t *r;

	client_write_str(a, "{\"id\":1,\"method\":\"later\"}\n");
	for (int i = 0; i < 20 && !f->held; i++)
		sd_event_run(f->e, 1000);
	assert_non_null(f->held);
	/* max_inflight is 1: another caller is told to retry. */
	client_write_str(b, "{\"id\":2,\"method\":\"later\"}\n");
	r = client_read_reply(f, b);
	assert_string_equal(error_code(r), "busy");
	json_decref(r);
	control_request_reply(TAKE_PTR(f->held), json_pack("{s:s}", "done", "yes"));
	r = client_read_reply(f, a);
	assert_string_equal(json_string_value(json_object_get(json_object_get(r, "ok"), "done")),
			    "yes");
	json_decref(r);

	/* A client that leaves while its request is outstanding: the late reply goes nowhere. */
	client_write_str(a, "{\"id\":3,\"method\":\"later\"}\n");
	for (int i = 0; i < 20 && !f->held; i++)
		sd_event_run(f->e, 1000);
	assert_non_null(f->held);
	close(a);
	for (int i = 0; i < 20; i++)
		sd_event_run(f->e, 1000);
	control_request_fail(TAKE_PTR(f->held), "internal", "gone");
	for (int i = 0; i < 20; i++)
		sd_event_run(f->e, 1000);
	assert_int_equal(control_server_n_clients(f->s), 1);
	close(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_ok_and_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipelined_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_too_large, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_async_and_inflight_cap, setup, teardown),
	};
	log_set_max_level(LOG_ERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
