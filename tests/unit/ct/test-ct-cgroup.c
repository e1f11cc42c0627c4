/* Unit tests for the container cgroup: real children frozen, thawed, limited, killed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint/ct/cgroup-internal.h"
#include "checkpoint/ct/container-internal.h"
#include "common/common.h"

#define N_BUSY	   100
#define TIMEOUT	   (5 * USEC_PER_SEC)
#define COUNTERS_N 128

struct fixture {
	struct ct_cgroup *cg;
	volatile uint64_t *counters; /* shared with the children */
	pid_t kids[COUNTERS_N];
	size_t n_kids;
	char name[64];
};

static int setup(void **state)
{
	static unsigned seq;
	struct fixture *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	f->counters = mmap(NULL, COUNTERS_N * sizeof(uint64_t), PROT_READ | PROT_WRITE,
			   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (f->counters == MAP_FAILED) {
		free(f);
		return -1;
	}
	snprintf(f->name, sizeof(f->name), "test-ct-cgroup-%d-%u", (int)getpid(), seq++);
	*state = f;
	return 0;
}

/* Runs even when a test failed: no cgroup and no child outlives the test. */
static int teardown(void **state)
{
	struct fixture *f = *state;

	for (size_t i = 0; i < f->n_kids; i++)
		(void)kill(f->kids[i], SIGKILL);
	if (f->cg) {
		if (ct_cgroup_kill(f->cg, TIMEOUT) < 0)
			fprintf(stderr, "cleanup: %s\n", ct_cgroup_last_error(f->cg));
		if (ct_cgroup_remove(f->cg, TIMEOUT) < 0)
			fprintf(stderr, "cleanup: %s\n", ct_cgroup_last_error(f->cg));
		ct_cgroup_free(f->cg);
	}
	for (size_t i = 0; i < f->n_kids; i++)
		(void)waitpid(f->kids[i], NULL, 0);
	munmap((void *)f->counters, COUNTERS_N * sizeof(uint64_t));
	free(f);
	return 0;
}

static void make_cgroup(struct fixture *f, enum ct_cgroup_mode mode, unsigned needs)
{
	struct ct_cgroup_params p = {.name = f->name, .needs = needs, .mode = mode};
	int r = ct_cgroup_new(&p, &f->cg);

	if (r < 0)
		fail_msg("ct_cgroup_new(%s, %s): %s", f->name, ct_cgroup_mode_to_string(mode),
			 strerror(-r));
}

static void spawn_busy(struct fixture *f, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		pid_t pid = fork();

		assert_true(pid >= 0);
		if (pid == 0) {
			(void)setpriority(PRIO_PROCESS, 0, 0);
			for (;;)
				f->counters[i]++;
		}
		f->kids[f->n_kids++] = pid;
		assert_int_equal(ct_cgroup_add_pid(f->cg, pid), 0);
	}
}

/* Waits until every counter has moved past its value in before[]. */
static bool all_advance(struct fixture *f, const uint64_t *before, usec_t timeout)
{
	usec_t deadline = now_usec(CLOCK_MONOTONIC) + timeout;

	for (;;) {
		size_t moved = 0;

		for (size_t i = 0; i < f->n_kids; i++)
			moved += f->counters[i] != before[i];
		if (moved == f->n_kids)
			return true;
		if (now_usec(CLOCK_MONOTONIC) > deadline)
			return false;
		usleep(5000);
	}
}

static void freeze_thaw(void **state, enum ct_cgroup_mode mode)
{
	struct fixture *f = *state;
	_cleanup_free_ pid_t *pids = NULL;
	uint64_t snap[COUNTERS_N];
	usec_t t0, t_freeze, t_thaw;
	size_t n;
	char buf[64];

	make_cgroup(f, mode, 0);
	assert_int_equal(f->cg->mode, mode);
	spawn_busy(f, N_BUSY);
	for (size_t i = 0; i < N_BUSY; i++)
		snap[i] = f->counters[i];
	assert_true(all_advance(f, snap, TIMEOUT));

	assert_int_equal(ct_cgroup_get_pids(f->cg, true, &pids, &n), 0);
	assert_int_equal(n, N_BUSY);
	for (size_t i = 1; i < n; i++)
		assert_true(pids[i - 1] < pids[i]);

	t0 = now_usec(CLOCK_MONOTONIC);
	assert_int_equal(ct_cgroup_freeze(f->cg, TIMEOUT), 0);
	t_freeze = now_usec(CLOCK_MONOTONIC) - t0;
	assert_int_equal(ct_cgroup_is_frozen(f->cg), 1);
	for (size_t i = 0; i < N_BUSY; i++)
		snap[i] = f->counters[i];
	usleep(100000);
	for (size_t i = 0; i < N_BUSY; i++)
		assert_true(f->counters[i] == snap[i]);

	t0 = now_usec(CLOCK_MONOTONIC);
	assert_int_equal(ct_cgroup_thaw(f->cg, TIMEOUT), 0);
	t_thaw = now_usec(CLOCK_MONOTONIC) - t0;
	assert_int_equal(ct_cgroup_is_frozen(f->cg), 0);
	assert_true(all_advance(f, snap, TIMEOUT));
	printf("%s: freeze of %d busy processes %s, thaw %s\n", ct_cgroup_mode_to_string(mode),
	       N_BUSY, format_duration(buf, sizeof(buf), t_freeze),
	       format_duration(buf + 32, 32, t_thaw));

	/* Kill while frozen: the way a checkpoint without --leave-running ends. */
	assert_int_equal(ct_cgroup_freeze(f->cg, TIMEOUT), 0);
	assert_int_equal(ct_cgroup_kill(f->cg, TIMEOUT), 0);
	for (size_t i = 0; i < f->n_kids; i++) {
		int st;

		assert_int_equal(waitpid(f->kids[i], &st, 0), f->kids[i]);
		assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	}
	f->n_kids = 0;
	free(pids);
	pids = NULL;
	assert_int_equal(ct_cgroup_get_pids(f->cg, false, &pids, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(ct_cgroup_remove(f->cg, TIMEOUT), 0);
	assert_int_equal(access(mode == CT_CGROUP_V2 ? f->cg->v2_path : f->cg->freezer_path, F_OK),
			 -1);
}

static void test_freeze_v2(void **state)
{
	freeze_thaw(state, CT_CGROUP_V2);
}

static void test_freeze_v1(void **state)
{
	freeze_thaw(state, CT_CGROUP_V1);
}

static void expect_file(const char *dir, const char *file, const char *want)
{
	_cleanup_free_ char *p = NULL, *text = NULL;

	assert_true(asprintf(&p, "%s/%s", dir, file) > 0);
	assert_int_equal(read_full_file(p, 4096, &text, NULL), 0);
	assert_string_equal(strstrip(text), want);
}

/* AUTO picks a layout offering memory and cpu; the limits land in the kernel's files. */
static void test_limits(void **state)
{
	struct fixture *f = *state;

	make_cgroup(f, CT_CGROUP_AUTO, CT_CGROUP_NEED_MEMORY | CT_CGROUP_NEED_CPU);
	assert_int_equal(ct_cgroup_set_memory_limit(f->cg, 64 << 20), 0);
	assert_int_equal(ct_cgroup_set_cpu_quota(f->cg, 50000, 100000), 0);
	if (f->cg->mode == CT_CGROUP_V2) {
		expect_file(f->cg->v2_path, "memory.max", "67108864");
		expect_file(f->cg->v2_path, "cpu.max", "50000 100000");
	} else {
		expect_file(f->cg->memory_path, "memory.limit_in_bytes", "67108864");
		expect_file(f->cg->cpu_path, "cpu.cfs_quota_us", "50000");
		expect_file(f->cg->cpu_path, "cpu.cfs_period_us", "100000");
	}
	assert_int_equal(ct_cgroup_set_cpu_quota(f->cg, 10, 100000), -EINVAL);
	assert_non_null(strstr(ct_cgroup_last_error(f->cg), "out of range"));

	spawn_busy(f, 1);
	assert_int_equal(ct_cgroup_kill(f->cg, TIMEOUT), 0);
	assert_int_equal(waitpid(f->kids[0], NULL, 0), f->kids[0]);
	f->n_kids = 0;
	assert_int_equal(ct_cgroup_remove(f->cg, TIMEOUT), 0);
}

/* pid is the one task of the cgroup; a cgroup.kill ends it. */
static void alone_then_killed(struct fixture *f, pid_t pid)
{
	_cleanup_free_ pid_t *pids = NULL;
	size_t n;
	int st;

	f->kids[f->n_kids++] = pid;
	assert_int_equal(ct_cgroup_get_pids(f->cg, false, &pids, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(pids[0], pid);
	assert_int_equal(ct_cgroup_kill(f->cg, TIMEOUT), 0);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	f->n_kids = 0;
}

/* A child cloned into the directory is in the cgroup from birth (the restore's PID 1 starts
 * this way); v1 offers no such directory, without recording an error. */
static void test_clone_into(void **state)
{
	struct fixture *f = *state;
	struct clone_args args = {.flags = CLONE_INTO_CGROUP, .exit_signal = SIGCHLD};
	struct ct_cgroup_params v1 = {.mode = CT_CGROUP_V1};
	_cleanup_(ct_cgroup_freep) struct ct_cgroup *cg1 = NULL;
	_cleanup_close_ int fd = -EBADF;
	char name1[80];
	pid_t pid;

	make_cgroup(f, CT_CGROUP_V2, 0);
	fd = ct_cgroup_open_dir(f->cg);
	assert_true(fd >= 0);
	args.cgroup = (uint64_t)fd;
	pid = (pid_t)syscall(SYS_clone3, &args, sizeof(args));
	assert_true(pid >= 0);
	if (pid == 0)
		for (;;)
			pause();
	alone_then_killed(f, pid);

	snprintf(name1, sizeof(name1), "%s-v1", f->name);
	v1.name = name1;
	assert_int_equal(ct_cgroup_new(&v1, &cg1), 0);
	assert_int_equal(ct_cgroup_open_dir(cg1), -EOPNOTSUPP);
	assert_string_equal(ct_cgroup_last_error(cg1), "");
	assert_int_equal(ct_cgroup_remove(cg1, TIMEOUT), 0);
}

/* The fd numbers pid has open, as a string: "0 1 2". */
static void fd_list(pid_t pid, char *buf, size_t size)
{
	char path[64];
	size_t at = 0;

	buf[0] = 0;
	for (int fd = 0; fd < 1024; fd++) {
		snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)pid, fd);
		if (access(path, F_OK) == 0)
			at += (size_t)snprintf(buf + at, size - at, "%s%d", at ? " " : "", fd);
	}
}

/* Starts CMD in the cgroup and checks it is the one task there, with stdin, stdout and
 * stderr and nothing else of ours (an fd we leave open on exec included), then kills the
 * cgroup. */
static void spawn_in(struct fixture *f, char *const *argv)
{
	struct ct_spec spec = {.name = f->name, .argv = argv};
	_cleanup_free_ char *error = NULL;
	_cleanup_close_ int log_fd = open("/dev/null", O_WRONLY | O_CLOEXEC), pidfd = -EBADF;
	_cleanup_close_ int leaked = fcntl(log_fd, F_DUPFD, 100);
	char fds[256];
	pid_t pid;

	assert_true(log_fd >= 0);
	assert_true(leaked >= 100);
	assert_int_equal(ct_container_spawn(&spec, f->cg, log_fd, &pid, &pidfd, &error), 0);
	assert_true(pidfd >= 0);
	fd_list(pid, fds, sizeof(fds));
	assert_string_equal(fds, "0 1 2");
	alone_then_killed(f, pid);
}

/* A container's PID 1 starts in its cgroup: a fresh one (born there), one that had a
 * cgroup.kill (where this kernel kills a child born there: moved instead), and on v1. A command
 * that cannot run says why and leaves nothing. */
static void test_container_spawn(void **state)
{
	struct fixture *f = *state;
	char *sleeper[] = {"sleep", "1000", NULL}, *nosuch[] = {"/nosuch", NULL},
	     *noexec[] = {"/etc/passwd", NULL};
	struct ct_spec spec = {.name = f->name, .argv = noexec};
	_cleanup_close_ int log_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	_cleanup_free_ char *error = NULL;
	_cleanup_free_ pid_t *pids = NULL;
	pid_t pid = 0;
	int pidfd = -EBADF;
	size_t n;

	make_cgroup(f, CT_CGROUP_V2, 0);
	spawn_in(f, sleeper);
	spawn_in(f, sleeper);
	assert_int_equal(ct_container_spawn(&spec, f->cg, log_fd, &pid, &pidfd, &error), -EACCES);
	assert_non_null(strstr(error, "starting /etc/passwd in the container"));
	assert_int_equal(pid, 0);
	assert_int_equal(pidfd, -EBADF);
	assert_int_equal(ct_cgroup_get_pids(f->cg, false, &pids, &n), 0);
	assert_int_equal(n, 0);
	free(error);
	error = NULL;
	spec.argv = nosuch;
	assert_int_equal(ct_container_spawn(&spec, f->cg, log_fd, &pid, &pidfd, &error), -ENOENT);
	assert_non_null(error);
	assert_int_equal(ct_cgroup_remove(f->cg, TIMEOUT), 0);
	f->cg = ct_cgroup_free(f->cg);

	make_cgroup(f, CT_CGROUP_V1, 0);
	spawn_in(f, sleeper);
}

/* Errors name the file that failed. */
static void test_errors(void **state)
{
	struct fixture *f = *state;
	struct ct_cgroup_params bad = {.name = "../escape"};
	struct ct_cgroup *cg = NULL;

	assert_int_equal(ct_cgroup_new(&bad, &cg), -EINVAL);
	assert_null(cg);
	make_cgroup(f, CT_CGROUP_AUTO, 0);
	assert_true(ct_cgroup_add_pid(f->cg, 0x7ffffff0) < 0);
	assert_non_null(strstr(ct_cgroup_last_error(f->cg), "cgroup.procs"));
	assert_non_null(strstr(ct_cgroup_last_error(f->cg), f->name));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_freeze_v2, setup, teardown),
		cmocka_unit_test_setup_teardown(test_freeze_v1, setup, teardown),
		cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_clone_into, setup, teardown),
		cmocka_unit_test_setup_teardown(test_container_spawn, setup, teardown),
		cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
	};

	if (geteuid() != 0) {
		fprintf(stderr, "test-ct-cgroup needs root (it creates cgroups): FAIL\n");
		return EXIT_FAILURE;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	/* Above the busy children, so the timings are the kernel's and not our wait for a CPU. */
	(void)setpriority(PRIO_PROCESS, 0, -10);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
