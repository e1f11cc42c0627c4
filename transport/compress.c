/* The zstd stage: sealing raw payloads into frame payloads (zero detection, compression, XXH3
 * checksum) and opening them again, with one reused zstd context per sealer or opener. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/util.h"
#include "transport/compress-internal.h"

struct transport_sealer {
	ZSTD_CCtx *cctx;
	int level; /* the level set on cctx, 0 before the first compression */
};

struct transport_opener {
	ZSTD_DCtx *dctx;
};

bool transport_buffer_is_zero(const void *p, size_t len)
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

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t checksum(const void *p, size_t len)
{
	return len > 0 ? XXH3_64bits(p, len) : XXH3_64bits("", 0);
}

int transport_sealer_new(struct transport_sealer **ret)
{
	_cleanup_free_ struct transport_sealer *s = NULL;
	size_t z;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->cctx = ZSTD_createCCtx();
	if (!s->cctx)
		return -ENOMEM;
	/* The frame carries an XXH3 of the raw payload already; zstd's own would be a second. */
	z = ZSTD_CCtx_setParameter(s->cctx, ZSTD_c_checksumFlag, 0);
	if (ZSTD_isError(z)) {
		ZSTD_freeCCtx(s->cctx);
		return log_debug_errno(EIO, "zstd: %s", ZSTD_getErrorName(z));
	}
	*ret = TAKE_PTR(s);
	return 0;
}

struct transport_sealer *transport_sealer_free(struct transport_sealer *s)
{
	if (!s)
		return NULL;
	ZSTD_freeCCtx(s->cctx);
	free(s);
	return NULL;
}

size_t transport_wire_bound(size_t raw_len)
{
	return ZSTD_compressBound(raw_len);
}

static bool level_valid(int level)
{
	return level == TRANSPORT_LEVEL_OFF ||
	       (level >= ZSTD_minCLevel() && level <= ZSTD_maxCLevel());
}

/* Gives the compressed size, or 0 when the output would not be smaller than the input. */
static int compress_smaller(struct transport_sealer *s, int level, const void *raw, size_t len,
			    void *out, size_t *ret_size)
{
	size_t z;

	if (s->level != level) {
		z = ZSTD_CCtx_setParameter(s->cctx, ZSTD_c_compressionLevel, level);
		if (ZSTD_isError(z))
			return log_debug_errno(EINVAL, "zstd level %d: %s", level,
					       ZSTD_getErrorName(z));
		s->level = level;
	}
	/* One byte less than the input: zstd gives up as soon as the output could not be smaller,
	 * which is the case where the frame goes raw anyway. */
	z = ZSTD_compress2(s->cctx, out, len - 1, raw, len);
	if (ZSTD_isError(z)) {
		if (ZSTD_getErrorCode(z) == ZSTD_error_dstSize_tooSmall) {
			*ret_size = 0;
			return 0;
		}
		/* The context may be left mid-frame: reset it for the next call. */
		(void)ZSTD_CCtx_reset(s->cctx, ZSTD_reset_session_only);
		return log_debug_errno(EIO, "zstd compression failed: %s", ZSTD_getErrorName(z));
	}
	*ret_size = z;
	return 0;
}

int transport_seal(struct transport_sealer *s, int level, const void *raw, size_t len, void *out,
		   struct transport_frame *f, uint64_t *ret_compress_ns)
{
	const void *wire;
	int r = transport_seal_ref(s, level, raw, len, out, f, ret_compress_ns, &wire);

	if (r >= 0 && wire == raw && len > 0)
		memcpy(out, raw, len);
	return r;
}

int transport_seal_ref(struct transport_sealer *s, int level, const void *raw, size_t len,
		       void *out, struct transport_frame *f, uint64_t *ret_compress_ns,
		       const void **ret_wire)
{
	uint16_t flags = 0;
	size_t wire = len;
	uint64_t ns = 0;
	int r;

	if (len > TRANSPORT_FRAME_MAX_RAW)
		return -EMSGSIZE;
	if (!level_valid(level))
		return -EINVAL;

	if (len > 0 && transport_buffer_is_zero(raw, len)) {
		flags = TRANSPORT_FRAME_ZERO;
		wire = 0;
	} else if (level != TRANSPORT_LEVEL_OFF && len > 1) {
		size_t z = 0;
		uint64_t t0 = now_ns();

		r = compress_smaller(s, level, raw, len, out, &z);
		ns = now_ns() - t0;
		if (r < 0)
			return r;
		if (z > 0) {
			flags = TRANSPORT_FRAME_COMPRESSED;
			wire = z;
		}
	}
	*ret_wire = flags == TRANSPORT_FRAME_COMPRESSED ? out : raw;
	f->flags = flags;
	f->raw_len = (uint32_t)len;
	f->wire_len = (uint32_t)wire;
	f->checksum = checksum(raw, len);
	if (ret_compress_ns)
		*ret_compress_ns = ns;
	return 0;
}

int transport_opener_new(struct transport_opener **ret)
{
	_cleanup_free_ struct transport_opener *o = NULL;

	o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	o->dctx = ZSTD_createDCtx();
	if (!o->dctx)
		return -ENOMEM;
	*ret = TAKE_PTR(o);
	return 0;
}

struct transport_opener *transport_opener_free(struct transport_opener *o)
{
	if (!o)
		return NULL;
	ZSTD_freeDCtx(o->dctx);
	free(o);
	return NULL;
}

int transport_open(struct transport_opener *o, const struct transport_frame *f, const void *wire,
		   void *raw)
{
	/* The header decoder checked all of this already; a caller that skipped it must not get
	 * an out-of-bounds write instead of an error. */
	if (f->raw_len > TRANSPORT_FRAME_MAX_RAW)
		return -EBADMSG;

	if (f->flags & TRANSPORT_FRAME_ZERO) {
		if (f->wire_len != 0 || (f->flags & TRANSPORT_FRAME_COMPRESSED))
			return -EBADMSG;
		if (f->raw_len > 0)
			memset(raw, 0, f->raw_len);
	} else if (f->flags & TRANSPORT_FRAME_COMPRESSED) {
		size_t z;

		if (f->wire_len == 0)
			return -EBADMSG;
		/* Never more than raw_len bytes: a longer stream fails with dstSize_tooSmall. */
		z = ZSTD_decompressDCtx(o->dctx, raw, f->raw_len, wire, f->wire_len);
		if (ZSTD_isError(z)) {
			log_debug("zstd decompression failed: %s", ZSTD_getErrorName(z));
			return -EBADMSG;
		}
		if (z != f->raw_len)
			return log_debug_errno(EBADMSG,
					       "zstd frame holds %zu bytes, header says %u", z,
					       f->raw_len);
	} else {
		if (f->wire_len != f->raw_len)
			return -EBADMSG;
		if (f->raw_len > 0)
			memcpy(raw, wire, f->raw_len);
	}

	if (checksum(raw, f->raw_len) != f->checksum)
		return log_debug_errno(EBADMSG, "payload checksum mismatch");
	return 0;
}
