"""--metrics-listen: GET /metrics in the Prometheus text exposition format.

- promtool check metrics accepts the output (Debian's prometheus package);
- the go-grpc-prometheus call families count what grpcio did: started, handled by code,
  handling-time histogram, messages received and sent, by method;
- pool, queue, query latency, connections, streams, watchers, tree size and process figures
  are there;
- a path that names no method counts as "unknown", not as a new label value;
- no token, user or unit appears in the output;
- the endpoint is bounded: a head over 8 KiB gets 431, other paths 404, other methods 405,
  an HTTP/1.1 request without one Host field 400,
  a client that sends nothing is closed after the timeout, connections past the cap close
  one of the address holding the most, one address holds 4 at most, so neither idle
  connections nor unread answers from another address keep a scraper out, and the gRPC port
  keeps serving through all of it;
- a non-loopback address is refused without --insecure-cleartext;
- the request bytes kept (--max-inbound) count an unfinished upload and are back at zero
  once every call has ended, whatever ended it.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import new_request_id  # noqa: E402
import world  # noqa: E402

S = harness.stubs()
pb = S.clue_pb2


class MetricsClued(harness.Clued):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.metrics_addr = None

    def _take(self, line):
        m = re.search(r"metrics on http://(\S+)/metrics", line)
        if m:
            self.metrics_addr = m.group(1)
        super()._take(line)


def http(addr, raw, timeout=10):
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(raw)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    return b"".join(chunks)


def scrape(addr):
    resp = http(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = resp.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK"), head
    assert b"Content-Type: text/plain; version=0.0.4" in head, head
    m = re.search(rb"Content-Length: (\d+)", head)
    assert m and int(m.group(1)) == len(body), head
    return body.decode()


def value(text, name, **labels):
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        assert m, f"malformed sample line {line!r}"
        if m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return None


def promtool(text):
    tool = shutil.which("promtool")
    assert tool, "promtool missing: scripts/deps --test installs the prometheus package"
    r = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"promtool check metrics:\n{r.stdout}{r.stderr}"


def test_metrics_endpoint():
    srv = MetricsClued(harness.test_database_url(), args=["--metrics-listen", "127.0.0.1:0"]).start()
    try:
        assert srv.metrics_addr, srv.output()
        w = world.build(srv)
        m = w.G1.member
        for _ in range(3):
            m.clue.SubmitClue(pb.SubmitClueRequest(
                request_id=new_request_id(), title="线索", summary="摘要",
                source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=pb.SubjectPerson(name="张三"),
                host_unit="市发展改革委"), timeout=20)
        for _ in range(2):
            try:
                w.G2.leader.clue.GetClue(pb.GetClueRequest(clue_id=987654321), timeout=20)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.NOT_FOUND
        with grpc.insecure_channel(srv.addr) as ch:
            for i in range(5):
                try:
                    ch.unary_unary(f"/evil.Service{i}/Method{i}")(b"", timeout=10)
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.UNIMPLEMENTED
        text = scrape(srv.metrics_addr)
        promtool(text)
        submit = dict(grpc_type="unary", grpc_service="clue.v1.ClueService", grpc_method="SubmitClue")
        assert value(text, "grpc_server_started_total", **submit) == 3, text
        assert value(text, "grpc_server_handled_total", grpc_code="OK", **submit) == 3
        assert value(text, "grpc_server_msg_received_total", **submit) == 3
        assert value(text, "grpc_server_msg_sent_total", **submit) == 3
        assert value(text, "grpc_server_handling_seconds_count", **submit) == 3
        assert value(text, "grpc_server_handling_seconds_bucket", le="+Inf", **submit) == 3
        get = dict(grpc_service="clue.v1.ClueService", grpc_method="GetClue")
        assert value(text, "grpc_server_handled_total", grpc_code="NotFound", **get) == 2
        assert value(text, "grpc_server_handled_total", grpc_service="unknown", grpc_method="unknown",
                     grpc_code="Unimplemented") == 5
        assert "evil" not in text
        watch = dict(grpc_type="server_stream", grpc_service="clue.v1.AuditService", grpc_method="WatchEvents")
        assert value(text, "grpc_server_started_total", **watch) is None  # only methods called appear
        for name, labels in (("clued_connections_open", {}), ("clued_streams_open", {}), ("clued_request_bytes_kept", {}),
                             ("clued_db_pool_connections", {"state": "idle"}), ("clued_db_queue_depth", {}),
                             ("clued_db_query_seconds_count", {}), ("clued_audit_watchers", {}),
                             ("clued_audit_tree_size", {}), ("clued_audit_tree_halted", {}),
                             ("process_resident_memory_bytes", {}),
                             ("process_cpu_seconds_total", {}), ("process_open_fds", {})):
            assert value(text, name, **labels) is not None, name
        assert value(text, "clued_db_query_seconds_count") > 0
        assert value(text, "process_resident_memory_bytes") > 1e6
        for u in w.users:
            assert u.token not in text and u.name not in text

        # Where principals came from: once the cache serves a token, its calls cost no lookup.
        def lookups():
            t = scrape(srv.metrics_addr)
            return (value(t, "clued_auth_lookups_total", **{"from": "cache"}),
                    value(t, "clued_auth_lookups_total", **{"from": "database"}))

        def not_found():
            try:
                w.G2.leader.clue.GetClue(pb.GetClueRequest(clue_id=987654321), timeout=20)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.NOT_FOUND

        cache0, db0 = lookups()
        assert db0 >= 1, (cache0, db0)

        def served_from_cache():
            was = lookups()[0]
            not_found()
            return lookups()[0] == was + 1

        harness.wait_for(served_from_cache, timeout=20, what="a call served from the principal cache")
        cache1, db1 = lookups()
        for _ in range(3):
            not_found()
        assert lookups() == (cache1 + 3, db1)
        w.close()

        # Bounds of the endpoint; the gRPC port serves on.
        resp = http(srv.metrics_addr, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n")
        assert resp.startswith(b"HTTP/1.1 431 "), resp[:80]
        assert http(srv.metrics_addr, b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 404 ")
        assert http(srv.metrics_addr, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 405 ")
        assert http(srv.metrics_addr, b"garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        # RFC 9112 3.2: an HTTP/1.1 request without a Host field, or any with two, is 400; an
        # HTTP/1.0 one may go without.
        for head in (b"GET /metrics HTTP/1.1\r\n\r\n", b"GET /metrics HTTP/1.1\r\nX-Host: a\r\n\r\n",
                     b"GET /metrics HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
                     b"GET /metrics HTTP/1.0\r\nHOST: a\r\nHost: a\r\n\r\n",
                     b"GET /metrics HTTP/1.1\r\n\r\nHost: after the head\r\n\r\n"):
            resp = http(srv.metrics_addr, head)
            assert resp.startswith(b"HTTP/1.1 400 ") and b"Host" in resp, (head, resp[:120])
        assert http(srv.metrics_addr, b"GET /metrics HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 200 ")
        # A NUL byte in the head: 400 at once, not a wait for an end the server cannot see.
        assert http(srv.metrics_addr, b"GET /metrics HTTP/1.1\r\nHost: a\x00b\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        assert http(srv.metrics_addr, b"GET /metrics HTTP/1.1\nhost:x\n\n").startswith(b"HTTP/1.1 200 ")
        host, port = srv.metrics_addr.rsplit(":", 1)
        # Four from each of four addresses (four is what one address may hold) fill the 16
        # places.
        idle = [socket.create_connection((host, int(port)), timeout=30, source_address=(f"127.0.0.{2 + i % 4}", 0))
                for i in range(16)]
        time.sleep(0.5)
        # Past the cap of 16: the oldest connection that sent no request yet, of the addresses
        # holding the most, is closed for the new one, which is answered.
        scrape(srv.metrics_addr)
        assert idle[0].recv(100) == b"", "the oldest idle metrics connection was not closed"
        srv.wait_serving(timeout=10)
        # The idle ones are closed by the server after the head timeout (2 s).
        t0 = time.time()
        for s in idle:
            assert s.recv(100) == b"", "an idle metrics connection was not closed"
            s.close()
        assert time.time() - t0 < 5
        scrape(srv.metrics_addr)
    finally:
        out = srv.stop()
    assert "1 for newer ones" in out, out


def test_idle_connections_do_not_keep_scrapers_out():
    """A peer on another address that holds 16 connections to the metrics port (the cap),
    sends nothing and opens another as soon as one is closed, does not keep a scraper out: the
    peer's address holds 4 places at most, each of its new connections closing its oldest, and
    each scrape is answered; nor do 24. What is closed is logged at most once a second, so the churn does not spend the
    log's budget. Before, the 17th connection was closed at once: every scrape failed while the
    holder lasted, and each refusal was a line of its own. (Holders on the scraper's own
    address, reconnecting as fast as they can, may still close a scrape's connection now and
    then: its address is then the one with the most.)"""
    import threading
    srv = MetricsClued(harness.test_database_url(), args=["--metrics-listen", "127.0.0.1:0"]).start()
    host, port = srv.metrics_addr.rsplit(":", 1)
    took = 0.0
    try:
        for holders, source in ((16, "127.0.0.2"), (24, "127.0.0.3")):
            stop = threading.Event()

            def holder():
                while not stop.is_set():
                    try:
                        s = socket.create_connection((host, int(port)), timeout=30, source_address=(source, 0))
                    except OSError:
                        continue
                    s.settimeout(0.5)
                    try:
                        while not stop.is_set():
                            try:
                                if s.recv(100) == b"":
                                    break
                            except socket.timeout:
                                pass
                    except OSError:
                        pass
                    finally:
                        s.close()

            threads = [threading.Thread(target=holder, daemon=True) for _ in range(holders)]
            try:
                for t in threads:
                    t.start()
                time.sleep(1.0)
                t0 = time.time()
                ok = failed = 0
                while time.time() - t0 < 4:
                    try:
                        scrape(srv.metrics_addr)
                        ok += 1
                    except (AssertionError, OSError):
                        failed += 1
                    time.sleep(0.2)
                took += time.time() - t0 + 1
                assert failed == 0 and ok >= 10, (holders, source, ok, failed)
            finally:
                stop.set()
                for t in threads:
                    t.join(10)
    finally:
        out = srv.stop()
    lines = [ln for ln in out.splitlines() if "metrics: connections closed" in ln]
    assert 1 <= len(lines) <= took + 4, (len(lines), took, lines[:5])
    assert "for newer ones" in lines[0], lines[0]


def test_unread_answers_do_not_keep_scrapers_out():
    """A peer on another address (127.0.0.2) that opens a metrics connection every 10 ms,
    sends GET /metrics and never reads the answer nor closes, does not keep a scraper on
    127.0.0.1 out. Such a connection does not hold its place without use for its first 2 s,
    and before, the 16 places were all such: every scrape was refused while the peer went on.
    Now one address holds 4 places at most; each new connection of the peer closes its oldest,
    whatever its state, and the scraper's connection, of an address that holds fewer, is left
    alone."""
    import threading
    srv = MetricsClued(harness.test_database_url(), args=["--metrics-listen", "127.0.0.1:0"]).start()
    host, port = srv.metrics_addr.rsplit(":", 1)
    stop = threading.Event()
    opened = [0]

    def flood():
        held = []
        try:
            while not stop.is_set():
                s = socket.socket()
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                    s.bind(("127.0.0.2", 0))
                    s.connect((host, int(port)))
                    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                    held.append((time.time(), s))
                    opened[0] += 1
                except OSError:
                    s.close()
                # Past 3 s a connection holds its place without use anyway: let it go, so that
                # the flood's sockets stay few.
                while held and time.time() - held[0][0] > 3:
                    held.pop(0)[1].close()
                time.sleep(0.01)
        finally:
            for _, s in held:
                s.close()

    t = threading.Thread(target=flood, daemon=True)
    try:
        t.start()
        harness.wait_for(lambda: opened[0] >= 40, timeout=30, what="the flood's first 40 connections")
        ok = failed = 0
        for _ in range(10):
            try:
                scrape(srv.metrics_addr)
                ok += 1
            except (AssertionError, OSError):
                failed += 1
            # The flood goes on between scrapes.
            was = opened[0]
            harness.wait_for(lambda: opened[0] >= was + 5, timeout=30, what="five more of the flood's connections")
        assert failed == 0 and ok == 10, (ok, failed, opened[0])
    finally:
        stop.set()
        t.join(10)
        out = srv.stop()
    lines = [ln for ln in out.splitlines() if "metrics: connections closed" in ln]
    assert lines and "for newer ones" in lines[0], lines[:3]


def test_non_loopback_refused():
    srv = harness.Clued(harness.test_database_url())
    srv.run("migrate")
    r = srv.run("serve", "--listen", "127.0.0.1:0", "--metrics-listen", "0.0.0.0:0", check=False)
    assert r.returncode != 0 and "refusing to serve metrics in cleartext" in r.stderr, r.stderr
    assert "cannot start metrics: Invalid argument" in r.stderr, r.stderr


def test_metrics_off_means_none():
    # scripts/run's CLUED_METRICS_LISTEN=off reaches clued through its environment too.
    srv = harness.Clued(harness.test_database_url(), env={"CLUED_METRICS_LISTEN": "off"}).start()
    try:
        assert "metrics on" not in srv.output() and "invalid --metrics-listen" not in srv.output()
        srv.wait_serving()
    finally:
        srv.stop()


def _started_handled(text):
    """Sums of grpc_server_started_total and grpc_server_handled_total over every label."""
    st = hd = 0.0
    for line in text.splitlines():
        if line.startswith("grpc_server_started_total{"):
            st += float(line.rsplit(" ", 1)[1])
        elif line.startswith("grpc_server_handled_total{"):
            hd += float(line.rsplit(" ", 1)[1])
    return st, hd


def test_refused_before_the_call_counts_neither_started_nor_handled():
    """A request the transport refuses before a method is looked up (not a gRPC content-type,
    not POST, a repeated header, over the header limit, HTTP/1.1 POST with a wrong type) is
    counted neither as started nor as handled, as go-grpc-prometheus's interceptors never
    see one; an unknown method is both. Handled never exceeds started."""
    from rawh2 import RawH2, grpc_frame
    check = "/grpc.health.v1.Health/Check"
    with MetricsClued(harness.test_database_url(),
                      args=["--metrics-listen", "127.0.0.1:0", "--max-headers", "16"]).start() as srv:
        before = _started_handled(scrape(srv.metrics_addr))
        h = RawH2(srv.addr)
        h.pump()
        refused = [h.call(check, grpc_frame(b""), content_type="text/plain"),
                   h.call(check, grpc_frame(b""), content_type=None),
                   h.call(check, grpc_frame(b""), method="GET"),
                   h.call(check, grpc_frame(b""), headers=[("x-a", "1"), ("x-a", "2"), ("grpc-timeout", "1S"),
                                                            ("grpc-timeout", "2S")]),
                   h.call(check, grpc_frame(b""), headers=[(f"x-h{i}", "v") for i in range(20)])]
        for r in refused:
            assert r.grpc_status not in (None, 0), (r.headers, r.trailers)
        assert h.call("/unknown.S/M", grpc_frame(b"")).grpc_status == 12
        h.close()
        host, port = srv.addr.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: text/plain\r\nContent-Length: 0\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 415")
        time.sleep(0.3)
        after = _started_handled(scrape(srv.metrics_addr))
        assert after[0] - before[0] == 1 and after[1] - before[1] == 1, (before, after)
        assert after[1] <= after[0], after
        assert "content-type must be" in srv.output()


def test_request_bytes_kept_return_to_zero():
    """clued_request_bytes_kept, what --max-inbound counts: an unfinished upload counts while
    it is open, and once every call has ended by whatever path (served, refused, reset,
    over the decode budget, a stream cancelled, a reflection stream), it is back at zero: a
    count that leaked would refuse every large request in the end."""
    import struct
    from hostile import Raw, frame, grpc_msg, headers_frames, lit, request_block
    from test_grpc_web import check_req, grpc_web, serving
    from test_reflection import V1, _reflection_pb2
    list_notes = "/clue.v1.ClueService/ListNotes"

    def auth(token):
        return lit("authorization", f"Bearer {token}")

    with MetricsClued(harness.test_database_url(), args=["--metrics-listen", "127.0.0.1:0"]).start() as srv:
        w = world.build(srv)
        m = w.G1.member
        clue = m.clue.SubmitClue(pb.SubmitClueRequest(
            request_id=new_request_id(), title="线索", summary="摘要", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
            subject=pb.SubjectPerson(name="张三"), host_unit="市发展改革委"), timeout=20)
        for fn, req in ((m.clue.GetClue, pb.GetClueRequest(clue_id=987654321)),
                        (m.clue.ListNotes, pb.ListNotesRequest(clue_id=clue.id, page_size=-1))):
            try:
                fn(req, timeout=20)
            except grpc.RpcError as e:
                assert e.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), e
        with grpc.insecure_channel(srv.addr) as ch:
            watch = S.health_pb2_grpc.HealthStub(ch).Watch(S.health_pb2.HealthCheckRequest(), timeout=30)
            next(watch)
            watch.cancel()
            rpb = _reflection_pb2()
            info = ch.stream_stream(V1, request_serializer=rpb.ServerReflectionRequest.SerializeToString,
                                    response_deserializer=rpb.ServerReflectionResponse.FromString)
            replies = list(info(iter([rpb.ServerReflectionRequest(list_services="")] * 3), timeout=30))
            assert len(replies) == 3
        head = pb.ListNotesRequest(clue_id=clue.id).SerializeToString()
        big = grpc_msg(head + b"\x7a" + bytes([0x80, 0x80, 0x40]) + b"u" * (1 << 20))  # one 1 MiB unknown field
        tiny = grpc_msg(head + b"\x7a\x01u" * 300000)  # decodes past 4 times its size
        r = Raw(srv.addr, timeout=30)
        r.until(lambda: r.server_settings is not None, 5, "SETTINGS")
        for sid in (1, 3, 5):
            r.send(headers_frames(sid, request_block(list_notes, auth(m.token))))
        time.sleep(0.5)  # the token lookup answers
        r.send_body(1, big[:-100], end_stream=False)
        r.send_body(3, tiny)
        r.send_body(5, big)
        r.until(lambda: 3 in r.ended and 5 in r.ended, 30, "the two whole requests")
        assert r.status(3) == 8 and "decodes to more than" in r.message(3), (r.status(3), r.message(3))
        assert r.status(5) == 0, r.message(5)
        kept = value(scrape(srv.metrics_addr), "clued_request_bytes_kept")
        assert (1 << 20) - 200 <= kept <= (1 << 20) + 200, kept  # the unfinished upload
        r.send(frame(3, 0, 1, struct.pack(">I", 8)))  # RST_STREAM CANCEL
        r.send(headers_frames(7, request_block(list_notes, auth(m.token))))
        r.send_body(7, big[:-100], end_stream=False)
        r.read(0.5)
        r.close()  # with an upload unfinished
        web = grpc_web(srv.addr, "/grpc.health.v1.Health/Check", check_req())  # over HTTP/1.1
        assert web.grpc_status() == 0 and serving(web.messages()[0])
        w.close()
        harness.wait_for(lambda: value(scrape(srv.metrics_addr), "clued_connections_open") == 0, timeout=20,
                         what="every connection closed")
        assert value(scrape(srv.metrics_addr), "clued_request_bytes_kept") == 0


def test_request_bytes_kept_follow_the_memory():
    """What --max-inbound counts is what the server holds for authenticated calls, no more
    and no less: a decoded request counts until it is freed, even after its client reset the
    call while the statement it shares still runs; bodies of callers not yet authenticated
    (token lookups stalled) do not count, so they cannot use up what authenticated callers
    may keep; and a request that could never fit is told so, not to try again."""
    import struct
    from hostile import Raw, frame, grpc_msg, headers_frames, lit, request_block
    get_clue = "/clue.v1.ClueService/GetClue"

    def auth(token):
        return lit("authorization", f"Bearer {token}")

    def kept():
        return value(scrape(srv.metrics_addr), "clued_request_bytes_kept")

    def padded(req, size):
        return grpc_msg(req + (b"\x7a\x18" + b"u" * 24) * (size // 26))  # unknown fields (15) of 24 bytes

    url = harness.test_database_url()
    dbname = url.split("///", 1)[1].split("?", 1)[0]
    with MetricsClued(url, args=["--metrics-listen", "127.0.0.1:0", "--max-conn-inbound", str(4 << 20),
                                 "--max-inbound", str(6 << 20), "--max-user-inbound", str(6 << 20),
                                 "--db-lock-timeout", "60000", "--auth-cache-ttl", "60000"]).start().wait_listening() as srv:
        w = world.build(srv)
        m = w.G1.member
        clue = m.clue.SubmitClue(pb.SubmitClueRequest(
            request_id=new_request_id(), title="线索", summary="摘要", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
            subject=pb.SubjectPerson(name="张三"), host_unit="市发展改革委"), timeout=20)
        m.clue.GetClue(pb.GetClueRequest(clue_id=clue.id), timeout=20)  # the principal is cached
        head = pb.GetClueRequest(clue_id=clue.id).SerializeToString()
        hold = harness.Postgres.get().connect(dbname)
        hold.autocommit = False
        try:
            # Reset while their batched statement waits on a lock: still held, still counted.
            with hold.cursor() as cur:
                cur.execute("LOCK TABLE clues IN ACCESS EXCLUSIVE MODE")
            r = Raw(srv.addr, timeout=60)
            r.until(lambda: r.server_settings is not None, 5, "SETTINGS")
            sids, sibling = [1, 3, 5], 7
            for sid in sids + [sibling]:
                r.send(headers_frames(sid, request_block(get_clue, auth(m.token))))
            time.sleep(0.3)
            big = padded(head, 300_000)
            for sid in sids:
                r.send_body(sid, big[:-10], end_stream=False)
            # Every request ends in one write: one statement, kept alive by the sibling.
            r.send(b"".join(frame(0, 1, sid, big[-10:]) for sid in sids) + frame(0, 1, sibling, grpc_msg(head)))
            harness.wait_for(lambda: kept() >= 3 * 600_000, timeout=10, what="the decoded requests counted")
            during = kept()
            r.send(b"".join(frame(3, 0, sid, struct.pack(">I", 8)) for sid in sids))  # RST_STREAM CANCEL
            time.sleep(1)
            assert kept() == during, (during, kept())  # their statement still holds them
            # Bodies of callers being authenticated (token lookups stalled) are not counted.
            with hold.cursor() as cur:
                cur.execute("LOCK TABLE tokens IN ACCESS EXCLUSIVE MODE")
            strangers = [Raw(srv.addr, timeout=60) for _ in range(3)]
            for i, h in enumerate(strangers):
                h.until(lambda: h.server_settings is not None, 5, "SETTINGS")
                h.send(headers_frames(1, request_block(get_clue, auth(f"bogus-{i}"))))
                h.send_body(1, grpc_msg(head + b"\x7a\x80\x80\x80\x01" + b"s" * (2 << 20))[:-10], end_stream=False)
            time.sleep(0.5)
            assert kept() == during, (during, kept())
            hold.rollback()  # the statement runs, the lookups answer
            harness.wait_for(lambda: kept() == 0, timeout=20, what="the decoded requests freed")
            for h in strangers:
                h.close()
            r.close()
        finally:
            hold.close()
        # A request whose decode is over the connection's whole limit: never fits.
        with grpc.insecure_channel(srv.addr) as ch:
            try:
                ch.unary_unary(get_clue)(padded(head, 1_400_000)[5:], metadata=[("authorization", "Bearer " + m.token)],
                                         timeout=20)
                raise AssertionError("a request that can never fit was served")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
                assert "send fewer, larger fields" in e.details() and "try again" not in e.details(), e.details()
        w.close()


if __name__ == "__main__":
    harness.run_tests(dict(globals()))
