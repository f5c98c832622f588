"""A hidden object's contents are not read (docs/COOPERATION.md, "Sight before a change made
meanwhile"): grpcio against the real clued and PostgreSQL.

A clue or joint case the caller may not see answers as a missing one, and must cost what a
missing one costs: a read that fetched the hidden clue's notes or events, or the hidden case's
member rows, before deciding sight would tell by its time that the object exists and how much
it holds (a binary search over after_note_id finds the id of its last note). So the calls that
take an id and return contents put the caller's sight into the query that reads them.

No timing here: each test counts the rows PostgreSQL read from the table of the contents
(pg_stat_user_tables and pg_stat_user_indexes, rows_read()) over calls on the hidden object and over the same
calls on a missing id, which must read the same, and checks that a caller who sees the object
does read them (so that the count would show a read). clued runs with one pooled connection;
its backend sends its counts to the statistics when it goes idle at least a second after its
last report, so each round pauses that long before its last call (a call by a caller who sees
the object), and the counts are waited for until they moved.
"""

import os
import random
import sys
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import new_request_id  # noqa: E402
import world  # noqa: E402

S = harness.stubs()
pb = S.clue_pb2
cs = S.case_pb2
au = S.audit_pb2
rp = S.rectification_pb2
Code = grpc.StatusCode

MISSING_ID = 987654321
CALLS = 5  # calls on the hidden (or missing) object per round
NOTES = 12


def setup():
    c = world.served(args=["--db-pool", "1"])
    w = c.w
    # Clue A: G1's, with notes and so with events; G3 (liaison room R2) sees none of G1's.
    c.clue = w.G1.leader.clue.SubmitClue(pb.SubmitClueRequest(
        request_id=new_request_id(), title="线索", summary="反映某某违规插手工程项目",
        source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=pb.SubjectPerson(name="王某", position="局长"),
        host_unit="市发展改革委"), timeout=20)
    for i in range(NOTES):
        w.G1.member.clue.AddNote(pb.AddNoteRequest(clue_id=c.clue.id, kind=pb.NOTE_KIND_EVIDENCE_SUMMARY,
                                                   text=f"第{i}份核查材料", request_id=new_request_id()), timeout=20)
    # Case K: led by R1, with R1's own clues; G3 neither leads nor joins it.
    clues = [w.R1.leader.clue.SubmitClue(pb.SubmitClueRequest(
        request_id=new_request_id(), title=f"线索{i}", summary="反映某某违规插手工程项目",
        source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=pb.SubjectPerson(name="李某", position="处长"),
        host_unit="市发展改革委"), timeout=20) for i in range(6)]
    c.case = w.R1.leader.case.CreateJointCase(cs.CreateJointCaseRequest(
        title="联合办案", basis="室组地联合审查", participant_unit_ids=[w.X1.id], clue_ids=[x.id for x in clues],
        request_id=new_request_id()), timeout=20)
    # Item I: G1's ledger item, whose description PostgreSQL keeps out of line (TOAST): too long
    # to stay in the row, and random, so that it does not compress.
    rnd = random.Random(7)
    c.item = w.G1.leader.rect.CreateItem(rp.CreateItemRequest(
        host_unit="市发展改革委", description="".join(chr(rnd.randrange(0x4E00, 0x9FA0)) for _ in range(6000)),
        category="财务管理", source=rp.RECTIFICATION_SOURCE_SUPERVISION,
        deadline_ms=int(time.time() * 1000) + 30 * 86400000, request_id=new_request_id()), timeout=20)
    return c


def teardown(c):
    world.unserve(c)


def rows_read(c, table):
    """Rows PostgreSQL has counted as read from table: by sequential scans, and through its
    indexes other than the primary key (entries read, and rows fetched by them); clued's audit
    tail and tree read audit_events by seq, through its primary key, whenever they look.
    "rect_items toast" is the table of rect_items' out-of-line values, read through its one
    index (its primary key)."""
    name, _, toast = table.partition(" ")
    rel = ("(SELECT reltoastrelid FROM pg_class WHERE oid = %s::regclass)" if toast else "%s::regclass")
    with c.db.cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute("SELECT t.seq_tup_read + coalesce((SELECT sum(i.idx_tup_read + i.idx_tup_fetch)"
                    " FROM pg_stat_all_indexes i JOIN pg_index x ON x.indexrelid = i.indexrelid"
                    f" WHERE i.relid = t.relid AND {'true' if toast else 'NOT x.indisprimary'}), 0)"
                    f" FROM pg_stat_all_tables t WHERE t.relid = {rel}", (name,))
        return int(cur.fetchone()[0])


def round_reads(c, table, calls, seen_call):
    """The rows of table read by calls() and then seen_call(), which reads some: seen_call
    runs more than a second after the last report, so that its backend reports them all when
    it goes idle; the count is taken once it moved, and again if the table was vacuumed
    meanwhile (harness.vacuums())."""
    return harness.unvacuumed(c.db, table.partition(" ")[0], lambda: round_reads_once(c, table, calls, seen_call))


def round_reads_once(c, table, calls, seen_call):
    before = rows_read(c, table)
    calls()
    time.sleep(1.2)
    seen_call()
    harness.wait_for(lambda: rows_read(c, table) > before, timeout=30, what=f"{table} reads reported")
    time.sleep(0.2)  # nothing else reads it; a late report would only make the rounds differ
    return rows_read(c, table) - before


def refused(fn, req):
    try:
        fn(req, timeout=20)
    except grpc.RpcError as e:
        assert e.code() == Code.NOT_FOUND, e
        return
    raise AssertionError("the call succeeded")


def empty_page(fn, req):
    r = fn(req, timeout=20)
    assert not r.events, r


def reads_as_missing(c, table, hidden, missing, seen):
    """hidden(id) on the hidden id reads as many rows of table as on a missing id; seen() reads."""
    round_reads(c, table, lambda: None, seen)  # what is still to be reported, reported
    alone = round_reads(c, table, lambda: None, seen)
    assert alone > 0, f"{table}: the call of a caller who sees the object read nothing"
    on_hidden = round_reads(c, table, lambda: [hidden() for _ in range(CALLS)], seen)
    on_missing = round_reads(c, table, lambda: [missing() for _ in range(CALLS)], seen)
    assert on_hidden == on_missing == alone, (
        f"{table}: {on_hidden - alone} rows read over {CALLS} calls on a hidden object,"
        f" {on_missing - alone} on a missing one")


def test_list_notes_reads_no_note_of_a_hidden_clue(c):
    w, a = c.w, c.clue.id
    assert len(w.G1.leader.clue.ListNotes(pb.ListNotesRequest(clue_id=a), timeout=20).notes) == NOTES
    reads_as_missing(
        c, "notes",
        lambda: refused(w.G3.leader.clue.ListNotes, pb.ListNotesRequest(clue_id=a, page_size=500)),
        lambda: refused(w.G3.leader.clue.ListNotes, pb.ListNotesRequest(clue_id=MISSING_ID, page_size=500)),
        lambda: w.G1.leader.clue.ListNotes(pb.ListNotesRequest(clue_id=a), timeout=20))


def test_get_history_reads_no_event_of_a_hidden_clue(c):
    w, a = c.w, c.clue.id
    assert len(w.G1.leader.clue.GetHistory(pb.GetHistoryRequest(clue_id=a), timeout=20).events) > NOTES
    reads_as_missing(
        c, "audit_events",
        lambda: refused(w.G3.leader.clue.GetHistory, pb.GetHistoryRequest(clue_id=a)),
        lambda: refused(w.G3.leader.clue.GetHistory, pb.GetHistoryRequest(clue_id=MISSING_ID)),
        lambda: w.G1.leader.clue.GetHistory(pb.GetHistoryRequest(clue_id=a), timeout=20))


def test_get_joint_case_reads_no_clue_of_a_hidden_case(c):
    w, k = c.w, c.case.id
    assert len(w.R1.leader.case.GetJointCase(cs.GetJointCaseRequest(case_id=k), timeout=20).clues) == 6
    reads_as_missing(
        c, "case_clues",
        lambda: refused(w.G3.leader.case.GetJointCase, cs.GetJointCaseRequest(case_id=k)),
        lambda: refused(w.G3.leader.case.GetJointCase, cs.GetJointCaseRequest(case_id=MISSING_ID)),
        lambda: w.R1.leader.case.GetJointCase(cs.GetJointCaseRequest(case_id=k), timeout=20))
    # A participant's unit sees the case and its clues as before.
    assert len(w.X1.member.case.GetJointCase(cs.GetJointCaseRequest(case_id=k), timeout=20).clues) == 6


def test_list_audit_events_reads_no_event_of_a_hidden_subject(c):
    w, a = c.w, c.clue.id

    def of(subject_id):
        return au.ListAuditEventsRequest(subject_type="clue", subject_id=subject_id, page_size=1000)

    assert len(w.G1.leader.audit.ListAuditEvents(of(a), timeout=20).events) > NOTES
    reads_as_missing(
        c, "audit_events",
        lambda: empty_page(w.G3.leader.audit.ListAuditEvents, of(a)),
        lambda: empty_page(w.G3.leader.audit.ListAuditEvents, of(MISSING_ID)),
        lambda: w.G1.leader.audit.ListAuditEvents(of(a), timeout=20))


def test_get_item_reads_no_text_of_a_hidden_item(c):
    w, i = c.w, c.item.id
    assert len(w.G1.leader.rect.GetItem(rp.GetItemRequest(item_id=i), timeout=20).description) == 6000
    reads_as_missing(
        c, "rect_items toast",
        lambda: refused(w.G3.leader.rect.GetItem, rp.GetItemRequest(item_id=i)),
        lambda: refused(w.G3.leader.rect.GetItem, rp.GetItemRequest(item_id=MISSING_ID)),
        lambda: w.G1.leader.rect.GetItem(rp.GetItemRequest(item_id=i), timeout=20))


def test_item_moves_read_no_text_of_a_hidden_item(c):
    """The facts of a move need no text of the item, and read none, whoever asks."""
    w, i = c.w, c.item.id

    def plan(item_id):
        return rp.RecordPlanRequest(item_id=item_id, expected_version=c.item.version, plan="整改方案",
                                    request_id=new_request_id())

    reads_as_missing(
        c, "rect_items toast",
        lambda: refused(w.G3.leader.rect.RecordPlan, plan(i)),
        lambda: refused(w.G3.leader.rect.RecordPlan, plan(MISSING_ID)),
        lambda: w.G1.leader.rect.GetItem(rp.GetItemRequest(item_id=i), timeout=20))


if __name__ == "__main__":
    harness.run_tests(dict(globals()), setup, teardown)
