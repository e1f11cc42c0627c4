/* Container processes: clone3() into fresh namespaces, cgroup placement before exec, and the
 * identity (pid + start time) used to find them again after a migrd restart. */
#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <linux/sched.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint/ct/container-internal.h"
#include "common/common.h"

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static char *resolve_command(const char *cmd, char *const *env)
{
	const char *path = DEFAULT_PATH;
	char buf[4096];

	if (strchr(cmd, '/'))
		return strdup(cmd);
	for (char *const *e = env; e && *e; e++)
		if (strneq(*e, "PATH=", 5))
			path = *e + 5;
	for (const char *p = path; *p;) {
		size_t n = strcspn(p, ":");
		if (n > 0 && n + strlen(cmd) + 2 < sizeof(buf)) {
			snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, p, cmd);
			if (access(buf, X_OK) == 0)
				return strdup(buf);
		}
		p += n + (p[n] == ':');
	}
	return NULL;
}

/* The environment: defaults, then the caller's K=V (which replace defaults of the same K). */
static char **build_env(const char *name, char *const *extra)
{
	const char *defaults[] = {"PATH=" DEFAULT_PATH, "HOME=/", "TERM=dumb", NULL};
	size_t n = 0, cap = 8;
	char **env;

	for (char *const *e = extra; e && *e; e++)
		cap++;
	env = calloc(cap + 2, sizeof(char *));
	if (!env)
		return NULL;
	for (const char **d = defaults; *d; d++) {
		bool overridden = false;
		size_t klen = strcspn(*d, "=") + 1;
		for (char *const *e = extra; e && *e; e++)
			overridden = overridden || strneq(*e, *d, klen);
		if (!overridden && !(env[n++] = strdup(*d)))
			goto oom;
	}
	if (asprintf(&env[n++], "MIGRD_CONTAINER=%s", name) < 0) {
		env[n - 1] = NULL;
		goto oom;
	}
	for (char *const *e = extra; e && *e; e++)
		if (!(env[n++] = strdup(*e)))
			goto oom;
	return env;
oom:
	strv_free(env);
	return NULL;
}

int ct_container_setup_namespaces(const char *hostname, const char *domainname, bool netns)
{
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		return -1;
	if (hostname && sethostname(hostname, strlen(hostname)) < 0)
		return -1;
	if (domainname && setdomainname(domainname, strlen(domainname)) < 0)
		return -1;
	if (netns) {
		struct ifreq ifr = {.ifr_name = "lo"};
		int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

		if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
			return -1;
		ifr.ifr_flags |= IFF_UP;
		if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
			return -1;
		close(s);
	}
	return 0;
}

/* Runs in the child, between clone3() and exec: system calls only. sync_fd < 0: born in the
 * cgroup, nothing to wait for. */
_noreturn_ static void child(const struct ct_spec *spec, const char *exe, char **env, int sync_fd,
			     int err_fd, int log_fd)
{
	sigset_t none;
	char c;
	int r, nul;

	/* Wait until the parent put us into the cgroup. */
	if (sync_fd >= 0 && read(sync_fd, &c, 1) != 1)
		_exit(126);
	if (sync_fd >= 0)
		close(sync_fd);
	/* Alive: a child the kernel killed at birth never says this. */
	if (write(err_fd, "x", 1) != 1)
		_exit(126);
	if (ct_container_setup_namespaces(spec->name, NULL, spec->netns) < 0)
		goto fail;
	(void)setsid();
	/* migrd blocks the signals its event loop handles; exec keeps a blocked mask. */
	sigemptyset(&none);
	if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
		goto fail;
	nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (nul < 0 || dup2(nul, 0) < 0 || dup2(log_fd, 1) < 0 || dup2(log_fd, 2) < 0)
		goto fail;
	/* Nothing of migrd's beyond the three (the error pipe goes at exec too). */
	if (syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
		goto fail;
	if (chdir(spec->cwd ?: "/") < 0)
		goto fail;
	execve(exe, spec->argv, env);
fail:
	r = errno;
	(void)!write(err_fd, &r, sizeof(r));
	_exit(127);
}

_printf_(2, 3) static void set_error(char **ret_error, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(ret_error, fmt, ap) < 0)
		*ret_error = NULL;
	va_end(ap);
}

/* CMD as PID 1, born in the cgroup of cgroup_fd, or else moved there (cgroup_fd < 0). -EAGAIN:
 * the kernel refused the birth there and nothing is left of the attempt. */
static int spawn_one(const struct ct_spec *spec, const char *exe, char **env, struct ct_cgroup *cg,
		     int cgroup_fd, int log_fd, pid_t *ret_pid, int *ret_pidfd, char **ret_error)
{
	int sync_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1}, pidfd = -1, child_errno = 0;
	struct clone_args args = {0};
	pid_t pid;
	ssize_t k;
	char c;
	int r;

	if ((cgroup_fd < 0 && pipe2(sync_pipe, O_CLOEXEC) < 0) || pipe2(err_pipe, O_CLOEXEC) < 0) {
		r = NEG_ERRNO();
		goto out;
	}
	args.flags = CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNS | CLONE_PIDFD |
		     (spec->netns ? CLONE_NEWNET : 0);
	args.pidfd = (uint64_t)(uintptr_t)&pidfd;
	args.exit_signal = SIGCHLD;
	if (cgroup_fd >= 0) {
		args.flags |= CLONE_INTO_CGROUP;
		args.cgroup = (uint64_t)cgroup_fd;
	}
	pid = (pid_t)syscall(SYS_clone3, &args, sizeof(args));
	if (pid < 0) {
		r = cgroup_fd >= 0 ? -EAGAIN : NEG_ERRNO();
		goto out;
	}
	if (pid == 0) {
		safe_close(sync_pipe[1]);
		close(err_pipe[0]);
		child(spec, exe, env, sync_pipe[0], err_pipe[1], log_fd);
	}
	sync_pipe[0] = safe_close(sync_pipe[0]);
	err_pipe[1] = safe_close(err_pipe[1]);
	if (cgroup_fd < 0) {
		r = ct_cgroup_add_pid(cg, pid);
		if (r < 0) {
			set_error(ret_error, "cannot place the container in its cgroup: %s",
				  ct_cgroup_last_error(cg));
			kill(pid, SIGKILL);
			(void)waitpid(pid, NULL, 0);
			goto out;
		}
		(void)!write(sync_pipe[1], "x", 1);
		sync_pipe[1] = safe_close(sync_pipe[1]);
	}
	do
		k = read(err_pipe[0], &c, 1);
	while (k < 0 && errno == EINTR);
	if (k != 1) {
		if (cgroup_fd >= 0 && k == 0 && ct_cgroup_killed_at_birth(pidfd)) {
			log_debug("%s: PID 1 was killed at birth in its cgroup; moving it there "
				  "instead",
				  spec->name);
			r = -EAGAIN;
			goto out;
		}
		r = -ECHILD;
		set_error(ret_error, "the container's PID 1 died before it could start %s", exe);
		(void)waitpid(pid, NULL, 0);
		goto out;
	}
	/* EOF: exec succeeded (the pipe is close-on-exec); an int: why it did not. */
	do
		k = read(err_pipe[0], &child_errno, sizeof(child_errno));
	while (k < 0 && errno == EINTR);
	if (k == sizeof(child_errno)) {
		r = -child_errno;
		set_error(ret_error, "starting %s in the container: %s", exe,
			  strerror(child_errno));
		(void)waitpid(pid, NULL, 0);
		goto out;
	}
	*ret_pid = pid;
	*ret_pidfd = TAKE_FD(pidfd);
	r = 0;
out:
	safe_close(sync_pipe[0]);
	safe_close(sync_pipe[1]);
	safe_close(err_pipe[0]);
	safe_close(err_pipe[1]);
	safe_close(pidfd);
	return r;
}

/* Born in its cgroup (clone3's CLONE_INTO_CGROUP), PID 1 needs no cgroup.procs write, which waits
 * for an RCU grace period (~10 ms). v1 hierarchies take the write; so does a refusal: a kernel
 * before 5.7, or one (6.18) that kills a child born in a cgroup that had a cgroup.kill. */
int ct_container_spawn(const struct ct_spec *spec, struct ct_cgroup *cg, int log_fd, pid_t *ret_pid,
		       int *ret_pidfd, char **ret_error)
{
	_cleanup_free_ char *exe = NULL;
	_cleanup_strv_free_ char **env = NULL;
	_cleanup_close_ int cgroup_fd = -EBADF;
	int r = -EAGAIN;

	*ret_error = NULL;
	if (!spec->argv || !spec->argv[0])
		return -EINVAL;
	env = build_env(spec->name, spec->env);
	if (!env)
		return -ENOMEM;
	exe = resolve_command(spec->argv[0], env);
	if (!exe) {
		set_error(ret_error, "command '%s' not found in PATH", spec->argv[0]);
		return -ENOENT;
	}
	cgroup_fd = ct_cgroup_open_dir(cg);
	if (cgroup_fd >= 0)
		r = spawn_one(spec, exe, env, cg, cgroup_fd, log_fd, ret_pid, ret_pidfd, ret_error);
	if (r == -EAGAIN)
		r = spawn_one(spec, exe, env, cg, -EBADF, log_fd, ret_pid, ret_pidfd, ret_error);
	return r;
}

int ct_process_start_time(pid_t pid, uint64_t *ret)
{
	_cleanup_free_ char *text = NULL;
	char path[64], *p;
	unsigned long long v;
	int r;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	r = read_full_file(path, 8192, &text, NULL);
	if (r < 0)
		return r == -ENOENT ? -ESRCH : r;
	p = strrchr(text, ')');
	if (!p)
		return -EBADMSG;
	/* Fields after comm: state is field 3; starttime is field 22. */
	for (int field = 3; field < 22; field++) {
		p = strchr(p + 1, ' ');
		if (!p)
			return -EBADMSG;
	}
	if (sscanf(p + 1, "%llu", &v) != 1)
		return -EBADMSG;
	*ret = v;
	return 0;
}
