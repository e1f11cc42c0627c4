/* The control-socket client: one request line out, one validated reply line in, under a deadline,
 * and the mapping of every way that can fail to what the user reads and the exit status. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/json-util.h"
#include "common/log.h"
#include "migctl/migctl-internal.h"

usec_t migctl_deadline_after(usec_t timeout)
{
	usec_t now = now_usec(CLOCK_MONOTONIC);

	return timeout >= USEC_INFINITY - now ? USEC_INFINITY : now + timeout;
}

/* Waits until fd is ready for events or the deadline passes (-ETIMEDOUT). */
static int fd_wait(int fd, short events, usec_t deadline)
{
	for (;;) {
		struct pollfd p = {.fd = fd, .events = events};
		usec_t now = now_usec(CLOCK_MONOTONIC);
		int k, ms;

		if (now >= deadline)
			return -ETIMEDOUT;
		ms = deadline == USEC_INFINITY
			     ? -1
			     : (int)MIN((deadline - now + USEC_PER_MSEC - 1) / USEC_PER_MSEC,
					INT_MAX);
		k = poll(&p, 1, ms);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return NEG_ERRNO();
		}
		if (k > 0)
			return 0;
	}
}

int migctl_connect(const char *path, usec_t deadline, int *ret_fd)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	_cleanup_close_ int fd = -EBADF;
	size_t n = strlen(path);

	if (n == 0 || n >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, n);

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return NEG_ERRNO();
	log_debug("Connecting to %s.", path);
	for (;;) {
		struct timespec ts = {.tv_nsec = 10 * 1000 * 1000};

		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		if (errno == EINTR)
			continue;
		/* A non-blocking AF_UNIX connect fails with EAGAIN while the listen backlog is
		 * full, i.e. migrd is alive but slow to accept: keep trying until the deadline. */
		if (errno != EAGAIN)
			return NEG_ERRNO();
		if (now_usec(CLOCK_MONOTONIC) >= deadline)
			return -ETIMEDOUT;
		(void)nanosleep(&ts, NULL);
	}
	*ret_fd = TAKE_FD(fd);
	return 0;
}

int migctl_send_request(int fd, const char *method, json_t *params, usec_t deadline)
{
	_cleanup_json_ json_t *req = NULL;
	_cleanup_free_ char *text = NULL;
	size_t len, done = 0;

	/* "O" adds a reference to the caller's params, "o" hands over our fresh empty object. */
	if (params)
		req = json_pack("{s:I, s:s, s:O}", "id", (json_int_t)MIGCTL_REQUEST_ID, "method",
				method, "params", params);
	else
		req = json_pack("{s:I, s:s, s:o}", "id", (json_int_t)MIGCTL_REQUEST_ID, "method",
				method, "params", json_object());
	if (!req)
		return -ENOMEM;
	text = json_dumps(req, JSON_COMPACT);
	if (!text)
		return -ENOMEM;
	log_debug("Sending %s", text);
	len = strlen(text);
	text[len++] = '\n'; /* replaces the NUL: the buffer is sent by length */

	while (done < len) {
		/* MSG_NOSIGNAL: a daemon that hung up must give us EPIPE, not kill us. */
		ssize_t k = send(fd, text + done, len - done, MSG_NOSIGNAL);
		int r;

		if (k >= 0) {
			done += (size_t)k;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EPIPE || errno == ECONNRESET)
			return -ECONNRESET;
		if (errno != EAGAIN)
			return NEG_ERRNO();
		r = fd_wait(fd, POLLOUT, deadline);
		if (r < 0)
			return r;
	}
	return 0;
}

int migctl_read_reply(int fd, size_t max, usec_t deadline, char **ret_line, size_t *ret_len)
{
	_cleanup_free_ char *buf = NULL;
	/* A line of max bytes plus its newline, plus room for our NUL. */
	size_t limit = max + 1, size = 0, alloc = 0;

	for (;;) {
		ssize_t k;
		char *nl;
		int r;

		if (size >= limit)
			return -EMSGSIZE;
		if (alloc - size < 4096 && alloc < limit + 1) {
			size_t na = MIN(MAX(alloc * 2, (size_t)16384), limit + 1);
			char *nb = realloc(buf, na);

			if (!nb)
				return -ENOMEM;
			buf = nb;
			alloc = na;
		}
		k = read(fd, buf + size, MIN(alloc - 1, limit) - size);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			if (errno == ECONNRESET)
				return -ECONNRESET;
			if (errno != EAGAIN)
				return NEG_ERRNO();
			r = fd_wait(fd, POLLIN, deadline);
			if (r < 0)
				return r;
			continue;
		}
		if (k == 0)
			return -ECONNRESET; /* EOF before a complete line */
		nl = memchr(buf + size, '\n', (size_t)k);
		size += (size_t)k;
		if (nl) {
			/* Anything after the newline is not ours: one request, one reply. */
			*nl = 0;
			*ret_len = (size_t)(nl - buf);
			log_debug("Received a %zu byte reply.", *ret_len);
			*ret_line = TAKE_PTR(buf);
			return 0;
		}
	}
}

int migctl_reply_parse(const char *line, size_t len, json_int_t id, json_t **ret_reply)
{
	_cleanup_json_ json_t *reply = NULL;
	json_t *jid, *ok, *error, *v;
	json_error_t e;

	reply = json_loadb(line, len, JSON_REJECT_DUPLICATES, &e);
	if (!reply)
		return log_debug_errno(EBADMSG, "Reply is not JSON: %s (column %d).", e.text,
				       e.column);
	if (!json_is_object(reply))
		return log_debug_errno(EBADMSG, "Reply is not a JSON object.");

	ok = json_object_get(reply, "ok");
	error = json_object_get(reply, "error");
	if (!ok == !error)
		return log_debug_errno(EBADMSG,
				       "Reply must carry exactly one of \"ok\" and \"error\".");

	/* migrd answers an id of null only when it could not read ours, and then only with an
	 * error (e.g. permission-denied sent before it reads anything). */
	jid = json_object_get(reply, "id");
	if (!jid)
		return log_debug_errno(EBADMSG, "Reply has no \"id\".");
	if (json_is_null(jid)) {
		if (!error)
			return log_debug_errno(EBADMSG, "Successful reply with a null \"id\".");
	} else if (!json_is_integer(jid) || json_integer_value(jid) != id)
		return log_debug_errno(
			EBADMSG,
			"Reply \"id\" does not match the request's %" JSON_INTEGER_FORMAT ".", id);

	if (ok && !json_is_object(ok))
		return log_debug_errno(EBADMSG, "Reply \"ok\" is not an object.");
	if (error) {
		if (!json_is_object(error))
			return log_debug_errno(EBADMSG, "Reply \"error\" is not an object.");
		v = json_object_get(error, "code");
		if (!json_is_string(v) || json_string_length(v) == 0)
			return log_debug_errno(EBADMSG, "Reply \"error\" has no \"code\" string.");
		v = json_object_get(error, "message");
		if (v && !json_is_string(v))
			return log_debug_errno(EBADMSG, "Reply error \"message\" is not a string.");
	}
	*ret_reply = TAKE_PTR(reply);
	return 0;
}

int migctl_call(const struct migctl *m, const char *method, json_t *params, json_t **ret_reply)
{
	usec_t deadline = migctl_deadline_after(m->timeout);
	_cleanup_close_ int fd = -EBADF;
	_cleanup_free_ char *line = NULL;
	size_t len;
	int r, r_send;

	r = migctl_connect(m->socket_path, deadline, &fd);
	if (r < 0)
		return r;
	r_send = migctl_send_request(fd, method, params, deadline);
	/* A daemon that hung up on us may have said why first (permission-denied is sent before
	 * the request is read): that reply is more useful than "connection closed". */
	if (r_send < 0 && r_send != -ECONNRESET)
		return r_send;
	r = migctl_read_reply(fd, m->reply_max, deadline, &line, &len);
	if (r < 0)
		return r_send < 0 ? r_send : r;
	return migctl_reply_parse(line, len, MIGCTL_REQUEST_ID, ret_reply);
}

int migctl_report_error(const struct migctl *m, int error)
{
	char buf[64];

	switch (error) {
	case -ENOENT:
		fprintf(m->err,
			"migctl: cannot connect to migrd: %s does not exist (is migrd running?)\n",
			m->socket_path);
		return MIGCTL_EXIT_UNAVAILABLE;
	case -ECONNREFUSED:
		fprintf(m->err,
			"migctl: cannot connect to migrd: connection refused on %s (is migrd "
			"running?)\n",
			m->socket_path);
		return MIGCTL_EXIT_UNAVAILABLE;
	case -EACCES:
	case -EPERM:
		fprintf(m->err,
			"migctl: permission denied on %s: migctl must run as root or a member of "
			"group 'migrd'\n",
			m->socket_path);
		return MIGCTL_EXIT_UNAVAILABLE;
	case -ECONNRESET:
		fputs("migctl: migrd closed the connection without a complete reply\n", m->err);
		return MIGCTL_EXIT_UNAVAILABLE;
	case -ETIMEDOUT:
		fprintf(m->err, "migctl: no reply from migrd within %s (see --timeout)\n",
			format_duration(buf, sizeof(buf), m->timeout));
		return MIGCTL_EXIT_UNAVAILABLE;
	case -EMSGSIZE:
		fprintf(m->err, "migctl: migrd sent a malformed reply (longer than %s)\n",
			format_bytes(buf, sizeof(buf), m->reply_max));
		return MIGCTL_EXIT_UNAVAILABLE;
	case -EBADMSG:
		fputs("migctl: migrd sent a malformed reply\n", m->err);
		return MIGCTL_EXIT_UNAVAILABLE;
	case -ENOMEM:
		fputs("migctl: out of memory\n", m->err);
		return MIGCTL_EXIT_FAILURE;
	default:
		fprintf(m->err, "migctl: cannot talk to migrd on %s: %s\n", m->socket_path,
			strerror(ERRNO_VALUE(error)));
		return MIGCTL_EXIT_UNAVAILABLE;
	}
}

int migctl_reply_result(const struct migctl *m, json_t *reply, json_t **ret_result)
{
	const char *code = NULL, *message = NULL;
	json_t *error = json_object_get(reply, "error");

	if (error) {
		if (m->json)
			(void)migctl_print_json(m, error);
		/* migctl_reply_parse() checked the types. */
		(void)json_get_string(error, "code", &code);
		(void)json_get_string(error, "message", &message);
		fputs("migctl: ", m->err);
		fputs_printable(strempty(message) ? code : message, m->err);
		fputs(" (", m->err);
		fputs_printable(code, m->err);
		fputs(")\n", m->err);
		if (streq(code, "permission-denied"))
			fputs("migctl: migrd accepts only root and members of group 'migrd'\n",
			      m->err);
		return MIGCTL_EXIT_FAILURE;
	}
	*ret_result = json_object_get(reply, "ok");
	return MIGCTL_EXIT_OK;
}

int migctl_request(const struct migctl *m, const char *method, json_t *params, json_t **ret_reply,
		   json_t **ret_result)
{
	_cleanup_json_ json_t *reply = NULL;
	int r;

	r = migctl_call(m, method, params, &reply);
	if (r < 0)
		return migctl_report_error(m, r);
	r = migctl_reply_result(m, reply, ret_result);
	if (r == MIGCTL_EXIT_OK)
		*ret_reply = TAKE_PTR(reply);
	return r;
}

int migctl_print_json(const struct migctl *m, json_t *j)
{
	int fd = fileno(m->out);
	size_t flags = JSON_ENCODE_ANY | (fd >= 0 && isatty(fd) ? JSON_INDENT(2) : JSON_COMPACT);

	if (json_dumpf(j, m->out, flags) < 0 || fputc('\n', m->out) == EOF) {
		fputs("migctl: failed to write JSON output\n", m->err);
		return MIGCTL_EXIT_FAILURE;
	}
	return MIGCTL_EXIT_OK;
}
