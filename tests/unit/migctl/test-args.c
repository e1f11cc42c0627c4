/* migctl's argument handling: help, version, usage errors and their exit statuses. None of
 * these may contact migrd, so the socket given points nowhere. */
#include <stdlib.h>
#include <string.h>

#include "common/macro.h"
#include "test-migctl.h"

#define NOWHERE "/nonexistent/migctl-test.sock"

static void test_global_help(void **state)
{
	struct run_result r;

	run_migctl(&r, "--help", NULL);
	assert_int_equal(r.status, 0);
	assert_string_equal(r.err, "");
	assert_non_null(strstr(r.out, "Usage: migctl"));
	/* Every verb is listed with its summary. */
	for (const char *const *v =
		     (const char *const[]){"status", "hosts", "list", "version", NULL};
	     *v; v++)
		assert_non_null(strstr(r.out, *v));
	assert_non_null(strstr(r.out, "--socket PATH"));
	assert_non_null(strstr(r.out, "--timeout DURATION"));
	assert_non_null(strstr(r.out, "69"));
	run_result_done(&r);

	run_migctl(&r, "-h", NULL);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "Usage: migctl"));
	run_result_done(&r);
}

static void test_version_option(void **state)
{
	struct run_result r;

	run_migctl(&r, "--socket", NOWHERE, "--version", NULL);
	assert_int_equal(r.status, 0);
	assert_string_equal(r.out, "migctl " MIGRD_VERSION "\n");
	assert_string_equal(r.err, "");
	run_result_done(&r);
}

static void test_verb_help(void **state)
{
	static const char *const verbs[] = {"status", "hosts", "list", "version"};

	for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
		char usage[64];
		struct run_result r;

		snprintf(usage, sizeof(usage), "Usage: migctl [GLOBAL OPTIONS] %s", verbs[i]);
		run_migctl(&r, "--socket", NOWHERE, verbs[i], "--help", NULL);
		assert_int_equal(r.status, 0);
		assert_string_equal(r.err, "");
		assert_non_null(strstr(r.out, usage));
		assert_non_null(strstr(r.out, "Example:"));
		run_result_done(&r);

		run_migctl(&r, "--socket", NOWHERE, verbs[i], "-h", NULL);
		assert_int_equal(r.status, 0);
		assert_non_null(strstr(r.out, usage));
		run_result_done(&r);
	}
}

static void test_unknown_verb(void **state)
{
	struct run_result r;

	run_migctl(&r, "--socket", NOWHERE, "frobnicate", NULL);
	assert_int_equal(r.status, 2);
	assert_string_equal(r.out, "");
	assert_string_equal(r.err, "migctl: unknown verb 'frobnicate'\n"
				   "Try 'migctl --help' for more information.\n");
	run_result_done(&r);
}

static void test_unknown_options(void **state)
{
	struct run_result r;

	run_migctl(&r, "--frobnicate", "hosts", NULL);
	assert_int_equal(r.status, 2);
	assert_string_equal(r.err, "migctl: unknown option '--frobnicate'\n"
				   "Try 'migctl --help' for more information.\n");
	run_result_done(&r);

	run_migctl(&r, "-x", "hosts", NULL);
	assert_int_equal(r.status, 2);
	assert_non_null(strstr(r.err, "unknown option '-x'"));
	run_result_done(&r);

	run_migctl(&r, "--socket", NOWHERE, "hosts", "--frobnicate", NULL);
	assert_int_equal(r.status, 2);
	assert_string_equal(r.err, "migctl: unknown option '--frobnicate'\n"
				   "Try 'migctl hosts --help' for more information.\n");
	run_result_done(&r);

	run_migctl(&r, "--json=yes", "hosts", NULL);
	assert_int_equal(r.status, 2);
	assert_non_null(strstr(r.err, "option '--json' takes no argument"));
	run_result_done(&r);

	run_migctl(&r, "--socket", NOWHERE, "hosts", "-q", NULL);
	assert_int_equal(r.status, 2);
	assert_string_equal(r.err, "migctl: unknown option '-q'\n"
				   "Try 'migctl hosts --help' for more information.\n");
	run_result_done(&r);

	run_migctl(&r, "--socket", NOWHERE, "list", "extra", NULL);
	assert_int_equal(r.status, 2);
	assert_string_equal(r.err, "migctl: 'list' takes no arguments, got 'extra'\n"
				   "Try 'migctl list --help' for more information.\n");
	run_result_done(&r);
}

static void test_global_option_after_verb(void **state)
{
	struct run_result r;

	run_migctl(&r, "--socket", NOWHERE, "hosts", "--json", NULL);
	assert_int_equal(r.status, 2);
	assert_string_equal(r.err, "migctl: '--json' is a global option and goes before the verb, "
				   "e.g. 'migctl --json hosts'\n"
				   "Try 'migctl hosts --help' for more information.\n");
	run_result_done(&r);
}

static void test_bad_option_values(void **state)
{
	char long_path[200];
	struct run_result r;

	run_migctl(&r, "--socket", NULL);
	assert_int_equal(r.status, 2);
	assert_non_null(strstr(r.err, "option '--socket' needs an argument"));
	run_result_done(&r);

	run_migctl(&r, "--timeout", "soon", "hosts", NULL);
	assert_int_equal(r.status, 2);
	assert_non_null(strstr(r.err, "invalid --timeout 'soon'"));
	run_result_done(&r);

	run_migctl(&r, "--timeout", "0", "hosts", NULL);
	assert_int_equal(r.status, 2);
	run_result_done(&r);

	memset(long_path, 'a', sizeof(long_path) - 1);
	long_path[0] = '/';
	long_path[sizeof(long_path) - 1] = 0;
	run_migctl(&r, "--socket", long_path, "hosts", NULL);
	assert_int_equal(r.status, 2);
	assert_non_null(strstr(r.err, "is too long"));
	run_result_done(&r);
}

/* No verb means `status`, like `wg` alone means `wg show`: here it fails to connect. */
static void test_default_verb_is_status(void **state)
{
	struct run_result r;

	run_migctl(&r, "--socket", NOWHERE, NULL);
	assert_int_equal(r.status, 69);
	assert_string_equal(r.err, "migctl: cannot connect to migrd: " NOWHERE
				   " does not exist (is migrd running?)\n");
	run_result_done(&r);
}

int args_tests_run(void)
{
	static const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_global_help),
		cmocka_unit_test(test_version_option),
		cmocka_unit_test(test_verb_help),
		cmocka_unit_test(test_unknown_verb),
		cmocka_unit_test(test_unknown_options),
		cmocka_unit_test(test_global_option_after_verb),
		cmocka_unit_test(test_bad_option_values),
		cmocka_unit_test(test_default_verb_is_status),
	};

	/* The env default must not leak into tests that expect the built-in one. */
	unsetenv("MIGRD_SOCKET");
	return cmocka_run_group_tests_name("migctl-args", tests, NULL, NULL);
}
