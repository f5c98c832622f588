#ifndef CLUED_LOG_H
#define CLUED_LOG_H

/** Log one line to stderr with a UTC timestamp and the "clued:" prefix. */
void log_msg(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_info(...) log_msg("info", __VA_ARGS__)
#define log_warn(...) log_msg("warn", __VA_ARGS__)
#define log_error(...) log_msg("error", __VA_ARGS__)

#endif
