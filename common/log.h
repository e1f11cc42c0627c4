/* Logging to the journal (with structured fields) or to stderr. */
#pragma once

#include <stdarg.h>
#include <syslog.h>

#include "common/macro.h"

enum log_target {
	LOG_TARGET_AUTO, /* journal when its socket exists, else stderr */
	LOG_TARGET_JOURNAL,
	LOG_TARGET_CONSOLE,
};

void log_set_max_level(int level);
int log_get_max_level(void);
void log_set_target(enum log_target target);
void log_set_ident(const char *ident);
int log_level_from_string(const char *s);
const char *log_level_to_string(int level);

/* Logs and returns -ERRNO_VALUE(error) (or 0 if error is 0). fields is a NULL-terminated
 * list of "KEY=value" strings added to the journal entry (and shown on stderr), or NULL. */
int log_internal(int level, int error, const char *const *fields, const char *file, int line,
		 const char *func, const char *format, ...) _printf_(7, 8);
int log_internalv(int level, int error, const char *const *fields, const char *file, int line,
		  const char *func, const char *format, va_list ap) _printf_(7, 0);

#define log_full_errno(level, error, ...)                                                       \
	({                                                                                      \
		int _l = (level), _e = (error);                                                 \
		(log_get_max_level() >= _l)                                                     \
			? log_internal(_l, _e, NULL, __FILE__, __LINE__, __func__, __VA_ARGS__) \
			: -ERRNO_VALUE(_e);                                                     \
	})
#define log_full(level, ...) (void)log_full_errno((level), 0, __VA_ARGS__)

/* Structured: log_struct_errno(LOG_INFO, 0, STRV("PEER=hostB", "PHASE=stop"), "...", ...) */
#define LOG_FIELDS(...) ((const char *const[]){__VA_ARGS__, NULL})
#define log_struct_errno(level, error, fields, ...)                                               \
	({                                                                                        \
		int _l = (level), _e = (error);                                                   \
		(log_get_max_level() >= _l)                                                       \
			? log_internal(_l, _e, fields, __FILE__, __LINE__, __func__, __VA_ARGS__) \
			: -ERRNO_VALUE(_e);                                                       \
	})

#define log_debug(...)	 log_full(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)	 log_full(LOG_INFO, __VA_ARGS__)
#define log_notice(...)	 log_full(LOG_NOTICE, __VA_ARGS__)
#define log_warning(...) log_full(LOG_WARNING, __VA_ARGS__)
#define log_error(...)	 log_full(LOG_ERR, __VA_ARGS__)

#define log_debug_errno(e, ...)	  log_full_errno(LOG_DEBUG, e, __VA_ARGS__)
#define log_info_errno(e, ...)	  log_full_errno(LOG_INFO, e, __VA_ARGS__)
#define log_notice_errno(e, ...)  log_full_errno(LOG_NOTICE, e, __VA_ARGS__)
#define log_warning_errno(e, ...) log_full_errno(LOG_WARNING, e, __VA_ARGS__)
#define log_error_errno(e, ...)	  log_full_errno(LOG_ERR, e, __VA_ARGS__)

#define log_oom() log_error_errno(ENOMEM, "Out of memory.")
