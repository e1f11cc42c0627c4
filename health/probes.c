/* Local probes: pure parsers for /proc stat, meminfo, loadavg and pressure, and the sampler. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/util.h"
#include "health/health.h"

/* /proc/stat carries one "intr" line with a counter per IRQ; big machines make it long. */
#define PROC_STAT_MAX  (4U * 1024 * 1024)
#define PROC_SMALL_MAX (64U * 1024)

/* Decimal places kept from a fraction; the kernel prints at most two. */
#define FRACTION_DIGITS_MAX 9

struct health_probe {
	char *proc_root;
	bool has_prev;
	struct health_cpu_times prev;
};

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* A field ends at a blank, the end of the line or the end of the text. */
static bool is_field_end(char c)
{
	return c == 0 || c == '\n' || is_blank(c);
}

static const char *skip_blanks(const char *p)
{
	while (is_blank(*p))
		p++;
	return p;
}

/* Returns the start of the line after p's line, or NULL when p's line is the last one. */
static const char *next_line(const char *p)
{
	const char *nl = strchr(p, '\n');

	return nl ? nl + 1 : NULL;
}

/* Unsigned decimal without sign, base prefix or locale (strtoull accepts "-1" and wraps). */
static int parse_u64_field(const char **p, uint64_t *ret)
{
	const char *s = skip_blanks(*p);
	uint64_t v = 0;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	for (; *s >= '0' && *s <= '9'; s++)
		if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *s - '0', &v))
			return -EINVAL;
	if (!is_field_end(*s))
		return -EINVAL;
	*p = s;
	*ret = v;
	return 0;
}

/* "12", "12.5", "0.07": the kernel's fixed-point output; no exponent, sign, inf or nan. */
static int parse_decimal_field(const char **p, double *ret)
{
	const char *s = skip_blanks(*p);
	uint64_t ip = 0, fp = 0, scale = 1;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	for (; *s >= '0' && *s <= '9'; s++)
		if (__builtin_mul_overflow(ip, 10, &ip) ||
		    __builtin_add_overflow(ip, *s - '0', &ip))
			return -EINVAL;
	if (*s == '.') {
		s++;
		if (*s < '0' || *s > '9')
			return -EINVAL;
		for (unsigned n = 0; *s >= '0' && *s <= '9'; s++, n++)
			if (n < FRACTION_DIGITS_MAX) {
				fp = fp * 10 + (uint64_t)(*s - '0');
				scale *= 10;
			}
	}
	if (!is_field_end(*s))
		return -EINVAL;
	*p = s;
	*ret = (double)ip + (double)fp / (double)scale;
	return 0;
}

/* Matches word at p followed by a field end; returns the position after it or NULL. */
static const char *match_word(const char *p, const char *word)
{
	size_t n = strlen(word);

	if (strncmp(p, word, n) != 0 || !is_field_end(p[n]))
		return NULL;
	return p + n;
}

/* The rest of the line holds nothing but blanks. */
static bool at_line_end(const char *p)
{
	p = skip_blanks(p);
	return *p == 0 || *p == '\n';
}

/* The line that starts with key (at the start of a line), past the key, or NULL. */
static const char *find_line(const char *text, const char *key)
{
	size_t n = strlen(key);

	for (const char *l = text; l; l = next_line(l))
		if (strncmp(l, key, n) == 0)
			return l + n;
	return NULL;
}

int health_parse_stat_cpu(const char *text, struct health_cpu_times *ret)
{
	/* user nice system idle iowait irq softirq steal; guest and guest_nice follow but are
	 * already counted in user and nice, so adding them would count them twice. */
	uint64_t v[8] = {};
	uint64_t busy = 0, total;
	const char *p;
	size_t n = 0;

	if (!text || !ret)
		return -EINVAL;
	p = find_line(text, "cpu ");
	if (!p)
		return -EINVAL;
	for (; !at_line_end(p); n++) {
		uint64_t x;

		if (parse_u64_field(&p, &x) < 0)
			return -EINVAL;
		if (n < ELEMENTSOF(v))
			v[n] = x;
	}
	/* Kernels before 2.6 had only the first four; anything shorter is not this file. */
	if (n < 4)
		return -EINVAL;

	for (size_t i = 0; i < ELEMENTSOF(v); i++) {
		if (i == 3 || i == 4)
			continue;
		if (__builtin_add_overflow(busy, v[i], &busy))
			return -EINVAL;
	}
	if (__builtin_add_overflow(busy, v[3], &total) ||
	    __builtin_add_overflow(total, v[4], &total))
		return -EINVAL;

	ret->busy = busy;
	ret->total = total;
	return 0;
}

/* Counts "cpuN" lines: the CPUs online in this /proc, which may be a fixture. */
static unsigned stat_count_cpus(const char *text)
{
	unsigned n = 0;

	for (const char *l = text; l; l = next_line(l))
		if (strncmp(l, "cpu", 3) == 0 && l[3] >= '0' && l[3] <= '9' && n < UINT_MAX)
			n++;
	return n;
}

static int meminfo_field(const char *text, const char *key, uint64_t *ret_bytes)
{
	const char *p = find_line(text, key);
	uint64_t kb;

	if (!p || parse_u64_field(&p, &kb) < 0)
		return -EINVAL;
	p = skip_blanks(p);
	if (!(p = match_word(p, "kB")) || !at_line_end(p))
		return -EINVAL;
	if (__builtin_mul_overflow(kb, 1024, ret_bytes))
		return -EINVAL;
	return 0;
}

int health_parse_meminfo(const char *text, uint64_t *ret_total, uint64_t *ret_available)
{
	uint64_t total, available;

	if (!text || !ret_total || !ret_available)
		return -EINVAL;
	if (meminfo_field(text, "MemTotal:", &total) < 0 ||
	    meminfo_field(text, "MemAvailable:", &available) < 0)
		return -EINVAL;
	*ret_total = total;
	*ret_available = available;
	return 0;
}

/* "avg10=0.00 avg60=0.00 avg300=0.00 total=0": the four fields in the kernel's order. */
static int psi_parse_line(const char *p, double *ret_avg10)
{
	static const char *const avgs[] = {"avg10=", "avg60=", "avg300="};
	double avg[ELEMENTSOF(avgs)];
	uint64_t total;

	for (size_t i = 0; i < ELEMENTSOF(avgs); i++) {
		size_t n = strlen(avgs[i]);

		p = skip_blanks(p);
		if (strncmp(p, avgs[i], n) != 0)
			return -EINVAL;
		p += n;
		if (parse_decimal_field(&p, &avg[i]) < 0 || avg[i] > 100.0)
			return -EINVAL;
	}
	p = skip_blanks(p);
	if (strncmp(p, "total=", 6) != 0)
		return -EINVAL;
	p += 6;
	if (parse_u64_field(&p, &total) < 0 || !at_line_end(p))
		return -EINVAL;

	*ret_avg10 = avg[0];
	return 0;
}

int health_parse_psi(const char *text, struct health_psi *ret)
{
	struct health_psi psi = {};
	bool has_some = false;

	if (!text || !ret)
		return -EINVAL;
	for (const char *l = text; l && *l; l = next_line(l)) {
		const char *p;

		if (at_line_end(l))
			continue;
		if ((p = match_word(l, "some"))) {
			if (has_some || psi_parse_line(p, &psi.some_avg10) < 0)
				return -EINVAL;
			has_some = true;
		} else if ((p = match_word(l, "full"))) {
			if (psi.has_full || psi_parse_line(p, &psi.full_avg10) < 0)
				return -EINVAL;
			psi.has_full = true;
		} else
			return -EINVAL;
	}
	if (!has_some)
		return -EINVAL;

	psi.available = true;
	*ret = psi;
	return 0;
}

int health_parse_loadavg(const char *text, double ret_load[3])
{
	double load[3];
	const char *p = text;

	if (!text || !ret_load)
		return -EINVAL;
	for (size_t i = 0; i < ELEMENTSOF(load); i++)
		if (parse_decimal_field(&p, &load[i]) < 0)
			return -EINVAL;
	/* "running/total last_pid" follow; we do not use them but a bare newline is not this file.
	 */
	if (at_line_end(p))
		return -EINVAL;
	memcpy(ret_load, load, sizeof(load));
	return 0;
}

int health_probe_new(const char *proc_root, struct health_probe **ret)
{
	_cleanup_free_ struct health_probe *p = NULL;

	if (strempty(proc_root) || !ret)
		return -EINVAL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->proc_root = strdup(proc_root);
	if (!p->proc_root)
		return -ENOMEM;
	*ret = TAKE_PTR(p);
	return 0;
}

struct health_probe *health_probe_free(struct health_probe *p)
{
	if (!p)
		return NULL;
	free(p->proc_root);
	free(p);
	return NULL;
}

static int probe_read(struct health_probe *p, const char *name, size_t max, char **ret_text)
{
	_cleanup_free_ char *path = NULL;

	if (asprintf(&path, "%s/%s", p->proc_root, name) < 0)
		return -ENOMEM;
	return read_full_file(path, max, ret_text, NULL);
}

/* Absent PSI (kernel without it, psi=0, a fixture without pressure/) is a normal state;
 * so is a file we cannot parse: metrics without PSI beat no metrics. */
static int probe_read_psi(struct health_probe *p, const char *name, struct health_psi *ret)
{
	_cleanup_free_ char *text = NULL;
	int r;

	*ret = (struct health_psi){};
	r = probe_read(p, name, PROC_SMALL_MAX, &text);
	if (r == -ENOMEM)
		return r;
	if (r < 0) {
		log_debug_errno(r, "PSI %s/%s unavailable: %m", p->proc_root, name);
		return 0;
	}
	r = health_parse_psi(text, ret);
	if (r < 0)
		log_debug_errno(r, "Cannot parse %s/%s, treating PSI as unavailable: %m",
				p->proc_root, name);
	return 0;
}

/* Busy % over the interval since prev, -1 when there is no usable interval. */
static double cpu_busy_pct(const struct health_cpu_times *prev, const struct health_cpu_times *cur)
{
	uint64_t dbusy, dtotal;

	if (cur->total <= prev->total || cur->busy < prev->busy)
		return -1;
	dbusy = cur->busy - prev->busy;
	dtotal = cur->total - prev->total;
	/* iowait may go backwards (proc(5)), so busy can outgrow total by a few ticks. */
	if (dbusy >= dtotal)
		return 100.0;
	return (double)dbusy * 100.0 / (double)dtotal;
}

int health_probe_sample(struct health_probe *p, struct health_metrics *ret)
{
	_cleanup_free_ char *stat = NULL, *meminfo = NULL, *loadavg = NULL;
	struct health_metrics m = {.cpu_busy_pct = -1};
	struct health_cpu_times cpu;
	uint64_t mem_available;
	long n;
	int r;

	if (!p || !ret)
		return -EINVAL;

	m.timestamp_usec = now_usec(CLOCK_REALTIME);

	r = probe_read(p, "stat", PROC_STAT_MAX, &stat);
	if (r < 0)
		return log_debug_errno(r, "Failed to read %s/stat: %m", p->proc_root);
	r = health_parse_stat_cpu(stat, &cpu);
	if (r < 0)
		return log_debug_errno(r, "Failed to parse %s/stat: %m", p->proc_root);
	m.n_cpus = stat_count_cpus(stat);
	if (m.n_cpus == 0) {
		n = sysconf(_SC_NPROCESSORS_ONLN);
		m.n_cpus = n > 0 && n <= UINT_MAX ? (unsigned)n : 1;
	}

	r = probe_read(p, "meminfo", PROC_SMALL_MAX, &meminfo);
	if (r < 0)
		return log_debug_errno(r, "Failed to read %s/meminfo: %m", p->proc_root);
	r = health_parse_meminfo(meminfo, &m.mem_total, &mem_available);
	if (r < 0)
		return log_debug_errno(r, "Failed to parse %s/meminfo: %m", p->proc_root);
	m.mem_used = mem_available < m.mem_total ? m.mem_total - mem_available : 0;

	r = probe_read(p, "loadavg", PROC_SMALL_MAX, &loadavg);
	if (r < 0)
		return log_debug_errno(r, "Failed to read %s/loadavg: %m", p->proc_root);
	r = health_parse_loadavg(loadavg, m.load);
	if (r < 0)
		return log_debug_errno(r, "Failed to parse %s/loadavg: %m", p->proc_root);

	r = probe_read_psi(p, "pressure/cpu", &m.psi_cpu);
	if (r >= 0)
		r = probe_read_psi(p, "pressure/memory", &m.psi_memory);
	if (r >= 0)
		r = probe_read_psi(p, "pressure/io", &m.psi_io);
	if (r < 0)
		return r;

	if (p->has_prev)
		m.cpu_busy_pct = cpu_busy_pct(&p->prev, &cpu);
	/* Two samples within one tick: keep the old baseline so the next interval is longer.
	 * Counters that went backwards (a fixture swapped, a bogus file): start over. */
	if (!p->has_prev || cpu.total != p->prev.total) {
		p->prev = cpu;
		p->has_prev = true;
	}

	*ret = m;
	return 0;
}
