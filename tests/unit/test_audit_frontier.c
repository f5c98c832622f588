/* The WatchEvents delivery frontier (server/domain/audit_frontier.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "domain/audit_frontier.h"

/* Feed seqs (visible in a snapshot with this xmin and bound) and return the accepted count. */
static size_t feed(audit_frontier_t *f, const int64_t *seqs, size_t n, int64_t xmin,
                   int64_t xbound) {
  return audit_frontier_advance(f, seqs, n, xmin, xbound);
}

static void start_ready_when_nothing_runs(void **state) {
  audit_frontier_t f;
  (void)state;
  audit_frontier_start(&f, 42, 100, 100);
  assert_true(f.ready);
  assert_int_equal(f.safe, 42);
}

static void start_waits_for_xmin(void **state) {
  audit_frontier_t f;
  int64_t rows[] = {43, 44};
  (void)state;
  audit_frontier_start(&f, 42, 90, 100);
  assert_false(f.ready);
  /* A transaction older than the start may still commit a seq below 42: wait. */
  assert_int_equal(feed(&f, rows, 2, 95, 110), 0);
  assert_false(f.ready);
  assert_int_equal(f.safe, 42);
  /* xmin reached the starting bound: everything up to 42 is decided; 43, 44 follow. */
  assert_int_equal(feed(&f, rows, 2, 100, 110), 2);
  assert_true(f.ready);
  assert_int_equal(f.safe, 44);
}

static void start_not_ready_then_gap_resolved_by_same_snapshot(void **state) {
  audit_frontier_t f;
  int64_t rows[] = {45};
  (void)state;
  audit_frontier_start(&f, 42, 90, 100);
  /* Nothing runs (xmin reaches the bound): 43 and 44 were rolled back. */
  assert_int_equal(feed(&f, rows, 1, 120, 120), 1);
  assert_int_equal(f.safe, 45);
}

static void contiguous_rows_pass(void **state) {
  audit_frontier_t f;
  int64_t rows[] = {11, 12, 13, 14};
  (void)state;
  audit_frontier_start(&f, 10, 5, 5);
  assert_int_equal(feed(&f, rows, 4, 50, 60), 4);
  assert_int_equal(f.safe, 14);
  assert_int_equal(f.ncp, 0);
}

static void empty_fetch_changes_nothing(void **state) {
  audit_frontier_t f;
  (void)state;
  audit_frontier_start(&f, 10, 5, 5);
  assert_int_equal(feed(&f, NULL, 0, 50, 60), 0);
  assert_int_equal(f.safe, 10);
}

static void gap_waits_then_fills(void **state) {
  audit_frontier_t f;
  int64_t first[] = {11, 13};
  int64_t later[] = {12, 13, 14};
  (void)state;
  audit_frontier_start(&f, 10, 5, 5);
  /* 12 is missing while 13 is visible: deliver 11 only. */
  assert_int_equal(feed(&f, first, 2, 50, 60), 1);
  assert_int_equal(f.safe, 11);
  /* 12 committed late: delivered before 13. */
  assert_int_equal(feed(&f, later, 3, 55, 61), 3);
  assert_int_equal(f.safe, 14);
  assert_int_equal(f.ncp, 0);
}

static void gap_rolled_back_after_xmin_passes(void **state) {
  audit_frontier_t f;
  int64_t rows[] = {13, 14};
  (void)state;
  audit_frontier_start(&f, 11, 5, 5);
  /* 12 absent, 13 visible in a snapshot with bound 60. */
  assert_int_equal(feed(&f, rows, 1, 50, 60), 0);
  /* Still transactions older than 60 running: wait. */
  assert_int_equal(feed(&f, rows, 2, 59, 70), 0);
  assert_int_equal(f.safe, 11);
  /* Every transaction below 60 ended and 12 is still absent: rolled back. */
  assert_int_equal(feed(&f, rows, 2, 60, 70), 2);
  assert_int_equal(f.safe, 14);
}

static void later_gap_needs_its_own_checkpoint(void **state) {
  audit_frontier_t f;
  int64_t a[] = {13};
  int64_t b[] = {13, 15};
  (void)state;
  audit_frontier_start(&f, 11, 5, 5);
  assert_int_equal(feed(&f, a, 1, 50, 60), 0); /* 12 missing, checkpoint (13, 60) */
  assert_int_equal(feed(&f, b, 2, 55, 80), 0); /* 14 missing too, checkpoint (15, 80) */
  assert_int_equal(feed(&f, b, 2, 60, 80), 1); /* 12 resolved: 13; 14 waits for 80 */
  assert_int_equal(f.safe, 13);
  int64_t c[] = {15};
  assert_int_equal(feed(&f, c, 1, 79, 90), 0);
  assert_int_equal(feed(&f, c, 1, 80, 90), 1);
  assert_int_equal(f.safe, 15);
  assert_int_equal(f.ncp, 0);
}

static void seq_committing_late_is_never_skipped(void **state) {
  /* The reordering the frontier exists for: 10 is drawn first, 11 commits first. */
  audit_frontier_t f;
  int64_t only11[] = {11};
  int64_t both[] = {10, 11};
  (void)state;
  audit_frontier_start(&f, 9, 5, 5);
  /* Transaction 70 holds seq 10 and is still running: xmin 70 < bound 80. */
  assert_int_equal(feed(&f, only11, 1, 70, 80), 0);
  assert_int_equal(f.safe, 9);
  assert_int_equal(feed(&f, only11, 1, 70, 85), 0);
  /* It commits: 10 then 11. */
  assert_int_equal(feed(&f, both, 2, 81, 90), 2);
  assert_int_equal(f.safe, 11);
}

static void limit_truncated_fetch_keeps_resolution(void **state) {
  audit_frontier_t f;
  int64_t all[] = {12, 13, 15, 16, 17};
  (void)state;
  audit_frontier_start(&f, 10, 5, 5);
  /* 11 and 14 missing; checkpoint (17, 60). */
  assert_int_equal(feed(&f, all, 5, 50, 60), 0);
  /* xmin passes 60, but the fetch is limited to 2 rows: resolution still covers 14 later. */
  assert_int_equal(feed(&f, all, 2, 65, 70), 2);
  assert_int_equal(f.safe, 13);
  assert_int_equal(feed(&f, all + 2, 3, 65, 70), 3);
  assert_int_equal(f.safe, 17);
}

static void checkpoints_are_capped_and_stay_sound(void **state) {
  audit_frontier_t f;
  int64_t rows[AUDIT_FRONTIER_CHECKPOINTS * 2 + 2];
  size_t n = 0;
  (void)state;
  audit_frontier_start(&f, 1, 5, 5);
  /* seq 2 is held by a long transaction (xmin stays 10); rows keep arriving. */
  for (int i = 0; i < AUDIT_FRONTIER_CHECKPOINTS * 2; i++) {
    rows[n++] = 3 + i;
    assert_int_equal(feed(&f, rows, n, 10, 100 + i), 0);
    assert_true(f.ncp <= AUDIT_FRONTIER_CHECKPOINTS);
  }
  /* The long transaction ends without committing 2. xmin 100 resolves only the first
   * checkpoint's seqs: everything below it was already contiguous after 2. */
  assert_int_equal(feed(&f, rows, n, 100, 200), n);
  assert_int_equal(f.safe, rows[n - 1]);
}

static void merged_checkpoint_is_later_not_earlier(void **state) {
  audit_frontier_t f;
  int64_t rows[AUDIT_FRONTIER_CHECKPOINTS + 4];
  size_t n = 0;
  (void)state;
  audit_frontier_start(&f, 1, 5, 5);
  /* Gaps everywhere: 2, 4, 6, ... each seen with growing bounds. */
  for (int i = 0; i < AUDIT_FRONTIER_CHECKPOINTS + 4; i++) {
    rows[n++] = 3 + 2 * i;
    (void)feed(&f, rows, n, 10, 100 + i);
  }
  assert_int_equal(f.ncp, AUDIT_FRONTIER_CHECKPOINTS);
  /* The last checkpoint holds the newest bound; an older xmin cannot resolve its seqs. */
  assert_int_equal(f.cp[f.ncp - 1].xbound, 100 + AUDIT_FRONTIER_CHECKPOINTS + 3);
  assert_int_equal(feed(&f, rows, n, 100 + AUDIT_FRONTIER_CHECKPOINTS, 1000),
                   AUDIT_FRONTIER_CHECKPOINTS - 1);
  assert_int_equal(feed(&f, rows + (AUDIT_FRONTIER_CHECKPOINTS - 1),
                        n - (AUDIT_FRONTIER_CHECKPOINTS - 1), 100 + AUDIT_FRONTIER_CHECKPOINTS + 3,
                        1000),
                   n - (AUDIT_FRONTIER_CHECKPOINTS - 1));
  assert_int_equal(f.safe, rows[n - 1]);
}

static void rows_not_above_safe_stop_the_walk(void **state) {
  audit_frontier_t f;
  int64_t rows[] = {9, 11};
  (void)state;
  audit_frontier_start(&f, 10, 5, 5);
  assert_int_equal(feed(&f, rows, 2, 50, 50), 0);
  assert_int_equal(f.safe, 10);
}

static void unmeasured_bound_needs_no_gap(void **state) {
  audit_frontier_t f;
  int64_t contiguous[] = {11, 12};
  int64_t gap[] = {13, 15};
  (void)state;
  audit_frontier_start(&f, 10, 5, 5);
  assert_int_equal(feed(&f, contiguous, 2, 50, 0), 2);
  /* A gap with no bound: nothing can be resolved, so 15 waits. */
  assert_int_equal(feed(&f, gap, 2, 500, 0), 1);
  assert_int_equal(f.ncp, 0);
  assert_int_equal(feed(&f, gap + 1, 1, 500, 0), 0);
  /* Measured: the bound 600 is not yet below xmin 550; then it is. */
  assert_int_equal(feed(&f, gap + 1, 1, 550, 600), 0);
  assert_int_equal(feed(&f, gap + 1, 1, 600, 0), 1);
  assert_int_equal(f.safe, 15);
}

static void snapshot_xmax_is_not_a_bound(void **state) {
  /* Why the bound comes from txid_current() and not from the snapshot's xmax. Transaction
   * 99 begins, then 100; 100 draws seq 1, 99 draws seq 2 and commits. A snapshot now has
   * xmax = latestCompletedXid + 1 = 100 and lists no running id below it, so xmin = 100,
   * although 100 still runs and may commit seq 1. txid_current() in the same statement
   * returns 101: xmin 100 < 101, seq 1 stays undecided. */
  audit_frontier_t f;
  int64_t rows[] = {2};
  int64_t both[] = {1, 2};
  (void)state;
  audit_frontier_start(&f, 0, 99, 99);
  assert_int_equal(feed(&f, rows, 1, 100, 101), 0);
  assert_int_equal(f.safe, 0);
  /* 100 commits (latest completed 101 after our own statement): 1 then 2. */
  assert_int_equal(feed(&f, both, 2, 102, 0), 2);
  assert_int_equal(f.safe, 2);
}

/* A model check over random schedules, with PostgreSQL's snapshot rules: xmax is
 * latestCompletedXid + 1, running ids at or above xmax are not listed (so they do not lower
 * xmin), committed rows are visible. Transactions take an id, later draw one to three seqs
 * (as audit_append does: the id first), and commit or roll back, interleaved at random;
 * snapshots are fed with a random LIMIT. The reader's bound is a fresh id assigned after
 * its snapshot (txid_current() in the same statement), taken only when there is a gap, and
 * its own transaction then completes. The frontier must deliver seqs in increasing order,
 * and in the end exactly the committed ones. With the snapshot's xmax as the bound instead,
 * the model finds schedules that lose events. */
enum { MODEL_TXNS = 12, MODEL_SEQS = 36 };

typedef enum bound_kind { BOUND_TXID_CURRENT, BOUND_XMAX } bound_kind_t;

typedef struct model {
  int64_t xid[MODEL_TXNS];
  int state[MODEL_TXNS]; /* 0 not begun, 1 running, 2 committed, 3 rolled back */
  int nseqs[MODEL_TXNS];
  int owner[MODEL_SEQS + 1]; /* seq -> transaction */
  int drawn;
  int64_t next_xid;
  int64_t latest_completed;
  int64_t last; /* last delivered seq */
  int delivered[MODEL_SEQS + 1];
  int disorder; /* a seq delivered after a larger one (never the case) */
} model_t;

static void model_complete(model_t *m, int64_t xid) {
  if (xid > m->latest_completed)
    m->latest_completed = xid;
}

/* Take a snapshot: its xmin; the bound as the reader would measure it. */
static int64_t model_xmin(const model_t *m, int64_t *xmax) {
  int64_t xmin;
  *xmax = m->latest_completed + 1;
  xmin = *xmax;
  for (int t = 0; t < MODEL_TXNS; t++)
    if (m->state[t] == 1 && m->xid[t] < *xmax && m->xid[t] < xmin)
      xmin = m->xid[t];
  return xmin;
}

static int64_t model_bound(model_t *m, bound_kind_t kind, int64_t xmax) {
  int64_t n;
  if (kind == BOUND_XMAX)
    return xmax;
  n = m->next_xid++;
  model_complete(m, n); /* the reader's statement commits */
  return n;
}

static void model_snapshot(model_t *m, audit_frontier_t *f, size_t lim, bound_kind_t kind) {
  int64_t xmax, xmin = model_xmin(m, &xmax), rows[MODEL_SEQS], bound = 0;
  size_t n = 0, acc;

  for (int s = (int)f->safe + 1; s <= m->drawn && n < lim; s++)
    if (m->state[m->owner[s]] == 2)
      rows[n++] = s;
  if (n > 0 && rows[n - 1] - f->safe > (int64_t)n)
    bound = model_bound(m, kind, xmax);
  acc = audit_frontier_advance(f, rows, n, xmin, bound);
  for (size_t i = 0; i < acc; i++) {
    if (rows[i] <= m->last)
      m->disorder = 1;
    m->last = rows[i];
    m->delivered[rows[i]] = 1;
  }
}

/* One random schedule; returns the number of committed events not delivered (or lost order). */
static int model_run(bound_kind_t kind) {
  model_t m;
  audit_frontier_t f;
  int64_t xmax, xmin;
  int bad = 0;

  memset(&m, 0, sizeof(m));
  m.next_xid = 100;
  m.latest_completed = 99;
  xmin = model_xmin(&m, &xmax);
  audit_frontier_start(&f, 0, xmin, model_bound(&m, kind, xmax));
  for (int step = 0; step < 300; step++) {
    int t = rand() % MODEL_TXNS;
    switch (rand() % 4) {
    case 0: /* begin: take an id */
      if (m.state[t] == 0) {
        m.state[t] = 1;
        m.xid[t] = m.next_xid++;
      }
      break;
    case 1: /* draw a seq */
      if (m.state[t] == 1 && m.nseqs[t] < 3 && m.drawn < MODEL_SEQS) {
        m.owner[++m.drawn] = t;
        m.nseqs[t]++;
      }
      break;
    case 2: /* end */
      if (m.state[t] == 1) {
        m.state[t] = rand() % 4 == 0 ? 3 : 2;
        model_complete(&m, m.xid[t]);
      }
      break;
    default:
      model_snapshot(&m, &f, 1 + (size_t)(rand() % 8), kind);
    }
  }
  for (int t = 0; t < MODEL_TXNS; t++)
    if (m.state[t] == 1) {
      m.state[t] = 2;
      model_complete(&m, m.xid[t]);
    }
  for (int pass = 0; pass < 4; pass++)
    model_snapshot(&m, &f, MODEL_SEQS, kind);
  if (!f.ready || m.disorder)
    bad++;
  for (int s = 1; s <= m.drawn; s++)
    if (m.delivered[s] != (m.state[m.owner[s]] == 2))
      bad++;
  return bad;
}

static void random_schedules(void **state) {
  (void)state;
  srand(12345);
  for (int round = 0; round < 5000; round++)
    assert_int_equal(model_run(BOUND_TXID_CURRENT), 0);
}

static void random_schedules_find_the_xmax_pitfall(void **state) {
  int lost = 0;
  (void)state;
  srand(54321);
  for (int round = 0; round < 5000 && !lost; round++)
    lost = model_run(BOUND_XMAX);
  assert_true(lost > 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(start_ready_when_nothing_runs),
      cmocka_unit_test(start_waits_for_xmin),
      cmocka_unit_test(start_not_ready_then_gap_resolved_by_same_snapshot),
      cmocka_unit_test(contiguous_rows_pass),
      cmocka_unit_test(empty_fetch_changes_nothing),
      cmocka_unit_test(gap_waits_then_fills),
      cmocka_unit_test(gap_rolled_back_after_xmin_passes),
      cmocka_unit_test(later_gap_needs_its_own_checkpoint),
      cmocka_unit_test(seq_committing_late_is_never_skipped),
      cmocka_unit_test(limit_truncated_fetch_keeps_resolution),
      cmocka_unit_test(checkpoints_are_capped_and_stay_sound),
      cmocka_unit_test(merged_checkpoint_is_later_not_earlier),
      cmocka_unit_test(rows_not_above_safe_stop_the_walk),
      cmocka_unit_test(unmeasured_bound_needs_no_gap),
      cmocka_unit_test(snapshot_xmax_is_not_a_bound),
      cmocka_unit_test(random_schedules),
      cmocka_unit_test(random_schedules_find_the_xmax_pitfall),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
