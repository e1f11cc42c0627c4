/* The fake device's rdma_cm: event channels (pipes), ids, listen/connect/accept/reject and
 * disconnect with IB's semantics (see fake-verbs.c). */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fake-rdma.h"

static struct fake_id *listeners;
static uint16_t next_port = 40000;

/* ---- rdma_cm ------------------------------------------------------------------------------ */

/* Queues an event (with a copy of private data padded to pad bytes); called locked. */
static void queue_event(struct rdma_event_channel *ch, struct rdma_cm_id *id,
			struct rdma_cm_id *listen_id, enum rdma_cm_event_type type, int status,
			const void *pdata, size_t len, size_t pad)
{
	struct fake_channel *c = (struct fake_channel *)ch;
	struct fake_event *e = calloc(1, sizeof(*e));

	if (!e)
		abort();
	e->ev = (struct rdma_cm_event){
		.id = id, .listen_id = listen_id, .event = type, .status = status};
	if (pdata) {
		memcpy(e->pdata, pdata, len);
		e->ev.param.conn.private_data = e->pdata;
		e->ev.param.conn.private_data_len = (uint8_t)(len > pad ? len : pad);
	}
	if (c->tail)
		c->tail->next = e;
	else
		c->head = e;
	c->tail = e;
	LIVE(1);
	(void)!write(c->wfd, "e", 1);
}

struct rdma_event_channel *rdma_create_event_channel(void)
{
	struct fake_channel *c;
	int fds[2];

	if (fake_device_mode == FAKE_DEVICES_NONE_LOADED || fake_device_mode == FAKE_DEVICES_ZERO) {
		errno = ENODEV;
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c || pipe2(fds, O_CLOEXEC) < 0) {
		free(c);
		return NULL;
	}
	c->ch.fd = fds[0];
	c->wfd = fds[1];
	LIVE(1);
	return &c->ch;
}

void rdma_destroy_event_channel(struct rdma_event_channel *ch)
{
	struct fake_channel *c = (struct fake_channel *)ch;

	pthread_mutex_lock(&fake_lock);
	while (c->head) {
		struct fake_event *e = c->head;
		c->head = e->next;
		/* A request nobody took: its id goes too, as the kernel's does. */
		if (e->ev.event == RDMA_CM_EVENT_CONNECT_REQUEST) {
			struct fake_id *child = (struct fake_id *)e->ev.id;
			if (child->peer)
				child->peer->peer = NULL;
			free(child);
			LIVE(-1);
		}
		free(e);
		LIVE(-1);
	}
	LIVE(-1);
	pthread_mutex_unlock(&fake_lock);
	close(c->ch.fd);
	close(c->wfd);
	free(c);
}

int rdma_get_cm_event(struct rdma_event_channel *ch, struct rdma_cm_event **ret)
{
	struct fake_channel *c = (struct fake_channel *)ch;
	struct fake_event *e;
	char b;

	if (read(c->ch.fd, &b, 1) != 1)
		return -1; /* EAGAIN on a non-blocking channel */
	pthread_mutex_lock(&fake_lock);
	e = c->head;
	c->head = e->next;
	if (!c->head)
		c->tail = NULL;
	pthread_mutex_unlock(&fake_lock);
	*ret = &e->ev;
	return 0;
}

int rdma_ack_cm_event(struct rdma_cm_event *ev)
{
	pthread_mutex_lock(&fake_lock);
	LIVE(-1);
	pthread_mutex_unlock(&fake_lock);
	free(ev); /* the event is the first member of struct fake_event */
	return 0;
}

const char *rdma_event_str(enum rdma_cm_event_type type)
{
	return "event";
}

int rdma_create_id(struct rdma_event_channel *ch, struct rdma_cm_id **ret, void *ctx,
		   enum rdma_port_space ps)
{
	struct fake_id *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	f->id.channel = ch;
	f->id.context = ctx;
	f->id.ps = ps;
	f->id.qp_type = IBV_QPT_RC;
	LIVE(1);
	*ret = &f->id;
	return 0;
}

static uint16_t port_of(const struct sockaddr *sa)
{
	return ntohs(((const struct sockaddr_in *)sa)->sin_port);
}

int rdma_bind_addr(struct rdma_cm_id *id, struct sockaddr *addr)
{
	struct fake_id *f = (struct fake_id *)id;
	struct sockaddr_in *sin = &id->route.addr.src_sin;

	if (addr->sa_family != AF_INET) {
		errno = EAFNOSUPPORT;
		return -1;
	}
	pthread_mutex_lock(&fake_lock);
	for (struct fake_id *l = listeners; l; l = l->next_listener)
		if (port_of(addr) && port_of(&l->id.route.addr.src_addr) == port_of(addr)) {
			pthread_mutex_unlock(&fake_lock);
			errno = EADDRINUSE;
			return -1;
		}
	memcpy(sin, addr, sizeof(*sin));
	if (!sin->sin_port)
		sin->sin_port = htons(next_port++);
	f->id.verbs = &fake_context;
	f->next_listener = listeners;
	listeners = f;
	pthread_mutex_unlock(&fake_lock);
	return 0;
}

int rdma_listen(struct rdma_cm_id *id, int backlog)
{
	((struct fake_id *)id)->listening = true;
	return 0;
}

int rdma_resolve_addr(struct rdma_cm_id *id, struct sockaddr *src, struct sockaddr *dst,
		      int timeout_ms)
{
	struct fake_id *f = (struct fake_id *)id;

	if (dst->sa_family != AF_INET) {
		errno = EAFNOSUPPORT;
		return -1;
	}
	pthread_mutex_lock(&fake_lock);
	memcpy(&id->route.addr.dst_sin, dst, sizeof(struct sockaddr_in));
	/* 192.0.2.0/24 (TEST-NET-1) has no route here. */
	f->unreachable = (ntohl(((struct sockaddr_in *)dst)->sin_addr.s_addr) >> 8) == 0xc00002;
	id->verbs = &fake_context;
	queue_event(id->channel, id, NULL,
		    f->unreachable ? RDMA_CM_EVENT_ADDR_ERROR : RDMA_CM_EVENT_ADDR_RESOLVED,
		    f->unreachable ? -EHOSTUNREACH : 0, NULL, 0, 0);
	pthread_mutex_unlock(&fake_lock);
	return 0;
}

int rdma_resolve_route(struct rdma_cm_id *id, int timeout_ms)
{
	pthread_mutex_lock(&fake_lock);
	queue_event(id->channel, id, NULL, RDMA_CM_EVENT_ROUTE_RESOLVED, 0, NULL, 0, 0);
	pthread_mutex_unlock(&fake_lock);
	return 0;
}

int rdma_connect(struct rdma_cm_id *id, struct rdma_conn_param *param)
{
	struct fake_id *f = (struct fake_id *)id, *l, *child;

	if (!id->qp) {
		errno = EINVAL;
		return -1;
	}
	pthread_mutex_lock(&fake_lock);
	for (l = listeners; l; l = l->next_listener)
		if (l->listening &&
		    port_of(&l->id.route.addr.src_addr) == port_of(&id->route.addr.dst_addr))
			break;
	if (!l) {
		/* IB: "invalid service ID" from the remote CM. */
		queue_event(id->channel, id, NULL, RDMA_CM_EVENT_REJECTED, 8, NULL, 0, 0);
		pthread_mutex_unlock(&fake_lock);
		return 0;
	}
	child = calloc(1, sizeof(*child));
	if (!child)
		abort();
	child->id.channel = l->id.channel;
	child->id.context = l->id.context;
	child->id.verbs = &fake_context;
	child->id.ps = id->ps;
	child->id.qp_type = IBV_QPT_RC;
	child->peer = f;
	f->peer = child;
	LIVE(1);
	queue_event(l->id.channel, &child->id, &l->id, RDMA_CM_EVENT_CONNECT_REQUEST, 0,
		    param->private_data, param->private_data_len, CONNECT_PDATA);
	pthread_mutex_unlock(&fake_lock);
	return 0;
}

int rdma_accept(struct rdma_cm_id *id, struct rdma_conn_param *param)
{
	struct fake_id *f = (struct fake_id *)id, *a;

	pthread_mutex_lock(&fake_lock);
	a = f->peer;
	if (!id->qp || !a || !a->id.qp) {
		pthread_mutex_unlock(&fake_lock);
		errno = EINVAL;
		return -1;
	}
	f->connected = a->connected = true;
	queue_event(a->id.channel, &a->id, NULL, RDMA_CM_EVENT_ESTABLISHED, 0, param->private_data,
		    param->private_data_len, ACCEPT_PDATA);
	queue_event(id->channel, id, NULL, RDMA_CM_EVENT_ESTABLISHED, 0, NULL, 0, 0);
	pthread_mutex_unlock(&fake_lock);
	return 0;
}

int rdma_reject(struct rdma_cm_id *id, const void *pdata, uint8_t len)
{
	struct fake_id *f = (struct fake_id *)id;

	pthread_mutex_lock(&fake_lock);
	if (f->peer) {
		/* IB: "consumer reject". */
		queue_event(f->peer->id.channel, &f->peer->id, NULL, RDMA_CM_EVENT_REJECTED, 28,
			    NULL, 0, 0);
		f->peer->peer = NULL;
		f->peer = NULL;
	}
	pthread_mutex_unlock(&fake_lock);
	return 0;
}

int rdma_migrate_id(struct rdma_cm_id *id, struct rdma_event_channel *ch)
{
	pthread_mutex_lock(&fake_lock);
	id->channel = ch;
	pthread_mutex_unlock(&fake_lock);
	return 0;
}

/* As librdmacm on IB: the caller's QP goes to the error state (its receives flush); the peer
 * only gets DISCONNECTED, its QP stays as it is until it disconnects too. Both ids get the
 * event. Called locked. */
static void disconnect_locked(struct fake_id *f)
{
	struct fake_id *p = f->peer;

	if (!f->connected)
		return;
	f->connected = false;
	if (f->id.qp)
		fake_qp_error((struct fake_qp *)f->id.qp);
	if (!f->disconnect_seen) {
		f->disconnect_seen = true;
		queue_event(f->id.channel, &f->id, NULL, RDMA_CM_EVENT_DISCONNECTED, 0, NULL, 0, 0);
	}
	if (p && p->connected && !p->disconnect_seen) {
		p->disconnect_seen = true;
		queue_event(p->id.channel, &p->id, NULL, RDMA_CM_EVENT_DISCONNECTED, 0, NULL, 0, 0);
	}
}

int rdma_disconnect(struct rdma_cm_id *id)
{
	struct fake_id *f = (struct fake_id *)id;

	pthread_mutex_lock(&fake_lock);
	if (!f->connected) {
		pthread_mutex_unlock(&fake_lock);
		errno = EINVAL;
		return -1;
	}
	disconnect_locked(f);
	pthread_mutex_unlock(&fake_lock);
	return 0;
}

int rdma_destroy_id(struct rdma_cm_id *id)
{
	struct fake_id *f = (struct fake_id *)id;

	pthread_mutex_lock(&fake_lock);
	if (id->qp)
		fake_violations++; /* the QP must go first */
	disconnect_locked(f);
	if (f->peer)
		f->peer->peer = NULL;
	for (struct fake_id **p = &listeners; *p; p = &(*p)->next_listener)
		if (*p == f) {
			*p = f->next_listener;
			break;
		}
	LIVE(-1);
	pthread_mutex_unlock(&fake_lock);
	free(f);
	return 0;
}
