/* The SIGBUS guard (common/sigbus.h). The handler runs with SA_NODEFER, so that leaving it by
 * siglongjmp (to a sigsetjmp that did not save the mask, which costs a syscall) leaves SIGBUS
 * unblocked. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>

#include "common/sigbus.h"

static _Thread_local struct sigbus_guard *guard;
static struct sigaction old_action;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int install_error;

static void handler(int sig, siginfo_t *si, void *ctx)
{
	struct sigbus_guard *g = guard;

	if (g && si->si_code > 0 && (uintptr_t)si->si_addr - (uintptr_t)g->start < g->len) {
		guard = NULL;
		siglongjmp(g->env, 1);
	}
	/* Not a guarded read: what would have happened without us. */
	if ((old_action.sa_flags & SA_SIGINFO) && old_action.sa_sigaction) {
		old_action.sa_sigaction(sig, si, ctx);
		return;
	}
	if (old_action.sa_handler != SIG_DFL && old_action.sa_handler != SIG_IGN) {
		old_action.sa_handler(sig);
		return;
	}
	/* The default: the process ends (SA_NODEFER: at once, with SIGBUS). */
	signal(SIGBUS, SIG_DFL);
	raise(SIGBUS);
}

static void install(void)
{
	struct sigaction sa = {.sa_sigaction = handler, .sa_flags = SA_SIGINFO | SA_NODEFER};

	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, &old_action) < 0)
		install_error = -errno;
}

int sigbus_guard_install(void)
{
	pthread_once(&once, install);
	return install_error;
}

int sigbus_guard_enter(struct sigbus_guard *g, const void *start, size_t len)
{
	int r = sigbus_guard_install();

	if (r < 0)
		return r;
	g->start = start;
	g->len = len;
	guard = g;
	return 0;
}

void sigbus_guard_leave(struct sigbus_guard *g)
{
	if (guard == g)
		guard = NULL;
}
