/* A row's member against what its events say (row_judge.h). Values are compared as jsonb
 * renders them on both sides where the event records a JSON value (its details), and as the
 * text a JSON string stands for where the event records a text in its own fields (its state,
 * reason, actor). */

#include "row_judge.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmd_audit_tree.h"
#include "net/utf8.h"

#define SHOWN_TEXT 60 /* bytes of a free text a message shows */

int row_json_is_null(const char *v, size_t n) {
  return n == 4 && memcmp(v, "null", 4) == 0;
}

const char *row_shown_ms(const char *text, char *buf, size_t cap) {
  char *end;
  long long ms = strtoll(text, &end, 10);
  time_t t = (time_t)(ms / 1000);
  struct tm tm;

  if (end == text || *end != '\0' || ms < 0 || gmtime_r(&t, &tm) == NULL)
    return text;
  snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03lldZ", tm.tm_year + 1900, tm.tm_mon + 1,
           tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms % 1000);
  return buf;
}

/* How a message shows a value v of n bytes, a JSON value as jsonb renders it (json) or a text
 * (NULL: none): none for null, a string without its quotes (its escapes kept: one line), a
 * free text (quoted) in quotes and cut short, at a character's start, a time as a UTC time. */
static const char *shown_value(const char *v, size_t n, int json, const row_expect_t *x, char *buf,
                               size_t cap) {
  char ms[32];
  size_t cut;

  if (v == NULL || (json && row_json_is_null(v, n)))
    return "none";
  if (json && n >= 2 && v[0] == '"') {
    v++;
    n -= 2;
  }
  if (x->time && n < sizeof(ms)) {
    memcpy(ms, v, n);
    ms[n] = '\0';
    if (row_shown_ms(ms, buf, cap) == buf)
      return buf;
  }
  cut = n;
  if (x->quoted && cut > SHOWN_TEXT) {
    cut = SHOWN_TEXT;
    while (cut > 0 && ((unsigned char)v[cut] & 0xc0) == 0x80)
      cut--;
  }
  snprintf(buf, cap, x->quoted ? "\"%.*s%s\"" : "%.*s", (int)cut, v, cut < n ? "..." : "");
  return buf;
}

/* The code point of the 4 hex digits at p, or -1. */
static long hex4(const char *p, const char *end) {
  long v = 0;

  if (end - p < 4)
    return -1;
  for (int i = 0; i < 4; i++) {
    int c = p[i];
    v = v * 16 + (c >= '0' && c <= '9'   ? c - '0'
                  : c >= 'a' && c <= 'f' ? c - 'a' + 10
                  : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                         : -1000000);
  }
  return v < 0 ? -1 : v;
}

/* The character a JSON escape \c stands for (but \u), or NUL. */
static char unescaped(char c) {
  switch (c) {
  case '"':
  case '\\':
  case '/':
    return c;
  case 'b':
    return '\b';
  case 'f':
    return '\f';
  case 'n':
    return '\n';
  case 'r':
    return '\r';
  case 't':
    return '\t';
  default:
    return '\0';
  }
}

/* Whether the JSON value v (n bytes, as jsonb renders it) is text: a string's characters once
 * its escapes are read, any other value (a number, true, false) as it stands, null a NULL text. */
static int json_is(const char *v, size_t n, const char *text) {
  const char *p, *end;

  if (row_json_is_null(v, n))
    return text == NULL;
  if (text == NULL)
    return 0;
  if (n < 2 || v[0] != '"' || v[n - 1] != '"')
    return strlen(text) == n && memcmp(v, text, n) == 0;
  p = v + 1;
  end = v + n - 1;
  while (p < end) {
    char ch[4];
    size_t k = 1;
    if (*p != '\\') {
      ch[0] = *p++;
    } else if (p + 1 < end && p[1] == 'u') {
      long cp = hex4(p + 2, end), lo;
      p += 6;
      if (cp >= 0xd800 && cp < 0xdc00 && end - p >= 6 && p[0] == '\\' && p[1] == 'u' &&
          (lo = hex4(p + 2, end)) >= 0xdc00 && lo < 0xe000) {
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        p += 6;
      }
      if (cp <= 0)
        return 0;
      k = clue__utf8_put((unsigned char *)ch, (uint32_t)cp);
    } else if (p + 1 < end && (ch[0] = unescaped(p[1])) != '\0') {
      p += 2;
    } else {
      return 0;
    }
    for (size_t i = 0; i < k; i++)
      if (text[i] != ch[i]) /* (a shorter text ends in a NUL, which no ch holds) */
        return 0;
    text += k;
  }
  return *text == '\0';
}

int row_judge(const char *row, const char *whose, const row_expect_t *x, char *why, size_t cap) {
  size_t n;
  const char *now = audit_json_raw(row, x->key, &n);
  char a[SHOWN_TEXT + 16], b[SHOWN_TEXT + 16];
  int same;

  if (now == NULL)
    return 0;
  if (x->json)
    same = x->want != NULL && n == x->len && memcmp(now, x->want, n) == 0;
  else
    same = json_is(now, n, x->want);
  if (same)
    return 0;
  snprintf(why, cap, "%s %s is %s, but its events say %s: the row was changed without an event",
           whose, x->name, shown_value(now, n, 1, x, a, sizeof(a)),
           shown_value(x->want, x->json ? x->len : (x->want ? strlen(x->want) : 0), x->json, x, b,
                       sizeof(b)));
  return 1;
}
