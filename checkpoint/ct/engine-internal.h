/* The container engine: checkpoint a frozen container's process tree into an image, and restore
 * an image as a new process tree with the same pids, memory, registers and files. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "checkpoint/ct/cgroup-internal.h"
#include "common/util.h"

#define CT_ENGINE_ERROR_MAX 1024

/* struct sched_attr of sched_getattr(2)/sched_setattr(2), which <linux/sched/types.h> declares
 * in a way that clashes with <sched.h>. */
struct ct_sched_attr {
	uint32_t size;
	uint32_t sched_policy;
	uint64_t sched_flags;
	int32_t sched_nice;
	uint32_t sched_priority;
	uint64_t sched_runtime, sched_deadline, sched_period;
};

#define CT_PR_SET_MDWE 65 /* Linux 6.3 */
#define CT_PR_GET_MDWE 66

#define CT_SCHED_DEADLINE	    6
#define CT_SCHED_FLAG_RESET_ON_FORK 0x01

struct ct_dump_opts {
	const char *name;     /* the container, for messages and the inventory */
	struct ct_cgroup *cg; /* every task of the container is in it */
	pid_t root_pid;	      /* its PID 1, as the host sees it */
	const char *dir;      /* created 0700; must not exist or be empty */
	int compress_level;   /* zstd level for pages, 0: none */
	bool leave_running;   /* thaw afterwards instead of killing */
	bool no_reserve;      /* do not allocate the pages files before the freeze */
	bool no_direct;	      /* write pages through a buffer even into a reserved file (bench) */
	unsigned n_threads;   /* memory readers; 0: one per CPU, at most 4 */
	usec_t timeout;	      /* for freezing and seizing */
};

struct ct_dump_stats {
	unsigned n_procs, n_threads, n_fds, n_vmas;
	uint64_t pages, zero_pages; /* private + shared memory */
	uint64_t direct_pages;	    /* of pages, read straight into the image's files */
	uint64_t image_bytes;
	usec_t reserve_usec; /* that, while the container ran */
	usec_t freeze_usec;  /* freezer: request until frozen */
	usec_t seize_usec;   /* ptrace seize of every task */
	usec_t state_usec;   /* tasks, fds, layout */
	usec_t memory_usec;  /* page contents */
	usec_t frozen_usec;  /* freeze start until the image was complete */
	usec_t release_usec; /* thaw or kill */
};

/* Checkpoints the container. Everything is collected before anything is destroyed: on any
 * failure (err says why, naming the pid and fd) the container is thawed and keeps running and
 * the partial image is removed. On success the container is killed, or with leave_running it
 * runs on. */
int ct_dump(const struct ct_dump_opts *opts, struct ct_dump_stats *ret_stats,
	    char err[CT_ENGINE_ERROR_MAX]);

/* After migrd ended in the middle of ct_dump() (killed, or crashed): undoes what the dump had
 * done to the container that migrd's end did not. The tasks' ptrace stops ended with migrd; a
 * TCP connection the dump put in repair mode, where it neither sends nor receives, leaves it
 * (its SO_REUSEADDR, which repair mode hides, is not known any more and stays off); then the
 * cgroup, frozen while the dump copies memory, is thawed. *ret_repaired: the connections
 * mended. */
int ct_dump_recover(struct ct_cgroup *cg, usec_t timeout, unsigned *ret_repaired,
		    char err[CT_ENGINE_ERROR_MAX]);

struct ct_restore_opts {
	const char *name;     /* the container, for messages */
	const char *dir;      /* the image */
	struct ct_cgroup *cg; /* created by the caller, empty */
	unsigned n_threads;   /* memory writers; 0: one per CPU, at most 4 */
	bool no_map;	      /* read the pages files twice, never map them (for A/B benchmarks) */
	usec_t timeout;
};

struct ct_restore_stats {
	unsigned n_procs, n_threads, n_fds;
	uint64_t pages;
	uint64_t mapped_pages; /* of pages: copied from a mapped image file (no second read) */
	usec_t verify_usec;    /* opening and verifying the image */
	usec_t tree_usec;      /* namespaces, processes, threads */
	usec_t memory_usec;    /* mappings and page contents */
	usec_t state_usec;     /* files, signals, credentials, registers */
	usec_t total_usec;
	bool timens; /* in a time namespace whose clocks go on from the image's */
};

/* Restores an image into new namespaces and cg. On success the tree runs, ret_pid is its PID 1
 * as the host sees it and ret_pidfd a pidfd for it. On failure nothing of it is left running. */
int ct_restore(const struct ct_restore_opts *opts, pid_t *ret_pid, int *ret_pidfd,
	       struct ct_restore_stats *ret_stats, char err[CT_ENGINE_ERROR_MAX]);
