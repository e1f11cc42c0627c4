/* The control socket: newline-delimited JSON requests from migctl, checked callers, capped
 * resources, replies in order (see docs/control-api.md). */
#pragma once

#include <jansson.h>
#include <stddef.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

struct control_server;
struct control_request;

struct control_limits {
	size_t max_request;    /* bytes per request line, newline included */
	unsigned max_clients;  /* connections at once */
	unsigned max_inflight; /* requests being worked on (answered later) at once */
};

enum {
	CONTROL_REPLY_NOW = 0,	 /* the handler filled *ret_result */
	CONTROL_REPLY_LATER = 1, /* the handler keeps req and answers with control_request_*() */
};

/* A handler returns CONTROL_REPLY_NOW/LATER, or a negative errno after control_request_error()
 * (or, with no error set, an "internal" error is sent with the errno's text). */
typedef int (*control_handler_t)(struct control_request *req, json_t *params, void *userdata,
				 json_t **ret_result);

struct control_method {
	const char *name;
	control_handler_t handler;
};

/* One request line, parsed and checked (the pure part of the server, fuzzed). */
struct control_parsed {
	json_t *id; /* integer or string, or NULL */
	char *method;
	json_t *params; /* always an object */
};
/* On failure, *ret_code is a stable error code and ret_message says why; ret->id may still
 * be set (to echo it in the error). */
int control_parse_request(const char *line, size_t len, struct control_parsed *ret,
			  const char **ret_code, char *ret_message, size_t message_size);
void control_parsed_done(struct control_parsed *p);

/* Creates the listening socket at path (mode 0660, group `group` if it exists, else root only),
 * or uses *inherited_fd from socket activation when >= 0. */
int control_listen(const char *path, const char *group, int *ret_fd, gid_t *ret_gid);

int control_server_new(sd_event *e, int listen_fd, gid_t group, const struct control_limits *limits,
		       const struct control_method *methods, size_t n_methods, void *userdata,
		       struct control_server **ret);
struct control_server *control_server_free(struct control_server *s);
unsigned control_server_n_clients(struct control_server *s);

/* For handlers: an error with a stable code (docs/control-api.md) and a message. */
int control_request_error(struct control_request *req, int error, const char *code,
			  const char *format, ...) __attribute__((format(printf, 4, 5)));
/* Completes a request that returned CONTROL_REPLY_LATER. Takes the result reference. */
void control_request_reply(struct control_request *req, json_t *result);
void control_request_fail(struct control_request *req, const char *code, const char *message);
uid_t control_request_uid(struct control_request *req);
