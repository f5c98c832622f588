"""The facts of a clue row, as CLUE_FACT_COLS and CLUE_HANDLERS_COL ask them since migration 0023
(plpgsql calls behind a CASE on the clue's joint_case_id, has_handlers and has_recusals), answer
exactly what the sub-selects they replaced answered, for every clue, every unit and every user
of a world with joint cases (lead and participants), handlers (current, and one assigned by a
unit that no longer owns the clue), recusals (a unit with every leader recused, one with only
some, the reviewing unit of a pending proposal) and clues with none of these.

The world's clues are submitted through clued; the cases, handlers and recusals are written
in SQL, as their functions leave them (the triggers of 0020 set the flags). Every combination
is compared on the live schema, and each fact is asserted to be true somewhere and false
somewhere, so that a comparison of two constant answers cannot pass.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import new_request_id  # noqa: E402
import world  # noqa: E402

S = harness.stubs()
pb = S.clue_pb2

# What CLUE_FACT_COLS and CLUE_HANDLERS_COL (server/service/clue_row.h) select since 0023, for
# clue c, the caller's unit u.id and user usr.id.
NEW = [
    "CASE WHEN c.joint_case_id IS NOT NULL THEN joint_case_lead(c.joint_case_id) END",
    "CASE WHEN c.joint_case_id IS NOT NULL THEN joint_case_has_unit(c.joint_case_id, u.id) ELSE false END",
    "CASE WHEN c.has_handlers THEN clue_user_handles(c.id, usr.id, c.owner_unit) ELSE false END",
    "CASE WHEN c.has_recusals THEN clue_user_recused(c.id, usr.id) ELSE false END",
    "CASE WHEN c.has_recusals THEN clue_unit_leaders_recused(c.id, c.owner_unit) ELSE false END",
    "CASE WHEN c.has_recusals AND c.pending_reviewer_unit IS NOT NULL"
    " THEN clue_unit_leaders_recused(c.id, c.pending_reviewer_unit) ELSE false END",
    "CASE WHEN c.has_handlers THEN clue_handlers_text(c.id, c.owner_unit) END",
]


def leaders_recused(unit):
    """The body of clue_unit_leaders_recused (0019) as a sub-select on clue c."""
    return f"""(EXISTS (SELECT 1 FROM users lu JOIN recusals lr ON lr.user_id = lu.id AND lr.clue_id = c.id
                       WHERE lu.unit_id = {unit} AND lu.role = 'LEADER' AND NOT lu.disabled)
               AND NOT EXISTS (SELECT 1 FROM users lu
                               WHERE lu.unit_id = {unit} AND lu.role = 'LEADER' AND NOT lu.disabled
                                 AND NOT EXISTS (SELECT 1 FROM recusals lr
                                                 WHERE lr.clue_id = c.id AND lr.user_id = lu.id)))"""


# The sub-selects of the same columns before 0023 (and without the flags' guards: the flags'
# own promise, a row implies its flag, is checked with them).
OLD = [
    "(SELECT jcl.lead_unit FROM joint_cases jcl WHERE jcl.id = c.joint_case_id)",
    "(EXISTS (SELECT 1 FROM joint_cases jcl WHERE jcl.id = c.joint_case_id AND jcl.lead_unit = u.id)"
    " OR EXISTS (SELECT 1 FROM case_participants jcp WHERE jcp.case_id = c.joint_case_id AND jcp.unit_id = u.id))",
    "EXISTS (SELECT 1 FROM clue_handlers chf WHERE chf.clue_id = c.id AND chf.user_id = usr.id"
    " AND chf.owner_unit = c.owner_unit)",
    "EXISTS (SELECT 1 FROM recusals rrf WHERE rrf.clue_id = c.id AND rrf.user_id = usr.id)",
    leaders_recused("c.owner_unit"),
    f"CASE WHEN c.pending_reviewer_unit IS NOT NULL THEN {leaders_recused('c.pending_reviewer_unit')} ELSE false END",
    "(SELECT string_agg(concat_ws(chr(31), h.user_id, hu.name, hu.unit_id, hn.code, h.assigned_by,"
    " (extract(epoch from h.assigned_at) * 1000)::bigint), chr(30) ORDER BY h.assigned_at, h.user_id)"
    " FROM clue_handlers h JOIN users hu ON hu.id = h.user_id JOIN units hn ON hn.id = hu.unit_id"
    " WHERE h.clue_id = c.id AND h.owner_unit = c.owner_unit)",
]
FACTS = ("case lead", "unit in case", "user handles", "user recused", "owner's leaders recused",
         "reviewer's leaders recused", "handlers text")


setup, teardown = world.served, world.unserve


def submit(u):
    return u.clue.SubmitClue(pb.SubmitClueRequest(
        request_id=new_request_id(), title="线索", summary="摘要", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
        subject=pb.SubjectPerson(name="张某"), host_unit="市发展改革委"), timeout=20).id


def propose(u, clue_id):
    """ACCEPTED -> PRELIMINARY_CHECK, then a proposal to FILED, pending before the unit's
    liaison room (a co-reviewed move)."""
    cl = u.clue.GetClue(pb.GetClueRequest(clue_id=clue_id), timeout=20)
    for target, version in ((S.common_pb2.CLUE_STATE_PRELIMINARY_CHECK, cl.version),
                            (S.common_pb2.CLUE_STATE_FILED, cl.version + 1)):
        r = u.clue.RequestTransition(pb.RequestTransitionRequest(
            clue_id=clue_id, expected_version=version, target=target, reason="r", request_id=new_request_id()),
            timeout=20)
    assert r.proposal.reviewer_unit_id, r


def sql(c, q, *args):
    with c.db.cursor() as cur:
        cur.execute(q, args)
        return cur.fetchall() if cur.description else None


def make_world(c):
    """Clues a..g of G1, G2 and G3, then the cases, handlers and recusals described above."""
    w = c.w
    a, b, d, e, f, g = (submit(w.G1.member), submit(w.G1.member), submit(w.G2.member), submit(w.G3.member),
                        submit(w.G3.member), submit(w.G2.member))
    plain = submit(w.G1.member)
    # d and g: a proposal pending before R1 (G2's liaison room).
    propose(w.G2.leader, d)
    propose(w.G2.leader, g)
    g2b = sql(c, "INSERT INTO users (unit_id, name, role) VALUES (%s, 'G2-leader-2', 'LEADER') RETURNING id",
              w.G2.id)[0][0]
    # Joint case 1 led by R1 with G2 taking part: clues a (G1) and d (G2). Case 2 led by R2 with
    # nobody else: clue e (G3).
    cases = []
    for lead, by in ((w.R1, w.R1.leader), (w.R2, w.R2.leader)):
        cases.append(sql(c, "INSERT INTO joint_cases (title, lead_unit, created_by, created_at)"
                            " VALUES ('专案', %s, %s, now()) RETURNING id", lead.id, by.id)[0][0])
    sql(c, "INSERT INTO case_participants (case_id, unit_id, added_by, added_at) VALUES (%s, %s, %s, now())",
        cases[0], w.G2.id, w.R1.leader.id)
    for clue, case, owner in ((a, cases[0], w.G1), (d, cases[0], w.G2), (e, cases[1], w.G3)):
        sql(c, "INSERT INTO case_clues (clue_id, case_id, owner_unit, added_by, added_at)"
               " VALUES (%s, %s, %s, %s, now())", clue, case, owner.id, w.admin.id)
        sql(c, "UPDATE clues SET joint_case_id = %s WHERE id = %s", case, clue)
    # Handlers: b has G1's member assigned by G1 (counts) and R1's member assigned by G2 (a unit
    # that no longer owns it: does not count); e has G3's member, assigned at the same time as
    # R2's member (the order then goes by user id).
    for clue, user, owner, at in ((b, w.G1.member, w.G1, "2026-01-01 10:00:00.123+00"),
                                  (b, w.R1.member, w.G2, "2026-01-01 11:00:00+00"),
                                  (e, w.G3.member, w.G3, "2026-01-02 09:00:00.0005+00"),
                                  (e, w.R2.member, w.G3, "2026-01-02 09:00:00.0005+00")):
        sql(c, "INSERT INTO clue_handlers (clue_id, user_id, owner_unit, assigned_by, assigned_at, assigned_by_unit)"
               " VALUES (%s, %s, %s, %s, %s, %s)", clue, user.id, owner.id, w.admin.id, at, owner.id)
    # Recusals: on b G1's only leader (every leader of the owner recused); on d one of G2's two
    # leaders (not every one) and R1's only leader (d's proposal is pending before R1); on f
    # G3's member only.
    for clue, user, unit in ((b, w.G1.leader.id, w.G1), (d, w.G2.leader.id, w.G2), (d, w.R1.leader.id, w.R1),
                             (f, w.G3.member.id, w.G3)):
        sql(c, "INSERT INTO recusals (clue_id, user_id, reason, recorded_by, recorded_by_unit, recorded_at)"
               " VALUES (%s, %s, '亲属', %s, %s, now())", clue, user, w.admin.id, unit.id)
    # g: a pending proposal, no recusal at all; plain: nothing.
    return [a, b, d, e, f, g, plain], g2b


def test_same_answers(c):
    clues, _ = make_world(c)
    n = len(FACTS)
    rows = sql(c, f"""SELECT c.id, u.id, usr.id, {", ".join(NEW)}, {", ".join(OLD)}
                      FROM clues c CROSS JOIN units u CROSS JOIN users usr
                      WHERE c.id = ANY(%s) ORDER BY 1, 2, 3""", clues)
    units = sql(c, "SELECT count(*) FROM units")[0][0]
    users = sql(c, "SELECT count(*) FROM users")[0][0]
    assert len(rows) == len(clues) * units * users, (len(rows), len(clues), units, users)
    for r in rows:
        new, old = r[3:3 + n], r[3 + n:]
        for i, name in enumerate(FACTS):
            assert new[i] == old[i], f"clue {r[0]} unit {r[1]} user {r[2]}: {name}: {new[i]!r}, before {old[i]!r}"
    # Each fact both ways, so that the comparison above compared something.
    for i, name in enumerate(FACTS):
        seen = {bool(r[3 + i]) for r in rows}
        assert seen == {True, False}, f"{name}: only {seen}"


def test_handlers_text(c):
    """The handlers' text of a clue in assignment order, ties by user id; only the owner's."""
    w = c.w
    rows = sql(c, """SELECT c.id, clue_handlers_text(c.id, c.owner_unit) FROM clues c
                     WHERE c.has_handlers ORDER BY c.id""")
    assert len(rows) == 2, rows
    b, e = rows[0][1].split("\x1e"), rows[1][1].split("\x1e")
    assert len(b) == 1 and b[0].split("\x1f")[0] == str(w.G1.member.id), b
    assert b[0].split("\x1f")[5] == "1767261600123", b  # 2026-01-01 10:00:00.123 UTC in ms
    first, second = sorted([w.G3.member.id, w.R2.member.id])
    assert [x.split("\x1f")[0] for x in e] == [str(first), str(second)], e
    assert e[0].split("\x1f")[5] == "1767344400001", e  # half a millisecond rounds up, as before


def test_null_arguments(c):
    """The functions answer NULL arguments as the sub-selects did: no case, no unit, no user."""
    w = c.w
    case = sql(c, "SELECT id FROM joint_cases ORDER BY id LIMIT 1")[0][0]
    clue = sql(c, "SELECT id FROM clues WHERE has_recusals ORDER BY id LIMIT 1")[0][0]
    got = sql(c, """SELECT joint_case_lead(NULL), joint_case_has_unit(NULL, %s), joint_case_has_unit(%s, NULL),
                           clue_user_handles(%s, NULL, %s), clue_user_recused(%s, NULL),
                           clue_unit_leaders_recused(%s, NULL), clue_unit_leaders_recused(NULL, %s),
                           clue_handlers_text(NULL, %s), joint_case_lead(-1)""",
              w.R1.id, case, clue, w.G1.id, clue, clue, w.G1.id, w.G1.id)[0]
    assert got == (None, False, False, False, False, False, False, None, None), got


if __name__ == "__main__":
    harness.run_tests(globals(), setup, teardown)
