/* Container cgroups on cgroup2 or the v1 freezer/memory/cpu hierarchies (see cgroup-internal.h). */
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/magic.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint/ct/cgroup-internal.h"
#include "common/log.h"

#define CGROUP_ROOT	 "/sys/fs/cgroup"
#define CGROUP_PARENT	 "migrd"
#define PIDS_MAX_BYTES	 (16u << 20)
#define POLL_MIN_USEC	 50
#define POLL_MAX_USEC	 2000
#define CGROUP_FILE_SIZE 4096

static const char *const mode_table[] = {
	[CT_CGROUP_AUTO] = "auto",
	[CT_CGROUP_V2] = "cgroup2",
	[CT_CGROUP_V1] = "cgroup-v1",
};

const char *ct_cgroup_mode_to_string(enum ct_cgroup_mode m)
{
	return (size_t)m < ELEMENTSOF(mode_table) ? mode_table[m] : NULL;
}

/* Records the message (with %m for r) and returns r. */
_printf_(3, 4) static int cg_error(struct ct_cgroup *cg, int r, const char *fmt, ...)
{
	va_list ap;

	errno = ERRNO_VALUE(r);
	va_start(ap, fmt);
	vsnprintf(cg->error, sizeof(cg->error), fmt, ap);
	va_end(ap);
	log_debug("cgroup %s: %s", cg->name, cg->error);
	return r;
}

const char *ct_cgroup_last_error(const struct ct_cgroup *cg)
{
	return cg->error;
}

static bool fs_is(const char *path, long magic)
{
	struct statfs sfs;

	return statfs(path, &sfs) == 0 && (long)sfs.f_type == magic;
}

/* Where cgroup2 is mounted: the unified layout or the hybrid one. */
static const char *v2_root(void)
{
	if (fs_is(CGROUP_ROOT, CGROUP2_SUPER_MAGIC))
		return CGROUP_ROOT;
	if (fs_is(CGROUP_ROOT "/unified", CGROUP2_SUPER_MAGIC))
		return CGROUP_ROOT "/unified";
	return NULL;
}

static int write_file(const char *dir, const char *file, const char *value)
{
	_cleanup_free_ char *p = NULL;
	_cleanup_close_ int fd = -EBADF;
	size_t len = strlen(value);

	if (asprintf(&p, "%s/%s", dir, file) < 0)
		return -ENOMEM;
	fd = open(p, O_WRONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return NEG_ERRNO();
	if (write(fd, value, len) != (ssize_t)len)
		return NEG_ERRNO();
	return 0;
}

static int cg_write(struct ct_cgroup *cg, const char *dir, const char *file, const char *value)
{
	int r = write_file(dir, file, value);

	if (r < 0)
		return cg_error(cg, r, "Failed to write '%s' to %s/%s: %m", value, dir, file);
	return 0;
}

static int read_small(const char *dir, const char *file, char *buf, size_t size)
{
	char p[PATH_MAX];
	_cleanup_close_ int fd = -EBADF;
	ssize_t k;

	if ((size_t)snprintf(p, sizeof(p), "%s/%s", dir, file) >= sizeof(p))
		return -ENAMETOOLONG;
	fd = open(p, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return NEG_ERRNO();
	k = read(fd, buf, size - 1);
	if (k < 0)
		return NEG_ERRNO();
	buf[k] = 0;
	return 0;
}

/* Whether a whitespace-separated list contains word. */
static bool words_contain(const char *list, const char *word)
{
	size_t n = strlen(word);

	for (const char *p = list; (p = strstr(p, word)); p += n)
		if ((p == list || p[-1] == ' ' || p[-1] == '\n') &&
		    (p[n] == 0 || p[n] == ' ' || p[n] == '\n'))
			return true;
	return false;
}

static bool v2_has_controllers(const char *root, unsigned needs)
{
	char buf[CGROUP_FILE_SIZE];

	if (read_small(root, "cgroup.controllers", buf, sizeof(buf)) < 0)
		return false;
	if ((needs & CT_CGROUP_NEED_MEMORY) && !words_contain(buf, "memory"))
		return false;
	if ((needs & CT_CGROUP_NEED_CPU) && !words_contain(buf, "cpu"))
		return false;
	return true;
}

static int make_dir(struct ct_cgroup *cg, const char *path)
{
	if (mkdir(path, 0755) < 0 && errno != EEXIST)
		return cg_error(cg, NEG_ERRNO(), "Failed to create cgroup %s: %m", path);
	return 0;
}

/* Creates <hierarchy>/migrd/<name> and returns its path. */
static int make_cgroup(struct ct_cgroup *cg, const char *hierarchy, char **ret_path)
{
	_cleanup_free_ char *parent = NULL, *path = NULL;
	int r;

	if (asprintf(&parent, "%s/" CGROUP_PARENT, hierarchy) < 0 ||
	    asprintf(&path, "%s/%s", parent, cg->name) < 0)
		return -ENOMEM;
	r = make_dir(cg, parent);
	if (r < 0)
		return r;
	r = make_dir(cg, path);
	if (r < 0)
		return r;
	*ret_path = TAKE_PTR(path);
	return 0;
}

static int setup_v2(struct ct_cgroup *cg, const char *root, unsigned needs)
{
	_cleanup_free_ char *parent = NULL;
	char ctl[32] = "";
	int r;

	if (asprintf(&parent, "%s/" CGROUP_PARENT, root) < 0)
		return -ENOMEM;
	r = make_cgroup(cg, root, &cg->v2_path);
	if (r < 0)
		return r;
	{
		char p[PATH_MAX];

		snprintf(p, sizeof(p), "%s/cgroup.freeze", cg->v2_path);
		if (access(p, W_OK) < 0)
			return cg_error(cg, -EOPNOTSUPP, "No cgroup2 freezer: %s missing", p);
	}
	if (needs & CT_CGROUP_NEED_MEMORY)
		strcat(ctl, "+memory ");
	if (needs & CT_CGROUP_NEED_CPU)
		strcat(ctl, "+cpu ");
	if (ctl[0]) {
		ctl[strlen(ctl) - 1] = 0;
		/* Controllers are delegated top-down: the root, then our parent. */
		r = cg_write(cg, root, "cgroup.subtree_control", ctl);
		if (r < 0)
			return r;
		r = cg_write(cg, parent, "cgroup.subtree_control", ctl);
		if (r < 0)
			return r;
	}
	cg->mode = CT_CGROUP_V2;
	return 0;
}

static int setup_v1(struct ct_cgroup *cg, unsigned needs)
{
	static const struct {
		const char *ctrl;
		unsigned need; /* 0: always */
		size_t offset;
	} hier[] = {
		{"freezer", 0, offsetof(struct ct_cgroup, freezer_path)},
		{"memory", CT_CGROUP_NEED_MEMORY, offsetof(struct ct_cgroup, memory_path)},
		{"cpu", CT_CGROUP_NEED_CPU, offsetof(struct ct_cgroup, cpu_path)},
	};
	int r;

	for (size_t i = 0; i < ELEMENTSOF(hier); i++) {
		char h[PATH_MAX];

		if (hier[i].need && !(needs & hier[i].need))
			continue;
		snprintf(h, sizeof(h), CGROUP_ROOT "/%s", hier[i].ctrl);
		if (!fs_is(h, CGROUP_SUPER_MAGIC))
			return cg_error(cg, -EOPNOTSUPP, "No cgroup v1 %s hierarchy at %s",
					hier[i].ctrl, h);
		r = make_cgroup(cg, h, (char **)((char *)cg + hier[i].offset));
		if (r < 0)
			return r;
	}
	cg->mode = CT_CGROUP_V1;
	return 0;
}

int ct_cgroup_new(const struct ct_cgroup_params *params, struct ct_cgroup **ret)
{
	_cleanup_(ct_cgroup_freep) struct ct_cgroup *cg = NULL;
	const char *root = v2_root();
	enum ct_cgroup_mode mode = params->mode;
	int r;

	if (!string_is_safe_name(params->name, 128))
		return -EINVAL;
	cg = calloc(1, sizeof(*cg));
	if (!cg)
		return -ENOMEM;
	cg->name = strdup(params->name);
	if (!cg->name)
		return -ENOMEM;
	if (mode == CT_CGROUP_AUTO)
		mode = root && v2_has_controllers(root, params->needs) ? CT_CGROUP_V2
								       : CT_CGROUP_V1;
	if (mode == CT_CGROUP_V2) {
		if (!root)
			return log_debug_errno(EOPNOTSUPP,
					       "No cgroup2 hierarchy under " CGROUP_ROOT);
		if (!v2_has_controllers(root, params->needs))
			return log_debug_errno(EOPNOTSUPP, "cgroup2 at %s lacks needed controllers",
					       root);
		r = setup_v2(cg, root, params->needs);
	} else
		r = setup_v1(cg, params->needs);
	if (r < 0) {
		(void)ct_cgroup_remove(cg, 0);
		return r;
	}
	log_debug("cgroup %s: using %s", cg->name, ct_cgroup_mode_to_string(cg->mode));
	*ret = TAKE_PTR(cg);
	return 0;
}

struct ct_cgroup *ct_cgroup_free(struct ct_cgroup *cg)
{
	if (!cg)
		return NULL;
	free(cg->name);
	free(cg->v2_path);
	free(cg->freezer_path);
	free(cg->memory_path);
	free(cg->cpu_path);
	free(cg);
	return NULL;
}

int ct_cgroup_set_memory_limit(struct ct_cgroup *cg, uint64_t bytes)
{
	char v[32];

	if (bytes == UINT64_MAX)
		strscpy(v, cg->mode == CT_CGROUP_V2 ? "max" : "-1", sizeof(v));
	else
		snprintf(v, sizeof(v), "%" PRIu64, bytes);
	if (cg->mode == CT_CGROUP_V2)
		return cg_write(cg, cg->v2_path, "memory.max", v);
	if (!cg->memory_path)
		return cg_error(cg, -EOPNOTSUPP, "cgroup created without the memory controller");
	return cg_write(cg, cg->memory_path, "memory.limit_in_bytes", v);
}

int ct_cgroup_set_cpu_quota(struct ct_cgroup *cg, uint64_t quota_usec, uint64_t period_usec)
{
	char v[64];
	int r;

	if (period_usec < 1000 || period_usec > USEC_PER_SEC ||
	    (quota_usec != UINT64_MAX && quota_usec < 1000))
		return cg_error(cg, -EINVAL, "CPU quota %" PRIu64 "/%" PRIu64 " us out of range",
				quota_usec, period_usec);
	if (cg->mode == CT_CGROUP_V2) {
		if (quota_usec == UINT64_MAX)
			snprintf(v, sizeof(v), "max %" PRIu64, period_usec);
		else
			snprintf(v, sizeof(v), "%" PRIu64 " %" PRIu64, quota_usec, period_usec);
		return cg_write(cg, cg->v2_path, "cpu.max", v);
	}
	if (!cg->cpu_path)
		return cg_error(cg, -EOPNOTSUPP, "cgroup created without the cpu controller");
	/* Drop the quota first so the new period never conflicts with the old quota. */
	r = cg_write(cg, cg->cpu_path, "cpu.cfs_quota_us", "-1");
	if (r < 0)
		return r;
	snprintf(v, sizeof(v), "%" PRIu64, period_usec);
	r = cg_write(cg, cg->cpu_path, "cpu.cfs_period_us", v);
	if (r < 0 || quota_usec == UINT64_MAX)
		return r;
	snprintf(v, sizeof(v), "%" PRIu64, quota_usec);
	return cg_write(cg, cg->cpu_path, "cpu.cfs_quota_us", v);
}

int ct_cgroup_add_pid(struct ct_cgroup *cg, pid_t pid)
{
	const char *paths[] = {cg->v2_path, cg->freezer_path, cg->memory_path, cg->cpu_path};
	char v[16];

	snprintf(v, sizeof(v), "%d", (int)pid);
	for (size_t i = 0; i < ELEMENTSOF(paths); i++) {
		int r;

		if (!paths[i])
			continue;
		r = cg_write(cg, paths[i], "cgroup.procs", v);
		if (r < 0)
			return r;
	}
	return 0;
}

int ct_cgroup_open_dir(struct ct_cgroup *cg)
{
	int fd;

	if (cg->mode != CT_CGROUP_V2)
		return -EOPNOTSUPP; /* not an error: the caller writes cgroup.procs instead */
	fd = open(cg->v2_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return cg_error(cg, NEG_ERRNO(), "Failed to open %s: %m", cg->v2_path);
	return fd;
}

bool ct_cgroup_killed_at_birth(int pidfd)
{
	siginfo_t si = {};

	return waitid((idtype_t)P_PIDFD, (id_t)pidfd, &si, WEXITED | WNOWAIT) == 0 &&
	       si.si_code == CLD_KILLED && si.si_status == SIGKILL &&
	       waitid((idtype_t)P_PIDFD, (id_t)pidfd, &si, WEXITED) == 0;
}

static int cmp_pid(const void *a, const void *b)
{
	pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;

	return (x > y) - (x < y);
}

int ct_cgroup_get_pids(struct ct_cgroup *cg, bool threads, pid_t **ret_pids, size_t *ret_n)
{
	const char *dir = cg->mode == CT_CGROUP_V2 ? cg->v2_path : cg->freezer_path;
	const char *file =
		threads ? (cg->mode == CT_CGROUP_V2 ? "cgroup.threads" : "tasks") : "cgroup.procs";
	_cleanup_free_ char *path = NULL, *text = NULL;
	_cleanup_free_ pid_t *pids = NULL;
	size_t n = 0, alloc = 0;
	char *p, *end;
	int r;

	if (asprintf(&path, "%s/%s", dir, file) < 0)
		return -ENOMEM;
	r = read_full_file(path, PIDS_MAX_BYTES, &text, NULL);
	if (r < 0)
		return cg_error(cg, r, "Failed to read %s: %m", path);
	for (p = text;; p = end) {
		long v;

		errno = 0;
		v = strtol(p, &end, 10);
		if (end == p)
			break;
		if (errno || v <= 0 || v > INT32_MAX)
			return cg_error(cg, -EBADMSG, "Bad pid in %s", path);
		if (n == alloc) {
			pid_t *np;

			alloc = alloc ? alloc * 2 : 64;
			np = reallocarray(pids, alloc, sizeof(pid_t));
			if (!np)
				return -ENOMEM;
			pids = np;
		}
		pids[n++] = (pid_t)v;
	}
	if (n > 1)
		qsort(pids, n, sizeof(pid_t), cmp_pid);
	*ret_pids = TAKE_PTR(pids);
	*ret_n = n;
	return 0;
}

/* Sleeps a growing interval bounded by the deadline; -ETIMEDOUT once it has passed. */
static int wait_step(usec_t deadline, usec_t *interval)
{
	usec_t now = now_usec(CLOCK_MONOTONIC), d;

	if (now >= deadline)
		return -ETIMEDOUT;
	d = MIN(*interval, deadline - now);
	usleep((useconds_t)d);
	*interval = MIN(*interval * 2, (usec_t)POLL_MAX_USEC);
	return 0;
}

/* Waits until cgroup.events has "key value" (poll(2) wakes us on every change). */
static int v2_wait_event(struct ct_cgroup *cg, const char *key, int value, usec_t deadline)
{
	_cleanup_free_ char *path = NULL;
	_cleanup_close_ int fd = -EBADF;
	char want[64];

	if (asprintf(&path, "%s/cgroup.events", cg->v2_path) < 0)
		return -ENOMEM;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return cg_error(cg, NEG_ERRNO(), "Failed to open %s: %m", path);
	snprintf(want, sizeof(want), "%s %d", key, value);
	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLPRI};
		char buf[CGROUP_FILE_SIZE];
		ssize_t k = pread(fd, buf, sizeof(buf) - 1, 0);
		usec_t now;

		if (k < 0)
			return cg_error(cg, NEG_ERRNO(), "Failed to read %s: %m", path);
		buf[k] = 0;
		for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"))
			if (streq(line, want))
				return 0;
		now = now_usec(CLOCK_MONOTONIC);
		if (now >= deadline)
			return cg_error(cg, -ETIMEDOUT, "Timed out waiting for '%s' in %s", want,
					path);
		/* Short slices: a change between the read and the poll is seen at the latest
		 * one slice later. */
		if (poll(&pfd, 1, (int)MIN((deadline - now + 999) / 1000, 10)) < 0 &&
		    errno != EINTR)
			return cg_error(cg, NEG_ERRNO(), "Failed to poll %s: %m", path);
	}
}

static int v1_wait_state(struct ct_cgroup *cg, const char *state, usec_t deadline)
{
	usec_t interval = POLL_MIN_USEC;

	for (;;) {
		char buf[64];
		int r = read_small(cg->freezer_path, "freezer.state", buf, sizeof(buf));

		if (r < 0)
			return cg_error(cg, r, "Failed to read %s/freezer.state: %m",
					cg->freezer_path);
		if (streq(strstrip(buf), state))
			return 0;
		if (wait_step(deadline, &interval) < 0)
			return cg_error(cg, -ETIMEDOUT,
					"Timed out waiting for %s in %s/freezer.state", state,
					cg->freezer_path);
	}
}

int ct_cgroup_freeze(struct ct_cgroup *cg, usec_t timeout)
{
	usec_t deadline = usec_add(now_usec(CLOCK_MONOTONIC), timeout);
	int r;

	if (cg->mode == CT_CGROUP_V2) {
		r = cg_write(cg, cg->v2_path, "cgroup.freeze", "1");
		return r < 0 ? r : v2_wait_event(cg, "frozen", 1, deadline);
	}
	r = cg_write(cg, cg->freezer_path, "freezer.state", "FROZEN");
	return r < 0 ? r : v1_wait_state(cg, "FROZEN", deadline);
}

int ct_cgroup_thaw(struct ct_cgroup *cg, usec_t timeout)
{
	usec_t deadline = usec_add(now_usec(CLOCK_MONOTONIC), timeout);
	int r;

	if (cg->mode == CT_CGROUP_V2) {
		r = cg_write(cg, cg->v2_path, "cgroup.freeze", "0");
		return r < 0 ? r : v2_wait_event(cg, "frozen", 0, deadline);
	}
	r = cg_write(cg, cg->freezer_path, "freezer.state", "THAWED");
	return r < 0 ? r : v1_wait_state(cg, "THAWED", deadline);
}

int ct_cgroup_is_frozen(struct ct_cgroup *cg)
{
	char buf[CGROUP_FILE_SIZE];
	int r;

	if (cg->mode == CT_CGROUP_V2) {
		r = read_small(cg->v2_path, "cgroup.events", buf, sizeof(buf));
		if (r < 0)
			return cg_error(cg, r, "Failed to read %s/cgroup.events: %m", cg->v2_path);
		return strstr(buf, "frozen 1") != NULL;
	}
	r = read_small(cg->freezer_path, "freezer.state", buf, sizeof(buf));
	if (r < 0)
		return cg_error(cg, r, "Failed to read %s/freezer.state: %m", cg->freezer_path);
	return streq(strstrip(buf), "FROZEN");
}

static int kill_each(struct ct_cgroup *cg, usec_t deadline)
{
	usec_t interval = POLL_MIN_USEC;

	for (;;) {
		_cleanup_free_ pid_t *pids = NULL;
		size_t n;
		int r = ct_cgroup_get_pids(cg, false, &pids, &n);

		if (r == -ENOENT) /* removed already: nothing left to kill */
			return 0;
		if (r < 0)
			return r;
		if (n == 0)
			return 0;
		for (size_t i = 0; i < n; i++)
			(void)kill(pids[i], SIGKILL);
		/* v1-frozen tasks die only once thawed. */
		if (cg->mode == CT_CGROUP_V1) {
			r = cg_write(cg, cg->freezer_path, "freezer.state", "THAWED");
			if (r < 0)
				return r;
		}
		if (wait_step(deadline, &interval) < 0)
			return cg_error(cg, -ETIMEDOUT, "Timed out killing %zu tasks of %s", n,
					cg->mode == CT_CGROUP_V2 ? cg->v2_path : cg->freezer_path);
	}
}

int ct_cgroup_kill(struct ct_cgroup *cg, usec_t timeout)
{
	usec_t deadline = usec_add(now_usec(CLOCK_MONOTONIC), timeout);
	char p[PATH_MAX];
	int r;

	if (cg->mode == CT_CGROUP_V2) {
		snprintf(p, sizeof(p), "%s/cgroup.kill", cg->v2_path);
		if (access(p, W_OK) == 0) {
			r = cg_write(cg, cg->v2_path, "cgroup.kill", "1");
			return r < 0 ? r : v2_wait_event(cg, "populated", 0, deadline);
		}
	}
	return kill_each(cg, deadline);
}

int ct_cgroup_remove(struct ct_cgroup *cg, usec_t timeout)
{
	usec_t deadline = usec_add(now_usec(CLOCK_MONOTONIC), timeout);
	const char *paths[] = {cg->v2_path, cg->freezer_path, cg->memory_path, cg->cpu_path};
	int ret = 0;

	for (size_t i = 0; i < ELEMENTSOF(paths); i++) {
		usec_t interval = POLL_MIN_USEC;

		if (!paths[i])
			continue;
		/* A just-emptied cgroup can stay busy for a moment. */
		while (rmdir(paths[i]) < 0 && errno != ENOENT) {
			if (errno != EBUSY || wait_step(deadline, &interval) < 0) {
				ret = cg_error(cg, NEG_ERRNO(), "Failed to remove cgroup %s: %m",
					       paths[i]);
				break;
			}
		}
	}
	return ret;
}
