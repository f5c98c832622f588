#ifndef CLUED_DOMAIN_BULLETIN_H
#define CLUED_DOMAIN_BULLETIN_H

/* The calendar of the monthly bulletin (通报, StatsService.GetBulletin): months are calendar
 * months in China Standard Time (UTC+08:00), the time of the circulars. Pure functions. */

#include <stddef.h>
#include <stdint.h>

/** The offset of the bulletin's time zone from UTC, in milliseconds. */
#define BULLETIN_UTC_OFFSET_MS (8 * INT64_C(3600000))
/** How many months back a zero-disposal streak is followed, the bulletin's month included. */
#define BULLETIN_STREAK_MAX 120
/** The earliest month a bulletin covers. */
#define BULLETIN_YEAR_MIN 2000

/** A calendar month. */
typedef struct bulletin_month {
  int year;  /* BULLETIN_YEAR_MIN .. 9999 */
  int month; /* 1 .. 12 */
} bulletin_month_t;

/**
 * Parse "YYYY-MM" (exactly seven characters, month 01-12, year from BULLETIN_YEAR_MIN) into
 * *out. Returns 0, or -1 (out untouched).
 */
int bulletin_month_parse(const char *s, bulletin_month_t *out) __attribute__((warn_unused_result));

/** The month k months before m (k may be negative: after). */
bulletin_month_t bulletin_month_add(bulletin_month_t m, int k);

/** The first instant of m in UTC+08:00, in ms since the epoch. */
int64_t bulletin_month_start_ms(bulletin_month_t m);

/** The month (UTC+08:00) that instant ms lies in. */
bulletin_month_t bulletin_month_of_ms(int64_t ms);

/** -1, 0 or 1 as a is before, equal to or after b. */
int bulletin_month_cmp(bulletin_month_t a, bulletin_month_t b);

/**
 * The month boundaries a bulletin for m needs, newest first: out[0] the start of the month
 * after m, out[1] the start of m, out[k + 1] the start of the month k months before m, for
 * n entries (n - 1 months; at most BULLETIN_STREAK_MAX + 1 is useful). Month k is then
 * [out[k + 1], out[k]).
 */
void bulletin_bounds(bulletin_month_t m, int64_t *out, size_t n);

#endif
