"""Writes decided on facts read first, written after a change of those facts (migration 0037,
docs/COOPERATION.md): each is refused in its own transaction, after the clue's lock, as the
server would refuse it asked afresh, and writes nothing.

- AssignHandler allowed while the clue was open, written after it was CLOSED: ABORTED.
- The lead room's RecordRecusal allowed while the clue was in its case, written after the
  clue left it, which took the lead room's sight of the clue: NOT_FOUND, as a missing clue.
- CreateJointCase, AddClueToCase and RemoveClueFromCase of a caller recused meanwhile:
  NOT_FOUND, with the message and rich details a fresh call gets.
- The writes of a caller whose recusal is still being written when the write reaches the
  database: the write waits for the clue's lock, which the recusal holds until it commits,
  and then finds it (moves, co-review proposals, reviews, handovers, deadline extensions,
  notes, assignments, recusals, the batched moves).
- AddNote of an author who sees the clue only as a handler, through its joint case (a
  participant, the lead room) or as the reviewing unit, and loses that sight while the note
  waits for the clue: NOT_FOUND as a fresh call, no note, no event. The note looks at the
  caller's sight again once it holds the clue's lock (service/note.c).
- RecordRecusal by the user or a leader of the user's unit, decided while the recorder saw the
  clue through a joint case (its unit removed, the clue taken out), an assignment (ended) or a
  pending review (decided), and reaching the clue's lock after that sight ended: NOT_FOUND as a
  fresh call and a missing clue, nothing written. The write reads the recorder's sight again
  once it holds the clue's lock (0068, service/handler.c), as AddNote's does.
- A recusal recorded by two leaders at once: the later one FAILED_PRECONDITION "user N is
  already recused from this clue", as a fresh second recording (0060), not ALREADY_EXISTS.
- A write refused as a change made meanwhile (a stale version, the clue handed over) whose
  caller lost sight of the clue in the same race (the clue handed over to a unit it does not
  see; a recusal and a move; a recusal and an extension behind a case's lock): NOT_FOUND, as a
  fresh call (with as stale a version) and a call naming a missing clue are answered, never
  "changed meanwhile", and nothing written. The server reads the caller's sight again once the
  write is refused (svc_sight_on_refusal(), service/common.c).

Two ways to hold a call where the race would have it: harness.stalled_by_its_key() holds the
call at its request key while the other change commits; a superuser session holding the
clue's audit head stops RecordRecusal inside its transaction (recusal inserted, clue locked)
while the other call is sent, passes every check made before the clue's lock, and waits for
that lock. note_on_its_way() holds a change the same way and sends a note meanwhile, or
holds the clue's row while a change that does not take the clue commits.
"""

import contextlib
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
cs = S.case_pb2
cm = S.common_pb2
Code = grpc.StatusCode
PRE, FIL, CLO = cm.CLUE_STATE_PRELIMINARY_CHECK, cm.CLUE_STATE_FILED, cm.CLUE_STATE_CLOSED
DAY_MS = 86_400_000

setup, teardown = world.served, world.unserve


def submit(u, host="市发展改革委"):
    return u.clue.SubmitClue(pb.SubmitClueRequest(
        request_id=new_request_id(), title="线索", summary="摘要", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
        subject=pb.SubjectPerson(name="张某"), host_unit=host), timeout=20)


def move_req(clue, target, **details):
    return pb.RequestTransitionRequest(clue_id=clue.id, expected_version=clue.version, target=target, reason="r",
                                       details=pb.TransitionDetails(**details), request_id=new_request_id())


def move(u, clue, target, **details):
    return u.clue.RequestTransition(move_req(clue, target, **details), timeout=20)


def recuse(by, clue_id, user_id, rid=None):
    return by.clue.RecordRecusal(pb.RecordRecusalRequest(clue_id=clue_id, user_id=user_id, reason="利害关系",
                                                         request_id=rid or new_request_id()), timeout=30)


def answer(fn, *args, **kw):
    """(code, message, raw rich details) of a call: OK with empty strings when it succeeds."""
    try:
        fn(*args, **kw)
        return Code.OK, "", b""
    except grpc.RpcError as e:
        raw = [v for k, v in (e.trailing_metadata() or ()) if k == "grpc-status-details-bin"]
        return e.code(), e.details(), raw[0] if raw else b""


def rows(db, sql, *args):
    with db.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def events(db, clue_id):
    return rows(db, "SELECT seq, action, actor_user_id FROM audit_events WHERE subject_type = 'clue'"
                    " AND subject_id = %s ORDER BY seq", clue_id)


def stalled(c, user, fn, req, during):
    """harness.stalled_by_its_key(), answering (code, message, raw rich details)."""
    box = {}

    def call(r, timeout):
        box["a"] = answer(fn, r, timeout=timeout)

    harness.stalled_by_its_key(c.dbname, user.id, call, req, during)
    return box["a"]


def waiting(db):
    """How many backends of this database wait for a lock (tests run side by side on one
    cluster: another database's waiters are not this test's)."""
    return rows(db, "SELECT count(DISTINCT l.pid) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                    " WHERE NOT l.granted AND a.datname = current_database()")[0][0]


@contextlib.contextmanager
def clue_head_held(c, clue_id):
    """A superuser session holding the clue's audit head, which every write of the clue waits
    for, until the block ends; yields another session to count the waiting backends with."""
    pg = harness.Postgres.get()
    lk, watch = pg.connect(c.dbname), pg.connect(c.dbname)
    watch.autocommit = True
    lk.autocommit = False
    try:
        lk.cursor().execute("SELECT 1 FROM audit_heads WHERE subject_type = 'clue' AND subject_id = %s FOR UPDATE",
                            (clue_id,))
        yield watch
    finally:
        lk.rollback()
        lk.close()
        watch.close()


def behind_a_recusal(c, clue_id, recorder, user, write):
    """Record user's recusal from the clue by recorder, held inside its transaction (the clue
    locked, the recusal inserted) by a superuser session holding the clue's audit head; send
    write() meanwhile and let the recusal commit once write waits for the clue. Returns what
    write() returned and the seq of the clue.recuse event."""
    out = {}
    t_rec = threading.Thread(target=lambda: out.setdefault("recuse", answer(recuse, recorder, clue_id, user.id)))
    t_write = threading.Thread(target=lambda: out.setdefault("write", write()))
    try:
        with clue_head_held(c, clue_id) as watch:
            t_rec.start()
            harness.wait_for(lambda: waiting(watch) >= 1, what="the recusal waiting for the clue's audit head")
            t_write.start()
            # (A write that has nothing to wait for, left out at once, is done.)
            harness.wait_for(lambda: waiting(watch) >= 2 or not t_write.is_alive(),
                             what="the write waiting for the clue")
    finally:
        t_rec.join()
        t_write.join()
    assert out["recuse"][0] == Code.OK, out["recuse"]
    seq = rows(c.db, "SELECT seq FROM audit_events WHERE subject_type = 'clue' AND subject_id = %s"
                     " AND action = 'clue.recuse' AND (details::jsonb ->> 'user_id')::bigint = %s", clue_id, user.id)[0][0]
    return out["write"], seq


def nothing_after(c, clue_id, seq):
    after = [e for e in events(c.db, clue_id) if e[0] > seq]
    assert after == [], after


def test_assignment_on_its_way_as_the_clue_closes(c):
    # Allowed while the clue was in its preliminary check, written after it was CLOSED: the
    # state moved under a call that compares no version, so it is ABORTED, and a fresh call
    # gets the terminal state's refusal.
    w = c.w
    L = w.G1.leader
    cl = move(L, submit(w.G1.member), PRE).clue
    req = pb.AssignHandlerRequest(clue_id=cl.id, user_id=w.R2.member.id, reason="派员参与", request_id=new_request_id())
    before = events(c.db, cl.id)
    got = stalled(c, L, L.clue.AssignHandler, req, lambda: move(L, cl, CLO, finding="查无实据"))
    assert got[:2] == (Code.ABORTED, f"clue {cl.id} changed meanwhile (now CLOSED); reload it and retry"), got
    assert rows(c.db, "SELECT count(*) FROM clue_handlers WHERE clue_id = %s", cl.id)[0][0] == 0
    assert [e[1] for e in events(c.db, cl.id)] == [e[1] for e in before] + ["clue.move"]
    assert answer(L.clue.AssignHandler, req, timeout=20)[:2] == (
        Code.FAILED_PRECONDITION, "clue is CLOSED, a terminal state; it takes no new handlers")
    assert answer(w.R2.member.clue.GetClue, pb.GetClueRequest(clue_id=cl.id), timeout=20)[0] == Code.NOT_FOUND
    # An unassignment stays allowed in any state, and one of an open clue is not held up.
    cl2 = move(L, submit(w.G1.member), PRE).clue
    L.clue.AssignHandler(pb.AssignHandlerRequest(clue_id=cl2.id, user_id=w.R2.member.id,
                                                 request_id=new_request_id()), timeout=20)
    un = pb.UnassignHandlerRequest(clue_id=cl2.id, user_id=w.R2.member.id, request_id=new_request_id())
    got = stalled(c, L, L.clue.UnassignHandler, un, lambda: move(L, cl2, CLO, finding="查无实据"))
    assert got[0] == Code.OK, got


def test_lead_rooms_recusal_on_its_way_as_the_clue_leaves(c):
    # R1's leader, lead of the case, records a recusal of G3's own leader; G3's leader takes the
    # clue out meanwhile. The lead room's standing ended with the membership, and so did its
    # sight of the clue (G3's liaison room is R2): NOT_FOUND, as a fresh call and a missing clue
    # are answered, and no recusal locks the owner's leader out.
    w = c.w
    GL, RL = w.G3.leader, w.R1.leader
    cl = submit(w.G3.member, host="市卫生健康委")
    jc = RL.case.CreateJointCase(cs.CreateJointCaseRequest(title="联合办案", participant_unit_ids=[w.G3.id],
                                                            request_id=new_request_id()), timeout=20)
    GL.case.AddClueToCase(cs.AddClueToCaseRequest(case_id=jc.id, clue_id=cl.id), timeout=20)
    req = pb.RecordRecusalRequest(clue_id=cl.id, user_id=GL.id, reason="亲属关系", request_id=new_request_id())
    got = stalled(c, RL, RL.clue.RecordRecusal, req, lambda: GL.case.RemoveClueFromCase(
        cs.RemoveClueFromCaseRequest(case_id=jc.id, clue_id=cl.id, reason="收回"), timeout=20))
    like_a_missing_clue(RL.clue.RecordRecusal, got, req)
    assert rows(c.db, "SELECT count(*) FROM recusals WHERE clue_id = %s", cl.id)[0][0] == 0
    assert "clue.recuse" not in [e[1] for e in events(c.db, cl.id)]
    assert GL.clue.GetClue(pb.GetClueRequest(clue_id=cl.id), timeout=20).id == cl.id
    # The user's own record, and their unit leader's, stand on what is theirs, not the case's.
    GL.clue.AssignHandler(pb.AssignHandlerRequest(clue_id=cl.id, user_id=w.R2.member.id,
                                                  request_id=new_request_id()), timeout=20)
    assert recuse(w.R2.member, cl.id, 0).user_id == w.R2.member.id


def test_case_calls_of_a_caller_recused_meanwhile(c):
    # Each answers what the same call made afresh answers the recused caller, and changes nothing.
    w = c.w
    L, M, RL = w.G1.leader, w.G1.member, w.R1.leader
    L2 = w.new_user("G1", "LEADER", "G1-leader-cases")

    # CreateJointCase by G1's liaison room naming G1's clue: recused while held at its key (by
    # itself: the owner's leader records no recusal of its liaison room's staff).
    cl = submit(M)
    title = "联合办案-回避"
    req = cs.CreateJointCaseRequest(title=title, clue_ids=[cl.id], request_id=new_request_id())
    got = stalled(c, RL, RL.case.CreateJointCase, req, lambda: recuse(RL, cl.id, 0))
    fresh = answer(RL.case.CreateJointCase, cs.CreateJointCaseRequest(title=title, clue_ids=[cl.id],
                                                                      request_id=new_request_id()), timeout=20)
    assert fresh[:2] == (Code.NOT_FOUND, f"clue_ids: clue {cl.id}: clue not found"), fresh
    assert got == fresh, (got, fresh)
    assert rows(c.db, "SELECT count(*) FROM joint_cases WHERE title = %s", title)[0][0] == 0
    assert [e[1] for e in events(c.db, cl.id)] == ["clue.submit", "clue.recuse"]

    # AddClueToCase and RemoveClueFromCase by G1's leader, whom the other G1 leader recuses as
    # the call reaches the clue.
    jc = w.R2.leader.case.CreateJointCase(cs.CreateJointCaseRequest(
        title="案R2", participant_unit_ids=[w.G1.id], request_id=new_request_id()), timeout=20)
    cl = submit(M)
    add = cs.AddClueToCaseRequest(case_id=jc.id, clue_id=cl.id)
    got, seq = behind_a_recusal(c, cl.id, L2, L, lambda: answer(L.case.AddClueToCase, add, timeout=30))
    fresh = answer(L.case.AddClueToCase, add, timeout=20)
    assert fresh[:2] == (Code.NOT_FOUND, "clue not found"), fresh
    assert got == fresh, (got, fresh)
    nothing_after(c, cl.id, seq)
    assert rows(c.db, "SELECT joint_case_id FROM clues WHERE id = %s", cl.id)[0][0] is None

    cl = submit(M)
    L2.case.AddClueToCase(cs.AddClueToCaseRequest(case_id=jc.id, clue_id=cl.id), timeout=20)
    rm = cs.RemoveClueFromCaseRequest(case_id=jc.id, clue_id=cl.id, reason="收回")
    got, seq = behind_a_recusal(c, cl.id, L2, L, lambda: answer(L.case.RemoveClueFromCase, rm, timeout=30))
    fresh = answer(L.case.RemoveClueFromCase, rm, timeout=20)
    assert fresh[:2] == (Code.NOT_FOUND, "clue not found"), fresh
    assert got == fresh, (got, fresh)
    nothing_after(c, cl.id, seq)
    assert rows(c.db, "SELECT joint_case_id FROM clues WHERE id = %s", cl.id)[0][0] == jc.id


def test_writes_waiting_behind_their_callers_recusal(c):
    # The write passed clue_request_begin()'s look for a recusal before the recusal committed,
    # then waited for the clue's lock: after it, the recusal refuses it as a fresh call is
    # refused, and nothing follows the clue.recuse event.
    w = c.w
    L, M = w.G1.leader, w.G1.member
    L2 = w.new_user("G1", "LEADER", "G1-leader-waits")

    def case(name, cl, recorder, user, fn, req, want="clue not found", check=None):
        got, seq = behind_a_recusal(c, cl.id, recorder, user, lambda: answer(fn, req, timeout=30))
        fresh = answer(fn, req, timeout=20)
        assert got[:2] == (Code.NOT_FOUND, want), (name, got)
        assert got == fresh, (name, got, fresh)
        nothing_after(c, cl.id, seq)
        if check:
            check()

    def unchanged(cl):
        def check():
            version, state, owner = rows(c.db, "SELECT version, state, owner_unit FROM clues WHERE id = %s", cl.id)[0]
            assert (version, state, owner) == (cl.version, cm.ClueState.Name(cl.state)[len("CLUE_STATE_"):],
                                               cl.owner_unit_id), (version, state, owner)
        return check

    cl = move(L, submit(M), PRE).clue
    case("HandOver", cl, L2, L, L.clue.HandOver, pb.HandOverRequest(
        clue_id=cl.id, expected_version=cl.version, to_unit_id=w.G2.id, reason="移交", request_id=new_request_id()),
        check=unchanged(cl))
    cl = move(L, submit(M), PRE).clue
    case("ExtendDeadline", cl, L2, L, L.clue.ExtendDeadline, pb.ExtendDeadlineRequest(
        clue_id=cl.id, expected_version=cl.version, days=30, reason="延期", request_id=new_request_id()),
        check=unchanged(cl))
    cl = move(L, submit(M), PRE).clue
    case("AddNote", cl, L, M, M.clue.AddNote, pb.AddNoteRequest(
        clue_id=cl.id, kind=pb.NOTE_KIND_OTHER, text="秘密记录", request_id=new_request_id()))
    assert rows(c.db, "SELECT count(*) FROM notes WHERE clue_id = %s", cl.id)[0][0] == 0
    cl = move(L, submit(M), PRE).clue
    case("RequestTransition (co-review)", cl, L2, L, L.clue.RequestTransition, move_req(cl, FIL),
         check=unchanged(cl))
    # A plain move of a clue that had a recusal already is read first, then written alone.
    cl = submit(M)
    recuse(L, cl.id, w.R2.member.id)
    case("RequestTransition (plain)", cl, L2, L, L.clue.RequestTransition, move_req(cl, PRE), check=unchanged(cl))
    # One that had none is written at once, and its guard sees the first recusal.
    cl = submit(M)
    case("RequestTransition (direct)", cl, L2, L, L.clue.RequestTransition, move_req(cl, PRE), check=unchanged(cl))
    cl = move(L, submit(M), PRE).clue
    case("AssignHandler", cl, L2, L, L.clue.AssignHandler, pb.AssignHandlerRequest(
        clue_id=cl.id, user_id=w.R2.member.id, request_id=new_request_id()))
    assert rows(c.db, "SELECT count(*) FROM clue_handlers WHERE clue_id = %s", cl.id)[0][0] == 0
    cl = move(L, submit(M), PRE).clue
    case("RecordRecusal", cl, L2, L, L.clue.RecordRecusal, pb.RecordRecusalRequest(
        clue_id=cl.id, user_id=M.id, reason="回避", request_id=new_request_id()))
    assert rows(c.db, "SELECT count(*) FROM recusals WHERE clue_id = %s AND user_id = %s", cl.id, M.id)[0][0] == 0
    # The review of R1's leader, who declares a conflict meanwhile.
    cl = move(L, submit(M), PRE).clue
    prop = move(L, cl, FIL).proposal
    case("ReviewProposal", cl, w.R1.leader, w.R1.leader, w.R1.leader.clue.ReviewProposal, pb.ReviewProposalRequest(
        proposal_id=prop.id, approve=True, comment="同意", request_id=new_request_id()), want="proposal not found")
    assert rows(c.db, "SELECT status, state FROM proposals p JOIN clues x ON x.id = p.clue_id WHERE p.id = %s",
                prop.id) == [("PENDING", "PRELIMINARY_CHECK")]


def test_a_reporter_read_on_its_way_as_its_reader_is_recused(c):
    # GetClue decides on a first read, then reads the reporter (logging clue.reporter_read).
    # The leader's recusal commits while that read waits: under the clue's lock it sees the
    # recusal, refused as a fresh call is, no reporter and no event after the recusal. It
    # used to check the owner unit alone, take no lock, and hand the recused leader the
    # reporter's phone, logged after the recusal.
    w = c.w
    L, M = w.G1.leader, w.G1.member
    L2 = w.new_user("G1", "LEADER", "G1-leader-recuses-a-reader")
    cl = M.clue.SubmitClue(pb.SubmitClueRequest(
        request_id=new_request_id(), title="举报线索", summary="摘要", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
        subject=pb.SubjectPerson(name="张某"), host_unit="市发展改革委",
        reporter=pb.ReporterContact(name="举报人", phone="13700000009")), timeout=20)
    assert L.clue.GetClue(pb.GetClueRequest(clue_id=cl.id), timeout=20).reporter.phone == "13700000009"
    req = pb.GetClueRequest(clue_id=cl.id)
    got, seq = behind_a_recusal(c, cl.id, L2, L, lambda: answer(L.clue.GetClue, req, timeout=30))
    fresh = answer(L.clue.GetClue, req, timeout=20)
    assert got[:2] == (Code.NOT_FOUND, "clue not found") and got == fresh, (got, fresh)
    nothing_after(c, cl.id, seq)
    # The other leader, not recused, still reads it, and that read is logged.
    assert L2.clue.GetClue(req, timeout=20).reporter.phone == "13700000009"
    assert events(c.db, cl.id)[-1][1:] == ("clue.reporter_read", L2.id)


def test_batched_moves_leave_out_a_clue_whose_recusal_is_on_its_way(c):
    # clue_apply_moves() as clued's batcher calls it after a facts read (p_direct false): its
    # update waits for the clue the recusal holds; a look at recusals in that statement would
    # read its snapshot from before the recusal committed. The move is left out (no row,
    # nothing written), to run alone, where the recusal is seen.
    w = c.w
    L, L2 = w.G1.leader, w.new_user("G1", "LEADER", "G1-leader-batch")
    pg = harness.Postgres.get()
    for earlier in (False, True):  # the clue's first recusal, and one after another user's
        cl = submit(w.G1.member)
        if earlier:
            recuse(L2, cl.id, w.R2.member.id)
        now_ms = cl.updated_at_ms + 1000

        def batch():
            conn = pg.connect(c.dbname)
            conn.autocommit = True
            try:
                return rows(conn, "SELECT o.ord, (o.clue).id FROM clue_apply_moves("
                                  "ARRAY[%s]::bigint[], ARRAY[%s]::bigint[], ARRAY[%s]::uuid[], ARRAY[%s]::bigint[],"
                                  " ARRAY[%s]::bigint[], ARRAY[%s]::bigint[], ARRAY['ACCEPTED'], ARRAY['PRELIMINARY_CHECK'],"
                                  " ARRAY['start_check'], ARRAY['r'], ARRAY['{}'::jsonb], ARRAY[%s]::bigint[],"
                                  " ARRAY[NULL]::bigint[], false) o",
                            L.id, w.G1.id, new_request_id(), now_ms, cl.id, cl.version, now_ms + 30 * DAY_MS)
            finally:
                conn.close()

        got, seq = behind_a_recusal(c, cl.id, L2, L, batch)
        assert got == [], (earlier, got)
        nothing_after(c, cl.id, seq)
        assert rows(c.db, "SELECT state, version FROM clues WHERE id = %s", cl.id) == [("ACCEPTED", cl.version)]


def note_on_its_way(c, clue_id, author, change, clue_held=False):
    """author's AddNote, decided while author sees the clue, sent while change() is on its way,
    and reaching the clue's lock after change() committed. A change that takes the clue's lock
    is stopped inside its transaction (the clue locked, its event not yet appended) by a
    superuser session holding the clue's audit head, and the note is sent meanwhile: it reads
    what the change has not yet committed, then waits for the clue. A change that does not take
    the clue (clue_held) runs whole while that session holds the clue's row and the note waits
    for it. Returns the note's answer and what change() returned."""
    pg = harness.Postgres.get()
    lk, watch = pg.connect(c.dbname), pg.connect(c.dbname)
    watch.autocommit = True
    lk.autocommit = False
    if clue_held:
        lk.cursor().execute("SELECT 1 FROM clues WHERE id = %s FOR NO KEY UPDATE", (clue_id,))
    else:
        lk.cursor().execute("SELECT 1 FROM audit_heads WHERE subject_type = 'clue' AND subject_id = %s FOR UPDATE",
                            (clue_id,))
    assert answer(author.clue.GetClue, pb.GetClueRequest(clue_id=clue_id), timeout=20)[0] == Code.OK
    req = pb.AddNoteRequest(clue_id=clue_id, kind=pb.NOTE_KIND_OTHER, text="会商记录", request_id=new_request_id())
    out = {}
    t_change = threading.Thread(target=lambda: out.setdefault("change", answer(change)))
    t_note = threading.Thread(target=lambda: out.setdefault("note", answer(author.clue.AddNote, req, timeout=30)))
    try:
        if clue_held:
            t_note.start()
            harness.wait_for(lambda: waiting(watch) >= 1, what="the note waiting for the clue")
            t_change.start()
            t_change.join()
        else:
            t_change.start()
            harness.wait_for(lambda: waiting(watch) >= 1, what="the change waiting for the clue's audit head")
            t_note.start()
            harness.wait_for(lambda: waiting(watch) >= 2, what="the note waiting for the clue")
    finally:
        lk.rollback()
        lk.close()
        watch.close()
        t_change.join()
        t_note.join()
    assert out["change"][0] == Code.OK, out["change"]
    return out["note"], req


def refused_like_a_missing_clue(c, clue_id, author, got, req):
    fresh = answer(author.clue.AddNote, pb.AddNoteRequest(clue_id=clue_id, kind=req.kind, text=req.text,
                                                          request_id=new_request_id()), timeout=20)
    missing = answer(author.clue.AddNote, pb.AddNoteRequest(clue_id=987654321, kind=req.kind, text=req.text,
                                                            request_id=new_request_id()), timeout=20)
    assert fresh[:2] == (Code.NOT_FOUND, "clue not found"), fresh
    assert got == fresh == missing, (got, fresh, missing)
    assert rows(c.db, "SELECT count(*) FROM notes WHERE clue_id = %s", clue_id)[0][0] == 0
    assert "note.add" not in [e[1] for e in events(c.db, clue_id)]
    assert rows(c.db, "SELECT count(*) FROM clue_requests WHERE user_id = %s AND request_id = %s",
                author.id, req.request_id)[0][0] == 0


def test_a_note_on_its_way_when_its_author_loses_sight_of_the_clue(c):
    # Each author saw the clue by one reason only when the server decided the note; the change
    # that ends it commits while the note waits for the clue. Under the clue's lock the note
    # looks again: refused as a fresh call, nothing written.
    w = c.w
    L, M = w.G1.leader, w.G1.member

    def handled():
        cl = move(L, submit(M), PRE).clue
        L.clue.AssignHandler(pb.AssignHandlerRequest(clue_id=cl.id, user_id=w.R2.member.id,
                                                     request_id=new_request_id()), timeout=20)
        return cl

    # A handler seconded from R2 (派员参与), unassigned.
    cl = handled()
    got, req = note_on_its_way(c, cl.id, w.R2.member, lambda: L.clue.UnassignHandler(pb.UnassignHandlerRequest(
        clue_id=cl.id, user_id=w.R2.member.id, reason="撤回", request_id=new_request_id()), timeout=30))
    refused_like_a_missing_clue(c, cl.id, w.R2.member, got, req)

    # The same handler, the clue handed over (which ends every assignment).
    cl = handled()
    got, req = note_on_its_way(c, cl.id, w.R2.member, lambda: L.clue.HandOver(pb.HandOverRequest(
        clue_id=cl.id, expected_version=cl.version, to_unit_id=w.G2.id, reason="移交",
        request_id=new_request_id()), timeout=30))
    refused_like_a_missing_clue(c, cl.id, w.R2.member, got, req)

    # A case led by R2 with X1 taking part: X1's member (a participant) and R2's (the lead
    # room), each seeing G1's clue through the case alone, as G1's leader takes it out.
    jc = w.R2.leader.case.CreateJointCase(cs.CreateJointCaseRequest(
        title="联合办案-会商", participant_unit_ids=[w.G1.id, w.X1.id], request_id=new_request_id()), timeout=20)
    for author in (w.X1.member, w.R2.member):
        cl = move(L, submit(M), PRE).clue
        L.case.AddClueToCase(cs.AddClueToCaseRequest(case_id=jc.id, clue_id=cl.id), timeout=20)
        got, req = note_on_its_way(c, cl.id, author, lambda: L.case.RemoveClueFromCase(cs.RemoveClueFromCaseRequest(
            case_id=jc.id, clue_id=cl.id, reason="收回"), timeout=30))
        refused_like_a_missing_clue(c, cl.id, author, got, req)

    # X1 removed from the case: the removal takes the case, not the clue; it commits while the
    # note waits for the clue.
    cl = move(L, submit(M), PRE).clue
    L.case.AddClueToCase(cs.AddClueToCaseRequest(case_id=jc.id, clue_id=cl.id), timeout=20)
    got, req = note_on_its_way(c, cl.id, w.X1.member, lambda: w.R2.leader.case.RemoveParticipant(
        cs.RemoveParticipantRequest(case_id=jc.id, unit_id=w.X1.id, reason="协作结束"), timeout=30), clue_held=True)
    refused_like_a_missing_clue(c, cl.id, w.X1.member, got, req)

    # R1's member sees X1's clue only while R1 reviews its pending co-review; R1's leader decides.
    x = move(w.X1.leader, submit(w.X1.member, host="某区"), PRE).clue
    prop = move(w.X1.leader, x, FIL, reviewer_unit_id=w.R1.id).proposal
    got, req = note_on_its_way(c, x.id, w.R1.member, lambda: w.R1.leader.clue.ReviewProposal(pb.ReviewProposalRequest(
        proposal_id=prop.id, approve=False, comment="不同意", request_id=new_request_id()), timeout=30))
    refused_like_a_missing_clue(c, x.id, w.R1.member, got, req)

    # Whoever still sees the clue adds notes as before, also while a change is on its way.
    got, req = note_on_its_way(c, cl.id, M, lambda: L.case.RemoveClueFromCase(cs.RemoveClueFromCaseRequest(
        case_id=jc.id, clue_id=cl.id, reason="收回"), timeout=30))
    assert got[0] == Code.OK, got
    assert [e[1] for e in events(c.db, cl.id)][-2:] == ["case.remove_clue", "note.add"]



MISSING = 987654321


def like_a_missing_clue(fn, got, req, field="clue_id", want="clue not found"):
    """got, the answer of fn(req) in a race, is NOT_FOUND want and equals, code, message and rich
    details, what the same call made afresh (its version as stale) and one naming a clue that
    does not exist answer."""
    fresh = answer(fn, req, timeout=20)
    gone = type(req)()
    gone.CopyFrom(req)
    setattr(gone, field, MISSING)
    if hasattr(gone, "request_id"):
        gone.request_id = new_request_id()
    missing = answer(fn, gone, timeout=20)
    assert got[:2] == (Code.NOT_FOUND, want), got
    assert got == fresh == missing, (got, fresh, missing)


def moves_and_an_extension(c, L, run, days):
    """run(name, fn, build) for L's closing move, L's move to FILED (co-review: it must leave no
    proposal) and L's extension by days, each built from the clue run makes for it."""
    run("RequestTransition", L.clue.RequestTransition, lambda cl: move_req(cl, CLO, finding="查无实据"))
    cl = run("RequestTransition (co-review)", L.clue.RequestTransition, lambda cl: move_req(cl, FIL))
    assert rows(c.db, "SELECT count(*) FROM proposals WHERE clue_id = %s", cl.id) == [(0,)]
    run("ExtendDeadline", L.clue.ExtendDeadline, lambda cl: pb.ExtendDeadlineRequest(
        clue_id=cl.id, expected_version=cl.version, days=days, reason="延期", request_id=new_request_id()))


def test_writes_of_a_caller_who_loses_sight_as_the_clue_is_handed_over(c):
    # G1's leader decides each write while G1 owns the clue; G1's other leader hands the clue
    # to G2 while the write waits at its request key. The write then meets a clue that changed
    # (its version, its owner), but its caller no longer sees it: that decision comes first, as
    # in a fresh call, so the answer is a missing clue's and not "changed meanwhile", and the
    # write leaves nothing after the handover.
    w = c.w
    L, M = w.G1.leader, w.G1.member
    L2 = w.new_user("G1", "LEADER", "G1-leader-hands-over")
    rp = S.rectification_pb2

    def handed_over(name, fn, build, field="clue_id", want="clue not found", handler=False):
        cl = move(L, submit(M), PRE).clue
        # A recusal of someone else: the clue's moves are read first, then written alone.
        recuse(L2, cl.id, w.R2.member.id)
        if handler:
            L.clue.AssignHandler(pb.AssignHandlerRequest(clue_id=cl.id, user_id=w.X1.member.id,
                                                         request_id=new_request_id()), timeout=20)
        req = build(cl)
        got = stalled(c, L, fn, req, lambda: L2.clue.HandOver(pb.HandOverRequest(
            clue_id=cl.id, expected_version=cl.version, to_unit_id=w.G2.id, reason="移交",
            request_id=new_request_id()), timeout=30))
        like_a_missing_clue(fn, got, req, field, want)
        assert events(c.db, cl.id)[-1][1] == "clue.handover", name
        assert rows(c.db, "SELECT owner_unit, version FROM clues WHERE id = %s", cl.id) == [
            (w.G2.id, cl.version + 1)], name
        return cl

    moves_and_an_extension(c, L, handed_over, days=30)
    handed_over("HandOver", L.clue.HandOver, lambda cl: pb.HandOverRequest(
        clue_id=cl.id, expected_version=cl.version, to_unit_id=w.G3.id, reason="移交", request_id=new_request_id()))
    cl = handed_over("AssignHandler", L.clue.AssignHandler, lambda cl: pb.AssignHandlerRequest(
        clue_id=cl.id, user_id=w.X1.member.id, request_id=new_request_id()))
    handed_over("UnassignHandler", L.clue.UnassignHandler, lambda cl: pb.UnassignHandlerRequest(
        clue_id=cl.id, user_id=w.X1.member.id, reason="撤回", request_id=new_request_id()), handler=True)
    cl = handed_over("RecordRecusal", L.clue.RecordRecusal, lambda cl: pb.RecordRecusalRequest(
        clue_id=cl.id, user_id=M.id, reason="回避", request_id=new_request_id()))
    assert rows(c.db, "SELECT count(*) FROM recusals WHERE clue_id = %s AND user_id = %s", cl.id, M.id) == [(0,)]
    # The ledger's item from the clue (its write compares the owner, "changed owner meanwhile").
    cl = handed_over("CreateItem", L.rect.CreateItem, lambda cl: rp.CreateItemRequest(
        host_unit="市发展改革委", description="政府采购未按规定公开", category="财务管理",
        source=rp.RECTIFICATION_SOURCE_CLUE, source_clue_id=cl.id,
        deadline_ms=cl.updated_at_ms + 60 * DAY_MS, request_id=new_request_id()),
        field="source_clue_id", want="source_clue_id: clue not found")
    assert rows(c.db, "SELECT count(*) FROM rect_items WHERE source_clue = %s", cl.id) == [(0,)]
    # Whoever still sees the clue is told of the change as before: G2's liaison room, R1, sees it.
    cl = move(L, submit(M), PRE).clue
    got = stalled(c, w.R1.member, w.R1.member.clue.AddNote, pb.AddNoteRequest(
        clue_id=cl.id, kind=pb.NOTE_KIND_OTHER, text="会商记录", request_id=new_request_id()),
        lambda: L.clue.HandOver(pb.HandOverRequest(clue_id=cl.id, expected_version=cl.version, to_unit_id=w.G2.id,
                                                   reason="移交", request_id=new_request_id()), timeout=30))
    assert got[:2] == (Code.ABORTED, f"clue {cl.id} was handed over meanwhile; reload it and retry"), got


def behind_a_recusal_and_a_change(c, clue_id, recorder, user, change, write):
    """As behind_a_recusal(), with change() (another user's write of the clue that moves its
    version) queued for the clue between the recusal and write(): the recusal commits, then
    change(), then write() meets both. Returns what write() returned."""
    out = {}
    threads = [threading.Thread(target=lambda: out.setdefault("recuse", answer(recuse, recorder, clue_id, user.id))),
               threading.Thread(target=lambda: out.setdefault("change", answer(change))),
               threading.Thread(target=lambda: out.setdefault("write", write()))]
    try:
        with clue_head_held(c, clue_id) as watch:
            for n, t in enumerate(threads, 1):
                t.start()
                harness.wait_for(lambda: waiting(watch) >= n, what=f"call {n} waiting for the clue")
    finally:
        for t in threads:
            if t.ident is not None:  # started
                t.join()
    assert out["recuse"][0] == Code.OK, out["recuse"]
    assert out["change"][0] == Code.OK, out["change"]
    return out["write"]


def test_writes_of_a_caller_recused_as_the_clue_moves(c):
    # The recusal of G1's leader and an extension by G1's other leader commit in the same race,
    # while the leader's write waits for the clue: the write meets a version it did not expect,
    # and a caller who no longer sees the clue. NOT_FOUND, as a fresh call and a missing clue.
    w = c.w
    L, M = w.G1.leader, w.G1.member
    L2 = w.new_user("G1", "LEADER", "G1-leader-recuses")

    def extend(cl):
        return lambda: L2.clue.ExtendDeadline(pb.ExtendDeadlineRequest(
            clue_id=cl.id, expected_version=cl.version, days=30, reason="延期", request_id=new_request_id()),
            timeout=30)

    def case(name, fn, build):
        cl = move(L, submit(M), PRE).clue
        recuse(L2, cl.id, w.R2.member.id)  # read first, then written alone
        req = build(cl)
        got = behind_a_recusal_and_a_change(c, cl.id, L2, L, extend(cl), lambda: answer(fn, req, timeout=30))
        like_a_missing_clue(fn, got, req)
        assert events(c.db, cl.id)[-1][1] == "clue.deadline_extend", name
        assert rows(c.db, "SELECT state, version FROM clues WHERE id = %s", cl.id) == [
            ("PRELIMINARY_CHECK", cl.version + 1)], name
        return cl

    moves_and_an_extension(c, L, case, days=10)


def test_case_calls_of_a_caller_recused_as_the_clue_moves(c):
    # The same for the case calls: AddClueToCase and RemoveClueFromCase held behind the case's
    # lock, CreateJointCase at its request key, while the caller is recused and the clue's
    # deadline extended.
    w = c.w
    L, M, RL = w.G1.leader, w.G1.member, w.R1.leader
    L2 = w.new_user("G1", "LEADER", "G1-leader-cases-move")
    pg = harness.Postgres.get()
    jc = w.R2.leader.case.CreateJointCase(cs.CreateJointCaseRequest(
        title="案R2-回避", participant_unit_ids=[w.G1.id], request_id=new_request_id()), timeout=20)

    def meanwhile(cl, recused):
        recuse(L2 if recused is L else recused, cl.id, recused.id)
        L2.clue.ExtendDeadline(pb.ExtendDeadlineRequest(clue_id=cl.id, expected_version=cl.version, days=30,
                                                        reason="延期", request_id=new_request_id()), timeout=30)

    def behind_the_case(cl, fn, req):
        lk, watch = pg.connect(c.dbname), pg.connect(c.dbname)
        watch.autocommit = True
        lk.autocommit = False
        lk.cursor().execute("SELECT 1 FROM joint_cases WHERE id = %s FOR NO KEY UPDATE", (jc.id,))
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("a", answer(fn, req, timeout=30)))
        try:
            t.start()
            harness.wait_for(lambda: waiting(watch) >= 1, what="the call waiting for the case")
            meanwhile(cl, L)
        finally:
            lk.rollback()
            lk.close()
            watch.close()
            t.join()
        return out["a"]

    cl = move(L, submit(M), PRE).clue
    add = cs.AddClueToCaseRequest(case_id=jc.id, clue_id=cl.id)
    like_a_missing_clue(L.case.AddClueToCase, behind_the_case(cl, L.case.AddClueToCase, add), add)
    assert rows(c.db, "SELECT joint_case_id FROM clues WHERE id = %s", cl.id) == [(None,)]
    assert events(c.db, cl.id)[-1][1] == "clue.deadline_extend"

    cl = move(L, submit(M), PRE).clue
    L2.case.AddClueToCase(cs.AddClueToCaseRequest(case_id=jc.id, clue_id=cl.id), timeout=20)
    cl = L.clue.GetClue(pb.GetClueRequest(clue_id=cl.id), timeout=20)
    rm = cs.RemoveClueFromCaseRequest(case_id=jc.id, clue_id=cl.id, reason="收回")
    like_a_missing_clue(L.case.RemoveClueFromCase, behind_the_case(cl, L.case.RemoveClueFromCase, rm), rm)
    assert rows(c.db, "SELECT joint_case_id FROM clues WHERE id = %s", cl.id) == [(jc.id,)]
    assert events(c.db, cl.id)[-1][1] == "clue.deadline_extend"

    # CreateJointCase by G1's liaison room, naming the clue.
    cl = move(L, submit(M), PRE).clue
    title = "联合办案-回避-延期"
    req = cs.CreateJointCaseRequest(title=title, clue_ids=[cl.id], request_id=new_request_id())
    got = stalled(c, RL, RL.case.CreateJointCase, req, lambda: meanwhile(cl, RL))
    fresh = answer(RL.case.CreateJointCase, req, timeout=20)
    assert got[:2] == (Code.NOT_FOUND, f"clue_ids: clue {cl.id}: clue not found"), got
    assert got == fresh, (got, fresh)
    missing = answer(RL.case.CreateJointCase, cs.CreateJointCaseRequest(
        title=title, clue_ids=[MISSING], request_id=new_request_id()), timeout=20)
    assert missing[:2] == (Code.NOT_FOUND, f"clue_ids: clue {MISSING}: clue not found"), missing
    assert rows(c.db, "SELECT count(*) FROM joint_cases WHERE title = %s", title) == [(0,)]
    assert events(c.db, cl.id)[-1][1] == "clue.deadline_extend"


ACTIVE_STAFF = "user_id must name an active MEMBER or LEADER of a GROUP, ROOM or REGION"


def disabled_meanwhile(c, user, call, req):
    """call(req) by user, held at its request key while the ADMIN disables the user it names:
    answers as the same call made afresh (INVALID_ARGUMENT, BadRequest included), and leaves no
    request record."""
    w = c.w
    got = stalled(c, user, call, req, lambda: w.admin.admin.DisableUser(S.admin_pb2.DisableUserRequest(
        user_id=req.user_id, reason="离职"), timeout=20))
    fresh = answer(call, req, timeout=20)
    assert fresh[:2] == (Code.INVALID_ARGUMENT, ACTIVE_STAFF), fresh
    assert got == fresh, (got, fresh)
    assert rows(c.db, "SELECT count(*) FROM clue_requests WHERE user_id = %s AND request_id = %s",
                user.id, req.request_id) == [(0,)]


def test_assignment_of_a_user_disabled_meanwhile(c):
    # G1's leader assigns a member of R1 who is active when the server decides; the ADMIN
    # disables the member while the call waits at its request key. The write looks at the user
    # again under the lock of the user's row (0050): refused as a fresh call, nothing written.
    # Before, the disabled user was assigned.
    w = c.w
    L = w.G1.leader
    X = w.new_user("R1", "MEMBER", "R1-member-disabled")
    cl = move(L, submit(w.G1.member), PRE).clue
    before = events(c.db, cl.id)
    disabled_meanwhile(c, L, L.clue.AssignHandler, pb.AssignHandlerRequest(
        clue_id=cl.id, user_id=X.id, reason="派员参与", request_id=new_request_id()))
    assert rows(c.db, "SELECT count(*) FROM clue_handlers WHERE clue_id = %s", cl.id) == [(0,)]
    assert events(c.db, cl.id) == before
    # A handler disabled while its unassignment is on its way: the disable ended the
    # assignment (0066), and the unassignment is answered as a fresh call, with nothing more
    # written.
    Z = w.new_user("R1", "MEMBER", "R1-member-unassigned")
    L.clue.AssignHandler(pb.AssignHandlerRequest(clue_id=cl.id, user_id=Z.id, request_id=new_request_id()),
                         timeout=20)
    un = pb.UnassignHandlerRequest(clue_id=cl.id, user_id=Z.id, reason="离职", request_id=new_request_id())
    got = stalled(c, L, L.clue.UnassignHandler, un,
                  lambda: w.admin.admin.DisableUser(S.admin_pb2.DisableUserRequest(user_id=Z.id, reason="离职"),
                                                    timeout=20))
    fresh = answer(L.clue.UnassignHandler, un, timeout=20)
    assert fresh[:2] == (Code.FAILED_PRECONDITION, f"user {Z.id} is not a handler of this clue"), fresh
    assert got == fresh, (got, fresh)
    assert [e[1] for e in events(c.db, cl.id)][-2:] == ["clue.assign", "clue.unassign"]
    assert rows(c.db, "SELECT count(*) FROM clue_handlers WHERE clue_id = %s", cl.id) == [(0,)]


def test_recusal_of_a_user_disabled_meanwhile(c):
    # The same for the recording of a G1 member's recusal by G1's leader.
    w = c.w
    L = w.G1.leader
    Y = w.new_user("G1", "MEMBER", "G1-member-disabled")
    cl = move(L, submit(w.G1.member), PRE).clue
    before = events(c.db, cl.id)
    disabled_meanwhile(c, L, L.clue.RecordRecusal, pb.RecordRecusalRequest(
        clue_id=cl.id, user_id=Y.id, reason="利害关系", request_id=new_request_id()))
    assert rows(c.db, "SELECT count(*) FROM recusals WHERE clue_id = %s", cl.id) == [(0,)]
    assert events(c.db, cl.id) == before


def test_recusal_recorded_twice_at_once(c):
    # Two leaders of G1 record the recusal of one member at once: L's recording is decided
    # (the member not yet recused) and held at its request key while L2's commits. Under the
    # clue's lock L's finds L2's recusal and is refused as a fresh second recording is
    # (FAILED_PRECONDITION "user N is already recused from this clue", the same rich details;
    # docs/COOPERATION.md, "Twice"), nothing written. Before 0060 it was ALREADY_EXISTS, which
    # a client may take for its own retry having landed.
    w = c.w
    L = w.G1.leader
    L2 = w.new_user("G1", "LEADER", "G1-leader-twice")
    M = w.new_user("G1", "MEMBER", "G1-member-twice")
    cl = move(L, submit(w.G1.member), PRE).clue
    req = pb.RecordRecusalRequest(clue_id=cl.id, user_id=M.id, reason="同学关系", request_id=new_request_id())
    seen = {}

    def other():
        seen["recusal"] = recuse(L2, cl.id, M.id)
        seen["events"] = events(c.db, cl.id)

    got = stalled(c, L, L.clue.RecordRecusal, req, other)
    assert events(c.db, cl.id) == seen["events"]
    fresh = answer(L.clue.RecordRecusal, req, timeout=20)
    assert fresh[:2] == (Code.FAILED_PRECONDITION, f"user {M.id} is already recused from this clue"), fresh
    assert got == fresh, (got, fresh)
    assert rows(c.db, "SELECT id, recorded_by FROM recusals WHERE clue_id = %s", cl.id) == [
        (seen["recusal"].id, L2.id)]
    assert rows(c.db, "SELECT count(*) FROM clue_requests WHERE user_id = %s AND request_id = %s",
                L.id, req.request_id) == [(0,)]


def test_ledger_item_from_a_case_its_unit_left_meanwhile(c):
    # X1's leader records an item from the case R2 leads, X1 taking part when the server
    # decides; R2's leader removes X1 while the call waits at its request key. Under the case's
    # lock the write looks again: NOT_FOUND as a fresh call, and no item.
    w = c.w
    rp = S.rectification_pb2
    XL = w.X1.leader
    jc = w.R2.leader.case.CreateJointCase(cs.CreateJointCaseRequest(
        title="联合办案-整改", participant_unit_ids=[w.X1.id, w.G3.id], request_id=new_request_id()), timeout=20)

    def item():
        return rp.CreateItemRequest(host_unit="某单位", description="未按规定公开", category="财务管理",
                                    source=rp.RECTIFICATION_SOURCE_CASE, source_case_id=jc.id,
                                    deadline_ms=jc.created_at_ms + 60 * DAY_MS, request_id=new_request_id())

    req = item()
    got = stalled(c, XL, XL.rect.CreateItem, req, lambda: w.R2.leader.case.RemoveParticipant(
        cs.RemoveParticipantRequest(case_id=jc.id, unit_id=w.X1.id, reason="协作结束"), timeout=30))
    fresh = answer(XL.rect.CreateItem, req, timeout=20)
    assert fresh[:2] == (Code.NOT_FOUND, "source_case_id: joint case not found"), fresh
    assert got == fresh, (got, fresh)
    assert rows(c.db, "SELECT count(*) FROM rect_items WHERE source_case = %s", jc.id) == [(0,)]
    assert rows(c.db, "SELECT count(*) FROM audit_events WHERE action = 'rect.create'"
                      " AND actor_user_id = %s", XL.id) == [(0,)]
    # G3, still taking part, records one while a change of the case is on its way.
    GL = w.G3.leader
    got = stalled(c, GL, GL.rect.CreateItem, item(), lambda: w.R2.leader.case.AddParticipant(
        cs.AddParticipantRequest(case_id=jc.id, unit_id=w.X1.id), timeout=30))
    assert got[0] == Code.OK, got


def test_clue_added_to_a_case_its_unit_left_meanwhile(c):
    # G1's leader adds G1's clue to R2's case, G1 taking part when the server decides; R2's
    # leader removes G1 first, and the add waits for the case's lock behind the removal. Under
    # that lock the add looks again: NOT_FOUND as a fresh call, and the clue stays out.
    w = c.w
    L = w.G1.leader
    pg = harness.Postgres.get()
    jc = w.R2.leader.case.CreateJointCase(cs.CreateJointCaseRequest(
        title="联合办案-退出", participant_unit_ids=[w.G1.id], request_id=new_request_id()), timeout=20)
    cl = move(L, submit(w.G1.member), PRE).clue
    add = cs.AddClueToCaseRequest(case_id=jc.id, clue_id=cl.id)
    lk, watch = pg.connect(c.dbname), pg.connect(c.dbname)
    watch.autocommit = True
    lk.autocommit = False
    lk.cursor().execute("SELECT 1 FROM joint_cases WHERE id = %s FOR NO KEY UPDATE", (jc.id,))
    out = {}
    t_rm = threading.Thread(target=lambda: out.setdefault("rm", answer(
        w.R2.leader.case.RemoveParticipant, cs.RemoveParticipantRequest(case_id=jc.id, unit_id=w.G1.id,
                                                                          reason="协作结束"), timeout=30)))
    t_add = threading.Thread(target=lambda: out.setdefault("add", answer(L.case.AddClueToCase, add, timeout=30)))
    try:
        t_rm.start()
        harness.wait_for(lambda: waiting(watch) >= 1, what="the removal waiting for the case")
        t_add.start()
        harness.wait_for(lambda: waiting(watch) >= 2, what="the add waiting for the case")
    finally:
        lk.rollback()
        lk.close()
        watch.close()
        t_rm.join()
        t_add.join()
    assert out["rm"][0] == Code.OK, out["rm"]
    fresh = answer(L.case.AddClueToCase, add, timeout=20)
    assert fresh[:2] == (Code.NOT_FOUND, "joint case not found"), fresh
    assert out["add"] == fresh, (out["add"], fresh)
    assert rows(c.db, "SELECT joint_case_id FROM clues WHERE id = %s", cl.id) == [(None,)]
    assert rows(c.db, "SELECT count(*) FROM case_clues WHERE case_id = %s", jc.id) == [(0,)]
    assert "case.add_clue" not in [e[1] for e in events(c.db, cl.id)]


def ledger_item_with_a_note(c):
    """An item from a clue of G1 moved to its preliminary check, and a note of that clue."""
    w, rp = c.w, S.rectification_pb2
    L = w.G1.leader
    cl = move(L, submit(w.G1.member), PRE).clue
    note = L.clue.AddNote(pb.AddNoteRequest(clue_id=cl.id, kind=pb.NOTE_KIND_OTHER, text="整改方案要点",
                                            request_id=new_request_id()), timeout=20)
    it = L.rect.CreateItem(rp.CreateItemRequest(
        host_unit="市发展改革委", description="政府采购未按规定公开", category="财务管理",
        source=rp.RECTIFICATION_SOURCE_CLUE, source_clue_id=cl.id, deadline_ms=cl.updated_at_ms + 60 * DAY_MS,
        request_id=new_request_id()), timeout=20)
    return cl, note, it


def item_unchanged(c, it):
    assert rows(c.db, "SELECT version, state, plan_note_ids FROM rect_items WHERE id = %s", it.id) == [
        (it.version, "OPEN", [])]
    assert rows(c.db, "SELECT action FROM audit_events WHERE subject_type = 'rectification' AND subject_id = %s",
                it.id) == [("rect.create",)]


def test_ledger_move_citing_a_note_its_caller_no_longer_sees(c):
    # G1's member records a plan citing a note of the item's source clue; G1's leader hands the
    # clue over to G3 while the call waits at its request key. The write reads the caller's
    # sight of the note's clue again once it holds that clue: INVALID_ARGUMENT as a fresh call,
    # and nothing written. Before, the plan kept the id of a note its author no longer sees.
    w, rp = c.w, S.rectification_pb2
    L, M = w.G1.leader, w.G1.member
    cl, note, it = ledger_item_with_a_note(c)
    req = rp.RecordPlanRequest(item_id=it.id, expected_version=it.version, plan="整改方案", note_ids=[note.id],
                               request_id=new_request_id())
    got = stalled(c, M, M.rect.RecordPlan, req, lambda: L.clue.HandOver(pb.HandOverRequest(
        clue_id=cl.id, expected_version=cl.version, to_unit_id=w.G3.id, reason="移交",
        request_id=new_request_id()), timeout=30))
    fresh = answer(M.rect.RecordPlan, req, timeout=20)
    want = f"note_ids: note {note.id} is not a note of the item's source clue or case"
    assert fresh[:2] == (Code.INVALID_ARGUMENT, want), fresh
    assert got == fresh, (got, fresh)
    item_unchanged(c, it)
    # A note the caller still sees is cited as before, also with a change on its way.
    cl, note, it = ledger_item_with_a_note(c)
    got = stalled(c, M, M.rect.RecordPlan, rp.RecordPlanRequest(
        item_id=it.id, expected_version=it.version, plan="整改方案", note_ids=[note.id],
        request_id=new_request_id()), lambda: L.clue.ExtendDeadline(pb.ExtendDeadlineRequest(
            clue_id=cl.id, expected_version=cl.version, days=10, reason="延期", request_id=new_request_id()),
            timeout=30))
    assert got[0] == Code.OK, got


def test_ledger_move_waiting_behind_its_callers_recusal(c):
    # G1's member moves an item from G1's clue while G1's leader records the member's recusal
    # from that clue (held inside its transaction, the clue locked). The move waits for the
    # source clue and then finds the recusal: NOT_FOUND as a fresh call, nothing written.
    # Before, it took no lock of the clue, passed the look for a recusal not yet committed, and
    # was written after it.
    w, rp = c.w, S.rectification_pb2
    L, M = w.G1.leader, w.G1.member
    cl, note, it = ledger_item_with_a_note(c)
    req = rp.RecordPlanRequest(item_id=it.id, expected_version=it.version, plan="整改方案", request_id=new_request_id())
    got, seq = behind_a_recusal(c, cl.id, L, M, lambda: answer(M.rect.RecordPlan, req, timeout=30))
    fresh = answer(M.rect.RecordPlan, req, timeout=20)
    assert fresh[:2] == (Code.NOT_FOUND, "rectification item not found"), fresh
    assert got == fresh, (got, fresh)
    item_unchanged(c, it)
    assert rows(c.db, "SELECT count(*) FROM audit_events WHERE seq > %s AND actor_user_id = %s", seq, M.id) == [(0,)]


def test_extension_on_its_way_as_a_proposal_is_made(c):
    # G1's leader extends the stage's deadline while another leader of G1 proposes filing the
    # clue (a proposal moves no version). The extension, held at its request key, meets the
    # pending proposal under the clue's lock: refused as a fresh call is (code, message and a
    # PreconditionFailure naming the clue's state), nothing written.
    w = c.w
    L = w.G1.leader
    L2 = w.new_user("G1", "LEADER", "g1-second-leader-extends")
    cl = move(L, submit(w.G1.member), PRE).clue
    req = pb.ExtendDeadlineRequest(clue_id=cl.id, expected_version=cl.version, days=10, reason="延期",
                                   request_id=new_request_id())
    got = stalled(c, L, L.clue.ExtendDeadline, req, lambda: move(L2, cl, FIL))
    fresh = answer(L.clue.ExtendDeadline, req, timeout=20)
    assert fresh[:2] == (Code.FAILED_PRECONDITION,
                         "clue has a pending proposal; it must be reviewed before the deadline is extended"), fresh
    assert got == fresh, (got, fresh)
    assert rows(c.db, "SELECT version, deadline_extended FROM clues WHERE id = %s", cl.id) == [(cl.version, False)]
    assert events(c.db, cl.id)[-1][1] == "proposal.create"


def test_a_disable_beside_its_users_case_creation(c):
    # R2's leader handles its room's clue and is disabled while its CreateJointCase naming the
    # clue is on its way. The disable locks the user's clues, then the user's row; the case
    # creation holds its creator's row as a key (the case's foreign key), then locks its clues.
    # A third session holds the user's row FOR SHARE (as an assignment naming it does) so that
    # both are on their way at once. The disable takes the row FOR NO KEY UPDATE, which the
    # key share does not stop: the two are ordered, neither fails. Before, a deadlock ended one.
    w = c.w
    L = w.new_user("R2", "LEADER", "r2-leader-leaving")
    cl = submit(L)
    L.clue.AssignHandler(pb.AssignHandlerRequest(clue_id=cl.id, user_id=L.id, request_id=new_request_id()),
                         timeout=20)
    pg = harness.Postgres.get()
    holder = pg.connect(c.dbname)
    holder.autocommit = False
    holder.cursor().execute("SELECT 1 FROM users WHERE id = %s FOR SHARE", (L.id,))
    out = {}

    def disable():
        out["disable"] = answer(w.admin.admin.DisableUser, S.admin_pb2.DisableUserRequest(user_id=L.id, reason="调离"),
                                timeout=30)

    def create():
        out["create"] = answer(L.case.CreateJointCase, cs.CreateJointCaseRequest(
            title="联合办案", participant_unit_ids=[w.G1.id], clue_ids=[cl.id], request_id=new_request_id()),
            timeout=30)
    t_dis = threading.Thread(target=disable)
    t_dis.start()
    try:
        harness.wait_for(lambda: waiting(c.db) >= 1, timeout=20, what="the disable waiting for the user's row")
        t_new = threading.Thread(target=create)
        t_new.start()
        try:
            harness.wait_for(lambda: waiting(c.db) >= 2, timeout=20, what="the case creation waiting for the clue")
        finally:
            holder.rollback()
            t_new.join()
    finally:
        holder.close()
        t_dis.join()
    assert out["disable"][0] == Code.OK, out
    assert out["create"][0] == Code.OK, out
    assert rows(c.db, "SELECT count(*) FROM clue_handlers WHERE clue_id = %s", cl.id) == [(0,)]
    assert rows(c.db, "SELECT count(*) FROM case_clues WHERE clue_id = %s", cl.id) == [(1,)]


def test_proposal_written_after_its_reviewers_last_leader_recused(c):
    # G1's leader proposes filing, for G1's liaison room R1 to review, while R1 has a leader
    # without a conflict; that leader declares one while the proposal waits at its request key.
    # Under the clue's lock the write looks at the reviewing unit's leaders again: refused as a
    # fresh call (code, message and the PreconditionFailure naming RECUSAL), no proposal left
    # pending before nobody.
    w = c.w
    L, RL = w.G1.leader, w.R1.leader
    cl = move(L, submit(w.G1.member), PRE).clue
    for (uid,) in rows(c.db, "SELECT id FROM users WHERE unit_id = %s AND role = 'LEADER' AND NOT disabled"
                             " AND id <> %s", w.R1.id, RL.id):
        recuse(RL, cl.id, uid)
    req = move_req(cl, FIL)
    got = stalled(c, L, L.clue.RequestTransition, req, lambda: recuse(RL, cl.id, 0))
    fresh = answer(L.clue.RequestTransition, req, timeout=20)
    assert fresh[:2] == (Code.FAILED_PRECONDITION,
                         "every LEADER of the reviewing unit is recused from this clue, so nobody could review"
                         " the proposal; an ADMIN must add a LEADER without a conflict to that unit first"), fresh
    assert got == fresh, (got, fresh)
    assert rows(c.db, "SELECT count(*) FROM proposals WHERE clue_id = %s", cl.id) == [(0,)]
    assert rows(c.db, "SELECT pending_proposal_id, version FROM clues WHERE id = %s", cl.id) == [(None, cl.version)]
    assert events(c.db, cl.id)[-1][1] == "clue.recuse"


def recusal_refused_like_a_missing_clue(c, clue_id, recorder, got, req, flag_before):
    """got, recorder's RecordRecusal req held at its key while its sight of the clue ended, is
    what the same call made afresh and one naming a missing clue answer (NOT_FOUND "clue not
    found", the same rich details), and nothing was written: no recusal, no clue.recuse event,
    no record under the key, has_recusals as it was."""
    like_a_missing_clue(recorder.clue.RecordRecusal, got, req)
    assert rows(c.db, "SELECT count(*) FROM recusals WHERE clue_id = %s", clue_id) == [(0,)]
    assert "clue.recuse" not in [e[1] for e in events(c.db, clue_id)]
    assert rows(c.db, "SELECT count(*) FROM clue_requests WHERE user_id = %s AND request_id = %s",
                recorder.id, req.request_id) == [(0,)]
    assert rows(c.db, "SELECT has_recusals FROM clues WHERE id = %s", clue_id) == [(flag_before,)]


def test_recusal_on_its_way_when_its_recorder_loses_sight_of_the_clue(c):
    # The user records their own conflict, or a leader of the user's unit does; neither stands
    # on the clue's case, but each may see the clue only through a case, an assignment or a
    # review, which ends while the recording waits at its request key. Under the clue's lock
    # the write reads the recorder's sight again (0068): refused as a fresh call, nothing
    # written. Before, each was recorded and answered OK, and the clue's chain logged a unit
    # that no longer saw the clue acting on it.
    w = c.w
    RL, GL = w.R1.leader, w.G1.leader

    def in_a_case():
        cl = move(GL, submit(w.G1.member), PRE).clue
        jc = RL.case.CreateJointCase(cs.CreateJointCaseRequest(
            title="联合办案-回避", participant_unit_ids=[w.G3.id], clue_ids=[cl.id], request_id=new_request_id()),
            timeout=20)
        assert answer(w.G3.member.clue.GetClue, pb.GetClueRequest(clue_id=cl.id), timeout=20)[0] == Code.OK
        return cl, jc

    def recusal_req(cl, user_id):
        return pb.RecordRecusalRequest(clue_id=cl.id, user_id=user_id, reason="亲属关系", request_id=new_request_id())

    def race(cl, recorder, req, during):
        flag = rows(c.db, "SELECT has_recusals FROM clues WHERE id = %s", cl.id)[0][0]
        got = stalled(c, recorder, recorder.clue.RecordRecusal, req, during)
        recusal_refused_like_a_missing_clue(c, cl.id, recorder, got, req, flag)

    # G3's leader records G3's member's conflict; R1 removes G3 from the case meanwhile (the
    # removal takes the case's row, not the clue's, and commits before the write's locks).
    cl, jc = in_a_case()
    race(cl, w.G3.leader, recusal_req(cl, w.G3.member.id), lambda: RL.case.RemoveParticipant(
        cs.RemoveParticipantRequest(case_id=jc.id, unit_id=w.G3.id, reason="协作结束", request_id=new_request_id()),
        timeout=30))

    # G3's member records its own; R1 takes the clue out of the case meanwhile.
    cl, jc = in_a_case()
    race(cl, w.G3.member, recusal_req(cl, 0), lambda: RL.case.RemoveClueFromCase(cs.RemoveClueFromCaseRequest(
        case_id=jc.id, clue_id=cl.id, reason="收回", request_id=new_request_id()), timeout=30))

    # X1's member, seconded to G1's clue (派员参与), records its own; unassigned meanwhile.
    cl = move(GL, submit(w.G1.member), PRE).clue
    GL.clue.AssignHandler(pb.AssignHandlerRequest(clue_id=cl.id, user_id=w.X1.member.id,
                                                  request_id=new_request_id()), timeout=20)
    race(cl, w.X1.member, recusal_req(cl, 0), lambda: GL.clue.UnassignHandler(pb.UnassignHandlerRequest(
        clue_id=cl.id, user_id=w.X1.member.id, reason="撤回", request_id=new_request_id()), timeout=30))

    # R1's member sees X1's clue only while R1 reviews its co-review; R1's leader decides it.
    x = move(w.X1.leader, submit(w.X1.member, host="某区"), PRE).clue
    prop = move(w.X1.leader, x, FIL, reviewer_unit_id=w.R1.id).proposal
    race(x, w.R1.member, recusal_req(x, 0), lambda: RL.clue.ReviewProposal(pb.ReviewProposalRequest(
        proposal_id=prop.id, approve=True, comment="同意", request_id=new_request_id()), timeout=30))

    # Whoever still sees the clue records as before, also while such a change is on its way:
    # G1's member, of the owner, as the clue leaves the case.
    cl, jc = in_a_case()
    req = recusal_req(cl, 0)
    got = stalled(c, w.G1.member, w.G1.member.clue.RecordRecusal, req, lambda: RL.case.RemoveClueFromCase(
        cs.RemoveClueFromCaseRequest(case_id=jc.id, clue_id=cl.id, reason="收回", request_id=new_request_id()),
        timeout=30))
    assert got[0] == Code.OK, got
    assert [e[1] for e in events(c.db, cl.id)][-2:] == ["case.remove_clue", "clue.recuse"]
    assert rows(c.db, "SELECT user_id, has_recusals FROM recusals r JOIN clues k ON k.id = r.clue_id"
                      " WHERE r.clue_id = %s", cl.id) == [(w.G1.member.id, True)]


if __name__ == "__main__":
    harness.run_tests(dict(globals()), setup, teardown)
