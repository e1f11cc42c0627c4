/* libFuzzer entry for the health module's /proc parsers (stat, meminfo, PSI, loadavg). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "health/health.h"

/* The parsers take NUL-terminated text as read_full_file() returns it. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct health_cpu_times t;
	struct health_psi psi;
	uint64_t total, available;
	double load[3];
	char *text;

	/* /proc files stay far below this; longer inputs only slow the fuzzer down. */
	if (size > 64 * 1024)
		return 0;
	text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = 0;

	if (health_parse_stat_cpu(text, &t) == 0 && t.busy > t.total)
		abort();
	(void)health_parse_meminfo(text, &total, &available);
	if (health_parse_psi(text, &psi) == 0 &&
	    (!psi.available || !(psi.some_avg10 >= 0 && psi.some_avg10 <= 100) ||
	     !(psi.full_avg10 >= 0 && psi.full_avg10 <= 100)))
		abort();
	if (health_parse_loadavg(text, load) == 0 &&
	    !(load[0] >= 0 && load[1] >= 0 && load[2] >= 0))
		abort();

	free(text);
	return 0;
}
