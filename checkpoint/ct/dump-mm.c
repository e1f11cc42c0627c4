/* Checkpoint of memory: the layout of each process, its private pages, and shared memory
 * objects (shared anonymous mappings, memfds) once per inode. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "checkpoint/ct/dump-internal.h"
#include "checkpoint/ct/memory-internal.h"
#include "common/common.h"
#include "common/hash.h"

#include <xxhash.h>

#define MEM_WINDOW  (4U << 20) /* read this much, then hand it to the image writer (cache-warm) */
#define CHUNK_BYTES ((size_t)CT_IMAGE_PAGES_CHUNK_PAGES * CT_IMAGE_PAGE_SIZE)
#define WIN_CHUNKS  (MEM_WINDOW / CHUNK_BYTES)

/* PAGEMAP_SCAN (Linux 6.7), not in Debian 12's headers. */
#define PM_PAGE_IS_FILE	   (1 << 2)
#define PM_PAGE_IS_PRESENT (1 << 3)
#define PM_PAGE_IS_SWAPPED (1 << 4)
#define PM_PAGE_IS_PFNZERO (1 << 5)
#define PM_PAGE_IS_GUARD   (1 << 8) /* Linux 6.14 */
struct pm_page_region {
	uint64_t start, end, categories;
};
struct pm_scan_arg {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
	uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define PM_PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#define SCAN_VEC	512

/* /proc/PID/stat fields 26-28 and 45-51 (start_code ... env_end). */
static int read_mm_fields(pid_t hpid, uint64_t f[CT_IMAGE_MM_FIELDS])
{
	_cleanup_free_ char *text = NULL;
	unsigned long long v[53] = {};
	char path[64], *p;
	int r;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)hpid);
	r = read_full_file(path, 8192, &text, NULL);
	if (r < 0)
		return r;
	p = strrchr(text, ')');
	if (!p)
		return -EBADMSG;
	p += 2; /* field 3, the state */
	p = strchr(p, ' ');
	for (int field = 4; field <= 52 && p; field++) {
		char *end;

		v[field] = strtoull(p + 1, &end, 10);
		p = *end == ' ' ? end : NULL;
	}
	/* start_code end_code start_data end_data start_brk brk start_stack arg_start arg_end
	 * env_start env_end; brk itself is not in stat: filled in by the caller. */
	f[0] = v[26], f[1] = v[27], f[2] = v[45], f[3] = v[46], f[4] = v[47], f[5] = 0;
	f[6] = v[28], f[7] = v[48], f[8] = v[49], f[9] = v[50], f[10] = v[51];
	return 0;
}

static int read_auxv(pid_t hpid, uint64_t **ret, size_t *ret_n)
{
	_cleanup_free_ char *text = NULL;
	size_t size;
	char path[64];
	int r;

	snprintf(path, sizeof(path), "/proc/%d/auxv", (int)hpid);
	r = read_full_file(path, CT_IMAGE_AUXV_MAX * 8, &text, &size);
	if (r < 0)
		return r;
	*ret_n = size / 8;
	*ret = malloc(MAX(size, 8u));
	if (!*ret)
		return -ENOMEM;
	memcpy(*ret, text, size);
	return 0;
}

int dump_register_shm(struct dumper *d, struct dproc *p, int fd, uint64_t ino)
{
	struct dshm *n;
	struct stat st;

	for (size_t i = 0; i < d->n_shms; i++)
		if (d->shms[i].ino == ino) {
			safe_close(fd);
			return 0;
		}
	if (fstat(fd, &st) < 0) {
		safe_close(fd);
		return dump_fail(d, NEG_ERRNO(), "pid %d: shared memory %" PRIu64 ": fstat: %m",
				 (int)p->pid, ino);
	}
	n = reallocarray(d->shms, d->n_shms + 1, sizeof(*n));
	if (!n) {
		safe_close(fd);
		return -ENOMEM;
	}
	d->shms = n;
	n[d->n_shms++] = (struct dshm){ino, fd, (uint64_t)st.st_size};
	return 0;
}

/* An attachment of a System V segment: the whole segment, from its start, as shmat() makes it
 * (the restore attaches it again). The segment itself, with its contents, is ipc.img's; the
 * attachment's size is checked against it once the namespace is read (dump-ns.c). */
static int sysv_layout(struct dumper *d, struct dproc *p, const struct ct_vma *v,
		       struct ct_image_vma *iv)
{
	if (v->offset != 0 || v->inode > INT32_MAX)
		return dump_fail(d, -EOPNOTSUPP,
				 "pid %d: System V shared memory %" PRIu64
				 " is attached in part at %#" PRIx64 ", which is not supported",
				 (int)p->pid, v->inode, v->start);
	/* Attached writable, made read-only since: attaching it read-only would take away
	 * what mprotect() could give back. */
	if (!v->write && v->have_vmflags && (v->vmflags & CT_VMF_MAYWRITE))
		return dump_fail(d, -EOPNOTSUPP,
				 "pid %d: System V shared memory %" PRIu64 " at %#" PRIx64
				 " attached writable and made read-only is not supported",
				 (int)p->pid, v->inode, v->start);
	iv->kind = CT_IMAGE_VMA_SYSV_SHM;
	iv->pages = CT_IMAGE_VMA_PAGES_NONE;
	iv->shmid = v->inode;
	iv->pgoff = 0;
	return 0;
}

static int vma_layout(struct dumper *d, struct dproc *p, const struct ct_vma *v,
		      struct ct_image_vma *iv)
{
	enum ct_vma_kind k = ct_vma_classify(v);
	const char *reason;

	*iv = (struct ct_image_vma){
		.start = v->start,
		.end = v->end,
		.pgoff = v->offset / CT_PAGE_SIZE,
		.prot = (v->read ? PROT_READ : 0) | (v->write ? PROT_WRITE : 0) |
			(v->exec ? PROT_EXEC : 0),
		.flags = v->shared ? MAP_SHARED : MAP_PRIVATE,
	};
	switch (k) {
	case CT_VMA_ANON_PRIVATE:
		iv->kind = CT_IMAGE_VMA_ANON_PRIVATE;
		if (v->path && streq(v->path, "[heap]"))
			iv->kind = CT_IMAGE_VMA_HEAP;
		else if (v->path && streq(v->path, "[stack]")) {
			iv->kind = CT_IMAGE_VMA_STACK;
			iv->flags |= MAP_GROWSDOWN;
		}
		iv->flags |= MAP_ANONYMOUS;
		iv->pages = CT_IMAGE_VMA_PAGES_PRIVATE;
		iv->pgoff = 0;
		return 0;
	case CT_VMA_ANON_SHARED: {
		char path[96];
		int fd;

		if (v->path && startswith(v->path, "/SYSV"))
			return sysv_layout(d, p, v, iv);
		iv->kind = CT_IMAGE_VMA_ANON_SHARED;
		iv->pages = CT_IMAGE_VMA_PAGES_SHM;
		iv->shmid = v->inode;
		snprintf(path, sizeof(path), "/proc/%d/map_files/%" PRIx64 "-%" PRIx64,
			 (int)p->hpid, v->start, v->end);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return dump_fail(d, NEG_ERRNO(), "pid %d: cannot open %s: %m", (int)p->pid,
					 path);
		return dump_register_shm(d, p, fd, v->inode);
	}
	case CT_VMA_FILE_PRIVATE:
	case CT_VMA_FILE_SHARED:
		if (v->deleted)
			return dump_fail(
				d, -EOPNOTSUPP,
				"pid %d: mapped file %s was deleted; it cannot be restored",
				(int)p->pid, v->path);
		if (ct_image_path_check(v->path, &reason) < 0)
			return dump_fail(d, -EOPNOTSUPP, "pid %d: mapped file %s: %s", (int)p->pid,
					 v->path, reason);
		iv->kind = k == CT_VMA_FILE_PRIVATE ? CT_IMAGE_VMA_FILE_PRIVATE
						    : CT_IMAGE_VMA_FILE_SHARED;
		iv->pages = k == CT_VMA_FILE_PRIVATE ? CT_IMAGE_VMA_PAGES_PRIVATE
						     : CT_IMAGE_VMA_PAGES_NONE;
		iv->path = strdup(v->path);
		return iv->path ? 0 : -ENOMEM;
	case CT_VMA_VVAR:
	case CT_VMA_VVAR_VCLOCK:
	case CT_VMA_VDSO:
		iv->kind = k == CT_VMA_VVAR	     ? CT_IMAGE_VMA_VVAR
			   : k == CT_VMA_VVAR_VCLOCK ? CT_IMAGE_VMA_VVAR_VCLOCK
						     : CT_IMAGE_VMA_VDSO;
		iv->pages = CT_IMAGE_VMA_PAGES_NONE;
		iv->pgoff = 0;
		return 0;
	default:
		return dump_fail(d, -EOPNOTSUPP,
				 "pid %d: the mapping %s at %#" PRIx64 " is not supported",
				 (int)p->pid, strna(v->path), v->start);
	}
}

/* What smaps' VmFlags say beyond the maps line: the advice a restore puts back, and the
 * states it cannot reproduce, refused by name. */
static int vma_advice(struct dumper *d, struct dproc *p, const struct ct_vma *v,
		      struct ct_image_vma *iv)
{
	static const struct {
		uint32_t vmf, adv;
	} kept[] = {
		{CT_VMF_DONTCOPY, CT_IMAGE_ADV_DONTFORK},
		{CT_VMF_WIPEONFORK, CT_IMAGE_ADV_WIPEONFORK},
		{CT_VMF_DONTDUMP, CT_IMAGE_ADV_DONTDUMP},
		{CT_VMF_HUGEPAGE, CT_IMAGE_ADV_HUGEPAGE},
		{CT_VMF_NOHUGEPAGE, CT_IMAGE_ADV_NOHUGEPAGE},
		{CT_VMF_MERGEABLE, CT_IMAGE_ADV_MERGEABLE},
		{CT_VMF_LOCKED, CT_IMAGE_ADV_LOCKED},
		{CT_VMF_LOCKONFAULT, CT_IMAGE_ADV_LOCKONFAULT},
		{CT_VMF_SEALED, CT_IMAGE_ADV_SEALED},
		{CT_VMF_DROPPABLE, CT_IMAGE_ADV_DROPPABLE},
	};

	if (v->vmflags & CT_VMF_UFFD)
		return dump_fail(d, -EOPNOTSUPP,
				 "pid %d: the mapping at %#" PRIx64
				 " is registered with a userfaultfd, which is not supported",
				 (int)p->pid, v->start);
	if (v->vmflags & CT_VMF_SHADOW_STACK)
		return dump_fail(d, -EOPNOTSUPP,
				 "pid %d: the mapping at %#" PRIx64
				 " is a shadow stack, which is not supported",
				 (int)p->pid, v->start);
	for (size_t i = 0; i < ELEMENTSOF(kept); i++)
		if (v->vmflags & kept[i].vmf)
			iv->advice |= kept[i].adv;
	if (v->vmflags & CT_VMF_GROWSDOWN)
		iv->flags |= MAP_GROWSDOWN;
	if (v->vmflags & CT_VMF_NORESERVE)
		iv->flags |= MAP_NORESERVE;
	if (iv->advice & CT_IMAGE_ADV_DROPPABLE) {
		if (iv->kind != CT_IMAGE_VMA_ANON_PRIVATE)
			return dump_fail(d, -EOPNOTSUPP,
					 "pid %d: the droppable mapping at %#" PRIx64
					 " is not anonymous private memory",
					 (int)p->pid, v->start);
		/* What MAP_DROPPABLE itself sets. */
		iv->advice &= ~(uint32_t)(CT_IMAGE_ADV_WIPEONFORK | CT_IMAGE_ADV_DONTDUMP);
		iv->flags &= ~(uint32_t)MAP_NORESERVE;
	}
	return 0;
}

static int vma_to_image(struct dumper *d, struct dproc *p, const struct ct_vma *v,
			struct ct_image_vma *iv)
{
	int r = vma_layout(d, p, v, iv);

	if (r < 0 || iv->kind == CT_IMAGE_VMA_VDSO || iv->kind == CT_IMAGE_VMA_VVAR ||
	    iv->kind == CT_IMAGE_VMA_VVAR_VCLOCK)
		return r;
	return vma_advice(d, p, v, iv);
}

int dump_mm(struct dumper *d, struct dproc *p)
{
	char path[64], buf[PATH_MAX + 16];
	ssize_t k;
	long brk;
	int r;

	p->mm.pid = (uint32_t)p->pid;
	r = read_mm_fields(p->hpid, p->mm.fields);
	if (r >= 0)
		r = read_auxv(p->hpid, &p->mm.auxv, &p->mm.n_auxv);
	if (r < 0)
		return dump_fail(d, r, "pid %d: cannot read its memory layout", (int)p->pid);
	r = dump_inject(d, p->threads[0], SYS_brk, 0, 0, 0, 0, &brk);
	if (r < 0)
		return r;
	p->mm.fields[5] = (uint64_t)brk;
	snprintf(path, sizeof(path), "/proc/%d/exe", (int)p->hpid);
	k = readlink(path, buf, sizeof(buf) - 1);
	if (k < 0)
		return dump_fail(d, NEG_ERRNO(), "pid %d: cannot read its executable: %m",
				 (int)p->pid);
	buf[k] = 0;
	if (k > 10 && streq(buf + k - 10, " (deleted)"))
		return dump_fail(d, -EOPNOTSUPP, "pid %d: its executable %s was deleted",
				 (int)p->pid, buf);
	p->mm.exe = strdup(buf);
	if (!p->mm.exe)
		return -ENOMEM;
	r = ct_proc_read_maps(p->hpid, &p->maps);
	if (r < 0)
		return dump_fail(d, r, "pid %d: cannot read its mappings", (int)p->pid);
	p->mm.vmas = calloc(MAX(p->maps.n, 1u), sizeof(*p->mm.vmas));
	if (!p->mm.vmas)
		return -ENOMEM;
	for (size_t i = 0; i < p->maps.n; i++) {
		if (ct_vma_classify(&p->maps.vmas[i]) == CT_VMA_VSYSCALL)
			continue;
		r = vma_to_image(d, p, &p->maps.vmas[i], &p->mm.vmas[p->mm.n_vmas]);
		if (r < 0)
			return r;
		p->mm.n_vmas++;
	}
	return 0;
}

/* Adds the pages of [addr, addr + len) selected by flags: untouched pages are left out (they
 * read as zero after a restore too); in private file mappings so are pages still backed by the
 * file (the restore maps the file). */
static int add_window(struct ct_image_pages_writer *pw, uint64_t addr, const uint8_t *buf,
		      const uint8_t *flags, size_t n_pages, bool file,
		      const struct ct_image_chunk_hashes *hashes, uint64_t *ret_pages)
{
	size_t i = 0;

	while (i < n_pages) {
		size_t j;

		if ((flags[i] & CT_PAGE_ABSENT) || (file && (flags[i] & CT_PAGE_FILE))) {
			i++;
			continue;
		}
		for (j = i + 1; j < n_pages && !(flags[j] & CT_PAGE_ABSENT) &&
				!(file && (flags[j] & CT_PAGE_FILE));
		     j++)
			;
		int r = ct_image_pages_writer_add_hashed(pw, addr + i * CT_PAGE_SIZE,
							 buf + i * CT_PAGE_SIZE, j - i, hashes);
		if (r < 0)
			return r;
		*ret_pages += j - i;
		i = j;
	}
	return 0;
}

/* A piece of memory to dump: at most MEM_WINDOW bytes. */
struct win {
	uint64_t addr;
	size_t len;
	bool file;	  /* private file mapping: file-backed pages are left out */
	bool skip_absent; /* no PAGEMAP_SCAN: look up untouched pages in pagemap */
};

struct wins {
	struct win *v;
	size_t n, alloc;
};

static int wins_add(struct wins *w, uint64_t a, uint64_t end, bool file, bool skip_absent)
{
	for (; a < end; a += MEM_WINDOW) {
		if (w->n == w->alloc) {
			size_t na = MAX(w->alloc * 2, (size_t)64);
			struct win *n = reallocarray(w->v, na, sizeof(*n));

			if (!n)
				return -ENOMEM;
			w->v = n, w->alloc = na;
		}
		w->v[w->n++] = (struct win){a, (size_t)MIN((uint64_t)MEM_WINDOW, end - a), file,
					    skip_absent};
	}
	return 0;
}

/* Guard regions (MADV_GUARD_INSTALL) found by the scan, merged, in address order. */
struct guards {
	uint64_t *v; /* pairs */
	size_t n, alloc;
	bool unknown; /* this kernel's PAGEMAP_SCAN does not report them (before 6.14) */
};

static int guards_add(struct guards *g, uint64_t start, uint64_t end)
{
	if (g->n > 0 && g->v[2 * g->n - 1] == start) {
		g->v[2 * g->n - 1] = end;
		return 0;
	}
	if (g->n == g->alloc) {
		size_t na = g->alloc ? 2 * g->alloc : 16;
		uint64_t *nv = reallocarray(g->v, na, 2 * sizeof(uint64_t));

		if (!nv)
			return -ENOMEM;
		g->v = nv;
		g->alloc = na;
	}
	g->v[2 * g->n] = start;
	g->v[2 * g->n + 1] = end;
	g->n++;
	return 0;
}

/* The populated parts of a VMA through PAGEMAP_SCAN: a sparse terabyte reservation costs a
 * page-table walk, not a pagemap read per page. The same walk finds its guard regions.
 * -ENOTTY where the kernel lacks it. */
static int scan_vma(const struct ct_mem *mem, const struct ct_image_vma *v, struct wins *out,
		    struct guards *guards)
{
	struct pm_page_region vec[SCAN_VEC];
	bool file = v->kind == CT_IMAGE_VMA_FILE_PRIVATE;
	uint64_t cur = v->start;

	while (cur < v->end) {
		uint64_t guard = guards->unknown ? 0 : PM_PAGE_IS_GUARD;
		struct pm_scan_arg arg = {
			.size = sizeof(arg),
			.start = cur,
			.end = v->end,
			.vec = (uint64_t)(uintptr_t)vec,
			.vec_len = SCAN_VEC,
			.category_anyof_mask = PM_PAGE_IS_PRESENT | PM_PAGE_IS_SWAPPED | guard,
			.return_mask = PM_PAGE_IS_PRESENT | PM_PAGE_IS_SWAPPED | PM_PAGE_IS_FILE |
				       PM_PAGE_IS_PFNZERO | guard,
		};
		long n = ioctl(mem->pagemap_fd, PM_PAGEMAP_SCAN, &arg);

		if (n < 0 && errno == EINVAL && guard) {
			guards->unknown = true;
			continue;
		}
		if (n < 0)
			return errno == ENOTTY || errno == EINVAL ? -ENOTTY : NEG_ERRNO();
		for (long i = 0; i < n; i++) {
			int r;

			if (vec[i].categories & PM_PAGE_IS_GUARD) {
				r = guards_add(guards, vec[i].start, vec[i].end);
				if (r < 0)
					return r;
				continue;
			}

			/* The shared zero page reads as zeros: a restore gets them for free. */
			if ((vec[i].categories & PM_PAGE_IS_PFNZERO) ||
			    (file && (vec[i].categories & PM_PAGE_IS_FILE)))
				continue;
			r = wins_add(out, vec[i].start, vec[i].end, false, false);
			if (r < 0)
				return r;
		}
		/* A short vector means the walk is complete (walk_end can be stale). */
		if (n < SCAN_VEC)
			break;
		cur = vec[n - 1].end;
	}
	return 0;
}

/* Reading and writing overlap: a reader thread fills one buffer while the caller hands the
 * other to the image writer. The writer is the slower of the two on tmpfs (every page of the
 * image is a new page for the kernel to find, or zstd's work), so while it is still busy with
 * the previous window the reader checksums the whole chunks of the new one for it: the writer
 * takes them for the chunks it stores raw. */
struct pipeline {
	const struct ct_mem *mem;
	const struct wins *w;
	uint8_t *buf[2], *flags[2];
	uint64_t xxh3[2][WIN_CHUNKS];
	bool has[2][WIN_CHUNKS];
	int r[2];
	size_t filled, consumed; /* consumed: also read outside the lock (atomically) */
	bool stop;
	pthread_mutex_t lock;
	pthread_cond_t cond;
};

/* The reader, with window i in slot: checksums its chunks that the writer may store from the
 * buffer (no page left out), for as long as the writer has not come to want the window. */
static void hash_chunks(struct pipeline *pl, const struct win *w, size_t i, int slot)
{
	bool file = w->file && w->skip_absent;

	memset(pl->has[slot], 0, sizeof(pl->has[slot]));
	for (size_t k = 0; k < w->len / CHUNK_BYTES; k++) {
		const uint8_t *f = pl->flags[slot] + k * CT_IMAGE_PAGES_CHUNK_PAGES;
		bool whole = true;

		if (__atomic_load_n(&pl->consumed, __ATOMIC_ACQUIRE) >= i)
			break; /* the writer waits for this window: hand it over as it is */
		for (size_t j = 0; j < CT_IMAGE_PAGES_CHUNK_PAGES && whole; j++)
			whole = !(f[j] & CT_PAGE_ABSENT) && !(file && (f[j] & CT_PAGE_FILE));
		if (!whole)
			continue;
		pl->xxh3[slot][k] = hash_xxh3(pl->buf[slot] + k * CHUNK_BYTES, CHUNK_BYTES);
		pl->has[slot][k] = true;
	}
}

static void *pipeline_reader(void *arg)
{
	struct pipeline *pl = arg;

	for (size_t i = 0; i < pl->w->n; i++) {
		const struct win *w = &pl->w->v[i];
		int slot = (int)(i % 2), r;

		pthread_mutex_lock(&pl->lock);
		while (!pl->stop && i - pl->consumed >= 2)
			pthread_cond_wait(&pl->cond, &pl->lock);
		pthread_mutex_unlock(&pl->lock);
		if (pl->stop)
			break;
		if (!w->skip_absent)
			memset(pl->flags[slot], 0, w->len / CT_PAGE_SIZE);
		r = ct_mem_read(pl->mem, w->addr, w->len, pl->buf[slot], w->skip_absent,
				pl->flags[slot]);
		if (r >= 0)
			hash_chunks(pl, w, i, slot);
		else
			memset(pl->has[slot], 0, sizeof(pl->has[slot]));
		pthread_mutex_lock(&pl->lock);
		pl->r[slot] = r;
		pl->filled = i + 1;
		pthread_cond_broadcast(&pl->cond);
		pthread_mutex_unlock(&pl->lock);
	}
	return NULL;
}

static int dump_windows(struct dumper *d, struct dproc *p, const struct ct_mem *mem,
			struct ct_image_pages_writer *pw, const struct wins *w, uint64_t *pages)
{
	struct pipeline pl = {.mem = mem, .w = w};
	pthread_t th;
	int r = 0;

	if (w->n == 0)
		return 0;
	for (int i = 0; i < 2; i++) {
		pl.buf[i] = malloc(MEM_WINDOW);
		pl.flags[i] = malloc(MEM_WINDOW / CT_PAGE_SIZE);
	}
	if (!pl.buf[0] || !pl.buf[1] || !pl.flags[0] || !pl.flags[1]) {
		r = -ENOMEM;
		goto out;
	}
	pthread_mutex_init(&pl.lock, NULL);
	pthread_cond_init(&pl.cond, NULL);
	if (pthread_create(&th, NULL, pipeline_reader, &pl) != 0) {
		r = -EAGAIN;
		goto out_sync;
	}
	for (size_t i = 0; i < w->n && r >= 0; i++) {
		const struct win *x = &w->v[i];
		int slot = (int)(i % 2);

		pthread_mutex_lock(&pl.lock);
		while (pl.filled <= i)
			pthread_cond_wait(&pl.cond, &pl.lock);
		pthread_mutex_unlock(&pl.lock);
		r = pl.r[slot];
		if (r < 0)
			r = dump_fail(d, r, "pid %d: reading memory at %#" PRIx64 ": %s",
				      (int)p->pid, x->addr, strerror(-r));
		else {
			struct ct_image_chunk_hashes h = {
				.base = pl.buf[slot],
				.xxh3 = pl.xxh3[slot],
				.has = pl.has[slot],
				.n = WIN_CHUNKS,
			};

			r = add_window(pw, x->addr, pl.buf[slot], pl.flags[slot],
				       x->len / CT_PAGE_SIZE, x->file && x->skip_absent, &h, pages);
		}
		pthread_mutex_lock(&pl.lock);
		__atomic_store_n(&pl.consumed, i + 1, __ATOMIC_RELEASE);
		pl.stop = r < 0;
		pthread_cond_broadcast(&pl.cond);
		pthread_mutex_unlock(&pl.lock);
	}
	pthread_join(th, NULL);
out_sync:
	pthread_cond_destroy(&pl.cond);
	pthread_mutex_destroy(&pl.lock);
out:
	for (int i = 0; i < 2; i++) {
		free(pl.buf[i]);
		free(pl.flags[i]);
	}
	return r;
}

/* Straight into the image: where the pages file was reserved and mapped (uncompressed, tmpfs),
 * workers read each window with process_vm_readv into the file itself, leave out the pages that
 * are not stored by moving the rest down, and checksum the chunks while they are in the cache:
 * one copy of the memory instead of two (read into a buffer, then write()).
 *
 * The windows' places in the file depend on how many pages the earlier ones stored, which is
 * known only once they are read. A window whose predecessors are all recorded goes where the
 * data ends; one taken while its predecessor is still being read goes after the whole of the
 * predecessor's room, and is moved down when recorded if the predecessor stored less. Windows
 * are recorded in address order, under the lock, as they complete. */
#define DIRECT_SLOTS_PER_WORKER 2
#define WIN_PAGES		(MEM_WINDOW / CT_PAGE_SIZE)

struct dslot {
	uint64_t off;  /* payload offset the window was read to */
	size_t stored; /* pages kept, moved down to off */
	bool done;
	int r;
	uint8_t flags[WIN_PAGES], kind[WIN_PAGES];
	uint64_t xxh3[WIN_CHUNKS];
};

struct direct {
	struct dumper *d;
	struct dproc *p;
	const struct ct_mem *mem;
	struct ct_image_pages_writer *pw;
	const struct wins *w;
	uint8_t *base; /* payload offset 0 */
	struct dslot *slots;
	size_t n_slots;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	size_t next, recorded; /* windows taken, windows recorded */
	uint64_t end;	       /* payload offset past the last taken window's room */
	uint64_t pages;
	int r;
};

/* Reads window x to base + off, keeps its stored pages (moved down, in order) and checksums
 * them by chunk. Each 1 MiB piece is read to where the window's stored pages end so far. */
static int direct_read(struct direct *D, const struct win *x, struct dslot *s)
{
	uint8_t *dst = D->base + s->off;
	bool file = x->file && x->skip_absent;
	size_t n_pages = x->len / CT_PAGE_SIZE, stored = 0, hashed = 0;

	for (size_t i = 0; i < n_pages; i += CT_IMAGE_PAGES_CHUNK_PAGES) {
		size_t n = MIN(n_pages - i, (size_t)CT_IMAGE_PAGES_CHUNK_PAGES);
		uint8_t *piece = dst + stored * CT_PAGE_SIZE;
		int r = ct_mem_read(D->mem, x->addr + i * CT_PAGE_SIZE, n * CT_PAGE_SIZE, piece,
				    x->skip_absent, s->flags + i);

		if (r < 0)
			return r;
		for (size_t j = 0; j < n; j++) {
			uint8_t f = s->flags[i + j];

			if ((f & CT_PAGE_ABSENT) || (file && (f & CT_PAGE_FILE)))
				s->kind[i + j] = CT_IMAGE_PLACED_SKIP;
			else if (f & CT_PAGE_ZERO)
				s->kind[i + j] = CT_IMAGE_PLACED_ZERO;
			else {
				s->kind[i + j] = CT_IMAGE_PLACED_DATA;
				if (dst + stored * CT_PAGE_SIZE != piece + j * CT_PAGE_SIZE)
					memmove(dst + stored * CT_PAGE_SIZE,
						piece + j * CT_PAGE_SIZE, CT_PAGE_SIZE);
				stored++;
			}
		}
		/* Whole chunks now, while they are in the cache; the short last one below. */
		for (; stored - hashed >= CT_IMAGE_PAGES_CHUNK_PAGES;
		     hashed += CT_IMAGE_PAGES_CHUNK_PAGES)
			s->xxh3[hashed / CT_IMAGE_PAGES_CHUNK_PAGES] =
				hash_xxh3(dst + hashed * CT_PAGE_SIZE, CHUNK_BYTES);
	}
	if (stored > hashed)
		s->xxh3[hashed / CT_IMAGE_PAGES_CHUNK_PAGES] =
			hash_xxh3(dst + hashed * CT_PAGE_SIZE, (stored - hashed) * CT_PAGE_SIZE);
	s->stored = stored;
	return 0;
}

/* Under the lock: records window i, which is complete, at the end of the data. */
static int direct_record(struct direct *D, size_t i)
{
	const struct win *x = &D->w->v[i];
	struct dslot *s = &D->slots[i % D->n_slots];
	uint64_t at = ct_image_pages_writer_offset(D->pw);
	size_t n_pages = x->len / CT_PAGE_SIZE;
	int r = s->r;

	if (r < 0)
		return dump_fail(D->d, r, "pid %d: reading memory at %#" PRIx64 ": %s",
				 (int)D->p->pid, x->addr, strerror(-r));
	if (s->off != at)
		memmove(D->base + at, D->base + s->off, s->stored * CT_PAGE_SIZE);
	r = ct_image_pages_writer_add_placed(D->pw, x->addr, s->kind, n_pages, s->xxh3, WIN_CHUNKS);
	if (r < 0)
		return r;
	for (size_t j = 0; j < n_pages; j++)
		D->pages += s->kind[j] != CT_IMAGE_PLACED_SKIP;
	return 0;
}

static void *direct_worker(void *arg)
{
	struct direct *D = arg;

	pthread_mutex_lock(&D->lock);
	for (;;) {
		struct dslot *s;
		size_t i;
		int r;

		while (D->r >= 0 && D->next < D->w->n && D->next - D->recorded >= D->n_slots)
			pthread_cond_wait(&D->cond, &D->lock);
		if (D->r < 0 || D->next >= D->w->n)
			break;
		i = D->next++;
		s = &D->slots[i % D->n_slots];
		s->off = i == D->recorded ? ct_image_pages_writer_offset(D->pw) : D->end;
		s->done = false;
		D->end = s->off + D->w->v[i].len;
		pthread_mutex_unlock(&D->lock);

		r = direct_read(D, &D->w->v[i], s);

		pthread_mutex_lock(&D->lock);
		s->r = r;
		s->done = true;
		while (D->r >= 0 && D->recorded < D->next &&
		       D->slots[D->recorded % D->n_slots].done) {
			r = direct_record(D, D->recorded);
			if (r < 0)
				D->r = r;
			else
				D->recorded++;
		}
		pthread_cond_broadcast(&D->cond);
	}
	pthread_mutex_unlock(&D->lock);
	return NULL;
}

/* -EOPNOTSUPP when the pages writer has no mapping: dump_windows() then. */
static int dump_windows_direct(struct dumper *d, struct dproc *p, const struct ct_mem *mem,
			       struct ct_image_pages_writer *pw, const struct wins *w,
			       uint64_t *pages)
{
	struct direct D = {.d = d, .p = p, .mem = mem, .pw = pw, .w = w};
	unsigned n = ct_mem_threads(d->o->n_threads), started = 0;
	_cleanup_free_ pthread_t *th = NULL;
	uint64_t need = 0;
	int r;

	if (d->o->no_direct)
		return -EOPNOTSUPP;
	for (size_t i = 0; i < w->n; i++)
		need += w->v[i].len;
	r = ct_image_pages_writer_map(pw, need, &D.base);
	if (r < 0) {
		if (r != -EOPNOTSUPP)
			log_debug_errno(r, "pid %d: pages go through write(): mapping failed: %m",
					(int)p->pid);
		return -EOPNOTSUPP;
	}
	n = (unsigned)MIN((size_t)n, MAX(w->n, (size_t)1));
	D.n_slots = (size_t)n * DIRECT_SLOTS_PER_WORKER;
	D.slots = calloc(D.n_slots, sizeof(*D.slots));
	th = calloc(n, sizeof(*th));
	if (!D.slots || !th) {
		free(D.slots);
		return -ENOMEM;
	}
	pthread_mutex_init(&D.lock, NULL);
	pthread_cond_init(&D.cond, NULL);
	for (; started + 1 < n; started++)
		if (pthread_create(&th[started], NULL, direct_worker, &D) != 0)
			break; /* the others, and this thread, do all the work */
	direct_worker(&D);
	for (unsigned i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	pthread_cond_destroy(&D.cond);
	pthread_mutex_destroy(&D.lock);
	free(D.slots);
	*pages += D.pages;
	d->stats->direct_pages += D.pages;
	return D.r;
}

int dump_memory(struct dumper *d, struct ct_image_writer *w, struct dproc *p)
{
	_cleanup_(ct_image_pages_writer_freep) struct ct_image_pages_writer *pw = NULL;
	struct wins wins = {};
	struct guards guards = {};
	struct ct_mem mem;
	uint64_t pages = 0;
	bool any = false, scan = true;
	int r = 0;

	for (size_t i = 0; i < p->mm.n_vmas; i++)
		any = any || p->mm.vmas[i].pages == CT_IMAGE_VMA_PAGES_PRIVATE;
	if (!any)
		return 0;
	r = ct_mem_open(p->hpid, &mem);
	if (r < 0)
		return dump_fail(d, r, "pid %d: cannot open its memory: %s", (int)p->pid,
				 strerror(-r));
	for (size_t i = 0; r >= 0 && i < p->mm.n_vmas; i++) {
		const struct ct_image_vma *v = &p->mm.vmas[i];

		if (v->pages != CT_IMAGE_VMA_PAGES_PRIVATE)
			continue;
		if (scan) {
			r = scan_vma(&mem, v, &wins, &guards);
			if (r != -ENOTTY)
				continue;
			scan = false; /* an older kernel: pagemap, page by page */
		}
		r = wins_add(&wins, v->start, v->end, v->kind == CT_IMAGE_VMA_FILE_PRIVATE, true);
	}
	if (r < 0)
		r = dump_fail(d, r, "pid %d: finding its populated memory: %s", (int)p->pid,
			      strerror(-r));
	if (r >= 0)
		r = ct_image_writer_pages_begin(w, false, (uint64_t)p->pid, &pw);
	if (r >= 0) {
		r = dump_windows_direct(d, p, &mem, pw, &wins, &pages);
		if (r == -EOPNOTSUPP)
			r = dump_windows(d, p, &mem, pw, &wins, &pages);
	}
	ct_mem_close(&mem);
	free(wins.v);
	p->mm.guards = guards.v;
	p->mm.n_guards = guards.n;
	if (r >= 0)
		r = ct_image_pages_writer_finish(TAKE_PTR(pw));
	d->stats->pages += pages;
	return r;
}

/* A System V segment's contents, read through our attachment. Pages never touched are not
 * in its page cache: mincore() skips them, unless some of the namespace's shared memory is in
 * swap, which mincore() cannot tell from never touched; then every page is read (a hole read
 * through a shared mapping gets a page of its own). */
static int dump_sysv_contents(struct dumper *d, struct ct_image_writer *w, const struct dsysv *s)
{
	_cleanup_(ct_image_pages_writer_freep) struct ct_image_pages_writer *pw = NULL;
	_cleanup_free_ unsigned char *vec = NULL;
	size_t pages = (s->size + CT_PAGE_SIZE - 1) / CT_PAGE_SIZE;
	const uint8_t *base = s->addr;
	int r;

	r = ct_image_writer_pages_begin(w, true, CT_IMAGE_SYSV_SHM_OWNER(s->id), &pw);
	if (r < 0)
		return r;
	vec = malloc(MAX(pages, (size_t)1));
	if (!vec)
		return -ENOMEM;
	if (d->sysv_swapped || mincore(s->addr, pages * CT_PAGE_SIZE, vec) < 0)
		memset(vec, 1, pages);
	for (size_t i = 0; i < pages;) {
		size_t n = 0;

		if (!(vec[i] & 1)) {
			i++;
			continue;
		}
		while (i + n < pages && (vec[i + n] & 1) && n < MEM_WINDOW / CT_PAGE_SIZE)
			n++;
		/* The last page may be partial: the rest of it reads as zeros. */
		r = ct_image_pages_writer_add(pw, (uint64_t)i * CT_PAGE_SIZE,
					      base + i * CT_PAGE_SIZE, n);
		if (r < 0)
			return dump_fail(d, r, "System V shared memory %u: writing it failed: %s",
					 s->id, strerror(-r));
		d->stats->pages += n;
		i += n;
	}
	return ct_image_pages_writer_finish(TAKE_PTR(pw));
}

int dump_shm_contents(struct dumper *d, struct ct_image_writer *w)
{
	_cleanup_free_ uint8_t *buf = malloc(MEM_WINDOW);

	if (!buf)
		return -ENOMEM;
	for (size_t i = 0; i < d->n_shms; i++) {
		_cleanup_(ct_image_pages_writer_freep) struct ct_image_pages_writer *pw = NULL;
		struct dshm *s = &d->shms[i];
		off_t off = 0;
		int r;

		r = ct_image_writer_pages_begin(w, true, s->ino, &pw);
		if (r < 0)
			return r;
		/* Holes were never written: they stay holes. */
		while ((uint64_t)off < s->size) {
			off_t data = lseek(s->fd, off, SEEK_DATA), hole;

			if (data < 0)
				break; /* ENXIO: no data after off */
			hole = lseek(s->fd, data, SEEK_HOLE);
			if (hole < 0)
				hole = (off_t)s->size;
			data &= ~(off_t)(CT_PAGE_SIZE - 1);
			for (off = data; off < hole;) {
				size_t len = (size_t)MIN((off_t)MEM_WINDOW, hole - off);
				ssize_t k;

				len = (len + CT_PAGE_SIZE - 1) & ~(size_t)(CT_PAGE_SIZE - 1);
				memset(buf, 0, len);
				k = pread(s->fd, buf, len, off);
				if (k < 0)
					return dump_fail(d, NEG_ERRNO(),
							 "shared memory %" PRIu64 ": read: %m",
							 s->ino);
				r = ct_image_pages_writer_add(pw, (uint64_t)off, buf,
							      len / CT_PAGE_SIZE);
				if (r < 0)
					return r;
				d->stats->pages += len / CT_PAGE_SIZE;
				off += (off_t)len;
			}
		}
		r = ct_image_pages_writer_finish(TAKE_PTR(pw));
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < d->n_sysv; i++) {
		int r = dump_sysv_contents(d, w, &d->sysv[i]);

		if (r < 0)
			return r;
	}
	return 0;
}
