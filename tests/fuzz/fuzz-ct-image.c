/* libFuzzer target: the image record parsers. The first byte picks the decoder (header,
 * inventory, task, mm, fds, pages index, ipc), the rest is what a file would hold. Whatever decodes
 * must encode again and decode to the same bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/ct/image-internal.h"

#define MAX_INPUT (1U << 20)

/* decode(encode(x)) must give back an x that encodes to the same bytes. */
#define ROUND_TRIP(type, encode, decode, done, value)                                         \
	do {                                                                                  \
		type again_;                                                                  \
		uint8_t *a_, *b_;                                                             \
		size_t na_, nb_;                                                              \
		if (encode(value, &a_, &na_) < 0)                                             \
			abort();                                                              \
		if (decode(a_, na_, err, sizeof(err), &again_) < 0)                           \
			abort();                                                              \
		if (encode(&again_, &b_, &nb_) < 0 || na_ != nb_ || memcmp(a_, b_, na_) != 0) \
			abort();                                                              \
		free(a_);                                                                     \
		free(b_);                                                                     \
		done(&again_);                                                                \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[CT_IMAGE_ERROR_MAX];
	uint8_t *buf;
	size_t n;

	if (size < 1 || size > MAX_INPUT)
		return 0;
	n = size - 1;
	buf = malloc(n ?: 1); /* exactly n bytes: ASan sees any read past them */
	if (!buf)
		return 0;
	memcpy(buf, data + 1, n);
	switch (data[0] % 7) {
	case 0: {
		struct ct_image_header h;

		for (int k = 0; k < _CT_IMAGE_FILE_KIND_MAX; k++)
			(void)ct_image_header_decode(buf, n, (enum ct_image_file_kind)k, err,
						     sizeof(err), &h);
		break;
	}
	case 1: {
		struct ct_image_inventory inv;

		if (ct_image_decode_inventory(buf, n, err, sizeof(err), &inv) == 0) {
			ROUND_TRIP(struct ct_image_inventory, ct_image_encode_inventory,
				   ct_image_decode_inventory, ct_image_inventory_done, &inv);
			ct_image_inventory_done(&inv);
		}
		break;
	}
	case 2: {
		struct ct_image_task t;

		if (ct_image_decode_task(buf, n, err, sizeof(err), &t) == 0) {
			ROUND_TRIP(struct ct_image_task, ct_image_encode_task, ct_image_decode_task,
				   ct_image_task_done, &t);
			ct_image_task_done(&t);
		}
		break;
	}
	case 3: {
		struct ct_image_mm mm;

		if (ct_image_decode_mm(buf, n, err, sizeof(err), &mm) == 0) {
			ROUND_TRIP(struct ct_image_mm, ct_image_encode_mm, ct_image_decode_mm,
				   ct_image_mm_done, &mm);
			ct_image_mm_done(&mm);
		}
		break;
	}
	case 4: {
		struct ct_image_fds fds;

		if (ct_image_decode_fds(buf, n, err, sizeof(err), &fds) == 0) {
			ROUND_TRIP(struct ct_image_fds, ct_image_encode_fds, ct_image_decode_fds,
				   ct_image_fds_done, &fds);
			ct_image_fds_done(&fds);
		}
		break;
	}
	case 6: {
		struct ct_image_ipc ipc;

		if (ct_image_decode_ipc(buf, n, err, sizeof(err), &ipc) == 0) {
			ROUND_TRIP(struct ct_image_ipc, ct_image_encode_ipc, ct_image_decode_ipc,
				   ct_image_ipc_done, &ipc);
			ct_image_ipc_done(&ipc);
		}
		break;
	}
	case 5: {
		struct ct_image_pages p;
		uint64_t chunks_len;

		/* 8 bytes of chunk data length, then the index. */
		if (n < 8)
			break;
		memcpy(&chunks_len, buf, 8);
		chunks_len %= UINT64_C(1) << 40;
		if (ct_image_decode_pages_index(buf + 8, n - 8, chunks_len, err, sizeof(err), &p) ==
		    0) {
			/* Whatever it accepts lies inside the chunk data it was told about. */
			for (size_t i = 0; i < p.n_chunks; i++)
				if (p.chunks[i].offset + p.chunks[i].size > chunks_len)
					abort();
			ct_image_pages_done(&p);
		}
		break;
	}
	}
	free(buf);
	return 0;
}
