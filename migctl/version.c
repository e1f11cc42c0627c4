/* The `version` verb: migctl's own version, then the running migrd's. */
#include "common/cleanup.h"
#include "common/json-util.h"
#include "migctl/migctl-internal.h"

static const char version_help[] =
	"Usage: migctl [GLOBAL OPTIONS] version [-h]\n"
	"\n"
	"Show the version of migctl, then ask migrd for its version and control protocol.\n"
	"migctl's line is printed even when migrd cannot be reached; 'migctl --version' prints\n"
	"only migctl's version and never contacts migrd.\n"
	"\n"
	"Example:\n"
	"  $ migctl version\n"
	"  migctl 0.1.0\n"
	"  migrd 0.1.0 (control protocol 1)\n"
	"\n"
	"With 'migctl --json version', prints migrd's result object instead,\n"
	"e.g. {\"version\": \"0.1.0\", \"protocol\": 1}.\n";

int verb_version(const struct migctl *m, int argc, char **argv)
{
	_cleanup_json_ json_t *reply = NULL;
	char version[128], protocol[32];
	json_t *result;
	bool done;
	int r;

	r = migctl_parse_verb_args(m, argc, argv, "version", version_help, &done);
	if (done)
		return r;
	if (!m->json)
		fputs("migctl " MIGRD_VERSION "\n", m->out);
	r = migctl_request(m, "version", NULL, &reply, &result);
	if (r != MIGCTL_EXIT_OK)
		return r;
	if (m->json)
		return migctl_print_json(m, result);
	fprintf(m->out, "migrd ");
	fputs_printable(
		format_json_string(version, sizeof(version), json_object_get(result, "version")),
		m->out);
	fprintf(m->out, " (control protocol %s)\n",
		format_json_integer(protocol, sizeof(protocol),
				    json_object_get(result, "protocol")));
	return MIGCTL_EXIT_OK;
}
