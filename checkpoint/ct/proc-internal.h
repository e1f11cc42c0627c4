/* Parsers for /proc/PID/{maps,smaps,status,stat,fdinfo/N} (text in, structs out) and readers that
 * apply them to a live pid. The parsers never trust lengths and cap everything they collect. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CT_PROC_MAX_LINE      8192U	 /* longer lines are refused, not truncated */
#define CT_PROC_MAX_VMAS      (1U << 20) /* far above vm.max_map_count (65530) */
#define CT_PROC_MAX_NS_LEVEL  33U	 /* MAX_PID_NS_LEVEL + 1 */
#define CT_PROC_MAX_FDINFO_KV 256U
#define CT_PROC_MAX_TFDS      (1U << 20)
#define CT_PROC_MAX_TASKS     (1U << 16)
#define CT_PROC_COMM_MAX      64U /* TASK_COMM_LEN is 16; kthreads may show longer names */

/* The VmFlags of /proc/PID/smaps that a checkpoint keeps or refuses (mnemonic in quotes); the
 * rest (rd wr ex sh mr mw me ac de io pf ...) follow from the mapping itself or do not matter. */
enum {
	CT_VMF_GROWSDOWN = 1U << 0,	/* "gd" MAP_GROWSDOWN */
	CT_VMF_NORESERVE = 1U << 1,	/* "nr" MAP_NORESERVE */
	CT_VMF_DONTCOPY = 1U << 2,	/* "dc" MADV_DONTFORK */
	CT_VMF_WIPEONFORK = 1U << 3,	/* "wf" MADV_WIPEONFORK */
	CT_VMF_DONTDUMP = 1U << 4,	/* "dd" MADV_DONTDUMP */
	CT_VMF_HUGEPAGE = 1U << 5,	/* "hg" MADV_HUGEPAGE */
	CT_VMF_NOHUGEPAGE = 1U << 6,	/* "nh" MADV_NOHUGEPAGE */
	CT_VMF_MERGEABLE = 1U << 7,	/* "mg" MADV_MERGEABLE (KSM) */
	CT_VMF_LOCKED = 1U << 8,	/* "lo" mlock() */
	CT_VMF_LOCKONFAULT = 1U << 9,	/* "lf" mlock2(MLOCK_ONFAULT) */
	CT_VMF_SEALED = 1U << 10,	/* "sl" mseal() */
	CT_VMF_DROPPABLE = 1U << 11,	/* "dp" MAP_DROPPABLE */
	CT_VMF_UFFD = 1U << 12,		/* "um", "uw", "ui": registered with a userfaultfd */
	CT_VMF_SHADOW_STACK = 1U << 13, /* "ss" */
	CT_VMF_MAYWRITE = 1U << 14,	/* "mw": mprotect() may add PROT_WRITE */
};

struct ct_vma {
	uint64_t start, end; /* [start, end) */
	uint64_t offset;
	uint32_t dev_major, dev_minor;
	uint64_t inode;
	bool read, write, exec, shared; /* "rwxs" / "rwxp" */
	bool deleted;			/* the path ended in " (deleted)", stripped from path */
	char *path;	   /* NULL for an anonymous mapping; else "/file", "[heap]", ... */
	bool have_vmflags; /* read from smaps: vmflags below is known */
	uint32_t vmflags;  /* CT_VMF_* */
};

struct ct_vma_list {
	struct ct_vma *vmas;
	size_t n;
};

void ct_vma_list_done(struct ct_vma_list *l);

/* One line of /proc/PID/maps, without its newline (line_len bytes, not NUL-terminated). */
int ct_proc_parse_maps_line(const char *line, size_t line_len, struct ct_vma *ret);
/* "VmFlags: rd wr ..." of smaps (the text after the key): CT_VMF_* of the mnemonics known. */
int ct_proc_parse_vmflags(const char *text, size_t len, uint32_t *ret);
/* Whole text (len bytes, need not be NUL-terminated); VMAs must be sorted and disjoint. The
 * text of /proc/PID/smaps works too: its "Key: value" lines are skipped, but VmFlags is read
 * into the VMA above it. */
int ct_proc_parse_maps(const char *text, size_t len, struct ct_vma_list *ret);

enum {
	CT_STATUS_PID = 1U << 0,
	CT_STATUS_PPID = 1U << 1,
	CT_STATUS_TGID = 1U << 2,
	CT_STATUS_NSPID = 1U << 3,
	CT_STATUS_UID = 1U << 4,
	CT_STATUS_GID = 1U << 5,
	CT_STATUS_SIGBLK = 1U << 6,
	CT_STATUS_SIGPND = 1U << 7,
	CT_STATUS_SHDPND = 1U << 8,
	CT_STATUS_SIGIGN = 1U << 9,
	CT_STATUS_SIGCGT = 1U << 10,
	CT_STATUS_THREADS = 1U << 11,
	CT_STATUS_ALL = (1U << 12) - 1,
};

struct ct_proc_status {
	pid_t pid, ppid, tgid;
	pid_t nspid[CT_PROC_MAX_NS_LEVEL]; /* outermost first, as the kernel prints them */
	unsigned n_nspid;
	uid_t uid[4]; /* real, effective, saved, fs */
	gid_t gid[4];
	uint64_t sigblk, sigpnd, shdpnd, sigign, sigcgt;
	unsigned threads;
	unsigned seen; /* CT_STATUS_* of the fields found */
};

/* Fails with -EBADMSG when a field is malformed or one of CT_STATUS_ALL is missing. */
int ct_proc_parse_status(const char *text, size_t len, struct ct_proc_status *ret);

struct ct_proc_stat {
	pid_t pid;
	char comm[CT_PROC_COMM_MAX]; /* may contain spaces and parentheses */
	char state;
	pid_t ppid, pgrp, session;
	uint64_t start_time; /* field 22, clock ticks since boot */
};

int ct_proc_parse_stat(const char *text, size_t len, struct ct_proc_stat *ret);

struct ct_fdinfo_kv {
	char *key, *value; /* "eventfd-count" -> "5"; value stripped */
};

struct ct_fdinfo_tfd {
	int fd;
	uint32_t events;
	uint64_t data, pos, ino;
	uint64_t sdev;
};

struct ct_fdinfo {
	uint64_t pos;
	unsigned flags; /* octal in the file */
	int mnt_id;
	uint64_t ino;
	struct ct_fdinfo_kv *kv; /* every other "key: value" line, in order */
	size_t n_kv;
	struct ct_fdinfo_tfd *tfds; /* epoll's interest list */
	size_t n_tfds;
};

void ct_fdinfo_done(struct ct_fdinfo *f);
int ct_proc_parse_fdinfo(const char *text, size_t len, struct ct_fdinfo *ret);
/* The value of key in f's extra lines, or NULL. */
const char *ct_fdinfo_get(const struct ct_fdinfo *f, const char *key);

/* A file lock held through an fd: a "lock:" line of /proc/PID/fdinfo/FD (fs/locks.c). */
enum ct_proc_lock_kind {
	CT_PROC_LOCK_FLOCK = 1, /* flock(): the open file description's */
	CT_PROC_LOCK_POSIX,	/* fcntl(F_SETLK): the process's */
	CT_PROC_LOCK_OFD,	/* fcntl(F_OFD_SETLK): the open file description's */
	CT_PROC_LOCK_OTHER,	/* a lease, a delegation, a mandatory lock: see name */
};

#define CT_PROC_LOCKS_MAX 4096 /* per fd */

struct ct_proc_lock {
	enum ct_proc_lock_kind kind;
	bool write;	/* else a read (shared) lock */
	char name[56];	/* the kernel's words for it, e.g. "LEASE ACTIVE READ" */
	pid_t pid;	/* the holder (-1 for OFD locks), in the reader's pid namespace */
	uint64_t start; /* byte range, inclusive */
	uint64_t end;	/* UINT64_MAX: to the end of the file, however long */
};

/* The "lock:" lines of fdinfo text, in order. */
int ct_proc_parse_locks(const char *text, size_t len, struct ct_proc_lock **ret, size_t *ret_n);

/* A /proc/PID/task entry name: decimal pid > 0, nothing else. */
int ct_proc_parse_pid_name(const char *name, pid_t *ret);

/* Readers for a live pid (tid for status/stat of a thread: pass the tid). -ESRCH when the
 * process is gone. */
/* The VMAs with their VmFlags: reads /proc/PID/smaps, which walks the page tables of every
 * VMA for its counters (~7 ms per GiB of 4 KiB pages). */
int ct_proc_read_maps(pid_t pid, struct ct_vma_list *ret);
int ct_proc_read_status(pid_t pid, struct ct_proc_status *ret);
int ct_proc_read_stat(pid_t pid, struct ct_proc_stat *ret);
int ct_proc_read_fdinfo(pid_t pid, int fd, struct ct_fdinfo *ret);
/* Sorted thread ids of pid (at most CT_PROC_MAX_TASKS). */
int ct_proc_read_tasks(pid_t pid, pid_t **ret_tids, size_t *ret_n);
