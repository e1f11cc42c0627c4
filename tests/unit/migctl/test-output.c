/* migctl's rendering of canned results and its validation of reply lines: what a user reads
 * for a given daemon answer, and which answers count as malformed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/json-util.h"
#include "migctl/migctl-internal.h"
#include "test-migctl.h"

/* Renders result with fn into a string (malloc'd); asserts fn's return value. */
static char *render(int (*fn)(FILE *, json_t *), json_t *result, int expect)
{
	char *text = NULL;
	size_t len;
	FILE *f = open_memstream(&text, &len);

	assert_non_null(f);
	assert_int_equal(fn(f, result), expect);
	fclose(f);
	return text;
}

static void test_hosts_table(void **state)
{
	_cleanup_json_ json_t *result = canned_result("hosts");
	_cleanup_free_ char *text = render(hosts_print, result, 0);

	/* The local host is marked, the coordinator starred, numbers right-aligned, PSI io null
	 * and a host without metrics shown as "-", no trailing blanks. */
	assert_string_equal(text, "NAME        NODEID  ONLINE  QUORATE  COORD  CPU%  MEM         "
				  "PSI CPU/MEM/IO  LOAD1\n"
				  "h1 (local)       1  yes     yes      *       3.2  1.2G/23.4G  "
				  "0.0/0.0/-        0.10\n"
				  "h2               2  yes     yes             61.0  7.9G/23.4G  "
				  "12.5/0.3/1.1     1.87\n"
				  "h3               3  no      no                 -  -           - "
				  "                  -\n");
}

static void test_hosts_odd_values(void **state)
{
	/* First sample (cpu -1), no PSI at all, a missing field, control characters in a name. */
	_cleanup_json_ json_t *result = json_loads(
		"{\"hosts\": [{\"name\": \"evil\\u001b[2J\", \"nodeid\": 12, \"online\": true,"
		" \"quorate\": true, \"coordinator\": false, \"local\": false,"
		" \"metrics\": {\"cpu_busy_pct\": -1, \"mem_used\": 512, \"mem_total\": 1048576,"
		" \"load\": [], \"psi\": null}}]}",
		0, NULL);
	_cleanup_free_ char *text = NULL;

	assert_non_null(result);
	text = render(hosts_print, result, 0);
	assert_string_equal(
		text,
		"NAME      NODEID  ONLINE  QUORATE  COORD  CPU%  MEM        PSI CPU/MEM/IO  LOAD1\n"
		"evil?[2J      12  yes     yes                -  512B/1.0M  -                   "
		"-\n");
}

static void test_hosts_not_a_list(void **state)
{
	_cleanup_json_ json_t *result = json_pack("{s:s}", "hosts", "h1");
	_cleanup_json_ json_t *empty = json_pack("{s:[]}", "hosts");
	_cleanup_free_ char *bad = render(hosts_print, result, -EBADMSG);
	_cleanup_free_ char *none = render(hosts_print, empty, 0);

	assert_string_equal(bad, "");
	assert_string_equal(none, "No hosts.\n");
}

static void test_status_block(void **state)
{
	_cleanup_json_ json_t *result = canned_result("status");
	_cleanup_free_ char *text = render(status_print, result, 0);

	assert_string_equal(text, "       host: h1\n"
				  "    node id: 1\n"
				  "   corosync: connected\n"
				  "    quorate: yes\n"
				  "     synced: yes\n"
				  "    members: 1 2 3\n"
				  "coordinator: h1 (node 1)\n"
				  "      epoch: 4\n"
				  " state hash: 9f2c41d0\n"
				  "  workloads: 2\n"
				  "     uptime: 2h 13m\n");
}

static void test_status_partition(void **state)
{
	/* A minority partition: no coordinator, not synced, fields missing from an older daemon. */
	_cleanup_json_ json_t *result = json_loads(
		"{\"host\": \"h3\", \"nodeid\": 3, \"corosync\": \"connected\", \"quorate\": false,"
		" \"synced\": false, \"members\": [3], \"coordinator\": null, \"uptime_s\": 42.9}",
		0, NULL);
	_cleanup_free_ char *text = render(status_print, result, 0);

	assert_string_equal(text, "       host: h3\n"
				  "    node id: 3\n"
				  "   corosync: connected\n"
				  "    quorate: no\n"
				  "     synced: no\n"
				  "    members: 3\n"
				  "coordinator: none\n"
				  "      epoch: -\n"
				  " state hash: -\n"
				  "  workloads: -\n"
				  "     uptime: 42s\n");
}

static void test_list(void **state)
{
	_cleanup_json_ json_t *result = canned_result("list");
	_cleanup_json_ json_t *empty = canned_result("list-empty");
	_cleanup_free_ char *text = render(list_print, result, 0);
	_cleanup_free_ char *none = render(list_print, empty, 0);

	assert_string_equal(text, "NAME  KIND       HOST  STATE      MEMORY\n"
				  "web1  container  h2    running  256.0MiB\n"
				  "db1   vm         h1    running    4.0GiB\n");
	assert_string_equal(none, "No workloads.\n");
}

static void test_format_helpers(void **state)
{
	char buf[64];

	assert_string_equal(format_bytes_short(buf, sizeof(buf), 1288490189), "1.2G");
	assert_string_equal(format_bytes_short(buf, sizeof(buf), 100), "100B");
	assert_string_equal(format_uptime(buf, sizeof(buf), 59.9), "59s");
	assert_string_equal(format_uptime(buf, sizeof(buf), 200), "3m 20s");
	assert_string_equal(format_uptime(buf, sizeof(buf), 3 * 86400 + 7200), "3d 2h");
	assert_string_equal(format_uptime(buf, sizeof(buf), -1), "-");
}

/* The reply shapes migctl accepts and refuses. */
static void test_reply_parse(void **state)
{
	static const struct {
		const char *line;
		int r;
	} cases[] = {
		{"{\"id\":1,\"ok\":{}}", 0},
		{"{\"ok\":{\"x\":1},\"id\":1}", 0},
		{"{\"id\":1,\"error\":{\"code\":\"busy\",\"message\":\"Try later.\"}}", 0},
		{"{\"id\":null,\"error\":{\"code\":\"permission-denied\",\"message\":\"no\"}}", 0},
		{"{\"id\":1,\"error\":{\"code\":\"internal\"}}", 0},
		{"", -EBADMSG},
		{"hello", -EBADMSG},
		{"[1]", -EBADMSG},
		{"{\"id\":1,\"ok\":{}", -EBADMSG},
		{"{\"id\":1,\"ok\":{},\"ok\":{}}", -EBADMSG},
		{"{\"id\":1}", -EBADMSG},
		{"{\"id\":1,\"ok\":{},\"error\":{\"code\":\"busy\"}}", -EBADMSG},
		{"{\"ok\":{}}", -EBADMSG},
		{"{\"id\":2,\"ok\":{}}", -EBADMSG},
		{"{\"id\":\"1\",\"ok\":{}}", -EBADMSG},
		{"{\"id\":null,\"ok\":{}}", -EBADMSG},
		{"{\"id\":1,\"ok\":[]}", -EBADMSG},
		{"{\"id\":1,\"error\":\"busy\"}", -EBADMSG},
		{"{\"id\":1,\"error\":{\"message\":\"no code\"}}", -EBADMSG},
		{"{\"id\":1,\"error\":{\"code\":\"\"}}", -EBADMSG},
		{"{\"id\":1,\"error\":{\"code\":\"busy\",\"message\":7}}", -EBADMSG},
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		json_t *reply = NULL;
		int r = migctl_reply_parse(cases[i].line, strlen(cases[i].line), 1, &reply);

		if (r != cases[i].r)
			fail_msg("'%s': got %d, want %d", cases[i].line, r, cases[i].r);
		assert_true((r == 0) == (reply != NULL));
		json_decref(reply);
	}
}

/* Each client failure maps to one exit status and one sentence. */
static void test_report_error(void **state)
{
	static const struct {
		int error;
		int status;
		const char *message;
	} cases[] = {
		{-ENOENT, 69,
		 "migctl: cannot connect to migrd: /run/m.sock does not exist (is migrd "
		 "running?)\n"},
		{-ECONNREFUSED, 69,
		 "migctl: cannot connect to migrd: connection refused on /run/m.sock (is migrd "
		 "running?)\n"},
		{-EACCES, 69,
		 "migctl: permission denied on /run/m.sock: migctl must run as root or a member of "
		 "group 'migrd'\n"},
		{-ECONNRESET, 69, "migctl: migrd closed the connection without a complete reply\n"},
		{-ETIMEDOUT, 69, "migctl: no reply from migrd within 10.0s (see --timeout)\n"},
		{-EMSGSIZE, 69, "migctl: migrd sent a malformed reply (longer than 64.0MiB)\n"},
		{-EBADMSG, 69, "migctl: migrd sent a malformed reply\n"},
		{-ENOMEM, 1, "migctl: out of memory\n"},
		{-ENOTSOCK, 69,
		 "migctl: cannot talk to migrd on /run/m.sock: Socket operation on non-socket\n"},
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		_cleanup_free_ char *text = NULL;
		size_t len;
		struct migctl m = {
			.socket_path = "/run/m.sock",
			.timeout = MIGCTL_TIMEOUT_DEFAULT,
			.reply_max = MIGCTL_REPLY_MAX,
			.out = stdout,
			.err = open_memstream(&text, &len),
		};

		assert_int_equal(migctl_report_error(&m, cases[i].error), cases[i].status);
		fclose(m.err);
		assert_string_equal(text, cases[i].message);
	}
}

int output_tests_run(void)
{
	static const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hosts_table),	 cmocka_unit_test(test_hosts_odd_values),
		cmocka_unit_test(test_hosts_not_a_list), cmocka_unit_test(test_status_block),
		cmocka_unit_test(test_status_partition), cmocka_unit_test(test_list),
		cmocka_unit_test(test_format_helpers),	 cmocka_unit_test(test_reply_parse),
		cmocka_unit_test(test_report_error),
	};

	return cmocka_run_group_tests_name("migctl-output", tests, NULL, NULL);
}
