"""A raw HTTP/1.1 client for gRPC-Web and the console's files: requests as bytes on a
socket, replies parsed by hand (content-length, chunked, or to the close), and the gRPC-Web
body split into its message frames and its trailer frame (flag 0x80)."""

import base64
import socket
import struct
from urllib.parse import unquote


def frame(payload, flag=0):
    return struct.pack(">BI", flag, len(payload)) + payload


class Reply:
    def __init__(self, status, reason, headers, body, chunks=None):
        self.status, self.reason, self.headers, self.body = status, reason, headers, body
        self.chunks = chunks  # the chunk sizes of a chunked body, else None

    def header(self, name):
        return self.headers.get(name.lower())

    def frames(self, text=False):
        """[(flag, payload)] of a gRPC-Web body (decoded first for grpc-web-text)."""
        body = self.body
        if text:
            body = b64decode_stream(body)
        out, i = [], 0
        while i < len(body):
            assert len(body) - i >= 5, f"truncated frame prefix: {body[i:]!r}"
            flag, n = struct.unpack(">BI", body[i:i + 5])
            assert len(body) - i - 5 >= n, "truncated frame"
            out.append((flag, body[i + 5:i + 5 + n]))
            i += 5 + n
        return out

    def messages(self, text=False):
        return [p for f, p in self.frames(text) if not f & 0x80]

    def trailers(self, text=False):
        tr = [p for f, p in self.frames(text) if f & 0x80]
        assert len(tr) == 1, f"want one trailer frame, got {len(tr)}: {self.body[:200]!r}"
        fr = self.frames(text)
        assert fr[-1][0] & 0x80, "the trailer frame is not the last"
        out = {}
        for line in tr[0].decode().split("\r\n"):
            if line:
                k, v = line.split(":", 1)
                out[k.strip().lower()] = v.strip()
        return out

    def grpc_status(self, text=False):
        return int(self.trailers(text)["grpc-status"])

    def grpc_message(self, text=False):
        return unquote(self.trailers(text).get("grpc-message", ""))


def b64decode_stream(b):
    """Concatenated padded base64 chunks, as a gRPC-Web text body may be."""
    out, i = b"", 0
    while i < len(b):
        j = i
        while j < len(b) and b[j:j + 1] != b"=":
            j += 1
        while j < len(b) and b[j:j + 1] == b"=":
            j += 1
        # a chunk ends at its padding, or at the end
        out += base64.b64decode(b[i:j] + b"=" * (-(j - i) % 4))
        i = j
    return out


class H1:
    def __init__(self, addr, timeout=10, sock=None):
        if sock is None:
            host, port = addr.rsplit(":", 1)
            sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
        self.sock = sock
        self.buf = b""

    def send(self, b):
        self.sock.sendall(b)

    def _fill(self):
        d = self.sock.recv(65536)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_reply(self, head=False, on_chunk=None):
        """One reply. on_chunk(bytes) sees each chunk of a chunked body as it comes."""
        line = self._line()
        while line == b"":
            line = self._line()
        ver, status, reason = (line.decode().split(" ", 2) + [""])[:3]
        assert ver == "HTTP/1.1", line
        headers = {}
        while True:
            line = self._line()
            if not line:
                break
            k, v = line.decode().split(":", 1)
            assert k.lower() not in headers or k.lower() == "vary", f"repeated {k}"
            headers[k.lower()] = v.strip()
        status = int(status)
        if status == 100:
            return self.read_reply(head, on_chunk)
        chunks = None
        if head or status in (204, 304):
            body = b""
        elif headers.get("transfer-encoding") == "chunked":
            body, chunks = b"", []
            while True:
                n = int(self._line().split(b";")[0], 16)
                if n == 0:
                    assert self._line() == b""
                    break
                d = self._take(n)
                assert self._take(2) == b"\r\n"
                chunks.append(n)
                body += d
                if on_chunk:
                    on_chunk(d)
        elif "content-length" in headers:
            body = self._take(int(headers["content-length"]))
        else:
            while True:
                try:
                    self._fill()
                except EOFError:
                    break
            body, self.buf = self.buf, b""
        return Reply(status, reason, headers, body, chunks)

    def request(self, method, path, body=b"", headers=(), head=False):
        self.send(encode(method, path, body, headers))
        return self.read_reply(head=head or method == "HEAD")

    def closed(self, timeout=5):
        """True if the server closes the connection (after any bytes it still sends)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    return True
                self.buf += d
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()


def encode(method, path, body=b"", headers=(), host="clued"):
    hs = [("Host", host)] + list(headers)
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in hs):
        hs.append(("Content-Length", str(len(body))))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hs) + "\r\n"
    return head.encode() + body


def grpc_web(addr_or_conn, path, msg, token=None, text=False, headers=(), ctype=None):
    """One gRPC-Web unary call over HTTP/1.1 (a new connection unless one is given)."""
    c = addr_or_conn if isinstance(addr_or_conn, H1) else H1(addr_or_conn)
    body = frame(msg)
    if text:
        body = base64.b64encode(body)
    hs = [("Content-Type", ctype or ("application/grpc-web-text" if text else "application/grpc-web+proto")),
          ("X-Grpc-Web", "1")] + list(headers)
    if token:
        hs.append(("Authorization", "Bearer " + token))
    try:
        return c.request("POST", path, body, hs)
    finally:
        if c is not addr_or_conn:
            c.close()
