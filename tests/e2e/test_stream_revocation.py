"""Open WatchEvents streams follow revocation and visibility (issue 9, finding 4), on two
clued instances sharing one database:

- RevokeToken ends every stream of that token, on both instances, within 1 s, with
  UNAUTHENTICATED; the user's streams with another token go on.
- DisableUser ends every stream of that user the same way.
- Neither kind of stream receives an event that comes after the revocation in the audit
  sequence, although events keep being committed while it happens.
- The end comes within 1 s even while the audit frontier waits on an open transaction, and
  a revocation whose notification was never sent is still found by the periodic re-check.
- A unit removed from a joint case gets none of the case's clue events after the removal.
- A user whose role, unit or unit kind is changed in the database (the API changes none of
  them) has every open stream ended with UNAVAILABLE and the seq to resume from, before any
  event committed after the change; resuming sees through the new scope.
- --max-stream-age ends a stream with UNAVAILABLE and the seq to resume from, and resuming
  from it misses nothing.

Latencies are measured from the moment the revoking call is made (so they include that
call's own round trip: an upper bound) to the moment the client sees the stream's status,
and printed."""

import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time

import grpc

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
import rawh2  # noqa: E402
from harness import new_request_id  # noqa: E402
import world  # noqa: E402
from hostile import PREFACE, frame, grpc_msg, headers_frames, lit, request_block, settings  # noqa: E402

S = harness.stubs()
A = S.admin_pb2
AU = S.audit_pb2
C = S.common_pb2
CL = S.clue_pb2
CA = S.case_pb2

FAKE = 200000     # subject ids of events appended straight through audit_append()
END_WITHIN = 1.0  # seconds from a revocation to the end of its streams
# How long a stream may wait to go live. The audit frontier waits for write transactions
# anywhere in the PostgreSQL cluster (audit_watch.c), and other tests share the cluster.
STALL = 180
LATENCIES = []


class Ctx:
    pass


def setup():
    c = Ctx()
    c.pg = harness.Postgres.get()
    c.dbname = c.pg.new_database()
    c.url = c.pg.url(c.dbname)
    c.db = c.pg.connect(c.dbname)
    c.a = harness.Clued(c.url).start()
    c.b = harness.Clued(c.url).start(migrate=False)  # a second instance on the same database
    c.w = world.build(c.a)
    c.chans = []
    return c


def teardown(c):
    for ch in c.chans:
        ch.close()
    c.w.close()
    c.db.close()
    c.b.stop()
    c.a.stop()
    if LATENCIES:
        print("revocation to stream end (s): " + ", ".join(f"{x:.3f}" for x in LATENCIES)
              + f"; max {max(LATENCIES):.3f}", flush=True)


def sql(c, q, *args):
    with c.db.cursor() as cur:
        cur.execute(q, args)
        return cur.fetchall() if cur.description else None


def max_seq(c):
    return sql(c, "SELECT coalesce(max(seq), 0) FROM audit_events")[0][0]


def append(cur, subject_id, action="test.event"):
    cur.execute("SELECT (audit_append(NULL, NULL, %s, 'clue', %s, NULL, NULL, NULL, NULL, '{}')).seq",
                (action, subject_id))
    return cur.fetchone()[0]


def audit_stub(c, srv):
    ch = grpc.insecure_channel(srv.addr)
    c.chans.append(ch)
    return S.audit_pb2_grpc.AuditServiceStub(ch)


def md_of(token):
    return [("authorization", "Bearer " + token)]


class Watch:
    """A WatchEvents call read by a thread; records when its status arrived."""

    def __init__(self, stub, token, after=0, **filters):
        self.q = queue.Queue()
        self.seqs = []
        self.status = None
        self.ended_at = None
        self.call = stub.WatchEvents(AU.WatchEventsRequest(after_seq=after, **filters), metadata=md_of(token))
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        try:
            for e in self.call:
                self.seqs.append(e.seq)
                self.q.put(e)
            self.status = (grpc.StatusCode.OK, "")
        except grpc.RpcError as e:
            self.status = (e.code(), e.details())
        self.ended_at = time.monotonic()
        self.q.put(None)

    def wait_seq(self, seq, timeout=STALL):
        """Wait until an event with seq >= the given one has arrived."""
        harness.wait_for(lambda: (self.seqs and self.seqs[-1] >= seq) or self.status is not None,
                         timeout=timeout, interval=0.01,
                         what=f"seq {seq} (the stream has {self.seqs[-3:]}, status {self.status})")
        assert self.seqs and self.seqs[-1] >= seq, f"stream ended before seq {seq}: {self.status}"

    def wait_end(self, timeout):
        harness.wait_for(lambda: self.ended_at is not None, timeout=timeout, interval=0.005,
                         what="the stream to end")

    def cancel(self):
        self.call.cancel()


class Writer:
    """Commits events in a loop on its own thread (fn returns each one's seq) until stopped."""

    def __init__(self, fn):
        self.fn = fn
        self.seqs = []
        self.error = None
        self.stopping = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        try:
            while not self.stopping.is_set():
                self.seqs.append(self.fn())
                time.sleep(0.005)
        except Exception as e:  # reported by stop()
            self.error = e

    def stop(self):
        self.stopping.set()
        self.t.join(30)
        assert self.error is None, self.error
        return self.seqs


def sql_writer(c, base):
    conn = c.pg.connect(c.dbname)
    n = [0]

    def one():
        n[0] += 1
        with conn.cursor() as cur:
            return append(cur, base + n[0])
    w = Writer(one)
    w.conn = conn
    return w


def issue(c, user_id):
    return c.w.admin.admin.IssueToken(A.IssueTokenRequest(user_id=user_id, note="stream test"), timeout=10)


def new_auditor(c, name):
    u = c.w.admin.admin.CreateUser(A.CreateUserRequest(unit_id=c.w.admin_unit.id, name=name, role=C.ROLE_AUDITOR),
                                   timeout=10)
    return u.id, issue(c, u.id), issue(c, u.id)


def event_seq(c, action, subject_id, **details):
    q = "SELECT max(seq) FROM audit_events WHERE action = %s AND subject_type = 'user' AND subject_id = %s"
    args = [action, subject_id]
    for k, v in details.items():
        q += " AND details::jsonb ->> %s = %s"
        args += [k, str(v)]
    s = sql(c, q, *args)[0][0]
    assert s is not None, (action, subject_id, details)
    return s


def check_ended(watches, since, what):
    """Each watch ended with UNAUTHENTICATED within END_WITHIN of `since` (taken just before the
    revoking call); returns the latencies."""
    out = []
    for x in watches:
        x.wait_end(timeout=10)
        assert x.status[0] == grpc.StatusCode.UNAUTHENTICATED, (what, x.status)
        lat = x.ended_at - since
        out.append(lat)
        assert lat <= END_WITHIN, f"{what}: the stream ended {lat:.3f} s after the revocation"
    LATENCIES.extend(out)
    print(f"  {what}: ended after " + ", ".join(f"{x:.3f}" for x in out) + " s", flush=True)
    return out


def test_revoke_token_ends_its_streams_on_both_instances(c):
    uid, t1, t2 = new_auditor(c, "auditor-revoke")
    start = max_seq(c)
    stub_a, stub_b = audit_stub(c, c.a), audit_stub(c, c.b)
    revoked = [Watch(stub_a, t1.token, after=start), Watch(stub_b, t1.token, after=start),
               Watch(stub_b, t1.token, after=start, subject_type="clue")]
    other = Watch(stub_a, t2.token, after=start)  # the same user's other token
    wr = sql_writer(c, FAKE)
    try:
        harness.wait_for(lambda: len(wr.seqs) > 5, timeout=STALL, what="events")
        for x in revoked + [other]:
            x.wait_seq(wr.seqs[4])  # every stream is live and at the edge
        t_revoked = time.monotonic()
        c.w.admin.admin.RevokeToken(A.RevokeTokenRequest(token_id=t1.token_id), timeout=10)
        check_ended(revoked, t_revoked, "RevokeToken")
        time.sleep(0.3)
    finally:
        seqs = wr.stop()
        wr.conn.close()
    s_revoke = event_seq(c, "token.revoke", uid, token_id=t1.token_id)
    assert any(s > s_revoke for s in seqs), "no event was committed after the revocation"
    for x in revoked:
        assert x.seqs, "the stream received nothing before the revocation"
        late = [s for s in x.seqs if s > s_revoke]
        assert not late, f"events after the revocation (seq {s_revoke}) were delivered: {late}"
    # The user's other token keeps its stream, and it sees past the revocation.
    other.wait_seq(seqs[-1])
    assert other.status is None
    other.cancel()
    # And a new stream with the revoked token is refused.
    harness.expect_status(grpc.StatusCode.UNAUTHENTICATED, next,
                          stub_b.WatchEvents(AU.WatchEventsRequest(), metadata=md_of(t1.token)))


def test_disable_user_ends_all_their_streams_on_both_instances(c):
    w = c.w
    # A group member sees only its unit's clues: its streams go through visibility checks.
    u = w.new_user("G1", "MEMBER", "g1-member-disabled")
    t2 = issue(c, u.id)
    clue = w.G1.leader.clue.SubmitClue(CL.SubmitClueRequest(
        request_id=new_request_id(), title="线索", summary="反映某某违规收受礼金",
        source=CL.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=CL.SubjectPerson(name="张三", position="处长"),
        host_unit="市发展改革委"), timeout=20)
    start = max_seq(c)
    stub_a, stub_b = audit_stub(c, c.a), audit_stub(c, c.b)
    disabled = [Watch(stub_a, u.token, after=start), Watch(stub_b, t2.token, after=start),
                Watch(stub_b, u.token, after=0)]
    colleague = Watch(stub_a, w.G1.member.token, after=start)

    def note():
        w.G1.leader.clue.AddNote(CL.AddNoteRequest(clue_id=clue.id, kind=CL.NOTE_KIND_EVIDENCE_SUMMARY,
                                                   text="证据", request_id=new_request_id()), timeout=20)
        return max_seq(c)
    wr = Writer(note)
    try:
        harness.wait_for(lambda: len(wr.seqs) > 3, timeout=STALL, what="notes")
        for x in disabled + [colleague]:
            x.wait_seq(wr.seqs[2])
        t_disabled = time.monotonic()
        w.admin.admin.DisableUser(A.DisableUserRequest(user_id=u.id, reason="离岗"), timeout=10)
        check_ended(disabled, t_disabled, "DisableUser")
        time.sleep(0.3)
    finally:
        wr.stop()
    s_disable = event_seq(c, "user.disable", u.id)
    last = max_seq(c)
    assert last > s_disable
    for x in disabled:
        late = [s for s in x.seqs if s > s_disable]
        assert not late, f"events after the disabling (seq {s_disable}) were delivered: {late}"
    colleague.wait_seq(sql(c, "SELECT max(seq) FROM audit_events WHERE subject_type = 'clue' AND subject_id = %s",
                           clue.id)[0][0])
    colleague.cancel()


def test_revocation_ends_streams_while_the_frontier_waits(c):
    """An open transaction holds an undecided seq: nothing after it can be delivered, and the
    revocation's own audit event cannot be either; the stream still ends within 1 s."""
    uid, t1, _ = new_auditor(c, "auditor-frontier")
    start = max_seq(c)
    x = Watch(audit_stub(c, c.a), t1.token, after=start)
    y = Watch(audit_stub(c, c.b), t1.token, after=start)
    with c.db.cursor() as cur:
        s0 = append(cur, FAKE + 50000)
    x.wait_seq(s0)
    y.wait_seq(s0)
    slow = c.pg.connect(c.dbname)
    slow.autocommit = False
    try:
        with slow.cursor() as cur:
            append(cur, FAKE + 50001)  # drawn, not committed: the frontier stops here
        time.sleep(0.2)
        t_revoked = time.monotonic()
        c.w.admin.admin.RevokeToken(A.RevokeTokenRequest(token_id=t1.token_id), timeout=10)
        check_ended([x, y], t_revoked, "RevokeToken, frontier waiting")
    finally:
        slow.rollback()
        slow.close()
    assert x.seqs == [s0] and y.seqs == [s0]


def test_missed_notification_is_caught_by_the_recheck(c):
    """A token revoked with triggers off sends no notification (as if it were lost across a
    LISTEN reconnect) and appends no audit event: the periodic re-check still ends its
    stream."""
    _, t1, t2 = new_auditor(c, "auditor-silent")
    start = max_seq(c)
    x = Watch(audit_stub(c, c.b), t1.token, after=start)
    other = Watch(audit_stub(c, c.b), t2.token, after=start)
    with c.db.cursor() as cur:
        s0 = append(cur, FAKE + 60000)
    x.wait_seq(s0)
    t_revoked = time.monotonic()
    with c.db.cursor() as cur:
        cur.execute("BEGIN; SET LOCAL session_replication_role = replica;"
                    " UPDATE tokens SET revoked_at = now() WHERE id = %s; COMMIT", (t1.token_id,))
    x.wait_end(timeout=15)
    assert x.status[0] == grpc.StatusCode.UNAUTHENTICATED, x.status
    print(f"  silent revocation found after {x.ended_at - t_revoked:.3f} s", flush=True)
    assert other.status is None
    other.cancel()


def test_events_read_with_a_revocation_are_never_delivered(c):
    """Without a notification, the first fetch that reads events committed after a silent
    revocation reads the revocation too, in the same snapshot, and ends the stream before
    delivering them."""
    _, t1, _ = new_auditor(c, "auditor-snapshot")
    start = max_seq(c)
    stub = audit_stub(c, c.a)
    live = Watch(stub, t1.token, after=start)
    with c.db.cursor() as cur:
        s0 = append(cur, FAKE + 61000)
    live.wait_seq(s0)
    with c.db.cursor() as cur:
        cur.execute("BEGIN; SET LOCAL session_replication_role = replica;"
                    " UPDATE tokens SET revoked_at = now() WHERE id = %s; COMMIT", (t1.token_id,))
        later = [append(cur, FAKE + 61001 + i) for i in range(5)]
    live.wait_end(timeout=END_WITHIN * 3)
    assert live.status[0] == grpc.StatusCode.UNAUTHENTICATED, live.status
    assert live.seqs == [s0], f"events committed after the revocation were delivered: {live.seqs}"
    assert later[-1] > s0


def test_removed_participant_gets_no_later_case_events(c):
    w = c.w
    clue = w.R1.leader.clue.SubmitClue(CL.SubmitClueRequest(
        request_id=new_request_id(), title="联合办案线索", summary="反映某某违规收受礼金",
        source=CL.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=CL.SubjectPerson(name="李四", position="科长"),
        host_unit="市交通运输局"), timeout=20)
    jc = w.R1.leader.case.CreateJointCase(CA.CreateJointCaseRequest(
        title="室组地联合办案", basis="依据", participant_unit_ids=[w.G3.id], clue_ids=[clue.id],
        request_id=new_request_id()), timeout=20)
    start = max_seq(c)
    stub_a, stub_b = audit_stub(c, c.a), audit_stub(c, c.b)
    g3 = [Watch(stub_a, w.G3.member.token, after=start), Watch(stub_b, w.G3.leader.token, after=start),
          Watch(stub_b, w.G3.member.token, after=start, subject_type="clue", subject_id=clue.id)]
    r1 = Watch(stub_a, w.R1.member.token, after=start)

    def note(text):
        w.R1.leader.clue.AddNote(CL.AddNoteRequest(clue_id=clue.id, kind=CL.NOTE_KIND_MEETING_MINUTES,
                                                   text=text, request_id=new_request_id()), timeout=20)
        return sql(c, "SELECT max(seq) FROM audit_events WHERE subject_type = 'clue' AND subject_id = %s",
                   clue.id)[0][0]
    before = note("参与时")
    for x in g3 + [r1]:
        x.wait_seq(before)
    w.R1.leader.case.RemoveParticipant(CA.RemoveParticipantRequest(case_id=jc.id, unit_id=w.G3.id, reason="退出"),
                                       timeout=20)
    s_removed = max_seq(c)
    after = [note(f"退出后 {i}") for i in range(3)]
    r1.wait_seq(after[-1])
    time.sleep(0.5)
    for x in g3:
        late = [s for s in x.seqs if s > s_removed]
        assert not late, f"a removed participant received the case's later events {late}"
        assert before in x.seqs
        x.cancel()
    r1.cancel()
    # A stream opened after the removal replays none of the later events either.
    y = Watch(stub_a, w.G3.member.token, after=start)
    time.sleep(0.5)
    assert not [s for s in y.seqs if s > s_removed], y.seqs
    y.cancel()


def submit_clue(user, title):
    return user.clue.SubmitClue(CL.SubmitClueRequest(
        request_id=new_request_id(), title=title, summary="反映某某违规插手工程项目",
        source=CL.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=CL.SubjectPerson(name="王某", position="局长"),
        host_unit="市发展改革委"), timeout=20)


def silent_watch(srv, token, after):
    """A WatchEvents stream on a raw connection that grants the server no window and never
    reads: its events stay queued on the server, which soon holds the stream back (PAUSED)."""
    host, port = srv.addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    body = grpc_msg(AU.WatchEventsRequest(after_seq=after).SerializeToString())
    block = request_block("/clue.v1.AuditService/WatchEvents", lit("authorization", "Bearer " + token))
    sock.sendall(PREFACE + settings([(4, 0)]) + headers_frames(1, block) + frame(0, 1, 1, body))
    return sock


def test_a_stream_after_a_recusal_gets_nothing_checked_before_it(c):
    """A user's streams share what the server found they may see (a visibility group). A
    stream of the user held back (its client reads nothing) keeps those findings in memory;
    after the user is recused from the clue, a new stream from before the recusal must not be
    served the clue's events from them: it sees what ListAuditEvents shows, nothing."""
    member, leader = c.w.G1.member, c.w.G1.leader
    clue = submit_clue(leader, "回避线索")

    def note(text):
        leader.clue.AddNote(CL.AddNoteRequest(clue_id=clue.id, kind=CL.NOTE_KIND_MEETING_MINUTES, text=text,
                                              request_id=new_request_id()), timeout=20)
        return max_seq(c)
    stub = audit_stub(c, c.a)
    start = max_seq(c)
    held = silent_watch(c.a, member.token, start)
    live = Watch(stub, member.token, after=start)
    try:
        pad = [note(f"记录 {i}") for i in range(400)]  # over 64 KiB of events: the held stream stops
        live.wait_seq(pad[-1])
        seen = [note(f"回避前 {i}") for i in range(3)]
        live.wait_seq(seen[-1])  # the group found them visible, and the held stream has not had them
        leader.clue.RecordRecusal(CL.RecordRecusalRequest(clue_id=clue.id, user_id=member.id, reason="近亲属关系",
                                                          request_id=new_request_id()), timeout=20)
        recused = max_seq(c)
        listed = member.audit.ListAuditEvents(AU.ListAuditEventsRequest(after_seq=pad[-1], subject_type="clue",
                                                                         subject_id=clue.id), timeout=20)
        assert not listed.events, [e.seq for e in listed.events]
        fresh = Watch(stub, member.token, after=pad[-1])
        mark = Watch(stub, leader.token, after=recused)
        last = note("回避后")
        mark.wait_seq(last)
        time.sleep(1.0)  # the member's stream had as long, and more, to deliver what it would
        leaked = [s for s in fresh.seqs if s in seen or s == last]
        assert not leaked, f"a stream opened after the recusal received the clue's events {leaked}"
        fresh.cancel()
        mark.cancel()
    finally:
        live.cancel()
        held.close()


def test_a_stream_held_back_past_a_recusal_gets_nothing_checked_before_it(c):
    """A stream whose client stops reading is held back (PAUSED) with the clue's events still
    to send, which the server found the user could see. The user is recused; when the client
    reads again, over a second later, it gets none of them: what the group found before is
    read again from the database, where the recusal hides them."""
    member, leader = c.w.G1.member, c.w.G1.leader
    clue = submit_clue(leader, "回避线索二")
    start = max_seq(c)
    h = rawh2.RawH2(c.a.addr, timeout=30)  # acknowledges nothing until pumped
    body = AU.WatchEventsRequest(after_seq=start, heartbeat_seconds=1).SerializeToString()
    sid = h.request("/clue.v1.AuditService/WatchEvents", rawh2.grpc_frame(body), headers=md_of(member.token))
    live = Watch(audit_stub(c, c.a), member.token, after=start)
    try:
        with c.db.cursor() as cur:  # the client's window and the call's 64 KiB, twice over
            cur.execute("SELECT max((audit_append(NULL, NULL, 'bulk.event', 'clue', %s, NULL, NULL, NULL,"
                        " repeat('x', 1000), '{}')).seq) FROM generate_series(1, 300)", (clue.id,))
            pad = cur.fetchone()[0]
            seen = [append(cur, clue.id, "before.recusal") for _ in range(3)]
        live.wait_seq(seen[-1])  # the group found them visible
        leader.clue.RecordRecusal(CL.RecordRecusalRequest(clue_id=clue.id, user_id=member.id, reason="近亲属关系",
                                                          request_id=new_request_id()), timeout=20)
        recused = max_seq(c)
        time.sleep(1.5)
        r, got, deadline = h.responses[sid], [], time.time() + 60
        while time.time() < deadline and not (got and got[-1].action == "" and got[-1].seq >= recused):
            assert h.pump(), "connection closed"
            got, i = [], 0
            while i + 5 <= len(r.data):
                n = int.from_bytes(r.data[i + 1:i + 5], "big")
                if i + 5 + n > len(r.data):
                    break
                got.append(C.AuditEvent.FromString(r.data[i + 5:i + 5 + n]))
                i += 5 + n
        events = [e.seq for e in got if e.action]
        leaked = [x for x in seen if x in events]
        assert not leaked, f"a stream held back past the recusal received {leaked}"
        # It had part of the padding before it was held back; the rest is hidden now too.
        assert events and max(events) < pad, (events[-3:], pad)
        assert got[-1].seq >= recused, got[-1]
    finally:
        live.cancel()
        h.close()


def test_a_stream_joining_during_a_visibility_check_gets_nothing_it_found(c):
    """A visibility group's check of new events runs against a snapshot taken when it was sent.
    A stream of the user that joins while it runs, after a recusal that snapshot does not show,
    must not be served what it finds. The check is slowed down here after its snapshot: a
    row-level-security policy on clues (a test's own database) sleeps in that statement alone."""
    own = world.served()
    try:
        member, leader = own.w.G1.member, own.w.G1.leader
        clue = submit_clue(leader, "回避线索三")
        with own.db.cursor() as cur:
            cur.execute("SELECT max(seq) FROM audit_events")
            start = cur.fetchone()[0]
        stub = audit_stub(c, own.srv)
        first = Watch(stub, member.token, after=start)  # the member's group, checking
        time.sleep(1.0)
        with own.db.cursor() as cur:
            cur.execute("""
              CREATE FUNCTION slow_vis() RETURNS boolean LANGUAGE plpgsql AS $$
              BEGIN
                IF current_query() LIKE 'SELECT c.id FROM clues c WHERE c.id = ANY%' THEN
                  PERFORM pg_sleep(2);
                END IF;
                RETURN true;
              END $$;
              CREATE POLICY slow ON clues USING (slow_vis()) WITH CHECK (true);
              ALTER TABLE clues ENABLE ROW LEVEL SECURITY""")
        leader.clue.AddNote(CL.AddNoteRequest(clue_id=clue.id, kind=CL.NOTE_KIND_MEETING_MINUTES, text="回避前",
                                              request_id=new_request_id()), timeout=20)
        with own.db.cursor() as cur:
            cur.execute("SELECT max(seq) FROM audit_events")
            noted = cur.fetchone()[0]
        time.sleep(0.5)  # the group's check of the note is sleeping, its snapshot taken
        leader.clue.RecordRecusal(CL.RecordRecusalRequest(clue_id=clue.id, user_id=member.id, reason="近亲属关系",
                                                          request_id=new_request_id()), timeout=20)
        late = Watch(stub, member.token, after=start)
        time.sleep(4.0)  # the check answered, and the late stream had time to deliver
        assert noted in first.seqs, (noted, first.seqs)  # the check found it visible
        assert noted not in late.seqs, f"a stream opened after the recusal received seq {noted}"
        first.cancel()
        late.cancel()
        with own.db.cursor() as cur:
            cur.execute("ALTER TABLE clues DISABLE ROW LEVEL SECURITY; DROP POLICY slow ON clues")
    finally:
        world.unserve(own)


def test_max_stream_age(c):
    out = subprocess.run([harness.CLUED, "help"], capture_output=True, text=True, timeout=30).stdout
    assert "--max-stream-age" in out, out
    for bad in ("0x", "-1", "1y", "s", ""):
        r = subprocess.run([harness.CLUED, "serve", "--max-stream-age", bad, "--listen", "127.0.0.1:0"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and "--max-stream-age" in r.stderr, (bad, r.returncode, r.stderr)
    srv = harness.Clued(c.url, args=["--max-stream-age", "2s"]).start(migrate=False)
    try:
        stub = audit_stub(c, srv)
        start = max_seq(c)
        wr = sql_writer(c, FAKE + 70000)
        # Streams one after another, each resumed from the seq its predecessor's status names,
        # while events are committed and after, until every event has arrived.
        got, after, streams, target, deadline = [], start, 0, None, time.monotonic() + STALL
        try:
            while target is None or not got or got[-1] < target:
                assert time.monotonic() < deadline, f"only {streams} streams and {got[-3:]} by {target}"
                t0 = time.monotonic()
                x = Watch(stub, c.w.auditor.token, after=after)
                x.wait_end(timeout=STALL)
                lived = x.ended_at - t0
                assert x.status[0] == grpc.StatusCode.UNAVAILABLE, x.status
                m = re.search(r"resume from seq (\d+)", x.status[1])
                assert m, x.status
                resume = int(m.group(1))
                assert lived >= 1.9, f"the stream ended after {lived:.3f} s, before its maximum age"
                assert resume >= after and all(after < s <= resume for s in x.seqs), (after, resume, x.seqs[-3:])
                got += x.seqs
                after = resume
                streams += 1
                print(f"  max-stream-age 2 s: stream {streams} lived {lived:.3f} s, {len(x.seqs)} events, "
                      f"resume from seq {resume}", flush=True)
                # Keep committing through a second stream, so that resuming is exercised with
                # events on both sides of the cut whatever the machine's speed.
                if target is None and streams >= 2:
                    target = wr.stop()[-1]
                    wr.conn.close()
        finally:
            if target is None:
                wr.stop()
                wr.conn.close()
        every = [r[0] for r in sql(c, "SELECT seq FROM audit_events WHERE seq > %s AND seq <= %s ORDER BY seq",
                                   start, got[-1])]
        assert streams >= 2 and got == every, "resuming from the named seqs missed or repeated events"
        # cluectl audit watch resumes by itself where the server says, and stops at --timeout.
        start = max_seq(c)
        wr = sql_writer(c, FAKE + 80000)
        try:
            r = harness.cluectl("--timeout", "5", "--json", "audit", "watch", "--after-seq", str(start),
                                env={"CLUED_SERVER": srv.addr, "CLUED_TOKEN": c.w.auditor.token})
        finally:
            wr.stop()
            wr.conn.close()
        assert r.returncode == 0, r.stderr
        assert r.stderr.count("maximum age; resuming after seq") >= 1, r.stderr
        got = [int(m) for m in re.findall(r'"seq":\s*"?(\d+)', r.stdout)]
        every = [x[0] for x in sql(c, "SELECT seq FROM audit_events WHERE seq > %s ORDER BY seq", start)]
        assert got == every[:len(got)], "cluectl missed or repeated events across resumes"
    finally:
        srv.stop()


MOVED = r"your role or unit changed; resume from seq (\d+)"


def silent_sql(c, q, *args):
    """q with the triggers off: no notification, no audit event (as an operator's change in
    the database may be made)."""
    conn = c.pg.connect(c.dbname)
    try:
        with conn.cursor() as cur:
            cur.execute("BEGIN; SET LOCAL session_replication_role = replica; " + q + "; COMMIT", args)
    finally:
        conn.close()


def check_moved(x, s_change, what):
    """x ended UNAVAILABLE naming a seq to resume from, delivered nothing committed after the
    change (s_change: an event committed right after it), and nothing past the seq it names."""
    x.wait_end(timeout=15)
    assert x.status[0] == grpc.StatusCode.UNAVAILABLE, (what, x.status)
    m = re.search(MOVED, x.status[1])
    assert m, (what, x.status)
    resume = int(m.group(1))
    late = [s for s in x.seqs if s >= s_change]
    assert not late, f"{what}: events committed after the change were delivered: {late}"
    assert all(s <= resume for s in x.seqs) and resume < s_change, (what, resume, x.seqs[-3:])
    return resume


def test_a_role_or_unit_changed_in_the_database_ends_the_users_streams(c):
    w = c.w
    secret = submit_clue(w.G3.leader, "G3 的线索")
    mine = submit_clue(w.G1.leader, "G1 的线索")

    def note(clue, leader):
        """Add a note; the clue's last seq."""
        leader.clue.AddNote(CL.AddNoteRequest(clue_id=clue.id, kind=CL.NOTE_KIND_EVIDENCE_SUMMARY,
                                              text="证据", request_id=new_request_id()), timeout=20)
        return sql(c, "SELECT max(seq) FROM audit_events WHERE subject_type = 'clue' AND subject_id = %s",
                   clue.id)[0][0]

    # An AUDITOR made a MEMBER of G1; a G2 member moved to G1; a ROOM member whose unit
    # becomes a GROUP (the same unit, another kind). Their streams, on both instances, see
    # through what they were; another auditor's stream is not theirs to end.
    aud_id, aud_tok, _ = new_auditor(c, "auditor-demoted")
    mover = w.new_user("G2", "MEMBER", "g2-member-moved")
    room = w.new_user("R2", "MEMBER", "r2-member-kind")
    start = max_seq(c)
    stub_a, stub_b = audit_stub(c, c.a), audit_stub(c, c.b)
    streams = {"auditor": [Watch(stub_a, aud_tok.token, after=start), Watch(stub_b, aud_tok.token, after=start)],
               "unit": [Watch(stub_b, mover.token, after=start)],
               "kind": [Watch(stub_a, room.token, after=start)]}
    other = Watch(stub_b, w.auditor.token, after=start)
    s0 = note(secret, w.G3.leader)
    for x in streams["auditor"] + [other]:
        x.wait_seq(s0)
    g2 = note(submit_clue(w.G2.leader, "G2 的线索"), w.G2.leader)
    streams["unit"][0].wait_seq(g2)
    streams["kind"][0].wait_seq(s0)  # G3's liaison room sees its clues

    t_changed = time.monotonic()
    silent_sql(c, "UPDATE users SET role = 'MEMBER', unit_id = %s WHERE id = %s", w.G1.id, aud_id)
    silent_sql(c, "UPDATE users SET unit_id = %s WHERE id = %s", w.G1.id, mover.id)
    silent_sql(c, "UPDATE units SET kind = 'GROUP', liaison_room_id = %s WHERE id = %s", w.R1.id, w.R2.id)
    s_change = note(secret, w.G3.leader)
    note(mine, w.G1.leader)
    for what, xs in streams.items():
        for x in xs:
            check_moved(x, s_change, what)
            print(f"  {what} changed: stream ended after {x.ended_at - t_changed:.3f} s", flush=True)
    assert other.status is None
    other.wait_seq(s_change)
    other.cancel()

    # Resuming from the seq named: the demoted auditor now sees G1's clue alone.
    resume = check_moved(streams["auditor"][0], s_change, "auditor")
    again = Watch(stub_a, aud_tok.token, after=resume, subject_type="clue")
    last = note(mine, w.G1.leader)
    again.wait_seq(last)
    ids = {e.subject_id for e in list(again.q.queue) if e is not None and e.action}
    assert ids == {mine.id}, (ids, mine.id, secret.id)
    again.cancel()
    silent_sql(c, "UPDATE units SET kind = 'ROOM', liaison_room_id = NULL WHERE id = %s", w.R2.id)


def test_a_stream_opened_with_a_principal_older_than_a_change_ends_before_replaying(c):
    """A principal served from the auth cache may predate a change of role made in the
    database: a stream opened with it replays nothing, and ends as above."""
    srv = harness.Clued(c.url, args=["--auth-cache-ttl", "120000"]).start(migrate=False).wait_listening()
    try:
        aud_id, aud_tok, _ = new_auditor(c, "auditor-cached")
        stub = audit_stub(c, srv)
        tok = S.token_pb2_grpc.TokenServiceStub(c.chans[-1])
        me = tok.GetCaller(S.token_pb2.GetCallerRequest(), metadata=md_of(aud_tok.token), timeout=10)
        assert me.role == C.ROLE_AUDITOR
        silent_sql(c, "UPDATE users SET role = 'MEMBER', unit_id = %s WHERE id = %s", c.w.G1.id, aud_id)
        # Still cached: the call sees the old role.
        me = tok.GetCaller(S.token_pb2.GetCallerRequest(), metadata=md_of(aud_tok.token), timeout=10)
        assert me.role == C.ROLE_AUDITOR
        x = Watch(stub, aud_tok.token, after=0)
        x.wait_end(timeout=15)
        assert x.status[0] == grpc.StatusCode.UNAVAILABLE and re.search(MOVED, x.status[1]), x.status
        assert x.seqs == [], f"the stream replayed events with the old role: {len(x.seqs)}"
        # The server dropped the user's principals: the next call has the new role.
        me = tok.GetCaller(S.token_pb2.GetCallerRequest(), metadata=md_of(aud_tok.token), timeout=10)
        assert me.role == C.ROLE_MEMBER and me.unit_code == "G1", me
    finally:
        srv.stop()


if __name__ == "__main__":
    harness.run_tests(globals(), setup, teardown)
