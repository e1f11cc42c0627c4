/* The health module's public header: local probes (CPU, memory, PSI, load) and corosync
 * membership/quorum. It reports state; it decides nothing. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

/* ---- local probes ---------------------------------------------------------------- */

struct health_psi {
	bool available;	   /* false where /proc/pressure/<res> is absent or unreadable */
	bool has_full;	   /* the "full" line exists (cpu has it only on newer kernels) */
	double some_avg10; /* percent */
	double full_avg10; /* percent */
};

struct health_cpu_times {
	uint64_t busy;	/* user+nice+system+irq+softirq+steal, in USER_HZ ticks */
	uint64_t total; /* busy + idle + iowait */
};

struct health_metrics {
	uint64_t timestamp_usec; /* CLOCK_REALTIME when sampled */
	double cpu_busy_pct;	 /* over the interval since the previous sample; -1 on the first */
	uint64_t mem_total;	 /* bytes */
	uint64_t mem_used;	 /* bytes: MemTotal - MemAvailable */
	double load[3];		 /* 1, 5, 15 minutes */
	unsigned n_cpus;
	struct health_psi psi_cpu, psi_memory, psi_io;
};

/* Pure parsers (text in, values out), fuzzed and unit-tested. Return 0 or -EINVAL. */
int health_parse_stat_cpu(const char *text, struct health_cpu_times *ret);
int health_parse_meminfo(const char *text, uint64_t *ret_total, uint64_t *ret_available);
int health_parse_psi(const char *text, struct health_psi *ret);
int health_parse_loadavg(const char *text, double ret_load[3]);

/* A probe remembers the previous CPU sample so busy % is over the last interval.
 * proc_root is "/proc" in production, a fixture directory in tests. */
struct health_probe;
int health_probe_new(const char *proc_root, struct health_probe **ret);
struct health_probe *health_probe_free(struct health_probe *p);
/* Reads everything; a missing or unparsable PSI file is not an error (psi_*.available =
 * false); a missing or unparsable stat, meminfo or loadavg is (-ENOENT, -EINVAL, …). */
int health_probe_sample(struct health_probe *p, struct health_metrics *ret);

/* ---- corosync membership and quorum ---------------------------------------------- */

struct health_membership;

/* All callbacks run from the sd-event loop, never from inside health_membership_*() calls.
 * health_membership_free() may be called from any of them: the object goes quiet at once (no
 * further callbacks) and is released when the corosync dispatch in progress returns. */
struct health_membership_ops {
	/* A new CPG configuration of our group, in delivery order with messages. The arrays are
	 * node ids, sorted ascending, valid only during the call. CPG tracks processes, this
	 * reports nodes: a node with several processes in the group appears once, "left" only
	 * holds nodes with no process left in the group, and a change that adds no node to
	 * "joined" or "left" is not reported. A node restarting its process can therefore show
	 * up in "joined" while already a member. The first call after joining lists the whole
	 * group with joined = { our node id } (members = { ours } when we are alone). */
	void (*confchg)(void *userdata, const uint32_t *members, size_t n_members,
			const uint32_t *left, size_t n_left, const uint32_t *joined,
			size_t n_joined);
	/* An ordered (agreed) message from nodeid; valid only during the call. */
	void (*deliver)(void *userdata, uint32_t nodeid, const void *msg, size_t len);
	/* votequorum's view changed (also called once right after connecting, from the loop).
	 * nodes are the current members (votequorum's dead and leaving nodes are left out). */
	void (*quorum)(void *userdata, bool quorate, const uint32_t *nodes, size_t n_nodes);
	/* The connection to corosync broke (corosync stopped or restarted); error is
	 * -ECONNRESET then, or what a failed dispatch said (-ENOMEM, …). Called at most once, from
	 * a deferred event source of its own (never inside a corosync dispatch), after the dispatch
	 * fds were disabled. The membership object is now inert (send/node_name return -ENOTCONN);
	 * the owner frees it, here or later, and may call health_membership_new() again. */
	void (*disconnected)(void *userdata, int error);
};

/* Connects to corosync (CPG + votequorum + cmap), joins the CPG group and attaches the
 * dispatch fds to the event loop. Fails with -ECONNREFUSED/-EHOSTDOWN when corosync is not
 * running (the message saying why is logged at debug level), -EAGAIN when corosync kept
 * refusing the join for half a second (it is syncing a membership change). */
int health_membership_new(sd_event *e, const char *group, const struct health_membership_ops *ops,
			  void *userdata, struct health_membership **ret);
struct health_membership *health_membership_free(struct health_membership *m);

uint32_t health_membership_local_nodeid(struct health_membership *m);
/* The largest message send() accepts: corosync's atomic CPG message size (1 MiB - 1 KiB with
 * corosync 3.1). Larger state must be split by the caller. */
size_t health_membership_max_message_size(struct health_membership *m);
/* Sends an agreed-order message to the group (delivered to everyone, ourselves included).
 * Returns -EAGAIN when corosync asks to retry later (flow control), -EMSGSIZE when too big,
 * -ENOTCONN once the connection broke. Never blocks on flow control. */
int health_membership_send(struct health_membership *m, const void *msg, size_t len);
/* The name corosync's nodelist gives a node id (nodelist.node.X.name), or -ENOENT. */
int health_membership_node_name(struct health_membership *m, uint32_t nodeid, char **ret);
