/* The health module's public header: local probes (CPU, memory, PSI, load) and corosync
 * membership/quorum. It reports state; it decides nothing. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

/* ---- local probes ---------------------------------------------------------------- */

struct health_psi {
	bool available;    /* false where /proc/pressure/<res> is absent or unreadable */
	bool has_full;     /* the "full" line exists (cpu has it only on newer kernels) */
	double some_avg10; /* percent */
	double full_avg10; /* percent */
};

struct health_cpu_times {
	uint64_t busy; /* user+nice+system+irq+softirq+steal, in USER_HZ ticks */
	uint64_t total; /* busy + idle + iowait */
};

struct health_metrics {
	uint64_t timestamp_usec; /* CLOCK_REALTIME when sampled */
	double cpu_busy_pct;     /* over the interval since the previous sample; -1 on the first */
	uint64_t mem_total;      /* bytes */
	uint64_t mem_used;       /* bytes: MemTotal - MemAvailable */
	double load[3];          /* 1, 5, 15 minutes */
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
/* Reads everything; a missing PSI file is not an error (psi_*.available = false). */
int health_probe_sample(struct health_probe *p, struct health_metrics *ret);

/* ---- corosync membership and quorum ---------------------------------------------- */

struct health_membership;

struct health_membership_ops {
	/* A new CPG configuration of our group, in delivery order with messages. The arrays are
	 * node ids, sorted ascending, valid only during the call. */
	void (*confchg)(void *userdata, const uint32_t *members, size_t n_members,
			const uint32_t *left, size_t n_left, const uint32_t *joined, size_t n_joined);
	/* An ordered (agreed) message from nodeid; valid only during the call. */
	void (*deliver)(void *userdata, uint32_t nodeid, const void *msg, size_t len);
	/* votequorum's view changed (also called once right after connecting). */
	void (*quorum)(void *userdata, bool quorate, const uint32_t *nodes, size_t n_nodes);
	/* The connection to corosync broke (corosync stopped or restarted). The membership object
	 * is now inert; the owner frees it and may call health_membership_new() again later. */
	void (*disconnected)(void *userdata, int error);
};

/* Connects to corosync (CPG + votequorum + cmap), joins the CPG group and attaches the
 * dispatch fds to the event loop. Fails with -ECONNREFUSED/-EHOSTDOWN when corosync is not
 * running (the message saying why is logged at debug level). */
int health_membership_new(sd_event *e, const char *group, const struct health_membership_ops *ops,
			  void *userdata, struct health_membership **ret);
struct health_membership *health_membership_free(struct health_membership *m);

uint32_t health_membership_local_nodeid(struct health_membership *m);
/* Sends an agreed-order message to the group (delivered to everyone, ourselves included).
 * Returns -EAGAIN when corosync asks to retry later (flow control), -EMSGSIZE when too big. */
int health_membership_send(struct health_membership *m, const void *msg, size_t len);
/* The name corosync's nodelist gives a node id (nodelist.node.X.name), or -ENOENT. */
int health_membership_node_name(struct health_membership *m, uint32_t nodeid, char **ret);
