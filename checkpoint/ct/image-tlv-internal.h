/* The TLV tags of the image files, the byte helpers the encoder and the decoders share, and the
 * decoders' field readers. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/macro.h"

#define CT_IMAGE_TLV_HEADER_SIZE 8 /* u16 tag, u16 flags (0), u32 length */

enum { /* inventory.img */
       INV_CONTAINER = 1,
       INV_KERNEL,
       INV_ARCH,
       INV_PAGE_SIZE,
       INV_ROOT_PID,
       INV_CREATED,
       INV_VDSO, /* 6 x u64 */
       INV_FILE, /* nested FILE_* */
       INV_HOSTNAME,
       INV_NETNS, /* u32: 1 when the container had its own network namespace */
       INV_DOMAINNAME,
       INV_CLOCKS,     /* 3 x u64: monotonic, boottime, realtime ns (struct ct_image_clocks) */
       INV_NET_SYSCTL, /* "NAME=VALUE", repeated, names ascending */
       FILE_NAME = 1,
       FILE_SIZE,
       FILE_XXH3,
};

enum { /* task-PID.img */
       TASK_PID = 1,
       TASK_PPID,
       TASK_PGID,
       TASK_SID,
       TASK_COMM,
       TASK_CREDS,	/* nested CRED_* */
       TASK_RLIMITS,	/* CT_IMAGE_RLIMITS x (u64 cur, u64 max) */
       TASK_SIGACTIONS, /* CT_IMAGE_SIGNALS x (u64 handler, flags, restorer, mask) */
       TASK_SHARED_PENDING,
       TASK_SHARED_SIGINFO, /* n x 128 */
       TASK_CWD,
       TASK_ROOT,
       TASK_THREAD,	    /* nested THREAD_* */
       TASK_ITIMERS,	    /* 3 x (u64 interval_us, u64 value_us): real, virtual, prof */
       TASK_PERSONALITY,    /* u32 */
       TASK_UMASK,	    /* u32 */
       TASK_ZOMBIES,	    /* n x u64: pid << 32 | wait status, children not yet reaped */
       TASK_TIMERS,	    /* n x 8 u64: POSIX timers, see struct ct_image_timer */
       TASK_NO_NEW_PRIVS,   /* u32, absent when 0 */
       TASK_SECCOMP,	    /* u32 mode, absent when 0 */
       TASK_SECCOMP_FILTER, /* u32 flags, u32 0, n x 8 bytes of BPF; repeated, oldest first */
       TASK_ATTRS,    /* 5 x u32: oom_score_adj (signed), dumpable, subreaper, thp_disable, mdwe */
       CRED_UIDS = 1, /* 4 x u32 */
       CRED_GIDS,
       CRED_GROUPS, /* n x u32 */
       CRED_CAPS,   /* 5 x u64 */
       CRED_SECUREBITS,
       THREAD_TID = 1,
       THREAD_COMM,
       THREAD_SIGMASK,
       THREAD_PENDING,
       THREAD_SIGINFO, /* n x 128 */
       THREAD_ROBUST,  /* u64 head, u64 len */
       THREAD_TID_ADDRESS,
       THREAD_RSEQ,	  /* u64 addr, u32 len, u32 sig */
       THREAD_REGSET,	  /* nested REGSET_* */
       THREAD_ALTSTACK,	  /* u64 sp, u64 size, u64 flags */
       THREAD_SCHED,	  /* 6 x u32: policy, flags, priority, nice (signed), ioprio, pdeathsig */
       THREAD_TIMERSLACK, /* u64 ns */
       THREAD_AFFINITY,	  /* CPU mask, a multiple of 8 bytes */
       REGSET_TYPE = 1,
       REGSET_DATA,
};

enum { /* mm-PID.img */
       MM_PID = 1,
       MM_FIELDS, /* CT_IMAGE_MM_FIELDS x u64 */
       MM_AUXV,	  /* n x u64 */
       MM_EXE,
       MM_VMA,	  /* nested VMA_* */
       MM_GUARDS, /* n x (u64 start, u64 end): guard regions, sorted */
       VMA_START = 1,
       VMA_END,
       VMA_PGOFF,
       VMA_PROT,
       VMA_FLAGS,
       VMA_KIND,
       VMA_PAGES,
       VMA_SHMID,
       VMA_PATH,
       VMA_ADVICE, /* u32 CT_IMAGE_ADV_*; absent when 0 */
};

enum { /* fds-PID.img */
       FDS_PID = 1,
       FDS_FD, /* nested FD_* */
       FD_NUM = 1,
       FD_TYPE,
       FD_FLAGS,
       FD_FDFLAGS,
       FD_POS,
       FD_PATH,
       FD_DATA,
       FD_FILE_ID, /* u64: fds with the same id share one open file description */
       FD_OBJECT,  /* u64: the kernel object (pipe, socket, shm inode) */
       FD_LOCKS,   /* u64 triples: kind << 32 | write, start, end (struct ct_image_lock) */
};

enum {		    /* ipc.img */
       IPC_SEM = 1, /* nested IPCO_*: a semaphore set */
       IPC_MSGQ,    /* nested IPCO_*: a message queue */
       IPC_SHM,	    /* nested IPCO_*: a shared memory segment */
       IPC_SYSCTL,  /* repeated: "NAME=VALUE", NAME under /proc/sys */
};

enum { /* inside IPC_SEM and IPC_MSGQ */
       IPCO_KEY = 1,
       IPCO_ID,
       IPCO_UID,
       IPCO_GID,
       IPCO_MODE,
       IPCO_SEM_VALUES, /* u16 each */
       IPCO_QBYTES,	/* u64 */
       IPCO_MSG,	/* repeated, oldest first: u64 type, then the text */
       IPCO_SHM_SIZE,	/* u64 */
       IPCO_SHM_FLAGS,	/* u32: CT_IMAGE_SHM_* */
};

enum {		       /* pages index */
       IDX_CHUNKS = 1, /* n x (u64 offset, u32 size, u16 pages, u16 flags, u64 xxh3) */
       IDX_RUNS,       /* n x (u64 addr, u32 pages, u32 flags, u32 chunk, u32 chunk_page) */
};

#define CT_IMAGE_CHUNK_ENTRY_SIZE 24
#define CT_IMAGE_RUN_ENTRY_SIZE	  24

static inline uint16_t get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}
static inline uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t get_le64(const uint8_t *p)
{
	return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}
static inline void put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}
static inline void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline void put_le64(uint8_t *p, uint64_t v)
{
	put_le32(p, (uint32_t)v);
	put_le32(p + 4, (uint32_t)(v >> 32));
}

/* ---- decoding helpers (image-decode.c), shared by the decoders of each file kind ------------ */

struct ct_dec {
	char *err;
	size_t errlen;
};

struct ct_tlv {
	uint16_t tag;
	uint32_t len;
	const uint8_t *val;
};

#define TAG_BIT(t) (UINT64_C(1) << (t))

/* Each returns 0 or -EBADMSG with the message in d->err (-ENOMEM when out of memory). */
int ct_dec_fail(struct ct_dec *d, const char *format, ...) _printf_(2, 3);
int ct_dec_next(struct ct_dec *d, const uint8_t **p, size_t *left, const char *what,
		struct ct_tlv *ret);
int ct_dec_once(struct ct_dec *d, uint64_t *seen, const struct ct_tlv *f, const char *what);
int ct_dec_require(struct ct_dec *d, uint64_t seen, uint64_t need, const char *what);
int ct_dec_u32(struct ct_dec *d, const struct ct_tlv *f, const char *what, uint32_t *ret);
int ct_dec_u64(struct ct_dec *d, const struct ct_tlv *f, const char *what, uint64_t *ret);
int ct_dec_u64s(struct ct_dec *d, const struct ct_tlv *f, const char *what, uint64_t *ret,
		size_t n);
int ct_dec_text(struct ct_dec *d, const struct ct_tlv *f, size_t max, const char *what);
int ct_dec_str(struct ct_dec *d, const struct ct_tlv *f, size_t max, const char *what, char **ret);
int ct_dec_path(struct ct_dec *d, const struct ct_tlv *f, const char *what, char **ret);
int ct_dec_comm(struct ct_dec *d, const struct ct_tlv *f, const char *what, char ret[16]);
int ct_dec_blob(struct ct_dec *d, const struct ct_tlv *f, size_t max, size_t unit, const char *what,
		uint8_t **ret, size_t *ret_n);
int ct_dec_grow(struct ct_dec *d, void **array, size_t *alloc, size_t n, size_t elem, size_t max,
		const char *what);
