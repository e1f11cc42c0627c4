/* Unit tests of the adaptive compression level: a simulated sender (producer, compression, a
 * socket buffer draining at the link's speed, on a fake clock) feeds the controller the same
 * measurements a session does, and the tests check the level it settles on and the throughput
 * it reaches against plain sending. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/macro.h"
#include "transport/compress-internal.h"

#define MiB   (1024.0 * 1024.0)
#define FRAME (1 << 20)

/* How a kind of data compresses: ratio and one core's speed (raw bytes/s) per level, from
 * bench/transport/compress-bench.c on this machine (rounded). */
struct data {
	const char *name;
	double ratio_m3, speed_m3, ratio_1, speed_1, ratio_3, speed_3;
};

static const struct data RANDOM = {"random", 1.0, 3.2e9, 1.0, 3.0e9, 1.0, 2.6e9};
static const struct data TEXT = {"text", 2.5, 460e6, 3.3, 350e6, 3.8, 240e6};
static const struct data HEAP = {"python3 heap", 7.0, 1.14e9, 10.7, 1.03e9, 10.7, 730e6};

struct sim {
	struct transport_adapt *a;
	uint64_t now; /* ns, the controller's clock */
	double link_bps, producer_bps;
	/* A receiver that takes raw bytes at recv_bps (0: faster than anything): when that is
	 * slower than the link brings them, it drains the socket buffer instead of the link, and
	 * with report it tells the controller how long it was blocked, as the VM tunnel's
	 * credits do. drain_ratio: raw/wire of the last frame written, for what it drains. */
	double recv_bps, drain_ratio;
	double recv_comp_bps; /* its pace while compressed frames arrive, if not recv_bps */
	bool report;
	double sockbuf, buffered;
	const struct data *data;
	double raw_sent, wire_sent;
	uint64_t frames, compressed_frames;
	unsigned stream; /* the session's stream the frames go on */
};

static uint64_t sim_clock(void *userdata)
{
	return ((struct sim *)userdata)->now;
}

static void sim_advance(struct sim *s, double ns)
{
	double rate = s->link_bps, drained;
	double recv = s->recv_comp_bps > 0 && s->drain_ratio > 1.0 ? s->recv_comp_bps : s->recv_bps;
	bool paced = recv > 0 && recv / s->drain_ratio < rate;

	if (paced)
		rate = recv / s->drain_ratio;
	drained = MIN(s->buffered, rate * ns / 1e9);
	if (paced && s->report && drained > 0)
		transport_adapt_record_receiver(s->a, (uint64_t)(drained / rate * 1e9));
	s->buffered -= drained;
	s->now += (uint64_t)ns;
}

static void data_at(const struct data *d, int level, double *ratio, double *speed)
{
	if (level <= -3) {
		*ratio = d->ratio_m3;
		*speed = d->speed_m3;
	} else if (level <= 1) {
		*ratio = d->ratio_1;
		*speed = d->speed_1;
	} else if (level <= 3) {
		*ratio = d->ratio_3;
		*speed = d->speed_3;
	} else {
		*ratio = d->ratio_3 * 1.05;
		*speed = d->speed_3 / 4;
	}
}

/* One frame through one sender thread, as the session does it: produce, seal, write. */
static void sim_frame(struct transport_adapt *a, struct sim *s)
{
	int level = transport_adapt_next_level(a);
	double wire = FRAME, cns = 0, wns, space;

	sim_advance(s, FRAME / s->producer_bps * 1e9);
	if (level != TRANSPORT_LEVEL_OFF) {
		double ratio, speed;
		data_at(s->data, level, &ratio, &speed);
		cns = FRAME / speed * 1e9;
		sim_advance(s, cns);
		if (ratio > 1.0)
			wire = FRAME / ratio; /* else it goes raw */
		s->compressed_frames++;
	}
	transport_adapt_record_frame(a, s->stream, level, FRAME, (size_t)wire, (uint64_t)cns);

	/* Copying into the socket buffer at 20 GB/s, and waiting while it is full. */
	wns = wire / 20e9 * 1e9;
	space = s->sockbuf - s->buffered;
	if (wire > space)
		wns += (wire - space) / s->link_bps * 1e9;
	sim_advance(s, wns);
	s->buffered += wire;
	s->drain_ratio = FRAME / wire; /* what the buffer holds, roughly */
	transport_adapt_record_write(a, (size_t)wire + TRANSPORT_FRAME_HEADER_SIZE, (uint64_t)wns);

	s->raw_sent += FRAME;
	s->wire_sent += wire;
	s->frames++;
}

static struct sim sim_start(double link_bps, const struct data *d)
{
	return (struct sim){
		.now = 1000000000ULL,
		.link_bps = link_bps,
		.producer_bps = 3e9,
		.sockbuf = 4 * MiB,
		.data = d,
		.drain_ratio = 1.0,
	};
}

/* Raw bytes/s over frames run from the current state. */
static double sim_run(struct transport_adapt *a, struct sim *s, unsigned frames)
{
	double raw0 = s->raw_sent;
	uint64_t t0 = s->now;

	for (unsigned i = 0; i < frames; i++)
		sim_frame(a, s);
	return (s->raw_sent - raw0) * 1e9 / (double)(s->now - t0);
}

static struct transport_adapt *adapt_new(enum transport_adapt_mode mode, int level, struct sim *s)
{
	struct transport_adapt *a;

	assert_int_equal(transport_adapt_new(mode, level, 1, &a), 0);
	transport_adapt_set_clock(a, sim_clock, s);
	s->a = a;
	return a;
}

static int current_level(struct transport_adapt *a)
{
	struct transport_adapt_stats st;

	transport_adapt_get_stats(a, &st);
	return st.level;
}

/* Plain and adaptive throughput of the same sim, after the same warm-up. */
static void compare(double link_bps, const struct data *d, unsigned frames, double *ret_plain,
		    double *ret_adaptive, struct transport_adapt_stats *ret_stats)
{
	struct sim sp = sim_start(link_bps, d), sa = sim_start(link_bps, d);
	struct transport_adapt *plain = adapt_new(TRANSPORT_ADAPT_FIXED, 0, &sp);
	struct transport_adapt *adaptive = adapt_new(TRANSPORT_ADAPT_AUTO, 0, &sa);

	*ret_plain = sim_run(plain, &sp, frames);
	*ret_adaptive = sim_run(adaptive, &sa, frames);
	transport_adapt_get_stats(adaptive, ret_stats);
	printf("# %-13s link %6.0f MB/s: plain %6.0f MB/s, adaptive %6.0f MB/s (%.2fx), level "
	       "%d, link estimate %.0f MB/s, ratio %.2f, %.1f%% of frames compressed\n",
	       d->name, link_bps / 1e6, *ret_plain / 1e6, *ret_adaptive / 1e6,
	       *ret_adaptive / *ret_plain, ret_stats->level, ret_stats->link_bytes_per_sec / 1e6,
	       ret_stats->ratio, 100.0 * (double)sa.compressed_frames / (double)sa.frames);
	transport_adapt_free(plain);
	transport_adapt_free(adaptive);
}

static void test_initial(void **state)
{
	struct transport_adapt *a;
	struct transport_adapt_stats st;

	assert_int_equal(transport_adapt_new(TRANSPORT_ADAPT_AUTO, 0, 4, &a), 0);
	transport_adapt_get_stats(a, &st);
	assert_int_equal(st.level, 0); /* off until the link is measured */
	assert_true(st.link_bytes_per_sec == 0);
	assert_true(st.ratio == 1.0);
	/* The first frames try each compressing level once, then off. */
	assert_int_equal(transport_adapt_next_level(a), -3);
	assert_int_equal(transport_adapt_next_level(a), 1);
	assert_int_equal(transport_adapt_next_level(a), 3);
	assert_int_equal(transport_adapt_next_level(a), 0);
	assert_null(transport_adapt_free(a));
	assert_null(transport_adapt_free(NULL));

	assert_int_equal(transport_adapt_new(TRANSPORT_ADAPT_FIXED, 100, 1, &a), -EINVAL);
	assert_int_equal(transport_adapt_new(TRANSPORT_ADAPT_FIXED, -1000000, 1, &a), -EINVAL);
	assert_int_equal(transport_adapt_new((enum transport_adapt_mode)7, 0, 1, &a), -EINVAL);
}

/* Random data is never compressed, on a link faster or slower than compression, and costs no
 * more than 5% against plain sending. */
static void test_random_stays_off(void **state)
{
	static const double links[] = {10e9, 1.2e9, 125e6};

	for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
		double plain, adaptive;
		struct transport_adapt_stats st;

		compare(links[i], &RANDOM, 3000, &plain, &adaptive, &st);
		assert_int_equal(st.level, 0);
		assert_true(adaptive >= 0.95 * plain);
	}
}

/* Compressible data over a slow link is compressed, at least doubling throughput; on a link
 * faster than compression it is sent plain. */
static void test_compressible(void **state)
{
	double plain, adaptive;
	struct transport_adapt_stats st;

	compare(125e6, &TEXT, 1500, &plain, &adaptive, &st);
	assert_int_not_equal(st.level, 0);
	assert_true(adaptive >= 2.0 * plain);
	assert_true(st.ratio > 2.4);
	assert_true(st.link_bytes_per_sec > 100e6 && st.link_bytes_per_sec < 160e6);

	compare(125e6, &HEAP, 3000, &plain, &adaptive, &st);
	assert_int_not_equal(st.level, 0);
	assert_true(adaptive >= 4.0 * plain);

	/* 10 Gbit/s: text compresses at 350 MB/s, off runs at the producer's 3 GB/s. */
	compare(1.25e9 * 8, &TEXT, 3000, &plain, &adaptive, &st);
	assert_int_equal(st.level, 0);
	assert_true(adaptive >= 0.95 * plain);

	/* 2.5 Gbit/s and the heap: level -3 or 1 (about 1 GB/s a core) against 312 MB/s plain. */
	compare(312e6, &HEAP, 3000, &plain, &adaptive, &st);
	assert_int_not_equal(st.level, 0);
	assert_true(adaptive >= 2.2 * plain); /* the producer costs 0.33 ms a frame too */
}

/* A session that opens with a quiet handshake (a few small messages a window, that compress; the
 * first ones are the survey's) and then carries compressible data paced by its producer, well
 * below the link: off all along. The handshake's windows only bound the link from below (a few
 * hundred KB/s). Taken for the link, they made every compressing level look like a gain: the
 * controller compressed a third of the frames, at a CPU cost that slows the rest of the host. */
static void test_quiet_start(void **state)
{
	struct sim s = sim_start(10e9, &TEXT);
	struct transport_adapt *a = adapt_new(TRANSPORT_ADAPT_AUTO, 0, &s);
	double t;

	for (unsigned i = 0; i < 8; i++) {
		int level = transport_adapt_next_level(a);

		size_t wire = level ? 3000 : 9000;

		transport_adapt_record_frame(a, 0, level, 9000, wire, 40000);
		sim_advance(&s, 60e6);
		transport_adapt_record_write(a, wire + TRANSPORT_FRAME_HEADER_SIZE, 5000);
	}
	s.producer_bps = 300e6;
	t = sim_run(a, &s, 600);
	printf("# text, producer 300 MB/s, 10 GB/s link after a quiet start: level %d, %.0f MB/s, "
	       "%llu of %llu frames compressed\n",
	       current_level(a), t / 1e6, (unsigned long long)s.compressed_frames,
	       (unsigned long long)s.frames);
	assert_int_equal(current_level(a), 0);
	assert_true(s.compressed_frames * 20 < s.frames); /* the survey and probes only */
	assert_true(t > 0.9 * 300e6);
	transport_adapt_free(a);
}

/* Compressible data, a receiver taking raw bytes at recv_bps: the level and raw bytes/s the
 * controller settles on, with or without the receiver's reports. */
static double receiver_run(double link_bps, double recv_bps, double recv_comp_bps, bool report,
			   int *ret_level, double *ret_compressed)
{
	struct sim s = sim_start(link_bps, &TEXT);
	struct transport_adapt *a = adapt_new(TRANSPORT_ADAPT_AUTO, 0, &s);
	double t;

	s.recv_bps = recv_bps;
	s.recv_comp_bps = recv_comp_bps;
	s.report = report;
	sim_run(a, &s, 300);
	s.frames = s.compressed_frames = 0;
	t = sim_run(a, &s, 1500);
	*ret_level = current_level(a);
	*ret_compressed = (double)s.compressed_frames / (double)s.frames;
	printf("# text, link %5.0f MB/s, receiver %4.0f MB/s (%4.0f MB/s compressed)%s: level %d, "
	       "%.0f MB/s, %.0f%% of frames compressed\n",
	       link_bps / 1e6, recv_bps / 1e6, (recv_comp_bps ?: recv_bps) / 1e6,
	       report ? "" : " (unreported)", *ret_level, t / 1e6, 100 * *ret_compressed);
	transport_adapt_free(a);
	return t;
}

/* A receiver slower than the link (a VM move's destination QEMU on a fast link) blocks the
 * writes just as a slow link does. Told so, the controller keeps compression off, which could
 * only cost CPU; untold, it compresses for nothing. A link slower than the receiver keeps
 * compression on, also where the receiver caps what it gains. */
static void test_receiver(void **state)
{
	double t, compressed;
	int level;

	t = receiver_run(10e9, 300e6, 0, true, &level, &compressed);
	assert_int_equal(level, 0);
	assert_true(compressed < 0.05); /* probes only */
	assert_true(t > 0.95 * 300e6);
	t = receiver_run(10e9, 300e6, 0, false, &level, &compressed);
	assert_true(level != 0 && compressed > 0.5); /* the control */
	assert_true(t > 0.95 * 300e6);

	t = receiver_run(125e6, 600e6, 0, true, &level, &compressed);
	assert_int_not_equal(level, 0);
	assert_true(t > 2.0 * 125e6);
	t = receiver_run(125e6, 200e6, 0, true, &level, &compressed);
	assert_int_not_equal(level, 0);
	assert_true(t > 1.4 * 125e6);

	/* Sender and receiver on shared CPUs: compression slows the receiver (220 -> 150 MB/s).
	 * On a fast link off wins, now and then tried again; on 1 Gbit/s compression still does. */
	t = receiver_run(10e9, 220e6, 150e6, true, &level, &compressed);
	assert_int_equal(level, 0);
	assert_true(compressed < 0.1);
	assert_true(t > 0.9 * 220e6);
	t = receiver_run(125e6, 220e6, 150e6, true, &level, &compressed);
	assert_int_not_equal(level, 0);
	assert_true(t > 1.15 * 125e6);
}

/* The level follows the data and the link as they change. */
static void test_changing_conditions(void **state)
{
	struct sim s = sim_start(125e6, &TEXT);
	struct transport_adapt *a = adapt_new(TRANSPORT_ADAPT_AUTO, 0, &s);
	double t;

	t = sim_run(a, &s, 1000);
	assert_int_not_equal(current_level(a), 0);
	printf("# text, 1 Gbit/s: level %d, %.0f MB/s\n", current_level(a), t / 1e6);

	s.data = &RANDOM;
	sim_run(a, &s, 20);
	assert_int_equal(current_level(a), 0); /* the running level's ratio shows it at once */
	t = sim_run(a, &s, 1000);
	assert_int_equal(current_level(a), 0);
	printf("# random, 1 Gbit/s: level %d, %.0f MB/s\n", current_level(a), t / 1e6);

	s.data = &TEXT;
	t = sim_run(a, &s, 1000); /* found by a probe within PROBE_MAX frames */
	assert_int_not_equal(current_level(a), 0);
	printf("# text again: level %d, %.0f MB/s\n", current_level(a), t / 1e6);

	s.link_bps = 10e9; /* a faster path: compression is now the bottleneck */
	t = sim_run(a, &s, 3000);
	assert_int_equal(current_level(a), 0);
	t = sim_run(a, &s, 1000);
	assert_true(t > 2e9);
	printf("# text, 10 GB/s: level %d, %.0f MB/s\n", current_level(a), t / 1e6);

	s.link_bps = 125e6; /* and back: off fills the link again */
	t = sim_run(a, &s, 1000);
	assert_int_not_equal(current_level(a), 0);
	printf("# text, 1 Gbit/s again: level %d, %.0f MB/s\n", current_level(a), t / 1e6);

	transport_adapt_free(a);
}

/* Probes stay rare once the choice is settled. */
static void test_probe_rate(void **state)
{
	struct sim s = sim_start(10e9, &RANDOM);
	struct transport_adapt *a = adapt_new(TRANSPORT_ADAPT_AUTO, 0, &s);

	sim_run(a, &s, 200);
	s.compressed_frames = 0;
	sim_run(a, &s, 2560);
	assert_true(s.compressed_frames >= 5 && s.compressed_frames <= 12);
	transport_adapt_free(a);
}

static void test_fixed(void **state)
{
	static const int fixed[] = {0, 3, 6, -7};

	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
		struct sim s = sim_start(125e6, i % 2 ? &RANDOM : &TEXT);
		struct transport_adapt *a = adapt_new(TRANSPORT_ADAPT_FIXED, fixed[i], &s);
		struct transport_adapt_stats st;

		for (unsigned f = 0; f < 500; f++) {
			assert_int_equal(transport_adapt_next_level(a), fixed[i]);
			sim_frame(a, &s); /* its own call to next_level gives the same */
		}
		transport_adapt_get_stats(a, &st);
		assert_int_equal(st.level, fixed[i]);
		/* Level 6 on text cannot fill the link: its estimate is a lower bound then. */
		assert_true(st.link_bytes_per_sec < 160e6);
		if (fixed[i] != 6)
			assert_true(st.link_bytes_per_sec > 100e6);
		if (fixed[i] == 0 || s.data == &RANDOM)
			assert_true(st.ratio == 1.0);
		else
			assert_true(st.ratio > 3.0);
		transport_adapt_free(a);
	}
}

/* Measurements that say nothing do not move the estimates. */
static void test_ignored_measurements(void **state)
{
	struct sim s = sim_start(125e6, &TEXT);
	struct transport_adapt *a = adapt_new(TRANSPORT_ADAPT_AUTO, 0, &s);
	struct transport_adapt_stats st;

	/* A slow link measured off. */
	s.data = &RANDOM;
	sim_run(a, &s, 100);
	assert_int_equal(current_level(a), 0);
	/* Zero frames (no wire bytes), tiny frames, unknown levels and off frames claiming a great
	 * ratio change nothing. */
	for (unsigned i = 0; i < 10; i++) {
		transport_adapt_record_frame(a, 0, 1, FRAME, 0, 0);
		transport_adapt_record_frame(a, 0, 1, 100, 1, 1);
		transport_adapt_record_frame(a, 0, 7, FRAME, 1000, 1000);
		transport_adapt_record_frame(a, 0, 0, FRAME, 1000, 0);
	}
	transport_adapt_get_stats(a, &st);
	assert_int_equal(st.level, 0);
	/* While a real one does. */
	for (unsigned i = 0; i < 10; i++)
		transport_adapt_record_frame(a, 0, 1, FRAME, FRAME / 4, 1000000);
	assert_int_equal(current_level(a), 1);
	transport_adapt_free(a);
}

/* W, the streams compressing in parallel, counts those that carry the data. */
static void test_workers(void **state)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	struct sim s = sim_start(1.5e9, &HEAP);
	struct transport_adapt *a;
	struct transport_adapt_stats st;

	/* A session of four streams where one carries the data and the others a few small
	 * messages (a VM move: QEMU's stream beside libvirt's): W is 1. A link faster than one
	 * core compresses (1.03 GB/s at level 1) stays uncompressed, where W = 4 (or the CPUs)
	 * made compression look 2-4x faster than it is. */
	assert_int_equal(transport_adapt_new(TRANSPORT_ADAPT_AUTO, 0, 4, &a), 0);
	transport_adapt_set_clock(a, sim_clock, &s);
	s.a = a;
	for (unsigned i = 0; i < 1000; i++) {
		sim_frame(a, &s);
		if (i % 8 == 0)
			transport_adapt_record_frame(a, 1 + i % 3, TRANSPORT_LEVEL_OFF, 2048, 2048,
						     0);
		if (i == 200)
			s.compressed_frames = 0;
	}
	transport_adapt_get_stats(a, &st);
	printf("# one busy stream of four: W %u, level %d, %.1f%% of frames compressed\n",
	       st.workers, st.level, 100.0 * (double)s.compressed_frames / 800.0);
	assert_int_equal(st.workers, 1);
	assert_int_equal(st.level, 0);
	assert_true(s.compressed_frames < 800 / 20);
	/* Four streams with a share each: W is four, or the CPUs. */
	for (unsigned i = 0; i < 400; i++) {
		s.stream = i % 4;
		sim_frame(a, &s);
	}
	transport_adapt_get_stats(a, &st);
	assert_int_equal(st.workers, (unsigned)MIN(4L, MAX(cpus, 1L)));
	transport_adapt_free(a);
}

struct hammer {
	struct transport_adapt *a;
	unsigned seed;
};

static void *hammer_thread(void *arg)
{
	struct hammer *h = arg;

	for (unsigned i = 0; i < 20000; i++) {
		int level = transport_adapt_next_level(h->a);
		struct transport_adapt_stats st;

		transport_adapt_record_frame(h->a, h->seed, level, 65536,
					     65536 / (1 + (i + h->seed) % 4), 20000 + i % 1000);
		transport_adapt_record_write(h->a, 65536, (i % 3) * 100000);
		if (i % 100 == 0)
			transport_adapt_get_stats(h->a, &st);
	}
	return NULL;
}

/* Concurrent senders on the real clock (ASan/UBSan and the invariants below must hold). */
static void test_threads(void **state)
{
	struct transport_adapt *a;
	struct hammer h[4];
	pthread_t t[4];
	struct transport_adapt_stats st;

	assert_int_equal(transport_adapt_new(TRANSPORT_ADAPT_AUTO, 0, 4, &a), 0);
	for (unsigned i = 0; i < 4; i++) {
		h[i] = (struct hammer){a, i};
		assert_int_equal(pthread_create(&t[i], NULL, hammer_thread, &h[i]), 0);
	}
	for (unsigned i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	transport_adapt_get_stats(a, &st);
	assert_true(st.level == 0 || st.level == -3 || st.level == 1 || st.level == 3);
	assert_true(st.ratio >= 1.0);
	assert_true(st.link_bytes_per_sec >= 0);
	transport_adapt_free(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_initial),
		cmocka_unit_test(test_random_stays_off),
		cmocka_unit_test(test_compressible),
		cmocka_unit_test(test_quiet_start),
		cmocka_unit_test(test_receiver),
		cmocka_unit_test(test_changing_conditions),
		cmocka_unit_test(test_probe_rate),
		cmocka_unit_test(test_fixed),
		cmocka_unit_test(test_ignored_measurements),
		cmocka_unit_test(test_workers),
		cmocka_unit_test(test_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
