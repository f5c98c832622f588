"""Header limits against hostile clients: the decoded header list (HPACK references counted in
full) and the number of fields are bounded. A request over either is refused with
RESOURCE_EXHAUSTED without its headers being kept, and the connection serves on. A block
past 4 times a limit is an attack: its stream is reset (INTERNAL_ERROR) and the rest of the
block is decoded without being validated or handed over, which keeps its CPU cost small.

Each attack measures clued's RSS before and after and runs a Health/Check probe on another
connection meanwhile."""

import os
import struct
import sys

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from hostile import (COMPRESSION_ERROR, CONTINUATION, DATA, END_STREAM, HEADERS, PROTOCOL_ERROR,  # noqa: E402
                     SETTINGS, HealthProbe, Raw, frame, grpc_msg, headers_frames, indexed, lit, report,
                     request_block, rss_kb, start_clued)

BIG = "v" * 4000  # with its name and the 32-byte overhead, one entry of a 4 KiB HPACK table


class Ctx:
    pass


def setup():
    c = Ctx()
    c.srv = start_clued()
    c.pid = c.srv.proc.pid
    # Warm up: the first calls allocate what every later call reuses.
    r = Raw(c.srv.addr)
    for sid in range(1, 40, 2):
        assert r.check(sid) == 0
    r.close()
    return c


def teardown(c):
    c.srv.stop()


def amplified_block(refs):
    """One 4 KB field indexed once, then referenced `refs` times by its 1-byte index."""
    return request_block(extra=lit("x-big", BIG, index=True) + indexed(62) * refs)


def test_hpack_amplification(c):
    before = rss_kb(c.pid)
    with HealthProbe(c.srv.addr) as probe:
        for round_ in range(3):
            r = Raw(c.srv.addr)
            sids = [1, 3, 5, 7]
            for sid in sids:
                # 40,000 references: about 160 MB decoded, sent in HEADERS + CONTINUATION frames
                # of about 56 KB in all.
                r.send(headers_frames(sid, amplified_block(40000), end_stream=False))
                r.send(frame(DATA, END_STREAM, sid, grpc_msg()))
            r.until(lambda: all(s in r.ended for s in sids), 60, "the answers")
            resets = [r.rst.get(sid) for sid in sids]
            # The connection lives on and serves a normal call.
            assert r.check(9) == 0
            assert r.goaway is None, r.goaway
            r.close()
    after = rss_kb(c.pid)
    report("HPACK amplification, 3 x 4 streams x 40,000 references", before, after, 16)
    probe.assert_prompt()
    assert resets == [2] * 4, resets  # INTERNAL_ERROR
    harness.wait_for(lambda: "request headers past 4 times the limit" in c.srv.output(), what="the log")


def test_over_the_limit_refused_with_a_status(c):
    # Over the limit but not 4 times over (a client with too much metadata): a gRPC status.
    before = rss_kb(c.pid)
    r = Raw(c.srv.addr)
    sids = [1, 3, 5, 7]
    for sid in sids:
        r.send(headers_frames(sid, amplified_block(40), end_stream=False))
        r.send(frame(DATA, END_STREAM, sid, grpc_msg()))
    r.until(lambda: all(s in r.ended for s in sids), 20, "the refusals")
    for sid in sids:
        assert r.status(sid) == 8 and "request headers too large" in r.message(sid), (r.hdrs.get(sid), r.rst)
    assert r.check(9) == 0
    r.close()
    report("4 streams x 40 references", before, rss_kb(c.pid), 8)


def test_too_many_fields(c):
    before = rss_kb(c.pid)
    r = Raw(c.srv.addr)
    extra = b"".join(lit(f"x-f{i}", "v") for i in range(300))
    r.send(headers_frames(1, request_block(extra=extra), end_stream=False) + frame(DATA, END_STREAM, 1, grpc_msg()))
    r.until(lambda: 1 in r.ended, 10, "the refusal")
    assert r.status(1) == 8 and "fields" in r.message(1), (r.hdrs, r.rst)
    assert r.check(3) == 0
    r.close()
    report("300 header fields", before, rss_kb(c.pid), 8)
    # 2,000 fields: past 4 times the limit, the stream is reset.
    r = Raw(c.srv.addr)
    extra = b"".join(lit(f"x-f{i}", "v") for i in range(2000))
    r.send(headers_frames(1, request_block(extra=extra), end_stream=True))
    r.until(lambda: 1 in r.ended, 10, "the reset")
    assert r.rst.get(1) == 2, (r.hdrs, r.rst)
    assert r.check(3) == 0
    r.close()


def test_under_the_limits_served(c):
    # Five 12 KB metadata values: about 60 KB decoded, under 64 KiB.
    r = Raw(c.srv.addr)
    extra = b"".join(lit(f"x-m{i}", "m" * 12000) for i in range(5))
    r.send(headers_frames(1, request_block(extra=extra)) + frame(DATA, END_STREAM, 1, grpc_msg()))
    r.until(lambda: 1 in r.ended, 10, "the answer")
    assert r.status(1) == 0, (r.hdrs, r.rst)
    # Literal fields over the limit (HPACK itself caps one field at 64 KiB) are refused too.
    extra = lit("x-huge", "h" * 60000) + lit("x-more", "i" * 10000)
    r.send(headers_frames(3, request_block(extra=extra)) + frame(DATA, END_STREAM, 3, grpc_msg()))
    r.until(lambda: 3 in r.ended, 10, "the refusal")
    assert r.status(3) == 8, (r.hdrs, r.rst)
    assert r.check(5) == 0
    r.close()


def test_configured_limits_advertised_and_enforced(c):
    srv = harness.Clued(harness.test_database_url(), args=["--max-header-bytes", "4096", "--max-headers", "16"]).start()
    try:
        r = Raw(srv.addr)
        r.until(lambda: any(f[0] == SETTINGS and not f[1] & 1 for f in r.frames), 5, "SETTINGS")
        p = next(f[3] for f in r.frames if f[0] == SETTINGS and not f[1] & 1)
        adv = dict(struct.unpack(">HI", p[i:i + 6]) for i in range(0, len(p), 6))
        assert adv.get(6) == 4096, adv  # SETTINGS_MAX_HEADER_LIST_SIZE
        r.send(headers_frames(1, request_block(extra=lit("x-a", "a" * 4000))) + frame(DATA, END_STREAM, 1, grpc_msg()))
        r.send(headers_frames(3, request_block(extra=b"".join(lit(f"x-{i}", "b") for i in range(20))))
               + frame(DATA, END_STREAM, 3, grpc_msg()))
        r.until(lambda: 1 in r.ended and 3 in r.ended, 10, "the refusals")
        assert r.status(1) == 8 and r.status(3) == 8, r.hdrs
        assert r.check(5) == 0
        r.close()
        assert harness.cluectl("--server", srv.addr, "health", check=0).stdout.strip() == "SERVING"
    finally:
        srv.stop()
    out = harness.Clued().run("help").stdout
    assert "--max-header-bytes" in out and "--max-headers" in out



def test_block_in_small_frames_served(c):
    # About 60 KB, under 64 KiB, in frames of 1 KiB: HEADERS and 58 CONTINUATION frames.
    # nghttp2's own bound (8 CONTINUATION frames) ended the connection with PROTOCOL_ERROR.
    extra = b"".join(lit(f"x-m{i}", "m" * 12000) for i in range(5))
    for size in (4096, 1024):
        r = Raw(c.srv.addr)
        r.send(headers_frames(1, request_block(extra=extra), max_frame=size) + frame(DATA, END_STREAM, 1, grpc_msg()))
        r.until(lambda: 1 in r.ended or r.goaway, 10, "the answer")
        assert r.goaway is None and r.status(1) == 0, (size, r.goaway, r.hdrs, r.rst)
        r.close()


def test_continuation_flood_bounded(c):
    # One CONTINUATION frame per KiB of --max-header-bytes (64): a block of more, empty ones
    # ends the connection, as nghttp2's bound is meant to.
    with HealthProbe(c.srv.addr) as probe:
        r = Raw(c.srv.addr)
        r.send(frame(HEADERS, 0, 1, request_block()) + frame(CONTINUATION, 0, 1) * 200)
        r.until(lambda: r.goaway is not None, 10, "the GOAWAY")
        assert r.goaway[1] == PROTOCOL_ERROR, r.goaway
        assert r.wait_closed()
    probe.assert_prompt()
    harness.wait_for(lambda: "Too many CONTINUATION frames" in c.srv.output(), what="the log")


def test_one_field_over_hpack_limit_ends_its_connection(c):
    # nghttp2's HPACK decoder takes no name or value over 65,536 bytes: the connection ends
    # with COMPRESSION_ERROR (its streams with it), never the server or another connection.
    other = Raw(c.srv.addr)
    other.send(headers_frames(1, request_block(path="/grpc.health.v1.Health/Watch")) + frame(DATA, END_STREAM, 1, grpc_msg()))
    other.until(lambda: 1 in other.data, 10, "the other connection's Watch")
    for n in (65536, 65537):
        r = Raw(c.srv.addr)
        r.send(headers_frames(1, request_block(path="/grpc.health.v1.Health/Watch")) + frame(DATA, END_STREAM, 1, grpc_msg()))
        r.until(lambda: 1 in r.data, 10, "the Watch")
        r.send(headers_frames(3, request_block(extra=lit("x-big", "a" * n))) + frame(DATA, END_STREAM, 3, grpc_msg()))
        r.until(lambda: 3 in r.ended or r.goaway is not None, 10, "an answer")
        if n == 65536:  # the longest HPACK takes: over --max-header-bytes, refused alone
            assert r.goaway is None and r.status(3) == 8, (r.goaway, r.hdrs, r.rst)
            assert r.check(5) == 0
        else:
            assert r.goaway is not None and r.goaway[1] == COMPRESSION_ERROR, (r.goaway, r.hdrs, r.rst)
            assert r.wait_closed()
        r.close()
    harness.wait_for(lambda: "request header block not decodable (HPACK)" in c.srv.output(), what="the log")
    assert other.check(3) == 0 and other.goaway is None
    assert 1 not in other.ended
    other.close()
    # A larger --max-header-bytes takes more fields of up to 64 KiB, not longer ones.
    srv = harness.Clued(harness.test_database_url(), args=["--max-header-bytes", "262144"]).start()
    try:
        r = Raw(srv.addr)
        extra = b"".join(lit(f"x-m{i}", "m" * 60000) for i in range(3))
        r.send(headers_frames(1, request_block(extra=extra), max_frame=1024) + frame(DATA, END_STREAM, 1, grpc_msg()))
        r.until(lambda: 1 in r.ended, 10, "the answer")
        assert r.status(1) == 0, (r.hdrs, r.rst, r.goaway)
        r.send(headers_frames(3, request_block(extra=lit("x-big", "a" * 100000))) + frame(DATA, END_STREAM, 3, grpc_msg()))
        r.until(lambda: r.goaway is not None, 10, "the GOAWAY")
        assert r.goaway[1] == COMPRESSION_ERROR, r.goaway
        r.close()
        assert harness.cluectl("--server", srv.addr, "health", check=0).stdout.strip() == "SERVING"
    finally:
        srv.stop()

if __name__ == "__main__":
    harness.run_tests(globals(), setup, teardown)
