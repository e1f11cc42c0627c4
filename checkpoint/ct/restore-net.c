/* Restore of sockets: unix pairs with their queued data, bound and listening sockets, and
 * established TCP connections rebuilt in repair mode so that the peer notices nothing. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "checkpoint/ct/fdblob-internal.h"
#include "checkpoint/ct/net-internal.h"
#include "common/common.h"
#include "common/nsthread.h"

#define ADDR_MAX sizeof(struct sockaddr_storage)

struct sock_req {
	int domain, type, proto;
};

static int sock_here(void *arg)
{
	const struct sock_req *q = arg;
	int fd = socket(q->domain, q->type | SOCK_CLOEXEC, q->proto);

	return fd < 0 ? NEG_ERRNO() : fd;
}

/* A socket in the container's network namespace (netns_fd < 0: ours). */
static int make_sock(int netns_fd, int domain, int type, int proto)
{
	struct sock_req q = {domain, type, proto};

	if (netns_fd < 0)
		return sock_here(&q);
	return ns_run(netns_fd, CLONE_NEWNET, sock_here, &q, NULL);
}

static int fail(char *err, size_t errlen, int r, const char *what)
{
	snprintf(err, errlen, "%s: %s", what, strerror(-r));
	return r;
}

struct sock_rec {
	uint64_t domain, type, state;
	/* unix */
	uint64_t peer, backlog;
	const uint8_t *name;
	size_t name_len;
	/* inet */
	const uint8_t *local, *remote;
	size_t local_len, remote_len;
	struct fdblob_reader rest; /* what follows the common part */
};

static int parse_unix(const struct ct_image_fd *f, struct sock_rec *s)
{
	struct fdblob_reader rd = {f->data, f->data_size};

	s->domain = fdblob_get_u64(&rd);
	s->type = fdblob_get_u64(&rd);
	s->state = fdblob_get_u64(&rd);
	s->peer = fdblob_get_u64(&rd);
	s->backlog = fdblob_get_u64(&rd);
	s->name = fdblob_get_str(&rd, sizeof(((struct sockaddr_un *)0)->sun_path), &s->name_len);
	s->rest = rd;
	return rd.bad ? -EBADMSG : 0;
}

static int parse_inet(const struct ct_image_fd *f, struct sock_rec *s)
{
	struct fdblob_reader rd = {f->data, f->data_size};

	s->domain = fdblob_get_u64(&rd);
	s->type = fdblob_get_u64(&rd);
	s->state = fdblob_get_u64(&rd);
	s->local = fdblob_get_str(&rd, ADDR_MAX, &s->local_len);
	s->remote = fdblob_get_str(&rd, ADDR_MAX, &s->remote_len);
	s->rest = rd;
	if (rd.bad || (s->domain != AF_INET && s->domain != AF_INET6))
		return -EBADMSG;
	return 0;
}

static int set_opts(int fd, struct fdblob_reader *rd)
{
	uint64_t n = fdblob_get_u64(rd);

	for (uint64_t i = 0; i < n && !rd->bad && i < 64; i++) {
		int level = (int)fdblob_get_u64(rd), name = (int)fdblob_get_u64(rd),
		    v = (int)fdblob_get_u64(rd);

		if (!rd->bad && fd >= 0 && setsockopt(fd, level, name, &v, sizeof(v)) < 0)
			return NEG_ERRNO();
	}
	return rd->bad ? -EBADMSG : 0;
}

int net_restore_unix_pair(const struct ct_image_fd *a, const struct ct_image_fd *b, int *ret_a,
			  int *ret_b, char *err, size_t errlen)
{
	struct sock_rec sa, sb;
	int sv[2];

	if (parse_unix(a, &sa) < 0 || parse_unix(b, &sb) < 0 || sa.type != sb.type)
		return fail(err, errlen, -EBADMSG, "malformed unix socket record");
	if (socketpair(AF_UNIX, (int)sa.type | SOCK_CLOEXEC, 0, sv) < 0)
		return fail(err, errlen, NEG_ERRNO(), "socketpair");
	*ret_a = sv[0];
	*ret_b = sv[1];
	return 0;
}

int net_unix_refill(const struct ct_image_fd *rec, int peer_fd)
{
	struct sock_rec s;
	uint64_t n;
	size_t total = 0;
	struct fdblob_reader rd;
	int size;

	if (parse_unix(rec, &s) < 0)
		return -EBADMSG;
	rd = s.rest;
	n = fdblob_get_u64(&rd);
	{
		struct fdblob_reader scan = rd;

		for (uint64_t i = 0; i < n && !scan.bad; i++) {
			size_t len;

			(void)fdblob_get_str(&scan, CT_IMAGE_FD_DATA_MAX, &len);
			total += len + 512;
		}
	}
	size = (int)MIN(total * 2 + 65536, (size_t)INT32_MAX / 2);
	(void)setsockopt(peer_fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size));
	for (uint64_t i = 0; i < n; i++) {
		size_t len;
		const uint8_t *data = fdblob_get_str(&rd, CT_IMAGE_FD_DATA_MAX, &len);

		if (rd.bad)
			return -EBADMSG;
		if (send(peer_fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)len)
			return errno ? NEG_ERRNO() : -EIO;
	}
	return 0;
}

/* A unix socket that is not one of a connected pair: made here unbound; its name (bind) and
 * listen come from the task itself, see net_unix_name(). */
static int restore_unix(const struct ct_image_fd *f, int *ret, char *err, size_t errlen)
{
	struct sock_rec s;
	int fd;

	if (parse_unix(f, &s) < 0)
		return fail(err, errlen, -EBADMSG, "malformed unix socket record");
	fd = socket(AF_UNIX, (int)s.type | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fail(err, errlen, NEG_ERRNO(), "socket");
	*ret = fd;
	return 0;
}

int net_unix_name(const struct ct_image_fd *f, struct sockaddr_un *ret, socklen_t *ret_len,
		  int *ret_backlog)
{
	struct sock_rec s;

	if (f->type != CT_IMAGE_FD_UNIX || parse_unix(f, &s) < 0 || s.state == NET_SOCK_CONNECTED ||
	    s.name_len == 0 || s.name_len > sizeof(ret->sun_path))
		return 0;
	*ret = (struct sockaddr_un){.sun_family = AF_UNIX};
	memcpy(ret->sun_path, s.name, s.name_len);
	*ret_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + s.name_len);
	*ret_backlog = s.state == NET_SOCK_LISTEN ? (int)CLAMP(s.backlog, 1u, 4096u) : -1;
	return 1;
}

static int tcp_set(int fd, int name, int v)
{
	return setsockopt(fd, IPPROTO_TCP, name, &v, sizeof(v)) < 0 ? NEG_ERRNO() : 0;
}

static int tcp_send_queue(int fd, const uint8_t *data, size_t len)
{
	for (size_t done = 0; done < len;) {
		ssize_t k = send(fd, data + done, len - done, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (k <= 0)
			return k < 0 ? NEG_ERRNO() : -EIO;
		done += (size_t)k;
	}
	return 0;
}

/* An established connection: sequence numbers, options, queues and window as dumped. */
static int tcp_established(int fd, struct sock_rec *s, char *err, size_t errlen)
{
	struct fdblob_reader *rd = &s->rest;
	uint64_t outq = fdblob_get_u64(rd), unsent = fdblob_get_u64(rd), mss = fdblob_get_u64(rd),
		 opts = fdblob_get_u64(rd), snd_ws = fdblob_get_u64(rd),
		 rcv_ws = fdblob_get_u64(rd), ts = fdblob_get_u64(rd);
	struct tcp_repair_window win = {
		.snd_wl1 = (uint32_t)fdblob_get_u64(rd),
		.snd_wnd = (uint32_t)fdblob_get_u64(rd),
		.max_window = (uint32_t)fdblob_get_u64(rd),
		.rcv_wnd = (uint32_t)fdblob_get_u64(rd),
		.rcv_wup = (uint32_t)fdblob_get_u64(rd),
	};
	size_t sendq_len, recvq_len;
	const uint8_t *sendq = fdblob_get_str(rd, CT_IMAGE_FD_DATA_MAX, &sendq_len);
	uint32_t snd_seq = (uint32_t)fdblob_get_u64(rd);
	const uint8_t *recvq = fdblob_get_str(rd, CT_IMAGE_FD_DATA_MAX, &recvq_len);
	uint32_t rcv_seq = (uint32_t)fdblob_get_u64(rd);
	struct tcp_repair_opt ro[4];
	size_t n_ro = 0;
	int r, size;

	if (rd->bad || sendq_len != outq || unsent > outq)
		return fail(err, errlen, -EBADMSG, "malformed TCP record");
	r = tcp_set(fd, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE);
	if (r >= 0)
		r = tcp_set(fd, TCP_QUEUE_SEQ, (int)(snd_seq - (uint32_t)outq));
	if (r >= 0)
		r = tcp_set(fd, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE);
	if (r >= 0)
		r = tcp_set(fd, TCP_QUEUE_SEQ, (int)(rcv_seq - (uint32_t)recvq_len));
	if (r < 0)
		return fail(err, errlen, r, "TCP_QUEUE_SEQ");
	if (bind(fd, (const struct sockaddr *)s->local, (socklen_t)s->local_len) < 0)
		return fail(err, errlen, NEG_ERRNO(), "bind to the connection's address");
	if (connect(fd, (const struct sockaddr *)s->remote, (socklen_t)s->remote_len) < 0)
		return fail(err, errlen, NEG_ERRNO(), "connect in repair mode");
	ro[n_ro++] = (struct tcp_repair_opt){TCPOPT_MAXSEG, (uint32_t)mss};
	if (opts & TCPI_OPT_WSCALE)
		ro[n_ro++] =
			(struct tcp_repair_opt){TCPOPT_WINDOW, (uint32_t)(snd_ws | (rcv_ws << 16))};
	if (opts & TCPI_OPT_SACK)
		ro[n_ro++] = (struct tcp_repair_opt){TCPOPT_SACK_PERMITTED, 0};
	if (opts & TCPI_OPT_TIMESTAMPS)
		ro[n_ro++] = (struct tcp_repair_opt){TCPOPT_TIMESTAMP, 0};
	if (setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_OPTIONS, ro, (socklen_t)(n_ro * sizeof(*ro))) <
	    0)
		return fail(err, errlen, NEG_ERRNO(), "TCP_REPAIR_OPTIONS");
	if ((opts & TCPI_OPT_TIMESTAMPS) && (r = tcp_set(fd, TCP_TIMESTAMP, (int)ts)) < 0)
		return fail(err, errlen, r, "TCP_TIMESTAMP");
	size = (int)MIN(outq * 2 + 65536, (uint64_t)INT32_MAX / 2);
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size));
	r = tcp_set(fd, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE);
	if (r >= 0 && recvq_len)
		r = tcp_send_queue(fd, recvq, recvq_len);
	if (r >= 0)
		r = tcp_set(fd, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE);
	if (r >= 0 && outq - unsent)
		r = tcp_send_queue(fd, sendq, (size_t)(outq - unsent));
	if (r < 0)
		return fail(err, errlen, r, "refilling the TCP queues");
	if (setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_WINDOW, &win, sizeof(win)) < 0)
		return fail(err, errlen, NEG_ERRNO(), "TCP_REPAIR_WINDOW");
	r = tcp_set(fd, TCP_REPAIR, TCP_REPAIR_OFF);
	if (r < 0)
		return fail(err, errlen, r, "leaving repair mode");
	if (unsent && (r = tcp_send_queue(fd, sendq + (outq - unsent), (size_t)unsent)) < 0)
		return fail(err, errlen, r, "sending the unsent data");
	return 0;
}

static int restore_inet(const struct ct_image_fd *f, int netns_fd, int *ret, char *err,
			size_t errlen)
{
	struct sock_rec s;
	bool tcp = f->type == CT_IMAGE_FD_TCP;
	struct fdblob_reader opts;
	uint64_t backlog;
	int fd, r;

	if (parse_inet(f, &s) < 0)
		return fail(err, errlen, -EBADMSG, "malformed socket record");
	fd = make_sock(netns_fd, (int)s.domain, tcp ? SOCK_STREAM : SOCK_DGRAM,
		       tcp ? IPPROTO_TCP : IPPROTO_UDP);
	if (fd < 0)
		return fail(err, errlen, fd, "socket");
	opts = s.rest;
	(void)set_opts(-1, &s.rest); /* skipped here, applied below */
	backlog = fdblob_get_u64(&s.rest);
	if (tcp && s.state == NET_SOCK_CONNECTED) {
		/* Repair mode forces address reuse: the listener that accepted this connection
		 * may hold the port already. */
		r = tcp_set(fd, TCP_REPAIR, TCP_REPAIR_ON);
		if (r < 0) {
			close(fd);
			return fail(err, errlen, r, "TCP_REPAIR");
		}
		r = tcp_established(fd, &s, err, errlen);
		if (r >= 0)
			r = set_opts(fd, &opts);
		if (r < 0) {
			close(fd);
			return err[0] ? r : fail(err, errlen, r, "socket options");
		}
		*ret = fd;
		return 0;
	}
	r = set_opts(fd, &opts);
	if (r < 0) {
		close(fd);
		return fail(err, errlen, r, "socket options");
	}
	/* Bound (port != 0) sockets get their address back. */
	if (s.local_len >= sizeof(struct sockaddr_in) &&
	    ((const struct sockaddr_in *)(const void *)s.local)->sin_port &&
	    bind(fd, (const struct sockaddr *)s.local, (socklen_t)s.local_len) < 0) {
		r = NEG_ERRNO();
		close(fd);
		return fail(err, errlen, r, "bind");
	}
	if (tcp && s.state == NET_SOCK_LISTEN && listen(fd, (int)CLAMP(backlog, 1u, 4096u)) < 0) {
		r = NEG_ERRNO();
		close(fd);
		return fail(err, errlen, r, "listen");
	}
	if (!tcp && s.state == NET_SOCK_CONNECTED &&
	    connect(fd, (const struct sockaddr *)s.remote, (socklen_t)s.remote_len) < 0) {
		r = NEG_ERRNO();
		close(fd);
		return fail(err, errlen, r, "connect");
	}
	*ret = fd;
	return 0;
}

int net_restore_socket(const struct ct_image_fd *rec, int netns_fd, int *ret_fd, char *err,
		       size_t errlen)
{
	switch (rec->type) {
	case CT_IMAGE_FD_UNIX:
		return restore_unix(rec, ret_fd, err, errlen);
	case CT_IMAGE_FD_TCP:
	case CT_IMAGE_FD_UDP:
		return restore_inet(rec, netns_fd, ret_fd, err, errlen);
	default:
		return fail(err, errlen, -EINVAL, "not a socket");
	}
}

/* ---- the network namespace's sysctls ---------------------------------------------------- */

struct sysctl_job {
	const struct ct_image_sysctl *s;
	size_t n;
	char *err;
	size_t errlen;
	size_t set; /* written */
};

/* Whether the sysctl reads value now; < 0 when it cannot be read. */
static int sysctl_is(int net_fd, const char *rel, const char *value)
{
	struct open_how how = {.flags = O_RDONLY | O_CLOEXEC,
			       .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS};
	_cleanup_close_ int fd = (int)syscall(SYS_openat2, net_fd, rel, &how, sizeof(how));
	char buf[CT_IMAGE_NET_SYSCTL_MAX + 2];
	size_t n = 0;

	if (fd < 0)
		return NEG_ERRNO();
	for (;;) {
		ssize_t k = read(fd, buf + n, sizeof(buf) - 1 - n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return NEG_ERRNO();
		if (k == 0)
			break;
		n += (size_t)k;
		if (n == sizeof(buf) - 1)
			return 0; /* longer than any value kept */
	}
	if (n > 0 && buf[n - 1] == '\n')
		n--;
	buf[n] = 0;
	return streq(buf, value);
}

static int sysctl_write(int net_fd, const char *rel, const char *value)
{
	struct open_how how = {.flags = O_WRONLY | O_CLOEXEC,
			       .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS};
	_cleanup_close_ int fd = (int)syscall(SYS_openat2, net_fd, rel, &how, sizeof(how));
	size_t n = strlen(value);
	ssize_t k;

	if (fd < 0)
		return NEG_ERRNO();
	k = write(fd, value, n);
	if (k < 0)
		return NEG_ERRNO();
	return (size_t)k == n ? 0 : -EIO;
}

/* In the new network namespace. A write may wait on another (ip_local_port_range must start
 * above ip_unprivileged_port_start) or change others (ip_forward sets every interface's
 * conf/.../forwarding). So each round reads every sysctl again and writes those that differ,
 * until one finds them all as the image has them; a round that writes nothing fails with its
 * first error, and one that never comes (writes undoing each other) fails too. */
#define SYSCTL_ROUNDS 8

static int sysctl_job_run(void *arg)
{
	struct sysctl_job *j = arg;
	_cleanup_close_ int net_fd = open("/proc/sys/net", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	const struct ct_image_sysctl *failed = NULL;
	int last = 0;

	if (net_fd < 0) {
		snprintf(j->err, j->errlen, "opening /proc/sys/net: %s", strerror(errno));
		return NEG_ERRNO();
	}
	for (unsigned round = 0; round < SYSCTL_ROUNDS; round++) {
		size_t written = 0;

		failed = NULL;
		for (size_t i = 0; i < j->n; i++) {
			const struct ct_image_sysctl *c = &j->s[i];
			const char *rel = c->name + strlen("net/");
			int r = sysctl_is(net_fd, rel, c->value);

			if (r == 0)
				r = sysctl_write(net_fd, rel, c->value);
			else if (r > 0)
				continue;
			if (r < 0) {
				if (!failed) {
					failed = c;
					last = r;
				}
				continue;
			}
			written++;
		}
		j->set += written;
		if (written == 0 && !failed)
			return 0;
		if (written == 0)
			break;
	}
	if (!failed) {
		snprintf(j->err, j->errlen, "its sysctls did not settle in %u rounds of writes",
			 SYSCTL_ROUNDS);
		return -ELOOP;
	}
	snprintf(j->err, j->errlen, "setting %s to '%s': %s", failed->name, failed->value,
		 strerror(-last));
	return last;
}

int net_restore_sysctls(int netns_fd, const struct ct_image_sysctl *s, size_t n, char *err,
			size_t errlen, size_t *ret_set)
{
	struct sysctl_job j = {.s = s, .n = n, .err = err, .errlen = errlen};
	bool joined;
	int r;

	err[0] = 0;
	*ret_set = 0;
	for (size_t i = 0; i < n; i++)
		if (!ct_image_net_sysctl_name_ok(s[i].name))
			return -EINVAL; /* the decoder refuses it first */
	r = ns_run(netns_fd, CLONE_NEWNET, sysctl_job_run, &j, &joined);
	if (r < 0 && !joined)
		snprintf(err, errlen, "joining its network namespace: %s", strerror(-r));
	*ret_set = j.set;
	return r;
}
