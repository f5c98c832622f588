"""Authentication before the body, and a bounded decode.

A call that needs a caller is authenticated on its headers alone: without a valid token it
gets UNAUTHENTICATED before its body has arrived, and what it still uploads is dropped as it
arrives, never kept or decoded. An authenticated call's request is decoded into a per-call
arena whose budget is proportional to the message size, so a 4 MiB message of two million
empty strings is refused (RESOURCE_EXHAUSTED) instead of costing a hundred megabytes.

Each attack measures clued's RSS before and after and runs a Health/Check probe meanwhile."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
import world  # noqa: E402
from hostile import (HealthProbe, Raw, grpc_msg, headers_frames, lit, report, request_block,  # noqa: E402
                     rss_kb, start_clued)

SUBMIT = "/clue.v1.ClueService/SubmitClue"
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


if __name__ == "__main__":
    harness.run_tests(globals(), setup, teardown)
