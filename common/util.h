/* Time, strings, numbers with units, files: helpers every module uses. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "common/macro.h"

typedef uint64_t usec_t;
#define USEC_INFINITY ((usec_t)UINT64_MAX)
#define USEC_PER_SEC  ((usec_t)1000000ULL)
#define USEC_PER_MSEC ((usec_t)1000ULL)
#define NSEC_PER_USEC ((uint64_t)1000ULL)

usec_t now_usec(clockid_t clock);
/* a + b, saturating at USEC_INFINITY (deadlines from "infinite" timeouts). */
static inline usec_t usec_add(usec_t a, usec_t b)
{
	return b >= USEC_INFINITY - a ? USEC_INFINITY : a + b;
}

/* "1500ms", "2s", "1.5s", "3m", "1h", "250us"; a bare number is seconds. */
int parse_duration(const char *s, usec_t *ret);
/* "4096", "64K", "1M", "2G", "1T" (powers of 1024; an optional trailing "B" or "iB"). */
int parse_size(const char *s, uint64_t *ret);
int parse_bool(const char *s);
int parse_uint64(const char *s, uint64_t *ret);
int parse_uint32(const char *s, uint32_t *ret);
int parse_int(const char *s, int *ret);

/* Formats into buf, returns buf. */
char *format_duration(char *buf, size_t len, usec_t u);
char *format_bytes(char *buf, size_t len, uint64_t bytes);

/* True if len bytes at p are all zero: the first word first, then 64 bytes per step, stopping
 * at the first non-zero block (zero frames, zero pages). */
bool memeqzero(const void *p, size_t len);

/* Strips leading and trailing whitespace in place; returns the start. */
char *strstrip(char *s);
bool string_is_safe_name(const char *s, size_t max_len);
char *strjoin_sep(const char *sep, const char *const *parts, size_t n);
/* Copies with truncation, always NUL-terminates. */
size_t strscpy(char *dst, const char *src, size_t size);
/* A formatted string (malloc'd), NULL when out of memory. */
char *strdup_printf(const char *format, ...) __attribute__((format(printf, 1, 2)));

/* Reads a whole (small) file, NUL-terminated; caps at max_size (-EFBIG past it). */
int read_full_file(const char *path, size_t max_size, char **ret_text, size_t *ret_size);
/* Writes via a temporary file and rename(2), fsynced; mode for a new file. */
int write_file_atomic(const char *path, const void *data, size_t size, mode_t mode);
int mkdir_p(const char *path, mode_t mode);
