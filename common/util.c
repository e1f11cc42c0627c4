/* Time, string, unit-parsing and file helpers. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/util.h"

usec_t now_usec(clockid_t clock)
{
	struct timespec ts;

	if (clock_gettime(clock, &ts) < 0)
		return 0;
	return (usec_t)ts.tv_sec * USEC_PER_SEC + (usec_t)ts.tv_nsec / NSEC_PER_USEC;
}

/* Parses a non-negative decimal with an optional fraction and returns the suffix. */
static int parse_decimal(const char *s, long double *ret, const char **ret_suffix)
{
	const char *p = s;
	long double v = 0;
	bool digits = false;

	while (isspace((unsigned char)*p))
		p++;
	while (isdigit((unsigned char)*p)) {
		v = v * 10 + (*p - '0');
		digits = true;
		p++;
	}
	if (*p == '.') {
		long double scale = 0.1L;
		p++;
		while (isdigit((unsigned char)*p)) {
			v += (*p - '0') * scale;
			scale /= 10;
			digits = true;
			p++;
		}
	}
	if (!digits)
		return -EINVAL;
	while (isspace((unsigned char)*p))
		p++;
	*ret = v;
	*ret_suffix = p;
	return 0;
}

static bool suffix_is(const char *suffix, const char *want)
{
	size_t n = strlen(want);

	if (strncasecmp(suffix, want, n) != 0)
		return false;
	for (suffix += n; *suffix; suffix++)
		if (!isspace((unsigned char)*suffix))
			return false;
	return true;
}

int parse_duration(const char *s, usec_t *ret)
{
	static const struct {
		const char *suffix;
		long double mult;
	} units[] = {
		{"us", 1},     {"usec", 1},	 {"ms", 1e3}, {"msec", 1e3},
		{"s", 1e6},    {"sec", 1e6},	 {"m", 60e6}, {"min", 60e6},
		{"h", 3600e6}, {"hour", 3600e6}, {"", 1e6},
	};
	const char *suffix;
	long double v;

	if (!s || parse_decimal(s, &v, &suffix) < 0)
		return -EINVAL;
	for (size_t i = 0; i < ELEMENTSOF(units); i++) {
		if (!suffix_is(suffix, units[i].suffix))
			continue;
		v *= units[i].mult;
		if (v >= (long double)UINT64_MAX / 2)
			return -ERANGE;
		*ret = (usec_t)llroundl(v);
		return 0;
	}
	return -EINVAL;
}

int parse_size(const char *s, uint64_t *ret)
{
	static const char *const prefixes = "KMGTP";
	const char *suffix, *p;
	long double v, mult = 1;

	if (!s || parse_decimal(s, &v, &suffix) < 0)
		return -EINVAL;
	if (*suffix && (p = strchr(prefixes, toupper((unsigned char)*suffix)))) {
		for (const char *q = prefixes; q <= p; q++)
			mult *= 1024;
		suffix++;
		if (*suffix == 'i' || *suffix == 'I')
			suffix++;
	}
	if (!suffix_is(suffix, "") && !suffix_is(suffix, "B"))
		return -EINVAL;
	v *= mult;
	if (v >= 18446744073709551615.0L)
		return -ERANGE;
	*ret = (uint64_t)llroundl(v);
	return 0;
}

int parse_bool(const char *s)
{
	static const char *const yes[] = {"1", "yes", "y", "true", "t", "on"};
	static const char *const no[] = {"0", "no", "n", "false", "f", "off"};

	if (!s)
		return -EINVAL;
	for (size_t i = 0; i < ELEMENTSOF(yes); i++)
		if (strcasecmp(s, yes[i]) == 0)
			return 1;
	for (size_t i = 0; i < ELEMENTSOF(no); i++)
		if (strcasecmp(s, no[i]) == 0)
			return 0;
	return -EINVAL;
}

int parse_uint64(const char *s, uint64_t *ret)
{
	char *end;
	unsigned long long v;

	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	if (*end)
		return -EINVAL;
	*ret = v;
	return 0;
}

int parse_uint32(const char *s, uint32_t *ret)
{
	uint64_t v;
	int r = parse_uint64(s, &v);

	if (r < 0)
		return r;
	if (v > UINT32_MAX)
		return -ERANGE;
	*ret = (uint32_t)v;
	return 0;
}

int parse_int(const char *s, int *ret)
{
	char *end;
	long v;

	if (!s || !*s)
		return -EINVAL;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno == ERANGE || v < INT_MIN || v > INT_MAX)
		return -ERANGE;
	if (*end)
		return -EINVAL;
	*ret = (int)v;
	return 0;
}

char *format_duration(char *buf, size_t len, usec_t u)
{
	if (u == USEC_INFINITY)
		snprintf(buf, len, "infinity");
	else if (u >= 10 * USEC_PER_SEC)
		snprintf(buf, len, "%.1fs", (double)u / 1e6);
	else if (u >= USEC_PER_SEC)
		snprintf(buf, len, "%.2fs", (double)u / 1e6);
	else if (u >= USEC_PER_MSEC)
		snprintf(buf, len, "%.1fms", (double)u / 1e3);
	else
		snprintf(buf, len, "%" PRIu64 "us", u);
	return buf;
}

char *format_bytes(char *buf, size_t len, uint64_t bytes)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	double v = (double)bytes;
	size_t i = 0;

	while (v >= 1024 && i < ELEMENTSOF(units) - 1) {
		v /= 1024;
		i++;
	}
	if (i == 0)
		snprintf(buf, len, "%" PRIu64 "B", bytes);
	else
		snprintf(buf, len, "%.1f%s", v, units[i]);
	return buf;
}

char *strstrip(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = 0;
	return s;
}

bool string_is_safe_name(const char *s, size_t max_len)
{
	size_t n;

	if (!s || !*s)
		return false;
	n = strlen(s);
	if (n > max_len || s[0] == '-' || s[0] == '.')
		return false;
	for (const char *p = s; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("-_.", *p))
			return false;
	return true;
}

char *strjoin_sep(const char *sep, const char *const *parts, size_t n)
{
	size_t len = 1, seplen = strlen(sep);
	char *out, *p;

	for (size_t i = 0; i < n; i++)
		len += strlen(parts[i]) + (i ? seplen : 0);
	out = p = malloc(len);
	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		if (i)
			p = stpcpy(p, sep);
		p = stpcpy(p, parts[i]);
	}
	*p = 0;
	return out;
}

char *strdup_printf(const char *format, ...)
{
	va_list ap;
	char *s;

	va_start(ap, format);
	if (vasprintf(&s, format, ap) < 0)
		s = NULL;
	va_end(ap);
	return s;
}

size_t strscpy(char *dst, const char *src, size_t size)
{
	size_t n = strnlen(src, size ? size - 1 : 0);

	if (size == 0)
		return 0;
	memcpy(dst, src, n);
	dst[n] = 0;
	return n;
}

int read_full_file(const char *path, size_t max_size, char **ret_text, size_t *ret_size)
{
	_cleanup_close_ int fd = -EBADF;
	_cleanup_free_ char *buf = NULL;
	size_t size = 0, alloc = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return NEG_ERRNO();
	for (;;) {
		ssize_t k;

		if (alloc - size < 4096) {
			size_t na = alloc ? alloc * 2 : 8192;
			char *nb;

			if (na > max_size + 4096)
				na = max_size + 4096;
			if (na <= alloc)
				return -EFBIG;
			nb = realloc(buf, na);
			if (!nb)
				return -ENOMEM;
			buf = nb;
			alloc = na;
		}
		k = read(fd, buf + size, alloc - size - 1);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return NEG_ERRNO();
		}
		if (k == 0)
			break;
		size += (size_t)k;
		if (size > max_size)
			return -EFBIG;
	}
	if (!buf && !(buf = malloc(1)))
		return -ENOMEM;
	buf[size] = 0;
	*ret_text = TAKE_PTR(buf);
	if (ret_size)
		*ret_size = size;
	return 0;
}

int write_file_atomic(const char *path, const void *data, size_t size, mode_t mode)
{
	_cleanup_free_ char *tmp = NULL;
	_cleanup_close_ int fd = -EBADF;
	const char *p = data;

	if (asprintf(&tmp, "%s.tmpXXXXXX", path) < 0)
		return -ENOMEM;
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return NEG_ERRNO();
	if (fchmod(fd, mode) < 0)
		goto fail;
	while (size > 0) {
		ssize_t k = write(fd, p, size);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		p += k;
		size -= (size_t)k;
	}
	if (fsync(fd) < 0 || rename(tmp, path) < 0)
		goto fail;
	return 0;
fail:;
	int r = NEG_ERRNO();
	(void)unlink(tmp);
	return r;
}

int mkdir_p(const char *path, mode_t mode)
{
	_cleanup_free_ char *p = strdup(path);

	if (!p)
		return -ENOMEM;
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = 0;
		if (mkdir(p, mode) < 0 && errno != EEXIST)
			return NEG_ERRNO();
		*s = '/';
	}
	if (mkdir(p, mode) < 0 && errno != EEXIST)
		return NEG_ERRNO();
	return 0;
}

bool memeqzero(const void *p, size_t len)
{
	const uint8_t *b = p;
	uint64_t w;

	/* Data that is not zero almost always shows it in its first word. */
	if (len >= 8) {
		memcpy(&w, b, 8);
		if (w != 0)
			return false;
	}
	/* Then 64 bytes per step (the compiler vectorizes the OR), bailing at the first non-zero
	 * block; memcpy keeps unaligned buffers well-defined. */
	for (; len >= 64; b += 64, len -= 64) {
		uint64_t acc = 0;
		for (unsigned i = 0; i < 8; i++) {
			memcpy(&w, b + 8 * i, 8);
			acc |= w;
		}
		if (acc != 0)
			return false;
	}
	for (; len >= 8; b += 8, len -= 8) {
		memcpy(&w, b, 8);
		if (w != 0)
			return false;
	}
	for (; len > 0; b++, len--)
		if (*b != 0)
			return false;
	return true;
}
