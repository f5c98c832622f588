#ifndef CLUECTL_TABLE_H
#define CLUECTL_TABLE_H

/* Aligned text tables for terminals (widths count East Asian wide characters as two), and
 * CSV fields for spreadsheets. */

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

typedef struct table table_t;

/** A new table with ncols columns and these headers (copied). NULL on out of memory. */
table_t *table_new(size_t ncols, const char *const *headers);

/**
 * Append the next cell, row by row; the table owns cell afterwards and shows it as
 * text_put() writes it (control characters as spaces, bidirectional controls as <U+202E>).
 * A NULL cell (a failed allocation) marks the table failed, which table_print() reports.
 */
void table_add(table_t *t, char *cell);

/** Print the table; returns 0, or -1 if a cell could not be built or memory ran out. */
int table_print(const table_t *t, FILE *out);

void table_free(table_t *t);

/** A malloc'd printf for cells; NULL on out of memory (which table_add() then records). */
char *table_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/** table_fmt() with a va_list. */
char *table_vfmt(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

/**
 * Write s, text that came from the server, for a terminal: control characters as spaces (a
 * line feed kept when keep_newlines), so no escape sequence reaches the terminal; the C1
 * controls, U+2028/U+2029 and the bidirectional controls (U+061C, U+200E, U+200F,
 * U+202A-U+202E, U+2066-U+2069) by name, as <U+202E>, so nothing reorders or hides what
 * follows; a malformed byte as <0xFF>. Every place cluectl prints server text uses it.
 */
void text_put(FILE *o, const char *s, int keep_newlines);

/** text_put() into a malloc'd string; NULL on out of memory. */
char *text_safe(const char *s, int keep_newlines);

/** Columns a UTF-8 string takes on a terminal. */
size_t text_width(const char *s);

/**
 * One CSV text field (a comma before it unless first): quoted when it holds a comma, a quote
 * or a line break (RFC 4180 §2), and led by a single quote when it starts with = + - @, a
 * tab or a CR, which a spreadsheet would read as a formula. Numbers are printed as they are,
 * not through this. console/src/csv.ts writes the same. The text is the server's, unchanged,
 * unless o is a terminal: there it is shown as text_put() shows it.
 */
void table_csv_field(FILE *o, const char *s, int first);

#endif
