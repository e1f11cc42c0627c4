/* Small language helpers shared by every module. */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define _unused_	     __attribute__((__unused__))
#define _printf_(a, b)	     __attribute__((__format__(printf, a, b)))
#define _noreturn_	     __attribute__((__noreturn__))
#define _pure_		     __attribute__((__pure__))
#define _likely_(x)	     (__builtin_expect(!!(x), 1))
#define _unlikely_(x)	     (__builtin_expect(!!(x), 0))
#define _warn_unused_result_ __attribute__((__warn_unused_result__))

#define ELEMENTSOF(x)	 (sizeof(x) / sizeof((x)[0]))
#define MIN(a, b)	 ((a) < (b) ? (a) : (b))
#define MAX(a, b)	 ((a) > (b) ? (a) : (b))
#define CLAMP(x, lo, hi) MIN(MAX((x), (lo)), (hi))

/* errno values are positive; our functions return them negated. */
#define ERRNO_VALUE(e) ((e) < 0 ? -(e) : (e))
#define NEG_ERRNO()    (-(errno > 0 ? errno : EIO))

#define streq(a, b)	      (strcmp((a), (b)) == 0)
#define strneq(a, b, n)	      (strncmp((a), (b), (n)) == 0)
#define startswith(s, prefix) (strncmp((s), (prefix), strlen(prefix)) == 0)
#define strempty(s)	      (!(s) || !*(s))
#define strna(s)	      ((s) ? (s) : "n/a")

#define STRINGIFY_(x) #x
#define STRINGIFY(x)  STRINGIFY_(x)

/* Defines a lookup table from an enum to strings and back: NAME_to_string() and
 * NAME_from_string(), the latter returning -EINVAL for unknown strings. */
#define DEFINE_STRING_TABLE_LOOKUP(name, type, table)             \
	const char *name##_to_string(type i)                      \
	{                                                         \
		if ((size_t)i >= ELEMENTSOF(table))               \
			return NULL;                              \
		return table[i];                                  \
	}                                                         \
	int name##_from_string(const char *s)                     \
	{                                                         \
		if (!s)                                           \
			return -EINVAL;                           \
		for (size_t i = 0; i < ELEMENTSOF(table); i++)    \
			if (table[i] && strcmp(table[i], s) == 0) \
				return (int)i;                    \
		return -EINVAL;                                   \
	}
