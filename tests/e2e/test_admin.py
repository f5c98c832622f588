"""AdminService, bootstrap, authentication and the audit rules, against the real clued and
PostgreSQL."""

import contextlib
import glob
import os
import re
import shutil
import sys
import tempfile

import grpc

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import expect_status  # noqa: E402

S = harness.stubs()
A = S.admin_pb2
C = S.common_pb2
ROOM, GROUP, REGION, ADMIN_KIND = C.UNIT_KIND_ROOM, C.UNIT_KIND_GROUP, C.UNIT_KIND_REGION, C.UNIT_KIND_ADMIN


class Ctx:
    pass


def setup():
    c = Ctx()
    pg = harness.Postgres.get()
    c.dbname = pg.new_database()
    c.db = pg.connect(c.dbname)
    c.srv = harness.Clued(pg.url(c.dbname)).start()
    out = c.srv.run("bootstrap").stdout
    assert 'created ADMIN user "admin"' in out and "restored" not in out, out
    c.admin_token = re.search(r"ct_[0-9a-f]{64}", out).group(0)
    c.ch = grpc.insecure_channel(c.srv.addr)
    c.admin = S.admin_pb2_grpc.AdminServiceStub(c.ch)
    c.md = [("authorization", "Bearer " + c.admin_token)]
    return c


def teardown(c):
    c.ch.close()
    c.db.close()
    c.srv.stop()


def audit_count(c):
    with c.db.cursor() as cur:
        cur.execute("SELECT count(*) FROM audit_events")
        return cur.fetchone()[0]


def test_bootstrap_is_idempotent(c):
    before = audit_count(c)
    out = c.srv.run("bootstrap").stdout
    assert "already bootstrapped" in out, out
    assert not re.search(r"ct_[0-9a-f]{64}", out)
    assert audit_count(c) == before
    with c.db.cursor() as cur:
        cur.execute("SELECT count(*) FROM users WHERE role = 'ADMIN'")
        assert cur.fetchone()[0] == 1
        # Only the hash of the token is stored.
        cur.execute("SELECT encode(token_sha256, 'hex') FROM tokens")
        hashes = [r[0] for r in cur.fetchall()]
    import hashlib

    assert hashlib.sha256(c.admin_token.encode()).hexdigest() in hashes
    assert c.admin_token not in str(hashes)


def test_create_and_list_units(c):
    before = audit_count(c)
    room = c.admin.CreateUnit(A.CreateUnitRequest(kind=ROOM, code="R10", name="第十监督检查室"), metadata=c.md)
    assert room.id > 0 and room.kind == ROOM and room.code == "R10" and room.created_at_ms > 0
    grp = c.admin.CreateUnit(A.CreateUnitRequest(kind=GROUP, code="G10", name="驻某局纪检监察组",
                                                 liaison_room_id=room.id, host_units=["某局", "某中心"]), metadata=c.md)
    assert grp.liaison_room_id == room.id and list(grp.host_units) == ["某局", "某中心"]
    reg = c.admin.CreateUnit(A.CreateUnitRequest(kind=REGION, code="X10", name="某区纪委监委"), metadata=c.md)
    assert audit_count(c) == before + 3
    units = c.admin.ListUnits(A.ListUnitsRequest(), metadata=c.md).units
    assert {room.id, grp.id, reg.id} <= {u.id for u in units}
    rooms = c.admin.ListUnits(A.ListUnitsRequest(kind=ROOM), metadata=c.md).units
    assert all(u.kind == ROOM for u in rooms) and room.id in {u.id for u in rooms}
    # One audit event per change, each naming the new unit.
    with c.db.cursor() as cur:
        cur.execute("SELECT subject_id, action FROM audit_events WHERE seq > (SELECT max(seq) - 3 FROM audit_events) ORDER BY seq")
        assert cur.fetchall() == [(room.id, "unit.create"), (grp.id, "unit.create"), (reg.id, "unit.create")]


def test_create_unit_bad_fields(c):
    room = c.admin.CreateUnit(A.CreateUnitRequest(kind=ROOM, code="R11", name="R11 room"), metadata=c.md)
    before = audit_count(c)
    cases = [
        (A.CreateUnitRequest(code="R12", name="n"), "kind"),
        (A.CreateUnitRequest(kind=9, code="R12", name="n"), "kind"),
        (A.CreateUnitRequest(kind=ROOM, code="", name="n"), "code"),
        (A.CreateUnitRequest(kind=ROOM, code="r12", name="n"), "code"),
        (A.CreateUnitRequest(kind=ROOM, code="R-12", name="n"), "code"),
        (A.CreateUnitRequest(kind=ROOM, code="R12", name=""), "name"),
        (A.CreateUnitRequest(kind=ROOM, code="R12", name="   "), "name"),
        (A.CreateUnitRequest(kind=ROOM, code="R12", name="x" * 101), "name"),
        (A.CreateUnitRequest(kind=ROOM, code="R12", name="bad\x01name"), "name"),
        (A.CreateUnitRequest(kind=GROUP, code="G12", name="n"), "liaison_room_id"),
        (A.CreateUnitRequest(kind=GROUP, code="G12", name="n", liaison_room_id=999999), "liaison_room_id"),
        (A.CreateUnitRequest(kind=ROOM, code="R12", name="n", liaison_room_id=room.id), "liaison_room_id"),
        (A.CreateUnitRequest(kind=GROUP, code="G12", name="n", liaison_room_id=room.id, host_units=[""]), "host_units"),
    ]
    for req, field in cases:
        expect_status(grpc.StatusCode.INVALID_ARGUMENT, c.admin.CreateUnit, req, metadata=c.md, details_has=[field])
    grp = c.admin.CreateUnit(A.CreateUnitRequest(kind=GROUP, code="G13", name="G13 group", liaison_room_id=room.id),
                             metadata=c.md)
    # A group is not a room: it cannot be a liaison.
    expect_status(grpc.StatusCode.INVALID_ARGUMENT, c.admin.CreateUnit,
                  A.CreateUnitRequest(kind=GROUP, code="G14", name="G14", liaison_room_id=grp.id), metadata=c.md,
                  details_has=["liaison_room_id"])
    assert audit_count(c) == before + 1


def test_duplicates(c):
    c.admin.CreateUnit(A.CreateUnitRequest(kind=ROOM, code="R20", name="R20 room"), metadata=c.md)
    before = audit_count(c)
    expect_status(grpc.StatusCode.ALREADY_EXISTS, c.admin.CreateUnit,
                  A.CreateUnitRequest(kind=ROOM, code="R20", name="other"), metadata=c.md, details_has=["R20"])
    expect_status(grpc.StatusCode.ALREADY_EXISTS, c.admin.CreateUnit,
                  A.CreateUnitRequest(kind=ROOM, code="R21", name="R20 room"), metadata=c.md, details_has=["R20 room"])
    unit = [u for u in c.admin.ListUnits(A.ListUnitsRequest(), metadata=c.md).units if u.code == "R20"][0]
    c.admin.CreateUser(A.CreateUserRequest(unit_id=unit.id, name="dup", role=C.ROLE_MEMBER), metadata=c.md)
    expect_status(grpc.StatusCode.ALREADY_EXISTS, c.admin.CreateUser,
                  A.CreateUserRequest(unit_id=unit.id, name="dup", role=C.ROLE_LEADER), metadata=c.md,
                  details_has=["dup"])
    assert audit_count(c) == before + 1
    # A name that only white space around it tells from another is that name: stored trimmed
    # (the ideographic space and a pasted byte-order mark too), and refused as a duplicate.
    for i, name in enumerate(("R20 room ", " R20 room", "R20 room\u3000", "\ufeffR20 room")):
        expect_status(grpc.StatusCode.ALREADY_EXISTS, c.admin.CreateUnit,
                      A.CreateUnitRequest(kind=ROOM, code=f"R2{2 + i}", name=name), metadata=c.md,
                      details_has=["R20 room"])
    for name in ("dup ", "\u3000dup", "\ufeffdup"):
        expect_status(grpc.StatusCode.ALREADY_EXISTS, c.admin.CreateUser,
                      A.CreateUserRequest(unit_id=unit.id, name=name, role=C.ROLE_MEMBER), metadata=c.md)
    spaced = c.admin.CreateUnit(A.CreateUnitRequest(kind=ROOM, code="R29", name="\u3000R29 room "), metadata=c.md)
    assert spaced.name == "R29 room", spaced
    u = c.admin.CreateUser(A.CreateUserRequest(unit_id=unit.id, name=" 张三\u3000", role=C.ROLE_MEMBER), metadata=c.md)
    assert u.name == "张三", u
    assert audit_count(c) == before + 3


def test_a_duplicate_long_name_is_named_whole(c):
    """A refusal names the duplicate whole, though a name may be 400 bytes of UTF-8 (100
    characters of 4 bytes): the database's message was kept in 255 bytes, cut inside a
    character, and the status message was then not UTF-8."""
    unit_name, user_name = "监" * 100, "😀" * 100
    unit = c.admin.CreateUnit(A.CreateUnitRequest(kind=ROOM, code="R60", name=unit_name), metadata=c.md)
    expect_status(grpc.StatusCode.ALREADY_EXISTS, c.admin.CreateUnit,
                  A.CreateUnitRequest(kind=ROOM, code="R61", name=unit_name), metadata=c.md,
                  details_has=[f"a unit named {unit_name} already exists"])
    c.admin.CreateUser(A.CreateUserRequest(unit_id=unit.id, name=user_name, role=C.ROLE_MEMBER), metadata=c.md)
    expect_status(grpc.StatusCode.ALREADY_EXISTS, c.admin.CreateUser,
                  A.CreateUserRequest(unit_id=unit.id, name=user_name, role=C.ROLE_MEMBER), metadata=c.md,
                  details_has=[f"already has a user named {user_name}"])


def test_names_that_are_the_same_text_are_one_name(c):
    """Names Unicode holds to be the same text (NFKC) are one name, for units and for a unit's
    users: a precomposed letter and its letter with a combining mark, a CJK compatibility
    ideograph (U+F907) and the ideograph it stands for, full-width letters and digits. The
    second is refused ALREADY_EXISTS as an exact duplicate is, naming the name that exists,
    with nothing written; names that only look alike are not touched (Latin "o", Cyrillic
    "о")."""
    same = [("Café Region", "Cafe\u0301 Region"), ("龜山区纪委", "\uf907山区纪委"), ("R70 room", "Ｒ７０ room")]
    for i, (first, second) in enumerate(same):
        c.admin.CreateUnit(A.CreateUnitRequest(kind=ROOM, code=f"R7{i}", name=first), metadata=c.md)
        before = audit_count(c)
        expect_status(grpc.StatusCode.ALREADY_EXISTS, c.admin.CreateUnit,
                      A.CreateUnitRequest(kind=ROOM, code=f"R7{i + 5}", name=second), metadata=c.md,
                      details_has=[f"a unit named {first} already exists"])
        assert audit_count(c) == before
    unit = make_unit(c, "R78")
    for first, second in (("Zoë", "Zoe\u0308"), ("龜", "\uf907"), ("ｋａｔｅ", "kate")):
        c.admin.CreateUser(A.CreateUserRequest(unit_id=unit.id, name=first, role=C.ROLE_MEMBER), metadata=c.md)
        before = audit_count(c)
        expect_status(grpc.StatusCode.ALREADY_EXISTS, c.admin.CreateUser,
                      A.CreateUserRequest(unit_id=unit.id, name=second, role=C.ROLE_MEMBER), metadata=c.md,
                      details_has=[f"already has a user named {first}"])
        assert audit_count(c) == before
    # In another unit the name is free, and a look-alike that is other text is another name.
    other = make_unit(c, "R79")
    c.admin.CreateUser(A.CreateUserRequest(unit_id=other.id, name="Zoe\u0308", role=C.ROLE_MEMBER), metadata=c.md)
    c.admin.CreateUser(A.CreateUserRequest(unit_id=unit.id, name="Bob", role=C.ROLE_MEMBER), metadata=c.md)
    c.admin.CreateUser(A.CreateUserRequest(unit_id=unit.id, name="B\u043eb", role=C.ROLE_MEMBER), metadata=c.md)
    names = [u.name for u in c.admin.ListUsers(A.ListUsersRequest(unit_id=unit.id), metadata=c.md).users]
    assert names == ["Zoë", "龜", "ｋａｔｅ", "Bob", "B\u043eb"], names


@contextlib.contextmanager
def migrated_before(first_left_out):
    """A new database migrated up to the migration named first_left_out ("0061"), left out with
    every one after it: yields a clued for it (not started) and a superuser connection."""
    pg = harness.Postgres.get()
    dbname = pg.new_database()
    before = tempfile.mkdtemp(prefix=f"clued-before-{first_left_out}-")
    srv = harness.Clued(pg.url(dbname))
    db = pg.connect(dbname)
    try:
        for path in glob.glob(os.path.join(harness.SRC, "migrations", "*.sql")):
            if os.path.basename(path) < first_left_out:
                shutil.copy(path, before)
        srv.run("migrate", "--migrations", before)
        yield srv, db
    finally:
        db.close()
        shutil.rmtree(before)


def test_migrating_over_names_that_are_the_same_text_fails_naming_them(c):
    """0061 makes names unique as text: a database that already holds two such names fails it,
    saying which rows to rename, and is left as it was; renamed, it migrates."""
    with migrated_before("0061") as (srv, db):
        with db.cursor() as cur:
            cur.execute("INSERT INTO units (kind, code, name) VALUES ('ROOM', 'A1', 'Café'), ('ROOM', 'A2', 'Cafe\u0301'),"
                        " ('ROOM', 'A3', 'plain') RETURNING id")
            u1, u2, u3 = [r[0] for r in cur.fetchall()]
            cur.execute("INSERT INTO users (unit_id, name, role) VALUES (%s, '龜', 'MEMBER'), (%s, '\uf907', 'MEMBER'),"
                        " (%s, '龜', 'MEMBER') RETURNING id", (u3, u3, u1))
            v1, v2, _ = [r[0] for r in cur.fetchall()]
        r = srv.run("migrate", check=False)
        assert r.returncode != 0, r.stderr
        assert "0061_names_unique_as_text.sql failed" in r.stderr, r.stderr
        assert "same text in Unicode" in r.stderr and f"units {u1}, {u2}" in r.stderr, r.stderr
        assert f"users (of one unit) {v1}, {v2}" in r.stderr, r.stderr
        with db.cursor() as cur:
            cur.execute("SELECT max(version) < 61, to_regprocedure('name_key(text)') IS NULL FROM schema_migrations")
            assert cur.fetchone() == (True, True)
            cur.execute("UPDATE units SET name = 'Café (A2)' WHERE id = %s", (u2,))
            cur.execute("UPDATE users SET name = '龜 2' WHERE id = %s", (v2,))
        srv.run("migrate")
        with db.cursor() as cur:
            cur.execute("SELECT max(version) >= 61 FROM schema_migrations")
            assert cur.fetchone()[0]


def test_a_variation_selector_makes_no_other_name(c):
    """A selector varies the glyph of the character before it, never the text: a name with one
    is the name without it (0067), a selector after a character it does not vary is refused,
    and a group's host units are each one unit as text."""
    unit = make_unit(c, "R86")
    c.admin.CreateUser(A.CreateUserRequest(unit_id=unit.id, name="葛某", role=C.ROLE_MEMBER), metadata=c.md)
    before = audit_count(c)
    for name in ("葛\U000E0100某", "葛某\ufe0f"):
        expect_status(grpc.StatusCode.ALREADY_EXISTS, c.admin.CreateUser,
                      A.CreateUserRequest(unit_id=unit.id, name=name, role=C.ROLE_MEMBER), metadata=c.md,
                      details_has=[f"unit {unit.id} already has a user named 葛某"])
    for name in ("G1-leader\ufe0f", "G1-le\ufe00ader", "G1-le\u180bader", "葛\U000E0100\U000E0100x"):
        expect_status(grpc.StatusCode.INVALID_ARGUMENT, c.admin.CreateUser,
                      A.CreateUserRequest(unit_id=unit.id, name=name, role=C.ROLE_MEMBER), metadata=c.md,
                      details_has=["must not contain a variation selector"])
    expect_status(grpc.StatusCode.INVALID_ARGUMENT, c.admin.CreateUnit, A.CreateUnitRequest(
        kind=GROUP, code="G86", name="G86 group", liaison_room_id=unit.id, host_units=["ABC局", "ＡＢＣ局"]),
        metadata=c.md, details_has=["host_units names the same unit more than once"])
    assert audit_count(c) == before
    # A rare form of a name's character, once, is a name; and two host units that differ are two.
    c.admin.CreateUser(A.CreateUserRequest(unit_id=unit.id, name="邊\U000E0101某", role=C.ROLE_MEMBER), metadata=c.md)
    g = c.admin.CreateUnit(A.CreateUnitRequest(kind=GROUP, code="G86", name="G86 group", liaison_room_id=unit.id,
                                               host_units=["ABC局", "ＡＢＣ分局"]), metadata=c.md)
    assert list(g.host_units) == ["ABC局", "ＡＢＣ分局"]


def test_migrating_over_names_alike_but_for_a_selector_fails_naming_them(c):
    """0067 leaves selectors out of a name's key: two names of one unit that differ only by
    one fail it, named, the database left as it was; renamed, it migrates."""
    with migrated_before("0067") as (srv, db):
        with db.cursor() as cur:
            cur.execute("INSERT INTO units (kind, code, name) VALUES ('ROOM', 'B1', 'B1 room') RETURNING id")
            u1 = cur.fetchone()[0]
            cur.execute("INSERT INTO users (unit_id, name, role) VALUES (%s, 'lead', 'LEADER'),"
                        " (%s, 'lead\ufe0f', 'MEMBER') RETURNING id", (u1, u1))
            v1, v2 = [r[0] for r in cur.fetchall()]
        r = srv.run("migrate", check=False)
        assert r.returncode != 0, r.stderr
        assert "0067_names_unique_without_selectors.sql failed" in r.stderr, r.stderr
        assert f"users (of one unit) {v1}, {v2}" in r.stderr, r.stderr
        with db.cursor() as cur:
            cur.execute("SELECT max(version) FROM schema_migrations")
            assert cur.fetchone()[0] == 66
            cur.execute("UPDATE users SET name = 'lead (member)' WHERE id = %s", (v2,))
        srv.run("migrate")
        with db.cursor() as cur:
            cur.execute("SELECT max(version) >= 67, name_key('lead\ufe0f') = 'lead' FROM schema_migrations")
            assert cur.fetchone() == (True, True)


def test_a_concurrent_duplicate_is_named(c):
    """Two additions of one unit code, unit name or user name at once both find no duplicate
    and insert: the second is refused by the unique constraint, and still told what exists,
    with nothing written."""
    import threading

    pg = harness.Postgres.get()
    unit = make_unit(c, "R80")
    cases = [
        ("INSERT INTO units (kind, code, name) VALUES ('ROOM', 'R81', 'R81 first')",
         "DELETE FROM units WHERE code = 'R81'", c.admin.CreateUnit,
         A.CreateUnitRequest(kind=ROOM, code="R81", name="R81 second"), "a unit with this code already exists"),
        ("INSERT INTO units (kind, code, name) VALUES ('ROOM', 'R82', 'R82 room')",
         "DELETE FROM units WHERE code = 'R82'", c.admin.CreateUnit,
         A.CreateUnitRequest(kind=ROOM, code="R83", name="R82 room"), "a unit with this name already exists"),
        (f"INSERT INTO users (unit_id, name, role) VALUES ({unit.id}, '并发', 'MEMBER')",
         f"DELETE FROM users WHERE unit_id = {unit.id} AND name = '并发'", c.admin.CreateUser,
         A.CreateUserRequest(unit_id=unit.id, name="并发", role=C.ROLE_MEMBER),
         "the unit already has a user of this name"),
        # The same text in other code points (0061_names_unique_as_text.sql).
        ("INSERT INTO units (kind, code, name) VALUES ('ROOM', 'R84', 'Cafe\u0301 R84')",
         "DELETE FROM units WHERE code = 'R84'", c.admin.CreateUnit,
         A.CreateUnitRequest(kind=ROOM, code="R85", name="Café R84"), "a unit with this name already exists"),
        (f"INSERT INTO users (unit_id, name, role) VALUES ({unit.id}, '\uf907', 'MEMBER')",
         f"DELETE FROM users WHERE unit_id = {unit.id} AND name = '\uf907'", c.admin.CreateUser,
         A.CreateUserRequest(unit_id=unit.id, name="龜", role=C.ROLE_MEMBER),
         "the unit already has a user of this name"),
    ]
    for first, undo, rpc, req, words in cases:
        before = audit_count(c)
        other = pg.connect(c.dbname)
        other.autocommit = False
        out = {}

        def call():
            try:
                rpc(req, metadata=c.md, timeout=20)
                out["code"] = grpc.StatusCode.OK
            except grpc.RpcError as e:
                out["code"], out["details"] = e.code(), e.details()

        try:
            with other.cursor() as cur:
                cur.execute(first)  # not committed: the call's own look finds nothing
            t = threading.Thread(target=call)
            t.start()
            harness.wait_for(lambda: waiting_on_a_lock(c), timeout=10, what="the call waiting on the first insert")
            other.commit()
            t.join(30)
            assert out.get("code") == grpc.StatusCode.ALREADY_EXISTS, out
            assert words in out["details"], out
            assert audit_count(c) == before
        finally:
            other.rollback()
            with other.cursor() as cur:
                cur.execute(undo)
            other.commit()
            other.close()


def waiting_on_a_lock(c):
    with c.db.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                    (c.dbname,))
        return cur.fetchone()[0] > 0


def make_unit(c, code, kind=ROOM):
    return c.admin.CreateUnit(A.CreateUnitRequest(kind=kind, code=code, name=code + " unit"), metadata=c.md)


def test_users_and_tokens(c):
    unit = make_unit(c, "R30")
    before = audit_count(c)
    u = c.admin.CreateUser(A.CreateUserRequest(unit_id=unit.id, name="王芳", role=C.ROLE_LEADER), metadata=c.md)
    assert u.id > 0 and u.unit_id == unit.id and u.role == C.ROLE_LEADER and not u.disabled
    users = c.admin.ListUsers(A.ListUsersRequest(unit_id=unit.id), metadata=c.md).users
    assert [x.id for x in users] == [u.id]
    t1 = c.admin.IssueToken(A.IssueTokenRequest(user_id=u.id, note="laptop"), metadata=c.md)
    assert re.fullmatch(r"ct_[0-9a-f]{64}", t1.token) and t1.token_id > 0
    t2 = c.admin.IssueToken(A.IssueTokenRequest(user_id=u.id), metadata=c.md)
    assert t2.token != t1.token
    assert audit_count(c) == before + 3
    ch = grpc.insecure_channel(c.srv.addr)
    as_user = S.admin_pb2_grpc.AdminServiceStub(ch)
    umd = [("authorization", "Bearer " + t1.token)]
    # A valid non-admin token: authenticated, but not allowed.
    expect_status(grpc.StatusCode.PERMISSION_DENIED, as_user.ListUnits, A.ListUnitsRequest(), metadata=umd)
    r = c.admin.RevokeToken(A.RevokeTokenRequest(token_id=t1.token_id), metadata=c.md)
    assert r.token_id == t1.token_id and r.revoked_at_ms > 0
    # Revocation takes effect for the next call.
    expect_status(grpc.StatusCode.UNAUTHENTICATED, as_user.ListUnits, A.ListUnitsRequest(), metadata=umd)
    expect_status(grpc.StatusCode.FAILED_PRECONDITION, c.admin.RevokeToken, A.RevokeTokenRequest(token_id=t1.token_id),
                  metadata=c.md, details_has=["already revoked"])
    expect_status(grpc.StatusCode.NOT_FOUND, c.admin.RevokeToken, A.RevokeTokenRequest(token_id=987654), metadata=c.md,
                  details_has=["987654"])
    # Disabling the user shuts out its other token too.
    umd2 = [("authorization", "Bearer " + t2.token)]
    expect_status(grpc.StatusCode.PERMISSION_DENIED, as_user.ListUnits, A.ListUnitsRequest(), metadata=umd2)
    d = c.admin.DisableUser(A.DisableUserRequest(user_id=u.id, reason="left the unit"), metadata=c.md)
    assert d.disabled
    expect_status(grpc.StatusCode.UNAUTHENTICATED, as_user.ListUnits, A.ListUnitsRequest(), metadata=umd2)
    expect_status(grpc.StatusCode.FAILED_PRECONDITION, c.admin.DisableUser, A.DisableUserRequest(user_id=u.id),
                  metadata=c.md, details_has=["already disabled"])
    expect_status(grpc.StatusCode.FAILED_PRECONDITION, c.admin.IssueToken, A.IssueTokenRequest(user_id=u.id),
                  metadata=c.md, details_has=["disabled"])
    assert audit_count(c) == before + 5
    ch.close()


def test_user_bad_fields(c):
    room = make_unit(c, "R40")
    admin_unit = [u for u in c.admin.ListUnits(A.ListUnitsRequest(kind=ADMIN_KIND), metadata=c.md).units][0]
    before = audit_count(c)
    cases = [
        (A.CreateUserRequest(name="a", role=C.ROLE_MEMBER), grpc.StatusCode.INVALID_ARGUMENT, "unit_id"),
        (A.CreateUserRequest(unit_id=room.id, role=C.ROLE_MEMBER), grpc.StatusCode.INVALID_ARGUMENT, "name"),
        (A.CreateUserRequest(unit_id=room.id, name="a"), grpc.StatusCode.INVALID_ARGUMENT, "role"),
        (A.CreateUserRequest(unit_id=room.id, name="a", role=7), grpc.StatusCode.INVALID_ARGUMENT, "role"),
        (A.CreateUserRequest(unit_id=room.id, name="a", role=C.ROLE_ADMIN), grpc.StatusCode.INVALID_ARGUMENT, "ADMIN"),
        (A.CreateUserRequest(unit_id=admin_unit.id, name="a", role=C.ROLE_LEADER), grpc.StatusCode.INVALID_ARGUMENT, "LEADER"),
        (A.CreateUserRequest(unit_id=424242, name="a", role=C.ROLE_MEMBER), grpc.StatusCode.NOT_FOUND, "424242"),
    ]
    for req, code, word in cases:
        expect_status(code, c.admin.CreateUser, req, metadata=c.md, details_has=[word])
    expect_status(grpc.StatusCode.INVALID_ARGUMENT, c.admin.DisableUser, A.DisableUserRequest(), metadata=c.md,
                  details_has=["user_id"])
    expect_status(grpc.StatusCode.NOT_FOUND, c.admin.DisableUser, A.DisableUserRequest(user_id=555555), metadata=c.md)
    expect_status(grpc.StatusCode.INVALID_ARGUMENT, c.admin.IssueToken, A.IssueTokenRequest(), metadata=c.md,
                  details_has=["user_id"])
    expect_status(grpc.StatusCode.NOT_FOUND, c.admin.IssueToken, A.IssueTokenRequest(user_id=555555), metadata=c.md)
    expect_status(grpc.StatusCode.INVALID_ARGUMENT, c.admin.RevokeToken, A.RevokeTokenRequest(), metadata=c.md,
                  details_has=["token_id"])
    # An auditor is not an admin either.
    aud = c.admin.CreateUser(A.CreateUserRequest(unit_id=admin_unit.id, name="auditor1", role=C.ROLE_AUDITOR), metadata=c.md)
    tok = c.admin.IssueToken(A.IssueTokenRequest(user_id=aud.id), metadata=c.md).token
    expect_status(grpc.StatusCode.PERMISSION_DENIED, c.admin.CreateUnit,
                  A.CreateUnitRequest(kind=ROOM, code="R41", name="R41"), metadata=[("authorization", "Bearer " + tok)])
    assert audit_count(c) == before + 2


def test_every_method_needs_a_valid_token(c):
    calls = [
        ("CreateUnit", A.CreateUnitRequest(kind=ROOM, code="R50", name="R50")),
        ("ListUnits", A.ListUnitsRequest()),
        ("CreateUser", A.CreateUserRequest(unit_id=1, name="x", role=C.ROLE_MEMBER)),
        ("ListUsers", A.ListUsersRequest()),
        ("DisableUser", A.DisableUserRequest(user_id=1)),
        ("IssueToken", A.IssueTokenRequest(user_id=1)),
        ("RevokeToken", A.RevokeTokenRequest(token_id=1)),
    ]
    before = audit_count(c)
    bad = [None, [("authorization", "Bearer ct_" + "0" * 64)], [("authorization", "Basic abc")],
           [("authorization", "Bearer ")], [("authorization", "Bearer " + c.admin_token + "x")]]
    for name, req in calls:
        fn = getattr(c.admin, name)
        for md in bad:
            expect_status(grpc.StatusCode.UNAUTHENTICATED, lambda: fn(req, metadata=md) if md else fn(req))
    assert audit_count(c) == before


def test_audit_rows_are_append_only(c):
    import psycopg2

    assert audit_count(c) > 0
    for sql in ("UPDATE audit_events SET reason = 'x'", "DELETE FROM audit_events",
                "TRUNCATE audit_events"):
        try:
            with c.db.cursor() as cur:
                cur.execute(sql)
            raise AssertionError(f"{sql} was allowed")
        except psycopg2.Error:
            pass
    n = audit_count(c)
    assert n > 0
    # Each chain links: prev_hash is the hash of the previous event of the same subject.
    with c.db.cursor() as cur:
        cur.execute("SELECT subject_type, subject_id, prev_hash, hash FROM audit_events ORDER BY seq")
        last = {}
        for st, sid, prev, h in cur.fetchall():
            assert (bytes(prev) if prev is not None else None) == last.get((st, sid)), (st, sid)
            last[(st, sid)] = bytes(h)


# ---- administration is never locked out (0045_administration_never_locked_out.sql) ----------


class Admins:
    """A database and server of their own, bootstrapped: the tests below change who administers."""

    def __init__(self):
        pg = harness.Postgres.get()
        self.dbname = pg.new_database("adm")
        self.db = pg.connect(self.dbname)
        self.srv = harness.Clued(pg.url(self.dbname)).start()
        self.srv.wait_listening()  # principals are cached from here on, as the races below assume
        self.token = re.search(r"ct_[0-9a-f]{64}", self.srv.run("bootstrap").stdout).group(0)
        self.channels = []
        self.unit = self.sql("SELECT id FROM units WHERE kind = 'ADMIN'")[0][0]

    def sql(self, q, args=()):
        with self.db.cursor() as cur:
            cur.execute(q, args)
            return cur.fetchall() if cur.description else None

    def stubs(self, token):
        """(AdminService, TokenService, metadata) on a channel of their own."""
        ch = grpc.insecure_channel(self.srv.addr)
        self.channels.append(ch)
        return (S.admin_pb2_grpc.AdminServiceStub(ch), S.token_pb2_grpc.TokenServiceStub(ch),
                [("authorization", "Bearer " + token)])

    def close(self):
        for ch in self.channels:
            ch.close()
        self.db.close()
        self.srv.stop()


def new_admin(w, by_md, name):
    """An ADMIN user made, and given a token, by the admin of by_md: (user id, token)."""
    admin = S.admin_pb2_grpc.AdminServiceStub(w.channels[0])
    u = admin.CreateUser(A.CreateUserRequest(unit_id=w.unit, name=name, role=C.ROLE_ADMIN), metadata=by_md)
    return u.id, admin.IssueToken(A.IssueTokenRequest(user_id=u.id), metadata=by_md).token


def working_admins(w):
    return [r[0] for r in w.sql("SELECT DISTINCT u.id FROM users u JOIN tokens t ON t.user_id = u.id"
                                " WHERE u.role = 'ADMIN' AND NOT u.disabled AND t.revoked_at IS NULL ORDER BY 1")]


def test_admins_disabling_each_other_at_once_leave_one(c):
    """Two admins, the only ones that can administer, disable each other at the same moment:
    one wins, the other is refused; never both (before 0045, 19 of 20 such pairs both won)."""
    import threading

    w = Admins()
    try:
        _, _, md = w.stubs(w.token)
        survivor = md
        refused = 0
        for i in range(8):
            x, tx = new_admin(w, survivor, f"x{i}")
            y, ty = new_admin(w, survivor, f"y{i}")
            # The survivor of the round before steps back: x and y are the only ones left.
            sa, st, _ = w.stubs(w.token)
            for t in st.ListMyTokens(S.token_pb2.ListMyTokensRequest(), metadata=survivor).tokens:
                sa.RevokeToken(A.RevokeTokenRequest(token_id=t.id), metadata=survivor)
            (ax, tsx, mdx), (ay, tsy, mdy) = w.stubs(tx), w.stubs(ty)
            assert working_admins(w) == [x, y]
            # Authenticated (and cached) before the race, as two busy admins would be.
            tsx.GetCaller(S.token_pb2.GetCallerRequest(), metadata=mdx)
            tsy.GetCaller(S.token_pb2.GetCallerRequest(), metadata=mdy)
            bar, res = threading.Barrier(2), {}

            def disable(k, stub, md, uid):
                bar.wait()
                try:
                    stub.DisableUser(A.DisableUserRequest(user_id=uid, reason="race"), metadata=md, timeout=20)
                    res[k] = (grpc.StatusCode.OK, "")
                except grpc.RpcError as e:
                    res[k] = (e.code(), e.details())

            th = [threading.Thread(target=disable, args=("x", ax, mdx, y)),
                  threading.Thread(target=disable, args=("y", ay, mdy, x))]
            [t.start() for t in th]
            [t.join() for t in th]
            codes = sorted(str(v[0]) for v in res.values())
            assert codes.count(str(grpc.StatusCode.OK)) == 1, (i, res)
            lost = [v for v in res.values() if v[0] != grpc.StatusCode.OK][0]
            # Refused in the write, or (if the winner committed first) already unauthenticated.
            assert lost[0] in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAUTHENTICATED), (i, res)
            if lost[0] == grpc.StatusCode.FAILED_PRECONDITION:
                refused += 1
                assert "lock administration out" in lost[1], lost
            assert len(working_admins(w)) == 1, (i, res)
            survivor = mdx if res["x"][0] == grpc.StatusCode.OK else mdy
        print(f"  8 races, one winner each; {refused} refused in the write", flush=True)
    finally:
        w.close()


def test_the_last_admin_keeps_a_token(c):
    """The only admin that can administer may not revoke its last live token (RevokeToken or
    RevokeMyToken); it may once it holds another. Disabling another admin stays allowed while
    one works, whatever that admin holds."""
    w = Admins()
    try:
        admin, tokens, md = w.stubs(w.token)
        me = tokens.GetCaller(S.token_pb2.GetCallerRequest(), metadata=md)
        before = w.sql("SELECT count(*) FROM audit_events")[0][0]
        for fn, req in ((admin.RevokeToken, A.RevokeTokenRequest(token_id=me.token_id)),
                        (tokens.RevokeMyToken, S.token_pb2.RevokeMyTokenRequest(token_id=me.token_id))):
            expect_status(grpc.StatusCode.FAILED_PRECONDITION, fn, req, metadata=md,
                          details_has=[f"token {me.token_id} is the last live token", "lock administration out"])
        assert w.sql("SELECT count(*) FROM audit_events")[0][0] == before
        assert w.sql("SELECT revoked_at FROM tokens WHERE id = %s", (me.token_id,))[0][0] is None
        # Rotating: a new token first, then the old one goes.
        new = tokens.IssueMyToken(S.token_pb2.IssueMyTokenRequest(note="new"), metadata=md)
        tokens.RevokeMyToken(S.token_pb2.RevokeMyTokenRequest(token_id=me.token_id), metadata=md)
        md = [("authorization", "Bearer " + new.token)]
        expect_status(grpc.StatusCode.FAILED_PRECONDITION, admin.RevokeToken,
                      A.RevokeTokenRequest(token_id=new.token_id), metadata=md, details_has=["lock administration out"])
        # An enabled ADMIN without a token does not count: it cannot call anything.
        idle = admin.CreateUser(A.CreateUserRequest(unit_id=w.unit, name="idle", role=C.ROLE_ADMIN), metadata=md)
        expect_status(grpc.StatusCode.FAILED_PRECONDITION, admin.RevokeToken,
                      A.RevokeTokenRequest(token_id=new.token_id), metadata=md, details_has=["lock administration out"])
        # Disabling other admins while this one works: allowed, with or without their tokens.
        assert admin.DisableUser(A.DisableUserRequest(user_id=idle.id), metadata=md).disabled
        other, _ = new_admin(w, md, "other")
        assert admin.DisableUser(A.DisableUserRequest(user_id=other), metadata=md).disabled
        # Revoking tokens of users who do not administer is untouched by the rule.
        room = admin.CreateUnit(A.CreateUnitRequest(kind=ROOM, code="R90", name="R90"), metadata=md)
        m = admin.CreateUser(A.CreateUserRequest(unit_id=room.id, name="m", role=C.ROLE_MEMBER), metadata=md)
        t = admin.IssueToken(A.IssueTokenRequest(user_id=m.id), metadata=md)
        admin.RevokeToken(A.RevokeTokenRequest(token_id=t.token_id), metadata=md)
        # The write looks at its caller again under the lock: a caller disabled (its token
        # revoked) while its call waited is refused, as the call made after would have been.
        caller = w.sql("SELECT id, unit_id FROM users WHERE id = %s", (other,))[0]
        target, _ = new_admin(w, md, "target")
        for q, args, word in (
                ("SELECT admin_disable_user(%s, %s, %s, NULL)", (*caller, target), "the caller, was disabled"),
                ("SELECT set_config('clued.token_id', %s, true), admin_disable_user(%s, %s, %s, NULL)",
                 (str(t.token_id), me.user_id, me.unit_id, target), "the caller's, was revoked")):
            import psycopg2

            try:
                w.sql(q, args)
                raise AssertionError(f"{q} was allowed")
            except psycopg2.Error as e:
                assert e.pgcode == "CLPRE" and word in str(e), e
        assert w.sql("SELECT disabled FROM users WHERE id = %s", (target,))[0][0] is False
    finally:
        w.close()


def test_bootstrap_restores_administration(c):
    """When no enabled ADMIN holds a live token (locked out before 0045, or by hand in the
    database), `clued bootstrap` makes another ADMIN, audited as the first, and prints its
    token; while one works it changes nothing."""
    w = Admins()
    try:
        _, _, md = w.stubs(w.token)
        other, _ = new_admin(w, md, "admin-2")
        out = w.srv.run("bootstrap").stdout
        assert "already bootstrapped" in out and "ct_" not in out, out
        # Everyone who could administer is gone (a superuser's doing; no API call allows it).
        w.sql("UPDATE users SET disabled = true WHERE role = 'ADMIN' AND name = 'admin'")
        w.sql("UPDATE tokens SET revoked_at = now() WHERE user_id = %s", (other,))
        assert working_admins(w) == []
        before = w.sql("SELECT max(seq) FROM audit_events")[0][0]
        out = w.srv.run("bootstrap").stdout
        assert "administration restored" in out, out
        m = re.search(r'created ADMIN user "(admin-3)" \(id (\d+)\)', out)
        assert m, out
        uid = int(m.group(2))
        token = re.search(r"ct_[0-9a-f]{64}", out).group(0)
        admin, _, md = w.stubs(token)
        units = admin.ListUnits(A.ListUnitsRequest(), metadata=md).units
        assert [u.kind for u in units] == [ADMIN_KIND]  # the same ADMIN unit, no other
        assert working_admins(w) == [uid]
        evs = w.sql("SELECT action, subject_type, subject_id, actor_user_id, reason FROM audit_events"
                    " WHERE seq > %s ORDER BY seq", (before,))
        assert evs == [("user.create", "user", uid, None, "bootstrap"),
                       ("token.issue", "user", uid, None, "bootstrap")], evs
        # Working again: the next bootstrap changes nothing.
        out = w.srv.run("bootstrap").stdout
        assert "already bootstrapped" in out and "ct_" not in out, out
        # An ADMIN enabled but holding no live token cannot administer either.
        w.sql("UPDATE tokens SET revoked_at = now() WHERE user_id = %s", (uid,))
        out = w.srv.run("bootstrap").stdout
        assert 'created ADMIN user "admin-4"' in out and "administration restored" in out, out
    finally:
        w.close()


def test_bootstrap_new_admin_replaces_a_lost_token(c):
    """The only administrator lost its token, still live: nobody can revoke it through the API
    and `clued bootstrap` changes nothing, but `clued bootstrap --new-admin` (the schema's
    owner) makes another ADMIN, audited, whose token revokes the lost one."""
    w = Admins()
    try:
        (first,) = working_admins(w)
        lost = w.sql("SELECT id FROM tokens WHERE user_id = %s", (first,))[0][0]
        out = w.srv.run("bootstrap").stdout
        assert "already bootstrapped" in out and "--new-admin" in out and "ct_" not in out, out
        before = w.sql("SELECT max(seq) FROM audit_events")[0][0]
        out = w.srv.run("bootstrap", "--new-admin").stdout
        m = re.search(r'created ADMIN user "(admin-2)" \(id (\d+)\)', out)
        assert m and "administration restored" not in out, out
        uid = int(m.group(2))
        assert "revoke-token" in out, out
        token = re.search(r"ct_[0-9a-f]{64}", out).group(0)
        admin, _, md = w.stubs(token)
        units = admin.ListUnits(A.ListUnitsRequest(), metadata=md).units
        assert [u.kind for u in units] == [ADMIN_KIND]  # the same ADMIN unit, no other
        assert working_admins(w) == [first, uid]
        evs = w.sql("SELECT action, subject_type, subject_id, actor_user_id, reason FROM audit_events"
                    " WHERE seq > %s ORDER BY seq", (before,))
        assert evs == [("user.create", "user", uid, None, "bootstrap --new-admin"),
                       ("token.issue", "user", uid, None, "bootstrap --new-admin")], evs
        admin.RevokeToken(A.RevokeTokenRequest(token_id=lost), metadata=md)
        old, _, old_md = w.stubs(w.token)
        expect_status(grpc.StatusCode.UNAUTHENTICATED, old.ListUnits, A.ListUnitsRequest(), metadata=old_md)
        assert working_admins(w) == [uid]
        # Once more: a third, while two work.
        out = w.srv.run("bootstrap", "--new-admin").stdout
        assert 'created ADMIN user "admin-3"' in out, out
        # A name that is the same text as the next one (full-width) is taken: the one after.
        admin.CreateUser(A.CreateUserRequest(unit_id=units[0].id, name="ａｄｍｉｎ-4", role=C.ROLE_ADMIN), metadata=md)
        out = w.srv.run("bootstrap", "--new-admin").stdout
        assert 'created ADMIN user "admin-5"' in out, out
    finally:
        w.close()


def pages_of(fn, req, field, md):
    """Every page of a list in turn: [(the ids of its rows, its next_page_token)]; the last
    page's token is empty."""
    page, pages = type(req)(), []
    page.CopyFrom(req)
    while len(pages) < 1000:
        r = fn(page, metadata=md, timeout=30)
        pages.append(([x.id for x in getattr(r, field)], r.next_page_token))
        if not r.next_page_token:
            return pages
        page.page_token = r.next_page_token
    raise AssertionError("more than 1000 pages")


def refused_field(fn, req, md):
    """The BadRequest fields of fn(req)'s INVALID_ARGUMENT, and its message."""
    from test_rich_errors import failure, status_of

    code, msg, raw = failure(fn, req, metadata=md, timeout=30)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, msg)
    (br,) = status_of(code, msg, raw)["google.rpc.BadRequest"]
    return [v.field for v in br.field_violations], msg


def test_units_and_users_come_in_pages(c):
    """ListUnits and ListUsers answer page_size rows at a time, oldest first, with a token for
    the rest: walking the pages gives every row once. A token is its list's, its caller's and
    its filter's; any other is refused, naming page_token."""
    w = Admins()
    try:
        admin, _, md = w.stubs(w.token)
        rooms = [admin.CreateUnit(A.CreateUnitRequest(kind=ROOM, code=f"R{i}", name=f"第{i}室"), metadata=md).id
                 for i in range(1, 4)]
        regions = [admin.CreateUnit(A.CreateUnitRequest(kind=REGION, code=f"X{i}", name=f"{i}区"), metadata=md).id
                   for i in range(1, 3)]
        for i in range(7):
            admin.CreateUser(A.CreateUserRequest(unit_id=regions[0], name=f"甲{i}", role=C.ROLE_MEMBER), metadata=md)
        for i in range(2):
            admin.CreateUser(A.CreateUserRequest(unit_id=regions[1], name=f"乙{i}", role=C.ROLE_LEADER), metadata=md)
        units = [r[0] for r in w.sql("SELECT id FROM units ORDER BY id")]
        users = [r[0] for r in w.sql("SELECT id FROM users ORDER BY id")]
        in_x1 = [r[0] for r in w.sql("SELECT id FROM users WHERE unit_id = %s ORDER BY id", (regions[0],))]
        assert len(units) == 6 and len(users) == 10 and len(in_x1) == 7

        def ids(pages):
            return [i for rows, _ in pages for i in rows]

        # Each page holds page_size rows; the last, what is left, and no token. Six units in
        # pages of three are two pages, not a third empty one.
        for size, want in ((4, [4, 2]), (3, [3, 3]), (1, [1] * 6), (6, [6]), (7, [6])):
            pages = pages_of(admin.ListUnits, A.ListUnitsRequest(page_size=size), "units", md)
            assert [len(rows) for rows, _ in pages] == want and ids(pages) == units, (size, pages)
            assert all(tok for _, tok in pages[:-1]) and pages[-1][1] == "", pages
        pages = pages_of(admin.ListUnits, A.ListUnitsRequest(kind=ROOM, page_size=2), "units", md)
        assert ids(pages) == rooms and len(pages) == 2, pages
        pages = pages_of(admin.ListUsers, A.ListUsersRequest(page_size=3), "users", md)
        assert ids(pages) == users and len(pages) == 4, pages
        pages = pages_of(admin.ListUsers, A.ListUsersRequest(unit_id=regions[0], page_size=3), "users", md)
        assert [len(rows) for rows, _ in pages] == [3, 3, 1] and ids(pages) == in_x1, pages
        # No page fields (a client older than them): the first page, here every row.
        r = admin.ListUnits(A.ListUnitsRequest(), metadata=md)
        assert [u.id for u in r.units] == units and r.next_page_token == ""
        r = admin.ListUsers(A.ListUsersRequest(), metadata=md)
        assert [u.id for u in r.users] == users and r.next_page_token == ""

        all_units = admin.ListUnits(A.ListUnitsRequest(page_size=1), metadata=md).next_page_token
        room_units = admin.ListUnits(A.ListUnitsRequest(kind=ROOM, page_size=1), metadata=md).next_page_token
        all_users = admin.ListUsers(A.ListUsersRequest(page_size=1), metadata=md).next_page_token
        x1_users = admin.ListUsers(A.ListUsersRequest(unit_id=regions[0], page_size=1), metadata=md).next_page_token
        assert all_units and room_units and all_users and x1_users
        # The token goes on from where its page ended, with another page size too.
        r = admin.ListUnits(A.ListUnitsRequest(kind=ROOM, page_size=5, page_token=room_units), metadata=md)
        assert [u.id for u in r.units] == rooms[1:] and r.next_page_token == ""
        msg = ("page_token is malformed or was issued for another list, caller or filter")
        for fn, req in (
            (admin.ListUnits, A.ListUnitsRequest(kind=REGION, page_token=room_units)),  # another kind
            (admin.ListUnits, A.ListUnitsRequest(page_token=room_units)),  # no kind
            (admin.ListUnits, A.ListUnitsRequest(kind=ROOM, page_token=all_units)),
            (admin.ListUnits, A.ListUnitsRequest(page_token=all_users)),  # another list
            (admin.ListUsers, A.ListUsersRequest(page_token=all_units)),
            (admin.ListUsers, A.ListUsersRequest(unit_id=regions[1], page_token=x1_users)),  # another unit
            (admin.ListUsers, A.ListUsersRequest(page_token=x1_users)),
            (admin.ListUnits, A.ListUnitsRequest(page_token=all_units[:-1])),  # damaged
            (admin.ListUnits, A.ListUnitsRequest(page_token=all_units[:-1] + ("A" if all_units[-1] != "A" else "B"))),
            (admin.ListUsers, A.ListUsersRequest(page_token="AQAAAAAAAAABxxxx")),  # made up
        ):
            assert refused_field(fn, req, md) == (["page_token"], msg), req
        # Another caller's token, for the same list and filter.
        other_admin, _, other_md = w.stubs(new_admin(w, md, "admin-b")[1])
        assert refused_field(other_admin.ListUnits, A.ListUnitsRequest(page_token=all_units), other_md) == \
            (["page_token"], msg)
        assert refused_field(other_admin.ListUsers, A.ListUsersRequest(page_token=all_users), other_md) == \
            (["page_token"], msg)
        # A negative page size is refused, with every other bad field named too.
        assert refused_field(admin.ListUnits, A.ListUnitsRequest(page_size=-1), md) == \
            (["page_size"], "page_size must not be negative")
        assert refused_field(admin.ListUsers, A.ListUsersRequest(unit_id=-2, page_size=-1, page_token="x"), md) == \
            (["unit_id", "page_size", "page_token"], "unit_id must be positive")
        assert refused_field(admin.ListUnits, A.ListUnitsRequest(kind=9, page_token="x"), md)[0] == \
            ["kind", "page_token"]
    finally:
        w.close()


def test_page_sizes_default_to_500_and_stop_at_1000(c):
    """Without page_size a page holds 500 rows; a page_size past 1,000 is taken as 1,000."""
    w = Admins()
    try:
        admin, _, md = w.stubs(w.token)
        region = admin.CreateUnit(A.CreateUnitRequest(kind=REGION, code="X1", name="一区"), metadata=md).id
        # Written as the schema's owner: 1,200 calls would only make the test slow.
        w.sql("INSERT INTO users (unit_id, name, role) SELECT %s, 'u' || i, 'MEMBER'"
              " FROM generate_series(1, 1200) i", (region,))
        users = [r[0] for r in w.sql("SELECT id FROM users ORDER BY id")]
        for size, want in ((0, [500, 500, 201]), (5000, [1000, 201]), (1000, [1000, 201]), (999, [999, 202])):
            pages = pages_of(admin.ListUsers, A.ListUsersRequest(page_size=size), "users", md)
            assert [len(rows) for rows, _ in pages] == want, (size, [len(rows) for rows, _ in pages])
            assert [i for rows, _ in pages for i in rows] == users
        pages = pages_of(admin.ListUsers, A.ListUsersRequest(unit_id=region, page_size=2000), "users", md)
        assert [len(rows) for rows, _ in pages] == [1000, 200]
    finally:
        w.close()


def test_a_page_of_units_ends_at_about_2_mib(c):
    """GROUP units may each hold 100 host units of 100 characters: a page ends once its units
    take about 2 MiB, whatever its page size, so that a client with gRPC's default 4 MiB limit
    receives every page whole, and the next page starts with the unit that did not fit."""
    w = Admins()
    try:
        admin, _, md = w.stubs(w.token)
        room = admin.CreateUnit(A.CreateUnitRequest(kind=ROOM, code="R1", name="第一室"), metadata=md).id
        # 70 such units, about 2.8 MiB, written as the schema's owner (the API takes the same,
        # one call at a time). Each host unit is 100 characters of 4 bytes in UTF-8.
        w.sql("INSERT INTO units (kind, code, name, liaison_room_id, host_units)"
              " SELECT 'GROUP', 'G' || i, '组' || i, %s,"
              "  ARRAY(SELECT repeat(chr(131072 + i), 97) || lpad(j::text, 3, '0') FROM generate_series(1, 100) j)"
              " FROM generate_series(1, 70) i", (room,))
        units = [r[0] for r in w.sql("SELECT id FROM units ORDER BY id")]
        groups = [r[0] for r in w.sql("SELECT id FROM units WHERE kind = 'GROUP' ORDER BY id")]
        one = admin.ListUnits(A.ListUnitsRequest(kind=GROUP, page_size=1), metadata=md)
        assert len(one.units) == 1 and len(one.units[0].host_units) == 100
        size = one.units[0].ByteSize()
        assert 39000 < size < 41000, size
        for req, want in ((A.ListUnitsRequest(), units), (A.ListUnitsRequest(page_size=1000), units),
                          (A.ListUnitsRequest(kind=GROUP), groups)):
            page, got, sizes = type(req)(), [], []
            page.CopyFrom(req)
            while True:
                r = admin.ListUnits(page, metadata=md, timeout=30)
                got += [u.id for u in r.units]
                sizes.append((len(r.units), r.ByteSize()))
                if not r.next_page_token:
                    break
                page.page_token = r.next_page_token
            assert got == want, (req, sizes)
            # Ended early at 2 MiB, not at its page size: the first page holds what fits in it.
            assert len(sizes) == 2 and sizes[0][0] < 2097152 // size + 3, sizes
            assert all(b <= 2097152 + 64 for _, b in sizes), sizes
            assert sizes[0][1] > 2097152 - size - 1024, sizes  # the next unit did not fit
    finally:
        w.close()


if __name__ == "__main__":
    harness.run_tests(globals(), setup, teardown)
