"""A client that holds its own write back cannot have it run after its token was revoked.

One HTTP/2 connection opens no flow-control window (INITIAL_WINDOW_SIZE 0) and sends, in one
burst, four large ListAuditEvents and an IssueMyToken with the same token. The first read
takes the user's database connection (--db-conns-per-user 1); its reply cannot be delivered,
so the connection goes over --max-conn-buffer and the pool passes over its waiting statements
(docs/TRANSPORT.md): the IssueMyToken waits, unsent. Then the token is revoked (on the same instance, whose next call
with it is refused at once).

- Window opened: the write is refused UNAUTHENTICATED as it is about to be sent, and no token
  is issued. It used to be sent then, and mint a token that works, minutes after the
  revocation, so the revocation was escaped.
- Connection closed instead: the waiting write goes with the calls of the connection; it
  used to be sent as the connection's statements were resumed, before its calls were
  cancelled, for a client that was gone.
"""

import os
import sys
import time

import grpc
import h2.settings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from rawh2 import RawH2, Response, grpc_frame  # noqa: E402
import world  # noqa: E402

S = harness.stubs()
A = S.admin_pb2
AU = S.audit_pb2
C = S.common_pb2
TK = S.token_pb2
READS = 4


def served(args):
    # One connection for a user's calls: the write waits behind the first read, whatever share
    # of the pool the heavy reads get while the pool's connections come up.
    c = world.served(args=["--db-conns-per-user", "1", *args])
    # Enough audit events that a page of them is far over the connection's buffer.
    with c.db.cursor() as cur:
        cur.execute("SELECT admin_create_user(%s, %s, %s, 'filler ' || g, 'MEMBER') FROM generate_series(1, 300) g",
                    (c.w.admin.id, c.w.admin_unit.id, c.w.G1.id))
    return c


def setup():
    return served(["--max-conn-buffer", "16384"])


def teardown(c):
    world.unserve(c)


def tokens_of(c, uid):
    with c.db.cursor() as cur:
        cur.execute("SELECT count(*) FROM tokens WHERE user_id = %s", (uid,))
        return cur.fetchone()[0]


def post(h, path, msg, token):
    sid = h.conn.get_next_available_stream_id()
    h.conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "t"),
                              ("content-type", "application/grpc"), ("te", "trailers"),
                              ("authorization", "Bearer " + token)])
    h.conn.send_data(sid, grpc_frame(msg.SerializeToString()), end_stream=True)
    h.responses[sid] = Response()
    return sid


def held_write(c, name):
    """An AUDITOR's token, a connection holding an IssueMyToken with it back, unsent, and how
    many tokens the AUDITOR has."""
    u = c.w.admin.admin.CreateUser(A.CreateUserRequest(unit_id=c.w.admin_unit.id, name=name, role=C.ROLE_AUDITOR),
                                   timeout=10)
    t = c.w.admin.admin.IssueToken(A.IssueTokenRequest(user_id=u.id, note="held"), timeout=10)
    page = AU.ListAuditEventsRequest(page_size=500)
    for attempt in range(5):
        h = RawH2(c.srv.addr, timeout=60)
        h.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        h.flush()
        time.sleep(0.2)  # the settings acknowledged
        for _ in range(READS):
            post(h, "/clue.v1.AuditService/ListAuditEvents", page, t.token)
        sid = post(h, "/clue.v1.TokenService/IssueMyToken", TK.IssueMyTokenRequest(note=f"held {attempt}"), t.token)
        h.flush()  # one burst
        time.sleep(1.0)
        if tokens_of(c, u.id) == 1 + attempt:  # the write waits
            return u, t, h, sid, 1 + attempt
        h.close()  # it ran at once (the reads finished first): again
    raise AssertionError("the write was never held back")


def test_a_write_held_past_its_revocation_is_refused(c):
    u, t, h, sid, n = held_write(c, "auditor-held")
    try:
        c.w.admin.admin.RevokeToken(A.RevokeTokenRequest(token_id=t.token_id), timeout=10)
        time.sleep(1.0)
        assert tokens_of(c, u.id) == n
        h.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 22})
        h.conn.increment_flow_control_window(1 << 24)
        h.flush()
        r = h.wait(sid)
    finally:
        h.close()
    assert r.grpc_status == 16, (r.grpc_status, r.grpc_message)
    assert tokens_of(c, u.id) == n
    assert c.srv.alive()


def test_a_held_write_goes_with_its_connection(c):
    u, t, h, sid, n = held_write(c, "auditor-gone")
    h.close()
    time.sleep(2.0)
    assert tokens_of(c, u.id) == n
    # The token still works (it was not revoked): the same write on a connection that reads.
    ch = grpc.insecure_channel(c.srv.addr)
    try:
        S.token_pb2_grpc.TokenServiceStub(ch).IssueMyToken(
            TK.IssueMyTokenRequest(note="after"), metadata=[("authorization", "Bearer " + t.token)], timeout=10)
    finally:
        ch.close()
    assert tokens_of(c, u.id) == n + 1
    assert c.srv.alive()


def test_a_write_held_for_its_user_goes_with_its_connection(c):
    """The same, held by its user's share of queued replies (--max-user-outbound) instead of
    its connection's buffer. The write goes first on its connection and waits for the user's
    one database connection (held by a sleeping call elsewhere); 80 GetClue on the same
    connection, unread, then put the user over its share: the write stays held when the
    sleeper ends. The connection closes: its streams detach newest first, each letting its
    replies go, and the user used to be resumed halfway, before the write's call was
    cancelled, so the pool sent it for a client that was gone."""
    c2 = served(["--max-conn-buffer", str(64 << 20), "--max-user-outbound", str(1 << 20), "--auth-cache-ttl", "60000"])
    c2.srv.wait_listening()
    try:
        w = c2.w
        u = w.admin.admin.CreateUser(A.CreateUserRequest(unit_id=w.admin_unit.id, name="auditor-gone-user",
                                                         role=C.ROLE_AUDITOR), timeout=10)
        t = w.admin.admin.IssueToken(A.IssueTokenRequest(user_id=u.id, note="held"), timeout=10)
        big = w.G1.member.clue.SubmitClue(S.clue_pb2.SubmitClueRequest(
            request_id=harness.new_request_id(), title="大", summary="摘" * 6300, source=S.clue_pb2.SOURCE_CHANNEL_AUDIT,
            subject=S.clue_pb2.SubjectPerson(name="李四"), host_unit="市发展改革委"), timeout=10)
        ch = grpc.insecure_channel(c2.srv.addr)
        sleep = ch.unary_unary("/clued.test.Debug/SleepAsCaller",
                               request_serializer=S.health_pb2.HealthCheckRequest.SerializeToString,
                               response_deserializer=S.health_pb2.HealthCheckResponse.FromString)
        slept = sleep.future(S.health_pb2.HealthCheckRequest(service="3"),
                             metadata=[("authorization", "Bearer " + t.token)], timeout=30)
        time.sleep(0.5)  # the sleeper holds the user's one connection
        h = RawH2(c2.srv.addr, timeout=60)
        h.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        h.flush()
        time.sleep(0.2)
        post(h, "/clue.v1.TokenService/IssueMyToken", TK.IssueMyTokenRequest(note="held for its user"), t.token)
        h.flush()
        time.sleep(0.3)
        for _ in range(80):  # about 19 KB each, batched: they run while the write waits
            post(h, "/clue.v1.ClueService/GetClue", S.clue_pb2.GetClueRequest(clue_id=big.id), t.token)
        h.flush()
        slept.result()
        time.sleep(1.0)
        assert tokens_of(c2, u.id) == 1, "the write was not held by its user's share"
        h.close()
        time.sleep(2.0)
        assert tokens_of(c2, u.id) == 1, "the held write ran after its connection closed"
        assert c2.srv.alive()
        ch.close()
    finally:
        world.unserve(c2)

if __name__ == "__main__":
    harness.run_tests(dict(globals()), setup, teardown)
