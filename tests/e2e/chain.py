"""The audit trail's hash chains recomputed here from the rows, independently of the
database's own audit_canonical() and audit_hash(): a second implementation of the canonical
encoding of migrations/0001_identity.sql, to check the stored hashes against.

Each event's hash is SHA-256 of its fields seq, at (integer microseconds since the epoch),
actor_user_id, actor_unit_id, action, subject_type, subject_id, from_state, to_state, reason,
details and prev_hash (lower-case hex), each written as text, NULL as the empty text, in the
form '<length in bytes>:<text>\\n'; an event with an acting token (migrations/0010_tokens.sql)
has a thirteenth field, actor_token_id, in the same form. Each event's prev_hash is the hash of the event before it
on the same subject (NULL for the first), and audit_heads holds each subject's last hash.

conn is a psycopg2 connection to the database under test.
"""

import datetime
import hashlib

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
COLUMNS = ("seq, at, actor_user_id, actor_unit_id, action, subject_type, subject_id, owner_unit, from_state, "
           "to_state, reason, details, prev_hash, hash, actor_token_id")


def canonical(ev):
    """The canonical bytes of an event (a dict as events() returns)."""
    micros = (ev["at"] - EPOCH) // datetime.timedelta(microseconds=1)
    fields = [ev["seq"], micros, ev["actor_user_id"], ev["actor_unit_id"], ev["action"], ev["subject_type"],
              ev["subject_id"], ev["from_state"], ev["to_state"], ev["reason"], ev["details"],
              ev["prev_hash"].hex() if ev["prev_hash"] else None]
    if ev.get("actor_token_id") is not None:
        fields.append(ev["actor_token_id"])
    out = b""
    for f in fields:
        b = b"" if f is None else str(f).encode("utf-8")
        out += str(len(b)).encode() + b":" + b + b"\n"
    return out


def event_hash(ev):
    return hashlib.sha256(canonical(ev)).digest()


def _where(subject_type, subject_id):
    conds, args = [], []
    if subject_type is not None:
        conds.append("subject_type = %s")
        args.append(subject_type)
    if subject_id is not None:
        conds.append("subject_id = %s")
        args.append(subject_id)
    return (" WHERE " + " AND ".join(conds) if conds else ""), tuple(args)


def events(conn, subject_type=None, subject_id=None):
    """The audit events (of one subject type and/or subject id, or all), in seq order, as dicts
    keyed by column name; prev_hash and hash as bytes."""
    where, args = _where(subject_type, subject_id)
    with conn.cursor() as cur:
        cur.execute(f"SELECT {COLUMNS} FROM audit_events{where} ORDER BY seq", args)
        names = [d[0] for d in cur.description]
        evs = [dict(zip(names, r)) for r in cur.fetchall()]
    for ev in evs:
        for k in ("prev_hash", "hash"):
            ev[k] = bytes(ev[k]) if ev[k] is not None else None
    return evs


def heads(conn, subject_type=None, subject_id=None):
    """audit_heads as {(subject_type, subject_id): last_hash}."""
    where, args = _where(subject_type, subject_id)
    with conn.cursor() as cur:
        cur.execute(f"SELECT subject_type, subject_id, last_hash FROM audit_heads{where}", args)
        return {(st, sid): bytes(h) if h is not None else None for st, sid, h in cur.fetchall()}


def _walk(conn, subject_type, subject_id):
    """Recompute the chains in scope: (chains, seq, why) where chains maps (subject_type,
    subject_id) to its events, and seq names the first break (None when there is none). The
    events and the heads are read in one snapshot: a change committing between the two reads
    would otherwise leave a head ahead of the events read."""
    autocommit = conn.autocommit
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        return _walk_snapshot(conn, subject_type, subject_id)
    finally:
        conn.rollback()
        conn.autocommit = autocommit


def _walk_snapshot(conn, subject_type, subject_id):
    chains = {}
    for ev in events(conn, subject_type, subject_id):
        key = (ev["subject_type"], ev["subject_id"])
        chain = chains.setdefault(key, [])
        if event_hash(ev) != ev["hash"]:
            return chains, ev["seq"], f"event {ev['seq']} of {key}: its hash is not the hash of its row"
        if ev["prev_hash"] != (chain[-1]["hash"] if chain else None):
            return chains, ev["seq"], f"event {ev['seq']} of {key}: prev_hash is not the hash of the event before it"
        chain.append(ev)
    last = {key: chain[-1]["hash"] for key, chain in chains.items()}
    got = heads(conn, subject_type, subject_id)
    if got != last:
        wrong = sorted(k for k in set(got) | set(last) if got.get(k) != last.get(k))
        return chains, -1, f"audit_heads does not hold the last hash of {wrong}"
    return chains, None, None


def first_break(conn, subject_type=None, subject_id=None):
    """The seq of the first event (in seq order) whose hash is not the hash of its row or whose
    prev_hash is not the hash of its subject's event before it; else -1 when audit_heads does
    not hold exactly each subject's last hash (say, a chain's tail was removed); else None."""
    return _walk(conn, subject_type, subject_id)[1]


def verify(conn, subject_type=None, subject_id=None):
    """Assert that every chain in scope verifies (first_break() is None); return the chains as
    {(subject_type, subject_id): [event, ...]}."""
    chains, seq, why = _walk(conn, subject_type, subject_id)
    assert seq is None, why
    return chains


def verify_subject(conn, subject_type, subject_id):
    """verify() for one subject, which must have events; returns its events."""
    chains = verify(conn, subject_type, subject_id)
    assert chains, f"no events of ({subject_type}, {subject_id})"
    return chains[(subject_type, subject_id)]
