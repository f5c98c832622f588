"""Helpers for the hostile-client tests: raw HTTP/2 frames and HPACK by hand, clued's RSS from
/proc, and a Health/Check probe that runs beside an attack.

The frames are written byte by byte (no HTTP/2 library in between), so a test can send what
no library would: HPACK references by the thousand, stream ids out of order, frames of the
wrong size, a client that never reads.
"""

import os
import socket
import struct
import threading
import time

import grpc
from hpack import Decoder

import harness

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 0x1, 0x1, 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED, \
    FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, ENHANCE_YOUR_CALM = range(12)
CHECK = "/grpc.health.v1.Health/Check"

# A clued under test keeps ASan's quarantine small, so freed memory leaves RSS as it would
# in a release build and RSS growth measures what the server holds, not what it recycles.
ASAN_SMALL_QUARANTINE = "detect_leaks=1:abort_on_error=0:exitcode=66:quarantine_size_mb=8:" \
                        "thread_local_quarantine_size_kb=64:malloc_context_size=5"


def start_clued(*args):
    """A clued on a fresh database, with the small quarantine."""
    return harness.Clued(harness.test_database_url(), args=args,
                         env={"ASAN_OPTIONS": ASAN_SMALL_QUARANTINE}).start()


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def hwm_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


# ---- HPACK by hand (RFC 7541) ----------------------------------------------------------

def hpack_int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 127) | 128)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_str(s):
    if isinstance(s, str):
        s = s.encode()
    return hpack_int(len(s), 7) + s


def lit(name, value, index=False):
    """A literal field with a literal name, incrementally indexed or not."""
    return (b"\x40" if index else b"\x00") + hpack_str(name) + hpack_str(value)


def lit_idx_name(static_index, value):
    """A literal field without indexing whose name is a static-table entry."""
    return hpack_int(static_index, 4) + hpack_str(value)


def indexed(i):
    return hpack_int(i, 7, 0x80)


def request_block(path=CHECK, extra=b""):
    """:method POST, :scheme http, :path, :authority, content-type, te, then extra."""
    return (indexed(3) + indexed(6) + lit_idx_name(4, path) + lit_idx_name(1, "t")
            + lit_idx_name(31, "application/grpc") + lit("te", "trailers") + extra)


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def headers_frames(sid, block, end_stream=False, max_frame=16384):
    """HEADERS (and CONTINUATION frames when the block is longer than a frame)."""
    chunks = [block[i:i + max_frame] for i in range(0, len(block), max_frame)] or [b""]
    out = []
    for i, ch in enumerate(chunks):
        last = i == len(chunks) - 1
        if i == 0:
            flags = (END_STREAM if end_stream else 0) | (END_HEADERS if last else 0)
            out.append(frame(HEADERS, flags, sid, ch))
        else:
            out.append(frame(CONTINUATION, END_HEADERS if last else 0, sid, ch))
    return b"".join(out)


def grpc_msg(payload=b""):
    return struct.pack(">BI", 0, len(payload)) + payload


def settings(pairs=()):
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


class Raw:
    """A client speaking frames. Reads in the caller's thread (read()/until())."""

    def __init__(self, addr, handshake=True, settings_pairs=(), timeout=10, source=None):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.timeout = timeout
        self.buf = b""
        self.frames = []  # (type, flags, sid, payload) as read
        self.closed = False
        self.goaway = None  # (last_stream_id, error_code, debug)
        self.rst = {}
        self.hdrs = {}  # sid -> list of header dicts (headers, trailers)
        self.data = {}
        self.ended = set()
        self.dec = Decoder()
        self.dec.max_allowed_table_size = 65536
        # Flow control towards the server: the windows it grants us.
        self.initial_window = 65535
        self.conn_window = 65535
        self.windows = {}
        self.server_settings = None
        self.auto_window = True
        if handshake:
            self.send(PREFACE + settings(settings_pairs))

    def send(self, b):
        # read() leaves its own short timeout on the socket; a write that waits for a busy
        # server (decoding a large message on a loaded machine) gets the connection's.
        self.sock.settimeout(self.timeout)
        self.sock.sendall(b)

    def _parse(self):
        while len(self.buf) >= 9:
            n = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + n:
                return
            t, fl = self.buf[3], self.buf[4]
            sid = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
            p = self.buf[9:9 + n]
            self.buf = self.buf[9 + n:]
            self.frames.append((t, fl, sid, p))
            if t == SETTINGS and not fl & ACK:
                vals = dict(struct.unpack(">HI", p[i:i + 6]) for i in range(0, len(p) - 5, 6))
                if self.server_settings is None:
                    self.server_settings = vals
                if 4 in vals:
                    delta = vals[4] - self.initial_window
                    self.initial_window = vals[4]
                    for k in self.windows:
                        self.windows[k] += delta
                self.send(frame(SETTINGS, ACK, 0))
            elif t == WINDOW_UPDATE:
                inc = struct.unpack(">I", p)[0] & 0x7FFFFFFF
                if sid == 0:
                    self.conn_window += inc
                else:
                    self.windows[sid] = self.windows.get(sid, self.initial_window) + inc
            elif t == GOAWAY:
                last, code = struct.unpack(">II", p[:8])
                self.goaway = (last & 0x7FFFFFFF, code, p[8:])
            elif t == RST_STREAM:
                self.rst[sid] = struct.unpack(">I", p)[0]
                self.ended.add(sid)
            elif t in (HEADERS, CONTINUATION):
                # Responses here always fit one HEADERS frame.
                if t == HEADERS:
                    if fl & PADDED:
                        p = p[1:len(p) - p[0]]
                    if fl & PRIO:
                        p = p[5:]
                    self.hdrs.setdefault(sid, []).append(dict(self.dec.decode(p)))
                if fl & END_STREAM:
                    self.ended.add(sid)
            elif t == DATA:
                self.data[sid] = self.data.get(sid, b"") + p
                if p and self.auto_window:  # a reading client gives the credit back
                    self.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", len(p)))
                              + frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", len(p))))
                if fl & END_STREAM:
                    self.ended.add(sid)
            elif t == PING and not fl & ACK:
                self.send(frame(PING, ACK, 0, p))

    def read(self, timeout=5.0):
        """Read once (up to timeout). Returns False once the server closed."""
        if self.closed:
            return False
        self.sock.settimeout(timeout)
        try:
            d = self.sock.recv(1 << 20)
        except socket.timeout:
            return True
        except (ConnectionResetError, BrokenPipeError):
            d = b""
        if not d:
            self.closed = True
            return False
        self.buf += d
        self._parse()
        return True

    def until(self, pred, timeout=10.0, what="condition"):
        end = time.time() + timeout
        while not pred():
            if time.time() > end:
                raise AssertionError(f"timed out waiting for {what}")
            if not self.read(min(1.0, max(0.05, end - time.time()))) and not pred():
                raise AssertionError(f"connection closed while waiting for {what}")

    def wait_closed(self, timeout=10.0):
        end = time.time() + timeout
        while not self.closed and time.time() < end:
            self.read(min(1.0, max(0.05, end - time.time())))
        return self.closed

    def window(self, sid):
        return min(self.conn_window, self.windows.get(sid, self.initial_window))

    def send_body(self, sid, data, end_stream=True, timeout=30.0, stop=None):
        """Send DATA within the windows the server grants, reading as needed. Stops early
        (returns the bytes sent) when stop() turns true or the stream ended; raises if the
        server grants no window for `timeout` seconds."""
        sent = 0
        last = time.time()
        while sent < len(data) or (end_stream and sent == len(data) == 0):
            if (stop and stop()) or (sid in self.ended and sid in self.rst):
                return sent
            n = min(16384, len(data) - sent, self.window(sid))
            if n <= 0 and len(data) > 0:
                if time.time() - last > timeout:
                    raise AssertionError(f"stream {sid}: no window for {timeout} s after {sent} bytes")
                if not self.read(0.2):
                    return sent
                continue
            fin = end_stream and sent + n == len(data)
            self.send(frame(DATA, END_STREAM if fin else 0, sid, data[sent:sent + n]))
            self.conn_window -= n
            self.windows[sid] = self.windows.get(sid, self.initial_window) - n
            sent += n
            last = time.time()
            if len(data) == 0:
                break
        return sent

    def status(self, sid):
        """grpc-status of a stream (from trailers or a trailers-only HEADERS), or None."""
        for h in self.hdrs.get(sid, []):
            v = h.get("grpc-status")
            if v is not None:
                return int(v)
        return None

    def message(self, sid):
        from urllib.parse import unquote

        for h in self.hdrs.get(sid, []):
            v = h.get("grpc-message")
            if v is not None:
                return unquote(v)
        return ""

    def check(self, sid, timeout=10.0):
        """Send a Health/Check on sid and wait for its status."""
        self.send(headers_frames(sid, request_block()) + frame(DATA, END_STREAM, sid, grpc_msg()))
        self.until(lambda: sid in self.ended, timeout, f"stream {sid}")
        return self.status(sid)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class HealthProbe:
    """Health/Check over its own connection, again and again, while an attack runs.
    Records the slowest answer and every failure; each call has a 4 s deadline: well above
    what a sanitized build on two busy cores needs, well below an event loop held by the
    attack (which shows as one call stuck for the attack's length). A test calls
    assert_prompt() after the block (after it reported its RSS figures)."""

    def __init__(self, addr, interval=0.05, deadline=4.0):
        self.addr, self.interval, self.deadline = addr, interval, deadline
        self.latencies, self.errors = [], []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        s = harness.stubs()
        with grpc.insecure_channel(self.addr) as ch:
            h = s.health_pb2_grpc.HealthStub(ch)
            h.Check(s.health_pb2.HealthCheckRequest(), timeout=10)  # connect first
            while not self._stop.is_set():
                t0 = time.time()
                try:
                    r = h.Check(s.health_pb2.HealthCheckRequest(), timeout=self.deadline)
                    if r.status != s.health_pb2.HealthCheckResponse.SERVING:
                        self.errors.append(f"status {r.status}")
                except grpc.RpcError as e:
                    self.errors.append(f"{e.code()}: {e.details()}")
                self.latencies.append(time.time() - t0)
                self._stop.wait(self.interval)

    def __enter__(self):
        self._t.start()
        time.sleep(0.2)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(30)

    def assert_prompt(self):
        assert self.latencies, "the probe made no call"
        assert not self.errors, f"Health/Check failed during the attack: {self.errors[:5]}"
        print(f"  health during attack: {len(self.latencies)} checks, slowest {max(self.latencies) * 1000:.0f} ms",
              flush=True)


def report(name, before_kb, after_kb, limit_mb):
    grow = (after_kb - before_kb) / 1024
    print(f"  {name}: RSS {before_kb / 1024:.1f} MiB -> {after_kb / 1024:.1f} MiB (+{grow:.1f} MiB, "
          f"bound {limit_mb} MiB)", flush=True)
    assert grow < limit_mb, f"{name}: RSS grew {grow:.1f} MiB (bound {limit_mb} MiB)"
