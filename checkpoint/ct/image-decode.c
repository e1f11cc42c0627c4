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

int ct_dec_fail(struct ct_dec *d, const char *format, ...)
{
	va_list ap;

	va_start(ap, format);
	vsnprintf(d->err, d->errlen, format, ap);
	va_end(ap);
	return -EBADMSG;
}

/* Returns 1 with the next field, 0 at the end, or -EBADMSG. */
int ct_dec_next(struct ct_dec *d, const uint8_t **p, size_t *left, const char *what,
		struct ct_tlv *ret)
{
	if (*left == 0)
		return 0;
	if (*left < CT_IMAGE_TLV_HEADER_SIZE)
		return ct_dec_fail(d, "%s: truncated field header", what);
	ret->tag = get_le16(*p);
	ret->len = get_le32(*p + 4);
	if (get_le16(*p + 2) != 0)
		return ct_dec_fail(d, "%s: field %u has unknown flags", what, ret->tag);
	if (ret->len > *left - CT_IMAGE_TLV_HEADER_SIZE)
		return ct_dec_fail(d, "%s: field %u is %u bytes, only %zu left", what, ret->tag,
				   ret->len, *left - CT_IMAGE_TLV_HEADER_SIZE);
	ret->val = *p + CT_IMAGE_TLV_HEADER_SIZE;
	*p += CT_IMAGE_TLV_HEADER_SIZE + ret->len;
	*left -= CT_IMAGE_TLV_HEADER_SIZE + ret->len;
	return 1;
}

/* Once per field: seen is a bitmask of tags. */
int ct_dec_once(struct ct_dec *d, uint64_t *seen, const struct ct_tlv *f, const char *what)
{
	if (f->tag < 64 && (*seen & (UINT64_C(1) << f->tag)))
		return ct_dec_fail(d, "%s: field %u appears twice", what, f->tag);
	if (f->tag < 64)
		*seen |= UINT64_C(1) << f->tag;
	return 0;
}

int ct_dec_require(struct ct_dec *d, uint64_t seen, uint64_t need, const char *what)
{
	uint64_t missing = need & ~seen;

	if (missing)
		return ct_dec_fail(d, "%s: field %d is missing", what, __builtin_ctzll(missing));
	return 0;
}

int ct_dec_u32(struct ct_dec *d, const struct ct_tlv *f, const char *what, uint32_t *ret)
{
	if (f->len != 4)
		return ct_dec_fail(d, "%s: field %u is %u bytes, expected 4", what, f->tag, f->len);
	*ret = get_le32(f->val);
	return 0;
}

int ct_dec_u64(struct ct_dec *d, const struct ct_tlv *f, const char *what, uint64_t *ret)
{
	if (f->len != 8)
		return ct_dec_fail(d, "%s: field %u is %u bytes, expected 8", what, f->tag, f->len);
	*ret = get_le64(f->val);
	return 0;
}

int ct_dec_u64s(struct ct_dec *d, const struct ct_tlv *f, const char *what, uint64_t *ret, size_t n)
{
	if (f->len != n * 8)
		return ct_dec_fail(d, "%s: field %u is %u bytes, expected %zu", what, f->tag,
				   f->len, n * 8);
	for (size_t i = 0; i < n; i++)
		ret[i] = get_le64(f->val + 8 * i);
	return 0;
}

int ct_dec_text(struct ct_dec *d, const struct ct_tlv *f, size_t max, const char *what)
{
	if (f->len > max)
		return ct_dec_fail(d, "%s: field %u is %u bytes, at most %zu allowed", what, f->tag,
				   f->len, max);
	if (memchr(f->val, 0, f->len))
		return ct_dec_fail(d, "%s: field %u has a NUL byte", what, f->tag);
	return 0;
}

int ct_dec_str(struct ct_dec *d, const struct ct_tlv *f, size_t max, const char *what, char **ret)
{
	int r = ct_dec_text(d, f, max, what);

	if (r < 0)
		return r;
	*ret = strndup((const char *)f->val, f->len);
	return *ret ? 0 : -ENOMEM;
}

int ct_dec_path(struct ct_dec *d, const struct ct_tlv *f, const char *what, char **ret)
{
	const char *reason;
	char *s;
	int r = ct_dec_str(d, f, CT_IMAGE_STRING_MAX, what, &s);

	if (r < 0)
		return r;
	if (ct_image_path_check(s, &reason) < 0) {
		r = ct_dec_fail(d, "%s: refused path '%.64s': %s", what, s, reason);
		free(s);
		return r;
	}
	*ret = s;
	return 0;
}

int ct_dec_comm(struct ct_dec *d, const struct ct_tlv *f, const char *what, char ret[16])
{
	int r = ct_dec_text(d, f, 15, what);

	if (r < 0)
		return r;
	memcpy(ret, f->val, f->len);
	ret[f->len] = 0;
	return 0;
}

int ct_dec_blob(struct ct_dec *d, const struct ct_tlv *f, size_t max, size_t unit, const char *what,
		uint8_t **ret, size_t *ret_n)
{
	if (f->len > max || f->len % unit != 0)
		return ct_dec_fail(d, "%s: field %u has a bad size (%u bytes)", what, f->tag,
				   f->len);
	*ret = malloc(f->len ?: 1);
	if (!*ret)
		return -ENOMEM;
	memcpy(*ret, f->val, f->len);
	*ret_n = f->len / unit;
	return 0;
}

/* Makes room for one more element, at most max. */
int ct_dec_grow(struct ct_dec *d, void **array, size_t *alloc, size_t n, size_t elem, size_t max,
		const char *what)
{
	if (n >= max)
		return ct_dec_fail(d, "%s: more than %zu entries", what, max);
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
	struct ct_dec d = {err, errlen};
	struct ct_image_header h;

	if (size < CT_IMAGE_HEADER_SIZE)
		return ct_dec_fail(&d, "truncated: %zu bytes, shorter than the header", size);
	h.magic = get_le32(buf);
	h.version = get_le32(buf + 4);
	h.flags = get_le32(buf + 8);
	h.payload_len = get_le64(buf + 16);
	h.payload_xxh3 = get_le64(buf + 24);
	if (h.magic != ct_image_magic(kind))
		return ct_dec_fail(&d, "not a %s file (bad magic %08x)",
				   ct_image_file_kind_to_string(kind), h.magic);
	if (get_le64(buf + 32) != XXH3_64bits(buf, 32))
		return ct_dec_fail(&d, "header checksum mismatch");
	if (h.version != CT_IMAGE_VERSION) {
		snprintf(err, errlen, "unsupported format version %u (this migrd reads version %u)",
			 h.version, CT_IMAGE_VERSION);
		return -EPROTONOSUPPORT;
	}
	if (h.flags != 0 || get_le32(buf + 12) != 0)
		return ct_dec_fail(&d, "unknown header flags %#x", h.flags);
	*ret = h;
	return 0;
}

/* ---- inventory ------------------------------------------------------------------------------ */

static int decode_file_entry(struct ct_dec *d, const struct ct_tlv *f,
			     struct ct_image_file_entry *ret)
{
	const uint8_t *p = f->val;
	size_t left = f->len;
	uint64_t seen = 0;
	struct ct_tlv g;
	int r;

	while ((r = ct_dec_next(d, &p, &left, "file entry", &g)) > 0) {
		if ((r = ct_dec_once(d, &seen, &g, "file entry")) < 0)
			return r;
		switch (g.tag) {
		case FILE_NAME:
			r = ct_dec_str(d, &g, CT_IMAGE_NAME_MAX, "file entry", &ret->name);
			if (r == 0 &&
			    (strempty(ret->name) || strchr(ret->name, '/') || ret->name[0] == '.'))
				r = ct_dec_fail(d, "file entry: bad file name '%.64s'", ret->name);
			break;
		case FILE_SIZE:
			r = ct_dec_u64(d, &g, "file entry", &ret->size);
			break;
		case FILE_XXH3:
			r = ct_dec_u64(d, &g, "file entry", &ret->xxh3);
			break;
		default:
			r = ct_dec_fail(d, "file entry: unknown field %u", g.tag);
		}
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	return ct_dec_require(d, seen, TAG_BIT(FILE_NAME) | TAG_BIT(FILE_SIZE) | TAG_BIT(FILE_XXH3),
			      "file entry");
}

/* "NAME=VALUE" of a sysctl under /proc/sys/net, names ascending (so none twice). */
static int decode_net_sysctl(struct ct_dec *d, const struct ct_tlv *f,
			     struct ct_image_inventory *inv, size_t *alloc)
{
	_cleanup_free_ char *kv = NULL;
	struct ct_image_sysctl *c;
	char *eq;
	int r;

	r = ct_dec_str(d, f, CT_IMAGE_NET_SYSCTL_NAME_MAX + 1 + CT_IMAGE_NET_SYSCTL_MAX,
		       "inventory network sysctl", &kv);
	if (r < 0)
		return r;
	eq = strchr(kv, '=');
	if (!eq)
		return ct_dec_fail(d, "inventory: network sysctl: no value");
	*eq = 0;
	if (!ct_image_net_sysctl_name_ok(kv))
		return ct_dec_fail(d, "inventory: network sysctl: bad name '%.64s'", kv);
	if (!ct_image_sysctl_value_ok(eq + 1, CT_IMAGE_NET_SYSCTL_MAX))
		return ct_dec_fail(d, "inventory: network sysctl %s: bad value", kv);
	if (inv->n_net_sysctls > 0 &&
	    strcmp(inv->net_sysctls[inv->n_net_sysctls - 1].name, kv) >= 0)
		return ct_dec_fail(d, "inventory: network sysctl %s: out of order or twice", kv);
	r = ct_dec_grow(d, (void **)&inv->net_sysctls, alloc, inv->n_net_sysctls,
			sizeof(*inv->net_sysctls), CT_IMAGE_NET_SYSCTLS_MAX,
			"inventory network sysctls");
	if (r < 0)
		return r;
	c = &inv->net_sysctls[inv->n_net_sysctls];
	c->name = strdup(kv);
	c->value = strdup(eq + 1);
	if (!c->name || !c->value) {
		free(c->name);
		free(c->value);
		return -ENOMEM;
	}
	inv->n_net_sysctls++;
	return 0;
}

int ct_image_decode_inventory(const uint8_t *buf, size_t size, char *err, size_t errlen,
			      struct ct_image_inventory *ret)
{
	struct ct_dec dd = {err, errlen}, *d = &dd;
	_cleanup_(ct_image_inventory_done) struct ct_image_inventory inv = {};
	uint64_t seen = 0, vdso[6] = {0}, clocks[3] = {0};
	size_t alloc = 0, alloc_s = 0;
	struct ct_tlv f;
	int r;

	while ((r = ct_dec_next(d, &buf, &size, "inventory", &f)) > 0) {
		if (f.tag != INV_FILE && f.tag != INV_NET_SYSCTL &&
		    (r = ct_dec_once(d, &seen, &f, "inventory")) < 0)
			return r;
		switch (f.tag) {
		case INV_CONTAINER:
			r = ct_dec_str(d, &f, CT_IMAGE_NAME_MAX, "inventory", &inv.container);
			break;
		case INV_KERNEL:
			r = ct_dec_str(d, &f, CT_IMAGE_NAME_MAX, "inventory", &inv.kernel_release);
			break;
		case INV_ARCH:
			r = ct_dec_str(d, &f, 32, "inventory", &inv.arch);
			break;
		case INV_PAGE_SIZE:
			r = ct_dec_u32(d, &f, "inventory", &inv.page_size);
			if (r == 0 && inv.page_size != CT_IMAGE_PAGE_SIZE)
				r = ct_dec_fail(d, "inventory: page size %u is not supported",
						inv.page_size);
			break;
		case INV_ROOT_PID:
			r = ct_dec_u32(d, &f, "inventory", &inv.root_pid);
			break;
		case INV_CREATED:
			r = ct_dec_u64(d, &f, "inventory", &inv.created_usec);
			break;
		case INV_VDSO:
			r = ct_dec_u64s(d, &f, "inventory", vdso, 6);
			inv.vdso = (struct ct_image_vdso_layout){vdso[0], vdso[1], vdso[2],
								 vdso[3], vdso[4], vdso[5]};
			break;
		case INV_HOSTNAME:
			r = ct_dec_str(d, &f, CT_IMAGE_NAME_MAX, "inventory hostname",
				       &inv.hostname);
			break;
		case INV_NETNS:
			r = ct_dec_u32(d, &f, "inventory", &inv.netns);
			break;
		case INV_DOMAINNAME:
			r = ct_dec_str(d, &f, CT_IMAGE_NAME_MAX, "inventory domain name",
				       &inv.domainname);
			break;
		case INV_CLOCKS:
			r = ct_dec_u64s(d, &f, "inventory", clocks, 3);
			if (r == 0 && (clocks[0] == 0 || clocks[1] == 0 || clocks[2] == 0 ||
				       clocks[0] > CT_IMAGE_CLOCK_MAX_NS ||
				       clocks[1] > CT_IMAGE_CLOCK_MAX_NS ||
				       clocks[2] > CT_IMAGE_CLOCK_MAX_NS))
				r = ct_dec_fail(d, "inventory: clock readings out of range");
			inv.clocks = (struct ct_image_clocks){clocks[0], clocks[1], clocks[2]};
			break;
		case INV_NET_SYSCTL:
			r = decode_net_sysctl(d, &f, &inv, &alloc_s);
			break;
		case INV_FILE:
			r = ct_dec_grow(d, (void **)&inv.files, &alloc, inv.n_files,
					sizeof(*inv.files), CT_IMAGE_FILES_MAX, "inventory");
			if (r == 0) {
				inv.n_files++;
				r = decode_file_entry(d, &f, &inv.files[inv.n_files - 1]);
			}
			break;
		default:
			r = ct_dec_fail(d, "inventory: unknown field %u", f.tag);
		}
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	r = ct_dec_require(d, seen,
			   TAG_BIT(INV_CONTAINER) | TAG_BIT(INV_KERNEL) | TAG_BIT(INV_ARCH) |
				   TAG_BIT(INV_PAGE_SIZE) | TAG_BIT(INV_ROOT_PID) |
				   TAG_BIT(INV_CREATED) | TAG_BIT(INV_VDSO),
			   "inventory");
	if (r < 0)
		return r;
	if (inv.n_net_sysctls > 0 && !inv.netns)
		return ct_dec_fail(d, "inventory: network sysctls without a network namespace");
	inv.version = CT_IMAGE_VERSION;
	*ret = inv;
	inv = (struct ct_image_inventory){};
	return 0;
}

/* ---- task ----------------------------------------------------------------------------------- */

static int decode_creds(struct ct_dec *d, const struct ct_tlv *f, struct ct_image_creds *ret)
{
	const uint8_t *p = f->val;
	size_t left = f->len, n = 0;
	uint64_t seen = 0;
	uint8_t *groups = NULL;
	struct ct_tlv g;
	int r;

	while ((r = ct_dec_next(d, &p, &left, "creds", &g)) > 0) {
		if ((r = ct_dec_once(d, &seen, &g, "creds")) < 0)
			return r;
		switch (g.tag) {
		case CRED_UIDS:
		case CRED_GIDS:
			if (g.len != 16)
				return ct_dec_fail(d, "creds: field %u is %u bytes, expected 16",
						   g.tag, g.len);
			for (int i = 0; i < 4; i++)
				(g.tag == CRED_UIDS ? ret->uids : ret->gids)[i] =
					get_le32(g.val + 4 * i);
			break;
		case CRED_GROUPS:
			r = ct_dec_blob(d, &g, CT_IMAGE_GROUPS_MAX * 4, 4, "creds", &groups, &n);
			if (r < 0)
				return r;
			ret->groups = (uint32_t *)(void *)groups;
			ret->n_groups = n;
			for (size_t i = 0; i < n; i++)
				ret->groups[i] = get_le32(groups + 4 * i);
			break;
		case CRED_CAPS:
			r = ct_dec_u64s(d, &g, "creds", ret->caps, 5);
			break;
		case CRED_SECUREBITS:
			r = ct_dec_u32(d, &g, "creds", &ret->securebits);
			break;
		default:
			r = ct_dec_fail(d, "creds: unknown field %u", g.tag);
		}
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	return ct_dec_require(d, seen, TAG_BIT(CRED_UIDS) | TAG_BIT(CRED_GIDS) | TAG_BIT(CRED_CAPS),
			      "creds");
}

static int decode_regset(struct ct_dec *d, const struct ct_tlv *f, struct ct_image_regset *ret)
{
	const uint8_t *p = f->val;
	size_t left = f->len, n = 0;
	uint64_t seen = 0;
	struct ct_tlv g;
	int r;

	while ((r = ct_dec_next(d, &p, &left, "regset", &g)) > 0) {
		if ((r = ct_dec_once(d, &seen, &g, "regset")) < 0)
			return r;
		if (g.tag == REGSET_TYPE)
			r = ct_dec_u32(d, &g, "regset", &ret->type);
		else if (g.tag == REGSET_DATA) {
			r = ct_dec_blob(d, &g, CT_IMAGE_REGSET_MAX, 1, "regset", &ret->data, &n);
			ret->size = (uint32_t)n;
		} else
			r = ct_dec_fail(d, "regset: unknown field %u", g.tag);
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	return ct_dec_require(d, seen, TAG_BIT(REGSET_TYPE) | TAG_BIT(REGSET_DATA), "regset");
}

static int dec_u32s(struct ct_dec *d, const struct ct_tlv *f, const char *what, uint32_t *ret,
		    size_t n)
{
	if (f->len != 4 * n)
		return ct_dec_fail(d, "%s is %u bytes, expected %zu", what, f->len, 4 * n);
	for (size_t i = 0; i < n; i++)
		ret[i] = get_le32(f->val + 4 * i);
	return 0;
}

static int decode_thread(struct ct_dec *d, const struct ct_tlv *f, struct ct_image_thread *ret)
{
	const uint8_t *p = f->val;
	size_t left = f->len, alloc = 0;
	uint64_t seen = 0;
	struct ct_tlv g;
	int r;

	while ((r = ct_dec_next(d, &p, &left, "thread", &g)) > 0) {
		if (g.tag != THREAD_REGSET && (r = ct_dec_once(d, &seen, &g, "thread")) < 0)
			return r;
		switch (g.tag) {
		case THREAD_TID:
			r = ct_dec_u32(d, &g, "thread", &ret->tid);
			break;
		case THREAD_COMM:
			r = ct_dec_comm(d, &g, "thread", ret->comm);
			break;
		case THREAD_SIGMASK:
			r = ct_dec_u64(d, &g, "thread", &ret->sigmask);
			break;
		case THREAD_PENDING:
			r = ct_dec_u64(d, &g, "thread", &ret->sigpending);
			break;
		case THREAD_SIGINFO:
			r = ct_dec_blob(d, &g, CT_IMAGE_SIGINFO_MAX * CT_IMAGE_SIGINFO_SIZE,
					CT_IMAGE_SIGINFO_SIZE, "thread", &ret->siginfo,
					&ret->n_siginfo);
			break;
		case THREAD_ROBUST:
			if (g.len != 16)
				return ct_dec_fail(
					d, "thread: robust list is %u bytes, expected 16", g.len);
			ret->robust_list = get_le64(g.val);
			ret->robust_list_len = get_le64(g.val + 8);
			break;
		case THREAD_TID_ADDRESS:
			r = ct_dec_u64(d, &g, "thread", &ret->tid_address);
			break;
		case THREAD_RSEQ:
			if (g.len != 16)
				return ct_dec_fail(d, "thread: rseq is %u bytes, expected 16",
						   g.len);
			ret->rseq = get_le64(g.val);
			ret->rseq_len = get_le32(g.val + 8);
			ret->rseq_sig = get_le32(g.val + 12);
			break;
		case THREAD_REGSET:
			r = ct_dec_grow(d, (void **)&ret->regsets, &alloc, ret->n_regsets,
					sizeof(*ret->regsets), CT_IMAGE_REGSETS_MAX,
					"thread regsets");
			if (r == 0)
				r = decode_regset(d, &g, &ret->regsets[ret->n_regsets++]);
			break;
		case THREAD_SCHED: {
			uint32_t v[6] = {0};

			r = dec_u32s(d, &g, "thread sched", v, 6);
			if (r == 0 &&
			    (v[0] > 7 || v[0] == 4 || v[0] == 6 || v[1] > 1 || v[2] > 99 ||
			     (int32_t)v[3] < -20 || (int32_t)v[3] > 19 || v[5] > 64))
				r = ct_dec_fail(d, "thread: scheduling attributes out of range");
			if (r == 0) {
				ret->have_sched = true;
				ret->sched_policy = v[0];
				ret->sched_flags = v[1];
				ret->sched_priority = v[2];
				ret->nice = (int32_t)v[3];
				ret->ioprio = v[4];
				ret->pdeathsig = v[5];
			}
			break;
		}
		case THREAD_TIMERSLACK:
			r = ct_dec_u64(d, &g, "thread", &ret->timerslack_ns);
			break;
		case THREAD_AFFINITY:
			r = ct_dec_blob(d, &g, CT_IMAGE_AFFINITY_MAX, 8, "thread affinity",
					&ret->affinity, &ret->affinity_len);
			if (r == 0 && ret->affinity_len == 0)
				r = ct_dec_fail(d, "thread: empty affinity");
			ret->affinity_len *= 8;
			break;
		case THREAD_ALTSTACK: {
			uint64_t a[3] = {0};

			r = ct_dec_u64s(d, &g, "thread altstack", a, 3);
			if (r == 0) {
				ret->altstack_sp = a[0];
				ret->altstack_size = a[1];
				ret->altstack_flags = a[2];
			}
			break;
		}
		default:
			r = ct_dec_fail(d, "thread: unknown field %u", g.tag);
		}
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	return ct_dec_require(d, seen,
			      TAG_BIT(THREAD_TID) | TAG_BIT(THREAD_COMM) | TAG_BIT(THREAD_SIGMASK) |
				      TAG_BIT(THREAD_PENDING) | TAG_BIT(THREAD_ROBUST) |
				      TAG_BIT(THREAD_TID_ADDRESS) | TAG_BIT(THREAD_RSEQ),
			      "thread");
}

static int decode_task_field(struct ct_dec *d, const struct ct_tlv *f, struct ct_image_task *t,
			     size_t *threads_alloc, size_t *filters_alloc)
{
	uint64_t v[4 * CT_IMAGE_SIGNALS];
	int r;

	switch (f->tag) {
	case TASK_PID:
		return ct_dec_u32(d, f, "task", &t->pid);
	case TASK_PPID:
		return ct_dec_u32(d, f, "task", &t->ppid);
	case TASK_PGID:
		return ct_dec_u32(d, f, "task", &t->pgid);
	case TASK_SID:
		return ct_dec_u32(d, f, "task", &t->sid);
	case TASK_COMM:
		return ct_dec_comm(d, f, "task", t->comm);
	case TASK_CREDS:
		return decode_creds(d, f, &t->creds);
	case TASK_RLIMITS:
		r = ct_dec_u64s(d, f, "task rlimits", v, 2 * CT_IMAGE_RLIMITS);
		for (size_t i = 0; r == 0 && i < CT_IMAGE_RLIMITS; i++)
			t->rlimits[i] = (struct ct_image_rlimit){v[2 * i], v[2 * i + 1]};
		return r;
	case TASK_SIGACTIONS:
		r = ct_dec_u64s(d, f, "task sigactions", v, 4 * CT_IMAGE_SIGNALS);
		for (size_t i = 0; r == 0 && i < CT_IMAGE_SIGNALS; i++)
			t->sigactions[i] = (struct ct_image_sigaction){v[4 * i], v[4 * i + 1],
								       v[4 * i + 2], v[4 * i + 3]};
		return r;
	case TASK_SHARED_PENDING:
		return ct_dec_u64(d, f, "task", &t->shared_pending);
	case TASK_SHARED_SIGINFO:
		return ct_dec_blob(d, f, CT_IMAGE_SIGINFO_MAX * CT_IMAGE_SIGINFO_SIZE,
				   CT_IMAGE_SIGINFO_SIZE, "task", &t->shared_siginfo,
				   &t->n_shared_siginfo);
	case TASK_CWD:
		return ct_dec_path(d, f, "task cwd", &t->cwd);
	case TASK_ROOT:
		return ct_dec_path(d, f, "task root", &t->root);
	case TASK_ITIMERS:
		return ct_dec_u64s(d, f, "task itimers", t->itimers, ELEMENTSOF(t->itimers));
	case TASK_PERSONALITY:
		return ct_dec_u32(d, f, "task", &t->personality);
	case TASK_ZOMBIES: {
		uint8_t *raw = NULL;
		size_t n = 0;

		r = ct_dec_blob(d, f, CT_IMAGE_ZOMBIES_MAX * 8, 8, "task zombies", &raw, &n);
		if (r < 0)
			return r;
		t->zombies = calloc(MAX(n, 1u), sizeof(uint64_t));
		if (!t->zombies) {
			free(raw);
			return -ENOMEM;
		}
		for (size_t i = 0; i < n; i++) {
			t->zombies[i] = get_le64(raw + 8 * i);
			if ((t->zombies[i] >> 32) == 0 || (t->zombies[i] >> 32) > INT32_MAX) {
				free(raw);
				return ct_dec_fail(d, "task: zombie with pid %" PRIu64,
						   t->zombies[i] >> 32);
			}
		}
		t->n_zombies = n;
		free(raw);
		return 0;
	}
	case TASK_TIMERS: {
		uint8_t *raw = NULL;
		size_t n = 0;

		r = ct_dec_blob(d, f, CT_IMAGE_TIMERS_MAX * 64, 64, "task timers", &raw, &n);
		if (r < 0)
			return r;
		t->timers = calloc(MAX(n, 1u), sizeof(*t->timers));
		if (!t->timers) {
			free(raw);
			return -ENOMEM;
		}
		for (size_t i = 0; i < n; i++) {
			uint64_t *tv = (uint64_t *)&t->timers[i];

			for (size_t k = 0; k < 8; k++)
				tv[k] = get_le64(raw + 64 * i + 8 * k);
			if (tv[0] > INT32_MAX || tv[1] > 64 || tv[2] > 64) {
				free(raw);
				return ct_dec_fail(d, "task: timer %zu is malformed", i);
			}
		}
		t->n_timers = n;
		free(raw);
		return 0;
	}
	case TASK_UMASK:
		r = ct_dec_u32(d, f, "task", &t->umask);
		if (r == 0 && t->umask > 0777)
			return ct_dec_fail(d, "task: umask %o out of range", t->umask);
		return r;
	case TASK_ATTRS: {
		uint32_t a[5] = {0};

		r = dec_u32s(d, f, "task attributes", a, 5);
		if (r == 0 && ((int32_t)a[0] < -1000 || (int32_t)a[0] > 1000 || a[1] > 2 ||
			       a[2] > 1 || a[3] > 3 || a[4] > 3))
			return ct_dec_fail(d, "task: attributes out of range");
		if (r == 0) {
			t->have_attrs = true;
			t->oom_score_adj = (int32_t)a[0];
			t->dumpable = a[1];
			t->subreaper = a[2];
			t->thp_disable = a[3];
			t->mdwe = a[4];
		}
		return r;
	}
	case TASK_NO_NEW_PRIVS:
		r = ct_dec_u32(d, f, "task", &t->no_new_privs);
		if (r == 0 && t->no_new_privs > 1)
			return ct_dec_fail(d, "task: no_new_privs is %u", t->no_new_privs);
		return r;
	case TASK_SECCOMP:
		r = ct_dec_u32(d, f, "task", &t->seccomp_mode);
		if (r == 0 && t->seccomp_mode > 2)
			return ct_dec_fail(d, "task: unknown seccomp mode %u", t->seccomp_mode);
		return r;
	case TASK_SECCOMP_FILTER: {
		struct ct_image_seccomp_filter *sf;
		uint8_t *raw = NULL;
		size_t n = 0;

		r = ct_dec_grow(d, (void **)&t->seccomp_filters, filters_alloc,
				t->n_seccomp_filters, sizeof(*t->seccomp_filters),
				CT_IMAGE_SECCOMP_FILTERS_MAX, "task seccomp filters");
		if (r < 0)
			return r;
		r = ct_dec_blob(d, f, 8 * (CT_IMAGE_SECCOMP_INSNS_MAX + 1), 8,
				"task seccomp filter", &raw, &n);
		if (r < 0)
			return r;
		if (n < 2 || (get_le32(raw) & ~2U) || get_le32(raw + 4)) {
			free(raw);
			return ct_dec_fail(d, "task: seccomp filter %zu is malformed",
					   t->n_seccomp_filters);
		}
		sf = &t->seccomp_filters[t->n_seccomp_filters++];
		*sf = (struct ct_image_seccomp_filter){get_le32(raw), (uint32_t)(n - 1), NULL};
		memmove(raw, raw + 8, (n - 1) * 8);
		sf->insns = raw;
		return 0;
	}
	case TASK_THREAD:
		r = ct_dec_grow(d, (void **)&t->threads, threads_alloc, t->n_threads,
				sizeof(*t->threads), CT_IMAGE_THREADS_MAX, "task threads");
		if (r < 0)
			return r;
		t->n_threads++;
		return decode_thread(d, f, &t->threads[t->n_threads - 1]);
	default:
		return ct_dec_fail(d, "task: unknown field %u", f->tag);
	}
}

int ct_image_decode_task(const uint8_t *buf, size_t size, char *err, size_t errlen,
			 struct ct_image_task *ret)
{
	struct ct_dec dd = {err, errlen}, *d = &dd;
	_cleanup_(ct_image_task_done) struct ct_image_task t = {};
	size_t alloc = 0, filters_alloc = 0;
	uint64_t seen = 0;
	struct ct_tlv f;
	int r;

	while ((r = ct_dec_next(d, &buf, &size, "task", &f)) > 0) {
		if (f.tag != TASK_THREAD && f.tag != TASK_SECCOMP_FILTER &&
		    (r = ct_dec_once(d, &seen, &f, "task")) < 0)
			return r;
		r = decode_task_field(d, &f, &t, &alloc, &filters_alloc);
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	r = ct_dec_require(d, seen,
			   TAG_BIT(TASK_PID) | TAG_BIT(TASK_PPID) | TAG_BIT(TASK_PGID) |
				   TAG_BIT(TASK_SID) | TAG_BIT(TASK_COMM) | TAG_BIT(TASK_CREDS) |
				   TAG_BIT(TASK_RLIMITS) | TAG_BIT(TASK_SIGACTIONS) |
				   TAG_BIT(TASK_SHARED_PENDING) | TAG_BIT(TASK_CWD) |
				   TAG_BIT(TASK_ROOT),
			   "task");
	if (r < 0)
		return r;
	if (t.pid == 0)
		return ct_dec_fail(d, "task: pid 0");
	if ((t.seccomp_mode == 2) != (t.n_seccomp_filters > 0))
		return ct_dec_fail(d, "task: seccomp mode %u with %zu filters", t.seccomp_mode,
				   t.n_seccomp_filters);
	if (t.n_threads == 0 || t.threads[0].tid != t.pid)
		return ct_dec_fail(d, "task: the first thread must be the leader (tid %u)", t.pid);
	/* Ascending after the leader: unique without a quadratic check. */
	for (size_t i = 1; i < t.n_threads; i++)
		if (t.threads[i].tid == t.pid ||
		    (i > 1 && t.threads[i].tid <= t.threads[i - 1].tid))
			return ct_dec_fail(d,
					   "task: thread ids are not unique and ascending (tid %u)",
					   t.threads[i].tid);
	*ret = t;
	t = (struct ct_image_task){};
	return 0;
}
