/* Moving a VM to another host: libvirt's peer-to-peer live migration with its control
 * connection and QEMU's stream (all parallel connections too) carried through a transport
 * session, so the link's compression, TLS and RDMA apply (or libvirt's own connections with
 * --native). Both sides run in job threads; the event loop only starts them and takes their
 * results.
 *
 * The session's control messages: source -> destination "prepare" {name, xml, record, native,
 * window: the tunnel's credit window, 0 for none}, answered "ready" or "refused" {message}; then
 * "open" {stream, target} per carried connection (vm-tunnel.c); at the end "commit", answered
 * "committed" {time_ms, downtime_ms, streams: [{stream, bytes, digest}] what the destination
 * wrote to its QEMU, per migration connection}, or "cancel" {message}, answered "cancelled"
 * {diagnosis: what the destination saw}. ("abort" is the transport's own.) With credits, the
 * session's last stream carries the destination's reports (vm-tunnel.c). */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint/vm/vm-internal.h"
#include "checkpoint/workload.h"
#include "common/common.h"
#include "migrd/manager-internal.h"
#include "migrd/vm-tunnel.h"
#include "migrd/vms-internal.h"

/* Compressed moves send on TCP streams with a fixed 256 KiB SO_SNDBUF (the kernel doubles it),
 * not an autotuned one. When QEMU stops the guest, everything queued between it and the
 * destination QEMU must arrive before the guest runs again; compression makes the link the
 * bottleneck at twice the raw rate, and an autotuned send buffer of compressed bytes grows to
 * megabytes. bench/vm, 1 Gbit/s, idle guest, medians of 5: downtime 127 -> 44 ms (native: 43,
 * 44), total time unchanged (0.62x -> 0.63x native); guest writing 20 MiB/s: 170 -> 184 ms
 * (native 312-327), total 0.52x -> 0.59x. Uncompressed moves had native's downtime already. */
#define VM_COMPRESSED_SNDBUF (256 * 1024)
/* Compressed moves also carry credits (see vm_tunnel_new): at most this much of a stream is
 * between the two QEMUs at any time. Without them the destination's TCP receive buffer filled
 * with compressed bytes that its QEMU (sharing the CPUs with the guest under TCG) had not taken
 * yet, and all of that crossed after the guest stopped: bench/vm, 1 Gbit/s, idle guest, up to
 * 15 MiB of guest memory delivered after the stop, downtime 60-75 ms against native's 47-51. */
#define VM_CREDIT_WINDOW     (4U << 20)
#define VM_CREDIT_WINDOW_MAX (256U << 20)
#define RATIO_MIN_BYTES	     (16U << 20)
#define PREPARE_TIMEOUT	     (60 * USEC_PER_SEC) /* the destination checks paths, asks libvirt */
#define COMMIT_TIMEOUT	     (30 * USEC_PER_SEC)
#define MAX_PARALLEL	     32
/* The migration connections end with the migration; a moment for the last frames. */
#define STREAM_END_TIMEOUT (2 * USEC_PER_SEC)

struct move {
	struct manager *m; /* on the loop only */
	struct control_request *req;
	char *name, *peer, *own, *uri, *socket_dir;
	json_t *record;
	struct transport_context *ctx;
	struct sockaddr_storage addr;
	socklen_t addr_len;
	struct transport_session_params params;
	bool native;
	unsigned parallel;
	uint64_t bandwidth_mib, downtime_ms, max_downtime_ms, converge_s;
	size_t window; /* credits of the tunnel, 0: none */
	bool postcopy, auto_converge;
	usec_t started;

	/* Between the job thread and the loop (vm-move-status). */
	pthread_mutex_t lock;
	struct vm_progress progress;
	struct transport_stats stats;

	/* The job thread's. */
	struct transport_session *s;
	struct vm_tunnel *tunnel;
	char *abort_reason;
};

static void move_free(void *arg)
{
	struct move *mv = arg;

	if (!mv)
		return;
	free(mv->name);
	free(mv->peer);
	free(mv->own);
	free(mv->uri);
	free(mv->socket_dir);
	free(mv->abort_reason);
	json_decref(mv->record);
	pthread_mutex_destroy(&mv->lock);
	free(mv);
}

const char *vms_move_state(struct vm *v)
{
	return v->move ? "migrating" : NULL;
}

static int mkdir_private(const char *dir)
{
	char *p = strdup(dir);
	int r = 0;

	if (!p)
		return -ENOMEM;
	for (char *s = p + 1; *s && r == 0; s++)
		if (*s == '/') {
			*s = 0;
			if (mkdir(p, 0755) < 0 && errno != EEXIST)
				r = -errno;
			*s = '/';
		}
	if (r == 0 && mkdir(p, 0700) < 0 && errno != EEXIST)
		r = -errno;
	free(p);
	return r;
}

static void remove_dir(const char *dir, const char *const *files)
{
	for (; *files; files++) {
		_cleanup_free_ char *p = strdup_printf("%s/%s", dir, *files);
		if (p)
			(void)unlink(p);
	}
	(void)rmdir(dir);
}

static const char *const socket_files[] = {"libvirt.sock", "qemu.sock", NULL};

/* ---- the source's side ---------------------------------------------------------------------- */

static void on_progress(void *userdata, const struct vm_progress *p)
{
	struct move *mv = userdata;
	struct transport_stats st = {};

	if (mv->s)
		transport_session_get_stats(mv->s, &st);
	pthread_mutex_lock(&mv->lock);
	mv->progress = *p;
	mv->stats = st;
	pthread_mutex_unlock(&mv->lock);
}

/* The carried stream's compression so far: what QEMU's downtime limit is scaled by (see
 * vm_migrate_params). Taken once a few megabytes have crossed; 1 before. */
static double wire_ratio(void *userdata)
{
	struct move *mv = userdata;
	struct transport_stats st = {};

	if (!mv->s)
		return 1.0;
	transport_session_get_stats(mv->s, &st);
	if (st.raw_bytes_sent < RATIO_MIN_BYTES || st.wire_bytes_sent >= st.raw_bytes_sent)
		return 1.0;
	return (double)st.wire_bytes_sent / (double)st.raw_bytes_sent;
}

static const char *should_abort(void *userdata)
{
	struct move *mv = userdata;
	const char *msg = NULL;
	int r = transport_session_error(mv->s, &msg);

	if (r < 0 && !mv->abort_reason)
		mv->abort_reason =
			strdup_printf("the link to %s failed: %s", mv->peer, msg ?: strerror(-r));
	else if (!mv->abort_reason && mv->tunnel && vm_tunnel_error(mv->tunnel))
		mv->abort_reason = strdup_printf("carrying the migration on %s: %s", mv->own,
						 vm_tunnel_error(mv->tunnel));
	return mv->abort_reason;
}

static char *native_uri(const struct move *mv)
{
	char host[NI_MAXHOST];

	if (getnameinfo((const struct sockaddr *)&mv->addr, mv->addr_len, host, sizeof(host), NULL,
			0, NI_NUMERICHOST) != 0)
		return NULL;
	return mv->addr.ss_family == AF_INET6 ? strdup_printf("qemu+tcp://[%s]/system", host)
					      : strdup_printf("qemu+tcp://%s/system", host);
}

/* After a failure: the VM must still run here; say so, or say loudly that it does not. */
static char *source_state_note(const struct move *mv)
{
	_cleanup_free_ char *err = NULL;
	bool running = false;

	if (vm_is_running(mv->uri, mv->name, &running, &err) < 0)
		return strdup_printf("; its state on %s is unknown: %s", mv->own, strna(err));
	return running ? strdup_printf("; %s still runs on %s", mv->name, mv->own)
		       : strdup_printf(
				 "; %s is NOT running on %s now: check 'virsh domstate %s' on both "
				 "hosts",
				 mv->name, mv->own, mv->name);
}

static int wait_control(struct transport_session *s, usec_t timeout, const char *want, json_t **ret)
{
	json_t *j = NULL;
	const char *type = NULL;
	int r = transport_session_recv_control(s, timeout, &j);

	if (r < 0)
		return r;
	if (json_get_string(j, "type", &type) < 0) {
		json_decref(j);
		return -EBADMSG;
	}
	*ret = j;
	return streq(type, want) ? 0 : 1;
}

/* After a failed migration: tell the destination to give up and ask what it saw (its libvirtd
 * gone, a local socket refused), so the error says which side failed. When the session itself
 * broke (the destination's migrd gone, the link cut), that is the diagnosis. */
static char *diagnose(struct move *mv, const char *why)
{
	_cleanup_json_ json_t *ab = json_pack("{s:s,s:s}", "type", "cancel", "message", strna(why)),
			      *reply = NULL;
	const char *diag = NULL, *broke = NULL;

	if (ab && transport_session_error(mv->s, NULL) == 0 &&
	    transport_session_send_control(mv->s, ab) >= 0 &&
	    wait_control(mv->s, 5 * USEC_PER_SEC, "cancelled", &reply) == 0 &&
	    json_get_string(reply, "diagnosis", &diag) >= 0 && diag)
		return strdup_printf("%s says: %s", mv->peer, diag);
	/* An abort for the session's failure says so already. */
	if (!mv->abort_reason && transport_session_error(mv->s, &broke) < 0)
		return strdup_printf("the session with %s failed: %s", mv->peer,
				     broke ?: "no reason given");
	return NULL;
}

/* Destination: what was written to the local QEMU per migration connection, for "committed". */
static json_t *stream_digests_json(struct vm_tunnel *t)
{
	struct vm_tunnel_digest d[MAX_PARALLEL + 1];
	int n = vm_tunnel_digests(t, "qemu", false, STREAM_END_TIMEOUT, d, ELEMENTSOF(d));
	json_t *a = json_array();

	for (int i = 0; a && i < n; i++) {
		char hex[17];

		if (!d[i].complete)
			continue;
		snprintf(hex, sizeof(hex), "%016" PRIx64, d[i].digest);
		json_array_append_new(a, json_pack("{s:i,s:I,s:s}", "stream", (int)d[i].stream,
						   "bytes", (json_int_t)d[i].bytes, "digest", hex));
	}
	return a;
}

/* Source: compares its migration connections with the destination's report. "identical": the
 * destination's QEMU was handed, byte for byte, what this QEMU sent; "differ": it was not;
 * "unverified": a connection did not end in time, or the report lacks it. */
static const char *stream_check(struct move *mv, json_t *committed, uint64_t *ret_bytes)
{
	struct vm_tunnel_digest d[MAX_PARALLEL + 1];
	json_t *theirs = json_object_get(committed, "streams");
	int n = vm_tunnel_digests(mv->tunnel, "qemu", true, STREAM_END_TIMEOUT, d, ELEMENTSOF(d));
	const char *verdict = n > 0 ? "identical" : "unverified";

	*ret_bytes = 0;
	for (int i = 0; i < n; i++) {
		const char *hex = NULL;
		uint64_t bytes = UINT64_MAX, stream;
		char mine[17];
		bool found = false;
		size_t k;
		json_t *e;

		*ret_bytes += d[i].bytes;
		snprintf(mine, sizeof(mine), "%016" PRIx64, d[i].digest);
		json_array_foreach(theirs, k, e)
		{
			if (json_get_uint64(e, "stream", &stream) < 0 || stream != d[i].stream)
				continue;
			found = json_get_uint64(e, "bytes", &bytes) >= 0 &&
				json_get_string(e, "digest", &hex) >= 0;
			break;
		}
		if (!d[i].complete || !found) {
			if (streq(verdict, "identical"))
				verdict = "unverified";
			continue;
		}
		if (bytes != d[i].bytes || !streq(hex, mine)) {
			log_error("VM %s: migration connection %u reached %s altered: %" PRIu64
				  " bytes, digest %s there; %" PRIu64 " bytes, digest %s sent. "
				  "The guest on %s may be damaged",
				  mv->name, d[i].stream, mv->peer, bytes, strna(hex), d[i].bytes,
				  mine, mv->peer);
			verdict = "differ";
		}
	}
	if (streq(verdict, "unverified"))
		log_warning("VM %s: the migration stream could not be checked end to end (a "
			    "connection did not end in time, or %s did not report it)",
			    mv->name, mv->peer);
	return verdict;
}

char *vms_carried_refusal(const char *host, const char *name, unsigned long libvirt_version)
{
	/* Migration over UNIX sockets came in libvirt 6.8. 0: unknown, let libvirt say. */
	if (libvirt_version == 0 || libvirt_version >= 6008000)
		return NULL;
	return strdup_printf("libvirt %lu.%lu on %s cannot migrate over UNIX sockets (6.8 or "
			     "newer can): move %s with --native",
			     libvirt_version / 1000000, libvirt_version / 1000 % 1000, host, name);
}

static int move_run(void *arg, json_t **ret_result, const char **ret_code, char **ret_message)
{
	struct move *mv = arg;
	_cleanup_free_ char *xml = NULL, *err = NULL, *dir = NULL, *lsock = NULL, *qsock = NULL,
			    *dest_uri = NULL, *mig_uri = NULL, *note = NULL;
	_cleanup_json_ json_t *reply = NULL;
	struct vm_migrate_result res;
	struct transport_stats st;
	bool running = false, committed = false;
	unsigned long libvirt_version = 0;
	const char *check = NULL;
	uint64_t checked_bytes = 0;
	const char *msg = NULL;
	int r;

	r = vm_domain_xml(mv->uri, mv->name, &xml, &running, &libvirt_version, &err);
	if (r < 0) {
		*ret_code = r == -ENOENT ? "not-found" : "libvirt-unavailable";
		*ret_message = strdup_printf("%s: %s", mv->own, strna(err));
		return r;
	}
	if (!mv->native &&
	    (*ret_message = vms_carried_refusal(mv->own, mv->name, libvirt_version))) {
		*ret_code = "unsupported";
		return -EOPNOTSUPP;
	}
	if (!running) {
		*ret_code = "not-running";
		*ret_message = strdup_printf(
			"%s is not running on %s: only a running VM moves live", mv->name, mv->own);
		return -ESRCH;
	}

	r = transport_session_connect(mv->ctx, mv->peer, (struct sockaddr *)&mv->addr, mv->addr_len,
				      &mv->params, &mv->s, &err);
	/* Registered: a migrd shutting down aborts it, and the move with it. */
	if (r >= 0 && manager_session_register(mv->m, mv->s) < 0) {
		transport_session_free(mv->s);
		mv->s = NULL;
		r = -ENOMEM;
	}
	if (r < 0) {
		*ret_code = "peer-unreachable";
		*ret_message = strdup_printf("cannot reach %s: %s; %s still runs on %s", mv->peer,
					     strna(err), mv->name, mv->own);
		return r;
	}
	{
		_cleanup_json_ json_t *prep =
			json_pack("{s:s,s:s,s:s,s:O,s:b,s:I}", "type", "prepare", "name", mv->name,
				  "xml", xml, "record", mv->record, "native", mv->native, "window",
				  (json_int_t)mv->window);
		r = prep ? transport_session_send_control(mv->s, prep) : -ENOMEM;
	}
	if (r >= 0)
		r = wait_control(mv->s, PREPARE_TIMEOUT, "ready", &reply);
	if (r != 0) {
		const char *why = NULL;

		*ret_code = r == 1 ? "refused" : "peer-unreachable";
		if (r == 1)
			(void)json_get_string(reply, "message", &why);
		else
			(void)transport_session_error(mv->s, &why);
		*ret_message = strdup_printf(
			"%s refused %s: %s; %s still runs on %s", mv->peer, mv->name,
			why ?: (r == -ETIMEDOUT ? "no answer" : strerror(-r)), mv->name, mv->own);
		r = r == 1 ? -EPERM : r;
		goto out;
	}

	if (mv->native) {
		dest_uri = native_uri(mv);
		if (!dest_uri) {
			r = -ENOMEM;
			goto out;
		}
	} else {
		dir = strdup_printf("%s/%s", mv->socket_dir, mv->name);
		lsock = strdup_printf("%s/libvirt.sock", dir);
		qsock = strdup_printf("%s/qemu.sock", dir);
		dest_uri = strdup_printf("qemu+unix:///system?socket=%s", lsock ?: "");
		mig_uri = strdup_printf("unix://%s", qsock ?: "");
		if (!dir || !lsock || !qsock || !dest_uri || !mig_uri) {
			r = -ENOMEM;
			goto out;
		}
		r = mkdir_private(dir);
		if (r >= 0)
			r = vm_tunnel_new(mv->s, mv->m->config.frame_size,
					  mv->params.compress_auto ||
						  mv->params.compress_level != 0,
					  mv->window, &mv->tunnel);
		if (r >= 0)
			r = vm_tunnel_listen(mv->tunnel, lsock, "libvirt");
		if (r >= 0)
			r = vm_tunnel_listen(mv->tunnel, qsock, "qemu");
		if (r >= 0)
			r = vm_tunnel_start(mv->tunnel);
		if (r < 0) {
			*ret_code = "internal";
			*ret_message = strdup_printf(
				"%s: cannot set up the migration sockets in %s: %s; %s "
				"still runs there",
				mv->own, dir, strerror(-r), mv->name);
			goto out;
		}
	}

	{
		struct vm_migrate_params p = {
			.uri = mv->uri,
			.name = mv->name,
			.dest_uri = dest_uri,
			.migrate_uri = mig_uri,
			.parallel = mv->parallel,
			.bandwidth_mib = mv->bandwidth_mib,
			.downtime_ms = mv->downtime_ms,
			.downtime_max_ms = mv->max_downtime_ms,
			.converge_s = mv->converge_s,
			.postcopy = mv->postcopy,
			.auto_converge = mv->auto_converge,
			.progress = on_progress,
			.should_abort = should_abort,
			.wire_ratio = wire_ratio,
			.userdata = mv,
		};
		free(err);
		err = NULL;
		r = vm_migrate(&p, &res, &err);
	}
	if (r < 0) {
		_cleanup_free_ char *diag = NULL;

		*ret_code = r == -ETIMEDOUT ? "not-converging" : "migration-failed";
		if (mv->abort_reason && r != -ETIMEDOUT && err)
			log_info("VM %s: libvirt said: %s", mv->name, err);
		diag = diagnose(mv, err);
		note = source_state_note(mv);
		*ret_message = strdup_printf(
			"moving %s to %s failed: %s%s%s%s", mv->name, mv->peer,
			strna(mv->abort_reason && r != -ETIMEDOUT ? mv->abort_reason : err),
			diag ? " (" : "", diag ? diag : "", diag ? ")" : "");
		if (*ret_message && note) {
			char *full = strdup_printf("%s%s", *ret_message, note);
			if (full) {
				free(*ret_message);
				*ret_message = full;
			}
		}
		goto out;
	}

	/* libvirt says it runs there now: tell the destination it owns the VM. */
	{
		_cleanup_json_ json_t *c = json_pack("{s:s}", "type", "commit");
		json_decref(reply);
		reply = NULL;
		if (c && transport_session_send_control(mv->s, c) >= 0 &&
		    wait_control(mv->s, COMMIT_TIMEOUT, "committed", &reply) == 0)
			committed = true;
		else
			log_warning("VM %s runs on %s, but %s did not confirm taking it over: %s",
				    mv->name, mv->peer, mv->peer,
				    transport_session_error(mv->s, &msg) < 0 ? strna(msg)
									     : "no answer");
	}
	if (committed && res.downtime_ms == 0) {
		uint64_t d = 0;
		(void)json_get_uint64(reply, "downtime_ms", &d);
		res.downtime_ms = d;
	}
	if (mv->tunnel && committed)
		check = stream_check(mv, reply, &checked_bytes);
	transport_session_get_stats(mv->s, &st);
	*ret_result = json_pack(
		"{s:s,s:s,s:s,s:b,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:b,s:b,s:s,s:i,s:b,s:i,s:b,s:f}",
		"name", mv->name, "from", mv->own, "to", mv->peer, "native", mv->native, "time_ms",
		(json_int_t)res.time_ms, "downtime_ms", (json_int_t)res.downtime_ms,
		"downtime_limit_ms", (json_int_t)res.downtime_limit_ms, "data_bytes",
		(json_int_t)res.processed, "raw_bytes",
		(json_int_t)(st.raw_bytes_sent + st.raw_bytes_received), "wire_bytes",
		(json_int_t)(st.wire_bytes_sent + st.wire_bytes_received), "wall_ms",
		(json_int_t)((now_usec(CLOCK_MONOTONIC) - mv->started) / USEC_PER_MSEC), "postcopy",
		res.postcopy, "encrypted", transport_session_encrypted(mv->s), "transport",
		transport_session_transport(mv->s), "compress_level", st.level, "compress_auto",
		mv->params.compress_auto, "parallel", (int)mv->parallel, "committed", committed,
		"compression_ratio",
		st.wire_bytes_sent ? (double)st.raw_bytes_sent / (double)st.wire_bytes_sent : 1.0);
	if (*ret_result)
		json_object_set_new(
			*ret_result, "frames",
			json_integer((json_int_t)(st.frames_sent + st.frames_received)));
	if (*ret_result && check) {
		json_object_set_new(*ret_result, "stream_check", json_string(check));
		json_object_set_new(*ret_result, "stream_check_bytes",
				    json_integer((json_int_t)checked_bytes));
	}
	r = *ret_result ? 0 : -ENOMEM;
out:
	mv->tunnel = vm_tunnel_free(mv->tunnel);
	if (dir)
		remove_dir(dir, socket_files);
	pthread_mutex_lock(&mv->lock);
	{
		struct transport_session *s = mv->s;
		mv->s = NULL;
		pthread_mutex_unlock(&mv->lock);
		if (s)
			manager_session_unregister(mv->m, s);
		transport_session_free(s);
	}
	if (r < 0 && !*ret_message)
		*ret_message =
			strdup_printf("moving %s to %s: %s", mv->name, mv->peer, strerror(-r));
	return r;
}

static void move_done(void *userdata, int r, json_t *result, const char *code, const char *message)
{
	struct move *mv = userdata;
	struct manager *m = mv->m;
	struct vm *v = vms_find(m, mv->name);

	if (v)
		v->move = NULL;
	if (r < 0) {
		log_struct_errno(LOG_WARNING, 0, LOG_FIELDS("MIGRD_EVENT=vm-move-failed"), "%s",
				 message ?: strerror(-r));
		control_request_fail(mv->req, code ?: "internal", message ?: strerror(-r));
		return;
	}
	log_struct_errno(LOG_INFO, 0, LOG_FIELDS("MIGRD_EVENT=vm-moved"),
			 "VM %s moved to %s in %.2f s (downtime %" PRIu64 " ms)", mv->name,
			 mv->peer,
			 (double)json_integer_value(json_object_get(result, "wall_ms")) / 1000.0,
			 (uint64_t)json_integer_value(json_object_get(result, "downtime_ms")));
	vms_forget(m, mv->name);
	/* The cluster state names the new owner (the destination asks the same; the first of
	 * the two ordered messages wins, the other changes nothing). */
	r = cluster_request_owner(m->cluster, mv->name, "vm", mv->peer, mv->own, false);
	if (r < 0)
		log_warning_errno(r, "Cannot record %s's new owner in the cluster state: %m",
				  mv->name);
	manager_arm_flush(m);
	control_request_reply(mv->req, json_incref(result));
}

static const char *libvirt_socket(const struct migrd_config *c, char *buf, size_t size)
{
	const char *q;

	if (c->libvirt_socket)
		return c->libvirt_socket;
	q = strstr(c->libvirt_uri, "socket=");
	if (q) {
		snprintf(buf, size, "%.*s", (int)strcspn(q + 7, "&"), q + 7);
		return buf;
	}
	/* Split daemons (virtqemud) where they run, else the monolithic libvirtd. */
	return access("/run/libvirt/virtqemud-sock", F_OK) == 0 ? "/run/libvirt/virtqemud-sock"
								: "/run/libvirt/libvirt-sock";
}

static int get_uint(json_t *params, const char *key, uint64_t lo, uint64_t hi, uint64_t *v)
{
	if (!json_object_get(params, key))
		return 0;
	if (json_get_uint64(params, key, v) < 0 || *v < lo || *v > hi)
		return -EINVAL;
	return 0;
}

static int get_bool(json_t *params, const char *key, bool *v)
{
	if (!json_object_get(params, key))
		return 0;
	return json_get_bool(params, key, v);
}

/* vm-move {name, host, native, parallel, compress, encrypt, transport, bandwidth (MiB/s),
 *          downtime_ms, max_downtime_ms, converge_timeout_s, postcopy, auto_converge} */
int method_vm_move(struct control_request *req, json_t *params, void *userdata, json_t **ret)
{
	struct manager *m = userdata;
	const struct migrd_config *c = &m->config;
	const char *name = NULL, *host = NULL, *address;
	int encrypt, transport, level, r;
	unsigned def_streams;
	uint64_t parallel = c->vm_parallel, bandwidth = c->vm_bandwidth >> 20,
		 downtime = c->vm_downtime / USEC_PER_MSEC,
		 max_downtime = c->vm_max_downtime / USEC_PER_MSEC,
		 converge = c->vm_converge_timeout / USEC_PER_SEC;
	bool native = false, postcopy = c->vm_postcopy, auto_converge = c->vm_auto_converge, enc;
	struct move *mv;
	struct vm *v;

	if (json_get_string(params, "name", &name) < 0 || !workload_name_is_valid(name) ||
	    json_get_string(params, "host", &host) < 0)
		return control_request_error(req, EINVAL, "invalid-params",
					     "vm-move needs 'name' (a VM) and 'host' (where to).");
	v = vms_find(m, name);
	if (!v)
		return control_request_error(
			req, ENOENT, "not-found",
			"%s is not a VM under migrd's care on %s: adopt it first with 'migctl vm "
			"adopt %s' on the host it runs on.",
			name, c->host_name, name);
	if (v->move)
		return control_request_error(req, EBUSY, "busy", "%s is already being moved.",
					     name);
	{
		const struct cluster_workload *w =
			cluster_state_find_workload(cluster_get_state(m->cluster), name);

		if (w && !streq(w->host, c->host_name))
			return control_request_error(
				req, EBUSY, "conflict",
				"%s belongs to %s in the cluster state, not to %s: it moves from "
				"there.",
				name, w->host, c->host_name);
	}
	if (streq(host, c->host_name))
		return control_request_error(req, EINVAL, "invalid-params",
					     "%s already runs on %s.", name, host);
	r = manager_peer_address(m, req, host, &address);
	if (r < 0)
		return r;
	migrd_config_peer(c, host, &encrypt, &transport, &level, &def_streams);
	enc = encrypt;
	if (get_bool(params, "native", &native) < 0 || get_bool(params, "encrypt", &enc) < 0 ||
	    get_bool(params, "postcopy", &postcopy) < 0 ||
	    get_bool(params, "auto_converge", &auto_converge) < 0 ||
	    get_uint(params, "parallel", 0, MAX_PARALLEL, &parallel) < 0 ||
	    get_uint(params, "bandwidth", 0, 1 << 20, &bandwidth) < 0 ||
	    get_uint(params, "downtime_ms", 1, 3600 * 1000, &downtime) < 0 ||
	    get_uint(params, "max_downtime_ms", 1, 3600 * 1000, &max_downtime) < 0 ||
	    get_uint(params, "converge_timeout_s", 0, 86400, &converge) < 0 ||
	    manager_parse_compress(json_object_get(params, "compress"), &level) < 0)
		return control_request_error(
			req, EINVAL, "invalid-params",
			"vm-move: native/encrypt/postcopy/auto_converge are booleans; parallel "
			"0-%d; "
			"bandwidth MiB/s; downtime_ms and max_downtime_ms 1 ms to 1 h; "
			"converge_timeout_s up to a day (0: never escalate); compress \"auto\", "
			"\"off\" or a zstd level from -7 to 19.",
			MAX_PARALLEL);
	if (json_object_get(params, "transport")) {
		const char *tr = NULL;
		if (json_get_string(params, "transport", &tr) < 0 ||
		    (transport = transport_choice_from_string(tr)) < 0)
			return control_request_error(req, EINVAL, "invalid-params",
						     "'transport' must be tcp, rdma or auto.");
	}
	if (native && parallel)
		return control_request_error(req, EINVAL, "invalid-params",
					     "--native moves use libvirt's own connections: "
					     "parallel connections are for carried moves.");
	mv = calloc(1, sizeof(*mv));
	if (!mv)
		return -ENOMEM;
	*mv = (struct move){
		.m = m,
		.req = req,
		.name = strdup(name),
		.peer = strdup(host),
		.own = strdup(c->host_name),
		.uri = strdup(c->libvirt_uri),
		.socket_dir = strdup(c->vm_socket_dir),
		.record = json_deep_copy(v->record),
		.ctx = m->transport,
		.native = native,
		.parallel = (unsigned)parallel,
		.bandwidth_mib = bandwidth,
		.downtime_ms = downtime,
		.max_downtime_ms = MAX(max_downtime, downtime),
		.converge_s = converge,
		.postcopy = postcopy,
		.auto_converge = auto_converge,
		.started = now_usec(CLOCK_MONOTONIC),
		.progress = {.phase = "connecting"},
	};
	pthread_mutex_init(&mv->lock, NULL);
	/* Streams: libvirt's connection, QEMU's main channel, one per parallel connection, one
	 * spare, and the credits' of a compressed move; a native move only talks on the control
	 * connection. */
	mv->window = !native && level != 0 ? VM_CREDIT_WINDOW : 0;
	mv->params = (struct transport_session_params){
		.kind = (enum transport_kind)transport,
		.n_streams = native ? 1 : 3 + (unsigned)parallel + (mv->window > 0),
		.encrypt = enc,
		.compress_auto = level == COMPRESS_AUTO,
		.compress_level = level == COMPRESS_AUTO ? 0 : level,
		.purpose = "vm-migrate",
		.sndbuf = level != 0 ? VM_COMPRESSED_SNDBUF : 0,
	};
	r = transport_parse_address(address, c->port, &mv->addr, &mv->addr_len);
	if (!mv->name || !mv->peer || !mv->own || !mv->uri || !mv->socket_dir || !mv->record ||
	    r < 0) {
		move_free(mv);
		return r < 0 ? control_request_error(req, -r, "internal",
						     "Cannot resolve the address of %s: %s.", host,
						     address)
			     : -ENOMEM;
	}
	r = job_start(m->jobs, move_run, mv, move_free, move_done, mv);
	if (r < 0) {
		move_free(mv);
		return control_request_error(req, -r, "busy", "Too many jobs running.");
	}
	v->move = mv;
	log_struct_errno(LOG_INFO, 0, LOG_FIELDS("MIGRD_EVENT=vm-move-started"),
			 "Moving VM %s to %s (%s)", name, host,
			 native ? "native libvirt migration" : "carried by migrd");
	return CONTROL_REPLY_LATER;
}

int method_vm_move_status(struct control_request *req, json_t *params, void *userdata, json_t **ret)
{
	struct manager *m = userdata;
	const char *name = NULL;
	struct vm_progress p;
	struct transport_stats st;
	struct move *mv;
	struct vm *v;

	if (json_get_string(params, "name", &name) < 0)
		return control_request_error(req, EINVAL, "invalid-params",
					     "vm-move-status needs 'name'.");
	v = vms_find(m, name);
	if (!v || !v->move)
		return control_request_error(req, ENOENT, "not-found",
					     "No move of %s is running on %s.", name,
					     m->config.host_name);
	mv = v->move;
	pthread_mutex_lock(&mv->lock);
	p = mv->progress;
	st = mv->stats;
	pthread_mutex_unlock(&mv->lock);
	*ret = json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:i,s:I,s:I,s:I}",
			 "name", name, "to", mv->peer, "phase", p.phase ?: "starting", "iteration",
			 (json_int_t)p.iteration, "processed", (json_int_t)p.processed, "total",
			 (json_int_t)p.total, "remaining", (json_int_t)p.remaining, "bps",
			 (json_int_t)p.bps, "dirty_rate", (json_int_t)p.dirty_rate,
			 "expected_downtime_ms", (json_int_t)p.expected_downtime_ms,
			 "downtime_limit_ms", (json_int_t)p.downtime_limit_ms, "elapsed_ms",
			 (json_int_t)((now_usec(CLOCK_MONOTONIC) - mv->started) / USEC_PER_MSEC),
			 "throttle", (int)p.throttle, "raw_bytes", (json_int_t)st.raw_bytes_sent,
			 "wire_bytes", (json_int_t)st.wire_bytes_sent, "wire_bytes_received",
			 (json_int_t)st.wire_bytes_received);
	return *ret ? CONTROL_REPLY_NOW : -ENOMEM;
}

/* ---- the destination's side ----------------------------------------------------------------- */

static int refuse(struct transport_session *s, const char **ret_code, char **ret_message,
		  char *message)
{
	_cleanup_json_ json_t *j =
		json_pack("{s:s,s:s}", "type", "refused", "message", strna(message));

	if (j)
		(void)transport_session_send_control(s, j);
	/* Give the answer time to leave before the session closes. */
	{
		json_t *bye = NULL;
		(void)transport_session_recv_control(s, 5 * USEC_PER_SEC, &bye);
		json_decref(bye);
	}
	*ret_code = "refused";
	*ret_message = message;
	return -EPERM;
}

static json_t *take_record(const char *uri, const char *name, json_t *src_record)
{
	_cleanup_free_ char *err = NULL;
	struct vm_info info = {};
	json_t *rec;

	if (vm_lookup(uri, name, &info, &err) < 0)
		return NULL;
	rec = json_pack("{s:s,s:s,s:s,s:I,s:i,s:b,s:s}", "name", name, "uuid", info.uuid, "state",
			info.state, "memory", (json_int_t)(info.memory_kib * 1024), "vcpus",
			(int)info.vcpus, "persistent", info.persistent, "libvirt", uri);
	if (rec && json_is_integer(json_object_get(src_record, "adopted")))
		json_object_set(rec, "adopted", json_object_get(src_record, "adopted"));
	if (rec)
		json_object_set_new(rec, "arrived",
				    json_integer((json_int_t)now_usec(CLOCK_REALTIME)));
	vm_info_done(&info);
	return rec;
}

/* Whether this host could take the VM: NULL, or why not (malloc'd). */
static char *can_run_here(const struct migrd_config *c, const char *name, const char *xml,
			  const char *peer)
{
	_cleanup_free_ char *xml_name = vm_xml_name(xml), *err = NULL;
	bool running = false;

	if (!xml_name || !streq(xml_name, name))
		return strdup_printf("%s: the domain XML from %s is not domain '%s'", c->host_name,
				     peer, name);
	if (vm_is_running(c->libvirt_uri, name, &running, &err) < 0)
		return strdup_printf("libvirt on %s: %s", c->host_name, strna(err));
	if (running)
		return strdup_printf("%s already runs on %s", name, c->host_name);
	free(err);
	err = NULL;
	if (vm_xml_check_host(xml, &err) < 0)
		return strdup_printf("%s cannot run %s: %s", c->host_name, name, strna(err));
	return NULL;
}

int vms_check_run(struct manager *m, struct transport_session *s)
{
	const struct migrd_config *c = &m->config;
	_cleanup_json_ json_t *q = NULL, *a = NULL;
	const char *name = NULL, *xml = NULL, *type = NULL;
	_cleanup_free_ char *why = NULL;
	int r;

	r = transport_session_recv_control(s, PREPARE_TIMEOUT, &q);
	if (r < 0)
		return r;
	if (json_get_string(q, "type", &type) < 0 || !streq(type, "check") ||
	    json_get_string(q, "name", &name) < 0 || !workload_name_is_valid(name) ||
	    json_get_string(q, "xml", &xml) < 0)
		why = strdup_printf("%s: malformed check message from %s", c->host_name,
				    transport_session_peer(s));
	else
		why = can_run_here(c, name, xml, transport_session_peer(s));
	a = json_pack("{s:s,s:b,s:s?}", "type", "checked", "ok", why == NULL, "message", why);
	r = a ? transport_session_send_control(s, a) : -ENOMEM;
	if (r >= 0) {
		json_t *bye = NULL; /* the asker closes first */
		(void)transport_session_recv_control(s, 5 * USEC_PER_SEC, &bye);
		json_decref(bye);
	}
	return 0;
}

int vms_incoming_run(struct manager *m, struct transport_session *s, json_t **ret_result,
		     const char **ret_code, char **ret_message)
{
	const struct migrd_config *c = &m->config;
	const char *peer = transport_session_peer(s), *name = NULL, *xml = NULL, *type = NULL;
	_cleanup_json_ json_t *prep = NULL;
	_cleanup_free_ char *err = NULL, *dir = NULL;
	struct vm_tunnel *tunnel = NULL;
	char sockbuf[128];
	const char *lsock = libvirt_socket(c, sockbuf, sizeof(sockbuf));
	bool running = false, native = false, committed = false;
	uint64_t window = 0;
	json_t *src_record;
	int r;

	r = transport_session_recv_control(s, PREPARE_TIMEOUT, &prep);
	if (r < 0)
		return r;
	if (json_get_string(prep, "type", &type) < 0 || !streq(type, "prepare") ||
	    json_get_string(prep, "name", &name) < 0 || !workload_name_is_valid(name) ||
	    json_get_string(prep, "xml", &xml) < 0 ||
	    (json_object_get(prep, "native") && json_get_bool(prep, "native", &native) < 0) ||
	    (json_object_get(prep, "window") &&
	     (json_get_uint64(prep, "window", &window) < 0 || window > VM_CREDIT_WINDOW_MAX)))
		return refuse(
			s, ret_code, ret_message,
			strdup_printf("%s: malformed prepare message from %s", c->host_name, peer));
	src_record = json_object_get(prep, "record");
	{
		char *why = can_run_here(c, name, xml, peer);
		if (why)
			return refuse(s, ret_code, ret_message, why);
	}
	if (!native) {
		dir = strdup_printf("%s/%s", c->vm_socket_dir, name);
		r = dir ? mkdir_private(dir) : -ENOMEM;
		if (r >= 0)
			r = vm_tunnel_new(s, c->frame_size, false, (size_t)window, &tunnel);
		if (r < 0)
			return refuse(s, ret_code, ret_message,
				      strdup_printf("%s: cannot prepare %s: %s", c->host_name,
						    strna(dir), strerror(-r)));
	}
	{
		_cleanup_json_ json_t *ready = json_pack("{s:s}", "type", "ready");
		r = ready ? transport_session_send_control(s, ready) : -ENOMEM;
	}
	log_info("VM %s arriving from %s (%s)", name, peer,
		 native ? "native libvirt migration" : "carried");

	while (r >= 0) {
		_cleanup_json_ json_t *msg = NULL;
		const char *t = NULL, *target = NULL;
		uint64_t stream;

		r = transport_session_recv_control(s, 3600 * USEC_PER_SEC, &msg);
		if (r < 0)
			break;
		if (json_get_string(msg, "type", &t) < 0)
			continue;
		if (streq(t, "open") && tunnel) {
			_cleanup_free_ char *path = NULL, *cerr = NULL;

			if (json_get_uint64(msg, "stream", &stream) < 0 ||
			    json_get_string(msg, "target", &target) < 0 ||
			    !(streq(target, "libvirt") || streq(target, "qemu"))) {
				transport_session_abort(s, EBADMSG, "malformed open message");
				r = -EBADMSG;
				break;
			}
			path = streq(target, "libvirt") ? strdup(lsock)
							: strdup_printf("%s/qemu.sock", dir);
			r = path ? vm_tunnel_connect(tunnel, (unsigned)stream, target, path, &cerr)
				 : -ENOMEM;
			if (r < 0) {
				_cleanup_free_ char *why = strdup_printf(
					"%s: %s (%s): %s", c->host_name,
					streq(target, "libvirt") ? "libvirtd" : "QEMU", strna(path),
					cerr ?: strerror(-r));
				log_warning("VM %s: %s", name, strna(why));
				transport_session_abort(s, EHOSTUNREACH, strna(why));
				break;
			}
		} else if (streq(t, "commit")) {
			_cleanup_free_ char *jerr = NULL;
			uint64_t time_ms = 0, downtime_ms = 0;
			_cleanup_json_ json_t *ok = NULL;

			(void)vm_completed_job(c->libvirt_uri, name, &time_ms, &downtime_ms, &jerr);
			ok = json_pack("{s:s,s:I,s:I,s:o?}", "type", "committed", "time_ms",
				       (json_int_t)time_ms, "downtime_ms", (json_int_t)downtime_ms,
				       "streams", tunnel ? stream_digests_json(tunnel) : NULL);
			committed = true;
			if (ok)
				(void)transport_session_send_control(s, ok);
			break;
		} else if (streq(t, "cancel")) {
			const char *why = NULL;
			_cleanup_free_ char *derr = NULL, *diag = NULL;
			_cleanup_json_ json_t *ans = NULL;
			bool here = false;

			(void)json_get_string(msg, "message", &why);
			log_warning("VM %s: the move from %s was aborted: %s", name, peer,
				    strna(why));
			/* What this side saw, for the source's error message. */
			if (vm_is_running(c->libvirt_uri, name, &here, &derr) < 0)
				diag = strdup_printf("libvirt on %s: %s", c->host_name,
						     strna(derr));
			else if (tunnel && vm_tunnel_error(tunnel))
				diag = strdup_printf("%s: %s", c->host_name,
						     vm_tunnel_error(tunnel));
			ans = json_pack("{s:s,s:s?}", "type", "cancelled", "diagnosis", diag);
			if (ans)
				(void)transport_session_send_control(s, ans);
			break;
		}
	}
	/* Let the source read the answer and close first: its end is the tunnel's end too. */
	if (committed) {
		json_t *bye = NULL;
		(void)transport_session_recv_control(s, 5 * USEC_PER_SEC, &bye);
		json_decref(bye);
	}
	tunnel = vm_tunnel_free(tunnel);
	if (dir)
		remove_dir(dir, socket_files);

	/* Whatever the session said: if the VM runs here now, it is ours (the source may have
	 * vanished after libvirt finished). */
	free(err);
	err = NULL;
	if (vm_is_running(c->libvirt_uri, name, &running, &err) >= 0 && running) {
		json_t *rec = take_record(c->libvirt_uri, name, src_record);

		if (!committed)
			log_warning("VM %s runs here although %s did not commit the move: taking "
				    "it over",
				    name, peer);
		*ret_result = json_pack("{s:o*,s:s}", "take", rec, "from", peer);
		return 0;
	}
	if (committed) {
		/* The source let it go, and the cluster names this host its owner: a guest that
		 * stopped here at once (it crashed as it arrived) stays in this host's care, as it
		 * would had it stopped a moment later. */
		json_t *rec = take_record(c->libvirt_uri, name, src_record);

		if (rec) {
			const char *state = json_string_value(json_object_get(rec, "state"));

			log_warning("VM %s: %s committed the move, but it does not run here (%s): "
				    "kept in this host's care",
				    name, peer, strna(state));
			*ret_result = json_pack("{s:o,s:s,s:b}", "take", rec, "from", peer,
						"stopped", true);
			return 0;
		}
		log_error("VM %s: %s committed the move, but it is not here (%s)", name, peer,
			  strna(err));
	}
	*ret_result = json_object();
	return 0;
}

void vms_incoming_done(struct manager *m, json_t *result)
{
	json_t *rec = json_object_get(result, "take");
	const char *name = NULL;

	if (!rec || json_get_string(rec, "name", &name) < 0 || !workload_name_is_valid(name))
		return;
	if (vms_take(m, name, rec) < 0) {
		log_error("VM %s arrived, but cannot be recorded: out of memory", name);
		return;
	}
	{
		const char *from = NULL;
		(void)json_get_string(result, "from", &from);
		vms_claim(m, name, from);
	}
	log_struct_errno(LOG_INFO, 0, LOG_FIELDS("MIGRD_EVENT=vm-arrived"), "VM %s arrived %s",
			 name,
			 json_is_true(json_object_get(result, "stopped")) ? "and stopped here"
									  : "and runs here");
}

/* ---- can the peers run it? (vm-adopt) ------------------------------------------------------- */

int vms_peers(struct manager *m, struct vm_peer **ret, size_t *ret_n)
{
	const struct cluster_state *st = cluster_get_state(m->cluster);
	struct vm_peer *p = calloc(st->n_hosts ?: 1, sizeof(*p));
	size_t n = 0;

	if (!p)
		return -ENOMEM;
	for (size_t i = 0; i < st->n_hosts; i++) {
		const struct cluster_host *h = &st->hosts[i];
		const char *address = migrd_config_peer_address(&m->config, h->name) ?: h->address;
		int encrypt, transport, level;
		unsigned streams;

		if (streq(h->name, m->config.host_name) || !address ||
		    transport_parse_address(address, m->config.port, &p[n].addr, &p[n].addr_len) <
			    0)
			continue;
		strscpy(p[n].name, h->name, sizeof(p[n].name));
		migrd_config_peer(&m->config, h->name, &encrypt, &transport, &level, &streams);
		p[n].encrypt = encrypt;
		n++;
	}
	*ret = p;
	*ret_n = n;
	return 0;
}

json_t *vms_check_peers(struct transport_context *ctx, const struct vm_peer *peers, size_t n,
			const char *name, const char *xml)
{
	json_t *out = json_object();

	for (size_t i = 0; out && i < n; i++) {
		struct transport_session_params params = {
			.kind = TRANSPORT_KIND_TCP,
			.n_streams = 1,
			.encrypt = peers[i].encrypt,
			.purpose = "vm-check",
		};
		_cleanup_json_ json_t *q = json_pack("{s:s,s:s,s:s}", "type", "check", "name", name,
						     "xml", xml),
				      *a = NULL;
		_cleanup_free_ char *err = NULL, *verdict = NULL;
		struct transport_session *s = NULL;
		const char *msg = NULL;
		int r;

		r = ctx ? transport_session_connect(ctx, peers[i].name,
						    (const struct sockaddr *)&peers[i].addr,
						    peers[i].addr_len, &params, &s, &err)
			: -ENOTCONN;
		if (r >= 0)
			r = q ? transport_session_send_control(s, q) : -ENOMEM;
		if (r >= 0)
			r = transport_session_recv_control(s, PREPARE_TIMEOUT, &a);
		if (r < 0)
			verdict = strdup_printf(
				"unreachable: %s",
				err
					?: (s && transport_session_error(s, &msg) < 0 && msg)
					   ? (err ? err : msg)
					   : strerror(-r));
		else if (json_is_true(json_object_get(a, "ok")))
			verdict = strdup("ok");
		else
			verdict =
				strdup(json_get_string(a, "message", &msg) >= 0 ? msg : "refused");
		transport_session_free(s);
		json_object_set_new(out, peers[i].name, json_string(verdict ?: "unknown"));
	}
	return out;
}
