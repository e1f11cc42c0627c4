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

/* ---- The cluster PKI (pki.c): the CA and host certificates TLS authenticates with --------- */

#define TRANSPORT_PKI_DIR_DEFAULT "/etc/migrd/pki"
#define TRANSPORT_PKI_CA_CERT	  "ca.crt"
#define TRANSPORT_PKI_CA_KEY	  "ca.key"

/* Creates dir (mode 0700, parents as needed) holding the cluster CA: ca.key (0600, EC P-256)
 * and ca.crt (self-signed, valid 10 years, CA:TRUE, keyCertSign). cluster_name (NULL:
 * "migrd") names the CA in its subject. Refuses with -EEXIST when either file exists: a new
 * CA would lock out every host certified by the old one. On failure, *ret_error (when
 * ret_error is not NULL) is a message to free(). */
int transport_pki_ca_init(const char *dir, const char *cluster_name, char **ret_error);

/* Issues a key and certificate for host with the CA in ca_dir: subjectAltName DNS:host,
 * CN=host, valid 2 years (never past the CA), CA:FALSE, extendedKeyUsage serverAuth and
 * clientAuth. Writes out_dir/HOST.key (0600), out_dir/HOST.crt and out_dir/ca.crt, so one
 * directory holds what the host needs. host must be a plain name (letters, digits, '-', '_',
 * '.'; at most 63 bytes): -EINVAL otherwise. Refuses with -EEXIST to replace an existing key
 * or certificate, or a different ca.crt. Messages as for transport_pki_ca_init(). */
int transport_pki_issue(const char *ca_dir, const char *host, const char *out_dir,
			char **ret_error);
