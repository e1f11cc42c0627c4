/* Checkpoint of file descriptors: each fd is classified through our own duplicate of it
 * (pidfd_getfd), open file descriptions shared by several fds are recognised with kcmp(), and
 * anything we cannot restore is refused by name. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <linux/openat2.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "checkpoint/ct/dump-internal.h"
#include "checkpoint/ct/fdblob-internal.h"
#include "checkpoint/ct/net-internal.h"
#include "common/common.h"

#define FD_NAME_MAX  512
#define MQUEUE_MAGIC 0x19800202 /* ipc/mqueue.c; not in linux/magic.h */

struct fdctx {
	struct dumper *d;
	struct dproc *p;
	int fd;	  /* in the task */
	int ours; /* our duplicate */
	char link[FD_NAME_MAX];
	struct stat st;
	struct ct_image_fd *rec;
};

static int refuse(struct fdctx *c, const char *what)
{
	return dump_fail(c->d, -EOPNOTSUPP, "pid %d fd %d: %s is not supported", (int)c->p->pid,
			 c->fd, what);
}

static int fd_fail(struct fdctx *c, int r, const char *what)
{
	return dump_fail(c->d, r, "pid %d fd %d: %s: %s", (int)c->p->pid, c->fd, what,
			 strerror(-r));
}

static int kcmp_file(int a, int b)
{
	pid_t me = getpid();

	return (int)syscall(SYS_kcmp, me, me, KCMP_FILE, a, b);
}

static size_t inode_slot(dev_t dev, ino_t ino, size_t size)
{
	uint64_t h = ((uint64_t)ino ^ ((uint64_t)dev << 40)) * 0x9e3779b97f4a7c15ULL;

	return (size_t)(h >> 32) & (size - 1);
}

/* The inode's entry, or NULL when none of its descriptions was seen yet. */
static struct dinode *inode_find(struct dumper *d, const struct stat *st)
{
	if (d->inodes_size == 0)
		return NULL;
	for (size_t at = inode_slot(st->st_dev, st->st_ino, d->inodes_size); d->inodes[at].n_files;
	     at = (at + 1) & (d->inodes_size - 1))
		if (d->inodes[at].dev == st->st_dev && d->inodes[at].ino == st->st_ino)
			return &d->inodes[at];
	return NULL;
}

/* A new entry for the inode (one with no description yet): the table is an open-addressing
 * hash, a power of two in size, at most half full. */
static struct dinode *inode_add(struct dumper *d, const struct stat *st)
{
	struct dinode *e;
	size_t at;

	if (d->inodes_size < 2 * (d->n_inodes + 1)) {
		size_t size = MAX(64u, 2 * d->inodes_size);
		struct dinode *t = calloc(size, sizeof(*t)), *old = d->inodes;

		if (!t)
			return NULL;
		for (size_t i = 0; i < d->inodes_size; i++)
			if (old[i].n_files) {
				at = inode_slot(old[i].dev, old[i].ino, size);
				while (t[at].n_files)
					at = (at + 1) & (size - 1);
				t[at] = old[i];
			}
		free(old);
		d->inodes = t;
		d->inodes_size = size;
	}
	at = inode_slot(st->st_dev, st->st_ino, d->inodes_size);
	while (d->inodes[at].n_files)
		at = (at + 1) & (d->inodes_size - 1);
	e = &d->inodes[at];
	*e = (struct dinode){.dev = st->st_dev, .ino = st->st_ino};
	d->n_inodes++;
	return e;
}

/* The id of ours's open file description, whose first fd record is rec when it is new; ours
 * is kept (and owned by the table) when the description is new, else closed. The table is in
 * the order of the ids. Each inode's descriptions (most have one; a file opened alone by each
 * of many processes has many) are kept in kcmp() order, and found by bisection. */
static int file_id(struct dumper *d, int ours, const struct stat *st, struct ct_image_fd *rec,
		   uint64_t *ret_id, bool *ret_new)
{
	struct dinode *e = inode_find(d, st);
	size_t lo = 0, hi = e ? e->n_files : 0;
	uint32_t *nf;
	struct dfile *n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		struct dfile *f = &d->files[e->files[mid]];
		int k = kcmp_file(ours, f->fd);

		if (k < 0)
			return -errno;
		if (k == 0) {
			*ret_id = f->id;
			*ret_new = false;
			safe_close(ours);
			return 0;
		}
		if (k == 1)
			hi = mid;
		else
			lo = mid + 1;
	}
	if (d->n_files >= UINT32_MAX - 1)
		return -E2BIG;
	n = reallocarray(d->files, d->n_files + 1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	d->files = n;
	if (!e) {
		e = inode_add(d, st);
		if (!e)
			return -ENOMEM;
	}
	nf = reallocarray(e->files, e->n_files + 1, sizeof(*nf));
	if (!nf) {
		if (e->n_files == 0)
			d->n_inodes--; /* stays empty: a free slot again */
		return -ENOMEM;
	}
	e->files = nf;
	memmove(nf + lo + 1, nf + lo, (e->n_files - lo) * sizeof(*nf));
	nf[lo] = (uint32_t)d->n_files;
	e->n_files++;
	n[d->n_files] = (struct dfile){.fd = ours, .id = d->first_file_id + d->n_files, .rec = rec};
	*ret_id = n[d->n_files++].id;
	*ret_new = true;
	return 0;
}

static struct dfile *file_by_id(struct dumper *d, uint64_t id)
{
	if (id < d->first_file_id || id - d->first_file_id >= d->n_files)
		return NULL;
	return &d->files[id - d->first_file_id];
}

void dump_file_set_repair(struct dumper *d, uint64_t id, unsigned how)
{
	struct dfile *f = file_by_id(d, id);

	if (f)
		f->tcp_repair = how;
}

void dump_files_release(struct dumper *d, bool silent)
{
	for (size_t i = 0; i < d->n_files; i++) {
		if (d->files[i].tcp_repair && !silent)
			net_tcp_repair_off(d->files[i].fd, d->files[i].tcp_repair);
		safe_close(d->files[i].fd);
	}
	free(d->files);
	d->files = NULL;
	d->n_files = 0;
	for (size_t i = 0; i < d->inodes_size; i++)
		free(d->inodes[i].files);
	free(d->inodes);
	d->inodes = NULL;
	d->inodes_size = d->n_inodes = 0;
}

/* Whether an earlier fd record already holds this pipe's or FIFO's data: that of another
 * description of the same inode (the other end, or another open of the FIFO). */
static bool object_seen(struct dumper *d, const struct ct_image_fd *self, const struct stat *st)
{
	const struct dinode *e = inode_find(d, st);

	for (size_t i = 0; e && i < e->n_files; i++) {
		const struct dfile *f = &d->files[e->files[i]];

		if (f->rec != self &&
		    (f->rec->type == CT_IMAGE_FD_PIPE || f->rec->type == CT_IMAGE_FD_FIFO))
			return true;
	}
	return false;
}

/* Pipes and FIFOs: the buffered data goes with the first fd of the object. */
static int dump_pipe(struct fdctx *c, enum ct_image_fd_type type)
{
	struct fdblob b = {};
	uint8_t *data = NULL;
	size_t len = 0;
	int size, r;

	c->rec->type = type;
	c->rec->object = c->st.st_ino;
	if (!object_seen(c->d, c->rec, &c->st)) {
		size = fcntl(c->ours, F_GETPIPE_SZ);
		if (size < 0)
			return fd_fail(c, NEG_ERRNO(), "F_GETPIPE_SZ");
		r = net_pipe_peek(c->p->hpid, c->fd, c->ours, (size_t)size, &data, &len);
		if (r < 0)
			return fd_fail(c, r, "reading the pipe's buffered data");
		fdblob_u64(&b, (uint64_t)size);
		fdblob_str(&b, data, len);
		free(data);
	}
	return fdblob_take(&b, &c->rec->data, &c->rec->data_size);
}

static const char *anon_kind(const char *link)
{
	if (startswith(link, "anon_inode:"))
		return link + strlen("anon_inode:");
	return NULL;
}

static int dump_anon(struct fdctx *c, const char *kind)
{
	_cleanup_(ct_fdinfo_done) struct ct_fdinfo fi = {};
	struct fdblob b = {};
	const char *v;
	int r;

	r = ct_proc_read_fdinfo(c->p->hpid, c->fd, &fi);
	if (r < 0)
		return fd_fail(c, r, "reading its fdinfo");
	if (streq(kind, "[eventfd]")) {
		c->rec->type = CT_IMAGE_FD_EVENTFD;
		v = ct_fdinfo_get(&fi, "eventfd-count");
		if (!v)
			return fd_fail(c, -EBADMSG, "no eventfd-count in fdinfo");
		fdblob_u64(&b, strtoull(v, NULL, 16));
		v = ct_fdinfo_get(&fi, "eventfd-semaphore");
		fdblob_u64(&b, v ? strtoull(v, NULL, 10) : 0);
	} else if (streq(kind, "[signalfd]")) {
		c->rec->type = CT_IMAGE_FD_SIGNALFD;
		v = ct_fdinfo_get(&fi, "sigmask");
		if (!v)
			return fd_fail(c, -EBADMSG, "no sigmask in fdinfo");
		fdblob_u64(&b, strtoull(v, NULL, 16));
	} else if (streq(kind, "[timerfd]")) {
		unsigned long long vs, vn, is, in;
		const char *cl = ct_fdinfo_get(&fi, "clockid"), *tk = ct_fdinfo_get(&fi, "ticks"),
			   *fl = ct_fdinfo_get(&fi, "settime flags"),
			   *val = ct_fdinfo_get(&fi, "it_value"),
			   *itv = ct_fdinfo_get(&fi, "it_interval");

		c->rec->type = CT_IMAGE_FD_TIMERFD;
		if (!cl || !tk || !fl || !val || !itv ||
		    sscanf(val, "(%llu, %llu)", &vs, &vn) != 2 ||
		    sscanf(itv, "(%llu, %llu)", &is, &in) != 2)
			return fd_fail(c, -EBADMSG, "malformed timerfd fdinfo");
		fdblob_u64(&b, strtoull(cl, NULL, 10));
		fdblob_u64(&b, strtoull(fl, NULL, 8));
		fdblob_u64(&b, is * 1000000000ULL + in);
		fdblob_u64(&b, vs * 1000000000ULL + vn); /* remaining, relative */
		fdblob_u64(&b, strtoull(tk, NULL, 10));
	} else if (streq(kind, "[eventpoll]")) {
		c->rec->type = CT_IMAGE_FD_EPOLL;
		fdblob_u64(&b, fi.n_tfds);
		for (size_t i = 0; i < fi.n_tfds; i++) {
			fdblob_u64(&b, (uint64_t)fi.tfds[i].fd);
			fdblob_u64(&b, fi.tfds[i].events);
			fdblob_u64(&b, fi.tfds[i].data);
			fdblob_u64(&b, fi.tfds[i].ino);
		}
	} else if (streq(kind, "inotify"))
		return refuse(c, "inotify");
	else if (streq(kind, "[fanotify]"))
		return refuse(c, "fanotify");
	else if (streq(kind, "[pidfd]"))
		return refuse(c, "a pidfd");
	else if (streq(kind, "[userfaultfd]"))
		return refuse(c, "userfaultfd");
	else if (streq(kind, "[io_uring]"))
		return refuse(c, "io_uring");
	else {
		char what[FD_NAME_MAX + 32];

		snprintf(what, sizeof(what), "anon inode %.*s", FD_NAME_MAX, kind);
		return refuse(c, what);
	}
	return fdblob_take(&b, &c->rec->data, &c->rec->data_size);
}

static bool chr_supported(dev_t rdev)
{
	/* /dev/null, /dev/zero, /dev/full, /dev/random, /dev/urandom */
	return major(rdev) == 1 && (minor(rdev) == 3 || minor(rdev) == 5 || minor(rdev) == 7 ||
				    minor(rdev) == 8 || minor(rdev) == 9);
}

/* The root of the container's mount namespace: its init's root, and from there up as many
 * levels as that root lies below the namespace's (an init that chrooted). */
static int container_root(struct dumper *d)
{
	const struct dproc *init = &d->procs[0];
	char path[64];
	int fd;

	if (d->root_fd >= 0)
		return d->root_fd;
	snprintf(path, sizeof(path), "/proc/%d/root", (int)init->hpid);
	fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return NEG_ERRNO();
	for (const char *s = init->task.root; s && *s; s++)
		if (*s == '/' && s[1] && s[1] != '/') {
			int up = openat(fd, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);

			safe_close(fd);
			if (up < 0)
				return NEG_ERRNO();
			fd = up;
		}
	d->root_fd = fd;
	return fd;
}

/* Whether c->link, opened again by path as the restore will, is the file the fd holds. The
 * restored container sees migrd's mounts (its mount namespace is a copy of migrd's) with a /proc
 * of its own: so a path is looked up in migrd's namespace, and one under /proc in the
 * container's. It leads elsewhere, or nowhere, for a file on a mount the container made or that
 * migrd's namespace has since covered, and for file systems whose files have names but no place
 * in the tree. */
static int check_reopens(struct fdctx *c)
{
	struct open_how how = {.flags = O_PATH | O_CLOEXEC,
			       .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
	_cleanup_close_ int fd = -EBADF;
	struct stat st;

	if (streq(c->link, "/proc") || startswith(c->link, "/proc/")) {
		int root = container_root(c->d);

		if (root < 0)
			return fd_fail(c, root, "opening the container's root");
		fd = (int)syscall(SYS_openat2, root, c->link, &how, sizeof(how));
	} else
		fd = open(c->link, O_PATH | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0)
		return dump_fail(c->d, -EOPNOTSUPP,
				 "pid %d fd %d: %s cannot be opened again by its path (%m), "
				 "which is not supported",
				 (int)c->p->pid, c->fd, c->link);
	if (st.st_dev != c->st.st_dev || st.st_ino != c->st.st_ino)
		return dump_fail(
			c->d, -EOPNOTSUPP,
			"pid %d fd %d: its path %s leads to another file where the restore "
			"would open it (on a mount that covers it, or without the mount it is "
			"on), which is not supported",
			(int)c->p->pid, c->fd, c->link);
	return 0;
}

static int dump_path_fd(struct fdctx *c)
{
	const char *reason;
	size_t n = strlen(c->link);
	struct statfs sfs;
	int r;

	/* A message queue has a name (/NAME on its namespace's mqueue file system) but no path. */
	if (fstatfs(c->ours, &sfs) == 0 && sfs.f_type == MQUEUE_MAGIC) {
		char what[FD_NAME_MAX + 32];

		snprintf(what, sizeof(what), "the POSIX message queue %s", c->link);
		return refuse(c, what);
	}

	if (n > 10 && streq(c->link + n - 10, " (deleted)")) {
		if (startswith(c->link, "/memfd:")) {
			struct fdblob b = {};
			int seals = fcntl(c->ours, F_GET_SEALS);

			c->rec->type = CT_IMAGE_FD_MEMFD;
			c->rec->object = c->st.st_ino;
			c->link[n - 10] = 0;
			c->rec->path = strdup(c->link);
			fdblob_u64(&b, seals < 0 ? 0 : (uint64_t)seals);
			fdblob_u64(&b, (uint64_t)c->st.st_size);
			if (!c->rec->path)
				return -ENOMEM;
			c->rec->pos = (uint64_t)lseek(c->ours, 0, SEEK_CUR);
			r = dump_register_shm(c->d, c->p, fcntl(c->ours, F_DUPFD_CLOEXEC, 3),
					      c->st.st_ino);
			if (r < 0)
				return r;
			return fdblob_take(&b, &c->rec->data, &c->rec->data_size);
		}
		return dump_fail(c->d, -EOPNOTSUPP,
				 "pid %d fd %d: the file %s was deleted; it cannot be restored",
				 (int)c->p->pid, c->fd, c->link);
	}
	if (ct_image_path_check(c->link, &reason) < 0)
		return dump_fail(c->d, -EOPNOTSUPP, "pid %d fd %d: %s: %s", (int)c->p->pid, c->fd,
				 c->link, reason);
	if (S_ISREG(c->st.st_mode))
		c->rec->type = CT_IMAGE_FD_REG;
	else if (S_ISDIR(c->st.st_mode))
		c->rec->type = CT_IMAGE_FD_DIR;
	else if (S_ISCHR(c->st.st_mode)) {
		if (!chr_supported(c->st.st_rdev)) {
			char what[FD_NAME_MAX + 32];

			snprintf(what, sizeof(what), "the character device %s", c->link);
			return refuse(c, what);
		}
		c->rec->type = CT_IMAGE_FD_CHR;
	} else if (S_ISFIFO(c->st.st_mode)) {
		r = check_reopens(c);
		if (r < 0)
			return r;
		c->rec->path = strdup(c->link);
		return c->rec->path ? dump_pipe(c, CT_IMAGE_FD_FIFO) : -ENOMEM;
	} else
		return refuse(c, "this kind of file");
	r = check_reopens(c);
	if (r < 0)
		return r;
	c->rec->path = strdup(c->link);
	if (!c->rec->path)
		return -ENOMEM;
	if (S_ISREG(c->st.st_mode) || S_ISDIR(c->st.st_mode)) {
		off_t pos = lseek(c->ours, 0, SEEK_CUR);

		c->rec->pos = pos < 0 ? 0 : (uint64_t)pos;
	}
	return 0;
}

/* Whether st is of an anonymous pipe (pipefs), not a FIFO in a file system. */
static bool is_pipefs(struct dumper *d, const struct stat *st)
{
	if (!d->pipefs_known) {
		int fds[2];
		struct stat ps;

		if (pipe2(fds, O_CLOEXEC) < 0)
			return false; /* then readlink tells */
		if (fstat(fds[0], &ps) == 0) {
			d->pipefs_dev = ps.st_dev;
			d->pipefs_known = true;
		}
		close(fds[0]);
		close(fds[1]);
		if (!d->pipefs_known)
			return false;
	}
	return st->st_dev == d->pipefs_dev;
}

static int dump_one(struct fdctx *c)
{
	uint64_t id = 0;
	bool is_new = false;
	char path[64];
	ssize_t k;
	int fl, r;

	c->ours = (int)syscall(SYS_pidfd_getfd, c->p->pidfd, c->fd, 0);
	if (c->ours < 0)
		return fd_fail(c, NEG_ERRNO(), "pidfd_getfd");
	if (fstat(c->ours, &c->st) < 0) {
		r = fd_fail(c, NEG_ERRNO(), "fstat");
		safe_close(c->ours);
		return r;
	}
	/* Pipes and sockets are named as /proc shows them without asking it (~4 us a fd). */
	if (S_ISSOCK(c->st.st_mode) || (S_ISFIFO(c->st.st_mode) && is_pipefs(c->d, &c->st)))
		snprintf(c->link, sizeof(c->link), "%s:[%lu]",
			 S_ISSOCK(c->st.st_mode) ? "socket" : "pipe", (unsigned long)c->st.st_ino);
	else {
		snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)c->p->hpid, c->fd);
		k = readlink(path, c->link, sizeof(c->link) - 1);
		if (k < 0) {
			r = fd_fail(c, NEG_ERRNO(), "readlink");
			safe_close(c->ours);
			return r;
		}
		c->link[k] = 0;
	}
	fl = fcntl(c->ours, F_GETFL);
	c->rec->flags = fl < 0 ? 0 : (uint32_t)fl;
	/* file_id() keeps our duplicate for a new description and closes it otherwise. */
	r = file_id(c->d, c->ours, &c->st, c->rec, &id, &is_new);
	if (r < 0) {
		safe_close(c->ours);
		return fd_fail(c, r, "kcmp");
	}
	c->ours = file_by_id(c->d, id)->fd;
	c->rec->file_id = id;
	if (!is_new) {
		/* A description seen before: same record contents, data only once. */
		const struct ct_image_fd *first = file_by_id(c->d, id)->rec;

		c->rec->type = first->type;
		c->rec->pos = first->pos;
		c->rec->object = first->object;
		c->rec->path = first->path ? strdup(first->path) : NULL;
		if (first->path && !c->rec->path)
			return -ENOMEM;
		return 0;
	}
	if (S_ISFIFO(c->st.st_mode) && startswith(c->link, "pipe:"))
		return dump_pipe(c, CT_IMAGE_FD_PIPE);
	if (S_ISSOCK(c->st.st_mode))
		return net_dump_socket(c->d, c->p, c->fd, c->ours, c->st.st_ino, c->rec);
	if (anon_kind(c->link))
		return dump_anon(c, anon_kind(c->link));
	return dump_path_fd(c);
}

static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;

	return (x > y) - (x < y);
}

static int list_fds(struct dumper *d, struct dproc *p, int **ret, size_t *ret_n)
{
	char path[64];
	DIR *dir;
	struct dirent *e;
	int *v = NULL;
	size_t n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)p->hpid);
	dir = opendir(path);
	if (!dir)
		return dump_fail(d, NEG_ERRNO(), "pid %d: cannot list its fds: %m", (int)p->pid);
	while ((e = readdir(dir))) {
		int *nv;
		pid_t fd;

		if (ct_proc_parse_pid_name(e->d_name, &fd) < 0 && !streq(e->d_name, "0"))
			continue;
		if (n >= CT_IMAGE_FDS_MAX) {
			closedir(dir);
			free(v);
			return dump_fail(d, -E2BIG, "pid %d: too many fds", (int)p->pid);
		}
		nv = reallocarray(v, n + 1, sizeof(*v));
		if (!nv) {
			closedir(dir);
			free(v);
			return -ENOMEM;
		}
		v = nv;
		v[n++] = streq(e->d_name, "0") ? 0 : fd;
	}
	closedir(dir);
	qsort(v, n, sizeof(*v), cmp_int);
	*ret = v;
	*ret_n = n;
	return 0;
}

/* Whether a record before rec shares its open file description: in any process (every_process)
 * or in rec's own. Only asked for fds that hold locks. */
static bool description_seen(struct dumper *d, const struct dproc *p, const struct ct_image_fd *rec,
			     bool every_process)
{
	for (size_t i = 0; i < d->n_procs; i++) {
		const struct dproc *q = &d->procs[i];

		if (q != p && !every_process)
			continue;
		for (size_t j = 0; j < q->fds.n_fds && &q->fds.fds[j] != rec; j++)
			if (q->fds.fds[j].file_id == rec->file_id)
				return true;
	}
	return false;
}

/* The file locks held through c's fd (fdinfo's "lock:" lines). A process's POSIX locks show on
 * each of its fds that share the description, flock and OFD locks on every fd of the description
 * in any process: each is recorded on the first such fd. Leases and anything else a restore
 * could not take back are refused. */
static int dump_locks(struct fdctx *c, const char *info)
{
	_cleanup_free_ struct ct_proc_lock *locks = NULL;
	size_t n = 0;
	int r;

	if (!strstr(info, "\nlock:"))
		return 0;
	r = ct_proc_parse_locks(info, strlen(info), &locks, &n);
	if (r < 0)
		return fd_fail(c, r, "reading its locks");
	for (size_t i = 0; i < n; i++) {
		const struct ct_proc_lock *l = &locks[i];
		struct ct_image_lock *nl;
		uint32_t kind;

		switch (l->kind) {
		case CT_PROC_LOCK_FLOCK:
			kind = CT_IMAGE_LOCK_FLOCK;
			break;
		case CT_PROC_LOCK_POSIX:
			kind = CT_IMAGE_LOCK_POSIX;
			break;
		case CT_PROC_LOCK_OFD:
			kind = CT_IMAGE_LOCK_OFD;
			break;
		default:
			return dump_fail(c->d, -EOPNOTSUPP,
					 "pid %d fd %d: its lock \"%s\" on %s is not supported",
					 (int)c->p->pid, c->fd, l->name, c->link);
		}
		if (l->start > INT64_MAX || (l->end != UINT64_MAX && l->end > INT64_MAX))
			return fd_fail(c, -EBADMSG, "reading its locks");
		if (description_seen(c->d, c->p, c->rec, kind != CT_IMAGE_LOCK_POSIX))
			continue;
		nl = reallocarray(c->rec->locks, c->rec->n_locks + 1, sizeof(*nl));
		if (!nl)
			return -ENOMEM;
		c->rec->locks = nl;
		nl[c->rec->n_locks++] = (struct ct_image_lock){
			.kind = kind, .write = l->write, .start = l->start, .end = l->end};
	}
	return 0;
}

/* FD_CLOEXEC, the fd's own flag, shows as O_CLOEXEC among the flags in its fdinfo, where its
 * locks show too. Read through the directory, opened once (~1 us less a fd than by path). */
static int read_fdinfo(struct fdctx *c, int dir_fd, char *buf, size_t size)
{
	char name[16];
	ssize_t k;
	int fd;

	snprintf(name, sizeof(name), "%d", c->fd);
	fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fd_fail(c, NEG_ERRNO(), "reading its fdinfo");
	k = read(fd, buf, size - 1);
	if (k < 0) {
		k = NEG_ERRNO();
		close(fd);
		return fd_fail(c, (int)k, "reading its fdinfo");
	}
	close(fd);
	buf[k] = 0;
	return (size_t)k < size - 1 ? 0 : -EFBIG; /* -EFBIG: more than buf holds */
}

int dump_fds(struct dumper *d, struct dproc *p)
{
	_cleanup_free_ int *fds = NULL;
	_cleanup_close_ int info_dir = -EBADF;
	char path[64], small[1024];
	size_t n = 0;
	int r;

	p->fds.pid = (uint32_t)p->pid;
	r = list_fds(d, p, &fds, &n);
	if (r < 0)
		return r;
	p->fds.fds = calloc(MAX(n, 1u), sizeof(*p->fds.fds));
	if (!p->fds.fds)
		return -ENOMEM;
	snprintf(path, sizeof(path), "/proc/%d/fdinfo", (int)p->hpid);
	info_dir = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (info_dir < 0)
		return dump_fail(d, NEG_ERRNO(), "pid %d: cannot open %s: %m", (int)p->pid, path);
	for (size_t i = 0; i < n; i++) {
		struct fdctx c = {.d = d, .p = p, .fd = fds[i], .rec = &p->fds.fds[i]};
		_cleanup_free_ char *big = NULL;
		const char *info = small, *f;
		unsigned long fl;

		c.rec->fd = (uint32_t)fds[i];
		p->fds.n_fds = i + 1;
		r = dump_one(&c);
		if (r < 0)
			return r;
		r = read_fdinfo(&c, info_dir, small, sizeof(small));
		if (r == -EFBIG) { /* many locks, or an epoll's long list */
			snprintf(path, sizeof(path), "/proc/%d/fdinfo/%d", (int)p->hpid, fds[i]);
			r = read_full_file(path, 1 << 20, &big, NULL);
			if (r < 0)
				return fd_fail(&c, r, "reading its fdinfo");
			info = big;
		} else if (r < 0)
			return r;
		f = strstr(info, "flags:");
		if (!f)
			return fd_fail(&c, -EBADMSG, "no flags in its fdinfo");
		fl = strtoul(f + 6, NULL, 8);
		c.rec->fd_flags = (fl & O_CLOEXEC) ? FD_CLOEXEC : 0;
		c.rec->flags = (uint32_t)(fl & ~(unsigned long)O_CLOEXEC);
		r = dump_locks(&c, info);
		if (r < 0)
			return r;
	}
	return 0;
}

/* After every process: sockets must be connected within the container, epoll interest lists
 * must point at fds that exist. */
int dump_fds_check(struct dumper *d)
{
	return net_dump_check(d);
}
