"""Replacing the audit log's signing key (docs/AUDIT.md, "Replacing the signing key"), against
the real clued: a new `clued keygen`, a restart with --audit-signing-key NEW and
--audit-previous-key OLD.pub; the tree goes on growing under the new key, checkpoints of the
old key still verify with it, `audit verify --checkpoint` and the witness follow the sequence
from the old key into the new one when given both. A latest checkpoint signed by a key the
builder does not hold (the flag forgotten, a wrong previous key, a second instance with
another key) halts the builder with a message naming the keys, not a tampering alarm; a tree
that contradicts a checkpoint of the previous key, or of the new one, is still tampering."""

import os
import re
import subprocess
import sys
import tempfile
import time


sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import new_request_id  # noqa: E402
import tlog  # noqa: E402
import world  # noqa: E402
from test_audit_tree import cp_size  # noqa: E402

S = harness.stubs()
AU = S.audit_pb2
pb = S.clue_pb2
TMP = tempfile.mkdtemp(prefix="clued-rotation-")
NAME = "clued.test/audit"  # every key here has the same name: only the key id tells them apart


def keygen(label):
    key = os.path.join(TMP, f"{label}-{time.monotonic_ns()}.key")
    subprocess.run([harness.CLUED, "keygen", "--name", NAME, "--out", key], check=True, capture_output=True)
    vkey = open(key + ".pub").read().strip()
    return key, vkey


def label(vkey):
    """name+id, as clued and cluectl name a key."""
    return "+".join(vkey.split("+")[:2])




def signed_by(note, vkey):
    try:
        tlog.open_checkpoint(note, vkey)
        return True
    except (AssertionError, ValueError, Exception):
        return False


class Log:
    """A fresh database served by clued with key (and previous key, if any), the world built on
    it, and a few clues."""

    def __init__(self, key):
        self.pg = harness.Postgres.get()
        self.dbname = self.pg.new_database()
        self.url = self.pg.url(self.dbname)
        self.srv = harness.Clued(self.url, args=self.args(key)).start()
        self.w = world.build(self.srv)
        self.db = self.pg.connect(self.dbname)
        self.submit(3)

    @staticmethod
    def args(key, previous=None):
        a = ["--audit-signing-key", key, "--checkpoint-every", "1000", "--checkpoint-interval", "200ms"]
        return a + (["--audit-previous-key", previous] if previous else [])

    def restart(self, key, previous=None):
        self.w.close()
        self.srv.stop()
        self.srv = harness.Clued(self.url, args=self.args(key, previous)).start(migrate=False)
        self.rebind(self.srv)

    def rebind(self, srv):
        seen = set()
        for u in [*self.w.users, self.w.admin, self.w.auditor]:
            if id(u) not in seen:
                seen.add(id(u))
                u.__init__(srv.addr, u.id, u.name, u.role, u.unit, u.token)

    def submit(self, n, tag="线索"):
        g = self.w.G1
        for i in range(n):
            g.member.clue.SubmitClue(pb.SubmitClueRequest(
                request_id=new_request_id(), title=f"{tag}{i}", summary="反映某某违规收受礼金",
                source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=pb.SubjectPerson(name="张三"),
                host_unit="市发展改革委"), timeout=20)

    def audit(self):
        return S.audit_pb2_grpc.AuditServiceStub(self.w.auditor.channel), self.w.auditor.metadata

    def nevents(self):
        return len(tlog.rows(self.db))

    def wait_signed(self, what="a checkpoint of the whole log"):
        a, md = self.audit()
        n = self.nevents()
        harness.wait_for(lambda: cp_size(a, md) == n, timeout=60, what=what)
        return n

    def latest_note(self):
        a, md = self.audit()
        return a.GetCheckpoint(AU.GetCheckpointRequest(), metadata=md)

    def env(self):
        return {"CLUED_SERVER": self.srv.addr, "CLUED_TOKEN": self.w.auditor.token}

    def ctl(self, *args, check=None):
        return harness.cluectl(*args, env=self.env(), check=check)

    def checkpoints(self):
        with self.db.cursor() as cur:
            cur.execute("SELECT tree_size, note FROM audit_checkpoints ORDER BY tree_size")
            return cur.fetchall()

    def sql(self, *stmts):
        """As the superuser, with the audit tables' triggers off."""
        tables = ("audit_events", "audit_heads", "audit_leaves", "audit_checkpoints")
        with self.db.cursor() as cur:
            cur.execute("BEGIN")
            for t in tables:
                cur.execute(f"ALTER TABLE {t} DISABLE TRIGGER ALL")
            for s in stmts:
                cur.execute(*s) if isinstance(s, tuple) else cur.execute(s)
            for t in tables:
                cur.execute(f"ALTER TABLE {t} ENABLE TRIGGER ALL")
            cur.execute("COMMIT")

    def one_leaf(self, idx):
        with self.db.cursor() as cur:
            cur.execute("SELECT seq, idx FROM audit_leaves WHERE idx = %s", (idx,))
            return cur.fetchone()

    def close(self):
        self.w.close()
        self.db.close()
        self.srv.stop()


TAMPERING = "the stored tree was changed"


def test_rotation_end_to_end():
    """The documented procedure: the old key's checkpoints stay valid under it, the new
    key signs from the restart on, the tree keeps growing, a saved checkpoint of the old key
    verifies against the server's latest of the new one given both keys, and a witness given
    both follows into the new key and then needs only its own DIR."""
    a_key, a_vkey = keygen("a")
    b_key, b_vkey = keygen("b")
    log = Log(a_key)
    try:
        before = log.wait_signed()
        cp_a = os.path.join(TMP, f"{log.dbname}-a.cp")
        log.ctl("audit", "checkpoint", "--out", cp_a, check=0)
        wd = os.path.join(TMP, f"{log.dbname}-witness")
        log.ctl("audit", "witness", "--dir", wd, "--once", check=0)
        assert open(os.path.join(wd, "key.pub")).read().strip() == a_vkey

        # Rotation: the new key, and the old key's verifier key as the previous one.
        log.restart(b_key, previous=a_key + ".pub")
        harness.wait_for(lambda: "is signed by the previous key " + label(a_vkey) in log.srv.output(),
                         timeout=30, what="the builder accepting the previous key's checkpoint")
        log.submit(3, "新钥")
        after = log.wait_signed("a checkpoint under the new key")
        assert after > before
        latest = log.latest_note()
        assert signed_by(latest.note, b_vkey) and not signed_by(latest.note, a_vkey), latest.note
        assert latest.verifier_key == b_vkey
        harness.wait_for(lambda: "--audit-previous-key is no longer needed" in log.srv.output(), timeout=10,
                         what="the log saying the flag may go")
        assert TAMPERING not in log.srv.output()
        # Every checkpoint before the rotation verifies with the old key, every one after with
        # the new one; one tree under both.
        cps = log.checkpoints()
        assert all(signed_by(note, a_vkey) for n, note in cps if n <= before)
        assert all(signed_by(note, b_vkey) for n, note in cps if n > before)
        leaves = [tlog.leaf_hash_of_row(r) for r in tlog.rows(log.db)]
        assert all(tlog.open_checkpoint(note, a_vkey if n <= before else b_vkey)[2] == tlog.mth(leaves[:n])
                   for n, note in cps)
        # The server's own check, and the old checkpoint of that size as GetCheckpoint gives it.
        assert log.ctl("audit", "verify", check=0).stdout.startswith("OK:")
        a, md = log.audit()
        old = a.GetCheckpoint(AU.GetCheckpointRequest(tree_size=before), metadata=md)
        assert old.verifier_key == a_vkey, old

        # verify --checkpoint across the rotation: both keys given.
        r = log.ctl("audit", "verify", "--checkpoint", cp_a, "--key", a_key + ".pub", "--key", b_key + ".pub",
                    check=0)
        assert r.stdout.startswith(f"OK: checkpoint of {before} events verified (signed by {label(a_vkey)}; "
                                   f"the server's latest checkpoint by {label(b_vkey)})"), r.stdout
        # The old key alone: the new checkpoint is named by its key, with what to do.
        r = log.ctl("audit", "verify", "--checkpoint", cp_a, "--key", a_key + ".pub", check=1)
        assert "is not signed by " + label(a_vkey) in r.stdout, r.stdout
        assert f"it is signed by key {label(b_vkey)}" in r.stdout and "--key" in r.stdout, r.stdout

        # The witness: with its DIR alone (the old key) it stops at the new key, naming it...
        r = log.ctl("audit", "witness", "--dir", wd, "--once", check=1)
        assert f"it is signed by key {label(b_vkey)}" in r.stdout, r.stdout
        # ... given both keys it keeps the new checkpoint, consistent with the old one kept...
        r = log.ctl("audit", "witness", "--dir", wd, "--once", "--key", a_key + ".pub", "--key", b_key + ".pub",
                    check=0)
        assert "consistent with the last one kept" in r.stdout, r.stdout
        assert "the server's key was replaced" in r.stdout, r.stdout
        assert open(os.path.join(wd, "key.pub")).read().strip() == b_vkey
        # ... and from then on follows with its DIR alone.
        log.submit(2, "再")
        log.wait_signed()
        r = log.ctl("audit", "witness", "--dir", wd, "--once", check=0)
        assert "consistent with the last one kept" in r.stdout, r.stdout

        # The flag dropped: the new key alone goes on.
        log.restart(b_key)
        log.submit(2, "无旗")
        log.wait_signed("a checkpoint once the flag is dropped")
        assert TAMPERING not in log.srv.output() and "is signed by key" not in log.srv.output()
        r = log.ctl("audit", "verify", "--checkpoint", cp_a, "--key", a_key + ".pub", "--key", b_key + ".pub",
                    check=0)
        assert r.stdout.startswith("OK:"), r.stdout
        r = log.ctl("audit", "witness", "--dir", wd, "--once", check=0)
        assert "consistent with the last one kept" in r.stdout, r.stdout
    finally:
        log.close()


def test_a_replaced_key_without_the_previous_one_halts_and_says_which_key():
    """The probe's case: restarted with a new key alone. Not tampering: the log names the key
    that signed the latest checkpoint and this server's, and says what to do; nothing is
    signed over the checkpoint it cannot check, until it is restarted with the previous key."""
    a_key, a_vkey = keygen("a")
    b_key, b_vkey = keygen("b")
    log = Log(a_key)
    try:
        before = log.wait_signed()
        log.restart(b_key)
        want = (f"the latest checkpoint is signed by key {label(a_vkey)}, not this server's {label(b_vkey)}: "
                "if the key was replaced, start with --audit-previous-key OLD.pub")
        harness.wait_for(lambda: want in log.srv.output(), timeout=30, what="the builder naming the keys")
        log.submit(3, "停")
        time.sleep(2.0)  # ten times --checkpoint-interval
        a, md = log.audit()
        assert cp_size(a, md) == before, "a checkpoint was signed over one the builder could not check"
        out = log.srv.output()
        assert TAMPERING not in out, out
        v = a.VerifyAuditChain(AU.VerifyAuditChainRequest(), metadata=md)
        assert not v.ok and label(a_vkey) in v.tree_problem and "cannot check" in v.tree_problem, v
        # Restarted with the previous key, it builds on.
        log.restart(b_key, previous=a_key + ".pub")
        log.wait_signed("a checkpoint once the previous key is given")
        assert signed_by(log.latest_note().note, b_vkey)
    finally:
        log.close()


def test_two_instances_with_different_keys():
    """A second instance started with another key (a misconfiguration): its log says which key
    signed the checkpoint and that it builds nothing, with no claim of tampering; the first
    goes on building."""
    a_key, a_vkey = keygen("a")
    b_key, b_vkey = keygen("b")
    log = Log(a_key)
    b = None
    try:
        log.wait_signed()
        b = harness.Clued(log.url, args=Log.args(b_key)).start(migrate=False)
        harness.wait_for(lambda: f"the latest checkpoint is signed by key {label(a_vkey)}, not this server's "
                                 f"{label(b_vkey)}" in b.output(), timeout=30, what="the second instance's finding")
        log.submit(4, "双")
        n = log.wait_signed("the first instance building on")
        assert signed_by(log.latest_note().note, a_vkey)
        assert TAMPERING not in b.output() and TAMPERING not in log.srv.output()
        with log.db.cursor() as cur:
            cur.execute("SELECT count(*) FROM audit_leaves")
            assert cur.fetchone()[0] == n
    finally:
        if b:
            b.stop()
        log.close()


def test_a_wrong_previous_key_is_refused():
    """--audit-previous-key naming a key that did not sign the latest checkpoint: the builder
    names all three and signs nothing. A previous key without a signing key, or the signing
    key's own, stops the server at start."""
    a_key, a_vkey = keygen("a")
    b_key, b_vkey = keygen("b")
    c_key, c_vkey = keygen("c")
    log = Log(a_key)
    try:
        before = log.wait_signed()
        log.restart(b_key, previous=c_key + ".pub")
        want = (f"the latest checkpoint is signed by key {label(a_vkey)}, not this server's {label(b_vkey)} nor the "
                f"previous key {label(c_vkey)} given with --audit-previous-key: --audit-previous-key must be the "
                "verifier key of the key that signed it")
        harness.wait_for(lambda: want in log.srv.output(), timeout=30, what="the wrong previous key named")
        log.submit(2, "错")
        time.sleep(2.0)
        a, md = log.audit()
        assert cp_size(a, md) == before
        assert TAMPERING not in log.srv.output()
        log.w.close()
        log.srv.stop()
        probe = harness.Clued(log.url)
        r = probe.run("serve", "--listen", "127.0.0.1:0", "--audit-previous-key", a_key + ".pub", check=False)
        assert r.returncode != 0 and "--audit-previous-key goes with --audit-signing-key" in r.stderr, r.stderr
        r = probe.run("serve", "--listen", "127.0.0.1:0", *Log.args(b_key, previous=b_key + ".pub"), check=False)
        assert r.returncode != 0 and "is the verifier key of --audit-signing-key itself" in r.stderr, r.stderr
        r = probe.run("serve", "--listen", "127.0.0.1:0", *Log.args(b_key, previous=os.path.join(TMP, "none.pub")),
                      check=False)
        assert r.returncode != 0 and "--audit-previous-key: cannot open" in r.stderr, r.stderr
        log.srv = harness.Clued(log.url, args=Log.args(a_key)).start(migrate=False)
        log.rebind(log.srv)
    finally:
        log.close()


def test_tampering_is_still_detected_across_a_rotation():
    """A tree rewritten under the previous key's checkpoint before the rotation's restart is
    refused as tampering (the previous key vouches only for the tree its checkpoint signed);
    after the rotation, an event changed under the old key's saved checkpoint is named by
    verify --checkpoint given both keys, and a tree rewritten under a checkpoint of the new
    key is refused by the builder."""
    a_key, a_vkey = keygen("a")
    b_key, b_vkey = keygen("b")
    # 1. Rewritten while the key is replaced.
    log = Log(a_key)
    try:
        before = log.wait_signed()
        log.w.close()
        log.srv.stop()
        seq, idx = log.one_leaf(before - 1)
        log.sql(("UPDATE audit_leaves SET leaf = sha256('x'::bytea) WHERE idx = %s", (idx,)))
        log.srv = harness.Clued(log.url, args=Log.args(b_key, previous=a_key + ".pub")).start(migrate=False)
        log.rebind(log.srv)
        harness.wait_for(lambda: TAMPERING in log.srv.output(), timeout=30, what="the builder's finding")
        log.submit(2, "篡")
        time.sleep(2.0)
        a, md = log.audit()
        assert cp_size(a, md) == before, "signed over a tree the previous key's checkpoint contradicts"
    finally:
        log.close()
    # 2. Rewritten after it.
    log = Log(a_key)
    try:
        log.wait_signed()
        cp_a = os.path.join(TMP, f"{log.dbname}-a.cp")
        log.ctl("audit", "checkpoint", "--out", cp_a, check=0)
        log.restart(b_key, previous=a_key + ".pub")
        log.submit(2, "后")
        log.wait_signed()
        keys = ["--key", a_key + ".pub", "--key", b_key + ".pub"]
        assert log.ctl("audit", "verify", "--checkpoint", cp_a, *keys, check=0).stdout.startswith("OK:")
        seq = tlog.rows(log.db)[2]["seq"]
        log.sql(("UPDATE audit_events SET reason = '改写' WHERE seq = %s", (seq,)))
        r = log.ctl("audit", "verify", "--checkpoint", cp_a, *keys, check=1)
        assert r.stdout.startswith("FAIL: ") and re.search(rf"\bseq {seq}\b", r.stdout), r.stdout
        # The leaf rewritten with it, under the new key's checkpoint, and clued restarted with
        # the new key alone: the builder refuses the tree.
        row = [x for x in tlog.rows(log.db) if x["seq"] == seq][0]
        log.sql(("UPDATE audit_leaves SET leaf = %s WHERE seq = %s", (tlog.leaf_hash_of_row(row), seq)))
        log.restart(b_key)
        harness.wait_for(lambda: TAMPERING in log.srv.output(), timeout=30, what="the builder's finding")
        assert "the latest checkpoint's row" not in log.srv.output()
        r = log.ctl("audit", "verify", "--checkpoint", cp_a, *keys, check=1)
        assert r.stdout.startswith("FAIL: ") and "fork" in r.stdout, r.stdout
    finally:
        log.close()


if __name__ == "__main__":
    harness.run_tests(dict(globals()))
