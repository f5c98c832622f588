"""AuditService against the real clued and PostgreSQL: listing with filters and pages, who
sees what, chain verification (and tampering by a superuser), and WatchEvents across two
instances under concurrent, out-of-order commits.

Events appended straight through audit_append() use subject ids from FAKE up for subject
type "clue", so that they never name a clue made through ClueService."""

import os
import queue
import random
import re
import struct
import sys
import threading
import time

import grpc

sys.path.insert(0, os.path.dirname(__file__))
import chain  # noqa: E402
import harness  # noqa: E402
from harness import expect_status, new_request_id  # noqa: E402
import rawh2  # noqa: E402
import world  # noqa: E402

S = harness.stubs()
A = S.admin_pb2
AU = S.audit_pb2
C = S.common_pb2
CL = S.clue_pb2
P = AU.BrokenLink
ROOM, GROUP = C.UNIT_KIND_ROOM, C.UNIT_KIND_GROUP


class Ctx:
    pass


FAKE = 100000


def setup():
    c = Ctx()
    c.pg = harness.Postgres.get()
    c.dbname = c.pg.new_database()
    c.url = c.pg.url(c.dbname)
    c.db = c.pg.connect(c.dbname)
    c.a = harness.Clued(c.url).start()
    c.b = harness.Clued(c.url).start(migrate=False)  # a second instance on the same database
    # Units R1, R2, G1, G2 (liaison R1), G3 (liaison R2), X1, each with a leader and a member;
    # the admin and an auditor.
    c.w = world.build(c.a)
    c.md = list(c.w.admin.metadata)
    c.ch_a = grpc.insecure_channel(c.a.addr)
    c.ch_b = grpc.insecure_channel(c.b.addr)
    c.admin = S.admin_pb2_grpc.AdminServiceStub(c.ch_a)
    c.admin_b = S.admin_pb2_grpc.AdminServiceStub(c.ch_b)
    c.audit = S.audit_pb2_grpc.AuditServiceStub(c.ch_a)
    c.audit_b = S.audit_pb2_grpc.AuditServiceStub(c.ch_b)
    c.room, c.group = c.w.R1, c.w.G1
    c.member, c.leader, c.auditor = c.w.R1.member, c.w.G1.leader, c.w.auditor
    c.member_md, c.leader_md, c.auditor_md = (list(u.metadata) for u in (c.member, c.leader, c.auditor))
    return c


def submit(user, title="线索"):
    return user.clue.SubmitClue(CL.SubmitClueRequest(
        request_id=new_request_id(), title=title, summary="反映某某违规收受礼金",
        source=CL.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=CL.SubjectPerson(name="张三", position="处长"),
        host_unit="市发展改革委"), timeout=20)


def teardown(c):
    c.w.close()
    c.ch_a.close()
    c.ch_b.close()
    c.db.close()
    c.b.stop()
    c.a.stop()


def sql(c, q, *args):
    with c.db.cursor() as cur:
        cur.execute(q, args)
        return cur.fetchall() if cur.description else None


def append(cur, subject_type, subject_id, owner=None, action="test.event", actor_user=None, actor_unit=None,
           reason=None):
    cur.execute("SELECT (audit_append(%s, %s, %s, %s, %s, %s, NULL, NULL, %s, '{}')).seq",
                (actor_user, actor_unit, action, subject_type, subject_id, owner, reason))
    return cur.fetchone()[0]


def max_seq(c):
    return sql(c, "SELECT coalesce(max(seq), 0) FROM audit_events")[0][0]


def seqs_after(c, seq):
    return [r[0] for r in sql(c, "SELECT seq FROM audit_events WHERE seq > %s ORDER BY seq", seq)]


def list_all(stub, md, page_size=0, **filters):
    """Every page of ListAuditEvents; returns the seqs and the number of pages."""
    seqs, token, pages = [], "", 0
    while True:
        r = stub.ListAuditEvents(AU.ListAuditEventsRequest(page_size=page_size, page_token=token, **filters),
                                 metadata=md)
        pages += 1
        seqs += [e.seq for e in r.events]
        if not r.next_page_token:
            return seqs, pages
        assert len(r.events) == (page_size or 50)
        token = r.next_page_token


class Watch:
    """A WatchEvents call read by a thread into a queue."""

    def __init__(self, stub, md, after=0, **filters):
        self.q = queue.Queue()
        self.call = stub.WatchEvents(AU.WatchEventsRequest(after_seq=after, **filters), metadata=md)
        self.status = None
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        try:
            for e in self.call:
                self.q.put(e)
            self.status = (grpc.StatusCode.OK, "")
        except grpc.RpcError as e:
            self.status = (e.code(), e.details())
        self.q.put(None)

    def next(self, timeout=10):
        return self.q.get(timeout=timeout)

    def until(self, seq, timeout=30):
        """Events up to and including seq (which must come)."""
        got, end = [], time.time() + timeout
        while not got or got[-1].seq < seq:
            e = self.q.get(timeout=max(0.01, end - time.time()))
            assert e is not None, f"watch ended early: {self.status}"
            got.append(e)
        return got

    def cancel(self):
        self.call.cancel()


# ---- ListAuditEvents --------------------------------------------------------------------

def test_list_filters_and_pagination(c):
    base = max_seq(c)
    with c.db.cursor() as cur:
        for i in range(60):
            append(cur, "clue", FAKE + 100 + i % 4, owner=c.room.id if i % 2 else c.group.id,
                   action="clue.note" if i % 3 else "clue.transition",
                   actor_user=c.member.id if i % 5 else c.leader.id,
                   actor_unit=c.room.id if i % 5 else c.group.id)
    u = c.admin.CreateUnit(A.CreateUnitRequest(kind=ROOM, code="R12", name="第十二室"), metadata=c.md)
    t_mid = sql(c, "SELECT floor(extract(epoch FROM at) * 1000)::bigint FROM audit_events WHERE seq = %s",
                base + 30)[0][0]
    everything, pages = list_all(c.audit, c.md, page_size=7)
    assert everything == [r[0] for r in sql(c, "SELECT seq FROM audit_events ORDER BY seq")]
    assert pages == -(-len(everything) // 7)
    cases = [
        (dict(subject_type="clue", subject_id=FAKE + 101), f"subject_type = 'clue' AND subject_id = {FAKE + 101}"),
        (dict(subject_type="clue"), "subject_type = 'clue'"),
        (dict(subject_type="unit", subject_id=u.id), f"subject_type = 'unit' AND subject_id = {u.id}"),
        (dict(actor_user_id=c.leader.id), f"actor_user_id = {c.leader.id}"),
        (dict(unit_id=c.room.id), f"actor_unit_id = {c.room.id}"),
        (dict(action="clue.transition"), "action = 'clue.transition'"),
        (dict(action="clue.note", unit_id=c.group.id), f"action = 'clue.note' AND actor_unit_id = {c.group.id}"),
        (dict(after_seq=base + 10, until_seq=base + 20), f"seq > {base + 10} AND seq <= {base + 20}"),
        (dict(from_ms=t_mid), f"at >= to_timestamp({t_mid} / 1000.0)"),
        (dict(to_ms=t_mid), f"at < to_timestamp({t_mid} / 1000.0)"),
        (dict(from_ms=t_mid, to_ms=t_mid + 1), f"at >= to_timestamp({t_mid} / 1000.0) "
                                               f"AND at < to_timestamp({t_mid + 1} / 1000.0)"),
    ]
    for filters, where in cases:
        want = [r[0] for r in sql(c, f"SELECT seq FROM audit_events WHERE {where} ORDER BY seq")]
        assert want, where
        for size in (0, 3, 500):
            got, _ = list_all(c.audit, c.md, page_size=size, **filters)
            assert got == want, (filters, size, got, want)
    # Each event carries what the table holds.
    e = c.audit.ListAuditEvents(AU.ListAuditEventsRequest(subject_type="unit", subject_id=u.id), metadata=c.md).events[0]
    row = sql(c, "SELECT seq, actor_user_id, actor_unit_id, action, details, hash, prev_hash, "
                 "floor(extract(epoch FROM at) * 1000)::bigint FROM audit_events WHERE subject_type = 'unit' "
                 "AND subject_id = %s", u.id)[0]
    assert (e.seq, e.actor_user_id, e.actor_unit_id, e.action, e.details_json, e.hash, e.prev_hash, e.at_ms) == \
        (row[0], row[1], row[2], row[3], row[4], bytes(row[5]), b"", row[7])
    assert len(e.hash) == 32


def test_list_bad_requests(c):
    r = c.audit.ListAuditEvents(AU.ListAuditEventsRequest(page_size=2), metadata=c.md)
    assert r.next_page_token
    L = c.audit.ListAuditEvents
    bad = [
        (AU.ListAuditEventsRequest(page_token="garbage"), "page_token"),
        (AU.ListAuditEventsRequest(page_token=r.next_page_token + "0"), "page_token"),
        (AU.ListAuditEventsRequest(page_token="x" + r.next_page_token), "page_token"),
        # A token is bound to the filters it was issued for.
        (AU.ListAuditEventsRequest(page_size=2, page_token=r.next_page_token, action="unit.create"), "page_token"),
        (AU.ListAuditEventsRequest(page_size=-1), "page_size"),
        (AU.ListAuditEventsRequest(subject_id=5), "subject_id"),
        (AU.ListAuditEventsRequest(subject_type="clue", subject_id=-5), "subject_id"),
        (AU.ListAuditEventsRequest(actor_user_id=-1), "actor_user_id"),
        (AU.ListAuditEventsRequest(after_seq=-1), "after_seq"),
        (AU.ListAuditEventsRequest(from_ms=10, to_ms=10), "from_ms"),
        (AU.ListAuditEventsRequest(from_ms=2 ** 62), "from_ms"),
        (AU.ListAuditEventsRequest(to_ms=-1), "to_ms"),
        (AU.ListAuditEventsRequest(after_seq=2 ** 63 - 1, until_seq=2 ** 63 - 1), None),
        (AU.ListAuditEventsRequest(action="bad\x01action"), "action"),
        (AU.ListAuditEventsRequest(subject_type="x" * 65), "subject_type"),
        # Types no event has are refused, not answered with an empty list.
        (AU.ListAuditEventsRequest(subject_type="proposal"), "subject_type"),
        (AU.ListAuditEventsRequest(subject_type="Clue", subject_id=1), "subject_type"),
    ]
    # Only the token's own digits: no prefix, sign or blank in front of the seq.
    seq, fp = r.next_page_token.split(".")
    for forged in ("0x" + seq, "+" + seq, " " + seq, "-" + seq, "0" * 17):
        bad.append((AU.ListAuditEventsRequest(page_size=2, page_token=f"{forged}.{fp}"), "page_token"))
    assert L(AU.ListAuditEventsRequest(page_size=2, page_token=f"0{seq}.{fp}"), metadata=c.md).events
    for req, word in bad:
        if word is None:  # extreme but valid
            assert len(L(req, metadata=c.md).events) == 0
            continue
        expect_status(grpc.StatusCode.INVALID_ARGUMENT, L, req, metadata=c.md, details_has=[word])
    # The same token with the same filters works, and a page size over the limit is clamped.
    assert L(AU.ListAuditEventsRequest(page_size=2, page_token=r.next_page_token), metadata=c.md).events[0].seq > \
        r.events[-1].seq
    assert len(L(AU.ListAuditEventsRequest(page_size=100000), metadata=c.md).events) <= 500
    expect_status(grpc.StatusCode.UNAUTHENTICATED, L, AU.ListAuditEventsRequest())


def clue_events(c, ids):
    return [r[0] for r in sql(c, "SELECT seq FROM audit_events WHERE subject_type = 'clue' AND "
                                 "subject_id = ANY(%s) ORDER BY seq", list(ids))]


def test_list_visibility(c):
    w = c.w
    g1 = [submit(w.G1.member, "一"), submit(w.G1.leader, "二")]
    g3 = [submit(w.G3.leader, "三")]
    r1 = [submit(w.R1.member, "四")]
    x1 = [submit(w.X1.member, "五")]
    # A move adds an event to a clue's trail.
    w.G1.leader.clue.RequestTransition(CL.RequestTransitionRequest(
        clue_id=g1[0].id, expected_version=g1[0].version, target=C.CLUE_STATE_PRELIMINARY_CHECK,
        reason="初核", request_id=new_request_id()), timeout=20)
    with c.db.cursor() as cur:
        for i in range(5):
            append(cur, "clue", FAKE + 900 + i, owner=c.room.id)  # no such clue: nobody's
    every = [r[0] for r in sql(c, "SELECT seq FROM audit_events ORDER BY seq")]
    # AUDITOR and ADMIN read the whole trail.
    assert list_all(c.audit, c.auditor_md, page_size=500)[0] == every
    assert list_all(c.audit, c.md, page_size=500)[0] == every
    # Everyone else: the events of the clues they see (ListClues' rule), no unit, user or
    # token events. A room sees its liaison groups' clues.
    sees = {
        (w.G1, "member"): g1, (w.G1, "leader"): g1, (w.R1, "member"): r1 + g1, (w.R2, "leader"): g3,
        (w.G2, "member"): [], (w.G3, "member"): g3, (w.X1, "leader"): x1,
    }
    for (unit, role), clues in sees.items():
        user = getattr(unit, role)
        got, _ = list_all(user.audit, (), page_size=3)
        assert got == clue_events(c, [x.id for x in clues]), (unit, role)
        listed = {x.id for x in user.clue.ListClues(CL.ListCluesRequest(page_size=500), timeout=10).clues}
        assert listed == {x.id for x in clues}, (unit, role)
    # Asking for a clue one does not see gives nothing rather than an error.
    assert list_all(w.G2.member.audit, (), subject_type="clue", subject_id=g1[0].id)[0] == []
    assert list_all(w.G1.member.audit, (), subject_type="user", subject_id=w.G1.member.id)[0] == []
    got, _ = list_all(w.R1.member.audit, (), subject_type="clue", subject_id=g1[0].id)
    assert got == clue_events(c, [g1[0].id]) and len(got) == 2


# ---- VerifyAuditChain -------------------------------------------------------------------

def verify(c, md=None, **subject):
    return c.audit.VerifyAuditChain(AU.VerifyAuditChainRequest(**subject), metadata=md or c.auditor_md, timeout=120)


def test_verify_permissions(c):
    for md in (c.member_md, c.leader_md):
        expect_status(grpc.StatusCode.PERMISSION_DENIED, c.audit.VerifyAuditChain, AU.VerifyAuditChainRequest(),
                      metadata=md)
    expect_status(grpc.StatusCode.INVALID_ARGUMENT, c.audit.VerifyAuditChain,
                  AU.VerifyAuditChainRequest(subject_type="clue"), metadata=c.md, details_has=["subject_id"])
    expect_status(grpc.StatusCode.INVALID_ARGUMENT, c.audit.VerifyAuditChain, AU.VerifyAuditChainRequest(subject_id=3),
                  metadata=c.md, details_has=["subject_type"])
    expect_status(grpc.StatusCode.INVALID_ARGUMENT, c.audit.VerifyAuditChain,
                  AU.VerifyAuditChainRequest(subject_type="clues", subject_id=3), metadata=c.md,
                  details_has=["subject_type"])
    assert verify(c, c.md).ok  # ADMIN may too


def busy_history(c):
    """Many units, users and tokens through AdminService, and chains appended concurrently."""
    for i in range(20):
        u = c.admin_b.CreateUnit(A.CreateUnitRequest(kind=ROOM, code=f"B{i}", name=f"busy room {i}"), metadata=c.md)
        for j in range(2):
            usr = c.admin.CreateUser(A.CreateUserRequest(unit_id=u.id, name=f"u{j}", role=C.ROLE_MEMBER), metadata=c.md)
            t = c.admin_b.IssueToken(A.IssueTokenRequest(user_id=usr.id), metadata=c.md)
            c.admin.IssueToken(A.IssueTokenRequest(user_id=usr.id, note="second"), metadata=c.md)
            if j:
                c.admin.RevokeToken(A.RevokeTokenRequest(token_id=t.token_id), metadata=c.md)

    def writer(k):
        conn = c.pg.connect(c.dbname)
        conn.autocommit = False
        rnd = random.Random(k)
        with conn.cursor() as cur:
            for i in range(400):
                append(cur, rnd.choice(["clue", "case", "proposal"]), FAKE + rnd.randrange(1, 150), owner=c.room.id,
                       reason=f"w{k} #{i} 理由")
                if i % 7 == 0:
                    conn.rollback()
                else:
                    conn.commit()
        conn.close()

    ts = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def test_verify_busy_history(c):
    busy_history(c)
    n_events = sql(c, "SELECT count(*) FROM audit_events")[0][0]
    n_subjects = sql(c, "SELECT count(*) FROM (SELECT DISTINCT subject_type, subject_id FROM audit_events) s")[0][0]
    assert n_events > 2000
    r = verify(c)
    assert r.ok and not r.HasField("broken"), r
    assert (r.subjects_checked, r.events_checked) == (n_subjects, n_events)
    r = verify(c, subject_type="clue", subject_id=FAKE + 5)
    assert r.ok and r.subjects_checked == 1
    assert r.events_checked == sql(c, "SELECT count(*) FROM audit_events WHERE subject_type = 'clue' "
                                      "AND subject_id = %s", FAKE + 5)[0][0]
    assert verify(c, subject_type="clue", subject_id=987654).subjects_checked == 0
    # Another implementation of the canonical encoding agrees with every stored hash (and
    # every link and head).
    chains = chain.verify(c.db)
    assert sum(len(evs) for evs in chains.values()) == n_events


def make_chain(c, sid, n=6):
    """A chain on subject ("case", sid) whose seqs leave a free seq after each event."""
    seqs, gaps = [], []
    with c.db.cursor() as cur:
        for i in range(n):
            seqs.append(append(cur, "case", sid, reason=f"step {i}"))
            cur.execute("SELECT nextval(pg_get_serial_sequence('audit_events', 'seq'))")
            gaps.append(cur.fetchone()[0])
    return seqs, gaps


def tamper(c, statements, how="replica"):
    """Run statements as a superuser with the append-only triggers out of the way."""
    with c.db.cursor() as cur:
        if how == "replica":
            cur.execute("SET session_replication_role = replica")
        else:
            cur.execute("ALTER TABLE audit_events DISABLE TRIGGER ALL")
        try:
            for s in statements:
                cur.execute(s)
        finally:
            if how == "replica":
                cur.execute("SET session_replication_role = DEFAULT")
            else:
                cur.execute("ALTER TABLE audit_events ENABLE TRIGGER ALL")


def expect_broken(c, sid, seq, problem, *words):
    for r in (verify(c), verify(c, subject_type="case", subject_id=sid)):
        assert not r.ok, r
        b = r.broken
        assert (b.subject_type, b.subject_id, b.seq, b.problem) == ("case", sid, seq, problem), (r, seq, problem)
        for w in words:
            assert w in b.detail, (w, b.detail)
    return r.broken.detail


def test_verify_detects_tampering(c):
    sid = 777001
    seqs, gaps = make_chain(c, sid)
    sql(c, "CREATE TABLE chain_copy AS SELECT * FROM audit_events WHERE subject_type = 'case' AND subject_id = %s", sid)
    sql(c, "CREATE TABLE head_copy AS SELECT * FROM audit_heads WHERE subject_type = 'case' AND subject_id = %s", sid)
    assert verify(c).ok

    def restore():
        tamper(c, [f"DELETE FROM audit_events WHERE subject_type = 'case' AND subject_id = {sid}",
                   "INSERT INTO audit_events SELECT * FROM chain_copy",
                   f"DELETE FROM audit_heads WHERE subject_type = 'case' AND subject_id = {sid}",
                   "INSERT INTO audit_heads SELECT * FROM head_copy"])
        assert verify(c).ok

    # A changed reason, with the triggers disabled outright.
    tamper(c, [f"UPDATE audit_events SET reason = 'nothing happened' WHERE seq = {seqs[2]}"], how="disable")
    expect_broken(c, sid, seqs[2], P.PROBLEM_CHANGED_CONTENT, "changed")
    restore()
    # A changed reason whose hash was recomputed too: the next link no longer names it.
    tamper(c, [f"UPDATE audit_events SET reason = 'x' WHERE seq = {seqs[2]}",
               f"UPDATE audit_events e SET hash = audit_hash(e) WHERE seq = {seqs[2]}"])
    expect_broken(c, sid, seqs[3], P.PROBLEM_MISSING_PREDECESSOR, f"seq {seqs[2]}")
    restore()
    # A deleted event in the middle: its successor's predecessor is missing.
    tamper(c, [f"DELETE FROM audit_events WHERE seq = {seqs[2]}"])
    expect_broken(c, sid, seqs[3], P.PROBLEM_MISSING_PREDECESSOR, f"between seq {seqs[1]} and seq {seqs[3]}")
    restore()
    # The chain's last event deleted: the head still names it.
    tamper(c, [f"DELETE FROM audit_events WHERE seq = {seqs[-1]}"])
    expect_broken(c, sid, seqs[-1], P.PROBLEM_MISSING_PREDECESSOR, f"seq {seqs[-1]}", "missing")
    restore()
    # The first event deleted.
    tamper(c, [f"DELETE FROM audit_events WHERE seq = {seqs[0]}"])
    expect_broken(c, sid, seqs[1], P.PROBLEM_MISSING_PREDECESSOR, "first")
    restore()
    # A forged event squeezed in after seqs[1], correctly linked and hashed: it forks the chain.
    forge_mid = (f"DO $$ DECLARE e audit_events; BEGIN SELECT * INTO e FROM audit_events WHERE seq = {seqs[1]}; "
                 f"e.prev_hash := e.hash; e.seq := {gaps[1]}; e.reason := 'forged'; e.hash := audit_hash(e); "
                 f"INSERT INTO audit_events VALUES (e.*); END $$")
    tamper(c, [forge_mid])
    expect_broken(c, sid, gaps[1], P.PROBLEM_FORGED, f"seq {seqs[1]}")
    restore()
    # A forged event appended behind the head, also valid-looking.
    forge_end = forge_mid.replace(f"seq = {seqs[1]}", f"seq = {seqs[-1]}").replace(f"{gaps[1]}", f"{gaps[-1]}")
    tamper(c, [forge_end])
    expect_broken(c, sid, gaps[-1], P.PROBLEM_FORGED, "head")
    restore()
    # A forged event with a made-up hash.
    tamper(c, [forge_mid.replace("e.hash := audit_hash(e)", "e.hash := sha256('x')")])
    expect_broken(c, sid, gaps[1], P.PROBLEM_FORGED)
    restore()
    # Two events' contents swapped (each keeps its seq).
    swap = ("UPDATE audit_events t SET at = s.at, reason = s.reason, prev_hash = s.prev_hash, hash = s.hash "
            f"FROM (SELECT {seqs[1]} AS tseq, * FROM chain_copy WHERE seq = {seqs[3]} UNION ALL "
            f"SELECT {seqs[3]}, * FROM chain_copy WHERE seq = {seqs[1]}) s WHERE t.seq = s.tseq")
    tamper(c, [swap])
    expect_broken(c, sid, seqs[1], P.PROBLEM_REORDERED, f"seq {seqs[2]}")
    restore()
    # Two events' seqs swapped.
    tamper(c, [f"UPDATE audit_events SET seq = -seq WHERE seq IN ({seqs[1]}, {seqs[3]})",
               f"UPDATE audit_events SET seq = CASE seq WHEN -{seqs[1]} THEN {seqs[3]} ELSE {seqs[1]} END "
               f"WHERE seq IN (-{seqs[1]}, -{seqs[3]})"])
    expect_broken(c, sid, seqs[1], P.PROBLEM_REORDERED)
    restore()
    # Only the stored hash altered.
    tamper(c, [f"UPDATE audit_events SET hash = sha256('y') WHERE seq = {seqs[4]}"])
    expect_broken(c, sid, seqs[4], P.PROBLEM_CHANGED_CONTENT, "hash was altered")
    restore()
    # The head removed: the chain is no longer anchored. (Removing a head is refused too.)
    expect_error = False
    try:
        sql(c, f"DELETE FROM audit_heads WHERE subject_type = 'case' AND subject_id = {sid}")
    except Exception:
        expect_error = True
    assert expect_error, "deleting a chain head was allowed"
    tamper(c, [f"DELETE FROM audit_heads WHERE subject_type = 'case' AND subject_id = {sid}"])
    expect_broken(c, sid, seqs[0], P.PROBLEM_FORGED, "head")
    restore()
    # The first broken link across every chain is the lowest seq.
    tamper(c, [f"DELETE FROM audit_events WHERE seq = {seqs[4]}",
               f"UPDATE audit_events SET reason = 'y' WHERE seq = {seqs[1]}"])
    expect_broken(c, sid, seqs[1], P.PROBLEM_CHANGED_CONTENT)
    restore()
    sql(c, "DROP TABLE chain_copy, head_copy")


def test_verify_100k_events(c):
    """Fast enough for a real trail: 100,000 events over 5,000 chains."""
    pg = harness.Postgres.get()
    name = pg.new_database()
    srv = harness.Clued(pg.url(name)).start()
    try:
        out = srv.run("bootstrap").stdout
        md = [("authorization", "Bearer " + re.search(r"ct_[0-9a-f]{64}", out).group(0))]
        db = pg.connect(name)
        with db.cursor() as cur:
            cur.execute("SELECT count(audit_append(1, 1, 'bulk.event', 'clue', g % 5000 + 1, 1, NULL, NULL, 'r', "
                        "jsonb_build_object('n', g))) FROM generate_series(1, 100000) g")
        db.close()
        with grpc.insecure_channel(srv.addr) as ch:
            stub = S.audit_pb2_grpc.AuditServiceStub(ch)
            t0 = time.time()
            r = stub.VerifyAuditChain(AU.VerifyAuditChainRequest(), metadata=md, timeout=120)
            took = time.time() - t0
        print(f"VerifyAuditChain over {r.events_checked} events, {r.subjects_checked} chains: {took:.2f} s")
        assert r.ok and r.events_checked == 100003 and r.subjects_checked == 5002
        assert took < 20, took
    finally:
        srv.stop()


# ---- WatchEvents ------------------------------------------------------------------------

def test_watch_bad_requests(c):
    for req, word in [(AU.WatchEventsRequest(after_seq=-1), "after_seq"),
                      (AU.WatchEventsRequest(subject_id=4), "subject_id"),
                      (AU.WatchEventsRequest(action="\x02"), "action"),
                      (AU.WatchEventsRequest(subject_type="token"), "subject_type")]:
        call = c.audit.WatchEvents(req, metadata=c.md)
        expect_status(grpc.StatusCode.INVALID_ARGUMENT, next, call, details_has=[word])
    call = c.audit.WatchEvents(AU.WatchEventsRequest())
    expect_status(grpc.StatusCode.UNAUTHENTICATED, next, call)


def test_watch_from_past_the_end_of_the_log_is_out_of_range(c):
    """A seq past the log's end is from another database or made up: the stream waited for
    ever, its heartbeats saying it had every event up to it. OUT_OF_RANGE instead; a seq the
    other instance has just committed, which this one may not have decided yet, is fine."""
    top = max_seq(c)
    for after in (top + 1000, 2**63 - 1):
        call = c.audit_b.WatchEvents(AU.WatchEventsRequest(after_seq=after, heartbeat_seconds=1), metadata=c.md)
        msg = expect_status(grpc.StatusCode.OUT_OF_RANGE, next, call, details_has=["after_seq"])
        assert "past the end of the audit log" in msg, msg
    submit(c.w.G1.member, "刚提交")
    top = max_seq(c)
    w = Watch(c.audit_b, c.md, after=top)
    later = submit(c.w.G1.member, "之后")
    e = w.next(timeout=30)
    assert e is not None and e.subject_id == later.id, (e, w.status)
    w.cancel()


def test_watch_heartbeat(c):
    """heartbeat_seconds: 0 (the default) sends nothing while nothing happens, as before; 1..3600
    asks for an AuditEvent with only seq set (action empty) after that long without a message,
    the seq to resume from, which moves on past events the caller may not see; anything else
    is INVALID_ARGUMENT naming the field."""
    for hb in (-1, 3601):
        call = c.audit.WatchEvents(AU.WatchEventsRequest(heartbeat_seconds=hb), metadata=c.md)
        expect_status(grpc.StatusCode.INVALID_ARGUMENT, next, call, details_has=["heartbeat_seconds"])
    start = max_seq(c)
    quiet = Watch(c.audit, c.md, after=start)
    slow = Watch(c.audit, c.md, after=start, heartbeat_seconds=3600)
    beat = Watch(c.audit, c.md, after=start, heartbeat_seconds=1)
    member = Watch(c.audit_b, c.member_md, after=start, heartbeat_seconds=1)
    t0 = time.time()
    e = beat.next(timeout=5)
    assert 0.8 < time.time() - t0 < 3, time.time() - t0
    assert e.action == "" and e.seq == start and not e.at_ms and not e.subject_type, e
    assert member.next(timeout=5).seq == start
    with c.db.cursor() as cur:
        a = append(cur, "unit", FAKE + 7001)  # no member sees a unit's events
    got = beat.until(a)
    assert [(x.seq, x.action) for x in got if x.action] == [(a, "test.event")], got
    e = beat.next(timeout=5)
    assert e.action == "" and e.seq == a, e
    # The member's heartbeat moves past the event it may not see, and shows nothing of it.
    deadline = time.time() + 10
    while True:
        e = member.next(timeout=5)
        assert e.action == "" and not e.subject_type and not e.at_ms, e
        if e.seq == a or time.time() > deadline:
            break
    assert e.seq == a, e
    # Without a heartbeat, or with a long one, an idle stream stays silent.
    assert [x.seq for x in quiet.until(a)] == [a]
    assert [x.seq for x in slow.until(a)] == [a]
    time.sleep(2.5)
    assert quiet.q.empty() and slow.q.empty()
    for x in (quiet, slow, beat, member):
        x.cancel()


def test_watch_replays_then_follows_across_instances(c):
    start = max_seq(c)
    history = [r[0] for r in sql(c, "SELECT seq FROM audit_events ORDER BY seq")]
    w = Watch(c.audit, c.md, after=0)  # the whole history first, from the database
    got = [e.seq for e in w.until(start)]
    assert got == history
    # Events committed through the other instance arrive live.
    u = c.admin_b.CreateUnit(A.CreateUnitRequest(kind=ROOM, code="R5", name="第五室"), metadata=c.md)
    e = w.next()
    s0 = max_seq(c)
    assert (e.seq, e.action, e.subject_type, e.subject_id) == (s0, "unit.create", "unit", u.id)
    # And on instance B too, from a seq in the middle.
    wb = Watch(c.audit_b, c.md, after=history[-4])
    assert [x.seq for x in wb.until(s0)] == history[-3:] + [s0]
    with c.db.cursor() as cur:
        s1 = append(cur, "clue", FAKE + 4242, owner=c.room.id)
    assert w.next().seq == s1 and wb.next().seq == s1
    w.cancel()
    wb.cancel()
    # Two LISTEN connections per instance (the watchers' tail and the principal cache of
    # rpc/auth.c), however many watchers.
    ws = [Watch(c.audit, c.md, after=s1) for _ in range(5)]
    with c.db.cursor() as cur:
        s2 = append(cur, "clue", FAKE + 4243, owner=c.room.id)
    assert all(x.next().seq == s2 for x in ws)
    listeners = sql(c, "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = 'clued-listen'",
                    c.dbname)[0][0]
    assert listeners == 4, listeners
    for x in ws:
        x.cancel()


def seq_of(c, clue_id, action):
    return sql(c, "SELECT max(seq) FROM audit_events WHERE subject_type = 'clue' AND subject_id = %s "
                  "AND action = %s", clue_id, action)[0][0]


def test_watch_filters_and_visibility(c):
    w = c.w
    start = max_seq(c)
    w_subject = Watch(c.audit, c.md, after=start, subject_type="clue", subject_id=FAKE + 5151)
    w_action = Watch(c.audit, c.md, after=start, action="clue.handover")
    w_auditor = Watch(c.audit_b, c.auditor_md, after=start)
    # Members of one visibility group (R1's staff), on both instances, and other units.
    w_r1 = [Watch(c.audit, list(w.R1.member.metadata), after=start),
             Watch(c.audit_b, list(w.R1.member.metadata), after=start),
             Watch(c.audit, list(w.R1.leader.metadata), after=start)]
    w_g2 = Watch(c.audit_b, list(w.G2.member.metadata), after=start)
    w_g3 = Watch(c.audit, list(w.G3.member.metadata), after=start)
    w_r1_moves = Watch(c.audit, list(w.R1.member.metadata), after=start, action="clue.move")
    with c.db.cursor() as cur:
        a = append(cur, "clue", FAKE + 5151, owner=c.group.id)
        b = append(cur, "clue", FAKE + 5152, owner=c.room.id, action="clue.handover")
        cc = append(cur, "clue", FAKE + 5151, owner=c.room.id, action="clue.handover")
    mine = submit(w.G1.member, "liaison room sees it")   # G1's: R1 is its liaison room
    other = submit(w.G3.leader, "R1 does not")           # G3's: R2's
    w.G1.leader.clue.RequestTransition(CL.RequestTransitionRequest(
        clue_id=mine.id, expected_version=mine.version, target=C.CLUE_STATE_PRELIMINARY_CHECK,
        reason="初核", request_id=new_request_id()), timeout=20)
    c.admin.CreateUnit(A.CreateUnitRequest(kind=ROOM, code="R6", name="第六室"), metadata=c.md)
    last = max_seq(c)
    s_submit, s_move, s_other = seq_of(c, mine.id, "clue.submit"), seq_of(c, mine.id, "clue.move"), \
        seq_of(c, other.id, "clue.submit")
    assert [e.seq for e in w_subject.until(cc)] == [a, cc]
    assert [e.seq for e in w_action.until(cc)] == [b, cc]
    assert [e.seq for e in w_auditor.until(last)] == seqs_after(c, start)
    for x in w_r1:
        got = x.until(s_move)
        assert [(e.seq, e.subject_id) for e in got] == [(s_submit, mine.id), (s_move, mine.id)]
    assert [e.seq for e in w_r1_moves.until(s_move)] == [s_move]
    assert [e.seq for e in w_g3.until(s_other)] == [s_other]
    time.sleep(0.3)
    for x in [w_subject, w_action, w_g2, w_g3, w_r1_moves] + w_r1:
        assert x.q.empty(), x
        x.cancel()
    w_auditor.cancel()
    # A replay from the database applies the same visibility.
    x = Watch(c.audit_b, list(w.R1.member.metadata), after=start)
    assert [e.seq for e in x.until(s_move)] == [s_submit, s_move]
    x.cancel()
    x = Watch(c.audit, list(w.G2.member.metadata), after=0)
    time.sleep(0.3)
    assert x.q.empty()
    x.cancel()


def test_watch_waits_for_late_commit_and_skips_rollback(c):
    """seq g drawn first, g+1 committed first: g+1 must wait for g; a rolled-back seq is skipped."""
    start = max_seq(c)
    w = Watch(c.audit, c.md, after=start)
    slow = c.pg.connect(c.dbname)
    slow.autocommit = False
    with slow.cursor() as cur:
        g = append(cur, "clue", FAKE + 6001, owner=c.room.id)  # drawn, not committed
    with c.db.cursor() as cur:
        h = append(cur, "clue", FAKE + 6002, owner=c.room.id)  # committed after g was drawn
    assert h == g + 1
    time.sleep(0.5)
    assert w.q.empty(), "an event was delivered past an undecided seq"
    slow.commit()
    assert [w.next().seq, w.next().seq] == [g, h]
    # Now a rollback: the later event is delivered once the rolled-back one is decided.
    with slow.cursor() as cur:
        r = append(cur, "clue", FAKE + 6003, owner=c.room.id)
    with c.db.cursor() as cur:
        k = append(cur, "clue", FAKE + 6004, owner=c.room.id)
    time.sleep(0.3)
    assert w.q.empty()
    slow.rollback()
    e = w.next()
    assert e.seq == k and r < k
    slow.close()
    w.cancel()


def test_watch_concurrent_writers_with_resumes(c):
    """1,000 events from writers whose commits reorder (and some roll back), plus AdminService
    calls through both instances, while a watcher disconnects and resumes several times."""
    start = max_seq(c)
    rolled_back = []
    lock = threading.Lock()
    per_writer = 175

    def writer(k):
        conn = c.pg.connect(c.dbname)
        conn.autocommit = False
        rnd = random.Random(100 + k)
        mine = []
        with conn.cursor() as cur:
            for i in range(per_writer):
                seq = append(cur, "clue", FAKE + 7000 + rnd.randrange(40), owner=c.room.id, reason=f"{k}/{i}")
                time.sleep(rnd.uniform(0, 0.006))
                if i % 25 == 7:
                    conn.rollback()
                    mine.append(seq)
                else:
                    conn.commit()
        conn.close()
        with lock:
            rolled_back.extend(mine)

    run = random.randrange(10 ** 6)

    def admin_writer(stub, tag):
        for i in range(25):
            stub.CreateUnit(A.CreateUnitRequest(kind=ROOM, code=f"{tag}{run}X{i}", name=f"{tag} {run} unit {i}"),
                            metadata=c.md)

    def clue_writer(users):
        for i in range(15):
            for u in users:
                submit(u, f"并发 {i}")

    writers = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
    writers += [threading.Thread(target=admin_writer, args=(c.admin, "WA")),
                threading.Thread(target=admin_writer, args=(c.admin_b, "WB")),
                threading.Thread(target=clue_writer, args=([c.w.G1.member, c.w.G3.leader],)),
                threading.Thread(target=clue_writer, args=([c.w.G2.leader, c.w.R1.leader],))]
    steady = Watch(c.audit_b, c.md, after=start)  # stays connected throughout
    # R1's staff see the clues of R1, G1 and G2, not G3's.
    steady_r1 = Watch(c.audit, list(c.w.R1.member.metadata), after=start)
    for t in writers:
        t.start()
    delivered, last, resumes, marks = [], start, 0, []
    rnd = random.Random(7)
    stubs = [c.audit, c.audit_b]
    while True:
        w = Watch(stubs[resumes % 2], c.md, after=last)
        marks.append((resumes % 2, last))
        take = rnd.randrange(60, 220)
        for _ in range(take):
            try:
                e = w.next(timeout=0.5 if not any(t.is_alive() for t in writers) else 10)
            except queue.Empty:
                break
            assert e is not None, w.status
            delivered.append(e.seq)
            last = e.seq
        w.cancel()
        resumes += 1
        if not any(t.is_alive() for t in writers) and last >= max_seq(c):
            break
        assert resumes < 200
    for t in writers:
        t.join()
    committed = [r[0] for r in sql(c, "SELECT seq FROM audit_events WHERE seq > %s ORDER BY seq", start)]
    assert len(committed) >= 1000, len(committed)
    assert resumes >= 5, resumes
    missing = sorted(set(committed) - set(delivered))
    assert delivered == committed, (len(delivered), len(committed), missing, marks)
    assert all(a < b for a, b in zip(delivered, delivered[1:]))
    assert rolled_back and not set(rolled_back) & set(delivered)
    assert [e.seq for e in steady.until(committed[-1])] == committed
    steady.cancel()
    r1_sees = [r[0] for r in sql(c, "SELECT e.seq FROM audit_events e JOIN clues cl ON cl.id = e.subject_id "
                                    "WHERE e.subject_type = 'clue' AND e.seq > %s AND cl.owner_unit = ANY(%s) "
                                    "ORDER BY e.seq", start, [c.w.R1.id, c.w.G1.id, c.w.G2.id])]
    assert len(r1_sees) == 45
    assert [e.seq for e in steady_r1.until(r1_sees[-1])] == r1_sees
    time.sleep(0.3)
    assert steady_r1.q.empty()
    steady_r1.cancel()
    # Every gap is a rolled-back seq (or one burnt by a failed call).
    gaps = set(range(start + 1, committed[-1] + 1)) - set(committed)
    assert set(rolled_back) <= gaps
    print(f"{len(delivered)} events over {resumes} watches; {len(gaps)} gaps, {len(rolled_back)} rolled back")


def raw_watch(addr, md, after):
    """WatchEvents over a raw HTTP/2 connection that acknowledges nothing until read."""
    h = rawh2.RawH2(addr, timeout=30)
    body = AU.WatchEventsRequest(after_seq=after).SerializeToString()
    sid = h.request("/clue.v1.AuditService/WatchEvents", rawh2.grpc_frame(body), headers=md)
    return h, sid


def parse_frames(data):
    out, i = [], 0
    while i + 5 <= len(data):
        _, n = struct.unpack(">BI", data[i:i + 5])
        out.append(C.AuditEvent.FromString(data[i + 5:i + 5 + n]))
        i += 5 + n
    assert i == len(data)
    return out


def test_watch_slow_watcher_is_ended_and_resumes(c):
    start = max_seq(c)
    # The auditor watches: an ADMIN would get these clue events without their large reasons.
    h, sid = raw_watch(c.a.addr, c.auditor_md, start)
    fast = Watch(c.audit, c.auditor_md, after=start)
    time.sleep(0.3)
    # More than the server keeps in memory, in big events, while the raw client reads nothing.
    with c.db.cursor() as cur:
        cur.execute("SELECT count(audit_append(NULL, NULL, 'bulk.event', 'clue', 108000 + g %% 50, %s, NULL, NULL, "
                    "repeat('x', 200), '{}')) FROM generate_series(1, 5000) g", (c.room.id,))
    end = max_seq(c)
    # A watcher that reads keeps up with the same burst.
    everything = seqs_after(c, start)
    assert len(everything) == 5000
    assert [e.seq for e in fast.until(end, timeout=60)] == everything
    fast.cancel()
    r = h.wait(sid)
    h.close()
    assert r.grpc_status == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], (r.grpc_status, r.grpc_message)
    m = re.search(r"watcher too slow; resume from seq (\d+)", r.grpc_message)
    assert m, r.grpc_message
    resume = int(m.group(1))
    got = [e.seq for e in parse_frames(r.data)]
    assert got == [x for x in everything if x <= resume] and resume < end
    # Resuming from the seq named picks up exactly where it stopped.
    w = Watch(c.audit, c.auditor_md, after=resume)
    assert [e.seq for e in w.until(end, timeout=60)] == [x for x in everything if x > resume]
    w.cancel()
    assert "watcher too slow" in c.a.output()


def test_a_paused_watcher_with_a_heartbeat_holds_nothing_up(c):
    """A stream with a heartbeat whose client stops reading: its call fills, the watcher
    pauses, and its heartbeat falls due. The server goes on serving everyone else (the sweep
    looks at that heartbeat again an interval later; it used to restart itself at once, from
    its own callback, for as long as the client did not read, and the event loop never got
    back to its sockets: no call answered, not even SIGTERM). Once the client reads, every
    event comes, in order, then the heartbeats again."""
    start = max_seq(c)
    h = rawh2.RawH2(c.a.addr, timeout=30)
    body = AU.WatchEventsRequest(after_seq=start, heartbeat_seconds=1).SerializeToString()
    sid = h.request("/clue.v1.AuditService/WatchEvents", rawh2.grpc_frame(body), headers=c.auditor_md)
    time.sleep(0.3)
    with c.db.cursor() as cur:  # far more than the client's window and the call's 64 KiB
        cur.execute("SELECT count(audit_append(NULL, NULL, 'bulk.event', 'clue', 109000 + g %% 50, %s, NULL, NULL, "
                    "repeat('x', 400), '{}')) FROM generate_series(1, 600) g", (c.room.id,))
    end = max_seq(c)
    health = S.health_pb2_grpc.HealthStub(c.ch_a)
    for _ in range(4):  # past the heartbeat's interval, twice over
        time.sleep(0.8)
        assert health.Check(S.health_pb2.HealthCheckRequest(), timeout=5).status == S.health_pb2.HealthCheckResponse.SERVING
    u = c.admin.CreateUnit(A.CreateUnitRequest(kind=ROOM, code="RHB", name="心跳"), metadata=c.md, timeout=5)
    assert u.id > 0
    # The client reads: every event in order, then a heartbeat at the last of them.
    r, got, deadline = h.responses[sid], [], time.time() + 30
    while time.time() < deadline and not (got and got[-1].seq >= end and got[-1].action == ""):
        assert h.pump(), "connection closed"
        got, i = [], 0
        while i + 5 <= len(r.data):
            _, n = struct.unpack(">BI", r.data[i:i + 5])
            if i + 5 + n > len(r.data):
                break
            got.append(C.AuditEvent.FromString(r.data[i + 5:i + 5 + n]))
            i += 5 + n
    h.close()
    events = [e.seq for e in got if e.action]
    assert events == seqs_after(c, start)[:len(events)] and events[-1] >= end, (len(events), end)
    assert got[-1].action == "" and got[-1].seq >= end, got[-1]


def test_a_replay_past_the_lock_timeout_is_told_to_retry(c):
    """A stream's catch-up read that waits past --db-lock-timeout (audit_events locked from
    outside, as a VACUUM FULL or a migration would) ends ABORTED with the seq to resume from,
    as any read is told a lock timeout, not INTERNAL; resumed once the lock goes, it misses
    nothing."""
    srv = harness.Clued(c.url, args=["--db-lock-timeout", "500"]).start(migrate=False)
    holder = c.pg.connect(c.dbname)
    holder.autocommit = False
    try:
        with grpc.insecure_channel(srv.addr) as ch:
            audit = S.audit_pb2_grpc.AuditServiceStub(ch)
            live = Watch(audit, c.auditor_md, after=max_seq(c))
            with c.db.cursor() as cur:  # the tail following, its ring from here: the next replays
                s0 = append(cur, "clue", FAKE + 4300, owner=c.room.id)
            assert live.next(timeout=20).seq == s0
            holder.cursor().execute("LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE")
            late = Watch(audit, c.auditor_md, after=0)
            assert late.next(timeout=20) is None
            code, msg = late.status
            assert code == grpc.StatusCode.ABORTED and msg.endswith("; resume from seq 0"), late.status
            holder.rollback()
            again = Watch(audit, c.auditor_md, after=0)
            end = max_seq(c)
            assert [e.seq for e in again.until(end)] == seqs_after(c, 0)
            again.cancel()
            live.cancel()
    finally:
        holder.close()
        out = srv.stop()
    assert "audit catch-up query failed" not in out, out[-2000:]


def test_watch_300_watchers(c):
    start = max_seq(c)
    # Four connections (a channel per connection), 75 streams each: under the server's limit
    # of 100 concurrent streams per connection.
    chans = [grpc.insecure_channel(x.addr, options=[("grpc.use_local_subchannel_pool", 1)])
             for x in (c.a, c.a, c.b, c.b)]
    stubs = [S.audit_pb2_grpc.AuditServiceStub(ch) for ch in chans]
    # R1's staff see G1's clues. 25 streams of each user on each instance: under the bound of a
    # user's streams (test_watch_streams_of_one_user_are_bounded).
    mds = [c.md, c.auditor_md] + [list(u.metadata) for u in (c.w.R1.member, c.w.R1.leader, c.w.G1.leader,
                                                              c.w.G1.member)]
    ws = [Watch(stubs[i % 4], mds[i % 6], after=start) for i in range(300)]
    time.sleep(1.0)
    clue = submit(c.w.G1.member, "三百")
    want = (seq_of(c, clue.id, "clue.submit"), "clue", clue.id, "clue.submit")
    deadline = time.time() + 30
    for w in ws:
        e = w.next(timeout=max(0.1, deadline - time.time()))
        assert e is not None, w.status
        assert (e.seq, e.subject_type, e.subject_id, e.action) == want
    for w in ws:
        w.cancel()
    for ch in chans:
        ch.close()


def test_watch_streams_of_one_user_are_bounded(c):
    """Each stream costs the server work on every event; one user holds at most 32 on one
    server. The next is RESOURCE_EXHAUSTED until one ends; other users, and the same user on
    another server, are not held back."""
    start = max_seq(c)
    member_md = list(c.w.G1.member.metadata)
    with grpc.insecure_channel(c.a.addr, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        stub = S.audit_pb2_grpc.AuditServiceStub(ch)
        ws = [Watch(stub, member_md, after=start, heartbeat_seconds=1) for _ in range(32)]
        for w in ws:
            assert w.next(timeout=20) is not None, w.status  # a heartbeat: the stream is open
        extra = Watch(stub, member_md, after=start)
        assert extra.next(timeout=20) is None
        code, details = extra.status
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "at most 32" in details, extra.status
        other = Watch(stub, c.leader_md, after=start, heartbeat_seconds=1)
        assert other.next(timeout=20) is not None, other.status
        elsewhere = Watch(c.audit_b, member_md, after=start, heartbeat_seconds=1)
        assert elsewhere.next(timeout=20) is not None, elsewhere.status
        ws[0].cancel()

        def one_more():
            w = Watch(stub, member_md, after=start, heartbeat_seconds=1)
            if w.next(timeout=20) is not None:
                ws.append(w)
                return True
            return False
        harness.wait_for(one_more, timeout=10, what="a stream once one of the 32 ended")
        for w in ws + [other, elsewhere]:
            w.cancel()


def test_watch_ends_on_shutdown_and_resumes_elsewhere(c):
    start = max_seq(c)
    b2 = harness.Clued(c.url).start(migrate=False)
    with grpc.insecure_channel(b2.addr) as ch:
        w = Watch(S.audit_pb2_grpc.AuditServiceStub(ch), c.md, after=start)
        with c.db.cursor() as cur:
            s1 = append(cur, "clue", FAKE + 9001, owner=c.room.id)
        assert w.next().seq == s1
        b2.stop()
        assert w.next() is None
        assert w.status[0] == grpc.StatusCode.UNAVAILABLE and f"resume from seq {s1}" in w.status[1], w.status
    with c.db.cursor() as cur:
        s2 = append(cur, "clue", FAKE + 9002, owner=c.room.id)
    w = Watch(c.audit, c.md, after=s1)
    assert w.next().seq == s2
    w.cancel()


def test_watch_survives_a_database_restart(c):
    """A live watcher waits out PostgreSQL going away and coming back, and misses nothing."""
    pg = harness.private_postgres()
    name = pg.new_database()
    srv = harness.Clued(pg.url(name)).start()
    try:
        md = [("authorization", "Bearer " + world.bootstrap_token(srv))]
        with grpc.insecure_channel(srv.addr) as ch:
            audit = S.audit_pb2_grpc.AuditServiceStub(ch)
            admin = S.admin_pb2_grpc.AdminServiceStub(ch)
            w = Watch(audit, md, after=0)
            assert [w.next().seq for _ in range(3)] == [1, 2, 3]  # the bootstrap's events
            pg.stop_cluster()
            time.sleep(0.5)
            pg.start_cluster()
            srv.wait_serving()
            u = admin.CreateUnit(A.CreateUnitRequest(kind=ROOM, code="RR1", name="重启"), metadata=md,
                                 timeout=10)
            e = w.next(timeout=30)
            assert e is not None, w.status
            assert e.seq > 3 and (e.subject_type, e.subject_id) == ("unit", u.id)
            w.cancel()
    finally:
        srv.stop()


def test_watchers_that_come_and_go_while_the_tail_reads(c):
    """The last watcher leaves while the tail's read waits for the pool, a new one comes and
    leaves too before the read answers: the tail stays stopping (no second stop), ends when
    the read answers, and follows again for the next watcher, missing nothing."""
    from test_metrics import MetricsClued, scrape, value
    srv = MetricsClued(c.url, args=["--db-pool", "1", "--auth-cache-ttl", "60000",
                                    "--metrics-listen", "127.0.0.1:0"]).start(migrate=False).wait_listening()
    lk = c.pg.connect(c.dbname)
    lk.autocommit = False
    try:
        def gauge(name):
            return value(scrape(srv.metrics_addr), name)

        with grpc.insecure_channel(srv.addr) as ch:
            audit = S.audit_pb2_grpc.AuditServiceStub(ch)
            clue = S.clue_pb2_grpc.ClueServiceStub(ch)
            md = c.auditor_md
            top = max_seq(c)
            w1 = Watch(audit, md, after=top)
            harness.wait_for(lambda: gauge("clued_audit_watchers") == 1, what="the first watcher")
            # The instance's one pool connection held: a submission waits at its key's lock.
            req = CL.SubmitClueRequest(
                request_id=new_request_id(), title="停住的提交", summary="s",
                source=CL.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=CL.SubjectPerson(name="张三"),
                host_unit="市发展改革委")
            lk.cursor().execute("SELECT pg_advisory_xact_lock(hashtextextended("
                                "'clue_requests/' || %s || '/' || %s::uuid, 0))", (c.leader.id, req.request_id))
            held = clue.SubmitClue.future(req, metadata=c.leader_md, timeout=60)
            harness.wait_for(lambda: sql(c, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                                            " AND database = (SELECT oid FROM pg_database"
                                            " WHERE datname = current_database())")[0][0] == 1,
                             what="the submission at its lock")
            # An event through the other instance: this one's tail reads, behind the pool.
            submit(c.w.G2.leader, "经另一实例")
            harness.wait_for(lambda: gauge("clued_db_queue_depth") >= 1, what="the tail's read queued")
            w1.cancel()
            harness.wait_for(lambda: gauge("clued_audit_watchers") == 0, what="the first watcher gone")
            w2 = Watch(audit, md, after=top)
            harness.wait_for(lambda: gauge("clued_audit_watchers") == 1, what="the second watcher")
            w2.cancel()
            harness.wait_for(lambda: gauge("clued_audit_watchers") == 0, what="the second watcher gone")
            assert srv.alive(), srv.output()[-3000:]
            lk.rollback()
            assert held.result().id > 0
            # Following again: a new watcher gets every event since, live ones too.
            w3 = Watch(audit, md, after=top)
            last = submit(c.w.G2.leader, "之后")
            got = [e for e in w3.until(max_seq(c))]
            assert [e.seq for e in got] == seqs_after(c, top)
            assert any(e.subject_type == "clue" and e.subject_id == last.id for e in got)
            w3.cancel()
    finally:
        lk.close()
        srv.stop()


if __name__ == "__main__":
    harness.run_tests(globals(), setup, teardown)
