/* The container checkpoint image: its on-disk format, the data model, a writer and a validating
 * reader. Everything that knows the format lives in checkpoint/ct/image*.c.
 *
 * An image is a directory (mode 0700, root-owned) of files (mode 0600):
 *   inventory.img     written last: version, container, kernel + vDSO layout, creation time and
 *                     every other file with its size and checksum. No inventory = incomplete.
 *   task-PID.img      one per process: ids, creds, rlimits, signals, cwd/root, its threads
 *                     (tid, comm, sigmask, pending, robust list, tid address, rseq, regsets).
 *   mm-PID.img        the process's memory layout: mm fields, auxv, exe, VMAs.
 *   fds-PID.img       the process's file descriptors.
 *   pages-PID.img     private/anonymous page contents of PID.
 *   pages-shm-ID.img  contents of shared anonymous memory ID (shared between processes); its
 *                     addresses are byte offsets in the shared object, not virtual addresses.
 *
 * Every file: a 40-byte header, then the payload. All integers little-endian.
 *   0 u32 magic (per file kind)   4 u32 format version   8 u32 flags (0)   12 u32 reserved (0)
 *  16 u64 payload length         24 u64 XXH3-64 of the payload
 *  32 u64 XXH3-64 of bytes 0..31 (so a flipped header byte is named as such)
 *
 * Metadata payloads are TLV: u16 tag, u16 flags (0), u32 length, value. A value is a u32/u64
 * of exactly that size, a string (no NUL, bounded), a blob (bounded), a fixed-size array, or a
 * nested TLV list. TLV over fixed structs: fields can be added without a new layout, every
 * length is explicit, and one small bounded parser (fuzzed) reads all files. Unknown tags are
 * rejected: a reader must not silently drop state it does not understand.
 *
 * Pages payload: chunks of at most CT_IMAGE_PAGES_CHUNK_PAGES pages, each a zstd frame or, when
 * compression is off or does not pay, the raw pages; then a TLV index (chunk table: offset, size,
 * pages, flags (raw), XXH3 of the stored bytes; run table: address,
 * pages, zero flag, chunk, first page in chunk), then a 24-byte footer (index offset, index
 * length, index XXH3). Zero pages are runs without data. The header's payload checksum of a
 * pages file covers the index and the footer; the chunks are covered through their checksums
 * in the index. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>

#define CT_IMAGE_VERSION     1
#define CT_IMAGE_HEADER_SIZE 40
#define CT_IMAGE_PAGE_SIZE   4096U

/* Limits: the reader never allocates or loops past these, whatever a file says. */
#define CT_IMAGE_META_MAX	     ((uint64_t)64 << 20) /* a metadata file's payload */
#define CT_IMAGE_FILES_MAX	     (4 * 32768 + 4096)
#define CT_IMAGE_STRING_MAX	     4096 /* paths: PATH_MAX */
#define CT_IMAGE_NAME_MAX	     255
#define CT_IMAGE_THREADS_MAX	     32768
#define CT_IMAGE_ZOMBIES_MAX	     32768
#define CT_IMAGE_TIMERS_MAX	     65536
#define CT_IMAGE_SECCOMP_FILTERS_MAX 512  /* each costs the kernel's path limit 4 + length */
#define CT_IMAGE_SECCOMP_INSNS_MAX   4096 /* BPF_MAXINSNS */
#define CT_IMAGE_GUARDS_MAX	     (1U << 20)
#define CT_IMAGE_AFFINITY_MAX	     1024 /* bytes of CPU mask: 8192 CPUs */
#define CT_IMAGE_GROUPS_MAX	     65536
#define CT_IMAGE_SIGINFO_MAX	     1024
#define CT_IMAGE_SIGINFO_SIZE	     128
#define CT_IMAGE_REGSETS_MAX	     16
#define CT_IMAGE_REGSET_MAX	     (64 * 1024)
#define CT_IMAGE_RLIMITS	     16
#define CT_IMAGE_SIGNALS	     64
#define CT_IMAGE_AUXV_MAX	     1024 /* u64 words */
#define CT_IMAGE_VMAS_MAX	     (1 << 20)
#define CT_IMAGE_FDS_MAX	     (1 << 20)
#define CT_IMAGE_FD_DATA_MAX	     (4 << 20)
#define CT_IMAGE_PAGES_CHUNK_PAGES   256 /* 1 MiB of raw pages per zstd frame */
#define CT_IMAGE_PAGES_CHUNKS_MAX    (1 << 22)
#define CT_IMAGE_PAGES_RUNS_MAX	     (1 << 24)
#define CT_IMAGE_ADDR_LIMIT	     ((uint64_t)1 << 57) /* 5-level paging user space */
#define CT_IMAGE_PAGES_FOOTER_SIZE   24

enum ct_image_file_kind {
	CT_IMAGE_FILE_INVENTORY,
	CT_IMAGE_FILE_TASK,
	CT_IMAGE_FILE_MM,
	CT_IMAGE_FILE_FDS,
	CT_IMAGE_FILE_PAGES,
	CT_IMAGE_FILE_IPC,
	_CT_IMAGE_FILE_KIND_MAX,
};

struct ct_image_header {
	uint32_t magic;
	uint32_t version;
	uint32_t flags;
	uint64_t payload_len;
	uint64_t payload_xxh3;
};

struct ct_image_vdso_layout {
	uint64_t vvar_start, vvar_end;
	uint64_t vvar_vclock_start, vvar_vclock_end;
	uint64_t vdso_start, vdso_end;
};

struct ct_image_file_entry {
	char *name;
	uint64_t size; /* whole file, header included */
	uint64_t xxh3; /* of the payload, as in the file's header */
};

/* The container's own clocks (its time namespace's view) while it was frozen, read after its
 * timers were, with the host's CLOCK_REALTIME then. A restore starts a time namespace whose
 * CLOCK_MONOTONIC goes on from where it stopped, as after a suspend, and whose CLOCK_BOOTTIME
 * counts the time between as well (by the realtime clocks of both hosts). realtime_ns == 0: not
 * recorded. */
struct ct_image_clocks {
	uint64_t monotonic_ns, boottime_ns, realtime_ns;
};

/* The largest clock reading an image may hold: the kernel refuses time namespace offsets that
 * take a clock past KTIME_SEC_MAX / 2 seconds (~146 years). */
#define CT_IMAGE_CLOCK_MAX_NS (UINT64_C(1) << 62)

/* A sysctl of a namespace: its file under /proc/sys and what it read, without the newline. */
struct ct_image_sysctl {
	char *name; /* "kernel/shmmax", "net/core/somaxconn": under /proc/sys */
	char *value;
};

/* A network namespace's sysctls: every file under /proc/sys/net that reads and writes. A name
 * is "net/" and components of [A-Za-z0-9_.-], none of them "." or ".."; a value one line of
 * printable characters and tabs. */
#define CT_IMAGE_NET_SYSCTLS_MAX     4096
#define CT_IMAGE_NET_SYSCTL_NAME_MAX 128
#define CT_IMAGE_NET_SYSCTL_MAX	     1024 /* bytes of a value */

bool ct_image_net_sysctl_name_ok(const char *name);
bool ct_image_sysctl_value_ok(const char *value, size_t max);

struct ct_image_inventory {
	uint32_t version;
	char *container;
	char *kernel_release;
	char *arch;
	uint32_t page_size;
	uint32_t root_pid;
	uint64_t created_usec; /* CLOCK_REALTIME */
	struct ct_image_vdso_layout vdso;
	char *hostname;	  /* NULL when not recorded */
	char *domainname; /* the UTS namespace's NIS domain name; NULL when not recorded */
	uint32_t netns;	  /* 1: the container had a network namespace of its own */
	struct ct_image_clocks clocks;
	struct ct_image_sysctl *net_sysctls; /* with netns: its sysctls, sorted by name */
	size_t n_net_sysctls;
	struct ct_image_file_entry *files;
	size_t n_files;
};

struct ct_image_creds {
	uint32_t uids[4]; /* real, effective, saved, fs */
	uint32_t gids[4];
	uint32_t *groups;
	size_t n_groups;
	uint64_t caps[5]; /* inheritable, permitted, effective, bounding, ambient */
	uint32_t securebits;
};

struct ct_image_rlimit {
	uint64_t cur, max;
};

struct ct_image_sigaction {
	uint64_t handler, flags, restorer, mask;
};

struct ct_image_regset {
	uint32_t type; /* NT_PRSTATUS, NT_X86_XSTATE, ... as passed to PTRACE_GETREGSET */
	uint32_t size;
	uint8_t *data;
};

struct ct_image_thread {
	uint32_t tid;
	char comm[16];
	uint64_t sigmask;
	uint64_t sigpending;
	uint8_t *siginfo; /* n_siginfo * CT_IMAGE_SIGINFO_SIZE: queued siginfo_t */
	size_t n_siginfo;
	uint64_t robust_list, robust_list_len;
	uint64_t tid_address;
	uint64_t rseq, rseq_sig;
	uint32_t rseq_len;
	struct ct_image_regset *regsets;
	size_t n_regsets;
	uint64_t altstack_sp, altstack_size, altstack_flags; /* sigaltstack */
	/* Scheduling and the rest of a thread's own attributes; older images have none. */
	bool have_sched;
	uint32_t sched_policy;	 /* SCHED_OTHER, _FIFO, _RR, _BATCH, _IDLE */
	uint32_t sched_flags;	 /* SCHED_FLAG_RESET_ON_FORK */
	uint32_t sched_priority; /* FIFO and RR */
	int32_t nice;
	uint32_t ioprio;
	uint32_t pdeathsig;
	uint64_t timerslack_ns;
	uint8_t *affinity; /* CPU mask, affinity_len bytes (a multiple of 8); NULL: not recorded */
	size_t affinity_len;
};

/* A POSIX timer (timer_create), as 8 u64 in the record. */
struct ct_image_timer {
	uint64_t id, clock, signo, sigval;
	uint64_t notify; /* SIGEV_* (with SIGEV_THREAD_ID) */
	uint64_t tid;	 /* SIGEV_THREAD_ID: the thread, as the container sees it */
	uint64_t interval_ns, value_ns;
};

/* A process (thread group); threads[0] is the leader, tid == pid. */
/* One seccomp filter as the kernel holds it (classic BPF, struct sock_filter, 8 bytes each). */
struct ct_image_seccomp_filter {
	uint32_t flags; /* SECCOMP_FILTER_FLAG_LOG or 0 */
	uint32_t n_insns;
	uint8_t *insns; /* n_insns * 8 */
};

struct ct_image_task {
	uint32_t pid, ppid, pgid, sid;
	char comm[16];
	struct ct_image_creds creds;
	struct ct_image_rlimit rlimits[CT_IMAGE_RLIMITS];
	struct ct_image_sigaction sigactions[CT_IMAGE_SIGNALS]; /* index signo - 1 */
	uint64_t shared_pending;
	uint8_t *shared_siginfo;
	size_t n_shared_siginfo;
	char *cwd, *root;
	uint64_t itimers[6]; /* real, virtual, prof: interval then value, in microseconds */
	uint32_t personality;
	uint32_t umask;
	uint64_t *zombies; /* pid << 32 | wait status of each child that exited, not reaped */
	size_t n_zombies;
	struct ct_image_timer *timers;
	size_t n_timers;
	struct ct_image_thread *threads;
	size_t n_threads;
	bool have_attrs; /* the five below were recorded (older images have none) */
	int32_t oom_score_adj;
	uint32_t dumpable;     /* PR_GET_DUMPABLE */
	uint32_t subreaper;    /* PR_GET_CHILD_SUBREAPER */
	uint32_t thp_disable;  /* PR_GET_THP_DISABLE: bit 0 disabled, bit 1 except where advised */
	uint32_t mdwe;	       /* PR_GET_MDWE: memory-deny-write-execute flags */
	uint32_t no_new_privs; /* 0 or 1, every thread alike */
	uint32_t seccomp_mode; /* SECCOMP_MODE_DISABLED, _STRICT or _FILTER, every thread alike */
	struct ct_image_seccomp_filter *seccomp_filters; /* oldest first; FILTER mode only */
	size_t n_seccomp_filters;
};

enum ct_image_vma_kind {
	CT_IMAGE_VMA_ANON_PRIVATE,
	CT_IMAGE_VMA_ANON_SHARED,
	CT_IMAGE_VMA_FILE_PRIVATE,
	CT_IMAGE_VMA_FILE_SHARED,
	CT_IMAGE_VMA_HEAP,
	CT_IMAGE_VMA_STACK,
	CT_IMAGE_VMA_VDSO,
	CT_IMAGE_VMA_VVAR,
	CT_IMAGE_VMA_VVAR_VCLOCK,
	CT_IMAGE_VMA_SYSV_SHM, /* an attached System V segment (shmid); contents in ipc.img's */
	_CT_IMAGE_VMA_KIND_MAX,
};

/* Where a VMA's contents come from at restore. */
enum ct_image_vma_pages {
	CT_IMAGE_VMA_PAGES_NONE,    /* nothing stored: file contents, or kernel-provided */
	CT_IMAGE_VMA_PAGES_PRIVATE, /* in pages-PID.img */
	CT_IMAGE_VMA_PAGES_SHM,	    /* in pages-shm-SHMID.img */
	_CT_IMAGE_VMA_PAGES_MAX,
};

/* What madvise(), mlock() and mseal() set on a VMA, and MAP_DROPPABLE: put back after it is
 * mapped (the locks and the seal once its memory is filled). */
enum {
	CT_IMAGE_ADV_DONTFORK = 1U << 0,    /* MADV_DONTFORK */
	CT_IMAGE_ADV_WIPEONFORK = 1U << 1,  /* MADV_WIPEONFORK */
	CT_IMAGE_ADV_DONTDUMP = 1U << 2,    /* MADV_DONTDUMP */
	CT_IMAGE_ADV_HUGEPAGE = 1U << 3,    /* MADV_HUGEPAGE */
	CT_IMAGE_ADV_NOHUGEPAGE = 1U << 4,  /* MADV_NOHUGEPAGE */
	CT_IMAGE_ADV_MERGEABLE = 1U << 5,   /* MADV_MERGEABLE */
	CT_IMAGE_ADV_LOCKED = 1U << 6,	    /* mlock() */
	CT_IMAGE_ADV_LOCKONFAULT = 1U << 7, /* mlock2(MLOCK_ONFAULT); with LOCKED */
	CT_IMAGE_ADV_SEALED = 1U << 8,	    /* mseal() */
	CT_IMAGE_ADV_DROPPABLE = 1U << 9,   /* mapped MAP_DROPPABLE (anonymous only) */
	_CT_IMAGE_ADV_ALL = (1U << 10) - 1,
};

/* Names of the CT_IMAGE_ADV_* bits in adv, comma-separated, into buf ("" for none). */
const char *ct_image_vma_advice_to_string(uint32_t adv, char *buf, size_t size);

/* The MAP_* flags an image may carry. */
#define CT_IMAGE_VMA_MAP_FLAGS \
	((uint32_t)(MAP_SHARED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN | MAP_NORESERVE))

struct ct_image_vma {
	uint64_t start, end, pgoff;
	uint32_t prot;	 /* PROT_* */
	uint32_t flags;	 /* MAP_*, within CT_IMAGE_VMA_MAP_FLAGS */
	uint32_t kind;	 /* enum ct_image_vma_kind */
	uint32_t pages;	 /* enum ct_image_vma_pages */
	uint64_t shmid;	 /* CT_IMAGE_VMA_ANON_SHARED / CT_IMAGE_VMA_PAGES_SHM */
	char *path;	 /* file mappings: absolute, as seen inside the container */
	uint32_t advice; /* CT_IMAGE_ADV_* */
};

#define CT_IMAGE_MM_FIELDS                                                      \
	11 /* start_code end_code start_data end_data start_brk brk start_stack \
	    * arg_start arg_end env_start env_end (prctl PR_SET_MM_MAP order) */

struct ct_image_mm {
	uint32_t pid;
	uint64_t fields[CT_IMAGE_MM_FIELDS];
	uint64_t *auxv;
	size_t n_auxv;
	char *exe;
	struct ct_image_vma *vmas; /* sorted, not overlapping */
	size_t n_vmas;
	uint64_t *guards; /* n_guards pairs [start, end): MADV_GUARD_INSTALL ranges, sorted */
	size_t n_guards;
};

enum ct_image_fd_type {
	CT_IMAGE_FD_REG,
	CT_IMAGE_FD_DIR,
	CT_IMAGE_FD_PIPE,
	CT_IMAGE_FD_FIFO,
	CT_IMAGE_FD_UNIX,
	CT_IMAGE_FD_TCP,
	CT_IMAGE_FD_UDP,
	CT_IMAGE_FD_EVENTFD,
	CT_IMAGE_FD_EPOLL,
	CT_IMAGE_FD_TIMERFD,
	CT_IMAGE_FD_SIGNALFD,
	CT_IMAGE_FD_MEMFD,
	CT_IMAGE_FD_CHR,
	CT_IMAGE_FD_TTY,
	_CT_IMAGE_FD_TYPE_MAX,
};

enum ct_image_lock_kind {
	CT_IMAGE_LOCK_FLOCK = 1, /* flock(): the open file description's, the whole file */
	CT_IMAGE_LOCK_POSIX,	 /* fcntl(F_SETLK): the process's */
	CT_IMAGE_LOCK_OFD,	 /* fcntl(F_OFD_SETLK): the open file description's */
	_CT_IMAGE_LOCK_KIND_MAX,
};

#define CT_IMAGE_LOCKS_MAX 4096 /* per fd */

/* A file lock, recorded once: on the first fd of its open file description (flock, OFD), or
 * of its process and description (POSIX). */
struct ct_image_lock {
	uint32_t kind;	/* enum ct_image_lock_kind */
	uint32_t write; /* 1: exclusive, 0: shared */
	uint64_t start; /* byte range, inclusive */
	uint64_t end;	/* UINT64_MAX: to the end of the file, however long it grows */
};

struct ct_image_fd {
	uint32_t fd;
	uint32_t type;	   /* enum ct_image_fd_type */
	uint32_t flags;	   /* open flags (F_GETFL) */
	uint32_t fd_flags; /* FD_CLOEXEC */
	uint64_t pos;
	char *path;    /* NULL when the type has none */
	uint8_t *data; /* type-specific, opaque to the image */
	uint32_t data_size;
	uint64_t file_id; /* equal ids: one open file description (dup, fork) */
	uint64_t object;  /* the pipe, socket or shm object: its inode */
	struct ct_image_lock *locks;
	size_t n_locks;
};

struct ct_image_fds {
	uint32_t pid;
	struct ct_image_fd *fds; /* sorted by fd, unique */
	size_t n_fds;
};

/* ipc.img: the System V objects of the container's IPC namespace, at their ids. */
#define CT_IMAGE_IPC_OBJECTS_MAX 32768
#define CT_IMAGE_SEMS_MAX	 32000	     /* semaphores in a set (SEMMSL's ceiling) */
#define CT_IMAGE_MSG_MAX	 (1 << 20)   /* bytes of one message */
#define CT_IMAGE_IPC_DATA_MAX	 (64u << 20) /* bytes of every queued message together */

struct ct_image_ipc_perm {
	int32_t key; /* IPC_PRIVATE: 0 */
	uint32_t id;
	uint32_t uid, gid;
	uint32_t mode; /* the low 9 bits */
};

struct ct_image_sem_set {
	struct ct_image_ipc_perm perm;
	uint16_t *values; /* semval of each semaphore (at most SEMVMX, 32767) */
	size_t n_values;
};

struct ct_image_msg {
	int64_t type; /* > 0 */
	uint8_t *text;
	uint32_t len;
};

struct ct_image_msg_queue {
	struct ct_image_ipc_perm perm;
	uint64_t qbytes;	   /* msg_qbytes: the queue's limit */
	struct ct_image_msg *msgs; /* oldest first */
	size_t n_msgs;
};

#define CT_IMAGE_SHM_DEST   1U /* IPC_RMID'd: gone when the last attachment goes */
#define CT_IMAGE_SHM_LOCKED 2U /* SHM_LOCK */

/* A System V shared memory segment. Its contents are in pages-shm-OWNER.img, OWNER being
 * CT_IMAGE_SYSV_SHM_OWNER(id), at their offsets in the segment. */
#define CT_IMAGE_SYSV_SHM_OWNER(id) ((UINT64_C(1) << 62) | (uint64_t)(id))
#define CT_IMAGE_SHM_SIZE_MAX	    (UINT64_C(1) << 46)

struct ct_image_shm_seg {
	struct ct_image_ipc_perm perm;
	uint64_t size;	/* shm_segsz, bytes */
	uint32_t flags; /* CT_IMAGE_SHM_* */
};

/* The IPC namespace's own sysctls (kernel.shmmax, fs.mqueue.msg_max, ...): the names
 * ct_image_ipc_sysctl_known() accepts, values as the files read. */
#define CT_IMAGE_IPC_SYSCTLS_MAX 32
#define CT_IMAGE_IPC_SYSCTL_MAX	 128 /* bytes of a value */

/* Whether name is one of the IPC namespace's sysctls that a checkpoint keeps. */
bool ct_image_ipc_sysctl_known(const char *name);
extern const char *const ct_image_ipc_sysctls[];

struct ct_image_ipc {
	struct ct_image_sysctl *sysctls;
	size_t n_sysctls;
	struct ct_image_shm_seg *shms; /* sorted by id */
	size_t n_shms;
	struct ct_image_sem_set *sems; /* sorted by id */
	size_t n_sems;
	struct ct_image_msg_queue *msgqs; /* sorted by id */
	size_t n_msgqs;
};

#define CT_IMAGE_RUN_ZERO 1U

#define CT_IMAGE_CHUNK_RAW 1U /* stored uncompressed */

struct ct_image_chunk {
	uint64_t offset; /* in the payload */
	uint32_t size;	 /* as stored */
	uint16_t n_pages;
	uint16_t flags; /* CT_IMAGE_CHUNK_RAW */
	uint64_t xxh3;	/* of the stored bytes */
};

struct ct_image_run {
	uint64_t addr;
	uint32_t n_pages;
	uint32_t flags; /* CT_IMAGE_RUN_ZERO */
	uint32_t chunk; /* data runs: where the first page is */
	uint32_t chunk_page;
};

/* A decoded pages-*.img index. */
struct ct_image_pages {
	char *name;
	bool shm;
	uint64_t owner; /* pid or shmid */
	uint64_t payload_len;
	struct ct_image_chunk *chunks;
	size_t n_chunks;
	struct ct_image_run *runs; /* sorted by address, not overlapping */
	size_t n_runs;
	uint64_t n_data_pages, n_zero_pages, compressed_size;
	/* Set by ct_image_open_mapped for a file of uncompressed chunks: the whole file mapped
	 * read-only (chunk c's bytes at map + CT_IMAGE_HEADER_SIZE + c->offset), and map_fd
	 * holding a read lease on it since before it was verified. map_fd is valid only with
	 * map. */
	const uint8_t *map;
	size_t map_len;
	int map_fd;
	uint64_t leased_usec; /* CLOCK_MONOTONIC when the lease was taken */
};

/* Where chunk i's stored bytes lie in a mapped pages file. */
static inline const uint8_t *ct_image_pages_mapped_chunk(const struct ct_image_pages *p, size_t i)
{
	return p->map + CT_IMAGE_HEADER_SIZE + p->chunks[i].offset;
}

/* ---- image.c: names, helpers, encoding ---------------------------------------------------- */

const char *ct_image_file_kind_to_string(enum ct_image_file_kind k);
const char *ct_image_vma_kind_to_string(enum ct_image_vma_kind k);
int ct_image_vma_kind_from_string(const char *s);
const char *ct_image_vma_pages_to_string(enum ct_image_vma_pages p);
int ct_image_vma_pages_from_string(const char *s);
const char *ct_image_fd_type_to_string(enum ct_image_fd_type t);
int ct_image_fd_type_from_string(const char *s);
uint32_t ct_image_magic(enum ct_image_file_kind k);

/* Is path acceptable in a record? Absolute, at most CT_IMAGE_STRING_MAX, no '..' component, no
 * control characters. Returns 0 or -EINVAL with *ret_reason set to a static explanation. This is
 * a floor; what the container may open is the engine's policy. */
int ct_image_path_check(const char *path, const char **ret_reason);

void ct_image_header_encode(const struct ct_image_header *h, uint8_t out[CT_IMAGE_HEADER_SIZE]);

/* Each encodes into a malloc'ed payload (no header). */
int ct_image_encode_inventory(const struct ct_image_inventory *inv, uint8_t **ret,
			      size_t *ret_size);
int ct_image_encode_task(const struct ct_image_task *t, uint8_t **ret, size_t *ret_size);
int ct_image_encode_mm(const struct ct_image_mm *mm, uint8_t **ret, size_t *ret_size);
int ct_image_encode_fds(const struct ct_image_fds *fds, uint8_t **ret, size_t *ret_size);
int ct_image_encode_ipc(const struct ct_image_ipc *ipc, uint8_t **ret, size_t *ret_size);

void ct_image_inventory_done(struct ct_image_inventory *inv);
void ct_image_sysctls_free(struct ct_image_sysctl *s, size_t n);
void ct_image_task_done(struct ct_image_task *t);
void ct_image_mm_done(struct ct_image_mm *mm);
void ct_image_fds_done(struct ct_image_fds *fds);
void ct_image_ipc_done(struct ct_image_ipc *ipc);
void ct_image_pages_done(struct ct_image_pages *p);

/* ---- image-decode.c: pure decoders of untrusted bytes (fuzzed) ------------------------------ */

/* Each returns 0, or -EBADMSG (malformed) / -EPROTONOSUPPORT (version) / -ENOMEM with a message
 * in err (always NUL-terminated). Outputs are untouched on failure. */
int ct_image_header_decode(const uint8_t *buf, size_t size, enum ct_image_file_kind kind, char *err,
			   size_t errlen, struct ct_image_header *ret);
int ct_image_decode_inventory(const uint8_t *buf, size_t size, char *err, size_t errlen,
			      struct ct_image_inventory *ret);
int ct_image_decode_task(const uint8_t *buf, size_t size, char *err, size_t errlen,
			 struct ct_image_task *ret);
int ct_image_decode_mm(const uint8_t *buf, size_t size, char *err, size_t errlen,
		       struct ct_image_mm *ret);
int ct_image_decode_fds(const uint8_t *buf, size_t size, char *err, size_t errlen,
			struct ct_image_fds *ret);
/* Objects sorted by id, ids unique within their kind, no more than the limits above. */
int ct_image_decode_ipc(const uint8_t *buf, size_t size, char *err, size_t errlen,
			struct ct_image_ipc *ret);
/* The pages index: buf is the TLV between the chunk data and the footer; chunks_len the size
 * of the chunk data before it. */
int ct_image_decode_pages_index(const uint8_t *buf, size_t size, uint64_t chunks_len, char *err,
				size_t errlen, struct ct_image_pages *ret);

/* ---- image-write.c: the writer ------------------------------------------------------------ */

struct ct_image_writer;
struct ct_image_pages_writer;

/* Creates dir (0700; it must not exist or be empty) and starts an image. The inventory fields
 * except files are copied from info. */
int ct_image_writer_new(const char *dir, const struct ct_image_inventory *info,
			struct ct_image_writer **ret);
/* ct_image_writer_new() in two steps, so that the directory is checked and space reserved
 * before the inventory is known (a dump does both before it freezes the container). */
int ct_image_writer_open(const char *dir, struct ct_image_writer **ret);
int ct_image_writer_set_inventory(struct ct_image_writer *w, const struct ct_image_inventory *info);
/* Makes process owner's pages file now and allocates bytes of payload for it (fallocate; on
 * tmpfs also every page touched), so
 * that writing the pages later does not wait for the file system to find them. Only between
 * ct_image_writer_open() and ct_image_writer_set_inventory(). The pages writer of owner takes
 * the file and cuts what it did not use; ct_image_writer_finish() and ct_image_writer_free()
 * remove the files nobody took. Best effort: on failure (ENOSPC, EOPNOTSUPP) nothing is left
 * behind and the pages file is made when written, as without it. */
int ct_image_writer_reserve_pages(struct ct_image_writer *w, uint64_t owner, uint64_t bytes);
/* Removes what an unfinished image wrote (never the directory's other contents); NULL-safe. */
struct ct_image_writer *ct_image_writer_free(struct ct_image_writer *w);
int ct_image_writer_add_task(struct ct_image_writer *w, const struct ct_image_task *t);
int ct_image_writer_add_mm(struct ct_image_writer *w, const struct ct_image_mm *mm);
int ct_image_writer_add_fds(struct ct_image_writer *w, const struct ct_image_fds *fds);
/* ipc.img; only when the namespace holds anything. */
int ct_image_writer_add_ipc(struct ct_image_writer *w, const struct ct_image_ipc *ipc);
/* zstd level for page chunks: 0 stores pages uncompressed (fastest dump and restore), the default
 * is 1. A chunk that does not shrink is stored raw at any level. */
int ct_image_writer_set_compression(struct ct_image_writer *w, int level);
/* Streams one pages file; runs must come in ascending address order. */
int ct_image_writer_pages_begin(struct ct_image_writer *w, bool shm, uint64_t owner,
				struct ct_image_pages_writer **ret);
/* n_pages pages at addr (page-aligned); all-zero pages are recorded, not stored. */
int ct_image_pages_writer_add(struct ct_image_pages_writer *p, uint64_t addr, const void *data,
			      size_t n_pages);
/* Checksums of whole chunks a caller has at hand: xxh3[k] is XXH3-64 of the
 * CT_IMAGE_PAGES_CHUNK_PAGES pages at base + k chunks, when has[k]. A chunk stored raw from
 * there (uncompressed images, and chunks zstd did not shrink or was not tried on) takes it
 * instead of hashing the pages again (the dump's reader computes them while it would otherwise
 * wait for the writer). */
struct ct_image_chunk_hashes {
	const uint8_t *base;
	const uint64_t *xxh3;
	const bool *has;
	size_t n;
};
/* ct_image_pages_writer_add() with hashes (may be NULL) for data that lies within
 * hashes->base. */
int ct_image_pages_writer_add_hashed(struct ct_image_pages_writer *p, uint64_t addr,
				     const void *data, size_t n_pages,
				     const struct ct_image_chunk_hashes *hashes);
/* Pages placed by the caller straight into the file (an uncompressed image whose pages file
 * was reserved on tmpfs and is mapped): saves copying them through write(). *ret points at
 * payload offset 0; need bytes from the current offset (ct_image_pages_writer_offset) are
 * allocated and may be written (a little more than was reserved is allocated now).
 * -EOPNOTSUPP when the writer has no mapping (compression, no reservation, not tmpfs) or need
 * is well past the reservation: use ct_image_pages_writer_add(). */
int ct_image_pages_writer_map(struct ct_image_pages_writer *p, uint64_t need, uint8_t **ret);
uint64_t ct_image_pages_writer_offset(const struct ct_image_pages_writer *p);
enum {
	CT_IMAGE_PLACED_SKIP, /* not in the image (never touched; file-backed) */
	CT_IMAGE_PLACED_ZERO, /* all zero: recorded, not stored */
	CT_IMAGE_PLACED_DATA, /* stored */
};
/* Records n_pages pages from addr, kind[i] for each: the DATA pages were placed, in order, at
 * the current offset. They become chunks of CT_IMAGE_PAGES_CHUNK_PAGES (the last one short);
 * xxh3[k] (k < n_xxh3) is the checksum of the k-th, else it is computed. */
int ct_image_pages_writer_add_placed(struct ct_image_pages_writer *p, uint64_t addr,
				     const uint8_t *kind, size_t n_pages, const uint64_t *xxh3,
				     size_t n_xxh3);
/* Flushes, writes the index and header, fsyncs, renames into place; frees p either way. */
int ct_image_pages_writer_finish(struct ct_image_pages_writer *p);
struct ct_image_pages_writer *ct_image_pages_writer_free(struct ct_image_pages_writer *p);
/* Writes the inventory last and fsyncs the directory. */
int ct_image_writer_finish(struct ct_image_writer *w);

/* ---- image-read.c: the validating reader --------------------------------------------------- */

struct ct_image_process {
	struct ct_image_task task;
	struct ct_image_mm mm;
	struct ct_image_fds fds;
	struct ct_image_pages *pages; /* NULL when the process has no private pages */
};

struct ct_image {
	int dir_fd;
	struct ct_image_inventory inventory;
	struct ct_image_process *procs; /* sorted by pid */
	size_t n_procs;
	struct ct_image_pages *shm; /* shared anonymous memory, sorted by id */
	size_t n_shm;
	struct ct_image_ipc ipc; /* empty without an ipc.img */
};

#define CT_IMAGE_ERROR_MAX 512

/* Opens and fully verifies an image: ownership and modes of the directory and every file (root,
 * not group/other-writable, regular, no symlinks), every header and checksum, the inventory
 * against the directory, every record, every page chunk. On failure err says which file and
 * what is wrong, e.g. "pages-42.img: checksum mismatch at chunk 12". */
int ct_image_open(const char *dir, char err[CT_IMAGE_ERROR_MAX], struct ct_image **ret);
/* The same, for a restore: each pages file of uncompressed chunks is also read-leased before it
 * is read, mapped, verified where it lies in the page cache (no copy; a SIGBUS from a file cut
 * short meanwhile is caught, common/sigbus.h) and left mapped (struct ct_image_pages.map), so
 * that the restore copies its pages straight from the page cache instead of reading and
 * checking them a second time. While the lease is held nobody can open the file for writing or
 * truncate it: they wait until the image is freed, or until the kernel breaks the lease
 * (/proc/sys/fs/lease-break-time, 45 s by default). A file that cannot be leased (open for
 * writing somewhere, a file system without leases) is not mapped, and is read as
 * ct_image_open's are. */
int ct_image_open_mapped(const char *dir, char err[CT_IMAGE_ERROR_MAX], struct ct_image **ret);
/* Whether p's mapping still shows what was verified: its lease is held, or was taken less than
 * the kernel's lease-break time ago (a writer waiting on it has not been let in). 0, or -ESTALE
 * with err naming the file. */
int ct_image_pages_check_mapped(const struct ct_image_pages *p, char err[CT_IMAGE_ERROR_MAX]);
struct ct_image *ct_image_free(struct ct_image *img);
/* ct_image_free on a thread of its own when img has mapped pages files: unmapping them takes
 * ~6 ms per 256 MiB here (the page tables over the page cache), which need not hold up a
 * restore whose container already runs. Their leases go with the mappings. */
void ct_image_free_background(struct ct_image *img);

/* Calls cb for every run of p in address order: data NULL for zero pages. Chunks are verified
 * again as they are read; those of a mapped file (ct_image_open_mapped) are not: data then
 * points into the mapping, and the caller checks ct_image_pages_check_mapped once done. Such
 * data is best handed to the kernel (pwrite, UFFDIO_COPY), which reports EFAULT where a read
 * in user space would get SIGBUS, should the file be cut after a broken lease. cb returning
 * < 0 stops with that value. */
typedef int (*ct_image_pages_cb)(uint64_t addr, const void *data, size_t n_pages, void *userdata);
int ct_image_pages_read(struct ct_image *img, const struct ct_image_pages *p,
			char err[CT_IMAGE_ERROR_MAX], ct_image_pages_cb cb, void *userdata);

static inline void ct_image_writer_freep(struct ct_image_writer **w)
{
	ct_image_writer_free(*w);
}
static inline void ct_image_pages_writer_freep(struct ct_image_pages_writer **p)
{
	ct_image_pages_writer_free(*p);
}
static inline void ct_image_freep(struct ct_image **i)
{
	ct_image_free(*i);
}
