/* The 48-byte frame header: its little-endian encoding and every check a received one must pass
 * before a single payload byte is read. */
#include <stdio.h>
#include <string.h>

#include <xxhash.h>
#include <zstd.h>

#include "common/macro.h"
#include "transport/frame-internal.h"

/* Offsets of the header fields, packed in this order. The fields add up to 44 bytes with the
 * check, so the reserved word is followed by 4 bytes of padding to reach 48: bytes 36..43 are
 * reserved and must be zero, and the XXH32 check (seed 0) of bytes 0..43 sits at 44..47. */
enum {
	OFF_MAGIC = 0,
	OFF_VERSION = 4,
	OFF_TYPE = 5,
	OFF_FLAGS = 6,
	OFF_STREAM = 8,
	OFF_SEQ = 12,
	OFF_RAW_LEN = 20,
	OFF_WIRE_LEN = 24,
	OFF_CHECKSUM = 28,
	OFF_RESERVED = 36, /* 8 bytes */
	CHECKED_LEN = 44,
};
_Static_assert(CHECKED_LEN + 4 == TRANSPORT_FRAME_HEADER_SIZE, "header layout");

#define KNOWN_FLAGS                                                                     \
	(TRANSPORT_FRAME_COMPRESSED | TRANSPORT_FRAME_ZERO | TRANSPORT_FRAME_STREAMED | \
	 TRANSPORT_FRAME_STREAM_START)

static void put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put_le32(uint8_t *p, uint32_t v)
{
	for (unsigned i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (unsigned i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_le32(const uint8_t *p)
{
	uint32_t v = 0;
	for (unsigned i = 0; i < 4; i++)
		v |= (uint32_t)p[i] << (8 * i);
	return v;
}

static uint64_t get_le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

void transport_frame_header_encode(const struct transport_frame *f,
				   uint8_t out[TRANSPORT_FRAME_HEADER_SIZE])
{
	memset(out, 0, TRANSPORT_FRAME_HEADER_SIZE);
	put_le32(out + OFF_MAGIC, TRANSPORT_FRAME_MAGIC);
	out[OFF_VERSION] = TRANSPORT_FRAME_VERSION;
	out[OFF_TYPE] = f->type;
	put_le16(out + OFF_FLAGS, f->flags);
	put_le32(out + OFF_STREAM, f->stream);
	put_le64(out + OFF_SEQ, f->seq);
	put_le32(out + OFF_RAW_LEN, f->raw_len);
	put_le32(out + OFF_WIRE_LEN, f->wire_len);
	put_le64(out + OFF_CHECKSUM, f->checksum);
	put_le32(out + CHECKED_LEN, XXH32(out, CHECKED_LEN, 0));
}

/* The formatted reasons (sequence gap, wrong stream) live in a thread-local buffer: valid until
 * the same thread decodes the next header. The other reasons are string literals. */
static _Thread_local char reason_buf[96];

static int reject(const char **ret_reason, const char *reason)
{
	if (ret_reason)
		*ret_reason = reason;
	return -EBADMSG;
}

int transport_frame_header_decode(const uint8_t in[TRANSPORT_FRAME_HEADER_SIZE],
				  uint32_t expected_stream, uint64_t expected_seq, size_t max_raw,
				  struct transport_frame *ret, const char **ret_reason)
{
	struct transport_frame f;

	if (get_le32(in + OFF_MAGIC) != TRANSPORT_FRAME_MAGIC)
		return reject(ret_reason, "bad magic");
	if (in[OFF_VERSION] != TRANSPORT_FRAME_VERSION)
		return reject(ret_reason, "unsupported frame version");
	/* Checked before any field is interpreted: a flipped bit anywhere else ends up here. */
	if (get_le32(in + CHECKED_LEN) != XXH32(in, CHECKED_LEN, 0))
		return reject(ret_reason, "header checksum mismatch");
	if (get_le64(in + OFF_RESERVED) != 0)
		return reject(ret_reason, "reserved field not zero");

	f = (struct transport_frame){
		.type = in[OFF_TYPE],
		.flags = get_le16(in + OFF_FLAGS),
		.stream = get_le32(in + OFF_STREAM),
		.seq = get_le64(in + OFF_SEQ),
		.raw_len = get_le32(in + OFF_RAW_LEN),
		.wire_len = get_le32(in + OFF_WIRE_LEN),
		.checksum = get_le64(in + OFF_CHECKSUM),
	};

	if (f.type < TRANSPORT_FRAME_DATA || f.type >= _TRANSPORT_FRAME_TYPE_MAX)
		return reject(ret_reason, "unknown frame type");
	if (f.flags & ~KNOWN_FLAGS)
		return reject(ret_reason, "unknown frame flags");
	if ((f.flags & TRANSPORT_FRAME_COMPRESSED) && (f.flags & TRANSPORT_FRAME_ZERO))
		return reject(ret_reason, "frame both compressed and zero");
	if ((f.flags & TRANSPORT_FRAME_STREAMED) && !(f.flags & TRANSPORT_FRAME_COMPRESSED))
		return reject(ret_reason, "streamed frame not compressed");
	if ((f.flags & TRANSPORT_FRAME_STREAM_START) && !(f.flags & TRANSPORT_FRAME_STREAMED))
		return reject(ret_reason, "stream start on a frame not streamed");

	/* The protocol's own cap applies whatever the caller allows. */
	if (f.raw_len > MIN(max_raw, (size_t)TRANSPORT_FRAME_MAX_RAW))
		return reject(ret_reason, "raw length too large");
	if (f.flags & TRANSPORT_FRAME_ZERO) {
		if (f.wire_len != 0)
			return reject(ret_reason, "zero frame with a payload");
	} else if (f.flags & TRANSPORT_FRAME_COMPRESSED) {
		if (f.wire_len == 0 || f.wire_len > ZSTD_compressBound(f.raw_len))
			return reject(ret_reason, "compressed length out of bounds");
	} else if (f.wire_len != f.raw_len) {
		return reject(ret_reason, "wire length differs from raw length");
	}

	if (f.stream != expected_stream) {
		snprintf(reason_buf, sizeof(reason_buf), "wrong stream: expected %u, got %u",
			 expected_stream, f.stream);
		return reject(ret_reason, reason_buf);
	}
	if (f.seq != expected_seq) {
		snprintf(reason_buf, sizeof(reason_buf), "sequence gap: expected %llu, got %llu",
			 (unsigned long long)expected_seq, (unsigned long long)f.seq);
		return reject(ret_reason, reason_buf);
	}

	*ret = f;
	if (ret_reason)
		*ret_reason = NULL;
	return 0;
}
