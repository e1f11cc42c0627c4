/* The image writer: files created 0600 under a temporary name, fsynced and renamed into a 0700
 * directory; page contents streamed into zstd chunks; the inventory written last. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <linux/magic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <xxhash.h>
#include <zstd.h>

#include "checkpoint/ct/image-internal.h"
#include "checkpoint/ct/image-tlv-internal.h"
#include "common/cleanup.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/util.h"

#define PAGES_ZSTD_LEVEL 1 /* dump speed first: the memory bandwidth is the limit to meet */
#define PAGES_ZSTD_MAX	 19
/* Memory that does not compress (random, encrypted, already compressed) costs zstd as much time
 * as any other, for nothing: after this many chunks in a row that did not shrink, only one
 * chunk in PAGES_PROBE_EVERY is tried until one shrinks again. */
#define PAGES_RAW_STREAK  4
#define PAGES_PROBE_EVERY 16

/* A pages file made and allocated ahead (ct_image_writer_reserve_pages), under its temporary
 * name, until its pages writer takes it. */
struct reserved {
	uint64_t owner;
	int fd;
	uint8_t *map; /* the whole file, its pages populated (tmpfs), or NULL */
	size_t map_len;
};

struct ct_image_writer {
	int dir_fd;
	struct ct_image_inventory inv; /* files grows as files are written */
	size_t files_alloc;
	struct reserved *reserved;
	size_t n_reserved;
	struct reserved *spent; /* mappings of finished pages files (fd unused), unmapped at
				 * ct_image_writer_free(): not in the frozen window */
	size_t n_spent;
	int level; /* zstd; 0: pages stored raw */
	bool has_inventory;
	bool finished;
};

struct ct_image_pages_writer {
	struct ct_image_writer *w;
	char name[64], tmp[80];
	int fd;
	XXH3_state_t *xxh;
	ZSTD_CCtx *cctx;
	uint64_t offset; /* payload bytes written */
	uint8_t *raw;	 /* the chunk being filled */
	uint32_t raw_pages;
	uint8_t *frame;
	size_t frame_max;
	struct ct_image_chunk *chunks;
	size_t n_chunks, chunks_alloc;
	struct ct_image_run *runs;
	size_t n_runs, runs_alloc;
	uint64_t next_addr;
	unsigned raw_streak; /* chunks in a row that zstd did not shrink */
	unsigned skipped;    /* chunks stored raw untried since the streak began */
	bool reserved;	     /* the file was allocated ahead: its unused tail goes at the end */
	uint8_t *map;	     /* the reservation's mapping of the whole file, or NULL */
	size_t map_len;
};

static void release_reserved(struct ct_image_writer *w);

/* A file system that runs out of space while pages files are reserved gets their space back
 * first: a reservation may be larger than its process's pages turn out to be (zero pages are
 * not stored), and must never be why a dump fails. */
static int write_all(struct ct_image_writer *w, int fd, const void *data, size_t size)
{
	const uint8_t *p = data;

	while (size > 0) {
		ssize_t n = write(fd, p, size);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == ENOSPC && w->n_reserved > 0) {
				log_debug("Out of space: the reserved pages files go.");
				release_reserved(w);
				continue;
			}
			return -errno;
		}
		p += n;
		size -= (size_t)n;
	}
	return 0;
}

static int writer_add_entry(struct ct_image_writer *w, const char *name, uint64_t size,
			    uint64_t xxh3)
{
	struct ct_image_file_entry *e;

	if (w->inv.n_files >= CT_IMAGE_FILES_MAX)
		return -E2BIG;
	if (w->inv.n_files == w->files_alloc) {
		size_t na = MAX(w->files_alloc * 2, (size_t)16);

		e = reallocarray(w->inv.files, na, sizeof(*e));
		if (!e)
			return -ENOMEM;
		w->inv.files = e;
		w->files_alloc = na;
	}
	e = &w->inv.files[w->inv.n_files];
	*e = (struct ct_image_file_entry){.name = strdup(name), .size = size, .xxh3 = xxh3};
	if (!e->name)
		return -ENOMEM;
	w->inv.n_files++;
	return 0;
}

/* Writes header + payload to a temporary name, fsyncs, renames without replacing. */
static int write_image_file(struct ct_image_writer *w, const char *name,
			    enum ct_image_file_kind kind, const uint8_t *payload, size_t size,
			    uint64_t *ret_xxh3)
{
	struct ct_image_header h = {
		.magic = ct_image_magic(kind),
		.version = CT_IMAGE_VERSION,
		.payload_len = size,
		.payload_xxh3 = XXH3_64bits(payload, size),
	};
	uint8_t header[CT_IMAGE_HEADER_SIZE];
	_cleanup_close_ int fd = -EBADF;
	char tmp[300];
	int r;

	snprintf(tmp, sizeof(tmp), ".%s.tmp", name);
	ct_image_header_encode(&h, header);
	fd = openat(w->dir_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return log_debug_errno(errno, "Failed to create %s: %m", tmp);
	r = write_all(w, fd, header, sizeof(header));
	if (r == 0)
		r = write_all(w, fd, payload, size);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r == 0 && renameat2(w->dir_fd, tmp, w->dir_fd, name, RENAME_NOREPLACE) < 0)
		r = -errno;
	if (r < 0) {
		(void)unlinkat(w->dir_fd, tmp, 0);
		return log_debug_errno(r, "Failed to write %s: %m", name);
	}
	*ret_xxh3 = h.payload_xxh3;
	return 0;
}

/* An image never mixes with what was there: stale files could pass for part of it. */
static bool dir_is_empty(int dir_fd)
{
	struct dirent *de;
	bool empty = true;
	int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;

	if (!d) {
		safe_close(fd);
		return false;
	}
	while (empty && (de = readdir(d)))
		empty = streq(de->d_name, ".") || streq(de->d_name, "..");
	closedir(d);
	return empty;
}

int ct_image_writer_open(const char *dir, struct ct_image_writer **ret)
{
	_cleanup_(ct_image_writer_freep) struct ct_image_writer *w = NULL;
	struct stat st;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return log_debug_errno(errno, "Failed to create %s: %m", dir);
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->finished = true; /* nothing to clean up yet */
	w->dir_fd = -EBADF;
	w->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (w->dir_fd < 0)
		return log_debug_errno(errno, "Failed to open %s: %m", dir);
	if (fstat(w->dir_fd, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode) || !dir_is_empty(w->dir_fd))
		return log_debug_errno(ENOTEMPTY, "%s is not an empty directory", dir);
	if (fchmod(w->dir_fd, 0700) < 0)
		return -errno;
	w->level = PAGES_ZSTD_LEVEL;
	w->finished = false;
	*ret = TAKE_PTR(w);
	return 0;
}

int ct_image_writer_set_inventory(struct ct_image_writer *w, const struct ct_image_inventory *info)
{
	if (w->finished || w->has_inventory)
		return -ESTALE;
	w->inv = (struct ct_image_inventory){
		.version = CT_IMAGE_VERSION,
		.container = strdup(info->container ?: ""),
		.kernel_release = strdup(info->kernel_release ?: ""),
		.arch = strdup(info->arch ?: ""),
		.page_size = CT_IMAGE_PAGE_SIZE,
		.root_pid = info->root_pid,
		.created_usec = info->created_usec,
		.vdso = info->vdso,
		.hostname = info->hostname ? strdup(info->hostname) : NULL,
		.domainname = info->domainname ? strdup(info->domainname) : NULL,
		.netns = info->netns,
		.clocks = info->clocks,
	};
	w->has_inventory = true; /* ct_image_inventory_done() frees what was copied */
	if (!w->inv.container || !w->inv.kernel_release || !w->inv.arch ||
	    (info->hostname && !w->inv.hostname) || (info->domainname && !w->inv.domainname))
		return -ENOMEM;
	if (info->n_net_sysctls > 0) {
		w->inv.net_sysctls = calloc(info->n_net_sysctls, sizeof(*w->inv.net_sysctls));
		if (!w->inv.net_sysctls)
			return -ENOMEM;
		for (; w->inv.n_net_sysctls < info->n_net_sysctls; w->inv.n_net_sysctls++) {
			const struct ct_image_sysctl *c = &info->net_sysctls[w->inv.n_net_sysctls];
			struct ct_image_sysctl *to = &w->inv.net_sysctls[w->inv.n_net_sysctls];

			to->name = strdup(c->name);
			to->value = strdup(c->value);
			if (!to->name || !to->value) {
				w->inv.n_net_sysctls++; /* freed with the rest */
				return -ENOMEM;
			}
		}
	}
	return 0;
}

int ct_image_writer_new(const char *dir, const struct ct_image_inventory *info,
			struct ct_image_writer **ret)
{
	_cleanup_(ct_image_writer_freep) struct ct_image_writer *w = NULL;
	int r;

	r = ct_image_writer_open(dir, &w);
	if (r < 0)
		return r;
	r = ct_image_writer_set_inventory(w, info);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(w);
	return 0;
}

static void pages_name(bool shm, uint64_t owner, char name[64], char tmp[80])
{
	if (shm)
		snprintf(name, 64, "pages-shm-%" PRIu64 ".img", owner);
	else
		snprintf(name, 64, "pages-%" PRIu64 ".img", owner);
	snprintf(tmp, 80, ".%s.tmp", name);
}

struct populate {
	int fd;
	uint8_t *p; /* the mapping of fd at offset 0 */
	size_t off, n;
	int r;
};

static void *populate_run(void *arg)
{
	struct populate *s = arg;

	s->r = 0;
	if (fallocate(s->fd, 0, (off_t)s->off, (off_t)s->n) < 0)
		s->r = -errno;
	else if (madvise(s->p + s->off, s->n, MADV_POPULATE_WRITE) < 0)
		s->r = -errno;
	return NULL;
}

/* fallocate() and MADV_POPULATE_WRITE of [0, size) of fd, mapped at m, in slices on one
 * thread per CPU (at most 4) from 64 MiB up: tmpfs allocates the pages, then the kernel clears
 * each as it is touched (1 GiB here: ~130 ms to allocate and ~300 ms to populate on one
 * thread). Each slice is allocated before it is touched: a full file system is ENOSPC, not
 * SIGBUS. */
#define POPULATE_THREADS_MAX 4
#define POPULATE_SLICE_MIN   (32U << 20)
static int populate(int fd, uint8_t *m, size_t size)
{
	struct populate s[POPULATE_THREADS_MAX];
	pthread_t th[POPULATE_THREADS_MAX];
	bool started[POPULATE_THREADS_MAX] = {};
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	size_t n = CLAMP(size / POPULATE_SLICE_MIN, (size_t)1,
			 (size_t)CLAMP(cpus, 1L, (long)POPULATE_THREADS_MAX));
	size_t slice = (size / n + CT_IMAGE_PAGE_SIZE - 1) & ~(size_t)(CT_IMAGE_PAGE_SIZE - 1);
	int r = 0;

	for (size_t i = 0; i < n; i++) {
		size_t off = MIN(i * slice, size);

		s[i] = (struct populate){.fd = fd,
					 .p = m,
					 .off = off,
					 .n = i == n - 1 ? size - off : MIN(slice, size - off)};
	}
	for (size_t i = 1; i < n; i++)
		started[i] = s[i].n > 0 && pthread_create(&th[i], NULL, populate_run, &s[i]) == 0;
	populate_run(&s[0]);
	for (size_t i = 1; i < n; i++) {
		if (started[i])
			pthread_join(th[i], NULL);
		else if (s[i].n > 0)
			populate_run(&s[i]);
		else
			s[i].r = 0;
	}
	for (size_t i = 0; i < n && r == 0; i++)
		r = s[i].r;
	return r;
}

/* Space for size bytes in fd, at hand: fallocate(), and on tmpfs every page touched through a
 * mapping (MADV_POPULATE_WRITE). fallocate() alone gives tmpfs pages that nothing touched yet:
 * on a VM the hypervisor may still have to find the memory behind them at the first write,
 * which is in the frozen window (seen here: 1 GiB written into a fallocated file in 0.2 s, or
 * in 1.9 s when the VM's memory was not at hand; populated first, 0.19-0.20 s, the populate
 * taking 0.5-0.9 s on one thread while the container still runs). */
static int allocate(int fd, uint64_t size, uint8_t **ret_map)
{
	struct statfs sfs;
	void *m = MAP_FAILED;
	int r;

	*ret_map = NULL;
	if (size > SIZE_MAX)
		return -EFBIG;
	if (fstatfs(fd, &sfs) == 0 && sfs.f_type == TMPFS_MAGIC)
		m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) /* allocated, if not at hand */
		return fallocate(fd, 0, 0, (off_t)size) < 0 ? -errno : 0;
	r = populate(fd, m, size);
	if (r == -EINVAL) /* MADV_POPULATE_WRITE: a kernel before 5.14 */
		r = fallocate(fd, 0, 0, (off_t)size) < 0 ? -errno : 0;
	if (r < 0) {
		munmap(m, size);
		return r;
	}
	/* Kept: the dump places pages straight into it (ct_image_pages_writer_map). */
	*ret_map = m;
	return 0;
}

int ct_image_writer_reserve_pages(struct ct_image_writer *w, uint64_t owner, uint64_t bytes)
{
	char name[64], tmp[80];
	struct reserved *a;
	uint8_t *map;
	int fd, r;

	if (w->finished || w->has_inventory)
		return -ESTALE;
	for (size_t i = 0; i < w->n_reserved; i++)
		if (w->reserved[i].owner == owner)
			return -EEXIST;
	a = reallocarray(w->reserved, w->n_reserved + 1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	w->reserved = a;
	pages_name(false, owner, name, tmp);
	fd = openat(w->dir_fd, tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return log_debug_errno(errno, "Failed to create %s: %m", tmp);
	r = allocate(fd, CT_IMAGE_HEADER_SIZE + bytes, &map);
	if (r < 0) {
		log_debug_errno(r, "Failed to allocate %" PRIu64 " bytes for %s: %m", bytes, tmp);
		(void)unlinkat(w->dir_fd, tmp, 0);
		safe_close(fd);
		return r;
	}
	w->reserved[w->n_reserved++] = (struct reserved){
		.owner = owner, .fd = fd, .map = map, .map_len = CT_IMAGE_HEADER_SIZE + bytes};
	return 0;
}

/* Removes the reservations no pages writer took: at the end, those of processes that ended
 * before the freeze; out of space, all that are left. */
static void release_reserved(struct ct_image_writer *w)
{
	for (size_t i = 0; i < w->n_reserved; i++) {
		char name[64], tmp[80];

		pages_name(false, w->reserved[i].owner, name, tmp);
		(void)unlinkat(w->dir_fd, tmp, 0);
		safe_close(w->reserved[i].fd);
		if (w->reserved[i].map)
			munmap(w->reserved[i].map, w->reserved[i].map_len);
	}
	free(w->reserved);
	w->reserved = NULL;
	w->n_reserved = 0;
}

struct ct_image_writer *ct_image_writer_free(struct ct_image_writer *w)
{
	if (!w)
		return NULL;
	release_reserved(w);
	for (size_t i = 0; i < w->n_spent; i++)
		munmap(w->spent[i].map, w->spent[i].map_len);
	free(w->spent);
	/* An unfinished image must not look like one: remove what we wrote. */
	if (!w->finished && w->dir_fd >= 0)
		for (size_t i = 0; i < w->inv.n_files; i++)
			(void)unlinkat(w->dir_fd, w->inv.files[i].name, 0);
	if (w->dir_fd >= 0)
		safe_close(w->dir_fd);
	ct_image_inventory_done(&w->inv);
	free(w);
	return NULL;
}

static int add_record(struct ct_image_writer *w, const char *name, enum ct_image_file_kind kind,
		      uint8_t *payload, size_t size)
{
	_cleanup_free_ uint8_t *p = payload;
	uint64_t xxh3;
	int r;

	if (w->finished)
		return -ESTALE;
	r = write_image_file(w, name, kind, p, size, &xxh3);
	if (r < 0)
		return r;
	return writer_add_entry(w, name, CT_IMAGE_HEADER_SIZE + size, xxh3);
}

/* The writer refuses what the reader would refuse: a bad record fails the dump, not the
 * restore. */
static int refuse(const char *name, int r, const char *err, uint8_t *payload)
{
	free(payload);
	return log_debug_errno(r, "Refusing to write %s: %s", name, err);
}

int ct_image_writer_add_task(struct ct_image_writer *w, const struct ct_image_task *t)
{
	char name[64], err[CT_IMAGE_ERROR_MAX];
	struct ct_image_task check;
	uint8_t *p;
	size_t n;
	int r = ct_image_encode_task(t, &p, &n);

	if (r < 0)
		return r;
	snprintf(name, sizeof(name), "task-%u.img", t->pid);
	r = ct_image_decode_task(p, n, err, sizeof(err), &check);
	if (r < 0)
		return refuse(name, r, err, p);
	ct_image_task_done(&check);
	return add_record(w, name, CT_IMAGE_FILE_TASK, p, n);
}

int ct_image_writer_add_mm(struct ct_image_writer *w, const struct ct_image_mm *mm)
{
	char name[64], err[CT_IMAGE_ERROR_MAX];
	struct ct_image_mm check;
	uint8_t *p;
	size_t n;
	int r = ct_image_encode_mm(mm, &p, &n);

	if (r < 0)
		return r;
	snprintf(name, sizeof(name), "mm-%u.img", mm->pid);
	r = ct_image_decode_mm(p, n, err, sizeof(err), &check);
	if (r < 0)
		return refuse(name, r, err, p);
	ct_image_mm_done(&check);
	return add_record(w, name, CT_IMAGE_FILE_MM, p, n);
}

int ct_image_writer_add_fds(struct ct_image_writer *w, const struct ct_image_fds *fds)
{
	char name[64], err[CT_IMAGE_ERROR_MAX];
	struct ct_image_fds check;
	uint8_t *p;
	size_t n;
	int r = ct_image_encode_fds(fds, &p, &n);

	if (r < 0)
		return r;
	snprintf(name, sizeof(name), "fds-%u.img", fds->pid);
	r = ct_image_decode_fds(p, n, err, sizeof(err), &check);
	if (r < 0)
		return refuse(name, r, err, p);
	ct_image_fds_done(&check);
	return add_record(w, name, CT_IMAGE_FILE_FDS, p, n);
}

int ct_image_writer_add_ipc(struct ct_image_writer *w, const struct ct_image_ipc *ipc)
{
	char err[CT_IMAGE_ERROR_MAX];
	struct ct_image_ipc check;
	uint8_t *p;
	size_t n;
	int r = ct_image_encode_ipc(ipc, &p, &n);

	if (r < 0)
		return r;
	r = ct_image_decode_ipc(p, n, err, sizeof(err), &check);
	if (r < 0)
		return refuse("ipc.img", r, err, p);
	ct_image_ipc_done(&check);
	return add_record(w, "ipc.img", CT_IMAGE_FILE_IPC, p, n);
}

int ct_image_writer_set_compression(struct ct_image_writer *w, int level)
{
	if (level < 0 || level > PAGES_ZSTD_MAX)
		return -EINVAL;
	w->level = level;
	return 0;
}

int ct_image_writer_finish(struct ct_image_writer *w)
{
	_cleanup_free_ uint8_t *p = NULL;
	uint64_t xxh3;
	size_t n;
	int r;

	if (w->finished)
		return -ESTALE;
	if (!w->has_inventory)
		return -EINVAL;
	release_reserved(w);
	r = ct_image_encode_inventory(&w->inv, &p, &n);
	if (r < 0)
		return r;
	r = write_image_file(w, "inventory.img", CT_IMAGE_FILE_INVENTORY, p, n, &xxh3);
	if (r < 0)
		return r;
	if (fsync(w->dir_fd) < 0) {
		r = -errno;
		(void)unlinkat(w->dir_fd, "inventory.img", 0);
		return log_debug_errno(r, "Failed to fsync the image directory: %m");
	}
	w->finished = true;
	return 0;
}

/* ---- pages ---------------------------------------------------------------------------------- */

int ct_image_writer_pages_begin(struct ct_image_writer *w, bool shm, uint64_t owner,
				struct ct_image_pages_writer **ret)
{
	_cleanup_(ct_image_pages_writer_freep) struct ct_image_pages_writer *p = NULL;

	if (w->finished)
		return -ESTALE;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->w = w;
	p->fd = -EBADF;
	pages_name(shm, owner, p->name, p->tmp);
	p->frame_max = ZSTD_compressBound(CT_IMAGE_PAGES_CHUNK_PAGES * CT_IMAGE_PAGE_SIZE);
	p->raw = malloc(CT_IMAGE_PAGES_CHUNK_PAGES * CT_IMAGE_PAGE_SIZE);
	p->frame = malloc(p->frame_max);
	p->xxh = XXH3_createState();
	p->cctx = ZSTD_createCCtx();
	if (!p->raw || !p->frame || !p->xxh || !p->cctx)
		return -ENOMEM;
	XXH3_64bits_reset(p->xxh);
	for (size_t i = 0; !shm && i < w->n_reserved; i++)
		if (w->reserved[i].owner == owner) {
			p->fd = w->reserved[i].fd;
			p->map = w->reserved[i].map;
			p->map_len = w->reserved[i].map_len;
			p->reserved = true;
			w->reserved[i] = w->reserved[--w->n_reserved];
			break;
		}
	if (p->fd < 0)
		p->fd = openat(w->dir_fd, p->tmp,
			       O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (p->fd < 0)
		return log_debug_errno(errno, "Failed to create %s: %m", p->tmp);
	if (lseek(p->fd, CT_IMAGE_HEADER_SIZE, SEEK_SET) < 0)
		return -errno;
	*ret = TAKE_PTR(p);
	return 0;
}

struct ct_image_pages_writer *ct_image_pages_writer_free(struct ct_image_pages_writer *p)
{
	if (!p)
		return NULL;
	if (p->map)
		munmap(p->map, p->map_len);
	if (p->fd >= 0) {
		safe_close(p->fd);
		(void)unlinkat(p->w->dir_fd, p->tmp, 0);
	}
	XXH3_freeState(p->xxh);
	ZSTD_freeCCtx(p->cctx);
	free(p->raw);
	free(p->frame);
	free(p->chunks);
	free(p->runs);
	free(p);
	return NULL;
}

/* hashed: part of the header's payload checksum, which covers the index and footer; chunk
 * bytes are covered by their own checksums in the index (hashing them twice would halve the
 * speed of a dump). */
static int payload_write(struct ct_image_pages_writer *p, const void *data, size_t size,
			 bool hashed)
{
	int r = write_all(p->w, p->fd, data, size);

	if (r < 0)
		return log_debug_errno(r, "Failed to write %s: %m", p->name);
	if (hashed)
		XXH3_64bits_update(p->xxh, data, size);
	p->offset += size;
	return 0;
}

/* Room for one more chunk in the index. */
static int chunks_grow(struct ct_image_pages_writer *p)
{
	if (p->n_chunks >= CT_IMAGE_PAGES_CHUNKS_MAX)
		return -E2BIG;
	if (p->n_chunks == p->chunks_alloc) {
		size_t na = MAX(p->chunks_alloc * 2, (size_t)64);
		struct ct_image_chunk *c = reallocarray(p->chunks, na, sizeof(*c));

		if (!c)
			return -ENOMEM;
		p->chunks = c;
		p->chunks_alloc = na;
	}
	return 0;
}

/* Stores the p->raw_pages pages at raw (p->raw, or the caller's pages) as one chunk; *xxh3, when
 * given, is the checksum of those pages (used if they are stored raw). */
static int flush_chunk_from(struct ct_image_pages_writer *p, const uint8_t *raw_pages,
			    const uint64_t *xxh3)
{
	size_t n = 0, raw_size;
	const uint8_t *stored;
	bool raw, try;
	int r;

	if (p->raw_pages == 0)
		return 0;
	r = chunks_grow(p);
	if (r < 0)
		return r;
	raw_size = (size_t)p->raw_pages * CT_IMAGE_PAGE_SIZE;
	try = p->w->level > 0;
	if (try && p->raw_streak >= PAGES_RAW_STREAK)
		try = ++p->skipped % PAGES_PROBE_EVERY == 0;
	if (try) {
		n = ZSTD_compressCCtx(p->cctx, p->frame, p->frame_max, raw_pages, raw_size,
				      p->w->level);
		if (ZSTD_isError(n))
			return log_debug_errno(EIO, "zstd: %s", ZSTD_getErrorName(n));
		if (n >= raw_size)
			p->raw_streak++;
		else
			p->raw_streak = p->skipped = 0;
	}
	/* Stored raw when compression is off, untried or does not pay. */
	raw = !try || n >= raw_size;
	stored = raw ? raw_pages : p->frame;
	if (raw)
		n = raw_size;
	p->chunks[p->n_chunks++] = (struct ct_image_chunk){
		.offset = p->offset,
		.size = (uint32_t)n,
		.n_pages = (uint16_t)p->raw_pages,
		.flags = raw ? CT_IMAGE_CHUNK_RAW : 0,
		.xxh3 = raw && xxh3 ? *xxh3 : hash_xxh3(stored, n),
	};
	r = payload_write(p, stored, n, false);
	p->raw_pages = 0;
	return r;
}

static int flush_chunk(struct ct_image_pages_writer *p)
{
	return flush_chunk_from(p, p->raw, NULL);
}

static int add_run_page(struct ct_image_pages_writer *p, uint64_t addr, bool zero)
{
	struct ct_image_run *last = p->n_runs > 0 ? &p->runs[p->n_runs - 1] : NULL;
	uint32_t chunk = (uint32_t)p->n_chunks;

	/* Extend the last run when contiguous, of the same kind and (data) in the same chunk. */
	if (last && last->addr + (uint64_t)last->n_pages * CT_IMAGE_PAGE_SIZE == addr &&
	    last->n_pages < UINT32_MAX &&
	    (zero ? last->flags == CT_IMAGE_RUN_ZERO
		  : last->flags == 0 && last->chunk == chunk && p->raw_pages > 0)) {
		last->n_pages++;
		return 0;
	}
	if (p->n_runs >= CT_IMAGE_PAGES_RUNS_MAX)
		return -E2BIG;
	if (p->n_runs == p->runs_alloc) {
		size_t na = MAX(p->runs_alloc * 2, (size_t)64);
		struct ct_image_run *n = reallocarray(p->runs, na, sizeof(*n));

		if (!n)
			return -ENOMEM;
		p->runs = n;
		p->runs_alloc = na;
	}
	p->runs[p->n_runs++] =
		zero ? (struct ct_image_run){.addr = addr, .n_pages = 1, .flags = CT_IMAGE_RUN_ZERO}
		     : (struct ct_image_run){.addr = addr,
					     .n_pages = 1,
					     .chunk = chunk,
					     .chunk_page = p->raw_pages};
	return 0;
}

/* The caller's checksum of the chunk of pages at page, if it has one. */
static const uint64_t *known_hash(const struct ct_image_chunk_hashes *h, const uint8_t *page)
{
	const size_t chunk = (size_t)CT_IMAGE_PAGES_CHUNK_PAGES * CT_IMAGE_PAGE_SIZE;
	size_t off, k;

	if (!h || page < h->base)
		return NULL;
	off = (size_t)(page - h->base);
	k = off / chunk;
	return off % chunk == 0 && k < h->n && h->has[k] ? &h->xxh3[k] : NULL;
}

int ct_image_pages_writer_add(struct ct_image_pages_writer *p, uint64_t addr, const void *data,
			      size_t n_pages)
{
	return ct_image_pages_writer_add_hashed(p, addr, data, n_pages, NULL);
}

int ct_image_pages_writer_add_hashed(struct ct_image_pages_writer *p, uint64_t addr,
				     const void *data, size_t n_pages,
				     const struct ct_image_chunk_hashes *hashes)
{
	const uint8_t *src = data;
	int r;

	if (addr % CT_IMAGE_PAGE_SIZE || addr < p->next_addr ||
	    n_pages > (CT_IMAGE_ADDR_LIMIT - addr) / CT_IMAGE_PAGE_SIZE)
		return -EINVAL;
	for (size_t i = 0; i < n_pages; i++, addr += CT_IMAGE_PAGE_SIZE) {
		const uint8_t *page = src + i * CT_IMAGE_PAGE_SIZE;
		bool zero;

		/* Where the caller has the checksum of a whole chunk, what is gathered so far
		 * goes out as a short chunk, so that the caller's chunks are the image's. */
		if (p->raw_pages > 0 && n_pages - i >= CT_IMAGE_PAGES_CHUNK_PAGES &&
		    known_hash(hashes, page)) {
			r = flush_chunk(p);
			if (r < 0)
				return r;
		}
		/* A whole chunk of non-zero pages is stored (or compressed) from where it is. */
		if (p->raw_pages == 0 && n_pages - i >= CT_IMAGE_PAGES_CHUNK_PAGES) {
			size_t k = 0;

			while (k < CT_IMAGE_PAGES_CHUNK_PAGES &&
			       !memeqzero(page + k * CT_IMAGE_PAGE_SIZE, CT_IMAGE_PAGE_SIZE))
				k++;
			if (k == CT_IMAGE_PAGES_CHUNK_PAGES) {
				for (k = 0; k < CT_IMAGE_PAGES_CHUNK_PAGES; k++) {
					r = add_run_page(p, addr + k * CT_IMAGE_PAGE_SIZE, false);
					if (r < 0)
						return r;
					p->raw_pages++;
				}
				r = flush_chunk_from(p, page, known_hash(hashes, page));
				if (r < 0)
					return r;
				i += CT_IMAGE_PAGES_CHUNK_PAGES - 1;
				addr += (CT_IMAGE_PAGES_CHUNK_PAGES - 1) * CT_IMAGE_PAGE_SIZE;
				continue;
			}
		}
		zero = memeqzero(page, CT_IMAGE_PAGE_SIZE);

		r = add_run_page(p, addr, zero);
		if (r < 0)
			return r;
		if (zero)
			continue;
		memcpy(p->raw + (size_t)p->raw_pages * CT_IMAGE_PAGE_SIZE, page,
		       CT_IMAGE_PAGE_SIZE);
		if (++p->raw_pages == CT_IMAGE_PAGES_CHUNK_PAGES) {
			r = flush_chunk(p);
			if (r < 0)
				return r;
		}
	}
	p->next_addr = addr;
	return 0;
}

int ct_image_pages_writer_map(struct ct_image_pages_writer *p, uint64_t need, uint8_t **ret)
{
	uint64_t len;

	if (!p->map || p->w->level != 0 || p->raw_pages > 0)
		return -EOPNOTSUPP;
	if (need > CT_IMAGE_ADDR_LIMIT || p->offset > CT_IMAGE_ADDR_LIMIT - need)
		return -EINVAL;
	len = CT_IMAGE_HEADER_SIZE + p->offset + need;
	if (len > SIZE_MAX)
		return -EFBIG;
	if (len > p->map_len) {
		/* More pages than were reserved: the difference is allocated now, in the frozen
		 * window, so only a little of it. Allocated first, so that no write through the
		 * mapping can meet a full file system (that would be SIGBUS, not ENOSPC). */
		size_t old = p->map_len;
		void *m;

		if (len - p->map_len > MAX(p->map_len / 8, (size_t)16 << 20))
			return -EOPNOTSUPP;

		if (fallocate(p->fd, 0, 0, (off_t)len) < 0)
			return log_debug_errno(errno, "Failed to grow %s to %" PRIu64 " bytes: %m",
					       p->name, len);
		m = mremap(p->map, p->map_len, (size_t)len, MREMAP_MAYMOVE);
		if (m == MAP_FAILED)
			return log_debug_errno(errno, "Failed to map %s: %m", p->name);
		p->map = m;
		p->map_len = (size_t)len;
		old &= ~(size_t)(CT_IMAGE_PAGE_SIZE - 1);
		(void)madvise(p->map + old, p->map_len - old, MADV_POPULATE_WRITE);
	}
	*ret = p->map + CT_IMAGE_HEADER_SIZE;
	return 0;
}

uint64_t ct_image_pages_writer_offset(const struct ct_image_pages_writer *p)
{
	return p->offset;
}

/* The p->raw_pages pages placed at the payload's end as one raw chunk. */
static int placed_chunk(struct ct_image_pages_writer *p, const uint64_t *xxh3, size_t n_xxh3,
			size_t k)
{
	size_t size = (size_t)p->raw_pages * CT_IMAGE_PAGE_SIZE;
	const uint8_t *data = p->map + CT_IMAGE_HEADER_SIZE + p->offset;
	int r = chunks_grow(p);

	if (r < 0)
		return r;
	if (CT_IMAGE_HEADER_SIZE + p->offset + size > p->map_len)
		return -ERANGE;
	p->chunks[p->n_chunks++] = (struct ct_image_chunk){
		.offset = p->offset,
		.size = (uint32_t)size,
		.n_pages = (uint16_t)p->raw_pages,
		.flags = CT_IMAGE_CHUNK_RAW,
		.xxh3 = xxh3 && k < n_xxh3 ? xxh3[k] : hash_xxh3(data, size),
	};
	p->offset += size;
	p->raw_pages = 0;
	return 0;
}

int ct_image_pages_writer_add_placed(struct ct_image_pages_writer *p, uint64_t addr,
				     const uint8_t *kind, size_t n_pages, const uint64_t *xxh3,
				     size_t n_xxh3)
{
	size_t k = 0;
	int r;

	if (!p->map || p->raw_pages > 0)
		return -EOPNOTSUPP;
	if (addr % CT_IMAGE_PAGE_SIZE || addr < p->next_addr ||
	    n_pages > (CT_IMAGE_ADDR_LIMIT - addr) / CT_IMAGE_PAGE_SIZE)
		return -EINVAL;
	for (size_t i = 0; i < n_pages; i++) {
		uint64_t a = addr + i * CT_IMAGE_PAGE_SIZE;

		if (kind[i] == CT_IMAGE_PLACED_SKIP)
			continue;
		r = add_run_page(p, a, kind[i] == CT_IMAGE_PLACED_ZERO);
		if (r < 0)
			return r;
		if (kind[i] == CT_IMAGE_PLACED_ZERO)
			continue;
		if (++p->raw_pages == CT_IMAGE_PAGES_CHUNK_PAGES) {
			r = placed_chunk(p, xxh3, n_xxh3, k++);
			if (r < 0)
				return r;
		}
	}
	if (p->raw_pages > 0) {
		r = placed_chunk(p, xxh3, n_xxh3, k);
		if (r < 0)
			return r;
	}
	p->next_addr = addr + n_pages * CT_IMAGE_PAGE_SIZE;
	/* What is written with write() (more pages, the index) goes after them. */
	if (lseek(p->fd, (off_t)(CT_IMAGE_HEADER_SIZE + p->offset), SEEK_SET) < 0)
		return -errno;
	return 0;
}

static int pages_write_index(struct ct_image_pages_writer *p)
{
	size_t nc = p->n_chunks * CT_IMAGE_CHUNK_ENTRY_SIZE,
	       nr = p->n_runs * CT_IMAGE_RUN_ENTRY_SIZE;
	size_t size = 2 * CT_IMAGE_TLV_HEADER_SIZE + nc + nr;
	_cleanup_free_ uint8_t *idx = malloc(size);
	uint8_t footer[CT_IMAGE_PAGES_FOOTER_SIZE], *e;
	uint64_t chunks_len = p->offset;
	int r;

	if (!idx)
		return -ENOMEM;
	put_le16(idx, IDX_CHUNKS);
	put_le16(idx + 2, 0);
	put_le32(idx + 4, (uint32_t)nc);
	e = idx + CT_IMAGE_TLV_HEADER_SIZE;
	for (size_t i = 0; i < p->n_chunks; i++, e += CT_IMAGE_CHUNK_ENTRY_SIZE) {
		put_le64(e, p->chunks[i].offset);
		put_le32(e + 8, p->chunks[i].size);
		put_le16(e + 12, p->chunks[i].n_pages);
		put_le16(e + 14, p->chunks[i].flags);
		put_le64(e + 16, p->chunks[i].xxh3);
	}
	put_le16(e, IDX_RUNS);
	put_le16(e + 2, 0);
	put_le32(e + 4, (uint32_t)nr);
	e += CT_IMAGE_TLV_HEADER_SIZE;
	for (size_t i = 0; i < p->n_runs; i++, e += CT_IMAGE_RUN_ENTRY_SIZE) {
		put_le64(e, p->runs[i].addr);
		put_le32(e + 8, p->runs[i].n_pages);
		put_le32(e + 12, p->runs[i].flags);
		put_le32(e + 16, p->runs[i].chunk);
		put_le32(e + 20, p->runs[i].chunk_page);
	}
	r = payload_write(p, idx, size, true);
	if (r < 0)
		return r;
	put_le64(footer, chunks_len);
	put_le64(footer + 8, size);
	put_le64(footer + 16, XXH3_64bits(idx, size));
	return payload_write(p, footer, sizeof(footer), true);
}

int ct_image_pages_writer_finish(struct ct_image_pages_writer *p)
{
	_cleanup_(ct_image_pages_writer_freep) struct ct_image_pages_writer *pw = p;
	struct ct_image_header h = {.magic = ct_image_magic(CT_IMAGE_FILE_PAGES),
				    .version = CT_IMAGE_VERSION};
	uint8_t header[CT_IMAGE_HEADER_SIZE];
	int r;

	r = flush_chunk(pw);
	if (r < 0)
		return r;
	r = pages_write_index(pw);
	if (r < 0)
		return r;
	h.payload_len = pw->offset;
	h.payload_xxh3 = XXH3_64bits_digest(pw->xxh);
	ct_image_header_encode(&h, header);
	if (pw->map) {
		/* Unmapping a GiB takes tens of ms: later, with the writer. */
		struct reserved *a = reallocarray(pw->w->spent, pw->w->n_spent + 1, sizeof(*a));

		if (a) {
			pw->w->spent = a;
			a[pw->w->n_spent++] =
				(struct reserved){.map = pw->map, .map_len = pw->map_len};
		} else
			munmap(pw->map, pw->map_len);
		pw->map = NULL;
	}
	if (pw->reserved && ftruncate(pw->fd, (off_t)(CT_IMAGE_HEADER_SIZE + pw->offset)) < 0)
		return log_debug_errno(errno, "Failed to truncate %s: %m", pw->name);
	if (pwrite(pw->fd, header, sizeof(header), 0) != (ssize_t)sizeof(header) ||
	    fsync(pw->fd) < 0)
		return log_debug_errno(errno ?: EIO, "Failed to write %s: %m", pw->name);
	if (renameat2(pw->w->dir_fd, pw->tmp, pw->w->dir_fd, pw->name, RENAME_NOREPLACE) < 0)
		return log_debug_errno(errno, "Failed to rename %s: %m", pw->name);
	pw->fd = safe_close(pw->fd);
	return writer_add_entry(pw->w, pw->name, CT_IMAGE_HEADER_SIZE + pw->offset, h.payload_xxh3);
}
