/* XXH3-64 on the widest vector unit the CPU has. Debian's libxxhash is built for the x86-64
 * baseline (SSE2): 12-13 GB/s on a cached MiB here, against 30 GB/s with AVX2 and ~50 with
 * AVX-512. The results are XXH3_64bits()'s, bit for bit; only the speed differs. Used where
 * every byte of memory, an image or a stream is checksummed. */
#pragma once

#include <stddef.h>
#include <stdint.h>

uint64_t hash_xxh3(const void *p, size_t len);

/* Which implementation hash_xxh3() uses: "avx512", "avx2" or "libxxhash". */
const char *hash_xxh3_impl(void);

/* The variants themselves (for the tests); NULL where not built or the CPU lacks them. */
typedef uint64_t (*hash_xxh3_fn)(const void *p, size_t len);
hash_xxh3_fn hash_xxh3_variant(const char *name);
