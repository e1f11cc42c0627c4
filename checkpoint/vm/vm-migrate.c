/* Live migration through libvirt's peer-to-peer API: the migration call runs in a thread of its
 * own while the caller's thread polls the job, reports progress and steers convergence (downtime
 * limit, raised in steps; post-copy when allowed; a clean abort when nothing helps). */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint/vm/libvirt-internal.h"
#include "checkpoint/vm/vm-internal.h"
#include "common/common.h"

#define POLL_INTERVAL_US (250 * 1000)
#define STEP_MIN_S	 2

struct call {
	const struct vm_migrate_params *p;
	virConnectPtr conn;
	virDomainPtr dom;
	unsigned flags;
	virTypedParameterPtr params;
	int n_params;

	pthread_mutex_t lock;
	pthread_cond_t cond; /* done */
	bool done;
	int r;
	char *error;
};

static void *migrate_thread(void *arg)
{
	struct call *c = arg;
	int r = virDomainMigrateToURI3(c->dom, c->p->dest_uri, c->params, c->n_params, c->flags);
	char *error = NULL;

	if (r < 0)
		error = vm_last_error("libvirt");
	pthread_mutex_lock(&c->lock);
	c->done = true;
	pthread_cond_signal(&c->cond);
	c->r = r;
	c->error = error;
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

static uint64_t stat_u64(virTypedParameterPtr params, int n, const char *field)
{
	unsigned long long v = 0;

	if (virTypedParamsGetULLong(params, n, field, &v) != 1)
		return 0;
	return v;
}

static void fill_progress(virTypedParameterPtr params, int n, struct vm_progress *pr)
{
	uint64_t page = stat_u64(params, n, VIR_DOMAIN_JOB_MEMORY_PAGE_SIZE);
	int throttle = 0;

	pr->iteration = stat_u64(params, n, VIR_DOMAIN_JOB_MEMORY_ITERATION);
	pr->processed = stat_u64(params, n, VIR_DOMAIN_JOB_DATA_PROCESSED);
	pr->total = stat_u64(params, n, VIR_DOMAIN_JOB_DATA_TOTAL);
	pr->remaining = stat_u64(params, n, VIR_DOMAIN_JOB_DATA_REMAINING);
	pr->bps = stat_u64(params, n, VIR_DOMAIN_JOB_MEMORY_BPS);
	pr->dirty_rate = stat_u64(params, n, VIR_DOMAIN_JOB_MEMORY_DIRTY_RATE) * (page ?: 4096);
	pr->expected_downtime_ms = stat_u64(params, n, VIR_DOMAIN_JOB_DOWNTIME);
	pr->elapsed_ms = stat_u64(params, n, VIR_DOMAIN_JOB_TIME_ELAPSED);
	if (virTypedParamsGetInt(params, n, VIR_DOMAIN_JOB_AUTO_CONVERGE_THROTTLE, &throttle) == 1)
		pr->throttle = (unsigned)throttle;
}

static int add_params(const struct vm_migrate_params *p, virTypedParameterPtr *params, int *n,
		      unsigned *flags)
{
	int max = 0;

	*flags = VIR_MIGRATE_LIVE | VIR_MIGRATE_PEER2PEER;
	if (p->auto_converge)
		*flags |= VIR_MIGRATE_AUTO_CONVERGE;
	if (p->postcopy)
		*flags |= VIR_MIGRATE_POSTCOPY;
	if (p->migrate_uri &&
	    virTypedParamsAddString(params, n, &max, VIR_MIGRATE_PARAM_URI, p->migrate_uri) < 0)
		return -ENOMEM;
	if (p->bandwidth_mib &&
	    virTypedParamsAddULLong(params, n, &max, VIR_MIGRATE_PARAM_BANDWIDTH,
				    p->bandwidth_mib) < 0)
		return -ENOMEM;
	if (p->parallel) {
		*flags |= VIR_MIGRATE_PARALLEL;
		if (virTypedParamsAddInt(params, n, &max, VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS,
					 (int)p->parallel) < 0)
			return -ENOMEM;
	}
	return 0;
}

/* The limit QEMU gets for pr->downtime_limit_ms: scaled by the stream's wire ratio. */
static uint64_t qemu_limit(const struct vm_migrate_params *p, const struct vm_progress *pr)
{
	double ratio = p->wire_ratio ? p->wire_ratio(p->userdata) : 1.0;

	if (!(ratio > 0.0) || ratio > 1.0)
		ratio = 1.0;
	return MAX((uint64_t)((double)pr->downtime_limit_ms * ratio + 0.5), (uint64_t)1);
}

/* Gives QEMU its limit when it has none yet, when the operator's limit moved, or when the
 * ratio has moved it by more than a tenth. */
static void apply_limit(const struct vm_migrate_params *p, virDomainPtr dom, struct vm_progress *pr,
			bool force)
{
	uint64_t want = qemu_limit(p, pr), cur = pr->qemu_downtime_limit_ms;

	if (!force && cur && want * 10 >= cur * 9 && want * 10 <= cur * 11)
		return;
	if (virDomainMigrateSetMaxDowntime(dom, want, 0) < 0) {
		log_debug("downtime limit not set (yet): %s", virGetLastErrorMessage());
		return;
	}
	if (cur != want)
		log_debug("VM %s: downtime limit %" PRIu64 " ms, QEMU's %" PRIu64 " ms", p->name,
			  pr->downtime_limit_ms, want);
	pr->qemu_downtime_limit_ms = want;
}

int vm_migrate(const struct vm_migrate_params *p, struct vm_migrate_result *ret, char **ret_error)
{
	struct call c = {.p = p};
	struct vm_progress pr = {.phase = "starting", .downtime_limit_ms = p->downtime_ms};
	pthread_t thread;
	usec_t start = now_usec(CLOCK_MONOTONIC), next_step = 0;
	bool switched = false;
	const char *abort_reason = NULL;
	char *why = NULL;
	int r;

	*ret_error = NULL;
	*ret = (struct vm_migrate_result){};
	pthread_mutex_init(&c.lock, NULL);
	pthread_cond_init(&c.cond, NULL);
	c.conn = vm_connect(p->uri, ret_error);
	if (!c.conn)
		return -ECONNREFUSED;
	c.dom = virDomainLookupByName(c.conn, p->name);
	if (!c.dom) {
		char what[256];

		snprintf(what, sizeof(what), "source: no domain '%s'", p->name);
		*ret_error = vm_last_error(what);
		r = -ENOENT;
		goto out;
	}
	r = add_params(p, &c.params, &c.n_params, &c.flags);
	if (r < 0)
		goto out;
	if (virDomainIsPersistent(c.dom) == 1)
		c.flags |= VIR_MIGRATE_PERSIST_DEST;
	r = -pthread_create(&thread, NULL, migrate_thread, &c);
	if (r < 0)
		goto out;

	for (;;) {
		virTypedParameterPtr stats = NULL;
		int type = VIR_DOMAIN_JOB_NONE, n = 0;
		struct timespec deadline;
		bool done;
		usec_t now;

		/* Poll the job a few times a second; wake at once when the call returns. */
		clock_gettime(CLOCK_REALTIME, &deadline);
		deadline.tv_nsec += POLL_INTERVAL_US * 1000L;
		if (deadline.tv_nsec >= 1000000000L) {
			deadline.tv_sec++;
			deadline.tv_nsec -= 1000000000L;
		}
		pthread_mutex_lock(&c.lock);
		while (!c.done && pthread_cond_timedwait(&c.cond, &c.lock, &deadline) == 0)
			;
		done = c.done;
		pthread_mutex_unlock(&c.lock);
		if (done)
			break;
		now = now_usec(CLOCK_MONOTONIC);
		if (virDomainGetJobStats(c.dom, &type, &stats, &n, 0) == 0 &&
		    type != VIR_DOMAIN_JOB_NONE) {
			fill_progress(stats, n, &pr);
			if (!switched)
				pr.phase = pr.remaining || pr.iteration == 0 ? "precopy"
									     : "completing";
			virTypedParamsFree(stats, n);
			/* The limit applies once the job exists; set it first thing. */
			if (p->downtime_ms && !switched)
				apply_limit(p, c.dom, &pr, false);
		}
		if (p->progress)
			p->progress(p->userdata, &pr);
		if (!abort_reason && p->should_abort &&
		    (abort_reason = p->should_abort(p->userdata))) {
			if (virDomainAbortJob(c.dom) < 0)
				log_debug("abort: %s", virGetLastErrorMessage());
			continue;
		}
		if (abort_reason || switched || !p->converge_s ||
		    now - start < p->converge_s * USEC_PER_SEC || now < next_step)
			continue;
		/* Pre-copy has had its time. */
		if (p->postcopy) {
			if (virDomainMigrateStartPostCopy(c.dom, 0) == 0) {
				switched = true;
				pr.phase = "postcopy";
				log_info("VM %s: pre-copy did not converge in %" PRIu64
					 " s, switched to post-copy",
					 p->name, p->converge_s);
				continue;
			}
			log_warning("VM %s: cannot switch to post-copy: %s", p->name,
				    virGetLastErrorMessage());
		}
		if (pr.downtime_limit_ms < p->downtime_max_ms) {
			uint64_t limit = MIN(MAX(pr.downtime_limit_ms * 2, 1), p->downtime_max_ms);

			log_info("VM %s: not converging, downtime limit %" PRIu64 " -> %" PRIu64
				 " ms",
				 p->name, pr.downtime_limit_ms, limit);
			pr.downtime_limit_ms = limit;
			apply_limit(p, c.dom, &pr, true);
			next_step = now + MAX(p->converge_s / 4, STEP_MIN_S) * USEC_PER_SEC;
			continue;
		}
		{
			char dirty[64];

			if (pr.iteration <= 1)
				snprintf(dirty, sizeof(dirty), "first pass unfinished");
			else
				snprintf(dirty, sizeof(dirty), "%.1f MiB/s dirtied",
					 pr.dirty_rate / 1048576.0);
			why = strdup_printf(
				"pre-copy did not converge in %" PRIu64
				" s, even with a downtime limit of %" PRIu64
				" ms (%s, %.1f MiB/s sent, %" PRIu64 " MiB left)%s",
				(uint64_t)((now - start) / USEC_PER_SEC), pr.downtime_limit_ms,
				dirty, pr.bps / 1048576.0, pr.remaining >> 20,
				p->postcopy ? ""
					    : "; allow post-copy (--postcopy) or raise the limit");
		}
		abort_reason = why ?: "pre-copy did not converge";
		if (virDomainAbortJob(c.dom) < 0)
			log_debug("abort: %s", virGetLastErrorMessage());
	}
	pthread_join(thread, NULL);

	if (c.r < 0) {
		if (abort_reason) {
			*ret_error =
				strdup_printf("aborted: %s (%s)", abort_reason, strna(c.error));
			r = why ? -ETIMEDOUT : -ECANCELED;
		} else {
			*ret_error = c.error;
			c.error = NULL;
			r = -EIO;
		}
		goto out;
	}
	ret->postcopy = switched;
	ret->downtime_limit_ms = pr.downtime_limit_ms;
	ret->processed = pr.processed;
	{
		virTypedParameterPtr stats = NULL;
		int type = VIR_DOMAIN_JOB_NONE, n = 0;

		if (virDomainGetJobStats(c.dom, &type, &stats, &n,
					 VIR_DOMAIN_JOB_STATS_COMPLETED |
						 VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED) == 0) {
			ret->time_ms = stat_u64(stats, n, VIR_DOMAIN_JOB_TIME_ELAPSED);
			ret->downtime_ms = stat_u64(stats, n, VIR_DOMAIN_JOB_DOWNTIME);
			ret->processed =
				stat_u64(stats, n, VIR_DOMAIN_JOB_DATA_PROCESSED) ?: ret->processed;
			virTypedParamsFree(stats, n);
		}
	}
	r = 0;
out:
	free(c.error);
	free(why);
	virTypedParamsFree(c.params, c.n_params);
	if (c.dom)
		virDomainFree(c.dom);
	virConnectClose(c.conn);
	pthread_mutex_destroy(&c.lock);
	pthread_cond_destroy(&c.cond);
	return r;
}

static virDomainPtr lookup(const char *uri, const char *name, virConnectPtr *ret_conn,
			   char **ret_error, int *ret_r)
{
	virConnectPtr c = vm_connect(uri, ret_error);
	virDomainPtr d;

	*ret_conn = c;
	if (!c) {
		*ret_r = -ECONNREFUSED;
		return NULL;
	}
	d = virDomainLookupByName(c, name);
	if (!d) {
		virErrorPtr e = virGetLastError();
		char what[256];

		snprintf(what, sizeof(what), "no domain '%s' at %s", name, uri);
		*ret_r = e && e->code == VIR_ERR_NO_DOMAIN ? -ENOENT : -EIO;
		*ret_error = vm_last_error(what);
		virConnectClose(c);
		*ret_conn = NULL;
	}
	return d;
}

int vm_domain_xml(const char *uri, const char *name, char **ret_xml, bool *ret_running,
		  unsigned long *ret_libvirt_version, char **ret_error)
{
	virConnectPtr c;
	virDomainPtr d;
	int state = 0, reason = 0, r = 0;

	*ret_error = NULL;
	d = lookup(uri, name, &c, ret_error, &r);
	if (!d)
		return r;
	*ret_running = virDomainGetState(d, &state, &reason, 0) == 0 && state == VIR_DOMAIN_RUNNING;
	if (ret_libvirt_version && virConnectGetLibVersion(c, ret_libvirt_version) < 0)
		*ret_libvirt_version = 0;
	*ret_xml = virDomainGetXMLDesc(d, VIR_DOMAIN_XML_MIGRATABLE);
	if (!*ret_xml) {
		*ret_error = vm_last_error("the domain's XML");
		r = -EIO;
	}
	virDomainFree(d);
	virConnectClose(c);
	return r;
}

int vm_completed_job(const char *uri, const char *name, uint64_t *ret_time_ms,
		     uint64_t *ret_downtime_ms, char **ret_error)
{
	virTypedParameterPtr stats = NULL;
	int type = VIR_DOMAIN_JOB_NONE, n = 0, r = 0;
	virConnectPtr c;
	virDomainPtr d;

	*ret_error = NULL;
	d = lookup(uri, name, &c, ret_error, &r);
	if (!d)
		return r;
	if (virDomainGetJobStats(d, &type, &stats, &n,
				 VIR_DOMAIN_JOB_STATS_COMPLETED |
					 VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED) < 0) {
		*ret_error = vm_last_error("completed job stats");
		r = -EIO;
	} else if (type == VIR_DOMAIN_JOB_NONE || n == 0) {
		r = -ENOENT;
	} else {
		*ret_time_ms = stat_u64(stats, n, VIR_DOMAIN_JOB_TIME_ELAPSED);
		*ret_downtime_ms = stat_u64(stats, n, VIR_DOMAIN_JOB_DOWNTIME);
	}
	virTypedParamsFree(stats, n);
	virDomainFree(d);
	virConnectClose(c);
	return r;
}

int vm_is_running(const char *uri, const char *name, bool *ret, char **ret_error)
{
	virConnectPtr c;
	virDomainPtr d;
	int state = 0, reason = 0, r = 0;

	*ret_error = NULL;
	*ret = false;
	d = lookup(uri, name, &c, ret_error, &r);
	if (!d)
		return r == -ENOENT ? 0 : r;
	if (virDomainGetState(d, &state, &reason, 0) == 0)
		*ret = state == VIR_DOMAIN_RUNNING;
	virDomainFree(d);
	virConnectClose(c);
	return 0;
}
