/* This host's containers: started, watched, stopped and removed by migrd, kept in the state
 * store so a restarted migrd finds them again. */
#pragma once

#include <jansson.h>

#include "migrd/control.h"

struct manager;

int containers_load(struct manager *m);
void containers_free(struct manager *m);
/* The `list` entries of this host's containers. */
int containers_list(struct manager *m, json_t *array);

int method_run(struct control_request *req, json_t *params, void *userdata, json_t **ret);
int method_stop(struct control_request *req, json_t *params, void *userdata, json_t **ret);
int method_rm(struct control_request *req, json_t *params, void *userdata, json_t **ret);
int method_logs(struct control_request *req, json_t *params, void *userdata, json_t **ret);
int method_checkpoint(struct control_request *req, json_t *params, void *userdata, json_t **ret);
int method_restore(struct control_request *req, json_t *params, void *userdata, json_t **ret);
