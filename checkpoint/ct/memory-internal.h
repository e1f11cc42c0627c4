/* Memory of a stopped process: which VMAs to dump, reading them (process_vm_readv in 1 MiB
 * chunks, per-page zero/absent detection, optionally over worker threads) and writing pages
 * back through /proc/PID/mem. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "checkpoint/ct/proc-internal.h"

#define CT_PAGE_SIZE	  4096U
#define CT_MEM_CHUNK_SIZE (1U << 20)

enum ct_vma_kind {
	CT_VMA_ANON_PRIVATE, /* no file, [heap], [stack], [anon:...] */
	CT_VMA_ANON_SHARED,  /* MAP_SHARED|MAP_ANONYMOUS, SysV shm, memfd: identified by inode */
	CT_VMA_FILE_PRIVATE, /* private file mapping: only its copied-on-write pages matter */
	CT_VMA_FILE_SHARED,  /* written through to the file: restored by mapping the path */
	CT_VMA_VVAR,
	CT_VMA_VVAR_VCLOCK,
	CT_VMA_VDSO,
	CT_VMA_VSYSCALL,
	CT_VMA_UNKNOWN_SPECIAL, /* any other "[...]" name we do not know */
	_CT_VMA_KIND_MAX,
};

const char *ct_vma_kind_to_string(enum ct_vma_kind k);
int ct_vma_kind_from_string(const char *s);

enum ct_vma_kind ct_vma_classify(const struct ct_vma *v);
/* Whether page contents of this VMA go into an image (vDSO & co. are remapped, shared file
 * mappings live in their file, unknown specials are refused by the caller). */
bool ct_vma_kind_has_contents(enum ct_vma_kind k);

/* Per page flags filled by the readers. */
enum {
	CT_PAGE_ZERO = 1U << 0,	  /* read, and all bytes are zero */
	CT_PAGE_ABSENT = 1U << 1, /* never touched (pagemap: neither present nor swapped); not
				   * read, zero-filled in the buffer */
	CT_PAGE_FILE = 1U << 2,	  /* pagemap: a page-cache or shared-anon page, i.e. not a private
				   * copy (skip in private file mappings) */
};

/* Reader/writer state for one pid. Its operations are thread-safe (pread/pwrite and
 * process_vm_readv only). */
struct ct_mem {
	pid_t pid;
	int mem_fd;	/* /proc/PID/mem, O_RDWR */
	int pagemap_fd; /* /proc/PID/pagemap */
};

/* Opens /proc/PID/mem and pagemap (needs root or ptrace rights). -ESRCH when pid is gone. */
int ct_mem_open(pid_t pid, struct ct_mem *ret);
void ct_mem_close(struct ct_mem *m);

/* Reads exactly len bytes at addr (page-aligned addr and len), 1 MiB per syscall; falls back
 * to /proc/PID/mem for pages process_vm_readv cannot read (PROT_NONE). page_flags, if not
 * NULL, gets one byte per page. With skip_absent, pages the process never touched are not
 * read (looked up in pagemap). A read without skip_absent maps the kernel's zero page into
 * untouched pages (as any get_user_pages read does): pagemap calls them present afterwards. */
int ct_mem_read(const struct ct_mem *m, uint64_t addr, size_t len, void *buf, bool skip_absent,
		uint8_t *page_flags);

/* Pagemap flags (CT_PAGE_ABSENT, CT_PAGE_FILE) for n_pages pages from addr. */
int ct_mem_page_map(const struct ct_mem *m, uint64_t addr, size_t n_pages, uint8_t *page_flags);

/* Writes len bytes at addr with pwrite on /proc/PID/mem: works on read-only and PROT_NONE
 * pages too. */
int ct_mem_write(const struct ct_mem *m, uint64_t addr, const void *buf, size_t len);

struct ct_mem_range {
	uint64_t addr;
	size_t len;
	void *buf;	     /* len bytes */
	uint8_t *page_flags; /* len / 4096 bytes, or NULL */
};

/* Reads all ranges with up to n_threads workers, each taking 1 MiB pieces in turn; below
 * CT_MEM_PARALLEL_MIN bytes in total (or n_threads <= 1) it reads in the calling thread. */
#define CT_MEM_PARALLEL_MIN (16U << 20)

/* How many threads copy a process's memory (dump and restore): requested, or when 0 one per
 * CPU, at most 4. */
unsigned ct_mem_threads(unsigned requested);
int ct_mem_read_parallel(const struct ct_mem *m, const struct ct_mem_range *ranges, size_t n,
			 unsigned n_threads, bool skip_absent);
