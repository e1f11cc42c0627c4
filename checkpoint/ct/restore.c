/* Restore: a stopped helper becomes the container's PID 1 in fresh namespaces; every other
 * process and thread is cloned from its parent by injected clone3() with its old pid; then each
 * process gets its memory, files and state through injected calls, and all are let go at once. */
#include <assert.h>
#include <elf.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/ioprio.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <linux/securebits.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint/ct/container-internal.h"
#include "checkpoint/ct/ptrace-internal.h"
#include "checkpoint/ct/net-internal.h"
#include "checkpoint/ct/restore-internal.h"
#include "common/common.h"

#define RSEQ_FLAG_UNREGISTER 1

#define STOP_TIMEOUT (5 * USEC_PER_SEC)

int restore_fail(struct restorer *R, int r, const char *format, ...)
{
	va_list ap;
	size_t n;

	if (R->err[0])
		return r;
	n = (size_t)snprintf(R->err, CT_ENGINE_ERROR_MAX, "%s: ", R->o->name);
	if (n < CT_ENGINE_ERROR_MAX) {
		va_start(ap, format);
		vsnprintf(R->err + n, CT_ENGINE_ERROR_MAX - n, format, ap);
		va_end(ap);
	}
	return r;
}

int restore_call(struct restorer *R, struct rproc *p, pid_t htid, const char *what, long nr,
		 long a0, long a1, long a2, long a3, long a4, long a5, long *ret)
{
	const long args[6] = {a0, a1, a2, a3, a4, a5};
	long res;
	int r = ct_inject_syscall_site(htid, p->site, nr, args, &res, &R->event_msg);

	if (r < 0)
		return restore_fail(R, r, "pid %u: cannot run %s in the task: %s", p->img->task.pid,
				    what, strerror(-r));
	if (res < 0 && res > -4096)
		return restore_fail(R, (int)res, "pid %u: %s failed: %s", p->img->task.pid, what,
				    strerror((int)-res));
	if (ret)
		*ret = res;
	return 0;
}

int restore_poke(struct restorer *R, struct rproc *p, unsigned long addr, const void *data,
		 size_t len)
{
	struct iovec local = {(void *)data, len}, remote = {(void *)addr, len};

	if (process_vm_writev(p->hpid, &local, 1, &remote, 1, 0) != (ssize_t)len)
		return restore_fail(R, NEG_ERRNO(), "pid %u: cannot write its memory at %#lx: %m",
				    p->img->task.pid, addr);
	return 0;
}

void restore_batch_init(struct restore_batch *b, struct rproc *p, pid_t htid)
{
	b->p = p;
	b->htid = htid;
	b->n = 0;
	b->data_len = 0;
}

int restore_batch_data(struct restorer *R, struct restore_batch *b, const void *data, size_t len,
		       unsigned long *ret_addr)
{
	size_t at;
	int r;

	if (len > RESTORE_BATCH_DATA)
		return restore_fail(R, -E2BIG, "pid %u: %zu bytes for a batch of calls",
				    b->p->img->task.pid, len);
	/* A full table flushes here, not at the restore_batch_add() that follows: that flush
	 * would start the next batch's data over these bytes, which its call still needs. */
	if (b->n == RESTORE_BATCH_MAX ||
	    ((b->data_len + 15) & ~(size_t)15) + len > RESTORE_BATCH_DATA) {
		r = restore_batch_flush(R, b);
		if (r < 0)
			return r;
	}
	at = ((b->data_len + 15) & ~(size_t)15);
	memcpy(b->data + at, data, len);
	b->data_len = at + len;
	*ret_addr = b->p->scratch + RESTORE_BATCH_DATA_OFF + at;
	return 0;
}

int restore_batch_add(struct restorer *R, struct restore_batch *b, const char *what, long nr,
		      long a0, long a1, long a2, long a3, long a4, long a5)
{
	if (b->n == RESTORE_BATCH_MAX) {
		int r = restore_batch_flush(R, b);

		if (r < 0)
			return r;
	}
	b->what[b->n] = what;
	memcpy(b->table[b->n],
	       (uint64_t[8]){(uint64_t)nr, (uint64_t)a0, (uint64_t)a1, (uint64_t)a2, (uint64_t)a3,
			     (uint64_t)a4, (uint64_t)a5, 0},
	       sizeof(b->table[0]));
	b->n++;
	return 0;
}

int restore_batch_flush(struct restorer *R, struct restore_batch *b)
{
	struct rproc *p = b->p;
	size_t n = b->n, done = 0;
	long res = 0;
	int r;

	b->n = 0;
	if (n == 0)
		return 0;
	if (b->data_len > 0) {
		r = restore_poke(R, p, p->scratch + RESTORE_BATCH_DATA_OFF, b->data, b->data_len);
		b->data_len = 0;
		if (r < 0)
			return r;
	}
	if (!p->batch_code) {
		for (size_t i = 0; i < n; i++) {
			const uint64_t *e = b->table[i];

			r = restore_call(R, p, b->htid, b->what[i], (long)e[0], (long)e[1],
					 (long)e[2], (long)e[3], (long)e[4], (long)e[5], (long)e[6],
					 NULL);
			if (r < 0)
				return r;
		}
		return 0;
	}
	r = restore_poke(R, p, p->scratch + RESTORE_BATCH_TABLE_OFF, b->table,
			 n * sizeof(b->table[0]));
	if (r < 0)
		return r;
	r = ct_inject_batch(b->htid, p->batch_code, p->scratch + RESTORE_BATCH_TABLE_OFF, n, &done,
			    &res);
	if (r < 0)
		return restore_fail(R, r,
				    "pid %u: cannot run %s (and %zu more calls) in the task: %s",
				    p->img->task.pid, b->what[0], n - 1, strerror(-r));
	if (done < n)
		return restore_fail(R, (int)res, "pid %u: %s failed: %s", p->img->task.pid,
				    b->what[done], strerror((int)-res));
	return 0;
}

int restore_batch_run(struct restorer *R, struct restore_batch *b, long *results, size_t *ret_done)
{
	struct rproc *p = b->p;
	size_t n = b->n, done = 0;
	long res = 0;
	int r;

	b->n = 0;
	*ret_done = 0;
	if (n == 0)
		return 0;
	if (b->data_len > 0) {
		r = restore_poke(R, p, p->scratch + RESTORE_BATCH_DATA_OFF, b->data, b->data_len);
		b->data_len = 0;
		if (r < 0)
			return r;
	}
	if (!p->batch_code) {
		for (; done < n; done++) {
			const uint64_t *e = b->table[done];
			const long args[6] = {(long)e[1], (long)e[2], (long)e[3],
					      (long)e[4], (long)e[5], (long)e[6]};

			r = ct_inject_syscall_site(b->htid, p->site, (long)e[0], args,
						   &results[done], &R->event_msg);
			if (r < 0)
				return restore_fail(R, r, "pid %u: cannot run %s in the task: %s",
						    p->img->task.pid, b->what[done], strerror(-r));
			if (results[done] < 0 && results[done] > -4096)
				break;
		}
		*ret_done = done;
		return 0;
	}
	r = restore_poke(R, p, p->scratch + RESTORE_BATCH_TABLE_OFF, b->table,
			 n * sizeof(b->table[0]));
	if (r < 0)
		return r;
	r = ct_inject_batch(b->htid, p->batch_code, p->scratch + RESTORE_BATCH_TABLE_OFF, n, &done,
			    &res);
	if (r < 0)
		return restore_fail(R, r,
				    "pid %u: cannot run %s (and %zu more calls) in the task: %s",
				    p->img->task.pid, b->what[0], n - 1, strerror(-r));
	{
		struct iovec l = {b->table, done * sizeof(b->table[0])},
			     rm = {(void *)(p->scratch + RESTORE_BATCH_TABLE_OFF), l.iov_len};

		if (done > 0 && process_vm_readv(p->hpid, &l, 1, &rm, 1, 0) != (ssize_t)l.iov_len)
			return restore_fail(R, NEG_ERRNO(),
					    "pid %u: reading the results of its calls: %m",
					    p->img->task.pid);
	}
	for (size_t i = 0; i < done; i++)
		results[i] = (long)b->table[i][7];
	if (done < n)
		results[done] = res;
	*ret_done = done;
	return 0;
}

static int cmp_install(const void *a, const void *b)
{
	const struct restore_fd_install *x = a, *y = b;

	return (x->target > y->target) - (x->target < y->target);
}

/* One SCM_RIGHTS message carries them all, in the order of their targets; the task's recvmsg
 * gives them the lowest free numbers, in that order. The targets are free too (nothing is at
 * a number of the image's before it is restored, and every number is restored once), so the
 * i-th number received is at most the i-th target. Moved into place from the last down, no
 * dup3 can overwrite one still to be moved: each target is above every number received
 * before its own. */
int restore_install_fds(struct restorer *R, struct rproc *p, struct restore_fd_install *fds,
			size_t n)
{
	/* Scratch: msghdr at 0, iovec at 64, one byte at 96, control at 128. */
	union {
		struct cmsghdr h;
		uint8_t b[CMSG_SPACE(sizeof(int) * RESTORE_INSTALL_MAX)];
	} ctl = {};
	struct msghdr mh = {};
	struct iovec iov = {(void *)"f", 1};
	unsigned long s = p->scratch;
	struct {
		struct msghdr mh;
		uint8_t pad[64 - sizeof(struct msghdr)];
		struct iovec iov;
		uint8_t pad2[32 - sizeof(struct iovec)];
		uint8_t byte[32];
		uint8_t ctl[CMSG_SPACE(sizeof(int) * RESTORE_INSTALL_MAX)];
	} remote = {};
	size_t ctl_len = CMSG_SPACE(sizeof(int) * n);
	int got[RESTORE_INSTALL_MAX];
	_cleanup_free_ struct restore_batch *b = NULL;
	struct cmsghdr *c;
	int r;

	assert(n > 0 && n <= RESTORE_INSTALL_MAX);
	qsort(fds, n, sizeof(*fds), cmp_install);
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = &ctl;
	mh.msg_controllen = ctl_len;
	c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int) * n);
	for (size_t i = 0; i < n; i++)
		memcpy(CMSG_DATA(c) + i * sizeof(int), &fds[i].ours, sizeof(int));
	if (sendmsg(R->chan, &mh, MSG_DONTWAIT) < 0)
		return restore_fail(R, NEG_ERRNO(), "sending %zu files to pid %u failed: %m", n,
				    p->img->task.pid);
	remote.mh.msg_iov = (void *)(s + 64);
	remote.mh.msg_iovlen = 1;
	remote.mh.msg_control = (void *)(s + 128);
	remote.mh.msg_controllen = ctl_len;
	remote.iov = (struct iovec){(void *)(s + 96), 1};
	r = restore_poke(R, p, s, &remote, offsetof(typeof(remote), ctl) + ctl_len);
	if (r >= 0)
		r = restore_call(R, p, p->hpid, "recvmsg", SYS_recvmsg, R->chan_fd, (long)s, 0, 0,
				 0, 0, NULL);
	if (r < 0)
		return r;
	{
		size_t len = offsetof(typeof(remote), ctl) + ctl_len;
		struct iovec l = {&remote, len}, rm = {(void *)s, len};

		if (process_vm_readv(p->hpid, &l, 1, &rm, 1, 0) != (ssize_t)len)
			return restore_fail(R, NEG_ERRNO(), "pid %u: reading received fds: %m",
					    p->img->task.pid);
	}
	c = (struct cmsghdr *)remote.ctl;
	if ((remote.mh.msg_flags & MSG_CTRUNC) || c->cmsg_level != SOL_SOCKET ||
	    c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int) * n))
		return restore_fail(R, -EMFILE,
				    "pid %u: of %zu files handed over, not all arrived (out of fd "
				    "numbers?)",
				    p->img->task.pid, n);
	memcpy(got, CMSG_DATA(c), sizeof(int) * n);
	for (size_t i = 0; i < n; i++)
		if (got[i] < 0 || got[i] > fds[i].target || (i > 0 && got[i] <= got[i - 1]))
			return restore_fail(R, -EIO,
					    "pid %u: a file handed over arrived at fd %d, where "
					    "%d was to come (at or below %d)",
					    p->img->task.pid, got[i], i ? got[i - 1] + 1 : 0,
					    fds[i].target);
	b = malloc(sizeof(*b));
	if (!b)
		return -ENOMEM;
	restore_batch_init(b, p, p->hpid);
	for (size_t i = n; r >= 0 && i-- > 0;)
		r = restore_fd_move_add(R, b, got[i], fds[i].target, fds[i].cloexec);
	if (r >= 0)
		r = restore_batch_flush(R, b);
	return r;
}

int restore_install_fd(struct restorer *R, struct rproc *p, int ours, int target, bool cloexec)
{
	struct restore_fd_install one = {.ours = ours, .target = target, .cloexec = cloexec};

	return restore_install_fds(R, p, &one, 1);
}

int restore_fd_move_add(struct restorer *R, struct restore_batch *b, int fd, int target,
			bool cloexec)
{
	int r = 0;

	if (fd != target) {
		r = restore_batch_add(R, b, "dup3", SYS_dup3, fd, target, cloexec ? O_CLOEXEC : 0,
				      0, 0, 0);
		if (r >= 0)
			r = restore_batch_add(R, b, "close", SYS_close, fd, 0, 0, 0, 0, 0);
	} else if (cloexec)
		r = restore_batch_add(R, b, "fcntl", SYS_fcntl, fd, F_SETFD, FD_CLOEXEC, 0, 0, 0);
	return r;
}

int restore_fd_move(struct restorer *R, struct restore_batch *b, int fd, int target, bool cloexec)
{
	int r = restore_fd_move_add(R, b, fd, target, cloexec);

	return r < 0 ? r : restore_batch_flush(R, b);
}

static struct rproc *proc_by_pid(struct restorer *R, uint32_t pid)
{
	for (size_t i = 0; i < R->n_procs; i++)
		if (R->procs[i].img->task.pid == pid)
			return &R->procs[i];
	return NULL;
}

/* Waits for a new task's first stop (auto-attached children start in PTRACE_EVENT_STOP). */
static int wait_new_task(struct restorer *R, pid_t htid)
{
	usec_t deadline = usec_add(now_usec(CLOCK_MONOTONIC), STOP_TIMEOUT);

	for (;;) {
		int st;
		pid_t k = waitpid(htid, &st, __WALL | WNOHANG);

		if (k < 0 && errno != EINTR)
			return restore_fail(R, NEG_ERRNO(), "waiting for new task %d: %m",
					    (int)htid);
		if (k == htid) {
			if (WIFSTOPPED(st))
				return 0;
			return restore_fail(R, -ESRCH, "new task %d exited", (int)htid);
		}
		if (now_usec(CLOCK_MONOTONIC) > deadline)
			return restore_fail(R, -ETIMEDOUT, "new task %d did not stop", (int)htid);
		usleep(50);
	}
}

/* clone3() in task htid of p with set_tid = {tid}; returns the new task's host id. */
static int inject_clone(struct restorer *R, struct rproc *p, pid_t htid, uint32_t tid,
			uint64_t flags, unsigned long scratch, pid_t *ret)
{
	struct {
		struct clone_args a;
		pid_t set_tid[1];
	} args = {.a = {.flags = flags,
			.exit_signal = (flags & CLONE_THREAD) ? 0 : SIGCHLD,
			.set_tid = scratch + offsetof(typeof(args), set_tid),
			.set_tid_size = 1},
		  .set_tid = {(pid_t)tid}};
	unsigned long msg = 0;
	int r;

	r = restore_poke(R, p, scratch, &args, sizeof(args));
	if (r >= 0)
		r = restore_call(R, p, htid, "clone3", SYS_clone3, (long)scratch, sizeof(args.a), 0,
				 0, 0, 0, NULL);
	if (r < 0)
		return restore_fail(R, r, "pid %u: creating task %u failed", p->img->task.pid, tid);
	msg = R->event_msg;
	R->event_msg = 0;
	if (msg == 0)
		return restore_fail(R, -ESRCH, "pid %u: no id for new task %u", p->img->task.pid,
				    tid);
	*ret = (pid_t)msg; /* known before the wait: a failure must still reap it */
	return wait_new_task(R, (pid_t)msg);
}

/* Below the helper's stack pointer: unused memory for clone3's arguments, before the
 * process has its own memory. */
static int stack_scratch(struct restorer *R, pid_t htid, unsigned long *ret)
{
	struct user_regs_struct regs;
	int r = ct_ptrace_get_regs(htid, &regs);

	if (r < 0)
		return restore_fail(R, r, "reading the registers of helper %d failed", (int)htid);
	*ret = (regs.rsp - 65536) & ~15UL;
	return 0;
}

/* A child that had exited and was not reaped: cloned, then made to end the same way, so that
 * its parent's wait() finds it. */
static int make_zombie(struct restorer *R, struct rproc *p, unsigned long scratch, uint32_t pid,
		       int status)
{
	const long args[6] = {WIFEXITED(status) ? WEXITSTATUS(status) : 0};
	struct rlimit nocore = {0, 0};
	pid_t h = 0;
	long res;
	int r, st;

	r = inject_clone(R, p, p->hpid, pid, 0, scratch, &h);
	if (r < 0)
		return r;
	if (WIFSIGNALED(status)) {
		int sig = WTERMSIG(status);
		uint64_t dfl[4] = {0, 0, 0, 0}, none = 0;

		(void)prlimit(h, RLIMIT_CORE, &nocore, NULL);
		r = restore_poke(R, p, scratch, dfl, sizeof(dfl));
		if (r >= 0)
			r = restore_call(R, p, h, "rt_sigaction", SYS_rt_sigaction, sig,
					 (long)scratch, 0, 8, 0, 0, NULL);
		if (r < 0)
			return r;
		if (ptrace(PTRACE_SETSIGMASK, h, sizeof(none), &none) < 0 ||
		    syscall(SYS_tgkill, h, h, sig) < 0 || ptrace(PTRACE_CONT, h, 0, 0) < 0 ||
		    waitpid(h, &st, __WALL) != h || !WIFSTOPPED(st) ||
		    ptrace(PTRACE_CONT, h, 0, (void *)(long)sig) < 0 ||
		    waitpid(h, &st, __WALL) != h || !WIFSIGNALED(st))
			return restore_fail(R, -EIO,
					    "pid %u: recreating its exited child %u failed",
					    p->img->task.pid, pid);
		return 0;
	}
	/* The call does not return: the injection reports the task gone. */
	r = ct_inject_syscall_site(h, p->site, SYS_exit_group, args, &res, NULL);
	if (r != -ESRCH)
		return restore_fail(R, r < 0 ? r : -EIO,
				    "pid %u: recreating its exited child %u failed",
				    p->img->task.pid, pid);
	return 0;
}

/* Every process from its parent, parents first, each with its session; then the threads. */
static int build_tree(struct restorer *R)
{
	size_t *queue = calloc(R->n_procs, sizeof(*queue)), head = 0, tail = 0;
	int r = 0;

	if (!queue)
		return -ENOMEM;
	queue[tail++] = 0; /* pid 1 is procs[0] */
	while (r >= 0 && head < tail) {
		struct rproc *p = &R->procs[queue[head++]];
		const struct ct_image_task *t = &p->img->task;
		unsigned long scratch = 0;

		if (t->sid == t->pid)
			r = restore_call(R, p, p->hpid, "setsid", SYS_setsid, 0, 0, 0, 0, 0, 0,
					 NULL);
		if (r >= 0)
			r = stack_scratch(R, p->hpid, &scratch);
		for (size_t i = 0; r >= 0 && i < R->n_procs; i++) {
			struct rproc *c = &R->procs[i];

			if (c->img->task.ppid != t->pid || i == 0)
				continue;
			if (c->img->task.sid != t->sid && c->img->task.sid != c->img->task.pid) {
				r = restore_fail(R, -EOPNOTSUPP,
						 "pid %u: session %u is neither its own nor its "
						 "parent's",
						 c->img->task.pid, c->img->task.sid);
				break;
			}
			r = inject_clone(R, p, p->hpid, c->img->task.pid, 0, scratch, &c->hpid);
			c->htids[0] = c->hpid;
			if (r >= 0) {
				c->site = p->site;
				queue[tail++] = i;
			}
		}
		for (size_t z = 0; r >= 0 && z < t->n_zombies; z++)
			r = make_zombie(R, p, scratch, (uint32_t)(t->zombies[z] >> 32),
					(int)(uint32_t)t->zombies[z]);
	}
	free(queue);
	if (r >= 0 && tail != R->n_procs)
		r = restore_fail(R, -EINVAL, "the image's process tree is not connected to pid 1");
	/* Process groups: leaders first, then the members. */
	for (int pass = 0; r >= 0 && pass < 2; pass++)
		for (size_t i = 0; r >= 0 && i < R->n_procs; i++) {
			const struct ct_image_task *t = &R->procs[i].img->task;

			if (t->pid == t->sid || (pass == 0) != (t->pgid == t->pid))
				continue;
			r = restore_call(R, &R->procs[i], R->procs[i].hpid, "setpgid", SYS_setpgid,
					 0, t->pgid, 0, 0, 0, 0, NULL);
		}
	for (size_t i = 0; r >= 0 && i < R->n_procs; i++) {
		struct rproc *p = &R->procs[i];
		unsigned long scratch = 0;

		r = stack_scratch(R, p->hpid, &scratch);
		for (size_t j = 1; r >= 0 && j < p->img->task.n_threads; j++) {
			r = inject_clone(R, p, p->hpid, p->img->task.threads[j].tid,
					 CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND |
						 CLONE_THREAD | CLONE_SYSVSEM,
					 scratch, &p->htids[j]);
			R->stats->n_threads++;
		}
		R->stats->n_threads++;
	}
	return r;
}

struct helper_args {
	int sync_fd, ready_fd, chan, chan_fd;
	const char *hostname, *domainname;
	bool netns;
};

/* Runs in the helper between clone3() and its first stop: system calls only. */
_noreturn_ static void helper(const struct helper_args *a)
{
	struct rlimit rl = {(rlim_t)a->chan_fd + 64, (rlim_t)a->chan_fd + 64};
	int r, chan, ready;
	char c;

	if (read(a->sync_fd, &c, 1) != 1)
		_exit(126);
	/* Nothing of migrd's signal handling may reach the container: the restore sets only the
	 * actions that were not the default, and each process is cloned from this one. A
	 * thread's alternate signal stack (the sanitizers give every thread one) is inherited
	 * by a fork too, and would take the handlers of a process that had none to memory of
	 * ours. Raw system calls: a sanitizer's sigaction() keeps its own handlers. */
	for (int sig = 1; sig < _NSIG; sig++) {
		const uint64_t dfl[4] = {(uint64_t)(uintptr_t)SIG_DFL, 0, 0, 0};

		if (sig != SIGKILL && sig != SIGSTOP &&
		    syscall(SYS_rt_sigaction, sig, dfl, NULL, 8) < 0 && errno != EINVAL)
			goto fail;
	}
	{
		const stack_t none = {.ss_flags = SS_DISABLE};

		if (syscall(SYS_sigaltstack, &none, NULL) < 0)
			goto fail;
	}
	if (ct_container_setup_namespaces(a->hostname, a->domainname, a->netns) < 0)
		goto fail;
	(void)prlimit(0, RLIMIT_NOFILE, NULL, &rl);
	if ((rlim_t)a->chan_fd + 2 > rl.rlim_cur) {
		rl.rlim_cur = rl.rlim_max = MAX(rl.rlim_max, (rlim_t)a->chan_fd + 64);
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			goto fail;
	}
	/* Via numbers above both targets, so that neither can overwrite the other. */
	chan = fcntl(a->chan, F_DUPFD, a->chan_fd + 2);
	ready = fcntl(a->ready_fd, F_DUPFD, a->chan_fd + 2);
	if (chan < 0 || ready < 0 || dup3(chan, a->chan_fd, 0) < 0 ||
	    dup3(ready, a->chan_fd + 1, O_CLOEXEC) < 0)
		goto fail;
	if (syscall(SYS_close_range, 0, a->chan_fd - 1, 0) < 0 ||
	    syscall(SYS_close_range, a->chan_fd + 2, ~0U, 0) < 0)
		goto fail;
	if (write(a->chan_fd + 1, "", 1) != 1)
		_exit(125);
	close(a->chan_fd + 1);
	for (;;)
		pause();
fail:
	r = errno;
	(void)!write(a->ready_fd, &r, sizeof(r));
	_exit(127);
}

static int max_fd(const struct ct_image *img)
{
	int m = 2;

	for (size_t i = 0; i < img->n_procs; i++)
		for (size_t j = 0; j < img->procs[i].fds.n_fds; j++)
			m = MAX(m, (int)img->procs[i].fds.fds[j].fd);
	return m;
}

static int find_vdso_site(struct restorer *R, struct rproc *p)
{
	char path[64];
	_cleanup_free_ char *text = NULL;
	int r;

	snprintf(path, sizeof(path), "/proc/%d/maps", (int)p->hpid);
	r = read_full_file(path, 16 << 20, &text, NULL);
	if (r < 0)
		return restore_fail(R, r, "reading the helper's maps failed");
	for (char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
		unsigned long s, e;
		uint8_t code[8192];
		struct iovec lo = {code, 0}, rm = {NULL, 0};
		uint8_t *hit;

		if (!strstr(l, "[vdso]") || strstr(l, "\n") < strstr(l, "[vdso]") ||
		    sscanf(l, "%lx-%lx", &s, &e) != 2)
			continue;
		if (e - s > sizeof(code))
			break;
		lo.iov_len = rm.iov_len = e - s;
		rm.iov_base = (void *)s;
		if (process_vm_readv(p->hpid, &lo, 1, &rm, 1, 0) != (ssize_t)(e - s))
			break;
		hit = memmem(code, e - s, "\x0f\x05", 2);
		if (!hit)
			break;
		p->site = s + (unsigned long)(hit - code);
		return 0;
	}
	return restore_fail(R, -ENOENT, "no syscall instruction in the helper's [vdso]");
}

/* The helper, born in the cgroup of cgroup_fd, or else moved there. -EAGAIN: the kernel refused
 * the birth there (nothing is left of the attempt), so the caller moves it instead. */
static int spawn_helper(struct restorer *R, int cgroup_fd, pid_t *ret_pid, int *ret_pidfd)
{
	const struct ct_image_inventory *inv = &R->img->inventory;
	int sync_pipe[2] = {-1, -1}, ready[2] = {-1, -1}, chan[2] = {-1, -1}, pidfd = -1;
	struct clone_args args = {0};
	struct helper_args ha;
	char buf[sizeof(int)];
	ssize_t k;
	pid_t pid;
	int r;

	if (pipe2(sync_pipe, O_CLOEXEC) < 0 || pipe2(ready, O_CLOEXEC) < 0 ||
	    socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, chan) < 0) {
		r = restore_fail(R, NEG_ERRNO(), "pipe: %m");
		goto out;
	}
	R->chan_fd = max_fd(R->img) + 1;
	ha = (struct helper_args){.sync_fd = sync_pipe[0],
				  .ready_fd = ready[1],
				  .chan = chan[1],
				  .chan_fd = R->chan_fd,
				  .hostname = inv->hostname,
				  .domainname = inv->domainname,
				  .netns = inv->netns != 0};
	args.flags = CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNS | CLONE_PIDFD |
		     (inv->netns ? CLONE_NEWNET : 0);
	args.pidfd = (uint64_t)(uintptr_t)&pidfd;
	args.exit_signal = SIGCHLD;
	if (cgroup_fd >= 0) {
		args.flags |= CLONE_INTO_CGROUP;
		args.cgroup = (uint64_t)cgroup_fd;
	}
	pid = (pid_t)syscall(SYS_clone3, &args, sizeof(args));
	if (pid < 0 && cgroup_fd >= 0) {
		r = -EAGAIN;
		goto out;
	}
	if (pid < 0) {
		r = restore_fail(R, NEG_ERRNO(), "clone3 of the new PID 1 failed: %m");
		goto out;
	}
	if (pid == 0)
		helper(&ha);
	*ret_pid = pid;
	*ret_pidfd = pidfd;
	r = cgroup_fd >= 0 ? 0 : ct_cgroup_add_pid(R->o->cg, pid);
	if (r < 0) {
		restore_fail(R, r, "cannot place the container in its cgroup: %s",
			     ct_cgroup_last_error(R->o->cg));
		goto out;
	}
	(void)!write(sync_pipe[1], "x", 1);
	close(ready[1]);
	ready[1] = -1;
	k = read(ready[0], buf, sizeof(buf));
	if (k == 0 && cgroup_fd >= 0 && ct_cgroup_killed_at_birth(pidfd)) {
		log_debug("%s: PID 1 was killed at birth in its cgroup; moving it there instead",
			  R->o->name);
		*ret_pid = 0;
		*ret_pidfd = safe_close(pidfd);
		r = -EAGAIN;
		goto out;
	}
	if (k != 1) {
		int e = EIO;

		if (k == sizeof(int))
			memcpy(&e, buf, sizeof(int));
		r = restore_fail(R, -e, "setting up the new namespaces failed: %s", strerror(e));
		goto out;
	}
	R->chan = chan[0];
	chan[0] = -1;
	r = 0;
out:
	safe_close(sync_pipe[0]);
	safe_close(sync_pipe[1]);
	safe_close(ready[0]);
	safe_close(ready[1]);
	safe_close(chan[0]);
	safe_close(chan[1]);
	return r;
}

/* Born in its cgroup (clone3's CLONE_INTO_CGROUP), the helper needs no cgroup.procs write,
 * which waits for an RCU grace period: ~10 ms, most of a small restore's fixed cost. v1
 * hierarchies take the write; so does a refusal: a kernel before 5.7, or one (6.18) that
 * kills a child born in a cgroup that had a cgroup.kill, as a reused container's has. */
static int start_helper_here(struct restorer *R, pid_t *ret_pid, int *ret_pidfd)
{
	_cleanup_close_ int cgroup_fd = ct_cgroup_open_dir(R->o->cg);
	int r = -EAGAIN;

	if (cgroup_fd >= 0)
		r = spawn_helper(R, cgroup_fd, ret_pid, ret_pidfd);
	if (r == -EAGAIN)
		r = spawn_helper(R, -EBADF, ret_pid, ret_pidfd);
	return r;
}

static int64_t clock_ns(clockid_t id)
{
	struct timespec ts;

	if (clock_gettime(id, &ts) < 0)
		return 0;
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

uint64_t restore_timer_left(const struct restorer *R, int clock, uint64_t left_ns)
{
	switch (clock) {
	case CLOCK_REALTIME:
	case CLOCK_REALTIME_ALARM:
	case CLOCK_BOOTTIME:
	case CLOCK_BOOTTIME_ALARM:
	case CLOCK_TAI:
		if (left_ns == 0)
			return 0;
		return left_ns > R->downtime_ns ? left_ns - R->downtime_ns : 1;
	default:
		return left_ns;
	}
}

/* "CLOCK s ns" for /proc/PID/timens_offsets, whose nanoseconds are never negative. */
static int format_offset(char *buf, size_t size, const char *clock, int64_t ns)
{
	int64_t s = ns / 1000000000, rem = ns % 1000000000;

	if (rem < 0) {
		s--;
		rem += 1000000000;
	}
	return snprintf(buf, size, "%s %" PRId64 " %" PRId64 "\n", clock, s, rem);
}

/* A new time namespace for the children of the calling thread (alone: an unshare of
 * CLONE_NEWTIME changes no task's own clocks), whose CLOCK_MONOTONIC goes on from the image's
 * reading and whose CLOCK_BOOTTIME from its reading plus the time since by CLOCK_REALTIME, the
 * only clock that hosts share. */
static int enter_time_namespace(struct restorer *R)
{
	const struct ct_image_clocks *c = &R->img->inventory.clocks;
	int64_t mono = clock_ns(CLOCK_MONOTONIC), boot = clock_ns(CLOCK_BOOTTIME),
		since = (int64_t)R->downtime_ns;
	char path[64], text[128];
	_cleanup_close_ int fd = -EBADF;
	int n;

	if (unshare(CLONE_NEWTIME) < 0) {
		if (errno != EINVAL)
			return restore_fail(R, NEG_ERRNO(), "cannot make a time namespace: %m");
		log_warning("%s: this kernel has no time namespaces: the container's monotonic "
			    "and boot-time clocks continue from this host's, not from its own",
			    R->o->name);
		return 0;
	}
	n = format_offset(text, sizeof(text), "monotonic", (int64_t)c->monotonic_ns - mono);
	n += format_offset(text + n, sizeof(text) - (size_t)n, "boottime",
			   (int64_t)c->boottime_ns + since - boot);
	snprintf(path, sizeof(path), "/proc/%d/timens_offsets", (int)gettid());
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, text, (size_t)n) != n)
		return restore_fail(R, NEG_ERRNO(),
				    "cannot set the clocks of its time namespace (CLOCK_MONOTONIC "
				    "%" PRIu64 " ns, CLOCK_BOOTTIME %" PRIu64 " ns): %m",
				    c->monotonic_ns, c->boottime_ns + (uint64_t)since);
	R->stats->timens = true;
	return 0;
}

struct helper_start {
	struct restorer *R;
	pid_t pid;
	int pidfd, r;
};

static void *start_helper_thread(void *arg)
{
	struct helper_start *s = arg;

	s->r = enter_time_namespace(s->R);
	if (s->r >= 0)
		s->r = start_helper_here(s->R, &s->pid, &s->pidfd);
	return NULL;
}

/* The helper is born in the container's time namespace, made on a thread of its own that
 * ends with it: the namespace a thread's children are born in cannot be set back in a
 * process with other threads. Images without clocks keep the host's. */
static int start_helper(struct restorer *R, pid_t *ret_pid, int *ret_pidfd)
{
	struct helper_start s = {.R = R, .pidfd = -EBADF};
	pthread_t th;
	int r;

	if (!R->img->inventory.clocks.realtime_ns)
		return start_helper_here(R, ret_pid, ret_pidfd);
	r = pthread_create(&th, NULL, start_helper_thread, &s);
	if (r != 0)
		return restore_fail(R, -r, "cannot start a thread: %s", strerror(r));
	pthread_join(th, NULL);
	*ret_pid = s.pid;
	*ret_pidfd = s.pidfd;
	return s.r;
}

static int seize_helper(struct restorer *R, struct rproc *p)
{
	struct ct_ptrace_task t = {.tid = p->hpid, .tgid = p->hpid};
	struct __ptrace_rseq_configuration rs = {};
	long opts =
		PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK | PTRACE_O_EXITKILL;
	int r;

	if (ptrace(PTRACE_SEIZE, p->hpid, 0, opts) < 0 ||
	    ptrace(PTRACE_INTERRUPT, p->hpid, 0, 0) < 0)
		return restore_fail(R, NEG_ERRNO(), "ptrace of the new PID 1 failed: %m");
	r = ct_ptrace_wait_interrupt(&t, usec_add(now_usec(CLOCK_MONOTONIC), STOP_TIMEOUT));
	if (r < 0)
		return restore_fail(R, r, "the new PID 1 did not stop");
	r = find_vdso_site(R, p);
	if (r < 0)
		return r;
	/* The helper inherited migrd's rseq registration: drop it before its memory goes, or
	 * the kernel would fault writing it. Children inherit the unregistered state. */
	if (ptrace(PTRACE_GET_RSEQ_CONFIGURATION, p->hpid, sizeof(rs), &rs) >= 0 &&
	    rs.rseq_abi_pointer)
		r = restore_call(R, p, p->hpid, "rseq unregister", SYS_rseq,
				 (long)rs.rseq_abi_pointer, rs.rseq_abi_size, RSEQ_FLAG_UNREGISTER,
				 rs.signature, 0, 0, NULL);
	return r;
}

/* ---- per-process state ---------------------------------------------------------------------- */

/* Credentials belong to each thread (libc's set*id() calls make every thread of a process do
 * the same): they are set in every one, from the process's record (the dump refuses threads
 * whose credentials differ). */
static int restore_creds(struct restorer *R, struct rproc *p, pid_t h)
{
	const struct ct_image_creds *c = &p->img->task.creds;
	_cleanup_free_ struct restore_batch *b = malloc(sizeof(*b));
	struct {
		struct __user_cap_header_struct hdr;
		struct __user_cap_data_struct data[2];
	} caps = {.hdr = {_LINUX_CAPABILITY_VERSION_3, 0}};
	bool root = true;
	unsigned long s = p->scratch, a = 0;
	int r = 0;

	if (!b)
		return -ENOMEM;
	restore_batch_init(b, p, h);
	for (int i = 0; i < 4; i++)
		root = root && c->uids[i] == 0 && c->gids[i] == 0;
	/* The groups below the batch's area, where they may take up to half the scratch area. */
	if (c->n_groups * 4 > RESTORE_SCRATCH_SIZE / 2)
		return restore_fail(R, -E2BIG, "pid %u: too many groups", p->img->task.pid);
	if (c->n_groups > 0)
		r = restore_poke(R, p, s, c->groups, c->n_groups * 4);
	if (r >= 0)
		r = restore_batch_add(R, b, "setgroups", SYS_setgroups, (long)c->n_groups,
				      c->n_groups > 0 ? (long)s : 0, 0, 0, 0, 0);
	/* The bounding set only shrinks, and only with CAP_SETPCAP: first, while every
	 * capability is still in effect. */
	for (int cap = 0; r >= 0 && cap <= CAP_LAST_CAP; cap++)
		if (!(c->caps[3] & (UINT64_C(1) << cap)))
			r = restore_batch_add(R, b, "prctl(PR_CAPBSET_DROP)", SYS_prctl,
					      PR_CAPBSET_DROP, cap, 0, 0, 0, 0);
	/* With SECBIT_NO_SETUID_FIXUP, leaving uid 0 keeps the capabilities: the securebits and
	 * the capability sets are set to what they were after the ids. */
	if (r >= 0 && !root) {
		r = restore_batch_add(R, b, "prctl(PR_SET_SECUREBITS)", SYS_prctl,
				      PR_SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP, 0, 0, 0, 0);
		if (r >= 0)
			r = restore_batch_add(R, b, "setresgid", SYS_setresgid, c->gids[0],
					      c->gids[1], c->gids[2], 0, 0, 0);
		if (r >= 0)
			r = restore_batch_add(R, b, "setfsgid", SYS_setfsgid, c->gids[3], 0, 0, 0,
					      0, 0);
		if (r >= 0)
			r = restore_batch_add(R, b, "setresuid", SYS_setresuid, c->uids[0],
					      c->uids[1], c->uids[2], 0, 0, 0);
		if (r >= 0)
			r = restore_batch_add(R, b, "setfsuid", SYS_setfsuid, c->uids[3], 0, 0, 0,
					      0, 0);
	}
	if (r >= 0 && (!root || c->securebits))
		r = restore_batch_add(R, b, "prctl(PR_SET_SECUREBITS)", SYS_prctl,
				      PR_SET_SECUREBITS, c->securebits, 0, 0, 0, 0);
	for (int i = 0; i < 2; i++) {
		caps.data[i].inheritable = (uint32_t)(c->caps[0] >> (32 * i));
		caps.data[i].permitted = (uint32_t)(c->caps[1] >> (32 * i));
		caps.data[i].effective = (uint32_t)(c->caps[2] >> (32 * i));
	}
	if (r >= 0)
		r = restore_batch_data(R, b, &caps, sizeof(caps), &a);
	if (r >= 0)
		r = restore_batch_add(R, b, "capset", SYS_capset, (long)a,
				      (long)(a + offsetof(typeof(caps), data)), 0, 0, 0, 0);
	for (int cap = 0; r >= 0 && cap <= CAP_LAST_CAP; cap++)
		if (c->caps[4] & (UINT64_C(1) << cap))
			r = restore_batch_add(R, b, "prctl(PR_CAP_AMBIENT_RAISE)", SYS_prctl,
					      PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0, 0);
	if (r >= 0)
		r = restore_batch_flush(R, b);
	return r;
}

static int restore_thread(struct restorer *R, struct rproc *p, size_t i)
{
	const struct ct_image_thread *th = &p->img->task.threads[i];
	_cleanup_free_ struct restore_batch *b = malloc(sizeof(*b));
	unsigned long a = 0;
	int r;

	if (!b)
		return -ENOMEM;
	restore_batch_init(b, p, p->htids[i]);
	r = restore_batch_data(R, b, th->comm, sizeof(th->comm), &a);
	if (r >= 0)
		r = restore_batch_add(R, b, "prctl(PR_SET_NAME)", SYS_prctl, PR_SET_NAME, (long)a,
				      0, 0, 0, 0);
	if (r >= 0 && th->robust_list)
		r = restore_batch_add(R, b, "set_robust_list", SYS_set_robust_list,
				      (long)th->robust_list, (long)th->robust_list_len, 0, 0, 0, 0);
	if (r >= 0)
		r = restore_batch_add(R, b, "set_tid_address", SYS_set_tid_address,
				      (long)th->tid_address, 0, 0, 0, 0, 0);
	if (r >= 0 && th->rseq)
		r = restore_batch_add(R, b, "rseq", SYS_rseq, (long)th->rseq, th->rseq_len, 0,
				      (long)th->rseq_sig, 0, 0);
	if (r >= 0 && th->altstack_sp) {
		uint64_t ss[3] = {th->altstack_sp, th->altstack_flags, th->altstack_size};

		r = restore_batch_data(R, b, ss, sizeof(ss), &a);
		if (r >= 0)
			r = restore_batch_add(R, b, "sigaltstack", SYS_sigaltstack, (long)a, 0, 0,
					      0, 0, 0);
	}
	if (r >= 0)
		r = restore_batch_flush(R, b);
	return r;
}

/* Queued signals go back last, into a blocked mask, so that none runs before the release. */
static int restore_signals(struct restorer *R, struct rproc *p)
{
	const struct ct_image_task *t = &p->img->task;
	unsigned long s = p->scratch;
	int r = 0;

	for (size_t i = 0; r >= 0 && i < t->n_threads; i++) {
		const struct ct_image_thread *th = &t->threads[i];

		for (size_t j = 0; r >= 0 && j < th->n_siginfo; j++) {
			const uint8_t *si = th->siginfo + j * CT_IMAGE_SIGINFO_SIZE;
			int sig;

			memcpy(&sig, si, sizeof(sig));
			r = restore_poke(R, p, s, si, CT_IMAGE_SIGINFO_SIZE);
			if (r >= 0)
				r = restore_call(R, p, p->htids[i], "rt_tgsigqueueinfo",
						 SYS_rt_tgsigqueueinfo, t->pid, th->tid, sig,
						 (long)s, 0, 0, NULL);
		}
	}
	for (size_t j = 0; r >= 0 && j < t->n_shared_siginfo; j++) {
		const uint8_t *si = t->shared_siginfo + j * CT_IMAGE_SIGINFO_SIZE;
		int sig;

		memcpy(&sig, si, sizeof(sig));
		r = restore_poke(R, p, s, si, CT_IMAGE_SIGINFO_SIZE);
		if (r >= 0)
			r = restore_call(R, p, p->hpid, "rt_sigqueueinfo", SYS_rt_sigqueueinfo,
					 t->pid, sig, (long)s, 0, 0, 0, NULL);
	}
	return r;
}

#define PR_TIMER_CREATE_RESTORE_IDS_ 77 /* Linux 6.16: timer_create() takes the id given */

/* POSIX timers with their ids, signal, value, clock, period and time left. */
static int restore_posix_timers(struct restorer *R, struct rproc *p)
{
	const struct ct_image_task *t = &p->img->task;
	unsigned long s = p->scratch;
	int r;

	r = restore_call(R, p, p->hpid, "prctl(PR_TIMER_CREATE_RESTORE_IDS)", SYS_prctl,
			 PR_TIMER_CREATE_RESTORE_IDS_, 1, 0, 0, 0, 0, NULL);
	if (r < 0)
		return restore_fail(R, r, "pid %u: this kernel cannot restore POSIX timer ids",
				    t->pid);
	for (size_t i = 0; r >= 0 && i < t->n_timers; i++) {
		const struct ct_image_timer *tm = &t->timers[i];
		/* struct sigevent: sigval, signo, notify, then the thread id. */
		struct {
			uint64_t sigval;
			int32_t signo, notify, tid, pad[11];
		} sev = {tm->sigval, (int32_t)tm->signo, (int32_t)tm->notify, (int32_t)tm->tid};
		int32_t id = (int32_t)tm->id;
		uint64_t left = restore_timer_left(R, (int)tm->clock, tm->value_ns);
		uint64_t its[4] = {tm->interval_ns / 1000000000, tm->interval_ns % 1000000000,
				   left / 1000000000, left % 1000000000};

		if (!tm->value_ns && tm->interval_ns) /* firing right now: the next period */
			its[2] = its[0], its[3] = its[1];
		r = restore_poke(R, p, s, &sev, sizeof(sev));
		if (r >= 0)
			r = restore_poke(R, p, s + 128, &id, sizeof(id));
		if (r >= 0)
			r = restore_call(R, p, p->hpid, "timer_create", SYS_timer_create,
					 (long)tm->clock, (long)s, (long)s + 128, 0, 0, 0, NULL);
		if (r >= 0 && (tm->value_ns || tm->interval_ns)) {
			r = restore_poke(R, p, s + 192, its, sizeof(its));
			if (r >= 0)
				r = restore_call(R, p, p->hpid, "timer_settime", SYS_timer_settime,
						 (long)tm->id, 0, (long)s + 192, 0, 0, 0, NULL);
		}
	}
	if (r >= 0)
		r = restore_call(R, p, p->hpid, "prctl(PR_TIMER_CREATE_RESTORE_IDS)", SYS_prctl,
				 PR_TIMER_CREATE_RESTORE_IDS_, 0, 0, 0, 0, 0, NULL);
	return r;
}

/* Installing a filter needs no_new_privs or CAP_SYS_ADMIN. The filters go in once nothing else
 * is left to do in the task but queue its signals and unmap the scratch area, as they may
 * refuse the system calls a restore makes; a process with neither has them installed before
 * its credentials are set, while it still has the capability. */
static bool seccomp_early(const struct ct_image_task *t)
{
	return t->seccomp_mode == SECCOMP_MODE_FILTER && !t->no_new_privs &&
	       !(t->creds.caps[2] & (UINT64_C(1) << CAP_SYS_ADMIN));
}

/* Oldest first, from the main thread; with SECCOMP_FILTER_FLAG_TSYNC every thread shares them,
 * as threads of one process do when they inherited them (a later TSYNC of the program's own
 * needs that). */
static int restore_seccomp_filters(struct restorer *R, struct rproc *p)
{
	const struct ct_image_task *t = &p->img->task;
	unsigned long s = p->scratch;
	int r = 0;

	for (size_t i = 0; r >= 0 && i < t->n_seccomp_filters; i++) {
		const struct ct_image_seccomp_filter *sf = &t->seccomp_filters[i];
		uint64_t prog[2] = {sf->n_insns, s + 16};
		long res = 0;

		if (16 + (size_t)sf->n_insns * 8 > RESTORE_SCRATCH_SIZE)
			return restore_fail(R, -E2BIG, "pid %u: seccomp filter %zu is too large",
					    t->pid, i);
		r = restore_poke(R, p, s, prog, sizeof(prog));
		if (r >= 0)
			r = restore_poke(R, p, s + 16, sf->insns, (size_t)sf->n_insns * 8);
		if (r >= 0)
			r = restore_call(R, p, p->hpid, "seccomp(SECCOMP_SET_MODE_FILTER)",
					 SYS_seccomp, SECCOMP_SET_MODE_FILTER,
					 sf->flags |
						 (t->n_threads > 1 ? SECCOMP_FILTER_FLAG_TSYNC : 0),
					 (long)s, 0, 0, 0, &res);
		if (r >= 0 && res != 0)
			r = restore_fail(
				R, -EBUSY,
				"pid %u: seccomp filter %zu could not be shared with thread "
				"%ld",
				t->pid, i, res);
	}
	return r;
}

static int restore_task_attrs(struct restorer *R, struct rproc *p)
{
	const struct ct_image_task *t = &p->img->task;
	_cleanup_free_ struct restore_batch *b = NULL;
	char path[64], adj[16];
	int r = 0, n, fd;

	if (!t->have_attrs)
		return 0;
	b = malloc(sizeof(*b));
	if (!b)
		return -ENOMEM;
	restore_batch_init(b, p, p->hpid);
	/* 2 (SUID_DUMP_ROOT) comes from the fs.suid_dumpable sysctl, not from prctl. */
	if (t->dumpable <= 1)
		r = restore_batch_add(R, b, "prctl(PR_SET_DUMPABLE)", SYS_prctl, PR_SET_DUMPABLE,
				      t->dumpable, 0, 0, 0, 0);
	if (r >= 0 && t->subreaper)
		r = restore_batch_add(R, b, "prctl(PR_SET_CHILD_SUBREAPER)", SYS_prctl,
				      PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0, 0);
	if (r >= 0 && (t->thp_disable & 1))
		r = restore_batch_add(R, b, "prctl(PR_SET_THP_DISABLE)", SYS_prctl,
				      PR_SET_THP_DISABLE, 1, t->thp_disable & ~1U, 0, 0, 0);
	/* Memory-deny-write-execute cannot be taken back; every mapping is in place by now (the
	 * batch loop's page too: it only runs, nothing is mapped or made executable after). */
	if (r >= 0 && t->mdwe)
		r = restore_batch_add(R, b, "prctl(PR_SET_MDWE) (Linux 6.3 or later)", SYS_prctl,
				      CT_PR_SET_MDWE, t->mdwe, 0, 0, 0, 0);
	if (r >= 0)
		r = restore_batch_flush(R, b);
	if (r < 0)
		return r;
	/* Below what it inherited needs CAP_SYS_RESOURCE, which a host may withhold from root:
	 * then the process runs on with the value it has, and the log says so. */
	snprintf(path, sizeof(path), "/proc/%d/oom_score_adj", (int)p->hpid);
	n = snprintf(adj, sizeof(adj), "%d", t->oom_score_adj);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, adj, (size_t)n) != n)
		log_warning("%s: pid %u: cannot set its oom_score_adj back to %d: %m", R->o->name,
			    t->pid, t->oom_score_adj);
	safe_close(fd);
	return 0;
}

/* Policy, nice, affinity and I/O priority are set from here; timer slack and the parent death
 * signal only by the thread itself. A CPU mask with no CPU of this host, or one outside the
 * container's cpuset, leaves the thread free to run anywhere (logged). */
static int restore_thread_sched(struct restorer *R, struct rproc *p, size_t i)
{
	const struct ct_image_thread *th = &p->img->task.threads[i];
	struct ct_sched_attr attr = {
		.size = sizeof(attr),
		.sched_policy = th->sched_policy,
		.sched_flags = th->sched_flags,
		.sched_nice = th->nice,
		.sched_priority = th->sched_priority,
	};
	pid_t h = p->htids[i];
	int r;

	if (!th->have_sched)
		return 0;
	if (syscall(SYS_sched_setattr, h, &attr, 0) < 0)
		return restore_fail(R, NEG_ERRNO(),
				    "pid %u thread %u: cannot set its scheduling (policy %u, "
				    "priority %u, nice %d): %m",
				    p->img->task.pid, th->tid, th->sched_policy, th->sched_priority,
				    th->nice);
	/* sched_setattr() takes the nice value for SCHED_OTHER and SCHED_BATCH only; a thread
	 * under another policy keeps one too, for when it goes back. */
	if (setpriority(PRIO_PROCESS, (id_t)h, th->nice) < 0)
		return restore_fail(R, NEG_ERRNO(), "pid %u thread %u: cannot set its nice %d: %m",
				    p->img->task.pid, th->tid, th->nice);
	if (syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, h, th->ioprio) < 0)
		log_warning("%s: thread %u: cannot set its I/O priority %#x: %m", R->o->name,
			    th->tid, th->ioprio);
	if (th->affinity_len > 0 &&
	    syscall(SYS_sched_setaffinity, h, th->affinity_len, th->affinity) < 0)
		log_warning("%s: thread %u: cannot set its CPU affinity (%m); it may run on any "
			    "CPU",
			    R->o->name, th->tid);
	r = restore_call(R, p, h, "prctl(PR_SET_TIMERSLACK)", SYS_prctl, PR_SET_TIMERSLACK,
			 (long)th->timerslack_ns, 0, 0, 0, 0, NULL);
	if (r >= 0 && th->pdeathsig)
		r = restore_call(R, p, h, "prctl(PR_SET_PDEATHSIG)", SYS_prctl, PR_SET_PDEATHSIG,
				 th->pdeathsig, 0, 0, 0, 0, NULL);
	return r;
}

static int restore_task_state(struct restorer *R, struct rproc *p)
{
	const struct ct_image_task *t = &p->img->task;
	_cleanup_free_ struct restore_batch *b = malloc(sizeof(*b));
	unsigned long a = 0;
	int r;

	if (!b)
		return -ENOMEM;
	restore_batch_init(b, p, p->hpid);
	r = restore_batch_data(R, b, t->cwd, strlen(t->cwd) + 1, &a);
	if (r >= 0)
		r = restore_batch_add(R, b, "chdir", SYS_chdir, (long)a, 0, 0, 0, 0, 0);
	if (r >= 0 && !streq(t->root, "/")) {
		r = restore_batch_data(R, b, t->root, strlen(t->root) + 1, &a);
		if (r >= 0)
			r = restore_batch_add(R, b, "chroot", SYS_chroot, (long)a, 0, 0, 0, 0, 0);
	}
	for (int sig = 1; r >= 0 && sig <= CT_IMAGE_SIGNALS; sig++) {
		const struct ct_image_sigaction *sa = &t->sigactions[sig - 1];
		uint64_t ka[4] = {sa->handler, sa->flags, sa->restorer, sa->mask};

		if (sig == SIGKILL || sig == SIGSTOP || (!sa->handler && !sa->flags && !sa->mask))
			continue;
		r = restore_batch_data(R, b, ka, sizeof(ka), &a);
		if (r >= 0)
			r = restore_batch_add(R, b, "rt_sigaction", SYS_rt_sigaction, sig, (long)a,
					      0, 8, 0, 0);
	}
	for (int which = 0; r >= 0 && which < 3; which++) {
		uint64_t itv[4] = {t->itimers[2 * which] / USEC_PER_SEC,
				   t->itimers[2 * which] % USEC_PER_SEC,
				   t->itimers[2 * which + 1] / USEC_PER_SEC,
				   t->itimers[2 * which + 1] % USEC_PER_SEC};

		if (!t->itimers[2 * which + 1] && !t->itimers[2 * which])
			continue;
		if (!t->itimers[2 * which + 1]) /* expiring right now: next period */
			itv[2] = itv[0], itv[3] = itv[1];
		r = restore_batch_data(R, b, itv, sizeof(itv), &a);
		if (r >= 0)
			r = restore_batch_add(R, b, "setitimer", SYS_setitimer, which, (long)a, 0,
					      0, 0, 0);
	}
	if (r >= 0)
		r = restore_batch_add(R, b, "umask", SYS_umask, t->umask, 0, 0, 0, 0, 0);
	if (r >= 0)
		r = restore_batch_flush(R, b);
	if (r >= 0 && t->n_timers > 0)
		r = restore_posix_timers(R, p);
	if (r >= 0 && t->personality)
		r = restore_call(R, p, p->hpid, "personality", SYS_personality, t->personality, 0,
				 0, 0, 0, 0, NULL);
	for (int i = 0; r >= 0 && i < CT_IMAGE_RLIMITS; i++) {
		struct rlimit rl = {t->rlimits[i].cur, t->rlimits[i].max};

		if (prlimit(p->hpid, i, &rl, NULL) < 0)
			r = restore_fail(R, NEG_ERRNO(), "pid %u: setting resource limit %d: %m",
					 t->pid, i);
	}
	for (size_t i = 0; r >= 0 && i < t->n_threads; i++)
		r = restore_thread(R, p, i);
	if (r >= 0 && seccomp_early(t))
		r = restore_seccomp_filters(R, p);
	for (size_t i = 0; r >= 0 && i < t->n_threads; i++)
		r = restore_creds(R, p, p->htids[i]);
	for (size_t i = 0; r >= 0 && t->no_new_privs && i < t->n_threads; i++)
		r = restore_call(R, p, p->htids[i], "prctl(PR_SET_NO_NEW_PRIVS)", SYS_prctl,
				 PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0, NULL);
	/* After the credentials: changing them resets dumpable and the parent death signal. */
	if (r >= 0)
		r = restore_task_attrs(R, p);
	for (size_t i = 0; r >= 0 && i < t->n_threads; i++)
		r = restore_thread_sched(R, p, i);
	return r;
}

/* Registers and masks last: from here on the task must not run anything of ours. */
static int restore_registers(struct restorer *R, struct rproc *p)
{
	const struct ct_image_task *t = &p->img->task;
	int r;

	r = restore_call(R, p, p->hpid, "close", SYS_close, R->chan_fd, 0, 0, 0, 0, 0, NULL);
	if (r >= 0)
		r = restore_signals(R, p);
	if (r >= 0 && !seccomp_early(t))
		r = restore_seccomp_filters(R, p);
	if (r >= 0)
		r = restore_call(R, p, p->hpid, "munmap", SYS_munmap, (long)p->scratch,
				 RESTORE_SCRATCH_SIZE, 0, 0, 0, 0, NULL);
	/* Strict mode allows read, write, exit and sigreturn only: nothing may follow it. */
	for (size_t i = 0; r >= 0 && t->seccomp_mode == SECCOMP_MODE_STRICT && i < t->n_threads;
	     i++)
		r = restore_call(R, p, p->htids[i], "prctl(PR_SET_SECCOMP)", SYS_prctl,
				 PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0, 0, NULL);
	for (size_t i = 0; r >= 0 && i < t->n_threads; i++) {
		const struct ct_image_thread *th = &t->threads[i];
		pid_t h = p->htids[i];

		for (size_t j = 0; r >= 0 && j < th->n_regsets; j++) {
			struct iovec iov = {th->regsets[j].data, th->regsets[j].size};

			if (ptrace(PTRACE_SETREGSET, h, (void *)(long)th->regsets[j].type, &iov) <
			    0)
				r = restore_fail(
					R, NEG_ERRNO(),
					"task %u: setting its registers (set %u) failed: %m",
					th->tid, th->regsets[j].type);
		}
		if (r >= 0 && ptrace(PTRACE_SETSIGMASK, h, sizeof(th->sigmask), &th->sigmask) < 0)
			r = restore_fail(R, NEG_ERRNO(), "task %u: PTRACE_SETSIGMASK: %m", th->tid);
	}
	return r;
}

/* ---- checks before anything is created ------------------------------------------------------ */

static int own_vdso_layout(struct ct_image_vdso_layout *ret)
{
	_cleanup_free_ char *text = NULL;
	int r = read_full_file("/proc/self/maps", 64 << 20, &text, NULL);

	if (r < 0)
		return r;
	*ret = (struct ct_image_vdso_layout){};
	for (char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
		unsigned long s, e;
		char *nl = strchr(l, '\n');

		if (sscanf(l, "%lx-%lx", &s, &e) != 2)
			continue;
		if (nl)
			*nl = 0;
		if (strstr(l, "[vvar_vclock]"))
			ret->vvar_vclock_start = s, ret->vvar_vclock_end = e;
		else if (strstr(l, "[vvar]"))
			ret->vvar_start = s, ret->vvar_end = e;
		else if (strstr(l, "[vdso]"))
			ret->vdso_start = s, ret->vdso_end = e;
		if (nl)
			*nl = '\n';
	}
	return 0;
}

static int check_image(struct restorer *R)
{
	const struct ct_image_inventory *inv = &R->img->inventory;
	const struct ct_image_vdso_layout *a = &inv->vdso;
	struct ct_image_vdso_layout b;
	struct utsname u;
	int pid_max = 32768;
	_cleanup_free_ char *pm = NULL;

	uname(&u);
	if (!streq(inv->arch, u.machine))
		return restore_fail(R, -EOPNOTSUPP, "the image is for %s, this host is %s",
				    inv->arch, u.machine);
	if (!streq(inv->kernel_release, u.release))
		return restore_fail(R, -EOPNOTSUPP,
				    "the image was taken on kernel %s, this host runs %s: the "
				    "vDSO cannot be moved between kernel builds",
				    inv->kernel_release, u.release);
	if (own_vdso_layout(&b) < 0 || a->vvar_end - a->vvar_start != b.vvar_end - b.vvar_start ||
	    a->vvar_vclock_end - a->vvar_vclock_start != b.vvar_vclock_end - b.vvar_vclock_start ||
	    a->vdso_end - a->vdso_start != b.vdso_end - b.vdso_start || !b.vdso_start)
		return restore_fail(R, -EOPNOTSUPP,
				    "the image's vDSO layout differs from this kernel's");
	if (read_full_file("/proc/sys/kernel/pid_max", 64, &pm, NULL) >= 0)
		pid_max = atoi(pm);
	if (R->img->n_procs == 0 || R->img->procs[0].task.pid != 1)
		return restore_fail(R, -EINVAL, "the image has no pid 1");
	for (size_t i = 0; i < R->img->n_procs; i++) {
		const struct ct_image_task *t = &R->img->procs[i].task;

		for (size_t j = 0; j < t->n_threads; j++)
			if ((int)t->threads[j].tid >= pid_max)
				return restore_fail(R, -EINVAL,
						    "task %u is above this host's pid_max (%d)",
						    t->threads[j].tid, pid_max);
		if (i > 0 && !proc_by_pid(R, t->ppid))
			return restore_fail(R, -EINVAL, "pid %u: its parent %u is not in the image",
					    t->pid, t->ppid);
	}
	return restore_check_files(R);
}

/* ---- the whole restore ---------------------------------------------------------------------- */

static int release_all(struct restorer *R)
{
	_cleanup_(ct_ptrace_set_freep) struct ct_ptrace_set *s = calloc(1, sizeof(*s));
	size_t n = 0;
	int r;

	if (!s)
		return -ENOMEM;
	for (size_t i = 0; i < R->n_procs; i++)
		n += R->procs[i].img->task.n_threads;
	s->tasks = calloc(n, sizeof(*s->tasks));
	if (!s->tasks)
		return -ENOMEM;
	for (size_t i = 0; i < R->n_procs; i++)
		for (size_t j = 0; j < R->procs[i].img->task.n_threads; j++)
			s->tasks[s->n++] = (struct ct_ptrace_task){.tid = R->procs[i].htids[j],
								   .seized = true};
	r = ct_ptrace_set_detach(s, R->o->cg, CT_DETACH_FROZEN, R->o->timeout);
	if (r >= 0)
		r = ct_cgroup_thaw(R->o->cg, R->o->timeout);
	if (r < 0)
		return restore_fail(R, r, "releasing the tasks failed: %s",
				    ct_cgroup_last_error(R->o->cg));
	return 0;
}

/* The network namespace's sysctls, before any socket is made in it. */
static int restore_net_sysctls(struct restorer *R)
{
	const struct ct_image_inventory *inv = &R->img->inventory;
	char err[256];
	size_t set;
	int r;

	if (inv->n_net_sysctls == 0)
		return 0;
	r = net_restore_sysctls(R->netns_fd, inv->net_sysctls, inv->n_net_sysctls, err, sizeof(err),
				&set);
	if (r < 0)
		return restore_fail(R, r, "its network namespace: %s", err[0] ? err : strerror(-r));
	log_debug("%s: %zu of %zu network sysctls differed and were set", R->o->name, set,
		  inv->n_net_sysctls);
	return 0;
}

static int restore_all(struct restorer *R, pid_t *ret_pid, int *ret_pidfd)
{
	usec_t t = now_usec(CLOCK_MONOTONIC);
	int r;

	r = start_helper(R, ret_pid, ret_pidfd);
	if (r < 0)
		return r;
	r = restore_ipc(R, *ret_pid);
	if (r < 0)
		return r;
	R->procs[0].hpid = *ret_pid;
	R->procs[0].htids[0] = *ret_pid;
	if (R->img->inventory.netns) {
		char path[64];

		snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)*ret_pid);
		R->netns_fd = open(path, O_RDONLY | O_CLOEXEC);
		if (R->netns_fd < 0)
			return restore_fail(R, NEG_ERRNO(), "opening its network namespace: %m");
		r = restore_net_sysctls(R);
		if (r < 0)
			return r;
	}
	r = seize_helper(R, &R->procs[0]);
	if (r >= 0)
		r = build_tree(R);
	R->stats->tree_usec = now_usec(CLOCK_MONOTONIC) - t;
	if (r < 0)
		return r;
	t = now_usec(CLOCK_MONOTONIC);
	r = restore_shm_objects(R);
	for (size_t i = 0; r >= 0 && i < R->n_procs; i++)
		r = restore_mm(R, &R->procs[i]);
	if (r >= 0)
		r = restore_ipc_finish(R, *ret_pid);
	R->stats->memory_usec = now_usec(CLOCK_MONOTONIC) - t;
	t = now_usec(CLOCK_MONOTONIC);
	for (size_t i = 0; r >= 0 && i < R->n_procs; i++) {
		R->procs[i].pidfd = (int)syscall(SYS_pidfd_open, R->procs[i].hpid, 0);
		r = restore_fds(R, &R->procs[i]);
	}
	for (size_t i = 0; r >= 0 && i < R->n_procs; i++)
		r = restore_epolls(R, &R->procs[i]);
	for (size_t i = 0; r >= 0 && i < R->n_procs; i++)
		r = restore_locks(R, &R->procs[i]);
	for (size_t i = 0; r >= 0 && i < R->n_procs; i++)
		r = restore_task_state(R, &R->procs[i]);
	for (size_t i = 0; r >= 0 && i < R->n_procs; i++)
		r = restore_registers(R, &R->procs[i]);
	if (r >= 0)
		r = release_all(R);
	R->stats->state_usec = now_usec(CLOCK_MONOTONIC) - t;
	return r;
}

/* After a failed restore, once PID 1 was killed: every task we traced is a zombie for us to
 * reap, in no particular order. The thread of PID 1 that exits last waits in the kernel until
 * every other task of the namespace is reaped, the other threads of PID 1 included: waiting for
 * the tasks one by one in a fixed order can wait for that thread forever. */
static void reap_all(struct restorer *R, pid_t pid)
{
	usec_t deadline = now_usec(CLOCK_MONOTONIC) + 30 * USEC_PER_SEC;
	size_t left;

	do {
		bool progress = false;

		left = 0;
		for (size_t i = 0; i < R->n_procs; i++)
			for (size_t j = 0; j < R->img->procs[i].task.n_threads; j++) {
				pid_t *h = &R->procs[i].htids[j];
				pid_t w;

				if (*h <= 0 || *h == pid)
					continue;
				w = waitpid(*h, NULL, __WALL | WNOHANG);
				if (w == *h || (w < 0 && errno == ECHILD)) {
					*h = 0;
					progress = true;
				} else
					left++;
			}
		if (left > 0 && !progress)
			usleep(1000);
	} while (left > 0 && now_usec(CLOCK_MONOTONIC) < deadline);
	if (left > 0)
		log_warning("%s: %zu tasks of a failed restore were not reaped within 30 s",
			    R->o->name, left);
	else
		(void)waitpid(pid, NULL, __WALL);
}

int ct_restore(const struct ct_restore_opts *o, pid_t *ret_pid, int *ret_pidfd,
	       struct ct_restore_stats *ret_stats, char err[CT_ENGINE_ERROR_MAX])
{
	struct ct_restore_stats stats = {};
	struct restorer R = {
		.o = o, .err = err, .chan = -EBADF, .netns_fd = -EBADF, .stats = &stats};
	char ierr[CT_IMAGE_ERROR_MAX];
	usec_t t0 = now_usec(CLOCK_MONOTONIC);
	pid_t pid = 0;
	int pidfd = -EBADF, r;

	err[0] = 0;
	r = o->no_map ? ct_image_open(o->dir, ierr, &R.img)
		      : ct_image_open_mapped(o->dir, ierr, &R.img);
	if (r < 0)
		return restore_fail(&R, r, "image %s refused: %s", o->dir, ierr);
	stats.verify_usec = now_usec(CLOCK_MONOTONIC) - t0;
	if (R.img->inventory.clocks.realtime_ns)
		R.downtime_ns = (uint64_t)MAX(
			clock_ns(CLOCK_REALTIME) - (int64_t)R.img->inventory.clocks.realtime_ns, 0);
	R.n_procs = R.img->n_procs;
	R.procs = calloc(MAX(R.n_procs, 1u), sizeof(*R.procs));
	if (!R.procs) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < R.n_procs; i++) {
		R.procs[i].img = &R.img->procs[i];
		R.procs[i].pidfd = -EBADF;
		R.procs[i].htids = calloc(R.img->procs[i].task.n_threads, sizeof(pid_t));
		if (!R.procs[i].htids) {
			r = -ENOMEM;
			goto out;
		}
	}
	r = check_image(&R);
	if (r >= 0)
		r = restore_all(&R, &pid, &pidfd);
	if (r < 0 && pid > 0) {
		/* PID 1 takes every task of its namespace with it. */
		kill(pid, SIGKILL);
		reap_all(&R, pid);
		(void)ct_cgroup_kill(o->cg, o->timeout);
		pidfd = safe_close(pidfd);
	}
	if (r >= 0) {
		*ret_pid = pid;
		*ret_pidfd = pidfd;
	}
out:
	stats.n_procs = (unsigned)R.n_procs;
	for (size_t i = 0; R.procs && i < R.n_procs; i++) {
		safe_close(R.procs[i].pidfd);
		free(R.procs[i].htids);
		stats.n_fds += (unsigned)R.img->procs[i].fds.n_fds;
	}
	free(R.procs);
	restore_objs_free(&R);
	safe_close(R.chan);
	safe_close(R.netns_fd);
	/* The container runs: its image's mappings are let go of meanwhile. */
	if (r >= 0)
		ct_image_free_background(R.img);
	else
		ct_image_free(R.img);
	stats.total_usec = now_usec(CLOCK_MONOTONIC) - t0;
	if (ret_stats)
		*ret_stats = stats;
	if (r < 0 && !err[0])
		restore_fail(&R, r, "restore failed: %s", strerror(-r));
	return r;
}
