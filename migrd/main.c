/* migrd's entry point: parses arguments and the config, then runs the Manager. */
#include <getopt.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "common/common.h"
#include "migrd/config.h"
#include "migrd/manager.h"

static const char *arg_config = MIGRD_DEFAULT_CONFIG;
static bool arg_config_given;
static bool arg_check;
static int arg_log_level = -1;

static void help(void)
{
	printf("Usage: migrd [OPTIONS]\n"
	       "\n"
	       "The migrd daemon: joins the corosync cluster, publishes this host's health and\n"
	       "serves the control socket that migctl talks to. Run one on every host.\n"
	       "\n"
	       "Options:\n"
	       "  -c, --config PATH     read PATH instead of %s\n"
	       "      --check-config    parse the configuration, print the result and exit\n"
	       "      --log-level LEVEL debug, info, notice, warning or error (overrides [log] "
	       "level)\n"
	       "  -h, --help            show this help\n"
	       "      --version         show the version\n"
	       "\n"
	       "Signals: SIGTERM/SIGINT stop it; SIGHUP re-reads the log level.\n"
	       "See migrd(8) and migrd.conf(5).\n",
	       MIGRD_DEFAULT_CONFIG);
}

static int parse_argv(int argc, char *argv[])
{
	enum { ARG_CHECK = 0x100, ARG_LOG_LEVEL, ARG_VERSION };
	static const struct option options[] = {
		{"config", required_argument, NULL, 'c'},
		{"check-config", no_argument, NULL, ARG_CHECK},
		{"log-level", required_argument, NULL, ARG_LOG_LEVEL},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, ARG_VERSION},
		{},
	};
	int c;

	while ((c = getopt_long(argc, argv, "c:h", options, NULL)) >= 0) {
		switch (c) {
		case 'c':
			arg_config = optarg;
			arg_config_given = true;
			break;
		case ARG_CHECK:
			arg_check = true;
			break;
		case ARG_LOG_LEVEL:
			arg_log_level = log_level_from_string(optarg);
			if (arg_log_level < 0) {
				fprintf(stderr, "migrd: invalid log level '%s'\n", optarg);
				return -EINVAL;
			}
			break;
		case 'h':
			help();
			return 0;
		case ARG_VERSION:
			printf("migrd %s\n", MIGRD_VERSION);
			return 0;
		default:
			fprintf(stderr, "Try 'migrd --help'.\n");
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "migrd: unexpected argument '%s'. Try 'migrd --help'.\n",
			argv[optind]);
		return -EINVAL;
	}
	return 1;
}

static void print_config(const struct migrd_config *c)
{
	char b1[32], b2[32], b3[32];

	printf("[host]\nname = %s\naddress = %s\nport = %u\n\n", c->host_name, strna(c->address),
	       c->port);
	printf("[paths]\nstate_dir = %s\ncontrol_socket = %s\ncontrol_group = %s\n\n", c->state_dir,
	       c->control_socket, c->control_group);
	printf("[cluster]\ngroup = %s\nmetrics_interval = %s\nsync_timeout = %s\n\n", c->cpg_group,
	       format_duration(b1, sizeof(b1), c->metrics_interval),
	       format_duration(b2, sizeof(b2), c->sync_timeout));
	printf("[fencing]\nmode = %s\ncommand = %s\nself_fence_timeout = %s\nfence_timeout = "
	       "%s\n\n",
	       fence_mode_to_string(c->fence_mode), c->fence_command ?: "",
	       format_duration(b1, sizeof(b1), c->self_fence_timeout),
	       format_duration(b3, sizeof(b3), c->fence_timeout));
	printf("[limits]\ncontrol_max_request = %llu\ncontrol_max_clients = %u\n"
	       "control_max_inflight = %u\n\n",
	       (unsigned long long)c->control_max_request, c->control_max_clients,
	       c->control_max_inflight);
	printf("[log]\nlevel = %s\n", log_level_to_string(c->log_level));
}

int main(int argc, char *argv[])
{
	struct migrd_config config;
	struct manager *m = NULL;
	_cleanup_free_ char *errors = NULL;
	int r;

	log_set_ident("migrd");
	/* Transfers allocate and free MiB-sized frames all the time: keep them in the heap
	 * instead of a fresh mmap (page faults, zeroing) for every one. */
	mallopt(M_MMAP_THRESHOLD, 64 * 1024 * 1024);
	mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
	r = parse_argv(argc, argv);
	if (r <= 0)
		return r < 0 ? 2 : 0;

	r = migrd_config_init_defaults(&config);
	if (r < 0) {
		fprintf(stderr, "migrd: out of memory\n");
		return 1;
	}
	r = migrd_config_load(&config, arg_config, arg_config_given, &errors);
	if (r < 0) {
		/* file:line: reason, one per line, for the operator and the journal alike. */
		fprintf(stderr, "migrd: invalid configuration:\n%s", strna(errors));
		(void)sd_notifyf(false, "STATUS=Invalid configuration %s\nERRNO=%d", arg_config,
				 -r);
		migrd_config_done(&config);
		return 1;
	}
	if (arg_log_level >= 0)
		config.log_level = arg_log_level;
	if (arg_check) {
		print_config(&config);
		migrd_config_done(&config);
		return 0;
	}
	log_set_target((enum log_target)config.log_target);
	log_set_max_level(config.log_level);

	r = manager_new(&config, arg_config, &m);
	if (r < 0) {
		log_error_errno(r, "Failed to set up: %m");
		migrd_config_done(&config);
		return 1;
	}
	r = manager_startup(m);
	if (r >= 0)
		r = manager_run(m);
	(void)sd_notify(false, "STOPPING=1");
	manager_free(m);
	if (r < 0)
		log_error_errno(r, "migrd failed: %m");
	return r < 0 ? 1 : 0;
}
