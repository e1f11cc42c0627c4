/* Thread jobs whose completions are collected through an eventfd on the event loop. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/common.h"
#include "migrd/jobs.h"

struct job {
	struct job_queue *q;
	struct job *next;
	pthread_t thread;
	job_fn_t fn;
	void *arg;
	void (*free_arg)(void *);
	job_done_t done;
	void *userdata;
	int r;
	json_t *result;
	const char *code;
	char *message;
	bool finished;
};

struct job_queue {
	sd_event_source *source;
	int efd;
	unsigned max_jobs, running;
	pthread_mutex_t lock;
	struct job *jobs;
};

static void *job_thread(void *p)
{
	struct job *j = p;
	uint64_t one = 1;

	j->r = j->fn(j->arg, &j->result, &j->code, &j->message);
	pthread_mutex_lock(&j->q->lock);
	j->finished = true;
	pthread_mutex_unlock(&j->q->lock);
	(void)!write(j->q->efd, &one, sizeof(one));
	return NULL;
}

static void job_finish(struct job *j)
{
	pthread_join(j->thread, NULL);
	if (j->done)
		j->done(j->userdata, j->r, j->result, j->code, j->message);
	json_decref(j->result);
	free(j->message);
	if (j->free_arg)
		j->free_arg(j->arg);
	free(j);
}

/* Collects finished jobs: unlinks them under the lock, completes them outside it. */
static void collect(struct job_queue *q, bool all)
{
	for (;;) {
		struct job *done = NULL;

		pthread_mutex_lock(&q->lock);
		for (struct job **p = &q->jobs; *p; p = &(*p)->next)
			if ((*p)->finished || all) {
				done = *p;
				*p = done->next;
				q->running--;
				break;
			}
		pthread_mutex_unlock(&q->lock);
		if (!done)
			return;
		job_finish(done);
	}
}

static int on_event(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	uint64_t v;

	(void)!read(fd, &v, sizeof(v));
	collect(userdata, false);
	return 0;
}

int job_queue_new(sd_event *e, unsigned max_jobs, struct job_queue **ret)
{
	struct job_queue *q = calloc(1, sizeof(*q));
	int r;

	if (!q)
		return -ENOMEM;
	q->max_jobs = max_jobs;
	pthread_mutex_init(&q->lock, NULL);
	q->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (q->efd < 0) {
		r = NEG_ERRNO();
		free(q);
		return r;
	}
	r = sd_event_add_io(e, &q->source, q->efd, EPOLLIN, on_event, q);
	if (r < 0) {
		safe_close(q->efd);
		free(q);
		return r;
	}
	*ret = q;
	return 0;
}

struct job_queue *job_queue_free(struct job_queue *q)
{
	if (!q)
		return NULL;
	collect(q, true); /* joins each thread */
	sd_event_source_disable_unref(q->source);
	safe_close(q->efd);
	pthread_mutex_destroy(&q->lock);
	free(q);
	return NULL;
}

int job_start(struct job_queue *q, job_fn_t fn, void *arg, void (*free_arg)(void *),
	      job_done_t done, void *userdata)
{
	struct job *j;
	int r;

	pthread_mutex_lock(&q->lock);
	if (q->running >= q->max_jobs) {
		pthread_mutex_unlock(&q->lock);
		return -EBUSY;
	}
	q->running++;
	pthread_mutex_unlock(&q->lock);
	j = calloc(1, sizeof(*j));
	if (!j) {
		r = -ENOMEM;
		goto fail;
	}
	*j = (struct job){.q = q,
			  .fn = fn,
			  .arg = arg,
			  .free_arg = free_arg,
			  .done = done,
			  .userdata = userdata};
	pthread_mutex_lock(&q->lock);
	r = -pthread_create(&j->thread, NULL, job_thread, j);
	if (r == 0) {
		j->next = q->jobs;
		q->jobs = j;
	}
	pthread_mutex_unlock(&q->lock);
	if (r == 0)
		return 0;
	free(j);
fail:
	pthread_mutex_lock(&q->lock);
	q->running--;
	pthread_mutex_unlock(&q->lock);
	return r;
}

unsigned job_queue_running(struct job_queue *q)
{
	unsigned n;

	pthread_mutex_lock(&q->lock);
	n = q->running;
	pthread_mutex_unlock(&q->lock);
	return n;
}
