"""A request_id names one request, not one kind of call (migration 0047, docs/WRITES.md).

A key reused for the same kind of call with other fields (SubmitClue of another clue, a move
with another reason, a handover, extension, assignment, recusal, review, case or ledger item
asked differently) is refused, INVALID_ARGUMENT "request_id ... was already used for a
different request", and nothing is written: no row, no audit event, no version. Before, it was
answered the first call's result and what it asked for was lost. Checked:
- one after the other, for every kind of write that takes a request_id;
- in the batched SubmitClue path (a refused call among new ones in one batch, and two calls
  with one key and other fields sent at once, which meet in one batch);
- racing: two moves with one key and other fields both decided and waiting at the key's lock,
  so that the second is refused by the write itself (the fingerprint compared in SQL);
- a true retry (the same fields) still answers the first result, alone or many at once, and
  creates one thing; so does one whose fields a client serialised another way (the
  fingerprint is of the decoded fields, not the bytes);
- a record without a fingerprint (made before the migration) matches any request of its kind,
  as every retry did before.
"""

import os
import sys
import threading
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import expect_status, new_request_id  # noqa: E402
import world  # noqa: E402
from test_batching import all_at_once  # noqa: E402

S = harness.stubs()
pb = S.clue_pb2
cs = S.case_pb2
rp = S.rectification_pb2
cm = S.common_pb2
Code = grpc.StatusCode
PRE, FIL = cm.CLUE_STATE_PRELIMINARY_CHECK, cm.CLUE_STATE_FILED
DAY_MS = 86_400_000
CHANGED = "was already used for a different request"


def setup():
    return world.served(args=["--db-batch-inflight", "1"])


teardown = world.unserve

TABLES = ("clues", "clue_requests", "rect_requests", "notes", "proposals", "joint_cases", "case_clues",
          "rect_items", "recusals", "clue_handlers", "audit_events")


def snapshot(c):
    """Everything a write could have changed: the rows of each table and every version."""
    with c.db.cursor() as cur:
        cur.execute("SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in TABLES)
                    + ", (SELECT coalesce(sum(version), 0) FROM clues)"
                    + ", (SELECT coalesce(sum(version), 0) FROM rect_items)")
        return cur.fetchone()


def submit_req(rid=None, title="线索", host="市发展改革委"):
    return pb.SubmitClueRequest(
        request_id=rid or new_request_id(), title=title, summary="摘要", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
        subject=pb.SubjectPerson(name="张某", position="处长"), host_unit=host,
        violation_categories=["违反廉洁纪律"])


def submit(u, **kw):
    return u.clue.SubmitClue(submit_req(**kw), timeout=20)


def get(u, clue_id):
    return u.clue.GetClue(pb.GetClueRequest(clue_id=clue_id), timeout=20)


def move_req(clue, target, rid=None, reason="初核", **details):
    return pb.RequestTransitionRequest(clue_id=clue.id, expected_version=clue.version, target=target, reason=reason,
                                       details=pb.TransitionDetails(**details), request_id=rid or new_request_id())


def refused_unchanged(c, fn, req):
    """fn(req) is refused as a reused key with other fields, and writes nothing."""
    before = snapshot(c)
    msg = expect_status(Code.INVALID_ARGUMENT, fn, req, timeout=20, details_has=(CHANGED, req.request_id))
    assert snapshot(c) == before, (before, snapshot(c))
    return msg


def test_submit_with_other_fields_is_refused(c):
    w = c.w
    key = new_request_id()
    first = submit(w.G1.member, rid=key, title="线索甲")
    refused_unchanged(c, w.G1.member.clue.SubmitClue, submit_req(rid=key, title="线索乙"))
    # Another subject, category or reporter is another request too.
    other = submit_req(rid=key, title="线索甲")
    other.subject.name = "李某"
    refused_unchanged(c, w.G1.member.clue.SubmitClue, other)
    other = submit_req(rid=key, title="线索甲")
    other.reporter.phone = "13800000000"
    refused_unchanged(c, w.G1.member.clue.SubmitClue, other)
    # The same fields: the first clue, nothing new.
    before = snapshot(c)
    again = submit(w.G1.member, rid=key, title="线索甲")
    assert again.id == first.id and again.registration_number == first.registration_number
    assert snapshot(c) == before
    assert get(w.G1.member, first.id).title == "线索甲"


def test_batched_submits_with_other_fields_are_refused(c):
    # Twelve keys used once; then, at once, each again with another title among twelve new
    # calls: the batch writes the new ones, and each reused key is refused (left out of the
    # batch, then alone), nothing written for it.
    w = c.w
    keys = [new_request_id() for _ in range(12)]
    firsts = all_at_once([lambda k=k: submit(w.G2.member, rid=k, title="原线索", host="市交通运输局") for k in keys])
    assert all(code == Code.OK for code, _ in firsts), firsts
    before = snapshot(c)
    calls = [lambda k=k: submit(w.G2.member, rid=k, title="另一线索", host="市交通运输局") for k in keys]
    calls += [lambda: submit(w.G2.member, title="新线索", host="市交通运输局") for _ in range(12)]
    out = all_at_once(calls)
    assert all(code == Code.INVALID_ARGUMENT and CHANGED in m for code, m in out[:12]), out[:12]
    assert all(code == Code.OK for code, _ in out[12:]), out[12:]
    after = snapshot(c)
    assert after[TABLES.index("clues")] == before[TABLES.index("clues")] + 12
    assert after[TABLES.index("clue_requests")] == before[TABLES.index("clue_requests")] + 12
    for k, (_, first) in zip(keys, firsts):
        assert get(w.G2.member, first.id).title == "原线索"

    # Two calls with one new key and other titles, sent together (one batch): one clue, the
    # title of the call answered OK; the other refused.
    keys = [new_request_id() for _ in range(8)]
    before = snapshot(c)
    calls = []
    for k in keys:
        calls += [lambda k=k: submit(w.G2.member, rid=k, title="甲", host="市交通运输局"),
                  lambda k=k: submit(w.G2.member, rid=k, title="乙", host="市交通运输局")]
    out = all_at_once(calls)
    for i in range(8):
        pair = out[2 * i:2 * i + 2]
        assert sorted(code.name for code, _ in pair) == ["INVALID_ARGUMENT", "OK"], pair
        (won, clue), = [(j, r) for j, (code, r) in enumerate(pair) if code == Code.OK]
        assert CHANGED in pair[1 - won][1], pair
        assert get(w.G2.member, clue.id).title == ("甲", "乙")[won]
    after = snapshot(c)
    assert after[TABLES.index("clues")] == before[TABLES.index("clues")] + 8


def test_identical_retries_at_once_make_one_clue(c):
    w = c.w
    req = submit_req(title="同一线索")
    before = snapshot(c)
    out = all_at_once([lambda: w.G1.member.clue.SubmitClue(req, timeout=20) for _ in range(10)])
    assert all(code == Code.OK for code, _ in out), out
    assert len({r.id for _, r in out}) == 1
    assert snapshot(c)[TABLES.index("clues")] == before[TABLES.index("clues")] + 1

    cl = submit(w.G1.member)
    req = move_req(cl, PRE)
    out = all_at_once([lambda: w.G1.leader.clue.RequestTransition(req, timeout=20) for _ in range(6)])
    assert all(code == Code.OK for code, _ in out), out
    assert {r.clue.version for _, r in out} == {2}
    with c.db.cursor() as cur:
        cur.execute("SELECT count(*) FROM audit_events WHERE subject_type = 'clue' AND subject_id = %s"
                    " AND action = 'clue.move'", (cl.id,))
        assert cur.fetchone()[0] == 1


def test_move_with_other_fields_is_refused(c):
    w = c.w
    cl = submit(w.G1.member)
    key = new_request_id()
    first = w.G1.leader.clue.RequestTransition(move_req(cl, PRE, rid=key, reason="初核甲"), timeout=20)
    refused_unchanged(c, w.G1.leader.clue.RequestTransition, move_req(cl, PRE, rid=key, reason="初核乙"))
    # The same move again: its first answer.
    again = w.G1.leader.clue.RequestTransition(move_req(cl, PRE, rid=key, reason="初核甲"), timeout=20)
    assert again.clue.version == first.clue.version == 2
    # A co-review move (a proposal, the write that does not go without a facts read).
    cl = first.clue
    pkey = new_request_id()
    prop = w.G1.leader.clue.RequestTransition(move_req(cl, FIL, rid=pkey, reason="立案甲"), timeout=20)
    assert prop.pending
    refused_unchanged(c, w.G1.leader.clue.RequestTransition, move_req(cl, FIL, rid=pkey, reason="立案乙"))
    assert w.G1.leader.clue.RequestTransition(move_req(cl, FIL, rid=pkey, reason="立案甲"),
                                              timeout=20).proposal.id == prop.proposal.id
    # Its review, with another comment.
    rkey = new_request_id()
    review = pb.ReviewProposalRequest(proposal_id=prop.proposal.id, approve=True, comment="同意", request_id=rkey)
    done = w.R1.leader.clue.ReviewProposal(review, timeout=20)
    refused_unchanged(c, w.R1.leader.clue.ReviewProposal,
                      pb.ReviewProposalRequest(proposal_id=prop.proposal.id, approve=True, comment="另议",
                                               request_id=rkey))
    assert w.R1.leader.clue.ReviewProposal(review, timeout=20).proposal == done.proposal


def race(c, user, fn, a, b, waiters=2):
    """a and b, one key and other fields, both decided (no record yet) and sent, both waiting at
    the key's lock (waiters=1: b waits in clued for a's statement instead, as a unit's
    submissions do); when it is released one is done, and the other, finding the record under
    the lock, is refused there. Returns the index (0 or 1) of the one done and its reply."""
    out = {}

    def send_b():
        try:
            out["b"] = (Code.OK, fn(b, timeout=30))
        except grpc.RpcError as e:
            out["b"] = (e.code(), e.details())

    tb = threading.Thread(target=send_b)

    def during():
        tb.start()
        db = harness.Postgres.get().connect(c.dbname)
        try:
            harness.wait_for(lambda: _waiting(db) >= waiters, what="the calls at the key's lock")
            time.sleep(0.2)
        finally:
            db.close()

    box = {}

    def send_a(req, timeout):
        box["a"] = fn(req, timeout=timeout)

    ra, _ = harness.stalled_by_its_key(c.dbname, user.id, send_a, a, during)
    tb.join()
    codes = sorted([ra[0].name, out["b"][0].name])
    assert codes == ["INVALID_ARGUMENT", "OK"], (ra, out["b"])
    refused = ra[1] if ra[0] != Code.OK else out["b"][1]
    assert CHANGED in refused, refused
    return (0, box["a"]) if ra[0] == Code.OK else (1, out["b"][1])


def test_racing_writes_with_other_fields(c):
    w = c.w
    # A plain move (sent without a facts read: the loser's write finds the record and leaves
    # the move out; its facts read then refuses it).
    cl = submit(w.G1.member)
    key = new_request_id()
    won, _ = race(c, w.G1.leader, w.G1.leader.clue.RequestTransition,
                  move_req(cl, PRE, rid=key, reason="甲"), move_req(cl, PRE, rid=key, reason="乙"))
    with c.db.cursor() as cur:
        cur.execute("SELECT reason FROM audit_events WHERE subject_type = 'clue' AND subject_id = %s"
                    " AND action = 'clue.move'", (cl.id,))
        assert [r for r, in cur.fetchall()] == [("甲", "乙")[won]]
    # A co-review move: the loser's write (proposal_create) finds the record under the key's
    # lock and refuses it itself.
    cl = get(w.G1.leader, cl.id)
    key = new_request_id()
    won, r = race(c, w.G1.leader, w.G1.leader.clue.RequestTransition,
                  move_req(cl, FIL, rid=key, reason="立案甲"), move_req(cl, FIL, rid=key, reason="立案乙"))
    with c.db.cursor() as cur:
        cur.execute("SELECT reason FROM proposals WHERE clue_id = %s", (cl.id,))
        assert [x for x, in cur.fetchall()] == [("立案甲", "立案乙")[won]]
    # A submission (the batched path's write, clue_submit(), alone or batched; no facts read:
    # every retry of a submission is answered by its write).
    key = new_request_id()
    before = snapshot(c)
    won, r = race(c, w.G1.member, w.G1.member.clue.SubmitClue,
                  submit_req(rid=key, title="竞甲"), submit_req(rid=key, title="竞乙"), waiters=1)
    assert r.title == ("竞甲", "竞乙")[won]
    assert snapshot(c)[TABLES.index("clues")] == before[TABLES.index("clues")] + 1


def _waiting(db):
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
        return cur.fetchone()[0]


def test_other_writes_with_other_fields_are_refused(c):
    w = c.w
    L = w.G1.leader
    cl = L.clue.RequestTransition(move_req(submit(w.G1.member), PRE), timeout=20).clue

    answered = []  # the kinds whose reused key was not refused, for the message

    def twice(fn, first, other):
        fn(first, timeout=20)
        try:
            refused_unchanged(c, fn, other)
        except AssertionError as e:
            answered.append((type(first).__name__, str(e)))
        before = snapshot(c)
        fn(first, timeout=20)
        assert snapshot(c) == before

    k = new_request_id()
    twice(L.clue.ExtendDeadline,
          pb.ExtendDeadlineRequest(clue_id=cl.id, expected_version=cl.version, days=10, reason="延期甲", request_id=k),
          pb.ExtendDeadlineRequest(clue_id=cl.id, expected_version=cl.version, days=20, reason="延期甲", request_id=k))
    k = new_request_id()
    twice(L.clue.AssignHandler,
          pb.AssignHandlerRequest(clue_id=cl.id, user_id=w.G1.member.id, reason="派员甲", request_id=k),
          pb.AssignHandlerRequest(clue_id=cl.id, user_id=w.G1.member.id, reason="派员乙", request_id=k))
    k = new_request_id()
    twice(L.clue.UnassignHandler,
          pb.UnassignHandlerRequest(clue_id=cl.id, user_id=w.G1.member.id, reason="结束甲", request_id=k),
          pb.UnassignHandlerRequest(clue_id=cl.id, user_id=w.G1.member.id, reason="结束乙", request_id=k))
    k = new_request_id()
    twice(w.G1.member.clue.AddNote,
          pb.AddNoteRequest(clue_id=cl.id, kind=pb.NOTE_KIND_OTHER, text="记录甲", request_id=k),
          pb.AddNoteRequest(clue_id=cl.id, kind=pb.NOTE_KIND_OTHER, text="记录乙", request_id=k))
    other = submit(w.G1.member)
    k = new_request_id()
    twice(w.G1.member.clue.RecordRecusal,
          pb.RecordRecusalRequest(clue_id=other.id, reason="利害关系甲", request_id=k),
          pb.RecordRecusalRequest(clue_id=other.id, reason="利害关系乙", request_id=k))
    k, joined = new_request_id(), submit(w.G1.member)
    twice(w.R1.leader.case.CreateJointCase,
          cs.CreateJointCaseRequest(title="联合办案甲", participant_unit_ids=[w.G1.id], clue_ids=[joined.id],
                                    request_id=k),
          cs.CreateJointCaseRequest(title="联合办案乙", participant_unit_ids=[w.G1.id], clue_ids=[joined.id],
                                    request_id=k))
    k = new_request_id()
    deadline = int(time.time() * 1000) + 30 * DAY_MS
    item = rp.CreateItemRequest(host_unit="市发展改革委", description="未公开", category="财务管理",
                                source=rp.RECTIFICATION_SOURCE_SUPERVISION, deadline_ms=deadline, request_id=k)
    other_item = rp.CreateItemRequest()
    other_item.CopyFrom(item)
    other_item.description = "另一问题"
    twice(L.rect.CreateItem, item, other_item)
    it = L.rect.CreateItem(item, timeout=20)
    k = new_request_id()
    twice(L.rect.RecordPlan,
          rp.RecordPlanRequest(item_id=it.id, expected_version=it.version, plan="方案甲", request_id=k),
          rp.RecordPlanRequest(item_id=it.id, expected_version=it.version, plan="方案乙", request_id=k))
    # Last, as it takes the clue from G1: a handover to another unit.
    k = new_request_id()
    cl = get(L, cl.id)
    twice(L.clue.HandOver,
          pb.HandOverRequest(clue_id=cl.id, expected_version=cl.version, to_unit_id=w.G2.id, reason="移交甲",
                             request_id=k),
          pb.HandOverRequest(clue_id=cl.id, expected_version=cl.version, to_unit_id=w.G2.id, reason="移交乙",
                             request_id=k))
    assert answered == [], answered


def test_fingerprint_is_of_the_fields_not_the_bytes(c):
    # The same SubmitClue serialised another way (fields in reverse order, a field sent with its
    # default value, an unknown field): the same request, its first clue.
    w = c.w
    req = submit_req(title="字节不同")
    first = w.G1.member.clue.SubmitClue(req, timeout=20)
    fields = [(f, v) for f, v in req.ListFields()]
    raw = b"".join(type(req)(**{f.name: v}).SerializeToString() for f, v in reversed(fields))
    raw += bytes([0x18, 0x00])          # source (field 3) again, as 0: ...
    raw += bytes([0x18, req.source])   # ... then as sent (the last one counts)
    raw += bytes([0xb8, 0x3e, 0x01])    # field 999, unknown to the server
    call = w.G1.member.channel.unary_unary("/clue.v1.ClueService/SubmitClue",
                                           request_serializer=lambda b: b,
                                           response_deserializer=pb.Clue.FromString)
    before = snapshot(c)
    again = call(raw, timeout=20)
    assert again.id == first.id
    assert snapshot(c) == before


def test_records_without_a_fingerprint_match_any_request(c):
    # A record written before migration 0047 has no fingerprint: a request of its kind with
    # other fields is answered as its retry, as every one was before.
    w = c.w
    key = new_request_id()
    first = submit(w.G1.member, rid=key, title="旧记录")
    with c.db.cursor() as cur:
        cur.execute("UPDATE clue_requests SET request_sha256 = NULL WHERE request_id = %s", (key,))
        assert cur.rowcount == 1
    before = snapshot(c)
    assert submit(w.G1.member, rid=key, title="别的").id == first.id
    assert snapshot(c) == before


def test_white_space_around_a_text_is_the_same_request(c):
    """Texts are checked and stored without the white space around them: a retry whose note
    gained a trailing newline or an ideographic space (a file read with its last newline, a
    client that does not trim) gets its first note back; a text that differs inside does not."""
    w = c.w
    cl = submit(w.G1.member, title="空白")
    k = new_request_id()
    first = w.G1.member.clue.AddNote(pb.AddNoteRequest(clue_id=cl.id, kind=pb.NOTE_KIND_OTHER, text="记录",
                                                       request_id=k), timeout=20)
    before = snapshot(c)
    for text in ("记录\n", "\u3000记录 ", " 记录\t"):
        again = w.G1.member.clue.AddNote(pb.AddNoteRequest(clue_id=cl.id, kind=pb.NOTE_KIND_OTHER, text=text,
                                                           request_id=k), timeout=20)
        assert again.id == first.id and again.text == "记录", (text, again)
    assert snapshot(c) == before
    refused_unchanged(c, w.G1.member.clue.AddNote,
                      pb.AddNoteRequest(clue_id=cl.id, kind=pb.NOTE_KIND_OTHER, text="记 录", request_id=k))


def test_a_recusal_record_of_another_clue_is_not_replayed(c):
    # A request record is bookkeeping a superuser can write (docs/AUDIT.md, "Can"). One that
    # names a recusal of another clue, under the caller's id for this clue, is another call:
    # the retry must not hand out that recusal (another unit's clue, its reason).
    w = c.w
    hidden = submit(w.G3.member)
    x = w.G3.leader.clue.RecordRecusal(pb.RecordRecusalRequest(
        clue_id=hidden.id, user_id=w.G3.member.id, reason="系被反映人之子", request_id=new_request_id()), timeout=20)
    mine = submit(w.G1.member)
    k = new_request_id()
    with c.db.cursor() as cur:
        cur.execute("INSERT INTO clue_requests (user_id, request_id, method, clue_id, owner_unit, recusal_id)"
                    " VALUES (%s, %s, 'RecordRecusal', %s, %s, %s)", (w.G1.leader.id, k, mine.id, w.G1.id, x.id))
    before = snapshot(c)
    msg = expect_status(grpc.StatusCode.INVALID_ARGUMENT, w.G1.leader.clue.RecordRecusal, pb.RecordRecusalRequest(
        clue_id=mine.id, user_id=w.G3.member.id, reason="x", request_id=k), timeout=20)
    assert msg == f"request_id {k} was already used for another call", msg
    assert snapshot(c) == before

if __name__ == "__main__":
    harness.run_tests(globals(), setup=setup, teardown=teardown)
