/* migctl against a fake migrd on a Unix socket in a temporary directory: good, failing,
 * malformed, truncated and silent daemons, and the exit status and message for each. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/json-util.h"
#include "common/util.h"
#include "migctl/migctl-internal.h"
#include "migctl/migctl.h"
#include "test-migctl.h"

enum fake_mode {
	FAKE_REPLY,	  /* read the request, send the reply */
	FAKE_REPLY_SPLIT, /* the same, the reply in three writes with pauses */
	FAKE_REPLY_FIRST, /* send the reply before reading anything, then hang up */
	FAKE_HANG_UP,	  /* read the request, then close without a word */
	FAKE_SILENT,	  /* read the request, then wait until migctl gives up */
};

struct fake {
	char dir[64];
	char path[96];
	int listen_fd;
	bool started;
	pthread_t thread;
	enum fake_mode mode;
	char *reply;
	char request[4096];
};

static void sleep_msec(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = ms % 1000 * 1000000};

	nanosleep(&ts, NULL);
}

static void send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);

		if (k <= 0)
			return; /* migctl went away; its exit status tells the test what happened */
		p += k;
		n -= (size_t)k;
	}
}

static void read_request(int fd, char *buf, size_t size)
{
	size_t n = 0;

	while (n < size - 1) {
		ssize_t k = read(fd, buf + n, 1);

		if (k <= 0 || buf[n] == '\n')
			break;
		n++;
	}
	buf[n] = 0;
}

static void *fake_run(void *p)
{
	struct fake *f = p;
	struct pollfd pfd = {.fd = f->listen_fd, .events = POLLIN};
	_cleanup_close_ int fd = -EBADF;
	char drain[256];

	/* Bounded, so a test whose client never connects fails instead of hanging. */
	if (poll(&pfd, 1, 10000) <= 0)
		return NULL;
	fd = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return NULL;

	if (f->mode == FAKE_REPLY_FIRST) {
		send_all(fd, f->reply, strlen(f->reply));
		return NULL;
	}
	read_request(fd, f->request, sizeof(f->request));
	switch (f->mode) {
	case FAKE_REPLY:
		send_all(fd, f->reply, strlen(f->reply));
		break;
	case FAKE_REPLY_SPLIT: {
		size_t n = strlen(f->reply), third = n / 3;

		send_all(fd, f->reply, third);
		sleep_msec(30);
		send_all(fd, f->reply + third, third);
		sleep_msec(30);
		send_all(fd, f->reply + 2 * third, n - 2 * third);
		break;
	}
	case FAKE_SILENT:
		/* migctl closes its end when it times out. */
		while (read(fd, drain, sizeof(drain)) > 0)
			;
		break;
	default:
		break;
	}
	return NULL;
}

static int fake_setup(void **state)
{
	struct fake *f = calloc(1, sizeof(*f));
	struct sockaddr_un sa = {.sun_family = AF_UNIX};

	assert_non_null(f);
	strscpy(f->dir, "/tmp/test-migctl-XXXXXX", sizeof(f->dir));
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/control.sock", f->dir);
	strscpy(sa.sun_path, f->path, sizeof(sa.sun_path));
	f->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(f->listen_fd >= 0);
	assert_int_equal(bind(f->listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(f->listen_fd, 8), 0);
	*state = f;
	return 0;
}

static int fake_teardown(void **state)
{
	struct fake *f = *state;

	if (f->started)
		pthread_join(f->thread, NULL);
	safe_close(f->listen_fd);
	unlink(f->path);
	rmdir(f->dir);
	free(f->reply);
	free(f);
	return 0;
}

/* Serves one connection; reply is a canned reply name, or a literal line when it starts
 * with something other than a letter. */
static void fake_start(struct fake *f, enum fake_mode mode, const char *reply)
{
	f->mode = mode;
	if (reply)
		f->reply = (reply[0] >= 'a' && reply[0] <= 'z') ? canned_reply_line(reply)
								: strdup(reply);
	assert_int_equal(pthread_create(&f->thread, NULL, fake_run, f), 0);
	f->started = true;
}

static void test_hosts_ok(void **state)
{
	struct fake *f = *state;
	struct run_result r;

	fake_start(f, FAKE_REPLY, "hosts");
	run_migctl(&r, "--socket", f->path, "hosts", NULL);
	assert_string_equal(r.err, "");
	assert_int_equal(r.status, 0);
	assert_string_equal(f->request, "{\"id\":1,\"method\":\"hosts\",\"params\":{}}");
	assert_non_null(strstr(r.out, "h1 (local)       1  yes     yes      *"));
	run_result_done(&r);
}

static void test_hosts_json(void **state)
{
	struct fake *f = *state;
	_cleanup_json_ json_t *want = canned_result("hosts");
	_cleanup_json_ json_t *got = NULL;
	struct run_result r;

	fake_start(f, FAKE_REPLY, "hosts");
	run_migctl(&r, "--socket", f->path, "--json", "hosts", NULL);
	assert_int_equal(r.status, 0);
	/* One document on one line (stdout is not a terminal): the "ok" object, unchanged. */
	assert_non_null(strchr(r.out, '\n'));
	assert_string_equal(strchr(r.out, '\n'), "\n");
	got = json_loads(r.out, 0, NULL);
	assert_non_null(got);
	assert_true(json_equal(got, want));
	run_result_done(&r);
}

static void test_reply_in_pieces(void **state)
{
	struct fake *f = *state;
	struct run_result r;

	fake_start(f, FAKE_REPLY_SPLIT, "status");
	run_migctl(&r, "--socket", f->path, "status", NULL);
	assert_string_equal(r.err, "");
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "coordinator: h1 (node 1)\n"));
	run_result_done(&r);
}

static void test_version(void **state)
{
	struct fake *f = *state;
	struct run_result r;

	fake_start(f, FAKE_REPLY, "version");
	run_migctl(&r, "--socket", f->path, "version", NULL);
	assert_int_equal(r.status, 0);
	assert_string_equal(r.out, "migctl " MIGRD_VERSION "\nmigrd 0.1.0 (control protocol 1)\n");
	assert_string_equal(f->request, "{\"id\":1,\"method\":\"version\",\"params\":{}}");
	run_result_done(&r);
}

static void test_list_empty(void **state)
{
	struct fake *f = *state;
	struct run_result r;

	fake_start(f, FAKE_REPLY, "list-empty");
	run_migctl(&r, "--socket", f->path, "list", NULL);
	assert_int_equal(r.status, 0);
	assert_string_equal(r.out, "No workloads.\n");
	run_result_done(&r);
}

static void test_list_empty_json(void **state)
{
	struct fake *f = *state;
	struct run_result r;

	fake_start(f, FAKE_REPLY, "list-empty");
	run_migctl(&r, "--json", "--socket", f->path, "list", NULL);
	assert_int_equal(r.status, 0);
	assert_string_equal(r.out, "{\"workloads\":[]}\n");
	run_result_done(&r);
}

static void test_daemon_error(void **state)
{
	struct fake *f = *state;
	struct run_result r;

	fake_start(f, FAKE_REPLY, "error-not-quorate");
	run_migctl(&r, "--socket", f->path, "list", NULL);
	assert_int_equal(r.status, 1);
	assert_string_equal(r.out, "");
	assert_string_equal(r.err, "migctl: This host's partition is not quorate. (not-quorate)\n");
	run_result_done(&r);
}

static void test_daemon_error_json(void **state)
{
	struct fake *f = *state;
	struct run_result r;

	fake_start(f, FAKE_REPLY, "error-not-quorate");
	run_migctl(&r, "--socket", f->path, "--json", "list", NULL);
	assert_int_equal(r.status, 1);
	assert_string_equal(r.out, "{\"code\":\"not-quorate\",\"message\":\"This host's partition "
				   "is not quorate.\"}\n");
	assert_non_null(strstr(r.err, "(not-quorate)"));
	run_result_done(&r);
}

/* migrd refuses an unauthorised caller before reading its request and hangs up: still an
 * answer from the daemon (exit 1), and migctl must not lose it to the broken connection. */
static void test_permission_denied_reply(void **state)
{
	struct fake *f = *state;
	struct run_result r;

	fake_start(f, FAKE_REPLY_FIRST, "error-permission-denied");
	run_migctl(&r, "--socket", f->path, "hosts", NULL);
	assert_int_equal(r.status, 1);
	assert_string_equal(r.err,
			    "migctl: Permission denied: uid 1000 is neither root nor in "
			    "group 'migrd'. (permission-denied)\n"
			    "migctl: migrd accepts only root and members of group 'migrd'\n");
	run_result_done(&r);
}

static void test_malformed(void **state)
{
	struct fake *f = *state;
	struct run_result r;

	fake_start(f, FAKE_REPLY, "<html>Bad Gateway</html>\n");
	run_migctl(&r, "--socket", f->path, "hosts", NULL);
	assert_int_equal(r.status, 69);
	assert_string_equal(r.out, "");
	assert_string_equal(r.err, "migctl: migrd sent a malformed reply\n");
	run_result_done(&r);
}

static void test_wrong_id(void **state)
{
	struct fake *f = *state;
	struct run_result r;

	fake_start(f, FAKE_REPLY, "{\"id\":7,\"ok\":{\"hosts\":[]}}\n");
	run_migctl(&r, "--socket", f->path, "hosts", NULL);
	assert_int_equal(r.status, 69);
	assert_string_equal(r.err, "migctl: migrd sent a malformed reply\n");
	run_result_done(&r);
}

/* A well-formed envelope whose result lacks what the verb needs. */
static void test_result_without_list(void **state)
{
	struct fake *f = *state;
	struct run_result r;

	fake_start(f, FAKE_REPLY, "{\"id\":1,\"ok\":{}}\n");
	run_migctl(&r, "--socket", f->path, "hosts", NULL);
	assert_int_equal(r.status, 69);
	assert_string_equal(r.err, "migctl: migrd sent a malformed reply\n");
	run_result_done(&r);
}

static void test_hang_up(void **state)
{
	struct fake *f = *state;
	struct run_result r;

	fake_start(f, FAKE_HANG_UP, NULL);
	run_migctl(&r, "--socket", f->path, "hosts", NULL);
	assert_int_equal(r.status, 69);
	assert_string_equal(r.err,
			    "migctl: migrd closed the connection without a complete reply\n");
	run_result_done(&r);
}

static void test_truncated_reply(void **state)
{
	struct fake *f = *state;
	struct run_result r;

	fake_start(f, FAKE_REPLY, "{\"id\":1,\"ok\":{\"hosts\":[");
	run_migctl(&r, "--socket", f->path, "hosts", NULL);
	assert_int_equal(r.status, 69);
	assert_string_equal(r.err,
			    "migctl: migrd closed the connection without a complete reply\n");
	run_result_done(&r);
}

static void test_timeout(void **state)
{
	struct fake *f = *state;
	struct run_result r;
	usec_t start, took;

	fake_start(f, FAKE_SILENT, NULL);
	start = now_usec(CLOCK_MONOTONIC);
	run_migctl(&r, "--socket", f->path, "--timeout", "200ms", "hosts", NULL);
	took = now_usec(CLOCK_MONOTONIC) - start;
	assert_int_equal(r.status, 69);
	assert_string_equal(r.err, "migctl: no reply from migrd within 200.0ms (see --timeout)\n");
	assert_true(took >= 200 * USEC_PER_MSEC);
	assert_true(took < 5 * USEC_PER_SEC);
	run_result_done(&r);
}

static void test_socket_from_env(void **state)
{
	struct fake *f = *state;
	struct run_result r;

	fake_start(f, FAKE_REPLY, "list");
	setenv("MIGRD_SOCKET", f->path, 1);
	run_migctl(&r, "list", NULL);
	unsetenv("MIGRD_SOCKET");
	assert_string_equal(r.err, "");
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "web1  container  h2"));
	run_result_done(&r);

	/* --socket wins over the environment. */
	setenv("MIGRD_SOCKET", f->path, 1);
	run_migctl(&r, "--socket", "/nonexistent/x.sock", "list", NULL);
	unsetenv("MIGRD_SOCKET");
	assert_int_equal(r.status, 69);
	assert_non_null(strstr(r.err, "/nonexistent/x.sock does not exist"));
	run_result_done(&r);
}

static void test_no_socket(void **state)
{
	struct fake *f = *state;
	char path[128];
	struct run_result r;

	snprintf(path, sizeof(path), "%s/missing.sock", f->dir);
	run_migctl(&r, "--socket", path, "status", NULL);
	assert_int_equal(r.status, 69);
	assert_non_null(strstr(r.err, "does not exist (is migrd running?)"));
	run_result_done(&r);
}

static void test_connection_refused(void **state)
{
	struct fake *f = *state;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct run_result r;

	/* Bound but not listening: what a crashed migrd leaves behind. */
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/stale.sock", f->dir);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	run_migctl(&r, "--socket", sa.sun_path, "status", NULL);
	unlink(sa.sun_path);
	assert_int_equal(r.status, 69);
	assert_non_null(strstr(r.err, "connection refused on"));
	run_result_done(&r);
}

/* An unprivileged user on a socket it may not open: root cannot see this, so as root the
 * client runs in a child that drops to nobody. */
static void test_permission_denied_connect(void **state)
{
	struct fake *f = *state;
	_cleanup_free_ char *want = NULL;
	char buf[1024] = "";
	int pfd[2], status;
	ssize_t n;
	pid_t pid;

	assert_true(asprintf(&want,
			     "migctl: permission denied on %s: migctl must run as root or a member "
			     "of group 'migrd'\n",
			     f->path) > 0);
	assert_int_equal(chmod(f->dir, 0700), 0);
	if (geteuid() != 0) {
		struct run_result r;

		assert_int_equal(chmod(f->path, 0), 0);
		run_migctl(&r, "--socket", f->path, "status", NULL);
		assert_int_equal(r.status, 69);
		assert_string_equal(r.err, want);
		run_result_done(&r);
		return;
	}

	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char *argv[] = {"migctl", "--socket", f->path, "status", NULL};
		FILE *err = fdopen(pfd[1], "w");

		if (setgroups(0, NULL) < 0 || setresgid(65534, 65534, 65534) < 0 ||
		    setresuid(65534, 65534, 65534) < 0)
			_exit(77);
		status = migctl_main(4, argv, stdout, err);
		fclose(err); /* _exit() does not flush stdio */
		_exit(status);
	}
	close(pfd[1]);
	n = read(pfd[0], buf, sizeof(buf) - 1);
	close(pfd[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == 77)
		skip(); /* no CAP_SETUID here: reported as skipped, not passed */
	assert_int_equal(WEXITSTATUS(status), 69);
	assert_true(n > 0);
	assert_string_equal(buf, want);
}

/* The 64 MiB cap, scaled down: the reader stops at max bytes without a newline. */
static void test_reply_cap(void **state)
{
	static const size_t max = 1024;
	char *big = malloc(max + 2);
	_cleanup_free_ char *line = NULL;
	size_t len;
	int sv[2];

	assert_non_null(big);
	memset(big, 'x', max + 1);
	big[max] = '\n';
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	/* Exactly max bytes and the newline: accepted. */
	send_all(sv[0], big, max + 1);
	assert_int_equal(migctl_read_reply(sv[1], max, USEC_INFINITY, &line, &len), 0);
	assert_int_equal(len, max);
	/* One byte more before the newline: refused. */
	big[max] = 'x';
	big[max + 1] = '\n';
	send_all(sv[0], big, max + 2);
	assert_int_equal(migctl_read_reply(sv[1], max, USEC_INFINITY, &line, &len), -EMSGSIZE);
	close(sv[0]);
	close(sv[1]);
	free(big);
}

int client_tests_run(void)
{
#define FAKE_TEST(t) cmocka_unit_test_setup_teardown(t, fake_setup, fake_teardown)
	static const struct CMUnitTest tests[] = {
		FAKE_TEST(test_hosts_ok),
		FAKE_TEST(test_hosts_json),
		FAKE_TEST(test_reply_in_pieces),
		FAKE_TEST(test_version),
		FAKE_TEST(test_list_empty),
		FAKE_TEST(test_list_empty_json),
		FAKE_TEST(test_daemon_error),
		FAKE_TEST(test_daemon_error_json),
		FAKE_TEST(test_permission_denied_reply),
		FAKE_TEST(test_malformed),
		FAKE_TEST(test_wrong_id),
		FAKE_TEST(test_result_without_list),
		FAKE_TEST(test_hang_up),
		FAKE_TEST(test_truncated_reply),
		FAKE_TEST(test_timeout),
		FAKE_TEST(test_socket_from_env),
		FAKE_TEST(test_no_socket),
		FAKE_TEST(test_connection_refused),
		FAKE_TEST(test_permission_denied_connect),
		cmocka_unit_test(test_reply_cap),
	};

	return cmocka_run_group_tests_name("migctl-client", tests, NULL, NULL);
}
