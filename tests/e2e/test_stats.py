"""Stage deadlines and statistics end to end (DESIGN.md §2 "Stage deadlines", §6).

Statistics: the test moves clues of several units through the API in two phases, A and B, a
moment apart, keeping its own ledger of every transition it caused and of the phase it
caused it in. Periods are judged on the audit events' own times (the database clock, which
this host shares), so the phases' wall-clock boundaries are the periods asked for. Every
figure expected is computed here from that ledger, never read back from the answer: counts
by unit, the breakdown of closed clues, the zero-disposal list (零通报), and the median days
per stage (measured on the times GetHistory reports for the transitions the test made). A
third phase adds a joint case (per-case figures, and which callers see the case) and a
handover (figures follow the owner at each transition). The per-unit overdue counts are
checked by a second clued whose clock runs forty days ahead. A
bulk history with realistic durations (bench/stats_seed.sql) is checked against an
independent computation over the raw audit rows.

Deadlines: entering a stage sets its deadline from the server's settings; ExtendDeadline
works once per stage for a LEADER of the owner unit and is refused otherwise; overdue,
days_left and ListClues' overdue filter follow the server's clock.
"""

import concurrent.futures
import csv
import datetime
import io
import json
import os
import statistics
import sys
import threading
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import expect_status, new_request_id  # noqa: E402
import world  # noqa: E402

S = harness.stubs()
pb = S.clue_pb2
sp = S.stats_pb2
cm = S.common_pb2
Code = grpc.StatusCode

ACCEPTED, PRELIM, FILED, CLOSED, TRANSFERRED = (cm.CLUE_STATE_ACCEPTED, cm.CLUE_STATE_PRELIMINARY_CHECK,
                                               cm.CLUE_STATE_FILED, cm.CLUE_STATE_CLOSED,
                                               cm.CLUE_STATE_TRANSFERRED_TO_JUDICIAL)
NAME = {s: cm.ClueState.Name(s)[len("CLUE_STATE_"):] for s in (ACCEPTED, PRELIM, FILED, CLOSED, TRANSFERRED)}
DAY_MS = 86400000
WORK_UNITS = ("R1", "R2", "G1", "G2", "G3", "X1")
# What each closing move carries, and how the statistics name its kind of closure.
DISPOSAL_NAME = {pb.DISPOSAL_TALK_OR_LETTER_INQUIRY: "TALK_OR_LETTER_INQUIRY",
                 pb.DISPOSAL_NO_FURTHER_ACTION: "NO_FURTHER_ACTION", pb.DISPOSAL_SHELVED: "SHELVED"}
DETAILS = {(PRELIM, CLOSED): {"finding": "反映问题不属实"},
           (FILED, CLOSED): {"sanction_kind": "党内警告", "persons_disciplined": 1},
           (FILED, TRANSFERRED): {"receiving_organ": "市人民检察院"}}
CO_REVIEW = {(PRELIM, FILED), (FILED, TRANSFERRED)}
TRANSITION_ACTIONS = ("clue.submit", "clue.move", "proposal.approve")


def now_ms():
    return int(time.time() * 1000)


class Ctx:
    """The server and world, the ledger of transitions this test made, and what it knows of
    each clue it made (owner, state, deadline)."""

    def __init__(self):
        self.ledger = []  # dicts: phase, unit, clue, frm, to, kind
        self.clues = {}  # id -> dict(unit, state, deadline_ms)
        self.phase = None

    # ---- calls that change clues; each records what it did

    def record(self, unit, clue, frm, to, kind=None, deadline_ms=0):
        self.ledger.append(dict(phase=self.phase, unit=unit.code, clue=clue.id, frm=frm, to=to, kind=kind))
        self.clues[clue.id] = dict(unit=unit.code, state=to, deadline_ms=deadline_ms)

    def submit(self, unit, user=None, stub=None, days=30):
        stub = stub or (user or unit.member).clue
        c = stub.SubmitClue(pb.SubmitClueRequest(
            request_id=new_request_id(), title="统计用线索", summary="反映某处长违规收受礼金",
            source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
            subject=pb.SubjectPerson(name="张三"), host_unit="市发展改革委"), timeout=20)
        self.record(unit, c, None, ACCEPTED, deadline_ms=c.updated_at_ms + days * DAY_MS)
        return c

    def move(self, unit, clue, target, disposal=None, stub=None, days=None):
        """A move without co-review, as the owner unit's leader. Returns the clue after it."""
        details = dict(DETAILS.get((clue.state, target), {}))
        if disposal is not None:
            details["disposal"] = disposal
        r = (stub or unit.leader.clue).RequestTransition(pb.RequestTransitionRequest(
            clue_id=clue.id, expected_version=clue.version, target=target, reason="依据核查情况",
            request_id=new_request_id(), details=pb.TransitionDetails(**details)), timeout=20)
        assert not r.pending and r.clue.state == target
        kind = None
        if target == CLOSED:
            kind = {ACCEPTED: DISPOSAL_NAME.get(disposal), PRELIM: "FINDING", FILED: "SANCTION"}[clue.state]
        days = days if days is not None else {PRELIM: 90, FILED: 90}.get(target, 0)
        self.record(unit, r.clue, clue.state, target, kind, r.clue.updated_at_ms + days * DAY_MS if days else 0)
        return r.clue

    def propose(self, unit, clue, target):
        """A co-review move: the proposal (nothing changes yet)."""
        details = dict(DETAILS.get((clue.state, target), {}))
        if unit.kind in ("ROOM", "REGION"):
            details["reviewer_unit_id"] = unit.reviewer.unit.id
        r = unit.leader.clue.RequestTransition(pb.RequestTransitionRequest(
            clue_id=clue.id, expected_version=clue.version, target=target, reason="提请会商",
            request_id=new_request_id(), details=pb.TransitionDetails(**details)), timeout=20)
        assert r.pending
        return r.proposal

    def review(self, unit, proposal, approve=True):
        """The reviewer's decision; an approval is the transition."""
        r = unit.reviewer.clue.ReviewProposal(pb.ReviewProposalRequest(
            proposal_id=proposal.id, approve=approve, comment="会商意见", request_id=new_request_id()), timeout=20)
        clue = r.clue if r.HasField("clue") else unit.member.clue.GetClue(pb.GetClueRequest(clue_id=proposal.clue_id),
                                                                         timeout=20)
        if approve:
            self.record(unit, clue, proposal.from_state, proposal.target, None,
                        clue.updated_at_ms + 90 * DAY_MS if proposal.target == FILED else 0)
        return clue

    def step(self, unit, clue, target, disposal=None):
        if (clue.state, target) in CO_REVIEW:
            return self.review(unit, self.propose(unit, clue, target))
        return self.move(unit, clue, target, disposal)

    # ---- what the statistics should say, from the ledger

    def expected(self, phases, codes):
        out = {}
        for code in codes:
            rows = [t for t in self.ledger if t["phase"] in phases and t["unit"] == code]
            kinds = {}
            for t in rows:
                if t["to"] == CLOSED:
                    kinds[t["kind"]] = kinds.get(t["kind"], 0) + 1
            out[code] = dict(
                received=sum(t["frm"] is None for t in rows),
                preliminary_checks_started=sum(t["to"] == PRELIM for t in rows),
                filed=sum(t["to"] == FILED for t in rows),
                closed=sum(t["to"] == CLOSED for t in rows),
                closed_by_disposal=kinds,
                transferred_to_judicial=sum(t["to"] == TRANSFERRED for t in rows),
                disposals=sum(t["frm"] is not None for t in rows))
        return out


def stats(user, frm, to, units=(), stub=None):
    return (stub or user.stats).GetStatistics(sp.GetStatisticsRequest(from_ms=frm, to_ms=to, unit_ids=list(units)),
                                              timeout=30)


def figures(u):
    """The counts of a UnitStats, in the shape of Ctx.expected()."""
    return dict(received=u.received, preliminary_checks_started=u.preliminary_checks_started, filed=u.filed,
                closed=u.closed, closed_by_disposal={d.disposal: d.count for d in u.closed_by_disposal},
                transferred_to_judicial=u.transferred_to_judicial)


def setup():
    c = Ctx()
    pg = harness.Postgres.get()
    c.pg = pg
    c.dbname = pg.new_database()
    c.url = pg.url(c.dbname)
    c.srv = harness.Clued(c.url).start()
    c.w = world.build(c.srv)
    c.db = pg.connect(c.dbname)
    c.code_of = {c.w.units[k].id: k for k in WORK_UNITS}
    return c


def teardown(c):
    c.w.close()
    c.db.close()
    c.srv.stop()


def pause():
    """Keeps phase boundaries clear of every event's time."""
    time.sleep(0.05)


# ---- the dataset ---------------------------------------------------------------------------------


def test_dataset(c):
    """Two phases of work across the units; c.bounds = (start of A, A/B boundary, end of B)."""
    w = c.w
    pause()
    t0 = now_ms()
    pause()
    c.phase = "A"
    # G1: a check begun, two closures from ACCEPTED, one clue left waiting; a proposal to
    # file is rejected (no transition) and proposed again in B.
    a1 = c.step(w.G1, c.submit(w.G1), PRELIM)
    c.step(w.G1, c.submit(w.G1), CLOSED, pb.DISPOSAL_TALK_OR_LETTER_INQUIRY)
    c.step(w.G1, c.submit(w.G1, user=w.G1.leader), CLOSED, pb.DISPOSAL_SHELVED)
    a4 = c.submit(w.G1)
    c.review(w.G1, c.propose(w.G1, a1, FILED), approve=False)
    # G2: a check closed with a finding; a clue filed and transferred; a filing proposed in A
    # and approved in B.
    b1 = c.step(w.G2, c.submit(w.G2), PRELIM)
    c.step(w.G2, b1, CLOSED)
    b2 = c.step(w.G2, c.step(w.G2, c.submit(w.G2), PRELIM), FILED)
    c.step(w.G2, b2, TRANSFERRED)
    b3 = c.step(w.G2, c.submit(w.G2), PRELIM)
    b3_proposal = c.propose(w.G2, b3, FILED)
    # X1 closes a clue; R1 only receives one (no disposal: zero in A); G3, R2 do nothing.
    c.step(w.X1, c.submit(w.X1), CLOSED, pb.DISPOSAL_NO_FURTHER_ACTION)
    r1 = c.submit(w.R1)
    pause()
    t1 = now_ms()
    pause()
    c.phase = "B"
    a1 = c.step(w.G1, a1, FILED)
    c.step(w.G1, a4, CLOSED, pb.DISPOSAL_NO_FURTHER_ACTION)
    c.step(w.G1, c.submit(w.G1), PRELIM)
    c.review(w.G2, b3_proposal)
    c.step(w.G3, c.submit(w.G3), CLOSED, pb.DISPOSAL_TALK_OR_LETTER_INQUIRY)
    g3 = c.step(w.G3, c.step(w.G3, c.submit(w.G3), PRELIM), FILED)
    c.step(w.G3, g3, CLOSED)
    c.step(w.R1, r1, PRELIM)  # entered ACCEPTED in A: its stay spans the boundary
    c.submit(w.X1)  # X1 receives but decides nothing: zero in B
    pause()
    t2 = now_ms()
    c.phase = None
    c.bounds = (t0, t1, t2)
    # The phases are the periods: every event the test caused lies inside its phase.
    with c.db.cursor() as cur:
        cur.execute("SELECT subject_id, action, from_state, to_state, (extract(epoch FROM at) * 1000)::bigint"
                    " FROM audit_events WHERE subject_type = 'clue' AND action = ANY (%s)", (list(TRANSITION_ACTIONS),))
        rows = cur.fetchall()
    assert len(rows) == len(c.ledger)
    for _, _, _, _, at in rows:
        assert t0 < at < t1 or t1 < at < t2, (t0, t1, t2, at)


def check_period(c, user, phases, frm, to, codes):
    """Every unit's figures for [frm, to) as user sees them equal the ledger's over phases."""
    want = c.expected(phases, codes)
    r = stats(user, frm, to)
    got = {c.code_of[u.unit_id]: u for u in r.units}
    assert list(got) == sorted(got, key=lambda k: c.w.units[k].id), "units in id order"
    assert set(got) == set(codes), (set(got), codes)
    for code in codes:
        u = got[code]
        assert u.unit_code == code and u.unit_name == c.w.units[code].kind.lower() + " " + code
        exp = dict(want[code])
        exp.pop("disposals")
        assert figures(u) == exp, (code, phases, figures(u), exp)
        assert u.overdue_now == 0, "nothing is due within thirty days of now"
    zero = sorted(k for k in codes if want[k]["disposals"] == 0)
    assert sorted(c.code_of[z.unit_id] for z in r.zero_disposal_units) == zero, (phases, zero)
    assert [z.unit_code for z in r.zero_disposal_units] == [c.w.units[k].code for k in
                                                            sorted(zero, key=lambda k: c.w.units[k].id)]
    return r


def test_counts_per_period(c):
    t0, t1, t2 = c.bounds
    for phases, frm, to in ((("A",), t0, t1), (("B",), t1, t2), (("A", "B"), t0, t2)):
        r = check_period(c, c.w.auditor, phases, frm, to, WORK_UNITS)
        # Sanity of the dataset itself: the zero-disposal lists the design above intends.
        zero = sorted(z.unit_code for z in r.zero_disposal_units)
        assert zero == {("A",): ["G3", "R1", "R2"], ("B",): ["R2", "X1"], ("A", "B"): ["R2"]}[phases], zero
    # Administrators read statistics too (they read the audit trail the figures come from).
    check_period(c, c.w.admin, ("A", "B"), t0, t2, WORK_UNITS)
    # Before any of it: nothing happened, and every unit (all existed already) is listed.
    r = check_period(c, c.w.auditor, (), t0 - 3600 * 1000, t0, WORK_UNITS)
    assert len(r.zero_disposal_units) == len(WORK_UNITS)
    # A period that ended before the units existed lists none of them as zero-disposal.
    r = stats(c.w.auditor, 1000, 2000)
    assert len(r.units) == len(WORK_UNITS) and list(r.zero_disposal_units) == []
    # The boundary is exact: from inclusive, to exclusive, on the events' times.
    with c.db.cursor() as cur:
        cur.execute("SELECT floor(extract(epoch FROM min(at)) * 1000)::bigint FROM audit_events"
                    " WHERE subject_type = 'clue' AND action = 'clue.submit'")
        first = cur.fetchone()[0]
    got = lambda frm, to: sum(u.received for u in stats(c.w.auditor, frm, to).units)  # noqa: E731
    assert got(first, t2) == got(t0, t2) and got(first + 1, t2) == got(t0, t2) - 1
    assert got(t0, first) == 0 and got(t0, first + 1) == 1


def _median_days(c, frm, to):
    """Median days per (unit code, stage left) for stages left in [frm, to), measured on the
    times GetHistory reports for the transitions of the ledger."""
    stays = {}
    for cid in sorted({t["clue"] for t in c.ledger}):
        h = c.w.auditor.clue.GetHistory(pb.GetHistoryRequest(clue_id=cid), timeout=20).events
        moves = [e for e in h if e.action in TRANSITION_ACTIONS]
        for prev, e in zip(moves, moves[1:]):
            if frm <= e.at_ms < to:
                assert prev.to_state == e.from_state
                unit = [t["unit"] for t in c.ledger if t["clue"] == cid and t["to"] == e.to_state][0]
                stays.setdefault((unit, e.from_state), []).append((e.at_ms - prev.at_ms) / DAY_MS)
    return {k: statistics.median(v) for k, v in stays.items()}


def test_median_days_per_stage(c):
    t0, t1, t2 = c.bounds
    for frm, to in ((t0, t1), (t1, t2), (t0, t2)):
        want = _median_days(c, frm, to)
        assert want, "the dataset leaves stages in every period"
        for u in stats(c.w.auditor, frm, to).units:
            code = c.code_of[u.unit_id]
            for stage, got in ((ACCEPTED, u.median_days_accepted), (PRELIM, u.median_days_preliminary_check),
                               (FILED, u.median_days_filed)):
                exp = want.get((code, stage), 0.0)
                # at_ms is rounded to the millisecond; the server measures microseconds.
                assert abs(got - exp) < 2.0 / DAY_MS, (code, NAME[stage], got, exp)
                assert (got > 0) == ((code, stage) in want)
    # R1's clue entered ACCEPTED in A and left it in B: measured across the boundary.
    r1 = [u for u in stats(c.w.auditor, t1, t2).units if u.unit_code == "R1"][0]
    assert r1.median_days_accepted * DAY_MS > 100


def test_session_settings_of_the_database_change_no_figure(c):
    # A database (or role) may set how PostgreSQL writes values out: floats to 2 digits,
    # bytea as escapes, dates day first. clued pins what it reads, so a clued started on it
    # answers with the same figures, to the last digit, as one started before.
    t0, _, t2 = c.bounds
    before = stats(c.w.auditor, t0, t2)
    assert any(u.median_days_accepted > 0 for u in before.units)
    with c.db.cursor() as cur:
        cur.execute(f'ALTER DATABASE "{c.dbname}" SET extra_float_digits = -15')
        cur.execute(f'ALTER DATABASE "{c.dbname}" SET bytea_output = escape')
        cur.execute(f'ALTER DATABASE "{c.dbname}" SET DateStyle = "SQL, DMY"')
        cur.execute(f'ALTER DATABASE "{c.dbname}" SET IntervalStyle = sql_standard')
    other = harness.Clued(c.url).start(migrate=False)
    try:
        ch = grpc.intercept_channel(grpc.insecure_channel(other.addr), world._Auth(c.w.auditor.token))
        got = S.stats_pb2_grpc.StatsServiceStub(ch).GetStatistics(
            S.stats_pb2.GetStatisticsRequest(from_ms=t0, to_ms=t2), timeout=20)
        assert got == before, (got, before)
        ch.close()
    finally:
        other.stop()
        with c.db.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{c.dbname}" RESET ALL')


def test_scope(c):
    w = c.w
    t0, _, t2 = c.bounds
    all_units = {x.unit_id: x for x in stats(w.auditor, t0, t2).units}
    own = {"G1": ["G1"], "G2": ["G2"], "G3": ["G3"], "X1": ["X1"], "R1": ["R1", "G1", "G2"], "R2": ["R2", "G3"]}
    for code, sees in own.items():
        for user in (w.units[code].leader, w.units[code].member):
            r = stats(user, t0, t2)
            assert sorted(c.code_of[u.unit_id] for u in r.units) == sorted(sees), (user, list(r.units))
            for u in r.units:
                assert u == all_units[u.unit_id], "a unit's figures do not depend on who asks"
            # Filtering inside the scope narrows; naming any other unit is refused, not dropped.
            r = stats(user, t0, t2, [w.units[code].id])
            assert [u.unit_code for u in r.units] == [code]
            for other in WORK_UNITS:
                if other in sees:
                    continue
                msg = expect_status(Code.PERMISSION_DENIED, stats, user, t0, t2, [w.units[code].id, w.units[other].id])
                assert str(w.units[other].id) in msg and "scope" in msg, msg
            # An id that is no unit at all looks the same to staff.
            expect_status(Code.PERMISSION_DENIED, stats, user, t0, t2, [987654])
            expect_status(Code.PERMISSION_DENIED, stats, user, t0, t2, [w.admin_unit.id])
    r = stats(w.R1.leader, t0, t2, [w.G2.id, w.G1.id, w.G2.id])
    assert [u.unit_code for u in r.units] == ["G1", "G2"], "duplicates collapse; id order"
    for user in (w.auditor, w.admin):
        r = stats(user, t0, t2, [w.G3.id, w.X1.id])
        assert [u.unit_code for u in r.units] == ["G3", "X1"]
        assert [z.unit_code for z in r.zero_disposal_units] == []
        msg = expect_status(Code.NOT_FOUND, stats, user, t0, t2, [987654])
        assert "987654" in msg
        msg = expect_status(Code.INVALID_ARGUMENT, stats, user, t0, t2, [w.admin_unit.id])
        assert "ADMIN" in msg


def test_invalid_requests(c):
    w = c.w
    t = now_ms()
    for frm, to, field in ((0, t, "from_ms"), (t, 0, "to_ms"), (-5, t, "from_ms"), (t, t, "from_ms"),
                           (t, t - 1, "from_ms"), (t, 2 ** 62, "to_ms"), (2 ** 62, 2 ** 62 + 1, "to_ms")):
        msg = expect_status(Code.INVALID_ARGUMENT, stats, w.G1.leader, frm, to)
        assert field in msg, msg
    assert len(stats(w.auditor, 1, 253402300800000).units) == len(WORK_UNITS), "all of time"
    msg = expect_status(Code.INVALID_ARGUMENT, stats, w.auditor, t - 1, t, [w.G1.id, -3])
    assert "unit_ids" in msg
    msg = expect_status(Code.INVALID_ARGUMENT, stats, w.auditor, t - 1, t, list(range(1, 1002)))
    assert "unit_ids" in msg
    # Without a token: UNAUTHENTICATED, as for every method.
    with grpc.insecure_channel(c.srv.addr) as ch:
        expect_status(Code.UNAUTHENTICATED, S.stats_pb2_grpc.StatsServiceStub(ch).GetStatistics,
                      sp.GetStatisticsRequest(from_ms=1, to_ms=2), timeout=20)


def test_joint_case_and_handover(c):
    """Phase C: a joint case led by R2 with G3 and X1 taking part, whose member clues are
    filed, transferred and closed; and a clue G1 received and handed over to G2, which then
    decides on it. Units' figures go by who owned the clue at each transition; a case's by its
    member clues, whoever owns them; staff see only the cases their unit leads or joins."""
    w = c.w
    cs = S.case_pb2
    pause()
    t3 = now_ms()
    pause()
    c.phase = "C"
    g3, x1, r2 = c.submit(w.G3), c.submit(w.X1), c.submit(w.R2)
    jc = w.R2.leader.case.CreateJointCase(cs.CreateJointCaseRequest(
        title="某局系列违纪案联合审查", participant_unit_ids=[w.G3.id, w.X1.id], clue_ids=[g3.id, r2.id],
        request_id=new_request_id()), timeout=20)
    # X1's clue joins by its own leader's consent (R2 does not see it).
    jc = w.X1.leader.case.AddClueToCase(cs.AddClueToCaseRequest(case_id=jc.id, clue_id=x1.id), timeout=20)
    # Joining bumps the version: reload before moving.
    g3, x1 = g(w.G3.leader, g3.id), g(w.X1.leader, x1.id)
    c.step(w.G3, c.step(w.G3, c.step(w.G3, g3, PRELIM), FILED), TRANSFERRED)  # the lead room reviews
    c.step(w.X1, x1, CLOSED, pb.DISPOSAL_NO_FURTHER_ACTION)
    moved = c.submit(w.G1)
    moved = w.G1.leader.clue.HandOver(pb.HandOverRequest(clue_id=moved.id, expected_version=moved.version,
                                                         to_unit_id=w.G2.id, reason="属地管辖",
                                                         request_id=new_request_id()),
                                      timeout=20)
    c.clues[moved.id]["unit"] = "G2"
    c.step(w.G2, moved, PRELIM)
    pause()
    t4 = now_ms()
    c.phase = None
    c.bounds_c = (t3, t4)

    r = check_period(c, w.auditor, ("C",), t3, t4, WORK_UNITS)
    got = {u.unit_code: u for u in r.units}
    assert got["G1"].received == 1 and got["G1"].preliminary_checks_started == 0
    assert got["G2"].received == 0 and got["G2"].preliminary_checks_started == 1
    # G2 measures the ACCEPTED stay from the submission by G1, whether or not G1 is asked too.
    alone = stats(w.auditor, t3, t4, [w.G2.id]).units[0]
    assert alone == got["G2"] and alone.median_days_accepted > 0
    want = _median_days(c, t3, t4)
    assert abs(alone.median_days_accepted - want[("G2", ACCEPTED)]) < 2.0 / DAY_MS

    mine = [t for t in c.ledger if t["clue"] in (g3.id, x1.id, r2.id)]
    case_row = (jc.id, "某局系列违纪案联合审查", 3, sum(t["to"] == CLOSED for t in mine),
                sum(t["to"] == TRANSFERRED for t in mine), 0)
    assert case_row[3:5] == (1, 1)

    def cases(user, frm=t3, to=t4, units=()):
        return [(k.case_id, k.title, k.clues, k.closed, k.transferred_to_judicial, k.overdue_now)
                for k in stats(user, frm, to, units).cases]

    for user in (w.auditor, w.R2.leader, w.R2.member, w.G3.member, w.X1.leader):
        assert cases(user) == [case_row], user
    # An ADMIN counts the case but reads no title of it, as it reads no case.
    assert cases(w.admin) == [case_row[:1] + ("",) + case_row[2:]]
    for user in (w.R1.leader, w.G1.leader, w.G2.member):
        assert cases(user) == [], user
    assert cases(w.auditor, units=[w.G1.id, w.G2.id]) == []
    assert cases(w.auditor, units=[w.X1.id]) == [case_row], "a participant's filter lists the case"
    # Membership is now; the closures are the period's.
    assert cases(w.auditor, c.bounds[0], c.bounds[2]) == [case_row[:3] + (0, 0, 0)]


# ---- deadlines -----------------------------------------------------------------------------------


def extend(user, clue, days=10, reason="证据调取需要时间", request_id=None, version=None):
    return user.clue.ExtendDeadline(pb.ExtendDeadlineRequest(
        clue_id=clue.id, expected_version=version or clue.version, days=days, reason=reason,
        request_id=request_id or new_request_id()), timeout=20)


def events(c, clue_id, action):
    with c.db.cursor() as cur:
        cur.execute("SELECT reason, details FROM audit_events WHERE subject_type = 'clue' AND subject_id = %s"
                    " AND action = %s ORDER BY seq", (clue_id, action))
        return [(r, json.loads(d)) for r, d in cur.fetchall()]


def test_stage_deadlines_follow_settings(c):
    """Each stage's deadline is set on entry from the server's settings."""
    days = {ACCEPTED: 7, PRELIM: 20, FILED: 45}
    srv = harness.Clued(c.url, args=["--accepted-deadline-days", "7", "--prelim-deadline-days", "20",
                                     "--filed-deadline-days", "45"]).start(migrate=False)
    channels = []
    try:
        w = c.w
        stubs = {}
        for user in (w.G1.member, w.G1.leader, w.R1.leader):
            channels.append(grpc.insecure_channel(srv.addr))
            ch = grpc.intercept_channel(channels[-1], world._Auth(user.token))
            stubs[user.name] = S.clue_pb2_grpc.ClueServiceStub(ch)
        cl = c.submit(w.G1, stub=stubs[w.G1.member.name], days=7)
        assert cl.stage_deadline_ms == cl.created_at_ms + 7 * DAY_MS and cl.days_left == 6
        cl = c.move(w.G1, cl, PRELIM, stub=stubs[w.G1.leader.name], days=20)
        assert cl.stage_deadline_ms == cl.updated_at_ms + days[PRELIM] * DAY_MS and cl.days_left == 19
        p = stubs[w.G1.leader.name].RequestTransition(pb.RequestTransitionRequest(
            clue_id=cl.id, expected_version=cl.version, target=FILED, reason="提请立案",
            request_id=new_request_id()), timeout=20)
        d = stubs[w.R1.leader.name].ReviewProposal(pb.ReviewProposalRequest(
            proposal_id=p.proposal.id, approve=True, comment="同意", request_id=new_request_id()), timeout=20).clue
        c.record(w.G1, d, PRELIM, FILED, deadline_ms=d.updated_at_ms + 45 * DAY_MS)
        assert d.state == FILED and d.stage_deadline_ms == d.updated_at_ms + days[FILED] * DAY_MS
        cl = c.move(w.G1, d, CLOSED, stub=stubs[w.G1.leader.name])
        assert cl.stage_deadline_ms == 0 and cl.days_left == 0 and not cl.overdue and not cl.deadline_extended
        c.x1_accepted = c.submit(w.X1)  # 30 days: the default server's setting
    finally:
        for ch in channels:
            ch.close()
        srv.stop()


def test_extend_deadline(c):
    w = c.w
    cl = c.submit(w.G3)
    assert not cl.deadline_extended
    before = cl.stage_deadline_ms
    got = extend(w.G3.leader, cl, days=15)
    assert got.id == cl.id and got.state == ACCEPTED and got.version == cl.version + 1 and got.deadline_extended
    assert got.stage_deadline_ms == before + 15 * DAY_MS and got.days_left == 44
    c.clues[cl.id]["deadline_ms"] += 15 * DAY_MS
    c.extended = got
    ev = events(c, cl.id, "clue.deadline_extend")
    assert len(ev) == 1
    reason, details = ev[0]
    assert reason == "证据调取需要时间"
    assert details["old_deadline_ms"] == before and details["new_deadline_ms"] == got.stage_deadline_ms
    assert details["days"] == 15 and details["state"] == "ACCEPTED" and details["version"] == got.version
    h = w.G3.member.clue.GetHistory(pb.GetHistoryRequest(clue_id=cl.id), timeout=20).events
    assert [e.action for e in h] == ["clue.submit", "clue.deadline_extend"]
    assert g(w.G3.member, cl.id).stage_deadline_ms == got.stage_deadline_ms

    # Once per stage: the second is refused, whoever asks and however many days.
    msg = expect_status(Code.FAILED_PRECONDITION, extend, w.G3.leader, got, days=1)
    assert "already extended" in msg, msg
    # A stale version answers ABORTED first, as for moves.
    expect_status(Code.ABORTED, extend, w.G3.leader, got, version=cl.version)
    assert len(events(c, cl.id, "clue.deadline_extend")) == 1

    # Entering the next stage sets a fresh deadline and allows one extension again.
    nxt = c.move(w.G3, got, PRELIM)
    assert not nxt.deadline_extended and nxt.stage_deadline_ms == nxt.updated_at_ms + 90 * DAY_MS
    again = extend(w.G3.leader, nxt, days=365)
    assert again.deadline_extended and again.stage_deadline_ms == nxt.stage_deadline_ms + 365 * DAY_MS
    c.clues[cl.id]["deadline_ms"] += 365 * DAY_MS
    expect_status(Code.FAILED_PRECONDITION, extend, w.G3.leader, again)

    # A terminal clue has no deadline to extend.
    done = c.step(w.G1, c.submit(w.G1), CLOSED, pb.DISPOSAL_SHELVED)
    msg = expect_status(Code.FAILED_PRECONDITION, extend, w.G1.leader, done)
    assert "terminal" in msg, msg
    # A pending proposal was made against this version: review it first.
    pend = c.step(w.G1, c.submit(w.G1), PRELIM)
    prop = c.propose(w.G1, pend, FILED)
    msg = expect_status(Code.FAILED_PRECONDITION, extend, w.G1.leader, pend)
    assert "pending proposal" in msg, msg
    c.review(w.G1, prop, approve=False)
    ok = extend(w.G1.leader, pend, days=5)
    assert ok.deadline_extended and ok.version == pend.version + 1
    c.clues[pend.id]["deadline_ms"] += 5 * DAY_MS


def g(user, clue_id):
    return user.clue.GetClue(pb.GetClueRequest(clue_id=clue_id), timeout=20)


def test_extend_deadline_who_and_what(c):
    w = c.w
    cl = c.submit(w.G2)
    # Visible but not theirs to extend: the unit's member, the liaison room, the auditor.
    for user in (w.G2.member, w.R1.leader, w.R1.member, w.auditor):
        msg = expect_status(Code.PERMISSION_DENIED, extend, user, cl)
        assert "LEADER" in msg or "read-only" in msg, msg
    # Hidden: other units, and administrators, who never see clues.
    for user in (w.G1.leader, w.G3.leader, w.R2.leader, w.X1.leader, w.admin):
        assert expect_status(Code.NOT_FOUND, extend, user, cl) == "clue not found"
    expect_status(Code.NOT_FOUND, w.G2.leader.clue.ExtendDeadline, pb.ExtendDeadlineRequest(
        clue_id=987654321, expected_version=1, days=3, reason="r", request_id=new_request_id()), timeout=20)
    bad = [(dict(days=0), "days"), (dict(days=366), "days"), (dict(days=-1), "days"), (dict(reason=" \n"), "reason"),
           (dict(request_id="nope"), "request_id"), (dict(version=-1), "expected_version")]
    for kw, field in bad:
        msg = expect_status(Code.INVALID_ARGUMENT, extend, w.G2.leader, cl, **kw)
        assert field in msg, (kw, msg)
    assert events(c, cl.id, "clue.deadline_extend") == []
    assert g(w.G2.leader, cl.id).version == cl.version


def test_extend_deadline_idempotent_and_racing(c):
    w = c.w
    cl = c.submit(w.X1)
    key = new_request_id()
    first = extend(w.X1.leader, cl, days=3, request_id=key)
    for _ in range(3):
        again = extend(w.X1.leader, cl, days=3, request_id=key.upper())
        assert again.id == first.id and again.version == first.version
        assert again.stage_deadline_ms == first.stage_deadline_ms
    assert len(events(c, cl.id, "clue.deadline_extend")) == 1
    c.clues[cl.id]["deadline_ms"] += 3 * DAY_MS
    other = c.submit(w.X1)
    msg = expect_status(Code.INVALID_ARGUMENT, extend, w.X1.leader, other, request_id=key)
    assert "request_id" in msg
    # Racing extensions of one clue: exactly one wins, the others change nothing.
    race = c.submit(w.X1)
    barrier = threading.Barrier(6)

    def racer(i):
        raw, ch = w.X1.leader.new_channel()
        try:
            stub = S.clue_pb2_grpc.ClueServiceStub(ch)
            stub.GetClue(pb.GetClueRequest(clue_id=race.id), timeout=20)
            barrier.wait()
            try:
                stub.ExtendDeadline(pb.ExtendDeadlineRequest(clue_id=race.id, expected_version=race.version,
                                                             days=i + 1, reason="并发", request_id=new_request_id()),
                                    timeout=20)
                return "ok", i + 1
            except grpc.RpcError as e:
                return e.code(), None
        finally:
            raw.close()

    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        results = list(ex.map(racer, range(6)))
    wins = [d for r, d in results if r == "ok"]
    assert len(wins) == 1, results
    assert all(r in ("ok", Code.ABORTED, Code.FAILED_PRECONDITION) for r, _ in results), results
    now = g(w.X1.leader, race.id)
    assert now.version == race.version + 1 and now.stage_deadline_ms == race.stage_deadline_ms + wins[0] * DAY_MS
    assert len(events(c, race.id, "clue.deadline_extend")) == 1
    c.clues[race.id]["deadline_ms"] += wins[0] * DAY_MS


def test_overdue_follows_the_clock(c):
    """Forty days on: ACCEPTED clues (30 days) are overdue unless extended past that, checks
    (90 days) are not; GetClue, ListClues and GetStatistics agree."""
    w = c.w
    offset = 40 * DAY_MS
    later = harness.Clued(c.url, args=["--test-clock-offset-ms", str(offset)]).start(migrate=False)
    channels = {}
    try:
        def stub(user, svc):
            if user.name not in channels:
                channels[user.name] = grpc.insecure_channel(later.addr)
            ch = grpc.intercept_channel(channels[user.name], world._Auth(user.token))
            return getattr(S, svc + "_pb2_grpc").__dict__[svc.capitalize() + "ServiceStub"](ch)

        at = now_ms() + offset
        plain = c.x1_accepted  # X1, ACCEPTED, 30 days
        got = stub(w.X1.leader, "clue").GetClue(pb.GetClueRequest(clue_id=plain.id), timeout=20)
        assert got.overdue and got.days_left == -11, (got.overdue, got.days_left)
        ext = stub(w.G3.leader, "clue").GetClue(pb.GetClueRequest(clue_id=c.extended.id), timeout=20)
        assert ext.state == PRELIM and not ext.overdue and ext.days_left == 90 + 365 - 40 - 1
        for code in WORK_UNITS:
            unit = w.units[code]
            want = {cid for cid, k in c.clues.items()
                    if k["unit"] == code and k["deadline_ms"] and k["deadline_ms"] < at}
            r = stub(unit.leader, "clue").ListClues(pb.ListCluesRequest(overdue_only=True, owner_unit_id=unit.id,
                                                                        page_size=500), timeout=20)
            assert {x.id for x in r.clues} == want, (code, {x.id for x in r.clues}, want)
            assert all(x.overdue and x.days_left < 0 for x in r.clues)
            # Statistics count the overdue clues by the same clock; the periods are unaffected.
            s = stub(w.auditor, "stats").GetStatistics(sp.GetStatisticsRequest(
                from_ms=c.bounds[0], to_ms=c.bounds[2], unit_ids=[unit.id]), timeout=20).units[0]
            assert s.overdue_now == len(want), (code, s.overdue_now, len(want))
            plain_now = stats(w.auditor, c.bounds[0], c.bounds[2], [unit.id]).units[0]
            assert plain_now.overdue_now == 0
            plain_now.overdue_now = s.overdue_now
            assert plain_now == s
        assert any(k["deadline_ms"] and k["deadline_ms"] < at for k in c.clues.values())
        # Extending an overdue clue adds to its deadline, not to now.
        old = got.stage_deadline_ms
        x = stub(w.X1.leader, "clue").ExtendDeadline(pb.ExtendDeadlineRequest(
            clue_id=plain.id, expected_version=got.version, days=5, reason="补充调查",
            request_id=new_request_id()), timeout=20)
        assert x.stage_deadline_ms == old + 5 * DAY_MS and x.overdue and x.days_left == -6
    finally:
        for ch in channels.values():
            ch.close()
        later.stop()


# ---- a bulk history with realistic durations -------------------------------------------------------


def test_zz_bulk_history(c):
    """3,000 clues with histories over fourteen months, written by bench/stats_seed.sql into a
    database of their own; GetStatistics against a computation here over the raw audit rows."""
    dbname = c.pg.new_database()
    url = c.pg.url(dbname)
    srv = harness.Clued(url).start()
    bw = world.build(srv)
    db = c.pg.connect(dbname)
    try:
        # A minute ahead, so that the units the seed creates exist before every period's end.
        end = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=1)
        with db.cursor() as cur:
            cur.execute(open(os.path.join(harness.SRC, "bench", "stats_seed.sql")).read())
            cur.execute("SELECT pg_temp.stats_seed(3000, %s, 3, 8, 3)", (end,))
            cur.execute("SELECT id, code FROM units WHERE code LIKE 'B%'")
            codes = dict(cur.fetchall())
            cur.execute("SELECT subject_id, seq, (extract(epoch FROM at) * 1000000)::bigint, owner_unit, action, from_state,"
                        " to_state, details FROM audit_events WHERE subject_type = 'clue' AND action = ANY (%s)"
                        " ORDER BY subject_id, seq", (list(TRANSITION_ACTIONS),))
            rows = cur.fetchall()
            cur.execute("SELECT owner_unit, (extract(epoch FROM stage_deadline) * 1000)::bigint FROM clues"
                        " WHERE stage_deadline IS NOT NULL")
            deadlines = cur.fetchall()
        end_ms = int(end.timestamp() * 1000)
        for days in (365, 30, 1):
            frm, to = end_ms - days * DAY_MS, end_ms
            want, stays, prev = {}, {}, None
            for sid, _, at_us, owner, action, frm_s, to_s, details in rows:
                at_ms = at_us / 1000
                if frm <= at_ms < to:
                    u = want.setdefault(owner, dict(received=0, preliminary_checks_started=0, filed=0, closed=0,
                                                    closed_by_disposal={}, transferred_to_judicial=0))
                    if action == "clue.submit":
                        u["received"] += 1
                    key = {"PRELIMINARY_CHECK": "preliminary_checks_started", "FILED": "filed", "CLOSED": "closed",
                           "TRANSFERRED_TO_JUDICIAL": "transferred_to_judicial"}.get(to_s)
                    if key:
                        u[key] += 1
                    if to_s == "CLOSED":
                        kind = {"ACCEPTED": json.loads(details).get("disposal"), "PRELIMINARY_CHECK": "FINDING",
                                "FILED": "SANCTION"}[frm_s]
                        u["closed_by_disposal"][kind] = u["closed_by_disposal"].get(kind, 0) + 1
                    if frm_s is not None and prev is not None and prev[0] == sid and prev[2] == frm_s:
                        stays.setdefault((owner, frm_s), []).append((at_us - prev[1]) / 1e6 / 86400)
                prev = (sid, at_us, to_s)
            r = stats(bw.auditor, frm, to)
            got = {u.unit_id: u for u in r.units if u.unit_id in codes}
            assert set(got) == set(codes)
            zero = set()
            for uid, u in got.items():
                exp = want.get(uid, dict(received=0, preliminary_checks_started=0, filed=0, closed=0,
                                         closed_by_disposal={}, transferred_to_judicial=0))
                assert figures(u) == exp, (codes[uid], days, figures(u), exp)
                if exp["preliminary_checks_started"] + exp["filed"] + exp["closed"] + exp["transferred_to_judicial"] == 0:
                    zero.add(uid)
                for stage, m in (("ACCEPTED", u.median_days_accepted), ("PRELIMINARY_CHECK",
                                 u.median_days_preliminary_check), ("FILED", u.median_days_filed)):
                    exp_m = statistics.median(stays[(uid, stage)]) if (uid, stage) in stays else 0.0
                    assert abs(m - exp_m) < 1e-6, (codes[uid], stage, days, m, exp_m)
                assert u.overdue_now == sum(1 for o, d in deadlines if o == uid and d < now_ms())
            assert {z.unit_id for z in r.zero_disposal_units if z.unit_id in codes} == zero
            if days == 365:
                assert not zero and sum(u.received for u in got.values()) > 2000
                assert all(u.median_days_accepted > 3 for u in got.values())
            if days == 1:
                assert zero, "a one-day period leaves some unit without a decision"
    finally:
        bw.close()
        db.close()
        srv.stop()


# ---- what a joint case's figures count -------------------------------------------------------------


def _case_figures(user, case_id, frm, to, units=()):
    """(clues, closed, transferred, overdue) of case case_id in user's GetStatistics, or None."""
    rows = [(k.clues, k.closed, k.transferred_to_judicial, k.overdue_now)
            for k in stats(user, frm, to, units).cases if k.case_id == case_id]
    assert len(rows) <= 1, rows
    return rows[0] if rows else None


def test_case_figures_leave_out_a_recused_clue(c):
    """A member of G1 recused from G1's clue in a joint case finds the case without it
    (GetJointCase, docs/COOPERATION.md), and the case's figures count it no more: neither as a
    member nor its closure nor its overdue deadline. A colleague of the same unit who is not
    recused, and the other participants, count it."""
    w = c.w
    cs = S.case_pb2
    pause()
    t0 = now_ms()
    hidden, other = c.submit(w.G1), c.submit(w.G2)
    jc = w.R1.leader.case.CreateJointCase(cs.CreateJointCaseRequest(
        title="回避者所见的联合案", participant_unit_ids=[w.G1.id, w.G2.id], clue_ids=[hidden.id, other.id],
        request_id=new_request_id()), timeout=20)
    w.G1.leader.clue.RecordRecusal(pb.RecordRecusalRequest(
        clue_id=hidden.id, user_id=w.G1.member.id, reason="近亲属关系", request_id=new_request_id()), timeout=20)
    c.move(w.G1, c.move(w.G1, g(w.G1.leader, hidden.id), PRELIM), CLOSED)
    pause()
    t1 = now_ms()

    seen = w.G1.member.case.GetJointCase(cs.GetJointCaseRequest(case_id=jc.id), timeout=20)
    assert [k.clue_id for k in seen.clues] == [other.id]
    expect_status(Code.NOT_FOUND, g, w.G1.member, hidden.id)
    assert _case_figures(w.G1.member, jc.id, t0, t1) == (1, 0, 0, 0)
    assert _case_figures(w.G1.member, jc.id, t0, t1, [w.G1.id]) == (1, 0, 0, 0)
    for user in (w.G1.leader, w.G2.member, w.R1.member, w.auditor, w.admin):
        assert _case_figures(user, jc.id, t0, t1) == (2, 1, 0, 0), user

    # Forty days on, the clues still in ACCEPTED (30 days) are overdue: G2's, which everyone
    # counts, and a second clue of G1 the member is recused from, which only the others count.
    hidden2 = c.submit(w.G1, days=30)
    jc = w.G1.leader.case.AddClueToCase(cs.AddClueToCaseRequest(case_id=jc.id, clue_id=hidden2.id), timeout=20)
    w.G1.leader.clue.RecordRecusal(pb.RecordRecusalRequest(
        clue_id=hidden2.id, user_id=w.G1.member.id, reason="近亲属关系", request_id=new_request_id()), timeout=20)
    later = harness.Clued(c.url, args=["--test-clock-offset-ms", str(40 * DAY_MS)]).start(migrate=False)
    try:
        def later_stats(user):
            with grpc.insecure_channel(later.addr) as ch:
                stub = S.stats_pb2_grpc.StatsServiceStub(grpc.intercept_channel(ch, world._Auth(user.token)))
                return [(k.clues, k.closed, k.transferred_to_judicial, k.overdue_now)
                        for k in stats(user, t0, t1, stub=stub).cases if k.case_id == jc.id]

        assert later_stats(w.G1.member) == [(1, 0, 0, 1)]
        assert later_stats(w.G1.leader) == [(3, 1, 0, 2)]
    finally:
        later.stop()


def test_a_case_without_clues_is_listed_with_zeros(c):
    """A joint case with no member clue, never or no more, is listed with zeros to the staff of
    the units that lead or join it, and to auditors and administrators; not to other staff,
    nor under a unit filter that names none of its units."""
    w = c.w
    cs = S.case_pb2
    pause()
    t0 = now_ms()
    empty = w.R1.leader.case.CreateJointCase(cs.CreateJointCaseRequest(
        title="尚无线索的联合案", participant_unit_ids=[w.G1.id], request_id=new_request_id()), timeout=20)
    x = c.submit(w.G2)
    emptied = w.R1.leader.case.CreateJointCase(cs.CreateJointCaseRequest(
        title="线索已移出的联合案", participant_unit_ids=[w.G2.id], clue_ids=[x.id],
        request_id=new_request_id()), timeout=20)
    w.R1.leader.case.RemoveClueFromCase(cs.RemoveClueFromCaseRequest(case_id=emptied.id, clue_id=x.id,
                                                                     reason="不宜并案"), timeout=20)
    pause()
    t1 = now_ms()

    zeros = (0, 0, 0, 0)
    for user in (w.R1.leader, w.R1.member, w.G1.member, w.G1.leader, w.auditor, w.admin):
        assert _case_figures(user, empty.id, t0, t1) == zeros, user
    for user in (w.R1.leader, w.G2.member, w.auditor, w.admin):
        assert _case_figures(user, emptied.id, t0, t1) == zeros, user
    titles = {k.case_id: k.title for k in stats(w.G1.member, t0, t1).cases}
    assert titles[empty.id] == "尚无线索的联合案"
    for user in (w.G2.member, w.G3.member, w.R2.leader, w.X1.leader):
        assert _case_figures(user, empty.id, t0, t1) is None, user
    for user in (w.G1.member, w.G3.member, w.R2.leader, w.X1.leader):
        assert _case_figures(user, emptied.id, t0, t1) is None, user
    assert _case_figures(w.auditor, empty.id, t0, t1, [w.G1.id]) == zeros
    assert _case_figures(w.auditor, empty.id, t0, t1, [w.G2.id, w.X1.id]) is None
    assert _case_figures(w.auditor, emptied.id, t0, t1, [w.G2.id]) == zeros


# ---- the case rows in pages -------------------------------------------------------------------------


def stats_page(user, frm, to, units=(), **kw):
    """GetStatistics with the paging fields kw (case_page_size, case_page_token, omit_cases)."""
    return user.stats.GetStatistics(sp.GetStatisticsRequest(from_ms=frm, to_ms=to, unit_ids=list(units), **kw),
                                    timeout=60)


def case_pages(user, frm, to, size=0, units=()):
    """Every answer of GetStatistics, first to last, following next_case_page_token."""
    pages, token = [], ""
    while True:
        r = stats_page(user, frm, to, units, case_page_size=size, case_page_token=token)
        pages.append(r)
        assert len(pages) <= 10000, "the case pages never end"
        if not r.next_case_page_token:
            return pages
        token = r.next_case_page_token


def case_row(k):
    return (k.case_id, k.title, k.clues, k.closed, k.transferred_to_judicial, k.overdue_now)


def check_pages(whole, pages, size):
    """pages list whole's cases, each once, in id order, at most size a page and only the last
    short; each with whole's unit figures and zero-disposal list."""
    rows = [case_row(k) for p in pages for k in p.cases]
    assert rows == [case_row(k) for k in whole.cases], (len(rows), len(whole.cases))
    ids = [r[0] for r in rows]
    assert ids == sorted(set(ids)), "every case once, in id order"
    assert len(pages) == max(1, -(-len(rows) // size)), (len(pages), len(rows), size)
    for i, p in enumerate(pages):
        assert list(p.units) == list(whole.units), f"page {i}: other unit figures"
        assert list(p.zero_disposal_units) == list(whole.zero_disposal_units), f"page {i}: other zero list"
        last = i == len(pages) - 1
        assert len(p.cases) == size or (last and len(p.cases) <= size), (i, len(p.cases), size)
        assert bool(p.next_case_page_token) != last, (i, p.next_case_page_token)


def test_case_rows_come_in_pages(c):
    """GetStatistics' case rows come case_page_size at a time, following next_case_page_token:
    every case each caller sees comes once, in id order, as one answer of the default page size
    lists them; each page carries the same unit figures and zero-disposal list, whole. ADMIN
    titles stay empty, and each caller sees the cases it saw."""
    w = c.w
    cs = S.case_pb2
    pause()
    t0 = now_ms()
    made = []
    for i in range(12):
        made.append(w.R1.leader.case.CreateJointCase(cs.CreateJointCaseRequest(
            title=f"分页联合案 {i}", participant_unit_ids=[w.G1.id] if i % 2 else [],
            request_id=new_request_id()), timeout=20))
    c.move(w.G1, c.submit(w.G1), PRELIM)  # some unit figures that are not zero
    pause()
    t1 = now_ms()
    odd = [jc.id for i, jc in enumerate(made) if i % 2]
    for user, size, units in ((w.auditor, 5, ()), (w.admin, 5, ()), (w.R1.leader, 5, ()), (w.R1.member, 1, ()),
                              (w.G1.member, 3, ()), (w.G1.leader, 7, ()), (w.R2.leader, 4, ()),
                              (w.auditor, 2, (w.G1.id,)), (w.R1.leader, 4, (w.G1.id, w.R1.id))):
        whole = stats(user, t0, t1, units)
        assert not whole.next_case_page_token, "fewer cases than a default page: one answer"
        check_pages(whole, case_pages(user, t0, t1, size, units), size)
        # Past the largest page size, the largest.
        check_pages(whole, case_pages(user, t0, t1, 1001, units), 1000)
        listed = {k.case_id for k in whole.cases}
        if user in (w.R1.leader, w.R1.member, w.auditor, w.admin) and not units:
            assert {jc.id for jc in made} <= listed, user
        if user in (w.G1.member, w.G1.leader):
            assert {jc.id for jc in made} & listed == set(odd), user
        if user is w.R2.leader:
            assert not {jc.id for jc in made} & listed
        if user is w.admin:
            assert all(k.title == "" for p in case_pages(user, t0, t1, size) for k in p.cases)
    assert sum(u.preliminary_checks_started for u in stats(w.auditor, t0, t1).units) == 1


def test_case_pages_omitted(c):
    """omit_cases: no case row and no token, the same unit figures and zero-disposal list; a
    page token with it changes nothing of that."""
    w = c.w
    t0, t1 = c.bounds[0], now_ms()
    for user in (w.auditor, w.admin, w.R1.leader, w.G1.member):
        whole = stats(user, t0, t1)
        assert whole.cases, user
        for kw in (dict(omit_cases=True), dict(omit_cases=True, case_page_size=1),
                   dict(omit_cases=True, case_page_token=case_pages(user, t0, t1, 1)[0].next_case_page_token)):
            r = stats_page(user, t0, t1, **kw)
            assert list(r.cases) == [] and r.next_case_page_token == "", (user, kw)
            assert list(r.units) == list(whole.units) and list(r.zero_disposal_units) == list(whole.zero_disposal_units)


def test_case_page_requests_refused(c):
    """A negative case_page_size, and a case_page_token this method did not give this caller
    (damaged, made up, the audit list's, ListClues', whose format ListJointCases shares, or
    another caller's), are INVALID_ARGUMENT naming the field; and its token is no other
    list's."""
    w = c.w
    t0, t1 = c.bounds[0], now_ms()
    token = case_pages(w.auditor, t0, t1, 1)[0].next_case_page_token
    assert token
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    audit = w.auditor.audit.ListAuditEvents(S.audit_pb2.ListAuditEventsRequest(page_size=1), timeout=20)
    assert audit.next_page_token
    clues = w.auditor.clue.ListClues(S.clue_pb2.ListCluesRequest(page_size=1), timeout=20)
    assert clues.next_page_token
    others = case_pages(w.R1.leader, t0, t1, 1)[0].next_case_page_token
    assert others
    for kw, field in ((dict(case_page_token=clues.next_page_token), "case_page_token"),
                      (dict(case_page_token=others), "case_page_token")):
        msg = expect_status(Code.INVALID_ARGUMENT, stats_page, w.auditor, t0, t1, **kw)
        assert msg.startswith(field), (kw, msg)
    expect_status(Code.INVALID_ARGUMENT, w.auditor.case.ListJointCases,
                  S.case_pb2.ListJointCasesRequest(page_token=token), timeout=20)
    expect_status(Code.INVALID_ARGUMENT, w.auditor.clue.ListClues,
                  S.clue_pb2.ListCluesRequest(page_size=1, page_token=token), timeout=20)
    for kw, field in ((dict(case_page_size=-1), "case_page_size"),
                      (dict(case_page_size=-1, omit_cases=True), "case_page_size"),
                      (dict(case_page_token="zz"), "case_page_token"),
                      (dict(case_page_token=flipped), "case_page_token"),
                      (dict(case_page_token=token + "A"), "case_page_token"),
                      (dict(case_page_token=audit.next_page_token), "case_page_token"),
                      (dict(case_page_token="zz", omit_cases=True), "case_page_token")):
        msg = expect_status(Code.INVALID_ARGUMENT, stats_page, w.auditor, t0, t1, **kw)
        assert msg.startswith(field), (kw, msg)
    assert stats_page(w.auditor, t0, t1, case_page_token=token).cases


def test_zzz_a_thousand_cases_and_more(c):
    """Past 1,000 cases (titles of 200 characters): an answer holds 1,000 case rows at most,
    whatever case_page_size asks, and the rest follow; `cluectl stats` lists every case in its
    table, --csv --cases and --json, and --csv (units only) is the units of the answer."""
    w = c.w
    title = "某省某市某局系列违纪违法案件联合审查调查" * 10
    assert len(title) == 200
    with c.db.cursor() as cur:
        # Through the function CreateJointCase calls, audited as it would be.
        cur.execute("SELECT count(*) FROM generate_series(1, 1005) g, case_create(%s, %s, gen_random_uuid(), %s,"
                    " substr(%s, 1, 196) || lpad(g::text, 4, '0'), '', '{}', '{}', '{}')",
                    (w.R1.leader.id, w.R1.id, now_ms(), title))
        cur.execute("SELECT id FROM joint_cases ORDER BY id")
        every = [r[0] for r in cur.fetchall()]
    assert len(every) > 1005
    today = time.strftime("%Y-%m-%d")
    frm = int(time.mktime(time.strptime(today, "%Y-%m-%d")) * 1000)
    to = frm + DAY_MS
    for size in (0, 1000, 5000):
        pages = case_pages(w.auditor, frm, to, size)
        assert [len(p.cases) for p in pages] == [1000] * (len(every) // 1000) + [len(every) % 1000], size
        assert [k.case_id for p in pages for k in p.cases] == every
        assert pages[0].ByteSize() < 1 << 20, pages[0].ByteSize()
    whole = stats_page(w.auditor, frm, to)

    env = {"CLUED_SERVER": c.srv.addr, "CLUED_TOKEN": w.auditor.token}
    r = harness.cluectl("stats", "--from", today, "--to", today, "--csv", "--cases", env=env, check=0)
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [int(x["case_id"]) for x in rows] == every, len(rows)
    assert [x["title"] for x in rows[-1005:]] == [f"{title[:196]}{g:04d}" for g in range(1, 1006)]
    doc = json.loads(harness.cluectl("--json", "stats", "--from", today, "--to", today, env=env, check=0).stdout)
    assert [int(k["case_id"]) for k in doc["cases"]] == every
    assert [int(u["unit_id"]) for u in doc["units"]] == [u.unit_id for u in whole.units]
    assert not doc.get("next_case_page_token")
    out = harness.cluectl("stats", "--from", today, "--to", today, env=env, check=0).stdout
    table = out.split("\nJoint cases:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [int(ln.split()[0]) for ln in table[1:]] == every, table[:3]
    r = harness.cluectl("stats", "--from", today, "--to", today, "--csv", env=env, check=0)
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [int(x["unit_id"]) for x in rows] == [u.unit_id for u in whole.units]


if __name__ == "__main__":
    harness.run_tests(dict(globals()), setup, teardown)
