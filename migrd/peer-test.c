/* peer-test: a real session to a peer, measured end to end and verified bit-exact. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/common.h"
#include "migrd/peer-test.h"

#define SOURCE_MAX  (1ULL << 30)
#define RANDOM_POOL (64U << 20)

void peer_test_free(void *p)
{
	struct peer_test *t = p;

	if (!t)
		return;
	json_decref(t->params.args);
	free(t->source);
	free(t);
}

static double cpu_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double mono_seconds(void)
{
	return (double)now_usec(CLOCK_MONOTONIC) / 1e6;
}

/* The bytes to send, cycled: a pool made once per test. */
static int make_source(const char *source, size_t frame, uint8_t **ret, size_t *ret_len,
		       char **ret_message)
{
	uint8_t *buf;
	size_t len;

	if (streq(source, "zeros")) {
		len = frame;
		buf = calloc(1, len);
	} else if (streq(source, "random")) {
		uint64_t x = 0x9e3779b97f4a7c15ULL ^ (uint64_t)now_usec(CLOCK_REALTIME);
		len = RANDOM_POOL;
		buf = malloc(len);
		for (size_t i = 0; buf && i < len; i += 8) {
			/* xorshift64*: incompressible for zstd, cheap to make */
			x ^= x >> 12;
			x ^= x << 25;
			x ^= x >> 27;
			uint64_t v = x * 0x2545F4914F6CDD1DULL;
			memcpy(buf + i, &v, 8);
		}
	} else {
		char *text = NULL;
		struct stat st;
		int r;

		if (source[0] != '/' || stat(source, &st) < 0 || !S_ISREG(st.st_mode)) {
			if (asprintf(
				    ret_message,
				    "source must be zeros, random or an absolute path of a regular "
				    "file, not '%s'",
				    source) < 0)
				*ret_message = NULL;
			return -EINVAL;
		}
		r = read_full_file(source, SOURCE_MAX, &text, &len);
		if (r < 0 || len == 0) {
			free(text);
			if (asprintf(ret_message, "cannot read %s: %s", source,
				     r < 0 ? strerror(-r) : "empty file") < 0)
				*ret_message = NULL;
			return r < 0 ? r : -EINVAL;
		}
		buf = (uint8_t *)text;
	}
	if (!buf)
		return -ENOMEM;
	*ret = buf;
	*ret_len = len;
	return 0;
}

int peer_test_run(void *arg, json_t **ret_result, const char **ret_code, char **ret_message)
{
	struct peer_test *t = arg;
	struct transport_session *s = NULL;
	_cleanup_free_ uint8_t *pool = NULL;
	_cleanup_free_ XXH3_state_t **states = NULL;
	_cleanup_json_ json_t *reply = NULL;
	struct transport_stats stats;
	const size_t frame = 1024 * 1024;
	size_t pool_len, off = 0;
	uint64_t sent = 0;
	double t0, t1, c0, c1;
	char *error = NULL;
	json_t *digests;
	bool verified = true;
	int r;

	*ret_code = "internal";
	r = make_source(t->source, frame, &pool, &pool_len, ret_message);
	if (r < 0) {
		*ret_code = "invalid-params";
		return r;
	}
	c0 = cpu_seconds();
	t0 = mono_seconds();
	r = transport_session_connect(t->ctx, t->peer, (struct sockaddr *)&t->addr, t->addr_len,
				      &t->params, &s, &error);
	if (r < 0) {
		*ret_code = "peer-unreachable";
		*ret_message = error;
		return r;
	}
	states = calloc(t->params.n_streams, sizeof(*states));
	for (unsigned i = 0; states && i < t->params.n_streams; i++) {
		states[i] = XXH3_createState();
		if (states[i])
			XXH3_64bits_reset(states[i]);
	}
	while (sent < t->size && r >= 0) {
		size_t n = MIN(frame, t->size - sent);
		uint8_t *chunk = pool + off;

		if (off + n > pool_len) {
			off = 0;
			chunk = pool;
			n = MIN(n, pool_len);
		}
		/* The pool outlives the session: no copy, nothing to release. */
		r = transport_session_send_borrowed(s, TRANSPORT_ANY_STREAM, chunk, n, NULL, NULL);
		if (r >= 0) {
			if (states && states[r])
				XXH3_64bits_update(states[r], chunk, n);
			sent += n;
			off = (off + n) % pool_len;
		}
	}
	if (r >= 0)
		r = transport_session_finish(s);
	if (r >= 0)
		r = transport_session_recv_control(s, 600 * USEC_PER_SEC, &reply);
	t1 = mono_seconds();
	c1 = cpu_seconds();
	if (r < 0) {
		const char *m = NULL;
		(void)transport_session_error(s, &m);
		*ret_code = "transfer-failed";
		if (asprintf(ret_message, "peer-test to %s failed after %" PRIu64 " bytes: %s",
			     t->peer, sent, m ?: strerror(-r)) < 0)
			*ret_message = NULL;
		transport_session_free(s);
		for (unsigned i = 0; states && i < t->params.n_streams; i++)
			XXH3_freeState(states[i]);
		return r;
	}
	digests = json_object_get(reply, "digests");
	for (unsigned i = 0; i < t->params.n_streams; i++) {
		char want[17];
		json_t *d = json_array_get(digests, i);

		snprintf(want, sizeof(want), "%016" PRIx64,
			 states && states[i] ? XXH3_64bits_digest(states[i]) : 0);
		if (!json_is_string(d) || !streq(json_string_value(d), want))
			verified = false;
		if (states)
			XXH3_freeState(states[i]);
	}
	transport_session_get_stats(s, &stats);
	json_t *rcpu = json_object_get(reply, "cpu_seconds");
	json_t *rbytes = json_object_get(reply, "bytes");
	if (!json_is_integer(rbytes) || (uint64_t)json_integer_value(rbytes) != sent)
		verified = false;
	*ret_result = json_pack(
		"{s:s,s:I,s:f,s:f,s:I,s:f,s:i,s:i,s:b,s:s,s:s,s:b,s:{s:f,s:o},s:f}", "peer",
		t->peer, "bytes", (json_int_t)sent, "seconds", t1 - t0, "throughput_bytes_per_sec",
		(double)sent / (t1 - t0), "wire_bytes", (json_int_t)stats.wire_bytes_sent, "ratio",
		stats.wire_bytes_sent ? (double)sent / (double)stats.wire_bytes_sent : 0.0, "level",
		stats.level, "streams", (int)t->params.n_streams, "encrypted", t->params.encrypt,
		"transport", transport_session_transport(s), "source", t->source, "verified",
		verified, "cpu_seconds", "sender", c1 - c0, "receiver",
		rcpu ? json_incref(rcpu) : json_null(), "link_estimate_bytes_per_sec",
		stats.link_bytes_per_sec);
	if (*ret_result && transport_session_note(s))
		json_object_set_new(*ret_result, "transport_note",
				    json_string(transport_session_note(s)));
	{
		json_t *bye = json_pack("{s:s}", "type", "done");
		if (bye)
			(void)transport_session_send_control(s, bye);
		json_decref(bye);
	}
	transport_session_free(s);
	if (!verified) {
		*ret_code = "transfer-failed";
		json_decref(*ret_result);
		*ret_result = NULL;
		if (asprintf(ret_message,
			     "peer-test to %s: the data that arrived differs from what was sent",
			     t->peer) < 0)
			*ret_message = NULL;
		return -EBADMSG;
	}
	return *ret_result ? 0 : -ENOMEM;
}

struct sink_stream {
	struct transport_session *s;
	unsigned index;
	uint64_t bytes;
	uint64_t digest;
	int r;
};

static void *sink_thread(void *p)
{
	struct sink_stream *ss = p;
	XXH3_state_t *st = XXH3_createState();

	if (!st) {
		ss->r = -ENOMEM;
		return NULL;
	}
	XXH3_64bits_reset(st);
	for (;;) {
		struct transport_buf *b;
		int r = transport_session_recv(ss->s, ss->index, 3600 * USEC_PER_SEC, &b);

		if (r == -EPIPE)
			break;
		if (r < 0) {
			ss->r = r;
			break;
		}
		XXH3_64bits_update(st, b->data, b->len);
		ss->bytes += b->len;
		transport_buf_free(b);
	}
	ss->digest = XXH3_64bits_digest(st);
	XXH3_freeState(st);
	return NULL;
}

int peer_test_sink(struct transport_session *s)
{
	unsigned n = transport_session_n_streams(s);
	_cleanup_free_ struct sink_stream *ss = calloc(n, sizeof(*ss));
	_cleanup_free_ pthread_t *th = calloc(n, sizeof(*th));
	_cleanup_json_ json_t *reply = NULL, *digests = json_array(), *bye = NULL;
	double c0 = cpu_seconds();
	uint64_t total = 0;
	int r = 0;

	if (!ss || !th || !digests)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++) {
		ss[i] = (struct sink_stream){.s = s, .index = i};
		if (pthread_create(&th[i], NULL, sink_thread, &ss[i]) != 0) {
			transport_session_abort(s, ENOMEM, "peer-test sink cannot start threads");
			for (unsigned k = 0; k < i; k++)
				pthread_join(th[k], NULL);
			return -ENOMEM;
		}
	}
	for (unsigned i = 0; i < n; i++) {
		char d[17];
		pthread_join(th[i], NULL);
		if (ss[i].r < 0 && r == 0)
			r = ss[i].r;
		total += ss[i].bytes;
		snprintf(d, sizeof(d), "%016" PRIx64, ss[i].digest);
		json_array_append_new(digests, json_string(d));
	}
	if (r < 0)
		return r;
	reply = json_pack("{s:s,s:I,s:O,s:f}", "type", "peer-test-result", "bytes",
			  (json_int_t)total, "digests", digests, "cpu_seconds", cpu_seconds() - c0);
	if (!reply)
		return -ENOMEM;
	r = transport_session_send_control(s, reply);
	if (r < 0)
		return r;
	/* Wait for the sender to read it (it says "done"), so closing does not cut it off. */
	(void)transport_session_recv_control(s, 30 * USEC_PER_SEC, &bye);
	return 0;
}
