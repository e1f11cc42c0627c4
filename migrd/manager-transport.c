/* The Manager's transport side: certificates, the peer listener, incoming sessions by purpose,
 * and the cluster host names the TLS layer checks peers against. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "migrd/manager-internal.h"
#include "migrd/peer-test.h"
#include "migrd/vms.h"

#define MAX_JOBS 32

static bool is_cluster_host(void *userdata, const char *name)
{
	struct manager *m = userdata;
	bool found = false;

	pthread_mutex_lock(&m->shared_lock);
	for (char **n = m->host_names; n && *n && !found; n++)
		found = streq(*n, name);
	pthread_mutex_unlock(&m->shared_lock);
	return found;
}

void manager_update_host_names(struct manager *m, const struct cluster_state *s)
{
	char **names = calloc(s->n_hosts + 1, sizeof(char *));

	if (!names) {
		log_oom();
		return;
	}
	for (size_t i = 0; i < s->n_hosts; i++)
		if (!(names[i] = strdup(s->hosts[i].name))) {
			strv_free(names);
			log_oom();
			return;
		}
	pthread_mutex_lock(&m->shared_lock);
	strv_free(m->host_names);
	m->host_names = names;
	pthread_mutex_unlock(&m->shared_lock);
}

int manager_session_register(struct manager *m, struct transport_session *s)
{
	struct transport_session **n;

	pthread_mutex_lock(&m->shared_lock);
	n = realloc(m->sessions, (m->n_sessions + 1) * sizeof(*n));
	if (n) {
		m->sessions = n;
		m->sessions[m->n_sessions++] = s;
	}
	pthread_mutex_unlock(&m->shared_lock);
	return n ? 0 : -ENOMEM;
}

void manager_session_unregister(struct manager *m, struct transport_session *s)
{
	pthread_mutex_lock(&m->shared_lock);
	for (size_t i = 0; i < m->n_sessions; i++)
		if (m->sessions[i] == s) {
			m->sessions[i] = m->sessions[--m->n_sessions];
			break;
		}
	pthread_mutex_unlock(&m->shared_lock);
}

struct incoming {
	struct manager *m;
	struct transport_session *s;
};

static void incoming_free(void *p)
{
	struct incoming *in = p;

	manager_session_unregister(in->m, in->s);
	transport_session_free(in->s);
	free(in);
}

static int incoming_run(void *arg, json_t **ret_result, const char **ret_code, char **ret_message)
{
	struct incoming *in = arg;
	const char *purpose = transport_session_purpose(in->s);
	int r;

	if (streq(purpose, "peer-test")) {
		r = peer_test_sink(in->s);
		if (r < 0) {
			const char *m = NULL;
			(void)transport_session_error(in->s, &m);
			log_warning("peer-test from %s failed: %s", transport_session_peer(in->s),
				    m ?: strerror(-r));
		}
		return 0;
	}
	if (streq(purpose, "vm-migrate"))
		return vms_incoming_run(in->m, in->s, ret_result, ret_code, ret_message);
	if (streq(purpose, "vm-check"))
		return vms_check_run(in->m, in->s);
	log_warning("Refused a session from %s for unknown purpose '%s'",
		    transport_session_peer(in->s), purpose);
	transport_session_abort(in->s, EPROTONOSUPPORT, "unknown session purpose");
	return 0;
}

static void incoming_done(void *userdata, int r, json_t *result, const char *code,
			  const char *message)
{
	struct incoming *in = userdata;

	if (r < 0)
		log_warning("%s session from %s: %s", transport_session_purpose(in->s),
			    transport_session_peer(in->s), message ?: strerror(-r));
	else if (result && streq(transport_session_purpose(in->s), "vm-migrate"))
		vms_incoming_done(in->m, result);
}

/* From a handshake thread: every complete incoming session runs as a job of its own. */
static void on_session(void *userdata, struct transport_session *s)
{
	struct manager *m = userdata;
	struct incoming *in = malloc(sizeof(*in));
	int r;

	if (!in || manager_session_register(m, s) < 0) {
		free(in);
		transport_session_abort(s, ENOMEM, "out of memory");
		transport_session_free(s);
		return;
	}
	*in = (struct incoming){.m = m, .s = s};
	log_struct_errno(LOG_INFO, 0, LOG_FIELDS("MIGRD_EVENT=session-accepted"),
			 "Session from %s for %s (%u streams, %s)", transport_session_peer(s),
			 transport_session_purpose(s), transport_session_n_streams(s),
			 transport_session_encrypted(s) ? "TLS" : "plain, authenticated");
	r = job_start(m->jobs, incoming_run, in, incoming_free, incoming_done, in);
	if (r < 0) {
		transport_session_abort(s, EBUSY, "too many sessions on this host");
		incoming_free(in);
	}
}

int manager_transport_setup(struct manager *m)
{
	struct transport_settings settings = {
		.ca_file = m->config.ca_file,
		.cert_file = m->config.cert_file,
		.key_file = m->config.key_file,
		.handshake_timeout = m->config.handshake_timeout,
		.stall_timeout = m->config.stall_timeout,
		.frame_size = m->config.frame_size,
		.is_cluster_host = is_cluster_host,
		.userdata = m,
	};
	struct sockaddr_storage sa;
	socklen_t len;
	char *error = NULL;
	const char *own;
	int r;

	r = job_queue_new(m->event, MAX_JOBS, &m->jobs);
	if (r < 0)
		return log_error_errno(r, "Failed to set up the job queue: %m");
	r = transport_context_new(&settings, &m->transport, &error);
	if (r < 0) {
		/* Not fatal: the cluster works without it; moves and peer-test say why not. */
		log_warning("Transport disabled: %s. Set up certificates with 'migctl ca init' "
			    "and 'migctl ca issue %s'.",
			    strna(error), m->config.host_name);
		m->transport_error = error;
		return 0;
	}
	own = transport_context_own_name(m->transport);
	if (!streq(own, m->config.host_name))
		log_warning("The certificate in %s is for '%s', but this host is '%s': peers will "
			    "refuse it",
			    m->config.cert_file, own, m->config.host_name);
	if (!m->config.address) {
		log_warning("No [host] address configured: not listening for peers");
		return 0;
	}
	r = transport_parse_address(m->config.address, m->config.port, &sa, &len);
	if (r < 0)
		return log_error_errno(r, "Invalid [host] address '%s': %m", m->config.address);
	r = transport_listener_new(m->transport, m->event, (struct sockaddr *)&sa, len, on_session,
				   m, &m->listener);
	if (r < 0)
		return log_error_errno(r, "Failed to listen for peers on %s port %u: %m",
				       m->config.address, m->config.port);
	log_info("Listening for peers on %s port %u (certificate for %s)", m->config.address,
		 m->config.port, own);
	return 0;
}

void manager_transport_teardown(struct manager *m)
{
	m->listener = transport_listener_free(m->listener);
	/* Sessions end with an error now; their jobs then finish promptly. */
	pthread_mutex_lock(&m->shared_lock);
	for (size_t i = 0; i < m->n_sessions; i++)
		transport_session_abort(m->sessions[i], ESHUTDOWN, "migrd is shutting down");
	pthread_mutex_unlock(&m->shared_lock);
	m->jobs = job_queue_free(m->jobs);
	m->transport = transport_context_free(m->transport);
	free(m->transport_error);
	m->transport_error = NULL;
	strv_free(m->host_names);
	m->host_names = NULL;
	free(m->sessions);
	m->sessions = NULL;
}
