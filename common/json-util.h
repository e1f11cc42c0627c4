/* jansson helpers: cleanup and typed, bounded field access for untrusted documents. */
#pragma once

#include <jansson.h>
#include <stdint.h>

#include "common/cleanup.h"

/* jansson ships json_decrefp() (NULL-safe) for exactly this. */
#define _cleanup_json_ _cleanup_(json_decrefp)

/* Each returns -ENOENT when the key is absent (ret untouched), -EINVAL on a wrong type. */
int json_get_string(json_t *obj, const char *key, const char **ret);
int json_get_uint64(json_t *obj, const char *key, uint64_t *ret);
int json_get_bool(json_t *obj, const char *key, bool *ret);
/* Serializes compactly with sorted keys (canonical: equal values give equal bytes). */
char *json_dumps_canonical(const json_t *j);
