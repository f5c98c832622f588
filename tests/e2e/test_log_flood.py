"""The log against floods of per-stream lines: anyone, without a token, can make clued log a
line per stream (a call cancelled by its peer, a stream reset for a bad header). Each level
may write --log-rate lines a second; the rest are counted and a warning once a second says
how many were lost, by level. And a reader of stderr slower than the server (a full pipe)
never stalls the event loop: lines wait in a bounded buffer or are lost and counted.

The flood: connections sending HEADERS (Health/Check) and RST_STREAM (CANCEL) in a loop,
reconnecting when the server ends one (nghttp2 ends a connection that resets too many
streams), and a few streams with an upper-case header name, which nghttp2 resets itself (a
warning each)."""

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from hostile import (ACK, ASAN_SMALL_QUARANTINE, CANCEL, PREFACE, RST_STREAM, SETTINGS,  # noqa: E402
                     WINDOW_UPDATE, HealthProbe, frame, headers_frames, lit, request_block, settings)

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z clued: (info|warn|error): ")
REPORT = re.compile(r"log: (\d+) lines not written in the last [\d.]+ s \((\d+) info, (\d+) warn, (\d+) error; "
                    r"(\d+) over --log-rate \d+ a level, (\d+) for a log output full\)")
BAD_HEADER = request_block() + lit("X-Up", "y")  # upper case: nghttp2 resets the stream


class Flood:
    """Streams opened and reset, again and again, over n connections, while the with-block
    runs; bad_per_s: so many streams a second, at most, over each connection carry an
    upper-case header name (a rate, not a share of the streams: however fast the machine, the
    warnings they cost stay within their own budget)."""

    def __init__(self, addr, n=2, bad_per_s=0):
        self.host, self.port = addr.rsplit(":", 1)
        self.n, self.bad_per_s = n, bad_per_s
        self.streams = self.bad = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]

    def _conn(self):
        s = socket.create_connection((self.host, int(self.port)), timeout=5)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(PREFACE + settings() + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 30)))
        done = threading.Event()

        def drain():  # read everything; ACK the server's SETTINGS; note the end
            buf = b""
            while True:
                try:
                    d = s.recv(1 << 16)
                except OSError:
                    d = b""
                if not d:
                    break
                buf += d
                while len(buf) >= 9:
                    n = int.from_bytes(buf[:3], "big")
                    if len(buf) < 9 + n:
                        break
                    if buf[3] == SETTINGS and not buf[4] & ACK:
                        try:
                            s.sendall(frame(SETTINGS, ACK, 0))
                        except OSError:
                            pass
                    elif buf[3] == 7:  # GOAWAY
                        done.set()
                    buf = buf[9 + n:]
            done.set()

        threading.Thread(target=drain, daemon=True).start()
        return s, done

    def _run(self):
        last_bad = 0.0
        while not self._stop.is_set():
            try:
                s, done = self._conn()
            except OSError:
                time.sleep(0.05)
                continue
            sid = 1
            try:
                while not self._stop.is_set() and not done.is_set() and sid < 0x7FFF0000:
                    out = []
                    for _ in range(50):
                        out.append(headers_frames(sid, request_block())
                                   + frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL)))
                        sid += 2
                    if self.bad_per_s and time.monotonic() - last_bad >= 1.0 / self.bad_per_s:
                        last_bad = time.monotonic()
                        out.append(headers_frames(sid, BAD_HEADER, end_stream=True))
                        sid += 2
                        self.bad += 1
                    s.sendall(b"".join(out))
                    self.streams += 50
            except OSError:
                pass
            s.close()

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(30)


def reports(lines):
    """The lost-lines reports among lines, as tuples of ints (total, info, warn, error, over, full)."""
    return [tuple(int(g) for g in m.groups()) for m in (REPORT.search(l) for l in lines) if m]


def per_second(lines, level):
    """Lines of level by the second of their timestamp."""
    counts = {}
    for l in lines:
        m = LINE.match(l)
        if m and m.group(1) == level:
            counts[l[:19]] = counts.get(l[:19], 0) + 1
    return counts


def test_flood_written_within_the_rate():
    """--log-rate 100: a flood of thousands of cancelled streams a second writes at most about
    100 info lines a second; a report once a second counts the others. The warnings of the
    bad-header streams, under their own budget, are all written despite the flood."""
    srv = harness.Clued(harness.test_database_url(), args=["--log-rate", "100"],
                        env={"ASAN_OPTIONS": ASAN_SMALL_QUARANTINE}).start()
    try:
        first = len(srv.lines)
        with Flood(srv.addr, n=2, bad_per_s=20) as f:  # 40 warnings a second at most
            time.sleep(4)
        time.sleep(1.5)  # the last report comes at the end of its window
        lines = srv.lines[first:]
        rep = reports(lines)
        print(f"  {f.streams} streams reset, {f.bad} bad headers; {len(lines)} lines written, "
              f"{len(rep)} reports, {sum(r[0] for r in rep)} lines lost", flush=True)
        assert rep, "no report of lines not written:\n" + "".join(lines[-20:])
        # Fixed windows of one second are not aligned with the clock's seconds: a clock second
        # may hold parts of two windows (200), a report, and some slack for a loaded machine.
        info = per_second(lines, "info")
        assert max(info.values()) <= 210, info
        assert sum(info.values()) <= 100 * 7, info
        assert sum(r[1] for r in rep) > 0, rep
        # The flood was far over the budget: lines lost and written add up to thousands.
        assert sum(r[1] for r in rep) + sum(info.values()) > 1000, (rep, info)
        # Warnings have their own budget: the flood of info lines costs them nothing. They are
        # the bad headers' and one per connection nghttp2 ends for its resets, so on a fast
        # machine they may pass their own budget too; what is written of them is then that
        # budget, not what the info lines left. (Not every bad stream is read: the server ends
        # connections that reset too many streams.)
        bad = [l for l in lines if "Invalid HTTP header field" in l]
        warn = sum(per_second(lines, "warn").values())
        lost = sum(r[2] for r in rep)
        assert bad, (f.bad, rep)
        assert warn >= 0.75 * min(warn + lost, 100 * 4), (warn, lost, rep)
    finally:
        srv.stop()


class SlowReadClued(harness.Clued):
    """Clued whose output is read at `rate` bytes a second (None: at once), in chunks of 4 KiB,
    as a slow journal or terminal would."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.rate = None

    def _read(self):
        raw, part = self.proc.stdout.buffer, b""
        while True:
            d = raw.read1(4096)
            if not d:
                break
            part += d
            *whole, part = part.split(b"\n")
            for line in whole:
                self._take(line.decode("utf-8", "backslashreplace") + "\n")
            rate = self.rate
            if rate and self._bound.is_set():
                time.sleep(len(d) / rate)


def test_slow_log_reader_stalls_nothing():
    """The output pipe read at 8 KB/s and no rate limit (--log-rate 0): a flood makes lines far
    faster than that. Health/Check on another connection keeps being answered promptly: the
    loop never waits for the pipe. Lines that do not fit the buffer are lost and reported;
    those written are whole; at stop what waits is written."""
    srv = SlowReadClued(harness.test_database_url(), args=["--log-rate", "0"],
                        env={"ASAN_OPTIONS": ASAN_SMALL_QUARANTINE}).start()
    try:
        first = len(srv.lines)
        srv.rate = 8000
        with HealthProbe(srv.addr, interval=0.05, deadline=4.0) as probe:
            with Flood(srv.addr, n=2) as f:
                time.sleep(5)
        srv.rate = None
        lat = sorted(probe.latencies)
        print(f"  {f.streams} streams reset; health: {len(lat)} checks, p95 "
              f"{lat[int(len(lat) * .95)] * 1000:.0f} ms, slowest {lat[-1] * 1000:.0f} ms", flush=True)
        probe.assert_prompt()
        assert lat[-1] < 3.0, f"a Health/Check took {lat[-1]:.1f} s"
        harness.wait_for(lambda: reports(srv.lines[first:]), timeout=30, what="a report of lines lost")
    finally:
        out = srv.stop()
    lines = out.splitlines(keepends=True)
    rep = reports(lines)
    assert sum(r[5] for r in rep) > 0, rep  # lost for a full output
    bad = [l for l in lines if not LINE.match(l)]
    assert not bad, bad[:5]
    assert "clued: info: stopped" in lines[-1], lines[-3:]


def test_log_to_a_file():
    """stderr a regular file, as scripts redirect it, in JSON: every line is one object, the
    budget holds and the report carries its counts as keys."""
    db = harness.test_database_url()
    srv = harness.Clued(db)
    srv.run("migrate")
    with tempfile.NamedTemporaryFile("w+", prefix="clued-log-", suffix=".log") as log:
        proc = subprocess.Popen([harness.CLUED, "serve", "--listen", "127.0.0.1:0", "--log-format", "json",
                                 "--log-rate", "50", "--database-url", srv.serve_url],
                                env=srv.env, stdout=log, stderr=subprocess.STDOUT)
        try:
            def addr():
                with open(log.name) as f:
                    m = re.search(r"listening on (\S+?)\"", f.read())
                return m and m.group(1)
            harness.wait_for(addr, timeout=30, what="listening")
            with Flood(addr(), n=1):
                time.sleep(2.5)
            time.sleep(1.5)
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(30)
        with open(log.name) as f:
            text = f.read()
    harness._assert_clean(text)
    assert rc == 0, text[-2000:]
    objs = [json.loads(l) for l in text.splitlines()]
    rep = [o for o in objs if o["msg"].startswith("log: ")]
    assert rep and all(o["level"] == "warn" and o["dropped"] == o["dropped_info"] + o["dropped_warn"]
                       + o["dropped_error"] and o["dropped_full"] == 0 for o in rep), rep
    info = [o for o in objs if o["level"] == "info"]
    assert len(info) <= 50 * 6, len(info)
    assert objs[-1]["msg"] == "stopped", objs[-1]


def test_long_paths_do_not_lengthen_the_lines():
    """--log-rate counts lines: a line must not grow with what a client sends. An unknown
    method's path may be as long as the header list allows (8 KB here), and each failed call
    logs a line naming it: the line shows 200 bytes of it and its length, in text and JSON."""
    from hostile import DATA, END_STREAM, Raw, grpc_msg

    for fmt in ("text", "json"):
        srv = harness.Clued(harness.test_database_url(), args=["--log-format", fmt]).start()
        try:
            r = Raw(srv.addr)
            paths = [f"/x{i}.Y/" + "Z" * 8000 for i in range(20)]
            r.send(b"".join(headers_frames(1 + 2 * i, request_block(p)) + frame(DATA, END_STREAM, 1 + 2 * i, grpc_msg())
                            for i, p in enumerate(paths)))
            r.until(lambda: len(r.ended) == len(paths), 20, "the answers")
            assert all(r.status(1 + 2 * i) == 12 for i in range(len(paths)))  # UNIMPLEMENTED
            r.close()
            harness.wait_for(lambda: sum("/x19.Y/" in line for line in srv.output().splitlines()) >= 1,
                             timeout=10, what="the calls' lines")
            lines = [line for line in srv.output().splitlines() if ".Y/ZZZ" in line]
            assert len(lines) == len(paths), (fmt, len(lines))
            longest = max(len(line.encode()) for line in lines)
            assert longest < 1000, (fmt, longest)
            assert all("... (8006 bytes)" in line or "... (8007 bytes)" in line for line in lines), lines[0]
        finally:
            srv.stop()


if __name__ == "__main__":
    harness.run_tests(dict(globals()))
