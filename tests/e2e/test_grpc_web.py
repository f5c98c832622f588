"""gRPC-Web served by clued itself, against the protocol text (PROTOCOL-WEB.md): raw HTTP/1.1
on sockets (rawh1.py) and raw HTTP/2 (python3-h2, rawh2.py) on the gRPC port. Unary and
server-streaming calls, binary and base64 bodies, trailers as the body's last frame, CORS for
the origins named by --web-origin, the console's files (--console-dir) and the bounds of an
HTTP/1.1 connection: request line, header section, body, pipelined input, slowloris."""

import base64
import os
import socket
import struct
import sys
import tempfile
import threading
import time

import grpc

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
import world  # noqa: E402
from rawh1 import H1, b64decode_stream, encode, frame, grpc_web  # noqa: E402
from rawh2 import RawH2, grpc_frame  # noqa: E402

S = harness.stubs()
CHECK = "/grpc.health.v1.Health/Check"
LIST_UNITS = "/clue.v1.AdminService/ListUnits"
ORIGIN = "https://console.example:8443"
MAX_MSG = 65536
HEADER_BYTES = 8192


def check_req(service=""):
    return S.health_pb2.HealthCheckRequest(service=service).SerializeToString()


def serving(body):
    r = S.health_pb2.HealthCheckResponse()
    r.ParseFromString(body)
    return r.status == S.health_pb2.HealthCheckResponse.SERVING


class Ctx:
    pass


def make_console(d):
    os.makedirs(os.path.join(d, "assets"))
    files = {
        "index.html": b"<!doctype html><title>console</title>",
        "assets/index-B3xk9aQ2.js": b"console.log('clued');\n",
        "assets/index-Df81kLm0.css": b"body{color:#111}\n",
        "assets/logo.svg": b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        "favicon.ico": b"\x00\x00\x01\x00",
        "config.json": b"{}",
    }
    for name, data in files.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    os.symlink("/etc/passwd", os.path.join(d, "passwd.txt"))  # out of the directory
    os.symlink("index-B3xk9aQ2.js", os.path.join(d, "assets", "alias.js"))  # inside it
    os.mkfifo(os.path.join(d, "fifo.txt"))
    os.makedirs(os.path.join(d, ".git"))  # hidden: a tool's or an editor's, never served
    os.makedirs(os.path.join(d, ".well-known"))  # ... except this one
    for name, data in ((".env", b"SECRET=1\n"), (".git/config", b"SECRET=2\n"), ("assets/.x.js.swp", b"SECRET=3\n"),
                       (".well-known/security.txt", b"Contact: x\n")):
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    with open(os.path.join(d, "huge.bin"), "wb") as f:  # sparse: over the 16 MiB bound
        f.truncate(17 << 20)
    return files


def setup():
    c = Ctx()
    c.dir = tempfile.mkdtemp(prefix="clued-console-")
    c.files = make_console(os.path.join(c.dir, "www"))
    c.url = harness.test_database_url()
    c.srv = harness.Clued(c.url, args=[
        "--console-dir", os.path.join(c.dir, "www"), "--web-origin", ORIGIN,
        "--web-origin", "http://localhost:5173", "--max-message-bytes", str(MAX_MSG),
        "--max-header-bytes", str(HEADER_BYTES), "--max-headers", "40",
        "--handshake-timeout", "2s"]).start()
    c.token = world.bootstrap_token(c.srv)
    return c


def teardown(c):
    c.srv.stop()


def still_serving(c):
    r = grpc_web(c.srv.addr, CHECK, check_req())
    assert r.grpc_status() == 0 and serving(r.messages()[0])


# ---- unary over HTTP/1.1 -------------------------------------------------------------------


def test_unary_http1(c):
    r = grpc_web(c.srv.addr, CHECK, check_req())
    assert r.status == 200, r.status
    assert r.header("content-type") == "application/grpc-web+proto"
    assert int(r.header("content-length")) == len(r.body)
    msgs = r.messages()
    assert len(msgs) == 1 and serving(msgs[0])
    assert r.trailers() == {"grpc-status": "0"}
    assert "grpc-status" not in r.headers  # the status is in the body, as the protocol says
    # application/grpc-web without +proto is the same thing.
    r = grpc_web(c.srv.addr, CHECK, check_req(), ctype="application/grpc-web")
    assert r.grpc_status() == 0 and serving(r.messages()[0])


def test_keep_alive_and_pipelining(c):
    h = H1(c.srv.addr)
    for _ in range(3):
        r = grpc_web(h, CHECK, check_req())
        assert r.grpc_status() == 0
    # Three requests in one write: three replies, in order, on the same connection.
    reqs = b""
    for svc in ("", "no.such.A", "clue.v1.ClueService"):
        reqs += encode("POST", CHECK, frame(check_req(svc)), [("Content-Type", "application/grpc-web+proto")])
    h.send(reqs)
    a, b, d = h.read_reply(), h.read_reply(), h.read_reply()
    assert a.grpc_status() == 0
    assert b.grpc_status() == 5 and "no.such.A" in b.grpc_message()
    assert d.grpc_status() == 0
    h.close()


def test_authenticated_and_unauthenticated(c):
    req = S.admin_pb2.ListUnitsRequest().SerializeToString()
    r = grpc_web(c.srv.addr, LIST_UNITS, req)
    assert r.status == 200 and r.grpc_status() == 16, r.body
    assert "authorization" in r.grpc_message()
    assert r.messages() == []
    r = grpc_web(c.srv.addr, LIST_UNITS, req, token="ct_" + "0" * 64)
    assert r.grpc_status() == 16
    r = grpc_web(c.srv.addr, LIST_UNITS, req, token=c.token)
    assert r.grpc_status() == 0
    units = S.admin_pb2.ListUnitsResponse()
    units.ParseFromString(r.messages()[0])
    assert any(u.code == "ADM" for u in units.units)
    # A refused caller's body is read and dropped: the connection serves the next request.
    h = H1(c.srv.addr)
    assert grpc_web(h, LIST_UNITS, req).grpc_status() == 16
    assert grpc_web(h, LIST_UNITS, req, token=c.token).grpc_status() == 0
    h.close()


def test_error_trailers(c):
    r = grpc_web(c.srv.addr, "/clue.v1.ClueService/NoSuchMethod", b"")
    assert r.status == 200 and r.grpc_status() == 12
    assert "/clue.v1.ClueService/NoSuchMethod" in r.grpc_message()
    r = grpc_web(c.srv.addr, CHECK, check_req("no.such.Service"))
    assert r.grpc_status() == 5 and 'unknown service "no.such.Service"' in r.grpc_message()
    # Rich details travel in the trailer frame too (grpc-status-details-bin, base64).
    tr = r.trailers()
    if "grpc-status-details-bin" in tr:
        base64.b64decode(tr["grpc-status-details-bin"] + "==")
    # Not one message: INVALID_ARGUMENT, as over HTTP/2.
    r = grpc_web(c.srv.addr, CHECK, b"\xff\xff\xff")
    assert r.grpc_status() == 3, r.trailers()
    # A compressed body is refused by name, not decoded as garbage.
    r = grpc_web(c.srv.addr, CHECK, check_req(), headers=[("Content-Encoding", "gzip")])
    assert r.grpc_status() == 12 and "content-encoding gzip" in r.grpc_message(), r.trailers()
    # Plain gRPC needs HTTP/2's trailers: over HTTP/1.1 it is refused.
    h = H1(c.srv.addr)
    r = h.request("POST", CHECK, grpc_frame(check_req()), [("Content-Type", "application/grpc")])
    assert r.status == 415 and r.header("grpc-status") == "2", (r.status, r.headers)
    h.close()


def test_grpc_web_text(c):
    r = grpc_web(c.srv.addr, CHECK, check_req(), text=True)
    assert r.header("content-type") == "application/grpc-web-text+proto"
    base64.b64decode(r.body[:4])  # base64 on the wire
    assert r.grpc_status(text=True) == 0 and serving(r.messages(text=True)[0])
    # A body of concatenated padded chunks, as streaming clients send.
    body = frame(check_req("clue.v1.ClueService"))
    chunked = base64.b64encode(body[:4]) + base64.b64encode(body[4:])
    assert b"=" in chunked[:8]
    h = H1(c.srv.addr)
    r = h.request("POST", CHECK, chunked, [("Content-Type", "application/grpc-web-text")])
    assert r.grpc_status(text=True) == 0 and serving(r.messages(text=True)[0])
    # A binary request whose Accept asks for text gets a text reply (PROTOCOL-WEB.md).
    r = grpc_web(h, CHECK, check_req(), headers=[("Accept", "application/grpc-web-text")])
    assert r.header("content-type") == "application/grpc-web-text+proto"
    assert r.grpc_status(text=True) == 0 and serving(r.messages(text=True)[0])
    # Not base64, or cut inside a quantum: INVALID_ARGUMENT.
    r = h.request("POST", CHECK, b"!!!!", [("Content-Type", "application/grpc-web-text")])
    assert r.grpc_status(text=True) == 3, r.body
    r = h.request("POST", CHECK, base64.b64encode(body)[:-1], [("Content-Type", "application/grpc-web-text")])
    assert r.grpc_status(text=True) == 3, r.body
    h.close()


def test_chunked_request_body(c):
    body = frame(check_req())
    h = H1(c.srv.addr)
    raw = b"%x\r\n%s\r\n%x;ext=1\r\n%s\r\n0\r\nx-trailer: 1\r\n\r\n" % (3, body[:3], len(body) - 3, body[3:])
    h.send(encode("POST", CHECK, b"", [("Content-Type", "application/grpc-web+proto"),
                                        ("Transfer-Encoding", "chunked")]) + raw)
    r = h.read_reply()
    assert r.grpc_status() == 0 and serving(r.messages()[0])
    # And the connection goes on.
    assert grpc_web(h, CHECK, check_req()).grpc_status() == 0
    h.close()
    # A malformed chunk after a good one: the call ends with INVALID_ARGUMENT, then the close.
    h = H1(c.srv.addr)
    h.send(encode("POST", CHECK, b"", [("Content-Type", "application/grpc-web+proto"),
                                        ("Transfer-Encoding", "chunked")]) + b"3\r\n" + body[:3] + b"\r\nzz\r\n")
    r = h.read_reply()
    assert r.grpc_status() == 3 and "chunk" in r.grpc_message(), r.trailers()
    assert h.closed()
    h.close()


def test_chunked_trailer_section_bounded(c):
    """The trailer section after a chunked body is read up to 8 KiB: 7 KiB of it is served and
    the connection goes on; 10 KiB of lines, or one unended line of 20 KiB, ends the call with
    RESOURCE_EXHAUSTED (a bound, not a malformed request), then the connection closes."""
    body = frame(check_req())
    head = encode("POST", CHECK, b"", [("Content-Type", "application/grpc-web+proto"),
                                       ("Transfer-Encoding", "chunked")])
    chunk = b"%x\r\n%s\r\n0\r\n" % (len(body), body)
    h = H1(c.srv.addr)
    h.send(head + chunk + b"".join(b"x-t%03d: %s\r\n" % (i, b"v" * 90) for i in range(70)) + b"\r\n")
    assert h.read_reply().grpc_status() == 0
    assert grpc_web(h, CHECK, check_req()).grpc_status() == 0
    h.close()
    for tail in (b"".join(b"x-t%03d: %s\r\n" % (i, b"v" * 90) for i in range(100)) + b"\r\n",
                 b"x-t: " + b"v" * 20000):
        h = H1(c.srv.addr)
        h.send(head + chunk + tail)
        r = h.read_reply()
        assert r.grpc_status() == 8 and "trailer section too large" in r.grpc_message(), r.trailers()
        assert "malformed" not in r.grpc_message(), r.grpc_message()
        assert h.closed()
        h.close()
    assert grpc_web(c.srv.addr, CHECK, check_req()).grpc_status() == 0


def test_chunk_lines_strict(c):
    """A chunk-size line is exactly RFC 9112 7.1's chunk-size [ chunk-ext ] CRLF (extensions
    of token or quoted-string values, BWS around ";" and "="), and each trailer line a field
    line: anything else (a bare LF or CR, text after the size, a request where the trailer
    section should be) ends the call with INVALID_ARGUMENT and closes the connection, as a
    malformed head is refused. A front end that reads these differently ("funky chunks")
    cannot smuggle a request past clued."""
    body = frame(check_req())
    n = b"%x" % len(body)
    head = encode("POST", CHECK, b"", [("Content-Type", "application/grpc-web+proto"),
                                       ("Transfer-Encoding", "chunked")])
    good = [
        n + b"\r\n" + body + b"\r\n0\r\n\r\n",
        n.upper() + b";a=b;c\r\n" + body + b"\r\n0;x=y\r\n\r\n",
        n + b" ;\ta = b ;c=\"q\\\"x y;\" ; d\r\n" + body + b"\r\n00\r\n\r\n",
        n + b"\r\n" + body + b"\r\n0\r\nx-t: 1\r\ngrpc-timeout: 1n\r\nx-u:\r\n\r\n",
    ]
    for raw in good:
        h = H1(c.srv.addr)
        h.send(head + raw)
        r = h.read_reply()
        assert r.grpc_status() == 0, (raw, r.trailers())
        assert grpc_web(h, CHECK, check_req()).grpc_status() == 0, raw  # the connection goes on
        h.close()
    bad = [
        n + b";\nx\r\n" + body + b"\r\n0\r\n\r\n",  # a bare LF in an extension
        n + b" zzz\r\n" + body + b"\r\n0\r\n\r\n",  # text after the size
        n + b" \r\n" + body + b"\r\n0\r\n\r\n",  # whitespace and no extension
        n + b"zz\r\n" + body + b"\r\n0\r\n\r\n",
        n + b";\r\n" + body + b"\r\n0\r\n\r\n",  # an extension with no name
        n + b";=b\r\n" + body + b"\r\n0\r\n\r\n",
        n + b";a=\r\n" + body + b"\r\n0\r\n\r\n",  # no value
        n + b";a b\r\n" + body + b"\r\n0\r\n\r\n",
        n + b";a=\"b\r\n" + body + b"\r\n0\r\n\r\n",  # an unended quoted string
        n + b";a=\"b\"c\r\n" + body + b"\r\n0\r\n\r\n",
        n + b";a=b\rc\r\n" + body + b"\r\n0\r\n\r\n",  # a bare CR
        n + b"\r\n" + body + b"\r\n0\r\nx-t: 1\nx-u: 2\r\n\r\n",  # a bare LF in a trailer
        n + b"\r\n" + body + b"\r\n0\r\nx-t: a\x00b\r\n\r\n",
        n + b"\r\n" + body + b"\r\n0\r\n x-t: folded\r\n\r\n",
        n + b"\r\n" + body + b"\r\n0\r\n: v\r\n\r\n",
        n + b"\r\n" + body + b"\r\n0\r\nx-t 1\r\n\r\n",
        # The last CRLF left out: the request behind is no trailer section.
        n + b"\r\n" + body + b"\r\n0\r\nGET /config.json HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    for raw in bad:
        h = H1(c.srv.addr)
        h.send(head + raw)
        r = h.read_reply()
        assert r.grpc_status() == 3 and ("chunk" in r.grpc_message() or "trailer" in r.grpc_message()), \
            (raw, r.trailers())
        assert r.header("connection") == "close", (raw, r.headers)
        assert h.closed(), raw
        h.close()
    # A bare LF is refused when it comes, not once 64 bytes have come without a CRLF.
    h = H1(c.srv.addr)
    h.send(head + n + b";a\n")
    r = h.read_reply()
    assert r.grpc_status() == 3 and "chunk" in r.grpc_message(), r.trailers()
    assert h.closed()
    h.close()
    still_serving(c)


def test_chunked_body_to_a_bidi_stream(c):
    """Reflection (bidi) with a chunked body: its reply starts while the body still arrives.
    The body goes on being read, each message is answered, and the 0-chunk ends the call
    with OK; it used to stop being read, so the call waited for --max-unauth-stream-age."""
    refl = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
    msg = frame(b"\x3a\x00")  # list_services
    h = H1(c.srv.addr)
    h.send(encode("POST", refl, b"", [("Content-Type", "application/grpc-web+proto"),
                                       ("Transfer-Encoding", "chunked")]) + b"%x\r\n%s\r\n" % (len(msg), msg))
    seen = []

    def on_chunk(d):
        seen.append(d)
        if len(seen) == 1:  # the first answer: ask again
            h.send(b"%x\r\n%s\r\n" % (len(msg), msg))
        elif len(seen) == 2:  # the second: end the body
            h.send(b"0\r\n\r\n")

    t0 = time.time()
    r = h.read_reply(on_chunk=on_chunk)
    assert r.grpc_status() == 0, r.trailers()
    assert len(r.messages()) == 2 and b"grpc.health.v1.Health" in r.messages()[1]
    assert time.time() - t0 < 5
    assert grpc_web(h, CHECK, check_req()).grpc_status() == 0  # and the connection goes on
    h.close()


def test_expect_continue(c):
    h = H1(c.srv.addr)
    body = frame(check_req())
    h.send(encode("POST", CHECK, b"", [("Content-Type", "application/grpc-web+proto"),
                                        ("Content-Length", str(len(body))), ("Expect", "100-continue")]))
    line = h._line()
    assert line == b"HTTP/1.1 100 Continue", line
    assert h._line() == b""
    h.send(body)
    assert h.read_reply().grpc_status() == 0
    h.close()


# ---- over HTTP/2 -------------------------------------------------------------------------------


def test_unary_http2(c):
    h = RawH2(c.srv.addr)
    r = h.call(CHECK, grpc_frame(check_req()), content_type="application/grpc-web+proto")
    assert r.http_status == 200 and r.headers["content-type"] == "application/grpc-web+proto"
    assert r.trailers == {}, r.trailers  # no HTTP/2 trailers: they are the body's last frame
    fr = _frames(r.data)
    assert fr[0][0] == 0 and serving(fr[0][1])
    assert fr[-1][0] == 0x80 and b"grpc-status: 0\r\n" in fr[-1][1]
    r = h.call(CHECK, base64.b64encode(grpc_frame(check_req("nope"))), content_type="application/grpc-web-text")
    fr = _frames(base64.b64decode(r.data))
    assert fr[-1][0] == 0x80 and b"grpc-status: 5\r\n" in fr[-1][1], fr
    r = h.call(LIST_UNITS, grpc_frame(b""), content_type="application/grpc-web+proto")
    fr = _frames(r.data)
    assert len(fr) == 1 and b"grpc-status: 16\r\n" in fr[0][1]
    # Plain gRPC on the same connection is untouched.
    r = h.call(CHECK, grpc_frame(check_req()))
    assert r.grpc_status == 0 and r.headers["content-type"] == "application/grpc"
    h.close()


def _frames(b):
    out, i = [], 0
    while i < len(b):
        flag, n = struct.unpack(">BI", b[i:i + 5])
        out.append((flag, b[i + 5:i + 5 + n]))
        i += 5 + n
    return out


# ---- streaming -------------------------------------------------------------------------------


def test_watch_events_streams_over_http1(c):
    h = H1(c.srv.addr)
    req = S.audit_pb2.WatchEventsRequest(after_seq=0).SerializeToString()
    h.send(encode("POST", "/clue.v1.AuditService/WatchEvents", frame(req),
                  [("Content-Type", "application/grpc-web+proto"), ("Authorization", "Bearer " + c.token)]))
    got, buf = [], [b""]
    lock = threading.Condition()

    def on_chunk(d):
        with lock:
            buf[0] += d
            while len(buf[0]) >= 5:
                flag, n = struct.unpack(">BI", buf[0][:5])
                if len(buf[0]) < 5 + n:
                    break
                got.append((flag, buf[0][5:5 + n]))
                buf[0] = buf[0][5 + n:]
            lock.notify_all()

    def reader():
        try:
            h.read_reply(on_chunk=on_chunk)
        except (OSError, EOFError):
            pass  # closed by the test below

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    with lock:
        assert lock.wait_for(lambda: len(got) >= 3, 10), got  # the bootstrap's events, replayed
    ch = grpc.intercept_channel(grpc.insecure_channel(c.srv.addr), world._Auth(c.token))
    S.admin_pb2_grpc.AdminServiceStub(ch).CreateUnit(S.admin_pb2.CreateUnitRequest(
        kind=S.common_pb2.UNIT_KIND_ROOM, code="RW1", name="room w1"), timeout=10)
    ch.close()

    def live():
        for _, p in got:
            ev = S.common_pb2.AuditEvent()
            ev.ParseFromString(p)
            if ev.action == "unit.create" and "RW1" in ev.details_json:
                return True
        return False

    with lock:
        assert lock.wait_for(live, 10), "the live event did not arrive"
    assert all(f == 0 for f, _ in got)
    h.sock.shutdown(socket.SHUT_RDWR)
    t.join(5)
    h.close()


def test_watch_events_streams_over_http2(c):
    h = RawH2(c.srv.addr)
    sid = h.request("/clue.v1.AuditService/WatchEvents",
                    base64.b64encode(grpc_frame(S.audit_pb2.WatchEventsRequest(after_seq=0).SerializeToString())),
                    content_type="application/grpc-web-text",
                    headers=[("authorization", "Bearer " + c.token)])
    r = h.responses[sid]
    # Each message is its own padded base64 chunk: decode what has come as it comes.
    end = time.time() + 10
    msgs = []
    while len(msgs) < 3 and time.time() < end and not r.ended:
        h.pump()
        try:
            body = b64decode_stream(r.data)
        except ValueError:
            continue  # a read ended inside a chunk
        msgs, i = [], 0
        while len(body) - i >= 5:
            flag, n = struct.unpack(">BI", body[i:i + 5])
            if len(body) - i - 5 < n:
                break
            msgs.append((flag, body[i + 5:i + 5 + n]))
            i += 5 + n
    assert r.headers[":status"] == "200" and r.headers["content-type"] == "application/grpc-web-text+proto"
    assert len(msgs) >= 3 and all(f == 0 for f, _ in msgs), msgs
    assert not r.ended  # a live stream
    h.close()


def test_watch_events_ends_with_trailer_frame(c):
    # A stream the server ends (at shutdown, or at its age) closes the chunked body with the
    # trailer frame; here: an unauthenticated WatchEvents, refused at once.
    h = H1(c.srv.addr)
    r = h.request("POST", "/clue.v1.AuditService/WatchEvents",
                  frame(S.audit_pb2.WatchEventsRequest().SerializeToString()),
                  [("Content-Type", "application/grpc-web+proto")])
    assert r.grpc_status() == 16
    h.close()


def test_stream_deadline_ends_chunked_body_with_trailers(c):
    """A WatchEvents with grpc-timeout: its events, then DEADLINE_EXCEEDED as the last frame
    of the chunked body, and the connection serves on."""
    h = H1(c.srv.addr)
    t0 = time.time()
    r = h.request("POST", "/clue.v1.AuditService/WatchEvents",
                  frame(S.audit_pb2.WatchEventsRequest(after_seq=0).SerializeToString()),
                  [("Content-Type", "application/grpc-web+proto"), ("Authorization", "Bearer " + c.token),
                   ("Grpc-Timeout", "700m")])
    assert time.time() - t0 >= 0.6
    assert r.header("transfer-encoding") == "chunked" and r.chunks and len(r.chunks) >= 2
    assert len(r.messages()) >= 3
    assert r.grpc_status() == 4, r.trailers()
    assert grpc_web(h, CHECK, check_req()).grpc_status() == 0
    h.close()


def test_http10_and_connection_close(c):
    h = H1(c.srv.addr)
    h.send(b"GET /config.json HTTP/1.0\r\n\r\n")
    r = h.read_reply()
    assert r.status == 200 and r.body == c.files["config.json"] and r.header("connection") == "close"
    assert h.closed()
    h.close()
    h = H1(c.srv.addr)
    r = h.request("GET", "/config.json", headers=[("Connection", "close")])
    assert r.status == 200 and r.header("connection") == "close"
    assert h.closed()
    h.close()
    # A stream to an HTTP/1.0 client is not chunked: it ends with the connection.
    h = H1(c.srv.addr)
    body = frame(S.audit_pb2.WatchEventsRequest(after_seq=0).SerializeToString())
    h.send(b"POST /clue.v1.AuditService/WatchEvents HTTP/1.0\r\nContent-Type: application/grpc-web+proto\r\n"
           b"Authorization: Bearer " + c.token.encode() + b"\r\nGrpc-Timeout: 300m\r\n"
           b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    r = h.read_reply()
    assert "transfer-encoding" not in r.headers and "content-length" not in r.headers
    assert r.grpc_status() == 4 and len(r.messages()) >= 3
    h.close()


# ---- limits -----------------------------------------------------------------------------------


def test_over_limit_message(c):
    big = S.admin_pb2.CreateUnitRequest(kind=S.common_pb2.UNIT_KIND_ROOM, code="RBIG",
                                        name="x" * (MAX_MSG + 100)).SerializeToString()
    # An honest content-length over the limit: RESOURCE_EXHAUSTED before a byte of it is taken.
    h = H1(c.srv.addr)
    r = grpc_web(h, "/clue.v1.AdminService/CreateUnit", big, token=c.token)
    assert r.grpc_status() == 8 and "limit" in r.grpc_message(), r.trailers()
    # The body was read and dropped: the connection goes on.
    assert grpc_web(h, CHECK, check_req()).grpc_status() == 0
    h.close()
    # A frame that declares more than the limit inside a small body.
    lie = struct.pack(">BI", 0, MAX_MSG + 1) + b"x" * 10
    h = H1(c.srv.addr)
    r = h.request("POST", CHECK, lie, [("Content-Type", "application/grpc-web+proto")])
    assert r.grpc_status() == 8, r.trailers()
    h.close()
    # Chunked, growing past the limit: refused and closed.
    h = H1(c.srv.addr)
    h.send(encode("POST", "/clue.v1.AdminService/CreateUnit", b"",
                  [("Content-Type", "application/grpc-web+proto"), ("Transfer-Encoding", "chunked"),
                   ("Authorization", "Bearer " + c.token)]))
    # One message of the largest size, declared in its prefix, then more than it in chunks.
    h.send(b"%x\r\n" % 30005 + struct.pack(">BI", 0, MAX_MSG) + b"y" * 30000 + b"\r\n")
    for _ in range(3):
        h.send(b"%x\r\n" % 30000 + b"y" * 30000 + b"\r\n")
    r = h.read_reply()
    assert r.grpc_status() == 8, r.trailers()
    assert h.closed()
    h.close()
    # Far past the limit: refused and the connection closed, the body never read.
    h = H1(c.srv.addr)
    h.send(encode("POST", CHECK, b"", [("Content-Type", "application/grpc-web+proto"),
                                        ("Content-Length", str(64 << 20))]))
    r = h.read_reply()
    assert r.grpc_status() == 8 and r.header("connection") == "close"
    assert h.closed()
    h.close()
    still_serving(c)


def test_request_line_and_headers_bounded(c):
    cases = [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /" + b"a" * 9000, 414),  # not even finished
        (b"GET / HTTP/1.1\r\nX-Big: " + b"b" * (HEADER_BYTES + 100) + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(60)) + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\nHost: x\n\n", 400),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400),
        (b"garbage\r\n\r\n", 400),
    ]
    for raw, status in cases:
        h = H1(c.srv.addr)
        h.send(raw)
        r = h.read_reply()
        assert r.status == status, (raw[:60], r.status, r.body)
        assert r.header("connection") == "close"
        assert h.closed(), raw[:60]
        h.close()
    still_serving(c)


def test_host_required(c):
    """RFC 9112 3.2: an HTTP/1.1 request without Host, with two, or with one that is not
    uri-host [":" port] gets 400 and the connection closes. HTTP/1.0 may leave it out."""
    ct = [("Content-Type", "application/grpc-web+proto")]
    body = frame(check_req())
    no_host = (b"POST " + CHECK.encode() + b" HTTP/1.1\r\nContent-Type: application/grpc-web+proto\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body) + body)
    bad = [no_host, b"GET /config.json HTTP/1.1\r\n\r\n",
           encode("POST", CHECK, body, [("Host", "b")] + ct, host="a")]
    bad += [encode("POST", CHECK, body, ct, host=v) for v in (
        "a b", "a/b", "x@y", "x:8o", "x:80:80", "[::1", "[::1]x", "[]", "a%zz", "a%4", "a\tb", 'a"b')]
    bad.append(b"GET /config.json HTTP/1.0\r\nHost: a/b\r\n\r\n")
    for raw in bad:
        h = H1(c.srv.addr)
        h.send(raw)
        r = h.read_reply()
        assert r.status == 400 and r.reason == "Bad Request", (raw[:80], r.status, r.body)
        assert b"host" in r.body.lower() and r.header("connection") == "close", (raw[:80], r.body)
        assert h.closed(), raw[:80]
        h.close()
    for v in ("", "localhost", "localhost:8080", "example.com:", "127.0.0.1:1", "[::1]:443", "[v1.x]",
              "xn--bcher-kva.example", "a%41b", "a-b_c~d!$&'()*+,;=e"):
        h = H1(c.srv.addr)
        h.send(encode("POST", CHECK, body, ct, host=v))
        r = h.read_reply()
        assert r.status == 200 and r.grpc_status() == 0, (v, r.status, r.body)
        h.close()
    # HTTP/1.0 without Host is served.
    h = H1(c.srv.addr)
    h.send(b"GET /config.json HTTP/1.0\r\n\r\n")
    r = h.read_reply()
    assert r.status == 200 and r.body == c.files["config.json"]
    h.close()
    assert "HTTP/1.1 request refused (400): no Host header" in c.srv.output()


def test_pipelined_input_bounded(c):
    """A client that pipelines without reading replies: the server reads a bounded amount
    (its input buffer, then nothing while the reply before waits), answers in order once
    read, and never holds more than that."""
    one = encode("GET", "/config.json")
    s = socket.create_connection(tuple(c.srv.addr.rsplit(":", 1)[0:1]) + (int(c.srv.addr.rsplit(":", 1)[1]),))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setblocking(False)
    sent, want = 0, 64 << 20
    blob = one * 4096
    stalled_since = None
    while sent < want:
        try:
            sent += s.send(blob)
            stalled_since = None
        except BlockingIOError:
            if stalled_since is None:
                stalled_since = time.time()
            elif time.time() - stalled_since > 2:
                break
            time.sleep(0.05)
    assert sent < want, "the server read 64 MiB of pipelined requests without reading on"
    s.setblocking(True)
    s.settimeout(10)
    h = H1(None, sock=s)
    for _ in range(5):
        r = h.read_reply()
        assert r.status == 200 and r.body == c.files["config.json"]
    h.close()
    still_serving(c)


def test_slowloris_bounded(c):
    """Heads that never end are cut at --handshake-timeout (2s here), the first request's or
    a later one's, and a slow trickle does not extend it."""
    socks = []
    for i in range(30):
        s = socket.create_connection(tuple([c.srv.addr.rsplit(":", 1)[0], int(c.srv.addr.rsplit(":", 1)[1])]))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    h = H1(c.srv.addr)
    assert h.request("GET", "/config.json").status == 200
    h.send(b"GET / HTTP/1.1\r\nX: ")  # a second request's head, never finished
    t0 = time.time()
    for _ in range(5):  # a byte a second keeps nothing alive
        time.sleep(0.5)
        try:
            socks[0].sendall(b"a")
        except OSError:
            break
    for s in socks[1:]:
        s.settimeout(6)
        assert s.recv(100) == b"", "a slow head was not cut"
    assert h.closed(6)
    assert time.time() - t0 < 8
    for s in socks:
        s.close()
    h.close()
    # (A connection is logged once closed, so its client can see the close first.)
    harness.wait_for(lambda: "request head not complete within 2000 ms" in c.srv.output(), what="logged")
    harness.wait_for(lambda: "handshake timeout: no complete HTTP/1.1 request head" in c.srv.output(),
                     what="the first heads' timeout logged")
    still_serving(c)


def test_half_close_still_answered(c):
    # A call that needs the database: its reply comes after the half-close was read.
    h = H1(c.srv.addr)
    h.send(encode("POST", LIST_UNITS, frame(b""), [("Content-Type", "application/grpc-web+proto"),
                                                   ("Authorization", "Bearer " + c.token)]))
    h.sock.shutdown(socket.SHUT_WR)
    r = h.read_reply()
    assert r.grpc_status() == 0 and len(r.messages()) == 1
    assert h.closed()
    h.close()


def test_half_close_after_part_of_a_body_was_read(c):
    """The half-close comes after the body's first bytes were read (nothing of the request
    left in the input): the call still ends with INVALID_ARGUMENT at once, and the connection
    closes. It used to wait for the call's deadline or the connection's idle timeout, holding
    the call and the socket. Each kind: a public call, an authenticated one, a chunked body."""
    ct = ("Content-Type", "application/grpc-web+proto")
    body = frame(check_req())
    units = frame(S.admin_pb2.ListUnitsRequest().SerializeToString() + b"\x00\x00")  # (padding: cut before its end)
    cases = [
        (encode("POST", CHECK, b"", [ct, ("Content-Length", str(len(body)))]) + body[:3]),
        (encode("POST", CHECK, b"", [ct, ("Content-Length", str(len(body)))])),
        (encode("POST", LIST_UNITS, b"", [ct, ("Authorization", "Bearer " + c.token),
                                          ("Content-Length", str(len(units)))]) + units[:2]),
        (encode("POST", CHECK, b"", [ct, ("Transfer-Encoding", "chunked")]) + b"%x\r\n" % len(body) + body[:2]),
    ]
    for k, head in enumerate(cases):
        h = H1(c.srv.addr, timeout=10)
        h.send(head)
        time.sleep(0.3)  # read by the server before the EOF comes (else the EOF comes with it)
        h.sock.shutdown(socket.SHUT_WR)
        r = h.read_reply()
        assert r.grpc_status() == 3 and "half-closed" in r.grpc_message(), (k, r.trailers())
        assert h.closed(), k
        h.close()
    still_serving(c)


def test_pipelined_then_half_close(c):
    """Requests pipelined in one write, then a half-close (shutdown(SHUT_WR)): each request
    received whole is answered, in order, then the connection closes; one left unfinished
    behind them is dropped and logged. The EOF used to close the connection whenever it came
    while a reply was under way: of 50 requests, 30 were answered and the rest got nothing."""
    ct = ("Content-Type", "application/grpc-web+proto")
    units = S.admin_pb2.ListUnitsRequest().SerializeToString()

    def one(k):
        if k % 4 == 0:  # answered at once: an unknown method
            return encode("POST", "/p%d.S/M" % k, frame(b""), [ct]), ("unknown", "/p%d.S/M" % k)
        if k % 4 == 1:
            return encode("POST", CHECK, frame(check_req()), [ct]), ("ok", None)
        if k % 4 == 2:  # answered from the database
            return encode("POST", LIST_UNITS, frame(units), [ct, ("Authorization", "Bearer " + c.token)]), \
                ("ok", None)
        return encode("GET", "/config.json"), ("file", None)

    def run(n, tail=b""):
        reqs = [one(k) for k in range(n)]
        blob = b"".join(r for r, _ in reqs) + tail
        h = H1(c.srv.addr, timeout=20)

        def send():
            h.sock.sendall(blob)
            h.sock.shutdown(socket.SHUT_WR)
        t = threading.Thread(target=send)
        t.start()
        for k, (_, (kind, name)) in enumerate(reqs):
            try:
                r = h.read_reply()
            except EOFError:
                raise AssertionError(f"{n} pipelined requests: the connection closed after {k} replies")
            if kind == "file":
                assert r.status == 200 and r.body == c.files["config.json"], (k, r.status)
            elif kind == "unknown":
                assert r.grpc_status() == 12 and name in r.grpc_message(), (k, r.trailers())
            else:
                assert r.grpc_status() == 0, (k, r.trailers())
        t.join()
        return h, len(blob)

    for n in (50, 200):
        h, _ = run(n)
        assert h.closed() and h.buf == b"", h.buf[:100]
        h.close()
    # More than the 64 KiB input buffer holds: read as it drains, all answered.
    h, size = run(700)
    assert size > 64 * 1024
    assert h.closed() and h.buf == b""
    h.close()
    # An unfinished request behind whole ones: they are answered, it is dropped (logged).
    h, _ = run(10, b"GET /config.json HTTP/1.1\r\nHost: x\r\n")
    assert h.closed() and h.buf == b""
    h.close()
    harness.wait_for(lambda: "half-closed inside a request" in c.srv.output(), what="the drop logged")
    # A call whose body the half-close cut: it ends with INVALID_ARGUMENT, then the close.
    h, _ = run(6, encode("POST", CHECK, b"", [ct, ("Content-Length", "100")]) + frame(check_req()))
    r = h.read_reply()
    assert r.grpc_status() == 3 and "half-closed" in r.grpc_message(), r.trailers()
    assert h.closed()
    h.close()
    still_serving(c)


def test_fuzz_http1(c):
    """Mutated requests (bytes flipped, inserted, cut, repeated, spliced): every one gets an
    answer or a close, never a crash or a sanitizer report (checked when clued stops)."""
    import random

    # 705557959 once aborted clued: a message refused at once for its size, with the rest of
    # its body in the same read. It runs every time, beside a fresh seed.
    for seed in (705557959, int(os.environ.get("CLUED_FUZZ_SEED", random.randrange(1 << 30)))):
        print(f"seed {seed}", flush=True)
        fuzz_http1(c, random.Random(seed))
    still_serving(c)


def fuzz_http1(c, rnd):
    body = frame(check_req())
    seeds = [
        encode("POST", CHECK, body, [("Content-Type", "application/grpc-web+proto")]),
        encode("POST", CHECK, base64.b64encode(body), [("Content-Type", "application/grpc-web-text")]),
        encode("POST", LIST_UNITS, frame(b""), [("Content-Type", "application/grpc-web+proto"),
                                                ("Authorization", "Bearer " + c.token)]),
        encode("POST", CHECK, b"", [("Content-Type", "application/grpc-web+proto"), ("Transfer-Encoding", "chunked")])
        + b"3\r\n" + body[:3] + b"\r\n2\r\n" + body[3:] + b"\r\n0\r\n\r\n",
        encode("GET", "/assets/index-B3xk9aQ2.js"),
        encode("OPTIONS", CHECK, b"", [("Origin", ORIGIN), ("Access-Control-Request-Method", "POST")]),
    ]
    for i in range(300):
        b = bytearray(rnd.choice(seeds))
        for _ in range(rnd.randint(1, 4)):
            if not b:
                b = bytearray(rnd.choice(seeds))
            op, at = rnd.randrange(6), rnd.randrange(len(b))
            if op == 0:
                b[at] = rnd.randrange(256)
            elif op == 1:
                b[at:at] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 8)))
            elif op == 2:
                del b[at:at + rnd.randint(1, 16)]
            elif op == 3:
                b[at:at] = b[at:at + rnd.randint(1, 64)] * rnd.randint(1, 50)
            elif op == 4:
                b = b[:at]
            else:
                b += rnd.choice(seeds)
        s = socket.create_connection(tuple([c.srv.addr.rsplit(":", 1)[0], int(c.srv.addr.rsplit(":", 1)[1])]))
        try:
            s.sendall(bytes(b) or b"x")
            s.settimeout(0.05)
            s.recv(65536)
        except (socket.timeout, ConnectionResetError, BrokenPipeError):
            pass
        s.close()


# ---- CORS --------------------------------------------------------------------------------------


def test_cors_preflight_allowed(c):
    h = H1(c.srv.addr)
    r = h.request("OPTIONS", CHECK, headers=[
        ("Origin", ORIGIN), ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "authorization,content-type,x-grpc-web,x-user-agent")])
    assert r.status == 204
    assert r.header("access-control-allow-origin") == ORIGIN
    assert {x.strip() for x in r.header("access-control-allow-methods").split(",")} == {"POST", "OPTIONS"}
    assert r.header("access-control-allow-credentials") == "true"  # Authorization may be sent
    allowed = {x.strip() for x in r.header("access-control-allow-headers").split(",")}
    assert {"authorization", "content-type", "x-grpc-web", "x-user-agent"} <= allowed
    exposed = {x.strip() for x in r.header("access-control-expose-headers").split(",")}
    assert exposed == {"grpc-status", "grpc-message", "grpc-status-details-bin"}
    assert "content-length" not in r.headers
    # The call itself names the origin and exposes the status headers.
    r = grpc_web(h, CHECK, check_req(), headers=[("Origin", ORIGIN)])
    assert r.grpc_status() == 0
    assert r.header("access-control-allow-origin") == ORIGIN
    assert "grpc-status" in r.header("access-control-expose-headers")
    # Over HTTP/2 too.
    h2c = RawH2(c.srv.addr)
    r2 = h2c.call(CHECK, b"", method="OPTIONS", content_type=None, headers=[
        ("origin", "http://localhost:5173"), ("access-control-request-method", "POST")])
    assert r2.http_status == 204 and r2.headers["access-control-allow-origin"] == "http://localhost:5173"
    h2c.close()
    h.close()


def test_cors_refused_origins(c):
    for origin in ("https://evil.example", ORIGIN + "/", "https://console.example", "null",
                   ORIGIN.upper()):
        h = H1(c.srv.addr)
        r = h.request("OPTIONS", CHECK, headers=[("Origin", origin), ("Access-Control-Request-Method", "POST")])
        assert r.status == 403, (origin, r.status)
        assert not any(k.startswith("access-control-") for k in r.headers), (origin, r.headers)
        r = grpc_web(h, CHECK, check_req(), headers=[("Origin", origin)])
        assert r.grpc_status() == 0  # served (CORS is the browser's to enforce) but unnamed
        assert not any(k.startswith("access-control-") for k in r.headers), (origin, r.headers)
        h.close()


# ---- the console's files --------------------------------------------------------------------


def test_static_files(c):
    h = H1(c.srv.addr)
    cases = [
        ("/", "index.html", "text/html; charset=utf-8", "no-cache"),
        ("/index.html", "index.html", "text/html; charset=utf-8", "no-cache"),
        ("/assets/index-B3xk9aQ2.js", None, "text/javascript; charset=utf-8", "public, max-age=31536000, immutable"),
        ("/assets/index-Df81kLm0.css", None, "text/css; charset=utf-8", "public, max-age=31536000, immutable"),
        ("/assets/logo.svg", None, "image/svg+xml", "no-cache"),
        ("/favicon.ico", None, "image/x-icon", "no-cache"),
        ("/config.json?v=2", "config.json", "application/json", "no-cache"),
        ("/queue", "index.html", "text/html; charset=utf-8", "no-cache"),  # the SPA's routes
        ("/clues/42/history", "index.html", "text/html; charset=utf-8", "no-cache"),
        ("/assets/alias.js", "assets/index-B3xk9aQ2.js", "text/javascript; charset=utf-8", "no-cache"),
    ]
    for path, name, ctype, cache in cases:
        name = name or path.lstrip("/")
        r = h.request("GET", path)
        assert r.status == 200, (path, r.status)
        assert r.body == c.files[name], path
        assert r.header("content-type") == ctype, (path, r.headers)
        assert r.header("cache-control") == cache, (path, r.headers)
        assert r.header("x-content-type-options") == "nosniff"
        assert r.header("x-frame-options") == "DENY", (path, r.headers)  # no page may frame the console
        assert "frame-ancestors 'none'" in r.header("content-security-policy"), (path, r.headers)
    # Revalidation: the entity tag of a file answers If-None-Match with 304 and no body.
    r = h.request("GET", "/")
    etag = r.header("etag")
    assert etag and etag.startswith('"'), r.headers
    r = h.request("GET", "/", headers=[("If-None-Match", etag)])
    assert r.status == 304 and r.body == b"" and r.header("etag") == etag
    assert r.header("cache-control") == "no-cache" and "content-length" not in r.headers
    assert h.request("GET", "/", headers=[("If-None-Match", 'W/' + etag + ', "x"')]).status == 304
    assert h.request("GET", "/", headers=[("If-None-Match", '"other"')]).status == 200
    r = h.request("HEAD", "/assets/index-B3xk9aQ2.js")
    assert r.status == 200 and int(r.header("content-length")) == len(c.files["assets/index-B3xk9aQ2.js"])
    assert h.request("GET", "/config.json").body == c.files["config.json"]  # HEAD sent no body
    assert h.request("GET", "/assets/missing-Zz99Yy88.js").status == 404
    assert h.request("GET", "/nothing.png").status == 404
    assert h.request("DELETE", "/index.html").status == 405
    h.close()
    # Over HTTP/2 as well.
    h2c = RawH2(c.srv.addr)
    r = h2c.call("/assets/index-B3xk9aQ2.js", b"", method="GET", content_type=None)
    assert r.http_status == 200 and r.data == c.files["assets/index-B3xk9aQ2.js"]
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    h2c.close()


def test_reason_phrases(c):
    """Every status the HTTP/1.1 side sends has its reason phrase (a 304 went out as
    "304 Unknown")."""
    r = H1(c.srv.addr).request("GET", "/")
    etag = r.header("etag")
    pre = [("Origin", ORIGIN), ("Access-Control-Request-Method", "POST")]
    cases = [
        (encode("GET", "/config.json"), 200, "OK"),
        (encode("OPTIONS", CHECK, headers=pre), 204, "No Content"),
        (encode("GET", "/", headers=[("If-None-Match", etag)]), 304, "Not Modified"),
        (encode("GET", "/a%2fb"), 400, "Bad Request"),
        (encode("OPTIONS", CHECK, headers=[("Origin", "https://evil.example")]), 403, "Forbidden"),
        (encode("GET", "/nothing.png"), 404, "Not Found"),
        (encode("DELETE", "/"), 405, "Method Not Allowed"),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "URI Too Long"),
        (encode("POST", CHECK, b"x", [("Content-Type", "text/plain")]), 415, "Unsupported Media Type"),
        (encode("GET", "/", headers=[("X-Big", "b" * (HEADER_BYTES + 100))]), 431,
         "Request Header Fields Too Large"),
        (encode("GET", "/huge.bin"), 500, "Internal Server Error"),
        (encode("POST", "/", headers=[("Transfer-Encoding", "gzip")]), 501, "Not Implemented"),
        (b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505, "HTTP Version Not Supported"),
    ]
    for raw, status, reason in cases:
        h = H1(c.srv.addr)
        h.send(raw)
        r = h.read_reply(head=raw.startswith(b"HEAD"))
        assert (r.status, r.reason) == (status, reason), (raw[:60], r.status, r.reason)
        h.close()


def test_static_traversal_refused(c):
    bad = ["/../etc/passwd", "/assets/../../etc/passwd", "/%2e%2e/etc/passwd", "/assets/%2e%2e/index.html",
           "/assets%2findex-B3xk9aQ2.js", "/assets%2Findex-B3xk9aQ2.js", "/a%5cb", "/index.html%00.js",
           "/%00", "/assets\\index-B3xk9aQ2.js", "//etc/passwd", "/./index.html", "/assets/",
           "/%zz", "*", "http://x/../etc/passwd", "http://x/%2e%2e/etc/passwd", "http://x/%00"]
    for path in bad:
        h = H1(c.srv.addr)
        r = h.request("GET", path)
        assert r.status in (400, 404), (path, r.status)
        assert b"root:" not in r.body, path
        h.close()
    # A refused path is logged without its query: a token pasted into a link stays out of the log.
    h = H1(c.srv.addr)
    r = h.request("GET", "/a//b?token=ct_SECRET456#x")
    assert r.status == 400, r.status
    h.close()
    harness.wait_for(lambda: "refused request path /a//b" in c.srv.output(), what="the refusal logged")
    assert "SECRET456" not in c.srv.output()
    for path in ("/passwd.txt", "/fifo.txt"):  # a symlink out of the directory; not a file
        h = H1(c.srv.addr)
        r = h.request("GET", path)
        assert r.status == 404 and b"root:" not in r.body, (path, r.status)
        h.close()
    for path in ("/.env", "/.git/config", "/assets/.x.js.swp", "/.git"):  # hidden names: as missing
        h = H1(c.srv.addr)
        r = h.request("GET", path)
        assert r.status == 404 and b"SECRET" not in r.body, (path, r.status)
        h.close()
    h = H1(c.srv.addr)
    r = h.request("GET", "/.well-known/security.txt")
    assert r.status == 200 and r.body == b"Contact: x\n", (r.status, r.body)
    h.close()
    h = H1(c.srv.addr)
    r = h.request("GET", "/huge.bin")
    assert r.status == 500 and len(r.body) < 100  # over the size bound: not read
    h.close()
    still_serving(c)


def test_console_off_without_flag(c):
    with harness.Clued(harness.test_database_url()) as srv:
        srv.start()
        h = H1(srv.addr)
        assert h.request("GET", "/").status == 404
        r = h.request("OPTIONS", CHECK, headers=[("Origin", ORIGIN), ("Access-Control-Request-Method", "POST")])
        assert r.status == 403 and "access-control-allow-origin" not in r.headers
        r = grpc_web(h, CHECK, check_req())
        assert r.grpc_status() == 0
        h.close()
        # HTTP/2 clients see what they saw before: GET is not a gRPC call.
        h2c = RawH2(srv.addr)
        r = h2c.call("/", b"", method="GET", content_type=None)
        assert r.http_status == 405 and r.grpc_status == 12
        h2c.close()


def test_idle_and_write_timeouts_cover_http1(c):
    """--idle-timeout closes a kept-alive HTTP/1.1 connection with no request; --write-timeout
    closes one whose peer stops reading a reply (a 12 MiB file here)."""
    d = os.path.join(c.dir, "big")
    os.makedirs(d)
    with open(os.path.join(d, "big.bin"), "wb") as f:
        f.write(os.urandom(12 << 20))
    with harness.Clued(harness.test_database_url(), args=[
            "--console-dir", d, "--idle-timeout", "2s", "--write-timeout", "2s"]) as srv:
        srv.start()
        h = H1(srv.addr)
        assert h.request("GET", "/nothing.txt").status == 404
        t0 = time.time()
        assert h.closed(8), "an idle HTTP/1.1 connection was kept past --idle-timeout"
        assert time.time() - t0 >= 1
        h.close()
        s = socket.create_connection(tuple([srv.addr.rsplit(":", 1)[0], int(srv.addr.rsplit(":", 1)[1])]))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(encode("GET", "/big.bin"))
        harness.wait_for(lambda: "write timeout" in srv.output(), timeout=15, what="the write timeout")
        s.close()
        out = srv.output()
        assert "idle for" in out and "(--idle-timeout): closing" in out


def test_bad_flags(c):
    srv = harness.Clued(c.url)
    for args, word in ((["--web-origin", "https://x.example/path"], "--web-origin"),
                       (["--web-origin", "ftp://x"], "--web-origin"),
                       (["--web-origin", "https://a\r\nx: y"], "--web-origin"),
                       (["--console-dir", "/no/such/dir"], "--console-dir")):
        r = srv.run("serve", "--listen", "127.0.0.1:0", *args, check=False)
        assert r.returncode != 0 and word in r.stderr, (args, r.stderr)


def test_absolute_form_targets(c):
    """RFC 9112 3.2.2: a server must accept a target in absolute-form (as proxies send it): the
    call or file is its path, and its authority stands for Host (which is then ignored)."""
    body = frame(check_req())
    ct = b"Content-Type: application/grpc-web+proto\r\nContent-Length: %d\r\n" % len(body)
    for target, host in ((f"http://{c.srv.addr}{CHECK}", b"Host: elsewhere\r\n"),
                         (f"HTTP://{c.srv.addr}{CHECK}", b""),
                         (f"https://example.com{CHECK}", b"Host: a\r\n")):
        h = H1(c.srv.addr)
        h.send(b"POST " + target.encode() + b" HTTP/1.1\r\n" + host + ct + b"\r\n" + body)
        r = h.read_reply()
        assert r.status == 200 and r.grpc_status() == 0, (target, r.status, r.body)
        h.close()
    for target, want in ((f"http://{c.srv.addr}/config.json", c.files["config.json"]),
                         (f"http://{c.srv.addr}", None), (f"http://{c.srv.addr}?x=1", None)):
        h = H1(c.srv.addr)
        h.send(b"GET " + target.encode() + b" HTTP/1.1\r\n\r\n")
        r = h.read_reply()
        assert r.status == 200 and (want is None or r.body == want), (target, r.status)
        h.close()
    # No authority, or an authority that is no host: 400.
    for target in ("http:///config.json", "http://a%zz/", "http://x@y/config.json"):
        h = H1(c.srv.addr)
        h.send(b"GET " + target.encode() + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        r = h.read_reply()
        assert r.status == 400, (target, r.status)
        h.close()


def test_redeploy_with_kept_times_changes_the_etag(c):
    """A deploy that keeps a file's length and modification time (rsync -a, cp -p, a build with
    fixed times; the console's index.html has the same length in every build) still gives it a
    new entity tag: a browser revalidating its old copy gets the new page, not 304."""
    path = os.path.join(c.dir, "www", "config.json")
    old = c.files["config.json"]
    h = H1(c.srv.addr)
    r = h.request("GET", "/config.json")
    assert r.status == 200 and r.body == old
    etag = r.header("etag")
    st = os.stat(path)
    new = old.replace(b"{}", b"[]")  # another body, as long
    assert new != old and len(new) == len(old)
    try:
        with open(path, "r+b") as f:  # in place, as cp -p does: the same inode
            f.write(new)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert os.stat(path).st_mtime_ns == st.st_mtime_ns and os.stat(path).st_size == st.st_size
        r = h.request("GET", "/config.json", headers=[("If-None-Match", etag)])
        assert r.status == 200 and r.body == new, (r.status, r.body)
        assert r.header("etag") != etag
        r = h.request("HEAD", "/config.json")
        assert r.status == 200 and r.header("etag") not in (None, etag)
    finally:
        with open(path, "wb") as f:
            f.write(old)
    h.close()


if __name__ == "__main__":
    harness.run_tests(globals(), setup, teardown)
