/* A container's cgroup: create it on the host's layout (cgroup2 or v1 controllers), limits,
 * membership, freeze/thaw, kill and removal. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/cleanup.h"
#include "common/util.h"

enum ct_cgroup_mode {
	CT_CGROUP_AUTO, /* v2 when it offers every needed controller, else v1 */
	CT_CGROUP_V2,
	CT_CGROUP_V1,
};

/* Controllers a container needs besides the freezer. */
#define CT_CGROUP_NEED_MEMORY (1u << 0)
#define CT_CGROUP_NEED_CPU    (1u << 1)

struct ct_cgroup_params {
	const char *name; /* created as migrd/<name> in each hierarchy used */
	unsigned needs;	  /* CT_CGROUP_NEED_* */
	enum ct_cgroup_mode mode;
};

struct ct_cgroup {
	enum ct_cgroup_mode mode; /* V2 or V1 once created */
	char *name;
	char *v2_path;	    /* v2 mode */
	char *freezer_path; /* v1 mode */
	char *memory_path;  /* v1 mode, when needed */
	char *cpu_path;	    /* v1 mode, when needed */
	char error[512];    /* what failed last, with the path */
};

/* Creates (or reuses) the cgroup. Fails with -EOPNOTSUPP when no layout offers what is needed. */
int ct_cgroup_new(const struct ct_cgroup_params *params, struct ct_cgroup **ret);
/* Forgets the object; the cgroup itself stays (see ct_cgroup_remove()). */
struct ct_cgroup *ct_cgroup_free(struct ct_cgroup *cg);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct ct_cgroup *, ct_cgroup_free);

/* Last error message of this object ("" if none). */
const char *ct_cgroup_last_error(const struct ct_cgroup *cg);
const char *ct_cgroup_mode_to_string(enum ct_cgroup_mode m);

int ct_cgroup_set_memory_limit(struct ct_cgroup *cg, uint64_t bytes); /* UINT64_MAX: none */
/* quota_usec of CPU time per period_usec; quota UINT64_MAX: none. */
int ct_cgroup_set_cpu_quota(struct ct_cgroup *cg, uint64_t quota_usec, uint64_t period_usec);
int ct_cgroup_add_pid(struct ct_cgroup *cg, pid_t pid);
/* The cgroup2 directory, O_CLOEXEC, for clone3(CLONE_INTO_CGROUP): a task born in the cgroup
 * costs no cgroup.procs write, which waits for an RCU grace period. -EOPNOTSUPP in v1 mode. */
int ct_cgroup_open_dir(struct ct_cgroup *cg);
/* A child cloned into a cgroup (CLONE_INTO_CGROUP) that ended without a word: killed at birth by
 * SIGKILL? This kernel (6.18) does that to a child born in a cgroup that once had a cgroup.kill.
 * Then it is reaped, as if it never was, and the caller moves a new one in instead. */
bool ct_cgroup_killed_at_birth(int pidfd);
/* threads: every task (thread ids), else processes. Sorted ascending. */
int ct_cgroup_get_pids(struct ct_cgroup *cg, bool threads, pid_t **ret_pids, size_t *ret_n);

/* Freezes every task and waits until the kernel reports the cgroup frozen. */
int ct_cgroup_freeze(struct ct_cgroup *cg, usec_t timeout);
/* Starts the thaw; with wait, until the kernel reports it thawed. */
int ct_cgroup_thaw(struct ct_cgroup *cg, usec_t timeout);
/* 1 frozen, 0 not (or not completely). */
int ct_cgroup_is_frozen(struct ct_cgroup *cg);
/* SIGKILLs every task and waits until the cgroup is empty. */
int ct_cgroup_kill(struct ct_cgroup *cg, usec_t timeout);
/* Removes the (empty) cgroup directories; missing ones are fine. */
int ct_cgroup_remove(struct ct_cgroup *cg, usec_t timeout);
