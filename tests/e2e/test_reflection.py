"""Server reflection (grpc.reflection.v1 and v1alpha) against the real clued.

Two clients nobody here wrote the logic of: `buf curl` (npm's @bufbuild/buf, through
scripts/buf) with --protocol grpc --http2-prior-knowledge and no schema but what reflection
gives it; and grpcio driving the reflection protocol with stubs generated from
proto/grpc/reflection/v1/reflection.proto (Debian's python3-grpcio has no grpc_reflection),
then building request and response types from the descriptors it received alone.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import world  # noqa: E402

import grpc  # noqa: E402
from google.protobuf import descriptor_pb2, descriptor_pool  # noqa: E402

try:
    from google.protobuf import message_factory
    _get_class = getattr(message_factory, "GetMessageClass", None)
except ImportError:  # pragma: no cover
    _get_class = None

S = harness.stubs()
BUF = os.path.join(harness.SRC, "scripts", "buf")
V1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
V1ALPHA = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
SERVED = {
    "clue.v1.AdminService", "clue.v1.AuditService", "clue.v1.CaseService", "clue.v1.ClueService",
    "clue.v1.StatsService", "clue.v1.TokenService", "clue.v1.RectificationService", "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}


def _reflection_pb2():
    from grpc_tools import protoc
    import importlib

    out = tempfile.mkdtemp(prefix="clued-refl-")
    d = os.path.join(harness.SRC, "proto", "grpc", "reflection", "v1")
    assert protoc.main(["protoc", f"-I{d}", f"--python_out={out}", "reflection.proto"]) == 0
    sys.path.insert(0, out)
    return importlib.import_module("reflection_pb2")


R = _reflection_pb2()


class Reflection:
    """One ServerReflectionInfo stream: ask() sends a request and waits for its answer."""

    def __init__(self, channel, path=V1):
        import queue

        self.q = queue.Queue()
        call = channel.stream_stream(path, request_serializer=R.ServerReflectionRequest.SerializeToString,
                                     response_deserializer=R.ServerReflectionResponse.FromString)
        self.responses = call(iter(self.q.get, None), timeout=30)

    def ask(self, **kw):
        req = R.ServerReflectionRequest(host="test", **kw)
        self.q.put(req)
        resp = next(self.responses)
        assert resp.original_request == req, (resp.original_request, req)
        assert resp.valid_host == "test"
        return resp

    def close(self):
        self.q.put(None)
        return list(self.responses)


def pool_from(resp):
    """A descriptor pool holding exactly the files of a file_descriptor_response."""
    pool = descriptor_pool.DescriptorPool()
    files = [descriptor_pb2.FileDescriptorProto.FromString(b)
             for b in resp.file_descriptor_response.file_descriptor_proto]
    pending = {f.name: f for f in files}
    while pending:  # add each file after the files it imports
        for name, f in list(pending.items()):
            if all(d not in pending for d in f.dependency):
                pool.Add(f)
                del pending[name]
    return pool, [f.name for f in files]


def message_class(desc):
    if _get_class:
        return _get_class(desc)
    return message_factory.MessageFactory(desc.file.pool).GetPrototype(desc)


def setup():
    srv = harness.Clued(harness.test_database_url()).start()
    return srv, world.build(srv)


def teardown(ctx):
    srv, w = ctx
    w.close()
    srv.stop()


def test_list_services_v1_and_v1alpha(ctx):
    srv, _ = ctx
    with grpc.insecure_channel(srv.addr) as ch:  # no token: reflection is public
        for path in (V1, V1ALPHA):
            r = Reflection(ch, path)
            names = {s.name for s in r.ask(list_services="").list_services_response.service}
            # Exactly the public API: the test build's debug service is not in proto/ and stays hidden.
            assert names == SERVED, (path, names)
            assert r.close() == []
        # Health answers for exactly the services reflection lists (and "" for the server).
        h = S.health_pb2_grpc.HealthStub(ch)
        for name in SERVED | {""}:
            assert h.Check(S.health_pb2.HealthCheckRequest(service=name), timeout=10).status == \
                S.health_pb2.HealthCheckResponse.SERVING, name
        harness.expect_status(grpc.StatusCode.NOT_FOUND, h.Check,
                              S.health_pb2.HealthCheckRequest(service="clued.test.Debug"), timeout=10)


def test_describe_a_method_and_call_health_from_reflection_alone(ctx):
    srv, w = ctx
    with grpc.insecure_channel(srv.addr) as ch:
        r = Reflection(ch)
        pool, names = pool_from(r.ask(file_containing_symbol="clue.v1.ClueService.GetClue"))
        assert names[0] == "clue/v1/clue.proto" and "clue/v1/common.proto" in names, names
        m = pool.FindMethodByName("clue.v1.ClueService.GetClue")
        assert m.input_type.full_name == "clue.v1.GetClueRequest" and m.output_type.full_name == "clue.v1.Clue"
        f = m.output_type.fields_by_number[10]
        assert (f.name, f.json_name) == ("reporter_on_file", "hasReporter"), (f.name, f.json_name)

        hpool, _ = pool_from(r.ask(file_containing_symbol="grpc.health.v1.Health"))
        check = hpool.FindMethodByName("grpc.health.v1.Health.Check")
        req_cls, resp_cls = message_class(check.input_type), message_class(check.output_type)
        # The same stream answers on: file by name, and a missing symbol as an error reply.
        assert pool_from(r.ask(file_by_filename="clue/v1/audit.proto"))[1][0] == "clue/v1/audit.proto"
        err = r.ask(file_containing_symbol="clue.v1.NoSuchThing").error_response
        assert err.error_code == grpc.StatusCode.NOT_FOUND.value[0] and "clue.v1.NoSuchThing" in err.error_message
        # Fields and enum values are symbols too (enum values scoped beside their enum).
        for sym, file in (("clue.v1.Clue.title", "clue/v1/clue.proto"),
                          ("clue.v1.SOURCE_CHANNEL_LETTER_VISIT_REPORT", "clue/v1/clue.proto"),
                          ("grpc.health.v1.HealthCheckResponse.SERVING", "grpc/health/v1/health.proto"),
                          ("grpc.health.v1.HealthCheckRequest.service", "grpc/health/v1/health.proto")):
            got = pool_from(r.ask(file_containing_symbol=sym))[1][0]
            assert got == file, (sym, got)
        for sym in ("clue.v1.Clue.no_such_field", "clue.v1.ClueState.CLUE_STATE_ACCEPTED", "clue.v1.Clue.title.x"):
            err = r.ask(file_containing_symbol=sym).error_response
            assert err.error_code == grpc.StatusCode.NOT_FOUND.value[0], sym
        r.close()
        resp = ch.unary_unary("/grpc.health.v1.Health/Check", request_serializer=req_cls.SerializeToString,
                              response_deserializer=resp_cls.FromString)(req_cls(), timeout=10)
        serving = check.output_type.enum_types_by_name["ServingStatus"].values_by_name["SERVING"].number
        assert resp.status == serving, resp

        # A call that needs a token, with types reflection built: GetClue of a clue grpcio made.
        made = w.G1.member.clue.SubmitClue(S.clue_pb2.SubmitClueRequest(
            title="反射", summary="s", source=S.clue_pb2.SOURCE_CHANNEL_AUDIT,
            subject=S.clue_pb2.SubjectPerson(name="赵六"), host_unit="市发展改革委",
            request_id=harness.new_request_id()), timeout=10)
        get_req, clue_cls = message_class(m.input_type), message_class(m.output_type)
        got = ch.unary_unary("/clue.v1.ClueService/GetClue", request_serializer=get_req.SerializeToString,
                             response_deserializer=clue_cls.FromString)(
            get_req(clue_id=made.id), metadata=w.G1.member.metadata, timeout=10)
        assert got.registration_number == made.registration_number


def test_errors_are_answers_and_bounds_hold(ctx):
    srv, _ = ctx
    with grpc.insecure_channel(srv.addr) as ch:
        r = Reflection(ch, V1ALPHA)
        long_name = "x" * 60000  # under the 64 KiB a method that needs no token takes
        err = r.ask(file_containing_symbol=long_name).error_response
        assert err.error_code == grpc.StatusCode.NOT_FOUND.value[0] and len(err.error_message) < 300, err
        assert r.ask(file_by_filename="../../etc/passwd").error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
        ext = R.ExtensionRequest(containing_type="clue.v1.Clue", extension_number=100)
        assert r.ask(file_containing_extension=ext).error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
        ans = r.ask(all_extension_numbers_of_type="clue.v1.Clue").all_extension_numbers_response
        assert ans.base_type_name == "clue.v1.Clue" and list(ans.extension_number) == []
        assert r.ask().error_response.error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert r.close() == []

        # A request over 64 KiB (reflection needs no token, so it takes small requests) ends
        # the stream as one over --max-message-bytes would.
        r = Reflection(ch)
        r.q.put(R.ServerReflectionRequest(file_by_filename="y" * 100000))
        try:
            next(r.responses)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
        else:
            raise AssertionError("an oversized reflection request was answered")
        r.q.put(None)

        # Bytes that are not a ServerReflectionRequest end the stream with INVALID_ARGUMENT.
        raw = ch.stream_stream(V1, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        try:
            list(raw(iter([b"\xff\xff\xff"]), timeout=10))
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
        else:
            raise AssertionError("garbage was answered")


def test_a_long_name_is_cut_between_characters(ctx):
    """A name echoed in an error answer is cut at 200 bytes: between characters, so that the
    answer stays valid proto3 (its strings UTF-8). Before, 199 "a" then "é" was cut inside
    "é" and the client could not decode the answer at all."""
    srv, _ = ctx
    for cut in ("\u00e9", "\u20ac", "\U0001F600"):
        name = "a" * 199 + cut + "tail"
        with grpc.insecure_channel(srv.addr) as ch:
            r = Reflection(ch)
            for kw in ({"file_containing_symbol": name}, {"file_by_filename": name},
                       {"all_extension_numbers_of_type": name},
                       {"file_containing_extension": R.ExtensionRequest(containing_type=name, extension_number=1)}):
                err = r.ask(**kw).error_response
                assert err.error_code == grpc.StatusCode.NOT_FOUND.value[0], (kw, err)
                assert err.error_message.endswith(": " + "a" * 199), (kw, err.error_message[-8:])
            assert r.close() == []


def test_a_client_that_does_not_read_waits(ctx):
    """Requests whose answers the client does not read (no flow-control credit) are answered
    until the connection has 64 KiB of them queued (its share of --max-public-outbound); the
    stream then reads no further request, and once the client reads, every request is
    answered in order and the stream ends OK. (Before, the answers filled the connection's
    --max-conn-buffer and the stream ended with RESOURCE_EXHAUSTED.)"""
    import struct

    import h2.settings
    import rawh2

    srv, _ = ctx
    req = R.ServerReflectionRequest(file_containing_symbol="clue.v1.ClueService").SerializeToString()
    c = rawh2.RawH2(srv.addr)
    window = h2.settings.SettingCodes.INITIAL_WINDOW_SIZE
    c.conn.update_settings({window: 1})  # the server may send 1 byte per stream: nothing drains
    c.flush()
    sid = c.request(V1, body=rawh2.grpc_frame(req) * 400, end=True)
    time.sleep(1)
    c.conn.update_settings({window: 1 << 24})  # then read everything that was queued
    c.conn.increment_flow_control_window(1 << 24)
    c.flush()
    resp = c.wait(sid)
    c.close()
    assert resp.grpc_status == 0, (resp.grpc_status, resp.grpc_message)
    answers, off = 0, 0
    while off < len(resp.data):
        n = struct.unpack(">I", resp.data[off + 1:off + 5])[0]
        assert R.ServerReflectionResponse.FromString(resp.data[off + 5:off + 5 + n]).file_descriptor_response
        answers, off = answers + 1, off + 5 + n
    assert answers == 400, answers
    with grpc.insecure_channel(srv.addr) as ch:
        assert Reflection(ch).ask(list_services="").list_services_response.service


def buf_curl(srv, *args, check=True):
    r = subprocess.run([BUF, "curl", "--protocol", "grpc", "--http2-prior-knowledge", *args],
                       capture_output=True, text=True, timeout=120)
    if check:
        assert r.returncode == 0, f"buf curl {' '.join(args)} exited {r.returncode}:\n{r.stdout}{r.stderr}"
    return r


def test_buf_curl_lists_describes_and_calls(ctx):
    srv, w = ctx
    base = f"http://{srv.addr}"
    listed = set(buf_curl(srv, "--list-services", base).stdout.split())
    assert listed == SERVED, listed
    methods = buf_curl(srv, "--list-methods", base).stdout.split()
    assert "clue.v1.ClueService/GetClue" in methods and "grpc.health.v1.Health/Check" in methods, methods
    assert not [m for m in methods if m.split("/")[0] not in SERVED], methods
    # Health/Check with nothing but reflection for the schema, over v1 and over v1alpha.
    for proto in ("grpc-v1", "grpc-v1alpha"):
        out = buf_curl(srv, "--reflect-protocol", proto, f"{base}/grpc.health.v1.Health/Check").stdout
        assert json.loads(out) == {"status": "SERVING"}, out
    # JSON in and out through the reflected schema: GetClue prints the clue with its JSON names.
    made = w.G1.member.clue.SubmitClue(S.clue_pb2.SubmitClueRequest(
        title="buf", summary="s", source=S.clue_pb2.SOURCE_CHANNEL_AUDIT, subject=S.clue_pb2.SubjectPerson(name="钱七"),
        host_unit="市发展改革委", reporter=S.clue_pb2.ReporterContact(name="孙八"),
        request_id=harness.new_request_id()), timeout=10)
    out = buf_curl(srv, "-H", f"authorization: Bearer {w.G1.member.token}", "-d", json.dumps({"clueId": str(made.id)}),
                   f"{base}/clue.v1.ClueService/GetClue").stdout
    got = json.loads(out)
    assert got["registrationNumber"] == made.registration_number and got["hasReporter"] is True, got
    r = buf_curl(srv, "-d", json.dumps({"clueId": str(made.id)}), f"{base}/clue.v1.ClueService/GetClue", check=False)
    assert r.returncode != 0 and "unauthenticated" in (r.stdout + r.stderr).lower(), r.stdout + r.stderr


if __name__ == "__main__":
    harness.run_tests(globals(), setup, teardown)
