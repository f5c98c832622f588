"""SETTINGS_MAX_CONCURRENT_STREAMS (--max-concurrent-streams): a HEADERS frame that opens a
stream past the advertised limit is a stream error (RFC 9113 5.1.2). That stream alone is
reset with REFUSED_STREAM, which tells a gRPC client nothing was processed (it retries it);
the connection and its other calls go on. Refusals are budgeted: a client that keeps opening
streams past the limit has its connection ended with GOAWAY ENHANCE_YOUR_CALM."""

import os
import struct
import sys

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from hostile import (ACK, DATA, END_STREAM, ENHANCE_YOUR_CALM, HEADERS, PING, REFUSED_STREAM,  # noqa: E402
                     RST_STREAM, Raw, frame, grpc_msg, headers_frames, request_block, start_clued)

MAX = 4          # --max-concurrent-streams here
BURST = 1000     # refusals a connection may have at once (H2_REFUSED_BURST in net/h2_conn.c)
SETTINGS_MAX_CONCURRENT_STREAMS = 3


class Ctx:
    pass


def setup():
    c = Ctx()
    c.srv = start_clued("--max-concurrent-streams", str(MAX))
    return c


def teardown(c):
    c.srv.stop()


def settled(addr):
    """A connection whose SETTINGS the server has seen acknowledged: the server's PING answer
    comes after it has read our ACK, so the limit is the acknowledged one."""
    r = Raw(addr)
    r.until(lambda: r.server_settings is not None, 5, "the server's SETTINGS")
    r.send(frame(PING, 0, 0, struct.pack(">Q", 7)))
    r.until(lambda: any(f[0] == PING and f[1] & ACK for f in r.frames), 5, "the PING's answer")
    assert r.server_settings.get(SETTINGS_MAX_CONCURRENT_STREAMS) == MAX, r.server_settings
    return r


def open_held(r, sids):
    """Health/Check streams whose request has not come yet: they stay open."""
    r.send(b"".join(headers_frames(sid, request_block()) for sid in sids))


def finish(r, sids):
    r.send(b"".join(frame(DATA, END_STREAM, sid, grpc_msg()) for sid in sids))
    r.until(lambda: all(sid in r.ended for sid in sids), 10, "the held calls' answers")
    return [r.status(sid) for sid in sids]


def test_a_stream_past_the_limit_is_refused_alone(c):
    r = settled(c.srv.addr)
    held = [2 * i + 1 for i in range(MAX)]
    extra = 2 * MAX + 1
    open_held(r, held)
    r.send(headers_frames(extra, request_block()) + frame(DATA, END_STREAM, extra, grpc_msg()))
    r.until(lambda: extra in r.ended, 10, f"stream {extra}'s end")
    assert r.goaway is None, f"the connection was ended: GOAWAY {r.goaway}"
    assert r.rst.get(extra) == REFUSED_STREAM, r.rst
    # Refused unprocessed: no reply of any kind on it, one reset.
    assert extra not in r.hdrs and extra not in r.data, (r.hdrs.get(extra), r.data.get(extra))
    assert sum(1 for f in r.frames if f[0] == RST_STREAM and f[2] == extra) == 1
    # The calls under the limit are served, and once they are over a new one is too.
    assert finish(r, held) == [0] * MAX
    assert not any(sid in r.rst and r.rst[sid] != 0 for sid in held), r.rst
    assert r.check(extra + 2) == 0
    # A batch well over the limit, within the budget: each one past it refused.
    held = [extra + 4 + 2 * i for i in range(MAX)]
    over = [held[-1] + 2 + 2 * i for i in range(50)]
    open_held(r, held + over)
    r.until(lambda: all(sid in r.ended for sid in over), 10, "the refusals")
    assert all(r.rst.get(sid) == REFUSED_STREAM for sid in over), r.rst
    assert finish(r, held) == [0] * MAX
    assert r.check(over[-1] + 2) == 0
    r.read(0.2)
    assert r.goaway is None, r.goaway
    r.close()
    harness.wait_for(lambda: "past SETTINGS_MAX_CONCURRENT_STREAMS" in c.srv.output(), 5,
                     what="the refusal in the log")


def test_a_flood_of_refused_streams_ends_the_connection(c):
    r = settled(c.srv.addr)
    held = [2 * i + 1 for i in range(MAX)]
    open_held(r, held)
    flood = [2 * MAX + 1 + 2 * i for i in range(BURST + 100)]
    r.send(b"".join(headers_frames(sid, request_block()) for sid in flood))
    assert r.wait_closed(10), "the server kept the connection"
    assert r.goaway is not None, f"closed without GOAWAY; frames {[f[0] for f in r.frames][-5:]}"
    assert r.goaway[1] == ENHANCE_YOUR_CALM, r.goaway
    refused = [sid for sid in flood if r.rst.get(sid) == REFUSED_STREAM]
    assert len(refused) <= BURST, len(refused)
    assert not any(f[0] == HEADERS and f[2] in flood for f in r.frames)
    r.close()
    harness.wait_for(lambda: "ENHANCE_YOUR_CALM" in c.srv.output(), 5, what="the GOAWAY in the log")
    # Others are served on.
    ok = Raw(c.srv.addr)
    assert ok.check(1) == 0
    ok.close()


if __name__ == "__main__":
    harness.run_tests(globals(), setup, teardown)
