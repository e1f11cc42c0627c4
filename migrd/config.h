/* migrd.conf: the data model and its pure parser (text in, struct out). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

#define MIGRD_DEFAULT_CONFIG "/etc/migrd/migrd.conf"
#define MIGRD_HOST_NAME_MAX  63
#define MIGRD_DEFAULT_PORT   7870

enum fence_mode {
	FENCE_MODE_NONE,    /* never fence (test clusters only) */
	FENCE_MODE_SELF,    /* wait until the lost host must have self-fenced */
	FENCE_MODE_COMMAND, /* run fence_command, then proceed on exit 0 */
	_FENCE_MODE_MAX,
};
const char *fence_mode_to_string(enum fence_mode m);
int fence_mode_from_string(const char *s);

struct migrd_config {
	/* [host] */
	char *host_name;
	char *address; /* peer-facing address (IPv4/IPv6 literal or DNS name) */
	uint16_t port;

	/* [paths] */
	char *state_dir;
	char *control_socket;
	char *control_group;

	/* [cluster] */
	char *cpg_group;
	usec_t metrics_interval;
	usec_t sync_timeout;

	/* [fencing] */
	enum fence_mode fence_mode;
	char *fence_command;
	usec_t self_fence_timeout; /* a host without quorum kills its protected workloads after this
				    */
	usec_t fence_timeout;	   /* how long the fence command may run */

	/* [limits] */
	uint64_t control_max_request;
	unsigned control_max_clients;
	unsigned control_max_inflight;

	/* [log] */
	int log_level;	/* syslog level */
	int log_target; /* enum log_target */
};

/* Fills in every default. host_name defaults to the machine's hostname, so this can fail. */
int migrd_config_init_defaults(struct migrd_config *c);
void migrd_config_done(struct migrd_config *c);

/* Parses INI text over the defaults already in *c. On errors, returns -EINVAL and sets
 * *ret_errors to a newline-separated list of "FILE:LINE: reason" messages. Pure: no I/O. */
int migrd_config_parse(struct migrd_config *c, const char *filename, const char *text, size_t size,
		       char **ret_errors);

/* Reads and parses a file; a missing file at the default path is not an error. */
int migrd_config_load(struct migrd_config *c, const char *path, bool must_exist, char **ret_errors);
