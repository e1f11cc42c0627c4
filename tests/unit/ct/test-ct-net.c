/* Unit tests for setting a network namespace's sysctls at restore, in a namespace made here
 * (the real kernel: which writes it takes, in which order, and what it refuses). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint/ct/image-internal.h"
#include "checkpoint/ct/net-internal.h"
#include "common/common.h"

/* A process in a network namespace of its own, and that namespace opened. */
struct netns {
	pid_t pid;
	int fd;
};

static void netns_make(struct netns *ns)
{
	int p[2];
	char c, path[64];

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	ns->pid = fork();
	assert_true(ns->pid >= 0);
	if (ns->pid == 0) {
		c = unshare(CLONE_NEWNET) == 0 ? 'y' : 'n';
		(void)!write(p[1], &c, 1);
		pause();
		_exit(0);
	}
	close(p[1]);
	assert_int_equal(read(p[0], &c, 1), 1);
	close(p[0]);
	assert_int_equal(c, 'y');
	snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)ns->pid);
	ns->fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(ns->fd >= 0);
}

static void netns_drop(struct netns *ns)
{
	close(ns->fd);
	kill(ns->pid, SIGKILL);
	waitpid(ns->pid, NULL, 0);
}

static void test_net_sysctls_set(void **state)
{
	/* Names ascending, as the image holds them: the port range comes before the start of the
	 * unprivileged ports, which must go down first for the range to be taken. */
	struct ct_image_sysctl want[] = {
		{(char *)"net/core/somaxconn", (char *)"777"},
		{(char *)"net/ipv4/conf/all/forwarding", (char *)"1"},
		{(char *)"net/ipv4/conf/lo/forwarding", (char *)"0"},
		{(char *)"net/ipv4/ip_forward", (char *)"1"},
		{(char *)"net/ipv4/ip_local_port_range", (char *)"1000\t2000"},
		{(char *)"net/ipv4/ip_unprivileged_port_start", (char *)"0"},
		{(char *)"net/unix/max_dgram_qlen", (char *)"99"},
	};
	struct netns ns;
	char err[256];
	size_t set;

	(void)state;
	if (geteuid() != 0)
		skip(); /* a network namespace and its sysctls need CAP_SYS_ADMIN */
	netns_make(&ns);
	assert_int_equal(net_restore_sysctls(ns.fd, want, ELEMENTSOF(want), err, sizeof(err), &set),
			 0);
	assert_string_equal(err, "");
	assert_true(set >= 6); /* ip_forward follows conf/all/forwarding */
	/* All of them read as wanted now: a second time writes nothing. */
	assert_int_equal(net_restore_sysctls(ns.fd, want, ELEMENTSOF(want), err, sizeof(err), &set),
			 0);
	assert_int_equal(set, 0);
	netns_drop(&ns);
}

static void test_net_sysctls_refused(void **state)
{
	static const struct {
		const char *name, *value;
		int r;
		const char *err;
	} cases[] = {
		{"net/core/somaxconn", "many", -EINVAL,
		 "setting net/core/somaxconn to 'many': Invalid argument"},
		{"net/core/no_such_setting", "1", -ENOENT,
		 "setting net/core/no_such_setting to '1': No such file or directory"},
		{"net/../kernel/hostname", "x", -EINVAL, ""},
	};
	struct netns ns;

	(void)state;
	if (geteuid() != 0)
		skip();
	netns_make(&ns);
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		struct ct_image_sysctl c = {(char *)cases[i].name, (char *)cases[i].value};
		char err[256];
		size_t set;

		assert_int_equal(net_restore_sysctls(ns.fd, &c, 1, err, sizeof(err), &set),
				 cases[i].r);
		assert_string_equal(err, cases[i].err);
		assert_int_equal(set, 0);
	}
	netns_drop(&ns);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_net_sysctls_set),
		cmocka_unit_test(test_net_sysctls_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
