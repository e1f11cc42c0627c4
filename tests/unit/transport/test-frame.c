/* Unit tests of the frame header: its wire layout, round trips, and that every corruption or
 * protocol violation is rejected with a reason. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <xxhash.h>
#include <zstd.h>

#include "transport/frame-internal.h"

#define HS TRANSPORT_FRAME_HEADER_SIZE

static const struct transport_frame sample = {
	.type = TRANSPORT_FRAME_DATA,
	.flags = TRANSPORT_FRAME_COMPRESSED,
	.stream = 3,
	.seq = 0x0102030405060708ULL,
	.raw_len = 1 << 20,
	.wire_len = 12345,
	.checksum = 0xdeadbeefcafef00dULL,
};

static int decode(const uint8_t *h, const struct transport_frame *expect, struct transport_frame *f,
		  const char **reason)
{
	return transport_frame_header_decode(h, expect->stream, expect->seq,
					     TRANSPORT_FRAME_MAX_RAW, f, reason);
}

/* Rewrites the header check after a test changed a field on purpose. */
static void reseal(uint8_t h[HS])
{
	uint32_t c = XXH32(h, 44, 0);
	for (unsigned i = 0; i < 4; i++)
		h[44 + i] = (uint8_t)(c >> (8 * i));
}

static void test_layout(void **state)
{
	uint8_t h[HS];

	transport_frame_header_encode(&sample, h);
	/* "MGRF", version 1, type, flags, stream, seq, lengths, checksum, all little-endian. */
	assert_memory_equal(h, "MGRF\x01\x01\x01\x00\x03\x00\x00\x00", 12);
	assert_memory_equal(h + 12, "\x08\x07\x06\x05\x04\x03\x02\x01", 8);
	assert_memory_equal(h + 20, "\x00\x00\x10\x00\x39\x30\x00\x00", 8);
	assert_memory_equal(h + 28, "\x0d\xf0\xfe\xca\xef\xbe\xad\xde", 8);
	assert_memory_equal(h + 36, "\0\0\0\0\0\0\0\0", 8);
	uint32_t check = XXH32(h, 44, 0);
	assert_memory_equal(h + 44, &check, 4); /* little-endian host */
}

static void test_round_trip(void **state)
{
	for (uint8_t type = TRANSPORT_FRAME_DATA; type < _TRANSPORT_FRAME_TYPE_MAX; type++) {
		struct transport_frame in[] = {
			{.type = type, .stream = 0, .seq = 0, .raw_len = 0, .wire_len = 0},
			{.type = type,
			 .flags = TRANSPORT_FRAME_ZERO,
			 .stream = UINT32_MAX,
			 .seq = UINT64_MAX,
			 .raw_len = TRANSPORT_FRAME_MAX_RAW,
			 .checksum = UINT64_MAX},
			{.type = type, .stream = 7, .seq = 42, .raw_len = 4096, .wire_len = 4096},
			{.type = type,
			 .flags = TRANSPORT_FRAME_COMPRESSED,
			 .stream = 1,
			 .seq = 1,
			 .raw_len = TRANSPORT_FRAME_MAX_RAW,
			 .wire_len = (uint32_t)ZSTD_compressBound(TRANSPORT_FRAME_MAX_RAW),
			 .checksum = 1},
		};
		for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
			uint8_t h[HS];
			struct transport_frame out;
			const char *reason = "unset";

			transport_frame_header_encode(&in[i], h);
			assert_int_equal(decode(h, &in[i], &out, &reason), 0);
			assert_null(reason);
			/* Field by field: the structs' padding is unspecified. */
			assert_int_equal(out.type, in[i].type);
			assert_int_equal(out.flags, in[i].flags);
			assert_int_equal(out.stream, in[i].stream);
			assert_int_equal(out.seq, in[i].seq);
			assert_int_equal(out.raw_len, in[i].raw_len);
			assert_int_equal(out.wire_len, in[i].wire_len);
			assert_int_equal(out.checksum, in[i].checksum);
		}
	}
}

/* Any change of any byte, to any other value, is rejected: the magic and version by their own
 * check, everything else by the header check. */
static void test_every_byte_flip(void **state)
{
	uint8_t good[HS], h[HS];
	struct transport_frame out = {.type = 99};

	transport_frame_header_encode(&sample, good);
	for (unsigned i = 0; i < HS; i++) {
		for (unsigned v = 0; v < 256; v++) {
			const char *reason = NULL;

			if (v == good[i])
				continue;
			memcpy(h, good, HS);
			h[i] = (uint8_t)v;
			assert_int_equal(decode(h, &sample, &out, &reason), -EBADMSG);
			assert_non_null(reason);
			if (i < 4)
				assert_string_equal(reason, "bad magic");
			else if (i == 4)
				assert_string_equal(reason, "unsupported frame version");
			else
				assert_string_equal(reason, "header checksum mismatch");
		}
	}
	assert_int_equal(out.type, 99); /* untouched on failure */
}

struct bad_case {
	const char *what;
	struct transport_frame f;
	const char *reason;
};

/* Headers with a valid check whose fields break the protocol. */
static void test_bad_fields(void **state)
{
	const struct bad_case cases[] = {
		{"type 0", {.type = 0}, "unknown frame type"},
		{"type past the end", {.type = _TRANSPORT_FRAME_TYPE_MAX}, "unknown frame type"},
		{"unknown flag", {.type = 1, .flags = 1 << 4}, "unknown frame flags"},
		{"streamed, not compressed",
		 {.type = 1, .flags = TRANSPORT_FRAME_STREAMED, .raw_len = 4096, .wire_len = 4096},
		 "streamed frame not compressed"},
		{"stream start, not streamed",
		 {.type = 1,
		  .flags = TRANSPORT_FRAME_COMPRESSED | TRANSPORT_FRAME_STREAM_START,
		  .raw_len = 4096,
		  .wire_len = 100},
		 "stream start on a frame not streamed"},
		{"streamed and zero",
		 {.type = 1,
		  .flags = TRANSPORT_FRAME_ZERO | TRANSPORT_FRAME_STREAMED,
		  .raw_len = 4096},
		 "streamed frame not compressed"},
		{"high flag", {.type = 1, .flags = 0x8000}, "unknown frame flags"},
		{"compressed and zero",
		 {.type = 1, .flags = TRANSPORT_FRAME_COMPRESSED | TRANSPORT_FRAME_ZERO},
		 "frame both compressed and zero"},
		{"raw too large",
		 {.type = 1,
		  .raw_len = TRANSPORT_FRAME_MAX_RAW + 1,
		  .wire_len = TRANSPORT_FRAME_MAX_RAW + 1},
		 "raw length too large"},
		{"raw huge",
		 {.type = 1, .flags = TRANSPORT_FRAME_ZERO, .raw_len = UINT32_MAX},
		 "raw length too large"},
		{"zero frame with payload",
		 {.type = 1, .flags = TRANSPORT_FRAME_ZERO, .raw_len = 4096, .wire_len = 1},
		 "zero frame with a payload"},
		{"compressed, empty",
		 {.type = 1, .flags = TRANSPORT_FRAME_COMPRESSED, .raw_len = 4096},
		 "compressed length out of bounds"},
		{"compressed past the bound",
		 {.type = 1,
		  .flags = TRANSPORT_FRAME_COMPRESSED,
		  .raw_len = 4096,
		  .wire_len = (uint32_t)ZSTD_compressBound(4096) + 1},
		 "compressed length out of bounds"},
		{"compressed, wire huge",
		 {.type = 1,
		  .flags = TRANSPORT_FRAME_COMPRESSED,
		  .raw_len = 1,
		  .wire_len = UINT32_MAX},
		 "compressed length out of bounds"},
		{"raw, wire longer",
		 {.type = 1, .raw_len = 4096, .wire_len = 4097},
		 "wire length differs from raw length"},
		{"raw, wire shorter",
		 {.type = 1, .raw_len = 4096, .wire_len = 4095},
		 "wire length differs from raw length"},
		{"raw, wire huge",
		 {.type = 1, .raw_len = 0, .wire_len = UINT32_MAX},
		 "wire length differs from raw length"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint8_t h[HS];
		struct transport_frame out;
		const char *reason = NULL;

		transport_frame_header_encode(&cases[i].f, h);
		if (decode(h, &cases[i].f, &out, &reason) != -EBADMSG)
			fail_msg("%s: accepted", cases[i].what);
		if (!reason || strcmp(reason, cases[i].reason) != 0)
			fail_msg("%s: reason '%s', expected '%s'", cases[i].what, reason,
				 cases[i].reason);
	}
}

static void test_reserved(void **state)
{
	uint8_t h[HS];
	struct transport_frame out;
	const char *reason;

	for (unsigned i = 36; i < 44; i++) {
		transport_frame_header_encode(&sample, h);
		h[i] = 0x01;
		reseal(h);
		assert_int_equal(decode(h, &sample, &out, &reason), -EBADMSG);
		assert_string_equal(reason, "reserved field not zero");
	}
	/* A later version is refused, not misread. */
	transport_frame_header_encode(&sample, h);
	h[4] = 2;
	reseal(h);
	assert_int_equal(decode(h, &sample, &out, &reason), -EBADMSG);
	assert_string_equal(reason, "unsupported frame version");
}

static void test_stream_and_seq(void **state)
{
	uint8_t h[HS];
	struct transport_frame f = {.type = TRANSPORT_FRAME_DATA, .stream = 2, .seq = 7};
	struct transport_frame out;
	const char *reason;

	transport_frame_header_encode(&f, h);
	assert_int_equal(transport_frame_header_decode(h, 2, 5, 4096, &out, &reason), -EBADMSG);
	assert_string_equal(reason, "sequence gap: expected 5, got 7");
	assert_int_equal(transport_frame_header_decode(h, 2, 8, 4096, &out, &reason), -EBADMSG);
	assert_string_equal(reason, "sequence gap: expected 8, got 7");
	assert_int_equal(transport_frame_header_decode(h, 1, 7, 4096, &out, &reason), -EBADMSG);
	assert_string_equal(reason, "wrong stream: expected 1, got 2");
	assert_int_equal(transport_frame_header_decode(h, 2, 7, 4096, &out, &reason), 0);
	/* The reason pointer is optional. */
	assert_int_equal(transport_frame_header_decode(h, 2, 6, 4096, &out, NULL), -EBADMSG);
}

static void test_max_raw(void **state)
{
	uint8_t h[HS];
	struct transport_frame f = {.type = 1, .raw_len = 65536, .wire_len = 65536};
	struct transport_frame out;
	const char *reason;

	transport_frame_header_encode(&f, h);
	assert_int_equal(transport_frame_header_decode(h, 0, 0, 65536, &out, &reason), 0);
	assert_int_equal(transport_frame_header_decode(h, 0, 0, 65535, &out, &reason), -EBADMSG);
	assert_string_equal(reason, "raw length too large");

	/* A caller's larger limit does not lift the protocol's. */
	f.raw_len = f.wire_len = TRANSPORT_FRAME_MAX_RAW + 1;
	transport_frame_header_encode(&f, h);
	assert_int_equal(transport_frame_header_decode(h, 0, 0, SIZE_MAX, &out, &reason), -EBADMSG);
	assert_string_equal(reason, "raw length too large");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_layout),		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_every_byte_flip), cmocka_unit_test(test_bad_fields),
		cmocka_unit_test(test_reserved),	cmocka_unit_test(test_stream_and_seq),
		cmocka_unit_test(test_max_raw),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
