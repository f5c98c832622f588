"""The schema of migrations/ checked directly in PostgreSQL: unit, user and token
constraints; the audit trail's append-only rule, its hash chains recomputed here from the
documented canonical encoding, tamper detection, concurrent appends to one chain, chains
that do not block each other, and the NOTIFY on append."""

import glob
import hashlib
import os
import select
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chain  # noqa: E402
import harness  # noqa: E402

import psycopg2  # noqa: E402
import psycopg2.errors  # noqa: E402


def append(conn, actor=1, unit=10, action="note", stype="clue", sid=1, owner=10, frm=None,
           to=None, reason=None, details=None):
    with conn.cursor() as cur:
        cur.execute("SELECT (audit_append(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)).seq",
                    (actor, unit, action, stype, sid, owner, frm, to, reason, details))
        return cur.fetchone()[0]


class SchemaTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = harness.Postgres.get()

    def setUp(self):
        self.db = self.pg.new_database("schema")
        self.conn = self.pg.connect(self.db)
        for path in sorted(glob.glob(os.path.join(harness.SRC, "migrations", "*.sql"))):
            with open(path, encoding="utf-8") as f:
                sql = f.read()
            self.conn.autocommit = False
            with self.conn.cursor() as cur:
                cur.execute(sql)
            self.conn.commit()
            self.conn.autocommit = True
        self.others = []

    def tearDown(self):
        for c in self.others:
            c.close()
        self.conn.close()
        admin = self.pg.connect()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
        admin.close()

    def other(self):
        c = self.pg.connect(self.db)
        self.others.append(c)
        return c

    def fails(self, sqlstate, sql, args=()):
        with self.assertRaises(psycopg2.Error) as cm:
            with self.conn.cursor() as cur:
                cur.execute(sql, args)
        self.assertEqual(cm.exception.pgcode, sqlstate, str(cm.exception))

    def exec(self, sql, args=()):
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else None

    # ---- identity -------------------------------------------------------------------------

    def test_units(self):
        room = self.exec("INSERT INTO units (kind, code, name) VALUES ('ROOM', 'R1', '第一监督检查室') "
                         "RETURNING id")[0][0]
        region = self.exec("INSERT INTO units (kind, code, name) VALUES ('REGION', 'X1', 'Region') "
                           "RETURNING id")[0][0]
        group = self.exec("INSERT INTO units (kind, code, name, liaison_room_id, host_units) "
                          "VALUES ('GROUP', 'G03', 'Group 3', %s, '{Host A,Host B}') RETURNING id",
                          (room,))[0][0]
        self.assertEqual(self.exec("SELECT host_units FROM units WHERE id = %s", (group,))[0][0],
                         ["Host A", "Host B"])
        self.assertEqual(self.exec("SELECT host_units FROM units WHERE id = %s", (room,))[0][0], [])
        # A group needs a liaison room, and it must be a ROOM.
        self.fails("23514", "INSERT INTO units (kind, code, name) VALUES ('GROUP', 'G04', 'G4')")
        self.fails("23503", "INSERT INTO units (kind, code, name, liaison_room_id) "
                            "VALUES ('GROUP', 'G04', 'G4', %s)", (region,))
        self.fails("23503", "INSERT INTO units (kind, code, name, liaison_room_id) "
                            "VALUES ('GROUP', 'G04', 'G4', %s)", (group,))
        self.fails("23503", "INSERT INTO units (kind, code, name, liaison_room_id) "
                            "VALUES ('GROUP', 'G04', 'G4', 999999)")
        # Only groups have one.
        self.fails("23514", "INSERT INTO units (kind, code, name, liaison_room_id) "
                            "VALUES ('REGION', 'X2', 'X2', %s)", (room,))
        # A room named by a group cannot stop being a room; re-pointing the group is fine.
        self.fails("23503", "UPDATE units SET kind = 'REGION' WHERE id = %s", (room,))
        room2 = self.exec("INSERT INTO units (kind, code, name) VALUES ('ROOM', 'R2', 'Room 2') "
                          "RETURNING id")[0][0]
        self.exec("UPDATE units SET liaison_room_id = %s WHERE id = %s", (room2, group))
        self.exec("UPDATE units SET kind = 'REGION' WHERE id = %s", (room,))
        # Codes and names are unique; codes fit in a registration number.
        self.fails("23505", "INSERT INTO units (kind, code, name) VALUES ('ROOM', 'R2', 'other')")
        self.fails("23505", "INSERT INTO units (kind, code, name) VALUES ('ROOM', 'R9', 'Room 2')")
        self.fails("23514", "INSERT INTO units (kind, code, name) VALUES ('ROOM', 'R-9', 'R9')")
        self.fails("23514", "INSERT INTO units (kind, code, name) VALUES ('ROOM', 'R9', '  ')")
        self.fails("23514", "INSERT INTO units (kind, code, name) VALUES ('TEAM', 'T1', 'T1')")

    def test_users_and_tokens(self):
        u1 = self.exec("INSERT INTO units (kind, code, name) VALUES ('ADMIN', 'ADM', 'Admin') "
                       "RETURNING id")[0][0]
        u2 = self.exec("INSERT INTO units (kind, code, name) VALUES ('REGION', 'X1', 'Region') "
                       "RETURNING id")[0][0]
        alice = self.exec("INSERT INTO users (unit_id, name, role) VALUES (%s, 'alice', 'ADMIN') "
                          "RETURNING id, disabled, created_at IS NOT NULL", (u1,))[0]
        self.assertEqual(alice[1:], (False, True))
        self.exec("INSERT INTO users (unit_id, name, role) VALUES (%s, 'alice', 'LEADER')", (u2,))
        self.fails("23505", "INSERT INTO users (unit_id, name, role) VALUES (%s, 'alice', 'MEMBER')",
                   (u1,))
        self.fails("23514", "INSERT INTO users (unit_id, name, role) VALUES (%s, 'bob', 'BOSS')",
                   (u1,))
        self.fails("23503", "INSERT INTO users (unit_id, name, role) VALUES (999999, 'bob', 'MEMBER')")
        digest = hashlib.sha256(b"secret").digest()
        self.exec("INSERT INTO tokens (user_id, token_sha256, note, issued_by) VALUES (%s, %s, 'first', %s)",
                  (alice[0], digest, alice[0]))
        self.fails("23505", "INSERT INTO tokens (user_id, token_sha256, issued_by) VALUES (%s, %s, %s)",
                   (alice[0], digest, alice[0]))
        self.fails("23514", "INSERT INTO tokens (user_id, token_sha256, issued_by) VALUES (%s, %s, %s)",
                   (alice[0], digest[:31], alice[0]))
        # Every token names who issued it, an existing user.
        other = hashlib.sha256(b"other").digest()
        self.fails("23502", "INSERT INTO tokens (user_id, token_sha256) VALUES (%s, %s)", (alice[0], other))
        self.fails("23503", "INSERT INTO tokens (user_id, token_sha256, issued_by) VALUES (%s, %s, 999999)",
                   (alice[0], other))
        self.exec("UPDATE tokens SET revoked_at = now() WHERE token_sha256 = %s", (digest,))

    # ---- audit -------------------------------------------------------------------------------

    def test_chain_matches_documented_encoding(self):
        append(action="submit", sid=7, to="ACCEPTED", reason="举报 线索 ü",
               details='{"title": "线索", "n": 1}', conn=self.conn)
        append(action="create", stype="user", sid=7, owner=None, actor=None, unit=None,
               conn=self.conn)
        append(action="move", sid=7, frm="ACCEPTED", to="PRELIMINARY_CHECK", reason="",
               details="{}", conn=self.conn)
        append(action="note", sid=8, reason="line one\nline two", conn=self.conn)
        append(action="view_reporter", sid=7, conn=self.conn)
        evs = chain.events(self.conn)
        self.assertEqual(len(evs), 5)
        for ev in evs:
            # The hash is SHA-256 of exactly the documented bytes ...
            self.assertEqual(chain.event_hash(ev), ev["hash"])
            # ... which the server-side function produces too (verifiers may reuse it).
            sql_canon = self.exec("SELECT convert_to(audit_canonical(e), 'UTF8') FROM audit_events e "
                                  "WHERE seq = %s", (ev["seq"],))[0][0]
            self.assertEqual(bytes(sql_canon), chain.canonical(ev))
        # Each event links to its own subject's previous one, and each head names the last.
        self.assertIsNone(chain.first_break(self.conn))
        self.assertIsNone(evs[0]["prev_hash"])
        self.assertEqual(evs[0]["details"], '{"n": 1, "title": "线索"}')  # jsonb's rendering
        self.assertEqual(evs[1]["details"], "{}")
        self.assertIsNone(evs[1]["owner_unit"])
        self.assertEqual(evs[2]["prev_hash"], evs[0]["hash"])
        self.assertEqual(evs[4]["prev_hash"], evs[2]["hash"])
        heads = dict(((st, sid), (seq, bytes(h))) for st, sid, seq, h in
                     self.exec("SELECT subject_type, subject_id, last_seq, last_hash FROM audit_heads"))
        self.assertEqual(heads[("clue", 7)], (evs[4]["seq"], evs[4]["hash"]))
        self.assertEqual(heads[("clue", 8)], (evs[3]["seq"], evs[3]["hash"]))
        self.assertEqual(heads[("user", 7)], (evs[1]["seq"], evs[1]["hash"]))
        # txid is the appending transaction's.
        txids = self.exec("SELECT count(DISTINCT txid) FROM audit_events")[0][0]
        self.assertEqual(txids, 5)
        self.assertEqual([ev["actor_token_id"] for ev in evs], [None] * 5)

    def test_acting_token_is_recorded_and_hashed(self):
        # The token set for the transaction (as the server sets it) lands in the event and in
        # its hash, as a thirteenth field; it does not outlive the transaction.
        self.conn.autocommit = False
        self.exec("SELECT set_config('clued.token_id', '42', true)")
        append(action="submit", sid=9, to="ACCEPTED", conn=self.conn)
        self.conn.commit()
        self.conn.autocommit = True
        append(action="note", sid=9, conn=self.conn)
        evs = chain.events(self.conn, "clue", 9)
        self.assertEqual([ev["actor_token_id"] for ev in evs], [42, None])
        self.assertTrue(chain.canonical(evs[0]).endswith(b"\n2:42\n"))
        for ev in evs:
            self.assertEqual(chain.event_hash(ev), ev["hash"])
            sql_canon = self.exec("SELECT convert_to(audit_canonical(e), 'UTF8') FROM audit_events e "
                                  "WHERE seq = %s", (ev["seq"],))[0][0]
            self.assertEqual(bytes(sql_canon), chain.canonical(ev))
        self.assertIsNone(chain.first_break(self.conn))
        # A token id rewritten by someone who can bypass the trigger breaks the chain.
        self.exec("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
        self.exec("UPDATE audit_events SET actor_token_id = 7 WHERE seq = %s", (evs[0]["seq"],))
        self.exec("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only")
        self.assertIsNotNone(chain.first_break(self.conn))
        broken = self.exec("SELECT seq, problem FROM audit_verify('clue', 9)")[0]
        self.assertEqual(broken, (evs[0]["seq"], "CHANGED_CONTENT"))

    def test_append_only_and_tamper_detection(self):
        for i in range(4):
            append(sid=1, reason=f"r{i}", conn=self.conn)
        self.fails("42501", "UPDATE audit_events SET reason = 'forged' WHERE seq = 2")
        self.fails("42501", "DELETE FROM audit_events WHERE seq = 2")
        self.fails("42501", "TRUNCATE audit_events")
        self.fails("42501", "UPDATE audit_events SET reason = 'forged' WHERE false")
        self.assertEqual(self.exec("SELECT count(*) FROM audit_events")[0][0], 4)
        self.assertIsNone(chain.first_break(self.conn))
        # A superuser who disables the trigger can edit, but the chain shows it.
        self.exec("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
        self.exec("UPDATE audit_events SET reason = 'forged' WHERE seq = 2")
        self.assertEqual(chain.first_break(self.conn), 2)
        self.exec("UPDATE audit_events SET reason = 'r1' WHERE seq = 2")
        self.assertIsNone(chain.first_break(self.conn))
        self.exec("DELETE FROM audit_events WHERE seq = 3")
        self.assertEqual(chain.first_break(self.conn), 4)
        self.exec("DELETE FROM audit_events WHERE seq = 4")
        self.assertEqual(chain.first_break(self.conn), -1)  # only the head shows the tail is gone
        self.exec("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only")
        self.fails("42501", "DELETE FROM audit_events")

    def test_concurrent_appends_to_one_chain(self):
        threads, per = 8, 20
        errors = []

        def worker(n):
            try:
                c = psycopg2.connect(host=self.pg.host, port=self.pg.port, user="postgres",
                                     dbname=self.db)
                c.autocommit = True
                for i in range(per):
                    append(sid=42, action=f"w{n}", reason=str(i), conn=c)
                c.close()
            except Exception as e:  # reported below
                errors.append(e)

        ts = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errors, [])
        evs = chain.events(self.conn, subject_id=42)
        self.assertEqual(len(evs), threads * per)
        self.assertIsNone(chain.first_break(self.conn))
        head = self.exec("SELECT last_seq FROM audit_heads WHERE subject_id = 42")[0][0]
        self.assertEqual(head, evs[-1]["seq"])

    def test_chains_do_not_block_each_other(self):
        holder = self.other()
        holder.autocommit = False
        append(sid=1, conn=holder)  # chain (clue, 1) locked until holder ends
        other = self.other()
        with other.cursor() as cur:
            cur.execute("SET lock_timeout = '5s'")
        append(sid=2, conn=other)  # another chain: no wait
        with other.cursor() as cur:
            cur.execute("SET lock_timeout = '200ms'")
        with self.assertRaises(psycopg2.errors.LockNotAvailable):
            append(sid=1, conn=other)  # the same chain waits for the holder
        holder.commit()
        append(sid=1, conn=other)
        self.assertIsNone(chain.first_break(self.conn))

    def test_append_does_not_notify(self):
        # A NOTIFY in every audited transaction would serialise their commits (0016): clued
        # wakes its own watchers and others follow the tail. A NOTIFY sent after the append
        # is the fence: notifications arrive in commit order, so one from the append would
        # come first.
        listener = self.other()
        with listener.cursor() as cur:
            cur.execute("LISTEN audit_events")
        append(sid=3, conn=self.conn)
        with self.conn.cursor() as cur:
            cur.execute("SELECT pg_notify('audit_events', 'fence')")
        deadline = 5.0
        while not listener.notifies and deadline > 0:
            if select.select([listener], [], [], 0.1) != ([], [], []):
                listener.poll()
            deadline -= 0.1
        self.assertEqual([n.payload for n in listener.notifies], ["fence"])


class NewerSchemaTest(unittest.TestCase):
    def test_serve_refuses_a_schema_newer_than_the_binary(self):
        # A migration this binary does not have was applied by a newer clued: it may have
        # changed what this one reads and writes. migrate warns and changes nothing; serve
        # refuses to start.
        pg = harness.Postgres.get()
        db = pg.new_database("newer")
        srv = harness.Clued(pg.url(db))
        srv.run("migrate")
        conn = pg.connect(db)
        with conn.cursor() as cur:
            cur.execute("INSERT INTO schema_migrations (version, name, checksum)"
                        " VALUES (9999, '9999_future_change.sql', 'deadbeef')")
        conn.close()
        r = srv.run("migrate")
        self.assertIn("warn: 9999_future_change.sql (version 9999) is applied but not in", r.stderr)
        r = srv.run("serve", "--listen", "127.0.0.1:0", check=False)
        self.assertNotEqual(r.returncode, 0, r.stderr)
        self.assertIn("9999_future_change.sql (version 9999) is applied but this binary does not have it",
                      r.stderr)
        self.assertIn("the schema is newer than this clued", r.stderr)

    def test_a_wrong_migrations_directory_is_named(self):
        # `--migrations /etc` read as a schema newer than clued (serve), or as nothing to do
        # (migrate, exit 0): a directory with no migration is refused, naming it; one that
        # lacks migrations the database has is named as what lacks them.
        import shutil
        import tempfile

        pg = harness.Postgres.get()
        db = pg.new_database("wrongdir")
        srv = harness.Clued(pg.url(db))
        srv.run("migrate")
        d = tempfile.mkdtemp(prefix="clued-nomig-")
        try:
            with open(os.path.join(d, "hosts"), "w") as f:
                f.write("127.0.0.1 localhost\n")
            for cmd in (("migrate",), ("migrate", "--repair"), ("serve", "--listen", "127.0.0.1:0")):
                r = srv.run(*cmd, "--migrations", d, check=False)
                self.assertEqual(r.returncode, 1, (cmd, r.stderr))
                self.assertIn(f"{d} holds no migrations (files named NNNN_name.sql)", r.stderr)
                self.assertNotIn("newer", r.stderr)
                self.assertNotIn("up to date", r.stderr)
            for f in sorted(glob.glob(os.path.join(harness.SRC, "migrations", "*.sql")))[:3]:
                shutil.copy(f, d)
            r = srv.run("serve", "--listen", "127.0.0.1:0", "--migrations", d, check=False)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertRegex(r.stderr, r"\(version \d+\) is applied but not in %s \(--migrations\)" % d)
            self.assertNotIn("newer than this clued", r.stderr)
        finally:
            shutil.rmtree(d)


if __name__ == "__main__":
    unittest.main(verbosity=2)
