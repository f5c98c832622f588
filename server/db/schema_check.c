/* Reading the migrations for the functions and triggers they leave, and judging the catalog's
 * rows against them. A small SQL lexer (db/sql_lex.c) splits each file into statements; a
 * handful of statement shapes matter, the rest are skipped. */

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
#include "db/sql_lex.h"

const char schema_catalog_sql[] =
    "SELECT 'f'::text, p.proname::text, pg_catalog.oidvectortypes(p.proargtypes),"
    " p.oid::pg_catalog.regprocedure::text,"
    " pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(p.prosrc, 'UTF8')), 'hex'),"
    " NULL::text, NULL::text,"
    " p.provolatile::text || p.proparallel::text"
    " || CASE WHEN p.proisstrict THEN 't' ELSE 'f' END"
    " || CASE WHEN p.prosecdef THEN 't' ELSE 'f' END"
    " || CASE WHEN p.proleakproof THEN 't' ELSE 'f' END"
    " || CASE WHEN p.proretset THEN 't' ELSE 'f' END"
    " || ' ' || l.lanname::text || ' ' || pg_catalog.format_type(p.prorettype, NULL),"
    " (SELECT pg_catalog.string_agg(g, E'\\n' ORDER BY g COLLATE \"C\")"
    " FROM pg_catalog.unnest(p.proconfig) g)"
    " FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang"
    " WHERE p.pronamespace = 'public'::pg_catalog.regnamespace"
    " UNION ALL"
    " SELECT 't', t.tgname::text, c.relname::text, NULL,"
    " CASE WHEN f.pronamespace = 'public'::pg_catalog.regnamespace THEN f.proname::text"
    " ELSE f.oid::pg_catalog.regprocedure::text END,"
    " t.tgtype::int::text, t.tgenabled::text,"
    " (SELECT pg_catalog.string_agg(a.attname::text, ', ' ORDER BY a.attname::text COLLATE \"C\")"
    " FROM pg_catalog.pg_attribute a"
    " WHERE a.attrelid = t.tgrelid AND a.attnum = ANY (t.tgattr::pg_catalog.int2[])),"
    " CASE WHEN t.tgqual IS NOT NULL THEN pg_catalog.substring(pg_catalog.pg_get_triggerdef(t.oid),"
    " ' WHEN \\((.*)\\) EXECUTE (FUNCTION|PROCEDURE) ') END"
    " FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid"
    " JOIN pg_catalog.pg_proc f ON f.oid = t.tgfoid"
    " WHERE c.relnamespace = 'public'::pg_catalog.regnamespace AND NOT t.tgisinternal"
    " UNION ALL"
    " SELECT 'r', r.rulename::text, c.relname::text,"
    " pg_catalog.quote_ident(r.rulename) || ' ON ' || c.oid::pg_catalog.regclass::text, NULL,"
    " NULL, NULL,"
    " 'ON ' || CASE r.ev_type WHEN '1' THEN 'SELECT' WHEN '2' THEN 'UPDATE' WHEN '3' THEN 'INSERT'"
    " ELSE 'DELETE' END || CASE WHEN r.is_instead THEN ' DO INSTEAD' ELSE ' DO ALSO' END, NULL"
    " FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_class c ON c.oid = r.ev_class"
    " WHERE c.relnamespace = 'public'::pg_catalog.regnamespace"
    " AND NOT (r.rulename = '_RETURN' AND c.relkind IN ('v', 'm'))"
    " UNION ALL"
    " SELECT 'g', p.proname::text, pg_catalog.oidvectortypes(p.proargtypes),"
    " p.oid::pg_catalog.regprocedure::text,"
    " CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::pg_catalog.regrole::text END,"
    " NULL, NULL,"
    " CASE WHEN a.grantor <> p.proowner THEN a.grantor::pg_catalog.regrole::text END, NULL"
    " FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(COALESCE(p.proacl,"
    " pg_catalog.acldefault('f', p.proowner))) a"
    " WHERE p.pronamespace = 'public'::pg_catalog.regnamespace AND a.privilege_type = 'EXECUTE'"
    " AND a.grantee <> p.proowner"
    " AND a.grantee IS DISTINCT FROM pg_catalog.to_regrole('clued_runtime')::pg_catalog.oid"
    " UNION ALL"
    " SELECT 'v', NULL, max(version)::text, NULL, NULL, NULL, NULL, NULL, NULL"
    " FROM public.schema_migrations"
    " UNION ALL"
    " SELECT 's', 'session_replication_role',"
    " pg_catalog.current_setting('session_replication_role'), NULL, NULL, NULL, NULL, NULL, NULL";

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
  /* Its attributes, as its last CREATE and the ALTER FUNCTION statements since leave them. */
  char *lang, *rettype; /* rettype as format_type() prints it */
  char vol, parallel;   /* pg_proc's provolatile, proparallel */
  unsigned char strict, secdef, leakproof, retset;
  char **config; /* "name=value" as pg_proc.proconfig has them, in order */
  size_t nconfig;
  char *attrs_text, *config_text; /* the above in schema_row_t's forms */
} fn_t;

typedef struct trg {
  char *name, *table, *func;
  int tgtype;
  char enabled;
  char *columns;   /* UPDATE OF columns, sorted and ", "-joined; "" for none */
  char *when;      /* the WHEN condition as written, or NULL */
  char *when_norm; /* its words, for comparing with what pg_get_triggerdef() prints */
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

static void config_clear(fn_t *f) {
  for (size_t k = 0; k < f->nconfig; k++)
    free(f->config[k]);
  free(f->config);
  f->config = NULL;
  f->nconfig = 0;
}

/* A function's attributes back to CREATE FUNCTION's defaults, as a CREATE OR REPLACE sets
 * every one of them to what it says. */
static void attrs_reset(fn_t *f) {
  free(f->lang);
  free(f->rettype);
  f->lang = f->rettype = NULL;
  f->vol = 'v';
  f->parallel = 'u';
  f->strict = f->secdef = f->leakproof = f->retset = 0;
  config_clear(f);
}

static void fn_free(fn_t *f) {
  free(f->name);
  free(f->args);
  free(f->body);
  free(f->create);
  free(f->alters);
  free(f->grants);
  attrs_reset(f);
  free(f->attrs_text);
  free(f->config_text);
}

static void trg_free(trg_t *g) {
  free(g->name);
  free(g->table);
  free(g->func);
  free(g->columns);
  free(g->when);
  free(g->when_norm);
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
  const sql_tok_t *t;
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
  snprintf(s->err, s->errlen, "%s line %zu: %s", s->file, sql_line_of(s->src, s->t[0].start), msg);
  return -1;
}

/* The statement's text from token i to its end. */
static const char *text_from(const stmt_t *s, size_t i, size_t *len) {
  *len = s->t[s->n - 1].end - s->t[i].start;
  return s->src + s->t[i].start;
}

/* ---- function attributes ------------------------------------------------------------------ */

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* f's attributes in schema_row_t's forms, after each statement that changes them. */
static int attrs_render(fn_t *f) {
  sql_buf_t a = {0}, c = {0};
  char **sorted = f->nconfig ? malloc(f->nconfig * sizeof(*sorted)) : NULL;

  if (f->nconfig && !sorted)
    return -ENOMEM;
  sql_buf_printf(&a, "%c%c%c%c%c%c %s %s", f->vol, f->parallel, f->strict ? 't' : 'f',
                 f->secdef ? 't' : 'f', f->leakproof ? 't' : 'f', f->retset ? 't' : 'f',
                 f->lang ? f->lang : "", f->rettype ? f->rettype : "");
  if (f->nconfig) {
    memcpy(sorted, f->config, f->nconfig * sizeof(*sorted));
    qsort(sorted, f->nconfig, sizeof(*sorted), cmp_str);
  }
  sql_buf_add(&c, "", 0);
  for (size_t k = 0; k < f->nconfig; k++) {
    if (k > 0)
      sql_buf_add(&c, "\n", 1);
    sql_buf_str(&c, sorted[k]);
  }
  free(sorted);
  free(f->attrs_text);
  free(f->config_text);
  f->attrs_text = sql_buf_take(&a);
  f->config_text = sql_buf_take(&c);
  return f->attrs_text && f->config_text ? 0 : -ENOMEM;
}

/* SET name = value: name's entry replaced in place or added at the end, as PostgreSQL's
 * GUCArrayAdd() does; value NULL removes it (RESET name, SET name TO DEFAULT). */
static int config_set(fn_t *f, const char *name, const char *value) {
  size_t nl = strlen(name), k;
  char *entry = NULL, **v;

  for (k = 0; k < f->nconfig; k++)
    if (strncmp(f->config[k], name, nl) == 0 && f->config[k][nl] == '=')
      break;
  if (!value) {
    if (k < f->nconfig) {
      free(f->config[k]);
      memmove(&f->config[k], &f->config[k + 1], (f->nconfig - k - 1) * sizeof(*f->config));
      f->nconfig--;
    }
    return 0;
  }
  entry = malloc(nl + strlen(value) + 2);
  if (!entry)
    return -ENOMEM;
  sprintf(entry, "%s=%s", name, value);
  if (k < f->nconfig) {
    free(f->config[k]);
    f->config[k] = entry;
    return 0;
  }
  v = realloc(f->config, (f->nconfig + 1) * sizeof(*v));
  if (!v) {
    free(entry);
    return -ENOMEM;
  }
  f->config = v;
  f->config[f->nconfig++] = entry;
  return 0;
}

/* Settings whose values PostgreSQL keeps as a list of quoted identifiers (GUC_LIST_QUOTE). */
static int list_quoted(const char *name) {
  return strcmp(name, "search_path") == 0 || strcmp(name, "temp_tablespaces") == 0 ||
         strcmp(name, "session_preload_libraries") == 0 ||
         strcmp(name, "local_preload_libraries") == 0 ||
         strcmp(name, "shared_preload_libraries") == 0;
}

/* SET name {= | TO} value [, ...] | SET name FROM CURRENT | RESET {name | ALL}, at t[*i] (SET or
 * RESET): f's settings changed as PostgreSQL flattens them into proconfig. */
static int set_clause(fn_t *f, const stmt_t *s, size_t *i) {
  const sql_tok_t *t = s->t;
  int reset = sql_kw(&t[*i], "reset"), rc;
  sql_buf_t name = {0}, value = {0};
  size_t k = *i + 1;

  if (reset && sql_kw(&t[k], "all")) {
    config_clear(f);
    *i = k + 1;
    return 0;
  }
  for (;;) {
    char *w = sql_name_of(&t[k]);
    if (!w) {
      free(name.s);
      return fail(s, "function %s(%s): SET or RESET without a setting's name", f->name, f->args);
    }
    sql_buf_str(&name, w);
    free(w);
    k++;
    if (!sql_punct(&t[k], '.'))
      break;
    sql_buf_add(&name, ".", 1);
    k++;
  }
  if (name.oom)
    return -ENOMEM;
  if (reset) {
    rc = config_set(f, name.s, NULL);
    free(name.s);
    *i = k;
    return rc;
  }
  if (!sql_kw(&t[k], "to") && !sql_punct(&t[k], '=')) {
    rc = fail(s, "function %s(%s): SET %s %.*s cannot be followed", f->name, f->args, name.s,
              (int)t[k].len, t[k].s);
    free(name.s);
    return rc;
  }
  k++;
  if (sql_kw(&t[k], "default")) {
    rc = config_set(f, name.s, NULL);
    free(name.s);
    *i = k + 1;
    return rc;
  }
  sql_buf_add(&value, "", 0);
  for (int first = 1;; first = 0) {
    const sql_tok_t *v = &t[k];
    char *w = NULL;
    int neg = 0;

    if (!first)
      sql_buf_add(&value, ", ", 2);
    if (sql_punct(v, '-') && t[k + 1].kind == SQL_NUM) {
      neg = 1;
      v = &t[++k];
    }
    if (v->kind == SQL_NUM) {
      char *end;
      long long n = strtoll(v->s, &end, 10);
      if (neg)
        sql_buf_add(&value, "-", 1);
      if (end == v->s + v->len) /* an integer constant is printed again, "010" as 10 */
        sql_buf_printf(&value, "%lld", n);
      else
        sql_buf_add(&value, v->s, v->len);
    } else if (v->kind == SQL_WORD || v->kind == SQL_QWORD ||
               (v->kind == SQL_STR && v->s[0] == '\'')) {
      if (v->kind == SQL_STR) {
        w = malloc(v->len);
        if (w) {
          size_t n = 0;
          for (size_t c = 1; c + 1 < v->len; c++) {
            w[n++] = v->s[c];
            if (v->s[c] == '\'')
              c++; /* '' */
          }
          w[n] = '\0';
        }
      } else {
        w = sql_name_of(v);
      }
      if (!w) {
        free(name.s);
        free(value.s);
        return -ENOMEM;
      }
      if (list_quoted(name.s))
        sql_buf_ident(&value, w);
      else
        sql_buf_str(&value, w);
      free(w);
    } else {
      rc = fail(s, "function %s(%s): the value of SET %s cannot be followed", f->name, f->args,
                name.s);
      free(name.s);
      free(value.s);
      return rc;
    }
    k++;
    if (!sql_punct(&t[k], ','))
      break;
    k++;
  }
  rc = name.oom || value.oom ? -ENOMEM : config_set(f, name.s, value.s);
  free(name.s);
  free(value.s);
  *i = k;
  return rc;
}

/* The option of CREATE or ALTER FUNCTION at t[*i], past it: 1 when it is one, 0 when it is not,
 * -1 (in err) when it cannot be followed, or -ENOMEM. */
static int fn_option(fn_t *f, const stmt_t *s, size_t *i) {
  const sql_tok_t *t = s->t;
  size_t k = *i;

  if (sql_kw(&t[k], "immutable") || sql_kw(&t[k], "stable") || sql_kw(&t[k], "volatile")) {
    f->vol = (char)tolower((unsigned char)t[k].s[0]);
    *i = k + 1;
  } else if (sql_kw(&t[k], "strict")) {
    f->strict = 1;
    *i = k + 1;
  } else if (sql_kw(&t[k], "called") && sql_kw(&t[k + 1], "on")) {
    f->strict = 0;
    *i = k + 4; /* CALLED ON NULL INPUT */
  } else if (sql_kw(&t[k], "returns") && sql_kw(&t[k + 1], "null") && sql_kw(&t[k + 2], "on")) {
    f->strict = 1;
    *i = k + 5; /* RETURNS NULL ON NULL INPUT */
  } else if (sql_kw(&t[k], "leakproof")) {
    f->leakproof = 1;
    *i = k + 1;
  } else if (sql_kw(&t[k], "not") && sql_kw(&t[k + 1], "leakproof")) {
    f->leakproof = 0;
    *i = k + 2;
  } else if (sql_kw(&t[k], "external") && sql_kw(&t[k + 1], "security")) {
    *i = k + 1;
  } else if (sql_kw(&t[k], "security") &&
             (sql_kw(&t[k + 1], "definer") || sql_kw(&t[k + 1], "invoker"))) {
    f->secdef = sql_kw(&t[k + 1], "definer");
    *i = k + 2;
  } else if (sql_kw(&t[k], "parallel") &&
             (sql_kw(&t[k + 1], "safe") || sql_kw(&t[k + 1], "restricted") ||
              sql_kw(&t[k + 1], "unsafe"))) {
    f->parallel = (char)tolower((unsigned char)t[k + 1].s[0]);
    *i = k + 2;
  } else if ((sql_kw(&t[k], "cost") || sql_kw(&t[k], "rows")) && t[k + 1].kind == SQL_NUM) {
    *i = k + 2; /* the planner's estimates: not compared */
  } else if (sql_kw(&t[k], "set") || sql_kw(&t[k], "reset")) {
    return set_clause(f, s, i) == 0 ? 1 : -1;
  } else if (sql_kw(&t[k], "support") || sql_kw(&t[k], "window") || sql_kw(&t[k], "transform")) {
    return fail(s, "function %s(%s): %.*s cannot be followed", f->name, f->args, (int)t[k].len,
                t[k].s);
  } else {
    return 0;
  }
  return 1;
}

/* RETURNS [SETOF] type | RETURNS TABLE (...) at t[*i] (RETURNS), past it. */
static int returns_clause(fn_t *f, const stmt_t *s, size_t *i) {
  const sql_tok_t *t = s->t;
  static const char *const more[] = {"precision", "varying", "with", "without", "time", "zone"};
  size_t k = *i + 1, from;

  if (f->rettype) /* PostgreSQL: "conflicting or redundant options" */
    return fail(s, "function %s(%s): RETURNS given twice", f->name, f->args);
  if (sql_kw(&t[k], "table") && sql_punct(&t[k + 1], '(')) {
    size_t close = sql_skip_parens(t, s->n, k + 1);
    char *cols = sql_arg_types(t, k + 2, close - 1);
    if (!cols)
      return -ENOMEM;
    f->retset = 1;
    /* One column is returned as its type, more as a record. */
    f->rettype = strchr(cols, ',') ? strdup("record") : strdup(cols);
    free(cols);
    *i = close;
    return f->rettype ? 0 : -ENOMEM;
  }
  if (sql_kw(&t[k], "setof")) {
    f->retset = 1;
    k++;
  }
  from = k;
  if (t[k].kind != SQL_WORD && t[k].kind != SQL_QWORD)
    return fail(s, "function %s(%s): RETURNS without a type", f->name, f->args);
  k++;
  if (sql_punct(&t[k], '.'))
    k += 2;
  for (int again = 1; again;) {
    again = 0;
    for (size_t m = 0; m < sizeof(more) / sizeof(more[0]); m++)
      if (sql_kw(&t[k], more[m])) {
        k++;
        again = 1;
      }
  }
  if (sql_punct(&t[k], '%'))
    return fail(s, "function %s(%s): RETURNS ...%%TYPE cannot be followed", f->name, f->args);
  if (sql_punct(&t[k], '('))
    k = sql_skip_parens(t, s->n, k);
  while (sql_punct(&t[k], '[') && sql_punct(&t[k + 1], ']'))
    k += 2;
  f->rettype = sql_arg_types(t, from, k);
  *i = k;
  return f->rettype ? 0 : -ENOMEM;
}

/* CREATE FUNCTION's clauses after the argument list (t[i] on): f's attributes. */
static int create_attrs(fn_t *f, const stmt_t *s, size_t i) {
  const sql_tok_t *t = s->t;
  int rc;

  attrs_reset(f);
  while (i < s->n) {
    if (sql_kw(&t[i], "returns") && !sql_kw(&t[i + 1], "null")) {
      if ((rc = returns_clause(f, s, &i)) != 0)
        return rc;
      continue;
    }
    if (sql_kw(&t[i], "language")) {
      if (f->lang)
        return fail(s, "function %s(%s): LANGUAGE given twice", f->name, f->args);
      f->lang = t[i + 1].kind == SQL_STR ? strndup(t[i + 1].s + 1, t[i + 1].len - 2)
                                         : sql_name_of(&t[i + 1]);
      if (!f->lang)
        return -ENOMEM;
      for (char *p = f->lang; *p; p++)
        *p = (char)tolower((unsigned char)*p);
      i += 2;
      continue;
    }
    if (sql_kw(&t[i], "as")) {
      i += 2;
      continue;
    }
    if ((rc = fn_option(f, s, &i)) < 0)
      return rc;
    if (rc == 0)
      return fail(s, "function %s(%s): %.*s cannot be followed", f->name, f->args, (int)t[i].len,
                  t[i].s);
  }
  if (!f->lang || !f->rettype)
    return fail(s, "function %s(%s): no LANGUAGE or RETURNS", f->name, f->args);
  return attrs_render(f);
}

/* CREATE [OR REPLACE] FUNCTION name (args) ... AS $tag$body$tag$ ...; i at FUNCTION. */
static int create_function(schema_expect_t *e, const stmt_t *s, size_t i) {
  const sql_tok_t *t = s->t;
  size_t fkw = i, open, close, len;
  const sql_tok_t *body = NULL;
  int ours, rc = -ENOMEM;
  char *name, *args = NULL;
  const char *text;
  fn_t *f;
  sql_buf_t create = {0};

  i++;
  name = sql_qualname(t, s->n, &i, &ours);
  if (!name)
    return fail(s, "CREATE FUNCTION without a name");
  if (!ours) {
    free(name);
    return 0;
  }
  e->creates++;
  if (i >= s->n || !sql_punct(&t[i], '(')) {
    rc = fail(s, "CREATE FUNCTION %s without an argument list", name);
    free(name);
    return rc;
  }
  open = i;
  close = sql_skip_parens(t, s->n, open);
  args = sql_arg_types(t, open + 1, close - 1);
  if (!args)
    goto out;
  for (size_t k = close; k + 1 < s->n; k++)
    if (sql_kw(&t[k], "as")) {
      if (t[k + 1].kind != SQL_DOLLAR) {
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
  sql_buf_str(&create, "CREATE OR REPLACE ");
  sql_buf_add(&create, text, len);
  f->create = sql_buf_take(&create);
  rc = f->create ? create_attrs(f, s, close) : -ENOMEM;
out:
  free(name);
  free(args);
  return rc;
}

/* name [(args)] at t[*i]: each function of e it names goes to cb. */
typedef int (*fn_cb)(schema_expect_t *e, fn_t *f, const stmt_t *s, void *arg);

static int each_named(schema_expect_t *e, const stmt_t *s, size_t *i, int must, fn_cb cb,
                      void *arg) {
  const sql_tok_t *t = s->t;
  int ours, rc = 0, found = 0;
  char *name = sql_qualname(t, s->n, i, &ours), *args = NULL;

  if (!name)
    return fail(s, "a function name was expected");
  if (*i < s->n && sql_punct(&t[*i], '(')) {
    size_t close = sql_skip_parens(t, s->n, *i);
    args = sql_arg_types(t, *i + 1, close - 1);
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
  int if_exists = 0, cascade = sql_kw(&s->t[s->n - 1], "cascade"), rc = 0;

  i++;
  if (sql_kw(&s->t[i], "if") && sql_kw(&s->t[i + 1], "exists")) {
    if_exists = 1;
    i += 2;
  }
  while (rc == 0 && i < s->n && !sql_kw(&s->t[i], "cascade") && !sql_kw(&s->t[i], "restrict")) {
    rc = each_named(e, s, &i, !if_exists, drop_cb, &cascade);
    if (i < s->n && sql_punct(&s->t[i], ','))
      i++;
  }
  return rc;
}

typedef struct alter_arg {
  int grants; /* a GRANT or REVOKE: kept, nothing else */
  size_t at;  /* ALTER FUNCTION: its first action */
} alter_arg_t;

static int alter_cb(schema_expect_t *e, fn_t *f, const stmt_t *s, void *arg) {
  const alter_arg_t *a = arg;
  size_t len, i = a->at;
  const char *text = text_from(s, 0, &len);
  int rc;

  (void)e;
  if (a->grants)
    return append_stmt(&f->grants, text, len);
  while (i < s->n && !sql_kw(&s->t[i], "owner") && !sql_kw(&s->t[i], "restrict")) {
    if ((rc = fn_option(f, s, &i)) < 0)
      return rc;
    if (rc == 0)
      return fail(s, "ALTER FUNCTION %s(%s) ... %.*s cannot be followed", f->name, f->args,
                  (int)s->t[i].len, s->t[i].s);
  }
  if ((rc = attrs_render(f)) != 0)
    return rc;
  return append_stmt(&f->alters, text, len);
}

/* ALTER FUNCTION name[(args)] action ...: its attributes followed, and the statement kept to
 * repeat after a repair's CREATE OR REPLACE. */
static int alter_function(schema_expect_t *e, const stmt_t *s, size_t i) {
  alter_arg_t a = {0, 0};
  const sql_tok_t *t = s->t;
  int ours;
  char *name;

  for (size_t k = i + 1; k < s->n; k++)
    if (sql_kw(&s->t[k], "rename") || (sql_kw(&s->t[k], "schema") && sql_kw(&s->t[k - 1], "set")) ||
        sql_kw(&s->t[k], "depends"))
      return fail(s, "ALTER FUNCTION ... %.*s cannot be followed; create a new function instead",
                  (int)s->t[k].len, s->t[k].s);
  i++;
  /* Where the actions begin: past the name and its argument list. */
  a.at = i;
  name = sql_qualname(t, s->n, &a.at, &ours);
  if (!name)
    return fail(s, "a function name was expected");
  free(name);
  if (a.at < s->n && sql_punct(&t[a.at], '('))
    a.at = sql_skip_parens(t, s->n, a.at);
  return each_named(e, s, &i, 1, alter_cb, &a);
}

/* GRANT|REVOKE ... ON FUNCTION name(args) [, ...] ...: kept, for a function created again. */
static int grant_function(schema_expect_t *e, const stmt_t *s) {
  alter_arg_t grants = {1, 0};
  int rc = 0;
  size_t i = 0;

  while (i + 1 < s->n && !(sql_kw(&s->t[i], "on") && sql_kw(&s->t[i + 1], "function")))
    i++;
  if (i + 1 >= s->n)
    return 0;
  i += 2;
  while (rc == 0 && i < s->n) {
    rc = each_named(e, s, &i, 1, alter_cb, &grants);
    if (i < s->n && sql_punct(&s->t[i], ','))
      i++;
    else
      break;
  }
  return rc;
}

/* ---- trigger conditions ------------------------------------------------------------------- */

/* Each run of white space in s one space, for a message of one line. */
static void squeeze_spaces(char *s) {
  char *o = s;

  for (const char *p = s; *p; p++) {
    if (isspace((unsigned char)*p)) {
      if (o > s && o[-1] == ' ')
        continue;
      *o++ = ' ';
    } else {
      *o++ = *p;
    }
  }
  *o = '\0';
}

/* CREATE [OR REPLACE] [CONSTRAINT] TRIGGER name {BEFORE|AFTER|INSTEAD OF} event [OR ...]
 * ON table ... EXECUTE {FUNCTION|PROCEDURE} func(...); i at TRIGGER. */
static int create_trigger(schema_expect_t *e, const stmt_t *s, size_t i) {
  const sql_tok_t *t = s->t;
  int type = 0, ours, fours, rc = -ENOMEM;
  char *name = NULL, *table = NULL, *func = NULL, *when = NULL, *when_norm = NULL;
  char *cols[64];
  size_t len, ncols = 0;
  sql_buf_t columns = {0};
  const char *text;
  trg_t *g;

  i++;
  name = sql_name_of(&t[i++]);
  if (!name)
    return fail(s, "CREATE TRIGGER without a name");
  if (sql_kw(&t[i], "before"))
    type |= TG_BEFORE;
  else if (sql_kw(&t[i], "instead"))
    type |= TG_INSTEAD, i++;
  else if (!sql_kw(&t[i], "after")) {
    rc = fail(s, "trigger %s: BEFORE, AFTER or INSTEAD OF expected", name);
    goto out;
  }
  for (i++; i < s->n && !sql_kw(&t[i], "on"); i++) {
    if (sql_kw(&t[i], "insert"))
      type |= TG_INSERT;
    else if (sql_kw(&t[i], "delete"))
      type |= TG_DELETE;
    else if (sql_kw(&t[i], "update"))
      type |= TG_UPDATE;
    else if (sql_kw(&t[i], "truncate"))
      type |= TG_TRUNCATE;
    else if (sql_kw(&t[i], "of")) /* UPDATE OF col, ... */
      while (i + 1 < s->n && !sql_kw(&t[i + 1], "on") && !sql_kw(&t[i + 1], "or")) {
        i++;
        if (sql_punct(&t[i], ','))
          continue;
        if (ncols == sizeof(cols) / sizeof(cols[0])) {
          rc = fail(s, "trigger %s: too many UPDATE OF columns", name);
          goto out;
        }
        if ((cols[ncols] = sql_name_of(&t[i])) == NULL)
          goto out;
        ncols++;
      }
  }
  qsort(cols, ncols, sizeof(cols[0]), cmp_str);
  sql_buf_add(&columns, "", 0);
  for (size_t k = 0; k < ncols; k++) {
    if (k > 0)
      sql_buf_add(&columns, ", ", 2);
    sql_buf_str(&columns, cols[k]);
  }
  if (columns.oom)
    goto out;
  i++;
  table = sql_qualname(t, s->n, &i, &ours);
  if (!table) {
    rc = fail(s, "trigger %s: no table", name);
    goto out;
  }
  if (!ours) {
    rc = 0;
    goto out;
  }
  for (; i < s->n; i++) {
    if (sql_punct(&t[i], '(')) { /* WHEN (...) */
      size_t close = sql_skip_parens(t, s->n, i);
      if (sql_kw(&t[i - 1], "when") && !when) {
        size_t from = t[i + 1].start, to = t[close - 2].end;
        when = strndup(s->src + from, to - from);
        when_norm = when ? sql_expr_words(when, strlen(when)) : NULL;
        if (!when_norm)
          goto out;
        squeeze_spaces(when);
      }
      i = close - 1;
      continue;
    }
    if (sql_kw(&t[i], "row") && sql_kw(&t[i - 1], "each"))
      type |= TG_ROW;
    if (sql_kw(&t[i], "execute") && i + 2 < s->n) {
      i += 2;
      func = sql_qualname(t, s->n, &i, &fours);
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
  g->when = when;
  g->when_norm = when_norm;
  g->columns = sql_buf_take(&columns);
  columns.s = NULL;
  name = table = func = when = when_norm = NULL;
  g->tgtype = type;
  g->enabled = 'O';
  g->file = s->file;
  text = text_from(s, 0, &len);
  g->create = malloc(len + 1);
  if (!g->create)
    goto out;
  memcpy(g->create, text, len);
  g->create[len] = '\0';
  rc = g->columns ? 0 : -ENOMEM;
out:
  free(name);
  free(table);
  free(func);
  free(when);
  free(when_norm);
  free(columns.s);
  for (size_t k = 0; k < ncols; k++)
    free(cols[k]);
  return rc;
}

/* DROP TRIGGER [IF EXISTS] name ON table */
static int drop_trigger(schema_expect_t *e, const stmt_t *s, size_t i) {
  int if_exists = 0, ours, rc = 0;
  char *name, *table;
  trg_t *g;

  i++;
  if (sql_kw(&s->t[i], "if") && sql_kw(&s->t[i + 1], "exists")) {
    if_exists = 1;
    i += 2;
  }
  name = sql_name_of(&s->t[i++]);
  if (!name || !sql_kw(&s->t[i], "on")) {
    free(name);
    return fail(s, "DROP TRIGGER name ON table expected");
  }
  i++;
  table = sql_qualname(s->t, s->n, &i, &ours);
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
  const sql_tok_t *t = s->t;
  int ours;
  char *table;

  i++;
  if (sql_kw(&t[i], "if") && sql_kw(&t[i + 1], "exists"))
    i += 2;
  if (sql_kw(&t[i], "only"))
    i++;
  table = sql_qualname(t, s->n, &i, &ours);
  if (!table)
    return fail(s, "ALTER TABLE without a table");
  if (!ours) {
    free(table);
    return 0;
  }
  while (i < s->n) {
    char state = 0;
    if (sql_kw(&t[i], "rename") && sql_kw(&t[i + 1], "to")) {
      char *to = sql_name_of(&t[i + 2]);
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
    if (sql_kw(&t[i], "enable")) {
      state = 'O';
      if (sql_kw(&t[i + 1], "replica"))
        state = 'R', i++;
      else if (sql_kw(&t[i + 1], "always"))
        state = 'A', i++;
    } else if (sql_kw(&t[i], "disable")) {
      state = 'D';
    }
    if (state && sql_kw(&t[i + 1], "trigger") && i + 2 < s->n) {
      const sql_tok_t *which = &t[i + 2];
      int all = sql_kw(which, "all") || sql_kw(which, "user");
      char *name = all ? NULL : sql_name_of(which);
      if (!all && !name) {
        int rc = which->kind == SQL_WORD || which->kind == SQL_QWORD
                     ? -ENOMEM
                     : fail(s, "ALTER TABLE %s: %s TRIGGER without a trigger's name", table,
                            state == 'D' ? "DISABLE" : "ENABLE");
        free(table);
        return rc;
      }
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
  if (sql_kw(&s->t[i], "if") && sql_kw(&s->t[i + 1], "exists"))
    i += 2;
  while (i < s->n && !sql_kw(&s->t[i], "cascade") && !sql_kw(&s->t[i], "restrict")) {
    char *table = sql_qualname(s->t, s->n, &i, &ours);
    if (!table)
      return fail(s, "DROP TABLE without a table");
    for (size_t k = 0; ours && k < e->ntrgs;)
      if (strcmp(e->trgs[k].table, table) == 0)
        trg_remove(e, &e->trgs[k]);
      else
        k++;
    free(table);
    if (i < s->n && sql_punct(&s->t[i], ','))
      i++;
  }
  return 0;
}

/* CREATE [OR REPLACE] RULE name AS ON event TO table ...; i at RULE. The check reports every
 * rule on a table of public as added outside migrations (a rule can swallow the UPDATE a
 * trigger makes, or rewrite clued's own statements): a migration that makes one cannot be
 * followed. */
static int create_rule(const stmt_t *s, size_t i) {
  const sql_tok_t *t = s->t;
  int ours;
  char *table;

  while (i < s->n && !sql_kw(&t[i], "to"))
    i++;
  i++;
  table = i < s->n ? sql_qualname(t, s->n, &i, &ours) : NULL;
  if (!table)
    return fail(s, "CREATE RULE without a table");
  free(table);
  return ours ? fail(s, "CREATE RULE on a table of public cannot be followed: the schema check "
                        "reports every rule there")
              : 0;
}

static int statement(schema_expect_t *e, const stmt_t *s) {
  const sql_tok_t *t = s->t;
  size_t i = 1;

  if (sql_kw(&t[0], "create")) {
    if (sql_kw(&t[i], "or") && sql_kw(&t[i + 1], "replace"))
      i += 2;
    if (sql_kw(&t[i], "function"))
      return create_function(e, s, i);
    if (sql_kw(&t[i], "constraint"))
      i++;
    if (sql_kw(&t[i], "trigger"))
      return create_trigger(e, s, i);
    if (sql_kw(&t[i], "rule"))
      return create_rule(s, i);
    return 0;
  }
  if (sql_kw(&t[0], "drop")) {
    if (sql_kw(&t[1], "function"))
      return drop_function(e, s, 1);
    if (sql_kw(&t[1], "trigger"))
      return drop_trigger(e, s, 1);
    if (sql_kw(&t[1], "table"))
      return drop_table(e, s, 1);
    if (sql_kw(&t[1], "schema") || sql_kw(&t[1], "owned"))
      return fail(s, "DROP %.*s cannot be followed", (int)t[1].len, t[1].s);
    return 0;
  }
  if (sql_kw(&t[0], "alter")) {
    if (sql_kw(&t[1], "function"))
      return alter_function(e, s, 1);
    if (sql_kw(&t[1], "table"))
      return alter_table(e, s, 1);
    if (sql_kw(&t[1], "trigger"))
      return fail(s, "ALTER TRIGGER cannot be followed; drop and create the trigger instead");
    return 0;
  }
  if (sql_kw(&t[0], "grant") || sql_kw(&t[0], "revoke"))
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
  sql_lexer_t lx = {.src = sql, .len = len};
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
  while ((rc = sql_next_statement(&lx, err, errlen)) == 1) {
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

void schema_expect_function_attrs(const schema_expect_t *e, size_t i, const char **attrs,
                                  const char **config) {
  if (attrs)
    *attrs = e->fns[i].attrs_text;
  if (config)
    *config = e->fns[i].config_text;
}

void schema_expect_trigger_when(const schema_expect_t *e, size_t i, const char **columns,
                                const char **when) {
  if (columns)
    *columns = e->trgs[i].columns;
  if (when)
    *when = e->trgs[i].when;
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

static void diff_add(diffs_t *d, sql_buf_t *msg, sql_buf_t *repair) {
  char *m = sql_buf_take(msg), *r = sql_buf_take(repair);

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

static void events_text(sql_buf_t *b, int type) {
  static const struct {
    int bit;
    const char *name;
  } ev[] = {{TG_INSERT, "INSERT"},
            {TG_UPDATE, "UPDATE"},
            {TG_DELETE, "DELETE"},
            {TG_TRUNCATE, "TRUNCATE"}};
  int first = 1;

  sql_buf_str(b, type & TG_BEFORE ? "BEFORE " : type & TG_INSTEAD ? "INSTEAD OF " : "AFTER ");
  for (size_t i = 0; i < sizeof(ev) / sizeof(ev[0]); i++)
    if (type & ev[i].bit) {
      if (!first)
        sql_buf_str(b, " OR ");
      sql_buf_str(b, ev[i].name);
      first = 0;
    }
  sql_buf_str(b, type & TG_ROW ? " FOR EACH ROW" : " FOR EACH STATEMENT");
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

static void enable_sql(sql_buf_t *b, const trg_t *g) {
  sql_buf_str(b, "ALTER TABLE ");
  sql_buf_ident(b, g->table);
  sql_buf_str(b, g->enabled == 'D'   ? " DISABLE TRIGGER "
                 : g->enabled == 'R' ? " ENABLE REPLICA TRIGGER "
                 : g->enabled == 'A' ? " ENABLE ALWAYS TRIGGER "
                                     : " ENABLE TRIGGER ");
  sql_buf_ident(b, g->name);
  sql_buf_str(b, ";\n");
}

/* Settings in schema_row_t's config form as "SET a=1 SET b=2", or "no SET". */
static void config_words(sql_buf_t *m, const char *p) {
  if (!*p)
    sql_buf_str(m, "no SET");
  for (int first = 1; *p; first = 0) {
    const char *nl = strchr(p, '\n');
    size_t l = nl ? (size_t)(nl - p) : strlen(p);
    sql_buf_printf(m, "%sSET %.*s", first ? "" : " ", (int)l, p);
    p += l + (nl ? 1 : 0);
  }
}

/* What differs between two attribute texts (schema_row_t's attrs and config forms, is being
 * what the database has, want what the migrations say), as "it is STRICT instead of CALLED ON
 * NULL INPUT, ... and runs with ...". */
static void attrs_diff(sql_buf_t *m, const char *is, const char *is_config, const char *want,
                       const char *want_config) {
  static const char *const names[] = {"i", "IMMUTABLE", "s", "STABLE", "v", "VOLATILE"};
  static const char *const pnames[] = {"s", "PARALLEL SAFE",  "r", "PARALLEL RESTRICTED",
                                       "u", "PARALLEL UNSAFE"};
  const char *is_lang = strchr(is, ' '), *want_lang = strchr(want, ' ');
  const char *is_ret, *want_ret;
  size_t is_ll, want_ll, n = 0;
  sql_buf_t part[8] = {{0}};

  if (!is_lang || !want_lang || is_lang - is != 6 || want_lang - want != 6) {
    sql_buf_printf(m, "it has the attributes %s instead of %s", is, want);
    return;
  }
  is_lang++, want_lang++;
  is_ret = strchr(is_lang, ' ');
  want_ret = strchr(want_lang, ' ');
  is_ll = is_ret ? (size_t)(is_ret - is_lang) : strlen(is_lang);
  want_ll = want_ret ? (size_t)(want_ret - want_lang) : strlen(want_lang);
  is_ret = is_ret ? is_ret + 1 : "";
  want_ret = want_ret ? want_ret + 1 : "";
  if (is_ll != want_ll || strncmp(is_lang, want_lang, is_ll) != 0)
    sql_buf_printf(&part[n++], "is LANGUAGE %.*s instead of %.*s", (int)is_ll, is_lang,
                   (int)want_ll, want_lang);
  if (is[5] != want[5] || strcmp(is_ret, want_ret) != 0) {
    sql_buf_printf(&part[n++], "RETURNS %s%s instead of %s%s", is[5] == 't' ? "SETOF " : "", is_ret,
                   want[5] == 't' ? "SETOF " : "", want_ret);
  }
  if (is[0] != want[0]) {
    const char *a = "?", *b = "?";
    for (size_t k = 0; k < 6; k += 2) {
      if (is[0] == names[k][0])
        a = names[k + 1];
      if (want[0] == names[k][0])
        b = names[k + 1];
    }
    sql_buf_printf(&part[n++], "is %s instead of %s", a, b);
  }
  if (is[2] != want[2])
    sql_buf_printf(&part[n++], "is %s instead of %s",
                   is[2] == 't' ? "STRICT" : "CALLED ON NULL INPUT",
                   want[2] == 't' ? "STRICT" : "CALLED ON NULL INPUT");
  if (is[3] != want[3])
    sql_buf_printf(&part[n++], "is %s instead of %s",
                   is[3] == 't' ? "SECURITY DEFINER" : "SECURITY INVOKER",
                   want[3] == 't' ? "SECURITY DEFINER" : "SECURITY INVOKER");
  if (is[4] != want[4])
    sql_buf_printf(&part[n++], "is %s instead of %s", is[4] == 't' ? "LEAKPROOF" : "NOT LEAKPROOF",
                   want[4] == 't' ? "LEAKPROOF" : "NOT LEAKPROOF");
  if (is[1] != want[1]) {
    const char *a = "?", *b = "?";
    for (size_t k = 0; k < 6; k += 2) {
      if (is[1] == pnames[k][0])
        a = pnames[k + 1];
      if (want[1] == pnames[k][0])
        b = pnames[k + 1];
    }
    sql_buf_printf(&part[n++], "is %s instead of %s", a, b);
  }
  if (strcmp(is_config, want_config) != 0) {
    sql_buf_str(&part[n], "runs with ");
    config_words(&part[n], is_config);
    sql_buf_str(&part[n], " instead of ");
    config_words(&part[n++], want_config);
  }
  sql_buf_str(m, "it ");
  for (size_t k = 0; k < n; k++) {
    if (k > 0)
      sql_buf_str(m, k + 1 == n ? ", and " : ", ");
    if (part[k].oom)
      m->oom = 1;
    else if (part[k].s)
      sql_buf_str(m, part[k].s);
    free(part[k].s);
  }
}

/* Whether two attribute texts return the same: SETOF or not, and the type after the language. */
static int same_returns(const char *a, const char *b) {
  const char *ra = strchr(a, ' '), *rb = strchr(b, ' ');

  ra = ra ? strchr(ra + 1, ' ') : NULL;
  rb = rb ? strchr(rb + 1, ' ') : NULL;
  if (!ra || !rb || strlen(a) < 6 || strlen(b) < 6)
    return strcmp(a, b) == 0;
  return a[5] == b[5] && strcmp(ra, rb) == 0;
}

static void fn_repair(sql_buf_t *b, const fn_t *f) {
  sql_buf_str(b, f->create);
  sql_buf_str(b, ";\n");
  if (f->alters)
    sql_buf_str(b, f->alters);
  if (f->grants)
    sql_buf_str(b, f->grants);
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
  /* A session whose triggers do not fire: PostgreSQL fires the ENABLE (ORIGIN) triggers,
   * all of clued's, only where session_replication_role is origin, which a superuser may set
   * otherwise for the runtime role or the database without touching pg_trigger. Only a
   * superuser may reset it, so the repair fails, saying so. */
  for (size_t r = 0; r < nrows; r++) {
    sql_buf_t m = {0}, rep = {0};

    if (rows[r].kind != 's' || !rows[r].name || !rows[r].args ||
        strcmp(rows[r].name, "session_replication_role") != 0 ||
        strcmp(rows[r].args, "origin") == 0)
      continue;
    sql_buf_printf(&m,
                   "the session runs with session_replication_role = %s (set for the role, the "
                   "database or the server), so none of clued's triggers fire: a superuser must "
                   "reset it (ALTER ROLE ... IN DATABASE ... RESET session_replication_role)",
                   rows[r].args);
    sql_buf_str(&rep, "DO $repair$ BEGIN RAISE EXCEPTION 'session_replication_role is not origin "
                      "in this session; only a superuser can reset it'; END $repair$;\n");
    diff_add(&d, &m, &rep);
  }
  /* Rules: the migrations define none, and one on a table of public can make an UPDATE that
   * a trigger of clued's makes (recusals_mark's of clues.has_recusals) do nothing, or rewrite
   * clued's own statements, without touching a trigger or a function. */
  for (size_t r = 0; r < nrows; r++) {
    const schema_row_t *row = &rows[r];
    sql_buf_t m = {0}, rep = {0};

    if (row->kind != 'r' || !row->name || !row->args || !row->ident)
      continue;
    sql_buf_printf(&m,
                   "rule %s on %s (%s) is not defined by the migrations, which define no rule: it "
                   "rewrites what clued and its triggers do to that table, and was added outside "
                   "migrations",
                   row->name, row->args, row->attrs ? row->attrs : "");
    sql_buf_printf(&rep, "DROP RULE %s;\n", row->ident);
    diff_add(&d, &m, &rep);
  }
  /* Overloads of clued's names that no migration defines. */
  for (size_t r = 0; r < nrows; r++) {
    const schema_row_t *row = &rows[r];
    const fn_t *f;
    sql_buf_t m = {0}, rep = {0};

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
    sql_buf_printf(&m,
                   "function %s(%s) is not defined by the migrations, but has the name of clued's "
                   "%s(%s) of %s: an overload that may capture its calls",
                   row->name, row->args, f->name, f->args, f->file);
    sql_buf_printf(&rep, "DROP FUNCTION %s;\n", row->ident ? row->ident : row->name);
    diff_add(&d, &m, &rep);
  }
  /* clued's functions: the body each migration left, or missing. */
  for (size_t r = 0; r < nrows; r++) {
    const schema_row_t *row = &rows[r];
    const fn_t *f;
    sql_buf_t m = {0}, rep = {0};

    if (row->kind != 'f' || !row->name || !row->args)
      continue;
    f = fn_find((schema_expect_t *)e, row->name, row->args);
    if (!f)
      continue;
    if (strcmp(f->sha, row->hash ? row->hash : "") != 0) {
      sql_buf_printf(&m,
                     "function %s(%s) differs from its definition in %s: it was replaced outside "
                     "migrations",
                     f->name, f->args, f->file);
    } else if (strcmp(f->attrs_text, row->attrs ? row->attrs : "") != 0 ||
               strcmp(f->config_text, row->config ? row->config : "") != 0) {
      sql_buf_t how = {0};
      attrs_diff(&how, row->attrs ? row->attrs : "", row->config ? row->config : "", f->attrs_text,
                 f->config_text);
      sql_buf_printf(&m,
                     "function %s(%s) differs from its definition in %s: %s: it was altered "
                     "outside migrations",
                     f->name, f->args, f->file, how.s ? how.s : "");
      if (how.oom)
        m.oom = 1;
      free(how.s);
    } else {
      continue;
    }
    /* Another return type, which CREATE OR REPLACE cannot change: dropped first. Only then, as
     * what depends on the function (a trigger) would refuse the DROP. */
    if (row->attrs && !same_returns(f->attrs_text, row->attrs))
      sql_buf_printf(&rep, "DROP FUNCTION %s;\n", row->ident ? row->ident : f->name);
    fn_repair(&rep, f);
    diff_add(&d, &m, &rep);
  }
  for (size_t i = 0; i < e->nfns; i++) {
    sql_buf_t m = {0}, rep = {0};
    if (fseen[i])
      continue;
    sql_buf_printf(&m, "function %s(%s) of %s is missing: it was dropped outside migrations",
                   e->fns[i].name, e->fns[i].args, e->fns[i].file);
    fn_repair(&rep, &e->fns[i]);
    diff_add(&d, &m, &rep);
  }
  /* Who may call clued's SECURITY DEFINER functions, which run with their owner's rights past
   * the runtime role's grants: their owner and clued_runtime alone (0058). A row names one other
   * grantee of EXECUTE (PUBLIC: any role that may connect), and, when not the owner, the role
   * that granted it, whose grant option is taken back too. */
  for (size_t r = 0; r < nrows; r++) {
    const schema_row_t *row = &rows[r];
    const fn_t *f;
    sql_buf_t m = {0}, rep = {0};

    if (row->kind != 'g' || !row->name || !row->args || !row->ident || !row->hash)
      continue;
    f = fn_find((schema_expect_t *)e, row->name, row->args);
    if (!f || !f->secdef)
      continue;
    sql_buf_printf(&m,
                   "function %s(%s) of %s runs with its owner's rights (SECURITY DEFINER) and may "
                   "be called by %s",
                   f->name, f->args, f->file, row->hash);
    if (row->attrs)
      sql_buf_printf(&m, " (granted by %s)", row->attrs);
    sql_buf_str(&m, ": EXECUTE was granted outside migrations, which let only its owner and "
                    "clued_runtime call it");
    if (row->attrs)
      sql_buf_printf(&rep, "REVOKE GRANT OPTION FOR EXECUTE ON FUNCTION %s FROM %s CASCADE;\n",
                     row->ident, row->attrs);
    sql_buf_printf(&rep, "REVOKE EXECUTE ON FUNCTION %s FROM %s CASCADE;\n", row->ident, row->hash);
    diff_add(&d, &m, &rep);
  }
  /* clued's triggers. */
  for (size_t r = 0; r < nrows; r++) {
    const schema_row_t *row = &rows[r];
    trg_t *g;
    sql_buf_t m = {0}, rep = {0};
    const char *func = row->hash ? row->hash : "", *cols;
    char *when;
    int other_func, other_type, other_cols, other_when;

    if (row->kind != 't' || !row->name || !row->args)
      continue;
    g = trg_find((schema_expect_t *)e, row->args, row->name);
    if (!g)
      continue;
    tseen[g - e->trgs] = 1;
    cols = row->attrs ? row->attrs : "";
    when = NULL;
    if (row->config && (when = sql_expr_words(row->config, strlen(row->config))) == NULL)
      d.oom = 1;
    other_func = strcmp(g->func, func) != 0;
    other_type = g->tgtype != row->tgtype;
    other_cols = strcmp(g->columns, cols) != 0;
    other_when =
        (when == NULL) != (g->when_norm == NULL) || (when && strcmp(when, g->when_norm) != 0);
    free(when);
    if (other_func || other_type || other_cols || other_when) {
      int n = 0;
      sql_buf_printf(&m, "trigger %s on %s differs from its definition in %s: it ", g->name,
                     g->table, g->file);
      if (other_func) {
        sql_buf_printf(&m, "calls %s instead of %s", func, g->func);
        n++;
      }
      if (other_type) {
        sql_buf_str(&m, n++ ? ", and " : "");
        sql_buf_str(&m, "fires ");
        events_text(&m, row->tgtype);
        sql_buf_str(&m, " instead of ");
        events_text(&m, g->tgtype);
      }
      if (other_cols) {
        sql_buf_str(&m, n++ ? ", and " : "");
        sql_buf_printf(&m, "fires on UPDATE OF %s instead of %s", *cols ? cols : "any column",
                       *g->columns ? g->columns : "any column");
      }
      if (other_when) {
        sql_buf_str(&m, n++ ? ", and " : "");
        if (!row->config)
          sql_buf_printf(&m, "fires always instead of WHEN (%s)", g->when);
        else if (!g->when)
          sql_buf_printf(&m, "fires only WHEN %s instead of always", row->config);
        else
          sql_buf_printf(&m, "fires WHEN %s instead of WHEN (%s)", row->config, g->when);
      }
      sql_buf_str(&m, ": it was replaced outside migrations");
      sql_buf_str(&rep, "DROP TRIGGER ");
      sql_buf_ident(&rep, g->name);
      sql_buf_str(&rep, " ON ");
      sql_buf_ident(&rep, g->table);
      sql_buf_str(&rep, ";\n");
      sql_buf_str(&rep, g->create);
      sql_buf_str(&rep, ";\n");
      if (g->enabled != 'O')
        enable_sql(&rep, g);
      diff_add(&d, &m, &rep);
    } else if (g->enabled != row->enabled) {
      sql_buf_printf(&m, "trigger %s on %s of %s is %s, but its migrations leave it %s", g->name,
                     g->table, g->file, enabled_text(row->enabled), enabled_text(g->enabled));
      enable_sql(&rep, g);
      diff_add(&d, &m, &rep);
    }
  }
  for (size_t i = 0; i < e->ntrgs; i++) {
    sql_buf_t m = {0}, rep = {0};
    if (tseen[i])
      continue;
    sql_buf_printf(&m, "trigger %s on %s of %s is missing: it was dropped outside migrations",
                   e->trgs[i].name, e->trgs[i].table, e->trgs[i].file);
    sql_buf_str(&rep, e->trgs[i].create);
    sql_buf_str(&rep, ";\n");
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
