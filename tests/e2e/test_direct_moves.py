"""A plain move written without a facts read (--db-direct-moves, migrations/0029_direct_moves.sql).

clued decides a LEADER's plain move from the request and the caller alone where it can
(authz_move_unread()) and sends the write at once; the write's guard checks what is left to
the clue (its unit, state, version, no pending proposal, no recusal, no record of the request
id). A move the guard leaves out is read and decided as before.

The proof is differential: two clued on one database, A as deployed (direct moves on) and B
with --db-direct-moves 0 (every move read first). Each case is set up twice, identically, and
the same call made on A and on B: the answers must be the same (status, message with the ids
put aside, and for a move done the clue as a fresh read shows it), and so must what the
database holds afterwards (the clue, its events, its request records). A's metrics tell which
way each call went: the moves it allowed without a read, the refusals after one.
"""

import os
import re
import sys

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chain  # noqa: E402
import harness  # noqa: E402
from harness import new_request_id  # noqa: E402
import world  # noqa: E402
from test_batching import same_clue  # noqa: E402
from test_metrics import MetricsClued, scrape, value  # noqa: E402

S = harness.stubs()
pb = S.clue_pb2
cm = S.common_pb2
Code = grpc.StatusCode
PRE = cm.CLUE_STATE_PRELIMINARY_CHECK
FILED = cm.CLUE_STATE_FILED
CLO = cm.CLUE_STATE_CLOSED
MISSING_ID = 987654321


def setup():
    c = world.served(args=["--metrics-listen", "127.0.0.1:0"], clued=MetricsClued)
    c.b = harness.Clued(c.url, args=["--db-direct-moves", "0"]).start(migrate=False)
    c.L2 = c.w.new_user("G1", "LEADER", "G1-leader-2")
    return c


def teardown(c):
    c.b.stop()
    world.unserve(c)


def on(srv, u):
    """u's stubs on srv."""
    return world.User(srv.addr, u.id, u.name, u.role, u.unit, u.token)


def submit(u):
    return u.clue.SubmitClue(pb.SubmitClueRequest(
        request_id=new_request_id(), title="线索", summary="反映某某违规", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
        subject=pb.SubjectPerson(name="张三", position="处长", rank_level="正处"), host_unit="市发展改革委",
        violation_categories=["违反廉洁纪律"]), timeout=20)


def move(u, clue, target, version=None, request_id=None, **details):
    reason = "了结" if target == CLO else "初核"
    return u.clue.RequestTransition(pb.RequestTransitionRequest(
        clue_id=clue.id, expected_version=clue.version if version is None else version, target=target,
        reason=reason, request_id=request_id or new_request_id(), details=pb.TransitionDetails(**details)),
        timeout=20)


def outcome(fn, ids):
    """(code, details, reply) of calling fn; in the details, the clue ids of ids are replaced by
    their names and request ids by one name (each server's case has its own)."""
    try:
        r = fn()
    except grpc.RpcError as e:
        text = e.details()
        for name, i in ids.items():
            text = re.sub(rf"\b{i}\b", name, text)
        text = re.sub(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", "<request id>", text)
        return e.code(), text, None
    return Code.OK, "", r


def held(c, clue_id):
    """What the database holds of a clue: its row but the times and ids, its events' actions,
    states and reasons, its request records' methods."""
    with c.db.cursor() as cur:
        cur.execute("SELECT state, version, pending_reviewer_unit IS NOT NULL, disposal, finding, closed_at IS NULL,"
                    " stage_deadline IS NULL FROM clues WHERE id = %s", (clue_id,))
        row = cur.fetchone()
        cur.execute("SELECT action, from_state, to_state, reason FROM audit_events WHERE subject_type = 'clue'"
                    " AND subject_id = %s ORDER BY seq", (clue_id,))
        events = cur.fetchall()
        cur.execute("SELECT method, user_id FROM clue_requests WHERE clue_id = %s ORDER BY created_at, method",
                    (clue_id,))
        records = cur.fetchall()
    return row, events, records


def ways(c):
    m = scrape(c.srv.metrics_addr)
    return value(m, "clued_direct_moves_total", outcome="done"), value(m, "clued_direct_moves_total", outcome="read")


def same(c, case, prepare, call, want, way):
    """Set the case up on A and on B (prepare(users) -> clue, with each user's stubs on that
    server), make call(users, clue) on each; the outcomes must be equal, and want (a status
    code); the database must hold the same of both clues; A's call went `way` ("done": written
    without a read; "read": read and decided; None: not sent without a read at all)."""
    w = c.w
    results = []
    for srv in (c.srv, c.b):
        users = {k: on(srv, u) for k, u in (("L", w.G1.leader), ("M", w.G1.member), ("L2", c.L2),
                                              ("G2L", w.G2.leader), ("R1L", w.R1.leader), ("AU", w.auditor))}
        try:
            clue = prepare(users)
            before = ways(c)
            got = outcome(lambda: call(users, clue), {"<clue>": clue.id})
            after = ways(c)
            results.append((clue, got, after[0] - before[0], after[1] - before[1]))
            if got[0] == Code.OK and got[2].HasField("clue"):
                now = users["L"].clue.GetClue(pb.GetClueRequest(clue_id=clue.id), timeout=20)
                assert same_clue(got[2].clue, now), (case, got[2].clue, now)
        finally:
            for u in users.values():
                u.close()
    (ca, a, done, read), (cb, b, _, _) = results
    assert a[:2] == b[:2], (case, a[:2], b[:2])
    assert a[0] == want, (case, a[:2])
    if a[0] == Code.OK:
        ra, rb = a[2], b[2]
        assert (ra.clue.state, ra.clue.version, ra.pending) == (rb.clue.state, rb.clue.version, rb.pending), case
    assert held(c, ca.id) == held(c, cb.id), (case, held(c, ca.id), held(c, cb.id))
    assert (done, read) == {"done": (1, 0), "read": (0, 1), None: (0, 0)}[way], (case, done, read)
    chain.verify_subject(c.db, "clue", ca.id)
    chain.verify_subject(c.db, "clue", cb.id)


def accepted(u):
    return submit(u["M"])


def in_check(u):
    return move(u["L"], submit(u["M"]), PRE).clue


def test_allowed_moves_need_no_read(c):
    same(c, "start the check", accepted, lambda u, cl: move(u["L"], cl, PRE), Code.OK, "done")
    same(c, "close after the check", in_check, lambda u, cl: move(u["L"], cl, CLO, finding="查无实据"), Code.OK, "done")
    same(c, "close by disposal", accepted,
         lambda u, cl: move(u["L"], cl, CLO, disposal=pb.DISPOSAL_NO_FURTHER_ACTION), Code.OK, "done")


def test_refusals_are_those_of_a_read(c):
    # Decided without the clue, left out by the write's guard, then read and refused.
    same(c, "another group's leader", accepted, lambda u, cl: move(u["G2L"], cl, PRE), Code.NOT_FOUND, "read")
    same(c, "the liaison room's leader", accepted, lambda u, cl: move(u["R1L"], cl, PRE),
         Code.PERMISSION_DENIED, "read")
    same(c, "a missing clue", accepted,
         lambda u, cl: move(u["L"], pb.Clue(id=MISSING_ID, version=1), PRE), Code.NOT_FOUND, "read")
    same(c, "a stale version", accepted, lambda u, cl: move(u["L"], cl, PRE, version=cl.version + 1),
         Code.ABORTED, "read")
    same(c, "a move from another state", accepted, lambda u, cl: move(u["L"], cl, CLO, finding="查无实据"),
         Code.INVALID_ARGUMENT, "read")
    same(c, "a state with no such move", in_check, lambda u, cl: move(u["L"], cl, PRE), Code.FAILED_PRECONDITION,
         "read")

    def pending(u):
        cl = in_check(u)
        return move(u["L"], cl, FILED).clue

    same(c, "a pending proposal", pending, lambda u, cl: move(u["L"], cl, CLO, finding="查无实据"),
         Code.FAILED_PRECONDITION, "read")
    # Not decided without the clue at all.
    same(c, "a member", accepted, lambda u, cl: move(u["M"], cl, PRE), Code.PERMISSION_DENIED, None)
    same(c, "an auditor", accepted, lambda u, cl: move(u["AU"], cl, PRE), Code.PERMISSION_DENIED, None)
    same(c, "a move that needs co-review", in_check, lambda u, cl: move(u["L"], cl, FILED), Code.OK, None)
    same(c, "two closes fit", accepted,
         lambda u, cl: move(u["L"], cl, CLO, finding="查无实据", disposal=pb.DISPOSAL_SHELVED), Code.OK, None)


def test_recusals_are_read(c):
    # A clue that ever had a recusal is read first: the write's guard does not know who.
    def recused_l2(u):
        cl = submit(u["M"])
        u["L2"].clue.RecordRecusal(pb.RecordRecusalRequest(clue_id=cl.id, user_id=0, reason="亲属关系",
                                                           request_id=new_request_id()), timeout=20)
        return cl

    same(c, "an unrecused leader, another recused", recused_l2, lambda u, cl: move(u["L"], cl, PRE), Code.OK, "read")
    same(c, "the recused leader", recused_l2, lambda u, cl: move(u["L2"], cl, PRE), Code.NOT_FOUND, "read")


def test_request_ids_are_read(c):
    # The id of a call already made: a retry of the move gets its first answer; the id of
    # another call is refused, even where the clue would let the move through (a note's id:
    # a note does not move the version).
    rids = {c.srv.addr: new_request_id(), c.b.addr: new_request_id()}

    def moved(u):
        return move(u["L"], accepted(u), PRE, request_id=rids[u["L"].addr]).clue

    same(c, "a retry", moved,
         lambda u, cl: move(u["L"], cl, PRE, version=cl.version - 1, request_id=rids[u["L"].addr]), Code.OK, "read")

    def noted(u):
        cl = accepted(u)
        u["L"].clue.AddNote(pb.AddNoteRequest(clue_id=cl.id, kind=pb.NOTE_KIND_OTHER, text="先谈话",
                                              request_id=note_rid[u["L"].addr]), timeout=20)
        return u["L"].clue.GetClue(pb.GetClueRequest(clue_id=cl.id), timeout=20)

    note_rid = {c.srv.addr: new_request_id(), c.b.addr: new_request_id()}
    same(c, "a note's request id", noted,
         lambda u, cl: move(u["L"], cl, PRE, request_id=note_rid[u["L"].addr]), Code.INVALID_ARGUMENT, "read")



if __name__ == "__main__":
    harness.run_tests(dict(globals()), setup, teardown)
