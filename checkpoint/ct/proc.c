/* Parsers for /proc/PID/{maps,status,stat,fdinfo/N,task} and their live readers. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/ct/proc-internal.h"
#include "common/common.h"

#define PROC_MAPS_MAX_SIZE   (256U << 20)
#define PROC_SMALL_MAX_SIZE  (1U << 20)
#define PROC_FDINFO_MAX_SIZE (64U << 20) /* epoll with many watches */

/* A bounded view of text: [p, e). Nothing past e is ever read. */
struct cursor {
	const char *p, *e;
};

static void skip_blanks(struct cursor *c)
{
	while (c->p < c->e && (*c->p == ' ' || *c->p == '\t'))
		c->p++;
}

static bool consume(struct cursor *c, const char *lit)
{
	size_t n = strlen(lit);

	if ((size_t)(c->e - c->p) < n || memcmp(c->p, lit, n) != 0)
		return false;
	c->p += n;
	return true;
}

static int digit_value(char ch, unsigned base)
{
	int v;

	if (ch >= '0' && ch <= '9')
		v = ch - '0';
	else if (ch >= 'a' && ch <= 'f')
		v = ch - 'a' + 10;
	else if (ch >= 'A' && ch <= 'F')
		v = ch - 'A' + 10;
	else
		return -1;
	return v < (int)base ? v : -1;
}

/* At least one digit; fails on overflow. */
static int parse_u64(struct cursor *c, unsigned base, uint64_t *ret)
{
	uint64_t v = 0;
	const char *start = c->p;
	int d;

	while (c->p < c->e && (d = digit_value(*c->p, base)) >= 0) {
		if (v > (UINT64_MAX - (uint64_t)d) / base)
			return -ERANGE;
		v = v * base + (uint64_t)d;
		c->p++;
	}
	if (c->p == start)
		return -EBADMSG;
	*ret = v;
	return 0;
}

static int parse_i64(struct cursor *c, int64_t *ret)
{
	bool neg = consume(c, "-");
	uint64_t v;
	int r = parse_u64(c, 10, &v);

	if (r < 0)
		return r;
	if (v > (uint64_t)INT64_MAX)
		return -ERANGE;
	*ret = neg ? -(int64_t)v : (int64_t)v;
	return 0;
}

static int parse_pid(struct cursor *c, pid_t *ret)
{
	uint64_t v;
	int r = parse_u64(c, 10, &v);

	if (r < 0)
		return r;
	if (v > INT32_MAX)
		return -ERANGE;
	*ret = (pid_t)v;
	return 0;
}

static bool at_end(struct cursor *c)
{
	skip_blanks(c);
	return c->p == c->e;
}

/* Splits off the next line (without '\n'); false at the end of the text. */
static bool next_line(struct cursor *text, struct cursor *ret_line)
{
	const char *nl;

	if (text->p >= text->e)
		return false;
	nl = memchr(text->p, '\n', (size_t)(text->e - text->p));
	ret_line->p = text->p;
	ret_line->e = nl ? nl : text->e;
	text->p = nl ? nl + 1 : text->e;
	return true;
}

void ct_vma_list_done(struct ct_vma_list *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->n; i++)
		free(l->vmas[i].path);
	free(l->vmas);
	*l = (struct ct_vma_list){};
}

static int parse_perms(struct cursor *c, struct ct_vma *v)
{
	if (c->e - c->p < 4)
		return -EBADMSG;
	if ((c->p[0] != 'r' && c->p[0] != '-') || (c->p[1] != 'w' && c->p[1] != '-') ||
	    (c->p[2] != 'x' && c->p[2] != '-') || (c->p[3] != 's' && c->p[3] != 'p'))
		return -EBADMSG;
	v->read = c->p[0] == 'r';
	v->write = c->p[1] == 'w';
	v->exec = c->p[2] == 'x';
	v->shared = c->p[3] == 's';
	c->p += 4;
	return 0;
}

int ct_proc_parse_maps_line(const char *line, size_t line_len, struct ct_vma *ret)
{
	struct cursor c = {line, line + line_len};
	struct ct_vma v = {};
	uint64_t major, minor;
	static const char deleted[] = " (deleted)";
	size_t n;

	if (!line || line_len > CT_PROC_MAX_LINE)
		return -EBADMSG;
	if (parse_u64(&c, 16, &v.start) < 0 || !consume(&c, "-") || parse_u64(&c, 16, &v.end) < 0 ||
	    !consume(&c, " ") || parse_perms(&c, &v) < 0 || !consume(&c, " ") ||
	    parse_u64(&c, 16, &v.offset) < 0 || !consume(&c, " ") ||
	    parse_u64(&c, 16, &major) < 0 || !consume(&c, ":") || parse_u64(&c, 16, &minor) < 0 ||
	    !consume(&c, " ") || parse_u64(&c, 10, &v.inode) < 0)
		return -EBADMSG;
	if (v.start >= v.end || (v.start & 0xfff) || (v.end & 0xfff) || major > UINT32_MAX ||
	    minor > UINT32_MAX)
		return -EBADMSG;
	v.dev_major = (uint32_t)major;
	v.dev_minor = (uint32_t)minor;
	if (c.p < c.e && *c.p != ' ')
		return -EBADMSG;
	/* The kernel pads to a column; the path is everything after the padding. */
	skip_blanks(&c);
	n = (size_t)(c.e - c.p);
	if (n > 0) {
		if (n > sizeof(deleted) - 1 &&
		    memcmp(c.e - (sizeof(deleted) - 1), deleted, sizeof(deleted) - 1) == 0) {
			v.deleted = true;
			n -= sizeof(deleted) - 1;
		}
		if (memchr(c.p, 0, n))
			return -EBADMSG;
		v.path = strndup(c.p, n);
		if (!v.path)
			return -ENOMEM;
	}
	*ret = v;
	return 0;
}

/* "Key:\tvalue": returns the value cursor when line starts with key + ':'. */
static bool line_key(const struct cursor *line, const char *key, struct cursor *ret_value)
{
	struct cursor c = *line;

	if (!consume(&c, key) || !consume(&c, ":"))
		return false;
	skip_blanks(&c);
	*ret_value = c;
	return true;
}

int ct_proc_parse_vmflags(const char *text, size_t len, uint32_t *ret)
{
	static const struct {
		char name[3];
		uint32_t flag;
	} known[] = {
		{"gd", CT_VMF_GROWSDOWN},    {"nr", CT_VMF_NORESERVE}, {"dc", CT_VMF_DONTCOPY},
		{"wf", CT_VMF_WIPEONFORK},   {"dd", CT_VMF_DONTDUMP},  {"hg", CT_VMF_HUGEPAGE},
		{"nh", CT_VMF_NOHUGEPAGE},   {"mg", CT_VMF_MERGEABLE}, {"lo", CT_VMF_LOCKED},
		{"lf", CT_VMF_LOCKONFAULT},  {"sl", CT_VMF_SEALED},    {"dp", CT_VMF_DROPPABLE},
		{"um", CT_VMF_UFFD},	     {"uw", CT_VMF_UFFD},      {"ui", CT_VMF_UFFD},
		{"ss", CT_VMF_SHADOW_STACK}, {"mw", CT_VMF_MAYWRITE},
	};
	struct cursor c = {text, text + len};
	uint32_t flags = 0;

	if (!text && len > 0)
		return -EINVAL;
	for (;;) {
		const char *w;

		skip_blanks(&c);
		if (c.p >= c.e)
			break;
		w = c.p;
		while (c.p < c.e && *c.p != ' ' && *c.p != '\t')
			c.p++;
		/* Every mnemonic is two lower-case letters: anything else is not this line. */
		if (c.p - w != 2 || w[0] < 'a' || w[0] > 'z' || w[1] < 'a' || w[1] > 'z')
			return -EBADMSG;
		for (size_t i = 0; i < ELEMENTSOF(known); i++)
			if (w[0] == known[i].name[0] && w[1] == known[i].name[1])
				flags |= known[i].flag;
	}
	*ret = flags;
	return 0;
}

/* An smaps "Key: value" line (keys start upper-case; a VMA line starts with a hex digit). */
static bool smaps_key_line(const struct cursor *line)
{
	return line->p < line->e && *line->p >= 'A' && *line->p <= 'Z';
}

int ct_proc_parse_maps(const char *text, size_t len, struct ct_vma_list *ret)
{
	struct cursor t = {text, text + len}, line;
	_cleanup_(ct_vma_list_done) struct ct_vma_list l = {};
	size_t alloc = 0;
	int r;

	if (!text && len > 0)
		return -EINVAL;
	while (next_line(&t, &line)) {
		struct ct_vma v;

		if (line.p == line.e)
			continue; /* a trailing empty line */
		if (smaps_key_line(&line)) {
			struct cursor value;

			if (!line_key(&line, "VmFlags", &value))
				continue;
			if (l.n == 0 || l.vmas[l.n - 1].have_vmflags)
				return -EBADMSG;
			r = ct_proc_parse_vmflags(value.p, (size_t)(value.e - value.p),
						  &l.vmas[l.n - 1].vmflags);
			if (r < 0)
				return r;
			l.vmas[l.n - 1].have_vmflags = true;
			continue;
		}
		if (l.n >= CT_PROC_MAX_VMAS)
			return -E2BIG;
		r = ct_proc_parse_maps_line(line.p, (size_t)(line.e - line.p), &v);
		if (r < 0)
			return r;
		if (l.n > 0 && v.start < l.vmas[l.n - 1].end) {
			free(v.path);
			return -EBADMSG;
		}
		if (l.n == alloc) {
			size_t na = alloc ? alloc * 2 : 64;
			struct ct_vma *nv = reallocarray(l.vmas, na, sizeof(*nv));
			if (!nv) {
				free(v.path);
				return -ENOMEM;
			}
			l.vmas = nv;
			alloc = na;
		}
		l.vmas[l.n++] = v;
	}
	*ret = l;
	l = (struct ct_vma_list){};
	return 0;
}

static int parse_status_ids(struct cursor *c, uint32_t ids[4])
{
	for (unsigned i = 0; i < 4; i++) {
		uint64_t v;

		skip_blanks(c);
		if (parse_u64(c, 10, &v) < 0 || v > UINT32_MAX)
			return -EBADMSG;
		ids[i] = (uint32_t)v;
	}
	return at_end(c) ? 0 : -EBADMSG;
}

static int parse_status_line(struct cursor *line, struct ct_proc_status *s)
{
	static const struct {
		const char *key;
		unsigned bit;
		size_t off;
	} sigs[] = {
		{"SigBlk", CT_STATUS_SIGBLK, offsetof(struct ct_proc_status, sigblk)},
		{"SigPnd", CT_STATUS_SIGPND, offsetof(struct ct_proc_status, sigpnd)},
		{"ShdPnd", CT_STATUS_SHDPND, offsetof(struct ct_proc_status, shdpnd)},
		{"SigIgn", CT_STATUS_SIGIGN, offsetof(struct ct_proc_status, sigign)},
		{"SigCgt", CT_STATUS_SIGCGT, offsetof(struct ct_proc_status, sigcgt)},
	};
	static const struct {
		const char *key;
		unsigned bit;
		size_t off;
	} pids[] = {
		{"Pid", CT_STATUS_PID, offsetof(struct ct_proc_status, pid)},
		{"PPid", CT_STATUS_PPID, offsetof(struct ct_proc_status, ppid)},
		{"Tgid", CT_STATUS_TGID, offsetof(struct ct_proc_status, tgid)},
	};
	struct cursor v;
	uint64_t u;

	for (size_t i = 0; i < ELEMENTSOF(pids); i++)
		if (line_key(line, pids[i].key, &v)) {
			pid_t p;
			if (parse_pid(&v, &p) < 0 || !at_end(&v))
				return -EBADMSG;
			memcpy((char *)s + pids[i].off, &p, sizeof(p));
			s->seen |= pids[i].bit;
			return 0;
		}
	for (size_t i = 0; i < ELEMENTSOF(sigs); i++)
		if (line_key(line, sigs[i].key, &v)) {
			if (parse_u64(&v, 16, &u) < 0 || !at_end(&v))
				return -EBADMSG;
			memcpy((char *)s + sigs[i].off, &u, sizeof(u));
			s->seen |= sigs[i].bit;
			return 0;
		}
	if (line_key(line, "NSpid", &v)) {
		s->n_nspid = 0;
		while (!at_end(&v)) {
			if (s->n_nspid >= CT_PROC_MAX_NS_LEVEL ||
			    parse_pid(&v, &s->nspid[s->n_nspid]) < 0)
				return -EBADMSG;
			s->n_nspid++;
		}
		if (s->n_nspid == 0)
			return -EBADMSG;
		s->seen |= CT_STATUS_NSPID;
		return 0;
	}
	if (line_key(line, "Uid", &v)) {
		if (parse_status_ids(&v, s->uid) < 0)
			return -EBADMSG;
		s->seen |= CT_STATUS_UID;
		return 0;
	}
	if (line_key(line, "Gid", &v)) {
		if (parse_status_ids(&v, s->gid) < 0)
			return -EBADMSG;
		s->seen |= CT_STATUS_GID;
		return 0;
	}
	if (line_key(line, "Threads", &v)) {
		if (parse_u64(&v, 10, &u) < 0 || u > UINT32_MAX || !at_end(&v))
			return -EBADMSG;
		s->threads = (unsigned)u;
		s->seen |= CT_STATUS_THREADS;
	}
	return 0;
}

int ct_proc_parse_status(const char *text, size_t len, struct ct_proc_status *ret)
{
	struct cursor t = {text, text + len}, line;
	struct ct_proc_status s = {};
	int r;

	if (!text && len > 0)
		return -EINVAL;
	while (next_line(&t, &line)) {
		if ((size_t)(line.e - line.p) > CT_PROC_MAX_LINE)
			return -EBADMSG;
		r = parse_status_line(&line, &s);
		if (r < 0)
			return r;
	}
	if (s.seen != CT_STATUS_ALL)
		return -EBADMSG;
	*ret = s;
	return 0;
}

static int skip_fields(struct cursor *c, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		int64_t dummy;
		if (!consume(c, " ") || parse_i64(c, &dummy) < 0)
			return -EBADMSG;
	}
	return 0;
}

int ct_proc_parse_stat(const char *text, size_t len, struct ct_proc_stat *ret)
{
	struct cursor c = {text, text + len};
	struct ct_proc_stat s = {};
	const char *close = NULL;
	uint64_t start_time;
	size_t n;

	if (!text || len > PROC_SMALL_MAX_SIZE)
		return -EBADMSG;
	if (parse_pid(&c, &s.pid) < 0 || !consume(&c, " ("))
		return -EBADMSG;
	/* comm may contain ") " itself: it ends at the last ')' of the line. */
	for (const char *q = c.p; q < c.e; q++)
		if (*q == ')')
			close = q;
	if (!close)
		return -EBADMSG;
	n = (size_t)(close - c.p);
	if (n >= sizeof(s.comm) || memchr(c.p, 0, n))
		return -EBADMSG;
	memcpy(s.comm, c.p, n);
	c.p = close + 1;
	if (!consume(&c, " ") || c.p >= c.e || *c.p < 'A' || *c.p > 'z')
		return -EBADMSG;
	s.state = *c.p++;
	if (!consume(&c, " ") || parse_pid(&c, &s.ppid) < 0 || !consume(&c, " ") ||
	    parse_pid(&c, &s.pgrp) < 0 || !consume(&c, " ") || parse_pid(&c, &s.session) < 0)
		return -EBADMSG;
	/* tty_nr .. itrealvalue (fields 7-21), then starttime (22). */
	if (skip_fields(&c, 15) < 0 || !consume(&c, " ") || parse_u64(&c, 10, &start_time) < 0)
		return -EBADMSG;
	if (c.p < c.e && *c.p != ' ' && *c.p != '\n')
		return -EBADMSG;
	s.start_time = start_time;
	*ret = s;
	return 0;
}

void ct_fdinfo_done(struct ct_fdinfo *f)
{
	if (!f)
		return;
	for (size_t i = 0; i < f->n_kv; i++) {
		free(f->kv[i].key);
		free(f->kv[i].value);
	}
	free(f->kv);
	free(f->tfds);
	*f = (struct ct_fdinfo){};
}

/* "tfd: %8d events: %8x data: %16llx  pos:%lli ino:%lx sdev:%x" (fs/eventpoll.c) */
static int parse_tfd(struct cursor *c, struct ct_fdinfo_tfd *ret)
{
	struct ct_fdinfo_tfd t = {};
	uint64_t fd, events;
	int64_t pos;

	skip_blanks(c);
	if (parse_u64(c, 10, &fd) < 0 || fd > INT32_MAX)
		return -EBADMSG;
	skip_blanks(c);
	if (!consume(c, "events:"))
		return -EBADMSG;
	skip_blanks(c);
	if (parse_u64(c, 16, &events) < 0 || events > UINT32_MAX)
		return -EBADMSG;
	skip_blanks(c);
	if (!consume(c, "data:"))
		return -EBADMSG;
	skip_blanks(c);
	if (parse_u64(c, 16, &t.data) < 0)
		return -EBADMSG;
	skip_blanks(c);
	if (!consume(c, "pos:") || parse_i64(c, &pos) < 0 || pos < 0)
		return -EBADMSG;
	skip_blanks(c);
	if (!consume(c, "ino:") || parse_u64(c, 16, &t.ino) < 0)
		return -EBADMSG;
	skip_blanks(c);
	if (!consume(c, "sdev:") || parse_u64(c, 16, &t.sdev) < 0 || !at_end(c))
		return -EBADMSG;
	t.fd = (int)fd;
	t.events = (uint32_t)events;
	t.pos = (uint64_t)pos;
	*ret = t;
	return 0;
}

static int fdinfo_add_tfd(struct ct_fdinfo *f, size_t *alloc, struct cursor *c)
{
	struct ct_fdinfo_tfd t;

	if (f->n_tfds >= CT_PROC_MAX_TFDS)
		return -E2BIG;
	if (parse_tfd(c, &t) < 0)
		return -EBADMSG;
	if (f->n_tfds == *alloc) {
		size_t na = *alloc ? *alloc * 2 : 16;
		struct ct_fdinfo_tfd *n = reallocarray(f->tfds, na, sizeof(*n));
		if (!n)
			return -ENOMEM;
		f->tfds = n;
		*alloc = na;
	}
	f->tfds[f->n_tfds++] = t;
	return 0;
}

static int fdinfo_add_kv(struct ct_fdinfo *f, const struct cursor *line)
{
	const char *colon = memchr(line->p, ':', (size_t)(line->e - line->p));
	struct cursor v;
	struct ct_fdinfo_kv *n;
	_cleanup_free_ char *key = NULL, *value = NULL;

	if (f->n_kv >= CT_PROC_MAX_FDINFO_KV)
		return -E2BIG;
	if (memchr(line->p, 0, (size_t)(line->e - line->p)))
		return -EBADMSG;
	/* A line without a colon is kept whole as a key with an empty value. */
	v.p = colon ? colon + 1 : line->e;
	v.e = line->e;
	skip_blanks(&v);
	while (v.e > v.p && (v.e[-1] == ' ' || v.e[-1] == '\t'))
		v.e--;
	key = strndup(line->p, (size_t)((colon ? colon : line->e) - line->p));
	value = strndup(v.p, (size_t)(v.e - v.p));
	if (!key || !value)
		return -ENOMEM;
	n = reallocarray(f->kv, f->n_kv + 1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	f->kv = n;
	f->kv[f->n_kv++] = (struct ct_fdinfo_kv){TAKE_PTR(key), TAKE_PTR(value)};
	return 0;
}

static int parse_fdinfo_line(struct cursor *line, struct ct_fdinfo *f, unsigned *seen,
			     size_t *tfd_alloc)
{
	struct cursor v;
	uint64_t u;
	int64_t i;

	if (line_key(line, "pos", &v)) {
		if (parse_i64(&v, &i) < 0 || i < 0 || !at_end(&v))
			return -EBADMSG;
		f->pos = (uint64_t)i;
		*seen |= 1;
	} else if (line_key(line, "flags", &v)) {
		if (parse_u64(&v, 8, &u) < 0 || u > UINT32_MAX || !at_end(&v))
			return -EBADMSG;
		f->flags = (unsigned)u;
		*seen |= 2;
	} else if (line_key(line, "mnt_id", &v)) {
		if (parse_u64(&v, 10, &u) < 0 || u > INT32_MAX || !at_end(&v))
			return -EBADMSG;
		f->mnt_id = (int)u;
		*seen |= 4;
	} else if (line_key(line, "ino", &v)) {
		if (parse_u64(&v, 10, &f->ino) < 0 || !at_end(&v))
			return -EBADMSG;
	} else if (line_key(line, "tfd", &v))
		return fdinfo_add_tfd(f, tfd_alloc, &v);
	else
		return fdinfo_add_kv(f, line);
	return 0;
}

int ct_proc_parse_fdinfo(const char *text, size_t len, struct ct_fdinfo *ret)
{
	struct cursor t = {text, text + len}, line;
	_cleanup_(ct_fdinfo_done) struct ct_fdinfo f = {};
	unsigned seen = 0;
	size_t tfd_alloc = 0;
	int r;

	if (!text && len > 0)
		return -EINVAL;
	while (next_line(&t, &line)) {
		if (line.p == line.e)
			continue;
		if ((size_t)(line.e - line.p) > CT_PROC_MAX_LINE)
			return -EBADMSG;
		r = parse_fdinfo_line(&line, &f, &seen, &tfd_alloc);
		if (r < 0)
			return r;
	}
	if (seen != 7) /* pos, flags and mnt_id are always there */
		return -EBADMSG;
	*ret = f;
	f = (struct ct_fdinfo){};
	return 0;
}

const char *ct_fdinfo_get(const struct ct_fdinfo *f, const char *key)
{
	for (size_t i = 0; f && i < f->n_kv; i++)
		if (streq(f->kv[i].key, key))
			return f->kv[i].value;
	return NULL;
}

/* One lock line after "lock:": "ID: KIND MODE TYPE PID MAJ:MIN:INO START END", END "EOF" for
 * a lock to the end of the file. */
static int parse_lock(const char *p, struct ct_proc_lock *ret)
{
	char kind[16], mode[16], type[16], where[64], start[32], end[32], *e;
	long long id;
	int pid;

	if (sscanf(p, "%lld: %15s %15s %15s %d %63s %31s %31s", &id, kind, mode, type, &pid, where,
		   start, end) != 8)
		return -EBADMSG;
	*ret = (struct ct_proc_lock){.pid = pid, .kind = CT_PROC_LOCK_OTHER};
	snprintf(ret->name, sizeof(ret->name), "%s %s %s", kind, mode, type);
	if (streq(mode, "ADVISORY") && (streq(type, "READ") || streq(type, "WRITE"))) {
		if (streq(kind, "FLOCK"))
			ret->kind = CT_PROC_LOCK_FLOCK;
		else if (streq(kind, "POSIX"))
			ret->kind = CT_PROC_LOCK_POSIX;
		else if (streq(kind, "OFDLCK"))
			ret->kind = CT_PROC_LOCK_OFD;
	}
	ret->write = streq(type, "WRITE");
	if (start[0] < '0' || start[0] > '9')
		return -EBADMSG;
	errno = 0;
	ret->start = strtoull(start, &e, 10);
	if (errno || *e)
		return -EBADMSG;
	if (streq(end, "EOF"))
		ret->end = UINT64_MAX;
	else {
		if (end[0] < '0' || end[0] > '9')
			return -EBADMSG;
		ret->end = strtoull(end, &e, 10);
		if (errno || *e || ret->end < ret->start)
			return -EBADMSG;
	}
	return 0;
}

int ct_proc_parse_locks(const char *text, size_t len, struct ct_proc_lock **ret, size_t *ret_n)
{
	_cleanup_free_ char *copy = strndup(text, len);
	struct ct_proc_lock *v = NULL;
	size_t n = 0;
	char *save = NULL;

	if (!copy)
		return -ENOMEM;
	for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		struct ct_proc_lock *nv;
		int r;

		if (!startswith(line, "lock:"))
			continue;
		if (n >= CT_PROC_LOCKS_MAX) {
			free(v);
			return -E2BIG;
		}
		nv = reallocarray(v, n + 1, sizeof(*v));
		if (!nv) {
			free(v);
			return -ENOMEM;
		}
		v = nv;
		r = parse_lock(line + 5, &v[n]);
		if (r < 0) {
			free(v);
			return r;
		}
		n++;
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

int ct_proc_parse_pid_name(const char *name, pid_t *ret)
{
	struct cursor c;
	pid_t p;

	if (!name || !*name || *name == '0')
		return -EINVAL;
	c = (struct cursor){name, name + strnlen(name, 16)};
	if (parse_pid(&c, &p) < 0 || c.p != c.e || name[c.e - name] != 0 || p <= 0)
		return -EINVAL;
	*ret = p;
	return 0;
}

/* /proc/PID/... gone means the process is gone. */
static int read_proc_file(pid_t pid, const char *what, size_t max, char **ret, size_t *ret_size)
{
	char path[64];
	int r;

	if (pid <= 0)
		return -EINVAL;
	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, what);
	r = read_full_file(path, max, ret, ret_size);
	if (r == -ENOENT && strncmp(what, "fdinfo/", 7) != 0)
		r = -ESRCH;
	else if (r == -ENOENT) {
		/* fdinfo/N missing: the fd or the whole process? */
		snprintf(path, sizeof(path), "/proc/%d", (int)pid);
		if (access(path, F_OK) < 0)
			r = -ESRCH;
	}
	if (r < 0)
		return log_debug_errno(r, "pid %d: failed to read /proc/%d/%s: %m", (int)pid,
				       (int)pid, what);
	return 0;
}

int ct_proc_read_maps(pid_t pid, struct ct_vma_list *ret)
{
	_cleanup_free_ char *text = NULL;
	size_t size;
	int r = read_proc_file(pid, "smaps", PROC_MAPS_MAX_SIZE, &text, &size);

	if (r < 0)
		return r;
	r = ct_proc_parse_maps(text, size, ret);
	if (r < 0)
		return log_debug_errno(r, "pid %d: failed to parse /proc/%d/smaps: %m", (int)pid,
				       (int)pid);
	for (size_t i = 0; i < ret->n; i++)
		if (!ret->vmas[i].have_vmflags) {
			ct_vma_list_done(ret);
			return log_debug_errno(
				-EBADMSG, "pid %d: /proc/%d/smaps has no VmFlags for %#" PRIx64,
				(int)pid, (int)pid, ret->vmas[i].start);
		}
	return 0;
}

int ct_proc_read_status(pid_t pid, struct ct_proc_status *ret)
{
	_cleanup_free_ char *text = NULL;
	size_t size;
	int r = read_proc_file(pid, "status", PROC_SMALL_MAX_SIZE, &text, &size);

	if (r < 0)
		return r;
	r = ct_proc_parse_status(text, size, ret);
	if (r < 0)
		return log_debug_errno(r, "pid %d: failed to parse /proc/%d/status: %m", (int)pid,
				       (int)pid);
	return 0;
}

int ct_proc_read_stat(pid_t pid, struct ct_proc_stat *ret)
{
	_cleanup_free_ char *text = NULL;
	size_t size;
	int r = read_proc_file(pid, "stat", PROC_SMALL_MAX_SIZE, &text, &size);

	if (r < 0)
		return r;
	r = ct_proc_parse_stat(text, size, ret);
	if (r < 0)
		return log_debug_errno(r, "pid %d: failed to parse /proc/%d/stat: %m", (int)pid,
				       (int)pid);
	return 0;
}

int ct_proc_read_fdinfo(pid_t pid, int fd, struct ct_fdinfo *ret)
{
	_cleanup_free_ char *text = NULL;
	char what[32];
	size_t size;
	int r;

	if (fd < 0)
		return -EBADF;
	snprintf(what, sizeof(what), "fdinfo/%d", fd);
	r = read_proc_file(pid, what, PROC_FDINFO_MAX_SIZE, &text, &size);
	if (r < 0)
		return r;
	r = ct_proc_parse_fdinfo(text, size, ret);
	if (r < 0)
		return log_debug_errno(r, "pid %d: failed to parse /proc/%d/%s: %m", (int)pid,
				       (int)pid, what);
	return 0;
}

static int cmp_pid(const void *a, const void *b)
{
	pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;
	return (x > y) - (x < y);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(DIR *, closedir);

int ct_proc_read_tasks(pid_t pid, pid_t **ret_tids, size_t *ret_n)
{
	_cleanup_(closedirp) DIR *d = NULL;
	_cleanup_free_ pid_t *tids = NULL;
	size_t n = 0, alloc = 0;
	struct dirent *de;
	char path[64];

	if (pid <= 0)
		return -EINVAL;
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	if (!d)
		return log_debug_errno(errno == ENOENT ? ESRCH : errno,
				       "pid %d: failed to open %s: %m", (int)pid, path);
	while ((errno = 0, de = readdir(d))) {
		pid_t tid;

		if (ct_proc_parse_pid_name(de->d_name, &tid) < 0)
			continue; /* "." and ".." */
		if (n >= CT_PROC_MAX_TASKS)
			return -E2BIG;
		if (n == alloc) {
			size_t na = alloc ? alloc * 2 : 16;
			pid_t *nt = reallocarray(tids, na, sizeof(*nt));
			if (!nt)
				return -ENOMEM;
			tids = nt;
			alloc = na;
		}
		tids[n++] = tid;
	}
	if (errno != 0)
		return log_debug_errno(errno, "pid %d: failed to list %s: %m", (int)pid, path);
	if (n == 0)
		return -ESRCH; /* a zombie has an empty task dir */
	qsort(tids, n, sizeof(*tids), cmp_pid);
	*ret_tids = TAKE_PTR(tids);
	*ret_n = n;
	return 0;
}
