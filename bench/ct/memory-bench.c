/* The raw memory limits the container engine's dump and restore are measured against:
 * memcpy, process_vm_readv (1 and 2 threads), /proc/PID/mem reads and pwrite into a child
 * (first touch and existing pages), plus the library reader (ct_mem_read_parallel: 1 MiB
 * chunks with per-page zero detection; 2 threads from 16 MiB on); medians of N runs per size. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint/ct/memory-internal.h"
#include "common/common.h"

#define CHUNK	  (1UL << 20)
#define MAX_RUNS  15
#define MAX_SIZES 8

struct child {
	pid_t pid;
	int cmd_fd, reply_fd;
	uint64_t touched, fresh; /* addresses in the child */
};

static _noreturn_ void child_main(size_t size, int cmd_fd, int reply_fd)
{
	uint64_t addrs[2];
	uint8_t *touched, *fresh;
	char cmd;

	touched = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	fresh = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (touched == MAP_FAILED || fresh == MAP_FAILED)
		_exit(2);
	/* Non-zero, not trivially compressible content. */
	for (size_t o = 0; o < size; o += 8) {
		uint64_t v = (o * 0x9e3779b97f4a7c15ULL) | 1;
		memcpy(touched + o, &v, 8);
	}
	addrs[0] = (uintptr_t)touched;
	addrs[1] = (uintptr_t)fresh;
	if (write(reply_fd, addrs, sizeof(addrs)) != sizeof(addrs))
		_exit(3);
	while (read(cmd_fd, &cmd, 1) == 1) {
		if (cmd == 'd' && madvise(fresh, size, MADV_DONTNEED) < 0)
			_exit(4);
		if (write(reply_fd, &cmd, 1) != 1)
			_exit(5);
	}
	_exit(0);
}

static int child_start(size_t size, struct child *ret)
{
	int cmd[2], reply[2];
	uint64_t addrs[2];
	pid_t pid;

	if (pipe2(cmd, O_CLOEXEC) < 0 || pipe2(reply, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0)
		child_main(size, cmd[0], reply[1]);
	close(cmd[0]);
	close(reply[1]);
	if (read(reply[0], addrs, sizeof(addrs)) != sizeof(addrs)) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return -EIO;
	}
	*ret = (struct child){pid, cmd[1], reply[0], addrs[0], addrs[1]};
	return 0;
}

static int child_cmd(const struct child *c, char cmd)
{
	char r;

	if (write(c->cmd_fd, &cmd, 1) != 1 || read(c->reply_fd, &r, 1) != 1 || r != cmd)
		return -EIO;
	return 0;
}

static void child_stop(struct child *c)
{
	close(c->cmd_fd);
	close(c->reply_fd);
	kill(c->pid, SIGKILL);
	waitpid(c->pid, NULL, 0);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(double *v, unsigned n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

struct pvr_job {
	pid_t pid;
	uint64_t remote;
	uint8_t *local;
	size_t size;
	atomic_size_t next;
	atomic_int error;
};

static void *pvr_worker(void *userdata)
{
	struct pvr_job *j = userdata;

	for (;;) {
		size_t off = atomic_fetch_add(&j->next, CHUNK);
		struct iovec l, r;
		size_t n;

		if (off >= j->size)
			return NULL;
		n = MIN(CHUNK, j->size - off);
		l = (struct iovec){j->local + off, n};
		r = (struct iovec){(void *)(uintptr_t)(j->remote + off), n};
		if (process_vm_readv(j->pid, &l, 1, &r, 1, 0) != (ssize_t)n) {
			atomic_store(&j->error, errno ? errno : EIO);
			return NULL;
		}
	}
}

static int raw_pvr(const struct child *c, uint8_t *buf, size_t size, unsigned threads)
{
	struct pvr_job j = {.pid = c->pid, .remote = c->touched, .local = buf, .size = size};
	pthread_t t[8];
	unsigned started = 0;

	for (; started + 1 < threads && started < ELEMENTSOF(t); started++)
		if (pthread_create(&t[started], NULL, pvr_worker, &j) != 0)
			break;
	pvr_worker(&j);
	for (unsigned i = 0; i < started; i++)
		pthread_join(t[i], NULL);
	return -atomic_load(&j.error);
}

static int mem_rw(int fd, uint8_t *buf, size_t size, uint64_t addr, bool write_mode)
{
	for (size_t off = 0; off < size; off += CHUNK) {
		size_t n = MIN(CHUNK, size - off);
		ssize_t k = write_mode ? pwrite(fd, buf + off, n, (off_t)(addr + off))
				       : pread(fd, buf + off, n, (off_t)(addr + off));
		if (k != (ssize_t)n)
			return k < 0 ? -errno : -EIO;
	}
	return 0;
}

enum {
	COL_MEMCPY,
	COL_PVR1,
	COL_PVR2,
	COL_MEM_READ,
	COL_WRITE_FIRST,
	COL_WRITE_EXISTING,
	COL_LIB_READ1,
	COL_LIB_READ,
	N_COLS
};
static const char *const col_names[N_COLS] = {
	"memcpy",     "pvr 1T",	    "pvr 2T",	      "mem read",
	"pwrite new", "pwrite old", "ct_mem_read 1T", "ct_mem_read 2T",
};

static int measure(size_t size, unsigned runs, double ret[N_COLS])
{
	_cleanup_free_ uint8_t *flags = NULL;
	double t[N_COLS][MAX_RUNS];
	struct child c = {};
	struct ct_mem m = {.mem_fd = -EBADF, .pagemap_fd = -EBADF};
	uint8_t *src, *dst;
	int r;

	src = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	dst = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	flags = malloc(size / CT_PAGE_SIZE);
	if (src == MAP_FAILED || dst == MAP_FAILED || !flags)
		return -ENOMEM;
	memset(src, 0x5a, size);
	memset(dst, 0xa5, size);
	r = child_start(size, &c);
	if (r < 0)
		return r;
	r = ct_mem_open(c.pid, &m);
	if (r < 0) {
		child_stop(&c);
		return r;
	}
	for (unsigned i = 0; i < runs && r >= 0; i++) {
		double t0 = now();
		struct ct_mem_range range = {c.touched, size, dst, flags};

		memcpy(dst, src, size);
		__asm__ volatile("" ::: "memory");
		t[COL_MEMCPY][i] = now() - t0;

		t0 = now();
		r = raw_pvr(&c, dst, size, 1);
		t[COL_PVR1][i] = now() - t0;
		if (r < 0)
			break;
		t0 = now();
		r = raw_pvr(&c, dst, size, 2);
		t[COL_PVR2][i] = now() - t0;
		if (r < 0)
			break;
		t0 = now();
		r = mem_rw(m.mem_fd, dst, size, c.touched, false);
		t[COL_MEM_READ][i] = now() - t0;
		if (r < 0)
			break;
		r = child_cmd(&c, 'd');
		if (r < 0)
			break;
		t0 = now();
		r = mem_rw(m.mem_fd, dst, size, c.fresh, true);
		t[COL_WRITE_FIRST][i] = now() - t0;
		if (r < 0)
			break;
		t0 = now();
		r = mem_rw(m.mem_fd, dst, size, c.fresh, true);
		t[COL_WRITE_EXISTING][i] = now() - t0;
		if (r < 0)
			break;
		t0 = now();
		r = ct_mem_read_parallel(&m, &range, 1, 1, false);
		t[COL_LIB_READ1][i] = now() - t0;
		if (r < 0)
			break;
		t0 = now();
		r = ct_mem_read_parallel(&m, &range, 1, 2, false);
		t[COL_LIB_READ][i] = now() - t0;
	}
	ct_mem_close(&m);
	child_stop(&c);
	munmap(src, size);
	munmap(dst, size);
	if (r < 0)
		return r;
	for (unsigned col = 0; col < N_COLS; col++)
		ret[col] = (double)size / median(t[col], runs) / 1e9;
	return 0;
}

static void usage(void)
{
	printf("Usage: ct-memory-bench [--runs N] [--size SIZE]...\n"
	       "Default: --runs 5 --size 64M --size 256M --size 1G. Needs root.\n");
}

int main(int argc, char *argv[])
{
	uint64_t sizes[MAX_SIZES] = {64ULL << 20, 256ULL << 20, 1ULL << 30};
	unsigned n_sizes = 3, runs = 5;
	bool custom = false;

	for (int i = 1; i < argc; i++) {
		uint32_t u;
		if (streq(argv[i], "--runs") && i + 1 < argc) {
			if (parse_uint32(argv[++i], &u) < 0 || u < 1 || u > MAX_RUNS) {
				fprintf(stderr, "--runs: 1..%d\n", MAX_RUNS);
				return 1;
			}
			runs = u;
		} else if (streq(argv[i], "--size") && i + 1 < argc) {
			if (!custom)
				n_sizes = 0;
			custom = true;
			if (n_sizes >= MAX_SIZES || parse_size(argv[++i], &sizes[n_sizes]) < 0 ||
			    sizes[n_sizes] < CHUNK || sizes[n_sizes] % CT_PAGE_SIZE) {
				fprintf(stderr, "--size: a multiple of 4K, at least 1M\n");
				return 1;
			}
			n_sizes++;
		} else {
			usage();
			return streq(argv[i], "--help") ? 0 : 1;
		}
	}
	if (geteuid() != 0) {
		fprintf(stderr, "ct-memory-bench needs root (/proc/PID/mem of a child).\n");
		return 1;
	}

	printf("GB/s (1e9 bytes/s), median of %u runs; 1 MiB per syscall; %ld CPUs\n", runs,
	       sysconf(_SC_NPROCESSORS_ONLN));
	printf("%-8s", "size");
	for (unsigned col = 0; col < N_COLS; col++)
		printf(" %*s", col >= COL_LIB_READ1 ? 14 : 10, col_names[col]);
	printf("\n");
	for (unsigned s = 0; s < n_sizes; s++) {
		double gbs[N_COLS];
		char b[32];
		int r = measure(sizes[s], runs, gbs);

		if (r < 0) {
			fprintf(stderr, "%s: %s\n", format_bytes(b, sizeof(b), sizes[s]),
				strerror(-r));
			return 1;
		}
		printf("%-8s", format_bytes(b, sizeof(b), sizes[s]));
		for (unsigned col = 0; col < N_COLS; col++)
			printf(" %*.2f", col >= COL_LIB_READ1 ? 14 : 10, gbs[col]);
		printf("\n");
		fflush(stdout);
	}
	return 0;
}
