/* Reading a file through a mapping that may be cut short. A file truncated under a mapping
 * makes a read past its new end raise SIGBUS, which kills the process. Code that reads such a
 * mapping guards the range; a SIGBUS there, on the guarding thread, jumps back to the guard,
 * which then reports it:
 *
 *	struct sigbus_guard g;
 *
 *	if (sigbus_guard_enter(&g, map, len) < 0)
 *		... read it some other way ...
 *	if (sigsetjmp(g.env, 0) != 0)
 *		return -EFAULT;	   (a SIGBUS in the range: the file was cut short; g is left)
 *	... read map ...
 *	sigbus_guard_leave(&g);
 *
 * (sigsetjmp must stay where it is written here: as the whole condition of an if.)
 * Variables changed between the guard and the fault must be volatile to be read after it.
 * One guard per thread at a time. A SIGBUS anywhere else goes to the handler there was before
 * (the default: the process dies). */
#pragma once

#include <setjmp.h>
#include <stddef.h>

struct sigbus_guard {
	sigjmp_buf env;
	const void *start;
	size_t len;
};

/* Installs the handler once per process; 0 or -errno. */
int sigbus_guard_install(void);
/* 0, or -errno when the handler cannot be installed (then nothing is guarded). */
int sigbus_guard_enter(struct sigbus_guard *g, const void *start, size_t len);
void sigbus_guard_leave(struct sigbus_guard *g);
