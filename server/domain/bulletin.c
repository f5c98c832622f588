#include "domain/bulletin.h"

#include <string.h>

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (Howard Hinnant's
 * days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  int64_t yoe = y - era * 400;
  int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

int bulletin_month_parse(const char *s, bulletin_month_t *out) {
  int y = 0, m = 0;

  if (s == NULL || strlen(s) != 7 || s[4] != '-')
    return -1;
  for (int i = 0; i < 7; i++) {
    if (i == 4)
      continue;
    if (s[i] < '0' || s[i] > '9')
      return -1;
    if (i < 4)
      y = y * 10 + (s[i] - '0');
    else
      m = m * 10 + (s[i] - '0');
  }
  if (y < BULLETIN_YEAR_MIN || m < 1 || m > 12)
    return -1;
  out->year = y;
  out->month = m;
  return 0;
}

bulletin_month_t bulletin_month_add(bulletin_month_t m, int k) {
  int64_t idx = (int64_t)m.year * 12 + (m.month - 1) - k;
  int64_t y = idx >= 0 ? idx / 12 : (idx - 11) / 12;
  bulletin_month_t r = {(int)y, (int)(idx - y * 12) + 1};
  return r;
}

int64_t bulletin_month_start_ms(bulletin_month_t m) {
  return days_from_civil(m.year, m.month, 1) * INT64_C(86400000) - BULLETIN_UTC_OFFSET_MS;
}

bulletin_month_t bulletin_month_of_ms(int64_t ms) {
  int64_t days = ms + BULLETIN_UTC_OFFSET_MS;
  days = days >= 0 ? days / 86400000 : (days - 86399999) / 86400000;
  /* civil_from_days */
  days += 719468;
  int64_t era = (days >= 0 ? days : days - 146096) / 146097;
  int64_t doe = days - era * 146097;
  int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  int64_t mp = (5 * doy + 2) / 153;
  int mon = (int)(mp < 10 ? mp + 3 : mp - 9);
  bulletin_month_t r = {(int)(yoe + era * 400 + (mon <= 2)), mon};
  return r;
}

int bulletin_month_cmp(bulletin_month_t a, bulletin_month_t b) {
  if (a.year != b.year)
    return a.year < b.year ? -1 : 1;
  if (a.month != b.month)
    return a.month < b.month ? -1 : 1;
  return 0;
}

void bulletin_bounds(bulletin_month_t m, int64_t *out, size_t n) {
  for (size_t i = 0; i < n; i++)
    out[i] = bulletin_month_start_ms(bulletin_month_add(m, (int)i - 1));
}
