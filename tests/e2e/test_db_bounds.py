"""Time and share bounds on the database pool, against the real clued and PostgreSQL.

A row locked from outside (psycopg2, SELECT ... FOR UPDATE) stands for a slow or stuck
concurrent change. Calls waiting on it fail with the lock-timeout status instead of holding
pool connections for ever; a statement running past --db-statement-timeout fails with
UNAVAILABLE; neither message carries SQL. A call whose client cancels, or whose deadline
passes, takes its query out of the queue or has the server stop it (pg_stat_activity shows
it gone), and a cancelled change is all or nothing. One HTTP/2 connection holds at most
--db-queue-per-conn requests, so a loop of reset streams cannot fill the queue. Each test
states what the server must still do for an unrelated caller meanwhile, and asserts that it
was served (never how fast).

Four servers share one database: A (eight connections, short timeouts), B (one connection,
long timeouts: only a cancel frees it), C (two connections, a 16-slot queue, 8 per HTTP/2
connection), D (four connections, two per user, 20 requests per user).

One user, however many calls and connections it uses, holds at most its share of the pool's
connections (--db-conns-per-user), and a freed connection goes first to the waiting call of
the user holding the fewest: a user whose calls are slow (here an authenticated test-build
sleep, standing for a heavy but allowed call) cannot make other users' calls wait for it.

Replies are bounded too: lists whose rows, each within its limits, sum past the 4 MiB a
default grpcio client (and cluectl) accepts come in pages of about 2 MiB with a next page
token (ListClues, ListJointCases, ListItems, ListAuditEvents, GetHistory, ListProposals,
ListRecusals), the pages hold every row exactly once, and cluectl follows them. A token of
ListProposals or ListRecusals holds its caller and filters: given by another caller or with
other filters, it is refused.
"""

import concurrent.futures
import contextlib
import json
import re
import os
import socket
import subprocess
import sys
import time
import types

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chain  # noqa: E402
import harness  # noqa: E402
import rawh2  # noqa: E402
from harness import new_request_id  # noqa: E402
import world  # noqa: E402

S = harness.stubs()
pb = S.clue_pb2
cm = S.common_pb2
H = S.health_pb2
Code = grpc.StatusCode
SQL_WORDS = ("SELECT", "UPDATE", "FROM", "clue_apply_move", "pg_sleep", "FOR UPDATE")
SLEEP = "/clued.test.Debug/Sleep"


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


def sleep_body(secs):
    return rawh2.grpc_frame(H.HealthCheckRequest(service=str(secs)).SerializeToString())


# grpcio shares one connection among channels to one address unless told otherwise.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def clue_stub(user, addr):
    """(channel, ClueService stub) for user on the server at addr: a connection of its own."""
    ch = grpc.insecure_channel(addr, options=OWN_CONNECTION)
    return ch, S.clue_pb2_grpc.ClueServiceStub(grpc.intercept_channel(ch, world._Auth(user.token)))


class Locked:
    """A row locked FOR UPDATE by an open transaction outside clued, until release(): the
    clue's row, or with audit=True its audit chain head, which a change of the clue locks
    last, after it has changed the clue row in the same transaction."""

    def __init__(self, pg, dbname, clue_id, audit=False):
        self.conn = pg.connect(dbname)
        self.conn.autocommit = False
        with self.conn.cursor() as cur:
            if audit:
                cur.execute("SELECT subject_id FROM audit_heads WHERE subject_type = 'clue' AND subject_id = %s"
                            " FOR UPDATE", (clue_id,))
            else:
                cur.execute("SELECT id FROM clues WHERE id = %s FOR UPDATE", (clue_id,))
            assert cur.fetchone()[0] == clue_id

    def release(self):
        self.conn.rollback()
        self.conn.close()


def clued_backends(db, condition):
    """How many of clued's backends on this database meet condition (SQL over pg_stat_activity)."""
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'clued'"
                    f" AND datname = current_database() AND {condition}")
        return cur.fetchone()[0]


def backends_now(db):
    """What clued's backends on this database do, one line each: for a failure's message."""
    with db.cursor() as cur:
        cur.execute("SELECT application_name, state, wait_event_type, left(query, 120) FROM pg_stat_activity"
                    " WHERE application_name LIKE 'clued%' AND datname = current_database()")
        return "\n".join(" | ".join(str(x) for x in r) for r in cur.fetchall())


def lock_waiters(db):
    """clued's backends waiting for a heavyweight lock (a row lock shows as 'transactionid')."""
    return clued_backends(db, "wait_event_type = 'Lock'")


def sleeping(db):
    """clued's backends running a Debug/Sleep statement."""
    return clued_backends(db, "state = 'active' AND query LIKE '%pg_sleep%'")


def request_recorded(db, request_id):
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM clue_requests WHERE request_id = %s", (request_id,))
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
    # --db-batch-inflight 0: every move goes to the database at once, alone, each holding a
    # pool connection (batched moves are test_batching's).
    c.srv = harness.Clued(c.pg.url(c.dbname), args=["--db-pool", "8", "--db-lock-timeout", "1000",
                                                      "--db-statement-timeout", "4000",
                                                      "--db-batch-inflight", "0"]).start()
    c.w = world.build(c.srv)
    c.db = c.pg.connect(c.dbname)
    # One connection that nothing but a cancel can free: no timeout fires within a test.
    c.srv_b = harness.Clued(c.pg.url(c.dbname), args=["--db-pool", "1", "--db-lock-timeout", "120000",
                                                        "--db-statement-timeout", "120000"]).start(migrate=False)
    # A small queue, and a share of it per HTTP/2 connection that leaves room for others.
    c.srv_c = harness.Clued(c.pg.url(c.dbname), args=["--db-pool", "2", "--db-queue", "16",
                                                        "--db-queue-per-conn", "8"]).start(migrate=False)
    # Four connections, of which one user holds at most two (the default, half the pool), and
    # 20 requests of one user waiting or running over all its connections. Principals stay
    # cached for a minute: a call's only request is then its own statement.
    c.srv_d = harness.Clued(c.pg.url(c.dbname), args=["--db-pool", "4", "--db-queue-per-conn", "12",
                                                        "--db-queue-per-user", "20", "--auth-cache-ttl", "60000",
                                                        "--db-statement-timeout", "20000",
                                                        "--db-lock-timeout", "20000"]).start(migrate=False)
    c.srv_d.wait_listening()
    return c


def teardown(c):
    c.w.close()
    c.db.close()
    for srv in (c.srv_d, c.srv_c, c.srv_b, c.srv):
        srv.stop()


# ---- flags ------------------------------------------------------------------------------------


def test_flags_are_documented_and_checked(c):
    out = subprocess.run([harness.CLUED, "help"], capture_output=True, text=True, timeout=30).stdout
    flags = ("--db-statement-timeout", "--db-lock-timeout", "--db-queue-per-conn", "--db-queue-per-user",
             "--db-conns-per-user", "--db-heavy-conns")
    for flag in flags:
        assert flag in out, f"{flag} missing from clued help"
    readme = open(os.path.join(harness.SRC, "README.md"), encoding="utf-8").read()
    for flag in flags:
        assert f"`{flag}`" in readme, f"{flag} missing from the README configuration table"
    for bad in (["--db-lock-timeout", "0"], ["--db-statement-timeout", "x"], ["--db-lock-timeout", "-5"],
                ["--db-queue-per-conn", "0"], ["--db-queue-per-user", "0"], ["--db-conns-per-user", "0"],
                ["--db-conns-per-user", "257"], ["--db-heavy-conns", "0"], ["--db-heavy-conns", "257"]):
        r = subprocess.run([harness.CLUED, "serve", *bad], capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and "must be a number" in r.stderr, (bad, r.returncode, r.stderr)


# ---- lock timeout -----------------------------------------------------------------------------


def test_eight_calls_on_a_locked_clue_fail_with_lock_timeout(c):
    """Eight moves of one clue by one user wait on its row lock: four at a time, the user's
    share of the eight pool connections. Each fails with ABORTED after --db-lock-timeout,
    nothing changes, and another user's call is served while the lock is still held."""
    w = c.w
    cl = submit(w.G1.member)
    before = clue_state(c.db, cl.id)
    lock = Locked(c.pg, c.dbname, cl.id)
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            t0 = time.monotonic()
            futs = [ex.submit(w.G1.leader.clue.RequestTransition, move_req(cl, f"r{i}"), timeout=60)
                    for i in range(8)]
            # The user's share of the pool waits on the lock now ...
            harness.wait_for(lambda: lock_waiters(c.db) == 4, timeout=20, what="four lock waits")
            assert lock_waiters(c.db) == 4, "one user holds more than half the pool"
            # ... and an unrelated call is served.
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
              f"(lock timeout 1000 ms); another user's ListClues, sent meanwhile, answered after {t_other * 1000:.0f} ms")
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


# ---- cancellation -----------------------------------------------------------------------------


def test_cancelled_call_waiting_on_a_lock_frees_its_connection(c):
    """On B's single connection a move waits on a locked clue, and another user's call queues
    behind it. The move's client cancels (RST_STREAM): its statement is stopped (the backend
    no longer waits, pg_stat_activity), and the other call is served while the lock is still
    held. The cancelled move changed nothing."""
    w = c.w
    cl = submit(w.G1.member)
    before = clue_state(c.db, cl.id)
    ch1, mover = clue_stub(w.G1.leader, c.srv_b.addr)
    ch2, other = clue_stub(w.G3.member, c.srv_b.addr)
    lock = Locked(c.pg, c.dbname, cl.id)
    try:
        req = move_req(cl)
        fut = mover.RequestTransition.future(req, timeout=120)
        harness.wait_for(lambda: lock_waiters(c.db) == 1, timeout=20, what="the move waiting on the lock")
        t0 = time.monotonic()
        queued = other.ListClues.future(pb.ListCluesRequest(page_size=10), timeout=60)
        time.sleep(0.3)
        assert not queued.done(), "the other call was served while the only connection was held"
        fut.cancel()
        resp = queued.result()  # served, with the lock still held
        t_other = time.monotonic() - t0
        assert resp is not None
        harness.wait_for(lambda: lock_waiters(c.db) == 0, timeout=10, what="the cancelled statement to stop")
        assert fut.cancelled()
        print(f"one-connection pool held by a lock wait: the queued ListClues answered "
              f"{t_other * 1000:.0f} ms after it was sent (0.3 s of it before the cancel)")
    finally:
        lock.release()
        ch1.close()
        ch2.close()
    assert clue_state(c.db, cl.id) == before
    assert request_recorded(c.db, req.request_id) == 0
    assert "cancelled by the peer" in c.srv_b.output()


def test_deadline_cancels_the_query(c):
    """A call whose grpc-timeout passes gets DEADLINE_EXCEEDED and its statement is stopped:
    a 50 s sleep and a move waiting on a lock both leave pg_stat_activity, and B's only
    connection serves the next call."""
    w = c.w
    ch = grpc.insecure_channel(c.srv_b.addr)
    try:
        try:
            sleeper(ch)(H.HealthCheckRequest(service="50"), timeout=1)
            raise AssertionError("a 50 s sleep finished within a 1 s deadline")
        except grpc.RpcError as e:
            assert e.code() == Code.DEADLINE_EXCEEDED, (e.code(), e.details())
        harness.wait_for(lambda: sleeping(c.db) == 0, timeout=10, what="the expired sleep to stop")
        assert sleeper(ch)(H.HealthCheckRequest(service="0"), timeout=20).status == H.HealthCheckResponse.SERVING
    finally:
        ch.close()
    cl = submit(w.G1.member)
    before = clue_state(c.db, cl.id)
    ch1, mover = clue_stub(w.G1.leader, c.srv_b.addr)
    lock = Locked(c.pg, c.dbname, cl.id)
    try:
        req = move_req(cl)
        try:
            mover.RequestTransition(req, timeout=1.5)
            raise AssertionError("a move on a locked clue succeeded")
        except grpc.RpcError as e:
            assert e.code() == Code.DEADLINE_EXCEEDED, (e.code(), e.details())
        harness.wait_for(lambda: lock_waiters(c.db) == 0, timeout=10, what="the expired move to stop waiting")
        ch2, other = clue_stub(w.G3.member, c.srv_b.addr)
        try:
            other.ListClues(pb.ListCluesRequest(page_size=10), timeout=20)  # lock still held
        finally:
            ch2.close()
    finally:
        lock.release()
        ch1.close()
    assert clue_state(c.db, cl.id) == before
    assert request_recorded(c.db, req.request_id) == 0


def _cancel_mid_change(c, how):
    """A move that has already changed the clue row when it is stopped, waiting on the audit
    chain's head (locked from outside). Then nothing of it remains, and a retry with the same
    request id applies it exactly once."""
    w = c.w
    cl = submit(w.G1.member)
    before = clue_state(c.db, cl.id)
    ch1, mover = clue_stub(w.G1.leader, c.srv_b.addr)
    lock = Locked(c.pg, c.dbname, cl.id, audit=True)
    req = move_req(cl)
    try:
        if how == "cancel":
            fut = mover.RequestTransition.future(req, timeout=120)
            harness.wait_for(lambda: lock_waiters(c.db) == 1, timeout=20, what="the move waiting on the audit head")
            # The move's transaction holds the clue row it updated: nobody else can lock it.
            with c.db.cursor() as cur:
                cur.execute("SELECT id FROM clues WHERE id = %s FOR UPDATE SKIP LOCKED", (cl.id,))
                assert cur.fetchall() == [], "the clue row is not changed yet: this proves nothing"
            fut.cancel()
        else:
            try:
                mover.RequestTransition(req, timeout=1.5)
                raise AssertionError("a move waiting on a locked audit head succeeded")
            except grpc.RpcError as e:
                assert e.code() == Code.DEADLINE_EXCEEDED, (e.code(), e.details())
        harness.wait_for(lambda: lock_waiters(c.db) == 0, timeout=10, what="the stopped move to roll back")
    finally:
        lock.release()
    try:
        assert clue_state(c.db, cl.id) == before
        assert request_recorded(c.db, req.request_id) == 0
        r = mover.RequestTransition(req, timeout=20)
        r2 = mover.RequestTransition(req, timeout=20)  # a retry returns the first result
        assert r.clue.version == before[0][1] + 1 and r2.clue.version == r.clue.version
        assert clue_state(c.db, cl.id) == ((r.clue.state and "PRELIMINARY_CHECK", r.clue.version), before[1] + 1)
        chain.verify_subject(c.db, "clue", cl.id)
    finally:
        ch1.close()


def test_cancelled_change_is_all_or_nothing(c):
    _cancel_mid_change(c, "cancel")


def test_expired_change_is_all_or_nothing(c):
    _cancel_mid_change(c, "deadline")


def test_many_cancelled_changes_leave_a_consistent_trail(c):
    c.srv.lines.clear()
    """Submissions and moves on A with deadlines of 2 to 80 ms, so that some end before, some
    during and some after their statement. Every clue has exactly one audit
    event per version, every chain verifies, and every recorded request names a clue."""
    w = c.w
    clues = [submit(w.G2.member) for _ in range(6)]

    def attempt(i):
        try:
            if i % 2:
                submit_req = pb.SubmitClueRequest(
                    request_id=new_request_id(), title=f"t{i}", summary="s",
                    source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=pb.SubjectPerson(name="李四"),
                    host_unit="市交通运输局")
                w.G2.member.clue.SubmitClue(submit_req, timeout=0.002 * (i % 40 + 1))
            else:
                cl = clues[i % len(clues)]
                w.G2.leader.clue.RequestTransition(move_req(cl), timeout=0.002 * (i % 40 + 1))
            return "ok"
        except grpc.RpcError as e:
            if e.code() not in (Code.DEADLINE_EXCEEDED, Code.ABORTED, Code.FAILED_PRECONDITION):
                print(f"attempt {i}: {e.code().name}: {e.details()}")
            return e.code().name

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        outcomes = list(ex.map(attempt, range(200)))
    counts = {k: outcomes.count(k) for k in set(outcomes)}
    print(f"200 changes with 2-80 ms deadlines: {counts}")
    assert "DEADLINE_EXCEEDED" in counts, counts
    # UNAVAILABLE: grpcio may reset a stream it cancelled before its HEADERS went out
    # (grpc/grpc#38758), an RST_STREAM on an idle stream that ends the connection (RFC 9113
    # 5.1), and the calls then on it fail. Accepted, with what the server logged printed,
    # since what this test checks is the state left behind.
    if "UNAVAILABLE" in counts:
        print("".join(ln for ln in c.srv.lines if "deadline" not in ln and "cancelled by" not in ln)[-5000:])
    assert set(counts) <= {"ok", "DEADLINE_EXCEEDED", "ABORTED", "FAILED_PRECONDITION", "CANCELLED",
                           "UNAVAILABLE"}, counts
    with c.db.cursor() as cur:
        cur.execute("SELECT c.id, c.version, (SELECT count(*) FROM audit_events e WHERE e.subject_type = 'clue'"
                    " AND e.subject_id = c.id) FROM clues c")
        for cid, version, events in cur.fetchall():
            assert events == version, f"clue {cid}: version {version} but {events} audit events"
        cur.execute("SELECT count(*) FROM clue_requests q WHERE q.clue_id IS NOT NULL"
                    " AND NOT EXISTS (SELECT 1 FROM clues c WHERE c.id = q.clue_id)")
        assert cur.fetchone()[0] == 0
    chain.verify(c.db, "clue")


# ---- one connection's share -------------------------------------------------------------------


def test_reset_stream_loop_cannot_fill_the_queue(c):
    """C has two connections and a 16-slot queue. A client reconnects again and again, each
    time opening 30 streams that sleep 5 s and resetting them all. Another user's ListClues
    from its own connection is served every time, and no sleep outlives the attack."""
    w = c.w
    stop = [False]
    rounds = [0]

    def attack():
        body = sleep_body(5)
        while not stop[0]:
            h = rawh2.RawH2(c.srv_c.addr)
            sids = [h.request(SLEEP, body) for _ in range(30)]
            for sid in sids:
                h.conn.reset_stream(sid, error_code=8)  # CANCEL
            h.flush()
            time.sleep(0.02)
            h.close()
            rounds[0] += 1

    ch, other = clue_stub(w.G3.member, c.srv_c.addr)
    t = concurrent.futures.ThreadPoolExecutor(1)
    fut = t.submit(attack)
    served = 0
    try:
        harness.wait_for(lambda: rounds[0] >= 3, timeout=30, what="the attack to start")
        for _ in range(10):
            other.ListClues(pb.ListCluesRequest(page_size=10), timeout=30)
            served += 1
            time.sleep(0.1)
    finally:
        stop[0] = True
        fut.result()
        t.shutdown()
        ch.close()
    assert served == 10
    harness.wait_for(lambda: sleeping(c.db) == 0, timeout=10, what="the reset sleeps to stop")
    print(f"{rounds[0]} reconnects of 30 reset streams each: another connection's ListClues served "
          f"{served} of 10 times")


def test_cancelled_calls_give_back_their_share(c):
    """C's two connections are busy with sleeps from another client. One HTTP/2 connection
    then opens and resets 40 authenticated calls, one after another: each waits in the queue
    for its token lookup when its reset arrives. Were they not taken off the queue, the
    connection would pass its share of 8 by the ninth; instead its next call is queued and
    served once the sleeps end."""
    w = c.w
    busy = rawh2.RawH2(c.srv_c.addr, timeout=60)
    h = rawh2.RawH2(c.srv_c.addr, timeout=60)
    try:
        sleeps = [busy.request(SLEEP, sleep_body(3)) for _ in range(2)]
        harness.wait_for(lambda: sleeping(c.db) == 2, timeout=20, what="both connections asleep")
        auth = [("authorization", "Bearer " + w.G3.member.token)]
        body = rawh2.grpc_frame(pb.ListCluesRequest(page_size=10).SerializeToString())
        path = "/clue.v1.ClueService/ListClues"
        for _ in range(40):
            sid = h.request(path, body, headers=auth)
            h.conn.reset_stream(sid, error_code=8)  # CANCEL
            h.flush()
        assert sleeping(c.db) == 2, "the sleeps ended during the resets: this proves nothing"
        r = h.call(path, body, headers=auth)
        assert r.grpc_status == 0, (r.grpc_status, r.grpc_message)
        for sid in sleeps:
            assert busy.wait(sid).grpc_status == 0
    finally:
        h.close()
        busy.close()


def test_one_connection_holds_a_bounded_share(c):
    """One HTTP/2 connection opens 20 streams of 1 s sleeps on C (two connections, 16 queue
    slots, 8 per connection): 8 are taken and the other 12 fail at once with
    RESOURCE_EXHAUSTED naming the limit; another connection's call is queued and served."""
    w = c.w
    h = rawh2.RawH2(c.srv_c.addr, timeout=60)
    ch, other = clue_stub(w.G3.member, c.srv_c.addr)
    try:
        body = sleep_body(1)
        sids = [h.request(SLEEP, body) for _ in range(20)]
        refused = 0
        while refused < 12:
            assert h.pump(), "connection closed"
            refused = sum(1 for sid in sids if h.responses[sid].ended
                          and h.responses[sid].grpc_status == Code.RESOURCE_EXHAUSTED.value[0])
        for sid in sids:
            r = h.responses[sid]
            if r.ended:
                assert "limit 8" in r.grpc_message and "retry" in r.grpc_message, r.grpc_message
        assert other.ListClues(pb.ListCluesRequest(page_size=10), timeout=30) is not None
        for sid in sids:
            h.wait(sid)
        ok = sum(1 for sid in sids if h.responses[sid].grpc_status == 0)
        assert ok == 8 and refused == 12, (ok, refused)
    finally:
        h.close()
        ch.close()
    assert "too many calls waiting for the database" in c.srv_c.output()


def user_sleeper(user, addr):
    """(channel, callable) for an authenticated Debug/SleepAsCaller as user: a connection of
    its own."""
    ch = grpc.intercept_channel(grpc.insecure_channel(addr, options=OWN_CONNECTION), world._Auth(user.token))
    return ch, ch.unary_unary("/clued.test.Debug/SleepAsCaller",
                              request_serializer=H.HealthCheckRequest.SerializeToString,
                              response_deserializer=H.HealthCheckResponse.FromString)


class Finishes:
    """Futures whose completions are numbered in the order they arrive."""

    def __init__(self):
        self.order = []
        self.futures = {}

    def add(self, name, fut):
        self.futures[name] = fut
        fut.add_done_callback(lambda f: self.order.append(name))
        return fut

    def before(self, name, prefix):
        """How many futures whose name starts with prefix finished before name did."""
        return sum(1 for n in self.order[:self.order.index(name)] if n.startswith(prefix))


def test_one_user_holds_at_most_half_the_pool(c):
    """On D (four connections), G1's member keeps six 2 s calls in flight: two run, four
    wait. G2's member then lists clues and G3's member makes a call of the same kind: both
    are answered before any of the first user's calls ends. Before the share existed the first
    user ran four and the others waited behind the rest."""
    w = c.w
    fin = Finishes()
    chans = []
    try:
        ch, heavy = user_sleeper(w.G1.member, c.srv_d.addr)
        chans.append(ch)
        for i in range(6):
            fin.add(f"heavy{i}", heavy.future(H.HealthCheckRequest(service="2"), timeout=60))
        harness.wait_for(lambda: sleeping(c.db) >= 2, timeout=20, what="the first user's calls running")
        time.sleep(0.3)
        assert sleeping(c.db) == 2, "one user runs more than half the pool"
        ch, other = clue_stub(w.G2.member, c.srv_d.addr)
        chans.append(ch)
        ch, third = user_sleeper(w.G3.member, c.srv_d.addr)
        chans.append(ch)
        fin.add("list", other.ListClues.future(pb.ListCluesRequest(page_size=10), timeout=60))
        fin.add("third", third.future(H.HealthCheckRequest(service="0"), timeout=60))
        fin.futures["list"].result()
        fin.futures["third"].result()
        assert fin.before("list", "heavy") == 0 and fin.before("third", "heavy") == 0, fin.order
        for i in range(6):
            assert fin.futures[f"heavy{i}"].result().status == H.HealthCheckResponse.SERVING
    finally:
        for ch in chans:
            ch.close()


def test_a_freed_connection_goes_to_the_user_holding_fewest(c):
    """G1's and G3's members keep six 1.5 s calls in flight each: together they hold all four
    connections of D, and eight of their calls wait. A call of G2's member comes after those
    eight, yet takes the first connection freed: at most the four calls that were running end
    before it. In arrival order it would have waited for two more rounds."""
    w = c.w
    fin = Finishes()
    chans = []
    try:
        ch, late = user_sleeper(w.G2.member, c.srv_d.addr)
        chans.append(ch)
        heavies = []
        for user in (w.G1.member, w.G3.member):
            ch, heavy = user_sleeper(user, c.srv_d.addr)
            chans.append(ch)
            heavies.append(heavy)
        for call in [late] + heavies:
            call(H.HealthCheckRequest(service="0"), timeout=60)  # each principal is cached now
        for name, heavy in zip("ab", heavies):
            for i in range(6):
                fin.add(f"heavy-{name}{i}", heavy.future(H.HealthCheckRequest(service="1.5"), timeout=60))
        harness.wait_for(lambda: sleeping(c.db) == 4, timeout=20, what="all four connections asleep")
        fin.add("late", late.future(H.HealthCheckRequest(service="0"), timeout=60))
        fin.futures["late"].result()
        assert fin.before("late", "heavy") <= 4, fin.order
        for f in fin.futures.values():
            f.result()
    finally:
        for ch in chans:
            ch.close()


def test_one_user_waits_for_a_bounded_share_over_its_connections(c):
    """G1's member opens three connections to D, with ten 1 s calls on each. The user may have
    20 requests waiting or running over all its connections: ten are refused at once with
    RESOURCE_EXHAUSTED naming that limit, while each connection is well within its own 12.
    Another user's call is served meanwhile, and the twenty taken all succeed."""
    w = c.w
    fin = Finishes()
    chans = []
    try:
        for k in range(3):
            ch, heavy = user_sleeper(w.G1.member, c.srv_d.addr)
            chans.append(ch)
            for i in range(10):
                fin.add(f"heavy{k}-{i}", heavy.future(H.HealthCheckRequest(service="1"), timeout=60))
        ch, other = clue_stub(w.G2.member, c.srv_d.addr)
        chans.append(ch)
        assert other.ListClues(pb.ListCluesRequest(page_size=10), timeout=60) is not None
        ok = refused = 0
        for f in fin.futures.values():
            try:
                f.result()
                ok += 1
            except grpc.RpcError as e:
                assert e.code() == Code.RESOURCE_EXHAUSTED, (e.code(), e.details())
                assert "limit 20 over all your connections" in e.details(), e.details()
                no_sql(e.details())
                refused += 1
        assert (ok, refused) == (20, 10)
    finally:
        for ch in chans:
            ch.close()


def test_batched_calls_count_against_the_connection_and_the_user(c):
    """GetClue goes through the batcher (service/batch.c), which waits for its own statements,
    not the pool's queue: its calls still count against --db-queue-per-conn and
    --db-queue-per-user while they wait. With the clues table locked, G1's member sends 15
    GetClues on one connection of D (12 per connection): 3 are refused at once; then ten more
    on each of two more connections: with 12 already waiting, 8 are taken (20 for the user)
    and 12 refused. G2's member's GetClue is queued meanwhile, and every call taken
    succeeds once the lock goes."""
    w = c.w
    mine, theirs = submit(w.G1.member), submit(w.G2.member)
    chans, fin = [], Finishes()
    locker = c.pg.connect(c.dbname)
    locker.autocommit = False
    try:
        stubs = []
        for _ in range(3):
            ch, stub = clue_stub(w.G1.member, c.srv_d.addr)
            chans.append(ch)
            assert stub.GetClue(pb.GetClueRequest(clue_id=mine.id), timeout=30).id == mine.id  # principal cached
            stubs.append(stub)
        ch, other = clue_stub(w.G2.member, c.srv_d.addr)
        chans.append(ch)
        assert other.GetClue(pb.GetClueRequest(clue_id=theirs.id), timeout=30).id == theirs.id
        locker.cursor().execute("LOCK TABLE clues IN ACCESS EXCLUSIVE MODE")

        def outcome(f):
            try:
                return ("ok", f.result().id)
            except grpc.RpcError as e:
                assert e.code() == Code.RESOURCE_EXHAUSTED, (e.code(), e.details())
                no_sql(e.details())
                return ("refused", e.details())

        first = [fin.add(f"c0-{i}", stubs[0].GetClue.future(pb.GetClueRequest(clue_id=mine.id), timeout=60))
                 for i in range(15)]
        harness.wait_for(lambda: sum(1 for f in first if f.done()) == 3, what="three refused on the connection")
        done = [outcome(f) for f in first if f.done()]
        assert all(o == "refused" and "on this connection (limit 12)" in d for o, d in done), done
        more = [fin.add(f"c{k}-{i}", stubs[k].GetClue.future(pb.GetClueRequest(clue_id=mine.id), timeout=60))
                for k in (1, 2) for i in range(10)]
        harness.wait_for(lambda: sum(1 for f in more if f.done()) == 12, what="twelve refused for the user")
        done = [outcome(f) for f in more if f.done()]
        assert all(o == "refused" and "limit 20 over all your connections" in d for o, d in done), done
        theirs_f = other.GetClue.future(pb.GetClueRequest(clue_id=theirs.id), timeout=60)
        time.sleep(0.3)
        assert not theirs_f.done(), "another user's call was not queued"
        locker.rollback()
        assert theirs_f.result().id == theirs.id
        results = [outcome(f) for f in first + more]
        assert sum(1 for o, _ in results if o == "ok") == 20, results
    finally:
        locker.close()
        for ch in chans:
            ch.close()


class LookupFlood:
    """Strangers sending `per` calls with made-up tokens from each of n addresses (127.0.0.2
    on), each on a connection of its own."""

    def __init__(self, addr, n, per):
        self.conns = [rawh2.RawH2(addr, timeout=60, source=f"127.0.0.{2 + k}") for k in range(n)]
        body = rawh2.grpc_frame(pb.ListCluesRequest(page_size=1).SerializeToString())
        self.sids = [[h.request("/clue.v1.ClueService/ListClues", body,
                                headers=[("authorization", f"Bearer ct_{k:02d}{i:062d}")]) for i in range(per)]
                     for k, h in enumerate(self.conns)]

    def ended(self):
        return [h.responses[sid] for h, ss in zip(self.conns, self.sids) for sid in ss if h.responses[sid].ended]

    def settle(self, n):
        """Read until n calls have ended (or 30 s), and a little longer; the calls ended."""
        deadline = time.monotonic() + 30
        while len(self.ended()) < n and time.monotonic() < deadline:
            self.pump(0.2)
        time.sleep(0.5)
        self.pump(0.2)
        return self.ended()

    def pump(self, wait):
        for h in self.conns:
            h.sock.settimeout(wait)
            try:
                assert h.pump(), "connection closed"
            except socket.timeout:
                pass
            h.sock.settimeout(60)

    def finish(self):
        for h, ss in zip(self.conns, self.sids):
            for sid in ss:
                assert h.wait(sid).grpc_status in (Code.UNAUTHENTICATED.value[0], Code.UNAVAILABLE.value[0])

    def close(self):
        for h in self.conns:
            h.close()


@contextlib.contextmanager
def lookup_scene(c, cache_ttl):
    """(server, lock, user): a server of two pool connections and a 64-request queue, so that
    all token lookups together may have 32 waiting (a quarter of the queue, at least
    --db-queue-per-conn), principals cached for cache_ttl ms; a database connection in a
    transaction of its own; G2's member's ClueService stub, its token known to the server.
    Whatever LookupFlood the body keeps in scene.flood is closed with them."""
    srv = harness.Clued(c.pg.url(c.dbname), args=["--db-pool", "2", "--db-queue", "64", "--db-queue-per-conn", "32",
                                                    "--db-lock-timeout", "60000", "--auth-cache-ttl", str(cache_ttl)]
                        ).start(migrate=False).wait_listening()
    lock = c.pg.connect(c.dbname)
    lock.autocommit = False
    ch, user = clue_stub(c.w.G2.member, srv.addr)
    scene = types.SimpleNamespace(srv=srv, lock=lock, user=user, flood=None)
    try:
        assert user.ListClues(pb.ListCluesRequest(page_size=1), timeout=30) is not None  # its token known
        yield scene
    finally:
        lock.rollback()
        lock.close()
        if scene.flood:
            scene.flood.close()
        ch.close()
        srv.stop()


def lock_tokens(scene):
    with scene.lock.cursor() as cur:
        cur.execute("LOCK TABLE tokens IN ACCESS EXCLUSIVE MODE")


def test_token_lookups_hold_one_share(c):
    """Token lookups, before anyone is known, count together as one user's requests (32
    here). With the tokens table locked (so every lookup waits), strangers send 10 calls with
    made-up tokens from each of five addresses: 32 lookups wait, the other 18 calls are
    refused at once with UNAVAILABLE (server busy, naming the limit), and the lookups hold
    one pool connection. A user whose principal is cached is served on the other meanwhile.
    Before, each address had a share of its own: two held both connections, and five filled
    the queue."""
    with lookup_scene(c, 60000) as scene:
        lock_tokens(scene)
        scene.flood = LookupFlood(scene.srv.addr, 5, 10)
        got = scene.flood.settle(18)
        assert len(got) == 18, [(r.grpc_status, r.grpc_message) for r in got]
        for r in got:
            assert r.grpc_status == Code.UNAVAILABLE.value[0], (r.grpc_status, r.grpc_message)
            assert "too many callers being authenticated (limit 32)" in r.grpc_message, r.grpc_message
        try:
            assert scene.user.ListClues(pb.ListCluesRequest(page_size=1), timeout=10) is not None
        except grpc.RpcError as e:
            raise AssertionError(f"{e.code()}: {e.details()}\n{backends_now(c.db)}\n{scene.srv.output()[-3000:]}")
        scene.lock.rollback()
        scene.flood.finish()


def test_a_known_token_is_renewed_out_of_the_strangers_way(c):
    """A principal stays cached for --auth-cache-ttl (300 ms here); then its token is looked
    up again. That renewal counts against its own user, not with strangers' lookups: with the
    strangers' share full (the tokens table locked, 50 made-up tokens from five addresses), a
    user who authenticated a moment ago is not refused as busy, and is served once the lookups
    answer."""
    with lookup_scene(c, 300) as scene:
        time.sleep(0.5)  # its principal expired from the cache
        lock_tokens(scene)
        scene.flood = LookupFlood(scene.srv.addr, 5, 10)
        assert len(scene.flood.settle(18)) == 18
        call = scene.user.ListClues.future(pb.ListCluesRequest(page_size=1), timeout=60)
        time.sleep(1)
        assert not call.done(), call.exception()
        scene.lock.rollback()
        assert call.result() is not None
        scene.flood.finish()


def test_watch_catch_up_reads_count_against_their_user(c):
    """D started after the world was built, so a WatchEvents from seq 0 reads the older events
    from the database. With the event table locked (ACCESS EXCLUSIVE, from outside), the
    auditor's six such streams wait on the lock on two of D's four connections, its share
    (and the heavy calls' share: a catch-up read is WatchEvents', a heavy method's); D's audit
    tail waits on a third. Another user's light call (GetClue) is served on the fourth while
    the lock is still held. Before, the catch-up reads counted against no one and took every
    connection left."""
    w = c.w
    lock = c.pg.connect(c.dbname)
    lock.autocommit = False
    ch = grpc.intercept_channel(grpc.insecure_channel(c.srv_d.addr, options=OWN_CONNECTION),
                                world._Auth(w.auditor.token))
    audit = S.audit_pb2_grpc.AuditServiceStub(ch)
    ch2, other = clue_stub(w.G2.member, c.srv_d.addr)
    streams = []
    catching_up = "state = 'active' AND wait_event_type = 'Lock' AND query LIKE 'WITH ok AS MATERIALIZED%'"
    try:
        audit.ListAuditEvents(au.ListAuditEventsRequest(page_size=1), timeout=30)  # principal cached
        with c.db.cursor() as cur:
            cur.execute("SELECT max(seq) FROM audit_events")
            last = cur.fetchone()[0]
        assert other.ListClues(pb.ListCluesRequest(page_size=10), timeout=30) is not None
        theirs = submit(w.G2.member)
        # A stream at the present keeps D's tail following the log (it starts with a read of
        # the table, which the lock would hold).
        keeper = audit.WatchEvents(au.WatchEventsRequest(after_seq=last, heartbeat_seconds=1),
                                   timeout=120)
        streams.append(keeper)
        next(keeper)
        with lock.cursor() as cur:
            cur.execute("LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE")
        streams += [audit.WatchEvents(au.WatchEventsRequest(after_seq=0), timeout=120) for _ in range(6)]
        harness.wait_for(lambda: clued_backends(c.db, catching_up) >= 2, timeout=20,
                         what="catch-up reads waiting on the lock")
        time.sleep(0.3)
        assert clued_backends(c.db, catching_up) == 2, "one user's catch-up reads hold more than its share"
        try:
            assert other.GetClue(pb.GetClueRequest(clue_id=theirs.id), timeout=10).id == theirs.id
        except grpc.RpcError as e:
            raise AssertionError(f"{e.code()}: {e.details()}\n{backends_now(c.db)}\n{c.srv_d.output()[-3000:]}")
        lock.rollback()
        for s in streams[1:]:
            assert next(s).seq == 1
    finally:
        lock.rollback()
        lock.close()
        for s in streams:
            s.cancel()
        ch2.close()
        ch.close()


# ---- reply sizes ------------------------------------------------------------------------------

MAX_REPLY = 4 * 1024 * 1024  # what a grpcio client (and cluectl) accepts by default
BIG = "反" * 6666  # 19,998 bytes: a summary, basis or description at its 20,000-byte limit
cs = S.case_pb2
rp = S.rectification_pb2
au = S.audit_pb2


def in_parallel(fn, n, workers=6):
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        return list(ex.map(fn, range(n)))


def all_pages(method, req, field, key=lambda x: x.id):
    """The keys of every row of a list, following next_page_token, and the number of pages.
    Each page arrived whole at a default grpcio client; no row comes twice."""
    keys, n = [], 0
    while True:
        resp = method(req, timeout=60)
        n += 1
        assert 0 < resp.ByteSize() < MAX_REPLY, resp.ByteSize()
        keys += [key(x) for x in getattr(resp, field)]
        if not resp.next_page_token:
            break
        assert getattr(resp, field), "a page with no rows but a next page"
        req.page_token = resp.next_page_token
    assert len(keys) == len(set(keys)), "a row came twice"
    return keys, n


def sql_ids(c, query):
    with c.db.cursor() as cur:
        cur.execute(query)
        return [r[0] for r in cur.fetchall()]


def cluectl_json(c, user, *args):
    r = harness.cluectl("--server", c.srv.addr, "--json", *args, env={"CLUED_TOKEN": user.token}, check=0)
    return json.loads(r.stdout)


def test_list_clues_of_the_largest_page_arrive_in_pages(c):
    m = c.w.G1.member

    def sub(i):
        m.clue.SubmitClue(pb.SubmitClueRequest(
            request_id=new_request_id(), title=f"线索{i}", summary=BIG, source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
            subject=pb.SubjectPerson(name="张三"), host_unit="市发展改革委"), timeout=60)
    in_parallel(sub, 220)
    every = sql_ids(c, "SELECT id FROM clues ORDER BY id DESC")
    g1 = sql_ids(c, f"SELECT id FROM clues WHERE owner_unit = {c.w.G1.id} ORDER BY id DESC")
    # 220 clues of 20 KB: more than a default client takes in one reply of the largest page.
    got, pages = all_pages(c.w.auditor.clue.ListClues, pb.ListCluesRequest(page_size=500), "clues")
    assert got == every and pages >= 3, (len(got), len(every), pages)
    for who in (c.w.R1.leader, c.w.G1.member):  # the liaison room, the owner unit
        got, pages = all_pages(who.clue.ListClues, pb.ListCluesRequest(page_size=500), "clues")
        assert set(g1) <= set(got) and pages >= 3, (who, len(got), len(g1), pages)
    out = cluectl_json(c, c.w.R1.leader, "clue", "list", "--all")
    assert [int(x["id"]) for x in out["clues"]] == all_pages(
        c.w.R1.leader.clue.ListClues, pb.ListCluesRequest(page_size=500), "clues")[0]


def test_list_joint_cases_and_items_arrive_in_pages(c):
    lr = c.w.R1.leader

    def case(i):
        lr.case.CreateJointCase(cs.CreateJointCaseRequest(
            title=f"案{i}", basis=BIG, participant_unit_ids=[c.w.X1.id], request_id=new_request_id()), timeout=60)

    def item(i):
        lr.rect.CreateItem(rp.CreateItemRequest(
            host_unit="某单位", description=BIG, category="c", source=rp.RECTIFICATION_SOURCE_SUPERVISION,
            deadline_ms=int(time.time() * 1000) + 30 * 86400000, request_id=new_request_id()), timeout=60)
    in_parallel(case, 210)
    in_parallel(item, 220)
    cases = sql_ids(c, "SELECT id FROM joint_cases ORDER BY id DESC")
    assert len(cases) >= 210
    # ListJointCases had no pages: 210 cases of 20 KB failed for everyone who sees them.
    for who in (c.w.auditor, c.w.X1.leader, lr):
        got, pages = all_pages(who.case.ListJointCases, cs.ListJointCasesRequest(), "cases")
        assert got == cases and pages >= 3, (who, len(got), pages)
    out = cluectl_json(c, c.w.X1.leader, "case", "list", "--all")
    assert [int(x["id"]) for x in out["cases"]] == cases
    # Without --all, one page and the token of the next, which lists the rest.
    r = harness.cluectl("--server", c.srv.addr, "case", "list", env={"CLUED_TOKEN": c.w.X1.leader.token}, check=0)
    token = re.search(r"--page-token (\S+)", r.stderr).group(1)
    out = cluectl_json(c, c.w.X1.leader, "case", "list", "--page-token", token)
    assert 0 < len(out["cases"]) < len(cases) and int(out["cases"][-1]["id"]) in cases
    items = sql_ids(c, "SELECT id FROM rect_items ORDER BY id DESC")
    got, pages = all_pages(c.w.auditor.rect.ListItems, rp.ListItemsRequest(page_size=500), "items")
    assert got == items and pages >= 3, (len(got), pages)
    out = cluectl_json(c, c.w.auditor, "rect", "list", "--all")
    assert [int(x["id"]) for x in out["items"]] == items
    # Their events carry the bases and descriptions: the audit trail's pages are bounded too.
    seqs = sql_ids(c, "SELECT seq FROM audit_events ORDER BY seq")
    got, pages = all_pages(c.w.auditor.audit.ListAuditEvents, au.ListAuditEventsRequest(page_size=500),
                           "events", key=lambda e: e.seq)
    assert got == seqs and pages >= 4, (len(got), len(seqs), pages)
    r = harness.cluectl("--server", c.srv.addr, "audit", "list", "--all", env={"CLUED_TOKEN": c.w.auditor.token},
                        check=0)
    assert r.stdout.count("case.create") >= 210


def test_a_long_history_arrives_in_pages(c):
    w = c.w
    clue = submit(w.G1.member)
    # Events with the longest reasons (4,096 bytes): a page ends by its size...
    for i in range(300):
        for method in (w.G1.leader.clue.AssignHandler, w.G1.leader.clue.UnassignHandler):
            req_cls = pb.AssignHandlerRequest if method == w.G1.leader.clue.AssignHandler else pb.UnassignHandlerRequest
            method(req_cls(clue_id=clue.id, user_id=w.G1.member.id, reason="理" * 1365 + str(i % 10),
                           request_id=new_request_id()), timeout=30)
    # ...and a clue's notes, added by anyone who sees it (here the liaison room's member,
    # through the function AddNote calls, in one statement), make it long: past 4 MiB in all.
    with c.db.cursor() as cur:
        cur.execute("SELECT count(*) FROM (SELECT note_add(%s, %s, gen_random_uuid(), %s, %s, %s, 'OTHER', 'x')"
                    " FROM generate_series(1, 6000)) n",
                    (w.R1.member.id, w.R1.id, int(time.time() * 1000), clue.id, w.G1.id))
    seqs = sql_ids(c, f"SELECT seq FROM audit_events WHERE subject_type = 'clue' AND subject_id = {clue.id}"
                      " ORDER BY seq")
    assert len(seqs) > 6600
    for who in (w.auditor, w.G1.member, w.R1.member):
        got, pages = all_pages(who.clue.GetHistory, pb.GetHistoryRequest(clue_id=clue.id), "events",
                               key=lambda e: e.seq)
        assert got == seqs and pages >= 3, (who, len(got), len(seqs), pages)
    first = w.auditor.clue.GetHistory(pb.GetHistoryRequest(clue_id=clue.id), timeout=60)
    assert 1.5 * 2**20 < first.ByteSize() < 2.5 * 2**20 and len(first.events) < 1000, first.ByteSize()
    try:
        w.auditor.clue.GetHistory(pb.GetHistoryRequest(clue_id=clue.id, page_token="nope"), timeout=10)
        assert False, "a made-up page token was taken"
    except grpc.RpcError as e:
        assert e.code() == Code.INVALID_ARGUMENT, e.details()
    # A page token holds its clue: given for another clue, it is refused, not read as a
    # position in that clue's history (which would cut it short).
    other = w.G1.member.clue.SubmitClue(pb.SubmitClueRequest(
        request_id=new_request_id(), title="另一条", summary="s", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
        subject=pb.SubjectPerson(name="张三"), host_unit="市发展改革委"), timeout=20)
    try:
        w.auditor.clue.GetHistory(pb.GetHistoryRequest(clue_id=other.id, page_token=first.next_page_token), timeout=10)
        assert False, "another clue's page token was taken"
    except grpc.RpcError as e:
        assert e.code() == Code.INVALID_ARGUMENT and "another clue" in e.details(), e.details()
    out = cluectl_json(c, w.auditor, "clue", "history", str(clue.id), "--all")
    assert [int(e["seq"]) for e in out["events"]] == seqs


def refused_token(method, req):
    """The call is refused with INVALID_ARGUMENT naming page_token."""
    try:
        method(req, timeout=30)
    except grpc.RpcError as e:
        assert e.code() == Code.INVALID_ARGUMENT and "page_token" in e.details(), (e.code(), e.details())
        return
    assert False, f"a page token was taken: {req}"


def test_decided_proposals_arrive_in_pages(c):
    w = c.w
    clue = submit(w.G1.member)
    text = "理" * 1365  # 4,095 bytes: a reason and a review comment within their 4,096-byte limit
    # A room that has reviewed 600 proposals with long reasons and comments (planted as rows:
    # the list reads nothing else): about 5 MB, newest 600.
    with c.db.cursor() as cur:
        cur.execute("INSERT INTO proposals (clue_id, owner_unit, from_state, target, reason, proposer_user,"
                    " proposer_unit, reviewer_unit, status, clue_version, review_comment, reviewed_by, created_at,"
                    " decided_at) SELECT %s, %s, 'PRELIMINARY_CHECK', 'FILED', %s || g, %s, %s, %s, 'REJECTED', 1,"
                    " %s || g, %s, now(), now() FROM generate_series(1, 600) g",
                    (clue.id, w.G1.id, text, w.G1.leader.id, w.G1.id, w.R1.id, text, w.R1.leader.id))
    every = sql_ids(c, "SELECT id FROM proposals ORDER BY id DESC")
    to_r1 = sql_ids(c, f"SELECT id FROM proposals WHERE reviewer_unit = {w.R1.id} ORDER BY id DESC")
    of_g1 = sql_ids(c, f"SELECT id FROM proposals WHERE {w.G1.id} IN (reviewer_unit, proposer_unit) ORDER BY id DESC")
    planted = sql_ids(c, f"SELECT id FROM proposals WHERE clue_id = {clue.id} ORDER BY id DESC")
    assert len(planted) == 600
    to_review = pb.ListProposalsRequest.SCOPE_TO_REVIEW
    for who, scope, want in ((w.R1.leader, to_review, to_r1), (w.G1.leader, 0, of_g1), (w.auditor, 0, every)):
        got, pages = all_pages(who.clue.ListProposals, pb.ListProposalsRequest(scope=scope, include_decided=True),
                               "proposals")
        assert got == want and pages >= 3, (who, len(got), len(want), pages)
    # A client that knows no page token (older than it) gets the newest page whole.
    first = w.R1.leader.clue.ListProposals(pb.ListProposalsRequest(scope=to_review, include_decided=True),
                                           timeout=60)
    assert 1.5 * 2**20 < first.ByteSize() < 2.5 * 2**20 and first.next_page_token, first.ByteSize()
    assert [p.id for p in first.proposals] == to_r1[:len(first.proposals)]
    # The pending list is another list: the token of the decided one is refused there, and so is
    # another scope's, another clue's, another caller's and a made-up one.
    tok = first.next_page_token
    for who, req in ((w.R1.leader, pb.ListProposalsRequest(scope=to_review, page_token=tok)),
                     (w.R1.leader, pb.ListProposalsRequest(include_decided=True, page_token=tok)),
                     (w.R1.leader, pb.ListProposalsRequest(scope=to_review, include_decided=True, clue_id=clue.id,
                                                           page_token=tok)),
                     (w.R1.member, pb.ListProposalsRequest(scope=to_review, include_decided=True, page_token=tok)),
                     (w.auditor, pb.ListProposalsRequest(include_decided=True, page_token=tok)),
                     (w.R1.leader, pb.ListProposalsRequest(scope=to_review, include_decided=True, page_token="nope"))):
        refused_token(who.clue.ListProposals, req)
    nxt = w.R1.leader.clue.ListProposals(pb.ListProposalsRequest(scope=to_review, include_decided=True,
                                                                 page_token=tok), timeout=60)
    assert nxt.proposals[0].id == to_r1[len(first.proposals)]
    # cluectl lists every page, with --all (decided ones too) and with --clue.
    out = cluectl_json(c, w.auditor, "clue", "proposals", "--all")
    assert [int(p["id"]) for p in out["proposals"]] == every and "nextPageToken" not in out, len(out["proposals"])
    out = cluectl_json(c, w.G1.leader, "clue", "proposals", "--raised", "--all", "--clue", str(clue.id))
    assert [int(p["id"]) for p in out["proposals"]] == planted
    r = harness.cluectl("--server", c.srv.addr, "clue", "proposals", "--to-review", "--all",
                        env={"CLUED_TOKEN": w.R1.leader.token}, check=0)
    assert len(re.findall(r"^#\d+ ", r.stdout, re.M)) == len(to_r1) and "--page-token" not in r.stderr, r.stderr


def test_recusals_arrive_in_pages(c):
    w = c.w
    clue = submit(w.G1.member)
    # 1,100 users of G1 with names of 100 characters (300 bytes, the longest an ADMIN gives),
    # each recused from the clue by G1's leader with a 4,095-byte reason, through the function
    # RecordRecusal calls: 1,000 of them alone pass 4 MiB.
    with c.db.cursor() as cur:
        cur.execute("INSERT INTO users (unit_id, name, role) SELECT %s, repeat('回', 96) || lpad(g::text, 4, '0'),"
                    " 'MEMBER' FROM generate_series(1, 1100) g", (w.G1.id,))
        cur.execute("SELECT count(*) FROM (SELECT clue_recuse(%s, %s, gen_random_uuid(), %s, %s, %s, u.id, %s, true)"
                    " FROM users u WHERE u.unit_id = %s AND u.name LIKE '回回%%') x",
                    (w.G1.leader.id, w.G1.id, int(time.time() * 1000), clue.id, w.G1.id, "避" * 1365, w.G1.id))
        assert cur.fetchone()[0] == 1100
    every = sql_ids(c, "SELECT id FROM recusals ORDER BY id DESC")
    on_clue = sql_ids(c, f"SELECT id FROM recusals WHERE clue_id = {clue.id} ORDER BY id DESC")
    assert len(on_clue) == 1100
    for who, req, want in ((w.auditor, pb.ListRecusalsRequest(), every),
                           (w.G1.leader, pb.ListRecusalsRequest(clue_id=clue.id), on_clue)):
        got, pages = all_pages(who.clue.ListRecusals, req, "recusals")
        assert got == want and pages >= 3, (who, len(got), pages)
    first = w.auditor.clue.ListRecusals(pb.ListRecusalsRequest(), timeout=60)
    assert 1.5 * 2**20 < first.ByteSize() < 2.5 * 2**20 and first.next_page_token, first.ByteSize()
    tok = first.next_page_token
    for who, req in ((w.G1.leader, pb.ListRecusalsRequest(page_token=tok)),
                     (w.auditor, pb.ListRecusalsRequest(clue_id=clue.id, page_token=tok)),
                     (w.auditor, pb.ListRecusalsRequest(user_id=w.G1.member.id, page_token=tok)),
                     (w.auditor, pb.ListRecusalsRequest(page_token=tok[:-1]))):
        refused_token(who.clue.ListRecusals, req)
    out = cluectl_json(c, w.auditor, "clue", "recusals", "--all")
    assert [int(x["id"]) for x in out["recusals"]] == every
    # Without --all, one page and the token of the next, which goes on from there.
    r = harness.cluectl("--server", c.srv.addr, "clue", "recusals", "--clue", str(clue.id),
                        env={"CLUED_TOKEN": w.G1.leader.token}, check=0)
    shown = r.stdout.count("recused from clue")
    token = re.search(r"--page-token (\S+)", r.stderr).group(1)
    out = cluectl_json(c, w.G1.leader, "clue", "recusals", "--clue", str(clue.id), "--page-token", token)
    assert 0 < shown < len(on_clue) and int(out["recusals"][0]["id"]) == on_clue[shown], (shown, len(on_clue))


if __name__ == "__main__":
    harness.run_tests(globals(), setup, teardown)
