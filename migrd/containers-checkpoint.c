/* The checkpoint and restore methods: the engine runs in a job thread (ptrace wants one thread
 * for a whole dump or restore), the container's record follows on the event loop. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint/ct/container-internal.h"
#include "checkpoint/ct/engine-internal.h"
#include "checkpoint/ct/image-internal.h"
#include "checkpoint/workload.h"
#include "common/common.h"
#include "migrd/containers-internal.h"
#include "migrd/manager-internal.h"

#define ENGINE_TIMEOUT (10 * USEC_PER_SEC)
/* On the event loop: an ended container's cgroup is empty, its removal immediate. */
#define STALE_CGROUP_TIMEOUT (100 * USEC_PER_MSEC)

struct ct_job {
	struct manager *m;
	struct container *c;
	struct control_request *req;
	char *name, *dir;
	bool restore;
	/* checkpoint */
	struct ct_dump_opts dump;
	struct ct_dump_stats dump_stats;
	/* restore */
	struct ct_cgroup *cg;
	pid_t pid;
	int pidfd;
	struct ct_restore_stats restore_stats;
};

static void ct_job_free(void *arg)
{
	struct ct_job *j = arg;

	if (!j)
		return;
	safe_close(j->pidfd);
	ct_cgroup_free(j->cg);
	free(j->name);
	free(j->dir);
	free(j);
}

static double ms(usec_t u)
{
	return (double)u / 1000.0;
}

static int dump_run(void *arg, json_t **ret_result, const char **ret_code, char **ret_message)
{
	struct ct_job *j = arg;
	char err[CT_ENGINE_ERROR_MAX];
	struct ct_dump_stats *s = &j->dump_stats;
	int r = ct_dump(&j->dump, s, err);

	if (r < 0) {
		*ret_code = r == -EOPNOTSUPP ? "unsupported" : "checkpoint-failed";
		*ret_message = strdup(err[0] ? err : strerror(-r));
		return r;
	}
	*ret_result = json_pack(
		"{s:s,s:s,s:b,s:i,s:i,s:i,s:i,s:I,s:I,s:I,s:f,s:f,s:f,s:f,s:f,s:f}", "name",
		j->name, "dir", j->dir, "left_running", j->dump.leave_running, "processes",
		s->n_procs, "threads", s->n_threads, "fds", s->n_fds, "vmas", s->n_vmas, "pages",
		(json_int_t)s->pages, "direct_pages", (json_int_t)s->direct_pages, "image_bytes",
		(json_int_t)s->image_bytes, "reserve_ms", ms(s->reserve_usec), "freeze_ms",
		ms(s->freeze_usec), "frozen_ms", ms(s->frozen_usec), "memory_ms",
		ms(s->memory_usec), "state_ms", ms(s->state_usec + s->seize_usec), "release_ms",
		ms(s->release_usec));
	return *ret_result ? 0 : -ENOMEM;
}

static void dump_done(void *userdata, int r, json_t *result, const char *code, const char *message)
{
	struct ct_job *j = userdata;
	struct container *c = j->c;

	c->busy = false;
	json_object_del(c->record, "checkpoint_started");
	if (r < 0) {
		/* The engine thawed it: it runs on, unless it died meanwhile. */
		c->checkpoint_kill = false;
		container_persist(c);
		log_struct_errno(LOG_WARNING, r, LOG_FIELDS("MIGRD_EVENT=checkpoint-failed"),
				 "Checkpoint of %s failed: %s", c->name, message);
		control_request_fail(j->req, code, message);
		return;
	}
	json_object_set_new(c->record, "image", json_string(j->dir));
	container_persist(c);
	log_struct_errno(LOG_INFO, 0, LOG_FIELDS("MIGRD_EVENT=checkpointed"),
			 "Container %s checkpointed to %s%s", c->name, j->dir,
			 j->dump.leave_running ? " (left running)" : "");
	control_request_reply(j->req, json_incref(result));
}

/* Where an image may go: an absolute path; missing parents are made (0700). */
static int check_image_dir(struct control_request *req, const char *dir, bool must_exist)
{
	const char *reason;
	struct stat st;
	_cleanup_free_ char *parent = strdup(dir ?: "");

	if (!dir || ct_image_path_check(dir, &reason) < 0)
		return control_request_error(req, EINVAL, "invalid-params",
					     "The image directory must be an absolute path "
					     "without '..'.");
	if (!parent)
		return -ENOMEM;
	if (must_exist) {
		if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
			return control_request_error(req, ENOENT, "not-found",
						     "No image directory %s.", dir);
		return 0;
	}
	*strrchr(parent, '/') = 0;
	if (parent[0] && mkdir_p(parent, 0700) < 0)
		return control_request_error(req, ENOENT, "not-found",
					     "Cannot create the parent directory of %s.", dir);
	return 0;
}

int method_checkpoint(struct control_request *req, json_t *params, void *userdata, json_t **ret)
{
	struct manager *m = userdata;
	const char *name = NULL, *dir = NULL;
	bool leave = false;
	int64_t level = 0;
	struct container *c;
	struct ct_job *j;
	int r;

	if (json_get_string(params, "name", &name) < 0 ||
	    json_get_string(params, "dir", &dir) < 0 ||
	    (json_object_get(params, "leave_running") &&
	     json_get_bool(params, "leave_running", &leave) < 0) ||
	    (json_object_get(params, "compress") &&
	     (!json_is_integer(json_object_get(params, "compress")) ||
	      (level = json_integer_value(json_object_get(params, "compress"))) < 0 || level > 19)))
		return control_request_error(req, EINVAL, "invalid-params",
					     "checkpoint needs 'name' and 'dir'; 'leave_running' "
					     "is true or false, 'compress' a zstd level 0-19.");
	r = check_image_dir(req, dir, false);
	if (r != 0)
		return r;
	c = containers_find(m, name);
	if (!c)
		return control_request_error(req, ENOENT, "not-found",
					     "No container named '%s' on this host.", name);
	if (c->busy)
		return control_request_error(req, EBUSY, "busy",
					     "Container %s is being checkpointed or restored.",
					     name);
	if (!container_is_running(c) || !c->cg)
		return control_request_error(req, EINVAL, "not-running",
					     "Container %s is %s: only a running container can be "
					     "checkpointed.",
					     name, container_state(c));
	j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	*j = (struct ct_job){.m = m,
			     .c = c,
			     .req = req,
			     .pidfd = -EBADF,
			     .name = strdup(name),
			     .dir = strdup(dir)};
	if (!j->name || !j->dir) {
		ct_job_free(j);
		return -ENOMEM;
	}
	j->dump = (struct ct_dump_opts){.name = j->name,
					.cg = c->cg,
					.root_pid = c->pid,
					.dir = j->dir,
					.compress_level = (int)level,
					.leave_running = leave,
					.timeout = ENGINE_TIMEOUT};
	c->busy = true;
	c->checkpoint_kill = !leave;
	/* Should migrd end in the middle of it, the next one knows to mend the container. */
	json_object_set_new(c->record, "checkpoint_started",
			    json_integer((json_int_t)now_usec(CLOCK_REALTIME)));
	container_persist(c);
	r = job_start(m->jobs, dump_run, j, ct_job_free, dump_done, j);
	if (r < 0) {
		c->busy = false;
		c->checkpoint_kill = false;
		json_object_del(c->record, "checkpoint_started");
		container_persist(c);
		ct_job_free(j);
		return control_request_error(req, -r, "busy", "Too many jobs running.");
	}
	return CONTROL_REPLY_LATER;
}

void container_recover_checkpoint(struct container *c)
{
	char err[CT_ENGINE_ERROR_MAX];
	unsigned repaired = 0;
	int r = 0;

	if (!json_object_get(c->record, "checkpoint_started"))
		return;
	if (container_is_running(c) && c->cg) {
		r = ct_dump_recover(c->cg, ENGINE_TIMEOUT, &repaired, err);
		if (r < 0)
			log_struct_errno(LOG_ERR, r,
					 LOG_FIELDS("MIGRD_EVENT=checkpoint-recovery-failed"),
					 "Container %s: a checkpoint was under way when migrd last "
					 "ended, and what it left could not be undone: %s",
					 c->name, err);
		else
			log_struct_errno(
				LOG_WARNING, 0, LOG_FIELDS("MIGRD_EVENT=checkpoint-recovered"),
				"Container %s: a checkpoint was under way when migrd last "
				"ended; it runs on (cgroup thawed, %u TCP connection%s out of "
				"repair mode)",
				c->name, repaired, repaired == 1 ? "" : "s");
	}
	json_object_del(c->record, "checkpoint_started");
	container_persist(c);
}

static int restore_run(void *arg, json_t **ret_result, const char **ret_code, char **ret_message)
{
	struct ct_job *j = arg;
	char err[CT_ENGINE_ERROR_MAX];
	struct ct_restore_opts o = {
		.name = j->name, .dir = j->dir, .cg = j->cg, .timeout = ENGINE_TIMEOUT};
	struct ct_restore_stats *s = &j->restore_stats;
	int r = ct_restore(&o, &j->pid, &j->pidfd, s, err);

	if (r < 0) {
		/* The engine killed what it had restored: the fresh cgroup goes too. */
		(void)ct_cgroup_remove(j->cg, ENGINE_TIMEOUT);
		*ret_code = "restore-failed";
		*ret_message = strdup(err[0] ? err : strerror(-r));
		return r;
	}
	*ret_result = json_pack("{s:s,s:s,s:i,s:i,s:i,s:I,s:I,s:b,s:f,s:f,s:f,s:f,s:f}", "name",
				j->name, "from", j->dir, "pid", (int)j->pid, "processes",
				s->n_procs, "threads", s->n_threads, "pages", (json_int_t)s->pages,
				"mapped_pages", (json_int_t)s->mapped_pages, "own_clocks",
				(int)s->timens, "verify_ms", ms(s->verify_usec), "tree_ms",
				ms(s->tree_usec), "memory_ms", ms(s->memory_usec), "state_ms",
				ms(s->state_usec), "total_ms", ms(s->total_usec));
	return *ret_result ? 0 : -ENOMEM;
}

static void restore_done(void *userdata, int r, json_t *result, const char *code,
			 const char *message)
{
	struct ct_job *j = userdata;
	struct container *c = j->c;
	uint64_t start = 0;

	c->busy = false;
	if (r < 0) {
		log_struct_errno(LOG_WARNING, r, LOG_FIELDS("MIGRD_EVENT=restore-failed"),
				 "Restore of %s failed: %s", c->name, message);
		control_request_fail(j->req, code, message);
		if (streq(container_state(c), "restoring"))
			containers_del(j->m, c); /* a name that did not exist before */
		return;
	}
	ct_cgroup_free(c->cg);
	c->cg = TAKE_PTR(j->cg);
	c->pid = j->pid;
	c->pidfd = TAKE_FD(j->pidfd);
	c->stop_requested = false;
	c->checkpoint_kill = false;
	(void)ct_process_start_time(c->pid, &start);
	json_object_set_new(c->record, "state", json_string("running"));
	json_object_set_new(c->record, "pid", json_integer(c->pid));
	json_object_set_new(c->record, "start_time", json_integer((json_int_t)start));
	json_object_set_new(c->record, "restored_from", json_string(j->dir));
	json_object_del(c->record, "status");
	if (container_watch(c) < 0)
		log_error("Container %s: cannot watch its PID 1", c->name);
	container_persist(c);
	log_struct_errno(LOG_INFO, 0, LOG_FIELDS("MIGRD_EVENT=restored"),
			 "Container %s restored from %s: pid %d", c->name, j->dir, (int)c->pid);
	control_request_reply(j->req, json_incref(result));
}

/* An ended container's cgroup had a cgroup.kill (a checkpoint's, or the one after PID 1 went),
 * and the kernel kills a child born in such a cgroup: the restore would fall back to the
 * cgroup.procs write (~10 ms). It goes, the restore makes a fresh one. */
static void drop_stale_cgroup(struct manager *m, struct container *c)
{
	if (!c->cg)
		(void)container_open_cgroup(m, c->name, c->record, &c->cg);
	if (c->cg && ct_cgroup_remove(c->cg, STALE_CGROUP_TIMEOUT) < 0)
		log_warning("Container %s: %s; restoring into it", c->name,
			    ct_cgroup_last_error(c->cg));
	c->cg = ct_cgroup_free(c->cg);
}

int method_restore(struct control_request *req, json_t *params, void *userdata, json_t **ret)
{
	struct manager *m = userdata;
	const char *name = NULL, *from = NULL;
	struct container *c;
	struct ct_job *j;
	bool created = false;
	int r;

	if (json_get_string(params, "name", &name) < 0 || !workload_name_is_valid(name) ||
	    json_get_string(params, "from", &from) < 0)
		return control_request_error(req, EINVAL, "invalid-params",
					     "restore needs a container 'name' and the image "
					     "directory 'from'.");
	r = check_image_dir(req, from, true);
	if (r != 0)
		return r;
	c = containers_find(m, name);
	if (c && (c->busy || container_is_running(c)))
		return control_request_error(req, EEXIST, "exists",
					     "Container %s is %s on this host.", name,
					     c->busy ? "busy" : "running");
	if (!c) {
		c = calloc(1, sizeof(*c));
		if (!c)
			return -ENOMEM;
		c->m = m;
		c->pidfd = -EBADF;
		c->name = strdup(name);
		c->record = json_pack("{s:s,s:[],s:s,s:I,s:b,s:I,s:s}", "name", name, "argv", "cwd",
				      "/", "memory", (json_int_t)0, "netns", false, "created",
				      (json_int_t)now_usec(CLOCK_REALTIME), "state", "restoring");
		if (!c->name || !c->record || containers_add(m, c) < 0) {
			container_free(c);
			return -ENOMEM;
		}
		created = true;
	}
	j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	*j = (struct ct_job){.m = m,
			     .c = c,
			     .req = req,
			     .pidfd = -EBADF,
			     .restore = true,
			     .name = strdup(name),
			     .dir = strdup(from)};
	if (!created)
		drop_stale_cgroup(m, c);
	r = j->name && j->dir ? container_open_cgroup(m, name, c->record, &j->cg) : -ENOMEM;
	if (r >= 0)
		r = container_set_limits(j->cg, c->record);
	if (r < 0) {
		r = control_request_error(req, -r, "internal",
					  "Cannot set up the cgroup of %s: %s.", name,
					  j->cg ? ct_cgroup_last_error(j->cg) : strerror(-r));
		if (j->cg)
			(void)ct_cgroup_remove(j->cg, STALE_CGROUP_TIMEOUT);
		ct_job_free(j);
		if (created)
			containers_del(m, c);
		return r;
	}
	c->busy = true;
	r = job_start(m->jobs, restore_run, j, ct_job_free, restore_done, j);
	if (r < 0) {
		c->busy = false;
		(void)ct_cgroup_remove(j->cg, STALE_CGROUP_TIMEOUT);
		ct_job_free(j);
		if (created)
			containers_del(m, c);
		return control_request_error(req, -r, "busy", "Too many jobs running.");
	}
	return CONTROL_REPLY_LATER;
}
