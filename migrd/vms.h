/* VMs under this host's care: adopted libvirt domains (see vms.c). */
#pragma once

#include <jansson.h>

#include "migrd/control.h"

struct manager;

int vms_load(struct manager *m);
void vms_free(struct manager *m);
/* The `list` entries of this host's VMs. */
int vms_list(struct manager *m, json_t *array);

int method_vm_adopt(struct control_request *req, json_t *params, void *userdata, json_t **ret);
int method_vm_release(struct control_request *req, json_t *params, void *userdata, json_t **ret);
/* vm-move {name, host, ...} and vm-move-status {name}: see docs/control-api.md. */
int method_vm_move(struct control_request *req, json_t *params, void *userdata, json_t **ret);
int method_vm_move_status(struct control_request *req, json_t *params, void *userdata,
			  json_t **ret);
/* The destination's side of a move: a session with purpose "vm-migrate" (in a job thread).
 * The result may carry "take": the record of a VM that now runs here. */
struct transport_session;
int vms_incoming_run(struct manager *m, struct transport_session *s, json_t **ret_result,
		     const char **ret_code, char **ret_message);
void vms_incoming_done(struct manager *m, json_t *result);
/* A peer's "vm-check" session: could this host run the domain? */
int vms_check_run(struct manager *m, struct transport_session *s);
