/* TCP helpers shared by the plain and TLS connections and the session layer. */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>

#include "common/util.h"

/* Polls fd for events until the deadline: 0 when ready, -ETIMEDOUT, -ECANCELED once *cancelled
 * is set (checked at least every 200 ms). */
int transport_fd_wait(int fd, short events, usec_t deadline, const atomic_bool *cancelled);
/* Non-blocking, TCP_NODELAY, keepalive. */
int transport_socket_tune(int fd);
/* Connects within timeout; the socket comes back tuned. */
int transport_tcp_connect(const struct sockaddr *sa, socklen_t len, usec_t timeout, int *ret_fd);
