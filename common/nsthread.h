/* Work inside another namespace of the same kind as those setns() joins (IPC, network, UTS,
 * ...). Namespaces belong to each task: a thread that joins one moves alone, and the rest of
 * the process stays where it was. So the work runs on a thread of its own, which joins the
 * namespace first and ends with the work:
 *
 *	static int count_links(void *arg) { ... runs in the namespace; 0 or -errno ... }
 *
 *	bool joined;
 *	int r = ns_run(ns_fd, CLONE_NEWNET, count_links, &q, &joined);
 *	if (r < 0 && !joined)
 *		... the namespace could not be joined (or no thread started) ...
 *
 * or, to let the work run while the caller goes on, ns_thread_start() and later
 * ns_thread_wait(). A time or mount namespace, which setns() joins only in a process of one
 * thread, cannot be entered this way. */
#pragma once

#include <pthread.h>
#include <stdbool.h>

struct ns_thread {
	pthread_t thread;
	int ns_fd, nstype;
	int (*fn)(void *arg);
	void *arg;
	int r;	     /* -errno from pthread_create() or setns(), or what fn returned */
	bool joined; /* the namespace was joined: r is fn's */
	bool started;
};

/* Starts fn(arg) on a new thread that first joins the namespace open at ns_fd (nstype as
 * setns() takes it: CLONE_NEWIPC, ...). ns_fd must stay open until ns_thread_wait(). 0 or
 * -errno (no thread: then ns_thread_wait() returns the same). */
int ns_thread_start(struct ns_thread *t, int ns_fd, int nstype, int (*fn)(void *arg), void *arg);

/* Waits for the thread started by ns_thread_start(); returns t->r. */
int ns_thread_wait(struct ns_thread *t);

/* Both at once. ret_joined (may be NULL): whether the namespace was joined, i.e. whether a
 * return < 0 is fn's. */
int ns_run(int ns_fd, int nstype, int (*fn)(void *arg), void *arg, bool *ret_joined);
