/* Logging to the journal with structured fields, or to stderr with a level prefix. */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

#include "common/log.h"

static int max_level = LOG_INFO;
static enum log_target target = LOG_TARGET_AUTO;
static const char *ident = "migrd";
static int journal_ok = -1; /* -1: not yet checked */

static const char *const level_names[] = {
	[LOG_EMERG] = "emerg", [LOG_ALERT] = "alert",	  [LOG_CRIT] = "crit",
	[LOG_ERR] = "error",   [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
	[LOG_INFO] = "info",   [LOG_DEBUG] = "debug",
};

void log_set_max_level(int level)
{
	max_level = CLAMP(level, LOG_EMERG, LOG_DEBUG);
}

int log_get_max_level(void)
{
	return max_level;
}

void log_set_target(enum log_target t)
{
	target = t;
	journal_ok = -1;
}

void log_set_ident(const char *s)
{
	ident = s;
}

int log_level_from_string(const char *s)
{
	if (!s)
		return -EINVAL;
	for (size_t i = 0; i < ELEMENTSOF(level_names); i++)
		if (strcasecmp(level_names[i], s) == 0)
			return (int)i;
	if (strcasecmp(s, "err") == 0)
		return LOG_ERR;
	if (strcasecmp(s, "warn") == 0)
		return LOG_WARNING;
	return -EINVAL;
}

const char *log_level_to_string(int level)
{
	if (level < 0 || (size_t)level >= ELEMENTSOF(level_names))
		return NULL;
	return level_names[level];
}

static bool use_journal(void)
{
	if (target == LOG_TARGET_CONSOLE)
		return false;
	if (target == LOG_TARGET_JOURNAL)
		return true;
	if (journal_ok < 0) {
		/* Under systemd, stderr is already connected to the journal; native
		 * messages keep the structured fields, so prefer them there. */
		struct stat st;
		journal_ok = stat("/run/systemd/journal/socket", &st) == 0 && S_ISSOCK(st.st_mode);
	}
	return journal_ok;
}

static void log_to_console(int level, const char *const *fields, const char *msg)
{
	char buf[8192];
	size_t n = 0;
	struct timespec ts;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	n += strftime(buf, sizeof(buf), "%H:%M:%S", &tm);
	n += (size_t)snprintf(buf + n, sizeof(buf) - n, ".%03ld %s[%d] %s: %s",
			      ts.tv_nsec / 1000000, ident, (int)getpid(),
			      strna(log_level_to_string(level)), msg);
	for (const char *const *f = fields; f && *f && n < sizeof(buf); f++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, " %s", *f);
	if (n >= sizeof(buf) - 1)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	(void)!write(STDERR_FILENO, buf, n);
}

static void log_to_journal(int level, int error, const char *const *fields, const char *file,
			   int line, const char *func, const char *msg)
{
	char f_msg[8192 + 16], f_prio[32], f_file[512], f_line[32], f_func[256], f_errno[32];
	struct iovec iov[64];
	size_t n = 0;

	snprintf(f_msg, sizeof(f_msg), "MESSAGE=%s", msg);
	snprintf(f_prio, sizeof(f_prio), "PRIORITY=%d", level);
	snprintf(f_file, sizeof(f_file), "CODE_FILE=%s", file);
	snprintf(f_line, sizeof(f_line), "CODE_LINE=%d", line);
	snprintf(f_func, sizeof(f_func), "CODE_FUNC=%s", func);
	iov[n++] = (struct iovec){f_msg, strlen(f_msg)};
	iov[n++] = (struct iovec){f_prio, strlen(f_prio)};
	iov[n++] = (struct iovec){f_file, strlen(f_file)};
	iov[n++] = (struct iovec){f_line, strlen(f_line)};
	iov[n++] = (struct iovec){f_func, strlen(f_func)};
	if (error != 0) {
		snprintf(f_errno, sizeof(f_errno), "ERRNO=%d", ERRNO_VALUE(error));
		iov[n++] = (struct iovec){f_errno, strlen(f_errno)};
	}
	for (const char *const *f = fields; f && *f && n < ELEMENTSOF(iov); f++)
		iov[n++] = (struct iovec){(void *)*f, strlen(*f)};
	if (sd_journal_sendv(iov, (int)n) < 0)
		log_to_console(level, fields, msg);
}

int log_internalv(int level, int error, const char *const *fields, const char *file, int line,
		  const char *func, const char *format, va_list ap)
{
	char msg[8192];
	int saved = errno;

	/* Lets %m in the format refer to the error passed in. */
	errno = ERRNO_VALUE(error);
	vsnprintf(msg, sizeof(msg), format, ap);
	if (use_journal())
		log_to_journal(level, error, fields, file, line, func, msg);
	else
		log_to_console(level, fields, msg);
	errno = saved;
	return -ERRNO_VALUE(error);
}

int log_internal(int level, int error, const char *const *fields, const char *file, int line,
		 const char *func, const char *format, ...)
{
	va_list ap;
	int r;

	va_start(ap, format);
	r = log_internalv(level, error, fields, file, line, func, format, ap);
	va_end(ap);
	return r;
}
