/* The checkpoint image format (see image-internal.h for the layout): names, the path check,
 * headers, and the encoders that turn the data model into TLV payloads. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <xxhash.h>

#include "checkpoint/ct/image-internal.h"
#include "checkpoint/ct/image-tlv-internal.h"
#include "common/cleanup.h"
#include "common/macro.h"

static const char *const file_kind_table[_CT_IMAGE_FILE_KIND_MAX] = {
	[CT_IMAGE_FILE_INVENTORY] = "inventory",
	[CT_IMAGE_FILE_TASK] = "task",
	[CT_IMAGE_FILE_MM] = "mm",
	[CT_IMAGE_FILE_FDS] = "fds",
	[CT_IMAGE_FILE_PAGES] = "pages",
	[CT_IMAGE_FILE_IPC] = "ipc",
};

const char *ct_image_file_kind_to_string(enum ct_image_file_kind k)
{
	return (size_t)k < ELEMENTSOF(file_kind_table) ? file_kind_table[k] : NULL;
}

static const char *const vma_kind_table[_CT_IMAGE_VMA_KIND_MAX] = {
	[CT_IMAGE_VMA_ANON_PRIVATE] = "anon-private",
	[CT_IMAGE_VMA_ANON_SHARED] = "anon-shared",
	[CT_IMAGE_VMA_FILE_PRIVATE] = "file-private",
	[CT_IMAGE_VMA_FILE_SHARED] = "file-shared",
	[CT_IMAGE_VMA_HEAP] = "heap",
	[CT_IMAGE_VMA_STACK] = "stack",
	[CT_IMAGE_VMA_VDSO] = "vdso",
	[CT_IMAGE_VMA_VVAR] = "vvar",
	[CT_IMAGE_VMA_VVAR_VCLOCK] = "vvar-vclock",
	[CT_IMAGE_VMA_SYSV_SHM] = "sysv-shm",
};
DEFINE_STRING_TABLE_LOOKUP(ct_image_vma_kind, enum ct_image_vma_kind, vma_kind_table)

static const char *const vma_pages_table[_CT_IMAGE_VMA_PAGES_MAX] = {
	[CT_IMAGE_VMA_PAGES_NONE] = "none",
	[CT_IMAGE_VMA_PAGES_PRIVATE] = "private",
	[CT_IMAGE_VMA_PAGES_SHM] = "shm",
};
DEFINE_STRING_TABLE_LOOKUP(ct_image_vma_pages, enum ct_image_vma_pages, vma_pages_table)

const char *ct_image_vma_advice_to_string(uint32_t adv, char *buf, size_t size)
{
	static const char *const names[] = {
		"dontfork",  "wipeonfork", "dontdump",	  "hugepage", "nohugepage",
		"mergeable", "locked",	   "lockonfault", "sealed",   "droppable",
	};
	size_t at = 0;

	_Static_assert(ELEMENTSOF(names) == 10, "a name for each CT_IMAGE_ADV_* bit");
	if (size == 0)
		return buf;
	buf[0] = 0;
	for (size_t i = 0; i < ELEMENTSOF(names); i++)
		if (adv & (1U << i)) {
			int n = snprintf(buf + at, size - at, "%s%s", at ? "," : "", names[i]);

			if (n < 0 || (size_t)n >= size - at)
				break;
			at += (size_t)n;
		}
	return buf;
}

static const char *const fd_type_table[_CT_IMAGE_FD_TYPE_MAX] = {
	[CT_IMAGE_FD_REG] = "file",	     [CT_IMAGE_FD_DIR] = "dir",
	[CT_IMAGE_FD_PIPE] = "pipe",	     [CT_IMAGE_FD_FIFO] = "fifo",
	[CT_IMAGE_FD_UNIX] = "unix",	     [CT_IMAGE_FD_TCP] = "tcp",
	[CT_IMAGE_FD_UDP] = "udp",	     [CT_IMAGE_FD_EVENTFD] = "eventfd",
	[CT_IMAGE_FD_EPOLL] = "epoll",	     [CT_IMAGE_FD_TIMERFD] = "timerfd",
	[CT_IMAGE_FD_SIGNALFD] = "signalfd", [CT_IMAGE_FD_MEMFD] = "memfd",
	[CT_IMAGE_FD_CHR] = "chr",	     [CT_IMAGE_FD_TTY] = "tty",
};
DEFINE_STRING_TABLE_LOOKUP(ct_image_fd_type, enum ct_image_fd_type, fd_type_table)

uint32_t ct_image_magic(enum ct_image_file_kind k)
{
	/* ASCII on disk: "CTIV", "CTTK", "CTMM", "CTFD", "CTPG", "CTIP". */
	static const char magics[_CT_IMAGE_FILE_KIND_MAX][5] = {"CTIV", "CTTK", "CTMM",
								"CTFD", "CTPG", "CTIP"};

	if ((size_t)k >= _CT_IMAGE_FILE_KIND_MAX)
		return 0;
	return get_le32((const uint8_t *)magics[k]);
}

int ct_image_path_check(const char *path, const char **ret_reason)
{
	const char *reason = NULL;
	size_t len;

	if (!path || path[0] != '/')
		reason = "not an absolute path";
	else if ((len = strnlen(path, CT_IMAGE_STRING_MAX + 1)) > CT_IMAGE_STRING_MAX)
		reason = "path too long";
	else {
		for (const char *p = path; *p && !reason; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				reason = "control character in path";
		/* Any ".." component could climb out of what the container sees. */
		for (const char *p = path; *p && !reason;) {
			size_t n;

			p += strspn(p, "/");
			n = strcspn(p, "/");
			if (n == 2 && p[0] == '.' && p[1] == '.')
				reason = "'..' in path";
			p += n;
		}
	}
	if (reason) {
		if (ret_reason)
			*ret_reason = reason;
		return -EINVAL;
	}
	return 0;
}

void ct_image_header_encode(const struct ct_image_header *h, uint8_t out[CT_IMAGE_HEADER_SIZE])
{
	put_le32(out, h->magic);
	put_le32(out + 4, h->version);
	put_le32(out + 8, h->flags);
	put_le32(out + 12, 0);
	put_le64(out + 16, h->payload_len);
	put_le64(out + 24, h->payload_xxh3);
	put_le64(out + 32, XXH3_64bits(out, 32));
}

/* ---- a growable TLV buffer: errors are sticky, checked once at the end --------------------- */

struct buf {
	uint8_t *data;
	size_t size, alloc;
	int error;
};

static uint8_t *buf_grow(struct buf *b, size_t n)
{
	if (b->error)
		return NULL;
	if (n > SIZE_MAX / 2 - b->size) {
		b->error = -ENOMEM;
		return NULL;
	}
	if (b->size + n > b->alloc) {
		size_t na = MAX(b->alloc * 2, b->size + n + 256);
		uint8_t *nd = realloc(b->data, na);

		if (!nd) {
			b->error = -ENOMEM;
			return NULL;
		}
		b->data = nd;
		b->alloc = na;
	}
	b->size += n;
	return b->data + b->size - n;
}

static void put_tlv(struct buf *b, uint16_t tag, const void *v, size_t len)
{
	uint8_t *p;

	if (len > UINT32_MAX) {
		b->error = -E2BIG;
		return;
	}
	p = buf_grow(b, CT_IMAGE_TLV_HEADER_SIZE + len);
	if (!p)
		return;
	put_le16(p, tag);
	put_le16(p + 2, 0);
	put_le32(p + 4, (uint32_t)len);
	if (len > 0)
		memcpy(p + CT_IMAGE_TLV_HEADER_SIZE, v, len);
}

static void put_u32(struct buf *b, uint16_t tag, uint32_t v)
{
	uint8_t le[4];

	put_le32(le, v);
	put_tlv(b, tag, le, sizeof(le));
}

static void put_u64(struct buf *b, uint16_t tag, uint64_t v)
{
	uint8_t le[8];

	put_le64(le, v);
	put_tlv(b, tag, le, sizeof(le));
}

static void put_str(struct buf *b, uint16_t tag, const char *s)
{
	if (s)
		put_tlv(b, tag, s, strlen(s));
}

static void put_u64s(struct buf *b, uint16_t tag, const uint64_t *v, size_t n)
{
	uint8_t *p;

	if (n > UINT32_MAX / 8) {
		b->error = -E2BIG;
		return;
	}
	put_tlv(b, tag, NULL, 0);
	p = buf_grow(b, n * 8);
	if (!p)
		return;
	put_le32(p - CT_IMAGE_TLV_HEADER_SIZE + 4, (uint32_t)(n * 8));
	for (size_t i = 0; i < n; i++)
		put_le64(p + 8 * i, v[i]);
}

static void put_u32s(struct buf *b, uint16_t tag, const uint32_t *v, size_t n)
{
	uint8_t *p;

	if (n > UINT32_MAX / 4) {
		b->error = -E2BIG;
		return;
	}
	put_tlv(b, tag, NULL, 0);
	p = buf_grow(b, n * 4);
	if (!p)
		return;
	put_le32(p - CT_IMAGE_TLV_HEADER_SIZE + 4, (uint32_t)(n * 4));
	for (size_t i = 0; i < n; i++)
		put_le32(p + 4 * i, v[i]);
}

/* A nested list: returns where its header is, for nest_end() to patch the length. */
static size_t nest_begin(struct buf *b, uint16_t tag)
{
	put_tlv(b, tag, NULL, 0);
	return b->size - CT_IMAGE_TLV_HEADER_SIZE;
}

static void nest_end(struct buf *b, size_t at)
{
	size_t len = b->size - at - CT_IMAGE_TLV_HEADER_SIZE;

	if (b->error)
		return;
	if (len > UINT32_MAX) {
		b->error = -E2BIG;
		return;
	}
	put_le32(b->data + at + 4, (uint32_t)len);
}

static int buf_finish(struct buf *b, uint8_t **ret, size_t *ret_size)
{
	if (b->error || b->size > CT_IMAGE_META_MAX) {
		int r = b->error ?: -E2BIG;

		free(b->data);
		return r;
	}
	*ret = b->data;
	*ret_size = b->size;
	return 0;
}

/* ---- encoders ----------------------------------------------------------------------------- */

int ct_image_encode_inventory(const struct ct_image_inventory *inv, uint8_t **ret, size_t *ret_size)
{
	const struct ct_image_vdso_layout *v = &inv->vdso;
	const uint64_t vdso[] = {v->vvar_start,	     v->vvar_end,   v->vvar_vclock_start,
				 v->vvar_vclock_end, v->vdso_start, v->vdso_end};
	struct buf b = {};

	put_str(&b, INV_CONTAINER, inv->container);
	put_str(&b, INV_KERNEL, inv->kernel_release);
	put_str(&b, INV_ARCH, inv->arch);
	put_u32(&b, INV_PAGE_SIZE, inv->page_size);
	put_u32(&b, INV_ROOT_PID, inv->root_pid);
	put_u64(&b, INV_CREATED, inv->created_usec);
	put_u64s(&b, INV_VDSO, vdso, ELEMENTSOF(vdso));
	put_str(&b, INV_HOSTNAME, inv->hostname);
	put_u32(&b, INV_NETNS, inv->netns);
	put_str(&b, INV_DOMAINNAME, inv->domainname);
	if (inv->clocks.realtime_ns) {
		const uint64_t clocks[] = {inv->clocks.monotonic_ns, inv->clocks.boottime_ns,
					   inv->clocks.realtime_ns};

		put_u64s(&b, INV_CLOCKS, clocks, ELEMENTSOF(clocks));
	}
	for (size_t i = 0; i < inv->n_net_sysctls && !b.error; i++) {
		_cleanup_free_ char *kv = NULL;

		if (asprintf(&kv, "%s=%s", inv->net_sysctls[i].name, inv->net_sysctls[i].value) <
		    0) {
			b.error = -ENOMEM;
			break;
		}
		put_str(&b, INV_NET_SYSCTL, kv);
	}
	for (size_t i = 0; i < inv->n_files; i++) {
		size_t at = nest_begin(&b, INV_FILE);

		put_str(&b, FILE_NAME, inv->files[i].name);
		put_u64(&b, FILE_SIZE, inv->files[i].size);
		put_u64(&b, FILE_XXH3, inv->files[i].xxh3);
		nest_end(&b, at);
	}
	return buf_finish(&b, ret, ret_size);
}

static void put_thread(struct buf *b, const struct ct_image_thread *th)
{
	size_t at = nest_begin(b, TASK_THREAD);
	uint8_t robust[16], rseq[16];

	put_u32(b, THREAD_TID, th->tid);
	put_tlv(b, THREAD_COMM, th->comm, strnlen(th->comm, sizeof(th->comm) - 1));
	put_u64(b, THREAD_SIGMASK, th->sigmask);
	put_u64(b, THREAD_PENDING, th->sigpending);
	if (th->n_siginfo > 0)
		put_tlv(b, THREAD_SIGINFO, th->siginfo, th->n_siginfo * CT_IMAGE_SIGINFO_SIZE);
	put_le64(robust, th->robust_list);
	put_le64(robust + 8, th->robust_list_len);
	put_tlv(b, THREAD_ROBUST, robust, sizeof(robust));
	put_u64(b, THREAD_TID_ADDRESS, th->tid_address);
	put_le64(rseq, th->rseq);
	put_le32(rseq + 8, th->rseq_len);
	put_le32(rseq + 12, (uint32_t)th->rseq_sig);
	put_tlv(b, THREAD_RSEQ, rseq, sizeof(rseq));
	for (size_t i = 0; i < th->n_regsets; i++) {
		size_t rat = nest_begin(b, THREAD_REGSET);

		put_u32(b, REGSET_TYPE, th->regsets[i].type);
		put_tlv(b, REGSET_DATA, th->regsets[i].data, th->regsets[i].size);
		nest_end(b, rat);
	}
	put_u64s(b, THREAD_ALTSTACK,
		 (const uint64_t[]){th->altstack_sp, th->altstack_size, th->altstack_flags}, 3);
	if (th->have_sched) {
		put_u32s(b, THREAD_SCHED,
			 (const uint32_t[]){th->sched_policy, th->sched_flags, th->sched_priority,
					    (uint32_t)th->nice, th->ioprio, th->pdeathsig},
			 6);
		put_u64(b, THREAD_TIMERSLACK, th->timerslack_ns);
	}
	if (th->affinity_len > 0)
		put_tlv(b, THREAD_AFFINITY, th->affinity, th->affinity_len);
	nest_end(b, at);
}

_Static_assert(sizeof(struct ct_image_timer) == 64, "a timer record is 8 u64");

int ct_image_encode_task(const struct ct_image_task *t, uint8_t **ret, size_t *ret_size)
{
	uint64_t rl[2 * CT_IMAGE_RLIMITS], sa[4 * CT_IMAGE_SIGNALS];
	struct buf b = {};
	size_t at;

	for (size_t i = 0; i < CT_IMAGE_RLIMITS; i++) {
		rl[2 * i] = t->rlimits[i].cur;
		rl[2 * i + 1] = t->rlimits[i].max;
	}
	for (size_t i = 0; i < CT_IMAGE_SIGNALS; i++) {
		const struct ct_image_sigaction *s = &t->sigactions[i];

		sa[4 * i] = s->handler;
		sa[4 * i + 1] = s->flags;
		sa[4 * i + 2] = s->restorer;
		sa[4 * i + 3] = s->mask;
	}
	put_u32(&b, TASK_PID, t->pid);
	put_u32(&b, TASK_PPID, t->ppid);
	put_u32(&b, TASK_PGID, t->pgid);
	put_u32(&b, TASK_SID, t->sid);
	put_tlv(&b, TASK_COMM, t->comm, strnlen(t->comm, sizeof(t->comm) - 1));
	at = nest_begin(&b, TASK_CREDS);
	put_u32s(&b, CRED_UIDS, t->creds.uids, 4);
	put_u32s(&b, CRED_GIDS, t->creds.gids, 4);
	put_u32s(&b, CRED_GROUPS, t->creds.groups, t->creds.n_groups);
	put_u64s(&b, CRED_CAPS, t->creds.caps, 5);
	put_u32(&b, CRED_SECUREBITS, t->creds.securebits);
	nest_end(&b, at);
	put_u64s(&b, TASK_RLIMITS, rl, ELEMENTSOF(rl));
	put_u64s(&b, TASK_SIGACTIONS, sa, ELEMENTSOF(sa));
	put_u64(&b, TASK_SHARED_PENDING, t->shared_pending);
	if (t->n_shared_siginfo > 0)
		put_tlv(&b, TASK_SHARED_SIGINFO, t->shared_siginfo,
			t->n_shared_siginfo * CT_IMAGE_SIGINFO_SIZE);
	put_str(&b, TASK_CWD, t->cwd);
	put_str(&b, TASK_ROOT, t->root);
	put_u64s(&b, TASK_ITIMERS, t->itimers, ELEMENTSOF(t->itimers));
	put_u32(&b, TASK_PERSONALITY, t->personality);
	put_u32(&b, TASK_UMASK, t->umask);
	if (t->n_zombies > 0)
		put_u64s(&b, TASK_ZOMBIES, t->zombies, t->n_zombies);
	if (t->n_timers > 0)
		put_u64s(&b, TASK_TIMERS, (const uint64_t *)t->timers, t->n_timers * 8);
	if (t->have_attrs)
		put_u32s(&b, TASK_ATTRS,
			 (const uint32_t[]){(uint32_t)t->oom_score_adj, t->dumpable, t->subreaper,
					    t->thp_disable, t->mdwe},
			 5);
	if (t->no_new_privs)
		put_u32(&b, TASK_NO_NEW_PRIVS, t->no_new_privs);
	if (t->seccomp_mode)
		put_u32(&b, TASK_SECCOMP, t->seccomp_mode);
	for (size_t i = 0; i < t->n_seccomp_filters; i++) {
		const struct ct_image_seccomp_filter *sf = &t->seccomp_filters[i];
		size_t len = (size_t)sf->n_insns * 8;
		uint8_t *blob = malloc(8 + len);

		if (!blob) {
			b.error = -ENOMEM;
			break;
		}
		put_le32(blob, sf->flags);
		put_le32(blob + 4, 0);
		if (len)
			memcpy(blob + 8, sf->insns, len);
		put_tlv(&b, TASK_SECCOMP_FILTER, blob, 8 + len);
		free(blob);
	}
	for (size_t i = 0; i < t->n_threads; i++)
		put_thread(&b, &t->threads[i]);
	return buf_finish(&b, ret, ret_size);
}

int ct_image_encode_mm(const struct ct_image_mm *mm, uint8_t **ret, size_t *ret_size)
{
	struct buf b = {};

	put_u32(&b, MM_PID, mm->pid);
	put_u64s(&b, MM_FIELDS, mm->fields, CT_IMAGE_MM_FIELDS);
	put_u64s(&b, MM_AUXV, mm->auxv, mm->n_auxv);
	put_str(&b, MM_EXE, mm->exe);
	for (size_t i = 0; i < mm->n_vmas; i++) {
		const struct ct_image_vma *v = &mm->vmas[i];
		size_t at = nest_begin(&b, MM_VMA);

		put_u64(&b, VMA_START, v->start);
		put_u64(&b, VMA_END, v->end);
		put_u64(&b, VMA_PGOFF, v->pgoff);
		put_u32(&b, VMA_PROT, v->prot);
		put_u32(&b, VMA_FLAGS, v->flags);
		put_u32(&b, VMA_KIND, v->kind);
		put_u32(&b, VMA_PAGES, v->pages);
		if (v->kind == CT_IMAGE_VMA_ANON_SHARED || v->pages == CT_IMAGE_VMA_PAGES_SHM ||
		    v->kind == CT_IMAGE_VMA_SYSV_SHM)
			put_u64(&b, VMA_SHMID, v->shmid);
		put_str(&b, VMA_PATH, v->path);
		if (v->advice)
			put_u32(&b, VMA_ADVICE, v->advice);
		nest_end(&b, at);
	}
	if (mm->n_guards > 0)
		put_u64s(&b, MM_GUARDS, mm->guards, 2 * mm->n_guards);
	return buf_finish(&b, ret, ret_size);
}

int ct_image_encode_fds(const struct ct_image_fds *fds, uint8_t **ret, size_t *ret_size)
{
	struct buf b = {};

	put_u32(&b, FDS_PID, fds->pid);
	for (size_t i = 0; i < fds->n_fds; i++) {
		const struct ct_image_fd *f = &fds->fds[i];
		size_t at = nest_begin(&b, FDS_FD);

		put_u32(&b, FD_NUM, f->fd);
		put_u32(&b, FD_TYPE, f->type);
		put_u32(&b, FD_FLAGS, f->flags);
		put_u32(&b, FD_FDFLAGS, f->fd_flags);
		put_u64(&b, FD_POS, f->pos);
		put_str(&b, FD_PATH, f->path);
		put_u64(&b, FD_FILE_ID, f->file_id);
		put_u64(&b, FD_OBJECT, f->object);
		if (f->data_size > 0)
			put_tlv(&b, FD_DATA, f->data, f->data_size);
		if (f->n_locks > 0) {
			uint64_t *v = calloc(f->n_locks, 3 * sizeof(uint64_t));

			for (size_t j = 0; v && j < f->n_locks; j++) {
				v[3 * j] = (uint64_t)f->locks[j].kind << 32 | f->locks[j].write;
				v[3 * j + 1] = f->locks[j].start;
				v[3 * j + 2] = f->locks[j].end;
			}
			if (v)
				put_u64s(&b, FD_LOCKS, v, 3 * f->n_locks);
			else
				b.error = -ENOMEM;
			free(v);
		}
		nest_end(&b, at);
	}
	return buf_finish(&b, ret, ret_size);
}

/* Per IPC namespace (ipc/ipc_sysctl.c, ipc/mq_sysctl.c), the *_next_id ones aside. */
const char *const ct_image_ipc_sysctls[] = {
	"kernel/shmmax",
	"kernel/shmall",
	"kernel/shmmni",
	"kernel/shm_rmid_forced",
	"kernel/msgmax",
	"kernel/msgmni",
	"kernel/msgmnb",
	"kernel/sem",
	"fs/mqueue/queues_max",
	"fs/mqueue/msg_max",
	"fs/mqueue/msgsize_max",
	"fs/mqueue/msg_default",
	"fs/mqueue/msgsize_default",
	NULL,
};

bool ct_image_ipc_sysctl_known(const char *name)
{
	for (size_t i = 0; ct_image_ipc_sysctls[i]; i++)
		if (streq(name, ct_image_ipc_sysctls[i]))
			return true;
	return false;
}

bool ct_image_net_sysctl_name_ok(const char *name)
{
	const char *c;

	if (!startswith(name, "net/") || strlen(name) > CT_IMAGE_NET_SYSCTL_NAME_MAX)
		return false;
	for (c = name + strlen("net/");;) {
		size_t n = strspn(
			c, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-");

		if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
			return false;
		if (c[n] == 0)
			return true;
		if (c[n] != '/')
			return false;
		c += n + 1;
	}
}

bool ct_image_sysctl_value_ok(const char *value, size_t max)
{
	size_t n = strlen(value);

	if (n > max)
		return false;
	for (size_t i = 0; i < n; i++)
		if (value[i] != '\t' && (value[i] < 0x20 || value[i] > 0x7e))
			return false;
	return true;
}

void ct_image_sysctls_free(struct ct_image_sysctl *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(s[i].name);
		free(s[i].value);
	}
	free(s);
}

static void put_ipc_perm(struct buf *b, const struct ct_image_ipc_perm *p)
{
	put_u32(b, IPCO_KEY, (uint32_t)p->key);
	put_u32(b, IPCO_ID, p->id);
	put_u32(b, IPCO_UID, p->uid);
	put_u32(b, IPCO_GID, p->gid);
	put_u32(b, IPCO_MODE, p->mode);
}

int ct_image_encode_ipc(const struct ct_image_ipc *ipc, uint8_t **ret, size_t *ret_size)
{
	struct buf b = {};

	for (size_t i = 0; i < ipc->n_sysctls && !b.error; i++) {
		char *kv = NULL;

		if (asprintf(&kv, "%s=%s", ipc->sysctls[i].name, ipc->sysctls[i].value) < 0) {
			b.error = -ENOMEM;
			break;
		}
		put_str(&b, IPC_SYSCTL, kv);
		free(kv);
	}
	for (size_t i = 0; i < ipc->n_shms && !b.error; i++) {
		size_t at = nest_begin(&b, IPC_SHM);

		put_ipc_perm(&b, &ipc->shms[i].perm);
		put_u64(&b, IPCO_SHM_SIZE, ipc->shms[i].size);
		put_u32(&b, IPCO_SHM_FLAGS, ipc->shms[i].flags);
		nest_end(&b, at);
	}
	for (size_t i = 0; i < ipc->n_sems && !b.error; i++) {
		const struct ct_image_sem_set *s = &ipc->sems[i];
		uint8_t *v = malloc(MAX(s->n_values, 1u) * 2);
		size_t at = nest_begin(&b, IPC_SEM);

		put_ipc_perm(&b, &s->perm);
		for (size_t j = 0; v && j < s->n_values; j++)
			put_le16(v + 2 * j, s->values[j]);
		if (v)
			put_tlv(&b, IPCO_SEM_VALUES, v, s->n_values * 2);
		else
			b.error = -ENOMEM;
		free(v);
		nest_end(&b, at);
	}
	for (size_t i = 0; i < ipc->n_msgqs && !b.error; i++) {
		const struct ct_image_msg_queue *q = &ipc->msgqs[i];
		size_t at = nest_begin(&b, IPC_MSGQ);

		put_ipc_perm(&b, &q->perm);
		put_u64(&b, IPCO_QBYTES, q->qbytes);
		for (size_t j = 0; j < q->n_msgs && !b.error; j++) {
			uint8_t *m = malloc(8 + (size_t)q->msgs[j].len);

			if (!m) {
				b.error = -ENOMEM;
				break;
			}
			put_le64(m, (uint64_t)q->msgs[j].type);
			if (q->msgs[j].len > 0)
				memcpy(m + 8, q->msgs[j].text, q->msgs[j].len);
			put_tlv(&b, IPCO_MSG, m, 8 + (size_t)q->msgs[j].len);
			free(m);
		}
		nest_end(&b, at);
	}
	return buf_finish(&b, ret, ret_size);
}

/* ---- destructors: free what a decoder (or a test) allocated ------------------------------ */

void ct_image_inventory_done(struct ct_image_inventory *inv)
{
	free(inv->container);
	free(inv->kernel_release);
	free(inv->arch);
	free(inv->hostname);
	free(inv->domainname);
	ct_image_sysctls_free(inv->net_sysctls, inv->n_net_sysctls);
	for (size_t i = 0; i < inv->n_files; i++)
		free(inv->files[i].name);
	free(inv->files);
	*inv = (struct ct_image_inventory){};
}

void ct_image_task_done(struct ct_image_task *t)
{
	free(t->creds.groups);
	free(t->shared_siginfo);
	free(t->zombies);
	free(t->timers);
	free(t->cwd);
	free(t->root);
	for (size_t i = 0; i < t->n_threads; i++) {
		struct ct_image_thread *th = &t->threads[i];

		free(th->siginfo);
		free(th->affinity);
		for (size_t j = 0; j < th->n_regsets; j++)
			free(th->regsets[j].data);
		free(th->regsets);
	}
	free(t->threads);
	for (size_t i = 0; i < t->n_seccomp_filters; i++)
		free(t->seccomp_filters[i].insns);
	free(t->seccomp_filters);
	*t = (struct ct_image_task){};
}

void ct_image_mm_done(struct ct_image_mm *mm)
{
	free(mm->guards);
	free(mm->auxv);
	free(mm->exe);
	for (size_t i = 0; i < mm->n_vmas; i++)
		free(mm->vmas[i].path);
	free(mm->vmas);
	*mm = (struct ct_image_mm){};
}

void ct_image_fds_done(struct ct_image_fds *fds)
{
	for (size_t i = 0; i < fds->n_fds; i++) {
		free(fds->fds[i].path);
		free(fds->fds[i].data);
		free(fds->fds[i].locks);
	}
	free(fds->fds);
	*fds = (struct ct_image_fds){};
}

void ct_image_ipc_done(struct ct_image_ipc *ipc)
{
	ct_image_sysctls_free(ipc->sysctls, ipc->n_sysctls);
	free(ipc->shms);
	for (size_t i = 0; i < ipc->n_sems; i++)
		free(ipc->sems[i].values);
	free(ipc->sems);
	for (size_t i = 0; i < ipc->n_msgqs; i++) {
		for (size_t j = 0; j < ipc->msgqs[i].n_msgs; j++)
			free(ipc->msgqs[i].msgs[j].text);
		free(ipc->msgqs[i].msgs);
	}
	free(ipc->msgqs);
	*ipc = (struct ct_image_ipc){};
}

void ct_image_pages_done(struct ct_image_pages *p)
{
	if (p->map) {
		munmap((void *)p->map, p->map_len);
		safe_close(p->map_fd); /* and with it the lease */
	}
	free(p->name);
	free(p->chunks);
	free(p->runs);
	*p = (struct ct_image_pages){};
}
