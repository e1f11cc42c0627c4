/* Unit tests of the health probes: the /proc parsers and sampling from a fixture proc root. */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

/* cmocka's assert_float_equal() compares floats; our values are doubles. */
#define assert_near(a, b, eps)                                              \
	do {                                                                \
		double _a = (a), _b = (b);                                  \
		if (!(_a - _b <= (eps) && _b - _a <= (eps)))                \
			fail_msg("%s = %.12g, expected %.12g", #a, _a, _b); \
	} while (0)

#include "common/cleanup.h"
#include "common/util.h"
#include "health/health.h"

/* Captured from Linux 6.18 (2 CPUs), shortened where the parsers do not look. */
static const char STAT_SAMPLE[] = "cpu  1496 3 1353 70230 305 7 23 11 5 2\n"
				  "cpu0 492 1 494 35725 4 3 1 5 2 1\n"
				  "cpu1 1004 2 858 34505 300 4 22 6 3 1\n"
				  "intr 115220 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
				  "ctxt 254611\n"
				  "btime 1764172294\n"
				  "processes 4450\n"
				  "procs_running 1\n"
				  "procs_blocked 0\n"
				  "softirq 61329 0 12110 1 3 0 0 40 12339 0 36836\n";

static const char MEMINFO_SAMPLE[] = "MemTotal:       24684096 kB\n"
				     "MemFree:        24519488 kB\n"
				     "MemAvailable:   24434248 kB\n"
				     "Buffers:            1456 kB\n"
				     "Cached:           41240 kB\n"
				     "HugePages_Total:       0\n"
				     "Hugepagesize:       2048 kB\n";

static const char PSI_FULL_SAMPLE[] = "some avg10=1.96 avg60=0.48 avg300=0.42 total=3011617\n"
				      "full avg10=0.18 avg60=0.15 avg300=0.41 total=2822266\n";
static const char PSI_SOME_SAMPLE[] = "some avg10=12.50 avg60=3.00 avg300=100.00 total=42\n";
static const char LOADAVG_SAMPLE[] = "0.52 1.04 12.75 1/83 4450\n";

static void test_stat_cpu(void **state)
{
	struct health_cpu_times t;

	assert_int_equal(health_parse_stat_cpu(STAT_SAMPLE, &t), 0);
	/* user+nice+system+irq+softirq+steal; guest and guest_nice are inside user/nice. */
	assert_int_equal(t.busy, 1496 + 3 + 1353 + 7 + 23 + 11);
	assert_int_equal(t.total, t.busy + 70230 + 305);

	/* The aggregate line need not be first, and old kernels print only four fields. */
	assert_int_equal(health_parse_stat_cpu("intr 1 2\ncpu 10 20 30 40\n", &t), 0);
	assert_int_equal(t.busy, 60);
	assert_int_equal(t.total, 100);

	/* No trailing newline, and counters at the top of the range. */
	assert_int_equal(health_parse_stat_cpu("cpu 18446744073709551615 0 0 0", &t), 0);
	assert_true(t.busy == UINT64_MAX && t.total == UINT64_MAX);
}

static void test_stat_cpu_garbage(void **state)
{
	static const char *const bad[] = {
		"",
		"\n",
		"cpu",
		"cpu \n",
		"cpu 1 2 3\n",	  /* too few fields */
		"cpu0 1 2 3 4\n", /* no aggregate line */
		"xcpu 1 2 3 4\n",
		"cpu 1 2 3 x\n",
		"cpu 1 2 3 4x\n",
		"cpu -1 2 3 4\n",
		"cpu +1 2 3 4\n",
		"cpu 0x10 2 3 4\n",
		"cpu 1 2 3 4 5 6 7 8 9 garbage\n",
		"cpu 18446744073709551616 0 0 0\n", /* one past UINT64_MAX */
		"cpu 99999999999999999999999999 0 0 0\n",
		"cpu 18446744073709551615 1 0 0\n",   /* busy overflows */
		"cpu 0 0 0 18446744073709551615 1\n", /* total overflows */
	};
	struct health_cpu_times t = {.busy = 7, .total = 7};

	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		if (health_parse_stat_cpu(bad[i], &t) != -EINVAL)
			fail_msg("accepted: \"%s\"", bad[i]);
		/* out-parameters untouched on failure */
		assert_true(t.busy == 7 && t.total == 7);
	}
}

static void test_meminfo(void **state)
{
	uint64_t total, avail;

	assert_int_equal(health_parse_meminfo(MEMINFO_SAMPLE, &total, &avail), 0);
	assert_int_equal(total, 24684096ULL * 1024);
	assert_int_equal(avail, 24434248ULL * 1024);

	/* Order does not matter, other lines are ignored. */
	assert_int_equal(health_parse_meminfo("Foo: 1 kB\nMemAvailable: 2 kB\nMemTotal:\t3 kB",
					      &total, &avail),
			 0);
	assert_int_equal(total, 3072);
	assert_int_equal(avail, 2048);
}

static void test_meminfo_garbage(void **state)
{
	static const char *const bad[] = {
		"",
		"MemTotal: 100 kB\n",			   /* no MemAvailable */
		"MemAvailable: 100 kB\n",		   /* no MemTotal */
		"MemTotal: 100\nMemAvailable: 50 kB\n",	   /* unit missing */
		"MemTotal: 100 MB\nMemAvailable: 50 kB\n", /* unknown unit */
		"MemTotal: 100 kB x\nMemAvailable: 50 kB\n",
		"MemTotal: kB\nMemAvailable: 50 kB\n",
		"MemTotal: -100 kB\nMemAvailable: 50 kB\n",
		" MemTotal: 100 kB\nMemAvailable: 50 kB\n",
		/* 2^54 kB overflows when converted to bytes */
		"MemTotal: 18014398509481984 kB\nMemAvailable: 50 kB\n",
		"MemTotal: 184467440737095516150 kB\nMemAvailable: 50 kB\n",
	};
	uint64_t total = 7, avail = 7;

	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		if (health_parse_meminfo(bad[i], &total, &avail) != -EINVAL)
			fail_msg("accepted: \"%s\"", bad[i]);
		assert_true(total == 7 && avail == 7);
	}
}

static void test_psi(void **state)
{
	struct health_psi psi;

	assert_int_equal(health_parse_psi(PSI_FULL_SAMPLE, &psi), 0);
	assert_true(psi.available);
	assert_true(psi.has_full);
	assert_near(psi.some_avg10, 1.96, 1e-9);
	assert_near(psi.full_avg10, 0.18, 1e-9);

	/* cpu on kernels before 5.13 has no "full" line. */
	assert_int_equal(health_parse_psi(PSI_SOME_SAMPLE, &psi), 0);
	assert_true(psi.available);
	assert_false(psi.has_full);
	assert_near(psi.some_avg10, 12.5, 1e-9);
	assert_near(psi.full_avg10, 0, 0);

	/* Integers, no trailing newline. */
	assert_int_equal(health_parse_psi("some avg10=3 avg60=0 avg300=0 total=0", &psi), 0);
	assert_near(psi.some_avg10, 3, 0);
}

static void test_psi_garbage(void **state)
{
	static const char *const bad[] = {
		"",
		"\n",
		"full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", /* no "some" */
		"some\n",
		"some avg10=0.00\n",
		"some avg10=0.00 avg60=0.00 avg300=0.00\n",
		"some avg10=0.00 avg60=0.00 avg300=0.00 total=\n",
		"some avg60=0.00 avg10=0.00 avg300=0.00 total=0\n",
		"some avg10=0.00 avg60=0.00 avg300=0.00 total=0 extra\n",
		"some avg10=-1.00 avg60=0.00 avg300=0.00 total=0\n",
		"some avg10=1e3 avg60=0.00 avg300=0.00 total=0\n",
		"some avg10=nan avg60=0.00 avg300=0.00 total=0\n",
		"some avg10=1. avg60=0.00 avg300=0.00 total=0\n",
		"some avg10=.5 avg60=0.00 avg300=0.00 total=0\n",
		"some avg10=100.01 avg60=0.00 avg300=0.00 total=0\n", /* not a percentage */
		"some avg10=0.00 avg60=0.00 avg300=0.00 total=18446744073709551616\n",
		"some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
		"some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
		"some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
		"full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
		"full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
		"some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nbogus\n",
		"somebody avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
	};
	struct health_psi psi = {.some_avg10 = 7};

	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		if (health_parse_psi(bad[i], &psi) != -EINVAL)
			fail_msg("accepted: \"%s\"", bad[i]);
		assert_near(psi.some_avg10, 7, 0);
	}
}

static void test_loadavg(void **state)
{
	double load[3];
	static const char *const bad[] = {
		"",
		"0.52 1.04\n",
		"0.52 1.04 12.75\n",
		"0.52 x 12.75 1/83 4450\n",
		"-0.52 1.04 12.75 1/83 4450\n",
		"0.52,1.04,12.75 1/83 4450\n",
	};

	assert_int_equal(health_parse_loadavg(LOADAVG_SAMPLE, load), 0);
	assert_near(load[0], 0.52, 1e-9);
	assert_near(load[1], 1.04, 1e-9);
	assert_near(load[2], 12.75, 1e-9);

	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		load[0] = 7;
		if (health_parse_loadavg(bad[i], load) != -EINVAL)
			fail_msg("accepted: \"%s\"", bad[i]);
		assert_near(load[0], 7, 0);
	}
}

/* Every prefix and every one-byte corruption of a valid file gives 0 or -EINVAL; under ASan
 * this also proves the parsers never read past the terminating NUL. */
static void check_parsers(const char *buf)
{
	struct health_cpu_times t;
	struct health_psi psi;
	uint64_t a, b;
	double load[3];
	int r;

	r = health_parse_stat_cpu(buf, &t);
	assert_true(r == 0 || r == -EINVAL);
	if (r == 0)
		assert_true(t.busy <= t.total);
	r = health_parse_meminfo(buf, &a, &b);
	assert_true(r == 0 || r == -EINVAL);
	r = health_parse_psi(buf, &psi);
	assert_true(r == 0 || r == -EINVAL);
	if (r == 0)
		assert_true(psi.some_avg10 >= 0 && psi.some_avg10 <= 100);
	r = health_parse_loadavg(buf, load);
	assert_true(r == 0 || r == -EINVAL);
}

static void check_mutations(const char *sample)
{
	static const char subst[] = {'\n', ' ', '\t', '0', '9', '.', '=', 'x', '-', (char)0xff};
	size_t n = strlen(sample);
	_cleanup_free_ char *buf = malloc(n + 1);

	assert_non_null(buf);
	/* Each prefix in a buffer of exactly its size, so ASan sees any overread. */
	for (size_t len = 0; len <= n; len++) {
		_cleanup_free_ char *prefix = strndup(sample, len);

		assert_non_null(prefix);
		check_parsers(prefix);
	}
	for (size_t pos = 0; pos < n; pos++)
		for (size_t s = 0; s < ELEMENTSOF(subst); s++) {
			memcpy(buf, sample, n + 1);
			buf[pos] = subst[s];
			check_parsers(buf);
		}
}

static void test_mutations(void **state)
{
	check_mutations(STAT_SAMPLE);
	check_mutations(MEMINFO_SAMPLE);
	check_mutations(PSI_FULL_SAMPLE);
	check_mutations(LOADAVG_SAMPLE);
}

/* ---- sampling from a fixture proc root ----------------------------------------------- */

struct fixture {
	char dir[64];
};

static void write_text(const char *dir, const char *name, const char *text)
{
	_cleanup_free_ char *path = NULL;

	assert_true(asprintf(&path, "%s/%s", dir, name) >= 0);
	assert_int_equal(write_file_atomic(path, text, strlen(text), 0644), 0);
}

static void remove_fixture(const char *dir)
{
	static const char *const files[] = {"stat",	    "meminfo",	       "loadavg",
					    "pressure/cpu", "pressure/memory", "pressure/io"};

	for (size_t i = 0; i < ELEMENTSOF(files); i++) {
		_cleanup_free_ char *path = NULL;

		assert_true(asprintf(&path, "%s/%s", dir, files[i]) >= 0);
		(void)unlink(path);
	}
	{
		_cleanup_free_ char *path = NULL;

		assert_true(asprintf(&path, "%s/pressure", dir) >= 0);
		(void)rmdir(path);
	}
	assert_int_equal(rmdir(dir), 0);
}

static int fixture_setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	strscpy(f->dir, "/tmp/test-health-probes.XXXXXX", sizeof(f->dir));
	if (!mkdtemp(f->dir)) {
		free(f);
		return -1;
	}
	write_text(f->dir, "meminfo", MEMINFO_SAMPLE);
	write_text(f->dir, "loadavg", LOADAVG_SAMPLE);
	*state = f;
	return 0;
}

static int fixture_teardown(void **state)
{
	struct fixture *f = *state;

	remove_fixture(f->dir);
	free(f);
	return 0;
}

static void test_sample_fixture(void **state)
{
	struct fixture *f = *state;
	struct health_probe *p = NULL;
	struct health_metrics m;
	_cleanup_free_ char *pressure = NULL;

	write_text(f->dir, "stat", "cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1\ncpu1 1\ncpu2 1\n");
	assert_int_equal(health_probe_new(f->dir, &p), 0);

	/* No pressure/ directory at all: PSI unavailable, the sample still succeeds. */
	assert_int_equal(health_probe_sample(p, &m), 0);
	assert_near(m.cpu_busy_pct, -1, 0);
	assert_int_equal(m.n_cpus, 3);
	assert_int_equal(m.mem_total, 24684096ULL * 1024);
	assert_int_equal(m.mem_used, (24684096ULL - 24434248ULL) * 1024);
	assert_near(m.load[0], 0.52, 1e-9);
	assert_near(m.load[2], 12.75, 1e-9);
	assert_false(m.psi_cpu.available);
	assert_false(m.psi_memory.available);
	assert_false(m.psi_io.available);
	assert_true(m.timestamp_usec > 0);

	/* +300 busy (user 200, system 50, irq 30, steal 20) of +400 total (+100 idle) = 75 %;
	 * guest moves too but is part of user already. */
	write_text(f->dir, "stat", "cpu  300 0 150 900 0 30 0 20 50 0\ncpu0 1\ncpu1 1\ncpu2 1\n");
	assert_true(asprintf(&pressure, "%s/pressure", f->dir) >= 0);
	assert_int_equal(mkdir(pressure, 0755), 0);
	write_text(f->dir, "pressure/cpu", PSI_SOME_SAMPLE);
	write_text(f->dir, "pressure/memory", PSI_FULL_SAMPLE);
	/* pressure/io absent, the others present: each resource on its own. */
	assert_int_equal(health_probe_sample(p, &m), 0);
	assert_near(m.cpu_busy_pct, 75.0, 1e-9);
	assert_true(m.psi_cpu.available);
	assert_false(m.psi_cpu.has_full);
	assert_near(m.psi_cpu.some_avg10, 12.5, 1e-9);
	assert_true(m.psi_memory.available);
	assert_true(m.psi_memory.has_full);
	assert_near(m.psi_memory.full_avg10, 0.18, 1e-9);
	assert_false(m.psi_io.available);

	/* An unparsable PSI file counts as unavailable, not as a failed sample. */
	write_text(f->dir, "pressure/io", "garbage\n");
	/* Same counters again (two samples within one tick): no interval, busy unknown. */
	assert_int_equal(health_probe_sample(p, &m), 0);
	assert_near(m.cpu_busy_pct, -1, 0);
	assert_false(m.psi_io.available);

	/* The baseline was kept, so the next interval spans both: +100 busy of +200 = 50 %. */
	write_text(f->dir, "stat", "cpu  350 0 200 1000 0 30 0 20 50 0\ncpu0 1\ncpu1 1\ncpu2 1\n");
	assert_int_equal(health_probe_sample(p, &m), 0);
	assert_near(m.cpu_busy_pct, 50.0, 1e-9);

	/* Counters going backwards: no figure, then a fresh baseline. */
	write_text(f->dir, "stat", "cpu  10 0 10 80 0 0 0 0 0 0\n");
	assert_int_equal(health_probe_sample(p, &m), 0);
	assert_near(m.cpu_busy_pct, -1, 0);
	assert_true(m.n_cpus >= 1); /* no cpuN lines: falls back to sysconf */
	write_text(f->dir, "stat", "cpu  20 0 10 170 0 0 0 0 0 0\n");
	assert_int_equal(health_probe_sample(p, &m), 0);
	assert_near(m.cpu_busy_pct, 10.0, 1e-9);

	health_probe_free(p);
}

static void test_sample_fixture_errors(void **state)
{
	struct fixture *f = *state;
	struct health_probe *p = NULL;
	struct health_metrics m = {.n_cpus = 77};

	assert_int_equal(health_probe_new(f->dir, &p), 0);

	/* No stat file: a real error, and the result is untouched. */
	assert_int_equal(health_probe_sample(p, &m), -ENOENT);
	assert_int_equal(m.n_cpus, 77);

	write_text(f->dir, "stat", "cpu garbage\n");
	assert_int_equal(health_probe_sample(p, &m), -EINVAL);
	assert_int_equal(m.n_cpus, 77);

	write_text(f->dir, "stat", STAT_SAMPLE);
	write_text(f->dir, "meminfo", "MemTotal: 1 kB\n");
	assert_int_equal(health_probe_sample(p, &m), -EINVAL);
	assert_int_equal(m.n_cpus, 77);

	health_probe_free(p);

	assert_int_equal(health_probe_new("", &p), -EINVAL);
	assert_null(health_probe_free(NULL));
}

/* The real /proc of this machine: what the daemon will see. */
static void test_sample_real_proc(void **state)
{
	struct health_probe *p = NULL;
	struct health_metrics m1, m2;
	struct timespec ts = {.tv_nsec = 100 * 1000 * 1000};
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	bool psi = access("/proc/pressure/cpu", R_OK) == 0;

	assert_int_equal(health_probe_new("/proc", &p), 0);
	assert_int_equal(health_probe_sample(p, &m1), 0);
	assert_near(m1.cpu_busy_pct, -1, 0);

	/* Burn some CPU so the interval certainly spans ticks and busy > 0 is plausible. */
	nanosleep(&ts, NULL);
	for (volatile unsigned long i = 0; i < 50UL * 1000 * 1000; i++)
		;
	assert_int_equal(health_probe_sample(p, &m2), 0);

	print_message("real /proc: busy %.1f%%, mem %" PRIu64 "/%" PRIu64 " MiB, load %.2f, "
		      "%u cpus, psi cpu %s %.2f, memory %s %.2f, io %s %.2f\n",
		      m2.cpu_busy_pct, m2.mem_used >> 20, m2.mem_total >> 20, m2.load[0], m2.n_cpus,
		      m2.psi_cpu.available ? "yes" : "no", m2.psi_cpu.some_avg10,
		      m2.psi_memory.available ? "yes" : "no", m2.psi_memory.some_avg10,
		      m2.psi_io.available ? "yes" : "no", m2.psi_io.some_avg10);

	assert_true(m2.cpu_busy_pct > 0 && m2.cpu_busy_pct <= 100);
	assert_true(m2.timestamp_usec >= m1.timestamp_usec);
	assert_true(m2.mem_total > 0);
	assert_true(m2.mem_used > 0 && m2.mem_used < m2.mem_total);
	assert_int_equal(m2.n_cpus, ncpu);
	for (size_t i = 0; i < 3; i++)
		assert_true(m2.load[i] >= 0);
	assert_int_equal(m2.psi_cpu.available, psi);
	assert_int_equal(m2.psi_memory.available, psi);
	assert_int_equal(m2.psi_io.available, psi);
	if (psi) {
		assert_true(m2.psi_memory.has_full && m2.psi_io.has_full);
		assert_true(m2.psi_cpu.some_avg10 >= 0 && m2.psi_cpu.some_avg10 <= 100);
	}

	health_probe_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stat_cpu),
		cmocka_unit_test(test_stat_cpu_garbage),
		cmocka_unit_test(test_meminfo),
		cmocka_unit_test(test_meminfo_garbage),
		cmocka_unit_test(test_psi),
		cmocka_unit_test(test_psi_garbage),
		cmocka_unit_test(test_loadavg),
		cmocka_unit_test(test_mutations),
		cmocka_unit_test_setup_teardown(test_sample_fixture, fixture_setup,
						fixture_teardown),
		cmocka_unit_test_setup_teardown(test_sample_fixture_errors, fixture_setup,
						fixture_teardown),
		cmocka_unit_test(test_sample_real_proc),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
