"""clue_submit_many() of migrations/0022_batched_submits.sql, called as clued's runtime role on
real PostgreSQL and compared, call by call, with clue_submit() on a twin database.

Two databases are migrated by `clued migrate` and given the same units and users. On one, the
calls go in batches through BATCH_SQL (the statement clued's batcher is to send, below); a call
the batch leaves out is then run on its own through SUBMIT_SQL, as clued does. On the twin,
every call goes through SUBMIT_SQL (submit_sql of server/service/clue.c, as clued sends it). Both
statements are read from clued's sources, their macros expanded by the C preprocessor. The
answers, clues, numbers, reporters, request records and audit events must be the same,
except ids, seqs and the moments of the appends; the chains must verify by audit_verify()
(what VerifyAuditChain runs) and by chain.py's own implementation of the canonical hash.
"""

import ast
import hashlib
import os
import re
import subprocess
import sys
import threading
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chain  # noqa: E402
import harness  # noqa: E402

import psycopg2  # noqa: E402
import psycopg2.errors  # noqa: E402

def c_string(expr):
    """A C string expression of clued's sources, its macros expanded by the C preprocessor:
    CLUE_COLS and the macros it uses, as server/service/clue_row.h, common.h and server/db/db.h
    define them."""
    defs = ""
    for name in ("service/clue_row.h", "service/common.h", "db/db.h"):
        with open(os.path.join(harness.SRC, "server", name), encoding="utf-8") as f:
            src = f.read()
        for m in re.finditer(r"^#define (CLUE_FACT_COLS|CLUE_USER_FACT_COLS|CLUE_COLS|SVC_MS|SVC_DURABLE_IF|SVC_KEYS?_RECORDED|DB_SYNC_WAIT_CTE)\b(?:.*\\\n)*.*$", src, re.M):
            defs += m.group(0) + "\n"
    out = subprocess.run(["cpp", "-P"], input=defs + "(" + expr + ")\n", capture_output=True, text=True, check=True)
    return ast.literal_eval(out.stdout.strip())  # adjacent literals concatenated, as in C


# submit_sql of server/service/clue.c: the statement clued sends for one SubmitClue.
with open(os.path.join(harness.SRC, "server", "service", "clue.c"), encoding="utf-8") as _f:
    SUBMIT_SQL = c_string(re.search(r"static const char submit_sql\[\] =(.*?);\n", _f.read(), re.S).group(1))

# The statement for clued's batcher (docs/WRITES.md, "Batched submits"): parameter i is the
# text-format array of every call's parameter i of submit_sql, in call order ($15: one element
# per call, that call's text[] in its text form); one row per completed call, with submit_sql's
# columns and then ord. The caller's user and unit come from the function's own columns.
BATCH_SQL = c_string(
    '"SELECT " CLUE_COLS("s.clue", "ou", "s.actor_unit", "s.actor_user") ", s.ord"'
    '" FROM clue_submit_many($1::bigint[], $2::bigint[], $3::uuid[], $4::bigint[], $5::bigint[], $6::int[],"'
    '" $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::boolean[], $14::text[],"'
    '" $15::text[], $16::text[], $17::text[], $18::text[], $19::text[], $20::bigint[], $21::bytea[]) s"'
    '" JOIN units ou ON ou.id = (s.clue).owner_unit"')

NOW = 1_764_900_000_000  # 2025-12-05, in ms
DAY = 86_400_000
# Categories as clued sends them: a text[] in its text form; elements that need quoting.
CATS = ['{"违反中央八项规定精神"}', '{"a,b","say \\"hi\\"","back\\\\slash","{braces}"}', "{}", None]


def text_array(values):
    """The text format of a one-dimensional array (what the batcher builds): every element
    quoted, NULL unquoted."""
    out = []
    for v in values:
        if v is None:
            out.append("NULL")
        else:
            if isinstance(v, bool):
                v = "t" if v else "f"
            out.append('"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(out) + "}"


def call(user, unit, key=None, i=0, reporter=False, deadline=True, token=None, source="LETTER_VISIT_REPORT"):
    """One SubmitClue call's 21 parameters, as clued's submit_clue() builds them. The last, the
    request's fingerprint (request_sha256() of the decoded request), stands here for a hash of
    the parameters that come from the request: calls with one i and source are one request."""
    rep = (f"举报人{i}", f"1370000{i:04d}", None if i % 2 else f"地址 {i}", "") if reporter else (None,) * 4
    params = [user, unit, key or str(uuid.uuid4()), NOW + i, NOW + i + 30 * DAY if deadline else None, 2025,
              f"线索 {i}", f"摘要 {i}\n第二行", source, f"某某{i}", None if i % 3 == 0 else f"职务{i}",
              "" if i % 2 else "正处级", i % 4 == 1, "市发展改革委", CATS[i % len(CATS)], *rep, token]
    fields = params[5:19]
    return params + ["\\x" + hashlib.sha256(repr(fields).encode()).hexdigest()]


class Db:
    """A migrated database with units U[0..3] and one user per unit, the same ids in every Db."""

    def __init__(self, pg, name):
        self.pg, self.name = pg, pg.new_database(name)
        harness.Clued(pg.url(self.name)).run("migrate")
        self.admin = pg.connect(self.name)
        with self.admin.cursor() as cur:
            self.units, self.users = [], []
            for k in range(4):
                cur.execute("INSERT INTO units (kind, code, name) VALUES ('ROOM', %s, %s) RETURNING id",
                            (f"U{k}", f"单位{k}"))
                self.units.append(cur.fetchone()[0])
                cur.execute("INSERT INTO users (unit_id, name, role) VALUES (%s, %s, 'MEMBER') RETURNING id",
                            (self.units[-1], f"用户{k}"))
                self.users.append(cur.fetchone()[0])
        self.rt = self.runtime()

    def runtime(self):
        """A connection as clued serves: the login role clued (clued_runtime), both statements
        prepared."""
        conn = psycopg2.connect(host=self.pg.host, port=self.pg.port, user="clued", dbname=self.name)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user")
            assert cur.fetchone() == ("clued", False)
            cur.execute("PREPARE submit AS " + SUBMIT_SQL)
            cur.execute("PREPARE batch AS " + BATCH_SQL)
        return conn

    def submit(self, params, conn=None):
        with (conn or self.rt).cursor() as cur:
            cur.execute("EXECUTE submit (" + ", ".join(["%s"] * 21) + ")", params)
            return cur.fetchone()

    def batch(self, calls, conn=None):
        """The batch statement for calls; {ord: row without ord}."""
        arrays = [text_array([c[i] for c in calls]) for i in range(21)]
        with (conn or self.rt).cursor() as cur:
            cur.execute("EXECUTE batch (" + ", ".join(["%s"] * 21) + ")", arrays)
            rows = cur.fetchall()
        assert [r[-1] for r in rows] == sorted(r[-1] for r in rows), "rows in call order"
        return {r[-1]: r[:-1] for r in rows}

    def batch_then_singles(self, calls):
        """What clued does with a batch: the batch statement, then every call it left out on its
        own. The answers in call order, and the ords left out."""
        done = self.batch(calls)
        answers = [done[k + 1] if k + 1 in done else self.submit(c) for k, c in enumerate(calls)]
        return answers, sorted(set(range(1, len(calls) + 1)) - set(done))

    def q(self, sql, args=()):
        with self.admin.cursor() as cur:
            cur.execute(sql, args or None)
            return cur.fetchall()

    def state(self):
        """Everything a submit writes, keyed so that two databases compare: clues by
        registration number without id, reporters, request records, counters, events without
        seq, at, txid and subject id (their hash then differs; each is checked on its own).
        Each reporter row has its own random salt (0031): of a reporter_sha256 only whether it
        is the hash of its row is compared."""
        clues = self.q("SELECT registration_number, to_jsonb(c) - 'id' FROM clues c ORDER BY 1")
        reps = self.q("SELECT c.registration_number, r.owner_unit, r.name, r.phone, r.address, r.email,"
                      " octet_length(r.salt)"
                      " FROM clue_reporters r JOIN clues c ON c.id = r.clue_id ORDER BY 1")
        reqs = self.q("SELECT q.user_id, q.request_id, q.method, c.registration_number, q.proposal_id, q.owner_unit"
                      " FROM clue_requests q JOIN clues c ON c.id = q.clue_id ORDER BY 2")
        counters = self.q("SELECT unit_id, year, last_seq FROM clue_counters ORDER BY 1, 2")
        events = self.q("SELECT c.registration_number, e.actor_user_id, e.actor_unit_id, e.action, e.subject_type,"
                        " e.owner_unit, e.from_state, e.to_state, e.reason, e.details::jsonb - 'reporter_sha256',"
                        " e.details::jsonb->>'reporter_sha256' = (SELECT clue_reporter_sha256(r) FROM clue_reporters r"
                        "                                         WHERE r.clue_id = c.id),"
                        " e.prev_hash, e.actor_token_id"
                        " FROM audit_events e JOIN clues c ON e.subject_type = 'clue' AND c.id = e.subject_id"
                        " ORDER BY 1")
        return {"clues": clues, "reporters": reps, "requests": reqs, "counters": counters, "events": events}

    def close(self):
        self.rt.close()
        self.admin.close()
        conn = self.pg.connect()
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        conn.close()


def check_chains(db):
    """Every chain verifies by the server's audit_verify() and by chain.py; every event's
    stored hash is audit_hash() of its row; each head holds its chain's last seq and hash."""
    (subjects, events, st, sid, seq, problem, detail), = db.q("SELECT * FROM audit_verify(NULL, NULL)")
    assert problem is None, (st, sid, seq, problem, detail)
    chains = chain.verify(db.admin)
    assert events == sum(len(c) for c in chains.values()) and subjects == len(chains)
    assert db.q("SELECT count(*) FROM audit_events e WHERE e.hash <> audit_hash(e)") == [(0,)]
    assert db.q("SELECT count(*) FROM audit_heads h LEFT JOIN LATERAL (SELECT e.seq, e.hash FROM audit_events e"
                " WHERE e.subject_type = h.subject_type AND e.subject_id = h.subject_id ORDER BY e.seq DESC LIMIT 1)"
                " l ON true WHERE h.last_seq IS DISTINCT FROM l.seq OR h.last_hash IS DISTINCT FROM l.hash") == [(0,)]
    return chains


def check_gapless(db):
    """Per (unit, year): the numbers 1..last_seq, each once, and the registration numbers
    CODE-YEAR-NNNN."""
    rows = db.q("SELECT k.unit_id, k.year, k.last_seq, array_agg(c.reg_seq ORDER BY c.reg_seq),"
                " bool_and(c.registration_number"
                "   = format('%s-%s-%s', u.code, c.reg_year, lpad(c.reg_seq::text, 4, '0')))"
                " FROM clue_counters k JOIN units u ON u.id = k.unit_id"
                " JOIN clues c ON c.reg_unit = k.unit_id AND c.reg_year = k.year GROUP BY 1, 2, 3")
    assert rows
    for unit, year, last, seqs, formatted in rows:
        assert seqs == list(range(1, last + 1)), (unit, year, last, seqs)
        assert formatted, (unit, year)


def setup():
    c = type("C", (), {})()
    c.pg = harness.Postgres.get()
    c.a, c.b = Db(c.pg, "batch"), Db(c.pg, "twin")
    assert (c.a.units, c.a.users) == (c.b.units, c.b.users)
    return c


def teardown(c):
    c.a.close()
    c.b.close()


def test_batches_do_what_single_submits_do(c):
    """Batches mixing units, reporters and none, a deadline and none, a token and none, and
    categories that need quoting give each call exactly clue_submit()'s answer and rows; the
    calls of one unit take consecutive numbers in call order from a counter moved once; each
    clue has one event on a new chain, hashed as audit_append() hashes, its head at that event;
    the events of a batch carry one transaction id and consecutive seqs in call order."""
    a, b = c.a, c.b
    U, P = a.units, a.users
    used = str(uuid.uuid4())
    # Before the batches, on both: U0's counter exists, and one key is used already.
    first = [call(P[0], U[0], i=0), call(P[1], U[1], key=used, i=1, reporter=True)]
    first_a = [a.submit(params) for params in first]
    assert [b.submit(params) for params in first] == first_a
    batches = [
        [call(P[0], U[0], i=2, reporter=True, token=11), call(P[1], U[1], i=3), call(P[0], U[0], i=4, deadline=False),
         call(P[2], U[2], i=5, reporter=True), call(P[0], U[0], i=6, token=12),
         # a retry of the call that used `used`: left out, answered on its own with that clue
         call(P[1], U[1], key=used, i=1, reporter=True), call(P[2], U[2], i=7), call(P[1], U[1], i=8, reporter=True)],
        [call(P[3], U[3], i=k, reporter=k % 2 == 0, token=k if k % 3 else None) for k in range(9, 13)],
        [call(P[0], U[0], i=13)],
    ]
    for calls in batches:
        got_a, left = a.batch_then_singles(calls)
        if calls is batches[0]:
            got_a_first = got_a
        got_b = [b.submit(params) for params in calls]
        assert left == ([6] if calls is batches[0] else []), left
        for k, (ra, rb) in enumerate(zip(got_a, got_b)):
            assert ra[1:] == rb[1:], f"call {k + 1}: batch {ra} single {rb}"
        ids = [r[0] for k, r in enumerate(got_a) if k + 1 not in left]
        assert ids == sorted(ids), "clue ids in call order"
    assert got_a_first[5] == first_a[1], "the retry answered with the first call's clue"
    sa, sb = a.state(), b.state()
    for k in sa:
        diff = [(x, y) for x, y in zip(sa[k], sb[k]) if x != y]
        assert len(sa[k]) == len(sb[k]) and not diff, \
            f"{k}: {len(sa[k])} and {len(sb[k])} rows; first difference {diff[:1]}"
    assert sa["counters"] == [(U[0], 2025, 5), (U[1], 2025, 3), (U[2], 2025, 2), (U[3], 2025, 4)], sa["counters"]
    # The retry got the first clue, not a new one.
    assert a.q("SELECT count(*) FROM clue_requests WHERE request_id = %s", (used,)) == [(1,)]
    # One event per clue, each the first of its chain; per batch one transaction, seqs in
    # call order.
    rows = a.q("SELECT c.reg_unit, c.reg_seq, c.created_at, e.seq, e.txid, e.prev_hash IS NULL, e.actor_token_id"
               " FROM clues c JOIN audit_events e ON e.subject_type = 'clue' AND e.subject_id = c.id ORDER BY e.seq")
    assert len(rows) == 14 and all(r[5] for r in rows)
    first_batch = [r for r in rows if NOW + 2 <= int(r[2].timestamp() * 1000) <= NOW + 8]
    assert len(first_batch) == 7 and len({r[4] for r in first_batch}) == 1
    assert [int(r[2].timestamp() * 1000) - NOW for r in first_batch] == [2, 3, 4, 5, 6, 7, 8]
    assert [r[3] for r in first_batch] == list(range(first_batch[0][3], first_batch[0][3] + 7))
    # U0's clues of the first batch: numbers 2, 3, 4 in call order (calls 1, 3, 5).
    assert [r[1] for r in first_batch if r[0] == U[0]] == [2, 3, 4]
    chains = check_chains(a)
    assert len(chains) == 14 and all(len(ev) == 1 for ev in chains.values())
    check_chains(b)
    check_gapless(a)
    # A missing unit: the batch leaves the call out, clue_submit() refuses it on its own.
    bad = call(P[0], 987654321, i=20)
    assert a.batch([bad]) == {}
    try:
        a.submit(bad)
        raise AssertionError("clue_submit accepted a missing unit")
    except psycopg2.Error as e:
        assert e.pgcode == "CLNOF", e.pgcode
    assert a.state() == sa


def test_a_failing_call_rolls_back_the_batch(c):
    """A batch whose second call breaks a constraint (a source the table refuses), and one with
    two calls of the same key, raise; and leave no trace: counters, clues, reporters, records,
    events and heads as they were. The same calls then go through one by one."""
    a = c.a
    U, P = a.units, a.users

    def snapshot():
        return (a.state(), a.q("SELECT count(*), max(seq) FROM audit_events"),
                a.q("SELECT subject_type, subject_id, last_seq FROM audit_heads ORDER BY 1, 2"))

    before = snapshot()
    key = str(uuid.uuid4())
    for calls, code in (
        ([call(P[0], U[0], i=30, reporter=True), call(P[1], U[1], i=31, source="NOT_A_SOURCE"),
          call(P[0], U[0], i=32)], "23514"),
        ([call(P[2], U[2], key=key, i=33), call(P[3], U[3], i=34), call(P[2], U[2], key=key, i=33)], "23505"),
    ):
        try:
            a.batch(calls)
            raise AssertionError("the batch did not raise")
        except psycopg2.Error as e:
            assert e.pgcode == code, (e.pgcode, e.pgerror)
        assert snapshot() == before
    # On its own the bad call is refused, the others go through; a key's second call with the
    # same fields is its retry, with others refused (0047).
    try:
        a.submit(call(P[1], U[1], i=31, source="NOT_A_SOURCE"))
        raise AssertionError("clue_submit accepted a bad source")
    except psycopg2.Error as e:
        assert e.pgcode == "23514", e.pgcode
    answers = []
    for params in (call(P[0], U[0], i=30, reporter=True), call(P[0], U[0], i=32),
                   call(P[2], U[2], key=key, i=33), call(P[3], U[3], i=34), call(P[2], U[2], key=key, i=33)):
        answers.append(a.submit(params))
    assert answers[2][0] == answers[4][0]
    try:
        a.submit(call(P[2], U[2], key=key, i=35))
        raise AssertionError("clue_submit took another request under a used key for its retry")
    except psycopg2.Error as e:
        assert e.pgcode == "CLARG" and "was already used for a different request" in e.pgerror, e.pgerror
    check_chains(a)
    check_gapless(a)


def test_runtime_role_and_the_append(c):
    """The functions as the runtime role sees them: clue_submit_many() runs with the caller's
    rights (not SECURITY DEFINER); audit_append_many() is SECURITY DEFINER with the fixed
    search_path, like both audit_append()s; with those two the runtime role appends audit rows,
    and nothing else: its direct writes are refused. Through it an event extends an existing chain
    from its head (never a fork), appends to distinct chains only, and moves heads forward."""
    a = c.a
    rows = a.q("SELECT p.proname, p.prosecdef, p.proconfig FROM pg_proc p"
               " WHERE p.pronamespace = 'public'::regnamespace"
               " AND p.proname IN ('clue_submit_many', 'audit_append_many', 'audit_append') ORDER BY 1")
    assert [r[0] for r in rows] == ["audit_append", "audit_append", "audit_append_many", "clue_submit_many"], rows
    for name, definer, config in rows:
        assert definer == (name != "clue_submit_many"), (name, definer)
        assert ("search_path=public, pg_temp" in (config or [])) == definer, (name, config)
    rt = a.rt
    for stmt in ("INSERT INTO audit_events (action, subject_type, subject_id, hash) VALUES ('x', 'clue', 1, '\\x00')",
                 "INSERT INTO audit_heads (subject_type, subject_id) VALUES ('clue', 424242)",
                 "UPDATE audit_heads SET last_seq = 1", "DELETE FROM audit_events"):
        try:
            with rt.cursor() as cur:
                cur.execute(stmt)
            raise AssertionError(f"runtime role allowed: {stmt}")
        except psycopg2.errors.InsufficientPrivilege:
            pass
    (clue_id,), = a.q("SELECT min(id) FROM clues")
    (head_before,), = a.q("SELECT last_seq FROM audit_heads WHERE subject_type = 'clue' AND subject_id = %s",
                          (clue_id,))
    with rt.cursor() as cur:
        cur.execute("SELECT seq, prev_hash, subject_id FROM audit_append_many("
                    " '{1,NULL}', '{1,NULL}', '{test.note,test.note}', '{clue,clue}', ARRAY[%s, 777001]::bigint[],"
                    " '{1,NULL}', '{NULL,NULL}', '{NULL,NULL}', '{r1,r2}', ARRAY['{\"k\": 1}', NULL]::jsonb[],"
                    " '{5,NULL}')", (clue_id,))
        got = cur.fetchall()
    assert [r[2] for r in got] == [clue_id, 777001] and got[0][0] < got[1][0]
    (last_hash,), = a.q("SELECT hash FROM audit_events WHERE seq = %s", (head_before,))
    assert bytes(got[0][1]) == bytes(last_hash) and got[1][1] is None, "extends the chain from its head"
    assert a.q("SELECT last_seq FROM audit_heads WHERE subject_type = 'clue' AND subject_id = %s",
               (clue_id,)) == [(got[0][0],)]
    # Chains that all exist (a batch of moves) take the short way: locked, then extended.
    (c2,), = a.q("SELECT max(id) FROM clues")
    heads = dict(a.q("SELECT subject_id, last_hash FROM audit_heads WHERE subject_type = 'clue'"
                     " AND subject_id IN (%s, %s)", (clue_id, c2)))
    with rt.cursor() as cur:
        cur.execute("SELECT subject_id, prev_hash, hash FROM audit_append_many("
                    " '{1,1}', '{1,1}', '{test.note,test.note}', '{clue,clue}', ARRAY[%s, %s]::bigint[],"
                    " '{1,1}', '{NULL,NULL}', '{NULL,NULL}', '{r3,r4}', ARRAY[NULL, NULL]::jsonb[], '{5,5}')",
                    (c2, clue_id))
        got = cur.fetchall()
    assert [r[0] for r in got] == [c2, clue_id], got
    assert [bytes(r[1]) for r in got] == [bytes(heads[c2]), bytes(heads[clue_id])], "extends each chain from its head"
    assert dict(a.q("SELECT subject_id, last_hash FROM audit_heads WHERE subject_type = 'clue'"
                    " AND subject_id IN (%s, %s)", (clue_id, c2))) == {r[0]: r[2] for r in got}
    for args in ("'{1,1}', '{1,1}', '{x,x}', '{clue,clue}', '{777002,777002}', '{1,1}', '{NULL,NULL}',"
                 " '{NULL,NULL}', '{NULL,NULL}', '{NULL,NULL}', '{NULL,NULL}'",
                 # one existing chain twice
                 f"'{{1,1}}', '{{1,1}}', '{{x,x}}', '{{clue,clue}}', '{{{clue_id},{clue_id}}}', '{{1,1}}',"
                 " '{NULL,NULL}', '{NULL,NULL}', '{NULL,NULL}', '{NULL,NULL}', '{NULL,NULL}'",
                 "'{1}', '{1,1}', '{x,x}', '{clue,clue}', '{777003,777004}', '{1,1}', '{NULL,NULL}',"
                 " '{NULL,NULL}', '{NULL,NULL}', '{NULL,NULL}', '{NULL,NULL}'"):
        try:
            with rt.cursor() as cur:
                cur.execute(f"SELECT audit_append_many({args})")
            raise AssertionError("audit_append_many accepted " + args)
        except psycopg2.errors.RaiseException:
            pass
    # clue.submit events only (clue_submit_many()'s call): each starts its chain, head and all.
    with rt.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT seq, subject_id, prev_hash, hash, txid FROM audit_append_many("
                    " '{1,1}', '{1,1}', '{clue.submit,clue.submit}', '{clue,clue}', '{777006,777005}',"
                    " '{1,1}', '{NULL,NULL}', '{ACCEPTED,ACCEPTED}', '{NULL,NULL}', '{NULL,NULL}', '{NULL,NULL}')")
        got = cur.fetchall()
        cur.execute("SELECT txid_current()")
        (txid,), = cur.fetchall()
        cur.execute("COMMIT")
    assert [r[1] for r in got] == [777006, 777005] and got[0][0] < got[1][0], "seqs in array order"
    assert all(r[2] is None for r in got) and all(r[4] == txid for r in got), got
    assert sorted(a.q("SELECT subject_id, last_seq, last_hash FROM audit_heads WHERE subject_type = 'clue'"
                      " AND subject_id IN (777005, 777006)")) == sorted((r[1], r[0], r[3]) for r in got)
    # A clue.submit never restarts a chain that exists (one with a head, or twice in one call):
    # the heads' key refuses it, and nothing of the call stays.
    events = a.q("SELECT count(*) FROM audit_events")
    heads = a.q("SELECT * FROM audit_heads ORDER BY subject_type, subject_id")
    for ids in (f"'{{777007,{clue_id}}}'", "'{777008,777008}'", "'{777005,777009}'"):
        try:
            with rt.cursor() as cur:
                cur.execute("SELECT count(*) FROM audit_append_many('{1,1}', '{1,1}', '{clue.submit,clue.submit}',"
                            f" '{{clue,clue}}', {ids}, '{{1,1}}', '{{NULL,NULL}}', '{{ACCEPTED,ACCEPTED}}',"
                            " '{NULL,NULL}', '{NULL,NULL}', '{NULL,NULL}')")
            raise AssertionError("audit_append_many restarted a chain: " + ids)
        except psycopg2.errors.UniqueViolation:
            pass
    assert a.q("SELECT count(*) FROM audit_events") == events
    assert a.q("SELECT * FROM audit_heads ORDER BY subject_type, subject_id") == heads
    check_chains(a)


def test_concurrent_batches_and_retries(c):
    """Batches and single submits of the same units from several connections at once: no
    deadlock, no error, the numbers stay gapless, every chain verifies. A retry running on its
    own while the batch that holds its key is open waits for it and answers the batch's clue."""
    a = c.a
    U, P = a.units, a.users
    errors = []

    def worker(w):
        conn = a.runtime()
        try:
            for r in range(6):
                calls = [call(P[(w + k) % 4], U[(w + k) % 4], i=100 + 10 * w + k, reporter=k % 2 == 1)
                         for k in range(3 + (w + r) % 4)]
                a.batch(calls, conn)
                a.submit(call(P[w % 4], U[w % 4], i=200 + 10 * w + r), conn)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == [], errors
    check_gapless(a)
    check_chains(a)

    # The retry: the batch's transaction holds the key's lock until it commits.
    key = str(uuid.uuid4())
    holder = a.runtime()
    holder.autocommit = False
    got = a.batch([call(P[1], U[1], i=300), call(P[0], U[0], key=key, i=301, reporter=True)], holder)
    out = {}

    def run_retry():
        conn = a.runtime()
        try:
            out["row"] = a.submit(call(P[0], U[0], key=key, i=301, reporter=True), conn)
        finally:
            conn.close()

    retry = threading.Thread(target=run_retry)
    retry.start()
    harness.wait_for(lambda: a.q("SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                                 " AND wait_event_type = 'Lock' AND wait_event = 'advisory'", (a.name,))[0][0] == 1,
                     what="the retry waiting for the batch's key")
    holder.commit()
    holder.close()
    retry.join(30)
    assert out["row"] == got[2], (out, got)
    check_gapless(a)
    check_chains(a)


if __name__ == "__main__":
    harness.run_tests(dict(globals()), setup, teardown)
