"""Joint cases, notes and handover end to end: grpcio against the real clued and PostgreSQL.

The story of DESIGN.md §3 comes first, played by users of five units: a group's clue under
preliminary check joins a case led by a room that is NOT the group's liaison room, a
region's clue joins it, notes come from every side, the case's lead room (and not the
liaison room) approves filing and the transfer to judicial organs, and another clue is
handed over from one group to another. Every step checks who sees and may do what (§4:
NOT_FOUND for what the caller may not see, PERMISSION_DENIED for what it sees but may not
change). Around it: participant removal, the rules for clues joining and leaving, notes
(limits, append-only), handover rules and races, idempotent retries; and at the end every
clue's history is compared with the calls that succeeded, and every chain is recomputed here.
"""

import concurrent.futures
import hashlib
import json
import os
import sys
import threading

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chain  # noqa: E402
import harness  # noqa: E402
from harness import expect_status, new_request_id  # noqa: E402
import world  # noqa: E402
from test_ledger_pages import CountingProxy  # noqa: E402
from test_rich_errors import failure, status_of  # noqa: E402

S = harness.stubs()
pb = S.clue_pb2
cs = S.case_pb2
cm = S.common_pb2
Code = grpc.StatusCode

ACCEPTED, PRELIM, FILED, CLOSED, TRANSFERRED = (cm.CLUE_STATE_ACCEPTED, cm.CLUE_STATE_PRELIMINARY_CHECK,
                                               cm.CLUE_STATE_FILED, cm.CLUE_STATE_CLOSED,
                                               cm.CLUE_STATE_TRANSFERRED_TO_JUDICIAL)
EVIDENCE, MINUTES, INTERVIEW, OTHER = (pb.NOTE_KIND_EVIDENCE_SUMMARY, pb.NOTE_KIND_MEETING_MINUTES,
                                       pb.NOTE_KIND_INTERVIEW_RECORD, pb.NOTE_KIND_OTHER)
MISSING_ID = 987654321


class Ctx:
    """The server, the world, a database connection, and the audit events each clue and case
    should have: every helper below that changes something records the action it must add."""

    def __init__(self):
        self.actions = {}  # ("clue" | "case", id) -> [action, ...]
        self.used_keys = set()

    def log(self, kind, subject_id, *actions):
        self.actions.setdefault((kind, subject_id), []).extend(actions)

    def first_use(self, key):
        key = (key[0], key[1].lower())
        new = key not in self.used_keys
        self.used_keys.add(key)
        return new

    def sql(self, query, *args):
        with self.db.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall() if cur.description else None

    def events(self, kind, subject_id):
        return self.sql("SELECT count(*) FROM audit_events WHERE subject_type = %s AND subject_id = %s",
                        kind, subject_id)[0][0]

    # ---- ClueService

    def submit(self, user, title="线索", **kw):
        fields = dict(title=title, summary="反映某某违规插手工程项目", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
                      subject=pb.SubjectPerson(name="王某", position="局长"), host_unit="市发展改革委")
        fields.update(kw)
        c = user.clue.SubmitClue(pb.SubmitClueRequest(request_id=new_request_id(), **fields), timeout=20)
        self.log("clue", c.id, "clue.submit")
        return c

    def move(self, user, clue, target, details=None, version=None, reason="依据核查情况"):
        req = pb.RequestTransitionRequest(clue_id=clue.id, expected_version=version or clue.version, target=target,
                                          reason=reason, request_id=new_request_id(),
                                          details=pb.TransitionDetails(**(details or {})))
        r = user.clue.RequestTransition(req, timeout=20)
        self.log("clue", clue.id, "proposal.create" if r.pending else "clue.move")
        return r

    def review(self, user, proposal_id, approve=True, comment="同意"):
        r = user.clue.ReviewProposal(pb.ReviewProposalRequest(proposal_id=proposal_id, approve=approve,
                                                              comment=comment, request_id=new_request_id()), timeout=20)
        self.log("clue", r.proposal.clue_id, "proposal.approve" if approve else "proposal.reject")
        return r

    def get(self, user, clue_id):
        c = user.clue.GetClue(pb.GetClueRequest(clue_id=clue_id), timeout=20)
        if c.HasField("reporter"):
            self.log("clue", clue_id, "clue.reporter_read")
        return c

    def note(self, user, clue_id, text, kind=EVIDENCE, request_id=None):
        key = request_id or new_request_id()
        n = user.clue.AddNote(pb.AddNoteRequest(clue_id=clue_id, kind=kind, text=text, request_id=key), timeout=20)
        if self.first_use((user.id, key)):
            self.log("clue", clue_id, "note.add")
        return n

    def notes(self, user, clue_id, **kw):
        return user.clue.ListNotes(pb.ListNotesRequest(clue_id=clue_id, **kw), timeout=20)

    def handover(self, user, clue, to_unit, reason="工作需要，移交办理", version=None, request_id=None):
        key = request_id or new_request_id()
        pending = self.sql("SELECT pending_proposal_id FROM clues WHERE id = %s", clue.id)[0][0]
        r = user.clue.HandOver(pb.HandOverRequest(clue_id=clue.id, expected_version=version or clue.version,
                                                  to_unit_id=to_unit.id, reason=reason, request_id=key), timeout=20)
        if self.first_use((user.id, key)):
            self.log("clue", clue.id, *(["proposal.withdraw"] if pending else []), "clue.handover")
        return r

    def history(self, user, clue_id):
        return [e.action for e in user.clue.GetHistory(pb.GetHistoryRequest(clue_id=clue_id), timeout=20).events]

    # ---- CaseService

    def create_case(self, user, title="联合办案", participants=(), clues=(), basis="室组地联合审查", request_id=None):
        key = request_id or new_request_id()
        jc = user.case.CreateJointCase(cs.CreateJointCaseRequest(
            title=title, basis=basis, participant_unit_ids=[u.id for u in participants],
            clue_ids=[x.id for x in clues], request_id=key), timeout=20)
        if self.first_use((user.id, key)):
            self.log("case", jc.id, "case.create")
            for x in clues:
                self.log("clue", x.id, "case.add_clue")
        return jc

    def add_clue(self, user, case_id, clue_id, reason=""):
        jc = user.case.AddClueToCase(cs.AddClueToCaseRequest(case_id=case_id, clue_id=clue_id, reason=reason),
                                     timeout=20)
        self.log("clue", clue_id, "case.add_clue")
        return jc

    def remove_clue(self, user, case_id, clue_id, reason="不再并案办理"):
        jc = user.case.RemoveClueFromCase(cs.RemoveClueFromCaseRequest(case_id=case_id, clue_id=clue_id,
                                                                       reason=reason), timeout=20)
        self.log("clue", clue_id, "case.remove_clue")
        return jc

    def add_participant(self, user, case_id, unit, reason=""):
        jc = user.case.AddParticipant(cs.AddParticipantRequest(case_id=case_id, unit_id=unit.id, reason=reason),
                                      timeout=20)
        self.log("case", case_id, "case.add_participant")
        return jc

    def remove_participant(self, user, case_id, unit, reason="协作事项完成"):
        jc = user.case.RemoveParticipant(cs.RemoveParticipantRequest(case_id=case_id, unit_id=unit.id,
                                                                     reason=reason), timeout=20)
        self.log("case", case_id, "case.remove_participant")
        return jc

    def get_case(self, user, case_id):
        return user.case.GetJointCase(cs.GetJointCaseRequest(case_id=case_id), timeout=20)

    def listed_cases(self, user):
        return [x.id for x in user.case.ListJointCases(cs.ListJointCasesRequest(), timeout=20).cases]


def sees(user, clue_id):
    """GetClue answers (True) or NOT_FOUND (False); anything else fails."""
    try:
        user.clue.GetClue(pb.GetClueRequest(clue_id=clue_id), timeout=20)
        return True
    except grpc.RpcError as e:
        assert e.code() == Code.NOT_FOUND and e.details() == "clue not found", (e.code(), e.details())
        return False


def hidden_everywhere(c, user, clue_id):
    """Every read of the clue answers as for a missing clue, and no list shows it."""
    for call in (lambda i: user.clue.GetClue(pb.GetClueRequest(clue_id=i), timeout=20),
                 lambda i: user.clue.GetHistory(pb.GetHistoryRequest(clue_id=i), timeout=20),
                 lambda i: user.clue.ListNotes(pb.ListNotesRequest(clue_id=i), timeout=20),
                 lambda i: user.clue.AddNote(pb.AddNoteRequest(clue_id=i, kind=OTHER, text="x",
                                                               request_id=new_request_id()), timeout=20)):
        assert (expect_status(Code.NOT_FOUND, call, clue_id) == expect_status(Code.NOT_FOUND, call, MISSING_ID)
                == "clue not found")
    assert clue_id not in listed(user)


def listed(user):
    out, token = set(), ""
    while True:
        r = user.clue.ListClues(pb.ListCluesRequest(page_size=500, page_token=token), timeout=20)
        out |= {x.id for x in r.clues}
        if not r.next_page_token:
            return out
        token = r.next_page_token


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


# ---- the story -------------------------------------------------------------------------------


def test_story(c):
    w = c.w
    G1, G2, G3, R1, R2, X1 = w.G1, w.G2, w.G3, w.R1, w.R2, w.X1
    strangers = (G2.leader, G3.leader, G3.member, w.admin)
    assert G1.liaison_room_id == R1.id, "R1 is G1's liaison room; R2 leads the case below"

    # G1 submits a clue, with the reporter's contact details; G1's leader starts a check.
    rep = pb.ReporterContact(name="实名举报人", phone="13700000000")
    a = c.submit(G1.member, title="某局长违规插手工程招投标", reporter=rep)
    expect_status(Code.PERMISSION_DENIED, c.move, G1.member, a, PRELIM)
    a = c.move(G1.leader, a, PRELIM).clue
    assert a.state == PRELIM and a.version == 2
    for u in (R2.leader, R2.member, X1.leader, X1.member) + strangers:
        assert not sees(u, a.id), u
    assert sees(R1.member, a.id) and sees(G1.member, a.id)

    # R2's leader opens a joint case with G1 and X1 as participants. R2 does not see G1's
    # clue, so cannot bring it in; G1's leader does (a clue joins by its owner's consent).
    expect_status(Code.PERMISSION_DENIED, c.create_case, R2.member, participants=[G1, X1], clues=[a])
    expect_status(Code.NOT_FOUND, c.create_case, R2.leader, participants=[G1, X1], clues=[a])
    jc = c.create_case(R2.leader, title="某局长违纪违法问题联合审查", participants=[G1, X1])
    assert jc.id > 0 and jc.lead_unit_id == R2.id and jc.created_by == R2.leader.id
    assert list(jc.participant_unit_ids) == sorted([G1.id, X1.id])
    assert expect_status(Code.NOT_FOUND, c.add_clue, R2.leader, jc.id, a.id) == "clue not found"
    expect_status(Code.PERMISSION_DENIED, c.add_clue, G1.member, jc.id, a.id)
    jc = c.add_clue(G1.leader, jc.id, a.id, reason="同意并案")
    assert [(x.clue_id, x.state, x.owner_unit_id, x.registration_number, x.title) for x in jc.clues] == [
        (a.id, PRELIM, G1.id, a.registration_number, a.title)]
    assert jc.clues[0].stage_deadline_ms == a.stage_deadline_ms and jc.clues[0].added_at_ms >= jc.created_at_ms
    a = c.get(G1.member, a.id)
    assert a.joint_case_id == jc.id and a.version == 3, "joining a case is a change of the clue"

    # Now the case's units see the clue, never the reporter; outsiders still see nothing.
    for u in (R2.leader, R2.member, X1.leader, X1.member, G1.member, R1.leader, w.auditor):
        got = c.get(u, a.id)
        assert got.reporter_on_file and not got.HasField("reporter") and got.joint_case_id == jc.id, u
    assert c.get(G1.leader, a.id).reporter == rep
    for u in strangers:
        hidden_everywhere(c, u, a.id)
    for u in (R2.member, X1.member, G1.member, R1.member, w.auditor):
        assert a.id in listed(u), u
    # The case: its units and auditors see it; R1 (G1's liaison room only) and strangers do not.
    for u in (R2.leader, R2.member, G1.leader, G1.member, X1.member, w.auditor):
        assert c.get_case(u, jc.id) == jc, u
        assert jc.id in c.listed_cases(u), u
    for u in (R1.leader, R1.member) + strangers:
        assert expect_status(Code.NOT_FOUND, c.get_case, u, jc.id) == "joint case not found", u
        assert jc.id not in c.listed_cases(u), u
    assert expect_status(Code.NOT_FOUND, c.get_case, R2.leader, MISSING_ID) == "joint case not found"

    # X1 submits a related clue; R2 sees it once it joins the case. Only X1's leader adds it.
    b = c.submit(X1.member, title="某局长亲属公司围标串标", host_unit="某县住建局")
    for u in (R2.leader, G1.member, R1.member):
        assert not sees(u, b.id), u
    for u in (X1.member, w.auditor):
        expect_status(Code.PERMISSION_DENIED, c.add_clue, u, jc.id, b.id)
    for u in (R2.leader, R2.member, G1.leader, R1.leader, G3.leader):
        expect_status(Code.NOT_FOUND, c.add_clue, u, jc.id, b.id)
    jc = c.add_clue(X1.leader, jc.id, b.id, reason="同一问题线索并案")
    assert [x.clue_id for x in jc.clues] == [a.id, b.id] and jc.clues[1].owner_unit_id == X1.id
    for u in (R2.leader, R2.member, G1.member, X1.member, w.auditor):
        assert sees(u, b.id), u
    for u in (R1.member,) + strangers:
        assert not sees(u, b.id), u

    # Notes from every side: G1, R1 (G1's liaison room sees clue a), R2 and X1.
    texts = [(G1.member, EVIDENCE, "调取招投标文件12份，发现评标专家与投标人存在关联"),
             (R1.member, INTERVIEW, "与G1组谈话了解情况的记录"),
             (R2.leader, MINUTES, "问题会商记录：同意G1组初核意见，建议提请立案"),
             (X1.member, OTHER, "X1核实：亲属公司近三年中标7次")]
    made = [c.note(u, a.id, t, kind=k) for u, k, t in texts]
    assert [(n.author_user_id, n.author_unit_id, n.kind, n.text, n.clue_id) for n in made] == [
        (u.id, u.unit.id, k, t, a.id) for u, k, t in texts]
    nb = c.note(X1.member, b.id, "X1线索证据摘要", kind=EVIDENCE)
    for u in (G1.leader, R1.leader, R2.member, X1.leader, w.auditor):
        assert list(c.notes(u, a.id).notes) == made, u
    assert list(c.notes(G1.member, b.id).notes) == [nb]
    for u in (w.auditor, w.admin):
        expect_status(Code.PERMISSION_DENIED if u is w.auditor else Code.NOT_FOUND, c.note, u, a.id, "x")
    for u in strangers:
        hidden_everywhere(c, u, a.id)

    # G1's leader proposes filing: the case's lead room R2 reviews it, not R1 (G1's liaison
    # room), which sees the clue but may not review (PERMISSION_DENIED); strangers get NOT_FOUND.
    a = c.get(G1.member, a.id)
    r = c.move(G1.leader, a, FILED, reason="初核发现违纪问题，拟立案审查")
    assert r.pending and r.proposal.reviewer_unit_id == R2.id
    pid = r.proposal.id
    for u in (R1.leader, R1.member, X1.leader, R2.member, G1.leader, w.auditor):
        expect_status(Code.PERMISSION_DENIED, c.review, u, pid)
    for u in strangers:
        assert expect_status(Code.NOT_FOUND, c.review, u, pid) == "proposal not found"
    to_review = lambda u: {p.id for p in u.clue.ListProposals(  # noqa: E731
        pb.ListProposalsRequest(scope=pb.ListProposalsRequest.SCOPE_TO_REVIEW), timeout=20).proposals}
    assert pid in to_review(R2.leader) and pid not in to_review(R1.leader)
    # While the proposal waits, the clue cannot leave the case (its reviewer would change).
    assert "pending proposal" in expect_status(Code.FAILED_PRECONDITION, c.remove_clue, R2.leader, jc.id, a.id)
    d = c.review(R2.leader, pid, comment="同意立案")
    assert d.proposal.status == pb.PROPOSAL_STATUS_APPROVED and d.clue.state == FILED

    # The case proceeds to a transfer to judicial organs, approved by R2 again.
    r = c.move(G1.leader, d.clue, TRANSFERRED, details={"receiving_organ": "市人民检察院"})
    assert r.pending and r.proposal.reviewer_unit_id == R2.id
    expect_status(Code.PERMISSION_DENIED, c.review, R1.leader, r.proposal.id)
    d = c.review(R2.leader, r.proposal.id, comment="同意移送")
    assert d.clue.state == TRANSFERRED
    assert [(x.clue_id, x.state) for x in c.get_case(X1.member, jc.id).clues] == [(a.id, TRANSFERRED), (b.id, ACCEPTED)]
    # A transferred clue stays on the case's record and cannot be handed over.
    assert "terminal" in expect_status(Code.FAILED_PRECONDITION, c.remove_clue, R2.leader, jc.id, a.id)
    assert "TRANSFERRED_TO_JUDICIAL" in expect_status(Code.FAILED_PRECONDITION, c.handover, G1.leader, d.clue, G2)

    # X1's own clue in the case is reviewed by the lead room too: no reviewer is named.
    b = c.move(X1.leader, c.get(X1.member, b.id), PRELIM).clue
    r = c.move(X1.leader, b, FILED)
    assert r.pending and r.proposal.reviewer_unit_id == R2.id
    d = c.review(R2.leader, r.proposal.id, approve=False, comment="证据不足，继续初核")
    assert d.clue.state == PRELIM and not d.clue.pending_proposal

    # A second clue of G1 is handed over to G2: it leaves G1's sight, G2 sees and owns it.
    cl = c.submit(G1.member, title="某处长违规收受购物卡", reporter=pb.ReporterContact(name="李某", phone="13600000000"))
    assert sees(G1.member, cl.id) and not sees(G2.member, cl.id)
    expect_status(Code.PERMISSION_DENIED, c.handover, G1.member, cl, G2)
    expect_status(Code.PERMISSION_DENIED, c.handover, R1.leader, cl, G2)
    expect_status(Code.NOT_FOUND, c.handover, G2.leader, cl, G2)
    h = c.handover(G1.leader, cl, G2, reason="属G2组监督范围")
    assert h.owner_unit_id == G2.id and h.version == cl.version + 1 and h.state == ACCEPTED
    assert h.registration_number == cl.registration_number and h.registration_number.startswith("G1-")
    for u in (G1.leader, G1.member):
        hidden_everywhere(c, u, cl.id)
    got = c.get(G2.leader, cl.id)
    assert got.owner_unit_id == G2.id and got.reporter.phone == "13600000000"
    assert cl.id in listed(G2.member) and sees(R1.member, cl.id), "R1 liaises with both groups"
    assert c.move(G2.leader, got, PRELIM).clue.state == PRELIM

    # Each clue's history tells the whole story in order, to every unit that sees it.
    want_a = ["clue.submit", "clue.move", "case.add_clue", "clue.reporter_read", "note.add", "note.add",
              "note.add", "note.add", "proposal.create", "proposal.approve", "proposal.create", "proposal.approve"]
    assert c.actions[("clue", a.id)] == want_a
    for u in (G1.member, R1.member, R2.member, X1.member, w.auditor):
        assert c.history(u, a.id) == want_a, u
    want_b = ["clue.submit", "case.add_clue", "note.add", "clue.move", "proposal.create", "proposal.reject"]
    for u in (X1.member, G1.member, R2.leader):
        assert c.history(u, b.id) == want_b, u
    want_c = ["clue.submit", "clue.handover", "clue.reporter_read", "clue.move"]
    assert c.history(G2.member, cl.id) == want_c
    events = w.auditor.clue.GetHistory(pb.GetHistoryRequest(clue_id=cl.id), timeout=20).events
    ho = events[1]
    assert ho.actor_user_id == G1.leader.id and ho.reason == "属G2组监督范围"
    assert json.loads(ho.details_json)["from_unit_id"] == G1.id and json.loads(ho.details_json)["to_unit_id"] == G2.id
    joined = w.auditor.clue.GetHistory(pb.GetHistoryRequest(clue_id=a.id), timeout=20).events[2]
    assert json.loads(joined.details_json)["case_id"] == jc.id and joined.actor_user_id == G1.leader.id
    for clue_id in (a.id, b.id, cl.id):
        chain.verify_subject(c.db, "clue", clue_id)
    assert chain_actions(c, "case", jc.id) == ["case.create"]
    chain.verify_subject(c.db, "case", jc.id)


# ---- participants ----------------------------------------------------------------------------


def test_participant_removal_revokes_sight(c):
    w = c.w
    R1, X1, G3, G1 = w.R1, w.X1, w.G3, w.G1
    d = c.submit(G1.member, title="D")          # R1 sees it as G1's liaison room
    e = c.submit(G3.member, title="E")          # G3's: its leader adds it once G3 takes part
    expect_status(Code.NOT_FOUND, c.create_case, R1.leader, participants=[X1], clues=[d, e])
    expect_status(Code.NOT_FOUND, c.create_case, R1.leader, participants=[X1, G3], clues=[d, e])
    jc = c.create_case(R1.leader, participants=[X1, G3], clues=[d])
    c.add_clue(G3.leader, jc.id, e.id)
    c.note(X1.member, d.id, "X1 note while taking part")
    for u in (X1.member, X1.leader):
        assert sees(u, d.id) and sees(u, e.id)
    assert sees(G3.member, d.id)

    # Removing X1: at once it sees neither the case nor its clues, by any call.
    assert "reason is required" in expect_status(Code.INVALID_ARGUMENT, c.remove_participant, R1.leader, jc.id, X1,
                                                 reason=" ")
    for u, code in ((X1.leader, Code.PERMISSION_DENIED), (R1.member, Code.PERMISSION_DENIED),
                    (w.auditor, Code.PERMISSION_DENIED), (w.R2.leader, Code.NOT_FOUND)):
        expect_status(code, c.remove_participant, u, jc.id, X1)
    after = c.remove_participant(R1.leader, jc.id, X1)
    assert list(after.participant_unit_ids) == [G3.id]
    for u in (X1.member, X1.leader):
        hidden_everywhere(c, u, d.id)
        hidden_everywhere(c, u, e.id)
        expect_status(Code.NOT_FOUND, c.get_case, u, jc.id)
        assert jc.id not in c.listed_cases(u)
    # Removing it again, or adding the lead room, the ADMIN unit or a missing unit, is refused.
    expect_status(Code.FAILED_PRECONDITION, c.remove_participant, R1.leader, jc.id, X1)
    for unit in (R1, w.admin_unit):
        assert "unit_id" in expect_status(Code.INVALID_ARGUMENT, c.add_participant, R1.leader, jc.id, unit)
    assert expect_status(Code.NOT_FOUND, c.add_participant, R1.leader, jc.id,
                         world.Unit(MISSING_ID, "NONE", "GROUP")) == f"unit_id: unit {MISSING_ID} not found"
    expect_status(Code.ALREADY_EXISTS, c.add_participant, R1.leader, jc.id, G3)
    # Taking part again gives the sight back.
    c.add_participant(R1.leader, jc.id, X1, reason="需要X1继续协作")
    assert sees(X1.member, d.id) and c.get_case(X1.member, jc.id).id == jc.id

    # A participant that owns a member clue keeps seeing that clue as its owner after removal,
    # and only that one; the clue stays in the case, still reviewed by the lead room.
    c.remove_participant(R1.leader, jc.id, G3)
    assert sees(G3.member, e.id) and not sees(G3.member, d.id)
    expect_status(Code.NOT_FOUND, c.get_case, G3.member, jc.id)
    e = c.move(G3.leader, c.get(G3.member, e.id), PRELIM).clue
    assert e.joint_case_id == jc.id
    r = c.move(G3.leader, e, FILED)
    assert r.proposal.reviewer_unit_id == R1.id, "the lead room, not G3's liaison room R2"
    c.review(R1.leader, r.proposal.id, approve=False, comment="退回")
    assert chain_actions(c, "case", jc.id) == ["case.create", "case.remove_participant", "case.add_participant",
                                               "case.remove_participant"]
    ev = c.sql("SELECT details::jsonb, reason, actor_user_id FROM audit_events WHERE subject_type = 'case'"
               " AND subject_id = %s AND action = 'case.remove_participant' ORDER BY seq", jc.id)
    assert ev[0][0]["unit_id"] == X1.id and ev[0][1] == "协作事项完成" and ev[0][2] == R1.leader.id
    chain.verify_subject(c.db, "case", jc.id)


def test_outsider_sees_nothing(c):
    w = c.w
    x = c.submit(w.X1.member, title="outsider check")
    jc = c.create_case(w.R2.leader, participants=[w.X1])
    c.add_clue(w.X1.leader, jc.id, x.id)
    # G2 never joined: no case, no clue, no note, no history, no list entry.
    c.note(w.R2.member, x.id, "会商")
    for u in (w.G2.member, w.G2.leader):
        hidden_everywhere(c, u, x.id)
        assert (expect_status(Code.NOT_FOUND, c.get_case, u, jc.id)
                == expect_status(Code.NOT_FOUND, c.get_case, u, MISSING_ID))
        assert jc.id not in c.listed_cases(u)
        for call in (lambda: c.add_participant(u, jc.id, w.G1), lambda: c.add_clue(u, jc.id, x.id)):
            expect_status(Code.NOT_FOUND, call)
    assert c.listed_cases(w.admin) == []
    assert jc.id in c.listed_cases(w.auditor)


def test_who_may_open_a_case(c):
    w = c.w
    before = c.sql("SELECT count(*) FROM joint_cases")[0][0]
    for u in (w.R1.member, w.G1.leader, w.X1.leader, w.G1.member, w.admin):
        assert "only a LEADER of a ROOM" in expect_status(Code.PERMISSION_DENIED, c.create_case, u), u
    assert "read-only" in expect_status(Code.PERMISSION_DENIED, c.create_case, w.auditor)
    g = c.submit(w.G1.member)
    g3 = c.submit(w.G3.member)
    closed = c.move(w.G1.leader, c.submit(w.G1.member), CLOSED,
                    details={"disposal": pb.DISPOSAL_NO_FURTHER_ACTION}).clue
    pending = c.move(w.G1.leader, c.submit(w.G1.member), PRELIM).clue
    c.move(w.G1.leader, pending, FILED)
    bad = [
        (dict(title=" "), Code.INVALID_ARGUMENT, "title"),
        (dict(title="x" * 201), Code.INVALID_ARGUMENT, "title"),
        (dict(request_id="nope"), Code.INVALID_ARGUMENT, "request_id"),
        (dict(participants=[w.G1, w.G1]), Code.INVALID_ARGUMENT, "participant_unit_ids"),
        (dict(participants=[w.R1]), Code.INVALID_ARGUMENT, "participant_unit_ids"),
        (dict(participants=[w.admin_unit]), Code.INVALID_ARGUMENT, "participant_unit_ids"),
        (dict(participants=[world.Unit(MISSING_ID, "x", "GROUP")]), Code.NOT_FOUND,
         f"participant_unit_ids: unit {MISSING_ID} not found"),
        (dict(clues=[g, g]), Code.INVALID_ARGUMENT, "clue_ids"),
        (dict(clues=[g3]), Code.NOT_FOUND, "clue not found"),
        (dict(clues=[world.Unit(MISSING_ID, "x", "GROUP")]), Code.NOT_FOUND, "clue not found"),
        (dict(clues=[closed]), Code.FAILED_PRECONDITION, "terminal"),
        (dict(clues=[pending]), Code.FAILED_PRECONDITION, "pending proposal"),
        (dict(participants=[w.G3], clues=[g, closed]), Code.FAILED_PRECONDITION, f"clue {closed.id}"),
        (dict(participants=[w.G3], clues=[g, g3]), Code.NOT_FOUND, f"clue {g3.id}: clue not found"),
    ]
    for kw, code, text in bad:
        msg = expect_status(code, c.create_case, w.R1.leader, **kw)
        assert text in msg, (kw, msg)
    # A hidden clue answers exactly as a missing one.
    assert (expect_status(Code.NOT_FOUND, c.create_case, w.R1.leader, clues=[g3]).replace(str(g3.id), "N")
            == expect_status(Code.NOT_FOUND, c.create_case, w.R1.leader,
                             clues=[world.Unit(MISSING_ID, "x", "GROUP")]).replace(str(MISSING_ID), "N"))
    assert c.sql("SELECT count(*) FROM joint_cases")[0][0] == before, "refusals create nothing"

    # With G3 taking part, its leader adds its clue; a clue in another case may not join.
    jc = c.create_case(w.R1.leader, participants=[w.G3], clues=[g])
    c.add_clue(w.G3.leader, jc.id, g3.id)
    assert "already in a joint case" in expect_status(Code.FAILED_PRECONDITION, c.create_case, w.R2.leader, clues=[g3])
    assert "already in a joint case" in expect_status(Code.FAILED_PRECONDITION, c.add_clue, w.R1.leader, jc.id, g.id)

    # Idempotent: a retry returns the first case and creates nothing; the key is the user's.
    key = new_request_id()
    first = c.create_case(w.R2.leader, title="重复创建", participants=[w.X1], request_id=key)
    events = c.events("case", first.id)
    for _ in range(3):
        assert c.create_case(w.R2.leader, title="重复创建", participants=[w.X1], request_id=key.upper()) == first
    assert c.events("case", first.id) == events
    assert c.sql("SELECT count(*) FROM joint_cases WHERE title = '重复创建'")[0][0] == 1
    x = c.submit(w.R2.member)
    req = pb.RequestTransitionRequest(clue_id=x.id, expected_version=1, target=PRELIM, reason="r", request_id=key)
    assert "request_id" in expect_status(Code.INVALID_ARGUMENT, w.R2.leader.clue.RequestTransition, req, timeout=20)
    other = c.create_case(w.R1.leader, title="重复创建", request_id=key)
    assert other.id != first.id

    # Concurrent retries of one creation: one case.
    key = new_request_id()
    barrier = threading.Barrier(6)

    def racer(_):
        raw, ch = w.R2.leader.new_channel()
        try:
            stub = S.case_pb2_grpc.CaseServiceStub(ch)
            stub.ListJointCases(cs.ListJointCasesRequest(), timeout=20)
            barrier.wait()
            return stub.CreateJointCase(cs.CreateJointCaseRequest(title="并发创建", participant_unit_ids=[w.G3.id],
                                                                  request_id=key), timeout=30).id
        finally:
            raw.close()

    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        ids = set(ex.map(racer, range(6)))
    assert len(ids) == 1, ids
    c.log("case", ids.pop(), "case.create")


def test_clues_joining_and_leaving(c):
    w = c.w
    R2, X1, G3 = w.R2, w.X1, w.G3
    jc = c.create_case(R2.leader, participants=[X1])
    x = c.move(X1.leader, c.submit(X1.member), PRELIM).clue
    # Joining bumps the version: a move made against the old version is ABORTED.
    assert expect_status(Code.NOT_FOUND, c.add_clue, R2.leader, jc.id, x.id) == "clue not found"
    jc = c.add_clue(X1.leader, jc.id, x.id)
    assert c.get(X1.member, x.id).version == x.version + 1
    assert "version" in expect_status(Code.ABORTED, c.move, X1.leader, x, CLOSED, details={"finding": "f"})
    x = c.get(X1.member, x.id)
    # With a proposal pending, the clue cannot leave; once decided it can, by R2's leader (or
    # X1's, see test_insider.py) only.
    r = c.move(X1.leader, x, FILED)
    assert r.proposal.reviewer_unit_id == R2.id
    assert "pending proposal" in expect_status(Code.FAILED_PRECONDITION, c.remove_clue, R2.leader, jc.id, x.id)
    c.review(R2.leader, r.proposal.id, approve=False)
    for u in (X1.member, R2.member, w.auditor):
        expect_status(Code.PERMISSION_DENIED, c.remove_clue, u, jc.id, x.id)
    assert "reason is required" in expect_status(Code.INVALID_ARGUMENT, c.remove_clue, R2.leader, jc.id, x.id,
                                                 reason="")
    after = c.remove_clue(R2.leader, jc.id, x.id, reason="另案处理")
    assert len(after.clues) == 0
    x2 = c.get(X1.member, x.id)
    assert x2.joint_case_id == 0 and x2.version == x.version + 1
    assert not sees(R2.member, x.id), "the lead room lost its sight with the clue leaving"
    ev = c.sql("SELECT details::jsonb, reason FROM audit_events WHERE subject_type = 'clue' AND subject_id = %s"
               " AND action = 'case.remove_clue'", x.id)
    assert ev == [({"case_id": jc.id, "lead_unit_id": R2.id, "state": "PRELIMINARY_CHECK", "version": x2.version},
                   "另案处理")]
    # Gone: removing again answers NOT_FOUND (R2 no longer sees it); a visible clue outside
    # the case answers FAILED_PRECONDITION.
    assert expect_status(Code.NOT_FOUND, c.remove_clue, R2.leader, jc.id, x.id) == "clue not found"
    own = c.submit(R2.member)
    assert "not in this joint case" in expect_status(Code.FAILED_PRECONDITION, c.remove_clue, R2.leader, jc.id, own.id)
    # A clue of a unit outside the case is hidden from the lead room; a missing case is NOT_FOUND.
    g3 = c.submit(G3.member)
    assert sees(R2.member, g3.id), "R2 is G3's liaison room"
    c.add_clue(R2.leader, jc.id, g3.id)
    g1 = c.submit(w.G1.member)
    assert expect_status(Code.NOT_FOUND, c.add_clue, R2.leader, jc.id, g1.id) == "clue not found"
    assert expect_status(Code.NOT_FOUND, c.add_clue, R2.leader, MISSING_ID, g3.id) == "joint case not found"
    # Terminal clues do not join.
    done = c.move(X1.leader, c.submit(X1.member), CLOSED, details={"disposal": pb.DISPOSAL_SHELVED}).clue
    assert expect_status(Code.NOT_FOUND, c.add_clue, R2.leader, jc.id, done.id) == "clue not found"
    assert "terminal" in expect_status(Code.FAILED_PRECONDITION, c.add_clue, X1.leader, jc.id, done.id)


def test_a_case_holds_at_most_1000_clues(c):
    """200 clues open the case, 801 more are added at once: exactly 800 join, and the one past
    the bound is FAILED_PRECONDITION, its clue unchanged and no event written."""
    w = c.w
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        clues = list(ex.map(lambda i: c.submit(w.G3.member, title=f"线索{i}"), range(1001)))
    jc = c.create_case(w.R2.leader, participants=[w.G3], clues=clues[:200])
    assert len(jc.clues) == 200

    def add(x):
        try:
            c.add_clue(w.R2.leader, jc.id, x.id)
            return None
        except grpc.RpcError as e:
            return x, e.code(), e.details()

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        refused = [r for r in ex.map(add, clues[200:]) if r is not None]
    assert len(refused) == 1, [r[1:] for r in refused[:5]]
    x, code, msg = refused[0]
    assert code == Code.FAILED_PRECONDITION and "holds 1000 clues, the most one case may hold" in msg, (code, msg)
    assert len(c.get_case(w.R2.leader, jc.id).clues) == 1000
    assert c.get(w.G3.member, x.id).version == x.version and c.get(w.G3.member, x.id).joint_case_id == 0
    assert c.sql("SELECT count(*) FROM audit_events WHERE subject_type = 'clue' AND subject_id = %s"
                 " AND action = 'case.add_clue'", x.id)[0][0] == 0


# ---- what a case costs to read ------------------------------------------------------------

BASIS = "案情" * 3333  # 19,998 bytes: a basis near its 20,000-byte limit


class Counted:
    """A second clued on the test's database behind a CountingProxy (test_ledger_pages), which
    counts the bytes PostgreSQL sends it."""

    def __init__(self, c):
        pg = harness.Postgres.get()
        self.proxy = CountingProxy(pg.host, pg.port)
        self.srv = harness.Clued(self.proxy.url(c.dbname)).start(migrate=False)
        self.channels = []

    def case(self, user):
        """A CaseService stub of user's on this clued."""
        ch = grpc.intercept_channel(grpc.insecure_channel(self.srv.addr), world._Auth(user.token))
        self.channels.append(ch)
        return S.case_pb2_grpc.CaseServiceStub(ch)

    def sent(self, fn, *args, **kw):
        """fn's answer, and the bytes PostgreSQL sent clued meanwhile."""
        with self.proxy.lock:
            before = self.proxy.received
        out = fn(*args, **kw)
        with self.proxy.lock:
            return out, self.proxy.received - before

    def close(self):
        for ch in self.channels:
            ch.close()
        self.srv.stop()
        self.proxy.close()


def case_pages(list_cases):
    """Every page of ListJointCases: [[case, ...], ...], first to last."""
    out, token = [], ""
    while True:
        r = list_cases(cs.ListJointCasesRequest(page_token=token), timeout=60)
        out.append(list(r.cases))
        assert r.ByteSize() < 2 * 2**20 + 100000, r.ByteSize()  # about 2 MiB and one case
        if not r.next_page_token:
            return out
        assert r.cases and len(out) < 100, "a page without cases, or pages without end"
        token = r.next_page_token


def case_clue_ids(c):
    """{case id: [its clue ids in the order they joined]}, from the database."""
    out = {}
    for case_id, clue_id in c.sql("SELECT cc.case_id, cc.clue_id FROM case_clues cc JOIN clues x ON x.id = cc.clue_id"
                                  " AND x.joint_case_id = cc.case_id ORDER BY cc.added_at, cc.clue_id"):
        out.setdefault(case_id, []).append(clue_id)
    return out


def test_a_large_case_reads_back_whole_with_its_basis_sent_once(c):
    """A case of 250 clues with a basis of 19,998 bytes: GetJointCase, ListJointCases and the
    answer of a change carry its fields, every participant and every clue once, in the order
    they joined. PostgreSQL sends clued the basis once: before, once per clue (about 5 MB for a
    GetJointCase whose reply is about 20 KB and 250 clues)."""
    w = c.w
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        clues = list(ex.map(lambda i: c.submit(w.G3.member, title=f"大案线索{i}"), range(250)))
    first, rest = clues[:200], sorted(clues[200:], key=lambda x: x.id)
    jc = c.create_case(w.R2.leader, title="大案", basis=BASIS, participants=[w.X1, w.G3], clues=first)
    for x in rest:
        last = c.add_clue(w.R2.leader, jc.id, x.id)
    order = sorted(x.id for x in first) + [x.id for x in rest]  # those joined at once by id
    by_id = {x.id: x for x in clues}
    parts = sorted([w.X1, w.G3], key=lambda u: u.id)

    def whole(got):
        assert (got.id, got.title, got.basis, got.created_at_ms) == (jc.id, "大案", BASIS, jc.created_at_ms)
        assert (got.lead_unit_id, got.lead_unit_code, got.lead_unit_name) == (w.R2.id, "R2", "room R2")
        assert (got.created_by, got.created_by_name) == (w.R2.leader.id, w.R2.leader.name)
        assert list(got.participant_unit_ids) == [u.id for u in parts]
        assert list(got.participant_unit_codes) == [u.code for u in parts]
        assert [x.clue_id for x in got.clues] == order
        for x in got.clues:
            want = by_id[x.clue_id]
            assert (x.registration_number, x.title, x.owner_unit_id, x.owner_unit_code) == (
                want.registration_number, want.title, w.G3.id, "G3")
            assert x.added_at_ms > 0

    whole(last)
    got = c.get_case(w.R2.leader, jc.id)
    whole(got)
    for u in (w.G3.member, w.X1.leader, w.auditor):
        assert c.get_case(u, jc.id) == got
        assert [x for p in case_pages(u.case.ListJointCases) for x in p if x.id == jc.id] == [got]

    counted = Counted(c)
    try:
        lead = counted.case(w.R2.leader)
        lead.GetJointCase(cs.GetJointCaseRequest(case_id=jc.id), timeout=60)  # connections made, statements prepared
        again, sent = counted.sent(lead.GetJointCase, cs.GetJointCaseRequest(case_id=jc.id), timeout=60)
        assert again == got
        # The basis once, and a row of a few hundred bytes per clue: not 250 bases (5 MB).
        assert sent < 2 * len(BASIS.encode()) + 250 * 400, sent
        # A change answers with the case read the same way (the last clue out and in again).
        x = rest[-1]
        out, sent = counted.sent(lead.RemoveClueFromCase, cs.RemoveClueFromCaseRequest(
            case_id=jc.id, clue_id=x.id, reason="调整"), timeout=60)
        assert [y.clue_id for y in out.clues] == order[:-1] and out.basis == BASIS
        assert sent < 2 * len(BASIS.encode()) + 250 * 400, sent
        out, sent = counted.sent(lead.AddClueToCase, cs.AddClueToCaseRequest(case_id=jc.id, clue_id=x.id), timeout=60)
        c.log("clue", x.id, "case.remove_clue", "case.add_clue")
        whole(out)
        assert sent < 2 * len(BASIS.encode()) + 250 * 400, sent
    finally:
        counted.close()


def test_case_pages_give_each_case_once_and_read_about_a_page(c):
    """260 more cases with a basis of 19,998 bytes (about 5 MB), ten of them with clues: the
    pages of ListJointCases give an AUDITOR every case, and a participant its own, once each,
    newest first and whole; a page ends at about 2 MiB, and PostgreSQL sends clued about one
    page and one case for it. Before, a page read up to 501 whole cases, here every case (and
    the basis once per clue)."""
    w = c.w
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        clues = list(ex.map(lambda i: c.submit(w.G1.member, title=f"分页线索{i}"), range(30)))  # R1 liaises with G1
        made = list(ex.map(lambda i: c.create_case(w.R1.leader, title=f"分页案件{i}", basis=BASIS, participants=[w.G2],
                                                   clues=clues[3 * i:3 * i + 3] if i < 10 else ()), range(260)))
    made = {jc.id: jc for jc in made}
    joined = case_clue_ids(c)
    for user, want in ((w.auditor, [i for (i,) in c.sql("SELECT id FROM joint_cases ORDER BY id DESC")]),
                       (w.G2.member, [i for (i,) in c.sql("SELECT id FROM joint_cases WHERE id IN"
                                                          " (SELECT joint_cases_of_unit(%s)) ORDER BY id DESC",
                                                          w.G2.id)])):
        pages = case_pages(user.case.ListJointCases)
        got = [x for p in pages for x in p]
        assert [x.id for x in got] == want, (user, len(got), len(want))
        assert len(pages) >= 3, [len(p) for p in pages]
        for x in got:
            assert [y.clue_id for y in x.clues] == joined.get(x.id, []), x.id
            if x.id in made:
                assert (x.title, x.basis, list(x.participant_unit_ids)) == (made[x.id].title, BASIS, [w.G2.id])
                assert x.created_by_name == w.R1.leader.name and x.lead_unit_code == "R1"
        for x in got[:3] + [x for x in got if x.clues][:3] + got[-3:]:
            assert c.get_case(user, x.id) == x

    counted = Counted(c)
    try:
        for user in (w.auditor, w.G2.member):
            stub = counted.case(user)
            stub.ListJointCases(cs.ListJointCasesRequest(), timeout=60)  # connections made, statements prepared
            r, sent = counted.sent(stub.ListJointCases, cs.ListJointCasesRequest(), timeout=60)
            assert r.next_page_token and r.cases[0].id == max(made)
            # About 2 MiB and the case that ends the page, not every case (more than 5 MB).
            assert sent < 2**21 + 300000, (user, sent, len(r.cases))
            r, sent = counted.sent(stub.ListJointCases, cs.ListJointCasesRequest(page_token=r.next_page_token),
                                   timeout=60)
            assert sent < 2**21 + 300000, (user, sent, len(r.cases))
    finally:
        counted.close()


def test_a_case_takes_at_most_64_participants(c):
    """CreateJointCase names at most 64 participants, and AddParticipant keeps the same bound
    under the case's lock: four additions at once to a case of 62 make it 64, the other two are
    FAILED_PRECONDITION, nothing written; a unit removed makes room for one more. Before,
    AddParticipant took a case past 64."""
    w = c.w
    regions = [w.admin.admin.CreateUnit(S.admin_pb2.CreateUnitRequest(
        kind=cm.UNIT_KIND_REGION, code=f"Z{i:02d}", name=f"参与区{i:02d}"), timeout=20) for i in range(66)]
    assert "more than 64" in expect_status(Code.INVALID_ARGUMENT, c.create_case, w.R1.leader, participants=regions[:65])
    jc = c.create_case(w.R1.leader, participants=regions[:62])

    def add(u):
        # A call that waited past the lock timeout (a loaded machine) is ABORTED, nothing
        # written: retried, as a client does.
        for _ in range(5):
            try:
                return c.add_participant(w.R1.leader, jc.id, u)
            except grpc.RpcError as e:
                if e.code() != Code.ABORTED:
                    return e
        return e

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        out = list(ex.map(add, regions[62:66]))
    refused = [e for e in out if isinstance(e, grpc.RpcError)]
    assert len(refused) == 2, out
    msg = f"joint case {jc.id} has 64 participant units, the most one case may have"
    for e in refused:
        assert (e.code(), e.details()) == (Code.FAILED_PRECONDITION, msg), (e.code(), e.details())
    taking_part = set(c.get_case(w.R1.leader, jc.id).participant_unit_ids)
    out_of_it = [u for u in regions[62:66] if u.id not in taking_part]
    code, text, raw = failure(c.add_participant, w.R1.leader, jc.id, out_of_it[0])
    pre = status_of(code, text, raw)["google.rpc.PreconditionFailure"][0].violations[0]
    assert (code, pre.type, pre.subject) == (Code.FAILED_PRECONDITION, "PARTICIPATION", "too many participants")
    # A unit that takes part is still ALREADY_EXISTS.
    expect_status(Code.ALREADY_EXISTS, c.add_participant, w.R1.leader, jc.id, regions[0])
    now = c.get_case(w.R1.leader, jc.id)
    assert len(now.participant_unit_ids) == 64
    assert chain_actions(c, "case", jc.id) == ["case.create"] + ["case.add_participant"] * 2
    c.remove_participant(w.R1.leader, jc.id, regions[0])
    left = [u for u in regions[62:] if u.id not in now.participant_unit_ids]
    assert len(c.add_participant(w.R1.leader, jc.id, left[0]).participant_unit_ids) == 64
    expect_status(Code.FAILED_PRECONDITION, c.add_participant, w.R1.leader, jc.id, left[1])


def test_a_retry_by_a_unit_removed_since_answers_as_a_fresh_call(c):
    """G3's leader adds G3's clue to a case G3 takes part in, with a request_id, and the lead
    room removes G3. The retry answers NOT_FOUND "joint case not found", exactly as a fresh call
    and a missing case do, and writes nothing. Before, it answered OK with a case holding only
    its id. The owner's leader, who may take its clue out of a case it does not see, still gets
    the case's id, from the first call and from its retry."""
    w = c.w
    x = c.submit(w.G3.member, title="重试线索")
    jc = c.create_case(w.R1.leader, participants=[w.G3])
    add = cs.AddClueToCaseRequest(case_id=jc.id, clue_id=x.id, reason="并案", request_id=new_request_id())
    first = w.G3.leader.case.AddClueToCase(add, timeout=20)
    c.log("clue", x.id, "case.add_clue")
    assert [y.clue_id for y in first.clues] == [x.id]
    assert w.G3.leader.case.AddClueToCase(add, timeout=20) == first
    c.remove_participant(w.R1.leader, jc.id, w.G3)
    events = c.events("clue", x.id)

    def fresh_add(case_id):
        return w.G3.leader.case.AddClueToCase(cs.AddClueToCaseRequest(
            case_id=case_id, clue_id=x.id, reason="并案", request_id=new_request_id()), timeout=20)

    retry = failure(w.G3.leader.case.AddClueToCase, add, timeout=20)
    assert retry[:2] == (Code.NOT_FOUND, "joint case not found"), retry[:2]
    assert retry == failure(fresh_add, jc.id) == failure(fresh_add, MISSING_ID)
    assert retry == failure(c.get_case, w.G3.leader, jc.id)
    assert c.events("clue", x.id) == events
    assert c.sql("SELECT joint_case_id FROM clues WHERE id = %s", x.id) == [(jc.id,)]

    rm = cs.RemoveClueFromCaseRequest(case_id=jc.id, clue_id=x.id, reason="收回本单位线索", request_id=new_request_id())
    out = w.G3.leader.case.RemoveClueFromCase(rm, timeout=20)
    c.log("clue", x.id, "case.remove_clue")
    assert out == cs.JointCase(id=jc.id)
    assert w.G3.leader.case.RemoveClueFromCase(rm, timeout=20) == out
    assert c.events("clue", x.id) == events + 1


# ---- notes -----------------------------------------------------------------------------------


def test_notes(c):
    w = c.w
    x = c.submit(w.G2.member)
    # Kind and text are required; the text is at most 64 KiB of UTF-8 after trimming.
    for kind, text, field in ((pb.NOTE_KIND_UNSPECIFIED, "t", "kind"), (9, "t", "kind"), (EVIDENCE, " \n ", "text"),
                              (EVIDENCE, "a" * 65537, "text"), (EVIDENCE, "证" * 21846, "text"),
                              (EVIDENCE, "bell\x07", "text")):
        msg = expect_status(Code.INVALID_ARGUMENT, c.note, w.G2.member, x.id, text, kind=kind)
        assert field in msg, msg
    big = c.note(w.G2.member, x.id, "  " + "证" * 21845 + "a  ", kind=MINUTES)
    assert len(big.text.encode()) == 65536 and big.text.startswith("证"), "stored trimmed, limit inclusive"
    assert "65536" in expect_status(Code.INVALID_ARGUMENT, c.note, w.G2.member, x.id, "b" * 65537)
    small = c.note(w.R1.member, x.id, "多行\n记录\t一", kind=INTERVIEW)
    assert small.author_unit_id == w.R1.id and small.created_at_ms > 0 and small.id > big.id
    # Who may add: anyone who sees the clue but auditors and admins.
    expect_status(Code.PERMISSION_DENIED, c.note, w.auditor, x.id, "x")
    for u in (w.admin, w.G1.leader, w.R2.member, w.X1.member):
        expect_status(Code.NOT_FOUND, c.note, u, x.id, "x")
    # Idempotent: the retry returns the first note.
    key = new_request_id()
    n1 = c.note(w.G2.leader, x.id, "会商纪要", kind=MINUTES, request_id=key)
    assert c.note(w.G2.leader, x.id, "会商纪要", kind=MINUTES, request_id=key) == n1
    other = c.submit(w.G2.member)
    assert "request_id" in expect_status(Code.INVALID_ARGUMENT, c.note, w.G2.leader, other.id, "x", request_id=key)
    # The audit event has the length and hash of the text, not the text.
    ev = c.sql("SELECT details::jsonb FROM audit_events WHERE subject_type = 'clue' AND subject_id = %s"
               " AND action = 'note.add' ORDER BY seq", x.id)
    d = ev[0][0]
    assert d["note_id"] == big.id and d["kind"] == "MEETING_MINUTES" and d["text_bytes"] == 65536
    assert d["text_sha256"] == hashlib.sha256(big.text.encode()).hexdigest()
    assert c.sql("SELECT count(*) FROM audit_events WHERE details LIKE %s", "%证证证%")[0][0] == 0
    # Paging: oldest first, page_size and a text budget of about 2 MiB.
    for i in range(5):
        c.note(w.G2.member, x.id, f"第{i}条")
    all_ids = [n.id for n in c.notes(w.G2.member, x.id, page_size=500).notes]
    assert all_ids == sorted(all_ids) and len(all_ids) == 8
    got, after = [], 0
    while True:
        r = c.notes(w.G2.member, x.id, page_size=3, after_note_id=after)
        got += [n.id for n in r.notes]
        if not r.more:
            break
        after = r.notes[-1].id
    assert got == all_ids
    many = c.submit(w.G2.member)
    for i in range(40):
        c.note(w.G2.member, many.id, f"{i}" + "x" * 65000)
    r = c.notes(w.G2.member, many.id, page_size=500)
    assert r.more and 30 <= len(r.notes) < 40 and sum(len(n.text) for n in r.notes) <= 2 << 20
    rest = c.notes(w.G2.member, many.id, page_size=500, after_note_id=r.notes[-1].id)
    assert not rest.more and len(r.notes) + len(rest.notes) == 40
    expect_status(Code.INVALID_ARGUMENT, c.notes, w.G2.member, x.id, page_size=-1)
    expect_status(Code.INVALID_ARGUMENT, c.notes, w.G2.member, x.id, after_note_id=-1)


def test_notes_are_append_only(c):
    w = c.w
    x = c.submit(w.G1.member)
    n = c.note(w.G1.member, x.id, "原始记录")
    import psycopg2

    for stmt in ("UPDATE notes SET text = 'changed' WHERE id = %s",
                 "UPDATE notes SET created_at = now() WHERE id = %s",
                 "UPDATE notes SET owner_unit = (SELECT id FROM units WHERE code = 'G2') WHERE id = %s",
                 "DELETE FROM notes WHERE id = %s"):
        try:
            c.sql(stmt, n.id)
        except psycopg2.Error as e:
            assert e.pgcode == "42501" and "append-only" in str(e), e
        else:
            raise AssertionError(f"{stmt} was allowed")
    try:
        c.sql("TRUNCATE notes CASCADE")
    except psycopg2.Error as e:
        assert e.pgcode == "42501"
    else:
        raise AssertionError("TRUNCATE was allowed")
    assert list(c.notes(w.G1.member, x.id).notes) == [n]


# ---- handover --------------------------------------------------------------------------------


def test_handover_rules(c):
    w = c.w
    G1, G2 = w.G1, w.G2
    x = c.submit(G1.member)
    bad = [(dict(to_unit=w.admin_unit), Code.INVALID_ARGUMENT, "GROUP, ROOM or REGION"),
           (dict(to_unit=G1), Code.INVALID_ARGUMENT, "already the owner"),
           (dict(to_unit=world.Unit(MISSING_ID, "x", "GROUP")), Code.NOT_FOUND, f"unit {MISSING_ID} not found"),
           (dict(to_unit=world.Unit(0, "x", "GROUP")), Code.INVALID_ARGUMENT, "to_unit_id is required"),
           (dict(to_unit=G2, reason=" "), Code.INVALID_ARGUMENT, "reason is required"),
           (dict(to_unit=G2, request_id="x"), Code.INVALID_ARGUMENT, "request_id"),
           (dict(to_unit=G2, version=7), Code.ABORTED, "version 1")]
    for kw, code, text in bad:
        to = kw.pop("to_unit")
        msg = expect_status(code, c.handover, G1.leader, x, to, **kw)
        assert text in msg, (kw, msg)
    for u, code in ((G1.member, Code.PERMISSION_DENIED), (w.R1.leader, Code.PERMISSION_DENIED),
                    (w.auditor, Code.PERMISSION_DENIED), (G2.leader, Code.NOT_FOUND), (w.R2.leader, Code.NOT_FOUND),
                    (w.admin, Code.NOT_FOUND)):
        expect_status(code, c.handover, u, x, G2)
    # A stranger learns nothing, not even about a missing target.
    missing = world.Unit(MISSING_ID, "x", "GROUP")
    assert expect_status(Code.NOT_FOUND, c.handover, G2.leader, x, missing) == "clue not found"
    assert c.events("clue", x.id) == 1
    # Only ACCEPTED and PRELIMINARY_CHECK clues move; closed, filed and transferred ones do not.
    closed = c.move(G1.leader, c.submit(G1.member), CLOSED, details={"disposal": pb.DISPOSAL_SHELVED}).clue
    filed = c.move(G1.leader, c.submit(G1.member), PRELIM).clue
    filed = c.review(w.R1.leader, c.move(G1.leader, filed, FILED).proposal.id).clue
    transferred = c.review(w.R1.leader, c.move(G1.leader, filed, TRANSFERRED,
                                               details={"receiving_organ": "检察院"}).proposal.id).clue
    filed = c.move(G1.leader, c.submit(G1.member), PRELIM).clue
    filed = c.review(w.R1.leader, c.move(G1.leader, filed, FILED).proposal.id).clue
    for cl, name in ((closed, "CLOSED"), (filed, "FILED"), (transferred, "TRANSFERRED_TO_JUDICIAL")):
        msg = expect_status(Code.FAILED_PRECONDITION, c.handover, G1.leader, cl, G2)
        assert name in msg and "ACCEPTED or PRELIMINARY_CHECK" in msg, msg
    # Rooms and regions are targets too.
    y = c.handover(G1.leader, c.submit(G1.member), w.X1)
    assert y.owner_unit_id == w.X1.id and sees(w.X1.member, y.id) and not sees(w.R1.member, y.id)


def test_handover_withdraws_pending_proposal(c):
    w = c.w
    G1, G2 = w.G1, w.G2
    x = c.submit(G1.member, reporter=pb.ReporterContact(name="某人", email="r@example.cn"))
    c.note(G1.member, x.id, "G1 的记录")
    x = c.move(G1.leader, x, PRELIM).clue
    r = c.move(G1.leader, x, FILED)
    assert r.pending and r.proposal.reviewer_unit_id == w.R1.id
    h = c.handover(G1.leader, x, G2, reason="改由G2组办理")
    assert h.owner_unit_id == G2.id and not h.pending_proposal and h.state == PRELIM and h.version == x.version + 1
    assert h.stage_deadline_ms == x.stage_deadline_ms, "the stage and its deadline stay"
    props = w.auditor.clue.ListProposals(pb.ListProposalsRequest(clue_id=x.id, include_decided=True), timeout=20)
    assert [(p.id, p.status) for p in props.proposals] == [(r.proposal.id, pb.PROPOSAL_STATUS_WITHDRAWN)]
    assert props.proposals[0].decided_at_ms > 0
    assert "already decided" in expect_status(Code.FAILED_PRECONDITION, c.review, w.R1.leader, r.proposal.id)
    # Two events, withdrawal first; every clue-scoped row now belongs to G2.
    hist = w.auditor.clue.GetHistory(pb.GetHistoryRequest(clue_id=x.id), timeout=20).events
    assert [e.action for e in hist][-2:] == ["proposal.withdraw", "clue.handover"]
    assert (hist[-2].from_state, hist[-2].to_state) == (PRELIM, FILED)
    assert json.loads(hist[-2].details_json)["proposal_id"] == r.proposal.id
    assert json.loads(hist[-1].details_json)["withdrawn_proposal_id"] == r.proposal.id
    owners = c.sql("SELECT (SELECT array_agg(DISTINCT owner_unit) FROM proposals WHERE clue_id = %s),"
                   " (SELECT array_agg(DISTINCT owner_unit) FROM notes WHERE clue_id = %s),"
                   " (SELECT array_agg(DISTINCT owner_unit) FROM clue_requests WHERE clue_id = %s),"
                   " (SELECT owner_unit FROM clue_reporters WHERE clue_id = %s),"
                   " (SELECT reg_unit FROM clues WHERE id = %s)", x.id, x.id, x.id, x.id, x.id)[0]
    assert owners == ([G2.id], [G2.id], [G2.id], G2.id, G1.id)
    assert c.get(G2.leader, x.id).reporter.email == "r@example.cn"
    hidden_everywhere(c, G1.leader, x.id)
    # G2 proposes again; its liaison room R1 reviews.
    x = c.get(G2.member, x.id)
    assert c.move(G2.leader, x, FILED).proposal.reviewer_unit_id == w.R1.id


def test_handover_idempotent_and_in_case(c):
    w = c.w
    G1, G2 = w.G1, w.G2
    x = c.submit(G1.member)
    key = new_request_id()
    first = c.handover(G1.leader, x, G2, request_id=key)
    # G1 no longer sees the clue, but a retry returns the handover's result while unchanged.
    assert not sees(G1.leader, x.id)
    again = c.handover(G1.leader, x, G2, request_id=key)
    assert again == first
    assert c.events("clue", x.id) == 2
    c.move(G2.leader, first, PRELIM)
    expect_status(Code.NOT_FOUND, c.handover, G1.leader, x, G2, request_id=key)
    # A member clue stays in its case when handed over; its new owner sees it as owner, the
    # old owner as a unit of the case.
    y = c.submit(G1.member)
    jc = c.create_case(w.R2.leader, participants=[G1])
    c.add_clue(G1.leader, jc.id, y.id)
    y = c.get(G1.member, y.id)
    h = c.handover(G1.leader, y, G2)
    assert h.joint_case_id == jc.id and sees(G1.member, y.id) and sees(G2.member, y.id)
    assert [(cc.clue_id, cc.owner_unit_id) for cc in c.get_case(w.R2.member, jc.id).clues] == [(y.id, G2.id)]
    assert c.sql("SELECT owner_unit FROM case_clues WHERE clue_id = %s", y.id)[0][0] == G2.id
    expect_status(Code.NOT_FOUND, c.get_case, G2.member, jc.id)
    expect_status(Code.PERMISSION_DENIED, c.move, G1.leader, c.get(G1.member, y.id), PRELIM)


def test_handover_races_move(c):
    """A handover and a move of the same clue from two connections: one wins each time."""
    w = c.w
    G1, G2 = w.G1, w.G2
    outcomes = {"handover": 0, "move": 0}
    losers = {}
    for i in range(20):
        x = c.submit(G1.member, title=f"race {i}")
        barrier = threading.Barrier(2)

        def hand_over():
            raw, ch = G1.leader.new_channel()
            try:
                stub = S.clue_pb2_grpc.ClueServiceStub(ch)
                stub.GetClue(pb.GetClueRequest(clue_id=x.id), timeout=20)
                barrier.wait()
                return stub.HandOver(pb.HandOverRequest(clue_id=x.id, expected_version=1, to_unit_id=G2.id,
                                                        reason="移交", request_id=new_request_id()), timeout=30)
            finally:
                raw.close()

        def move():
            raw, ch = G1.leader.new_channel()
            target, details = (PRELIM, {}) if i % 2 else (CLOSED, {"disposal": pb.DISPOSAL_SHELVED})
            try:
                stub = S.clue_pb2_grpc.ClueServiceStub(ch)
                stub.GetClue(pb.GetClueRequest(clue_id=x.id), timeout=20)
                barrier.wait()
                return stub.RequestTransition(pb.RequestTransitionRequest(
                    clue_id=x.id, expected_version=1, target=target, reason="r", request_id=new_request_id(),
                    details=pb.TransitionDetails(**details)), timeout=30)
            finally:
                raw.close()

        def run(fn):
            try:
                return Code.OK, fn()
            except grpc.RpcError as e:
                return e.code(), e.details()

        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            h, m = ex.submit(run, hand_over), ex.submit(run, move)
            h, m = h.result(), m.result()
        assert [h[0], m[0]].count(Code.OK) == 1, (h, m)
        loser = m if h[0] == Code.OK else h
        losers[loser[0].name] = losers.get(loser[0].name, 0) + 1
        if h[0] == Code.OK:
            outcomes["handover"] += 1
            c.log("clue", x.id, "clue.handover")
            # The move lost on the version; or, when it read the clue only after the handover
            # committed, on G1 no longer seeing the clue at all (§4: NOT_FOUND).
            assert m[0] in (Code.ABORTED, Code.FAILED_PRECONDITION, Code.NOT_FOUND), m
            assert c.sql("SELECT owner_unit, version, state FROM clues WHERE id = %s", x.id)[0] == (
                G2.id, 2, "ACCEPTED")
        else:
            outcomes["move"] += 1
            c.log("clue", x.id, "clue.move")
            assert h[0] in (Code.ABORTED, Code.FAILED_PRECONDITION), h
            assert c.sql("SELECT owner_unit, version FROM clues WHERE id = %s", x.id)[0] == (G1.id, 2)
        assert c.events("clue", x.id) == 2, "exactly one event besides the submission"
    print(f"  races won: {outcomes}; losers answered: {losers}", flush=True)


# ---- audit -----------------------------------------------------------------------------------


def chain_actions(c, kind, subject_id):
    return [ev["action"] for ev in chain.events(c.db, kind, subject_id)]


def test_zz_audit_trail(c):
    """Runs last: every clue and case has exactly the events of the calls that succeeded
    above, in that order, and every chain verifies when recomputed here."""
    subjects = c.sql("SELECT DISTINCT subject_type, subject_id FROM audit_events WHERE subject_type IN ('clue', 'case')")
    assert {(k, i) for k, i in subjects} == set(c.actions), "every subject changed above, and no other"
    for (kind, subject_id), want in sorted(c.actions.items()):
        assert chain_actions(c, kind, subject_id) == want, (kind, subject_id)
        chain.verify_subject(c.db, kind, subject_id)
    # Each clue event carries the owner of the clue when it was written: G1's events of a
    # handed-over clue stay G1's, the handover and what follows are the new owner's.
    for (clue_id,) in c.sql("SELECT DISTINCT subject_id FROM audit_events WHERE action = 'clue.handover'"):
        evs = chain.events(c.db, "clue", clue_id)
        cut = [e["action"] for e in evs].index("clue.handover")
        d = json.loads(evs[cut]["details"])
        assert all(e["owner_unit"] == d["from_unit_id"] for e in evs[:cut])
        assert evs[cut]["owner_unit"] == d["to_unit_id"]
    # Case events are not clue-scoped.
    assert c.sql("SELECT count(*) FROM audit_events WHERE subject_type = 'case' AND owner_unit IS NOT NULL")[0][0] == 0


if __name__ == "__main__":
    harness.run_tests(dict(globals()), setup, teardown)
