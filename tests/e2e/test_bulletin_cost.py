"""What the monthly bulletin (StatsService.GetBulletin) costs, and that its figures are still
those of the definition (docs/LEDGER.md, "The monthly bulletin").

clue_bulletin() once read every transition of the units over the 120 months the zero-disposal
streak may cover, and then read them all again for each unit: units x transitions, 10-15 s
of PostgreSQL at 300,000 clues. Since 0054 it reads the month's transitions and, per unit, its
transitions back from the month's end to its last decision.

- The figures: clue_bulletin() against 0048's definition, read from that migration, over
  random histories of many units across 130 months (units created before, during and after
  the months counted, units with no transition, months without a decision,
  transitions on the months' boundaries and beyond the 120 months, other actions and subjects,
  a viewer recused from some clues), for many months and boundary lists.
- The cost: the rows PostgreSQL reads from audit_events for one month's GetBulletin
  (pg_stat_user_tables and pg_stat_user_indexes, as in test_sight_first_reads) stay the same
  when thousands of transitions are added in other months, of the same units, and in the same
  month, of other units. No timing. clued runs with one pooled connection, so that its one
  backend reports what the calls read when it goes idle.
"""

import datetime
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import new_request_id  # noqa: E402
import world  # noqa: E402

S = harness.stubs()
pb = S.clue_pb2
st = S.stats_pb2
cm = S.common_pb2
CST = datetime.timezone(datetime.timedelta(hours=8))
STREAK_MAX = 120  # BULLETIN_STREAK_MAX, domain/bulletin.h


def reference():
    """clue_bulletin() as 0048_aggregates_follow_recusals.sql defined it, the definition the
    figures must keep, read from that migration and made pg_temp.bulletin_0048()."""
    path = os.path.join(harness.SRC, "migrations", "0048_aggregates_follow_recusals.sql")
    text = open(path, encoding="utf-8").read()
    head = "CREATE FUNCTION clue_bulletin("
    start = text.index(head)
    end = text.index("$$;", text.index("AS $$", start) + 5) + 3
    return "CREATE FUNCTION pg_temp.bulletin_0048(" + text[start + len(head):end]


# (action, from, to, disposal) of every transition a clue can make, and events that are none:
# other actions of a clue, and a transition's action on another subject.
TRANSITIONS = [
    ("clue.submit", None, "ACCEPTED", None),
    ("clue.move", "ACCEPTED", "PRELIMINARY_CHECK", None),
    ("clue.move", "ACCEPTED", "CLOSED", "TALK_OR_LETTER_INQUIRY"),
    ("clue.move", "ACCEPTED", "CLOSED", "NO_FURTHER_ACTION"),
    ("clue.move", "ACCEPTED", "CLOSED", "SHELVED"),
    ("clue.move", "PRELIMINARY_CHECK", "CLOSED", None),
    ("proposal.approve", "PRELIMINARY_CHECK", "FILED", None),
    ("clue.move", "FILED", "CLOSED", None),
    ("proposal.approve", "FILED", "TRANSFERRED_TO_JUDICIAL", None),
]
OTHERS = [
    ("clue", "note.add", None, None, None),
    ("clue", "proposal.create", "PRELIMINARY_CHECK", "FILED", None),
    ("clue", "clue.extend_deadline", None, None, None),
    ("case", "clue.move", "ACCEPTED", "CLOSED", "SHELVED"),
]
FAKE = 10 ** 12  # subject ids of events written here: no clue has one


def month_start(y, m):
    """The first instant of month (y, m) in UTC+08:00, in ms (domain/bulletin.c)."""
    y, m = y + (m - 1) // 12, (m - 1) % 12 + 1
    return int(datetime.datetime(y, m, 1, tzinfo=CST).timestamp() * 1000)


def bounds(y, m, n=STREAK_MAX + 1):
    """bulletin_bounds(): the start of the month after (y, m), then of (y, m) and of each month
    before it, n in all."""
    return [month_start(y, m + 1)] + [month_start(y, m - k) for k in range(n - 1)]


def month_of(ms):
    t = datetime.datetime.fromtimestamp(ms / 1000, CST)
    return t.year, t.month


def ts(ms):
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)


def setup():
    return world.served(args=["--db-pool", "1"])


def teardown(c):
    world.unserve(c)


# ---- the figures ------------------------------------------------------------------------------


def random_history(cur, rnd, now_ms, viewer):
    """Twenty-four REGIONs and their random transitions over the 130 months before now; the
    viewer is recused from some of the clues. Returns the new units' ids."""
    y, m = month_of(now_ms)
    edges = [month_start(y, m + 1 - k) for k in range(132)]  # month starts, newest first
    units = []
    for i in range(24):
        # Created long before the months counted, within them (some exactly at a month's
        # start), or after the months of some bulletins asked below.
        created = rnd.choice([edges[131] - 86400000, edges[rnd.randrange(1, 125)],
                              edges[rnd.randrange(1, 125)] + rnd.randrange(1, 30 * 86400000),
                              edges[rnd.randrange(1, 10)] - 1, now_ms - 60000])
        cur.execute("INSERT INTO units (kind, code, name, created_at) VALUES ('REGION', %s, %s, %s) RETURNING id",
                    (f"EQ{i}", f"equivalence region {i}", ts(created)))
        units.append(cur.fetchone()[0])
    rows = []
    for u in units:
        if rnd.random() < 0.15:
            continue  # no transition at all
        # Active in a few stretches of months only, so that some months have no decision.
        months = set()
        for _ in range(rnd.randrange(1, 4)):
            start = rnd.randrange(0, 131)
            months.update(range(start, min(131, start + rnd.randrange(1, 30))))
        for _ in range(rnd.randrange(10, 120)):
            k = rnd.choice(sorted(months))
            lo, hi = edges[k + 1], edges[k]
            at = rnd.choice([lo, hi - 1, rnd.randrange(lo, hi), rnd.randrange(lo, hi)])
            at = min(at, now_ms - 1)
            sid = FAKE + rnd.randrange(0, 400)
            if rnd.random() < 0.15:
                stype, action, frm, to, disp = rnd.choice(OTHERS)
            else:
                stype = "clue"
                action, frm, to, disp = rnd.choice(TRANSITIONS)
            details = '{"disposal": "%s"}' % disp if disp else '{}'
            # Milliseconds on the boundaries, microseconds elsewhere.
            micros = 0 if at in (lo, hi - 1) else rnd.randrange(0, 1000)
            rows.append((ts(at) + datetime.timedelta(microseconds=micros), action, stype, sid, u, frm, to, details))
        # Events that are no decision, in any month, also in months the unit decided nothing.
        for _ in range(8):
            k = rnd.randrange(0, 131)
            stype, action, frm, to, disp = rnd.choice(OTHERS + [("clue", "clue.submit", None, "ACCEPTED", None)])
            rows.append((ts(min(rnd.randrange(edges[k + 1], edges[k]), now_ms - 1)), action, stype,
                         FAKE + rnd.randrange(0, 400), u, frm, to, '{}'))
    cur.executemany("INSERT INTO audit_events (at, action, subject_type, subject_id, owner_unit, from_state, to_state,"
                    " reason, details, hash) VALUES (%s, %s, %s, %s, %s, %s, %s, 'r', %s, '\\x00')", rows)
    cur.execute("INSERT INTO recusals (clue_id, user_id, reason, recorded_by, recorded_by_unit, recorded_at)"
                " SELECT DISTINCT s, %s, 'r', %s, %s, now() FROM unnest(%s::bigint[]) s",
                (viewer, viewer, units[0], [FAKE + rnd.randrange(0, 400) for _ in range(120)]))
    return units, len(rows)


def test_figures_match_the_definition_over_random_histories(c):
    """Every figure of every unit, for bulletins of many months (the current one, months inside
    the histories, the 120th month back and beyond), for everyone and for a recused viewer, and
    for shorter lists of boundaries: the same as 0048's definition."""
    conn = c.pg.connect(c.dbname)
    conn.autocommit = False
    rnd = random.Random(5417)
    try:
        with conn.cursor() as cur:
            # Rows written straight into the tables (hashes, chains and references are not what
            # is checked here), and all rolled back at the end.
            cur.execute("SET LOCAL session_replication_role = replica")
            cur.execute(reference())
            cur.execute("SELECT (extract(epoch FROM now()) * 1000)::bigint")
            now_ms = cur.fetchone()[0]
            viewer = c.w.G1.member.id
            units, events = random_history(cur, rnd, now_ms, viewer)
            cur.execute("SELECT array_agg(id) FROM units WHERE kind IN ('GROUP', 'REGION')")
            every = cur.fetchone()[0] + [987654321]  # and an id no unit has
            y, m = month_of(now_ms)
            compared, streaks, recusal_differs = 0, set(), False
            for back in (0, 1, 2, 3, 7, 12, 30, 64, 100, 118, 119, 120, 121, 125, 131):
                for n in (STREAK_MAX + 1, 1, 2, 3, 13):
                    b = bounds(y, m - back, n)
                    per_viewer = []
                    for who in (None, viewer):
                        got, want = [], []
                        for fn, out in (("clue_bulletin", got), ("pg_temp.bulletin_0048", want)):
                            cur.execute(f"SELECT * FROM {fn}(%s::bigint[], %s, %s::bigint[], %s)", (b, now_ms, every, who))
                            out.extend(cur.fetchall())
                        assert got == want, (back, n, who, [(g, w) for g, w in zip(got, want) if g != w][:3])
                        compared += len(got)
                        per_viewer.append(got)
                        if n == STREAK_MAX + 1:
                            streaks.update(r[-1] for r in got if r[0] in units)
                    recusal_differs |= per_viewer[0] != per_viewer[1]
        # The histories reached what they were meant to: streaks of none, some and the limit,
        # and a viewer whose recusals change the figures.
        assert compared > 1000, compared
        assert 0 in streaks and STREAK_MAX in streaks and len(streaks) > 8, sorted(streaks)
        assert recusal_differs
        assert events > 1000, events
    finally:
        conn.rollback()
        conn.close()


# ---- the cost ---------------------------------------------------------------------------------


def rows_read(c, table):
    """Rows PostgreSQL has counted as read from table: by sequential scans, and through its
    indexes other than the primary key (entries read, and rows fetched by them); clued's audit
    tail reads audit_events by seq, through its primary key, whenever it looks."""
    with c.db.cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute("SELECT t.seq_tup_read + coalesce((SELECT sum(i.idx_tup_read + i.idx_tup_fetch)"
                    " FROM pg_stat_all_indexes i JOIN pg_index x ON x.indexrelid = i.indexrelid"
                    " WHERE i.relid = t.relid AND NOT x.indisprimary), 0)"
                    " FROM pg_stat_all_tables t WHERE t.relid = %s::regclass", (table,))
        return int(cur.fetchone()[0])


def reads_of(c, table, call):
    """The rows of table one call() reads, and what it returned: taken again if table was
    vacuumed meanwhile (harness.vacuums())."""
    return harness.unvacuumed(c.db, table, lambda: reads_of_once(c, table, call))


def reads_of_once(c, table, call):
    """A backend reports what it read when it goes idle, unless it reported less than a second
    before: then ten seconds later. So a first call, more than a second after the last report,
    has everything before it reported; the second, more than a second after that, reports its
    own reads; each count is taken once it moved."""
    for _ in range(2):
        time.sleep(1.2)
        before = rows_read(c, table)
        got = call()
        harness.wait_for(lambda: rows_read(c, table) > before, timeout=30, what=f"{table} reads reported")
    time.sleep(0.2)
    return rows_read(c, table) - before, got


def add_transitions(c, unit, n, lo_ms, hi_ms, rnd, decision=True):
    """n transitions of unit at random times in [lo_ms, hi_ms), each the one event of a chain
    of its own, hashed and with its chain head as audit_append() would leave them."""
    with c.db.cursor() as cur:
        cur.execute("SELECT coalesce(max(subject_id), %s) FROM audit_heads WHERE subject_id >= %s", (FAKE, FAKE))
        first = cur.fetchone()[0] + 1
        rows = [(first + i, ts(rnd.randrange(lo_ms, hi_ms)), unit) for i in range(n)]
        frm, to, action = ("ACCEPTED", "CLOSED", "clue.move") if decision else (None, "ACCEPTED", "clue.submit")
        cur.execute(
            "WITH s AS (SELECT nextval(pg_get_serial_sequence('audit_events', 'seq')) AS seq, x.sid, x.at, x.unit"
            "           FROM unnest(%s::bigint[], %s::timestamptz[], %s::bigint[]) x(sid, at, unit)),"
            " r AS (SELECT s.*, audit_hash(ROW(s.seq, s.at, NULL, s.unit, %s, 'clue', s.sid, s.unit, %s, %s, 'r',"
            "       '{\"disposal\": \"SHELVED\"}', NULL, NULL, 0, NULL)::audit_events) AS h FROM s),"
            " e AS (INSERT INTO audit_events (seq, at, actor_unit_id, action, subject_type, subject_id, owner_unit,"
            "       from_state, to_state, reason, details, hash)"
            "       SELECT seq, at, unit, %s, 'clue', sid, unit, %s, %s, 'r', '{\"disposal\": \"SHELVED\"}', h FROM r"
            "       RETURNING seq, subject_id, hash)"
            " INSERT INTO audit_heads (subject_type, subject_id, last_seq, last_hash)"
            " SELECT 'clue', subject_id, seq, hash FROM e",
            ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], action, frm, to, action, frm, to))
        # Vacuumed now, not by autovacuum while a call's reads are counted (harness.vacuums()):
        # after the inserts are reported, or autovacuum would count them as not yet vacuumed.
        cur.execute("SELECT pg_stat_force_next_flush()")
        cur.execute("VACUUM ANALYZE audit_events")


def test_a_month_reads_no_other_months_transitions(c):
    """One month's bulletin of G1 (which decided this month) and G3 (which last decided two
    months ago) reads as many rows of audit_events after 12,000 transitions are added as before:
    of G1 and G3 in the 117 months before G3's last decision, and of G2 in this month. The old
    definition read every transition of the units' 120 months, once more for each unit."""
    w = c.w
    rnd = random.Random(77)
    x = w.G1.member.clue.SubmitClue(pb.SubmitClueRequest(
        request_id=new_request_id(), title="线索", summary="反映某某违规插手工程项目",
        source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=pb.SubjectPerson(name="王某", position="局长"),
        host_unit="市发展改革委"), timeout=20)
    w.G1.leader.clue.RequestTransition(pb.RequestTransitionRequest(
        clue_id=x.id, expected_version=x.version, target=cm.CLUE_STATE_CLOSED, reason="r",
        details=pb.TransitionDetails(disposal=pb.DISPOSAL_SHELVED), request_id=new_request_id()), timeout=20)
    now_ms = int(time.time() * 1000)
    y, m = month_of(now_ms)
    month = f"{y:04d}-{m:02d}"
    # The units existed long before the months counted.
    with c.db.cursor() as cur:
        cur.execute("UPDATE units SET created_at = created_at - interval '11 years' WHERE id IN (%s, %s)",
                    (w.G1.id, w.G3.id))
    add_transitions(c, w.G3.id, 1, month_start(y, m - 2), month_start(y, m - 1), rnd)
    old = month_start(y, m - STREAK_MAX + 1)

    def add(n):
        """n decisions and n receipts of G1 and of G3 in the months before G3's last decision,
        and 2n decisions of G2 this month."""
        for unit in (w.G1.id, w.G3.id):
            add_transitions(c, unit, n, old, month_start(y, m - 2), rnd)
            add_transitions(c, unit, n, old, month_start(y, m - 2), rnd, decision=False)
        add_transitions(c, w.G2.id, 2 * n, month_start(y, m), now_ms, rnd)

    def bulletin():
        r = w.auditor.stats.GetBulletin(st.GetBulletinRequest(month=month, unit_ids=[w.G1.id, w.G3.id]), timeout=60)
        return {u.unit_code: (u.received, u.disposed, u.zero_disposal, u.zero_disposal_months) for u in r.units}

    want = {"G1": (1, 1, False, 0), "G3": (0, 0, True, 2)}
    # Enough rows first that PostgreSQL reads them by index, before as after.
    add(500)
    before, got = reads_of(c, "audit_events", bulletin)
    assert got == want, got
    add(2500)
    after, got = reads_of(c, "audit_events", bulletin)
    assert got == want, got
    # A plan may differ by an index entry or two; the old definition read every row added.
    assert after <= before + 10, f"{before} rows of audit_events read before 12,000 transitions were added, {after} after"


if __name__ == "__main__":
    harness.run_tests(dict(globals()), setup, teardown)
