/* libFuzzer target: a frame as a peer sends it (48-byte header, then the payload), through
 * the header decoder, the opener and the page batch decoder; and a seal/open round trip. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "transport/compress-internal.h"

#define MAX_RAW (1U << 20) /* bounded: a fuzz run must stay fast */

/* raw is a malloc'ed copy of exactly len bytes (ASan sees any read past it). */
static void decode_pages(const uint8_t *raw, size_t len)
{
	struct transport_pages_view view;
	size_t n_data = 0;

	if (transport_pages_decode(raw, len, &view) < 0)
		return;
	/* Everything the view points at must lie inside the payload. */
	for (uint32_t i = 0; i < view.n_pages; i++)
		if (!(view.zero_bitmap[i / 8] & (1U << (i % 8))))
			n_data++;
	if (view.data + n_data * view.page_size != raw + len ||
	    (const uint8_t *)(view.addrs + view.n_pages) != view.zero_bitmap)
		abort();
}

static void open_payload(const struct transport_frame *f, const uint8_t *wire, size_t wire_size)
{
	static struct transport_opener *opener;
	uint8_t *raw;

	if (f->wire_len > wire_size)
		return; /* a short read: the session ends before opening */
	if (!opener && transport_opener_new(&opener) < 0)
		abort();
	raw = malloc(f->raw_len > 0 ? f->raw_len : 1);
	if (!raw)
		abort();
	if (transport_open(opener, f, wire, raw) == 0 && f->type == TRANSPORT_FRAME_PAGES)
		decode_pages(raw, f->raw_len);
	free(raw);
}

static void decode_and_open(const uint8_t *hdr, const uint8_t *wire, size_t wire_size)
{
	struct transport_frame f;
	const char *reason;
	uint32_t stream;
	uint64_t seq;

	/* Expect what the header says (so later checks are reached), and a mismatch. */
	memcpy(&stream, hdr + 8, 4);
	memcpy(&seq, hdr + 12, 8);
	if (transport_frame_header_decode(hdr, stream, seq, MAX_RAW, &f, &reason) == 0)
		open_payload(&f, wire, wire_size);
	else if (!reason)
		abort();
	if (transport_frame_header_decode(hdr, stream + 1, seq, MAX_RAW, &f, &reason) == 0)
		abort();
}

/* Seals the payload bytes and opens them again: they must come back unchanged. */
static void round_trip(const uint8_t *data, size_t size, int level)
{
	static struct transport_sealer *sealer;
	static struct transport_opener *opener;
	struct transport_frame f = {.type = TRANSPORT_FRAME_DATA};
	uint8_t *wire, *back;

	if ((!sealer && transport_sealer_new(&sealer) < 0) ||
	    (!opener && transport_opener_new(&opener) < 0))
		abort();
	wire = malloc(transport_wire_bound(size));
	back = malloc(size ? size : 1);
	if (!wire || !back)
		abort();
	if (transport_seal(sealer, level, data, size, wire, &f, NULL) < 0 ||
	    transport_open(opener, &f, wire, back) < 0 || memcmp(back, data, size) != 0)
		abort();
	free(wire);
	free(back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t hdr[TRANSPORT_FRAME_HEADER_SIZE];
	uint32_t check;

	if (size < TRANSPORT_FRAME_HEADER_SIZE)
		return 0;
	memcpy(hdr, data, sizeof(hdr));
	data += sizeof(hdr);
	size -= sizeof(hdr);

	decode_and_open(hdr, data, size);
	/* Again with a correct header check, so that mutations reach the field checks and the
	 * opener instead of stopping at the XXH32. */
	check = XXH32(hdr, 44, 0);
	memcpy(hdr + 44, &check, 4);
	decode_and_open(hdr, data, size);

	/* The payload as a page batch whatever the checksums say: the fuzzer cannot forge an
	 * XXH3, and the batch decoder must stand on its own. */
	if (size <= MAX_RAW) {
		uint8_t *copy = malloc(size ? size : 1);
		if (!copy)
			abort();
		memcpy(copy, data, size);
		decode_pages(copy, size);
		free(copy);
	}

	if (size <= 65536)
		round_trip(data, size, (int)(hdr[5] % 8) - 2);
	return 0;
}
