/* The adaptive compression level: a throughput model fed by what the sender measures (each
 * level's ratio and speed on the data actually sent, and how fast the link drains wire bytes).
 *
 * Model. At level L the session moves raw bytes at about
 *	T(L) = min(C * ratio(L), W * speed(L))
 * where C is the link's wire throughput (bytes/s), W the number of threads compressing in
 * parallel, and speed(L) the raw bytes/s one of them compresses at level L. Each stream seals
 * in its own thread, but a session's streams need not all be busy (a VM move carries QEMU's
 * stream beside libvirt's few messages): W counts the streams that carried at least
 * 1/ACTIVE_SHARE of the last window's raw bytes, at most the session's streams and the CPUs.
 * It starts at 1. Off has ratio 1 and
 * no compression cost: T(off) = C. The controller runs the level with the largest T, switching
 * only for a gain of SWITCH_MARGIN; a level whose ratio is below MIN_RATIO is never chosen.
 *
 * Ratio and speed. Per level, exponentially decayed sums of raw bytes, wire bytes and
 * compression time (so ratio and speed are byte-weighted). The running level is measured by
 * every frame; now and then (1 frame in PROBE_FIRST, backing off to 1 in PROBE_MAX while the
 * choice stays put) a frame goes out at a neighbouring level (the cheapest compressing level
 * when off), so the other estimates follow the data. Zero frames say nothing about a level.
 *
 * Link. A write that returns at once only says the socket buffer had room; a write that blocks
 * lasts as long as the link takes to drain it. So the link is measured over wall-clock windows
 * (WINDOW_NS): busy = sum of write times / window length is how many senders were blocked on
 * average. When busy >= SATURATED_BUSY the link set the pace and C = wire bytes / window length.
 * Otherwise the window only says C >= that rate, and
 *  - if the window ran off: off is not limited by the link, so compression cannot raise
 *    throughput: C counts as unbounded (off wins) until a window saturates again;
 *  - if it ran compressed: compression (or the producer) set the pace and the link may have
 *    become faster than our estimate. After explore_after such windows the controller runs
 *    off for EXPLORE_WINDOWS windows to measure the link again (the first one only refills the
 *    socket buffers), and backs off while exploring does not change the choice, so that its
 *    cost stays small when compression is right;
 *  - if neither (a quiet window of a few frames, most of them the survey's or a probe's, such
 *    as a session's opening handshake), it says nothing: C stays as it was.
 * Receiver. A receiving application that cannot keep up (a destination QEMU taking the stream
 * slower than the link brings it) closes the link's window just as a slow link does: the writes
 * block, yet compression cannot help, for the receiver takes raw bytes. Where the peer reports
 * how long its application was blocked handing data on (transport_adapt_record_receiver), a
 * window with that time >= SATURATED_BUSY of its length was paced by the receiver: it measures
 * R, the raw bytes/s the receiver takes, and nothing of the link; any other window says R is at
 * least its raw rate. R is measured apart for off and for compression: the receiver's pace can
 * depend on it, on a host whose CPUs the sender's compression or the receiver's decompression
 * take from the receiving application. The level the model likes best runs if, capped by
 * R(comp), it beats off capped by R(off): min(T(L), R(comp)) against min(C, R(off)). So a
 * receiver slower than the link turns compression off, while a link slower than the receiver
 * keeps it. An R not refreshed for RECV_FORGET windows is forgotten, so compression is tried
 * again now and then.
 * Start: off, with the first frames surveying each compressing level once. Off measures the
 * link within the first window (a slow link fills the socket buffer at once); starting
 * compressed could not tell a fast link from slow compression without a costly exploration.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <zstd.h>

#include "common/macro.h"
#include "transport/compress-internal.h"
#include "transport/transport.h"

/* In order of CPU cost. Measured with bench/transport/compress-bench.c (one core, 1 MiB frames,
 * MB/s and ratio on a python3 heap / a generated memory mix): -3 1140/7.1, 535/2.8; 1 1029/10.7,
 * 453/3.2; 3 732/10.7, 345/3.3; 6 197/11.7, 119/3.3, and only 330 MB/s on random data. Below -3
 * the speed hardly grows while the ratio drops; 6 pays only on links slower than ~200 Mbit/s
 * and makes every probe expensive, so the candidates stop at 3. */
static const int levels[] = {TRANSPORT_LEVEL_OFF, -3, 1, 3};
#define N_LEVELS   ELEMENTSOF(levels)
#define FIXED_SLOT N_LEVELS /* estimates for a fixed level that is not a candidate */

#define WINDOW_NS      (100ULL * 1000 * 1000)
#define SATURATED_BUSY 0.5
#define LINK_ALPHA     0.5  /* weight of a new saturated window in the link estimate */
#define RECV_ALPHA     0.25 /* weight of a new receiver-paced window in the receiver's */
#define RECV_FORGET    30   /* windows after which an unrefreshed receiver estimate is dropped */
#define EST_KEEP       0.75 /* weight of the old sums in the per-level estimates */
#define MIN_EST_RAW    4096 /* smaller frames time too noisily to count */
#define MIN_RATIO      1.1
#define SWITCH_MARGIN  1.05
#define ACTIVE_SHARE   8
#define PROBE_FIRST    32
#define PROBE_MAX      256
#define EXPLORE_FIRST  10 /* windows */
#define EXPLORE_MAX    80
/* The first window off only fills the socket buffers (which would inflate the link estimate);
 * the second one measures. */
#define EXPLORE_WINDOWS 2

enum link_state {
	LINK_UNKNOWN,	/* no window closed yet */
	LINK_MEASURED,	/* link_bps is the link's throughput (or a lower bound of it) */
	LINK_UNBOUNDED, /* off did not fill the link: it is faster than we produce */
};

struct level_est {
	double raw, wire, ns; /* decayed sums */
	bool known;
};

struct transport_adapt {
	pthread_mutex_t lock;
	enum transport_adapt_mode mode;
	int fixed_level;
	double workers;	      /* W: streams busy in the last window (see Model) */
	unsigned max_workers; /* the session's streams, at most the CPUs */
	uint64_t (*clock_ns)(void *userdata);
	void *clock_userdata;

	unsigned cur; /* index into levels[] */
	struct level_est est[N_LEVELS + 1];

	enum link_state link;
	double link_bps;
	/* The raw bytes/s the receiver took while off ran ([0]) and while compression did ([1]),
	 * see Receiver. */
	struct {
		double bps;
		unsigned age; /* windows since it was measured */
		bool known;
	} recv[2];

	bool win_open;
	uint64_t win_start, win_bytes, win_busy_ns, win_frames, win_off_frames;
	uint64_t win_raw, win_recv_busy_ns;
	uint64_t win_stream_raw[TRANSPORT_MAX_STREAMS];

	unsigned unsat_windows, explore_after;
	unsigned exploring; /* windows left to run off: EXPLORE_WINDOWS, then down to 0 */

	uint64_t frames, next_probe;
	unsigned probe_interval, probe_turn;
	unsigned survey; /* compressing levels still to try once at the start */
};

static uint64_t monotonic_ns(void *userdata)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static bool level_valid(int level)
{
	return level == TRANSPORT_LEVEL_OFF ||
	       (level >= ZSTD_minCLevel() && level <= ZSTD_maxCLevel());
}

int transport_adapt_new(enum transport_adapt_mode mode, int fixed_level, unsigned n_workers,
			struct transport_adapt **ret)
{
	struct transport_adapt *a;
	long cpus;

	if (mode != TRANSPORT_ADAPT_AUTO && mode != TRANSPORT_ADAPT_FIXED)
		return -EINVAL;
	if (mode == TRANSPORT_ADAPT_FIXED && !level_valid(fixed_level))
		return -EINVAL;

	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	pthread_mutex_init(&a->lock, NULL);
	a->mode = mode;
	a->fixed_level = fixed_level;
	a->max_workers = MAX(n_workers, 1U);
	cpus = sysconf(_SC_NPROCESSORS_ONLN);
	if (cpus > 0 && (unsigned long)cpus < a->max_workers)
		a->max_workers = (unsigned)cpus;
	a->workers = 1;
	a->clock_ns = monotonic_ns;
	a->cur = 0;
	a->link = LINK_UNKNOWN;
	a->explore_after = EXPLORE_FIRST;
	a->probe_interval = PROBE_FIRST;
	a->survey = N_LEVELS - 1;
	a->next_probe = PROBE_FIRST;
	*ret = a;
	return 0;
}

struct transport_adapt *transport_adapt_free(struct transport_adapt *a)
{
	if (!a)
		return NULL;
	pthread_mutex_destroy(&a->lock);
	free(a);
	return NULL;
}

void transport_adapt_set_clock(struct transport_adapt *a, uint64_t (*clock_ns)(void *userdata),
			       void *userdata)
{
	pthread_mutex_lock(&a->lock);
	a->clock_ns = clock_ns ? clock_ns : monotonic_ns;
	a->clock_userdata = userdata;
	pthread_mutex_unlock(&a->lock);
}

static int slot_of(const struct transport_adapt *a, int level)
{
	for (unsigned i = 0; i < N_LEVELS; i++)
		if (levels[i] == level)
			return (int)i;
	if (a->mode == TRANSPORT_ADAPT_FIXED && level == a->fixed_level)
		return FIXED_SLOT;
	return -1;
}

static double est_ratio(const struct level_est *e)
{
	return e->wire > 0 ? e->raw / e->wire : 1.0;
}

/* Raw bytes/s all workers together compress at this level. */
static double est_speed(const struct transport_adapt *a, const struct level_est *e)
{
	return e->ns > 0 ? a->workers * e->raw * 1e9 / e->ns : INFINITY;
}

/* T(level) of the model without the receiver, or -1 if the level cannot be chosen (unmeasured,
 * or no gain). */
static double model(const struct transport_adapt *a, unsigned i)
{
	const struct level_est *e = &a->est[i];
	double c = a->link == LINK_MEASURED ? a->link_bps : INFINITY;

	if (levels[i] == TRANSPORT_LEVEL_OFF)
		return c;
	if (!e->known || est_ratio(e) < MIN_RATIO)
		return -1;
	return MIN(c * est_ratio(e), est_speed(a, e));
}

/* And capped by the receiver's pace where it was measured. */
static double throughput(const struct transport_adapt *a, unsigned i)
{
	unsigned k = levels[i] != TRANSPORT_LEVEL_OFF;
	double t = model(a, i);

	return t >= 0 && a->recv[k].known ? MIN(t, a->recv[k].bps) : t;
}

static void set_level(struct transport_adapt *a, unsigned i)
{
	if (i == a->cur)
		return;
	a->cur = i;
	a->probe_interval = PROBE_FIRST;
	a->next_probe = a->frames + PROBE_FIRST;
	a->explore_after = EXPLORE_FIRST;
	a->unsat_windows = 0;
}

static void reevaluate(struct transport_adapt *a)
{
	unsigned best = 0, comp = 0;
	double best_t, cur_t, comp_m = -1;

	if (a->mode != TRANSPORT_ADAPT_AUTO)
		return;

	if (a->link == LINK_UNKNOWN)
		return; /* nothing to compare with yet: stay off */

	/* The compressing level the model likes best (the cheapest wins ties); it runs if, capped
	 * by the receiver, it beats off. */
	for (unsigned i = 1; i < N_LEVELS; i++)
		if (model(a, i) > comp_m) {
			comp = i;
			comp_m = model(a, i);
		}
	best_t = throughput(a, 0);
	if (comp > 0 && throughput(a, comp) > best_t) {
		best = comp;
		best_t = throughput(a, comp);
	}
	cur_t = throughput(a, a->cur);
	if (best != a->cur && (cur_t < 0 || best_t > cur_t * SWITCH_MARGIN))
		set_level(a, best);
}

static unsigned probe_slot(struct transport_adapt *a)
{
	unsigned lo, hi;

	if (a->cur == 0)
		return 1; /* the cheapest compressing level tells whether the data compresses */
	lo = a->cur > 1 ? a->cur - 1 : a->cur;
	hi = a->cur + 1 < N_LEVELS ? a->cur + 1 : a->cur;
	if (lo == a->cur)
		return hi;
	if (hi == a->cur)
		return lo;
	return (a->probe_turn++ & 1) ? hi : lo;
}

int transport_adapt_next_level(struct transport_adapt *a)
{
	int level;

	pthread_mutex_lock(&a->lock);
	if (a->mode == TRANSPORT_ADAPT_FIXED)
		level = a->fixed_level;
	else if (a->exploring)
		level = TRANSPORT_LEVEL_OFF;
	else if (a->survey > 0)
		level = levels[N_LEVELS - a->survey--];
	else if (++a->frames >= a->next_probe) {
		level = levels[probe_slot(a)];
		a->probe_interval = MIN(a->probe_interval * 2, (unsigned)PROBE_MAX);
		a->next_probe = a->frames + a->probe_interval;
	} else
		level = levels[a->cur];
	a->win_frames++;
	if (level == TRANSPORT_LEVEL_OFF)
		a->win_off_frames++;
	pthread_mutex_unlock(&a->lock);
	return level;
}

void transport_adapt_record_frame(struct transport_adapt *a, unsigned stream, int level, size_t raw,
				  size_t wire, uint64_t compress_ns)
{
	struct level_est *e;
	int slot;

	pthread_mutex_lock(&a->lock);
	a->win_raw += raw;
	if (stream < TRANSPORT_MAX_STREAMS)
		a->win_stream_raw[stream] += raw;
	/* Off is ratio 1 by definition; zero frames skip compression whatever the level. */
	if (level == TRANSPORT_LEVEL_OFF || raw < MIN_EST_RAW || wire == 0) {
		pthread_mutex_unlock(&a->lock);
		return;
	}
	slot = slot_of(a, level);
	if (slot >= 0) {
		e = &a->est[slot];
		e->raw = e->raw * EST_KEEP + (double)raw;
		e->wire = e->wire * EST_KEEP + (double)wire;
		e->ns = e->ns * EST_KEEP + (double)compress_ns;
		e->known = true;
		if (!a->exploring)
			reevaluate(a);
	}
	pthread_mutex_unlock(&a->lock);
}

/* W from the window's shares of raw bytes; a window of a few small frames leaves it as it was. */
static void count_workers(struct transport_adapt *a)
{
	unsigned active = 0;

	if (a->win_raw < 4 * MIN_EST_RAW)
		return;
	for (unsigned i = 0; i < TRANSPORT_MAX_STREAMS; i++)
		if (a->win_stream_raw[i] > 0 && a->win_stream_raw[i] * ACTIVE_SHARE >= a->win_raw)
			active++;
	a->workers = CLAMP(active, 1U, a->max_workers);
}

static void close_window(struct transport_adapt *a, uint64_t now)
{
	double wall = (double)(now - a->win_start);
	double achieved = (double)a->win_bytes * 1e9 / wall;
	double busy = (double)a->win_busy_ns / wall;
	double raw_rate = (double)a->win_raw * 1e9 / wall;
	bool receiver_paced = (double)a->win_recv_busy_ns / wall >= SATURATED_BUSY;
	bool ran_off = a->win_frames > 0 ? a->win_off_frames * 4 >= a->win_frames * 3
					 : levels[a->cur] == TRANSPORT_LEVEL_OFF;
	bool explored = a->exploring > 0;

	count_workers(a);
	if (a->exploring == EXPLORE_WINDOWS) {
		a->exploring--;
		goto next_window;
	}

	/* The receiver's pace, off or compressed as the window ran (probes alone say nothing). */
	for (unsigned i = 0; i < 2; i++)
		if (a->recv[i].known && ++a->recv[i].age > RECV_FORGET)
			a->recv[i].known = false;
	if (ran_off || a->cur != 0) {
		unsigned i = ran_off ? 0 : 1;

		if (receiver_paced) {
			a->recv[i].bps =
				a->recv[i].known
					? a->recv[i].bps + RECV_ALPHA * (raw_rate - a->recv[i].bps)
					: raw_rate;
			a->recv[i].known = true;
			a->recv[i].age = 0;
		} else if (a->recv[i].known)
			a->recv[i].bps = MAX(a->recv[i].bps, raw_rate);
	}

	if (receiver_paced) {
		/* Nothing to learn of the link. */
	} else if (busy >= SATURATED_BUSY) {
		if (a->link == LINK_MEASURED)
			a->link_bps += LINK_ALPHA * (achieved - a->link_bps);
		else
			a->link_bps = achieved;
		a->link = LINK_MEASURED;
		a->unsat_windows = 0;
	} else if (ran_off) {
		a->link = LINK_UNBOUNDED;
		a->link_bps = achieved; /* for the stats: a lower bound */
	} else if (a->link == LINK_MEASURED) {
		/* Compression or the producer set the pace; the link drains at least this. */
		a->link_bps = MAX(a->link_bps, achieved);
		a->unsat_windows++;
	}
	/* Else a window neither saturated nor run off: a quiet one where the first frames' survey
	 * or a probe made up much of the few frames sent (a session's opening handshake). It only
	 * bounds the link from below, and taking that bound for the link would make compression
	 * look like a gain on any link: the state stays as it was. */

	a->exploring = 0;
	if (a->mode == TRANSPORT_ADAPT_AUTO) {
		reevaluate(a);
		if (explored && levels[a->cur] != TRANSPORT_LEVEL_OFF)
			/* Compression still wins: look again later. */
			a->explore_after = MIN(a->explore_after * 2, (unsigned)EXPLORE_MAX);
		if (levels[a->cur] != TRANSPORT_LEVEL_OFF && a->unsat_windows >= a->explore_after) {
			a->exploring = EXPLORE_WINDOWS;
			a->unsat_windows = 0;
		}
	}
next_window:
	a->win_start = now;
	a->win_bytes = a->win_busy_ns = a->win_frames = a->win_off_frames = 0;
	a->win_raw = a->win_recv_busy_ns = 0;
	memset(a->win_stream_raw, 0, sizeof(a->win_stream_raw));
}

void transport_adapt_record_write(struct transport_adapt *a, size_t wire, uint64_t write_ns)
{
	uint64_t now;

	pthread_mutex_lock(&a->lock);
	now = a->clock_ns(a->clock_userdata);
	if (!a->win_open) {
		/* The first write's own duration belongs to the first window. */
		a->win_start = now > write_ns ? now - write_ns : 0;
		a->win_open = true;
	}
	a->win_bytes += wire;
	a->win_busy_ns += write_ns;
	if (now > a->win_start && now - a->win_start >= WINDOW_NS)
		close_window(a, now);
	pthread_mutex_unlock(&a->lock);
}

void transport_adapt_record_receiver(struct transport_adapt *a, uint64_t blocked_ns)
{
	pthread_mutex_lock(&a->lock);
	a->win_recv_busy_ns += blocked_ns;
	pthread_mutex_unlock(&a->lock);
}

void transport_adapt_get_stats(struct transport_adapt *a, struct transport_adapt_stats *ret)
{
	int level, slot;

	pthread_mutex_lock(&a->lock);
	level = a->mode == TRANSPORT_ADAPT_FIXED ? a->fixed_level : levels[a->cur];
	slot = slot_of(a, level);
	*ret = (struct transport_adapt_stats){
		.level = level,
		.link_bytes_per_sec = a->link == LINK_UNKNOWN ? 0 : a->link_bps,
		.workers = (unsigned)a->workers,
		.ratio = level != TRANSPORT_LEVEL_OFF && slot >= 0 && a->est[slot].known
				 ? est_ratio(&a->est[slot])
				 : 1.0,
	};
	pthread_mutex_unlock(&a->lock);
}
