/* Pure decoders of the per-process image files (mm, fds) and of the pages index: untrusted
 * bytes in, the data model out (fuzzed). */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/ct/image-internal.h"
#include "checkpoint/ct/image-tlv-internal.h"
#include "common/cleanup.h"

/* ---- mm ------------------------------------------------------------------------------------- */

static int check_vma(struct ct_dec *d, const struct ct_image_vma *v, size_t i)
{
	if (v->start >= v->end || v->start % CT_IMAGE_PAGE_SIZE || v->end % CT_IMAGE_PAGE_SIZE ||
	    v->end > CT_IMAGE_ADDR_LIMIT)
		return ct_dec_fail(d, "vma %zu: bad range %#" PRIx64 "-%#" PRIx64, i, v->start,
				   v->end);
	if (v->kind >= _CT_IMAGE_VMA_KIND_MAX || v->pages >= _CT_IMAGE_VMA_PAGES_MAX ||
	    (v->prot & ~7U))
		return ct_dec_fail(d, "vma %zu: unknown kind, pages or protection", i);
	if ((v->flags & ~CT_IMAGE_VMA_MAP_FLAGS) || (v->advice & ~(uint32_t)_CT_IMAGE_ADV_ALL))
		return ct_dec_fail(d, "vma %zu: unknown mapping flags %#x or advice %#x", i,
				   v->flags & ~CT_IMAGE_VMA_MAP_FLAGS,
				   v->advice & ~(uint32_t)_CT_IMAGE_ADV_ALL);
	if ((v->advice & CT_IMAGE_ADV_LOCKONFAULT) && !(v->advice & CT_IMAGE_ADV_LOCKED))
		return ct_dec_fail(d, "vma %zu: locked on fault but not locked", i);
	if ((v->advice & CT_IMAGE_ADV_DROPPABLE) && v->kind != CT_IMAGE_VMA_ANON_PRIVATE)
		return ct_dec_fail(d, "vma %zu: droppable but not anonymous private memory", i);
	if ((v->kind == CT_IMAGE_VMA_FILE_PRIVATE || v->kind == CT_IMAGE_VMA_FILE_SHARED) &&
	    !v->path)
		return ct_dec_fail(d, "vma %zu: a file mapping without a path", i);
	return 0;
}

static int decode_vma(struct ct_dec *d, const struct ct_tlv *f, size_t i, struct ct_image_vma *ret)
{
	const uint8_t *p = f->val;
	size_t left = f->len;
	uint64_t seen = 0;
	struct ct_tlv g;
	int r;

	while ((r = ct_dec_next(d, &p, &left, "vma", &g)) > 0) {
		if ((r = ct_dec_once(d, &seen, &g, "vma")) < 0)
			return r;
		switch (g.tag) {
		case VMA_START:
			r = ct_dec_u64(d, &g, "vma", &ret->start);
			break;
		case VMA_END:
			r = ct_dec_u64(d, &g, "vma", &ret->end);
			break;
		case VMA_PGOFF:
			r = ct_dec_u64(d, &g, "vma", &ret->pgoff);
			break;
		case VMA_PROT:
			r = ct_dec_u32(d, &g, "vma", &ret->prot);
			break;
		case VMA_FLAGS:
			r = ct_dec_u32(d, &g, "vma", &ret->flags);
			break;
		case VMA_KIND:
			r = ct_dec_u32(d, &g, "vma", &ret->kind);
			break;
		case VMA_PAGES:
			r = ct_dec_u32(d, &g, "vma", &ret->pages);
			break;
		case VMA_SHMID:
			r = ct_dec_u64(d, &g, "vma", &ret->shmid);
			break;
		case VMA_PATH:
			r = ct_dec_path(d, &g, "vma", &ret->path);
			break;
		case VMA_ADVICE:
			r = ct_dec_u32(d, &g, "vma", &ret->advice);
			break;
		default:
			r = ct_dec_fail(d, "vma: unknown field %u", g.tag);
		}
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	r = ct_dec_require(d, seen,
			   TAG_BIT(VMA_START) | TAG_BIT(VMA_END) | TAG_BIT(VMA_PGOFF) |
				   TAG_BIT(VMA_PROT) | TAG_BIT(VMA_FLAGS) | TAG_BIT(VMA_KIND) |
				   TAG_BIT(VMA_PAGES),
			   "vma");
	if (r < 0)
		return r;
	if ((ret->kind == CT_IMAGE_VMA_ANON_SHARED || ret->pages == CT_IMAGE_VMA_PAGES_SHM ||
	     ret->kind == CT_IMAGE_VMA_SYSV_SHM) &&
	    !(seen & TAG_BIT(VMA_SHMID)))
		return ct_dec_fail(d, "vma %zu: shared memory without an id", i);
	/* A whole segment, attached at its start: its contents are the segment's. */
	if (ret->kind == CT_IMAGE_VMA_SYSV_SHM &&
	    (ret->pgoff != 0 || ret->pages != CT_IMAGE_VMA_PAGES_NONE ||
	     !(ret->flags & MAP_SHARED) || ret->shmid > INT32_MAX))
		return ct_dec_fail(d, "vma %zu: a System V attachment that is not a whole segment",
				   i);
	return check_vma(d, ret, i);
}

/* Guard regions: page-aligned, sorted, each inside one VMA of private memory. */
static int check_guards(struct ct_dec *d, const struct ct_image_mm *mm)
{
	size_t j = 0;

	for (size_t i = 0; i < mm->n_guards; i++) {
		uint64_t s = mm->guards[2 * i], e = mm->guards[2 * i + 1];

		if (s >= e || s % CT_IMAGE_PAGE_SIZE || e % CT_IMAGE_PAGE_SIZE ||
		    (i > 0 && s < mm->guards[2 * i - 1]))
			return ct_dec_fail(
				d, "guard %zu: bad or unsorted range %#" PRIx64 "-%#" PRIx64, i, s,
				e);
		while (j < mm->n_vmas && mm->vmas[j].end <= s)
			j++;
		if (j == mm->n_vmas || mm->vmas[j].start > s || mm->vmas[j].end < e ||
		    mm->vmas[j].pages != CT_IMAGE_VMA_PAGES_PRIVATE)
			return ct_dec_fail(d,
					   "guard %zu: %#" PRIx64 "-%#" PRIx64
					   " is not inside one mapping of private memory",
					   i, s, e);
	}
	return 0;
}

int ct_image_decode_mm(const uint8_t *buf, size_t size, char *err, size_t errlen,
		       struct ct_image_mm *ret)
{
	struct ct_dec dd = {err, errlen}, *d = &dd;
	_cleanup_(ct_image_mm_done) struct ct_image_mm mm = {};
	size_t alloc = 0, n;
	uint64_t seen = 0;
	uint8_t *auxv;
	struct ct_tlv f;
	int r;

	while ((r = ct_dec_next(d, &buf, &size, "mm", &f)) > 0) {
		if (f.tag != MM_VMA && (r = ct_dec_once(d, &seen, &f, "mm")) < 0)
			return r;
		switch (f.tag) {
		case MM_PID:
			r = ct_dec_u32(d, &f, "mm", &mm.pid);
			break;
		case MM_FIELDS:
			r = ct_dec_u64s(d, &f, "mm", mm.fields, CT_IMAGE_MM_FIELDS);
			break;
		case MM_AUXV:
			r = ct_dec_blob(d, &f, CT_IMAGE_AUXV_MAX * 8, 8, "mm auxv", &auxv, &n);
			if (r < 0)
				break;
			mm.auxv = (uint64_t *)(void *)auxv;
			mm.n_auxv = n;
			for (size_t i = 0; i < n; i++)
				mm.auxv[i] = get_le64(auxv + 8 * i);
			break;
		case MM_EXE:
			r = ct_dec_path(d, &f, "mm exe", &mm.exe);
			break;
		case MM_VMA:
			r = ct_dec_grow(d, (void **)&mm.vmas, &alloc, mm.n_vmas, sizeof(*mm.vmas),
					CT_IMAGE_VMAS_MAX, "mm vmas");
			if (r < 0)
				break;
			mm.n_vmas++;
			r = decode_vma(d, &f, mm.n_vmas - 1, &mm.vmas[mm.n_vmas - 1]);
			if (r == 0 && mm.n_vmas > 1 &&
			    mm.vmas[mm.n_vmas - 1].start < mm.vmas[mm.n_vmas - 2].end)
				r = ct_dec_fail(d, "vma %zu: overlaps or is out of order",
						mm.n_vmas - 1);
			break;
		case MM_GUARDS:
			r = ct_dec_blob(d, &f, (size_t)CT_IMAGE_GUARDS_MAX * 16, 16, "mm guards",
					&auxv, &n);
			if (r < 0)
				break;
			mm.guards = (uint64_t *)(void *)auxv;
			mm.n_guards = n;
			for (size_t i = 0; i < 2 * n; i++)
				mm.guards[i] = get_le64(auxv + 8 * i);
			break;
		default:
			r = ct_dec_fail(d, "mm: unknown field %u", f.tag);
		}
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	r = ct_dec_require(d, seen, TAG_BIT(MM_PID) | TAG_BIT(MM_FIELDS) | TAG_BIT(MM_AUXV), "mm");
	if (r < 0)
		return r;
	r = check_guards(d, &mm);
	if (r < 0)
		return r;
	*ret = mm;
	mm = (struct ct_image_mm){};
	return 0;
}

/* ---- fds ------------------------------------------------------------------------------------ */

static int decode_locks(struct ct_dec *d, const struct ct_tlv *g, struct ct_image_fd *ret)
{
	uint8_t *raw = NULL;
	size_t n = 0;
	int r;

	r = ct_dec_blob(d, g, (size_t)CT_IMAGE_LOCKS_MAX * 24, 24, "fd locks", &raw, &n);
	if (r < 0)
		return r;
	ret->locks = calloc(MAX(n, 1u), sizeof(*ret->locks));
	if (!ret->locks) {
		free(raw);
		return -ENOMEM;
	}
	ret->n_locks = n;
	for (size_t i = 0; i < n; i++) {
		uint64_t kw = get_le64(raw + 24 * i);
		struct ct_image_lock *l = &ret->locks[i];

		*l = (struct ct_image_lock){.kind = (uint32_t)(kw >> 32),
					    .write = (uint32_t)kw,
					    .start = get_le64(raw + 24 * i + 8),
					    .end = get_le64(raw + 24 * i + 16)};
		if (l->kind == 0 || l->kind >= _CT_IMAGE_LOCK_KIND_MAX || l->write > 1 ||
		    l->start > l->end || l->start > INT64_MAX ||
		    (l->end != UINT64_MAX && l->end > INT64_MAX) ||
		    (l->kind == CT_IMAGE_LOCK_FLOCK && (l->start != 0 || l->end != UINT64_MAX))) {
			free(raw);
			return ct_dec_fail(d, "fd: lock %zu is invalid", i);
		}
	}
	free(raw);
	return 0;
}

static int decode_fd(struct ct_dec *d, const struct ct_tlv *f, struct ct_image_fd *ret)
{
	const uint8_t *p = f->val;
	size_t left = f->len, n;
	uint64_t seen = 0;
	struct ct_tlv g;
	int r;

	while ((r = ct_dec_next(d, &p, &left, "fd", &g)) > 0) {
		if ((r = ct_dec_once(d, &seen, &g, "fd")) < 0)
			return r;
		switch (g.tag) {
		case FD_NUM:
			r = ct_dec_u32(d, &g, "fd", &ret->fd);
			break;
		case FD_TYPE:
			r = ct_dec_u32(d, &g, "fd", &ret->type);
			break;
		case FD_FLAGS:
			r = ct_dec_u32(d, &g, "fd", &ret->flags);
			break;
		case FD_FDFLAGS:
			r = ct_dec_u32(d, &g, "fd", &ret->fd_flags);
			break;
		case FD_POS:
			r = ct_dec_u64(d, &g, "fd", &ret->pos);
			break;
		case FD_PATH:
			r = ct_dec_str(d, &g, CT_IMAGE_STRING_MAX, "fd", &ret->path);
			break;
		case FD_DATA:
			r = ct_dec_blob(d, &g, CT_IMAGE_FD_DATA_MAX, 1, "fd", &ret->data, &n);
			ret->data_size = (uint32_t)n;
			break;
		case FD_FILE_ID:
			r = ct_dec_u64(d, &g, "fd", &ret->file_id);
			break;
		case FD_OBJECT:
			r = ct_dec_u64(d, &g, "fd", &ret->object);
			break;
		case FD_LOCKS:
			r = decode_locks(d, &g, ret);
			break;
		default:
			r = ct_dec_fail(d, "fd: unknown field %u", g.tag);
		}
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	r = ct_dec_require(d, seen,
			   TAG_BIT(FD_NUM) | TAG_BIT(FD_TYPE) | TAG_BIT(FD_FLAGS) |
				   TAG_BIT(FD_FDFLAGS) | TAG_BIT(FD_POS),
			   "fd");
	if (r < 0)
		return r;
	if (ret->type >= _CT_IMAGE_FD_TYPE_MAX || ret->fd >= (1U << 30))
		return ct_dec_fail(d, "fd %u: unknown type %u or bad number", ret->fd, ret->type);
	/* Names of files the restore will open; sockets, memfds, pipes name no path. */
	if (ret->path && (ret->type == CT_IMAGE_FD_REG || ret->type == CT_IMAGE_FD_DIR ||
			  ret->type == CT_IMAGE_FD_FIFO || ret->type == CT_IMAGE_FD_CHR ||
			  ret->type == CT_IMAGE_FD_TTY)) {
		const char *reason;

		if (ct_image_path_check(ret->path, &reason) < 0)
			return ct_dec_fail(d, "fd %u: refused path '%.64s': %s", ret->fd, ret->path,
					   reason);
	}
	return 0;
}

int ct_image_decode_fds(const uint8_t *buf, size_t size, char *err, size_t errlen,
			struct ct_image_fds *ret)
{
	struct ct_dec dd = {err, errlen}, *d = &dd;
	_cleanup_(ct_image_fds_done) struct ct_image_fds fds = {};
	size_t alloc = 0;
	uint64_t seen = 0;
	struct ct_tlv f;
	int r;

	while ((r = ct_dec_next(d, &buf, &size, "fds", &f)) > 0) {
		if (f.tag == FDS_PID) {
			if ((r = ct_dec_once(d, &seen, &f, "fds")) == 0)
				r = ct_dec_u32(d, &f, "fds", &fds.pid);
		} else if (f.tag == FDS_FD) {
			r = ct_dec_grow(d, (void **)&fds.fds, &alloc, fds.n_fds, sizeof(*fds.fds),
					CT_IMAGE_FDS_MAX, "fds");
			if (r < 0)
				return r;
			fds.n_fds++;
			r = decode_fd(d, &f, &fds.fds[fds.n_fds - 1]);
			if (r == 0 && fds.n_fds > 1 &&
			    fds.fds[fds.n_fds - 1].fd <= fds.fds[fds.n_fds - 2].fd)
				r = ct_dec_fail(d, "fd %u: duplicate or out of order",
						fds.fds[fds.n_fds - 1].fd);
		} else
			r = ct_dec_fail(d, "fds: unknown field %u", f.tag);
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	r = ct_dec_require(d, seen, TAG_BIT(FDS_PID), "fds");
	if (r < 0)
		return r;
	*ret = fds;
	fds = (struct ct_image_fds){};
	return 0;
}

/* ---- pages index ---------------------------------------------------------------------------- */

/* Data runs must fill the chunks in order, every page exactly once: the cursor walks them. */
static int check_runs(struct ct_dec *d, struct ct_image_pages *p)
{
	uint64_t next_addr = 0;
	size_t chunk = 0;
	uint32_t page = 0;

	for (size_t i = 0; i < p->n_runs; i++) {
		const struct ct_image_run *r = &p->runs[i];

		if (r->addr % CT_IMAGE_PAGE_SIZE || r->n_pages == 0 || r->addr < next_addr ||
		    r->n_pages > (CT_IMAGE_ADDR_LIMIT - r->addr) / CT_IMAGE_PAGE_SIZE)
			return ct_dec_fail(d,
					   "index: run %zu at %#" PRIx64 " is misaligned, empty, "
					   "overlapping or out of order",
					   i, r->addr);
		next_addr = r->addr + (uint64_t)r->n_pages * CT_IMAGE_PAGE_SIZE;
		if (r->flags == CT_IMAGE_RUN_ZERO) {
			if (r->chunk != 0 || r->chunk_page != 0)
				return ct_dec_fail(d, "index: zero run %zu points into a chunk", i);
			p->n_zero_pages += r->n_pages;
			continue;
		}
		if (r->flags != 0)
			return ct_dec_fail(d, "index: run %zu has unknown flags %#x", i, r->flags);
		if (chunk >= p->n_chunks || r->chunk != chunk || r->chunk_page != page ||
		    r->n_pages > p->chunks[chunk].n_pages - page)
			return ct_dec_fail(d, "index: run %zu does not match chunk %zu", i, chunk);
		page += r->n_pages;
		if (page == p->chunks[chunk].n_pages) {
			chunk++;
			page = 0;
		}
		p->n_data_pages += r->n_pages;
	}
	if (chunk != p->n_chunks)
		return ct_dec_fail(d, "index: chunk %zu holds pages no run refers to", chunk);
	return 0;
}

int ct_image_decode_pages_index(const uint8_t *buf, size_t size, uint64_t chunks_len, char *err,
				size_t errlen, struct ct_image_pages *ret)
{
	struct ct_dec dd = {err, errlen}, *d = &dd;
	_cleanup_(ct_image_pages_done) struct ct_image_pages p = {};
	uint64_t seen = 0, offset = 0;
	struct ct_tlv f;
	int r;

	while ((r = ct_dec_next(d, &buf, &size, "index", &f)) > 0) {
		if ((r = ct_dec_once(d, &seen, &f, "index")) < 0)
			return r;
		if (f.tag == IDX_CHUNKS) {
			if (f.len % CT_IMAGE_CHUNK_ENTRY_SIZE ||
			    f.len / CT_IMAGE_CHUNK_ENTRY_SIZE > CT_IMAGE_PAGES_CHUNKS_MAX)
				return ct_dec_fail(d, "index: bad chunk table size %u", f.len);
			p.n_chunks = f.len / CT_IMAGE_CHUNK_ENTRY_SIZE;
			p.chunks = calloc(p.n_chunks ?: 1, sizeof(*p.chunks));
			if (!p.chunks)
				return -ENOMEM;
			for (size_t i = 0; i < p.n_chunks; i++) {
				const uint8_t *e = f.val + i * CT_IMAGE_CHUNK_ENTRY_SIZE;
				struct ct_image_chunk *c = &p.chunks[i];

				*c = (struct ct_image_chunk){get_le64(e), get_le32(e + 8),
							     get_le16(e + 12), get_le16(e + 14),
							     get_le64(e + 16)};
				if (c->offset != offset || c->size == 0 ||
				    c->size > 2 * CT_IMAGE_PAGES_CHUNK_PAGES * CT_IMAGE_PAGE_SIZE ||
				    c->n_pages == 0 || c->n_pages > CT_IMAGE_PAGES_CHUNK_PAGES ||
				    (c->flags & ~CT_IMAGE_CHUNK_RAW) ||
				    ((c->flags & CT_IMAGE_CHUNK_RAW) &&
				     c->size != (uint32_t)c->n_pages * CT_IMAGE_PAGE_SIZE))
					return ct_dec_fail(
						d, "index: chunk %zu has a bad offset or size", i);
				offset += c->size;
				p.compressed_size += c->size;
			}
		} else if (f.tag == IDX_RUNS) {
			if (f.len % CT_IMAGE_RUN_ENTRY_SIZE ||
			    f.len / CT_IMAGE_RUN_ENTRY_SIZE > CT_IMAGE_PAGES_RUNS_MAX)
				return ct_dec_fail(d, "index: bad run table size %u", f.len);
			p.n_runs = f.len / CT_IMAGE_RUN_ENTRY_SIZE;
			p.runs = calloc(p.n_runs ?: 1, sizeof(*p.runs));
			if (!p.runs)
				return -ENOMEM;
			for (size_t i = 0; i < p.n_runs; i++) {
				const uint8_t *e = f.val + i * CT_IMAGE_RUN_ENTRY_SIZE;

				p.runs[i] = (struct ct_image_run){
					get_le64(e), get_le32(e + 8), get_le32(e + 12),
					get_le32(e + 16), get_le32(e + 20)};
			}
		} else
			return ct_dec_fail(d, "index: unknown field %u", f.tag);
	}
	if (r < 0)
		return r;
	r = ct_dec_require(d, seen, TAG_BIT(IDX_CHUNKS) | TAG_BIT(IDX_RUNS), "index");
	if (r < 0)
		return r;
	if (offset != chunks_len)
		return ct_dec_fail(d,
				   "index: chunks cover %" PRIu64 " bytes, the file has %" PRIu64,
				   offset, chunks_len);
	r = check_runs(d, &p);
	if (r < 0)
		return r;
	*ret = p;
	p = (struct ct_image_pages){};
	return 0;
}

/* ---- ipc ------------------------------------------------------------------------------------ */

static int decode_ipc_perm(struct ct_dec *d, const struct ct_tlv *g, const char *what,
			   struct ct_image_ipc_perm *p)
{
	uint32_t key;
	int r;

	switch (g->tag) {
	case IPCO_KEY:
		r = ct_dec_u32(d, g, what, &key);
		p->key = (int32_t)key;
		return r;
	case IPCO_ID:
		r = ct_dec_u32(d, g, what, &p->id);
		if (r == 0 && p->id > INT32_MAX)
			r = ct_dec_fail(d, "%s: id %u out of range", what, p->id);
		return r;
	case IPCO_UID:
		return ct_dec_u32(d, g, what, &p->uid);
	case IPCO_GID:
		return ct_dec_u32(d, g, what, &p->gid);
	case IPCO_MODE:
		r = ct_dec_u32(d, g, what, &p->mode);
		if (r == 0 && p->mode > 0777)
			r = ct_dec_fail(d, "%s: mode %#o is not a permission mode", what, p->mode);
		return r;
	default:
		return ct_dec_fail(d, "%s: unknown field %u", what, g->tag);
	}
}

#define IPC_PERM_TAGS                                                                   \
	(TAG_BIT(IPCO_KEY) | TAG_BIT(IPCO_ID) | TAG_BIT(IPCO_UID) | TAG_BIT(IPCO_GID) | \
	 TAG_BIT(IPCO_MODE))

static int decode_sem_set(struct ct_dec *d, const struct ct_tlv *f, struct ct_image_sem_set *ret)
{
	const uint8_t *p = f->val;
	size_t left = f->len, n;
	uint64_t seen = 0;
	uint8_t *raw;
	struct ct_tlv g;
	int r;

	while ((r = ct_dec_next(d, &p, &left, "semaphore set", &g)) > 0) {
		if ((r = ct_dec_once(d, &seen, &g, "semaphore set")) < 0)
			return r;
		if (g.tag != IPCO_SEM_VALUES) {
			r = decode_ipc_perm(d, &g, "semaphore set", &ret->perm);
			if (r < 0)
				return r;
			continue;
		}
		r = ct_dec_blob(d, &g, CT_IMAGE_SEMS_MAX * 2, 2, "semaphore values", &raw, &n);
		if (r < 0)
			return r;
		ret->values = (uint16_t *)(void *)raw;
		ret->n_values = n;
		for (size_t i = 0; i < n; i++) {
			ret->values[i] = get_le16(raw + 2 * i);
			if (ret->values[i] > 32767)
				return ct_dec_fail(d, "semaphore set %u: value %u out of range",
						   ret->perm.id, ret->values[i]);
		}
	}
	if (r < 0)
		return r;
	r = ct_dec_require(d, seen, IPC_PERM_TAGS | TAG_BIT(IPCO_SEM_VALUES), "semaphore set");
	if (r == 0 && ret->n_values == 0)
		r = ct_dec_fail(d, "semaphore set %u: no semaphores", ret->perm.id);
	return r;
}

static int decode_msg_queue(struct ct_dec *d, const struct ct_tlv *f, uint64_t *total,
			    struct ct_image_msg_queue *ret)
{
	const uint8_t *p = f->val;
	size_t left = f->len, alloc = 0;
	uint64_t seen = 0;
	struct ct_tlv g;
	int r;

	while ((r = ct_dec_next(d, &p, &left, "message queue", &g)) > 0) {
		struct ct_image_msg *m;

		if (g.tag != IPCO_MSG) {
			if ((r = ct_dec_once(d, &seen, &g, "message queue")) < 0)
				return r;
			if (g.tag == IPCO_QBYTES)
				r = ct_dec_u64(d, &g, "message queue", &ret->qbytes);
			else
				r = decode_ipc_perm(d, &g, "message queue", &ret->perm);
			if (r < 0)
				return r;
			continue;
		}
		if (g.len < 8 || g.len - 8 > CT_IMAGE_MSG_MAX ||
		    (*total += g.len - 8) > CT_IMAGE_IPC_DATA_MAX)
			return ct_dec_fail(
				d, "message queue: a message of %u bytes is out of range", g.len);
		r = ct_dec_grow(d, (void **)&ret->msgs, &alloc, ret->n_msgs, sizeof(*ret->msgs),
				CT_IMAGE_IPC_DATA_MAX, "message queue");
		if (r < 0)
			return r;
		m = &ret->msgs[ret->n_msgs++];
		m->type = (int64_t)get_le64(g.val);
		m->len = g.len - 8;
		m->text = malloc(m->len ?: 1);
		if (!m->text)
			return -ENOMEM;
		memcpy(m->text, g.val + 8, m->len);
		if (m->type <= 0)
			return ct_dec_fail(d, "message queue: message type %" PRId64 " is not > 0",
					   m->type);
	}
	if (r < 0)
		return r;
	return ct_dec_require(d, seen, IPC_PERM_TAGS | TAG_BIT(IPCO_QBYTES), "message queue");
}

static int decode_shm_seg(struct ct_dec *d, const struct ct_tlv *f, struct ct_image_shm_seg *ret)
{
	const uint8_t *p = f->val;
	size_t left = f->len;
	uint64_t seen = 0;
	struct ct_tlv g;
	int r;

	while ((r = ct_dec_next(d, &p, &left, "shared memory segment", &g)) > 0) {
		if ((r = ct_dec_once(d, &seen, &g, "shared memory segment")) < 0)
			return r;
		if (g.tag == IPCO_SHM_SIZE)
			r = ct_dec_u64(d, &g, "shared memory segment", &ret->size);
		else if (g.tag == IPCO_SHM_FLAGS)
			r = ct_dec_u32(d, &g, "shared memory segment", &ret->flags);
		else
			r = decode_ipc_perm(d, &g, "shared memory segment", &ret->perm);
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	r = ct_dec_require(d, seen,
			   IPC_PERM_TAGS | TAG_BIT(IPCO_SHM_SIZE) | TAG_BIT(IPCO_SHM_FLAGS),
			   "shared memory segment");
	if (r == 0 && (ret->size == 0 || ret->size > CT_IMAGE_SHM_SIZE_MAX ||
		       (ret->flags & ~(CT_IMAGE_SHM_DEST | CT_IMAGE_SHM_LOCKED))))
		r = ct_dec_fail(d,
				"shared memory segment %u: size %" PRIu64 " or flags %#x out of "
				"range",
				ret->perm.id, ret->size, ret->flags);
	return r;
}

/* "NAME=VALUE": a known sysctl, once; a value of digits and blanks (kernel.sem has four). */
static int decode_ipc_sysctl(struct ct_dec *d, const struct ct_tlv *f, struct ct_image_ipc *ipc,
			     size_t *alloc)
{
	_cleanup_free_ char *kv = NULL;
	struct ct_image_sysctl *c;
	char *eq;
	int r;

	r = ct_dec_str(d, f, 64 + CT_IMAGE_IPC_SYSCTL_MAX, "ipc sysctl", &kv);
	if (r < 0)
		return r;
	eq = strchr(kv, '=');
	if (!eq)
		return ct_dec_fail(d, "ipc sysctl: no value");
	*eq = 0;
	if (!ct_image_ipc_sysctl_known(kv))
		return ct_dec_fail(d, "ipc sysctl: unknown name '%.64s'", kv);
	if (!eq[1] || strspn(eq + 1, "0123456789 \t") != strlen(eq + 1) ||
	    strlen(eq + 1) > CT_IMAGE_IPC_SYSCTL_MAX)
		return ct_dec_fail(d, "ipc sysctl %s: bad value", kv);
	for (size_t i = 0; i < ipc->n_sysctls; i++)
		if (streq(ipc->sysctls[i].name, kv))
			return ct_dec_fail(d, "ipc sysctl %s: twice", kv);
	r = ct_dec_grow(d, (void **)&ipc->sysctls, alloc, ipc->n_sysctls, sizeof(*ipc->sysctls),
			CT_IMAGE_IPC_SYSCTLS_MAX, "ipc sysctls");
	if (r < 0)
		return r;
	c = &ipc->sysctls[ipc->n_sysctls++];
	c->name = strdup(kv);
	c->value = strdup(eq + 1);
	return c->name && c->value ? 0 : -ENOMEM;
}

int ct_image_decode_ipc(const uint8_t *buf, size_t size, char *err, size_t errlen,
			struct ct_image_ipc *ret)
{
	struct ct_dec dd = {err, errlen}, *d = &dd;
	_cleanup_(ct_image_ipc_done) struct ct_image_ipc ipc = {};
	size_t alloc_s = 0, alloc_q = 0, alloc_m = 0, alloc_c = 0;
	uint64_t total = 0;
	struct ct_tlv f;
	int r;

	while ((r = ct_dec_next(d, &buf, &size, "ipc", &f)) > 0) {
		if (ipc.n_sems + ipc.n_msgqs + ipc.n_shms >= CT_IMAGE_IPC_OBJECTS_MAX)
			return ct_dec_fail(d, "ipc: more than %u objects",
					   CT_IMAGE_IPC_OBJECTS_MAX);
		if (f.tag == IPC_SYSCTL) {
			r = decode_ipc_sysctl(d, &f, &ipc, &alloc_c);
		} else if (f.tag == IPC_SHM) {
			r = ct_dec_grow(d, (void **)&ipc.shms, &alloc_m, ipc.n_shms,
					sizeof(*ipc.shms), CT_IMAGE_IPC_OBJECTS_MAX, "ipc");
			if (r < 0)
				return r;
			r = decode_shm_seg(d, &f, &ipc.shms[ipc.n_shms++]);
			if (r == 0 && ipc.n_shms > 1 &&
			    ipc.shms[ipc.n_shms - 1].perm.id <= ipc.shms[ipc.n_shms - 2].perm.id)
				r = ct_dec_fail(
					d, "shared memory segment %u: duplicate or out of order",
					ipc.shms[ipc.n_shms - 1].perm.id);
		} else if (f.tag == IPC_SEM) {
			r = ct_dec_grow(d, (void **)&ipc.sems, &alloc_s, ipc.n_sems,
					sizeof(*ipc.sems), CT_IMAGE_IPC_OBJECTS_MAX, "ipc");
			if (r < 0)
				return r;
			r = decode_sem_set(d, &f, &ipc.sems[ipc.n_sems++]);
			if (r == 0 && ipc.n_sems > 1 &&
			    ipc.sems[ipc.n_sems - 1].perm.id <= ipc.sems[ipc.n_sems - 2].perm.id)
				r = ct_dec_fail(d, "semaphore set %u: duplicate or out of order",
						ipc.sems[ipc.n_sems - 1].perm.id);
		} else if (f.tag == IPC_MSGQ) {
			r = ct_dec_grow(d, (void **)&ipc.msgqs, &alloc_q, ipc.n_msgqs,
					sizeof(*ipc.msgqs), CT_IMAGE_IPC_OBJECTS_MAX, "ipc");
			if (r < 0)
				return r;
			r = decode_msg_queue(d, &f, &total, &ipc.msgqs[ipc.n_msgqs++]);
			if (r == 0 && ipc.n_msgqs > 1 &&
			    ipc.msgqs[ipc.n_msgqs - 1].perm.id <=
				    ipc.msgqs[ipc.n_msgqs - 2].perm.id)
				r = ct_dec_fail(d, "message queue %u: duplicate or out of order",
						ipc.msgqs[ipc.n_msgqs - 1].perm.id);
		} else
			r = ct_dec_fail(d, "ipc: unknown field %u", f.tag);
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	if (ipc.n_sems == 0 && ipc.n_msgqs == 0 && ipc.n_shms == 0 && ipc.n_sysctls == 0)
		return ct_dec_fail(d, "ipc: no objects (the file is only written for some)");
	*ret = ipc;
	ipc = (struct ct_image_ipc){};
	return 0;
}
