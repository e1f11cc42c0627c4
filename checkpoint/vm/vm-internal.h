/* VMs through the libvirt C API: what a domain is (name, uuid, state, memory, vcpus). Every
 * call blocks (it connects to libvirtd): run them off the event loop. Errors keep libvirt's
 * message. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VM_UUID_STRING_MAX 37

struct vm_info {
	char *name;
	char uuid[VM_UUID_STRING_MAX];
	const char *state; /* "running", "paused", "shut off", ... (static) */
	uint64_t memory_kib, max_memory_kib;
	unsigned vcpus;
	bool persistent;
};

void vm_info_done(struct vm_info *i);

/* The domain name at uri. -ENOENT when libvirt has no such domain, -ECONNREFUSED when
 * libvirtd cannot be reached; *ret_error (malloc'd) says why in either case. */
int vm_lookup(const char *uri, const char *name, struct vm_info *ret, char **ret_error);

/* The states of domains names[0..n) in one connection: (*ret_states)[i] is a static string,
 * or NULL when the domain is gone. */
int vm_states(const char *uri, char *const *names, size_t n, const char ***ret_states,
	      char **ret_error);

const char *vm_state_to_string(int libvirt_state);

/* Domain lifecycle events of one libvirt connection, received in a thread of their own (it runs
 * libvirt's event loop and reconnects every 2 s while libvirtd is away). Each event writes the
 * domain's name to a queue and makes fd readable: the caller's event loop drains it with
 * vm_events_next(). */
struct vm_events;

int vm_events_start(const char *uri, struct vm_events **ret);
struct vm_events *vm_events_stop(struct vm_events *e);
/* An eventfd: readable while names are queued. */
int vm_events_fd(const struct vm_events *e);
/* The next domain name with an event (malloc'd), or NULL when none is left. */
char *vm_events_next(struct vm_events *e);

/* ---- vm-migrate.c: live migration driven through libvirt's peer-to-peer API --------------- */

struct vm_progress {
	const char *phase; /* "starting", "precopy", "postcopy", "completing" (static) */
	uint64_t iteration;
	uint64_t processed, total, remaining; /* bytes (libvirt counts uncompressed) */
	uint64_t bps;			      /* memory transfer rate, bytes/s */
	uint64_t dirty_rate;		      /* bytes/s */
	uint64_t expected_downtime_ms;
	uint64_t downtime_limit_ms;	 /* what migrd asked for, raised in steps */
	uint64_t qemu_downtime_limit_ms; /* what QEMU was given (see wire_ratio), 0: not yet */
	uint64_t elapsed_ms;
	unsigned throttle; /* auto-converge's CPU throttle, % */
};

struct vm_migrate_params {
	const char *uri;	  /* the source's libvirt */
	const char *name;	  /* the domain */
	const char *dest_uri;	  /* the destination libvirt as the source libvirtd reaches it */
	const char *migrate_uri;  /* where QEMU sends its stream; NULL: libvirt's choice */
	unsigned parallel;	  /* extra connections for parallel migration; 0: off */
	uint64_t bandwidth_mib;	  /* MiB/s, 0: unlimited */
	uint64_t downtime_ms;	  /* the initial downtime limit */
	uint64_t downtime_max_ms; /* raised in steps (doubling) up to this */
	uint64_t converge_s;	  /* pre-copy time before post-copy or the downtime steps */
	bool postcopy;		  /* may switch to post-copy when pre-copy does not converge */
	bool auto_converge;
	/* Called every poll (about 4 times a second) from the calling thread. */
	void (*progress)(void *userdata, const struct vm_progress *p);
	/* Returns a reason (static or owned by userdata) to abort the migration, or NULL. */
	const char *(*should_abort)(void *userdata);
	/* Bytes on the wire per byte of QEMU's stream so far (below 1 when compressed); NULL or
	 * 0: 1. QEMU gets the downtime limit times this: it judges what it can send in the limit
	 * by the rate at which the stream is taken from it, and that rate counts compressed
	 * bytes; the scaled limit still holds when what is left at the stop does not compress. */
	double (*wire_ratio)(void *userdata);
	void *userdata;
};

struct vm_migrate_result {
	uint64_t time_ms;     /* libvirt's total time */
	uint64_t downtime_ms; /* libvirt's measured downtime (0 when unknown) */
	uint64_t processed;   /* bytes QEMU sent (uncompressed) */
	uint64_t downtime_limit_ms;
	bool postcopy; /* it switched to post-copy */
};

/* Migrates p->name live to p->dest_uri and waits for the end, steering convergence.
 * On success the domain runs on the destination (persistent there when it was here). On
 * failure it still runs here; *ret_error (malloc'd) has libvirt's message and, with a
 * convergence abort, why. Returns -ETIMEDOUT when it did not converge, -ECANCELED when
 * should_abort() asked, -EIO for libvirt failures. */
int vm_migrate(const struct vm_migrate_params *p, struct vm_migrate_result *ret, char **ret_error);

/* The domain's XML for a migration (libvirt's migratable form, malloc'd), whether it runs, and
 * (when ret_libvirt_version is not NULL) libvirt's version as major * 1000000 + minor * 1000
 * + micro. */
int vm_domain_xml(const char *uri, const char *name, char **ret_xml, bool *ret_running,
		  unsigned long *ret_libvirt_version, char **ret_error);

/* The stats of the last completed job of the domain (on either side): downtime and total time
 * in ms; -ENOENT when libvirt keeps none. */
int vm_completed_job(const char *uri, const char *name, uint64_t *ret_time_ms,
		     uint64_t *ret_downtime_ms, char **ret_error);

/* Whether the domain's state at uri is "running" (not paused, not shut off). */
int vm_is_running(const char *uri, const char *name, bool *ret, char **ret_error);

/* ---- vm-xml.c: what a domain needs from a host --------------------------------------------- */

/* Checks, from the domain XML, that this host has what it would need to run it: the emulator,
 * kernel/initrd/loader files, and every disk's source (file or block device). 0, or -ENOENT
 * with *ret_error naming the first missing path; -EINVAL when the XML is not a domain. */
int vm_xml_check_host(const char *xml, char **ret_error);
/* The domain name in the XML (malloc'd), or NULL. */
char *vm_xml_name(const char *xml);
