/* OpenSSL helpers shared by tls.c, tls-auth.c and pki.c (which implements them): error
 * messages, loading PEM files, certificate names, and issuing with a chosen validity. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "common/cleanup.h"
#include "common/macro.h"

/* Host names in certificates are at most this long (transport_conn.peer_name holds them). */
#define TRANSPORT_HOST_NAME_MAX 63

DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_PKEY *, EVP_PKEY_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509 *, X509_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509_STORE *, X509_STORE_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509_STORE_CTX *, X509_STORE_CTX_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(BIO *, BIO_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(SSL_CTX *, SSL_CTX_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(SSL *, SSL_free);

/* Sets *ret_error (when ret_error is not NULL) to the formatted message and returns
 * -ERRNO_VALUE(error). */
int transport_error(char **ret_error, int error, const char *format, ...) _printf_(3, 4);

/* The reason of the first queued OpenSSL error of this thread ("unknown error" when there is
 * none), and clears the queue. */
const char *transport_openssl_reason(char *buf, size_t size);

/* "2027-03-01 12:00:00 UTC" */
char *transport_format_asn1_time(char *buf, size_t size, const ASN1_TIME *t);

/* Loads the first certificate / the private key of a PEM file; the message names the file and
 * the problem. */
int transport_load_cert(const char *path, const char *what, X509 **ret, char **ret_error);
int transport_load_key(const char *path, const char *what, EVP_PKEY **ret, char **ret_error);

/* The names a certificate is for: its subjectAltName DNS entries, else its subject CN
 * (a NULL-terminated strv, possibly empty). Entries with an embedded NUL are skipped; others
 * are returned as they are, so messages can show them: check them with string_is_safe_name(). */
int transport_cert_names(X509 *cert, char ***ret);

/* transport_pki_issue() with the validity given as UNIX times. */
int transport_pki_issue_validity(const char *ca_dir, const char *host, const char *out_dir,
				 time_t not_before, time_t not_after, char **ret_error);
