/* Pipes and sockets of a container: their dump (buffered data, unix socket pairs through
 * sock_diag, TCP through TCP_REPAIR) and their re-creation at restore. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include "checkpoint/ct/image-internal.h"

struct dumper;
struct dproc;

/* Socket states in the records (independent of the kernel's numbers). */
enum net_sock_state {
	NET_SOCK_UNCONNECTED,
	NET_SOCK_LISTEN,
	NET_SOCK_CONNECTED,
};

/* Buffered data of the pipe that fd (ours, in the host) is an end of, without consuming it. */
int net_pipe_peek(pid_t hpid, int task_fd, int ours, size_t size, uint8_t **ret, size_t *ret_len);

/* How a dump leaves a TCP socket: in repair mode, and whether SO_REUSEADDR was set before it
 * (repair mode forces address reuse, and leaving it clears SO_REUSEADDR). */
enum { NET_REPAIR = 1U, NET_REPAIR_REUSE = 2U };

/* Fills rec for a socket. An established TCP connection's own state is read later, by
 * net_dump_tcp_later(): its record is complete only then. */
int net_dump_socket(struct dumper *d, struct dproc *p, int fd, int ours, uint64_t ino,
		    struct ct_image_fd *rec);
/* Once the container is frozen again after every process's state: each established TCP
 * connection is put in repair mode and read (so that a migrd that dies before never leaves a
 * running container with connections in repair mode). */
int net_dump_tcp_later(struct dumper *d);
void net_dump_free(struct dumper *d);
/* Every unix socket connected to another in the container, every epoll target present. */
int net_dump_check(struct dumper *d);
/* Out of repair mode (how: NET_REPAIR*, as the dump left it). */
void net_tcp_repair_off(int fd, unsigned how);

/* Restore: a socket for rec, created in the network namespace netns_fd (-1: ours). For a
 * unix pair, *ret_peer gets the other end (for the record whose object is peer). */
int net_restore_socket(const struct ct_image_fd *rec, int netns_fd, int *ret_fd, char *err,
		       size_t errlen);
int net_restore_unix_pair(const struct ct_image_fd *a, const struct ct_image_fd *b, int *ret_a,
			  int *ret_b, char *err, size_t errlen);
/* Sets, in the network namespace open at netns_fd, each of the n sysctls whose value there
 * differs; *ret_set: how many were written. On failure err names the sysctl. */
int net_restore_sysctls(int netns_fd, const struct ct_image_sysctl *s, size_t n, char *err,
			size_t errlen, size_t *ret_set);
/* The queued input of rec's socket, sent into it through peer (the other end). */
int net_unix_refill(const struct ct_image_fd *rec, int peer_fd);
/* A named unix socket (bound, maybe listening) that is not part of a pair: its address, and
 * its backlog (-1: not listening). Returns 1 when there is a name to bind, else 0. */
int net_unix_name(const struct ct_image_fd *f, struct sockaddr_un *ret, socklen_t *ret_len,
		  int *ret_backlog);
/* Unix socket type of a record, -1 when the record is not a unix socket. */
int net_unix_record_peer(const struct ct_image_fd *rec, uint64_t *ret_peer);
