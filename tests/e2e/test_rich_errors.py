"""Rich errors: the grpc-status-details-bin trailer carries a google.rpc.Status whose details
say what went wrong in a form programs read, decoded here with grpcio and protoc's Python
output of proto/google/rpc (the standard google.rpc messages).

- INVALID_ARGUMENT carries a BadRequest naming each bad field;
- FAILED_PRECONDITION (a move the state machine refuses) a PreconditionFailure with the
  current state and the moves allowed from it; another refusal names the condition that
  failed ("proposal decided");
- ABORTED (a stale version) an ErrorInfo VERSION_CONFLICT in domain clue.v1 with the
  current version;
- NOT_FOUND a ResourceInfo; a clue the caller may not see answers with the same trailers,
  byte for byte, as a missing one;
- the Status's code and message are the call's, and cluectl prints the violations.
"""

import importlib
import os
import subprocess
import sys
import tempfile

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import new_request_id  # noqa: E402
import world  # noqa: E402

S = harness.stubs()
pb = S.clue_pb2
cm = S.common_pb2
Code = grpc.StatusCode


def rpc_protos():
    """status_pb2 and error_details_pb2 from proto/google/rpc, under a renamed root so that
    they do not shadow the google package of protobuf."""
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="clued-rpc-")
    proto = os.path.join(harness.SRC, "proto")
    rc = protoc.main(["protoc", f"-I{proto}", f"--python_out={out}",
                      "google/rpc/status.proto", "google/rpc/error_details.proto"])
    assert rc == 0, "protoc failed for google/rpc"
    os.rename(os.path.join(out, "google"), os.path.join(out, "gproto_rich"))
    sys.path.insert(0, out)
    return (importlib.import_module("gproto_rich.rpc.status_pb2"),
            importlib.import_module("gproto_rich.rpc.error_details_pb2"))


status_pb2, details_pb2 = rpc_protos()


def failure(fn, *args, **kw):
    """Call fn; return (code, message, raw details bytes) of the error it must raise."""
    try:
        fn(*args, **kw)
    except grpc.RpcError as e:
        raw = [v for k, v in (e.trailing_metadata() or ()) if k == "grpc-status-details-bin"]
        assert len(raw) <= 1, raw
        return e.code(), e.details(), (raw[0] if raw else None)
    raise AssertionError("the call succeeded")


def status_of(code, msg, raw):
    """The google.rpc.Status of a failure, checked against the call's code and message;
    returns {detail type name: [messages]}."""
    assert raw is not None, f"{code} without grpc-status-details-bin"
    st = status_pb2.Status.FromString(raw)
    assert st.code == code.value[0], (st.code, code)
    assert st.message == msg, (st.message, msg)
    kinds = {}
    for any_ in st.details:
        name = any_.type_url.rsplit("/", 1)[-1]
        assert any_.type_url == "type.googleapis.com/" + name, any_.type_url
        cls = {"google.rpc.BadRequest": details_pb2.BadRequest,
               "google.rpc.PreconditionFailure": details_pb2.PreconditionFailure,
               "google.rpc.ErrorInfo": details_pb2.ErrorInfo,
               "google.rpc.ResourceInfo": details_pb2.ResourceInfo}[name]
        kinds.setdefault(name, []).append(cls.FromString(any_.value))
    return kinds


class Ctx:
    pass


def setup():
    c = Ctx()
    url = harness.test_database_url()
    c.dbname = url.split("///", 1)[1].split("?", 1)[0]
    c.url = url
    c.srv = harness.Clued(url).start()
    c.w = world.build(c.srv)
    return c


def teardown(c):
    c.w.close()
    c.srv.stop()


def submit(user, **kw):
    fields = dict(title="线索", summary="反映某某违规收受礼金", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
                  subject=pb.SubjectPerson(name="张三", position="处长"), host_unit="市发展改革委")
    fields.update(kw)
    return user.clue.SubmitClue(pb.SubmitClueRequest(request_id=new_request_id(), **fields), timeout=20)


def test_bad_request_names_the_field(c):
    code, msg, raw = failure(submit, c.w.G1.member, title="   ")
    assert code == Code.INVALID_ARGUMENT
    kinds = status_of(code, msg, raw)
    (bad,) = kinds["google.rpc.BadRequest"]
    assert [v.field for v in bad.field_violations] == ["title"], bad
    assert "title" in bad.field_violations[0].description
    # A nested field is named by its path.
    code, msg, raw = failure(submit, c.w.G1.member, subject=pb.SubjectPerson(name=""))
    assert code == Code.INVALID_ARGUMENT
    (bad,) = status_of(code, msg, raw)["google.rpc.BadRequest"]
    assert bad.field_violations[0].field == "subject.name", bad
    # A message that names its field first, without a validator behind it.
    code, msg, raw = failure(c.w.auditor.audit.WatchEvents(S.audit_pb2.WatchEventsRequest(after_seq=-1),
                                                           timeout=10).__next__)
    assert code == Code.INVALID_ARGUMENT
    (bad,) = status_of(code, msg, raw)["google.rpc.BadRequest"]
    assert bad.field_violations[0].field == "after_seq", bad


def test_bad_request_names_every_bad_field(c):
    # Five required fields missing: five violations, in the order of the request's fields,
    # each with what is wrong; the status message is the first one's. A field with several
    # faults is named once.
    code, msg, raw = failure(c.w.G1.member.clue.SubmitClue, pb.SubmitClueRequest(
        request_id=new_request_id(), subject=pb.SubjectPerson(position="处\u202e长")), timeout=20)
    assert code == Code.INVALID_ARGUMENT
    (bad,) = status_of(code, msg, raw)["google.rpc.BadRequest"]
    got = [(v.field, v.description) for v in bad.field_violations]
    assert [f for f, _ in got] == ["title", "summary", "source", "subject.name", "subject.position",
                                   "host_unit"], got
    assert got[0] == ("title", msg) and all(d.startswith(f) for f, d in got), got
    # The other requests of several fields: a move, a handover, a joint case, a ledger item.
    rp, cs = S.rectification_pb2, S.case_pb2
    L = c.w.G1.leader
    for fn, req, want in (
            (L.clue.RequestTransition, pb.RequestTransitionRequest(
                details=pb.TransitionDetails(persons_disciplined=-1)),
             ["clue_id", "expected_version", "target", "details.persons_disciplined", "request_id"]),
            (L.clue.HandOver, pb.HandOverRequest(clue_id=-1), ["clue_id", "expected_version", "to_unit_id",
                                                               "reason", "request_id"]),
            (c.w.R1.leader.case.CreateJointCase, cs.CreateJointCaseRequest(clue_ids=[3, 3]),
             ["title", "clue_ids", "request_id"]),
            (L.rect.CreateItem, rp.CreateItemRequest(source=rp.RECTIFICATION_SOURCE_CLUE, source_case_id=4),
             ["host_unit", "description", "category", "source_clue_id", "source_case_id",
              "deadline_ms", "request_id"]),
            # request_id is the last field of a submission too, and of the administration,
            # token and case-membership requests.
            (c.w.G1.member.clue.SubmitClue, pb.SubmitClueRequest(),
             ["title", "summary", "source", "subject.name", "host_unit", "request_id"]),
            (c.w.admin.admin.CreateUnit, S.admin_pb2.CreateUnitRequest(kind=9, code="!", request_id="zzz"),
             ["kind", "code", "name", "request_id"]),
            (c.w.admin.admin.CreateUser, S.admin_pb2.CreateUserRequest(unit_id=-1, role=9, request_id="zzz"),
             ["unit_id", "name", "role", "request_id"]),
            (c.w.admin.admin.RevokeToken, S.admin_pb2.RevokeTokenRequest(token_id=-1, request_id="zzz"),
             ["token_id", "request_id"]),
            (c.w.G1.member.tokens.RevokeMyToken, S.token_pb2.RevokeMyTokenRequest(token_id=-1, request_id="zzz"),
             ["token_id", "request_id"]),
            (c.w.R1.leader.case.AddParticipant, cs.AddParticipantRequest(case_id=-1, unit_id=-1, request_id="zzz"),
             ["case_id", "unit_id", "request_id"])):
        code, msg, raw = failure(fn, req, timeout=20)
        assert code == Code.INVALID_ARGUMENT, (code, msg)
        (bad,) = status_of(code, msg, raw)["google.rpc.BadRequest"]
        assert [v.field for v in bad.field_violations] == want, bad
        assert bad.field_violations[0].description == msg, (msg, bad)

def every_bad_field_cases(w):
    """(name, call, a request with several bad fields, their paths in order, the request with
    only the first of them bad) for each request of several validated fields not covered above."""
    rp, cs, ad, au, st = S.rectification_pb2, S.case_pb2, S.admin_pb2, S.audit_pb2, S.stats_pb2
    L, A, Au = w.G1.leader, w.admin.admin, w.auditor
    rid, bidi, long = new_request_id(), "a\u202eb", "x" * 5000
    watch = (lambda r, timeout: Au.audit.WatchEvents(r, timeout=timeout).__next__())
    return (
        ("AddNote", L.clue.AddNote, pb.AddNoteRequest(kind=99, text=" "),
         ["clue_id", "kind", "text", "request_id"],
         pb.AddNoteRequest(kind=pb.NOTE_KIND_EVIDENCE_SUMMARY, text="x",
                           request_id=rid)),
        ("ExtendDeadline", L.clue.ExtendDeadline, pb.ExtendDeadlineRequest(days=999),
         ["clue_id", "expected_version", "days", "reason", "request_id"],
         pb.ExtendDeadlineRequest(expected_version=1, days=3, reason="r", request_id=rid)),
        ("RecordPlan", L.rect.RecordPlan, rp.RecordPlanRequest(expected_version=-1, note_ids=[0]),
         ["item_id", "expected_version", "plan", "note_ids", "request_id"],
         rp.RecordPlanRequest(expected_version=1, plan="p", request_id=rid)),
        ("Submit", L.rect.Submit, rp.SubmitRequest(item_id=-1),
         ["item_id", "expected_version", "evidence", "request_id"],
         rp.SubmitRequest(item_id=-1, expected_version=1, evidence="e", request_id=rid)),
        ("Verify", L.rect.Verify, rp.VerifyRequest(comment=long),
         ["item_id", "expected_version", "comment", "request_id"],
         rp.VerifyRequest(expected_version=1, request_id=rid)),
        ("Reopen", L.rect.Reopen, rp.ReopenRequest(item_id=1),
         ["expected_version", "reason", "request_id"],
         rp.ReopenRequest(item_id=1, reason="r", request_id=rid)),
        ("CreateUnit", A.CreateUnit, ad.CreateUnitRequest(kind=S.common_pb2.UNIT_KIND_GROUP, name=" ",
                                                           host_units=[" "]),
         ["code", "name", "liaison_room_id", "host_units"],
         ad.CreateUnitRequest(kind=S.common_pb2.UNIT_KIND_GROUP, name="n", code="ZZ9")),
        ("CreateUnit (not a group)", A.CreateUnit, ad.CreateUnitRequest(
            kind=S.common_pb2.UNIT_KIND_REGION, code="ZZ8", host_units=["h"] * 101),
         ["name", "liaison_room_id", "host_units"],
         ad.CreateUnitRequest(kind=S.common_pb2.UNIT_KIND_REGION, code="ZZ8", name="n", host_units=["h"])),
        ("CreateUser", A.CreateUser, ad.CreateUserRequest(), ["unit_id", "name", "role"],
         ad.CreateUserRequest(name="n", role=S.common_pb2.ROLE_MEMBER)),
        ("DisableUser", A.DisableUser, ad.DisableUserRequest(reason=long), ["user_id", "reason"],
         ad.DisableUserRequest()),
        ("IssueToken", A.IssueToken, ad.IssueTokenRequest(note=bidi), ["user_id", "note"],
         ad.IssueTokenRequest()),
        ("AssignHandler", L.clue.AssignHandler, pb.AssignHandlerRequest(reason=long),
         ["clue_id", "user_id", "reason", "request_id"], pb.AssignHandlerRequest(user_id=1, request_id=rid)),
        ("UnassignHandler", L.clue.UnassignHandler, pb.UnassignHandlerRequest(clue_id=-1),
         ["clue_id", "user_id", "request_id"], pb.UnassignHandlerRequest(user_id=1, request_id=rid)),
        ("RecordRecusal", L.clue.RecordRecusal, pb.RecordRecusalRequest(user_id=-1),
         ["clue_id", "user_id", "reason", "request_id"],
         pb.RecordRecusalRequest(reason="r", request_id=rid)),
        ("AddParticipant", w.R1.leader.case.AddParticipant, cs.AddParticipantRequest(reason=long),
         ["case_id", "unit_id", "reason"], cs.AddParticipantRequest(unit_id=1)),
        ("RemoveParticipant", w.R1.leader.case.RemoveParticipant, cs.RemoveParticipantRequest(),
         ["case_id", "unit_id", "reason"], cs.RemoveParticipantRequest(unit_id=1, reason="r")),
        ("AddClueToCase", w.R1.leader.case.AddClueToCase, cs.AddClueToCaseRequest(case_id=-1),
         ["case_id", "clue_id"], cs.AddClueToCaseRequest(case_id=-1, clue_id=1)),
        ("RemoveClueFromCase", w.R1.leader.case.RemoveClueFromCase, cs.RemoveClueFromCaseRequest(case_id=1),
         ["clue_id", "reason"], cs.RemoveClueFromCaseRequest(case_id=1, reason="r")),
        ("ReviewProposal", L.clue.ReviewProposal, pb.ReviewProposalRequest(comment=long),
         ["proposal_id", "comment", "request_id"], pb.ReviewProposalRequest(request_id=rid)),
        ("ListProposals", L.clue.ListProposals, pb.ListProposalsRequest(scope=7, clue_id=-1),
         ["scope", "clue_id"], pb.ListProposalsRequest(scope=7)),
        ("ListNotes", L.clue.ListNotes, pb.ListNotesRequest(after_note_id=-1, page_size=-1),
         ["clue_id", "after_note_id", "page_size"], pb.ListNotesRequest(clue_id=1, after_note_id=-1)),
        ("ListRecusals", L.clue.ListRecusals, pb.ListRecusalsRequest(clue_id=-1, user_id=-1),
         ["clue_id", "user_id"], pb.ListRecusalsRequest(user_id=-1)),
        ("ListAssignments", L.clue.ListAssignments, pb.ListAssignmentsRequest(clue_id=-1, user_id=-1),
         ["clue_id", "user_id"], pb.ListAssignmentsRequest(clue_id=-1)),
        ("ListClues", L.clue.ListClues, pb.ListCluesRequest(
            states=[9], owner_unit_id=-1, source=99, subject_name=bidi, created_to_ms=-1, updated_from_ms=5,
            updated_to_ms=4, page_size=-1, page_token="zz"),
         ["states", "owner_unit_id", "source", "subject_name", "created_to_ms", "updated_from_ms", "page_size",
          "page_token"],
         pb.ListCluesRequest(page_token="zz")),
        ("ListAuditEvents", Au.audit.ListAuditEvents, au.ListAuditEventsRequest(
            subject_type="nope", subject_id=-1, actor_user_id=-1, unit_id=-1, action=long, from_ms=5, to_ms=4,
            after_seq=-1, actor_token_id=-1),
         ["subject_type", "subject_id", "actor_user_id", "unit_id", "action", "from_ms", "after_seq",
          "actor_token_id"],
         au.ListAuditEventsRequest(subject_type="nope")),
        ("VerifyAuditChain", Au.audit.VerifyAuditChain, au.VerifyAuditChainRequest(subject_type="nope",
                                                                                  subject_id=-1),
         ["subject_type", "subject_id"], au.VerifyAuditChainRequest(subject_type="clue")),
        ("WatchEvents", watch, au.WatchEventsRequest(after_seq=-1, subject_id=3, action=long),
         ["after_seq", "subject_id", "action"], au.WatchEventsRequest(subject_id=3)),
        ("ListItems", L.rect.ListItems, rp.ListItemsRequest(host_unit=bidi, state=99, source=99, page_size=-1,
                                                             page_token="zz"),
         ["host_unit", "state", "source", "page_size", "page_token"], rp.ListItemsRequest(state=99)),
        ("GetLedgerStats", L.rect.GetLedgerStats, rp.GetLedgerStatsRequest(supervising_unit_id=-1, page_size=-1,
                                                                            page_token="zz"),
         ["supervising_unit_id", "page_size", "page_token"], rp.GetLedgerStatsRequest(supervising_unit_id=-1)),
        ("GetStatistics", L.stats.GetStatistics, st.GetStatisticsRequest(to_ms=-1, unit_ids=[0], case_page_size=-1,
                                                                          case_page_token="zz"),
         ["from_ms", "to_ms", "unit_ids", "case_page_size", "case_page_token"],
         st.GetStatisticsRequest(from_ms=5, to_ms=4)),
        ("GetInclusionProof", Au.audit.GetInclusionProof, au.GetInclusionProofRequest(tree_size=-1),
         ["seq", "tree_size"], au.GetInclusionProofRequest()),
        ("GetConsistencyProof", Au.audit.GetConsistencyProof, au.GetConsistencyProofRequest(new_size=-1),
         ["old_size", "new_size"], au.GetConsistencyProofRequest(old_size=-1)),
        ("ExportAuditEvents", Au.audit.ExportAuditEvents, au.ExportAuditEventsRequest(after_seq=-1, page_size=-1),
         ["after_seq", "page_size"], au.ExportAuditEventsRequest(after_seq=-1)),
        ("GetBulletin", L.stats.GetBulletin, st.GetBulletinRequest(month="2024-13", unit_ids=[-1]),
         ["month", "unit_ids"], st.GetBulletinRequest(month="2024-13")),
    )


# The answer of each case's request with one bad field, as it was before the requests named
# every bad field: (status message, [(field, description)]).
ONE_BAD_FIELD = {
    'AddNote': ('clue_id is required', [('clue_id', 'clue_id is required')]),
    'ExtendDeadline': ('clue_id is required', [('clue_id', 'clue_id is required')]),
    'RecordPlan': ('item_id is required', [('item_id', 'item_id is required')]),
    'Submit': ('item_id must be positive', [('item_id', 'item_id must be positive')]),
    'Verify': ('item_id is required', [('item_id', 'item_id is required')]),
    'Reopen': ('expected_version is required', [('expected_version', 'expected_version is required')]),
    'CreateUnit': ('liaison_room_id is required for a GROUP unit',
                   [('liaison_room_id', 'liaison_room_id is required for a GROUP unit')]),
    'CreateUnit (not a group)': ('liaison_room_id and host_units apply only to GROUP units',
                                 [('liaison_room_id', 'liaison_room_id and host_units apply only to GROUP units')]),
    'CreateUser': ('unit_id is required', [('unit_id', 'unit_id is required')]),
    'DisableUser': ('user_id is required', [('user_id', 'user_id is required')]),
    'IssueToken': ('user_id is required', [('user_id', 'user_id is required')]),
    'AssignHandler': ('clue_id is required', [('clue_id', 'clue_id is required')]),
    'UnassignHandler': ('clue_id is required', [('clue_id', 'clue_id is required')]),
    'RecordRecusal': ('clue_id is required', [('clue_id', 'clue_id is required')]),
    'AddParticipant': ('case_id is required', [('case_id', 'case_id is required')]),
    'RemoveParticipant': ('case_id is required', [('case_id', 'case_id is required')]),
    'AddClueToCase': ('case_id must be positive', [('case_id', 'case_id must be positive')]),
    'RemoveClueFromCase': ('clue_id is required', [('clue_id', 'clue_id is required')]),
    'ReviewProposal': ('proposal_id is required', [('proposal_id', 'proposal_id is required')]),
    'ListProposals': ('scope has an unknown value 7', [('scope', 'scope has an unknown value 7')]),
    'ListNotes': ('after_note_id must not be negative',
                  [('after_note_id', 'after_note_id must not be negative')]),
    'ListRecusals': ('user_id must not be negative', [('user_id', 'must not be negative')]),
    'ListAssignments': ('clue_id must not be negative', [('clue_id', 'must not be negative')]),
    'ListClues': ('page_token is malformed or was issued for another caller or other filters',
                  [('page_token', 'page_token is malformed or was issued for another caller or other filters')]),
    'ListAuditEvents': ('subject_type nope is unknown: one of clue, case, rectification, unit, user',
                        [('subject_type', 'one of clue, case, rectification, unit, user')]),
    'VerifyAuditChain': ('subject_type needs subject_id (or leave both empty)',
                         [('subject_type', 'subject_type needs subject_id (or leave both empty)')]),
    'WatchEvents': ('subject_id needs subject_type', [('subject_id', 'subject_id needs subject_type')]),
    'ListItems': ('state has an unknown value 99', [('state', 'state has an unknown value 99')]),
    'GetLedgerStats': ('supervising_unit_id must not be negative',
                       [('supervising_unit_id', 'supervising_unit_id must not be negative')]),
    'GetStatistics': ('from_ms must be before to_ms', [('from_ms', 'from_ms must be before to_ms')]),
    'GetInclusionProof': ('seq must be positive', [('seq', 'seq must be positive')]),
    'GetConsistencyProof': ('old_size must be positive', [('old_size', 'old_size must be positive')]),
    'ExportAuditEvents': ('after_seq must not be negative', [('after_seq', 'after_seq must not be negative')]),
    'GetBulletin': ('month must be YYYY-MM, from 2000-01',
                    [('month', 'month must be YYYY-MM, from 2000-01')]),
}


def test_bad_request_names_every_bad_field_of_every_request(c):
    # Each request of several validated fields names each of them that is bad, in the order of
    # its fields; the status message is the first violation's; a request with one bad field
    # answers exactly as it did when only the first was named.
    for name, fn, req, want, one in every_bad_field_cases(c.w):
        code, msg, raw = failure(fn, req, timeout=20)
        assert code == Code.INVALID_ARGUMENT, (name, code, msg)
        (bad,) = status_of(code, msg, raw)["google.rpc.BadRequest"]
        assert [v.field for v in bad.field_violations] == want, (name, bad)
        assert bad.field_violations[0].description in (msg, "must not be negative",
                                                       "one of clue, case, rectification, unit, user"), (name, msg)
        code, msg, raw = failure(fn, one, timeout=20)
        (bad,) = status_of(code, msg, raw)["google.rpc.BadRequest"]
        got = (code, msg, [(v.field, v.description) for v in bad.field_violations])
        assert got == (Code.INVALID_ARGUMENT, *ONE_BAD_FIELD[name]), (name, got)
    # An unknown subject_type is described by the types there are, among other violations too.
    code, msg, raw = failure(c.w.auditor.audit.ListAuditEvents, S.audit_pb2.ListAuditEventsRequest(
        subject_type="nope", unit_id=-1), timeout=20)
    (bad,) = status_of(code, msg, raw)["google.rpc.BadRequest"]
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("subject_type", "one of clue, case, rectification, unit, user"),
        ("unit_id", "unit_id must not be negative")], bad
    assert msg == "subject_type nope is unknown: one of clue, case, rectification, unit, user", msg
    # A month that has not begun is named by its path, beside the other bad fields.
    code, msg, raw = failure(c.w.G1.leader.stats.GetBulletin, S.stats_pb2.GetBulletinRequest(
        month="2999-01", unit_ids=[0]), timeout=20)
    (bad,) = status_of(code, msg, raw)["google.rpc.BadRequest"]
    assert [v.field for v in bad.field_violations] == ["month", "unit_ids"], bad
    assert msg == "month 2999-01 has not begun (UTC+08:00)", msg
    # A unit the bulletin does not cover (a ROOM) is named by its path too.
    code, msg, raw = failure(c.w.auditor.stats.GetBulletin, S.stats_pb2.GetBulletinRequest(
        month="2026-01", unit_ids=[c.w.R1.id]), timeout=20)
    (bad,) = status_of(code, msg, raw)["google.rpc.BadRequest"]
    assert [(v.field, v.description) for v in bad.field_violations] == [("unit_ids", msg)], bad


def test_precondition_names_state_and_moves(c):
    clue = submit(c.w.G1.member)
    req = pb.RequestTransitionRequest(clue_id=clue.id, expected_version=clue.version,
                                      target=cm.CLUE_STATE_FILED, reason="跳过初核",
                                      request_id=new_request_id())
    code, msg, raw = failure(c.w.G1.leader.clue.RequestTransition, req, timeout=20)
    assert code == Code.FAILED_PRECONDITION
    (pre,) = status_of(code, msg, raw)["google.rpc.PreconditionFailure"]
    (v,) = pre.violations
    assert v.type == "STATE" and v.subject == "ACCEPTED", v
    assert "PRELIMINARY_CHECK" in v.description and "CLOSED" in v.description, v


def test_other_precondition_names_its_condition(c):
    # Not a state-machine move: a proposal reviewed twice. The subject names what failed.
    w = c.w
    clue = submit(w.G1.member)
    moved = w.G1.leader.clue.RequestTransition(pb.RequestTransitionRequest(
        clue_id=clue.id, expected_version=clue.version, target=cm.CLUE_STATE_PRELIMINARY_CHECK, reason="初核",
        request_id=new_request_id()), timeout=20)
    filed = w.G1.leader.clue.RequestTransition(pb.RequestTransitionRequest(
        clue_id=clue.id, expected_version=moved.clue.version, target=cm.CLUE_STATE_FILED, reason="立案",
        request_id=new_request_id()), timeout=20)
    assert filed.pending, filed
    review = lambda: w.R1.leader.clue.ReviewProposal(pb.ReviewProposalRequest(  # noqa: E731
        proposal_id=filed.proposal.id, approve=True, request_id=new_request_id()), timeout=20)
    review()
    code, msg, raw = failure(review)
    assert code == Code.FAILED_PRECONDITION, (code, msg)
    (pre,) = status_of(code, msg, raw)["google.rpc.PreconditionFailure"]
    (v,) = pre.violations
    assert (v.type, v.subject, v.description) == ("STATE", "proposal decided", msg), v


def test_refusals_raised_in_sql_name_their_condition(c):
    # Refusals the write functions raise (CLPRE) name what failed, as the server's own checks
    # do, never "concurrent change" for every cause.
    w = c.w
    A = S.admin_pb2
    code, msg, raw = failure(w.admin.admin.DisableUser, A.DisableUserRequest(user_id=w.admin.id), timeout=20)
    assert (code, msg) == (Code.FAILED_PRECONDITION, "administrators cannot disable themselves"), (code, msg)
    (pre,) = status_of(code, msg, raw)["google.rpc.PreconditionFailure"]
    (v,) = pre.violations
    assert (v.type, v.subject, v.description) == ("ADMINISTRATION", "self disable", msg), v

    u = w.admin.admin.CreateUser(A.CreateUserRequest(unit_id=w.G1.id, name="待停用", role=cm.ROLE_MEMBER),
                                 timeout=20)
    w.admin.admin.DisableUser(A.DisableUserRequest(user_id=u.id), timeout=20)
    code, msg, raw = failure(w.admin.admin.DisableUser, A.DisableUserRequest(user_id=u.id), timeout=20)
    assert (code, msg) == (Code.FAILED_PRECONDITION, f"user {u.id} is already disabled"), (code, msg)
    (pre,) = status_of(code, msg, raw)["google.rpc.PreconditionFailure"]
    (v,) = pre.violations
    assert (v.type, v.subject) == ("STATE", "user disabled"), v

    t = w.admin.admin.IssueToken(A.IssueTokenRequest(user_id=w.G1.member.id, note="rich"), timeout=20)
    w.admin.admin.RevokeToken(A.RevokeTokenRequest(token_id=t.token_id), timeout=20)
    code, msg, raw = failure(w.admin.admin.RevokeToken, A.RevokeTokenRequest(token_id=t.token_id), timeout=20)
    assert code == Code.FAILED_PRECONDITION, (code, msg)
    (pre,) = status_of(code, msg, raw)["google.rpc.PreconditionFailure"]
    (v,) = pre.violations
    assert (v.type, v.subject, v.description) == ("STATE", "token revoked", msg), v


def test_extend_refusal_names_the_state(c):
    # An extension refused while a proposal waits: the subject is the clue's current state.
    w = c.w
    clue = submit(w.G1.member)
    moved = w.G1.leader.clue.RequestTransition(pb.RequestTransitionRequest(
        clue_id=clue.id, expected_version=clue.version, target=cm.CLUE_STATE_PRELIMINARY_CHECK, reason="初核",
        request_id=new_request_id()), timeout=20)
    filed = w.G1.leader.clue.RequestTransition(pb.RequestTransitionRequest(
        clue_id=clue.id, expected_version=moved.clue.version, target=cm.CLUE_STATE_FILED, reason="立案",
        request_id=new_request_id()), timeout=20)
    assert filed.pending, filed
    code, msg, raw = failure(w.G1.leader.clue.ExtendDeadline, pb.ExtendDeadlineRequest(
        clue_id=clue.id, expected_version=moved.clue.version, days=10, reason="延期",
        request_id=new_request_id()), timeout=20)
    assert code == Code.FAILED_PRECONDITION, (code, msg)
    (pre,) = status_of(code, msg, raw)["google.rpc.PreconditionFailure"]
    (v,) = pre.violations
    assert (v.type, v.subject, v.description) == ("STATE", "PRELIMINARY_CHECK", msg), v


def test_version_conflict_is_error_info(c):
    clue = submit(c.w.G1.member)
    req = pb.RequestTransitionRequest(clue_id=clue.id, expected_version=clue.version + 5,
                                      target=cm.CLUE_STATE_PRELIMINARY_CHECK, reason="初核",
                                      request_id=new_request_id())
    code, msg, raw = failure(c.w.G1.leader.clue.RequestTransition, req, timeout=20)
    assert code == Code.ABORTED
    (info,) = status_of(code, msg, raw)["google.rpc.ErrorInfo"]
    assert info.reason == "VERSION_CONFLICT" and info.domain == "clue.v1", info
    assert info.metadata["current_version"] == str(clue.version), info
    assert info.metadata["expected_version"] == str(clue.version + 5), info


def test_ledger_version_conflict_is_error_info(c):
    # A rectification item's stale version answers as a clue's: VERSION_CONFLICT with both
    # versions (it was CONCURRENT_CHANGE without them).
    rp = S.rectification_pb2
    item = c.w.G1.leader.rect.CreateItem(rp.CreateItemRequest(
        host_unit="市发展改革委", description="整改事项", category="制度", source=rp.RECTIFICATION_SOURCE_SUPERVISION,
        deadline_ms=submit(c.w.G1.member).created_at_ms + 10 * 86400000, request_id=new_request_id()), timeout=20)
    code, msg, raw = failure(c.w.G1.leader.rect.RecordPlan, rp.RecordPlanRequest(
        item_id=item.id, expected_version=item.version + 5, plan="计划", request_id=new_request_id()), timeout=20)
    assert code == Code.ABORTED, (code, msg)
    (info,) = status_of(code, msg, raw)["google.rpc.ErrorInfo"]
    assert info.reason == "VERSION_CONFLICT" and info.domain == "clue.v1", info
    assert dict(info.metadata) == {"current_version": str(item.version),
                                   "expected_version": str(item.version + 5)}, info


def test_version_conflict_met_by_the_write_is_error_info(c):
    # Decided on the version it read, written after another change of the item: the write's
    # own compare refuses it (CLVER), with the versions its message names.
    rp = S.rectification_pb2
    L = c.w.G1.leader
    item = L.rect.CreateItem(rp.CreateItemRequest(
        host_unit="市发展改革委", description="整改事项", category="制度", source=rp.RECTIFICATION_SOURCE_SUPERVISION,
        deadline_ms=submit(c.w.G1.member).created_at_ms + 10 * 86400000, request_id=new_request_id()), timeout=20)
    req = rp.RecordPlanRequest(item_id=item.id, expected_version=item.version, plan="计划",
                               request_id=new_request_id())
    box = {}

    def call(r, timeout):
        box["a"] = failure(L.rect.RecordPlan, r, timeout=timeout)

    def meanwhile():
        return L.rect.RecordPlan(rp.RecordPlanRequest(item_id=item.id, expected_version=item.version, plan="另一计划",
                                                      request_id=new_request_id()), timeout=20)

    _, moved = harness.stalled_by_its_key(c.dbname, L.id, call, req, meanwhile)
    code, msg, raw = box["a"]
    assert code == Code.ABORTED and "is at version" in msg, (code, msg)
    (info,) = status_of(code, msg, raw)["google.rpc.ErrorInfo"]
    assert info.reason == "VERSION_CONFLICT" and info.domain == "clue.v1", info
    assert dict(info.metadata) == {"current_version": str(moved.version),
                                   "expected_version": str(item.version)}, (msg, info)


def test_not_found_hidden_equals_missing(c):
    hidden = submit(c.w.G1.member)  # G2 does not see G1's clues
    missing = hidden.id + 100000
    results = []
    for cid in (hidden.id, missing):
        code, msg, raw = failure(c.w.G2.leader.clue.GetClue, pb.GetClueRequest(clue_id=cid), timeout=20)
        assert code == Code.NOT_FOUND
        results.append((code, msg, raw))
    assert results[0] == results[1], results
    (res,) = status_of(*results[0])["google.rpc.ResourceInfo"]
    assert res.resource_type == "clue.v1.Clue", res
    # The id asked for is not echoed and no owner is named (error_details.proto): nothing in the
    # detail can tell the hidden clue from the missing one.
    assert (res.resource_name, res.owner, res.description) == ("", "", results[0][1]), res
    # And for a move on it: still the same answer as for a missing clue.
    answers = []
    for cid in (hidden.id, missing):
        req = pb.RequestTransitionRequest(clue_id=cid, expected_version=1, target=cm.CLUE_STATE_PRELIMINARY_CHECK,
                                          reason="初核", request_id=new_request_id())
        answers.append(failure(c.w.G2.leader.clue.RequestTransition, req, timeout=20))
    assert answers[0] == answers[1], answers
    assert answers[0][0] == Code.NOT_FOUND


def test_not_found_hidden_equals_missing_for_cases_proposals_items(c):
    # A joint case, a proposal and a rectification item that G3's member does not see answer
    # as ones that do not exist, trailers included: nothing tells which ids exist.
    w = c.w
    cs, rp = S.case_pb2, S.rectification_pb2
    clue = submit(w.G1.member)
    moved = w.G1.leader.clue.RequestTransition(pb.RequestTransitionRequest(
        clue_id=clue.id, expected_version=clue.version, target=cm.CLUE_STATE_PRELIMINARY_CHECK, reason="初核",
        request_id=new_request_id()), timeout=20)
    prop = w.G1.leader.clue.RequestTransition(pb.RequestTransitionRequest(
        clue_id=clue.id, expected_version=moved.clue.version, target=cm.CLUE_STATE_FILED, reason="立案",
        request_id=new_request_id()), timeout=20).proposal
    case = w.R1.leader.case.CreateJointCase(cs.CreateJointCaseRequest(
        title="联合办案", participant_unit_ids=[w.X1.id], request_id=new_request_id()), timeout=20)
    item = w.G1.leader.rect.CreateItem(rp.CreateItemRequest(
        host_unit="市发展改革委", description="整改事项", category="制度", source=rp.RECTIFICATION_SOURCE_SUPERVISION,
        deadline_ms=clue.created_at_ms + 10 * 86400000, request_id=new_request_id()), timeout=20)
    u = w.G3.member
    probes = {
        "GetJointCase": (lambda i: u.case.GetJointCase(cs.GetJointCaseRequest(case_id=i), timeout=20),
                         case.id, "clue.v1.JointCase"),
        "AddParticipant": (lambda i: u.case.AddParticipant(cs.AddParticipantRequest(case_id=i, unit_id=w.G2.id),
                                                           timeout=20), case.id, "clue.v1.JointCase"),
        "ReviewProposal": (lambda i: u.clue.ReviewProposal(pb.ReviewProposalRequest(
            proposal_id=i, approve=True, request_id=new_request_id()), timeout=20), prop.id, "clue.v1.Proposal"),
        "GetItem": (lambda i: u.rect.GetItem(rp.GetItemRequest(item_id=i), timeout=20),
                    item.id, "clue.v1.RectificationItem"),
        "RecordPlan": (lambda i: u.rect.RecordPlan(rp.RecordPlanRequest(
            item_id=i, expected_version=1, plan="计划", request_id=new_request_id()), timeout=20),
            item.id, "clue.v1.RectificationItem"),
    }
    for name, (fn, hidden, rtype) in probes.items():
        got = [failure(fn, i) for i in (hidden, hidden + 100000)]
        assert got[0] == got[1], (name, got)
        assert got[0][0] == Code.NOT_FOUND, (name, got[0])
        (res,) = status_of(*got[0])["google.rpc.ResourceInfo"]
        assert res.resource_type == rtype, (name, res)
    # An AssignHandler naming a user who does not exist: a User, as a hidden one would be.
    code, msg, raw = failure(w.G1.leader.clue.AssignHandler, pb.AssignHandlerRequest(
        clue_id=clue.id, user_id=10 ** 9, request_id=new_request_id()), timeout=20)
    assert code == Code.NOT_FOUND, (code, msg)
    (res,) = status_of(code, msg, raw)["google.rpc.ResourceInfo"]
    assert res.resource_type == "clue.v1.User", res
    # Another user's token and a missing one name their id, and are a Token, for RevokeMyToken and
    # AdminService.RevokeToken alike.
    other = w.G1.member.tokens.ListMyTokens(S.token_pb2.ListMyTokensRequest(), timeout=20).tokens[0].id
    for fn, req in ((u.tokens.RevokeMyToken, S.token_pb2.RevokeMyTokenRequest),
                    (w.admin.admin.RevokeToken, S.admin_pb2.RevokeTokenRequest)):
        for i in ((other, 10 ** 9) if fn == u.tokens.RevokeMyToken else (10 ** 9,)):
            code, msg, raw = failure(fn, req(token_id=i), timeout=20)
            assert (code, msg) == (Code.NOT_FOUND, f"token {i} not found"), (code, msg)
            (res,) = status_of(code, msg, raw)["google.rpc.ResourceInfo"]
            assert res.resource_type == "clue.v1.Token", res


def test_every_not_found_names_its_type(c):
    # The audit tree's objects and Health's services are resources too: a NOT_FOUND names
    # their type (and, where the request names one, which).
    a, au = c.w.auditor.audit, S.audit_pb2
    health = S.health_pb2_grpc.HealthStub(c.w.auditor.channel)
    cases = [
        (lambda: a.GetCheckpoint(au.GetCheckpointRequest(), timeout=20), "clue.v1.Checkpoint", ""),
        (lambda: a.GetCheckpoint(au.GetCheckpointRequest(tree_size=1), timeout=20), "clue.v1.Checkpoint", ""),
        (lambda: a.GetInclusionProof(au.GetInclusionProofRequest(seq=10 ** 9), timeout=20),
         "clue.v1.AuditEvent", str(10 ** 9)),
        (lambda: health.Check(S.health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=20),
         "google.protobuf.ServiceDescriptorProto", "no.such.Service"),
        (lambda: health.Check(S.health_pb2.HealthCheckRequest(service="服" * 100), timeout=20),
         "google.protobuf.ServiceDescriptorProto", "服" * 66),  # its first 200 bytes, whole characters
    ]
    for fn, rtype, rname in cases:
        code, msg, raw = failure(fn)
        assert code == Code.NOT_FOUND, (code, msg)
        (res,) = status_of(code, msg, raw)["google.rpc.ResourceInfo"]
        assert (res.resource_type, res.resource_name, res.description) == (rtype, rname, msg), res

def test_not_found_hidden_equals_missing_in_a_case_creation(c):
    # CreateJointCase naming a clue the caller does not see answers as naming a missing one,
    # details included: a ResourceInfo of a Clue whose description is the call's message.
    w = c.w
    cs = S.case_pb2
    hidden = submit(w.G1.member)  # R2 is not G1's liaison room
    got = []
    for cid in (hidden.id, hidden.id + 100000):
        code, msg, raw = failure(w.R2.leader.case.CreateJointCase, cs.CreateJointCaseRequest(
            title="联合办案", clue_ids=[cid], request_id=new_request_id()), timeout=20)
        assert (code, msg) == (Code.NOT_FOUND, f"clue_ids: clue {cid}: clue not found"), (code, msg)
        kinds = status_of(code, msg, raw)
        assert list(kinds) == ["google.rpc.ResourceInfo"], kinds
        (res,) = kinds["google.rpc.ResourceInfo"]
        assert res.description == msg, res
        got.append((res.resource_type, res.resource_name, res.owner))
    assert got == [("clue.v1.Clue", "", "")] * 2, got


def only_violation(fn, req):
    """The (field, description) of the one BadRequest violation fn(req) answers, checked
    against the status message."""
    code, msg, raw = failure(fn, req, timeout=20)
    assert code == Code.INVALID_ARGUMENT, (code, msg)
    (bad,) = status_of(code, msg, raw)["google.rpc.BadRequest"]
    (v,) = bad.field_violations
    assert v.description == msg, (v, msg)
    return v.field, msg


def test_every_list_refuses_an_empty_range_and_clamps_a_large_page(c):
    au = S.audit_pb2
    L, Au = c.w.G1.leader, c.w.auditor
    # A time range that holds nothing (from not before to) is refused by every list that
    # takes one, under the range's from field, as GetStatistics always did.
    for fn, req, field in (
            (L.clue.ListClues, pb.ListCluesRequest(created_from_ms=1000, created_to_ms=1000), "created_from_ms"),
            (L.clue.ListClues, pb.ListCluesRequest(updated_from_ms=2000, updated_to_ms=1000), "updated_from_ms"),
            (Au.audit.ListAuditEvents, au.ListAuditEventsRequest(from_ms=1000, to_ms=1000), "from_ms")):
        got, msg = only_violation(fn, req)
        assert got == field and msg == f"{field} must be before {field.replace('from', 'to')}", (got, msg)
    # One bound alone, or a range of one millisecond, is a range.
    clue = submit(L)
    got = L.clue.ListClues(pb.ListCluesRequest(created_from_ms=clue.created_at_ms,
                                               created_to_ms=clue.created_at_ms + 1), timeout=20)
    assert clue.id in [x.id for x in got.clues], got
    assert list(L.clue.ListClues(pb.ListCluesRequest(created_to_ms=1), timeout=20).clues) == []
    # A page size past the most is the most, in ExportAuditEvents as in every list.
    page = Au.audit.ExportAuditEvents(au.ExportAuditEventsRequest(page_size=5001), timeout=30)
    alike = Au.audit.ExportAuditEvents(au.ExportAuditEventsRequest(page_size=5000), timeout=30)
    assert page.events and [e.seq for e in page.events] == [e.seq for e in alike.events]
    got = L.clue.ListClues(pb.ListCluesRequest(page_size=100000), timeout=20)
    assert clue.id in [x.id for x in got.clues]


def test_proof_sizes_and_host_units_are_named_by_their_fields(c):
    # A second instance with a signing key: the audit tree grows, and its proofs' refusals can
    # be asked for.
    key = os.path.join(tempfile.mkdtemp(prefix="clued-rich-"), "audit.key")
    subprocess.run([harness.CLUED, "keygen", "--name", "clued.test/rich", "--out", key], check=True,
                   capture_output=True)
    signer = harness.Clued(c.url, args=["--audit-signing-key", key, "--checkpoint-interval", "300ms"]).start()
    Au = world.User(signer.addr, c.w.auditor.id, "auditor", "AUDITOR", None, c.w.auditor.token)
    try:
        sizes_named(c, Au)
    finally:
        Au.close()
        signer.stop()
    hosts_named(c)


def sizes_named(c, Au):
    au = S.audit_pb2
    submit(c.w.G1.member)

    def size_now():
        try:
            return Au.audit.GetConsistencyProof(au.GetConsistencyProofRequest(old_size=1), timeout=20).new_size
        except grpc.RpcError:
            return 0
    harness.wait_for(lambda: size_now() >= 2, timeout=60, what="a tree of two leaves")
    size = size_now()
    second = next(e.seq for e in Au.audit.ExportAuditEvents(au.ExportAuditEventsRequest(), timeout=30).events
                  if e.leaf_index == 1)
    # A tree_size too small to hold the leaf, an old_size past new_size: refused under the
    # field to mend, as the sizes' other refusals are.
    field, msg = only_violation(Au.audit.GetInclusionProof, au.GetInclusionProofRequest(seq=second, tree_size=1))
    assert field == "tree_size" and "not among the first 1 leaves" in msg, msg
    field, msg = only_violation(Au.audit.GetConsistencyProof,
                                au.GetConsistencyProofRequest(old_size=size, new_size=size - 1))
    assert field == "old_size" and msg.startswith("old_size must be between 1 and new_size"), msg
    field, msg = only_violation(Au.audit.GetCheckpoint, au.GetCheckpointRequest(tree_size=-1))
    assert field == "tree_size", msg


def hosts_named(c):
    # A GROUP's host units, as stored (trimmed), each once; nothing is created.
    ad = S.admin_pb2
    A = c.w.admin.admin
    for hosts in (["市财政局", "市财政局"], ["市财政局", "市税务局", " 市财政局\u3000"]):
        field, msg = only_violation(A.CreateUnit, ad.CreateUnitRequest(
            kind=S.common_pb2.UNIT_KIND_GROUP, code="ZG7", name="驻市财政局纪检监察组",
            liaison_room_id=c.w.R1.id, host_units=hosts))
        assert field == "host_units" and msg == "host_units names the same unit more than once", msg
    codes = [u.code for u in A.ListUnits(ad.ListUnitsRequest(), timeout=20).units]
    assert "ZG7" not in codes, codes
    made = A.CreateUnit(ad.CreateUnitRequest(kind=S.common_pb2.UNIT_KIND_GROUP, code="ZG7",
                                             name="驻市财政局纪检监察组", liaison_room_id=c.w.R1.id,
                                             host_units=["市财政局", "市财政局机关"]), timeout=20)
    assert list(made.host_units) == ["市财政局", "市财政局机关"], made


def test_other_codes_carry_no_details(c):
    # PERMISSION_DENIED: a member may not move its unit's clue; nothing structured to add.
    clue = submit(c.w.G1.member)
    req = pb.RequestTransitionRequest(clue_id=clue.id, expected_version=clue.version,
                                      target=cm.CLUE_STATE_PRELIMINARY_CHECK, reason="初核",
                                      request_id=new_request_id())
    code, _, raw = failure(c.w.G1.member.clue.RequestTransition, req, timeout=20)
    assert code == Code.PERMISSION_DENIED and raw is None


def test_cluectl_prints_violations(c):
    env = {"CLUED_SERVER": c.srv.addr, "CLUED_TOKEN": c.w.G1.member.token}
    r = harness.cluectl("clue", "submit", "--title", " ", "--summary", "s", "--source", "LETTER_VISIT_REPORT",
                        "--subject-name", "张三", "--host-unit", "市发展改革委", env=env, check=1)
    assert r.stderr.startswith("INVALID_ARGUMENT: "), r.stderr
    assert "  field title: " in r.stderr, r.stderr
    clue = submit(c.w.G1.member)
    env["CLUED_TOKEN"] = c.w.G1.leader.token
    r = harness.cluectl("clue", "move", str(clue.id), "--to", "FILED", "--version", str(clue.version),
                        "--reason", "跳过", env=env, check=1)
    assert r.stderr.startswith("FAILED_PRECONDITION: "), r.stderr
    assert "  precondition STATE ACCEPTED: " in r.stderr, r.stderr
    r = harness.cluectl("clue", "move", str(clue.id), "--to", "PRELIMINARY_CHECK", "--version", "9",
                        "--reason", "初核", env=env, check=1)
    assert r.stderr.startswith("ABORTED: "), r.stderr
    assert f"  reason VERSION_CONFLICT current_version={clue.version} expected_version=9" in r.stderr, r.stderr


if __name__ == "__main__":
    harness.run_tests(dict(globals()), setup=setup, teardown=teardown)
