/* Reading the migrations for the functions and triggers they leave, and judging the catalog's
 * rows against them. A small SQL lexer (comments, quoted strings and identifiers, dollar
 * quotes) splits each file into statements; a handful of statement shapes matter, the rest
 * are skipped. */

#include "db/schema_check.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "audit/sha256.h"

const char schema_catalog_sql[] =
    "SELECT 'f'::text, p.proname::text, pg_catalog.oidvectortypes(p.proargtypes),"
    " p.oid::pg_catalog.regprocedure::text,"
    " pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(p.prosrc, 'UTF8')), 'hex'),"
    " NULL::text, NULL::text"
    " FROM pg_catalog.pg_proc p WHERE p.pronamespace = 'public'::pg_catalog.regnamespace"
    " UNION ALL"
    " SELECT 't', t.tgname::text, c.relname::text, NULL,"
    " CASE WHEN f.pronamespace = 'public'::pg_catalog.regnamespace THEN f.proname::text"
    " ELSE f.oid::pg_catalog.regprocedure::text END,"
    " t.tgtype::int::text, t.tgenabled::text"
    " FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid"
    " JOIN pg_catalog.pg_proc f ON f.oid = t.tgfoid"
    " WHERE c.relnamespace = 'public'::pg_catalog.regnamespace AND NOT t.tgisinternal"
    " UNION ALL"
    " SELECT 'v', NULL, max(version)::text, NULL, NULL, NULL, NULL FROM public.schema_migrations";

/* pg_trigger.tgtype bits */
enum {
  TG_ROW = 1,
  TG_BEFORE = 2,
  TG_INSERT = 4,
  TG_DELETE = 8,
  TG_UPDATE = 16,
  TG_TRUNCATE = 32,
  TG_INSTEAD = 64,
};

typedef struct fn {
  char *name;
  char *args; /* input argument types, normalized as oidvectortypes() prints them */
  char *body; /* the text between the dollar quotes */
  size_t body_len;
  char sha[65];
  const char *file;
  char *create; /* CREATE OR REPLACE FUNCTION ..., the last definition */
  char *alters; /* ALTER FUNCTION statements since, ";\n"-joined, or NULL */
  char *grants; /* GRANT/REVOKE ON FUNCTION statements since it was created, or NULL */
} fn_t;

typedef struct trg {
  char *name, *table, *func;
  int tgtype;
  char enabled;
  const char *file;
  char *create;
} trg_t;

struct schema_expect {
  fn_t *fns;
  size_t nfns, capfns;
  trg_t *trgs;
  size_t ntrgs, captrgs;
  size_t creates;
  long long version;
  char **files; /* the migrations' names, which fn_t.file and trg_t.file point into */
  size_t nfiles;
};

/* ---- lexing ------------------------------------------------------------------------------ */

typedef enum { T_WORD, T_QWORD, T_STR, T_DOLLAR, T_NUM, T_PUNCT } tok_kind_t;

typedef struct tok {
  tok_kind_t kind;
  const char *s; /* T_DOLLAR: the body; others: the token's text (quotes included) */
  size_t len;
  size_t start, end; /* the whole token in the file */
} tok_t;

typedef struct lexer {
  const char *src;
  size_t len, pos;
  tok_t *toks;
  size_t ntoks, cap;
  size_t line_at; /* the first token's line, for messages */
} lexer_t;

static size_t line_of(const char *src, size_t pos) {
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

static int push(lexer_t *lx, tok_kind_t kind, const char *s, size_t len, size_t start, size_t end) {
  if (lx->ntoks == lx->cap) {
    size_t cap = lx->cap ? 2 * lx->cap : 64;
    tok_t *t = realloc(lx->toks, cap * sizeof(*t));
    if (!t)
      return -ENOMEM;
    lx->toks = t;
    lx->cap = cap;
  }
  lx->toks[lx->ntoks++] = (tok_t){kind, s, len, start, end};
  return 0;
}

/* A statement's tokens are followed by a few ';' that it does not count, so that looking a
 * few tokens ahead never reads past the array. */
#define SENTINELS 4

static int seal(lexer_t *lx) {
  size_t end = lx->ntoks ? lx->toks[lx->ntoks - 1].end : lx->pos;

  for (int k = 0; k < SENTINELS; k++)
    if (push(lx, T_PUNCT, ";", 1, end, end) != 0)
      return -ENOMEM;
  lx->ntoks -= SENTINELS;
  return 1;
}

/* The next statement's tokens (to its ';' or the end). Returns 1 with a statement, 0 at the
 * end of the file, -1 (message in err) on an unterminated quote or comment, or -ENOMEM. */
static int next_statement(lexer_t *lx, char *err, size_t errlen) {
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
        snprintf(err, errlen, "line %zu: unterminated comment", line_of(s, p));
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
        snprintf(err, errlen, "line %zu: unterminated string", line_of(s, p));
        return -1;
      }
      rc = push(lx, T_STR, s + p, q + 1 - p, p, q + 1);
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
        snprintf(err, errlen, "line %zu: unterminated quoted identifier", line_of(s, p));
        return -1;
      }
      rc = push(lx, T_QWORD, s + p + 1, q - p - 1, p, q + 1);
      lx->pos = q + 1;
    } else if (c == '$' && (q = dollar_tag(s, n, p)) > 0) {
      size_t tag = q, body = p + tag, e;
      for (e = body; e + tag <= n; e++)
        if (s[e] == '$' && memcmp(s + e, s + p, tag) == 0)
          break;
      if (e + tag > n) {
        snprintf(err, errlen, "line %zu: unterminated dollar quote %.*s", line_of(s, p), (int)tag,
                 s + p);
        return -1;
      }
      rc = push(lx, T_DOLLAR, s + body, e - body, p, e + tag);
      lx->pos = e + tag;
    } else if (is_ident_start(c)) {
      for (q = p + 1; q < n && is_ident((unsigned char)s[q]); q++)
        ;
      rc = push(lx, T_WORD, s + p, q - p, p, q);
      lx->pos = q;
    } else if (isdigit(c) || c == '$') {
      for (q = p + 1; q < n && (isalnum((unsigned char)s[q]) || s[q] == '.'); q++)
        ;
      rc = push(lx, T_NUM, s + p, q - p, p, q);
      lx->pos = q;
    } else {
      rc = push(lx, T_PUNCT, s + p, 1, p, p + 1);
      lx->pos++;
    }
    if (rc != 0)
      return rc;
  }
  return lx->ntoks > 0 ? seal(lx) : 0;
}

/* ---- helpers ----------------------------------------------------------------------------- */

static int kw(const tok_t *t, const char *w) {
  return t && t->kind == T_WORD && strlen(w) == t->len && strncasecmp(t->s, w, t->len) == 0;
}

static int punct(const tok_t *t, char c) {
  return t && t->kind == T_PUNCT && t->s[0] == c;
}

/* A name as PostgreSQL folds it: unquoted words to lower case. */
static char *name_of(const tok_t *t) {
  char *s;

  if (!t || (t->kind != T_WORD && t->kind != T_QWORD))
    return NULL;
  s = malloc(t->len + 1);
  if (!s)
    return NULL;
  if (t->kind == T_QWORD) {
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

typedef struct sbuf {
  char *s;
  size_t len, cap;
  int oom;
} sbuf_t;

static void sb_add(sbuf_t *b, const char *s, size_t n) {
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

static void sb_str(sbuf_t *b, const char *s) {
  sb_add(b, s, strlen(s));
}

static void sb_printf(sbuf_t *b, const char *fmt, ...) {
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
    sb_add(b, tmp, (size_t)n);
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
    sb_add(b, big, (size_t)n);
    free(big);
  }
}

/* b's string, or NULL (and nothing kept) when it ran out of memory. */
static char *sb_take(sbuf_t *b) {
  if (b->oom) {
    free(b->s);
    return NULL;
  }
  if (!b->s)
    return strdup("");
  return b->s;
}

/* An identifier for SQL text: as is when PostgreSQL would fold it to itself. */
static void sb_ident(sbuf_t *b, const char *id) {
  int plain = id[0] && (islower((unsigned char)id[0]) || id[0] == '_');

  for (const char *p = id; *p && plain; p++)
    if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '_'))
      plain = 0;
  if (plain) {
    sb_str(b, id);
    return;
  }
  sb_add(b, "\"", 1);
  for (const char *p = id; *p; p++) {
    if (*p == '"')
      sb_add(b, "\"", 1);
    sb_add(b, p, 1);
  }
  sb_add(b, "\"", 1);
}

/* A name at toks[*i], maybe qualified (schema.name). *ours: no schema, or public. */
static char *qualname(const tok_t *t, size_t n, size_t *i, int *ours) {
  char *first, *second;

  if (*i >= n)
    return NULL;
  first = name_of(&t[*i]);
  if (!first)
    return NULL;
  (*i)++;
  *ours = 1;
  if (*i + 1 < n && punct(&t[*i], '.')) {
    second = name_of(&t[*i + 1]);
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
static size_t skip_parens(const tok_t *t, size_t n, size_t i) {
  int depth = 0;

  for (; i < n; i++) {
    if (punct(&t[i], '('))
      depth++;
    else if (punct(&t[i], ')') && --depth == 0)
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
static char *arg_types(const tok_t *t, size_t from, size_t to) {
  sbuf_t out = {0};
  size_t i = from, nargs = 0;

  sb_add(&out, "", 0);
  while (i < to) {
    char *words[16];
    size_t nw = 0, w0 = 0;
    int is_out = 0, depth = 0;
    sbuf_t ty = {0};

    /* One argument: up to a ',' outside parentheses. */
    for (; i < to; i++) {
      if (punct(&t[i], '(')) {
        depth++;
        continue;
      }
      if (punct(&t[i], ')')) {
        depth--;
        continue;
      }
      if (depth > 0)
        continue;
      if (punct(&t[i], ','))
        break;
      if (kw(&t[i], "default") || punct(&t[i], '=')) {
        /* the default: skip to the next top-level ',' */
        for (; i < to; i++) {
          if (punct(&t[i], '('))
            depth++;
          else if (punct(&t[i], ')'))
            depth--;
          else if (depth == 0 && punct(&t[i], ','))
            break;
        }
        break;
      }
      if ((t[i].kind == T_WORD || t[i].kind == T_QWORD) && nw < 16) {
        words[nw] = name_of(&t[i]);
        if (!words[nw])
          out.oom = 1;
        else
          nw++;
      } else if (punct(&t[i], '[') && nw > 0) {
        size_t l = strlen(words[nw - 1]);
        char *w = realloc(words[nw - 1], l + 3);
        if (w) {
          memcpy(w + l, "[]", 3);
          words[nw - 1] = w;
        } else {
          out.oom = 1;
        }
        while (i < to && !punct(&t[i], ']'))
          i++;
      } else if (punct(&t[i], '.') && nw > 0 && i + 1 < to) {
        /* schema.type: kept whole in the last word */
        char *next = name_of(&t[i + 1]);
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
    if (i < to && punct(&t[i], ','))
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
      sb_str(&ty, base);
      for (size_t k = w0 + 1; k < nw; k++) {
        sb_add(&ty, " ", 1);
        sb_str(&ty, words[k]);
      }
      if (arr && nw - w0 == 1)
        sb_add(&ty, "[]", 2);
      if (ty.s) {
        if (nargs++ > 0)
          sb_add(&out, ", ", 2);
        sb_str(&out, ty.s);
      }
      if (ty.oom)
        out.oom = 1;
      free(ty.s);
    }
    for (size_t k = 0; k < nw; k++)
      free(words[k]);
  }
  return sb_take(&out);
}

static void fn_free(fn_t *f) {
  free(f->name);
  free(f->args);
  free(f->body);
  free(f->create);
  free(f->alters);
  free(f->grants);
}

static void trg_free(trg_t *g) {
  free(g->name);
  free(g->table);
  free(g->func);
  free(g->create);
}

static fn_t *fn_find(schema_expect_t *e, const char *name, const char *args) {
  for (size_t i = 0; i < e->nfns; i++)
    if (strcmp(e->fns[i].name, name) == 0 && strcmp(e->fns[i].args, args) == 0)
      return &e->fns[i];
  return NULL;
}

static void fn_remove(schema_expect_t *e, fn_t *f) {
  fn_free(f);
  *f = e->fns[--e->nfns];
}

static trg_t *trg_find(schema_expect_t *e, const char *table, const char *name) {
  for (size_t i = 0; i < e->ntrgs; i++)
    if (strcmp(e->trgs[i].table, table) == 0 && strcmp(e->trgs[i].name, name) == 0)
      return &e->trgs[i];
  return NULL;
}

static void trg_remove(schema_expect_t *e, trg_t *g) {
  trg_free(g);
  *g = e->trgs[--e->ntrgs];
}

/* *list (";\n"-joined) gets stmt added. */
static int append_stmt(char **list, const char *stmt, size_t len) {
  size_t old = *list ? strlen(*list) : 0;
  char *n = realloc(*list, old + len + 3);

  if (!n)
    return -ENOMEM;
  memcpy(n + old, stmt, len);
  memcpy(n + old + len, ";\n", 3);
  *list = n;
  return 0;
}

/* ---- statements -------------------------------------------------------------------------- */

typedef struct stmt {
  const char *src;
  const char *file;
  const tok_t *t;
  size_t n;
  char *err;
  size_t errlen;
} stmt_t;

static int fail(const stmt_t *s, const char *fmt, ...) {
  char msg[200];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  snprintf(s->err, s->errlen, "%s line %zu: %s", s->file, line_of(s->src, s->t[0].start), msg);
  return -1;
}

/* The statement's text from token i to its end. */
static const char *text_from(const stmt_t *s, size_t i, size_t *len) {
  *len = s->t[s->n - 1].end - s->t[i].start;
  return s->src + s->t[i].start;
}

/* CREATE [OR REPLACE] FUNCTION name (args) ... AS $tag$body$tag$ ...; i at FUNCTION. */
static int create_function(schema_expect_t *e, const stmt_t *s, size_t i) {
  const tok_t *t = s->t;
  size_t fkw = i, open, close, len;
  const tok_t *body = NULL;
  int ours, rc = -ENOMEM;
  char *name, *args = NULL;
  const char *text;
  fn_t *f;
  sbuf_t create = {0};

  i++;
  name = qualname(t, s->n, &i, &ours);
  if (!name)
    return fail(s, "CREATE FUNCTION without a name");
  if (!ours) {
    free(name);
    return 0;
  }
  e->creates++;
  if (i >= s->n || !punct(&t[i], '(')) {
    rc = fail(s, "CREATE FUNCTION %s without an argument list", name);
    free(name);
    return rc;
  }
  open = i;
  close = skip_parens(t, s->n, open);
  args = arg_types(t, open + 1, close - 1);
  if (!args)
    goto out;
  for (size_t k = close; k + 1 < s->n; k++)
    if (kw(&t[k], "as")) {
      if (t[k + 1].kind != T_DOLLAR) {
        rc = fail(s, "function %s(%s): only a dollar-quoted body can be checked", name, args);
        goto out;
      }
      body = &t[k + 1];
      break;
    }
  if (!body) {
    rc = fail(s, "function %s(%s): no AS $$...$$ body (a SQL-standard body cannot be checked)",
              name, args);
    goto out;
  }
  f = fn_find(e, name, args);
  if (!f) {
    if (e->nfns == e->capfns) {
      size_t cap = e->capfns ? 2 * e->capfns : 64;
      fn_t *v = realloc(e->fns, cap * sizeof(*v));
      if (!v)
        goto out;
      e->fns = v;
      e->capfns = cap;
    }
    f = &e->fns[e->nfns++];
    memset(f, 0, sizeof(*f));
    f->name = name;
    f->args = args;
    name = args = NULL;
  } else {
    free(f->body);
    free(f->create);
    free(f->alters);
    f->body = f->create = f->alters = NULL;
  }
  f->file = s->file;
  f->body_len = body->len;
  f->body = malloc(body->len + 1);
  if (!f->body)
    goto out;
  memcpy(f->body, body->s, body->len);
  f->body[body->len] = '\0';
  {
    uint8_t md[SHA256_LEN];
    if (sha256_digest(f->body, f->body_len, md) != 0)
      goto out;
    for (unsigned k = 0; k < SHA256_LEN; k++)
      snprintf(f->sha + 2 * k, 3, "%02x", md[k]);
  }
  text = text_from(s, fkw, &len);
  sb_str(&create, "CREATE OR REPLACE ");
  sb_add(&create, text, len);
  f->create = sb_take(&create);
  rc = f->create ? 0 : -ENOMEM;
out:
  free(name);
  free(args);
  return rc;
}

/* name [(args)] at t[*i]: each function of e it names goes to cb. */
typedef int (*fn_cb)(schema_expect_t *e, fn_t *f, const stmt_t *s, void *arg);

static int each_named(schema_expect_t *e, const stmt_t *s, size_t *i, int must, fn_cb cb,
                      void *arg) {
  const tok_t *t = s->t;
  int ours, rc = 0, found = 0;
  char *name = qualname(t, s->n, i, &ours), *args = NULL;

  if (!name)
    return fail(s, "a function name was expected");
  if (*i < s->n && punct(&t[*i], '(')) {
    size_t close = skip_parens(t, s->n, *i);
    args = arg_types(t, *i + 1, close - 1);
    *i = close;
    if (!args) {
      free(name);
      return -ENOMEM;
    }
  }
  if (ours) {
    for (size_t k = 0; k < e->nfns && rc == 0;) {
      fn_t *f = &e->fns[k];
      size_t before = e->nfns;
      if (strcmp(f->name, name) == 0 && (!args || strcmp(f->args, args) == 0)) {
        found = 1;
        rc = cb(e, f, s, arg);
        if (e->nfns < before)
          continue; /* removed: another took its place */
      }
      k++;
    }
    if (rc == 0 && !found && must)
      rc = fail(s, "function %s(%s) is not one the migrations before created", name,
                args ? args : "...");
  }
  free(name);
  free(args);
  return rc;
}

static int drop_cb(schema_expect_t *e, fn_t *f, const stmt_t *s, void *arg) {
  int cascade = *(int *)arg;
  (void)s;
  for (size_t k = 0; cascade && k < e->ntrgs;) {
    if (strcmp(e->trgs[k].func, f->name) == 0)
      trg_remove(e, &e->trgs[k]);
    else
      k++;
  }
  fn_remove(e, f);
  return 0;
}

/* DROP FUNCTION [IF EXISTS] name[(args)] [, ...] [CASCADE | RESTRICT] */
static int drop_function(schema_expect_t *e, const stmt_t *s, size_t i) {
  int if_exists = 0, cascade = kw(&s->t[s->n - 1], "cascade"), rc = 0;

  i++;
  if (kw(&s->t[i], "if") && kw(&s->t[i + 1], "exists")) {
    if_exists = 1;
    i += 2;
  }
  while (rc == 0 && i < s->n && !kw(&s->t[i], "cascade") && !kw(&s->t[i], "restrict")) {
    rc = each_named(e, s, &i, !if_exists, drop_cb, &cascade);
    if (i < s->n && punct(&s->t[i], ','))
      i++;
  }
  return rc;
}

static int alter_cb(schema_expect_t *e, fn_t *f, const stmt_t *s, void *arg) {
  size_t len;
  const char *text = text_from(s, 0, &len);
  (void)e;
  return append_stmt(*(int *)arg ? &f->grants : &f->alters, text, len);
}

/* ALTER FUNCTION name[(args)] action: kept to repeat after a repair's CREATE OR REPLACE. */
static int alter_function(schema_expect_t *e, const stmt_t *s, size_t i) {
  int grants = 0;

  for (size_t k = i + 1; k < s->n; k++)
    if (kw(&s->t[k], "rename") || (kw(&s->t[k], "schema") && kw(&s->t[k - 1], "set")) ||
        kw(&s->t[k], "depends"))
      return fail(s, "ALTER FUNCTION ... %.*s cannot be followed; create a new function instead",
                  (int)s->t[k].len, s->t[k].s);
  i++;
  return each_named(e, s, &i, 1, alter_cb, &grants);
}

/* GRANT|REVOKE ... ON FUNCTION name(args) [, ...] ...: kept, for a function created again. */
static int grant_function(schema_expect_t *e, const stmt_t *s) {
  int grants = 1, rc = 0;
  size_t i = 0;

  while (i + 1 < s->n && !(kw(&s->t[i], "on") && kw(&s->t[i + 1], "function")))
    i++;
  if (i + 1 >= s->n)
    return 0;
  i += 2;
  while (rc == 0 && i < s->n) {
    rc = each_named(e, s, &i, 1, alter_cb, &grants);
    if (i < s->n && punct(&s->t[i], ','))
      i++;
    else
      break;
  }
  return rc;
}

/* CREATE [OR REPLACE] [CONSTRAINT] TRIGGER name {BEFORE|AFTER|INSTEAD OF} event [OR ...]
 * ON table ... EXECUTE {FUNCTION|PROCEDURE} func(...); i at TRIGGER. */
static int create_trigger(schema_expect_t *e, const stmt_t *s, size_t i) {
  const tok_t *t = s->t;
  int type = 0, ours, fours, rc = -ENOMEM;
  char *name = NULL, *table = NULL, *func = NULL;
  size_t len;
  const char *text;
  trg_t *g;

  i++;
  name = name_of(&t[i++]);
  if (!name)
    return fail(s, "CREATE TRIGGER without a name");
  if (kw(&t[i], "before"))
    type |= TG_BEFORE;
  else if (kw(&t[i], "instead"))
    type |= TG_INSTEAD, i++;
  else if (!kw(&t[i], "after")) {
    rc = fail(s, "trigger %s: BEFORE, AFTER or INSTEAD OF expected", name);
    goto out;
  }
  for (i++; i < s->n && !kw(&t[i], "on"); i++) {
    if (kw(&t[i], "insert"))
      type |= TG_INSERT;
    else if (kw(&t[i], "delete"))
      type |= TG_DELETE;
    else if (kw(&t[i], "update"))
      type |= TG_UPDATE;
    else if (kw(&t[i], "truncate"))
      type |= TG_TRUNCATE;
    else if (kw(&t[i], "of")) /* UPDATE OF col, ...: the columns are not compared */
      while (i + 1 < s->n && !kw(&t[i + 1], "on") && !kw(&t[i + 1], "or"))
        i++;
  }
  i++;
  table = qualname(t, s->n, &i, &ours);
  if (!table) {
    rc = fail(s, "trigger %s: no table", name);
    goto out;
  }
  if (!ours) {
    rc = 0;
    goto out;
  }
  for (; i < s->n; i++) {
    if (punct(&t[i], '(')) { /* WHEN (...) */
      i = skip_parens(t, s->n, i) - 1;
      continue;
    }
    if (kw(&t[i], "row") && kw(&t[i - 1], "each"))
      type |= TG_ROW;
    if (kw(&t[i], "execute") && i + 2 < s->n) {
      i += 2;
      func = qualname(t, s->n, &i, &fours);
      break;
    }
  }
  if (!func) {
    rc = fail(s, "trigger %s: no EXECUTE FUNCTION", name);
    goto out;
  }
  g = trg_find(e, table, name);
  if (g) {
    trg_free(g);
  } else {
    if (e->ntrgs == e->captrgs) {
      size_t cap = e->captrgs ? 2 * e->captrgs : 16;
      trg_t *v = realloc(e->trgs, cap * sizeof(*v));
      if (!v)
        goto out;
      e->trgs = v;
      e->captrgs = cap;
    }
    g = &e->trgs[e->ntrgs++];
  }
  memset(g, 0, sizeof(*g));
  g->name = name;
  g->table = table;
  g->func = func;
  name = table = func = NULL;
  g->tgtype = type;
  g->enabled = 'O';
  g->file = s->file;
  text = text_from(s, 0, &len);
  g->create = malloc(len + 1);
  if (!g->create)
    goto out;
  memcpy(g->create, text, len);
  g->create[len] = '\0';
  rc = 0;
out:
  free(name);
  free(table);
  free(func);
  return rc;
}

/* DROP TRIGGER [IF EXISTS] name ON table */
static int drop_trigger(schema_expect_t *e, const stmt_t *s, size_t i) {
  int if_exists = 0, ours, rc = 0;
  char *name, *table;
  trg_t *g;

  i++;
  if (kw(&s->t[i], "if") && kw(&s->t[i + 1], "exists")) {
    if_exists = 1;
    i += 2;
  }
  name = name_of(&s->t[i++]);
  if (!name || !kw(&s->t[i], "on")) {
    free(name);
    return fail(s, "DROP TRIGGER name ON table expected");
  }
  i++;
  table = qualname(s->t, s->n, &i, &ours);
  if (!table) {
    free(name);
    return fail(s, "DROP TRIGGER name ON table expected");
  }
  if (ours) {
    g = trg_find(e, table, name);
    if (g)
      trg_remove(e, g);
    else if (!if_exists)
      rc = fail(s, "trigger %s on %s is not one the migrations before created", name, table);
  }
  free(name);
  free(table);
  return rc;
}

/* ALTER TABLE [IF EXISTS] [ONLY] table action [, ...]: ENABLE/DISABLE TRIGGER, RENAME TO. */
static int alter_table(schema_expect_t *e, const stmt_t *s, size_t i) {
  const tok_t *t = s->t;
  int ours;
  char *table;

  i++;
  if (kw(&t[i], "if") && kw(&t[i + 1], "exists"))
    i += 2;
  if (kw(&t[i], "only"))
    i++;
  table = qualname(t, s->n, &i, &ours);
  if (!table)
    return fail(s, "ALTER TABLE without a table");
  if (!ours) {
    free(table);
    return 0;
  }
  while (i < s->n) {
    char state = 0;
    if (kw(&t[i], "rename") && kw(&t[i + 1], "to")) {
      char *to = name_of(&t[i + 2]);
      if (!to) {
        free(table);
        return -ENOMEM;
      }
      for (size_t k = 0; k < e->ntrgs; k++)
        if (strcmp(e->trgs[k].table, table) == 0) {
          char *d = strdup(to);
          if (!d) {
            free(to);
            free(table);
            return -ENOMEM;
          }
          free(e->trgs[k].table);
          e->trgs[k].table = d;
        }
      free(to);
      break;
    }
    if (kw(&t[i], "enable")) {
      state = 'O';
      if (kw(&t[i + 1], "replica"))
        state = 'R', i++;
      else if (kw(&t[i + 1], "always"))
        state = 'A', i++;
    } else if (kw(&t[i], "disable")) {
      state = 'D';
    }
    if (state && kw(&t[i + 1], "trigger") && i + 2 < s->n) {
      const tok_t *which = &t[i + 2];
      int all = kw(which, "all") || kw(which, "user");
      char *name = all ? NULL : name_of(which);
      for (size_t k = 0; k < e->ntrgs; k++)
        if (strcmp(e->trgs[k].table, table) == 0 && (all || strcmp(e->trgs[k].name, name) == 0))
          e->trgs[k].enabled = state;
      free(name);
      i += 3;
      continue;
    }
    i++;
  }
  free(table);
  return 0;
}

/* DROP TABLE [IF EXISTS] t [, ...]: its triggers go with it. */
static int drop_table(schema_expect_t *e, const stmt_t *s, size_t i) {
  int ours;

  i++;
  if (kw(&s->t[i], "if") && kw(&s->t[i + 1], "exists"))
    i += 2;
  while (i < s->n && !kw(&s->t[i], "cascade") && !kw(&s->t[i], "restrict")) {
    char *table = qualname(s->t, s->n, &i, &ours);
    if (!table)
      return fail(s, "DROP TABLE without a table");
    for (size_t k = 0; ours && k < e->ntrgs;)
      if (strcmp(e->trgs[k].table, table) == 0)
        trg_remove(e, &e->trgs[k]);
      else
        k++;
    free(table);
    if (i < s->n && punct(&s->t[i], ','))
      i++;
  }
  return 0;
}

static int statement(schema_expect_t *e, const stmt_t *s) {
  const tok_t *t = s->t;
  size_t i = 1;

  if (kw(&t[0], "create")) {
    if (kw(&t[i], "or") && kw(&t[i + 1], "replace"))
      i += 2;
    if (kw(&t[i], "function"))
      return create_function(e, s, i);
    if (kw(&t[i], "constraint"))
      i++;
    if (kw(&t[i], "trigger"))
      return create_trigger(e, s, i);
    return 0;
  }
  if (kw(&t[0], "drop")) {
    if (kw(&t[1], "function"))
      return drop_function(e, s, 1);
    if (kw(&t[1], "trigger"))
      return drop_trigger(e, s, 1);
    if (kw(&t[1], "table"))
      return drop_table(e, s, 1);
    if (kw(&t[1], "schema") || kw(&t[1], "owned"))
      return fail(s, "DROP %.*s cannot be followed", (int)t[1].len, t[1].s);
    return 0;
  }
  if (kw(&t[0], "alter")) {
    if (kw(&t[1], "function"))
      return alter_function(e, s, 1);
    if (kw(&t[1], "table"))
      return alter_table(e, s, 1);
    if (kw(&t[1], "trigger"))
      return fail(s, "ALTER TRIGGER cannot be followed; drop and create the trigger instead");
    return 0;
  }
  if (kw(&t[0], "grant") || kw(&t[0], "revoke"))
    return grant_function(e, s);
  return 0;
}

/* ---- the expectation --------------------------------------------------------------------- */

schema_expect_t *schema_expect_new(void) {
  return calloc(1, sizeof(schema_expect_t));
}

void schema_expect_free(schema_expect_t *e) {
  if (!e)
    return;
  for (size_t i = 0; i < e->nfns; i++)
    fn_free(&e->fns[i]);
  for (size_t i = 0; i < e->ntrgs; i++)
    trg_free(&e->trgs[i]);
  for (size_t i = 0; i < e->nfiles; i++)
    free(e->files[i]);
  free(e->files);
  free(e->fns);
  free(e->trgs);
  free(e);
}

int schema_expect_add(schema_expect_t *e, const char *file, const char *sql, size_t len, char *err,
                      size_t errlen) {
  lexer_t lx = {.src = sql, .len = len};
  long long v = strtoll(file, NULL, 10);
  char **files = realloc(e->files, (e->nfiles + 1) * sizeof(*files));
  int rc;

  if (!files)
    return -ENOMEM;
  e->files = files;
  if ((file = files[e->nfiles] = strdup(file)) == NULL)
    return -ENOMEM;
  e->nfiles++;
  if (v > e->version)
    e->version = v;
  while ((rc = next_statement(&lx, err, errlen)) == 1) {
    stmt_t s = {sql, file, lx.toks, lx.ntoks, err, errlen};
    rc = statement(e, &s);
    if (rc != 0)
      break;
  }
  if (rc == -1 && err && strncmp(err, file, strlen(file)) != 0) {
    char tmp[256];
    snprintf(tmp, sizeof(tmp), "%s", err);
    snprintf(err, errlen, "%s %s", file, tmp);
  }
  free(lx.toks);
  return rc;
}

long long schema_expect_version(const schema_expect_t *e) {
  return e->version;
}

size_t schema_expect_creates(const schema_expect_t *e) {
  return e->creates;
}

size_t schema_expect_nfunctions(const schema_expect_t *e) {
  return e->nfns;
}

void schema_expect_function(const schema_expect_t *e, size_t i, const char **name,
                            const char **args, const char **body, size_t *body_len,
                            const char **file) {
  const fn_t *f = &e->fns[i];
  if (name)
    *name = f->name;
  if (args)
    *args = f->args;
  if (body)
    *body = f->body;
  if (body_len)
    *body_len = f->body_len;
  if (file)
    *file = f->file;
}

size_t schema_expect_ntriggers(const schema_expect_t *e) {
  return e->ntrgs;
}

void schema_expect_trigger(const schema_expect_t *e, size_t i, const char **name,
                           const char **table, const char **func, int *tgtype, char *enabled) {
  const trg_t *g = &e->trgs[i];
  if (name)
    *name = g->name;
  if (table)
    *table = g->table;
  if (func)
    *func = g->func;
  if (tgtype)
    *tgtype = g->tgtype;
  if (enabled)
    *enabled = g->enabled;
}

/* ---- the comparison ---------------------------------------------------------------------- */

typedef struct diffs {
  schema_diff_t *v;
  size_t n, cap;
  int oom;
} diffs_t;

static void diff_add(diffs_t *d, sbuf_t *msg, sbuf_t *repair) {
  char *m = sb_take(msg), *r = sb_take(repair);

  if (!m || !r || d->oom) {
    free(m);
    free(r);
    d->oom = 1;
    return;
  }
  if (d->n == d->cap) {
    size_t cap = d->cap ? 2 * d->cap : 8;
    schema_diff_t *v = realloc(d->v, cap * sizeof(*v));
    if (!v) {
      free(m);
      free(r);
      d->oom = 1;
      return;
    }
    d->v = v;
    d->cap = cap;
  }
  d->v[d->n++] = (schema_diff_t){m, r};
}

static void events_text(sbuf_t *b, int type) {
  static const struct {
    int bit;
    const char *name;
  } ev[] = {{TG_INSERT, "INSERT"},
            {TG_UPDATE, "UPDATE"},
            {TG_DELETE, "DELETE"},
            {TG_TRUNCATE, "TRUNCATE"}};
  int first = 1;

  sb_str(b, type & TG_BEFORE ? "BEFORE " : type & TG_INSTEAD ? "INSTEAD OF " : "AFTER ");
  for (size_t i = 0; i < sizeof(ev) / sizeof(ev[0]); i++)
    if (type & ev[i].bit) {
      if (!first)
        sb_str(b, " OR ");
      sb_str(b, ev[i].name);
      first = 0;
    }
  sb_str(b, type & TG_ROW ? " FOR EACH ROW" : " FOR EACH STATEMENT");
}

static const char *enabled_text(char c) {
  switch (c) {
  case 'O':
    return "enabled";
  case 'D':
    return "disabled";
  case 'R':
    return "enabled for replication sessions only (ENABLE REPLICA)";
  case 'A':
    return "enabled always (ENABLE ALWAYS)";
  default:
    return "in an unknown state";
  }
}

static void enable_sql(sbuf_t *b, const trg_t *g) {
  sb_str(b, "ALTER TABLE ");
  sb_ident(b, g->table);
  sb_str(b, g->enabled == 'D'   ? " DISABLE TRIGGER "
            : g->enabled == 'R' ? " ENABLE REPLICA TRIGGER "
            : g->enabled == 'A' ? " ENABLE ALWAYS TRIGGER "
                                : " ENABLE TRIGGER ");
  sb_ident(b, g->name);
  sb_str(b, ";\n");
}

static void fn_repair(sbuf_t *b, const fn_t *f) {
  sb_str(b, f->create);
  sb_str(b, ";\n");
  if (f->alters)
    sb_str(b, f->alters);
  if (f->grants)
    sb_str(b, f->grants);
}

static int name_is_ours(const schema_expect_t *e, const char *name) {
  for (size_t i = 0; i < e->nfns; i++)
    if (strcmp(e->fns[i].name, name) == 0)
      return 1;
  return 0;
}

int schema_compare(const schema_expect_t *e, const schema_row_t *rows, size_t nrows,
                   schema_diff_t **out, size_t *nout, long long *newer) {
  diffs_t d = {0};
  unsigned char *fseen = calloc(e->nfns + 1, 1), *tseen = calloc(e->ntrgs + 1, 1);

  if (newer)
    *newer = 0;
  if (!fseen || !tseen) {
    free(fseen);
    free(tseen);
    return -ENOMEM;
  }
  /* Overloads of clued's names that no migration defines. */
  for (size_t r = 0; r < nrows; r++) {
    const schema_row_t *row = &rows[r];
    const fn_t *f;
    sbuf_t m = {0}, rep = {0};

    if (row->kind == 'v' && row->args && newer && strtoll(row->args, NULL, 10) > e->version)
      *newer = strtoll(row->args, NULL, 10);
    if (row->kind != 'f' || !row->name || !row->args || !name_is_ours(e, row->name))
      continue;
    f = fn_find((schema_expect_t *)e, row->name, row->args);
    if (f) {
      fseen[f - e->fns] = 1;
      continue;
    }
    for (size_t i = 0; i < e->nfns; i++)
      if (strcmp(e->fns[i].name, row->name) == 0) {
        f = &e->fns[i];
        break;
      }
    sb_printf(&m,
              "function %s(%s) is not defined by the migrations, but has the name of clued's "
              "%s(%s) of %s: an overload that may capture its calls",
              row->name, row->args, f->name, f->args, f->file);
    sb_printf(&rep, "DROP FUNCTION %s;\n", row->ident ? row->ident : row->name);
    diff_add(&d, &m, &rep);
  }
  /* clued's functions: the body each migration left, or missing. */
  for (size_t r = 0; r < nrows; r++) {
    const schema_row_t *row = &rows[r];
    const fn_t *f;
    sbuf_t m = {0}, rep = {0};

    if (row->kind != 'f' || !row->name || !row->args)
      continue;
    f = fn_find((schema_expect_t *)e, row->name, row->args);
    if (!f || strcmp(f->sha, row->hash ? row->hash : "") == 0)
      continue;
    sb_printf(&m,
              "function %s(%s) differs from its definition in %s: it was replaced outside "
              "migrations",
              f->name, f->args, f->file);
    fn_repair(&rep, f);
    diff_add(&d, &m, &rep);
  }
  for (size_t i = 0; i < e->nfns; i++) {
    sbuf_t m = {0}, rep = {0};
    if (fseen[i])
      continue;
    sb_printf(&m, "function %s(%s) of %s is missing: it was dropped outside migrations",
              e->fns[i].name, e->fns[i].args, e->fns[i].file);
    fn_repair(&rep, &e->fns[i]);
    diff_add(&d, &m, &rep);
  }
  /* clued's triggers. */
  for (size_t r = 0; r < nrows; r++) {
    const schema_row_t *row = &rows[r];
    trg_t *g;
    sbuf_t m = {0}, rep = {0};
    const char *func = row->hash ? row->hash : "";

    if (row->kind != 't' || !row->name || !row->args)
      continue;
    g = trg_find((schema_expect_t *)e, row->args, row->name);
    if (!g)
      continue;
    tseen[g - e->trgs] = 1;
    if (strcmp(g->func, func) != 0 || g->tgtype != row->tgtype) {
      sb_printf(&m, "trigger %s on %s differs from its definition in %s: it ", g->name, g->table,
                g->file);
      if (strcmp(g->func, func) != 0)
        sb_printf(&m, "calls %s instead of %s", func, g->func);
      if (strcmp(g->func, func) != 0 && g->tgtype != row->tgtype)
        sb_str(&m, ", and ");
      if (g->tgtype != row->tgtype) {
        sb_str(&m, "fires ");
        events_text(&m, row->tgtype);
        sb_str(&m, " instead of ");
        events_text(&m, g->tgtype);
      }
      sb_str(&m, ": it was replaced outside migrations");
      sb_str(&rep, "DROP TRIGGER ");
      sb_ident(&rep, g->name);
      sb_str(&rep, " ON ");
      sb_ident(&rep, g->table);
      sb_str(&rep, ";\n");
      sb_str(&rep, g->create);
      sb_str(&rep, ";\n");
      if (g->enabled != 'O')
        enable_sql(&rep, g);
      diff_add(&d, &m, &rep);
    } else if (g->enabled != row->enabled) {
      sb_printf(&m, "trigger %s on %s of %s is %s, but its migrations leave it %s", g->name,
                g->table, g->file, enabled_text(row->enabled), enabled_text(g->enabled));
      enable_sql(&rep, g);
      diff_add(&d, &m, &rep);
    }
  }
  for (size_t i = 0; i < e->ntrgs; i++) {
    sbuf_t m = {0}, rep = {0};
    if (tseen[i])
      continue;
    sb_printf(&m, "trigger %s on %s of %s is missing: it was dropped outside migrations",
              e->trgs[i].name, e->trgs[i].table, e->trgs[i].file);
    sb_str(&rep, e->trgs[i].create);
    sb_str(&rep, ";\n");
    if (e->trgs[i].enabled != 'O')
      enable_sql(&rep, &e->trgs[i]);
    diff_add(&d, &m, &rep);
  }
  free(fseen);
  free(tseen);
  if (d.oom) {
    schema_diffs_free(d.v, d.n);
    return -ENOMEM;
  }
  *out = d.v;
  *nout = d.n;
  return 0;
}

void schema_diffs_free(schema_diff_t *d, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(d[i].message);
    free(d[i].repair);
  }
  free(d);
}
