/* The `image` verb: `image show DIR` decodes a container checkpoint image offline, without
 * migrd: a readable summary, or with --json the whole decoded structure. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "checkpoint/ct/image-internal.h"
#include "common/cleanup.h"
#include "common/json-util.h"
#include "migctl/migctl-internal.h"

static const char image_help[] =
	"Usage: migctl image show [--json] DIR\n"
	"\n"
	"Decode a container checkpoint image (the directory 'migctl checkpoint NAME --dir DIR'\n"
	"wrote) without migrd. Everything is verified first, as a restore would: ownership and\n"
	"modes (root, not writable by group or others, no symlinks), every header and checksum,\n"
	"every record and page chunk. A bad image is refused with the file and the problem,\n"
	"e.g. 'pages-42.img: checksum mismatch at chunk 12', and exit status 1.\n"
	"\n"
	"The summary shows the container and the kernel it was taken on, the tasks (pid, parent,\n"
	"comm, threads), per process the VMAs by kind (anonymous, file, shared) with their\n"
	"sizes, the fds by type, the pages stored, zero and compressed, and the totals.\n"
	"\n"
	"Options:\n"
	"  --json      print the whole decoded image as one JSON document (every VMA with its\n"
	"              advice: dontfork, wipeonfork, dontdump, hugepage, nohugepage, mergeable,\n"
	"              locked, lockonfault, sealed, droppable; register sets, fd data and\n"
	"              signal infos by size; addresses and masks as hex strings)\n"
	"  -h, --help  show this help\n"
	"\n"
	"Example:\n"
	"  $ migctl image show /var/lib/migrd/checkpoints/web1\n"
	"  $ migctl image show --json /var/lib/migrd/checkpoints/web1 | jq '.processes[].pid'\n";

/* ---- JSON ------------------------------------------------------------------------------------ */

static json_t *jhex(uint64_t v)
{
	char buf[24];

	snprintf(buf, sizeof(buf), "0x%" PRIx64, v);
	return json_string(buf);
}

static json_t *jint(uint64_t v)
{
	return v <= INT64_MAX ? json_integer((json_int_t)v) : jhex(v);
}

static json_t *jstr(const char *s)
{
	return s ? json_string(s) : json_null();
}

static json_t *jsonify_threads(const struct ct_image_task *t)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < t->n_threads; i++) {
		const struct ct_image_thread *th = &t->threads[i];
		json_t *regsets = json_array();

		for (size_t j = 0; regsets && j < th->n_regsets; j++)
			json_array_append_new(regsets,
					      json_pack("{s:I, s:I}", "type",
							(json_int_t)th->regsets[j].type, "size",
							(json_int_t)th->regsets[j].size));
		if (json_array_append_new(
			    a,
			    json_pack("{s:I, s:s, s:o, s:o, s:I, s:o, s:I, s:o, s:{s:o, s:I, s:o}, "
				      "s:o}",
				      "tid", (json_int_t)th->tid, "comm", th->comm, "sigmask",
				      jhex(th->sigmask), "pending", jhex(th->sigpending),
				      "siginfo_queued", (json_int_t)th->n_siginfo, "robust_list",
				      jhex(th->robust_list), "robust_list_len",
				      (json_int_t)th->robust_list_len, "tid_address",
				      jhex(th->tid_address), "rseq", "address", jhex(th->rseq),
				      "length", (json_int_t)th->rseq_len, "signature",
				      jhex(th->rseq_sig), "regsets", regsets)) < 0)
			return json_decref(a), NULL;
		if (th->have_sched) {
			unsigned cpus = 0;

			for (size_t j = 0; j < th->affinity_len; j++)
				cpus += (unsigned)__builtin_popcount(th->affinity[j]);
			json_object_set_new(json_array_get(a, i), "sched",
					    json_pack("{s:I, s:I, s:I, s:b, s:o, s:I, s:I, s:I}",
						      "policy", (json_int_t)th->sched_policy,
						      "priority", (json_int_t)th->sched_priority,
						      "nice", (json_int_t)th->nice, "reset_on_fork",
						      th->sched_flags != 0, "ioprio",
						      jhex(th->ioprio), "timerslack_ns",
						      (json_int_t)th->timerslack_ns, "pdeathsig",
						      (json_int_t)th->pdeathsig, "cpus",
						      (json_int_t)cpus));
		}
	}
	return a;
}

/* Interval timers, POSIX timers and unreaped children of a task. */
static void jsonify_task_extra(const struct ct_image_task *t, json_t *o)
{
	static const char *const itimer_names[3] = {"real", "virtual", "prof"};
	json_t *itimers = json_object(), *timers = json_array(), *zombies = json_array();

	for (int i = 0; itimers && i < 3; i++)
		json_object_set_new(itimers, itimer_names[i],
				    json_pack("{s:I, s:I}", "interval_us",
					      (json_int_t)t->itimers[2 * i], "value_us",
					      (json_int_t)t->itimers[2 * i + 1]));
	for (size_t i = 0; timers && i < t->n_timers; i++) {
		const struct ct_image_timer *tm = &t->timers[i];

		json_array_append_new(timers,
				      json_pack("{s:I, s:I, s:I, s:o, s:I, s:I, s:I, s:I}", "id",
						(json_int_t)tm->id, "clock", (json_int_t)tm->clock,
						"signal", (json_int_t)tm->signo, "value",
						jhex(tm->sigval), "notify", (json_int_t)tm->notify,
						"tid", (json_int_t)tm->tid, "interval_ns",
						(json_int_t)tm->interval_ns, "value_ns",
						(json_int_t)tm->value_ns));
	}
	for (size_t i = 0; zombies && i < t->n_zombies; i++)
		json_array_append_new(
			zombies, json_pack("{s:I, s:I}", "pid", (json_int_t)(t->zombies[i] >> 32),
					   "wait_status", (json_int_t)(uint32_t)t->zombies[i]));
	json_object_set_new(o, "umask", json_integer(t->umask));
	json_object_set_new(o, "personality", jhex(t->personality));
	if (t->have_attrs) {
		json_object_set_new(o, "oom_score_adj", json_integer(t->oom_score_adj));
		json_object_set_new(o, "dumpable", json_integer(t->dumpable));
		json_object_set_new(o, "child_subreaper", json_boolean(t->subreaper));
		json_object_set_new(o, "thp_disable", json_integer(t->thp_disable));
		json_object_set_new(o, "mdwe", json_integer(t->mdwe));
	}
	json_object_set_new(o, "no_new_privs", json_boolean(t->no_new_privs));
	{
		static const char *const modes[] = {"disabled", "strict", "filter"};
		json_t *filters = json_array();

		for (size_t i = 0; filters && i < t->n_seccomp_filters; i++)
			json_array_append_new(filters,
					      json_pack("{s:I, s:b}", "instructions",
							(json_int_t)t->seccomp_filters[i].n_insns,
							"log", t->seccomp_filters[i].flags != 0));
		json_object_set_new(o, "seccomp",
				    json_pack("{s:s, s:o}", "mode",
					      t->seccomp_mode < 3 ? modes[t->seccomp_mode] : "?",
					      "filters", filters ? filters : json_null()));
	}
	json_object_set_new(o, "itimers", itimers ?: json_null());
	json_object_set_new(o, "posix_timers", timers ?: json_null());
	json_object_set_new(o, "exited_children", zombies ?: json_null());
}

static json_t *jsonify_task(const struct ct_image_task *t)
{
	json_t *rlimits = json_array(), *sigactions = json_array(), *groups = json_array(), *o;

	for (size_t i = 0; rlimits && i < CT_IMAGE_RLIMITS; i++)
		json_array_append_new(rlimits, json_pack("{s:o, s:o}", "cur",
							 t->rlimits[i].cur == UINT64_MAX
								 ? json_string("unlimited")
								 : jint(t->rlimits[i].cur),
							 "max",
							 t->rlimits[i].max == UINT64_MAX
								 ? json_string("unlimited")
								 : jint(t->rlimits[i].max)));
	for (size_t i = 0; sigactions && i < CT_IMAGE_SIGNALS; i++) {
		const struct ct_image_sigaction *s = &t->sigactions[i];

		json_array_append_new(sigactions,
				      json_pack("{s:I, s:o, s:o, s:o, s:o}", "signal",
						(json_int_t)i + 1, "handler", jhex(s->handler),
						"flags", jhex(s->flags), "restorer",
						jhex(s->restorer), "mask", jhex(s->mask)));
	}
	for (size_t i = 0; groups && i < t->creds.n_groups; i++)
		json_array_append_new(groups, json_integer(t->creds.groups[i]));
	o = json_pack(
		"{s:I, s:I, s:I, s:I, s:s, s:{s:[I,I,I,I], s:[I,I,I,I], s:o, s:{s:o, s:o, s:o, "
		"s:o, s:o}, s:I}, s:o, s:o, s:o, s:I, s:o, s:o, s:o}",
		"pid", (json_int_t)t->pid, "ppid", (json_int_t)t->ppid, "pgid", (json_int_t)t->pgid,
		"sid", (json_int_t)t->sid, "comm", t->comm, "creds", "uids",
		(json_int_t)t->creds.uids[0], (json_int_t)t->creds.uids[1],
		(json_int_t)t->creds.uids[2], (json_int_t)t->creds.uids[3], "gids",
		(json_int_t)t->creds.gids[0], (json_int_t)t->creds.gids[1],
		(json_int_t)t->creds.gids[2], (json_int_t)t->creds.gids[3], "groups", groups,
		"caps", "inheritable", jhex(t->creds.caps[0]), "permitted", jhex(t->creds.caps[1]),
		"effective", jhex(t->creds.caps[2]), "bounding", jhex(t->creds.caps[3]), "ambient",
		jhex(t->creds.caps[4]), "securebits", (json_int_t)t->creds.securebits, "rlimits",
		rlimits, "sigactions", sigactions, "shared_pending", jhex(t->shared_pending),
		"shared_siginfo_queued", (json_int_t)t->n_shared_siginfo, "cwd", jstr(t->cwd),
		"root", jstr(t->root), "threads", jsonify_threads(t));
	if (o)
		jsonify_task_extra(t, o);
	return o;
}

static json_t *jsonify_mm(const struct ct_image_mm *mm)
{
	static const char *const names[CT_IMAGE_MM_FIELDS] = {
		"start_code",  "end_code",  "start_data", "end_data",  "start_brk", "brk",
		"start_stack", "arg_start", "arg_end",	  "env_start", "env_end"};
	json_t *fields = json_object(), *auxv = json_array(), *vmas = json_array(),
	       *guards = json_array();

	for (size_t i = 0; fields && i < CT_IMAGE_MM_FIELDS; i++)
		json_object_set_new(fields, names[i], jhex(mm->fields[i]));
	for (size_t i = 0; auxv && i < mm->n_auxv; i++)
		json_array_append_new(auxv, jhex(mm->auxv[i]));
	for (size_t i = 0; vmas && i < mm->n_vmas; i++) {
		const struct ct_image_vma *v = &mm->vmas[i];
		const char prot[] = {v->prot & 1 ? 'r' : '-', v->prot & 2 ? 'w' : '-',
				     v->prot & 4 ? 'x' : '-', 0};
		char advice[128];

		json_array_append_new(
			vmas,
			json_pack("{s:o, s:o, s:I, s:I, s:s, s:o, s:s, s:s, s:s, s:o, s:o}",
				  "start", jhex(v->start), "end", jhex(v->end), "size",
				  (json_int_t)(v->end - v->start), "pgoff", (json_int_t)v->pgoff,
				  "prot", prot, "flags", jhex(v->flags), "advice",
				  ct_image_vma_advice_to_string(v->advice, advice, sizeof(advice)),
				  "kind", ct_image_vma_kind_to_string(v->kind), "pages",
				  ct_image_vma_pages_to_string(v->pages), "shmid",
				  v->kind == CT_IMAGE_VMA_ANON_SHARED ||
						  v->pages == CT_IMAGE_VMA_PAGES_SHM
					  ? jint(v->shmid)
					  : json_null(),
				  "path", jstr(v->path)));
	}
	for (size_t i = 0; guards && i < mm->n_guards; i++)
		json_array_append_new(guards, json_pack("[o, o]", jhex(mm->guards[2 * i]),
							jhex(mm->guards[2 * i + 1])));
	return json_pack("{s:o, s:o, s:o, s:o, s:o}", "fields", fields, "auxv", auxv, "exe",
			 jstr(mm->exe), "vmas", vmas, "guards", guards ? guards : json_null());
}

static json_t *jsonify_fds(const struct ct_image_fds *fds)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < fds->n_fds; i++) {
		const struct ct_image_fd *f = &fds->fds[i];
		json_t *locks = json_array();

		for (size_t j = 0; locks && j < f->n_locks; j++) {
			const struct ct_image_lock *l = &f->locks[j];

			json_array_append_new(
				locks,
				json_pack("{s:s, s:b, s:o, s:o}", "kind",
					  l->kind == CT_IMAGE_LOCK_FLOCK   ? "flock"
					  : l->kind == CT_IMAGE_LOCK_POSIX ? "posix"
									   : "ofd",
					  "write", l->write, "start", jint(l->start), "end",
					  l->end == UINT64_MAX ? json_null() : jint(l->end)));
		}
		json_array_append_new(
			a, json_pack("{s:I, s:s, s:o, s:b, s:o, s:o, s:I, s:o}", "fd",
				     (json_int_t)f->fd, "type", ct_image_fd_type_to_string(f->type),
				     "flags", jhex(f->flags), "cloexec", f->fd_flags & 1, "pos",
				     jint(f->pos), "path", jstr(f->path), "data_size",
				     (json_int_t)f->data_size, "locks", locks));
	}
	return a;
}

static json_t *jsonify_pages(const struct ct_image_pages *p)
{
	json_t *runs = json_array();
	size_t raw = 0;

	if (!p)
		return json_null();
	for (size_t i = 0; i < p->n_chunks; i++)
		raw += !!(p->chunks[i].flags & CT_IMAGE_CHUNK_RAW);
	for (size_t i = 0; runs && i < p->n_runs; i++)
		json_array_append_new(runs,
				      json_pack("{s:o, s:I, s:b}", "address", jhex(p->runs[i].addr),
						"pages", (json_int_t)p->runs[i].n_pages, "zero",
						p->runs[i].flags & CT_IMAGE_RUN_ZERO));
	return json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:o}", "file", p->name, "stored_pages",
			 (json_int_t)p->n_data_pages, "zero_pages", (json_int_t)p->n_zero_pages,
			 "stored_size", (json_int_t)p->compressed_size, "chunks",
			 (json_int_t)p->n_chunks, "raw_chunks", (json_int_t)raw, "runs", runs);
}

static json_t *jsonify_ipc_perm(const struct ct_image_ipc_perm *p)
{
	return json_pack("{s:I, s:o, s:I, s:I, s:o}", "id", (json_int_t)p->id, "key",
			 jhex((uint32_t)p->key), "uid", (json_int_t)p->uid, "gid",
			 (json_int_t)p->gid, "mode", json_sprintf("%03o", p->mode));
}

static json_t *jsonify_ipc(const struct ct_image_ipc *ipc)
{
	json_t *sems = json_array(), *msgqs = json_array(), *shms = json_array();

	for (size_t i = 0; shms && i < ipc->n_shms; i++) {
		const struct ct_image_shm_seg *m = &ipc->shms[i];
		json_t *o = jsonify_ipc_perm(&m->perm);

		if (o) {
			json_object_set_new(o, "size", jint(m->size));
			json_object_set_new(o, "removed",
					    json_boolean(m->flags & CT_IMAGE_SHM_DEST));
			json_object_set_new(o, "locked",
					    json_boolean(m->flags & CT_IMAGE_SHM_LOCKED));
		}
		json_array_append_new(shms, o);
	}

	for (size_t i = 0; sems && i < ipc->n_sems; i++) {
		const struct ct_image_sem_set *s = &ipc->sems[i];
		json_t *o = jsonify_ipc_perm(&s->perm), *values = json_array();

		for (size_t j = 0; values && j < s->n_values; j++)
			json_array_append_new(values, json_integer(s->values[j]));
		if (o)
			json_object_set_new(o, "values", values);
		else
			json_decref(values);
		json_array_append_new(sems, o);
	}
	for (size_t i = 0; msgqs && i < ipc->n_msgqs; i++) {
		const struct ct_image_msg_queue *q = &ipc->msgqs[i];
		json_t *o = jsonify_ipc_perm(&q->perm);
		uint64_t bytes = 0;

		for (size_t j = 0; j < q->n_msgs; j++)
			bytes += q->msgs[j].len;
		if (o) {
			json_object_set_new(o, "qbytes", jint(q->qbytes));
			json_object_set_new(o, "messages", json_integer((json_int_t)q->n_msgs));
			json_object_set_new(o, "bytes", jint(bytes));
		}
		json_array_append_new(msgqs, o);
	}
	return json_pack("{s:o, s:o, s:o}", "shared_memory", shms, "semaphore_sets", sems,
			 "message_queues", msgqs);
}

static json_t *image_to_json(const struct ct_image *img)
{
	const struct ct_image_inventory *inv = &img->inventory;
	const struct ct_image_vdso_layout *v = &inv->vdso;
	json_t *files = json_array(), *procs = json_array(), *shm = json_array();

	for (size_t i = 0; files && i < inv->n_files; i++)
		json_array_append_new(files,
				      json_pack("{s:s, s:I, s:o}", "name", inv->files[i].name,
						"size", (json_int_t)inv->files[i].size, "xxh3",
						jhex(inv->files[i].xxh3)));
	for (size_t i = 0; procs && i < img->n_procs; i++) {
		const struct ct_image_process *p = &img->procs[i];
		json_t *o = jsonify_task(&p->task);

		if (o) {
			json_object_set_new(o, "mm", jsonify_mm(&p->mm));
			json_object_set_new(o, "fds", jsonify_fds(&p->fds));
			json_object_set_new(o, "pages", jsonify_pages(p->pages));
		}
		json_array_append_new(procs, o);
	}
	for (size_t i = 0; shm && i < img->n_shm; i++) {
		json_t *o = jsonify_pages(&img->shm[i]);

		if (o)
			json_object_set_new(o, "shmid", jint(img->shm[i].owner));
		json_array_append_new(shm, o);
	}
	json_t *o = json_pack(
		"{s:I, s:s, s:s, s:s, s:I, s:I, s:I, s:{s:[o,o], s:[o,o], s:[o,o]}, "
		"s:o, s:o, s:o}",
		"format_version", (json_int_t)inv->version, "container", inv->container,
		"kernel_release", inv->kernel_release, "arch", inv->arch, "page_size",
		(json_int_t)inv->page_size, "root_pid", (json_int_t)inv->root_pid, "created_usec",
		(json_int_t)inv->created_usec, "vdso", "vvar", jhex(v->vvar_start),
		jhex(v->vvar_end), "vvar_vclock", jhex(v->vvar_vclock_start),
		jhex(v->vvar_vclock_end), "vdso", jhex(v->vdso_start), jhex(v->vdso_end), "files",
		files, "processes", procs, "shared_memory", shm);
	if (o) {
		json_object_set_new(o, "hostname",
				    inv->hostname ? json_string(inv->hostname) : json_null());
		json_object_set_new(o, "domainname",
				    inv->domainname ? json_string(inv->domainname) : json_null());
		json_object_set_new(o, "own_network_namespace", json_boolean(inv->netns));
		if (inv->n_net_sysctls > 0) {
			json_t *sc = json_object();

			for (size_t i = 0; sc && i < inv->n_net_sysctls; i++)
				json_object_set_new(sc, inv->net_sysctls[i].name,
						    json_string(inv->net_sysctls[i].value));
			json_object_set_new(o, "network_sysctls", sc);
		} else
			json_object_set_new(o, "network_sysctls", json_null());
		json_object_set_new(
			o, "clocks",
			inv->clocks.realtime_ns
				? json_pack("{s:I,s:I,s:I}", "monotonic_ns",
					    (json_int_t)inv->clocks.monotonic_ns, "boottime_ns",
					    (json_int_t)inv->clocks.boottime_ns, "realtime_ns",
					    (json_int_t)inv->clocks.realtime_ns)
				: json_null());
		json_object_set_new(o, "ipc", jsonify_ipc(&img->ipc));
	}
	return o;
}

/* ---- text ------------------------------------------------------------------------------------ */

struct mem_summary {
	uint64_t vmas, anon, file, shared, special;
};

static struct mem_summary summarize_mm(const struct ct_image_mm *mm)
{
	struct mem_summary s = {.vmas = mm->n_vmas};

	for (size_t i = 0; i < mm->n_vmas; i++) {
		uint64_t size = mm->vmas[i].end - mm->vmas[i].start;

		switch (mm->vmas[i].kind) {
		case CT_IMAGE_VMA_ANON_PRIVATE:
		case CT_IMAGE_VMA_HEAP:
		case CT_IMAGE_VMA_STACK:
			s.anon += size;
			break;
		case CT_IMAGE_VMA_FILE_PRIVATE:
		case CT_IMAGE_VMA_FILE_SHARED:
			s.file += size;
			break;
		case CT_IMAGE_VMA_ANON_SHARED:
			s.shared += size;
			break;
		default:
			s.special += size;
		}
	}
	return s;
}

/* "file:2 pipe:1 tcp:3", in the order of enum ct_image_fd_type. */
static void format_fd_types(char *buf, size_t len, const struct ct_image_fds *fds)
{
	size_t counts[_CT_IMAGE_FD_TYPE_MAX] = {}, at = 0;

	buf[0] = 0;
	for (size_t i = 0; i < fds->n_fds; i++)
		counts[fds->fds[i].type]++;
	for (size_t t = 0; t < _CT_IMAGE_FD_TYPE_MAX && at < len; t++)
		if (counts[t] > 0) {
			int n = snprintf(buf + at, len - at, "%s%s:%zu", at ? " " : "",
					 ct_image_fd_type_to_string(t), counts[t]);
			if (n < 0)
				break;
			at += (size_t)n;
		}
	if (at == 0)
		strscpy(buf, "-", len);
}

static const struct table_column task_columns[] = {
	{.header = "PID", .right = true},
	{.header = "PPID", .right = true},
	{.header = "PGID", .right = true},
	{.header = "SID", .right = true},
	{.header = "COMM"},
	{.header = "THREADS", .right = true},
	{.header = "CWD"},
};

static const struct table_column memory_columns[] = {
	{.header = "PID", .right = true},    {.header = "VMAS", .right = true},
	{.header = "ANON", .right = true},   {.header = "FILE", .right = true},
	{.header = "SHARED", .right = true}, {.header = "STORED", .right = true},
	{.header = "ZERO", .right = true},   {.header = "ON DISK", .right = true},
};

static const struct table_column fd_columns[] = {
	{.header = "PID", .right = true},
	{.header = "FDS", .right = true},
	{.header = "TYPES"},
};

static int print_tasks(FILE *f, const struct ct_image *img)
{
	_cleanup_table_ struct table *t = table_new(task_columns, ELEMENTSOF(task_columns));
	int r;

	if (!t)
		return -ENOMEM;
	for (size_t i = 0; i < img->n_procs; i++) {
		const struct ct_image_task *k = &img->procs[i].task;
		char pid[16], ppid[16], pgid[16], sid[16], threads[16];
		const char *cells[] = {pid, ppid, pgid, sid, k->comm, threads, k->cwd};

		snprintf(pid, sizeof(pid), "%u", k->pid);
		snprintf(ppid, sizeof(ppid), "%u", k->ppid);
		snprintf(pgid, sizeof(pgid), "%u", k->pgid);
		snprintf(sid, sizeof(sid), "%u", k->sid);
		snprintf(threads, sizeof(threads), "%zu", k->n_threads);
		r = table_add_row(t, cells);
		if (r < 0)
			return r;
	}
	return table_print(t, f);
}

struct totals {
	uint64_t stored, zero, compressed, files_size;
};

static int add_pages_row(struct table *t, const char *who, const struct mem_summary *s,
			 const struct ct_image_pages *p, struct totals *tot)
{
	char vmas[16], anon[32], file[32], shared[32], stored[32], zero[32], comp[32];
	const char *cells[] = {who, vmas, anon, file, shared, stored, zero, comp};

	snprintf(vmas, sizeof(vmas), "%" PRIu64, s->vmas);
	format_bytes_short(anon, sizeof(anon), s->anon);
	format_bytes_short(file, sizeof(file), s->file);
	format_bytes_short(shared, sizeof(shared), s->shared);
	format_bytes_short(stored, sizeof(stored), p ? p->n_data_pages * CT_IMAGE_PAGE_SIZE : 0);
	format_bytes_short(zero, sizeof(zero), p ? p->n_zero_pages * CT_IMAGE_PAGE_SIZE : 0);
	format_bytes_short(comp, sizeof(comp), p ? p->compressed_size : 0);
	if (p) {
		tot->stored += p->n_data_pages;
		tot->zero += p->n_zero_pages;
		tot->compressed += p->compressed_size;
	}
	return table_add_row(t, cells);
}

static int print_memory(FILE *f, const struct ct_image *img, struct totals *tot)
{
	_cleanup_table_ struct table *t = table_new(memory_columns, ELEMENTSOF(memory_columns));
	int r;

	if (!t)
		return -ENOMEM;
	for (size_t i = 0; i < img->n_procs; i++) {
		struct mem_summary s = summarize_mm(&img->procs[i].mm);
		char who[16];

		snprintf(who, sizeof(who), "%u", img->procs[i].task.pid);
		r = add_pages_row(t, who, &s, img->procs[i].pages, tot);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < img->n_shm; i++) {
		struct mem_summary s = {};
		char who[32];

		snprintf(who, sizeof(who), "shm %" PRIu64, img->shm[i].owner);
		r = add_pages_row(t, who, &s, &img->shm[i], tot);
		if (r < 0)
			return r;
	}
	return table_print(t, f);
}

static int print_fds(FILE *f, const struct ct_image *img)
{
	_cleanup_table_ struct table *t = table_new(fd_columns, ELEMENTSOF(fd_columns));
	int r;

	if (!t)
		return -ENOMEM;
	for (size_t i = 0; i < img->n_procs; i++) {
		char pid[16], n[16], types[512];
		const char *cells[] = {pid, n, types};

		snprintf(pid, sizeof(pid), "%u", img->procs[i].task.pid);
		snprintf(n, sizeof(n), "%zu", img->procs[i].fds.n_fds);
		format_fd_types(types, sizeof(types), &img->procs[i].fds);
		r = table_add_row(t, cells);
		if (r < 0)
			return r;
	}
	return table_print(t, f);
}

static int image_show_print(FILE *f, const char *dir, const struct ct_image *img)
{
	const struct ct_image_inventory *inv = &img->inventory;
	char kernel[512], vdso[128], created[64], format[128], stored[32], zero[32], comp[32],
		raw[32], files[32], clocks[96] = "-", names[600], net[96];
	struct totals tot = {};
	size_t threads = 0;
	time_t when = (time_t)(inv->created_usec / USEC_PER_SEC);
	struct tm tm;
	int r;

	for (size_t i = 0; i < inv->n_files; i++)
		tot.files_size += inv->files[i].size;
	for (size_t i = 0; i < img->n_procs; i++)
		threads += img->procs[i].task.n_threads;
	snprintf(kernel, sizeof(kernel), "%s (%s)", inv->kernel_release, inv->arch);
	snprintf(vdso, sizeof(vdso), "vvar %#" PRIx64 ", vvar_vclock %#" PRIx64 ", vdso %#" PRIx64,
		 inv->vdso.vvar_start, inv->vdso.vvar_vclock_start, inv->vdso.vdso_start);
	if (gmtime_r(&when, &tm))
		strftime(created, sizeof(created), "%Y-%m-%d %H:%M:%S UTC", &tm);
	else
		strscpy(created, "-", sizeof(created));
	if (inv->clocks.realtime_ns)
		snprintf(clocks, sizeof(clocks), "monotonic %.3f s, boot time %.3f s (when frozen)",
			 (double)inv->clocks.monotonic_ns / 1e9,
			 (double)inv->clocks.boottime_ns / 1e9);
	snprintf(names, sizeof(names), "%s, domain %s", inv->hostname ?: "-",
		 inv->domainname ?: "-");
	if (inv->netns)
		snprintf(net, sizeof(net), "a namespace of its own, %zu sysctls kept",
			 inv->n_net_sysctls);
	else
		strscpy(net, "the host's", sizeof(net));
	format_bytes(files, sizeof(files), tot.files_size);
	snprintf(format, sizeof(format), "version %u, %zu files, %s", inv->version,
		 inv->n_files + 1, files);
	{
		const struct key_value rows[] = {
			{"Image", dir},	      {"Container", inv->container},
			{"Kernel", kernel},   {"vDSO", vdso},
			{"Created", created}, {"Clocks", clocks},
			{"Host name", names}, {"Network", net},
			{"Format", format},
		};

		print_key_values(f, rows, ELEMENTSOF(rows));
	}
	fprintf(f, "\nTasks: %zu processes, %zu threads, root pid %u\n", img->n_procs, threads,
		inv->root_pid);
	r = print_tasks(f, img);
	if (r < 0)
		return r;
	fputs("\nMemory (VMA sizes by kind; pages stored, zero, and their size in the image):\n",
	      f);
	r = print_memory(f, img, &tot);
	if (r < 0)
		return r;
	fputs("\nFile descriptors:\n", f);
	r = print_fds(f, img);
	if (r < 0)
		return r;
	if (img->ipc.n_sems > 0 || img->ipc.n_msgqs > 0) {
		size_t msgs = 0;

		for (size_t i = 0; i < img->ipc.n_msgqs; i++)
			msgs += img->ipc.msgqs[i].n_msgs;
		fprintf(f,
			"\nSystem V IPC: %zu semaphore sets, %zu message queues (%zu messages)\n",
			img->ipc.n_sems, img->ipc.n_msgqs, msgs);
	}
	format_bytes(stored, sizeof(stored), tot.stored);
	format_bytes(raw, sizeof(raw), tot.stored * CT_IMAGE_PAGE_SIZE);
	format_bytes(zero, sizeof(zero), tot.zero * CT_IMAGE_PAGE_SIZE);
	format_bytes(comp, sizeof(comp), tot.compressed);
	fprintf(f,
		"\nPages: %" PRIu64 " stored (%s raw, %s in the image), %" PRIu64
		" zero (%s, not stored)\n",
		tot.stored, raw, comp, tot.zero, zero);
	fprintf(f, "Total: %s on disk\n", files);
	return 0;
}

/* ---- the verb -------------------------------------------------------------------------------- */

static int image_show(const struct migctl *m, int argc, char **argv)
{
	enum { ARG_JSON = 0x100 };
	static const struct option options[] = {
		{"json", no_argument, NULL, ARG_JSON},
		{"help", no_argument, NULL, 'h'},
		{},
	};
	_cleanup_(ct_image_freep) struct ct_image *img = NULL;
	char err[CT_IMAGE_ERROR_MAX];
	bool json = m->json;
	int c, r;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+:h", options, NULL)) >= 0) {
		if (c == 'h') {
			fputs(image_help, m->out);
			return MIGCTL_EXIT_OK;
		}
		if (c != ARG_JSON)
			return migctl_option_error(m, "image", c, argv);
		json = true;
	}
	if (optind >= argc)
		return migctl_usage_error(m, "image", "'image show' needs the image directory");
	if (optind + 1 < argc)
		return migctl_usage_error(m, "image", "'image show' takes one directory, got '%s'",
					  argv[optind + 1]);
	r = ct_image_open(argv[optind], err, &img);
	if (r < 0) {
		fputs("migctl: ", m->err);
		fputs_printable(r == -ENOMEM ? "out of memory" : err, m->err);
		fputc('\n', m->err);
		return MIGCTL_EXIT_FAILURE;
	}
	if (json) {
		_cleanup_json_ json_t *j = image_to_json(img);

		if (!j) {
			fputs("migctl: out of memory\n", m->err);
			return MIGCTL_EXIT_FAILURE;
		}
		return migctl_print_json(m, j);
	}
	r = image_show_print(m->out, argv[optind], img);
	if (r < 0) {
		fputs("migctl: out of memory\n", m->err);
		return MIGCTL_EXIT_FAILURE;
	}
	return MIGCTL_EXIT_OK;
}

int verb_image(const struct migctl *m, int argc, char **argv)
{
	const char *sub = argc > 1 ? argv[1] : NULL;

	if (!sub)
		return migctl_usage_error(m, "image", "expected 'show'");
	if (streq(sub, "-h") || streq(sub, "--help")) {
		fputs(image_help, m->out);
		return MIGCTL_EXIT_OK;
	}
	if (streq(sub, "show"))
		return image_show(m, argc - 1, argv + 1);
	return migctl_usage_error(m, "image", "unknown subcommand '%s': expected 'show'", sub);
}
