/* The type-specific payload of an fd record: little-endian u64 words and byte strings, written
 * by the checkpoint and read back, bounds-checked, by the restore. */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/ct/image-tlv-internal.h"

struct fdblob {
	uint8_t *p;
	size_t n, cap;
	bool oom;
};

static inline void fdblob_bytes(struct fdblob *b, const void *data, size_t len)
{
	if (b->oom)
		return;
	if (b->n + len > b->cap) {
		size_t cap = MAX(b->cap * 2, b->n + len + 64);
		uint8_t *p = realloc(b->p, cap);

		if (!p) {
			b->oom = true;
			return;
		}
		b->p = p, b->cap = cap;
	}
	if (len)
		memcpy(b->p + b->n, data, len);
	b->n += len;
}

static inline void fdblob_u64(struct fdblob *b, uint64_t v)
{
	uint8_t e[8];

	put_le64(e, v);
	fdblob_bytes(b, e, 8);
}

/* A length, then the bytes. */
static inline void fdblob_str(struct fdblob *b, const void *data, size_t len)
{
	fdblob_u64(b, len);
	fdblob_bytes(b, data, len);
}

/* Moves the payload into the record's data (freeing b's buffer). */
static inline int fdblob_take(struct fdblob *b, uint8_t **ret, uint32_t *ret_size)
{
	if (b->oom) {
		free(b->p);
		return -ENOMEM;
	}
	*ret = b->p;
	*ret_size = (uint32_t)b->n;
	*b = (struct fdblob){};
	return 0;
}

struct fdblob_reader {
	const uint8_t *p;
	size_t left;
	bool bad; /* a read went past the end: every value after is 0 */
};

static inline uint64_t fdblob_get_u64(struct fdblob_reader *r)
{
	uint64_t v;

	if (r->bad || r->left < 8) {
		r->bad = true;
		return 0;
	}
	v = get_le64(r->p);
	r->p += 8, r->left -= 8;
	return v;
}

/* A string written by fdblob_str(): points into the record, *ret_len at most max. */
static inline const uint8_t *fdblob_get_str(struct fdblob_reader *r, size_t max, size_t *ret_len)
{
	uint64_t len = fdblob_get_u64(r);
	const uint8_t *p = r->p;

	if (r->bad || len > r->left || len > max) {
		r->bad = true;
		*ret_len = 0;
		return NULL;
	}
	r->p += len, r->left -= (size_t)len;
	*ret_len = (size_t)len;
	return p;
}
