/* libvirt domain events in a thread of their own, handed to the caller's loop via an eventfd. */
#include <errno.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "checkpoint/vm/vm-internal.h"
#include "common/common.h"

#define QUEUE_MAX 4096 /* names waiting; beyond, events are dropped (the poll catches up) */

struct vm_events {
	char *uri;
	int efd;
	pthread_t thread;
	atomic_bool stop;
	int wake_timer; /* a libvirt timeout that makes the loop look at stop */
	pthread_mutex_t lock;
	char **queue;
	size_t n;
};

static pthread_once_t impl_once = PTHREAD_ONCE_INIT;

static void register_impl(void)
{
	/* Before any connection: libvirt then runs keepalives and events through it. */
	if (virEventRegisterDefaultImpl() < 0)
		log_debug("virEventRegisterDefaultImpl failed");
}

static int on_lifecycle(virConnectPtr conn, virDomainPtr dom, int event, int detail, void *opaque)
{
	struct vm_events *e = opaque;
	const char *name = virDomainGetName(dom);
	uint64_t one = 1;

	if (!name)
		return 0;
	pthread_mutex_lock(&e->lock);
	if (e->n < QUEUE_MAX) {
		char **q = reallocarray(e->queue, e->n + 1, sizeof(*q));

		if (q) {
			e->queue = q;
			if ((q[e->n] = strdup(name)))
				e->n++;
		}
	}
	pthread_mutex_unlock(&e->lock);
	(void)!write(e->efd, &one, sizeof(one));
	return 0;
}

static void on_tick(int timer, void *opaque)
{
	/* Nothing: waking the loop is enough for it to see stop. */
}

static void *events_thread(void *arg)
{
	struct vm_events *e = arg;
	virConnectPtr c = NULL;
	int cb = -1;

	while (!atomic_load(&e->stop)) {
		if (!c || virConnectIsAlive(c) != 1) {
			if (c) {
				if (cb >= 0)
					(void)virConnectDomainEventDeregisterAny(c, cb);
				virConnectClose(c);
				c = NULL;
				cb = -1;
			}
			c = virConnectOpen(e->uri);
			if (c) {
				cb = virConnectDomainEventRegisterAny(
					c, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
					VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle), e, NULL);
				/* Anything may have changed while we were away: a wakeup
				 * without names asks for a look at every domain. */
				uint64_t one = 1;

				(void)!write(e->efd, &one, sizeof(one));
			}
		}
		if (virEventRunDefaultImpl() < 0)
			usleep(100000);
		if (!c)
			usleep(2 * 1000000);
	}
	if (c) {
		if (cb >= 0)
			(void)virConnectDomainEventDeregisterAny(c, cb);
		virConnectClose(c);
	}
	return NULL;
}

int vm_events_start(const char *uri, struct vm_events **ret)
{
	struct vm_events *e = calloc(1, sizeof(*e));

	if (!e)
		return -ENOMEM;
	pthread_once(&impl_once, register_impl);
	e->uri = strdup(uri);
	e->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	pthread_mutex_init(&e->lock, NULL);
	if (!e->uri || e->efd < 0) {
		vm_events_stop(e);
		return -ENOMEM;
	}
	/* A 1 s tick bounds how long stop waits for the loop. */
	e->wake_timer = virEventAddTimeout(1000, on_tick, NULL, NULL);
	if (pthread_create(&e->thread, NULL, events_thread, e) != 0) {
		e->thread = 0;
		vm_events_stop(e);
		return -EAGAIN;
	}
	*ret = e;
	return 0;
}

struct vm_events *vm_events_stop(struct vm_events *e)
{
	if (!e)
		return NULL;
	atomic_store(&e->stop, true);
	if (e->thread)
		pthread_join(e->thread, NULL);
	if (e->wake_timer >= 0 && e->thread)
		(void)virEventRemoveTimeout(e->wake_timer);
	for (size_t i = 0; i < e->n; i++)
		free(e->queue[i]);
	free(e->queue);
	safe_close(e->efd);
	pthread_mutex_destroy(&e->lock);
	free(e->uri);
	free(e);
	return NULL;
}

int vm_events_fd(const struct vm_events *e)
{
	return e->efd;
}

char *vm_events_next(struct vm_events *e)
{
	uint64_t v;
	char *name = NULL;

	pthread_mutex_lock(&e->lock);
	if (e->n > 0) {
		name = e->queue[0];
		memmove(e->queue, e->queue + 1, (e->n - 1) * sizeof(*e->queue));
		e->n--;
	}
	if (e->n == 0)
		(void)!read(e->efd, &v, sizeof(v));
	pthread_mutex_unlock(&e->lock);
	return name;
}
