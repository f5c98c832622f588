"""Connection-level fuzzing of clued's HTTP/2 layer.

A few hundred connections, in parallel batches, each send a stream of HTTP/2 frames: a valid
request sequence (preface, SETTINGS, HEADERS, DATA) or one of the protocol's known abuse
patterns (PING and SETTINGS floods, rapid reset, CONTINUATION floods, HPACK bombs, odd
SETTINGS, WINDOW_UPDATE 0 and overflow, frames on the wrong streams, ...), then mutated:
bytes flipped, frames duplicated, dropped, swapped or inserted (random types, flags, stream
ids and lengths, over the maximum frame size too), the stream cut short. Each connection
reads what the server answers for a short while and hangs up (sometimes with a TCP reset).

Properties: the server's first frame, when it sends any, is its SETTINGS; after every batch
clued is alive and answers a normal Health/Check on a fresh connection; when the fuzzing is
over no server-side socket is left open; clued's output stays whole UTF-8 log lines; it
exits 0 on SIGTERM with no ASan/UBSan report.

    FUZZ_SEED=<int>    reproduce a run (the seed is printed; the default is fixed)
    FUZZ_CONNS=<int>   connections (default 400)
    FUZZ_CONN=<int>    replay only connection number <int> of the run (with its seed)
"""

import concurrent.futures
import os
import random
import re
import socket
import struct
import sys
import time

import grpc
from hpack import Encoder

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

S = harness.stubs()
SEED = int(os.environ.get("FUZZ_SEED", "20260514"))
CONNS = int(os.environ.get("FUZZ_CONNS", "400"))
ONLY_CONN = os.environ.get("FUZZ_CONN")
BATCH = 25
READ_IDLE = 0.15  # seconds of silence after which a connection stops reading
READ_MAX = 1.0    # and the most it reads at all
ANSWER_MAX = 10.0  # how long valid requests may take to be answered
CHECK = "/grpc.health.v1.Health/Check"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 0x1, 0x1, 0x4, 0x8, 0x20
MAX_FRAME = 16384


def frame(ftype, flags, sid, payload=b"", length=None):
    n = len(payload) if length is None else length
    return struct.pack(">I", n & 0xFFFFFF)[1:] + bytes([ftype & 0xFF, flags & 0xFF]) + \
        struct.pack(">I", sid & 0xFFFFFFFF) + payload


def settings(*pairs, flags=0, sid=0):
    return frame(SETTINGS, flags, sid, b"".join(struct.pack(">HI", k & 0xFFFF, v & 0xFFFFFFFF) for k, v in pairs))


def grpc_msg(payload=b""):
    return struct.pack(">BI", 0, len(payload)) + payload


def health_req(service=""):
    return S.health_pb2.HealthCheckRequest(service=service).SerializeToString()


def req_headers(path=CHECK, extra=()):
    return [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "fuzz"),
            ("content-type", "application/grpc"), ("te", "trailers"), *extra]


# ---- scenarios: each returns the chunks (frames) a connection sends, preface first --------------


class Conn:
    """What one connection sends: built from a scenario, then mutated."""

    def __init__(self, rng):
        self.rng = rng
        self.enc = Encoder()
        self.chunks = [PREFACE, settings()]
        self.expect = set()  # streams that must get a complete answer when nothing was mutated

    def add(self, *frames):
        self.chunks.extend(frames)

    def headers(self, sid, hdrs=None, end_stream=False, flags=END_HEADERS, paths=None):
        block = self.enc.encode(hdrs or req_headers(self.rng.choice(paths or PATHS)))
        return frame(HEADERS, flags | (END_STREAM if end_stream else 0), sid, block)

    def request(self, sid, body=None, split=False, paths=None):
        """A whole gRPC call on stream sid."""
        body = grpc_msg(health_req()) if body is None else body
        out = [self.headers(sid, paths=paths)]
        if split and len(body) > 1:
            cut = self.rng.randrange(1, len(body))
            out += [frame(DATA, 0, sid, body[:cut]), frame(DATA, END_STREAM, sid, body[cut:])]
        else:
            out.append(frame(DATA, END_STREAM, sid, body))
        return out


GRPC_PATHS = [CHECK, CHECK, CHECK, "/clue.v1.ClueService/GetClue", "/clue.v1.AdminService/ListUnits",
              "/no.such.Service/Method", "/"]  # each answered with a status at once
PATHS = GRPC_PATHS + ["/grpc.health.v1.Health/Watch", "*"]


def sc_valid(c):
    r = c.rng
    c.add(settings(flags=ACK) if r.random() < 0.5 else settings((4, 1 << 20)))
    sid = 1
    for _ in range(r.randint(1, 4)):
        c.add(*c.request(sid, split=r.random() < 0.5, paths=GRPC_PATHS))
        c.expect.add(sid)
        sid += 2


def sc_ping_flood(c):
    r = c.rng
    n = r.choice((100, 1000, 5000))
    c.add(*(frame(PING, ACK if r.random() < 0.1 else 0, 0, r.randbytes(8)) for _ in range(n)))
    c.add(*c.request(1))


def sc_settings_odd(c):
    r = c.rng
    odd = [(1, 0), (1, 2**32 - 1), (2, 2), (2, 1), (3, 0), (3, 2**32 - 1), (4, 2**31), (4, 2**31 - 1), (4, 0),
           (5, 100), (5, 2**24), (5, 16383), (5, 2**24 - 1), (6, 0), (6, 1), (6, 2**32 - 1), (8, 1), (8, 7),
           (0, 5), (0xFFFF, 1), (9, 1), (0x10, 2)]
    pairs = r.sample(odd, r.randint(1, 5))
    kind = r.randrange(5)
    if kind == 0:
        c.add(settings(*pairs))
    elif kind == 1:  # length not a multiple of 6
        c.add(frame(SETTINGS, 0, 0, r.randbytes(r.choice((1, 5, 7, 13)))))
    elif kind == 2:  # ACK with a payload, or SETTINGS on a stream
        c.add(settings(*pairs, flags=ACK) if r.random() < 0.5 else settings(*pairs, sid=r.choice((1, 3, 2**31 - 1))))
    elif kind == 3:  # a SETTINGS flood
        c.add(*(settings(*r.sample(odd[:9], 1)) for _ in range(r.choice((100, 2000)))))
    else:  # a change of the window size in the middle of a call
        c.add(c.headers(1), settings((4, r.choice((0, 1, 2**31 - 1)))),
              frame(DATA, END_STREAM, 1, grpc_msg(health_req())))
    c.add(*c.request(r.choice((1, 3, 5))))


def sc_window_update(c):
    r = c.rng
    kind = r.randrange(4)
    if kind == 0:  # zero increments
        c.add(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0)), *c.request(1),
              frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 0)))
    elif kind == 1:  # overflow of the connection or a stream window
        sid = r.choice((0, 1))
        c.add(c.headers(1), *(frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", 2**31 - 1)) for _ in range(2)),
              frame(DATA, END_STREAM, 1, grpc_msg(health_req())))
    elif kind == 2:  # on idle and closed streams, wrong lengths
        c.add(*c.request(1),
              frame(WINDOW_UPDATE, 0, r.choice((1, 3, 4, 99)), struct.pack(">I", r.randint(1, 2**31 - 1))),
              frame(WINDOW_UPDATE, 0, 0, r.randbytes(r.choice((0, 3, 5, 8)))))
    else:  # reserved bit set
        c.add(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x80000000 | 1000)), *c.request(1))


def sc_continuation(c):
    r = c.rng
    kind = r.randrange(4)
    block = c.enc.encode(req_headers())
    if kind == 0:  # CONTINUATION without HEADERS
        c.add(frame(CONTINUATION, END_HEADERS, r.choice((1, 3, 0)), block))
    elif kind == 1:  # HEADERS then frames of other types in the middle of the block
        cut = r.randrange(1, len(block))
        c.add(frame(HEADERS, 0, 1, block[:cut]), frame(PING, 0, 0, b"\0" * 8),
              frame(CONTINUATION, END_HEADERS, 1, block[cut:]))
    elif kind == 2:  # a CONTINUATION flood that never ends the block
        c.add(frame(HEADERS, 0, 1, block))
        filler = c.enc.encode([("x-pad", "a" * 1000)]) if r.random() < 0.5 else b""
        c.add(*(frame(CONTINUATION, 0, 1, filler or r.randbytes(r.choice((0, 16, 1000))))
                for _ in range(r.choice((100, 1000, 3000)))))
    else:  # a block split into one-byte CONTINUATIONs, on the wrong stream at the end
        c.add(frame(HEADERS, 0, 1, block[:1]))
        for i in range(1, len(block)):
            last = i == len(block) - 1
            c.add(frame(CONTINUATION, END_HEADERS if last else 0, 1 if not last or r.random() < 0.5 else 3,
                        block[i:i + 1]))
        c.add(frame(DATA, END_STREAM, 1, grpc_msg(health_req())))


def sc_bad_streams(c):
    r = c.rng
    kind = r.randrange(6)
    if kind == 0:  # HEADERS on stream 0 or an even id
        c.add(c.headers(r.choice((0, 2, 4, 2**31 - 2))))
    elif kind == 1:  # ids that go down, reuse of a closed stream
        c.add(*c.request(5), *c.request(3), *c.request(5))
    elif kind == 2:  # RST_STREAM on idle streams, stream 0, wrong length
        c.add(frame(RST_STREAM, 0, r.choice((1, 7, 0, 2)), struct.pack(">I", r.randint(0, 20))),
              frame(RST_STREAM, 0, 1, r.randbytes(r.choice((0, 3, 5)))), *c.request(1))
    elif kind == 3:  # PRIORITY: self-dependency, stream 0, wrong length, on idle streams
        c.add(frame(PRIORITY, 0, 1, struct.pack(">IB", 1, 16)), frame(PRIORITY, 0, 0, struct.pack(">IB", 3, 0)),
              frame(PRIORITY, 0, 9, r.randbytes(r.choice((4, 5, 6)))),
              *(frame(PRIORITY, 0, 2 * i + 11, struct.pack(">IB", 2 * i + 9, r.randrange(256))) for i in range(200)),
              *c.request(1))
    elif kind == 4:  # DATA on stream 0, idle streams, after END_STREAM; PUSH_PROMISE from a client
        c.add(frame(DATA, 0, r.choice((0, 1, 3)), b"ab"), *c.request(1), frame(DATA, 0, 1, b"late"),
              frame(PUSH_PROMISE, END_HEADERS, 1, struct.pack(">I", 2) + c.enc.encode(req_headers())))
    else:  # padding longer than the frame
        c.add(frame(HEADERS, END_HEADERS | PADDED, 1, bytes([200]) + c.enc.encode(req_headers())),
              frame(DATA, PADDED | END_STREAM, 1, bytes([r.randint(5, 255)]) + b"abcd"))


def sc_rapid_reset(c):
    r = c.rng
    n = r.choice((100, 1000, 3000))
    for i in range(n):
        sid = 2 * i + 1
        c.add(c.headers(sid, end_stream=r.random() < 0.3), frame(RST_STREAM, 0, sid, struct.pack(">I", 8)))
    c.add(*c.request(2 * n + 1))


def sc_many_streams(c):
    r = c.rng
    n = r.choice((50, 200, 1000))
    for i in range(n):  # streams opened and never ended, over any concurrency limit
        c.add(c.headers(2 * i + 1, hdrs=req_headers(r.choice((CHECK, "/grpc.health.v1.Health/Watch")))))
    if r.random() < 0.5:
        c.add(*(frame(DATA, END_STREAM, 2 * i + 1, grpc_msg(health_req())) for i in range(n)))


def sc_huge_headers(c):
    r = c.rng
    kind = r.randrange(5)
    if kind == 0:  # one enormous value, split over CONTINUATIONs
        block = c.enc.encode(req_headers(extra=[("x-big", "v" * r.choice((20000, 100000, 1000000)))]), huffman=False)
    elif kind == 1:  # very many small headers
        block = c.enc.encode(req_headers(extra=[(f"x-h{i}", "v") for i in range(r.choice((1000, 10000)))]),
                             huffman=False)
    elif kind == 2:  # HPACK bomb: one large dynamic-table entry (index 62, the newest) referenced again and again
        block = c.enc.encode(req_headers()) + c.enc.encode([("x-bomb", "b" * 4000)], huffman=False)
        block += b"\xbe" * r.choice((1000, 10000))
    elif kind == 3:  # invalid HPACK: bad index, table size updates, broken Huffman, bad names
        block = c.enc.encode(req_headers()) + b"".join(r.sample([
            b"\xff\xff\xff\xff\x0f", b"\x3f\xe1\xff\xff\xff\x0f", b"\x20" * 50, b"\x40\x85" + b"\xff" * 5 + b"\x01a",
            b"\x00\x03A\nB\x01v", b"\x00\x02\xff\xfe\x01v", b"\x00\x00\x01v", b"\x00\x01:\x01v", b"\xbe\xbf\xc0",
            b"\x00\x0dauthorization\x0aBearer \r\nX"], r.randint(1, 3)))
    else:  # malformed request headers (upper case, pseudo after regular, duplicates, connection)
        hdrs = r.choice([
            [("X-Upper", "v")], [(":path", CHECK)], [("connection", "keep-alive")], [("te", "gzip")],
            [(":fake", "x")], [("content-length", "-1")], [("authorization", "Bearer \x00")],
            [("grpc-timeout", "99999999999999H")], [("grpc-timeout", "1n")], [("grpc-encoding", "br")]])
        block = c.enc.encode(req_headers() + hdrs) if r.random() < 0.5 else c.enc.encode(hdrs + req_headers())
    pieces = [block[i:i + MAX_FRAME] for i in range(0, len(block), MAX_FRAME)] or [b""]
    c.add(frame(HEADERS, END_HEADERS if len(pieces) == 1 else 0, 1, pieces[0]))
    for i, p in enumerate(pieces[1:], 1):
        c.add(frame(CONTINUATION, END_HEADERS if i == len(pieces) - 1 else 0, 1, p))
    c.add(frame(DATA, END_STREAM, 1, grpc_msg(health_req())))


def sc_goaway(c):
    r = c.rng
    payload = struct.pack(">II", r.choice((0, 1, 2**31 - 1)), r.randint(0, 13)) + r.randbytes(r.randint(0, 40))
    c.add(*c.request(1), frame(GOAWAY, 0, r.choice((0, 0, 1)), payload))
    if r.random() < 0.5:
        c.add(*c.request(3))  # a request after our own GOAWAY


def sc_flow_control(c):
    r = c.rng
    kind = r.randrange(3)
    if kind == 0:  # more DATA than the window allows
        c.add(c.headers(1), *(frame(DATA, 0, 1, b"\0" * MAX_FRAME) for _ in range(r.choice((5, 70)))))
    elif kind == 1:  # empty DATA frames flood
        c.add(c.headers(1), *(frame(DATA, 0, 1, b"") for _ in range(r.choice((1000, 10000)))),
              frame(DATA, END_STREAM, 1, grpc_msg(health_req())))
    else:  # a large message byte by byte
        body = grpc_msg(health_req("s" * 2000))
        c.add(c.headers(1), *(frame(DATA, 0, 1, body[i:i + 1]) for i in range(len(body))), frame(DATA, END_STREAM, 1))


def sc_oversized_frames(c):
    r = c.rng
    ftype = r.choice((DATA, HEADERS, PING, SETTINGS, WINDOW_UPDATE, 0xFA))
    n = r.choice((MAX_FRAME + 1, 65536, 2**24 - 1))
    body = r.randbytes(min(n, r.choice((0, 100, n))))
    c.add(*c.request(1), frame(ftype, r.randrange(256), r.choice((0, 1, 3)), body, length=n))


def sc_unknown_frames(c):
    r = c.rng
    for _ in range(r.randint(1, 30)):
        c.add(random_frame(r))
    c.add(*c.request(1))


SCENARIOS = [(sc_valid, 3), (sc_ping_flood, 1), (sc_settings_odd, 2), (sc_window_update, 2), (sc_continuation, 2),
             (sc_bad_streams, 3), (sc_rapid_reset, 1), (sc_many_streams, 1), (sc_huge_headers, 2), (sc_goaway, 1),
             (sc_flow_control, 1), (sc_oversized_frames, 1), (sc_unknown_frames, 2)]


def random_frame(r):
    ftype = r.choice((r.randrange(10), r.randrange(10), r.randrange(256)))
    sid = r.choice((0, 1, 2, 3, r.randrange(2**31), r.randrange(2**32)))
    payload = r.randbytes(r.choice((0, 1, 4, 5, 8, r.randint(0, 300))))
    length = None if r.random() < 0.7 else r.choice((0, len(payload) + 1, MAX_FRAME + 1, 2**24 - 1, r.randrange(2**24)))
    return frame(ftype, r.randrange(256), sid, payload, length)


# ---- mutation ---------------------------------------------------------------------------------


def mutate(r, chunks):
    """Up to a few random edits of the frame list; returns (bytes, description)."""
    chunks = list(chunks)
    done = []
    for _ in range(r.choice((0, 0, 1, 1, 2, 3))):
        op = r.randrange(7)
        i = r.randrange(0 if r.random() < 0.1 else 1, len(chunks))  # the preface now and then
        if op == 0:  # flip bytes
            b = bytearray(chunks[i])
            if b:
                for _ in range(r.randint(1, 4)):
                    b[r.randrange(len(b))] ^= 1 << r.randrange(8)
                chunks[i] = bytes(b)
            done.append(f"flip@{i}")
        elif op == 1:
            chunks.insert(i, chunks[i])
            done.append(f"dup@{i}")
        elif op == 2 and len(chunks) > 2:
            del chunks[i]
            done.append(f"drop@{i}")
        elif op == 3:
            j = r.randrange(1, len(chunks))
            chunks[i], chunks[j] = chunks[j], chunks[i]
            done.append(f"swap@{i},{j}")
        elif op == 4:
            chunks.insert(i, random_frame(r))
            done.append(f"insert@{i}")
        elif op == 5 and len(chunks[i]) >= 9:  # lie about a frame's length
            b = bytearray(chunks[i])
            n = r.choice((0, len(b) - 8, len(b) - 10, MAX_FRAME + 1, r.randrange(2**24)))
            b[0:3] = struct.pack(">I", max(0, n) & 0xFFFFFF)[1:]
            chunks[i] = bytes(b)
            done.append(f"length@{i}")
        else:
            done.append("none")
    data = b"".join(chunks)
    if r.random() < 0.15:
        cut = r.randrange(len(data))
        data = data[:cut]
        done.append(f"truncate@{cut}")
    return data, done


# ---- running connections ----------------------------------------------------------------------


def build(n):
    """Connection n of this seed: (bytes to send, description, how to hang up)."""
    r = random.Random(f"{SEED}/{n}")
    scenario = r.choices([s for s, _ in SCENARIOS], weights=[w for _, w in SCENARIOS])[0]
    c = Conn(r)
    scenario(c)
    data, edits = mutate(r, c.chunks)
    close = r.choice(("close", "close", "shutdown", "reset"))
    pieces = r.choice((1, 1, 2, 10))
    expect = c.expect if all(e == "none" for e in edits) else set()
    return data, f"{scenario.__name__} {edits} {len(data)} bytes, {pieces} write(s), {close}", close, pieces, expect


def run_conn(addr, n):
    data, what, close, pieces, expect = build(n)
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=2)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    local_port = s.getsockname()[1]
    got = b""
    try:
        step = max(1, len(data) // pieces)
        for i in range(0, len(data), step):
            s.sendall(data[i:i + step])
    except OSError:
        pass  # the server hung up first (a protocol error): fine
    # Read until the server has been silent a moment; a connection with valid requests reads
    # until they are all answered (or for long enough that a slow answer counts as none).
    end = time.time() + (ANSWER_MAX if expect else READ_MAX)
    try:
        while time.time() < end:
            s.settimeout(max(0.01, min(end - time.time(), ANSWER_MAX if expect else READ_IDLE)))
            d = s.recv(65536)
            if not d:
                break
            got += d
            if expect and expect <= answered(got):
                break
    except OSError:
        pass
    if close == "shutdown":
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    elif close == "reset":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    problem = None
    frames = list(parse_frames(got))
    if frames and (frames[0][0] != SETTINGS or frames[0][2] != 0):
        problem = f"server's first frame is not SETTINGS on stream 0: {got[:9].hex()}"
    missing = expect - answered(got)
    if missing:
        problem = f"valid requests on streams {sorted(missing)} got no complete answer"
    return n, what, len(got), problem, local_port


def answered(got):
    """Streams the server has ended with trailers (HEADERS with END_STREAM)."""
    return {sid for t, flags, sid in parse_frames(got) if t == HEADERS and flags & END_STREAM}


def parse_frames(data):
    """(type, flags, stream id) of each whole frame in data."""
    i = 0
    while i + 9 <= len(data):
        n = int.from_bytes(data[i:i + 3], "big")
        if i + 9 + n > len(data):
            return
        yield data[i + 3], data[i + 4], int.from_bytes(data[i + 5:i + 9], "big") & 0x7FFFFFFF
        i += 9 + n


def server_sockets(port):
    """Server-side TCP sockets of the listening port that are still open (not LISTEN or
    TIME_WAIT): connections the server has not closed."""
    n = 0
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(f).read().splitlines()[1:]
        except OSError:
            continue
        for ln in lines:
            parts = ln.split()
            lport = int(parts[1].rsplit(":", 1)[1], 16)
            if lport == port and parts[3] not in ("0A", "06"):
                n += 1
    return n


# ---- fixture ----------------------------------------------------------------------------------


class Ctx:
    pass


def setup():
    print(f"h2 fuzz seed {SEED} (FUZZ_SEED to reproduce), {CONNS} connections (FUZZ_CONNS)", flush=True)
    c = Ctx()
    c.srv = harness.RawLogClued(harness.test_database_url()).start()
    c.ports = {}  # client port -> fuzz connection number, to name the connection behind a log line
    return c


def teardown(c):
    c.srv.stop()  # exit 0 and no sanitizer report


def health_ok(c):
    assert c.srv.alive(), "clued died:\n" + c.srv.output()[-6000:]
    with grpc.insecure_channel(c.srv.addr) as ch:
        r = S.health_pb2_grpc.HealthStub(ch).Check(S.health_pb2.HealthCheckRequest(), timeout=5)
    assert r.status == S.health_pb2.HealthCheckResponse.SERVING, r


def test_fuzz_connections(c):
    port = int(c.srv.addr.rsplit(":", 1)[1])
    health_ok(c)
    numbers = [int(ONLY_CONN)] if ONLY_CONN else list(range(CONNS))
    problems = []
    kinds = {}
    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(BATCH) as pool:
        for b in range(0, len(numbers), BATCH):
            batch = numbers[b:b + BATCH]
            for n, what, nread, problem, local_port in pool.map(lambda n: run_conn(c.srv.addr, n), batch):
                c.ports[local_port] = n
                kinds[what.split()[0]] = kinds.get(what.split()[0], 0) + 1
                if ONLY_CONN:
                    print(f"  conn {n}: {what}; read {nread} bytes", flush=True)
                if problem:
                    problems.append(f"seed {SEED} conn {n} ({what}): {problem}")
            try:
                health_ok(c)
            except Exception as e:
                raise AssertionError(f"after connections {batch[0]}..{batch[-1]} (seed {SEED}; replay one with "
                                     f"FUZZ_CONN=<n>): {e}\n" + "\n".join(f"  conn {n}: {build(n)[1]}" for n in batch))
    print(f"  {len(numbers)} connections in {time.time() - t0:.1f}s: "
          + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())), flush=True)
    # Every connection was closed by us: the server must close its side of each.
    harness.wait_for(lambda: server_sockets(port) == 0, timeout=10, what="server to close every fuzzed connection")
    assert not problems, "\n".join(problems[:20])


def test_log_lines_are_whole(c):
    """What peers send reaches clued's log escaped: every line of its output is UTF-8, one
    event, with no control characters."""
    line = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z clued: [a-z]+: [^\x00-\x08\x0a-\x1f\x7f]*\n?$")
    bad = []
    for raw in list(c.srv.raw_lines):
        m = re.search(rb"\(127\.0\.0\.1:(\d+)\)", raw)
        who = f" [FUZZ_CONN={c.ports[int(m.group(1))]}]" if m and int(m.group(1)) in c.ports else ""
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(f"not UTF-8{who}: {raw[:200]!r}")
            continue
        if not line.match(raw):
            bad.append(f"not one whole log line{who}: {raw[:200]!r}")
    assert not bad, f"{len(bad)} bad line(s) in clued's output, e.g.:\n" + "\n".join(bad[:8])


def test_still_serving(c):
    health_ok(c)


if __name__ == "__main__":
    harness.run_tests(globals(), setup, teardown)
