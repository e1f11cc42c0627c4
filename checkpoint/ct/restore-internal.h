/* State shared by the parts of a restore: the image, the processes being rebuilt (each a ptrace
 * stopped task driven by injected system calls), the fd channel into them and the objects
 * (files, pipes, sockets, shared memory) created so far. */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "checkpoint/ct/engine-internal.h"
#include "checkpoint/ct/image-internal.h"
#include "common/macro.h"

#define RESTORE_SCRATCH_SIZE (64U << 10)
/* The scratch area's upper part serves batches of injected calls (restore_batch_*): their
 * table, the data their arguments point to, and the loop that runs them in its last page,
 * made executable. Below 40 KiB, what single calls need (a seccomp program: up to 32 KiB). */
#define RESTORE_BATCH_TABLE_OFF (40U << 10)
#define RESTORE_BATCH_MAX	64 /* 4 KiB of table */
#define RESTORE_BATCH_DATA_OFF	(44U << 10)
#define RESTORE_BATCH_DATA	(16U << 10)
#define RESTORE_BATCH_CODE_OFF	(60U << 10)

struct rproc {
	const struct ct_image_process *img;
	pid_t hpid;   /* as the host sees it */
	pid_t *htids; /* per image thread; [0] == hpid */
	int pidfd;
	unsigned long site; /* a syscall instruction in its [vdso] */
	unsigned long scratch;
	unsigned long batch_code; /* the batch loop in its scratch area; 0: calls one by one */
	bool mm_done;
};

enum {
	OBJ_FILE = 1,	    /* key: file id */
	OBJ_PIPE = 2,	    /* key: pipe inode; fd read end, fd2 write end */
	OBJ_SHM = 3,	    /* key: shared memory id (restore-mm.c) */
	OBJ_SOCK = 4,	    /* key: socket inode */
	OBJ_EPOLL_DONE = 5, /* key: file id of an epoll whose interest list is restored */
};

struct restore_sock_ref {
	uint64_t object; /* the socket's inode */
	size_t seq;	 /* its place in the image */
	const struct ct_image_fd *rec;
};

/* What the restore made and keeps until it ends, found by kind and key. */
struct robj {
	uint64_t key;
	int kind; /* OBJ_* */
	int fd;	  /* ours */
	int fd2;  /* pipes: the write end; unix pairs: unused */
};

struct restorer {
	const struct ct_restore_opts *o;
	char *err; /* CT_ENGINE_ERROR_MAX */
	struct ct_image *img;
	struct rproc *procs; /* parallel to img->procs */
	size_t n_procs;
	int chan;    /* our end of the fd channel */
	int chan_fd; /* its number in the tasks */
	int netns_fd;
	unsigned long event_msg; /* the new task of the last injected clone */
	struct robj *objs;
	size_t n_objs;
	uint32_t *obj_index; /* restore-fds.c */
	size_t obj_index_size;
	uint64_t *file_ids; /* every fd's, sorted (restore-fds.c) */
	size_t n_file_ids;
	struct restore_sock_ref *socks; /* every socket record, by inode (restore-fds.c) */
	size_t n_socks;
	struct ct_restore_stats *stats;
	uint64_t downtime_ns; /* since the container was frozen, by CLOCK_REALTIME; 0: unknown */
};

int restore_fail(struct restorer *R, int r, const char *format, ...) _printf_(3, 4);
/* Injected syscall at the process's site in task htid; a failure of the call itself (a
 * negative result) is reported with what. */
int restore_call(struct restorer *R, struct rproc *p, pid_t htid, const char *what, long nr,
		 long a0, long a1, long a2, long a3, long a4, long a5, long *ret);
int restore_poke(struct restorer *R, struct rproc *p, unsigned long addr, const void *data,
		 size_t len);

/* Calls for task htid of p that need no result and nothing between them, run together: one
 * stop and resume of the task for up to RESTORE_BATCH_MAX calls, where restore_call() costs
 * one each (~30 us here). They run in order at restore_batch_flush(), or earlier when the
 * batch is full; the first that fails ends the batch and the restore, reported as
 * restore_call() would. Any other call into the task must wait for the flush. */
struct restore_batch {
	struct rproc *p;
	pid_t htid;
	size_t n, data_len;
	const char *what[RESTORE_BATCH_MAX];
	uint64_t table[RESTORE_BATCH_MAX][8];
	uint8_t data[RESTORE_BATCH_DATA];
};
void restore_batch_init(struct restore_batch *b, struct rproc *p, pid_t htid);
/* Copies len bytes for the batch's calls and gives their address in the task: for the one
 * call added next (the data stays until that call has run). */
int restore_batch_data(struct restorer *R, struct restore_batch *b, const void *data, size_t len,
		       unsigned long *ret_addr);
int restore_batch_add(struct restorer *R, struct restore_batch *b, const char *what, long nr,
		      long a0, long a1, long a2, long a3, long a4, long a5);
int restore_batch_flush(struct restorer *R, struct restore_batch *b);
/* Runs b's calls (at most RESTORE_BATCH_MAX: none may have flushed it) and gives their results:
 * *ret_done succeeded, results[0 .. *ret_done); when one failed, results[*ret_done] is its
 * -errno. Only a failure to run them at all is reported (and returned). */
int restore_batch_run(struct restorer *R, struct restore_batch *b, long *results, size_t *ret_done);
/* Adds to b what puts the task's fd at number target (dup3 and close, or only the
 * close-on-exec flag when it is there already), then flushes b. */
int restore_fd_move(struct restorer *R, struct restore_batch *b, int fd, int target, bool cloexec);
/* The same without the flush. */
int restore_fd_move_add(struct restorer *R, struct restore_batch *b, int fd, int target,
			bool cloexec);
/* What is left of a timer on clock that had left_ns to go when the container was frozen (0:
 * disarmed). Timers on the wall clock and on boot time count the time the container was down,
 * as across a suspend, and one whose time passed meanwhile fires at once (1 ns); its
 * CLOCK_MONOTONIC stopped meanwhile (see enter_time_namespace()), and so did its CPU time. */
uint64_t restore_timer_left(const struct restorer *R, int clock, uint64_t left_ns);
/* Gives the task the file ours at number target (close-on-exec per cloexec). */
int restore_install_fd(struct restorer *R, struct rproc *p, int ours, int target, bool cloexec);
/* The same for up to RESTORE_INSTALL_MAX files at once, with two stops of the task and one
 * more per RESTORE_BATCH_MAX / 2 of them (fds is sorted by target meanwhile). Every target
 * must be a number the task has free. */
#define RESTORE_INSTALL_MAX 253 /* SCM_MAX_FD: the most one message carries */
struct restore_fd_install {
	int ours, target;
	bool cloexec;
};
int restore_install_fds(struct restorer *R, struct rproc *p, struct restore_fd_install *fds,
			size_t n);

/* restore-mm.c */
int restore_mm(struct restorer *R, struct rproc *p);
int restore_shm_objects(struct restorer *R);
int restore_shm_fd(struct restorer *R, uint64_t shmid);

/* restore-fds.c */
int restore_fds(struct restorer *R, struct rproc *p);
int restore_epolls(struct restorer *R, struct rproc *p);
/* restore-ipc.c: the System V semaphore sets and message queues of the image, in the IPC
 * namespace of the new PID 1. */
int restore_ipc(struct restorer *R, pid_t pid1);
/* After every process's memory: the segments marked for removal (IPC_RMID) are removed. */
int restore_ipc_finish(struct restorer *R, pid_t pid1);
/* The file locks its fds held, taken again once every fd of every process is back (a POSIX lock
 * goes with the close of any fd of its file). */
int restore_locks(struct restorer *R, struct rproc *p);
int restore_check_files(struct restorer *R);
void restore_objs_free(struct restorer *R);
struct robj *restore_obj_find(struct restorer *R, int kind, uint64_t key);
/* Takes ownership of fd (and fd2), closed on failure too. */
int restore_obj_add(struct restorer *R, int kind, uint64_t key, int fd, int fd2);
