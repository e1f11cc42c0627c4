/* What the container's namespaces hold that no process of it does, and that a restore would
 * therefore lose without a word: kept in the image where the restore can make it again, else
 * refused by name before anything is destroyed.
 *
 * IPC: a restore gives the container a new IPC namespace. System V shared memory segments,
 * semaphore sets and message queues live there and in no process: they are read here (ids,
 * keys, owners, modes; the segments' contents through an attachment of ours, the semaphores'
 * values, the queued messages copied in place with MSG_COPY) and made again at the same ids by
 * the restore (restore-ipc.c), as are the namespace's own sysctls (kernel.shmmax, kernel.sem,
 * fs.mqueue.msg_max, ...). POSIX message queues are not supported and are refused. All of it is
 * read from a thread of our own that joins the namespace (common/nsthread.h): /proc/sysvipc/
 * lists the System V objects of the reader's namespace, and a detached mount of the namespace's
 * mqueue file system (fsopen/fsmount, attached nowhere) lists its message queues. Not kept:
 * semaphore undo adjustments (SEM_UNDO), which the kernel does not show.
 *
 * Network: a container with a network namespace of its own (`migctl run --netns`) gets one
 * with lo up and nothing else, at the restore as at the start. Interfaces, addresses, routes
 * and firewall tables (nftables, iptables-nft's among them, and legacy iptables) it added
 * would be gone: each is refused. The namespace's sysctls (net.core.somaxconn,
 * net.ipv4.ip_local_port_range, net.ipv4.conf.lo.*, ...: every file under /proc/sys/net that
 * reads and writes, ~560 here, a few ms) are read on a thread of their own while the processes
 * are dumped, and the restore sets those that differ in the new namespace (restore-net.c).
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
#include <arpa/inet.h>
#include <linux/if_addr.h>
#include <linux/mount.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "checkpoint/ct/dump-internal.h"
#include "common/common.h"
#include "common/nsthread.h"

struct ipc_probe {
	struct ns_thread t;
	int ns_fd;
	struct dumper *d; /* its ipc and sysv are filled */
	int r;		  /* < 0: the namespace could not be read */
	char found[320];  /* the first object found, described; empty when none */
	const char *what; /* for r < 0: which step failed */
};

/* The ids (and keys) of the objects in /proc/sysvipc/NAME: a header line, then one object a
 * line, key and id first. */
static int list_sysv(const char *name, int32_t **ret_keys, uint32_t **ret_ids, size_t *ret_n)
{
	char path[64], line[512];
	_cleanup_fclose_ FILE *f = NULL;
	_cleanup_free_ int32_t *keys = NULL;
	_cleanup_free_ uint32_t *ids = NULL;
	size_t n = 0;

	*ret_n = 0;
	snprintf(path, sizeof(path), "/proc/sysvipc/%s", name);
	f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? 0 : NEG_ERRNO(); /* a kernel without System V IPC */
	if (!fgets(line, sizeof(line), f))
		return 0;
	while (fgets(line, sizeof(line), f)) {
		int64_t key, id;
		void *nk, *ni;

		if (sscanf(line, "%" SCNd64 " %" SCNd64, &key, &id) != 2 || id < 0 ||
		    id > INT32_MAX)
			return -EBADMSG;
		if (n >= CT_IMAGE_IPC_OBJECTS_MAX)
			return -E2BIG;
		nk = reallocarray(keys, n + 1, sizeof(*keys));
		if (nk)
			keys = nk;
		ni = reallocarray(ids, n + 1, sizeof(*ids));
		if (ni)
			ids = ni;
		if (!nk || !ni)
			return -ENOMEM;
		keys[n] = (int32_t)key;
		ids[n++] = (uint32_t)id;
	}
	*ret_keys = TAKE_PTR(keys);
	*ret_ids = TAKE_PTR(ids);
	*ret_n = n;
	return 0;
}

static void perm_from(struct ct_image_ipc_perm *p, int32_t key, uint32_t id,
		      const struct ipc_perm *k)
{
	*p = (struct ct_image_ipc_perm){
		.key = key, .id = id, .uid = k->uid, .gid = k->gid, .mode = k->mode & 0777};
}

static int cmp_sem(const void *a, const void *b)
{
	uint32_t x = ((const struct ct_image_sem_set *)a)->perm.id,
		 y = ((const struct ct_image_sem_set *)b)->perm.id;

	return (x > y) - (x < y);
}

static int cmp_msgq(const void *a, const void *b)
{
	uint32_t x = ((const struct ct_image_msg_queue *)a)->perm.id,
		 y = ((const struct ct_image_msg_queue *)b)->perm.id;

	return (x > y) - (x < y);
}

static int cmp_shm(const void *a, const void *b)
{
	uint32_t x = ((const struct ct_image_shm_seg *)a)->perm.id,
		 y = ((const struct ct_image_shm_seg *)b)->perm.id;

	return (x > y) - (x < y);
}

/* Every shared memory segment, attached here read-only for the pages writer (which reads it
 * after the thread that joined the namespace is gone: a mapping is the process's). */
static int read_shms(struct dumper *d)
{
	_cleanup_free_ int32_t *keys = NULL;
	_cleanup_free_ uint32_t *ids = NULL;
	struct ct_image_ipc *ipc = &d->ipc;
	struct shm_info info;
	size_t n;
	int r = list_sysv("shm", &keys, &ids, &n);

	if (r < 0 || n == 0)
		return r;
	ipc->shms = calloc(n, sizeof(*ipc->shms));
	d->sysv = calloc(n, sizeof(*d->sysv));
	if (!ipc->shms || !d->sysv)
		return -ENOMEM;
	if (shmctl(0, SHM_INFO, (struct shmid_ds *)(void *)&info) < 0)
		return NEG_ERRNO();
	d->sysv_swapped = info.shm_swp > 0;
	for (size_t i = 0; i < n; i++) {
		struct ct_image_shm_seg *s = &ipc->shms[ipc->n_shms];
		struct shmid_ds ds;
		void *addr;

		if (shmctl((int)ids[i], IPC_STAT, &ds) < 0)
			return NEG_ERRNO();
		if (ds.shm_segsz == 0 || ds.shm_segsz > CT_IMAGE_SHM_SIZE_MAX)
			return -E2BIG;
		perm_from(&s->perm, keys[i], ids[i], &ds.shm_perm);
		s->size = ds.shm_segsz;
		s->flags = (ds.shm_perm.mode & SHM_DEST ? CT_IMAGE_SHM_DEST : 0) |
			   (ds.shm_perm.mode & SHM_LOCKED ? CT_IMAGE_SHM_LOCKED : 0);
		addr = shmat((int)ids[i], NULL, SHM_RDONLY);
		if (addr == (void *)-1)
			return NEG_ERRNO();
		d->sysv[d->n_sysv++] = (struct dsysv){ids[i], addr, s->size};
		ipc->n_shms++;
	}
	qsort(ipc->shms, ipc->n_shms, sizeof(*ipc->shms), cmp_shm);
	return 0;
}

/* The namespace's own sysctls (what the container set with sysctl -w inside it, or the
 * defaults a new namespace starts with). */
static int read_sysctls(struct ct_image_ipc *ipc)
{
	size_t n = 0;

	while (ct_image_ipc_sysctls[n])
		n++;
	ipc->sysctls = calloc(n, sizeof(*ipc->sysctls));
	if (!ipc->sysctls)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		struct ct_image_sysctl *c = &ipc->sysctls[ipc->n_sysctls];
		char path[96];
		char *v = NULL;
		int r;

		snprintf(path, sizeof(path), "/proc/sys/%s", ct_image_ipc_sysctls[i]);
		r = read_full_file(path, CT_IMAGE_IPC_SYSCTL_MAX, &v, NULL);
		if (r == -ENOENT)
			continue; /* not on this kernel */
		if (r < 0)
			return r;
		v[strcspn(v, "\n")] = 0;
		c->name = strdup(ct_image_ipc_sysctls[i]);
		c->value = v;
		if (!c->name)
			return -ENOMEM;
		ipc->n_sysctls++;
	}
	return 0;
}

/* Every semaphore set with its values. */
static int read_sems(struct ct_image_ipc *ipc)
{
	_cleanup_free_ int32_t *keys = NULL;
	_cleanup_free_ uint32_t *ids = NULL;
	size_t n;
	int r = list_sysv("sem", &keys, &ids, &n);

	if (r < 0 || n == 0)
		return r;
	ipc->sems = calloc(n, sizeof(*ipc->sems));
	if (!ipc->sems)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		struct ct_image_sem_set *s = &ipc->sems[ipc->n_sems];
		struct semid_ds ds;

		if (semctl((int)ids[i], 0, IPC_STAT, &ds) < 0)
			return NEG_ERRNO();
		if (ds.sem_nsems == 0 || ds.sem_nsems > CT_IMAGE_SEMS_MAX)
			return -E2BIG;
		perm_from(&s->perm, keys[i], ids[i], &ds.sem_perm);
		s->values = calloc(ds.sem_nsems, sizeof(*s->values));
		if (!s->values)
			return -ENOMEM;
		ipc->n_sems++;
		s->n_values = ds.sem_nsems;
		if (semctl((int)ids[i], 0, GETALL, s->values) < 0)
			return NEG_ERRNO();
	}
	qsort(ipc->sems, ipc->n_sems, sizeof(*ipc->sems), cmp_sem);
	return 0;
}

/* Every message queue with its messages, copied in place (MSG_COPY), oldest first. */
static int read_msgqs(struct ct_image_ipc *ipc)
{
	_cleanup_free_ int32_t *keys = NULL;
	_cleanup_free_ uint32_t *ids = NULL;
	_cleanup_free_ uint8_t *buf = NULL;
	uint64_t total = 0;
	size_t n;
	int r = list_sysv("msg", &keys, &ids, &n);

	if (r < 0 || n == 0)
		return r;
	ipc->msgqs = calloc(n, sizeof(*ipc->msgqs));
	buf = malloc(sizeof(long) + CT_IMAGE_MSG_MAX);
	if (!ipc->msgqs || !buf)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		struct ct_image_msg_queue *q = &ipc->msgqs[ipc->n_msgqs];
		struct msqid_ds ds;

		if (msgctl((int)ids[i], IPC_STAT, &ds) < 0)
			return NEG_ERRNO();
		perm_from(&q->perm, keys[i], ids[i], &ds.msg_perm);
		q->qbytes = ds.msg_qbytes;
		q->msgs = calloc(MAX(ds.msg_qnum, 1u), sizeof(*q->msgs));
		if (!q->msgs)
			return -ENOMEM;
		ipc->n_msgqs++;
		for (msgqnum_t j = 0; j < ds.msg_qnum; j++) {
			struct ct_image_msg *m = &q->msgs[q->n_msgs];
			ssize_t k = msgrcv((int)ids[i], buf, CT_IMAGE_MSG_MAX, (long)j,
					   IPC_NOWAIT | MSG_COPY);

			if (k < 0)
				return errno == E2BIG ? -E2BIG : NEG_ERRNO();
			if ((total += (uint64_t)k) > CT_IMAGE_IPC_DATA_MAX)
				return -E2BIG;
			memcpy(&m->type, buf, sizeof(long));
			m->len = (uint32_t)k;
			m->text = malloc((size_t)k ?: 1);
			if (!m->text)
				return -ENOMEM;
			memcpy(m->text, buf + sizeof(long), (size_t)k);
			q->n_msgs++;
		}
	}
	qsort(ipc->msgqs, ipc->n_msgqs, sizeof(*ipc->msgqs), cmp_msgq);
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

/* In the container's IPC namespace. */
static int probe_run(void *arg)
{
	struct ipc_probe *q = arg;
	char name[NAME_MAX + 2];
	int r;

	r = read_sysctls(&q->d->ipc);
	if (r < 0) {
		q->what = "reading its sysctls";
		return r;
	}
	r = read_shms(q->d);
	if (r < 0) {
		q->what = r == -E2BIG ? "a shared memory segment is too large"
				      : "reading its shared memory segments";
		return r;
	}
	r = read_sems(&q->d->ipc);
	if (r < 0) {
		q->what =
			r == -E2BIG ? "a semaphore set is too large" : "reading its semaphore sets";
		return r;
	}
	r = read_msgqs(&q->d->ipc);
	if (r < 0) {
		q->what = r == -E2BIG ? "more queued messages than an image holds"
				      : "reading its message queues";
		return r;
	}
	r = first_mqueue(name, sizeof(name));
	if (r < 0) {
		q->what = "listing its POSIX message queues";
		return r;
	}
	if (r > 0)
		snprintf(q->found, sizeof(q->found), "the POSIX message queue %s", name);
	return 0;
}

/* ---- the network namespace's sysctls --------------------------------------------------- */

/* Listed and opened before the freeze (~1.5 ms), read on a thread once the container is frozen
 * (~0.5 ms, alongside the processes' dumps), both in the container's network namespace.
 * Its files change with its interfaces, which a dump refuses, and with modules loaded: a file
 * that vanishes in between fails the dump; one that appears in between is not kept. */
struct net_sysctls {
	struct ns_thread t;
	int ns_fd;
	bool started;
	struct sysctl_file {
		char *name; /* relative to /proc/sys/net */
		int fd;	    /* opened when listed, or -1 (out of fds): opened by name */
	} * files;	    /* sorted by name */
	size_t n_files, alloc_files;
	struct ct_image_sysctl *v;
	size_t n;
	char at[CT_IMAGE_NET_SYSCTL_NAME_MAX + 16]; /* the file an error concerns */
	usec_t list_usec, read_usec;
};

/* One sysctl, read from the start of its open file: its value without the newline; 0 and *ret
 * NULL for a secret never set (EIO). */
static int read_sysctl(int fd, char **ret)
{
	_cleanup_free_ char *buf = malloc(CT_IMAGE_NET_SYSCTL_MAX + 2);
	size_t n = 0;

	*ret = NULL;
	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t k = pread(fd, buf + n, CT_IMAGE_NET_SYSCTL_MAX + 2 - n, (off_t)n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return errno == EIO ? 0 : NEG_ERRNO(); /* stable_secret, unset */
		if (k == 0)
			break;
		n += (size_t)k;
		if (n == CT_IMAGE_NET_SYSCTL_MAX + 2)
			return -E2BIG;
	}
	if (n > 0 && buf[n - 1] == '\n')
		n--;
	buf[n] = 0;
	if (!ct_image_sysctl_value_ok(buf, CT_IMAGE_NET_SYSCTL_MAX))
		return -EINVAL;
	*ret = TAKE_PTR(buf);
	return 0;
}

static int list_sysctls(struct net_sysctls *q, int dir_fd, const char *rel);

/* Every file below rel (a directory open as dir) that reads and writes: the namespace's
 * settings. Write-only files (route/flush) are actions. */
static int list_sysctl_dir(struct net_sysctls *q, DIR *dir, const char *rel)
{
	struct dirent *e;

	while ((errno = 0, e = readdir(dir))) {
		char path[CT_IMAGE_NET_SYSCTL_NAME_MAX + 2];
		struct stat st;
		int r;

		if (streq(e->d_name, ".") || streq(e->d_name, ".."))
			continue;
		if ((size_t)snprintf(path, sizeof(path), "%s%s%s", rel, rel[0] ? "/" : "",
				     e->d_name) >= sizeof(path) - strlen("net/") - 1) {
			snprintf(q->at, sizeof(q->at), "net/%s", rel);
			return -ENAMETOOLONG;
		}
		snprintf(q->at, sizeof(q->at), "net/%s", path);
		if (fstatat(dirfd(dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			return NEG_ERRNO();
		if (S_ISDIR(st.st_mode)) {
			int sub = openat(dirfd(dir), e->d_name,
					 O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);

			if (sub < 0)
				return NEG_ERRNO();
			r = list_sysctls(q, sub, path);
			if (r < 0)
				return r;
			continue;
		}
		if (!S_ISREG(st.st_mode) ||
		    (st.st_mode & (S_IRUSR | S_IWUSR)) != (S_IRUSR | S_IWUSR))
			continue;
		if (q->n_files == CT_IMAGE_NET_SYSCTLS_MAX)
			return -E2BIG;
		if (q->n_files == q->alloc_files) {
			size_t na = MIN(q->alloc_files ? q->alloc_files * 2 : 512,
					(size_t)CT_IMAGE_NET_SYSCTLS_MAX);
			struct sysctl_file *nv = reallocarray(q->files, na, sizeof(*q->files));

			if (!nv)
				return -ENOMEM;
			q->files = nv;
			q->alloc_files = na;
		}
		q->files[q->n_files] = (struct sysctl_file){
			.name = strdup(path),
			.fd = openat(dirfd(dir), e->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)};
		if (q->files[q->n_files++].fd < 0 && errno != EMFILE && errno != ENFILE)
			return NEG_ERRNO();
		if (!q->files[q->n_files - 1].name)
			return -ENOMEM;
	}
	if (errno != 0) {
		snprintf(q->at, sizeof(q->at), "net/%s", rel);
		return NEG_ERRNO();
	}
	return 0;
}

static int list_sysctls(struct net_sysctls *q, int dir_fd, const char *rel)
{
	DIR *dir = fdopendir(dir_fd);
	int r;

	if (!dir) {
		r = NEG_ERRNO();
		safe_close(dir_fd);
		snprintf(q->at, sizeof(q->at), "net/%s", rel);
		return r;
	}
	r = list_sysctl_dir(q, dir, rel);
	closedir(dir);
	return r;
}

static int cmp_file(const void *a, const void *b)
{
	return strcmp(((const struct sysctl_file *)a)->name, ((const struct sysctl_file *)b)->name);
}

/* In the container's network namespace (/proc/sys/net shows the reader's), before the freeze. */
static int net_sysctls_list(void *arg)
{
	struct net_sysctls *q = arg;
	usec_t t0 = now_usec(CLOCK_MONOTONIC);
	int fd, r;

	snprintf(q->at, sizeof(q->at), "net");
	fd = open("/proc/sys/net", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return NEG_ERRNO();
	r = list_sysctls(q, fd, "");
	if (r < 0)
		return r;
	qsort(q->files, q->n_files, sizeof(*q->files), cmp_file);
	q->list_usec = now_usec(CLOCK_MONOTONIC) - t0;
	return 0;
}

/* There again, frozen. */
static int net_sysctls_read(void *arg)
{
	struct net_sysctls *q = arg;
	usec_t t0 = now_usec(CLOCK_MONOTONIC);
	_cleanup_close_ int net_fd = open("/proc/sys/net", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (net_fd < 0)
		return NEG_ERRNO();
	q->v = calloc(MAX(q->n_files, 1u), sizeof(*q->v));
	if (!q->v)
		return -ENOMEM;
	for (size_t i = 0; i < q->n_files; i++) {
		struct sysctl_file *f = &q->files[i];
		char *value;
		int r;

		snprintf(q->at, sizeof(q->at), "net/%s", f->name);
		if (f->fd < 0)
			f->fd = openat(net_fd, f->name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (f->fd < 0)
			return NEG_ERRNO();
		r = read_sysctl(f->fd, &value);
		f->fd = safe_close(f->fd);
		if (r < 0)
			return r;
		if (!value)
			continue;
		q->v[q->n] = (struct ct_image_sysctl){.value = value};
		if (asprintf(&q->v[q->n++].name, "net/%s", f->name) < 0) {
			q->v[q->n - 1].name = NULL;
			return -ENOMEM;
		}
	}
	q->read_usec = now_usec(CLOCK_MONOTONIC) - t0;
	return 0;
}

static void net_sysctls_free(struct net_sysctls *q)
{
	safe_close(q->ns_fd);
	for (size_t i = 0; i < q->n_files; i++) {
		free(q->files[i].name);
		safe_close(q->files[i].fd);
	}
	free(q->files);
	ct_image_sysctls_free(q->v, q->n);
	free(q);
}

static int net_sysctls_fail(struct dumper *d, struct net_sysctls *q, int r, bool joined)
{
	if (!joined)
		return dump_fail(d, r, "cannot join its network namespace: %s", strerror(-r));
	if (r == -E2BIG || r == -EINVAL || r == -ENAMETOOLONG)
		return dump_fail(d, -EOPNOTSUPP,
				 "its network namespace's sysctl %s %s: not supported", q->at,
				 r == -EINVAL ? "holds characters an image does not keep"
					      : "is larger than an image keeps");
	return dump_fail(d, r, "cannot read its network namespace's sysctl %s: %s", q->at,
			 strerror(-r));
}

int dump_ns_prepare(struct dumper *d)
{
	struct net_sysctls *q;
	struct stat st;
	char path[64];
	bool joined;
	int r;

	snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)d->o->root_pid);
	if (stat(path, &st) < 0)
		return dump_fail(d, NEG_ERRNO(), "cannot read its network namespace: %m");
	if (st.st_ino == d->net_ino)
		return 0; /* migrd's own: nothing of the container's */
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->ns_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (q->ns_fd < 0) {
		r = dump_fail(d, NEG_ERRNO(), "cannot open its network namespace: %m");
		net_sysctls_free(q);
		return r;
	}
	r = ns_run(q->ns_fd, CLONE_NEWNET, net_sysctls_list, q, &joined);
	if (r < 0) {
		r = net_sysctls_fail(d, q, r, joined);
		net_sysctls_free(q);
		return r;
	}
	d->net_probe = q;
	return 0;
}

static int start_net_sysctls(struct dumper *d)
{
	struct net_sysctls *q = d->net_probe;
	int r;

	if (!q)
		return 0;
	r = ns_thread_start(&q->t, q->ns_fd, CLONE_NEWNET, net_sysctls_read, q);
	if (r < 0)
		return dump_fail(d, r, "cannot read its network namespace: %s", strerror(-r));
	q->started = true;
	return 0;
}

static int join_net_sysctls(struct dumper *d)
{
	struct net_sysctls *q = d->net_probe;
	int r = 0;

	if (!q)
		return 0;
	d->net_probe = NULL;
	if (q->started) {
		r = ns_thread_wait(&q->t);
		if (r < 0)
			r = net_sysctls_fail(d, q, r, q->t.joined);
	}
	if (r >= 0 && q->started) {
		d->net_sysctls = TAKE_PTR(q->v);
		d->n_net_sysctls = q->n;
		q->n = 0;
		log_debug("%s: %zu sysctls of its network namespace listed in %" PRIu64
			  " us before the freeze, read in %" PRIu64 " us",
			  d->o->name, d->n_net_sysctls, (uint64_t)q->list_usec,
			  (uint64_t)q->read_usec);
	}
	net_sysctls_free(q);
	return r;
}

void dump_ns_cancel(struct dumper *d)
{
	(void)join_net_sysctls(d);
}

/* The IPC namespace is read on a thread of its own while the processes are dumped (it holds
 * the container frozen ~0.4 ms otherwise): started here, joined by dump_ns_finish(). */
int dump_ns_start(struct dumper *d)
{
	struct ipc_probe *q;
	struct stat ours, theirs;
	char path[64];
	int r;

	if (d->n_procs == 0)
		return 0;
	r = start_net_sysctls(d);
	if (r < 0)
		return r;
	snprintf(path, sizeof(path), "/proc/%d/ns/ipc", (int)d->procs[0].hpid);
	if (stat("/proc/self/ns/ipc", &ours) < 0 || stat(path, &theirs) < 0)
		return dump_fail(d, NEG_ERRNO(), "cannot read its IPC namespace: %m");
	/* A container in migrd's own namespace (never one that migctl run made) owns nothing
	 * there that a restore would take away. */
	if (ours.st_ino == theirs.st_ino && ours.st_dev == theirs.st_dev)
		return 0;
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	*q = (struct ipc_probe){.ns_fd = open(path, O_RDONLY | O_CLOEXEC), .d = d};
	if (q->ns_fd < 0) {
		r = dump_fail(d, NEG_ERRNO(), "cannot open its IPC namespace: %m");
		free(q);
		return r;
	}
	r = ns_thread_start(&q->t, q->ns_fd, CLONE_NEWIPC, probe_run, q);
	if (r < 0) {
		safe_close(q->ns_fd);
		free(q);
		return dump_fail(d, r, "cannot read its IPC namespace: %s", strerror(-r));
	}
	d->ipc_probe = q;
	return 0;
}

static int join_ipc(struct dumper *d)
{
	struct ipc_probe *q = d->ipc_probe;
	int r = 0;

	if (!q)
		return 0;
	q->r = ns_thread_wait(&q->t);
	if (q->r < 0 && !q->t.joined)
		q->what = "joining it";
	d->ipc_probe = NULL;
	safe_close(q->ns_fd);
	if (q->r < 0)
		r = dump_fail(d, q->r, "cannot read its IPC namespace (%s): %s", q->what,
			      strerror(-q->r));
	else if (q->found[0])
		r = dump_fail(d, -EOPNOTSUPP, "its IPC namespace holds %s, which is not supported",
			      q->found);
	free(q);
	return r;
}

/* Each process's attachments of System V segments: whole segments of its namespace (the
 * layout was recorded before the segments were known). */
static int check_attachments(struct dumper *d)
{
	for (size_t i = 0; i < d->n_procs; i++)
		for (size_t j = 0; j < d->procs[i].mm.n_vmas; j++) {
			const struct ct_image_vma *v = &d->procs[i].mm.vmas[j];
			const struct ct_image_shm_seg *seg = NULL;

			if (v->kind != CT_IMAGE_VMA_SYSV_SHM)
				continue;
			for (size_t k = 0; k < d->ipc.n_shms && !seg; k++)
				if (d->ipc.shms[k].perm.id == v->shmid)
					seg = &d->ipc.shms[k];
			if (!seg)
				return dump_fail(
					d, -EOPNOTSUPP,
					"pid %d: System V shared memory at %#" PRIx64
					" is not its IPC namespace's, which is not supported",
					(int)d->procs[i].pid, v->start);
			if (v->end - v->start != ((seg->size + CT_IMAGE_PAGE_SIZE - 1) &
						  ~(uint64_t)(CT_IMAGE_PAGE_SIZE - 1)))
				return dump_fail(d, -EOPNOTSUPP,
						 "pid %d: System V shared memory %u is attached in "
						 "part at %#" PRIx64 ", which is not supported",
						 (int)d->procs[i].pid, seg->perm.id, v->start);
		}
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

/* ---- network namespace ------------------------------------------------------------------ */

struct net_probe {
	const char *what; /* for an error: which step failed */
	char found[256];
};

/* One netlink dump of type, whose request carries the 4 bytes of body (struct rtgenmsg or
 * nfgenmsg, padded); cb sees each message, and stops the walk with a return > 0 (found) or < 0
 * (error). */
static int nl_dump(int fd, uint16_t type, const void *body,
		   int (*cb)(struct net_probe *q, const struct nlmsghdr *h), struct net_probe *q)
{
	struct {
		struct nlmsghdr nlh;
		uint8_t body[4];
	} req = {.nlh = {.nlmsg_len = sizeof(req),
			 .nlmsg_type = type,
			 .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP,
			 .nlmsg_seq = type}};
	_cleanup_free_ uint8_t *buf = malloc(32768);
	int r = 0;

	if (!buf)
		return -ENOMEM;
	memcpy(req.body, body, sizeof(req.body));
	if (send(fd, &req, sizeof(req), 0) < 0)
		return NEG_ERRNO();
	for (;;) {
		ssize_t k = recv(fd, buf, 32768, 0);

		if (k < 0)
			return NEG_ERRNO();
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)k);
		     h = NLMSG_NEXT(h, k)) {
			if (h->nlmsg_type == NLMSG_DONE)
				return r;
			if (h->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = NLMSG_DATA(h);

				return h->nlmsg_len >= NLMSG_LENGTH(sizeof(*e)) && e->error < 0
					       ? e->error
					       : -EIO;
			}
			if (r == 0)
				r = cb(q, h); /* after a find, the rest of the dump is read out */
		}
		if (r < 0)
			return r;
	}
}

static int rtnl_dump(int fd, uint16_t type, uint8_t family,
		     int (*cb)(struct net_probe *q, const struct nlmsghdr *h), struct net_probe *q)
{
	const uint8_t body[4] = {family}; /* struct rtgenmsg */

	return nl_dump(fd, type, body, cb, q);
}

static const struct rtattr *rta_find(const struct rtattr *a, size_t len, unsigned short type)
{
	for (; RTA_OK(a, len); a = RTA_NEXT(a, len))
		if (a->rta_type == type)
			return a;
	return NULL;
}

static int on_link(struct net_probe *q, const struct nlmsghdr *h)
{
	const struct ifinfomsg *ifi = NLMSG_DATA(h);
	const struct rtattr *name;

	if (h->nlmsg_type != RTM_NEWLINK || h->nlmsg_len < NLMSG_LENGTH(sizeof(*ifi)))
		return 0;
	name = rta_find(IFLA_RTA(ifi), IFLA_PAYLOAD(h), IFLA_IFNAME);
	if (name && RTA_PAYLOAD(name) > 0) {
		/* lo, and the fallback devices of tunnel drivers, which the kernel makes in every
		 * new namespace (the restore's too) and which nobody brought up. */
		static const char *const fallback[] = {
			"tunl0",   "sit0",     "gre0",	  "gretap0", "erspan0",
			"ip_vti0", "ip6_vti0", "ip6tnl0", "ip6gre0", "ip6erspan0",
		};
		char n[IFNAMSIZ + 1] = "";

		memcpy(n, RTA_DATA(name), MIN(RTA_PAYLOAD(name), (size_t)IFNAMSIZ));
		if (streq(n, "lo"))
			return 0;
		for (size_t i = 0; i < ELEMENTSOF(fallback); i++)
			if (streq(n, fallback[i]) && !(ifi->ifi_flags & IFF_UP))
				return 0;
	}
	snprintf(q->found, sizeof(q->found), "the interface %.*s",
		 name ? (int)strnlen(RTA_DATA(name), RTA_PAYLOAD(name)) : 1,
		 name ? (const char *)RTA_DATA(name) : "?");
	return 1;
}

static int on_addr(struct net_probe *q, const struct nlmsghdr *h)
{
	static const uint8_t loop6[16] = {[15] = 1};
	const struct ifaddrmsg *ifa = NLMSG_DATA(h);
	const struct rtattr *a;
	char text[INET6_ADDRSTRLEN] = "?";

	if (h->nlmsg_type != RTM_NEWADDR || h->nlmsg_len < NLMSG_LENGTH(sizeof(*ifa)))
		return 0;
	a = rta_find(IFA_RTA(ifa), IFA_PAYLOAD(h), IFA_LOCAL);
	if (!a)
		a = rta_find(IFA_RTA(ifa), IFA_PAYLOAD(h), IFA_ADDRESS);
	if (a && ifa->ifa_family == AF_INET && RTA_PAYLOAD(a) == 4 && ifa->ifa_prefixlen == 8 &&
	    memcmp(RTA_DATA(a), "\x7f\0\0\x01", 4) == 0)
		return 0;
	if (a && ifa->ifa_family == AF_INET6 && RTA_PAYLOAD(a) == 16 && ifa->ifa_prefixlen == 128 &&
	    memcmp(RTA_DATA(a), loop6, 16) == 0)
		return 0;
	if (a && RTA_PAYLOAD(a) == (ifa->ifa_family == AF_INET ? 4u : 16u))
		inet_ntop(ifa->ifa_family, RTA_DATA(a), text, sizeof(text));
	snprintf(q->found, sizeof(q->found), "the address %s/%u", text, ifa->ifa_prefixlen);
	return 1;
}

/* The kernel's own routes (for lo's addresses) come back; any other does not. */
static int on_route(struct net_probe *q, const struct nlmsghdr *h)
{
	const struct rtmsg *rt = NLMSG_DATA(h);
	const struct rtattr *a;
	char text[INET6_ADDRSTRLEN] = "default";

	if (h->nlmsg_type != RTM_NEWROUTE || h->nlmsg_len < NLMSG_LENGTH(sizeof(*rt)))
		return 0;
	if (rt->rtm_protocol == RTPROT_KERNEL)
		return 0;
	a = rta_find(RTM_RTA(rt), RTM_PAYLOAD(h), RTA_DST);
	if (a && RTA_PAYLOAD(a) == (rt->rtm_family == AF_INET ? 4u : 16u))
		inet_ntop(rt->rtm_family, RTA_DATA(a), text, sizeof(text));
	snprintf(q->found, sizeof(q->found), "a route to %s/%u", text, rt->rtm_dst_len);
	return 1;
}

static const char *nfproto_name(uint8_t family)
{
	switch (family) {
	case NFPROTO_INET:
		return "inet";
	case NFPROTO_IPV4:
		return "ip";
	case NFPROTO_ARP:
		return "arp";
	case NFPROTO_NETDEV:
		return "netdev";
	case NFPROTO_BRIDGE:
		return "bridge";
	case NFPROTO_IPV6:
		return "ip6";
	default:
		return "?";
	}
}

/* Any nftables table (iptables-nft's among them): a new namespace has none. */
static int on_nft_table(struct net_probe *q, const struct nlmsghdr *h)
{
	const struct nfgenmsg *g = NLMSG_DATA(h);
	const struct rtattr *name; /* struct nlattr has the same layout */

	if (h->nlmsg_type != ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE) ||
	    h->nlmsg_len < NLMSG_LENGTH(sizeof(*g)))
		return 0;
	name = rta_find((const struct rtattr *)((const uint8_t *)g + NLMSG_ALIGN(sizeof(*g))),
			h->nlmsg_len - NLMSG_LENGTH(NLMSG_ALIGN(sizeof(*g))), NFTA_TABLE_NAME);
	snprintf(q->found, sizeof(q->found), "the nftables table %s %.*s",
		 nfproto_name(g->nfgen_family),
		 name ? (int)strnlen(RTA_DATA(name), RTA_PAYLOAD(name)) : 1,
		 name ? (const char *)RTA_DATA(name) : "?");
	return 1;
}

static int check_nftables(struct net_probe *q)
{
	const struct nfgenmsg g = {.nfgen_family = NFPROTO_UNSPEC, .version = NFNETLINK_V0};
	_cleanup_close_ int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
	int r;

	if (fd < 0)
		return errno == EPROTONOSUPPORT ? 0 : NEG_ERRNO(); /* no netfilter */
	r = nl_dump(fd, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE, &g, on_nft_table, q);
	return r == -EOPNOTSUPP || r == -ENOENT ? 0 : r; /* no nf_tables */
}

/* The tables of legacy iptables (x_tables), which the kernel lists in the namespace it shows
 * /proc/PID/net of. A table appears on its first use, even a listing. */
static int check_xtables(struct net_probe *q, pid_t pid)
{
	static const struct {
		const char *file, *tool;
	} kinds[] = {
		{"ip_tables_names", "iptables"},
		{"ip6_tables_names", "ip6tables"},
		{"arp_tables_names", "arptables"},
	};

	for (size_t i = 0; i < ELEMENTSOF(kinds); i++) {
		_cleanup_fclose_ FILE *f = NULL;
		char path[64], line[64];

		snprintf(path, sizeof(path), "/proc/%d/net/%s", (int)pid, kinds[i].file);
		f = fopen(path, "re");
		if (!f) {
			if (errno == ENOENT)
				continue; /* not built in this kernel */
			return NEG_ERRNO();
		}
		if (fgets(line, sizeof(line), f)) {
			line[strcspn(line, "\n")] = 0;
			snprintf(q->found, sizeof(q->found), "the %s (legacy) table %s",
				 kinds[i].tool, line);
			return 1;
		}
	}
	return 0;
}

/* In the container's network namespace. */
static int net_probe_run(void *arg)
{
	static const struct {
		uint16_t type;
		uint8_t family;
		int (*cb)(struct net_probe *q, const struct nlmsghdr *h);
		const char *what;
	} dumps[] = {
		{RTM_GETLINK, AF_UNSPEC, on_link, "listing its interfaces"},
		{RTM_GETADDR, AF_UNSPEC, on_addr, "listing its addresses"},
		{RTM_GETROUTE, AF_INET, on_route, "listing its IPv4 routes"},
		{RTM_GETROUTE, AF_INET6, on_route, "listing its IPv6 routes"},
	};
	struct net_probe *q = arg;
	_cleanup_close_ int fd = -EBADF;

	fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (fd < 0) {
		q->what = "opening a netlink socket";
		return NEG_ERRNO();
	}
	for (size_t i = 0; i < ELEMENTSOF(dumps) && !q->found[0]; i++) {
		int r = rtnl_dump(fd, dumps[i].type, dumps[i].family, dumps[i].cb, q);

		if (r < 0 && !(r == -EAFNOSUPPORT && dumps[i].family == AF_INET6)) {
			q->what = dumps[i].what;
			return r;
		}
	}
	if (!q->found[0]) {
		int r = check_nftables(q);

		if (r < 0) {
			q->what = "listing its nftables tables";
			return r;
		}
	}
	return 0;
}

static int check_net(struct dumper *d)
{
	struct net_probe q = {};
	_cleanup_close_ int fd = -EBADF;
	struct stat st;
	char path[64];
	bool joined;
	int r;

	snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)d->procs[0].hpid);
	if (stat(path, &st) < 0)
		return dump_fail(d, NEG_ERRNO(), "cannot read its network namespace: %m");
	if (st.st_ino == d->net_ino)
		return 0; /* migrd's own: the restore does not make another */
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return dump_fail(d, NEG_ERRNO(), "cannot open its network namespace: %m");
	r = ns_run(fd, CLONE_NEWNET, net_probe_run, &q, &joined);
	if (r < 0)
		return dump_fail(d, r, "cannot read its network namespace (%s): %s",
				 joined ? q.what : "joining it", strerror(-r));
	if (!q.found[0]) {
		r = check_xtables(&q, d->procs[0].hpid);
		if (r < 0)
			return dump_fail(d, r,
					 "cannot read its network namespace (listing its "
					 "iptables tables): %s",
					 strerror(-r));
	}
	if (q.found[0])
		return dump_fail(d, -EOPNOTSUPP,
				 "its network namespace has %s, which a restore would not make "
				 "again: not supported",
				 q.found);
	return 0;
}

int dump_ns_finish(struct dumper *d, bool check)
{
	int r = join_ipc(d), k = join_net_sysctls(d);

	if (r >= 0)
		r = k;

	if (!check || d->n_procs == 0)
		return r;
	if (r >= 0)
		r = check_attachments(d);
	if (r >= 0)
		r = check_net(d);
	if (r >= 0)
		r = check_mounts(d);
	return r;
}
