/* The statement registry alone (db/stmts.c): constant texts keep their slots and names for
 * good, built texts share the built part least recently used first out, and a name is never
 * given twice. No database. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "db/db.h"
#include "db/stmts.h"

static const char static_sql[] = "SELECT 'a static const array'";
static char writable_sql[64] = "SELECT 'a writable array'";

/* A text built at run time (on the stack of the caller). */
#define BUILT(buf, ...) (snprintf(buf, sizeof(buf), __VA_ARGS__), buf)

static void test_constant_or_built(void **state) {
  db_stmts_t r;
  char stack[32];
  char *heap = strdup("SELECT 'heap'");

  (void)state;
  assert_non_null(heap);
  assert_int_equal(db_stmts_init(&r, 4, 4, 1024), 0);
  assert_true(db_stmts_constant(&r, "SELECT 'a literal'"));
  assert_true(db_stmts_constant(&r, static_sql));
  assert_false(db_stmts_constant(&r, BUILT(stack, "SELECT %d", 1)));
  assert_false(db_stmts_constant(&r, heap));
  assert_false(db_stmts_constant(&r, writable_sql));
  db_stmts_free(&r);
  free(heap);
}

/* Built texts, however many, never take a constant text's slot, nor change its name. */
static void test_constants_stay(void **state) {
  db_stmts_t r;
  char buf[32];
  uint64_t name, first;
  int id;

  (void)state;
  assert_int_equal(db_stmts_init(&r, 2, 3, 1024), 0);
  assert_int_equal(db_stmts_size(&r), 5);
  id = db_stmts_id(&r, "SELECT 'constant'", &first);
  assert_int_equal(id, 0);
  for (int i = 0; i < 1000; i++) {
    int b = db_stmts_id(&r, BUILT(buf, "SELECT %d", i), &name);
    assert_true(b >= 2 && b < 5);
    assert_int_not_equal(name, first);
  }
  assert_int_equal(r.evictions, 1000 - 3);
  /* Found again under the same slot and name; and a constant text first seen now still gets
   * a constant slot. */
  assert_int_equal(db_stmts_id(&r, "SELECT 'constant'", &name), 0);
  assert_int_equal(name, first);
  assert_int_equal(db_stmts_id(&r, "SELECT 'late'", &name), 1);
  assert_int_equal(db_stmts_name_of(&r, 1), name);
  db_stmts_free(&r);
}

/* Two slots: one of probation, one protected. */
static void test_least_recently_used(void **state) {
  db_stmts_t r;
  char a[16], b[16], c[16];
  uint64_t na, nb, nc, n;
  int ia, ib, ic;

  (void)state;
  assert_int_equal(db_stmts_init(&r, 1, 2, 1024), 0);
  assert_int_equal(r.protected_max, 1);
  ia = db_stmts_id(&r, BUILT(a, "SELECT 'a'"), &na);
  ib = db_stmts_id(&r, BUILT(b, "SELECT 'b'"), &nb);
  assert_true(ia >= 1 && ib >= 1 && ia != ib);
  /* a used again is protected: c takes b's slot. */
  assert_int_equal(db_stmts_id(&r, a, &n), ia);
  assert_int_equal(n, na);
  ic = db_stmts_id(&r, BUILT(c, "SELECT 'c'"), &nc);
  assert_int_equal(ic, ib);
  assert_int_equal(r.evictions, 1);
  assert_int_equal(db_stmts_name_of(&r, ib), nc);
  assert_int_not_equal(nc, nb);
  /* c used again takes a's place in the protected segment; a goes back to probation, and b,
   * new again (under a new name), takes its slot. */
  assert_int_equal(db_stmts_id(&r, c, &n), ic);
  assert_int_equal(db_stmts_id(&r, b, &n), ia);
  assert_true(n != nb && n != nc && n != na);
  assert_int_equal(r.evictions, 2);
  assert_int_equal(db_stmts_id(&r, c, &n), ic);
  assert_int_equal(n, nc);
  db_stmts_free(&r);
}

/* Texts used again and again keep their slots and names through any number of texts used
 * once each (one user trying every filter); the protected segment holds at most its share. */
static void test_used_again_survives_a_flood(void **state) {
  db_stmts_t r;
  char hot[6][16], buf[32];
  uint64_t names[6], n;
  int ids[6];

  (void)state;
  assert_int_equal(db_stmts_init(&r, 4, 8, 1024), 0);
  assert_int_equal(r.protected_max, 6);
  for (int i = 0; i < 6; i++) {
    ids[i] = db_stmts_id(&r, BUILT(hot[i], "SELECT 'hot %d'", i), &names[i]);
    assert_true(ids[i] >= 4);
  }
  for (int i = 0; i < 6; i++)
    assert_int_equal(db_stmts_id(&r, hot[i], &n), ids[i]);
  for (int k = 0; k < 1000; k++) {
    assert_true(db_stmts_id(&r, BUILT(buf, "SELECT %d", k), &n) >= 4);
    if (k % 100 == 0) /* and in use now and then */
      for (int i = 0; i < 6; i++)
        assert_int_equal(db_stmts_id(&r, hot[i], &n), ids[i]);
  }
  for (int i = 0; i < 6; i++) {
    assert_int_equal(db_stmts_id(&r, hot[i], &n), ids[i]);
    assert_int_equal(n, names[i]);
  }
  assert_int_equal(r.lru[DB_STMTS_PROTECTED].n, 6);
  assert_int_equal(r.lru[DB_STMTS_PROBATION].n, 2);
  /* A seventh text used again pushes the least recently used of them back to probation. */
  assert_true(db_stmts_id(&r, BUILT(buf, "SELECT 'seventh'"), &n) >= 4);
  assert_true(db_stmts_id(&r, buf, &n) >= 4);
  assert_int_equal(r.lru[DB_STMTS_PROTECTED].n, 6);
  assert_int_equal(r.lru[DB_STMTS_PROBATION].newest, ids[0]);
  db_stmts_free(&r);
}

/* A name is never given to two texts, across both parts and every eviction. */
static void test_names_unique(void **state) {
  db_stmts_t r;
  char buf[32];
  int text_of[512]; /* by name: the text given it, -1 none */
  uint64_t name;

  (void)state;
  for (int i = 0; i < 512; i++)
    text_of[i] = -1;
  assert_int_equal(db_stmts_init(&r, 2, 4, 1024), 0);
  for (int i = 0; i < 400; i++) {
    int t = (i * 7) % 11; /* eleven texts, in an order that keeps evicting */

    assert_true(db_stmts_id(&r, BUILT(buf, "SELECT %d", t), &name) >= 0);
    assert_true(name < 512);
    if (text_of[name] < 0)
      text_of[name] = t;
    assert_int_equal(text_of[name], t);
  }
  assert_true(r.evictions > 0);
  db_stmts_free(&r);
}

/* Constant texts past the constant part share the built part; texts too long, or with no part
 * to go to, are not registered. */
static void test_limits(void **state) {
  db_stmts_t r;
  char buf[32], longer[64];
  uint64_t name;

  (void)state;
  assert_int_equal(db_stmts_init(&r, 1, 1, 20), 0);
  assert_int_equal(db_stmts_id(&r, "SELECT 1", &name), 0);
  assert_int_equal(db_stmts_id(&r, "SELECT 2", &name), 1); /* spilled */
  assert_int_equal(db_stmts_id(&r, BUILT(buf, "SELECT %d", 3), &name), 1);
  assert_int_equal(db_stmts_id(&r, BUILT(longer, "SELECT %s", "'longer than twenty'"), &name), -1);
  db_stmts_free(&r);

  assert_int_equal(db_stmts_init(&r, 1, 0, 1024), 0);
  assert_int_equal(db_stmts_id(&r, "SELECT 1", &name), 0);
  assert_int_equal(db_stmts_id(&r, "SELECT 2", &name), -1);
  assert_int_equal(db_stmts_id(&r, BUILT(buf, "SELECT %d", 3), &name), -1);
  assert_int_equal(db_stmts_name_of(&r, 5), DB_STMTS_NO_NAME);
  db_stmts_free(&r);
}

static void test_name_text(void **state) {
  char buf[DB_STMTS_NAME_MAX];

  (void)state;
  db_stmts_name(0, buf);
  assert_string_equal(buf, "clued_0");
  db_stmts_name(UINT64_MAX - 1, buf);
  assert_string_equal(buf, "clued_18446744073709551614");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_constant_or_built),
      cmocka_unit_test(test_constants_stay),
      cmocka_unit_test(test_least_recently_used),
      cmocka_unit_test(test_used_again_survives_a_flood),
      cmocka_unit_test(test_names_unique),
      cmocka_unit_test(test_limits),
      cmocka_unit_test(test_name_text),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
