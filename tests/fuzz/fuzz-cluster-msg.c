/* libFuzzer target: CPG messages from peers, fed to a cluster state machine mid-exchange. */
#include <stdint.h>
#include <stdlib.h>

#include "common/common.h"
#include "migrd/cluster.h"

static int fuzz_send(void *userdata, const void *msg, size_t len)
{
	return 0;
}

static const struct cluster_ops ops = {.send = fuzz_send};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint32_t members[] = {1};
	struct cluster_state s = {0};
	struct cluster *c;

	log_set_max_level(LOG_EMERG);
	if (cluster_new("h1", "10.0.0.1", &s, &ops, NULL, &c) < 0)
		return 0;
	cluster_connected(c, 1);
	cluster_quorum(c, true);
	cluster_confchg(c, members, 1);
	cluster_deliver(c, 1, data, size, 0);
	cluster_deliver(c, 2, data, size, 0);
	json_decref(cluster_hosts_json(c, 0));
	json_decref(cluster_status_json(c));
	cluster_free(c);
	return 0;
}
