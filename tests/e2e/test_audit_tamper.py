"""Tampering with the audit trail as the database superuser, triggers disabled, each on a
fresh log after an auditor saved a signed checkpoint: `cluectl audit verify --checkpoint`
must exit 1 and name the right seq, where the hash chains alone (plain `audit verify`)
are fooled by the careful ones. A clean log verifies (exit 0) before each tampering."""

import os
import re
import sys
import tempfile

import grpc

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import new_request_id  # noqa: E402
import tlog  # noqa: E402
import world  # noqa: E402

S = harness.stubs()
AU = S.audit_pb2
pb = S.clue_pb2
TMP = tempfile.mkdtemp(prefix="clued-tamper-")
KEY = os.path.join(TMP, "audit.key")
subprocess_ok = harness.subprocess.run([harness.CLUED, "keygen", "--out", KEY], capture_output=True)
assert subprocess_ok.returncode == 0


def cp_size(stub, md):
    """The latest checkpoint's size, 0 while none is published."""
    try:
        return stub.GetCheckpoint(AU.GetCheckpointRequest(), metadata=md).tree_size
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.NOT_FOUND:
            return 0
        raise


class Log:
    """A fresh database and clued, a few clues with a reporter, notes and moves, and a
    checkpoint of all of it saved by the auditor."""

    def __init__(self):
        self.pg = harness.Postgres.get()
        self.dbname = self.pg.new_database()
        self.url = self.pg.url(self.dbname)
        self.args = ["--audit-signing-key", KEY, "--checkpoint-every", "1000", "--checkpoint-interval", "200ms"]
        self.srv = harness.Clued(self.url, args=self.args).start()
        try:
            self._populate()
        except BaseException:
            self.srv.stop()  # a failed set-up leaves no clued behind
            raise

    def _populate(self):
        self.w = world.build(self.srv)
        self.db = self.pg.connect(self.dbname)
        g = self.w.G1
        self.clues = []
        for i in range(3):
            rep = pb.ReporterContact(name="举报人", phone="1370000000%d" % i) if i != 1 else None
            c = g.member.clue.SubmitClue(pb.SubmitClueRequest(
                request_id=new_request_id(), title=f"线索{i}", summary="反映某某违规收受礼金",
                source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=pb.SubjectPerson(name="张三"),
                host_unit="市发展改革委", reporter=rep), timeout=20)
            self.clues.append(c.id)
            g.member.clue.AddNote(pb.AddNoteRequest(clue_id=c.id, kind=pb.NOTE_KIND_OTHER, text=f"笔记{i}",
                                                    request_id=new_request_id()), timeout=20)
            g.leader.clue.RequestTransition(pb.RequestTransitionRequest(
                clue_id=c.id, expected_version=c.version, target=S.common_pb2.CLUE_STATE_PRELIMINARY_CHECK,
                reason="依据初步核实情况", request_id=new_request_id()), timeout=20)
        self.cp = self.save_checkpoint()

    def env(self):
        return {"CLUED_SERVER": self.srv.addr, "CLUED_TOKEN": self.w.auditor.token}

    def nevents(self):
        return len(tlog.rows(self.db))

    def save_checkpoint(self):
        n = self.nevents()
        a = S.audit_pb2_grpc.AuditServiceStub(self.w.auditor.channel)
        harness.wait_for(lambda: cp_size(a, self.w.auditor.metadata) == n, timeout=180, what="a checkpoint of the whole log")
        path = os.path.join(TMP, f"{self.dbname}.cp")
        harness.cluectl("audit", "checkpoint", "--out", path, env=self.env(), check=0)
        r = self.verify()
        assert r.returncode == 0 and r.stdout.startswith("OK:"), r.stdout + r.stderr
        return path

    def verify(self, check=None):
        return harness.cluectl("audit", "verify", "--checkpoint", os.path.join(TMP, f"{self.dbname}.cp"),
                               "--key", KEY + ".pub", env=self.env(), check=check)

    def chains_ok_sql(self):
        """The chains alone (audit_verify(), what VerifyAuditChain ran before the tree) hold."""
        return self.one("SELECT problem FROM audit_verify(NULL, NULL)")[0] is None

    def sql(self, *stmts):
        """As the superuser, with every trigger of the audit tables off."""
        with self.db.cursor() as cur:
            cur.execute("BEGIN")
            for t in ("audit_events", "audit_heads", "audit_leaves", "audit_checkpoints", "notes", "clues",
                      "clue_reporters"):
                cur.execute(f"ALTER TABLE {t} DISABLE TRIGGER ALL")
            rows = None
            for s in stmts:
                cur.execute(*s) if isinstance(s, tuple) else cur.execute(s)
                if cur.description:
                    rows = cur.fetchall()
            for t in ("audit_events", "audit_heads", "audit_leaves", "audit_checkpoints", "notes", "clues",
                      "clue_reporters"):
                cur.execute(f"ALTER TABLE {t} ENABLE TRIGGER ALL")
            cur.execute("COMMIT")
        return rows

    def one(self, q, *args):
        with self.db.cursor() as cur:
            cur.execute(q, args)
            return cur.fetchone()

    def close(self):
        self.w.close()
        self.db.close()
        self.srv.stop()


def expect_failure(log, seq, *words):
    r = log.verify()
    assert r.returncode == 1, f"exit {r.returncode}:\n{r.stdout}{r.stderr}"
    assert r.stdout.startswith("FAIL: "), r.stdout + r.stderr
    if seq is not None:
        assert re.search(rf"\bseq {seq}\b", r.stdout), f"wanted seq {seq}: {r.stdout}"
    for w in words:
        assert w in r.stdout, f"wanted {w!r}: {r.stdout}"
    return r.stdout.strip()


REPORT = []


def server_says(log, seq, *words):
    """The server's own VerifyAuditChain names the same event (it rehashes every event
    against the tree it holds in memory)."""
    a = S.audit_pb2_grpc.AuditServiceStub(log.w.auditor.channel)
    v = a.VerifyAuditChain(AU.VerifyAuditChainRequest(), metadata=log.w.auditor.metadata)
    assert not v.ok and re.search(rf"\bseq {seq}\b", v.tree_problem), v
    for w in words:
        assert w in v.tree_problem, v
    r = harness.cluectl("audit", "verify", env=log.env(), check=1)
    assert r.stdout.startswith("BROKEN: the Merkle tree: seq "), r.stdout


def tampered(name, log, seq, *words):
    msg = expect_failure(log, seq, *words)
    REPORT.append((name, msg))
    print(f"  {name}: {msg}", flush=True)


def test_owner_unit_changed_on_a_clues_events():
    log = Log()
    try:
        cid = log.clues[1]
        first = log.one("SELECT min(seq) FROM audit_events WHERE subject_type = 'clue' AND subject_id = %s", cid)[0]
        log.sql(("UPDATE audit_events SET owner_unit = %s WHERE subject_type = 'clue' AND subject_id = %s",
                 (log.w.G2.id, cid)))
        assert log.chains_ok_sql(), "owner_unit is not in the chain hash: the chains alone are fooled"
        tampered("owner_unit changed", log, first, f"clue #{cid}", "does not match its leaf")
        server_says(log, first, "does not match its leaf")
    finally:
        log.close()


def test_last_event_deleted_and_head_moved_back():
    log = Log()
    try:
        cid = log.clues[0]
        last, prev = log.sql(("SELECT seq FROM audit_events WHERE subject_type = 'clue' AND subject_id = %s"
                              " ORDER BY seq DESC LIMIT 2", (cid,)))
        log.sql(("DELETE FROM audit_events WHERE seq = %s", (last[0],)),
                ("UPDATE audit_heads h SET last_seq = e.seq, last_hash = e.hash FROM audit_events e"
                 " WHERE e.seq = %s AND h.subject_type = 'clue' AND h.subject_id = %s", (prev[0], cid)))
        assert log.chains_ok_sql()
        tampered("last event deleted, head moved back", log, last[0], "gone", "deleted")
        server_says(log, last[0], "deleted")
    finally:
        log.close()


def test_reason_rewritten_with_recomputed_hash_and_head():
    log = Log()
    try:
        cid = log.clues[2]
        seq = log.one("SELECT max(seq) FROM audit_events WHERE subject_type = 'clue' AND subject_id = %s"
                      " AND action = 'clue.move'", cid)[0]
        log.sql(("UPDATE audit_events SET reason = '没有问题' WHERE seq = %s", (seq,)),
                ("UPDATE audit_events e SET hash = audit_hash(e) WHERE seq = %s", (seq,)),
                ("UPDATE audit_heads h SET last_hash = e.hash FROM audit_events e"
                 " WHERE e.seq = %s AND h.subject_type = 'clue' AND h.subject_id = %s AND h.last_seq = e.seq",
                 (seq, cid)))
        assert log.chains_ok_sql(), "a recomputed hash and head fool the chains"
        tampered("reason rewritten, hash recomputed with audit_hash(), head updated", log, seq,
                 "does not match its leaf")
        server_says(log, seq, "changed")
    finally:
        log.close()


def test_whole_subject_deleted_with_its_head():
    log = Log()
    try:
        cid = log.clues[1]
        first = log.one("SELECT min(seq) FROM audit_events WHERE subject_type = 'clue' AND subject_id = %s", cid)[0]
        log.sql(("DELETE FROM audit_events WHERE subject_type = 'clue' AND subject_id = %s", (cid,)),
                ("DELETE FROM audit_heads WHERE subject_type = 'clue' AND subject_id = %s", (cid,)))
        assert log.chains_ok_sql()
        tampered("a subject's events and head deleted", log, first, "gone")
        server_says(log, first, "deleted")
    finally:
        log.close()


def test_clue_summary_edited():
    log = Log()
    try:
        cid = log.clues[0]
        seq = log.one("SELECT seq FROM audit_events WHERE subject_id = %s AND action = 'clue.submit'", cid)[0]
        log.sql(("UPDATE clues SET summary = '无' WHERE id = %s", (cid,)))
        assert log.chains_ok_sql()
        tampered("clue summary edited", log, seq, "submitted fields")
    finally:
        log.close()


def test_note_text_edited():
    log = Log()
    try:
        cid = log.clues[2]
        seq, nid = log.one("SELECT seq, (details::jsonb->>'note_id')::bigint FROM audit_events"
                           " WHERE subject_id = %s AND action = 'note.add'", cid)
        log.sql(("UPDATE notes SET text = '改过的笔记' WHERE id = %s", (nid,)))
        assert log.chains_ok_sql()
        tampered("note text edited", log, seq, f"note {nid}", "changed")
    finally:
        log.close()


def test_reporter_contact_edited():
    log = Log()
    try:
        cid = log.clues[2]
        seq = log.one("SELECT seq FROM audit_events WHERE subject_id = %s AND action = 'clue.submit'", cid)[0]
        log.sql(("UPDATE clue_reporters SET phone = '13900000000' WHERE clue_id = %s", (cid,)))
        tampered("reporter phone edited", log, seq, "reporter")
    finally:
        log.close()


def _truncate(log, keep):
    """Remove every event after seq keep, with its leaves and the checkpoints over them,
    then restart clued so that its memory of the tree goes too."""
    n = log.one("SELECT count(*) FROM audit_events WHERE seq <= %s", keep)[0]
    log.sql(("DELETE FROM audit_events WHERE seq > %s", (keep,)),
            ("DELETE FROM audit_leaves WHERE idx >= %s", (n,)),
            ("DELETE FROM audit_checkpoints WHERE tree_size > %s", (n,)),
            ("UPDATE audit_heads h SET last_seq = (SELECT max(seq) FROM audit_events e WHERE e.subject_type ="
             " h.subject_type AND e.subject_id = h.subject_id), last_hash = (SELECT e.hash FROM audit_events e"
             " WHERE e.subject_type = h.subject_type AND e.subject_id = h.subject_id ORDER BY seq DESC LIMIT 1)"),
            "DELETE FROM audit_heads WHERE last_seq IS NULL")
    log.w.close()
    log.srv.stop()
    log.srv = harness.Clued(log.url, args=log.args).start(migrate=False)
    # The same users and tokens, on the restarted server's address.
    seen = set()
    for u in [*log.w.users, log.w.admin, log.w.auditor]:
        if id(u) not in seen:
            seen.add(id(u))
            u.__init__(log.srv.addr, u.id, u.name, u.role, u.unit, u.token)
    # The checkpoint at exactly n, if the builder had published none there, is what the
    # restarted builder signs next (within --checkpoint-interval): wait for it, so that the
    # server has a latest checkpoint of the truncated log before anyone verifies against it.
    a = S.audit_pb2_grpc.AuditServiceStub(log.w.auditor.channel)
    harness.wait_for(lambda: cp_size(a, log.w.auditor.metadata) == n, timeout=60,
                     what="the restarted server's checkpoint of the truncated log")
    return n


def test_log_truncated():
    log = Log()
    try:
        keep = log.one("SELECT seq FROM audit_events ORDER BY seq DESC OFFSET 4 LIMIT 1")[0]
        first_gone = log.one("SELECT min(seq) FROM audit_events WHERE seq > %s", keep)[0]
        _truncate(log, keep)
        # The exact first event removed, from the leaves kept beside the checkpoint.
        tampered("log truncated (events, leaves, checkpoints) and clued restarted", log, first_gone, "truncated",
                 "first event the checkpoint covers that was removed")
        # Without them, the root alone still shows the truncation, as a range.
        os.rename(log.cp + ".leaves", log.cp + ".leaves.off")
        msg = expect_failure(log, keep, "truncated", "after")
        assert f"seq {first_gone}" not in msg, msg
    finally:
        log.close()


def test_fork_after_truncation_and_regrowth():
    log = Log()
    try:
        size = log.nevents()
        keep = log.one("SELECT seq FROM audit_events ORDER BY seq DESC OFFSET 4 LIMIT 1")[0]
        first_gone = log.one("SELECT min(seq) FROM audit_events WHERE seq > %s", keep)[0]
        _truncate(log, keep)
        # The log grows again past the saved checkpoint: another tree of that size.
        g = log.w.G3
        while log.nevents() < size + 3:
            g.member.clue.SubmitClue(pb.SubmitClueRequest(
                request_id=new_request_id(), title="新线索", summary="摘要", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
                subject=pb.SubjectPerson(name="李四"), host_unit="市卫生健康委"), timeout=20)
        a = S.audit_pb2_grpc.AuditServiceStub(log.w.auditor.channel)
        harness.wait_for(lambda: cp_size(a, log.w.auditor.metadata) >= size + 3, timeout=180, what="a checkpoint of the regrown log")
        tampered("fork: truncated, restarted, regrown past the saved size", log, first_gone, "fork",
                 "gone from the tree", "rewritten from seq")
        # A leaves file that is not the checkpoint's is refused, not believed.
        with open(log.cp + ".leaves") as f:
            lines = f.read().splitlines()
        lines[1] = lines[1].split()[0] + " " + "00" * 32
        with open(log.cp + ".leaves", "w") as f:
            f.write("\n".join(lines) + "\n")
        expect_failure(log, None, "does not hold the leaves of the checkpoint")
    finally:
        log.close()


def test_fork_two_checkpoints_of_one_size_with_different_roots():
    log = Log()
    try:
        size = log.nevents()
        env = log.env()
        wd = os.path.join(TMP, f"{log.dbname}.witness")
        r = harness.cluectl("audit", "witness", "--dir", wd, "--once", "--key", KEY + ".pub", env=env, check=0)
        assert f"kept checkpoint of {size} events" in r.stdout, r.stdout
        keep = log.one("SELECT seq FROM audit_events ORDER BY seq DESC OFFSET 2 LIMIT 1")[0]
        first_gone = log.one("SELECT min(seq) FROM audit_events WHERE seq > %s", keep)[0]
        n = _truncate(log, keep)
        # Another history of exactly the same length, appended as the server's own function would.
        with log.db.cursor() as cur:
            for i in range(size - n):
                cur.execute("SELECT audit_append(NULL, NULL, 'clue.note', 'clue', %s, NULL, NULL, NULL, %s, '{}')",
                            (log.clues[0], f"改写 {i}"))
        a = S.audit_pb2_grpc.AuditServiceStub(log.w.auditor.channel)
        harness.wait_for(lambda: cp_size(a, log.w.auditor.metadata) == size, timeout=180,
                         what="a checkpoint of the rewritten log at the saved size")
        env = log.env()
        tampered("fork: two checkpoints of one size with different roots", log, first_gone, "fork",
                 "gone from the tree")
        # From the root alone: the same size, another root.
        os.rename(log.cp + ".leaves", log.cp + ".leaves.off")
        expect_failure(log, None, f"fork: two checkpoints of {size} events with different roots")
        # A witness that kept the first checkpoint refuses the second.
        r = harness.cluectl("audit", "witness", "--dir", wd, "--once", env=env, check=1)
        assert r.stdout.startswith(f"FAIL: fork: two checkpoints of {size} events with different roots"), r.stdout
        # ... naming, from the leaves it kept, the first event that differs.
        assert f"seq {first_gone} (leaf {n}), kept, is gone from the tree" in r.stdout, r.stdout
    finally:
        log.close()


def test_event_inserted_behind_the_tree_with_recomputed_hashes_and_head():
    log = Log()
    try:
        # A rolled-back append leaves a gap in seq; the tree has passed it.
        with log.db.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT (audit_append(NULL, NULL, 'x', 'clue', 999999, NULL, NULL, NULL, NULL, '{}')).seq")
            gap = cur.fetchone()[0]
            cur.execute("ROLLBACK")
        log.w.G1.member.clue.AddNote(pb.AddNoteRequest(clue_id=log.clues[0], kind=pb.NOTE_KIND_OTHER, text="再记",
                                                       request_id=new_request_id()), timeout=20)
        log.save_checkpoint()
        # The forged event takes the gap, as a new subject with a valid chain and head.
        log.sql(("INSERT INTO audit_events (seq, at, actor_user_id, actor_unit_id, action, subject_type, subject_id,"
                 " owner_unit, reason, details, prev_hash, hash, txid)"
                 " VALUES (%s, now(), %s, %s, 'clue.move', 'clue', 777777, %s, '伪造', '{}', NULL, '\\x00', 1)",
                 (gap, log.w.G1.leader.id, log.w.G1.id, log.w.G1.id)),
                ("UPDATE audit_events e SET hash = audit_hash(e) WHERE seq = %s", (gap,)),
                ("INSERT INTO audit_heads SELECT subject_type, subject_id, seq, hash FROM audit_events WHERE seq = %s",
                 (gap,)))
        assert log.chains_ok_sql(), "a forged chain with its own head passes the chain check"
        tampered("event inserted into a seq gap, hashes and head recomputed", log, gap, "not in the tree",
                 "inserted")
        server_says(log, gap, "inserted")
    finally:
        log.close()


def test_report():
    # The list the closing note asks for: each tampering with its detection message.
    for name, msg in REPORT:
        print(f"{name}\n    {msg}")
    assert len(REPORT) == 11


if __name__ == "__main__":
    harness.run_tests(dict(globals()))
