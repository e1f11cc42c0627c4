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

enum transport_choice {
	TRANSPORT_CHOICE_TCP,
	TRANSPORT_CHOICE_RDMA,
	TRANSPORT_CHOICE_AUTO,
	_TRANSPORT_CHOICE_MAX,
};
const char *transport_choice_to_string(enum transport_choice t);
int transport_choice_from_string(const char *s);

#define COMPRESS_AUTO (-1000) /* compress_level value for "auto" */
#define UNSET	      (-2000) /* a per-peer value not given */

/* [peer NAME]: settings for the link to one host; UNSET fields follow [transport]. */
struct migrd_peer_config {
	char *name;
	char *address; /* overrides the address the peer registered (NAT, proxies) */
	int encrypt;
	int transport;
	int compress_level;
	unsigned streams; /* 0 = unset */
};

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

	/* [transport] */
	char *ca_file, *cert_file, *key_file;
	unsigned streams;   /* data streams per session; default: number of cores */
	int encrypt;	    /* 1: TLS on data streams; 0 only by explicit config */
	int transport;	    /* enum transport_choice */
	int compress_level; /* COMPRESS_AUTO, 0 = off, or a zstd level */
	usec_t stall_timeout;
	usec_t handshake_timeout;
	uint64_t frame_size;
	struct migrd_peer_config *peers;
	size_t n_peers;

	/* [vm] */
	char *libvirt_uri;    /* where this host's VMs are: qemu:///system by default */
	char *libvirt_socket; /* libvirtd's UNIX socket for incoming moves; NULL: from the URI */
	char *vm_socket_dir;  /* where moves put their local sockets (same path on every host) */
	usec_t vm_downtime, vm_max_downtime, vm_converge_timeout;
	uint64_t vm_bandwidth; /* bytes/s, 0: unlimited */
	unsigned vm_parallel;  /* extra connections of parallel migration, 0: off */
	int vm_postcopy, vm_auto_converge;

	/* [log] */
	int log_level;	/* syslog level */
	int log_target; /* enum log_target */
};

/* The effective settings for a link to peer (its [peer] section over [transport]). */
void migrd_config_peer(const struct migrd_config *c, const char *peer, int *ret_encrypt,
		       int *ret_transport, int *ret_compress_level, unsigned *ret_streams);
const char *migrd_config_peer_address(const struct migrd_config *c, const char *peer);

/* Fills in every default. host_name defaults to the machine's hostname, so this can fail. */
int migrd_config_init_defaults(struct migrd_config *c);
void migrd_config_done(struct migrd_config *c);

/* Parses INI text over the defaults already in *c. On errors, returns -EINVAL and sets
 * *ret_errors to a newline-separated list of "FILE:LINE: reason" messages. Pure: no I/O. */
int migrd_config_parse(struct migrd_config *c, const char *filename, const char *text, size_t size,
		       char **ret_errors);

/* Reads and parses a file; a missing file at the default path is not an error. */
int migrd_config_load(struct migrd_config *c, const char *path, bool must_exist, char **ret_errors);
