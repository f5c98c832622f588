"""Retries of the administration, token and case-membership calls (migration 0052,
docs/WRITES.md "Retries").

CreateUnit, CreateUser, DisableUser, IssueToken, RevokeToken, IssueMyToken, RevokeMyToken,
AddParticipant, RemoveParticipant, AddClueToCase and RemoveClueFromCase take an optional
request_id. Checked for each:
- a retry with the same id and fields answers the first call's result and makes nothing more
  (one unit, user, token, participant, audit event);
- the same id with other fields is INVALID_ARGUMENT "... was already used for a different
  request", and nothing changes;
- ids are per caller: another user's call with the same id is that user's own request, and
  never answers the first user's result;
- a call without a request_id behaves as before (its retry is done again, or refused as a
  duplicate);
- two identical calls racing at the key's lock make one;
- IssueToken and IssueMyToken: a retry revokes the token its id issued and answers a fresh
  one, so that one id leaves exactly one live token; no secret is stored in clear; a retry
  after that token was revoked, or signed with that very token, is refused (0055);
- a token-issue retry and a change of its user queued behind the user's audit chain head
  both succeed: one lock order, no deadlock; an IssueToken queued behind a DisableUser of its
  user is refused (0055);
- cluectl sends a fresh id, or the --request-id given, and prints it with --json.
"""

import json
import os
import sys
import threading

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import expect_status, new_request_id  # noqa: E402
import world  # noqa: E402

S = harness.stubs()
ad = S.admin_pb2
tk = S.token_pb2
cs = S.case_pb2
pb = S.clue_pb2
cm = S.common_pb2
Code = grpc.StatusCode
CHANGED = "was already used for a different request"
OTHER_CALL = "was already used for another call"


def setup():
    return world.served()


teardown = world.unserve

TABLES = ("units", "users", "tokens", "clue_requests", "joint_cases", "case_participants", "case_clues",
          "audit_events")


def snapshot(c):
    """Everything these calls could change: the rows of each table, the disabled users, the
    revoked tokens, the clues' versions."""
    with c.db.cursor() as cur:
        cur.execute("SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in TABLES)
                    + ", (SELECT count(*) FROM users WHERE disabled)"
                    + ", (SELECT count(*) FROM tokens WHERE revoked_at IS NOT NULL)"
                    + ", (SELECT coalesce(sum(version), 0) FROM clues)")
        return cur.fetchone()


def q(c, sql, *args):
    with c.db.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def events(c, kind, subject_id=None):
    if subject_id is None:
        return q(c, "SELECT count(*) FROM audit_events WHERE action = %s", kind)[0][0]
    return q(c, "SELECT count(*) FROM audit_events WHERE action = %s AND subject_id = %s", kind,
             subject_id)[0][0]


def refused_unchanged(c, fn, req, what=CHANGED):
    before = snapshot(c)
    expect_status(Code.INVALID_ARGUMENT, fn, req, timeout=20, details_has=(what, req.request_id))
    assert snapshot(c) == before, (before, snapshot(c))


def retried_unchanged(c, fn, req, first):
    """fn(req) again: the first answer, nothing written."""
    before = snapshot(c)
    again = fn(req, timeout=20)
    assert snapshot(c) == before, (before, snapshot(c))
    assert again == first, (again, first)
    return again


def caller(addr, token):
    """GetCaller with token: its code (OK, or UNAUTHENTICATED for a revoked one)."""
    ch = grpc.insecure_channel(addr)
    try:
        stub = S.token_pb2_grpc.TokenServiceStub(ch)
        stub.GetCaller(tk.GetCallerRequest(), metadata=(("authorization", "Bearer " + token),), timeout=10)
        return Code.OK
    except grpc.RpcError as e:
        return e.code()
    finally:
        ch.close()


def racing(c, user, fn, req, n=2):
    """n identical calls fn(req) sent while a session holds the lock of their key, all waiting
    at it; then released. Returns each call's (code, reply or message)."""
    pg = harness.Postgres.get()
    lk, db = pg.connect(c.dbname), pg.connect(c.dbname)
    lk.autocommit = False
    lk.cursor().execute("SELECT pg_advisory_xact_lock(hashtextextended('clue_requests/' || %s || '/' || %s::uuid, 0))",
                        (user.id, req.request_id))
    out = [None] * n

    def run(i):
        try:
            out[i] = (Code.OK, fn(req, timeout=30))
        except grpc.RpcError as e:
            out[i] = (e.code(), e.details())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()

    def waiting():
        with db.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
            return cur.fetchone()[0] >= n

    try:
        harness.wait_for(waiting, what="the calls at their key's lock")
    finally:
        lk.rollback()
        lk.close()
        db.close()
        for t in threads:
            t.join()
    return out


# ---- units and users ------------------------------------------------------------------------


def unit_req(key, code="RT1", name="重试室"):
    return ad.CreateUnitRequest(kind=cm.UNIT_KIND_ROOM, code=code, name=name, request_id=key)


def test_create_unit_retry(c):
    adm = c.w.admin.admin
    key = new_request_id()
    first = adm.CreateUnit(unit_req(key), timeout=20)
    retried_unchanged(c, adm.CreateUnit, unit_req(key), first)
    # The key spelled in upper case is the same key.
    retried_unchanged(c, adm.CreateUnit, unit_req(key.upper()), first)
    refused_unchanged(c, adm.CreateUnit, unit_req(key, name="另一室"))
    refused_unchanged(c, adm.CreateUnit, unit_req(key, code="RT2"))
    assert q(c, "SELECT count(*) FROM units WHERE code = 'RT1'") == [(1,)]
    assert events(c, "unit.create", first.id) == 1
    # Without a request_id, as before: a second call is another creation, refused as a duplicate.
    plain = ad.CreateUnitRequest(kind=cm.UNIT_KIND_ROOM, code="RT3", name="无键室")
    adm.CreateUnit(plain, timeout=20)
    expect_status(Code.ALREADY_EXISTS, adm.CreateUnit, plain, timeout=20)
    # A malformed request_id is refused before anything.
    expect_status(Code.INVALID_ARGUMENT, adm.CreateUnit, unit_req("not-a-uuid", code="RT4"), timeout=20,
                  details_has=("request_id",))


def user_req(c, key, name="重试用户", role=cm.ROLE_MEMBER):
    return ad.CreateUserRequest(unit_id=c.w.G1.id, name=name, role=role, request_id=key or "")


def test_create_user_retry(c):
    adm = c.w.admin.admin
    key = new_request_id()
    first = adm.CreateUser(user_req(c, key), timeout=20)
    retried_unchanged(c, adm.CreateUser, user_req(c, key), first)
    refused_unchanged(c, adm.CreateUser, user_req(c, key, name="另一用户"))
    refused_unchanged(c, adm.CreateUser, user_req(c, key, role=cm.ROLE_LEADER))
    assert q(c, "SELECT count(*) FROM users WHERE name = '重试用户'") == [(1,)]
    assert events(c, "user.create", first.id) == 1
    plain = ad.CreateUserRequest(unit_id=c.w.G1.id, name="无键用户", role=cm.ROLE_MEMBER)
    adm.CreateUser(plain, timeout=20)
    expect_status(Code.ALREADY_EXISTS, adm.CreateUser, plain, timeout=20)


def test_ids_are_per_caller(c):
    w = c.w
    # A second ADMIN sends the first's key with the same fields: its own request, which is not
    # answered the first's user (the name is taken: ALREADY_EXISTS, as any new creation).
    other_admin = w.new_user(w.admin_unit.code, "ADMIN", "第二管理员")
    key = new_request_id()
    first = w.admin.admin.CreateUser(user_req(c, key, name="每人一键"), timeout=20)
    expect_status(Code.ALREADY_EXISTS, other_admin.admin.CreateUser, user_req(c, key, name="每人一键"), timeout=20)
    mine = other_admin.admin.CreateUser(user_req(c, key, name="每人一键二"), timeout=20)
    assert mine.id != first.id
    # Two users issue themselves a token with one key: each gets a token of their own, and
    # neither revokes the other's.
    key = new_request_id()
    a = w.G1.member.tokens.IssueMyToken(tk.IssueMyTokenRequest(note="共用键", request_id=key), timeout=20)
    b = w.G2.member.tokens.IssueMyToken(tk.IssueMyTokenRequest(note="共用键", request_id=key), timeout=20)
    assert a.token_id != b.token_id
    assert q(c, "SELECT user_id FROM tokens WHERE id = %s", b.token_id) == [(w.G2.member.id,)]
    assert caller(w.addr, a.token) == Code.OK and caller(w.addr, b.token) == Code.OK
    # One key names one request of its user across every kind of call.
    key = new_request_id()
    w.admin.admin.CreateUnit(unit_req(key, code="RT9", name="键室"), timeout=20)
    refused_unchanged(c, w.admin.admin.CreateUser, user_req(c, key, name="键用户"), OTHER_CALL)
    sub = pb.SubmitClueRequest(request_id=key, title="线索", summary="摘要", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
                               subject=pb.SubjectPerson(name="张某"), host_unit="市发展改革委")
    w.G1.member.clue.SubmitClue(sub, timeout=20)
    refused_unchanged(c, w.G1.member.tokens.IssueMyToken, tk.IssueMyTokenRequest(note="x", request_id=key),
                      OTHER_CALL)


def test_disable_user_retry(c):
    adm = c.w.admin.admin
    u = adm.CreateUser(user_req(c, None, name="将停用"), timeout=20)
    key = new_request_id()
    req = ad.DisableUserRequest(user_id=u.id, reason="离职", request_id=key)
    first = adm.DisableUser(req, timeout=20)
    assert first.disabled
    retried_unchanged(c, adm.DisableUser, req, first)
    refused_unchanged(c, adm.DisableUser, ad.DisableUserRequest(user_id=u.id, reason="调离", request_id=key))
    assert events(c, "user.disable", u.id) == 1
    # Without a request_id, as before: the second is refused.
    v = adm.CreateUser(user_req(c, None, name="将停用二"), timeout=20)
    adm.DisableUser(ad.DisableUserRequest(user_id=v.id), timeout=20)
    expect_status(Code.FAILED_PRECONDITION, adm.DisableUser, ad.DisableUserRequest(user_id=v.id), timeout=20)


# ---- tokens -------------------------------------------------------------------------------


def live_tokens(c, user_id):
    return q(c, "SELECT count(*) FROM tokens WHERE user_id = %s AND revoked_at IS NULL", user_id)[0][0]


def no_secret_stored(c, secret):
    """The secret appears in no row of the tables a token's issue writes."""
    for t in ("tokens", "clue_requests", "audit_events"):
        assert q(c, f"SELECT count(*) FROM {t} x WHERE x::text LIKE %s", "%" + secret[3:] + "%") == [(0,)], t


def check_issue_retry(c, user, issue, req, other):
    """issue(req) with a key, then again: the first token revoked, a fresh one answered, one
    live token from the key; other (the key with other fields) refused."""
    live = live_tokens(c, user.id)
    first = issue(req, timeout=20)
    assert live_tokens(c, user.id) == live + 1
    again = issue(req, timeout=20)
    assert again.token_id != first.token_id and again.token != first.token
    assert live_tokens(c, user.id) == live + 1
    assert caller(c.w.addr, first.token) == Code.UNAUTHENTICATED
    assert caller(c.w.addr, again.token) == Code.OK
    assert q(c, "SELECT revoked_at IS NOT NULL FROM tokens WHERE id = %s", first.token_id) == [(True,)]
    assert q(c, "SELECT count(*) FROM audit_events WHERE action = 'token.revoke'"
                " AND details::jsonb->>'token_id' = %s", str(first.token_id)) == [(1,)]
    for t in (first, again):
        no_secret_stored(c, t.token)
    refused_unchanged(c, issue, other)
    assert caller(c.w.addr, again.token) == Code.OK
    return again


def test_issue_token_retry(c):
    w = c.w
    u = w.new_user("G2", "MEMBER", "令牌重试")
    key = new_request_id()
    req = ad.IssueTokenRequest(user_id=u.id, note="重试", request_id=key)
    last = check_issue_retry(c, u, w.admin.admin.IssueToken, req,
                             ad.IssueTokenRequest(user_id=u.id, note="另一个", request_id=key))
    # Revoked since by an ADMIN: the retry does not bring the issue back.
    w.admin.admin.RevokeToken(ad.RevokeTokenRequest(token_id=last.token_id), timeout=20)
    before = snapshot(c)
    expect_status(Code.FAILED_PRECONDITION, w.admin.admin.IssueToken, req, timeout=20,
                  details_has=("revoked since",))
    assert snapshot(c) == before
    # Without a request_id, as before: each call is another token.
    live = live_tokens(c, u.id)
    plain = ad.IssueTokenRequest(user_id=u.id, note="无键")
    w.admin.admin.IssueToken(plain, timeout=20)
    w.admin.admin.IssueToken(plain, timeout=20)
    assert live_tokens(c, u.id) == live + 2


def test_issue_my_token_retry(c):
    w = c.w
    u = w.new_user("G3", "MEMBER", "自发令牌")
    key = new_request_id()
    req = tk.IssueMyTokenRequest(note="笔记本", request_id=key)
    last = check_issue_retry(c, u, u.tokens.IssueMyToken, req, tk.IssueMyTokenRequest(note="手机", request_id=key))
    # The note as stored (without the white space around it) is the same request.
    again = u.tokens.IssueMyToken(tk.IssueMyTokenRequest(note=" 笔记本\n", request_id=key), timeout=20)
    assert caller(w.addr, last.token) == Code.UNAUTHENTICATED and caller(w.addr, again.token) == Code.OK
    # Revoked since by its user: refused.
    u.tokens.RevokeMyToken(tk.RevokeMyTokenRequest(token_id=again.token_id), timeout=20)
    expect_status(Code.FAILED_PRECONDITION, u.tokens.IssueMyToken, req, timeout=20)
    # At the limit of live tokens, a retry still replaces its token.
    while live_tokens(c, u.id) < 16:
        u.tokens.IssueMyToken(tk.IssueMyTokenRequest(note="填满"), timeout=20)
    expect_status(Code.RESOURCE_EXHAUSTED, u.tokens.IssueMyToken, tk.IssueMyTokenRequest(note="多一个"), timeout=20)
    u.tokens.RevokeMyToken(tk.RevokeMyTokenRequest(
        token_id=q(c, "SELECT max(id) FROM tokens WHERE user_id = %s", u.id)[0][0]), timeout=20)
    full = tk.IssueMyTokenRequest(note="满额", request_id=new_request_id())
    one = u.tokens.IssueMyToken(full, timeout=20)
    two = u.tokens.IssueMyToken(full, timeout=20)
    assert live_tokens(c, u.id) == 16 and caller(w.addr, two.token) == Code.OK
    assert caller(w.addr, one.token) == Code.UNAUTHENTICATED


def test_a_retry_signed_with_the_token_it_issued_is_refused(c):
    """A caller signed in with the token its key issued received the first reply: a retry
    would revoke the token the call is signed with and answer the only copy of a new secret
    (lost with its reply, the caller, perhaps the last administrator, would be locked out).
    Refused, nothing changed; signed with another token the retry still replaces."""
    w = c.w
    a = w.new_user(w.admin_unit.code, "ADMIN", "自持令牌管理员")
    key = new_request_id()
    req = tk.IssueMyTokenRequest(note="自持", request_id=key)
    first = a.tokens.IssueMyToken(req, timeout=20)
    held = world.User(w.addr, a.id, a.name, a.role, a.unit, first.token)
    try:
        before = snapshot(c)
        expect_status(Code.FAILED_PRECONDITION, held.tokens.IssueMyToken, req, timeout=20,
                      details_has=(f"token {first.token_id}, which request_id {key} issued, is the one this call"
                                   " is signed with", "new request_id"))
        assert snapshot(c) == before, (before, snapshot(c))
        assert caller(w.addr, first.token) == Code.OK
        # IssueToken for oneself, the same.
        key = new_request_id()
        mine = ad.IssueTokenRequest(user_id=a.id, note="自发", request_id=key)
        own = held.admin.IssueToken(mine, timeout=20)
        by_own = world.User(w.addr, a.id, a.name, a.role, a.unit, own.token)
        try:
            before = snapshot(c)
            expect_status(Code.FAILED_PRECONDITION, by_own.admin.IssueToken, mine, timeout=20,
                          details_has=("is the one this call is signed with",))
            assert snapshot(c) == before, (before, snapshot(c))
            assert caller(w.addr, own.token) == Code.OK
        finally:
            by_own.close()
        # Signed with another of the caller's tokens: the retry replaces the key's token.
        again = held.admin.IssueToken(mine, timeout=20)
        assert caller(w.addr, own.token) == Code.UNAUTHENTICATED and caller(w.addr, again.token) == Code.OK
    finally:
        held.close()


def test_revoke_token_retry(c):
    w = c.w
    u = w.new_user("X1", "MEMBER", "撤销重试")
    t = w.admin.admin.IssueToken(ad.IssueTokenRequest(user_id=u.id, note="a"), timeout=20)
    key = new_request_id()
    req = ad.RevokeTokenRequest(token_id=t.token_id, request_id=key)
    first = w.admin.admin.RevokeToken(req, timeout=20)
    retried_unchanged(c, w.admin.admin.RevokeToken, req, first)
    t2 = w.admin.admin.IssueToken(ad.IssueTokenRequest(user_id=u.id, note="b"), timeout=20)
    refused_unchanged(c, w.admin.admin.RevokeToken, ad.RevokeTokenRequest(token_id=t2.token_id, request_id=key))
    assert caller(w.addr, t2.token) == Code.OK
    expect_status(Code.FAILED_PRECONDITION, w.admin.admin.RevokeToken, ad.RevokeTokenRequest(token_id=t.token_id),
                  timeout=20)
    # RevokeMyToken, the same.
    mine = u.tokens.IssueMyToken(tk.IssueMyTokenRequest(note="c"), timeout=20)
    key = new_request_id()
    req = tk.RevokeMyTokenRequest(token_id=mine.token_id, request_id=key)
    first = u.tokens.RevokeMyToken(req, timeout=20)
    retried_unchanged(c, u.tokens.RevokeMyToken, req, first)
    refused_unchanged(c, u.tokens.RevokeMyToken, tk.RevokeMyTokenRequest(token_id=t2.token_id, request_id=key))
    assert events(c, "token.revoke", u.id) == 2
    expect_status(Code.FAILED_PRECONDITION, u.tokens.RevokeMyToken, tk.RevokeMyTokenRequest(token_id=mine.token_id),
                  timeout=20)


# ---- a case's participants and clues ------------------------------------------------------------


def new_case(c, title="重试案件"):
    return c.w.R1.leader.case.CreateJointCase(cs.CreateJointCaseRequest(
        title=title, participant_unit_ids=[c.w.G1.id], request_id=new_request_id()), timeout=20)


def test_participant_retries(c):
    w = c.w
    lead = w.R1.leader.case
    jc = new_case(c)
    key = new_request_id()
    add = cs.AddParticipantRequest(case_id=jc.id, unit_id=w.G3.id, reason="涉及", request_id=key)
    first = lead.AddParticipant(add, timeout=20)
    assert w.G3.id in first.participant_unit_ids
    retried_unchanged(c, lead.AddParticipant, add, first)
    refused_unchanged(c, lead.AddParticipant,
                      cs.AddParticipantRequest(case_id=jc.id, unit_id=w.X1.id, reason="涉及", request_id=key))
    assert q(c, "SELECT count(*) FROM case_participants WHERE case_id = %s", jc.id) == [(2,)]
    assert events(c, "case.add_participant", jc.id) == 1
    # Without a request_id, as before: the retry answers ALREADY_EXISTS.
    plain = cs.AddParticipantRequest(case_id=jc.id, unit_id=w.X1.id)
    lead.AddParticipant(plain, timeout=20)
    expect_status(Code.ALREADY_EXISTS, lead.AddParticipant, plain, timeout=20)

    key = new_request_id()
    rm = cs.RemoveParticipantRequest(case_id=jc.id, unit_id=w.G3.id, reason="无关", request_id=key)
    first = lead.RemoveParticipant(rm, timeout=20)
    assert w.G3.id not in first.participant_unit_ids
    retried_unchanged(c, lead.RemoveParticipant, rm, first)
    refused_unchanged(c, lead.RemoveParticipant,
                      cs.RemoveParticipantRequest(case_id=jc.id, unit_id=w.G3.id, reason="另因", request_id=key))
    assert events(c, "case.remove_participant", jc.id) == 1
    plain = cs.RemoveParticipantRequest(case_id=jc.id, unit_id=w.X1.id, reason="无关")
    lead.RemoveParticipant(plain, timeout=20)
    expect_status(Code.FAILED_PRECONDITION, lead.RemoveParticipant, plain, timeout=20)
    # Another user's key: the first's record is not theirs (G1's leader may not manage the case).
    expect_status(Code.PERMISSION_DENIED, w.G1.leader.case.RemoveParticipant, rm, timeout=20)


def submit(u, title="案件线索"):
    return u.clue.SubmitClue(pb.SubmitClueRequest(
        request_id=new_request_id(), title=title, summary="摘要", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
        subject=pb.SubjectPerson(name="张某"), host_unit="市发展改革委"), timeout=20)


def test_clue_membership_retries(c):
    w = c.w
    lead = w.R1.leader.case
    jc = new_case(c, "线索重试案件")
    clue = submit(w.G1.member)
    key = new_request_id()
    add = cs.AddClueToCaseRequest(case_id=jc.id, clue_id=clue.id, reason="同一对象", request_id=key)
    first = lead.AddClueToCase(add, timeout=20)
    assert [x.clue_id for x in first.clues] == [clue.id]
    retried_unchanged(c, lead.AddClueToCase, add, first)
    refused_unchanged(c, lead.AddClueToCase,
                      cs.AddClueToCaseRequest(case_id=jc.id, clue_id=clue.id, reason="另因", request_id=key))
    assert events(c, "case.add_clue", clue.id) == 1
    # Without a request_id, as before: refused, the clue is in a case.
    other = submit(w.G1.member, "另一线索")
    plain = cs.AddClueToCaseRequest(case_id=jc.id, clue_id=other.id)
    lead.AddClueToCase(plain, timeout=20)
    expect_status(Code.FAILED_PRECONDITION, lead.AddClueToCase, plain, timeout=20)

    key = new_request_id()
    rm = cs.RemoveClueFromCaseRequest(case_id=jc.id, clue_id=clue.id, reason="分开办理", request_id=key)
    first = lead.RemoveClueFromCase(rm, timeout=20)
    assert clue.id not in [x.clue_id for x in first.clues]
    retried_unchanged(c, lead.RemoveClueFromCase, rm, first)
    refused_unchanged(c, lead.RemoveClueFromCase,
                      cs.RemoveClueFromCaseRequest(case_id=jc.id, clue_id=other.id, reason="分开办理", request_id=key))
    assert events(c, "case.remove_clue", clue.id) == 1
    plain = cs.RemoveClueFromCaseRequest(case_id=jc.id, clue_id=other.id, reason="分开办理")
    lead.RemoveClueFromCase(plain, timeout=20)
    expect_status(Code.FAILED_PRECONDITION, lead.RemoveClueFromCase, plain, timeout=20)


# ---- racing ---------------------------------------------------------------------------------


def test_racing_identical_calls_make_one(c):
    w = c.w
    req = user_req(c, new_request_id(), name="并发用户")
    out = racing(c, w.admin, w.admin.admin.CreateUser, req)
    assert [code for code, _ in out] == [Code.OK, Code.OK], out
    assert out[0][1] == out[1][1]
    assert q(c, "SELECT count(*) FROM users WHERE name = '并发用户'") == [(1,)]

    u = w.new_user("R2", "MEMBER", "并发令牌")
    live = live_tokens(c, u.id)
    req = tk.IssueMyTokenRequest(note="并发", request_id=new_request_id())
    out = racing(c, u, u.tokens.IssueMyToken, req)
    assert [code for code, _ in out] == [Code.OK, Code.OK], out
    assert live_tokens(c, u.id) == live + 1
    assert sorted(caller(w.addr, r.token) == Code.OK for _, r in out) == [False, True]

    jc = new_case(c, "并发案件")
    req = cs.AddParticipantRequest(case_id=jc.id, unit_id=w.G2.id, request_id=new_request_id())
    out = racing(c, w.R1.leader, w.R1.leader.case.AddParticipant, req)
    assert [code for code, _ in out] == [Code.OK, Code.OK], out
    assert out[0][1] == out[1][1]
    assert events(c, "case.add_participant", jc.id) == 1


def behind_the_head(c, user_id, calls):
    """Each (fn, req) of calls sent in turn while a superuser session holds the audit chain
    head of the user user_id, each once the ones before wait on a lock; then released. Returns
    each call's (code, message)."""
    pg = harness.Postgres.get()
    lk, db = pg.connect(c.dbname), pg.connect(c.dbname)
    db.autocommit = True
    lk.autocommit = False
    lk.cursor().execute("SELECT 1 FROM audit_heads WHERE subject_type = 'user' AND subject_id = %s FOR UPDATE",
                        (user_id,))
    out = [None] * len(calls)

    def run(i):
        fn, req = calls[i]
        try:
            fn(req, timeout=30)
            out[i] = (Code.OK, "")
        except grpc.RpcError as e:
            out[i] = (e.code(), e.details())

    def waiting(n):
        with db.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock'")
            return cur.fetchone()[0] >= n

    threads = []
    try:
        for i in range(len(calls)):
            threads.append(threading.Thread(target=run, args=(i,)))
            threads[-1].start()
            harness.wait_for(lambda: waiting(i + 1), what=f"{i + 1} calls waiting on a lock")
    finally:
        lk.rollback()
        lk.close()
        db.close()
        for t in threads:
            t.join()
    return out


def test_token_retries_and_changes_of_their_user_take_locks_in_one_order(c):
    """A retried IssueToken or IssueMyToken locks its user's row before it revokes the key's
    token (whose token.revoke locks the user's audit chain head), as DisableUser, IssueToken
    and IssueMyToken lock the row before the head: queued behind the head together, the retry
    and the other call both succeed, neither is aborted as a deadlock's victim."""
    w = c.w
    adm = w.admin.admin
    n = 0
    for other in ("DisableUser", "IssueToken", "IssueMyToken"):
        for by_admin in (True, False):
            n += 1
            z = w.new_user("G2", "MEMBER", f"锁序用户{n}")
            key = new_request_id()
            if by_admin:
                retry = (adm.IssueToken, ad.IssueTokenRequest(user_id=z.id, note="锁序", request_id=key))
            else:
                retry = (z.tokens.IssueMyToken, tk.IssueMyTokenRequest(note="锁序", request_id=key))
            retry[0](retry[1], timeout=20)
            live = live_tokens(c, z.id)
            if other == "DisableUser":
                change = (adm.DisableUser, ad.DisableUserRequest(user_id=z.id, reason="离职"))
            elif other == "IssueToken":
                change = (adm.IssueToken, ad.IssueTokenRequest(user_id=z.id, note="另发"))
            else:
                change = (z.tokens.IssueMyToken, tk.IssueMyTokenRequest(note="另发"))
            out = behind_the_head(c, z.id, [retry, change])
            assert out == [(Code.OK, ""), (Code.OK, "")], (other, by_admin, out)
            if other == "DisableUser":
                assert q(c, "SELECT disabled FROM users WHERE id = %s", z.id) == [(True,)]
            else:
                assert live_tokens(c, z.id) == live + 1, (other, by_admin)
            assert events(c, "token.revoke", z.id) == 1


def test_an_issue_queued_behind_a_disable_of_its_user_is_refused(c):
    """IssueToken reads its user under the lock its INSERT takes anyway: queued behind a
    DisableUser of that user (which holds the user's row, waiting for the audit head), it
    reads the user disabled and is refused, rather than record a token.issue after the
    user.disable."""
    w = c.w
    adm = w.admin.admin
    for key in ("", new_request_id()):
        z = w.new_user("G3", "MEMBER", f"停用后发令牌{len(key)}")
        out = behind_the_head(c, z.id, [(adm.DisableUser, ad.DisableUserRequest(user_id=z.id, reason="离职")),
                                        (adm.IssueToken, ad.IssueTokenRequest(user_id=z.id, note="晚到", request_id=key))])
        assert out == [(Code.OK, ""), (Code.FAILED_PRECONDITION, f"user {z.id} is disabled")], out
        assert q(c, "SELECT action FROM audit_events WHERE subject_type = 'user' AND subject_id = %s ORDER BY seq",
                 z.id)[-1] == ("user.disable",)


# ---- cluectl --------------------------------------------------------------------------------


def ctl(c, user, *args, check=0):
    return harness.cluectl(*args, env={"CLUED_SERVER": c.srv.addr, "CLUED_TOKEN": user.token}, check=check)


def test_cluectl_sends_and_prints_request_ids(c):
    w = c.w
    key = new_request_id()
    args = ("--json", "admin", "create-user", "--unit", str(w.G2.id), "--name", "命令行用户", "--role", "member",
            "--request-id", key)
    first = json.loads(ctl(c, w.admin, *args).stdout)
    again = json.loads(ctl(c, w.admin, *args).stdout)
    assert first["request_id"] == key and again == first
    assert q(c, "SELECT count(*) FROM users WHERE name = '命令行用户'") == [(1,)]
    # Without --request-id: a fresh one each time, printed.
    a = json.loads(ctl(c, w.G1.member, "--json", "token", "issue", "--note", "cli").stdout)
    b = json.loads(ctl(c, w.G1.member, "--json", "token", "issue", "--note", "cli").stdout)
    assert a["request_id"] != b["request_id"] and a["token_id"] != b["token_id"]
    # A retry of a token issue with the id printed: the first token replaced.
    again = json.loads(ctl(c, w.G1.member, "--json", "token", "issue", "--note", "cli",
                           "--request-id", b["request_id"]).stdout)
    assert caller(w.addr, b["token"]) == Code.UNAUTHENTICATED and caller(w.addr, again["token"]) == Code.OK
    r = json.loads(ctl(c, w.G1.member, "--json", "token", "revoke", str(again["token_id"])).stdout)
    assert r["request_id"] and r["token_id"] == again["token_id"]
    jc = new_case(c, "命令行案件")
    key = new_request_id()
    args = ("--json", "case", "add-participant", str(jc.id), "--unit", str(w.X1.id), "--request-id", key)
    first = json.loads(ctl(c, w.R1.leader, *args).stdout)
    assert json.loads(ctl(c, w.R1.leader, *args).stdout) == first
    r = ctl(c, w.R1.leader, "case", "add-participant", str(jc.id), "--unit", str(w.X1.id), check=1)
    assert r.stderr.startswith("ALREADY_EXISTS"), r.stderr


if __name__ == "__main__":
    harness.run_tests(globals(), setup=setup, teardown=teardown)
