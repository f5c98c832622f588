"""Calls' statements batched together (service/batch.c, migrations/0024_batched_moves.sql,
0022_batched_submits.sql).

clued serves with --db-batch-inflight 1: one statement of each batched read kind at a time (a
move's facts read, GetClue), and two of each write kind (a move's write, SubmitClue: the
default --db-write-batch-inflight), so concurrent calls wait and go to the database together, in
one statement (and for writes one transaction). Every call must still be what it
is alone: its own answer (the clue as a fresh read shows it), its own refusal (a stale
version, a reused request id, a clue the caller may not see, a missing one), exactly one
event per move on a chain that verifies, and one request record. That moves did share
transactions is read from the events' txid (a second clued with batching off shows the
opposite, so that assertion can fail); that reads were batched, from the metrics.
"""

import collections
import concurrent.futures
import contextlib
import os
import sys
import threading
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chain  # noqa: E402
import harness  # noqa: E402
import rawh2  # noqa: E402
from harness import new_request_id  # noqa: E402
import world  # noqa: E402
from test_db_bounds import clued_backends, lock_waiters  # noqa: E402
from test_metrics import MetricsClued, scrape, value  # noqa: E402

S = harness.stubs()
pb = S.clue_pb2
cm = S.common_pb2
Code = grpc.StatusCode
PRELIM = cm.CLUE_STATE_PRELIMINARY_CHECK
CLOSED = cm.CLUE_STATE_CLOSED


def setup():
    return world.served(args=["--db-batch-inflight", "1", "--db-pool", "8", "--metrics-listen", "127.0.0.1:0"],
                        clued=MetricsClued)


teardown = world.unserve


def submit_request():
    return pb.SubmitClueRequest(
        request_id=new_request_id(), title="线索", summary="反映某某违规", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
        subject=pb.SubjectPerson(name="张三", position="处长", rank_level="正处"), host_unit="市发展改革委",
        violation_categories=["违反廉洁纪律"])


def submit(user, n):
    return [user.clue.SubmitClue(submit_request(), timeout=20) for _ in range(n)]


def all_at_once(calls):
    """Run the callables together (a thread each, released by one barrier); their outcomes, in
    order: (Code.OK, reply) or (code, details)."""
    if not calls:
        return []
    barrier = threading.Barrier(len(calls))

    def one(f):
        barrier.wait()
        try:
            return Code.OK, f()
        except grpc.RpcError as e:
            return e.code(), e.details()

    with concurrent.futures.ThreadPoolExecutor(len(calls)) as ex:
        return list(ex.map(one, calls))


def move_call(user, clue, version=None, request_id=None, target=PRELIM, details=None, reason="初核"):
    req = pb.RequestTransitionRequest(clue_id=clue.id, expected_version=version or clue.version, target=target,
                                      reason=reason, request_id=request_id or new_request_id(),
                                      details=pb.TransitionDetails(**(details or {})))
    return lambda: user.clue.RequestTransition(req, timeout=30)


def events_of(c, ids):
    with c.db.cursor() as cur:
        cur.execute("SELECT subject_id, txid, action FROM audit_events WHERE subject_type = 'clue' AND "
                    "subject_id = ANY(%s) AND action = 'clue.move' ORDER BY seq", (list(ids),))
        return cur.fetchall()


def same_clue(a, b):
    """a (a reply) is the clue b (read after it) shows. days_left counts whole days to the stage
    deadline as of each answer: a move sets the deadline whole days from its own time, so a read
    even a millisecond later may count one day fewer."""
    a2, b2 = type(a)(), type(b)()
    a2.CopyFrom(a)
    b2.CopyFrom(b)
    if a2.days_left - b2.days_left in (0, 1):
        a2.days_left = b2.days_left
    return a2.SerializeToString(deterministic=True) == b2.SerializeToString(deterministic=True)


def check_moved(c, user, clues, replies):
    for cl, r in zip(clues, replies):
        now = user.clue.GetClue(pb.GetClueRequest(clue_id=cl.id), timeout=20)
        assert now.version == cl.version + 1 and now.state == PRELIM, now
        assert not r.pending and not r.HasField("proposal")
        assert same_clue(r.clue, now), (r.clue, now)


def test_concurrent_moves_share_transactions(c):
    w = c.w
    clues = submit(w.G1.member, 24) + submit(w.G2.member, 24)
    users = [w.G1.leader] * 24 + [w.G2.leader] * 24
    # Reasons with what array literals and JSON treat specially: each must arrive as sent.
    reasons = [f'理由 "{i}", \\ {{x}} NULL' if i % 2 else f"r{i}" for i in range(48)]
    m = scrape(c.srv.metrics_addr)
    done_before = value(m, "clued_direct_moves_total", outcome="done")
    read_before = value(m, "clued_direct_moves_total", outcome="read")
    out = all_at_once([move_call(u, cl, reason=r) for u, cl, r in zip(users, clues, reasons)])
    assert all(code == Code.OK for code, _ in out), [o for o in out if o[0] != Code.OK]
    for u, cl, (_, r) in zip(users, clues, out):
        check_moved(c, u, [cl], [r])
    evs = events_of(c, [cl.id for cl in clues])
    per_clue = collections.Counter(e[0] for e in evs)
    assert sorted(per_clue) == sorted(cl.id for cl in clues) and set(per_clue.values()) == {1}, per_clue
    with c.db.cursor() as cur:
        cur.execute("SELECT subject_id, reason FROM audit_events WHERE action = 'clue.move' AND subject_id = ANY(%s)",
                    ([cl.id for cl in clues],))
        got = dict(cur.fetchall())
    assert [got[cl.id] for cl in clues] == reasons
    per_txn = collections.Counter(e[1] for e in evs)
    assert max(per_txn.values()) > 1, f"every move committed alone: {per_txn}"
    m = scrape(c.srv.metrics_addr)
    # Each a LEADER's plain move of a clue of their unit: written at once, without a facts read.
    assert value(m, "clued_db_batches_total", kind="move_direct") >= 1
    assert value(m, "clued_direct_moves_total", outcome="done") - done_before == len(clues)
    assert value(m, "clued_direct_moves_total", outcome="read") == read_before
    with c.db.cursor() as cur:
        cur.execute("SELECT count(*) FROM clue_requests WHERE method = 'RequestTransition' AND clue_id = ANY(%s)",
                    ([cl.id for cl in clues],))
        assert cur.fetchone()[0] == len(clues)
    for cl in clues:
        chain.verify_subject(c.db, "clue", cl.id)


def test_concurrent_submits_share_transactions(c):
    # SubmitClue from members of three units at once, half with a reporter, categories and text
    # with what array literals treat specially; then twelve sent twice at once with one request
    # id. Each call gets the clue a lone submit gives (GetClue shows the same), a twice-sent call
    # one clue, the numbers of each unit stay gapless, each clue has one clue.submit event on a
    # chain that verifies and one request record, and the first submits shared transactions.
    w = c.w
    users = [w.G1.member, w.G2.member, w.G3.member] * 12
    reqs = []
    for i, u in enumerate(users):
        rep = pb.ReporterContact(name=f"举报人{i}", phone=f"1370000{i:04d}", address='地址 "甲", {乙}') if i % 2 else None
        reqs.append(pb.SubmitClueRequest(
            request_id=new_request_id(), title=f'线索 "{i}", \\ {{x}} NULL', summary="反映某某违规",
            source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=pb.SubjectPerson(name=f"张{i}", position="处长"),
            host_unit="市发展改革委", violation_categories=['违反"廉洁"纪律', "a,b", "x\\y", "{z}", "NULL"][:i % 6],
            reporter=rep))
    before = value(scrape(c.srv.metrics_addr), "clued_db_batched_calls_total", kind="submit")
    out = all_at_once([lambda u=u, r=r: u.clue.SubmitClue(r, timeout=30) for u, r in zip(users, reqs)])
    assert all(code == Code.OK for code, _ in out), [o for o in out if o[0] != Code.OK]
    got = [r for _, r in out]
    first = {r.id for r in got}
    # Then twelve more, each sent twice at once with one request id: two calls of one key in a
    # batch fail it, and its calls run alone; each pair gets one clue.
    twice = []
    for i in range(0, 36, 3):  # G1's
        q = pb.SubmitClueRequest()
        q.CopyFrom(reqs[i])
        q.request_id = new_request_id()
        twice.append(q)
    users += [w.G1.member] * 12 * 2
    reqs += twice + twice
    out = all_at_once([lambda u=u, r=r: u.clue.SubmitClue(r, timeout=30) for u, r in zip(users[36:], reqs[36:])])
    assert all(code == Code.OK for code, _ in out), [o for o in out if o[0] != Code.OK]
    got += [r for _, r in out]
    for i in range(36, 48):
        assert same_clue(got[i], got[i + 12]), (got[i], got[i + 12])
    ids = {r.id for r in got}
    assert len(ids) == 48
    for u, q, r in zip(users, reqs, got):
        now = u.clue.GetClue(pb.GetClueRequest(clue_id=r.id), timeout=20)
        assert same_clue(r, now), (r, now)
        assert r.title == q.title and list(r.violation_categories) == list(q.violation_categories), r
    with c.db.cursor() as cur:
        cur.execute("SELECT c.id, r.name, r.phone, r.address FROM clues c LEFT JOIN clue_reporters r ON r.clue_id = c.id"
                    " WHERE c.id = ANY(%s)", (list(ids),))
        reps = {row[0]: row[1:] for row in cur.fetchall()}
        for q, r in zip(reqs, got):
            want = (q.reporter.name, q.reporter.phone, q.reporter.address) if q.HasField("reporter") else (None,) * 3
            assert reps[r.id] == want, (reps[r.id], want)
        # Gapless per unit, over every clue of the database.
        cur.execute("SELECT k.unit_id, k.last_seq, array_agg(c.reg_seq ORDER BY c.reg_seq) FROM clue_counters k"
                    " JOIN clues c ON c.reg_unit = k.unit_id AND c.reg_year = k.year GROUP BY 1, 2")
        for unit, last, seqs in cur.fetchall():
            assert seqs == list(range(1, last + 1)), (unit, last, seqs)
        cur.execute("SELECT subject_id, txid FROM audit_events WHERE subject_type = 'clue' AND action = 'clue.submit'"
                    " AND subject_id = ANY(%s)", (list(ids),))
        evs = cur.fetchall()
        cur.execute("SELECT count(*) FROM clue_requests WHERE method = 'SubmitClue' AND clue_id = ANY(%s)", (list(ids),))
        assert cur.fetchone()[0] == 48
    assert sorted(e[0] for e in evs) == sorted(ids)
    per_txn = collections.Counter(e[1] for e in evs if e[0] in first)
    assert max(per_txn.values()) > 1, f"every submit committed alone: {per_txn}"
    assert value(scrape(c.srv.metrics_addr), "clued_db_batched_calls_total", kind="submit") > before
    for i in ids:
        chain.verify_subject(c.db, "clue", i)


def test_concurrent_gets_answer_as_alone(c):
    # GetClue from several callers at once: own clues, another unit's (not visible), missing
    # ones, and a clue with a handler; each answer is the lone answer, byte for byte, and the
    # refusals of the invisible and the missing clue are the same.
    w = c.w
    own, other = submit(w.G1.member, 8), submit(w.G3.member, 4)
    missing = [987654321 + i for i in range(4)]
    asks = [(w.G1.leader, cl.id) for cl in own] + [(w.G1.member, cl.id) for cl in own] + \
           [(w.G1.leader, cl.id) for cl in other] + [(w.G1.leader, i) for i in missing] + \
           [(w.G3.leader, cl.id) for cl in other]

    def ask(u, i):
        try:
            return Code.OK, u.clue.GetClue(pb.GetClueRequest(clue_id=i), timeout=20).SerializeToString(
                deterministic=True)
        except grpc.RpcError as e:
            return e.code(), e.details()

    alone = [ask(u, i) for u, i in asks]
    before = value(scrape(c.srv.metrics_addr), "clued_db_batched_calls_total", kind="get_clue")
    for _ in range(3):
        together = all_at_once([lambda u=u, i=i: ask(u, i) for u, i in asks])
        assert [t[1] for t in together] == alone, [(a, t) for a, t in zip(alone, together) if a != t[1]]
    refusals = {t for t in alone if t[0] != Code.OK}
    assert len(refusals) == 1 and Code.NOT_FOUND in {r[0] for r in refusals}, refusals
    after = value(scrape(c.srv.metrics_addr), "clued_db_batched_calls_total", kind="get_clue")
    assert after > before, "no GetClue went in a batch"


def test_stale_moves_refused_as_alone(c):
    # Half the moves expect a version the clue does not have: each gets the refusal a lone stale
    # move gets, with the same message, and writes nothing; the other half move.
    w = c.w
    clues = submit(w.G1.member, 21)
    lone = all_at_once([move_call(w.G1.leader, clues[20], version=7)])[0]
    assert lone[0] == Code.ABORTED, lone
    good, stale = clues[:10], clues[10:20]
    out = all_at_once([move_call(w.G1.leader, cl) for cl in good] +
                      [move_call(w.G1.leader, cl, version=7) for cl in stale])
    assert all(code == Code.OK for code, _ in out[:10]), out[:10]
    check_moved(c, w.G1.leader, good, [r for _, r in out[:10]])
    for cl, (code, msg) in zip(stale, out[10:]):
        assert (code, msg) == (lone[0], lone[1].replace(str(clues[20].id), str(cl.id))), (code, msg, lone)
        assert w.G1.leader.clue.GetClue(pb.GetClueRequest(clue_id=cl.id), timeout=20).version == 1
    assert {e[0] for e in events_of(c, [cl.id for cl in clues])} == {cl.id for cl in good}


def test_retries_race_across_batches(c):
    # Each move sent three times at once with one request id: one move, one event, and all three
    # replies are the clue the move made.
    w = c.w
    clues = submit(w.G2.member, 12)
    keys = [new_request_id() for _ in clues]
    calls = [move_call(w.G2.leader, cl, request_id=k) for cl, k in zip(clues, keys)] * 3
    out = all_at_once(calls)
    assert all(code == Code.OK for code, _ in out), [o for o in out if o[0] != Code.OK]
    for i, cl in enumerate(clues):
        check_moved(c, w.G2.leader, [cl] * 3, [out[i][1], out[i + 12][1], out[i + 24][1]])
    assert collections.Counter(e[0] for e in events_of(c, [cl.id for cl in clues])) == {cl.id: 1 for cl in clues}


def test_request_id_reused_for_another_clue(c):
    # One request id sent for two clues at once (a client's bug): exactly one of the two moves,
    # the other refused as reusing the id, as when they come one after the other.
    w = c.w
    clues = submit(w.G1.member, 16)
    keys = [new_request_id() for _ in range(8)]
    out = all_at_once([move_call(w.G1.leader, cl, request_id=keys[i // 2]) for i, cl in enumerate(clues)])
    for i in range(8):
        pair = out[2 * i:2 * i + 2]
        assert sorted(code.name for code, _ in pair) == ["INVALID_ARGUMENT", "OK"], pair
        assert "request_id" in [m for code, m in pair if code != Code.OK][0]
    moved = {e[0] for e in events_of(c, [cl.id for cl in clues])}
    assert len(moved) == 8
    for cl in clues:
        v = w.G1.leader.clue.GetClue(pb.GetClueRequest(clue_id=cl.id), timeout=20).version
        assert v == (2 if cl.id in moved else 1)
        chain.verify_subject(c.db, "clue", cl.id)


def test_moves_of_one_clue_in_one_batch(c):
    # Sixteen different moves of one clue at once, closing and starting a check: one wins, the
    # rest are refused as concurrent changes, as without batching.
    w = c.w
    cl = submit(w.G2.member, 1)[0]
    calls = [move_call(w.G2.leader, cl) if i % 2 else
             move_call(w.G2.leader, cl, target=CLOSED, details={"disposal": pb.DISPOSAL_SHELVED}) for i in range(16)]
    out = all_at_once(calls)
    assert [code for code, _ in out].count(Code.OK) == 1, out
    assert all(code in (Code.OK, Code.ABORTED, Code.FAILED_PRECONDITION) for code, _ in out), out
    assert len(events_of(c, [cl.id])) == 1
    chain.verify_subject(c.db, "clue", cl.id)


def test_abandoned_calls_leave_whole_moves(c):
    # Callers that give up at once (a 1 ms deadline) while their moves wait or run: each move is
    # either done whole (version 2, one event) or not at all, and the server keeps serving.
    # They call on a connection of their own: grpcio may reset a stream it never opened when it
    # cancels that early (grpc/grpc#38758), which ends its connection (RFC 9113 5.1; see
    # test_stress.settle), and the leader's usual connection must not share that fate.
    w = c.w
    clues = submit(w.G1.member, 32)
    raw, ch = w.G1.leader.new_channel()
    hasty = S.clue_pb2_grpc.ClueServiceStub(ch)

    def impatient(cl):
        req = pb.RequestTransitionRequest(clue_id=cl.id, expected_version=1, target=PRELIM, reason="初核",
                                          request_id=new_request_id())
        return lambda: hasty.RequestTransition(req, timeout=0.001)

    try:
        all_at_once([impatient(cl) for cl in clues])
    finally:
        raw.close()
    assert c.srv.proc.poll() is None
    harness.wait_for(lambda: idle(c), what="clued at rest: no call open, nothing queued or running")
    # Each clue's version and events in one snapshot: a move is committed whole or not at all.
    with c.db.cursor() as cur:
        cur.execute("SELECT c.version, (SELECT count(*) FROM audit_events e WHERE e.subject_type = 'clue'"
                    " AND e.subject_id = c.id AND e.action = 'clue.move') FROM clues c WHERE c.id = ANY(%s)",
                    ([cl.id for cl in clues],))
        rows = cur.fetchall()
    assert len(rows) == len(clues) and all(r in ((1, 0), (2, 1)) for r in rows), rows
    again = all_at_once([move_call(w.G1.leader, cl) for cl in clues
                         if w.G1.leader.clue.GetClue(pb.GetClueRequest(clue_id=cl.id), timeout=20).version == 1])
    assert all(code == Code.OK for code, _ in again), again


def active(db):
    return clued_backends(db, "state = 'active'")


def idle(c):
    """clued has nothing left to do: no stream open, no statement waiting for a connection or
    running on one, none being cancelled (a cancelled batch's other calls run again alone
    after the cancel), and no statement of its running in PostgreSQL."""
    m = scrape(c.srv.metrics_addr)
    return (value(m, "clued_streams_open") == 0 and value(m, "clued_db_queue_depth") == 0
            and all(value(m, "clued_db_pool_connections", state=s) == 0 for s in ("busy", "cancelling"))
            and active(c.db) == 0)


def test_a_batch_stuck_on_a_lock_holds_no_other_move(c):
    # A clue locked outside clued (a long transaction): the batch holding its move waits on the
    # lock, here for up to a minute (--db-lock-timeout). Moves of other clues sent meanwhile do
    # not wait behind it: once a statement has run SVC_BATCH_STALL_MS it no longer counts
    # against --db-batch-inflight. So they complete while the lock is still held (each call
    # has 20 s; without that rule they would wait the whole minute). When the lock goes, the
    # stuck batch's moves all complete, the locked clue's too.
    pg = harness.Postgres.get()
    srv = harness.Clued(pg.url(c.dbname), args=["--db-batch-inflight", "1", "--db-lock-timeout", "60000"]).start(
        migrate=False)
    o = c.w.G2.leader
    leader = world.User(srv.addr, o.id, o.name, o.role, o.unit, o.token)
    locked, mates, later = submit(c.w.G2.member, 1)[0], submit(c.w.G2.member, 5), submit(c.w.G2.member, 6)
    hold = pg.connect(c.dbname)
    hold.autocommit = False
    try:
        with hold.cursor() as cur:
            cur.execute("SELECT id FROM clues WHERE id = %s FOR UPDATE", (locked.id,))
        with concurrent.futures.ThreadPoolExecutor(12) as ex:
            stuck = [ex.submit(lambda cl=cl: leader.clue.RequestTransition(pb.RequestTransitionRequest(
                clue_id=cl.id, expected_version=1, target=PRELIM, reason="初核", request_id=new_request_id()),
                timeout=120)) for cl in [locked] + mates]
            harness.wait_for(lambda: lock_waiters(c.db) >= 1, timeout=20, what="a move waiting on the lock")
            out = all_at_once([move_call(leader, cl) for cl in later])
            assert all(code == Code.OK for code, _ in out), out
            check_moved(c, leader, later, [r for _, r in out])
            assert lock_waiters(c.db) >= 1, "the lock is still held"
            hold.rollback()
            for f in stuck:
                r = f.result()
                assert r.clue.state == PRELIM and r.clue.version == 2
        assert {e[0] for e in events_of(c, [locked.id] + [m.id for m in mates])} == {locked.id} | {m.id for m in mates}
        chain.verify_subject(c.db, "clue", locked.id)
    finally:
        hold.close()
        leader.close()
        srv.stop()


def seq_of(clue):
    return int(clue.registration_number.rsplit("-", 1)[1])


@contextlib.contextmanager
def locked_counter(c, args=()):
    """A clued started with args (and a minute's lock timeout, metrics on), the G1, G2 and G3
    members on it, and a connection holding G1's counter row locked: (clued, users by unit
    code, the holding connection, G1's submission made first so that the row exists, and the
    row's last_seq). Everything is closed after."""
    pg = harness.Postgres.get()
    srv = MetricsClued(pg.url(c.dbname), args=["--db-lock-timeout", "60000", "--metrics-listen", "127.0.0.1:0",
                                               *args]).start(migrate=False)
    users = {k: world.User(srv.addr, u.id, u.name, u.role, u.unit, u.token)
             for k, u in (("G1", c.w.G1.member), ("G2", c.w.G2.member), ("G3", c.w.G3.member))}
    hold = pg.connect(c.dbname)
    try:
        first = submit(users["G1"], 1)[0]
        hold.autocommit = False
        with hold.cursor() as cur:
            cur.execute("SELECT last_seq FROM clue_counters WHERE unit_id = %s FOR UPDATE", (c.w.G1.id,))
            (last,) = cur.fetchone()
        yield srv, users, hold, first, last
    finally:
        hold.close()
        for u in users.values():
            u.close()
        srv.stop()


def held_calls(srv):
    return value(scrape(srv.metrics_addr), "clued_db_batch_held_calls_total", kind="submit")


def test_a_unit_whose_counter_is_locked_holds_no_other_unit(c):
    # A batch of submissions holds each unit's counter until it commits. G1's counter is locked
    # outside clued (a long transaction): the statement carrying G1's first submissions waits on
    # the lock. G1's submissions sent after it wait in clued, not on the lock in a statement of
    # their own (one of clued's backends waits, not two), and do not hold back the submissions
    # of G2 and G3 sent with them: those complete while the lock is held (each call has 20 s,
    # the lock timeout is a minute). With two lanes and consecutive unit ids one of G2 and G3
    # shares G1's lane, and goes once G1's statement stops counting (SVC_BATCH_STALL_MS). When
    # the lock goes, G1's all complete, numbered on.
    with locked_counter(c) as (srv, users, hold, first, last):
        assert seq_of(first) == last
        assert held_calls(srv) == 0
        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            stuck = [ex.submit(submit, users["G1"], 1) for _ in range(3)]
            harness.wait_for(lambda: lock_waiters(c.db) >= 1, timeout=20, what="a submission waiting on the lock")
            stuck += [ex.submit(submit, users["G1"], 1) for _ in range(4)]
            others = [ex.submit(submit, users[k], 1) for k in ("G2", "G3") for _ in range(4)]
            done = [f.result()[0] for f in others]
            assert {d.owner_unit_id for d in done} == {c.w.G2.id, c.w.G3.id}, done
            assert not any(f.done() for f in stuck), "a G1 submission completed while its counter was locked"
            assert lock_waiters(c.db) == 1, "G1's later submissions wait on the lock in a statement of their own"
            # At least the four sent while G1's statement ran waited in clued for it.
            assert held_calls(srv) >= 4
            hold.rollback()
            g1 = [f.result()[0] for f in stuck]
        seqs = sorted(seq_of(r) for r in g1)
        assert seqs == list(range(last + 1, last + 8)), (last, seqs)


def test_retries_sent_at_once_never_share_a_batch(c):
    # A client's retries of one submission sent at once (three of each of two request ids),
    # with four other submissions, all wait for G1's statement stuck on its counter lock, and
    # then go on together. Two calls of one request id in one batch statement would both
    # record the id, failing the whole batch and sending every call of it to run again alone;
    # the second waits for the next statement instead, and is answered as the retry it is.
    with locked_counter(c) as (srv, users, hold, _, last):
        reruns = value(scrape(srv.metrics_addr), "clued_db_batch_reruns_total", kind="submit") or 0
        retried = [submit_request(), submit_request()]
        with concurrent.futures.ThreadPoolExecutor(12) as ex:
            first = ex.submit(submit, users["G1"], 1)
            harness.wait_for(lambda: lock_waiters(c.db) >= 1, timeout=20, what="a submission waiting on the lock")
            calls = [ex.submit(users["G1"].clue.SubmitClue, r, timeout=60) for r in retried * 3]
            calls += [ex.submit(submit, users["G1"], 1) for _ in range(4)]
            harness.wait_for(lambda: held_calls(srv) >= 10, timeout=20, what="ten submissions waiting in clued")
            hold.rollback()
            first.result()
            got = [f.result() for f in calls[:6]]
            others = [f.result()[0] for f in calls[6:]]
        for k in range(2):
            same = {(g.id, g.registration_number) for g in got[k::2]}
            assert len(same) == 1, got[k::2]
        seqs = sorted([seq_of(g) for g in got[:2]] + [seq_of(o) for o in others])
        assert seqs == list(range(last + 2, last + 8)), (last, seqs)
        # Only the four retries ran alone (a batch answers no recorded request id: the retry's
        # own statement does); no batch failed.
        assert value(scrape(srv.metrics_addr), "clued_db_batch_reruns_total", kind="submit") - reruns <= 4
        assert "batched submit" not in srv.output(), srv.output()


def test_submissions_held_for_a_unit_are_bounded(c):
    # Submissions that wait in clued for their unit's running statement count against
    # --db-queue (6 here) like any waiting call: past it, G1's and G2's alike fail at once with
    # UNAVAILABLE and number nothing. When the lock goes, the first and the six waiting
    # complete with the next seven numbers, and the server serves on.
    with locked_counter(c, ["--db-queue", "6"]) as (srv, users, hold, _, last):
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            stuck = [ex.submit(submit, users["G1"], 1)]
            harness.wait_for(lambda: lock_waiters(c.db) >= 1, timeout=20, what="a submission waiting on the lock")
            stuck += [ex.submit(submit, users["G1"], 1) for _ in range(6)]
            harness.wait_for(lambda: held_calls(srv) >= 6, timeout=20, what="six submissions waiting in clued")
            over = all_at_once([lambda: submit(users["G1"], 1)] * 3 + [lambda: submit(users["G2"], 1)] * 2)
            assert all(code == Code.UNAVAILABLE and "busy" in m and "retry" in m for code, m in over), over
            assert not any(f.done() for f in stuck)
            hold.rollback()
            got = [f.result()[0] for f in stuck]
        assert sorted(seq_of(r) for r in got) == list(range(last + 1, last + 8))
        with c.db.cursor() as cur:
            cur.execute("SELECT last_seq FROM clue_counters WHERE unit_id = %s", (c.w.G1.id,))
            assert cur.fetchone()[0] == last + 7
        assert seq_of(submit(users["G1"], 1)[0]) == last + 8
        assert submit(users["G2"], 1)[0].owner_unit_id == c.w.G2.id


def test_a_queue_longer_than_the_look_ahead_drains(c):
    # More of G1's submissions wait for its stuck statement than clued looks ahead in a queue
    # (SVC_BATCH_SCAN, 256): 300 of them (over four connections: 100 streams each at most),
    # then two of G2's behind them. They take no pool connection (one of clued's backends waits
    # on the lock), the server answers other calls meanwhile, and when the lock goes every one
    # completes: G1's with the next 301 numbers. (Each waiting call counts against its user's
    # share: --db-queue-per-user is raised above the 301.)
    with locked_counter(c, ["--db-queue-per-user", "400"]) as (srv, users, hold, _, last):
        o = c.w.G2.leader
        leader = world.User(srv.addr, o.id, o.name, o.role, o.unit, o.token)
        channels = [users["G1"].new_channel() for _ in range(4)]
        stubs = [S.clue_pb2_grpc.ClueServiceStub(ch) for _, ch in channels]
        try:
            seen = submit(users["G2"], 1)[0]
            first = users["G1"].clue.SubmitClue.future(submit_request(), timeout=120)
            harness.wait_for(lambda: lock_waiters(c.db) >= 1, timeout=20, what="a submission waiting on the lock")
            g1 = [first] + [stubs[i % 4].SubmitClue.future(submit_request(), timeout=120) for i in range(300)]
            harness.wait_for(lambda: held_calls(srv) >= 256, timeout=30, what="the look-ahead full of waiting calls")
            g2 = [users["G2"].clue.SubmitClue.future(submit_request(), timeout=120) for _ in range(2)]
            assert leader.clue.GetClue(pb.GetClueRequest(clue_id=seen.id), timeout=20).id == seen.id
            assert lock_waiters(c.db) == 1
            assert not any(f.done() for f in g1)
            hold.rollback()
            got = [f.result() for f in g1]
            assert sorted(seq_of(r) for r in got) == list(range(last + 1, last + 302))
            assert {f.result().owner_unit_id for f in g2} == {c.w.G2.id}
        finally:
            leader.close()
            for raw, _ in channels:
                raw.close()


def test_waiting_calls_are_bounded(c):
    # Calls waiting in clued for their kind's running statement are bounded by --db-queue (2
    # here). A move of a clue locked outside clued stays running, so the moves of that clue
    # sent with it wait; past the bound they fail at once with UNAVAILABLE and write nothing.
    # Once the lock goes, exactly one move of the clue is made, and the server serves on.
    pg = harness.Postgres.get()
    srv = harness.Clued(pg.url(c.dbname), args=["--db-batch-inflight", "1", "--db-queue", "2",
                                               "--db-lock-timeout", "60000"]).start(migrate=False)
    o = c.w.G1.leader
    leader = world.User(srv.addr, o.id, o.name, o.role, o.unit, o.token)
    try:
        for _ in range(3):  # the calls must meet in clued: a few tries, however loaded the machine
            cl = submit(c.w.G1.member, 1)[0]
            hold = pg.connect(c.dbname)
            hold.autocommit = False
            with hold.cursor() as cur:
                cur.execute("SELECT id FROM clues WHERE id = %s FOR UPDATE", (cl.id,))
            with concurrent.futures.ThreadPoolExecutor(1) as ex:
                pending = ex.submit(all_at_once, [move_call(leader, cl) for _ in range(24)])
                harness.wait_for(lambda: lock_waiters(c.db) >= 1, timeout=20, what="a move waiting on the lock")
                time.sleep(0.5)
                hold.rollback()
                out = pending.result()
            hold.close()
            codes = collections.Counter(code for code, _ in out)
            assert codes[Code.OK] == 1, out
            busy = [m for code, m in out if code == Code.UNAVAILABLE]
            assert all("busy" in m and "retry" in m for m in busy), busy
            assert set(codes) <= {Code.OK, Code.UNAVAILABLE, Code.ABORTED, Code.FAILED_PRECONDITION}, codes
            assert len(events_of(c, [cl.id])) == 1
            if busy:
                break
        assert busy, "no call was ever over the bound"
        now = leader.clue.GetClue(pb.GetClueRequest(clue_id=cl.id), timeout=20)
        assert now.version == 2 and now.state == PRELIM
    finally:
        leader.close()
        srv.stop()


def streams_in_one_write(addr, token, path, bodies):
    """Open one stream per body on one HTTP/2 connection, every frame in one send(); the
    replies' grpc-status, in order."""
    h = rawh2.RawH2(addr)
    try:
        sids = []
        for body in bodies:
            sid = h.conn.get_next_available_stream_id()
            h.conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", path),
                                      (":authority", "test"), ("content-type", "application/grpc"),
                                      ("te", "trailers"), ("authorization", "Bearer " + token)])
            h.conn.send_data(sid, rawh2.grpc_frame(body), end_stream=True)
            h.responses[sid] = rawh2.Response()
            sids.append(sid)
        h.flush()
        return [h.wait(sid).grpc_status for sid in sids]
    finally:
        h.close()


def calls_of_one_read(c, n, srv=None, kinds=("get_clue", "move_direct")):
    """n GetClues in one write on one connection, then n moves likewise; how many batches and
    batched calls each of kinds grew by (the last: the moves' write). Every call succeeds, the
    moves' chains verify, and the moves' events share transactions as the batches say."""
    srv = srv or c.srv
    w = c.w
    leader = w.G1.leader
    clues = submit(w.G1.member, n)
    gets = [pb.GetClueRequest(clue_id=cl.id).SerializeToString() for cl in clues]
    # srv has the token in its principal cache now: the calls below go to the database together,
    # not each when its own token lookup ends (a new clued caches only once its LISTEN is in effect)
    def cached():
        was = value(scrape(srv.metrics_addr), "clued_auth_lookups_total", **{"from": "cache"})
        assert streams_in_one_write(srv.addr, leader.token, "/clue.v1.ClueService/GetClue", gets[:1]) == [0]
        return value(scrape(srv.metrics_addr), "clued_auth_lookups_total", **{"from": "cache"}) > was

    harness.wait_for(cached, timeout=20, what="the token served from the principal cache")
    before = scrape(srv.metrics_addr)
    assert streams_in_one_write(srv.addr, leader.token, "/clue.v1.ClueService/GetClue", gets) == [0] * n
    moves = [pb.RequestTransitionRequest(clue_id=cl.id, expected_version=cl.version, target=PRELIM, reason="初核",
                                         request_id=new_request_id()).SerializeToString() for cl in clues]
    assert streams_in_one_write(srv.addr, leader.token, "/clue.v1.ClueService/RequestTransition",
                                moves) == [0] * n
    after = scrape(srv.metrics_addr)

    def grew(name, kind):
        return value(after, name, kind=kind) - value(before, name, kind=kind)

    got = {kind: (grew("clued_db_batches_total", kind), grew("clued_db_batched_calls_total", kind))
           for kind in kinds}
    per_txn = collections.Counter(e[1] for e in events_of(c, [cl.id for cl in clues]))
    assert sorted(per_txn.values()) == ([n] if got[kinds[-1]] == (1, n) else [1] * n), (got, per_txn)
    for cl in clues:
        now = leader.clue.GetClue(pb.GetClueRequest(clue_id=cl.id), timeout=20)
        assert now.version == cl.version + 1 and now.state == PRELIM, now
        chain.verify_subject(c.db, "clue", cl.id)
    return got


def test_calls_of_one_read_go_together(c):
    """The calls one read brings in go as one statement, though the kind had room for the
    first alone (a client with many streams on one connection, as grpc++ and clue-load are):
    eight GetClues make one batch, and eight moves one commit (written without a facts read);
    with --db-direct-moves 0, one batch of facts reads and one commit."""
    got = calls_of_one_read(c, 8)
    assert got == {kind: (1, 8) for kind in got}, got
    pg = harness.Postgres.get()
    srv = MetricsClued(pg.url(c.dbname), args=["--db-batch-inflight", "1", "--db-direct-moves", "0",
                                               "--metrics-listen", "127.0.0.1:0"]).start(migrate=False)
    try:
        got = calls_of_one_read(c, 8, srv, ("get_clue", "move_facts", "move_direct", "move"))
        assert got == {"get_clue": (1, 8), "move_facts": (1, 8), "move_direct": (0, 0), "move": (1, 8)}, got
    finally:
        srv.stop()


def test_two_calls_are_a_batch_and_one_goes_alone(c):
    """Two calls that arrive together already go as one statement (SVC_BATCH_MIN); a single
    call goes alone, through the one-call statement."""
    got = calls_of_one_read(c, 2)
    assert got == {kind: (1, 2) for kind in got}, got
    got = calls_of_one_read(c, 1)
    assert got == {kind: (0, 0) for kind in got}, got


def test_batching_off_commits_each_alone(c):
    # The control for the first test: with --db-batch-inflight 0 every move is its own transaction.
    pg = harness.Postgres.get()
    srv = harness.Clued(pg.url(c.dbname), args=["--db-batch-inflight", "0"]).start(migrate=False)
    o = c.w.G2.leader
    leader = world.User(srv.addr, o.id, o.name, o.role, o.unit, o.token)
    try:
        clues = submit(c.w.G2.member, 24)
        out = all_at_once([move_call(leader, cl) for cl in clues])
        assert all(code == Code.OK for code, _ in out), out
        per_txn = collections.Counter(e[1] for e in events_of(c, [cl.id for cl in clues]))
        assert set(per_txn.values()) == {1}, per_txn
    finally:
        leader.close()
        srv.stop()


def test_write_batching_off_commits_each_alone_and_reads_still_batch(c):
    # --db-write-batch-inflight 0: every move is its own transaction, while the moves' facts
    # reads (read first: --db-direct-moves 0) still go together (the metrics count them).
    pg = harness.Postgres.get()
    srv = MetricsClued(pg.url(c.dbname), args=["--db-write-batch-inflight", "0", "--db-direct-moves", "0",
                                               "--metrics-listen", "127.0.0.1:0"]).start(migrate=False)
    o = c.w.G1.leader
    leader = world.User(srv.addr, o.id, o.name, o.role, o.unit, o.token)
    try:
        for _ in range(5):  # the calls must meet in clued: a few tries, however loaded the machine
            clues = submit(c.w.G1.member, 24)
            out = all_at_once([move_call(leader, cl) for cl in clues])
            assert all(code == Code.OK for code, _ in out), out
            check_moved(c, leader, clues, [r for _, r in out])
            per_txn = collections.Counter(e[1] for e in events_of(c, [cl.id for cl in clues]))
            assert set(per_txn.values()) == {1}, per_txn
            m = scrape(srv.metrics_addr)
            assert value(m, "clued_db_batches_total", kind="move") == 0
            if value(m, "clued_db_batched_calls_total", kind="move_facts") >= 2:
                break
        else:
            raise AssertionError("no facts read was batched in five tries")
    finally:
        leader.close()
        srv.stop()


def test_batch_limits_must_be_numbers(c):
    srv = harness.Clued(harness.Postgres.get().url(c.dbname))
    for flag, bad in (("--db-write-batch-inflight", "-1"), ("--db-write-batch-inflight", "x"),
                      ("--db-write-batch-inflight", "257"), ("--db-batch-inflight", "-1")):
        r = srv.run("serve", "--listen", "127.0.0.1:0", flag, bad, check=False)
        assert r.returncode != 0 and flag in r.stderr, (flag, bad, r.returncode, r.stderr)


if __name__ == "__main__":
    harness.run_tests(dict(globals()), setup, teardown)
