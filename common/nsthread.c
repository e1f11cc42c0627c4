/* Work inside another namespace, on a thread of its own (see nsthread.h). */
#include <errno.h>
#include <sched.h>

#include "common/nsthread.h"

static void *ns_thread_main(void *arg)
{
	struct ns_thread *t = arg;

	if (setns(t->ns_fd, t->nstype) < 0) {
		t->r = -errno;
		return NULL;
	}
	t->joined = true;
	t->r = t->fn(t->arg);
	return NULL;
}

int ns_thread_start(struct ns_thread *t, int ns_fd, int nstype, int (*fn)(void *arg), void *arg)
{
	int r;

	*t = (struct ns_thread){.ns_fd = ns_fd, .nstype = nstype, .fn = fn, .arg = arg};
	r = pthread_create(&t->thread, NULL, ns_thread_main, t);
	if (r != 0) {
		t->r = -r;
		return t->r;
	}
	t->started = true;
	return 0;
}

int ns_thread_wait(struct ns_thread *t)
{
	if (t->started) {
		pthread_join(t->thread, NULL);
		t->started = false;
	}
	return t->r;
}

int ns_run(int ns_fd, int nstype, int (*fn)(void *arg), void *arg, bool *ret_joined)
{
	struct ns_thread t;
	int r;

	(void)ns_thread_start(&t, ns_fd, nstype, fn, arg);
	r = ns_thread_wait(&t);
	if (ret_joined)
		*ret_joined = t.joined;
	return r;
}
