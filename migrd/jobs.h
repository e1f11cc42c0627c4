/* Blocking work (a transfer, a migration step) in threads of its own, with the result handed
 * back on the event loop. The loop never blocks; the number of jobs is capped. */
#pragma once

#include <jansson.h>
#include <systemd/sd-event.h>

struct job_queue;

/* Runs in the job's thread. Returns 0 with *ret_result, or -errno with *ret_code (a control
 * API error code) and *ret_message (malloc'd). */
typedef int (*job_fn_t)(void *arg, json_t **ret_result, const char **ret_code, char **ret_message);
/* Runs on the loop when the job ended; owns result/message only for the call. */
typedef void (*job_done_t)(void *userdata, int r, json_t *result, const char *code,
			   const char *message);

int job_queue_new(sd_event *e, unsigned max_jobs, struct job_queue **ret);
/* Waits for every running job (they are bounded in time) and frees the queue. */
struct job_queue *job_queue_free(struct job_queue *q);
/* Starts fn(arg) in a thread; free_arg(arg) runs after done(). -EBUSY past the cap. */
int job_start(struct job_queue *q, job_fn_t fn, void *arg, void (*free_arg)(void *),
	      job_done_t done, void *userdata);
unsigned job_queue_running(struct job_queue *q);
