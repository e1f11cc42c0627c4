/* The `checkpoint` and `restore` verbs: a container's complete state to an image directory, and
 * back into a running container. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/json-util.h"
#include "common/util.h"
#include "migctl/migctl-internal.h"

#define ENGINE_TIMEOUT (120 * USEC_PER_SEC)

static const char checkpoint_help[] =
	"Usage: migctl [GLOBAL OPTIONS] checkpoint NAME --dir DIR [OPTIONS]\n"
	"\n"
	"Freeze a running container, write the complete state of its processes (memory,\n"
	"registers, threads, files, pipes, sockets incl. established TCP connections, signals,\n"
	"timers) into the new directory DIR, then kill it (default) or let it run on. What\n"
	"cannot be restored (inotify, a socket to outside, ...) is refused by name and the\n"
	"container keeps running untouched. The image holds process memory: it is written\n"
	"0600 in a 0700 directory, owned by root. Without --compress the space for the memory\n"
	"is taken in DIR before the freeze (what is unused is given back), so that the\n"
	"container stays frozen only while its memory is copied: 'frozen' is its downtime.\n"
	"A DIR on tmpfs (/dev/shm, /run) is the fastest: the memory goes from the frozen\n"
	"processes straight into the image's files.\n"
	"\n"
	"Options:\n"
	"  --dir DIR          the image directory (created; must not exist or be empty)\n"
	"  --leave-running    thaw the container afterwards instead of killing it\n"
	"  --compress LEVEL   zstd level for memory pages, 0 = none (default 0: fastest)\n"
	"  -h, --help         this help\n"
	"\n"
	"Example:\n"
	"  $ migctl checkpoint web1 --dir /var/lib/migrd/images/web1\n"
	"  web1 checkpointed to /var/lib/migrd/images/web1: 3 processes, 212 MiB, frozen 180 ms\n"
	"  $ migctl restore web1 --from /var/lib/migrd/images/web1\n";

static const char restore_help[] =
	"Usage: migctl [GLOBAL OPTIONS] restore NAME --from DIR\n"
	"\n"
	"Restore a container from an image made by 'migctl checkpoint': the same pids in a\n"
	"new PID namespace, the same memory, files and connections. The image is verified\n"
	"completely (ownership, modes, every checksum) before any process is created; files\n"
	"the image names must still exist. NAME may be the checkpointed container or a new name.\n"
	"Uncompressed pages files are leased while they are verified and restored: a process\n"
	"that opens one for writing meanwhile waits until the restore is over.\n"
	"\n"
	"Options:\n"
	"  --from DIR   the image directory\n"
	"  -h, --help   this help\n";

/* An absolute path for the daemon, whose working directory is not ours. */
static char *absolute(const char *p)
{
	char cwd[PATH_MAX], *s;

	if (p[0] == '/')
		return strdup(p);
	if (!getcwd(cwd, sizeof(cwd)))
		return NULL;
	return asprintf(&s, "%s/%s", cwd, p) < 0 ? NULL : s;
}

static int ckpt_verb(const struct migctl *m, int argc, char **argv, bool restore)
{
	enum { ARG_DIR = 0x100, ARG_FROM, ARG_LEAVE, ARG_COMPRESS };
	static const struct option options[] = {
		{"help", no_argument, NULL, 'h'},
		{"dir", required_argument, NULL, ARG_DIR},
		{"from", required_argument, NULL, ARG_FROM},
		{"leave-running", no_argument, NULL, ARG_LEAVE},
		{"compress", required_argument, NULL, ARG_COMPRESS},
		{},
	};
	const char *verb = restore ? "restore" : "checkpoint";
	_cleanup_json_ json_t *params = json_object(), *reply = NULL;
	_cleanup_free_ char *dir = NULL;
	struct migctl mm = *m;
	json_t *result;
	uint64_t u;
	int c, r;

	if (!params)
		return migctl_report_error(m, -ENOMEM);
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", options, NULL)) >= 0) {
		if (c == 'h') {
			fputs(restore ? restore_help : checkpoint_help, m->out);
			return MIGCTL_EXIT_OK;
		} else if ((c == ARG_DIR && !restore) || (c == ARG_FROM && restore)) {
			free(dir);
			dir = absolute(optarg);
			if (!dir)
				return migctl_report_error(m, -ENOMEM);
		} else if (c == ARG_LEAVE && !restore) {
			json_object_set_new(params, "leave_running", json_true());
		} else if (c == ARG_COMPRESS && !restore) {
			if (parse_uint64(optarg, &u) < 0 || u > 19)
				return migctl_usage_error(m, verb, "invalid --compress '%s' (0-19)",
							  optarg);
			json_object_set_new(params, "compress", json_integer((json_int_t)u));
		} else
			return migctl_option_error(m, verb, c, argv);
	}
	if (optind != argc - 1)
		return migctl_usage_error(m, verb, "needs exactly one container NAME");
	if (!dir)
		return migctl_usage_error(m, verb, "needs %s DIR", restore ? "--from" : "--dir");
	json_object_set_new(params, "name", json_string(argv[optind]));
	json_object_set_new(params, restore ? "from" : "dir", json_string(dir));
	mm.timeout = MAX(m->timeout, ENGINE_TIMEOUT);
	r = migctl_request(&mm, verb, params, &reply, &result);
	if (r != MIGCTL_EXIT_OK)
		return r;
	if (m->json)
		return migctl_print_json(m, result);
	if (restore)
		fprintf(m->out, "%s restored from %s: pid %d, %d processes, %.0f ms\n",
			argv[optind], dir, (int)json_integer_value(json_object_get(result, "pid")),
			(int)json_integer_value(json_object_get(result, "processes")),
			json_number_value(json_object_get(result, "total_ms")));
	else {
		char size[32];

		format_bytes(size, sizeof(size),
			     (uint64_t)json_integer_value(json_object_get(result, "image_bytes")));
		fprintf(m->out, "%s checkpointed to %s: %d processes, %s, frozen %.0f ms%s\n",
			argv[optind], dir,
			(int)json_integer_value(json_object_get(result, "processes")), size,
			json_number_value(json_object_get(result, "frozen_ms")),
			json_is_true(json_object_get(result, "left_running")) ? ", left running"
									      : "");
	}
	return MIGCTL_EXIT_OK;
}

int verb_checkpoint(const struct migctl *m, int argc, char **argv)
{
	return ckpt_verb(m, argc, argv, false);
}

int verb_restore(const struct migctl *m, int argc, char **argv)
{
	return ckpt_verb(m, argc, argv, true);
}
