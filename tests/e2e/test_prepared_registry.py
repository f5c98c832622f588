"""The pool's prepared statements against one user's many ListClues filter combinations
(server/db/stmts.h, docs/READS.md "Prepared statements").

ListClues builds one SQL text per combination of its filters and page size. One LEADER makes
more distinct ListClues calls than the registry once had room for (256 texts, then nothing new
was ever prepared again). Statements first used after that (GetHistory, ListNotes, AddNote)
must still be prepared, and the pool connection must hold no more than its bound of built texts:
the least recently used are deallocated.

clued runs with one pool connection, so every call shares one PostgreSQL session. Another
session cannot read pg_prepared_statements of clued's, so a trigger on notes, installed here as
a superuser, records what clued's session has prepared whenever AddNote inserts a note, and the
statement running (current_query()).
"""

import concurrent.futures
import os
import sys
import threading

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import new_request_id  # noqa: E402
import world  # noqa: E402

S = harness.stubs()
pb = S.clue_pb2
cm = S.common_pb2

BUILT_MAX = 64  # DB_DEFAULT_PREPARED_BUILT_MAX, server/db/db.c
FLOOD = 320     # distinct ListClues texts: more than the 256 slots the registry had in all
LIST_MARK = "ORDER BY c.id DESC LIMIT"                                # ListClues (clue_list.c)
HISTORY_MARK = "FROM audit_events x WHERE x.subject_type = 'clue'"   # GetHistory (clue.c)
NOTES_MARK = "sum(octet_length(x.text)) OVER (ORDER BY x.id)"          # ListNotes (note.c)

PROBE_SQL = """
CREATE TABLE prep_probe (id serial PRIMARY KEY, pid int, n int, names text[], texts text[], cur text);
CREATE FUNCTION prep_probe() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public AS $$
BEGIN
  INSERT INTO prep_probe (pid, n, names, texts, cur)
  SELECT pg_backend_pid(), count(*), array_agg(name ORDER BY name), array_agg(statement ORDER BY name),
         current_query()
  FROM pg_prepared_statements;
  RETURN NULL;
END $$;
CREATE TRIGGER prep_probe AFTER INSERT ON notes FOR EACH ROW EXECUTE FUNCTION prep_probe();
"""


def setup():
    ctx = world.served(args=["--db-pool", "1"])
    with ctx.db.cursor() as cur:
        cur.execute(PROBE_SQL)
    member, leader = ctx.w.G1.member, ctx.w.G1.leader
    ctx.clue = member.clue.SubmitClue(pb.SubmitClueRequest(
        request_id=new_request_id(), title="t", summary="s", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
        subject=pb.SubjectPerson(name="王某"), host_unit="h"), timeout=20)
    ctx.leader = leader
    return ctx


def add_note(ctx):
    """AddNote as the leader; what clued's session had prepared while it ran: its pid, how many
    statements, their texts, and the text running."""
    return prepared(ctx)[:4]


def prepared(ctx):
    """add_note()'s, and then the names of the texts, in the same order."""
    ctx.leader.clue.AddNote(pb.AddNoteRequest(clue_id=ctx.clue.id, kind=1, text="x", request_id=new_request_id()),
                            timeout=20)
    with ctx.db.cursor() as cur:
        cur.execute("SELECT pid, n, texts, cur, names FROM prep_probe ORDER BY id DESC LIMIT 1")
        pid, n, texts, current, names = cur.fetchone()
    return pid, n, texts or [], current, names or []


def flood(ctx, count):
    """count ListClues calls of one LEADER, each with its own combination of filters and page
    size: count distinct statement texts."""
    fields = ["states", "owner_unit_id", "source", "subject_name", "overdue_only", "created_from_ms",
              "created_to_ms", "updated_from_ms", "updated_to_ms", "assigned_to_me"]
    vals = dict(states=[cm.CLUE_STATE_ACCEPTED], owner_unit_id=ctx.w.G1.id, source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
                subject_name="王", overdue_only=True, created_from_ms=1, created_to_ms=2**40, updated_from_ms=1,
                updated_to_ms=2**40, assigned_to_me=True)
    for k in range(count):
        mask, page = k % (1 << len(fields)), 1 + k // (1 << len(fields))
        kw = {f: vals[f] for i, f in enumerate(fields) if mask >> i & 1}
        ctx.leader.clue.ListClues(pb.ListCluesRequest(page_size=page, **kw), timeout=20)


def test_first_use_after_a_flood_is_prepared(ctx):
    pid0, _, texts, current = add_note(ctx)
    assert current in texts, "AddNote ran unprepared before any flood"
    flood(ctx, FLOOD)
    ctx.leader.clue.GetHistory(pb.GetHistoryRequest(clue_id=ctx.clue.id), timeout=20)
    ctx.leader.clue.ListNotes(pb.ListNotesRequest(clue_id=ctx.clue.id), timeout=20)
    pid, n, texts, current = add_note(ctx)
    assert pid == pid0, "clued's one pool connection was replaced"
    lists = sum(1 for t in texts if LIST_MARK in t)
    print(f"after {FLOOD} ListClues texts: {n} statements prepared, {lists} of them ListClues'")
    assert any(HISTORY_MARK in t for t in texts), "GetHistory, first used after the flood, ran unprepared"
    assert any(NOTES_MARK in t for t in texts), "ListNotes, first used after the flood, ran unprepared"
    assert current in texts, "AddNote, after the flood, ran unprepared"
    # The built texts are bounded: the evicted ones were deallocated on the connection.
    assert lists <= BUILT_MAX, f"{lists} ListClues texts prepared on one connection, above {BUILT_MAX}"
    assert n < 256, f"{n} statements prepared on one connection"


def test_stays_bounded_and_answers(ctx):
    """Another flood, the same texts again and then new ones: answers are right (a text whose
    slot went to another is never run under the other's name), and the bound holds. AddNote's
    statement, built at run time too (it carries the caller's visibility clause) but used again
    and again, stays prepared under the same name throughout."""
    mine = ctx.leader.clue.ListClues(pb.ListCluesRequest(page_size=5), timeout=20)
    _, _, texts, current, names = prepared(ctx)
    before = names[texts.index(current)]
    flood(ctx, FLOOD + 200)
    again = ctx.leader.clue.ListClues(pb.ListCluesRequest(page_size=5), timeout=20)
    assert [c.id for c in again.clues] == [c.id for c in mine.clues]
    assert ctx.clue.id in [c.id for c in again.clues]
    _, n, texts, current, names = prepared(ctx)
    assert current in texts
    assert names[texts.index(current)] == before, "AddNote's statement was evicted by the flood"
    assert sum(1 for t in texts if LIST_MARK in t) <= BUILT_MAX
    assert n < 256


def lock_waiters(db):
    """clued's backends waiting for a heavyweight lock (a row lock shows as 'transactionid')."""
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'clued'"
                    " AND datname = current_database() AND wait_event_type = 'Lock'")
        return cur.fetchone()[0]


def on_each_session(own, submit, call):
    """call run once on each of the two sessions of clued's pool, whichever serves the rest
    (no table may have changed under their saved plans: the submissions would meet them).
    A submission of G2's waits on its unit's counter row, locked here, holding one session: call
    runs on the other. A submission of G3's, waiting likewise, then holds that other one; G2's
    lock goes, and call runs on the session G2's submission held. The counter rows exist (each
    unit submitted before)."""
    locks = []
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            held = []
            for n, unit in enumerate((own.w.G2, own.w.G3), 1):
                lock = own.pg.connect(own.dbname)
                locks.append(lock)
                lock.autocommit = False
                with lock.cursor() as cur:
                    cur.execute("SELECT 1 FROM clue_counters WHERE unit_id = %s FOR UPDATE", (unit.id,))
                    assert cur.rowcount == 1, f"{unit.code} has no counter row yet"
                held.append(ex.submit(submit, unit.member, f"held by {unit.code}"))
                harness.wait_for(lambda: lock_waiters(own.db) == n, timeout=20,
                                 what=f"{unit.code}'s submission waiting on its counter")
                if n == 1:
                    call()
            locks[0].rollback()
            held[0].result()
            call()
            locks[1].rollback()
            held[1].result()
    finally:
        for lock in locks:
            lock.close()


def test_a_column_type_changed_under_the_saved_plans(ctx):
    """An operator changes a column's type while clued runs (ALTER TABLE as a superuser). Every
    plan saved in clued's sessions that returns or takes the column then fails the same way
    until the session drops it: a prepared statement (0A000 "cached plan must not change
    result type"), a PL/pgSQL function's (42804 "type of parameter ... does not match that
    when preparing the plan"). Each call still answers: its session drops its statements and
    saved plans and runs the call again, once for the session. With one pool connection
    (dropping it would leave the pool without one: every waiting call failed) and with two,
    calls in parallel; with two, ListClues is prepared on each session before the change
    (on_each_session()), so that the ListClues after it meets a stale plan on whichever
    session runs it, unless that session met one already."""
    for pool in ("1", "2"):
        own = world.served(args=["--db-pool", pool, "--db-lock-timeout", "60000"])
        try:
            member, leader = own.w.G1.member, own.w.G1.leader

            def submit(user, title):
                return user.clue.SubmitClue(pb.SubmitClueRequest(
                    request_id=new_request_id(), title=title, summary="s",
                    source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=pb.SubjectPerson(name="王某"),
                    host_unit="h"), timeout=20)

            def listed():
                return [c.id for c in leader.clue.ListClues(pb.ListCluesRequest(), timeout=20).clues]

            def lists_the_first():
                assert known[0].id in listed()

            def round_of_calls(title):
                cl = submit(member, title)
                assert member.clue.GetClue(pb.GetClueRequest(clue_id=cl.id), timeout=20).title == title
                assert cl.id in listed()
                moved = leader.clue.RequestTransition(pb.RequestTransitionRequest(
                    clue_id=cl.id, expected_version=cl.version, target=cm.CLUE_STATE_PRELIMINARY_CHECK,
                    reason="r", request_id=new_request_id()), timeout=20).clue
                assert moved.state == cm.CLUE_STATE_PRELIMINARY_CHECK and moved.title == title
                return cl

            known = [round_of_calls(f"before {i}") for i in range(4)]  # every connection prepares
            if pool == "2":
                for unit in (own.w.G2, own.w.G3):
                    submit(unit.member, "a counter row")
                on_each_session(own, submit, lists_the_first)
            with own.db.cursor() as cur:
                cur.execute("ALTER TABLE clues ALTER COLUMN title TYPE varchar(500)")
            errors = []

            def get(cl):
                try:
                    assert member.clue.GetClue(pb.GetClueRequest(clue_id=cl.id), timeout=20).title == cl.title
                except (grpc.RpcError, AssertionError) as e:
                    errors.append(repr(e))
            threads = [threading.Thread(target=get, args=(known[i % 4],)) for i in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not errors, errors
            for i in range(4):
                round_of_calls(f"after {i}")
            log = own.srv.output()
            resets = log.count("the tables changed under the session's saved plans")
            assert 1 <= resets <= int(pool), f"{resets} sessions dropped their saved plans ({pool}):\n{log[-3000:]}"
            assert "no working connection" not in log and "database error" not in log, log[-3000:]
        finally:
            world.unserve(own)


def teardown(ctx):
    world.unserve(ctx)


if __name__ == "__main__":
    harness.run_tests(dict(globals()), setup=setup, teardown=teardown)
