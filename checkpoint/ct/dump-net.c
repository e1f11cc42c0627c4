/* Checkpoint of pipes and sockets: pipe buffers through tee(), unix sockets through sock_diag
 * and MSG_PEEK, TCP connections through TCP_REPAIR. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/sockios.h>
#include <linux/unix_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "checkpoint/ct/dump-internal.h"
#include "checkpoint/ct/fdblob-internal.h"
#include "checkpoint/ct/net-internal.h"
#include "common/common.h"
#include "common/nsthread.h"

#define SOCK_QUEUE_MAX (CT_IMAGE_FD_DATA_MAX - 4096)

int net_pipe_peek(pid_t hpid, int task_fd, int ours, size_t size, uint8_t **ret, size_t *ret_len)
{
	_cleanup_close_ int rd = -EBADF, tmp_r = -EBADF, tmp_w = -EBADF;
	_cleanup_free_ uint8_t *buf = NULL;
	int fl = fcntl(ours, F_GETFL), tmp[2], avail = -1;
	ssize_t k;
	size_t got = 0;

	/* Most pipes are empty: nothing to copy then. */
	if (ioctl(ours, FIONREAD, &avail) == 0 && avail == 0) {
		*ret = malloc(1);
		*ret_len = 0;
		return *ret ? 0 : -ENOMEM;
	}
	if ((fl & O_ACCMODE) == O_RDONLY)
		rd = fcntl(ours, F_DUPFD_CLOEXEC, 3);
	else {
		char path[64];

		/* A new reader of the same pipe: opening through /proc does not block. */
		snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)hpid, task_fd);
		rd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	}
	if (rd < 0)
		return NEG_ERRNO();
	if (pipe2(tmp, O_CLOEXEC | O_NONBLOCK) < 0)
		return NEG_ERRNO();
	tmp_r = tmp[0], tmp_w = tmp[1];
	if (fcntl(tmp_w, F_SETPIPE_SZ, (int)size) < 0)
		return NEG_ERRNO();
	k = tee(rd, tmp_w, size, SPLICE_F_NONBLOCK);
	if (k < 0 && errno != EAGAIN)
		return NEG_ERRNO();
	buf = malloc(MAX(size, 1u));
	if (!buf)
		return -ENOMEM;
	while (k > 0 && got < (size_t)k) {
		ssize_t n = read(tmp_r, buf + got, (size_t)k - got);

		if (n <= 0)
			return n < 0 ? NEG_ERRNO() : -EIO;
		got += (size_t)n;
	}
	*ret = TAKE_PTR(buf);
	*ret_len = got;
	return 0;
}

struct unix_info {
	uint8_t state;
	uint32_t peer;
	char name[110];
	size_t name_len;
	uint32_t rqueue;
};

static int open_diag(void *arg)
{
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);

	(void)arg;
	return fd < 0 ? NEG_ERRNO() : fd;
}

/* The diag socket lives in the container's network namespace: made on a thread that joins it. */
static int diag_socket(struct dumper *d)
{
	_cleanup_close_ int ns_fd = -EBADF;
	char path[64];
	int fd;

	if (d->diag_fd >= 0)
		return d->diag_fd;
	snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)d->o->root_pid);
	ns_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (ns_fd < 0)
		return NEG_ERRNO();
	fd = ns_run(ns_fd, CLONE_NEWNET, open_diag, NULL, NULL);
	if (fd >= 0)
		d->diag_fd = fd;
	return fd;
}

/* One sock_diag answer: the socket's inode and what we keep of it. */
static int parse_unix_msg(const struct nlmsghdr *h, uint32_t *ret_ino, struct unix_info *ret)
{
	const struct unix_diag_msg *m = NLMSG_DATA(h);
	const struct rtattr *a;
	int len;

	if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*m)))
		return -EBADMSG;
	*ret_ino = m->udiag_ino;
	*ret = (struct unix_info){.state = m->udiag_state};
	len = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof(*m)));
	for (a = (const struct rtattr *)(m + 1); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
		size_t n = RTA_PAYLOAD(a);

		switch (a->rta_type) {
		case UNIX_DIAG_PEER:
			if (n >= 4)
				memcpy(&ret->peer, RTA_DATA(a), 4);
			break;
		case UNIX_DIAG_NAME:
			ret->name_len = MIN(n, sizeof(ret->name));
			memcpy(ret->name, RTA_DATA(a), ret->name_len);
			break;
		case UNIX_DIAG_RQLEN:
			if (n >= 8)
				memcpy(&ret->rqueue, RTA_DATA(a), 4);
			break;
		}
	}
	return 0;
}

struct unix_snap {
	uint32_t ino;
	struct unix_info info;
};

static int cmp_snap(const void *a, const void *b)
{
	uint32_t x = ((const struct unix_snap *)a)->ino, y = ((const struct unix_snap *)b)->ino;

	return (x > y) - (x < y);
}

/* Every unix socket of the container's network namespace, asked once (NLM_F_DUMP) when the
 * first is needed, while the container is stopped: a request for one inode makes the kernel
 * search every unix socket of the namespace, so one request per socket grew with the square
 * of their number (~45 us each at 4000). Sorted by inode. */
static int unix_snapshot(struct dumper *d)
{
	struct {
		struct nlmsghdr nlh;
		struct unix_diag_req req;
	} q = {
		.nlh = {.nlmsg_len = sizeof(q),
			.nlmsg_type = SOCK_DIAG_BY_FAMILY,
			.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP},
		.req = {.sdiag_family = AF_UNIX,
			.udiag_states = ~0U,
			.udiag_show = UDIAG_SHOW_PEER | UDIAG_SHOW_NAME | UDIAG_SHOW_RQLEN},
	};
	struct sockaddr_nl nl = {.nl_family = AF_NETLINK};
	_cleanup_free_ uint8_t *buf = malloc(32768);
	struct unix_snap *v = NULL;
	size_t n = 0, alloc = 0;
	int fd = diag_socket(d);
	bool done = false;

	if (fd < 0)
		return fd;
	if (!buf)
		return -ENOMEM;
	if (sendto(fd, &q, sizeof(q), 0, (struct sockaddr *)&nl, sizeof(nl)) < 0)
		return NEG_ERRNO();
	while (!done) {
		ssize_t k = recv(fd, buf, 32768, 0);
		size_t left = k > 0 ? (size_t)k : 0;
		int r = 0;

		if (k < 0)
			r = NEG_ERRNO();
		else if (k == 0)
			r = -EBADMSG;
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf;
		     r >= 0 && left >= sizeof(*h) && h->nlmsg_len >= sizeof(*h) &&
		     h->nlmsg_len <= left;
		     left -= MIN(left, (size_t)NLMSG_ALIGN(h->nlmsg_len)),
				     h = (struct nlmsghdr *)((uint8_t *)h +
							     NLMSG_ALIGN(h->nlmsg_len))) {
			if (h->nlmsg_type == NLMSG_DONE) {
				done = true;
				break;
			}
			if (h->nlmsg_type == NLMSG_ERROR) {
				r = ((struct nlmsgerr *)NLMSG_DATA(h))->error ?: -EBADMSG;
				break;
			}
			if (n == alloc) {
				struct unix_snap *nv;

				alloc = MAX(alloc * 2, 256u);
				nv = reallocarray(v, alloc, sizeof(*v));
				if (!nv) {
					r = -ENOMEM;
					break;
				}
				v = nv;
			}
			r = parse_unix_msg(h, &v[n].ino, &v[n].info);
			n += r >= 0;
		}
		if (r < 0) {
			free(v);
			return r;
		}
	}
	qsort(v, n, sizeof(*v), cmp_snap);
	d->unix_snap = v;
	d->n_unix_snap = n;
	return 0;
}

/* One socket, asked alone: for one the snapshot lacks, or when it could not be taken. */
static int unix_diag_one(struct dumper *d, uint32_t ino, struct unix_info *ret)
{
	struct {
		struct nlmsghdr nlh;
		struct unix_diag_req req;
	} q = {
		.nlh = {.nlmsg_len = sizeof(q),
			.nlmsg_type = SOCK_DIAG_BY_FAMILY,
			.nlmsg_flags = NLM_F_REQUEST},
		.req = {.sdiag_family = AF_UNIX,
			.udiag_states = ~0U,
			.udiag_ino = ino,
			.udiag_show = UDIAG_SHOW_PEER | UDIAG_SHOW_NAME | UDIAG_SHOW_RQLEN,
			.udiag_cookie = {~0U, ~0U}},
	};
	struct sockaddr_nl nl = {.nl_family = AF_NETLINK};
	uint8_t buf[8192] __attribute__((aligned(4)));
	struct nlmsghdr *h = (struct nlmsghdr *)buf;
	uint32_t got;
	int fd = diag_socket(d);
	ssize_t k;

	if (fd < 0)
		return fd;
	if (sendto(fd, &q, sizeof(q), 0, (struct sockaddr *)&nl, sizeof(nl)) < 0)
		return NEG_ERRNO();
	k = recv(fd, buf, sizeof(buf), 0);
	if (k < 0)
		return NEG_ERRNO();
	if (!NLMSG_OK(h, (size_t)k))
		return -EBADMSG;
	if (h->nlmsg_type == NLMSG_ERROR)
		return ((struct nlmsgerr *)NLMSG_DATA(h))->error ?: -EBADMSG;
	return parse_unix_msg(h, &got, ret);
}

static int unix_diag(struct dumper *d, uint32_t ino, struct unix_info *ret)
{
	const struct unix_snap key = {.ino = ino}, *e;

	if (!d->unix_snap_tried) {
		int r;

		d->unix_snap_tried = true;
		r = unix_snapshot(d);
		if (r < 0)
			log_debug("%s: no snapshot of the unix sockets (%s): asked one by one",
				  d->o->name, strerror(-r));
	}
	e = d->n_unix_snap ? bsearch(&key, d->unix_snap, d->n_unix_snap, sizeof(key), cmp_snap)
			   : NULL;
	if (e) {
		*ret = e->info;
		return 0;
	}
	return unix_diag_one(d, ino, ret);
}

/* The receive queue, peeked message by message (SO_PEEK_OFF walks it without consuming). */
static int peek_queue(int fd, bool stream, struct fdblob *b, const char **ret_why)
{
	_cleanup_free_ uint8_t *buf = malloc(SOCK_QUEUE_MAX);
	int off = 0, none = -1;
	size_t total = 0, n_msgs = 0, count_at;
	int r = 0;

	if (!buf)
		return -ENOMEM;
	if (setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &off, sizeof(off)) < 0)
		return NEG_ERRNO();
	count_at = b->n;
	fdblob_u64(b, 0); /* number of messages, patched below */
	for (;;) {
		union {
			struct cmsghdr h;
			uint8_t b[CMSG_SPACE(sizeof(int) * 64)];
		} ctl;
		struct iovec iov = {buf, SOCK_QUEUE_MAX - total};
		struct msghdr mh = {.msg_iov = &iov,
				    .msg_iovlen = 1,
				    .msg_control = &ctl,
				    .msg_controllen = sizeof(ctl)};
		ssize_t k = recvmsg(fd, &mh, MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

		if (k < 0) {
			if (errno != EAGAIN)
				r = NEG_ERRNO();
			break;
		}
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
			if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
				int *fds = (int *)CMSG_DATA(c);

				for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
				     i++)
					close(fds[i]);
				*ret_why = "a file descriptor in flight (SCM_RIGHTS)";
				r = -EOPNOTSUPP;
			}
		if (r < 0)
			break;
		if (k == 0 && stream)
			break;
		if ((mh.msg_flags & MSG_TRUNC) || total + (size_t)k >= SOCK_QUEUE_MAX) {
			*ret_why = "more queued data than an image record holds";
			r = -E2BIG;
			break;
		}
		fdblob_str(b, buf, (size_t)k);
		total += (size_t)k;
		n_msgs++;
	}
	(void)setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &none, sizeof(none));
	if (r >= 0 && !b->oom)
		put_le64(b->p + count_at, n_msgs);
	return r;
}

static int dump_unix(struct dumper *d, struct dproc *p, int fd, int ours, uint64_t ino,
		     struct ct_image_fd *rec)
{
	struct unix_info ui;
	struct fdblob b = {};
	const char *why = NULL;
	socklen_t sl = sizeof(int);
	int type = 0, r;

	rec->type = CT_IMAGE_FD_UNIX;
	rec->object = ino;
	getsockopt(ours, SOL_SOCKET, SO_TYPE, &type, &sl);
	r = unix_diag(d, (uint32_t)ino, &ui);
	if (r < 0)
		return dump_fail(d, r, "pid %d fd %d: sock_diag of the unix socket failed: %s",
				 (int)p->pid, fd, strerror(-r));
	fdblob_u64(&b, AF_UNIX);
	fdblob_u64(&b, (uint64_t)type);
	if (ui.state == TCP_LISTEN) {
		if (ui.rqueue > 0) {
			free(b.p);
			return dump_fail(d, -EOPNOTSUPP,
					 "pid %d fd %d: a listening unix socket with %u pending "
					 "connections is not supported",
					 (int)p->pid, fd, ui.rqueue);
		}
		fdblob_u64(&b, NET_SOCK_LISTEN);
	} else
		fdblob_u64(&b, ui.peer ? NET_SOCK_CONNECTED : NET_SOCK_UNCONNECTED);
	fdblob_u64(&b, ui.peer);
	fdblob_u64(&b, 128); /* backlog: the kernel does not report it */
	fdblob_str(&b, ui.name, ui.name_len);
	if (ui.state != TCP_LISTEN) {
		r = peek_queue(ours, type == SOCK_STREAM, &b, &why);
		if (r < 0) {
			free(b.p);
			return dump_fail(d, r, "pid %d fd %d: unix socket: %s", (int)p->pid, fd,
					 why ?: strerror(-r));
		}
	} else
		fdblob_u64(&b, 0);
	return fdblob_take(&b, &rec->data, &rec->data_size);
}

static void put_addr(struct fdblob *b, int fd, bool peer)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int r = peer ? getpeername(fd, (struct sockaddr *)&ss, &sl)
		     : getsockname(fd, (struct sockaddr *)&ss, &sl);

	fdblob_str(b, &ss, r < 0 ? 0 : sl);
}

/* Options worth keeping: level, name, value. */
static const int sockopts[][2] = {
	{SOL_SOCKET, SO_REUSEADDR}, {SOL_SOCKET, SO_REUSEPORT},	 {SOL_SOCKET, SO_KEEPALIVE},
	{IPPROTO_TCP, TCP_NODELAY}, {IPPROTO_IPV6, IPV6_V6ONLY},
};

static void put_opts(struct fdblob *b, int fd, int domain, int proto)
{
	size_t at = b->n, n = 0;

	fdblob_u64(b, 0);
	for (size_t i = 0; i < ELEMENTSOF(sockopts); i++) {
		int v = 0;
		socklen_t sl = sizeof(v);

		if (sockopts[i][0] == IPPROTO_TCP && proto != IPPROTO_TCP)
			continue;
		if (sockopts[i][0] == IPPROTO_IPV6 && domain != AF_INET6)
			continue;
		if (getsockopt(fd, sockopts[i][0], sockopts[i][1], &v, &sl) < 0)
			continue;
		fdblob_u64(b, (uint64_t)sockopts[i][0]);
		fdblob_u64(b, (uint64_t)sockopts[i][1]);
		fdblob_u64(b, (uint64_t)v);
		n++;
	}
	if (!b->oom)
		put_le64(b->p + at, n);
}

static int tcp_queue(int fd, int queue, uint32_t *ret_seq, size_t len, struct fdblob *b)
{
	_cleanup_free_ uint8_t *buf = malloc(MAX(len, 1u));
	socklen_t sl = sizeof(*ret_seq);
	ssize_t k = 0;

	if (!buf)
		return -ENOMEM;
	if (setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, &queue, sizeof(queue)) < 0 ||
	    getsockopt(fd, IPPROTO_TCP, TCP_QUEUE_SEQ, ret_seq, &sl) < 0)
		return NEG_ERRNO();
	if (len > 0) {
		k = recv(fd, buf, len, MSG_PEEK | MSG_DONTWAIT);
		if (k < 0)
			return NEG_ERRNO();
		if ((size_t)k != len)
			return -EIO;
	}
	fdblob_str(b, buf, len);
	return 0;
}

static int dump_tcp_established(int fd, struct fdblob *b, const char **ret_why)
{
	struct tcp_info ti;
	struct tcp_repair_window win;
	socklen_t sl;
	uint32_t snd_seq, rcv_seq, ts = 0;
	int outq = 0, unsent = 0, inq = 0, mss = 0, one = 1, r;

	if (setsockopt(fd, IPPROTO_TCP, TCP_REPAIR, &one, sizeof(one)) < 0) {
		*ret_why = "TCP_REPAIR";
		return NEG_ERRNO();
	}
	sl = sizeof(ti);
	if (ioctl(fd, SIOCOUTQ, &outq) < 0 || ioctl(fd, SIOCOUTQNSD, &unsent) < 0 ||
	    ioctl(fd, SIOCINQ, &inq) < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &sl) < 0) {
		*ret_why = "queue sizes";
		return NEG_ERRNO();
	}
	if ((size_t)outq + (size_t)inq > SOCK_QUEUE_MAX) {
		*ret_why = "more queued data than an image record holds";
		return -E2BIG;
	}
	sl = sizeof(mss);
	getsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, &mss, &sl);
	sl = sizeof(ts);
	getsockopt(fd, IPPROTO_TCP, TCP_TIMESTAMP, &ts, &sl);
	sl = sizeof(win);
	if (getsockopt(fd, IPPROTO_TCP, TCP_REPAIR_WINDOW, &win, &sl) < 0) {
		*ret_why = "TCP_REPAIR_WINDOW";
		return NEG_ERRNO();
	}
	fdblob_u64(b, (uint64_t)outq);
	fdblob_u64(b, (uint64_t)unsent);
	fdblob_u64(b, (uint64_t)mss);
	fdblob_u64(b, ti.tcpi_options);
	fdblob_u64(b, ti.tcpi_snd_wscale);
	fdblob_u64(b, ti.tcpi_rcv_wscale);
	fdblob_u64(b, ts);
	fdblob_u64(b, win.snd_wl1);
	fdblob_u64(b, win.snd_wnd);
	fdblob_u64(b, win.max_window);
	fdblob_u64(b, win.rcv_wnd);
	fdblob_u64(b, win.rcv_wup);
	r = tcp_queue(fd, TCP_SEND_QUEUE, &snd_seq, (size_t)outq, b);
	if (r >= 0) {
		fdblob_u64(b, snd_seq);
		r = tcp_queue(fd, TCP_RECV_QUEUE, &rcv_seq, (size_t)inq, b);
	}
	if (r >= 0)
		fdblob_u64(b, rcv_seq);
	if (r < 0)
		*ret_why = "reading the TCP queues";
	return r;
}

struct tcp_later {
	struct ct_image_fd *rec; /* each process's records are allocated once: stable */
	pid_t pid;		 /* the container's, for messages */
	int fd;			 /* in the task */
	int ours;		 /* the dump's duplicate, open until the tasks are let go */
	struct fdblob b;	 /* the record up to the connection's own state */
};

static int dump_inet(struct dumper *d, struct dproc *p, int fd, int ours, int domain,
		     struct ct_image_fd *rec)
{
	struct fdblob b = {};
	const char *why = NULL;
	socklen_t sl = sizeof(int);
	int type = 0, proto = 0, r = 0;

	getsockopt(ours, SOL_SOCKET, SO_TYPE, &type, &sl);
	sl = sizeof(int);
	getsockopt(ours, SOL_SOCKET, SO_PROTOCOL, &proto, &sl);
	fdblob_u64(&b, (uint64_t)domain);
	fdblob_u64(&b, (uint64_t)type);
	if (type == SOCK_STREAM && proto == IPPROTO_TCP) {
		struct tcp_info ti;

		rec->type = CT_IMAGE_FD_TCP;
		sl = sizeof(ti);
		if (getsockopt(ours, IPPROTO_TCP, TCP_INFO, &ti, &sl) < 0)
			return dump_fail(d, NEG_ERRNO(), "pid %d fd %d: TCP_INFO: %m", (int)p->pid,
					 fd);
		if (ti.tcpi_state == TCP_LISTEN) {
			if (ti.tcpi_unacked > 0)
				why = "a listening TCP socket with connections waiting for "
				      "accept()";
			fdblob_u64(&b, NET_SOCK_LISTEN);
		} else if (ti.tcpi_state == TCP_ESTABLISHED)
			fdblob_u64(&b, NET_SOCK_CONNECTED);
		else if (ti.tcpi_state == TCP_CLOSE)
			fdblob_u64(&b, NET_SOCK_UNCONNECTED);
		else
			why = "a TCP connection that is opening or closing";
		put_addr(&b, ours, false);
		put_addr(&b, ours, true);
		put_opts(&b, ours, domain, proto);
		fdblob_u64(&b, ti.tcpi_sacked); /* a listener's backlog */
		if (!why && ti.tcpi_state == TCP_ESTABLISHED) {
			struct tcp_later *n;

			if (b.oom) {
				free(b.p);
				return -ENOMEM;
			}
			n = reallocarray(d->tcp_later, d->n_tcp_later + 1, sizeof(*n));
			if (!n) {
				free(b.p);
				return -ENOMEM;
			}
			d->tcp_later = n;
			n[d->n_tcp_later++] = (struct tcp_later){
				.rec = rec, .pid = p->pid, .fd = fd, .ours = ours, .b = b};
			return 0;
		}
	} else if (type == SOCK_DGRAM && proto == IPPROTO_UDP) {
		struct sockaddr_storage ss;
		socklen_t pl = sizeof(ss);

		rec->type = CT_IMAGE_FD_UDP;
		fdblob_u64(&b, getpeername(ours, (struct sockaddr *)&ss, &pl) == 0
				       ? NET_SOCK_CONNECTED
				       : NET_SOCK_UNCONNECTED);
		put_addr(&b, ours, false);
		put_addr(&b, ours, true);
		put_opts(&b, ours, domain, proto);
		fdblob_u64(&b, 0);
	} else
		why = "this kind of internet socket";
	if (why || r < 0) {
		free(b.p);
		if (why && r >= 0)
			return dump_fail(d, -EOPNOTSUPP, "pid %d fd %d: %s is not supported",
					 (int)p->pid, fd, why);
		return dump_fail(d, r, "pid %d fd %d: TCP connection: %s: %s", (int)p->pid, fd,
				 why ?: "dump", strerror(-r));
	}
	return fdblob_take(&b, &rec->data, &rec->data_size);
}

int net_dump_socket(struct dumper *d, struct dproc *p, int fd, int ours, uint64_t ino,
		    struct ct_image_fd *rec)
{
	socklen_t sl = sizeof(int);
	int domain = 0;

	if (getsockopt(ours, SOL_SOCKET, SO_DOMAIN, &domain, &sl) < 0)
		return dump_fail(d, NEG_ERRNO(), "pid %d fd %d: SO_DOMAIN: %m", (int)p->pid, fd);
	rec->object = ino;
	switch (domain) {
	case AF_UNIX:
		return dump_unix(d, p, fd, ours, ino, rec);
	case AF_INET:
	case AF_INET6:
		return dump_inet(d, p, fd, ours, domain, rec);
	default:
		return dump_fail(d, -EOPNOTSUPP,
				 "pid %d fd %d: a socket of family %d is not "
				 "supported",
				 (int)p->pid, fd, domain);
	}
}

int net_unix_record_peer(const struct ct_image_fd *rec, uint64_t *ret_peer)
{
	struct fdblob_reader r = {rec->data, rec->data_size};
	uint64_t type, state;

	if (rec->type != CT_IMAGE_FD_UNIX)
		return -1;
	(void)fdblob_get_u64(&r); /* AF_UNIX */
	type = fdblob_get_u64(&r);
	state = fdblob_get_u64(&r);
	*ret_peer = fdblob_get_u64(&r);
	if (r.bad)
		return -1;
	if (state != NET_SOCK_CONNECTED)
		*ret_peer = 0;
	return (int)type;
}

struct unix_ref {
	uint64_t object;
	size_t seq; /* its place among the records */
	const struct ct_image_fd *rec;
};

static int cmp_unix_ref(const void *a, const void *b)
{
	const struct unix_ref *x = a, *y = b;

	if (x->object != y->object)
		return x->object < y->object ? -1 : 1;
	return (x->seq > y->seq) - (x->seq < y->seq);
}

static int cmp_unix_object(const void *key, const void *elem)
{
	uint64_t k = *(const uint64_t *)key, o = ((const struct unix_ref *)elem)->object;

	return (k > o) - (k < o);
}

/* The first unix socket record of that inode, among v[n] sorted by inode. */
static const struct ct_image_fd *find_unix(const struct unix_ref *v, size_t n, uint64_t object)
{
	const struct unix_ref *e = bsearch(&object, v, n, sizeof(*v), cmp_unix_object);

	while (e && e > v && e[-1].object == object)
		e--;
	return e ? e->rec : NULL;
}

/* Every connected unix socket's peer is in the container and connected back to it: looked up
 * among the unix socket records, sorted by inode once. */
int net_dump_check(struct dumper *d)
{
	_cleanup_free_ struct unix_ref *v = NULL;
	size_t n = 0, all = 0;

	for (size_t i = 0; i < d->n_procs; i++)
		all += d->procs[i].fds.n_fds;
	v = malloc(MAX(all, 1u) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < d->n_procs; i++)
		for (size_t j = 0; j < d->procs[i].fds.n_fds; j++)
			if (d->procs[i].fds.fds[j].type == CT_IMAGE_FD_UNIX) {
				v[n] = (struct unix_ref){.object = d->procs[i].fds.fds[j].object,
							 .seq = n,
							 .rec = &d->procs[i].fds.fds[j]};
				n++;
			}
	qsort(v, n, sizeof(*v), cmp_unix_ref);
	for (size_t i = 0; i < d->n_procs; i++) {
		const struct dproc *p = &d->procs[i];

		for (size_t j = 0; j < p->fds.n_fds; j++) {
			const struct ct_image_fd *f = &p->fds.fds[j], *peer;
			uint64_t peer_ino, back;

			if (net_unix_record_peer(f, &peer_ino) < 0 || !peer_ino)
				continue;
			peer = find_unix(v, n, peer_ino);
			if (!peer)
				return dump_fail(d, -EOPNOTSUPP,
						 "pid %d fd %u: a unix socket connected to outside "
						 "the container is not supported",
						 (int)p->pid, f->fd);
			if (net_unix_record_peer(peer, &back) < 0 || back != f->object)
				return dump_fail(d, -EOPNOTSUPP,
						 "pid %d fd %u: a unix socket connected to a "
						 "named datagram socket is not supported",
						 (int)p->pid, f->fd);
		}
	}
	return 0;
}

int net_dump_tcp_later(struct dumper *d)
{
	for (size_t i = 0; i < d->n_tcp_later; i++) {
		struct tcp_later *t = &d->tcp_later[i];
		const char *why = NULL;
		socklen_t sl = sizeof(int);
		int reuse = 0, r;

		(void)getsockopt(t->ours, SOL_SOCKET, SO_REUSEADDR, &reuse, &sl);
		r = dump_tcp_established(t->ours, &t->b, &why);
		/* In repair mode even when reading it failed: the release takes it out again. */
		dump_file_set_repair(d, t->rec->file_id,
				     NET_REPAIR | (reuse ? NET_REPAIR_REUSE : 0));
		if (r < 0)
			return dump_fail(d, r, "pid %d fd %d: TCP connection: %s: %s", (int)t->pid,
					 t->fd, why ?: "dump", strerror(-r));
		r = fdblob_take(&t->b, &t->rec->data, &t->rec->data_size);
		if (r < 0)
			return r;
	}
	return 0;
}

void net_dump_free(struct dumper *d)
{
	for (size_t i = 0; i < d->n_tcp_later; i++)
		free(d->tcp_later[i].b.p);
	free(d->tcp_later);
	d->tcp_later = NULL;
	d->n_tcp_later = 0;
	free(d->unix_snap);
	d->unix_snap = NULL;
	d->n_unix_snap = 0;
}

void net_tcp_repair_off(int fd, unsigned how)
{
	int off = TCP_REPAIR_OFF, on = 1;

	(void)setsockopt(fd, IPPROTO_TCP, TCP_REPAIR, &off, sizeof(off));
	if (how & NET_REPAIR_REUSE)
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
}

/* ---- after migrd ended in the middle of a dump ---------------------------------------------- */

/* Every TCP socket among pid's fds that sits in repair mode leaves it. */
static int repair_off_in(pid_t pid, unsigned *n)
{
	_cleanup_close_ int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	char path[64];
	DIR *dir;
	struct dirent *e;
	int dfd;

	if (pidfd < 0)
		return errno == ESRCH ? 0 : NEG_ERRNO();
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	dir = opendir(path);
	if (!dir)
		return errno == ENOENT ? 0 : NEG_ERRNO();
	dfd = dirfd(dir);
	while ((e = readdir(dir))) {
		struct stat st;
		int fd, ours, v = 0, off = TCP_REPAIR_OFF;
		socklen_t sl = sizeof(v);

		if (parse_int(e->d_name, &fd) < 0 || fstatat(dfd, e->d_name, &st, 0) < 0 ||
		    !S_ISSOCK(st.st_mode))
			continue;
		ours = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
		if (ours < 0)
			continue;
		if (getsockopt(ours, SOL_SOCKET, SO_PROTOCOL, &v, &sl) == 0 && v == IPPROTO_TCP &&
		    (sl = sizeof(v), getsockopt(ours, IPPROTO_TCP, TCP_REPAIR, &v, &sl)) == 0 &&
		    v > 0 && setsockopt(ours, IPPROTO_TCP, TCP_REPAIR, &off, sizeof(off)) == 0)
			(*n)++;
		close(ours);
	}
	closedir(dir);
	return 0;
}

int ct_dump_recover(struct ct_cgroup *cg, usec_t timeout, unsigned *ret_repaired,
		    char err[CT_ENGINE_ERROR_MAX])
{
	_cleanup_free_ pid_t *pids = NULL;
	size_t n = 0;
	int r;

	err[0] = 0;
	*ret_repaired = 0;
	/* The connections first: a task that ran into one still in repair mode would get EPERM. */
	r = ct_cgroup_get_pids(cg, false, &pids, &n);
	if (r < 0) {
		snprintf(err, CT_ENGINE_ERROR_MAX, "cannot list its processes: %s", strerror(-r));
		return r;
	}
	for (size_t i = 0; i < n; i++) {
		r = repair_off_in(pids[i], ret_repaired);
		if (r < 0) {
			snprintf(err, CT_ENGINE_ERROR_MAX, "pid %d (host): cannot read its fds: %s",
				 (int)pids[i], strerror(-r));
			return r;
		}
	}
	r = ct_cgroup_thaw(cg, timeout);
	if (r < 0)
		snprintf(err, CT_ENGINE_ERROR_MAX, "cannot thaw its cgroup: %s",
			 ct_cgroup_last_error(cg));
	return r;
}
