#include "log_limit.h"

#include <string.h>

void log_limit_init(log_limit_t *l, unsigned rate, uint64_t now_ms) {
  memset(l, 0, sizeof(*l));
  l->rate = rate;
  l->window_ms = now_ms;
}

log_level_t log_level_of(const char *name) {
  if (strcmp(name, "error") == 0)
    return LOG_ERROR;
  if (strcmp(name, "warn") == 0)
    return LOG_WARN;
  return LOG_INFO;
}

uint64_t log_limit_dropped(const log_limit_t *l) {
  uint64_t n = 0;

  for (int i = 0; i < LOG_NLEVELS; i++)
    n += l->over[i] + l->full[i];
  return n;
}

int log_limit_tick(log_limit_t *l, uint64_t now_ms) {
  /* A clock that went back (or a window not yet over) keeps the window. */
  if (now_ms >= l->window_ms + 1000) {
    l->window_ms = now_ms;
    memset(l->used, 0, sizeof(l->used));
  }
  return log_limit_dropped(l) > 0 && now_ms >= l->report_ms;
}

static void count_from(log_limit_t *l) {
  if (log_limit_dropped(l) == 0) {
    l->since_ms = l->window_ms;
    l->report_ms = l->window_ms + 1000;
  }
}

int log_limit_take(log_limit_t *l, log_level_t lv, uint64_t now_ms) {
  (void)log_limit_tick(l, now_ms);
  if (l->rate == 0 || l->used[lv] < l->rate) {
    l->used[lv]++;
    return 1;
  }
  count_from(l);
  l->over[lv]++;
  return 0;
}

void log_limit_lost(log_limit_t *l, log_level_t lv, uint64_t now_ms) {
  (void)log_limit_tick(l, now_ms);
  count_from(l);
  l->full[lv]++;
}

void log_limit_reported(log_limit_t *l, int written, uint64_t now_ms) {
  if (written) {
    memset(l->over, 0, sizeof(l->over));
    memset(l->full, 0, sizeof(l->full));
  } else {
    l->report_ms = now_ms + 1000;
  }
}
