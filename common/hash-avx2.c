/* XXH3-64 compiled for AVX2 (this file only: -mavx2); called only where the CPU has it. */
#include <stddef.h>
#include <stdint.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

uint64_t hash_xxh3_avx2(const void *p, size_t len);

uint64_t hash_xxh3_avx2(const void *p, size_t len)
{
	return XXH3_64bits(p, len);
}
