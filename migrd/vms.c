/* VMs under this host's care: adopted libvirt domains, kept in the state store, listed beside
 * the containers; their states are refreshed from libvirt in a job thread at once after every
 * libvirt lifecycle event and every few seconds besides (libvirt calls block, the event loop
 * never waits for them). */
#include <errno.h>
#include <sys/epoll.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/vm/vm-internal.h"
#include "checkpoint/workload.h"
#include "common/common.h"
#include "migrd/manager-internal.h"
#include "migrd/vms-internal.h"

#define MAX_VMS		 1024
#define REFRESH_INTERVAL (10 * USEC_PER_SEC) /* and at once after every libvirt event */

struct vm *vms_find(struct manager *m, const char *name)
{
	for (size_t i = 0; i < m->n_vms; i++)
		if (streq(m->vms[i]->name, name))
			return m->vms[i];
	return NULL;
}

static void vm_free(struct vm *v)
{
	if (!v)
		return;
	json_decref(v->record);
	free(v->name);
	free(v);
}

static int add(struct manager *m, const char *name, json_t *record)
{
	struct vm **n, *v = calloc(1, sizeof(*v));

	if (!v)
		return -ENOMEM;
	v->name = strdup(name);
	v->record = json_incref(record);
	n = reallocarray(m->vms, m->n_vms + 1, sizeof(*n));
	if (!v->name || !n) {
		vm_free(v);
		return -ENOMEM;
	}
	m->vms = n;
	m->vms[m->n_vms++] = v;
	return 0;
}

void vms_persist(struct manager *m, struct vm *v)
{
	int r = state_db_vm_put(m->db, v->name, v->record);

	if (r < 0)
		log_error_errno(r, "Failed to persist VM %s: %m", v->name);
}

/* ---- refresh ------------------------------------------------------------------------------ */

struct refresh {
	struct manager *m;
	char *uri;
	char **names;
	size_t n;
	const char **states;
};

static void refresh_free(void *arg)
{
	struct refresh *f = arg;

	if (!f)
		return;
	free(f->uri);
	strv_free(f->names);
	free(f->states);
	free(f);
}

static int refresh_run(void *arg, json_t **ret_result, const char **ret_code, char **ret_message)
{
	struct refresh *f = arg;
	int r = vm_states(f->uri, f->names, f->n, &f->states, ret_message);

	if (r < 0) {
		*ret_code = "libvirt-unavailable";
		return r;
	}
	*ret_result = json_object();
	return *ret_result ? 0 : -ENOMEM;
}

static void refresh_done(void *userdata, int r, json_t *result, const char *code,
			 const char *message)
{
	struct refresh *f = userdata;
	struct manager *m = f->m;

	m->vm_refresh_running = false;
	if (r < 0) {
		if (!m->vm_libvirt_warned)
			log_warning("VM states: %s", message ?: strerror(-r));
		m->vm_libvirt_warned = true;
		return;
	}
	m->vm_libvirt_warned = false;
	for (size_t i = 0; i < f->n; i++) {
		struct vm *v = vms_find(m, f->names[i]);
		const char *now = f->states[i] ?: "gone", *was = NULL;

		if (!v)
			continue;
		(void)json_get_string(v->record, "state", &was);
		if (was && streq(was, now))
			continue;
		log_struct_errno(LOG_INFO, 0, LOG_FIELDS("MIGRD_EVENT=vm-state"), "VM %s: %s -> %s",
				 v->name, strna(was), now);
		json_object_set_new(v->record, "state", json_string(now));
		vms_persist(m, v);
	}
}

static int on_refresh(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct manager *m = userdata;
	struct refresh *f;

	(void)sd_event_source_set_time(s, usec + REFRESH_INTERVAL);
	if (m->n_vms == 0 || m->vm_refresh_running)
		return 0;
	f = calloc(1, sizeof(*f));
	if (!f)
		return 0;
	f->m = m;
	f->uri = strdup(m->config.libvirt_uri);
	f->names = calloc(m->n_vms + 1, sizeof(char *));
	for (size_t i = 0; f->names && i < m->n_vms; i++)
		if ((f->names[f->n] = strdup(m->vms[i]->name)))
			f->n++;
	if (!f->uri || !f->names || f->n != m->n_vms ||
	    job_start(m->jobs, refresh_run, f, refresh_free, refresh_done, f) < 0) {
		refresh_free(f);
		return 0;
	}
	m->vm_refresh_running = true;
	return 0;
}

/* ---- libvirt events: a refresh at once instead of at the next tick --------------------------- */

static int on_vm_event(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct manager *m = userdata;
	char *name;

	while ((name = vm_events_next(m->vm_events)))
		free(name);
	(void)sd_event_source_set_time(m->vm_refresh_timer, now_usec(CLOCK_MONOTONIC));
	(void)sd_event_source_set_enabled(m->vm_refresh_timer, SD_EVENT_ON);
	return 0;
}

/* Events start with the first VM: hosts without VMs need no libvirtd. */
void vms_events_start(struct manager *m)
{
	int r;

	if (m->vm_events)
		return;
	r = vm_events_start(m->config.libvirt_uri, &m->vm_events);
	if (r >= 0)
		r = sd_event_add_io(m->event, &m->vm_event_source, vm_events_fd(m->vm_events),
				    EPOLLIN, on_vm_event, m);
	if (r < 0) {
		log_warning_errno(r, "No libvirt events (VM states are polled): %m");
		m->vm_events = vm_events_stop(m->vm_events);
	}
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

int vms_load(struct manager *m)
{
	_cleanup_json_ json_t *all = NULL;
	json_t *rec;
	size_t i;
	int r;

	r = state_db_vms_load(m->db, &all);
	if (r < 0)
		return log_error_errno(r, "Failed to load the VMs from the state store: %m");
	json_array_foreach(all, i, rec)
	{
		const char *name = NULL;

		if (json_get_string(rec, "name", &name) < 0 || !workload_name_is_valid(name))
			continue;
		r = add(m, name, rec);
		if (r < 0)
			return log_oom();
	}
	if (m->n_vms)
		log_info("%zu VM%s under this host's care (libvirt: %s)", m->n_vms,
			 m->n_vms == 1 ? "" : "s", m->config.libvirt_uri);
	r = sd_event_add_time_relative(m->event, &m->vm_refresh_timer, CLOCK_MONOTONIC,
				       REFRESH_INTERVAL / 4, 0, on_refresh, m);
	if (r >= 0) /* periodic: on_refresh moves the time on */
		r = sd_event_source_set_enabled(m->vm_refresh_timer, SD_EVENT_ON);
	if (r < 0)
		return log_error_errno(r, "Failed to add the VM refresh timer: %m");
	if (m->n_vms)
		vms_events_start(m);
	return 0;
}

void vms_free(struct manager *m)
{
	m->vm_event_source = sd_event_source_disable_unref(m->vm_event_source);
	m->vm_events = vm_events_stop(m->vm_events);
	m->vm_refresh_timer = sd_event_source_disable_unref(m->vm_refresh_timer);
	for (size_t i = 0; i < m->n_vms; i++)
		vm_free(m->vms[i]);
	free(m->vms);
	m->vms = NULL;
	m->n_vms = 0;
}

int vms_list(struct manager *m, json_t *array)
{
	for (size_t i = 0; i < m->n_vms; i++) {
		struct vm *v = m->vms[i];
		const char *state = NULL;
		uint64_t mem = 0;
		json_t *w;

		(void)json_get_string(v->record, "state", &state);
		(void)json_get_uint64(v->record, "memory", &mem);
		if (vms_move_state(v))
			state = vms_move_state(v);
		w = json_pack("{s:s,s:s,s:s,s:s,s:I}", "name", v->name, "kind", "vm", "host",
			      m->config.host_name, "state", state ?: "unknown", "memory",
			      (json_int_t)mem);
		if (!w)
			return -ENOMEM;
		json_array_append_new(array, w);
	}
	return 0;
}

int vms_take(struct manager *m, const char *name, json_t *record)
{
	struct vm *v = vms_find(m, name);

	if (!v) {
		if (m->n_vms >= MAX_VMS || add(m, name, record) < 0)
			return -ENOMEM;
		v = vms_find(m, name);
	} else {
		json_decref(v->record);
		v->record = json_incref(record);
	}
	vms_persist(m, v);
	vms_events_start(m);
	return 0;
}

void vms_forget(struct manager *m, const char *name)
{
	/* From the store first: also when the list is already gone (migrd shutting down while
	 * a move finished). */
	int r = state_db_vm_delete(m->db, name);

	if (r < 0)
		log_error_errno(r, "Failed to forget VM %s in the state store: %m", name);
	for (size_t i = 0; i < m->n_vms; i++) {
		struct vm *v = m->vms[i];

		if (!streq(v->name, name))
			continue;
		m->vms[i] = m->vms[--m->n_vms];
		vm_free(v);
		return;
	}
}

void vms_claim(struct manager *m, const char *name, const char *from)
{
	int r = cluster_request_owner(m->cluster, name, "vm", m->config.host_name, from, false);

	if (r < 0)
		log_warning_errno(r, "Cannot record %s's owner in the cluster state: %m", name);
	manager_arm_flush(m);
}

/* ---- vm-adopt ----------------------------------------------------------------------------- */

struct adopt {
	struct manager *m;
	struct control_request *req;
	char *uri, *name;
	struct vm_info info;
	struct transport_context *ctx;
	struct vm_peer *peers;
	size_t n_peers;
};

static void adopt_free(void *arg)
{
	struct adopt *a = arg;

	if (!a)
		return;
	vm_info_done(&a->info);
	free(a->uri);
	free(a->name);
	free(a->peers);
	free(a);
}

static int adopt_run(void *arg, json_t **ret_result, const char **ret_code, char **ret_message)
{
	struct adopt *a = arg;
	int r = vm_lookup(a->uri, a->name, &a->info, ret_message);

	if (r < 0) {
		*ret_code = r == -ENOENT	 ? "not-found"
			    : r == -ECONNREFUSED ? "libvirt-unavailable"
						 : "libvirt-error";
		return r;
	}
	*ret_result = json_pack(
		"{s:s,s:s,s:s,s:I,s:i,s:b,s:s}", "name", a->info.name, "uuid", a->info.uuid,
		"state", a->info.state, "memory", (json_int_t)(a->info.memory_kib * 1024), "vcpus",
		(int)a->info.vcpus, "persistent", a->info.persistent, "libvirt", a->uri);
	if (!*ret_result)
		return -ENOMEM;
	/* Where it could move: each peer checks the emulator, kernel and disks it needs. */
	if (a->n_peers > 0) {
		_cleanup_free_ char *xml = NULL, *err = NULL;
		bool running;

		if (vm_domain_xml(a->uri, a->name, &xml, &running, NULL, &err) >= 0)
			json_object_set_new(
				*ret_result, "peers",
				vms_check_peers(a->ctx, a->peers, a->n_peers, a->name, xml));
	}
	return 0;
}

static void adopt_done(void *userdata, int r, json_t *result, const char *code, const char *message)
{
	struct adopt *a = userdata;
	struct manager *m = a->m;
	const struct cluster_workload *w;
	struct vm *v;

	if (r < 0) {
		control_request_fail(a->req, code, message ?: strerror(-r));
		return;
	}
	/* One host owns a workload: refuse what the cluster says another host has. */
	w = cluster_state_find_workload(cluster_get_state(m->cluster), a->name);
	if (w && !streq(w->host, m->config.host_name)) {
		char msg[256];

		snprintf(msg, sizeof(msg),
			 "%s belongs to %s in the cluster state: adopt it there, or move it here",
			 a->name, w->host);
		control_request_fail(a->req, "conflict", msg);
		return;
	}
	v = vms_find(m, a->name);
	if (!v) {
		json_t *rec = json_deep_copy(result);

		r = rec && m->n_vms < MAX_VMS ? add(m, a->name, rec) : -ENOMEM;
		json_decref(rec);
	}
	if (r < 0) {
		control_request_fail(a->req, "busy", "Too many VMs on this host.");
		return;
	}
	if (v) {
		json_decref(v->record);
		v->record = json_deep_copy(result);
	} else
		v = vms_find(m, a->name);
	/* The peers' answers are for the reply, not the record: they change. */
	json_object_del(v->record, "peers");
	json_object_set_new(v->record, "adopted",
			    json_integer((json_int_t)now_usec(CLOCK_REALTIME)));
	vms_persist(m, v);
	vms_events_start(m);
	if (!w)
		vms_claim(m, a->name, NULL);
	log_struct_errno(LOG_INFO, 0, LOG_FIELDS("MIGRD_EVENT=vm-adopted"),
			 "VM %s adopted (%s, %s)", a->name, a->info.state, a->uri);
	control_request_reply(a->req, json_incref(result));
}

int method_vm_adopt(struct control_request *req, json_t *params, void *userdata, json_t **ret)
{
	struct manager *m = userdata;
	const char *name = NULL;
	struct adopt *a;
	int r;

	if (json_get_string(params, "name", &name) < 0 || !workload_name_is_valid(name))
		return control_request_error(req, EINVAL, "invalid-params",
					     "vm-adopt needs the 'name' of a libvirt domain: 1-%d "
					     "letters, digits, '-', '_' or '.'.",
					     WORKLOAD_NAME_MAX);
	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	*a = (struct adopt){
		.m = m, .req = req, .uri = strdup(m->config.libvirt_uri), .name = strdup(name)};
	a->ctx = m->transport;
	if (!a->uri || !a->name || (m->transport && vms_peers(m, &a->peers, &a->n_peers) < 0)) {
		adopt_free(a);
		return -ENOMEM;
	}
	r = job_start(m->jobs, adopt_run, a, adopt_free, adopt_done, a);
	if (r < 0) {
		adopt_free(a);
		return control_request_error(req, -r, "busy", "Too many jobs running.");
	}
	return CONTROL_REPLY_LATER;
}

/* ---- vm-release ---------------------------------------------------------------------------- */

int method_vm_release(struct control_request *req, json_t *params, void *userdata, json_t **ret)
{
	struct manager *m = userdata;
	const char *name = NULL;
	struct vm *v;
	int r;

	if (json_get_string(params, "name", &name) < 0 || !workload_name_is_valid(name))
		return control_request_error(req, EINVAL, "invalid-params",
					     "vm-release needs the 'name' of an adopted VM.");
	v = vms_find(m, name);
	if (!v)
		return control_request_error(req, ENOENT, "not-found",
					     "%s is not a VM under migrd's care on %s.", name,
					     m->config.host_name);
	if (v->move)
		return control_request_error(req, EBUSY, "busy", "%s is being moved.", name);
	*ret = json_pack("{s:s,s:s}", "name", name, "host", m->config.host_name);
	if (!*ret)
		return -ENOMEM;
	/* The domain itself is left to libvirt, untouched. */
	r = cluster_request_owner(m->cluster, name, "vm", m->config.host_name, NULL, true);
	if (r < 0)
		log_warning_errno(r, "Cannot drop %s's owner from the cluster state: %m", name);
	manager_arm_flush(m);
	log_struct_errno(LOG_INFO, 0, LOG_FIELDS("MIGRD_EVENT=vm-released"),
			 "VM %s released: no longer under migrd's care", name);
	vms_forget(m, name);
	return CONTROL_REPLY_NOW;
}
