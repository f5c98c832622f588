"""Authentication before the body, and a bounded decode.

A call that needs a caller is authenticated on its headers alone: without a valid token it
gets UNAUTHENTICATED before its body has arrived, and what it still uploads is dropped as it
arrives, never kept or decoded. An authenticated call's request is decoded into a per-call
arena whose budget is proportional to the message size, so a 4 MiB message of two million
empty strings is refused (RESOURCE_EXHAUSTED) instead of costing a hundred megabytes.

Methods that need no token (Health, reflection) have nobody to answer for what their caller
sends: they take request messages of at most 64 KiB, one connection keeps at most 1 MiB of
their unfinished requests, and each of their messages (a single-message request up to its
end) must arrive whole within --handshake-timeout, else DEADLINE_EXCEEDED. Any other request
that stops arriving mid-message gets DEADLINE_EXCEEDED after --idle-timeout with no byte of it.

Each attack measures clued's RSS before and after and runs a Health/Check probe meanwhile."""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
import world  # noqa: E402
from hostile import (DATA, END_STREAM, PROTOCOL_ERROR, HealthProbe, Raw, frame, grpc_msg,  # noqa: E402
                     headers_frames, lit, report, request_block, rss_kb, start_clued)
from rawh1 import H1, encode  # noqa: E402

SUBMIT = "/clue.v1.ClueService/SubmitClue"
CHECK_PATH = "/grpc.health.v1.Health/Check"
# SubmitClueRequest field 8, violation_categories: two million empty strings, 4,000,000 bytes.
BOMB = grpc_msg(b"\x42\x00" * 2_000_000)


class Ctx:
    pass


def setup():
    c = Ctx()
    c.srv = start_clued()
    c.pid = c.srv.proc.pid
    c.token = world.bootstrap_token(c.srv)
    r = Raw(c.srv.addr)
    for sid in range(1, 40, 2):
        assert r.check(sid) == 0
    r.close()
    return c


def teardown(c):
    c.srv.stop()


def submit_headers(sid, token=None):
    extra = lit("authorization", f"Bearer {token}") if token else b""
    return headers_frames(sid, request_block(SUBMIT, extra))


def test_no_token_refused_before_the_body(c):
    r = Raw(c.srv.addr)
    r.send(submit_headers(1))  # headers only; no body yet, no END_STREAM
    r.until(lambda: 1 in r.ended, 10, "the refusal, with the body still unsent")
    assert r.status(1) == 16, r.hdrs
    # The body the client sends anyway is dropped as it arrives.
    r.send_body(1, BOMB)
    assert r.check(3) == 0
    r.close()


def test_bogus_token_refused_before_the_body(c):
    r = Raw(c.srv.addr)
    r.send(submit_headers(1, "ct_" + "0" * 64))
    r.until(lambda: 1 in r.ended, 10, "the refusal, with the body still unsent")
    assert r.status(1) == 16 and "unknown or revoked token" in r.message(1), (r.hdrs, r.message(1))
    r.send_body(1, BOMB)
    assert r.check(3) == 0
    r.close()


def test_a_strangers_body_is_never_judged(c):
    """What a body holds is told only to a known caller: a compressed message, a second
    message or a bad frame flag from an unknown token is UNAUTHENTICATED whether the body comes
    with the headers (framed while the token is looked up) or after the lookup answered; with
    a valid token the fault is told, with the body early or late."""
    import struct
    bodies = {
        "compressed": (struct.pack(">BI", 1, 2) + b"\x08\x01", 12, "compressed messages are not supported"),
        "two messages": (grpc_msg(b"") + grpc_msg(b""), 3, "more than one request message"),
        "flag byte 7": (struct.pack(">BI", 7, 2) + b"\x08\x01", 13, "bad compressed-flag byte"),
    }
    r = Raw(c.srv.addr)
    sid = 1
    for token, known in (("ct_" + "1" * 64, False), (c.token, True)):
        extra = lit("authorization", f"Bearer {token}")
        for name, (body, code, msg) in bodies.items():
            for late in (False, True):
                head = headers_frames(sid, request_block(GET_CALLER, extra))
                if late:
                    r.send(head)
                    time.sleep(0.3)
                    r.send(frame(DATA, END_STREAM, sid, body))
                else:
                    r.send(head + frame(DATA, END_STREAM, sid, body))
                s = sid
                r.until(lambda: s in r.ended, 10, f"stream {s}")
                got = (r.status(s), r.message(s))
                if known:
                    assert got[0] == code and msg in got[1], (name, late, got)
                else:
                    assert got == (16, "unknown or revoked token, or disabled user"), (name, late, got)
                sid += 2
    assert r.check(sid) == 0
    r.close()


def test_unauthenticated_bombs(c):
    # 8 requests, each a 4 MiB SubmitClueRequest of 2 million empty strings, bogus token.
    before = rss_kb(c.pid)
    with HealthProbe(c.srv.addr) as probe:
        for round_ in range(2):
            r = Raw(c.srv.addr)
            sids = list(range(1, 17, 2))
            for sid in sids:
                r.send(submit_headers(sid, "ct_" + "1" * 64))
            for sid in sids:
                r.send_body(sid, BOMB)
            r.until(lambda: all(s in r.ended for s in sids), 60, "the answers")
            statuses = [r.status(s) for s in sids]
            assert r.check(17) == 0
            r.close()
    after = rss_kb(c.pid)
    report("8 x 4 MiB of empty strings, bogus token, twice", before, after, 24)
    probe.assert_prompt()
    assert statuses == [16] * 8, statuses


def test_unfinished_uploads_before_login(c):
    # 20 streams upload 4 MiB bodies that never end, with a bogus token.
    before = rss_kb(c.pid)
    with HealthProbe(c.srv.addr) as probe:
        conns = []
        for i in range(2):
            r = Raw(c.srv.addr)
            sids = list(range(1, 21, 2))
            for sid in sids:
                r.send(submit_headers(sid, "ct_" + "2" * 64))
            for sid in sids:
                r.send_body(sid, BOMB[:-1], end_stream=False)
            conns.append((r, sids))
        mid = rss_kb(c.pid)
        for r, sids in conns:
            r.until(lambda: all(s in r.ended for s in sids), 30, "the refusals")
            assert [r.status(s) for s in sids] == [16] * len(sids), r.hdrs
            assert r.check(21) == 0
            r.close()
    report("20 unfinished 4 MiB uploads, bogus token", before, mid, 24)
    probe.assert_prompt()


def test_decode_budget(c):
    before = rss_kb(c.pid)
    with HealthProbe(c.srv.addr) as probe:
        # A write may wait while the server checks a 4 MiB message (seconds under ASan on a
        # loaded machine): the socket's timeout is generous; memory and answers are the test.
        r = Raw(c.srv.addr, timeout=60)
        sids = list(range(1, 17, 2))
        for sid in sids:
            r.send(submit_headers(sid, c.token))
            r.send_body(sid, BOMB)
        r.until(lambda: all(s in r.ended for s in sids), 60, "the answers")
        statuses = [r.status(s) for s in sids]
        msg = r.message(1)
        assert r.check(17) == 0
        r.close()
    after = rss_kb(c.pid)
    report("8 x 4 MiB of empty strings, valid token", before, after, 48)
    probe.assert_prompt()
    assert statuses == [8] * 8, statuses
    assert "decodes to more than" in msg, msg
    # An ordinary request of the same caller decodes and reaches the handler (which refuses
    # an ADMIN's submission on its merits, not for its size).
    r = Raw(c.srv.addr)
    r.send(submit_headers(1, c.token))
    r.send_body(1, grpc_msg(b"\x42\x03abc" * 1000))
    r.until(lambda: 1 in r.ended, 10, "the answer")
    assert r.status(1) not in (8, 16, None), (r.status(1), r.message(1))
    r.close()


def test_deadline_while_authenticating_and_slow_body(c):
    # A valid token and a body that trickles in: the call waits for it, then runs.
    r = Raw(c.srv.addr)
    r.send(submit_headers(1, c.token))
    time.sleep(0.3)
    body = grpc_msg(b"\x42\x03abc")
    r.send_body(1, body[:3], end_stream=False)
    time.sleep(0.2)
    r.send_body(1, body[3:])
    r.until(lambda: 1 in r.ended, 10, "the answer")
    assert r.status(1) not in (8, 16, None), (r.status(1), r.message(1))
    r.close()
    assert harness.cluectl("--server", c.srv.addr, "health", check=0).stdout.strip() == "SERVING"


REFLECT = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
# A HealthCheckRequest whose service name is 4,000,000 bytes: a whole message under
# --max-message-bytes (4 MiB), a thousand times what a Health/Check needs.
BIG_CHECK = grpc_msg(b"\x0a" + bytes([0x80 | (4_000_000 & 127), 0x80 | ((4_000_000 >> 7) & 127),
                                      4_000_000 >> 14]) + b"u" * 4_000_000)


def test_public_methods_take_small_requests(c):
    """Health/Check needs no token, so its body used to be read at once, up to 4 MiB a
    message: 32 streams sending all but the last byte of one held --max-conn-inbound (128
    MiB) per connection for good. Now a message over 64 KiB is RESOURCE_EXHAUSTED at its
    prefix, a connection keeps at most 1 MiB of unfinished public requests, and one that is
    not whole within --handshake-timeout (2 s here) ends with DEADLINE_EXCEEDED."""
    srv = start_clued("--handshake-timeout", "2s")
    try:
        before = rss_kb(srv.proc.pid)
        with HealthProbe(srv.addr) as probe:
            conns = []
            for _ in range(3):
                r = Raw(srv.addr)
                sid = 1
                while sid < 80:  # until the server refuses one
                    r.send(headers_frames(sid, request_block()))
                    r.send_body(sid, BIG_CHECK[:-1], end_stream=False, timeout=5, stop=lambda: bool(r.ended))
                    r.read(0.1)
                    if r.ended:
                        break
                    sid += 2
                r.until(lambda: bool(r.ended), 10, "a refusal")
                conns.append(r)
            mid = rss_kb(srv.proc.pid)
            report("3 connections of unfinished 4 MiB Health/Checks", before, mid, 16)
            for r in conns:
                first = min(r.ended)
                assert r.status(first) == 8 and "65536" in r.message(first), (first, r.hdrs)
            # Many small unfinished requests: 60 KiB each, never ended.
            r = Raw(srv.addr)
            part = grpc_msg(b"\x0a" + bytes([0x80 | (60_000 & 127), 0x80 | ((60_000 >> 7) & 127), 60_000 >> 14])
                            + b"s" * 60_000)[:-1]
            sids = list(range(1, 61, 2))
            for sid in sids:
                r.send(headers_frames(sid, request_block()))
                r.send_body(sid, part, end_stream=False, timeout=5)
            # Past 1 MiB kept: RESOURCE_EXHAUSTED; the rest are not whole within the bound:
            # DEADLINE_EXCEEDED, each.
            t0 = time.time()
            r.until(lambda: all(s in r.ended for s in sids), 15, "every stream's end")
            took = time.time() - t0
            over = [s for s in sids if r.status(s) == 8]
            late = [s for s in sids if r.status(s) == 4]
            assert len(over) + len(late) == len(sids), [(s, r.status(s)) for s in sids]
            assert over and "1048576" in r.message(over[0]), r.hdrs[over[0]] if over else r.hdrs
            assert len(late) >= 10 and "--handshake-timeout" in r.message(late[0]), r.hdrs[late[0]]
            # A whole message without END_STREAM is no better.
            r.send(headers_frames(101, request_block()) + frame(DATA, 0, 101, grpc_msg()))
            r.until(lambda: 101 in r.ended, 6, "the unended request's end")
            assert r.status(101) == 4, r.hdrs.get(101)
            assert r.check(103) == 0
            r.close()
            for r in conns:
                assert r.check(201) == 0  # the connection serves on
                r.close()
        print(f"  unfinished public requests ended {took:.1f} s after the bound", flush=True)
        probe.assert_prompt()
        assert srv.proc.poll() is None
    finally:
        srv.stop()


def test_public_methods_bounded_over_http1(c):
    """The same over HTTP/1.1: gRPC-Web Health/Check with a 4 MiB content-length is refused
    before its body is read; one whose chunked body never ends gets DEADLINE_EXCEEDED."""
    srv = start_clued("--handshake-timeout", "2s")
    try:
        host, port = srv.addr.rsplit(":", 1)
        before = rss_kb(srv.proc.pid)
        socks = []
        for _ in range(8):
            s = socket.create_connection((host, int(port)))
            s.sendall(encode("POST", CHECK_PATH, b"", [("Content-Type", "application/grpc-web+proto"),
                                                       ("Content-Length", str(len(BIG_CHECK)))]))
            s.settimeout(5)
            rep = H1("", sock=s).read_reply()  # answered on the head: it used to wait for the body
            assert rep.grpc_status() == 8 and "needs no token" in rep.grpc_message(), rep.trailers()
            socks.append(s)
        for s in socks:  # what the clients send anyway is not kept
            try:
                s.sendall(BIG_CHECK[:-1])
            except OSError:
                pass
        time.sleep(0.5)
        mid = rss_kb(srv.proc.pid)
        for s in socks:
            s.close()
        report("8 unfinished 4 MiB HTTP/1.1 Health/Checks", before, mid, 8)
        h = H1(srv.addr)
        body = grpc_msg()
        h.send(encode("POST", CHECK_PATH, b"", [("Content-Type", "application/grpc-web+proto"),
                                                ("Transfer-Encoding", "chunked")]) + b"3\r\n" + body[:3] + b"\r\n")
        t0 = time.time()
        rep = h.read_reply()
        assert rep.grpc_status() == 4 and "--handshake-timeout" in rep.grpc_message(), rep.trailers()
        assert 1 <= time.time() - t0 < 6
        h.close()
    finally:
        srv.stop()


def test_stalled_uploads_end(c):
    """A reflection stream (public, client-streaming) may wait between its messages, not in the
    middle of one; an authenticated upload that stops mid-message ends after --idle-timeout."""
    srv = start_clued("--handshake-timeout", "2s", "--idle-timeout", "3s")
    try:
        token = world.bootstrap_token(srv)
        r = Raw(srv.addr)
        list_services = grpc_msg(b"\x3a\x00")
        r.send(headers_frames(1, request_block(REFLECT)) + frame(DATA, 0, 1, list_services))
        r.until(lambda: len(r.data.get(1, b"")) > 5, 10, "the first reflection reply")
        time.sleep(3.5)  # between messages: no bound but --max-unauth-stream-age
        r.read(0.1)
        assert 1 not in r.ended, r.hdrs.get(1)
        r.send(frame(DATA, 0, 1, list_services[:3]))  # part of the next message, then nothing
        t0 = time.time()
        r.until(lambda: 1 in r.ended, 8, "the stalled reflection message's end")
        assert r.status(1) == 4 and "--handshake-timeout" in r.message(1), r.hdrs.get(1)
        assert time.time() - t0 < 4
        # Authenticated, mid-message, then silence.
        r.send(submit_headers(3, token) + frame(DATA, 0, 3, BOMB[:1000]))
        t0 = time.time()
        r.until(lambda: 3 in r.ended, 10, "the stalled upload's end")
        assert r.status(3) == 4 and "--idle-timeout" in r.message(3), r.hdrs.get(3)
        assert 2 <= time.time() - t0 < 6
        assert r.check(5) == 0
        r.close()
    finally:
        srv.stop()


GET_CALLER = "/clue.v1.TokenService/GetCaller"


def get_caller(r, sid, extra, path=GET_CALLER):
    """A whole request with extra header fields; waits for its end (status or reset)."""
    r.send(headers_frames(sid, request_block(path, extra)) + frame(DATA, END_STREAM, sid, grpc_msg()))
    r.until(lambda: sid in r.ended, 10, f"stream {sid}")


def test_header_fields_with_nul_cr_lf_reset(c):
    """RFC 9113 8.2.1: a field name or value holding NUL, CR or LF makes the request
    malformed, a stream error PROTOCOL_ERROR (8.1.1). Such fields used to reach the call and
    be read as C strings cut at the NUL: a token followed by NUL and junk authenticated, so
    did a field named "authorization\\0x", and "grpc-timeout: 1S\\0garbage" was 1 s."""
    bearer = "Bearer " + c.token
    r = Raw(c.srv.addr)
    get_caller(r, 1, lit("authorization", bearer))
    assert r.status(1) == 0, (r.hdrs.get(1), r.rst)  # the token is good
    cases = [(GET_CALLER, lit("authorization", bearer + "\0junk")),
             (GET_CALLER, lit("authorization\0x", bearer)),
             (GET_CALLER, lit("authorization\0", bearer)),
             (GET_CALLER, lit("authorization", bearer) + lit("x-note", "a\r\nb")),
             (GET_CALLER, lit("authorization", bearer) + lit("x-note\n", "a")),
             (CHECK_PATH, lit("grpc-timeout", "1S\0garbage")),
             (CHECK_PATH, lit("grpc-timeout", "1S\r"))]
    sid = 3
    for path, extra in cases:
        get_caller(r, sid, extra, path)
        assert r.status(sid) is None and r.rst.get(sid) == PROTOCOL_ERROR, (path, extra, r.hdrs.get(sid), r.rst)
        sid += 2
    # White space around a value is malformed too, but such a field still reaches the call,
    # which says what is wrong with it: a status, not a reset.
    get_caller(r, sid, lit("authorization", " " + bearer))
    assert r.status(sid) == 16 and "Bearer" in r.message(sid), (r.hdrs.get(sid), r.rst)
    assert r.check(sid + 2) == 0 and r.goaway is None
    r.close()
    harness.wait_for(lambda: "NUL, CR or LF" in c.srv.output(), what="the refusal in the log")


def test_repeated_authorization_refused(c):
    """Two different authorization fields are refused as a repeated request header
    (UNAUTHENTICATED), whichever comes first: the last one used to win. The same one twice is
    one caller. Other headers read once answer as before (HTTP 400, INTERNAL), now naming the
    header."""
    bogus = lit("authorization", "Bearer ct_" + "3" * 64)
    good = lit("authorization", "Bearer " + c.token)
    r = Raw(c.srv.addr)
    other = lit("authorization", "Bearer ct_" + "4" * 64)
    for sid, extra in ((1, bogus + good), (3, good + bogus), (5, bogus + other)):
        get_caller(r, sid, extra)
        assert r.status(sid) == 16 and "repeated authorization" in r.message(sid), (sid, r.hdrs.get(sid))
    get_caller(r, 7, good)
    assert r.status(7) == 0, r.hdrs.get(7)
    get_caller(r, 9, lit("grpc-timeout", "5S") + lit("grpc-timeout", "1S"), CHECK_PATH)
    assert r.hdrs[9][0][":status"] == "400" and r.status(9) == 13, r.hdrs.get(9)
    assert r.message(9) == "repeated request header grpc-timeout", r.message(9)
    get_caller(r, 11, good + good)
    assert r.status(11) == 0, r.hdrs.get(11)
    r.close()


if __name__ == "__main__":
    harness.run_tests(globals(), setup, teardown)
