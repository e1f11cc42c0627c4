/* Typed access to jansson objects whose content comes from outside. */
#include <errno.h>

#include "common/json-util.h"

int json_get_string(json_t *obj, const char *key, const char **ret)
{
	json_t *v = json_object_get(obj, key);

	if (!v)
		return -ENOENT;
	if (!json_is_string(v))
		return -EINVAL;
	*ret = json_string_value(v);
	return 0;
}

int json_get_uint64(json_t *obj, const char *key, uint64_t *ret)
{
	json_t *v = json_object_get(obj, key);

	if (!v)
		return -ENOENT;
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -EINVAL;
	*ret = (uint64_t)json_integer_value(v);
	return 0;
}

int json_get_bool(json_t *obj, const char *key, bool *ret)
{
	json_t *v = json_object_get(obj, key);

	if (!v)
		return -ENOENT;
	if (!json_is_boolean(v))
		return -EINVAL;
	*ret = json_is_true(v);
	return 0;
}

char *json_dumps_canonical(const json_t *j)
{
	return json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
}
