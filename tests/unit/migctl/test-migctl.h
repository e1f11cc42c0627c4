/* Shared by the migctl unit tests: running migctl in-process and loading canned replies. */
#pragma once

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* What a user sees of one migctl invocation. */
struct run_result {
	int status;
	char *out;
	char *err;
};

/* Runs migctl_main() with argv = {"migctl", args..., NULL}; the argument list ends with NULL. */
void run_migctl(struct run_result *ret, ...);
void run_result_done(struct run_result *r);

/* A reply from replies/NAME.json: the whole reply as one line ending in "\n" (malloc'd), or
 * its "ok" object (a new reference). Both fail the test when the file is missing. */
char *canned_reply_line(const char *name);
json_t *canned_result(const char *name);

/* Each file's group; they return the number of failed tests. */
int args_tests_run(void);
int output_tests_run(void);
int client_tests_run(void);
