/* libFuzzer target: the control socket's request-line parser. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "migrd/control.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct control_parsed p;
	const char *code = NULL;
	char msg[256];

	if (control_parse_request((const char *)data, size, &p, &code, msg, sizeof(msg)) < 0) {
		if (!code || strlen(msg) == 0)
			abort();
	} else if (!p.method || !json_is_object(p.params)) {
		abort();
	}
	control_parsed_done(&p);
	return 0;
}
