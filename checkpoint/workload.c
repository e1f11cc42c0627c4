/* Workload kinds, states and names. */
#include <string.h>

#include "checkpoint/workload.h"
#include "common/common.h"

static const char *const kind_table[_WORKLOAD_KIND_MAX] = {
	[WORKLOAD_CONTAINER] = "container",
	[WORKLOAD_VM] = "vm",
};
DEFINE_STRING_TABLE_LOOKUP(workload_kind, enum workload_kind, kind_table);

static const char *const state_table[_WORKLOAD_STATE_MAX] = {
	[WORKLOAD_STOPPED] = "stopped", [WORKLOAD_RUNNING] = "running",
	[WORKLOAD_FROZEN] = "frozen",	[WORKLOAD_MIGRATING] = "migrating",
	[WORKLOAD_FAILED] = "failed",
};
DEFINE_STRING_TABLE_LOOKUP(workload_state, enum workload_state, state_table);

bool workload_name_is_valid(const char *name)
{
	return string_is_safe_name(name, WORKLOAD_NAME_MAX);
}
