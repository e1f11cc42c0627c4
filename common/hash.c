/* XXH3-64 dispatched once to the widest build the CPU can run. */
#include <stdatomic.h>
#include <string.h>

#include <xxhash.h>

#include "common/hash.h"

#if defined(MIGRD_HASH_X86)
uint64_t hash_xxh3_avx2(const void *p, size_t len);
uint64_t hash_xxh3_avx512(const void *p, size_t len);
#endif

static uint64_t hash_lib(const void *p, size_t len)
{
	return XXH3_64bits(p, len);
}

hash_xxh3_fn hash_xxh3_variant(const char *name)
{
	if (strcmp(name, "libxxhash") == 0)
		return hash_lib;
#if defined(MIGRD_HASH_X86)
	__builtin_cpu_init();
	if (strcmp(name, "avx512") == 0 && __builtin_cpu_supports("avx512f"))
		return hash_xxh3_avx512;
	if (strcmp(name, "avx2") == 0 && __builtin_cpu_supports("avx2"))
		return hash_xxh3_avx2;
#endif
	return NULL;
}

static const char *const preference[] = {"avx512", "avx2", "libxxhash"};
static _Atomic(hash_xxh3_fn) chosen;

static hash_xxh3_fn choose(void)
{
	hash_xxh3_fn f = atomic_load_explicit(&chosen, memory_order_relaxed);

	for (size_t i = 0; !f && i < sizeof(preference) / sizeof(preference[0]); i++)
		f = hash_xxh3_variant(preference[i]);
	atomic_store_explicit(&chosen, f, memory_order_relaxed);
	return f;
}

uint64_t hash_xxh3(const void *p, size_t len)
{
	hash_xxh3_fn f = atomic_load_explicit(&chosen, memory_order_relaxed);

	return (f ? f : choose())(p, len);
}

const char *hash_xxh3_impl(void)
{
	hash_xxh3_fn f = choose();

	for (size_t i = 0; i < sizeof(preference) / sizeof(preference[0]); i++)
		if (hash_xxh3_variant(preference[i]) == f)
			return preference[i];
	return "libxxhash";
}
