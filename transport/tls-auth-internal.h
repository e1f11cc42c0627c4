/* Shared by tls.c (connections and the handshake) and tls-auth.c (the context, certificate
 * checks and messages): the context and the state of one handshake. */
#pragma once

#include <stdbool.h>

#include <openssl/ssl.h>

#include "transport/pki-internal.h"
#include "transport/tls-internal.h"

struct transport_tls {
	SSL_CTX *ctx; /* verify_cb checks peers */
	char own_name[TRANSPORT_HOST_NAME_MAX + 1];
};

/* What the verify callback needs during one handshake, and what it found. The SSL object's
 * app data while its handshake runs, NULL afterwards (then no certificate is accepted). */
struct tls_handshake {
	bool is_server;
	const char *expected_name;	/* client */
	transport_name_check_t name_ok; /* server */
	void *userdata;
	char peer_name[TRANSPORT_HOST_NAME_MAX + 1];
	char *error; /* the first reason the peer's certificate was refused */
};

/* -EACCES (the peer refused our certificate) or -EPROTO, with a message, for a TLS alert the
 * peer sent during the handshake. */
int tls_alert_error(int alert, char **ret_error);
/* Whether an OpenSSL SSL reason code means the peer's bytes were not TLS 1.3 at all. */
bool tls_reason_is_not_tls(int reason);
