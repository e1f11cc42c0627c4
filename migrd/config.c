/* Parses migrd.conf (INI: [section] and key = value lines, # or ; comments) over defaults. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "migrd/config.h"

#define CONFIG_MAX_SIZE	  (1024 * 1024)
#define CONFIG_MAX_ERRORS 32

static const char *const transport_choice_table[_TRANSPORT_CHOICE_MAX] = {
	[TRANSPORT_CHOICE_TCP] = "tcp",
	[TRANSPORT_CHOICE_RDMA] = "rdma",
	[TRANSPORT_CHOICE_AUTO] = "auto",
};
DEFINE_STRING_TABLE_LOOKUP(transport_choice, enum transport_choice, transport_choice_table);

static const char *const fence_mode_table[_FENCE_MODE_MAX] = {
	[FENCE_MODE_NONE] = "none",
	[FENCE_MODE_SELF] = "self",
	[FENCE_MODE_COMMAND] = "command",
};
DEFINE_STRING_TABLE_LOOKUP(fence_mode, enum fence_mode, fence_mode_table);

int migrd_config_init_defaults(struct migrd_config *c)
{
	char hn[256] = "";

	*c = (struct migrd_config){
		.port = MIGRD_DEFAULT_PORT,
		.metrics_interval = 1 * USEC_PER_SEC,
		.sync_timeout = 10 * USEC_PER_SEC,
		.fence_mode = FENCE_MODE_SELF,
		.self_fence_timeout = 10 * USEC_PER_SEC,
		.fence_timeout = 60 * USEC_PER_SEC,
		.control_max_request = 1024 * 1024,
		.control_max_clients = 64,
		.control_max_inflight = 256,
		.streams = (unsigned)CLAMP(sysconf(_SC_NPROCESSORS_ONLN), 1, 16),
		.encrypt = 1,
		.transport = TRANSPORT_CHOICE_TCP,
		.compress_level = COMPRESS_AUTO,
		.stall_timeout = 10 * USEC_PER_SEC,
		.handshake_timeout = 5 * USEC_PER_SEC,
		.frame_size = 1024 * 1024,
		.log_level = LOG_INFO,
		.log_target = LOG_TARGET_AUTO,
	};
	if (gethostname(hn, sizeof(hn) - 1) < 0 || !*hn)
		strscpy(hn, "localhost", sizeof(hn));
	hn[strcspn(hn, ".")] = 0; /* the short name is the cluster name by default */
	c->host_name = strdup(hn);
	c->state_dir = strdup("/var/lib/migrd");
	c->control_socket = strdup("/run/migrd/control.sock");
	c->control_group = strdup("migrd");
	c->cpg_group = strdup("migrd");
	c->ca_file = strdup("/etc/migrd/pki/ca.crt");
	c->cert_file = strdup("/etc/migrd/pki/host.crt");
	c->key_file = strdup("/etc/migrd/pki/host.key");
	c->libvirt_uri = strdup("qemu:///system");
	c->vm_socket_dir = strdup("/run/migrd/vm");
	c->vm_downtime = 300 * USEC_PER_MSEC;
	c->vm_max_downtime = 2 * USEC_PER_SEC;
	c->vm_converge_timeout = 60 * USEC_PER_SEC;
	c->vm_auto_converge = 1;
	if (!c->vm_socket_dir || !c->ca_file || !c->cert_file || !c->key_file || !c->host_name ||
	    !c->state_dir || !c->libvirt_uri || !c->control_socket || !c->control_group ||
	    !c->cpg_group) {
		migrd_config_done(c);
		return -ENOMEM;
	}
	return 0;
}

void migrd_config_done(struct migrd_config *c)
{
	free(c->host_name);
	free(c->address);
	free(c->state_dir);
	free(c->control_socket);
	free(c->control_group);
	free(c->cpg_group);
	free(c->fence_command);
	free(c->ca_file);
	free(c->cert_file);
	free(c->key_file);
	free(c->libvirt_uri);
	free(c->libvirt_socket);
	free(c->vm_socket_dir);
	for (size_t i = 0; i < c->n_peers; i++) {
		free(c->peers[i].name);
		free(c->peers[i].address);
	}
	free(c->peers);
	*c = (struct migrd_config){0};
}

struct parse_ctx {
	struct migrd_peer_config *peer; /* the [peer NAME] section being read */
	const char *filename;
	unsigned line;
	char *errors;
	size_t errors_len;
	unsigned n_errors;
};

_printf_(2, 3) static int parse_error(struct parse_ctx *p, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	int n;

	p->n_errors++;
	if (p->n_errors > CONFIG_MAX_ERRORS)
		return -EINVAL;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (p->n_errors == CONFIG_MAX_ERRORS)
		strscpy(msg, "too many errors, giving up", sizeof(msg));
	n = snprintf(NULL, 0, "%s:%u: %s\n", p->filename, p->line, msg);
	char *e = realloc(p->errors, p->errors_len + (size_t)n + 1);
	if (!e)
		return -ENOMEM;
	p->errors = e;
	snprintf(e + p->errors_len, (size_t)n + 1, "%s:%u: %s\n", p->filename, p->line, msg);
	p->errors_len += (size_t)n;
	return -EINVAL;
}

enum value_type {
	VALUE_STRING,	/* char ** */
	VALUE_PATH,	/* char **, absolute */
	VALUE_HOSTNAME, /* char **, a safe host name */
	VALUE_PORT,	/* uint16_t */
	VALUE_DURATION, /* usec_t, > 0 */
	VALUE_SIZE,	/* uint64_t */
	VALUE_UNSIGNED, /* unsigned, >= 1 */
	VALUE_FENCE,	/* enum fence_mode */
	VALUE_LOGLEVEL, /* int */
	VALUE_LOGTARGET,
	VALUE_BOOL,	 /* int 0/1 */
	VALUE_TRANSPORT, /* int, enum transport_choice */
	VALUE_COMPRESS,	 /* int: COMPRESS_AUTO, 0 (off) or a zstd level */
};

struct config_key {
	const char *section;
	const char *key;
	enum value_type type;
	size_t offset;
	uint64_t min, max; /* for sizes and unsigned numbers */
};

#define K(s, k, t, f)                                           \
	{                                                       \
		s, k, t, offsetof(struct migrd_config, f), 0, 0 \
	}
#define KR(s, k, t, f, lo, hi)                                    \
	{                                                         \
		s, k, t, offsetof(struct migrd_config, f), lo, hi \
	}
static const struct config_key config_keys[] = {
	K("host", "name", VALUE_HOSTNAME, host_name),
	K("host", "address", VALUE_STRING, address),
	K("host", "port", VALUE_PORT, port),
	K("paths", "state_dir", VALUE_PATH, state_dir),
	K("paths", "control_socket", VALUE_PATH, control_socket),
	K("paths", "control_group", VALUE_STRING, control_group),
	K("cluster", "group", VALUE_HOSTNAME, cpg_group),
	K("cluster", "metrics_interval", VALUE_DURATION, metrics_interval),
	K("cluster", "sync_timeout", VALUE_DURATION, sync_timeout),
	K("fencing", "mode", VALUE_FENCE, fence_mode),
	K("fencing", "command", VALUE_STRING, fence_command),
	K("fencing", "self_fence_timeout", VALUE_DURATION, self_fence_timeout),
	K("fencing", "fence_timeout", VALUE_DURATION, fence_timeout),
	KR("limits", "control_max_request", VALUE_SIZE, control_max_request, 4096, 64ULL << 20),
	KR("limits", "control_max_clients", VALUE_UNSIGNED, control_max_clients, 1, 4096),
	KR("limits", "control_max_inflight", VALUE_UNSIGNED, control_max_inflight, 1, 65536),
	K("vm", "libvirt_uri", VALUE_STRING, libvirt_uri),
	K("vm", "libvirt_socket", VALUE_PATH, libvirt_socket),
	K("vm", "socket_dir", VALUE_PATH, vm_socket_dir),
	K("vm", "downtime", VALUE_DURATION, vm_downtime),
	K("vm", "max_downtime", VALUE_DURATION, vm_max_downtime),
	K("vm", "converge_timeout", VALUE_DURATION, vm_converge_timeout),
	KR("vm", "bandwidth", VALUE_SIZE, vm_bandwidth, 0, 1ULL << 40),
	KR("vm", "parallel_connections", VALUE_UNSIGNED, vm_parallel, 0, 32),
	K("vm", "postcopy", VALUE_BOOL, vm_postcopy),
	K("vm", "auto_converge", VALUE_BOOL, vm_auto_converge),
	K("transport", "ca_file", VALUE_PATH, ca_file),
	K("transport", "cert_file", VALUE_PATH, cert_file),
	K("transport", "key_file", VALUE_PATH, key_file),
	KR("transport", "streams", VALUE_UNSIGNED, streams, 1, 64),
	K("transport", "encrypt", VALUE_BOOL, encrypt),
	K("transport", "transport", VALUE_TRANSPORT, transport),
	K("transport", "compress", VALUE_COMPRESS, compress_level),
	K("transport", "stall_timeout", VALUE_DURATION, stall_timeout),
	K("transport", "handshake_timeout", VALUE_DURATION, handshake_timeout),
	KR("transport", "frame_size", VALUE_SIZE, frame_size, 64 * 1024, 8 * 1024 * 1024),
	K("log", "level", VALUE_LOGLEVEL, log_level),
	K("log", "target", VALUE_LOGTARGET, log_target),
};
#undef K
#undef KR

#define P(k, t, f)                                                        \
	{                                                                 \
		"peer", k, t, offsetof(struct migrd_peer_config, f), 0, 0 \
	}
static const struct config_key peer_keys[] = {
	P("address", VALUE_STRING, address),
	P("encrypt", VALUE_BOOL, encrypt),
	P("transport", VALUE_TRANSPORT, transport),
	P("compress", VALUE_COMPRESS, compress_level),
	{"peer", "streams", VALUE_UNSIGNED, offsetof(struct migrd_peer_config, streams), 1, 64},
};
#undef P

static bool section_known(const char *s)
{
	for (size_t i = 0; i < ELEMENTSOF(config_keys); i++)
		if (streq(config_keys[i].section, s))
			return true;
	return false;
}

static int set_string(char **field, const char *value)
{
	char *v = strdup(value);

	if (!v)
		return -ENOMEM;
	free(*field);
	*field = v;
	return 0;
}

static int assign(struct parse_ctx *p, void *base, const struct config_key *k, const char *value)
{
	void *field = (char *)base + k->offset;
	usec_t usec;
	uint64_t u64;
	int r;

	switch (k->type) {
	case VALUE_STRING:
		if (strlen(value) > 4096)
			return parse_error(p, "value of '%s' is too long", k->key);
		/* An empty value resets optional strings (address, fence command). */
		if (!*value) {
			free(*(char **)field);
			*(char **)field = NULL;
			return 0;
		}
		return set_string(field, value);
	case VALUE_PATH:
		if (value[0] != '/' || strlen(value) > 107)
			return parse_error(p, "'%s' must be an absolute path of at most 107 bytes",
					   k->key);
		return set_string(field, value);
	case VALUE_HOSTNAME:
		if (!string_is_safe_name(value, MIGRD_HOST_NAME_MAX))
			return parse_error(
				p,
				"'%s' must be 1-%d characters of letters, digits, '-', '_' "
				"or '.', not starting with '-' or '.'",
				k->key, MIGRD_HOST_NAME_MAX);
		return set_string(field, value);
	case VALUE_PORT:
		r = parse_uint64(value, &u64);
		if (r < 0 || u64 < 1 || u64 > 65535)
			return parse_error(p, "'%s' must be a port number 1-65535, not '%s'",
					   k->key, value);
		*(uint16_t *)field = (uint16_t)u64;
		return 0;
	case VALUE_DURATION:
		r = parse_duration(value, &usec);
		if (r < 0 || usec == 0)
			return parse_error(
				p,
				"'%s' must be a positive duration such as 500ms, 2s or 1m, "
				"not '%s'",
				k->key, value);
		*(usec_t *)field = usec;
		return 0;
	case VALUE_SIZE:
		r = parse_size(value, &u64);
		if (r < 0 || u64 < k->min || u64 > k->max)
			return parse_error(p,
					   "'%s' must be a size between %" PRIu64 " and %" PRIu64
					   " bytes (K, M, G suffixes allowed), not '%s'",
					   k->key, k->min, k->max, value);
		*(uint64_t *)field = u64;
		return 0;
	case VALUE_UNSIGNED:
		r = parse_uint64(value, &u64);
		if (r < 0 || u64 < k->min || u64 > k->max)
			return parse_error(p,
					   "'%s' must be a number between %" PRIu64 " and %" PRIu64
					   ", not '%s'",
					   k->key, k->min, k->max, value);
		*(unsigned *)field = (unsigned)u64;
		return 0;
	case VALUE_FENCE:
		r = fence_mode_from_string(value);
		if (r < 0)
			return parse_error(p, "'%s' must be one of none, self, command; not '%s'",
					   k->key, value);
		*(enum fence_mode *)field = (enum fence_mode)r;
		return 0;
	case VALUE_LOGLEVEL:
		r = log_level_from_string(value);
		if (r < 0)
			return parse_error(
				p,
				"'%s' must be one of debug, info, notice, warning, error; "
				"not '%s'",
				k->key, value);
		*(int *)field = r;
		return 0;
	case VALUE_BOOL:
		r = parse_bool(value);
		if (r < 0)
			return parse_error(p, "'%s' must be yes or no, not '%s'", k->key, value);
		*(int *)field = r;
		return 0;
	case VALUE_TRANSPORT:
		r = transport_choice_from_string(value);
		if (r < 0)
			return parse_error(p, "'%s' must be one of tcp, rdma, auto; not '%s'",
					   k->key, value);
		*(int *)field = r;
		return 0;
	case VALUE_COMPRESS: {
		int level;
		if (streq(value, "auto"))
			level = COMPRESS_AUTO;
		else if (streq(value, "off") || streq(value, "no"))
			level = 0;
		else if (parse_int(value, &level) < 0 || level < -7 || level > 19)
			return parse_error(p,
					   "'%s' must be auto, off or a zstd level from -7 to 19, "
					   "not '%s'",
					   k->key, value);
		*(int *)field = level;
		return 0;
	}
	case VALUE_LOGTARGET:
		if (streq(value, "auto"))
			*(int *)field = LOG_TARGET_AUTO;
		else if (streq(value, "journal"))
			*(int *)field = LOG_TARGET_JOURNAL;
		else if (streq(value, "console"))
			*(int *)field = LOG_TARGET_CONSOLE;
		else
			return parse_error(p,
					   "'%s' must be one of auto, journal, console; not '%s'",
					   k->key, value);
		return 0;
	}
	return -EINVAL;
}

static int peer_section(struct parse_ctx *p, struct migrd_config *c, const char *name)
{
	struct migrd_peer_config *np;

	if (!string_is_safe_name(name, MIGRD_HOST_NAME_MAX))
		return parse_error(p, "[peer NAME] needs a host name, not '%.64s'", name);
	for (size_t i = 0; i < c->n_peers; i++)
		if (streq(c->peers[i].name, name)) {
			p->peer = &c->peers[i];
			return parse_error(p, "[peer %s] appears twice", name);
		}
	if (c->n_peers >= 256)
		return parse_error(p, "more than 256 [peer] sections");
	np = realloc(c->peers, (c->n_peers + 1) * sizeof(*np));
	if (!np)
		return -ENOMEM;
	c->peers = np;
	np[c->n_peers] = (struct migrd_peer_config){
		.name = strdup(name),
		.encrypt = UNSET,
		.transport = UNSET,
		.compress_level = UNSET,
	};
	if (!np[c->n_peers].name)
		return -ENOMEM;
	p->peer = &np[c->n_peers++];
	return 0;
}

static int parse_line(struct parse_ctx *p, struct migrd_config *c, char *line, char *section,
		      size_t section_size)
{
	char *s = strstrip(line), *eq, *key, *value;

	if (!*s || *s == '#' || *s == ';')
		return 0;
	if (*s == '[') {
		char *end = strchr(s, ']');

		if (!end || !strempty(strstrip(end + 1)))
			return parse_error(p, "malformed section header (expected '[name]')");
		*end = 0;
		s = strstrip(s + 1);
		section[0] = 0;
		p->peer = NULL;
		if (strneq(s, "peer", 4) && (s[4] == ' ' || s[4] == '\t')) {
			int r = peer_section(p, c, strstrip(s + 5));
			if (r >= 0)
				strscpy(section, "peer", section_size);
			return r;
		}
		if (!section_known(s))
			return parse_error(p,
					   "unknown section [%.64s] (known: host, paths, cluster, "
					   "transport, peer NAME, fencing, limits, vm, log)",
					   s);
		strscpy(section, s, section_size);
		return 0;
	}
	eq = strchr(s, '=');
	if (!eq)
		return parse_error(p, "expected 'key = value', got '%.64s'", s);
	*eq = 0;
	key = strstrip(s);
	value = strstrip(eq + 1);
	if (!*key)
		return parse_error(p, "missing key before '='");
	if (!section[0])
		return parse_error(p, "key '%.64s' outside of a known section", key);
	if (streq(section, "peer")) {
		for (size_t i = 0; i < ELEMENTSOF(peer_keys); i++)
			if (streq(peer_keys[i].key, key))
				return p->peer ? assign(p, p->peer, &peer_keys[i], value) : 0;
		return parse_error(p,
				   "unknown key '%.64s' in a [peer] section (known: address, "
				   "encrypt, transport, compress, streams)",
				   key);
	}
	for (size_t i = 0; i < ELEMENTSOF(config_keys); i++)
		if (streq(config_keys[i].section, section) && streq(config_keys[i].key, key))
			return assign(p, c, &config_keys[i], value);
	return parse_error(p, "unknown key '%.64s' in section [%s]", key, section);
}

const char *migrd_config_peer_address(const struct migrd_config *c, const char *peer)
{
	for (size_t i = 0; i < c->n_peers; i++)
		if (streq(c->peers[i].name, peer))
			return c->peers[i].address;
	return NULL;
}

void migrd_config_peer(const struct migrd_config *c, const char *peer, int *ret_encrypt,
		       int *ret_transport, int *ret_compress_level, unsigned *ret_streams)
{
	const struct migrd_peer_config *pc = NULL;

	for (size_t i = 0; i < c->n_peers; i++)
		if (streq(c->peers[i].name, peer))
			pc = &c->peers[i];
	*ret_encrypt = pc && pc->encrypt != UNSET ? pc->encrypt : c->encrypt;
	*ret_transport = pc && pc->transport != UNSET ? pc->transport : c->transport;
	*ret_compress_level =
		pc && pc->compress_level != UNSET ? pc->compress_level : c->compress_level;
	*ret_streams = pc && pc->streams ? pc->streams : c->streams;
}

/* Checks that need the whole file: combinations of keys. */
static void check_whole(struct parse_ctx *p, struct migrd_config *c)
{
	p->line = 0;
	if (c->fence_mode == FENCE_MODE_COMMAND && !c->fence_command)
		(void)parse_error(p, "[fencing] mode = command needs a 'command'");
}

int migrd_config_parse(struct migrd_config *c, const char *filename, const char *text, size_t size,
		       char **ret_errors)
{
	struct parse_ctx p = {.filename = filename ?: "<config>"};
	char section[32] = "";
	const char *pos = text, *end = text + size;
	int r = 0;

	if (size > CONFIG_MAX_SIZE) {
		(void)parse_error(&p, "file is larger than %d bytes", CONFIG_MAX_SIZE);
		goto finish;
	}
	while (pos < end) {
		const char *nl = memchr(pos, '\n', (size_t)(end - pos));
		size_t len = nl ? (size_t)(nl - pos) : (size_t)(end - pos);
		char line[1024];

		p.line++;
		if (memchr(pos, 0, len)) {
			(void)parse_error(&p, "NUL byte in line");
		} else if (len >= sizeof(line)) {
			(void)parse_error(&p, "line longer than %zu bytes", sizeof(line) - 1);
		} else {
			memcpy(line, pos, len);
			line[len] = 0;
			r = parse_line(&p, c, line, section, sizeof(section));
			if (r == -ENOMEM)
				goto finish;
		}
		pos += len + (nl ? 1 : 0);
	}
	check_whole(&p, c);
finish:
	if (r == -ENOMEM) {
		free(p.errors);
		return -ENOMEM;
	}
	if (p.n_errors > 0) {
		if (ret_errors)
			*ret_errors = p.errors;
		else
			free(p.errors);
		return -EINVAL;
	}
	return 0;
}

int migrd_config_load(struct migrd_config *c, const char *path, bool must_exist, char **ret_errors)
{
	_cleanup_free_ char *text = NULL;
	size_t size;
	int r;

	r = read_full_file(path, CONFIG_MAX_SIZE, &text, &size);
	if (r == -ENOENT && !must_exist)
		return 0;
	if (r < 0) {
		if (ret_errors && asprintf(ret_errors, "%s: %s\n", path,
					   r == -EFBIG ? "file too large" : strerror(-r)) < 0)
			*ret_errors = NULL;
		return r;
	}
	return migrd_config_parse(c, path, text, size, ret_errors);
}
