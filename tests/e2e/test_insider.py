"""Authorization against an insider (issue 9, findings 1-3): grpcio against the real clued.

1. Joint cases by consent. A room's leader cannot pull a clue it does not see into a case,
   neither through CreateJointCase(clue_ids) nor AddClueToCase, not even after making the
   clue's owner a participant: a participant shares the case's clues, it never gives its
   own away. A clue joins only when the caller sees it and is a LEADER of its owner unit, or
   of the lead room seeing it as owner or liaison room. The owner's leader takes it out again.
2. No leak through refusals. A clue, case or proposal the caller may not see answers exactly
   as a missing one (same code, same message once the id is blanked out), whatever its state.
3. Independent co-review. A room's own clue in a case the room leads is reviewed by the other
   room named on the proposal, never by the room itself; nor is a clue handed over to the
   lead room reviewed by it.
"""

import os
import re
import sys

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import expect_status, new_request_id  # noqa: E402
import world  # noqa: E402
from test_cases import Ctx, MISSING_ID, hidden_everywhere, sees  # noqa: E402

S = harness.stubs()
pb = S.clue_pb2
cs = S.case_pb2
cm = S.common_pb2
Code = grpc.StatusCode

ACCEPTED, PRELIM, FILED, CLOSED = (cm.CLUE_STATE_ACCEPTED, cm.CLUE_STATE_PRELIMINARY_CHECK,
                                   cm.CLUE_STATE_FILED, cm.CLUE_STATE_CLOSED)


def setup():
    c = Ctx()
    pg = harness.Postgres.get()
    c.dbname = pg.new_database()
    c.srv = harness.Clued(pg.url(c.dbname)).start()
    c.w = world.build(c.srv)
    c.db = pg.connect(c.dbname)
    return c


def teardown(c):
    c.w.close()
    c.db.close()
    c.srv.stop()


def refusal(fn, *args, **kw):
    """(code, message with every number blanked) of a call that must fail."""
    try:
        fn(*args, **kw)
    except grpc.RpcError as e:
        return e.code(), re.sub(r"\d+", "N", e.details())
    raise AssertionError("the call succeeded")


def same_as_missing(fn, hidden_ids, missing_id=MISSING_ID, code=Code.NOT_FOUND):
    """fn(id) fails for each hidden id exactly as for missing_id, with `code`."""
    want = refusal(fn, missing_id)
    assert want[0] == code, want
    for i in hidden_ids:
        got = refusal(fn, i)
        assert got == want, (i, got, want)
    return want


def replayed_clues(c, user):
    """The clue ids whose events WatchEvents replays to user from the start: read until a
    marker event the user's unit makes, after every event before it."""
    marker = c.submit(user.unit.member, title="marker")
    mseq = max(e.seq for e in c.w.auditor.clue.GetHistory(pb.GetHistoryRequest(clue_id=marker.id),
                                                           timeout=20).events)
    seen = set()
    stream = user.audit.WatchEvents(S.audit_pb2.WatchEventsRequest(after_seq=0), timeout=60)
    try:
        for e in stream:
            if e.subject_type == "clue":
                seen.add(e.subject_id)
            if e.seq >= mseq:
                break
    finally:
        stream.cancel()
    return seen


def closed(c, user_leader, clue):
    return c.move(user_leader, clue, CLOSED, details={"disposal": pb.DISPOSAL_NO_FURTHER_ACTION}).clue


# ---- finding 1 -------------------------------------------------------------------------------


def test_finding1_no_takeover_through_a_case(c):
    w = c.w
    R1, R2, G1, G3, X1 = w.R1, w.R2, w.G1, w.G3, w.X1
    secret = c.submit(G3.member, title="G3 机密线索", reporter=pb.ReporterContact(name="举报人", phone="1"))
    c.note(G3.member, secret.id, "G3 内部记录")
    assert not sees(R1.leader, secret.id)

    # CreateJointCase naming the clue, with or without its owner as participant: as missing.
    for parts in ([], [G3]):
        got = refusal(c.create_case, R1.leader, participants=parts, clues=[secret])
        want = refusal(c.create_case, R1.leader, participants=parts,
                       clues=[world.Unit(MISSING_ID, "x", "GROUP")])
        assert got == want and got[0] == Code.NOT_FOUND, (parts, got, want)
    # A case with G3 as participant: AddClueToCase by its lead answers as for a missing clue.
    jc = c.create_case(R1.leader, title="R1 的案件", participants=[G3, X1])
    assert [x.clue_id for x in jc.clues] == []
    same_as_missing(lambda i: c.add_clue(R1.leader, jc.id, i), [secret.id])
    # Making G3 a participant pulled nothing in: R1 and X1 still see nothing of G3's clue.
    for u in (R1.leader, R1.member, X1.leader):
        hidden_everywhere(c, u, secret.id)
        assert secret.id not in replayed_clues(c, u), u
    assert len(c.get_case(R1.leader, jc.id).clues) == 0

    # G3's leader consents: its clue joins, and the case's units see it from then on.
    expect_status(Code.PERMISSION_DENIED, c.add_clue, G3.member, jc.id, secret.id)
    jc = c.add_clue(G3.leader, jc.id, secret.id, reason="同意并案")
    assert [x.clue_id for x in jc.clues] == [secret.id]
    assert sees(R1.member, secret.id) and sees(X1.member, secret.id)
    assert secret.id in replayed_clues(c, R1.member)
    ev = c.sql("SELECT actor_user_id FROM audit_events WHERE subject_type = 'clue' AND subject_id = %s"
               " AND action = 'case.add_clue'", secret.id)
    assert ev == [(G3.leader.id,)]
    # A participant sees the clue through the case, yet may not bring it anywhere else.
    x1case = c.create_case(R2.leader, title="R2 的案件", participants=[X1])
    expect_status(Code.PERMISSION_DENIED, c.add_clue, X1.leader, x1case.id, secret.id)

    # While a proposal is pending the clue stays; then G3's leader takes it out.
    s = c.move(G3.leader, c.get(G3.member, secret.id), PRELIM).clue
    r = c.move(G3.leader, s, FILED)
    assert r.proposal.reviewer_unit_id == R1.id, "the lead room reviews member clues"
    assert "pending proposal" in expect_status(Code.FAILED_PRECONDITION, c.remove_clue, G3.leader, jc.id,
                                               secret.id)
    c.review(R1.leader, r.proposal.id, approve=False, comment="退回")
    for u in (G3.member, X1.leader, R1.member):
        expect_status(Code.PERMISSION_DENIED, c.remove_clue, u, jc.id, secret.id)
    after = c.remove_clue(G3.leader, jc.id, secret.id, reason="收回本组线索")
    assert len(after.clues) == 0
    for u in (R1.leader, X1.leader):
        hidden_everywhere(c, u, secret.id)
        assert secret.id not in replayed_clues(c, u), u
    assert secret.id in replayed_clues(c, G3.member) and secret.id in replayed_clues(c, R2.member)
    ev = c.sql("SELECT actor_user_id, reason FROM audit_events WHERE subject_type = 'clue' AND subject_id = %s"
               " AND action = 'case.remove_clue'", secret.id)
    assert ev == [(G3.leader.id, "收回本组线索")]
    # The next co-review goes where it goes outside any case: G3's liaison room R2.
    s = c.get(G3.member, secret.id)
    r = c.move(G3.leader, s, FILED)
    assert r.proposal.reviewer_unit_id == R2.id
    expect_status(Code.NOT_FOUND, c.review, R1.leader, r.proposal.id)

    # The lead room brings in clues it sees as owner or liaison room; not those it sees only
    # through another case or a pending review; never a clue it sees as a mere participant.
    own = c.submit(R1.member, title="R1 own")
    liaised = c.submit(G1.member, title="G1 via liaison R1")
    jc2 = c.create_case(R1.leader, title="R1 第二案", clues=[own, liaised])
    assert sorted(x.clue_id for x in jc2.clues) == sorted([own.id, liaised.id])
    # G1 is no participant, yet its leader, who sees its clue, takes it out (here through
    # cluectl); the answer names the case only, which G1 does not see. Its member, who may
    # not take the clue out, learns nothing of the case.
    ctl = lambda u, *a: harness.cluectl(*a, env={"CLUED_SERVER": c.srv.addr, "CLUED_TOKEN": u.token})  # noqa: E731
    r = ctl(G1.member, "case", "remove-clue", str(jc2.id), "--clue", str(liaised.id), "--reason", "G1 收回")
    assert r.returncode == 1 and r.stderr.startswith("NOT_FOUND: joint case not found"), r.stderr
    r = ctl(G1.leader, "case", "remove-clue", str(jc2.id), "--clue", str(liaised.id), "--reason", "G1 收回")
    assert r.returncode == 0 and r.stdout == f"joint case #{jc2.id} updated\n", (r.stdout, r.stderr)
    expect_status(Code.NOT_FOUND, c.get_case, G1.leader, jc2.id)
    assert c.get(G1.member, liaised.id).joint_case_id == 0
    # A participant's leader that sees a clue only through the case may not move it elsewhere.
    x1clue = c.submit(X1.member, title="X1 clue")
    c.add_clue(X1.leader, jc.id, x1clue.id)
    assert sees(G3.leader, x1clue.id)
    g3case = c.create_case(R2.leader, title="R2 with G3", participants=[G3])
    expect_status(Code.NOT_FOUND, c.add_clue, R2.leader, g3case.id, x1clue.id)
    expect_status(Code.PERMISSION_DENIED, c.remove_clue, G3.leader, jc.id, x1clue.id)
    # R1 (lead) sees X1's clue through its own case only: it may not put it into another one.
    expect_status(Code.PERMISSION_DENIED, c.add_clue, R1.leader, jc2.id, x1clue.id)
    c.remove_clue(X1.leader, jc.id, x1clue.id)
    expect_status(Code.NOT_FOUND, c.add_clue, R1.leader, jc2.id, x1clue.id)


# ---- finding 2 -------------------------------------------------------------------------------


def test_finding2_refusals_do_not_leak(c):
    w = c.w
    R1, G3 = w.R1, w.G3
    open_ = c.submit(G3.member, title="open")
    shut = closed(c, G3.leader, c.submit(G3.member, title="closed"))
    pend = c.move(G3.leader, c.submit(G3.member, title="pending"), PRELIM).clue
    prop = c.move(G3.leader, pend, FILED).proposal
    pend = c.get(G3.member, pend.id)
    decided = c.move(G3.leader, c.move(G3.leader, c.submit(G3.member), PRELIM).clue, FILED).proposal
    c.review(w.R2.leader, decided.id, approve=False)
    hidden = [open_.id, shut.id, pend.id]
    jc = c.create_case(R1.leader, title="probe", participants=[G3])
    other = c.create_case(w.R2.leader, title="hidden case", participants=[G3])

    # CaseService with a clue id: every state of a hidden clue answers as a missing one.
    same_as_missing(lambda i: c.add_clue(R1.leader, jc.id, i), hidden)
    same_as_missing(lambda i: c.remove_clue(R1.leader, jc.id, i), hidden)
    same_as_missing(lambda i: R1.leader.case.CreateJointCase(cs.CreateJointCaseRequest(
        title="t", participant_unit_ids=[G3.id], clue_ids=[i], request_id=new_request_id()), timeout=20), hidden)
    # ClueService with a clue id, including the calls that check version, state or proposals.
    for u in (R1.leader, R1.member, w.X1.leader):
        same_as_missing(lambda i: u.clue.GetClue(pb.GetClueRequest(clue_id=i), timeout=20), hidden)
        same_as_missing(lambda i: u.clue.GetHistory(pb.GetHistoryRequest(clue_id=i), timeout=20), hidden)
        same_as_missing(lambda i: u.clue.ListNotes(pb.ListNotesRequest(clue_id=i), timeout=20), hidden)
        same_as_missing(lambda i: u.clue.AddNote(pb.AddNoteRequest(
            clue_id=i, kind=pb.NOTE_KIND_OTHER, text="x", request_id=new_request_id()), timeout=20), hidden)
        for target in (PRELIM, FILED, CLOSED):
            for version in (1, 2, 3, 99):
                same_as_missing(lambda i: u.clue.RequestTransition(pb.RequestTransitionRequest(
                    clue_id=i, expected_version=version, target=target, reason="r",
                    details=pb.TransitionDetails(disposal=pb.DISPOSAL_SHELVED, finding="f"),
                    request_id=new_request_id()), timeout=20), hidden)
        for version in (1, 2, 99):
            same_as_missing(lambda i: u.clue.HandOver(pb.HandOverRequest(
                clue_id=i, expected_version=version, to_unit_id=w.G1.id, reason="r",
                request_id=new_request_id()), timeout=20), hidden)
            same_as_missing(lambda i: u.clue.ExtendDeadline(pb.ExtendDeadlineRequest(
                clue_id=i, expected_version=version, days=10, reason="r",
                request_id=new_request_id()), timeout=20), hidden)
        # Proposals: pending and decided ones of hidden clues answer as missing.
        same_as_missing(lambda i: u.clue.ReviewProposal(pb.ReviewProposalRequest(
            proposal_id=i, approve=True, comment="c", request_id=new_request_id()), timeout=20),
            [prop.id, decided.id])
        # Cases: a case the caller's unit is not in answers as a missing one, whatever is asked.
        same_as_missing(lambda i: c.get_case(u, i), [other.id])
        same_as_missing(lambda i: c.add_clue(u, i, open_.id), [other.id])
        same_as_missing(lambda i: c.remove_clue(u, i, open_.id), [other.id])
        same_as_missing(lambda i: c.add_participant(u, i, w.G1), [other.id])
        same_as_missing(lambda i: c.remove_participant(u, i, G3), [other.id])
    # Nothing changed.
    assert c.get(G3.member, pend.id).version == pend.version and c.get(G3.member, open_.id).version == 1
    assert len(c.get_case(R1.leader, jc.id).clues) == 0


def test_case_creation_refuses_in_the_request_order(c):
    """CreateJointCase decides on its clue_ids in the order listed: its first refusal is the
    first listed clue's it may not add. A hidden clue listed first answers as a missing one
    does, and one listed after a clue refused for another reason is never reached, whatever
    order the clues' rows have in their table and however lately they were written. The
    facts were read in the table's order (missing ids last): R2's leader could tell a hidden
    clue from a missing id, and see when another unit wrote its hidden clue's row."""
    w = c.w
    R2 = w.R2.leader
    v = c.submit(w.R2.member, title="R2's own")
    own = c.create_case(R2, title="R2's case", clues=[v])  # v may join no other case
    for _ in range(2):
        c.submit(w.G2.member, title="rows between")
    h = c.submit(w.G1.member, title="hidden from R2")

    def answer(ids):
        return refusal(R2.case.CreateJointCase, cs.CreateJointCaseRequest(
            title="t", clue_ids=ids, request_id=new_request_id()), timeout=20)

    for round_ in range(3):
        first_missing = answer([MISSING_ID, v.id])
        assert first_missing[0] == Code.NOT_FOUND, (round_, first_missing)
        assert answer([h.id, v.id]) == first_missing, round_
        after_v = answer([v.id, MISSING_ID])
        assert after_v[0] == Code.FAILED_PRECONDITION, (round_, after_v)
        assert answer([v.id, h.id]) == after_v, round_
        # Rows rewritten: the hidden clue moved by its owner, R2's own taken out and back in.
        if round_ == 0:
            h = c.move(w.G1.leader, h, PRELIM).clue
        elif round_ == 1:
            c.remove_clue(R2, own.id, v.id)
            c.add_clue(R2, own.id, v.id)


# ---- finding 3 -------------------------------------------------------------------------------


def test_finding3_independent_review(c):
    w = c.w
    R1, R2, G1, X1 = w.R1, w.R2, w.G1, w.X1
    second = w.new_user("R1", "LEADER", "R1-leader-2")
    own = c.move(R1.leader, c.submit(R1.member, title="R1 自有线索"), PRELIM).clue
    jc = c.create_case(R1.leader, title="R1 牵头", participants=[X1], clues=[own])
    own = c.get(R1.member, own.id)
    assert own.joint_case_id == jc.id
    # As outside the case: another ROOM must be named; R1 itself may not be.
    assert "reviewer_unit_id" in expect_status(Code.INVALID_ARGUMENT, c.move, R1.leader, own, FILED)
    assert "reviewer_unit_id" in expect_status(Code.INVALID_ARGUMENT, c.move, R1.leader, own, FILED,
                                               details={"reviewer_unit_id": R1.id})
    r = c.move(R1.leader, own, FILED, details={"reviewer_unit_id": R2.id})
    assert r.pending and r.proposal.reviewer_unit_id == R2.id
    # Neither the proposer nor another leader of the owner room reviews it.
    for u in (second, R1.leader):
        expect_status(Code.PERMISSION_DENIED, c.review, u, r.proposal.id)
    d = c.review(R2.leader, r.proposal.id, comment="同意")
    assert d.proposal.status == pb.PROPOSAL_STATUS_APPROVED and c.get(R1.member, own.id).state == FILED

    # A group's clue handed over to the case's lead room: the lead room is now its owner, and
    # the review goes to the room it names.
    g = c.move(G1.leader, c.submit(G1.member, title="G1 clue"), PRELIM).clue
    jc2 = c.create_case(R2.leader, title="R2 牵头", participants=[G1])
    c.add_clue(G1.leader, jc2.id, g.id)
    g = c.get(G1.member, g.id)
    h = c.handover(G1.leader, g, R2, reason="移交牵头室")
    assert h.owner_unit_id == R2.id and h.joint_case_id == jc2.id
    assert "reviewer_unit_id" in expect_status(Code.INVALID_ARGUMENT, c.move, R2.leader, h, FILED)
    r = c.move(R2.leader, h, FILED, details={"reviewer_unit_id": R1.id})
    assert r.proposal.reviewer_unit_id == R1.id
    expect_status(Code.PERMISSION_DENIED, c.review, w.new_user("R2", "LEADER", "R2-leader-2"), r.proposal.id)
    c.review(R1.leader, r.proposal.id)
    assert c.get(R2.member, h.id).state == FILED




# ---- retries after losing sight ------------------------------------------------------------


def test_handover_retry_answers_only_what_it_answered(c):
    # The old owner's retry of its HandOver answers the handover again, not the clue's life at
    # its new owner: a co-review the new owner raises (which makes no new version) stays out.
    w = c.w
    clue = c.move(w.G1.leader, c.submit(w.G1.member), PRELIM).clue
    req = pb.HandOverRequest(clue_id=clue.id, expected_version=clue.version, to_unit_id=w.G3.id, reason="移交",
                             request_id=new_request_id())
    first = w.G1.leader.clue.HandOver(req, timeout=20)
    assert first.owner_unit_id == w.G3.id and not first.pending_proposal
    expect_status(Code.NOT_FOUND, w.G1.leader.clue.GetClue, pb.GetClueRequest(clue_id=clue.id), timeout=20)
    proposed = c.move(w.G3.leader, first, FILED)
    assert proposed.pending and proposed.clue.version == first.version
    again = w.G1.leader.clue.HandOver(req, timeout=20)
    assert (again.id, again.version, again.owner_unit_id, again.state) == (
        first.id, first.version, first.owner_unit_id, first.state), again
    assert not again.pending_proposal, "the retry shows the new owner's co-review"
    # The new owner's own view has the proposal, and a move that makes a new version ends the
    # replay for the old owner: NOT_FOUND, as for a missing clue.
    assert w.G3.leader.clue.GetClue(pb.GetClueRequest(clue_id=clue.id), timeout=20).pending_proposal
    w.R2.leader.clue.ReviewProposal(pb.ReviewProposalRequest(proposal_id=proposed.proposal.id, approve=True,
                                                             request_id=new_request_id()), timeout=20)
    expect_status(Code.NOT_FOUND, w.G1.leader.clue.HandOver, req, timeout=20)


if __name__ == "__main__":
    harness.run_tests(dict(globals()), setup, teardown)
