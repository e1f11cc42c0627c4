/* Frames on a transport stream: a fixed 48-byte header and a payload, with the checks that
 * keep a corrupt, reordered or oversized frame from ever being handed up. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TRANSPORT_FRAME_MAGIC	    0x4652474dU /* "MGRF" little-endian */
#define TRANSPORT_FRAME_VERSION	    1
#define TRANSPORT_FRAME_HEADER_SIZE 48
#define TRANSPORT_FRAME_MAX_RAW	    (8U << 20) /* largest payload a frame may carry */

enum transport_frame_type {
	TRANSPORT_FRAME_DATA = 1,  /* opaque bytes */
	TRANSPORT_FRAME_PAGES = 2, /* a page batch (see transport_pages_*) */
	TRANSPORT_FRAME_CONTROL = 3,
	TRANSPORT_FRAME_END = 4,   /* the sender closes this stream cleanly */
	TRANSPORT_FRAME_ERROR = 5, /* the sender aborts; payload is a message */
	_TRANSPORT_FRAME_TYPE_MAX,
};

enum {
	TRANSPORT_FRAME_COMPRESSED = 1 << 0, /* payload is one zstd frame (but see STREAMED) */
	TRANSPORT_FRAME_ZERO = 1 << 1,	     /* raw payload is raw_len zero bytes; wire_len is 0 */
	/* With COMPRESSED: the payload continues the stream's zstd stream, flushed to a block
	 * boundary; it may refer to the stream's earlier streamed frames. */
	TRANSPORT_FRAME_STREAMED = 1 << 2,
	/* With STREAMED: the payload starts a new zstd stream (the receiver resets first). */
	TRANSPORT_FRAME_STREAM_START = 1 << 3,
};

/* The decoded header. */
struct transport_frame {
	uint8_t type;
	uint16_t flags;
	uint32_t stream;
	uint64_t seq;
	uint32_t raw_len;
	uint32_t wire_len;
	uint64_t checksum; /* XXH3-64 of the raw payload */
};

/* Writes the 48-byte wire header (little-endian, with its own XXH32 check). */
void transport_frame_header_encode(const struct transport_frame *f,
				   uint8_t out[TRANSPORT_FRAME_HEADER_SIZE]);
/* Validates magic, version, type, flags, header check, lengths (raw <= max_raw, wire no
 * larger than zstd's bound for raw, ZERO => wire 0, uncompressed => wire == raw), and that
 * stream and seq are the expected ones. Returns -EBADMSG and a reason on any mismatch: a
 * static string, or for a wrong stream or sequence one formatted in a thread-local buffer that
 * stays valid until the same thread decodes again. */
int transport_frame_header_decode(const uint8_t in[TRANSPORT_FRAME_HEADER_SIZE],
				  uint32_t expected_stream, uint64_t expected_seq, size_t max_raw,
				  struct transport_frame *ret, const char **ret_reason);
