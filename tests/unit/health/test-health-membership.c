/* Unit tests of the corosync membership wrapper that need no running corosync; the real
 * cluster behaviour is covered by the integration tests. */
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/macro.h"
#include "health/health.h"
#include "health/membership-internal.h"

static void test_cs_error_to_errno(void **state)
{
	assert_int_equal(cs_error_to_errno(CS_OK), 0);
	assert_int_equal(cs_error_to_errno(CS_ERR_TRY_AGAIN), -EAGAIN);
	assert_int_equal(cs_error_to_errno(CS_ERR_TOO_BIG), -EMSGSIZE);
	assert_int_equal(cs_error_to_errno(CS_ERR_LIBRARY), -ECONNREFUSED);
	assert_int_equal(cs_error_to_errno(CS_ERR_BAD_HANDLE), -EBADF);
	assert_int_equal(cs_error_to_errno(CS_ERR_SECURITY), -EACCES);
	assert_int_equal(cs_error_to_errno(CS_ERR_NOT_EXIST), -ENOENT);
	assert_int_equal(cs_error_to_errno((cs_error_t)12345), -EIO);
	/* Every defined code maps to a negative errno. */
	for (int e = CS_ERR_LIBRARY; e <= CS_ERR_SECURITY; e++)
		assert_true(cs_error_to_errno((cs_error_t)e) < 0);
}

static void test_sort_unique(void **state)
{
	uint32_t ids[] = {5, 1, 3, 5, 1, UINT32_MAX, 0, 3};
	static const uint32_t want[] = {0, 1, 3, 5, UINT32_MAX};
	size_t n = health_nodeids_sort_unique(ids, ELEMENTSOF(ids));

	assert_int_equal(n, ELEMENTSOF(want));
	assert_memory_equal(ids, want, sizeof(want));
	assert_int_equal(health_nodeids_sort_unique(ids, 0), 0);
}

static void nop_confchg(void *u, const uint32_t *m, size_t nm, const uint32_t *l, size_t nl,
			const uint32_t *j, size_t nj)
{
}

static const struct health_membership_ops nop_ops = {.confchg = nop_confchg};

static void test_invalid_arguments(void **state)
{
	struct health_membership *m = NULL;
	sd_event *e = NULL;
	char long_name[200];

	memset(long_name, 'g', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = 0;

	assert_int_equal(sd_event_new(&e), 0);
	assert_int_equal(health_membership_new(NULL, "migrd", &nop_ops, NULL, &m), -EINVAL);
	assert_int_equal(health_membership_new(e, NULL, &nop_ops, NULL, &m), -EINVAL);
	assert_int_equal(health_membership_new(e, "", &nop_ops, NULL, &m), -EINVAL);
	assert_int_equal(health_membership_new(e, long_name, &nop_ops, NULL, &m), -EINVAL);
	assert_int_equal(health_membership_new(e, "migrd", NULL, NULL, &m), -EINVAL);
	assert_null(m);

	assert_null(health_membership_free(NULL));
	assert_int_equal(health_membership_send(NULL, "x", 1), -EINVAL);
	assert_int_equal(health_membership_local_nodeid(NULL), 0);
	sd_event_unref(e);
}

/* In a fresh network and mount namespace no corosync can be reached, whatever runs on the
 * host: new() must fail cleanly with the documented error. */
static void test_no_corosync(void **state)
{
	int pipefd[2], status, r = 0;
	pid_t pid;

	assert_int_equal(pipe(pipefd), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct health_membership *m = NULL;
		sd_event *e = NULL;

		close(pipefd[0]);
		if (unshare(CLONE_NEWNET | CLONE_NEWNS) < 0)
			r = -errno;
		else if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
			 mount("tmpfs", "/run", "tmpfs", 0, NULL) < 0)
			r = -errno;
		if (r < 0) {
			/* Report "cannot test" distinctly from a failure. */
			(void)!write(pipefd[1], &r, sizeof(r));
			_exit(2);
		}
		if (sd_event_new(&e) < 0)
			_exit(3);
		r = health_membership_new(e, "migrd", &nop_ops, NULL, &m);
		(void)!write(pipefd[1], &r, sizeof(r));
		_exit(m ? 4 : 0);
	}
	close(pipefd[1]);
	assert_int_equal(read(pipefd[0], &r, sizeof(r)), sizeof(r));
	close(pipefd[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == 2) {
		print_message("skipped: cannot create a network/mount namespace here: %s\n",
			      strerror(-r));
		skip();
	}
	assert_int_equal(WEXITSTATUS(status), 0);
	if (r != -ECONNREFUSED && r != -EHOSTDOWN)
		fail_msg("health_membership_new without corosync: %s", strerror(-r));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cs_error_to_errno),
		cmocka_unit_test(test_sort_unique),
		cmocka_unit_test(test_invalid_arguments),
		cmocka_unit_test(test_no_corosync),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
