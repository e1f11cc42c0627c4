/* libFuzzer target: every /proc parser of the container engine (maps and smaps, status, stat,
 * fdinfo, task names) on the same bytes, with the invariants their callers rely on. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/ct/memory-internal.h"
#include "checkpoint/ct/proc-internal.h"

#define MAX_INPUT (1U << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	struct ct_vma_list maps = {};
	struct ct_proc_status status;
	struct ct_proc_stat stat;
	struct ct_fdinfo fdinfo = {};
	char name[32];
	pid_t pid;

	if (size > MAX_INPUT)
		return 0;
	if (ct_proc_parse_maps(text, size, &maps) == 0) {
		for (size_t i = 0; i < maps.n; i++) {
			const struct ct_vma *v = &maps.vmas[i];
			if (v->start >= v->end || (i > 0 && v->start < maps.vmas[i - 1].end))
				abort();
			if (v->path && strlen(v->path) > CT_PROC_MAX_LINE)
				abort();
			if (!ct_vma_kind_to_string(ct_vma_classify(v)))
				abort();
			if (!v->have_vmflags && v->vmflags != 0)
				abort();
		}
		ct_vma_list_done(&maps);
	}
	if (ct_proc_parse_status(text, size, &status) == 0 &&
	    (status.seen != CT_STATUS_ALL || status.n_nspid == 0 ||
	     status.n_nspid > CT_PROC_MAX_NS_LEVEL))
		abort();
	if (ct_proc_parse_stat(text, size, &stat) == 0 &&
	    strnlen(stat.comm, sizeof(stat.comm)) >= sizeof(stat.comm))
		abort();
	if (ct_proc_parse_fdinfo(text, size, &fdinfo) == 0) {
		for (size_t i = 0; i < fdinfo.n_kv; i++)
			if (!fdinfo.kv[i].key || !fdinfo.kv[i].value ||
			    ct_fdinfo_get(&fdinfo, fdinfo.kv[i].key) == NULL)
				abort();
		if (fdinfo.n_tfds > CT_PROC_MAX_TFDS || fdinfo.n_kv > CT_PROC_MAX_FDINFO_KV)
			abort();
		ct_fdinfo_done(&fdinfo);
	}
	{
		struct ct_proc_lock *locks = NULL;
		size_t n_locks = 0;

		if (ct_proc_parse_locks(text, size, &locks, &n_locks) == 0) {
			if (n_locks > CT_PROC_LOCKS_MAX)
				abort();
			for (size_t i = 0; i < n_locks; i++)
				if (locks[i].start > locks[i].end ||
				    locks[i].kind < CT_PROC_LOCK_FLOCK ||
				    locks[i].kind > CT_PROC_LOCK_OTHER)
					abort();
			free(locks);
		}
	}
	if (size < sizeof(name)) {
		memcpy(name, data, size);
		name[size] = 0;
		if (ct_proc_parse_pid_name(name, &pid) == 0 && pid <= 0)
			abort();
	}
	return 0;
}
