/* VMA classification and the memory reader/writer of a stopped process. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "checkpoint/ct/memory-internal.h"
#include "common/common.h"

#define PM_PRESENT (1ULL << 63)
#define PM_SWAPPED (1ULL << 62)
#define PM_FILE	   (1ULL << 61) /* page-cache or shared-anon page */

static const char *const vma_kind_table[_CT_VMA_KIND_MAX] = {
	[CT_VMA_ANON_PRIVATE] = "anon-private",
	[CT_VMA_ANON_SHARED] = "anon-shared",
	[CT_VMA_FILE_PRIVATE] = "file-private",
	[CT_VMA_FILE_SHARED] = "file-shared",
	[CT_VMA_VVAR] = "vvar",
	[CT_VMA_VVAR_VCLOCK] = "vvar_vclock",
	[CT_VMA_VDSO] = "vdso",
	[CT_VMA_VSYSCALL] = "vsyscall",
	[CT_VMA_UNKNOWN_SPECIAL] = "special",
};
DEFINE_STRING_TABLE_LOOKUP(ct_vma_kind, enum ct_vma_kind, vma_kind_table);

enum ct_vma_kind ct_vma_classify(const struct ct_vma *v)
{
	const char *p = v->path;

	if (!p)
		return v->shared ? CT_VMA_ANON_SHARED : CT_VMA_ANON_PRIVATE;
	if (p[0] == '[') {
		if (streq(p, "[vvar]"))
			return CT_VMA_VVAR;
		if (streq(p, "[vvar_vclock]"))
			return CT_VMA_VVAR_VCLOCK;
		if (streq(p, "[vdso]"))
			return CT_VMA_VDSO;
		if (streq(p, "[vsyscall]"))
			return CT_VMA_VSYSCALL;
		if (startswith(p, "[anon_shmem:"))
			return CT_VMA_ANON_SHARED;
		if (streq(p, "[heap]") || startswith(p, "[stack") || startswith(p, "[anon:"))
			return v->shared ? CT_VMA_ANON_SHARED : CT_VMA_ANON_PRIVATE;
		return CT_VMA_UNKNOWN_SPECIAL;
	}
	/* Shared anonymous memory is a shmem file: "/dev/zero (deleted)", "/SYSV0000002a",
	 * "/memfd:name (deleted)"; its identity is the inode. */
	if (v->shared && ((streq(p, "/dev/zero") && v->deleted) || startswith(p, "/SYSV") ||
			  startswith(p, "/memfd:")))
		return CT_VMA_ANON_SHARED;
	if (!v->shared && streq(p, "/dev/zero"))
		return CT_VMA_ANON_PRIVATE; /* MAP_PRIVATE of /dev/zero is anonymous memory */
	return v->shared ? CT_VMA_FILE_SHARED : CT_VMA_FILE_PRIVATE;
}

bool ct_vma_kind_has_contents(enum ct_vma_kind k)
{
	return k == CT_VMA_ANON_PRIVATE || k == CT_VMA_ANON_SHARED || k == CT_VMA_FILE_PRIVATE;
}

int ct_mem_open(pid_t pid, struct ct_mem *ret)
{
	_cleanup_close_ int mem_fd = -EBADF, pagemap_fd = -EBADF;
	char path[64];

	if (pid <= 0)
		return -EINVAL;
	snprintf(path, sizeof(path), "/proc/%d/mem", (int)pid);
	mem_fd = open(path, O_RDWR | O_CLOEXEC);
	if (mem_fd < 0)
		return log_debug_errno(errno == ENOENT ? ESRCH : errno,
				       "pid %d: failed to open %s: %m", (int)pid, path);
	snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)pid);
	pagemap_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (pagemap_fd < 0)
		return log_debug_errno(errno == ENOENT ? ESRCH : errno,
				       "pid %d: failed to open %s: %m", (int)pid, path);
	*ret = (struct ct_mem){
		.pid = pid, .mem_fd = TAKE_FD(mem_fd), .pagemap_fd = TAKE_FD(pagemap_fd)};
	return 0;
}

void ct_mem_close(struct ct_mem *m)
{
	if (!m)
		return;
	m->mem_fd = safe_close(m->mem_fd);
	m->pagemap_fd = safe_close(m->pagemap_fd);
}

static bool range_ok(uint64_t addr, size_t len)
{
	return (addr % CT_PAGE_SIZE) == 0 && (len % CT_PAGE_SIZE) == 0 && addr + len >= addr;
}

int ct_mem_page_map(const struct ct_mem *m, uint64_t addr, size_t n_pages, uint8_t *page_flags)
{
	uint64_t entries[512];

	if (!range_ok(addr, n_pages * CT_PAGE_SIZE) || n_pages > SIZE_MAX / CT_PAGE_SIZE)
		return -EINVAL;
	for (size_t done = 0; done < n_pages;) {
		size_t n = MIN(n_pages - done, ELEMENTSOF(entries));
		off_t off = (off_t)((addr / CT_PAGE_SIZE + done) * sizeof(uint64_t));
		ssize_t k = pread(m->pagemap_fd, entries, n * sizeof(uint64_t), off);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return log_debug_errno(errno, "pid %d: failed to read pagemap at %#llx: %m",
					       (int)m->pid,
					       (unsigned long long)(addr + done * CT_PAGE_SIZE));
		if (k == 0) /* the process has exited */
			return log_debug_errno(ESRCH, "pid %d: process is gone (pagemap at %#llx)",
					       (int)m->pid,
					       (unsigned long long)(addr + done * CT_PAGE_SIZE));
		if (k % sizeof(uint64_t) != 0)
			return log_debug_errno(EIO, "pid %d: short pagemap read at %#llx",
					       (int)m->pid,
					       (unsigned long long)(addr + done * CT_PAGE_SIZE));
		n = (size_t)k / sizeof(uint64_t);
		for (size_t i = 0; i < n; i++) {
			uint8_t f = 0;
			if (!(entries[i] & (PM_PRESENT | PM_SWAPPED)))
				f |= CT_PAGE_ABSENT;
			if (entries[i] & PM_FILE)
				f |= CT_PAGE_FILE;
			page_flags[done + i] = f;
		}
		done += n;
	}
	return 0;
}

/* pread on /proc/PID/mem: FOLL_FORCE reads what process_vm_readv cannot (PROT_NONE). */
static int read_via_mem(const struct ct_mem *m, uint64_t addr, size_t len, uint8_t *buf)
{
	for (size_t done = 0; done < len;) {
		ssize_t k = pread(m->mem_fd, buf + done, len - done, (off_t)(addr + done));

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return log_debug_errno(k < 0 ? errno : ESRCH,
					       "pid %d: failed to read memory %#llx-%#llx: %m",
					       (int)m->pid, (unsigned long long)(addr + done),
					       (unsigned long long)(addr + len));
		done += (size_t)k;
	}
	return 0;
}

/* One contiguous run, process_vm_readv first; a partial read continues page by page. */
static int read_run(const struct ct_mem *m, uint64_t addr, size_t len, uint8_t *buf)
{
	size_t done = 0;

	while (done < len) {
		struct iovec local = {buf + done, len - done};
		struct iovec remote = {(void *)(uintptr_t)(addr + done), len - done};
		ssize_t k = process_vm_readv(m->pid, &local, 1, &remote, 1, 0);
		int r;

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && errno == ESRCH)
			return log_debug_errno(ESRCH,
					       "pid %d: process is gone (reading %#llx-%#llx)",
					       (int)m->pid, (unsigned long long)(addr + done),
					       (unsigned long long)(addr + len));
		if (k < 0 && errno != EFAULT)
			return log_debug_errno(errno,
					       "pid %d: process_vm_readv %#llx-%#llx failed: %m",
					       (int)m->pid, (unsigned long long)(addr + done),
					       (unsigned long long)(addr + len));
		if (k > 0) {
			done += (size_t)k;
			continue;
		}
		/* Nothing readable at addr + done: one page through /proc/PID/mem. */
		r = read_via_mem(m, addr + done, CT_PAGE_SIZE, buf + done);
		if (r < 0)
			return r;
		done += CT_PAGE_SIZE;
	}
	return 0;
}

/* One piece of at most CT_MEM_CHUNK_SIZE bytes. */
static int read_chunk(const struct ct_mem *m, uint64_t addr, size_t len, uint8_t *buf,
		      bool skip_absent, uint8_t *flags)
{
	size_t n_pages = len / CT_PAGE_SIZE;
	uint8_t local_flags[CT_MEM_CHUNK_SIZE / CT_PAGE_SIZE];
	int r;

	if (!flags)
		flags = local_flags;
	if (skip_absent) {
		r = ct_mem_page_map(m, addr, n_pages, flags);
		if (r < 0)
			return r;
	} else
		memset(flags, 0, n_pages);

	for (size_t i = 0; i < n_pages;) {
		size_t j = i;
		bool absent = flags[i] & CT_PAGE_ABSENT;

		while (j < n_pages && !!(flags[j] & CT_PAGE_ABSENT) == absent)
			j++;
		if (absent)
			memset(buf + i * CT_PAGE_SIZE, 0, (j - i) * CT_PAGE_SIZE);
		else {
			r = read_run(m, addr + i * CT_PAGE_SIZE, (j - i) * CT_PAGE_SIZE,
				     buf + i * CT_PAGE_SIZE);
			if (r < 0)
				return r;
		}
		i = j;
	}
	for (size_t i = 0; i < n_pages; i++)
		if (!(flags[i] & CT_PAGE_ABSENT) && memeqzero(buf + i * CT_PAGE_SIZE, CT_PAGE_SIZE))
			flags[i] |= CT_PAGE_ZERO;
	return 0;
}

int ct_mem_read(const struct ct_mem *m, uint64_t addr, size_t len, void *buf, bool skip_absent,
		uint8_t *page_flags)
{
	if (!m || (!buf && len > 0) || !range_ok(addr, len))
		return -EINVAL;
	for (size_t off = 0; off < len; off += CT_MEM_CHUNK_SIZE) {
		size_t n = MIN(len - off, (size_t)CT_MEM_CHUNK_SIZE);
		int r = read_chunk(m, addr + off, n, (uint8_t *)buf + off, skip_absent,
				   page_flags ? page_flags + off / CT_PAGE_SIZE : NULL);
		if (r < 0)
			return r;
	}
	return 0;
}

int ct_mem_write(const struct ct_mem *m, uint64_t addr, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	if (!m || (!buf && len > 0) || addr + len < addr)
		return -EINVAL;
	for (size_t done = 0; done < len;) {
		size_t n = MIN(len - done, (size_t)CT_MEM_CHUNK_SIZE);
		ssize_t k = pwrite(m->mem_fd, p + done, n, (off_t)(addr + done));

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			/* 0 bytes: the process has exited (its mm is gone). */
			int e = k < 0 ? errno : ESRCH;
			return log_debug_errno(e, "pid %d: failed to write memory %#llx-%#llx: %m",
					       (int)m->pid, (unsigned long long)(addr + done),
					       (unsigned long long)(addr + len));
		}
		done += (size_t)k;
	}
	return 0;
}

struct parallel_job {
	const struct ct_mem *mem;
	const struct ct_mem_range *ranges;
	size_t n_ranges;
	const size_t *first_piece; /* n_ranges + 1 prefix sums of pieces */
	bool skip_absent;
	atomic_size_t next;
	atomic_int error;
};

static int job_piece(struct parallel_job *j, size_t piece)
{
	size_t lo = 0, hi = j->n_ranges;
	const struct ct_mem_range *rg;
	size_t off, n;

	/* The range whose pieces contain piece: first_piece[lo] <= piece < first_piece[lo+1]. */
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (j->first_piece[mid] <= piece)
			lo = mid;
		else
			hi = mid;
	}
	rg = &j->ranges[lo];
	off = (piece - j->first_piece[lo]) * CT_MEM_CHUNK_SIZE;
	n = MIN(rg->len - off, (size_t)CT_MEM_CHUNK_SIZE);
	return read_chunk(j->mem, rg->addr + off, n, (uint8_t *)rg->buf + off, j->skip_absent,
			  rg->page_flags ? rg->page_flags + off / CT_PAGE_SIZE : NULL);
}

static void *job_worker(void *userdata)
{
	struct parallel_job *j = userdata;
	size_t total = j->first_piece[j->n_ranges];

	for (;;) {
		size_t piece = atomic_fetch_add(&j->next, 1);
		int r;

		if (piece >= total || atomic_load(&j->error) != 0)
			break;
		r = job_piece(j, piece);
		if (r < 0) {
			int expected = 0;
			atomic_compare_exchange_strong(&j->error, &expected, r);
			break;
		}
	}
	return NULL;
}

int ct_mem_read_parallel(const struct ct_mem *m, const struct ct_mem_range *ranges, size_t n,
			 unsigned n_threads, bool skip_absent)
{
	_cleanup_free_ size_t *first_piece = NULL;
	_cleanup_free_ pthread_t *threads = NULL;
	struct parallel_job job;
	uint64_t total = 0;
	unsigned started = 0;

	if (!m || (!ranges && n > 0))
		return -EINVAL;
	first_piece = calloc(n + 1, sizeof(*first_piece));
	if (!first_piece)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (!range_ok(ranges[i].addr, ranges[i].len) || (!ranges[i].buf && ranges[i].len))
			return -EINVAL;
		total += ranges[i].len;
		first_piece[i + 1] = first_piece[i] +
				     (ranges[i].len + CT_MEM_CHUNK_SIZE - 1) / CT_MEM_CHUNK_SIZE;
	}
	job = (struct parallel_job){.mem = m,
				    .ranges = ranges,
				    .n_ranges = n,
				    .first_piece = first_piece,
				    .skip_absent = skip_absent};
	atomic_init(&job.next, 0);
	atomic_init(&job.error, 0);

	/* Threads cost ~50 us each to start: only worth it for more than a few chunks. */
	n_threads = MIN(n_threads, (unsigned)MIN(first_piece[n], 64U));
	if (n_threads <= 1 || total < CT_MEM_PARALLEL_MIN) {
		job_worker(&job);
		return atomic_load(&job.error);
	}
	threads = calloc(n_threads - 1, sizeof(*threads));
	if (!threads)
		return -ENOMEM;
	for (; started < n_threads - 1; started++) {
		int r = pthread_create(&threads[started], NULL, job_worker, &job);
		if (r != 0) {
			log_debug_errno(r, "pid %d: failed to start a reader thread: %m",
					(int)m->pid);
			break; /* the others, and this thread, still do all the work */
		}
	}
	job_worker(&job);
	for (unsigned i = 0; i < started; i++)
		pthread_join(threads[i], NULL);
	return atomic_load(&job.error);
}

unsigned ct_mem_threads(unsigned requested)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return requested ? requested : (unsigned)CLAMP(n, 1L, 4L);
}
