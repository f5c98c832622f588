"""Tampering with the audit trail as the database superuser, triggers disabled, each on a
fresh log after an auditor saved a signed checkpoint: `cluectl audit verify --checkpoint`
must exit 1 and name the right seq, where the hash chains alone (plain `audit verify`)
are fooled by the careful ones. A clean log verifies (exit 0) before each tampering."""

import functools
import glob
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile

import grpc

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import new_request_id  # noqa: E402
import tlog  # noqa: E402
import world  # noqa: E402
from test_audit_tree import cp_size  # noqa: E402
from test_metrics import MetricsClued, scrape, value  # noqa: E402

S = harness.stubs()
AU = S.audit_pb2
pb = S.clue_pb2
TMP = tempfile.mkdtemp(prefix="clued-tamper-")
KEY = os.path.join(TMP, "audit.key")
subprocess_ok = harness.subprocess.run([harness.CLUED, "keygen", "--out", KEY], capture_output=True)
assert subprocess_ok.returncode == 0




# The tables Log.sql() changes with every trigger off (a foreign key's checks are triggers too).
TAMPERED_TABLES = ("audit_events", "audit_heads", "audit_leaves", "audit_checkpoints", "notes", "clues",
                   "clue_reporters", "proposals", "rect_items", "users", "units", "joint_cases", "recusals",
                   "tokens", "case_clues", "clue_handlers", "case_participants")


def migrations_before(first):
    """A folder with the migrations numbered below first: the schema as it was before it."""
    d = os.path.join(TMP, "migrations-before-" + first)
    if not os.path.isdir(d):
        os.mkdir(d)
        for path in glob.glob(os.path.join(harness.SRC, "migrations", "*.sql")):
            if os.path.basename(path) < first:
                shutil.copy(path, d)
    return d


FINGERPRINT_SHIMS = """
ALTER TABLE clue_requests ADD COLUMN request_sha256 bytea;
DO $do$
DECLARE
  f record;
BEGIN
  FOR f IN SELECT p.proname, p.pronargs, pg_get_function_identity_arguments(p.oid) AS args,
                  pg_get_function_result(p.oid) AS res, p.proargtypes[0]::regtype::text LIKE '%[]' AS many
           FROM pg_proc p
           WHERE p.pronamespace = 'public'::regnamespace
             AND p.proname IN ('clue_submit', 'clue_submit_many', 'clue_apply_move', 'clue_apply_moves',
                               'proposal_create', 'proposal_decide', 'clue_handover', 'note_add',
                               'clue_extend_deadline', 'clue_set_handler', 'clue_recuse', 'case_create',
                               'rect_create', 'rect_move') LOOP
    EXECUTE format('CREATE FUNCTION %I(%s, p_request_sha256 %s) RETURNS %s LANGUAGE sql AS %L', f.proname,
                   f.args, CASE WHEN f.many THEN 'bytea[]' ELSE 'bytea' END, f.res,
                   format('SELECT * FROM %I(%s)', f.proname,
                          (SELECT string_agg('$' || i, ', ') FROM generate_series(1, f.pronargs) i)));
  END LOOP;
END $do$;
CREATE FUNCTION token_issue_own(p_actor_user bigint, p_actor_unit bigint, p_sha256_hex text, p_note text,
                                p_max_live integer, p_max_hour integer)
RETURNS tokens LANGUAGE sql AS 'SELECT * FROM token_issue_own($1, $2, $3, $4, $5)';
CREATE FUNCTION admin_issue_token(p_actor_user bigint, p_actor_unit bigint, p_user bigint, p_sha256_hex text,
                                  p_note text, p_max_live integer)
RETURNS tokens LANGUAGE sql AS 'SELECT * FROM admin_issue_token($1, $2, $3, $4, $5)';
"""


class Log:
    """A fresh database and clued, a few clues with a reporter, notes and moves, and a
    checkpoint of all of it saved by the auditor. upgraded: the first clues are written by a
    clued of the schema before 0031 (reporter rows without a salt), three more after clued is
    upgraded to every migration."""

    def __init__(self, upgraded=False):
        self.pg = harness.Postgres.get()
        self.dbname = self.pg.new_database()
        self.url = self.pg.url(self.dbname)
        self.args = ["--audit-signing-key", KEY, "--checkpoint-every", "1000", "--checkpoint-interval", "200ms",
                     "--metrics-listen", "127.0.0.1:0"]
        if upgraded:
            old = migrations_before("0031")
            # The shims are overloads of clued's writers that no migration defines.
            self.srv = MetricsClued(self.url, args=self.args + ["--migrations", old, "--allow-schema-drift"])
            self.srv.run("migrate", "--migrations", old)
            self._fingerprint_shims(True)
            self.srv.start(migrate=False)
        else:
            self.srv = MetricsClued(self.url, args=self.args).start()
        try:
            self._populate(upgraded)
        except BaseException:
            self.srv.stop()  # a failed set-up leaves no clued behind
            raise

    def _populate(self, upgraded):
        self.w = world.build(self.srv)
        self.db = self.pg.connect(self.dbname)
        self.clues = []
        self._submit()
        if upgraded:
            self._fingerprint_shims(False)
            self.restart(migrate=True)
            self._submit()
        self.cp = self.save_checkpoint()

    def _fingerprint_shims(self, on):
        """This clued passes every write a request's fingerprint, which the writers take since
        0047, IssueMyToken its hourly limit (0057) and IssueToken the live tokens' (0064): on the
        schema before 0031, an overload of
        each that takes it and drops it, and the request records' column the facts reads select
        (on=False: all of it removed again, for the upgrade to make its own)."""
        db = self.pg.connect(self.dbname)
        try:
            with db.cursor() as cur:
                if on:
                    cur.execute(FINGERPRINT_SHIMS)
                else:
                    cur.execute("SELECT p.oid::regprocedure::text FROM pg_proc p"
                                " WHERE p.proargnames && ARRAY['p_request_sha256', 'p_max_hour']"
                                " OR (p.proname = 'admin_issue_token' AND 'p_max_live' = ANY (p.proargnames))")
                    for f, in cur.fetchall():
                        cur.execute("DROP FUNCTION " + f)
                    cur.execute("ALTER TABLE clue_requests DROP COLUMN request_sha256")
        finally:
            db.close()

    def _submit(self):
        g = self.w.G1
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

    def restart(self, migrate=False):
        """Stop clued and start it again on the same database (migrating first if asked),
        with the same users and tokens on its new address."""
        self.w.close()
        self.srv.stop()
        self.srv = MetricsClued(self.url, args=self.args).start(migrate=migrate)
        seen = set()
        for u in [*self.w.users, self.w.admin, self.w.auditor]:
            if id(u) not in seen:
                seen.add(id(u))
                u.__init__(self.srv.addr, u.id, u.name, u.role, u.unit, u.token)

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
            for t in TAMPERED_TABLES:
                cur.execute(f"ALTER TABLE {t} DISABLE TRIGGER ALL")
            rows = None
            for s in stmts:
                cur.execute(*s) if isinstance(s, tuple) else cur.execute(s)
                if cur.description:
                    rows = cur.fetchall()
            for t in TAMPERED_TABLES:
                cur.execute(f"ALTER TABLE {t} ENABLE TRIGGER ALL")
            cur.execute("COMMIT")
        return rows

    def db_rows(self, q, *args):
        with self.db.cursor() as cur:
            cur.execute(q, args)
            return cur.fetchall()

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


def deleted_and_put_back(log, table, row_id, name, seq, *words):
    """Delete row row_id of table as the superuser: verify must fail at seq naming words; put
    the row back: verify is OK again."""
    log.sql(f"CREATE TABLE kept AS SELECT * FROM {table} WHERE id = {row_id}", f"DELETE FROM {table} WHERE id = {row_id}")
    tampered(name, log, seq, *words)
    log.sql(f"INSERT INTO {table} SELECT * FROM kept", "DROP TABLE kept")
    r = log.verify()
    assert r.returncode == 0 and r.stdout.startswith("OK:"), r.stdout + r.stderr


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


def contact_text(name="", phone="", address="", email=""):
    """The text clue_reporter_sha256() hashes (0013): "<octets>:<field>\n" for each field."""
    return "".join(f"{len(x.encode())}:{x}\n" for x in (name, phone, address, email)).encode()


def submit_event(u, clue_id):
    """The clue.submit event of clue_id as u reads it in GetHistory, ListAuditEvents and
    WatchEvents (the three must agree)."""
    got = [e for e in u.clue.GetHistory(pb.GetHistoryRequest(clue_id=clue_id), timeout=20).events
           if e.action == "clue.submit"]
    assert len(got) == 1, got
    ev = got[0]
    listed = [e for e in u.audit.ListAuditEvents(AU.ListAuditEventsRequest(
        subject_type="clue", subject_id=clue_id, action="clue.submit"), timeout=20).events]
    assert listed == [ev], (listed, ev)
    stream = u.audit.WatchEvents(AU.WatchEventsRequest(after_seq=ev.seq - 1), timeout=60)
    try:
        assert next(iter(stream)) == ev
    finally:
        stream.cancel()
    return ev


def test_reporter_hash_is_salted():
    """A member of the owner unit, never shown the reporter, reads the clue.submit event whole,
    but cannot confirm a guess of the reporter's contact details with its reporter_sha256: the
    hash starts with the row's salt, which no RPC returns. The log verifies (Log saved a
    checkpoint and verified it); a clue without a reporter has no reporter_sha256."""
    log = Log()
    try:
        m, leader = log.w.G1.member, log.w.G1.leader
        salts = set()
        for i in (0, 2):
            cid = log.clues[i]
            assert not m.clue.GetClue(pb.GetClueRequest(clue_id=cid), timeout=20).HasField("reporter")
            details = json.loads(submit_event(m, cid).details_json)
            guess = contact_text(name="举报人", phone="1370000000%d" % i)
            assert details["reporter_sha256"] != hashlib.sha256(guess).hexdigest(), "an unsalted hash"
            salt = bytes(log.one("SELECT salt FROM clue_reporters WHERE clue_id = %s", cid)[0])
            assert len(salt) == 32
            salts.add(salt)
            assert details["reporter_sha256"] == hashlib.sha256(salt + guess).hexdigest()
            # The leader who reads the reporter gets its four fields and nothing that holds the salt.
            got = leader.clue.GetClue(pb.GetClueRequest(clue_id=cid), timeout=20)
            assert got.reporter.phone == "1370000000%d" % i
            assert salt not in got.SerializeToString() and salt.hex() not in str(got)
        assert len(salts) == 2, "each reporter row has its own salt"
        details = json.loads(submit_event(m, log.clues[1]).details_json)
        assert details["has_reporter"] is False and "reporter_sha256" not in details, details
        assert log.one("SELECT count(*) FROM clue_reporters WHERE clue_id = %s", log.clues[1])[0] == 0
        # The export the offline verification reads recomputes the same salted hashes.
        a = S.audit_pb2_grpc.AuditServiceStub(log.w.auditor.channel)
        subs = {}
        after, done = 0, False
        while not done:
            page = a.ExportAuditEvents(AU.ExportAuditEventsRequest(after_seq=after, page_size=500),
                                       metadata=log.w.auditor.metadata, timeout=20)
            for e in page.events:
                after = max(after, e.seq)
                if e.action == "clue.submit":
                    subs[int(e.subject_id)] = e
            done = page.done or not page.events
        for i in (0, 2):
            e = subs[log.clues[i]]
            assert e.current_reporter_sha256 == json.loads(e.details)["reporter_sha256"], e
        assert subs[log.clues[1]].current_reporter_sha256 == ""
        r = harness.cluectl("audit", "verify", env=log.env(), check=0)
        assert r.stdout.startswith("OK"), r.stdout
    finally:
        log.close()


def test_reporter_rows_from_before_the_salt():
    """Clues written before 0031 keep a reporter row without a salt and the hash of 0013;
    after the upgrade they and the salted ones verify together, and an edit of either kind of
    row is caught."""
    log = Log(upgraded=True)
    try:
        old, new = log.clues[:3], log.clues[3:]
        m = log.w.G1.member
        for cids, salted in ((old, False), (new, True)):
            for i in (0, 2):
                salt = log.one("SELECT salt FROM clue_reporters WHERE clue_id = %s", cids[i])[0]
                assert (salt is not None) == salted, (cids[i], salt)
                text = contact_text(name="举报人", phone="1370000000%d" % i)
                want = hashlib.sha256((bytes(salt) if salted else b"") + text).hexdigest()
                assert json.loads(submit_event(m, cids[i]).details_json)["reporter_sha256"] == want
        # At the SQL level: without a salt, clue_reporter_sha256() is the function of 0013, and
        # what Python computes from the same fields.
        body = ("encode(sha256(convert_to(concat(octet_length(r.name), ':', r.name, E'\\n',"
                " octet_length(r.phone), ':', r.phone, E'\\n', octet_length(r.address), ':', r.address,"
                " E'\\n', octet_length(r.email), ':', r.email, E'\\n'), 'UTF8')), 'hex')")
        with open(os.path.join(harness.SRC, "migrations", "0013_audit_content.sql"), encoding="utf-8") as f:
            assert re.sub(r"\s+", "", body) in re.sub(r"\s+", "", f.read()), "0013's body, as written there"
        rows = [(0, 0, "举报人", "13700000000", "", ""), (0, 0, "", "", "", ""),
                (0, 0, "王某", "139", "北京市东城区某街道 1 号", "w@example.cn")]
        for row in rows:
            got = log.one(f"SELECT clue_reporter_sha256(r), {body.replace('r.', '(r).')}"
                          " FROM (VALUES (ROW(%s, %s, %s, %s, %s, %s, NULL)::clue_reporters)) v (r)", *row)
            assert got[0] == got[1] == hashlib.sha256(contact_text(*row[2:])).hexdigest(), (row, got)
        assert log.one(f"SELECT count(*) FROM clue_reporters r WHERE salt IS NULL AND clue_reporter_sha256(r) <> {body}"
                       )[0] == 0
        seq = log.one("SELECT seq FROM audit_events WHERE subject_id = %s AND action = 'clue.submit'", old[0])[0]
        log.sql(("UPDATE clue_reporters SET phone = '13900000000' WHERE clue_id = %s", (old[0],)))
        tampered("reporter phone edited (a row from before the salt)", log, seq, "reporter")
        log.sql(("UPDATE clue_reporters SET phone = '13700000000' WHERE clue_id = %s", (old[0],)))
        assert log.verify().returncode == 0
        seq = log.one("SELECT seq FROM audit_events WHERE subject_id = %s AND action = 'clue.submit'", new[2])[0]
        log.sql(("UPDATE clue_reporters SET name = '举报人 ' WHERE clue_id = %s", (new[2],)))
        tampered("reporter name edited (a salted row)", log, seq, "reporter")
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
    log.restart()
    # The checkpoint at exactly n, if the builder had published none there, is what the
    # restarted builder signs next (within --checkpoint-interval): wait for it, so that the
    # server has a latest checkpoint of the truncated log before anyone verifies against it.
    a = S.audit_pb2_grpc.AuditServiceStub(log.w.auditor.channel)
    harness.wait_for(lambda: cp_size(a, log.w.auditor.metadata) == n, timeout=60,
                     what="the restarted server's checkpoint of the truncated log")
    return n


def test_leaves_lost_under_a_running_server_are_reported():
    """Events and their leaves gone from the database while clued runs (as after a failover to
    a standby that lacked them): the builder's appends could only be refused, and its tree
    stopped growing without a word. It says why, once, and how to recover."""
    log = Log()
    try:
        keep = log.one("SELECT seq FROM audit_events ORDER BY seq DESC OFFSET 4 LIMIT 1")[0]
        a = S.audit_pb2_grpc.AuditServiceStub(log.w.auditor.channel)
        harness.wait_for(lambda: cp_size(a, log.w.auditor.metadata) == log.nevents(), timeout=60,
                         what="the tree over every event")
        n = log.one("SELECT count(*) FROM audit_events WHERE seq <= %s", keep)[0]
        assert value(scrape(log.srv.metrics_addr), "clued_audit_tree_halted") == 0
        log.sql(("DELETE FROM audit_events WHERE seq > %s", (keep,)),
                ("DELETE FROM audit_leaves WHERE idx >= %s", (n,)),
                ("DELETE FROM audit_checkpoints WHERE tree_size > %s", (n,)))
        log.w.G3.member.clue.SubmitClue(pb.SubmitClueRequest(
            request_id=new_request_id(), title="新线索", summary="摘要", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
            subject=pb.SubjectPerson(name="李四"), host_unit="市卫生健康委"), timeout=20)
        harness.wait_for(lambda: f"audit_leaves holds {n} leaves, fewer than the" in log.srv.output(), timeout=15,
                         what="the builder's finding in its log")
        harness.time.sleep(1.5)
        assert log.srv.output().count("fewer than the") == 1, "said more than once"
        assert value(scrape(log.srv.metrics_addr), "clued_audit_tree_halted") == 1
    finally:
        log.close()


def test_a_checkpoint_stored_ahead_of_the_tree_halts_the_builder():
    """audit_checkpoints takes INSERTs: a note stored by hand for the size the tree reaches
    next was, when the builder got there before its next read of the table (every second),
    taken for its own: audit_tree_append() stored the leaves, skipped its checkpoint and said
    'ok'; nothing said so, and the planted note stayed the checkpoint of that size, the one
    auditors keep. audit_tree_append() now appends nothing over another note at the size of
    its checkpoint ('checkpoint <size>', on which the builder halts); a server that finds the
    note on reading the table halts too."""
    log = Log()
    try:
        a = S.audit_pb2_grpc.AuditServiceStub(log.w.auditor.channel)
        md = log.w.auditor.metadata
        n = log.nevents()
        harness.wait_for(lambda: cp_size(a, md) == n, timeout=60, what="the tree over every event")
        log.w.close()
        log.srv.stop()  # the append below is the builder's, in its stead
        forged = "clued.audit\n%d\nAAAA\n\n— clued.audit AAAA\n" % (n + 1)
        with log.db.cursor() as cur:
            cur.execute("INSERT INTO audit_checkpoints (tree_size, root, note) VALUES (%s, %s, %s)",
                        (n + 1, b"\x01" * 32, forged))
            cur.execute("SELECT (audit_append(NULL, NULL, 'test.event', 'clue', 1, NULL, NULL, NULL, 'x', '{}')).seq")
            seq = cur.fetchone()[0]
            cur.execute("SELECT audit_tree_append(%s, ARRAY[e.seq], ARRAY[audit_event_leaf(e)], %s, %s, %s)"
                        " FROM audit_events e WHERE e.seq = %s", (n, n + 1, b"\x02" * 32, "the builder's own note", seq))
            assert cur.fetchone()[0] == f"checkpoint {n + 1}"
        assert log.one("SELECT count(*) FROM audit_leaves")[0] == n, "leaves appended over the planted note"
        assert log.one("SELECT note FROM audit_checkpoints WHERE tree_size = %s", n + 1)[0] == forged
        # A server started on it finds the note, and appends nothing either.
        log.restart()
        harness.wait_for(lambda: value(scrape(log.srv.metrics_addr), "clued_audit_tree_halted") == 1, timeout=15,
                         what="the builder halted")
        assert "the stored tree was changed" in log.srv.output(), log.srv.output()[-3000:]
        assert log.one("SELECT count(*) FROM audit_leaves")[0] == n
    finally:
        log.close()


def test_a_leaf_stored_ahead_of_the_tree_halts_the_builder():
    """audit_leaves takes INSERTs: a leaf stored by hand right after the tree, for the seq the
    next event takes and with a hash of one's choosing, was taken by the builder for another
    builder's: its own append was refused as 'moved', it read the leaf and signed its next
    checkpoint over it, and every verify then blamed the honest event at that seq. A builder
    checks each leaf it reads after the latest checkpoint against the event stored at its seq:
    over one that no event backs it signs nothing, names the row and halts; a server started on
    it halts too."""
    log = Log()
    try:
        a, md = S.audit_pb2_grpc.AuditServiceStub(log.w.auditor.channel), log.w.auditor.metadata
        n = log.nevents()
        harness.wait_for(lambda: cp_size(a, md) == n, timeout=60, what="the tree over every event")
        assert value(scrape(log.srv.metrics_addr), "clued_audit_tree_halted") == 0
        seq = log.one("SELECT last_value + 1 FROM %s" % log.one("SELECT pg_get_serial_sequence('audit_events', 'seq')")[0])[0]
        with log.db.cursor() as cur:  # no trigger refuses it
            cur.execute("INSERT INTO audit_leaves (idx, seq, leaf) VALUES (%s, %s, %s)", (n, seq, b"\xab" * 32))
        c = log.w.G1.member.clue.SubmitClue(pb.SubmitClueRequest(
            request_id=new_request_id(), title="新线索", summary="摘要", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
            subject=pb.SubjectPerson(name="王五"), host_unit="某局"), timeout=20)
        assert log.one("SELECT action, subject_id FROM audit_events WHERE seq = %s", seq) == ("clue.submit", c.id)
        harness.wait_for(lambda: value(scrape(log.srv.metrics_addr), "clued_audit_tree_halted") == 1, timeout=15,
                         what="the builder halted")
        said = f"audit_leaves row idx {n} (seq {seq}) is not the leaf of the event audit_events holds"
        assert said in log.srv.output(), log.srv.output()[-3000:]
        harness.time.sleep(1.5)  # a few more rounds of the builder
        assert log.srv.output().count(said) == 1, "said more than once"
        assert log.one("SELECT max(tree_size) FROM audit_checkpoints")[0] == n, "a checkpoint signed over the leaf"
        assert log.one("SELECT count(*) FROM audit_leaves")[0] == n + 1, "leaves appended after it"
        assert cp_size(a, md) == n
        log.restart()
        harness.wait_for(lambda: value(scrape(log.srv.metrics_addr), "clued_audit_tree_halted") == 1, timeout=15,
                         what="the restarted builder halted")
        assert said in log.srv.output(), log.srv.output()[-3000:]
        assert log.one("SELECT max(tree_size) FROM audit_checkpoints")[0] == n
    finally:
        log.close()


def test_a_leaf_that_skips_an_event_halts_the_builder():
    """The true leaf of a later event, stored by hand right after the tree while the events
    before it have no leaf yet (the builder held back by its lock, as by another builder), is
    backed by its event but skips those before it: taken, the tree would never hold them and
    verify would blame them as inserted. The builder signs nothing over it, names the row
    and halts."""
    log = Log()
    try:
        a, md = S.audit_pb2_grpc.AuditServiceStub(log.w.auditor.channel), log.w.auditor.metadata
        n = log.nevents()
        harness.wait_for(lambda: cp_size(a, md) == n, timeout=60, what="the tree over every event")
        last = log.one("SELECT max(seq) FROM audit_events")[0]
        lock = log.pg.connect(log.dbname)
        lock.autocommit = False
        try:
            with lock.cursor() as cur:
                cur.execute("SELECT 1 FROM audit_tree_lock FOR UPDATE")  # the builder's appends answer 'busy'
                for i in range(2):
                    log.w.G1.member.clue.SubmitClue(pb.SubmitClueRequest(
                        request_id=new_request_id(), title=f"线索{i}", summary="摘要",
                        source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=pb.SubjectPerson(name="王五"),
                        host_unit="某局"), timeout=20)
                later = log.one("SELECT max(seq) FROM audit_events")[0]
                assert log.one("SELECT count(*) FROM audit_events WHERE seq > %s AND seq < %s", last, later)[0] >= 1
                cur.execute("INSERT INTO audit_leaves (idx, seq, leaf)"
                            " SELECT %s, e.seq, audit_event_leaf(e) FROM audit_events e WHERE e.seq = %s", (n, later))
            lock.commit()
        finally:
            lock.close()
        harness.wait_for(lambda: value(scrape(log.srv.metrics_addr), "clued_audit_tree_halted") == 1, timeout=15,
                         what="the builder halted")
        said = f"audit_leaves row idx {n} (seq {later}) skips an event"
        assert said in log.srv.output(), log.srv.output()[-3000:]
        assert log.one("SELECT max(tree_size) FROM audit_checkpoints")[0] == n, "a checkpoint signed over the leaf"
        assert log.one("SELECT count(*) FROM audit_leaves")[0] == n + 1, "leaves appended after it"
    finally:
        log.close()


def test_leaves_the_log_does_not_back_are_never_appended():
    """The builder holds decided events in memory (the tail's ring) that audit_events then
    no longer has, or has other events under their seqs: as after a failover to an
    asynchronous standby that lacked them, whose sequence hands those seqs out again. Held
    back by its advisory lock (as by another builder), it appended their leaves once let go,
    and signed a checkpoint over them. audit_tree_append() refuses a leaf that is not the
    stored event's: nothing is appended nor signed over them, the builder says why, reads
    the log again from the database and goes on with the events it holds."""
    log = Log()
    locker = log.pg.connect(log.dbname)
    locker.autocommit = False
    try:
        a, md = S.audit_pb2_grpc.AuditServiceStub(log.w.auditor.channel), log.w.auditor.metadata
        n0 = log.nevents()
        last = log.one("SELECT max(seq) FROM audit_leaves")[0]
        assert log.one("SELECT count(*) FROM audit_leaves")[0] == n0
        with locker.cursor() as cur:
            cur.execute("SELECT FROM audit_tree_lock FOR UPDATE")  # the builder's: appends answer 'busy'
        g = log.w.G3
        for i in range(3):
            g.member.clue.SubmitClue(pb.SubmitClueRequest(
                request_id=new_request_id(), title=f"将丢失{i}", summary="摘要",
                source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=pb.SubjectPerson(name="李四"),
                host_unit="市卫生健康委"), timeout=20)
        lost = [r[0] for r in log.db_rows("SELECT seq FROM audit_events WHERE seq > %s ORDER BY seq", last)]
        assert len(lost) >= 3, lost
        # The server's tail has decided them (its ring holds them) once a watcher has them.
        call = a.WatchEvents(AU.WatchEventsRequest(after_seq=last), metadata=md, timeout=20)
        got = []
        for ev in call:
            got.append(ev.seq)
            if len(got) == len(lost):
                break
        call.cancel()
        assert got == lost, (got, lost)
        # What the failover leaves: the events after the last leaf gone, the sequence handing
        # their seqs out again, and another event under the second of them.
        log.sql(("DELETE FROM audit_events WHERE seq > %s", (last,)),
                ("SELECT setval(pg_get_serial_sequence('audit_events', 'seq'), %s)", (lost[0],)))
        with log.db.cursor() as cur:
            cur.execute("SELECT (audit_append(NULL, NULL, 'clue.note', 'clue', %s, NULL, NULL, NULL, '新主库的事件',"
                        " '{}')).seq", (log.clues[0],))
            assert cur.fetchone()[0] == lost[1]
        locker.rollback()
        harness.wait_for(lambda: cp_size(a, md) > n0 or "refused leaf" in log.srv.output(), timeout=30,
                         what="the builder's append once let go")
        harness.time.sleep(0.5)  # a checkpoint signed right after a wrong append would show by now
        by_seq = {r["seq"]: tlog.leaf_hash_of_row(r) for r in tlog.rows(log.db)}
        for idx, seq, leaf in log.db_rows("SELECT idx, seq, leaf FROM audit_leaves WHERE idx >= %s ORDER BY idx",
                                          n0):
            assert seq in by_seq, f"leaf {idx} was appended for seq {seq}, which audit_events does not hold"
            assert bytes(leaf) == by_seq[seq], f"leaf {idx} of seq {seq} is not the leaf of the event stored there"
        out = log.srv.output()
        assert (f"audit_tree_append() refused leaf {n0} (seq {lost[0]}): audit_events has no event of that seq. "
                "The log this server built the tree from is not the database's") in out, out
        # It goes on with the database's events: the new one under a reused seq is signed.
        harness.wait_for(lambda: cp_size(a, md) == n0 + 1, timeout=30, what="a checkpoint of the database's log")
        leaves = log.db_rows("SELECT seq, leaf FROM audit_leaves ORDER BY idx")
        assert [q for q, _ in leaves] == sorted(by_seq) and all(bytes(h) == by_seq[q] for q, h in leaves)
        assert log.one("SELECT max(tree_size) FROM audit_checkpoints")[0] == n0 + 1
        root = log.one("SELECT root FROM audit_checkpoints WHERE tree_size = %s", n0 + 1)[0]
        assert bytes(root) == tlog.mth([bytes(h) for _, h in leaves])
        out = log.srv.output()
        assert out.count("refused leaf") == 1 and "no leaf is appended" not in out, out
    finally:
        locker.close()
        log.close()


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


def signed_past_the_saved(log, n=4):
    """n more clues of G3's, and the server's checkpoint over them: (audit stub, metadata, the
    saved checkpoint's size, the later checkpoint's)."""
    a, md = S.audit_pb2_grpc.AuditServiceStub(log.w.auditor.channel), log.w.auditor.metadata
    saved = cp_size(a, md)
    for i in range(n):
        log.w.G3.member.clue.SubmitClue(pb.SubmitClueRequest(
            request_id=new_request_id(), title=f"新线索{i}", summary="摘要", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
            subject=pb.SubjectPerson(name="李四"), host_unit="市卫生健康委"), timeout=20)
    later = log.nevents()
    harness.wait_for(lambda: cp_size(a, md) == later, timeout=60, what="the server's later checkpoint")
    return a, md, saved, later


def rewrite_with_its_leaf(log, idx, *extra):
    """As the superuser: the event of leaf idx gets another reason, its hash, its chain's head
    and its audit_leaves row recomputed to match (then the statements extra). Returns its seq."""
    seq, = log.one("SELECT seq FROM audit_leaves WHERE idx = %s", idx)
    st, sid = log.one("SELECT subject_type, subject_id FROM audit_events WHERE seq = %s", seq)
    log.sql(("UPDATE audit_events SET reason = '改写的理由' WHERE seq = %s", (seq,)),
            ("UPDATE audit_events e SET hash = audit_hash(e) WHERE seq = %s", (seq,)),
            ("UPDATE audit_heads h SET last_hash = e.hash FROM audit_events e WHERE e.seq = %s"
             " AND h.subject_type = %s AND h.subject_id = %s AND h.last_seq = e.seq", (seq, st, sid)))
    row = [r for r in tlog.rows(log.db) if r["seq"] == seq][0]
    log.sql(("UPDATE audit_leaves SET leaf = %s WHERE idx = %s", (tlog.leaf_hash_of_row(row), idx)), *extra)
    return seq


def test_leaves_rewritten_under_a_later_checkpoint_are_not_signed_over():
    """The tree itself rewritten (an event and its audit_leaves row) after the auditor's
    checkpoint but under a later one nobody fetched, then clued restarted: the builder finds
    that its tree contradicts the checkpoint it signed, and signs nothing more, so the
    auditor's saved checkpoint still catches the change."""
    log = Log()
    try:
        a, md, saved, later = signed_past_the_saved(log)
        g = log.w.G3
        rewrite_with_its_leaf(log, saved)
        assert log.chains_ok_sql()
        log.restart()
        harness.wait_for(lambda: "the stored tree was changed" in log.srv.output(), timeout=30,
                         what="the builder's finding in its log")
        a, md = S.audit_pb2_grpc.AuditServiceStub(log.w.auditor.channel), log.w.auditor.metadata
        for i in range(3):
            g.member.clue.SubmitClue(pb.SubmitClueRequest(
                request_id=new_request_id(), title=f"再一条{i}", summary="摘要", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
                subject=pb.SubjectPerson(name="李四"), host_unit="市卫生健康委"), timeout=20)
        # Ten times --checkpoint-interval: a builder that signs would have done so by now.
        harness.time.sleep(2.0)
        assert cp_size(a, md) == later, "a checkpoint was signed over the rewritten tree"
        assert log.one("SELECT max(tree_size) FROM audit_checkpoints")[0] == later
        v = a.VerifyAuditChain(AU.VerifyAuditChainRequest(), metadata=md)
        assert not v.ok and "latest checkpoint" in v.tree_problem, v
        tampered("leaves rewritten under a later checkpoint, clued restarted", log, None, "fork")
    finally:
        log.close()


def test_a_verified_checkpoint_kept_holds_the_events_after_the_saved_one():
    """The auditor's verify fetched and checked the server's later checkpoint; kept with
    --out, it holds the events after the saved one: the superuser who rewrites one of them
    (event and leaf), deletes the later checkpoints and restarts clued gets a new checkpoint
    signed over the rewritten tree, which the kept one catches as a fork. Without --out the OK
    line says the later checkpoint was not kept, and the saved one alone cannot tell."""
    log = Log()
    try:
        a, md, saved, later = signed_past_the_saved(log)
        r = log.verify(check=0)
        assert f"the server's checkpoint of {later} events was not kept (--out FILE keeps it)" in r.stdout, r.stdout
        kept = os.path.join(TMP, f"{log.dbname}.kept")
        for bad in ("-", ""):
            r = harness.cluectl("audit", "verify", "--checkpoint", log.cp, "--out", bad, env=log.env(), check=2)
            assert "--out names a file" in r.stderr, r.stderr
        r = harness.cluectl("audit", "verify", "--out", kept, env=log.env(), check=2)
        assert "--out goes with --checkpoint" in r.stderr, r.stderr
        r = harness.cluectl("audit", "verify", "--checkpoint", log.cp, "--key", KEY + ".pub", "--out", kept,
                            env=log.env(), check=0)
        assert r.stdout.startswith("OK:") and f"the server's checkpoint of {later} events kept in {kept}" in r.stdout, \
            r.stdout
        assert open(kept).read() == a.GetCheckpoint(AU.GetCheckpointRequest(), metadata=md).note
        assert int(open(kept + ".leaves").readline().split()[-1]) == later
        assert not os.path.exists(kept + ".new") and not os.path.exists(kept + ".leaves.new")
        # The kept checkpoint is the next verify's: nothing newer, nothing to keep.
        r = harness.cluectl("audit", "verify", "--checkpoint", kept, "--key", KEY + ".pub", env=log.env(), check=0)
        assert r.stdout.startswith(f"OK: checkpoint of {later} events verified") and "not kept" not in r.stdout, r.stdout

        idx = saved
        seq = rewrite_with_its_leaf(log, idx, ("DELETE FROM audit_checkpoints WHERE tree_size > %s", (saved,)))
        log.restart()
        a, md = S.audit_pb2_grpc.AuditServiceStub(log.w.auditor.channel), log.w.auditor.metadata
        harness.wait_for(lambda: cp_size(a, md) == later, timeout=60, what="a checkpoint over the rewritten tree")
        # The saved checkpoint predates the event: it cannot tell (the documented limit).
        r = log.verify(check=0)
        assert r.stdout.startswith("OK:"), r.stdout
        # The kept one names it, and is left as it was.
        before = open(kept).read()
        r = harness.cluectl("audit", "verify", "--checkpoint", kept, "--key", KEY + ".pub", "--out", kept,
                            env=log.env(), check=1)
        assert r.stdout.startswith("FAIL: fork: ") and f"seq {seq} (leaf {idx})" in r.stdout, r.stdout
        assert open(kept).read() == before
        REPORT.append(("an event after the saved checkpoint rewritten, the later checkpoints deleted, clued "
                       "restarted: the checkpoint verify kept", r.stdout.strip()))
        # The server's record of its latest checkpoint (size, root) beside the signed note:
        # `audit checkpoint` shows and saves the note only when they agree.
        log.sql("UPDATE audit_checkpoints SET tree_size = 999999"
                " WHERE tree_size = (SELECT max(tree_size) FROM audit_checkpoints)")
        other = os.path.join(TMP, f"{log.dbname}.other")
        r = harness.cluectl("audit", "checkpoint", "--out", other, env=log.env(), check=1)
        assert f"the server's checkpoint says 999999 events, its signed note {later}" in r.stderr, r.stderr
        assert not os.path.exists(other)
    finally:
        log.close()


def note_add_event(log, clue_id):
    """The seq and note id of a clue's first note.add event."""
    return log.one("SELECT seq, (details::jsonb->>'note_id')::bigint FROM audit_events"
                   " WHERE subject_id = %s AND action = 'note.add' ORDER BY seq LIMIT 1", clue_id)


def test_note_moved_to_another_clue():
    log = Log()
    try:
        seq, nid = note_add_event(log, log.clues[0])
        log.sql(("UPDATE notes SET clue_id = %s WHERE id = %s", (log.clues[2], nid)))
        tampered("note moved to another clue (text untouched)", log, seq, f"note {nid} was moved to another clue")
    finally:
        log.close()


def test_note_kind_and_author_changed():
    log = Log()
    try:
        seq, nid = note_add_event(log, log.clues[1])
        log.sql(("UPDATE notes SET kind = 'INTERVIEW_RECORD' WHERE id = %s", (nid,)))
        tampered("note kind changed", log, seq, f"the kind of note {nid} was changed")
        log.sql(("UPDATE notes SET kind = 'OTHER', author_user = %s WHERE id = %s", (log.w.G1.leader.id, nid)))
        tampered("note re-attributed to another author", log, seq, f"note {nid} names another author")
        log.sql(("UPDATE notes SET author_user = %s, created_at = created_at - interval '30 days' WHERE id = %s",
                 (log.w.G1.member.id, nid)))
        tampered("note backdated by 30 days", log, seq, f"the time of note {nid} was changed")
    finally:
        log.close()


def test_note_inserted_without_an_event():
    log = Log()
    try:
        nid = log.sql(("INSERT INTO notes (clue_id, owner_unit, kind, text, author_user, author_unit, created_at)"
                       " SELECT id, owner_unit, 'MEETING_MINUTES', '伪造的会议纪要', %s, %s, created_at FROM clues"
                       " WHERE id = %s RETURNING id", (log.w.G1.leader.id, log.w.G1.id, log.clues[0])))[0][0]
        tampered("note inserted without an event", log, None,
                 f"note {nid} exists, but no note.add event logged it: it was inserted")
    finally:
        log.close()


def test_clue_inserted_without_an_event():
    log = Log()
    try:
        # A copy of a clue under another id and number, every other column as the original's.
        cid = log.sql(("INSERT INTO clues SELECT (json_populate_record(c, json_build_object('id', 999999,"
                       " 'registration_number', c.registration_number || '-9', 'reg_seq', 9999))).* FROM clues c"
                       " WHERE id = %s RETURNING id", (log.clues[0],)))[0][0]
        tampered("clue inserted without an event", log, None,
                 f"clue {cid} exists, but no clue.submit event logged it: it was inserted")
    finally:
        log.close()


def test_reporter_added_or_hidden():
    log = Log()
    try:
        without, with_ = log.clues[1], log.clues[0]  # submitted without and with a reporter
        seq = log.one("SELECT seq FROM audit_events WHERE subject_id = %s AND action = 'clue.submit'", without)[0]
        log.sql(("INSERT INTO clue_reporters (clue_id, owner_unit, name, phone) SELECT id, owner_unit, '伪造举报人',"
                 " '13999999999' FROM clues WHERE id = %s", (without,)),
                ("UPDATE clues SET has_reporter = true WHERE id = %s", (without,)))
        assert log.w.G1.leader.clue.GetClue(pb.GetClueRequest(clue_id=without), timeout=20).HasField("reporter")
        tampered("reporter planted on a clue logged without one", log, seq, "logged without a reporter, and has one now")
        log.sql(("DELETE FROM clue_reporters WHERE clue_id = %s", (without,)),
                ("UPDATE clues SET has_reporter = false WHERE id = %s", (without,)))
        assert log.verify().returncode == 0
        seq = log.one("SELECT seq FROM audit_events WHERE subject_id = %s AND action = 'clue.submit'", with_)[0]
        log.sql(("UPDATE clues SET has_reporter = false WHERE id = %s", (with_,)))
        assert not log.w.G1.leader.clue.GetClue(pb.GetClueRequest(clue_id=with_), timeout=20).HasField("reporter")
        tampered("reporter hidden (has_reporter cleared)", log, seq, "the clue's reporter was removed or hidden")
    finally:
        log.close()


def test_registration_number_changed():
    log = Log()
    try:
        seq = log.one("SELECT seq FROM audit_events WHERE subject_id = %s AND action = 'clue.submit'", log.clues[2])[0]
        log.sql(("UPDATE clues SET registration_number = registration_number || '9' WHERE id = %s", (log.clues[2],)))
        tampered("registration number changed", log, seq, "registration number was changed")
    finally:
        log.close()


def test_sha256_shadowed_through_the_search_path():
    """A superuser edits a note and makes public.sha256() answer the logged hash for the new
    text, then puts public ahead of pg_catalog for the database: clued's connections keep the
    built-in function first."""
    log = Log()
    try:
        seq, nid = note_add_event(log, log.clues[2])
        orig = log.one("SELECT text FROM notes WHERE id = %s", nid)[0]
        forged = "改过的笔记：无问题"
        log.sql(("UPDATE notes SET text = %s WHERE id = %s", (forged, nid)))
        with log.db.cursor() as cur:
            cur.execute("CREATE FUNCTION public.sha256(bytea) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$"
                        " SELECT CASE WHEN $1 = convert_to(%s, 'UTF8') THEN pg_catalog.sha256(convert_to(%s, 'UTF8'))"
                        " ELSE pg_catalog.sha256($1) END $$", (forged, orig))
            cur.execute(f'ALTER DATABASE "{log.dbname}" SET search_path = public, pg_catalog')
        log.restart()
        notes = log.w.G1.member.clue.ListNotes(pb.ListNotesRequest(clue_id=log.clues[2]), timeout=20).notes
        assert [n.text for n in notes if n.id == nid] == [forged]
        tampered("note text edited, sha256() shadowed through the database's search_path", log, seq,
                 f"the text of note {nid} was changed")
    finally:
        log.close()


def latest_seq(log, clue_id):
    return log.one("SELECT max(seq) FROM audit_events WHERE subject_type = 'clue' AND subject_id = %s", clue_id)[0]


def clue_now(w, cid):
    """The clue as the auditor reads it now."""
    return w.auditor.clue.GetClue(pb.GetClueRequest(clue_id=cid), timeout=20)


def move_now(w, user, cid, target, **details):
    """user's move of clue cid to target at its current version, carrying details."""
    return user.clue.RequestTransition(pb.RequestTransitionRequest(
        clue_id=cid, expected_version=clue_now(w, cid).version, target=target, reason="依规处置",
        details=pb.TransitionDetails(**details), request_id=new_request_id()), timeout=20)


def test_rows_changed_without_an_event():
    """Every kind of event that changes a clue's row, through the API, verifies; then the rows
    are changed as the superuser, one fact at a time, and each is named at the clue's latest
    event, and verifies again once put back."""
    log = Log()
    try:
        w, cl = log.w, pb

        rid, get, move = new_request_id, functools.partial(clue_now, w), functools.partial(move_now, w)

        c0, c1, c2 = log.clues
        st = S.common_pb2
        w.G1.leader.clue.ExtendDeadline(cl.ExtendDeadlineRequest(
            clue_id=c0, expected_version=get(c0).version, days=10, reason="情况复杂", request_id=rid()), timeout=20)
        prop = move(w.G1.leader, c0, st.CLUE_STATE_FILED)
        assert prop.pending
        w.R1.leader.clue.ReviewProposal(cl.ReviewProposalRequest(proposal_id=prop.proposal.id, approve=False,
                                                                 comment="材料不足", request_id=rid()), timeout=20)
        prop = move(w.G1.leader, c0, st.CLUE_STATE_FILED)
        w.R1.leader.clue.ReviewProposal(cl.ReviewProposalRequest(proposal_id=prop.proposal.id, approve=True,
                                                                 request_id=rid()), timeout=20)
        assert get(c0).state == st.CLUE_STATE_FILED
        case = w.R1.leader.case.CreateJointCase(S.case_pb2.CreateJointCaseRequest(
            title="联合办案", basis="室组地联合", participant_unit_ids=[w.G1.id], clue_ids=[c1],
            request_id=rid()), timeout=20)
        w.R1.leader.case.RemoveClueFromCase(S.case_pb2.RemoveClueFromCaseRequest(
            case_id=case.id, clue_id=c1, reason="不再并案"), timeout=20)
        w.G1.leader.clue.AssignHandler(cl.AssignHandlerRequest(clue_id=c1, user_id=w.G1.member.id, reason="派员参与",
                                                               request_id=rid()), timeout=20)
        w.G1.leader.clue.HandOver(cl.HandOverRequest(clue_id=c2, expected_version=get(c2).version,
                                                     to_unit_id=w.G2.id, reason="属 G2 管辖", request_id=rid()),
                                  timeout=20)
        move(w.G2.leader, c2, st.CLUE_STATE_CLOSED, finding="经初核，反映问题不属实")
        log.cp = log.save_checkpoint()  # verifies OK

        cases = [
            ("state rewritten", c0, "UPDATE clues SET state = 'CLOSED', stage_deadline = NULL WHERE id = %s",
             "the clue's state is CLOSED, but its events say FILED"),
            ("owner unit rewritten", c1, f"UPDATE clues SET owner_unit = {w.G3.id} WHERE id = %s",
             f"the clue's owner unit is {w.G3.id}, but its events say {w.G1.id}"),
            ("state and version rolled back", c2,
             "UPDATE clues SET state = 'PRELIMINARY_CHECK', version = version - 1, closed_at = NULL,"
             " stage_deadline = now() WHERE id = %s", "the clue's state is PRELIMINARY_CHECK, but its events say CLOSED"),
            ("version moved on", c2, "UPDATE clues SET version = version + 5 WHERE id = %s", "the clue's version is"),
            ("stage deadline moved", c0, "UPDATE clues SET stage_deadline = stage_deadline + interval '30 days'"
             " WHERE id = %s", "the clue's stage deadline is"),
            ("clue planted in a joint case", c1, f"UPDATE clues SET joint_case_id = {case.id} WHERE id = %s",
             f"the clue's joint case is {case.id}, but its events say none"),
        ]
        for name, cid, stmt, words in cases:
            before = log.one("SELECT state, owner_unit, version, stage_deadline, joint_case_id FROM clues"
                             " WHERE id = %s", cid)
            log.sql((stmt, (cid,)))
            tampered(name, log, latest_seq(log, cid), words, "the row was changed without an event")
            log.sql(("UPDATE clues SET state = %s, owner_unit = %s, version = %s, stage_deadline = %s,"
                     " joint_case_id = %s WHERE id = %s", (*before, cid)))
            r = log.verify()
            assert r.returncode == 0 and r.stdout.startswith("OK:"), r.stdout + r.stderr
    finally:
        log.close()


def proposal_event(log, action, pid):
    """The seq of the event action that names proposal pid."""
    return log.one("SELECT seq FROM audit_events WHERE subject_type = 'clue' AND action = %s"
                   " AND details::jsonb->>'proposal_id' = %s", action, str(pid))[0]


def test_outcomes_and_proposals_changed_without_an_event():
    """A clue closed by each path (every outcome field set by the move that carries it), one
    transferred to the judicial organs, proposals approved, rejected, withdrawn by a handover
    and one pending, all through the API, verify; then the outcome fields, the pending
    proposal and the proposal rows are changed as the superuser, one at a time, each named at
    the event that says what the row must be, and the log verifies again once put back."""
    log = Log()
    try:
        w, st = log.w, S.common_pb2
        g1 = w.G1

        rid, get, move = new_request_id, functools.partial(clue_now, w), functools.partial(move_now, w)

        def review(reviewer, prop, approve, comment=""):
            return reviewer.clue.ReviewProposal(pb.ReviewProposalRequest(
                proposal_id=prop.proposal.id, approve=approve, comment=comment, request_id=rid()), timeout=20)

        def submit(title):
            return g1.member.clue.SubmitClue(pb.SubmitClueRequest(
                request_id=rid(), title=title, summary="反映某某违规收受礼金", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
                subject=pb.SubjectPerson(name="李四"), host_unit="市发展改革委"), timeout=20).id

        c0, c1, c2 = log.clues  # in PRELIMINARY_CHECK
        c3, c4 = submit("线索3"), submit("线索4")
        # c0: filed after a rejected proposal, then concluded with a sanction.
        rejected = move(g1.leader, c0, st.CLUE_STATE_FILED)
        # Texts with a quote and a backslash: the row's JSON escapes them, the event's reason not.
        comment = '材料不足："证据\\清单"请补充'
        review(g1.reviewer, rejected, False, comment)
        filed = move(g1.leader, c0, st.CLUE_STATE_FILED)
        review(g1.reviewer, filed, True)
        move(g1.leader, c0, st.CLUE_STATE_CLOSED, sanction_kind="党内严重警告", persons_disciplined=2)
        # c1: filed, then transferred to the judicial organs on an approved proposal.
        review(g1.reviewer, move(g1.leader, c1, st.CLUE_STATE_FILED), True, "同意立案")
        transfer = move(g1.leader, c1, st.CLUE_STATE_TRANSFERRED_TO_JUDICIAL, receiving_organ="市人民检察院")
        review(g1.reviewer, transfer, True, "同意移送")
        # c2 closed after the check with a finding; c3 closed at once by a disposal.
        move(g1.leader, c2, st.CLUE_STATE_CLOSED, finding='经初核，反映问题"不属实"')
        move(g1.leader, c3, st.CLUE_STATE_CLOSED, disposal=pb.DISPOSAL_NO_FURTHER_ACTION)
        # c4: a proposal withdrawn by a handover, and the new owner's, pending.
        move(g1.leader, c4, st.CLUE_STATE_PRELIMINARY_CHECK)
        withdrawn = move(g1.leader, c4, st.CLUE_STATE_FILED)
        g1.leader.clue.HandOver(pb.HandOverRequest(clue_id=c4, expected_version=get(c4).version,
                                                   to_unit_id=w.G2.id, reason="属 G2 管辖", request_id=rid()),
                                timeout=20)
        pending = move(w.G2.leader, c4, st.CLUE_STATE_FILED)
        assert pending.pending and get(c4).pending_proposal
        done = {c: get(c) for c in (c0, c1, c2, c3)}
        assert done[c0].state == done[c2].state == done[c3].state == st.CLUE_STATE_CLOSED
        assert done[c1].state == st.CLUE_STATE_TRANSFERRED_TO_JUDICIAL
        assert log.one("SELECT status FROM proposals WHERE id = %s", withdrawn.proposal.id)[0] == "WITHDRAWN"
        log.cp = log.save_checkpoint()  # verifies OK

        pid = pending.proposal.id
        reviewer = pending.proposal.reviewer_unit_id
        clue_cases = [
            ("finding rewritten", c2, "finding = '经初核，反映问题属实'",
             'the clue\'s finding is "经初核，反映问题属实", but its events say "经初核，反映问题\\"不属实\\""'),
            ("disposal rewritten", c3, "disposal = 'SHELVED'",
             "the clue's disposal is SHELVED, but its events say NO_FURTHER_ACTION"),
            ("sanction kind rewritten", c0, "sanction_kind = '诫勉谈话'",
             'the clue\'s sanction kind is "诫勉谈话", but its events say "党内严重警告"'),
            ("persons disciplined rewritten", c0, "persons_disciplined = 0",
             "the clue's number of persons disciplined is 0, but its events say 2"),
            ("receiving organ cleared", c1, "receiving_organ = NULL",
             'the clue\'s receiving organ is none, but its events say "市人民检察院"'),
            ("finding planted on a transferred clue", c1, "finding = '不予追究'",
             'the clue\'s finding is "不予追究", but its events say none'),
            ("pending proposal planted on a closed clue", c3,
             f"pending_proposal_id = {filed.proposal.id}, pending_reviewer_unit = {reviewer}",
             f"the clue's pending proposal is {filed.proposal.id}, but its events say none"),
            ("pending proposal cleared", c4, "pending_proposal_id = NULL, pending_reviewer_unit = NULL",
             f"the clue's pending proposal is none, but its events say {pid}"),
            ("pending proposal's reviewer changed", c4, f"pending_reviewer_unit = {w.R2.id}",
             f"the clue's pending proposal's reviewer unit is {w.R2.id}, but its events say {reviewer}"),
        ]
        cols = ("disposal, finding, sanction_kind, persons_disciplined, receiving_organ, pending_proposal_id,"
                " pending_reviewer_unit")
        for name, cid, change, words in clue_cases:
            before = log.one(f"SELECT {cols} FROM clues WHERE id = %s", cid)
            log.sql((f"UPDATE clues SET {change} WHERE id = %s", (cid,)))
            tampered(name, log, latest_seq(log, cid), f"(clue #{cid}, ", words,
                     "the row was changed without an event")
            log.sql((f"UPDATE clues SET ({cols}) = (%s, %s, %s, %s, %s, %s, %s) WHERE id = %s", (*before, cid)))
            r = log.verify()
            assert r.returncode == 0 and r.stdout.startswith("OK:"), r.stdout + r.stderr

        rid_, fid, tid = rejected.proposal.id, filed.proposal.id, transfer.proposal.id
        proposal_cases = [
            ("approved proposal's status rewritten", fid, "status = 'REJECTED'", "proposal.approve",
             f"proposal {fid}'s status is REJECTED, but its events say APPROVED"),
            ("pending proposal rejected without an event", pid, "status = 'REJECTED', decided_at = now()",
             "proposal.create", f"proposal {pid}'s status is REJECTED, but its events say PENDING"),
            ("rejection's comment rewritten", rid_, "review_comment = '同意'", "proposal.reject",
             f'proposal {rid_}\'s review comment is "同意", but its events say "{comment}"'),
            ("approval's reviewer rewritten", fid, f"reviewed_by = {w.R2.leader.id}", "proposal.approve",
             f"proposal {fid}'s reviewing user is {w.R2.leader.id}, but its events say {g1.reviewer.id}"),
            ("proposal's reason rewritten", tid, "reason = '证据确凿'", "proposal.create",
             f'proposal {tid}\'s reason is "证据确凿", but its events say "依规处置"'),
            ("proposal's carried details rewritten", tid,
             "details = jsonb_set(details, '{receiving_organ}', '\"市中级人民法院\"')", "proposal.create",
             f'proposal {tid}\'s receiving organ is "市中级人民法院", but its events say "市人民检察院"'),
            ("pending proposal's reviewer unit rewritten", pid, f"reviewer_unit = {w.R2.id}", "proposal.create",
             f"proposal {pid}'s reviewer unit is {w.R2.id}, but its events say {reviewer}"),
            ("withdrawn proposal made approved", withdrawn.proposal.id, "status = 'APPROVED'", "proposal.withdraw",
             f"proposal {withdrawn.proposal.id}'s status is APPROVED, but its events say WITHDRAWN"),
        ]
        pcols = "status, reason, details, reviewer_unit, review_comment, reviewed_by, decided_at"
        for name, p, change, action, words in proposal_cases:
            before = log.one(f"SELECT {pcols} FROM proposals WHERE id = %s", p)
            log.sql((f"UPDATE proposals SET {change} WHERE id = %s", (p,)))
            tampered(name, log, proposal_event(log, action, p), words, "the row was changed without an event")
            log.sql((f"UPDATE proposals SET ({pcols}) = (%s, %s, %s::jsonb, %s, %s, %s, %s) WHERE id = %s",
                     (before[0], before[1], json.dumps(before[2]), *before[3:], p)))
            r = log.verify()
            assert r.returncode == 0 and r.stdout.startswith("OK:"), r.stdout + r.stderr

        # A proposal row planted with no event, and one deleted.
        planted = log.sql(("INSERT INTO proposals (clue_id, owner_unit, from_state, target, reason, details,"
                           " proposer_user, proposer_unit, reviewer_unit, status, clue_version, review_comment,"
                           " reviewed_by, created_at, decided_at)"
                           " SELECT clue_id, owner_unit, from_state, target, '伪造的立案建议', details, proposer_user,"
                           " proposer_unit, reviewer_unit, 'APPROVED', clue_version, '同意', reviewed_by, created_at,"
                           " decided_at FROM proposals WHERE id = %s RETURNING id", (rid_,)))[0][0]
        tampered("proposal planted without an event", log, None,
                 f"clue {c0}: proposal {planted} exists, but no proposal.create event of the clue logged it:"
                 " the row was inserted")
        log.sql(("DELETE FROM proposals WHERE id = %s", (planted,)))
        assert log.verify().returncode == 0
        deleted_and_put_back(log, "proposals", rid_, "proposal row deleted",
                             proposal_event(log, "proposal.create", rid_), f"proposal {rid_} is gone: the row was deleted")
    finally:
        log.close()


def test_access_rows_without_an_event():
    """Handlers, recusals, a joint case's participants and its lead, made through the API,
    verify; rows of them planted, removed or changed as the superuser are each named, and
    the log verifies again once they are put back."""
    log = Log()
    try:
        w, cl, cs = log.w, pb, S.case_pb2
        c0, c1, c2 = log.clues
        case = w.R1.leader.case.CreateJointCase(cs.CreateJointCaseRequest(
            title="联合办案", basis="室组地联合", participant_unit_ids=[w.G1.id], clue_ids=[c1],
            request_id=new_request_id()), timeout=20)
        for assign in (True, False, True):
            rpc = w.G1.leader.clue.AssignHandler if assign else w.G1.leader.clue.UnassignHandler
            req = cl.AssignHandlerRequest if assign else cl.UnassignHandlerRequest
            rpc(req(clue_id=c2, user_id=w.G1.member.id, reason="派员参与", request_id=new_request_id()), timeout=20)
        w.G1.leader.clue.AssignHandler(cl.AssignHandlerRequest(clue_id=c0, user_id=w.G1.member.id, reason="派员参与",
                                                               request_id=new_request_id()), timeout=20)
        w.G1.leader.clue.UnassignHandler(cl.UnassignHandlerRequest(clue_id=c0, user_id=w.G1.member.id,
                                                                   reason="工作调整", request_id=new_request_id()),
                                         timeout=20)
        w.G1.leader.clue.RecordRecusal(cl.RecordRecusalRequest(clue_id=c1, user_id=w.G1.member.id, reason="近亲属关系",
                                                               request_id=new_request_id()), timeout=20)
        log.cp = log.save_checkpoint()  # verifies OK
        member, g1, g2 = w.G1.member.id, w.G1.id, w.G2.id
        handler = ("INSERT INTO clue_handlers (clue_id, user_id, owner_unit, assigned_by, assigned_by_unit, assigned_at)"
                   f" SELECT id, {member}, owner_unit, {w.G1.leader.id}, owner_unit, now() FROM clues WHERE id = %s")
        cases = [
            ("handler planted on a clue", handler % c0, f"DELETE FROM clue_handlers WHERE clue_id = {c0}",
             f"clue {c0}: user {member} is its handler, but no clue.assign event"),
            ("recusal removed", f"CREATE TABLE kept AS SELECT * FROM recusals WHERE clue_id = {c1};"
             f" SET LOCAL session_replication_role = replica; DELETE FROM recusals WHERE clue_id = {c1}",
             "INSERT INTO recusals SELECT * FROM kept; DROP TABLE kept",
             f"clue {c1}: the recusal of user {member}, which a clue.recuse event logged, is gone"),
            ("recusal planted", "INSERT INTO recusals (clue_id, user_id, reason, recorded_by, recorded_by_unit,"
             f" recorded_at) VALUES ({c2}, {w.G1.leader.id}, '伪造', {w.G1.leader.id}, {g1}, now())",
             f"DELETE FROM recusals WHERE clue_id = {c2}",
             f"clue {c2}: user {w.G1.leader.id} is recused from it, but no clue.recuse event logged it"),
            ("participant planted in a joint case", "INSERT INTO case_participants (case_id, unit_id, added_by,"
             f" added_at) VALUES ({case.id}, {g2}, {w.R1.leader.id}, now())",
             f"DELETE FROM case_participants WHERE case_id = {case.id} AND unit_id = {g2}",
             f"joint case {case.id}: unit {g2} takes part in it, but no event"),
            ("handler removed", f"CREATE TABLE kept AS SELECT * FROM clue_handlers WHERE clue_id = {c2};"
             f" DELETE FROM clue_handlers WHERE clue_id = {c2}", "INSERT INTO clue_handlers SELECT * FROM kept;"
             " DROP TABLE kept", f"clue {c2}: user {member} is not its handler, though a clue.assign event"),
            ("participant removed from a joint case", "CREATE TABLE kept AS SELECT * FROM case_participants"
             f" WHERE case_id = {case.id}; DELETE FROM case_participants WHERE case_id = {case.id}",
             "INSERT INTO case_participants SELECT * FROM kept; DROP TABLE kept",
             f"joint case {case.id}: unit {g1} does not take part in it, though an event added it"),
            ("joint case's lead changed", f"UPDATE joint_cases SET lead_unit = {w.R2.id} WHERE id = {case.id}",
             f"UPDATE joint_cases SET lead_unit = {w.R1.id} WHERE id = {case.id}",
             f"joint case {case.id}: its lead unit is {w.R2.id}, which its case.create event does not say"),
        ]
        # The handler ended by the unassignment, and the recusal's, planted back, are told too.
        assert log.one("SELECT count(*) FROM clue_handlers WHERE clue_id = %s", c2)[0] == 1
        for name, stmt, undo, words in cases:
            log.sql(stmt)
            tampered(name, log, None, words)
            log.sql(undo)
            r = log.verify()
            assert r.returncode == 0 and r.stdout.startswith("OK:"), r.stdout + r.stderr
    finally:
        log.close()


def test_registration_counter_changed():
    """A unit's registration counter set back by the superuser makes its next SubmitClue fail
    with DATA_LOSS, naming the counter, and takes no number twice; verify names the counter set
    back, and one set ahead (a gap), and verifies again once it is put back."""
    log = Log()
    try:
        unit, year, last = log.one("SELECT k.unit_id, k.year, k.last_seq FROM clue_counters k"
                                   " JOIN clues c ON c.reg_unit = k.unit_id AND c.reg_year = k.year"
                                   " WHERE c.id = %s", log.clues[0])
        assert unit == log.w.G1.id and last == 3, (unit, last)
        n_clues = log.one("SELECT count(*) FROM clues")[0]
        log.sql(f"UPDATE clue_counters SET last_seq = {last - 1} WHERE unit_id = {unit} AND year = {year}")
        harness.expect_status(grpc.StatusCode.DATA_LOSS, log.w.G1.member.clue.SubmitClue, pb.SubmitClueRequest(
            request_id=new_request_id(), title="新线索", summary="反映某某违规收受礼金",
            source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=pb.SubjectPerson(name="李四"),
            host_unit="市发展改革委"), timeout=20, details_has=["registration counter is behind"])
        assert log.one("SELECT count(*) FROM clues")[0] == n_clues
        tampered("registration counter set back", log, None,
                 f"unit {unit}: its registration counter of {year} does not stand at the highest number")
        log.sql(f"UPDATE clue_counters SET last_seq = {last + 5} WHERE unit_id = {unit} AND year = {year}")
        tampered("registration counter set ahead", log, None, f"unit {unit}: its registration counter of {year}")
        log.sql(f"UPDATE clue_counters SET last_seq = {last} WHERE unit_id = {unit} AND year = {year}")
        r = log.verify()
        assert r.returncode == 0 and r.stdout.startswith("OK:"), r.stdout + r.stderr
    finally:
        log.close()


def subject_seq(log, subject_type, sid):
    """The seq of the latest event of a subject's chain."""
    return log.one("SELECT max(seq) FROM audit_events WHERE subject_type = %s AND subject_id = %s",
                   subject_type, sid)[0]


def changed_and_put_back(log, table, cols, cases, key="id"):
    """Each case (name, row, change, seq, words): the row's cols kept, the change made as the
    superuser, named by audit verify at seq, then the row put back, and the log verifies again.
    row: the value of the row's key column(s), a tuple for a key of several."""
    for name, row, change, seq, *words in cases:
        row = row if isinstance(row, tuple) else (row,)
        where = f"ROW({key}) = ROW({', '.join(['%s'] * len(row))})"
        before = log.one(f"SELECT {cols} FROM {table} WHERE {where}", *row)
        log.sql((f"UPDATE {table} SET {change} WHERE {where}", row))
        tampered(name, log, seq, *words, "the row was changed without an event")
        marks = ", ".join(["%s"] * len(before))
        log.sql((f"UPDATE {table} SET ({cols}) = ROW({marks}) WHERE {where}", (*before, *row)))
        r = log.verify()
        assert r.returncode == 0 and r.stdout.startswith("OK:"), r.stdout + r.stderr


def test_rect_items_changed_without_an_event():
    """Rectification items through every state, REOPENED included, from a clue, a joint case and
    supervision, verify; then an item's row is changed as the superuser, one fact at a time
    (an open item made VERIFIED with a new description counts as rectified), each named at the
    item's latest event, an item planted or deleted is named too, and the log verifies again
    once put back."""
    log = Log()
    try:
        w, rp = log.w, S.rectification_pb2
        g1, c0, c1 = w.G1, log.clues[0], log.clues[1]
        nid = note_add_event(log, c0)[1]
        day = 86400 * 1000
        deadline = (int(harness.time.time()) // 86400 + 30) * day

        def create(user, source, host, **src):
            return user.rect.CreateItem(rp.CreateItemRequest(
                host_unit=host, description="政府采购未按规定公开", category="财务管理", source=source,
                deadline_ms=deadline, request_id=new_request_id(), **src), timeout=20)

        def step(user, rpc, it, **kw):
            return getattr(user.rect, rpc)(getattr(rp, rpc + "Request")(
                item_id=it.id, expected_version=it.version, request_id=new_request_id(), **kw), timeout=20)

        a = create(g1.leader, rp.RECTIFICATION_SOURCE_CLUE, "市发展改革委", source_clue_id=c0)
        a = step(g1.member, "RecordPlan", a, plan="整改方案：建立采购公开制度", note_ids=[nid])
        a = step(g1.member, "Submit", a, evidence="已公开部分采购信息", note_ids=[nid])
        a = step(g1.leader, "Reopen", a, reason="证据不足")
        a = step(g1.member, "RecordPlan", a, plan='补充方案："全部公开"\\逐项核对')
        a = step(g1.member, "Submit", a, evidence="已公开全部采购信息")
        a = step(g1.leader, "Verify", a, comment="整改到位")
        assert a.state == rp.RECTIFICATION_STATE_VERIFIED
        b = create(g1.leader, rp.RECTIFICATION_SOURCE_SUPERVISION, "市发展改革委")
        case = w.R1.leader.case.CreateJointCase(S.case_pb2.CreateJointCaseRequest(
            title="联合办案", basis="室组地联合", participant_unit_ids=[g1.id], clue_ids=[c1],
            request_id=new_request_id()), timeout=20)
        c = create(w.R1.leader, rp.RECTIFICATION_SOURCE_CASE, "市交通运输局", source_case_id=case.id)
        c = step(w.R1.member, "RecordPlan", c, plan="整改方案")
        c = step(w.R1.member, "Submit", c, evidence="整改报告")
        c = step(w.R1.leader, "Reopen", c, reason="未见整改台账")
        assert c.state == rp.RECTIFICATION_STATE_REOPENED
        log.cp = log.save_checkpoint()  # verifies OK

        def rectified():
            led = g1.leader.rect.GetLedgerStats(rp.GetLedgerStatsRequest(), timeout=20).host_units
            return {h.host_unit: h.rectified for h in led}["市发展改革委"]

        assert rectified() == 1
        sa, sb, sc = (subject_seq(log, "rectification", x.id) for x in (a, b, c))
        cols = ("state, version, supervising_unit, created_by, host_unit, description, category, deadline,"
                " plan, plan_note_ids, evidence, evidence_note_ids, verify_comment, reopen_reason, verified_at")
        later = deadline + 90 * day
        changed_and_put_back(log, "rect_items", cols, [
            ("open item made VERIFIED with a new description", b.id,
             "state = 'VERIFIED', verified_at = now(), description = '已整改完毕'", sb, f"(rectification #{b.id}, ",
             "the item's state is VERIFIED, but its events say OPEN"),
            ("item's description rewritten", b.id, "description = '已整改完毕'", sb,
             'the item\'s description is "已整改完毕", but its events say "政府采购未按规定公开"'),
            ("item's deadline moved", b.id, f"deadline = to_timestamp({later // 1000})", sb,
             "the item's deadline is ", "but its events say "),
            ("item's supervising unit changed", b.id, f"supervising_unit = {w.G2.id}", sb,
             f"the item's supervising unit is {w.G2.id}, but its events say {g1.id}"),
            ("item's plan rewritten", a.id, "plan = '无需整改'", sa,
             'the item\'s plan is "无需整改", but its events say "补充方案：\\"全部公开\\"'),
            ("item's version moved on", a.id, "version = version + 3", sa,
             f"the item's version is {a.version + 3}, but its events say {a.version}"),
            ("item's evidence notes changed", a.id, f"evidence_note_ids = '{{{nid}}}'", sa,
             f"the item's list of evidence notes is [{nid}], but its events say []"),
            ("item's verification comment rewritten", a.id, "verify_comment = '同意'", sa,
             'the item\'s verification comment is "同意", but its events say "整改到位"'),
            ("reopened item's reason rewritten", c.id, "reopen_reason = '已核实'", sc,
             'the item\'s reason for reopening is "已核实", but its events say "未见整改台账"'),
            ("reopened item's category and host unit rewritten", c.id, "category = '作风建设', host_unit = '市统计局'",
             sc, 'the item\'s host unit is "市统计局", but its events say "市交通运输局"'),
            ("reopened item's recorder changed", c.id, f"created_by = {w.R1.member.id}", sc,
             f"the item's recording user is {w.R1.member.id}, but its events say {w.R1.leader.id}"),
        ])
        # What the first tampering did: the ledger counted the open item as rectified.
        log.sql(f"UPDATE rect_items SET state = 'VERIFIED', verified_at = now() WHERE id = {b.id}")
        assert rectified() == 2
        log.sql(f"UPDATE rect_items SET state = 'OPEN', verified_at = NULL WHERE id = {b.id}")

        planted = log.sql(("INSERT INTO rect_items (host_unit, description, category, source, deadline,"
                           " supervising_unit, state, version, created_by, created_at, updated_at, verified_at)"
                           " SELECT host_unit, '伪造的整改事项', category, 'SUPERVISION', deadline, supervising_unit,"
                           " 'VERIFIED', 4, created_by, created_at, updated_at, now() FROM rect_items WHERE id = %s"
                           " RETURNING id", (b.id,)))[0][0]
        tampered("item planted without an event", log, None,
                 f"rectification item {planted} exists, but no rect.create event logged it: the row was inserted")
        log.sql(f"DELETE FROM rect_items WHERE id = {planted}")
        assert log.verify().returncode == 0
        deleted_and_put_back(log, "rect_items", c.id, "item deleted", sc,
                             f"rectification item {c.id} is gone: the row was deleted")
    finally:
        log.close()


def test_users_and_units_changed_without_an_event():
    """Users of every role (the bootstrap's admin, an auditor, leaders and members, one disabled)
    and units of every kind (the bootstrap's ADMIN unit, rooms, groups with their liaison rooms
    and host units, a region), made through the AdminService, verify; then a user's or a unit's
    row is changed as the superuser, one fact at a time, each named at its latest event, a user
    or unit planted is named too, and the log verifies again once put back."""
    log = Log()
    try:
        w, ad = log.w, S.admin_pb2
        left = w.admin.admin.CreateUser(ad.CreateUserRequest(unit_id=w.G2.id, name="G2-调离人员",
                                                             role=S.common_pb2.ROLE_MEMBER), timeout=10)
        w.admin.admin.DisableUser(ad.DisableUserRequest(user_id=left.id, reason="调离"), timeout=10)
        log.cp = log.save_checkpoint()  # verifies OK
        m, g1, g3 = w.G1.member, w.G1, w.G3

        def user(u):
            return subject_seq(log, "user", u)

        def unit(u):
            return subject_seq(log, "unit", u)

        changed_and_put_back(log, "users", "unit_id, name, role, disabled", [
            ("member made a LEADER", m.id, "role = 'LEADER'", user(m.id), f"(user #{m.id}, ",
             "the user's role is LEADER, but its events say MEMBER"),
            ("user moved to another unit", m.id, f"unit_id = {w.G2.id}", user(m.id),
             f"the user's unit is {w.G2.id}, but its events say {g1.id}"),
            ("disabled user enabled again", left.id, "disabled = false", user(left.id),
             "the user's disabled flag is false, but its events say true"),
            ("user disabled without an event", g3.leader.id, "disabled = true", user(g3.leader.id),
             "the user's disabled flag is true, but its events say false"),
            ("user renamed", w.auditor.id, "name = '审计员'", user(w.auditor.id),
             'the user\'s name is "审计员", but its events say "auditor"'),
            ("bootstrap's admin made an AUDITOR", w.admin.id, "role = 'AUDITOR'", user(w.admin.id),
             "the user's role is AUDITOR, but its events say ADMIN"),
        ])
        changed_and_put_back(log, "units", "kind, code, name, liaison_room_id, host_units", [
            ("group's liaison room changed", g1.id, f"liaison_room_id = {w.R2.id}", unit(g1.id), f"(unit #{g1.id}, ",
             f"the unit's liaison room is {w.R2.id}, but its events say {w.R1.id}"),
            ("region made a room", w.X1.id, "kind = 'ROOM'", unit(w.X1.id),
             "the unit's kind is ROOM, but its events say REGION"),
            ("unit's code changed", g3.id, "code = 'G9'", unit(g3.id), "the unit's code is G9, but its events say G3"),
            ("unit renamed", g3.id, "name = '第九组'", unit(g3.id),
             'the unit\'s name is "第九组", but its events say "group G3"'),
            ("group's host units changed", g3.id, "host_units = '{市医保局}'", unit(g3.id),
             'the unit\'s list of host units is ["市医保局"], but its events say ["市卫生健康委", "市医保局"]'),
            ("bootstrap's ADMIN unit given host units", w.admin_unit.id, "host_units = '{市财政局}'",
             unit(w.admin_unit.id), 'the unit\'s list of host units is ["市财政局"], but its events say []'),
        ])
        uid = log.sql(("INSERT INTO users (unit_id, name, role) VALUES (%s, 'G1-影子领导', 'LEADER') RETURNING id",
                       (g1.id,)))[0][0]
        tampered("user planted without an event", log, None,
                 f"user {uid} exists, but no user.create event logged it: the row was inserted")
        log.sql(f"DELETE FROM users WHERE id = {uid}")
        assert log.verify().returncode == 0
        nid = log.sql(("INSERT INTO units (kind, code, name, liaison_room_id, host_units)"
                       " VALUES ('GROUP', 'G9', '影子组', %s, '{市统计局}') RETURNING id", (w.R1.id,)))[0][0]
        tampered("unit planted without an event", log, None,
                 f"unit {nid} exists, but no unit.create event logged it: the row was inserted")
        log.sql(f"DELETE FROM units WHERE id = {nid}")
        r = log.verify()
        assert r.returncode == 0 and r.stdout.startswith("OK:"), r.stdout + r.stderr
    finally:
        log.close()


def test_case_recusal_and_extension_changed_without_an_event():
    """A joint case, a recusal and an extended deadline, made through the API, verify; then the
    case's title or basis, the recusal's reason or recorder, or a clue's deadline-extended flag
    is changed as the superuser, each named at the event that says what it must be, and the log
    verifies again once put back."""
    log = Log()
    try:
        w, cl = log.w, pb
        c0, c1, c2 = log.clues
        member = w.G1.member.id
        case = w.R1.leader.case.CreateJointCase(S.case_pb2.CreateJointCaseRequest(
            title="联合办案", basis="室组地联合", participant_unit_ids=[w.G1.id], clue_ids=[c1],
            request_id=new_request_id()), timeout=20)
        w.G1.leader.clue.RecordRecusal(cl.RecordRecusalRequest(clue_id=c2, user_id=member, reason="近亲属关系",
                                                               request_id=new_request_id()), timeout=20)
        version = w.auditor.clue.GetClue(cl.GetClueRequest(clue_id=c0), timeout=20).version
        w.G1.leader.clue.ExtendDeadline(cl.ExtendDeadlineRequest(
            clue_id=c0, expected_version=version, days=10, reason="情况复杂", request_id=new_request_id()), timeout=20)
        log.cp = log.save_checkpoint()  # verifies OK

        changed_and_put_back(log, "joint_cases", "title, basis", [
            ("joint case's title rewritten", case.id, "title = '专项核查'", subject_seq(log, "case", case.id),
             f"(case #{case.id}, ", 'the joint case\'s title is "专项核查", but its events say "联合办案"'),
            ("joint case's basis cleared", case.id, "basis = ''", subject_seq(log, "case", case.id),
             'the joint case\'s basis is "", but its events say "室组地联合"'),
        ])
        rid, = log.one("SELECT id FROM recusals WHERE clue_id = %s AND user_id = %s", c2, member)
        seq, = log.one("SELECT seq FROM audit_events WHERE subject_type = 'clue' AND subject_id = %s"
                       " AND action = 'clue.recuse'", c2)
        changed_and_put_back(log, "recusals", "reason, recorded_by, recorded_by_unit", [
            ("recusal's reason rewritten", rid, "reason = '工作需要'", seq, f"(clue #{c2}, clue.recuse)",
             f'user {member}\'s recusal reason is "工作需要", but its events say "近亲属关系"'),
            ("recusal's recorder changed", rid, f"recorded_by = {w.R1.leader.id}, recorded_by_unit = {w.R1.id}", seq,
             f"user {member}'s recusal recording user is {w.R1.leader.id}, but its events say {w.G1.leader.id}"),
        ])
        changed_and_put_back(log, "clues", "deadline_extended, has_recusals", [
            ("deadline-extended flag cleared", c0, "deadline_extended = false", latest_seq(log, c0),
             f"(clue #{c0}, clue.deadline_extend)", "the clue's deadline-extended flag is false, but its events say true"),
            ("deadline-extended flag set on a clue never extended", c1, "deadline_extended = true", latest_seq(log, c1),
             "the clue's deadline-extended flag is true, but its events say false"),
            ("has-recusals flag cleared", c2, "has_recusals = false", latest_seq(log, c2),
             "the clue's has-recusals flag is false, but its events say true"),
        ])
        # What the last one does: reads skip the recusal check, and the recused member sees the clue.
        try:
            w.G1.member.clue.GetClue(cl.GetClueRequest(clue_id=c2), timeout=20)
            raise AssertionError("a recused member sees the clue")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND, e
        log.sql(f"UPDATE clues SET has_recusals = false WHERE id = {c2}")
        try:
            assert w.G1.member.clue.GetClue(cl.GetClueRequest(clue_id=c2), timeout=20).id == c2
        finally:
            log.sql(f"UPDATE clues SET has_recusals = true WHERE id = {c2}")
    finally:
        log.close()

def test_who_gave_access_changed_without_an_event():
    """Who assigned a handler (the user and the unit it acted for), who added a joint case's
    participant or listed a clue in it, and who created the case: each is what the event that
    wrote the row records as its actor. A history where the latest event differs in actor from
    an earlier one for the same row (the clue taken out of the case by its owner and put back,
    the handler unassigned and assigned again by the case's lead room) verifies; each column
    changed as the superuser is named at that latest event, and the log verifies again once
    put back."""
    log = Log()
    try:
        w, cl, cs = log.w, pb, S.case_pb2
        c1 = log.clues[1]
        r1, g1, g2, member = w.R1.leader, w.G1.leader, w.G2.id, w.G1.member.id
        case = r1.case.CreateJointCase(cs.CreateJointCaseRequest(
            title="联合办案", basis="室组地联合", participant_unit_ids=[w.G1.id, g2], clue_ids=[c1],
            request_id=new_request_id()), timeout=20)
        r1.case.RemoveParticipant(cs.RemoveParticipantRequest(case_id=case.id, unit_id=g2, reason="调整"), timeout=20)
        r1.case.AddParticipant(cs.AddParticipantRequest(case_id=case.id, unit_id=g2, reason="重新加入"), timeout=20)
        g1.case.RemoveClueFromCase(cs.RemoveClueFromCaseRequest(case_id=case.id, clue_id=c1, reason="暂缓"), timeout=20)
        g1.case.AddClueToCase(cs.AddClueToCaseRequest(case_id=case.id, clue_id=c1, reason="恢复"), timeout=20)
        g1.clue.AssignHandler(cl.AssignHandlerRequest(clue_id=c1, user_id=member, reason="派员参与",
                                                      request_id=new_request_id()), timeout=20)
        g1.clue.UnassignHandler(cl.UnassignHandlerRequest(clue_id=c1, user_id=member, reason="工作调整",
                                                          request_id=new_request_id()), timeout=20)
        r1.clue.AssignHandler(cl.AssignHandlerRequest(clue_id=c1, user_id=member, reason="专案抽调",
                                                      request_id=new_request_id()), timeout=20)
        log.cp = log.save_checkpoint()  # verifies OK

        def last(subject_type, sid, action, key=None, value=None):
            q = ("SELECT max(seq) FROM audit_events WHERE subject_type = %s AND subject_id = %s AND action = %s"
                 + (f" AND details::jsonb->>'{key}' = %s" if key else ""))
            return log.one(q, subject_type, sid, action, *([str(value)] if key else []))[0]

        assign = last("clue", c1, "clue.assign", "user_id", member)
        changed_and_put_back(log, "clue_handlers", "assigned_by, assigned_by_unit", [
            ("handler's assigner changed", (c1, member), f"assigned_by = {g1.id}", assign, f"(clue #{c1}, clue.assign)",
             f"user {member}'s assignment assigning user is {g1.id}, but its events say {r1.id}"),
            # What it does: the assignment, now the owner's own, would outlive the clue's leaving the case.
            ("handler's assigning unit changed", (c1, member), f"assigned_by_unit = {w.G1.id}", assign,
             f"user {member}'s assignment assigning unit is {w.G1.id}, but its events say {w.R1.id}"),
        ], key="clue_id, user_id")
        changed_and_put_back(log, "case_clues", "added_by", [
            ("case clue's adder changed", c1, f"added_by = {r1.id}", last("clue", c1, "case.add_clue"),
             f"(clue #{c1}, case.add_clue)",
             f"the clue's listing in joint case {case.id} adding user is {r1.id}, but its events say {g1.id}"),
        ], key="clue_id")
        changed_and_put_back(log, "case_participants", "added_by", [
            ("participant's adder changed (case.create)", (case.id, w.G1.id), f"added_by = {g1.id}",
             last("case", case.id, "case.create"), f"(case #{case.id}, case.create)",
             f"unit {w.G1.id}'s participation adding user is {g1.id}, but its events say {r1.id}"),
            ("participant's adder changed (case.add_participant)", (case.id, g2), f"added_by = {g1.id}",
             last("case", case.id, "case.add_participant"), f"(case #{case.id}, case.add_participant)",
             f"unit {g2}'s participation adding user is {g1.id}, but its events say {r1.id}"),
        ], key="case_id, unit_id")
        changed_and_put_back(log, "joint_cases", "created_by", [
            ("joint case's creator changed", case.id, f"created_by = {g1.id}", subject_seq(log, "case", case.id),
             f"the joint case's creating user is {g1.id}, but its events say {r1.id}"),
        ])
        # What a reader is shown of them.
        log.sql(f"UPDATE joint_cases SET created_by = {g1.id} WHERE id = {case.id}")
        try:
            assert r1.case.GetJointCase(cs.GetJointCaseRequest(case_id=case.id), timeout=20).created_by == g1.id
        finally:
            log.sql(f"UPDATE joint_cases SET created_by = {r1.id} WHERE id = {case.id}")
    finally:
        log.close()


def token_event(log, action, tid):
    """The seq of the token.issue or token.revoke event naming token tid."""
    return log.one("SELECT seq FROM audit_events WHERE subject_type = 'user' AND action = %s"
                   " AND details::jsonb->>'token_id' = %s", action, str(tid))[0]


def caller(addr, token):
    """GetCaller with token: its answer, or the status code it was refused with."""
    u = world.User(addr, 0, "?", "?", None, token)
    try:
        return u.tokens.GetCaller(S.token_pb2.GetCallerRequest(), timeout=10)
    except grpc.RpcError as e:
        return e.code()
    finally:
        u.close()


def acts_as(addr, token, user_id):
    """Whether token authenticates as user_id (a cached principal lives for a second)."""
    harness.wait_for(lambda: getattr(caller(addr, token), "user_id", None) == user_id, timeout=10, interval=0.2,
                     what=f"the token to authenticate as user {user_id}")
    return True


def hash_sha256(token):
    """What token.issue records of a token since 0040: SHA-256 of its stored SHA-256."""
    return hashlib.sha256(hashlib.sha256(token.encode()).digest()).hexdigest()


def test_tokens_changed_without_an_event():
    """Tokens issued by the bootstrap, by the admin (enrollment tokens) and by their users,
    revoked by their user and by the admin, and a disabled user's unrevoked token, verify;
    then a token's row is changed as the superuser, one fact at a time (a revoked token made
    live again, a token moved to another user, an enrollment token made personal, a live
    token's stored hash replaced by one of a known secret), each named at the event that says
    what it must be, a token planted for the admin or deleted is named too, and the log
    verifies again once put back. Where cheap, the effect is shown: the token authenticates."""
    log = Log()
    try:
        w, ad, T = log.w, S.admin_pb2, S.token_pb2
        m, lead, addr = w.G1.member, w.G1.leader, log.srv.addr
        laptop = m.tokens.IssueMyToken(T.IssueMyTokenRequest(note="laptop"), timeout=10)
        m.tokens.RevokeMyToken(T.RevokeMyTokenRequest(token_id=laptop.token_id), timeout=10)
        lost = w.admin.admin.IssueToken(ad.IssueTokenRequest(user_id=lead.id, note="遗失"), timeout=10)
        w.admin.admin.RevokeToken(ad.RevokeTokenRequest(token_id=lost.token_id), timeout=10)
        left = w.admin.admin.CreateUser(ad.CreateUserRequest(unit_id=w.G2.id, name="G2-调离人员",
                                                             role=S.common_pb2.ROLE_MEMBER), timeout=10)
        kept = w.admin.admin.IssueToken(ad.IssueTokenRequest(user_id=left.id, note="入职"), timeout=10)
        w.admin.admin.DisableUser(ad.DisableUserRequest(user_id=left.id, reason="调离"), timeout=10)
        assert caller(addr, kept.token) == grpc.StatusCode.UNAUTHENTICATED  # disabling is enough
        log.cp = log.save_checkpoint()  # verifies OK

        personal = caller(addr, m.token).token_id
        enrolled = caller(addr, m.enrollment_token)
        assert enrolled.enrollment and enrolled.user_id == m.id, enrolled
        boot = caller(addr, w.admin.token).token_id
        issued = {t: token_event(log, "token.issue", t) for t in (personal, enrolled.token_id, boot, laptop.token_id)}
        revoked = {t: token_event(log, "token.revoke", t) for t in (laptop.token_id, lost.token_id)}
        known = "ct_" + "5" * 64
        cols = "user_id, token_sha256, note, issued_by, revoked_at"
        changed_and_put_back(log, "tokens", cols, [
            ("revoked token made live again", laptop.token_id, "revoked_at = NULL", revoked[laptop.token_id],
             f"(user #{m.id}, token.revoke)", f"token {laptop.token_id}'s revoked flag is false, but its events say true"),
            ("token the admin revoked made live again", lost.token_id, "revoked_at = NULL", revoked[lost.token_id],
             f"token {lost.token_id}'s revoked flag is false, but its events say true"),
            ("live token revoked without an event", personal, "revoked_at = now()", issued[personal],
             f"(user #{m.id}, token.issue)", f"token {personal}'s revoked flag is true, but its events say false"),
            ("token moved to another user", personal, f"user_id = {lead.id}", issued[personal],
             f"token {personal}'s user is {lead.id}, but its events say {m.id}"),
            ("enrollment token made personal", enrolled.token_id, "issued_by = user_id", issued[enrolled.token_id],
             f"token {enrolled.token_id}'s enrollment flag is false, but its events say true"),
            ("bootstrap token's issuer changed", boot, f"issued_by = {w.auditor.id}", issued[boot],
             f"token {boot}'s enrollment flag is true, but its events say false"),
            ("token's note rewritten", laptop.token_id, "note = '管理员'", issued[laptop.token_id],
             f'token {laptop.token_id}\'s note is "管理员", but its events say "laptop"'),
            ("live token's stored hash replaced by a known secret's", personal,
             f"token_sha256 = sha256(convert_to('{known}', 'UTF8'))", issued[personal],
             f"token {personal}'s stored hash's SHA-256 is {hash_sha256(known)}, but its events say "
             f"{hash_sha256(m.token)}"),
        ])
        # What they do, each put back after: the revoked token, the enrollment token read as a
        # personal one (reporter contacts), and the known secret each authenticate as the user.
        log.sql(f"UPDATE tokens SET revoked_at = NULL WHERE id = {laptop.token_id}")
        assert acts_as(addr, laptop.token, m.id)
        log.sql(f"UPDATE tokens SET revoked_at = now() WHERE id = {laptop.token_id}")
        log.sql(f"UPDATE tokens SET issued_by = user_id WHERE id = {enrolled.token_id}")
        harness.wait_for(lambda: not caller(addr, m.enrollment_token).enrollment, timeout=10,
                         interval=0.2, what="a personal token")
        log.sql(f"UPDATE tokens SET issued_by = {w.admin.id} WHERE id = {enrolled.token_id}")
        old = log.one("SELECT token_sha256 FROM tokens WHERE id = %s", personal)[0]
        log.sql(f"UPDATE tokens SET token_sha256 = sha256(convert_to('{known}', 'UTF8')) WHERE id = {personal}")
        assert acts_as(addr, known, m.id)
        log.sql(("UPDATE tokens SET token_sha256 = %s WHERE id = %s", (old, personal)))
        r = log.verify()
        assert r.returncode == 0 and r.stdout.startswith("OK:"), r.stdout + r.stderr

        # A token planted for the admin: whoever chose it acts as the admin.
        planted = "ct_" + "7" * 64
        tid = log.sql(("INSERT INTO tokens (user_id, token_sha256, note, issued_by)"
                       " VALUES (%s, sha256(convert_to(%s, 'UTF8')), 'bootstrap', %s) RETURNING id",
                       (w.admin.id, planted, w.admin.id)))[0][0]
        me = caller(addr, planted)
        assert me.user_id == w.admin.id and me.role == S.common_pb2.ROLE_ADMIN, me
        tampered("token planted for the admin", log, None,
                 f"user {w.admin.id}: token {tid} exists, but no token.issue event of the user logged it: "
                 "the row was inserted")
        log.sql(f"DELETE FROM tokens WHERE id = {tid}")
        assert log.verify().returncode == 0
        deleted_and_put_back(log, "tokens", lost.token_id, "token deleted", token_event(log, "token.issue", lost.token_id),
                             f"(user #{lead.id}, token.issue)", f"token {lost.token_id} is gone: the row was deleted")
    finally:
        log.close()


def test_demo_tokens_verify():
    """`clued bootstrap --demo-tokens` issues each demo user its own token through the same
    logged function as IssueMyToken: its log verifies, and a demo token moved to another user
    is named."""
    pg = harness.Postgres.get()
    db = pg.new_database()
    srv = harness.Clued(pg.url(db), args=["--audit-signing-key", KEY, "--checkpoint-every", "1000",
                                          "--checkpoint-interval", "200ms"]).start()
    conn = pg.connect(db)
    conn.autocommit = True
    path, cp = os.path.join(TMP, db + ".demo"), os.path.join(TMP, db + ".cp")
    try:
        srv.run("bootstrap", "--demo-tokens", path)
        demo = {}
        with open(path) as f:
            for line in f:
                code, role, _, token = line.split()
                demo[(code, role)] = token
        env = {"CLUED_SERVER": srv.addr, "CLUED_TOKEN": demo[("ADM", "AUDITOR")]}
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM audit_events")
            n = cur.fetchone()[0]
        auditor = world.User(srv.addr, 0, "?", "?", None, demo[("ADM", "AUDITOR")])
        try:
            a = S.audit_pb2_grpc.AuditServiceStub(auditor.channel)
            harness.wait_for(lambda: cp_size(a, auditor.metadata) == n, timeout=180, what="a checkpoint")
        finally:
            auditor.close()
        harness.cluectl("audit", "checkpoint", "--out", cp, env=env, check=0)

        def verify():
            return harness.cluectl("audit", "verify", "--checkpoint", cp, "--key", KEY + ".pub", env=env)

        r = verify()
        assert r.returncode == 0 and r.stdout.startswith("OK:"), r.stdout + r.stderr
        member = caller(srv.addr, demo[("G01", "MEMBER")])
        leader = caller(srv.addr, demo[("G01", "LEADER")])
        with conn.cursor() as cur:
            cur.execute("SELECT seq FROM audit_events WHERE action = 'token.issue'"
                        " AND details::jsonb->>'token_id' = %s", (str(member.token_id),))
            seq = cur.fetchone()[0]
            cur.execute("BEGIN; ALTER TABLE tokens DISABLE TRIGGER ALL;"
                        " UPDATE tokens SET user_id = %s WHERE id = %s;"
                        " ALTER TABLE tokens ENABLE TRIGGER ALL; COMMIT", (leader.user_id, member.token_id))
        r = verify()
        assert r.returncode == 1 and re.search(rf"\bseq {seq}\b", r.stdout), r.stdout + r.stderr
        msg = f"token {member.token_id}'s user is {leader.user_id}, but its events say {member.user_id}"
        assert msg in r.stdout, r.stdout
        REPORT.append(("demo token moved to another user", r.stdout.strip()))
    finally:
        conn.close()
        srv.stop()

def test_unknown_action_explains_nothing():
    """An event of an action cluectl does not know, appended by the superuser at the tail of a
    user's, a unit's or a rectification item's chain with empty details, changes nothing the
    verifier expects of the row: the log verifies while the row is as its known events say,
    and a role, liaison room or state then written into the row is named at that event, with
    its action."""
    log = Log()
    try:
        w, rp = log.w, S.rectification_pb2
        g1 = w.G1
        day = 86400 * 1000
        item = g1.leader.rect.CreateItem(rp.CreateItemRequest(
            host_unit="市发展改革委", description="政府采购未按规定公开", category="财务管理",
            source=rp.RECTIFICATION_SOURCE_SUPERVISION, deadline_ms=(int(harness.time.time()) // 86400 + 30) * day,
            request_id=new_request_id()), timeout=20)
        for kind, sid, action, table, change, words in [
            ("user", g1.member.id, "user.touch", "users", "role = 'LEADER'",
             "the user's role is LEADER, but its events say MEMBER"),
            ("unit", w.G3.id, "unit.touch", "units", f"liaison_room_id = {w.R1.id}",
             f"the unit's liaison room is {w.R1.id}, but its events say {w.R2.id}"),
            ("rectification", item.id, "rect.touch", "rect_items",
             "state = 'VERIFIED', verified_at = now(), description = '已整改完毕'",
             "the item's state is VERIFIED, but its events say OPEN"),
        ]:
            seq, = log.one("SELECT (audit_append(NULL, NULL, %s, %s, %s, NULL, NULL, NULL, NULL, '{}')).seq",
                           action, kind, sid)
            log.cp = log.save_checkpoint()  # the event alone changes nothing: verifies OK
            cols = re.sub(r" = [^,]*", "", change)
            log.sql(f"CREATE TABLE kept AS SELECT {cols} FROM {table} WHERE id = {sid}",
                    f"UPDATE {table} SET {change} WHERE id = {sid}")
            tampered(f"{kind} row changed after an event of an unknown action", log, seq,
                     f"({kind} #{sid}, {action}): {words}", f"seq {seq}'s action, {action}, is not one this cluectl knows")
            log.sql(f"UPDATE {table} t SET ({cols}) = (SELECT {cols} FROM kept) WHERE t.id = {sid}", "DROP TABLE kept")
            r = log.verify()
            assert r.returncode == 0 and r.stdout.startswith("OK:"), r.stdout + r.stderr
    finally:
        log.close()


def test_case_clues_against_the_clues_row():
    """A case_clues row is what GetJointCase lists, clues.joint_case_id what the clue's events
    are checked against and what the visibility rules read. One planted for another unit's clue
    shows nothing to the case's members and is named; one deleted under a clue whose row names
    the case is named too."""
    log = Log()
    try:
        w, cp = log.w, S.case_pb2
        c1 = log.clues[1]
        case = w.R1.leader.case.CreateJointCase(cp.CreateJointCaseRequest(
            title="联合办案", basis="室组地联合", participant_unit_ids=[w.G1.id], clue_ids=[c1],
            request_id=new_request_id()), timeout=20)
        secret = w.G3.member.clue.SubmitClue(pb.SubmitClueRequest(
            request_id=new_request_id(), title="G3机密线索", summary="G3 独有", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
            subject=pb.SubjectPerson(name="赵六"), host_unit="市卫生健康委"), timeout=20).id
        log.cp = log.save_checkpoint()  # verifies OK

        def listed():
            jc = w.G1.member.case.GetJointCase(cp.GetJointCaseRequest(case_id=case.id), timeout=10)
            return [c.clue_id for c in jc.clues]

        assert listed() == [c1]
        log.sql(("INSERT INTO case_clues (clue_id, case_id, owner_unit, added_by, added_at)"
                 " SELECT id, %s, owner_unit, created_by, now() FROM clues WHERE id = %s", (case.id, secret)))
        assert listed() == [c1], "a planted case_clues row shows another unit's clue"
        tampered("case_clues row planted for another unit's clue", log, None,
                 f"joint case {case.id}: clue {secret} is listed in it, but the clue's row, which its events are "
                 "checked against, does not name the case: the row was inserted")
        log.sql(f"DELETE FROM case_clues WHERE clue_id = {secret}")
        assert log.verify().returncode == 0
        log.sql(f"CREATE TABLE kept AS SELECT * FROM case_clues WHERE clue_id = {c1}",
                f"DELETE FROM case_clues WHERE clue_id = {c1}")
        tampered("case_clues row deleted under a clue that names the case", log, None,
                 f"joint case {case.id}: clue {c1} is not listed in it, though the clue's row names the case: "
                 "the row was deleted")
        log.sql("INSERT INTO case_clues SELECT * FROM kept", "DROP TABLE kept")
        r = log.verify()
        assert r.returncode == 0 and r.stdout.startswith("OK:"), r.stdout + r.stderr
        assert listed() == [c1]
    finally:
        log.close()


def test_unreadable_values_in_a_covered_event():
    """A covered event given a value the export's SQL cannot cast (a note id "abc", a time of
    'infinity') is named by its seq, by every verify, instead of failing the whole export."""
    log = Log()
    try:
        seq, _ = note_add_event(log, log.clues[0])
        log.sql(f"CREATE TABLE kept AS SELECT * FROM audit_events WHERE seq = {seq}",
                "UPDATE audit_events SET details = (details::jsonb || '{\"note_id\": \"abc\"}'::jsonb)::text"
                f" WHERE seq = {seq}")
        tampered("note id of a covered note.add made \"abc\"", log, seq, "the event does not match its leaf")
        log.sql(f"UPDATE audit_events SET details = kept.details, at = 'infinity' FROM kept WHERE audit_events.seq = {seq}")
        tampered("time of a covered event made 'infinity'", log, seq, "the event does not match its leaf")
        r = harness.cluectl("audit", "verify", env=log.env(), check=1)
        assert re.search(rf"\bat event {seq}: CHANGED_CONTENT\b", r.stdout), r.stdout + r.stderr
        a = S.audit_pb2_grpc.AuditServiceStub(log.w.auditor.channel)
        v = a.VerifyAuditChain(AU.VerifyAuditChainRequest(), metadata=log.w.auditor.metadata, timeout=30)
        assert not v.ok and (v.broken.seq == seq or re.search(rf"\bseq {seq}\b", v.tree_problem)), v
        log.sql(f"UPDATE audit_events SET at = kept.at FROM kept WHERE audit_events.seq = {seq}", "DROP TABLE kept")
        r = log.verify()
        assert r.returncode == 0 and r.stdout.startswith("OK:"), r.stdout + r.stderr
    finally:
        log.close()


def test_events_past_the_tree_are_told_in_the_ok_line():
    """With the builder locked out (as the superuser can), an event logged after the tree is
    not checked, nor the row whose latest event it is: verify's OK line says so, naming it,
    instead of passing over it."""
    log = Log()
    lock = log.pg.connect(log.dbname)
    lock.autocommit = False
    try:
        with lock.cursor() as cur:
            cur.execute("SELECT FROM audit_tree_lock FOR UPDATE")  # the builder's (0063)
        log.w.G1.member.clue.AddNote(pb.AddNoteRequest(clue_id=log.clues[0], kind=pb.NOTE_KIND_OTHER, text="锁定后",
                                                       request_id=new_request_id()), timeout=20)
        seq, = log.one("SELECT max(seq) FROM audit_events")
        r = log.verify()
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"; seq {seq} and the events after it are not in the tree yet" in r.stdout, r.stdout
    finally:
        lock.close()
        log.close()


def test_report():
    # The list the closing note asks for: each tampering with its detection message.
    for name, msg in REPORT:
        print(f"{name}\n    {msg}")
    assert len(REPORT) == 117


if __name__ == "__main__":
    harness.run_tests(dict(globals()))
