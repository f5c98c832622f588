#ifndef CLUED_DB_SQL_LEX_H
#define CLUED_DB_SQL_LEX_H

/* A small SQL lexer for reading migrations, and a growing string buffer. Tokens point into
 * the text lexed, which must outlive them. */

#include <stddef.h>

typedef enum { SQL_WORD, SQL_QWORD, SQL_STR, SQL_DOLLAR, SQL_NUM, SQL_PUNCT } sql_tok_kind_t;

typedef struct sql_tok {
  sql_tok_kind_t kind;
  const char *s; /* SQL_DOLLAR: the body; SQL_QWORD: between the quotes; others: the token */
  size_t len;
  size_t start, end; /* the whole token in the file */
} sql_tok_t;

/** A lexer over src[0, len): set src and len, zero the rest; free toks when done. */
typedef struct sql_lexer {
  const char *src;
  size_t len, pos;
  sql_tok_t *toks; /* the current statement's tokens, followed by a few ';' not counted */
  size_t ntoks, cap;
  size_t line_at; /* the first token's line, for messages */
} sql_lexer_t;

/** The line (from 1) of src[pos]. */
size_t sql_line_of(const char *src, size_t pos);

/**
 * The next statement's tokens (to its ';' or the end) in lx->toks. Returns 1 with a statement,
 * 0 at the end, -1 (message in err) on an unterminated quote or comment, or -ENOMEM.
 */
int sql_next_statement(sql_lexer_t *lx, char *err, size_t errlen);

/** Whether t is the unquoted word w, in any case. t may be NULL. */
int sql_kw(const sql_tok_t *t, const char *w);

/** Whether t is the punctuation c. t may be NULL. */
int sql_punct(const sql_tok_t *t, char c);

/** A word's or quoted identifier's name as PostgreSQL folds it (caller frees), or NULL. */
char *sql_name_of(const sql_tok_t *t);

/** A growing string; oom set once an allocation failed (later additions do nothing). */
typedef struct sql_buf {
  char *s;
  size_t len, cap;
  int oom;
} sql_buf_t;

/** Append n bytes of s. */
void sql_buf_add(sql_buf_t *b, const char *s, size_t n);

/** Append s. */
void sql_buf_str(sql_buf_t *b, const char *s);

/** Append a formatted string (up to 1 KiB). */
void sql_buf_printf(sql_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** b's string, now the caller's ("" when empty), or NULL (freed) when out of memory. */
char *sql_buf_take(sql_buf_t *b);

/** Append id as PostgreSQL's quote_identifier() would (quoted unless lower-case and plain). */
void sql_buf_ident(sql_buf_t *b, const char *id);

/**
 * The name [schema.]name at t[*i], past it (caller frees), or NULL; *ours says whether it is
 * of the schema public (or unqualified).
 */
char *sql_qualname(const sql_tok_t *t, size_t n, size_t *i, int *ours);

/** The index past the ')' that closes the '(' at t[i] (n when it is not closed). */
size_t sql_skip_parens(const sql_tok_t *t, size_t n, size_t i);

/**
 * The input argument types of the list t[from, to) as oidvectortypes() prints them ("bigint,
 * integer[]"; modes, names, defaults, type modifiers and OUT arguments go; caller frees), or
 * NULL when out of memory.
 */
char *sql_arg_types(const sql_tok_t *t, size_t from, size_t to);

/**
 * A WHEN condition's words, in which what a migration wrote and what pg_get_triggerdef() prints
 * of it are the same (caller frees), or NULL when out of memory or not lexable.
 */
char *sql_expr_words(const char *src, size_t len);

#endif
