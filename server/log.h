#ifndef CLUED_LOG_H
#define CLUED_LOG_H

#include <stddef.h>
#include <stdio.h>

/* Log lines on stderr, one event per line: text ("<time> clued: <level>: <message>") or, with
 * --log-format json, one JSON object per line with the stable keys time, level, msg and, for
 * calls, call, peer, method, code, duration_ms and request_id. Messages never carry tokens,
 * reporter contacts or SQL text; text from clients is escaped (control characters, bytes
 * that are not UTF-8). */

/** Line formats. */
typedef enum log_format {
  LOG_TEXT = 0,
  LOG_JSON = 1,
} log_format_t;

/**
 * Choose the format of every following line. The process has one stderr, so this is the
 * one process-wide setting of the logger, made once at start-up before the loop runs.
 */
void log_set_format(log_format_t f);

/** The current format. */
log_format_t log_get_format(void);

/**
 * Write every following line to f (not owned; NULL: stderr, the default). Like the format, one
 * process-wide setting made before the loop runs: tests read what a module logged through it.
 */
void log_set_stream(FILE *f);

/** A key and its value for log_event(): str, or num when str is NULL. */
typedef struct log_field {
  const char *key;
  const char *str;
  long long num;
} log_field_t;

/** Log one line to stderr with a UTC timestamp and the "clued:" prefix. */
void log_msg(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/**
 * As log_msg() with fields: JSON lines carry them as keys (a NULL str with num < 0 is left
 * out); text lines show the message alone.
 */
void log_event(const char *level, const log_field_t *fields, size_t nfields, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define log_info(...) log_msg("info", __VA_ARGS__)
#define log_warn(...) log_msg("warn", __VA_ARGS__)
#define log_error(...) log_msg("error", __VA_ARGS__)

#endif
