/* ptrace primitives: seizing a frozen cgroup, registers and injected syscalls (x86-64). */
#include <elf.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint/ct/ptrace-internal.h"
#include "common/log.h"

#define SYSCALL_INSN_0	 0x0f
#define SYSCALL_INSN_1	 0x05
#define USER_CS_64	 0x33
#define XSTATE_MAX_BYTES (64u << 10)
#define STEP_TIMEOUT	 (2 * USEC_PER_SEC)
#define WAIT_SPINS	 200
#define WAIT_MAX_SLEEP	 1000

struct ct_ptrace_set *ct_ptrace_set_free(struct ct_ptrace_set *s)
{
	if (!s)
		return NULL;
	free(s->tasks);
	free(s);
	return NULL;
}

/* Waiting for a task's state to change: spins briefly (stops come within microseconds), then
 * sleeps growing intervals. 0 to look again, -ETIMEDOUT past the deadline. */
struct backoff {
	unsigned spins;
	usec_t interval;
};

static int backoff(struct backoff *b, usec_t deadline)
{
	usec_t now;

	if (b->spins++ < WAIT_SPINS) {
		sched_yield();
		return 0;
	}
	now = now_usec(CLOCK_MONOTONIC);
	if (now >= deadline)
		return -ETIMEDOUT;
	b->interval = b->interval ? MIN(b->interval * 2, (usec_t)WAIT_MAX_SLEEP) : 20;
	usleep((useconds_t)MIN(b->interval, deadline - now));
	return 0;
}

/* waitpid() for one traced task with a deadline. */
static int wait_task(pid_t tid, usec_t deadline, int *ret_status)
{
	struct backoff b = {0};

	for (;;) {
		int st;
		pid_t p = waitpid(tid, &st, __WALL | WNOHANG);

		if (p < 0) {
			if (errno == EINTR)
				continue;
			return log_debug_errno(errno, "waitpid(%d) failed: %m", (int)tid);
		}
		if (p == tid) {
			if (WIFEXITED(st) || WIFSIGNALED(st))
				return log_debug_errno(ESRCH, "Task %d exited while traced",
						       (int)tid);
			*ret_status = st;
			return 0;
		}
		if (backoff(&b, deadline) < 0)
			return log_debug_errno(ETIMEDOUT, "Timed out waiting for task %d to stop",
					       (int)tid);
	}
}

int ct_ptrace_seize(pid_t tid)
{
	if (ptrace(PTRACE_SEIZE, tid, 0, 0) < 0)
		return log_debug_errno(errno, "PTRACE_SEIZE of task %d failed: %m", (int)tid);
	if (ptrace(PTRACE_INTERRUPT, tid, 0, 0) < 0) {
		int r = log_debug_errno(errno, "PTRACE_INTERRUPT of task %d failed: %m", (int)tid);

		(void)ptrace(PTRACE_DETACH, tid, 0, 0);
		return r;
	}
	return 0;
}

int ct_ptrace_wait_interrupt(struct ct_ptrace_task *t, usec_t deadline)
{
	for (;;) {
		int st, sig, event, r;

		r = wait_task(t->tid, deadline, &st);
		if (r < 0)
			return r;
		sig = WSTOPSIG(st);
		event = (unsigned)st >> 16;
		if (event == PTRACE_EVENT_STOP && sig == SIGTRAP)
			return 0;
		if (event == PTRACE_EVENT_STOP && !t->group_stopped) {
			/* Group-stop: traps report the stop signal, never SIGTRAP. This first trap
			 * re-reports the group-stop; injecting here fails. Make sure one more trap
			 * is pending and let the task reach it. */
			t->group_stopped = true;
			if (ptrace(PTRACE_INTERRUPT, t->tid, 0, 0) < 0 ||
			    ptrace(PTRACE_CONT, t->tid, 0, 0) < 0)
				return log_debug_errno(errno, "Failed to resume task %d: %m",
						       (int)t->tid);
			continue;
		}
		if (event == PTRACE_EVENT_STOP)
			return 0; /* the interrupt, reported with the group-stop signal */
		if (event == 0 && sig != SIGTRAP) {
			/* A signal got dequeued before the trap: keep it for detach. */
			if (t->pending_sig)
				return log_debug_errno(EBUSY,
						       "Task %d: second signal %d while seizing",
						       (int)t->tid, sig);
			t->pending_sig = sig;
		}
		if (ptrace(PTRACE_CONT, t->tid, 0, 0) < 0)
			return log_debug_errno(errno, "Failed to resume task %d: %m", (int)t->tid);
	}
}

int ct_ptrace_detach(pid_t tid, int sig)
{
	if (ptrace(PTRACE_DETACH, tid, 0, (void *)(long)sig) < 0)
		return log_debug_errno(errno, "PTRACE_DETACH of task %d failed: %m", (int)tid);
	return 0;
}

static int read_tgid(pid_t tid, pid_t *ret)
{
	char path[64], line[256];
	_cleanup_fclose_ FILE *f = NULL;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)tid);
	f = fopen(path, "re");
	if (!f)
		return NEG_ERRNO();
	while (fgets(line, sizeof(line), f)) {
		int v;

		if (sscanf(line, "Tgid: %d", &v) == 1) {
			*ret = v;
			return 0;
		}
	}
	return -EBADMSG;
}

/* Whether a v1-frozen task sits in group-stop: PTRACE_SEIZE of such a task waits for it to
 * re-trap, which a frozen task never does, so it is seized after the thaw. */
static bool v1_frozen_in_group_stop(pid_t tid)
{
	char path[64], buf[64];
	_cleanup_close_ int fd = -EBADF;
	ssize_t k;

	snprintf(path, sizeof(path), "/proc/%d/wchan", (int)tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	k = read(fd, buf, sizeof(buf) - 1);
	if (k <= 0)
		return false;
	buf[k] = 0;
	return streq(buf, "do_signal_stop");
}

static int seize_task(struct ct_cgroup *cg, struct ct_ptrace_task *t)
{
	int r = read_tgid(t->tid, &t->tgid);

	if (r >= 0)
		r = ct_ptrace_seize(t->tid);
	if (r < 0)
		return log_debug_errno(r, "cgroup %s: failed to seize task %d: %m", cg->name,
				       (int)t->tid);
	t->seized = true;
	return 0;
}

static void detach_all(struct ct_ptrace_set *s)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->tasks[i].seized)
			(void)ct_ptrace_detach(s->tasks[i].tid, s->tasks[i].pending_sig);
}

static int seize_frozen(struct ct_cgroup *cg, struct ct_ptrace_set *s, usec_t timeout,
			usec_t deadline)
{
	int r;

	for (size_t i = 0; i < s->n; i++) {
		struct ct_ptrace_task *t = &s->tasks[i];

		if (cg->mode == CT_CGROUP_V1 && v1_frozen_in_group_stop(t->tid))
			continue;
		r = seize_task(cg, t);
		if (r < 0)
			return r;
	}
	/* A v1-frozen task takes its trap only when thawed; the interrupt is already pending,
	 * so no task runs user code in between (group-stopped ones stay stopped). */
	r = ct_cgroup_thaw(cg, timeout);
	if (r < 0)
		return r;
	for (size_t i = 0; i < s->n; i++) {
		struct ct_ptrace_task *t = &s->tasks[i];

		if (!t->seized) {
			r = seize_task(cg, t);
			if (r < 0)
				return r;
		}
	}
	for (size_t i = 0; i < s->n; i++) {
		r = ct_ptrace_wait_interrupt(&s->tasks[i], deadline);
		if (r < 0)
			return log_debug_errno(r, "cgroup %s: task %d did not stop: %m", cg->name,
					       (int)s->tasks[i].tid);
	}
	return 0;
}

int ct_ptrace_seize_cgroup(struct ct_cgroup *cg, usec_t timeout, struct ct_ptrace_set **ret)
{
	usec_t deadline = usec_add(now_usec(CLOCK_MONOTONIC), timeout);
	_cleanup_(ct_ptrace_set_freep) struct ct_ptrace_set *s = NULL;
	_cleanup_free_ pid_t *tids = NULL, *again = NULL;
	size_t n, n2;
	int r;

	r = ct_cgroup_is_frozen(cg);
	if (r < 0)
		return r;
	if (r == 0)
		return log_debug_errno(EBUSY, "cgroup %s is not frozen", cg->name);
	r = ct_cgroup_get_pids(cg, true, &tids, &n);
	if (r < 0)
		return r;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->tasks = calloc(MAX(n, 1u), sizeof(*s->tasks));
	if (!s->tasks)
		return -ENOMEM;
	s->n = n;
	for (size_t i = 0; i < n; i++)
		s->tasks[i].tid = tids[i];
	r = seize_frozen(cg, s, timeout, deadline);
	/* No task could fork while frozen: the list must be complete. */
	if (r >= 0)
		r = ct_cgroup_get_pids(cg, true, &again, &n2);
	if (r >= 0 && (n2 != n || memcmp(again, tids, n * sizeof(pid_t)) != 0))
		r = log_debug_errno(EAGAIN, "cgroup %s: tasks changed while seizing", cg->name);
	if (r < 0) {
		detach_all(s);
		return r;
	}
	*ret = TAKE_PTR(s);
	return 0;
}

/* The state letter of /proc/TID/stat, or 0 when the task is gone. */
static char task_state(pid_t tid)
{
	char path[64], buf[512], *p;
	_cleanup_close_ int fd = -EBADF;
	ssize_t k;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	k = read(fd, buf, sizeof(buf) - 1);
	if (k <= 0)
		return 0;
	buf[k] = 0;
	p = strrchr(buf, ')');
	return p && p[1] == ' ' ? p[2] : 0;
}

/* Waits until a task let go from its ptrace stop has left it. Until then the cgroup v2 freezer
 * still counts it as frozen; it counts itself out when it wakes (running, 'R') and in again
 * in the freezer's trap (sleeping, 'S') or in group-stop ('T'). Reading "frozen 1" before
 * every task was seen past 'R' may come before a task's leaving, and "frozen" drops to 0
 * after the wait. */
static int wait_left_trace_stop(pid_t tid, usec_t deadline)
{
	struct backoff b = {0};

	for (;;) {
		char st = task_state(tid);

		if (st != 'R' && st != 't')
			return 0;
		if (backoff(&b, deadline) < 0)
			return log_debug_errno(ETIMEDOUT,
					       "Timed out waiting for task %d to leave its ptrace "
					       "stop (state %c)",
					       (int)tid, st);
	}
}

int ct_ptrace_set_detach(struct ct_ptrace_set *s, struct ct_cgroup *cg, enum ct_detach_mode mode,
			 usec_t timeout)
{
	usec_t deadline = usec_add(now_usec(CLOCK_MONOTONIC), timeout);
	int r = 0;

	if (mode == CT_DETACH_FROZEN) {
		/* Tasks in a ptrace stop count as frozen; once let go they stay in the freezer. */
		r = ct_cgroup_freeze(cg, timeout);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < s->n; i++) {
		int k = ct_ptrace_detach(s->tasks[i].tid, s->tasks[i].pending_sig);

		if (k < 0 && r >= 0)
			r = k;
	}
	if (mode == CT_DETACH_FROZEN && cg->mode == CT_CGROUP_V2)
		for (size_t i = 0; i < s->n && r >= 0; i++)
			r = wait_left_trace_stop(s->tasks[i].tid, deadline);
	if (r >= 0 && mode == CT_DETACH_FROZEN)
		r = ct_cgroup_freeze(cg, timeout);
	return r;
}

static int regset_get(pid_t tid, int type, void *buf, size_t *size)
{
	struct iovec iov = {.iov_base = buf, .iov_len = *size};

	if (ptrace(PTRACE_GETREGSET, tid, (void *)(long)type, &iov) < 0)
		return log_debug_errno(errno, "PTRACE_GETREGSET %d of task %d failed: %m", type,
				       (int)tid);
	*size = iov.iov_len;
	return 0;
}

static int regset_set(pid_t tid, int type, const void *buf, size_t size)
{
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = size};

	if (ptrace(PTRACE_SETREGSET, tid, (void *)(long)type, &iov) < 0)
		return log_debug_errno(errno, "PTRACE_SETREGSET %d of task %d failed: %m", type,
				       (int)tid);
	return 0;
}

int ct_ptrace_get_regs(pid_t tid, struct user_regs_struct *ret)
{
	struct user_regs_struct regs;
	size_t size = sizeof(regs);
	int r = regset_get(tid, NT_PRSTATUS, &regs, &size);

	if (r < 0)
		return r;
	if (size != sizeof(regs))
		return log_debug_errno(EOPNOTSUPP, "Task %d: not a 64-bit task", (int)tid);
	*ret = regs;
	return 0;
}

int ct_ptrace_set_regs(pid_t tid, const struct user_regs_struct *regs)
{
	return regset_set(tid, NT_PRSTATUS, regs, sizeof(*regs));
}

int ct_ptrace_get_xstate(pid_t tid, void **ret_buf, size_t *ret_size)
{
	/* The kernel trims the buffer to its XSAVE size, which depends on the CPU. */
	_cleanup_free_ void *buf = malloc(XSTATE_MAX_BYTES);
	size_t size = XSTATE_MAX_BYTES;
	void *exact;
	int r;

	if (!buf)
		return -ENOMEM;
	r = regset_get(tid, NT_X86_XSTATE, buf, &size);
	if (r < 0)
		return r;
	exact = realloc(buf, size);
	if (!exact)
		return -ENOMEM;
	buf = NULL;
	*ret_buf = exact;
	*ret_size = size;
	return 0;
}

int ct_ptrace_set_xstate(pid_t tid, const void *buf, size_t size)
{
	return regset_set(tid, NT_X86_XSTATE, buf, size);
}

static int mem_open(pid_t tid, int flags)
{
	char path[64];
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/mem", (int)tid);
	fd = open(path, flags | O_CLOEXEC);
	if (fd < 0)
		return log_debug_errno(errno, "Failed to open %s: %m", path);
	return fd;
}

static bool is_syscall_insn(int memfd, unsigned long addr)
{
	uint8_t b[2];

	return pread(memfd, b, 2, (off_t)addr) == 2 && b[0] == SYSCALL_INSN_0 &&
	       b[1] == SYSCALL_INSN_1;
}

/* A `syscall` byte pair anywhere in [vdso]: executing from there needs no write. */
static int find_vdso_syscall(pid_t tid, int memfd, unsigned long *ret)
{
	char path[64], line[512];
	_cleanup_fclose_ FILE *f = NULL;

	snprintf(path, sizeof(path), "/proc/%d/maps", (int)tid);
	f = fopen(path, "re");
	if (!f)
		return NEG_ERRNO();
	while (fgets(line, sizeof(line), f)) {
		unsigned long start, end;
		_cleanup_free_ uint8_t *code = NULL;
		uint8_t *hit;

		if (!strstr(line, "[vdso]") || sscanf(line, "%lx-%lx", &start, &end) != 2)
			continue;
		if (end <= start || end - start > (1u << 20))
			return -EBADMSG;
		code = malloc(end - start);
		if (!code)
			return -ENOMEM;
		if (pread(memfd, code, end - start, (off_t)start) != (ssize_t)(end - start))
			return NEG_ERRNO();
		hit = memmem(code, end - start, "\x0f\x05", 2);
		if (!hit)
			return -ENOENT;
		*ret = start + (unsigned long)(hit - code);
		return 0;
	}
	return -ENOENT;
}

/* Resumes with single-step until the syscall instruction at addr has run. */
static int step_over_syscall(pid_t tid, unsigned long addr, struct user_regs_struct *ret_regs,
			     unsigned long *ret_msg)
{
	usec_t deadline = usec_add(now_usec(CLOCK_MONOTONIC), STEP_TIMEOUT);

	for (;;) {
		int st, r;

		if (ptrace(PTRACE_SINGLESTEP, tid, 0, 0) < 0)
			return log_debug_errno(errno, "PTRACE_SINGLESTEP of task %d failed: %m",
					       (int)tid);
		r = wait_task(tid, deadline, &st);
		if (r < 0)
			return r;
		r = ct_ptrace_get_regs(tid, ret_regs);
		if (r < 0)
			return r;
		/* An injected clone/fork reports its event inside the call: step on to its end. */
		switch ((unsigned)st >> 16) {
		case PTRACE_EVENT_FORK:
		case PTRACE_EVENT_VFORK:
		case PTRACE_EVENT_CLONE:
			/* Only now: the next stop overwrites the message. */
			if (ret_msg && ptrace(PTRACE_GETEVENTMSG, tid, 0, ret_msg) < 0)
				return log_debug_errno(errno, "Task %d: PTRACE_GETEVENTMSG: %m",
						       (int)tid);
			continue;
		}
		if (ret_regs->rip == addr + 2 && WSTOPSIG(st) == SIGTRAP)
			return 0;
		/* A trap still pending (e.g. a second interrupt) came first: try again. */
		if (ret_regs->rip == addr && (unsigned)st >> 16 == PTRACE_EVENT_STOP)
			continue;
		return log_debug_errno(EIO,
				       "Task %d: unexpected stop 0x%x at 0x%llx while injecting",
				       (int)tid, (unsigned)st, (unsigned long long)ret_regs->rip);
	}
}

struct inject_ctx {
	pid_t tid;
	struct user_regs_struct saved;
	uint64_t saved_mask;
	unsigned long addr;
	uint8_t old_code[2];
	bool poked;
};

static int inject_restore(struct inject_ctx *c, int memfd)
{
	int r = 0;

	if (c->poked && pwrite(memfd, c->old_code, 2, (off_t)c->addr) != 2)
		r = log_debug_errno(errno, "Task %d: failed to restore code at 0x%lx: %m",
				    (int)c->tid, c->addr);
	if (ptrace(PTRACE_SETSIGMASK, c->tid, (void *)sizeof(c->saved_mask), &c->saved_mask) < 0)
		r = log_debug_errno(errno, "Task %d: failed to restore signal mask: %m",
				    (int)c->tid);
	if (ct_ptrace_set_regs(c->tid, &c->saved) < 0)
		r = -EIO;
	return r;
}

static int pick_site(struct inject_ctx *c, enum ct_inject_site site, int memfd, unsigned long *hint)
{
	static const uint8_t insn[2] = {SYSCALL_INSN_0, SYSCALL_INSN_1};

	if (site == CT_INJECT_FIXED) {
		c->addr = *hint;
		return 0;
	}
	if (site != CT_INJECT_AT_RIP) {
		/* Stopped right after a syscall (blocked in one, typically). */
		if (c->saved.rip >= 2 && is_syscall_insn(memfd, c->saved.rip - 2)) {
			c->addr = c->saved.rip - 2;
			return 0;
		}
		/* The one found last time, if it is still there: saves reading the maps. */
		if (hint && *hint && is_syscall_insn(memfd, *hint)) {
			c->addr = *hint;
			return 0;
		}
		if (find_vdso_syscall(c->tid, memfd, &c->addr) >= 0) {
			if (hint)
				*hint = c->addr;
			return 0;
		}
		if (site == CT_INJECT_EXISTING)
			return log_debug_errno(ENOENT, "Task %d: no syscall instruction found",
					       (int)c->tid);
	}
	c->addr = c->saved.rip;
	if (pread(memfd, c->old_code, 2, (off_t)c->addr) != 2)
		return log_debug_errno(errno, "Task %d: failed to read code at 0x%lx: %m",
				       (int)c->tid, c->addr);
	if (pwrite(memfd, insn, 2, (off_t)c->addr) != 2)
		return log_debug_errno(errno, "Task %d: failed to write code at 0x%lx: %m",
				       (int)c->tid, c->addr);
	c->poked = true;
	return 0;
}

static int inject(pid_t tid, enum ct_inject_site site, unsigned long *hint, long nr,
		  const long args[6], long *ret_result, unsigned long *ret_msg)
{
	struct inject_ctx c = {.tid = tid};
	struct user_regs_struct regs;
	_cleanup_close_ int memfd = -EBADF;
	/* SIGTRAP stays open: the step's SIGTRAP is forced, and forcing a blocked signal would
	 * reset the task's handler for it. */
	uint64_t all = ~(uint64_t)0 & ~(UINT64_C(1) << (SIGTRAP - 1));
	int r, k;

	r = ct_ptrace_get_regs(tid, &c.saved);
	if (r < 0)
		return r;
	if (c.saved.cs != USER_CS_64)
		return log_debug_errno(EOPNOTSUPP, "Task %d runs 32-bit code", (int)tid);
	if (ptrace(PTRACE_GETSIGMASK, tid, (void *)sizeof(c.saved_mask), &c.saved_mask) < 0)
		return log_debug_errno(errno, "Task %d: PTRACE_GETSIGMASK failed: %m", (int)tid);
	if (site != CT_INJECT_FIXED) {
		memfd = mem_open(tid, O_RDWR);
		if (memfd < 0)
			return memfd;
	}
	r = pick_site(&c, site, memfd, hint);
	if (r < 0)
		return r;

	regs = c.saved;
	regs.rax = (unsigned long)nr;
	regs.rdi = (unsigned long)args[0];
	regs.rsi = (unsigned long)args[1];
	regs.rdx = (unsigned long)args[2];
	regs.r10 = (unsigned long)args[3];
	regs.r8 = (unsigned long)args[4];
	regs.r9 = (unsigned long)args[5];
	regs.orig_rax = (unsigned long)-1; /* no syscall restart on the way out of the stop */
	regs.rip = c.addr;
	/* Signals stay queued during the call instead of running handlers at our rip. */
	if (ptrace(PTRACE_SETSIGMASK, tid, (void *)sizeof(all), &all) < 0)
		r = log_debug_errno(errno, "Task %d: PTRACE_SETSIGMASK failed: %m", (int)tid);
	if (r >= 0)
		r = ct_ptrace_set_regs(tid, &regs);
	if (r >= 0)
		r = step_over_syscall(tid, c.addr, &regs, ret_msg);
	k = inject_restore(&c, memfd);
	if (r < 0)
		return r;
	if (k < 0)
		return k;
	log_debug("Task %d: injected syscall %ld at 0x%lx%s = %lld", (int)tid, nr, c.addr,
		  c.poked ? " (written)" : "", (long long)regs.rax);
	*ret_result = (long)regs.rax;
	return 0;
}

int ct_inject_syscall_at(pid_t tid, enum ct_inject_site site, long nr, const long args[6],
			 long *ret_result)
{
	return inject(tid, site, NULL, nr, args, ret_result, NULL);
}

int ct_inject_syscall_site(pid_t tid, unsigned long site, long nr, const long args[6],
			   long *ret_result, unsigned long *ret_event_msg)
{
	return inject(tid, CT_INJECT_FIXED, &site, nr, args, ret_result, ret_event_msg);
}

int ct_inject_syscall(pid_t tid, long nr, const long args[6], long *ret_result)
{
	return inject(tid, CT_INJECT_AUTO, NULL, nr, args, ret_result, NULL);
}

int ct_ptrace_task_inject(struct ct_ptrace_task *t, long nr, const long args[6], long *ret_result)
{
	t->stepped = true;
	return inject(t->tid, CT_INJECT_AUTO, &t->syscall_insn, nr, args, ret_result, NULL);
}

/* The loop of ct_inject_batch(), position independent (x86-64):
 *
 *	1: test %r13, %r13;  jz 2f
 *	   mov (%r12), %rax;  mov 8..48(%r12), %rdi %rsi %rdx %r10 %r8 %r9
 *	   syscall
 *	   mov %rax, 56(%r12)
 *	   cmp $-4095, %rax;  jae 2f		a failure ends the batch
 *	   add $64, %r12;  dec %r13;  jmp 1b
 *	2: int3
 */
const uint8_t ct_batch_code[CT_BATCH_CODE_SIZE] = {
	0x4d, 0x85, 0xed, 0x74, 0x3a, 0x49, 0x8b, 0x04, 0x24, 0x49, 0x8b, 0x7c, 0x24,
	0x08, 0x49, 0x8b, 0x74, 0x24, 0x10, 0x49, 0x8b, 0x54, 0x24, 0x18, 0x4d, 0x8b,
	0x54, 0x24, 0x20, 0x4d, 0x8b, 0x44, 0x24, 0x28, 0x4d, 0x8b, 0x4c, 0x24, 0x30,
	0x0f, 0x05, 0x49, 0x89, 0x44, 0x24, 0x38, 0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff,
	0x73, 0x09, 0x49, 0x83, 0xc4, 0x40, 0x49, 0xff, 0xcd, 0xeb, 0xc1, 0xcc,
};

int ct_inject_batch(pid_t tid, unsigned long code, unsigned long table, size_t n, size_t *ret_done,
		    long *ret_result)
{
	usec_t deadline = usec_add(now_usec(CLOCK_MONOTONIC), STEP_TIMEOUT);
	uint64_t all = ~(uint64_t)0 & ~(UINT64_C(1) << (SIGTRAP - 1));
	struct inject_ctx c = {.tid = tid};
	struct user_regs_struct regs;
	int r, k;

	r = ct_ptrace_get_regs(tid, &c.saved);
	if (r < 0)
		return r;
	if (ptrace(PTRACE_GETSIGMASK, tid, (void *)sizeof(c.saved_mask), &c.saved_mask) < 0)
		return log_debug_errno(errno, "Task %d: PTRACE_GETSIGMASK failed: %m", (int)tid);
	regs = c.saved;
	regs.r12 = table;
	regs.r13 = n;
	regs.orig_rax = (unsigned long)-1;
	regs.rip = code;
	if (ptrace(PTRACE_SETSIGMASK, tid, (void *)sizeof(all), &all) < 0)
		r = log_debug_errno(errno, "Task %d: PTRACE_SETSIGMASK failed: %m", (int)tid);
	if (r >= 0)
		r = ct_ptrace_set_regs(tid, &regs);
	for (; r >= 0;) {
		int st;

		if (ptrace(PTRACE_CONT, tid, 0, 0) < 0) {
			r = log_debug_errno(errno, "PTRACE_CONT of task %d failed: %m", (int)tid);
			break;
		}
		r = wait_task(tid, deadline, &st);
		if (r >= 0)
			r = ct_ptrace_get_regs(tid, &regs);
		if (r < 0)
			break;
		if (regs.rip == code + CT_BATCH_CODE_SIZE && WSTOPSIG(st) == SIGTRAP &&
		    (unsigned)st >> 16 == 0)
			break; /* the int3 at its end */
		/* A trap still pending (a second interrupt) came first: go on. */
		if ((unsigned)st >> 16 == PTRACE_EVENT_STOP)
			continue;
		r = log_debug_errno(EIO, "Task %d: unexpected stop 0x%x at 0x%llx in a batch",
				    (int)tid, (unsigned)st, (unsigned long long)regs.rip);
	}
	k = inject_restore(&c, -EBADF);
	if (r < 0)
		return r;
	if (k < 0)
		return k;
	if (regs.r12 < table || (regs.r12 - table) % CT_BATCH_ENTRY_SIZE ||
	    (regs.r12 - table) / CT_BATCH_ENTRY_SIZE > n)
		return log_debug_errno(EIO, "Task %d: a batch ended at 0x%llx, outside its table",
				       (int)tid, (unsigned long long)regs.r12);
	*ret_done = (regs.r12 - table) / CT_BATCH_ENTRY_SIZE;
	*ret_result = *ret_done < n ? (long)regs.rax : 0;
	log_debug("Task %d: injected a batch of %zu syscalls, %zu done", (int)tid, n, *ret_done);
	return 0;
}

int ct_ptrace_set_settle(struct ct_ptrace_set *s, usec_t timeout)
{
	usec_t deadline = usec_add(now_usec(CLOCK_MONOTONIC), timeout);
	int r = 0;

	for (size_t i = 0; i < s->n; i++) {
		struct ct_ptrace_task *t = &s->tasks[i];

		if (t->stepped && (ptrace(PTRACE_INTERRUPT, t->tid, 0, 0) < 0 ||
				   ptrace(PTRACE_CONT, t->tid, 0, 0) < 0))
			return log_debug_errno(errno, "Failed to resume task %d: %m", (int)t->tid);
	}
	for (size_t i = 0; i < s->n && r >= 0; i++) {
		struct ct_ptrace_task *t = &s->tasks[i];

		if (t->stepped) {
			r = ct_ptrace_wait_interrupt(t, deadline);
			t->stepped = false;
		}
	}
	return r;
}
