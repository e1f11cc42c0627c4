/* The cluster PKI: creating the CA, issuing host keys and certificates, and the OpenSSL helpers
 * (messages, PEM loading, certificate names) that tls.c and tls-auth.c share. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "common/common.h"
#include "transport/pki-internal.h"
#include "transport/transport.h"

#define CA_VALIDITY_DAYS   3650
#define HOST_VALIDITY_DAYS 730
/* Certificates start an hour in the past, so a host whose clock is a little behind the CA's
 * host accepts them at once. */
#define BACKDATE_S   3600
#define SECS_PER_DAY 86400
/* PEM files we read are small; this bounds what a wrong path (say, a disk image) costs. */
#define PEM_FILE_MAX ((size_t)1 << 20)

int transport_error(char **ret_error, int error, const char *format, ...)
{
	va_list ap;
	char *s;

	if (ret_error) {
		va_start(ap, format);
		if (vasprintf(&s, format, ap) >= 0)
			*ret_error = s;
		va_end(ap);
	}
	return -ERRNO_VALUE(error);
}

const char *transport_openssl_reason(char *buf, size_t size)
{
	unsigned long e = ERR_get_error();
	const char *reason = e ? ERR_reason_error_string(e) : NULL;

	ERR_clear_error();
	if (reason)
		strscpy(buf, reason, size);
	else if (e)
		snprintf(buf, size, "OpenSSL error %#lx", e);
	else
		strscpy(buf, "unknown error", size);
	return buf;
}

char *transport_format_asn1_time(char *buf, size_t size, const ASN1_TIME *t)
{
	struct tm tm;

	if (!t || ASN1_TIME_to_tm(t, &tm) != 1 ||
	    strftime(buf, size, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
		strscpy(buf, "(invalid time)", size);
	return buf;
}

static int load_pem(const char *path, const char *what, BIO **ret, char **ret_error)
{
	_cleanup_free_ char *text = NULL;
	size_t size;
	BIO *b;
	int r;

	r = read_full_file(path, PEM_FILE_MAX, &text, &size);
	if (r < 0)
		return transport_error(ret_error, r, "cannot read %s '%s': %s", what, path,
				       strerror(-r));
	b = BIO_new(BIO_s_mem());
	if (!b || BIO_write(b, text, (int)size) != (int)size) {
		BIO_free(b);
		return transport_error(ret_error, ENOMEM, "out of memory reading '%s'", path);
	}
	explicit_bzero(text, size); /* may be a private key */
	*ret = b;
	return 0;
}

int transport_load_cert(const char *path, const char *what, X509 **ret, char **ret_error)
{
	_cleanup_(BIO_freep) BIO *b = NULL;
	char reason[128];
	X509 *x;
	int r;

	r = load_pem(path, what, &b, ret_error);
	if (r < 0)
		return r;
	ERR_clear_error();
	x = PEM_read_bio_X509(b, NULL, NULL, NULL);
	if (!x)
		return transport_error(ret_error, EINVAL, "%s '%s' holds no PEM certificate (%s)",
				       what, path,
				       transport_openssl_reason(reason, sizeof(reason)));
	*ret = x;
	return 0;
}

int transport_load_key(const char *path, const char *what, EVP_PKEY **ret, char **ret_error)
{
	_cleanup_(BIO_freep) BIO *b = NULL;
	char reason[128];
	EVP_PKEY *k;
	int r;

	r = load_pem(path, what, &b, ret_error);
	if (r < 0)
		return r;
	ERR_clear_error();
	/* No passphrase callback: an encrypted key fails here instead of prompting. */
	k = PEM_read_bio_PrivateKey(b, NULL, NULL, (void *)"");
	if (!k)
		return transport_error(ret_error, EINVAL,
				       "%s '%s' holds no unencrypted PEM private key (%s)", what,
				       path, transport_openssl_reason(reason, sizeof(reason)));
	*ret = k;
	return 0;
}

static int strv_push(char ***l, size_t *n, const char *s, size_t len)
{
	char **m = realloc(*l, (*n + 2) * sizeof(char *));

	if (!m)
		return -ENOMEM;
	*l = m;
	m[*n] = strndup(s, len);
	if (!m[*n])
		return -ENOMEM;
	m[++*n] = NULL;
	return 0;
}

int transport_cert_names(X509 *cert, char ***ret)
{
	_cleanup_strv_free_ char **l = calloc(1, sizeof(char *));
	GENERAL_NAMES *sans;
	size_t n = 0;
	int r = 0;

	if (!l)
		return -ENOMEM;
	sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans) && r >= 0; i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
		const char *s;
		int len;

		if (g->type != GEN_DNS)
			continue;
		s = (const char *)ASN1_STRING_get0_data(g->d.dNSName);
		len = ASN1_STRING_length(g->d.dNSName);
		if (len > 0 && memchr(s, 0, (size_t)len) == NULL)
			r = strv_push(&l, &n, s, (size_t)len);
	}
	GENERAL_NAMES_free(sans);
	if (r < 0)
		return r;

	if (n == 0) {
		X509_NAME *subject = X509_get_subject_name(cert);
		int i = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
		ASN1_STRING *cn =
			i >= 0 ? X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i)) : NULL;
		unsigned char *utf8 = NULL;
		int len = cn ? ASN1_STRING_to_UTF8(&utf8, cn) : -1;

		if (len > 0 && memchr(utf8, 0, (size_t)len) == NULL)
			r = strv_push(&l, &n, (const char *)utf8, (size_t)len);
		OPENSSL_free(utf8);
		if (r < 0)
			return r;
	}
	*ret = TAKE_PTR(l);
	return 0;
}

static int write_all(int fd, const void *data, size_t size)
{
	const char *p = data;

	while (size > 0) {
		ssize_t k = write(fd, p, size);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return NEG_ERRNO();
		p += k;
		size -= (size_t)k;
	}
	return fsync(fd) < 0 ? NEG_ERRNO() : 0;
}

/* Writes a file that must not exist yet: through a temporary file and link(2), so nobody sees
 * it half-written and an existing file is never replaced. */
static int write_new_file(const char *path, const void *data, size_t size, mode_t mode)
{
	_cleanup_free_ char *tmp = NULL;
	_cleanup_close_ int fd = -EBADF;
	int r = 0;

	if (asprintf(&tmp, "%s.tmpXXXXXX", path) < 0)
		return -ENOMEM;
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return NEG_ERRNO();
	if (fchmod(fd, mode) < 0)
		r = NEG_ERRNO();
	if (r == 0)
		r = write_all(fd, data, size);
	if (r == 0 && link(tmp, path) < 0)
		r = NEG_ERRNO();
	(void)unlink(tmp);
	if (r != -EPERM && r != -EOPNOTSUPP)
		return r;

	/* No hard links (vfat, say, on the USB stick of an offline CA): O_EXCL instead. */
	safe_close(TAKE_FD(fd));
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0)
		return NEG_ERRNO();
	r = write_all(fd, data, size);
	if (r < 0)
		(void)unlink(path);
	return r;
}

static int pem_to_file(const char *path, X509 *cert, EVP_PKEY *key, char **ret_error)
{
	_cleanup_(BIO_freep) BIO *b = BIO_new(BIO_s_mem());
	char *data;
	long size;
	int r;

	if (!b || (cert ? !PEM_write_bio_X509(b, cert)
			: !PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL)))
		return transport_error(ret_error, ENOMEM, "cannot encode '%s'", path);
	size = BIO_get_mem_data(b, &data);
	r = write_new_file(path, data, (size_t)size, cert ? 0644 : 0600);
	if (key)
		explicit_bzero(data, (size_t)size);
	if (r == -EEXIST)
		return transport_error(ret_error, r, "'%s' already exists; not replacing it", path);
	if (r < 0)
		return transport_error(ret_error, r, "cannot write '%s': %s", path, strerror(-r));
	return 0;
}

static bool file_exists(const char *path)
{
	return access(path, F_OK) == 0 || errno != ENOENT;
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;
	int ok;

	X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
	ext = X509V3_EXT_nconf_nid(NULL, &ctx, nid, value);
	if (!ext)
		return -EINVAL;
	ok = X509_add_ext(cert, ext, -1);
	X509_EXTENSION_free(ext);
	return ok ? 0 : -ENOMEM;
}

/* A certificate for key with the given subject and validity and a random 127-bit serial,
 * without extensions and unsigned. */
static X509 *cert_new(EVP_PKEY *key, const char *org, const char *cn, X509_NAME *issuer,
		      time_t not_before, time_t not_after)
{
	_cleanup_(X509_freep) X509 *x = X509_new();
	BIGNUM *serial = BN_new();
	X509_NAME *name = X509_NAME_new();
	bool ok;

	ok = x && serial && name && X509_set_version(x, X509_VERSION_3) &&
	     BN_rand(serial, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) &&
	     BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) &&
	     X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)org, -1,
					-1, 0) &&
	     X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1,
					-1, 0) &&
	     X509_set_subject_name(x, name) && X509_set_issuer_name(x, issuer ? issuer : name) &&
	     ASN1_TIME_set(X509_getm_notBefore(x), not_before) &&
	     ASN1_TIME_set(X509_getm_notAfter(x), not_after) && X509_set_pubkey(x, key);
	BN_free(serial);
	X509_NAME_free(name);
	return ok ? TAKE_PTR(x) : NULL;
}

static EVP_PKEY *key_new(void)
{
	/* P-256: ECDSA with it is in every TLS 1.3 implementation (ecdsa_secp256r1_sha256). */
	return EVP_EC_gen("P-256");
}

static char *path_join(const char *dir, const char *file)
{
	char *p;

	return asprintf(&p, "%s/%s", dir, file) < 0 ? NULL : p;
}

/* Creates dir itself with mode; parents get 0755 as usual directories. */
static int make_private_dir(const char *dir, mode_t mode, char **ret_error)
{
	_cleanup_free_ char *parent = strdup(dir);
	char *slash;
	int r;

	if (!parent)
		return -ENOMEM;
	slash = strrchr(parent, '/');
	if (slash && slash != parent) {
		*slash = 0;
		r = mkdir_p(parent, 0755);
		if (r < 0)
			return transport_error(ret_error, r, "cannot create directory '%s': %s",
					       parent, strerror(-r));
	}
	if (mkdir(dir, mode) < 0 && errno != EEXIST)
		return transport_error(ret_error, errno, "cannot create directory '%s': %m", dir);
	return 0;
}

int transport_pki_ca_init(const char *dir, const char *cluster_name, char **ret_error)
{
	_cleanup_free_ char *key_path = NULL, *cert_path = NULL, *cn = NULL;
	_cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
	_cleanup_(X509_freep) X509 *ca = NULL;
	time_t now = time(NULL);
	char reason[128];
	int r;

	if (strempty(dir))
		return transport_error(ret_error, EINVAL, "no CA directory given");
	if (!cluster_name)
		cluster_name = "migrd";
	if (!string_is_safe_name(cluster_name, TRANSPORT_HOST_NAME_MAX))
		return transport_error(ret_error, EINVAL,
				       "invalid cluster name '%s': use letters, digits, '-', '_' "
				       "and '.' (at most %d)",
				       cluster_name, TRANSPORT_HOST_NAME_MAX);
	key_path = path_join(dir, TRANSPORT_PKI_CA_KEY);
	cert_path = path_join(dir, TRANSPORT_PKI_CA_CERT);
	if (!key_path || !cert_path || asprintf(&cn, "%s migrd CA", cluster_name) < 0)
		return transport_error(ret_error, ENOMEM, "out of memory");
	if (file_exists(key_path) || file_exists(cert_path))
		return transport_error(ret_error, EEXIST,
				       "a CA already exists in '%s'; not replacing it (hosts "
				       "certified by it would no longer be accepted)",
				       dir);

	r = make_private_dir(dir, 0700, ret_error);
	if (r < 0)
		return r;

	ERR_clear_error();
	key = key_new();
	if (key)
		ca = cert_new(key, cluster_name, cn, NULL, now - BACKDATE_S,
			      now + (time_t)CA_VALIDITY_DAYS * SECS_PER_DAY);
	if (!ca || add_ext(ca, ca, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") < 0 ||
	    add_ext(ca, ca, NID_key_usage, "critical,keyCertSign,cRLSign") < 0 ||
	    add_ext(ca, ca, NID_subject_key_identifier, "hash") < 0 ||
	    X509_sign(ca, key, EVP_sha256()) <= 0)
		return transport_error(ret_error, EIO, "cannot create the CA certificate: %s",
				       transport_openssl_reason(reason, sizeof(reason)));

	/* The key first: a ca.crt without its key would be useless yet block a retry. */
	r = pem_to_file(key_path, NULL, key, ret_error);
	if (r < 0)
		return r;
	r = pem_to_file(cert_path, ca, NULL, ret_error);
	if (r < 0) {
		(void)unlink(key_path);
		return r;
	}
	return 0;
}

/* Loads and checks the CA for issuing: key matches, certificate is a CA and valid now. */
static int load_ca(const char *ca_dir, X509 **ret_ca, EVP_PKEY **ret_key, char **ret_error)
{
	_cleanup_free_ char *key_path = path_join(ca_dir, TRANSPORT_PKI_CA_KEY),
			    *cert_path = path_join(ca_dir, TRANSPORT_PKI_CA_CERT);
	_cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
	_cleanup_(X509_freep) X509 *ca = NULL;
	char when[64];
	int r;

	if (!key_path || !cert_path)
		return transport_error(ret_error, ENOMEM, "out of memory");
	r = transport_load_cert(cert_path, "CA certificate", &ca, ret_error);
	if (r < 0)
		return r;
	r = transport_load_key(key_path, "CA key", &key, ret_error);
	if (r < 0)
		return r;
	if (X509_check_private_key(ca, key) != 1) {
		ERR_clear_error();
		return transport_error(ret_error, EINVAL, "CA key '%s' does not match '%s'",
				       key_path, cert_path);
	}
	if (X509_check_ca(ca) == 0)
		return transport_error(ret_error, EINVAL, "'%s' is not a CA certificate",
				       cert_path);
	if (X509_cmp_current_time(X509_get0_notAfter(ca)) <= 0)
		return transport_error(
			ret_error, EKEYEXPIRED, "the CA certificate '%s' expired on %s", cert_path,
			transport_format_asn1_time(when, sizeof(when), X509_get0_notAfter(ca)));
	*ret_ca = TAKE_PTR(ca);
	*ret_key = TAKE_PTR(key);
	return 0;
}

/* The O= of the CA's subject: the cluster name, repeated in host certificates. */
static void ca_org(X509 *ca, char *buf, size_t size)
{
	if (X509_NAME_get_text_by_NID(X509_get_subject_name(ca), NID_organizationName, buf,
				      (int)size) <= 0)
		strscpy(buf, "migrd", size);
}

static int host_cert_new(X509 *ca, EVP_PKEY *ca_key, EVP_PKEY *key, const char *host,
			 time_t not_before, time_t not_after, X509 **ret, char **ret_error)
{
	_cleanup_(X509_freep) X509 *x = NULL;
	_cleanup_free_ char *san = NULL;
	char org[128], reason[128];

	ca_org(ca, org, sizeof(org));
	if (asprintf(&san, "DNS:%s", host) < 0)
		return transport_error(ret_error, ENOMEM, "out of memory");
	x = cert_new(key, org, host, X509_get_subject_name(ca), not_before, not_after);
	if (!x || add_ext(x, ca, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
	    add_ext(x, ca, NID_key_usage, "critical,digitalSignature") < 0 ||
	    add_ext(x, ca, NID_ext_key_usage, "serverAuth,clientAuth") < 0 ||
	    add_ext(x, ca, NID_subject_alt_name, san) < 0 ||
	    add_ext(x, ca, NID_subject_key_identifier, "hash") < 0 ||
	    add_ext(x, ca, NID_authority_key_identifier, "keyid:always") < 0 ||
	    X509_sign(x, ca_key, EVP_sha256()) <= 0)
		return transport_error(ret_error, EIO, "cannot create a certificate for '%s': %s",
				       host, transport_openssl_reason(reason, sizeof(reason)));
	*ret = TAKE_PTR(x);
	return 0;
}

/* out_dir/ca.crt may already be there (several hosts issued into one directory), but only as
 * this very CA. */
static int ca_copy_needed(const char *path, X509 *ca, bool *ret, char **ret_error)
{
	_cleanup_(X509_freep) X509 *old = NULL;
	int r;

	if (!file_exists(path)) {
		*ret = true;
		return 0;
	}
	r = transport_load_cert(path, "CA certificate", &old, NULL);
	if (r < 0 || X509_cmp(old, ca) != 0)
		return transport_error(ret_error, EEXIST,
				       "'%s' already exists and is not this cluster's CA "
				       "certificate; not replacing it",
				       path);
	*ret = false;
	return 0;
}

/* A host certificate that outlives its CA would only fail later, and less clearly. */
static time_t clamp_to_ca(X509 *ca, time_t not_after)
{
	struct tm tm;
	time_t end;

	if (ASN1_TIME_to_tm(X509_get0_notAfter(ca), &tm) != 1)
		return not_after;
	end = timegm(&tm);
	return MIN(not_after, end);
}

/* Writes the key, the certificate and (when ca_path is not NULL) the CA copy; on failure
 * removes what it wrote, so the command can simply be run again. */
static int write_host_files(const char *key_path, const char *cert_path, const char *ca_path,
			    EVP_PKEY *key, X509 *cert, X509 *ca, char **ret_error)
{
	int r;

	r = pem_to_file(key_path, NULL, key, ret_error);
	if (r < 0)
		return r;
	r = pem_to_file(cert_path, cert, NULL, ret_error);
	if (r >= 0 && ca_path)
		r = pem_to_file(ca_path, ca, NULL, ret_error);
	if (r < 0) {
		(void)unlink(key_path);
		(void)unlink(cert_path);
	}
	return r;
}

int transport_pki_issue_validity(const char *ca_dir, const char *host, const char *out_dir,
				 time_t not_before, time_t not_after, char **ret_error)
{
	_cleanup_free_ char *key_path = NULL, *cert_path = NULL, *ca_path = NULL;
	_cleanup_(EVP_PKEY_freep) EVP_PKEY *ca_key = NULL, *key = NULL;
	_cleanup_(X509_freep) X509 *ca = NULL, *cert = NULL;
	char reason[128];
	bool copy_ca = false;
	int r;

	if (strempty(ca_dir) || strempty(out_dir))
		return transport_error(ret_error, EINVAL, "no CA or output directory given");
	if (!string_is_safe_name(host, TRANSPORT_HOST_NAME_MAX))
		return transport_error(ret_error, EINVAL,
				       "invalid host name '%s': use letters, digits, '-', '_' and "
				       "'.', not starting with '-' or '.' (at most %d)",
				       strna(host), TRANSPORT_HOST_NAME_MAX);
	if (asprintf(&key_path, "%s/%s.key", out_dir, host) < 0 ||
	    asprintf(&cert_path, "%s/%s.crt", out_dir, host) < 0 ||
	    !(ca_path = path_join(out_dir, TRANSPORT_PKI_CA_CERT)))
		return transport_error(ret_error, ENOMEM, "out of memory");

	r = load_ca(ca_dir, &ca, &ca_key, ret_error);
	if (r < 0)
		return r;
	if (file_exists(key_path) || file_exists(cert_path))
		return transport_error(
			ret_error, EEXIST,
			"'%s' already exists; not replacing it (remove it to issue a "
			"new key and certificate for '%s')",
			file_exists(key_path) ? key_path : cert_path, host);
	r = ca_copy_needed(ca_path, ca, &copy_ca, ret_error);
	if (r < 0)
		return r;
	r = make_private_dir(out_dir, 0700, ret_error);
	if (r < 0)
		return r;

	ERR_clear_error();
	key = key_new();
	if (!key)
		return transport_error(ret_error, EIO, "cannot generate a key: %s",
				       transport_openssl_reason(reason, sizeof(reason)));
	r = host_cert_new(ca, ca_key, key, host, not_before, clamp_to_ca(ca, not_after), &cert,
			  ret_error);
	if (r < 0)
		return r;
	return write_host_files(key_path, cert_path, copy_ca ? ca_path : NULL, key, cert, ca,
				ret_error);
}

int transport_pki_issue(const char *ca_dir, const char *host, const char *out_dir, char **ret_error)
{
	time_t now = time(NULL);

	return transport_pki_issue_validity(ca_dir, host, out_dir, now - BACKDATE_S,
					    now + (time_t)HOST_VALIDITY_DAYS * SECS_PER_DAY,
					    ret_error);
}
