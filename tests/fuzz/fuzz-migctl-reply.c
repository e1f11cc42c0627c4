/* libFuzzer target: migctl's reply parser and its printers, on whatever a daemon might send. */
#include <stdint.h>
#include <stdio.h>

#include "migctl/migctl-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static FILE *null;
	json_t *reply = NULL;

	if (!null)
		null = fopen("/dev/null", "w");
	if (migctl_reply_parse((const char *)data, size, 1, &reply) >= 0 && reply) {
		json_t *ok = json_object_get(reply, "ok");
		if (ok) {
			(void)hosts_print(null, ok);
			(void)status_print(null, ok);
			(void)list_print(null, ok);
		}
	}
	json_decref(reply);
	return 0;
}
