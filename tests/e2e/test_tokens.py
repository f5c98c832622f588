"""Separation of duties for ADMIN (DESIGN.md §4, §5), against the real clued and PostgreSQL
through Python grpcio and cluectl:

- an ADMIN reads unit, user and token events whole, and clue-side events (clues, cases,
  proposals, notes) without reason, details or hashes, in ListAuditEvents and WatchEvents
  alike; an AUDITOR reads every field;
- every audit event written for a call records the token the call came with, and the hash
  chain covers it; every token records who issued it;
- a token issued by someone else (an enrollment token) cannot read reporter contacts, while a
  personal token of the same user can; an ADMIN who issues a LEADER a token cannot read a
  contact through it;
- TokenService: a user lists, issues and revokes their own tokens, another user's token id
  answers exactly as a missing one, bad input is INVALID_ARGUMENT and changes nothing, the
  number of live tokens is bounded;
- GetCaller tells every caller who the server authenticated it as (user, role, unit, token,
  enrollment or personal; a name of 100 characters whole), reads nothing else and changes
  nothing; without a token it is UNAUTHENTICATED;
- `clued bootstrap --demo-tokens` gives demo users personal tokens;
- `cluectl token list|issue|revoke`.
"""

import datetime
import hashlib
import json
import os
import re
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chain  # noqa: E402
import harness  # noqa: E402
import world  # noqa: E402

import grpc  # noqa: E402

from harness import expect_status, new_request_id  # noqa: E402

S = harness.stubs()
A, AU, C, CL, CS, T = S.admin_pb2, S.audit_pb2, S.common_pb2, S.clue_pb2, S.case_pb2, S.token_pb2
CODE = grpc.StatusCode
REPORTER = CL.ReporterContact(name="实名举报人", phone="13900000000", address="某市某路1号", email="r@example.cn")
SECRET_REASON = "初核发现某某收受某公司购物卡"


class Ctx:
    pass


def setup():
    c = Ctx()
    c.pg = harness.Postgres.get()
    c.dbname = c.pg.new_database()
    c.srv = harness.Clued(c.pg.url(c.dbname)).start()
    c.db = c.pg.connect(c.dbname)
    c.db.autocommit = True
    c.w = world.build(c.srv)
    return c


def teardown(c):
    c.w.close()
    c.db.close()
    c.srv.stop()


def sql(c, q, args=()):
    with c.db.cursor() as cur:
        cur.execute(q, args)
        return cur.fetchall()


def stub(addr, token):
    """A User-like object with every service stub, sending token; close() it."""
    return world.User(addr, 0, "?", "?", None, token)


def submit(user, reporter=None, title="某局长违规插手工程招投标"):
    return user.clue.SubmitClue(CL.SubmitClueRequest(
        request_id=new_request_id(), title=title, summary="反映某某违规收受礼金",
        source=CL.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=CL.SubjectPerson(name="王某某", position="局长"),
        host_unit="市发展改革委", reporter=reporter), timeout=20)


def move(user, clue, target, reason=SECRET_REASON, **details):
    return user.clue.RequestTransition(CL.RequestTransitionRequest(
        clue_id=clue.id, expected_version=clue.version, target=target, reason=reason,
        request_id=new_request_id(), details=CL.TransitionDetails(**details)), timeout=20)


def my_tokens(user, include_revoked=False):
    return user.tokens.ListMyTokens(T.ListMyTokensRequest(include_revoked=include_revoked), timeout=10).tokens


def current_token_id(user):
    cur = [t for t in my_tokens(user) if t.current]
    assert len(cur) == 1, cur
    return cur[0].id


def all_events(user, **filters):
    out, tok = [], ""
    while True:
        r = user.audit.ListAuditEvents(AU.ListAuditEventsRequest(page_size=500, page_token=tok, **filters),
                                       timeout=20)
        out += r.events
        if not r.next_page_token:
            return out
        tok = r.next_page_token


def watch(user, after, until):
    """Every event WatchEvents delivers to user after seq `after`, up to seq `until`."""
    call = user.audit.WatchEvents(AU.WatchEventsRequest(after_seq=after), timeout=30)
    got = []
    try:
        for e in call:
            got.append(e)
            if e.seq >= until:
                break
    finally:
        call.cancel()
    return got


def max_seq(c):
    return sql(c, "SELECT coalesce(max(seq), 0) FROM audit_events")[0][0]


def reporter_reads(c, clue_id):
    return sql(c, "SELECT actor_user_id, actor_token_id FROM audit_events WHERE subject_type = 'clue'"
                  " AND subject_id = %s AND action = 'clue.reporter_read' ORDER BY seq", (clue_id,))


CLUE_SIDE = ("clue", "case")
WHOLE_FOR_ADMIN = ("unit", "user")


def busy_history(c, tag):
    """A clue with a reporter through a move, a co-reviewed proposal with a comment, a note and
    a joint case; a new unit, user and token. Returns (first seq, last seq, clue)."""
    w = c.w
    start = max_seq(c)
    cl = submit(w.G1.member, reporter=REPORTER)
    cl = move(w.G1.leader, cl, C.CLUE_STATE_PRELIMINARY_CHECK).clue
    w.G1.member.clue.AddNote(CL.AddNoteRequest(clue_id=cl.id, kind=CL.NOTE_KIND_EVIDENCE_SUMMARY,
                                               text="证据摘要：购物卡三张", request_id=new_request_id()), timeout=20)
    r = move(w.G1.leader, cl, C.CLUE_STATE_FILED)
    w.R1.leader.clue.ReviewProposal(CL.ReviewProposalRequest(proposal_id=r.proposal.id, approve=True,
                                                             comment="同意立案，涉案金额较大",
                                                             request_id=new_request_id()), timeout=20)
    w.R1.leader.case.CreateJointCase(CS.CreateJointCaseRequest(
        title="某系统窝案", basis="多名处级干部涉嫌", participant_unit_ids=[w.X1.id],
        request_id=new_request_id()), timeout=20)
    u = w.admin.admin.CreateUnit(A.CreateUnitRequest(kind=C.UNIT_KIND_ROOM, code=f"R{tag}", name=f"第{tag}室"),
                                 timeout=10)
    usr = w.admin.admin.CreateUser(A.CreateUserRequest(unit_id=u.id, name=f"r{tag}-leader", role=C.ROLE_LEADER),
                                   timeout=10)
    w.admin.admin.IssueToken(A.IssueTokenRequest(user_id=usr.id, note="onboarding"), timeout=10)
    w.admin.admin.DisableUser(A.DisableUserRequest(user_id=usr.id, reason="调离"), timeout=10)
    return start, max_seq(c), cl


def check_admin_view(c, admin_evs, auditor_evs):
    by_seq = {e.seq: e for e in auditor_evs}
    kinds = set()
    for e in admin_evs:
        full = by_seq[e.seq]
        kinds.add(e.subject_type)
        # What the ADMIN always sees.
        for f in ("seq", "at_ms", "actor_user_id", "actor_unit_id", "actor_token_id", "action",
                  "subject_type", "subject_id", "from_state", "to_state"):
            assert getattr(e, f) == getattr(full, f), (f, e, full)
        if e.subject_type in WHOLE_FOR_ADMIN:
            assert e == full, (e, full)
        else:
            assert e.subject_type in CLUE_SIDE, e
            assert e.reason == "" and e.details_json == "" and e.prev_hash == b"" and e.hash == b"", e
    return kinds


def test_admin_sees_clue_events_without_reason_or_details(c):
    start, end, cl = busy_history(c, 77)
    admin_evs = all_events(c.w.admin, after_seq=start, until_seq=end)
    auditor_evs = all_events(c.w.auditor, after_seq=start, until_seq=end)
    # Both see every event of the stretch, the AUDITOR each whole (its hashes are the stored ones).
    assert [e.seq for e in admin_evs] == [e.seq for e in auditor_evs] == \
        [r[0] for r in sql(c, "SELECT seq FROM audit_events WHERE seq > %s AND seq <= %s ORDER BY seq",
                           (start, end))]
    stored = {r[0]: r[1:] for r in sql(c, "SELECT seq, reason, details, hash FROM audit_events"
                                          " WHERE seq > %s AND seq <= %s", (start, end))}
    for e in auditor_evs:
        reason, details, h = stored[e.seq]
        assert (e.reason, e.details_json, e.hash) == (reason or "", details, bytes(h)), e
    assert any(SECRET_REASON == e.reason for e in auditor_evs)
    assert any("同意立案" in e.reason + e.details_json for e in auditor_evs)
    assert any("某系统窝案" in e.details_json for e in auditor_evs)
    kinds = check_admin_view(c, admin_evs, auditor_evs)
    assert kinds == {"clue", "case", "unit", "user"}, kinds
    actions = {e.action for e in admin_evs}
    assert {"clue.submit", "clue.move", "note.add", "proposal.create", "case.create", "unit.create",
            "user.create", "token.issue", "user.disable"} <= actions, actions
    # Nothing of the clue's text reaches the ADMIN, whatever the filter.
    for e in all_events(c.w.admin, subject_type="clue", subject_id=cl.id):
        assert SECRET_REASON not in str(e) and "同意立案" not in str(e) and "王某某" not in str(e)
    # The user and token events keep their details for the ADMIN: the note and the token id.
    tok = [e for e in admin_evs if e.action == "token.issue"]
    assert len(tok) == 1 and json.loads(tok[0].details_json)["note"] == "onboarding"
    assert json.loads(tok[0].details_json)["enrollment"] is True
    dis = [e for e in admin_evs if e.action == "user.disable"]
    assert dis[0].reason == "调离"


def test_admin_watch_is_redacted_too(c):
    start, end, _ = busy_history(c, 78)
    admin_evs = watch(c.w.admin, start, end)
    auditor_evs = watch(c.w.auditor, start, end)
    assert [e.seq for e in admin_evs] == [e.seq for e in auditor_evs]
    assert admin_evs[-1].seq == end
    kinds = check_admin_view(c, admin_evs, auditor_evs)
    assert {"clue", "unit", "user"} <= kinds
    # And the list and the stream agree, event for event, for both readers.
    assert auditor_evs == all_events(c.w.auditor, after_seq=start, until_seq=end)
    assert admin_evs == all_events(c.w.admin, after_seq=start, until_seq=end)


def test_members_still_see_their_clues_events_whole(c):
    cl = submit(c.w.G2.member)
    move(c.w.G2.leader, cl, C.CLUE_STATE_PRELIMINARY_CHECK)
    evs = all_events(c.w.G2.leader, subject_type="clue", subject_id=cl.id)
    assert [e.action for e in evs] == ["clue.submit", "clue.move"]
    assert evs[1].reason == SECRET_REASON and evs[0].details_json and evs[1].hash


def test_every_event_records_the_acting_token(c):
    w = c.w
    start = max_seq(c)
    leader_tok, member_tok, admin_tok = (current_token_id(u) for u in (w.G3.leader, w.G3.member, w.admin))
    cl = submit(w.G3.member)
    move(w.G3.leader, cl, C.CLUE_STATE_PRELIMINARY_CHECK)
    w.admin.admin.CreateUnit(A.CreateUnitRequest(kind=C.UNIT_KIND_REGION, code="X88", name="某某区"), timeout=10)
    # The same user through another token: the event names that token.
    other = w.G3.leader.tokens.IssueMyToken(T.IssueMyTokenRequest(note="second device"), timeout=10)
    with_other = stub(c.srv.addr, other.token)
    try:
        with_other.clue.AddNote(CL.AddNoteRequest(clue_id=cl.id, kind=CL.NOTE_KIND_EVIDENCE_SUMMARY,
                                                  text="补充材料", request_id=new_request_id()), timeout=20)
    finally:
        with_other.close()
    rows = sql(c, "SELECT action, actor_user_id, actor_token_id FROM audit_events WHERE seq > %s ORDER BY seq",
               (start,))
    assert rows == [("clue.submit", w.G3.member.id, member_tok),
                    ("clue.move", w.G3.leader.id, leader_tok),
                    ("unit.create", w.admin.id, admin_tok),
                    ("token.issue", w.G3.leader.id, leader_tok),
                    ("note.add", w.G3.leader.id, other.token_id)], rows
    # The API shows it, and the hash chain covers it (the independent recomputation agrees).
    evs = all_events(w.auditor, after_seq=start)
    assert [e.actor_token_id for e in evs] == [r[2] for r in rows]
    assert chain.first_break(c.db, "clue", cl.id) is None
    for e in chain.events(c.db, "clue", cl.id):
        assert chain.event_hash(e) == e["hash"]
    assert w.auditor.audit.VerifyAuditChain(AU.VerifyAuditChainRequest(), timeout=60).ok
    # What one token did: the filter selects exactly its events, for any reader within what
    # that reader sees; a page token does not carry over to another token's filter.
    by_token = all_events(w.auditor, actor_token_id=leader_tok)
    assert [e.seq for e in by_token] == [r[0] for r in sql(
        c, "SELECT seq FROM audit_events WHERE actor_token_id = %s ORDER BY seq", (leader_tok,))]
    assert [e.action for e in by_token if e.seq > start] == ["clue.move", "token.issue"]
    assert [e.action for e in all_events(w.G3.leader, actor_token_id=other.token_id)] == ["note.add"]
    assert all_events(w.G1.leader, actor_token_id=other.token_id) == [], "G1 does not see G3's clue"
    assert [e.action for e in all_events(w.admin, actor_token_id=other.token_id)] == ["note.add"]
    assert all_events(w.admin, actor_token_id=other.token_id)[0].reason == ""
    expect_status(CODE.INVALID_ARGUMENT, w.auditor.audit.ListAuditEvents,
                  AU.ListAuditEventsRequest(actor_token_id=-1), timeout=10, details_has=["actor_token_id"])
    page = w.auditor.audit.ListAuditEvents(AU.ListAuditEventsRequest(page_size=1, actor_token_id=leader_tok),
                                           timeout=10)
    assert page.next_page_token
    expect_status(CODE.INVALID_ARGUMENT, w.auditor.audit.ListAuditEvents,
                  AU.ListAuditEventsRequest(page_size=1, actor_token_id=member_tok,
                                            page_token=page.next_page_token), timeout=10)
    # Events appended outside any call (bootstrap) have none.
    assert sql(c, "SELECT count(*) FROM audit_events WHERE actor_user_id IS NULL AND actor_token_id IS NOT NULL")[0][0] == 0


def test_history_names_the_acting_token(c):
    # GetHistory shows each event as ListAuditEvents does, the acting token included.
    w = c.w
    cl = submit(w.G1.member)
    moved = move(w.G1.leader, cl, C.CLUE_STATE_PRELIMINARY_CHECK).clue
    hist = w.G1.leader.clue.GetHistory(CL.GetHistoryRequest(clue_id=moved.id), timeout=20).events
    assert [e.action for e in hist] == ["clue.submit", "clue.move"], [e.action for e in hist]
    assert [e.actor_token_id for e in hist] == [current_token_id(w.G1.member), current_token_id(w.G1.leader)]
    listed = w.auditor.audit.ListAuditEvents(AU.ListAuditEventsRequest(subject_type="clue", subject_id=moved.id),
                                             timeout=20).events
    assert list(hist) == list(listed), "one event, one rendering"


def test_tokens_record_who_issued_them(c):
    w = c.w
    u = w.new_user("G2", "LEADER", "g2-second-leader")
    rows = sql(c, "SELECT id, issued_by FROM tokens WHERE user_id = %s ORDER BY id", (u.id,))
    assert [r[1] for r in rows] == [w.admin.id, u.id], "the admin's enrollment token, then the user's own"
    toks = {t.id: t for t in my_tokens(u)}
    enr, own = toks[rows[0][0]], toks[rows[1][0]]
    assert enr.enrollment and enr.issued_by_user_id == w.admin.id and not enr.current and enr.note == "e2e"
    assert not own.enrollment and own.issued_by_user_id == u.id and own.current and own.user_id == u.id
    assert enr.created_at_ms > 0 and enr.revoked_at_ms == 0
    # The ADMIN's own token is personal, the bootstrap one included.
    assert all(not t.enrollment for t in my_tokens(w.admin))


def test_enrollment_token_cannot_read_the_reporter(c):
    w = c.w
    cl = submit(w.G1.member, reporter=REPORTER)
    # The ADMIN enrolls a new LEADER of the owner unit and tries to read the contact through
    # the token it issued (finding 5).
    leader = w.admin.admin.CreateUser(A.CreateUserRequest(unit_id=w.G1.id, name="g1-new-leader",
                                                          role=C.ROLE_LEADER), timeout=10)
    enr = w.admin.admin.IssueToken(A.IssueTokenRequest(user_id=leader.id, note="enrollment"), timeout=10)
    via_admin = stub(c.srv.addr, enr.token)
    try:
        got = via_admin.clue.GetClue(CL.GetClueRequest(clue_id=cl.id), timeout=20)
        assert got.id == cl.id and got.reporter_on_file and not got.HasField("reporter")
        assert reporter_reads(c, cl.id) == [], "a refused read is no read"
        # The enrollment token does everything else: here, a move of the owner unit's leader.
        moved = move(via_admin, cl, C.CLUE_STATE_PRELIMINARY_CHECK).clue
        assert moved.state == C.CLUE_STATE_PRELIMINARY_CHECK
        # It issues its user a personal token, which reads the contact.
        personal = via_admin.tokens.IssueMyToken(T.IssueMyTokenRequest(note="mine"), timeout=10)
    finally:
        via_admin.close()
    own = stub(c.srv.addr, personal.token)
    try:
        got = own.clue.GetClue(CL.GetClueRequest(clue_id=cl.id), timeout=20)
        assert got.reporter == REPORTER
        assert reporter_reads(c, cl.id) == [(leader.id, personal.token_id)]
        # The personal token was issued by the user, through the enrollment token: the audit
        # trail says both.
        ev = sql(c, "SELECT actor_user_id, actor_token_id, details FROM audit_events WHERE action = 'token.issue'"
                    " AND subject_id = %s ORDER BY seq", (leader.id,))
        assert [(e[0], e[1]) for e in ev] == [(w.admin.id, current_token_id(w.admin)), (leader.id, enr.token_id)]
        # Since 0040 the event pins the stored hash by its own SHA-256 (docs/AUDIT.md): the
        # token itself, and the hash the server looks it up by, stay out of the trail.
        stored = hashlib.sha256(personal.token.encode()).digest()
        assert json.loads(ev[1][2]) == {"token_id": personal.token_id, "note": "mine", "enrollment": False,
                                        "hash_sha256": hashlib.sha256(stored).hexdigest()}
        assert personal.token not in ev[1][2] and stored.hex() not in ev[1][2]
        # Once the enrollment token is revoked, the personal one goes on.
        own.tokens.RevokeMyToken(T.RevokeMyTokenRequest(token_id=enr.token_id), timeout=10)
        assert own.clue.GetClue(CL.GetClueRequest(clue_id=cl.id), timeout=20).reporter == REPORTER
    finally:
        own.close()
    gone = stub(c.srv.addr, enr.token)
    try:
        expect_status(CODE.UNAUTHENTICATED, gone.clue.GetClue, CL.GetClueRequest(clue_id=cl.id), timeout=10)
    finally:
        gone.close()
    # The world's users are made the same way: each leader's enrollment token is refused, its
    # personal token is not.
    cl2 = submit(w.G2.member, reporter=REPORTER)
    enr2 = stub(c.srv.addr, w.G2.leader.enrollment_token)
    try:
        assert not enr2.clue.GetClue(CL.GetClueRequest(clue_id=cl2.id), timeout=20).HasField("reporter")
    finally:
        enr2.close()
    assert w.G2.leader.clue.GetClue(CL.GetClueRequest(clue_id=cl2.id), timeout=20).reporter == REPORTER


def test_issue_list_revoke_own_tokens(c):
    u = c.w.new_user("X1", "MEMBER", "x1-token-user")
    before = {t.id for t in my_tokens(u)}
    r = u.tokens.IssueMyToken(T.IssueMyTokenRequest(note="laptop"), timeout=10)
    assert re.fullmatch(r"ct_[0-9a-f]{64}", r.token) and r.token_id not in before
    mine = {t.id: t for t in my_tokens(u)}
    assert set(mine) == before | {r.token_id}
    assert mine[r.token_id].note == "laptop" and not mine[r.token_id].enrollment
    assert [t.id for t in my_tokens(u)] == sorted(mine, reverse=True), "newest first"
    laptop = stub(c.srv.addr, r.token)
    try:
        assert current_token_id(laptop) == r.token_id
        rv = u.tokens.RevokeMyToken(T.RevokeMyTokenRequest(token_id=r.token_id), timeout=10)
        assert rv.token_id == r.token_id and rv.revoked_at_ms > 0
        expect_status(CODE.UNAUTHENTICATED, laptop.tokens.ListMyTokens, T.ListMyTokensRequest(), timeout=10)
    finally:
        laptop.close()
    assert r.token_id not in {t.id for t in my_tokens(u)}
    revoked = [t for t in my_tokens(u, include_revoked=True) if t.id == r.token_id]
    assert len(revoked) == 1 and revoked[0].revoked_at_ms == rv.revoked_at_ms
    msg = expect_status(CODE.FAILED_PRECONDITION, u.tokens.RevokeMyToken,
                        T.RevokeMyTokenRequest(token_id=r.token_id), timeout=10)
    assert "already revoked" in msg
    ev = sql(c, "SELECT action, actor_user_id, details::jsonb ->> 'token_id' FROM audit_events"
                " WHERE subject_type = 'user' AND subject_id = %s ORDER BY seq", (u.id,))
    assert ev[-2:] == [("token.issue", u.id, str(r.token_id)), ("token.revoke", u.id, str(r.token_id))]
    # Revoking the token one calls with signs out.
    cur = current_token_id(u)
    u.tokens.RevokeMyToken(T.RevokeMyTokenRequest(token_id=cur), timeout=10)
    expect_status(CODE.UNAUTHENTICATED, u.tokens.ListMyTokens, T.ListMyTokensRequest(), timeout=10)


def test_another_users_token_is_not_found(c):
    w = c.w
    victim = w.new_user("R2", "LEADER", "r2-victim")
    vt = current_token_id(victim)
    missing = sql(c, "SELECT max(id) + 1000 FROM tokens")[0][0]
    state = sql(c, "SELECT id, revoked_at FROM tokens ORDER BY id")
    events = max_seq(c)
    for who in (w.G1.leader, w.auditor, w.admin):
        m_other = expect_status(CODE.NOT_FOUND, who.tokens.RevokeMyToken, T.RevokeMyTokenRequest(token_id=vt),
                                timeout=10)
        m_missing = expect_status(CODE.NOT_FOUND, who.tokens.RevokeMyToken,
                                  T.RevokeMyTokenRequest(token_id=missing), timeout=10)
        assert m_other == f"token {vt} not found" and m_missing == f"token {missing} not found"
        assert vt not in {t.id for t in my_tokens(who, include_revoked=True)}
    assert sql(c, "SELECT id, revoked_at FROM tokens ORDER BY id") == state and max_seq(c) == events
    assert current_token_id(victim) == vt, "the victim's token still works"
    # Revoked tokens of another user are as invisible.
    enrollment = [t.id for t in my_tokens(victim) if t.enrollment]
    assert len(enrollment) == 1
    victim.tokens.RevokeMyToken(T.RevokeMyTokenRequest(token_id=enrollment[0]), timeout=10)
    revoked = [t.id for t in my_tokens(victim, include_revoked=True) if t.revoked_at_ms][0]
    m = expect_status(CODE.NOT_FOUND, w.G1.leader.tokens.RevokeMyToken, T.RevokeMyTokenRequest(token_id=revoked),
                      timeout=10)
    assert m == f"token {revoked} not found"


def test_get_caller_names_the_authenticated_caller(c):
    w = c.w
    events = max_seq(c)
    for who in (w.G1.leader, w.G1.member, w.R2.leader, w.X1.member, w.auditor, w.admin):
        me = who.tokens.GetCaller(T.GetCallerRequest(), timeout=10)
        assert (me.user_id, me.user_name, me.unit_id, me.unit_code) == (who.id, who.name, who.unit.id, who.unit.code), me
        assert C.Role.Name(me.role) == "ROLE_" + who.role, me
        assert C.UnitKind.Name(me.unit_kind) == "UNIT_KIND_" + who.unit.kind, me
        assert me.token_id == current_token_id(who) and not me.enrollment, me
    # The enrollment token a user was issued says so; the same user, the same answer otherwise.
    u = w.G2.leader
    enrolled = stub(c.srv.addr, u.enrollment_token)
    try:
        me = enrolled.tokens.GetCaller(T.GetCallerRequest(), timeout=10)
        assert me.enrollment and me.user_id == u.id and me.token_id != current_token_id(u), me
    finally:
        enrolled.close()
    assert max_seq(c) == events, "GetCaller wrote an audit event"
    with grpc.insecure_channel(c.srv.addr) as ch:
        bare = S.token_pb2_grpc.TokenServiceStub(ch)
        expect_status(CODE.UNAUTHENTICATED, bare.GetCaller, T.GetCallerRequest(), timeout=10)
        expect_status(CODE.UNAUTHENTICATED, bare.GetCaller, T.GetCallerRequest(), timeout=10,
                      metadata=(("authorization", "Bearer ct_" + "0" * 64),))


def test_get_caller_names_a_long_name_whole(c):
    """A name of 100 characters, the most the API takes, is up to 400 bytes of UTF-8:
    GetCaller answers it whole, so a strict client (grpcio, C++ protobuf underneath) can
    decode it, and the unit's 16-character code with it. Before, names were cut at 127 bytes,
    inside a character, and grpcio failed the call (INTERNAL, "Exception deserializing
    response")."""
    w = c.w
    code = "L" + "0123456789ABCDE"
    unit = w.admin.admin.CreateUnit(A.CreateUnitRequest(kind=C.UNIT_KIND_ROOM, code=code, name="长名字的室"),
                                    timeout=10)
    names = ["张" * 43, "监" * 100, "😀" * 100, "Zoë" * 33 + "x", "a" * 100, "é" * 63 + "x", "é" * 64]
    for name in names:
        u = w.admin.admin.CreateUser(A.CreateUserRequest(unit_id=unit.id, name=name, role=C.ROLE_MEMBER),
                                     timeout=10)
        t = w.admin.admin.IssueToken(A.IssueTokenRequest(user_id=u.id, note="long name"), timeout=10)
        who = stub(c.srv.addr, t.token)
        try:
            me = who.tokens.GetCaller(T.GetCallerRequest(), timeout=10)
            assert (me.user_id, me.user_name, me.unit_code) == (u.id, name, code), (me, len(name.encode()))
        finally:
            who.close()


def test_bad_input_and_limits(c):
    w = c.w
    u = w.new_user("R1", "MEMBER", "r1-limits")
    state = sql(c, "SELECT id, revoked_at FROM tokens ORDER BY id")
    events = max_seq(c)
    for tid, word in ((0, "token_id"), (-5, "token_id")):
        expect_status(CODE.INVALID_ARGUMENT, u.tokens.RevokeMyToken, T.RevokeMyTokenRequest(token_id=tid),
                      timeout=10, details_has=[word])
    for note in ("x" * 300, "bad\x01note", "line\nbreak"):
        expect_status(CODE.INVALID_ARGUMENT, u.tokens.IssueMyToken, T.IssueMyTokenRequest(note=note),
                      timeout=10, details_has=["note"])
    assert sql(c, "SELECT id, revoked_at FROM tokens ORDER BY id") == state and max_seq(c) == events
    # No token, a bad token: UNAUTHENTICATED before anything else.
    ch = grpc.insecure_channel(c.srv.addr)
    try:
        bare = S.token_pb2_grpc.TokenServiceStub(ch)
        expect_status(CODE.UNAUTHENTICATED, bare.ListMyTokens, T.ListMyTokensRequest(), timeout=10)
        expect_status(CODE.UNAUTHENTICATED, bare.IssueMyToken, T.IssueMyTokenRequest(), timeout=10,
                      metadata=(("authorization", "Bearer ct_" + "0" * 64),))
    finally:
        ch.close()
    # At most 16 unrevoked tokens per user: the 17th is refused until one is revoked.
    live = len(my_tokens(u))
    issued = [u.tokens.IssueMyToken(T.IssueMyTokenRequest(), timeout=10) for _ in range(16 - live)]
    assert len(my_tokens(u)) == 16
    msg = expect_status(CODE.RESOURCE_EXHAUSTED, u.tokens.IssueMyToken, T.IssueMyTokenRequest(), timeout=10)
    assert "16" in msg and "revoke" in msg
    u.tokens.RevokeMyToken(T.RevokeMyTokenRequest(token_id=issued[0].token_id), timeout=10)
    u.tokens.IssueMyToken(T.IssueMyTokenRequest(note="again"), timeout=10)
    assert len(my_tokens(u)) == 16 and len(my_tokens(u, include_revoked=True)) == 17


def test_an_administrator_issues_within_the_same_bound(c):
    """IssueToken (enrollment, or an ADMIN's own) is held to the 16 unrevoked tokens a user may
    have, as IssueMyToken is, keyed or not; and however many revoked tokens pile up, the live
    ones are listed first, so that no working token falls out of the user's list."""
    w = c.w
    u = w.new_user("R1", "MEMBER", "r1-enrolled")
    admin = w.admin
    live = len(my_tokens(u))
    issued = [admin.admin.IssueToken(A.IssueTokenRequest(user_id=u.id, note=f"e{i}"), timeout=10)
              for i in range(16 - live)]
    state = sql(c, "SELECT id, revoked_at FROM tokens ORDER BY id")
    events = max_seq(c)
    for req in (A.IssueTokenRequest(user_id=u.id), A.IssueTokenRequest(user_id=u.id, request_id=new_request_id())):
        msg = expect_status(CODE.RESOURCE_EXHAUSTED, admin.admin.IssueToken, req, timeout=10)
        assert f"user {u.id} already has 16 unrevoked tokens" in msg and "revoke" in msg, msg
    expect_status(CODE.RESOURCE_EXHAUSTED, u.tokens.IssueMyToken, T.IssueMyTokenRequest(), timeout=10)
    assert sql(c, "SELECT id, revoked_at FROM tokens ORDER BY id") == state and max_seq(c) == events
    # A keyed retry replaces its own token: still within the bound.
    key = new_request_id()
    admin.admin.RevokeToken(A.RevokeTokenRequest(token_id=issued[0].token_id), timeout=10)
    first = admin.admin.IssueToken(A.IssueTokenRequest(user_id=u.id, request_id=key), timeout=10)
    again = admin.admin.IssueToken(A.IssueTokenRequest(user_id=u.id, request_id=key), timeout=10)
    assert again.token_id != first.token_id and len(my_tokens(u)) == 16
    # 210 revoked tokens newer than the live ones: the live ones still come first.
    for _ in range(210):
        t = admin.admin.IssueToken(A.IssueTokenRequest(user_id=w.G1.member.id), timeout=10)
        admin.admin.RevokeToken(A.RevokeTokenRequest(token_id=t.token_id), timeout=10)
    listed = w.G1.member.tokens.ListMyTokens(T.ListMyTokensRequest(include_revoked=True), timeout=10)
    live_ids = {t.id for t in my_tokens(w.G1.member)}
    assert listed.truncated and len(listed.tokens) == 200
    assert {t.id for t in listed.tokens if not t.revoked_at_ms} == live_ids
    assert all(not t.revoked_at_ms for t in listed.tokens[:len(live_ids)])


def test_two_administrators_issuing_each_other_tokens_at_once(c):
    """IssueToken locks the caller's row and the user's (whose live tokens it counts): taken
    one after the other, two administrators issuing each other a token at the same moment
    deadlocked (ABORTED). Both rows are now locked at once, in id order: every call answers."""
    w = c.w
    a, b = w.admin, w.new_user(w.admin_unit.code, "ADMIN", "cross-admin")
    outcomes, lock = [], threading.Lock()

    def issue(frm, to, barrier):
        barrier.wait()
        try:
            r = frm.admin.IssueToken(A.IssueTokenRequest(user_id=to.id, note="cross"), timeout=20)
            frm.admin.RevokeToken(A.RevokeTokenRequest(token_id=r.token_id), timeout=20)
            out = "OK"
        except grpc.RpcError as e:
            out = f"{e.code().name}: {e.details()}"
        with lock:
            outcomes.append(out)
    for _ in range(40):
        bar = threading.Barrier(2)
        ts = [threading.Thread(target=issue, args=(a, b, bar)), threading.Thread(target=issue, args=(b, a, bar))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    assert outcomes == ["OK"] * 80, [o for o in outcomes if o != "OK"][:3]


def test_demo_users_get_personal_tokens(c):
    pg = c.pg
    db = pg.new_database()
    srv = harness.Clued(pg.url(db)).start()
    d = tempfile.mkdtemp(prefix="clued-demo-")
    path = os.path.join(d, "tokens")
    try:
        out = srv.run("bootstrap", "--demo-tokens", path).stdout
        assert "demo units" in out, out
        demo = {}
        with open(path) as f:
            for line in f:
                code, role, name, token = line.split()
                demo[(code, role)] = token
        conn = pg.connect(db)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT count(*), count(*) FILTER (WHERE issued_by = user_id) FROM tokens t"
                        " JOIN users u ON u.id = t.user_id WHERE u.role IN ('LEADER', 'MEMBER')")
            assert cur.fetchone() == (12, 12)
            # The demo's rectification items, recorded (and audited) by the groups' leaders.
            cur.execute("SELECT count(*), count(DISTINCT i.supervising_unit), bool_and(u.role = 'LEADER'),"
                        " (SELECT count(*) FROM audit_events e WHERE e.action = 'rect.create'"
                        "  AND e.subject_type = 'rectification')"
                        " FROM rect_items i JOIN users u ON u.id = i.created_by")
            assert cur.fetchone() == (3, 2, True, 3)
            # The demo's clues and handlers (issue 14): two clues, three handlers, one seconded
            # from a room to each group, each assignment audited.
            cur.execute("SELECT (SELECT count(*) FROM clues), count(*),"
                        " count(*) FILTER (WHERE hu.unit_id <> h.owner_unit),"
                        " (SELECT count(*) FROM audit_events WHERE action = 'clue.assign')"
                        " FROM clue_handlers h JOIN users hu ON hu.id = h.user_id")
            assert cur.fetchone() == (2, 3, 2, 3)
        conn.close()
        member, leader = stub(srv.addr, demo[("G01", "MEMBER")]), stub(srv.addr, demo[("G01", "LEADER")])
        try:
            cl = submit(member, reporter=REPORTER)
            assert leader.clue.GetClue(CL.GetClueRequest(clue_id=cl.id), timeout=20).reporter == REPORTER
            assert not any(t.enrollment for t in my_tokens(leader))
        finally:
            member.close()
            leader.close()
    finally:
        srv.stop()
        harness.subprocess.call(["rm", "-rf", d])


def caller_code(u):
    """The code of u's GetCaller: OK while its token works."""
    try:
        u.tokens.GetCaller(T.GetCallerRequest(), timeout=10)
        return CODE.OK
    except grpc.RpcError as e:
        return e.code()


def test_disabling_an_administrator_revokes_the_tokens_it_issued(c):
    """An administrator sees the secret of every enrollment token it issues. Disabled, it must
    not go on through them: the disable revokes every live token it issued to another user, on
    this instance at the next call and on another within a second, each revocation audited on
    its user's chain. Tokens the users issued themselves stay."""
    w = c.w
    issuer = w.new_user(w.admin_unit.code, "ADMIN", "issuer-admin")
    other_admin = issuer.admin.CreateUser(A.CreateUserRequest(unit_id=w.admin_unit.id, name="issued-admin",
                                                              role=C.ROLE_ADMIN), timeout=10)
    leader = issuer.admin.CreateUser(A.CreateUserRequest(unit_id=w.G1.id, name="issued-leader",
                                                         role=C.ROLE_LEADER), timeout=10)
    e_admin = issuer.admin.IssueToken(A.IssueTokenRequest(user_id=other_admin.id), timeout=10)
    e_leader = issuer.admin.IssueToken(A.IssueTokenRequest(user_id=leader.id), timeout=10)
    own = world.exchange_token(c.srv.addr, e_leader.token)  # the leader's own, issued by itself
    srv2 = harness.Clued(c.pg.url(c.dbname)).start()
    kept = [stub(c.srv.addr, e_admin.token), stub(c.srv.addr, e_leader.token),
            stub(srv2.addr, e_admin.token), stub(srv2.addr, e_leader.token)]
    mine = [stub(c.srv.addr, own), stub(srv2.addr, own)]
    try:
        # Each works, and is cached, on both instances.
        assert [caller_code(u) for u in kept + mine] == [CODE.OK] * 6
        before = max_seq(c)
        w.admin.admin.DisableUser(A.DisableUserRequest(user_id=issuer.id, reason="left"), timeout=10)
        # This instance: at once. The other: within a second of the commit.
        assert [caller_code(u) for u in kept[:2]] == [CODE.UNAUTHENTICATED] * 2
        harness.wait_for(lambda: [caller_code(u) for u in kept[2:]] == [CODE.UNAUTHENTICATED] * 2,
                         timeout=5, what="the other instance refusing the issuer's tokens")
        expect_status(CODE.UNAUTHENTICATED, kept[0].admin.DisableUser,
                      A.DisableUserRequest(user_id=w.admin.id), timeout=10)
        assert [caller_code(u) for u in mine] == [CODE.OK] * 2
        assert caller_code(w.admin) == CODE.OK
        revoked = sql(c, "SELECT id FROM tokens WHERE issued_by = %s AND user_id <> %s AND revoked_at IS NOT NULL"
                         " ORDER BY id", (issuer.id, issuer.id))
        assert [r[0] for r in revoked] == sorted([e_admin.token_id, e_leader.token_id]), revoked
        evs = sql(c, "SELECT action, subject_id, actor_user_id, details::jsonb->>'token_id', details::jsonb->>'issued_by',"
                     " details::jsonb->>'cause' FROM audit_events WHERE seq > %s ORDER BY seq", (before,))
        assert evs == [("user.disable", issuer.id, w.admin.id, None, None, None),
                       ("token.revoke", other_admin.id, w.admin.id, str(e_admin.token_id), str(issuer.id),
                        "issuer_disabled"),
                       ("token.revoke", leader.id, w.admin.id, str(e_leader.token_id), str(issuer.id),
                        "issuer_disabled")], evs
        for uid in (other_admin.id, leader.id):
            got = w.auditor.audit.VerifyAuditChain(AU.VerifyAuditChainRequest(subject_type="user", subject_id=uid),
                                                   timeout=30)
            assert got.ok, got
    finally:
        for u in kept + mine:
            u.close()
        srv2.stop()


def test_a_disable_that_would_leave_no_administrator_working_is_refused(c):
    """The tokens a disable revokes with it count: an administrator whose only token the
    disabled one issued would be locked out with it, so such a disable is refused, nothing
    written, until that administrator holds a token of its own."""
    pg = c.pg
    db = pg.new_database()
    srv = harness.Clued(pg.url(db)).start()
    conn = pg.connect(db)
    conn.autocommit = True
    users = []
    try:
        first = stub(srv.addr, world.bootstrap_token(srv))
        users.append(first)
        adm_unit = first.tokens.GetCaller(T.GetCallerRequest(), timeout=10).unit_id

        def admin(by, name):
            u = by.admin.CreateUser(A.CreateUserRequest(unit_id=adm_unit, name=name, role=C.ROLE_ADMIN), timeout=10)
            tok = by.admin.IssueToken(A.IssueTokenRequest(user_id=u.id), timeout=10)
            users.append(stub(srv.addr, tok.token))
            return u, users[-1]
        a, a_enr = admin(first, "admin-a")
        a_own = stub(srv.addr, world.exchange_token(srv.addr, a_enr.token))
        users.append(a_own)
        b, b_enr = admin(a_own, "admin-b")  # b's one token, issued by a
        first_id = first.tokens.GetCaller(T.GetCallerRequest(), timeout=10).user_id
        a_own.admin.DisableUser(A.DisableUserRequest(user_id=first_id), timeout=10)

        def state():
            with conn.cursor() as cur:
                cur.execute("SELECT (SELECT max(seq) FROM audit_events),"
                            " (SELECT array_agg(id ORDER BY id) FROM tokens WHERE revoked_at IS NULL),"
                            " (SELECT array_agg(id ORDER BY id) FROM users WHERE disabled)")
                return cur.fetchone()
        was = state()
        msg = expect_status(CODE.FAILED_PRECONDITION, b_enr.admin.DisableUser, A.DisableUserRequest(user_id=a.id),
                            timeout=10)
        assert msg.startswith(f"disabling user {a.id} would also revoke the tokens it issued") \
            and "IssueMyToken" in msg, msg
        assert state() == was
        # With a token of its own, b disables a; a's and the token a issued b stop working.
        b_own = stub(srv.addr, world.exchange_token(srv.addr, b_enr.token))
        users.append(b_own)
        b_own.admin.DisableUser(A.DisableUserRequest(user_id=a.id), timeout=10)
        assert [caller_code(u) for u in (a_own, b_enr, b_own)] == [CODE.UNAUTHENTICATED] * 2 + [CODE.OK]
    finally:
        for u in users:
            u.close()
        conn.close()
        srv.stop()


def test_cluectl_token(c):
    u = c.w.new_user("G3", "LEADER", "g3-cli")
    env = {"CLUED_SERVER": c.srv.addr, "CLUED_TOKEN": u.token}

    def ctl(*args, check=0, token=None):
        e = dict(env)
        if token is not None:
            e["CLUED_TOKEN"] = token
        return harness.cluectl(*args, env=e, check=check)

    out = ctl("token", "list").stdout
    assert "ENROLLMENT" in out and "ISSUED BY" in out and "CURRENT" in out
    listed = json.loads(ctl("--json", "token", "list").stdout)["tokens"]
    assert len(listed) == 2 and sum(1 for t in listed if t.get("current")) == 1
    assert sum(1 for t in listed if t.get("enrollment")) == 1
    r = ctl("token", "issue", "--note", "cli")
    tok = r.stdout.strip()
    assert re.fullmatch(r"ct_[0-9a-f]{64}", tok) and "shown only this once" in r.stderr
    tid = int(re.search(r"token (\d+) issued", r.stderr).group(1))
    assert json.loads(ctl("--json", "token", "list", token=tok).stdout)["tokens"][0]["current"]
    # Bad input and another user's token: exit 2 for usage, 1 with the status for the server's no.
    assert ctl("token", "revoke", "abc", check=2).returncode == 2
    assert ctl("token", "revoke", check=2).returncode == 2
    other = current_token_id(c.w.G1.leader)
    r = ctl("token", "revoke", str(other), check=1)
    assert "NOT_FOUND" in r.stderr and f"token {other} not found" in r.stderr
    r = ctl("token", "issue", "--note", "x" * 300, check=1)
    assert "INVALID_ARGUMENT" in r.stderr
    r = ctl("--json", "token", "revoke", str(tid))
    assert json.loads(r.stdout)["token_id"] == str(tid) or json.loads(r.stdout)["token_id"] == tid
    assert ctl("token", "list", token=tok, check=1).returncode == 1
    full = json.loads(ctl("--json", "token", "list", "--all").stdout)["tokens"]
    assert [t for t in full if int(t["id"]) == tid][0].get("revoked_at_ms")


def test_an_issue_signed_with_a_token_revoked_first_is_refused(c):
    """An IssueMyToken signed with a token T, whose revocation commits while the issue waits,
    is refused and issues nothing; so is an administrator's IssueToken
    for another user signed with a token revoked first. Each race is put in that order with a
    lock on the caller's audit chain head, which a revocation takes last."""
    w = c.w
    held = c.pg.connect(c.dbname)
    held.autocommit = False

    def waiting():
        return sql(c, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                      " AND wait_event_type = 'Lock'")[0][0]

    def race(caller_uid, token_id, revoke, issue, refusal=None):
        """revoke() and then issue(), each sent while the head of caller_uid's chain is locked;
        the issue is refused once the revocation (or disable) is through."""
        with held.cursor() as cur:
            cur.execute("SELECT 1 FROM audit_heads WHERE subject_type = 'user' AND subject_id = %s FOR UPDATE",
                        (caller_uid,))
        r = revoke()
        harness.wait_for(lambda: waiting() == 1, what="the revocation waiting for the head")
        i = issue()
        harness.wait_for(lambda: waiting() == 2, what="the issue waiting behind it")
        held.rollback()
        r.result()
        try:
            got = i.result()
        except grpc.RpcError as e:
            # The database's refusal; or UNAUTHENTICATED where the instance heard of the
            # revocation before the refusal came back (as the one that made it does).
            assert e.code() == CODE.UNAUTHENTICATED or (
                e.code() == CODE.FAILED_PRECONDITION
                and e.details() == (refusal or f"token {token_id}, the caller's, was revoked meanwhile")), \
                (e.code(), e.details())
            return e.code()
        raise AssertionError(f"token {got.token_id} issued by token {token_id} after its revocation")

    def tokens_by(token_id):  # events of tokens issued by a call signed with token_id
        return sql(c, "SELECT seq FROM audit_events WHERE action = 'token.issue' AND actor_token_id = %s",
                   (token_id,))

    deaf = None
    try:
        u = w.new_user("G1", "MEMBER", "g1-revoked-while-issuing")
        uid = sql(c, "SELECT id FROM users WHERE name = 'g1-revoked-while-issuing'")[0][0]
        t = u.tokens.IssueMyToken(T.IssueMyTokenRequest(note="T"), timeout=10)
        # Issued through an instance that does not hear of revocations (it caches nothing), so
        # the refusal is the database's own.
        deaf = harness.Clued(c.pg.url(c.dbname), args=["--auth-cache-size", "0"]).start(migrate=False)
        signed = stub(deaf.addr, t.token)
        count = sql(c, "SELECT count(*) FROM tokens WHERE user_id = %s", (uid,))[0][0]
        assert race(uid, t.token_id,
                    lambda: w.admin.admin.RevokeToken.future(A.RevokeTokenRequest(token_id=t.token_id), timeout=30),
                    lambda: signed.tokens.IssueMyToken.future(T.IssueMyTokenRequest(note="minted"), timeout=30)
                    ) == CODE.FAILED_PRECONDITION
        assert sql(c, "SELECT count(*) FROM tokens WHERE user_id = %s", (uid,))[0][0] == count
        assert tokens_by(t.token_id) == []
        signed.close()
        # The same with the caller disabled first.
        v = w.new_user("G1", "MEMBER", "g1-disabled-while-issuing")
        vid = sql(c, "SELECT id FROM users WHERE name = 'g1-disabled-while-issuing'")[0][0]
        tv = v.tokens.IssueMyToken(T.IssueMyTokenRequest(note="TV"), timeout=10)
        signed = stub(deaf.addr, tv.token)
        assert race(vid, tv.token_id,
                    lambda: w.admin.admin.DisableUser.future(A.DisableUserRequest(user_id=vid, reason="调离"), timeout=30),
                    lambda: signed.tokens.IssueMyToken.future(T.IssueMyTokenRequest(note="minted"), timeout=30),
                    refusal=f"user {vid} is disabled") == CODE.FAILED_PRECONDITION
        assert tokens_by(tv.token_id) == []
        signed.close()

        # An administrator issuing a token for another user, its own token revoked by another.
        adm = w.new_user(w.admin_unit.code, "ADMIN", "second-admin")
        aid = sql(c, "SELECT id FROM users WHERE name = 'second-admin'")[0][0]
        ta = adm.tokens.IssueMyToken(T.IssueMyTokenRequest(note="TA"), timeout=10)
        issuer = stub(c.srv.addr, ta.token)
        count = sql(c, "SELECT count(*) FROM tokens WHERE user_id = %s", (uid,))[0][0]
        race(aid, ta.token_id,
                   lambda: w.admin.admin.RevokeToken.future(A.RevokeTokenRequest(token_id=ta.token_id), timeout=30),
                   lambda: issuer.admin.IssueToken.future(A.IssueTokenRequest(user_id=uid, note="minted"), timeout=30))
        assert sql(c, "SELECT count(*) FROM tokens WHERE user_id = %s", (uid,))[0][0] == count
        assert tokens_by(ta.token_id) == []
        issuer.close()
    finally:
        held.close()
        if deaf:
            deaf.stop()


def test_issues_in_an_hour_are_bounded(c):
    """--token-issues-per-hour: the tokens a user issues themself in any hour are counted in the
    database; past the instance's limit IssueMyToken is RESOURCE_EXHAUSTED with the time the
    next may be issued, nothing written. Revoking frees none. An administrator's enrollment
    token neither counts nor is held; another user is not held; a keyed retry at the limit
    keeps the token its key issued. Once the oldest is an hour old, one more may be issued."""
    w = c.w
    srv = harness.Clued(c.pg.url(c.dbname), args=["--token-issues-per-hour", "4"]).start(migrate=False)
    u = w.new_user("R1", "MEMBER", "r1-hourly")  # its personal token: its first issue (on c.srv)
    uid = sql(c, "SELECT id FROM users WHERE name = 'r1-hourly'")[0][0]
    us, other = stub(srv.addr, u.token), None

    def own_issues():
        return sql(c, "SELECT id, created_at FROM tokens WHERE user_id = %s AND issued_by = user_id"
                      " ORDER BY created_at DESC, id DESC", (uid,))

    try:
        assert len(own_issues()) == 1
        us.tokens.IssueMyToken(T.IssueMyTokenRequest(note="two"), timeout=10)
        us.tokens.IssueMyToken(T.IssueMyTokenRequest(note="three"), timeout=10)
        keyed = T.IssueMyTokenRequest(note="four", request_id=new_request_id())
        fourth = us.tokens.IssueMyToken(keyed, timeout=10)
        rows, events = sql(c, "SELECT * FROM tokens ORDER BY id"), max_seq(c)
        # The oldest issue made half an hour ago and 0.4 s into its second: the next may come
        # an hour after it, named as the second after that moment, never the one before.
        first_id, first_at = own_issues()[-1]
        with c.db.cursor() as cur:
            cur.execute("UPDATE tokens SET created_at = date_trunc('second', now()) - interval '30 minutes'"
                        " + interval '0.4 seconds' WHERE id = %s RETURNING created_at", (first_id,))
            due = cur.fetchone()[0] + datetime.timedelta(hours=1, seconds=1)
        at = due.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        rows = sql(c, "SELECT * FROM tokens ORDER BY id")
        msg = expect_status(CODE.RESOURCE_EXHAUSTED, us.tokens.IssueMyToken, T.IssueMyTokenRequest(note="five"),
                            timeout=10)
        assert "issued 4 tokens in the last hour" in msg and at in msg, (msg, at)
        # A retry of the fourth at the limit: refused, and the fourth still works.
        expect_status(CODE.RESOURCE_EXHAUSTED, us.tokens.IssueMyToken, keyed, timeout=10)
        held = stub(srv.addr, fourth.token)
        try:
            assert held.tokens.GetCaller(T.GetCallerRequest(), timeout=10).user_id == uid
        finally:
            held.close()
        assert sql(c, "SELECT * FROM tokens ORDER BY id") == rows and max_seq(c) == events
        # Revoking one frees nothing; the hour's issues are what counts.
        us.tokens.RevokeMyToken(T.RevokeMyTokenRequest(token_id=fourth.token_id), timeout=10)
        expect_status(CODE.RESOURCE_EXHAUSTED, us.tokens.IssueMyToken, T.IssueMyTokenRequest(), timeout=10)
        # An enrollment token from an administrator is not an issue of the user's own.
        w.admin.admin.IssueToken(A.IssueTokenRequest(user_id=uid, note="onboarding"), timeout=10)
        expect_status(CODE.RESOURCE_EXHAUSTED, us.tokens.IssueMyToken, T.IssueMyTokenRequest(), timeout=10)
        other = stub(srv.addr, w.new_user("R1", "MEMBER", "r1-hourly-other").token)
        other.tokens.IssueMyToken(T.IssueMyTokenRequest(note="not held"), timeout=10)
        # The oldest issue an hour old: one more may come, then the limit holds again.
        oldest = own_issues()[-1]
        with c.db.cursor() as cur:
            cur.execute("UPDATE tokens SET created_at = now() - interval '61 minutes' WHERE id = %s", (oldest[0],))
        try:
            us.tokens.IssueMyToken(T.IssueMyTokenRequest(note="next hour"), timeout=10)
            expect_status(CODE.RESOURCE_EXHAUSTED, us.tokens.IssueMyToken, T.IssueMyTokenRequest(), timeout=10)
        finally:
            with c.db.cursor() as cur:
                cur.execute("UPDATE tokens SET created_at = %s WHERE id = %s", (oldest[1], oldest[0]))
        assert len(own_issues()) == 5
        with c.db.cursor() as cur:
            cur.execute("UPDATE tokens SET created_at = %s WHERE id = %s", (first_at, first_id))
    finally:
        us.close()
        if other:
            other.close()
        srv.stop()


if __name__ == "__main__":
    harness.run_tests(globals(), setup, teardown)
