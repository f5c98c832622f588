"""Property-style fuzzing of every RPC the protos declare, against the real clued.

The methods are discovered from the service descriptors of the generated stubs (every
*_pb2 module, grpc.health.v1 included), so a method added to proto/ is fuzzed without
changing this file. Each method is called by an ADMIN, a GROUP leader and member, a ROOM
leader, an AUDITOR, and callers with no, an unknown or a malformed token, with:

  - garbage: bytes that are not a valid protobuf message -> INVALID_ARGUMENT (or
    UNAUTHENTICATED for a caller without a valid token);
  - loose: random bytes, string fields holding invalid UTF-8, and valid but unusual
    encodings (unknown fields, repeated scalars, over-long varints);
  - typed: random well-typed messages generated from the message descriptors, from nearly
    valid to thoroughly odd.

Properties: the status is one a client can act on (never INTERNAL, UNKNOWN, UNAVAILABLE or
DEADLINE_EXCEEDED); status messages carry no SQL or stack details; a failed call changes no
row of any table in the public schema; a successful read changes nothing (reading a
reporter's contact details only appends its audit event); a successful change appends an
audit event; the server survives and shuts down cleanly under the sanitizers.

    FUZZ_SEED=<int>      reproduce a run (the seed is printed; the default is fixed)
    FUZZ_ROUNDS=<int>    passes over every method and caller (default sized for ~60 s)
    FUZZ_METHODS=a,b     fuzz only methods whose path contains one of these substrings
    FUZZ_VERBOSE=1       print every call and its status
"""

import hashlib
import math
import os
import random
import re
import sys
import threading
import time
import uuid

import grpc
from google.protobuf import descriptor as _d
from google.protobuf import symbol_database, text_format

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
import world  # noqa: E402

S = harness.stubs()
SC = grpc.StatusCode

SEED = int(os.environ.get("FUZZ_SEED", "20260514"))
ROUNDS = int(os.environ.get("FUZZ_ROUNDS", "12"))
ONLY = [x for x in os.environ.get("FUZZ_METHODS", "").split(",") if x]
VERBOSE = bool(os.environ.get("FUZZ_VERBOSE"))
TIMEOUT = 10.0
MAX_FINDINGS_SHOWN = 40

# Text that must never reach a client: SQL, PostgreSQL's error layout, stack details.
LEAK_MARKERS = ("SELECT", "ERROR:", "syntax", "relation", "violates", "duplicate key", "DETAIL:", "CONTEXT:",
                "PL/pgSQL", "sqlstate", "AddressSanitizer", "runtime error", "backtrace", "#0 0x", ".c:")
# Generated strings never contain a marker (case-insensitively), so an echo of the request in a
# status message cannot look like a leak.
_MARKERS_LOWER = tuple(m.lower() for m in LEAK_MARKERS)

ALLOWED = {SC.OK, SC.INVALID_ARGUMENT, SC.NOT_FOUND, SC.PERMISSION_DENIED, SC.FAILED_PRECONDITION, SC.ABORTED,
           SC.ALREADY_EXISTS, SC.RESOURCE_EXHAUSTED, SC.OUT_OF_RANGE}
PUBLIC_SERVICES = ("grpc.health.v1.Health",)
# Methods that only read. RectificationService.Verify (整改到位) changes an item: the prefix is
# VerifyAuditChain's whole name, not "Verify".
READ_PREFIXES = ("Get", "List", "VerifyAuditChain", "Watch", "Check")

INT_RANGES = {
    _d.FieldDescriptor.TYPE_INT32: (-2**31, 2**31 - 1), _d.FieldDescriptor.TYPE_SINT32: (-2**31, 2**31 - 1),
    _d.FieldDescriptor.TYPE_SFIXED32: (-2**31, 2**31 - 1), _d.FieldDescriptor.TYPE_INT64: (-2**63, 2**63 - 1),
    _d.FieldDescriptor.TYPE_SINT64: (-2**63, 2**63 - 1), _d.FieldDescriptor.TYPE_SFIXED64: (-2**63, 2**63 - 1),
    _d.FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1), _d.FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    _d.FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1), _d.FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
FLOAT_TYPES = (_d.FieldDescriptor.TYPE_DOUBLE, _d.FieldDescriptor.TYPE_FLOAT)
WIRE = {  # wire type of each scalar type
    **{t: 0 for t in (_d.FieldDescriptor.TYPE_INT32, _d.FieldDescriptor.TYPE_INT64, _d.FieldDescriptor.TYPE_UINT32,
                      _d.FieldDescriptor.TYPE_UINT64, _d.FieldDescriptor.TYPE_SINT32, _d.FieldDescriptor.TYPE_SINT64,
                      _d.FieldDescriptor.TYPE_BOOL, _d.FieldDescriptor.TYPE_ENUM)},
    _d.FieldDescriptor.TYPE_FIXED64: 1, _d.FieldDescriptor.TYPE_SFIXED64: 1, _d.FieldDescriptor.TYPE_DOUBLE: 1,
    _d.FieldDescriptor.TYPE_FIXED32: 5, _d.FieldDescriptor.TYPE_SFIXED32: 5, _d.FieldDescriptor.TYPE_FLOAT: 5,
    _d.FieldDescriptor.TYPE_STRING: 2, _d.FieldDescriptor.TYPE_BYTES: 2, _d.FieldDescriptor.TYPE_MESSAGE: 2,
}

ODD_STRINGS = [
    "", " ", "\t", "  \n\r ", "\u3000\u00a0\ufeff", "\x01\x02\x03", "\x1b[31mred\x1b[0m", "\x7f", "\u0085",
    "a\u200bb", "\u202eevil\u202c", "e\u0301\u0301\u0301", "\U0001F600\U0001F4A9", "\U0010FFFF", "\uffff\ufffe",
    "\ud7ff", "\ufdd0", "'); DROP TABLE clues;--", "%", "%%", "%s%s%n%x", "_", "\\", "'", '"', "' OR '1'='1",
    "$1", "::text", "{}", '{"a": 1}', "{\"", "NULL", "null", "-1", "0", "9223372036854775808", "1e309", "NaN",
    "\\x00", "\\\\", "a,b", "\"quoted\"", "line1\nline2", "tab\there", "ÄÖÜ ß", "ﬁ ligature", "İ", "ǅ",
    "Ω≈ç√∫", "中文\u3000全角", "🇨🇳", "\u00ad", "x" * 4097, "线" * 201, "名" * 101,
]
PLAUSIBLE = ["依据初步核实情况", "同意", "张三", "处长", "正处", "市发展改革委", "市卫生健康委", "反映某某违规收受礼金",
             "违反廉洁纪律", "市检察院", "党内警告", "clue", "case", "user", "unit", "token", "proposal",
             "clue.submit", "clue.transition", "user.create", "no violation found", "e2e", "grpc.health.v1.Health",
             "clue.v1.ClueService", "LEADER", "G1", "R1"]


def _clean(s):
    low = s.lower()
    return not any(m in low for m in _MARKERS_LOWER)


class Finding(Exception):
    pass


# ---- methods ---------------------------------------------------------------------------------


class Method:
    def __init__(self, svc, md):
        self.service = svc.full_name
        self.name = md.name
        self.path = f"/{svc.full_name}/{md.name}"
        self.input = _message_class(md.input_type)
        self.output = _message_class(md.output_type)
        self.client_streaming = bool(getattr(md, "client_streaming", False))
        self.server_streaming = bool(getattr(md, "server_streaming", False))
        self.public = svc.full_name in PUBLIC_SERVICES
        self.mutating = not md.name.startswith(READ_PREFIXES)
        self.implemented = True

    def __repr__(self):
        return self.path


def _message_class(desc):
    try:
        from google.protobuf import message_factory
        return message_factory.GetMessageClass(desc)
    except (ImportError, AttributeError):
        return symbol_database.Default().GetSymbol(desc.full_name)


def discover_methods():
    seen = {}
    for name in sorted(vars(S)):
        mod = getattr(S, name)
        if not name.endswith("_pb2"):
            continue
        for svc in mod.DESCRIPTOR.services_by_name.values():
            for md in svc.methods:
                m = Method(svc, md)
                seen.setdefault(m.path, m)
    methods = sorted(seen.values(), key=lambda m: m.path)
    assert any(m.service == "grpc.health.v1.Health" for m in methods), "health service not discovered"
    if ONLY:
        methods = [m for m in methods if any(x in m.path for x in ONLY)]
    return methods


# ---- callers ---------------------------------------------------------------------------------


class Principal:
    def __init__(self, label, user=None, bad_tokens=None):
        self.label = label
        self.user = user  # world.User, or None for a caller without a valid token
        self.bad_tokens = bad_tokens

    @property
    def authed(self):
        return self.user is not None

    def metadata(self, rng):
        if self.user is not None:
            return (("authorization", "Bearer " + self.user.token),)
        v = rng.choice(self.bad_tokens)
        return () if v is None else (("authorization", v),)


# ---- value generation ------------------------------------------------------------------------


class Gen:
    """Random values for the fields of a message descriptor. `sanity` is the chance that a field
    gets a plausible value (an existing id, a fresh UUID, ordinary text) instead of an odd one."""

    def __init__(self, rng, protected):
        self.rng = rng
        self.protected = protected  # noun -> ids never generated for it (the reserve admin's)
        self.ids = {}  # noun ("clue", "unit", "joint_case", ...) -> ids seen in answers
        self.objects = {}  # (noun, id) -> {field: value}, the latest answer naming that object
        self.seen_by = {}  # caller label -> keys of the objects answers to that caller named
        self.smalls = set(range(1, 6))
        self.page_tokens = set()
        self.request_ids = []

    def is_protected(self, noun, v):
        return any(_noun_match(k, noun) and v in vs for k, vs in self.protected.items())

    def add_id(self, noun, v):
        if v and not self.is_protected(noun, v):
            self.ids.setdefault(noun, set()).add(v)

    def id_for(self, noun):
        """A known id for a field named <noun>_id: one of that kind when the answers taught
        us some (owner_unit_id and to_unit_id take unit ids, case_id joint_case ids)."""
        match = sorted(v for k, vs in self.ids.items() if _noun_match(k, noun) for v in vs)
        if match and self.rng.random() < 0.85:
            return self.rng.choice(match)
        every = sorted(v for vs in self.ids.values() for v in vs)
        return self.rng.choice(every) if every else 1

    def uuid(self):
        u = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        self.request_ids.append(u)
        del self.request_ids[:-200]
        return u

    # integers
    def int_value(self, field, sanity):
        lo, hi = INT_RANGES[field.type]
        for _ in range(20):
            v = self._int(field, sanity)
            if lo <= v <= hi and not self.is_protected(_noun(field), v):
                return v
        return 0

    def _int(self, field, sanity):
        r = self.rng
        if r.random() < sanity:
            if "version" in field.name or "days" in field.name or "size" in field.name or "persons" in field.name:
                return r.choice(sorted(self.smalls) + [r.randint(1, 400)])
            if field.name.endswith("_id") or field.name.endswith("_ids") or field.name == "id":
                return self.id_for(_noun(field))
            if field.name.endswith("_ms"):
                return int(time.time() * 1000) + r.randint(-400, 400) * 86400000
            return r.randint(0, 100)
        if field.name.endswith("_ms") and r.random() < 0.5:  # the edges of the time range
            return r.choice([1, -1, 253402300800000, -62135596800000, 9224318016000000, -210866803200000,
                             2**53, 10**16, 2**63 - 1, -2**63, r.randint(2**40, 2**63 - 1)])
        return r.choice([
            0, 0, -1, 1, 2, r.randint(-2**63, -1), 2**63 - 1, -2**63, 2**31 - 1, -2**31, 2**31, 2**32, 2**53 + 1,
            r.randint(0, 2**64 - 1), r.randint(3, 1000), -r.randint(1, 2**31), 2**64 - 1, 4294967295,
        ])

    # strings
    def string_value(self, field, sanity):
        for _ in range(20):
            s = self._string(field, sanity)
            if _clean(s):
                return s
        return ""

    def _string(self, field, sanity):
        r = self.rng
        if field.name.endswith("request_id"):
            x = r.random()
            if x < max(sanity, 0.3):
                return self.uuid()
            if x < 0.7 and self.request_ids:
                return r.choice(self.request_ids)  # a retry, possibly for another method or clue
            return r.choice([self.uuid().upper(), self.uuid().replace("-", ""), "00000000-0000-0000-0000-000000000000",
                             self.uuid()[:-1] + "g", self.uuid() + " ", "{" + self.uuid() + "}"] + ODD_STRINGS)
        if field.name.endswith("page_token") and r.random() < max(sanity, 0.5):
            if not self.page_tokens or r.random() < 0.5:
                return ""
            t = r.choice(sorted(self.page_tokens))
            return t if r.random() < 0.8 else _mutate_text(r, t)
        if r.random() < sanity:
            if field.name == "code":
                return r.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") + "".join(r.choice("0123456789ABC")
                                                                    for _ in range(r.randint(1, 5)))
            return r.choice(PLAUSIBLE) + ("" if r.random() < 0.5 else f" {r.randint(1, 10**6)}")
        x = r.random()
        if x < 0.45:
            return r.choice(ODD_STRINGS)
        if x < 0.5:
            return r.choice(["x" * 100000, "线" * 100000, ("ab\u3000" * 40000)[:100000], " " * 100000])
        if x < 0.8:
            return "".join(r.choice(_ALPHABET) for _ in range(r.randint(1, 300)))
        return _mutate_text(r, r.choice(PLAUSIBLE))

    def scalar(self, field, sanity):
        t, r = field.type, self.rng
        if t in INT_RANGES:
            return self.int_value(field, sanity)
        if t == _d.FieldDescriptor.TYPE_BOOL:
            return r.random() < 0.5
        if t in FLOAT_TYPES:
            return r.choice([0.0, -0.0, 1.5, -1e9, math.nan, math.inf, -math.inf, 3.4e38, 1e-45])
        if t == _d.FieldDescriptor.TYPE_ENUM:
            known = [v.number for v in field.enum_type.values]
            if r.random() < max(sanity, 0.6):
                nz = [v for v in known if v != 0] or known
                return r.choice(nz if r.random() < (0.95 if sanity >= 1.0 else 0.8) else known)
            return r.choice([max(known) + 1, 99, -1, 2**31 - 1, -2**31, 1000])
        if t == _d.FieldDescriptor.TYPE_STRING:
            return self.string_value(field, sanity)
        if t == _d.FieldDescriptor.TYPE_BYTES:
            return r.randbytes(r.randint(0, 64))
        raise AssertionError(f"unhandled field type {t} of {field.full_name}")

    def count(self, sanity):
        r = self.rng
        x = r.random()
        if x < 0.35 * (1 - sanity) + 0.1:
            return 0
        if x < 0.85:
            return r.randint(1, 3)
        return r.randint(4, 50)

    def anchor(self, desc, caller=None):
        """Values of a request that fit together: for its first <noun>_id field with known
        objects of that kind, one such object's id, plus the object's current values for the
        request's other scalar fields named after them (expected_version <- version)."""
        for field in desc.fields:
            if field.type not in INT_RANGES or field.label == _d.FieldDescriptor.LABEL_REPEATED:
                continue
            noun = _noun(field) if field.name.endswith("_id") else None
            keys = sorted(k for k in self.objects if noun and _noun_match(k[0], noun))
            if not keys:
                continue
            mine = [k for k in keys if k in self.seen_by.get(caller, ())]
            if mine and self.rng.random() < 0.7:
                keys = mine  # mostly what the caller can see
            obj = self.objects[self.rng.choice(keys)]
            out = {field.name: obj["id"]}
            for other in desc.fields:
                if other is field or other.label == _d.FieldDescriptor.LABEL_REPEATED:
                    continue
                for k, v in obj.items():
                    if k != "id" and (other.name == k or other.name.endswith("_" + k)) and \
                            other.type in INT_RANGES and isinstance(v, int):
                        out[other.name] = v
            return out
        return {}

    def fill(self, msg, sanity, depth=0, caller=None):
        fixed = self.anchor(msg.DESCRIPTOR, caller) if depth == 0 and sanity >= 0.9 and self.rng.random() < 0.7 else {}
        for field in msg.DESCRIPTOR.fields:
            repeated = field.label == _d.FieldDescriptor.LABEL_REPEATED
            is_msg = field.type == _d.FieldDescriptor.TYPE_MESSAGE
            if field.name in fixed:
                setattr(msg, field.name, fixed[field.name])
                continue
            if not repeated and self.rng.random() > 0.35 + sanity * 0.6:
                continue  # left unset
            if is_msg:
                if depth >= 3:
                    continue
                if repeated:
                    for _ in range(self.count(sanity)):
                        self.fill(getattr(msg, field.name).add(), sanity, depth + 1)
                else:
                    sub = getattr(msg, field.name)
                    sub.SetInParent()
                    self.fill(sub, sanity, depth + 1)
                continue
            try:
                if repeated:
                    values = [self.scalar(field, sanity) for _ in range(self.count(sanity))]
                    if sanity >= 0.9 and field.name.endswith("_ids"):
                        values = list(dict.fromkeys(values))  # plausible id lists name each id once
                    getattr(msg, field.name).extend(values)
                else:
                    setattr(msg, field.name, self.scalar(field, sanity))
            except (ValueError, TypeError):
                pass  # a value this protobuf runtime refuses to hold (e.g. float overflow)
        return msg

    # what answers teach us
    def harvest(self, msg, caller=None):
        fields = msg.DESCRIPTOR.fields_by_name
        noun = _noun(fields["id"]) if "id" in fields else None
        if noun and fields["id"].type in INT_RANGES and msg.id > 0 and not self.is_protected(noun, msg.id):
            self.objects[(noun, msg.id)] = {f.name: v for f, v in msg.ListFields()
                                             if f.label != _d.FieldDescriptor.LABEL_REPEATED
                                             and f.type != _d.FieldDescriptor.TYPE_MESSAGE} | {"id": msg.id}
            self.seen_by.setdefault(caller, set()).add((noun, msg.id))
        for field, value in msg.ListFields():
            values = value if field.label == _d.FieldDescriptor.LABEL_REPEATED else [value]
            for v in values:
                if field.type == _d.FieldDescriptor.TYPE_MESSAGE:
                    self.harvest(v, caller)
                elif field.type in INT_RANGES and (field.name == "id" or field.name.endswith("_id")
                                                   or field.name.endswith("_ids")):
                    self.add_id(_noun(field), v)
                elif field.type in INT_RANGES and "version" in field.name and 0 < v < 1000:
                    self.smalls.add(v)
                elif field.type == _d.FieldDescriptor.TYPE_STRING and field.name.endswith("page_token") and v:
                    self.page_tokens.add(v)


def _noun(field):
    """What an id field names: Clue.id -> clue, JointCase.id -> joint_case, owner_unit_id ->
    owner_unit, participant_unit_ids -> participant_unit, IssueTokenResponse.token_id -> token."""
    if field.name == "id":
        name = field.containing_type.name
        return "".join("_" + ch.lower() if ch.isupper() else ch for ch in name).lstrip("_")
    return field.name.rsplit("_id", 1)[0]


def _noun_match(known, wanted):
    """Whether ids of kind `known` fit a field naming `wanted` (unit ~ owner_unit, case ~ joint_case)."""
    return known == wanted or known.endswith("_" + wanted) or wanted.endswith("_" + known)


_ALPHABET = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -_.,;:'\"%$#@!*()[]{}<>/\\|?+=~`^&"
             "线索初核立案了结移送司法机关纪检监察组\u3000\u00a0\t\n\r\u0001\u001f\u007f\u0085\u200b\u2028\u202e"
             "\ufeff\U0001F600\U00010348")


def _mutate_text(r, s):
    s = list(s) or ["a"]
    for _ in range(r.randint(1, 4)):
        i = r.randrange(len(s))
        op = r.random()
        if op < 0.3:
            s[i] = r.choice(_ALPHABET)
        elif op < 0.6:
            s.insert(i, r.choice(_ALPHABET))
        elif len(s) > 1:
            del s[i]
    return "".join(s)


# ---- raw encodings ---------------------------------------------------------------------------


def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def tag(number, wire):
    return varint((number << 3) | wire)


def garbage(rng, desc):
    """Bytes that no protobuf parser accepts as a message of any type."""
    fields = [f.number for f in desc.fields] or [1]
    fn = rng.choice(fields + [rng.randint(1, 2**29 - 1)])
    rest = rng.randbytes(rng.randint(0, 64))
    kind = rng.randrange(7)
    if kind == 0:  # wire types 6 and 7 do not exist
        return tag(fn, rng.choice((6, 7))) + rest
    if kind == 1:  # a length-delimited field longer than what follows
        return tag(fn, 2) + varint(len(rest) + rng.randint(1, 2**32)) + rest
    if kind == 2:  # a varint cut short
        return tag(fn, 0) + b"\xff" * rng.randint(1, 9)
    if kind == 3:  # a varint of more than ten bytes
        return tag(fn, 0) + b"\xff" * rng.randint(10, 20) + b"\x01" + rest
    if kind == 4:  # fixed64 / fixed32 cut short
        return tag(fn, rng.choice((1, 5))) + rng.randbytes(rng.randint(0, 3))
    if kind == 5:  # a tag cut short
        return b"\x80" * rng.randint(1, 4)
    return tag(0, rng.choice((0, 2))) + b"\x00"  # field number 0 is reserved


def loose(rng, gen, desc, cls):
    """Bytes that may or may not decode: random bytes, invalid UTF-8 in a string field, or a
    random message in a valid but unusual encoding. Returns (bytes, what)."""
    kind = rng.randrange(4)
    base = gen.fill(cls(), rng.random()).SerializeToString()
    if kind == 0:
        return rng.randbytes(rng.randint(0, 200)), "random bytes"
    strings = [f for f in _all_string_fields(desc)]
    if kind == 1 and strings:
        path, f = rng.choice(strings)
        bad = rng.choice([b"\xff", b"\xfe\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe4\xb8",
                          b"\x80abc", b"ok\xc3", b"\xf8\x88\x80\x80\x80"])
        payload = rng.choice([b"", b"abc", "线索".encode()]) + bad + rng.choice([b"", b"xyz"])
        return base + _nested(path, tag(f.number, 2) + varint(len(payload)) + payload), "invalid UTF-8 in " + \
            ".".join(p.name for p in path + [f])
    if kind == 2:  # unknown fields of every wire type
        extra = b""
        for _ in range(rng.randint(1, 5)):
            fn = rng.randint(50, 2**29 - 1)
            w = rng.choice((0, 1, 2, 5))
            extra += tag(fn, w) + {0: varint(rng.getrandbits(64)), 1: rng.randbytes(8), 5: rng.randbytes(4),
                                   2: varint(3) + b"abc"}[w]
        return (extra + base if rng.random() < 0.5 else base + extra), "unknown fields"
    # scalars encoded oddly: ints as 10-byte varints, a field repeated, packed where unpacked
    out = base
    ints = [f for f in desc.fields if f.type in INT_RANGES and WIRE[f.type] == 0]
    for f in rng.sample(ints, min(len(ints), 3)):
        v = rng.choice([2**63, 2**64 - 1, 2**32 + 5, -1])
        if f.label == _d.FieldDescriptor.LABEL_REPEATED and rng.random() < 0.5:
            body = b"".join(varint(rng.choice([v, 1, 0])) for _ in range(rng.randint(0, 4)))
            out += tag(f.number, 2) + varint(len(body)) + body  # packed
        else:
            out += tag(f.number, 0) + varint(v)
    return out, "odd varints"


def _all_string_fields(desc, path=None, depth=0):
    path = path or []
    for f in desc.fields:
        if f.type == _d.FieldDescriptor.TYPE_STRING:
            yield path, f
        elif f.type == _d.FieldDescriptor.TYPE_MESSAGE and depth < 2:
            yield from _all_string_fields(f.message_type, path + [f], depth + 1)


def _nested(path, inner):
    for f in reversed(path):
        inner = tag(f.number, 2) + varint(len(inner)) + inner
    return inner


# ---- database snapshots ----------------------------------------------------------------------


class Snapshots:
    """Row count and newest row version of every table in the public schema.

    Calls run one at a time, so transactions commit in the order of their ids: any committed
    insert or update leaves a row whose xmin is above the table's previous maximum, and a
    delete lowers the count. (A rolled-back change leaves no visible row.)"""

    def __init__(self, db):
        self.db = db
        with db.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
            self.tables = [r[0] for r in cur.fetchall()]
        assert "audit_events" in self.tables, self.tables
        parts = []
        for t in self.tables:
            q = '"' + t.replace('"', '""') + '"'
            parts.append(f"SELECT '{t}', count(*), coalesce(max(xmin::text::bigint), 0) FROM {q}")
        with db.cursor() as cur:
            cur.execute("PREPARE fuzz_snapshot AS " + " UNION ALL ".join(parts))
        self.seconds = 0.0

    def take(self):
        t0 = time.time()
        with self.db.cursor() as cur:
            cur.execute("EXECUTE fuzz_snapshot")
            out = {name: (n, newest) for name, n, newest in cur.fetchall()}
        self.seconds += time.time() - t0
        return out


# ---- the fuzzer ------------------------------------------------------------------------------


class Fuzzer:
    def __init__(self, c):
        self.c = c
        self.rng = random.Random(SEED)
        self.findings = []
        self.ncalls = 0
        self.log_mark = 0
        self.codes = {}
        self.snap = c.snapshots.take()

    # one call through the generic API, body as bytes; returns (code, details, response bytes)
    def invoke(self, m, body, md):
        ch = self.c.ch
        if m.server_streaming:
            return self._invoke_stream(m, body, md)
        if m.client_streaming:
            fn = ch.stream_unary(m.path)
            arg = iter([body])
        else:
            fn = ch.unary_unary(m.path)
            arg = body
        try:
            resp = fn(arg, metadata=md, timeout=TIMEOUT)
            return SC.OK, "", [resp]
        except grpc.RpcError as e:
            return e.code(), e.details() or "", []

    def _invoke_stream(self, m, body, md):
        ch = self.c.ch
        fn = ch.stream_stream(m.path) if m.client_streaming else ch.unary_stream(m.path)
        call = fn(iter([body]) if m.client_streaming else body, metadata=md, timeout=TIMEOUT)
        msgs, res = [], {}
        got = threading.Event()

        def reader():
            try:
                for r in call:
                    msgs.append(r)
                    got.set()
                    if len(msgs) >= 3:
                        break
                res["code"], res["details"] = SC.OK, ""
            except grpc.RpcError as e:
                res["code"], res["details"] = e.code(), e.details() or ""
            got.set()

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        got.wait(0.25)  # the first message or the end (else the stream is live); then a moment for more
        t.join(0.05)
        ended_by_server = not t.is_alive()
        call.cancel()
        t.join(TIMEOUT)
        assert not t.is_alive(), f"{m.path}: stream reader stuck after cancel"
        code = res.get("code", SC.CANCELLED)
        if code == SC.CANCELLED and not ended_by_server:
            code = SC.OK  # we ended a live stream; nothing went wrong
        return code, res.get("details", ""), msgs

    def finding(self, kind, m, p, what, body, code, details, extra=""):
        if kind in ("internal", "unknown", "hang", "unavailable"):
            time.sleep(0.2)  # for the server's log line about it
        cause = [ln.split("database error", 1)[1].strip() for ln in self.c.srv.lines[self.log_mark:]
                 if "database error" in ln]
        key = (kind, m.path, code, details[:80], tuple(cause[-1:]))
        if any(f[0] == key for f in self.findings):
            return
        text = (f"FINDING [{kind}] seed={SEED} call#{self.ncalls} {m.path} as {p.label} ({what}): "
                f"{code.name if code else None} {details!r} {extra}\n"
                f"    request ({len(body)} bytes) hex: {body[:300].hex()}{'...' if len(body) > 300 else ''}")
        try:
            text += "\n    request: " + text_format.MessageToString(m.input.FromString(body), as_one_line=True,
                                                                     as_utf8=True)[:600]
        except Exception:  # noqa: BLE001  (not decodable here: the hex says it all)
            pass
        if kind in ("internal", "unknown", "hang", "unavailable"):
            log = [ln.rstrip() for ln in self.c.srv.lines[self.log_mark:] if "error" in ln or "warn" in ln]
            text += "".join("\n    server: " + ln for ln in log[-5:])
        print(text, flush=True)
        self.findings.append((key, text))

    def call(self, m, p, body, what, allowed, strict_msg=False):
        rng = self.rng
        md = p.metadata(rng)
        self.ncalls += 1
        self.log_mark = len(self.c.srv.lines)
        code, details, resps = self.invoke(m, body, md)
        self.codes[(m.path, code)] = self.codes.get((m.path, code), 0) + 1
        if VERBOSE:
            print(f"  #{self.ncalls} {m.path} {p.label} {what}: {code.name} {details[:160]!r}", flush=True)
        if code in (SC.UNAVAILABLE, SC.INTERNAL, SC.UNKNOWN) and not self.c.srv.alive():
            self.finding("crash", m, p, what, body, code, details, "\n" + self.c.srv.output()[-4000:])
            raise Finding("clued died")
        # status
        revoked = False
        if code == SC.UNAUTHENTICATED and p.authed and m.implemented:
            revoked = self.principal_revoked(p)
            if not revoked:
                self.finding("valid token refused", m, p, what, body, code, details)
        elif code not in allowed:
            kind = {SC.DEADLINE_EXCEEDED: "hang", SC.INTERNAL: "internal", SC.UNKNOWN: "unknown",
                    SC.UNAVAILABLE: "unavailable"}.get(code, "unexpected status")
            self.finding(kind, m, p, what, body, code, details, f"(allowed: {sorted(c.name for c in allowed)})")
            if code in (SC.DEADLINE_EXCEEDED, SC.UNAVAILABLE) and not self.serving():
                self.finding("stopped answering", m, p, what, body, code, details, "\n" + self.c.srv.output()[-4000:])
                raise Finding("clued stopped answering")
        # message
        if code != SC.OK:
            if not _clean_message(details):
                self.finding("leak in message", m, p, what, body, code, details)
            if strict_msg and code == SC.INVALID_ARGUMENT and not _names_field(details, m.input.DESCRIPTOR):
                self.finding("INVALID_ARGUMENT names no field", m, p, what, body, code, details)
        # data
        after = self.c.snapshots.take()
        changed = sorted(t for t in after if after[t] != self.snap.get(t))
        a0, a1 = self.snap.get("audit_events", (0, ""))[0], after["audit_events"][0]
        if a1 < a0:
            self.finding("audit shrank", m, p, what, body, code, details, f"{a0} -> {a1}")
        if code != SC.OK and changed:
            self.finding("data changed by a failed call", m, p, what, body, code, details, f"tables: {changed}")
        elif code == SC.OK:
            parsed = []
            for r in resps:
                try:
                    parsed.append(m.output.FromString(r))
                except Exception:  # noqa: BLE001
                    self.finding("undecodable response", m, p, what, body, code, details, r[:200].hex())
            audited_read = any(_has_set_field(x, "reporter") for x in parsed)
            if not m.mutating and changed and not (audited_read and set(changed) <= {"audit_events", "audit_heads"}):
                self.finding("read changed data", m, p, what, body, code, details, f"tables: {changed}")
            if m.mutating and changed and a1 <= a0:
                self.finding("change without audit event", m, p, what, body, code, details, f"tables: {changed}")
            for x in parsed:
                self.c.gen.harvest(x, p.label)
        self.snap = after
        if revoked:
            self.heal(p)
        return code

    def serving(self):
        """Whether a fresh connection still gets SERVING from Health/Check."""
        try:
            with grpc.insecure_channel(self.c.srv.addr) as ch:
                r = S.health_pb2_grpc.HealthStub(ch).Check(S.health_pb2.HealthCheckRequest(), timeout=5)
            return r.status == S.health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            return False

    def principal_revoked(self, p):
        sha = hashlib.sha256(p.user.token.encode()).digest()
        with self.c.db.cursor() as cur:
            cur.execute("SELECT u.disabled, t.revoked_at IS NOT NULL FROM tokens t JOIN users u ON u.id = t.user_id "
                        "WHERE t.token_sha256 = %s", (sha,))
            row = cur.fetchone()
        return row is not None and (row[0] or row[1])

    def heal(self, p):
        """p's user was disabled or its token revoked by an earlier (successful) fuzz call: give
        the label a fresh user of the same unit and role, made by the reserve admin."""
        w = self.c.w
        old = p.user
        reserve = self.c.reserve
        n = len(w.users)
        u = reserve.admin.CreateUser(S.admin_pb2.CreateUserRequest(
            unit_id=old.unit.id, name=f"fuzz-{p.label}-{n}", role=S.common_pb2.Role.Value("ROLE_" + old.role)),
            timeout=TIMEOUT)
        t = reserve.admin.IssueToken(S.admin_pb2.IssueTokenRequest(user_id=u.id, note="fuzz"), timeout=TIMEOUT)
        p.user = world.User(w.addr, u.id, u.name, old.role, old.unit, t.token)
        w.users.append(p.user)
        self.c.gen.add_id("user", u.id)
        self.snap = self.c.snapshots.take()
        print(f"  ({p.label} was disabled or revoked by a fuzz call; now user #{u.id})", flush=True)

    def allowed(self, m, p, kind):
        if not m.implemented:
            return {SC.UNIMPLEMENTED}
        if kind == "garbage":
            return {SC.INVALID_ARGUMENT} | (set() if (p.authed or m.public) else {SC.UNAUTHENTICATED})
        if m.public:
            return set(ALLOWED)
        if not p.authed:
            return {SC.UNAUTHENTICATED, SC.RESOURCE_EXHAUSTED} | ({SC.INVALID_ARGUMENT} if kind == "loose" else set())
        return set(ALLOWED)

    def round(self, n):
        rng = self.rng
        pairs = [(m, p) for m in self.c.methods for p in self.c.principals]
        rng.shuffle(pairs)
        for m, p in pairs:
            desc = m.input.DESCRIPTOR
            body = garbage(rng, desc)
            self.call(m, p, body, "garbage", self.allowed(m, p, "garbage"))
            body, what = loose(rng, self.c.gen, desc, m.input)
            self.call(m, p, body, "loose: " + what, self.allowed(m, p, "loose"))
            for _ in range((1 if m.server_streaming else 3) if p.authed else 1):
                sanity = rng.choice((0.1, 0.5, 0.9, 1.0, 1.0))
                msg = self.c.gen.fill(m.input(), sanity, caller=p.label)
                self.call(m, p, msg.SerializeToString(), f"typed, sanity {sanity}", self.allowed(m, p, "typed"),
                          strict_msg=True)


def _clean_message(details):
    return not any(mk in details for mk in LEAK_MARKERS)


def _field_names(desc, depth=0):
    for f in desc.fields:
        yield f.name
        if f.type == _d.FieldDescriptor.TYPE_MESSAGE and depth < 3:
            yield from _field_names(f.message_type, depth + 1)


def _names_field(details, desc):
    """DESIGN.md 7: an INVALID_ARGUMENT message names the bad field (or the message type)."""
    return desc.name in details or any(n in details for n in _field_names(desc))


def _has_set_field(msg, name):
    for f, v in msg.ListFields():
        if f.name == name:
            return True
        if f.type == _d.FieldDescriptor.TYPE_MESSAGE:
            vs = v if f.label == _d.FieldDescriptor.LABEL_REPEATED else [v]
            if any(_has_set_field(x, name) for x in vs):
                return True
    return False


# ---- fixture ---------------------------------------------------------------------------------


class Ctx:
    pass


def _seed_data(c):
    """A few clues in several states, with a pending proposal, so generated ids hit real rows."""
    pb = S.clue_pb2
    w = c.w
    rid = c.gen.uuid

    def submit(u, host):
        return u.clue.SubmitClue(pb.SubmitClueRequest(
            title="线索", summary="反映某某违规收受礼金", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
            subject=pb.SubjectPerson(name="张三", position="处长", rank_level="正处"), host_unit=host,
            violation_categories=["违反廉洁纪律"], request_id=rid(),
            reporter=pb.ReporterContact(name="李四", phone="13800000000")), timeout=TIMEOUT)

    def move(u, clue, target, **details):
        return u.clue.RequestTransition(pb.RequestTransitionRequest(
            clue_id=clue.id, expected_version=clue.version, target=target, reason="依据初步核实情况",
            request_id=rid(), details=pb.TransitionDetails(**details)), timeout=TIMEOUT)

    before = c.snapshots.take()
    clues = [submit(w.G1.member, "市发展改革委") for _ in range(3)] + [submit(w.G3.member, "市医保局")]
    changed = {t for t, v in c.snapshots.take().items() if before.get(t) != v}
    assert {"clues", "audit_events"} <= changed, f"table snapshots missed committed changes: saw only {changed}"
    prelim = move(w.G1.leader, clues[0], S.common_pb2.CLUE_STATE_PRELIMINARY_CHECK).clue
    move(w.G1.leader, prelim, S.common_pb2.CLUE_STATE_FILED)  # pending co-review by R1
    move(w.G1.leader, clues[1], S.common_pb2.CLUE_STATE_CLOSED, disposal=pb.DISPOSAL_SHELVED)
    jc = S.case_pb2.CreateJointCaseRequest(title="联合办案", basis="室组地联合",
                                          participant_unit_ids=[w.G1.id, w.X1.id], clue_ids=[clues[2].id],
                                          request_id=rid())
    c.gen.harvest(w.R1.leader.case.CreateJointCase(jc, timeout=TIMEOUT))


def setup():
    print(f"fuzz seed {SEED} (FUZZ_SEED to reproduce), {ROUNDS} rounds (FUZZ_ROUNDS)", flush=True)
    c = Ctx()
    pg = harness.Postgres.get()
    c.dbname = pg.new_database("fuzz")
    c.srv = harness.RawLogClued(pg.url(c.dbname)).start()
    c.w = world.build(c.srv)
    c.db = pg.connect(c.dbname)
    w = c.w
    # The bootstrap admin is held in reserve (to replace callers a fuzz call disables); its
    # user and token ids are never generated for user and token fields, so no fuzz call can
    # disable it or revoke its token.
    c.reserve = w.admin
    with c.db.cursor() as cur:
        cur.execute("SELECT id FROM tokens WHERE user_id = %s", (w.admin.id,))
        protected = {"user": {w.admin.id}, "token": {r[0] for r in cur.fetchall()}}
    c.gen = Gen(random.Random(SEED ^ 0x5EED), protected)
    for u in w.users:
        c.gen.add_id("user", u.id)
    for unit in w.units.values():
        c.gen.add_id("unit", unit.id)
    admin = w.new_user(w.admin_unit.code, "ADMIN", "fuzz-admin")
    c.snapshots = Snapshots(c.db)
    _seed_data(c)
    rr = random.Random(SEED)
    bad = [None, "Bearer ct_" + "%064x" % rr.getrandbits(256), "Bearer " + "%064x" % rr.getrandbits(256), "Bearer",
           "Bearer ", "Basic dXNlcjpwYXNz", "bearer", "Bearer ct_" + "0" * 64 + " extra", "Bearer " + "A" * 4000,
           "Bearer ct_" + "z" * 64]
    c.principals = [Principal("admin", admin), Principal("group-leader", w.G1.leader),
                    Principal("group-member", w.G1.member), Principal("room-leader", w.R1.leader),
                    Principal("auditor", w.auditor), Principal("no-or-bad-token", bad_tokens=bad)]
    c.ch = grpc.insecure_channel(c.srv.addr, options=[("grpc.max_receive_message_length", -1),
                                                      ("grpc.max_send_message_length", -1)])
    c.methods = discover_methods()
    # Which methods the server implements: UNIMPLEMENTED to an admin's empty request.
    for m in c.methods:
        if not m.server_streaming and not m.client_streaming:
            try:
                c.ch.unary_unary(m.path)(b"", metadata=c.principals[0].metadata(rr), timeout=TIMEOUT)
            except grpc.RpcError as e:
                m.implemented = e.code() != SC.UNIMPLEMENTED
        else:
            call = c.ch.unary_stream(m.path)(b"", metadata=c.principals[0].metadata(rr), timeout=TIMEOUT)
            try:
                next(iter(call))
            except grpc.RpcError as e:
                m.implemented = e.code() != SC.UNIMPLEMENTED
            except StopIteration:
                pass
            call.cancel()
    print(f"{len(c.methods)} methods: {sum(m.implemented for m in c.methods)} implemented; not yet: "
          + ", ".join(m.path for m in c.methods if not m.implemented), flush=True)
    # What each caller sees: every List method with an empty request, answers harvested.
    for p in c.principals:
        for m in c.methods:
            if p.authed and m.implemented and m.name.startswith("List") and not m.server_streaming:
                try:
                    r = c.ch.unary_unary(m.path)(b"", metadata=p.metadata(rr), timeout=TIMEOUT)
                    c.gen.harvest(m.output.FromString(r), p.label)
                except grpc.RpcError:
                    pass
    return c


def teardown(c):
    c.ch.close()
    c.w.close()
    c.db.close()
    c.srv.stop()  # exit 0 and no sanitizer report


# ---- tests -----------------------------------------------------------------------------------


def test_fuzz_every_method(c):
    f = Fuzzer(c)
    t0 = time.time()
    try:
        for n in range(ROUNDS):
            f.round(n)
            print(f"  round {n + 1}/{ROUNDS}: {f.ncalls} calls, {time.time() - t0:.1f}s", flush=True)
    except Finding:
        pass
    summary = {}
    for (path, code), k in f.codes.items():
        summary.setdefault(path, []).append(f"{code.name}={k}")
    for path in sorted(summary):
        print(f"  {path}: {' '.join(sorted(summary[path]))}", flush=True)
    ok_paths = {path for (path, code) in f.codes if code == SC.OK}
    print(f"  {len(ok_paths)} methods answered OK at least once; {c.snapshots.seconds:.1f}s in table snapshots",
          flush=True)
    if f.findings:
        shown = "\n".join(t for _, t in f.findings[:MAX_FINDINGS_SHOWN])
        raise AssertionError(f"{len(f.findings)} finding(s), seed {SEED}:\n{shown}")


LOG_LINE = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z clued: [a-z]+: [^\x00-\x08\x0a-\x1f\x7f]*\n?$")


UNSAFE_TO_SHOW = re.compile("[\u0080-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def test_log_lines_are_whole(c):
    """Text from clients reaches clued's log escaped: every line of its output is UTF-8, one
    event, with no control characters (a client cannot forge lines or break the reader)."""
    h = S.health_pb2_grpc.HealthStub(c.ch)
    forged = "2026-01-01T00:00:00.000Z\u00a0clued:\u00a0info:\u00a0forged\u00a0line"
    for service in ("fuzz\n2026-01-01T00:00:00.000Z clued: info: forged line", "fuzz\x1b[2K\rhidden",
                    # Separators that split lines for Unicode-aware readers, the one-byte CSI,
                    # and the controls that reorder what a viewer shows.
                    "fuzz\u2028" + forged, "fuzz\u2029" + forged, "fuzz\u0085" + forged, "fuzz\u009b2K",
                    "fuzz\u202eKO :yfirev", "fuzz\u2066\u2067\u2068\u2069\u200e\u200f\u061c"):
        try:
            h.Check(S.health_pb2.HealthCheckRequest(service=service), timeout=5)
        except grpc.RpcError:
            pass
    try:  # service = b"\xff\xfeA": not UTF-8
        c.ch.unary_unary("/grpc.health.v1.Health/Check")(b"\x0a\x03\xff\xfeA", timeout=5)
    except grpc.RpcError:
        pass
    time.sleep(0.2)
    bad = []
    for raw in list(c.srv.raw_lines):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(f"not UTF-8: {raw[:200]!r}")
            continue
        if not LOG_LINE.match(raw) or raw.startswith(b"2026-01-01T00:00:00.000Z"):
            bad.append(f"not one whole log line: {raw[:200]!r}")
        elif UNSAFE_TO_SHOW.search(raw.decode("utf-8")) or len(raw.decode("utf-8").splitlines()) > 1:
            bad.append(f"a control a viewer acts on: {raw[:200]!r}")
    assert not bad, f"{len(bad)} bad line(s) in clued's output, e.g.:\n" + "\n".join(bad[:8])


def test_still_serving(c):
    assert c.srv.alive(), c.srv.output()[-4000:]
    h = S.health_pb2_grpc.HealthStub(c.ch)
    assert h.Check(S.health_pb2.HealthCheckRequest(), timeout=5).status == S.health_pb2.HealthCheckResponse.SERVING


if __name__ == "__main__":
    harness.run_tests(globals(), setup, teardown)
