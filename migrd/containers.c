/* Containers on this host: run (namespaces + cgroup + log), watch (pidfd), stop (SIGTERM, then
 * the cgroup is killed), remove, logs; persisted as JSON records in the state store. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint/ct/container-internal.h"
#include "checkpoint/workload.h"
#include "common/common.h"
#include "migrd/containers-internal.h"
#include "migrd/manager-internal.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

#define MAX_CONTAINERS	     1024
#define MAX_ARGS	     4096
#define LOG_CHUNK_MAX	     (1024 * 1024)
#define STOP_TIMEOUT_DEFAULT (10 * USEC_PER_SEC)

const char *container_state(struct container *c)
{
	const char *s = NULL;
	(void)json_get_string(c->record, "state", &s);
	return s ?: "unknown";
}

bool container_is_running(struct container *c)
{
	return streq(container_state(c), "running");
}

void container_persist(struct container *c)
{
	int r = state_db_container_put(c->m->db, c->name, c->record);
	if (r < 0)
		log_error_errno(r, "Failed to persist container %s: %m", c->name);
}

char *container_cgroup_name(struct manager *m, const char *name)
{
	char *s;
	return asprintf(&s, "%s.%s", m->config.host_name, name) < 0 ? NULL : s;
}

char *container_log_path(struct manager *m, const char *name)
{
	char *s;
	return asprintf(&s, "%s/containers/%s.log", m->config.state_dir, name) < 0 ? NULL : s;
}

struct container *containers_find(struct manager *m, const char *name)
{
	for (size_t i = 0; i < m->n_containers; i++)
		if (streq(m->containers[i]->name, name))
			return m->containers[i];
	return NULL;
}

void container_free(struct container *c)
{
	if (!c)
		return;
	sd_event_source_disable_unref(c->exit_source);
	sd_event_source_disable_unref(c->stop_timer);
	safe_close(c->pidfd);
	ct_cgroup_free(c->cg);
	json_decref(c->record);
	free(c->name);
	free(c);
}

int container_open_cgroup(struct manager *m, const char *name, json_t *record,
			  struct ct_cgroup **ret)
{
	_cleanup_free_ char *cgn = container_cgroup_name(m, name);
	struct ct_cgroup_params p = {.name = cgn, .needs = 0, .mode = CT_CGROUP_AUTO};
	uint64_t mem = 0;
	json_t *cpus = json_object_get(record, "cpus");

	if (!cgn)
		return -ENOMEM;
	(void)json_get_uint64(record, "memory", &mem);
	if (mem)
		p.needs |= CT_CGROUP_NEED_MEMORY;
	if (json_is_number(cpus) && json_number_value(cpus) > 0)
		p.needs |= CT_CGROUP_NEED_CPU;
	return ct_cgroup_new(&p, ret);
}

int container_set_limits(struct ct_cgroup *cg, json_t *record)
{
	json_t *cpus = json_object_get(record, "cpus");
	uint64_t mem = 0;
	int r;

	(void)json_get_uint64(record, "memory", &mem);
	if (mem) {
		r = ct_cgroup_set_memory_limit(cg, mem);
		if (r < 0)
			return r;
	}
	if (json_is_number(cpus) && json_number_value(cpus) > 0)
		return ct_cgroup_set_cpu_quota(cg, (uint64_t)(json_number_value(cpus) * 100000),
					       100000);
	return 0;
}

/* The process ended: record how, make sure nothing of it is left, answer a waiting stop. */
static void on_exited(struct container *c)
{
	siginfo_t si = {0};
	json_t *status = json_null();
	char how[64] = "";

	if (waitid((idtype_t)P_PIDFD, (id_t)c->pidfd, &si, WEXITED | WNOHANG) >= 0 && si.si_pid) {
		if (si.si_code == CLD_EXITED)
			status = json_pack("{s:i}", "exit_code", si.si_status);
		else
			status = json_pack("{s:s}", "signal", strsignal(si.si_status));
	}
	c->exit_source = sd_event_source_disable_unref(c->exit_source);
	c->stop_timer = sd_event_source_disable_unref(c->stop_timer);
	c->pidfd = safe_close(c->pidfd);
	/* PID 1 is gone, so the kernel killed the namespace; the cgroup may hold stragglers
	 * only if something escaped it: make sure. */
	if (c->cg && ct_cgroup_kill(c->cg, 2 * USEC_PER_SEC) < 0)
		log_warning("Container %s: %s", c->name, ct_cgroup_last_error(c->cg));
	json_object_set_new(c->record, "state",
			    json_string(c->checkpoint_kill  ? "checkpointed"
					: c->stop_requested ? "stopped"
							    : "exited"));
	json_object_set_new(c->record, "status", status ?: json_null());
	json_object_del(c->record, "pid");
	if (si.si_pid && si.si_code == CLD_EXITED)
		snprintf(how, sizeof(how), " (exit code %d)", si.si_status);
	else if (si.si_pid)
		snprintf(how, sizeof(how), " (%s)", strsignal(si.si_status));
	log_struct_errno(LOG_INFO, 0, LOG_FIELDS("MIGRD_EVENT=container-exited"),
			 "Container %s %s%s", c->name, container_state(c), how);
	container_persist(c);
	if (c->stop_waiter) {
		control_request_reply(c->stop_waiter, json_pack("{s:s,s:s}", "name", c->name,
								"state", container_state(c)));
		c->stop_waiter = NULL;
	}
}

static int on_pidfd(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	on_exited(userdata);
	return 0;
}

int container_watch(struct container *c)
{
	return sd_event_add_io(c->m->event, &c->exit_source, c->pidfd, EPOLLIN, on_pidfd, c);
}

int containers_add(struct manager *m, struct container *c)
{
	struct container **n;

	n = realloc(m->containers, (m->n_containers + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	m->containers = n;
	m->containers[m->n_containers++] = c;
	return 0;
}

void containers_del(struct manager *m, struct container *c)
{
	for (size_t i = 0; i < m->n_containers; i++)
		if (m->containers[i] == c) {
			m->containers[i] = m->containers[--m->n_containers];
			break;
		}
	container_free(c);
}

int containers_load(struct manager *m)
{
	_cleanup_json_ json_t *all = NULL;
	json_t *rec;
	size_t i;
	int r;

	r = state_db_containers_load(m->db, &all);
	if (r < 0)
		return log_error_errno(r, "Failed to load containers: %m");
	json_array_foreach(all, i, rec)
	{
		struct container *c = calloc(1, sizeof(*c));
		const char *name = NULL;
		uint64_t pid = 0, start = 0, now_start = 0;

		if (!c)
			return log_oom();
		c->m = m;
		c->pidfd = -EBADF;
		(void)json_get_string(rec, "name", &name);
		c->name = name ? strdup(name) : NULL;
		c->record = json_incref(rec);
		if (!c->name || containers_add(m, c) < 0) {
			container_free(c);
			return log_oom();
		}
		if (!streq(container_state(c), "running")) {
			if (json_object_get(c->record, "checkpoint_started")) {
				json_object_del(c->record, "checkpoint_started");
				container_persist(c);
			}
			continue;
		}
		/* Same pid and same start time: the very process we started, not a recycled pid. */
		(void)json_get_uint64(rec, "pid", &pid);
		(void)json_get_uint64(rec, "start_time", &start);
		if (pid > 0 && ct_process_start_time((pid_t)pid, &now_start) >= 0 &&
		    now_start == start) {
			c->pid = (pid_t)pid;
			c->pidfd = (int)syscall(SYS_pidfd_open, c->pid, 0);
			if (c->pidfd >= 0 && container_watch(c) >= 0 &&
			    container_open_cgroup(m, c->name, rec, &c->cg) >= 0) {
				log_info("Container %s (pid %d) is still running: adopted", c->name,
					 (int)c->pid);
				container_recover_checkpoint(c);
				continue;
			}
		}
		log_notice("Container %s ended while migrd was not running", c->name);
		c->pidfd = safe_close(c->pidfd);
		json_object_del(c->record, "checkpoint_started");
		json_object_set_new(c->record, "state", json_string("exited"));
		json_object_set_new(c->record, "status", json_null());
		json_object_del(c->record, "pid");
		container_persist(c);
	}
	return 0;
}

void containers_free(struct manager *m)
{
	/* The containers keep running: migrd finds them again at its next start. */
	for (size_t i = 0; i < m->n_containers; i++)
		container_free(m->containers[i]);
	free(m->containers);
	m->containers = NULL;
	m->n_containers = 0;
}

static uint64_t memory_used(struct container *c)
{
	char path[512];
	_cleanup_free_ char *text = NULL;
	uint64_t v = 0;

	if (!c->cg)
		return 0;
	if (c->cg->v2_path)
		snprintf(path, sizeof(path), "%s/memory.current", c->cg->v2_path);
	else if (c->cg->memory_path)
		snprintf(path, sizeof(path), "%s/memory.usage_in_bytes", c->cg->memory_path);
	else
		return 0;
	if (read_full_file(path, 64, &text, NULL) >= 0)
		(void)parse_uint64(strstrip(text), &v);
	return v;
}

int containers_list(struct manager *m, json_t *array)
{
	for (size_t i = 0; i < m->n_containers; i++) {
		struct container *c = m->containers[i];
		json_t *w = json_pack("{s:s,s:s,s:s,s:s,s:I}", "name", c->name, "kind", "container",
				      "host", m->config.host_name, "state", container_state(c),
				      "memory",
				      (json_int_t)(container_is_running(c) ? memory_used(c) : 0));
		if (!w)
			return -ENOMEM;
		if (c->pid)
			json_object_set_new(w, "pid", json_integer(c->pid));
		json_array_append_new(array, w);
	}
	return 0;
}

static int get_strv(json_t *params, const char *key, bool required, char ***ret)
{
	json_t *a = json_object_get(params, key), *v;
	char **l;
	size_t i;

	if (!a && !required) {
		*ret = NULL;
		return 0;
	}
	if (!json_is_array(a) || (required && json_array_size(a) == 0) ||
	    json_array_size(a) > MAX_ARGS)
		return -EINVAL;
	l = calloc(json_array_size(a) + 1, sizeof(char *));
	if (!l)
		return -ENOMEM;
	json_array_foreach(a, i, v)
	{
		if (!json_is_string(v) || !(l[i] = strdup(json_string_value(v)))) {
			strv_free(l);
			return -EINVAL;
		}
	}
	*ret = l;
	return 0;
}

int method_run(struct control_request *req, json_t *params, void *userdata, json_t **ret)
{
	struct manager *m = userdata;
	_cleanup_strv_free_ char **argv = NULL, **env = NULL;
	_cleanup_free_ char *logp = NULL, *dir = NULL, *error = NULL;
	_cleanup_close_ int log_fd = -EBADF;
	const char *name = NULL, *cwd = "/";
	uint64_t memory = 0, start = 0;
	json_t *cpus = json_object_get(params, "cpus");
	bool netns = false;
	struct container *c;
	struct ct_spec spec;
	int r;

	if (json_get_string(params, "name", &name) < 0 || !workload_name_is_valid(name))
		return control_request_error(
			req, EINVAL, "invalid-params",
			"A container needs a 'name': 1-%d letters, digits, '-', "
			"'_' or '.', not starting with '-' or '.'.",
			WORKLOAD_NAME_MAX);
	if (get_strv(params, "argv", true, &argv) < 0 || get_strv(params, "env", false, &env) < 0)
		return control_request_error(req, EINVAL, "invalid-params",
					     "'argv' must be a non-empty list of strings (the "
					     "command), 'env' a list of K=V strings.");
	for (char **e = env; e && *e; e++)
		if (!strchr(*e, '=') || **e == '=')
			return control_request_error(req, EINVAL, "invalid-params",
						     "Environment entry '%s' is not K=V.", *e);
	if ((json_object_get(params, "cwd") &&
	     (json_get_string(params, "cwd", &cwd) < 0 || cwd[0] != '/')) ||
	    (json_object_get(params, "memory") &&
	     (json_get_uint64(params, "memory", &memory) < 0 || (memory && memory < (4 << 20)))) ||
	    (cpus && (!json_is_number(cpus) || json_number_value(cpus) <= 0 ||
		      json_number_value(cpus) > 1024)) ||
	    (json_object_get(params, "netns") && json_get_bool(params, "netns", &netns) < 0))
		return control_request_error(req, EINVAL, "invalid-params",
					     "cwd must be an absolute path, memory at least 4 MiB, "
					     "cpus a positive number, netns true or false.");
	if (containers_find(m, name))
		return control_request_error(req, EEXIST, "exists",
					     "A container named '%s' exists on this host already "
					     "(migctl rm it first).",
					     name);
	if (m->n_containers >= MAX_CONTAINERS)
		return control_request_error(req, E2BIG, "busy",
					     "Too many containers on this host.");

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->m = m;
	c->pidfd = -EBADF;
	c->name = strdup(name);
	c->record =
		json_pack("{s:s,s:O,s:O?,s:s,s:O?,s:I,s:b,s:I}", "name", name, "argv",
			  json_object_get(params, "argv"), "env", json_object_get(params, "env"),
			  "cwd", cwd, "cpus", cpus, "memory", (json_int_t)memory, "netns", netns,
			  "created", (json_int_t)now_usec(CLOCK_REALTIME));
	logp = container_log_path(m, name);
	if (!c->name || !c->record || !logp || !(dir = strdup(logp))) {
		container_free(c);
		return -ENOMEM;
	}
	r = container_open_cgroup(m, name, c->record, &c->cg);
	if (r >= 0) {
		/* Processes of a container that a migrd without this state left: never mixed in,
		 * nor their log cut. */
		_cleanup_free_ pid_t *pids = NULL;
		size_t n = 0;

		if (ct_cgroup_get_pids(c->cg, false, &pids, &n) >= 0 && n > 0) {
			r = control_request_error(
				req, EEXIST, "exists",
				"The cgroup of %s already holds %zu process%s (pid %d first), "
				"which this migrd does not know: stop them or remove the cgroup "
				"first.",
				name, n, n == 1 ? "" : "es", (int)pids[0]);
			container_free(c);
			return r;
		}
		r = container_set_limits(c->cg, c->record);
	}
	if (r < 0) {
		r = control_request_error(req, -r, "internal",
					  "Cannot set up the cgroup of %s: %s.", name,
					  c->cg ? ct_cgroup_last_error(c->cg) : strerror(-r));
		if (c->cg)
			(void)ct_cgroup_remove(c->cg, USEC_PER_SEC);
		container_free(c);
		return r;
	}
	*strrchr(dir, '/') = 0;
	r = mkdir_p(dir, 0700);
	if (r >= 0) {
		log_fd = open(logp, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
		if (log_fd < 0)
			r = NEG_ERRNO();
	}
	if (r < 0) {
		(void)ct_cgroup_remove(c->cg, USEC_PER_SEC);
		container_free(c);
		return control_request_error(req, -r, "internal", "Cannot create %s: %s.", logp,
					     strerror(-r));
	}
	spec = (struct ct_spec){.name = name, .argv = argv, .env = env, .cwd = cwd, .netns = netns};
	r = ct_container_spawn(&spec, c->cg, log_fd, &c->pid, &c->pidfd, &error);
	if (r < 0) {
		(void)ct_cgroup_remove(c->cg, USEC_PER_SEC);
		container_free(c);
		(void)unlink(logp);
		return control_request_error(req, -r, "start-failed", "Container %s: %s.", name,
					     error ?: strerror(-r));
	}
	(void)ct_process_start_time(c->pid, &start);
	json_object_set_new(c->record, "state", json_string("running"));
	json_object_set_new(c->record, "pid", json_integer(c->pid));
	json_object_set_new(c->record, "start_time", json_integer((json_int_t)start));
	r = containers_add(m, c);
	if (r >= 0)
		r = container_watch(c);
	if (r < 0) {
		kill(c->pid, SIGKILL);
		(void)ct_cgroup_kill(c->cg, USEC_PER_SEC);
		(void)ct_cgroup_remove(c->cg, USEC_PER_SEC);
		containers_del(m, c);
		return -ENOMEM;
	}
	container_persist(c);
	log_struct_errno(LOG_INFO, 0, LOG_FIELDS("MIGRD_EVENT=container-started"),
			 "Container %s started: pid %d, cgroup %s", name, (int)c->pid,
			 c->cg->v2_path ?: strna(c->cg->freezer_path));
	*ret = json_pack("{s:s,s:i,s:s,s:s}", "name", name, "pid", (int)c->pid, "cgroup",
			 c->cg->v2_path ?: strna(c->cg->freezer_path), "log", logp);
	return *ret ? CONTROL_REPLY_NOW : -ENOMEM;
}

static int on_stop_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct container *c = userdata;

	log_notice("Container %s did not stop on SIGTERM: killing it", c->name);
	if (c->cg && ct_cgroup_kill(c->cg, 5 * USEC_PER_SEC) < 0)
		log_warning("Container %s: %s", c->name, ct_cgroup_last_error(c->cg));
	return 0;
}

int method_stop(struct control_request *req, json_t *params, void *userdata, json_t **ret)
{
	struct manager *m = userdata;
	const char *name = NULL;
	struct container *c;
	uint64_t timeout_s = STOP_TIMEOUT_DEFAULT / USEC_PER_SEC;
	int r;

	if (json_get_string(params, "name", &name) < 0)
		return control_request_error(req, EINVAL, "invalid-params", "stop needs 'name'.");
	if (json_object_get(params, "timeout") &&
	    json_get_uint64(params, "timeout", &timeout_s) < 0)
		return control_request_error(req, EINVAL, "invalid-params",
					     "'timeout' is in whole seconds.");
	c = containers_find(m, name);
	if (!c)
		return control_request_error(req, ENOENT, "not-found",
					     "No container named '%s' on this host.", name);
	if (c->busy)
		return control_request_error(req, EBUSY, "busy",
					     "Container %s is being checkpointed or restored.",
					     name);
	if (!container_is_running(c)) {
		*ret = json_pack("{s:s,s:s}", "name", name, "state", container_state(c));
		return CONTROL_REPLY_NOW;
	}
	if (c->stop_waiter)
		return control_request_error(req, EBUSY, "busy",
					     "Container %s is stopping already.", name);
	c->stop_requested = true;
	(void)kill(c->pid, SIGTERM);
	r = sd_event_add_time_relative(m->event, &c->stop_timer, CLOCK_MONOTONIC,
				       timeout_s * USEC_PER_SEC, 0, on_stop_timeout, c);
	if (r < 0)
		return r;
	c->stop_waiter = req;
	return CONTROL_REPLY_LATER;
}

int method_rm(struct control_request *req, json_t *params, void *userdata, json_t **ret)
{
	struct manager *m = userdata;
	_cleanup_free_ char *logp = NULL;
	const char *name = NULL;
	struct container *c;
	bool force = false;
	int r;

	if (json_get_string(params, "name", &name) < 0)
		return control_request_error(req, EINVAL, "invalid-params", "rm needs 'name'.");
	(void)json_get_bool(params, "force", &force);
	c = containers_find(m, name);
	if (!c)
		return control_request_error(req, ENOENT, "not-found",
					     "No container named '%s' on this host.", name);
	if (c->busy)
		return control_request_error(req, EBUSY, "busy",
					     "Container %s is being checkpointed or restored.",
					     name);
	if (container_is_running(c) && !force)
		return control_request_error(
			req, EBUSY, "running",
			"Container %s is running: stop it first (or rm --force).", name);
	if (container_is_running(c)) {
		(void)kill(c->pid, SIGKILL);
		if (c->cg)
			(void)ct_cgroup_kill(c->cg, 5 * USEC_PER_SEC);
	}
	if (!c->cg)
		(void)container_open_cgroup(m, name, c->record, &c->cg);
	if (c->cg && (r = ct_cgroup_remove(c->cg, 2 * USEC_PER_SEC)) < 0)
		log_warning("Container %s: %s", name, ct_cgroup_last_error(c->cg));
	logp = container_log_path(m, name);
	if (logp)
		(void)unlink(logp);
	r = state_db_container_delete(m->db, name);
	if (r < 0)
		return control_request_error(req, -r, "internal", "Cannot forget %s: %s.", name,
					     strerror(-r));
	if (c->stop_waiter)
		control_request_fail(c->stop_waiter, "not-found", "The container was removed.");
	c->stop_waiter = NULL;
	log_info("Container %s removed", name);
	containers_del(m, c);
	*ret = json_pack("{s:s}", "name", name);
	return *ret ? CONTROL_REPLY_NOW : -ENOMEM;
}

/* Bytes that are not valid UTF-8 become '?': JSON strings must be UTF-8. */
static void make_utf8(char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		unsigned char ch = (unsigned char)s[i];
		size_t len = ch < 0x80	       ? 1
			     : (ch >> 5) == 6  ? 2
			     : (ch >> 4) == 14 ? 3
			     : (ch >> 3) == 30 ? 4
					       : 0;
		bool ok = len > 0 && i + len <= n;

		for (size_t k = 1; ok && k < len; k++)
			ok = ((unsigned char)s[i + k] >> 6) == 2;
		if (!ok || (ch < 0x20 && ch != '\n' && ch != '\t' && ch != '\r') || ch == 0) {
			s[i++] = '?';
			continue;
		}
		i += len;
	}
}

int method_logs(struct control_request *req, json_t *params, void *userdata, json_t **ret)
{
	struct manager *m = userdata;
	_cleanup_free_ char *logp = NULL, *buf = NULL;
	_cleanup_close_ int fd = -EBADF;
	const char *name = NULL;
	uint64_t offset = 0, max = 256 * 1024;
	struct container *c;
	struct stat st;
	ssize_t k;

	if (json_get_string(params, "name", &name) < 0)
		return control_request_error(req, EINVAL, "invalid-params", "logs needs 'name'.");
	(void)json_get_uint64(params, "offset", &offset);
	(void)json_get_uint64(params, "max", &max);
	max = CLAMP(max, 1, (uint64_t)LOG_CHUNK_MAX);
	c = containers_find(m, name);
	if (!c)
		return control_request_error(req, ENOENT, "not-found",
					     "No container named '%s' on this host.", name);
	logp = container_log_path(m, name);
	if (!logp)
		return -ENOMEM;
	fd = open(logp, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 || fstat(fd, &st) < 0)
		return control_request_error(req, errno, "internal", "Cannot read %s: %m.", logp);
	if (offset > (uint64_t)st.st_size)
		offset = (uint64_t)st.st_size;
	buf = malloc(max + 1);
	if (!buf)
		return -ENOMEM;
	k = pread(fd, buf, max, (off_t)offset);
	if (k < 0)
		return control_request_error(req, errno, "internal", "Cannot read %s: %m.", logp);
	/* Do not cut a UTF-8 sequence: stop before a trailing partial one. */
	while (k > 0 && (size_t)k == max && ((unsigned char)buf[k - 1] & 0xC0) == 0x80)
		k--;
	make_utf8(buf, (size_t)k);
	*ret = json_pack("{s:s,s:s%,s:I,s:I,s:b}", "name", name, "data", buf, (size_t)k, "offset",
			 (json_int_t)(offset + (uint64_t)k), "size", (json_int_t)st.st_size,
			 "running", container_is_running(c));
	return *ret ? CONTROL_REPLY_NOW : -ENOMEM;
}
