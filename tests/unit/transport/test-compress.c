/* Unit tests of the zstd stage (seal/open round trips, zero and incompressible payloads, every
 * corruption a peer or the wire can cause) and of the page batch codec. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zstd.h>

#include "common/util.h"
#include "transport/compress-internal.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
	/* xorshift64*: deterministic, so a failure reproduces. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dULL;
}

static void fill_random(void *p, size_t len)
{
	uint8_t *b = p;
	for (size_t i = 0; i < len; i++)
		b[i] = (uint8_t)(rng() >> 56);
}

/* JSON-ish text from a small vocabulary: compresses about 3-5x. */
static void fill_text(void *p, size_t len)
{
	static const char *const words[] = {
		"\"name\": ", "\"value\": ", "\"id\": ",    "true, ",	 "false, ",  "null, ",
		"{",	      "}, ",	     "[",	    "], ",	 "\"host\"", "\"migrd\"",
		"12345",      "0.5, ",	     "\"state\": ", "\"ready\"", "\n",	     "    ",
	};
	char *c = p;
	size_t n = 0;

	while (n < len) {
		const char *w = words[rng() % (sizeof(words) / sizeof(words[0]))];
		size_t l = strlen(w);
		if (l > len - n)
			l = len - n;
		memcpy(c + n, w, l);
		n += l;
		if (rng() % 4 == 0 && n < len)
			c[n++] = (char)('a' + rng() % 26);
	}
}

struct sealed {
	struct transport_frame f;
	uint8_t *wire;
};

static void seal(struct transport_sealer *s, int level, const void *raw, size_t len,
		 struct sealed *ret)
{
	uint64_t ns = UINT64_MAX;

	ret->wire = malloc(transport_wire_bound(len) + 1);
	assert_non_null(ret->wire);
	ret->f = (struct transport_frame){.type = TRANSPORT_FRAME_DATA, .stream = 1, .seq = 9};
	assert_int_equal(transport_seal(s, level, raw, len, ret->wire, &ret->f, &ns), 0);
	assert_true(ret->f.wire_len <= transport_wire_bound(len));
	assert_int_equal(ret->f.raw_len, len);
	assert_int_equal(ret->f.type, TRANSPORT_FRAME_DATA); /* not touched */
	assert_int_equal(ret->f.seq, 9);
	assert_true(ns != UINT64_MAX);
}

/* Opens into a buffer of exactly raw_len bytes (ASan sees any overrun). */
static int open_frame(struct transport_opener *o, const struct transport_frame *f, const void *wire,
		      void *expect)
{
	uint8_t *raw = malloc(f->raw_len ? f->raw_len : 1);
	int r;

	assert_non_null(raw);
	r = transport_open(o, f, wire, raw);
	if (r == 0 && expect)
		assert_memory_equal(raw, expect, f->raw_len);
	free(raw);
	return r;
}

static void test_round_trip_levels(void **state)
{
	static const int levels[] = {0, -7, -3, -1, 1, 3, 6, 19};
	static const size_t sizes[] = {
		1, 2, 100, 4096, 65536 + 3, 1 << 20, TRANSPORT_FRAME_MAX_RAW};
	struct transport_sealer *s;
	struct transport_opener *o;
	uint8_t *raw = malloc(TRANSPORT_FRAME_MAX_RAW);

	assert_non_null(raw);
	assert_int_equal(transport_sealer_new(&s), 0);
	assert_int_equal(transport_opener_new(&o), 0);
	fill_text(raw, TRANSPORT_FRAME_MAX_RAW);

	for (size_t l = 0; l < sizeof(levels) / sizeof(levels[0]); l++)
		for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
			struct sealed x;

			/* Level 19 on 8 MiB takes seconds: the large sizes run the fast levels. */
			if (levels[l] > 6 && sizes[i] > 65536 + 3)
				continue;
			seal(s, levels[l], raw, sizes[i], &x);
			if (levels[l] == 0 || sizes[i] < 2)
				assert_int_equal(x.f.flags, 0);
			else if (sizes[i] >= 4096) {
				assert_int_equal(x.f.flags, TRANSPORT_FRAME_COMPRESSED);
				assert_true(x.f.wire_len < x.f.raw_len / 2);
			} else /* tiny payloads compress or go raw, never grow */
				assert_true(x.f.wire_len <= x.f.raw_len);
			if (x.f.flags == 0)
				assert_memory_equal(x.wire, raw, sizes[i]);
			assert_int_equal(open_frame(o, &x.f, x.wire, raw), 0);
			free(x.wire);
		}

	transport_opener_free(o);
	transport_sealer_free(s);
	free(raw);
}

static void test_empty(void **state)
{
	struct transport_sealer *s;
	struct transport_opener *o;
	struct sealed x;

	assert_int_equal(transport_sealer_new(&s), 0);
	assert_int_equal(transport_opener_new(&o), 0);
	seal(s, 1, NULL, 0, &x);
	assert_int_equal(x.f.flags, 0);
	assert_int_equal(x.f.wire_len, 0);
	assert_int_equal(transport_open(o, &x.f, NULL, NULL), 0);
	x.f.checksum ^= 1;
	assert_int_equal(transport_open(o, &x.f, NULL, NULL), -EBADMSG);
	free(x.wire);
	transport_opener_free(o);
	transport_sealer_free(s);
}

static void test_zero(void **state)
{
	static const size_t sizes[] = {1, 7, 8, 9, 63, 64, 65, 4096, 1 << 20};
	struct transport_sealer *s;
	struct transport_opener *o;
	uint8_t *raw = calloc(1, 1 << 20);

	assert_non_null(raw);
	assert_int_equal(transport_sealer_new(&s), 0);
	assert_int_equal(transport_opener_new(&o), 0);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		for (int level = 0; level <= 1; level++) {
			struct sealed x;

			seal(s, level, raw, sizes[i], &x);
			assert_int_equal(x.f.flags, TRANSPORT_FRAME_ZERO);
			assert_int_equal(x.f.wire_len, 0);
			assert_int_equal(open_frame(o, &x.f, NULL, raw), 0);
			free(x.wire);
		}
		/* One non-zero byte anywhere, even the last, makes it data. */
		raw[sizes[i] - 1] = 1;
		struct sealed y;
		seal(s, 0, raw, sizes[i], &y);
		assert_int_equal(y.f.flags, 0);
		assert_int_equal(open_frame(o, &y.f, y.wire, raw), 0);
		raw[sizes[i] - 1] = 0;
		free(y.wire);
	}
	transport_opener_free(o);
	transport_sealer_free(s);
	free(raw);
}

static void test_is_zero(void **state)
{
	uint8_t buf[300] = {0};

	/* Every length and start offset (aligned or not), with a set byte at every position. */
	for (size_t off = 0; off < 9; off++)
		for (size_t len = 0; len + off <= 200; len++) {
			assert_true(memeqzero(buf + off, len));
			for (size_t j = 0; j < len; j++) {
				buf[off + j] = 0x80;
				assert_false(memeqzero(buf + off, len));
				buf[off + j] = 0;
			}
			/* Bytes just outside do not count. */
			if (off > 0)
				buf[off - 1] = 1;
			buf[off + len] = 1;
			assert_true(memeqzero(buf + off, len));
			if (off > 0)
				buf[off - 1] = 0;
			buf[off + len] = 0;
		}
}

static void test_incompressible(void **state)
{
	struct transport_sealer *s;
	struct transport_opener *o;
	size_t len = 1 << 20;
	uint8_t *raw = malloc(len);

	assert_non_null(raw);
	fill_random(raw, len);
	assert_int_equal(transport_sealer_new(&s), 0);
	assert_int_equal(transport_opener_new(&o), 0);
	for (int level = -5; level <= 3; level += 2) {
		struct sealed x;

		seal(s, level, raw, len, &x);
		assert_int_equal(x.f.flags, 0); /* sent raw */
		assert_int_equal(x.f.wire_len, len);
		assert_memory_equal(x.wire, raw, len);
		assert_int_equal(open_frame(o, &x.f, x.wire, raw), 0);
		free(x.wire);
	}
	transport_opener_free(o);
	transport_sealer_free(s);
	free(raw);
}

static void test_seal_errors(void **state)
{
	struct transport_sealer *s;
	struct transport_frame f = {.flags = 0x7777};
	uint8_t in[16] = {1}, out[64];
	uint64_t ns = 42;

	assert_int_equal(transport_sealer_new(&s), 0);
	assert_int_equal(transport_seal(s, ZSTD_maxCLevel() + 1, in, sizeof(in), out, &f, &ns),
			 -EINVAL);
	assert_int_equal(transport_seal(s, ZSTD_minCLevel() - 1, in, sizeof(in), out, &f, &ns),
			 -EINVAL);
	assert_int_equal(
		transport_seal(s, 1, in, (size_t)TRANSPORT_FRAME_MAX_RAW + 1, out, &f, &ns),
		-EMSGSIZE);
	/* Out-parameters untouched on failure. */
	assert_int_equal(f.flags, 0x7777);
	assert_int_equal(ns, 42);
	/* The time is optional. */
	assert_int_equal(transport_seal(s, 1, in, sizeof(in), out, &f, NULL), 0);
	transport_sealer_free(s);
}

/* Every corruption of a compressed, a raw and a zero frame fails with -EBADMSG. */
static void test_corruption(void **state)
{
	struct transport_sealer *s;
	struct transport_opener *o;
	size_t len = 8192;
	uint8_t *text = malloc(len), *rnd = malloc(len), *zero = calloc(1, len);
	struct sealed c, r, z;

	assert_non_null(text);
	assert_non_null(rnd);
	assert_non_null(zero);
	fill_text(text, len);
	fill_random(rnd, len);
	assert_int_equal(transport_sealer_new(&s), 0);
	assert_int_equal(transport_opener_new(&o), 0);
	seal(s, 3, text, len, &c);
	seal(s, 3, rnd, len, &r);
	seal(s, 3, zero, len, &z);
	assert_int_equal(c.f.flags, TRANSPORT_FRAME_COMPRESSED);
	assert_int_equal(r.f.flags, 0);
	assert_int_equal(z.f.flags, TRANSPORT_FRAME_ZERO);

	/* Any flipped payload bit of a compressed frame: rejected, or (for the few bits a zstd
	 * stream does not use, e.g. padding) decoded to exactly the original bytes, which the
	 * checksum proves. Never different data. */
	unsigned flips = 0, harmless = 0;
	for (uint32_t i = 0; i < c.f.wire_len; i++)
		for (unsigned bit = 0; bit < 8; bit++) {
			int r0;
			c.wire[i] ^= (uint8_t)(1 << bit);
			r0 = open_frame(o, &c.f, c.wire, text);
			flips++;
			if (r0 == 0)
				harmless++;
			else
				assert_int_equal(r0, -EBADMSG);
			c.wire[i] ^= (uint8_t)(1 << bit);
		}
	assert_true(harmless * 20 < flips);
	/* Every payload bit of a raw frame counts. */
	for (uint32_t i = 0; i < r.f.wire_len; i++) {
		r.wire[i] ^= (uint8_t)(1 << (i % 8));
		assert_int_equal(open_frame(o, &r.f, r.wire, NULL), -EBADMSG);
		r.wire[i] ^= (uint8_t)(1 << (i % 8));
	}

	/* Truncated wire payloads (as a header could claim). */
	for (uint32_t n = 0; n < c.f.wire_len; n++) {
		struct transport_frame f = c.f;
		f.wire_len = n;
		assert_int_equal(open_frame(o, &f, c.wire, NULL), -EBADMSG);
	}
	/* A zstd frame that holds more or less than raw_len. */
	for (int d = -2; d <= 2; d++) {
		struct transport_frame f = c.f;
		if (d == 0)
			continue;
		f.raw_len = (uint32_t)((int)len + d);
		assert_int_equal(open_frame(o, &f, c.wire, NULL), -EBADMSG);
	}
	/* Raw frames whose lengths disagree, zero frames with a payload, wrong checksums. */
	{
		struct transport_frame f = r.f;
		f.wire_len--;
		assert_int_equal(open_frame(o, &f, r.wire, NULL), -EBADMSG);
		f = z.f;
		f.wire_len = 1;
		assert_int_equal(open_frame(o, &f, r.wire, NULL), -EBADMSG);
		f = z.f;
		f.flags |= TRANSPORT_FRAME_COMPRESSED;
		assert_int_equal(open_frame(o, &f, r.wire, NULL), -EBADMSG);
		f = z.f;
		f.raw_len--; /* zeros of another length hash differently */
		assert_int_equal(open_frame(o, &f, NULL, NULL), -EBADMSG);
		f = c.f;
		f.flags = 0; /* compressed bytes taken as raw */
		f.raw_len = f.wire_len;
		assert_int_equal(open_frame(o, &f, c.wire, NULL), -EBADMSG);
		f = c.f;
		f.wire_len = 0;
		assert_int_equal(open_frame(o, &f, c.wire, NULL), -EBADMSG);
		for (unsigned bit = 0; bit < 64; bit++) {
			f = c.f;
			f.checksum ^= 1ULL << bit;
			assert_int_equal(open_frame(o, &f, c.wire, NULL), -EBADMSG);
			f = r.f;
			f.checksum ^= 1ULL << bit;
			assert_int_equal(open_frame(o, &f, r.wire, NULL), -EBADMSG);
			f = z.f;
			f.checksum ^= 1ULL << bit;
			assert_int_equal(open_frame(o, &f, NULL, NULL), -EBADMSG);
		}
		f = z.f;
		f.raw_len = UINT32_MAX; /* never written past the protocol's cap */
		assert_int_equal(transport_open(o, &f, NULL, NULL), -EBADMSG);
	}
	/* The opener still works after all those failures. */
	assert_int_equal(open_frame(o, &c.f, c.wire, text), 0);
	assert_int_equal(open_frame(o, &r.f, r.wire, rnd), 0);
	assert_int_equal(open_frame(o, &z.f, NULL, zero), 0);

	free(c.wire);
	free(r.wire);
	free(z.wire);
	free(text);
	free(rnd);
	free(zero);
	transport_opener_free(o);
	transport_sealer_free(s);
}

/* Seal, encode the header, decode it as the receiver would, open. */
static void test_frame_pipeline(void **state)
{
	struct transport_sealer *s;
	struct transport_opener *o;
	size_t len = 300000;
	uint8_t *raw = malloc(len), hdr[TRANSPORT_FRAME_HEADER_SIZE];

	assert_non_null(raw);
	fill_text(raw, len);
	assert_int_equal(transport_sealer_new(&s), 0);
	assert_int_equal(transport_opener_new(&o), 0);
	for (uint64_t seq = 0; seq < 4; seq++) {
		struct sealed x;
		struct transport_frame f;
		const char *reason;

		if (seq == 2)
			memset(raw, 0, len);
		seal(s, (int)seq - 1, raw, len, &x);
		x.f.seq = seq;
		transport_frame_header_encode(&x.f, hdr);
		assert_int_equal(transport_frame_header_decode(hdr, 1, seq, len, &f, &reason), 0);
		assert_int_equal(open_frame(o, &f, x.wire, raw), 0);
		free(x.wire);
	}
	transport_opener_free(o);
	transport_sealer_free(s);
	free(raw);
}

/* ---- stream sealers ---------------------------------------------------------------------- */

#define ST_LEN	 (256 * 1024)
#define F_STREAM (TRANSPORT_FRAME_COMPRESSED | TRANSPORT_FRAME_STREAMED)
#define F_START	 (F_STREAM | TRANSPORT_FRAME_STREAM_START)

/* Repeats across frames compress: the second copy of a frame costs almost nothing. */
static void test_streamed_history(void **state)
{
	static const int levels[] = {-3, 1, 3, 19};
	uint8_t *a = malloc(ST_LEN), *b = malloc(ST_LEN);

	assert_non_null(a);
	assert_non_null(b);
	fill_text(a, ST_LEN);
	fill_text(b, ST_LEN);
	for (size_t l = 0; l < sizeof(levels) / sizeof(levels[0]); l++) {
		struct transport_sealer *s, *alone;
		struct transport_opener *o;
		struct sealed x[4], y;
		const uint8_t *raws[4] = {a, b, a, b};
		/* Four frames within the smallest window these levels use (512 KiB). */
		size_t len = levels[l] > 6 ? 32768 : 65536;

		assert_int_equal(transport_sealer_new_stream(&s), 0);
		assert_int_equal(transport_sealer_new(&alone), 0);
		assert_int_equal(transport_opener_new(&o), 0);
		for (int i = 0; i < 4; i++) {
			seal(s, levels[l], raws[i], len, &x[i]);
			assert_int_equal(x[i].f.flags, i == 0 ? F_START : F_STREAM);
			assert_int_equal(open_frame(o, &x[i].f, x[i].wire, (void *)raws[i]), 0);
		}
		/* The repeats: a tiny fraction of what the same frame costs on its own. */
		seal(alone, levels[l], a, len, &y);
		assert_int_equal(y.f.flags, TRANSPORT_FRAME_COMPRESSED);
		assert_true(x[2].f.wire_len * 20 < y.f.wire_len);
		assert_true(x[3].f.wire_len * 20 < y.f.wire_len);
		free(y.wire);
		for (int i = 0; i < 4; i++)
			free(x[i].wire);
		transport_opener_free(o);
		transport_sealer_free(alone);
		transport_sealer_free(s);
	}
	free(a);
	free(b);
}

/* What does not go into the stream, and what restarts it. */
static void test_streamed_transitions(void **state)
{
	struct transport_sealer *s;
	struct transport_opener *o;
	uint8_t *t = malloc(ST_LEN), *z = calloc(1, ST_LEN), *r = malloc(ST_LEN);
	struct {
		int level;
		const uint8_t *raw;
		uint16_t flags;
	} steps[] = {
		{1, NULL, F_START},
		{1, NULL, F_STREAM},
		{1, z, TRANSPORT_FRAME_ZERO},		/* zeros: not streamed */
		{0, NULL, 0},				/* off: sent raw, not streamed */
		{3, NULL, TRANSPORT_FRAME_COMPRESSED},	/* a probe: on its own */
		{1, NULL, F_STREAM},			/* the stream goes on */
		{-3, NULL, TRANSPORT_FRAME_COMPRESSED}, /* a switch: first on its own, */
		{-3, NULL, F_START},			/* then a new stream */
		{-3, NULL, F_STREAM},
		{-3, r, 0},	     /* incompressible: raw, and the stream is closed */
		{-3, NULL, F_START}, /* so the next one starts a new one */
		{-3, NULL, F_STREAM},
	};

	assert_non_null(t);
	assert_non_null(z);
	assert_non_null(r);
	fill_text(t, ST_LEN);
	fill_random(r, ST_LEN);
	assert_int_equal(transport_sealer_new_stream(&s), 0);
	assert_int_equal(transport_opener_new(&o), 0);
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		const uint8_t *raw = steps[i].raw ? steps[i].raw : t;
		struct sealed x;

		/* Each text frame differs a little from the last. */
		t[(i * 7919) % ST_LEN] ^= 0x5a;
		seal(s, steps[i].level, raw, ST_LEN, &x);
		if (x.f.flags != steps[i].flags)
			fail_msg("step %zu: flags %#x, expected %#x", i, x.f.flags, steps[i].flags);
		assert_int_equal(open_frame(o, &x.f, x.wire, (void *)raw), 0);
		free(x.wire);
	}
	transport_opener_free(o);
	transport_sealer_free(s);
	free(t);
	free(z);
	free(r);
}

/* A streamed frame that is corrupt, cut short, or whose predecessor never arrived is refused,
 * and so is the rest of that stream; the next STREAM_START decodes again. */
static void test_streamed_damage(void **state)
{
	struct transport_sealer *s;
	struct transport_opener *o;
	uint8_t *a = malloc(ST_LEN), *b = malloc(ST_LEN);
	struct sealed x[4];

	assert_non_null(a);
	assert_non_null(b);
	fill_text(a, ST_LEN);
	fill_text(b, ST_LEN);

	/* A lost frame: the third refers to the second, which the opener never saw. */
	assert_int_equal(transport_sealer_new_stream(&s), 0);
	assert_int_equal(transport_opener_new(&o), 0);
	seal(s, 1, a, ST_LEN, &x[0]);
	seal(s, 1, b, ST_LEN, &x[1]);
	seal(s, 1, b, ST_LEN, &x[2]);
	assert_int_equal(open_frame(o, &x[0].f, x[0].wire, a), 0);
	assert_int_equal(open_frame(o, &x[2].f, x[2].wire, NULL), -EBADMSG);
	/* Refused from then on, even the frame that was lost. */
	assert_int_equal(open_frame(o, &x[1].f, x[1].wire, NULL), -EBADMSG);
	/* Frames on their own still decode; so does a new stream. */
	free(x[1].wire);
	free(x[2].wire);
	seal(s, 3, a, ST_LEN, &x[1]);
	seal(s, 3, b, ST_LEN, &x[2]);
	seal(s, 3, a, ST_LEN, &x[3]);
	assert_int_equal(x[1].f.flags, TRANSPORT_FRAME_COMPRESSED);
	assert_int_equal(x[2].f.flags, F_START);
	assert_int_equal(x[3].f.flags, F_STREAM);
	for (int i = 1; i < 4; i++)
		assert_int_equal(open_frame(o, &x[i].f, x[i].wire, i == 2 ? b : a), 0);
	for (int i = 0; i < 4; i++)
		free(x[i].wire);
	transport_opener_free(o);
	transport_sealer_free(s);

	/* A flipped byte, a piece cut short, a piece that holds more than the header says. */
	for (int kind = 0; kind < 3; kind++) {
		struct transport_frame f;

		assert_int_equal(transport_sealer_new_stream(&s), 0);
		assert_int_equal(transport_opener_new(&o), 0);
		seal(s, 1, a, ST_LEN, &x[0]);
		seal(s, 1, b, ST_LEN, &x[1]);
		assert_int_equal(open_frame(o, &x[0].f, x[0].wire, a), 0);
		f = x[1].f;
		if (kind == 0)
			x[1].wire[f.wire_len / 2] ^= 0x10;
		else if (kind == 1)
			f.wire_len--;
		else
			f.raw_len--;
		assert_int_equal(open_frame(o, &f, x[1].wire, NULL), -EBADMSG);
		for (int i = 0; i < 2; i++)
			free(x[i].wire);
		transport_opener_free(o);
		transport_sealer_free(s);
	}

	/* A streamed frame without a stream started. */
	assert_int_equal(transport_sealer_new_stream(&s), 0);
	assert_int_equal(transport_opener_new(&o), 0);
	seal(s, 1, a, ST_LEN, &x[0]);
	seal(s, 1, b, ST_LEN, &x[1]);
	assert_int_equal(x[1].f.flags, F_STREAM);
	assert_int_equal(open_frame(o, &x[1].f, x[1].wire, NULL), -EBADMSG);
	for (int i = 0; i < 2; i++)
		free(x[i].wire);
	transport_opener_free(o);
	transport_sealer_free(s);
	free(a);
	free(b);
}

/* ---- page batches ------------------------------------------------------------------------ */

#define PS 4096

static uint8_t *encode_batch(uint32_t n, const uint8_t *zero_pattern, size_t *ret_len,
			     uint8_t ***ret_pages, uint64_t **ret_addrs)
{
	uint8_t **pages = calloc(n ? n : 1, sizeof(*pages));
	uint64_t *addrs = calloc(n ? n : 1, sizeof(*addrs));
	uint8_t *out = malloc(transport_pages_bound(n, PS));

	assert_non_null(pages);
	assert_non_null(addrs);
	assert_non_null(out);
	for (uint32_t i = 0; i < n; i++) {
		pages[i] = calloc(1, PS);
		assert_non_null(pages[i]);
		if (!zero_pattern[i])
			fill_random(pages[i], PS);
		addrs[i] = 0x7f0000000000ULL + (uint64_t)(i * 3) * PS;
	}
	*ret_len = transport_pages_encode(addrs, (const void *const *)pages, n, PS, out);
	assert_true(*ret_len <= transport_pages_bound(n, PS));
	*ret_pages = pages;
	*ret_addrs = addrs;
	return out;
}

static void free_batch(uint32_t n, uint8_t *out, uint8_t **pages, uint64_t *addrs)
{
	for (uint32_t i = 0; i < n; i++)
		free(pages[i]);
	free(pages);
	free(addrs);
	free(out);
}

static void test_pages_round_trip(void **state)
{
	static const uint8_t pattern[] = {0, 1, 1, 0, 0, 1, 0, 0, 1, 1, 1};

	for (uint32_t n = 0; n <= sizeof(pattern); n++) {
		uint8_t **pages;
		uint64_t *addrs;
		size_t len, zeros = 0;
		uint8_t *out = encode_batch(n, pattern, &len, &pages, &addrs);
		struct transport_pages_view v;
		const uint8_t *d;

		assert_int_equal(transport_pages_decode(out, len, &v), 0);
		assert_int_equal(v.n_pages, n);
		assert_int_equal(v.page_size, PS);
		d = v.data;
		for (uint32_t i = 0; i < n; i++) {
			bool z = v.zero_bitmap[i / 8] & (1U << (i % 8));
			assert_int_equal(v.addrs[i], addrs[i]);
			assert_int_equal(z, pattern[i]);
			if (z) {
				zeros++;
				continue;
			}
			assert_memory_equal(d, pages[i], PS);
			d += PS;
		}
		assert_ptr_equal(d, out + len);
		assert_int_equal(len, 8 + 8 * n + (n + 7) / 8 + (n - zeros) * PS);
		free_batch(n, out, pages, addrs);
	}
}

static void test_pages_bound(void **state)
{
	assert_int_equal(transport_pages_bound(0, PS), 8);
	assert_int_equal(transport_pages_bound(1, PS), 8 + 8 + 1 + PS);
	assert_int_equal(transport_pages_bound(9, 1 << 21), 8 + 72 + 2 + 9 * (size_t)(1 << 21));
	assert_true(transport_pages_bound(UINT32_MAX, UINT32_MAX) > (size_t)UINT32_MAX);
}

static void put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

static int decode_copy(const uint8_t *p, size_t len)
{
	/* An exact-size, 8-aligned copy: ASan catches any read past len. */
	uint8_t *c = aligned_alloc(8, len > 0 ? (len + 7) / 8 * 8 : 8);
	struct transport_pages_view v;
	int r;

	assert_non_null(c);
	memcpy(c, p, len);
	r = transport_pages_decode(c, len, &v);
	free(c);
	return r;
}

static void test_pages_malformed(void **state)
{
	static const uint8_t pattern[] = {0, 1, 0, 1, 0, 0, 0, 0, 0};
	uint32_t n = sizeof(pattern);
	uint8_t **pages;
	uint64_t *addrs;
	size_t len;
	uint8_t *out = encode_batch(n, pattern, &len, &pages, &addrs);
	uint8_t *m = aligned_alloc(8, (len + 64) / 8 * 8);
	size_t bitmap = 8 + 8 * n;

	assert_non_null(m);
	assert_int_equal(decode_copy(out, len), 0);

	/* Every truncation, and one byte too many. */
	for (size_t l = 0; l < len; l++)
		assert_int_equal(decode_copy(out, l), -EBADMSG);
	memcpy(m, out, len);
	m[len] = 0;
	assert_int_equal(decode_copy(m, len + 1), -EBADMSG);

	/* Page sizes: not a power of two, too small, too large. */
	static const uint32_t bad_sizes[] = {0,	   1,	    2048,	4095,	 4097,
					     6144, 4 << 20, UINT32_MAX, 1U << 31};
	for (size_t i = 0; i < sizeof(bad_sizes) / sizeof(bad_sizes[0]); i++) {
		memcpy(m, out, len);
		put32(m + 4, bad_sizes[i]);
		assert_int_equal(decode_copy(m, len), -EBADMSG);
	}
	/* A larger valid page size no longer matches the data length. */
	memcpy(m, out, len);
	put32(m + 4, 8192);
	assert_int_equal(decode_copy(m, len), -EBADMSG);

	/* Counts that would overflow or do not match. */
	const uint32_t bad_counts[] = {n - 1, n + 1, 1U << 29, 1U << 31, UINT32_MAX};
	for (size_t i = 0; i < sizeof(bad_counts) / sizeof(bad_counts[0]); i++) {
		memcpy(m, out, len);
		put32(m, bad_counts[i]);
		assert_int_equal(decode_copy(m, len), -EBADMSG);
	}

	/* The bitmap against the data: a page more or less marked zero; bits past n_pages. */
	memcpy(m, out, len);
	m[bitmap] ^= 0x01;
	assert_int_equal(decode_copy(m, len), -EBADMSG);
	memcpy(m, out, len);
	m[bitmap] ^= 0x02;
	assert_int_equal(decode_copy(m, len), -EBADMSG);
	for (unsigned bit = 1; bit < 8; bit++) {
		memcpy(m, out, len);
		m[bitmap + 1] |= (uint8_t)(1 << bit);
		assert_int_equal(decode_copy(m, len), -EBADMSG);
	}

	/* An address that is not page-aligned. */
	memcpy(m, out, len);
	m[8 + 8 * 2] |= 0x01;
	assert_int_equal(decode_copy(m, len), -EBADMSG);

	/* The view points into the payload: an unaligned payload is refused, not misread. */
	{
		uint8_t *u = malloc(len + 1);
		struct transport_pages_view v;
		assert_non_null(u);
		memcpy(u + 1, out, len);
		assert_int_equal(transport_pages_decode(u + 1, len, &v), -EINVAL);
		free(u);
	}

	free(m);
	free_batch(n, out, pages, addrs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip_levels),
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_zero),
		cmocka_unit_test(test_is_zero),
		cmocka_unit_test(test_incompressible),
		cmocka_unit_test(test_seal_errors),
		cmocka_unit_test(test_corruption),
		cmocka_unit_test(test_frame_pipeline),
		cmocka_unit_test(test_streamed_history),
		cmocka_unit_test(test_streamed_transitions),
		cmocka_unit_test(test_streamed_damage),
		cmocka_unit_test(test_pages_round_trip),
		cmocka_unit_test(test_pages_bound),
		cmocka_unit_test(test_pages_malformed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
