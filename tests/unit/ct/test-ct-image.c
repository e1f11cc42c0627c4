/* Unit tests for the checkpoint image: a synthetic image (three processes, threads, VMAs of each
 * kind, fds, 64 MiB of pages with zero pages and a hole, shared memory) reads back identically;
 * every corruption, truncation, removal, wrong version, bad mode, foreign owner and symlink is
 * refused with a message naming the file. Runs as root (the reader wants root-owned images). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sched.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "checkpoint/ct/image-internal.h"
#include "common/common.h"
#include "migctl/migctl.h"

#define PAGE	  4096ULL
#define MIB_PAGES 256ULL
#define HEAP	  0x10000000ULL
#define HEAP_MIB  52 /* with a 4 MiB hole: 48 MiB stored */
#define HOLE_MIB  20
#define ANON7	  0x7f0000000000ULL
#define ANON7_MIB 12
#define SHM_MIB	  4
#define SHM_ID	  5

static char img_dir[64];

/* Zero, compressible or random, by address: the reader must give back exactly this. */
static void gen_page(uint8_t *p, uint64_t seed, uint64_t addr)
{
	uint64_t n = addr / PAGE, x = seed * 0x9e3779b97f4a7c15ULL ^ n;

	if (n % 7 == 3) {
		memset(p, 0, PAGE);
		return;
	}
	for (size_t i = 0; i < PAGE; i += 8) {
		if (n % 3 != 0) { /* xorshift64 */
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
		}
		memcpy(p + i, &x, 8);
	}
}

static uint8_t affinity[16] = {0x05, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80};

static void fill_thread(struct ct_image_thread *th, uint32_t tid, struct ct_image_regset *regs)
{
	static uint8_t gp[216], xstate[2696];

	for (size_t i = 0; i < sizeof(xstate); i++)
		xstate[i] = (uint8_t)(i * 7 + tid);
	memset(gp, (int)tid, sizeof(gp));
	regs[0] = (struct ct_image_regset){.type = 1, .size = sizeof(gp), .data = gp};
	regs[1] = (struct ct_image_regset){.type = 0x202, .size = sizeof(xstate), .data = xstate};
	*th = (struct ct_image_thread){.tid = tid,
				       .sigmask = 1ULL << 13,
				       .sigpending = tid,
				       .robust_list = 0x7f00001000 + tid,
				       .robust_list_len = 24,
				       .tid_address = 0x7f00002000 + tid,
				       .rseq = 0x7f00003000 + tid,
				       .rseq_len = 32,
				       .rseq_sig = 0x53053053,
				       .regsets = regs,
				       .n_regsets = 2,
				       .altstack_sp = 0x7f00004000 + tid,
				       .altstack_size = 65536,
				       .altstack_flags = 4 /* SS_AUTODISARM */,
				       .have_sched = true,
				       .sched_policy = tid == 1 ? 3 : 1, /* BATCH, FIFO */
				       .sched_flags = 1,
				       .sched_priority = tid == 1 ? 0 : 10,
				       .nice = tid == 1 ? -5 : 7,
				       .ioprio = (2 << 13) | 4,
				       .pdeathsig = 15,
				       .timerslack_ns = 123456,
				       .affinity = affinity,
				       .affinity_len = sizeof(affinity)};
	snprintf(th->comm, sizeof(th->comm), "worker-%u", tid);
}

static uint8_t siginfo[2 * CT_IMAGE_SIGINFO_SIZE] = {1, 2, 3};
static uint32_t groups[] = {0, 10, 100};

static uint64_t zombies[2] = {(uint64_t)40 << 32 | (7 << 8), (uint64_t)41 << 32 | 15};
static struct ct_image_timer timers[1] = {{3, 1, 36, 4242, 0, 0, 30000000, 12345678}};

static uint8_t bpf_allow[8] = {0x06, 0, 0, 0, 0, 0, 0xff, 0x7f}; /* BPF_RET|BPF_K ALLOW */
static uint8_t bpf_two[16] = {0x20, 0, 0, 0, 0, 0, 0, 0, 0x06, 0, 0, 0, 0, 0, 0xff, 0x7f};
static struct ct_image_seccomp_filter filters[2] = {{2, 1, bpf_allow}, {0, 2, bpf_two}};

static void fill_task(struct ct_image_task *t, uint32_t pid, uint32_t ppid,
		      struct ct_image_thread *threads, size_t n_threads)
{
	*t = (struct ct_image_task){.pid = pid, .ppid = ppid, .pgid = 1, .sid = 1};
	snprintf(t->comm, sizeof(t->comm), "proc%u", pid);
	t->creds = (struct ct_image_creds){.uids = {0, 0, 0, 0},
					   .gids = {0, 0, 0, 0},
					   .groups = groups,
					   .n_groups = 3,
					   .caps = {0, 0x1ff, 0x1ff, ~0ULL, 0}};
	for (size_t i = 0; i < CT_IMAGE_RLIMITS; i++)
		t->rlimits[i] = (struct ct_image_rlimit){i * 1000, ~0ULL};
	for (size_t i = 0; i < CT_IMAGE_SIGNALS; i++)
		t->sigactions[i] = (struct ct_image_sigaction){i, i << 8, 0x401000, 1ULL << i};
	t->shared_pending = 1ULL << 9;
	t->shared_siginfo = siginfo;
	t->n_shared_siginfo = 2;
	t->cwd = (char *)"/srv/www";
	t->root = (char *)"/";
	t->threads = threads;
	t->n_threads = n_threads;
	for (size_t i = 0; i < 6; i++)
		t->itimers[i] = 20000 * (i + 1);
	t->personality = 0x0040000; /* ADDR_NO_RANDOMIZE */
	t->umask = 027;
	if (pid == 1) {
		t->zombies = zombies;
		t->n_zombies = 2;
		t->timers = timers;
		t->n_timers = 1;
		t->have_attrs = true;
		t->oom_score_adj = -500;
		t->dumpable = 0;
		t->subreaper = 1;
		t->thp_disable = 3;
		t->mdwe = 1;
		t->no_new_privs = 1;
		t->seccomp_mode = 2;
		t->seccomp_filters = filters;
		t->n_seccomp_filters = 2;
	}
}

static struct ct_image_vma vmas1[] = {
	{0x400000, 0x600000, 0, 5, 2, CT_IMAGE_VMA_FILE_PRIVATE, CT_IMAGE_VMA_PAGES_NONE, 0,
	 "/usr/bin/app"},
	{HEAP, HEAP + HEAP_MIB *MIB_PAGES *PAGE, 0, 3, 0x22, CT_IMAGE_VMA_HEAP,
	 CT_IMAGE_VMA_PAGES_PRIVATE, 0, NULL},
	{0x7ffff7fc0000, 0x7ffff7fc4000, 0, 1, 0, CT_IMAGE_VMA_VVAR, CT_IMAGE_VMA_PAGES_NONE, 0,
	 NULL},
	{0x7ffff7fc4000, 0x7ffff7fc6000, 0, 5, 0, CT_IMAGE_VMA_VDSO, CT_IMAGE_VMA_PAGES_NONE, 0,
	 NULL},
};
static struct ct_image_vma vmas7[] = {
	{0x500000000, 0x500000000 + SHM_MIB *MIB_PAGES *PAGE, 0, 3, 1, CT_IMAGE_VMA_ANON_SHARED,
	 CT_IMAGE_VMA_PAGES_SHM, SHM_ID, NULL},
	{ANON7, ANON7 + ANON7_MIB *MIB_PAGES *PAGE, 0, 3, 0x22 | MAP_NORESERVE,
	 CT_IMAGE_VMA_ANON_PRIVATE, CT_IMAGE_VMA_PAGES_PRIVATE, 0, NULL,
	 CT_IMAGE_ADV_DONTFORK | CT_IMAGE_ADV_HUGEPAGE | CT_IMAGE_ADV_LOCKED |
		 CT_IMAGE_ADV_LOCKONFAULT},
};
static uint64_t guards7[4] = {ANON7 + PAGE, ANON7 + 3 * PAGE, ANON7 + 9 * PAGE, ANON7 + 10 * PAGE};
static struct ct_image_vma vmas9[] = {
	{0x600000, 0x610000, 0, 3, 0x22, CT_IMAGE_VMA_STACK, CT_IMAGE_VMA_PAGES_PRIVATE, 0, NULL},
};

static uint8_t pipe_data[5000];

static struct ct_image_lock locks1[] = {
	{CT_IMAGE_LOCK_FLOCK, 1, 0, UINT64_MAX},
	{CT_IMAGE_LOCK_POSIX, 0, 100, 199},
	{CT_IMAGE_LOCK_OFD, 1, 4096, UINT64_MAX},
};
static struct ct_image_fd fds1[] = {
	{0, CT_IMAGE_FD_CHR, O_RDONLY, 0, 0, "/dev/null", NULL, 0},
	{1, CT_IMAGE_FD_REG, O_WRONLY | O_APPEND, 0, 1234, "/var/log/app.log", NULL, 0, 0, 0,
	 locks1, ELEMENTSOF(locks1)},
	{3, CT_IMAGE_FD_PIPE, O_RDONLY, 1, 0, NULL, pipe_data, sizeof(pipe_data), 5, 987654},
	{4, CT_IMAGE_FD_TCP, O_RDWR, 1, 0, NULL, (uint8_t *)"tcp-state", 9},
	{7, CT_IMAGE_FD_EPOLL, O_RDWR, 1, 0, NULL, (uint8_t *)"interest", 8},
};
static struct ct_image_fd fds7[] = {
	{0, CT_IMAGE_FD_TTY, O_RDWR, 0, 0, "/dev/pts/0", NULL, 0},
	{5, CT_IMAGE_FD_EVENTFD, O_RDWR, 0, 0, NULL, (uint8_t *)"12345678", 8},
};

static uint16_t sem_values0[] = {3, 0, 32767};
static uint16_t sem_values1[] = {5};
static struct ct_image_sem_set model_sems[] = {
	{{0x5e3, 0, 1000, 1000, 0640}, sem_values0, 3},
	{{0, 7, 0, 0, 0600}, sem_values1, 1},
};
static struct ct_image_msg model_msgs[] = {
	{2, (uint8_t *)"second type, first", 18},
	{1, (uint8_t *)"", 0},
	{2, (uint8_t *)"bye", 3},
};
static struct ct_image_msg_queue model_msgqs[] = {
	{{0x5e5, 3, 0, 4, 0620}, 16384, model_msgs, 3},
	{{-1, 9, 0, 0, 0666}, 8192, NULL, 0},
};
static struct ct_image_shm_seg model_shms[] = {
	{{0x5e4, 2, 0, 0, 0640}, 65536, 0},
	{{0, 5, 1000, 1000, 0600}, 100, CT_IMAGE_SHM_DEST | CT_IMAGE_SHM_LOCKED},
};
static struct ct_image_sysctl model_sysctls[] = {
	{(char *)"kernel/sem", (char *)"250\t64000\t64\t256"},
	{(char *)"fs/mqueue/msg_max", (char *)"50"},
};
static struct ct_image_sysctl model_net_sysctls[] = {
	{(char *)"net/core/somaxconn", (char *)"777"},
	{(char *)"net/ipv4/ip_local_port_range", (char *)"20000\t30000"},
	{(char *)"net/ipv4/tcp_allowed_congestion_control", (char *)""},
};
static const struct ct_image_ipc model_ipc = {.sysctls = model_sysctls,
					      .n_sysctls = 2,
					      .shms = model_shms,
					      .n_shms = 2,
					      .sems = model_sems,
					      .n_sems = 2,
					      .msgqs = model_msgqs,
					      .n_msgqs = 2};

static void assert_ipc_equal(const struct ct_image_ipc *a, const struct ct_image_ipc *b)
{
	assert_int_equal(a->n_sysctls, b->n_sysctls);
	for (size_t i = 0; i < a->n_sysctls; i++) {
		assert_string_equal(a->sysctls[i].name, b->sysctls[i].name);
		assert_string_equal(a->sysctls[i].value, b->sysctls[i].value);
	}
	assert_int_equal(a->n_shms, b->n_shms);
	for (size_t i = 0; i < a->n_shms; i++)
		assert_memory_equal(&a->shms[i], &b->shms[i], sizeof(a->shms[i]));
	assert_int_equal(a->n_sems, b->n_sems);
	for (size_t i = 0; i < a->n_sems; i++) {
		assert_memory_equal(&a->sems[i].perm, &b->sems[i].perm, sizeof(a->sems[i].perm));
		assert_int_equal(a->sems[i].n_values, b->sems[i].n_values);
		assert_memory_equal(a->sems[i].values, b->sems[i].values,
				    a->sems[i].n_values * sizeof(uint16_t));
	}
	assert_int_equal(a->n_msgqs, b->n_msgqs);
	for (size_t i = 0; i < a->n_msgqs; i++) {
		const struct ct_image_msg_queue *x = &a->msgqs[i], *y = &b->msgqs[i];

		assert_memory_equal(&x->perm, &y->perm, sizeof(x->perm));
		assert_int_equal(x->qbytes, y->qbytes);
		assert_int_equal(x->n_msgs, y->n_msgs);
		for (size_t j = 0; j < x->n_msgs; j++) {
			assert_int_equal(x->msgs[j].type, y->msgs[j].type);
			assert_int_equal(x->msgs[j].len, y->msgs[j].len);
			assert_memory_equal(x->msgs[j].text, y->msgs[j].text, x->msgs[j].len);
		}
	}
}

struct model {
	struct ct_image_inventory info;
	struct ct_image_task tasks[3];
	struct ct_image_mm mms[3];
	struct ct_image_fds fds[3];
	struct ct_image_thread threads[5];
	struct ct_image_regset regs[5][2];
	uint64_t auxv[6];
};

static struct model model;

static void build_model(void)
{
	struct model *m = &model;

	for (size_t i = 0; i < sizeof(pipe_data); i++)
		pipe_data[i] = (uint8_t)(i % 251);
	m->info = (struct ct_image_inventory){
		.container = (char *)"web1",
		.kernel_release = (char *)"6.18.0-test",
		.arch = (char *)"x86_64",
		.root_pid = 1,
		.created_usec = 1764170000000000ULL,
		.hostname = (char *)"web1-host",
		.domainname = (char *)"jobs.example",
		.netns = 1,
		.clocks = {42134123456789, 42140123456789, 1764170000123456789},
		.net_sysctls = model_net_sysctls,
		.n_net_sysctls = ELEMENTSOF(model_net_sysctls),
		.vdso = {0x7ffff7fc0000, 0x7ffff7fc2000, 0x7ffff7fc2000, 0x7ffff7fc4000,
			 0x7ffff7fc4000, 0x7ffff7fc6000}};
	fill_thread(&m->threads[0], 1, m->regs[0]);
	fill_thread(&m->threads[1], 7, m->regs[1]);
	fill_thread(&m->threads[2], 8, m->regs[2]);
	fill_thread(&m->threads[3], 12, m->regs[3]);
	fill_thread(&m->threads[4], 9, m->regs[4]);
	fill_task(&m->tasks[0], 1, 0, &m->threads[0], 1);
	fill_task(&m->tasks[1], 7, 1, &m->threads[1], 3);
	fill_task(&m->tasks[2], 9, 7, &m->threads[4], 1);
	for (size_t i = 0; i < ELEMENTSOF(m->auxv); i++)
		m->auxv[i] = i * 3;
	for (size_t i = 0; i < 3; i++) {
		m->mms[i] =
			(struct ct_image_mm){.pid = m->tasks[i].pid, .auxv = m->auxv, .n_auxv = 6};
		for (size_t j = 0; j < CT_IMAGE_MM_FIELDS; j++)
			m->mms[i].fields[j] = 0x400000 + j * 0x1000;
		m->fds[i] = (struct ct_image_fds){.pid = m->tasks[i].pid};
	}
	m->mms[0].exe = (char *)"/usr/bin/app";
	m->mms[0].vmas = vmas1;
	m->mms[0].n_vmas = ELEMENTSOF(vmas1);
	m->mms[1].vmas = vmas7;
	m->mms[1].n_vmas = ELEMENTSOF(vmas7);
	m->mms[1].guards = guards7;
	m->mms[1].n_guards = 2;
	m->mms[2].vmas = vmas9;
	m->mms[2].n_vmas = ELEMENTSOF(vmas9);
	m->fds[0].fds = fds1;
	m->fds[0].n_fds = ELEMENTSOF(fds1);
	m->fds[1].fds = fds7;
	m->fds[1].n_fds = ELEMENTSOF(fds7);
}

/* Writes [addr, addr + mib MiB) in 1 MiB batches. */
/* The model's records at zstd level (0: pages stored raw), into a writer that has its
 * inventory. */
static void add_model_records(struct ct_image_writer *w, int level)
{
	assert_int_equal(ct_image_writer_set_compression(w, level), 0);
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(ct_image_writer_add_task(w, &model.tasks[i]), 0);
		assert_int_equal(ct_image_writer_add_mm(w, &model.mms[i]), 0);
		assert_int_equal(ct_image_writer_add_fds(w, &model.fds[i]), 0);
	}
	assert_int_equal(ct_image_writer_add_ipc(w, &model_ipc), 0);
}

static void write_range(struct ct_image_pages_writer *p, uint64_t seed, uint64_t addr, uint64_t mib)
{
	static uint8_t batch[MIB_PAGES * PAGE];

	for (uint64_t m = 0; m < mib; m++, addr += MIB_PAGES * PAGE) {
		for (uint64_t i = 0; i < MIB_PAGES; i++)
			gen_page(batch + i * PAGE, seed, addr + i * PAGE);
		assert_int_equal(ct_image_pages_writer_add(p, addr, batch, MIB_PAGES), 0);
	}
}

static int write_level = 1; /* zstd level of the pages */
static bool write_reserve;  /* reserve pages files first, as a dump does before its freeze */
static bool write_mixed;    /* process 1's pages: 8 MiB that zstd cannot shrink, then 40 it can */
#define MIXED_RANDOM_MIB 8
#define MIXED_MIB	 48

/* Random words for the first MIXED_RANDOM_MIB, then one word repeated over each page. */
static void gen_mixed_page(uint8_t *p, uint64_t addr)
{
	uint64_t x = addr * 0x9e3779b97f4a7c15ULL | 1;

	for (size_t i = 0; i < PAGE; i += 8) {
		if (addr < HEAP + MIXED_RANDOM_MIB * MIB_PAGES * PAGE) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
		}
		memcpy(p + i, &x, 8);
	}
}

/* Pages without a zero one (the writer stores whole chunks of them from where they are). */
static void gen_full_page(uint8_t *p, uint64_t addr)
{
	for (size_t i = 0; i < PAGE; i += 8) {
		uint64_t v = ((addr + i) * 0x9e3779b97f4a7c15ULL) | 1;

		memcpy(p + i, &v, 8);
	}
}

/* With hashed_bad > -2, process 1's pages are hashed_lead pages of gen_full_page() at HEAP,
 * then 4 MiB of them at HASHED_AT, added at once with the checksums of the buffer's four
 * chunks, that of chunk hashed_bad (if any) wrong, the pages hashed_skew pages into the
 * buffer. */
#define HASHED_PAGES (4 * MIB_PAGES)
#define HASHED_AT    (HEAP + 64 * PAGE)
static int hashed_bad = -2;
static size_t hashed_skew, hashed_lead;

static void write_hashed(struct ct_image_pages_writer *p)
{
	static uint8_t buf[(HASHED_PAGES + 1) * PAGE];
	uint8_t *data = buf + hashed_skew * PAGE;
	uint64_t xxh3[4];
	bool has[4];

	for (uint64_t i = 0; i < hashed_lead; i++) {
		gen_full_page(buf, HEAP + i * PAGE);
		assert_int_equal(ct_image_pages_writer_add(p, HEAP + i * PAGE, buf, 1), 0);
	}
	for (uint64_t i = 0; i < HASHED_PAGES; i++)
		gen_full_page(data + i * PAGE, HASHED_AT + i * PAGE);
	for (size_t k = 0; k < 4; k++) {
		xxh3[k] = XXH3_64bits(buf + k * MIB_PAGES * PAGE, MIB_PAGES * PAGE);
		xxh3[k] ^= (int)k == hashed_bad;
		has[k] = true;
	}
	assert_int_equal(ct_image_pages_writer_add_hashed(
				 p, HASHED_AT, data, HASHED_PAGES,
				 &(struct ct_image_chunk_hashes){buf, xxh3, has, 4}),
			 0);
}

/* The whole model; big selects 64 MiB of pages, else 2 MiB + a few pages. */
static void write_image(const char *dir, bool big)
{
	_cleanup_(ct_image_writer_freep) struct ct_image_writer *w = NULL;
	struct ct_image_pages_writer *p;
	static uint8_t zero[4 * PAGE];

	if (write_reserve) {
		assert_int_equal(ct_image_writer_open(dir, &w), 0);
		/* More than process 1 writes, less than process 7 does, one that never writes. */
		assert_int_equal(ct_image_writer_reserve_pages(w, 1, 80 << 20), 0);
		assert_int_equal(ct_image_writer_reserve_pages(w, 7, 2 * PAGE), 0);
		assert_int_equal(ct_image_writer_reserve_pages(w, 5, 1 << 20), 0);
		assert_int_equal(ct_image_writer_reserve_pages(w, 5, 1 << 20), -EEXIST);
		assert_int_equal(ct_image_writer_set_inventory(w, &model.info), 0);
		assert_int_equal(ct_image_writer_reserve_pages(w, 6, 1 << 20), -ESTALE);
	} else
		assert_int_equal(ct_image_writer_new(dir, &model.info, &w), 0);
	add_model_records(w, write_level);
	assert_int_equal(ct_image_writer_pages_begin(w, false, 1, &p), 0);
	if (write_mixed) {
		static uint8_t page[PAGE];

		for (uint64_t a = HEAP; a < HEAP + MIXED_MIB * MIB_PAGES * PAGE; a += PAGE) {
			gen_mixed_page(page, a);
			assert_int_equal(ct_image_pages_writer_add(p, a, page, 1), 0);
		}
	} else if (hashed_bad > -2)
		write_hashed(p);
	else
		write_range(p, 1, HEAP, big ? HOLE_MIB : 1);
	if (big)
		write_range(p, 1, HEAP + (HOLE_MIB + 4) * MIB_PAGES * PAGE,
			    HEAP_MIB - HOLE_MIB - 4);
	assert_int_equal(ct_image_pages_writer_finish(p), 0);
	assert_int_equal(ct_image_writer_pages_begin(w, false, 7, &p), 0);
	write_range(p, 7, ANON7, big ? ANON7_MIB : 1);
	assert_int_equal(ct_image_pages_writer_finish(p), 0);
	assert_int_equal(ct_image_writer_pages_begin(w, true, SHM_ID, &p), 0);
	write_range(p, SHM_ID, 0, big ? SHM_MIB : 1);
	assert_int_equal(ct_image_pages_writer_finish(p), 0);
	/* Only zero pages: a pages file without chunks. */
	assert_int_equal(ct_image_writer_pages_begin(w, false, 9, &p), 0);
	assert_int_equal(ct_image_pages_writer_add(p, 0x600000, zero, 4), 0);
	assert_int_equal(ct_image_pages_writer_finish(p), 0);
	assert_int_equal(ct_image_writer_finish(w), 0);
}

/* ---- comparing what was read with the model ---------------------------------------------------
 */

static void assert_str_equal(const char *a, const char *b)
{
	if (!a || !b)
		assert_ptr_equal(a, b);
	else
		assert_string_equal(a, b);
}

static void assert_task_equal(const struct ct_image_task *a, const struct ct_image_task *b)
{
	assert_int_equal(a->pid, b->pid);
	assert_int_equal(a->ppid, b->ppid);
	assert_int_equal(a->pgid, b->pgid);
	assert_int_equal(a->sid, b->sid);
	assert_string_equal(a->comm, b->comm);
	assert_memory_equal(a->creds.uids, b->creds.uids, sizeof(a->creds.uids));
	assert_memory_equal(a->creds.caps, b->creds.caps, sizeof(a->creds.caps));
	assert_int_equal(a->creds.n_groups, b->creds.n_groups);
	assert_memory_equal(a->creds.groups, b->creds.groups, 4 * a->creds.n_groups);
	assert_memory_equal(a->rlimits, b->rlimits, sizeof(a->rlimits));
	assert_memory_equal(a->sigactions, b->sigactions, sizeof(a->sigactions));
	assert_int_equal(a->shared_pending, b->shared_pending);
	assert_int_equal(a->n_shared_siginfo, b->n_shared_siginfo);
	assert_memory_equal(a->shared_siginfo, b->shared_siginfo,
			    a->n_shared_siginfo * CT_IMAGE_SIGINFO_SIZE);
	assert_str_equal(a->cwd, b->cwd);
	assert_str_equal(a->root, b->root);
	assert_memory_equal(a->itimers, b->itimers, sizeof(a->itimers));
	assert_int_equal(a->personality, b->personality);
	assert_int_equal(a->umask, b->umask);
	assert_int_equal(a->have_attrs, b->have_attrs);
	assert_int_equal(a->oom_score_adj, b->oom_score_adj);
	assert_int_equal(a->dumpable, b->dumpable);
	assert_int_equal(a->subreaper, b->subreaper);
	assert_int_equal(a->thp_disable, b->thp_disable);
	assert_int_equal(a->mdwe, b->mdwe);
	assert_int_equal(a->no_new_privs, b->no_new_privs);
	assert_int_equal(a->seccomp_mode, b->seccomp_mode);
	assert_int_equal(a->n_seccomp_filters, b->n_seccomp_filters);
	for (size_t i = 0; i < a->n_seccomp_filters; i++) {
		assert_int_equal(a->seccomp_filters[i].flags, b->seccomp_filters[i].flags);
		assert_int_equal(a->seccomp_filters[i].n_insns, b->seccomp_filters[i].n_insns);
		assert_memory_equal(a->seccomp_filters[i].insns, b->seccomp_filters[i].insns,
				    8 * (size_t)a->seccomp_filters[i].n_insns);
	}
	assert_int_equal(a->n_zombies, b->n_zombies);
	if (a->n_zombies)
		assert_memory_equal(a->zombies, b->zombies, 8 * a->n_zombies);
	assert_int_equal(a->n_timers, b->n_timers);
	if (a->n_timers)
		assert_memory_equal(a->timers, b->timers, sizeof(*a->timers) * a->n_timers);
	assert_int_equal(a->n_threads, b->n_threads);
	for (size_t i = 0; i < a->n_threads; i++) {
		const struct ct_image_thread *x = &a->threads[i], *y = &b->threads[i];

		assert_int_equal(x->tid, y->tid);
		assert_string_equal(x->comm, y->comm);
		assert_int_equal(x->sigmask, y->sigmask);
		assert_int_equal(x->sigpending, y->sigpending);
		assert_int_equal(x->robust_list, y->robust_list);
		assert_int_equal(x->robust_list_len, y->robust_list_len);
		assert_int_equal(x->tid_address, y->tid_address);
		assert_int_equal(x->rseq, y->rseq);
		assert_int_equal(x->altstack_sp, y->altstack_sp);
		assert_int_equal(x->altstack_size, y->altstack_size);
		assert_int_equal(x->altstack_flags, y->altstack_flags);
		assert_int_equal(x->have_sched, y->have_sched);
		assert_int_equal(x->sched_policy, y->sched_policy);
		assert_int_equal(x->sched_flags, y->sched_flags);
		assert_int_equal(x->sched_priority, y->sched_priority);
		assert_int_equal(x->nice, y->nice);
		assert_int_equal(x->ioprio, y->ioprio);
		assert_int_equal(x->pdeathsig, y->pdeathsig);
		assert_int_equal(x->timerslack_ns, y->timerslack_ns);
		assert_int_equal(x->affinity_len, y->affinity_len);
		assert_memory_equal(x->affinity, y->affinity, x->affinity_len);
		assert_int_equal(x->rseq_len, y->rseq_len);
		assert_int_equal(x->rseq_sig, y->rseq_sig);
		assert_int_equal(x->n_regsets, y->n_regsets);
		for (size_t j = 0; j < x->n_regsets; j++) {
			assert_int_equal(x->regsets[j].type, y->regsets[j].type);
			assert_int_equal(x->regsets[j].size, y->regsets[j].size);
			assert_memory_equal(x->regsets[j].data, y->regsets[j].data,
					    x->regsets[j].size);
		}
	}
}

static void assert_mm_equal(const struct ct_image_mm *a, const struct ct_image_mm *b)
{
	assert_int_equal(a->pid, b->pid);
	assert_memory_equal(a->fields, b->fields, sizeof(a->fields));
	assert_int_equal(a->n_auxv, b->n_auxv);
	assert_memory_equal(a->auxv, b->auxv, 8 * a->n_auxv);
	assert_str_equal(a->exe, b->exe);
	assert_int_equal(a->n_vmas, b->n_vmas);
	for (size_t i = 0; i < a->n_vmas; i++) {
		const struct ct_image_vma *x = &a->vmas[i], *y = &b->vmas[i];

		assert_int_equal(x->start, y->start);
		assert_int_equal(x->end, y->end);
		assert_int_equal(x->pgoff, y->pgoff);
		assert_int_equal(x->prot, y->prot);
		assert_int_equal(x->flags, y->flags);
		assert_int_equal(x->kind, y->kind);
		assert_int_equal(x->pages, y->pages);
		assert_int_equal(x->shmid, y->shmid);
		assert_str_equal(x->path, y->path);
		assert_int_equal(x->advice, y->advice);
	}
	assert_int_equal(a->n_guards, b->n_guards);
	if (a->n_guards)
		assert_memory_equal(a->guards, b->guards, 16 * a->n_guards);
}

static void assert_fds_equal(const struct ct_image_fds *a, const struct ct_image_fds *b)
{
	assert_int_equal(a->pid, b->pid);
	assert_int_equal(a->n_fds, b->n_fds);
	for (size_t i = 0; i < a->n_fds; i++) {
		const struct ct_image_fd *x = &a->fds[i], *y = &b->fds[i];

		assert_int_equal(x->fd, y->fd);
		assert_int_equal(x->type, y->type);
		assert_int_equal(x->flags, y->flags);
		assert_int_equal(x->fd_flags, y->fd_flags);
		assert_int_equal(x->pos, y->pos);
		assert_str_equal(x->path, y->path);
		assert_int_equal(x->file_id, y->file_id);
		assert_int_equal(x->object, y->object);
		assert_int_equal(x->data_size, y->data_size);
		if (x->data_size > 0)
			assert_memory_equal(x->data, y->data, x->data_size);
		assert_int_equal(x->n_locks, y->n_locks);
		for (size_t j = 0; j < x->n_locks; j++) {
			assert_int_equal(x->locks[j].kind, y->locks[j].kind);
			assert_int_equal(x->locks[j].write, y->locks[j].write);
			assert_int_equal(x->locks[j].start, y->locks[j].start);
			assert_int_equal(x->locks[j].end, y->locks[j].end);
		}
	}
}

struct page_check {
	uint64_t seed;
	uint64_t pages, zero_runs_pages;
};

static int check_pages_cb(uint64_t addr, const void *data, size_t n_pages, void *userdata)
{
	struct page_check *c = userdata;
	static uint8_t want[PAGE];

	for (size_t i = 0; i < n_pages; i++) {
		if (c->seed == 0) /* seed 0: all zero pages */
			memset(want, 0, PAGE);
		else
			gen_page(want, c->seed, addr + i * PAGE);
		if (data)
			assert_memory_equal((const uint8_t *)data + i * PAGE, want, PAGE);
		else {
			for (size_t j = 0; j < PAGE; j++)
				assert_int_equal(want[j], 0);
			c->zero_runs_pages++;
		}
	}
	c->pages += n_pages;
	return 0;
}

static uint64_t check_pages(struct ct_image *img, const struct ct_image_pages *p, uint64_t seed)
{
	struct page_check c = {.seed = seed};
	char err[CT_IMAGE_ERROR_MAX] = "";

	assert_non_null(p);
	assert_int_equal(ct_image_pages_read(img, p, err, check_pages_cb, &c), 0);
	assert_int_equal(c.pages, p->n_data_pages + p->n_zero_pages);
	assert_int_equal(c.zero_runs_pages, p->n_zero_pages);
	return c.pages;
}

static char *path_in(const char *name)
{
	static char buf[512];

	snprintf(buf, sizeof(buf), "%s/%s", img_dir, name);
	return buf;
}

static void rm_image(const char *dir)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

static int setup_dir(void **state)
{
	strscpy(img_dir, "/tmp/test-ct-image-XXXXXX", sizeof(img_dir));
	if (!mkdtemp(img_dir))
		return -1;
	rmdir(img_dir); /* the writer creates it */
	return 0;
}

static int teardown_dir(void **state)
{
	rm_image(img_dir);
	return 0;
}

/* ---- tests ------------------------------------------------------------------------------------
 */

static void test_round_trip(void **state)
{
	_cleanup_(ct_image_freep) struct ct_image *img = NULL;
	char err[CT_IMAGE_ERROR_MAX] = "";
	uint64_t total = 0, stored = 0;
	struct stat st;
	int r;

	write_image(img_dir, true);
	assert_int_equal(stat(img_dir, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_int_equal(stat(path_in("pages-1.img"), &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);

	r = ct_image_open(img_dir, err, &img);
	if (r < 0)
		fail_msg("open: %s", err);
	assert_string_equal(img->inventory.container, "web1");
	assert_string_equal(img->inventory.kernel_release, "6.18.0-test");
	assert_memory_equal(&img->inventory.vdso, &model.info.vdso, sizeof(model.info.vdso));
	assert_int_equal(img->inventory.created_usec, model.info.created_usec);
	assert_string_equal(img->inventory.hostname, "web1-host");
	assert_string_equal(img->inventory.domainname, "jobs.example");
	assert_int_equal(img->inventory.netns, 1);
	assert_memory_equal(&img->inventory.clocks, &model.info.clocks, sizeof(model.info.clocks));
	assert_int_equal(img->inventory.n_net_sysctls, ELEMENTSOF(model_net_sysctls));
	for (size_t i = 0; i < ELEMENTSOF(model_net_sysctls); i++) {
		assert_string_equal(img->inventory.net_sysctls[i].name, model_net_sysctls[i].name);
		assert_string_equal(img->inventory.net_sysctls[i].value,
				    model_net_sysctls[i].value);
	}
	assert_int_equal(img->inventory.n_files, 3 * 3 + 5);
	assert_ipc_equal(&img->ipc, &model_ipc);
	assert_int_equal(img->n_procs, 3);
	for (size_t i = 0; i < 3; i++) {
		assert_task_equal(&img->procs[i].task, &model.tasks[i]);
		assert_mm_equal(&img->procs[i].mm, &model.mms[i]);
		assert_fds_equal(&img->procs[i].fds, &model.fds[i]);
	}
	total += check_pages(img, img->procs[0].pages, 1);
	total += check_pages(img, img->procs[1].pages, 7);
	assert_int_equal(img->n_shm, 1);
	total += check_pages(img, &img->shm[0], SHM_ID);
	assert_int_equal(check_pages(img, img->procs[2].pages, 0), 4);
	assert_int_equal(img->procs[2].pages->n_chunks, 0);
	assert_int_equal(total, 64 * MIB_PAGES);
	for (size_t i = 0; i < 2; i++)
		stored += img->procs[i].pages->n_data_pages;
	stored += img->shm[0].n_data_pages;
	/* Every 7th page is zero and not stored. */
	assert_true(stored < total * 6 / 7 + 8 && stored > total * 6 / 7 - 8);

	/* Chunks are verified on threads (42 chunks here: two, one per CPU, on two CPUs): a
	 * flipped byte in the second half is found, and of two bad chunks the first is named. */
	{
		const struct ct_image_pages *pg = img->procs[0].pages;
		_cleanup_close_ int fd = open(path_in("pages-1.img"), O_RDWR | O_CLOEXEC);
		const size_t bad_chunks[2] = {30, 12};
		off_t at[2];
		uint8_t b;

		assert_true(fd >= 0);
		assert_true(pg->n_chunks >= 32);
		for (size_t k = 0; k < 2; k++) {
			const struct ct_image_chunk *c = &pg->chunks[bad_chunks[k]];
			_cleanup_(ct_image_freep) struct ct_image *bad = NULL;

			at[k] = (off_t)(CT_IMAGE_HEADER_SIZE + c->offset + c->size / 3);
			assert_int_equal(pread(fd, &b, 1, at[k]), 1);
			b ^= 0x01;
			assert_int_equal(pwrite(fd, &b, 1, at[k]), 1);
			assert_int_equal(ct_image_open(img_dir, err, &bad), -EBADMSG);
			assert_string_equal(err,
					    k == 0 ? "pages-1.img: checksum mismatch at chunk 30"
						   : "pages-1.img: checksum mismatch at chunk 12");
		}
		for (size_t k = 0; k < 2; k++) {
			assert_int_equal(pread(fd, &b, 1, at[k]), 1);
			b ^= 0x01;
			assert_int_equal(pwrite(fd, &b, 1, at[k]), 1);
		}
	}

	/* A flipped byte in chunk 12 is named. */
	{
		const struct ct_image_chunk *c = &img->procs[0].pages->chunks[12];
		_cleanup_close_ int fd = open(path_in("pages-1.img"), O_RDWR | O_CLOEXEC);
		_cleanup_(ct_image_freep) struct ct_image *bad = NULL;
		uint8_t b;
		off_t at = (off_t)(CT_IMAGE_HEADER_SIZE + c->offset + c->size / 2);

		assert_true(fd >= 0);
		assert_int_equal(pread(fd, &b, 1, at), 1);
		b ^= 0x40;
		assert_int_equal(pwrite(fd, &b, 1, at), 1);
		assert_int_equal(ct_image_open(img_dir, err, &bad), -EBADMSG);
		assert_string_equal(err, "pages-1.img: checksum mismatch at chunk 12");
		/* And when it changes after the open, reading the pages says so too. */
		b ^= 0x40;
		assert_int_equal(pwrite(fd, &b, 1, at), 1);
		assert_int_equal(ct_image_open(img_dir, err, &bad), 0);
		b ^= 0x40;
		assert_int_equal(pwrite(fd, &b, 1, at), 1);
		{
			struct page_check pc = {.seed = 1};

			assert_int_equal(ct_image_pages_read(bad, bad->procs[0].pages, err,
							     check_pages_cb, &pc),
					 -EBADMSG);
			assert_string_equal(err, "pages-1.img: checksum mismatch at chunk 12");
		}
	}
}

/* The image must be refused with a message starting with prefix. */
static void expect_refused(const char *prefix, int error)
{
	_cleanup_(ct_image_freep) struct ct_image *img = NULL;
	char err[CT_IMAGE_ERROR_MAX] = "";
	int r = ct_image_open(img_dir, err, &img);

	if (r >= 0)
		fail_msg("image accepted, expected '%s...'", prefix);
	if (!strneq(err, prefix, strlen(prefix)))
		fail_msg("got '%s', expected '%s...'", err, prefix);
	if (error != 0)
		assert_int_equal(r, error);
}

static void expect_opens(void)
{
	_cleanup_(ct_image_freep) struct ct_image *img = NULL;
	char err[CT_IMAGE_ERROR_MAX] = "";

	if (ct_image_open(img_dir, err, &img) < 0)
		fail_msg("open: %s", err);
}

static char **image_files(void)
{
	_cleanup_(ct_image_freep) struct ct_image *img = NULL;
	char err[CT_IMAGE_ERROR_MAX] = "", **names;
	size_t n;

	write_image(img_dir, false);
	if (ct_image_open(img_dir, err, &img) < 0)
		fail_msg("open: %s", err);
	n = img->inventory.n_files;
	names = calloc(n + 2, sizeof(char *));
	assert_non_null(names);
	names[0] = strdup("inventory.img");
	for (size_t i = 0; i < n; i++)
		names[i + 1] = strdup(img->inventory.files[i].name);
	return names;
}

static void read_whole(const char *name, char **ret, size_t *ret_size)
{
	assert_int_equal(read_full_file(path_in(name), 64 << 20, ret, ret_size), 0);
}

static void write_whole(const char *name, const char *data, size_t size)
{
	_cleanup_close_ int fd = open(path_in(name), O_WRONLY | O_TRUNC | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, size), (ssize_t)size);
}

static void test_flip_each_file(void **state)
{
	_cleanup_strv_free_ char **names = image_files();
	char prefix[300];

	for (char **n = names; *n; n++) {
		_cleanup_free_ char *data = NULL;
		size_t size, stride;

		read_whole(*n, &data, &size);
		snprintf(prefix, sizeof(prefix), "%s: ", *n);
		stride = MAX((size - CT_IMAGE_HEADER_SIZE) / 40, (size_t)1);
		for (size_t at = 0; at < size;
		     at = at < CT_IMAGE_HEADER_SIZE ? at + 1 : at + stride) {
			data[at] ^= 0x01;
			write_whole(*n, data, size);
			expect_refused(prefix, 0);
			data[at] ^= 0x01;
		}
		data[size - 1] ^= 0x80; /* the very last byte */
		write_whole(*n, data, size);
		expect_refused(prefix, -EBADMSG);
		data[size - 1] ^= 0x80;
		write_whole(*n, data, size);
	}
	expect_opens();
}

static void test_truncate_each_file(void **state)
{
	_cleanup_strv_free_ char **names = image_files();
	char prefix[300];

	for (char **n = names; *n; n++) {
		_cleanup_free_ char *data = NULL;
		size_t size;

		read_whole(*n, &data, &size);
		snprintf(prefix, sizeof(prefix), "%s: ", *n);
		const size_t lengths[] = {0, 39, 40, size / 2, size - 1};
		for (size_t i = 0; i < ELEMENTSOF(lengths); i++) {
			assert_int_equal(truncate(path_in(*n), (off_t)lengths[i]), 0);
			expect_refused(prefix, 0);
		}
		write_whole(*n, data, size);
	}
}

static void test_remove_each_file(void **state)
{
	_cleanup_strv_free_ char **names = image_files();
	char prefix[300], aside[300];

	for (char **n = names; *n; n++) {
		snprintf(aside, sizeof(aside), "%s.aside", img_dir);
		assert_int_equal(rename(path_in(*n), aside), 0);
		if (streq(*n, "inventory.img"))
			expect_refused("inventory.img: missing: the image is incomplete", -ENOENT);
		else {
			snprintf(prefix, sizeof(prefix), "%s: missing (listed in the inventory)",
				 *n);
			expect_refused(prefix, -ENOENT);
		}
		assert_int_equal(rename(aside, path_in(*n)), 0);
	}
}

static void test_wrong_version(void **state)
{
	_cleanup_strv_free_ char **names = image_files();

	for (char **n = names; *n; n++) {
		_cleanup_free_ char *data = NULL;
		uint8_t *h;
		size_t size;
		char prefix[300];

		read_whole(*n, &data, &size);
		h = (uint8_t *)data;
		h[4] = 2; /* version 2, with a valid header checksum */
		{
			uint64_t sum = XXH3_64bits(h, 32);

			for (int i = 0; i < 8; i++)
				h[32 + i] = (uint8_t)(sum >> (8 * i));
		}
		write_whole(*n, data, size);
		snprintf(prefix, sizeof(prefix),
			 "%s: unsupported format version 2 (this migrd reads version 1)", *n);
		expect_refused(prefix, -EPROTONOSUPPORT);
		h[4] = 1;
		{
			uint64_t sum = XXH3_64bits(h, 32);

			for (int i = 0; i < 8; i++)
				h[32 + i] = (uint8_t)(sum >> (8 * i));
		}
		write_whole(*n, data, size);
	}
}

static void test_extra_files(void **state)
{
	strv_free(image_files()); /* a small image that opens */
	assert_int_equal(write_file_atomic(path_in("notes.txt"), "x", 1, 0600), 0);
	expect_refused("notes.txt: not listed in the inventory", -EBADMSG);
	assert_int_equal(unlink(path_in("notes.txt")), 0);
	assert_int_equal(write_file_atomic(path_in(".task-1.img.tmp"), "x", 1, 0600), 0);
	expect_refused(".task-1.img.tmp: leftover temporary file", -EBADMSG);
	assert_int_equal(unlink(path_in(".task-1.img.tmp")), 0);
	assert_int_equal(mkdir(path_in("sub"), 0700), 0);
	expect_refused("sub: not a regular file", -EBADMSG);
	assert_int_equal(rmdir(path_in("sub")), 0);
}

static void test_permissions(void **state)
{
	char real[128], link[128], prefix[300];

	strv_free(image_files()); /* a small image that opens */

	if (geteuid() != 0)
		fail_msg("this test needs root: images must be root-owned");
	assert_int_equal(chmod(path_in("task-1.img"), 0620), 0);
	expect_refused("task-1.img: writable by group or others (mode 0620)", -EPERM);
	assert_int_equal(chmod(path_in("task-1.img"), 0602), 0);
	expect_refused("task-1.img: writable by group or others (mode 0602)", -EPERM);
	assert_int_equal(chmod(path_in("task-1.img"), 0600), 0);
	assert_int_equal(chown(path_in("mm-7.img"), 1000, 0), 0);
	expect_refused("mm-7.img: owned by uid 1000, not root", -EPERM);
	assert_int_equal(chown(path_in("mm-7.img"), 0, 0), 0);

	assert_int_equal(chmod(img_dir, 0770), 0);
	snprintf(prefix, sizeof(prefix), "%s: writable by group or others (mode 0770)", img_dir);
	expect_refused(prefix, -EPERM);
	assert_int_equal(chmod(img_dir, 0700), 0);

	/* A symlinked file, even to an identical copy, is refused. */
	snprintf(real, sizeof(real), "%s.real", img_dir);
	assert_int_equal(rename(path_in("pages-7.img"), real), 0);
	assert_int_equal(symlink(real, path_in("pages-7.img")), 0);
	expect_refused("pages-7.img: is a symlink, refused", -ELOOP);
	assert_int_equal(unlink(path_in("pages-7.img")), 0);
	assert_int_equal(rename(real, path_in("pages-7.img")), 0);

	/* And so is a symlinked directory. */
	snprintf(link, sizeof(link), "%s.link", img_dir);
	assert_int_equal(symlink(img_dir, link), 0);
	{
		_cleanup_(ct_image_freep) struct ct_image *img = NULL;
		char err[CT_IMAGE_ERROR_MAX];

		assert_int_equal(ct_image_open(link, err, &img), -ELOOP);
		snprintf(prefix, sizeof(prefix), "%s: is a symlink, refused", link);
		assert_string_equal(err, prefix);
		assert_int_equal(unlink(link), 0);
		assert_int_equal(ct_image_open(img_dir, err, &img), 0);
	}
}

static void test_incomplete(void **state)
{
	struct ct_image_writer *w = NULL;
	struct stat st;

	assert_int_equal(ct_image_writer_new(img_dir, &model.info, &w), 0);
	assert_int_equal(ct_image_writer_add_task(w, &model.tasks[0]), 0);
	assert_int_equal(stat(path_in("task-1.img"), &st), 0);
	ct_image_writer_free(w); /* no finish: what it wrote goes away */
	assert_int_equal(stat(path_in("task-1.img"), &st), -1);
	expect_refused("inventory.img: missing: the image is incomplete", -ENOENT);
	/* A writer refuses a directory that holds anything: stale files could join the image. */
	assert_int_equal(write_file_atomic(path_in("stale"), "x", 1, 0600), 0);
	assert_int_equal(ct_image_writer_new(img_dir, &model.info, &w), -ENOTEMPTY);
	assert_int_equal(unlink(path_in("stale")), 0);
	write_image(img_dir, false);
	assert_int_equal(ct_image_writer_new(img_dir, &model.info, &w), -ENOTEMPTY);
}

static void test_path_check(void **state)
{
	static const char *const good[] = {"/",	     "/srv/www", "/a/.../b",
					   "/a/..b", "/a/b..",	 "/a/./b"};
	static const char *const bad[] = {"",	     "relative", "../x",	  "/..",
					  "/a/../b", "/a/..",	 "/a/b/../../..", "/a\nb"};
	const char *reason;

	for (size_t i = 0; i < ELEMENTSOF(good); i++)
		assert_int_equal(ct_image_path_check(good[i], &reason), 0);
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		reason = NULL;
		assert_int_equal(ct_image_path_check(bad[i], &reason), -EINVAL);
		assert_non_null(reason);
	}
}

static void test_refused_records(void **state)
{
	_cleanup_(ct_image_writer_freep) struct ct_image_writer *w = NULL;
	struct ct_image_task t = model.tasks[0], t2;
	struct ct_image_thread th;
	struct ct_image_mm mm = model.mms[0], out;
	struct ct_image_vma vma = vmas1[0];
	struct ct_image_fds fds = model.fds[0];
	struct ct_image_fd fd = fds1[1];
	char err[CT_IMAGE_ERROR_MAX];
	uint8_t *p;
	size_t n;

	assert_int_equal(ct_image_writer_new(img_dir, &model.info, &w), 0);
	t.cwd = (char *)"/srv/../../etc";
	assert_int_equal(ct_image_writer_add_task(w, &t), -EBADMSG);
	assert_int_equal(ct_image_encode_task(&t, &p, &n), 0);
	assert_int_equal(ct_image_decode_task(p, n, err, sizeof(err), &t), -EBADMSG);
	assert_string_equal(err, "task cwd: refused path '/srv/../../etc': '..' in path");
	free(p);

	vma.path = (char *)"usr/lib/libc.so";
	mm.vmas = &vma;
	mm.n_vmas = 1;
	assert_int_equal(ct_image_writer_add_mm(w, &mm), -EBADMSG);
	vma.path = NULL; /* a file mapping needs its path */
	assert_int_equal(ct_image_writer_add_mm(w, &mm), -EBADMSG);

	/* Scheduling and process attributes out of range. */
	t = model.tasks[0];
	t.oom_score_adj = -1001;
	assert_int_equal(ct_image_encode_task(&t, &p, &n), 0);
	assert_int_equal(ct_image_decode_task(p, n, err, sizeof(err), &t2), -EBADMSG);
	assert_string_equal(err, "task: attributes out of range");
	free(p);
	t = model.tasks[0];
	th = t.threads[0];
	t.threads = &th;
	t.n_threads = 1;
	th.nice = 20;
	assert_int_equal(ct_image_encode_task(&t, &p, &n), 0);
	assert_int_equal(ct_image_decode_task(p, n, err, sizeof(err), &t2), -EBADMSG);
	assert_string_equal(err, "thread: scheduling attributes out of range");
	free(p);
	th.nice = 0;
	th.sched_policy = 6; /* SCHED_DEADLINE */
	assert_int_equal(ct_image_encode_task(&t, &p, &n), 0);
	assert_int_equal(ct_image_decode_task(p, n, err, sizeof(err), &t2), -EBADMSG);
	free(p);

	/* Seccomp filters without filter mode, and the other way round. */
	t = model.tasks[0];
	t.seccomp_mode = 0;
	assert_int_equal(ct_image_encode_task(&t, &p, &n), 0);
	assert_int_equal(ct_image_decode_task(p, n, err, sizeof(err), &t2), -EBADMSG);
	assert_string_equal(err, "task: seccomp mode 0 with 2 filters");
	free(p);
	t.seccomp_mode = 2;
	t.n_seccomp_filters = 0;
	assert_int_equal(ct_image_encode_task(&t, &p, &n), 0);
	assert_int_equal(ct_image_decode_task(p, n, err, sizeof(err), &t2), -EBADMSG);
	assert_string_equal(err, "task: seccomp mode 2 with 0 filters");
	free(p);
	t.n_seccomp_filters = 2;
	filters[0].flags = 1; /* SECCOMP_FILTER_FLAG_TSYNC is not a filter's own flag */
	assert_int_equal(ct_image_encode_task(&t, &p, &n), 0);
	filters[0].flags = 2;
	assert_int_equal(ct_image_decode_task(p, n, err, sizeof(err), &t2), -EBADMSG);
	assert_string_equal(err, "task: seccomp filter 0 is malformed");
	free(p);

	/* Mapping flags and advice this version does not know, or that do not go together. */
	vma = vmas7[1];
	vma.advice = 1U << 20;
	assert_int_equal(ct_image_writer_add_mm(w, &mm), -EBADMSG);
	assert_int_equal(ct_image_encode_mm(&mm, &p, &n), 0);
	assert_int_equal(ct_image_decode_mm(p, n, err, sizeof(err), &out), -EBADMSG);
	assert_string_equal(err, "vma 0: unknown mapping flags 0 or advice 0x100000");
	free(p);
	vma.advice = 0;
	vma.flags |= MAP_POPULATE;
	assert_int_equal(ct_image_encode_mm(&mm, &p, &n), 0);
	assert_int_equal(ct_image_decode_mm(p, n, err, sizeof(err), &out), -EBADMSG);
	assert_string_equal(err, "vma 0: unknown mapping flags 0x8000 or advice 0");
	free(p);
	vma.flags = vmas7[1].flags;
	vma.advice = CT_IMAGE_ADV_LOCKONFAULT;
	assert_int_equal(ct_image_encode_mm(&mm, &p, &n), 0);
	assert_int_equal(ct_image_decode_mm(p, n, err, sizeof(err), &out), -EBADMSG);
	assert_string_equal(err, "vma 0: locked on fault but not locked");
	free(p);
	/* A guard region outside private memory. */
	vma = vmas7[0]; /* shared */
	mm.guards = guards7;
	mm.n_guards = 1;
	assert_int_equal(ct_image_encode_mm(&mm, &p, &n), 0);
	assert_int_equal(ct_image_decode_mm(p, n, err, sizeof(err), &out), -EBADMSG);
	assert_string_equal(err, "guard 0: 0x7f0000001000-0x7f0000003000 is not inside one mapping "
				 "of private memory");
	free(p);
	mm.n_guards = 0;
	vma = vmas1[1]; /* the heap */
	vma.advice = CT_IMAGE_ADV_DROPPABLE;
	assert_int_equal(ct_image_encode_mm(&mm, &p, &n), 0);
	assert_int_equal(ct_image_decode_mm(p, n, err, sizeof(err), &out), -EBADMSG);
	assert_string_equal(err, "vma 0: droppable but not anonymous private memory");
	free(p);

	fd.path = (char *)"/var/log/../../../etc/shadow";
	fds.fds = &fd;
	fds.n_fds = 1;
	assert_int_equal(ct_image_writer_add_fds(w, &fds), -EBADMSG);

	/* System V objects: a sysctl not of the IPC namespace, one that is not a number, a
	 * semaphore above SEMVMX, a message type of 0, ids out of order, a segment of no size. */
	{
		uint16_t big[] = {32768};
		struct ct_image_sem_set bad_sem = {{1, 0, 0, 0, 0600}, big, 1};
		struct ct_image_msg zero_type = {0, (uint8_t *)"x", 1};
		struct ct_image_msg_queue bad_q = {{2, 0, 0, 0, 0600}, 16384, &zero_type, 1};
		struct ct_image_sem_set twice[] = {model_sems[1], model_sems[0]};
		struct ct_image_shm_seg empty = {{3, 0, 0, 0, 0600}, 0, 0};
		struct ct_image_sysctl unknown = {(char *)"kernel/core_pattern", (char *)"1"};
		struct ct_image_sysctl word = {(char *)"kernel/shmmax", (char *)"|/bin/sh"};
		const struct ct_image_ipc bad[] = {
			{.sysctls = &unknown, .n_sysctls = 1}, {.sysctls = &word, .n_sysctls = 1},
			{.sems = &bad_sem, .n_sems = 1},       {.msgqs = &bad_q, .n_msgqs = 1},
			{.sems = twice, .n_sems = 2},	       {.shms = &empty, .n_shms = 1},
		};

		for (size_t i = 0; i < ELEMENTSOF(bad); i++)
			assert_int_equal(ct_image_writer_add_ipc(w, &bad[i]), -EBADMSG);
	}
}

/* Hand-made TLV: the decoders' own checks, below the checksums. */
static void test_decode_malformed(void **state)
{
	static const uint8_t too_long[] = {1, 0, 0, 0, 200, 0, 0, 0, 1};
	static const uint8_t twice[] = {1, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0,
					1, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0};
	static const uint8_t unknown[] = {99, 0, 0, 0, 0, 0, 0, 0};
	static const uint8_t short_u32[] = {1, 0, 0, 0, 2, 0, 0, 0, 1, 0};
	static const uint8_t flags[] = {1, 0, 1, 0, 0, 0, 0, 0};
	char err[CT_IMAGE_ERROR_MAX];
	struct ct_image_fds fds;
	struct ct_image_task t;

	assert_int_equal(ct_image_decode_fds(too_long, sizeof(too_long), err, sizeof(err), &fds),
			 -EBADMSG);
	assert_string_equal(err, "fds: field 1 is 200 bytes, only 1 left");
	assert_int_equal(ct_image_decode_fds(twice, sizeof(twice), err, sizeof(err), &fds),
			 -EBADMSG);
	assert_string_equal(err, "fds: field 1 appears twice");
	assert_int_equal(ct_image_decode_fds(unknown, sizeof(unknown), err, sizeof(err), &fds),
			 -EBADMSG);
	assert_string_equal(err, "fds: unknown field 99");
	assert_int_equal(ct_image_decode_fds(short_u32, sizeof(short_u32), err, sizeof(err), &fds),
			 -EBADMSG);
	assert_string_equal(err, "fds: field 1 is 2 bytes, expected 4");
	assert_int_equal(ct_image_decode_fds(flags, sizeof(flags), err, sizeof(err), &fds),
			 -EBADMSG);
	assert_int_equal(ct_image_decode_task(NULL, 0, err, sizeof(err), &t), -EBADMSG);
	assert_string_equal(err, "task: field 1 is missing");

	/* Clock readings the kernel would refuse as time namespace offsets, or none at all. */
	for (size_t i = 0; i < 2; i++) {
		struct ct_image_inventory inv = model.info, out;
		uint8_t *buf;
		size_t n;

		inv.page_size = CT_IMAGE_PAGE_SIZE; /* as the writer sets it */
		inv.clocks = i == 0 ? (struct ct_image_clocks){0, 5, 5}
				    : (struct ct_image_clocks){5, CT_IMAGE_CLOCK_MAX_NS + 1, 5};
		assert_int_equal(ct_image_encode_inventory(&inv, &buf, &n), 0);
		assert_int_equal(ct_image_decode_inventory(buf, n, err, sizeof(err), &out),
				 -EBADMSG);
		assert_string_equal(err, "inventory: clock readings out of range");
		free(buf);
	}

	/* Network sysctls: names under net/ that cannot climb out of it, one-line values, in
	 * order, and only with a network namespace of the container's own. */
	{
		static const struct {
			const char *name, *value;
			uint32_t netns;
			const char *err;
		} bad[] = {
			{"net/../kernel/core_pattern", "1", 1,
			 "inventory: network sysctl: bad name 'net/../kernel/core_pattern'"},
			{"kernel/core_pattern", "1", 1,
			 "inventory: network sysctl: bad name 'kernel/core_pattern'"},
			{"net/core//somaxconn", "1", 1,
			 "inventory: network sysctl: bad name 'net/core//somaxconn'"},
			{"net/core/./somaxconn", "1", 1,
			 "inventory: network sysctl: bad name 'net/core/./somaxconn'"},
			{"net/core/somaxconn", "1\n2", 1,
			 "inventory: network sysctl net/core/somaxconn: bad value"},
			{"net/core/somaxconn", "7", 0,
			 "inventory: network sysctls without a network namespace"},
			{"net/a", "1", 1, "inventory: network sysctl net/a: out of order or twice"},
			{"net/core/somaxconn", "1", 1,
			 "inventory: network sysctl net/core/somaxconn: out of order or twice"},
		};

		for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
			struct ct_image_inventory inv = model.info, out;
			struct ct_image_sysctl two[] = {
				{(char *)"net/core/somaxconn", (char *)"128"},
				{(char *)bad[i].name, (char *)bad[i].value},
			};
			uint8_t *buf;
			size_t n;

			inv.page_size = CT_IMAGE_PAGE_SIZE;
			inv.netns = bad[i].netns;
			inv.net_sysctls = i >= 6 ? two : two + 1;
			inv.n_net_sysctls = i >= 6 ? 2 : 1;
			assert_int_equal(ct_image_encode_inventory(&inv, &buf, &n), 0);
			assert_int_equal(ct_image_decode_inventory(buf, n, err, sizeof(err), &out),
					 -EBADMSG);
			assert_string_equal(err, bad[i].err);
			free(buf);
		}
	}
}

/* `migctl image show`: offline, a summary of what is in the image, exit 1 on a bad one. */
static int run_migctl(char **argv, char **ret_out, char **ret_err)
{
	size_t nout, nerr;
	FILE *out = open_memstream(ret_out, &nout), *err = open_memstream(ret_err, &nerr);
	int argc = 0, r;

	assert_non_null(out);
	assert_non_null(err);
	while (argv[argc])
		argc++;
	r = migctl_main(argc, argv, out, err);
	fclose(out);
	fclose(err);
	return r;
}

static void test_migctl_image_show(void **state)
{
	char *show[] = {"migctl", "--socket", "/nonexistent/sock", "image", "show", img_dir, NULL};
	char *json[] = {"migctl", "image", "show", "--json", img_dir, NULL};
	char *out = NULL, *err = NULL;

	strv_free(image_files());
	assert_int_equal(run_migctl(show, &out, &err), 0);
	assert_non_null(strstr(out, "Container: web1\n"));
	assert_non_null(strstr(out, "Kernel: 6.18.0-test (x86_64)\n"));
	assert_non_null(strstr(out, "Tasks: 3 processes, 5 threads, root pid 1\n"));
	assert_non_null(strstr(out, "  7     1     1    1  proc7        3  /srv/www\n"));
	assert_non_null(strstr(out, "file:1 pipe:1 tcp:1 epoll:1 chr:1"));
	assert_non_null(strstr(out, "shm 5"));
	assert_non_null(strstr(out, "zero ("));
	assert_non_null(strstr(out, "Network: a namespace of its own, 3 sysctls kept\n"));
	assert_string_equal(err, "");
	free(out);
	free(err);

	assert_int_equal(run_migctl(json, &out, &err), 0);
	{
		_cleanup_json_ json_t *j = json_loads(out, 0, NULL);
		json_t *procs = json_object_get(j, "processes");

		assert_non_null(j);
		assert_string_equal(json_string_value(json_object_get(j, "container")), "web1");
		assert_string_equal(
			json_string_value(json_object_get(json_object_get(j, "network_sysctls"),
							  "net/core/somaxconn")),
			"777");
		assert_int_equal(json_array_size(procs), 3);
		assert_int_equal(
			json_array_size(json_object_get(json_array_get(procs, 1), "threads")), 3);
		assert_int_equal(json_array_size(json_object_get(
					 json_object_get(json_array_get(procs, 0), "mm"), "vmas")),
				 ELEMENTSOF(vmas1));
		assert_int_equal(json_array_size(json_object_get(json_array_get(procs, 0), "fds")),
				 ELEMENTSOF(fds1));
	}
	free(out);
	free(err);

	assert_int_equal(chmod(path_in("fds-7.img"), 0666), 0);
	assert_int_equal(run_migctl(show, &out, &err), 1);
	assert_string_equal(out, "");
	assert_string_equal(err, "migctl: fds-7.img: writable by group or others (mode 0666)\n");
	free(out);
	free(err);
}

/* Compression off: pages stored raw, read back the same, still checksummed per chunk. */
/* The image of write_image with its pages stored raw (zstd level 0). */
static void write_raw_image(void)
{
	write_level = 0;
	write_image(img_dir, false);
	write_level = 1;
}

static void test_uncompressed(void **state)
{
	_cleanup_(ct_image_freep) struct ct_image *img = NULL;
	char err[CT_IMAGE_ERROR_MAX] = "";
	const struct ct_image_pages *p;

	write_raw_image();
	if (ct_image_open(img_dir, err, &img) < 0)
		fail_msg("open: %s", err);
	p = img->procs[0].pages;
	assert_true(p->n_chunks > 0);
	for (size_t i = 0; i < p->n_chunks; i++)
		assert_int_equal(p->chunks[i].flags, CT_IMAGE_CHUNK_RAW);
	assert_int_equal(p->compressed_size, p->n_data_pages * PAGE);
	check_pages(img, p, 1);
	check_pages(img, &img->shm[0], SHM_ID);
	{
		_cleanup_close_ int fd = open(path_in("pages-1.img"), O_RDWR | O_CLOEXEC);
		uint8_t b;

		assert_true(fd >= 0);
		assert_int_equal(pread(fd, &b, 1, CT_IMAGE_HEADER_SIZE + 100), 1);
		b ^= 0x10;
		assert_int_equal(pwrite(fd, &b, 1, CT_IMAGE_HEADER_SIZE + 100), 1);
		expect_refused("pages-1.img: checksum mismatch at chunk 0", -EBADMSG);
	}
	{
		struct ct_image_writer *w = NULL;

		rm_image(img_dir);
		assert_int_equal(ct_image_writer_new(img_dir, &model.info, &w), 0);
		assert_int_equal(ct_image_writer_set_compression(w, -1), -EINVAL);
		assert_int_equal(ct_image_writer_set_compression(w, 99), -EINVAL);
		ct_image_writer_free(w);
	}
}

/* Pages files allocated ahead: each is cut to what was written, the one nobody wrote goes, and
 * the image reads as one written without them. */
static void test_reserved(void **state)
{
	static const char *const names[] = {"pages-1.img", "pages-7.img"};
	_cleanup_(ct_image_freep) struct ct_image *img = NULL;
	char err[CT_IMAGE_ERROR_MAX] = "";
	struct ct_image_writer *w = NULL;
	off_t sizes[2];
	struct stat st;

	write_level = 0;
	write_image(img_dir, true);
	for (size_t i = 0; i < 2; i++) {
		assert_int_equal(stat(path_in(names[i]), &st), 0);
		sizes[i] = st.st_size;
	}
	rm_image(img_dir);
	write_reserve = true;
	write_image(img_dir, true);
	write_reserve = false;
	write_level = 1;
	for (size_t i = 0; i < 2; i++) {
		assert_int_equal(stat(path_in(names[i]), &st), 0);
		assert_int_equal(st.st_size, sizes[i]);
	}
	assert_int_equal(stat(path_in(".pages-5.img.tmp"), &st), -1);
	assert_int_equal(stat(path_in("pages-5.img"), &st), -1);
	if (ct_image_open(img_dir, err, &img) < 0)
		fail_msg("open: %s", err);
	check_pages(img, img->procs[0].pages, 1);
	check_pages(img, &img->shm[0], SHM_ID);

	/* An image given up takes its reservations with it; nothing is left in the directory. */
	rm_image(img_dir);
	assert_int_equal(ct_image_writer_open(img_dir, &w), 0);
	assert_int_equal(ct_image_writer_reserve_pages(w, 3, 1 << 20), 0);
	assert_int_equal(stat(path_in(".pages-3.img.tmp"), &st), 0);
	assert_int_equal(st.st_size, CT_IMAGE_HEADER_SIZE + (1 << 20));
	ct_image_writer_free(w);
	assert_int_equal(stat(path_in(".pages-3.img.tmp"), &st), -1);
	/* No inventory, no image. */
	assert_int_equal(ct_image_writer_open(img_dir, &w), 0);
	assert_int_equal(ct_image_writer_finish(w), -EINVAL);
	ct_image_writer_free(w);
	assert_int_equal(rmdir(img_dir), 0); /* empty */
}

/* A tmpfs of size (mount options) in a mount namespace of the test's own, at fs (64 bytes);
 * dir (80 bytes) is an image directory in it, not made yet. */
static void mount_own_tmpfs(const char *size, char *fs, char *dir)
{
	char opts[64];

	assert_int_equal(unshare(CLONE_NEWNS), 0);
	assert_int_equal(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 0);
	strscpy(fs, "/tmp/test-ct-image-fs-XXXXXX", 64);
	assert_non_null(mkdtemp(fs));
	snprintf(opts, sizeof(opts), "size=%s,mode=0700", size);
	assert_int_equal(mount("tmpfs", fs, "tmpfs", 0, opts), 0);
	snprintf(dir, 80, "%s/img", fs);
}

/* A reservation larger than its process's pages turn out to be never makes a dump fail: out of
 * space, the writer gives the reserved space back and goes on. On a tmpfs of 6 MiB of its own. */
static void test_reserved_out_of_space(void **state)
{
	_cleanup_(ct_image_freep) struct ct_image *img = NULL;
	char err[CT_IMAGE_ERROR_MAX] = "", fs[64], dir[80];
	struct ct_image_writer *w = NULL;
	struct ct_image_pages_writer *p;
	struct stat st;

	mount_own_tmpfs("6m", fs, dir);

	assert_int_equal(ct_image_writer_open(dir, &w), 0);
	/* Process 7 is thought to need 4 MiB, and will write one. */
	assert_int_equal(ct_image_writer_reserve_pages(w, 7, 4 << 20), 0);
	/* More than what is left: refused, nothing kept. */
	assert_int_equal(ct_image_writer_reserve_pages(w, 9, 4 << 20), -ENOSPC);
	snprintf(err, sizeof(err), "%s/.pages-9.img.tmp", dir);
	assert_int_equal(stat(err, &st), -1);
	assert_int_equal(ct_image_writer_set_inventory(w, &model.info), 0);
	add_model_records(w, 0);
	/* Process 1 writes 3 MiB: it fits only once 7's reservation is given back. */
	assert_int_equal(ct_image_writer_pages_begin(w, false, 1, &p), 0);
	write_range(p, 1, HEAP, 3);
	assert_int_equal(ct_image_pages_writer_finish(p), 0);
	snprintf(err, sizeof(err), "%s/.pages-7.img.tmp", dir);
	assert_int_equal(stat(err, &st), -1);
	assert_int_equal(ct_image_writer_pages_begin(w, false, 7, &p), 0);
	write_range(p, 7, ANON7, 1);
	assert_int_equal(ct_image_pages_writer_finish(p), 0);
	assert_int_equal(ct_image_writer_pages_begin(w, true, SHM_ID, &p), 0);
	write_range(p, SHM_ID, 0, 1);
	assert_int_equal(ct_image_pages_writer_finish(p), 0);
	assert_int_equal(ct_image_writer_finish(w), 0);
	ct_image_writer_free(w);
	if (ct_image_open(dir, err, &img) < 0)
		fail_msg("open: %s", err);
	check_pages(img, img->procs[0].pages, 1);
	img = ct_image_free(img);
	assert_int_equal(umount(fs), 0);
	assert_int_equal(rmdir(fs), 0);
}

/* Pages placed straight into a reserved pages file, as a dump on tmpfs does: the generator's
 * pages of mib MiB from addr, one page in 11 left out, zero pages recorded. Even MiBs let the
 * writer checksum their chunk, odd ones give it (wrong for MiB bad). Returns the pages stored. */
static uint64_t place_range(struct ct_image_pages_writer *p, uint64_t seed, uint64_t addr,
			    uint64_t mib, uint64_t bad)
{
	uint8_t *base, kind[MIB_PAGES];
	uint64_t total = 0;

	assert_int_equal(ct_image_pages_writer_map(p, mib * MIB_PAGES * PAGE, &base), 0);
	for (uint64_t m = 0; m < mib; m++) {
		uint8_t *at = base + ct_image_pages_writer_offset(p);
		uint64_t a0 = addr + m * MIB_PAGES * PAGE, xxh3;
		size_t stored = 0;

		for (size_t i = 0; i < MIB_PAGES; i++) {
			uint64_t a = a0 + i * PAGE;

			if ((a / PAGE) % 11 == 5) {
				kind[i] = CT_IMAGE_PLACED_SKIP;
				continue;
			}
			gen_page(at + stored * PAGE, seed, a);
			if (memeqzero(at + stored * PAGE, PAGE)) {
				kind[i] = CT_IMAGE_PLACED_ZERO;
				continue;
			}
			kind[i] = CT_IMAGE_PLACED_DATA;
			stored++;
		}
		xxh3 = XXH3_64bits(at, stored * PAGE) ^ (m == bad);
		assert_int_equal(ct_image_pages_writer_add_placed(p, a0, kind, MIB_PAGES,
								  m % 2 ? &xxh3 : NULL, m % 2),
				 0);
		total += stored;
	}
	return total;
}

static const struct ct_image_pages *pages_of(const struct ct_image *img, uint32_t pid)
{
	for (size_t i = 0; i < img->n_procs; i++)
		if (img->procs[i].task.pid == pid)
			return img->procs[i].pages;
	fail_msg("no process %u in the image", pid);
	return NULL;
}

/* One image with placed pages in dir (tmpfs): process 1 within its reservation, process 7
 * past its small one (grown in place), the shared memory and process 9 with write(). */
static void write_placed_image(const char *dir, uint64_t bad, uint64_t *ret_stored)
{
	_cleanup_(ct_image_writer_freep) struct ct_image_writer *w = NULL;
	struct ct_image_pages_writer *p;
	static uint8_t zero[PAGE];
	uint8_t *base;

	assert_int_equal(ct_image_writer_open(dir, &w), 0);
	assert_int_equal(ct_image_writer_reserve_pages(w, 1, 8 << 20), 0);
	assert_int_equal(ct_image_writer_reserve_pages(w, 7, 2 * PAGE), 0);
	assert_int_equal(ct_image_writer_set_inventory(w, &model.info), 0);
	add_model_records(w, 0);
	assert_int_equal(ct_image_writer_pages_begin(w, false, 1, &p), 0);
	ret_stored[0] = place_range(p, 1, HEAP, 8, bad);
	assert_int_equal(ct_image_pages_writer_finish(p), 0);
	assert_int_equal(ct_image_writer_pages_begin(w, false, 7, &p), 0);
	ret_stored[1] = place_range(p, 7, ANON7, 2, UINT64_MAX);
	assert_int_equal(ct_image_pages_writer_finish(p), 0);
	/* Not reserved: no mapping, the pages go through write(). */
	assert_int_equal(ct_image_writer_pages_begin(w, true, SHM_ID, &p), 0);
	assert_int_equal(ct_image_pages_writer_map(p, PAGE, &base), -EOPNOTSUPP);
	write_range(p, SHM_ID, 0, 1);
	assert_int_equal(ct_image_pages_writer_finish(p), 0);
	assert_int_equal(ct_image_writer_pages_begin(w, false, 9, &p), 0);
	assert_int_equal(ct_image_pages_writer_add(p, 0x600000, zero, 1), 0);
	assert_int_equal(ct_image_pages_writer_finish(p), 0);
	assert_int_equal(ct_image_writer_finish(w), 0);
}

/* Pages read straight into reserved files on tmpfs (a tmpfs of its own): zero pages recorded,
 * left-out pages absent, each file cut to its contents, the checksums the caller gave kept,
 * and a reservation grown a little in place, but never a lot. */
static void test_placed(void **state)
{
	_cleanup_(ct_image_freep) struct ct_image *img = NULL;
	char err[CT_IMAGE_ERROR_MAX] = "", fs[64], dir[80], path[128];
	struct ct_image_writer *w = NULL;
	struct ct_image_pages_writer *p;
	uint64_t stored[2];
	uint8_t *base;
	struct stat st;

	mount_own_tmpfs("64m", fs, dir);

	write_placed_image(dir, UINT64_MAX, stored);
	if (ct_image_open(dir, err, &img) < 0)
		fail_msg("open: %s", err);
	/* 8 MiB with one page in 11 left out: the rest read back, zero pages as zero runs. */
	assert_int_equal(check_pages(img, pages_of(img, 1), 1), 8 * MIB_PAGES - 8 * MIB_PAGES / 11);
	assert_int_equal(pages_of(img, 1)->n_data_pages, stored[0]);
	assert_int_equal(pages_of(img, 1)->n_chunks, 8);
	assert_int_equal(pages_of(img, 7)->n_data_pages, stored[1]);
	check_pages(img, pages_of(img, 7), 7);
	check_pages(img, &img->shm[0], SHM_ID);
	snprintf(path, sizeof(path), "%s/pages-1.img", dir);
	assert_int_equal(stat(path, &st), 0);
	assert_true((uint64_t)st.st_size < CT_IMAGE_HEADER_SIZE + (8 << 20));
	assert_true((uint64_t)st.st_size > CT_IMAGE_HEADER_SIZE + stored[0] * PAGE);
	img = ct_image_free(img);

	/* A checksum given wrong is what the image gets: the reader refuses that chunk. */
	rm_image(dir);
	write_placed_image(dir, 3, stored);
	assert_int_equal(ct_image_open(dir, err, &img), -EBADMSG);
	assert_string_equal(err, "pages-1.img: checksum mismatch at chunk 3");

	/* Far past the reservation: no mapping (growing it would be downtime); write() works. */
	rm_image(dir);
	assert_int_equal(ct_image_writer_open(dir, &w), 0);
	assert_int_equal(ct_image_writer_reserve_pages(w, 1, PAGE), 0);
	assert_int_equal(ct_image_writer_set_inventory(w, &model.info), 0);
	assert_int_equal(ct_image_writer_set_compression(w, 0), 0);
	assert_int_equal(ct_image_writer_pages_begin(w, false, 1, &p), 0);
	assert_int_equal(ct_image_pages_writer_map(p, 32 << 20, &base), -EOPNOTSUPP);
	write_range(p, 1, HEAP, 1);
	assert_int_equal(ct_image_pages_writer_finish(p), 0);
	ct_image_writer_free(w);

	assert_int_equal(umount(fs), 0);
	assert_int_equal(rmdir(fs), 0);
}

/* A mapped pages file's data runs, straight from its mapping, against what was written. */
static void check_mapped(const struct ct_image_pages *p, uint64_t seed)
{
	static uint8_t want[PAGE];
	uint64_t n = 0;

	assert_non_null(p->map);
	for (size_t i = 0; i < p->n_runs; i++) {
		const struct ct_image_run *run = &p->runs[i];
		const uint8_t *src =
			ct_image_pages_mapped_chunk(p, run->chunk) + (size_t)run->chunk_page * PAGE;

		if (run->flags & CT_IMAGE_RUN_ZERO)
			continue;
		for (size_t j = 0; j < run->n_pages; j++) {
			gen_page(want, seed, run->addr + j * PAGE);
			assert_memory_equal(src + j * PAGE, want, PAGE);
		}
		n += run->n_pages;
	}
	assert_int_equal(n, p->n_data_pages);
}

/* For a restore, files of raw chunks are leased before they are verified and left mapped:
 * nobody may write them meanwhile, and one that came too long ago makes the mapping stale. */
static void test_mapped(void **state)
{
	_cleanup_(ct_image_freep) struct ct_image *img = NULL;
	char err[CT_IMAGE_ERROR_MAX] = "";
	struct ct_image_pages *p;
	int fd;

	write_raw_image();
	if (ct_image_open_mapped(img_dir, err, &img) < 0)
		fail_msg("open: %s", err);
	p = img->procs[0].pages;
	if (!p->map)
		fail_msg("pages-1.img was not mapped: no read lease on this file system?");
	check_mapped(p, 1);
	check_mapped(&img->shm[0], SHM_ID);
	check_pages(img, p, 1); /* ct_image_pages_read hands out the mapping */
	assert_int_equal(ct_image_pages_check_mapped(p, err), 0);
	fd = open(path_in("pages-1.img"), O_RDONLY | O_NONBLOCK | O_CLOEXEC); /* readers may */
	assert_true(fd >= 0);
	safe_close(fd);

	/* A writer waits (here: is told to) while the lease holds, and the mapping stays good
	 * until the kernel's lease-break time has passed. */
	assert_int_equal(open(path_in("pages-1.img"), O_WRONLY | O_NONBLOCK | O_CLOEXEC), -1);
	assert_int_equal(errno, EWOULDBLOCK);
	assert_int_equal(ct_image_pages_check_mapped(p, err), 0);
	p->leased_usec -= 3600 * USEC_PER_SEC; /* as if the restore had taken an hour */
	assert_int_equal(ct_image_pages_check_mapped(p, err), -ESTALE);
	assert_string_equal(err, "pages-1.img: opened for writing during the restore: it may have "
				 "changed since it was verified");
	img = ct_image_free(img);
	fd = open(path_in("pages-1.img"), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	assert_true(fd >= 0);

	/* A file open for writing elsewhere cannot be leased: it is read the old way. */
	if (ct_image_open_mapped(img_dir, err, &img) < 0)
		fail_msg("open: %s", err);
	assert_null(img->procs[0].pages->map);
	assert_non_null(img->shm[0].map);
	check_pages(img, img->procs[0].pages, 1);
	img = ct_image_free(img);

	/* A flipped byte is found by the check of the mapped file too. */
	{
		uint8_t b = 0x5a;

		assert_int_equal(pwrite(fd, &b, 1, CT_IMAGE_HEADER_SIZE + 3 * PAGE + 7), 1);
		safe_close(fd);
		assert_int_equal(ct_image_open_mapped(img_dir, err, &img), -EBADMSG);
		assert_string_equal(err, "pages-1.img: checksum mismatch at chunk 0");
	}

	/* Compressed chunks are never mapped. */
	rm_image(img_dir);
	write_image(img_dir, false);
	if (ct_image_open_mapped(img_dir, err, &img) < 0)
		fail_msg("open: %s", err);
	assert_null(img->procs[0].pages->map);
	check_pages(img, img->procs[0].pages, 1);
}

/* Pages read back against a generator; n counts them. */
struct gen_check {
	void (*gen)(uint8_t *p, uint64_t addr);
	uint64_t n;
};

static int check_gen_cb(uint64_t addr, const void *data, size_t n_pages, void *userdata)
{
	struct gen_check *c = userdata;
	static uint8_t want[PAGE];

	assert_non_null(data);
	for (size_t i = 0; i < n_pages; i++) {
		c->gen(want, addr + i * PAGE);
		assert_memory_equal((const uint8_t *)data + i * PAGE, want, PAGE);
	}
	c->n += n_pages;
	return 0;
}

/* After a run of chunks zstd could not shrink, the writer stops trying every chunk, and tries
 * again soon enough to compress what follows. */
static void test_incompressible_streak(void **state)
{
	_cleanup_(ct_image_freep) struct ct_image *img = NULL;
	char err[CT_IMAGE_ERROR_MAX] = "";
	const struct ct_image_pages *p;
	size_t raw_after = 0, k;
	struct gen_check c = {gen_mixed_page};

	write_mixed = true;
	write_image(img_dir, false);
	write_mixed = false;
	if (ct_image_open(img_dir, err, &img) < 0)
		fail_msg("open: %s", err);
	p = img->procs[0].pages;
	assert_int_equal(p->n_chunks, MIXED_MIB);
	for (k = 0; k < MIXED_RANDOM_MIB; k++)
		assert_int_equal(p->chunks[k].flags, CT_IMAGE_CHUNK_RAW);
	while (k < MIXED_MIB && p->chunks[k].flags == CT_IMAGE_CHUNK_RAW)
		raw_after++, k++;
	/* Chunks 5-8 went untried, so some compressible ones did too; one of the next 16 was
	 * tried, and from there every chunk is. */
	assert_true(raw_after >= 1 && raw_after < 16);
	for (; k < MIXED_MIB; k++) {
		assert_int_equal(p->chunks[k].flags, 0);
		assert_true(p->chunks[k].size < MIB_PAGES * PAGE / 16);
	}
	assert_int_equal(ct_image_pages_read(img, p, err, check_gen_cb, &c), 0);
	assert_int_equal(c.n, MIXED_MIB * MIB_PAGES);
}

/* Checksums the dump's reader computed: the writer stores them for whole raw chunks that start
 * where they were computed, and only there. */
static void check_hashed_image(size_t n_chunks)
{
	_cleanup_(ct_image_freep) struct ct_image *img = NULL;
	char err[CT_IMAGE_ERROR_MAX] = "";
	struct gen_check c = {gen_full_page};

	if (ct_image_open(img_dir, err, &img) < 0)
		fail_msg("open: %s", err);
	assert_int_equal(img->procs[0].pages->n_chunks, n_chunks);
	assert_int_equal(ct_image_pages_read(img, img->procs[0].pages, err, check_gen_cb, &c), 0);
	assert_int_equal(c.n, HASHED_PAGES + hashed_lead);
}

static void write_hashed_image(int bad, size_t skew, size_t lead)
{
	rm_image(img_dir);
	hashed_bad = bad, hashed_skew = skew, hashed_lead = lead;
	write_image(img_dir, false);
}

static void test_given_checksums(void **state)
{
	write_level = 0;
	/* A wrong one is what the image gets: restore refuses the chunk. */
	write_hashed_image(1, 0, 0);
	expect_refused("pages-1.img: checksum mismatch at chunk 1", -EBADMSG);
	/* Pages gathered before them go out as a short chunk of their own, so the caller's
	 * chunks stay the image's. */
	write_hashed_image(1, 0, 3);
	expect_refused("pages-1.img: checksum mismatch at chunk 2", -EBADMSG);
	/* Pages that do not start at a chunk of the buffer: the writer hashes them itself. */
	write_hashed_image(1, 1, 0);
	check_hashed_image(4);
	/* Right ones. */
	write_hashed_image(-1, 0, 0);
	check_hashed_image(4);
	write_hashed_image(-1, 0, 3);
	check_hashed_image(5);
	hashed_bad = -2, hashed_lead = 0;
	write_level = 1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_round_trip, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_uncompressed, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_reserved, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_mapped, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_incompressible_streak, setup_dir,
						teardown_dir),
		cmocka_unit_test(test_reserved_out_of_space),
		cmocka_unit_test(test_placed),
		cmocka_unit_test_setup_teardown(test_given_checksums, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_flip_each_file, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_truncate_each_file, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_remove_each_file, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_wrong_version, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_extra_files, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_permissions, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_incomplete, setup_dir, teardown_dir),
		cmocka_unit_test(test_path_check),
		cmocka_unit_test_setup_teardown(test_refused_records, setup_dir, teardown_dir),
		cmocka_unit_test(test_decode_malformed),
		cmocka_unit_test_setup_teardown(test_migctl_image_show, setup_dir, teardown_dir),
	};

	build_model();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
