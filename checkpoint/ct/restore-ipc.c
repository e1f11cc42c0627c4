/* The System V objects of the container's IPC namespace, made again in the restore's new one
 * before any of its processes exists beside PID 1. Each object gets its old id
 * (kernel.shm_next_id / sem_next_id / msg_next_id, which a checkpoint-restore kernel offers for
 * this), key, owner and mode; the shared memory segments their contents (through an attachment
 * of ours) and SHM_LOCK; the semaphores their values; the queues their messages, oldest first,
 * and their byte limit; the namespace its own sysctls. A segment that was marked for removal is
 * removed once the processes have attached it again (restore_ipc_finish). The work is done by a
 * thread of ours that joins the new namespace: /proc/sys/kernel/ and the IPC calls both act on the
 * caller's namespace. The objects' creator ids and times are migrd's and the restore's. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <unistd.h>

#include "checkpoint/ct/restore-internal.h"
#include "common/common.h"
#include "common/nsthread.h"

struct ipc_job {
	struct restorer *R;
	const struct ct_image_ipc *ipc;
	bool finish; /* the second pass: segments marked for removal are removed */
	int r;
	char err[256];
};

static int job_fail(struct ipc_job *j, int r, const char *format, ...) _printf_(3, 4);
static int job_fail(struct ipc_job *j, int r, const char *format, ...)
{
	va_list ap;

	va_start(ap, format);
	vsnprintf(j->err, sizeof(j->err), format, ap);
	va_end(ap);
	return j->r = r;
}

/* The id the next object of this kind gets, in the caller's namespace. */
static int set_next_id(const char *which, uint32_t id)
{
	char path[64], text[16];
	int fd, n;
	ssize_t k;

	snprintf(path, sizeof(path), "/proc/sys/kernel/%s_next_id", which);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return NEG_ERRNO();
	n = snprintf(text, sizeof(text), "%" PRIu32, id);
	k = write(fd, text, (size_t)n);
	safe_close(fd);
	return k == n ? 0 : k < 0 ? NEG_ERRNO() : -EIO;
}

static int make_sem_set(struct ipc_job *j, const struct ct_image_sem_set *s)
{
	struct semid_ds ds = {.sem_perm = {.uid = s->perm.uid,
					   .gid = s->perm.gid,
					   .mode = (unsigned short)s->perm.mode}};
	int id, r;

	r = set_next_id("sem", s->perm.id);
	if (r < 0)
		return job_fail(j, r, "setting kernel.sem_next_id: %s", strerror(-r));
	id = semget(s->perm.key, (int)s->n_values, IPC_CREAT | IPC_EXCL | (int)s->perm.mode);
	if (id < 0)
		return job_fail(j, NEG_ERRNO(), "semaphore set %u: semget: %m", s->perm.id);
	if ((uint32_t)id != s->perm.id)
		return job_fail(j, -EEXIST, "semaphore set %u came back as %d", s->perm.id, id);
	if (semctl(id, 0, SETALL, s->values) < 0 || semctl(id, 0, IPC_SET, &ds) < 0)
		return job_fail(j, NEG_ERRNO(), "semaphore set %u: %m", s->perm.id);
	return 0;
}

static int make_msg_queue(struct ipc_job *j, const struct ct_image_msg_queue *q, uint8_t *buf)
{
	struct msqid_ds ds;
	int id, r;

	r = set_next_id("msg", q->perm.id);
	if (r < 0)
		return job_fail(j, r, "setting kernel.msg_next_id: %s", strerror(-r));
	id = msgget(q->perm.key, IPC_CREAT | IPC_EXCL | (int)q->perm.mode);
	if (id < 0)
		return job_fail(j, NEG_ERRNO(), "message queue %u: msgget: %m", q->perm.id);
	if ((uint32_t)id != q->perm.id)
		return job_fail(j, -EEXIST, "message queue %u came back as %d", q->perm.id, id);
	if (msgctl(id, IPC_STAT, &ds) < 0)
		return job_fail(j, NEG_ERRNO(), "message queue %u: %m", q->perm.id);
	/* The limit first when it grows, last when it shrinks: the messages fitted it. */
	ds.msg_perm.uid = q->perm.uid;
	ds.msg_perm.gid = q->perm.gid;
	ds.msg_perm.mode = (unsigned short)q->perm.mode;
	if (q->qbytes > ds.msg_qbytes) {
		ds.msg_qbytes = q->qbytes;
		if (msgctl(id, IPC_SET, &ds) < 0)
			return job_fail(j, NEG_ERRNO(), "message queue %u: setting its limit: %m",
					q->perm.id);
	}
	for (size_t i = 0; i < q->n_msgs; i++) {
		long type = (long)q->msgs[i].type;

		memcpy(buf, &type, sizeof(type));
		memcpy(buf + sizeof(type), q->msgs[i].text, q->msgs[i].len);
		if (msgsnd(id, buf, q->msgs[i].len, IPC_NOWAIT) < 0)
			return job_fail(j, NEG_ERRNO(), "message queue %u: message %zu: %m",
					q->perm.id, i);
	}
	ds.msg_qbytes = q->qbytes;
	if (msgctl(id, IPC_SET, &ds) < 0)
		return job_fail(j, NEG_ERRNO(), "message queue %u: %m", q->perm.id);
	return 0;
}

/* A sysctl of the namespace, written when the new one differs. */
static int set_sysctl(struct ipc_job *j, const struct ct_image_sysctl *c)
{
	_cleanup_free_ char *now = NULL;
	char path[96];
	size_t n = strlen(c->value);
	ssize_t k;
	int fd;

	snprintf(path, sizeof(path), "/proc/sys/%s", c->name);
	if (read_full_file(path, CT_IMAGE_IPC_SYSCTL_MAX, &now, NULL) >= 0) {
		now[strcspn(now, "\n")] = 0;
		if (streq(now, c->value))
			return 0;
	}
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return job_fail(j, NEG_ERRNO(), "setting %s: %m", c->name);
	k = write(fd, c->value, n);
	if (k < 0)
		k = NEG_ERRNO();
	safe_close(fd);
	if (k != (ssize_t)n)
		return job_fail(j, k < 0 ? (int)k : -EIO, "setting %s to %s: %s", c->name, c->value,
				strerror(k < 0 ? (int)-k : EIO));
	return 0;
}

struct seg_fill {
	uint8_t *addr;
	uint64_t size; /* page-rounded */
};

static int seg_cb(uint64_t off, const void *data, size_t n_pages, void *userdata)
{
	struct seg_fill *f = userdata;
	uint64_t len = (uint64_t)n_pages * CT_IMAGE_PAGE_SIZE;

	if (!data)
		return 0; /* a new segment reads as zeros */
	if (off > f->size || len > f->size - off)
		return -EBADMSG; /* the image reader checked this already */
	memcpy(f->addr + off, data, len);
	return 0;
}

static int make_shm_seg(struct ipc_job *j, const struct ct_image_shm_seg *s)
{
	struct shmid_ds ds = {.shm_perm = {.uid = s->perm.uid,
					   .gid = s->perm.gid,
					   .mode = (unsigned short)s->perm.mode}};
	const struct ct_image_pages *pg = NULL;
	char err[CT_IMAGE_ERROR_MAX] = "";
	struct seg_fill f;
	void *addr;
	int id, r;

	r = set_next_id("shm", s->perm.id);
	if (r < 0)
		return job_fail(j, r, "setting kernel.shm_next_id: %s", strerror(-r));
	id = shmget(s->perm.key, s->size, IPC_CREAT | IPC_EXCL | (int)s->perm.mode);
	if (id < 0)
		return job_fail(j, NEG_ERRNO(), "shared memory %u: shmget: %m", s->perm.id);
	if ((uint32_t)id != s->perm.id)
		return job_fail(j, -EEXIST, "shared memory %u came back as %d", s->perm.id, id);
	for (size_t i = 0; i < j->R->img->n_shm && !pg; i++)
		if (j->R->img->shm[i].owner == CT_IMAGE_SYSV_SHM_OWNER(s->perm.id))
			pg = &j->R->img->shm[i];
	if (pg) {
		addr = shmat(id, NULL, 0);
		if (addr == (void *)-1)
			return job_fail(j, NEG_ERRNO(), "shared memory %u: shmat: %m", s->perm.id);
		f = (struct seg_fill){addr, (s->size + CT_IMAGE_PAGE_SIZE - 1) &
						    ~(uint64_t)(CT_IMAGE_PAGE_SIZE - 1)};
		r = ct_image_pages_read(j->R->img, pg, err, seg_cb, &f);
		if (r >= 0)
			r = ct_image_pages_check_mapped(pg, err);
		(void)shmdt(addr);
		if (r < 0)
			return job_fail(j, r, "shared memory %u: filling it failed: %s", s->perm.id,
					err[0] ? err : strerror(-r));
	}
	if (shmctl(id, IPC_SET, &ds) < 0)
		return job_fail(j, NEG_ERRNO(), "shared memory %u: %m", s->perm.id);
	if ((s->flags & CT_IMAGE_SHM_LOCKED) && shmctl(id, SHM_LOCK, NULL) < 0)
		return job_fail(j, NEG_ERRNO(), "shared memory %u: SHM_LOCK: %m", s->perm.id);
	return 0;
}

/* In the container's IPC namespace. */
static int ipc_job_run(void *arg)
{
	struct ipc_job *j = arg;
	_cleanup_free_ uint8_t *buf = NULL;

	if (j->finish) {
		for (size_t i = 0; i < j->ipc->n_shms; i++)
			if ((j->ipc->shms[i].flags & CT_IMAGE_SHM_DEST) &&
			    shmctl((int)j->ipc->shms[i].perm.id, IPC_RMID, NULL) < 0)
				return job_fail(j, NEG_ERRNO(), "shared memory %u: IPC_RMID: %m",
						j->ipc->shms[i].perm.id);
		return 0;
	}
	/* The limits first: they apply to the objects. */
	for (size_t i = 0; i < j->ipc->n_sysctls; i++)
		if (set_sysctl(j, &j->ipc->sysctls[i]) < 0)
			return j->r;
	for (size_t i = 0; i < j->ipc->n_shms; i++)
		if (make_shm_seg(j, &j->ipc->shms[i]) < 0)
			return j->r;
	for (size_t i = 0; i < j->ipc->n_sems; i++)
		if (make_sem_set(j, &j->ipc->sems[i]) < 0)
			return j->r;
	if (j->ipc->n_msgqs > 0 && !(buf = malloc(sizeof(long) + CT_IMAGE_MSG_MAX)))
		return job_fail(j, -ENOMEM, "out of memory");
	for (size_t i = 0; i < j->ipc->n_msgqs; i++)
		if (make_msg_queue(j, &j->ipc->msgqs[i], buf) < 0)
			return j->r;
	return 0;
}

static int run_job(struct restorer *R, pid_t pid1, bool finish)
{
	struct ipc_job j = {.R = R, .ipc = &R->img->ipc, .finish = finish};
	_cleanup_close_ int fd = -EBADF;
	char path[64];
	bool joined;
	int r;

	if (j.ipc->n_sems == 0 && j.ipc->n_msgqs == 0 && j.ipc->n_shms == 0 &&
	    (finish || j.ipc->n_sysctls == 0))
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/ns/ipc", (int)pid1);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return restore_fail(R, NEG_ERRNO(), "opening its IPC namespace: %m");
	r = ns_run(fd, CLONE_NEWIPC, ipc_job_run, &j, &joined);
	if (r < 0 && !joined)
		return restore_fail(R, r,
				    "making its System V IPC objects: joining its IPC "
				    "namespace: %s",
				    strerror(-r));
	if (r < 0)
		return restore_fail(R, r, "making its System V IPC objects: %s", j.err);
	return 0;
}

int restore_ipc(struct restorer *R, pid_t pid1)
{
	return run_job(R, pid1, false);
}

int restore_ipc_finish(struct restorer *R, pid_t pid1)
{
	return run_job(R, pid1, true);
}
