"""Time and share bounds on the database pool, against the real clued and PostgreSQL.

A row locked from outside (psycopg2, SELECT ... FOR UPDATE) stands for a slow or stuck
concurrent change. Calls waiting on it fail with the lock-timeout status instead of holding
pool connections for ever; a statement running past --db-statement-timeout fails with
UNAVAILABLE; neither message carries SQL. Each test states what the server must still do for
an unrelated caller meanwhile, and asserts that it was served (never how fast).
"""

import concurrent.futures
import os
import subprocess
import sys
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chain  # noqa: E402
import harness  # noqa: E402
from harness import new_request_id  # noqa: E402
import world  # noqa: E402

S = harness.stubs()
pb = S.clue_pb2
cm = S.common_pb2
H = S.health_pb2
Code = grpc.StatusCode
SQL_WORDS = ("SELECT", "UPDATE", "FROM", "clue_apply_move", "pg_sleep", "FOR UPDATE")


def sleeper(ch):
    return ch.unary_unary("/clued.test.Debug/Sleep", request_serializer=H.HealthCheckRequest.SerializeToString,
                          response_deserializer=H.HealthCheckResponse.FromString)


def submit(user):
    return user.clue.SubmitClue(pb.SubmitClueRequest(
        request_id=new_request_id(), title="线索", summary="反映某某违规收受礼金",
        source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
        subject=pb.SubjectPerson(name="张三", position="处长", rank_level="正处"),
        host_unit="市发展改革委", violation_categories=["违反廉洁纪律"]), timeout=20)


def move_req(clue, reason="依据初步核实情况"):
    return pb.RequestTransitionRequest(clue_id=clue.id, expected_version=clue.version,
                                       target=cm.CLUE_STATE_PRELIMINARY_CHECK, reason=reason,
                                       request_id=new_request_id())


class Locked:
    """A clue row locked FOR UPDATE by an open transaction outside clued, until release()."""

    def __init__(self, pg, dbname, clue_id):
        self.conn = pg.connect(dbname)
        self.conn.autocommit = False
        with self.conn.cursor() as cur:
            cur.execute("SELECT id FROM clues WHERE id = %s FOR UPDATE", (clue_id,))
            assert cur.fetchone()[0] == clue_id

    def release(self):
        self.conn.rollback()
        self.conn.close()


def lock_waiters(db):
    """clued's backends waiting for a heavyweight lock (a row lock shows as 'transactionid')."""
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'clued'"
                    " AND wait_event_type = 'Lock' AND datname = current_database()")
        return cur.fetchone()[0]


def clue_state(db, clue_id):
    with db.cursor() as cur:
        cur.execute("SELECT state, version FROM clues WHERE id = %s", (clue_id,))
        row = cur.fetchone()
        cur.execute("SELECT count(*) FROM audit_events WHERE subject_type = 'clue' AND subject_id = %s",
                    (clue_id,))
        return row, cur.fetchone()[0]


def no_sql(msg):
    for w in SQL_WORDS:
        assert w not in msg, f"{w!r} in a client message: {msg!r}"


class Ctx:
    pass


def setup():
    c = Ctx()
    c.pg = harness.Postgres.get()
    c.dbname = c.pg.new_database()
    # Short bounds so that the tests see them fire; eight connections, the default pool. The
    # lock timeout bounds each lock wait, and a move can wait twice (PostgreSQL queues waiters
    # for one row on its tuple lock first): the statement timeout stays above two waits.
    c.srv = harness.Clued(c.pg.url(c.dbname), args=["--db-pool", "8", "--db-lock-timeout", "1000",
                                                      "--db-statement-timeout", "4000"]).start()
    c.w = world.build(c.srv)
    c.db = c.pg.connect(c.dbname)
    return c


def teardown(c):
    c.w.close()
    c.db.close()
    c.srv.stop()


# ---- flags ------------------------------------------------------------------------------------


def test_flags_are_documented_and_checked(c):
    out = subprocess.run([harness.CLUED, "help"], capture_output=True, text=True, timeout=30).stdout
    for flag in ("--db-statement-timeout", "--db-lock-timeout"):
        assert flag in out, f"{flag} missing from clued help"
    readme = open(os.path.join(harness.SRC, "README.md"), encoding="utf-8").read()
    for flag in ("--db-statement-timeout", "--db-lock-timeout"):
        assert f"`{flag}`" in readme, f"{flag} missing from the README configuration table"
    for bad in (["--db-lock-timeout", "0"], ["--db-statement-timeout", "x"], ["--db-lock-timeout", "-5"]):
        r = subprocess.run([harness.CLUED, "serve", *bad], capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and "must be a number" in r.stderr, (bad, r.returncode, r.stderr)


# ---- lock timeout -----------------------------------------------------------------------------


def test_eight_calls_on_a_locked_clue_fail_with_lock_timeout(c):
    """Eight moves of one clue wait on its row lock, one per pool connection. Each fails with
    ABORTED after --db-lock-timeout, nothing changes, and another user's call is served while
    the lock is still held."""
    w = c.w
    cl = submit(w.G1.member)
    before = clue_state(c.db, cl.id)
    lock = Locked(c.pg, c.dbname, cl.id)
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            t0 = time.monotonic()
            futs = [ex.submit(w.G1.leader.clue.RequestTransition, move_req(cl, f"r{i}"), timeout=60)
                    for i in range(8)]
            # Every pool connection waits on the lock now ...
            harness.wait_for(lambda: lock_waiters(c.db) == 8, timeout=20, what="eight lock waits")
            # ... and an unrelated call waits for a connection, but it is served.
            t1 = time.monotonic()
            other = w.G3.member.clue.ListClues(pb.ListCluesRequest(page_size=10), timeout=30)
            t_other = time.monotonic() - t1
            results = []
            for f in futs:
                try:
                    f.result()
                    results.append((Code.OK, ""))
                except grpc.RpcError as e:
                    results.append((e.code(), e.details()))
            t_all = time.monotonic() - t0
        assert other is not None
        assert all(code == Code.ABORTED for code, _ in results), results
        for _, msg in results:
            assert "locked" in msg and "retry" in msg, msg
            no_sql(msg)
        # Still locked: the calls ended by the timeout, not by the lock going away.
        assert lock_waiters(c.db) == 0
        assert clue_state(c.db, cl.id) == before
        print(f"8 moves on a locked clue: all ABORTED after {t_all * 1000:.0f} ms "
              f"(lock timeout 1000 ms); another user's ListClues, sent with the pool held, answered after {t_other * 1000:.0f} ms")
    finally:
        lock.release()
    # Once the lock is gone the same move succeeds, and the trail is whole.
    r = w.G1.leader.clue.RequestTransition(move_req(cl), timeout=20)
    assert r.clue.state == cm.CLUE_STATE_PRELIMINARY_CHECK and r.clue.version == cl.version + 1
    assert clue_state(c.db, cl.id)[1] == before[1] + 1
    chain.verify_subject(c.db, "clue", cl.id)


# ---- statement timeout ------------------------------------------------------------------------


def test_statement_timeout_ends_a_long_statement(c):
    """A statement running past --db-statement-timeout fails with UNAVAILABLE and a retry hint,
    without SQL in the message; its connection is usable again at once."""
    ch = grpc.insecure_channel(c.srv.addr)
    try:
        t0 = time.monotonic()
        try:
            sleeper(ch)(H.HealthCheckRequest(service="20"), timeout=60)
            raise AssertionError("a 20 s statement outlived a 4 s statement timeout")
        except grpc.RpcError as e:
            assert e.code() == Code.UNAVAILABLE, (e.code(), e.details())
            assert "timed out" in e.details() and "retry" in e.details(), e.details()
            no_sql(e.details())
        took = time.monotonic() - t0
        assert took < 15, took  # far below the 20 s the statement asked for
        print(f"pg_sleep(20) under a 4000 ms statement timeout: UNAVAILABLE after {took * 1000:.0f} ms")
        assert sleeper(ch)(H.HealthCheckRequest(service="0"), timeout=20).status == H.HealthCheckResponse.SERVING
    finally:
        ch.close()


if __name__ == "__main__":
    harness.run_tests(globals(), setup, teardown)
