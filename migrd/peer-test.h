/* peer-test: measures the link to a peer through a real transport session, like iperf for
 * migrd; and the sink on the peer that checks what arrived. */
#pragma once

#include <jansson.h>
#include <sys/socket.h>

#include "transport/transport.h"

struct peer_test {
	struct transport_context *ctx;
	char peer[64];
	struct sockaddr_storage addr;
	socklen_t addr_len;
	uint64_t size;
	struct transport_session_params params;
	char *source; /* "zeros", "random" or a file path */
};

void peer_test_free(void *p);
/* The job: connect, send size bytes of the source over every stream, finish, and compare the
 * peer's per-stream digests with ours. The result is the control API's peer-test reply. */
int peer_test_run(void *arg, json_t **ret_result, const char **ret_code, char **ret_message);
/* The peer's side: drains every stream, hashes it, reports digests and CPU time. */
int peer_test_sink(struct transport_session *s);
