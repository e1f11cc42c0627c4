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
