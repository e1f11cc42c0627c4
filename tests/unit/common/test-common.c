/* Unit tests for common/ (string and unit helpers, files, JSON access), transport addresses
 * and workload names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sched.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <xxhash.h>

#include "checkpoint/workload.h"
#include "common/common.h"
#include "common/hash.h"
#include "common/nsthread.h"
#include "common/sigbus.h"
#include "transport/transport.h"

static void test_strings(void **state)
{
	char buf[32] = "  hello world \t\n";
	char small[4];
	const char *parts[] = {"a", "b", "c"};
	_cleanup_free_ char *j = strjoin_sep(", ", parts, 3);

	assert_string_equal(strstrip(buf), "hello world");
	assert_int_equal(strscpy(small, "abcdef", sizeof(small)), 3);
	assert_string_equal(small, "abc");
	assert_string_equal(j, "a, b, c");
	assert_true(string_is_safe_name("web-1.prod_x", 63));
	assert_false(string_is_safe_name("", 63));
	assert_false(string_is_safe_name("-x", 63));
	assert_false(string_is_safe_name("../etc", 63));
	assert_false(string_is_safe_name("a/b", 63));
	assert_false(string_is_safe_name("a b", 63));
	assert_false(string_is_safe_name("abcd", 3));
	assert_true(workload_name_is_valid("web1"));
	assert_false(workload_name_is_valid(".hidden"));
	assert_string_equal(workload_kind_to_string(WORKLOAD_VM), "vm");
	assert_int_equal(workload_kind_from_string("container"), WORKLOAD_CONTAINER);
	assert_int_equal(workload_state_from_string("nope"), -EINVAL);
}

static void test_numbers(void **state)
{
	uint64_t u;
	uint32_t u32;
	int i;
	char buf[32];

	assert_int_equal(parse_uint64("18446744073709551615", &u), 0);
	assert_int_equal(parse_uint64("18446744073709551616", &u), -ERANGE);
	assert_int_equal(parse_uint64("-1", &u), -EINVAL);
	assert_int_equal(parse_uint64("12x", &u), -EINVAL);
	assert_int_equal(parse_uint32("4294967296", &u32), -ERANGE);
	assert_int_equal(parse_int("-42", &i), 0);
	assert_int_equal(i, -42);
	assert_int_equal(parse_bool("yes"), 1);
	assert_int_equal(parse_bool("OFF"), 0);
	assert_int_equal(parse_bool("maybe"), -EINVAL);
	assert_string_equal(format_bytes(buf, sizeof(buf), 1536), "1.5KiB");
	assert_string_equal(format_bytes(buf, sizeof(buf), 10), "10B");
	assert_string_equal(format_duration(buf, sizeof(buf), 1500), "1.5ms");
	assert_string_equal(format_duration(buf, sizeof(buf), 2500000), "2.50s");
}

static void test_files(void **state)
{
	char dir[] = "/tmp/migrd-test-common-XXXXXX", path[128], *text;
	size_t size;
	struct stat st;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/a/b/c", dir);
	assert_int_equal(mkdir_p(path, 0700), 0);
	assert_int_equal(mkdir_p(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/a/f", dir);
	assert_int_equal(write_file_atomic(path, "hello", 5, 0600), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(read_full_file(path, 100, &text, &size), 0);
	assert_int_equal(size, 5);
	assert_string_equal(text, "hello");
	free(text);
	assert_int_equal(read_full_file(path, 3, &text, &size), -EFBIG);
	snprintf(path, sizeof(path), "%s/missing", dir);
	assert_int_equal(read_full_file(path, 100, &text, &size), -ENOENT);
	snprintf(path, sizeof(path), "rm -rf %s", dir);
	assert_int_equal(system(path), 0);
}

static void test_json(void **state)
{
	json_auto_t *j = json_loads("{\"s\":\"x\",\"n\":5,\"neg\":-1,\"b\":true}", 0, NULL);
	const char *s;
	uint64_t u;
	bool b;
	_cleanup_free_ char *c1 = NULL, *c2 = NULL;

	assert_int_equal(json_get_string(j, "s", &s), 0);
	assert_string_equal(s, "x");
	assert_int_equal(json_get_string(j, "n", &s), -EINVAL);
	assert_int_equal(json_get_string(j, "zz", &s), -ENOENT);
	assert_int_equal(json_get_uint64(j, "n", &u), 0);
	assert_int_equal(u, 5);
	assert_int_equal(json_get_uint64(j, "neg", &u), -EINVAL);
	assert_int_equal(json_get_bool(j, "b", &b), 0);
	assert_true(b);
	/* Canonical form: key order does not matter. */
	json_auto_t *a = json_loads("{\"b\":1,\"a\":2}", 0, NULL);
	json_auto_t *z = json_loads("{\"a\":2,\"b\":1}", 0, NULL);
	c1 = json_dumps_canonical(a);
	c2 = json_dumps_canonical(z);
	assert_string_equal(c1, c2);
}

static void test_addresses(void **state)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char buf[64];

	assert_int_equal(transport_parse_address("10.1.2.3", 7870, &ss, &len), 0);
	assert_string_equal(transport_format_address((struct sockaddr *)&ss, len, buf, sizeof(buf)),
			    "10.1.2.3:7870");
	assert_int_equal(transport_parse_address("10.1.2.3:99", 7870, &ss, &len), 0);
	assert_string_equal(transport_format_address((struct sockaddr *)&ss, len, buf, sizeof(buf)),
			    "10.1.2.3:99");
	assert_int_equal(transport_parse_address("[fd00::1]:5", 7870, &ss, &len), 0);
	assert_string_equal(transport_format_address((struct sockaddr *)&ss, len, buf, sizeof(buf)),
			    "[fd00::1]:5");
	assert_int_equal(transport_parse_address("fd00::2", 7870, &ss, &len), 0);
	assert_string_equal(transport_format_address((struct sockaddr *)&ss, len, buf, sizeof(buf)),
			    "[fd00::2]:7870");
	assert_int_equal(transport_parse_address("localhost:1", 7870, &ss, &len), 0);
	assert_int_equal(transport_parse_address("10.1.2.3:0", 7870, &ss, &len), -EINVAL);
	assert_int_equal(transport_parse_address("10.1.2.3:70000", 7870, &ss, &len), -EINVAL);
	assert_int_equal(transport_parse_address("[fd00::1", 7870, &ss, &len), -EINVAL);
	assert_int_equal(transport_parse_address("", 7870, &ss, &len), -EINVAL);
	assert_int_equal(transport_parse_address("no-such-host.invalid", 7870, &ss, &len),
			 -EHOSTUNREACH);
}

static volatile char sigbus_sink;

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

/* A file of two pages, mapped, then cut to one: reading the second page raises SIGBUS. */
static const volatile char *map_cut_file(long pg)
{
	char path[] = "/tmp/test-common-sigbus-XXXXXX";
	_cleanup_close_ int fd = mkstemp(path);
	const volatile char *map;

	assert_true(fd >= 0);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(ftruncate(fd, 2 * pg), 0);
	map = mmap(NULL, 2 * pg, PROT_READ, MAP_SHARED, fd, 0);
	assert_true(map != MAP_FAILED);
	assert_int_equal(ftruncate(fd, pg), 0);
	return map;
}

/* Run as "test-common --sigbus-child N", away from cmocka's own handlers: a guard is set up
 * (the handler installed), then the cut page is read with no guard (N = 0) or outside the
 * guarded range (N = 1). Either must die of SIGBUS, as without the guard. */
static int sigbus_child(int how)
{
	const volatile char *map = map_cut_file(4096);
	struct sigbus_guard g;

	if (sigbus_guard_enter(&g, (const void *)map, how ? 4096 : 2 * 4096) < 0)
		return 2;
	if (sigsetjmp(g.env, 0) != 0)
		return 4;
	if (!how)
		sigbus_guard_leave(&g);
	sigbus_sink = map[4096];
	return 3;
}

/* A guarded read past the new end of a mapped file comes back as -EFAULT, and the process
 * goes on, time after time; unguarded, the same read still kills. */
static void test_sigbus_guard(void **state)
{
	long pg = sysconf(_SC_PAGESIZE);
	const volatile char *map = map_cut_file(pg);
	struct sigbus_guard g;

	for (volatile int round = 0; round < 3; round++) {
		assert_int_equal(sigbus_guard_enter(&g, (const void *)map, 2 * pg), 0);
		if (sigsetjmp(g.env, 0) != 0)
			continue;     /* faulted, and back */
		sigbus_sink = map[0]; /* in the file: fine */
		sigbus_sink = map[pg];
		sigbus_guard_leave(&g);
		fail_msg("a read past the end of the file did not fault");
	}
	for (int how = 0; how < 2; how++) {
		char arg[2] = {(char)('0' + how), 0};
		int status;
		pid_t pid = fork();

		assert_true(pid >= 0);
		if (pid == 0) {
			execl("/proc/self/exe", "test-common", "--sigbus-child", arg, (char *)NULL);
			_exit(127);
		}
		assert_int_equal(waitpid(pid, &status, 0), pid);
		/* Under AddressSanitizer, its handler was there before: it reports, then exits 1
		 * or aborts (abort_on_error). */
		if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS) &&
		    !(SANITIZED && WIFEXITED(status) && WEXITSTATUS(status) == 1) &&
		    !(SANITIZED && WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT))
			fail_msg("sigbus child %d: status %#x, not killed by SIGBUS", how, status);
	}
	munmap((void *)map, 2 * pg);
}

/* Every build of XXH3 the CPU runs gives libxxhash's results: all lengths up to 4 KiB and
 * some large ones, at every alignment of the first 64 bytes. */
static void test_hash(void **state)
{
	static const char *const names[] = {"libxxhash", "avx2", "avx512"};
	const size_t big = (1U << 20) + 123, lens[] = {8191, 65536, 1U << 20, big - 64};
	uint8_t *buf = malloc(big);
	uint64_t x = 0x9e3779b97f4a7c15ULL;
	unsigned tried = 0;

	assert_non_null(buf);
	for (size_t i = 0; i < big; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		buf[i] = (uint8_t)x;
	}
	for (size_t v = 0; v < ELEMENTSOF(names); v++) {
		hash_xxh3_fn f = hash_xxh3_variant(names[v]);

		if (!f) {
			print_message("XXH3 %s: not on this CPU\n", names[v]);
			continue;
		}
		tried++;
		for (size_t len = 0; len <= 4096; len++)
			assert_int_equal(f(buf + len % 64, len), XXH3_64bits(buf + len % 64, len));
		for (size_t i = 0; i < ELEMENTSOF(lens); i++)
			for (size_t a = 0; a < 64; a += 7)
				assert_int_equal(f(buf + a, lens[i]),
						 XXH3_64bits(buf + a, lens[i]));
	}
	assert_true(tried >= 1);
	assert_non_null(hash_xxh3_variant(hash_xxh3_impl()));
	assert_int_equal(hash_xxh3(buf, big), XXH3_64bits(buf, big));
	assert_null(hash_xxh3_variant("sse9"));
	free(buf);
}

static int read_nodename(void *arg)
{
	struct utsname u;

	if (uname(&u) < 0)
		return -errno;
	snprintf(arg, 65, "%s", u.nodename);
	return 0;
}

static int fail_exdev(void *arg)
{
	(void)arg;
	return -EXDEV;
}

/* ns_run(): the work sees the namespace, the caller's thread stays in its own; a failed join
 * and the work's own error are told apart. */
static void test_ns_thread(void **state)
{
	char name[65] = "", ours[65] = "", path[64];
	struct ns_thread t;
	int p[2], fd, dn;
	bool joined;
	pid_t pid;

	(void)state;
	if (geteuid() != 0)
		skip(); /* setns() needs CAP_SYS_ADMIN */
	assert_int_equal(read_nodename(ours), 0);
	assert_int_equal(pipe(p), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (unshare(CLONE_NEWUTS) < 0 || sethostname("nsthread-test", 13) < 0)
			_exit(1);
		(void)!write(p[1], "x", 1);
		pause();
		_exit(0);
	}
	close(p[1]);
	assert_int_equal(read(p[0], name, 1), 1);
	close(p[0]);
	snprintf(path, sizeof(path), "/proc/%d/ns/uts", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);

	memset(name, 0, sizeof(name));
	assert_int_equal(ns_run(fd, CLONE_NEWUTS, read_nodename, name, &joined), 0);
	assert_true(joined);
	assert_string_equal(name, "nsthread-test");
	memset(name, 0, sizeof(name));
	assert_int_equal(read_nodename(name), 0);
	assert_string_equal(name, ours); /* this thread did not move */

	assert_int_equal(ns_thread_start(&t, fd, CLONE_NEWUTS, fail_exdev, NULL), 0);
	assert_int_equal(ns_thread_wait(&t), -EXDEV);
	assert_true(t.joined);

	/* Not a namespace, or one of another kind: the work never runs. */
	dn = open("/dev/null", O_RDONLY | O_CLOEXEC);
	assert_int_equal(ns_run(dn, CLONE_NEWUTS, fail_exdev, NULL, &joined), -EINVAL);
	assert_false(joined);
	assert_int_equal(ns_run(fd, CLONE_NEWNET, fail_exdev, NULL, &joined), -EINVAL);
	assert_false(joined);
	close(dn);
	close(fd);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

int main(int argc, char **argv)
{
	if (argc == 3 && streq(argv[1], "--sigbus-child"))
		return sigbus_child(atoi(argv[2]));
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_strings),	     cmocka_unit_test(test_numbers),
		cmocka_unit_test(test_files),	     cmocka_unit_test(test_json),
		cmocka_unit_test(test_addresses),    cmocka_unit_test(test_hash),
		cmocka_unit_test(test_sigbus_guard), cmocka_unit_test(test_ns_thread),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
