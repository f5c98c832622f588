#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static log_format_t log_format = LOG_TEXT;
static FILE *log_stream; /* NULL: stderr */

void log_set_format(log_format_t f) {
  log_format = f;
}

log_format_t log_get_format(void) {
  return log_format;
}

void log_set_stream(FILE *f) {
  log_stream = f;
}

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

/* A line being built; output past the end is dropped (the buffer is sized for the largest
 * message escaped, so only a pathological field list is cut). */
typedef struct line {
  char buf[2048 * 6 + 1024];
  size_t n;
} line_t;

static void put(line_t *l, const char *s, size_t len) {
  for (size_t i = 0; i < len && l->n < sizeof(l->buf) - 1; i++)
    l->buf[l->n++] = s[i];
}

static void putf(line_t *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(line_t *l, const char *fmt, ...) {
  va_list ap;
  int m;

  va_start(ap, fmt);
  m = vsnprintf(l->buf + l->n, sizeof(l->buf) - l->n, fmt, ap);
  va_end(ap);
  if (m > 0)
    l->n += (size_t)m < sizeof(l->buf) - l->n ? (size_t)m : sizeof(l->buf) - l->n - 1;
}

/* Text from anywhere (clients included), made safe for one line: in text, control
 * characters and bytes that are not UTF-8 become \xNN; in JSON, a string body with the
 * escapes JSON needs, and bytes that are not UTF-8 as \u00NN of their value. */
static void put_escaped(line_t *l, const char *raw, size_t len, int json) {
  for (size_t i = 0; i < len;) {
    const unsigned char *c = (const unsigned char *)raw + i;
    size_t seq = *c >= 0x80 ? utf8_seq(c, len - i) : (*c >= 0x20 && *c != 0x7F);
    if (seq == 0) {
      if (json)
        putf(l, "\\u%04x", *c);
      else
        putf(l, "\\x%02X", *c);
      i++;
    } else if (json && (*c == '"' || *c == '\\')) {
      put(l, "\\", 1);
      put(l, raw + i++, 1);
    } else {
      put(l, raw + i, seq);
      i += seq;
    }
  }
}

static void put_time(line_t *l) {
  struct timespec ts;
  struct tm tm;

  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  putf(l, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
       tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
}

static void vlog(const char *level, const log_field_t *fields, size_t nfields, const char *fmt,
                 va_list ap) {
  char raw[2048];
  line_t l;
  size_t len;
  int m;

  l.n = 0;
  m = vsnprintf(raw, sizeof(raw), fmt, ap);
  len = m < 0 ? 0 : (size_t)m < sizeof(raw) ? (size_t)m : sizeof(raw) - 1;
  if (log_format == LOG_JSON) {
    put(&l, "{\"time\":\"", 9);
    put_time(&l);
    putf(&l, "\",\"level\":\"%s\",\"msg\":\"", level);
    put_escaped(&l, raw, len, 1);
    put(&l, "\"", 1);
    for (size_t i = 0; i < nfields; i++) {
      if (fields[i].str == NULL && fields[i].num < 0)
        continue;
      putf(&l, ",\"%s\":", fields[i].key);
      if (fields[i].str) {
        put(&l, "\"", 1);
        put_escaped(&l, fields[i].str, strnlen(fields[i].str, 1024), 1);
        put(&l, "\"", 1);
      } else {
        putf(&l, "%lld", fields[i].num);
      }
    }
    put(&l, "}", 1);
  } else {
    put_time(&l);
    putf(&l, " clued: %s: ", level);
    put_escaped(&l, raw, len, 0);
  }
  l.buf[l.n] = '\0';
  /* One write per line keeps lines whole when several processes share a terminal. */
  fprintf(log_stream ? log_stream : stderr, "%s\n", l.buf);
}

void log_msg(const char *level, const char *fmt, ...) {
  va_list ap;

  va_start(ap, fmt);
  vlog(level, NULL, 0, fmt, ap);
  va_end(ap);
}

void log_event(const char *level, const log_field_t *fields, size_t nfields, const char *fmt, ...) {
  va_list ap;

  va_start(ap, fmt);
  vlog(level, fields, nfields, fmt, ap);
  va_end(ap);
}
