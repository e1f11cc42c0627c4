/* The control API's methods: each turns the manager's state into a reply object. */
#include <errno.h>
#include <string.h>

#include "common/common.h"
#include "migrd/containers.h"
#include "migrd/vms.h"
#include "migrd/manager-internal.h"
#include "migrd/peer-test.h"

static int method_version(struct control_request *req, json_t *params, void *userdata, json_t **ret)
{
	*ret = json_pack("{s:s,s:i}", "version", MIGRD_VERSION, "protocol", 1);
	return *ret ? CONTROL_REPLY_NOW : -ENOMEM;
}

static int method_status(struct control_request *req, json_t *params, void *userdata, json_t **ret)
{
	struct manager *m = userdata;
	json_t *j = cluster_status_json(m->cluster);

	if (!j)
		return -ENOMEM;
	json_object_set_new(j, "version", json_string(MIGRD_VERSION));
	json_object_set_new(j, "uptime_s",
			    json_real((double)(now_usec(CLOCK_MONOTONIC) - m->start_time) / 1e6));
	*ret = j;
	return CONTROL_REPLY_NOW;
}

static int method_hosts(struct control_request *req, json_t *params, void *userdata, json_t **ret)
{
	struct manager *m = userdata;

	*ret = cluster_hosts_json(m->cluster, now_usec(CLOCK_MONOTONIC));
	return *ret ? CONTROL_REPLY_NOW : -ENOMEM;
}

static int method_list(struct control_request *req, json_t *params, void *userdata, json_t **ret)
{
	struct manager *m = userdata;
	json_t *w = json_array();

	/* This host's containers, fresh; the other hosts' as they published them last (each
	 * host publishes with its metrics every second). */
	if (!w || containers_list(m, w) < 0 || vms_list(m, w) < 0 ||
	    cluster_workloads_json(m->cluster, w) < 0) {
		json_decref(w);
		return -ENOMEM;
	}
	*ret = json_pack("{s:o}", "workloads", w);
	return *ret ? CONTROL_REPLY_NOW : -ENOMEM;
}

int manager_peer_address(struct manager *m, struct control_request *req, const char *host,
			 const char **ret_address)
{
	const struct cluster_host *h;

	if (!m->transport)
		return control_request_error(req, ENOTCONN, "transport-unavailable",
					     "This host has no transport: %s.",
					     strna(m->transport_error));
	h = cluster_state_find_host_by_name(cluster_get_state(m->cluster), host);
	if (!h)
		return control_request_error(req, ENOENT, "not-found",
					     "'%s' is not a host of this cluster.", host);
	*ret_address = migrd_config_peer_address(&m->config, host) ?: h->address;
	if (!*ret_address)
		return control_request_error(req, EADDRNOTAVAIL, "not-found",
					     "Host '%s' has no address configured.", host);
	return 0;
}

int manager_parse_compress(json_t *v, int *level)
{
	if (!v)
		return 0; /* keep the default */
	if (json_is_string(v) && streq(json_string_value(v), "auto"))
		*level = COMPRESS_AUTO;
	else if (json_is_string(v) && streq(json_string_value(v), "off"))
		*level = 0;
	else if (json_is_integer(v) && json_integer_value(v) >= -7 && json_integer_value(v) <= 19)
		*level = (int)json_integer_value(v);
	else
		return -EINVAL;
	return 0;
}

static void peer_test_done(void *userdata, int r, json_t *result, const char *code,
			   const char *message)
{
	struct control_request *req = userdata;

	if (r < 0)
		control_request_fail(req, code ?: "internal", message ?: strerror(-r));
	else
		control_request_reply(req, json_incref(result));
}

/* peer-test {host, size, streams, compress: "auto"|"off"|level, source, encrypt} */
static int method_peer_test(struct control_request *req, json_t *params, void *userdata,
			    json_t **ret)
{
	struct manager *m = userdata;
	const char *host = NULL, *source = "random", *address;
	json_t *compress = json_object_get(params, "compress");
	struct peer_test *t;
	uint64_t size = 1ULL << 30, streams = 0;
	int encrypt, transport, level, r;
	unsigned def_streams;
	bool enc;

	if (json_get_string(params, "host", &host) < 0)
		return control_request_error(req, EINVAL, "invalid-params",
					     "peer-test needs 'host', the peer to measure.");
	r = manager_peer_address(m, req, host, &address);
	if (r < 0)
		return r;
	if (streq(host, m->config.host_name))
		return control_request_error(req, EINVAL, "invalid-params",
					     "peer-test measures the link to another host.");
	if ((json_object_get(params, "size") && json_get_uint64(params, "size", &size) < 0) ||
	    size == 0 || size > (1ULL << 40) ||
	    (json_object_get(params, "streams") &&
	     (json_get_uint64(params, "streams", &streams) < 0 || streams == 0 ||
	      streams > TRANSPORT_MAX_STREAMS)) ||
	    (json_object_get(params, "source") && json_get_string(params, "source", &source) < 0))
		return control_request_error(
			req, EINVAL, "invalid-params",
			"peer-test: size must be 1 byte to 1 TiB, streams 1 to "
			"%d, source a string.",
			TRANSPORT_MAX_STREAMS);
	migrd_config_peer(&m->config, host, &encrypt, &transport, &level, &def_streams);
	enc = encrypt;
	if (json_object_get(params, "encrypt") && json_get_bool(params, "encrypt", &enc) < 0)
		return control_request_error(req, EINVAL, "invalid-params",
					     "'encrypt' must be true or false.");
	if (manager_parse_compress(compress, &level) < 0)
		return control_request_error(req, EINVAL, "invalid-params",
					     "'compress' must be \"auto\", \"off\" or a "
					     "zstd level from -7 to 19.");
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->ctx = m->transport;
	strscpy(t->peer, host, sizeof(t->peer));
	r = transport_parse_address(address, m->config.port, &t->addr, &t->addr_len);
	t->size = size;
	t->source = strdup(source);
	if (json_object_get(params, "transport")) {
		const char *tr = NULL;
		if (json_get_string(params, "transport", &tr) < 0 ||
		    (transport = transport_choice_from_string(tr)) < 0) {
			peer_test_free(t);
			return control_request_error(req, EINVAL, "invalid-params",
						     "'transport' must be tcp, rdma or auto.");
		}
	}
	t->params = (struct transport_session_params){
		.kind = (enum transport_kind)transport,
		.n_streams = streams ? (unsigned)streams : def_streams,
		.encrypt = enc,
		.compress_auto = level == COMPRESS_AUTO,
		.compress_level = level == COMPRESS_AUTO ? 0 : level,
		.purpose = "peer-test",
	};
	if (r < 0 || !t->source) {
		peer_test_free(t);
		return control_request_error(req, r < 0 ? -r : ENOMEM, "internal",
					     "Cannot resolve the address of %s: %s.", host,
					     address);
	}
	r = job_start(m->jobs, peer_test_run, t, peer_test_free, peer_test_done, req);
	if (r < 0) {
		peer_test_free(t);
		return control_request_error(req, -r, "busy", "Too many transfers running.");
	}
	return CONTROL_REPLY_LATER;
}

const struct control_method manager_control_methods[] = {
	{"version", method_version},
	{"status", method_status},
	{"hosts", method_hosts},
	{"list", method_list},
	{"peer-test", method_peer_test},
	{"run", method_run},
	{"stop", method_stop},
	{"rm", method_rm},
	{"logs", method_logs},
	{"checkpoint", method_checkpoint},
	{"restore", method_restore},
	{"vm-adopt", method_vm_adopt},
	{"vm-release", method_vm_release},
	{"vm-move", method_vm_move},
	{"vm-move-status", method_vm_move_status},
};
const size_t manager_n_control_methods = ELEMENTSOF(manager_control_methods);
