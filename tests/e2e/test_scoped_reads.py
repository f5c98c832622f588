"""A caller who sees few clues pays for what they see, not for everyone else's (docs/TRANSPORT.md,
"A user's share of the database"): grpcio against the real clued and PostgreSQL.

ListAuditEvents and WatchEvents' replay used to walk the whole log in seq order, testing each
event's clue against the caller's sight, until a page was full: a MEMBER who sees a handful of
events read every event of every unit for an empty page. ListClues walked every clue by id in
the same way. Now they start from the clues the caller sees (clue_scope_ids_sql()).

No timing here: as in test_sight_first_reads.py, each test counts the rows PostgreSQL read from
a table (pg_stat_user_tables and pg_stat_user_indexes, every index this time, the primary key
too) over a few calls of a narrow caller (G3's member, who sees G3's two clues), once after
other units wrote some thousands of events and clues (bench/stats_seed.sql, straight into the
tables), and again after they wrote twice as many more. The reads must not grow with them, and
a page's must stay well under what the others wrote. clued runs with one pooled connection; its backend
sends its counts to the statistics when it goes idle at least a second after its last report,
so each round pauses that long before its last call, and the counts are waited for until they
moved.
"""

import datetime
import os
import sys
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import new_request_id  # noqa: E402
import world  # noqa: E402

S = harness.stubs()
pb = S.clue_pb2
au = S.audit_pb2
Code = grpc.StatusCode

CALLS = 3
NOTES = 5
FIRST, MORE = 3000, 6000  # clues of other units seeded before each round (about 2.4 events each)


def setup():
    c = world.served(args=["--db-pool", "1"])
    w = c.w
    c.mine = []
    for i in range(2):
        x = w.G3.leader.clue.SubmitClue(pb.SubmitClueRequest(
            request_id=new_request_id(), title=f"线索{i}", summary="反映某某违规插手工程项目",
            source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=pb.SubjectPerson(name="王某", position="局长"),
            host_unit="市卫生健康委"), timeout=20)
        for j in range(NOTES):
            w.G3.member.clue.AddNote(pb.AddNoteRequest(clue_id=x.id, kind=pb.NOTE_KIND_EVIDENCE_SUMMARY,
                                                       text=f"核查材料{j}", request_id=new_request_id()), timeout=20)
        c.mine.append(x.id)
    c.seeds = 0
    c.rounds = []
    return c


def teardown(c):
    world.unserve(c)


def seed(c, n):
    """n clues with their histories, of new units of their own, written straight into the tables;
    returns once clued's audit tail has read every event."""
    c.seeds += 1
    tag = "SABCDEF"[c.seeds]
    sql = open(os.path.join(harness.SRC, "bench", "stats_seed.sql")).read()
    sql = sql.replace("format('B", f"format('{tag}")
    for kind in ("room", "group", "region"):
        sql = sql.replace(f"'bench {kind} %s'", f"'bench {kind} %s {tag}'")
    end = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=1)
    db = c.pg.connect(c.dbname)
    try:
        with db.cursor() as cur:
            cur.execute(sql)
            cur.execute("SELECT pg_temp.stats_seed(%s, %s, 2, 4, 2)", (n, end))
            cur.execute("VACUUM ANALYZE audit_events")
            cur.execute("VACUUM ANALYZE clues")
    finally:
        db.close()
    # A write through clued wakes its audit tail, which reads what it had not read; the rounds
    # start once nothing reads the tables any more, so that no read of the tail's falls into one.
    c.w.R1.leader.clue.SubmitClue(pb.SubmitClueRequest(
        request_id=new_request_id(), title="他单位线索", summary="反映某某问题", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
        subject=pb.SubjectPerson(name="李某", position="处长"), host_unit="市发展改革委"), timeout=20)
    settled = []

    def quiet():
        settled.append((rows_read(c, "audit_events"), rows_read(c, "clues")))
        return len(settled) > 2 and settled[-1] == settled[-2] == settled[-3]

    harness.wait_for(quiet, timeout=60, interval=1.0, what="the tables to be read no more")
    with c.db.cursor() as cur:
        cur.execute("SELECT count(*) FROM audit_events WHERE subject_type = 'clue'"
                    " AND subject_id <> ALL (%s)", (c.mine,))
        return cur.fetchone()[0]


def rows_read(c, table):
    """Rows PostgreSQL has counted as read from table: by sequential scans and through every
    index (entries read, and rows fetched by them)."""
    with c.db.cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute("SELECT t.seq_tup_read + coalesce((SELECT sum(i.idx_tup_read + i.idx_tup_fetch)"
                    " FROM pg_stat_all_indexes i WHERE i.relid = t.relid), 0)"
                    " FROM pg_stat_all_tables t WHERE t.relid = %s::regclass", (table,))
        return int(cur.fetchone()[0])


def round_reads(c, table, calls, seen_call):
    """The rows of table read by calls() and then seen_call(), which reads some: seen_call runs
    more than a second after the last report, so that its backend reports them all when it goes
    idle; the count is taken once it moved."""
    def measure():
        round_reads_once(c, table, lambda: None, seen_call)  # what is still to be reported, reported
        return round_reads_once(c, table, calls, seen_call)
    return harness.unvacuumed(c.db, table, measure)  # taken again if table was vacuumed meanwhile


def round_reads_once(c, table, calls, seen_call):
    before = rows_read(c, table)
    calls()
    time.sleep(1.2)
    seen_call()
    harness.wait_for(lambda: rows_read(c, table) > before, timeout=30, what=f"{table} reads reported")
    time.sleep(0.2)  # nothing else reads it; a late report would only make the rounds differ
    return rows_read(c, table) - before


def my_events(c):
    return [e.seq for e in c.w.G3.member.audit.ListAuditEvents(au.ListAuditEventsRequest(page_size=500),
                                                               timeout=60).events]


def list_page(c):
    """A page the caller's events do not fill, and one they do."""
    r = c.w.G3.member.audit.ListAuditEvents(au.ListAuditEventsRequest(page_size=50), timeout=60)
    assert [e.seq for e in r.events] == c.want and not r.next_page_token, r
    r = c.w.G3.member.audit.ListAuditEvents(au.ListAuditEventsRequest(page_size=10), timeout=60)
    assert [e.seq for e in r.events] == c.want[:10] and r.next_page_token, r


def watch_replay(c):
    """A watch from the start: the replay of the caller's events, then the end of the call."""
    want = c.want
    got = []
    call = c.w.G3.member.audit.WatchEvents(au.WatchEventsRequest(after_seq=0), timeout=60)
    for e in call:
        got.append(e.seq)
        if len(got) == len(want):
            break
    call.cancel()
    assert got == want, (got, want)


def list_clues_by_name(c):
    r = c.w.G3.member.clue.ListClues(pb.ListCluesRequest(subject_name="赵某", page_size=500), timeout=60)
    assert not r.clues, r


def seen_events(c):
    c.w.G3.leader.audit.ListAuditEvents(au.ListAuditEventsRequest(subject_type="clue", page_size=3), timeout=60)


def seen_clues(c):
    assert len(c.w.G3.leader.clue.ListClues(pb.ListCluesRequest(), timeout=60).clues) == 2


def measure(c):
    """One round: what each kind of call read."""
    return {
        "list": round_reads(c, "audit_events", lambda: [list_page(c) for _ in range(CALLS)], lambda: seen_events(c)),
        "watch": round_reads(c, "audit_events", lambda: [watch_replay(c) for _ in range(CALLS)],
                             lambda: seen_events(c)),
        "clues": round_reads(c, "clues", lambda: [list_clues_by_name(c) for _ in range(CALLS)],
                             lambda: seen_clues(c)),
    }


def test_reads_follow_the_callers_sight_not_the_log(c):
    c.want = my_events(c)
    assert 10 < len(c.want) < 50
    others = seed(c, FIRST)
    first = measure(c)
    more = seed(c, MORE)
    again = measure(c)
    with c.db.cursor() as cur:
        cur.execute("SELECT count(*) FROM clues WHERE id <> ALL (%s)", (c.mine,))
        clues = cur.fetchone()[0]
    print(f"other units' clue events {others} then {more}, clues {clues}; rows read over {CALLS} calls:"
          f" {first} then {again}")
    for kind in first:
        # Not a row more for twice as many events of others: what the caller sees is the same.
        assert again[kind] <= first[kind] + CALLS * 8, (kind, first[kind], again[kind])
    # And far fewer than the others wrote, even at the first count: each page a window of the
    # log ahead of it, a few times its size. (A watch's replay reads such a window for its
    # batch of 256: the same in both rounds.)
    assert first["list"] < CALLS * others // 4, first
    assert first["clues"] < clues // 4, first


if __name__ == "__main__":
    harness.run_tests(dict(globals()), setup, teardown)
