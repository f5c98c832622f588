"""The rectification ledger (督促整改台账, issue 14 part 1) end to end: grpcio and cluectl against
the real clued and PostgreSQL.

The story first: group G1 finds a problem in its host unit while handling a clue, records an
item, the host unit's plan and evidence arrive as notes on the clue, the plan and evidence
are recorded citing those notes, and G1's leader verifies. Around it: who sees an item (the
supervising unit, its liaison room, the units of the source case, AUDITORs; everyone else
NOT_FOUND with the message of a missing item), who may create and move it, the state machine
through the API (illegal moves named, stale versions ABORTED, a reopen cycle), idempotent
retries, bad input of every kind with no change behind it, the list filters (overdue seen by a
second clued whose clock runs 40 days ahead), the per-host-unit ledger, and the audit chain
of every item, recomputed here.
"""

import concurrent.futures
import os
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
cm = S.common_pb2
rp = S.rectification_pb2
au = S.audit_pb2
Code = grpc.StatusCode
DAY_MS = 86400000
MISSING = 987654321

OPEN, PLAN, SUBMITTED, VERIFIED, REOPENED = (rp.RECTIFICATION_STATE_OPEN, rp.RECTIFICATION_STATE_PLAN_RECORDED,
                                             rp.RECTIFICATION_STATE_SUBMITTED, rp.RECTIFICATION_STATE_VERIFIED,
                                             rp.RECTIFICATION_STATE_REOPENED)
SRC_CLUE, SRC_CASE, SRC_SUP = (rp.RECTIFICATION_SOURCE_CLUE, rp.RECTIFICATION_SOURCE_CASE,
                               rp.RECTIFICATION_SOURCE_SUPERVISION)


class Ctx:
    def __init__(self):
        self.actions = {}  # item id -> [action, ...] expected on its chain

    def log(self, item_id, action):
        self.actions.setdefault(item_id, []).append(action)


def setup():
    c = Ctx()
    pg = harness.Postgres.get()
    c.dbname = pg.new_database("rect")
    c.url = pg.url(c.dbname)
    c.srv = harness.Clued(c.url).start()
    c.w = world.build(c.srv)
    c.db = pg.connect(c.dbname)
    return c


def teardown(c):
    c.w.close()
    c.db.close()
    c.srv.stop()


def now_ms():
    return int(time.time() * 1000)


def submit_clue(user, host="市发展改革委"):
    return user.clue.SubmitClue(pb.SubmitClueRequest(
        request_id=new_request_id(), title="采购问题线索", summary="s", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
        subject=pb.SubjectPerson(name="某某"), host_unit=host), timeout=20)


def create(c, user, source=SRC_SUP, clue_id=0, case_id=0, host="市发展改革委", days=30, rid=None, deadline=None,
           **kw):
    req = rp.CreateItemRequest(host_unit=host, description=kw.get("description", "政府采购未按规定公开"),
                               category=kw.get("category", "财务管理"), source=source, source_clue_id=clue_id,
                               source_case_id=case_id, deadline_ms=deadline or now_ms() + days * DAY_MS,
                               request_id=rid or new_request_id())
    it = user.rect.CreateItem(req, timeout=20)
    if rid is None or it.id not in c.actions:
        c.log(it.id, "rect.create")
    return it


def plan(c, user, it, text="整改方案：建立采购公开制度", notes=(), rid=None):
    x = user.rect.RecordPlan(rp.RecordPlanRequest(item_id=it.id, expected_version=it.version, plan=text,
                                                  note_ids=list(notes), request_id=rid or new_request_id()),
                             timeout=20)
    c.log(x.id, "rect.record_plan")
    return x


def submit(c, user, it, text="已公开全部采购信息", notes=(), rid=None):
    x = user.rect.Submit(rp.SubmitRequest(item_id=it.id, expected_version=it.version, evidence=text,
                                          note_ids=list(notes), request_id=rid or new_request_id()), timeout=20)
    c.log(x.id, "rect.submit")
    return x


def verify(c, user, it, comment="整改到位"):
    x = user.rect.Verify(rp.VerifyRequest(item_id=it.id, expected_version=it.version, comment=comment,
                                          request_id=new_request_id()), timeout=20)
    c.log(x.id, "rect.verify")
    return x


def reopen(c, user, it, reason="证据不足"):
    x = user.rect.Reopen(rp.ReopenRequest(item_id=it.id, expected_version=it.version, reason=reason,
                                          request_id=new_request_id()), timeout=20)
    c.log(x.id, "rect.reopen")
    return x


def note(user, clue_id, text):
    return user.clue.AddNote(pb.AddNoteRequest(clue_id=clue_id, kind=pb.NOTE_KIND_EVIDENCE_SUMMARY, text=text,
                                               request_id=new_request_id()), timeout=20)


def get(user, item_id):
    return user.rect.GetItem(rp.GetItemRequest(item_id=item_id), timeout=20)


def not_found(user, item_id):
    msg = expect_status(Code.NOT_FOUND, get, user, item_id)
    assert msg == "rectification item not found", msg


def events(c, item_id):
    r = c.w.auditor.audit.ListAuditEvents(au.ListAuditEventsRequest(subject_type="rectification",
                                                                    subject_id=item_id, page_size=500), timeout=20)
    return list(r.events)


# ---- the story -------------------------------------------------------------------------------


def test_story(c):
    w = c.w
    G1 = w.G1
    clue = submit_clue(G1.member)
    # 1. While handling the clue, G1 finds a problem in its host unit and records it.
    it = create(c, G1.leader, SRC_CLUE, clue_id=clue.id, host="市发展改革委")
    assert it.state == OPEN and it.version == 1 and it.supervising_unit_id == G1.id
    assert it.source == SRC_CLUE and it.source_clue_id == clue.id and not it.overdue
    assert it.created_by == G1.leader.id and it.host_unit == "市发展改革委"
    # 2. The host unit's plan and evidence arrive as notes; the member records them.
    n1 = note(G1.member, clue.id, "市发展改革委报送的整改方案")
    it = plan(c, G1.member, it, "建立采购信息公开制度", notes=[n1.id])
    assert it.state == PLAN and it.version == 2 and list(it.plan_note_ids) == [n1.id]
    n2 = note(G1.member, clue.id, "整改完成情况报告及佐证材料")
    it = submit(c, G1.member, it, "已在门户网站公开", notes=[n2.id])
    assert it.state == SUBMITTED and list(it.evidence_note_ids) == [n2.id] and it.evidence == "已在门户网站公开"
    # A member may not verify; the leader does.
    expect_status(Code.PERMISSION_DENIED, verify, c, G1.member, it)
    it = verify(c, G1.leader, it, "经核查整改到位")
    assert it.state == VERIFIED and it.verified_at_ms > 0 and it.verify_comment == "经核查整改到位"
    # 3. The liaison room and the AUDITOR see it; strangers get what a missing id gets.
    for u in (G1.member, w.R1.leader, w.R1.member, w.auditor):
        assert get(u, it.id).state == VERIFIED
    for u in (w.G2.leader, w.G3.leader, w.R2.leader, w.X1.leader, w.admin):
        not_found(u, it.id)
    not_found(G1.leader, MISSING)
    # The ledger counts it: found 1, rectified 1, cleared.
    led = {h.host_unit: h for h in G1.leader.rect.GetLedgerStats(rp.GetLedgerStatsRequest(), timeout=20).host_units}
    h = led["市发展改革委"]
    assert (h.found, h.rectified, h.overdue, h.cleared) == (1, 1, 0, True), h
    # The audit chain holds every move, with states.
    ev = events(c, it.id)
    assert [e.action for e in ev] == ["rect.create", "rect.record_plan", "rect.submit", "rect.verify"]
    assert ev[-1].reason == "经核查整改到位" and all(e.actor_unit_id == G1.id for e in ev)
    want = [("", "OPEN"), ("OPEN", "PLAN_RECORDED"), ("PLAN_RECORDED", "SUBMITTED"), ("SUBMITTED", "VERIFIED")]
    assert [(e.from_state_name, e.to_state_name) for e in ev] == want, ev
    # An ADMIN sees the states of ledger events too (not their reasons and details).
    adm = w.admin.audit.ListAuditEvents(au.ListAuditEventsRequest(subject_type="rectification", subject_id=it.id,
                                                                  page_size=500), timeout=20).events
    assert [(e.from_state_name, e.to_state_name) for e in adm] == want and adm[-1].reason == "", adm


def test_terminal_and_illegal_moves(c):
    G1 = c.w.G1
    it = create(c, G1.leader)
    # OPEN: only a plan; every other move is refused, naming the allowed one.
    msg = expect_status(Code.FAILED_PRECONDITION, submit, c, G1.member, it)
    assert "cannot move from OPEN to SUBMITTED; allowed from OPEN: PLAN_RECORDED" in msg, msg
    msg = expect_status(Code.FAILED_PRECONDITION, verify, c, G1.leader, it)
    assert "allowed from OPEN: PLAN_RECORDED" in msg
    expect_status(Code.FAILED_PRECONDITION, reopen, c, G1.leader, it)
    it = plan(c, G1.leader, it)
    msg = expect_status(Code.FAILED_PRECONDITION, plan, c, G1.leader, it)
    assert "allowed from PLAN_RECORDED: SUBMITTED" in msg
    it = submit(c, G1.leader, it)
    # Reopen with a reason, back to a plan, and through again.
    expect_status(Code.INVALID_ARGUMENT, reopen, c, G1.leader, it, reason="  ")
    it = reopen(c, G1.leader, it, "佐证材料不全")
    assert it.state == REOPENED and it.reopen_reason == "佐证材料不全"
    msg = expect_status(Code.FAILED_PRECONDITION, submit, c, G1.leader, it)
    assert "allowed from REOPENED: PLAN_RECORDED" in msg
    it = plan(c, G1.member, it, "补充整改方案")
    it = submit(c, G1.member, it, "补充材料")
    it = verify(c, G1.leader, it)
    for fn in (plan, submit, verify, reopen):
        msg = expect_status(Code.FAILED_PRECONDITION, fn, c, G1.leader, it)
        assert "rectification item is VERIFIED, a terminal state; no moves are allowed" in msg, msg
    assert get(G1.leader, it.id).version == it.version == 7


def test_stale_version_aborted(c):
    G1 = c.w.G1
    it = create(c, G1.leader)
    stale = rp.RectificationItem(id=it.id, version=it.version + 3)
    msg = expect_status(Code.ABORTED, plan, c, G1.member, stale)
    assert "version" in msg
    # A stale version comes before the state (as for clues), after visibility and permission.
    expect_status(Code.ABORTED, verify, c, G1.leader, stale)
    expect_status(Code.PERMISSION_DENIED, verify, c, G1.member, stale)
    msg = expect_status(Code.NOT_FOUND, plan, c, c.w.G2.leader, stale)
    assert msg == "rectification item not found"
    # Two racing plans with the same version: exactly one wins.
    results = []
    for u in (G1.leader, G1.member):
        try:
            results.append(plan(c, u, it))
        except grpc.RpcError as e:
            results.append(e.code())
    assert sum(1 for r in results if not isinstance(r, grpc.StatusCode)) == 1, results
    assert Code.ABORTED in results
    assert get(G1.leader, it.id).version == 2


def test_idempotent_retries(c):
    G1 = c.w.G1
    rid, deadline = new_request_id(), now_ms() + 30 * DAY_MS
    a = create(c, G1.leader, rid=rid, deadline=deadline)
    b = create(c, G1.leader, rid=rid.upper(), deadline=deadline)  # the same key in another case
    assert a.id == b.id
    # The key with other fields (a deadline a day later) is another request: refused.
    expect_status(Code.INVALID_ARGUMENT, create, c, G1.leader, rid=rid, deadline=deadline + DAY_MS,
                  details_has=("was already used for a different request",))
    rid2 = new_request_id()
    x = plan(c, G1.member, a, rid=rid2)
    y = plan(c, G1.member, a, rid=rid2)  # the same stale request again: the first result
    c.actions[x.id].pop()  # the retry appended nothing
    assert y.id == x.id and y.version == x.version == 2
    # The key of one call is not another's, not even a clue call's.
    expect_status(Code.INVALID_ARGUMENT, submit, c, G1.member, y, rid=rid2, details_has=("request_id",))
    clue_rid = new_request_id()
    G1.member.clue.SubmitClue(pb.SubmitClueRequest(
        request_id=clue_rid, title="t", summary="s", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
        subject=pb.SubjectPerson(name="某"), host_unit="h"), timeout=20)
    expect_status(Code.INVALID_ARGUMENT, plan, c, G1.member, y, rid=clue_rid)
    assert [e.action for e in events(c, a.id)] == ["rect.create", "rect.record_plan"]
    # Nor the other way: a key a ledger call used is no new clue or case call, alone or among
    # calls the server batches with others, and nothing is written.
    w = c.w

    def submit_clue_with(user, k):
        return user.clue.SubmitClue(pb.SubmitClueRequest(
            request_id=k, title="t", summary="s", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
            subject=pb.SubjectPerson(name="某"), host_unit="h"), timeout=20)

    clue = submit_clue_with(G1.member, new_request_id())
    room_key = new_request_id()
    create(c, w.R1.leader, rid=room_key)
    counts = "SELECT (SELECT count(*) FROM clues), (SELECT count(*) FROM notes), (SELECT count(*) FROM joint_cases)"
    cur = c.db.cursor()
    cur.execute(counts)
    before = cur.fetchone()
    refusals = [
        lambda: submit_clue_with(G1.leader, rid),
        lambda: G1.member.clue.AddNote(pb.AddNoteRequest(
            clue_id=clue.id, kind=pb.NOTE_KIND_OTHER, text="x", request_id=rid2), timeout=20),
        lambda: G1.leader.clue.RequestTransition(pb.RequestTransitionRequest(
            clue_id=clue.id, expected_version=clue.version, target=cm.CLUE_STATE_PRELIMINARY_CHECK,
            reason="r", request_id=rid), timeout=20),
        lambda: w.R1.leader.case.CreateJointCase(S.case_pb2.CreateJointCaseRequest(
            title="联合", participant_unit_ids=[w.X1.id], request_id=room_key), timeout=20),
    ]
    for fn in refusals:
        expect_status(Code.INVALID_ARGUMENT, fn, details_has=("already used",))

    def attempt(k):
        try:
            submit_clue_with(G1.member, k)
            return "ok"
        except grpc.RpcError as e:
            return e.code()

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(attempt, [rid2] + [new_request_id() for _ in range(7)]))
    assert got == [Code.INVALID_ARGUMENT] + ["ok"] * 7, got
    cur.execute(counts)
    after = cur.fetchone()
    assert after == (before[0] + 7, before[1], before[2]), (before, after)
    assert G1.leader.clue.GetClue(pb.GetClueRequest(clue_id=clue.id), timeout=20).version == clue.version


def test_a_retry_after_its_deadline_answers_with_its_item(c):
    """A lost answer retried once the item's deadline has passed (an item due today, recorded
    late in the evening, retried after midnight) still gets its item: the deadline is held
    against the clock only when the key is new. A new key with that deadline is refused."""
    G1 = c.w.G1
    rid, deadline = new_request_id(), now_ms() + 2 * DAY_MS
    a = create(c, G1.leader, rid=rid, deadline=deadline)
    later = harness.Clued(c.url, args=["--test-clock-offset-ms", str(3 * DAY_MS)]).start(migrate=False)
    try:
        ch = grpc.intercept_channel(grpc.insecure_channel(later.addr), world._Auth(G1.leader.token))
        stub = S.rectification_pb2_grpc.RectificationServiceStub(ch)
        req = rp.CreateItemRequest(host_unit="市发展改革委", description="政府采购未按规定公开", category="财务管理",
                                   source=SRC_SUP, deadline_ms=deadline, request_id=rid)
        b = stub.CreateItem(req, timeout=20)
        assert (b.id, b.version, b.overdue) == (a.id, a.version, True)
        req.request_id = new_request_id()
        expect_status(Code.INVALID_ARGUMENT, stub.CreateItem, req, timeout=20,
                      details_has=("deadline_ms must be in the future",))
        ch.close()
    finally:
        later.stop()
    assert [e.action for e in events(c, a.id)] == ["rect.create"]
    cur = c.db.cursor()
    cur.execute("SELECT count(*) FROM rect_items WHERE deadline = clue_ms_ts(%s)", (deadline,))
    assert cur.fetchone()[0] == 1


def test_create_rules(c):
    w = c.w
    G1, R1, R2, X1 = w.G1, w.R1, w.R2, w.X1
    clue = submit_clue(G1.member)
    # Only a LEADER of a working unit records.
    for u in (G1.member, w.auditor, w.admin):
        expect_status(Code.PERMISSION_DENIED, create, c, u, SRC_CLUE, clue_id=clue.id)
    # A clue the caller does not see answers as a missing one; a seen clue of another unit is denied.
    for cid in (clue.id, MISSING):
        msg = expect_status(Code.NOT_FOUND, create, c, w.G2.leader, SRC_CLUE, clue_id=cid)
        assert msg == "source_clue_id: clue not found", msg
    expect_status(Code.PERMISSION_DENIED, create, c, R1.leader, SRC_CLUE, clue_id=clue.id)
    # A group's own supervision names one of its host units; rooms and regions name any.
    expect_status(Code.INVALID_ARGUMENT, create, c, G1.leader, SRC_SUP, host="市卫生健康委",
                  details_has=("host_unit",))
    create(c, X1.leader, SRC_SUP, host="某县教育局")
    # From a joint case: its lead and participants; it is then seen by every unit of the case.
    k = R2.leader.case.CreateJointCase(S.case_pb2.CreateJointCaseRequest(
        title="联合办案", participant_unit_ids=[G1.id], request_id=new_request_id()), timeout=20)
    msg = expect_status(Code.NOT_FOUND, create, c, X1.leader, SRC_CASE, case_id=k.id)
    assert msg == "source_case_id: joint case not found"
    expect_status(Code.NOT_FOUND, create, c, X1.leader, SRC_CASE, case_id=MISSING)
    it = create(c, G1.leader, SRC_CASE, case_id=k.id, host="市发展改革委")
    assert it.source_case_id == k.id
    for u in (G1.member, R1.leader, R2.leader, R2.member, w.auditor):
        assert get(u, it.id).id == it.id
    for u in (X1.leader, w.G3.leader, w.G2.member):
        not_found(u, it.id)
    # The case lead sees it but may not move it: PERMISSION_DENIED.
    expect_status(Code.PERMISSION_DENIED, plan, c, R2.leader, it)
    # Adding X1 to the case lets X1 see the item.
    R2.leader.case.AddParticipant(S.case_pb2.AddParticipantRequest(case_id=k.id, unit_id=X1.id), timeout=20)
    assert get(X1.leader, it.id).id == it.id
    # A handed-over clue is no longer the old owner's source.
    x = submit_clue(G1.member)
    G1.leader.clue.HandOver(pb.HandOverRequest(clue_id=x.id, expected_version=x.version, to_unit_id=w.G2.id,
                                               reason="移交", request_id=new_request_id()), timeout=20)
    msg = expect_status(Code.NOT_FOUND, create, c, G1.leader, SRC_CLUE, clue_id=x.id)
    it2 = create(c, w.G2.leader, SRC_CLUE, clue_id=x.id, host="市交通运输局")
    assert it2.supervising_unit_id == w.G2.id


def test_bad_input(c):
    G1 = c.w.G1
    L = G1.leader
    base = dict(host_unit="市发展改革委", description="d", category="c", source=SRC_SUP,
                deadline_ms=now_ms() + 10 * DAY_MS)

    def bad_create(field_hint, **over):
        req = dict(base, request_id=new_request_id())
        req.update(over)
        msg = expect_status(Code.INVALID_ARGUMENT, L.rect.CreateItem, rp.CreateItemRequest(**req), timeout=20)
        assert field_hint in msg, (field_hint, msg)

    bad_create("request_id", request_id="")
    bad_create("request_id", request_id="not-a-uuid")
    bad_create("host_unit", host_unit="   ")
    bad_create("host_unit", host_unit="x" * 101)
    bad_create("description", description="")
    bad_create("description", description="x" * 20001)
    bad_create("category", category="")
    bad_create("source", source=0)
    bad_create("source", source=99)
    bad_create("source_clue_id", source=SRC_CLUE)
    bad_create("source_case_id", source=SRC_CASE)
    bad_create("source_clue_id", source_clue_id=5)
    bad_create("source_case_id", source_case_id=5)
    bad_create("source_clue_id", source=SRC_CLUE, source_clue_id=-1)
    bad_create("deadline_ms", deadline_ms=0)
    bad_create("deadline_ms", deadline_ms=now_ms() - DAY_MS)
    bad_create("deadline_ms", deadline_ms=now_ms() + 6 * 366 * DAY_MS)
    bad_create("deadline_ms", deadline_ms=-5)
    # Five calendar years: a day past them is refused, a day short of them taken.
    import datetime
    t = datetime.datetime.now(datetime.timezone.utc)
    try:
        five = t.replace(year=t.year + 5)
    except ValueError:  # 29 February
        five = t.replace(year=t.year + 5, month=3, day=1)
    five_ms = int(five.timestamp() * 1000)
    bad_create("deadline_ms", deadline_ms=five_ms + DAY_MS)
    far = L.rect.CreateItem(rp.CreateItemRequest(**dict(base, deadline_ms=five_ms - DAY_MS,
                                                       request_id=new_request_id())), timeout=20)
    c.log(far.id, "rect.create")

    it = create(c, L)
    clue = submit_clue(G1.member)
    other_note = note(G1.member, clue.id, "另一线索的记录")

    def bad_move(code, hint, fn, req):
        msg = expect_status(code, fn, req, timeout=20)
        assert hint in msg, (hint, msg)

    P = rp.RecordPlanRequest
    ok = dict(item_id=it.id, expected_version=1, plan="p")
    bad_move(Code.INVALID_ARGUMENT, "item_id", L.rect.RecordPlan, P(**dict(ok, item_id=0), request_id=new_request_id()))
    bad_move(Code.INVALID_ARGUMENT, "item_id", L.rect.RecordPlan, P(**dict(ok, item_id=-3), request_id=new_request_id()))
    bad_move(Code.INVALID_ARGUMENT, "expected_version", L.rect.RecordPlan,
             P(**dict(ok, expected_version=0), request_id=new_request_id()))
    bad_move(Code.INVALID_ARGUMENT, "request_id", L.rect.RecordPlan, P(**ok))
    bad_move(Code.INVALID_ARGUMENT, "plan", L.rect.RecordPlan, P(**dict(ok, plan=" \n"), request_id=new_request_id()))
    bad_move(Code.INVALID_ARGUMENT, "note_ids", L.rect.RecordPlan,
             P(**ok, note_ids=[0], request_id=new_request_id()))
    bad_move(Code.INVALID_ARGUMENT, "note_ids", L.rect.RecordPlan,
             P(**ok, note_ids=[3, 3], request_id=new_request_id()))
    bad_move(Code.INVALID_ARGUMENT, "note_ids", L.rect.RecordPlan,
             P(**ok, note_ids=list(range(1, 52)), request_id=new_request_id()))
    # A note of a clue that is not the item's source: refused by the database, nothing changes.
    bad_move(Code.INVALID_ARGUMENT, f"note {other_note.id}", L.rect.RecordPlan,
             P(**ok, note_ids=[other_note.id], request_id=new_request_id()))
    bad_move(Code.INVALID_ARGUMENT, "comment", L.rect.Verify,
             rp.VerifyRequest(item_id=it.id, expected_version=1, comment="x" * 5000, request_id=new_request_id()))
    bad_move(Code.INVALID_ARGUMENT, "reason", L.rect.Reopen,
             rp.ReopenRequest(item_id=it.id, expected_version=1, request_id=new_request_id()))
    bad_move(Code.INVALID_ARGUMENT, "evidence", L.rect.Submit,
             rp.SubmitRequest(item_id=it.id, expected_version=1, request_id=new_request_id()))
    bad_move(Code.INVALID_ARGUMENT, "item_id", L.rect.GetItem, rp.GetItemRequest())
    # A token is one the server gave: a bare id ("r<id>", as tokens once were) is none, nor is
    # an id past INT64_MAX (it used to overflow while being read); the server keeps serving.
    for tok in ("zzz", "r-1", "r5", "r9223372036854775807", "r9223372036854775808", "r9999999999999999999",
                "r18446744073709551616"):
        bad_move(Code.INVALID_ARGUMENT, "page_token", L.rect.ListItems, rp.ListItemsRequest(page_token=tok))
    assert it.id in [i.id for i in L.rect.ListItems(rp.ListItemsRequest(), timeout=20).items]
    bad_move(Code.INVALID_ARGUMENT, "state", L.rect.ListItems, rp.ListItemsRequest(state=9))
    bad_move(Code.INVALID_ARGUMENT, "source", L.rect.ListItems, rp.ListItemsRequest(source=-1))
    bad_move(Code.INVALID_ARGUMENT, "page_size", L.rect.ListItems, rp.ListItemsRequest(page_size=-1))
    bad_move(Code.INVALID_ARGUMENT, "supervising_unit_id", L.rect.GetLedgerStats,
             rp.GetLedgerStatsRequest(supervising_unit_id=-1))
    # Nothing changed, and the server still answers.
    x = get(L, it.id)
    assert x.state == OPEN and x.version == 1
    assert [e.action for e in events(c, it.id)] == ["rect.create"]


def test_notes_of_a_clue_no_longer_seen(c):
    # The supervising unit hands the item's source clue over; the new owner adds a note. Citing
    # it answers as a note that does not exist, whatever else is cited with it, and nothing
    # changes: the refusal tells the old owner nothing of what the new owner wrote.
    w = c.w
    clue = submit_clue(w.G1.member)
    kept = note(w.G1.member, clue.id, "移交前的记录")
    it = create(c, w.G1.leader, source=SRC_CLUE, clue_id=clue.id)
    g = w.G1.leader.clue.GetClue(pb.GetClueRequest(clue_id=clue.id), timeout=20)
    w.G1.leader.clue.HandOver(pb.HandOverRequest(clue_id=clue.id, expected_version=g.version, to_unit_id=w.G3.id,
                                                 reason="移交", request_id=new_request_id()), timeout=20)
    theirs = note(w.G3.member, clue.id, "新承办单位的证据")
    missing = theirs.id + 100000

    def refused(ids):
        return expect_status(Code.INVALID_ARGUMENT, w.G1.member.rect.RecordPlan, rp.RecordPlanRequest(
            item_id=it.id, expected_version=it.version, plan="方案", note_ids=ids, request_id=new_request_id()),
            timeout=20)

    for ids in ([theirs.id], [kept.id], [theirs.id, missing]):
        assert refused(ids) == f"note_ids: note {ids[0]} is not a note of the item's source clue or case", ids
    assert refused([missing, theirs.id]) == f"note_ids: note {missing} is not a note of the item's source clue or case"
    assert get(w.G1.member, it.id).version == it.version
    # G3, which sees the clue, is not the supervising unit: the item stays hidden from it.
    not_found(w.G3.member, it.id)


def test_list_filters_and_overdue(c):
    w = c.w
    G3 = w.G3
    a = create(c, G3.leader, host="市卫生健康委", days=10)
    b = create(c, G3.leader, host="市医保局", days=60)
    b = plan(c, G3.member, b)
    d = create(c, G3.leader, host="市医保局", days=20)
    d = verify(c, G3.leader, submit(c, G3.member, plan(c, G3.member, d)))

    def ids(u, **kw):
        out, token = [], ""
        while True:
            r = u.rect.ListItems(rp.ListItemsRequest(page_token=token, **kw), timeout=20)
            out += [x.id for x in r.items]
            if not r.next_page_token:
                return out
            token = r.next_page_token

    assert ids(G3.member) == [d.id, b.id, a.id]
    assert ids(G3.member, page_size=1) == [d.id, b.id, a.id]  # pages of one, newest first
    assert ids(G3.member, host_unit="市医保局") == [d.id, b.id]
    assert ids(G3.member, state=PLAN) == [b.id]
    assert ids(G3.member, source=SRC_CLUE) == []
    assert ids(G3.member, overdue_only=True) == []
    assert set(ids(w.R2.leader)) >= {a.id, b.id, d.id}  # G3's liaison room
    assert not {a.id, b.id, d.id} & set(ids(w.R1.leader))
    assert not {a.id, b.id, d.id} & set(ids(w.admin))
    assert {a.id, b.id, d.id} <= set(ids(w.auditor))
    # Forty days on, a (10 days) is overdue; b (60 days) is not; d is verified.
    later = harness.Clued(c.url, args=["--test-clock-offset-ms", str(40 * DAY_MS)]).start(migrate=False)
    try:
        ch = grpc.intercept_channel(grpc.insecure_channel(later.addr), world._Auth(G3.member.token))
        stub = S.rectification_pb2_grpc.RectificationServiceStub(ch)
        r = stub.ListItems(rp.ListItemsRequest(overdue_only=True), timeout=20)
        assert [x.id for x in r.items] == [a.id] and r.items[0].overdue
        assert not stub.GetItem(rp.GetItemRequest(item_id=b.id), timeout=20).overdue
        led = {h.host_unit: h for h in stub.GetLedgerStats(rp.GetLedgerStatsRequest(), timeout=20).host_units}
        assert (led["市卫生健康委"].found, led["市卫生健康委"].overdue, led["市卫生健康委"].cleared) == (1, 1, False)
        assert (led["市医保局"].found, led["市医保局"].rectified, led["市医保局"].overdue) == (2, 1, 0)
        ch.close()
    finally:
        later.stop()
    led = {h.host_unit for h in w.R1.leader.rect.GetLedgerStats(
        rp.GetLedgerStatsRequest(supervising_unit_id=G3.id), timeout=20).host_units}
    assert led == set()  # R1 sees none of G3's items


def test_cluectl(c):
    w = c.w
    L = w.G1.leader
    env = {"CLUED_SERVER": c.srv.addr, "CLUED_TOKEN": L.token}
    deadline = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 30 * 86400))
    r = harness.cluectl("--json", "rect", "create", "--host-unit", "市发展改革委", "--description", "会议费超标",
                        "--category", "作风建设", "--source", "supervision", "--deadline", deadline, env=env, check=0)
    import json
    j = json.loads(r.stdout)
    assert j["request_id"] and j["state"] == "RECTIFICATION_STATE_OPEN", j
    iid = int(j["id"])
    c.log(iid, "rect.create")
    r = harness.cluectl("rect", "plan", str(iid), "--version", "1", "--plan", "退回超标费用", env=env, check=0)
    assert f"#{iid} is PLAN_RECORDED (version 2)" in r.stdout, r.stdout
    c.log(iid, "rect.record_plan")
    r = harness.cluectl("rect", "submit", str(iid), "--version", "2", "--evidence", "已退回", env=env, check=0)
    c.log(iid, "rect.submit")
    r = harness.cluectl("rect", "reopen", str(iid), "--version", "3", "--reason", "未附票据", env=env, check=0)
    c.log(iid, "rect.reopen")
    assert "REOPENED" in r.stdout
    r = harness.cluectl("rect", "verify", str(iid), "--version", "4", env=env, check=1)
    assert "FAILED_PRECONDITION" in r.stderr and "allowed from REOPENED: PLAN_RECORDED" in r.stderr, r.stderr
    r = harness.cluectl("rect", "get", str(iid), env=env, check=0)
    assert "未附票据" in r.stdout
    r = harness.cluectl("rect", "list", "--state", "reopened", env=env, check=0)
    assert str(iid) in r.stdout and "REOPENED" in r.stdout
    r = harness.cluectl("rect", "stats", env=env, check=0)
    assert "市发展改革委" in r.stdout
    r = harness.cluectl("rect", "get", str(iid), env={**env, "CLUED_TOKEN": w.G2.leader.token}, check=1)
    assert "NOT_FOUND" in r.stderr
    for sub in ("create", "list", "get", "plan", "submit", "verify", "reopen", "stats"):
        r = harness.cluectl("rect", sub, "--help", env=env, check=0)
        assert "Usage" in r.stdout or "usage" in r.stdout.lower(), (sub, r.stdout)


def _failure(fn, *args, **kw):
    """(code, message, raw grpc-status-details-bin) of the error fn must raise."""
    try:
        fn(*args, **kw)
    except grpc.RpcError as e:
        raw = [v for k, v in (e.trailing_metadata() or ()) if k == "grpc-status-details-bin"]
        return e.code(), e.details(), (raw[0] if raw else None)
    raise AssertionError("the call succeeded")


def _recuse(by, clue_id, user_id=0):
    return by.clue.RecordRecusal(pb.RecordRecusalRequest(clue_id=clue_id, user_id=user_id, reason="与被反映人系亲属",
                                                         request_id=new_request_id()), timeout=20)


def _ledger_ids(user, **kw):
    return {x.id for x in user.rect.ListItems(rp.ListItemsRequest(page_size=500, **kw), timeout=20).items}


def _found(user, host):
    rows = user.rect.GetLedgerStats(rp.GetLedgerStatsRequest(), timeout=20).host_units
    return {h.host_unit: h.found for h in rows}.get(host, 0)


def test_recused_user_meets_a_missing_item(c):
    # docs/COOPERATION.md "Recusal": for a user recused from a clue, an item recorded from that
    # clue is a missing item: every single-item call answers exactly as for an item that does
    # not exist (trailers included), lists and counts leave it out, and no move goes through.
    # An item of the same unit from supervision stays as it was for the same user.
    w = c.w
    host = "市审计局"
    clue = submit_clue(w.G1.member, host=host)
    n1 = note(w.G1.member, clue.id, "驻在单位报送的整改方案原文")
    it = create(c, w.G1.leader, source=SRC_CLUE, clue_id=clue.id, host=host)
    other = create(c, w.G1.leader)
    L2 = w.new_user("G1", "LEADER", "G1-leader-recused-rect")
    M2 = w.new_user("G1", "MEMBER", "G1-member-recused-rect")
    RM = w.R1.member  # the liaison room sees G1's items, and recuses itself
    for u in (L2, M2, RM):
        assert get(u, it.id).source_clue_id == clue.id
        assert it.id in _ledger_ids(u)
    assert _found(L2, host) == 1
    _recuse(w.G1.leader, clue.id, L2.id)
    _recuse(M2, clue.id)
    _recuse(RM, clue.id)
    missing = it.id + 100000

    def same_as_missing(call):
        got = [_failure(call, i) for i in (it.id, missing)]
        assert got[0][0] == Code.NOT_FOUND, got[0]
        assert got[0][1] == "rectification item not found", got[0]
        assert got[0] == got[1], got

    for u in (L2, M2, RM):
        same_as_missing(lambda i: get(u, i))
        assert it.id not in _ledger_ids(u)
        assert it.id not in _ledger_ids(u, source=SRC_CLUE, host_unit=host)
        assert other.id in _ledger_ids(u)
        assert get(u, other.id).id == other.id
        assert _found(u, host) == 0
        for target in ("plan", "plan with the clue's note", "submit", "verify", "reopen"):
            def move(i, target=target):
                ver = it.version
                rid = new_request_id()
                if target.startswith("plan"):
                    notes = [n1.id] if target.endswith("note") else []
                    return u.rect.RecordPlan(rp.RecordPlanRequest(item_id=i, expected_version=ver, plan="整改方案",
                                                                  note_ids=notes, request_id=rid), timeout=20)
                if target == "submit":
                    return u.rect.Submit(rp.SubmitRequest(item_id=i, expected_version=ver, evidence="证据",
                                                          request_id=rid), timeout=20)
                if target == "verify":
                    return u.rect.Verify(rp.VerifyRequest(item_id=i, expected_version=ver, request_id=rid), timeout=20)
                return u.rect.Reopen(rp.ReopenRequest(item_id=i, expected_version=ver, reason="不足",
                                                      request_id=rid), timeout=20)
            same_as_missing(move)
    assert get(w.G1.leader, it.id).version == it.version
    # The unit's other staff carry it on; the recused leader cannot verify it, its colleague can.
    x = submit(c, w.G1.member, plan(c, w.G1.member, it, notes=[n1.id]), notes=[n1.id])
    same_as_missing(lambda i: L2.rect.Verify(rp.VerifyRequest(item_id=i, expected_version=x.version,
                                                              request_id=new_request_id()), timeout=20))
    same_as_missing(lambda i: L2.rect.Reopen(rp.ReopenRequest(item_id=i, expected_version=x.version, reason="不足",
                                                              request_id=new_request_id()), timeout=20))
    assert get(w.G1.leader, it.id).state == SUBMITTED
    assert verify(c, w.G1.leader, x).state == VERIFIED
    assert get(w.auditor, it.id).id == it.id  # an AUDITOR is never recused
    # A recused leader records no item from the clue either: the clue is missing.
    msg = expect_status(Code.NOT_FOUND, L2.rect.CreateItem, rp.CreateItemRequest(
        host_unit=host, description="整改事项", category="制度", source=SRC_CLUE, source_clue_id=clue.id,
        deadline_ms=now_ms() + 30 * DAY_MS, request_id=new_request_id()), timeout=20)
    assert msg == "source_clue_id: clue not found", msg


def test_recusal_refuses_ledger_calls_on_their_way(c):
    # A move or a creation decided before its caller's recusal and written after it is refused
    # as the recused caller's calls are (0035): the item, or the source clue, is missing, and
    # nothing is written.
    w = c.w
    clue = submit_clue(w.G1.member)
    it = create(c, w.G1.leader, source=SRC_CLUE, clue_id=clue.id)
    M2 = w.new_user("G1", "MEMBER", "G1-member-on-its-way")
    L2 = w.new_user("G1", "LEADER", "G1-leader-on-its-way")
    req = rp.RecordPlanRequest(item_id=it.id, expected_version=it.version, plan="方案", request_id=new_request_id())
    got, _ = harness.stalled_by_its_key(c.dbname, M2.id, M2.rect.RecordPlan, req, lambda: _recuse(M2, clue.id))
    assert got == (Code.NOT_FOUND, "rectification item not found"), got
    req = rp.CreateItemRequest(host_unit="市发展改革委", description="整改事项", category="制度", source=SRC_CLUE,
                               source_clue_id=clue.id, deadline_ms=now_ms() + 30 * DAY_MS,
                               request_id=new_request_id())
    got, _ = harness.stalled_by_its_key(c.dbname, L2.id, L2.rect.CreateItem, req, lambda: _recuse(w.G1.leader, clue.id, L2.id))
    assert got == (Code.NOT_FOUND, "source_clue_id: clue not found"), got
    with c.db.cursor() as cur:
        cur.execute("SELECT count(*) FROM rect_items WHERE source_clue = %s", (clue.id,))
        assert cur.fetchone()[0] == 1
    assert get(w.G1.member, it.id).version == it.version
    # Who is not recused moves it as before.
    assert plan(c, w.G1.member, it).state == PLAN


def test_bad_note_names_the_field(c):
    # A bad note id is an INVALID_ARGUMENT whose BadRequest names the field note_ids, whether
    # the server refuses it (a note the caller does not see) or the database does (a note of
    # another clue the caller sees); a reused key names request_id.
    import importlib
    import tempfile

    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="clued-rect-rpc-")
    assert protoc.main(["protoc", f"-I{os.path.join(harness.SRC, 'proto')}", f"--python_out={out}",
                        "google/rpc/status.proto", "google/rpc/error_details.proto"]) == 0
    os.rename(os.path.join(out, "google"), os.path.join(out, "gproto_rect"))
    sys.path.insert(0, out)
    status_pb2 = importlib.import_module("gproto_rect.rpc.status_pb2")
    details_pb2 = importlib.import_module("gproto_rect.rpc.error_details_pb2")

    def fields(fn, req):
        code, msg, raw = _failure(fn, req, timeout=20)
        assert code == Code.INVALID_ARGUMENT, (code, msg)
        st = status_pb2.Status.FromString(raw)
        got = []
        for a in st.details:
            assert a.type_url.endswith("/google.rpc.BadRequest"), a.type_url
            got += [(v.field, v.description) for v in details_pb2.BadRequest.FromString(a.value).field_violations]
        return msg, got

    w = c.w
    clue = submit_clue(w.G1.member)
    elsewhere = note(w.G1.member, submit_clue(w.G1.member).id, "另一线索的记录")
    it = create(c, w.G1.leader, source=SRC_CLUE, clue_id=clue.id)
    for bad in (MISSING, elsewhere.id):
        msg, got = fields(w.G1.member.rect.RecordPlan, rp.RecordPlanRequest(
            item_id=it.id, expected_version=it.version, plan="方案", note_ids=[bad], request_id=new_request_id()))
        assert msg == f"note_ids: note {bad} is not a note of the item's source clue or case", msg
        assert got == [("note_ids", msg)], got
    x = plan(c, w.G1.member, it)
    msg, got = fields(w.G1.member.rect.Submit, rp.SubmitRequest(
        item_id=x.id, expected_version=x.version, evidence="证据", note_ids=[elsewhere.id], request_id=new_request_id()))
    assert got == [("note_ids", msg)], got
    rid = new_request_id()
    submit_clue_req = pb.SubmitClueRequest(request_id=rid, title="t", summary="s",
                                           source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
                                           subject=pb.SubjectPerson(name="某某"), host_unit="市发展改革委")
    w.G1.member.clue.SubmitClue(submit_clue_req, timeout=20)
    msg, got = fields(w.G1.member.rect.Submit, rp.SubmitRequest(
        item_id=x.id, expected_version=x.version, evidence="证据", request_id=rid))
    assert "already used" in msg and [f for f, _ in got] == ["request_id"], (msg, got)
    assert get(w.G1.member, it.id).version == x.version


def test_a_reused_key_touches_no_clue_the_caller_cannot_see(c):
    """A move whose request_id is recorded already is answered by the key's check alone: a true
    retry gets its item, a key reused for another item, another move or other notes is refused.
    None of them locks a clue. While a session holds clues of other units FOR UPDATE, as a
    handover or a move there holds its clue until it commits, each still answers, and answers
    what it answers when nobody writes them. Such a call used to take the clues of any note ids
    and item it named FOR SHARE before the key was looked at, so a MEMBER could make the owners'
    writes wait on clues they cannot see, and learn from an ABORTED when one was being written."""
    w = c.w
    M = w.G1.member
    key = new_request_id()
    mine = plan(c, M, create(c, w.G1.leader), rid=key)
    hidden = submit_clue(w.G2.member, host="市交通运输局")
    hidden_note = note(w.G2.member, hidden.id, "G2 的内部记录")
    theirs = create(c, w.G2.leader, SRC_CLUE, clue_id=hidden.id, host="市交通运输局")
    # A plan citing a note of G1's clue, which G1 then hands over to G3: its retry cites a note,
    # and stands on a source clue, that the caller no longer sees.
    gone = submit_clue(w.G1.member)
    gone_note = note(w.G1.member, gone.id, "移交前的整改方案")
    it = create(c, w.G1.leader, SRC_CLUE, clue_id=gone.id)
    retry = rp.RecordPlanRequest(item_id=it.id, expected_version=it.version, plan="整改方案", note_ids=[gone_note.id],
                                 request_id=new_request_id())
    first = M.rect.RecordPlan(retry, timeout=20)
    c.log(it.id, "rect.record_plan")
    g = w.G1.leader.clue.GetClue(pb.GetClueRequest(clue_id=gone.id), timeout=20)
    w.G1.leader.clue.HandOver(pb.HandOverRequest(clue_id=gone.id, expected_version=g.version, to_unit_id=w.G3.id,
                                                 reason="移交", request_id=new_request_id()), timeout=20)
    for clue in (hidden, gone):
        expect_status(Code.NOT_FOUND, M.clue.GetClue, pb.GetClueRequest(clue_id=clue.id), timeout=20)
    calls = [
        (M.rect.RecordPlan, rp.RecordPlanRequest(item_id=mine.id, expected_version=1, plan="方案",
                                                 note_ids=[hidden_note.id], request_id=key)),
        (M.rect.RecordPlan, rp.RecordPlanRequest(item_id=theirs.id, expected_version=1, plan="方案", request_id=key)),
        (M.rect.Submit, rp.SubmitRequest(item_id=mine.id, expected_version=mine.version, evidence="证据",
                                         note_ids=[hidden_note.id], request_id=key)),
        (M.rect.RecordPlan, retry),
    ]

    def answers():
        out = []
        for fn, req in calls:
            try:
                x = fn(req, timeout=20)
                out.append((Code.OK, (x.id, x.version, x.state, list(x.plan_note_ids))))
            except grpc.RpcError as e:
                out.append((e.code(), e.details()))
        return out

    free = answers()
    assert free == [
        (Code.INVALID_ARGUMENT, f"request_id {key} was already used for a different request (RecordPlan)"),
        (Code.INVALID_ARGUMENT, f"request_id {key} was already used for another call (RecordPlan)"),
        (Code.INVALID_ARGUMENT, f"request_id {key} was already used for another call (RecordPlan)"),
        (Code.OK, (it.id, first.version, PLAN, [gone_note.id])),
    ], free
    holder = harness.Postgres.get().connect(c.dbname)
    holder.autocommit = False
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT id FROM clues WHERE id IN (%s, %s) FOR UPDATE", (hidden.id, gone.id))
            assert len(cur.fetchall()) == 2
        held = answers()
    finally:
        holder.rollback()
        holder.close()
    assert held == free, held
    assert get(M, mine.id).version == mine.version and get(M, it.id).version == first.version


def test_zz_audit_chains(c):
    """Runs last: every item's chain holds exactly the events of the calls that succeeded, and
    verifies when recomputed here and by VerifyAuditChain."""
    with c.db.cursor() as cur:
        cur.execute("SELECT id FROM rect_items ORDER BY id")
        items = [r[0] for r in cur.fetchall()]
    assert set(items) == set(c.actions), (items, sorted(c.actions))
    for iid in items:
        got = [ev["action"] for ev in chain.events(c.db, "rectification", iid)]
        assert got == c.actions[iid], (iid, got, c.actions[iid])
        chain.verify(c.db, "rectification", iid)
        r = c.w.auditor.audit.VerifyAuditChain(au.VerifyAuditChainRequest(subject_type="rectification",
                                                                          subject_id=iid), timeout=20)
        assert r.ok, r


if __name__ == "__main__":
    harness.run_tests(dict(globals()), setup, teardown)
