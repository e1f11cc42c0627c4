/* migctl's internals shared by the verbs and the unit tests: options, the control-socket client,
 * output helpers and the verb entry points. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <sysexits.h>

#include "common/util.h"

#define MIGCTL_SOCKET_DEFAULT  "/run/migrd/control.sock"
#define MIGCTL_TIMEOUT_DEFAULT (10 * USEC_PER_SEC)
/* A reply is one line; this bounds what a broken daemon can make us allocate. */
#define MIGCTL_REPLY_MAX ((size_t)64 << 20)
/* We send one request per connection, so a fixed id is enough to match the reply. */
#define MIGCTL_REQUEST_ID 1

/* Process exit statuses, documented in migctl(8). */
enum {
	MIGCTL_EXIT_OK = 0,
	MIGCTL_EXIT_FAILURE = 1, /* migrd answered with an error (or a local failure) */
	MIGCTL_EXIT_USAGE = 2,
	/* migrd unreachable, silent, or not speaking the protocol */
	MIGCTL_EXIT_UNAVAILABLE = EX_UNAVAILABLE,
};

/* Parsed global options and where output goes; a verb gets it and nothing global. */
struct migctl {
	const char *socket_path;
	usec_t timeout;
	size_t reply_max;
	bool json;
	FILE *out;
	FILE *err;
};

/* ---- client.c: the control socket -------------------------------------------------------- */

/* Each returns 0 or -errno; deadline is CLOCK_MONOTONIC in usec. Distinct errors the caller maps
 * to messages: -ENOENT/-ECONNREFUSED/-EACCES (connect), -ECONNRESET (migrd closed the
 * connection), -ETIMEDOUT, -EMSGSIZE (reply over max), -EBADMSG (malformed reply). */
/* CLOCK_MONOTONIC now + timeout, saturating. */
usec_t migctl_deadline_after(usec_t timeout);
int migctl_connect(const char *path, usec_t deadline, int *ret_fd);
int migctl_send_request(int fd, const char *method, json_t *params, usec_t deadline);
int migctl_read_reply(int fd, size_t max, usec_t deadline, char **ret_line, size_t *ret_len);
/* Pure: validates one reply line for request id; the reply has exactly one of "ok" and
 * "error", the latter an object with a string "code". */
int migctl_reply_parse(const char *line, size_t len, json_int_t id, json_t **ret_reply);
/* Connects, sends, reads and validates: the whole round trip under m->timeout. */
int migctl_call(const struct migctl *m, const char *method, json_t *params, json_t **ret_reply);

/* Tells the user what a -errno from the functions above (or a -EBADMSG from a *_print()) means
 * and returns the exit status for it. */
int migctl_report_error(const struct migctl *m, int error);
/* The round trip as a verb needs it. Returns an exit status: 0 with *ret_result borrowed from
 * *ret_reply, or nonzero after telling the user what went wrong (and, with --json, printing
 * migrd's error object). */
int migctl_request(const struct migctl *m, const char *method, json_t *params, json_t **ret_reply,
		   json_t **ret_result);
/* A parsed reply: MIGCTL_EXIT_OK with *ret_result borrowed from reply, or the error told to the
 * user (and printed as JSON with --json) and MIGCTL_EXIT_FAILURE. */
int migctl_reply_result(const struct migctl *m, json_t *reply, json_t **ret_result);
/* Prints a JSON document on m->out: indented on a terminal, one line otherwise. */
int migctl_print_json(const struct migctl *m, json_t *j);

/* ---- migctl.c: argument handling shared by verbs ------------------------------------------- */

/* Print "migctl: <message>" and a pointer to --help (of verb, when given); return 2. */
int migctl_usage_error(const struct migctl *m, const char *verb, const char *format, ...)
	_printf_(3, 4);
/* For getopt_long()'s '?' and ':' results; return 2. */
int migctl_option_error(const struct migctl *m, const char *verb, int c, char **argv);
/* For verbs that take no arguments besides -h/--help. Returns an exit status; *ret_done is set
 * when the verb should return it right away (help printed or a usage error). */
int migctl_parse_verb_args(const struct migctl *m, int argc, char **argv, const char *verb,
			   const char *help, bool *ret_done);

/* ---- output.c: tables and value formatting ----------------------------------------------- */

struct table_column {
	const char *header;
	bool right; /* right-align (numbers) */
};

struct table;
struct table *table_new(const struct table_column *columns, size_t n_columns);
struct table *table_free(struct table *t);
/* Copies n_columns cells; NULL cells print as "-". Control characters become '?'. */
int table_add_row(struct table *t, const char *const *cells);
int table_print(const struct table *t, FILE *f);

static inline void table_freep(struct table **t)
{
	table_free(*t);
}
#define _cleanup_table_ __attribute__((cleanup(table_freep)))

/* Each writes into buf (always NUL-terminated) and returns buf; "-" when the value is absent,
 * null or of the wrong type, so one odd field never hides the rest of a reply. */
char *format_json_string(char *buf, size_t len, json_t *v);
char *format_json_integer(char *buf, size_t len, json_t *v);
char *format_json_number(char *buf, size_t len, json_t *v, int decimals);
char *format_json_bool(char *buf, size_t len, json_t *v);
char *format_json_bytes(char *buf, size_t len, json_t *v);
/* "1.2G" rather than "1.2GiB": for tight columns. */
char *format_bytes_short(char *buf, size_t len, uint64_t bytes);
/* "45s", "3m 20s", "5h 2m", "12d 4h". */
char *format_uptime(char *buf, size_t len, double seconds);
/* Writes s with control characters replaced by '?': daemon text must not drive the terminal. */
void fputs_printable(const char *s, FILE *f);
struct key_value {
	const char *key;
	const char *value; /* NULL prints as "-" */
};
/* Prints "key: value" lines with the keys right-aligned, like `wg show`. */
void print_key_values(FILE *f, const struct key_value *rows, size_t n);

/* ---- verbs: one file each; each returns an exit status ------------------------------------ */

int verb_status(const struct migctl *m, int argc, char **argv);
int verb_hosts(const struct migctl *m, int argc, char **argv);
int verb_list(const struct migctl *m, int argc, char **argv);
int verb_version(const struct migctl *m, int argc, char **argv);
int verb_ca(const struct migctl *m, int argc, char **argv);
int verb_peer_test(const struct migctl *m, int argc, char **argv);
int verb_run(const struct migctl *m, int argc, char **argv);
int verb_checkpoint(const struct migctl *m, int argc, char **argv);
int verb_restore(const struct migctl *m, int argc, char **argv);
int verb_vm(const struct migctl *m, int argc, char **argv);
int verb_move(const struct migctl *m, int argc, char **argv);
int verb_logs(const struct migctl *m, int argc, char **argv);
int verb_stop(const struct migctl *m, int argc, char **argv);
int verb_rm(const struct migctl *m, int argc, char **argv);
int verb_image(const struct migctl *m, int argc, char **argv);
int peer_test_print(FILE *f, json_t *result);

/* The text renderings, separate from the round trip so tests can feed canned results. */
int status_print(FILE *f, json_t *result);
int hosts_print(FILE *f, json_t *result);
int list_print(FILE *f, json_t *result);
