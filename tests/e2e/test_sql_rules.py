"""One source for each rule (issue 9, Build 7), checked on the live schema.

The migrations are applied to a fresh database and the bodies of the functions PostgreSQL
now holds are read back (pg_proc), so what is checked is what runs, whichever migration
last replaced a function:

- every SQLSTATE our functions raise is a row of the one C table (server/service/
  sql_errors.c); no function raises the legacy numeric form "CLnnn" any more;
- no function repeats a rule of the domain: no state names of the state machine's terminal
  states and no unit kinds, outside the functions listed in LITERALS_ALLOWED (statistics count
  by state; the bootstrap creates the ADMIN unit);
- every CREATE OR REPLACE from 0008 on (where the convention starts) says in its first
  line which earlier definition it replaces, and that file did define it;
- clued answers a raced change with the code the table gives and the function's message.
"""

import glob
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

MIGRATIONS = sorted(glob.glob(os.path.join(harness.SRC, "migrations", "*.sql")))
# The AdminService's and TokenService's functions (admin_*, token_*) may still raise the
# legacy form; they are left to the ADMIN-separation change of issue 9.
# clue_stats counts transitions by state (a report, not a rule); admin_bootstrap creates the
# ADMIN unit and its first ADMIN user, which is data, not a rule. Since 0011 no function raises
# the legacy CLnnn form and none repeats which role fits which unit. admin_working_exists and
# admin_keep_one_working (0045) look for the users who administer, by their role, to keep one.
LITERALS_ALLOWED = {"clue_stats", "clue_bulletin", "admin_bootstrap", "admin_bootstrap_make", "admin_working_exists",
                    "admin_keep_one_working"}
GRPC = {"OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
        "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
        "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
        "DATA_LOSS": 15, "UNAUTHENTICATED": 16}


def c_table():
    """The rows of sql_errors[] as {sqlstate: grpc code number}."""
    with open(os.path.join(harness.SRC, "server", "service", "sql_errors.c"), encoding="utf-8") as f:
        src = f.read()
    rows = re.findall(r'\{"(CL[A-Z0-9]{3})", GRPC_([A-Z_]+),', src)
    assert rows, "no rows found in sql_errors.c"
    return {st: GRPC[name] for st, name in rows}


class SqlRules(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = harness.Postgres.get()
        cls.db = cls.pg.new_database("rules")
        cls.conn = cls.pg.connect(cls.db)
        for path in MIGRATIONS:
            with open(path, encoding="utf-8") as f:
                sql = f.read()
            cls.conn.autocommit = False
            with cls.conn.cursor() as cur:
                cur.execute(sql)
            cls.conn.commit()
            cls.conn.autocommit = True
        with cls.conn.cursor() as cur:
            cur.execute("SELECT p.proname, p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                        " WHERE n.nspname = 'public'")
            cls.bodies = cur.fetchall()

    @classmethod
    def tearDownClass(cls):
        cls.conn.close()
        admin = cls.pg.connect()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{cls.db}" WITH (FORCE)')
        admin.close()

    def test_every_raised_sqlstate_is_in_the_c_table(self):
        table = c_table()
        self.assertEqual(len(set(table.values())), len(table), "one name per code")
        raised = {}
        for name, body in self.bodies:
            for st in re.findall(r"ERRCODE\s*=\s*'(CL[A-Z0-9]{3})'", body):
                raised.setdefault(st, set()).add(name)
        named = {st for st in raised if not re.fullmatch(r"CL\d{3}", st)}
        self.assertLessEqual(named, set(table), f"raised but not in sql_errors.c: {named - set(table)}")
        legacy = {fn for st, fns in raised.items() if re.fullmatch(r"CL\d{3}", st) for fn in fns}
        self.assertEqual(legacy, set(), "functions still raising CLnnn")
        print(f"{len(named)} named SQLSTATEs raised, {len(legacy)} functions with the legacy form", flush=True)

    def test_invalid_argument_names_its_field_first(self):
        """clued names the BadRequest field of a CLARG by the message's first word (svc_fail_db):
        every CLARG message starts with a field of a request, followed by ':' or ' '."""
        fields = set()
        for path in glob.glob(os.path.join(harness.SRC, "proto", "clue", "**", "*.proto"), recursive=True):
            with open(path, encoding="utf-8") as f:
                fields |= set(re.findall(r"^\s*(?:repeated\s+)?[\w.]+\s+(\w+)\s*=\s*\d+", f.read(), re.M))
        seen = 0
        for name, body in self.bodies:
            for msg in re.findall(r"ERRCODE\s*=\s*'CLARG',\s*MESSAGE\s*=\s*(?:format\()?'([^']*)'", body):
                seen += 1
                m = re.match(r"([a-z0-9_.]+)[: ]", msg)
                self.assertTrue(m and m.group(1) in fields, f"{name}: CLARG message names no field first: {msg!r}")
        self.assertGreater(seen, 0)

    def test_no_function_repeats_a_domain_rule(self):
        pattern = re.compile(r"'(CLOSED|TRANSFERRED_TO_JUDICIAL|GROUP|ROOM|REGION|ADMIN)'")
        offenders = {name: sorted(set(pattern.findall(body))) for name, body in self.bodies
                     if pattern.search(body) and name not in LITERALS_ALLOWED}
        self.assertEqual(offenders, {})

    def test_replacements_name_what_they_replace(self):
        defined = {}  # function name -> files that define it
        count = 0
        for path in MIGRATIONS:
            base = os.path.basename(path)
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
            for i, line in enumerate(lines):
                m = re.match(r"CREATE (OR REPLACE )?FUNCTION (\w+)\(", line)
                if not m:
                    continue
                name = m.group(2)
                if m.group(1) and base >= "0008":
                    count += 1
                    # The comment block right above, its first line naming the replaced definition.
                    j = i
                    while j > 0 and lines[j - 1].startswith("--"):
                        j -= 1
                    first = lines[j] if j < i else ""
                    r = re.match(r"-- Replaces (\w+|the definition) of (\d{4}_\w+\.sql)", first)
                    self.assertTrue(r, f"{base}: {name}: first comment line must say what it replaces: {first!r}")
                    self.assertIn(r.group(1), (name, "the definition"), f"{base}: {first!r}")
                    self.assertIn(r.group(2), defined.get(name, set()), f"{base}: {name} not defined in {r.group(2)}")
                defined.setdefault(name, set()).add(base)
        self.assertGreater(count, 0)

    def test_raised_names_reach_the_client(self):
        """A change that races another reaches the client with the table's code and the
        function's message: AddNote of R1's member decided against owner G1, the clue handed
        to G2 while the note waits for the row (CLVER -> ABORTED). R1, the liaison room of
        both, still sees the clue, so the note's look at the caller's sight under the lock
        passes and note_add's owner compare answers."""
        import threading

        import grpc
        import world

        dbname = self.pg.new_database("rules_srv")
        srv = harness.Clued(self.pg.url(dbname)).start()
        w = None
        try:
            w = world.build(srv)
            pb = harness.stubs().clue_pb2
            x = w.G1.member.clue.SubmitClue(pb.SubmitClueRequest(
                request_id=harness.new_request_id(), title="t", summary="s",
                source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=pb.SubjectPerson(name="n"),
                host_unit="市发展改革委"), timeout=20)
            blocker = self.pg.connect(dbname)
            blocker.autocommit = False
            with blocker.cursor() as cur:
                cur.execute("SELECT 1 FROM clues WHERE id = %s FOR UPDATE", (x.id,))
            out = {}

            def add_note():
                try:
                    w.R1.member.clue.AddNote(pb.AddNoteRequest(clue_id=x.id, kind=pb.NOTE_KIND_OTHER, text="n",
                                                               request_id=harness.new_request_id()), timeout=30)
                    out["code"] = grpc.StatusCode.OK
                except grpc.RpcError as e:
                    out["code"], out["msg"] = e.code(), e.details()

            t = threading.Thread(target=add_note)
            t.start()
            watcher = self.pg.connect(dbname)
            harness.wait_for(lambda: self._one(watcher), what="the note waiting for the clue's row")
            watcher.close()
            with blocker.cursor() as cur:
                cur.execute("UPDATE clues SET owner_unit = %s WHERE id = %s", (w.G2.id, x.id))
            blocker.commit()
            blocker.close()
            t.join(30)
            self.assertEqual(c_table()["CLVER"], GRPC["ABORTED"])
            self.assertEqual(out.get("code"), grpc.StatusCode.ABORTED, out)
            self.assertIn("was handed over meanwhile", out["msg"])
        finally:
            if w is not None:
                w.close()
            srv.stop()

    @staticmethod
    def _one(conn):
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND query LIKE '%FROM clues WHERE id = $1 FOR SHARE%'")
            return cur.fetchone()[0] > 0

    def test_functions_raise_the_names(self):
        """Called directly as a racing transaction would find the rows, the functions raise
        the named SQLSTATEs."""
        import psycopg2

        with self.conn.cursor() as cur:
            cur.execute("INSERT INTO units (kind, code, name) VALUES ('ROOM', 'RX', 'room') RETURNING id")
            room = cur.fetchone()[0]
        for sql, want in (("SELECT case_lock(987654321)", "CLNOF"),
                          ("SELECT clue_refuse_stale(987654321, 1)", "CLNOF")):
            with self.assertRaises(psycopg2.Error) as cm:
                with self.conn.cursor() as cur:
                    cur.execute(sql)
            self.assertEqual(cm.exception.pgcode, want, sql)
        self.assertGreater(room, 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
