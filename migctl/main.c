/* The migctl executable: process setup, then everything happens in migctl_main(). */
#include <stdio.h>
#include <stdlib.h>

#include "common/log.h"
#include "migctl/migctl.h"

int main(int argc, char **argv)
{
	const char *level = secure_getenv("MIGCTL_LOG_LEVEL");

	/* The library logs only at debug level; MIGCTL_LOG_LEVEL=debug shows the exchange. */
	log_set_ident("migctl");
	log_set_target(LOG_TARGET_CONSOLE);
	log_set_max_level(LOG_WARNING);
	if (level && log_level_from_string(level) >= 0)
		log_set_max_level(log_level_from_string(level));
	return migctl_main(argc, argv, stdout, stderr);
}
