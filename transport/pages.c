/* Page batches, the payload of TRANSPORT_FRAME_PAGES: encoding, and the layout checks a
 * received batch must pass before anyone touches a page.
 *
 * Layout (little-endian): u32 n_pages, u32 page_size, u64 addrs[n_pages], the zero bitmap
 * ((n_pages + 7) / 8 bytes, bit i of byte i / 8 set = page i is all zeros, unused high bits of
 * the last byte zero), then page_size bytes for each page that is not zero, in order. */
#include <endian.h>
#include <string.h>

#include "common/macro.h"
#include "common/util.h"
#include "transport/compress-internal.h"

/* The view hands out addrs pointing into the payload as host integers. */
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "transport_pages_view.addrs points at little-endian data: port the view first"
#endif

#define PAGES_HEADER	8
#define PAGE_SIZE_MIN	4096U
#define PAGE_SIZE_MAX	(2U << 20)
#define BITMAP_BYTES(n) (((size_t)(n) + 7) / 8)

static bool page_size_valid(uint32_t page_size)
{
	return page_size >= PAGE_SIZE_MIN && page_size <= PAGE_SIZE_MAX &&
	       (page_size & (page_size - 1)) == 0;
}

size_t transport_pages_bound(uint32_t n_pages, uint32_t page_size)
{
	size_t data, total;

	if (__builtin_mul_overflow((size_t)n_pages, (size_t)page_size, &data) ||
	    __builtin_add_overflow(data, PAGES_HEADER + 8 * (size_t)n_pages + BITMAP_BYTES(n_pages),
				   &total))
		return SIZE_MAX;
	return total;
}

size_t transport_pages_encode(const uint64_t *addrs, const void *const *pages, uint32_t n_pages,
			      uint32_t page_size, void *out)
{
	uint8_t *o = out, *bitmap, *data;
	uint32_t v;

	v = htole32(n_pages);
	memcpy(o, &v, 4);
	v = htole32(page_size);
	memcpy(o + 4, &v, 4);
	for (uint32_t i = 0; i < n_pages; i++) {
		uint64_t a = htole64(addrs[i]);
		memcpy(o + PAGES_HEADER + 8 * (size_t)i, &a, 8);
	}
	bitmap = o + PAGES_HEADER + 8 * (size_t)n_pages;
	memset(bitmap, 0, BITMAP_BYTES(n_pages));
	data = bitmap + BITMAP_BYTES(n_pages);
	for (uint32_t i = 0; i < n_pages; i++) {
		if (memeqzero(pages[i], page_size)) {
			bitmap[i / 8] |= (uint8_t)(1U << (i % 8));
			continue;
		}
		memcpy(data, pages[i], page_size);
		data += page_size;
	}
	return (size_t)(data - o);
}

int transport_pages_decode(const void *payload, size_t len, struct transport_pages_view *ret)
{
	const uint8_t *p = payload, *bitmap;
	uint32_t n_pages, page_size;
	size_t fixed, n_data = 0, data_len;

	/* addrs points into the payload: it must be aligned for u64 (malloc'ed buffers are). */
	if (((uintptr_t)payload & (_Alignof(uint64_t) - 1)) != 0)
		return -EINVAL;
	if (len < PAGES_HEADER)
		return -EBADMSG;
	memcpy(&n_pages, p, 4);
	memcpy(&page_size, p + 4, 4);
	n_pages = le32toh(n_pages);
	page_size = le32toh(page_size);
	if (!page_size_valid(page_size))
		return -EBADMSG;
	/* Addresses and bitmap must fit before any count is multiplied by the page size. */
	if (n_pages > (len - PAGES_HEADER) / 8)
		return -EBADMSG;
	fixed = PAGES_HEADER + 8 * (size_t)n_pages + BITMAP_BYTES(n_pages);
	if (fixed > len)
		return -EBADMSG;

	for (uint32_t i = 0; i < n_pages; i++) {
		uint64_t a;
		memcpy(&a, p + PAGES_HEADER + 8 * (size_t)i, 8);
		if ((le64toh(a) & (page_size - 1)) != 0)
			return -EBADMSG; /* not a page address */
	}

	bitmap = p + PAGES_HEADER + 8 * (size_t)n_pages;
	for (uint32_t i = 0; i < n_pages; i++)
		if (!(bitmap[i / 8] & (1U << (i % 8))))
			n_data++;
	if (n_pages % 8 != 0 && (bitmap[n_pages / 8] >> (n_pages % 8)) != 0)
		return -EBADMSG; /* bits for pages that do not exist */

	if (__builtin_mul_overflow(n_data, (size_t)page_size, &data_len) || data_len != len - fixed)
		return -EBADMSG;

	*ret = (struct transport_pages_view){
		.n_pages = n_pages,
		.page_size = page_size,
		.addrs = (const uint64_t *)(p + PAGES_HEADER),
		.zero_bitmap = bitmap,
		.data = p + fixed,
	};
	return 0;
}
