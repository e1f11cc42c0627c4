/* Unit tests for the migrd.conf parser: values, defaults and error messages with file:line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "migrd/config.h"

static int parse(struct migrd_config *c, const char *text, char **errors)
{
	assert_int_equal(migrd_config_init_defaults(c), 0);
	*errors = NULL;
	return migrd_config_parse(c, "test.conf", text, strlen(text), errors);
}

static void test_defaults(void **state)
{
	struct migrd_config c;
	char *errors;

	assert_int_equal(parse(&c, "", &errors), 0);
	assert_null(errors);
	assert_non_null(c.host_name);
	assert_string_equal(c.state_dir, "/var/lib/migrd");
	assert_string_equal(c.control_socket, "/run/migrd/control.sock");
	assert_string_equal(c.control_group, "migrd");
	assert_int_equal(c.port, 7870);
	assert_int_equal(c.metrics_interval, USEC_PER_SEC);
	assert_int_equal(c.fence_mode, FENCE_MODE_SELF);
	assert_int_equal(c.control_max_request, 1024 * 1024);
	assert_null(c.address);
	migrd_config_done(&c);
}

static void test_full(void **state)
{
	static const char text[] = "# migrd.conf\n"
				   "[host]\n"
				   "name = hostA\n"
				   "address = 10.0.0.1\n"
				   "port = 9000\n"
				   "\n"
				   "[paths]\n"
				   "  state_dir   =   /srv/migrd   \n"
				   "control_socket = /run/x.sock\n"
				   "; another comment\n"
				   "[cluster]\n"
				   "metrics_interval = 500ms\n"
				   "sync_timeout = 1m\n"
				   "[fencing]\n"
				   "mode = command\n"
				   "command = /usr/sbin/fence %h\n"
				   "self_fence_timeout = 2.5s\n"
				   "[limits]\n"
				   "control_max_request = 64K\n"
				   "control_max_clients = 8\n"
				   "[log]\n"
				   "level = debug\n"
				   "target = console";
	struct migrd_config c;
	char *errors;

	assert_int_equal(parse(&c, text, &errors), 0);
	assert_string_equal(c.host_name, "hostA");
	assert_string_equal(c.address, "10.0.0.1");
	assert_int_equal(c.port, 9000);
	assert_string_equal(c.state_dir, "/srv/migrd");
	assert_string_equal(c.control_socket, "/run/x.sock");
	assert_int_equal(c.metrics_interval, 500 * USEC_PER_MSEC);
	assert_int_equal(c.sync_timeout, 60 * USEC_PER_SEC);
	assert_int_equal(c.fence_mode, FENCE_MODE_COMMAND);
	assert_string_equal(c.fence_command, "/usr/sbin/fence %h");
	assert_int_equal(c.self_fence_timeout, 2500 * USEC_PER_MSEC);
	assert_int_equal(c.control_max_request, 65536);
	assert_int_equal(c.control_max_clients, 8);
	assert_int_equal(c.log_level, LOG_DEBUG);
	assert_int_equal(c.log_target, LOG_TARGET_CONSOLE);
	migrd_config_done(&c);
}

/* Each bad line is reported with its own line number, and parsing goes on past it. */
static void test_errors_have_lines(void **state)
{
	static const char text[] = "[host]\n"
				   "name = -bad\n"
				   "port = 70000\n"
				   "colour = blue\n"
				   "[nosuch]\n"
				   "x = 1\n"
				   "[cluster]\n"
				   "metrics_interval = soon\n"
				   "metrics_interval = 0\n"
				   "just some words\n"
				   "[paths]\n"
				   "state_dir = relative/path\n"
				   "[log\n";
	struct migrd_config c;
	char *errors;

	assert_int_equal(parse(&c, text, &errors), -EINVAL);
	assert_non_null(errors);
	assert_non_null(strstr(errors, "test.conf:2: 'name' must be"));
	assert_non_null(
		strstr(errors, "test.conf:3: 'port' must be a port number 1-65535, not '70000'"));
	assert_non_null(strstr(errors, "test.conf:4: unknown key 'colour' in section [host]"));
	assert_non_null(strstr(errors, "test.conf:5: unknown section [nosuch]"));
	assert_non_null(strstr(errors, "test.conf:6: key 'x' outside of a known section"));
	assert_non_null(
		strstr(errors, "test.conf:8: 'metrics_interval' must be a positive duration"));
	assert_non_null(
		strstr(errors, "test.conf:9: 'metrics_interval' must be a positive duration"));
	assert_non_null(strstr(errors, "test.conf:10: expected 'key = value'"));
	assert_non_null(strstr(errors, "test.conf:12: 'state_dir' must be an absolute path"));
	assert_non_null(strstr(errors, "test.conf:13: malformed section header"));
	free(errors);
	migrd_config_done(&c);
}

static void test_whole_file_checks(void **state)
{
	struct migrd_config c;
	char *errors;

	assert_int_equal(parse(&c, "[fencing]\nmode = command\n", &errors), -EINVAL);
	assert_non_null(strstr(errors, "mode = command needs a 'command'"));
	free(errors);
	migrd_config_done(&c);
}

static void test_binary_and_long_lines(void **state)
{
	struct migrd_config c;
	char text[4096], *errors = NULL;

	assert_int_equal(migrd_config_init_defaults(&c), 0);
	memcpy(text, "[host]\nna\0me = x\n", 17);
	assert_int_equal(migrd_config_parse(&c, "t", text, 17, &errors), -EINVAL);
	assert_non_null(strstr(errors, "t:2: NUL byte in line"));
	free(errors);
	errors = NULL;

	memset(text, 'a', sizeof(text) - 1);
	text[sizeof(text) - 1] = 0;
	assert_int_equal(migrd_config_parse(&c, "t", text, strlen(text), &errors), -EINVAL);
	assert_non_null(strstr(errors, "t:1: line longer than"));
	free(errors);
	migrd_config_done(&c);
}

static void test_too_many_errors_capped(void **state)
{
	struct migrd_config c;
	char *text = NULL, *errors = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&text, &n);

	for (int i = 0; i < 1000; i++)
		fputs("bad line\n", f);
	fclose(f);
	assert_int_equal(parse(&c, text, &errors), -EINVAL);
	assert_non_null(strstr(errors, "too many errors"));
	assert_true(strlen(errors) < 8192);
	free(errors);
	free(text);
	migrd_config_done(&c);
}

static void test_load_missing(void **state)
{
	struct migrd_config c;
	char *errors = NULL;

	assert_int_equal(migrd_config_init_defaults(&c), 0);
	assert_int_equal(migrd_config_load(&c, "/nonexistent/migrd.conf", false, &errors), 0);
	assert_int_equal(migrd_config_load(&c, "/nonexistent/migrd.conf", true, &errors), -ENOENT);
	assert_non_null(strstr(errors, "/nonexistent/migrd.conf: No such file"));
	free(errors);
	migrd_config_done(&c);
}

static void test_transport_and_peers(void **state)
{
	static const char text[] = "[transport]\n"
				   "streams = 4\n"
				   "compress = 3\n"
				   "cert_file = /etc/x.crt\n"
				   "[peer hostB]\n"
				   "encrypt = no\n"
				   "transport = auto\n"
				   "[peer hostC]\n"
				   "compress = off\n"
				   "streams = 2\n";
	struct migrd_config c;
	int enc, tr, lvl;
	unsigned st;
	char *errors;

	assert_int_equal(parse(&c, text, &errors), 0);
	assert_int_equal(c.streams, 4);
	assert_string_equal(c.cert_file, "/etc/x.crt");
	assert_string_equal(c.ca_file, "/etc/migrd/pki/ca.crt");
	assert_int_equal(c.n_peers, 2);
	migrd_config_peer(&c, "hostB", &enc, &tr, &lvl, &st);
	assert_int_equal(enc, 0);
	assert_int_equal(tr, TRANSPORT_CHOICE_AUTO);
	assert_int_equal(lvl, 3);
	assert_int_equal(st, 4);
	migrd_config_peer(&c, "hostC", &enc, &tr, &lvl, &st);
	assert_int_equal(enc, 1);
	assert_int_equal(tr, TRANSPORT_CHOICE_TCP);
	assert_int_equal(lvl, 0);
	assert_int_equal(st, 2);
	migrd_config_peer(&c, "other", &enc, &tr, &lvl, &st);
	assert_int_equal(enc, 1);
	assert_int_equal(lvl, 3);
	migrd_config_done(&c);

	assert_int_equal(parse(&c,
			       "[transport]\ncompress = 99\nencrypt = maybe\n[peer ../x]\n"
			       "[peer h]\ncolour = red\n[peer h]\n",
			       &errors),
			 -EINVAL);
	assert_non_null(
		strstr(errors, "test.conf:2: 'compress' must be auto, off or a zstd level"));
	assert_non_null(strstr(errors, "test.conf:3: 'encrypt' must be yes or no"));
	assert_non_null(strstr(errors, "test.conf:4: [peer NAME] needs a host name"));
	assert_non_null(strstr(errors, "test.conf:6: unknown key 'colour' in a [peer] section"));
	assert_non_null(strstr(errors, "test.conf:7: [peer h] appears twice"));
	free(errors);
	migrd_config_done(&c);
}

static void test_units(void **state)
{
	usec_t u;
	uint64_t sz;

	assert_int_equal(parse_duration("250ms", &u), 0);
	assert_int_equal(u, 250000);
	assert_int_equal(parse_duration("3", &u), 0);
	assert_int_equal(u, 3 * USEC_PER_SEC);
	assert_int_equal(parse_duration("1.5 s", &u), 0);
	assert_int_equal(u, 1500000);
	assert_int_equal(parse_duration("2h", &u), 0);
	assert_int_equal(u, 7200 * USEC_PER_SEC);
	assert_int_equal(parse_duration("ms", &u), -EINVAL);
	assert_int_equal(parse_duration("5 parsecs", &u), -EINVAL);
	assert_int_equal(parse_duration("-1s", &u), -EINVAL);
	assert_int_equal(parse_size("4K", &sz), 0);
	assert_int_equal(sz, 4096);
	assert_int_equal(parse_size("1.5MiB", &sz), 0);
	assert_int_equal(sz, 1572864);
	assert_int_equal(parse_size("2G", &sz), 0);
	assert_int_equal(sz, 2ULL << 30);
	assert_int_equal(parse_size("12 bananas", &sz), -EINVAL);
	assert_int_equal(parse_size("99999999999999999999P", &sz), -ERANGE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_full),
		cmocka_unit_test(test_errors_have_lines),
		cmocka_unit_test(test_whole_file_checks),
		cmocka_unit_test(test_binary_and_long_lines),
		cmocka_unit_test(test_too_many_errors_capped),
		cmocka_unit_test(test_load_missing),
		cmocka_unit_test(test_units),
		cmocka_unit_test(test_transport_and_peers),
	};
	log_set_max_level(LOG_WARNING);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
