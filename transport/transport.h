/* The transport module's public header: authenticated byte streams between migrd hosts.
 * So far: peer addresses. Sessions, framing, TLS and RDMA build on these. */
#pragma once

#include <stdint.h>
#include <sys/socket.h>

/* Parses "10.0.0.1", "10.0.0.1:7870", "[fd00::1]:7870", "fd00::1" or "hostB[:port]" (resolved
 * with getaddrinfo, numeric first). default_port applies when none is given. */
int transport_parse_address(const char *s, uint16_t default_port, struct sockaddr_storage *ret,
			    socklen_t *ret_len);
/* "10.0.0.1:7870" / "[fd00::1]:7870" */
char *transport_format_address(const struct sockaddr *sa, socklen_t len, char *buf, size_t size);
