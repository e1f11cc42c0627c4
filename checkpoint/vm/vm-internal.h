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
