/* ptrace primitives of the container engine: seize a frozen cgroup's tasks, their registers
 * (GP, fs/gs base, xstate) and syscalls injected into a stopped task. x86-64 only. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>
#include <sys/user.h>

#include "checkpoint/ct/cgroup-internal.h"
#include "common/cleanup.h"
#include "common/util.h"

struct ct_ptrace_task {
	pid_t tid;
	pid_t tgid;
	bool group_stopped; /* in group-stop when seized: stays stopped after detach */
	int pending_sig;    /* dequeued while we waited for the stop; delivered on detach */
	bool seized;
	unsigned long syscall_insn; /* a `syscall` found in the task's [vdso], 0 until needed */
	bool stepped; /* injected into: may sit in the signal-delivery-stop of the step's SIGTRAP */
};

struct ct_ptrace_set {
	struct ct_ptrace_task *tasks;
	size_t n;
};

/* Frees the list; the tasks stay seized (see ct_ptrace_set_detach()). */
struct ct_ptrace_set *ct_ptrace_set_free(struct ct_ptrace_set *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct ct_ptrace_set *, ct_ptrace_set_free);

/* PTRACE_SEIZE + PTRACE_INTERRUPT; the stop itself is collected by ct_ptrace_wait_interrupt(). */
int ct_ptrace_seize(pid_t tid);
/* Waits until the task sits in the interrupt's PTRACE_EVENT_STOP, fit for injection (a task in
 * group-stop reports a group-stop trap first: resumed once, it reports the interrupt). */
int ct_ptrace_wait_interrupt(struct ct_ptrace_task *t, usec_t deadline);
int ct_ptrace_detach(pid_t tid, int sig);

/* Seizes every task of a frozen cgroup, thaws it so each lands in its ptrace stop, and
 * returns them sorted by tid. On failure every task seized so far is detached again.
 * Tasks in group-stop under the v1 freezer are seized right after the thaw (still stopped). */
int ct_ptrace_seize_cgroup(struct ct_cgroup *cg, usec_t timeout, struct ct_ptrace_set **ret);

enum ct_detach_mode {
	CT_DETACH_RUNNING, /* tasks run on (group-stopped ones stay stopped) */
	CT_DETACH_FROZEN,  /* the cgroup is frozen before the tasks are let go */
};
int ct_ptrace_set_detach(struct ct_ptrace_set *s, struct ct_cgroup *cg, enum ct_detach_mode mode,
			 usec_t timeout);

/* General registers incl. orig_rax, fs_base and gs_base (NT_PRSTATUS). */
int ct_ptrace_get_regs(pid_t tid, struct user_regs_struct *ret);
int ct_ptrace_set_regs(pid_t tid, const struct user_regs_struct *regs);
/* The XSAVE area (NT_X86_XSTATE, standard format) in the size the kernel reports. */
int ct_ptrace_get_xstate(pid_t tid, void **ret_buf, size_t *ret_size);
int ct_ptrace_set_xstate(pid_t tid, const void *buf, size_t size);

enum ct_inject_site {
	CT_INJECT_AUTO,	    /* an existing syscall instruction, else CT_INJECT_AT_RIP */
	CT_INJECT_EXISTING, /* the one just before rip, or one in [vdso]: nothing is written */
	CT_INJECT_AT_RIP,   /* `syscall` written at rip for the call, the old bytes put back */
	CT_INJECT_FIXED,    /* a syscall instruction the caller knows of (ct_inject_syscall_site) */
};

/* Runs syscall nr with args in the stopped task tid and stores its return value (-errno on
 * the task's failure) in *ret_result. Registers, signal mask and code are restored after. */
int ct_inject_syscall(pid_t tid, long nr, const long args[6], long *ret_result);
int ct_inject_syscall_at(pid_t tid, enum ct_inject_site site, long nr, const long args[6],
			 long *ret_result);
/* Runs it at site, which must hold a `syscall` instruction (nothing is checked or written). An
 * injected clone/fork completes: its event stop is stepped over (the new task's id comes from
 * PTRACE_GETEVENTMSG afterwards). */
int ct_inject_syscall_site(pid_t tid, unsigned long site, long nr, const long args[6],
			   long *ret_result, unsigned long *ret_event_msg);
/* The same for a seized task, remembering where it found a syscall instruction. */
int ct_ptrace_task_inject(struct ct_ptrace_task *t, long nr, const long args[6], long *ret_result);
/* Batches: n syscalls run one after the other by a loop (ct_batch_code, which the caller
 * has placed at code in executable memory of the task) from a table at table in the task's
 * memory, n entries of CT_BATCH_ENTRY_SIZE bytes: the number, six arguments and room for the
 * result, as 64-bit words. One resume of the task for all of them, where each injected call
 * costs a stop and a resume. The loop stops at the first call that fails. Registers and signal
 * mask (all signals blocked meanwhile) are restored after. *ret_done: the calls that
 * succeeded; *ret_result: the failure of the next one (0 when all succeeded). */
#define CT_BATCH_ENTRY_SIZE 64
#define CT_BATCH_CODE_SIZE  64
extern const uint8_t ct_batch_code[CT_BATCH_CODE_SIZE];
int ct_inject_batch(pid_t tid, unsigned long code, unsigned long table, size_t n, size_t *ret_done,
		    long *ret_result);
/* An injection's single-step leaves the task in a signal-delivery-stop for the step's SIGTRAP,
 * which only the tracer's next resume discards. Were migrd to die before that (killed, or
 * crashed, in the middle of a checkpoint), the kernel would detach the task, let it go on and
 * deliver the SIGTRAP: the container would die of it. This puts every task injected into back
 * in a trap that carries no signal, as the seize left it: before any long wait. */
int ct_ptrace_set_settle(struct ct_ptrace_set *s, usec_t timeout);
