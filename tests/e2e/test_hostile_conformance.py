"""RFC 9113 connection errors: each protocol violation the RFC makes a connection error ends the
connection with GOAWAY carrying the right error code, then a close, and clued serves on.

One test per violation, written as raw frames. Among them the case h2spec found ignored: a
HEADERS frame on a stream id lower than one the client already used (5.1.1)."""

import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from hostile import (CONTINUATION, DATA, END_HEADERS, END_STREAM, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR,  # noqa: E402
                     GOAWAY, HEADERS, PADDED, PING, PRIORITY, PROTOCOL_ERROR, PUSH_PROMISE, RST_STREAM, SETTINGS,
                     WINDOW_UPDATE, COMPRESSION_ERROR, STREAM_CLOSED, ACK, Raw, frame, grpc_msg, headers_frames,
                     request_block, rss_kb, settings, start_clued)


class Ctx:
    pass


def setup():
    c = Ctx()
    c.srv = start_clued()
    return c


def teardown(c):
    c.srv.stop()


def expect_goaway(c, payload, code, last_sid=None, what=""):
    """Handshake, send payload, and expect GOAWAY(code) followed by the server closing."""
    r = Raw(c.srv.addr)
    # Wait for the server's SETTINGS (and ack it) so the violation is judged on an open session.
    r.until(lambda: any(f[0] == SETTINGS for f in r.frames), 5, "server SETTINGS")
    r.send(payload)
    assert r.wait_closed(10), f"{what}: the server kept the connection open"
    assert r.goaway is not None, f"{what}: closed without GOAWAY; frames {[f[0] for f in r.frames]}"
    assert r.goaway[1] == code, f"{what}: GOAWAY code {r.goaway[1]}, wanted {code} ({r.goaway[2]!r})"
    if last_sid is not None:
        assert r.goaway[0] == last_sid, f"{what}: last stream id {r.goaway[0]}, wanted {last_sid}"
    r.close()
    assert c.srv.alive()
    # The server serves on.
    ok = Raw(c.srv.addr)
    assert ok.check(1) == 0
    ok.close()
    return r


def check(sid):
    return headers_frames(sid, request_block()) + frame(DATA, END_STREAM, sid, grpc_msg())


def test_headers_on_lower_stream_id(c):
    # 5.1.1: stream 5 opened, then HEADERS on 3, which the client skipped.
    expect_goaway(c, check(5) + check(3), PROTOCOL_ERROR, last_sid=5, what="HEADERS on stream 3 after 5")
    # The log line is written as the GOAWAY goes out; the reader thread may take a moment.
    harness.wait_for(lambda: "which the client skipped" in c.srv.output(), timeout=10, what="the reason in the log")
    # Gaps after several streams: 1, 3, 9 used; 7 was skipped.
    expect_goaway(c, check(1) + check(3) + check(9) + check(7), PROTOCOL_ERROR, what="HEADERS on stream 7 after 9")
    # Trailers on a stream the client did use stay legal after later streams: no error.
    r = Raw(c.srv.addr)
    r.send(headers_frames(1, request_block()) + frame(DATA, 0, 1, grpc_msg()) + check(3))
    r.until(lambda: 3 in r.ended, 10, "stream 3")
    r.send(headers_frames(1, b"", end_stream=True))  # an empty trailer block ends stream 1
    assert r.check(5) == 0
    assert r.goaway is None, r.goaway
    r.close()


def test_headers_on_even_stream_id(c):
    expect_goaway(c, check(2), PROTOCOL_ERROR, what="HEADERS on even stream 2")


def test_headers_on_stream_zero(c):
    expect_goaway(c, headers_frames(0, request_block(), end_stream=True), PROTOCOL_ERROR, what="HEADERS on stream 0")


def test_data_on_stream_zero(c):
    expect_goaway(c, frame(DATA, 0, 0, b"ab"), PROTOCOL_ERROR, what="DATA on stream 0")


def test_data_on_idle_stream(c):
    expect_goaway(c, frame(DATA, 0, 1, b"ab"), PROTOCOL_ERROR, what="DATA on idle stream 1")


def test_data_on_closed_stream(c):
    # 5.1: DATA after the client's END_STREAM on a stream the server also closed.
    r = Raw(c.srv.addr)
    assert r.check(1) == 0
    r.send(frame(DATA, 0, 1, b"late"))
    assert r.wait_closed(10)
    assert r.goaway is not None and r.goaway[1] == STREAM_CLOSED, r.goaway
    r.close()


def test_headers_on_closed_stream(c):
    # 5.1: a trailer HEADERS after the client's END_STREAM, on a stream the server also closed,
    # when further calls came between (the server keeps no closed stream of its own).
    r = Raw(c.srv.addr)
    for sid in (1, 3, 5):
        assert r.check(sid) == 0
    r.send(headers_frames(3, b"\x40\x01x\x01y", end_stream=True))
    assert r.wait_closed(10)
    assert r.goaway is not None and r.goaway[1] == STREAM_CLOSED, r.goaway
    r.close()
    assert c.srv.alive()


def test_priority_frames_served_on(c):
    # PRIORITY on idle, open and closed streams, and HEADERS with a priority, change nothing:
    # the calls are answered and the connection stays up.
    r = Raw(c.srv.addr)
    assert r.check(1) == 0
    r.send(b"".join(frame(PRIORITY, 0, 2 * i + 3, struct.pack(">IB", 1, 16)) for i in range(200)))
    r.send(frame(PRIORITY, 0, 1, struct.pack(">IB", 0, 200)))
    assert r.check(405) == 0
    assert r.goaway is None, r.goaway
    r.close()


def test_settings_bad_length(c):
    expect_goaway(c, frame(SETTINGS, 0, 0, b"\x00\x03\x00\x00"), FRAME_SIZE_ERROR, what="SETTINGS of 4 bytes")


def test_settings_ack_with_payload(c):
    expect_goaway(c, frame(SETTINGS, ACK, 0, b"\x00\x03\x00\x00\x00\x01"), FRAME_SIZE_ERROR, what="SETTINGS ACK with payload")


def test_settings_on_a_stream(c):
    expect_goaway(c, frame(SETTINGS, 0, 1, b""), PROTOCOL_ERROR, what="SETTINGS on stream 1")


def test_settings_bad_values(c):
    expect_goaway(c, settings([(2, 2)]), PROTOCOL_ERROR, what="ENABLE_PUSH 2")
    expect_goaway(c, settings([(4, 1 << 31)]), FLOW_CONTROL_ERROR, what="INITIAL_WINDOW_SIZE 2^31")
    expect_goaway(c, settings([(5, 16383)]), PROTOCOL_ERROR, what="MAX_FRAME_SIZE 16383")
    expect_goaway(c, settings([(5, 1 << 24)]), PROTOCOL_ERROR, what="MAX_FRAME_SIZE 2^24")


def test_ping_bad(c):
    expect_goaway(c, frame(PING, 0, 0, b"1234567"), FRAME_SIZE_ERROR, what="PING of 7 bytes")
    expect_goaway(c, frame(PING, 0, 1, b"12345678"), PROTOCOL_ERROR, what="PING on stream 1")


def test_goaway_on_a_stream(c):
    expect_goaway(c, frame(GOAWAY, 0, 1, struct.pack(">II", 0, 0)), PROTOCOL_ERROR, what="GOAWAY on stream 1")


def test_window_update_bad(c):
    expect_goaway(c, frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0)), PROTOCOL_ERROR, what="WINDOW_UPDATE 0")
    expect_goaway(c, frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x01"), FRAME_SIZE_ERROR, what="WINDOW_UPDATE of 3 bytes")
    expect_goaway(c, frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7FFFFFFF)), FLOW_CONTROL_ERROR,
                  what="connection window over 2^31-1")


def test_rst_stream_bad(c):
    expect_goaway(c, frame(RST_STREAM, 0, 0, struct.pack(">I", 8)), PROTOCOL_ERROR, what="RST_STREAM on stream 0")
    expect_goaway(c, frame(RST_STREAM, 0, 1, struct.pack(">I", 8)), PROTOCOL_ERROR, what="RST_STREAM on idle stream")
    expect_goaway(c, headers_frames(1, request_block()) + frame(RST_STREAM, 0, 1, b"\x00\x00\x08"), FRAME_SIZE_ERROR,
                  what="RST_STREAM of 3 bytes")


def test_push_promise_from_client(c):
    expect_goaway(c, frame(PUSH_PROMISE, END_HEADERS, 1, struct.pack(">I", 2) + request_block()), PROTOCOL_ERROR,
                  what="PUSH_PROMISE from a client")


def test_continuation_out_of_place(c):
    expect_goaway(c, frame(CONTINUATION, END_HEADERS, 1, request_block()), PROTOCOL_ERROR,
                  what="CONTINUATION without HEADERS")
    # HEADERS without END_HEADERS, then another frame type.
    expect_goaway(c, frame(HEADERS, 0, 1, request_block()) + frame(PING, 0, 0, b"12345678"), PROTOCOL_ERROR,
                  what="PING inside a header block")
    # CONTINUATION on another stream than its HEADERS.
    expect_goaway(c, frame(HEADERS, 0, 1, request_block()) + frame(CONTINUATION, END_HEADERS, 3, b""),
                  PROTOCOL_ERROR, what="CONTINUATION on another stream")


def test_frame_over_max_size(c):
    expect_goaway(c, headers_frames(1, request_block(), max_frame=1 << 20)[:0]
                  + frame(HEADERS, END_HEADERS, 1, request_block() + b"\x00" * 20000), FRAME_SIZE_ERROR,
                  what="HEADERS of 20 KB over a 16 KiB maximum frame size")


def test_hpack_decoding_error(c):
    # Index 200 is in neither table.
    expect_goaway(c, frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\x83\x86\xff\x49"), COMPRESSION_ERROR,
                  what="HPACK reference to no entry")


def test_padding_too_long(c):
    expect_goaway(c, frame(HEADERS, END_HEADERS | PADDED, 1, bytes([200]) + request_block()), PROTOCOL_ERROR,
                  what="HEADERS padding longer than the frame")


def test_priority_on_stream_zero(c):
    expect_goaway(c, frame(PRIORITY, 0, 0, struct.pack(">IB", 1, 16)), PROTOCOL_ERROR, what="PRIORITY on stream 0")


def test_no_memory_left_behind(c):
    # A thousand connections ended by protocol errors leave nothing behind.
    before = rss_kb(c.srv.proc.pid)
    for i in range(1000):
        r = Raw(c.srv.addr)
        r.send(check(5) + check(3))
        r.wait_closed(5)
        r.close()
    time.sleep(0.2)
    after = rss_kb(c.srv.proc.pid)
    print(f"  1,000 connections ended by PROTOCOL_ERROR: RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB")
    assert after - before < 16 * 1024
    assert harness.cluectl("--server", c.srv.addr, "health", check=0).stdout.strip() == "SERVING"


if __name__ == "__main__":
    harness.run_tests(globals(), setup, teardown)
