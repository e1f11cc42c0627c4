/* The control API's methods: each turns the manager's state into a reply object. */
#include <errno.h>

#include "common/common.h"
#include "migrd/manager-internal.h"

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
	/* Workloads arrive with the container and VM engines; the cluster knows none yet. */
	*ret = json_pack("{s:[]}", "workloads");
	return *ret ? CONTROL_REPLY_NOW : -ENOMEM;
}

const struct control_method manager_control_methods[] = {
	{"version", method_version},
	{"status", method_status},
	{"hosts", method_hosts},
	{"list", method_list},
};
const size_t manager_n_control_methods = ELEMENTSOF(manager_control_methods);
