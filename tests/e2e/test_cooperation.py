"""Assigned handlers (承办人, 派员参与) and recusal (回避), issue 14 Build 2 and 3, end to end
through grpcio against the real clued and PostgreSQL (docs/COOPERATION.md).

Handlers: a member seconded from a room (R2, not G1's liaison room) to G1's preliminary check
sees the clue while assigned, in GetClue, ListClues ("my queue", assigned_to_me), GetHistory,
ListNotes, ListAuditEvents and WatchEvents, never the reporter; adds notes; never moves it;
and stops seeing it everywhere when unassigned. The lead room's leader assigns for a case's
clue; the assignment is visible to the seconded member's own leader (the audit event and
ListAssignments, with no consent asked of it); a handover ends every assignment.
ListAssignments comes in pages past 1,000 rows, each row once however many share one
assigned_at, and a page token is refused from another caller, other filters or another list.
Refusals: who may assign, bad and missing users, twice, retries.

Recusal: a recused leader gets NOT_FOUND on read exactly as for a missing clue (message and
rich details), cannot review a proposal addressed to its unit, cannot be assigned; a recusal
ends an assignment; recusals are listed for leaders and AUDITORs, not members; every leader
of the owner recused gives FAILED_PRECONDITION naming the recusals, and a co-review whose
reviewing unit has every leader recused is refused up front. Each change leaves exactly one
event on the clue's chain, which still verifies.
"""

import json
import os
import re
import sys
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chain  # noqa: E402
import harness  # noqa: E402
from harness import expect_status, new_request_id  # noqa: E402
import world  # noqa: E402

S = harness.stubs()
pb = S.clue_pb2
cs = S.case_pb2
cm = S.common_pb2
au = S.audit_pb2
ad = S.admin_pb2
Code = grpc.StatusCode
ACC, PRE, FIL, CLO = (cm.CLUE_STATE_ACCEPTED, cm.CLUE_STATE_PRELIMINARY_CHECK, cm.CLUE_STATE_FILED,
                      cm.CLUE_STATE_CLOSED)
MISSING_ID = 987654321


setup, teardown = world.served, world.unserve


def submit(u, reporter=False):
    return u.clue.SubmitClue(pb.SubmitClueRequest(
        request_id=new_request_id(), title="线索", summary="摘要", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
        subject=pb.SubjectPerson(name="张某"), host_unit="市发展改革委",
        reporter=pb.ReporterContact(name="举报人", phone="13800000000") if reporter else None), timeout=20)


def move(u, clue, target, **details):
    return u.clue.RequestTransition(pb.RequestTransitionRequest(
        clue_id=clue.id, expected_version=clue.version, target=target, reason="r",
        details=pb.TransitionDetails(**details), request_id=new_request_id()), timeout=20)


def assign(u, clue_id, user_id, rid=None, reason=""):
    return u.clue.AssignHandler(pb.AssignHandlerRequest(clue_id=clue_id, user_id=user_id, reason=reason,
                                                        request_id=rid or new_request_id()), timeout=20)


def unassign(u, clue_id, user_id, rid=None):
    return u.clue.UnassignHandler(pb.UnassignHandlerRequest(clue_id=clue_id, user_id=user_id,
                                                            request_id=rid or new_request_id()), timeout=20)


def recuse(u, clue_id, user_id=0, reason="亲属关系", rid=None):
    return u.clue.RecordRecusal(pb.RecordRecusalRequest(clue_id=clue_id, user_id=user_id, reason=reason,
                                                        request_id=rid or new_request_id()), timeout=20)


def get(u, clue_id):
    return u.clue.GetClue(pb.GetClueRequest(clue_id=clue_id), timeout=20)


def queue(u, **kw):
    return {x.id for x in u.clue.ListClues(pb.ListCluesRequest(page_size=500, **kw), timeout=20).clues}


def actions(u, clue_id):
    return [e.action for e in u.audit.ListAuditEvents(au.ListAuditEventsRequest(
        subject_type="clue", subject_id=clue_id), timeout=20).events]


def streamed(c, u, clue_id, after):
    """The events of clue_id WatchEvents replays to u from after, until a marker u sees."""
    marker = submit(u)
    mseq = max(e.seq for e in c.w.auditor.clue.GetHistory(pb.GetHistoryRequest(clue_id=marker.id),
                                                          timeout=20).events)
    seen = []
    stream = u.audit.WatchEvents(au.WatchEventsRequest(after_seq=after), timeout=60)
    try:
        for e in stream:
            if e.subject_type == "clue" and e.subject_id == clue_id:
                seen.append(e.action)
            if e.seq >= mseq:
                break
    finally:
        stream.cancel()
    return seen


def not_found_like_missing(u, clue_id):
    """NOT_FOUND with the very message a missing clue gets, for every read."""
    want = expect_status(Code.NOT_FOUND, get, u, MISSING_ID)
    assert expect_status(Code.NOT_FOUND, get, u, clue_id) == want
    for fn, req in ((u.clue.GetHistory, pb.GetHistoryRequest(clue_id=clue_id)),
                    (u.clue.ListNotes, pb.ListNotesRequest(clue_id=clue_id))):
        assert expect_status(Code.NOT_FOUND, fn, req, timeout=20) == want
    assert clue_id not in queue(u)
    assert actions(u, clue_id) == []


def test_seconded_member_sees_while_assigned(c):
    w = c.w
    L, M = w.G1.leader, w.G1.member
    h = w.R2.member  # a room that is not G1's liaison room
    cl = move(L, submit(M, reporter=True), PRE).clue
    start = max(e.seq for e in w.auditor.clue.GetHistory(pb.GetHistoryRequest(clue_id=cl.id), timeout=20).events)
    # Before: hidden, as a missing clue.
    not_found_like_missing(h, cl.id)
    expect_status(Code.NOT_FOUND, h.clue.AddNote, pb.AddNoteRequest(
        clue_id=cl.id, kind=pb.NOTE_KIND_OTHER, text="x", request_id=new_request_id()), timeout=20)
    # The owner's leader seconds R2's member; no consent of R2's leader is asked.
    x = assign(L, cl.id, h.id, reason="派员参与初核")
    got = [(y.user_id, y.unit_id, y.unit_code, y.assigned_by) for y in x.handlers]
    assert got == [(h.id, w.R2.id, "R2", L.id)], got
    assert x.version == cl.version, "an assignment does not bump the version"
    # While assigned: every read, never the reporter.
    g = get(h, cl.id)
    assert g.reporter_on_file and not g.HasField("reporter")
    assert [y.user_id for y in g.handlers] == [h.id] and g.handlers[0].user_name == h.name
    assert get(L, cl.id).HasField("reporter"), "the owner's leader still sees the reporter"
    assert cl.id in queue(h) and queue(h, assigned_to_me=True) == {cl.id}
    assert cl.id not in queue(L, assigned_to_me=True), "the queue is the caller's own"
    assert queue(w.R2.leader, assigned_to_me=True) == set()
    assert "clue.assign" in actions(h, cl.id)
    n = h.clue.AddNote(pb.AddNoteRequest(clue_id=cl.id, kind=pb.NOTE_KIND_INTERVIEW_RECORD, text="谈话记录",
                                         request_id=new_request_id()), timeout=20)
    assert n.author_unit_id == w.R2.id
    assert [x.text for x in h.clue.ListNotes(pb.ListNotesRequest(clue_id=cl.id), timeout=20).notes] == ["谈话记录"]
    assert "clue.assign" in streamed(c, h, cl.id, start)
    # Handlers never move, hand over, extend or assign.
    g = get(L, cl.id)
    expect_status(Code.PERMISSION_DENIED, move, h, g, CLO, finding="无")
    expect_status(Code.PERMISSION_DENIED, h.clue.HandOver, pb.HandOverRequest(
        clue_id=cl.id, expected_version=g.version, to_unit_id=w.G2.id, reason="r", request_id=new_request_id()),
        timeout=20)
    expect_status(Code.PERMISSION_DENIED, h.clue.ExtendDeadline, pb.ExtendDeadlineRequest(
        clue_id=cl.id, expected_version=g.version, days=3, reason="r", request_id=new_request_id()), timeout=20)
    expect_status(Code.PERMISSION_DENIED, assign, h, cl.id, w.R2.leader.id)
    # The member's own leader sees the assignment of its member (no consent was asked) without
    # seeing the clue; the member sees its own; an unrelated leader sees none of it.
    la = lambda u, **kw: [(x.clue_id, x.owner_unit_code, x.handler.user_id, x.handler.unit_code)  # noqa: E731
                          for x in u.clue.ListAssignments(pb.ListAssignmentsRequest(**kw), timeout=20).assignments]
    assert la(w.R2.leader) == [(cl.id, "G1", h.id, "R2")]
    expect_status(Code.NOT_FOUND, get, w.R2.leader, cl.id)
    assert la(h) == [(cl.id, "G1", h.id, "R2")]
    assert la(L, clue_id=cl.id) == [(cl.id, "G1", h.id, "R2")]
    assert (cl.id, "G1", h.id, "R2") in la(w.auditor)
    assert la(w.G3.leader) == [] and la(w.R2.leader, user_id=w.G3.member.id) == []
    assert la(w.admin) == []
    # The audit event names the user and the user's unit.
    with c.db.cursor() as cur:
        cur.execute("SELECT details::jsonb->>'user_id', details::jsonb->>'user_unit_id' FROM audit_events"
                    " WHERE subject_type = 'clue' AND subject_id = %s AND action = 'clue.assign'", (cl.id,))
        assert cur.fetchall() == [(str(h.id), str(w.R2.id))]
    # Unassigned: hidden everywhere again, the stream included.
    x = unassign(L, cl.id, h.id)
    assert list(x.handlers) == []
    assert la(w.R2.leader) == [] and la(h) == []
    not_found_like_missing(h, cl.id)
    assert streamed(c, h, cl.id, start) == []
    assert queue(h, assigned_to_me=True) == set()
    acts = actions(L, cl.id)
    assert acts[-1] == "clue.unassign" and acts.count("clue.assign") == 1, acts


def test_assign_rules(c):
    w = c.w
    L, M = w.G1.leader, w.G1.member
    cl = move(L, submit(M), PRE).clue
    # Who may: the owner's leader only (outside a case).
    for u, code in ((M, Code.PERMISSION_DENIED), (w.R1.leader, Code.PERMISSION_DENIED),
                    (w.auditor, Code.PERMISSION_DENIED), (w.G3.leader, Code.NOT_FOUND),
                    (w.admin, Code.NOT_FOUND)):
        expect_status(code, assign, u, cl.id, w.R2.member.id)
    # Bad and missing users, users who do not work on clues.
    expect_status(Code.INVALID_ARGUMENT, assign, L, cl.id, 0, details_has=("user_id",))
    expect_status(Code.INVALID_ARGUMENT, assign, L, cl.id, -4, details_has=("user_id",))
    expect_status(Code.NOT_FOUND, assign, L, cl.id, MISSING_ID, details_has=(f"user {MISSING_ID} not found",))
    expect_status(Code.NOT_FOUND, assign, L, MISSING_ID, w.R2.member.id, details_has=("clue not found",))
    for u in (w.auditor, w.admin):
        expect_status(Code.INVALID_ARGUMENT, assign, L, cl.id, u.id, details_has=("MEMBER or LEADER",))
    gone = w.new_user("R2", "MEMBER", "R2-disabled")
    w.admin.admin.DisableUser(ad.DisableUserRequest(user_id=gone.id, reason="调离"), timeout=20)
    expect_status(Code.INVALID_ARGUMENT, assign, L, cl.id, gone.id)
    # Twice; a retry returns the clue and adds no event.
    rid = new_request_id()
    assign(L, cl.id, w.X1.member.id, rid=rid)
    n = len(actions(L, cl.id))
    again = assign(L, cl.id, w.X1.member.id, rid=rid.upper())
    assert [y.user_id for y in again.handlers] == [w.X1.member.id]
    assert len(actions(L, cl.id)) == n
    expect_status(Code.FAILED_PRECONDITION, assign, L, cl.id, w.X1.member.id, details_has=("already a handler",))
    expect_status(Code.INVALID_ARGUMENT, unassign, L, cl.id, w.X1.member.id, rid=rid)  # another call's id
    expect_status(Code.FAILED_PRECONDITION, unassign, L, cl.id, w.G3.member.id, details_has=("not a handler",))
    # A concluded clue takes no new handlers, but lets one go.
    g = get(L, cl.id)
    closed = move(L, g, CLO, finding="查无实据").clue
    expect_status(Code.FAILED_PRECONDITION, assign, L, closed.id, w.G3.member.id, details_has=("terminal",))
    unassign(L, closed.id, w.X1.member.id)
    expect_status(Code.NOT_FOUND, get, w.X1.member, closed.id)


def test_case_lead_assigns_and_handover_ends(c):
    w = c.w
    cl = move(w.G1.leader, submit(w.G1.member), PRE).clue
    k = w.R2.leader.case.CreateJointCase(cs.CreateJointCaseRequest(
        title="联合", participant_unit_ids=[w.G1.id], request_id=new_request_id()), timeout=20)
    w.G1.leader.case.AddClueToCase(cs.AddClueToCaseRequest(case_id=k.id, clue_id=cl.id), timeout=20)
    # The lead room's leader assigns its own member, a region's member too.
    assign(w.R2.leader, cl.id, w.G3.member.id)
    assert get(w.G3.member, cl.id).id == cl.id
    expect_status(Code.PERMISSION_DENIED, assign, w.R2.member, cl.id, w.X1.member.id)
    expect_status(Code.PERMISSION_DENIED, assign, w.R1.leader, cl.id, w.X1.member.id)
    # A handover to G2 ends the assignment (it was G1's and the case's).
    g = get(w.G1.leader, cl.id)
    w.G1.leader.clue.HandOver(pb.HandOverRequest(clue_id=cl.id, expected_version=g.version, to_unit_id=w.G2.id,
                                                  reason="移交", request_id=new_request_id()), timeout=20)
    expect_status(Code.NOT_FOUND, get, w.G3.member, cl.id)
    assert list(get(w.G2.leader, cl.id).handlers) == []
    # The new owner assigns afresh.
    assign(w.G2.leader, cl.id, w.G3.member.id)
    assert [y.user_id for y in get(w.G3.member, cl.id).handlers] == [w.G3.member.id]


def test_handover_back_revives_no_assignment(c):
    # G1 assigns a seconded member; the clue goes to G3 and comes back to G1. The assignment
    # ended with the first handover and stays ended: coming back is no new decision to assign.
    w = c.w
    cl = move(w.G1.leader, submit(w.G1.member), PRE).clue
    assign(w.G1.leader, cl.id, w.R2.member.id)
    assert get(w.R2.member, cl.id).id == cl.id
    g = get(w.G1.leader, cl.id)
    out = w.G1.leader.clue.HandOver(pb.HandOverRequest(clue_id=cl.id, expected_version=g.version, to_unit_id=w.G3.id,
                                                        reason="移交", request_id=new_request_id()), timeout=20)
    back = w.G3.leader.clue.HandOver(pb.HandOverRequest(clue_id=cl.id, expected_version=out.version,
                                                         to_unit_id=w.G1.id, reason="退回",
                                                         request_id=new_request_id()), timeout=20)
    assert back.owner_unit_id == w.G1.id
    assert list(get(w.G1.leader, cl.id).handlers) == []
    expect_status(Code.NOT_FOUND, get, w.R2.member, cl.id)
    assert cl.id not in queue(w.R2.member)
    expect_status(Code.NOT_FOUND, w.R2.member.clue.AddNote, pb.AddNoteRequest(
        clue_id=cl.id, kind=pb.NOTE_KIND_OTHER, text="x", request_id=new_request_id()), timeout=20)
    assert cl.id not in {a.clue_id for a in w.G1.leader.clue.ListAssignments(
        pb.ListAssignmentsRequest(clue_id=cl.id), timeout=20).assignments}
    # The first handover's event names the assignment it ended; the second ended none.
    ev = [e for e in w.auditor.clue.GetHistory(pb.GetHistoryRequest(clue_id=cl.id), timeout=20).events
          if e.action == "clue.handover"]
    assert [json.loads(e.details_json).get("unassigned_user_ids") for e in ev] == [[w.R2.member.id], None], ev
    # G1 assigns afresh, as a new decision on the trail.
    assign(w.G1.leader, cl.id, w.R2.member.id)
    assert [y.user_id for y in get(w.G1.leader, cl.id).handlers] == [w.R2.member.id]


def test_leaving_the_case_ends_the_lead_rooms_assignments(c):
    # The lead room assigns as the case's lead: when the clue leaves the case, its assignments
    # end in the same transaction (the removal's event names them); the owner's own stays.
    w = c.w
    lead, own = w.R2.leader, w.G3.member
    seconded = [w.R2.member, w.X1.member]  # the lead room's own member, and a region's
    cl = move(w.G1.leader, submit(w.G1.member), PRE).clue
    k = lead.case.CreateJointCase(cs.CreateJointCaseRequest(
        title="联合", participant_unit_ids=[w.G1.id], request_id=new_request_id()), timeout=20)
    w.G1.leader.case.AddClueToCase(cs.AddClueToCaseRequest(case_id=k.id, clue_id=cl.id), timeout=20)
    for u in seconded:
        assign(lead, cl.id, u.id)
    assign(w.G1.leader, cl.id, own.id)
    assert get(w.X1.member, cl.id).id == cl.id
    lead.case.RemoveClueFromCase(cs.RemoveClueFromCaseRequest(case_id=k.id, clue_id=cl.id, reason="移出"),
                                 timeout=20)
    # The seconded members no longer see the clue, exactly as a missing one, nor write to it.
    for u in seconded:
        not_found_like_missing(u, cl.id)
        expect_status(Code.NOT_FOUND, u.clue.AddNote, pb.AddNoteRequest(
            clue_id=cl.id, kind=pb.NOTE_KIND_OTHER, text="x", request_id=new_request_id()), timeout=20)
        assert cl.id not in queue(u, assigned_to_me=True)
    assert cl.id not in {a.clue_id for a in lead.clue.ListAssignments(pb.ListAssignmentsRequest(), timeout=20)
                         .assignments}
    # The owner's own assignment stays.
    assert [y.user_id for y in get(w.G1.leader, cl.id).handlers] == [own.id]
    assert get(own, cl.id).id == cl.id

    def removals():
        return [json.loads(e.details_json) for e in w.auditor.clue.GetHistory(
            pb.GetHistoryRequest(clue_id=cl.id), timeout=20).events if e.action == "case.remove_clue"]

    ev = removals()
    assert [(e["case_id"], e.get("unassigned_user_ids")) for e in ev] == [
        (k.id, sorted(u.id for u in seconded))], ev
    # Back in the case, the ended assignment stays ended; the lead room assigns afresh, and the
    # owner's leader taking the clue out ends that one too. A removal that ends none says none.
    x = w.X1.member
    w.G1.leader.case.AddClueToCase(cs.AddClueToCaseRequest(case_id=k.id, clue_id=cl.id), timeout=20)
    expect_status(Code.NOT_FOUND, get, x, cl.id)
    assign(lead, cl.id, x.id)
    assert get(x, cl.id).id == cl.id
    w.G1.leader.case.RemoveClueFromCase(cs.RemoveClueFromCaseRequest(case_id=k.id, clue_id=cl.id, reason="收回"),
                                        timeout=20)
    expect_status(Code.NOT_FOUND, get, x, cl.id)
    w.G1.leader.case.AddClueToCase(cs.AddClueToCaseRequest(case_id=k.id, clue_id=cl.id), timeout=20)
    lead.case.RemoveClueFromCase(cs.RemoveClueFromCaseRequest(case_id=k.id, clue_id=cl.id, reason="移出"),
                                 timeout=20)
    assert [e.get("unassigned_user_ids") for e in removals()][1:] == [[x.id], None]
    assert [y.user_id for y in get(w.G1.leader, cl.id).handlers] == [own.id]


def test_lead_rooms_assignment_on_its_way_as_the_clue_leaves(c):
    # The lead room's AssignHandler, allowed while the clue was in the case and written after
    # it left: the lead room no longer sees the clue (G1's liaison room is R1), so NOT_FOUND as
    # for a missing clue, not the change made meanwhile, and nothing is written.
    w = c.w
    lead, seconded = w.R2.leader, w.R2.member
    cl = move(w.G1.leader, submit(w.G1.member), PRE).clue
    k = lead.case.CreateJointCase(cs.CreateJointCaseRequest(
        title="联合", participant_unit_ids=[w.G1.id], request_id=new_request_id()), timeout=20)
    w.G1.leader.case.AddClueToCase(cs.AddClueToCaseRequest(case_id=k.id, clue_id=cl.id), timeout=20)
    req = pb.AssignHandlerRequest(clue_id=cl.id, user_id=seconded.id, request_id=new_request_id())
    got, _ = harness.stalled_by_its_key(c.dbname, lead.id, lead.clue.AssignHandler, req,
                                 lambda: w.G1.leader.case.RemoveClueFromCase(cs.RemoveClueFromCaseRequest(
                                     case_id=k.id, clue_id=cl.id, reason="收回"), timeout=20))
    assert got == (Code.NOT_FOUND, "clue not found"), got
    assert _one(c.db, "SELECT count(*) FROM clue_handlers WHERE clue_id = %s", cl.id) == 0
    expect_status(Code.NOT_FOUND, get, seconded, cl.id)
    # Asked again, the lead room no longer sees the clue.
    expect_status(Code.NOT_FOUND, assign, lead, cl.id, seconded.id)


def test_recused_leader(c):
    w = c.w
    L, M = w.G1.leader, w.G1.member
    L2 = w.new_user("G1", "LEADER", "G1-leader-2")
    cl = move(L, submit(M, reporter=True), PRE).clue
    # L2 declares a conflict: from then on the clue is missing to it.
    r = recuse(L2, cl.id, reason="与被反映人系亲属")
    assert (r.user_id, r.recorded_by, r.unit_id, r.unit_code, r.clue_id) == (L2.id, L2.id, w.G1.id, "G1", cl.id)
    not_found_like_missing(L2, cl.id)
    g = get(L, cl.id)
    for fn in (lambda: move(L2, g, CLO, finding="无"),
               lambda: L2.clue.AddNote(pb.AddNoteRequest(clue_id=cl.id, kind=pb.NOTE_KIND_OTHER, text="x",
                                                         request_id=new_request_id()), timeout=20),
               lambda: L2.clue.HandOver(pb.HandOverRequest(clue_id=cl.id, expected_version=g.version,
                                                           to_unit_id=w.G2.id, reason="r",
                                                           request_id=new_request_id()), timeout=20),
               lambda: assign(L2, cl.id, w.R2.member.id),
               lambda: recuse(L2, cl.id, user_id=M.id)):
        expect_status(Code.NOT_FOUND, fn, details_has=("clue not found",))
    # It cannot be assigned to it.
    expect_status(Code.FAILED_PRECONDITION, assign, L, cl.id, L2.id, details_has=("recused",))
    expect_status(Code.FAILED_PRECONDITION, recuse, L, cl.id, L2.id, details_has=("already recused",))
    # The rest of the unit goes on.
    assert get(L, cl.id).HasField("reporter")
    assert get(M, cl.id).id == cl.id


def test_recused_user_finds_no_clue_in_cases(c):
    # A joint case lists its clues to every unit it joins: not a clue to a user recused from it,
    # who reads that case as if the clue had never joined (the other clues stay listed).
    w = c.w
    L2 = w.new_user("G1", "LEADER", "G1-leader-case")
    hidden, kept = submit(w.G1.member), submit(w.G1.member)
    recuse(w.G1.leader, hidden.id, user_id=L2.id)
    recuse(w.R1.member, hidden.id)  # the liaison room's staff: by themselves or their leader
    jc = w.R1.leader.case.CreateJointCase(cs.CreateJointCaseRequest(
        title="联合办案", participant_unit_ids=[w.G1.id], clue_ids=[hidden.id, kept.id],
        request_id=new_request_id()), timeout=20)
    assert {x.clue_id for x in jc.clues} == {hidden.id, kept.id}
    for u in (L2, w.R1.member):
        got = u.case.GetJointCase(cs.GetJointCaseRequest(case_id=jc.id), timeout=20)
        assert [x.clue_id for x in got.clues] == [kept.id], got
        listed = [k for k in u.case.ListJointCases(cs.ListJointCasesRequest(), timeout=20).cases if k.id == jc.id]
        assert [x.clue_id for x in listed[0].clues] == [kept.id], listed
    # A change of the case answers the recused caller the same way.
    got = w.R1.leader.case.GetJointCase(cs.GetJointCaseRequest(case_id=jc.id), timeout=20)
    assert {x.clue_id for x in got.clues} == {hidden.id, kept.id}
    L2R1 = w.new_user("R1", "LEADER", "R1-leader-case")
    recuse(w.R1.leader, hidden.id, user_id=L2R1.id)
    changed = L2R1.case.AddParticipant(cs.AddParticipantRequest(case_id=jc.id, unit_id=w.G2.id), timeout=20)
    assert [x.clue_id for x in changed.clues] == [kept.id], changed


def _one(db, sql, *args):
    cur = db.cursor()
    cur.execute(sql, args)
    return cur.fetchone()[0]


def test_recusal_refuses_calls_on_their_way(c):
    # A call decided before its caller's recusal and written after it is refused as the
    # recused caller's calls are: the clue (or the proposal) is missing, nothing is written.
    w = c.w
    cl = move(w.G1.leader, submit(w.G1.member), PRE).clue
    prop = move(w.G1.leader, cl, FIL).proposal
    review = pb.ReviewProposalRequest(proposal_id=prop.id, approve=True, request_id=new_request_id())
    got, _ = harness.stalled_by_its_key(c.dbname, w.R1.leader.id, w.R1.leader.clue.ReviewProposal, review,
                                 lambda: recuse(w.R1.leader, cl.id, reason="与被反映人系同学"))
    assert got == (Code.NOT_FOUND, "proposal not found"), got
    assert _one(c.db, "SELECT status FROM proposals WHERE id = %s", prop.id) == "PENDING"

    cl2 = move(w.G1.leader, submit(w.G1.member), PRE).clue
    L2 = w.new_user("G1", "LEADER", "G1-leader-race")
    note = pb.AddNoteRequest(clue_id=cl2.id, kind=pb.NOTE_KIND_OTHER, text="记录", request_id=new_request_id())
    got, _ = harness.stalled_by_its_key(c.dbname, w.G1.member.id, w.G1.member.clue.AddNote, note,
                                 lambda: recuse(w.G1.leader, cl2.id, user_id=w.G1.member.id))
    assert got == (Code.NOT_FOUND, "clue not found"), got
    hand = pb.HandOverRequest(clue_id=cl2.id, expected_version=cl2.version, to_unit_id=w.G2.id, reason="移交",
                              request_id=new_request_id())
    got, _ = harness.stalled_by_its_key(c.dbname, L2.id, L2.clue.HandOver, hand, lambda: recuse(w.G1.leader, cl2.id, user_id=L2.id))
    assert got == (Code.NOT_FOUND, "clue not found"), got
    mv = pb.RequestTransitionRequest(clue_id=cl2.id, expected_version=cl2.version, target=CLO, reason="r",
                                     details=pb.TransitionDetails(finding="无"), request_id=new_request_id())
    L3 = w.new_user("G1", "LEADER", "G1-leader-race-3")
    got, _ = harness.stalled_by_its_key(c.dbname, L3.id, L3.clue.RequestTransition, mv,
                                 lambda: recuse(w.G1.leader, cl2.id, user_id=L3.id))
    assert got == (Code.NOT_FOUND, "clue not found"), got
    now = get(w.G1.leader, cl2.id)
    assert (now.owner_unit_id, now.state, now.version) == (w.G1.id, PRE, cl2.version), now
    assert _one(c.db, "SELECT count(*) FROM notes WHERE clue_id = %s", cl2.id) == 0


def test_lost_sight_stops_a_note_on_its_way(c):
    # A note decided while its author's unit took part in the clue's joint case, or while the
    # author was assigned, and written after that ended: refused as for a missing clue.
    w = c.w
    cl = move(w.G1.leader, submit(w.G1.member), PRE).clue
    k = w.R1.leader.case.CreateJointCase(cs.CreateJointCaseRequest(
        title="联合", participant_unit_ids=[w.G1.id, w.X1.id], clue_ids=[cl.id], request_id=new_request_id()),
        timeout=20)
    assert get(w.X1.member, cl.id).id == cl.id

    def note_req():
        return pb.AddNoteRequest(clue_id=cl.id, kind=pb.NOTE_KIND_OTHER, text="记录", request_id=new_request_id())

    got, _ = harness.stalled_by_its_key(c.dbname, w.X1.member.id, w.X1.member.clue.AddNote, note_req(),
                                 lambda: w.R1.leader.case.RemoveParticipant(cs.RemoveParticipantRequest(
                                     case_id=k.id, unit_id=w.X1.id, reason="协作结束"), timeout=20))
    assert got == (Code.NOT_FOUND, "clue not found"), got
    assign(w.G1.leader, cl.id, w.R2.member.id)
    got, _ = harness.stalled_by_its_key(c.dbname, w.R2.member.id, w.R2.member.clue.AddNote, note_req(),
                                 lambda: unassign(w.G1.leader, cl.id, w.R2.member.id))
    assert got == (Code.NOT_FOUND, "clue not found"), got
    assert _one(c.db, "SELECT count(*) FROM notes WHERE clue_id = %s", cl.id) == 0
    # Who still sees it adds notes as before.
    w.G1.member.clue.AddNote(note_req(), timeout=20)
    assert _one(c.db, "SELECT count(*) FROM notes WHERE clue_id = %s", cl.id) == 1


def test_a_key_names_one_call_not_another_body(c):
    # A retry is the same call again. Under the key of a note, a review or a recusal, another
    # text, another decision or another user is another call: INVALID_ARGUMENT, nothing written.
    w = c.w
    cl = move(w.G1.leader, submit(w.G1.member), PRE).clue
    key = new_request_id()
    note = pb.AddNoteRequest(clue_id=cl.id, kind=pb.NOTE_KIND_OTHER, text="记录一", request_id=key)
    first = w.G1.member.clue.AddNote(note, timeout=20)
    assert w.G1.member.clue.AddNote(note, timeout=20) == first
    for other in (pb.AddNoteRequest(clue_id=cl.id, kind=pb.NOTE_KIND_OTHER, text="记录二", request_id=key),
                  pb.AddNoteRequest(clue_id=cl.id, kind=pb.NOTE_KIND_EVIDENCE_SUMMARY, text="记录一",
                                    request_id=key)):
        expect_status(Code.INVALID_ARGUMENT, w.G1.member.clue.AddNote, other, timeout=20,
                      details_has=("already used",))
    assert _one(c.db, "SELECT count(*) FROM notes WHERE clue_id = %s", cl.id) == 1

    prop = move(w.G1.leader, get(w.G1.leader, cl.id), FIL).proposal
    rkey = new_request_id()
    approve = pb.ReviewProposalRequest(proposal_id=prop.id, approve=True, request_id=rkey)
    done = w.R1.leader.clue.ReviewProposal(approve, timeout=20)
    assert w.R1.leader.clue.ReviewProposal(approve, timeout=20).proposal == done.proposal
    expect_status(Code.INVALID_ARGUMENT, w.R1.leader.clue.ReviewProposal,
                  pb.ReviewProposalRequest(proposal_id=prop.id, approve=False, comment="不同意", request_id=rkey),
                  timeout=20, details_has=("already used",))

    cl2 = submit(w.G1.member)
    ukey = new_request_id()
    mine = recuse(w.G1.member, cl2.id, rid=ukey)
    assert mine.user_id == w.G1.member.id
    assert recuse(w.G1.member, cl2.id, user_id=w.G1.member.id, rid=ukey) == mine
    other = w.new_user("G1", "MEMBER", "G1-member-key")
    lkey = new_request_id()
    theirs = recuse(w.G1.leader, cl2.id, user_id=other.id, rid=lkey)
    # The same key for the leader's own recusal is another call: the leader stays unrecused.
    expect_status(Code.INVALID_ARGUMENT, recuse, w.G1.leader, cl2.id, rid=lkey, details_has=("already used",))
    assert recuse(w.G1.leader, cl2.id, user_id=other.id, rid=lkey) == theirs
    assert get(w.G1.leader, cl2.id).id == cl2.id


def test_recused_reviewer_cannot_review(c):
    w = c.w
    L = w.G1.leader
    cl = move(L, submit(w.G1.member), PRE).clue
    prop = move(L, cl, FIL).proposal
    assert prop.reviewer_unit_id == w.R1.id
    R1b = w.new_user("R1", "LEADER", "R1-leader-2")
    # R1's leader records the conflict of its own leader R1b, who now sees nothing of it.
    recuse(w.R1.leader, cl.id, user_id=R1b.id, reason="曾在该单位任职")
    want = expect_status(Code.NOT_FOUND, R1b.clue.ReviewProposal, pb.ReviewProposalRequest(
        proposal_id=MISSING_ID, approve=True, request_id=new_request_id()), timeout=20)
    got = expect_status(Code.NOT_FOUND, R1b.clue.ReviewProposal, pb.ReviewProposalRequest(
        proposal_id=prop.id, approve=True, comment="同意", request_id=new_request_id()), timeout=20)
    assert got == want
    assert prop.id not in {x.id for x in R1b.clue.ListProposals(pb.ListProposalsRequest(
        include_decided=True), timeout=20).proposals}
    # Another leader of the room reviews as usual.
    w.R1.leader.clue.ReviewProposal(pb.ReviewProposalRequest(proposal_id=prop.id, approve=True, comment="同意",
                                                             request_id=new_request_id()), timeout=20)


def _answer(fn, req):
    """(code, message, raw rich details) of fn(req): what the caller learns."""
    try:
        return "OK", fn(req, timeout=20), b""
    except grpc.RpcError as e:
        raw = [v for k, v in (e.trailing_metadata() or ()) if k == "grpc-status-details-bin"]
        return e.code(), e.details(), raw[0] if raw else b""


def test_retries_of_a_caller_recused_since(c):
    """A call retried with its request_id by a caller recused from the clue since is answered
    as a fresh call is: NOT_FOUND with the message and rich details of a missing clue or
    proposal, whatever the first call did. Before, ReviewProposal, HandOver and RecordRecusal
    answered the first result (the proposal with its review, the clue as it is now, another
    user's recusal with its reason), and AddClueToCase and RemoveClueFromCase the case. The retry of the caller's own recusal, which is what
    recused it, still answers that recusal."""
    w = c.w
    L, R = w.G1.leader, w.R1.leader

    def retried_like_missing(fn, retry, missing):
        got = _answer(fn, retry)
        want = _answer(fn, missing)
        assert want[0] == Code.NOT_FOUND, want
        assert got == want, (got, want)

    # A review by R1's leader, who declares a conflict afterwards (another call, another key).
    cl = move(L, submit(w.G1.member), PRE).clue
    prop = move(L, cl, FIL).proposal
    review = pb.ReviewProposalRequest(proposal_id=prop.id, approve=False, comment="不同意", request_id=new_request_id())
    assert R.clue.ReviewProposal(review, timeout=20).proposal.id == prop.id
    assert R.clue.ReviewProposal(review, timeout=20).proposal.review_comment == "不同意"
    recuse(R, cl.id, reason="与被反映人系同学")
    retried_like_missing(R.clue.ReviewProposal, review, pb.ReviewProposalRequest(
        proposal_id=MISSING_ID, approve=False, comment="不同意", request_id=new_request_id()))

    # A handover by a leader of G1, whom the new owner's leader then records as recused: the
    # retry answered the clue while it stood at the handover's version; no more. (A leader of
    # its own: G1's counts every clue of G1 in a test below.)
    L1 = w.new_user("G1", "LEADER", "G1-leader-handover")
    cl = submit(w.G1.member)
    hand = pb.HandOverRequest(clue_id=cl.id, expected_version=cl.version, to_unit_id=w.G3.id, reason="移交",
                              request_id=new_request_id())
    L1.clue.HandOver(hand, timeout=20)
    assert L1.clue.HandOver(hand, timeout=20).owner_unit_id == w.G3.id
    recuse(w.G3.leader, cl.id, user_id=L1.id, reason="利害关系")
    retried_like_missing(L1.clue.HandOver, hand, pb.HandOverRequest(
        clue_id=MISSING_ID, expected_version=cl.version + 1, to_unit_id=w.G2.id, reason="移交",
        request_id=new_request_id()))

    # A recording of a member's recusal by a leader recused since by another leader.
    L2 = w.new_user("G1", "LEADER", "G1-leader-retries")
    cl = move(L2, submit(w.G1.member), PRE).clue
    M = w.new_user("G1", "MEMBER", "G1-member-retries")
    rec = pb.RecordRecusalRequest(clue_id=cl.id, user_id=M.id, reason="同学关系-细节", request_id=new_request_id())
    assert L2.clue.RecordRecusal(rec, timeout=20).user_id == M.id
    # Its other writes under keys of their own, each retried once before the recusal.
    h = w.new_user("G1", "MEMBER", "G1-hand-retries")
    writes = [
        (L2.clue.AssignHandler, pb.AssignHandlerRequest(clue_id=cl.id, user_id=h.id, request_id=new_request_id()),
         pb.AssignHandlerRequest(clue_id=MISSING_ID, user_id=h.id, request_id=new_request_id())),
        (L2.clue.UnassignHandler, pb.UnassignHandlerRequest(clue_id=cl.id, user_id=h.id, request_id=new_request_id()),
         pb.UnassignHandlerRequest(clue_id=MISSING_ID, user_id=h.id, request_id=new_request_id())),
        (L2.clue.AddNote, pb.AddNoteRequest(clue_id=cl.id, kind=pb.NOTE_KIND_OTHER, text="记录",
                                            request_id=new_request_id()),
         pb.AddNoteRequest(clue_id=MISSING_ID, kind=pb.NOTE_KIND_OTHER, text="记录", request_id=new_request_id())),
        (L2.clue.ExtendDeadline, pb.ExtendDeadlineRequest(clue_id=cl.id, expected_version=cl.version, days=10,
                                                          reason="延期", request_id=new_request_id()),
         pb.ExtendDeadlineRequest(clue_id=MISSING_ID, expected_version=cl.version, days=10, reason="延期",
                                  request_id=new_request_id())),
    ]
    for fn, req, _ in writes:
        fn(req, timeout=20)
        fn(req, timeout=20)
    now = get(L2, cl.id)
    mv = pb.RequestTransitionRequest(clue_id=cl.id, expected_version=now.version, target=CLO, reason="r",
                                     details=pb.TransitionDetails(finding="无"), request_id=new_request_id())
    L2.clue.RequestTransition(mv, timeout=20)
    assert L2.clue.RequestTransition(mv, timeout=20).clue.state == CLO
    writes.append((L2.clue.RequestTransition, mv, pb.RequestTransitionRequest(
        clue_id=MISSING_ID, expected_version=now.version, target=CLO, reason="r",
        details=pb.TransitionDetails(finding="无"), request_id=new_request_id())))
    writes.append((L2.clue.RecordRecusal, rec, pb.RecordRecusalRequest(
        clue_id=MISSING_ID, user_id=M.id, reason="同学关系-细节", request_id=new_request_id())))
    recuse(L, cl.id, user_id=L2.id, reason="亲属")
    not_found_like_missing(L2, cl.id)
    for fn, retry, missing in writes:
        retried_like_missing(fn, retry, missing)

    # A clue put into a joint case and taken out again by a leader recused since: the case's
    # write would answer the case; the retry answers as a fresh call naming the clue does.
    # (CreateJointCase's retry answers the case the caller made and still sees, without the
    # clue, as GetJointCase lists it.)
    L3 = w.new_user("G1", "LEADER", "G1-leader-case-retries")
    cl = move(L3, submit(w.G1.member), PRE).clue
    k = w.R2.leader.case.CreateJointCase(cs.CreateJointCaseRequest(
        title="联合办案", participant_unit_ids=[w.G1.id], request_id=new_request_id()), timeout=20)
    add = cs.AddClueToCaseRequest(case_id=k.id, clue_id=cl.id, request_id=new_request_id())
    out = cs.RemoveClueFromCaseRequest(case_id=k.id, clue_id=cl.id, reason="退出", request_id=new_request_id())
    for fn, req in ((L3.case.AddClueToCase, add), (L3.case.RemoveClueFromCase, out)):
        assert fn(req, timeout=20) == fn(req, timeout=20)
    recuse(L, cl.id, user_id=L3.id, reason="亲属")
    retried_like_missing(L3.case.AddClueToCase, add, cs.AddClueToCaseRequest(
        case_id=k.id, clue_id=MISSING_ID, request_id=new_request_id()))
    retried_like_missing(L3.case.RemoveClueFromCase, out, cs.RemoveClueFromCaseRequest(
        case_id=k.id, clue_id=MISSING_ID, reason="退出", request_id=new_request_id()))

    # The caller's own recusal: its retry answers it, the recusal that hid the clue.
    cl = submit(w.G1.member)
    mine = pb.RecordRecusalRequest(clue_id=cl.id, user_id=0, reason="本人回避", request_id=new_request_id())
    first = w.G1.member.clue.RecordRecusal(mine, timeout=20)
    not_found_like_missing(w.G1.member, cl.id)
    assert w.G1.member.clue.RecordRecusal(mine, timeout=20) == first


def test_recusal_ends_assignment_and_listing(c):
    w = c.w
    L = w.G1.leader
    cl = move(L, submit(w.G1.member), PRE).clue
    h = w.R2.member
    assign(L, cl.id, h.id)
    assert get(h, cl.id).id == cl.id
    # The owner's leader records h's conflict: h is unassigned and sees nothing.
    recuse(L, cl.id, user_id=h.id, reason="利害关系")
    not_found_like_missing(h, cl.id)
    assert list(get(L, cl.id).handlers) == []
    with c.db.cursor() as cur:
        cur.execute("SELECT details::jsonb->>'unassigned', details::jsonb->>'self' FROM audit_events WHERE subject_type = 'clue'"
                    " AND subject_id = %s AND action = 'clue.recuse'", (cl.id,))
        assert cur.fetchall() == [("true", "false")]
    # Who may record: not a member for a colleague, not an auditor, not an unrelated leader.
    expect_status(Code.PERMISSION_DENIED, recuse, w.G1.member, cl.id, user_id=L.id)
    expect_status(Code.PERMISSION_DENIED, recuse, w.auditor, cl.id, user_id=L.id)
    expect_status(Code.NOT_FOUND, recuse, w.G3.leader, cl.id, user_id=w.G3.member.id)
    expect_status(Code.INVALID_ARGUMENT, recuse, L, cl.id, user_id=w.auditor.id)
    expect_status(Code.INVALID_ARGUMENT, recuse, L, cl.id, reason="  ", details_has=("reason",))
    # A retry returns the same recusal.
    rid = new_request_id()
    first = recuse(w.G1.member, cl.id, reason="同学", rid=rid)
    assert recuse(w.G1.member, cl.id, reason="同学", rid=rid).id == first.id
    # Listed for leaders (its unit's users, the clues it sees) and AUDITORs; not for members.
    lst = lambda u, **kw: {(x.clue_id, x.user_id) for x in u.clue.ListRecusals(  # noqa: E731
        pb.ListRecusalsRequest(**kw), timeout=20).recusals}
    mine = {(cl.id, h.id), (cl.id, w.G1.member.id)}
    assert mine <= lst(L) and lst(L, clue_id=cl.id) == mine
    assert mine <= lst(w.auditor)
    assert (cl.id, h.id) in lst(w.R2.leader), "the user's own leader sees it"
    assert (cl.id, w.G1.member.id) not in lst(w.R2.leader)
    assert lst(w.G3.leader, clue_id=cl.id) == set()
    expect_status(Code.PERMISSION_DENIED, w.G1.member.clue.ListRecusals, pb.ListRecusalsRequest(), timeout=20)
    expect_status(Code.PERMISSION_DENIED, w.admin.clue.ListRecusals, pb.ListRecusalsRequest(), timeout=20)


def test_disabling_a_handler_ends_its_assignments(c):
    """A disabled user is no handler: the disable ends each of its assignments, with a
    clue.unassign event (cause user_disabled) on each clue's chain; other handlers stay."""
    w = c.w
    L = w.G1.leader
    h = w.new_user("R2", "MEMBER", "r2-leaving")
    stays = w.R2.member
    clues = [move(L, submit(w.G1.member), PRE).clue for _ in range(2)]
    for cl in clues:
        assign(L, cl.id, h.id)
        assign(L, cl.id, stays.id)
    assert {x.user_id for x in get(L, clues[0].id).handlers} == {h.id, stays.id}
    w.admin.admin.DisableUser(ad.DisableUserRequest(user_id=h.id, reason="调离"), timeout=20)
    for cl in clues:
        assert [x.user_id for x in get(L, cl.id).handlers] == [stays.id]
        assert actions(w.auditor, cl.id)[-1] == "clue.unassign"
    listed = {(x.clue_id, x.handler.user_id) for x in w.auditor.clue.ListAssignments(
        pb.ListAssignmentsRequest(user_id=h.id), timeout=20).assignments}
    assert listed == set(), listed
    with c.db.cursor() as cur:
        cur.execute("SELECT subject_id, actor_user_id, details::jsonb->>'user_id', details::jsonb->>'user_unit_id',"
                    " details::jsonb->>'cause' FROM audit_events WHERE action = 'clue.unassign'"
                    " AND details::jsonb->>'user_id' = %s ORDER BY subject_id", (str(h.id),))
        assert cur.fetchall() == [(cl.id, w.admin.id, str(h.id), str(w.R2.id), "user_disabled") for cl in clues]
    # An unassignment asked for afterwards finds no handler; the others go on.
    expect_status(Code.FAILED_PRECONDITION, unassign, L, clues[0].id, h.id)
    assert get(stays, clues[0].id).id == clues[0].id


def test_every_leader_recused(c):
    w = c.w
    # G2 has one leader; a second one is made here. Both recused: nobody in G2 can act.
    L, M = w.G2.leader, w.G2.member
    L2 = w.new_user("G2", "LEADER", "G2-leader-2")
    cl = move(L, submit(M), PRE).clue
    recuse(L, cl.id, user_id=L2.id, reason="亲属")
    g = get(M, cl.id)
    expect_status(Code.PERMISSION_DENIED, move, M, g, CLO, finding="无")  # one leader still free
    recuse(L, cl.id, reason="本人回避")
    # It stands where the permission would: before the version, so a stale one is refused so too.
    stale = pb.Clue()
    stale.CopyFrom(g)
    stale.version += 5
    for v in (g, stale):
        for fn in (lambda: move(M, v, CLO, finding="无"),
                   lambda: M.clue.ExtendDeadline(pb.ExtendDeadlineRequest(
                       clue_id=cl.id, expected_version=v.version, days=3, reason="r", request_id=new_request_id()),
                       timeout=20),
                   lambda: M.clue.HandOver(pb.HandOverRequest(
                       clue_id=cl.id, expected_version=v.version, to_unit_id=w.G1.id, reason="r",
                       request_id=new_request_id()), timeout=20),
                   lambda: assign(M, cl.id, w.R1.member.id)):
            expect_status(Code.FAILED_PRECONDITION, fn, details_has=("every LEADER of the owner unit is recused",))
    # Outside the unit it stays a question of permission.
    expect_status(Code.PERMISSION_DENIED, move, w.R1.member, g, CLO, finding="无")
    # An ADMIN adds a leader without a conflict: the unit can act again.
    L3 = w.new_user("G2", "LEADER", "G2-leader-3")
    expect_status(Code.PERMISSION_DENIED, move, M, g, CLO, finding="无")
    move(L3, g, CLO, finding="查无实据")


def test_reviewer_unit_every_leader_recused(c):
    w = c.w
    # G3's reviewer is R2. With every R2 leader recused, the proposal is refused up front.
    L = w.G3.leader
    cl = move(L, submit(w.G3.member), PRE).clue
    recuse(w.R2.leader, cl.id, reason="亲属")
    g = get(L, cl.id)
    expect_status(Code.FAILED_PRECONDITION, move, L, g, FIL,
                  details_has=("every LEADER of the reviewing unit is recused",))
    assert not get(L, cl.id).pending_proposal


def test_pending_proposal_whose_reviewers_are_all_recused(c):
    """A proposal pending before R2 when R2's only leader is recused: the owner's leader and R2's
    member get FAILED_PRECONDITION naming the recusals, and a handover (which withdraws the
    proposal) is the owner's way out."""
    w = c.w
    L = w.G3.leader
    cl = move(L, submit(w.G3.member), PRE).clue
    prop = move(L, cl, FIL).proposal
    assert prop.reviewer_unit_id == w.R2.id
    g = get(L, cl.id)
    expect_status(Code.FAILED_PRECONDITION, move, L, g, CLO, finding="无", details_has=("reviewed first",))
    recuse(w.R2.leader, cl.id, reason="曾在驻在单位任职")
    expect_status(Code.FAILED_PRECONDITION, move, L, g, CLO, finding="无", details_has=("nobody can review it",))
    expect_status(Code.FAILED_PRECONDITION, w.R2.member.clue.ReviewProposal, pb.ReviewProposalRequest(
        proposal_id=prop.id, approve=True, request_id=new_request_id()), timeout=20,
        details_has=("every LEADER of the reviewing unit is recused",))
    expect_status(Code.NOT_FOUND, w.R2.leader.clue.ReviewProposal, pb.ReviewProposalRequest(
        proposal_id=prop.id, approve=True, request_id=new_request_id()), timeout=20)
    x = L.clue.HandOver(pb.HandOverRequest(clue_id=cl.id, expected_version=g.version, to_unit_id=w.G1.id,
                                           reason="回避后移交", request_id=new_request_id()), timeout=20)
    assert not x.pending_proposal


def test_recused_leader_lists_nothing_of_the_clue(c):
    """A recused LEADER meets the clue as a missing one in the lists too: neither its
    assignments nor its recusals (with their reasons) are listed, not even those of the
    leader's own unit's users, which a leader otherwise sees on any clue."""
    w = c.w
    L = w.G1.leader
    cl = move(L, submit(w.G1.member), PRE).clue
    L2 = w.new_user("G1", "LEADER", "G1-leader-lists")
    m3 = w.new_user("G1", "MEMBER", "G1-member-lists")
    hand = w.new_user("G1", "MEMBER", "G1-hand-lists")
    recuse(L2, cl.id, reason="本人回避")
    recuse(L, cl.id, user_id=m3.id, reason="曾与被反映人共事")
    assign(L, cl.id, hand.id)
    recuse(L, cl.id, user_id=w.G3.leader.id, reason="亲属")
    assign(L, cl.id, w.G3.member.id)
    recs = lambda u, **kw: [(x.clue_id, x.user_id, x.reason) for x in u.clue.ListRecusals(  # noqa: E731
        pb.ListRecusalsRequest(**kw), timeout=20).recusals]
    asg = lambda u, **kw: [(x.clue_id, x.handler.user_id) for x in u.clue.ListAssignments(  # noqa: E731
        pb.ListAssignmentsRequest(**kw), timeout=20).assignments]
    for u in (L2, w.G3.leader):
        not_found_like_missing(u, cl.id)
        assert recs(u, clue_id=cl.id) == recs(u, clue_id=MISSING_ID) == [], u.name
        assert asg(u, clue_id=cl.id) == asg(u, clue_id=MISSING_ID) == [], u.name
        assert cl.id not in {x[0] for x in recs(u)} | {x[0] for x in asg(u)}, u.name
    assert cl.id not in {x[0] for x in recs(w.G3.leader, user_id=w.G3.leader.id)}
    assert cl.id not in {x[0] for x in asg(w.G3.leader, user_id=w.G3.member.id)}
    # The owner's leader and the handler's own leader elsewhere still list them.
    assert {(cl.id, m3.id), (cl.id, L2.id)} <= {x[:2] for x in recs(L, clue_id=cl.id)}
    assert (cl.id, w.G3.member.id) in asg(L, clue_id=cl.id)
    assert (cl.id, hand.id) in asg(w.auditor, clue_id=cl.id)


def test_overseers_staff_recused_only_by_their_own(c):
    """A recusal hides the clue from the recused user: the group that owns a clue may not record
    one for the staff of a unit overseeing it (its liaison room, its case's lead room, the
    reviewer of its proposal), which would shut them out; they or their own leader may."""
    w = c.w
    L = w.G1.leader
    cl = move(L, submit(w.G1.member), PRE).clue
    before = _one(c.db, "SELECT count(*) FROM recusals WHERE clue_id = %s", cl.id)
    for target in (w.R1.leader, w.R1.member):
        expect_status(Code.PERMISSION_DENIED, recuse, L, cl.id, user_id=target.id,
                      details_has=("oversees this clue",))
    assert _one(c.db, "SELECT count(*) FROM recusals WHERE clue_id = %s", cl.id) == before
    assert get(w.R1.leader, cl.id).id == cl.id
    # A room leading the clue's case oversees it too, and the liaison room is not the lead's.
    k = w.R2.leader.case.CreateJointCase(cs.CreateJointCaseRequest(
        title="室组地联合", participant_unit_ids=[w.G1.id], request_id=new_request_id()), timeout=20)
    w.G1.leader.case.AddClueToCase(cs.AddClueToCaseRequest(case_id=k.id, clue_id=cl.id), timeout=20)
    expect_status(Code.PERMISSION_DENIED, recuse, L, cl.id, user_id=w.R2.member.id)
    expect_status(Code.PERMISSION_DENIED, recuse, w.R2.leader, cl.id, user_id=w.R1.member.id)
    # Their own: the member declares, its leader records; the lead room records the owner's.
    assert recuse(w.R1.member, cl.id).user_id == w.R1.member.id
    assert recuse(w.R2.leader, cl.id, user_id=w.R2.member.id).user_id == w.R2.member.id
    M2 = w.new_user("G1", "MEMBER", "G1-member-overseen")
    assert recuse(w.R2.leader, cl.id, user_id=M2.id).user_id == M2.id

    # Decided while R2 did not oversee the clue, written once it leads the clue's case: refused
    # as a change made meanwhile, and nothing is recorded.
    cl2 = move(L, submit(w.G1.member), PRE).clue
    R2m = w.new_user("R2", "MEMBER", "R2-member-race")
    req = pb.RecordRecusalRequest(clue_id=cl2.id, user_id=R2m.id, reason="利害关系", request_id=new_request_id())

    def lead_it():
        k2 = w.R2.leader.case.CreateJointCase(cs.CreateJointCaseRequest(
            title="随后的联合案", participant_unit_ids=[w.G1.id], request_id=new_request_id()), timeout=20)
        w.G1.leader.case.AddClueToCase(cs.AddClueToCaseRequest(case_id=k2.id, clue_id=cl2.id), timeout=20)
    got, _ = harness.stalled_by_its_key(c.dbname, L.id, L.clue.RecordRecusal, req, lead_it)
    assert got[0] == Code.ABORTED and "oversees clue" in got[1], got
    assert _one(c.db, "SELECT count(*) FROM recusals WHERE clue_id = %s", cl2.id) == 0
    expect_status(Code.PERMISSION_DENIED, L.clue.RecordRecusal, pb.RecordRecusalRequest(
        clue_id=cl2.id, user_id=R2m.id, reason="利害关系", request_id=new_request_id()), timeout=20)


def test_first_assignments_race(c):
    # The first handler and the first recusal of a clue mark it (0020), under the clue's lock:
    # first assignments and recusals racing on fresh clues all succeed, none deadlocks, and
    # each clue's flags and facts come out right.
    import concurrent.futures as cf
    w = c.w
    L = w.G1.leader
    others = [w.G1.member, w.R2.member, w.R1.member, w.R2.leader]
    clues = [move(L, submit(w.G1.member), PRE).clue for _ in range(4)]
    with cf.ThreadPoolExecutor(8) as ex:
        futs = [ex.submit(assign, L, cl.id, u.id) for cl in clues for u in others[:3]]
        futs += [ex.submit(recuse, L, cl.id, others[3].id) for cl in clues]
        for f in futs:
            f.result()
    for cl in clues:
        assert {h.user_id for h in get(L, cl.id).handlers} == {u.id for u in others[:3]}
        not_found_like_missing(others[3], cl.id)
        assert get(w.R2.member, cl.id).id == cl.id
    with c.db.cursor() as cur:
        cur.execute("SELECT bool_and(has_handlers AND has_recusals) FROM clues WHERE id = ANY(%s)",
                    ([cl.id for cl in clues],))
        assert cur.fetchone()[0] is True
        cur.execute("SELECT count(*) FROM clues c WHERE NOT has_handlers"
                    " AND EXISTS (SELECT 1 FROM clue_handlers h WHERE h.clue_id = c.id)")
        assert cur.fetchone()[0] == 0


def recuse_events(u, clue_id):
    """The clue.recuse events of clue_id as u reads them in GetHistory, ListAuditEvents and
    WatchEvents (the three must agree)."""
    got = [e for e in u.clue.GetHistory(pb.GetHistoryRequest(clue_id=clue_id), timeout=20).events
           if e.action == "clue.recuse"]
    listed = list(u.audit.ListAuditEvents(au.ListAuditEventsRequest(
        subject_type="clue", subject_id=clue_id, action="clue.recuse"), timeout=20).events)
    assert listed == got, (listed, got)
    stream = u.audit.WatchEvents(au.WatchEventsRequest(after_seq=got[0].seq - 1), timeout=60)
    try:
        streamed = []
        for e in stream:
            if e.subject_type == "clue" and e.subject_id == clue_id and e.action == "clue.recuse":
                streamed.append(e)
            if e.seq >= got[-1].seq:
                break
    finally:
        stream.cancel()
    assert streamed == got, (streamed, got)
    return got


def test_recusal_events_only_for_those_who_list_recusals(c):
    """ListRecusals refuses a MEMBER; the clue.recuse events must not tell it what the listing
    would (who is recused, and why): whoever may not list recusals (the owner unit's members,
    the liaison room, a seconded handler) gets them without reason, details and hashes, as an
    ADMIN gets a clue's events. A LEADER of the owner unit and an AUDITOR get them whole; every
    other event of the clue stays whole for the member."""
    w = c.w
    L, M = w.G1.leader, w.G1.member
    cl = move(L, submit(M, reporter=True), PRE).clue
    h = w.R2.member
    assign(L, cl.id, h.id)
    colleague = w.new_user("G1", "MEMBER")
    rec = recuse(L, cl.id, user_id=colleague.id, reason="与被反映人系同学")
    with c.db.cursor() as cur:
        cur.execute("SELECT reason, details FROM audit_events WHERE subject_type = 'clue' AND subject_id = %s"
                    " AND action = 'clue.recuse'", (cl.id,))
        [(reason, details)] = cur.fetchall()
    assert reason == "与被反映人系同学" and str(colleague.id) in details, details
    expect_status(Code.PERMISSION_DENIED, M.clue.ListRecusals, pb.ListRecusalsRequest(clue_id=cl.id), timeout=20)
    for u in (M, w.R1.member, h):  # the owner unit, its liaison room, a seconded handler
        [e] = recuse_events(u, cl.id)
        assert (e.reason, e.details_json, e.prev_hash, e.hash) == ("", "", b"", b""), (u, e)
        assert (e.actor_user_id, e.subject_id) == (L.id, cl.id), e
        whole = [e for e in u.clue.GetHistory(pb.GetHistoryRequest(clue_id=cl.id), timeout=20).events
                 if e.action != "clue.recuse"]
        assert whole and all(x.details_json and len(x.hash) == 32 for x in whole), (u, whole)
    for u in (L, w.auditor):
        [e] = recuse_events(u, cl.id)
        assert e.reason == "与被反映人系同学" and len(e.hash) == 32 and len(e.prev_hash) == 32, (u, e)
        d = json.loads(e.details_json)
        assert d["user_id"] == colleague.id and d["recusal_id"] == rec.id, d
    # The export (AUDITOR and ADMIN): whole for the AUDITOR; an ADMIN's clue events are
    # redacted as before.
    seq = recuse_events(L, cl.id)[0].seq
    for u, redacted in ((w.auditor, False), (w.admin, True)):
        [e] = u.audit.ExportAuditEvents(au.ExportAuditEventsRequest(after_seq=seq - 1, page_size=1),
                                        timeout=20).events
        assert e.action == "clue.recuse" and e.redacted == redacted, (u, e)
        assert (e.reason == "") == redacted and (e.details == "") == redacted and (e.hash == "") == redacted, e


def test_recused_user_counts_nothing_of_the_clue(c):
    """A member of G1 recused from a clue of G1 finds it in no figure (docs/COOPERATION.md,
    "Aggregates"): their GetStatistics (G1's figures and the cases) and GetBulletin are the same
    before and after the clue is checked and closed, and short of a colleague's by that clue and
    the ledger item recorded from it, from its submission on. The colleague, the unit's leader, an
    AUDITOR and an ADMIN count it, and their figures change. Forty days on, the member counts
    neither a second such clue overdue nor the item overdue; the others do."""
    sp, rp = S.stats_pb2, S.rectification_pb2
    day = 86400000
    w = c.w
    # New users: w.G1.member is recused from clues of the tests above.
    L, colleague = w.G1.leader, w.new_user("G1", "MEMBER", "G1-member-counts-all")
    M2 = w.new_user("G1", "MEMBER", "G1-member-stats")
    now = int(time.time() * 1000)
    period = dict(from_ms=now - 60000, to_ms=now + day)
    month = time.strftime("%Y-%m", time.gmtime(now / 1000 + 8 * 3600))

    def unit_of(r, unit_id):
        rows = [u for u in r.units if u.unit_id == unit_id]
        assert len(rows) == 1, r
        return rows[0]

    def seen(u, stub=None):
        """u's G1 statistics, the case rows, and G1's bulletin row, as u is answered them."""
        st = stub or u.stats
        s = st.GetStatistics(sp.GetStatisticsRequest(unit_ids=[w.G1.id], **period), timeout=30)
        b = st.GetBulletin(sp.GetBulletinRequest(month=month, unit_ids=[w.G1.id]), timeout=30)
        return unit_of(s, w.G1.id), list(s.cases), unit_of(b, w.G1.id)

    hidden = submit(colleague)
    item = L.rect.CreateItem(rp.CreateItemRequest(
        host_unit="市发展改革委", description="问题", category="c", source=rp.RECTIFICATION_SOURCE_CLUE,
        source_clue_id=hidden.id, deadline_ms=now + 20 * day, request_id=new_request_id()), timeout=20)
    recuse(L, hidden.id, user_id=M2.id)
    not_found_like_missing(M2, hidden.id)
    others = (colleague, L, w.auditor, w.admin)
    before = {u.name: seen(u) for u in (M2,) + others}
    mine, _, my_bulletin = before[M2.name]
    theirs, _, their_bulletin = before[colleague.name]
    assert theirs.received == mine.received + 1, (theirs, mine)
    assert their_bulletin.received == my_bulletin.received + 1
    assert their_bulletin.rectification_found == my_bulletin.rectification_found + 1
    for u in others:
        assert (before[u.name][0], before[u.name][2]) == (theirs, their_bulletin), u

    # The clue is checked, then closed: the recused member's figures stay as they were.
    move(L, move(L, get(L, hidden.id), PRE).clue, CLO, finding="查无实据")
    after = {u.name: seen(u) for u in (M2,) + others}
    assert after[M2.name] == before[M2.name], (after[M2.name], before[M2.name])
    for u in others:
        s, _, b = after[u.name]
        s0, _, b0 = before[u.name]
        assert (s.preliminary_checks_started, s.closed) == (s0.preliminary_checks_started + 1, s0.closed + 1), u
        assert {d.disposal: d.count for d in s.closed_by_disposal}.get("FINDING", 0) == \
            {d.disposal: d.count for d in s0.closed_by_disposal}.get("FINDING", 0) + 1, u
        assert b.disposed == b0.disposed + 2, u
        assert (after[u.name][0], b) == (after[colleague.name][0], after[colleague.name][2]), u

    # Forty days on: a second clue of G1 the member is recused from is past its 30 days, and the
    # item past its 20; only the others count them overdue.
    hidden2 = submit(colleague)
    recuse(L, hidden2.id, user_id=M2.id)
    later = harness.Clued(c.url, args=["--test-clock-offset-ms", str(40 * day)]).start(migrate=False)
    try:
        def later_seen(u):
            with grpc.insecure_channel(later.addr) as ch:
                return seen(u, S.stats_pb2_grpc.StatsServiceStub(grpc.intercept_channel(ch, world._Auth(u.token))))

        mine, _, my_bulletin = later_seen(M2)
        for u in others:
            theirs, _, their_bulletin = later_seen(u)
            assert theirs.overdue_now == mine.overdue_now + 1, (u, theirs.overdue_now, mine.overdue_now)
            assert their_bulletin.overdue_now == my_bulletin.overdue_now + 1, u
            assert their_bulletin.rectification_overdue == my_bulletin.rectification_overdue + 1, u
    finally:
        later.stop()
    assert item.source_clue_id == hidden.id


def _assignment_pages(u, **kw):
    """Every page of u's ListAssignments(**kw), following next_page_token: the (clue_id,
    user_id) of each row in the order given, and the size of each page."""
    keys, sizes, token = [], [], ""
    while True:
        r = u.clue.ListAssignments(pb.ListAssignmentsRequest(page_token=token, **kw), timeout=60)
        keys += [(a.clue_id, a.handler.user_id) for a in r.assignments]
        sizes.append(len(r.assignments))
        if not r.next_page_token:
            return keys, sizes
        assert r.assignments and len(sizes) < 20, sizes
        token = r.next_page_token


def _refused_token(fn, req):
    """INVALID_ARGUMENT naming page_token, in the message and in a BadRequest."""
    code, msg, raw = _answer(fn, req)
    assert code == Code.INVALID_ARGUMENT and msg.startswith("page_token "), (code, msg)
    assert b"google.rpc.BadRequest" in raw and b"\n\npage_token" in raw, raw


def test_assignments_arrive_in_pages(c):
    """ListAssignments past 1,000 rows: pages of at most 1,000 whose next_page_token holds the
    last row's key in the list's order (assigned_at DESC, clue_id DESC, user_id), so that 2,400
    assignments made in one millisecond, 800 of them in each of three microseconds, come each
    exactly once however the pages cut them; a token is bound to its caller, filters and list."""
    w = c.w
    L = w.G1.leader
    clues = [submit(L).id for _ in range(12)]
    db = c.db.cursor()
    # 200 members of R2 handle each of the 12 clues (planted as rows: the list reads nothing
    # else), all assigned in one millisecond of an hour ago, by user index mod 3 in one of its
    # first three microseconds: older than every other test's assignment.
    db.execute("INSERT INTO users (unit_id, name, role) SELECT %s, '借调' || lpad(g::text, 3, '0'), 'MEMBER'"
               " FROM generate_series(1, 200) g RETURNING id", (w.R2.id,))
    users = [r[0] for r in db.fetchall()]
    at_ms = (int(time.time()) - 3600) * 1000
    try:
        db.execute("INSERT INTO clue_handlers (clue_id, user_id, owner_unit, assigned_by, assigned_by_unit,"
                   " assigned_at) SELECT cl, u, %s, %s, %s, to_timestamp(%s / 1000.0) + (u %% 3) * interval '1 us'"
                   " FROM unnest(%s::bigint[]) cl, unnest(%s::bigint[]) u",
                   (w.G1.id, L.id, w.G1.id, at_ms, clues, users))
        planted = {(cl, u) for cl in clues for u in users}
        db.execute("SELECT h.clue_id, h.user_id, extract(epoch from h.assigned_at) * 1000000 FROM clue_handlers h"
                   " JOIN clues c ON c.id = h.clue_id AND c.owner_unit = h.owner_unit"
                   " ORDER BY h.assigned_at DESC, h.clue_id DESC, h.user_id")
        rows = db.fetchall()
        every = [(cl, u) for cl, u, _ in rows]
        # The pages end inside runs of rows sharing one assigned_at, to the microsecond.
        assert len(every) > 2000 and rows[999][2] == rows[1000][2] and rows[1999][2] == rows[2000][2], len(every)
        got, sizes = _assignment_pages(w.auditor)
        assert got == every and sizes[:2] == [1000, 1000], (len(got), len(every), sizes)
        first = w.auditor.clue.ListAssignments(pb.ListAssignmentsRequest(), timeout=60)
        assert {a.handler.assigned_at_ms for a in first.assignments if (a.clue_id, a.handler.user_id) in planted} \
            == {at_ms}
        # The R2 leader sees its unit's users' assignments, G1's leader those on its clues: each
        # walk gives every planted row once, in the list's order.
        for who, kw in ((w.R2.leader, {}), (L, {}), (w.auditor, {"user_id": users[0]})):
            got, sizes = _assignment_pages(who, **kw)
            assert len(got) == len(set(got)) and got == [k for k in every if k in set(got)], (who, sizes)
            want = planted if not kw else {(cl, users[0]) for cl in clues}
            assert want <= set(got) and (len(sizes) >= 3 or kw), (who, len(got), sizes)
        # A token is the caller's, the filters' and the list's: replayed by another caller, with
        # another filter, damaged, or given to ListRecusals (same caller, same filters), it is
        # refused, not read as a place in another listing.
        tok = first.next_page_token
        for fn, req in ((w.R2.leader.clue.ListAssignments, pb.ListAssignmentsRequest(page_token=tok)),
                        (L.clue.ListAssignments, pb.ListAssignmentsRequest(page_token=tok)),
                        (w.auditor.clue.ListAssignments, pb.ListAssignmentsRequest(clue_id=clues[0], page_token=tok)),
                        (w.auditor.clue.ListAssignments, pb.ListAssignmentsRequest(user_id=users[0], page_token=tok)),
                        (w.auditor.clue.ListAssignments, pb.ListAssignmentsRequest(page_token=tok[:-1])),
                        (w.auditor.clue.ListAssignments, pb.ListAssignmentsRequest(page_token="nope")),
                        (w.auditor.clue.ListRecusals, pb.ListRecusalsRequest(page_token=tok))):
            _refused_token(fn, req)
        nxt = w.auditor.clue.ListAssignments(pb.ListAssignmentsRequest(page_token=tok), timeout=60)
        assert (nxt.assignments[0].clue_id, nxt.assignments[0].handler.user_id) == every[1000]
        # cluectl: one page and the next page's token on stderr, which goes on from there;
        # --all lists every page.
        env = {"CLUED_TOKEN": w.R2.leader.token}
        r = harness.cluectl("--server", c.srv.addr, "clue", "assignments", env=env, check=0)
        shown = re.findall(r"^clue (\d+) \(owner [^)]*\): .* \(user (\d+), ", r.stdout, re.M)
        token = re.search(r"--page-token (\S+)", r.stderr).group(1)
        r2 = json.loads(harness.cluectl("--server", c.srv.addr, "--json", "clue", "assignments", "--page-token",
                                        token, env=env, check=0).stdout)
        mine, _ = _assignment_pages(w.R2.leader)
        assert len(shown) == 1000 and [(int(a), int(b)) for a, b in shown] == mine[:1000], len(shown)
        assert (int(r2["assignments"][0]["clue_id"]), int(r2["assignments"][0]["handler"]["user_id"])) == mine[1000]
        out = json.loads(harness.cluectl("--server", c.srv.addr, "--json", "clue", "assignments", "--all",
                                         env=env, check=0).stdout)
        assert [(int(a["clue_id"]), int(a["handler"]["user_id"])) for a in out["assignments"]] == mine
    finally:
        db.execute("DELETE FROM clue_handlers WHERE user_id = ANY(%s)", (users,))


def test_zz_chains(c):
    """Every clue's chain verifies when recomputed here (assign, unassign, recuse included)."""
    chains = chain.verify(c.db, "clue")
    acts = {a for evs in chains.values() for a in (e["action"] for e in evs)}
    assert {"clue.assign", "clue.unassign", "clue.recuse"} <= acts, acts


if __name__ == "__main__":
    harness.run_tests(dict(globals()), setup, teardown)
