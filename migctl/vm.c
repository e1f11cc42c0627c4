/* The `vm` verb: VMs (libvirt domains) under migrd's care. */
#include <errno.h>
#include <getopt.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/json-util.h"
#include "common/util.h"
#include "migctl/migctl-internal.h"

static const char vm_help[] =
	"Usage: migctl [GLOBAL OPTIONS] vm adopt NAME\n"
	"       migctl [GLOBAL OPTIONS] vm release NAME\n"
	"\n"
	"Put an existing libvirt domain NAME of this host under migrd's care: migrd records it,\n"
	"lists it beside the containers ('migctl list': kind vm, host, state, memory) and\n"
	"follows its state. The domain is looked up through this host's libvirt ([vm]\n"
	"libvirt_uri in migrd.conf, default qemu:///system); it keeps running untouched.\n"
	"The cluster state records this host as its owner; a VM another host owns is refused.\n"
	"Every other host is asked whether it could run the domain (emulator, kernel, disks):\n"
	"the answer says where it can move.\n"
	"Then 'migctl move NAME HOST' moves it.\n"
	"\n"
	"'vm release NAME' takes it out of migrd's care again (and out of the cluster state);\n"
	"libvirt's domain is left as it is.\n"
	"\n"
	"Example:\n"
	"  $ migctl vm adopt vm1\n"
	"  vm1 adopted: running, 512.0MiB, 2 vCPUs\n"
	"    can move to h2\n"
	"    cannot move to h3: h3 cannot run vm1: disk /var/lib/libvirt/images/vm1.img: No such\n"
	"    file or directory\n";

int verb_vm(const struct migctl *m, int argc, char **argv)
{
	_cleanup_json_ json_t *params = json_object(), *reply = NULL;
	json_t *result;
	char mem[32];
	int r;

	if (!params)
		return migctl_report_error(m, -ENOMEM);
	if (argc >= 2 && (streq(argv[1], "-h") || streq(argv[1], "--help"))) {
		fputs(vm_help, m->out);
		return MIGCTL_EXIT_OK;
	}
	if (argc < 2 || !(streq(argv[1], "adopt") || streq(argv[1], "release")))
		return migctl_usage_error(m, "vm",
					  "needs a subcommand: adopt NAME or release NAME");
	if (argc == 3 && (streq(argv[2], "-h") || streq(argv[2], "--help"))) {
		fputs(vm_help, m->out);
		return MIGCTL_EXIT_OK;
	}
	if (argc != 3)
		return migctl_usage_error(m, "vm", "%s needs exactly one domain NAME", argv[1]);
	json_object_set_new(params, "name", json_string(argv[2]));
	if (streq(argv[1], "release")) {
		r = migctl_request(m, "vm-release", params, &reply, &result);
		if (r != MIGCTL_EXIT_OK)
			return r;
		if (m->json)
			return migctl_print_json(m, result);
		fprintf(m->out, "%s released: no longer under migrd's care\n", argv[2]);
		return MIGCTL_EXIT_OK;
	}
	r = migctl_request(m, "vm-adopt", params, &reply, &result);
	if (r != MIGCTL_EXIT_OK)
		return r;
	if (m->json)
		return migctl_print_json(m, result);
	format_bytes(mem, sizeof(mem),
		     (uint64_t)json_integer_value(json_object_get(result, "memory")));
	fprintf(m->out, "%s adopted: %s, %s, %d vCPU%s\n", argv[2],
		strna(json_string_value(json_object_get(result, "state"))), mem,
		(int)json_integer_value(json_object_get(result, "vcpus")),
		json_integer_value(json_object_get(result, "vcpus")) == 1 ? "" : "s");
	{
		json_t *peers = json_object_get(result, "peers"), *v;
		const char *peer;

		json_object_foreach(peers, peer, v)
		{
			const char *verdict = json_string_value(v);

			if (verdict && streq(verdict, "ok"))
				fprintf(m->out, "    can move to %s\n", peer);
			else
				fprintf(m->out, "    cannot move to %s: %s\n", peer,
					strna(verdict));
		}
	}
	return MIGCTL_EXIT_OK;
}
