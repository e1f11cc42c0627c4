/* Pure decoders of the image files: untrusted bytes in, the data model out (fuzzed). Every
 * length is checked against the bytes present and against the limits in image-internal.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "checkpoint/ct/image-internal.h"
#include "checkpoint/ct/image-tlv-internal.h"
#include "common/cleanup.h"
#include "common/macro.h"

struct dec {
	char *err;
	size_t errlen;
};

static int _printf_(2, 3) fail(struct dec *d, const char *format, ...)
{
	va_list ap;

	va_start(ap, format);
	vsnprintf(d->err, d->errlen, format, ap);
	va_end(ap);
	return -EBADMSG;
}

struct tlv {
	uint16_t tag;
	uint32_t len;
	const uint8_t *val;
};

/* Returns 1 with the next field, 0 at the end, or -EBADMSG. */
static int tlv_next(struct dec *d, const uint8_t **p, size_t *left, const char *what,
		    struct tlv *ret)
{
	if (*left == 0)
		return 0;
	if (*left < CT_TLV_HEADER_SIZE)
		return fail(d, "%s: truncated field header", what);
	ret->tag = get_le16(*p);
	ret->len = get_le32(*p + 4);
	if (get_le16(*p + 2) != 0)
		return fail(d, "%s: field %u has unknown flags", what, ret->tag);
	if (ret->len > *left - CT_TLV_HEADER_SIZE)
		return fail(d, "%s: field %u is %u bytes, only %zu left", what, ret->tag, ret->len,
			    *left - CT_TLV_HEADER_SIZE);
	ret->val = *p + CT_TLV_HEADER_SIZE;
	*p += CT_TLV_HEADER_SIZE + ret->len;
	*left -= CT_TLV_HEADER_SIZE + ret->len;
	return 1;
}

/* Once per field: seen is a bitmask of tags. */
static int once(struct dec *d, uint64_t *seen, const struct tlv *f, const char *what)
{
	if (f->tag < 64 && (*seen & (UINT64_C(1) << f->tag)))
		return fail(d, "%s: field %u appears twice", what, f->tag);
	if (f->tag < 64)
		*seen |= UINT64_C(1) << f->tag;
	return 0;
}

static int require(struct dec *d, uint64_t seen, uint64_t need, const char *what)
{
	uint64_t missing = need & ~seen;

	if (missing)
		return fail(d, "%s: field %d is missing", what, __builtin_ctzll(missing));
	return 0;
}
#define BIT(t) (UINT64_C(1) << (t))

static int get_u32(struct dec *d, const struct tlv *f, const char *what, uint32_t *ret)
{
	if (f->len != 4)
		return fail(d, "%s: field %u is %u bytes, expected 4", what, f->tag, f->len);
	*ret = get_le32(f->val);
	return 0;
}

static int get_u64(struct dec *d, const struct tlv *f, const char *what, uint64_t *ret)
{
	if (f->len != 8)
		return fail(d, "%s: field %u is %u bytes, expected 8", what, f->tag, f->len);
	*ret = get_le64(f->val);
	return 0;
}

static int get_u64s(struct dec *d, const struct tlv *f, const char *what, uint64_t *ret, size_t n)
{
	if (f->len != n * 8)
		return fail(d, "%s: field %u is %u bytes, expected %zu", what, f->tag, f->len,
			    n * 8);
	for (size_t i = 0; i < n; i++)
		ret[i] = get_le64(f->val + 8 * i);
	return 0;
}

static int check_text(struct dec *d, const struct tlv *f, size_t max, const char *what)
{
	if (f->len > max)
		return fail(d, "%s: field %u is %u bytes, at most %zu allowed", what, f->tag,
			    f->len, max);
	if (memchr(f->val, 0, f->len))
		return fail(d, "%s: field %u has a NUL byte", what, f->tag);
	return 0;
}

static int get_str(struct dec *d, const struct tlv *f, size_t max, const char *what, char **ret)
{
	int r = check_text(d, f, max, what);

	if (r < 0)
		return r;
	*ret = strndup((const char *)f->val, f->len);
	return *ret ? 0 : -ENOMEM;
}

static int get_path(struct dec *d, const struct tlv *f, const char *what, char **ret)
{
	const char *reason;
	char *s;
	int r = get_str(d, f, CT_IMAGE_STRING_MAX, what, &s);

	if (r < 0)
		return r;
	if (ct_image_path_check(s, &reason) < 0) {
		r = fail(d, "%s: refused path '%.64s': %s", what, s, reason);
		free(s);
		return r;
	}
	*ret = s;
	return 0;
}

static int get_comm(struct dec *d, const struct tlv *f, const char *what, char ret[16])
{
	int r = check_text(d, f, 15, what);

	if (r < 0)
		return r;
	memcpy(ret, f->val, f->len);
	ret[f->len] = 0;
	return 0;
}

static int get_blob(struct dec *d, const struct tlv *f, size_t max, size_t unit, const char *what,
		    uint8_t **ret, size_t *ret_n)
{
	if (f->len > max || f->len % unit != 0)
		return fail(d, "%s: field %u has a bad size (%u bytes)", what, f->tag, f->len);
	*ret = malloc(f->len ?: 1);
	if (!*ret)
		return -ENOMEM;
	memcpy(*ret, f->val, f->len);
	*ret_n = f->len / unit;
	return 0;
}

/* Makes room for one more element, at most max. */
static int grow(struct dec *d, void **array, size_t *alloc, size_t n, size_t elem, size_t max,
		const char *what)
{
	if (n >= max)
		return fail(d, "%s: more than %zu entries", what, max);
	if (n == *alloc) {
		size_t na = MIN(MAX(*alloc * 2, (size_t)8), max);
		void *p = reallocarray(*array, na, elem);

		if (!p)
			return -ENOMEM;
		memset((uint8_t *)p + n * elem, 0, (na - n) * elem);
		*array = p;
		*alloc = na;
	}
	return 0;
}

/* ---- header -------------------------------------------------------------------------------- */

int ct_image_header_decode(const uint8_t *buf, size_t size, enum ct_image_file_kind kind, char *err,
			   size_t errlen, struct ct_image_header *ret)
{
	struct dec d = {err, errlen};
	struct ct_image_header h;

	if (size < CT_IMAGE_HEADER_SIZE)
		return fail(&d, "truncated: %zu bytes, shorter than the header", size);
	h.magic = get_le32(buf);
	h.version = get_le32(buf + 4);
	h.flags = get_le32(buf + 8);
	h.payload_len = get_le64(buf + 16);
	h.payload_xxh3 = get_le64(buf + 24);
	if (h.magic != ct_image_magic(kind))
		return fail(&d, "not a %s file (bad magic %08x)",
			    ct_image_file_kind_to_string(kind), h.magic);
	if (get_le64(buf + 32) != XXH3_64bits(buf, 32))
		return fail(&d, "header checksum mismatch");
	if (h.version != CT_IMAGE_VERSION) {
		snprintf(err, errlen, "unsupported format version %u (this migrd reads version %u)",
			 h.version, CT_IMAGE_VERSION);
		return -EPROTONOSUPPORT;
	}
	if (h.flags != 0 || get_le32(buf + 12) != 0)
		return fail(&d, "unknown header flags %#x", h.flags);
	*ret = h;
	return 0;
}

/* ---- inventory ------------------------------------------------------------------------------ */

static int decode_file_entry(struct dec *d, const struct tlv *f, struct ct_image_file_entry *ret)
{
	const uint8_t *p = f->val;
	size_t left = f->len;
	uint64_t seen = 0;
	struct tlv g;
	int r;

	while ((r = tlv_next(d, &p, &left, "file entry", &g)) > 0) {
		if ((r = once(d, &seen, &g, "file entry")) < 0)
			return r;
		switch (g.tag) {
		case FILE_NAME:
			r = get_str(d, &g, CT_IMAGE_NAME_MAX, "file entry", &ret->name);
			if (r == 0 &&
			    (strempty(ret->name) || strchr(ret->name, '/') || ret->name[0] == '.'))
				r = fail(d, "file entry: bad file name '%.64s'", ret->name);
			break;
		case FILE_SIZE:
			r = get_u64(d, &g, "file entry", &ret->size);
			break;
		case FILE_XXH3:
			r = get_u64(d, &g, "file entry", &ret->xxh3);
			break;
		default:
			r = fail(d, "file entry: unknown field %u", g.tag);
		}
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	return require(d, seen, BIT(FILE_NAME) | BIT(FILE_SIZE) | BIT(FILE_XXH3), "file entry");
}

int ct_image_decode_inventory(const uint8_t *buf, size_t size, char *err, size_t errlen,
			      struct ct_image_inventory *ret)
{
	struct dec dd = {err, errlen}, *d = &dd;
	_cleanup_(ct_image_inventory_done) struct ct_image_inventory inv = {};
	uint64_t seen = 0, vdso[6];
	size_t alloc = 0;
	struct tlv f;
	int r;

	while ((r = tlv_next(d, &buf, &size, "inventory", &f)) > 0) {
		if (f.tag != INV_FILE && (r = once(d, &seen, &f, "inventory")) < 0)
			return r;
		switch (f.tag) {
		case INV_CONTAINER:
			r = get_str(d, &f, CT_IMAGE_NAME_MAX, "inventory", &inv.container);
			break;
		case INV_KERNEL:
			r = get_str(d, &f, CT_IMAGE_NAME_MAX, "inventory", &inv.kernel_release);
			break;
		case INV_ARCH:
			r = get_str(d, &f, 32, "inventory", &inv.arch);
			break;
		case INV_PAGE_SIZE:
			r = get_u32(d, &f, "inventory", &inv.page_size);
			if (r == 0 && inv.page_size != CT_IMAGE_PAGE_SIZE)
				r = fail(d, "inventory: page size %u is not supported",
					 inv.page_size);
			break;
		case INV_ROOT_PID:
			r = get_u32(d, &f, "inventory", &inv.root_pid);
			break;
		case INV_CREATED:
			r = get_u64(d, &f, "inventory", &inv.created_usec);
			break;
		case INV_VDSO:
			r = get_u64s(d, &f, "inventory", vdso, 6);
			inv.vdso = (struct ct_vdso_layout){vdso[0], vdso[1], vdso[2],
							   vdso[3], vdso[4], vdso[5]};
			break;
		case INV_FILE:
			r = grow(d, (void **)&inv.files, &alloc, inv.n_files, sizeof(*inv.files),
				 CT_IMAGE_FILES_MAX, "inventory");
			if (r == 0) {
				inv.n_files++;
				r = decode_file_entry(d, &f, &inv.files[inv.n_files - 1]);
			}
			break;
		default:
			r = fail(d, "inventory: unknown field %u", f.tag);
		}
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	r = require(d, seen,
		    BIT(INV_CONTAINER) | BIT(INV_KERNEL) | BIT(INV_ARCH) | BIT(INV_PAGE_SIZE) |
			    BIT(INV_ROOT_PID) | BIT(INV_CREATED) | BIT(INV_VDSO),
		    "inventory");
	if (r < 0)
		return r;
	inv.version = CT_IMAGE_VERSION;
	*ret = inv;
	inv = (struct ct_image_inventory){};
	return 0;
}

/* ---- task ----------------------------------------------------------------------------------- */

static int decode_creds(struct dec *d, const struct tlv *f, struct ct_creds *ret)
{
	const uint8_t *p = f->val;
	size_t left = f->len, n;
	uint64_t seen = 0;
	uint8_t *groups;
	struct tlv g;
	int r;

	while ((r = tlv_next(d, &p, &left, "creds", &g)) > 0) {
		if ((r = once(d, &seen, &g, "creds")) < 0)
			return r;
		switch (g.tag) {
		case CRED_UIDS:
		case CRED_GIDS:
			if (g.len != 16)
				return fail(d, "creds: field %u is %u bytes, expected 16", g.tag,
					    g.len);
			for (int i = 0; i < 4; i++)
				(g.tag == CRED_UIDS ? ret->uids : ret->gids)[i] =
					get_le32(g.val + 4 * i);
			break;
		case CRED_GROUPS:
			r = get_blob(d, &g, CT_IMAGE_GROUPS_MAX * 4, 4, "creds", &groups, &n);
			if (r < 0)
				return r;
			ret->groups = (uint32_t *)(void *)groups;
			ret->n_groups = n;
			for (size_t i = 0; i < n; i++)
				ret->groups[i] = get_le32(groups + 4 * i);
			break;
		case CRED_CAPS:
			r = get_u64s(d, &g, "creds", ret->caps, 5);
			break;
		case CRED_SECUREBITS:
			r = get_u32(d, &g, "creds", &ret->securebits);
			break;
		default:
			r = fail(d, "creds: unknown field %u", g.tag);
		}
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	return require(d, seen, BIT(CRED_UIDS) | BIT(CRED_GIDS) | BIT(CRED_CAPS), "creds");
}

static int decode_regset(struct dec *d, const struct tlv *f, struct ct_regset *ret)
{
	const uint8_t *p = f->val;
	size_t left = f->len, n;
	uint64_t seen = 0;
	struct tlv g;
	int r;

	while ((r = tlv_next(d, &p, &left, "regset", &g)) > 0) {
		if ((r = once(d, &seen, &g, "regset")) < 0)
			return r;
		if (g.tag == REGSET_TYPE)
			r = get_u32(d, &g, "regset", &ret->type);
		else if (g.tag == REGSET_DATA) {
			r = get_blob(d, &g, CT_IMAGE_REGSET_MAX, 1, "regset", &ret->data, &n);
			ret->size = (uint32_t)n;
		} else
			r = fail(d, "regset: unknown field %u", g.tag);
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	return require(d, seen, BIT(REGSET_TYPE) | BIT(REGSET_DATA), "regset");
}

static int decode_thread(struct dec *d, const struct tlv *f, struct ct_thread *ret)
{
	const uint8_t *p = f->val;
	size_t left = f->len, alloc = 0;
	uint64_t seen = 0;
	struct tlv g;
	int r;

	while ((r = tlv_next(d, &p, &left, "thread", &g)) > 0) {
		if (g.tag != THREAD_REGSET && (r = once(d, &seen, &g, "thread")) < 0)
			return r;
		switch (g.tag) {
		case THREAD_TID:
			r = get_u32(d, &g, "thread", &ret->tid);
			break;
		case THREAD_COMM:
			r = get_comm(d, &g, "thread", ret->comm);
			break;
		case THREAD_SIGMASK:
			r = get_u64(d, &g, "thread", &ret->sigmask);
			break;
		case THREAD_PENDING:
			r = get_u64(d, &g, "thread", &ret->sigpending);
			break;
		case THREAD_SIGINFO:
			r = get_blob(d, &g, CT_IMAGE_SIGINFO_MAX * CT_IMAGE_SIGINFO_SIZE,
				     CT_IMAGE_SIGINFO_SIZE, "thread", &ret->siginfo,
				     &ret->n_siginfo);
			break;
		case THREAD_ROBUST:
			if (g.len != 16)
				return fail(d, "thread: robust list is %u bytes, expected 16",
					    g.len);
			ret->robust_list = get_le64(g.val);
			ret->robust_list_len = get_le64(g.val + 8);
			break;
		case THREAD_TID_ADDRESS:
			r = get_u64(d, &g, "thread", &ret->tid_address);
			break;
		case THREAD_RSEQ:
			if (g.len != 16)
				return fail(d, "thread: rseq is %u bytes, expected 16", g.len);
			ret->rseq = get_le64(g.val);
			ret->rseq_len = get_le32(g.val + 8);
			ret->rseq_sig = get_le32(g.val + 12);
			break;
		case THREAD_REGSET:
			r = grow(d, (void **)&ret->regsets, &alloc, ret->n_regsets,
				 sizeof(*ret->regsets), CT_IMAGE_REGSETS_MAX, "thread regsets");
			if (r == 0)
				r = decode_regset(d, &g, &ret->regsets[ret->n_regsets++]);
			break;
		default:
			r = fail(d, "thread: unknown field %u", g.tag);
		}
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	return require(d, seen,
		       BIT(THREAD_TID) | BIT(THREAD_COMM) | BIT(THREAD_SIGMASK) |
			       BIT(THREAD_PENDING) | BIT(THREAD_ROBUST) | BIT(THREAD_TID_ADDRESS) |
			       BIT(THREAD_RSEQ),
		       "thread");
}

static int decode_task_field(struct dec *d, const struct tlv *f, struct ct_task *t,
			     size_t *threads_alloc)
{
	uint64_t v[4 * CT_IMAGE_SIGNALS];
	int r;

	switch (f->tag) {
	case TASK_PID:
		return get_u32(d, f, "task", &t->pid);
	case TASK_PPID:
		return get_u32(d, f, "task", &t->ppid);
	case TASK_PGID:
		return get_u32(d, f, "task", &t->pgid);
	case TASK_SID:
		return get_u32(d, f, "task", &t->sid);
	case TASK_COMM:
		return get_comm(d, f, "task", t->comm);
	case TASK_CREDS:
		return decode_creds(d, f, &t->creds);
	case TASK_RLIMITS:
		r = get_u64s(d, f, "task rlimits", v, 2 * CT_IMAGE_RLIMITS);
		for (size_t i = 0; r == 0 && i < CT_IMAGE_RLIMITS; i++)
			t->rlimits[i] = (struct ct_rlimit){v[2 * i], v[2 * i + 1]};
		return r;
	case TASK_SIGACTIONS:
		r = get_u64s(d, f, "task sigactions", v, 4 * CT_IMAGE_SIGNALS);
		for (size_t i = 0; r == 0 && i < CT_IMAGE_SIGNALS; i++)
			t->sigactions[i] = (struct ct_sigaction){v[4 * i], v[4 * i + 1],
								 v[4 * i + 2], v[4 * i + 3]};
		return r;
	case TASK_SHARED_PENDING:
		return get_u64(d, f, "task", &t->shared_pending);
	case TASK_SHARED_SIGINFO:
		return get_blob(d, f, CT_IMAGE_SIGINFO_MAX * CT_IMAGE_SIGINFO_SIZE,
				CT_IMAGE_SIGINFO_SIZE, "task", &t->shared_siginfo,
				&t->n_shared_siginfo);
	case TASK_CWD:
		return get_path(d, f, "task cwd", &t->cwd);
	case TASK_ROOT:
		return get_path(d, f, "task root", &t->root);
	case TASK_THREAD:
		r = grow(d, (void **)&t->threads, threads_alloc, t->n_threads, sizeof(*t->threads),
			 CT_IMAGE_THREADS_MAX, "task threads");
		if (r < 0)
			return r;
		t->n_threads++;
		return decode_thread(d, f, &t->threads[t->n_threads - 1]);
	default:
		return fail(d, "task: unknown field %u", f->tag);
	}
}

int ct_image_decode_task(const uint8_t *buf, size_t size, char *err, size_t errlen,
			 struct ct_task *ret)
{
	struct dec dd = {err, errlen}, *d = &dd;
	_cleanup_(ct_task_done) struct ct_task t = {};
	size_t alloc = 0;
	uint64_t seen = 0;
	struct tlv f;
	int r;

	while ((r = tlv_next(d, &buf, &size, "task", &f)) > 0) {
		if (f.tag != TASK_THREAD && (r = once(d, &seen, &f, "task")) < 0)
			return r;
		r = decode_task_field(d, &f, &t, &alloc);
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	r = require(d, seen,
		    BIT(TASK_PID) | BIT(TASK_PPID) | BIT(TASK_PGID) | BIT(TASK_SID) |
			    BIT(TASK_COMM) | BIT(TASK_CREDS) | BIT(TASK_RLIMITS) |
			    BIT(TASK_SIGACTIONS) | BIT(TASK_SHARED_PENDING) | BIT(TASK_CWD) |
			    BIT(TASK_ROOT),
		    "task");
	if (r < 0)
		return r;
	if (t.pid == 0)
		return fail(d, "task: pid 0");
	if (t.n_threads == 0 || t.threads[0].tid != t.pid)
		return fail(d, "task: the first thread must be the leader (tid %u)", t.pid);
	/* Ascending after the leader: unique without a quadratic check. */
	for (size_t i = 1; i < t.n_threads; i++)
		if (t.threads[i].tid == t.pid ||
		    (i > 1 && t.threads[i].tid <= t.threads[i - 1].tid))
			return fail(d, "task: thread ids are not unique and ascending (tid %u)",
				    t.threads[i].tid);
	*ret = t;
	t = (struct ct_task){};
	return 0;
}

/* ---- mm ------------------------------------------------------------------------------------- */

static int check_vma(struct dec *d, const struct ct_vma *v, size_t i)
{
	if (v->start >= v->end || v->start % CT_IMAGE_PAGE_SIZE || v->end % CT_IMAGE_PAGE_SIZE ||
	    v->end > CT_IMAGE_ADDR_LIMIT)
		return fail(d, "vma %zu: bad range %#" PRIx64 "-%#" PRIx64, i, v->start, v->end);
	if (v->kind >= _CT_VMA_KIND_MAX || v->pages >= _CT_VMA_PAGES_MAX || (v->prot & ~7U))
		return fail(d, "vma %zu: unknown kind, pages or protection", i);
	if ((v->kind == CT_VMA_FILE_PRIVATE || v->kind == CT_VMA_FILE_SHARED) && !v->path)
		return fail(d, "vma %zu: a file mapping without a path", i);
	return 0;
}

static int decode_vma(struct dec *d, const struct tlv *f, size_t i, struct ct_vma *ret)
{
	const uint8_t *p = f->val;
	size_t left = f->len;
	uint64_t seen = 0;
	struct tlv g;
	int r;

	while ((r = tlv_next(d, &p, &left, "vma", &g)) > 0) {
		if ((r = once(d, &seen, &g, "vma")) < 0)
			return r;
		switch (g.tag) {
		case VMA_START:
			r = get_u64(d, &g, "vma", &ret->start);
			break;
		case VMA_END:
			r = get_u64(d, &g, "vma", &ret->end);
			break;
		case VMA_PGOFF:
			r = get_u64(d, &g, "vma", &ret->pgoff);
			break;
		case VMA_PROT:
			r = get_u32(d, &g, "vma", &ret->prot);
			break;
		case VMA_FLAGS:
			r = get_u32(d, &g, "vma", &ret->flags);
			break;
		case VMA_KIND:
			r = get_u32(d, &g, "vma", &ret->kind);
			break;
		case VMA_PAGES:
			r = get_u32(d, &g, "vma", &ret->pages);
			break;
		case VMA_SHMID:
			r = get_u64(d, &g, "vma", &ret->shmid);
			break;
		case VMA_PATH:
			r = get_path(d, &g, "vma", &ret->path);
			break;
		default:
			r = fail(d, "vma: unknown field %u", g.tag);
		}
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	r = require(d, seen,
		    BIT(VMA_START) | BIT(VMA_END) | BIT(VMA_PGOFF) | BIT(VMA_PROT) |
			    BIT(VMA_FLAGS) | BIT(VMA_KIND) | BIT(VMA_PAGES),
		    "vma");
	if (r < 0)
		return r;
	if ((ret->kind == CT_VMA_ANON_SHARED || ret->pages == CT_VMA_PAGES_SHM) &&
	    !(seen & BIT(VMA_SHMID)))
		return fail(d, "vma %zu: shared memory without an id", i);
	return check_vma(d, ret, i);
}

int ct_image_decode_mm(const uint8_t *buf, size_t size, char *err, size_t errlen, struct ct_mm *ret)
{
	struct dec dd = {err, errlen}, *d = &dd;
	_cleanup_(ct_mm_done) struct ct_mm mm = {};
	size_t alloc = 0, n;
	uint64_t seen = 0;
	uint8_t *auxv;
	struct tlv f;
	int r;

	while ((r = tlv_next(d, &buf, &size, "mm", &f)) > 0) {
		if (f.tag != MM_VMA && (r = once(d, &seen, &f, "mm")) < 0)
			return r;
		switch (f.tag) {
		case MM_PID:
			r = get_u32(d, &f, "mm", &mm.pid);
			break;
		case MM_FIELDS:
			r = get_u64s(d, &f, "mm", mm.fields, CT_MM_FIELDS);
			break;
		case MM_AUXV:
			r = get_blob(d, &f, CT_IMAGE_AUXV_MAX * 8, 8, "mm auxv", &auxv, &n);
			if (r < 0)
				break;
			mm.auxv = (uint64_t *)(void *)auxv;
			mm.n_auxv = n;
			for (size_t i = 0; i < n; i++)
				mm.auxv[i] = get_le64(auxv + 8 * i);
			break;
		case MM_EXE:
			r = get_path(d, &f, "mm exe", &mm.exe);
			break;
		case MM_VMA:
			r = grow(d, (void **)&mm.vmas, &alloc, mm.n_vmas, sizeof(*mm.vmas),
				 CT_IMAGE_VMAS_MAX, "mm vmas");
			if (r < 0)
				break;
			mm.n_vmas++;
			r = decode_vma(d, &f, mm.n_vmas - 1, &mm.vmas[mm.n_vmas - 1]);
			if (r == 0 && mm.n_vmas > 1 &&
			    mm.vmas[mm.n_vmas - 1].start < mm.vmas[mm.n_vmas - 2].end)
				r = fail(d, "vma %zu: overlaps or is out of order", mm.n_vmas - 1);
			break;
		default:
			r = fail(d, "mm: unknown field %u", f.tag);
		}
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	r = require(d, seen, BIT(MM_PID) | BIT(MM_FIELDS) | BIT(MM_AUXV), "mm");
	if (r < 0)
		return r;
	*ret = mm;
	mm = (struct ct_mm){};
	return 0;
}

/* ---- fds ------------------------------------------------------------------------------------ */

static int decode_fd(struct dec *d, const struct tlv *f, struct ct_fd *ret)
{
	const uint8_t *p = f->val;
	size_t left = f->len, n;
	uint64_t seen = 0;
	struct tlv g;
	int r;

	while ((r = tlv_next(d, &p, &left, "fd", &g)) > 0) {
		if ((r = once(d, &seen, &g, "fd")) < 0)
			return r;
		switch (g.tag) {
		case FD_NUM:
			r = get_u32(d, &g, "fd", &ret->fd);
			break;
		case FD_TYPE:
			r = get_u32(d, &g, "fd", &ret->type);
			break;
		case FD_FLAGS:
			r = get_u32(d, &g, "fd", &ret->flags);
			break;
		case FD_FDFLAGS:
			r = get_u32(d, &g, "fd", &ret->fd_flags);
			break;
		case FD_POS:
			r = get_u64(d, &g, "fd", &ret->pos);
			break;
		case FD_PATH:
			r = get_str(d, &g, CT_IMAGE_STRING_MAX, "fd", &ret->path);
			break;
		case FD_DATA:
			r = get_blob(d, &g, CT_IMAGE_FD_DATA_MAX, 1, "fd", &ret->data, &n);
			ret->data_size = (uint32_t)n;
			break;
		default:
			r = fail(d, "fd: unknown field %u", g.tag);
		}
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	r = require(d, seen,
		    BIT(FD_NUM) | BIT(FD_TYPE) | BIT(FD_FLAGS) | BIT(FD_FDFLAGS) | BIT(FD_POS),
		    "fd");
	if (r < 0)
		return r;
	if (ret->type >= _CT_FD_TYPE_MAX || ret->fd >= (1U << 30))
		return fail(d, "fd %u: unknown type %u or bad number", ret->fd, ret->type);
	/* Names of files the restore will open; sockets, memfds, pipes name no path. */
	if (ret->path &&
	    (ret->type == CT_FD_REG || ret->type == CT_FD_DIR || ret->type == CT_FD_FIFO ||
	     ret->type == CT_FD_CHR || ret->type == CT_FD_TTY)) {
		const char *reason;

		if (ct_image_path_check(ret->path, &reason) < 0)
			return fail(d, "fd %u: refused path '%.64s': %s", ret->fd, ret->path,
				    reason);
	}
	return 0;
}

int ct_image_decode_fds(const uint8_t *buf, size_t size, char *err, size_t errlen,
			struct ct_fds *ret)
{
	struct dec dd = {err, errlen}, *d = &dd;
	_cleanup_(ct_fds_done) struct ct_fds fds = {};
	size_t alloc = 0;
	uint64_t seen = 0;
	struct tlv f;
	int r;

	while ((r = tlv_next(d, &buf, &size, "fds", &f)) > 0) {
		if (f.tag == FDS_PID) {
			if ((r = once(d, &seen, &f, "fds")) == 0)
				r = get_u32(d, &f, "fds", &fds.pid);
		} else if (f.tag == FDS_FD) {
			r = grow(d, (void **)&fds.fds, &alloc, fds.n_fds, sizeof(*fds.fds),
				 CT_IMAGE_FDS_MAX, "fds");
			if (r < 0)
				return r;
			fds.n_fds++;
			r = decode_fd(d, &f, &fds.fds[fds.n_fds - 1]);
			if (r == 0 && fds.n_fds > 1 &&
			    fds.fds[fds.n_fds - 1].fd <= fds.fds[fds.n_fds - 2].fd)
				r = fail(d, "fd %u: duplicate or out of order",
					 fds.fds[fds.n_fds - 1].fd);
		} else
			r = fail(d, "fds: unknown field %u", f.tag);
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	r = require(d, seen, BIT(FDS_PID), "fds");
	if (r < 0)
		return r;
	*ret = fds;
	fds = (struct ct_fds){};
	return 0;
}

/* ---- pages index ---------------------------------------------------------------------------- */

/* Data runs must fill the chunks in order, every page exactly once: the cursor walks them. */
static int check_runs(struct dec *d, struct ct_pages *p)
{
	uint64_t next_addr = 0;
	size_t chunk = 0;
	uint32_t page = 0;

	for (size_t i = 0; i < p->n_runs; i++) {
		const struct ct_page_run *r = &p->runs[i];

		if (r->addr % CT_IMAGE_PAGE_SIZE || r->n_pages == 0 || r->addr < next_addr ||
		    r->n_pages > (CT_IMAGE_ADDR_LIMIT - r->addr) / CT_IMAGE_PAGE_SIZE)
			return fail(d,
				    "index: run %zu at %#" PRIx64 " is misaligned, empty, "
				    "overlapping or out of order",
				    i, r->addr);
		next_addr = r->addr + (uint64_t)r->n_pages * CT_IMAGE_PAGE_SIZE;
		if (r->flags == CT_PAGE_RUN_ZERO) {
			if (r->chunk != 0 || r->chunk_page != 0)
				return fail(d, "index: zero run %zu points into a chunk", i);
			p->n_zero_pages += r->n_pages;
			continue;
		}
		if (r->flags != 0)
			return fail(d, "index: run %zu has unknown flags %#x", i, r->flags);
		if (chunk >= p->n_chunks || r->chunk != chunk || r->chunk_page != page ||
		    r->n_pages > p->chunks[chunk].n_pages - page)
			return fail(d, "index: run %zu does not match chunk %zu", i, chunk);
		page += r->n_pages;
		if (page == p->chunks[chunk].n_pages) {
			chunk++;
			page = 0;
		}
		p->n_data_pages += r->n_pages;
	}
	if (chunk != p->n_chunks)
		return fail(d, "index: chunk %zu holds pages no run refers to", chunk);
	return 0;
}

int ct_image_decode_pages_index(const uint8_t *buf, size_t size, uint64_t chunks_len, char *err,
				size_t errlen, struct ct_pages *ret)
{
	struct dec dd = {err, errlen}, *d = &dd;
	_cleanup_(ct_pages_done) struct ct_pages p = {};
	uint64_t seen = 0, offset = 0;
	struct tlv f;
	int r;

	while ((r = tlv_next(d, &buf, &size, "index", &f)) > 0) {
		if ((r = once(d, &seen, &f, "index")) < 0)
			return r;
		if (f.tag == IDX_CHUNKS) {
			if (f.len % CT_CHUNK_ENTRY_SIZE ||
			    f.len / CT_CHUNK_ENTRY_SIZE > CT_PAGES_CHUNKS_MAX)
				return fail(d, "index: bad chunk table size %u", f.len);
			p.n_chunks = f.len / CT_CHUNK_ENTRY_SIZE;
			p.chunks = calloc(p.n_chunks ?: 1, sizeof(*p.chunks));
			if (!p.chunks)
				return -ENOMEM;
			for (size_t i = 0; i < p.n_chunks; i++) {
				const uint8_t *e = f.val + i * CT_CHUNK_ENTRY_SIZE;
				struct ct_page_chunk *c = &p.chunks[i];

				*c = (struct ct_page_chunk){get_le64(e), get_le32(e + 8),
							    get_le32(e + 12), get_le64(e + 16)};
				if (c->offset != offset || c->size == 0 ||
				    c->size > 2 * CT_PAGES_CHUNK_PAGES * CT_IMAGE_PAGE_SIZE ||
				    c->n_pages == 0 || c->n_pages > CT_PAGES_CHUNK_PAGES)
					return fail(d, "index: chunk %zu has a bad offset or size",
						    i);
				offset += c->size;
				p.compressed_size += c->size;
			}
		} else if (f.tag == IDX_RUNS) {
			if (f.len % CT_RUN_ENTRY_SIZE ||
			    f.len / CT_RUN_ENTRY_SIZE > CT_PAGES_RUNS_MAX)
				return fail(d, "index: bad run table size %u", f.len);
			p.n_runs = f.len / CT_RUN_ENTRY_SIZE;
			p.runs = calloc(p.n_runs ?: 1, sizeof(*p.runs));
			if (!p.runs)
				return -ENOMEM;
			for (size_t i = 0; i < p.n_runs; i++) {
				const uint8_t *e = f.val + i * CT_RUN_ENTRY_SIZE;

				p.runs[i] = (struct ct_page_run){get_le64(e), get_le32(e + 8),
								 get_le32(e + 12), get_le32(e + 16),
								 get_le32(e + 20)};
			}
		} else
			return fail(d, "index: unknown field %u", f.tag);
	}
	if (r < 0)
		return r;
	r = require(d, seen, BIT(IDX_CHUNKS) | BIT(IDX_RUNS), "index");
	if (r < 0)
		return r;
	if (offset != chunks_len)
		return fail(d, "index: chunks cover %" PRIu64 " bytes, the file has %" PRIu64,
			    offset, chunks_len);
	r = check_runs(d, &p);
	if (r < 0)
		return r;
	*ret = p;
	p = (struct ct_pages){};
	return 0;
}
