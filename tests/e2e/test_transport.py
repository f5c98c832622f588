"""The gRPC transport against the real clued, driven by Python grpcio and raw HTTP/2."""

import os
import socket
import struct
import subprocess
import sys
import time

import grpc

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
import world  # noqa: E402
from harness import expect_status  # noqa: E402
from rawh2 import RawH2, grpc_frame  # noqa: E402

S = harness.stubs()
CHECK = "/grpc.health.v1.Health/Check"


def check_req(service=""):
    return S.health_pb2.HealthCheckRequest(service=service)


class Ctx:
    pass


def setup():
    c = Ctx()
    c.srv = harness.Clued(harness.test_database_url()).start()
    c.ch = grpc.insecure_channel(c.srv.addr)
    c.health = S.health_pb2_grpc.HealthStub(c.ch)
    return c


def teardown(c):
    c.ch.close()
    c.srv.stop()


def still_serving(c):
    assert c.srv.alive()
    assert c.health.Check(check_req(), timeout=5).status == S.health_pb2.HealthCheckResponse.SERVING


def test_check_serving(c):
    r = c.health.Check(check_req(), timeout=5)
    assert r.status == S.health_pb2.HealthCheckResponse.SERVING
    r = c.health.Check(check_req("clue.v1.ClueService"), timeout=5)
    assert r.status == S.health_pb2.HealthCheckResponse.SERVING
    msg = expect_status(grpc.StatusCode.NOT_FOUND, c.health.Check, check_req("no.such.Service"), timeout=5)
    assert "no.such.Service" in msg


def test_unknown_method(c):
    for path in ("/clue.v1.ClueService/NoSuchMethod", "/no.Such/Method", "/garbage"):
        call = c.ch.unary_unary(path)
        msg = expect_status(grpc.StatusCode.UNIMPLEMENTED, call, b"", timeout=5)
        assert path in msg, msg
    still_serving(c)


def test_oversized_request(c):
    # A method that needs no token takes requests of at most 64 KiB.
    big = check_req("x" * (5 << 20))
    msg = expect_status(grpc.StatusCode.RESOURCE_EXHAUSTED, c.health.Check, big, timeout=30)
    assert "65536" in msg, msg
    # Any other, --max-message-bytes (4 MiB).
    token = world.bootstrap_token(c.srv)
    call = c.ch.unary_unary("/clue.v1.AdminService/ListUnits")
    msg = expect_status(grpc.StatusCode.RESOURCE_EXHAUSTED, call, b"\x0a\x00" * (5 << 19), timeout=30,
                        metadata=[("authorization", "Bearer " + token)])
    assert "4194304" in msg, msg
    still_serving(c)


def test_invalid_protobuf(c):
    call = c.ch.unary_unary(CHECK)
    # Field 1 declared as a 100-byte string but only 2 bytes follow.
    msg = expect_status(grpc.StatusCode.INVALID_ARGUMENT, call, b"\x0a\x64ab", timeout=5)
    assert "HealthCheckRequest" in msg, msg
    still_serving(c)


def test_compressed_request_refused(c):
    msg = expect_status(grpc.StatusCode.UNIMPLEMENTED, c.health.Check, check_req("x" * 100), timeout=5,
                        compression=grpc.Compression.Gzip)
    assert "gzip" in msg, msg
    still_serving(c)


def test_many_calls_over_many_channels(c):
    channels = [grpc.insecure_channel(c.srv.addr) for _ in range(20)]
    stubs = [S.health_pb2_grpc.HealthStub(ch) for ch in channels]
    futs = [stubs[i % 20].Check.future(check_req(), timeout=30) for i in range(500)]
    ok = sum(1 for f in futs if f.result().status == S.health_pb2.HealthCheckResponse.SERVING)
    for ch in channels:
        ch.close()
    assert ok == 500, ok


def test_watch_deadline(c):
    got = []
    it = c.health.Watch(check_req(), timeout=0.2)
    try:
        for m in it:
            got.append(m.status)
        raise AssertionError("watch ended without an error")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e.code()
    assert got == [S.health_pb2.HealthCheckResponse.SERVING], got
    still_serving(c)


def test_server_side_deadline(c):
    # The server enforces grpc-timeout itself: a raw client that never cancels still gets
    # DEADLINE_EXCEEDED from the server.
    h = RawH2(c.srv.addr)
    t0 = time.time()
    r = h.call("/grpc.health.v1.Health/Watch", grpc_frame(b""), headers=[("grpc-timeout", "300m")])
    assert r.grpc_status == 4, (r.headers, r.trailers)
    assert 0.25 < time.time() - t0 < 5
    assert r.data.startswith(b"\x00\x00\x00\x00\x02\x08\x01"), r.data  # one SERVING message
    r = h.call(CHECK, grpc_frame(b""), headers=[("grpc-timeout", "12x")])
    assert r.grpc_status == 3 and "grpc-timeout" in r.grpc_message, r.trailers
    h.close()


def test_watch_cancel_frees_call(c):
    it = c.health.Watch(check_req(), timeout=30)
    assert next(it).status == S.health_pb2.HealthCheckResponse.SERVING
    it.cancel()
    harness.wait_for(lambda: "Health/Watch: cancelled by the peer" in c.srv.output(), what="cancel logged")
    still_serving(c)


def test_content_type_and_method(c):
    h = RawH2(c.srv.addr)
    r = h.call(CHECK, grpc_frame(b""), content_type="application/json")
    assert r.http_status == 415, r.headers
    r = h.call(CHECK, grpc_frame(b""), content_type=None)
    assert r.http_status == 415, r.headers
    r = h.call(CHECK, b"", method="GET", content_type="application/grpc")
    assert r.http_status == 405, r.headers
    for ct in ("application/grpc", "application/grpc+proto", "application/grpc;charset=utf-8"):
        r = h.call(CHECK, grpc_frame(b""), content_type=ct)
        assert r.http_status == 200 and r.grpc_status == 0, (ct, r.headers, r.trailers)
        assert r.headers["content-type"] == "application/grpc"
    h.close()
    still_serving(c)


def test_framing_errors_on_stream(c):
    h = RawH2(c.srv.addr)
    # Truncated message: prefix says 10 bytes, 3 arrive, then END_STREAM.
    r = h.call(CHECK, b"\x00\x00\x00\x00\x0aabc")
    assert r.grpc_status == 3 and "truncated" in r.grpc_message, r.trailers
    # Truncated prefix.
    r = h.call(CHECK, b"\x00\x00")
    assert r.grpc_status == 3 and "truncated" in r.grpc_message, r.trailers
    # No message at all.
    r = h.call(CHECK, b"")
    assert r.grpc_status == 3 and "missing" in r.grpc_message, (r.headers, r.trailers)
    # Two messages for a unary method.
    r = h.call(CHECK, grpc_frame(b"") + grpc_frame(b""))
    assert r.grpc_status == 3, r.trailers
    # Compressed flag without an encoding, and a bad flag byte.
    r = h.call(CHECK, grpc_frame(b"", compressed=1))
    assert r.grpc_status == 12, r.trailers
    assert r.headers.get("grpc-accept-encoding") == "identity", r.headers
    r = h.call(CHECK, grpc_frame(b"", compressed=7))
    assert r.grpc_status == 13, r.trailers
    # Declared length over the limit, without sending the body.
    r = h.call(CHECK, struct.pack(">BI", 0, 64 << 20))
    assert r.grpc_status == 8, r.trailers
    # The same connection still serves a good call, split into 1-byte DATA frames.
    sid = h.request(CHECK, end=False)
    for b in grpc_frame(b""):
        h.conn.send_data(sid, bytes([b]))
        h.flush()
    h.conn.end_stream(sid)
    h.flush()
    r = h.wait(sid)
    assert r.grpc_status == 0 and r.data == b"\x00\x00\x00\x00\x02\x08\x01", (r.trailers, r.data)
    h.close()
    still_serving(c)


def test_percent_encoded_message(c):
    h = RawH2(c.srv.addr)
    r = h.call(CHECK, grpc_frame(check_req("线索 100%").SerializeToString()))
    assert r.grpc_status == 5
    raw = r.trailers.get("grpc-message", r.headers.get("grpc-message"))
    assert all(0x20 <= ord(ch) <= 0x7E for ch in raw), raw
    assert r.grpc_message == 'unknown service "线索 100%"', r.grpc_message
    h.close()
    # grpcio decodes it too.
    msg = expect_status(grpc.StatusCode.NOT_FOUND, c.health.Check, check_req("线索"), timeout=5)
    assert "线索" in msg


def raw_socket(addr):
    host, port = addr.rsplit(":", 1)
    return socket.create_connection((host.strip("[]"), int(port)), timeout=10)


def read_until_closed(s, limit=5.0):
    s.settimeout(limit)
    data = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return data, True
            data += d
    except socket.timeout:
        return data, False
    except ConnectionResetError:
        return data, True


def test_garbage_preface(c):
    s = raw_socket(c.srv.addr)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\x00" * 100)
    _, closed = read_until_closed(s)
    assert closed, "server kept a connection that sent garbage"
    s.close()
    still_serving(c)


def test_truncated_frame(c):
    s = raw_socket(c.srv.addr)
    # Valid preface and SETTINGS, then a frame header announcing 1000 bytes of HEADERS, 10 sent.
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    s.sendall(struct.pack(">I", 1000)[1:] + b"\x01\x04\x00\x00\x00\x01" + b"\x00" * 10)
    s.shutdown(socket.SHUT_WR)
    _, closed = read_until_closed(s)
    assert closed
    s.close()
    # A frame violating the protocol (DATA on stream 0) gets GOAWAY and a close.
    s = raw_socket(c.srv.addr)
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    s.sendall(b"\x00\x00\x02\x00\x00\x00\x00\x00\x00ab")
    data, closed = read_until_closed(s)
    assert closed
    assert b"\x07\x00\x00\x00\x00\x00" in data, "no GOAWAY frame before close"
    s.close()
    still_serving(c)


def test_drop_mid_message(c):
    h = RawH2(c.srv.addr)
    sid = h.request(CHECK, end=False)
    h.conn.send_data(sid, struct.pack(">BI", 0, 1000) + b"x" * 100)
    h.flush()
    time.sleep(0.1)
    h.sock.close()
    harness.wait_for(lambda: "peer closed the connection" in c.srv.output() or "reset" in c.srv.output(),
                     what="drop logged")
    still_serving(c)


def test_rst_stream_mid_request(c):
    h = RawH2(c.srv.addr)
    sid = h.request(CHECK, end=False)
    h.conn.send_data(sid, struct.pack(">BI", 0, 1000) + b"x" * 10)
    h.conn.reset_stream(sid)
    h.flush()
    r = h.call(CHECK, grpc_frame(b""))
    assert r.grpc_status == 0
    h.close()


def test_thousand_connections(c):
    import selectors

    import h2.connection
    import h2.config
    import h2.events

    n = 1000
    sel = selectors.DefaultSelector()
    conns = []
    body = grpc_frame(b"")
    for i in range(n):
        s = raw_socket(c.srv.addr)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":path", CHECK),
                              (":authority", "t"), ("content-type", "application/grpc"), ("te", "trailers")])
        conn.send_data(1, body, end_stream=True)
        s.sendall(conn.data_to_send())
        s.setblocking(False)
        st = {"s": s, "conn": conn, "status": None}
        conns.append(st)
        sel.register(s, selectors.EVENT_READ, st)
    # All 1,000 are open at once before any is read.
    assert c.srv.alive()
    done = 0
    deadline = time.time() + 60
    while done < n and time.time() < deadline:
        for key, _ in sel.select(timeout=1):
            st = key.data
            try:
                data = st["s"].recv(65536)
            except BlockingIOError:
                continue
            if not data:
                sel.unregister(st["s"])
                continue
            for ev in st["conn"].receive_data(data):
                if isinstance(ev, h2.events.TrailersReceived):
                    st["status"] = dict(ev.headers).get(b"grpc-status")
                    done += 1
            out = st["conn"].data_to_send()
            if out:
                st["s"].sendall(out)
    ok = sum(1 for st in conns if st["status"] == b"0")
    for st in conns:
        st["s"].close()
    assert ok == n, f"{ok} of {n} connections got OK"
    still_serving(c)


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_ipv6_listen_and_port_zero(c):
    if not ipv6_loopback():
        print("SKIP test_ipv6_listen_and_port_zero: no IPv6 loopback on this machine")
        return
    srv = harness.Clued(harness.test_database_url()).start(listen="[::1]:0")
    try:
        assert srv.addr.startswith("[::1]:") and not srv.addr.endswith(":0"), srv.addr
        with grpc.insecure_channel(srv.addr) as ch:
            r = S.health_pb2_grpc.HealthStub(ch).Check(check_req(), timeout=5)
            assert r.status == S.health_pb2.HealthCheckResponse.SERVING
        out = harness.cluectl("--server", srv.addr, "health", check=0).stdout
        assert out.strip() == "SERVING", out
    finally:
        srv.stop()


def test_bad_listen_address(c):
    """A bad --listen or --metrics-listen address is a usage error (exit 2), said before any
    database check (here the database cannot be reached), and the message says what is taken:
    an address, not a name. Before, it was found after the database checks, with exit 1, and
    the message asked for "host:port", which localhost:0 is."""
    unreachable = "postgresql://clued@127.0.0.1:1/nowhere?connect_timeout=2"
    for flag in ("--listen", "--metrics-listen"):
        for addr in ("nonsense", "127.0.0.1:99999", "[::1", "300.1.1.1:5", "127.0.0.1:", "localhost:0"):
            args = ["--listen", "127.0.0.1:0"] if flag == "--metrics-listen" else []
            r = subprocess.run([harness.CLUED, "serve", *args, flag, addr, "--database-url", unreachable],
                               capture_output=True, text=True, timeout=60)
            harness._assert_clean(r.stderr)
            assert r.returncode == 2, (flag, addr, r.returncode, r.stderr)
            assert "listen address" in r.stderr and addr in r.stderr, r.stderr
            assert "an address, not a name" in r.stderr, r.stderr
    out = harness.Clued(None).run("help").stdout
    assert "host:port" not in out and "IPv4:port or [IPv6]:port" in out, out


def test_busy_listen_port(c):
    """A --listen port another socket holds: serve says so and exits 1, its event loop closed
    clean. Before, the listener's close never ran and the test build's LeakSanitizer reported
    the loop's memory (exit 66)."""
    srv = harness.Clued(harness.test_database_url())
    srv.run("migrate")
    busy = socket.socket()
    try:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        addr = "127.0.0.1:%d" % busy.getsockname()[1]
        r = srv.run("serve", "--listen", addr, check=False)  # fails on a sanitizer report
        assert r.returncode == 1, (r.returncode, r.stderr)
        assert f"cannot listen on {addr}" in r.stderr, r.stderr
    finally:
        busy.close()


if __name__ == "__main__":
    harness.run_tests(globals(), setup, teardown)
