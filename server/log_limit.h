#ifndef CLUED_LOG_LIMIT_H
#define CLUED_LOG_LIMIT_H

#include <stdint.h>

/* The budget of log lines (--log-rate): each level may write so many lines a second, in
 * fixed windows of one second, so that a flood of one level (info lines of cancelled calls,
 * warnings of streams reset for a bad header) never silences the others. Lines over the
 * budget, and lines the output could not take (log.c's buffer full), are counted by level
 * until a report says how many were lost. Pure: the caller passes the time. */

/** Levels, in order of importance. */
typedef enum log_level {
  LOG_INFO = 0,
  LOG_WARN,
  LOG_ERROR,
  LOG_NLEVELS,
} log_level_t;

/** Budget and counts of one logger. */
typedef struct log_limit {
  unsigned rate;              /* lines a second per level; 0: no limit */
  uint64_t window_ms;         /* start of the current one-second window */
  unsigned used[LOG_NLEVELS]; /* lines written in it */
  uint64_t over[LOG_NLEVELS]; /* lines over the budget since the last report */
  uint64_t full[LOG_NLEVELS]; /* lines the output could not take since then */
  uint64_t since_ms;          /* start of the window of the first of them */
  uint64_t report_ms;         /* a report of them is due from then */
} log_limit_t;

/** A new budget of rate lines a second per level (0: no limit), its window starting now. */
void log_limit_init(log_limit_t *l, unsigned rate, uint64_t now_ms);

/** The level named "info", "warn" or "error"; any other name counts as info. */
log_level_t log_level_of(const char *name);

/**
 * Start a new window when a second has passed since the current one began. Returns 1 when a
 * report is due: lines were lost since the last one, and their window has ended (or a second
 * has passed since a report could not be written). The caller then writes it and calls
 * log_limit_reported(); 0 otherwise.
 */
int log_limit_tick(log_limit_t *l, uint64_t now_ms);

/** Take one line of level lv from the budget: 1 to write it, 0 when over (counted). */
int log_limit_take(log_limit_t *l, log_level_t lv, uint64_t now_ms);

/** Count a line of level lv that passed the budget but that the output could not take. */
void log_limit_lost(log_limit_t *l, log_level_t lv, uint64_t now_ms);

/** Lines lost since the last report, over the budget and for a full output. */
uint64_t log_limit_dropped(const log_limit_t *l);

/**
 * A report was tried at now_ms: written, the counts start again from zero; not written (the
 * output full), they go on, and the next is due a second later.
 */
void log_limit_reported(log_limit_t *l, int written, uint64_t now_ms);

#endif
