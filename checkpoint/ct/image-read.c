/* The image reader: refuses an image unless the directory and every file are root's, not
 * writable by others, regular and no symlinks; then verifies every header, checksum, record and
 * page chunk before anything is handed to a restore. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>
#include <zstd.h>

#include "checkpoint/ct/image-internal.h"
#include "checkpoint/ct/image-tlv-internal.h"
#include "common/cleanup.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/sigbus.h"
#include "common/util.h"

#define READ_BUF_SIZE ((size_t)1 << 20)

static int _printf_(3, 4) image_error(char *err, int r, const char *format, ...)
{
	va_list ap;

	va_start(ap, format);
	vsnprintf(err, CT_IMAGE_ERROR_MAX, format, ap);
	va_end(ap);
	log_debug("Image refused: %s", err);
	return r;
}

static int pread_all(int fd, void *buf, size_t size, uint64_t offset)
{
	uint8_t *p = buf;

	while (size > 0) {
		ssize_t n = pread(fd, p, size, (off_t)offset);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ENODATA;
		p += n;
		size -= (size_t)n;
		offset += (uint64_t)n;
	}
	return 0;
}

/* Ownership and mode rules for the directory and every file in it. */
static int check_stat(const struct stat *st, const char *name, bool dir, char *err)
{
	if (S_ISLNK(st->st_mode))
		return image_error(err, -ELOOP, "%s: is a symlink, refused", name);
	if (dir ? !S_ISDIR(st->st_mode) : !S_ISREG(st->st_mode))
		return image_error(err, -EBADMSG, "%s: not a %s", name,
				   dir ? "directory" : "regular file");
	if (st->st_uid != 0)
		return image_error(err, -EPERM, "%s: owned by uid %u, not root", name,
				   (unsigned)st->st_uid);
	if (st->st_mode & (S_IWGRP | S_IWOTH))
		return image_error(err, -EPERM, "%s: writable by group or others (mode %04o)", name,
				   (unsigned)(st->st_mode & 07777));
	return 0;
}

/* Opens name in the image without following symlinks and checks what it is. */
static int open_checked(int dir_fd, const char *name, char *err, uint64_t *ret_size)
{
	_cleanup_close_ int fd = -EBADF;
	struct stat st;
	int r;

	fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0 && errno == ELOOP)
		return image_error(err, -ELOOP, "%s: is a symlink, refused", name);
	if (fd < 0 && errno == ENOENT)
		return image_error(err, -ENOENT, "%s: missing", name);
	if (fd < 0)
		return image_error(err, -errno, "%s: cannot open: %s", name, strerror(errno));
	if (fstat(fd, &st) < 0)
		return image_error(err, -errno, "%s: cannot stat: %s", name, strerror(errno));
	r = check_stat(&st, name, false, err);
	if (r < 0)
		return r;
	*ret_size = (uint64_t)st.st_size;
	return TAKE_FD(fd);
}

/* Reads and checks a header against the file's size. */
static int read_header(int fd, const char *name, enum ct_image_file_kind kind, uint64_t size,
		       char *err, struct ct_image_header *ret)
{
	uint8_t buf[CT_IMAGE_HEADER_SIZE];
	char msg[CT_IMAGE_ERROR_MAX];
	int r;

	if (size < CT_IMAGE_HEADER_SIZE)
		return image_error(err, -EBADMSG, "%s: truncated (%" PRIu64 " bytes)", name, size);
	r = pread_all(fd, buf, sizeof(buf), 0);
	if (r < 0)
		return image_error(err, r, "%s: cannot read: %s", name, strerror(-r));
	r = ct_image_header_decode(buf, sizeof(buf), kind, msg, sizeof(msg), ret);
	if (r < 0)
		return image_error(err, r, "%s: %s", name, msg);
	if (ret->payload_len != size - CT_IMAGE_HEADER_SIZE)
		return image_error(err, -EBADMSG,
				   "%s: %s (header says %" PRIu64 " bytes of payload, "
				   "the file has %" PRIu64 ")",
				   name,
				   ret->payload_len > size - CT_IMAGE_HEADER_SIZE ? "truncated"
										  : "trailing data",
				   ret->payload_len, size - CT_IMAGE_HEADER_SIZE);
	return 0;
}

/* A metadata file: header, whole payload in memory, checksum. */
static int read_meta(int dir_fd, const char *name, enum ct_image_file_kind kind, char *err,
		     struct ct_image_header *ret_header, uint8_t **ret_payload)
{
	_cleanup_close_ int fd = -EBADF;
	_cleanup_free_ uint8_t *payload = NULL;
	struct ct_image_header h;
	uint64_t size;
	int r;

	fd = open_checked(dir_fd, name, err, &size);
	if (fd < 0)
		return fd;
	r = read_header(fd, name, kind, size, err, &h);
	if (r < 0)
		return r;
	if (h.payload_len > CT_IMAGE_META_MAX)
		return image_error(err, -EFBIG, "%s: too large (%" PRIu64 " bytes)", name, size);
	payload = malloc(h.payload_len ?: 1);
	if (!payload)
		return -ENOMEM;
	r = pread_all(fd, payload, h.payload_len, CT_IMAGE_HEADER_SIZE);
	if (r < 0)
		return image_error(err, r, "%s: cannot read: %s", name, strerror(-r));
	if (XXH3_64bits(payload, h.payload_len) != h.payload_xxh3)
		return image_error(err, -EBADMSG, "%s: checksum mismatch", name);
	*ret_header = h;
	*ret_payload = TAKE_PTR(payload);
	return 0;
}

/* ---- pages files ---------------------------------------------------------------------------- */

/* A share of the chunks of one pages file: [first, end). */
struct verify_part {
	int fd;
	const uint8_t *map; /* the file, mapped (raw chunks only), or NULL: read it */
	size_t map_len;
	const struct ct_image_pages *p;
	size_t first, end;
	size_t bad; /* the first chunk that failed, or SIZE_MAX */
	int r;	    /* 0, a read error, -EBADMSG or -ENOMEM */
};

/* Hashed where they lie in the page cache: no copy. Leased, the file cannot be cut meanwhile,
 * unless a writer has waited out the lease-break time; then the read past its new end (or of a
 * page the disk failed to give) comes back here as -EFAULT instead of killing the process. */
static void verify_part_mapped(struct verify_part *v)
{
	struct sigbus_guard g;
	volatile size_t i = v->first;

	v->bad = SIZE_MAX;
	v->r = sigbus_guard_enter(&g, v->map, v->map_len);
	if (v->r < 0) {
		v->bad = i;
		return;
	}
	if (sigsetjmp(g.env, 0) != 0) {
		v->bad = i;
		v->r = -EFAULT;
		return;
	}
	for (; i < v->end; i++) {
		const struct ct_image_chunk *c = &v->p->chunks[i];

		if (hash_xxh3(ct_image_pages_mapped_chunk(v->p, i), c->size) != c->xxh3) {
			v->bad = i;
			v->r = -EBADMSG;
			break;
		}
	}
	sigbus_guard_leave(&g);
}

static void *verify_part_run(void *arg)
{
	struct verify_part *v = arg;
	_cleanup_free_ uint8_t *buf = NULL;

	if (v->map) {
		verify_part_mapped(v);
		return NULL;
	}
	buf = malloc(2 * CT_IMAGE_PAGES_CHUNK_PAGES * CT_IMAGE_PAGE_SIZE);
	v->bad = SIZE_MAX;
	v->r = buf ? 0 : -ENOMEM;
	for (size_t i = v->first; buf && i < v->end; i++) {
		const struct ct_image_chunk *c = &v->p->chunks[i];
		int r = pread_all(v->fd, buf, c->size, CT_IMAGE_HEADER_SIZE + c->offset);

		if (r >= 0 && (hash_xxh3(buf, c->size) != c->xxh3 ||
			       (!(c->flags & CT_IMAGE_CHUNK_RAW) &&
				ZSTD_getFrameContentSize(buf, c->size) !=
					(unsigned long long)c->n_pages * CT_IMAGE_PAGE_SIZE)))
			r = -EBADMSG;
		if (r < 0) {
			v->bad = i;
			v->r = r;
			break;
		}
	}
	return NULL;
}

#define VERIFY_THREADS_MAX	 4
#define VERIFY_CHUNKS_PER_THREAD 16 /* a thread for less than 16 MiB costs more than it saves */

/* The chunks are read and hashed on up to one thread per CPU (at most 4): this is all of a
 * restore's reading before the first task exists. A failure names the lowest chunk found. */
static int verify_chunks(int fd, const uint8_t *map, size_t map_len, const struct ct_image_pages *p,
			 const char *name, char *err)
{
	struct verify_part parts[VERIFY_THREADS_MAX];
	pthread_t th[VERIFY_THREADS_MAX];
	bool started[VERIFY_THREADS_MAX] = {};
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	size_t n = (size_t)CLAMP(cpus, 1, VERIFY_THREADS_MAX), bad = SIZE_MAX;
	int r = 0;

	n = CLAMP(p->n_chunks / VERIFY_CHUNKS_PER_THREAD, (size_t)1, n);
	for (size_t i = 0; i < n; i++)
		parts[i] = (struct verify_part){.fd = fd,
						.map = map,
						.map_len = map_len,
						.p = p,
						.first = p->n_chunks * i / n,
						.end = p->n_chunks * (i + 1) / n};
	for (size_t i = 1; i < n; i++)
		started[i] = pthread_create(&th[i], NULL, verify_part_run, &parts[i]) == 0;
	verify_part_run(&parts[0]);
	for (size_t i = 1; i < n; i++)
		if (started[i])
			pthread_join(th[i], NULL);
		else
			verify_part_run(&parts[i]);
	for (size_t i = 0; i < n; i++)
		if (parts[i].r < 0 && parts[i].bad < bad) {
			bad = parts[i].bad;
			r = parts[i].r;
		}
	if (r == -EBADMSG)
		return image_error(err, r, "%s: checksum mismatch at chunk %zu", name, bad);
	if (r == -EFAULT)
		return image_error(err, r,
				   "%s: chunk %zu could not be read (the file was cut short while "
				   "it was verified, or an I/O error)",
				   name, bad);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return image_error(err, r, "%s: cannot read chunk %zu: %s", name, bad,
				   strerror(-r));
	return 0;
}

/* A read lease on fd, whose holder a would-be writer waits for. The lease's owner (us) is sent
 * a signal when one comes: SIGURG, which is ignored unless handled, for the moment between
 * taking the lease and giving up the ownership; with no owner, no signal is sent at all. */
static bool lease_file(int fd, const char *name)
{
	if (fcntl(fd, F_SETSIG, SIGURG) < 0 || fcntl(fd, F_SETLEASE, F_RDLCK) < 0) {
		log_debug_errno(errno,
				"%s: no read lease (%m): its pages will be read and checked again "
				"as they are restored",
				name);
		return false;
	}
	if (fcntl(fd, F_SETOWN, 0) < 0) {
		log_debug_errno(errno, "%s: F_SETOWN: %m", name);
		(void)fcntl(fd, F_SETLEASE, F_UNLCK);
		return false;
	}
	return true;
}

static bool all_raw(const struct ct_image_pages *p)
{
	for (size_t i = 0; i < p->n_chunks; i++)
		if (!(p->chunks[i].flags & CT_IMAGE_CHUNK_RAW))
			return false;
	return true;
}

static int verify_pages(int dir_fd, const char *name, uint64_t xxh3, bool map, char *err,
			struct ct_image_pages *ret)
{
	_cleanup_(ct_image_pages_done) struct ct_image_pages p = {};
	_cleanup_close_ int fd = -EBADF;
	_cleanup_free_ uint8_t *idx = NULL;
	XXH3_state_t *xxh = NULL;
	uint8_t footer[CT_IMAGE_PAGES_FOOTER_SIZE];
	char msg[CT_IMAGE_ERROR_MAX];
	struct ct_image_header h;
	uint64_t size, chunks_len, idx_len, leased_usec = 0;
	bool leased = false;
	int r;

	fd = open_checked(dir_fd, name, err, &size);
	if (fd < 0)
		return fd;
	/* Before the first byte is read: what is verified is what the restore will map. */
	if (map) {
		leased_usec = now_usec(CLOCK_MONOTONIC);
		leased = lease_file(fd, name);
	}
	r = read_header(fd, name, CT_IMAGE_FILE_PAGES, size, err, &h);
	if (r < 0)
		return r;
	if (h.payload_xxh3 != xxh3)
		return image_error(err, -EBADMSG, "%s: checksum differs from the inventory's",
				   name);
	if (h.payload_len < CT_IMAGE_PAGES_FOOTER_SIZE)
		return image_error(err, -EBADMSG, "%s: truncated (no index)", name);
	r = pread_all(fd, footer, sizeof(footer), size - CT_IMAGE_PAGES_FOOTER_SIZE);
	if (r < 0)
		return image_error(err, r, "%s: cannot read: %s", name, strerror(-r));
	chunks_len = get_le64(footer);
	idx_len = get_le64(footer + 8);
	if (chunks_len > h.payload_len - CT_IMAGE_PAGES_FOOTER_SIZE ||
	    idx_len != h.payload_len - CT_IMAGE_PAGES_FOOTER_SIZE - chunks_len ||
	    idx_len > (uint64_t)(CT_IMAGE_PAGES_CHUNKS_MAX + CT_IMAGE_PAGES_RUNS_MAX) * 24 + 64)
		return image_error(err, -EBADMSG, "%s: corrupt index location", name);
	idx = malloc(idx_len ?: 1);
	if (!idx)
		return -ENOMEM;
	r = pread_all(fd, idx, idx_len, CT_IMAGE_HEADER_SIZE + chunks_len);
	if (r < 0)
		return image_error(err, r, "%s: cannot read: %s", name, strerror(-r));
	if (XXH3_64bits(idx, idx_len) != get_le64(footer + 16))
		return image_error(err, -EBADMSG, "%s: index checksum mismatch", name);
	r = ct_image_decode_pages_index(idx, idx_len, chunks_len, msg, sizeof(msg), &p);
	if (r < 0)
		return image_error(err, r, "%s: %s", name, msg);

	if (leased && all_raw(&p) && size <= SIZE_MAX) {
		void *m = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);

		if (m != MAP_FAILED) {
			p.map = m;
			p.map_len = (size_t)size;
			p.map_fd = -EBADF; /* fd stays ours until the file is verified */
			p.leased_usec = leased_usec;
		} else
			log_debug_errno(errno, "%s: cannot map it (%m): it will be read", name);
	}

	/* Every chunk against the index, the index against the header: a flipped byte is
	 * named by chunk when it is in one. */
	r = verify_chunks(fd, p.map, p.map_len, &p, name, err);
	if (r < 0)
		return r;
	xxh = XXH3_createState();
	if (!xxh)
		return -ENOMEM;
	XXH3_64bits_reset(xxh);
	XXH3_64bits_update(xxh, idx, idx_len);
	XXH3_64bits_update(xxh, footer, sizeof(footer));
	if (XXH3_64bits_digest(xxh) != h.payload_xxh3) {
		XXH3_freeState(xxh);
		return image_error(err, -EBADMSG, "%s: checksum mismatch", name);
	}
	XXH3_freeState(xxh);
	p.payload_len = h.payload_len;
	p.name = strdup(name);
	if (!p.name)
		return -ENOMEM;
	if (p.map)
		p.map_fd = TAKE_FD(fd);
	*ret = p;
	p = (struct ct_image_pages){};
	return 0;
}

/* /proc/sys/fs/lease-break-time in usec; 0 when it cannot be read (then only a lease still
 * held counts). */
static uint64_t lease_break_usec(void)
{
	_cleanup_fclose_ FILE *f = fopen("/proc/sys/fs/lease-break-time", "re");
	unsigned long s;

	if (!f || fscanf(f, "%lu", &s) != 1)
		return 0;
	return (uint64_t)MIN(s, 86400ul) * USEC_PER_SEC;
}

int ct_image_pages_check_mapped(const struct ct_image_pages *p, char err[CT_IMAGE_ERROR_MAX])
{
	if (!p->map || fcntl(p->map_fd, F_GETLEASE) == F_RDLCK)
		return 0;
	/* A writer is let in only when the lease-break time has passed since it came, which was
	 * after the lease was taken. */
	if (now_usec(CLOCK_MONOTONIC) - p->leased_usec < lease_break_usec())
		return 0;
	return image_error(err, -ESTALE,
			   "%s: opened for writing during the restore: it may have changed since "
			   "it was verified",
			   p->name);
}

int ct_image_pages_read(struct ct_image *img, const struct ct_image_pages *p,
			char err[CT_IMAGE_ERROR_MAX], ct_image_pages_cb cb, void *userdata)
{
	_cleanup_close_ int fd = -EBADF;
	_cleanup_free_ uint8_t *frame = NULL, *raw = NULL;
	ZSTD_DCtx *dctx = NULL;
	const uint8_t *data = NULL;
	size_t chunk = SIZE_MAX;
	uint64_t size;
	int r = 0;

	if (p->map) {
		for (size_t i = 0; i < p->n_runs && r >= 0; i++) {
			const struct ct_image_run *run = &p->runs[i];

			r = cb(run->addr,
			       run->flags & CT_IMAGE_RUN_ZERO
				       ? NULL
				       : ct_image_pages_mapped_chunk(p, run->chunk) +
						 (size_t)run->chunk_page * CT_IMAGE_PAGE_SIZE,
			       run->n_pages, userdata);
		}
		return r < 0 ? r : 0;
	}
	fd = open_checked(img->dir_fd, p->name, err, &size);
	if (fd < 0)
		return fd;
	if (size != CT_IMAGE_HEADER_SIZE + p->payload_len)
		return image_error(err, -EBADMSG, "%s: changed since it was verified", p->name);
	frame = malloc(2 * CT_IMAGE_PAGES_CHUNK_PAGES * CT_IMAGE_PAGE_SIZE);
	raw = malloc(CT_IMAGE_PAGES_CHUNK_PAGES * CT_IMAGE_PAGE_SIZE);
	dctx = ZSTD_createDCtx();
	if (!frame || !raw || !dctx) {
		ZSTD_freeDCtx(dctx);
		return -ENOMEM;
	}
	for (size_t i = 0; i < p->n_runs && r >= 0; i++) {
		const struct ct_image_run *run = &p->runs[i];

		if (run->flags & CT_IMAGE_RUN_ZERO) {
			r = cb(run->addr, NULL, run->n_pages, userdata);
			continue;
		}
		if (run->chunk != chunk) {
			const struct ct_image_chunk *c = &p->chunks[run->chunk];
			size_t n;

			chunk = run->chunk;
			r = pread_all(fd, frame, c->size, CT_IMAGE_HEADER_SIZE + c->offset);
			if (r < 0) {
				r = image_error(err, r, "%s: cannot read chunk %zu", p->name,
						chunk);
				break;
			}
			if (c->flags & CT_IMAGE_CHUNK_RAW) {
				data = frame; /* no copy: the pages are the stored bytes */
				n = c->size;
			} else {
				data = raw;
				n = ZSTD_decompressDCtx(
					dctx, raw, CT_IMAGE_PAGES_CHUNK_PAGES * CT_IMAGE_PAGE_SIZE,
					frame, c->size);
			}
			if (hash_xxh3(frame, c->size) != c->xxh3 || ZSTD_isError(n) ||
			    n != (size_t)c->n_pages * CT_IMAGE_PAGE_SIZE) {
				r = image_error(err, -EBADMSG, "%s: checksum mismatch at chunk %zu",
						p->name, chunk);
				break;
			}
		}
		r = cb(run->addr, data + (size_t)run->chunk_page * CT_IMAGE_PAGE_SIZE, run->n_pages,
		       userdata);
	}
	ZSTD_freeDCtx(dctx);
	return r < 0 ? r : 0;
}

/* ---- the directory -------------------------------------------------------------------------- */

/* "PREFIX<decimal>.img" with no sign, no leading zero, fitting in 32 bits (64 for shm ids). */
static bool parse_name(const char *name, const char *prefix, uint64_t max, uint64_t *ret)
{
	size_t n = strlen(prefix);
	uint64_t v = 0;
	const char *p;

	if (!strneq(name, prefix, n))
		return false;
	p = name + n;
	if (*p < '0' || *p > '9' || (*p == '0' && p[1] != '.'))
		return false;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (v > (max - (uint64_t)(*p - '0')) / 10)
			return false;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (!streq(p, ".img"))
		return false;
	*ret = v;
	return true;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every entry of the directory, each checked; sorted. */
static int list_dir(int dir_fd, char *err, char ***ret, size_t *ret_n)
{
	_cleanup_strv_free_ char **names = NULL;
	size_t n = 0, alloc = 0;
	struct dirent *de;
	DIR *d;
	int fd, r = 0;

	fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		safe_close(fd);
		return -errno;
	}
	while ((errno = 0, de = readdir(d))) {
		struct stat st;

		if (streq(de->d_name, ".") || streq(de->d_name, ".."))
			continue;
		if (fstatat(dir_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			r = -errno;
			break;
		}
		r = check_stat(&st, de->d_name, false, err);
		if (r < 0)
			break;
		if (de->d_name[0] == '.') {
			r = image_error(err, -EBADMSG,
					"%s: leftover temporary file: the checkpoint "
					"did not finish",
					de->d_name);
			break;
		}
		if (n + 2 > alloc) {
			size_t na = MAX(alloc * 2, (size_t)32);
			char **nn;

			if (n >= CT_IMAGE_FILES_MAX + 1) {
				r = image_error(err, -E2BIG, "too many files in the image");
				break;
			}
			nn = reallocarray(names, na, sizeof(char *));
			if (!nn) {
				r = -ENOMEM;
				break;
			}
			names = nn;
			alloc = na;
		}
		names[n] = strdup(de->d_name);
		if (!names[n]) {
			r = -ENOMEM;
			break;
		}
		names[++n] = NULL;
	}
	if (r == 0 && errno != 0)
		r = -errno;
	closedir(d);
	if (r < 0)
		return r;
	if (n > 0)
		qsort(names, n, sizeof(char *), cmp_str);
	*ret = TAKE_PTR(names);
	*ret_n = n;
	return 0;
}

/* Each listed file exists with the size and checksum listed; nothing else is there. */
static int check_inventory_files(int dir_fd, const struct ct_image_inventory *inv, char **names,
				 size_t n_names, char *err)
{
	for (size_t i = 0; i < inv->n_files; i++) {
		const struct ct_image_file_entry *e = &inv->files[i];
		char *key = e->name;

		if (streq(e->name, "inventory.img"))
			return image_error(err, -EBADMSG, "inventory.img: lists itself");
		for (size_t j = 0; j < i; j++)
			if (streq(inv->files[j].name, e->name))
				return image_error(err, -EBADMSG, "inventory.img: lists %s twice",
						   e->name);
		if (!names || !bsearch(&key, names, n_names, sizeof(char *), cmp_str))
			return image_error(err, -ENOENT, "%s: missing (listed in the inventory)",
					   e->name);
	}
	for (size_t j = 0; j < n_names; j++) {
		bool listed = streq(names[j], "inventory.img");

		for (size_t i = 0; i < inv->n_files && !listed; i++)
			listed = streq(inv->files[i].name, names[j]);
		if (!listed)
			return image_error(err, -EBADMSG, "%s: not listed in the inventory",
					   names[j]);
	}
	for (size_t i = 0; i < inv->n_files; i++) {
		const struct ct_image_file_entry *e = &inv->files[i];
		struct stat st;

		if (fstatat(dir_fd, e->name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			return image_error(err, -errno, "%s: cannot stat", e->name);
		if ((uint64_t)st.st_size != e->size)
			return image_error(err, -EBADMSG,
					   "%s: %" PRIu64 " bytes, the inventory says %" PRIu64
					   " (truncated or replaced)",
					   e->name, (uint64_t)st.st_size, e->size);
	}
	return 0;
}

static int cmp_proc(const void *a, const void *b)
{
	uint32_t x = ((const struct ct_image_process *)a)->task.pid;
	uint32_t y = ((const struct ct_image_process *)b)->task.pid;

	return x < y ? -1 : x > y;
}

static struct ct_image_process *find_proc(struct ct_image *img, uint64_t pid)
{
	struct ct_image_process key = {.task.pid = (uint32_t)pid};

	return pid > UINT32_MAX ? NULL
				: bsearch(&key, img->procs, img->n_procs, sizeof(key), cmp_proc);
}

/* [start, end) is covered without gaps by VMAs whose contents come from kind (and shmid). */
static bool range_in_vmas(const struct ct_image_mm *mm, uint64_t start, uint64_t end)
{
	size_t lo = 0, hi = mm->n_vmas;

	while (lo < hi) { /* the first VMA ending after start */
		size_t mid = lo + (hi - lo) / 2;

		if (mm->vmas[mid].end <= start)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (size_t i = lo; start < end; i++) {
		if (i >= mm->n_vmas || mm->vmas[i].start > start ||
		    mm->vmas[i].pages != CT_IMAGE_VMA_PAGES_PRIVATE)
			return false;
		start = mm->vmas[i].end;
	}
	return true;
}

static int load_meta(struct ct_image *img, const struct ct_image_file_entry *e,
		     enum ct_image_file_kind kind, uint64_t id, char *err)
{
	_cleanup_free_ uint8_t *payload = NULL;
	char msg[CT_IMAGE_ERROR_MAX];
	struct ct_image_process *proc = NULL;
	struct ct_image_header h;
	uint32_t pid = 0;
	int r;

	r = read_meta(img->dir_fd, e->name, kind, err, &h, &payload);
	if (r < 0)
		return r;
	if (h.payload_xxh3 != e->xxh3)
		return image_error(err, -EBADMSG, "%s: checksum differs from the inventory's",
				   e->name);
	if (kind == CT_IMAGE_FILE_TASK) {
		proc = &img->procs[img->n_procs];
		r = ct_image_decode_task(payload, h.payload_len, msg, sizeof(msg), &proc->task);
		if (r == 0)
			img->n_procs++;
		pid = proc->task.pid;
	} else {
		proc = find_proc(img, id);
		if (!proc)
			return image_error(err, -EBADMSG, "%s: there is no task-%" PRIu64 ".img",
					   e->name, id);
		if (kind == CT_IMAGE_FILE_MM) {
			r = ct_image_decode_mm(payload, h.payload_len, msg, sizeof(msg), &proc->mm);
			pid = proc->mm.pid;
		} else {
			r = ct_image_decode_fds(payload, h.payload_len, msg, sizeof(msg),
						&proc->fds);
			pid = proc->fds.pid;
		}
	}
	if (r < 0)
		return image_error(err, r, "%s: %s", e->name, msg);
	if (pid != id)
		return image_error(err, -EBADMSG, "%s: holds pid %u", e->name, pid);
	return 0;
}

static int load_ipc(struct ct_image *img, const struct ct_image_file_entry *e, char *err)
{
	_cleanup_free_ uint8_t *payload = NULL;
	char msg[CT_IMAGE_ERROR_MAX];
	struct ct_image_header h;
	int r;

	r = read_meta(img->dir_fd, e->name, CT_IMAGE_FILE_IPC, err, &h, &payload);
	if (r < 0)
		return r;
	if (h.payload_xxh3 != e->xxh3)
		return image_error(err, -EBADMSG, "%s: checksum differs from the inventory's",
				   e->name);
	r = ct_image_decode_ipc(payload, h.payload_len, msg, sizeof(msg), &img->ipc);
	if (r < 0)
		return image_error(err, r, "%s: %s", e->name, msg);
	return 0;
}

static int load_pages(struct ct_image *img, const struct ct_image_file_entry *e, bool shm,
		      uint64_t id, bool map, char *err)
{
	_cleanup_(ct_image_pages_done) struct ct_image_pages p = {};
	struct ct_image_process *proc = NULL;
	int r;

	if (!shm && !(proc = find_proc(img, id)))
		return image_error(err, -EBADMSG, "%s: there is no task-%" PRIu64 ".img", e->name,
				   id);
	r = verify_pages(img->dir_fd, e->name, e->xxh3, map, err, &p);
	if (r < 0)
		return r;
	p.shm = shm;
	p.owner = id;
	if (shm) {
		img->shm[img->n_shm++] = p;
		p = (struct ct_image_pages){};
		return 0;
	}
	for (size_t i = 0; i < p.n_runs; i++)
		if (!range_in_vmas(&proc->mm, p.runs[i].addr,
				   p.runs[i].addr +
					   (uint64_t)p.runs[i].n_pages * CT_IMAGE_PAGE_SIZE))
			return image_error(err, -EBADMSG,
					   "%s: pages at %#" PRIx64 " lie outside the private VMAs "
					   "of mm-%" PRIu64 ".img",
					   e->name, p.runs[i].addr, id);
	proc->pages = malloc(sizeof(p));
	if (!proc->pages)
		return -ENOMEM;
	*proc->pages = p;
	p = (struct ct_image_pages){};
	return 0;
}

static struct ct_image_pages *find_shm(struct ct_image *img, uint64_t id)
{
	for (size_t i = 0; i < img->n_shm; i++)
		if (img->shm[i].owner == id)
			return &img->shm[i];
	return NULL;
}

static const struct ct_image_shm_seg *find_sysv_shm(const struct ct_image *img, uint64_t id)
{
	for (size_t i = 0; i < img->ipc.n_shms; i++)
		if (img->ipc.shms[i].perm.id == id)
			return &img->ipc.shms[i];
	return NULL;
}

/* Contents of System V segments lie within a segment of ipc.img. */
static int check_sysv_pages(const struct ct_image *img, char *err)
{
	for (size_t i = 0; i < img->n_shm; i++) {
		const struct ct_image_pages *pg = &img->shm[i];
		const struct ct_image_shm_seg *seg;
		uint64_t size;

		if (!(pg->owner >> 62))
			continue;
		seg = find_sysv_shm(img, pg->owner & INT32_MAX);
		if (pg->owner != CT_IMAGE_SYSV_SHM_OWNER(pg->owner & INT32_MAX) || !seg)
			return image_error(err, -EBADMSG, "%s: no such System V segment in ipc.img",
					   pg->name);
		size = (seg->size + CT_IMAGE_PAGE_SIZE - 1) & ~(uint64_t)(CT_IMAGE_PAGE_SIZE - 1);
		for (size_t j = 0; j < pg->n_runs; j++)
			if (pg->runs[j].addr + (uint64_t)pg->runs[j].n_pages * CT_IMAGE_PAGE_SIZE >
			    size)
				return image_error(err, -EBADMSG,
						   "%s: pages beyond the segment's %" PRIu64
						   " bytes",
						   pg->name, seg->size);
	}
	return 0;
}

/* Every task has its memory and fds; the tree hangs together; shared memory exists. */
static int check_processes(struct ct_image *img, char *err)
{
	int r = check_sysv_pages(img, err);

	if (r < 0)
		return r;
	if (!find_proc(img, img->inventory.root_pid))
		return image_error(err, -EBADMSG, "inventory.img: the root pid %u has no task file",
				   img->inventory.root_pid);
	for (size_t i = 0; i < img->n_procs; i++) {
		const struct ct_image_process *p = &img->procs[i];
		uint32_t pid = p->task.pid;

		if (p->mm.pid != pid)
			return image_error(err, -EBADMSG,
					   "mm-%u.img: missing (task-%u.img has no "
					   "memory layout)",
					   pid, pid);
		if (p->fds.pid != pid)
			return image_error(err, -EBADMSG,
					   "fds-%u.img: missing (task-%u.img has no "
					   "file table)",
					   pid, pid);
		if (pid != img->inventory.root_pid && !find_proc(img, p->task.ppid))
			return image_error(err, -EBADMSG,
					   "task-%u.img: parent %u is not in the image", pid,
					   p->task.ppid);
		for (size_t j = 0; j < p->mm.n_vmas; j++) {
			const struct ct_image_vma *v = &p->mm.vmas[j];
			const struct ct_image_shm_seg *seg;

			if (v->kind != CT_IMAGE_VMA_SYSV_SHM)
				continue;
			seg = find_sysv_shm(img, v->shmid);
			if (!seg || v->end - v->start < seg->size ||
			    v->end - v->start - seg->size >= CT_IMAGE_PAGE_SIZE)
				return image_error(
					err, -EBADMSG,
					"mm-%u.img: vma %zu attaches System V segment %" PRIu64
					", which ipc.img does not hold at that size",
					pid, j, v->shmid);
		}
		for (size_t j = 0; j < p->mm.n_vmas; j++)
			if (p->mm.vmas[j].pages == CT_IMAGE_VMA_PAGES_SHM &&
			    !find_shm(img, p->mm.vmas[j].shmid))
				return image_error(err, -EBADMSG,
						   "mm-%u.img: vma %zu refers to pages-shm-%" PRIu64
						   ".img, which is missing",
						   pid, j, p->mm.vmas[j].shmid);
	}
	return 0;
}

static int load_files(struct ct_image *img, bool map, char *err)
{
	const struct ct_image_inventory *inv = &img->inventory;
	size_t n_tasks = 0, n_shm = 0;
	uint64_t id;
	int r;

	for (size_t i = 0; i < inv->n_files; i++) {
		const char *name = inv->files[i].name;

		if (parse_name(name, "task-", UINT32_MAX, &id))
			n_tasks++;
		else if (parse_name(name, "pages-shm-", UINT64_MAX, &id))
			n_shm++;
		else if (!parse_name(name, "mm-", UINT32_MAX, &id) &&
			 !parse_name(name, "fds-", UINT32_MAX, &id) && !streq(name, "ipc.img") &&
			 !parse_name(name, "pages-", UINT32_MAX, &id))
			return image_error(err, -EBADMSG, "%s: not a file of this image format",
					   name);
	}
	if (n_tasks == 0)
		return image_error(err, -EBADMSG, "inventory.img: lists no task");
	img->procs = calloc(n_tasks, sizeof(*img->procs));
	img->shm = calloc(n_shm ?: 1, sizeof(*img->shm));
	if (!img->procs || !img->shm)
		return -ENOMEM;
	/* Tasks first, so the other files find their process. */
	for (size_t i = 0; i < inv->n_files; i++)
		if (parse_name(inv->files[i].name, "task-", UINT32_MAX, &id)) {
			r = load_meta(img, &inv->files[i], CT_IMAGE_FILE_TASK, id, err);
			if (r < 0)
				return r;
		}
	qsort(img->procs, img->n_procs, sizeof(*img->procs), cmp_proc);
	for (size_t i = 0; i < inv->n_files; i++) {
		const struct ct_image_file_entry *e = &inv->files[i];

		if (parse_name(e->name, "mm-", UINT32_MAX, &id))
			r = load_meta(img, e, CT_IMAGE_FILE_MM, id, err);
		else if (parse_name(e->name, "fds-", UINT32_MAX, &id))
			r = load_meta(img, e, CT_IMAGE_FILE_FDS, id, err);
		else if (streq(e->name, "ipc.img"))
			r = load_ipc(img, e, err);
		else
			r = 0;
		if (r < 0)
			return r;
	}
	/* Pages last: they are checked against the VMAs. */
	for (size_t i = 0; i < inv->n_files; i++) {
		const struct ct_image_file_entry *e = &inv->files[i];

		if (parse_name(e->name, "pages-shm-", UINT64_MAX, &id))
			r = load_pages(img, e, true, id, map, err);
		else if (parse_name(e->name, "pages-", UINT32_MAX, &id))
			r = load_pages(img, e, false, id, map, err);
		else
			r = 0;
		if (r < 0)
			return r;
	}
	return check_processes(img, err);
}

static int image_open(const char *dir, bool map, char err[CT_IMAGE_ERROR_MAX],
		      struct ct_image **ret)
{
	_cleanup_(ct_image_freep) struct ct_image *img = NULL;
	_cleanup_strv_free_ char **names = NULL;
	_cleanup_free_ uint8_t *payload = NULL;
	char msg[CT_IMAGE_ERROR_MAX], *key = (char *)"inventory.img";
	struct ct_image_header h;
	struct stat st;
	size_t n_names;
	int r;

	img = calloc(1, sizeof(*img));
	if (!img)
		return -ENOMEM;
	img->dir_fd = -EBADF;
	img->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (img->dir_fd < 0) {
		r = -errno;
		/* O_DIRECTORY wins over O_NOFOLLOW: a symlink to a directory is ENOTDIR. */
		if (r == -ENOTDIR && lstat(dir, &st) == 0 && S_ISLNK(st.st_mode))
			r = -ELOOP;
		return image_error(err, r, "%s: %s", dir,
				   r == -ELOOP ? "is a symlink, refused" : strerror(-r));
	}
	if (fstat(img->dir_fd, &st) < 0)
		return -errno;
	r = check_stat(&st, dir, true, err);
	if (r < 0)
		return r;
	r = list_dir(img->dir_fd, err, &names, &n_names);
	if (r < 0)
		return r;
	if (!names || !bsearch(&key, names, n_names, sizeof(char *), cmp_str))
		return image_error(err, -ENOENT,
				   "inventory.img: missing: the image is incomplete "
				   "(the checkpoint did not finish)");
	r = read_meta(img->dir_fd, "inventory.img", CT_IMAGE_FILE_INVENTORY, err, &h, &payload);
	if (r < 0)
		return r;
	r = ct_image_decode_inventory(payload, h.payload_len, msg, sizeof(msg), &img->inventory);
	if (r < 0)
		return image_error(err, r, "inventory.img: %s", msg);
	r = check_inventory_files(img->dir_fd, &img->inventory, names, n_names, err);
	if (r < 0)
		return r;
	r = load_files(img, map, err);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(img);
	return 0;
}

int ct_image_open(const char *dir, char err[CT_IMAGE_ERROR_MAX], struct ct_image **ret)
{
	return image_open(dir, false, err, ret);
}

int ct_image_open_mapped(const char *dir, char err[CT_IMAGE_ERROR_MAX], struct ct_image **ret)
{
	return image_open(dir, true, err, ret);
}

static void *free_thread(void *arg)
{
	ct_image_free(arg);
	return NULL;
}

void ct_image_free_background(struct ct_image *img)
{
	bool mapped = false;
	pthread_attr_t a;
	pthread_t t;

	if (!img)
		return;
	for (size_t i = 0; i < img->n_procs && !mapped; i++)
		mapped = img->procs[i].pages && img->procs[i].pages->map;
	for (size_t i = 0; i < img->n_shm && !mapped; i++)
		mapped = img->shm[i].map;
	if (!mapped || pthread_attr_init(&a) != 0) {
		ct_image_free(img);
		return;
	}
	if (pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED) != 0 ||
	    pthread_create(&t, &a, free_thread, img) != 0)
		ct_image_free(img);
	pthread_attr_destroy(&a);
}

struct ct_image *ct_image_free(struct ct_image *img)
{
	if (!img)
		return NULL;
	for (size_t i = 0; i < img->n_procs; i++) {
		ct_image_task_done(&img->procs[i].task);
		ct_image_mm_done(&img->procs[i].mm);
		ct_image_fds_done(&img->procs[i].fds);
		if (img->procs[i].pages)
			ct_image_pages_done(img->procs[i].pages);
		free(img->procs[i].pages);
	}
	free(img->procs);
	for (size_t i = 0; i < img->n_shm; i++)
		ct_image_pages_done(&img->shm[i]);
	free(img->shm);
	ct_image_ipc_done(&img->ipc);
	ct_image_inventory_done(&img->inventory);
	if (img->dir_fd >= 0)
		safe_close(img->dir_fd);
	free(img);
	return NULL;
}
