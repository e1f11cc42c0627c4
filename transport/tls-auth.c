/* The TLS context (our certificate and key, the CA as the only trust anchor), the checks of a
 * peer's certificate with their messages, and HMAC-SHA256. Connections are in tls.c. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "common/common.h"
#include "transport/tls-auth-internal.h"

/* AES-128-GCM first: the fastest with AES-NI, and as safe as the others here. */
#define TLS_CIPHERSUITES \
	"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

/* ---- the peer's certificate ------------------------------------------------------------------ */

/* Name text from a certificate, safe to print: control bytes become '?'. */
static char *printable_names(char **names)
{
	_cleanup_free_ char *s = NULL;
	size_t n = 0;

	if (!names[0])
		return strdup("(no name)");
	while (names[n])
		n++;
	s = strjoin_sep("', '", (const char *const *)names, n);
	for (char *p = s; p && *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			*p = '?';
	return TAKE_PTR(s);
}

static int hs_fail(struct tls_handshake *hs, const char *format, ...) _printf_(2, 3);
static int hs_fail(struct tls_handshake *hs, const char *format, ...)
{
	va_list ap;

	if (!hs->error) {
		va_start(ap, format);
		if (vasprintf(&hs->error, format, ap) < 0)
			hs->error = NULL;
		va_end(ap);
	}
	return -EACCES;
}

/* Client: one of the certificate's names is exactly the expected one. Server: name_ok accepts
 * one of them (the first it accepts is the peer's name). No wildcards, no case folding. */
static int check_peer_name(struct tls_handshake *hs, X509 *cert)
{
	_cleanup_strv_free_ char **names = NULL;
	_cleanup_free_ char *shown = NULL;

	if (hs->peer_name[0])
		return 0; /* already checked: the callback may see the leaf more than once */
	if (transport_cert_names(cert, &names) < 0)
		return hs_fail(hs, "out of memory checking the peer's certificate");
	for (char **n = names; *n; n++) {
		if (!string_is_safe_name(*n, TRANSPORT_HOST_NAME_MAX))
			continue;
		if (hs->is_server ? hs->name_ok(hs->userdata, *n) : streq(*n, hs->expected_name)) {
			strscpy(hs->peer_name, *n, sizeof(hs->peer_name));
			return 0;
		}
	}
	shown = printable_names(names);
	if (hs->is_server)
		return hs_fail(hs, "'%s' is not a cluster host", strna(shown));
	return hs_fail(hs, "peer presented certificate for '%s', expected '%s'", strna(shown),
		       hs->expected_name);
}

static char *format_x509_name(char *buf, size_t size, X509_NAME *name)
{
	_cleanup_(BIO_freep) BIO *b = BIO_new(BIO_s_mem());
	int n;

	strscpy(buf, "?", size);
	if (b && X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253) >= 0 &&
	    (n = BIO_read(b, buf, (int)size - 1)) > 0)
		buf[n] = 0;
	return buf;
}

static void record_verify_error(struct tls_handshake *hs, X509_STORE_CTX *store)
{
	X509 *leaf = X509_STORE_CTX_get0_cert(store), *cur = X509_STORE_CTX_get_current_cert(store);
	int err = X509_STORE_CTX_get_error(store);
	const char *whose = X509_STORE_CTX_get_error_depth(store) > 0 ? "the cluster CA's" : "peer";
	char subject[256], issuer[256], when[64];

	if (!leaf || !cur) {
		hs_fail(hs, "peer certificate rejected: %s", X509_verify_cert_error_string(err));
		return;
	}
	format_x509_name(subject, sizeof(subject), X509_get_subject_name(leaf));
	format_x509_name(issuer, sizeof(issuer), X509_get_issuer_name(leaf));
	switch (err) {
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_CERT_SIGNATURE_FAILURE:
	case X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE:
		hs_fail(hs,
			"peer certificate is not signed by the cluster CA (subject '%s', issuer "
			"'%s')",
			subject, issuer);
		break;
	case X509_V_ERR_CERT_HAS_EXPIRED:
		hs_fail(hs, "%s certificate expired on %s (subject '%s')", whose,
			transport_format_asn1_time(when, sizeof(when), X509_get0_notAfter(cur)),
			subject);
		break;
	case X509_V_ERR_CERT_NOT_YET_VALID:
		hs_fail(hs,
			"%s certificate is not valid before %s (subject '%s'; are the clocks in "
			"sync?)",
			whose,
			transport_format_asn1_time(when, sizeof(when), X509_get0_notBefore(cur)),
			subject);
		break;
	case X509_V_ERR_INVALID_PURPOSE:
		hs_fail(hs,
			"peer certificate is not for TLS %s use (subject '%s'; see its "
			"extendedKeyUsage)",
			hs->is_server ? "client" : "server", subject);
		break;
	default:
		hs_fail(hs, "peer certificate rejected: %s (subject '%s')",
			X509_verify_cert_error_string(err), subject);
	}
}

static int verify_cb(int ok, X509_STORE_CTX *store)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct tls_handshake *hs = ssl ? SSL_get_app_data(ssl) : NULL;

	if (!hs)
		return 0; /* no certificates after the handshake */
	if (!ok) {
		record_verify_error(hs, store);
		return 0;
	}
	if (X509_STORE_CTX_get_error_depth(store) > 0)
		return 1;
	if (check_peer_name(hs, X509_STORE_CTX_get_current_cert(store)) < 0) {
		/* Makes OpenSSL send "bad certificate", which tells the peer more than the
		 * "handshake failure" of an application error. */
		X509_STORE_CTX_set_error(store, X509_V_ERR_HOSTNAME_MISMATCH);
		return 0;
	}
	return 1;
}

int tls_alert_error(int alert, char **ret_error)
{
	const char *desc = SSL_alert_desc_string_long(alert);

	switch (alert) {
	case SSL_AD_BAD_CERTIFICATE:
	case SSL_AD_UNSUPPORTED_CERTIFICATE:
	case SSL_AD_CERTIFICATE_REVOKED:
	case SSL_AD_CERTIFICATE_EXPIRED:
	case SSL_AD_CERTIFICATE_UNKNOWN:
	case SSL_AD_UNKNOWN_CA:
	case SSL_AD_ACCESS_DENIED:
	case SSL_AD_CERTIFICATE_REQUIRED:
	case SSL_AD_HANDSHAKE_FAILURE:
		return transport_error(ret_error, EACCES,
				       "peer refused our certificate (TLS alert: %s)", desc);
	case SSL_AD_PROTOCOL_VERSION:
		return transport_error(ret_error, EPROTO,
				       "peer does not speak TLS 1.3 (TLS alert: %s)", desc);
	default:
		return transport_error(ret_error, EPROTO,
				       "TLS handshake failed: peer sent alert '%s'", desc);
	}
}

bool tls_reason_is_not_tls(int why)
{
	switch (why) {
	case SSL_R_WRONG_VERSION_NUMBER:
	case SSL_R_HTTP_REQUEST:
	case SSL_R_HTTPS_PROXY_REQUEST:
	case SSL_R_PACKET_LENGTH_TOO_LONG:
	case SSL_R_RECORD_LENGTH_MISMATCH:
	case SSL_R_UNSUPPORTED_PROTOCOL:
	case SSL_R_UNKNOWN_PROTOCOL:
		return true;
	default:
		return false;
	}
}

/* ---- the context ----------------------------------------------------------------------------- */

struct transport_tls *transport_tls_free(struct transport_tls *t)
{
	if (t) {
		SSL_CTX_free(t->ctx);
		free(t);
	}
	return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(struct transport_tls *, transport_tls_free);

const char *transport_tls_own_name(struct transport_tls *t)
{
	return t->own_name;
}

static int check_validity(const char *what, const char *path, X509 *x, char **ret_error)
{
	char when[64];

	if (X509_cmp_current_time(X509_get0_notAfter(x)) <= 0)
		return transport_error(
			ret_error, EKEYEXPIRED, "%s '%s' expired on %s", what, path,
			transport_format_asn1_time(when, sizeof(when), X509_get0_notAfter(x)));
	if (X509_cmp_current_time(X509_get0_notBefore(x)) >= 0)
		return transport_error(
			ret_error, EKEYREJECTED, "%s '%s' is not valid before %s", what, path,
			transport_format_asn1_time(when, sizeof(when), X509_get0_notBefore(x)));
	return 0;
}

/* Our own certificate must pass the checks a peer will apply, or every handshake would fail
 * with a message on the other host. */
static int check_own_cert(const char *ca_file, const char *cert_file, const char *key_file,
			  X509 *ca, X509 *cert, EVP_PKEY *key, char *own_name, size_t size,
			  char **ret_error)
{
	_cleanup_(X509_STORE_freep) X509_STORE *store = X509_STORE_new();
	_cleanup_(X509_STORE_CTX_freep) X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	_cleanup_strv_free_ char **names = NULL;
	int r, err;

	if (X509_check_ca(ca) == 0)
		return transport_error(ret_error, EINVAL, "'%s' is not a CA certificate", ca_file);
	r = check_validity("CA certificate", ca_file, ca, ret_error);
	if (r < 0)
		return r;
	if (X509_check_private_key(cert, key) != 1) {
		ERR_clear_error();
		return transport_error(ret_error, EINVAL,
				       "key '%s' does not match certificate '%s'", key_file,
				       cert_file);
	}
	r = check_validity("certificate", cert_file, cert, ret_error);
	if (r < 0)
		return r;
	if (!store || !ctx || !X509_STORE_add_cert(store, ca) ||
	    !X509_STORE_CTX_init(ctx, store, cert, NULL))
		return transport_error(ret_error, ENOMEM, "out of memory");
	if (X509_verify_cert(ctx) != 1) {
		err = X509_STORE_CTX_get_error(ctx);
		ERR_clear_error();
		if (err == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
		    err == X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE ||
		    err == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT ||
		    err == X509_V_ERR_CERT_SIGNATURE_FAILURE)
			return transport_error(ret_error, EINVAL,
					       "certificate '%s' is not signed by the CA in '%s'",
					       cert_file, ca_file);
		return transport_error(ret_error, EINVAL,
				       "certificate '%s' does not verify against '%s': %s",
				       cert_file, ca_file, X509_verify_cert_error_string(err));
	}
	if (X509_check_purpose(cert, X509_PURPOSE_SSL_CLIENT, 0) != 1 ||
	    X509_check_purpose(cert, X509_PURPOSE_SSL_SERVER, 0) != 1)
		return transport_error(ret_error, EINVAL,
				       "certificate '%s' is not for both TLS client and server use "
				       "(its extendedKeyUsage needs serverAuth and clientAuth)",
				       cert_file);
	if (transport_cert_names(cert, &names) < 0)
		return transport_error(ret_error, ENOMEM, "out of memory");
	if (!names[0] || !string_is_safe_name(names[0], TRANSPORT_HOST_NAME_MAX))
		return transport_error(ret_error, EINVAL,
				       "certificate '%s' names no host (subjectAltName DNS or CN: "
				       "letters, digits, '-', '_', '.')",
				       cert_file);
	strscpy(own_name, names[0], size);
	return 0;
}

/* OpenSSL reads ahead into a buffer this large. Larger ones fall out of the cache: 1 MiB
 * halved the throughput on loopback. */
#define TLS_READ_BUFFER ((size_t)64 << 10)

static int ctx_new(X509 *ca, X509 *cert, EVP_PKEY *key, SSL_CTX **ret, char **ret_error)
{
	_cleanup_(SSL_CTX_freep) SSL_CTX *ctx = SSL_CTX_new(TLS_method());
	X509_STORE *store = X509_STORE_new();
	char reason[128];

	/* The CA is the only trust anchor: a fresh store, never the system's. */
	if (!ctx || !store || !X509_STORE_add_cert(store, ca)) {
		X509_STORE_free(store);
		return transport_error(ret_error, ENOMEM, "cannot create the TLS context: %s",
				       transport_openssl_reason(reason, sizeof(reason)));
	}
	SSL_CTX_set_cert_store(ctx, store);
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_ciphersuites(ctx, TLS_CIPHERSUITES) ||
	    !SSL_CTX_use_certificate(ctx, cert) || !SSL_CTX_use_PrivateKey(ctx, key) ||
	    !SSL_CTX_check_private_key(ctx) || !SSL_CTX_add_client_CA(ctx, ca) ||
	    !SSL_CTX_set_num_tickets(ctx, 0))
		return transport_error(ret_error, EINVAL, "cannot set up the TLS context: %s",
				       transport_openssl_reason(reason, sizeof(reason)));
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_read_ahead(ctx, 1);
	SSL_CTX_set_default_read_buffer_len(ctx, TLS_READ_BUFFER);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);
	*ret = TAKE_PTR(ctx);
	return 0;
}

int transport_tls_new(const char *ca_file, const char *cert_file, const char *key_file,
		      struct transport_tls **ret, char **ret_error)
{
	_cleanup_(transport_tls_freep) struct transport_tls *t = NULL;
	_cleanup_(X509_freep) X509 *ca = NULL, *cert = NULL;
	_cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
	int r;

	if (strempty(ca_file) || strempty(cert_file) || strempty(key_file) || !ret)
		return transport_error(ret_error, EINVAL,
				       "the CA, certificate and key files must all be given");
	r = transport_load_cert(ca_file, "CA certificate", &ca, ret_error);
	if (r < 0)
		return r;
	r = transport_load_cert(cert_file, "certificate", &cert, ret_error);
	if (r < 0)
		return r;
	r = transport_load_key(key_file, "key", &key, ret_error);
	if (r < 0)
		return r;

	t = calloc(1, sizeof(*t));
	if (!t)
		return transport_error(ret_error, ENOMEM, "out of memory");
	r = check_own_cert(ca_file, cert_file, key_file, ca, cert, key, t->own_name,
			   sizeof(t->own_name), ret_error);
	if (r < 0)
		return r;
	r = ctx_new(ca, cert, key, &t->ctx, ret_error);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(t);
	return 0;
}

int transport_hmac_sha256(const uint8_t *key, size_t key_len, const void *data, size_t len,
			  uint8_t out[32])
{
	unsigned int n = 0;

	if ((!key && key_len) || (!data && len) || key_len > INT_MAX)
		return -EINVAL;
	if (!HMAC(EVP_sha256(), key ? (const void *)key : "", (int)key_len,
		  data ? data : (const void *)"", len, out, &n) ||
	    n != 32) {
		ERR_clear_error();
		return -EIO;
	}
	return 0;
}
