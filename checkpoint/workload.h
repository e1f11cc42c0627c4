/* The checkpoint module's public header: workloads (containers, VMs) as the daemon sees them.
 * The container and VM engines plug in behind struct workload_ops. */
#pragma once

#include <stdbool.h>

#define WORKLOAD_NAME_MAX 63

enum workload_kind {
	WORKLOAD_CONTAINER,
	WORKLOAD_VM,
	_WORKLOAD_KIND_MAX,
};

enum workload_state {
	WORKLOAD_STOPPED,
	WORKLOAD_RUNNING,
	WORKLOAD_FROZEN,
	WORKLOAD_MIGRATING,
	WORKLOAD_FAILED,
	_WORKLOAD_STATE_MAX,
};

const char *workload_kind_to_string(enum workload_kind k);
int workload_kind_from_string(const char *s);
const char *workload_state_to_string(enum workload_state s);
int workload_state_from_string(const char *s);

/* Workload names are used in paths, cgroup names and libvirt names: letters, digits, '-', '_',
 * '.', 1-63 bytes, not starting with '-' or '.'. */
bool workload_name_is_valid(const char *name);
