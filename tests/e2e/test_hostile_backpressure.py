"""Backpressure instead of buffering.

Outbound: a client that opens wide flow-control windows and then never reads. Past
--max-conn-buffer (1 MiB) of queued responses its connection's new calls wait, undecoded,
and the queries of calls already running wait in the pool's queue (paused), so the replies
it can make the server hold are those of the queries already running; over all connections,
--max-user-outbound, --max-outbound and (no token) --max-public-outbound bound the total. Inbound: the requests one
connection keeps (unfinished bodies, and decoded messages until their calls end) are capped by
--max-conn-inbound, and those of all connections by --max-inbound; a call that would pass
either gets RESOURCE_EXHAUSTED.

Each attack measures clued's RSS before and after, with a Health/Check probe beside it."""

import os
import socket
import struct
import sys
import time

import grpc

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
import world  # noqa: E402
from hostile import (ASAN_SMALL_QUARANTINE, CANCEL, DATA, PREFACE, RST_STREAM, WINDOW_UPDATE, HealthProbe, Raw, frame,  # noqa: E402
                     grpc_msg, headers_frames, lit, report, request_block, rss_kb, settings, start_clued)

S = harness.stubs()
pb = S.clue_pb2
LIST_NOTES = "/clue.v1.ClueService/ListNotes"


class Ctx:
    pass


def setup():
    c = Ctx()
    c.srv = start_clued("--max-conn-inbound", str(16 << 20), "--db-queue-per-conn", "8")
    c.pid = c.srv.proc.pid
    c.w = world.build(c.srv)
    leader = c.w.G1.leader
    c.token = leader.token
    clue = leader.clue.SubmitClue(pb.SubmitClueRequest(
        request_id=harness.new_request_id(), title="线索", summary="反映某某违规插手工程项目",
        source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=pb.SubjectPerson(name="王某", position="局长"),
        host_unit="市发展改革委"), timeout=20)
    c.clue_id = clue.id
    for i in range(34):
        leader.clue.AddNote(pb.AddNoteRequest(clue_id=clue.id, kind=pb.NOTE_KIND_OTHER, text=f"{i}" + "n" * 60000,
                                              request_id=harness.new_request_id()), timeout=20)
    r = leader.clue.ListNotes(pb.ListNotesRequest(clue_id=clue.id, page_size=500), timeout=20)
    c.reply_bytes = r.ByteSize()
    assert c.reply_bytes > 2_000_000, c.reply_bytes
    return c


def teardown(c):
    c.w.close()
    c.srv.stop()


def varint(n):
    out = b""
    while n >= 128:
        out += bytes([(n & 127) | 128])
        n >>= 7
    return out + bytes([n])


def auth(token):
    return lit("authorization", f"Bearer {token}")


def test_client_that_never_reads(c):
    before = rss_kb(c.pid)
    host, port = c.srv.addr.rsplit(":", 1)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    s.connect((host, int(port)))
    # Windows wide open, so HTTP/2 flow control does not hold the replies back; then 60
    # requests of 2 MiB replies each, and never a read.
    s.sendall(PREFACE + settings([(4, 0x7FFFFFFF)]) + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7FFFFFFF - 65535)))
    body = grpc_msg(pb.ListNotesRequest(clue_id=c.clue_id, page_size=500).SerializeToString())
    with HealthProbe(c.srv.addr) as probe:
        for i in range(60):
            sid = 1 + 2 * i
            s.sendall(headers_frames(sid, request_block(LIST_NOTES, auth(c.token)))
                      + frame(0, 1, sid, body))
        time.sleep(5)
        held = rss_kb(c.pid)
    report(f"60 ListNotes replies of {c.reply_bytes / 1e6:.1f} MB to a client that never reads", before, held, 48)
    probe.assert_prompt()
    assert "over --max-conn-buffer" in c.srv.output()
    s.close()
    harness.wait_for(lambda: "conn" in c.srv.output() and c.srv.alive(), what="close")
    time.sleep(0.5)
    # The same user on a connection that reads gets its notes, all of them.
    r = c.w.G1.leader.clue.ListNotes(pb.ListNotesRequest(clue_id=c.clue_id, page_size=500), timeout=20)
    assert r.ByteSize() == c.reply_bytes


def test_running_calls_pause_with_the_default_queue_share(c):
    """--db-queue-per-conn at its default (128), so 60 calls may all be running at once. Once
    the connection's output passes --max-conn-buffer its waiting queries are paused in the
    pool's queue: the server holds the replies of the queries already running (at most the
    pool's 8), not 60 of them. Other connections' queries go past the paused ones."""
    url = c.srv.database_url.replace("user=clued_owner", "user=postgres")
    srv = harness.Clued(url, env={"ASAN_OPTIONS": ASAN_SMALL_QUARANTINE}).start()
    try:
        pid = srv.proc.pid
        with grpc.insecure_channel(srv.addr) as ch:  # warm up: one full reply, read
            r = S.clue_pb2_grpc.ClueServiceStub(ch).ListNotes(
                pb.ListNotesRequest(clue_id=c.clue_id, page_size=500),
                metadata=[("authorization", "Bearer " + c.token)], timeout=20)
            assert r.ByteSize() == c.reply_bytes
        time.sleep(0.5)
        before = rss_kb(pid)
        host, port = srv.addr.rsplit(":", 1)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
        s.connect((host, int(port)))
        s.sendall(PREFACE + settings([(4, 0x7FFFFFFF)])
                  + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7FFFFFFF - 65535)))
        body = grpc_msg(pb.ListNotesRequest(clue_id=c.clue_id, page_size=500).SerializeToString())
        with HealthProbe(srv.addr) as probe:
            for i in range(60):
                sid = 1 + 2 * i
                s.sendall(headers_frames(sid, request_block(LIST_NOTES, auth(c.token))) + frame(0, 1, sid, body))
            time.sleep(5)
            held = rss_kb(pid)
            # Meanwhile another connection's call is served: paused queries do not block the queue.
            ch = grpc.insecure_channel(srv.addr)
            stub = S.clue_pb2_grpc.ClueServiceStub(ch)
            r = stub.ListNotes(pb.ListNotesRequest(clue_id=c.clue_id, page_size=1),
                               metadata=[("authorization", "Bearer " + c.token)], timeout=10)
            assert len(r.notes) == 1
            ch.close()
        report(f"60 ListNotes replies of {c.reply_bytes / 1e6:.1f} MB, default --db-queue-per-conn, never read",
               before, held, 64)  # unpaused, the 60 replies alone are 120 MB
        probe.assert_prompt()
        assert "new calls and queries wait" in srv.output()
        s.close()
        harness.wait_for(lambda: "peer closed the connection" in srv.output(), what="the close")
    finally:
        srv.stop()


def test_slow_reader_gets_everything(c):
    # A client that reads slowly (not never) gets every reply in full: waiting is not refusing.
    r = Raw(c.srv.addr, settings_pairs=[(4, 0x7FFFFFFF)])
    r.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7FFFFFFF - 65535)))
    body = grpc_msg(pb.ListNotesRequest(clue_id=c.clue_id, page_size=500).SerializeToString())
    sids = [1 + 2 * i for i in range(8)]  # within --db-queue-per-conn
    for sid in sids:
        r.send(headers_frames(sid, request_block(LIST_NOTES, auth(c.token))) + frame(0, 1, sid, body))
    time.sleep(1)
    r.until(lambda: all(s in r.ended for s in sids), 120, "all replies")
    for sid in sids:
        assert r.status(sid) == 0, (sid, r.hdrs.get(sid))
        assert len(r.data[sid]) == 5 + c.reply_bytes, (sid, len(r.data.get(sid, b"")))
    r.close()


def test_unfinished_uploads_capped(c):
    before = rss_kb(c.pid)
    with HealthProbe(c.srv.addr) as probe:
        r = Raw(c.srv.addr)
        # ListNotesRequest with a 3.9 MB unknown field (15, bytes): valid protobuf, never ended.
        big = pb.ListNotesRequest(clue_id=c.clue_id).SerializeToString() + b"\x7a" + varint(3_900_000) \
            + b"u" * 3_900_000
        msg = grpc_msg(big)
        sids = [1, 3, 5, 7, 9]
        for sid in sids:
            r.send(headers_frames(sid, request_block(LIST_NOTES, auth(c.token))))
        r.until(lambda: r.server_settings is not None, 5, "SETTINGS")
        time.sleep(0.3)  # the token lookups answer
        for sid in sids:
            r.send_body(sid, msg[:-10], end_stream=False, stop=lambda: 9 in r.ended)
        r.until(lambda: 9 in r.ended, 20, "the refusal of the fifth upload")
        held = rss_kb(c.pid)
        status9, msg9 = r.status(9), r.message(9)
        # The four within the limit finish and are served.
        for sid in sids[:4]:
            r.send_body(sid, msg[-10:])
        r.until(lambda: all(s in r.ended for s in sids[:4]), 30, "the four")
        statuses = [r.status(s) for s in sids[:4]]
        assert r.check(11) == 0
        r.close()
    report("5 unfinished 3.9 MB uploads on one connection", before, held, 40)
    probe.assert_prompt()
    assert status9 == 8 and "bytes of requests" in msg9 and "--max-conn-inbound" in msg9, (status9, msg9)
    assert statuses == [0] * 4, statuses


def test_stream_window_bounds_an_unfinished_message(c):
    """Inbound bounded by HTTP/2 flow control: a stream's credit comes back only as its
    messages are taken, so a client that leaves a message unfinished cannot push past the
    stream's window (one largest message); DATA past it resets that stream with
    FLOW_CONTROL_ERROR and the connection goes on."""
    before = rss_kb(c.pid)
    r = Raw(c.srv.addr)
    r.until(lambda: r.server_settings is not None, 5, "SETTINGS")
    window = r.server_settings.get(4)
    size = 4 << 20  # --max-message's default: the largest request message
    assert window == size + 5, r.server_settings
    # A valid ListNotesRequest of exactly the largest size (an unknown bytes field pads it).
    req = pb.ListNotesRequest(clue_id=c.clue_id).SerializeToString() + b"\x7a"
    pad = size - len(req) - 4
    body = req + varint(pad) + b"p" * pad
    assert len(body) == size
    msg = grpc_msg(body)
    r.send(headers_frames(1, request_block(LIST_NOTES, auth(c.token))))
    assert r.send_body(1, msg[:-1], end_stream=False) == len(msg) - 1
    time.sleep(1)  # the token lookup answers; any credit the server would give arrives
    r.read(0.5)
    assert r.windows[1] == 1, r.windows  # no credit for a message not yet whole
    assert r.check(3) == 0  # the connection's credit came back: other streams go on
    held = rss_kb(c.pid)
    r.send(frame(0, 0, 1, b"xy"))  # one byte past the window
    r.until(lambda: 1 in r.rst, 10, "the reset of stream 1")
    assert r.rst[1] == 3, r.rst  # FLOW_CONTROL_ERROR
    assert r.check(5) == 0 and r.goaway is None
    r.close()
    report("a 4 MiB message left unfinished, then pushed past its window", before, held, 24)


# Field 15, 24 bytes: kept by the decoder as an unknown field, so a message of many of them
# decodes to about three times its size.
UNKNOWN = b"\x7a\x18" + b"u" * 24


def own_server(c, *args):
    """(clued, hold): a clued of its own on the shared database with args, and a connection
    (the superuser's, which may lock any table) in a transaction of its own."""
    dbname = c.srv.database_url.split("///", 1)[1].split("?", 1)[0]
    url = c.srv.database_url.replace("user=clued_owner", "user=postgres")
    srv = harness.Clued(url, args=list(args), env={"ASAN_OPTIONS": ASAN_SMALL_QUARANTINE}).start(migrate=False)
    hold = harness.Postgres.get().connect(dbname)
    hold.autocommit = False
    return srv, hold


def test_decoded_requests_count_against_their_connection_and_the_server(c):
    """A complete request waiting on the database keeps its decoded message, which protobuf
    may make several times larger than its bytes: many small unknown fields here, about 3
    times. What a connection keeps (--max-conn-inbound) and what all of them keep
    (--max-inbound) count the decoded message until its call ends, so a connection's
    requests held by a stalled database are bounded by the limit, not by how many calls it
    may have waiting; past it a call gets RESOURCE_EXHAUSTED, and once the database moves
    the calls held complete and the room is there again."""
    srv, hold = own_server(c, "--max-conn-inbound", str(16 << 20), "--max-inbound", str(24 << 20),
                           "--max-user-inbound", str(24 << 20), "--db-lock-timeout", "60000")
    try:
        pid = srv.proc.pid
        head = pb.ListNotesRequest(clue_id=c.clue_id, page_size=1).SerializeToString()
        msg = grpc_msg(head + UNKNOWN * ((1 << 20) // len(UNKNOWN)))
        conns = [Raw(srv.addr, timeout=60), Raw(srv.addr, timeout=60)]
        sids = [1 + 2 * i for i in range(20)]
        for r in conns:
            r.until(lambda: r.server_settings is not None, 5, "SETTINGS")
            for sid in sids:
                r.send(headers_frames(sid, request_block(LIST_NOTES, auth(c.token))))
        time.sleep(0.5)  # the token lookup answers
        before = rss_kb(pid)
        with hold.cursor() as cur:
            cur.execute("LOCK TABLE clues IN ACCESS EXCLUSIVE MODE")
        with HealthProbe(srv.addr) as probe:
            for r in conns:
                for sid in sids:
                    r.send_body(sid, msg)
                r.until(lambda: sum(s in r.ended for s in sids) >= 10, 20, "refusals")
            time.sleep(1)
            for r in conns:
                r.read(0.5)  # every refusal sent by now
            held = rss_kb(pid)
            waiting = [[s for s in sids if s not in r.ended] for r in conns]
            hold.rollback()  # the database moves: the calls held complete
            for r in conns:
                r.until(lambda: all(s in r.ended for s in sids), 60, "every call")
        report("40 requests of 1 MiB that decode to 3 MiB each, held by a locked table", before, held, 40)
        probe.assert_prompt()
        for r, held_calls in zip(conns, waiting):
            statuses = {s: r.status(s) for s in sids}
            assert held_calls and all(statuses[s] == 0 for s in held_calls), statuses
            assert all(statuses[s] == 8 for s in sids if s not in held_calls), statuses
        refusals = [[r.message(s) for s in sids if r.status(s) == 8] for r in conns]
        assert any("--max-conn-inbound" in m for m in refusals[0]), refusals[0]
        assert any("--max-inbound" in m for m in refusals[1]), refusals[1]
        # The room is back: the same requests are served on both connections.
        for r in conns:
            r.send(headers_frames(41, request_block(LIST_NOTES, auth(c.token))))
            r.send_body(41, msg)
            r.until(lambda: 41 in r.ended, 30, "a call after the others")
            assert r.status(41) == 0, r.message(41)
            r.close()
    finally:
        hold.close()
        srv.stop()


def test_one_user_keeps_a_bounded_share_of_the_server(c):
    """With --max-inbound at 48 MiB one user may keep 12 MiB (a quarter) over all its
    connections. G1's leader sends requests that decode to about 3 MiB each on three
    connections, held by a locked table: past 12 MiB they are refused with RESOURCE_EXHAUSTED
    naming --max-user-inbound, though each connection (16 MiB) and the server had room. G1's
    member then sends three such requests on a connection of its own: none is refused, and all
    are served once the table is free. Before, the leader's three connections took the
    server's whole 48 MiB and every request of the member was refused."""
    srv, hold = own_server(c, "--max-conn-inbound", str(16 << 20), "--max-inbound", str(48 << 20),
                           "--db-lock-timeout", "60000")
    conns = []
    try:
        head = pb.ListNotesRequest(clue_id=c.clue_id, page_size=1).SerializeToString()
        msg = grpc_msg(head + UNKNOWN * ((1 << 20) // len(UNKNOWN)))
        leader = [Raw(srv.addr, timeout=60) for _ in range(3)]
        member = Raw(srv.addr, timeout=60)
        conns = leader + [member]
        sids = [1 + 2 * i for i in range(8)]
        msids = sids[:3]
        for r in conns:
            r.until(lambda: r.server_settings is not None, 5, "SETTINGS")
        for r in leader:
            for sid in sids:
                r.send(headers_frames(sid, request_block(LIST_NOTES, auth(c.token))))
        for sid in msids:
            member.send(headers_frames(sid, request_block(LIST_NOTES, auth(c.w.G1.member.token))))
        time.sleep(0.5)  # the token lookups answer
        with hold.cursor() as cur:
            cur.execute("LOCK TABLE clues IN ACCESS EXCLUSIVE MODE")
        for r in leader:
            for sid in sids:
                r.send_body(sid, msg)
        last = -1
        while True:  # until every body has arrived and every refusal is read
            for r in leader:
                r.read(0.5)
            refused = sum(1 for r in leader for sid in sids if sid in r.ended)
            if refused == last:
                break
            last = refused
        assert refused >= 16, f"only {refused} of the leader's 24 requests refused"
        for sid in msids:
            member.send_body(sid, msg)
        member.read(1.0)
        assert not [sid for sid in msids if sid in member.ended], \
            [(sid, member.status(sid), member.message(sid)) for sid in msids if sid in member.ended]
        hold.rollback()  # the database moves: the calls held complete
        for r, ids in zip(conns, [sids] * 3 + [msids]):
            r.until(lambda: all(s in r.ended for s in ids), 60, "every call")
        assert all(member.status(sid) == 0 for sid in msids), [member.message(sid) for sid in msids]
        messages = [r.message(sid) for r in leader for sid in sids if r.status(sid) == 8]
        assert len(messages) == refused and all("--max-user-inbound" in m for m in messages), messages
        assert sum(1 for r in leader for sid in sids if r.status(sid) == 0) == 24 - refused
    finally:
        for r in conns:
            r.close()
        hold.rollback()
        hold.close()
        srv.stop()


def test_bodies_sent_during_the_token_lookup_count_once_it_answers(c):
    """A caller's body may arrive while its token is being looked up, within the flow-control
    credit held for it, and no total counts it yet. Once the lookup answers it is counted and
    checked as DATA is: G1's leader sends 16 bodies of 512 KiB on four connections while the
    tokens table is locked; when the lookups answer, what passes its 4 MiB share
    (--max-inbound 16 MiB) is refused with RESOURCE_EXHAUSTED naming --max-user-inbound.
    Before, all 16 were taken: twice the share, and any number of connections more."""
    srv, hold = own_server(c, "--max-inbound", str(16 << 20), "--auth-cache-ttl", "0", "--db-lock-timeout", "60000")
    conns = []
    try:
        head = pb.ListNotesRequest(clue_id=c.clue_id, page_size=1).SerializeToString()
        partial = grpc_msg(head + UNKNOWN * ((1 << 20) // len(UNKNOWN)))[:512 << 10]
        conns = [Raw(srv.addr, timeout=60) for _ in range(4)]
        for r in conns:
            r.until(lambda: r.server_settings is not None and r.conn_window > 65535, 5, "SETTINGS and window")
        sids = [1, 3, 5, 7]
        with hold.cursor() as cur:
            cur.execute("LOCK TABLE tokens IN ACCESS EXCLUSIVE MODE")
        for r in conns:
            for sid in sids:
                r.send(headers_frames(sid, request_block(LIST_NOTES, auth(c.token))))
                r.send_body(sid, partial, end_stream=False)
        time.sleep(0.5)
        assert not any(r.ended for r in conns), "refused before the lookups answered"
        hold.rollback()  # the lookups answer
        last = -1
        while True:
            for r in conns:
                r.read(0.5)
            refused = [r.message(sid) for r in conns for sid in sids if sid in r.ended]
            if len(refused) == last:
                break
            last = len(refused)
        assert 8 <= len(refused) <= 12, refused
        for r in conns:
            for sid in sids:
                if sid in r.ended:
                    assert r.status(sid) == 8 and "--max-user-inbound" in r.message(sid), (r.status(sid), r.message(sid))
    finally:
        for r in conns:
            r.close()
        hold.rollback()
        hold.close()
        srv.stop()


def test_requests_without_a_token_are_bounded_over_connections(c):
    """Requests to methods that need no token are bounded per connection (1 MiB) and, since
    connections are many, over all of them: an eighth of --max-inbound (512 KiB here).
    Strangers leave Health/Check requests unfinished on three connections, 300 KB each: past
    512 KiB the server refuses them with RESOURCE_EXHAUSTED naming the limit, though each
    connection is within its own; a small Health/Check is still answered; and once the
    strangers go the room is back."""
    srv, hold = own_server(c, "--max-inbound", str(4 << 20))
    conns = []
    try:
        body = S.health_pb2.HealthCheckRequest(service="s" * 60000).SerializeToString()
        partial = grpc_msg(body)[:50000]
        sids = [1 + 2 * i for i in range(6)]
        conns = [Raw(srv.addr, timeout=60) for _ in range(3)]
        for r in conns:
            r.until(lambda: r.server_settings is not None and r.conn_window > 65535, 5, "SETTINGS and window")
            for sid in sids:
                r.send(headers_frames(sid, request_block()))
                r.send_body(sid, partial, end_stream=False)
        last = -1
        while True:
            for r in conns:
                r.read(0.3)
            refused = [(r, sid) for r in conns for sid in sids if sid in r.ended]
            if len(refused) == last:
                break
            last = len(refused)
        assert 7 <= len(refused) <= 9, len(refused)
        for r, sid in refused:
            assert r.status(sid) == 8 and "methods that need no token, over its limit of 524288" in r.message(sid), \
                r.message(sid)
        probe = Raw(srv.addr)
        assert probe.check(1) == 0
        for r in conns:
            r.close()
        conns = []
        time.sleep(0.5)
        probe.send(headers_frames(3, request_block()))
        probe.send_body(3, grpc_msg(body))
        probe.until(lambda: 3 in probe.ended, 10, "a large Health/Check")
        assert probe.status(3) == 5, (probe.status(3), probe.message(3))  # an unknown service, not refused
        probe.close()
    finally:
        for r in conns:
            r.close()
        hold.close()
        srv.stop()


REFLECTION = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
# file_containing_symbol: clue.v1.ClueService, answered with its file and their imports (10 KB)
REFLECTION_ASK = grpc_msg(b"\x22" + bytes([19]) + b"clue.v1.ClueService")


def silent_conns(addr, n, out):
    """n connections that grant no stream window (SETTINGS_INITIAL_WINDOW_SIZE 0, so no DATA
    can be sent to them) and never read; out (bytes) is sent on each after the preface."""
    host, port = addr.rsplit(":", 1)
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect((host, int(port)))
        s.sendall(PREFACE + settings([(4, 0)]) + out)
        socks.append(s)
    return socks


def test_unread_reflection_answers_are_bounded_over_connections(c):
    """Strangers (no token) open a reflection stream on each of 150 connections that grant no
    window and never read, and ask 60 times each for a 10 KB answer. Past
    --max-public-outbound of answers queued over all connections (1 MiB here), and past
    64 KiB on one connection, the streams read no further request until the answers drain:
    the server holds about the bound, not 150 x 60 answers (before: each connection queued
    answers up to its --max-conn-buffer, 1.1 MiB a stream, 4.4 GiB at --max-public-streams).
    A Health/Check is answered meanwhile, and once the strangers go a reflection client that
    reads is answered."""
    srv, hold = own_server(c, "--max-public-outbound", str(1 << 20))
    socks = []
    try:
        pid = srv.proc.pid
        r = Raw(srv.addr)
        r.send(headers_frames(1, request_block(REFLECTION)) + frame(0, 1, 1, REFLECTION_ASK))
        r.until(lambda: 1 in r.ended, 10, "a reflection answer")
        assert r.status(1) == 0 and len(r.data.get(1, b"")) > 8000, (r.status(1), r.message(1))
        r.close()
        time.sleep(0.5)
        before = rss_kb(pid)
        with HealthProbe(srv.addr) as probe:
            socks = silent_conns(srv.addr, 150, headers_frames(1, request_block(REFLECTION)))
            time.sleep(0.5)
            for _ in range(60):
                for s in socks:
                    s.sendall(frame(0, 0, 1, REFLECTION_ASK))
            time.sleep(3)
            held = rss_kb(pid)
        report("150 reflection streams asking 60 times each, never reading", before, held, 24)
        probe.assert_prompt()
        for s in socks:
            s.close()
        socks = []
        time.sleep(1)
        r = Raw(srv.addr)
        r.send(headers_frames(1, request_block(REFLECTION)) + frame(0, 1, 1, REFLECTION_ASK))
        r.until(lambda: 1 in r.ended, 10, "a reflection answer after the strangers left")
        assert r.status(1) == 0 and len(r.data.get(1, b"")) > 8000, (r.status(1), r.message(1))
        r.close()
    finally:
        for s in socks:
            s.close()
        hold.close()
        srv.stop()


def test_one_user_queues_a_bounded_share_of_unread_replies(c):
    """G1's leader opens 50 connections that grant no window and never read, each with one
    ListNotes of a 2 MB reply. With --max-user-outbound at 16 MiB, once the user's queued
    replies reach it its further calls wait before running and its waiting queries stay in
    the pool's queue: the server holds the share and the replies of the queries already
    running, not 50 replies (before: 4.3 MiB a connection, nothing bounding their total).
    G2's leader is served meanwhile; once the leader's connections go its calls are served
    again."""
    srv, hold = own_server(c, "--max-user-outbound", str(16 << 20))
    socks = []
    try:
        pid = srv.proc.pid
        body = grpc_msg(pb.ListNotesRequest(clue_id=c.clue_id, page_size=500).SerializeToString())
        other = S.clue_pb2_grpc.ClueServiceStub(grpc.insecure_channel(srv.addr))
        other_md = [("authorization", "Bearer " + c.w.G2.leader.token)]
        mine = S.clue_pb2_grpc.ClueServiceStub(grpc.insecure_channel(srv.addr))
        my_md = [("authorization", "Bearer " + c.token)]
        r = mine.ListNotes(pb.ListNotesRequest(clue_id=c.clue_id, page_size=500), metadata=my_md, timeout=20)
        assert r.ByteSize() == c.reply_bytes
        time.sleep(0.5)
        before = rss_kb(pid)
        socks = silent_conns(srv.addr, 50, headers_frames(1, request_block(LIST_NOTES, auth(c.token)))
                             + frame(0, 1, 1, body))
        peak = before
        for _ in range(8):
            time.sleep(0.5)
            peak = max(peak, rss_kb(pid))
            other.ListClues(pb.ListCluesRequest(page_size=1), metadata=other_md, timeout=10)
        report("50 unread ListNotes replies of one user", before, peak, 100)
        for s in socks:
            s.close()
        socks = []
        time.sleep(1)
        r = mine.ListNotes(pb.ListNotesRequest(clue_id=c.clue_id, page_size=500), metadata=my_md, timeout=20)
        assert r.ByteSize() == c.reply_bytes
    finally:
        for s in socks:
            s.close()
        hold.close()
        srv.stop()


def test_a_connection_over_its_buffer_is_logged_once_a_second(c):
    # A peer that never reads, asking for large answers while the kernel still takes bytes,
    # crosses --max-conn-buffer with each answer: its connection's line comes at most once a
    # second (it came once per answer, 200 here), and says how often it went over since.
    srv = start_clued("--max-conn-buffer", "16384")
    try:
        r = Raw(srv.addr, settings_pairs=((4, 2 ** 31 - 1),))  # SETTINGS_INITIAL_WINDOW_SIZE
        r.until(lambda: r.server_settings is not None, 5, "the server's SETTINGS")
        r.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 2 ** 31 - 1 - 65535)))
        ask = bytes([0x1A, 18]) + b"clue/v1/clue.proto"  # file_by_filename, about 10 KiB
        t0 = time.monotonic()
        r.send(headers_frames(1, request_block("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"))
               + frame(DATA, 0, 1, grpc_msg(ask) * 200))
        harness.wait_for(lambda: "over --max-conn-buffer" in srv.output(), 10, what="the connection over its buffer")
        time.sleep(2.0)
        lines = [ln for ln in srv.output().splitlines() if "over --max-conn-buffer" in ln]
        assert 1 <= len(lines) <= 1 + (time.monotonic() - t0), lines
        r.close()
    finally:
        srv.stop()


def test_calls_reset_during_their_token_lookup_give_their_credit_back(c):
    """The body that arrives while a caller's token is being looked up holds its connection's
    flow-control credit until the lookup answers. A call reset meanwhile (grpcio cancels a call
    whose deadline passes while a busy database keeps its lookup waiting) used to keep that
    credit for good: after 8 MiB of such bodies (the connection's window) the connection could
    carry no request body any more, and every later call on it hung to its deadline. Here, while
    the tokens table is locked, ten calls send 1 MiB of body each and are reset; their credit
    comes back, and once the lookups answer a call on the same connection is answered."""
    srv, hold = own_server(c, "--auth-cache-ttl", "0", "--db-lock-timeout", "60000")
    r = None
    try:
        r = Raw(srv.addr, timeout=60)
        r.until(lambda: r.server_settings is not None and r.conn_window > 65535, 5, "SETTINGS and window")
        window = r.conn_window
        body = grpc_msg(b"\x0a" * ((1 << 20) - 5))  # never decoded: its call is reset first
        with hold.cursor() as cur:
            cur.execute("LOCK TABLE tokens IN ACCESS EXCLUSIVE MODE")
        sent = 0
        for sid in range(1, 21, 2):
            r.send(headers_frames(sid, request_block(LIST_NOTES, auth(c.token))))
            sent += r.send_body(sid, body, end_stream=False, timeout=10)
            r.send(frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL)))
        assert sent > window, (sent, window)
        hold.rollback()  # the lookups answer
        req = pb.ListNotesRequest(clue_id=c.clue_id, page_size=1).SerializeToString()
        r.send(headers_frames(21, request_block(LIST_NOTES, auth(c.token))))
        r.send_body(21, grpc_msg(req), timeout=10)
        r.until(lambda: 21 in r.ended, 20, "the call after the resets")
        assert r.status(21) == 0, (r.status(21), r.message(21))
    finally:
        if r is not None:
            r.close()
        hold.rollback()
        hold.close()
        srv.stop()


def test_flags_documented(c):
    out = harness.Clued().run("help").stdout
    assert "--max-conn-buffer" in out and "--max-conn-inbound" in out and "--max-inbound" in out
    assert "--max-user-inbound" in out
    assert "--max-outbound" in out and "--max-user-outbound" in out and "--max-public-outbound" in out
    for flag in ("--max-outbound", "--max-user-outbound", "--max-public-outbound"):
        res = harness.Clued().run("serve", flag, "1000", check=False)
        assert res.returncode != 0 and flag in res.stderr, (flag, res.returncode, res.stderr)


if __name__ == "__main__":
    harness.run_tests(globals(), setup, teardown)
