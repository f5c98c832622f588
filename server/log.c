#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

/* Length of the well-formed UTF-8 sequence at s (at most n bytes), or 0 if there is none. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  size_t len;
  unsigned cp;

  if (s[0] < 0xC2 || s[0] > 0xF4)
    return 0;
  len = s[0] >= 0xF0 ? 4 : s[0] >= 0xE0 ? 3 : 2;
  if (len > n)
    return 0;
  cp = s[0] & (0x7F >> len);
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80)
      return 0;
    cp = cp << 6 | (s[i] & 0x3F);
  }
  if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
      (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return len;
}

void log_msg(const char *level, const char *fmt, ...) {
  char raw[2048], line[2048 * 4 + 128];
  struct timespec ts;
  struct tm tm;
  va_list ap;
  size_t n, len;
  int m;

  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  m = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ clued: %s: ",
               tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
               ts.tv_nsec / 1000000, level);
  n = (size_t)m;
  va_start(ap, fmt);
  m = vsnprintf(raw, sizeof(raw), fmt, ap);
  va_end(ap);
  len = m < 0 ? 0 : (size_t)m < sizeof(raw) ? (size_t)m : sizeof(raw) - 1;
  /* Messages carry text from clients (method paths, names, header fields): one event is one
   * line, so control characters and bytes that are not UTF-8 are written as \xNN. */
  for (size_t i = 0; i < len;) {
    const unsigned char *c = (const unsigned char *)raw + i;
    size_t seq = *c >= 0x80 ? utf8_seq(c, len - i) : (*c >= 0x20 && *c != 0x7F);
    if (seq == 0) {
      n += (size_t)snprintf(line + n, sizeof(line) - n, "\\x%02X", *c);
      i++;
    } else {
      for (size_t k = 0; k < seq; k++)
        line[n++] = raw[i++];
    }
  }
  line[n] = '\0';
  /* One write per line keeps lines whole when several processes share a terminal. */
  fprintf(stderr, "%s\n", line);
}
