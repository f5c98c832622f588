"""A raw HTTP/2 client (python3-h2) for requests no gRPC library would send."""

import socket
import struct

import h2.config
import h2.connection
import h2.events


def grpc_frame(payload, compressed=0):
    return struct.pack(">BI", compressed, len(payload)) + payload


class Response:
    def __init__(self):
        self.headers = {}
        self.trailers = {}
        self.data = b""
        self.reset = None
        self.ended = False

    @property
    def http_status(self):
        return int(self.headers.get(":status", "0"))

    @property
    def grpc_status(self):
        v = self.trailers.get("grpc-status", self.headers.get("grpc-status"))
        return None if v is None else int(v)

    @property
    def grpc_message(self):
        from urllib.parse import unquote

        return unquote(self.trailers.get("grpc-message", self.headers.get("grpc-message", "")))


class RawH2:
    def __init__(self, addr, timeout=10, source=None):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.flush()
        self.responses = {}
        self.goaway = None
        self.inbox = b""  # the bytes of a frame not yet whole

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path, body=b"", headers=None, end=True, content_type="application/grpc", method="POST"):
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", "http"), (":path", path), (":authority", "test")]
        if content_type is not None:
            hdrs.append(("content-type", content_type))
        hdrs.append(("te", "trailers"))
        hdrs += list(headers or [])
        self.conn.send_headers(sid, hdrs, end_stream=(end and not body))
        if body:
            self.conn.send_data(sid, body, end_stream=end)
        self.flush()
        self.responses[sid] = Response()
        return sid

    def pump(self):
        """Read once and process events; returns False when the peer closed."""
        data = self.sock.recv(65536)
        if not data:
            return False
        # One frame at a time: python-h2 refuses every frame after a GOAWAY, even a graceful
        # one's open streams' (RFC 9113 6.8); between frames the connection is kept open
        # (below), which a GOAWAY and DATA read together would not allow.
        self.inbox += data
        while len(self.inbox) >= 9:
            end = 9 + int.from_bytes(self.inbox[:3], "big")
            if len(self.inbox) < end:
                break
            frame, self.inbox = self.inbox[:end], self.inbox[end:]
            self._events(self.conn.receive_data(frame))
        self.flush()
        return True

    def _events(self, events):
        for ev in events:
            r = self.responses.get(getattr(ev, "stream_id", None))
            if isinstance(ev, h2.events.ResponseReceived):
                r.headers = dict(ev.headers)
            elif isinstance(ev, h2.events.TrailersReceived):
                r.trailers = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                r.data += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                r.ended = True
            elif isinstance(ev, h2.events.StreamReset):
                if r is not None:
                    r.reset = ev.error_code
                    r.ended = True
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = ev
                if ev.error_code == 0:
                    # A graceful GOAWAY still lets streams already open finish (RFC 9113
                    # 6.8); python-h2 would refuse their frames, so keep it open.
                    self.conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN

    def wait(self, sid):
        r = self.responses[sid]
        while not r.ended:
            if not self.pump():
                break
        return r

    def call(self, path, body, **kw):
        return self.wait(self.request(path, body, **kw))

    def close(self):
        self.sock.close()
