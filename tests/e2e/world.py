"""A populated clued for end-to-end tests: units, users and tokens made through the real
AdminService, and one authenticated set of stubs per user.

    srv = harness.Clued(harness.test_database_url()).start()
    w = world.build(srv)
    w.G1.leader.clue.SubmitClue(...)       # ClueService stub with G1's leader's token
    w.auditor.audit.ListAuditEvents(...)   # every service of proto/clue/v1 is there
    w.close()                              # closes the channels (before srv.stop())

Units: rooms R1 and R2; groups G1 and G2 (liaison room R1) and G3 (liaison room R2); region
X1; and the ADMIN unit made by `clued bootstrap`. Each working unit has a LEADER and a MEMBER
(w.<code>.leader, w.<code>.member) and w.<code>.reviewer, the leader who approves its
co-review moves (REVIEWERS); the ADMIN unit has the bootstrap admin (w.admin) and an AUDITOR
(w.auditor). w.units maps codes to units, w.users lists every user.

Tokens are made as a deployment makes them: the admin issues each user an enrollment token
(user.enrollment_token, which cannot read reporter contacts), and the user exchanges it for a
personal token (user.token, TokenService.IssueMyToken) that every stub sends.
"""

import re
import types

import grpc

import harness

S = harness.stubs()

UNITS = (
    # code, kind, liaison room code, host units
    ("R1", "ROOM", None, ()),
    ("R2", "ROOM", None, ()),
    ("G1", "GROUP", "R1", ("市发展改革委",)),
    ("G2", "GROUP", "R1", ("市交通运输局",)),
    ("G3", "GROUP", "R2", ("市卫生健康委", "市医保局")),
    ("X1", "REGION", None, ()),
)
# Whose leader approves the co-review moves of each unit's clues: the liaison room's for a
# group, another room's (named on the proposal) for a room or region.
REVIEWERS = {"G1": "R1", "G2": "R1", "G3": "R2", "R1": "R2", "R2": "R1", "X1": "R1"}


class _Auth(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
            grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call."""

    def __init__(self, token):
        self.md = ("authorization", "Bearer " + token)

    def _details(self, d):
        md = list(d.metadata or ()) + [self.md]
        return d._replace(metadata=md) if hasattr(d, "_replace") else _Details(d, md)

    def intercept_unary_unary(self, cont, d, req):
        return cont(self._details(d), req)

    def intercept_unary_stream(self, cont, d, req):
        return cont(self._details(d), req)

    def intercept_stream_unary(self, cont, d, reqs):
        return cont(self._details(d), reqs)

    def intercept_stream_stream(self, cont, d, reqs):
        return cont(self._details(d), reqs)


class _Details(grpc.ClientCallDetails):
    def __init__(self, d, metadata):
        self.method, self.timeout, self.credentials = d.method, d.timeout, d.credentials
        self.metadata = metadata
        self.wait_for_ready = getattr(d, "wait_for_ready", None)
        self.compression = getattr(d, "compression", None)


def _service_stubs(obj, channel):
    """Set obj.<short> for every service stub of proto/clue/v1: clue, admin, audit, case, stats,
    rect (RectificationService), and tokens (TokenService; obj.token is the token itself)."""
    for short, attr in (("clue", "clue"), ("admin", "admin"), ("audit", "audit"), ("case", "case"),
                        ("stats", "stats"), ("token", "tokens"), ("rectification", "rect")):
        mod = getattr(S, short + "_pb2_grpc", None)
        if mod is None:
            continue
        for name in dir(mod):
            if name.endswith("ServiceStub"):
                setattr(obj, attr, getattr(mod, name)(channel))


class User:
    """A user with a token and stubs that send it: user.clue, user.admin, user.audit, ...,
    user.tokens (TokenService); user.token is the personal token they send."""

    def __init__(self, addr, id, name, role, unit, token, enrollment_token=None):
        self.id, self.name, self.role, self.unit, self.token = id, name, role, unit, token
        self.enrollment_token = enrollment_token
        self.addr = addr
        self.metadata = (("authorization", "Bearer " + token),)
        self.raw_channel = grpc.insecure_channel(addr)
        self.channel = grpc.intercept_channel(self.raw_channel, _Auth(token))
        _service_stubs(self, self.channel)

    def new_channel(self):
        """A separate HTTP/2 connection with this user's token; the caller closes it. (Channels
        with the same arguments would share one connection: grpc's global subchannel pool.)"""
        raw = grpc.insecure_channel(self.addr, options=[("grpc.use_local_subchannel_pool", 1)])
        return raw, grpc.intercept_channel(raw, _Auth(self.token))

    def close(self):
        self.raw_channel.close()

    def __repr__(self):
        return f"<User {self.name} {self.role} of {self.unit.code if self.unit else '?'}>"


class Unit:
    def __init__(self, id, code, kind, liaison_room_id=0):
        self.id, self.code, self.kind, self.liaison_room_id = id, code, kind, liaison_room_id
        self.leader = self.member = self.reviewer = None

    def __repr__(self):
        return f"<Unit {self.code} {self.kind} #{self.id}>"


class World:
    def __init__(self):
        self.units = {}
        self.users = []

    def __getattr__(self, name):
        units = self.__dict__.get("units", {})
        if name in units:
            return units[name]
        raise AttributeError(name)

    def user(self, code, role):
        """The LEADER or MEMBER of unit `code`."""
        return getattr(self.units[code], role.lower())

    def new_user(self, code, role, name=None):
        """Create one more user in unit `code` with a token (e.g. a second leader)."""
        return _make_user(self, self.units[code], role, name or f"{code}-{role.lower()}-{len(self.users)}")

    def close(self):
        for u in self.users:
            u.close()


def bootstrap_token(srv):
    """Run `clued bootstrap` against srv's database and return the admin's token."""
    out = srv.run("bootstrap").stdout
    m = re.search(r"\b(ct_[0-9a-f]{64})\b", out)
    assert m, f"no token in bootstrap output: {out!r}"
    return m.group(1)


def exchange_token(addr, enrollment_token, note="e2e personal"):
    """Issue, with an enrollment token, its user a personal token; return the personal one."""
    ch = grpc.insecure_channel(addr)
    try:
        stub = S.token_pb2_grpc.TokenServiceStub(grpc.intercept_channel(ch, _Auth(enrollment_token)))
        return stub.IssueMyToken(S.token_pb2.IssueMyTokenRequest(note=note), timeout=10).token
    finally:
        ch.close()


def _make_user(w, unit, role, name):
    u = w.admin.admin.CreateUser(S.admin_pb2.CreateUserRequest(unit_id=unit.id, name=name,
                                                               role=S.common_pb2.Role.Value("ROLE_" + role)),
                                 timeout=10)
    t = w.admin.admin.IssueToken(S.admin_pb2.IssueTokenRequest(user_id=u.id, note="e2e"), timeout=10)
    personal = exchange_token(w.addr, t.token)
    user = User(w.addr, u.id, name, role, unit, personal, enrollment_token=t.token)
    w.users.append(user)
    return user


def served(ctx=None, args=(), clued=harness.Clued):
    """A test module's usual set-up, in ctx (a new namespace if None): pg, dbname and url (a new
    database), srv (clued, or the given subclass of harness.Clued, started on it with args), w
    (the world built through it) and db (a superuser connection to the database, autocommit).
    Returns ctx; unserve(ctx) undoes it."""
    if ctx is None:
        ctx = types.SimpleNamespace()
    ctx.pg = harness.Postgres.get()
    ctx.dbname = ctx.pg.new_database()
    ctx.url = ctx.pg.url(ctx.dbname)
    ctx.srv = clued(ctx.url, args=list(args)).start()
    ctx.w = build(ctx.srv)
    ctx.db = ctx.pg.connect(ctx.dbname)
    return ctx


def unserve(ctx):
    """Close what served() opened: the world's channels, the database connection, clued."""
    ctx.w.close()
    ctx.db.close()
    ctx.srv.stop()


def build(srv):
    """Bootstrap the admin and create the units, users and tokens described above."""
    w = World()
    w.addr = srv.addr
    token = bootstrap_token(srv)
    probe = grpc.insecure_channel(srv.addr)
    try:
        me = None
        admin_stub = S.admin_pb2_grpc.AdminServiceStub(grpc.intercept_channel(probe, _Auth(token)))
        for u in harness.every_page(admin_stub.ListUsers, S.admin_pb2.ListUsersRequest(), "users", timeout=10):
            if u.role == S.common_pb2.ROLE_ADMIN:
                me = u
        assert me is not None, "bootstrap admin not found"
        adm_unit = [x for x in harness.every_page(admin_stub.ListUnits, S.admin_pb2.ListUnitsRequest(), "units",
                                                  timeout=10)
                    if x.id == me.unit_id][0]
    finally:
        probe.close()
    w.admin_unit = Unit(adm_unit.id, adm_unit.code, "ADMIN")
    w.units[adm_unit.code] = w.admin_unit
    w.admin = User(srv.addr, me.id, me.name, "ADMIN", w.admin_unit, token)
    w.users.append(w.admin)

    for code, kind, liaison, hosts in UNITS:
        req = S.admin_pb2.CreateUnitRequest(kind=S.common_pb2.UnitKind.Value("UNIT_KIND_" + kind),
                                            code=code, name=f"{kind.lower()} {code}",
                                            liaison_room_id=w.units[liaison].id if liaison else 0,
                                            host_units=list(hosts))
        u = w.admin.admin.CreateUnit(req, timeout=10)
        w.units[code] = Unit(u.id, code, kind, u.liaison_room_id)
    for code, _, _, _ in UNITS:
        unit = w.units[code]
        unit.leader = _make_user(w, unit, "LEADER", f"{code}-leader")
        unit.member = _make_user(w, unit, "MEMBER", f"{code}-member")
    for code, by in REVIEWERS.items():
        w.units[code].reviewer = w.units[by].leader
    w.auditor = _make_user(w, w.admin_unit, "AUDITOR", "auditor")
    return w
