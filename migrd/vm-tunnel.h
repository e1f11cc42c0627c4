/* Local stream sockets carried over a transport session: on the source, migrd listens on UNIX
 * sockets that libvirtd and QEMU connect to, and each accepted connection takes the next data
 * stream of the session; on the destination, migrd connects each stream, in the order the
 * source accepted them, to the local socket it names. Both directions are carried, every read
 * is sent at once (libvirt's return path and QEMU's tail need prompt delivery), and a half
 * close travels as the end of the stream. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "transport/transport.h"

struct vm_tunnel;

/* frame_size: the session's frame size. With gather (for a compressed session), a frame takes
 * what arrives without a pause, up to 256 KiB, so zstd sees more of the stream at once; without
 * it, frames are at most 128 KiB and leave as soon as read, so little waits in buffers on a
 * slow link (the downtime's tail crosses them). The tunnel never frees s; free the tunnel
 * before the session. */
/* window: 0, or credits: the source sends at most window bytes on a stream beyond what the
 * destination reports it has written to the local socket, so what QEMU takes for sent is close
 * to what the destination QEMU has (the rest must cross when the guest stops). The session's
 * last stream then carries the reports; both ends must agree on the window (at least four
 * frames). */
int vm_tunnel_new(struct transport_session *s, size_t frame_size, bool gather, size_t window,
		  struct vm_tunnel **ret);
struct vm_tunnel *vm_tunnel_free(struct vm_tunnel *t);

/* Source: listen on path (a new UNIX socket, mode 0600) for connections to carry; target
 * ("libvirt", "qemu") tells the destination where to connect them. */
int vm_tunnel_listen(struct vm_tunnel *t, const char *path, const char *target);
/* Source: starts accepting. For every connection, in accept order, it sends the control
 * message {"type":"open","stream":N,"target":T} and then carries the data. */
int vm_tunnel_start(struct vm_tunnel *t);

/* Destination: connects stream (opened for target) to the UNIX socket at path and carries it.
 * On failure *ret_error says what could not be reached. */
int vm_tunnel_connect(struct vm_tunnel *t, unsigned stream, const char *target, const char *path,
		      char **ret_error);

/* The source -> destination half of a carried connection, end to end: on the source what its
 * session put on the wire, on the destination what was written to the local socket, in bytes
 * and folded into a digest (transport_digest_fold()). The two ends' digests are equal when
 * the destination's QEMU was handed, byte for byte, what the source's QEMU sent. */
struct vm_tunnel_digest {
	unsigned stream;
	bool complete; /* the half ended (EOF on the source's local end) and all of it went */
	uint64_t bytes, digest;
};
/* The halves of the connections carried for target (source: this is the source), in accept
 * order, waiting up to timeout for all of them to be complete. Returns how many there are
 * (-ENOBUFS when more than max). */
int vm_tunnel_digests(struct vm_tunnel *t, const char *target, bool source, usec_t timeout,
		      struct vm_tunnel_digest *ret, unsigned max);

/* Connections carried so far, bytes read from and written to the local sockets. */
void vm_tunnel_stats(struct vm_tunnel *t, unsigned *ret_conns, uint64_t *ret_local_in,
		     uint64_t *ret_local_out);
/* The first error of the tunnel itself (a local socket failed, streams ran out), or NULL. */
const char *vm_tunnel_error(struct vm_tunnel *t);
