/* The verdict of --require-sync-replica on a row of db_sync_check_sql (server/db/replication.c),
 * the WAL positions of ReadConsistency.min_read_lsn, and which failures of a read on the replica
 * send it to the primary instead; tests/e2e/test_failover.py runs them
 * against a real primary and standby. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "db/replication.h"
#include "service/replica.h"

static void expect(const char *names, const char *commit, const char *see, const char *n, int ok,
                   const char *why_has) {
  char why[200];
  assert_int_equal(db_sync_verdict(names, commit, see, n, why, sizeof(why)), ok);
  if (ok)
    assert_string_equal(why, "");
  else
    assert_non_null(strstr(why, why_has));
}

static void test_a_connected_synchronous_standby_passes(void **state) {
  (void)state;
  expect("*", "on", "t", "1", 1, NULL);
  expect("FIRST 1 (s1, s2)", "remote_apply", "t", "2", 1, NULL);
}

static void test_each_missing_piece_is_named(void **state) {
  (void)state;
  expect("", "on", "t", "1", 0, "synchronous_standby_names is empty");
  expect("*", "remote_write", "t", "1", 0, "synchronous_commit is remote_write");
  expect("*", "local", "t", "1", 0, "synchronous_commit is local");
  expect("*", "off", "t", "1", 0, "synchronous_commit is off");
  expect("*", "on", "f", "1", 0, "pg_read_all_stats");
  expect("*", "on", "t", "0", 0, "no synchronous standby is connected");
  /* The first missing piece is the one named: configuration before connection. */
  expect("", "off", "f", "0", 0, "synchronous_standby_names is empty");
}

static void test_no_answer_is_no(void **state) {
  (void)state;
  expect(NULL, "on", "t", "1", 0, "no answer");
  expect("*", "on", "t", NULL, 0, "no answer");
  assert_int_equal(db_sync_verdict("*", "on", "t", "1", NULL, 0), 1);
  assert_int_equal(db_sync_verdict("", "on", "t", "1", NULL, 0), 0);
}

/* WAL positions as PostgreSQL prints them, the form of min_read_lsn (service/replica.c). */
static void test_lsn_parse(void **state) {
  uint64_t v = 1;
  (void)state;
  assert_int_equal(replica_lsn_parse("16/B374D848", &v), 0);
  assert_true(v == (0x16ull << 32 | 0xB374D848ull));
  assert_int_equal(replica_lsn_parse("0/0", &v), 0);
  assert_true(v == 0);
  assert_int_equal(replica_lsn_parse("ffffffff/ffffffff", &v), 0);
  assert_true(v == UINT64_MAX);
  static const char *const bad[] = {"",     "/",     "1/",    "/1",          "1",
                                    "G/0",  "0/0x1", "1/2/3", "123456789/0", "0/123456789",
                                    " 1/2", "1/2 ",  "-1/2",  "1/+2",        "not/an-lsn"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    v = 7;
    assert_int_equal(replica_lsn_parse(bad[i], &v), -1);
    assert_true(v == 7); /* untouched */
  }
}

/* Which outcomes of a read on the replica send it to the primary instead. */
static void test_what_the_primary_answers_instead(void **state) {
  db_result_t r = {0};
  (void)state;

  r.err = DB_OK;
  assert_int_equal(replica_miss(&r), REPLICA_ANSWERED);
  r.err = DB_EUNAVAILABLE; /* the connection broke, or none could be had */
  assert_int_equal(replica_miss(&r), REPLICA_LOST);
  r.err = DB_EQUERY;
  r.sqlstate = "40001"; /* canceling statement due to conflict with recovery */
  assert_int_equal(replica_miss(&r), REPLICA_CONFLICT);
  r.sqlstate = "40P01"; /* ... a buffer deadlock with recovery */
  assert_int_equal(replica_miss(&r), REPLICA_CONFLICT);
  /* Errors the primary would give as well, and a full queue (the primary's may be too). */
  r.sqlstate = "57014";
  assert_int_equal(replica_miss(&r), REPLICA_ANSWERED);
  r.sqlstate = "22P02";
  assert_int_equal(replica_miss(&r), REPLICA_ANSWERED);
  r.sqlstate = "";
  assert_int_equal(replica_miss(&r), REPLICA_ANSWERED);
  r.err = DB_EQUEUE;
  assert_int_equal(replica_miss(&r), REPLICA_ANSWERED);
  r.err = DB_ECANCELED;
  assert_int_equal(replica_miss(&r), REPLICA_ANSWERED);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_a_connected_synchronous_standby_passes),
      cmocka_unit_test(test_each_missing_piece_is_named),
      cmocka_unit_test(test_no_answer_is_no),
      cmocka_unit_test(test_lsn_parse),
      cmocka_unit_test(test_what_the_primary_answers_instead),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
