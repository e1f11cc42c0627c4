/* The control socket server: accept, check the caller, read lines, dispatch, write replies. */
#include <errno.h>
#include <grp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/common.h"
#include "migrd/control.h"

#define CONTROL_READ_CHUNK	65536
#define CONTROL_OUT_HIGH	(1024 * 1024)	   /* stop reading a client whose replies pile up */
#define CONTROL_OUT_MAX		(64 * 1024 * 1024) /* then give up on it */
#define CONTROL_PARTIAL_TIMEOUT (30 * USEC_PER_SEC)

struct control_client {
	struct control_server *server;
	struct control_client *next, *prev;
	int fd;
	sd_event_source *io;
	uid_t uid;
	pid_t pid;
	char *in;
	size_t in_len, in_alloc;
	char *out;
	size_t out_len, out_off, out_alloc;
	usec_t partial_since; /* when an incomplete line started arriving, 0 when none */
	struct control_request *pending;
	bool eof;	  /* the peer closed its side */
	bool close_after; /* close once the output is flushed */
};

struct control_request {
	struct control_client *client; /* NULL once the client went away */
	struct control_server *server;
	json_t *id;
	char *method;
	/* error set by control_request_error() */
	const char *err_code;
	char *err_message;
};

struct control_server {
	sd_event *event;
	sd_event_source *listen_source;
	sd_event_source *timer;
	int listen_fd;
	gid_t group;
	struct control_limits limits;
	const struct control_method *methods;
	size_t n_methods;
	void *userdata;
	struct control_client *clients;
	unsigned n_clients;
	unsigned n_inflight;
};

static void client_free(struct control_client *c);
static void client_process(struct control_client *c);
static int client_update_events(struct control_client *c);

int control_listen(const char *path, const char *group, int *ret_fd, gid_t *ret_gid)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	_cleanup_close_ int fd = -EBADF;
	_cleanup_free_ char *dir = NULL;
	struct group *gr = group ? getgrnam(group) : NULL;
	gid_t gid = gr ? gr->gr_gid : 0;
	char *slash;
	int r;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strscpy(sa.sun_path, path, sizeof(sa.sun_path));
	dir = strdup(path);
	if (!dir)
		return -ENOMEM;
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = 0;
		r = mkdir_p(dir, 0755);
		if (r < 0)
			return r;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return NEG_ERRNO();
	(void)unlink(path);
	/* Bind with a restrictive umask so the socket is never briefly open to everyone. */
	mode_t old = umask(0177);
	r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r < 0)
		return NEG_ERRNO();
	if (chown(path, 0, gid) < 0 || chmod(path, gid ? 0660 : 0600) < 0)
		return NEG_ERRNO();
	if (listen(fd, 64) < 0)
		return NEG_ERRNO();
	*ret_fd = TAKE_FD(fd);
	*ret_gid = gid;
	return 0;
}

static int buf_append(char **buf, size_t *len, size_t *alloc, const char *data, size_t n)
{
	if (*len + n > *alloc) {
		size_t na = MAX(*alloc * 2, *len + n);
		char *nb = realloc(*buf, na);
		if (!nb)
			return -ENOMEM;
		*buf = nb;
		*alloc = na;
	}
	memcpy(*buf + *len, data, n);
	*len += n;
	return 0;
}

static int client_flush(struct control_client *c)
{
	while (c->out_off < c->out_len) {
		ssize_t k = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return 0;
			return NEG_ERRNO();
		}
		c->out_off += (size_t)k;
	}
	c->out_off = c->out_len = 0;
	return 0;
}

static void client_send(struct control_client *c, json_t *reply)
{
	_cleanup_free_ char *text = json_dumps(reply, JSON_COMPACT | JSON_ENSURE_ASCII);
	int r;

	if (!text || buf_append(&c->out, &c->out_len, &c->out_alloc, text, strlen(text)) < 0 ||
	    buf_append(&c->out, &c->out_len, &c->out_alloc, "\n", 1) < 0) {
		log_oom();
		c->close_after = true;
		return;
	}
	if (c->out_len - c->out_off > CONTROL_OUT_MAX) {
		log_warning("Control client (pid %d) does not read its replies, disconnecting",
			    (int)c->pid);
		c->close_after = true;
		c->out_len = c->out_off = 0;
		return;
	}
	r = client_flush(c);
	if (r < 0) {
		log_debug_errno(r, "Control client write failed: %m");
		c->close_after = true;
		c->out_len = c->out_off = 0;
	}
}

static void send_error(struct control_client *c, json_t *id, const char *code, const char *msg)
{
	_cleanup_json_ json_t *reply =
		json_pack("{s:O?,s:{s:s,s:s}}", "id", id, "error", "code", code, "message", msg);
	if (reply)
		client_send(c, reply);
}

static void request_free(struct control_request *req)
{
	if (!req)
		return;
	json_decref(req->id);
	free(req->method);
	free(req->err_message);
	free(req);
}

static void request_finish(struct control_request *req, json_t *result, const char *code,
			   const char *message)
{
	struct control_client *c = req->client;

	if (c) {
		json_t *reply;

		if (code)
			reply = json_pack("{s:O?,s:{s:s,s:s}}", "id", req->id, "error", "code",
					  code, "message", message ?: code);
		else
			reply = json_pack("{s:O?,s:O}", "id", req->id, "ok", result);
		if (reply)
			client_send(c, reply);
		else
			send_error(c, req->id, "internal", "Failed to build the reply.");
		json_decref(reply);
		c->pending = NULL;
	}
	request_free(req);
	if (c) {
		/* Next pipelined request, and a close if the client already left. */
		client_process(c);
	}
}

int control_request_error(struct control_request *req, int error, const char *code,
			  const char *format, ...)
{
	va_list ap;

	free(req->err_message);
	req->err_message = NULL;
	req->err_code = code;
	errno = ERRNO_VALUE(error);
	va_start(ap, format);
	if (vasprintf(&req->err_message, format, ap) < 0)
		req->err_message = NULL;
	va_end(ap);
	return -ERRNO_VALUE(error ?: EINVAL);
}

void control_request_reply(struct control_request *req, json_t *result)
{
	req->server->n_inflight--;
	request_finish(req, result, NULL, NULL);
	json_decref(result);
}

void control_request_fail(struct control_request *req, const char *code, const char *message)
{
	req->server->n_inflight--;
	request_finish(req, NULL, code, message);
}

uid_t control_request_uid(struct control_request *req)
{
	return req->client ? req->client->uid : (uid_t)-1;
}

int control_parse_request(const char *line, size_t len, struct control_parsed *ret,
			  const char **ret_code, char *ret_message, size_t message_size)
{
	_cleanup_json_ json_t *j = NULL;
	json_t *id, *params;
	const char *method;
	json_error_t err;

	*ret = (struct control_parsed){0};
	j = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);
	if (!j) {
		*ret_code = "parse-error";
		snprintf(ret_message, message_size, "Request is not valid JSON: %s (column %d).",
			 err.text, err.column);
		return -EINVAL;
	}
	id = json_is_object(j) ? json_object_get(j, "id") : NULL;
	if (id && (json_is_integer(id) || json_is_string(id)))
		ret->id = json_incref(id);
	if (!json_is_object(j) || json_get_string(j, "method", &method) < 0) {
		*ret_code = "invalid-request";
		snprintf(ret_message, message_size,
			 "A request is an object with a string 'method'.");
		return -EINVAL;
	}
	params = json_object_get(j, "params");
	if (params && !json_is_object(params) && !json_is_null(params)) {
		*ret_code = "invalid-request";
		snprintf(ret_message, message_size, "'params' must be an object.");
		return -EINVAL;
	}
	ret->method = strdup(method);
	ret->params = json_is_object(params) ? json_incref(params) : json_object();
	if (!ret->method || !ret->params) {
		control_parsed_done(ret);
		*ret_code = "internal";
		snprintf(ret_message, message_size, "Out of memory.");
		return -ENOMEM;
	}
	return 0;
}

void control_parsed_done(struct control_parsed *p)
{
	json_decref(p->id);
	json_decref(p->params);
	free(p->method);
	*p = (struct control_parsed){0};
}

static void handle_line(struct control_client *c, const char *line, size_t len)
{
	struct control_server *s = c->server;
	_cleanup_(control_parsed_done) struct control_parsed p = {0};
	_cleanup_json_ json_t *result = NULL;
	struct control_request *req;
	const struct control_method *m = NULL;
	const char *code;
	json_t *id;
	char msg[256];
	int r;

	r = control_parse_request(line, len, &p, &code, msg, sizeof(msg));
	id = p.id;
	if (r < 0) {
		send_error(c, id, code, msg);
		return;
	}
	for (size_t i = 0; i < s->n_methods; i++)
		if (streq(s->methods[i].name, p.method))
			m = &s->methods[i];
	if (!m) {
		snprintf(msg, sizeof(msg), "Unknown method '%.64s'.", p.method);
		send_error(c, id, "unknown-method", msg);
		return;
	}
	if (s->n_inflight >= s->limits.max_inflight) {
		send_error(c, id, "busy", "Too many requests in flight; retry later.");
		return;
	}

	req = calloc(1, sizeof(*req));
	if (!req || !(req->method = strdup(p.method))) {
		free(req);
		send_error(c, id, "internal", "Out of memory.");
		return;
	}
	req->client = c;
	req->server = s;
	req->id = json_incref(id);
	c->pending = req;
	s->n_inflight++;

	r = m->handler(req, p.params, s->userdata, &result);
	if (r == CONTROL_REPLY_LATER)
		return; /* the handler owns req now */
	s->n_inflight--;
	if (r < 0) {
		if (!req->err_code) {
			req->err_code = "internal";
			free(req->err_message);
			req->err_message = strdup(strerror(ERRNO_VALUE(r)));
		}
		c->pending = NULL;
		send_error(c, id, req->err_code, req->err_message ?: req->err_code);
		request_free(req);
		return;
	}
	c->pending = NULL;
	_cleanup_json_ json_t *reply =
		json_pack("{s:O?,s:O}", "id", id, "ok", result ?: json_null());
	if (reply)
		client_send(c, reply);
	request_free(req);
}

static bool client_done(struct control_client *c)
{
	if (c->pending)
		return false;
	return (c->close_after || c->eof) && c->out_len == c->out_off;
}

/* Handles complete lines while no request is outstanding (replies stay in order). */
static void client_process(struct control_client *c)
{
	struct control_server *s = c->server;

	while (!c->pending && !c->close_after && c->out_len - c->out_off < CONTROL_OUT_HIGH) {
		char *nl = memchr(c->in, '\n', c->in_len);
		size_t used;

		if (!nl)
			break;
		used = (size_t)(nl - c->in) + 1;
		if (used > s->limits.max_request)
			break; /* handled below as too large */
		handle_line(c, c->in, used - 1);
		memmove(c->in, c->in + used, c->in_len - used);
		c->in_len -= used;
	}
	if (!c->pending && !c->close_after) {
		char *nl = memchr(c->in, '\n', c->in_len);
		size_t line = nl ? (size_t)(nl - c->in) + 1 : c->in_len;

		if (line > s->limits.max_request || (!nl && c->in_len >= s->limits.max_request)) {
			char msg[128];
			snprintf(msg, sizeof(msg), "Request larger than %zu bytes.",
				 s->limits.max_request);
			send_error(c, NULL, "request-too-large", msg);
			c->close_after = true;
			c->in_len = 0;
		}
	}
	c->partial_since =
		c->in_len > 0 && !c->pending ? (c->partial_since ?: now_usec(CLOCK_MONOTONIC)) : 0;
	if (client_done(c)) {
		client_free(c);
		return;
	}
	if (client_update_events(c) < 0)
		client_free(c);
}

static int client_read(struct control_client *c)
{
	size_t cap = c->server->limits.max_request + 1;

	while (c->in_len < cap) {
		ssize_t k;

		if (c->in_alloc - c->in_len < CONTROL_READ_CHUNK) {
			size_t na = MIN(MAX(c->in_alloc * 2, c->in_len + CONTROL_READ_CHUNK),
					cap + CONTROL_READ_CHUNK);
			char *nb = realloc(c->in, na);
			if (!nb)
				return -ENOMEM;
			c->in = nb;
			c->in_alloc = na;
		}
		k = recv(c->fd, c->in + c->in_len, c->in_alloc - c->in_len, MSG_DONTWAIT);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return 0;
			return NEG_ERRNO();
		}
		if (k == 0) {
			c->eof = true;
			return 0;
		}
		c->in_len += (size_t)k;
		/* Stop early once a line is complete: a flood after it waits for its turn. */
		if (memchr(c->in + c->in_len - k, '\n', (size_t)k))
			return 0;
	}
	return 0;
}

static int client_io(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
	struct control_client *c = userdata;
	int r;

	if (revents & EPOLLOUT) {
		r = client_flush(c);
		if (r < 0) {
			client_free(c);
			return 0;
		}
	}
	if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
		r = client_read(c);
		if (r < 0) {
			log_debug_errno(r, "Control client read failed: %m");
			c->eof = true;
			c->close_after = true;
		}
	}
	client_process(c);
	return 0;
}

static int client_update_events(struct control_client *c)
{
	uint32_t ev = 0;
	int r;

	/* Read only when we would process the input: keeps a flooding client from growing us. */
	if (!c->eof && !c->close_after && !c->pending &&
	    c->out_len - c->out_off < CONTROL_OUT_HIGH &&
	    c->in_len <= c->server->limits.max_request)
		ev |= EPOLLIN;
	if (c->out_len > c->out_off)
		ev |= EPOLLOUT;
	if (ev == 0 && c->eof && !c->pending)
		return -ECONNRESET;
	/* epoll reports hang-ups even with an empty mask: switch the source off instead. */
	if (ev == 0)
		return sd_event_source_set_enabled(c->io, SD_EVENT_OFF);
	r = sd_event_source_set_io_events(c->io, ev);
	if (r < 0)
		return r;
	return sd_event_source_set_enabled(c->io, SD_EVENT_ON);
}

static void client_free(struct control_client *c)
{
	struct control_server *s;

	if (!c)
		return;
	s = c->server;
	if (c->pending)
		c->pending->client = NULL; /* its handler finishes into the void */
	sd_event_source_disable_unref(c->io);
	safe_close(c->fd);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->n_clients--;
	free(c->in);
	free(c->out);
	free(c);
}

static bool caller_allowed(int fd, gid_t group, uid_t *ret_uid, pid_t *ret_pid)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	gid_t groups[256];
	socklen_t glen = sizeof(groups);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return false;
	*ret_uid = cred.uid;
	*ret_pid = cred.pid;
	if (cred.uid == 0)
		return true;
	if (group == 0)
		return false;
	if (cred.gid == group)
		return true;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &glen) < 0)
		return false;
	for (size_t i = 0; i < glen / sizeof(gid_t); i++)
		if (groups[i] == group)
			return true;
	return false;
}

/* Says why, best effort, then closes: for callers we will not serve. */
static void refuse(int fd, const char *code, const char *message)
{
	char line[512];
	int n = snprintf(line, sizeof(line),
			 "{\"id\":null,\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}\n", code,
			 message);
	(void)!send(fd, line, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
	safe_close(fd);
}

static int on_accept(sd_event_source *source, int lfd, uint32_t revents, void *userdata)
{
	struct control_server *s = userdata;

	for (unsigned i = 0; i < 16; i++) {
		struct control_client *c;
		uid_t uid = (uid_t)-1;
		pid_t pid = 0;
		int fd, r;

		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR)
				log_warning_errno(errno, "Failed to accept control connection: %m");
			return 0;
		}
		if (!caller_allowed(fd, s->group, &uid, &pid)) {
			log_notice(
				"Refused control connection from uid %d pid %d: not root and not "
				"in the control group",
				(int)uid, (int)pid);
			refuse(fd, "permission-denied",
			       "Only root and members of the migrd group may use this socket.");
			continue;
		}
		if (s->n_clients >= s->limits.max_clients) {
			log_warning("Refused control connection: %u clients already connected",
				    s->n_clients);
			refuse(fd, "busy", "Too many control connections; retry later.");
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			safe_close(fd);
			return log_oom();
		}
		c->server = s;
		c->fd = fd;
		c->uid = uid;
		c->pid = pid;
		r = sd_event_add_io(s->event, &c->io, fd, EPOLLIN, client_io, c);
		if (r < 0) {
			safe_close(fd);
			free(c);
			return log_error_errno(r, "Failed to watch control connection: %m");
		}
		c->next = s->clients;
		if (s->clients)
			s->clients->prev = c;
		s->clients = c;
		s->n_clients++;
	}
	return 0;
}

/* Drops clients that started a request and stopped sending mid-line. */
static int on_timer(sd_event_source *source, uint64_t usec, void *userdata)
{
	struct control_server *s = userdata;
	usec_t now = now_usec(CLOCK_MONOTONIC);

	for (struct control_client *c = s->clients, *next; c; c = next) {
		next = c->next;
		if (c->partial_since && now - c->partial_since > CONTROL_PARTIAL_TIMEOUT) {
			log_info("Dropping control client (pid %d): incomplete request for %llus",
				 (int)c->pid,
				 (unsigned long long)(CONTROL_PARTIAL_TIMEOUT / USEC_PER_SEC));
			client_free(c);
		}
	}
	sd_event_source_set_time(source, now + 5 * USEC_PER_SEC);
	return 0;
}

int control_server_new(sd_event *e, int listen_fd, gid_t group, const struct control_limits *limits,
		       const struct control_method *methods, size_t n_methods, void *userdata,
		       struct control_server **ret)
{
	struct control_server *s = calloc(1, sizeof(*s));
	int r;

	if (!s)
		return -ENOMEM;
	s->event = sd_event_ref(e);
	s->listen_fd = listen_fd;
	s->group = group;
	s->limits = *limits;
	s->methods = methods;
	s->n_methods = n_methods;
	s->userdata = userdata;
	r = sd_event_add_io(e, &s->listen_source, listen_fd, EPOLLIN, on_accept, s);
	if (r >= 0)
		r = sd_event_add_time(e, &s->timer, CLOCK_MONOTONIC,
				      now_usec(CLOCK_MONOTONIC) + 5 * USEC_PER_SEC, USEC_PER_SEC,
				      on_timer, s);
	if (r >= 0)
		r = sd_event_source_set_enabled(s->timer, SD_EVENT_ON);
	if (r < 0) {
		control_server_free(s);
		return r;
	}
	*ret = s;
	return 0;
}

struct control_server *control_server_free(struct control_server *s)
{
	if (!s)
		return NULL;
	while (s->clients)
		client_free(s->clients);
	sd_event_source_disable_unref(s->listen_source);
	sd_event_source_disable_unref(s->timer);
	safe_close(s->listen_fd);
	sd_event_unref(s->event);
	free(s);
	return NULL;
}

unsigned control_server_n_clients(struct control_server *s)
{
	return s->n_clients;
}
