/* Restore of memory: the helper's own mappings go, the vDSO moves to its dumped place, every
 * VMA is mapped at its old address and filled from the image; shared memory objects are memfds
 * made once and mapped by every process that shares them. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <fcntl.h>
#include <linux/prctl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "checkpoint/ct/fdblob-internal.h"
#include "checkpoint/ct/memory-internal.h"
#include "checkpoint/ct/ptrace-internal.h"
#include "checkpoint/ct/restore-internal.h"
#include "common/common.h"

#define TASK_SIZE_47 0x7ffffffff000UL

struct trio {
	unsigned long start[3], end[3]; /* vvar, vvar_vclock, vdso */
};

static int helper_trio(struct restorer *R, struct rproc *p, struct trio *ret)
{
	_cleanup_free_ char *text = NULL;
	char path[64];
	int r;

	snprintf(path, sizeof(path), "/proc/%d/maps", (int)p->hpid);
	r = read_full_file(path, 64 << 20, &text, NULL);
	if (r < 0)
		return restore_fail(R, r, "pid %u: reading its maps failed", p->img->task.pid);
	*ret = (struct trio){};
	for (char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
		unsigned long s, e;
		char *nl = strchr(l, '\n');
		int i = -1;

		if (sscanf(l, "%lx-%lx", &s, &e) != 2)
			continue;
		if (nl)
			*nl = 0;
		if (strstr(l, "[vvar_vclock]"))
			i = 1;
		else if (strstr(l, "[vvar]"))
			i = 0;
		else if (strstr(l, "[vdso]"))
			i = 2;
		if (nl)
			*nl = '\n';
		if (i >= 0)
			ret->start[i] = s, ret->end[i] = e;
	}
	if (!ret->start[2])
		return restore_fail(R, -ENOENT, "pid %u: the helper has no [vdso]",
				    p->img->task.pid);
	return 0;
}

static void image_trio(const struct ct_image_mm *mm, struct trio *ret)
{
	*ret = (struct trio){};
	for (size_t i = 0; i < mm->n_vmas; i++) {
		const struct ct_image_vma *v = &mm->vmas[i];
		int k = v->kind == CT_IMAGE_VMA_VVAR	      ? 0
			: v->kind == CT_IMAGE_VMA_VVAR_VCLOCK ? 1
			: v->kind == CT_IMAGE_VMA_VDSO	      ? 2
							      : -1;

		if (k >= 0)
			ret->start[k] = v->start, ret->end[k] = v->end;
	}
}

static unsigned long trio_lo(const struct trio *t)
{
	unsigned long lo = ~0UL;

	for (int i = 0; i < 3; i++)
		if (t->start[i])
			lo = MIN(lo, t->start[i]);
	return lo;
}

static unsigned long trio_hi(const struct trio *t)
{
	unsigned long hi = 0;

	for (int i = 0; i < 3; i++)
		hi = MAX(hi, t->end[i]);
	return hi;
}

/* Moves the three areas by delta, keeping their offsets; the syscall site moves along. */
static int move_trio(struct restorer *R, struct rproc *p, struct trio *cur, long delta)
{
	for (int i = 0; i < 3; i++) {
		int r;

		if (!cur->start[i])
			continue;
		r = restore_call(R, p, p->hpid, "mremap of the vDSO", SYS_mremap,
				 (long)cur->start[i], (long)(cur->end[i] - cur->start[i]),
				 (long)(cur->end[i] - cur->start[i]), MREMAP_MAYMOVE | MREMAP_FIXED,
				 (long)(cur->start[i] + (unsigned long)delta), 0, NULL);
		if (r < 0)
			return r;
		if (i == 2)
			p->site += (unsigned long)delta;
		cur->start[i] += (unsigned long)delta;
		cur->end[i] += (unsigned long)delta;
	}
	return 0;
}

static bool overlaps(unsigned long a0, unsigned long a1, unsigned long b0, unsigned long b1)
{
	return a0 < b1 && b0 < a1;
}

static int place_vdso(struct restorer *R, struct rproc *p)
{
	struct trio cur, want;
	unsigned long lo, hi, wlo, whi;
	int r;

	r = helper_trio(R, p, &cur);
	if (r < 0)
		return r;
	image_trio(&p->img->mm, &want);
	lo = trio_lo(&cur), hi = trio_hi(&cur);
	/* Everything of the helper but the vDSO goes. */
	if (lo > 0)
		r = restore_call(R, p, p->hpid, "munmap", SYS_munmap, 0, (long)lo, 0, 0, 0, 0,
				 NULL);
	if (r >= 0 && hi < TASK_SIZE_47)
		r = restore_call(R, p, p->hpid, "munmap", SYS_munmap, (long)hi,
				 (long)(TASK_SIZE_47 - hi), 0, 0, 0, 0, NULL);
	if (r < 0 || !want.start[2])
		return r;
	wlo = trio_lo(&want), whi = trio_hi(&want);
	if (wlo - lo == want.start[2] - cur.start[2] && wlo == lo)
		return 0;
	if (overlaps(lo, hi, wlo, whi)) {
		unsigned long tmp = 0x100000000000UL;

		if (overlaps(tmp, tmp + (hi - lo), wlo, whi))
			tmp = 0x200000000000UL;
		r = move_trio(R, p, &cur, (long)(tmp - lo));
		if (r < 0)
			return r;
		lo = tmp;
	}
	return move_trio(R, p, &cur, (long)(wlo - lo));
}

/* A free range for the scratch area: the first gap large enough, from the bottom. */
static unsigned long find_gap(const struct ct_image_mm *mm, size_t size)
{
	unsigned long prev = 0x100000UL;

	for (size_t i = 0; i < mm->n_vmas; i++) {
		if (mm->vmas[i].start >= prev + size + 2 * CT_PAGE_SIZE)
			return prev + CT_PAGE_SIZE;
		prev = MAX(prev, mm->vmas[i].end);
	}
	return prev + CT_PAGE_SIZE;
}

static int open_in_task(struct restorer *R, struct rproc *p, const char *path, int flags,
			long *ret_fd)
{
	int r = restore_poke(R, p, p->scratch, path, strlen(path) + 1);

	if (r < 0)
		return r;
	r = restore_call(R, p, p->hpid, "open", SYS_openat, AT_FDCWD, (long)p->scratch,
			 flags | O_CLOEXEC, 0, 0, 0, ret_fd);
	if (r < 0)
		return restore_fail(R, r, "pid %u: cannot open %s", p->img->task.pid, path);
	return 0;
}

#ifndef MAP_DROPPABLE
#define MAP_DROPPABLE 0x08 /* Linux 6.11 */
#endif
#ifndef SYS_mseal
#define SYS_mseal 462 /* Linux 6.10, the same number on every architecture */
#endif

/* The madvise() state of a VMA just mapped. Transparent huge pages and KSM are optional in a
 * kernel: where this one lacks them the hint is dropped with a warning, as nothing a program
 * computes depends on it. */
static int advise_vma(struct restorer *R, struct rproc *p, const struct ct_image_vma *v)
{
	static const struct {
		uint32_t adv;
		int madv;
		const char *what;
		bool optional;
	} advice[] = {
		{CT_IMAGE_ADV_DONTFORK, MADV_DONTFORK, "madvise(MADV_DONTFORK)", false},
		{CT_IMAGE_ADV_WIPEONFORK, MADV_WIPEONFORK, "madvise(MADV_WIPEONFORK)", false},
		{CT_IMAGE_ADV_DONTDUMP, MADV_DONTDUMP, "madvise(MADV_DONTDUMP)", false},
		{CT_IMAGE_ADV_HUGEPAGE, MADV_HUGEPAGE, "madvise(MADV_HUGEPAGE)", true},
		{CT_IMAGE_ADV_NOHUGEPAGE, MADV_NOHUGEPAGE, "madvise(MADV_NOHUGEPAGE)", true},
		{CT_IMAGE_ADV_MERGEABLE, MADV_MERGEABLE, "madvise(MADV_MERGEABLE)", true},
	};

	for (size_t i = 0; i < ELEMENTSOF(advice); i++) {
		int r;

		if (!(v->advice & advice[i].adv))
			continue;
		r = restore_call(R, p, p->hpid, advice[i].what, SYS_madvise, (long)v->start,
				 (long)(v->end - v->start), advice[i].madv, 0, 0, 0, NULL);
		if (r == -EINVAL && advice[i].optional) {
			log_warning("%s: pid %u: %s of %#" PRIx64 "-%#" PRIx64
				    " is not supported by this kernel; restored without it",
				    R->o->name, p->img->task.pid, advice[i].what, v->start, v->end);
			R->err[0] = 0;
		} else if (r < 0)
			return r;
	}
	return 0;
}

/* Locks and seals, once the memory is in place: mlock() would fault in pages the fill is to
 * provide, and a sealed VMA can no longer be changed. */
static int lock_and_seal(struct restorer *R, struct rproc *p)
{
	const struct ct_image_mm *mm = &p->img->mm;
	int r = 0;

	for (size_t i = 0; r >= 0 && i < mm->n_vmas; i++) {
		const struct ct_image_vma *v = &mm->vmas[i];

		if (v->advice & CT_IMAGE_ADV_LOCKED)
			r = restore_call(R, p, p->hpid, "mlock2", SYS_mlock2, (long)v->start,
					 (long)(v->end - v->start),
					 v->advice & CT_IMAGE_ADV_LOCKONFAULT ? MLOCK_ONFAULT : 0,
					 0, 0, 0, NULL);
	}
	for (size_t i = 0; r >= 0 && i < mm->n_vmas; i++) {
		const struct ct_image_vma *v = &mm->vmas[i];

		if (v->advice & CT_IMAGE_ADV_SEALED)
			r = restore_call(R, p, p->hpid, "mseal (Linux 6.10 or later)", SYS_mseal,
					 (long)v->start, (long)(v->end - v->start), 0, 0, 0, 0,
					 NULL);
	}
	return r;
}

static int map_vmas(struct restorer *R, struct rproc *p)
{
	const struct ct_image_mm *mm = &p->img->mm;
	_cleanup_free_ struct restore_batch *b = malloc(sizeof(*b));
	const char *open_path = NULL;
	int open_flags = -1;
	long fd = -1;
	int r = 0;

	if (!b)
		return -ENOMEM;
	restore_batch_init(b, p, p->hpid);
	for (size_t i = 0; r >= 0 && i < mm->n_vmas; i++) {
		const struct ct_image_vma *v = &mm->vmas[i];
		long len = (long)(v->end - v->start);

		switch (v->kind) {
		case CT_IMAGE_VMA_VVAR:
		case CT_IMAGE_VMA_VVAR_VCLOCK:
		case CT_IMAGE_VMA_VDSO:
			break;
		case CT_IMAGE_VMA_ANON_PRIVATE:
		case CT_IMAGE_VMA_HEAP:
		case CT_IMAGE_VMA_STACK:
			r = restore_batch_add(
				R, b, "mmap", SYS_mmap, (long)v->start, len, v->prot,
				(v->advice & CT_IMAGE_ADV_DROPPABLE ? MAP_DROPPABLE : MAP_PRIVATE) |
					MAP_ANONYMOUS | MAP_FIXED |
					(v->flags & (MAP_GROWSDOWN | MAP_NORESERVE)),
				-1, 0);
			break;
		case CT_IMAGE_VMA_FILE_PRIVATE:
		case CT_IMAGE_VMA_FILE_SHARED: {
			bool rw = v->kind == CT_IMAGE_VMA_FILE_SHARED && (v->prot & PROT_WRITE);
			int flags = rw ? O_RDWR : O_RDONLY;

			if (!open_path || !streq(open_path, v->path) || open_flags != flags) {
				if (fd >= 0)
					r = restore_batch_add(R, b, "close", SYS_close, fd, 0, 0, 0,
							      0, 0);
				fd = -1;
				if (r >= 0)
					r = restore_batch_flush(R, b);
				if (r >= 0)
					r = open_in_task(R, p, v->path, flags, &fd);
				if (r < 0)
					break;
				open_path = v->path;
				open_flags = flags;
			}
			r = restore_batch_add(
				R, b, "mmap of a file", SYS_mmap, (long)v->start, len, v->prot,
				(v->kind == CT_IMAGE_VMA_FILE_SHARED ? MAP_SHARED : MAP_PRIVATE) |
					MAP_FIXED | (v->flags & MAP_NORESERVE),
				fd, (long)(v->pgoff * CT_PAGE_SIZE));
			break;
		}
		case CT_IMAGE_VMA_ANON_SHARED: {
			int ours = restore_shm_fd(R, v->shmid);
			int tmp = R->chan_fd + 1;

			r = restore_batch_flush(R, b);
			if (r < 0)
				break;
			if (ours < 0) {
				r = restore_fail(R, -ENOENT,
						 "pid %u: no shared memory object %" PRIu64,
						 p->img->task.pid, v->shmid);
				break;
			}
			r = restore_install_fd(R, p, ours, tmp, true);
			if (r >= 0)
				r = restore_call(R, p, p->hpid, "mmap of shared memory", SYS_mmap,
						 (long)v->start, len, v->prot,
						 MAP_SHARED | MAP_FIXED, tmp,
						 (long)(v->pgoff * CT_PAGE_SIZE), NULL);
			if (r >= 0)
				r = restore_call(R, p, p->hpid, "close", SYS_close, tmp, 0, 0, 0, 0,
						 0, NULL);
			break;
		}
		case CT_IMAGE_VMA_SYSV_SHM: {
			/* shmat() gives read, write unless read-only, exec with SHM_EXEC: anything
			 * else (PROT_NONE, say) is set after. */
			int shmflg = SHM_REMAP | (v->prot & PROT_WRITE ? 0 : SHM_RDONLY) |
				     (v->prot & PROT_EXEC ? SHM_EXEC : 0);
			unsigned prot = PROT_READ | (v->prot & (PROT_WRITE | PROT_EXEC));
			long at = 0;

			r = restore_batch_flush(R, b);
			if (r >= 0)
				r = restore_call(R, p, p->hpid, "shmat", SYS_shmat, (long)v->shmid,
						 (long)v->start, shmflg, 0, 0, 0, &at);
			if (r >= 0 && (uint64_t)at != v->start)
				r = restore_fail(R, -EADDRNOTAVAIL,
						 "pid %u: System V shared memory %" PRIu64
						 " attached at %#lx",
						 p->img->task.pid, v->shmid, (unsigned long)at);
			if (r >= 0 && prot != v->prot)
				r = restore_call(R, p, p->hpid, "mprotect", SYS_mprotect,
						 (long)v->start, len, v->prot, 0, 0, 0, NULL);
			break;
		}
		default:
			r = restore_fail(R, -EINVAL, "pid %u: unknown mapping kind %u",
					 p->img->task.pid, v->kind);
		}
		if (r >= 0 && v->advice && (r = restore_batch_flush(R, b)) >= 0)
			r = advise_vma(R, p, v);
		if (r < 0)
			restore_fail(R, r, "pid %u: mapping %#" PRIx64 "-%#" PRIx64 " failed",
				     p->img->task.pid, v->start, v->end);
	}
	if (r >= 0 && fd >= 0)
		r = restore_batch_add(R, b, "close", SYS_close, fd, 0, 0, 0, 0, 0);
	if (r >= 0)
		r = restore_batch_flush(R, b);
	return r;
}

/* Anonymous private memory is filled with UFFDIO_COPY: the kernel allocates each page and
 * copies the image's bytes into it, where a write through /proc/PID/mem first clears the new
 * page, then copies one page at a time through a bounce buffer (UFFDIO_COPY is 1.7-2x as
 * fast here). The userfaultfd is the task's own (made by an injected syscall, taken with
 * pidfd_getfd, its number in the task closed at once); every VMA registered is unregistered
 * before anything else happens to the task. Pages nobody registered (file mappings, or a
 * kernel without userfaultfd) go through /proc/PID/mem. */
struct uffd_fill {
	int fd;
	const struct ct_image_mm *mm;
	bool *registered; /* per VMA of mm */
};

static bool anon_private(const struct ct_image_vma *v)
{
	return v->kind == CT_IMAGE_VMA_ANON_PRIVATE || v->kind == CT_IMAGE_VMA_HEAP ||
	       v->kind == CT_IMAGE_VMA_STACK;
}

static void uffd_done(struct uffd_fill *u)
{
	if (u->fd >= 0 && u->registered)
		for (size_t i = 0; i < u->mm->n_vmas; i++) {
			const struct ct_image_vma *v = &u->mm->vmas[i];
			struct uffdio_range range = {.start = v->start, .len = v->end - v->start};

			if (u->registered[i] && ioctl(u->fd, UFFDIO_UNREGISTER, &range) < 0)
				log_debug_errno(errno, "UFFDIO_UNREGISTER %#" PRIx64 ": %m",
						v->start);
		}
	u->fd = safe_close(u->fd);
	free(u->registered);
	u->registered = NULL;
}

/* Best effort: without it every page goes through /proc/PID/mem. */
static void uffd_setup(struct restorer *R, struct rproc *p, struct uffd_fill *u)
{
	struct uffdio_api api = {.api = UFFD_API};
	_cleanup_close_ int pidfd = -EBADF;
	long tfd = -1;
	size_t n = 0;

	*u = (struct uffd_fill){.fd = -EBADF, .mm = &p->img->mm};
	for (size_t i = 0; i < u->mm->n_vmas; i++)
		n += anon_private(&u->mm->vmas[i]);
	if (n == 0)
		return;
	if (restore_call(R, p, p->hpid, "userfaultfd", SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK, 0,
			 0, 0, 0, 0, &tfd) < 0) {
		log_debug("pid %u: no userfaultfd (%s); memory goes through /proc/PID/mem",
			  p->img->task.pid, R->err);
		R->err[0] = 0;
		return;
	}
	pidfd = (int)syscall(SYS_pidfd_open, p->hpid, 0);
	if (pidfd >= 0)
		u->fd = (int)syscall(SYS_pidfd_getfd, pidfd, (int)tfd, 0);
	if (u->fd < 0)
		log_debug_errno(errno, "pid %u: pidfd_getfd of its userfaultfd: %m",
				p->img->task.pid);
	(void)restore_call(R, p, p->hpid, "close", SYS_close, tfd, 0, 0, 0, 0, 0, NULL);
	R->err[0] = 0;
	if (u->fd < 0)
		return;
	if (ioctl(u->fd, UFFDIO_API, &api) < 0) {
		log_debug_errno(errno, "UFFDIO_API: %m");
		u->fd = safe_close(u->fd);
		return;
	}
	u->registered = calloc(u->mm->n_vmas, sizeof(bool));
	if (!u->registered) {
		u->fd = safe_close(u->fd);
		return;
	}
	for (size_t i = 0; i < u->mm->n_vmas; i++) {
		const struct ct_image_vma *v = &u->mm->vmas[i];
		struct uffdio_register reg = {
			.range = {.start = v->start, .len = v->end - v->start},
			.mode = UFFDIO_REGISTER_MODE_MISSING};

		if (!anon_private(v))
			continue;
		if (ioctl(u->fd, UFFDIO_REGISTER, &reg) == 0)
			u->registered[i] = true;
		else
			log_debug_errno(errno,
					"pid %u: UFFDIO_REGISTER %#" PRIx64 "-%#" PRIx64 ": %m",
					p->img->task.pid, v->start, v->end);
	}
}

/* The index of the VMA holding addr, or SIZE_MAX (VMAs are sorted and do not overlap). */
static size_t vma_at(const struct ct_image_mm *mm, uint64_t addr)
{
	size_t lo = 0, hi = mm->n_vmas;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (mm->vmas[mid].end <= addr)
			lo = mid + 1;
		else if (mm->vmas[mid].start > addr)
			hi = mid;
		else
			return mid;
	}
	return SIZE_MAX;
}

/* UFFDIO_COPY of [addr, addr + len); the bytes it could not place are left to the caller. */
static size_t uffd_copy(int fd, uint64_t addr, const uint8_t *src, size_t len)
{
	size_t done = 0;

	while (done < len) {
		struct uffdio_copy c = {
			.dst = addr + done, .src = (uintptr_t)(src + done), .len = len - done};

		if (ioctl(fd, UFFDIO_COPY, &c) == 0) {
			done += len - done;
			break;
		}
		if (c.copy > 0)
			done += (size_t)c.copy;
		else if (errno != EAGAIN)
			break; /* EEXIST (a page is already there) or a kernel refusal */
	}
	return done;
}

struct fill {
	struct ct_mem *mem;
	const struct uffd_fill *uffd;
	struct ct_image *img;
	struct ct_image_pages part; /* a slice of the runs, sharing the rest */
	uint64_t pages, copied;	    /* copied: by UFFDIO_COPY */
	int r;
	char err[CT_IMAGE_ERROR_MAX];
};

static int fill_cb(uint64_t addr, const void *data, size_t n_pages, void *userdata)
{
	struct fill *f = userdata;
	const uint8_t *src = data;
	uint64_t end = addr + n_pages * CT_PAGE_SIZE;

	if (!data)
		return 0; /* fresh mappings read as zero already */
	f->pages += n_pages;
	while (addr < end) {
		size_t i = f->uffd->fd >= 0 ? vma_at(f->uffd->mm, addr) : SIZE_MAX;
		uint64_t stop = end;
		size_t done = 0;
		int r;

		if (i != SIZE_MAX) {
			stop = MIN(end, f->uffd->mm->vmas[i].end);
			if (f->uffd->registered[i])
				done = uffd_copy(f->uffd->fd, addr, src, stop - addr);
			f->copied += done / CT_PAGE_SIZE;
		}
		if (done < stop - addr) {
			r = ct_mem_write(f->mem, addr + done, src + done, stop - addr - done);
			if (r < 0)
				return r;
		}
		src += stop - addr;
		addr = stop;
	}
	return 0;
}

static void *fill_thread(void *arg)
{
	struct fill *f = arg;

	f->err[0] = 0;
	f->r = ct_image_pages_read(f->img, &f->part, f->err, fill_cb, f);
	return NULL;
}

/* Page contents, the runs split over threads by data pages (each thread reads and verifies
 * its own chunks; from a mapped file, the kernel copies them from the page cache). */
static int fill_memory(struct restorer *R, struct rproc *p)
{
	const struct ct_image_pages *pg = p->img->pages;
	unsigned n = ct_mem_threads(R->o->n_threads);
	struct fill parts[8];
	pthread_t th[8];
	bool started[8] = {};
	struct uffd_fill uffd;
	struct ct_mem mem;
	uint64_t per, acc = 0, copied = 0;
	size_t first = 0;
	int r;

	n = MIN(n, 8u);
	if (pg->n_data_pages < 4096)
		n = 1; /* below 16 MiB a thread costs more than it saves */
	r = ct_mem_open(p->hpid, &mem);
	if (r < 0)
		return restore_fail(R, r, "pid %u: cannot open its memory", p->img->task.pid);
	uffd_setup(R, p, &uffd);
	per = pg->n_data_pages / n + 1;
	for (unsigned i = 0; i < n; i++) {
		size_t last = first;
		uint64_t want = (uint64_t)(i + 1) * per;

		/* Cut between chunks: two threads never read the same chunk. */
		while (last < pg->n_runs &&
		       (acc < want ||
			(last > first && pg->runs[last].chunk == pg->runs[last - 1].chunk &&
			 !(pg->runs[last].flags & CT_IMAGE_RUN_ZERO)))) {
			if (!(pg->runs[last].flags & CT_IMAGE_RUN_ZERO))
				acc += pg->runs[last].n_pages;
			last++;
		}
		if (i == n - 1)
			last = pg->n_runs;
		parts[i] = (struct fill){.mem = &mem, .uffd = &uffd, .img = R->img, .part = *pg};
		parts[i].part.runs = pg->runs + first;
		parts[i].part.n_runs = last - first;
		first = last;
	}
	for (unsigned i = 1; i < n; i++)
		started[i] = pthread_create(&th[i], NULL, fill_thread, &parts[i]) == 0;
	fill_thread(&parts[0]);
	for (unsigned i = 1; i < n; i++)
		if (started[i])
			pthread_join(th[i], NULL);
		else
			fill_thread(&parts[i]);
	uffd_done(&uffd);
	ct_mem_close(&mem);
	for (unsigned i = 0; i < n; i++) {
		R->stats->pages += parts[i].pages;
		copied += parts[i].copied;
		if (parts[i].r < 0)
			return restore_fail(R, parts[i].r, "pid %u: filling its memory failed: %s",
					    p->img->task.pid,
					    parts[i].err[0] ? parts[i].err : strerror(-parts[i].r));
	}
	if (pg->map) {
		char err[CT_IMAGE_ERROR_MAX];

		r = ct_image_pages_check_mapped(pg, err);
		if (r < 0)
			return restore_fail(R, r, "pid %u: %s", p->img->task.pid, err);
		R->stats->mapped_pages += pg->n_data_pages;
	}
	log_debug("pid %u: %" PRIu64 " pages by UFFDIO_COPY, %" PRIu64 " through /proc/PID/mem",
		  p->img->task.pid, copied, pg->n_data_pages - copied);
	return 0;
}

static int set_mm_map(struct restorer *R, struct rproc *p)
{
	const struct ct_image_mm *mm = &p->img->mm;
	struct prctl_mm_map map = {
		.start_code = mm->fields[0],
		.end_code = mm->fields[1],
		.start_data = mm->fields[2],
		.end_data = mm->fields[3],
		.start_brk = mm->fields[4],
		.brk = mm->fields[5],
		.start_stack = mm->fields[6],
		.arg_start = mm->fields[7],
		.arg_end = mm->fields[8],
		.env_start = mm->fields[9],
		.env_end = mm->fields[10],
		.auxv = (__u64 *)(p->scratch + 4096),
		.auxv_size = (uint32_t)(mm->n_auxv * 8),
		.exe_fd = (uint32_t)-1,
	};
	long exe = -1;
	int r;

	if (mm->n_auxv * 8 > 4096)
		return restore_fail(R, -E2BIG, "pid %u: auxv too large", p->img->task.pid);
	if (mm->exe && open_in_task(R, p, mm->exe, O_RDONLY, &exe) >= 0)
		map.exe_fd = (uint32_t)exe;
	R->err[0] = 0; /* an executable that cannot be opened only loses /proc/PID/exe */
	r = restore_poke(R, p, p->scratch + 4096, mm->auxv, mm->n_auxv * 8);
	if (r >= 0)
		r = restore_poke(R, p, p->scratch + 8192, &map, sizeof(map));
	if (r >= 0)
		r = restore_call(R, p, p->hpid, "prctl(PR_SET_MM_MAP)", SYS_prctl, PR_SET_MM,
				 PR_SET_MM_MAP, (long)(p->scratch + 8192), sizeof(map), 0, 0, NULL);
	if (exe >= 0)
		(void)restore_call(R, p, p->hpid, "close", SYS_close, exe, 0, 0, 0, 0, 0, NULL);
	return r;
}

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102 /* Linux 6.13 */
#endif

/* Guard regions once the memory is in place (installing one drops any page there). */
static int install_guards(struct restorer *R, struct rproc *p)
{
	const struct ct_image_mm *mm = &p->img->mm;
	int r = 0;

	for (size_t i = 0; r >= 0 && i < mm->n_guards; i++)
		r = restore_call(R, p, p->hpid, "madvise(MADV_GUARD_INSTALL) (Linux 6.13 or later)",
				 SYS_madvise, (long)mm->guards[2 * i],
				 (long)(mm->guards[2 * i + 1] - mm->guards[2 * i]),
				 MADV_GUARD_INSTALL, 0, 0, 0, NULL);
	return r;
}

/* The loop that runs batches of calls, in the scratch area's last page made executable (and
 * unmapped with the area). Best effort: without it each call is injected alone. */
static void setup_batches(struct restorer *R, struct rproc *p)
{
	unsigned long code = p->scratch + RESTORE_BATCH_CODE_OFF;

	if (restore_poke(R, p, code, ct_batch_code, sizeof(ct_batch_code)) >= 0 &&
	    restore_call(R, p, p->hpid, "mprotect of the scratch area", SYS_mprotect, (long)code,
			 RESTORE_SCRATCH_SIZE - RESTORE_BATCH_CODE_OFF, PROT_READ | PROT_EXEC, 0, 0,
			 0, NULL) >= 0)
		p->batch_code = code;
	else
		log_debug("pid %u: no batches of calls (%s)", p->img->task.pid, R->err);
	R->err[0] = 0;
}

int restore_mm(struct restorer *R, struct rproc *p)
{
	long addr;
	int r;

	r = place_vdso(R, p);
	if (r < 0)
		return r;
	r = restore_call(R, p, p->hpid, "mmap of the scratch area", SYS_mmap,
			 (long)find_gap(&p->img->mm, RESTORE_SCRATCH_SIZE), RESTORE_SCRATCH_SIZE,
			 PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
			 -1, 0, &addr);
	if (r < 0)
		return r;
	p->scratch = (unsigned long)addr;
	setup_batches(R, p);
	r = map_vmas(R, p);
	if (r < 0)
		return r;
	if (p->img->pages) {
		r = fill_memory(R, p);
		if (r < 0)
			return r;
	}
	r = install_guards(R, p);
	if (r < 0)
		return r;
	r = set_mm_map(R, p);
	if (r >= 0)
		r = lock_and_seal(R, p);
	if (r >= 0)
		p->mm_done = true;
	return r;
}

/* ---- shared memory objects ------------------------------------------------------------------ */

struct shm_fill {
	int fd;
	uint64_t pages;
};

static int shm_cb(uint64_t off, const void *data, size_t n_pages, void *userdata)
{
	struct shm_fill *f = userdata;
	size_t len = n_pages * CT_PAGE_SIZE, done = 0;

	if (!data)
		return 0;
	while (done < len) {
		ssize_t k = pwrite(f->fd, (const uint8_t *)data + done, len - done,
				   (off_t)(off + done));

		if (k <= 0)
			return k < 0 ? NEG_ERRNO() : -EIO;
		done += (size_t)k;
	}
	f->pages += n_pages;
	return 0;
}

/* The memfd record for shmid, if the object was a memfd (its name and seals). */
static const struct ct_image_fd *memfd_record(struct restorer *R, uint64_t shmid)
{
	for (size_t i = 0; i < R->img->n_procs; i++)
		for (size_t j = 0; j < R->img->procs[i].fds.n_fds; j++) {
			const struct ct_image_fd *f = &R->img->procs[i].fds.fds[j];

			if (f->type == CT_IMAGE_FD_MEMFD && f->object == shmid)
				return f;
		}
	return NULL;
}

int restore_shm_fd(struct restorer *R, uint64_t shmid)
{
	struct robj *o = restore_obj_find(R, OBJ_SHM, shmid);

	return o ? o->fd : -ENOENT;
}

int restore_shm_objects(struct restorer *R)
{
	char err[CT_IMAGE_ERROR_MAX] = "";

	for (size_t i = 0; i < R->img->n_shm; i++) {
		const struct ct_image_pages *pg = &R->img->shm[i];
		const struct ct_image_fd *mf;

		if (pg->owner >> 62)
			continue; /* a System V segment's: restore-ipc.c fills it */
		mf = memfd_record(R, pg->owner);
		struct shm_fill f = {.fd = -1};
		uint64_t size = 0, seals = 0;
		char name[256] = "migrd-shm";
		int r;

		for (size_t j = 0; j < R->img->n_procs; j++) {
			const struct ct_image_mm *mm = &R->img->procs[j].mm;

			for (size_t k = 0; k < mm->n_vmas; k++)
				if (mm->vmas[k].pages == CT_IMAGE_VMA_PAGES_SHM &&
				    mm->vmas[k].shmid == pg->owner)
					size = MAX(size, mm->vmas[k].pgoff * CT_PAGE_SIZE +
								 mm->vmas[k].end -
								 mm->vmas[k].start);
		}
		if (mf) {
			struct fdblob_reader rd = {mf->data, mf->data_size};

			seals = fdblob_get_u64(&rd);
			size = MAX(size, fdblob_get_u64(&rd));
			if (mf->path && startswith(mf->path, "/memfd:"))
				strscpy(name, mf->path + strlen("/memfd:"), sizeof(name));
		}
		for (size_t j = 0; j < pg->n_runs; j++)
			size = MAX(size,
				   pg->runs[j].addr + (uint64_t)pg->runs[j].n_pages * CT_PAGE_SIZE);
		f.fd = (int)syscall(SYS_memfd_create, name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
		if (f.fd < 0)
			return restore_fail(R, NEG_ERRNO(), "memfd_create: %m");
		r = restore_obj_add(R, OBJ_SHM, pg->owner, f.fd, -1);
		if (r < 0)
			return r;
		if (ftruncate(f.fd, (off_t)size) < 0)
			return restore_fail(R, NEG_ERRNO(),
					    "shared memory %" PRIu64 ": ftruncate: %m", pg->owner);
		r = ct_image_pages_read(R->img, pg, err, shm_cb, &f);
		if (r >= 0)
			r = ct_image_pages_check_mapped(pg, err);
		if (r < 0)
			return restore_fail(R, r, "shared memory %" PRIu64 ": %s", pg->owner,
					    err[0] ? err : strerror(-r));
		R->stats->pages += f.pages;
		if (pg->map)
			R->stats->mapped_pages += f.pages;
		if (seals && fcntl(f.fd, F_ADD_SEALS, (int)seals) < 0)
			return restore_fail(R, NEG_ERRNO(), "shared memory %" PRIu64 ": seals: %m",
					    pg->owner);
	}
	return 0;
}
