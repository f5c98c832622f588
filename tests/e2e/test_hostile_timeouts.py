"""Timeouts and caps per connection, each set short here by its flag: the handshake timeout,
the idle-connection GOAWAY, the write timeout, --max-connections, the maximum age of streams
that need no caller (Health/Watch), and gRPC's keepalive policy (GOAWAY ENHANCE_YOUR_CALM
"too_many_pings"). Each fires, is logged, and leaves clued serving; the attacks measure RSS
with a Health/Check probe beside them."""

import os
import re
import resource
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
import world  # noqa: E402
from hostile import (CHECK, CONTINUATION, DATA, END_HEADERS, END_STREAM, ENHANCE_YOUR_CALM, GOAWAY,  # noqa: E402
                     HEADERS, NO_ERROR, PING, PREFACE, WINDOW_UPDATE, HealthProbe, Raw, frame, grpc_msg,
                     headers_frames, indexed, lit, report, request_block, rss_kb, start_clued)

S = harness.stubs()
WATCH = "/grpc.health.v1.Health/Watch"
LIST_CLUES = "/clue.v1.ClueService/ListClues"
MAX_CONNS = 300


class Ctx:
    pass


def setup():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    c = Ctx()
    c.srv = start_clued("--handshake-timeout", "1s", "--idle-timeout", "2s", "--write-timeout", "2s",
                        "--max-connections", str(MAX_CONNS), "--max-unauth-stream-age", "1500ms",
                        "--keepalive-min-ping", "1s")
    c.pid = c.srv.proc.pid
    return c


def teardown(c):
    c.srv.stop()


def logged(c, text):
    harness.wait_for(lambda: text in c.srv.output(), timeout=5, what=f"{text!r} in the log")


def connect(addr):
    host, port = addr.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def closed_by_server(s, timeout=8.0):
    s.settimeout(timeout)
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return True
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


def test_bare_tcp_connections_time_out(c):
    before = rss_kb(c.pid)
    with HealthProbe(c.srv.addr) as probe:
        socks = [connect(c.srv.addr) for _ in range(200)]
        # Half send the preface alone, no SETTINGS: still no handshake.
        for s in socks[::2]:
            s.sendall(PREFACE)
        held = rss_kb(c.pid)
        t0 = time.time()
        closed = sum(closed_by_server(s) for s in socks)
        took = time.time() - t0
        for s in socks:
            s.close()
    report("200 connections that never finish the handshake", before, held, 24)
    probe.assert_prompt()
    assert closed == 200, f"{closed} of 200 closed within the timeout"
    assert took < 8, took
    logged(c, "handshake timeout")


def test_idle_connection_gets_goaway(c):
    r = Raw(c.srv.addr)
    assert r.check(1) == 0
    t0 = time.time()
    assert r.wait_closed(10), "an idle connection was kept"
    assert r.goaway is not None and r.goaway[1] == NO_ERROR and b"idle" in r.goaway[2], r.goaway
    assert time.time() - t0 > 1.0
    logged(c, "--idle-timeout")
    # A connection with a call open is not idle: a Watch stream keeps it (until its age).
    r = Raw(c.srv.addr)
    r.send(headers_frames(1, request_block(WATCH)) + frame(DATA, END_STREAM, 1, grpc_msg()))
    r.until(lambda: 1 in r.ended, 10, "the watch to reach its age")
    assert r.status(1) == 14 and "maximum age" in r.message(1), (r.hdrs, r.message(1))
    r.close()


def test_write_timeout(c):
    # The client grants no flow-control window and never updates it: the reply stays pending.
    before = rss_kb(c.pid)
    with HealthProbe(c.srv.addr) as probe:
        rs = []
        for _ in range(50):
            r = Raw(c.srv.addr, settings_pairs=[(4, 0)])
            r.send(headers_frames(1, request_block()) + frame(DATA, END_STREAM, 1, grpc_msg()))
            rs.append(r)
        held = rss_kb(c.pid)
        for r in rs:
            assert r.wait_closed(10), "a connection that takes nothing was kept"
            assert 1 not in r.data, "a reply went out through a closed window"
            r.close()
    report("50 connections that take none of their replies", before, held, 16)
    probe.assert_prompt()
    logged(c, "write timeout")


def test_max_connections(c):
    """Past --max-connections a new connection closes the oldest one that carried no
    authenticated call (none here has) and has no open stream, and is served itself; the
    closing is logged, and memory stays bounded."""
    before = rss_kb(c.pid)
    rs = []
    for _ in range(MAX_CONNS + 50):
        try:
            rs.append(Raw(c.srv.addr))
        except OSError:
            pass
    time.sleep(0.5)
    held = rss_kb(c.pid)
    status = rs[-1].check(1)
    closed = [i for i, r in enumerate(rs) if closed_now(r)]
    for r in rs:
        r.close()
    report(f"{MAX_CONNS + 50} connections against --max-connections {MAX_CONNS}", before, held, 24)
    assert len(closed) >= 45 and max(closed) < 100, closed  # the oldest went, not the new
    assert status == 0
    logged(c, "--max-connections")


def closed_now(r):
    """Whether the server has closed r's connection, from what has arrived (no wait; what was
    sent before is dropped unread)."""
    r.sock.setblocking(False)
    try:
        while True:
            if not r.sock.recv(1 << 16):
                return True
    except BlockingIOError:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True
    finally:
        r.sock.setblocking(True)


def raw_call(r, sid, path, body, token):
    """A unary call on a raw connection, as token's user; its grpc-status."""
    r.send(headers_frames(sid, request_block(path, lit("authorization", f"Bearer {token}"))))
    r.send_body(sid, grpc_msg(body))
    r.until(lambda: sid in r.ended, 20, f"stream {sid}")
    return r.status(sid)


def test_users_keep_their_connections_from_a_flood(c):
    """A stranger who opens connections past --max-connections cannot push users out: a
    connection that carried an authenticated call is never closed for a new one, and a user's
    new connection gets in by closing a stranger's. One user claims at most
    --max-conns-per-user connections (by default a sixteenth of --max-connections: 18 of
    300); its others are closed like strangers'."""
    srv = start_clued("--max-connections", str(MAX_CONNS))
    w = world.build(srv)
    token = w.G1.member.token
    body = S.clue_pb2.ListCluesRequest(page_size=1).SerializeToString()
    mine, flood = [], []
    try:
        for _ in range(20):
            r = Raw(srv.addr)
            assert raw_call(r, 1, LIST_CLUES, body, token) == 0, r.message(1)
            mine.append(r)
        for _ in range(2 * MAX_CONNS):
            try:
                flood.append(Raw(srv.addr))
            except OSError:
                pass
        time.sleep(0.5)
        shut = [closed_now(r) for r in mine]
        assert sum(shut) == 2, shut
        for r, gone in zip(mine, shut):
            if not gone:
                assert raw_call(r, 3, LIST_CLUES, body, token) == 0, r.message(3)
        late = Raw(srv.addr)
        assert raw_call(late, 1, LIST_CLUES, body, w.G2.member.token) == 0, late.message(1)
        late.close()
        assert f"--max-connections {MAX_CONNS} reached" in srv.output()
    finally:
        for r in mine + flood:
            r.close()
        w.close()
        srv.stop()


def test_a_flood_from_one_address_closes_only_its_own(c):
    """At --max-connections the connection that goes for a new one is a stranger's of the
    address with the most strangers' connections, or the new one itself if its address has as
    many: a flood from 127.0.0.1 turns over only its own connections. A connection from
    127.0.0.2 that carried no authenticated call, opened before the flood, stays; a new one
    from 127.0.0.2 gets in by closing one of the flood's and is served."""
    srv = start_clued("--max-connections", "100")
    other = Raw(srv.addr, source="127.0.0.2")
    flood = []
    try:
        for _ in range(250):
            try:
                flood.append(Raw(srv.addr))
            except OSError:
                pass
        time.sleep(0.5)
        assert not closed_now(other), "a connection of another address was closed for the flood"
        assert other.check(1) == 0
        late = Raw(srv.addr, source="127.0.0.2")
        assert late.check(1) == 0
        assert not closed_now(other)
        late.close()
        assert sum(closed_now(r) for r in flood) >= 150

        def logged_closings():  # every one is counted in a line within a second or two
            return sum(int(a) + int(b) for a, b in re.findall(
                r"--max-connections 100 reached \(\d+ open\): closed (\d+) connection\(s\) .*? refused (\d+)",
                srv.output()))
        harness.wait_for(lambda: logged_closings() >= 151, timeout=10, what="every closing logged")
    finally:
        other.close()
        for r in flood:
            r.close()
        srv.stop()


def test_max_connections_fits_the_descriptor_limit(c):
    """With a descriptor limit of 300, the default --max-connections (10240) could never be
    reached: accept() would fail first and drop new connections, a user's among them, before
    the server chose which to close. clued says so and uses what the descriptors leave; a
    flood of 400 connections from 127.0.0.2 then turns over only its own, and a caller from
    127.0.0.1 is served."""
    import tempfile
    d = tempfile.mkdtemp(prefix="clued-nofile-")
    wrapper = os.path.join(d, "clued")
    with open(wrapper, "w") as f:
        f.write(f'#!/bin/sh\nexec prlimit --nofile=300:300 {harness.CLUED} "$@"\n')
    os.chmod(wrapper, 0o755)
    real, harness.CLUED = harness.CLUED, wrapper
    try:
        srv = start_clued()
    finally:
        harness.CLUED = real
    flood = []
    try:
        m = re.search(r"--max-connections 10240 is above what the descriptor limit \(300\) leaves for "
                      r"connections: using (\d+)", srv.output())
        assert m, srv.output()
        limit = int(m.group(1))
        assert 100 < limit < 300, limit
        for _ in range(400):
            try:
                flood.append(Raw(srv.addr, source="127.0.0.2"))
            except OSError:
                pass
        time.sleep(0.5)
        r = Raw(srv.addr)
        assert r.check(1) == 0
        r.close()
        assert f"--max-connections {limit} reached" in srv.output()
        assert "accept failed" not in srv.output()
    finally:
        for r in flood:
            r.close()
        srv.stop()


def test_public_streams_bounded_over_connections(c):
    """Health/Watch needs no token, and each open stream costs memory for as long as it lasts:
    over all connections at most --max-public-streams (150 here) are open. Two connections
    open 99 each: 48 are refused with RESOURCE_EXHAUSTED naming the flag, Health/Check still
    answers, and once one connection closes its streams' room is there again. (Both connections
    come from one address here, allowed all 150.)"""
    srv = start_clued("--max-public-streams", "150", "--max-public-streams-per-address", "150")
    rs = [Raw(srv.addr), Raw(srv.addr)]
    try:
        for r in rs:
            r.send(b"".join(headers_frames(1 + 2 * i, request_block(WATCH)) + frame(DATA, END_STREAM, 1 + 2 * i, grpc_msg())
                            for i in range(99)))
        sids = [1 + 2 * i for i in range(99)]

        def refused():
            return [(r, s) for r in rs for s in sids if s in r.ended]
        end = time.time() + 20
        while len(refused()) < 48 and time.time() < end:
            for r in rs:
                r.read(0.1)
        time.sleep(0.3)
        for r in rs:
            r.read(0.1)
        got = refused()
        assert len(got) == 48, len(got)
        for r, s in got:
            assert r.status(s) == 8 and "--max-public-streams" in r.message(s), (r.status(s), r.message(s))
        probe = Raw(srv.addr)
        assert probe.check(1) == 0
        rs[0].close()
        time.sleep(0.5)
        again = Raw(srv.addr)
        again.send(b"".join(headers_frames(1 + 2 * i, request_block(WATCH)) + frame(DATA, END_STREAM, 1 + 2 * i, grpc_msg())
                            for i in range(10)))
        again.until(lambda: all(1 + 2 * i in again.data for i in range(10)), 10, "ten watches answered")
        assert not again.ended, again.ended
        again.close()
        probe.close()
    finally:
        for r in rs:
            r.close()
        srv.stop()


def test_public_streams_shared_between_addresses(c):
    """One address may hold at most --max-public-streams-per-address of the public streams (a
    quarter of --max-public-streams by default: 10 of 40 here): a stranger opening 30 Watches
    gets 20 refused with RESOURCE_EXHAUSTED naming that flag, and a client from another
    address still has its Watch answered. Before, the first address took all 40 and every
    other client's Watch was refused."""
    srv = start_clued("--max-public-streams", "40")
    stranger = Raw(srv.addr, source="127.0.0.1")
    other = None
    try:
        stranger.send(b"".join(headers_frames(1 + 2 * i, request_block(WATCH)) + frame(DATA, END_STREAM, 1 + 2 * i, grpc_msg())
                               for i in range(30)))
        sids = [1 + 2 * i for i in range(30)]
        stranger.until(lambda: all(s in stranger.data or s in stranger.ended for s in sids), 10, "thirty watches answered or refused")
        time.sleep(0.3)
        stranger.read(0.1)
        refused = [s for s in sids if s in stranger.ended]
        assert len(refused) == 20, refused
        for s in refused:
            assert stranger.status(s) == 8 and "--max-public-streams-per-address" in stranger.message(s), \
                (stranger.status(s), stranger.message(s))
        other = Raw(srv.addr, source="127.0.0.2")
        other.send(b"".join(headers_frames(1 + 2 * i, request_block(WATCH)) + frame(DATA, END_STREAM, 1 + 2 * i, grpc_msg())
                            for i in range(10)))
        other.until(lambda: all(1 + 2 * i in other.data for i in range(10)), 10, "ten watches of another address answered")
        assert not other.ended, other.ended
        # The stranger's streams closing give its share back.
        stranger.close()
        time.sleep(0.5)
        again = Raw(srv.addr, source="127.0.0.1")
        again.send(b"".join(headers_frames(1 + 2 * i, request_block(WATCH)) + frame(DATA, END_STREAM, 1 + 2 * i, grpc_msg())
                            for i in range(10)))
        again.until(lambda: all(1 + 2 * i in again.data for i in range(10)), 10, "ten watches answered again")
        assert not again.ended, again.ended
        again.close()
    finally:
        stranger.close()
        if other is not None:
            other.close()
        srv.stop()


def test_unauthenticated_stream_age(c):
    import grpc

    s = harness.stubs()
    with grpc.insecure_channel(c.srv.addr) as ch:
        it = s.health_pb2_grpc.HealthStub(ch).Watch(s.health_pb2.HealthCheckRequest(), timeout=20)
        t0 = time.time()
        got = []
        try:
            for m in it:
                got.append(m.status)
            raise AssertionError("the watch ended without a status")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, e
            assert "maximum age" in e.details(), e.details()
        assert 1.0 < time.time() - t0 < 10
        assert got == [s.health_pb2.HealthCheckResponse.SERVING]
    logged(c, "--max-unauth-stream-age")
    # cluectl's watch carries on over the ended streams, and prints no status twice.
    r = harness.cluectl("--server", c.srv.addr, "health", "--watch", "--timeout", "4", check=0)
    assert r.stdout.split() == ["SERVING"], r.stdout + r.stderr


def test_ping_flood(c):
    r = Raw(c.srv.addr)
    r.until(lambda: r.server_settings is not None, 5, "SETTINGS")
    for i in range(5):
        r.send(frame(PING, 0, 0, struct.pack(">Q", i)))
    assert r.wait_closed(10)
    assert r.goaway is not None and r.goaway[1] == ENHANCE_YOUR_CALM and r.goaway[2] == b"too_many_pings", r.goaway
    r.close()
    logged(c, "ENHANCE_YOUR_CALM")
    # PINGs further apart than the minimum are fine, and so are PINGs between calls.
    r = Raw(c.srv.addr)
    assert r.check(1) == 0  # (PINGs are no activity: keep within the 2 s idle timeout)
    for i in range(2):
        r.send(frame(PING, 0, 0, struct.pack(">Q", i)))
        if i == 0:
            time.sleep(1.1)
        r.read(0.05)
    sid = 3
    for i in range(4):
        assert r.check(sid) == 0
        r.send(frame(PING, 0, 0, struct.pack(">Q", i)))
        sid += 2
    r.read(0.2)
    assert r.goaway is None, r.goaway
    r.close()


def test_flags_documented(c):
    out = harness.Clued().run("help").stdout
    for flag in ("--max-connections", "--handshake-timeout", "--idle-timeout", "--write-timeout",
                 "--max-unauth-stream-age", "--keepalive-min-ping", "--max-conns-per-user", "--max-public-streams",
                 "--max-public-streams-per-address", "--max-user-inbound"):
        assert flag in out, flag
    readme = open(os.path.join(harness.SRC, "README.md")).read()
    for flag in ("--max-connections", "--handshake-timeout", "--idle-timeout", "--write-timeout",
                 "--max-unauth-stream-age", "--keepalive-min-ping", "--max-conn-buffer", "--max-conn-inbound",
                 "--max-header-bytes", "--max-headers", "--max-conns-per-user", "--max-public-streams",
                 "--max-public-streams-per-address", "--max-user-inbound"):
        assert f"`{flag}`" in readme, flag


def answered_but_open(addr, refused):
    """A connection with 100 Health/Check streams the client never half-closes, each with
    request headers that decode to about 60 KB (15 references to one 4 KB HPACK entry) from
    about 80 bytes on the wire: refused at once (a malformed grpc-timeout), or a whole request
    message that never ends (DEADLINE_EXCEEDED at --handshake-timeout)."""
    r = Raw(addr)
    r.until(lambda: r.server_settings is not None, 5, "SETTINGS")
    out = b""
    for i in range(100):
        sid = 2 * i + 1
        pad = lit("x-pad", "p" * 4000, index=True) + indexed(62) * 14 if i == 0 else indexed(62) * 15
        if refused:
            out += headers_frames(sid, request_block(CHECK, pad + lit("grpc-timeout", "bad")))
        else:
            out += headers_frames(sid, request_block(CHECK, pad)) + frame(DATA, 0, sid, grpc_msg())
    r.send(out)
    return r


def test_answered_streams_are_reset(c):
    """A stream the server has answered is over even if its client never half-closes it: its
    complete reply is followed by RST_STREAM(NO_ERROR) (RFC 9113 8.1). Such streams used to
    stay open with their calls and request headers, for as long as the client kept the
    connection, which never counted as idle: 20 connections held 171 MiB."""
    sids = range(1, 201, 2)
    before = rss_kb(c.pid)
    with HealthProbe(c.srv.addr) as probe:
        conns = [answered_but_open(c.srv.addr, refused=True) for _ in range(10)]
        for r in conns:
            r.until(lambda: all(s in r.rst for s in sids), 10, "every answered stream's reset")
            assert all(r.status(s) == 3 and r.rst[s] == NO_ERROR for s in sids), (r.hdrs.get(1), r.rst)
            assert "grpc-timeout" in r.message(1), r.message(1)
            assert r.check(201) == 0  # the 100 streams no longer count against the limit
        held = rss_kb(c.pid)
        # Requests that never end: their headers are not kept while they wait for the end.
        late = [answered_but_open(c.srv.addr, refused=False) for _ in range(5)]
        time.sleep(0.5)
        held = max(held, rss_kb(c.pid))
        for r in late:
            r.until(lambda: all(s in r.rst for s in sids), 10, "every unended request's end and reset")
            assert all(r.status(s) == 4 and r.rst[s] == NO_ERROR for s in sids), (r.hdrs.get(1), r.rst)
        held = max(held, rss_kb(c.pid))
        # With nothing left open the connections are idle: GOAWAY at --idle-timeout (2 s).
        for r in conns + late:
            assert r.wait_closed(10), "a connection whose streams were all answered was kept"
            assert r.goaway is not None and r.goaway[1] == NO_ERROR and b"idle" in r.goaway[2], r.goaway
            r.close()
    report("15 connections x 100 answered streams of 60 KB headers, never half-closed", before, held, 16)
    probe.assert_prompt()



def test_timeouts_fire_on_time(c):
    """The sweep runs every sixteenth of the shortest timeout (here 1 s): a timeout fires
    within a small fraction of its value, not up to a whole second late. Connections started
    at different points of the sweep's period, so none is on time by chance."""
    import threading

    took = []

    def close_time(data, delay):
        time.sleep(delay)
        s = connect(c.srv.addr)
        t0 = time.time()
        if data:
            s.sendall(data)
        took.append(time.time() - t0 if closed_by_server(s, 5) else None)
        s.close()

    ts = [threading.Thread(target=close_time, args=(data, 0.11 * i))
          for i, data in enumerate([b"", PREFACE[:10], PREFACE] * 3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(took) == 9 and all(t is not None and 0.95 < t < 1.4 for t in took), took  # --handshake-timeout 1s
    # A public request not whole within --handshake-timeout: DEADLINE_EXCEEDED as promptly.
    r = Raw(c.srv.addr)
    assert r.check(1) == 0
    ends = []
    for i, sid in enumerate((3, 5, 7)):
        time.sleep(0.17 * i)
        r.send(headers_frames(sid, request_block()) + frame(DATA, 0, sid, grpc_msg()[:3]))
        t0 = time.time()
        r.until(lambda: sid in r.ended, 5, f"stream {sid}")
        ends.append(time.time() - t0)
        assert r.status(sid) == 4, r.hdrs.get(sid)
    assert all(0.95 < t < 1.4 for t in ends), ends
    # --idle-timeout 2s: the GOAWAY follows the last call by about that.
    t0 = time.time()
    assert r.wait_closed(5)
    assert r.goaway is not None and b"idle" in r.goaway[2], r.goaway
    assert 1.9 < time.time() - t0 < 2.5, time.time() - t0
    r.close()

def test_a_header_block_must_end_in_time(c):
    """A request's HEADERS without END_HEADERS holds the whole connection (only CONTINUATION may
    follow): it must end within --handshake-timeout of its first frame, trickled CONTINUATIONs
    or not, else GOAWAY ENHANCE_YOUR_CALM and the connection closes. A block split over
    frames that does end is served, and an open call afterwards is not cut short by it."""
    block = request_block(CHECK)
    for trickle in (False, True):
        r = Raw(c.srv.addr)
        # The server's SETTINGS acknowledged first: nothing but CONTINUATION may follow.
        r.until(lambda: r.server_settings is not None, 10, "the server's SETTINGS")
        r.send(frame(HEADERS, 0, 1, block[:5]))
        t0 = time.time()
        while trickle and not r.closed and time.time() - t0 < 6:
            r.send(frame(CONTINUATION, 0, 1, b""))  # empty fragments, none the last
            r.read(0.25)
        assert r.wait_closed(8), f"an unfinished header block was kept (trickle={trickle})"
        took = time.time() - t0
        assert 0.9 < took < 3.5, took
        assert r.goaway is not None and r.goaway[1] == ENHANCE_YOUR_CALM, r.goaway
        r.close()
    logged(c, "header block timeout")
    # Split over three frames, sent 0.4 s apart: served; the call after it is not cut at 1 s.
    r = Raw(c.srv.addr)
    r.until(lambda: r.server_settings is not None, 10, "the server's SETTINGS")
    r.send(frame(HEADERS, 0, 1, block[:4]))
    time.sleep(0.4)
    r.send(frame(CONTINUATION, 0, 1, block[4:8]))
    time.sleep(0.4)
    r.send(frame(CONTINUATION, END_HEADERS, 1, block[8:]) + frame(DATA, END_STREAM, 1, grpc_msg()))
    r.until(lambda: 1 in r.ended, 10, "the split request's answer")
    assert r.status(1) == 0, r.hdrs
    r.send(headers_frames(3, request_block(WATCH)) + frame(DATA, END_STREAM, 3, grpc_msg()))
    time.sleep(1.6)
    assert r.read(0.2) and r.goaway is None, r.goaway
    r.close()


def stall_checks(r, sids):
    """Whole Health/Checks on sids, whose answers r's zero window keeps from going."""
    r.send(b"".join(headers_frames(s, request_block()) + frame(DATA, END_STREAM, s, grpc_msg()) for s in sids))


def test_unread_public_answers_are_bounded_over_connections(c):
    """A Health/Check whose client grants no window keeps its call until its answer can go:
    100 per connection, on as many connections as a stranger opens (about 500 KiB each, 5 GiB
    at --max-connections), and only the answers' few bytes were counted. Such calls now count
    as public streams while their answers wait: one address's four connections of 20 stalled
    calls each keep 10 (its share of --max-public-streams 40) and one more per further
    connection; the rest are refused with RESOURCE_EXHAUSTED naming the flag, and no answer
    goes through a closed window. A client that reads its answers is still answered from that
    address, and once the stalled connections close their room is there again."""
    srv = start_clued("--max-public-streams", "40")
    conns = []
    try:
        sids = [1 + 2 * i for i in range(20)]
        for _ in range(4):
            r = Raw(srv.addr, settings_pairs=[(4, 0)], source="127.0.0.1")
            conns.append(r)
            stall_checks(r, sids)
            r.until(lambda: all(s in r.hdrs for s in sids), 10, "twenty answers begun or refused")
        time.sleep(0.3)
        for r in conns:
            r.read(0.1)
        held = [s for r in conns for s in sids if s not in r.ended]
        refused = [(r, s) for r in conns for s in sids if s in r.ended]
        assert len(held) == 10 + 3, [len([s for s in sids if s not in r.ended]) for r in conns]
        for r, s in refused:
            assert r.status(s) == 8 and "--max-public-streams-per-address" in r.message(s), (r.status(s), r.message(s))
        assert not any(r.data for r in conns), "an answer went through a closed window"
        probe = Raw(srv.addr, source="127.0.0.1")
        for sid in (1, 3, 5):
            assert probe.check(sid) == 0, (probe.status(sid), probe.message(sid))
        probe.close()
        for r in conns:
            r.close()
        time.sleep(0.5)
        again = Raw(srv.addr, settings_pairs=[(4, 0)], source="127.0.0.1")
        conns.append(again)
        stall_checks(again, sids)
        again.until(lambda: all(s in again.hdrs for s in sids), 10, "twenty answers begun or refused")
        time.sleep(0.3)
        again.read(0.1)
        assert len([s for s in sids if s not in again.ended]) == 10, again.ended
    finally:
        for r in conns:
            r.close()
        srv.stop()


def test_write_timeout_needs_real_progress(c):
    """A client that grants no window, and now and then lets its stalled answers go (a
    WINDOW_UPDATE per stream) only to stall as many new calls at once, owes output all the
    while but for an instant, and takes a few hundred bytes: that instant counted as progress,
    and --write-timeout never closed it. Here five Health/Checks stalled at a time, renewed
    about every 0.7 s: the connection is closed by the write timeout (2 s)."""
    r = Raw(c.srv.addr, settings_pairs=[(4, 0)])
    sids = [1 + 2 * i for i in range(5)]
    stall_checks(r, sids)
    t0 = time.time()
    try:
        while not r.closed and time.time() - t0 < 15:
            time.sleep(0.7)
            r.read(0.1)
            if r.closed:
                break
            r.send(b"".join(frame(WINDOW_UPDATE, 0, s, struct.pack(">I", 64)) for s in sids))
            end = time.time() + 5
            while not r.closed and not all(s in r.ended for s in sids) and time.time() < end:
                r.read(0.1)
            if r.closed:
                break
            assert all(r.status(s) == 0 for s in sids), [r.status(s) for s in sids]
            sids = [s + 10 for s in sids]
            stall_checks(r, sids)
    except OSError:
        r.closed = True  # closed under a write
    assert r.closed, "a client renewing its stalled answers kept its connection past --write-timeout"
    assert time.time() - t0 > 1.5
    r.close()
    logged(c, "write timeout")


def goaway_unread(r, timeout=10.0):
    """Wait, reading nothing, until a GOAWAY has arrived on r's socket."""
    end = time.time() + timeout
    while time.time() < end:
        r.sock.settimeout(max(0.05, end - time.time()))
        try:
            got = r.buf + r.sock.recv(1 << 16, socket.MSG_PEEK)
        except socket.timeout:
            continue
        i = 0
        while i + 9 <= len(got):
            if got[i + 3] == GOAWAY:
                return
            i += 9 + int.from_bytes(got[i:i + 3], "big")
        time.sleep(0.02)
    raise AssertionError("no GOAWAY came")


def test_a_request_crossing_the_idle_goaway_is_answered(c):
    """The idle GOAWAY was followed by the close at once: a request the client sent before it
    read the GOAWAY met a closed socket, which answers with a reset (that can throw the unread
    GOAWAY away too), and a gRPC client failed the call UNAVAILABLE. The GOAWAY now comes as
    gRPC's servers send it: a notice (the largest stream id) and a PING; a request sent before
    the notice was read is still served; once the PING is answered, the final GOAWAY (naming
    that request's stream) and the close."""
    r = Raw(c.srv.addr)
    try:
        assert r.check(1) == 0
        goaway_unread(r)  # the notice is there, unread, as the client sends
        r.send(headers_frames(3, request_block()) + frame(DATA, END_STREAM, 3, grpc_msg()))
        end = time.time() + 10
        while not r.closed and 3 not in r.ended and time.time() < end:
            r.read(0.2)
        assert 3 in r.ended and r.status(3) == 0, (r.hdrs.get(3), r.rst, r.closed, r.goaway)
        assert r.wait_closed(5), "the connection stayed open after its notice was answered"
        assert r.goaway is not None and r.goaway[0] == 3 and r.goaway[1] == NO_ERROR, r.goaway
        assert b"idle" in r.goaway[2], r.goaway
    finally:
        r.close()


if __name__ == "__main__":
    harness.run_tests(globals(), setup, teardown)
