/* libFuzzer target: the migrd.conf parser (text in, config or file:line errors out). */
#include <stdint.h>
#include <stdlib.h>

#include "common/common.h"
#include "migrd/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct migrd_config c;
	char *errors = NULL;

	if (migrd_config_init_defaults(&c) < 0)
		return 0;
	if (migrd_config_parse(&c, "fuzz.conf", (const char *)data, size, &errors) < 0 && !errors)
		abort(); /* every failure must say why */
	free(errors);
	migrd_config_done(&c);
	return 0;
}
