/* State shared by the parts of a checkpoint: the seized processes, the pid translation, the open
 * file descriptions and shared memory objects found so far, and the refusal/error reporting. */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "checkpoint/ct/engine-internal.h"
#include "checkpoint/ct/image-internal.h"
#include "checkpoint/ct/proc-internal.h"
#include "checkpoint/ct/ptrace-internal.h"
#include "common/macro.h"

struct dproc {
	pid_t hpid; /* as the host sees it */
	pid_t pid;  /* inside the container */
	int pidfd;
	struct ct_ptrace_task **threads; /* [0] is the leader */
	size_t n_threads;
	unsigned long scratch;	  /* pages injected for syscall results, 0 when none */
	unsigned long batch_code; /* the batch loop in them, 0: each call injected alone */
	struct ct_vma_list maps;
	struct ct_image_task task;
	struct ct_image_mm mm;
	struct ct_image_fds fds;
};

/* An open file description, held through our own duplicate of the fd. */
struct dfile {
	int fd;			 /* ours, from pidfd_getfd() */
	uint64_t id;		 /* written as the fd records' file_id */
	unsigned tcp_repair;	 /* NET_REPAIR*: left in repair mode until the container is gone */
	struct ct_image_fd *rec; /* the first fd record of it */
};

/* An inode and its open file descriptions (indexes into dumper.files, in kcmp() order). */
struct dinode {
	dev_t dev;
	ino_t ino;
	uint32_t *files;
	size_t n_files; /* 0: a free slot */
};

/* A System V segment of the container's, attached read-only in migrd for its contents. */
struct dsysv {
	uint32_t id;
	void *addr;
	uint64_t size;
};

/* A shmem object (shared anonymous memory, memfd), dumped once by inode. */
struct dshm {
	uint64_t ino;
	int fd; /* ours: /proc/PID/map_files/... or the memfd itself */
	uint64_t size;
};

struct dumper {
	const struct ct_dump_opts *o;
	char *err; /* CT_ENGINE_ERROR_MAX */
	struct ct_ptrace_set *set;
	struct dproc *procs; /* sorted by pid */
	size_t n_procs;
	struct {
		pid_t host, ns;
	} * tids; /* every task, sorted by host tid */
	size_t n_tids;
	struct dfile *files; /* open file descriptions, by id (dump-fds.c) */
	size_t n_files;
	uint64_t first_file_id;
	struct dinode *inodes; /* hashed by inode (dump-fds.c) */
	size_t inodes_size, n_inodes;
	dev_t pipefs_dev; /* once known */
	bool pipefs_known;
	struct dshm *shms;
	size_t n_shms;
	uint64_t net_ino;	 /* migrd's network namespace */
	int diag_fd;		 /* NETLINK_SOCK_DIAG in the container's network namespace, or -1 */
	int root_fd;		 /* the root of the container's mount namespace (O_PATH), or -1 */
	struct ct_image_ipc ipc; /* its IPC namespace's System V objects */
	struct dsysv *sysv;	 /* its System V segments, attached here (shmdt when done) */
	size_t n_sysv;
	bool sysv_swapped;		     /* some of the namespace's shared memory is in swap */
	struct ipc_probe *ipc_probe;	     /* running between dump_ns_start() and _finish() */
	struct net_sysctls *net_probe;	     /* likewise, with a network namespace of its own */
	struct ct_image_sysctl *net_sysctls; /* its network namespace's, sorted by name */
	size_t n_net_sysctls;
	struct tcp_later *tcp_later; /* connections read once frozen again (dump-net.c) */
	size_t n_tcp_later;
	struct unix_snap *unix_snap; /* its unix sockets, by inode (dump-net.c) */
	size_t n_unix_snap;
	bool unix_snap_tried;
	struct ct_image_clocks clocks; /* the container's, when it was frozen */
	struct ct_dump_stats *stats;
};

/* Records the first error as "NAME: message" and returns r (< 0). */
int dump_fail(struct dumper *d, int r, const char *format, ...) _printf_(3, 4);
/* The container's pid for a host pid; 0 when it is not in the container. */
pid_t dump_ns_pid(const struct dumper *d, pid_t host);
/* Syscall injection in the task (its site cached). */
int dump_inject(struct dumper *d, struct ct_ptrace_task *t, long nr, long a0, long a1, long a2,
		long a3, long *ret);

/* dump-mm.c */
int dump_mm(struct dumper *d, struct dproc *p);
int dump_register_shm(struct dumper *d, struct dproc *p, int fd, uint64_t ino);
int dump_memory(struct dumper *d, struct ct_image_writer *w, struct dproc *p);
int dump_shm_contents(struct dumper *d, struct ct_image_writer *w);

/* dump-ns.c: reads the container's IPC namespace (System V objects into ipc and sysv) on a
 * thread started by dump_ns_start(), alongside the processes' dumps; dump_ns_finish() joins it
 * (always call it once started); the sysctls of a network namespace of the container's own are
 * read the same way, into net_sysctls. When check (the dump went well so far), it refuses what the
 * namespaces hold and a restore would lose: POSIX message queues, partial System V attachments, a
 * network namespace with more than lo, mounts of the container's own. */
struct ipc_probe;
struct net_sysctls;
/* Before the freeze: lists the network namespace's sysctls. dump_ns_cancel() when the dump
 * fails before dump_ns_start(). */
int dump_ns_prepare(struct dumper *d);
void dump_ns_cancel(struct dumper *d);
int dump_ns_start(struct dumper *d);
int dump_ns_finish(struct dumper *d, bool check);

/* dump-fds.c */
int dump_fds(struct dumper *d, struct dproc *p);
int dump_fds_check(struct dumper *d);
/* How the dump left the file's TCP socket (NET_REPAIR*), once it is read. */
void dump_file_set_repair(struct dumper *d, uint64_t id, unsigned how);
/* Closes our duplicates; silent: TCP sockets stay in repair mode (the container is gone). */
void dump_files_release(struct dumper *d, bool silent);
