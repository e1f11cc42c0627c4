/* The libvirt side of VM workloads: lookups of domains and their states. */
#include <errno.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/vm/libvirt-internal.h"
#include "checkpoint/vm/vm-internal.h"
#include "common/common.h"

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void quiet(void *userdata, virErrorPtr err)
{
	/* libvirt prints every error to stderr by default: we report them ourselves. */
}

static void init(void)
{
	if (virInitialize() < 0)
		log_debug("virInitialize failed");
	virSetErrorFunc(NULL, quiet);
}

const char *vm_state_to_string(int s)
{
	switch (s) {
	case VIR_DOMAIN_RUNNING:
		return "running";
	case VIR_DOMAIN_BLOCKED:
		return "blocked";
	case VIR_DOMAIN_PAUSED:
		return "paused";
	case VIR_DOMAIN_SHUTDOWN:
		return "shutting down";
	case VIR_DOMAIN_SHUTOFF:
		return "shut off";
	case VIR_DOMAIN_CRASHED:
		return "crashed";
	case VIR_DOMAIN_PMSUSPENDED:
		return "suspended";
	default:
		return "unknown";
	}
}

char *vm_last_error(const char *what)
{
	const char *msg = virGetLastErrorMessage();
	char *s;

	if (asprintf(&s, "%s: %s", what, msg ? msg : "unknown libvirt error") < 0)
		return NULL;
	return s;
}

virConnectPtr vm_connect(const char *uri, char **ret_error)
{
	virConnectPtr c;

	pthread_once(&init_once, init);
	c = virConnectOpen(uri);
	if (!c) {
		char what[512];

		snprintf(what, sizeof(what), "cannot connect to libvirt at %s", uri);
		*ret_error = vm_last_error(what);
	}
	return c;
}

void vm_info_done(struct vm_info *i)
{
	free(i->name);
	*i = (struct vm_info){};
}

int vm_lookup(const char *uri, const char *name, struct vm_info *ret, char **ret_error)
{
	virConnectPtr c;
	virDomainPtr d;
	virDomainInfo info;
	char what[512];
	int r = 0;

	*ret_error = NULL;
	c = vm_connect(uri, ret_error);
	if (!c)
		return -ECONNREFUSED;
	d = virDomainLookupByName(c, name);
	if (!d) {
		virErrorPtr e = virGetLastError();

		snprintf(what, sizeof(what), "no domain '%s' at %s", name, uri);
		*ret_error = vm_last_error(what);
		r = e && e->code == VIR_ERR_NO_DOMAIN ? -ENOENT : -EIO;
		goto out;
	}
	*ret = (struct vm_info){};
	if (virDomainGetInfo(d, &info) < 0 || virDomainGetUUIDString(d, ret->uuid) < 0) {
		snprintf(what, sizeof(what), "domain '%s'", name);
		*ret_error = vm_last_error(what);
		r = -EIO;
	} else {
		ret->name = strdup(name);
		ret->state = vm_state_to_string(info.state);
		ret->memory_kib = info.memory;
		ret->max_memory_kib = info.maxMem;
		ret->vcpus = info.nrVirtCpu;
		ret->persistent = virDomainIsPersistent(d) == 1;
		r = ret->name ? 0 : -ENOMEM;
	}
	virDomainFree(d);
out:
	virConnectClose(c);
	return r;
}

int vm_states(const char *uri, char *const *names, size_t n, const char ***ret_states,
	      char **ret_error)
{
	const char **states = calloc(n ? n : 1, sizeof(*states));
	virConnectPtr c;

	*ret_error = NULL;
	if (!states)
		return -ENOMEM;
	c = vm_connect(uri, ret_error);
	if (!c) {
		free(states);
		return -ECONNREFUSED;
	}
	for (size_t i = 0; i < n; i++) {
		virDomainPtr d = virDomainLookupByName(c, names[i]);
		int state, reason;

		if (!d)
			continue;
		if (virDomainGetState(d, &state, &reason, 0) == 0)
			states[i] = vm_state_to_string(state);
		virDomainFree(d);
	}
	virConnectClose(c);
	*ret_states = states;
	return 0;
}
