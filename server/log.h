#ifndef CLUED_LOG_H
#define CLUED_LOG_H

#include <stddef.h>
#include <stdio.h>
#include <uv.h>

/* Log lines on stderr, one event per line: text ("<time> clued: <level>: <message>") or, with
 * --log-format json, one JSON object per line with the stable keys time, level, msg and, for
 * calls, call, peer, method, code, duration_ms and request_id. Messages never carry tokens,
 * reporter contacts or SQL text; text from clients is escaped (control characters, C1 and
 * the line separators and bidirectional marks a viewer acts on, as \uXXXX; bytes that are
 * not UTF-8).
 *
 * Anyone can cause some lines (a call cancelled by its peer, a stream reset for a bad
 * header), so each level (info, warn, error) may write --log-rate lines a second; the lines
 * past it are counted and a warning once a second says how many were lost, by level. While
 * the server runs (log_start()), a slow reader of stderr never stalls the loop: lines wait in
 * a buffer of LOG_BUFFER_BYTES, and those that do not fit are lost and counted alike. */

/** Lines a second each level may write unless log_set_rate() says otherwise (--log-rate). */
#define LOG_RATE_DEFAULT 1000

/** Bytes of lines kept for a log output slower than the server; info lines fill 3/4 of it. */
#define LOG_BUFFER_BYTES (1u << 20)

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

/** Lines a second each level may write from now on; 0: no limit. Set before the loop runs. */
void log_set_rate(unsigned per_second);

/**
 * From now on write the log to fd (STDERR_FILENO in clued) from loop without ever blocking
 * it: a pipe or terminal is opened anew, non-blocking (the given descriptor's flags, shared
 * with other processes, are left as they are); a socket is written with MSG_DONTWAIT. The
 * logger's handles are unreferenced: they do not keep the loop alive, but log_stop() must
 * close them before uv_loop_close(). Returns 0, UV_EINVAL for a regular file or another
 * descriptor that cannot be polled (lines are then written at once, as before: a file takes
 * them), UV_EBUSY when already started, or another negative libuv error.
 */
int log_start(uv_loop_t *loop, int fd);

/**
 * Stop writing through the loop: close the logger's handles (their close callbacks run on
 * the loop's next turn), write what is queued, blocking, and report lines lost. Later lines
 * are written at once to the descriptor given to log_start(). Nothing when not started.
 */
void log_stop(void);

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

/**
 * Write one line of level with the fixed text msg to stderr at once, in the current format:
 * async-signal-safe (no stdio, locks or allocation), for a signal handler that then exits.
 * msg is written as it is, so it must need no escaping; the rate limit does not apply.
 */
void log_signal_line(const char *level, const char *msg);

#define log_info(...) log_msg("info", __VA_ARGS__)
#define log_warn(...) log_msg("warn", __VA_ARGS__)
#define log_error(...) log_msg("error", __VA_ARGS__)

#endif
