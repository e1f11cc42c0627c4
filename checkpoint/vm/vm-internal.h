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
