/* What the container's namespaces hold that no process of it does, and that a restore would
 * therefore lose without a word. Each is refused by name before anything is destroyed.
 *
 * IPC: a restore gives the container a new, empty IPC namespace. System V shared memory,
 * semaphore sets and message queues, and POSIX message queues, live in the namespace and not in
 * any process; the programs that use them would fail or hang after the restore. They are read
 * from a thread of our own that joins the namespace: /proc/sysvipc/ lists the System V objects
 * of the reader's namespace, and a detached mount of the namespace's mqueue file system
 * (fsopen/fsmount, attached nowhere) lists its message queues.
 *
 * Mounts: a restore gives the container a copy of migrd's mount namespace with its own /proc on
 * top, as `migctl run` did. A mount the container made itself (a tmpfs with files in it, a bind
 * mount) would be missing, and with it what it held or showed. Every mount of the container's
 * namespace must be one of migrd's (the same file system, root and place), but for its /proc. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/mount.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "checkpoint/ct/dump-internal.h"
#include "common/common.h"

struct ipc_probe {
	int ns_fd;
	int r;		  /* < 0: the namespace could not be read */
	char found[320];  /* the first object found, described; empty when none */
	const char *what; /* for r < 0: which step failed */
};

/* The first object in /proc/sysvipc/NAME (a header line, then one object a line: key, id,
 * ...). 1 with *ret set when there is one, 0 when none, < 0 on error. */
static int first_sysv(const char *name, int64_t *ret_key, int64_t *ret_id)
{
	char path[64], line[512];
	_cleanup_fclose_ FILE *f = NULL;

	snprintf(path, sizeof(path), "/proc/sysvipc/%s", name);
	f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? 0 : NEG_ERRNO(); /* a kernel without System V IPC */
	if (!fgets(line, sizeof(line), f))
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%" SCNd64 " %" SCNd64, ret_key, ret_id) == 2)
			return 1;
	return 0;
}

/* The first POSIX message queue's name, through a mount of the namespace's mqueue file system
 * that is attached nowhere. 1 when there is one, 0 when none, < 0 on error. */
static int first_mqueue(char *ret, size_t size)
{
	_cleanup_close_ int fs = -EBADF, mnt = -EBADF;
	struct dirent *e;
	DIR *dir;
	int fd, found = 0;

	fs = (int)syscall(SYS_fsopen, "mqueue", FSOPEN_CLOEXEC);
	if (fs < 0)
		return errno == ENODEV ? 0 : NEG_ERRNO(); /* a kernel without POSIX queues */
	if (syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
		return NEG_ERRNO();
	mnt = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, 0);
	if (mnt < 0)
		return NEG_ERRNO();
	fd = openat(mnt, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return NEG_ERRNO();
	dir = fdopendir(fd);
	if (!dir) {
		safe_close(fd);
		return NEG_ERRNO();
	}
	while (!found && (e = readdir(dir)))
		if (!streq(e->d_name, ".") && !streq(e->d_name, "..")) {
			snprintf(ret, size, "/%s", e->d_name);
			found = 1;
		}
	closedir(dir);
	return found;
}

static void *probe_run(void *arg)
{
	static const struct {
		const char *file, *what;
	} sysv[] = {
		{"shm", "System V shared memory"},
		{"sem", "a System V semaphore set"},
		{"msg", "a System V message queue"},
	};
	struct ipc_probe *q = arg;
	char name[NAME_MAX + 2];
	int r;

	/* This thread alone moves: namespaces are per task. */
	if (setns(q->ns_fd, CLONE_NEWIPC) < 0) {
		q->r = NEG_ERRNO();
		q->what = "joining it";
		return NULL;
	}
	for (size_t i = 0; i < ELEMENTSOF(sysv); i++) {
		int64_t key = 0, id = 0;

		r = first_sysv(sysv[i].file, &key, &id);
		if (r < 0) {
			q->r = r;
			q->what = "reading /proc/sysvipc";
			return NULL;
		}
		if (r > 0) {
			snprintf(q->found, sizeof(q->found),
				 "%s (key %#" PRIx32 ", id %" PRId64 ")", sysv[i].what,
				 (uint32_t)key, id);
			return NULL;
		}
	}
	r = first_mqueue(name, sizeof(name));
	if (r < 0) {
		q->r = r;
		q->what = "listing its POSIX message queues";
	} else if (r > 0)
		snprintf(q->found, sizeof(q->found), "the POSIX message queue %s", name);
	return NULL;
}

static int check_ipc(struct dumper *d)
{
	struct ipc_probe q = {.ns_fd = -EBADF};
	struct stat ours, theirs;
	char path[64];
	pthread_t th;
	int r;

	snprintf(path, sizeof(path), "/proc/%d/ns/ipc", (int)d->procs[0].hpid);
	if (stat("/proc/self/ns/ipc", &ours) < 0 || stat(path, &theirs) < 0)
		return dump_fail(d, NEG_ERRNO(), "cannot read its IPC namespace: %m");
	/* A container in migrd's own namespace (never one that migctl run made) owns nothing
	 * there that a restore would take away. */
	if (ours.st_ino == theirs.st_ino && ours.st_dev == theirs.st_dev)
		return 0;
	q.ns_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (q.ns_fd < 0)
		return dump_fail(d, NEG_ERRNO(), "cannot open its IPC namespace: %m");
	r = -pthread_create(&th, NULL, probe_run, &q);
	if (r == 0)
		pthread_join(th, NULL);
	safe_close(q.ns_fd);
	if (r < 0)
		return dump_fail(d, r, "cannot read its IPC namespace: %s", strerror(-r));
	if (q.r < 0)
		return dump_fail(d, q.r, "cannot read its IPC namespace (%s): %s", q.what,
				 strerror(-q.r));
	if (q.found[0])
		return dump_fail(d, -EOPNOTSUPP,
				 "its IPC namespace holds %s, which is not supported", q.found);
	return 0;
}

/* /proc/PID/mountinfo escapes space, tab, newline and backslash as \ooo. */
static void unescape(char *s)
{
	char *o = s;

	for (; *s; s++)
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
			s += 3;
		} else
			*o++ = *s;
	*o = 0;
}

struct mnt {
	char *key; /* "MAJOR:MINOR ROOT MOUNTPOINT": which file system, which part, where */
	char *fstype;
	char *source;
	char *point; /* points into key */
};

static void mnts_free(struct mnt *m, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(m[i].key);
		free(m[i].fstype);
		free(m[i].source);
	}
	free(m);
}

static int cmp_mnt(const void *a, const void *b)
{
	return strcmp(((const struct mnt *)a)->key, ((const struct mnt *)b)->key);
}

/* The mounts of path (a mountinfo file), their mount points prefixed with prefix (the root of
 * the task it belongs to, "" for /), sorted by key. */
static int read_mounts(const char *path, const char *prefix, struct mnt **ret, size_t *ret_n)
{
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	_cleanup_free_ char *line = NULL;
	struct mnt *v = NULL;
	size_t n = 0, cap = 0;
	int r = 0;

	if (!f)
		return NEG_ERRNO();
	while (getline(&line, &cap, f) > 0) {
		char *fields[16], *save = NULL, *dash = strstr(line, " - ");
		size_t nf = 0;
		struct mnt *nv;

		if (!dash) {
			r = -EBADMSG;
			break;
		}
		*dash = 0;
		for (char *t = strtok_r(line, " ", &save); t && nf < 5;
		     t = strtok_r(NULL, " ", &save))
			fields[nf++] = t;
		for (char *t = strtok_r(dash + 3, " \n", &save); t && nf < 7;
		     t = strtok_r(NULL, " \n", &save))
			fields[nf++] = t;
		if (nf < 7) {
			r = -EBADMSG;
			break;
		}
		unescape(fields[3]);
		unescape(fields[4]);
		unescape(fields[6]);
		nv = reallocarray(v, n + 1, sizeof(*v));
		if (!nv) {
			r = -ENOMEM;
			break;
		}
		v = nv;
		v[n] = (struct mnt){.fstype = strdup(fields[5]), .source = strdup(fields[6])};
		if (asprintf(&v[n].key, "%s %s %s%s", fields[2], fields[3], prefix,
			     streq(fields[4], "/") && prefix[0] ? "" : fields[4]) < 0)
			v[n].key = NULL;
		n++;
		if (!v[n - 1].key || !v[n - 1].fstype || !v[n - 1].source) {
			r = -ENOMEM;
			break;
		}
	}
	if (r < 0) {
		mnts_free(v, n);
		return r;
	}
	for (size_t i = 0; i < n; i++) /* the mount point is the key's third field */
		v[i].point = strchr(strchr(v[i].key, ' ') + 1, ' ') + 1;
	qsort(v, n, sizeof(*v), cmp_mnt);
	*ret = v;
	*ret_n = n;
	return 0;
}

static int check_mounts(struct dumper *d)
{
	struct mnt *theirs = NULL, *ours = NULL;
	size_t n_theirs = 0, n_ours = 0;
	char path[64], root[PATH_MAX];
	ssize_t k;
	int r;

	snprintf(path, sizeof(path), "/proc/%d/root", (int)d->procs[0].hpid);
	k = readlink(path, root, sizeof(root) - 1);
	if (k < 0)
		return dump_fail(d, NEG_ERRNO(), "cannot read its root: %m");
	root[k] = 0;
	snprintf(path, sizeof(path), "/proc/%d/mountinfo", (int)d->procs[0].hpid);
	/* An init that chrooted sees its mount points below its root. */
	r = read_mounts(path, streq(root, "/") ? "" : root, &theirs, &n_theirs);
	if (r >= 0)
		r = read_mounts("/proc/self/mountinfo", "", &ours, &n_ours);
	if (r < 0) {
		mnts_free(theirs, n_theirs);
		return dump_fail(d, r, "cannot read its mounts: %s", strerror(-r));
	}
	for (size_t i = 0; i < n_theirs && r >= 0; i++) {
		const struct mnt *m = &theirs[i];

		if (streq(m->point, "/proc") && streq(m->fstype, "proc"))
			continue; /* its own, which the restore mounts again */
		if (bsearch(m, ours, n_ours, sizeof(*ours), cmp_mnt))
			continue;
		r = dump_fail(d, -EOPNOTSUPP,
			      "its mount namespace has a mount that migrd's has not (%s %s on %s), "
			      "which a restore would lose: not supported",
			      m->fstype, m->source, m->point);
	}
	mnts_free(theirs, n_theirs);
	mnts_free(ours, n_ours);
	return r;
}

int dump_ns_check(struct dumper *d)
{
	int r;

	if (d->n_procs == 0)
		return 0;
	r = check_ipc(d);
	if (r >= 0)
		r = check_mounts(d);
	return r;
}
