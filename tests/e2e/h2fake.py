"""A hostile gRPC server made of hand-written HTTP/2 frames (h2c), for the client's tests.

The server side of what rawh2.py and hostile.py are for the client side: a test gives a
handler that answers each request however it likes, with frames no real server would send
(escape sequences in grpc-message and in GOAWAY's debug data, page tokens that go round in
a circle, GOAWAY or RST_STREAM(REFUSED_STREAM) for a request it never processed, no answer at
all). Every request is recorded with its headers (HPACK-decoded), so that a test can see what
the client sent, grpc-timeout included.

    with FakeServer(handler) as srv:
        harness.cluectl("--server", srv.addr, ...)

handler(conn, req) runs on the connection's reader thread, one request after another;
req.sid, req.path, req.headers (dict), req.body (the message, without its 5-byte prefix),
req.index (0, 1, ... over the whole server) and req.conn_index (which connection).
"""

import socket
import struct
import threading
import time

from hpack import Decoder

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
NO_ERROR, INTERNAL_ERROR, REFUSED_STREAM = 0, 2, 7
MAX_FRAME = 16384


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def _hint(n, prefix_bits):
    limit = (1 << prefix_bits) - 1
    if n < limit:
        return bytes([n])
    out = [limit]
    n -= limit
    while n >= 128:
        out.append((n & 127) | 128)
        n >>= 7
    out.append(n)
    return bytes(out)


def _hstr(s):
    if isinstance(s, str):
        s = s.encode("utf-8")
    return _hint(len(s), 7) + s


def hpack_block(headers):
    """Literal header fields without indexing, new names, no Huffman: what is written is
    what the client reads, byte for byte."""
    return b"".join(b"\x00" + _hstr(n) + _hstr(v) for n, v in headers)


def grpc_frame(body):
    return b"\x00" + struct.pack(">I", len(body)) + body


OK_HEADERS = [(":status", "200"), ("content-type", "application/grpc")]


class Request:
    def __init__(self, sid, headers, body, index, conn_index):
        self.sid = sid
        self.headers = headers
        self.path = headers.get(":path", "")
        self.body = body[5:] if len(body) >= 5 else b""
        self.index = index
        self.conn_index = conn_index


class Conn:
    def __init__(self, server, sock, index):
        self.server = server
        self.sock = sock
        self.index = index
        self.lock = threading.Lock()
        self.decoder = Decoder()
        self.streams = {}  # sid -> [headers dict, body bytes]
        self.last_sid = 0  # the last stream answered
        self.last_active = time.monotonic()
        self.closed = False
        self.pings = 0  # PINGs the client sent
        self.deaf = False  # set: PINGs go unanswered, as through a connection dropped silently

    # ---- writing ----

    def send(self, data):
        with self.lock:
            try:
                self.sock.sendall(data)
            except OSError:
                self.closed = True

    def headers(self, sid, hdrs, end=False):
        self.send(frame(HEADERS, END_HEADERS | (END_STREAM if end else 0), sid, hpack_block(hdrs)))

    def data(self, sid, payload, end=False):
        chunks = [payload[i:i + MAX_FRAME] for i in range(0, len(payload), MAX_FRAME)] or [b""]
        for k, chunk in enumerate(chunks):
            self.send(frame(DATA, END_STREAM if end and k == len(chunks) - 1 else 0, sid, chunk))

    def reply(self, sid, body=None, status=0, message=None, trailers=()):
        """A whole answer: headers, the message (if any) and trailers."""
        self.headers(sid, OK_HEADERS)
        if body is not None:
            self.data(sid, grpc_frame(body))
        t = [("grpc-status", str(status))]
        if message is not None:
            t.append(("grpc-message", message))
        self.headers(sid, t + list(trailers), end=True)
        self.last_sid = max(self.last_sid, sid)

    def goaway(self, last_sid, error=NO_ERROR, debug=b""):
        self.send(frame(GOAWAY, 0, 0, struct.pack(">II", last_sid, error) + debug))

    def rst(self, sid, error):
        self.send(frame(RST_STREAM, 0, sid, struct.pack(">I", error)))

    def close(self, delay=0.1):
        """Close after delay seconds (the frames before it arrive first)."""
        time.sleep(delay)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.closed = True

    # ---- reading ----

    def _recv(self, n):
        b = b""
        while len(b) < n:
            c = self.sock.recv(n - len(b))
            if not c:
                raise EOFError
            b += c
        return b

    def run(self):
        try:
            if self._recv(len(PREFACE)) != PREFACE:
                return
            self.send(frame(SETTINGS, 0, 0))
            block, block_sid = b"", 0
            while not self.closed:
                hd = self._recv(9)
                length = struct.unpack(">I", b"\0" + hd[:3])[0]
                ftype, flags = hd[3], hd[4]
                sid = struct.unpack(">I", hd[5:9])[0] & 0x7FFFFFFF
                payload = self._recv(length)
                if ftype == SETTINGS and not flags & ACK:
                    self.send(frame(SETTINGS, ACK, 0))
                elif ftype == PING and not flags & ACK:
                    self.pings += 1
                    if not self.deaf:
                        self.send(frame(PING, ACK, 0, payload))
                elif ftype in (HEADERS, CONTINUATION):
                    if ftype == HEADERS:
                        block, block_sid = payload, sid
                        self.streams.setdefault(sid, [None, b"", flags & END_STREAM])
                    else:
                        block += payload
                    if flags & END_HEADERS:
                        hdrs = dict((k.decode() if isinstance(k, bytes) else k,
                                     v.decode() if isinstance(v, bytes) else v)
                                    for k, v in self.decoder.decode(block))
                        st = self.streams[block_sid]
                        st[0] = hdrs
                        if st[2]:
                            self._dispatch(block_sid)
                elif ftype == DATA:
                    st = self.streams.get(sid)
                    if st is not None:
                        st[1] += payload
                    if length:
                        self.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", length)))
                    if flags & END_STREAM and st is not None:
                        self._dispatch(sid)
        except (EOFError, OSError):
            pass
        finally:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    def _dispatch(self, sid):
        hdrs, body, _ = self.streams.pop(sid)
        req = self.server._record(sid, hdrs, body, self.index)
        self.server.handler(self, req)
        self.last_active = time.monotonic()


class FakeServer:
    def __init__(self, handler):
        self.handler = handler
        self.requests = []
        self.conns = []
        self._lock = threading.Lock()
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.addr = "127.0.0.1:%d" % self.ls.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                s, _ = self.ls.accept()
            except OSError:
                return
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                c = Conn(self, s, len(self.conns))
                self.conns.append(c)
            threading.Thread(target=c.run, daemon=True).start()

    def _record(self, sid, hdrs, body, conn_index):
        with self._lock:
            r = Request(sid, hdrs, body, len(self.requests), conn_index)
            self.requests.append(r)
            return r

    def paths(self):
        return [r.path for r in self.requests]

    def close(self):
        self.ls.close()
        for c in list(self.conns):
            c.closed = True
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
