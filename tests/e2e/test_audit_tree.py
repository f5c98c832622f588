"""The audit log's Merkle tree against the real clued: leaves recomputed independently from
the rows, inclusion and consistency proofs compared with tlog.py's own RFC 9162
implementation for every tree size 1..300 and random pairs, checkpoints verified with
Python's Ed25519 (and OpenSSL), who may call what, bad arguments, and two instances that
append concurrently building exactly one tree with no seq missing."""

import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time

import grpc

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import expect_status  # noqa: E402
import tlog  # noqa: E402
import world  # noqa: E402

S = harness.stubs()
AU = S.audit_pb2
FAKE = 500000  # subject ids of events appended straight through audit_append()
# Waits are long on purpose: a rolled-back seq is decided only once the cluster's oldest
# running transaction (xmin, across every database: other tests' too) has passed it.


def cp_size(stub, md):
    """The latest checkpoint's size, 0 while none is published."""
    try:
        return stub.GetCheckpoint(AU.GetCheckpointRequest(), metadata=md).tree_size
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.NOT_FOUND:
            return 0
        raise


class Ctx:
    pass


def keygen(d, name="clued.test/audit"):
    key = os.path.join(d, "audit.key")
    r = subprocess.run([harness.CLUED, "keygen", "--name", name, "--out", key], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert oct(os.stat(key).st_mode & 0o777) == "0o600"
    vkey = open(key + ".pub").read().strip()
    assert r.stdout.strip() == vkey
    return key, vkey


def append(conn, n, subject=FAKE, rollback_every=0):
    """n events through audit_append() (as clued's SQL functions do), some rolled back."""
    cur = conn.cursor()
    for i in range(n):
        if rollback_every and i % rollback_every == rollback_every - 1:
            cur.execute("BEGIN")
            cur.execute("SELECT audit_append(1, 1, 'test.rolled_back', 'clue', %s, 1, NULL, NULL, 'x', '{}')",
                        (subject,))
            cur.execute("ROLLBACK")
            continue
        cur.execute("SELECT audit_append(NULL, NULL, 'test.event', 'clue', %s, %s, NULL, NULL, %s, %s::jsonb)",
                    (subject + i % 7, 1 if i % 3 else None, f"reason {i}", '{"i": %d}' % i))


def tree_size(stub, md):
    try:
        return stub.GetConsistencyProof(AU.GetConsistencyProofRequest(old_size=1), metadata=md).new_size
    except grpc.RpcError as e:
        if e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAVAILABLE):
            return 0
        raise


def wait_tree(stub, md, n, timeout=180):
    harness.wait_for(lambda: tree_size(stub, md) >= n, timeout=timeout, what=f"tree of {n} leaves")


def setup():
    c = Ctx()
    c.tmp = tempfile.mkdtemp(prefix="clued-tree-")
    c.key, c.vkey = keygen(c.tmp)
    world.served(c, args=["--audit-signing-key", c.key, "--checkpoint-every", "64", "--checkpoint-interval", "300ms"])
    c.ch = grpc.insecure_channel(c.srv.addr)
    c.audit = S.audit_pb2_grpc.AuditServiceStub(c.ch)
    c.md = list(c.w.auditor.metadata)
    return c


def teardown(c):
    c.ch.close()
    world.unserve(c)


def export_all(c, md=None):
    out, after = [], 0
    while True:
        r = c.audit.ExportAuditEvents(AU.ExportAuditEventsRequest(after_seq=after, page_size=97),
                                      metadata=md or c.md)
        out += list(r.events)
        if r.events:
            after = r.events[-1].seq
        if r.done or not r.events:
            return out, r


def test_leaves_match_an_independent_encoding(c):
    while len(tlog.rows(c.db)) < 300:
        append(c.db, 300 - len(tlog.rows(c.db)), rollback_every=11)
    rows = tlog.rows(c.db)
    assert len(rows) >= 300
    wait_tree(c.audit, c.md, len(rows))
    evs, last = export_all(c)
    assert [e.seq for e in evs] == [r["seq"] for r in rows]
    assert [e.leaf_index for e in evs] == list(range(len(rows)))
    for e, r in zip(evs, rows):
        assert not e.missing and not e.redacted
        assert e.leaf_hash == tlog.leaf_hash_of_row(r), f"leaf of seq {e.seq}"
    c.leaves = [tlog.leaf_hash_of_row(r) for r in rows]
    c.rows = rows


def test_proofs_match_rfc9162_for_sizes_1_to_300(c):
    d = c.leaves[:300]
    rnd = random.Random(12)
    for n in range(1, 301):
        m = rnd.randrange(n)
        p = c.audit.GetInclusionProof(AU.GetInclusionProofRequest(seq=c.rows[m]["seq"], tree_size=n),
                                      metadata=c.md)
        assert p.leaf_index == m and p.tree_size == n
        assert p.leaf_hash == d[m]
        assert list(p.hashes) == tlog.path(m, d[:n]), f"inclusion {m} in {n}"
        assert p.root_hash == tlog.mth(d[:n])
        m = rnd.randint(1, n)
        q = c.audit.GetConsistencyProof(AU.GetConsistencyProofRequest(old_size=m, new_size=n), metadata=c.md)
        assert list(q.hashes) == tlog.proof(m, d[:n]), f"consistency {m} -> {n}"
        assert q.old_root == tlog.mth(d[:m]) and q.new_root == tlog.mth(d[:n])
    # Random pairs, and every leaf of some sizes.
    for _ in range(200):
        n = rnd.randint(1, 300)
        m = rnd.randint(1, n)
        q = c.audit.GetConsistencyProof(AU.GetConsistencyProofRequest(old_size=m, new_size=n), metadata=c.md)
        assert list(q.hashes) == tlog.proof(m, d[:n]), f"consistency {m} -> {n}"
    for n in (1, 2, 3, 7, 8, 9, 255, 256, 257, 300):
        for m in range(n):
            p = c.audit.GetInclusionProof(AU.GetInclusionProofRequest(seq=c.rows[m]["seq"], tree_size=n),
                                          metadata=c.md)
            assert list(p.hashes) == tlog.path(m, d[:n])


def test_checkpoints_are_signed_notes_python_and_openssl_verify(c):
    harness.wait_for(lambda: cp_size(c.audit, c.md)
                     >= len(c.rows), timeout=180, what="a checkpoint of the whole log")
    cp = c.audit.GetCheckpoint(AU.GetCheckpointRequest(), metadata=c.md)
    assert cp.verifier_key == c.vkey
    origin, size, root = tlog.open_checkpoint(cp.note, c.vkey)
    assert origin == "clued.test/audit" and size == cp.tree_size and root == cp.root_hash
    assert root == tlog.mth(c.leaves[:size])
    # Every checkpoint published (every 64 leaves or 300 ms) verifies and roots its prefix.
    with c.db.cursor() as cur:
        cur.execute("SELECT tree_size, note FROM audit_checkpoints ORDER BY tree_size")
        cps = cur.fetchall()
    assert len(cps) >= 2
    for n, note in cps:
        _, size, root = tlog.open_checkpoint(note, c.vkey)
        assert size == n and root == tlog.mth(c.leaves[:n])
        assert c.audit.GetCheckpoint(AU.GetCheckpointRequest(tree_size=n), metadata=c.md).note == note
    # OpenSSL checks the same signature, from the raw public key wrapped as SPKI.
    import base64
    _, kid, pub = tlog.parse_vkey(c.vkey)
    body, sig = cp.note.rsplit("\n\n", 1)
    raw = base64.b64decode(sig.strip().split(" ")[2])[4:]
    spki = bytes.fromhex("302a300506032b6570032100") + pub
    d = tempfile.mkdtemp(dir=c.tmp)
    for name, data in (("pub.der", spki), ("body", (body + "\n").encode()), ("sig", raw)):
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    r = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", os.path.join(d, "pub.der"),
                        "-keyform", "DER", "-rawin", "-in", os.path.join(d, "body"), "-sigfile",
                        os.path.join(d, "sig")], capture_output=True, text=True)
    assert r.returncode == 0 and "Success" in r.stdout, r.stdout + r.stderr
    with open(os.path.join(d, "body"), "ab") as f:
        f.write(b"x")
    r = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", os.path.join(d, "pub.der"),
                        "-keyform", "DER", "-rawin", "-in", os.path.join(d, "body"), "-sigfile",
                        os.path.join(d, "sig")], capture_output=True, text=True)
    assert r.returncode != 0


def test_who_may_call_and_bad_arguments(c):
    for who in (c.w.admin, c.w.auditor):
        c.audit.GetCheckpoint(AU.GetCheckpointRequest(), metadata=who.metadata)
    member = c.w.user("G1", "member")
    for fn, req in ((c.audit.GetCheckpoint, AU.GetCheckpointRequest()),
                    (c.audit.GetInclusionProof, AU.GetInclusionProofRequest(seq=1)),
                    (c.audit.GetConsistencyProof, AU.GetConsistencyProofRequest(old_size=1)),
                    (c.audit.ExportAuditEvents, AU.ExportAuditEventsRequest())):
        expect_status(grpc.StatusCode.PERMISSION_DENIED, fn, req, metadata=member.metadata)
        expect_status(grpc.StatusCode.UNAUTHENTICATED, fn, req)
    n = tree_size(c.audit, c.md)
    bad = [
        (c.audit.GetInclusionProof, AU.GetInclusionProofRequest(seq=0), grpc.StatusCode.INVALID_ARGUMENT),
        (c.audit.GetInclusionProof, AU.GetInclusionProofRequest(seq=1 << 60), grpc.StatusCode.NOT_FOUND),
        (c.audit.GetInclusionProof, AU.GetInclusionProofRequest(seq=c.rows[5]["seq"], tree_size=3),
         grpc.StatusCode.INVALID_ARGUMENT),
        (c.audit.GetInclusionProof, AU.GetInclusionProofRequest(seq=c.rows[5]["seq"], tree_size=-1),
         grpc.StatusCode.INVALID_ARGUMENT),
        (c.audit.GetInclusionProof, AU.GetInclusionProofRequest(seq=c.rows[5]["seq"], tree_size=n + 10),
         grpc.StatusCode.OUT_OF_RANGE),
        (c.audit.GetConsistencyProof, AU.GetConsistencyProofRequest(old_size=0), grpc.StatusCode.INVALID_ARGUMENT),
        (c.audit.GetConsistencyProof, AU.GetConsistencyProofRequest(old_size=5, new_size=4),
         grpc.StatusCode.INVALID_ARGUMENT),
        (c.audit.GetConsistencyProof, AU.GetConsistencyProofRequest(old_size=1, new_size=n + 1),
         grpc.StatusCode.OUT_OF_RANGE),
        (c.audit.GetCheckpoint, AU.GetCheckpointRequest(tree_size=-1), grpc.StatusCode.INVALID_ARGUMENT),
        (c.audit.GetCheckpoint, AU.GetCheckpointRequest(tree_size=1 << 40), grpc.StatusCode.NOT_FOUND),
        (c.audit.ExportAuditEvents, AU.ExportAuditEventsRequest(page_size=-1), grpc.StatusCode.INVALID_ARGUMENT),
        (c.audit.ExportAuditEvents, AU.ExportAuditEventsRequest(after_seq=-1), grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for fn, req, code in bad:
        expect_status(code, fn, req, metadata=c.md)
    assert c.srv.alive()


def test_admin_export_hides_clue_reasons_but_gives_every_leaf(c):
    evs, _ = export_all(c, md=list(c.w.admin.metadata))
    mine, _ = export_all(c)
    assert [e.leaf_hash for e in evs] == [e.leaf_hash for e in mine]
    hidden = [e for e in evs if e.redacted]
    assert hidden and all(e.reason == "" and e.details == "" and e.hash == "" and e.prev_hash == ""
                          for e in hidden)
    assert {e.subject_type for e in hidden} <= {"clue", "case", "proposal"}
    assert all(not e.redacted for e in evs if e.subject_type in ("unit", "user", "token"))
    # The acting token is in the leaf: events made through calls carry it.
    assert any(e.actor_token_id != "" for e in mine)


def test_cluectl_checkpoint_and_verify(c):
    env = {"CLUED_SERVER": c.srv.addr, "CLUED_TOKEN": c.w.auditor.token}
    cp = os.path.join(c.tmp, "cp.txt")
    harness.cluectl("audit", "checkpoint", "--out", cp, env=env, check=0)
    tlog.open_checkpoint(open(cp).read(), c.vkey)
    append(c.db, 40)
    r = harness.cluectl("audit", "verify", "--checkpoint", cp, "--key", c.key + ".pub", env=env, check=0)
    assert r.stdout.startswith("OK: checkpoint of"), r.stdout
    # With --json, the verdict as one JSON object, the exit status the same.
    r = harness.cluectl("audit", "verify", "--checkpoint", cp, "--key", c.key + ".pub", "--json", env=env, check=0)
    got = json.loads(r.stdout)
    assert got["ok"] is True and got["message"].startswith("OK: checkpoint of"), r.stdout
    # The plain verify still works as before.
    r = harness.cluectl("audit", "verify", env=env, check=0)
    assert r.stdout.startswith("OK:")
    # A checkpoint signed by another key is refused.
    other = tempfile.mkdtemp(dir=c.tmp)
    okey, _ = keygen(other, name="clued.test/audit")
    r = harness.cluectl("audit", "verify", "--checkpoint", cp, "--key", okey + ".pub", env=env, check=1)
    assert "not a checkpoint signed by" in r.stdout
    r = harness.cluectl("audit", "verify", "--checkpoint", cp, "--key", okey + ".pub", "--json", env=env, check=1)
    got = json.loads(r.stdout)
    assert got["ok"] is False and "not a checkpoint signed by" in got["message"], r.stdout
    # The witness keeps checkpoints that extend each other.
    wd = os.path.join(c.tmp, "witness")
    r = harness.cluectl("audit", "witness", "--dir", wd, "--once", env=env, check=0)
    first = sorted(os.listdir(wd))
    append(c.db, 70)
    harness.wait_for(lambda: cp_size(c.audit, c.md)
                     == len(tlog.rows(c.db)), timeout=180, what="a new checkpoint")
    r = harness.cluectl("audit", "witness", "--dir", wd, "--once", "--key", c.key + ".pub", env=env, check=0)
    assert "consistent with the last one kept" in r.stdout, r.stdout
    assert len(os.listdir(wd)) == len(first) + 1
    # Beside them, the leaves of the latest, extended from the last ones kept: each the leaf
    # of the row of its seq as tlog.py hashes it, together giving the kept checkpoint's root.
    with open(os.path.join(wd, "leaves")) as f:
        lines = f.read().splitlines()
    _, size, root = tlog.open_checkpoint(open(os.path.join(wd, "latest")).read(), c.vkey)
    assert lines[0] == f"clued-audit-leaves-v1 {size}" and len(lines) == size + 1, lines[:2]
    by_seq = {row["seq"]: tlog.leaf_hash_of_row(row) for row in tlog.rows(c.db)}
    kept = [(int(q), bytes.fromhex(h)) for q, h in (ln.split() for ln in lines[1:])]
    assert all(by_seq[q] == h for q, h in kept)
    assert tlog.mth([h for _, h in kept]) == root


def test_cluectl_witness_json(c):
    """audit witness --json prints, for each poll, one JSON object on one line: what it saw
    (kept, unchanged, fail, error), the sizes, and the line people read."""
    env = {"CLUED_SERVER": c.srv.addr, "CLUED_TOKEN": c.w.auditor.token}
    wd = os.path.join(c.tmp, "witness-json")
    r = harness.cluectl("--json", "audit", "witness", "--dir", wd, "--once", env=env, check=0)
    first = json.loads(r.stdout)
    n = first["tree_size"]
    assert r.stdout.count("\n") == 1 and first == {
        "result": "kept", "tree_size": n, "message": f"kept checkpoint of {n} events"}, r.stdout
    r = harness.cluectl("--json", "audit", "witness", "--dir", wd, "--once", env=env, check=0)
    assert json.loads(r.stdout) == {"result": "unchanged", "tree_size": n, "last_size": n}, r.stdout
    append(c.db, 70)
    harness.wait_for(lambda: cp_size(c.audit, c.md) > n, timeout=180, what="a new checkpoint")
    r = harness.cluectl("--json", "audit", "witness", "--dir", wd, "--once", env=env, check=0)
    j = json.loads(r.stdout)
    m = j["tree_size"]
    assert m > n and j == {"result": "kept", "tree_size": m, "last_size": n, "message":
                           f"kept checkpoint of {m} events, consistent with the last one kept"}, j
    # A checkpoint not signed by the key given: fail, exit 1.
    other = tempfile.mkdtemp(dir=c.tmp)
    okey, _ = keygen(other, name="clued.test/audit")
    r = harness.cluectl("--json", "audit", "witness", "--dir", wd, "--once", "--key", okey + ".pub", env=env,
                        check=1)
    j = json.loads(r.stdout)
    assert j["result"] == "fail" and j["tree_size"] >= m and "last_size" not in j, j
    assert j["message"].startswith(f"FAIL: the server's checkpoint of {j['tree_size']} events is not signed by"), j
    # A poll that cannot reach the server: error, its status, and the report on stderr.
    port = harness.free_port()
    r = harness.cluectl("--json", "audit", "witness", "--dir", wd, "--once",
                        env={**env, "CLUED_SERVER": f"127.0.0.1:{port}"}, check=1)
    assert json.loads(r.stdout) == {"result": "error", "status": "UNAVAILABLE"}, r.stdout
    assert r.stderr.startswith("UNAVAILABLE: connection refused"), r.stderr


def test_server_side_verify_checks_the_tree(c):
    v = c.audit.VerifyAuditChain(AU.VerifyAuditChainRequest(), metadata=c.md)
    assert v.ok and v.checkpoint_size > 0 and v.tree_problem == ""


def test_two_instances_build_one_tree_with_no_seq_missing(c):
    # A second instance with the same key, and writers on many connections at once, some
    # of whose transactions roll back.
    b = harness.Clued(c.url, args=["--audit-signing-key", c.key, "--checkpoint-every", "16",
                                   "--checkpoint-interval", "100ms"]).start(migrate=False)
    try:
        def writer(k):
            conn = c.pg.connect(c.dbname)
            append(conn, 120, subject=FAKE + 1000 * (k + 1), rollback_every=5)
            conn.close()
        ts = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        rows = tlog.rows(c.db)
        ch_b = grpc.insecure_channel(b.addr)
        audit_b = S.audit_pb2_grpc.AuditServiceStub(ch_b)
        wait_tree(c.audit, c.md, len(rows))
        wait_tree(audit_b, c.md, len(rows))
        with c.db.cursor() as cur:
            cur.execute("SELECT idx, seq, leaf FROM audit_leaves ORDER BY idx")
            leaves = cur.fetchall()
        assert [l[0] for l in leaves] == list(range(len(rows)))
        assert [l[1] for l in leaves] == [r["seq"] for r in rows], "every committed seq once, in order"
        assert [bytes(l[2]) for l in leaves] == [tlog.leaf_hash_of_row(r) for r in rows]
        root = tlog.mth([bytes(l[2]) for l in leaves])
        for stub in (c.audit, audit_b):
            q = stub.GetConsistencyProof(AU.GetConsistencyProofRequest(old_size=1, new_size=len(rows)),
                                         metadata=c.md)
            assert q.new_root == root
        # Every checkpoint either instance published roots a prefix of that one tree.
        with c.db.cursor() as cur:
            cur.execute("SELECT tree_size, note FROM audit_checkpoints ORDER BY tree_size")
            for n, note in cur.fetchall():
                assert tlog.open_checkpoint(note, c.vkey)[2] == tlog.mth([bytes(l[2]) for l in leaves[:n]])
        ch_b.close()
    finally:
        b.stop()


def test_keygen_never_writes_through_a_link_and_warns_of_a_readable_key(c):
    d = tempfile.mkdtemp(prefix="clued-keygen-", dir=c.tmp)

    def keygen_at(name):
        return subprocess.run([harness.CLUED, "keygen", "--out", os.path.join(d, name)],
                              capture_output=True, text=True)
    # FILE.pub already there, here a symlink to another file: refused, the file untouched,
    # and no signing key left behind without its verifier key.
    victim = os.path.join(d, "victim.txt")
    with open(victim, "w") as f:
        f.write("important\n")
    os.symlink(victim, os.path.join(d, "k1.pub"))
    r = keygen_at("k1")
    assert r.returncode != 0 and "cannot create" in r.stderr and "k1.pub" in r.stderr, r.stderr
    assert open(victim).read() == "important\n"
    assert not os.path.exists(os.path.join(d, "k1"))
    # FILE.pub cannot be created: the signing key is removed, so a retry works.
    os.mkdir(os.path.join(d, "k2.pub"))
    r = keygen_at("k2")
    assert r.returncode != 0 and not os.path.exists(os.path.join(d, "k2")), r.stderr
    os.rmdir(os.path.join(d, "k2.pub"))
    old = os.umask(0o022)
    try:
        r = keygen_at("k2")
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr
    key = os.path.join(d, "k2")
    assert oct(os.stat(key).st_mode & 0o777) == "0o600"
    assert oct(os.stat(key + ".pub").st_mode & 0o777) == "0o644"
    # A signing key others can read serves, with a warning saying so.
    os.chmod(key, 0o644)
    srv = harness.Clued(harness.test_database_url(), args=["--audit-signing-key", key]).start()
    try:
        harness.wait_for(lambda: "has mode 0644" in srv.output(), timeout=10, what="the key's mode warned of")
        assert "chmod 600" in srv.output()
    finally:
        srv.stop()


def test_verify_against_a_checkpoint_while_the_log_is_written_says_ok(c):
    # Nothing is tampered with: writers keep submitting and moving clues through the API
    # while the builder appends their leaves, and each verify against a checkpoint saved
    # before must say OK. Small export pages, so that a page often ends among the events
    # the tree has no leaf for yet (a verify that stepped over them found the next page's
    # leaf numbers jumping), and a server that merged leaves appended after its statement's
    # snapshot reported their events deleted.
    CL = S.clue_pb2
    env = {"CLUED_SERVER": c.srv.addr, "CLUED_TOKEN": c.w.auditor.token}
    harness.wait_for(lambda: cp_size(c.audit, c.md) > 0, timeout=180, what="a checkpoint")
    cp = os.path.join(c.tmp, "live.cp")
    harness.cluectl("audit", "checkpoint", "--out", cp, env=env, check=0)
    stop = threading.Event()
    written, errors = [0], []

    def writer(g):
        while not stop.is_set():
            try:
                cl = g.member.clue.SubmitClue(CL.SubmitClueRequest(
                    request_id=harness.new_request_id(), title="线索", summary="s", source=1,
                    subject=CL.SubjectPerson(name="张三"), host_unit="市发展改革委"), timeout=30)
                g.leader.clue.RequestTransition(CL.RequestTransitionRequest(
                    clue_id=cl.id, expected_version=cl.version, target=2, reason="r",
                    request_id=harness.new_request_id()), timeout=30)
                written[0] += 2
                stop.wait(0.05)  # a steady flow, not a log that outgrows the 30 walks
            except grpc.RpcError as e:
                errors.append(f"{e.code()}: {e.details()}")
                return
    ts = [threading.Thread(target=writer, args=(c.w.G1,)), threading.Thread(target=writer, args=(c.w.G1,))]
    for t in ts:
        t.start()
    bad = []
    try:
        for i in range(30):
            r = harness.cluectl("audit", "verify", "--checkpoint", cp, "--key", c.key + ".pub",
                                "--page-size", "7" if i % 2 else "16", env=env)
            if r.returncode != 0 or not r.stdout.startswith("OK: checkpoint of"):
                bad.append(f"verify {i}: {r.stdout}{r.stderr}")
    finally:
        stop.set()
        for t in ts:
            t.join()
    assert not errors, errors
    assert written[0] > 60, f"only {written[0]} events written during the verifies"
    assert not bad, f"{len(bad)} of 30 verifies failed on an untampered log:\n" + "\n".join(bad[:5])
    # --page-size goes with --checkpoint, within the server's bounds.
    r = harness.cluectl("audit", "verify", "--page-size", "10", env=env, check=2)
    assert "--page-size goes with --checkpoint" in r.stderr, r.stderr
    r = harness.cluectl("audit", "verify", "--checkpoint", cp, "--page-size", "5001", env=env, check=2)
    assert "out of range" in r.stderr, r.stderr


def test_a_follower_proves_every_checkpoint_it_serves(c):
    """An instance without the key serves the checkpoints the builder signs, and the proofs up
    to them, while events are appended: a checkpoint it names is one it can prove at once
    (it reads the leaves it has not read yet before it answers), which a witness polling it
    relies on."""
    b = harness.Clued(c.url).start(migrate=False)
    stop = threading.Event()

    def writer():
        conn = c.pg.connect(c.dbname)
        k = 0
        while not stop.is_set():
            append(conn, 5, subject=FAKE + 20000 + k)
            k += 5
            stop.wait(0.02)
        conn.close()
    t = threading.Thread(target=writer)
    t.start()
    refused = []
    try:
        with grpc.insecure_channel(b.addr) as ch:
            audit_b = S.audit_pb2_grpc.AuditServiceStub(ch)
            harness.wait_for(lambda: cp_size(audit_b, c.md) > 0, timeout=180, what="a checkpoint")
            wait_tree(audit_b, c.md, 1)  # read once (before, UNAVAILABLE: retry)
            for _ in range(60):
                cp = audit_b.GetCheckpoint(AU.GetCheckpointRequest(), metadata=c.md)
                try:
                    q = audit_b.GetConsistencyProof(AU.GetConsistencyProofRequest(old_size=1, new_size=cp.tree_size),
                                                    metadata=c.md)
                    assert q.new_size == cp.tree_size and q.new_root == cp.root_hash
                    p = audit_b.GetInclusionProof(AU.GetInclusionProofRequest(seq=tlog.rows(c.db)[0]["seq"],
                                                                              tree_size=cp.tree_size), metadata=c.md)
                    assert p.root_hash == cp.root_hash
                except grpc.RpcError as e:
                    refused.append(f"{cp.tree_size}: {e.code()}: {e.details()}")
                stop.wait(0.05)
            # A size nobody has reached is still OUT_OF_RANGE, after the follower looked.
            expect_status(grpc.StatusCode.OUT_OF_RANGE, audit_b.GetConsistencyProof,
                          AU.GetConsistencyProofRequest(old_size=1, new_size=10 ** 9), metadata=c.md)
    finally:
        stop.set()
        t.join()
        b.stop()
    assert not refused, refused[:5]


def test_proofs_waiting_for_a_follower_are_bounded(c):
    """A follower answers a proof of a size it has not read yet once it has read the leaves
    appended so far. With that read held (the leaf table locked from outside), 1,024 proofs
    wait; the next one is refused at once with RESOURCE_EXHAUSTED, and the 1,024 are answered
    once the read completes."""
    b = harness.Clued(c.url, args=["--db-lock-timeout", "120000", "--auth-cache-ttl", "120000"]).start(migrate=False)
    b.wait_listening()
    conn = c.pg.connect(c.dbname)
    lock = c.pg.connect(c.dbname)
    lock.autocommit = False
    chans = [grpc.insecure_channel(b.addr, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(12)]
    stubs = [S.audit_pb2_grpc.AuditServiceStub(ch) for ch in chans]
    futs = []
    try:
        wait_tree(stubs[0], c.md, 1)
        before = tree_size(stubs[0], c.md)
        append(conn, 70, subject=FAKE + 30000)
        harness.wait_for(lambda: cp_size(c.audit, c.md) > before, timeout=180, what="a checkpoint past the follower")
        size = cp_size(c.audit, c.md)
        with lock.cursor() as cur:
            cur.execute("LOCK TABLE audit_leaves IN ACCESS EXCLUSIVE MODE")
        req = AU.GetConsistencyProofRequest(old_size=1, new_size=size)
        futs = [stubs[i % 12].GetConsistencyProof.future(req, metadata=c.md, timeout=120) for i in range(1025)]
        harness.wait_for(lambda: any(f.done() for f in futs), timeout=60, what="a refusal")
        time.sleep(0.5)
        done = [f for f in futs if f.done()]
        assert len(done) == 1, f"{len(done)} of 1025 answered while the follower's read is held"
        e = done[0].exception()
        assert e is not None and e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
        assert "1024 proofs already wait" in e.details() and "retry" in e.details(), e.details()
        lock.rollback()
        for f in futs:
            if f is not done[0]:
                assert f.result().new_size == size
    finally:
        lock.rollback()
        lock.close()
        conn.close()
        for f in futs:
            f.cancel()
        for ch in chans:
            ch.close()
        b.stop()


def test_the_witness_polls_on_across_a_restart(c):
    """cluectl audit witness is the outside body's long-running check: a server that restarts
    (or whose database is down for a while) is reported and polled again, and the witness
    keeps every later checkpoint; only a checkpoint that does not extend the last one ends
    it with exit status 1."""
    b = harness.Clued(c.url).start(migrate=False)
    addr = b.addr
    wd = os.path.join(c.tmp, "witness-restart")
    env = dict(os.environ, CLUED_SERVER=addr, CLUED_TOKEN=c.w.auditor.token)
    w = subprocess.Popen([harness.CLUECTL, "audit", "witness", "--dir", wd, "--key", c.key + ".pub", "--interval", "1",
                          "--timeout", "5"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    conn = c.pg.connect(c.dbname)
    try:
        harness.wait_for(lambda: os.path.exists(os.path.join(wd, "latest")) or w.poll() is not None, timeout=60,
                         what="a checkpoint kept")
        assert w.poll() is None, w.communicate()
        b.proc.kill()  # as a crash
        b.proc.wait()
        append(conn, 80, subject=FAKE + 30000)
        time.sleep(2.5)  # polls meet the dead server
        assert w.poll() is None, w.communicate()
        b = harness.Clued(c.url).start(listen=addr, migrate=False)
        before = int(open(os.path.join(wd, "latest")).read().split("\n")[1])

        def kept_later():
            return int(open(os.path.join(wd, "latest")).read().split("\n")[1]) > before
        harness.wait_for(kept_later, timeout=60, what="a later checkpoint kept after the restart")
        assert w.poll() is None
        w.send_signal(2)
        out, err = w.communicate(timeout=20)
        assert w.returncode == 0, (w.returncode, out, err)
        assert "UNAVAILABLE" in err and "polling again in 1 s" in err, err
        assert "consistent with the last one kept" in out, out
    finally:
        conn.close()
        if w.poll() is None:
            w.kill()
        b.stop()


def test_the_witness_waits_for_the_first_checkpoint(c):
    """A witness started before the first checkpoint is published (with a new server, or its
    builder held back) is told NOT_FOUND: that passes, so it polls on and keeps the first
    checkpoint once one is signed, with --key or learning the server's key from it. With
    --once it still ends with exit status 1."""
    pg = harness.Postgres.get()
    dbname = pg.new_database()
    lock = pg.connect(dbname)
    lock.autocommit = False
    witnesses, srv, w = [], None, None
    try:
        srv = harness.Clued(pg.url(dbname), args=["--audit-signing-key", c.key, "--checkpoint-interval", "300ms"])
        srv.run("migrate")
        with lock.cursor() as cur:
            cur.execute("SELECT FROM audit_tree_lock FOR UPDATE")  # the builder's: no append, no checkpoint
        srv.start(migrate=False)
        w = world.build(srv)
        env = dict(os.environ, CLUED_SERVER=srv.addr, CLUED_TOKEN=w.auditor.token)
        r = harness.cluectl("audit", "witness", "--dir", os.path.join(c.tmp, "witness-once-first"), "--once",
                            "--key", c.key + ".pub", env=env, check=1)
        assert r.stderr.startswith("NOT_FOUND: no checkpoint has been published yet"), r.stderr
        for name, key in (("witness-first", ["--key", c.key + ".pub"]), ("witness-first-tofu", [])):
            wd = os.path.join(c.tmp, name)
            witnesses.append((wd, subprocess.Popen(
                [harness.CLUECTL, "audit", "witness", "--dir", wd, "--interval", "1", *key], env=env,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
        time.sleep(2.5)  # polls meet no checkpoint
        for wd, p in witnesses:
            assert p.poll() is None, p.communicate()
            assert not os.path.exists(os.path.join(wd, "latest"))
        lock.rollback()
        harness.wait_for(lambda: all(os.path.exists(os.path.join(wd, "latest")) or p.poll() is not None
                                     for wd, p in witnesses), timeout=60, what="the first checkpoint kept")
        for wd, p in witnesses:
            assert p.poll() is None, p.communicate()
            p.send_signal(2)
            out, err = p.communicate(timeout=20)
            assert p.returncode == 0, (p.returncode, out, err)
            assert "NOT_FOUND: no checkpoint has been published yet" in err and "polling again in 1 s" in err, err
            assert out.startswith("kept checkpoint of "), out
        assert open(os.path.join(witnesses[1][0], "key.pub")).read().strip() == c.vkey
    finally:
        for _, p in witnesses:
            if p.poll() is None:
                p.kill()
                p.communicate()
        if w:
            w.close()
        if srv:
            srv.stop()
        lock.close()


def test_a_checkpoint_dated_ahead_does_not_hold_the_next_back(c):
    """A checkpoint's time is the database's clock. One dated ahead of clued's clock (a database
    host whose clock ran 90 s fast) must not hold back the next checkpoint of a restarted
    builder: new events are signed within --checkpoint-interval of clued's clock, not once its
    clock has passed the old checkpoint's time."""
    args = ["--audit-signing-key", c.key, "--checkpoint-every", "1000", "--checkpoint-interval", "300ms"]
    other = world.served(args=args)
    conn = other.pg.connect(other.dbname)
    try:
        md = other.w.auditor.metadata
        with grpc.insecure_channel(other.srv.addr) as ch:
            stub = S.audit_pb2_grpc.AuditServiceStub(ch)
            append(conn, 5, subject=FAKE + 40000)
            harness.wait_for(lambda: cp_size(stub, md) >= tree_size(stub, md) > 0, timeout=60,
                             what="every event signed")
        other.srv.stop()
        with conn.cursor() as cur:  # as the clock did, past the append-only trigger
            cur.execute("SET session_replication_role = replica")
            cur.execute("UPDATE audit_checkpoints SET at = at + interval '90 seconds'"
                        " WHERE tree_size = (SELECT max(tree_size) FROM audit_checkpoints)")
            cur.execute("RESET session_replication_role")
        other.srv = harness.Clued(other.url, args=args).start(migrate=False)
        with grpc.insecure_channel(other.srv.addr) as ch:
            stub = S.audit_pb2_grpc.AuditServiceStub(ch)
            signed = cp_size(stub, md)
            append(conn, 3, subject=FAKE + 40100)
            # Ten times the interval and more; the old builder waited the 90 s out.
            harness.wait_for(lambda: cp_size(stub, md) >= signed + 3, timeout=20,
                             what="the new events signed within the interval")
    finally:
        conn.close()
        world.unserve(other)


def test_the_last_export_page_stays_within_bounds_with_many_notes_on_one_clue(c):
    """The export's last page looks for notes and proposals no event logged. One MEMBER may add
    thousands of notes to one clue in seconds; the look must not cost the square of them, or
    the page runs past the statement timeout and no verify can finish (a 4,000-note clue took
    18 s that way). Here 4,000 notes, and a statement timeout of 5 s."""
    other = world.served(args=["--db-statement-timeout", "5000"])
    try:
        m = other.w.G1.member
        clue = m.clue.SubmitClue(S.clue_pb2.SubmitClueRequest(
            request_id=harness.new_request_id(), title="谈话很多的线索", summary="反映某某违规收受礼金",
            source=S.clue_pb2.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=S.clue_pb2.SubjectPerson(name="张三"),
            host_unit="市发展改革委"), timeout=20)
        pending = []
        for i in range(4000):
            pending.append(m.clue.AddNote.future(S.clue_pb2.AddNoteRequest(
                clue_id=clue.id, kind=S.clue_pb2.NOTE_KIND_OTHER, text=f"谈话记录 {i}", request_id=harness.new_request_id()),
                timeout=60))
            if len(pending) >= 16:
                pending.pop(0).result()
        for f in pending:
            f.result()
        with grpc.insecure_channel(other.srv.addr) as ch:
            stub = S.audit_pb2_grpc.AuditServiceStub(ch)
            last = stub.ExportAuditEvents(AU.ExportAuditEventsRequest(after_seq=10**15, page_size=1),
                                          metadata=other.w.auditor.metadata, timeout=60)
            assert last.done and not last.unlogged_note_ids and not last.unexplained_rows, last
        # And the look still finds a note no event logged (one a superuser inserted).
        with other.db.cursor() as cur:
            cur.execute("INSERT INTO notes (clue_id, owner_unit, kind, text, author_user, author_unit, created_at)"
                        " SELECT clue_id, owner_unit, kind, '补记', author_user, author_unit, created_at"
                        " FROM notes WHERE clue_id = %s ORDER BY id LIMIT 1 RETURNING id", (clue.id,))
            (planted,) = cur.fetchone()
        with grpc.insecure_channel(other.srv.addr) as ch:
            stub = S.audit_pb2_grpc.AuditServiceStub(ch)
            last = stub.ExportAuditEvents(AU.ExportAuditEventsRequest(after_seq=10**15, page_size=1),
                                          metadata=other.w.auditor.metadata, timeout=60)
            assert list(last.unlogged_note_ids) == [planted], last.unlogged_note_ids
    finally:
        world.unserve(other)


def test_the_whole_log_is_verified_in_batches_of_chains(c):
    """VerifyAuditChain over the whole log runs one statement per batch of chains, each within
    --db-statement-timeout, where one statement over every event would run past it: here 60,000
    chains of one event each and a timeout of 400 ms. The batches together judge as the one
    statement did: every chain and event counted, and of two changed events in different
    batches the one of the lower seq named, though its chain comes later."""
    other = world.served(args=["--db-statement-timeout", "400"])
    conn = other.pg.connect(other.dbname)
    try:
        with conn.cursor() as cur:
            # Later chains first, so that the lowest seq is in the last batch.
            for lo, hi in ((FAKE + 30000, FAKE + 59999), (FAKE, FAKE + 29999)):
                cur.execute("SELECT count(audit_append(NULL, NULL, 'test.event', 'clue', s, NULL, NULL, NULL,"
                            " 'r', '{}')) FROM generate_series(%s::bigint, %s::bigint) s", (lo, hi))
            cur.execute("SELECT (SELECT count(*) FROM audit_heads), (SELECT count(*) FROM audit_events)")
            heads, events = cur.fetchone()
        with grpc.insecure_channel(other.srv.addr) as ch:
            stub = S.audit_pb2_grpc.AuditServiceStub(ch)
            md = other.w.auditor.metadata
            r = stub.VerifyAuditChain(AU.VerifyAuditChainRequest(), metadata=md, timeout=120)
            assert r.ok and (r.subjects_checked, r.events_checked) == (heads, events), r
            with conn.cursor() as cur:
                cur.execute("SET session_replication_role = replica")
                cur.execute("UPDATE audit_events SET reason = 'x' WHERE subject_type = 'clue' AND subject_id IN"
                            " (%s, %s) RETURNING subject_id, seq", (FAKE + 10, FAKE + 59000))
                seq_of = dict(cur.fetchall())
                cur.execute("RESET session_replication_role")
            r = stub.VerifyAuditChain(AU.VerifyAuditChainRequest(), metadata=md, timeout=120)
            assert not r.ok and (r.subjects_checked, r.events_checked) == (heads, events), r
            assert (r.broken.subject_id, r.broken.seq) == (FAKE + 59000, seq_of[FAKE + 59000]), r.broken
            assert r.broken.problem == AU.BrokenLink.PROBLEM_CHANGED_CONTENT, r.broken
    finally:
        conn.close()
        world.unserve(other)


def test_a_role_that_may_connect_cannot_stop_the_tree(c):
    """The builder's lock was an advisory lock of a fixed key, which any role that could log
    in took and held: leaves and checkpoints stopped, silently, while events went on. It is
    now a row no role but the owner may lock. A reporting role an operator lets connect holds
    the old key, and is refused the row; the tree keeps up with the log."""
    import psycopg2
    import psycopg2.errors

    with c.db.cursor() as cur:
        cur.execute("DROP ROLE IF EXISTS onlooker")
        cur.execute("CREATE ROLE onlooker LOGIN")
        cur.execute(f'GRANT CONNECT ON DATABASE "{c.dbname}" TO onlooker')
    conn = psycopg2.connect(host=c.pg.host, port=c.pg.port, user="onlooker", dbname=c.dbname)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(1668052325, 1)")
            try:
                cur.execute("SELECT FROM audit_tree_lock FOR UPDATE")
                raise AssertionError("onlooker locked the tree's row")
            except psycopg2.errors.InsufficientPrivilege:
                pass
        append(c.db, 20, subject=FAKE + 100)
        with c.db.cursor() as cur:
            cur.execute("SELECT count(*) FROM audit_events")
            n = cur.fetchone()[0]
        wait_tree(c.audit, c.md, n, timeout=60)
        harness.wait_for(lambda: cp_size(c.audit, c.md) >= n, timeout=60, what=f"a checkpoint of {n} leaves")
    finally:
        conn.close()
        with c.db.cursor() as cur:
            cur.execute(f'REVOKE CONNECT ON DATABASE "{c.dbname}" FROM onlooker')
            cur.execute("DROP ROLE onlooker")


def test_a_server_without_a_key_says_why_there_is_no_checkpoint(c):
    other = world.served()
    try:
        with grpc.insecure_channel(other.srv.addr) as ch:
            audit = S.audit_pb2_grpc.AuditServiceStub(ch)
            md = other.w.auditor.metadata
            expect_status(grpc.StatusCode.NOT_FOUND, audit.GetCheckpoint, AU.GetCheckpointRequest(), metadata=md,
                          details_has=("no checkpoint has been published yet", "--audit-signing-key"))
            expect_status(grpc.StatusCode.NOT_FOUND, audit.GetCheckpoint, AU.GetCheckpointRequest(tree_size=1),
                          metadata=md, details_has=("no checkpoint has been published at that size",))
    finally:
        world.unserve(other)


if __name__ == "__main__":
    harness.run_tests(dict(globals()), setup, teardown)
