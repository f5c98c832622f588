"""An independent implementation of what clued's audit tree does (docs/AUDIT.md), for tests:
the canonical leaf encoding, RFC 9162 trees and proofs, straight from the RFC's recursive
definitions, and C2SP signed-note checkpoints verified with Python's own Ed25519."""

import base64
import hashlib

LEAF_FIELDS = ("seq", "at_us", "actor_user_id", "actor_unit_id", "action", "subject_type",
               "subject_id", "owner_unit", "from_state", "to_state", "reason", "details",
               "prev_hash", "hash", "actor_token_id")
OPTIONAL_FROM = 14  # fields from here on are left out while NULL


def leaf_hash_of_row(row):
    """row: a dict with LEAF_FIELDS as Python values (None for NULL; hashes as bytes)."""
    out = b"clued-audit-leaf-v1\n"
    for i, f in enumerate(LEAF_FIELDS):
        v = row[f]
        if v is None and i >= OPTIONAL_FROM:
            continue
        if v is None:
            out += b"-\n"
            continue
        if isinstance(v, (bytes, memoryview)):
            v = bytes(v).hex()
        b = str(v).encode()
        out += str(len(b)).encode() + b":" + b + b"\n"
    return hashlib.sha256(b"\x00" + out).digest()


ROW_SQL = ("SELECT seq, (extract(epoch FROM at) * 1000000)::bigint AS at_us, actor_user_id, actor_unit_id,"
           " action, subject_type, subject_id, owner_unit, from_state, to_state, reason, details,"
           " prev_hash, hash, actor_token_id FROM audit_events ORDER BY seq")


def rows(conn):
    with conn.cursor() as cur:
        cur.execute(ROW_SQL)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]


def node(l, r):
    return hashlib.sha256(b"\x01" + l + r).digest()


def _k(n):
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d):
    """RFC 9162 §2.1.1: d is a list of leaf hashes."""
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return node(mth(d[:k]), mth(d[k:]))


def path(m, d):
    """RFC 9162 §2.1.3.1 PATH(m, D[n])."""
    if len(d) <= 1:
        return []
    k = _k(len(d))
    if m < k:
        return path(m, d[:k]) + [mth(d[k:])]
    return path(m - k, d[k:]) + [mth(d[:k])]


def subproof(m, d, b):
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = _k(n)
    if m <= k:
        return subproof(m, d[:k], b) + [mth(d[k:])]
    return subproof(m - k, d[k:], False) + [mth(d[:k])]


def proof(m, d):
    """RFC 9162 §2.1.4.1 PROOF(m, D[n]), 0 < m <= n."""
    return [] if m == len(d) else subproof(m, d, True)


def parse_vkey(text):
    name, kid, key = text.strip().split("+", 2)
    raw = base64.b64decode(key)
    assert raw[0] == 1 and len(raw) == 33
    pub = raw[1:]
    want = hashlib.sha256(name.encode() + b"\n\x01" + pub).digest()[:4]
    assert want.hex() == kid, "key id"
    return name, bytes.fromhex(kid), pub


def open_checkpoint(note, vkey):
    """Check a signed checkpoint with Python's Ed25519; returns (origin, size, root)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    name, kid, pub = parse_vkey(vkey)
    body, sigs = note.rsplit("\n\n", 1)
    body += "\n"
    lines = body.split("\n")
    assert lines[0] == name, "origin is the key name"
    size = int(lines[1])
    root = base64.b64decode(lines[2])
    assert len(root) == 32 and lines[3] == ""
    found = False
    for line in sigs.strip("\n").split("\n"):
        assert line.startswith("\u2014 "), repr(line)
        who, sig = line[2:].split(" ")
        if who != name:
            continue
        raw = base64.b64decode(sig)
        assert raw[:4] == kid
        Ed25519PublicKey.from_public_bytes(pub).verify(raw[4:], body.encode())  # raises if bad
        found = True
    assert found, "no signature by the key"
    return name, size, root
