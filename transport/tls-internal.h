/* TLS 1.3 with mutual authentication against the cluster CA (OpenSSL 3). A peer is accepted
 * only with a certificate from our CA whose name (subjectAltName DNS, else CN) is the expected
 * host (client side) or passes the name check (server side: a cluster host name). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"
#include "transport/conn-internal.h"

struct transport_tls;

/* Loads the CA certificate, our certificate and key (PEM). Fails with a message that names
 * the file and the problem (missing, unreadable, key does not match, not signed by the CA,
 * expired). */
int transport_tls_new(const char *ca_file, const char *cert_file, const char *key_file,
		      struct transport_tls **ret, char **ret_error);
struct transport_tls *transport_tls_free(struct transport_tls *t);
/* The host name in our own certificate. */
const char *transport_tls_own_name(struct transport_tls *t);

typedef bool (*transport_name_check_t)(void *userdata, const char *name);

/* Runs the handshake on a connected socket (taken, even on failure) within timeout and returns
 * a connection (ops name "tls") with peer_name set. Client: expected_name must match the
 * peer's certificate. Server: name_ok(userdata, name) must accept it. Errors: -EACCES for an
 * authentication failure (message says why: unknown CA, wrong name, not a cluster host, no
 * certificate), -ETIMEDOUT, -ECONNRESET, -EPROTO for anything else TLS.
 * The handshake ends with one byte from server to client (tls.c: TLS_ACCEPTED_BYTE), so a
 * refused client learns it here, not at its first read. A "tls" connection may be used by one
 * sending and one receiving thread at once. */
int transport_tls_handshake(struct transport_tls *t, int fd, bool is_server,
			    const char *expected_name, transport_name_check_t name_ok,
			    void *userdata, usec_t timeout, struct transport_conn **ret,
			    char **ret_error);

/* RFC 5705/8446 keying material of an established "tls" connection, for binding plain data
 * connections to the authenticated session. */
int transport_tls_export_key(struct transport_conn *c, const char *label, const void *context,
			     size_t context_len, uint8_t *out, size_t out_len);

/* HMAC-SHA256, for the plain data connections' proof of the session key. */
int transport_hmac_sha256(const uint8_t *key, size_t key_len, const void *data, size_t len,
			  uint8_t out[32]);
