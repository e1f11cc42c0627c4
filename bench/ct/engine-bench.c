/* The container engine's dump and restore times (ct_dump, ct_restore) on fixture-ct-counter,
 * against process_vm_readv of its heap, memcpy, /proc/self/mem pwrite, UFFDIO_COPY into fresh
 * memory and a file write into the image directory in the same run. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <linux/magic.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sched.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint/ct/container-internal.h"
#include "checkpoint/ct/engine-internal.h"
#include "checkpoint/ct/memory-internal.h"
#include "common/common.h"
#include "common/hash.h"

#define CHUNK	       (1UL << 20)
#define MAX_RUNS       15
#define MAX_SIZES      8
#define MAX_THREADS    8
#define ENGINE_TIMEOUT (30 * USEC_PER_SEC) /* freezing and seizing, cgroup kill and removal */
#define READY_TIMEOUT  (120 * USEC_PER_SEC)
#define CHECK_TIMEOUT  (20 * USEC_PER_SEC)
#define CHECK_OK_LINES 10 /* one in every 10 OK lines follows a full check of every heap page */
#define TARGET_RATIO   0.5
#define TARGET_1G_MS   1000.0
#define MIB	       (1ULL << 20)

/* Parsed arguments. */
static uint64_t arg_sizes[MAX_SIZES] = {64, 256, 1024}; /* MiB */
static unsigned arg_n_sizes = 3, arg_runs = 5, arg_threads, arg_fds, arg_files, arg_pairs;
static const char *arg_dir = "/dev/shm";
#ifndef ENGINE_BENCH_FIXTURE /* the build's fixture-ct-counter, when it builds the tests */
#define ENGINE_BENCH_FIXTURE NULL
#endif
static const char *arg_fixture = ENGINE_BENCH_FIXTURE;
static bool arg_json, arg_smoke, arg_zstd = true, arg_huge, arg_reserve_ab, arg_direct_ab,
				 arg_map_ab;
static const char *bench_workdir; /* the fswrite baseline writes a file here */

static volatile sig_atomic_t stop_requested;

enum col {
	COL_READV,
	COL_MEMCPY,
	COL_PWRITE,
	COL_UFFD,
	COL_FSWRITE,
	COL_FSWRITE2,
	COL_RESERVE_MS,
	COL_FREEZE_MS,
	COL_DUMP_MS,
	COL_DUMP_GBS,
	COL_DUMP_RATIO,
	COL_DUMP_FSWRITE_RATIO,
	COL_IMAGE_MIB,
	COL_RESTORE_MS,
	COL_RESTORE_GBS,
	COL_RESTORE_RATIO,
	COL_RESTORE_PWRITE_RATIO,
	COL_RESTORE_UFFD_RATIO,
	COL_DUMP_STATE_MS,
	COL_RESTORE_STATE_MS,
	N_COLS
};

static const struct {
	const char *head1, *head2, *json;
	int prec;
	bool ratio;
} cols[N_COLS] = {
	[COL_READV] = {"readv", "GB/s", "readv_gbs", 2},
	[COL_MEMCPY] = {"memcpy", "GB/s", "memcpy_gbs", 2},
	[COL_PWRITE] = {"pwrite", "GB/s", "pwrite_gbs", 2},
	[COL_UFFD] = {"uffd", "GB/s", "uffd_gbs", 2},
	[COL_FSWRITE] = {"fswrite", "GB/s", "fswrite_gbs", 2},
	[COL_FSWRITE2] = {"fswr2nd", "GB/s", "fswrite_second_gbs", 2},
	[COL_RESERVE_MS] = {"reserve", "ms", "reserve_ms", 1},
	[COL_FREEZE_MS] = {"freeze", "ms", "freeze_ms", 2},
	[COL_DUMP_MS] = {"dump", "ms", "dump_ms", 1},
	[COL_DUMP_GBS] = {"dump", "GB/s", "dump_gbs", 2},
	[COL_DUMP_RATIO] = {"dump", "/readv", "dump_vs_readv", 2, true},
	[COL_DUMP_FSWRITE_RATIO] = {"dump", "/fswr", "dump_vs_fswrite", 2, true},
	[COL_IMAGE_MIB] = {"image", "MiB", "image_mib", 1},
	[COL_RESTORE_MS] = {"restore", "ms", "restore_ms", 1},
	[COL_RESTORE_GBS] = {"restore", "GB/s", "restore_gbs", 2},
	[COL_RESTORE_RATIO] = {"restore", "/readv", "restore_vs_readv", 2, true},
	[COL_RESTORE_PWRITE_RATIO] = {"restore", "/pwrite", "restore_vs_pwrite", 2, true},
	[COL_RESTORE_UFFD_RATIO] = {"restore", "/uffd", "restore_vs_uffd", 2, true},
	[COL_DUMP_STATE_MS] = {"dstate", "ms", "dump_state_ms", 1},
	[COL_RESTORE_STATE_MS] = {"rstate", "ms", "restore_state_ms", 1},
};

struct row {
	uint64_t mib;
	int level;
	unsigned n;
	double v[N_COLS][MAX_RUNS];
};

struct stat3 {
	double median, min, max;
};

/* A container of the bench: its cgroup and PID 1 (our child). */
struct bench_ct {
	struct ct_cgroup *cg;
	pid_t pid;
	int pidfd;
};
#define BENCH_CT_NULL ((struct bench_ct){.pidfd = -EBADF})

/* The fixture's output: READY once, then an OK line every 100 ms, or a FAIL line. */
struct log_watch {
	int fd;
	off_t off; /* the first byte not parsed yet */
	bool ready;
	unsigned n_ok;
	char fail[256];
};

/* A row's kind: 0 uncompressed, 1 zstd level 1, ROW_NO_RESERVE uncompressed with the pages
 * files made during the dump, not allocated before the freeze (--reserve-ab), ROW_NO_DIRECT
 * uncompressed and reserved, the pages written from a buffer with write() instead of read
 * straight into the mapped file (--direct-ab), ROW_NO_MAP uncompressed, restored without
 * mapping the pages files: read and checked a second time as they are copied (--map-ab). */
#define ROW_NO_RESERVE (-1)
#define ROW_NO_DIRECT  (-2)
#define ROW_NO_MAP     (-3)

static const char *level_name(int level)
{
	return level == ROW_NO_RESERVE	? "nores"
	       : level == ROW_NO_DIRECT ? "write"
	       : level == ROW_NO_MAP	? "reread"
	       : level			? "zstd-1"
					: "none";
}

static void on_stop_signal(int sig)
{
	stop_requested = 1;
}

/* Checked between the steps of a run; the cleanup attributes undo what it started. */
static int check_stop(void)
{
	return stop_requested ? log_error_errno(EINTR, "Stopped by a signal.") : 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static struct stat3 stat3(const double *v, unsigned n)
{
	double s[MAX_RUNS];

	memcpy(s, v, n * sizeof(*v));
	qsort(s, n, sizeof(*s), cmp_double);
	return (struct stat3){n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2, s[0], s[n - 1]};
}

static int rm_rf_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path) < 0 && errno != ENOENT ? -1 : 0;
}

/* For the work directory and images: removes it with everything in it. */
static void rm_rf_freep(char **path)
{
	if (*path && nftw(*path, rm_rf_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0 &&
	    errno != ENOENT)
		log_error_errno(errno, "Failed to remove %s: %m", *path);
	free(*path);
}

static void bench_ct_stop(struct bench_ct *ct)
{
	int r;

	if (ct->cg) {
		/* Thaws (v1) and kills whatever is left; waits until the cgroup is empty. */
		r = ct_cgroup_kill(ct->cg, ENGINE_TIMEOUT);
		if (r < 0)
			log_error_errno(r, "Failed to kill container %s: %s", ct->cg->name,
					ct_cgroup_last_error(ct->cg));
	}
	if (ct->pid > 0)
		(void)waitpid(ct->pid, NULL, 0);
	ct->pidfd = safe_close(ct->pidfd);
	if (ct->cg) {
		r = ct_cgroup_remove(ct->cg, ENGINE_TIMEOUT);
		if (r < 0)
			log_error_errno(r, "Failed to remove cgroup of %s: %s", ct->cg->name,
					ct_cgroup_last_error(ct->cg));
		ct_cgroup_free(ct->cg);
	}
	*ct = BENCH_CT_NULL;
}

static int bench_ct_new_cgroup(const char *name, struct bench_ct *ct)
{
	int r = ct_cgroup_new(&(struct ct_cgroup_params){.name = name, .needs = 0}, &ct->cg);

	if (r < 0)
		return log_error_errno(r, "Failed to create cgroup %s: %m", name);
	return 0;
}

/* Reads the complete lines written since the last call. */
static int log_watch_poll(struct log_watch *w)
{
	char buf[16384];

	for (;;) {
		ssize_t n = pread(w->fd, buf, sizeof(buf) - 1, w->off);
		char *p = buf, *nl;

		if (n < 0)
			return log_error_errno(errno, "Failed to read the fixture's log: %m");
		buf[n] = 0;
		while ((nl = memchr(p, '\n', (size_t)(buf + n - p)))) {
			*nl = 0;
			if (startswith(p, "READY"))
				w->ready = true;
			else if (startswith(p, "OK "))
				w->n_ok++;
			else if (startswith(p, "FAIL") && !w->fail[0])
				strscpy(w->fail, p, sizeof(w->fail));
			w->off += nl + 1 - p;
			p = nl + 1;
		}
		if (n < (ssize_t)sizeof(buf) - 1)
			return 0;
		if (p == buf) /* a line longer than buf: not one of the fixture's */
			w->off += n;
	}
}

/* Polls the log until the fixture printed READY (want_ok 0) or want_ok OK lines; fails on a
 * FAIL line, the fixture's exit, a stop signal or the timeout. */
static int wait_fixture(const struct bench_ct *ct, struct log_watch *w, unsigned want_ok,
			usec_t timeout)
{
	usec_t deadline = usec_add(now_usec(CLOCK_MONOTONIC), timeout);
	const char *what = want_ok ? "OK lines" : "READY";

	for (;;) {
		struct pollfd p = {.fd = ct->pidfd, .events = POLLIN};
		int r = log_watch_poll(w), k;

		if (r < 0)
			return r;
		if (w->fail[0])
			return log_error_errno(EPROTO, "Fixture pid %d reported: %s", ct->pid,
					       w->fail);
		if (want_ok ? w->n_ok >= want_ok : w->ready)
			return 0;
		if (check_stop() < 0)
			return -EINTR;
		if (now_usec(CLOCK_MONOTONIC) > deadline)
			return log_error_errno(
				ETIMEDOUT, "Fixture pid %d: %u of %u %s after %.1f s, no FAIL",
				ct->pid, w->n_ok, want_ok, what, (double)timeout / USEC_PER_SEC);
		k = poll(&p, 1, 50);
		if (k < 0 && errno != EINTR)
			return log_error_errno(errno, "Failed to poll the fixture's pidfd: %m");
		if (k > 0) {
			(void)log_watch_poll(w);
			return log_error_errno(ECHILD, "Fixture pid %d exited, waiting for %s%s%s",
					       ct->pid, what, w->fail[0] ? ": " : "", w->fail);
		}
	}
}

static int bench_ct_spawn(const char *name, int log_fd, uint64_t mib, struct bench_ct *ct)
{
	_cleanup_free_ char *error = NULL;
	char size[32], fds[32], files[32], pairs[32];
	char *argv[] = {
		(char *)arg_fixture, size, (char *)"256", (char *)"0", fds, files, pairs, NULL};
	struct log_watch w = {.fd = log_fd};
	int r;

	snprintf(size, sizeof(size), "%" PRIu64, mib);
	snprintf(fds, sizeof(fds), "%u", arg_fds);
	snprintf(files, sizeof(files), "%u", arg_files);
	snprintf(pairs, sizeof(pairs), "%u", arg_pairs);
	r = bench_ct_new_cgroup(name, ct);
	if (r < 0)
		return r;
	r = ct_container_spawn(&(struct ct_spec){.name = name, .argv = argv}, ct->cg, log_fd,
			       &ct->pid, &ct->pidfd, &error);
	if (r < 0)
		return log_error_errno(r, "Failed to start %s: %s", arg_fixture,
				       error ?: strerror(-r));
	return wait_fixture(ct, &w, 0, READY_TIMEOUT);
}

/* The largest anonymous read-write mapping of pid: the fixture's heap. */
static int find_heap(pid_t pid, uint64_t *ret_addr, size_t *ret_len)
{
	_cleanup_fclose_ FILE *f = NULL;
	uint64_t best_addr = 0, best_len = 0;
	char path[64], line[512];

	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	f = fopen(path, "re");
	if (!f)
		return log_error_errno(errno, "Failed to open %s: %m", path);
	while (fgets(line, sizeof(line), f)) {
		unsigned long long start, end, inode;
		char perms[8];
		int name_at = 0;

		if (sscanf(line, "%llx-%llx %7s %*s %*s %llu %n", &start, &end, perms, &inode,
			   &name_at) != 4)
			continue;
		if (inode != 0 || !startswith(perms, "rw") ||
		    (line[name_at] && line[name_at] != '\n' &&
		     !startswith(line + name_at, "[heap]")))
			continue;
		if (end - start > best_len) {
			best_addr = start;
			best_len = end - start;
		}
	}
	if (best_len == 0)
		return log_error_errno(ENOENT, "No anonymous rw mapping in %s", path);
	*ret_addr = best_addr;
	*ret_len = best_len;
	return 0;
}

/* Copies [remote, remote + size) in 1 MiB chunks, as bench/ct/memory-bench.c does: read from pid
 * with process_vm_readv, written with pwrite to fd (/proc/PID/mem), or placed with UFFDIO_COPY
 * through fd (a userfaultfd with remote registered). */
enum copy_how { COPY_READV, COPY_PWRITE, COPY_UFFD };

struct copy_job {
	enum copy_how how;
	pid_t pid;
	int fd;
	uint64_t remote;
	uint8_t *local;
	size_t size;
	atomic_size_t next;
	atomic_int error;
};

/* UFFDIO_COPY of n bytes, continued after a partial copy (EAGAIN). */
static ssize_t uffd_copy_all(int fd, uint64_t dst, const uint8_t *src, size_t n)
{
	size_t done = 0;

	while (done < n) {
		struct uffdio_copy c = {
			.dst = dst + done, .src = (uintptr_t)(src + done), .len = n - done};

		if (ioctl(fd, UFFDIO_COPY, &c) == 0)
			return (ssize_t)n;
		if (c.copy > 0)
			done += (size_t)c.copy;
		else if (errno != EAGAIN)
			return -1;
	}
	return (ssize_t)n;
}

static void *copy_worker(void *userdata)
{
	struct copy_job *j = userdata;

	for (;;) {
		size_t off = atomic_fetch_add(&j->next, CHUNK), n;
		struct iovec l, r;
		ssize_t k;

		if (off >= j->size)
			return NULL;
		n = MIN(CHUNK, j->size - off);
		l = (struct iovec){j->local + off, n};
		r = (struct iovec){(void *)(uintptr_t)(j->remote + off), n};
		if (j->how == COPY_PWRITE)
			k = pwrite(j->fd, l.iov_base, n, (off_t)(j->remote + off));
		else if (j->how == COPY_READV)
			k = process_vm_readv(j->pid, &l, 1, &r, 1, 0);
		else
			k = uffd_copy_all(j->fd, j->remote + off, l.iov_base, n);
		if (k != (ssize_t)n) {
			atomic_store(&j->error, k < 0 ? errno : EIO);
			return NULL;
		}
	}
}

/* Runs j on arg_threads threads (the engine's count), returns the seconds it took. */
static int copy_run(struct copy_job *j, double *ret_s)
{
	pthread_t t[MAX_THREADS];
	unsigned started = 0;
	usec_t t0 = now_usec(CLOCK_MONOTONIC);

	for (; started + 1 < arg_threads && started < ELEMENTSOF(t); started++)
		if (pthread_create(&t[started], NULL, copy_worker, j) != 0)
			break;
	copy_worker(j);
	for (unsigned i = 0; i < started; i++)
		pthread_join(t[i], NULL);
	*ret_s = (double)(now_usec(CLOCK_MONOTONIC) - t0) / USEC_PER_SEC;
	return -atomic_load(&j->error);
}

/* pwrite through /proc/self/mem into a fresh anonymous mapping: the way a restore writes pages
 * (ct_mem_write), first touch included. Timed on the second of two fresh mappings: on this VM
 * a first touch of memory not used lately is up to 4x slower, and a restore gets the pages the
 * dumped original just freed. */
static int raw_pwrite(uint8_t *buf, size_t len, double *ret_s)
{
	_cleanup_close_ int fd = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
	int r = 0;

	if (fd < 0)
		return log_error_errno(errno, "Failed to open /proc/self/mem: %m");
	for (unsigned pass = 0; pass < 2 && r >= 0; pass++) {
		struct copy_job j = {.how = COPY_PWRITE, .fd = fd, .local = buf, .size = len};
		void *fresh =
			mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (fresh == MAP_FAILED)
			return log_error_errno(errno, "Failed to map %zu bytes: %m", len);
		j.remote = (uintptr_t)fresh;
		r = copy_run(&j, ret_s);
		munmap(fresh, len);
	}
	return r < 0 ? log_error_errno(r, "pwrite to /proc/self/mem: %m") : 0;
}

/* UFFDIO_COPY into a fresh anonymous mapping registered with a userfaultfd: how a restore fills
 * anonymous memory (the kernel allocates each page and copies into it, with no clearing), from
 * a buffer already in memory. The fastest way this kernel fills fresh anonymous memory: a
 * restore, which also reads and checks the image, cannot be faster. Second of two mappings, as
 * raw_pwrite. */
static int raw_uffd(uint8_t *buf, size_t len, double *ret_s)
{
	struct uffdio_api api = {.api = UFFD_API};
	_cleanup_close_ int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
	int r = 0;

	if (fd < 0)
		return log_error_errno(errno, "userfaultfd: %m");
	if (ioctl(fd, UFFDIO_API, &api) < 0)
		return log_error_errno(errno, "UFFDIO_API: %m");
	for (unsigned pass = 0; pass < 2 && r >= 0; pass++) {
		struct copy_job j = {.how = COPY_UFFD, .fd = fd, .local = buf, .size = len};
		void *fresh =
			mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		struct uffdio_register reg = {.range = {.start = (uintptr_t)fresh, .len = len},
					      .mode = UFFDIO_REGISTER_MODE_MISSING};

		if (fresh == MAP_FAILED)
			return log_error_errno(errno, "Failed to map %zu bytes: %m", len);
		if (ioctl(fd, UFFDIO_REGISTER, &reg) < 0) {
			r = log_error_errno(errno, "UFFDIO_REGISTER: %m");
			munmap(fresh, len);
			break;
		}
		j.remote = (uintptr_t)fresh;
		r = copy_run(&j, ret_s);
		if (r < 0)
			log_error_errno(r, "UFFDIO_COPY: %m");
		munmap(fresh, len); /* unregisters it */
	}
	return r;
}

/* write() of len bytes into a new file of the image directory, in 1 MiB pieces from one thread,
 * as the engine writes each process's pages: what the file system takes. Two files one after
 * the other: memory this VM has not used lately is up to 20x slower to get the first time
 * (seen here: 0.4 against 10 GB/s), and the first file, like a dump, takes that toll; the
 * second gets the pages the first just freed. */
static int raw_fswrite(const uint8_t *buf, size_t len, double ret_s[2])
{
	_cleanup_free_ char *path = NULL;
	int r = 0;

	if (asprintf(&path, "%s/fswrite.tmp", bench_workdir) < 0) {
		path = NULL;
		return log_oom();
	}
	for (unsigned pass = 0; pass < 2 && r >= 0; pass++) {
		_cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		usec_t t0 = now_usec(CLOCK_MONOTONIC);

		if (fd < 0)
			return log_error_errno(errno, "Failed to create %s: %m", path);
		for (size_t off = 0; off < len && r >= 0;) {
			ssize_t n = write(fd, buf + off, MIN(len - off, CHUNK));

			if (n < 0)
				r = log_error_errno(errno, "Failed to write %s: %m", path);
			else
				off += (size_t)n;
		}
		ret_s[pass] = (double)(now_usec(CLOCK_MONOTONIC) - t0) / USEC_PER_SEC;
		(void)unlink(path);
	}
	return r;
}

/* A buffer of the baselines, pre-faulted: they measure copies, not page faults. Fresh in every
 * run, as in memory-bench: buffers kept idle across runs read up to 2x slower here. */
struct buffer {
	uint8_t *p;
	size_t len;
};

static void buffer_unmap(struct buffer *b)
{
	if (b->p)
		munmap(b->p, b->len);
}

static int buffer_new(size_t len, uint8_t fill, struct buffer *ret)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return log_error_errno(errno, "Failed to map %zu bytes: %m", len);
	memset(p, fill, len);
	*ret = (struct buffer){p, len};
	return 0;
}

/* The raw limits on the running fixture: its heap read with process_vm_readv, memcpy of as
 * many bytes, pwrite and UFFDIO_COPY of them into fresh mappings, and write() of them into a new
 * file of the image directory. */
static int measure_baselines(pid_t pid, double ret[N_COLS])
{
	_cleanup_(buffer_unmap) struct buffer src = {}, dst = {};
	struct copy_job j = {.how = COPY_READV, .pid = pid, .fd = -EBADF};
	double readv_s, memcpy_s, pwrite_s, uffd_s, fswrite_s[2] = {};
	usec_t t0;
	int r;

	r = find_heap(pid, &j.remote, &j.size);
	if (r < 0)
		return r;
	r = buffer_new(j.size, 0x5a, &src);
	if (r >= 0)
		r = buffer_new(j.size, 0xa5, &dst);
	if (r < 0)
		return r;
	j.local = dst.p;
	r = copy_run(&j, &readv_s);
	if (r < 0)
		return log_error_errno(r, "process_vm_readv of pid %d at %#" PRIx64 ": %m", pid,
				       j.remote);
	t0 = now_usec(CLOCK_MONOTONIC);
	memcpy(dst.p, src.p, j.size);
	__asm__ volatile("" ::: "memory");
	memcpy_s = (double)(now_usec(CLOCK_MONOTONIC) - t0) / USEC_PER_SEC;
	r = raw_pwrite(dst.p, j.size, &pwrite_s);
	if (r >= 0)
		r = raw_uffd(dst.p, j.size, &uffd_s);
	if (r >= 0)
		r = raw_fswrite(dst.p, j.size, fswrite_s);
	if (r < 0)
		return r;
	ret[COL_READV] = (double)j.size / readv_s / 1e9;
	ret[COL_MEMCPY] = (double)j.size / memcpy_s / 1e9;
	ret[COL_PWRITE] = (double)j.size / pwrite_s / 1e9;
	ret[COL_UFFD] = (double)j.size / uffd_s / 1e9;
	ret[COL_FSWRITE] = (double)j.size / fswrite_s[0] / 1e9;
	ret[COL_FSWRITE2] = (double)j.size / fswrite_s[1] / 1e9;
	return 0;
}

static void print_phases(const struct row *row, const struct ct_dump_stats *ds,
			 const struct ct_restore_stats *rs)
{
	fprintf(stderr,
		"  %" PRIu64 " MiB %s: dump: reserve %.1f (before the freeze), freeze %.2f, seize "
		"%.1f, state %.1f, memory %.1f, "
		"release %.1f ms; restore: verify %.1f, tree %.1f, memory %.1f, state %.1f, "
		"total %.1f ms\n",
		row->mib, level_name(row->level), (double)ds->reserve_usec / 1e3,
		(double)ds->freeze_usec / 1e3, (double)ds->seize_usec / 1e3,
		(double)ds->state_usec / 1e3, (double)ds->memory_usec / 1e3,
		(double)ds->release_usec / 1e3, (double)rs->verify_usec / 1e3,
		(double)rs->tree_usec / 1e3, (double)rs->memory_usec / 1e3,
		(double)rs->state_usec / 1e3, (double)rs->total_usec / 1e3);
}

static void fill_columns(const struct ct_dump_stats *ds, const struct ct_restore_stats *rs,
			 double ret[N_COLS])
{
	double bytes = (double)(ds->pages * CT_PAGE_SIZE);

	ret[COL_RESERVE_MS] = (double)ds->reserve_usec / 1e3;
	ret[COL_FREEZE_MS] = (double)ds->freeze_usec / 1e3;
	ret[COL_DUMP_MS] = (double)ds->frozen_usec / 1e3;
	ret[COL_DUMP_GBS] = bytes / ((double)MAX(ds->frozen_usec, 1u) * 1e3);
	ret[COL_DUMP_RATIO] = ret[COL_DUMP_GBS] / ret[COL_READV];
	ret[COL_DUMP_FSWRITE_RATIO] = ret[COL_DUMP_GBS] / ret[COL_FSWRITE];
	ret[COL_IMAGE_MIB] = (double)ds->image_bytes / MIB;
	ret[COL_RESTORE_MS] = (double)rs->total_usec / 1e3;
	ret[COL_RESTORE_GBS] = bytes / ((double)MAX(rs->total_usec, 1u) * 1e3);
	ret[COL_RESTORE_RATIO] = ret[COL_RESTORE_GBS] / ret[COL_READV];
	ret[COL_RESTORE_PWRITE_RATIO] = ret[COL_RESTORE_GBS] / ret[COL_PWRITE];
	ret[COL_RESTORE_UFFD_RATIO] = ret[COL_RESTORE_GBS] / ret[COL_UFFD];
	ret[COL_DUMP_STATE_MS] = (double)ds->state_usec / 1e3;
	ret[COL_RESTORE_STATE_MS] = (double)rs->state_usec / 1e3;
}

/* Spawn, baselines, dump (which kills the original), restore into a new cgroup, check the
 * restored fixture; every container it started is gone when it returns. */
static int dump_and_restore(const char *name, const char *img, int log_fd, const struct row *row,
			    double ret[N_COLS])
{
	_cleanup_(bench_ct_stop) struct bench_ct ct = BENCH_CT_NULL, rct = BENCH_CT_NULL;
	char rname[80], err[CT_ENGINE_ERROR_MAX];
	struct ct_dump_stats ds;
	struct ct_restore_stats rs;
	struct log_watch w;
	int r;

	r = bench_ct_spawn(name, log_fd, row->mib, &ct);
	if (r < 0)
		return r;
	r = measure_baselines(ct.pid, ret);
	if (r >= 0)
		r = check_stop();
	if (r < 0)
		return r;
	r = ct_dump(&(struct ct_dump_opts){.name = name,
					   .cg = ct.cg,
					   .root_pid = ct.pid,
					   .dir = img,
					   .compress_level = MAX(row->level, 0),
					   .no_reserve = row->level == ROW_NO_RESERVE,
					   .no_direct = row->level == ROW_NO_DIRECT,
					   .n_threads = arg_threads,
					   .timeout = ENGINE_TIMEOUT},
		    &ds, err);
	if (r < 0)
		return log_error_errno(r, "ct_dump of %s failed: %s", name, err);
	bench_ct_stop(&ct); /* reaps the killed original and removes its cgroup */

	snprintf(rname, sizeof(rname), "%s-r", name);
	r = check_stop();
	if (r >= 0)
		r = bench_ct_new_cgroup(rname, &rct);
	if (r < 0)
		return r;
	w = (struct log_watch){.fd = log_fd, .off = lseek(log_fd, 0, SEEK_END)};
	r = ct_restore(&(struct ct_restore_opts){.name = name,
						 .dir = img,
						 .cg = rct.cg,
						 .n_threads = arg_threads,
						 .no_map = row->level == ROW_NO_MAP,
						 .timeout = ENGINE_TIMEOUT},
		       &rct.pid, &rct.pidfd, &rs, err);
	if (r < 0)
		return log_error_errno(r, "ct_restore of %s failed: %s", name, err);
	r = wait_fixture(&rct, &w, CHECK_OK_LINES, CHECK_TIMEOUT);
	if (r < 0)
		return r;
	fill_columns(&ds, &rs, ret);
	if (!arg_json)
		print_phases(row, &ds, &rs);
	return 0;
}

/* One run with its own log and image; the image is removed afterwards, on every path. */
static int run_once(const char *workdir, const struct row *row, unsigned seq, double ret[N_COLS])
{
	_cleanup_close_ int log_fd = -EBADF;
	_cleanup_(rm_rf_freep) char *img = NULL;
	char name[64], log_path[PATH_MAX];
	int r;

	snprintf(name, sizeof(name), "engine-bench-%d-%u", getpid(), seq);
	snprintf(log_path, sizeof(log_path), "%s/%s.log", workdir, name);
	if (asprintf(&img, "%s/%s.img", workdir, name) < 0) {
		img = NULL;
		return log_oom();
	}
	log_fd = open(log_path, O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
	if (log_fd < 0)
		return log_error_errno(errno, "Failed to create %s: %m", log_path);
	r = dump_and_restore(name, img, log_fd, row, ret);
	(void)unlink(log_path);
	return r;
}

static void print_header(const char *workdir, bool tmpfs)
{
	printf("engine-bench: fixture-ct-counter in a container; images in %s%s\n", workdir,
	       !tmpfs	  ? " (NOT tmpfs)"
	       : arg_huge ? " (its own tmpfs, huge=within_size)"
			  : " (tmpfs)");
	printf("%u run%s per row (med, min, max); %u memory threads for the engine, readv, "
	       "pwrite and uffd; %ld CPUs; XXH3 checksums: %s\n",
	       arg_runs, arg_runs > 1 ? "s" : "", arg_threads, sysconf(_SC_NPROCESSORS_ONLN),
	       hash_xxh3_impl());
	printf("the fixture holds %u pipe fds (--fds), %u fds of its executable (--files) and %u "
	       "socketpair fds (--socketpairs) beside its heap\n",
	       arg_fds, arg_files, arg_pairs);
	printf("reserve = the pages files allocated while the container still runs, before the "
	       "freeze (uncompressed only)\n");
	printf("dstate = the dump's state phase (frozen: tasks, fds); rstate = the restore's "
	       "(files, "
	       "signals, credentials, registers)\n");
	printf("dump = freeze start until the image is complete; GB/s = 1e9 bytes of dumped memory "
	       "per s\n");
	printf("uffd = UFFDIO_COPY of the heap's size from memory into a fresh mapping, as a "
	       "restore "
	       "fills memory: its floor\n");
	printf("fswrite = write() of the heap's size into a new file there, one thread (as the "
	       "engine writes one process);\n  fswr2nd = the same into a second file, on the pages "
	       "the first one freed\n");
	printf("targets: dump and restore >= %.1fx readv; freeze to dumped 1 GiB < 1 s; restore 1 "
	       "GiB < 1 s\n\n",
	       TARGET_RATIO);
	printf("%-8s %-6s %-3s", "size", "compr", "");
	for (unsigned c = 0; c < N_COLS; c++)
		printf(" %7s", cols[c].head1);
	printf("\n%-8s %-6s %-3s", "", "", "");
	for (unsigned c = 0; c < N_COLS; c++)
		printf(" %7s", cols[c].head2);
	printf("\n");
	fflush(stdout);
}

static void print_row(const struct row *row)
{
	static const char *const names[3] = {"med", "min", "max"};
	struct stat3 s[N_COLS];
	char size[32];

	for (unsigned c = 0; c < N_COLS; c++)
		s[c] = stat3(row->v[c], row->n);
	snprintf(size, sizeof(size), "%" PRIu64 " MiB", row->mib);
	for (unsigned k = 0; k < (row->n > 1 ? 3 : 1); k++) {
		printf("%-8s %-6s %-3s", k ? "" : size, k ? "" : level_name(row->level), names[k]);
		for (unsigned c = 0; c < N_COLS; c++) {
			double v = k == 0 ? s[c].median : k == 1 ? s[c].min : s[c].max;

			printf(" %*.*f%s", cols[c].ratio ? 6 : 7, cols[c].prec, v,
			       cols[c].ratio ? "x" : "");
		}
		printf("\n");
	}
	fflush(stdout);
}

/* The targets, on the uncompressed rows' medians: the lowest ratio over the sizes, and the
 * 1 GiB times. */
#define N_TARGETS 4
struct verdict {
	const char *what;
	int met; /* 1, 0, or -1: not measured */
	double value;
	uint64_t mib;
};

static void judge(const struct row *rows, unsigned n_rows, struct verdict v[N_TARGETS])
{
	static const enum col by[N_TARGETS] = {COL_DUMP_RATIO, COL_RESTORE_RATIO, COL_DUMP_MS,
					       COL_RESTORE_MS};

	v[0] = (struct verdict){"dump >= 0.5x readv (every size, uncompressed)", -1};
	v[1] = (struct verdict){"restore >= 0.5x readv (every size, uncompressed)", -1};
	v[2] = (struct verdict){"freeze to dumped, 1 GiB < 1 s", -1};
	v[3] = (struct verdict){"restore, 1 GiB < 1 s", -1};
	for (unsigned i = 0; i < n_rows; i++)
		for (unsigned t = 0; t < N_TARGETS && rows[i].level == 0; t++) {
			double m = stat3(rows[i].v[by[t]], rows[i].n).median;

			if (t < 2 && (v[t].met < 0 || m < v[t].value))
				v[t] = (struct verdict){v[t].what, m >= TARGET_RATIO, m,
							rows[i].mib};
			else if (t >= 2 && rows[i].mib == 1024)
				v[t] = (struct verdict){v[t].what, m < TARGET_1G_MS, m, 1024};
		}
}

static void print_targets(const struct verdict v[N_TARGETS])
{
	printf("\ntargets (medians):\n");
	for (unsigned t = 0; t < N_TARGETS; t++)
		if (v[t].met < 0)
			printf("  %-50s not measured%s\n", v[t].what,
			       t < 2 ? "" : " (no 1024 MiB size)");
		else
			printf("  %-50s %-6s (%.*f%s at %" PRIu64 " MiB)\n", v[t].what,
			       v[t].met ? "met" : "MISSED", t < 2 ? 2 : 0, v[t].value,
			       t < 2 ? "x, lowest" : " ms", v[t].mib);
}

static int print_json(const char *workdir, const struct row *rows, unsigned n_rows,
		      const struct verdict v[N_TARGETS])
{
	_cleanup_json_ json_t *doc = NULL;
	json_t *jrows, *jtargets;

	doc = json_pack("{s:s, s:s, s:I, s:I, s:I, s:[], s:[]}", "fixture", arg_fixture, "dir",
			workdir, "runs", (json_int_t)arg_runs, "threads", (json_int_t)arg_threads,
			"cpus", (json_int_t)sysconf(_SC_NPROCESSORS_ONLN), "rows", "targets");
	if (!doc)
		return log_oom();
	jrows = json_object_get(doc, "rows");
	jtargets = json_object_get(doc, "targets");
	for (unsigned i = 0; i < n_rows; i++) {
		json_t *jr =
			json_pack("{s:I, s:i, s:I}", "size_mib", (json_int_t)rows[i].mib,
				  "compress_level", rows[i].level, "runs", (json_int_t)rows[i].n);

		if (!jr || json_array_append_new(jrows, jr) < 0)
			return log_oom();
		for (unsigned c = 0; c < N_COLS; c++) {
			struct stat3 s = stat3(rows[i].v[c], rows[i].n);

			if (json_object_set_new(jr, cols[c].json,
						json_pack("{s:f, s:f, s:f}", "median", s.median,
							  "min", s.min, "max", s.max)) < 0)
				return log_oom();
		}
	}
	for (unsigned t = 0; t < N_TARGETS; t++) {
		json_t *jt = json_pack("{s:s, s:o, s:o}", "target", v[t].what, "met",
				       v[t].met < 0 ? json_null() : json_boolean(v[t].met), "value",
				       v[t].met < 0 ? json_null() : json_real(v[t].value));

		if (!jt || json_array_append_new(jtargets, jt) < 0)
			return log_oom();
	}
	if (json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0)
		return log_error_errno(EIO, "Failed to write JSON.");
	printf("\n");
	return 0;
}

static int parse_sizes(const char *s)
{
	_cleanup_free_ char *copy = strdup(s);
	char *save = NULL;

	if (!copy)
		return log_oom();
	arg_n_sizes = 0;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		uint64_t mib;

		if (arg_n_sizes >= MAX_SIZES || parse_uint64(t, &mib) < 0 || mib < 1 ||
		    mib > (1u << 20))
			return log_error_errno(EINVAL, "--sizes: up to %d sizes in MiB, 1..1048576",
					       MAX_SIZES);
		arg_sizes[arg_n_sizes++] = mib;
	}
	return arg_n_sizes ? 0 : log_error_errno(EINVAL, "--sizes: empty list");
}

static void usage(void)
{
	printf("Usage: engine-bench [OPTIONS]\n"
	       "  --sizes LIST     heap sizes in MiB (default 64,256,1024)\n"
	       "  --runs N         runs per row, 1..%d (default 5)\n"
	       "  --dir DIR        parent of the work directory for images (default /dev/shm)\n"
	       "  --huge-tmpfs     images on a tmpfs of the bench's own, mounted on the work\n"
	       "                   directory with huge=within_size (2 MiB pages: fewer page\n"
	       "                   allocations per byte written)\n"
	       "  --threads N      memory threads: engine, readv, pwrite (default CPUs, at most "
	       "4)\n"
	       "  --fixture PATH   fixture-ct-counter (default %s)\n"
	       "  --fds N          the fixture also holds N fds (N/2 pipes, a byte in each),\n"
	       "                   0..8192 (default 0); dstate and rstate show what they cost\n"
	       "  --files N        and N fds of its own executable, each opened alone at an\n"
	       "                   offset of its own, 0..8192 (default 0)\n"
	       "  --socketpairs N  and N fds of unix socketpairs (N/2 pairs, a byte in each,\n"
	       "                   an epoll watching one end of each), 0..8192 (default 0)\n"
	       "  --no-zstd        skip the zstd-1 rows\n"
	       "  --reserve-ab     one more uncompressed row per size (\"nores\") whose pages\n"
	       "                   files are not allocated before the freeze, as before the\n"
	       "                   engine did that\n"
	       "  --direct-ab      one more uncompressed row per size (\"write\") whose pages\n"
	       "                   go through a buffer and write() into the reserved file\n"
	       "                   instead of being read straight into it\n"
	       "  --map-ab         one more uncompressed row per size (\"reread\") restored\n"
	       "                   without mapping its pages files: each chunk read and\n"
	       "                   checked again as it is copied, as before the engine\n"
	       "                   mapped them\n"
	       "  --smoke          one run at 32 MiB, no zstd (the ctest smoke run)\n"
	       "  --json           machine-readable output on stdout\n"
	       "  -v               engine debug logging\n"
	       "Needs root.\n",
	       MAX_RUNS, strna(arg_fixture));
}

static int parse_argv(int argc, char *argv[])
{
	enum {
		ARG_SIZES = 0x100,
		ARG_RUNS,
		ARG_DIR,
		ARG_HUGE,
		ARG_THREADS,
		ARG_FIXTURE,
		ARG_NO_ZSTD,
		ARG_RESERVE_AB,
		ARG_DIRECT_AB,
		ARG_MAP_AB,
		ARG_FDS,
		ARG_FILES,
		ARG_PAIRS,
	};
	static const struct option options[] = {
		{"help", no_argument, NULL, 'h'},
		{"sizes", required_argument, NULL, ARG_SIZES},
		{"runs", required_argument, NULL, ARG_RUNS},
		{"dir", required_argument, NULL, ARG_DIR},
		{"huge-tmpfs", no_argument, NULL, ARG_HUGE},
		{"threads", required_argument, NULL, ARG_THREADS},
		{"fixture", required_argument, NULL, ARG_FIXTURE},
		{"no-zstd", no_argument, NULL, ARG_NO_ZSTD},
		{"reserve-ab", no_argument, NULL, ARG_RESERVE_AB},
		{"direct-ab", no_argument, NULL, ARG_DIRECT_AB},
		{"map-ab", no_argument, NULL, ARG_MAP_AB},
		{"fds", required_argument, NULL, ARG_FDS},
		{"files", required_argument, NULL, ARG_FILES},
		{"socketpairs", required_argument, NULL, ARG_PAIRS},
		{"smoke", no_argument, NULL, 's'},
		{"json", no_argument, NULL, 'j'},
		{},
	};
	uint32_t u;
	int c, r;

	while ((c = getopt_long(argc, argv, "hv", options, NULL)) >= 0) {
		switch (c) {
		case 'h':
			usage();
			return 0;
		case 'v':
			log_set_max_level(LOG_DEBUG);
			break;
		case ARG_SIZES:
			r = parse_sizes(optarg);
			if (r < 0)
				return r;
			break;
		case ARG_RUNS:
			if (parse_uint32(optarg, &u) < 0 || u < 1 || u > MAX_RUNS)
				return log_error_errno(EINVAL, "--runs: 1..%d", MAX_RUNS);
			arg_runs = u;
			break;
		case ARG_THREADS:
			if (parse_uint32(optarg, &u) < 0 || u < 1 || u > MAX_THREADS)
				return log_error_errno(EINVAL, "--threads: 1..%d", MAX_THREADS);
			arg_threads = u;
			break;
		case ARG_DIR:
			arg_dir = optarg;
			break;
		case ARG_HUGE:
			arg_huge = true;
			break;
		case ARG_FIXTURE:
			arg_fixture = optarg;
			break;
		case ARG_NO_ZSTD:
			arg_zstd = false;
			break;
		case ARG_RESERVE_AB:
			arg_reserve_ab = true;
			break;
		case ARG_DIRECT_AB:
			arg_direct_ab = true;
			break;
		case ARG_MAP_AB:
			arg_map_ab = true;
			break;
		case ARG_FDS:
			if (parse_uint32(optarg, &u) < 0 || u > 8192)
				return log_error_errno(EINVAL, "--fds: 0..8192");
			arg_fds = u;
			break;
		case ARG_FILES:
			if (parse_uint32(optarg, &u) < 0 || u > 8192)
				return log_error_errno(EINVAL, "--files: 0..8192");
			arg_files = u;
			break;
		case ARG_PAIRS:
			if (parse_uint32(optarg, &u) < 0 || u > 8192)
				return log_error_errno(EINVAL, "--socketpairs: 0..8192");
			arg_pairs = u;
			break;
		case 's':
			arg_smoke = true;
			break;
		case 'j':
			arg_json = true;
			break;
		default:
			return -EINVAL;
		}
	}
	if (optind < argc)
		return log_error_errno(EINVAL, "Unexpected argument %s; see --help.", argv[optind]);
	if (arg_smoke) {
		arg_sizes[0] = 32;
		arg_n_sizes = 1;
		arg_runs = 1;
		arg_zstd = false;
	}
	if (arg_threads == 0) /* the engine's own default */
		arg_threads = (unsigned)CLAMP(sysconf(_SC_NPROCESSORS_ONLN), 1, 4);
	if (!arg_fixture)
		return log_error_errno(EINVAL, "--fixture PATH (fixture-ct-counter) is needed.");
	return 1;
}

static int run_all(const char *workdir, struct row *rows, unsigned *n_rows)
{
	int kinds[5], per_size = 0;
	unsigned seq = 0;

	kinds[per_size++] = 0;
	if (arg_reserve_ab)
		kinds[per_size++] = ROW_NO_RESERVE;
	if (arg_direct_ab)
		kinds[per_size++] = ROW_NO_DIRECT;
	if (arg_map_ab)
		kinds[per_size++] = ROW_NO_MAP;
	if (arg_zstd)
		kinds[per_size++] = 1;
	*n_rows = 0;
	for (unsigned s = 0; s < arg_n_sizes; s++) {
		struct row *size_rows = rows + *n_rows;

		for (int l = 0; l < per_size; l++)
			size_rows[l] = (struct row){.mib = arg_sizes[s], .level = kinds[l]};
		/* Interleaved run by run, so drift on a shared machine hits both rows alike. */
		for (unsigned i = 0; i < arg_runs; i++)
			for (int l = 0; l < per_size; l++) {
				struct row *row = &size_rows[l];
				double v[N_COLS] = {0};
				int r = run_once(workdir, row, seq++, v);

				if (r < 0)
					return log_error_errno(
						r, "%" PRIu64 " MiB, %s, run %u failed.", row->mib,
						level_name(row->level), i + 1);
				for (unsigned c = 0; c < N_COLS; c++)
					row->v[c][row->n] = v[c];
				row->n++;
			}
		*n_rows += (unsigned)per_size;
		if (!arg_json)
			for (int l = 0; l < per_size; l++)
				print_row(&size_rows[l]);
	}
	return 0;
}

int main(int argc, char *argv[])
{
	_cleanup_(rm_rf_freep) char *workdir = NULL;
	struct row rows[MAX_SIZES * 5];
	struct verdict v[N_TARGETS];
	struct sigaction sa = {.sa_handler = on_stop_signal, .sa_flags = SA_RESTART};
	struct statfs sfs;
	bool mounted = false;
	unsigned n_rows;
	int r;

	log_set_target(LOG_TARGET_CONSOLE);
	log_set_ident("engine-bench");
	r = parse_argv(argc, argv);
	if (r <= 0)
		return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
	if (geteuid() != 0) {
		log_error("engine-bench needs root (cgroups, namespaces, ptrace).");
		return EXIT_FAILURE;
	}
	if (access(arg_fixture, X_OK) < 0) {
		log_error_errno(errno, "Fixture %s: %m", arg_fixture);
		return EXIT_FAILURE;
	}
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);

	if (asprintf(&workdir, "%s/engine-bench.XXXXXX", arg_dir) < 0) {
		workdir = NULL;
		log_oom();
		return EXIT_FAILURE;
	}
	if (!mkdtemp(workdir)) {
		log_error_errno(errno, "Failed to create %s: %m", workdir);
		free(TAKE_PTR(workdir)); /* nothing to remove */
		return EXIT_FAILURE;
	}
	if (arg_huge) {
		/* In a mount namespace of our own: the mount goes with us, however we end. The
		 * containers the bench starts see it too (they inherit our namespace). */
		uint64_t max = 0;
		char opts[64];

		for (unsigned i = 0; i < arg_n_sizes; i++)
			max = MAX(max, arg_sizes[i]);
		snprintf(opts, sizeof(opts), "size=%" PRIu64 "m,mode=0700,huge=within_size",
			 3 * max + 256);
		if (unshare(CLONE_NEWNS) < 0 ||
		    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
		    mount("engine-bench", workdir, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0) {
			log_error_errno(errno, "Failed to mount a tmpfs (%s) on %s: %m", opts,
					workdir);
			return EXIT_FAILURE;
		}
		mounted = true;
	}
	bench_workdir = workdir;
	if (!arg_json)
		print_header(workdir, statfs(workdir, &sfs) == 0 && sfs.f_type == TMPFS_MAGIC);
	r = run_all(workdir, rows, &n_rows);
	if (mounted)
		(void)umount2(workdir, MNT_DETACH); /* then workdir, empty, can go */
	if (r < 0)
		return EXIT_FAILURE;
	judge(rows, n_rows, v);
	if (arg_json)
		r = print_json(workdir, rows, n_rows, v);
	else
		print_targets(v);
	return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
