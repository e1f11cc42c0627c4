/* Unit tests for the ptrace primitives on real fixture processes in a frozen cgroup: seizing,
 * registers and xstate, injected syscalls and batches of them, detaching running, frozen or
 * group-stopped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint/ct/cgroup-internal.h"
#include "checkpoint/ct/ptrace-internal.h"
#include "common/common.h"
#include "tests/fixtures/ct/fixture-ct.h"

#define TIMEOUT		  (5 * USEC_PER_SEC)
#define XSTATE_XMM_OFFSET 160 /* legacy area: xmm0-15, low halves of ymm */
#define XSTATE_YMM_OFFSET 576 /* standard format: AVX state, high halves of ymm */
#define INJECT_ROUNDS	  200

struct fixture {
	struct ct_cgroup *cg;
	struct ct_ptrace_set *set;
	struct fixture_ct_shared *sh;
	int memfd;
	pid_t pid;
	char name[64];
};

static int setup(void **state)
{
	static unsigned seq;
	struct fixture *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	f->memfd = memfd_create("fixture-ct", MFD_CLOEXEC);
	if (f->memfd < 0 || ftruncate(f->memfd, sizeof(*f->sh)) < 0)
		return -1;
	f->sh = mmap(NULL, sizeof(*f->sh), PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
	if (f->sh == MAP_FAILED)
		return -1;
	snprintf(f->name, sizeof(f->name), "test-ct-ptrace-%d-%u", (int)getpid(), seq++);
	*state = f;
	return 0;
}

/* Runs even when a test failed: the fixture dies with its cgroup, which is removed. */
static int teardown(void **state)
{
	struct fixture *f = *state;

	if (f->set)
		(void)ct_ptrace_set_detach(f->set, f->cg, CT_DETACH_RUNNING, TIMEOUT);
	ct_ptrace_set_free(f->set);
	if (f->pid > 0)
		(void)kill(f->pid, SIGKILL);
	if (f->cg) {
		if (ct_cgroup_kill(f->cg, TIMEOUT) < 0 || ct_cgroup_remove(f->cg, TIMEOUT) < 0)
			fprintf(stderr, "cleanup: %s\n", ct_cgroup_last_error(f->cg));
		ct_cgroup_free(f->cg);
	}
	if (f->pid > 0)
		(void)waitpid(f->pid, NULL, 0);
	munmap(f->sh, sizeof(*f->sh));
	close(f->memfd);
	free(f);
	return 0;
}

/* Waits until every counter moved past its current value. */
static bool all_advance(struct fixture *f, usec_t timeout)
{
	uint64_t before[FIXTURE_CT_THREADS];
	usec_t deadline = now_usec(CLOCK_MONOTONIC) + timeout;

	for (int i = 0; i < FIXTURE_CT_THREADS; i++)
		before[i] = f->sh->counter[i];
	for (;;) {
		int moved = 0;

		for (int i = 0; i < FIXTURE_CT_THREADS; i++)
			moved += f->sh->counter[i] != before[i];
		if (moved == FIXTURE_CT_THREADS)
			return true;
		if (now_usec(CLOCK_MONOTONIC) > deadline)
			return false;
		usleep(2000);
	}
}

static bool none_advance(struct fixture *f, usec_t during)
{
	uint64_t before[FIXTURE_CT_THREADS];

	for (int i = 0; i < FIXTURE_CT_THREADS; i++)
		before[i] = f->sh->counter[i];
	usleep((useconds_t)during);
	for (int i = 0; i < FIXTURE_CT_THREADS; i++)
		if (f->sh->counter[i] != before[i])
			return false;
	return true;
}

/* Starts the fixture inside a new cgroup and waits until all its threads run. */
static void start_fixture(struct fixture *f, const char *path, enum ct_cgroup_mode mode)
{
	struct ct_cgroup_params p = {.name = f->name, .mode = mode};
	int go[2], r;
	char c = 0;

	r = ct_cgroup_new(&p, &f->cg);
	if (r < 0)
		fail_msg("ct_cgroup_new(%s): %s", f->name, strerror(-r));
	assert_int_equal(pipe2(go, O_CLOEXEC), 0);
	f->pid = fork();
	assert_true(f->pid >= 0);
	if (f->pid == 0) {
		char fd[16];

		/* Enter the cgroup before the fixture exists: its threads start inside. */
		if (read(go[0], &c, 1) != 1)
			_exit(3);
		snprintf(fd, sizeof(fd), "%d", f->memfd);
		(void)fcntl(f->memfd, F_SETFD, 0);
		execl(path, path, fd, (char *)NULL);
		_exit(4);
	}
	assert_int_equal(ct_cgroup_add_pid(f->cg, f->pid), 0);
	assert_int_equal(write(go[1], &c, 1), 1);
	close(go[0]);
	close(go[1]);
	for (int i = 0; i < 500 && f->sh->ready < FIXTURE_CT_THREADS; i++)
		usleep(10000);
	assert_int_equal(f->sh->ready, FIXTURE_CT_THREADS);
	assert_true(all_advance(f, TIMEOUT));
}

static void freeze_and_seize(struct fixture *f)
{
	char b1[32], b2[32];
	usec_t t0, t1, t2;

	t0 = now_usec(CLOCK_MONOTONIC);
	assert_int_equal(ct_cgroup_freeze(f->cg, TIMEOUT), 0);
	t1 = now_usec(CLOCK_MONOTONIC);
	assert_int_equal(ct_ptrace_seize_cgroup(f->cg, TIMEOUT, &f->set), 0);
	t2 = now_usec(CLOCK_MONOTONIC);
	printf("%s: freeze %s, seize %zu tasks %s\n", ct_cgroup_mode_to_string(f->cg->mode),
	       format_duration(b1, sizeof(b1), t1 - t0), f->set->n,
	       format_duration(b2, sizeof(b2), t2 - t1));
	assert_int_equal(f->set->n, FIXTURE_CT_THREADS);
	for (size_t i = 0; i < f->set->n; i++) {
		bool known = false;

		assert_int_equal(f->set->tasks[i].tgid, f->pid);
		for (int k = 0; k < FIXTURE_CT_THREADS; k++)
			known |= f->sh->tids[k] == f->set->tasks[i].tid;
		assert_true(known);
	}
}

/* Lets the fixture finish and checks its own verdict. */
static int stop_fixture(struct fixture *f)
{
	int st;

	f->sh->stop = 1;
	assert_int_equal(waitpid(f->pid, &st, 0), f->pid);
	f->pid = 0;
	assert_true(WIFEXITED(st));
	return WEXITSTATUS(st);
}

static long inject(pid_t tid, enum ct_inject_site site, long nr, long a0, long a1, long a2, long a3,
		   long a4, long a5)
{
	const long args[6] = {a0, a1, a2, a3, a4, a5};
	long res = 0;
	int r = ct_inject_syscall_at(tid, site, nr, args, &res);

	if (r < 0)
		fail_msg("injecting syscall %ld into %d: %s", nr, (int)tid, strerror(-r));
	return res;
}

/* Whether addr lies in a mapping of pid. Not "a mapping starts at addr": the kernel may merge
 * a new anonymous mapping with a neighbour of the same protection. */
static bool maps_has(pid_t pid, unsigned long addr)
{
	_cleanup_free_ char *path = NULL, *text = NULL;

	assert_true(asprintf(&path, "/proc/%d/maps", (int)pid) > 0);
	assert_int_equal(read_full_file(path, 1 << 20, &text, NULL), 0);
	for (char *line = text; line && *line;
	     line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		unsigned long start, end;

		if (sscanf(line, "%lx-%lx", &start, &end) == 2 && start <= addr && addr < end)
			return true;
	}
	return false;
}

/* Reads (or, with wbuf, writes) n bytes of pid's memory at addr through /proc/PID/mem. */
static void mem_io(pid_t pid, unsigned long addr, void *rbuf, const void *wbuf, size_t n)
{
	char path[64];
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/mem", (int)pid);
	fd = open(path, (wbuf ? O_WRONLY : O_RDONLY) | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(wbuf ? pwrite(fd, wbuf, n, (off_t)addr) : pread(fd, rbuf, n, (off_t)addr),
			 (ssize_t)n);
	close(fd);
}

static void read_mem(pid_t pid, unsigned long addr, void *buf, size_t n)
{
	mem_io(pid, addr, buf, NULL, n);
}

/* Lets the fixture run on, and its threads must advance and its self-check pass. */
static void detach_and_check(struct fixture *f)
{
	assert_int_equal(ct_ptrace_set_detach(f->set, f->cg, CT_DETACH_RUNNING, TIMEOUT), 0);
	f->set = ct_ptrace_set_free(f->set);
	assert_true(all_advance(f, TIMEOUT));
	usleep(50000);
	if (stop_fixture(f) != 0)
		fail_msg("fixture failed its self-check: %s", (const char *)f->sh->why);
}

static void seize_inject(void **state, enum ct_cgroup_mode mode)
{
	struct fixture *f = *state;
	pid_t busy = f->sh->tids[0], sleeper, poller;
	struct user_regs_struct before, after;
	uint8_t code_before[16], code_after[16];
	const long noargs[6] = {0};
	struct ct_ptrace_task *task = NULL;
	char path[64], b1[32], b2[32];
	unsigned long addr;
	usec_t t0, t1;
	long fd;

	start_fixture(f, FIXTURE_THREADS, mode);
	busy = f->sh->tids[0];
	sleeper = f->sh->tids[1];
	poller = f->sh->tids[2];
	freeze_and_seize(f);

	/* Registers: each thread has its own TLS (fs base). */
	for (size_t i = 0; i < f->set->n; i++) {
		struct user_regs_struct regs;

		assert_int_equal(ct_ptrace_get_regs(f->set->tasks[i].tid, &regs), 0);
		assert_true(regs.fs_base != 0);
		for (size_t k = 0; k < i; k++) {
			struct user_regs_struct other;

			assert_int_equal(ct_ptrace_get_regs(f->set->tasks[k].tid, &other), 0);
			assert_true(other.fs_base != regs.fs_base);
		}
		assert_int_equal(
			inject(f->set->tasks[i].tid, CT_INJECT_AUTO, SYS_getpid, 0, 0, 0, 0, 0, 0),
			f->pid);
	}

	t0 = now_usec(CLOCK_MONOTONIC);
	for (int i = 0; i < INJECT_ROUNDS; i++)
		assert_int_equal(inject(busy, CT_INJECT_AUTO, SYS_getpid, 0, 0, 0, 0, 0, 0),
				 f->pid);
	t1 = now_usec(CLOCK_MONOTONIC);
	for (size_t i = 0; i < f->set->n; i++)
		if (f->set->tasks[i].tid == busy)
			task = &f->set->tasks[i];
	assert_non_null(task);
	for (int i = 0; i < INJECT_ROUNDS; i++) {
		long res = 0;

		assert_int_equal(ct_ptrace_task_inject(task, SYS_getpid, noargs, &res), 0);
		assert_int_equal(res, f->pid);
	}
	assert_true(task->syscall_insn != 0);
	printf("inject getpid into a busy thread: %s each, %s with the seized task's cached "
	       "syscall site (%d rounds)\n",
	       format_duration(b1, sizeof(b1), (t1 - t0) / INJECT_ROUNDS),
	       format_duration(b2, sizeof(b2), (now_usec(CLOCK_MONOTONIC) - t1) / INJECT_ROUNDS),
	       INJECT_ROUNDS);

	/* mmap and munmap in a thread blocked in nanosleep (which must restart). */
	addr = (unsigned long)inject(sleeper, CT_INJECT_AUTO, SYS_mmap, 0, 8192,
				     PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(addr > 0 && addr < (1UL << 47) && (addr & 4095) == 0);
	assert_true(maps_has(f->pid, addr));
	assert_int_equal(inject(sleeper, CT_INJECT_AUTO, SYS_munmap, (long)addr, 8192, 0, 0, 0, 0),
			 0);
	assert_false(maps_has(f->pid, addr));

	/* close() of the fixture's /dev/null, in the thread blocked in poll(). */
	fd = f->sh->devnull_fd;
	assert_true(fd > 2);
	snprintf(path, sizeof(path), "/proc/%d/fd/%ld", (int)f->pid, fd);
	assert_int_equal(access(path, F_OK), 0);
	assert_int_equal(inject(poller, CT_INJECT_AUTO, SYS_close, fd, 0, 0, 0, 0, 0), 0);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(inject(poller, CT_INJECT_AUTO, SYS_close, fd, 0, 0, 0, 0, 0), -EBADF);

	/* Each way of placing the instruction leaves code and registers as they were. */
	for (enum ct_inject_site site = CT_INJECT_AUTO; site <= CT_INJECT_AT_RIP; site++) {
		assert_int_equal(ct_ptrace_get_regs(busy, &before), 0);
		read_mem(f->pid, before.rip, code_before, sizeof(code_before));
		assert_int_equal(inject(busy, site, SYS_gettid, 0, 0, 0, 0, 0, 0), busy);
		assert_int_equal(ct_ptrace_get_regs(busy, &after), 0);
		read_mem(f->pid, before.rip, code_after, sizeof(code_after));
		assert_memory_equal(&before, &after, sizeof(before));
		assert_memory_equal(code_before, code_after, sizeof(code_before));
	}

	detach_and_check(f);
}

static void test_seize_inject_v2(void **state)
{
	seize_inject(state, CT_CGROUP_V2);
}

static void test_seize_inject_v1(void **state)
{
	seize_inject(state, CT_CGROUP_V1);
}

static void write_mem(pid_t pid, unsigned long addr, const void *buf, size_t n)
{
	mem_io(pid, addr, NULL, buf, n);
}

static void put_entry(uint64_t (*table)[8], size_t i, long nr, long a0, long a1, long a2, long a3,
		      long a4, long a5)
{
	uint64_t e[8] = {(uint64_t)nr, (uint64_t)a0, (uint64_t)a1, (uint64_t)a2,
			 (uint64_t)a3, (uint64_t)a4, (uint64_t)a5, 0x5a5a5a5a};

	memcpy(table[i], e, sizeof(e));
}

/* Batches of calls from a table, run by the loop placed in the task: results in order, the
 * first failure ends the batch (and says which and why), registers and signal mask as they
 * were after it, the program still right; and what a batch saves against single calls. */
static void test_batch(void **state)
{
	struct fixture *f = *state;
	uint64_t table[64][8], back[64][8];
	struct user_regs_struct before, after;
	uint64_t mask_before, mask_after;
	unsigned long area, code, tab, mapped;
	pid_t sleeper;
	size_t done = 99;
	long res = 99;
	char b1[32], b2[32];
	usec_t t0, t1, t2;

	start_fixture(f, FIXTURE_THREADS, CT_CGROUP_V2);
	sleeper = f->sh->tids[1];
	freeze_and_seize(f);
	area = (unsigned long)inject(sleeper, CT_INJECT_AUTO, SYS_mmap, 0, 8192,
				     PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(area > 0 && area < (1UL << 47));
	tab = area;
	code = area + 4096;
	write_mem(f->pid, code, ct_batch_code, sizeof(ct_batch_code));
	assert_int_equal(inject(sleeper, CT_INJECT_AUTO, SYS_mprotect, (long)code, 4096,
				PROT_READ | PROT_EXEC, 0, 0, 0),
			 0);

	/* getpid, gettid, mmap, a close that fails, a getpid that must not run. */
	put_entry(table, 0, SYS_getpid, 0, 0, 0, 0, 0, 0);
	put_entry(table, 1, SYS_gettid, 0, 0, 0, 0, 0, 0);
	put_entry(table, 2, SYS_mmap, 0, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	put_entry(table, 3, SYS_close, -1, 0, 0, 0, 0, 0);
	put_entry(table, 4, SYS_getpid, 0, 0, 0, 0, 0, 0);
	write_mem(f->pid, tab, table, 5 * sizeof(table[0]));
	assert_int_equal(ct_ptrace_get_regs(sleeper, &before), 0);
	assert_int_equal(ptrace(PTRACE_GETSIGMASK, sleeper, sizeof(mask_before), &mask_before), 0);
	assert_int_equal(ct_inject_batch(sleeper, code, tab, 5, &done, &res), 0);
	assert_int_equal(done, 3);
	assert_int_equal(res, -EBADF);
	assert_int_equal(ct_ptrace_get_regs(sleeper, &after), 0);
	assert_int_equal(ptrace(PTRACE_GETSIGMASK, sleeper, sizeof(mask_after), &mask_after), 0);
	assert_memory_equal(&before, &after, sizeof(before));
	assert_int_equal(mask_before, mask_after);
	read_mem(f->pid, tab, back, 5 * sizeof(back[0]));
	assert_int_equal((long)back[0][7], f->pid);
	assert_int_equal((long)back[1][7], sleeper);
	assert_true(back[2][7] > 0 && back[2][7] < (1UL << 47) && maps_has(f->pid, back[2][7]));
	assert_int_equal((long)back[3][7], -EBADF);
	assert_int_equal(back[4][7], 0x5a5a5a5a); /* never ran */
	mapped = back[2][7];

	/* A full table, all succeeding, against as many single calls. */
	for (size_t i = 0; i < 64; i++)
		put_entry(table, i, SYS_getpid, 0, 0, 0, 0, 0, 0);
	write_mem(f->pid, tab, table, sizeof(table));
	t0 = now_usec(CLOCK_MONOTONIC);
	assert_int_equal(ct_inject_batch(sleeper, code, tab, 64, &done, &res), 0);
	t1 = now_usec(CLOCK_MONOTONIC);
	assert_int_equal(done, 64);
	assert_int_equal(res, 0);
	for (size_t i = 0; i < 64; i++)
		assert_int_equal(inject(sleeper, CT_INJECT_AUTO, SYS_getpid, 0, 0, 0, 0, 0, 0),
				 f->pid);
	t2 = now_usec(CLOCK_MONOTONIC);
	read_mem(f->pid, tab, back, sizeof(back));
	for (size_t i = 0; i < 64; i++)
		assert_int_equal((long)back[i][7], f->pid);
	printf("64 getpid: %s in one batch, %s injected one by one\n",
	       format_duration(b1, sizeof(b1), t1 - t0), format_duration(b2, sizeof(b2), t2 - t1));

	/* An empty batch runs nothing and ends at once. */
	assert_int_equal(ct_inject_batch(sleeper, code, tab, 0, &done, &res), 0);
	assert_int_equal(done, 0);
	assert_int_equal(inject(sleeper, CT_INJECT_AUTO, SYS_munmap, (long)area, 8192, 0, 0, 0, 0),
			 0);
	assert_int_equal(
		inject(sleeper, CT_INJECT_AUTO, SYS_munmap, (long)mapped, 4096, 0, 0, 0, 0), 0);

	detach_and_check(f);
}

/* A stopped (SIGSTOP) process: seized and injected, and still stopped after detach. */
static void group_stopped(void **state, enum ct_cgroup_mode mode)
{
	struct fixture *f = *state;
	int st;

	start_fixture(f, FIXTURE_THREADS, mode);
	assert_int_equal(kill(f->pid, SIGSTOP), 0);
	assert_int_equal(waitpid(f->pid, &st, WUNTRACED), f->pid);
	assert_true(WIFSTOPPED(st));
	freeze_and_seize(f);
	for (size_t i = 0; i < f->set->n; i++) {
		assert_true(f->set->tasks[i].group_stopped);
		assert_int_equal(
			inject(f->set->tasks[i].tid, CT_INJECT_AUTO, SYS_getpid, 0, 0, 0, 0, 0, 0),
			f->pid);
	}
	assert_int_equal(ct_ptrace_set_detach(f->set, f->cg, CT_DETACH_RUNNING, TIMEOUT), 0);
	f->set = ct_ptrace_set_free(f->set);
	assert_true(none_advance(f, 100000));
	assert_int_equal(kill(f->pid, SIGCONT), 0);
	assert_true(all_advance(f, TIMEOUT));
	if (stop_fixture(f) != 0)
		fail_msg("fixture failed its self-check: %s", (const char *)f->sh->why);
}

/* Detached into the freezer: nothing runs until the thaw. */
static void detach_frozen(void **state, enum ct_cgroup_mode mode)
{
	struct fixture *f = *state;

	start_fixture(f, FIXTURE_THREADS, mode);
	freeze_and_seize(f);
	assert_int_equal(ct_ptrace_set_detach(f->set, f->cg, CT_DETACH_FROZEN, TIMEOUT), 0);
	f->set = ct_ptrace_set_free(f->set);
	assert_int_equal(ct_cgroup_is_frozen(f->cg), 1);
	assert_true(none_advance(f, 100000));
	assert_int_equal(ct_cgroup_thaw(f->cg, TIMEOUT), 0);
	assert_true(all_advance(f, TIMEOUT));
	if (stop_fixture(f) != 0)
		fail_msg("fixture failed its self-check: %s", (const char *)f->sh->why);
}

static void test_group_stopped_v2(void **state)
{
	group_stopped(state, CT_CGROUP_V2);
}

static void test_group_stopped_v1(void **state)
{
	group_stopped(state, CT_CGROUP_V1);
}

static void test_detach_frozen_v2(void **state)
{
	detach_frozen(state, CT_CGROUP_V2);
}

static void test_detach_frozen_v1(void **state)
{
	detach_frozen(state, CT_CGROUP_V1);
}

static int thread_index(struct fixture *f, pid_t tid)
{
	for (int k = 0; k < FIXTURE_CT_THREADS; k++)
		if (f->sh->tids[k] == tid)
			return k;
	fail_msg("unknown task %d", (int)tid);
	return -1;
}

/* The live ymm registers are in the xstate we read; writing it back changes nothing, and a
 * changed byte reaches the thread (modify_idx >= 0). */
static void avx_roundtrip(struct fixture *f, int modify_idx)
{
	start_fixture(f, FIXTURE_AVX, CT_CGROUP_AUTO);
	freeze_and_seize(f);
	for (size_t i = 0; i < f->set->n; i++) {
		pid_t tid = f->set->tasks[i].tid;
		int idx = thread_index(f, tid);
		_cleanup_free_ uint8_t *xs = NULL;
		size_t size;

		assert_int_equal(ct_ptrace_get_xstate(tid, (void **)&xs, &size), 0);
		if (i == 0)
			printf("xstate: %zu bytes\n", size);
		assert_true(size >= XSTATE_YMM_OFFSET + 16 * 16);
		for (int r = 0; r < 14; r++)
			for (int b = 0; b < 32; b++) {
				size_t off = b < 16 ? XSTATE_XMM_OFFSET + 16 * r + b
						    : XSTATE_YMM_OFFSET + 16 * r + b - 16;

				assert_int_equal(xs[off], fixture_ct_ymm_byte(idx, r, b));
			}
		if (idx == modify_idx)
			xs[XSTATE_YMM_OFFSET + 16 * 3 + 5] ^= 0x40; /* ymm3, byte 21 */
		assert_int_equal(ct_ptrace_set_xstate(tid, xs, size), 0);
	}
	assert_int_equal(ct_ptrace_set_detach(f->set, f->cg, CT_DETACH_RUNNING, TIMEOUT), 0);
	f->set = ct_ptrace_set_free(f->set);
	if (modify_idx < 0) {
		assert_true(all_advance(f, TIMEOUT));
		assert_int_equal(stop_fixture(f), 0);
		return;
	}
	for (int i = 0; i < 500 && !f->sh->bad_reg[modify_idx]; i++)
		usleep(2000);
	assert_int_equal(stop_fixture(f), 1);
	for (int k = 0; k < FIXTURE_CT_THREADS; k++)
		assert_int_equal(f->sh->bad_reg[k], k == modify_idx);
}

static void test_avx_unchanged(void **state)
{
	avx_roundtrip(*state, -1);
}

static void test_avx_modified(void **state)
{
	avx_roundtrip(*state, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_seize_inject_v2, setup, teardown),
		cmocka_unit_test_setup_teardown(test_seize_inject_v1, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_group_stopped_v2, setup, teardown),
		cmocka_unit_test_setup_teardown(test_group_stopped_v1, setup, teardown),
		cmocka_unit_test_setup_teardown(test_detach_frozen_v2, setup, teardown),
		cmocka_unit_test_setup_teardown(test_detach_frozen_v1, setup, teardown),
		cmocka_unit_test_setup_teardown(test_avx_unchanged, setup, teardown),
		cmocka_unit_test_setup_teardown(test_avx_modified, setup, teardown),
	};

	if (geteuid() != 0) {
		fprintf(stderr, "test-ct-ptrace needs root (cgroups, ptrace): FAIL\n");
		return EXIT_FAILURE;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
