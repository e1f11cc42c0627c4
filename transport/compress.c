/* The zstd stage: sealing raw payloads into frame payloads (zero detection, compression, XXH3
 * checksum) and opening them again, with reused zstd contexts per sealer or opener.
 *
 * A stream sealer (one per transport stream, whose frames arrive in order) keeps one zstd
 * stream open across frames: each frame's payload is the input flushed to a block boundary, so
 * it decodes at once, and later frames may refer to everything sent before them (the window:
 * 0.5-8 MiB at the levels used). Memory images repeat across frames far more than within one:
 * level 3 on a mixed guest image, 2.2x streamed vs 1.6x per 256 KiB frame.
 *
 * The stream restarts (STREAM_START) when the level changes, after a frame whose compressed
 * form was not smaller (it went raw, so the receiver never saw what the encoder took in), and
 * after an error. A frame at another level than the stream's, alone (the adaptive controller's
 * probes), is compressed on its own, without touching the stream; the second such frame in a
 * row at the same level restarts the stream at that level. Zero and uncompressed frames do not
 * touch the stream on either side. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "common/cleanup.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/util.h"
#include "transport/compress-internal.h"

/* The largest window a streamed frame may need: levels up to 19 use at most 8 MiB. */
#define STREAM_WINDOW_LOG 23

struct transport_sealer {
	ZSTD_CCtx *cctx;
	int level; /* the level set on cctx, 0 before the first compression */

	bool streaming;	    /* a stream sealer */
	ZSTD_CCtx *scctx;   /* the stream's context (created at its first use) */
	bool stream_open;   /* scctx holds a stream the receiver follows */
	int stream_level;   /* its level */
	int other_level;    /* the level of the last frames that were not streamed ... */
	unsigned other_run; /* ... and how many of them in a row */
};

struct transport_opener {
	ZSTD_DCtx *dctx;
	ZSTD_DCtx *sdctx; /* streamed frames (created at the first) */
	bool stream_open; /* sdctx follows a stream started by a STREAM_START frame */
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t checksum(const void *p, size_t len)
{
	return len > 0 ? hash_xxh3(p, len) : hash_xxh3("", 0);
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

int transport_sealer_new_stream(struct transport_sealer **ret)
{
	int r = transport_sealer_new(ret);

	if (r >= 0)
		(*ret)->streaming = true;
	return r;
}

struct transport_sealer *transport_sealer_free(struct transport_sealer *s)
{
	if (!s)
		return NULL;
	ZSTD_freeCCtx(s->cctx);
	ZSTD_freeCCtx(s->scctx);
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

static void stream_close(struct transport_sealer *s)
{
	(void)ZSTD_CCtx_reset(s->scctx, ZSTD_reset_session_only);
	s->stream_open = false;
}

/* Continues (or starts, *ret_start) the stream with raw; the output is flushed to a block
 * boundary. 0 in *ret_size when it would not be smaller than the input: the stream is closed
 * then, since the receiver will not see what it took in. */
static int compress_streamed(struct transport_sealer *s, int level, const void *raw, size_t len,
			     void *out, size_t *ret_size, bool *ret_start)
{
	ZSTD_inBuffer in = {raw, len, 0};
	ZSTD_outBuffer o = {out, len - 1, 0};
	bool start = !s->stream_open || s->stream_level != level;
	size_t z;

	if (!s->scctx) {
		s->scctx = ZSTD_createCCtx();
		if (!s->scctx)
			return -ENOMEM;
	}
	if (start) {
		/* Parameters too: a window set for a high level must not stay. */
		(void)ZSTD_CCtx_reset(s->scctx, ZSTD_reset_session_and_parameters);
		s->stream_open = false;
		z = ZSTD_CCtx_setParameter(s->scctx, ZSTD_c_compressionLevel, level);
		if (!ZSTD_isError(z))
			z = ZSTD_CCtx_setParameter(s->scctx, ZSTD_c_checksumFlag, 0);
		/* Levels up to 19 keep within STREAM_WINDOW_LOG; the rest are held to it. */
		if (!ZSTD_isError(z) && level > 19)
			z = ZSTD_CCtx_setParameter(s->scctx, ZSTD_c_windowLog, STREAM_WINDOW_LOG);
		if (ZSTD_isError(z))
			return log_debug_errno(EINVAL, "zstd level %d: %s", level,
					       ZSTD_getErrorName(z));
		s->stream_open = true;
		s->stream_level = level;
	}
	for (;;) {
		z = ZSTD_compressStream2(s->scctx, &o, &in, ZSTD_e_flush);
		if (ZSTD_isError(z)) {
			stream_close(s);
			return log_debug_errno(EIO, "zstd compression failed: %s",
					       ZSTD_getErrorName(z));
		}
		if (z == 0 && in.pos == in.size)
			break;
		if (o.pos == o.size) {
			/* No room left: not smaller than the input. */
			stream_close(s);
			*ret_size = 0;
			return 0;
		}
	}
	*ret_size = o.pos;
	*ret_start = start;
	return 0;
}

/* Whether a frame at level goes into the stream (see the top of the file). */
static bool use_stream(struct transport_sealer *s, int level)
{
	if (!s->streaming)
		return false;
	if (s->stream_open && level != s->stream_level) {
		if (s->other_level == level)
			s->other_run++;
		else {
			s->other_level = level;
			s->other_run = 1;
		}
		if (s->other_run < 2)
			return false;
	}
	s->other_run = 0;
	return true;
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

	if (len > 0 && memeqzero(raw, len)) {
		flags = TRANSPORT_FRAME_ZERO;
		wire = 0;
	} else if (level != TRANSPORT_LEVEL_OFF && len > 1) {
		size_t z = 0;
		uint64_t t0 = now_ns();
		bool streamed = use_stream(s, level), start = false;

		if (streamed)
			r = compress_streamed(s, level, raw, len, out, &z, &start);
		else
			r = compress_smaller(s, level, raw, len, out, &z);
		ns = now_ns() - t0;
		if (r < 0)
			return r;
		if (z > 0) {
			flags = TRANSPORT_FRAME_COMPRESSED;
			if (streamed)
				flags |= TRANSPORT_FRAME_STREAMED |
					 (start ? TRANSPORT_FRAME_STREAM_START : 0);
			wire = z;
		}
	}
	*ret_wire = (flags & TRANSPORT_FRAME_COMPRESSED) ? out : raw;
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
	ZSTD_freeDCtx(o->sdctx);
	free(o);
	return NULL;
}

/* Decodes one flushed piece of the stream into exactly raw_len bytes. Any error leaves the
 * stream unusable until the next STREAM_START. */
static int open_streamed(struct transport_opener *o, const struct transport_frame *f,
			 const void *wire, void *raw)
{
	ZSTD_inBuffer in = {wire, f->wire_len, 0};
	ZSTD_outBuffer out = {raw, f->raw_len, 0};
	size_t z;

	if (!o->sdctx) {
		o->sdctx = ZSTD_createDCtx();
		if (!o->sdctx)
			return -ENOMEM;
		z = ZSTD_DCtx_setParameter(o->sdctx, ZSTD_d_windowLogMax, STREAM_WINDOW_LOG);
		if (ZSTD_isError(z))
			return -EIO;
	}
	if (f->flags & TRANSPORT_FRAME_STREAM_START) {
		(void)ZSTD_DCtx_reset(o->sdctx, ZSTD_reset_session_only);
		o->stream_open = true;
	}
	if (!o->stream_open)
		return log_debug_errno(EBADMSG, "streamed frame without a stream");
	for (;;) {
		size_t in_before = in.pos, out_before = out.pos;

		z = ZSTD_decompressStream(o->sdctx, &out, &in);
		if (ZSTD_isError(z)) {
			log_debug("zstd stream decompression failed: %s", ZSTD_getErrorName(z));
			break;
		}
		if (in.pos == in.size && out.pos == out.size)
			return 0;
		/* More output than raw_len, or input that ends mid-block: corrupt. */
		if (in.pos == in_before && out.pos == out_before) {
			log_debug("zstd stream piece holds other than %u bytes", f->raw_len);
			break;
		}
	}
	o->stream_open = false;
	return -EBADMSG;
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
	} else if (f->flags & TRANSPORT_FRAME_STREAMED) {
		int r;

		if (!(f->flags & TRANSPORT_FRAME_COMPRESSED) || f->wire_len == 0)
			return -EBADMSG;
		r = open_streamed(o, f, wire, raw);
		if (r < 0)
			return r;
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

	if (checksum(raw, f->raw_len) != f->checksum) {
		/* Whatever the stream decoded is not what the sender had: its history is wrong. */
		if (f->flags & TRANSPORT_FRAME_STREAMED)
			o->stream_open = false;
		return log_debug_errno(EBADMSG, "payload checksum mismatch");
	}
	return 0;
}
