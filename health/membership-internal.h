/* Helpers of membership.c exposed to its unit tests only. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <corosync/corotypes.h>

/* corosync's cs_error_t as 0 or -errno; CS_ERR_LIBRARY (no IPC connection) is -ECONNREFUSED. */
int cs_error_to_errno(cs_error_t err);

/* Sorts ids ascending and drops duplicates in place; returns the new count. */
size_t health_nodeids_sort_unique(uint32_t *ids, size_t n);
