/* What the container methods share: the container object and its helpers (containers.c),
 * used by the checkpoint and restore methods (containers-checkpoint.c). */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "checkpoint/ct/cgroup-internal.h"
#include "migrd/containers.h"

struct manager;
struct control_request;

struct container {
	struct manager *m;
	char *name;
	json_t *record; /* what the state store keeps */
	pid_t pid;
	int pidfd;
	sd_event_source *exit_source;
	sd_event_source *stop_timer;
	struct ct_cgroup *cg;
	struct control_request *stop_waiter;
	bool stop_requested;
	bool busy;	      /* a checkpoint or restore job owns it */
	bool checkpoint_kill; /* its end is a checkpoint's, not a crash */
};

const char *container_state(struct container *c);
bool container_is_running(struct container *c);
void container_persist(struct container *c);
char *container_cgroup_name(struct manager *m, const char *name);
char *container_log_path(struct manager *m, const char *name);
struct container *containers_find(struct manager *m, const char *name);
int container_open_cgroup(struct manager *m, const char *name, json_t *record,
			  struct ct_cgroup **ret);
/* The record's memory and cpus limits on cg (none: nothing to do). */
int container_set_limits(struct ct_cgroup *cg, json_t *record);
int container_watch(struct container *c);
int containers_add(struct manager *m, struct container *c);
void containers_del(struct manager *m, struct container *c);
void container_free(struct container *c);
/* At migrd's start, for a container whose record says a checkpoint was under way when the last
 * migrd ended: undoes what that checkpoint left (containers-checkpoint.c). */
void container_recover_checkpoint(struct container *c);
