/* Checkpoint: freeze, seize, collect every process's state, write the image, then kill or thaw. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/filter.h>
#include <linux/ioprio.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "checkpoint/ct/dump-internal.h"
#include "checkpoint/ct/net-internal.h"
#include "checkpoint/ct/memory-internal.h"
#include "common/common.h"
#include "common/nsthread.h"

/* The scratch area injected into each process while its state is read: the first page for
 * single calls, then a batch's table and the results its calls write, and last a page that
 * holds the batch loop (read and execute only). */
#define SCRATCH_SIZE	 (20U << 10)
#define SCRATCH_CODE_OFF (16U << 10)
#define QUERY_TABLE_OFF	 4096
#define QUERY_MAX	 96 /* 6 KiB of table */
#define QUERY_OUT_OFF	 (10U << 10)
#define QUERY_OUT_SIZE	 (6U << 10)

int dump_fail(struct dumper *d, int r, const char *format, ...)
{
	va_list ap;
	size_t n;

	if (d->err[0])
		return r;
	n = (size_t)snprintf(d->err, CT_ENGINE_ERROR_MAX, "%s: ", d->o->name);
	if (n < CT_ENGINE_ERROR_MAX) {
		va_start(ap, format);
		vsnprintf(d->err + n, CT_ENGINE_ERROR_MAX - n, format, ap);
		va_end(ap);
	}
	return r;
}

pid_t dump_ns_pid(const struct dumper *d, pid_t host)
{
	size_t lo = 0, hi = d->n_tids;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (d->tids[mid].host == host)
			return d->tids[mid].ns;
		if (d->tids[mid].host < host)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

int dump_inject(struct dumper *d, struct ct_ptrace_task *t, long nr, long a0, long a1, long a2,
		long a3, long *ret)
{
	const long args[6] = {a0, a1, a2, a3, 0, 0};
	int r = ct_ptrace_task_inject(t, nr, args, ret);

	if (r < 0)
		return dump_fail(d, r, "pid %d: cannot run a system call in the task: %s",
				 (int)dump_ns_pid(d, t->tid), strerror(-r));
	return 0;
}

/* Injected call that must succeed; its result in *ret. */
static int inject_ok(struct dumper *d, struct ct_ptrace_task *t, const char *what, long nr, long a0,
		     long a1, long a2, long a3, long *ret)
{
	long res;
	int r = dump_inject(d, t, nr, a0, a1, a2, a3, &res);

	if (r < 0)
		return r;
	if (res < 0 && res > -4096)
		return dump_fail(d, (int)res, "pid %d: %s failed in the task: %s",
				 (int)dump_ns_pid(d, t->tid), what, strerror((int)-res));
	if (ret)
		*ret = res;
	return 0;
}

/* Questions for one task that need nothing between them, asked together: one stop and resume
 * of the task (ct_inject_batch) for all, where each injected call costs one (~30 us here).
 * Each call's result and what it writes to its part of the scratch area come back together.
 * Without the batch loop (a process whose memory may not become executable), the calls are
 * injected one by one, to the same effect. */
struct query {
	struct ct_ptrace_task *t;
	size_t n, out_len;
	const char *what[QUERY_MAX];
	bool may_fail[QUERY_MAX];
	size_t out_off[QUERY_MAX];
	uint64_t table[QUERY_MAX][8];
	uint8_t out[QUERY_OUT_SIZE];
};

/* Queues a call; its output (out_len bytes, 0 for none) goes at the address in *ret_out,
 * which the caller passes among the arguments through the ARG_OUT placeholder. Returns the
 * call's index. */
#define ARG_OUT (-0x6f7574L)
static int query_add(struct dumper *d, struct dproc *p, struct query *q, const char *what,
		     bool may_fail, size_t out_len, long nr, long a0, long a1, long a2, long a3)
{
	long args[4] = {a0, a1, a2, a3};
	size_t at = (q->out_len + 15) & ~(size_t)15;

	if (q->n == QUERY_MAX || at + out_len > QUERY_OUT_SIZE)
		return dump_fail(d, -E2BIG, "pid %d: too many questions for one task", (int)p->pid);
	for (size_t i = 0; i < 4; i++)
		if (args[i] == ARG_OUT)
			args[i] = (long)(p->scratch + QUERY_OUT_OFF + at);
	if (out_len)
		q->out_len = at + out_len;
	q->out_off[q->n] = at;
	q->what[q->n] = what;
	q->may_fail[q->n] = may_fail;
	memcpy(q->table[q->n],
	       (uint64_t[8]){(uint64_t)nr, (uint64_t)args[0], (uint64_t)args[1], (uint64_t)args[2],
			     (uint64_t)args[3], 0, 0, 0},
	       sizeof(q->table[0]));
	return (int)q->n++;
}

/* What call i wrote to its part of the scratch area. */
static const void *query_out(const struct query *q, int i)
{
	return q->out + q->out_off[i];
}

static int query_run(struct dumper *d, struct dproc *p, struct query *q)
{
	pid_t pid = dump_ns_pid(d, q->t->tid);
	size_t i = 0;
	int r;

	if (!p->batch_code) {
		for (; i < q->n; i++) {
			uint64_t *e = q->table[i];
			long res;

			r = dump_inject(d, q->t, (long)e[0], (long)e[1], (long)e[2], (long)e[3],
					(long)e[4], &res);
			if (r < 0)
				return r;
			e[7] = (uint64_t)res;
			if (res < 0 && res > -4096 && !q->may_fail[i])
				return dump_fail(d, (int)res, "pid %d: %s failed in the task: %s",
						 (int)pid, q->what[i], strerror((int)-res));
		}
	} else {
		struct iovec local = {q->table, q->n * sizeof(q->table[0])},
			     remote = {(void *)(p->scratch + QUERY_TABLE_OFF), local.iov_len};

		if (process_vm_writev(p->hpid, &local, 1, &remote, 1, 0) != (ssize_t)local.iov_len)
			return dump_fail(d, NEG_ERRNO(),
					 "pid %d: cannot write its scratch area: %m", (int)pid);
		q->t->stepped = true; /* the loop ends in a trap: see ct_ptrace_set_settle() */
		while (i < q->n) {
			size_t done = 0;
			long res = 0;

			r = ct_inject_batch(q->t->tid, p->batch_code,
					    p->scratch + QUERY_TABLE_OFF + i * CT_BATCH_ENTRY_SIZE,
					    q->n - i, &done, &res);
			if (r < 0)
				return dump_fail(
					d, r,
					"pid %d: cannot run %s (and %zu more calls) in the "
					"task: %s",
					(int)pid, q->what[i], q->n - i - 1, strerror(-r));
			i += done;
			if (i < q->n && !q->may_fail[i])
				return dump_fail(d, (int)res, "pid %d: %s failed in the task: %s",
						 (int)pid, q->what[i], strerror((int)-res));
			i += i < q->n; /* one that may fail did: the rest goes on */
		}
		local = (struct iovec){q->table, q->n * sizeof(q->table[0])};
		remote = (struct iovec){(void *)(p->scratch + QUERY_TABLE_OFF), local.iov_len};
		if (process_vm_readv(p->hpid, &local, 1, &remote, 1, 0) != (ssize_t)local.iov_len)
			return dump_fail(d, NEG_ERRNO(), "pid %d: cannot read its scratch area: %m",
					 (int)pid);
	}
	if (q->out_len > 0) {
		struct iovec local = {q->out, q->out_len},
			     remote = {(void *)(p->scratch + QUERY_OUT_OFF), q->out_len};

		if (process_vm_readv(p->hpid, &local, 1, &remote, 1, 0) != (ssize_t)q->out_len)
			return dump_fail(d, NEG_ERRNO(), "pid %d: cannot read its scratch area: %m",
					 (int)pid);
	}
	return 0;
}

static long query_result(const struct query *q, int i)
{
	return (long)q->table[i][7];
}

static int scratch_read(struct dproc *p, size_t off, void *buf, size_t len)
{
	struct iovec local = {buf, len}, remote = {(void *)(p->scratch + off), len};

	if (process_vm_readv(p->hpid, &local, 1, &remote, 1, 0) != (ssize_t)len)
		return NEG_ERRNO();
	return 0;
}

static int read_small(const char *path, char **ret)
{
	return read_full_file(path, 1 << 16, ret, NULL);
}

/* "Key:\tvalue" of /proc/PID/status. */
static int status_field(const char *text, const char *key, const char **ret)
{
	size_t klen = strlen(key);

	for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL)
		if (strneq(l, key, klen) && l[klen] == ':') {
			*ret = l + klen + 1;
			return 0;
		}
	return -ENOENT;
}

/* Credentials, umask, no_new_privs and seccomp mode of task htid of process hpid, from its status
 * (what: "pid N" or "task N", for errors). */
static int read_creds(struct dumper *d, const char *what, pid_t hpid, pid_t htid,
		      const struct ct_proc_status *st, struct ct_image_task *t)
{
	static const char *const capkeys[5] = {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"};
	_cleanup_free_ char *text = NULL;
	char path[96];
	const char *v;
	int r;

	for (int i = 0; i < 4; i++) {
		t->creds.uids[i] = st->uid[i];
		t->creds.gids[i] = st->gid[i];
	}
	snprintf(path, sizeof(path), "/proc/%d/task/%d/status", (int)hpid, (int)htid);
	r = read_small(path, &text);
	if (r < 0)
		return dump_fail(d, r, "%s: cannot read %s: %s", what, path, strerror(-r));
	for (int i = 0; i < 5; i++) {
		if (status_field(text, capkeys[i], &v) < 0 ||
		    sscanf(v, "%" SCNx64, &t->creds.caps[i]) != 1)
			return dump_fail(d, -EBADMSG, "%s: no %s in %s", what, capkeys[i], path);
	}
	if (status_field(text, "Umask", &v) == 0)
		t->umask = (uint32_t)strtoul(v, NULL, 8) & 0777;
	if (status_field(text, "NoNewPrivs", &v) == 0)
		t->no_new_privs = strtoul(v, NULL, 10) != 0;
	if (status_field(text, "Seccomp", &v) == 0)
		t->seccomp_mode = (uint32_t)strtoul(v, NULL, 10);
	if (t->seccomp_mode > SECCOMP_MODE_FILTER)
		return dump_fail(d, -EOPNOTSUPP, "%s: unknown seccomp mode %u", what,
				 t->seccomp_mode);
	if (status_field(text, "Groups", &v) == 0) {
		for (;;) {
			char *end;
			unsigned long g = strtoul(v, &end, 10);
			uint32_t *n;

			if (end == v)
				break;
			n = reallocarray(t->creds.groups, t->creds.n_groups + 1, sizeof(*n));
			if (!n)
				return -ENOMEM;
			t->creds.groups = n;
			n[t->creds.n_groups++] = (uint32_t)g;
			v = end;
		}
	}
	return 0;
}

static int dump_creds(struct dumper *d, struct dproc *p, const struct ct_proc_status *st)
{
	char what[32];

	snprintf(what, sizeof(what), "pid %d", (int)p->pid);
	return read_creds(d, what, p->hpid, p->hpid, st, &p->task);
}

static void seccomp_filters_free(struct ct_image_seccomp_filter *f, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(f[i].insns);
	free(f);
}

/* The seccomp filters of a stopped task, oldest first: PTRACE_SECCOMP_GET_FILTER's index 0 is
 * the first filter installed (get_nth_filter() in kernel/seccomp.c). A
 * filter that hands system calls to a supervisor (SECCOMP_RET_USER_NOTIF) is refused: the
 * supervisor holds the other end, and the restored copy would get ENOSYS instead. */
static int read_seccomp_filters(struct dumper *d, const char *what, pid_t htid,
				struct ct_image_seccomp_filter **ret, size_t *ret_n)
{
	struct ct_image_seccomp_filter *f = NULL;
	size_t n = 0;
	int r = 0;

	for (;;) {
		struct __ptrace_seccomp_metadata md = {.filter_off = n};
		struct ct_image_seccomp_filter *nf;
		long k = ptrace(PTRACE_SECCOMP_GET_FILTER, htid, (void *)n, NULL);

		if (k < 0 && errno == ENOENT)
			break;
		if (k <= 0 || k > CT_IMAGE_SECCOMP_INSNS_MAX || n >= CT_IMAGE_SECCOMP_FILTERS_MAX) {
			r = dump_fail(d, k < 0 ? NEG_ERRNO() : -E2BIG,
				      "%s: its seccomp filter %zu cannot be read: %s", what, n,
				      k < 0 ? strerror(errno) : "too large");
			goto fail;
		}
		nf = reallocarray(f, n + 1, sizeof(*f));
		if (!nf) {
			r = -ENOMEM;
			goto fail;
		}
		f = nf;
		f[n] = (struct ct_image_seccomp_filter){0, (uint32_t)k, calloc((size_t)k, 8)};
		n++;
		if (!f[n - 1].insns) {
			r = -ENOMEM;
			goto fail;
		}
		if (ptrace(PTRACE_SECCOMP_GET_FILTER, htid, (void *)(n - 1), f[n - 1].insns) != k ||
		    ptrace(PTRACE_SECCOMP_GET_METADATA, htid, (void *)sizeof(md), &md) < 0) {
			r = dump_fail(d, NEG_ERRNO(),
				      "%s: its seccomp filter %zu cannot be read: %m", what, n - 1);
			goto fail;
		}
		f[n - 1].flags = (uint32_t)(md.flags & SECCOMP_FILTER_FLAG_LOG);
		for (long i = 0; i < k; i++) {
			const struct sock_filter *insn =
				(const struct sock_filter *)f[n - 1].insns + i;

			if (BPF_CLASS(insn->code) == BPF_RET && BPF_RVAL(insn->code) == BPF_K &&
			    (insn->k & SECCOMP_RET_ACTION_FULL) == SECCOMP_RET_USER_NOTIF) {
				r = dump_fail(d, -EOPNOTSUPP,
					      "%s: its seccomp filter %zu hands system calls to a "
					      "supervisor (SECCOMP_RET_USER_NOTIF), which is not "
					      "supported",
					      what, n - 1);
				goto fail;
			}
		}
	}
	*ret = f;
	*ret_n = n;
	return 0;
fail:
	seccomp_filters_free(f, n);
	return r;
}

static bool seccomp_filters_equal(const struct ct_image_seccomp_filter *a, size_t na,
				  const struct ct_image_seccomp_filter *b, size_t nb)
{
	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (a[i].flags != b[i].flags || a[i].n_insns != b[i].n_insns ||
		    memcmp(a[i].insns, b[i].insns, (size_t)a[i].n_insns * 8) != 0)
			return false;
	return true;
}

/* The restore gives every thread its process's credentials, no_new_privs and seccomp state:
 * a thread that changed its own with a raw system call is refused. */
static int check_thread_creds(struct dumper *d, struct dproc *p, pid_t htid, uint32_t tid,
			      const struct ct_proc_status *st)
{
	struct ct_image_task t = {};
	const struct ct_image_creds *a = &p->task.creds, *b = &t.creds;
	char what[32];
	bool same;
	int r;

	snprintf(what, sizeof(what), "task %u", tid);
	r = read_creds(d, what, p->hpid, htid, st, &t);
	if (r >= 0 && t.seccomp_mode == SECCOMP_MODE_FILTER)
		r = read_seccomp_filters(d, what, htid, &t.seccomp_filters, &t.n_seccomp_filters);
	if (r < 0) {
		ct_image_task_done(&t);
		return r;
	}
	same = memcmp(a->uids, b->uids, sizeof(a->uids)) == 0 &&
	       memcmp(a->gids, b->gids, sizeof(a->gids)) == 0 &&
	       memcmp(a->caps, b->caps, sizeof(a->caps)) == 0 && a->n_groups == b->n_groups &&
	       (a->n_groups == 0 || memcmp(a->groups, b->groups, 4 * a->n_groups) == 0) &&
	       p->task.no_new_privs == t.no_new_privs && p->task.seccomp_mode == t.seccomp_mode &&
	       seccomp_filters_equal(p->task.seccomp_filters, p->task.n_seccomp_filters,
				     t.seccomp_filters, t.n_seccomp_filters);
	ct_image_task_done(&t);
	if (!same)
		return dump_fail(
			d, -EOPNOTSUPP,
			"pid %d thread %u: its credentials, no_new_privs or seccomp filters "
			"differ from its process's, which is not supported",
			(int)p->pid, tid);
	return 0;
}

static int peek_siginfo(struct dumper *d, pid_t tid, bool shared, uint8_t **ret, size_t *ret_n)
{
	size_t n = 0;

	*ret = NULL;
	for (;;) {
		struct __ptrace_peeksiginfo_args a = {.off = n, .flags = shared ? 1 : 0, .nr = 32};
		uint8_t buf[32 * CT_IMAGE_SIGINFO_SIZE], *m;
		long k = ptrace(PTRACE_PEEKSIGINFO, tid, &a, buf);

		if (k < 0)
			return dump_fail(d, NEG_ERRNO(), "task %d: PTRACE_PEEKSIGINFO failed: %m",
					 (int)dump_ns_pid(d, tid));
		if (k == 0)
			break;
		if (n + (size_t)k > CT_IMAGE_SIGINFO_MAX)
			return dump_fail(d, -E2BIG, "task %d: more than %u signals queued",
					 (int)dump_ns_pid(d, tid), CT_IMAGE_SIGINFO_MAX);
		m = realloc(*ret, (n + (size_t)k) * CT_IMAGE_SIGINFO_SIZE);
		if (!m)
			return -ENOMEM;
		memcpy(m + n * CT_IMAGE_SIGINFO_SIZE, buf, (size_t)k * CT_IMAGE_SIGINFO_SIZE);
		*ret = m;
		n += (size_t)k;
	}
	*ret_n = n;
	return 0;
}

/* The batch loop in the scratch area's last page: mapped read and execute only (which a
 * process under memory-deny-write-execute may still do) and written through /proc/PID/mem.
 * Best effort: without it every call is injected alone. */
static void place_batch_loop(struct dproc *p)
{
	unsigned long code = p->scratch + SCRATCH_CODE_OFF;
	const long args[6] = {(long)code,
			      SCRATCH_SIZE - SCRATCH_CODE_OFF,
			      PROT_READ | PROT_EXEC,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
			      -1,
			      0};
	struct ct_mem mem;
	long res = 0;
	int r;

	r = ct_ptrace_task_inject(p->threads[0], SYS_mmap, args, &res);
	if (r >= 0 && res != (long)code)
		r = res < 0 && res > -4096 ? (int)res : -EADDRNOTAVAIL;
	if (r >= 0 && (r = ct_mem_open(p->hpid, &mem)) >= 0) {
		r = ct_mem_write(&mem, code, ct_batch_code, sizeof(ct_batch_code));
		ct_mem_close(&mem);
	}
	if (r >= 0)
		p->batch_code = code;
	else
		log_debug_errno(r, "pid %d: no batches of calls: %m", (int)p->hpid);
}

/* What only the process can tell, asked in its first thread: securebits, dumpable, child
 * subreaper, THP disabled, memory-deny-write-execute, the actions of the signals it catches or
 * ignores (sigs), its interval timers. */
static int process_queries(struct dumper *d, struct dproc *p, uint64_t sigs)
{
	_cleanup_free_ struct query *q = calloc(1, sizeof(*q));
	int sb, dumpable, reaper, thp, mdwe, act[CT_IMAGE_SIGNALS] = {}, itv[3];
	int r;

	if (!q)
		return -ENOMEM;
	q->t = p->threads[0];
	r = sb = query_add(d, p, q, "prctl(PR_GET_SECUREBITS)", false, 0, SYS_prctl,
			   PR_GET_SECUREBITS, 0, 0, 0);
	if (r >= 0)
		r = dumpable = query_add(d, p, q, "prctl(PR_GET_DUMPABLE)", false, 0, SYS_prctl,
					 PR_GET_DUMPABLE, 0, 0, 0);
	if (r >= 0)
		r = reaper =
			query_add(d, p, q, "prctl(PR_GET_CHILD_SUBREAPER)", false, sizeof(int32_t),
				  SYS_prctl, PR_GET_CHILD_SUBREAPER, ARG_OUT, 0, 0);
	if (r >= 0)
		r = thp = query_add(d, p, q, "prctl(PR_GET_THP_DISABLE)", false, 0, SYS_prctl,
				    PR_GET_THP_DISABLE, 0, 0, 0);
	/* Before Linux 6.3 there is no memory-deny-write-execute: EINVAL, none in force. */
	if (r >= 0)
		r = mdwe = query_add(d, p, q, "prctl(PR_GET_MDWE)", true, 0, SYS_prctl,
				     CT_PR_GET_MDWE, 0, 0, 0);
	for (int sig = 1; r >= 0 && sig <= CT_IMAGE_SIGNALS; sig++)
		if (sigs & (UINT64_C(1) << (sig - 1)))
			r = act[sig - 1] = query_add(d, p, q, "rt_sigaction", false, 32,
						     SYS_rt_sigaction, sig, 0, ARG_OUT, 8);
	for (int which = 0; r >= 0 && which < 3; which++)
		r = itv[which] = query_add(d, p, q, "getitimer", false, 32, SYS_getitimer, which,
					   ARG_OUT, 0, 0);
	if (r >= 0)
		r = query_run(d, p, q);
	if (r < 0)
		return r;
	p->task.creds.securebits = (uint32_t)query_result(q, sb);
	p->task.dumpable = (uint32_t)query_result(q, dumpable);
	p->task.subreaper = *(const int32_t *)query_out(q, reaper) != 0;
	p->task.thp_disable = (uint32_t)query_result(q, thp) & 3;
	p->task.mdwe = query_result(q, mdwe) > 0 ? (uint32_t)query_result(q, mdwe) & 3 : 0;
	for (int sig = 1; sig <= CT_IMAGE_SIGNALS; sig++)
		if (sigs & (UINT64_C(1) << (sig - 1))) {
			/* struct kernel_sigaction: handler, flags, restorer, mask */
			const uint64_t *sa = query_out(q, act[sig - 1]);

			p->task.sigactions[sig - 1] =
				(struct ct_image_sigaction){sa[0], sa[1], sa[2], sa[3]};
		}
	for (int which = 0; which < 3; which++) {
		const uint64_t *v = query_out(q, itv[which]);

		p->task.itimers[2 * which] = v[0] * USEC_PER_SEC + v[1];
		p->task.itimers[2 * which + 1] = v[2] * USEC_PER_SEC + v[3];
	}
	return 0;
}

/* What only the thread can tell: its tid address, signal stack, timer slack and parent death
 * signal. */
static int thread_queries(struct dumper *d, struct dproc *p, struct ct_ptrace_task *t,
			  struct ct_image_thread *th)
{
	_cleanup_free_ struct query *q = calloc(1, sizeof(*q));
	int tid_address, stack, slack, pdeath;
	int r;

	if (!q)
		return -ENOMEM;
	q->t = t;
	r = tid_address = query_add(d, p, q, "prctl(PR_GET_TID_ADDRESS)", false, 8, SYS_prctl,
				    PR_GET_TID_ADDRESS, ARG_OUT, 0, 0);
	if (r >= 0)
		r = stack = query_add(d, p, q, "sigaltstack", false, 24, SYS_sigaltstack, 0,
				      ARG_OUT, 0, 0);
	if (r >= 0)
		r = slack = query_add(d, p, q, "prctl(PR_GET_TIMERSLACK)", false, 0, SYS_prctl,
				      PR_GET_TIMERSLACK, 0, 0, 0);
	if (r >= 0)
		r = pdeath = query_add(d, p, q, "prctl(PR_GET_PDEATHSIG)", false, sizeof(int32_t),
				       SYS_prctl, PR_GET_PDEATHSIG, ARG_OUT, 0, 0);
	if (r >= 0)
		r = query_run(d, p, q);
	if (r < 0)
		return r;
	th->tid_address = *(const uint64_t *)query_out(q, tid_address);
	/* stack_t: ss_sp, int ss_flags (padded), ss_size. On the stack now is no state. */
	const uint64_t *ss = query_out(q, stack);
	th->altstack_sp = ss[0];
	th->altstack_flags = (uint32_t)ss[1] & ~(uint32_t)SS_ONSTACK;
	th->altstack_size = ss[2];
	th->timerslack_ns = (uint64_t)query_result(q, slack);
	th->pdeathsig = (uint32_t) * (const int32_t *)query_out(q, pdeath);
	return 0;
}

/* oom_score_adj (/proc); dumpable, child subreaper, THP disabled and memory-deny-write-execute
 * were asked in the task (process_queries()). */
static int dump_task_attrs(struct dumper *d, struct dproc *p)
{
	_cleanup_free_ char *adj = NULL;
	char path[64];
	int r;

	snprintf(path, sizeof(path), "/proc/%d/oom_score_adj", (int)p->hpid);
	r = read_small(path, &adj);
	if (r < 0)
		return dump_fail(d, r, "pid %d: cannot read %s: %s", (int)p->pid, path,
				 strerror(-r));
	p->task.oom_score_adj = (int32_t)strtol(adj, NULL, 10);
	p->task.have_attrs = true;
	return 0;
}

/* Scheduling policy, nice, CPU affinity, I/O priority, read from here (timer slack and parent
 * death signal only the thread can tell: thread_queries()). */
static int dump_thread_sched(struct dumper *d, struct dproc *p, struct ct_ptrace_task *t,
			     struct ct_image_thread *th)
{
	struct ct_sched_attr attr = {.size = sizeof(attr)};
	uint8_t mask[CT_IMAGE_AFFINITY_MAX];
	long n;

	if (syscall(SYS_sched_getattr, t->tid, &attr, sizeof(attr), 0) < 0)
		return dump_fail(d, NEG_ERRNO(), "task %u: sched_getattr failed: %m", th->tid);
	if (attr.sched_policy == CT_SCHED_DEADLINE)
		return dump_fail(d, -EOPNOTSUPP,
				 "pid %d thread %u: SCHED_DEADLINE scheduling is not supported",
				 (int)p->pid, th->tid);
	n = syscall(SYS_ioprio_get, IOPRIO_WHO_PROCESS, t->tid);
	if (n < 0)
		return dump_fail(d, NEG_ERRNO(), "task %u: ioprio_get failed: %m", th->tid);
	th->ioprio = (uint32_t)n;
	n = syscall(SYS_sched_getaffinity, t->tid, sizeof(mask), mask);
	if (n <= 0 || n % 8)
		return dump_fail(d, n < 0 ? NEG_ERRNO() : -EBADMSG,
				 "task %u: sched_getaffinity failed: %m", th->tid);
	th->affinity = malloc((size_t)n);
	if (!th->affinity)
		return -ENOMEM;
	memcpy(th->affinity, mask, (size_t)n);
	th->affinity_len = (size_t)n;
	th->sched_policy = attr.sched_policy;
	th->sched_flags = attr.sched_flags & CT_SCHED_FLAG_RESET_ON_FORK;
	th->sched_priority = attr.sched_priority;
	th->nice = attr.sched_nice;
	th->have_sched = true;
	return 0;
}

static int dump_thread(struct dumper *d, struct dproc *p, struct ct_ptrace_task *t,
		       struct ct_image_thread *th)
{
	struct __ptrace_rseq_configuration rseq = {};
	struct user_regs_struct regs;
	struct ct_proc_status st;
	_cleanup_free_ char *comm = NULL;
	void *xs = NULL;
	size_t xs_size, len;
	uint64_t head = 0;
	char path[96];
	int r;

	th->tid = (uint32_t)dump_ns_pid(d, t->tid);
	snprintf(path, sizeof(path), "/proc/%d/task/%d/comm", (int)p->hpid, (int)t->tid);
	r = read_small(path, &comm);
	if (r < 0)
		return dump_fail(d, r, "task %u: cannot read its name: %s", th->tid, strerror(-r));
	comm[strcspn(comm, "\n")] = 0;
	strscpy(th->comm, comm, sizeof(th->comm));
	if (ptrace(PTRACE_GETSIGMASK, t->tid, sizeof(th->sigmask), &th->sigmask) < 0)
		return dump_fail(d, NEG_ERRNO(), "task %u: PTRACE_GETSIGMASK failed: %m", th->tid);
	r = ct_proc_read_status(t->tid, &st);
	if (r < 0)
		return dump_fail(d, r, "task %u: cannot read its status", th->tid);
	th->sigpending = st.sigpnd;
	if (t->tid != p->hpid) {
		r = check_thread_creds(d, p, t->tid, th->tid, &st);
		if (r < 0)
			return r;
	}
	r = peek_siginfo(d, t->tid, false, &th->siginfo, &th->n_siginfo);
	if (r < 0)
		return r;
	if (syscall(SYS_get_robust_list, t->tid, &head, &len) < 0)
		return dump_fail(d, NEG_ERRNO(), "task %u: get_robust_list failed: %m", th->tid);
	th->robust_list = head;
	th->robust_list_len = len;
	if (ptrace(PTRACE_GET_RSEQ_CONFIGURATION, t->tid, sizeof(rseq), &rseq) < 0)
		return dump_fail(d, NEG_ERRNO(), "task %u: PTRACE_GET_RSEQ_CONFIGURATION: %m",
				 th->tid);
	th->rseq = rseq.rseq_abi_pointer;
	th->rseq_len = rseq.rseq_abi_size;
	th->rseq_sig = rseq.signature;
	r = thread_queries(d, p, t, th);
	if (r < 0)
		return r;
	r = dump_thread_sched(d, p, t, th);
	if (r < 0)
		return r;

	r = ct_ptrace_get_regs(t->tid, &regs);
	if (r >= 0)
		r = ct_ptrace_get_xstate(t->tid, &xs, &xs_size);
	if (r < 0)
		return dump_fail(d, r, "task %u: cannot read its registers: %s", th->tid,
				 strerror(-r));
	th->regsets = calloc(2, sizeof(*th->regsets));
	if (!th->regsets) {
		free(xs);
		return -ENOMEM;
	}
	th->regsets[0] = (struct ct_image_regset){NT_PRSTATUS, sizeof(regs), malloc(sizeof(regs))};
	th->regsets[1] = (struct ct_image_regset){NT_X86_XSTATE, (uint32_t)xs_size, xs};
	th->n_regsets = 2;
	if (!th->regsets[0].data)
		return -ENOMEM;
	memcpy(th->regsets[0].data, &regs, sizeof(regs));
	return 0;
}

/* /proc/PID/timers: "ID: n", "signal: SIG/SIGVAL", "notify: signal|none|thread/pid|tid.N",
 * "ClockID: c" per timer; the time left and the period come from timer_gettime(). */
static int dump_posix_timers(struct dumper *d, struct dproc *p, const char *text)
{
	struct ct_image_timer *cur = NULL;

	for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
		unsigned long long a, b;
		char how[16], who[8];

		if (sscanf(l, "ID: %llu", &a) == 1) {
			struct ct_image_timer *n;

			if (p->task.n_timers >= CT_IMAGE_TIMERS_MAX)
				return dump_fail(d, -E2BIG, "pid %d: too many POSIX timers",
						 (int)p->pid);
			n = reallocarray(p->task.timers, p->task.n_timers + 1, sizeof(*n));
			if (!n)
				return -ENOMEM;
			p->task.timers = n;
			cur = &n[p->task.n_timers++];
			*cur = (struct ct_image_timer){.id = a};
		} else if (cur && sscanf(l, "signal: %llu/%llx", &a, &b) == 2) {
			cur->signo = a;
			cur->sigval = b;
		} else if (cur && sscanf(l, "notify: %15[a-z]/%7[a-z].%llu", how, who, &a) == 3) {
			cur->notify = streq(how, "signal") ? SIGEV_SIGNAL
				      : streq(how, "none") ? SIGEV_NONE
							   : SIGEV_THREAD;
			if (streq(who, "tid")) {
				cur->notify |= SIGEV_THREAD_ID;
				cur->tid = (uint64_t)dump_ns_pid(d, (pid_t)a);
				if (!cur->tid)
					return dump_fail(d, -EOPNOTSUPP,
							 "pid %d: POSIX timer %" PRIu64
							 " signals a thread outside the container",
							 (int)p->pid, cur->id);
			}
		} else if (cur && sscanf(l, "ClockID: %llu", &a) == 1)
			cur->clock = a;
	}
	for (size_t i = 0; i < p->task.n_timers; i++) {
		struct ct_image_timer *t = &p->task.timers[i];
		uint64_t its[4];
		int r = inject_ok(d, p->threads[0], "timer_gettime", SYS_timer_gettime, (long)t->id,
				  (long)p->scratch, 0, 0, NULL);

		if (r >= 0)
			r = scratch_read(p, 0, its, sizeof(its));
		if (r < 0)
			return dump_fail(d, r, "pid %d: cannot read POSIX timer %" PRIu64,
					 (int)p->pid, t->id);
		t->interval_ns = its[0] * 1000000000ULL + its[1];
		t->value_ns = its[2] * 1000000000ULL + its[3];
	}
	return 0;
}

static int dump_timers(struct dumper *d, struct dproc *p)
{
	_cleanup_free_ char *text = NULL;
	char path[64];
	int r;

	snprintf(path, sizeof(path), "/proc/%d/timers", (int)p->hpid);
	r = read_small(path, &text);
	if (r < 0)
		return dump_fail(d, r, "pid %d: cannot read its POSIX timers", (int)p->pid);
	return dump_posix_timers(d, p, text);
}

static int dump_path_link(struct dumper *d, struct dproc *p, const char *what, char **ret)
{
	char path[64], buf[PATH_MAX + 16];
	ssize_t k;

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)p->hpid, what);
	k = readlink(path, buf, sizeof(buf) - 1);
	if (k < 0)
		return dump_fail(d, NEG_ERRNO(), "pid %d: cannot read its %s: %m", (int)p->pid,
				 what);
	buf[k] = 0;
	if (k > 10 && streq(buf + k - 10, " (deleted)"))
		return dump_fail(d, -EOPNOTSUPP, "pid %d: its %s %s was deleted", (int)p->pid, what,
				 buf);
	*ret = strdup(buf);
	return *ret ? 0 : -ENOMEM;
}

/* Field 3 (state) and field 52 (exit_code, a wait status) of /proc/PID/stat. */
static int read_exit_state(pid_t pid, char *ret_state, int *ret_status)
{
	_cleanup_free_ char *text = NULL;
	char path[64], *p;
	int r;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	r = read_full_file(path, 8192, &text, NULL);
	if (r < 0)
		return r;
	p = strrchr(text, ')');
	if (!p || !p[1] || !p[2])
		return -EBADMSG;
	*ret_state = p[2];
	for (int field = 3; field <= 52; field++) {
		p = strchr(p + 1, ' ');
		if (!p)
			return -EBADMSG;
	}
	*ret_status = atoi(p + 1);
	return 0;
}

/* Children that exited and were not reaped yet: not in the cgroup any more, but their parent
 * will wait() for them. Any other child outside the container is refused. */
static int dump_zombies(struct dumper *d, struct dproc *p)
{
	for (size_t i = 0; i < p->n_threads; i++) {
		_cleanup_free_ char *text = NULL;
		char path[96];
		int r;

		snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)p->hpid,
			 (int)p->threads[i]->tid);
		r = read_full_file(path, 1 << 20, &text, NULL);
		if (r < 0)
			return dump_fail(d, r, "pid %d: cannot list its children", (int)p->pid);
		for (char *c = text; *c;) {
			char *end, state;
			long child = strtol(c, &end, 10);
			struct ct_proc_status st;
			int status;
			uint64_t *n;

			if (end == c)
				break;
			c = end + strspn(end, " \n");
			if (dump_ns_pid(d, (pid_t)child))
				continue;
			r = read_exit_state((pid_t)child, &state, &status);
			if (r < 0 || state != 'Z')
				return dump_fail(
					d, -EOPNOTSUPP,
					"pid %d: its child %ld (host) is not in the container",
					(int)p->pid, child);
			r = ct_proc_read_status((pid_t)child, &st);
			if (r < 0)
				return dump_fail(d, r, "pid %d: cannot read its exited child %ld",
						 (int)p->pid, child);
			n = reallocarray(p->task.zombies, p->task.n_zombies + 1, sizeof(*n));
			if (!n)
				return -ENOMEM;
			p->task.zombies = n;
			n[p->task.n_zombies++] =
				(uint64_t)st.nspid[st.n_nspid - 1] << 32 | (uint32_t)status;
		}
	}
	return 0;
}

/* Namespaces other than the container's own are not supported inside it: for any process or
 * thread (a thread may join a network, UTS or IPC namespace, or make a time or PID namespace
 * for its children, alone). The restore makes one time namespace for all (read_clocks()), so
 * children must be born in PID 1's too: an unshare(CLONE_NEWTIME) changes only that. */
static int check_task_namespaces(struct dumper *d, const char *dir, const char *who,
				 const struct dproc *root)
{
	static const char *const nss[][2] = {
		{"mnt", "mnt"},
		{"uts", "uts"},
		{"ipc", "ipc"},
		{"net", "net"},
		{"pid_for_children", "pid_for_children"},
		{"user", "user"},
		{"cgroup", "cgroup"},
		{"time", "time"},
		{"time_for_children", "time"},
	};

	for (size_t i = 0; i < ELEMENTSOF(nss); i++) {
		char a[96], b[64];
		struct stat sa, sb;

		snprintf(a, sizeof(a), "%s/ns/%s", dir, nss[i][0]);
		snprintf(b, sizeof(b), "/proc/%d/ns/%s", (int)root->hpid, nss[i][1]);
		if (stat(a, &sa) < 0 || stat(b, &sb) < 0)
			continue;
		if (sa.st_ino != sb.st_ino)
			return dump_fail(d, -EOPNOTSUPP,
					 "%s: a %s namespace of its own is not supported", who,
					 i == ELEMENTSOF(nss) - 1 ? "time (for its children)"
								  : nss[i][0]);
	}
	return 0;
}

static int check_namespaces(struct dumper *d, struct dproc *p, const struct dproc *root)
{
	char dir[64], who[64];
	int r;

	snprintf(dir, sizeof(dir), "/proc/%d", (int)p->hpid);
	snprintf(who, sizeof(who), "pid %d", (int)p->pid);
	r = check_task_namespaces(d, dir, who, root);
	for (size_t i = 0; r >= 0 && i < p->task.n_threads; i++) {
		if (p->threads[i]->tid == p->hpid)
			continue;
		snprintf(dir, sizeof(dir), "/proc/%d/task/%d", (int)p->hpid,
			 (int)p->threads[i]->tid);
		snprintf(who, sizeof(who), "pid %d thread %u", (int)p->pid, p->task.threads[i].tid);
		r = check_task_namespaces(d, dir, who, root);
	}
	return r;
}

static int64_t timespec_ns(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

/* The container's CLOCK_MONOTONIC and CLOCK_BOOTTIME while it is frozen: the host's plus the
 * offsets of its time namespace, which /proc/PID/timens_offsets shows for the namespace PID 1's
 * children are born in (check_namespaces() makes sure that is PID 1's own). A kernel without
 * time namespaces has no such file, and no offsets. */
static int read_clocks(struct dumper *d)
{
	_cleanup_free_ char *text = NULL;
	int64_t off_mono = 0, off_boot = 0, mono, boot;
	struct timespec m, b, rt;
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/timens_offsets", (int)d->o->root_pid);
	if (read_full_file(path, 4096, &text, NULL) >= 0)
		for (char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
			char clock[32];
			long long s;
			long ns;

			if (sscanf(l, "%31s %lld %ld", clock, &s, &ns) != 3)
				continue;
			if (streq(clock, "monotonic") || streq(clock, "1"))
				off_mono = (int64_t)s * 1000000000 + ns;
			else if (streq(clock, "boottime") || streq(clock, "7"))
				off_boot = (int64_t)s * 1000000000 + ns;
		}
	if (clock_gettime(CLOCK_MONOTONIC, &m) < 0 || clock_gettime(CLOCK_BOOTTIME, &b) < 0 ||
	    clock_gettime(CLOCK_REALTIME, &rt) < 0)
		return dump_fail(d, NEG_ERRNO(), "cannot read the clocks: %m");
	mono = timespec_ns(&m) + off_mono;
	boot = timespec_ns(&b) + off_boot;
	if (mono <= 0 || boot <= 0 || timespec_ns(&rt) <= 0)
		return dump_fail(d, -ERANGE,
				 "its clocks read out of range (CLOCK_MONOTONIC %" PRId64
				 " ns, CLOCK_BOOTTIME %" PRId64 " ns)",
				 mono, boot);
	d->clocks = (struct ct_image_clocks){(uint64_t)mono, (uint64_t)boot,
					     (uint64_t)timespec_ns(&rt)};
	return 0;
}

static int dump_process(struct dumper *d, struct dproc *p)
{
	struct ct_proc_status st;
	struct ct_proc_stat sst;
	_cleanup_free_ char *pers = NULL;
	char path[64];
	long res;
	int r;

	p->task.pid = (uint32_t)p->pid;
	r = ct_proc_read_status(p->hpid, &st);
	if (r >= 0)
		r = ct_proc_read_stat(p->hpid, &sst);
	if (r < 0)
		return dump_fail(d, r, "pid %d: cannot read its status", (int)p->pid);
	p->task.ppid = p->pid == 1 ? 0 : (uint32_t)dump_ns_pid(d, st.ppid);
	p->task.pgid = (uint32_t)dump_ns_pid(d, sst.pgrp);
	p->task.sid = (uint32_t)dump_ns_pid(d, sst.session);
	if (p->pid != 1 && !p->task.ppid)
		return dump_fail(d, -EOPNOTSUPP, "pid %d: its parent is outside the container",
				 (int)p->pid);
	if (!p->task.pgid || !p->task.sid)
		return dump_fail(d, -EOPNOTSUPP,
				 "pid %d: its process group or session is outside the container",
				 (int)p->pid);
	strscpy(p->task.comm, sst.comm, sizeof(p->task.comm));
	r = dump_creds(d, p, &st);
	if (r >= 0 && p->task.seccomp_mode == SECCOMP_MODE_FILTER) {
		char what[32];

		snprintf(what, sizeof(what), "pid %d", (int)p->pid);
		r = read_seccomp_filters(d, what, p->hpid, &p->task.seccomp_filters,
					 &p->task.n_seccomp_filters);
	}
	if (r < 0)
		return r;
	snprintf(path, sizeof(path), "/proc/%d/personality", (int)p->hpid);
	r = read_small(path, &pers);
	if (r < 0)
		return dump_fail(d, r, "pid %d: cannot read its personality", (int)p->pid);
	p->task.personality = (uint32_t)strtoul(pers, NULL, 16);
	r = dump_path_link(d, p, "cwd", &p->task.cwd);
	if (r >= 0)
		r = dump_path_link(d, p, "root", &p->task.root);
	if (r < 0)
		return r;

	/* Pages for the results of injected calls, unmapped before the layout is read. */
	r = inject_ok(d, p->threads[0], "mmap", SYS_mmap, 0, SCRATCH_SIZE, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, &res);
	if (r < 0)
		return r;
	p->scratch = (unsigned long)res;
	place_batch_loop(p);
	r = process_queries(d, p, st.sigcgt | st.sigign);
	if (r >= 0)
		r = dump_task_attrs(d, p);
	if (r < 0)
		return r;
	/* Another process's limits need matching ids or CAP_SYS_RESOURCE, which a host may
	 * withhold even from root: then the task is asked itself (slower, a call each). */
	for (int i = 0; r >= 0 && i < CT_IMAGE_RLIMITS; i++) {
		uint64_t rl[2] = {};

		if (prlimit(p->hpid, i, NULL, (struct rlimit *)rl) < 0) {
			if (errno != EPERM)
				r = dump_fail(d, NEG_ERRNO(), "pid %d: prlimit failed: %m",
					      (int)p->pid);
			if (r >= 0)
				r = inject_ok(d, p->threads[0], "prlimit64", SYS_prlimit64, 0, i, 0,
					      (long)p->scratch, NULL);
			if (r >= 0 && (r = scratch_read(p, 0, rl, sizeof(rl))) < 0)
				r = dump_fail(d, r, "pid %d: cannot read its resource limits: %s",
					      (int)p->pid, strerror(-r));
		}
		p->task.rlimits[i] = (struct ct_image_rlimit){rl[0], rl[1]};
	}
	if (r < 0)
		return r;
	p->task.shared_pending = st.shdpnd;
	r = peek_siginfo(d, p->hpid, true, &p->task.shared_siginfo, &p->task.n_shared_siginfo);
	if (r < 0)
		return r;
	r = dump_timers(d, p);
	if (r < 0)
		return r;
	p->task.threads = calloc(p->n_threads, sizeof(*p->task.threads));
	if (!p->task.threads)
		return -ENOMEM;
	for (size_t i = 0; i < p->n_threads; i++) {
		r = dump_thread(d, p, p->threads[i], &p->task.threads[i]);
		p->task.n_threads = i + 1;
		if (r < 0)
			return r;
	}
	r = inject_ok(d, p->threads[0], "munmap", SYS_munmap, (long)p->scratch, SCRATCH_SIZE, 0, 0,
		      NULL);
	if (r < 0)
		return r;
	p->scratch = 0;
	r = check_namespaces(d, p, &d->procs[0]);
	if (r >= 0)
		r = dump_zombies(d, p);
	if (r < 0)
		return r;
	r = dump_mm(d, p);
	if (r < 0)
		return r;
	return dump_fds(d, p);
}

static int cmp_tid(const void *a, const void *b)
{
	pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;

	return (x > y) - (x < y);
}

static int cmp_dproc(const void *a, const void *b)
{
	const struct dproc *x = a, *y = b;

	return (x->pid > y->pid) - (x->pid < y->pid);
}

/* Groups the seized tasks into processes and learns every task's pid in the container. */
static int build_procs(struct dumper *d)
{
	struct ct_ptrace_set *s = d->set;
	int r;

	d->tids = calloc(MAX(s->n, 1u), sizeof(*d->tids));
	d->procs = calloc(MAX(s->n, 1u), sizeof(*d->procs));
	if (!d->tids || !d->procs)
		return -ENOMEM;
	for (size_t i = 0; i < s->n; i++) {
		struct ct_proc_status st;

		r = ct_proc_read_status(s->tasks[i].tid, &st);
		if (r < 0)
			return dump_fail(d, r, "task %d (host) vanished", (int)s->tasks[i].tid);
		d->tids[i].host = s->tasks[i].tid;
		d->tids[i].ns = st.nspid[st.n_nspid - 1];
		if (s->tasks[i].tid == d->o->root_pid && d->tids[i].ns != 1)
			return dump_fail(d, -EINVAL, "pid %d (host) is not the container's init",
					 (int)d->o->root_pid);
	}
	d->n_tids = s->n;
	qsort(d->tids, d->n_tids, sizeof(*d->tids), cmp_tid); /* host pid is the first member */
	for (size_t i = 0; i < s->n; i++) {
		struct ct_ptrace_task *t = &s->tasks[i];
		struct dproc *p = NULL;
		struct ct_ptrace_task **n;

		for (size_t j = 0; j < d->n_procs && !p; j++)
			if (d->procs[j].hpid == t->tgid)
				p = &d->procs[j];
		if (!p) {
			p = &d->procs[d->n_procs++];
			p->hpid = t->tgid;
			p->pid = dump_ns_pid(d, t->tgid);
			p->pidfd = -EBADF;
			if (!p->pid)
				return dump_fail(d, -ESRCH,
						 "process %d (host) is not in the container",
						 (int)t->tgid);
		}
		n = reallocarray(p->threads, p->n_threads + 1, sizeof(*n));
		if (!n)
			return -ENOMEM;
		p->threads = n;
		/* The leader first, then ascending tids. */
		if (t->tid == t->tgid) {
			memmove(n + 1, n, p->n_threads * sizeof(*n));
			n[0] = t;
		} else
			n[p->n_threads] = t;
		p->n_threads++;
	}
	qsort(d->procs, d->n_procs, sizeof(*d->procs), cmp_dproc);
	if (d->n_procs == 0 || d->procs[0].pid != 1 || d->procs[0].hpid != d->o->root_pid)
		return dump_fail(d, -ESRCH, "its init (pid %d on the host) is not in its cgroup",
				 (int)d->o->root_pid);
	for (size_t i = 0; i < d->n_procs; i++) {
		struct dproc *p = &d->procs[i];

		if (p->threads[0]->tid != p->hpid)
			return dump_fail(d, -EOPNOTSUPP, "pid %d: its main thread has exited",
					 (int)p->pid);
		p->pidfd = (int)syscall(SYS_pidfd_open, p->hpid, 0);
		if (p->pidfd < 0)
			return dump_fail(d, NEG_ERRNO(), "pid %d: pidfd_open failed: %m",
					 (int)p->pid);
	}
	return 0;
}

/* In the container's UTS namespace: its host and domain names. */
static int read_hostname(void *arg)
{
	char **io = arg;
	struct utsname u;

	if (uname(&u) < 0)
		return NEG_ERRNO();
	io[0] = strdup(u.nodename);
	io[1] = strdup(u.domainname);
	return 0;
}

static int vdso_layout(const struct ct_vma_list *maps, struct ct_image_vdso_layout *ret)
{
	*ret = (struct ct_image_vdso_layout){};
	for (size_t i = 0; i < maps->n; i++) {
		const struct ct_vma *v = &maps->vmas[i];

		switch (ct_vma_classify(v)) {
		case CT_VMA_VVAR:
			ret->vvar_start = v->start, ret->vvar_end = v->end;
			break;
		case CT_VMA_VVAR_VCLOCK:
			ret->vvar_vclock_start = v->start, ret->vvar_vclock_end = v->end;
			break;
		case CT_VMA_VDSO:
			ret->vdso_start = v->start, ret->vdso_end = v->end;
			break;
		default:
			break;
		}
	}
	return ret->vdso_start ? 0 : -ENOENT;
}

static int write_image(struct dumper *d, struct ct_image_writer *w)
{
	struct ct_image_inventory inv = {};
	struct utsname u;
	char nspath[64], *names[2] = {NULL, NULL};
	_cleanup_close_ int uts_fd = -EBADF;
	struct stat st;
	usec_t t0 = now_usec(CLOCK_MONOTONIC);
	int r;

	uname(&u);
	snprintf(nspath, sizeof(nspath), "/proc/%d/ns/uts", (int)d->o->root_pid);
	uts_fd = open(nspath, O_RDONLY | O_CLOEXEC);
	r = uts_fd < 0 ? NEG_ERRNO() : ns_run(uts_fd, CLONE_NEWUTS, read_hostname, names, NULL);
	if (r >= 0 && (!names[0] || !names[1]))
		r = -ENOMEM;
	if (r < 0) {
		free(names[0]);
		free(names[1]);
		return dump_fail(d, r, "cannot read its host name: %s", strerror(-r));
	}
	snprintf(nspath, sizeof(nspath), "/proc/%d/ns/net", (int)d->o->root_pid);
	inv.netns = stat(nspath, &st) == 0 && st.st_ino != d->net_ino;
	inv = (struct ct_image_inventory){
		.container = (char *)d->o->name,
		.kernel_release = u.release,
		.arch = u.machine,
		.root_pid = 1,
		.created_usec = now_usec(CLOCK_REALTIME),
		.hostname = names[0],
		.domainname = names[1],
		.netns = inv.netns,
		.clocks = d->clocks,
		.net_sysctls = d->net_sysctls,
		.n_net_sysctls = d->n_net_sysctls,
	};
	if (vdso_layout(&d->procs[0].maps, &inv.vdso) < 0) {
		free(names[0]);
		free(names[1]);
		return dump_fail(d, -EOPNOTSUPP, "pid 1 has no [vdso]");
	}
	r = ct_image_writer_set_inventory(w, &inv);
	free(names[0]);
	free(names[1]);
	if (r < 0)
		return dump_fail(d, r, "cannot create the image in %s: %s", d->o->dir,
				 strerror(-r));
	r = ct_image_writer_set_compression(w, d->o->compress_level);
	for (size_t i = 0; r >= 0 && i < d->n_procs; i++) {
		r = ct_image_writer_add_task(w, &d->procs[i].task);
		if (r >= 0)
			r = ct_image_writer_add_fds(w, &d->procs[i].fds);
	}
	if (r >= 0 &&
	    (d->ipc.n_sems > 0 || d->ipc.n_msgqs > 0 || d->ipc.n_shms > 0 || d->ipc.n_sysctls > 0))
		r = ct_image_writer_add_ipc(w, &d->ipc);
	if (r < 0)
		return dump_fail(d, r, "writing the image failed: %s", strerror(-r));
	d->stats->state_usec += now_usec(CLOCK_MONOTONIC) - t0;
	t0 = now_usec(CLOCK_MONOTONIC);
	/* The layout goes in after the memory: the walk that finds the pages finds the guard
	 * regions too. */
	for (size_t i = 0; r >= 0 && i < d->n_procs; i++) {
		r = dump_memory(d, w, &d->procs[i]);
		if (r >= 0)
			r = ct_image_writer_add_mm(w, &d->procs[i].mm);
	}
	if (r >= 0)
		r = dump_shm_contents(d, w);
	if (r >= 0)
		r = ct_image_writer_finish(w);
	if (r < 0)
		return dump_fail(d, r, "writing the memory to the image failed: %s", strerror(-r));
	d->stats->memory_usec = now_usec(CLOCK_MONOTONIC) - t0;
	return 0;
}

/* Bytes of anonymous memory the process has now (smaps_rollup's Anonymous), or 0. */
static uint64_t anon_bytes(pid_t pid)
{
	_cleanup_fclose_ FILE *f = NULL;
	char path[64], line[256];
	unsigned long long kb;

	snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Anonymous: %llu kB", &kb) == 1)
			return (uint64_t)kb * 1024;
	return 0;
}

/* While the container still runs, each process's pages file is made and allocated as large as
 * its anonymous memory: a file system hands out memory for new file pages slowly (tmpfs here:
 * write() of a new file 2.6 GB/s, of an allocated one 5.4), and this way that wait is not
 * part of the container's downtime. Uncompressed images only, whose pages take about that
 * much space. Best effort: a process that forks later, or a file system without fallocate or
 * without the space, gets its file when its pages are written. */
static void reserve_pages(struct dumper *d, struct ct_image_writer *w)
{
	_cleanup_free_ pid_t *pids = NULL;
	size_t n = 0;

	if (ct_cgroup_get_pids(d->o->cg, false, &pids, &n) < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		struct ct_proc_status st;
		uint64_t bytes;

		if (ct_proc_read_status(pids[i], &st) < 0 || st.n_nspid == 0)
			continue;
		bytes = anon_bytes(pids[i]);
		if (bytes == 0)
			continue;
		if (ct_image_writer_reserve_pages(w, (uint64_t)st.nspid[st.n_nspid - 1], bytes) ==
		    -ENOSPC)
			break;
	}
}

static void dumper_done(struct dumper *d)
{
	dump_files_release(d, false);
	net_dump_free(d);
	safe_close(d->diag_fd);
	safe_close(d->root_fd);
	ct_image_ipc_done(&d->ipc);
	ct_image_sysctls_free(d->net_sysctls, d->n_net_sysctls);
	for (size_t i = 0; i < d->n_sysv; i++)
		(void)shmdt(d->sysv[i].addr);
	free(d->sysv);
	for (size_t i = 0; i < d->n_shms; i++)
		safe_close(d->shms[i].fd);
	free(d->shms);
	for (size_t i = 0; i < d->n_procs; i++) {
		struct dproc *p = &d->procs[i];

		safe_close(p->pidfd);
		free(p->threads);
		ct_vma_list_done(&p->maps);
		ct_image_task_done(&p->task);
		ct_image_mm_done(&p->mm);
		ct_image_fds_done(&p->fds);
	}
	free(d->procs);
	free(d->tids);
	ct_ptrace_set_free(d->set);
}

static uint64_t dir_bytes(const char *dir)
{
	uint64_t total = 0;
	DIR *dd = opendir(dir);
	struct dirent *e;

	if (!dd)
		return 0;
	while ((e = readdir(dd))) {
		struct stat st;

		if (fstatat(dirfd(dd), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    S_ISREG(st.st_mode))
			total += (uint64_t)st.st_size;
	}
	closedir(dd);
	return total;
}

/* A failed dump leaves nothing: the image's files and reservations go, and the directory when
 * the dump made it. Returns r. */
static int give_up(struct ct_image_writer **w, bool made_dir, const char *dir, int r)
{
	*w = ct_image_writer_free(*w);
	if (made_dir)
		(void)rmdir(dir);
	return r;
}

int ct_dump(const struct ct_dump_opts *o, struct ct_dump_stats *ret_stats,
	    char err[CT_ENGINE_ERROR_MAX])
{
	struct ct_dump_stats stats = {};
	struct dumper d = {.o = o,
			   .err = err,
			   .stats = &stats,
			   .first_file_id = 1,
			   .diag_fd = -EBADF,
			   .root_fd = -EBADF};
	_cleanup_(ct_image_writer_freep) struct ct_image_writer *w = NULL;
	usec_t t0 = now_usec(CLOCK_MONOTONIC), t;
	struct stat st;
	bool made_dir;
	int r, k;

	err[0] = 0;
	if (stat("/proc/self/ns/net", &st) == 0)
		d.net_ino = st.st_ino;
	/* The directory is checked before anything is frozen. */
	made_dir = lstat(o->dir, &st) < 0 && errno == ENOENT;
	r = ct_image_writer_open(o->dir, &w);
	if (r < 0)
		return give_up(
			&w, made_dir, o->dir,
			dump_fail(&d, r, "cannot create the image in %s: %s", o->dir,
				  r == -ENOTEMPTY ? "it is not an empty directory" : strerror(-r)));
	if (o->compress_level == 0 && !o->no_reserve) {
		reserve_pages(&d, w);
		stats.reserve_usec = now_usec(CLOCK_MONOTONIC) - t0;
		t0 = now_usec(CLOCK_MONOTONIC);
	}
	r = dump_ns_prepare(&d);
	if (r < 0)
		return give_up(&w, made_dir, o->dir, r);
	r = ct_cgroup_freeze(o->cg, o->timeout);
	if (r < 0) {
		dump_fail(&d, r, "cannot freeze its cgroup: %s", ct_cgroup_last_error(o->cg));
		(void)ct_cgroup_thaw(o->cg, o->timeout);
		dump_ns_cancel(&d);
		return give_up(&w, made_dir, o->dir, r);
	}
	t = now_usec(CLOCK_MONOTONIC);
	stats.freeze_usec = t - t0;
	r = ct_ptrace_seize_cgroup(o->cg, o->timeout, &d.set);
	if (r < 0) {
		dump_fail(&d, r, "cannot seize its tasks: %s", strerror(-r));
		(void)ct_cgroup_thaw(o->cg, o->timeout);
		dump_ns_cancel(&d);
		return give_up(&w, made_dir, o->dir, r);
	}
	stats.seize_usec = now_usec(CLOCK_MONOTONIC) - t;
	t = now_usec(CLOCK_MONOTONIC);
	r = build_procs(&d);
	if (r >= 0)
		r = dump_ns_start(&d);
	/* Each process's injections over, its tasks are settled (see below): a migrd that dies
	 * in the state phase kills none of the processes already dumped either. */
	for (size_t i = 0; r >= 0 && i < d.n_procs; i++) {
		r = dump_process(&d, &d.procs[i]);
		if (r >= 0 && (k = ct_ptrace_set_settle(d.set, o->timeout)) < 0)
			r = dump_fail(&d, k, "its tasks did not stop again: %s", strerror(-k));
	}
	k = dump_ns_finish(&d, r >= 0);
	if (r >= 0)
		r = k;
	if (r >= 0)
		r = dump_fds_check(&d);
	/* After the timers: what they have left is never more than the clocks say. */
	if (r >= 0)
		r = read_clocks(&d);
	for (size_t i = 0; i < d.n_procs; i++) {
		stats.n_threads += (unsigned)d.procs[i].n_threads;
		stats.n_fds += (unsigned)d.procs[i].fds.n_fds;
		stats.n_vmas += (unsigned)d.procs[i].mm.n_vmas;
	}
	stats.n_procs = (unsigned)d.n_procs;
	/* Should migrd end from here on, no task may die of an injection's SIGTRAP (each was
	 * settled after its process's state), and the tasks stay in the freezer, where their TCP
	 * connections, put in repair mode only now, cannot fail them, until the next migrd mends
	 * and thaws them (ct_dump_recover()). The tasks sit in their ptrace stops, which the
	 * freezer counts as frozen: frozen at once. No task is injected into while frozen. */
	if (r >= 0) {
		r = ct_ptrace_set_settle(d.set, o->timeout);
		if (r < 0)
			dump_fail(&d, r, "its tasks did not stop again: %s", strerror(-r));
	}
	if (r >= 0) {
		r = ct_cgroup_freeze(o->cg, o->timeout);
		if (r < 0)
			dump_fail(&d, r, "cannot freeze its cgroup again: %s",
				  ct_cgroup_last_error(o->cg));
	}
	/* Only now, frozen: a connection in repair mode neither sends nor receives. */
	if (r >= 0)
		r = net_dump_tcp_later(&d);
	stats.state_usec = now_usec(CLOCK_MONOTONIC) - t;
	if (r >= 0)
		r = write_image(&d, w);
	stats.frozen_usec = now_usec(CLOCK_MONOTONIC) - t0;
	t = now_usec(CLOCK_MONOTONIC);
	if (r < 0 || o->leave_running) {
		/* Scratch pages still mapped after a failure go before the tasks run on. */
		k = ct_cgroup_thaw(o->cg, o->timeout);
		if (k < 0 && r >= 0)
			r = dump_fail(&d, k, "thawing its cgroup failed: %s",
				      ct_cgroup_last_error(o->cg));
		for (size_t i = 0; i < d.n_procs; i++)
			if (d.procs[i].scratch) {
				long res;
				const long a[6] = {(long)d.procs[i].scratch, SCRATCH_SIZE};

				(void)ct_ptrace_task_inject(d.procs[i].threads[0], SYS_munmap, a,
							    &res);
			}
		dump_files_release(&d, false);
		k = ct_ptrace_set_detach(d.set, o->cg, CT_DETACH_RUNNING, o->timeout);
		if (k < 0 && r >= 0)
			r = dump_fail(&d, k, "letting its tasks go failed: %s", strerror(-k));
	} else {
		k = ct_ptrace_set_detach(d.set, o->cg, CT_DETACH_FROZEN, o->timeout);
		if (k >= 0)
			k = ct_cgroup_kill(o->cg, o->timeout);
		/* Empty and thawed: the cgroup can take a restored copy. */
		if (k >= 0)
			k = ct_cgroup_thaw(o->cg, o->timeout);
		/* Sockets in repair mode close silently only now that the container is gone. */
		dump_files_release(&d, true);
		if (k < 0)
			r = dump_fail(&d, k, "killing it after the checkpoint failed: %s",
				      ct_cgroup_last_error(o->cg));
	}
	stats.release_usec = now_usec(CLOCK_MONOTONIC) - t;
	if (r < 0)
		(void)give_up(&w, made_dir, o->dir, r);
	else
		w = ct_image_writer_free(w);
	stats.image_bytes = dir_bytes(o->dir);
	dumper_done(&d);
	if (ret_stats)
		*ret_stats = stats;
	return r;
}
