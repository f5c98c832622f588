"""A request's strings reach the server whole or not at all (proto3: every string is UTF-8).

C sees a decoded string as NUL-terminated text, so "a\\0b" would be stored as "a": a request
silently rewritten. For every method the protos declare, and every string field of its
request (top level, repeated, and one message level down), a value holding a NUL byte and a
value that is not UTF-8 are each refused with INVALID_ARGUMENT naming the field, before any
handler runs: no row changes. Public methods (Health, reflection, a client stream) are
refused the same way; callers without a valid token still get UNAUTHENTICATED first.

A text's length limit applies to it without the white space around it, and that trimmed text
is what is stored: a token's note of one character and 4 MiB of spaces is stored (and
audited) as that character, not as an event no auditor's client could receive. Lists given
in a request count each value once: ListClues' states, however often repeated.
"""

import os
import sys

import grpc
from google.protobuf import descriptor as _d

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import world  # noqa: E402

S = harness.stubs()
SC = grpc.StatusCode
MARK = "QZXJ"  # replaced on the wire by MARK-long bytes that are not UTF-8
NOT_UTF8 = b"\xc0\x80\xed\xa0"  # an overlong NUL, then half a surrogate


def setup():
    c = world.served()
    c.ch = grpc.insecure_channel(c.srv.addr)
    return c


def teardown(c):
    c.ch.close()
    world.unserve(c)


def methods():
    out = {}
    for name in sorted(vars(S)):
        if not name.endswith("_pb2"):
            continue
        for svc in getattr(S, name).DESCRIPTOR.services_by_name.values():
            for md in svc.methods:
                out[f"/{svc.full_name}/{md.name}"] = md
    return out


def message_class(desc):
    from google.protobuf import message_factory, symbol_database
    try:
        return message_factory.GetMessageClass(desc)
    except AttributeError:  # older protobuf
        return symbol_database.Default().GetSymbol(desc.full_name)


def string_paths(desc, depth=0):
    """(path, field descriptors) of every string field, and one message level down."""
    for f in desc.fields:
        if f.type == _d.FieldDescriptor.TYPE_STRING:
            yield f.name, [f]
        elif f.type == _d.FieldDescriptor.TYPE_MESSAGE and depth == 0 and not f.message_type.GetOptions().map_entry:
            for sub, chain in string_paths(f.message_type, depth + 1):
                yield f"{f.name}.{sub}", [f] + chain


def with_value(cls, chain, value):
    msg = cls()
    m = msg
    for f in chain[:-1]:
        m = m.__getattribute__(f.name).add() if f.label == _d.FieldDescriptor.LABEL_REPEATED \
            else m.__getattribute__(f.name)
    last = chain[-1]
    if last.label == _d.FieldDescriptor.LABEL_REPEATED:
        m.__getattribute__(last.name).append(value)
    else:
        setattr(m, last.name, value)
    return msg.SerializeToString()


def call(c, path, md, body, metadata):
    """One call with raw bytes; returns (code, details)."""
    cs, ss = md.client_streaming, md.server_streaming
    try:
        if cs and ss:
            for _ in c.ch.stream_stream(path)(iter([body]), metadata=metadata, timeout=10):
                break
        elif cs:
            c.ch.stream_unary(path)(iter([body]), metadata=metadata, timeout=10)
        elif ss:
            for _ in c.ch.unary_stream(path)(body, metadata=metadata, timeout=10):
                break
        else:
            c.ch.unary_unary(path)(body, metadata=metadata, timeout=10)
        return SC.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details()


def rows(c):
    cur = c.db.cursor()
    cur.execute("SELECT (SELECT count(*) FROM audit_events), (SELECT count(*) FROM clues),"
                " (SELECT count(*) FROM notes), (SELECT count(*) FROM tokens)")
    return cur.fetchone()


def test_every_string_field_of_every_method(c):
    before = rows(c)
    cells, wrong = 0, []
    leader = list(c.w.G1.leader.metadata)
    for path, md in methods().items():
        cls = message_class(md.input_type)
        for fpath, chain in string_paths(md.input_type):
            for kind, body, want in (
                    ("NUL", with_value(cls, chain, "合\x00法"), f"field {fpath} contains a NUL byte"),
                    ("not UTF-8", with_value(cls, chain, MARK).replace(MARK.encode(), NOT_UTF8),
                     f"field {fpath} is not valid UTF-8")):
                cells += 1
                code, details = call(c, path, md, body, leader)
                if code != SC.INVALID_ARGUMENT or details != want:
                    wrong.append(f"{path} {fpath} ({kind}): {code.name} {details!r}, want {want!r}")
    assert cells >= 100, cells  # 64 string fields today; a walk that finds few is broken
    assert not wrong, f"{len(wrong)} of {cells}:\n" + "\n".join(wrong[:30])
    assert rows(c) == before, "a refused request changed rows"
    print(f"{cells} refusals checked")


def test_submit_with_a_nul_stores_nothing(c):
    before = rows(c)
    req = S.clue_pb2.SubmitClueRequest(
        request_id=harness.new_request_id(), title="某局长违规\x00插手工程", summary="反映某某违规收受礼金",
        source=S.clue_pb2.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
        subject=S.clue_pb2.SubjectPerson(name="王某某", position="局长"), host_unit="市发展改革委")
    try:
        c.w.G1.member.clue.SubmitClue(req, timeout=10)
        assert False, "accepted a title with a NUL byte"
    except grpc.RpcError as e:
        assert e.code() == SC.INVALID_ARGUMENT and e.details() == "field title contains a NUL byte", e.details()
    req.title = "某局长违规插手工程"
    assert c.w.G1.member.clue.SubmitClue(req, timeout=10).title == "某局长违规插手工程"
    assert rows(c)[1] == before[1] + 1


def test_public_methods_and_unauthenticated_callers(c):
    md = methods()
    # Health: public, refused on its own field.
    code, details = call(c, "/grpc.health.v1.Health/Check", md["/grpc.health.v1.Health/Check"], b"\x0a\x03a\x00b", ())
    assert (code, details) == (SC.INVALID_ARGUMENT, "field service contains a NUL byte"), (code, details)
    # Reflection, a bidirectional stream: each message is checked as it arrives.
    try:
        for _ in c.ch.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")(
                iter([b"\x0a\x03a\x00b"]), timeout=10):
            pass
        assert False, "reflection accepted a host with a NUL byte"
    except grpc.RpcError as e:
        assert (e.code(), e.details()) == (SC.INVALID_ARGUMENT, "field host contains a NUL byte"), e.details()
    # Without a valid token, authentication answers first.
    code, _ = call(c, "/clue.v1.ClueService/SubmitClue", md["/clue.v1.ClueService/SubmitClue"], b"\x0a\x03a\x00b",
                   (("authorization", "Bearer nope"),))
    assert code == SC.UNAUTHENTICATED
    assert c.srv.alive()


def test_texts_are_stored_as_validated_without_their_white_space(c):
    w, cur = c.w, c.db.cursor()
    cur.execute("SELECT max(seq) FROM audit_events")
    auditor_from = cur.fetchone()[0]
    # At the request's 4 MiB limit: one character and spaces.
    note = "x" + " " * (4 * 1024 * 1024 - 5 - 1)
    t = w.G1.member.tokens.IssueMyToken(S.token_pb2.IssueMyTokenRequest(note=note), timeout=30)
    cur.execute("SELECT note FROM tokens WHERE id = %s", (t.token_id,))
    assert cur.fetchone()[0] == "x"
    cur.execute("SELECT details::jsonb->>'note', octet_length(details) FROM audit_events"
                " WHERE action = 'token.issue' ORDER BY seq DESC LIMIT 1")
    got, size = cur.fetchone()
    assert got == "x" and size < 500, (got, size)
    # Every kind of white space around it: VT, FF, CR, LF, TAB, NEL, NBSP, U+3000.
    ws = "\x0b\x0c\r\n\t\u0085\u00a0\u3000"
    t = w.G1.member.tokens.IssueMyToken(S.token_pb2.IssueMyTokenRequest(note=ws + "个人 令牌" + ws), timeout=30)
    cur.execute("SELECT note FROM tokens WHERE id = %s", (t.token_id,))
    assert cur.fetchone()[0] == "个人 令牌"
    t = w.G1.member.tokens.IssueMyToken(S.token_pb2.IssueMyTokenRequest(note=ws), timeout=30)
    cur.execute("SELECT note FROM tokens WHERE id = %s", (t.token_id,))
    assert cur.fetchone()[0] is None
    # The admin's IssueToken and DisableUser the same.
    t = w.admin.admin.IssueToken(S.admin_pb2.IssueTokenRequest(user_id=w.G2.member.id, note=ws + "发放" + " " * 3_000_000),
                                 timeout=30)
    cur.execute("SELECT note FROM tokens WHERE id = %s", (t.token_id,))
    assert cur.fetchone()[0] == "发放"
    victim = w.new_user("G2", "MEMBER", "victim")
    w.admin.admin.DisableUser(S.admin_pb2.DisableUserRequest(user_id=victim.id, reason="离职" + "\n" * 3_000_000),
                              timeout=30)
    cur.execute("SELECT reason, octet_length(details) FROM audit_events WHERE action = 'user.disable'"
                " ORDER BY seq DESC LIMIT 1")
    assert cur.fetchone() == ("离职", 2)
    # The auditor's default clients read every event written since.
    evs = w.auditor.audit.ListAuditEvents(S.audit_pb2.ListAuditEventsRequest(after_seq=auditor_from, page_size=500),
                                          timeout=30).events
    cur.execute("SELECT count(*) FROM audit_events WHERE seq > %s", (auditor_from,))
    assert len(evs) == cur.fetchone()[0] and not any(len(e.details_json) > 1000 for e in evs)
    seen = []
    for e in w.auditor.audit.WatchEvents(S.audit_pb2.WatchEventsRequest(after_seq=auditor_from), timeout=10):
        seen.append(e.seq)
        if e.seq == evs[-1].seq:
            break
    assert seen == [e.seq for e in evs]


def test_a_unit_lists_at_most_100_host_units(c):
    adm = c.w.admin.admin
    req = S.admin_pb2.CreateUnitRequest(kind=S.common_pb2.UNIT_KIND_GROUP, code="GH", name="group GH",
                                        liaison_room_id=c.w.R1.id, host_units=[f"驻在单位{i}" for i in range(101)])
    before = rows(c)
    try:
        adm.CreateUnit(req, timeout=10)
        assert False, "101 host units were taken"
    except grpc.RpcError as e:
        assert (e.code(), e.details()) == (SC.INVALID_ARGUMENT, "host_units has more than 100 entries"), e.details()
    assert rows(c) == before
    del req.host_units[100:]
    req.host_units[0] = "\u3000 " + req.host_units[0] + " \t"
    u = adm.CreateUnit(req, timeout=10)
    assert len(u.host_units) == 100 and u.host_units[0] == "驻在单位0"


def test_list_clues_takes_each_state_once(c):
    w = c.w
    accepted = w.G1.member.clue.SubmitClue(S.clue_pb2.SubmitClueRequest(
        request_id=harness.new_request_id(), title="线索", summary="摘要",
        source=S.clue_pb2.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=S.clue_pb2.SubjectPerson(name="张某"),
        host_unit="市发展改革委"), timeout=10)
    moved = w.G1.member.clue.SubmitClue(S.clue_pb2.SubmitClueRequest(
        request_id=harness.new_request_id(), title="线索", summary="摘要",
        source=S.clue_pb2.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=S.clue_pb2.SubjectPerson(name="张某"),
        host_unit="市发展改革委"), timeout=10)
    moved = w.G1.leader.clue.RequestTransition(S.clue_pb2.RequestTransitionRequest(
        clue_id=moved.id, expected_version=moved.version, target=S.common_pb2.CLUE_STATE_PRELIMINARY_CHECK,
        reason="初核", request_id=harness.new_request_id()), timeout=10).clue
    assert moved.state == S.common_pb2.CLUE_STATE_PRELIMINARY_CHECK
    ACC, PRE = S.common_pb2.CLUE_STATE_ACCEPTED, S.common_pb2.CLUE_STATE_PRELIMINARY_CHECK
    for states in ([ACC] * 6 + [PRE], [PRE] + [ACC] * 6, [ACC] * 5000 + [PRE]):
        ids = {x.id for x in w.G1.leader.clue.ListClues(S.clue_pb2.ListCluesRequest(states=states, page_size=500),
                                                         timeout=10).clues}
        assert {accepted.id, moved.id} <= ids, (len(states), ids)
    try:
        w.G1.leader.clue.ListClues(S.clue_pb2.ListCluesRequest(states=[ACC, 9]), timeout=10)
        assert False, "an unknown state was taken"
    except grpc.RpcError as e:
        assert e.code() == SC.INVALID_ARGUMENT, e.details()


def test_wire_protobuf_c_would_misread_is_refused(c):
    """Wire that is no valid message but that protobuf-c decodes all the same is refused before
    any handler: a field numbered 0 written as a two-byte tag (protobuf-c keeps it as an unknown
    field, and a check that stopped at it would let a NUL-cut string through), and a bool in
    another wire type (protobuf-c reads any non-zero byte of it, a length prefix too, as true:
    a ReviewProposal that other parsers read as a rejection would approve)."""
    before = rows(c)
    leader = list(c.w.G1.leader.metadata)
    cells, wrong = 0, []
    for path, md in methods().items():
        cls = message_class(md.input_type)
        name = md.input_type.full_name
        for fpath, chain in list(string_paths(md.input_type))[:1]:
            body = b"\x82\x00\x00" + with_value(cls, chain, "合\x00法")
            want = f"request is not a valid {name} message: a field numbered 0"
            cells += 1
            code, details = call(c, path, md, body, leader)
            if code != SC.INVALID_ARGUMENT or details != want:
                wrong.append(f"{path} field 0: {code.name} {details!r}, want {want!r}")
        for f in md.input_type.fields:
            if f.type != _d.FieldDescriptor.TYPE_BOOL:
                continue
            for wire, value in ((2, b"\x01\x00"), (5, b"\x00\x00\x00\x00"), (1, bytes(8))):
                body = bytes([f.number << 3 | wire]) + value
                want = f"request is not a valid {name} message: field {f.name} is not a varint"
                cells += 1
                code, details = call(c, path, md, body, leader)
                if code != SC.INVALID_ARGUMENT or details != want:
                    wrong.append(f"{path} {f.name} wire {wire}: {code.name} {details!r}, want {want!r}")
    assert cells >= 50, cells  # 57 today
    assert not wrong, f"{len(wrong)} of {cells}:\n" + "\n".join(wrong[:30])
    assert rows(c) == before, "a refused request changed rows"
    print(f"{cells} refusals checked")


if __name__ == "__main__":
    harness.run_tests(globals(), setup, teardown)
