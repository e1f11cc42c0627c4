/* Starting a container: CMD as PID 1 of new PID, UTS, IPC and mount namespaces (optionally a
 * network namespace), inside its cgroup, with its output in a log file. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "checkpoint/ct/cgroup-internal.h"

struct ct_spec {
	const char *name;
	char *const *argv; /* argv[0] is resolved against PATH of env (or the default PATH) */
	char *const *env;  /* NULL-terminated "K=V" on top of the defaults, may be NULL */
	const char *cwd;   /* inside the container's view; default "/" */
	bool netns;	   /* a network namespace of its own (only lo, up) */
};

/* Forks CMD into new namespaces, places it in cg before it runs a single instruction of CMD,
 * and returns once exec succeeded (or failed: then the message says why, e.g. "exec
 * /bin/nosuch: No such file or directory"). ret_pidfd watches it. Safe to call from a
 * multi-threaded process: the child only makes system calls until exec. */
int ct_container_spawn(const struct ct_spec *spec, struct ct_cgroup *cg, int log_fd, pid_t *ret_pid,
		       int *ret_pidfd, char **ret_error);

/* In a new process of fresh namespaces (system calls only, safe after clone3() in a threaded
 * process): private mounts and its own /proc, the host name, the NIS domain name (unless
 * NULL: then the one it was born with), lo up when netns. -1 with errno on failure. Used by
 * ct_container_spawn() and by the restore's PID 1. */
int ct_container_setup_namespaces(const char *hostname, const char *domainname, bool netns);

/* The start time of pid (clock ticks since boot, /proc/PID/stat field 22): with the pid it
 * identifies a process across a daemon restart. */
int ct_process_start_time(pid_t pid, uint64_t *ret);
