/* A small SQL lexer for reading clued's migrations (db/schema_check.c): comments, quoted
 * strings and identifiers, dollar quotes, statements split at their ';'; and the few readings
 * of tokens that the schema check needs (names as PostgreSQL folds them, argument types as
 * oidvectortypes() prints them, a WHEN condition's words). */

#include "db/sql_lex.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

size_t sql_line_of(const char *src, size_t pos) {
  size_t line = 1;
  for (size_t i = 0; i < pos; i++)
    if (src[i] == '\n')
      line++;
  return line;
}

static int is_ident_start(int c) {
  return isalpha(c) || c == '_' || c >= 0x80;
}

static int is_ident(int c) {
  return isalnum(c) || c == '_' || c == '$' || c >= 0x80;
}

/* A dollar quote's opening tag at p ($$ or $tag$), its length, or 0. */
static size_t dollar_tag(const char *s, size_t len, size_t p) {
  size_t q = p + 1;

  if (s[p] != '$')
    return 0;
  if (q < len && s[q] == '$')
    return 2;
  if (q >= len || !(isalpha((unsigned char)s[q]) || s[q] == '_' || (unsigned char)s[q] >= 0x80))
    return 0;
  while (q < len && (isalnum((unsigned char)s[q]) || s[q] == '_' || (unsigned char)s[q] >= 0x80))
    q++;
  return q < len && s[q] == '$' ? q - p + 1 : 0;
}

static int push(sql_lexer_t *lx, sql_tok_kind_t kind, const char *s, size_t len, size_t start,
                size_t end) {
  if (lx->ntoks == lx->cap) {
    size_t cap = lx->cap ? 2 * lx->cap : 64;
    sql_tok_t *t = realloc(lx->toks, cap * sizeof(*t));
    if (!t)
      return -ENOMEM;
    lx->toks = t;
    lx->cap = cap;
  }
  lx->toks[lx->ntoks++] = (sql_tok_t){kind, s, len, start, end};
  return 0;
}

/* A statement's tokens are followed by a few ';' that it does not count, so that looking a
 * few tokens ahead never reads past the array. */
#define SENTINELS 4

static int seal(sql_lexer_t *lx) {
  size_t end = lx->ntoks ? lx->toks[lx->ntoks - 1].end : lx->pos;

  for (int k = 0; k < SENTINELS; k++)
    if (push(lx, SQL_PUNCT, ";", 1, end, end) != 0)
      return -ENOMEM;
  lx->ntoks -= SENTINELS;
  return 1;
}

/* The next statement's tokens (to its ';' or the end). Returns 1 with a statement, 0 at the
 * end of the file, -1 (message in err) on an unterminated quote or comment, or -ENOMEM. */
int sql_next_statement(sql_lexer_t *lx, char *err, size_t errlen) {
  const char *s = lx->src;
  size_t n = lx->len;

  lx->ntoks = 0;
  while (lx->pos < n) {
    size_t p = lx->pos, q;
    unsigned char c = (unsigned char)s[p];
    int rc = 0;

    if (isspace(c)) {
      lx->pos++;
      continue;
    }
    if (c == '-' && p + 1 < n && s[p + 1] == '-') {
      while (lx->pos < n && s[lx->pos] != '\n')
        lx->pos++;
      continue;
    }
    if (c == '/' && p + 1 < n && s[p + 1] == '*') {
      int depth = 0;
      for (q = p; q < n; q++) {
        if (s[q] == '/' && q + 1 < n && s[q + 1] == '*') {
          depth++;
          q++;
        } else if (s[q] == '*' && q + 1 < n && s[q + 1] == '/') {
          q++;
          if (--depth == 0)
            break;
        }
      }
      if (q >= n) {
        snprintf(err, errlen, "line %zu: unterminated comment", sql_line_of(s, p));
        return -1;
      }
      lx->pos = q + 1;
      continue;
    }
    if (lx->ntoks == 0)
      lx->line_at = p;
    if (c == ';') {
      lx->pos++;
      if (lx->ntoks == 0)
        continue;
      return seal(lx);
    }
    if (c == '\'' || ((c == 'e' || c == 'E') && p + 1 < n && s[p + 1] == '\'')) {
      int esc = c != '\'';
      for (q = p + (esc ? 2 : 1); q < n; q++) {
        if (esc && s[q] == '\\') {
          q++;
          continue;
        }
        if (s[q] == '\'') {
          if (q + 1 < n && s[q + 1] == '\'') {
            q++;
            continue;
          }
          break;
        }
      }
      if (q >= n) {
        snprintf(err, errlen, "line %zu: unterminated string", sql_line_of(s, p));
        return -1;
      }
      rc = push(lx, SQL_STR, s + p, q + 1 - p, p, q + 1);
      lx->pos = q + 1;
    } else if (c == '"') {
      for (q = p + 1; q < n; q++)
        if (s[q] == '"') {
          if (q + 1 < n && s[q + 1] == '"') {
            q++;
            continue;
          }
          break;
        }
      if (q >= n) {
        snprintf(err, errlen, "line %zu: unterminated quoted identifier", sql_line_of(s, p));
        return -1;
      }
      rc = push(lx, SQL_QWORD, s + p + 1, q - p - 1, p, q + 1);
      lx->pos = q + 1;
    } else if (c == '$' && (q = dollar_tag(s, n, p)) > 0) {
      size_t tag = q, body = p + tag, e;
      for (e = body; e + tag <= n; e++)
        if (s[e] == '$' && memcmp(s + e, s + p, tag) == 0)
          break;
      if (e + tag > n) {
        snprintf(err, errlen, "line %zu: unterminated dollar quote %.*s", sql_line_of(s, p),
                 (int)tag, s + p);
        return -1;
      }
      rc = push(lx, SQL_DOLLAR, s + body, e - body, p, e + tag);
      lx->pos = e + tag;
    } else if (is_ident_start(c)) {
      for (q = p + 1; q < n && is_ident((unsigned char)s[q]); q++)
        ;
      rc = push(lx, SQL_WORD, s + p, q - p, p, q);
      lx->pos = q;
    } else if (isdigit(c) || c == '$') {
      for (q = p + 1; q < n && (isalnum((unsigned char)s[q]) || s[q] == '.'); q++)
        ;
      rc = push(lx, SQL_NUM, s + p, q - p, p, q);
      lx->pos = q;
    } else {
      rc = push(lx, SQL_PUNCT, s + p, 1, p, p + 1);
      lx->pos++;
    }
    if (rc != 0)
      return rc;
  }
  return lx->ntoks > 0 ? seal(lx) : 0;
}

/* ---- helpers ----------------------------------------------------------------------------- */

int sql_kw(const sql_tok_t *t, const char *w) {
  return t && t->kind == SQL_WORD && strlen(w) == t->len && strncasecmp(t->s, w, t->len) == 0;
}

int sql_punct(const sql_tok_t *t, char c) {
  return t && t->kind == SQL_PUNCT && t->s[0] == c;
}

/* A name as PostgreSQL folds it: unquoted words to lower case. */
char *sql_name_of(const sql_tok_t *t) {
  char *s;

  if (!t || (t->kind != SQL_WORD && t->kind != SQL_QWORD))
    return NULL;
  s = malloc(t->len + 1);
  if (!s)
    return NULL;
  if (t->kind == SQL_QWORD) {
    size_t j = 0;
    for (size_t i = 0; i < t->len; i++) {
      s[j++] = t->s[i];
      if (t->s[i] == '"')
        i++; /* "" */
    }
    s[j] = '\0';
  } else {
    for (size_t i = 0; i < t->len; i++)
      s[i] = (char)tolower((unsigned char)t->s[i]);
    s[t->len] = '\0';
  }
  return s;
}

void sql_buf_add(sql_buf_t *b, const char *s, size_t n) {
  if (b->oom)
    return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    char *ns;
    while (cap < b->len + n + 1)
      cap *= 2;
    ns = realloc(b->s, cap);
    if (!ns) {
      b->oom = 1;
      return;
    }
    b->s = ns;
    b->cap = cap;
  }
  memcpy(b->s + b->len, s, n);
  b->len += n;
  b->s[b->len] = '\0';
}

void sql_buf_str(sql_buf_t *b, const char *s) {
  sql_buf_add(b, s, strlen(s));
}

void sql_buf_printf(sql_buf_t *b, const char *fmt, ...) {
  char tmp[1024];
  va_list ap;
  int n;

  va_start(ap, fmt);
  n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
  va_end(ap);
  if (n < 0) {
    b->oom = 1;
    return;
  }
  if ((size_t)n < sizeof(tmp)) {
    sql_buf_add(b, tmp, (size_t)n);
    return;
  }
  {
    char *big = malloc((size_t)n + 1);
    if (!big) {
      b->oom = 1;
      return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sql_buf_add(b, big, (size_t)n);
    free(big);
  }
}

/* b's string, or NULL (and nothing kept) when it ran out of memory. */
char *sql_buf_take(sql_buf_t *b) {
  if (b->oom) {
    free(b->s);
    return NULL;
  }
  if (!b->s)
    return strdup("");
  return b->s;
}

/* An identifier for SQL text: as is when PostgreSQL would fold it to itself. */
void sql_buf_ident(sql_buf_t *b, const char *id) {
  int plain = id[0] && (islower((unsigned char)id[0]) || id[0] == '_');

  for (const char *p = id; *p && plain; p++)
    if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '_'))
      plain = 0;
  if (plain) {
    sql_buf_str(b, id);
    return;
  }
  sql_buf_add(b, "\"", 1);
  for (const char *p = id; *p; p++) {
    if (*p == '"')
      sql_buf_add(b, "\"", 1);
    sql_buf_add(b, p, 1);
  }
  sql_buf_add(b, "\"", 1);
}

/* A name at toks[*i], maybe qualified (schema.name). *ours: no schema, or public. */
char *sql_qualname(const sql_tok_t *t, size_t n, size_t *i, int *ours) {
  char *first, *second;

  if (*i >= n)
    return NULL;
  first = sql_name_of(&t[*i]);
  if (!first)
    return NULL;
  (*i)++;
  *ours = 1;
  if (*i + 1 < n && sql_punct(&t[*i], '.')) {
    second = sql_name_of(&t[*i + 1]);
    if (!second) {
      free(first);
      return NULL;
    }
    *ours = strcmp(first, "public") == 0;
    free(first);
    *i += 2;
    return second;
  }
  return first;
}

/* The index just past the ')' matching the '(' at toks[i], or n. */
size_t sql_skip_parens(const sql_tok_t *t, size_t n, size_t i) {
  int depth = 0;

  for (; i < n; i++) {
    if (sql_punct(&t[i], '('))
      depth++;
    else if (sql_punct(&t[i], ')') && --depth == 0)
      return i + 1;
  }
  return n;
}

static const struct {
  const char *alias, *name;
} type_aliases[] = {
    {"int", "integer"},
    {"int4", "integer"},
    {"int8", "bigint"},
    {"int2", "smallint"},
    {"bool", "boolean"},
    {"float8", "double precision"},
    {"float", "double precision"},
    {"float4", "real"},
    {"varchar", "character varying"},
    {"char", "character"},
    {"decimal", "numeric"},
    {"timestamptz", "timestamp with time zone"},
    {"timestamp", "timestamp without time zone"},
    {"timetz", "time with time zone"},
    {"time", "time without time zone"},
};

/* Words that begin a type name of more than one word: never a parameter's name here. */
static int multiword_type(const char *w) {
  static const char *const starts[] = {"double", "character", "timestamp", "time",
                                       "bit",    "national",  "interval"};
  for (size_t i = 0; i < sizeof(starts) / sizeof(starts[0]); i++)
    if (strcmp(w, starts[i]) == 0)
      return 1;
  return 0;
}

static int arg_mode(const char *w) {
  return strcmp(w, "in") == 0 || strcmp(w, "out") == 0 || strcmp(w, "inout") == 0 ||
         strcmp(w, "variadic") == 0;
}

/* The input argument types of the list toks[from, to) as oidvectortypes() prints them:
 * "bigint, integer[]". Modes, names, defaults and type modifiers go; OUT arguments too. */
char *sql_arg_types(const sql_tok_t *t, size_t from, size_t to) {
  sql_buf_t out = {0};
  size_t i = from, nargs = 0;

  sql_buf_add(&out, "", 0);
  while (i < to) {
    char *words[16];
    size_t nw = 0, w0 = 0;
    int is_out = 0, depth = 0;
    sql_buf_t ty = {0};

    /* One argument: up to a ',' outside parentheses. */
    for (; i < to; i++) {
      if (sql_punct(&t[i], '(')) {
        depth++;
        continue;
      }
      if (sql_punct(&t[i], ')')) {
        depth--;
        continue;
      }
      if (depth > 0)
        continue;
      if (sql_punct(&t[i], ','))
        break;
      if (sql_kw(&t[i], "default") || sql_punct(&t[i], '=')) {
        /* the default: skip to the next top-level ',' */
        for (; i < to; i++) {
          if (sql_punct(&t[i], '('))
            depth++;
          else if (sql_punct(&t[i], ')'))
            depth--;
          else if (depth == 0 && sql_punct(&t[i], ','))
            break;
        }
        break;
      }
      if ((t[i].kind == SQL_WORD || t[i].kind == SQL_QWORD) && nw < 16) {
        words[nw] = sql_name_of(&t[i]);
        if (!words[nw])
          out.oom = 1;
        else
          nw++;
      } else if (sql_punct(&t[i], '[') && nw > 0) {
        size_t l = strlen(words[nw - 1]);
        char *w = realloc(words[nw - 1], l + 3);
        if (w) {
          memcpy(w + l, "[]", 3);
          words[nw - 1] = w;
        } else {
          out.oom = 1;
        }
        while (i < to && !sql_punct(&t[i], ']'))
          i++;
      } else if (sql_punct(&t[i], '.') && nw > 0 && i + 1 < to) {
        /* schema.type: kept whole in the last word */
        char *next = sql_name_of(&t[i + 1]);
        size_t l = strlen(words[nw - 1]);
        char *w = next ? realloc(words[nw - 1], l + strlen(next) + 2) : NULL;
        if (w) {
          w[l] = '.';
          strcpy(w + l + 1, next);
          words[nw - 1] = w;
        } else {
          out.oom = 1;
        }
        free(next);
        i++;
      }
    }
    if (i < to && sql_punct(&t[i], ','))
      i++;
    if (nw > 0 && arg_mode(words[0])) {
      is_out = strcmp(words[0], "out") == 0;
      w0 = 1;
    }
    if (nw - w0 >= 2 && !multiword_type(words[w0]))
      w0++; /* the parameter's name */
    if (w0 < nw && arg_mode(words[w0])) {
      is_out = is_out || strcmp(words[w0], "out") == 0;
      w0++;
    }
    if (!is_out && w0 < nw) {
      /* An alias is normalized by its first word; arrays keep their [] */
      size_t l = strlen(words[w0]);
      int arr = l > 2 && strcmp(words[w0] + l - 2, "[]") == 0;
      const char *base = words[w0];
      char tmp[64];

      if (arr && l - 2 < sizeof(tmp)) {
        memcpy(tmp, words[w0], l - 2);
        tmp[l - 2] = '\0';
        base = tmp;
      }
      for (size_t k = 0; k < sizeof(type_aliases) / sizeof(type_aliases[0]); k++)
        if (nw - w0 == 1 && strcmp(base, type_aliases[k].alias) == 0) {
          base = type_aliases[k].name;
          break;
        }
      sql_buf_str(&ty, base);
      for (size_t k = w0 + 1; k < nw; k++) {
        sql_buf_add(&ty, " ", 1);
        sql_buf_str(&ty, words[k]);
      }
      if (arr && nw - w0 == 1)
        sql_buf_add(&ty, "[]", 2);
      if (ty.s) {
        if (nargs++ > 0)
          sql_buf_add(&out, ", ", 2);
        sql_buf_str(&out, ty.s);
      }
      if (ty.oom)
        out.oom = 1;
      free(ty.s);
    }
    for (size_t k = 0; k < nw; k++)
      free(words[k]);
  }
  return sql_buf_take(&out);
}

/* A WHEN condition's words: what the migration wrote and what pg_get_triggerdef() prints of it
 * ("((old.revoked_at IS NULL) AND (new.x = 'on'::text))") come out the same. Parentheses,
 * casts (the deparser adds them to constants) and case go, and != is <>; so a condition that
 * differs only in its grouping reads the same. A condition the deparser rewrites otherwise
 * (IN (...) as = ANY (ARRAY[...])) reads differently: a freshly migrated database would show
 * it, as every end-to-end test's does. NULL when out of memory or not lexable. */
char *sql_expr_words(const char *src, size_t len) {
  static const char *const type_words[] = {"precision", "varying", "with",
                                           "without",   "time",    "zone"};
  sql_lexer_t lx = {.src = src, .len = len};
  sql_buf_t b = {0};
  char err[64];
  int rc;

  sql_buf_add(&b, "", 0);
  while ((rc = sql_next_statement(&lx, err, sizeof(err))) == 1) {
    const sql_tok_t *t = lx.toks;
    for (size_t i = 0; i < lx.ntoks; i++) {
      if (sql_punct(&t[i], '(') || sql_punct(&t[i], ')'))
        continue;
      if (sql_punct(&t[i], ':') && sql_punct(&t[i + 1], ':')) {
        i += 2; /* the type's first word, then the rest of a type of several words */
        if (i + 1 < lx.ntoks && sql_punct(&t[i + 1], '.'))
          i += 2;
        for (int again = 1; again;) {
          again = 0;
          for (size_t m = 0; m < sizeof(type_words) / sizeof(type_words[0]); m++)
            if (i + 1 < lx.ntoks && sql_kw(&t[i + 1], type_words[m])) {
              i++;
              again = 1;
            }
        }
        while (i + 2 < lx.ntoks && sql_punct(&t[i + 1], '[') && sql_punct(&t[i + 2], ']'))
          i += 2;
        continue;
      }
      if (b.len > 0)
        sql_buf_add(&b, " ", 1);
      if ((sql_punct(&t[i], '!') && sql_punct(&t[i + 1], '=')) ||
          (sql_punct(&t[i], '<') && sql_punct(&t[i + 1], '>'))) {
        sql_buf_str(&b, "<>");
        i++;
      } else if (t[i].kind == SQL_WORD || t[i].kind == SQL_QWORD) {
        char *w = sql_name_of(&t[i]);
        if (!w)
          b.oom = 1;
        else
          sql_buf_str(&b, w);
        free(w);
      } else {
        sql_buf_add(&b, t[i].s, t[i].len);
      }
    }
  }
  free(lx.toks);
  if (rc < 0) {
    free(b.s);
    return NULL;
  }
  return sql_buf_take(&b);
}
