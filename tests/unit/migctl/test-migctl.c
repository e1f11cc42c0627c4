/* The migctl unit test runner and the helpers its groups share. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/json-util.h"
#include "common/util.h"
#include "migctl/migctl.h"
#include "test-migctl.h"

#ifndef MIGCTL_TEST_DATA
#define MIGCTL_TEST_DATA "."
#endif

void run_migctl(struct run_result *ret, ...)
{
	char *argv[32] = {strdup("migctl")};
	size_t argc = 1, out_len, err_len;
	FILE *out, *err;
	const char *a;
	va_list ap;

	va_start(ap, ret);
	while ((a = va_arg(ap, const char *))) {
		assert_true(argc < ELEMENTSOF(argv) - 1);
		/* Copies: getopt may permute argv, and migctl must not depend on literals. */
		argv[argc++] = strdup(a);
	}
	va_end(ap);

	*ret = (struct run_result){0};
	out = open_memstream(&ret->out, &out_len);
	err = open_memstream(&ret->err, &err_len);
	assert_non_null(out);
	assert_non_null(err);
	ret->status = migctl_main((int)argc, argv, out, err);
	fclose(out);
	fclose(err);
	for (size_t i = 0; i < argc; i++)
		free(argv[i]);
}

void run_result_done(struct run_result *r)
{
	free(r->out);
	free(r->err);
	*r = (struct run_result){0};
}

static json_t *canned_load(const char *name)
{
	_cleanup_free_ char *path = NULL;
	const char *dir = getenv("MIGRD_TEST_DATA");
	json_error_t e;
	json_t *j;

	assert_true(asprintf(&path, "%s/replies/%s.json", dir ? dir : MIGCTL_TEST_DATA, name) > 0);
	j = json_load_file(path, JSON_REJECT_DUPLICATES, &e);
	if (!j)
		fail_msg("cannot load %s: %s", path, e.text);
	return j;
}

char *canned_reply_line(const char *name)
{
	_cleanup_json_ json_t *j = canned_load(name);
	char *text = json_dumps(j, JSON_COMPACT), *line = NULL;

	assert_non_null(text);
	assert_true(asprintf(&line, "%s\n", text) > 0);
	free(text);
	return line;
}

json_t *canned_result(const char *name)
{
	_cleanup_json_ json_t *j = canned_load(name);
	json_t *ok = json_object_get(j, "ok");

	assert_non_null(ok);
	return json_incref(ok);
}

int main(void)
{
	int failed = 0;

	/* A server that hangs up must not kill the test run with SIGPIPE. */
	signal(SIGPIPE, SIG_IGN);
	failed += args_tests_run();
	failed += output_tests_run();
	failed += client_tests_run();
	return failed ? 1 : 0;
}
