"""cluectl and libclue against a hostile server: h2fake.py's hand-written HTTP/2 frames.

What a server sends reaches the terminal without its control characters (grpc-message, the
error details, GOAWAY's debug data, page tokens and every text field a command prints), and
so does the text of a `clue submit --file` that an error quotes; a grpc-status past 16 is
UNKNOWN, with UNKNOWN's retry note on a write;
--all stops at a page token it was given before and collects a bounded listing; a call the
server refused unprocessed (GOAWAY below its stream, RST_STREAM(REFUSED_STREAM)) is sent
again once on a new connection, which is what keeps `audit witness` alive across a
server's idle GOAWAY; unary calls carry a default deadline and watches none, and a watch
ends with exit status 0 at --timeout only if the server answered it. The audit
walks (verify --checkpoint, checkpoint --out, witness) refuse a checkpoint size no tree
holds, read no leaf past its length, and end whatever the server's pages say; a leaves file
is held to its size before anything is allocated for its claim, and a witness whose server
has lost every checkpoint, the one it kept among them, fails. An answer
takes a bounded amount of memory to decode, and a page of more rows than any clued sends is
refused.
"""

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from h2fake import (DATA, FakeServer, INTERNAL_ERROR, NO_ERROR, OK_HEADERS, PUSH_PROMISE,  # noqa: E402
                    REFUSED_STREAM, SETTINGS, WINDOW_UPDATE, END_HEADERS, frame, grpc_frame,
                    hpack_block)

S = harness.stubs()
ESC = "\x1b]0;PWNED-TITLE\x07\x1b[2J\x1b[31mRED\x1b[0m\rover"
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


def ctl(srv, *args, check=None):
    return harness.cluectl(*args, env={"CLUED_SERVER": srv.addr, "CLUED_TOKEN": "t"}, check=check)


def ctl_bounded(srv, *args, check, timeout=30):
    """cluectl that must end by itself within timeout seconds (a walk the server's pages
    never end runs for ever)."""
    try:
        r = subprocess.run([harness.CLUECTL, *args], capture_output=True, text=True, timeout=timeout,
                           env=dict(os.environ, CLUED_SERVER=srv.addr, CLUED_TOKEN="t",
                                    ASAN_OPTIONS="detect_leaks=1"))
    except subprocess.TimeoutExpired:
        raise AssertionError(f"cluectl {' '.join(args)} still running after {timeout} s "
                             f"({len(srv.requests)} requests)") from None
    harness._assert_clean(r.stderr)
    assert r.returncode == check, f"cluectl {' '.join(args)} exited {r.returncode}:\n{r.stdout}{r.stderr}"
    return r


def assert_clean(r, *want):
    """No control character (but the line break) in what cluectl printed, and each of want
    (the server's text without its controls) in it."""
    out = r.stdout + r.stderr
    bad = CONTROL.search(out)
    assert bad is None, f"control character {bad.group()!r} in output:\n{out!r}"
    for w in want:
        assert w in out, f"{w!r} not in output:\n{out!r}"


def pb_field(num, wt, val):
    """One protobuf field by hand, for google.rpc messages the stubs do not have."""
    def varint(n):
        out = b""
        while True:
            b, n = n & 127, n >> 7
            if n:
                out += bytes([b | 128])
            else:
                return out + bytes([b])
    key = varint(num << 3 | wt)
    if wt == 0:
        return key + varint(val)
    val = val.encode() if isinstance(val, str) else val
    return key + varint(len(val)) + val


# ---- 1. the server's text on the terminal ------------------------------------------------

def test_status_message_and_details_without_controls():
    bad_request = pb_field(1, 2, pb_field(1, 2, "field" + ESC) + pb_field(2, 2, "desc" + ESC))
    precondition = pb_field(1, 2, pb_field(1, 2, "TYPE" + ESC) + pb_field(2, 2, "subj" + ESC)
                            + pb_field(3, 2, "what" + ESC))
    info = pb_field(1, 2, "REASON" + ESC) + pb_field(3, 2, pb_field(1, 2, "k" + ESC) + pb_field(2, 2, "v" + ESC))
    status = (pb_field(1, 0, 3) + pb_field(2, 2, "bad")
              + pb_field(3, 2, pb_field(1, 2, "type.googleapis.com/google.rpc.BadRequest") + pb_field(2, 2, bad_request))
              + pb_field(3, 2, pb_field(1, 2, "type.googleapis.com/google.rpc.PreconditionFailure")
                         + pb_field(2, 2, precondition))
              + pb_field(3, 2, pb_field(1, 2, "type.googleapis.com/google.rpc.ErrorInfo") + pb_field(2, 2, info)))

    def handler(conn, req):
        conn.reply(req.sid, None, status=3, message=urllib.parse.quote("refused" + ESC, safe=" "),
                   trailers=[("grpc-status-details-bin", base64.b64encode(status).decode())])

    with FakeServer(handler) as srv:
        r = ctl(srv, "health", check=1)
    assert r.stderr.startswith("INVALID_ARGUMENT: refused "), r.stderr
    assert_clean(r, "PWNED-TITLE", "field field", "desc", "precondition TYPE", "subj", "what",
                 "reason REASON", "=v")


def test_goaway_debug_data_without_controls():
    def handler(conn, req):
        conn.headers(req.sid, [(":status", "200"), ("content-type", "application/grpc")])
        conn.goaway(req.sid, INTERNAL_ERROR, b"bye " + ESC.encode())
        conn.close()

    with FakeServer(handler) as srv:
        r = ctl(srv, "health", check=1)
    assert r.stderr.startswith("UNAVAILABLE: "), r.stderr
    assert_clean(r, "INTERNAL_ERROR: bye \\x1b]0;PWNED-TITLE\\x07")


def clue(i, **kw):
    return S.clue_pb2.Clue(**{"id": i, "registration_number": f"REG-{i}", "title": "t", "state": 1, **kw})


def signed_checkpoint(note_extra="", size=0, root=None):
    """A GetCheckpoint answer: a signed note of a log of size events (root, or an empty one's),
    and its verifier key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    name = "fake.example/log"
    key = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    kid = hashlib.sha256(name.encode() + b"\n\x01" + pub).digest()[:4]
    root = root if root is not None else hashlib.sha256(b"").digest()
    body = f"{name}\n{size}\n{base64.b64encode(root).decode()}\n{note_extra}"
    sig = base64.b64encode(kid + key.sign(body.encode())).decode()
    vkey = base64.b64encode(b"\x01" + pub).decode()
    return S.audit_pb2.Checkpoint(tree_size=min(size, 2**63 - 1), root_hash=root, note=f"{body}\n\u2014 {name} {sig}\n",
                                  verifier_key=f"{name}+{kid.hex()}+{vkey}")


# What each method answers, all of it holding escape sequences where a text goes.
ANSWERS = {
    "/clue.v1.ClueService/GetClue": lambda: clue(5, registration_number="REG" + ESC),
    "/clue.v1.ClueService/SubmitClue": lambda: clue(5, registration_number="REG" + ESC),
    "/clue.v1.ClueService/ListClues": lambda: S.clue_pb2.ListCluesResponse(
        clues=[clue(1)], next_page_token="tok" + ESC,
        freshness=S.common_pb2.ReadFreshness(from_replica=True, max_staleness_ms=5, read_lsn="0/1" + ESC)),
    "/clue.v1.ClueService/ListNotes": lambda: S.clue_pb2.ListNotesResponse(notes=[S.clue_pb2.Note(
        id=1, clue_id=5, kind=1, text="line one" + ESC + "\nline two", author_user_name="name" + ESC,
        author_unit_code="CODE" + ESC)]),
    "/clue.v1.ClueService/RequestTransition": lambda: S.clue_pb2.RequestTransitionResponse(
        pending=True, proposal=S.clue_pb2.Proposal(id=3, reviewer_unit_id=9, reviewer_unit_code="R01" + ESC)),
    "/clue.v1.StatsService/GetBulletin": lambda: S.stats_pb2.GetBulletinResponse(
        month="2026-11" + ESC, units=[S.stats_pb2.BulletinUnit(unit_id=1, unit_code="G1" + ESC,
                                                                unit_name="组" + ESC, zero_disposal=True)]),
    "/clue.v1.AuditService/WatchEvents": lambda: S.common_pb2.AuditEvent(
        seq=7, action="act" + ESC, subject_type="clue", subject_id=1, actor_user_name="name" + ESC,
        actor_unit_code="CODE" + ESC, actor_unit_name="unit" + ESC),
    "/clue.v1.TokenService/IssueMyToken": lambda: S.admin_pb2.IssueTokenResponse(token_id=4, token="tok" + ESC),
    "/clue.v1.AuditService/GetCheckpoint": lambda: signed_checkpoint("extension" + ESC + "\n"),
}


def answer_by_path(conn, req):
    make = ANSWERS.get(req.path)
    if make is None:
        conn.reply(req.sid, None, status=12, message="not in this test")
    else:
        conn.reply(req.sid, make().SerializeToString())


def test_server_text_on_stdout_and_stderr_without_controls():
    cases = [
        (["clue", "get", "5"], 0, ["Clue 5 (REG ]0;PWNED-TITLE"]),
        (["clue", "submit", "--title", "t", "--summary", "s", "--source", "LETTER_VISIT_REPORT",
          "--subject-name", "n", "--host-unit", "h"], 0, ["clue 5 REG ]0;PWNED-TITLE"]),
        (["clue", "list"], 0, ["--page-token tok ]0;PWNED-TITLE", "replayed to 0/1 ]0;PWNED"]),
        (["clue", "notes", "5"], 0, ["name ]0;PWNED", "(CODE ]0;PWNED", "    line one ]0;PWNED",
                                     "    line two"]),
        (["clue", "move", "5", "--to", "FILED", "--version", "1", "--reason", "r"], 0,
         ["review by unit R01 ]0;PWNED"]),
        (["stats", "bulletin", "--month", "2026-11"], 0, ["Bulletin 2026-11 ]0;PWNED"]),
        (["stats", "bulletin", "--month", "2026-11", "--markdown"], 0, ["## 2026-11 \\]0;PWNED", "G1 \\]0;PWNED"]),
        (["audit", "watch"], 0, ["(CODE ]0;PWNED", "by name ]0;PWNED"]),
        (["token", "issue"], 0, ["tok ]0;PWNED"]),
        # A note with control characters is no signed note: neither shown nor saved.
        (["audit", "checkpoint"], 1, ["not a signed note"]),
    ]
    with FakeServer(answer_by_path) as srv:
        for args, code, want in cases:
            r = ctl(srv, *args, check=code)
            try:
                assert_clean(r, *want)
            except AssertionError as e:
                raise AssertionError(f"cluectl {' '.join(args)}: {e}") from None

    # The refusal is for what a signed note may not be; a clean one prints, and is saved
    # as it came.
    def handler(conn, req):
        conn.reply(req.sid, signed_checkpoint().SerializeToString())

    with FakeServer(handler) as srv, tempfile.TemporaryDirectory() as d:
        r = ctl(srv, "audit", "checkpoint", check=0)
        assert "fake.example/log\n0\n" in r.stdout and "\u2014 fake.example/log " in r.stdout, r.stdout
        # stdout is the note alone, as signed: redirected, it is a checkpoint file.
        assert r.stdout == signed_checkpoint().note and "checkpoint of 0 events" in r.stderr, r
        ctl(srv, "audit", "checkpoint", "--out", os.path.join(d, "cp"), check=0)
        with open(os.path.join(d, "cp")) as f:
            assert f.read() == signed_checkpoint().note


# ---- 2. --all -----------------------------------------------------------------------------

def test_all_stops_at_a_page_token_seen_before():
    """Tokens A, B, A, B, ...: the third page would list the first one's rows again."""
    def handler(conn, req):
        token = S.clue_pb2.ListCluesRequest.FromString(req.body).page_token
        nxt = {"": "A", "A": "B", "B": "A"}[token] if req.index < 50 else ""
        conn.reply(req.sid, S.clue_pb2.ListCluesResponse(clues=[clue(req.index + 1)],
                                                         next_page_token=nxt).SerializeToString())

    with FakeServer(handler) as srv:
        r = ctl(srv, "clue", "list", "--all", check=1)
        assert len(srv.requests) == 3, len(srv.requests)
    assert "page token it had given before" in r.stderr, r.stderr
    assert r.stdout == "", r.stdout


def test_all_collects_a_bounded_listing():
    """A token never seen before on every page: --all stops at 100000 rows, and says how to
    list page by page. (The server here gives up after 150000 rows.)"""
    page = [S.clue_pb2.Clue(id=1)] * 1000

    def handler(conn, req):
        token = S.clue_pb2.ListCluesRequest.FromString(req.body).page_token
        n = int(token or "0") + 1
        conn.reply(req.sid, S.clue_pb2.ListCluesResponse(
            clues=page, next_page_token=str(n) if n < 150 else "").SerializeToString())

    with FakeServer(handler) as srv:
        r = ctl(srv, "clue", "list", "--all", check=1)
        assert len(srv.requests) == 101, len(srv.requests)
    assert "--all collects at most 100000 rows" in r.stderr and "--page-token" in r.stderr, r.stderr
    assert r.stdout == "", r.stdout[:200]


def test_one_answer_of_tiny_rows_is_bounded():
    """4 MiB of empty Clue entries (2 bytes each on the wire) took 1-2 GB to decode and print.
    Decoding stops past 16 MiB and 32 times the answer's size; a page of more rows than any
    clued sends (fewer than the decoding allows) is refused."""
    huge = b"\x0a\x00" * ((4 * 1024 * 1024 - 16) // 2)
    many = b"\x0a\x00" * 5001
    for body, want in ((huge, "RESOURCE_EXHAUSTED: the response (4194288 bytes) would take more "
                              "than 143 MiB to decode as clue.v1.ListCluesResponse"),
                       (many, "cluectl: the server's page holds 5001 rows, more than any page it "
                              "may send (at most 5000)")):
        with FakeServer(lambda conn, req: conn.reply(req.sid, body)) as srv:
            for args in (["clue", "list"], ["--json", "clue", "list"], ["clue", "list", "--all"]):
                r = ctl_bounded(srv, *args, check=1)
                assert r.stderr.startswith(want), (args, r.stderr)
                assert r.stdout == "", (args, r.stdout[:200])
    # A page of 5000 rows is not refused.
    with FakeServer(lambda conn, req: conn.reply(req.sid, b"\x0a\x00" * 5000)) as srv:
        ctl_bounded(srv, "--json", "clue", "list", check=0)


# ---- 3. calls the server never processed ---------------------------------------------------

def test_refused_calls_are_sent_again_once():
    # A GOAWAY whose last stream id is below the next page's request, as a server closing
    # an idle connection sends it while the request is on its way: sent again, on a new
    # connection.
    def goaway_race(conn, req):
        if req.index == 1:
            conn.goaway(conn.last_sid, NO_ERROR)
            conn.close()
            return
        token = S.clue_pb2.ListCluesRequest.FromString(req.body).page_token
        conn.reply(req.sid, S.clue_pb2.ListCluesResponse(
            clues=[clue(req.index + 1)], next_page_token="" if token else "2").SerializeToString())

    with FakeServer(goaway_race) as srv:
        r = ctl(srv, "clue", "list", "--all", check=0)
        assert [q.conn_index for q in srv.requests] == [0, 0, 1], [q.conn_index for q in srv.requests]
    assert len(r.stdout.splitlines()) == 3, r.stdout  # the header and two clues

    # RST_STREAM(REFUSED_STREAM): the server did not process it either.
    def refuse_first(conn, req):
        if req.index == 0:
            conn.rst(req.sid, REFUSED_STREAM)
        else:
            conn.reply(req.sid, S.health_pb2.HealthCheckResponse(status=1).SerializeToString())

    with FakeServer(refuse_first) as srv:
        r = ctl(srv, "health", check=0)
        assert len(srv.requests) == 2
    assert r.stdout == "SERVING\n", r.stdout

    # Once only: a server that refuses everything gets each call twice.
    with FakeServer(lambda conn, req: conn.rst(req.sid, REFUSED_STREAM)) as srv:
        r = ctl(srv, "health", check=1)
        assert len(srv.requests) == 2, len(srv.requests)
    assert r.stderr.startswith("UNAVAILABLE: "), r.stderr

    # A stream reset for another reason may have been processed: not sent again.
    with FakeServer(lambda conn, req: conn.rst(req.sid, INTERNAL_ERROR)) as srv:
        ctl(srv, "health", check=1)
        assert len(srv.requests) == 1, len(srv.requests)

    # Nor a call the server answered in part before its GOAWAY.
    def goaway_after_headers(conn, req):
        conn.headers(req.sid, [(":status", "200"), ("content-type", "application/grpc")])
        conn.goaway(req.sid - 2 if req.sid > 1 else 0, NO_ERROR)
        conn.close()

    with FakeServer(goaway_after_headers) as srv:
        ctl(srv, "health", check=1)
        assert len(srv.requests) == 1, len(srv.requests)


def test_witness_survives_an_idle_goaway():
    """clued sends GOAWAY to a connection idle for --idle-timeout; a witness polling at the
    same moment has its request refused, and polls on over a new connection."""
    cp = signed_checkpoint().SerializeToString()

    def idle_goaway(conn, req):
        if time.monotonic() - conn.last_active > 0.5:  # idle: this request crossed the GOAWAY
            conn.goaway(conn.last_sid, NO_ERROR)
            conn.close()
        else:
            conn.reply(req.sid, cp)

    with FakeServer(idle_goaway) as srv, tempfile.TemporaryDirectory() as d:
        p = subprocess.Popen([harness.CLUECTL, "audit", "witness", "--dir", d, "--interval", "1"],
                             env=dict(os.environ, CLUED_SERVER=srv.addr, CLUED_TOKEN="t",
                                      ASAN_OPTIONS="detect_leaks=1"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        harness.wait_for(lambda: len(srv.conns) >= 3 or p.poll() is not None, timeout=20,
                         what="two idle GOAWAYs")
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=20)
        harness._assert_clean(err)
        assert p.returncode == 0, f"witness exited {p.returncode}:\n{out}{err}"
        assert len(srv.conns) >= 3, len(srv.conns)
        assert out.startswith("kept checkpoint of 0 events\n"), out


# ---- 4. the audit walks -------------------------------------------------------------------

def audit_server(cp, export):
    """A handler answering GetCheckpoint with cp and ExportAuditEvents with export(request)."""
    def handler(conn, req):
        if req.path.endswith("/GetCheckpoint"):
            conn.reply(req.sid, cp.SerializeToString())
        elif req.path.endswith("/ExportAuditEvents"):
            r = S.audit_pb2.ExportAuditEventsRequest.FromString(req.body)
            conn.reply(req.sid, export(r).SerializeToString())
        elif req.path.endswith("/VerifyAuditChain"):
            conn.reply(req.sid, S.audit_pb2.VerifyAuditChainResponse(ok=True).SerializeToString())
        else:
            conn.reply(req.sid, None, status=12, message="not in this test")
    return handler


def leaves_from(after, n=50, done=False):
    """A page of n leaves after seq after (leaf i is seq i + 1), of a tree far larger."""
    evs = [S.audit_pb2.LeafEvent(seq=after + i + 1, leaf_index=after + i, leaf_hash=b"\x41" * 32,
                                 redacted=True) for i in range(n)]
    return S.audit_pb2.ExportAuditEventsResponse(events=evs, tree_size=2**32, tree_last_seq=2**62,
                                                 done=done)


def test_a_checkpoint_size_no_tree_holds_is_refused():
    """A signed size of 2^61 + 1 made the leaves' allocation (n * 8, n * 32 bytes) wrap to 8
    and 32 bytes, which the server's leaves then overran. A size past 2^32 is refused before
    anything is allocated or saved."""
    for size in (2**61 + 1, 2**32 + 1):
        cp = signed_checkpoint(size=size)
        handler = audit_server(cp, lambda r: leaves_from(r.after_seq, done=r.after_seq > 200))
        with FakeServer(handler) as srv, tempfile.TemporaryDirectory() as d:
            r = ctl_bounded(srv, "audit", "checkpoint", "--out", os.path.join(d, "cp"), check=1)
            assert f"the server's checkpoint claims {size} events, more than cluectl checks (at most " \
                   "4294967296); not shown, not saved" in r.stderr, r.stderr
            assert not os.path.exists(os.path.join(d, "cp")), os.listdir(d)
            r = ctl_bounded(srv, "audit", "witness", "--dir", os.path.join(d, "w"), "--once", check=1)
            assert r.stdout.startswith(f"FAIL: the server's checkpoint claims {size} events, more than "
                                       "cluectl checks"), r.stdout
            assert sorted(os.listdir(os.path.join(d, "w"))) == ["key.pub"], os.listdir(os.path.join(d, "w"))
            with open(os.path.join(d, "cp"), "w") as f:
                f.write(cp.note)
            r = ctl_bounded(srv, "audit", "verify", "--checkpoint", os.path.join(d, "cp"), check=1)
            assert r.stdout.startswith(f"FAIL: the saved checkpoint claims {size} events"), r.stdout
            assert not any(q.path.endswith("/ExportAuditEvents") for q in srv.requests), \
                [q.path for q in srv.requests]


def test_verify_reads_no_leaf_of_a_missing_event_past_its_length():
    """An event marked missing with a leaf hash of 1 byte or none: verify read 32 bytes of it
    into the tree. It fails on the missing event without reading its leaf."""
    for leaf in (b"\x01", b""):
        def export(r, leaf=leaf):
            evs = [S.audit_pb2.LeafEvent(seq=1, leaf_index=0, missing=True, leaf_hash=leaf)]
            return S.audit_pb2.ExportAuditEventsResponse(events=evs, tree_size=1, tree_last_seq=5,
                                                         done=True)
        cp = signed_checkpoint()
        with FakeServer(audit_server(cp, export)) as srv, tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "cp"), "w") as f:
                f.write(cp.note)
            r = ctl_bounded(srv, "audit", "verify", "--checkpoint", os.path.join(d, "cp"), check=1)
        assert r.stdout == "FAIL: seq 1: the event is gone from the log, but the tree holds it as " \
                           "leaf 0: it was deleted\n", r.stdout


def test_audit_walks_end_when_the_server_pages_never_do():
    """Pages that never say done: verify, checkpoint --out and witness end, in a few requests."""
    cp = signed_checkpoint()

    def inserted(r):  # events the tree does not hold, for ever
        evs = [S.audit_pb2.LeafEvent(seq=r.after_seq + i + 1, leaf_index=-1, action="clue.submit",
                                     subject_type="clue", subject_id=str(r.after_seq + i + 1))
               for i in range(1000)]
        return S.audit_pb2.ExportAuditEventsResponse(events=evs, tree_size=2**32, tree_last_seq=2**62)

    def past_end(r):  # even after the greatest seq, an event and not done
        return S.audit_pb2.ExportAuditEventsResponse(events=[S.audit_pb2.LeafEvent(seq=10, leaf_index=-1)],
                                                     tree_size=1, tree_last_seq=1)

    def beyond_its_tree(r):  # leaves past the tree the first page named
        return leaves_from(r.after_seq) if r.after_seq else \
            S.audit_pb2.ExportAuditEventsResponse(events=leaves_from(0).events, tree_size=2,
                                                  tree_last_seq=2**62)

    cases = [
        (inserted, "FAIL: seq 1 (clue #1): the event is not in the tree, which holds the events before "
                   "and after it: it was inserted\n"),
        (past_end, "FAIL: the server's export pages never end: its page after the greatest seq is not "
                   "its last\n"),
        (beyond_its_tree, "FAIL: seq 3: the server gave leaf 2 of a tree it said holds 2\n"),
    ]
    for export, want in cases:
        with FakeServer(audit_server(cp, export)) as srv, tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "cp"), "w") as f:
                f.write(cp.note)
            r = ctl_bounded(srv, "audit", "verify", "--checkpoint", os.path.join(d, "cp"), check=1)
            assert r.stdout == want, (export.__name__, r.stdout)
            assert len(srv.requests) <= 3, (export.__name__, len(srv.requests))

    # The leaves of checkpoint --out and of the witness: a page that brings none ends them.
    cp5 = signed_checkpoint(size=5)
    with FakeServer(audit_server(cp5, inserted)) as srv, tempfile.TemporaryDirectory() as d:
        r = ctl_bounded(srv, "audit", "checkpoint", "--out", os.path.join(d, "cp"), check=1)
        assert "cannot read the checkpoint's 5 leaves" in r.stderr, r.stderr
        assert len(srv.requests) == 2, len(srv.requests)
        r = ctl_bounded(srv, "audit", "witness", "--dir", os.path.join(d, "w"), "--once", check=0)
        assert "the leaves of the checkpoint of 5 events are not kept" in r.stderr, r.stderr
        assert len(srv.requests) <= 6, len(srv.requests)


# ---- 5. deadlines ----------------------------------------------------------------------------

def grpc_timeout_ms(req):
    v = req.headers.get("grpc-timeout")
    if v is None:
        return None
    return int(v[:-1]) * {"n": 1e-6, "u": 1e-3, "m": 1, "S": 1000, "M": 60000, "H": 3600000}[v[-1]]


def test_unary_calls_have_a_default_deadline():
    def handler(conn, req):
        body = S.health_pb2.HealthCheckResponse(status=1).SerializeToString()
        conn.reply(req.sid, body)  # for Watch too: one message, then the end

    with FakeServer(handler) as srv:
        ctl(srv, "health", check=0)
        ctl(srv, "--timeout", "0", "health", check=0)
        ctl(srv, "--timeout", "2", "health", check=0)
        ctl(srv, "health", "--watch", check=0)
        ctl(srv, "--timeout", "3", "health", "--watch", check=0)
        got = [grpc_timeout_ms(q) for q in srv.requests]
    assert 55000 <= got[0] <= 60000, got  # 60 s by default
    assert got[1] is None, got  # --timeout 0: none
    assert 1500 <= got[2] <= 2000, got
    assert got[3] is None, got  # a watch: none unless asked
    assert 2500 <= got[4] <= 3000, got


# ---- 5. what a server's figures and streams can make cluectl do ------------------------------

def test_unknown_enum_values_print_as_a_dash():
    """A unit kind this cluectl does not know (a newer server's, or a hostile one's) prints as
    "-" in a table and as an empty field in CSV: the bulletin's CSV read it as a text and
    crashed on it."""
    def handler(conn, req):
        if req.path.endswith("/GetBulletin"):
            u = S.stats_pb2.BulletinUnit(unit_id=1, unit_code="G1", unit_name="组", unit_kind=99)
            conn.reply(req.sid, S.stats_pb2.GetBulletinResponse(month="2026-01", units=[u]).SerializeToString())
        else:
            conn.reply(req.sid, None, status=12, message="not in this test")

    with FakeServer(handler) as srv:
        r = ctl(srv, "stats", "bulletin", "--month", "2026-01", "--csv", check=0)
        assert r.stdout.splitlines()[1].startswith("2026-01,1,G1,组,,0,"), r.stdout
        r = ctl(srv, "stats", "bulletin", "--month", "2026-01", check=0)
        assert "(null)" not in r.stdout and re.search(r"G1\s+-\s", r.stdout), r.stdout


def test_csv_quotes_the_separators_of_other_locales():
    """A field holding a semicolon or a tab is quoted: a spreadsheet that splits on them would
    start a cell, and a formula, inside it."""
    def handler(conn, req):
        u = S.stats_pb2.BulletinUnit(unit_id=1, unit_code="G1", unit_name="Group 1;=cmd|' /C calc'!A0",
                                     unit_kind=2)
        conn.reply(req.sid, S.stats_pb2.GetBulletinResponse(month="2026-01", units=[u]).SerializeToString())

    with FakeServer(handler) as srv:
        r = ctl(srv, "stats", "bulletin", "--month", "2026-01", "--csv", check=0)
        assert ",\"Group 1;=cmd|' /C calc'!A0\"," in r.stdout, r.stdout


def test_stats_csv_has_a_bounded_number_of_columns():
    """Each disposal kind the figures name is a column of every row: a server naming a new one
    per unit would grow the CSV with the square of its answer. More than 64 are refused, and
    nothing is printed."""
    def figures(kinds):
        units = [S.stats_pb2.UnitStats(unit_id=i + 1, unit_code=f"G{i}", unit_name="组", closed_by_disposal=[
            S.stats_pb2.DisposalCount(disposal=f"KIND_{i}", count=1)]) for i in range(kinds)]
        return S.stats_pb2.GetStatisticsResponse(units=units).SerializeToString()

    def handler(conn, req):
        if req.path.endswith("/GetStatistics"):
            conn.reply(req.sid, figures(handler.kinds))
        else:
            conn.reply(req.sid, S.stats_pb2.ListCaseStatsResponse().SerializeToString()
                       if req.path.endswith("/ListCaseStats") else None)

    with FakeServer(handler) as srv:
        handler.kinds = 64
        r = ctl(srv, "stats", "--csv", check=0)
        assert "closed_KIND_63" in r.stdout.splitlines()[0] and len(r.stdout.splitlines()) == 65, r.stdout[:300]
        handler.kinds = 65
        r = ctl(srv, "stats", "--csv", check=1)
        assert r.stdout == "" and "more than 64 disposal kinds" in r.stderr, (r.stdout[:200], r.stderr)


def merkle_root(leaves):
    """RFC 9162's Merkle tree hash over leaf hashes."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + merkle_root(leaves[:k]) + merkle_root(leaves[k:])).digest()


def export_answer(conn, req, leaf, size):
    """ExportAuditEvents over a tree of the first size leaves, seq i + 1 at index i, whole."""
    r = S.audit_pb2.ExportAuditEventsRequest.FromString(req.body)
    evs = [S.audit_pb2.LeafEvent(seq=i + 1, leaf_index=i, leaf_hash=leaf[i], redacted=True)
           for i in range(size) if i + 1 > r.after_seq]
    conn.reply(req.sid, S.audit_pb2.ExportAuditEventsResponse(
        events=evs, tree_size=size, tree_last_seq=size, done=True).SerializeToString())


def test_a_fork_ends_the_witness_whatever_the_next_call_answers():
    """A witness that finds a fork ends with exit status 1. After the FAIL it asks for the
    leaves, to name the first event that differs; a server that answers that call UNAVAILABLE
    made the witness take the fork for a passing failure and poll on, and then show it the
    honest tree again ("unchanged")."""
    n = 4
    leaf = [hashlib.sha256(b"\x00" + b"good%d" % i).digest() for i in range(n)]

    forked = leaf[:2] + [hashlib.sha256(b"\x00evil%d" % i).digest() for i in range(2, n)]
    state = {"fork": False, "polls": 0}

    def handler(conn, req):
        if req.path.endswith("/GetCheckpoint"):
            state["polls"] += 1
            root = merkle_root(forked) if state["fork"] and state["polls"] == 1 else merkle_root(leaf)
            conn.reply(req.sid, signed_checkpoint(size=n, root=root).SerializeToString())
        elif req.path.endswith("/ExportAuditEvents") and state["fork"]:
            conn.reply(req.sid, None, status=14, message="database down, try again")
        elif req.path.endswith("/ExportAuditEvents"):
            export_answer(conn, req, leaf, n)
        else:
            conn.reply(req.sid, None, status=12, message="not in this test")

    with FakeServer(handler) as srv, tempfile.TemporaryDirectory() as d:
        r = ctl(srv, "audit", "witness", "--dir", d, "--once", check=0)
        assert r.stdout.startswith(f"kept checkpoint of {n} events"), r.stdout
        state["fork"], state["polls"] = True, 0
        r = ctl_bounded(srv, "audit", "witness", "--dir", d, "--interval", "1", check=1, timeout=20)
        assert r.stdout.startswith(f"FAIL: fork: two checkpoints of {n} events with different roots"), r.stdout
        assert "polling again" not in r.stderr, r.stderr


def test_a_watch_the_server_ends_at_once_resumes_at_most_once_a_second():
    """A server that ends every WatchEvents (and Health/Watch) stream at once "at its maximum
    age" gets at most one new stream a second, not a loop as fast as it answers."""
    def handler(conn, req):
        if req.path.endswith("/WatchEvents"):
            conn.reply(req.sid, None, status=14, message="stream reached the server's maximum age; resume from seq 5")
        elif req.path.endswith("/Watch"):
            conn.reply(req.sid, S.health_pb2.HealthCheckResponse(status=1).SerializeToString(),
                       status=14, message="stream open for its maximum age; call again")
        else:
            conn.reply(req.sid, None, status=12, message="not in this test")

    with FakeServer(handler) as srv:
        t0 = time.monotonic()
        r = ctl_bounded(srv, "--timeout", "3", "audit", "watch", check=0)
        streams = sum(1 for q in srv.requests if q.path.endswith("/WatchEvents"))
        assert 2 <= streams <= 4 and time.monotonic() - t0 < 6, (streams, r.stderr[-300:])
        assert "last seq 5" in r.stderr, r.stderr[-300:]
        ctl_bounded(srv, "--timeout", "3", "health", "--watch", check=0)
        streams = sum(1 for q in srv.requests if q.path.endswith("/Watch"))
        assert 2 <= streams <= 4, streams


def audit_event(seq):
    return S.common_pb2.AuditEvent(seq=seq, action="clue.submit", subject_type="clue",
                                   subject_id=seq, at_ms=1796600000000).SerializeToString()


def test_a_watch_ends_0_at_timeout_only_if_the_server_answered():
    """--timeout ends a watch with exit status 0 only when it is this process's deadline that
    passed on a watch the server answered: a listener that never speaks (a hung server, whose
    kernel still takes the connection), a Health/Watch with no status, or a DEADLINE_EXCEEDED
    the server sends before --timeout is up all exit 1."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)  # never accepted: the kernel completes the handshake, nobody answers
    silent = type("Addr", (), {"addr": "127.0.0.1:%d" % ls.getsockname()[1]})()
    try:
        for args in (("health", "--watch"), ("audit", "watch")):
            r = ctl_bounded(silent, "--timeout", "1.5", *args, check=1, timeout=20)
            assert "DEADLINE_EXCEEDED" in r.stderr and "did not answer" in r.stderr, r.stderr
    finally:
        ls.close()

    def handler(conn, req):
        if req.path.endswith("/Watch"):  # headers, then no status ever
            conn.headers(req.sid, OK_HEADERS)
        elif req.path.endswith("/WatchEvents"):
            r = S.audit_pb2.WatchEventsRequest.FromString(req.body)
            conn.headers(req.sid, OK_HEADERS)
            conn.data(req.sid, grpc_frame(audit_event(1)) + grpc_frame(audit_event(2)))
            if r.after_seq == 7:  # a quiet log: the deadline is the watch's normal end
                return
            time.sleep(0.3)
            conn.headers(req.sid, [("grpc-status", "4"),
                                   ("grpc-message", "canceling statement due to statement timeout")],
                         end=True)

    with FakeServer(handler) as srv:
        r = ctl_bounded(srv, "--timeout", "1.5", "health", "--watch", check=1)
        assert "did not answer" in r.stderr, r.stderr
        t0 = time.monotonic()
        r = ctl_bounded(srv, "--timeout", "30", "audit", "watch", check=1)
        assert time.monotonic() - t0 < 10
        assert "DEADLINE_EXCEEDED: canceling statement" in r.stderr, r.stderr
        assert "last seq 2" in r.stderr, r.stderr
        r = ctl_bounded(srv, "--timeout", "1.5", "audit", "watch", "--after-seq", "7", check=0)
        assert r.stdout.count("clue.submit") == 2 and "DEADLINE" not in r.stderr, r.stdout + r.stderr


def own_address():
    """An address of this machine that is not loopback, or None."""
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the route's address
        a = u.getsockname()[0]
    except OSError:
        return None
    finally:
        u.close()
    return None if a.startswith("127.") else a


def test_no_token_goes_in_cleartext_off_loopback():
    """Without TLS, cluectl sends its token only to a loopback address or localhost: for
    another host it refuses (exit 2, naming --insecure-cleartext) before it connects, so a
    user who forgot --tls does not put the token on the network in clear."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", 0))
    ls.listen(4)
    ls.settimeout(0.5)
    port = ls.getsockname()[1]
    here = own_address()
    env = dict(os.environ, CLUED_TOKEN="ct_" + "ab" * 16, ASAN_OPTIONS="detect_leaks=1")
    env.pop("CLUED_INSECURE_CLEARTEXT", None)

    def run(*args, **more):
        return subprocess.run([harness.CLUECTL, "--timeout", "2", *args], capture_output=True,
                              text=True, timeout=30, env=dict(env, **more))
    try:
        for server in ["192.0.2.1:50051", "example.invalid:50051", "[2001:db8::1]:50051"] + \
                ([f"{here}:{port}"] if here else []):
            for args in (("--server", server, "health"), ("--server", server, "audit", "watch")):
                r = run(*args)
                assert r.returncode == 2, (args, r.returncode, r.stderr)
                assert "refusing to send the token in cleartext" in r.stderr, r.stderr
                assert "--insecure-cleartext" in r.stderr and "ct_" not in r.stderr, r.stderr
            r = run("health", CLUED_SERVER=server)  # the address from the environment too
            assert r.returncode == 2 and "--insecure-cleartext" in r.stderr, r.stderr
        if here:
            try:
                ls.accept()
                raise AssertionError("cluectl connected to a non-loopback address")
            except socket.timeout:
                pass
        # Loopback and localhost are fine (nobody listens on port 9: refused, exit 1); so is
        # another host without a token, with TLS, or with the override.
        for server in ("127.0.0.1:9", "127.0.0.2:9", "localhost:9", "[::1]:9", "LOCALHOST:9"):
            r = run("--server", server, "health")
            assert r.returncode == 1 and "refusing" not in r.stderr, (server, r.stderr)
        r = run("--server", "192.0.2.1:9", "health", CLUED_TOKEN="")
        assert r.returncode == 1 and "refusing" not in r.stderr, r.stderr
        r = run("--server", "192.0.2.1:9", "--insecure-cleartext", "health")
        assert r.returncode == 1 and "refusing" not in r.stderr, r.stderr
        r = run("--server", "192.0.2.1:9", "health", CLUED_INSECURE_CLEARTEXT="1")
        assert r.returncode == 1 and "refusing" not in r.stderr, r.stderr
        r = run("--server", "192.0.2.1:9", "--tls", "health")
        assert r.returncode == 1 and "refusing" not in r.stderr, r.stderr
        if here:  # with the override the token does go: what the user asked for
            p = subprocess.Popen([harness.CLUECTL, "--timeout", "2", "--insecure-cleartext",
                                  "--server", f"{here}:{port}", "health"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ls.settimeout(5)
            c, _ = ls.accept()
            c.close()
            p.wait(timeout=30)
    finally:
        ls.close()


def test_audit_watch_asks_for_heartbeats_and_ends_when_none_comes():
    """audit watch asks for a heartbeat (WatchEventsRequest.heartbeat_seconds, 15 by default
    or --heartbeat) and, when neither an event nor a heartbeat came for three intervals (a
    connection a proxy or NAT dropped silently), ends with exit status 1, saying so, after
    the line naming the seq to resume from (a heartbeat's counts). Heartbeats that do come
    keep a quiet watch alive, and print nothing."""
    asked = []

    def handler(conn, req):
        if not req.path.endswith("/WatchEvents"):
            conn.reply(req.sid, None, status=12, message="not in this test")
            return
        r = S.audit_pb2.WatchEventsRequest.FromString(req.body)
        asked.append(r.heartbeat_seconds)
        conn.headers(req.sid, OK_HEADERS)
        conn.data(req.sid, grpc_frame(audit_event(1)) + grpc_frame(audit_event(2)))
        beat = grpc_frame(S.common_pb2.AuditEvent(seq=9).SerializeToString())
        if r.after_seq == 1:  # a live server: a heartbeat every half second
            def beats():
                while not conn.closed:
                    conn.data(req.sid, beat)
                    time.sleep(0.5)
            threading.Thread(target=beats, daemon=True).start()
        elif r.after_seq == 0:  # one heartbeat, then the connection goes dead silently
            conn.data(req.sid, beat)

    with FakeServer(handler) as srv:
        t0 = time.monotonic()
        r = ctl_bounded(srv, "audit", "watch", "--heartbeat", "1", check=1, timeout=20)
        took = time.monotonic() - t0
        assert asked[-1] == 1 and 2.5 < took < 10, (asked, took)
        assert r.stdout.count("clue.submit") == 2 and "seq 9" not in r.stdout, r.stdout
        assert "no event and no heartbeat" in r.stderr and "connection seems lost" in r.stderr, r.stderr
        assert "last seq 9; resume with: cluectl audit watch --after-seq 9" in r.stderr, r.stderr
        r = ctl_bounded(srv, "--timeout", "4", "audit", "watch", "--heartbeat", "1",
                        "--after-seq", "1", check=0)
        assert r.stdout.count("clue.submit") == 2 and "last seq 9" in r.stderr, r.stdout + r.stderr
        ctl_bounded(srv, "--timeout", "1", "audit", "watch", "--after-seq", "2", check=0)
        assert asked[-1] == 15, asked
        r = ctl_bounded(srv, "--timeout", "4", "audit", "watch", "--heartbeat", "0",
                        "--after-seq", "2", check=0)
        assert asked[-1] == 0 and "lost" not in r.stderr, (asked, r.stderr)
        r = ctl_bounded(srv, "audit", "watch", "--heartbeat", "3601", check=2)


def test_health_watch_pings_a_quiet_server_and_ends_when_no_answer_comes():
    """A Health/Watch sends a status only when it changes, so a watch whose connection a proxy
    or NAT dropped silently would wait for ever. After --keepalive seconds with nothing from
    the server, health --watch sends an HTTP/2 PING: an answered one keeps the watch going,
    printing nothing; one unanswered for 20 s (or --keepalive seconds, if fewer) ends it
    with exit status 1, saying so. With
    --keepalive 0 it never PINGs; --keepalive without --watch is a usage error."""
    deaf = []

    def handler(conn, req):
        if not req.path.endswith("/Watch"):
            conn.reply(req.sid, None, status=12, message="not in this test")
            return
        conn.headers(req.sid, OK_HEADERS)
        conn.data(req.sid, grpc_frame(S.health_pb2.HealthCheckResponse(
            status=S.health_pb2.HealthCheckResponse.SERVING).SerializeToString()))
        conn.deaf = bool(deaf)

    with FakeServer(handler) as srv:
        r = ctl_bounded(srv, "--timeout", "4", "health", "--watch", "--keepalive", "1", check=0)
        assert r.stdout == "SERVING\n" and srv.conns[-1].pings >= 2, (r.stdout, srv.conns[-1].pings, r.stderr)
        deaf.append(1)
        t0 = time.monotonic()
        r = ctl_bounded(srv, "health", "--watch", "--keepalive", "1", check=1, timeout=60)
        took = time.monotonic() - t0
        assert r.stdout == "SERVING\n" and srv.conns[-1].pings == 1 and 2 <= took < 30, (r.stdout, took)
        assert "nothing from 127.0.0.1" in r.stderr and "no answer to a PING in 1 s" in r.stderr, r.stderr
        assert "connection seems lost" in r.stderr, r.stderr
        r = ctl_bounded(srv, "--timeout", "3", "health", "--watch", "--keepalive", "0", check=0)
        assert r.stdout == "SERVING\n" and srv.conns[-1].pings == 0, (r.stdout, r.stderr)
        r = ctl_bounded(srv, "health", "--keepalive", "5", check=2)
        assert "--keepalive needs --watch" in r.stderr, r.stderr
        ctl_bounded(srv, "health", "--watch", "--keepalive", "-1", check=2)


def test_an_array_whose_submission_broke_off_can_be_retried_safely():
    """clue submit --file with an array: when the connection is lost at element 2, cluectl
    says element 1 was submitted and element 2's outcome is unknown, and names the array's
    request id; the retry it advises sends every element with the request id it had the first
    time (derived from the array's id and the position), so the server makes none twice."""
    failed = []

    def handler(conn, req):
        if not req.path.endswith("/SubmitClue"):
            conn.reply(req.sid, None, status=12, message="not in this test")
            return
        r = S.clue_pb2.SubmitClueRequest.FromString(req.body)
        if r.title == "second" and not failed:
            failed.append(r.request_id)
            conn.reply(req.sid, None, status=14, message="connection lost")
            return
        conn.reply(req.sid, S.clue_pb2.Clue(id=len(srv.requests), title=r.title,
                                            registration_number="G1-2026-0001").SerializeToString())

    d = tempfile.mkdtemp(prefix="cluectl-array-")
    path = os.path.join(d, "clues.json")
    with open(path, "w") as f:
        f.write('[{"title": "first"}, {"title": "second"}, {"title": "third"}]')
    with FakeServer(handler) as srv:
        r = ctl(srv, "clue", "submit", "--file", path, check=1)
        assert "UNAVAILABLE: connection lost" in r.stderr, r.stderr
        assert ("element 2 of 3 may or may not have been submitted (the outcome is unknown); "
                "element 1 was; nothing after it was sent.") in r.stderr, r.stderr
        assert "was not submitted" not in r.stderr, r.stderr
        m = re.search(r"Retrying with --file (\S+) --request-id (\S+) submits each element at most", r.stderr)
        assert m and m.group(1) == path, r.stderr
        ids = [S.clue_pb2.SubmitClueRequest.FromString(q.body).request_id for q in srv.requests]
        assert len(ids) == 2 and len(set(ids)) == 2 and m.group(2) not in ids, ids
        n = len(srv.requests)
        ctl(srv, "clue", "submit", "--file", path, "--request-id", m.group(2), check=0)
        again = [S.clue_pb2.SubmitClueRequest.FromString(q.body).request_id for q in srv.requests[n:]]
        assert again[:2] == ids and len(set(again)) == 3, (ids, again)
        # The same id in another case names the same array: the ids do not depend on it.
        ctl(srv, "clue", "submit", "--file", path, "--request-id", m.group(2).upper(), check=0)
        assert [S.clue_pb2.SubmitClueRequest.FromString(q.body).request_id
                for q in srv.requests[n + 3:]] == again
    shutil.rmtree(d)


def test_a_refusal_that_changed_nothing_gets_no_unknown_outcome_note():
    """An UNAVAILABLE whose message says nothing was changed (a statement that timed out and
    rolled back, a read-only database, --require-sync-replica) has a known outcome: no
    "may or may not" note under it. A lost connection's UNAVAILABLE keeps the note."""
    messages = ["database statement timed out (limit 500 ms); nothing was changed, retry later",
                "--require-sync-replica: the primary has no synchronous standby (synchronous_standby_names "
                "is empty), so the write would not be on a standby when acknowledged; nothing was changed, "
                "retry later",
                "database unavailable"]

    def handler(conn, req):
        conn.reply(req.sid, None, status=14, message=urllib.parse.quote(messages[0], safe=" "))

    with FakeServer(handler) as srv:
        while messages:
            r = ctl(srv, "clue", "move", "1", "--to", "PRELIMINARY_CHECK", "--version", "1", "--reason", "r",
                    check=1)
            assert r.stderr.startswith("UNAVAILABLE: " + messages[0]), r.stderr
            if "nothing was changed" in messages[0]:
                assert "may or may not" not in r.stderr, r.stderr
            else:
                assert "The change may or may not have been made. Retrying with --request-id" in r.stderr, r.stderr
            messages.pop(0)


def test_the_watch_resume_hint_keeps_the_filters():
    """audit watch's resume hint repeats the filters it was started with (quoted for a shell
    where they must be), and a watch the server refused at once has nothing to resume: no
    hint. --subject-id without --subject-type is a usage error, found before any call."""
    def handler(conn, req):
        r = S.audit_pb2.WatchEventsRequest.FromString(req.body)
        if r.action == "bogus":
            conn.reply(req.sid, None, status=3, message="unknown action")
            return
        conn.headers(req.sid, OK_HEADERS)
        conn.data(req.sid, grpc_frame(audit_event(1)) + grpc_frame(audit_event(4)))

    with FakeServer(handler) as srv:
        r = ctl_bounded(srv, "--timeout", "1.5", "audit", "watch", "--subject-type", "clue", "--subject-id", "7",
                        "--action", "clue.move it's", check=0)
        assert r.stderr.endswith("last seq 4; resume with: cluectl audit watch --after-seq 4 --subject-type clue "
                                 "--subject-id 7 --action 'clue.move it'\\''s'\n"), r.stderr
        r = ctl_bounded(srv, "--timeout", "1.5", "audit", "watch", "--action", "bogus", check=1)
        assert r.stderr == "INVALID_ARGUMENT: unknown action\n", r.stderr
        n = len(srv.requests)
        r = ctl_bounded(srv, "audit", "watch", "--subject-id", "7", check=2)
        assert r.stderr.startswith("cluectl audit watch: --subject-id needs --subject-type"), r.stderr
        assert len(srv.requests) == n
    r = subprocess.run([harness.CLUECTL, "stats", "--help"], capture_output=True, text=True, timeout=30)
    assert "\n   or: cluectl stats bulletin [OPTIONS]" in r.stdout, r.stdout


def test_checkpoint_out_fails_when_its_leaves_cannot_be_kept():
    """audit checkpoint --out F saves F and F.leaves, or exits 1 saying why F.leaves could not
    be made (the export failed; the server's leaves contradict its own signed root, a loud
    FAIL) and then leaves no F.leaves at all: an older one beside the new F would make the
    next verify report an honest log as tampered with."""
    leaves = [hashlib.sha256(bytes([i])).digest() for i in range(4)]

    def node(a, b):
        return hashlib.sha256(b"\x01" + a + b).digest()
    cp4 = signed_checkpoint(size=4, root=node(node(leaves[0], leaves[1]), node(leaves[2], leaves[3])))
    mode = {}

    def export(conn, req):
        if req.path.endswith("/GetCheckpoint"):
            conn.reply(req.sid, cp4.SerializeToString())
        elif mode["export"] == "down":
            conn.reply(req.sid, None, status=14, message="database down, try again")
        else:
            hs = leaves if mode["export"] == "good" else leaves[::-1]
            evs = [S.audit_pb2.LeafEvent(seq=10 + i, leaf_index=i, leaf_hash=h) for i, h in enumerate(hs)]
            conn.reply(req.sid, S.audit_pb2.ExportAuditEventsResponse(
                events=evs, tree_size=4, tree_last_seq=13, done=True).SerializeToString())

    with FakeServer(export) as srv, tempfile.TemporaryDirectory() as d:
        cp, lv = os.path.join(d, "cp.txt"), os.path.join(d, "cp.txt.leaves")
        for m, want in (("down", "cannot read the checkpoint's 4 leaves from the server"),
                        ("forged", "FAIL: the server's leaves do not hash to the root of its own signed")):
            with open(lv, "w") as f:
                f.write("the leaves of an earlier checkpoint\n")
            mode["export"] = m
            r = ctl_bounded(srv, "audit", "checkpoint", "--out", cp, check=1)
            assert want in r.stderr and "holds the checkpoint of 4 events, without its leaves" in r.stderr, r.stderr
            assert not os.path.exists(lv), m
            with open(cp) as f:
                assert f.read() == cp4.note
        mode["export"] = "good"
        r = ctl_bounded(srv, "audit", "checkpoint", "--out", cp, check=0)
        assert r.stdout == f"checkpoint of 4 events saved to {cp}\n", r.stdout
        with open(lv) as f:
            assert f.read().splitlines()[1:] == [f"{10 + i} {h.hex()}" for i, h in enumerate(leaves)]
        assert sorted(os.listdir(d)) == ["cp.txt", "cp.txt.leaves"], os.listdir(d)


def test_the_token_can_come_from_a_file():
    """--token-file PATH (or - for stdin) gives the token without putting it in argv, where
    every local user sees it; a line break after it is dropped. --token with it, an empty
    file and a token with control characters are usage errors naming where the token came
    from, and --help says that --token shows in ps."""
    def handler(conn, req):
        conn.reply(req.sid, S.health_pb2.HealthCheckResponse(status=1).SerializeToString())

    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1")
    env.pop("CLUED_TOKEN", None)
    with FakeServer(handler) as srv, tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "token")
        with open(path, "w") as f:
            f.write("ct_fromfile\r\n")

        def run(*args, input=None, **more):
            return subprocess.run([harness.CLUECTL, "--server", srv.addr, *args], capture_output=True,
                                  text=True, timeout=30, input=input, env=dict(env, **more))
        r = run("--token-file", path, "health")
        assert r.returncode == 0 and srv.requests[-1].headers.get("authorization") == "Bearer ct_fromfile", r.stderr
        r = run("--token-file", "-", "health", input="ct_stdin\n", CLUED_TOKEN="ct_env")
        assert r.returncode == 0 and srv.requests[-1].headers.get("authorization") == "Bearer ct_stdin", r.stderr
        n = len(srv.requests)
        r = run("--token", "ct_x", "--token-file", path, "health")
        assert r.returncode == 2 and "cannot both be given" in r.stderr, r.stderr
        open(os.path.join(d, "empty"), "w").close()
        r = run("--token-file", os.path.join(d, "empty"), "health")
        assert r.returncode == 2 and "holds no token" in r.stderr, r.stderr
        r = run("--token-file", os.path.join(d, "missing"), "health")
        assert r.returncode == 2 and "cannot read" in r.stderr, r.stderr
        r = run("--token-file", "-", "health", input="ct_a\nct_b\n")
        assert r.returncode == 2 and r.stderr.startswith("cluectl health: --token-file: the token contains control"), r.stderr
        r = run("health", CLUED_TOKEN="ct_a\tb")
        assert r.returncode == 2 and "CLUED_TOKEN: the token contains control" in r.stderr, r.stderr
        assert len(srv.requests) == n
    h = subprocess.run([harness.CLUECTL, "--help"], capture_output=True, text=True).stdout
    assert "--token-file PATH" in h and "can be read by every local user (ps" in h, h


def test_clued_tls_off_words_mean_off():
    """CLUED_TLS (and CLUED_INSECURE_CLEARTEXT) read 0, false, no, off and empty, in any
    case, as off: CLUED_TLS=false talks cleartext to a cleartext server instead of a TLS handshake."""
    def handler(conn, req):
        conn.reply(req.sid, S.health_pb2.HealthCheckResponse(status=1).SerializeToString())

    with FakeServer(handler) as srv:
        for v in ("0", "false", "FALSE", "no", "off", "Off", ""):
            r = subprocess.run([harness.CLUECTL, "--server", srv.addr, "--timeout", "5", "health"],
                               capture_output=True, text=True, timeout=30,
                               env=dict(os.environ, CLUED_TLS=v, CLUED_TOKEN="t"))
            assert r.returncode == 0 and r.stdout == "SERVING\n", (v, r.stderr)
        r = subprocess.run([harness.CLUECTL, "--server", "192.0.2.1:9", "health"], capture_output=True,
                           text=True, timeout=30, env=dict(os.environ, CLUED_INSECURE_CLEARTEXT="no",
                                                           CLUED_TOKEN="t"))
        assert r.returncode == 2 and "refusing" in r.stderr, r.stderr


def test_a_yes_no_variable_saying_neither_is_a_usage_error():
    """CLUED_INSECURE_CLEARTEXT and CLUED_TLS take 1/true/yes/on or 0/false/no/off or empty,
    in any case, and nothing else: a typo or a space around the word is a usage error (exit 2)
    naming the variable and its value, before anything connects, so a mistyped "off" never
    sends the token in cleartext to another host."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", 0))
    ls.listen(4)
    ls.settimeout(0.5)
    here = own_address()
    env = dict(os.environ, CLUED_TOKEN="ct_" + "ab" * 16)
    env.pop("CLUED_TLS", None)
    env.pop("CLUED_INSECURE_CLEARTEXT", None)

    def run(server, **more):
        return subprocess.run([harness.CLUECTL, "--timeout", "2", "--server", server, "health"],
                              capture_output=True, text=True, timeout=30, env=dict(env, **more))
    try:
        with FakeServer(lambda conn, req: conn.reply(
                req.sid, S.health_pb2.HealthCheckResponse(status=1).SerializeToString())) as srv:
            for var in ("CLUED_INSECURE_CLEARTEXT", "CLUED_TLS"):
                for v in ("flase", " 0", "0 ", "1 ", "maybe", "disabled", "nein", "00", "o"):
                    for server in [srv.addr] + ([f"{here}:{ls.getsockname()[1]}"] if here else []):
                        r = run(server, **{var: v})
                        assert r.returncode == 2, (var, v, server, r.returncode, r.stderr)
                        assert f"{var} must be 1, true, yes or on, or 0, false, no, off or empty " \
                               f"(got '{v}')" in r.stderr, r.stderr
                        assert "ct_" not in r.stderr, r.stderr
            assert srv.requests == [], srv.requests
            # --help and --version still answer.
            r = subprocess.run([harness.CLUECTL, "--version"], capture_output=True, text=True,
                               timeout=30, env=dict(env, CLUED_INSECURE_CLEARTEXT="flase"))
            assert r.returncode == 0 and r.stdout.startswith("cluectl "), r
            # The words, in any case; unset and empty mean off, as before.
            for v in ("1", "TRUE", "Yes", "on"):
                r = run("192.0.2.1:9", CLUED_INSECURE_CLEARTEXT=v)
                assert r.returncode == 1 and "refusing" not in r.stderr, (v, r.stderr)
            for v in ("0", "False", "NO", "off", "", None):
                r = run("192.0.2.1:9", **({} if v is None else {"CLUED_INSECURE_CLEARTEXT": v}))
                assert r.returncode == 2 and "refusing to send the token" in r.stderr, (v, r.stderr)
            r = run(srv.addr, CLUED_TLS="")
            assert r.returncode == 0 and r.stdout == "SERVING\n", r.stderr
        if here:
            try:
                ls.accept()
                raise AssertionError("cluectl connected although a variable was neither yes nor no")
            except socket.timeout:
                pass
    finally:
        ls.close()
    h = subprocess.run([harness.CLUECTL, "--help"], capture_output=True, text=True).stdout
    assert "any other value (spaces included) is a usage error" in h, h


def test_a_token_pasted_with_its_scheme_gets_a_hint():
    """A token given as "Bearer ct_..." or with spaces around it is never valid: cluectl says
    to give the token alone (exit 2), naming where it came from, and sends nothing."""
    with FakeServer(lambda conn, req: conn.reply(req.sid, None, status=16, message="no")) as srv:
        for tok in ("Bearer ct_abc", "bearer ct_abc", " ct_abc", "ct_abc "):
            r = subprocess.run([harness.CLUECTL, "--server", srv.addr, "health"], capture_output=True,
                               text=True, timeout=30, env=dict(os.environ, CLUED_TOKEN=tok))
            assert r.returncode == 2 and "CLUED_TOKEN: give the token alone" in r.stderr, (tok, r.stderr)
        r = subprocess.run([harness.CLUECTL, "--server", srv.addr, "--token", "Bearer ct_abc", "health"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and "--token: give the token alone" in r.stderr, r.stderr
        assert srv.requests == []


def test_a_status_code_past_16_is_unknown_with_its_note():
    """A grpc-status no gRPC code has (a proxy's, a newer server's) is UNKNOWN, the server's
    number kept in the message; on a write it gets UNKNOWN's note that the outcome is unknown
    and how to retry it at most once."""
    for code, message in ((99, "proxy failure"), (1000000, "proxy failure"), (999999999, "proxy failure"), (17, None)):
        def handler(conn, req, code=code, message=message):
            conn.reply(req.sid, None, status=code, message=message)

        with FakeServer(handler) as srv:
            r = ctl(srv, "clue", "submit", "--title", "t", "--summary", "s", "--source", "AUDIT",
                    "--subject-name", "n", "--host-unit", "h", check=1)
        want = (f"UNKNOWN: {message} (grpc-status {code})\n" if message
                else f"UNKNOWN: grpc-status {code} from {srv.addr}\n")
        assert r.stderr.startswith(want), (code, r.stderr)
        assert "The change may or may not have been made. Retrying with --request-id" in r.stderr, \
            (code, r.stderr)


def test_a_json_file_s_text_is_shown_without_its_controls():
    """clue submit --file: an error that quotes the file's text (an unknown field name, a
    value no enum has) shows it as any untrusted text, without the controls the file spells
    as JSON escapes (control characters as spaces, bidi controls as <U+202E>); nothing is
    sent."""
    esc = "\\u001b]0;PWNED-TITLE\\u0007\\u001b[2J\\u001b[31mRED\\rover\\u009b2J\\u202eevil"
    cases = {'{"title%s": "x"}' % esc: "unknown field 'title ]0;PWNED-TITLE  [2J [31mRED over<U+009B>2J<U+202E>evil'",
             '{"subject": {"name%s": "x"}}' % esc: "unknown field 'name ]0;PWNED-TITLE",
             '{"source": "AUDIT%s"}' % esc: "'AUDIT ]0;PWNED-TITLE  [2J [31mRED over<U+009B>2J<U+202E>evil' is not a"}
    d = tempfile.mkdtemp(prefix="cluectl-json-")
    path = os.path.join(d, "clue" + ESC + ".json")
    with FakeServer(lambda conn, req: conn.reply(req.sid, None, status=12, message="no")) as srv:
        for text, want in cases.items():
            for form in (text, "[" + text + "]"):
                with open(path, "w") as f:
                    f.write(form)
                r = ctl(srv, "clue", "submit", "--file", path, check=2)
                assert r.stderr.startswith("cluectl clue submit: "), r.stderr
                assert_clean(r, want, "PWNED-TITLE  [2J [31mRED")
                assert "\u202e" not in r.stderr, r.stderr
        assert srv.requests == []
    shutil.rmtree(d)


def test_a_leaves_file_is_held_to_its_size():
    """The leaves kept beside a checkpoint (DIR/leaves of a witness, F.leaves of checkpoint
    --out F) are a file like any other: a first line claiming 2^32 leaves had cluectl
    allocate for them all (160 GiB) before it read one. A claim the file's size has no room
    for makes it no leaves file, as one that does not hold the checkpoint's leaves is."""
    cp = signed_checkpoint(size=0)
    handler = audit_server(cp, lambda r: S.audit_pb2.ExportAuditEventsResponse(done=True))
    with FakeServer(handler) as srv, tempfile.TemporaryDirectory() as d:
        w = os.path.join(d, "w")
        r = ctl_bounded(srv, "audit", "witness", "--dir", w, "--once", check=0)
        assert r.stdout.startswith("kept checkpoint of 0 events"), r.stdout
        with open(os.path.join(w, "leaves")) as f:
            assert f.read() == "clued-audit-leaves-v1 0\n"
        for claim in (2**32, 2**32 - 1, 70):
            with open(os.path.join(w, "leaves"), "w") as f:
                f.write(f"clued-audit-leaves-v1 {claim}\n" + "1 " + "ab" * 32 + "\n")
            r = ctl_bounded(srv, "audit", "witness", "--dir", w, "--once", check=0)
            assert r.stdout == "", r.stdout
        with open(os.path.join(d, "cp"), "w") as f:
            f.write(cp.note)
        with open(os.path.join(d, "cp.leaves"), "w") as f:
            f.write(f"clued-audit-leaves-v1 {2**32}\n")
        r = ctl_bounded(srv, "audit", "verify", "--checkpoint", os.path.join(d, "cp"), check=0)
        assert r.stdout.startswith("OK: checkpoint of 0 events verified"), r.stdout


def test_a_witness_whose_server_lost_every_checkpoint_fails():
    """A witness that kept a checkpoint of n events, asking a server that has none at all
    (GetCheckpoint: NOT_FOUND; every checkpoint deleted, or its database restored from before
    the first), is told the log shrank to nothing: a FAIL, exit status 1, as when it has an
    older one only. It took this for a server that has published none yet and polled on for
    ever. `verify --checkpoint` of a saved checkpoint says the log was truncated. A witness
    with no checkpoint kept still waits for the first."""
    n = 4
    leaf = [hashlib.sha256(b"\x00" + b"leaf%d" % i).digest() for i in range(n)]

    cp = signed_checkpoint(size=n, root=merkle_root(leaf))
    state = {"gone": False}

    def handler(conn, req):
        if req.path.endswith("/GetCheckpoint") and state["gone"]:
            conn.reply(req.sid, None, status=5, message="no checkpoint has been published yet")
        elif req.path.endswith("/GetCheckpoint"):
            conn.reply(req.sid, cp.SerializeToString())
        elif req.path.endswith("/ExportAuditEvents"):
            export_answer(conn, req, leaf, 2 if state["gone"] else n)  # the last events went with the checkpoints
        else:
            conn.reply(req.sid, None, status=12, message="not in this test")

    with FakeServer(handler) as srv, tempfile.TemporaryDirectory() as d:
        w, key, saved = os.path.join(d, "w"), os.path.join(d, "w", "key.pub"), os.path.join(d, "cp")
        r = ctl_bounded(srv, "audit", "witness", "--dir", w, "--once", check=0)
        assert r.stdout.startswith(f"kept checkpoint of {n} events"), r.stdout
        with open(saved, "w") as f:
            f.write(cp.note)
        state["gone"] = True
        want = (f"FAIL: the log shrank: the server has no checkpoint, the last one kept {n} events; "
                "seq 3 (leaf 2), kept, is the first event gone from the tree\n")
        r = ctl_bounded(srv, "audit", "witness", "--dir", w, "--once", check=1)
        assert r.stdout == want, r.stdout
        r = ctl_bounded(srv, "audit", "witness", "--dir", w, "--interval", "1", check=1, timeout=20)
        assert r.stdout == want and "polling again" not in r.stderr, r.stdout + r.stderr
        r = ctl_bounded(srv, "--json", "audit", "witness", "--dir", w, "--once", check=1)
        got = json.loads(r.stdout)
        assert got == {"result": "fail", "last_size": n, "message": want.rstrip("\n")}, got
        # Run with --key, no DIR/key.pub: the same.
        shutil.copy(key, os.path.join(d, "key.pub"))
        os.unlink(key)
        r = ctl_bounded(srv, "audit", "witness", "--dir", w, "--once", "--key", os.path.join(d, "key.pub"),
                        check=1)
        assert r.stdout == want, r.stdout
        # Without any key: the size its note states, said to be unchecked.
        r = ctl_bounded(srv, "audit", "witness", "--dir", w, "--once", check=1)
        assert r.stdout.startswith(f"FAIL: the log shrank: the server has no checkpoint, the last one kept {n} "
                                   "events (its signature not checked"), r.stdout
        assert not os.path.exists(key), os.listdir(w)
        # verify --checkpoint: a truncation, not only the server's NOT_FOUND.
        r = ctl_bounded(srv, "audit", "verify", "--checkpoint", saved, "--key", os.path.join(d, "key.pub"),
                        check=1)
        assert r.stdout == f"FAIL: the log was truncated: the checkpoint covers {n} events, the server has " \
                           "no checkpoint\n", r.stdout
        r = ctl_bounded(srv, "--json", "audit", "verify", "--checkpoint", saved, "--key",
                        os.path.join(d, "key.pub"), check=1)
        got = json.loads(r.stdout)
        assert got["ok"] is False and "the server has no checkpoint" in got["message"], got
        r = ctl_bounded(srv, "audit", "verify", "--checkpoint", saved, check=1)
        assert r.stdout.startswith(f"FAIL: the log was truncated: the checkpoint covers {n} events, the "
                                   "server has no checkpoint (the saved one's signature not checked"), r.stdout
        # No checkpoint kept: none is published yet, and the witness waits for it.
        r = ctl_bounded(srv, "audit", "witness", "--dir", os.path.join(d, "new"), "--once", check=1)
        assert r.stdout == "" and "NOT_FOUND" in r.stderr, r.stdout + r.stderr
        p = subprocess.Popen([harness.CLUECTL, "audit", "witness", "--dir", os.path.join(d, "new"),
                              "--interval", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, CLUED_SERVER=srv.addr, CLUED_TOKEN="t"))
        try:
            time.sleep(2.5)
            assert p.poll() is None, p.communicate()
        finally:
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=10)
        assert out == "" and "polling again in 1 s" in err, out + err


def test_a_server_breaking_http2_is_named_as_such():
    """When the server breaks HTTP/2 (a PUSH_PROMISE though the client turned push off, a
    window past 2^31-1, DATA on stream 0, a SETTINGS_MAX_FRAME_SIZE below 16384), nghttp2 ends
    the connection itself; cluectl says the server broke the protocol and how, not that the
    server closed the connection."""
    def push(conn, req):
        conn.headers(req.sid, OK_HEADERS)
        conn.send(frame(PUSH_PROMISE, END_HEADERS, req.sid, struct.pack(">I", 2) + hpack_block(
            [(":method", "GET"), (":path", "/x"), (":scheme", "http"), (":authority", "a")])))

    def window(conn, req):
        conn.headers(req.sid, OK_HEADERS)
        conn.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7FFFFFFF)))

    cases = (
        (push, "PUSH_PROMISE: push disabled (PROTOCOL_ERROR)"),
        (window, "WINDOW_UPDATE: Flow control error (FLOW_CONTROL_ERROR)"),
        (lambda conn, req: conn.send(frame(DATA, 0, 0, b"xx")), "DATA: stream_id == 0 (PROTOCOL_ERROR)"),
        (lambda conn, req: conn.send(frame(SETTINGS, 0, 0, struct.pack(">HI", 5, 1))),
         "SETTINGS: invalid SETTINGS_MAX_FRAME_SIZE (PROTOCOL_ERROR)"),
    )
    for handler, what in cases:
        with FakeServer(handler) as srv:
            r = ctl_bounded(srv, "health", check=1)
            want = f"UNAVAILABLE: HTTP/2 protocol error from {srv.addr}: {what}\n"
            assert r.stderr == want, (what, r.stderr)
            assert len(srv.requests) == 1, len(srv.requests)


def test_a_token_too_long_to_be_one_is_refused_before_sending():
    """A token file of 70 KB (a PEM bundle, a JSON export given by mistake) would not fit the
    request headers: cluectl refuses it as a usage error that asks whether --token-file is the
    right file, sends nothing, and adds no note that a change may have been made. A token of
    8192 bytes is still sent."""
    seen = []

    def handler(conn, req):
        seen.append(req.headers.get("authorization", ""))
        conn.reply(req.sid, S.health_pb2.HealthCheckResponse(status=1).SerializeToString())

    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1")
    env.pop("CLUED_TOKEN", None)
    with FakeServer(handler) as srv, tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "token")

        def run(*args, **more):
            return subprocess.run([harness.CLUECTL, "--server", srv.addr, *args], capture_output=True,
                                  text=True, timeout=30, env=dict(env, **more))
        with open(path, "w") as f:
            f.write("a" * 70000 + "\n")
        for args in (["health"], ["clue", "submit", "--title", "t", "--summary", "s", "--source",
                                  "AUDIT", "--subject-name", "n", "--host-unit", "h"]):
            r = run("--token-file", path, *args)
            assert r.returncode == 2, (args, r.returncode, r.stderr)
            assert ("--token-file: the token is 70000 bytes, and tokens are short (at most 8192): "
                    "is --token-file the right file?") in r.stderr, r.stderr
            assert "may or may not" not in r.stderr, r.stderr
        r = run("health", CLUED_TOKEN="b" * 8193)
        assert r.returncode == 2 and "CLUED_TOKEN: the token is 8193 bytes" in r.stderr, r.stderr
        assert "right file" not in r.stderr, r.stderr
        assert seen == []
        with open(path, "w") as f:
            f.write("c" * 8192)
        r = run("--token-file", path, "health")
        assert r.returncode == 0 and seen == ["Bearer " + "c" * 8192], r.stderr


if __name__ == "__main__":
    harness.run_tests(dict(globals()))
