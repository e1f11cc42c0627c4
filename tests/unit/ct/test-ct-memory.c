/* Unit tests for the memory primitives: a forked child with a known pattern (zero pages,
 * untouched pages, a read-only page, a MAP_SHARED region, a PROT_NONE page) is read back
 * exactly, then rewritten and checked by the child itself. Needs root (ptrace rights on
 * /proc/PID/mem and pagemap's present bits). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint/ct/memory-internal.h"
#include "checkpoint/ct/proc-internal.h"
#include "common/common.h"

#define PAGE	     4096UL
#define A_PAGES	     (5 * 1024 + 17) /* 20 MiB + a bit: crosses chunks, reaches the threads */
#define C_PAGES	     4
#define IS_ZERO(i)   ((i) % 97 == 3)   /* written with zeros: present but zero */
#define UNTOUCHED(i) ((i) % 101 == 10) /* never touched */

enum { REGION_A, REGION_B, REGION_C, REGION_D, N_REGIONS };
static const size_t region_pages[N_REGIONS] = {A_PAGES, 1, C_PAGES, 1};

struct child {
	pid_t pid;
	int cmd_fd, reply_fd;
	uint64_t addr[N_REGIONS];
};

static void fill_page(uint8_t *p, unsigned seed, unsigned region, size_t i)
{
	uint64_t x =
		((uint64_t)seed << 40) ^ ((uint64_t)region << 32) ^ (i + 1) ^ 0x9e3779b97f4a7c15ULL;

	for (size_t o = 0; o < PAGE; o += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(p + o, &x, 8);
	}
}

/* The expected content of a page for seed; NULL pattern means zero. */
static bool page_expected_zero(unsigned seed, unsigned region, size_t i)
{
	return seed == 1 && region == REGION_A && (IS_ZERO(i) || UNTOUCHED(i));
}

static void expected_page(uint8_t *p, unsigned seed, unsigned region, size_t i)
{
	if (page_expected_zero(seed, region, i))
		memset(p, 0, PAGE);
	else
		fill_page(p, seed, region, i);
}

static bool verify(uint8_t *const base[N_REGIONS], unsigned seed)
{
	uint8_t want[PAGE];

	for (unsigned r = 0; r < N_REGIONS; r++)
		for (size_t i = 0; i < region_pages[r]; i++) {
			expected_page(want, seed, r, i);
			if (memcmp(base[r] + i * PAGE, want, PAGE) != 0) {
				fprintf(stderr, "child: region %u page %zu differs (seed %u)\n", r,
					i, seed);
				return false;
			}
		}
	return true;
}

static _noreturn_ void child_main(int cmd_fd, int reply_fd)
{
	uint8_t *base[N_REGIONS];
	uint64_t addrs[N_REGIONS];
	char cmd;

	base[REGION_A] = mmap(NULL, A_PAGES * PAGE, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	base[REGION_B] =
		mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	base[REGION_C] = mmap(NULL, C_PAGES * PAGE, PROT_READ | PROT_WRITE,
			      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	base[REGION_D] =
		mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	for (unsigned r = 0; r < N_REGIONS; r++)
		if (base[r] == MAP_FAILED)
			_exit(2);
	/* A huge page would make "untouched" pages present. */
	(void)madvise(base[REGION_A], A_PAGES * PAGE, MADV_NOHUGEPAGE);
	for (unsigned r = 0; r < N_REGIONS; r++)
		for (size_t i = 0; i < region_pages[r]; i++) {
			if (r == REGION_A && UNTOUCHED(i))
				continue;
			if (r == REGION_A && IS_ZERO(i))
				memset(base[r] + i * PAGE, 0, PAGE);
			else
				fill_page(base[r] + i * PAGE, 1, r, i);
		}
	if (mprotect(base[REGION_B], PAGE, PROT_READ) < 0 ||
	    mprotect(base[REGION_D], PAGE, PROT_NONE) < 0)
		_exit(3);
	for (unsigned r = 0; r < N_REGIONS; r++)
		addrs[r] = (uintptr_t)base[r];
	if (write(reply_fd, addrs, sizeof(addrs)) != sizeof(addrs))
		_exit(4);
	while (read(cmd_fd, &cmd, 1) == 1) {
		char ok;
		if (cmd != 'v')
			_exit(5);
		(void)mprotect(base[REGION_D], PAGE, PROT_READ);
		ok = verify(base, 2) ? 1 : 0;
		(void)mprotect(base[REGION_D], PAGE, PROT_NONE);
		if (write(reply_fd, &ok, 1) != 1)
			_exit(6);
	}
	_exit(0);
}

static int setup_child(void **state)
{
	struct child *c = calloc(1, sizeof(*c));
	int cmd[2], reply[2];

	if (geteuid() != 0) {
		fprintf(stderr, "test-ct-memory needs root (/proc/PID/mem, pagemap); not root\n");
		free(c);
		return -1; /* cmocka reports the group as failed, never skipped */
	}
	if (!c || pipe2(cmd, O_CLOEXEC) < 0 || pipe2(reply, O_CLOEXEC) < 0)
		return -1;
	c->pid = fork();
	if (c->pid < 0)
		return -1;
	if (c->pid == 0) {
		close(cmd[1]);
		close(reply[0]);
		child_main(cmd[0], reply[1]);
	}
	close(cmd[0]);
	close(reply[1]);
	c->cmd_fd = cmd[1];
	c->reply_fd = reply[0];
	if (read(c->reply_fd, c->addr, sizeof(c->addr)) != sizeof(c->addr)) {
		kill(c->pid, SIGKILL);
		waitpid(c->pid, NULL, 0);
		free(c);
		return -1;
	}
	*state = c;
	return 0;
}

static int teardown_child(void **state)
{
	struct child *c = *state;

	if (!c)
		return 0;
	if (c->pid > 0) {
		kill(c->pid, SIGKILL);
		waitpid(c->pid, NULL, 0);
	}
	close(c->cmd_fd);
	close(c->reply_fd);
	free(c);
	*state = NULL;
	return 0;
}

static void check_region(const uint8_t *buf, const uint8_t *flags, unsigned region,
			 bool skip_absent)
{
	uint8_t want[PAGE];

	for (size_t i = 0; i < region_pages[region]; i++) {
		expected_page(want, 1, region, i);
		if (memcmp(buf + i * PAGE, want, PAGE) != 0)
			fail_msg("region %u page %zu differs", region, i);
		if (region == REGION_A && UNTOUCHED(i) && skip_absent)
			assert_int_equal(flags[i], CT_PAGE_ABSENT);
		else if (page_expected_zero(1, region, i))
			assert_int_equal(flags[i] & (CT_PAGE_ZERO | CT_PAGE_ABSENT), CT_PAGE_ZERO);
		else
			assert_int_equal(flags[i] & (CT_PAGE_ZERO | CT_PAGE_ABSENT), 0);
	}
}

static void test_classify_child(void **state)
{
	struct child *c = *state;
	struct ct_vma_list l = {};
	static const enum ct_vma_kind want[N_REGIONS] = {CT_VMA_ANON_PRIVATE, CT_VMA_ANON_PRIVATE,
							 CT_VMA_ANON_SHARED, CT_VMA_ANON_PRIVATE};
	unsigned found = 0;

	assert_int_equal(ct_proc_read_maps(c->pid, &l), 0);
	for (size_t i = 0; i < l.n; i++)
		for (unsigned r = 0; r < N_REGIONS; r++)
			if (l.vmas[i].start == c->addr[r]) {
				assert_int_equal(l.vmas[i].end - l.vmas[i].start,
						 region_pages[r] * PAGE);
				assert_int_equal(ct_vma_classify(&l.vmas[i]), want[r]);
				found |= 1U << r;
			}
	assert_int_equal(found, (1U << N_REGIONS) - 1);
	ct_vma_list_done(&l);
}

static void test_read_child(void **state)
{
	struct child *c = *state;
	struct ct_mem m;
	uint8_t *buf = malloc(A_PAGES * PAGE), *flags = malloc(A_PAGES);

	assert_non_null(buf);
	assert_non_null(flags);
	assert_int_equal(ct_mem_open(c->pid, &m), 0);
	/* skip_absent first: a plain read maps the kernel's zero page into untouched pages
	 * (get_user_pages), after which pagemap calls them present. */
	for (int skip = 1; skip >= 0; skip--)
		for (unsigned r = 0; r < N_REGIONS; r++) {
			memset(buf, 0xaa, region_pages[r] * PAGE);
			assert_int_equal(ct_mem_read(&m, c->addr[r], region_pages[r] * PAGE, buf,
						     skip, flags),
					 0);
			check_region(buf, flags, r, skip);
		}
	/* Without page flags, and a misaligned request. */
	assert_int_equal(ct_mem_read(&m, c->addr[REGION_C], C_PAGES * PAGE, buf, false, NULL), 0);
	check_region(buf, (uint8_t[C_PAGES]){}, REGION_C, false);
	assert_int_equal(ct_mem_read(&m, c->addr[REGION_C] + 1, PAGE, buf, false, NULL), -EINVAL);
	/* Unmapped memory is an error, not zeros. */
	assert_true(ct_mem_read(&m, 0x1000, PAGE, buf, false, NULL) < 0);
	ct_mem_close(&m);
	free(buf);
	free(flags);
}

static void test_read_parallel(void **state)
{
	struct child *c = *state;
	struct ct_mem m;
	size_t half = (A_PAGES / 2) * PAGE;
	uint8_t *buf = malloc(A_PAGES * PAGE), *flags = malloc(A_PAGES), *bbuf = malloc(PAGE);
	uint8_t bflags[1];
	struct ct_mem_range ranges[] = {
		{c->addr[REGION_A], half, buf, flags},
		{c->addr[REGION_B], PAGE, bbuf, bflags},
		{c->addr[REGION_A] + half, A_PAGES * PAGE - half, buf + half, flags + half / PAGE},
	};

	assert_non_null(buf);
	assert_non_null(flags);
	assert_non_null(bbuf);
	assert_int_equal(ct_mem_open(c->pid, &m), 0);
	for (unsigned threads = 1; threads <= 3; threads++) {
		memset(buf, 0x55, A_PAGES * PAGE);
		assert_int_equal(
			ct_mem_read_parallel(&m, ranges, ELEMENTSOF(ranges), threads, true), 0);
		check_region(buf, flags, REGION_A, true);
		check_region(bbuf, bflags, REGION_B, true);
	}
	ct_mem_close(&m);
	free(buf);
	free(flags);
	free(bbuf);
}

static void test_write_child(void **state)
{
	struct child *c = *state;
	struct ct_mem m;
	uint8_t *buf = malloc(A_PAGES * PAGE);
	char ok = 0;
	int status;

	assert_non_null(buf);
	assert_int_equal(ct_mem_open(c->pid, &m), 0);
	/* Into every region: untouched pages, read-only, shared, PROT_NONE. */
	for (unsigned r = 0; r < N_REGIONS; r++) {
		for (size_t i = 0; i < region_pages[r]; i++)
			expected_page(buf + i * PAGE, 2, r, i);
		assert_int_equal(ct_mem_write(&m, c->addr[r], buf, region_pages[r] * PAGE), 0);
	}
	assert_int_equal(write(c->cmd_fd, "v", 1), 1);
	assert_int_equal(read(c->reply_fd, &ok, 1), 1);
	assert_int_equal(ok, 1);

	/* The process is gone: reads and writes say so. */
	kill(c->pid, SIGKILL);
	assert_int_equal(waitpid(c->pid, &status, 0), c->pid);
	assert_int_equal(ct_mem_read(&m, c->addr[REGION_A], PAGE, buf, false, NULL), -ESRCH);
	assert_int_equal(ct_mem_read(&m, c->addr[REGION_A], PAGE, buf, true, NULL), -ESRCH);
	assert_int_equal(ct_mem_write(&m, c->addr[REGION_A], buf, PAGE), -ESRCH);
	assert_int_equal(ct_mem_read_parallel(&m,
					      &(struct ct_mem_range){c->addr[REGION_A],
								     A_PAGES * PAGE, buf, NULL},
					      1, 2, false),
			 -ESRCH);
	assert_int_equal(ct_mem_open(c->pid, &(struct ct_mem){}), -ESRCH);
	c->pid = 0;
	ct_mem_close(&m);
	free(buf);
}

/* A private file mapping: only the copied-on-write page is the process's own. */
static void test_file_private_pages(void **state)
{
	char path[] = "/tmp/ct-memory-test-XXXXXX";
	uint8_t page[PAGE], flags[3], buf[3 * PAGE];
	struct ct_vma_list l = {};
	struct ct_mem m;
	volatile uint8_t *p;
	bool found = false;
	int fd;

	if (geteuid() != 0)
		fail_msg("test-ct-memory needs root (pagemap's present bits); not root");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(unlink(path), 0);
	for (size_t i = 0; i < 3; i++) {
		fill_page(page, 9, 0, i);
		assert_int_equal(write(fd, page, PAGE), PAGE);
	}
	p = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	assert_true(p != MAP_FAILED);
	(void)p[0];	 /* page cache, mapped */
	p[PAGE] ^= 0xff; /* a private copy */

	assert_int_equal(ct_proc_read_maps(getpid(), &l), 0);
	for (size_t i = 0; i < l.n; i++)
		if (l.vmas[i].start == (uintptr_t)p) {
			assert_int_equal(ct_vma_classify(&l.vmas[i]), CT_VMA_FILE_PRIVATE);
			assert_true(l.vmas[i].deleted);
			found = true;
		}
	assert_true(found);
	ct_vma_list_done(&l);

	assert_int_equal(ct_mem_open(getpid(), &m), 0);
	assert_int_equal(ct_mem_read(&m, (uintptr_t)p, 3 * PAGE, buf, true, flags), 0);
	assert_int_equal(flags[0], CT_PAGE_FILE);
	assert_int_equal(flags[1], 0);
	/* Untouched, or mapped from the page cache by fault-around: never a private copy. */
	assert_true(flags[2] == CT_PAGE_ABSENT || flags[2] == CT_PAGE_FILE);
	fill_page(page, 9, 0, 0);
	assert_memory_equal(buf, page, PAGE);
	fill_page(page, 9, 0, 1);
	page[0] ^= 0xff;
	assert_memory_equal(buf + PAGE, page, PAGE);
	ct_mem_close(&m);
	munmap((void *)p, 3 * PAGE);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_classify_child, setup_child, teardown_child),
		cmocka_unit_test_setup_teardown(test_read_child, setup_child, teardown_child),
		cmocka_unit_test_setup_teardown(test_read_parallel, setup_child, teardown_child),
		cmocka_unit_test_setup_teardown(test_write_child, setup_child, teardown_child),
		cmocka_unit_test(test_file_private_pages),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
