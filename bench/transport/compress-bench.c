/* Micro-benchmark of the zstd stage: seal and open speed and ratio per level, on zeros, random
 * bytes and a real memory image, against a memcpy baseline measured in the same run.
 *
 *   compress-bench [--size MiB] [--frame KiB] [--runs N]
 *
 * Three memory images: the private writable memory (heap and anonymous mappings) of a python3
 * interpreter that has built a typical object graph (dicts, strings, ints, floats, lists from
 * JSON documents; skipped, and said so, without python3), a generated mix of JSON-ish text,
 * pointer-like 8-byte values, zero and random pages, and the test guest's page mix
 * (tests/fixtures/guest, mix=1). Each level runs twice: every frame compressed on its own,
 * and the frames of one stream sealer (one zstd stream across frames, as transport streams
 * send them). One thread: numbers are per core. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "transport/compress-internal.h"

static size_t opt_size = 64 << 20;
static size_t opt_frame = 1 << 20;
static unsigned opt_runs = 5;

static const int levels[] = {TRANSPORT_LEVEL_OFF, -5, -3, -1, 1, 3, 6};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, unsigned n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return v[n / 2];
}

static uint64_t rng_state = 88172645463325252ULL;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void fill_random(uint8_t *p, size_t len)
{
	for (size_t i = 0; i + 8 <= len; i += 8) {
		uint64_t v = rng();
		memcpy(p + i, &v, 8);
	}
}

/* The generated image: per 4 KiB page, 40% JSON-ish text, 30% pointer-like words (a heap's
 * addresses and small integers), 20% zeros, 10% random. */
static void fill_mix(uint8_t *p, size_t len)
{
	static const char *const words[] = {"{\"id\": ",
					    "\"name\": \"",
					    "\"state\": \"running\", ",
					    "null, ",
					    "true, ",
					    "\"host\": \"node-",
					    "}, ",
					    "[",
					    "]",
					    "\n  ",
					    "0.25, ",
					    "\"memory\": "};

	for (size_t off = 0; off + 4096 <= len; off += 4096) {
		unsigned kind = (unsigned)(rng() % 10);
		uint8_t *pg = p + off;

		if (kind < 4) {
			size_t n = 0;
			while (n < 4096) {
				const char *w = words[rng() % (sizeof(words) / sizeof(words[0]))];
				size_t l = MIN(strlen(w), 4096 - n);
				memcpy(pg + n, w, l);
				n += l;
				if (n < 4096 && rng() % 3 == 0)
					pg[n++] = (uint8_t)('0' + rng() % 10);
			}
		} else if (kind < 7) {
			for (size_t i = 0; i < 4096; i += 8) {
				uint64_t v = rng() % 4
						     ? 0x00007f3a12000000ULL + (rng() % 65536) * 16
						     : rng() % 256;
				memcpy(pg + i, &v, 8);
			}
		} else if (kind < 9)
			memset(pg, 0, 4096);
		else
			fill_random(pg, 4096);
	}
}

/* The test guest's pages (tests/fixtures/guest/guest.c, mix=1, first generation): a quarter
 * each random, letters, small counters, and mostly zero. */
static uint32_t guest_hash(uint32_t page, uint32_t gen, uint32_t i)
{
	uint32_t x = page * 2654435761u ^ gen * 40503u ^ i * 2246822519u ^ 0x9e3779b9u;

	x ^= x >> 15;
	x *= 2654435761u;
	x ^= x >> 13;
	return x;
}

static void fill_guest(uint8_t *p, size_t len)
{
	for (size_t off = 0; off + 4096 <= len; off += 4096) {
		uint32_t page = (uint32_t)(off / 4096), w[1024];

		w[0] = 1;
		for (uint32_t i = 1; i < 1024; i++) {
			uint32_t x = guest_hash(page, 1, i);

			switch (page & 3) {
			case 0:
				w[i] = x;
				break;
			case 1:
				w[i] = 0x61616161u + (x & 0x0f0f0f0fu);
				break;
			case 2:
				w[i] = (page * 1024u + i + 1) & 0xffffu;
				break;
			default:
				w[i] = i % 64 == 0 ? x : 0;
			}
		}
		memcpy(p + off, w, sizeof(w));
	}
}

static const char PY_SCRIPT[] =
	"import json, random, sys\n"
	"random.seed(1)\n"
	"docs = []\n"
	"for i in range(120000):\n"
	"    d = {'id': i, 'name': 'workload-%d' % i, 'host': "
	"random.choice(['hostA','hostB','hostC']),\n"
	"         'cpu': random.random(), 'mem': random.randint(0, 1 << 34),\n"
	"         'tags': [random.choice(['web','db','cache','batch']) for _ in range(4)],\n"
	"         'state': {'phase': 'precopy', 'round': i % 7, 'dirty': [i, i * 2, i * 3]}}\n"
	"    docs.append(json.loads(json.dumps(d)))\n"
	"print('ready', flush=True)\n"
	"sys.stdin.read()\n";

/* Copies up to len bytes of python3's private writable memory into buf; returns the size. */
static size_t read_python_image(uint8_t *buf, size_t len)
{
	int in[2], out[2];
	pid_t pid;
	size_t got = 0;
	char line[512], path[64];
	FILE *maps;
	int mem;

	if (pipe(in) < 0 || pipe(out) < 0)
		return 0;
	pid = fork();
	if (pid < 0)
		return 0;
	if (pid == 0) {
		dup2(in[0], STDIN_FILENO);
		dup2(out[1], STDOUT_FILENO);
		close(in[1]);
		close(out[0]);
		execlp("python3", "python3", "-c", PY_SCRIPT, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	for (size_t n = 0; n < 6;) { /* "ready\n", maybe in pieces */
		ssize_t k = read(out[0], line + n, 6 - n);
		if (k <= 0)
			goto done;
		n += (size_t)k;
	}
	if (memcmp(line, "ready\n", 6) != 0)
		goto done;

	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	maps = fopen(path, "re");
	snprintf(path, sizeof(path), "/proc/%d/mem", (int)pid);
	mem = open(path, O_RDONLY | O_CLOEXEC);
	while (maps && mem >= 0 && got < len && fgets(line, sizeof(line), maps)) {
		unsigned long lo, hi;
		char perms[8];

		if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3 || perms[0] != 'r' ||
		    perms[1] != 'w' || perms[3] != 'p' || strstr(line, "[stack]"))
			continue;
		for (unsigned long a = lo; a < hi && got < len;) {
			size_t n = MIN((size_t)(hi - a), len - got);
			ssize_t k = pread(mem, buf + got, n, (off_t)a);
			if (k <= 0)
				break;
			got += (size_t)k;
			a += (unsigned long)k;
		}
	}
	if (maps)
		fclose(maps);
	if (mem >= 0)
		close(mem);
done:
	close(in[1]);
	close(out[0]);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return got;
}

struct result {
	double seal_mbs, open_mbs, ratio;
};

static int bench_level(int level, bool streamed, const uint8_t *src, size_t len, struct result *ret)
{
	_cleanup_free_ uint8_t *wire = NULL, *back = NULL;
	struct transport_sealer *s = NULL;
	struct transport_opener *o = NULL;
	size_t n_frames = (len + opt_frame - 1) / opt_frame, wire_total = 0;
	struct transport_frame *frames = NULL;
	size_t *offsets = NULL;
	double seal_t[32], open_t[32];
	int r = 0;

	wire = malloc(n_frames * transport_wire_bound(opt_frame));
	back = malloc(opt_frame);
	frames = calloc(n_frames, sizeof(*frames));
	offsets = calloc(n_frames, sizeof(*offsets));
	if (!wire || !back || !frames || !offsets) {
		r = -ENOMEM;
		goto out;
	}

	for (unsigned run = 0; run < opt_runs; run++) {
		double t0;
		size_t w = 0;

		/* Fresh each run: a stream must not see the same data twice. */
		transport_sealer_free(s);
		transport_opener_free(o);
		s = NULL;
		o = NULL;
		if ((streamed ? transport_sealer_new_stream(&s) : transport_sealer_new(&s)) < 0 ||
		    transport_opener_new(&o) < 0) {
			r = -ENOMEM;
			goto out;
		}
		t0 = now_s();

		for (size_t i = 0; i < n_frames; i++) {
			size_t l = MIN(opt_frame, len - i * opt_frame);
			offsets[i] = w;
			r = transport_seal(s, level, src + i * opt_frame, l, wire + w, &frames[i],
					   NULL);
			if (r < 0)
				goto out;
			w += frames[i].wire_len;
		}
		seal_t[run] = now_s() - t0;
		wire_total = w;

		t0 = now_s();
		for (size_t i = 0; i < n_frames; i++) {
			r = transport_open(o, &frames[i], wire + offsets[i], back);
			if (r < 0)
				goto out;
		}
		open_t[run] = now_s() - t0;
	}
	/* The last frame opened must be the last frame sealed. */
	if (memcmp(back, src + (n_frames - 1) * opt_frame, len - (n_frames - 1) * opt_frame) != 0) {
		r = -EBADMSG;
		goto out;
	}
	*ret = (struct result){
		.seal_mbs = (double)len / median(seal_t, opt_runs) / 1e6,
		.open_mbs = (double)len / median(open_t, opt_runs) / 1e6,
		.ratio = wire_total ? (double)len / (double)wire_total : 0,
	};
out:
	free(frames);
	free(offsets);
	transport_sealer_free(s);
	transport_opener_free(o);
	return r;
}

static double bench_memcpy(const uint8_t *src, size_t len)
{
	_cleanup_free_ uint8_t *dst = malloc(len);
	double t[32];

	if (!dst)
		return 0;
	memcpy(dst, src, len); /* fault the pages in first */
	for (unsigned run = 0; run < opt_runs; run++) {
		double t0 = now_s();
		memcpy(dst, src, len);
		__asm__ volatile("" : : "r"(dst) : "memory");
		t[run] = now_s() - t0;
	}
	return (double)len / median(t, opt_runs) / 1e6;
}

int main(int argc, char *argv[])
{
	static const struct option options[] = {
		{"size", required_argument, NULL, 's'},
		{"frame", required_argument, NULL, 'f'},
		{"runs", required_argument, NULL, 'r'},
		{},
	};
	_cleanup_free_ uint8_t *zeros = NULL, *rnd = NULL, *image = NULL, *mix = NULL,
			       *guest = NULL;
	size_t image_len;
	int c;

	while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0) {
		switch (c) {
		case 's':
			opt_size = strtoull(optarg, NULL, 10) << 20;
			break;
		case 'f':
			opt_frame = strtoull(optarg, NULL, 10) << 10;
			break;
		case 'r':
			opt_runs = (unsigned)strtoul(optarg, NULL, 10);
			break;
		default:
			return 2;
		}
	}
	if (opt_size == 0 || opt_frame == 0 || opt_frame > TRANSPORT_FRAME_MAX_RAW ||
	    opt_runs == 0 || opt_runs > 32) {
		fprintf(stderr, "compress-bench: bad --size, --frame or --runs\n");
		return 2;
	}

	zeros = calloc(1, opt_size);
	rnd = malloc(opt_size);
	image = malloc(opt_size);
	mix = malloc(opt_size);
	guest = malloc(opt_size);
	if (!zeros || !rnd || !image || !mix || !guest) {
		fprintf(stderr, "compress-bench: out of memory\n");
		return 1;
	}
	fill_random(rnd, opt_size);
	fill_mix(mix, opt_size);
	fill_guest(guest, opt_size);
	image_len = read_python_image(image, opt_size);
	if (image_len < opt_size / 4) {
		printf("python3 heap: not available (no python3?), skipped\n");
		image_len = 0;
	}
	/* Whole MiB, so that frames line up the same way in every source. */
	image_len &= ~(size_t)((1 << 20) - 1);

	const struct {
		const char *name;
		const uint8_t *data;
		size_t len;
	} sources[] = {
		{"zeros", zeros, opt_size},	     {"random", rnd, opt_size},
		{"python3 heap", image, image_len},  {"generated mix", mix, opt_size},
		{"test guest mix", guest, opt_size},
	};

	printf("zstd stage, one thread, %zu KiB frames, medians of %u runs\n", opt_frame >> 10,
	       opt_runs);
	printf("memcpy baseline: %.0f MB/s\n\n", bench_memcpy(rnd, opt_size));
	printf("%-30s   %5s   %-30s   %-30s\n", "", "", "   each frame on its own",
	       "   one zstd stream per stream");
	printf("| %-30s | %5s | %8s | %8s | %6s | %8s | %8s | %6s |\n", "source (MiB)", "level",
	       "seal MB/s", "open MB/s", "ratio", "seal MB/s", "open MB/s", "ratio");
	printf("|--------------------------------|-------|----------|----------|--------|"
	       "----------|----------|--------|\n");
	/* A discarded pass first: the CPU clocks up and the buffers are faulted in. */
	for (size_t i = 0; i < sizeof(sources) / sizeof(sources[0]); i++) {
		struct result res;
		if (sources[i].len > 0)
			(void)bench_level(1, false, sources[i].data, sources[i].len, &res);
	}
	for (size_t i = 0; i < sizeof(sources) / sizeof(sources[0]); i++)
		for (size_t l = 0; sources[i].len > 0 && l < sizeof(levels) / sizeof(levels[0]);
		     l++) {
			struct result res[2] = {};
			char name[64], lv[8], ratio[2][16];

			for (int m = 0; m < 2; m++) {
				int r = bench_level(levels[l], m == 1, sources[i].data,
						    sources[i].len, &res[m]);

				if (r < 0) {
					fprintf(stderr, "compress-bench: %s level %d: %s\n",
						sources[i].name, levels[l], strerror(-r));
					return 1;
				}
				if (res[m].ratio > 0)
					snprintf(ratio[m], sizeof(ratio[m]), "%.2f", res[m].ratio);
				else
					snprintf(ratio[m], sizeof(ratio[m]), "all 0");
			}
			snprintf(name, sizeof(name), "%s (%zu)", sources[i].name,
				 sources[i].len >> 20);
			if (levels[l] == TRANSPORT_LEVEL_OFF)
				snprintf(lv, sizeof(lv), "off");
			else
				snprintf(lv, sizeof(lv), "%d", levels[l]);
			printf("| %-30s | %5s | %8.0f | %8.0f | %6s | %8.0f | %8.0f | %6s |\n",
			       name, lv, res[0].seal_mbs, res[0].open_mbs, ratio[0],
			       res[1].seal_mbs, res[1].open_mbs, ratio[1]);
		}
	return 0;
}
