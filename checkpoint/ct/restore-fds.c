/* Restore of file descriptors: paths are opened by the task itself (inside its container's
 * view), kernel objects (pipes, sockets, eventfd, timerfd, signalfd, epoll, memfd) are made here
 * and passed in over the fd channel; one object per open file description, shared as before. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "checkpoint/ct/fdblob-internal.h"
#include "checkpoint/ct/net-internal.h"
#include "checkpoint/ct/ptrace-internal.h"
#include "checkpoint/ct/restore-internal.h"
#include "common/common.h"

#define TFD_IOC_SET_TICKS_ _IOW('T', 0, uint64_t)

/* Flags that belong to the open file description and that F_SETFL can set. */
#define SETFL_MASK (O_APPEND | O_NONBLOCK | O_ASYNC | O_DIRECT | O_NOATIME)

/* The objects are found through an open-addressing index of their positions plus one (a power
 * of two in size, at most half full): a restore of thousands of fds looks one up for each. */
static size_t obj_slot(const struct restorer *R, int kind, uint64_t key)
{
	uint64_t h = (key ^ ((uint64_t)kind << 56)) * 0x9e3779b97f4a7c15ULL;

	return (size_t)(h >> 32) & (R->obj_index_size - 1);
}

static int obj_reindex(struct restorer *R, size_t size)
{
	uint32_t *idx = calloc(size, sizeof(*idx));

	if (!idx)
		return -ENOMEM;
	free(R->obj_index);
	R->obj_index = idx;
	R->obj_index_size = size;
	for (size_t i = 0; i < R->n_objs; i++) {
		size_t at = obj_slot(R, R->objs[i].kind, R->objs[i].key);

		while (idx[at])
			at = (at + 1) & (size - 1);
		idx[at] = (uint32_t)(i + 1);
	}
	return 0;
}

struct robj *restore_obj_find(struct restorer *R, int kind, uint64_t key)
{
	if (R->obj_index_size == 0)
		return NULL;
	for (size_t at = obj_slot(R, kind, key); R->obj_index[at];
	     at = (at + 1) & (R->obj_index_size - 1)) {
		struct robj *o = &R->objs[R->obj_index[at] - 1];

		if (o->kind == kind && o->key == key)
			return o;
	}
	return NULL;
}

int restore_obj_add(struct restorer *R, int kind, uint64_t key, int fd, int fd2)
{
	struct robj *n = NULL;
	int r = -ENOMEM;

	if (R->n_objs < UINT32_MAX - 1)
		n = reallocarray(R->objs, R->n_objs + 1, sizeof(*n));
	if (n) {
		R->objs = n;
		n[R->n_objs++] = (struct robj){.key = key, .kind = kind, .fd = fd, .fd2 = fd2};
		if (R->obj_index_size < 2 * R->n_objs) {
			size_t size = 64;

			while (size < 4 * R->n_objs)
				size *= 2;
			r = obj_reindex(R, size);
			if (r < 0)
				R->n_objs--;
		} else {
			size_t at = obj_slot(R, kind, key);

			while (R->obj_index[at])
				at = (at + 1) & (R->obj_index_size - 1);
			R->obj_index[at] = (uint32_t)R->n_objs;
			r = 0;
		}
	}
	if (r < 0) {
		safe_close(fd);
		safe_close(fd2);
	}
	return r;
}

void restore_objs_free(struct restorer *R)
{
	for (size_t i = 0; i < R->n_objs; i++) {
		safe_close(R->objs[i].fd);
		safe_close(R->objs[i].fd2);
	}
	free(R->objs);
	R->objs = NULL;
	R->n_objs = 0;
	free(R->obj_index);
	R->obj_index = NULL;
	R->obj_index_size = 0;
	free(R->file_ids);
	R->file_ids = NULL;
	R->n_file_ids = 0;
	free(R->socks);
	R->socks = NULL;
	R->n_socks = 0;
}

static bool chr_allowed(dev_t rdev)
{
	return major(rdev) == 1 && (minor(rdev) == 3 || minor(rdev) == 5 || minor(rdev) == 7 ||
				    minor(rdev) == 8 || minor(rdev) == 9);
}

static int check_path(struct restorer *R, uint32_t pid, const char *what, const char *path,
		      int type)
{
	struct stat st;
	const char *reason;

	if (ct_image_path_check(path, &reason) < 0)
		return restore_fail(R, -EINVAL, "pid %u %s: %s: %s", pid, what, path, reason);
	if (stat(path, &st) < 0)
		return restore_fail(R, -ENOENT, "pid %u %s: %s no longer exists", pid, what, path);
	if (type == CT_IMAGE_FD_CHR && (!S_ISCHR(st.st_mode) || !chr_allowed(st.st_rdev)))
		return restore_fail(R, -EPERM, "pid %u %s: %s is not an allowed device", pid, what,
				    path);
	if (type == CT_IMAGE_FD_FIFO && !S_ISFIFO(st.st_mode))
		return restore_fail(R, -EINVAL, "pid %u %s: %s is no longer a FIFO", pid, what,
				    path);
	if (type == CT_IMAGE_FD_REG && !S_ISREG(st.st_mode))
		return restore_fail(R, -EINVAL, "pid %u %s: %s is no longer a regular file", pid,
				    what, path);
	if (type == CT_IMAGE_FD_DIR && !S_ISDIR(st.st_mode))
		return restore_fail(R, -EINVAL, "pid %u %s: %s is no longer a directory", pid, what,
				    path);
	return 0;
}

int restore_check_files(struct restorer *R)
{
	for (size_t i = 0; i < R->img->n_procs; i++) {
		const struct ct_image_process *p = &R->img->procs[i];
		uint32_t pid = p->task.pid;
		char what[64];
		int r;

		r = check_path(R, pid, "cwd", p->task.cwd, CT_IMAGE_FD_DIR);
		if (r < 0)
			return r;
		for (size_t j = 0; j < p->mm.n_vmas; j++) {
			const struct ct_image_vma *v = &p->mm.vmas[j];

			if (v->kind != CT_IMAGE_VMA_FILE_PRIVATE &&
			    v->kind != CT_IMAGE_VMA_FILE_SHARED)
				continue;
			snprintf(what, sizeof(what), "mapping %#" PRIx64, v->start);
			r = check_path(R, pid, what, v->path, CT_IMAGE_FD_REG);
			if (r < 0)
				return r;
		}
		for (size_t j = 0; j < p->fds.n_fds; j++) {
			const struct ct_image_fd *f = &p->fds.fds[j];

			if (f->type != CT_IMAGE_FD_REG && f->type != CT_IMAGE_FD_DIR &&
			    f->type != CT_IMAGE_FD_CHR && f->type != CT_IMAGE_FD_FIFO)
				continue;
			snprintf(what, sizeof(what), "fd %u", f->fd);
			r = check_path(R, pid, what, f->path, (int)f->type);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* The index of the first of v[n] (sorted) above key, or at or above it. */
static size_t bound(const uint64_t *v, size_t n, uint64_t key, bool above)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (v[mid] < key || (above && v[mid] == key))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* How many fds of the image share the description: from every fd's file id, sorted once. */
static unsigned file_users(struct restorer *R, uint64_t file_id)
{
	if (!R->file_ids) {
		size_t n = 0;

		for (size_t i = 0; i < R->img->n_procs; i++)
			n += R->img->procs[i].fds.n_fds;
		R->file_ids = malloc(MAX(n, 1u) * sizeof(uint64_t));
		if (!R->file_ids)
			return 2; /* shared, for all we know: a reference kept costs nothing */
		for (size_t i = 0; i < R->img->n_procs; i++)
			for (size_t j = 0; j < R->img->procs[i].fds.n_fds; j++)
				R->file_ids[R->n_file_ids++] = R->img->procs[i].fds.fds[j].file_id;
		qsort(R->file_ids, R->n_file_ids, sizeof(uint64_t), cmp_u64);
	}
	return (unsigned)(bound(R->file_ids, R->n_file_ids, file_id, true) -
			  bound(R->file_ids, R->n_file_ids, file_id, false));
}

static int fifo_object(struct restorer *R, struct rproc *p, const struct ct_image_fd *f);

/* Regular files, directories, devices, FIFOs: opened by the task, at the dumped offset. */
static int open_path(struct restorer *R, struct rproc *p, const struct ct_image_fd *f)
{
	int flags = (int)f->flags & ~(O_CREAT | O_EXCL | O_TRUNC | O_NOCTTY | O_CLOEXEC);
	bool fifo = f->type == CT_IMAGE_FD_FIFO;
	_cleanup_free_ struct restore_batch *b = malloc(sizeof(*b));
	long t;
	int r;

	if (!b)
		return -ENOMEM;

	/* A FIFO: we hold it open both ways (with its data back in it), so that the task's
	 * open, non-blocking for the moment, finds its other end. */
	if (fifo) {
		r = fifo_object(R, p, f);
		if (r < 0)
			return restore_fail(R, r, "pid %u fd %u: FIFO %s: %s", p->img->task.pid,
					    f->fd, f->path, strerror(-r));
	}
	r = restore_poke(R, p, p->scratch, f->path, strlen(f->path) + 1);
	if (r >= 0)
		r = restore_call(R, p, p->hpid, "open", SYS_openat, AT_FDCWD, (long)p->scratch,
				 flags | (fifo ? O_NONBLOCK : 0), 0, 0, 0, &t);
	if (r < 0)
		return restore_fail(R, r, "pid %u fd %u: cannot open %s", p->img->task.pid, f->fd,
				    f->path);
	/* What follows the open goes to the task together. */
	restore_batch_init(b, p, p->hpid);
	if (fifo)
		r = restore_batch_add(R, b, "fcntl", SYS_fcntl, t, F_SETFL, flags & SETFL_MASK, 0,
				      0, 0);
	if (r >= 0 && f->pos && (f->type == CT_IMAGE_FD_REG || f->type == CT_IMAGE_FD_DIR))
		r = restore_batch_add(R, b, "lseek", SYS_lseek, t, (long)f->pos, SEEK_SET, 0, 0, 0);
	if (r >= 0)
		r = restore_fd_move(R, b, (int)t, (int)f->fd, f->fd_flags & FD_CLOEXEC);
	if (r < 0 || file_users(R, f->file_id) < 2)
		return r;
	/* Shared with other fds: keep a reference to hand to them. */
	t = syscall(SYS_pidfd_getfd, p->pidfd, f->fd, 0);
	if (t < 0)
		return restore_fail(R, NEG_ERRNO(), "pid %u fd %u: pidfd_getfd: %m",
				    p->img->task.pid, f->fd);
	return restore_obj_add(R, OBJ_FILE, f->file_id, (int)t, -1);
}

/* The FIFO held open both ways, with its data back in it: opened by the task (its view of
 * the path), taken over by us. */
static int fifo_object(struct restorer *R, struct rproc *p, const struct ct_image_fd *f)
{
	struct fdblob_reader rd = {f->data, f->data_size};
	uint64_t size;
	size_t len = 0;
	const uint8_t *data;
	long t;
	int fd, r;

	if (restore_obj_find(R, OBJ_PIPE, f->object))
		return 0;
	r = restore_poke(R, p, p->scratch, f->path, strlen(f->path) + 1);
	if (r >= 0)
		r = restore_call(R, p, p->hpid, "open", SYS_openat, AT_FDCWD, (long)p->scratch,
				 O_RDWR | O_NONBLOCK | O_CLOEXEC, 0, 0, 0, &t);
	if (r < 0)
		return r;
	fd = (int)syscall(SYS_pidfd_getfd, p->pidfd, (int)t, 0);
	r = fd < 0 ? NEG_ERRNO() : 0;
	(void)restore_call(R, p, p->hpid, "close", SYS_close, t, 0, 0, 0, 0, 0, NULL);
	if (r < 0)
		return r;
	r = restore_obj_add(R, OBJ_PIPE, f->object, fd, -1);
	if (r < 0 || f->data_size == 0)
		return r;
	size = fdblob_get_u64(&rd);
	data = fdblob_get_str(&rd, CT_IMAGE_FD_DATA_MAX, &len);
	if (rd.bad)
		return -EBADMSG;
	if (size && fcntl(fd, F_SETPIPE_SZ, (int)size) < 0)
		return NEG_ERRNO();
	if (len && write(fd, data, len) != (ssize_t)len)
		return -EIO;
	return 0;
}

/* A named unix socket gets its name from the task, inside its view: a socket file left by
 * the dumped container is replaced, anything else at that path is not touched. */
static int bind_in_task(struct restorer *R, struct rproc *p, const struct ct_image_fd *f)
{
	struct sockaddr_un sa;
	socklen_t len;
	struct stat st;
	int backlog, r;
	long res = 0;

	if (net_unix_name(f, &sa, &len, &backlog) <= 0)
		return 0;
	r = restore_poke(R, p, p->scratch, &sa, sizeof(sa));
	for (int attempt = 0; r >= 0; attempt++) {
		const long args[6] = {f->fd, (long)p->scratch, len};

		r = ct_inject_syscall_site(p->hpid, p->site, SYS_bind, args, &res, NULL);
		if (r < 0 || res != -EADDRINUSE || attempt > 0 || !sa.sun_path[0])
			break;
		/* Only a socket (the old one's) is removed; lstat in the task's view. */
		r = restore_call(R, p, p->hpid, "lstat", SYS_newfstatat, AT_FDCWD,
				 (long)p->scratch + offsetof(struct sockaddr_un, sun_path),
				 (long)p->scratch + 256, AT_SYMLINK_NOFOLLOW, 0, 0, NULL);
		if (r >= 0) {
			struct iovec l = {&st, sizeof(st)},
				     rm = {(void *)(p->scratch + 256), sizeof(st)};

			if (process_vm_readv(p->hpid, &l, 1, &rm, 1, 0) != (ssize_t)sizeof(st))
				r = -EIO;
		}
		if (r >= 0 && !S_ISSOCK(st.st_mode))
			break;
		if (r >= 0)
			r = restore_call(R, p, p->hpid, "unlink", SYS_unlinkat, AT_FDCWD,
					 (long)p->scratch + offsetof(struct sockaddr_un, sun_path),
					 0, 0, 0, 0, NULL);
	}
	if (r >= 0 && res < 0 && res > -4096)
		r = (int)res;
	if (r >= 0 && backlog >= 0)
		r = restore_call(R, p, p->hpid, "listen", SYS_listen, f->fd, backlog, 0, 0, 0, 0,
				 NULL);
	if (r < 0)
		return restore_fail(R, r, "pid %u fd %u: binding the unix socket %s failed: %s",
				    p->img->task.pid, f->fd, sa.sun_path[0] ? sa.sun_path : "@...",
				    strerror(-r));
	return 0;
}

static int make_pipe(struct restorer *R, const struct ct_image_fd *f, int *ret)
{
	struct robj *o = restore_obj_find(R, OBJ_PIPE, f->object);
	int fds[2], r;

	if (!o) {
		struct fdblob_reader rd = {f->data, f->data_size};
		uint64_t size = fdblob_get_u64(&rd);
		size_t len = 0;
		const uint8_t *data = fdblob_get_str(&rd, CT_IMAGE_FD_DATA_MAX, &len);

		if (pipe2(fds, O_CLOEXEC) < 0)
			return NEG_ERRNO();
		if (!rd.bad && size && fcntl(fds[1], F_SETPIPE_SZ, (int)size) < 0) {
			r = NEG_ERRNO();
			close(fds[0]);
			close(fds[1]);
			return r;
		}
		if (!rd.bad && len && write(fds[1], data, len) != (ssize_t)len) {
			close(fds[0]);
			close(fds[1]);
			return -EIO;
		}
		r = restore_obj_add(R, OBJ_PIPE, f->object, fds[0], fds[1]);
		if (r < 0)
			return r;
		o = &R->objs[R->n_objs - 1];
	}
	*ret = fcntl((f->flags & O_ACCMODE) == O_WRONLY ? o->fd2 : o->fd, F_DUPFD_CLOEXEC, 3);
	return *ret < 0 ? NEG_ERRNO() : 0;
}

static int make_anon(struct restorer *R, const struct ct_image_fd *f, int *ret)
{
	struct fdblob_reader rd = {f->data, f->data_size};
	int fd = -1;

	switch (f->type) {
	case CT_IMAGE_FD_EVENTFD: {
		uint64_t count = fdblob_get_u64(&rd), sem = fdblob_get_u64(&rd);

		if (count > UINT32_MAX) {
			/* eventfd() takes an unsigned int: add the rest by writing. */
			fd = eventfd(0, EFD_CLOEXEC | (sem ? EFD_SEMAPHORE : 0));
			if (fd >= 0 && write(fd, &count, 8) != 8) {
				close(fd);
				return -EIO;
			}
		} else
			fd = eventfd((unsigned)count, EFD_CLOEXEC | (sem ? EFD_SEMAPHORE : 0));
		break;
	}
	case CT_IMAGE_FD_SIGNALFD: {
		uint64_t mask = fdblob_get_u64(&rd);

		fd = (int)syscall(SYS_signalfd4, -1, &mask, 8, SFD_CLOEXEC);
		break;
	}
	case CT_IMAGE_FD_TIMERFD: {
		uint64_t clk = fdblob_get_u64(&rd), fl = fdblob_get_u64(&rd),
			 itv = fdblob_get_u64(&rd),
			 val = restore_timer_left(R, (int)clk, fdblob_get_u64(&rd)),
			 ticks = fdblob_get_u64(&rd);
		struct itimerspec its = {{(time_t)(itv / 1000000000), (long)(itv % 1000000000)},
					 {(time_t)(val / 1000000000), (long)(val % 1000000000)}};
		int flags = 0;

		/* A periodic timer that fired shows 0 left until it is read: next expiry is one
		 * interval away. */
		if (!val && itv)
			its.it_value = its.it_interval;
		/* The time left is relative, but a timer that is to be cancelled when the wall
		 * clock is set (TFD_TIMER_CANCEL_ON_SET, with TFD_TIMER_ABSTIME on a realtime
		 * clock) can only be set absolute. */
		if ((fl & TFD_TIMER_CANCEL_ON_SET) && (fl & TFD_TIMER_ABSTIME) &&
		    (clk == CLOCK_REALTIME || clk == CLOCK_REALTIME_ALARM) &&
		    (its.it_value.tv_sec || its.it_value.tv_nsec)) {
			struct timespec now;

			if (clock_gettime((clockid_t)clk, &now) < 0)
				return NEG_ERRNO();
			its.it_value.tv_sec += now.tv_sec;
			its.it_value.tv_nsec += now.tv_nsec;
			if (its.it_value.tv_nsec >= 1000000000) {
				its.it_value.tv_sec++;
				its.it_value.tv_nsec -= 1000000000;
			}
			flags = TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET;
		}
		fd = timerfd_create((int)clk, TFD_CLOEXEC);
		if (fd >= 0 && (val || itv) && timerfd_settime(fd, flags, &its, NULL) < 0) {
			close(fd);
			return NEG_ERRNO();
		}
		if (fd >= 0 && ticks && ioctl(fd, TFD_IOC_SET_TICKS_, &ticks) < 0) {
			close(fd);
			return NEG_ERRNO();
		}
		break;
	}
	case CT_IMAGE_FD_EPOLL:
		fd = epoll_create1(EPOLL_CLOEXEC);
		break;
	default:
		return -EINVAL;
	}
	if (rd.bad) {
		safe_close(fd);
		return -EBADMSG;
	}
	if (fd < 0)
		return NEG_ERRNO();
	*ret = fd;
	return 0;
}

static int cmp_sock_ref(const void *a, const void *b)
{
	const struct restore_sock_ref *x = a, *y = b;

	if (x->object != y->object)
		return x->object < y->object ? -1 : 1;
	return (x->seq > y->seq) - (x->seq < y->seq);
}

/* The image's first socket record of that inode (in the order of processes and fds): from
 * every socket record, sorted once by inode. NULL: none, or no memory to sort them. */
static int cmp_sock_object(const void *key, const void *elem)
{
	uint64_t k = *(const uint64_t *)key, o = ((const struct restore_sock_ref *)elem)->object;

	return (k > o) - (k < o);
}

static const struct ct_image_fd *find_sock_record(struct restorer *R, uint64_t ino)
{
	const struct restore_sock_ref *e;

	if (!R->socks) {
		size_t n = 0;

		for (size_t i = 0; i < R->img->n_procs; i++)
			n += R->img->procs[i].fds.n_fds;
		R->socks = malloc(MAX(n, 1u) * sizeof(*R->socks));
		if (!R->socks)
			return NULL;
		for (size_t i = 0; i < R->img->n_procs; i++)
			for (size_t j = 0; j < R->img->procs[i].fds.n_fds; j++) {
				const struct ct_image_fd *f = &R->img->procs[i].fds.fds[j];

				if (f->type == CT_IMAGE_FD_UNIX || f->type == CT_IMAGE_FD_TCP ||
				    f->type == CT_IMAGE_FD_UDP)
					R->socks[R->n_socks++] = (struct restore_sock_ref){
						.object = f->object, .seq = R->n_socks, .rec = f};
			}
		qsort(R->socks, R->n_socks, sizeof(*R->socks), cmp_sock_ref);
	}
	e = bsearch(&ino, R->socks, R->n_socks, sizeof(*R->socks), cmp_sock_object);
	while (e && e > R->socks && e[-1].object == ino)
		e--;
	return e ? e->rec : NULL;
}

static int make_socket(struct restorer *R, struct rproc *p, const struct ct_image_fd *f, int *ret)
{
	struct robj *o = restore_obj_find(R, OBJ_SOCK, f->object);
	char err[256] = "";
	uint64_t peer_ino = 0;
	int r, a = -1, b = -1;

	if (!o) {
		if (net_unix_record_peer(f, &peer_ino) >= 0 && peer_ino) {
			const struct ct_image_fd *peer = find_sock_record(R, peer_ino);

			if (!peer)
				return restore_fail(R, -EINVAL,
						    "pid %u fd %u: its peer socket is "
						    "not in the image",
						    p->img->task.pid, f->fd);
			r = net_restore_unix_pair(f, peer, &a, &b, err, sizeof(err));
			if (r >= 0)
				r = net_unix_refill(f, b);
			if (r >= 0)
				r = net_unix_refill(peer, a);
			if (r >= 0)
				r = restore_obj_add(R, OBJ_SOCK, peer->object, b, -1);
			else
				safe_close(b);
		} else
			r = net_restore_socket(f, R->netns_fd, &a, err, sizeof(err));
		if (r >= 0)
			r = restore_obj_add(R, OBJ_SOCK, f->object, a, -1);
		else
			safe_close(a);
		if (r < 0)
			return restore_fail(R, r, "pid %u fd %u: socket: %s", p->img->task.pid,
					    f->fd, err[0] ? err : strerror(-r));
		o = restore_obj_find(R, OBJ_SOCK, f->object);
	}
	*ret = fcntl(o->fd, F_DUPFD_CLOEXEC, 3);
	return *ret < 0 ? NEG_ERRNO() : 0;
}

static int make_memfd(struct restorer *R, const struct ct_image_fd *f, int *ret)
{
	int shm = restore_shm_fd(R, f->object), fd;
	char path[64];

	if (shm < 0)
		return -ENOENT;
	/* A description of its own (offset, flags), on the same memory. */
	snprintf(path, sizeof(path), "/proc/self/fd/%d", shm);
	fd = open(path, ((f->flags & O_ACCMODE) == O_RDONLY ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (fd < 0)
		return NEG_ERRNO();
	if (f->pos && lseek(fd, (off_t)f->pos, SEEK_SET) < 0) {
		close(fd);
		return NEG_ERRNO();
	}
	*ret = fd;
	return 0;
}

/* Files the task opens by path (regular files, directories, devices), waiting to be opened
 * together: one batch of opens, whose results come back, then one batch that seeks and moves
 * them into place. Ordered by target, the opens give the lowest free numbers in that order, at
 * most the targets (which are free): moved from the last down, as restore_install_fds() does. */
#define PATH_GROUP_MAX RESTORE_BATCH_MAX
struct path_group {
	size_t n, data_len;
	const struct ct_image_fd *f[PATH_GROUP_MAX];
};

static int cmp_path_target(const void *a, const void *b)
{
	const struct ct_image_fd *x = *(const struct ct_image_fd *const *)a,
				 *y = *(const struct ct_image_fd *const *)b;

	return (x->fd > y->fd) - (x->fd < y->fd);
}

static int path_flush(struct restorer *R, struct rproc *p, struct path_group *g)
{
	_cleanup_free_ struct restore_batch *b = malloc(sizeof(*b));
	long got[PATH_GROUP_MAX];
	size_t n = g->n, done = 0;
	int r = 0;

	g->n = g->data_len = 0;
	if (n == 0)
		return 0;
	if (!b)
		return -ENOMEM;
	qsort(g->f, n, sizeof(g->f[0]), cmp_path_target);
	restore_batch_init(b, p, p->hpid);
	for (size_t i = 0; r >= 0 && i < n; i++) {
		const struct ct_image_fd *f = g->f[i];
		int flags = (int)f->flags & ~(O_CREAT | O_EXCL | O_TRUNC | O_NOCTTY | O_CLOEXEC);
		unsigned long at;

		r = restore_batch_data(R, b, f->path, strlen(f->path) + 1, &at);
		if (r >= 0)
			r = restore_batch_add(R, b, "open", SYS_openat, AT_FDCWD, (long)at, flags,
					      0, 0, 0);
	}
	if (r >= 0)
		r = restore_batch_run(R, b, got, &done);
	if (r < 0)
		return r;
	if (done < n)
		return restore_fail(R, (int)got[done], "pid %u fd %u: cannot open %s: %s",
				    p->img->task.pid, g->f[done]->fd, g->f[done]->path,
				    strerror((int)-got[done]));
	for (size_t i = 0; i < n; i++)
		if (got[i] > (long)g->f[i]->fd || (i > 0 && got[i] <= got[i - 1]))
			return restore_fail(R, -EIO,
					    "pid %u fd %u: %s was opened as fd %ld, above its "
					    "number or out of order",
					    p->img->task.pid, g->f[i]->fd, g->f[i]->path, got[i]);
	/* Offsets first, where each fd is now; then the moves, from the last down. */
	for (size_t i = 0; r >= 0 && i < n; i++) {
		const struct ct_image_fd *f = g->f[i];

		if (f->pos && (f->type == CT_IMAGE_FD_REG || f->type == CT_IMAGE_FD_DIR))
			r = restore_batch_add(R, b, "lseek", SYS_lseek, got[i], (long)f->pos,
					      SEEK_SET, 0, 0, 0);
	}
	for (size_t i = n; r >= 0 && i-- > 0;)
		r = restore_fd_move_add(R, b, (int)got[i], (int)g->f[i]->fd,
					g->f[i]->fd_flags & FD_CLOEXEC);
	if (r >= 0)
		r = restore_batch_flush(R, b);
	/* Shared with other fds: keep a reference to hand to them. */
	for (size_t i = 0; r >= 0 && i < n; i++) {
		const struct ct_image_fd *f = g->f[i];
		long t;

		if (file_users(R, f->file_id) < 2)
			continue;
		t = syscall(SYS_pidfd_getfd, p->pidfd, f->fd, 0);
		if (t < 0)
			return restore_fail(R, NEG_ERRNO(), "pid %u fd %u: pidfd_getfd: %m",
					    p->img->task.pid, f->fd);
		r = restore_obj_add(R, OBJ_FILE, f->file_id, (int)t, -1);
	}
	return r;
}

/* A file shared with later fds is opened at once (with the rest of the group), so that they
 * find it. */
static int path_add(struct restorer *R, struct rproc *p, struct path_group *g,
		    const struct ct_image_fd *f)
{
	size_t len = (strlen(f->path) + 1 + 15) & ~(size_t)15;
	int r;

	if (g->n == PATH_GROUP_MAX || g->data_len + len > RESTORE_BATCH_DATA) {
		r = path_flush(R, p, g);
		if (r < 0)
			return r;
	}
	g->f[g->n++] = f;
	g->data_len += len;
	return file_users(R, f->file_id) >= 2 ? path_flush(R, p, g) : 0;
}

/* Files made here, waiting to go to the task together; unix sockets with a name are bound in
 * the task once theirs is in place. */
struct fd_group {
	size_t n;
	struct restore_fd_install fds[RESTORE_INSTALL_MAX];
	const struct ct_image_fd *bind[RESTORE_INSTALL_MAX];
};

static int group_flush(struct restorer *R, struct rproc *p, struct fd_group *g)
{
	int r = 0;

	if (g->n > 0)
		r = restore_install_fds(R, p, g->fds, g->n);
	for (size_t i = 0; r >= 0 && i < g->n; i++)
		if (g->bind[i])
			r = bind_in_task(R, p, g->bind[i]);
	g->n = 0;
	return r;
}

static int group_add(struct restorer *R, struct rproc *p, struct fd_group *g, int ours,
		     const struct ct_image_fd *f, bool bind)
{
	if (g->n == RESTORE_INSTALL_MAX) {
		int r = group_flush(R, p, g);

		if (r < 0)
			return r;
	}
	/* bind[] is in the order of the image: after the install, fds[] is not. */
	g->fds[g->n] = (struct restore_fd_install){
		.ours = ours, .target = (int)f->fd, .cloexec = f->fd_flags & FD_CLOEXEC};
	g->bind[g->n] = bind ? f : NULL;
	g->n++;
	return 0;
}

int restore_fds(struct restorer *R, struct rproc *p)
{
	const struct ct_image_fds *fds = &p->img->fds;
	_cleanup_free_ struct fd_group *g = calloc(1, sizeof(*g));
	_cleanup_free_ struct path_group *pg = calloc(1, sizeof(*pg));
	int r;

	if (!g || !pg)
		return -ENOMEM;
	for (size_t i = 0; i < fds->n_fds; i++) {
		const struct ct_image_fd *f = &fds->fds[i];
		struct robj *shared = restore_obj_find(R, OBJ_FILE, f->file_id);
		int ours = -1;

		if (shared) {
			r = group_add(R, p, g, shared->fd, f, false);
			if (r < 0)
				return r;
			continue;
		}
		switch (f->type) {
		case CT_IMAGE_FD_REG:
		case CT_IMAGE_FD_DIR:
		case CT_IMAGE_FD_CHR:
			r = path_add(R, p, pg, f);
			if (r < 0)
				return r;
			continue;
		case CT_IMAGE_FD_FIFO:
			r = open_path(R, p, f);
			if (r < 0)
				return r;
			continue;
		case CT_IMAGE_FD_PIPE:
			r = make_pipe(R, f, &ours);
			break;
		case CT_IMAGE_FD_EVENTFD:
		case CT_IMAGE_FD_SIGNALFD:
		case CT_IMAGE_FD_TIMERFD:
		case CT_IMAGE_FD_EPOLL:
			r = make_anon(R, f, &ours);
			break;
		case CT_IMAGE_FD_MEMFD:
			r = make_memfd(R, f, &ours);
			break;
		case CT_IMAGE_FD_UNIX:
		case CT_IMAGE_FD_TCP:
		case CT_IMAGE_FD_UDP:
			r = make_socket(R, p, f, &ours);
			break;
		default:
			r = -EOPNOTSUPP;
		}
		if (r < 0)
			return restore_fail(R, r, "pid %u fd %u: cannot recreate its %s: %s",
					    p->img->task.pid, f->fd,
					    ct_image_fd_type_to_string(f->type), strerror(-r));
		if (fcntl(ours, F_SETFL, (int)f->flags & SETFL_MASK) < 0) {
			safe_close(ours);
			return restore_fail(R, NEG_ERRNO(), "pid %u fd %u: F_SETFL: %m",
					    p->img->task.pid, f->fd);
		}
		r = restore_obj_add(R, OBJ_FILE, f->file_id, ours, -1);
		if (r >= 0)
			r = group_add(R, p, g, ours, f, true);
		if (r < 0)
			return r;
	}
	r = path_flush(R, p, pg);
	return r < 0 ? r : group_flush(R, p, g);
}

/* The image's fds are ascending (the decoder checks it). */
static int cmp_fd_number(const void *key, const void *elem)
{
	uint32_t k = *(const uint32_t *)key, fd = ((const struct ct_image_fd *)elem)->fd;

	return (k > fd) - (k < fd);
}

static const struct ct_image_fd *fd_record(const struct ct_image_fds *fds, uint32_t fd)
{
	return bsearch(&fd, fds->fds, fds->n_fds, sizeof(*fds->fds), cmp_fd_number);
}

/* Each watched fd goes back with an epoll_ctl of the task's, in batches (up to 64 a stop). */
int restore_epolls(struct restorer *R, struct rproc *p)
{
	const struct ct_image_fds *fds = &p->img->fds;
	_cleanup_free_ struct restore_batch *b = malloc(sizeof(*b));

	if (!b)
		return -ENOMEM;
	restore_batch_init(b, p, p->hpid);
	for (size_t i = 0; i < fds->n_fds; i++) {
		const struct ct_image_fd *f = &fds->fds[i];
		struct fdblob_reader rd = {f->data, f->data_size};
		uint64_t n;
		int r;

		if (f->type != CT_IMAGE_FD_EPOLL || restore_obj_find(R, OBJ_EPOLL_DONE, f->file_id))
			continue;
		r = restore_obj_add(R, OBJ_EPOLL_DONE, f->file_id, -1, -1);
		if (r < 0)
			return r;
		n = fdblob_get_u64(&rd);
		for (uint64_t j = 0; j < n && !rd.bad; j++) {
			uint64_t tfd = fdblob_get_u64(&rd), events = fdblob_get_u64(&rd),
				 data = fdblob_get_u64(&rd);
			struct epoll_event ev = {.events = (uint32_t)events, .data.u64 = data};
			unsigned long at;

			(void)fdblob_get_u64(&rd); /* inode of the target */
			if (rd.bad)
				break;
			if (tfd > INT32_MAX || !fd_record(fds, (uint32_t)tfd))
				return restore_fail(R, -EOPNOTSUPP,
						    "pid %u fd %u: epoll watches fd %" PRIu64
						    " which this process does not have",
						    p->img->task.pid, f->fd, tfd);
			r = restore_batch_data(R, b, &ev, sizeof(ev), &at);
			if (r >= 0)
				r = restore_batch_add(R, b, "epoll_ctl", SYS_epoll_ctl, f->fd,
						      EPOLL_CTL_ADD, (long)tfd, (long)at, 0, 0);
			if (r < 0)
				return r;
		}
		if (rd.bad)
			return restore_fail(R, -EBADMSG, "pid %u fd %u: malformed epoll record",
					    p->img->task.pid, f->fd);
	}
	return restore_batch_flush(R, b);
}

/* ---- file locks ------------------------------------------------------------------------------ */

static const char *lock_kind_name(uint32_t kind)
{
	switch (kind) {
	case CT_IMAGE_LOCK_FLOCK:
		return "flock";
	case CT_IMAGE_LOCK_POSIX:
		return "POSIX";
	default:
		return "OFD";
	}
}

/* One lock taken again by the task, never waiting: another holder means a failed restore. */
static int take_lock(struct restorer *R, struct rproc *p, const struct ct_image_fd *f,
		     const struct ct_image_lock *l)
{
	long args[6] = {f->fd}, res;
	int r;

	if (l->kind == CT_IMAGE_LOCK_FLOCK) {
		args[1] = (l->write ? LOCK_EX : LOCK_SH) | LOCK_NB;
		r = ct_inject_syscall_site(p->hpid, p->site, SYS_flock, args, &res, &R->event_msg);
	} else {
		struct flock fl = {.l_type = l->write ? F_WRLCK : F_RDLCK,
				   .l_whence = SEEK_SET,
				   .l_start = (off_t)l->start,
				   .l_len = l->end == UINT64_MAX ? 0
								 : (off_t)(l->end - l->start + 1)};

		r = restore_poke(R, p, p->scratch, &fl, sizeof(fl));
		if (r < 0)
			return r;
		args[1] = l->kind == CT_IMAGE_LOCK_POSIX ? F_SETLK : F_OFD_SETLK;
		args[2] = (long)p->scratch;
		r = ct_inject_syscall_site(p->hpid, p->site, SYS_fcntl, args, &res, &R->event_msg);
	}
	if (r < 0)
		return restore_fail(R, r, "pid %u: cannot run a lock call in the task: %s",
				    p->img->task.pid, strerror(-r));
	if (res == -EAGAIN || res == -EACCES)
		return restore_fail(R, -EBUSY,
				    "pid %u fd %u: cannot take back its %s %s lock on %s: another "
				    "process holds a lock on it",
				    p->img->task.pid, f->fd, lock_kind_name(l->kind),
				    l->write ? "write" : "read", f->path ?: "the file");
	if (res < 0 && res > -4096)
		return restore_fail(R, (int)res, "pid %u fd %u: taking back its %s lock failed: %s",
				    p->img->task.pid, f->fd, lock_kind_name(l->kind),
				    strerror((int)-res));
	return 0;
}

int restore_locks(struct restorer *R, struct rproc *p)
{
	const struct ct_image_fds *fds = &p->img->fds;
	int r = 0;

	for (size_t i = 0; r >= 0 && i < fds->n_fds; i++)
		for (size_t j = 0; r >= 0 && j < fds->fds[i].n_locks; j++)
			r = take_lock(R, p, &fds->fds[i], &fds->fds[i].locks[j]);
	return r;
}
