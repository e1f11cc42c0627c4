/* The zstd stage: seals raw payloads into frames (zero detection, compression, checksum) and
 * opens them again (decompression, checksum check); and the adaptive level controller. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "transport/frame-internal.h"

/* Level 0 means "do not compress"; otherwise a zstd level (negative = zstd's fast levels). */
#define TRANSPORT_LEVEL_OFF 0

/* Per-thread compression state (not thread-safe; one per worker). */
struct transport_sealer;
int transport_sealer_new(struct transport_sealer **ret);
/* A sealer for one stream of frames received in order: compressed frames continue one zstd
 * stream (STREAMED), so repeats across frames compress too. Its frames must reach one opener,
 * in order, with none left out. */
int transport_sealer_new_stream(struct transport_sealer **ret);
struct transport_sealer *transport_sealer_free(struct transport_sealer *s);
/* Largest wire payload for raw_len bytes (for sizing out buffers). */
size_t transport_wire_bound(size_t raw_len);
/* Fills f->flags/raw_len/wire_len/checksum and writes the wire payload to out (which holds
 * transport_wire_bound(len) bytes). An all-zero payload becomes ZERO with no wire bytes;
 * compressed output that is not smaller than the input is sent raw. The time spent
 * compressing is returned for the adaptive controller. */
int transport_seal(struct transport_sealer *s, int level, const void *raw, size_t len, void *out,
		   struct transport_frame *f, uint64_t *ret_compress_ns);

/* The same without copying a payload that is sent raw: *ret_wire points at the bytes to send
 * (out when compressed, else raw itself; nothing for a ZERO frame). */
int transport_seal_ref(struct transport_sealer *s, int level, const void *raw, size_t len,
		       void *out, struct transport_frame *f, uint64_t *ret_compress_ns,
		       const void **ret_wire);

struct transport_opener;
int transport_opener_new(struct transport_opener **ret);
struct transport_opener *transport_opener_free(struct transport_opener *o);
/* Decompresses (or copies/zero-fills) into raw (raw_len bytes) and checks the XXH3 checksum:
 * -EBADMSG on any mismatch or a zstd error, never a partial result. */
int transport_open(struct transport_opener *o, const struct transport_frame *f, const void *wire,
		   void *raw);

/* Chooses the compression level from what it measures: how fast the link drains wire bytes,
 * and each level's speed and ratio on the data actually sent. Off when compression does not
 * raise effective throughput (random data, a link faster than compression). Thread-safe. */
struct transport_adapt;
enum transport_adapt_mode {
	TRANSPORT_ADAPT_AUTO,
	TRANSPORT_ADAPT_FIXED, /* always the configured level (0 = never compress) */
};
int transport_adapt_new(enum transport_adapt_mode mode, int fixed_level, unsigned n_workers,
			struct transport_adapt **ret);
struct transport_adapt *transport_adapt_free(struct transport_adapt *a);
/* The level for the next frame (now and then a neighbouring level, to keep measuring). */
int transport_adapt_next_level(struct transport_adapt *a);
/* One sealed frame: the stream it goes on, its level, sizes and compression time. */
void transport_adapt_record_frame(struct transport_adapt *a, unsigned stream, int level, size_t raw,
				  size_t wire, uint64_t compress_ns);
/* Link drain: wire bytes written by one sender and the wall time the write took (including
 * blocking on a full socket). */
void transport_adapt_record_write(struct transport_adapt *a, size_t wire, uint64_t write_ns);
/* The receiving application's time blocked handing data on (summed over its streams), as the
 * peer reports it: windows it paced measure the receiver, not the link (see adapt.c). */
void transport_adapt_record_receiver(struct transport_adapt *a, uint64_t blocked_ns);
/* The level in use now and the estimates behind it, for peer-test and logs. */
struct transport_adapt_stats {
	int level;
	double link_bytes_per_sec; /* estimated wire throughput, 0 if unknown */
	double ratio;		   /* raw/wire at the current level */
	unsigned workers;	   /* streams compressing in parallel, as the model counts them */
};
void transport_adapt_get_stats(struct transport_adapt *a, struct transport_adapt_stats *ret);
/* For tests: the clock (nanoseconds, monotonic) that delimits link measurement windows. */
void transport_adapt_set_clock(struct transport_adapt *a, uint64_t (*clock_ns)(void *userdata),
			       void *userdata);

/* Page batches (TRANSPORT_FRAME_PAGES payload): n page addresses, a bitmap of all-zero pages
 * and the data of the other pages only. */
struct transport_pages_view {
	uint32_t n_pages;
	uint32_t page_size;
	const uint64_t *addrs;	    /* n_pages */
	const uint8_t *zero_bitmap; /* (n_pages + 7) / 8 bytes; bit set = page is zeros */
	const uint8_t *data;	    /* the non-zero pages, in order */
};
size_t transport_pages_bound(uint32_t n_pages, uint32_t page_size);
/* Encodes pages[i] (page_size bytes each) at addrs[i] into out; returns the payload size. */
size_t transport_pages_encode(const uint64_t *addrs, const void *const *pages, uint32_t n_pages,
			      uint32_t page_size, void *out);
/* Checks the layout (counts, sizes, bitmap vs data length) of a received payload. The view
 * points into it, so it must be 8-byte aligned (malloc'ed buffers are): -EINVAL otherwise. */
int transport_pages_decode(const void *payload, size_t len, struct transport_pages_view *ret);
