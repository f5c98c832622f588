"""The authorization matrix (issue 9, Tests): every RPC that takes a clue, case or proposal
id, called as every principal, against objects in several states, each outcome compared with
the one the rules below give; and the calls about no object (the whole trail's checkpoints,
proofs, export and chain check, and the caller's own tokens), called as every principal.

The rules are written here, from DESIGN.md §2-§4 and issue 9, independently of the server:
`sees`, `may_move`, `may_bring` ... and the order in which a refusal is chosen (a hidden or
missing object answers NOT_FOUND with the message of a missing one, before permission;
PERMISSION_DENIED before the object's state; a stale version answers ABORTED once the caller
may see and change the clue). Nothing is copied from observed output.

The world: rooms R1 and R2, groups G1 and G2 (liaison room R1) and G3 (liaison room R2),
region X1, the ADMIN unit. The objects are G1's clues in every state (ACCEPTED, PRELIMINARY_CHECK,
PRELIMINARY_CHECK with a pending co-review proposal, FILED, CLOSED, and PRELIMINARY_CHECK in
joint case K), X1's own clue, a missing id; joint case K (led by R2, with participants G1 and
X1) and case K2 (led by R1, with participant X1); a pending and a decided proposal. The
principals: G1's leader and member (owner group), R1's leader and member (liaison room), R2's
leader and member (case lead, another room), X1's leader (a region, case participant), G3's
leader (an unrelated group), an AUDITOR, the ADMIN, a disabled user and a revoked token (both
G1 leaders), and where the world has them (tokens issued by the admin and exchanged) G1's
leader acting with its enrollment token. Issue 14 adds a handler and a recusal: G1's clue
"assigned" has G3's member as an assigned handler (a principal of its own), and G1's clue
"recused" has a second G1 leader recused from it (a principal too); every RPC is asked of
both, and the handler and recusal RPCs (AssignHandler, UnassignHandler, RecordRecusal,
ListRecusals, ListAssignments) of every principal on every clue; a SUBMITTED rectification item
found in clue "recused" is, for the recused leader, a missing item (reads, ListItems, every
move, Verify included). TokenService.GetCaller answers
each principal with its own identity (user, unit, role, enrollment) and nobody else's.

Calls that the rules allow and that would change an object run against a fresh object of the
same kind, so that every other cell meets the objects as built; refusals run against the
shared objects, and at the end those are checked unchanged (version, state, owner, case,
pending proposal, and every audit event but notes). The test prints the number of cells and
how many passed.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import new_request_id  # noqa: E402
import world  # noqa: E402

S = harness.stubs()
pb = S.clue_pb2
cs = S.case_pb2
cm = S.common_pb2
ad = S.admin_pb2
au = S.audit_pb2
tk = S.token_pb2
rp = S.rectification_pb2
Code = grpc.StatusCode
OK = Code.OK

ACC, PRE, FIL, CLO, TRA = "ACCEPTED", "PRELIMINARY_CHECK", "FILED", "CLOSED", "TRANSFERRED_TO_JUDICIAL"
STATE = {ACC: cm.CLUE_STATE_ACCEPTED, PRE: cm.CLUE_STATE_PRELIMINARY_CHECK, FIL: cm.CLUE_STATE_FILED,
         CLO: cm.CLUE_STATE_CLOSED, TRA: cm.CLUE_STATE_TRANSFERRED_TO_JUDICIAL}
MISSING = 987654321

# ---- the rules (DESIGN.md §2-§4, issue 9) ------------------------------------------------------

# §2: (from, to) -> co-review; every move is a LEADER's of the owner unit.
MOVES = {(ACC, PRE): False, (ACC, CLO): False, (PRE, FIL): True, (PRE, CLO): False, (FIL, CLO): False,
         (FIL, TRA): True}
TERMINAL = {CLO, TRA}
WORKING = {"GROUP", "ROOM", "REGION"}
MSG = {"clue": "clue not found", "case": "joint case not found", "proposal": "proposal not found",
       "item": "rectification item not found"}
# Issue 14: the rectification item's moves, (from, to) -> the least role of the supervising unit.
OPN, PLN, SUB, VER, REO = "OPEN", "PLAN_RECORDED", "SUBMITTED", "VERIFIED", "REOPENED"
ITEM_MOVES = {(OPN, PLN): "MEMBER", (REO, PLN): "MEMBER", (PLN, SUB): "MEMBER", (SUB, VER): "LEADER",
              (SUB, REO): "LEADER"}
# A SUBMITTED item found in clue "recused": missing for the user recused from that clue.
RECUSED_ITEM = "SUBMITTED, from 'recused'"


class P:
    """A principal: a user with its unit's code and kind, role, and whether its token works."""

    def __init__(self, name, user, unit, kind, role, active=True, enrollment=False):
        self.name, self.user, self.unit, self.kind, self.role, self.active = name, user, unit, kind, role, active
        self.enrollment = enrollment  # acting with a token issued by someone else

    @property
    def staff(self):
        return self.active and self.role in ("LEADER", "MEMBER") and self.kind in WORKING

    def leads(self, unit):
        return self.staff and self.role == "LEADER" and self.unit == unit

    def __repr__(self):
        return self.name


class Clue:
    """What the rules need of a clue: its owner, the owner's liaison room, state, joint case
    (lead, participants) and the reviewer unit of its pending proposal."""

    def __init__(self, kind, owner, liaison, state, case=None, reviewer=None):
        self.kind, self.owner, self.liaison, self.state = kind, owner, liaison, state
        self.case, self.reviewer = case, reviewer
        self.id = self.version = None
        self.reporter = False
        self.props = []  # its proposals, as made
        self.handlers = set()  # user ids of its assigned handlers (issue 14)
        self.recused = set()   # user ids recused from it (issue 14)


class Case:
    def __init__(self, name, lead, participants):
        self.name, self.lead, self.participants = name, lead, set(participants)
        self.id = None

    def has(self, unit):
        return unit == self.lead or unit in self.participants


def sees(p, c):
    """§4: AUDITOR all; ADMIN none; staff: own unit's, liaised groups' (a ROOM), member clues of
    a case its unit leads or joins, and a clue its unit reviews while a proposal is pending.
    Issue 14: an assigned handler sees it too; a recused user never does."""
    if c is None or not p.active:
        return False
    if p.role == "AUDITOR":
        return True
    if not p.staff:
        return False
    if p.user.id in c.recused:
        return False
    if p.user.id in c.handlers:
        return True
    return (p.unit == c.owner or (p.kind == "ROOM" and c.liaison == p.unit)
            or (c.case is not None and c.case.has(p.unit)) or p.unit == c.reviewer)


def sees_case(p, k):
    if k is None or not p.active:
        return False
    return p.role == "AUDITOR" or (p.staff and k.has(p.unit))


class Item:
    """A rectification item: its supervising unit, that unit's liaison room, state, the joint
    case it was found in (or None), and the users recused from the clue it was found in."""

    def __init__(self, kind, sup, liaison, state, case=None, recused=()):
        self.kind, self.sup, self.liaison, self.state, self.case = kind, sup, liaison, state, case
        self.recused = set(recused)
        self.id = self.version = None


def sees_item(p, it):
    """Issue 14: the supervising unit, its liaison room, the units of the source case, AUDITORs;
    never a user recused from the item's source clue (for whom it is a missing item)."""
    if it is None or not p.active:
        return False
    if p.role == "AUDITOR":
        return True
    if not p.staff:
        return False
    if p.user.id in it.recused:
        return False
    return (p.unit == it.sup or (p.kind == "ROOM" and it.liaison == p.unit)
            or (it.case is not None and it.case.has(p.unit)))


def expect_item_read(p, it):
    return refusal(p, "item", sees_item(p, it)) or OK


def expect_item_move(p, it, target, stale):
    """NOT_FOUND, then PERMISSION_DENIED (plans and evidence: the supervising unit's staff;
    verify and reopen: its LEADERs), then ABORTED for a stale version, then the state machine."""
    r = refusal(p, "item", sees_item(p, it))
    if r:
        return r
    need = "MEMBER" if target in (PLN, SUB) else "LEADER"
    if not (p.staff and p.unit == it.sup and (need == "MEMBER" or p.role == "LEADER")):
        return Code.PERMISSION_DENIED
    if stale:
        return Code.ABORTED
    return OK if (it.state, target) in ITEM_MOVES else Code.FAILED_PRECONDITION


def expect_create_item(p, c):
    """Issue 14: a LEADER of a working unit, from a clue it sees (else as a missing clue) and
    its unit owns."""
    if not p.active:
        return Code.UNAUTHENTICATED
    if not (p.staff and p.role == "LEADER"):
        return Code.PERMISSION_DENIED
    if not sees(p, c):
        return (Code.NOT_FOUND, "source_clue_id: " + MSG["clue"])
    return OK if p.unit == c.owner else Code.PERMISSION_DENIED


def may_bring(p, c, lead):
    """§3, issue 9 Build 1: a LEADER of the owner unit, or of the lead room when that room
    owns the clue or is the owner group's liaison room."""
    return p.leads(c.owner) or (p.leads(lead) and (c.owner == lead or c.liaison == lead))


def refusal(p, obj_kind, visible):
    """The first refusals, shared by every call: UNAUTHENTICATED, then NOT_FOUND."""
    if not p.active:
        return Code.UNAUTHENTICATED
    if not visible:
        return (Code.NOT_FOUND, MSG[obj_kind])
    return None


def expect_read(p, c):
    return refusal(p, "clue", sees(p, c)) or OK


def expect_reporter(p, c):
    """§4: the reporter's contact details go to a LEADER of the owner unit only, and never
    through an enrollment token; GetClue shows them to nobody else (and says that there are)."""
    return c.reporter and p.leads(c.owner) and not p.enrollment


def expect_note(p, c):
    return refusal(p, "clue", sees(p, c)) or (Code.PERMISSION_DENIED if p.role == "AUDITOR" else OK)


def expect_move(p, c, target, stale):
    r = refusal(p, "clue", sees(p, c))
    if r:
        return r
    if not p.leads(c.owner):
        return Code.PERMISSION_DENIED
    if stale:
        return Code.ABORTED
    if (c.state, target) not in MOVES or c.reviewer is not None:
        return Code.FAILED_PRECONDITION
    return OK


def reviewer_of(c):
    """§2 and issue 9 Build 3: the case's lead room unless it owns the clue; else the owner
    group's liaison room (a room's or region's own clue: the room named, not modelled here)."""
    if c.case is not None and c.case.lead != c.owner:
        return c.case.lead
    return c.liaison


def expect_handover(p, c, stale):
    r = refusal(p, "clue", sees(p, c))
    if r:
        return r
    if not p.leads(c.owner):
        return Code.PERMISSION_DENIED
    if stale:
        return Code.ABORTED
    return OK if c.state in (ACC, PRE) else Code.FAILED_PRECONDITION


def expect_extend(p, c, stale):
    r = refusal(p, "clue", sees(p, c))
    if r:
        return r
    if not p.leads(c.owner):
        return Code.PERMISSION_DENIED
    if stale:
        return Code.ABORTED
    return Code.FAILED_PRECONDITION if c.state in TERMINAL or c.reviewer is not None else OK


def expect_review(p, prop):
    """§2: a LEADER of the reviewing unit, never the proposer, the owner unit or the
    proposer's unit; the reviewing unit sees its proposals even once decided."""
    if not p.active:
        return Code.UNAUTHENTICATED
    if prop is not None and p.staff and p.user.id in prop.clue.recused:
        return (Code.NOT_FOUND, MSG["proposal"])  # issue 14: a recused user reviews nothing
    if prop is None or not (sees(p, prop.clue) or (p.staff and p.unit == prop.reviewer)):
        return (Code.NOT_FOUND, MSG["proposal"])
    if (not p.leads(prop.reviewer) or p.user.id == prop.proposer
            or p.unit in (prop.clue.owner, prop.proposer_unit)):
        return Code.PERMISSION_DENIED
    return OK if prop.pending else Code.FAILED_PRECONDITION


def expect_get_case(p, k):
    return refusal(p, "case", sees_case(p, k)) or OK


def expect_participant(p, k, outcome_if_allowed):
    r = refusal(p, "case", sees_case(p, k))
    if r:
        return r
    return outcome_if_allowed if p.leads(k.lead) else Code.PERMISSION_DENIED


def expect_add_clue(p, k, c):
    r = refusal(p, "case", sees_case(p, k)) or refusal(p, "clue", sees(p, c))
    if r:
        return r
    if not may_bring(p, c, k.lead):
        return Code.PERMISSION_DENIED
    if c.case is not None or c.state in TERMINAL or c.reviewer is not None:
        return Code.FAILED_PRECONDITION
    return OK


def expect_remove_clue(p, k, c):
    """Issue 9 Build 1: the owner's leader takes its clue back (knowing the case from its
    clue), as the lead room's leader may."""
    if not p.active:
        return Code.UNAUTHENTICATED
    in_k = c is not None and c.case is k
    owner_leader = sees(p, c) and p.leads(c.owner)
    if not (owner_leader and in_k) and not sees_case(p, k):
        return (Code.NOT_FOUND, MSG["case"])
    if not sees(p, c):
        return (Code.NOT_FOUND, MSG["clue"])
    if not owner_leader and not p.leads(k.lead):
        return Code.PERMISSION_DENIED
    if not in_k or c.state in TERMINAL or c.reviewer is not None:
        return Code.FAILED_PRECONDITION
    return OK


def expect_create_case(p, c):
    if not p.active:
        return Code.UNAUTHENTICATED
    if not (p.staff and p.role == "LEADER" and p.kind == "ROOM"):
        return Code.PERMISSION_DENIED
    if not sees(p, c):
        return (Code.NOT_FOUND, "clue_ids: clue N: " + MSG["clue"])
    if not may_bring(p, c, p.unit):
        return Code.PERMISSION_DENIED
    if c.case is not None or c.state in TERMINAL or c.reviewer is not None:
        return Code.FAILED_PRECONDITION
    return OK


def expect_audit(p, c):
    """The subject's events: whoever sees the clue, and the AUDITOR and ADMIN, who read the
    whole trail; nobody else learns a thing (an empty list, as for a missing clue)."""
    if not p.active:
        return Code.UNAUTHENTICATED
    if c is None:
        return "none"
    return "events" if sees(p, c) or p.role in ("AUDITOR", "ADMIN") else "none"


def expect_listed_proposals(p, props):
    """ListProposals(clue_id, every scope, decided too): a unit lists the proposals it raised
    or reviews; the AUDITOR every one; nobody else any. Never more than the caller may see."""
    if not p.active:
        return Code.UNAUTHENTICATED
    if p.role == "AUDITOR":
        return {x.id for x in props}
    if not p.staff:
        return set()
    return {x.id for x in props if p.unit in (x.reviewer, x.proposer_unit)}


def expect_visible_set(p, clues):
    """One visibility for single reads, lists and streams: the clues `sees` gives. The ADMIN,
    who reads the whole audit trail, gets every clue's events in a stream but no clue in a list."""
    if not p.active:
        return Code.UNAUTHENTICATED
    return {kind for kind, c in clues.items() if c is not None and sees(p, c)}


def may_assign(p, c):
    """Issue 14 Build 2: a LEADER of the owner unit, or of the lead room of the clue's case."""
    return p.leads(c.owner) or (c.case is not None and p.leads(c.case.lead))


def expect_assign(p, c, target):
    """NOT_FOUND, then DENIED (an AUDITOR, anyone but may_assign), then FAILED_PRECONDITION for
    a concluded clue, a recused target or one already a handler."""
    r = refusal(p, "clue", sees(p, c))
    if r:
        return r
    if not may_assign(p, c):
        return Code.PERMISSION_DENIED
    if c.state in TERMINAL or target in c.recused or target in c.handlers:
        return Code.FAILED_PRECONDITION
    return OK


def expect_unassign(p, c, target):
    """As expect_assign, in any state; FAILED_PRECONDITION unless the target is a handler."""
    r = refusal(p, "clue", sees(p, c))
    if r:
        return r
    if not may_assign(p, c):
        return Code.PERMISSION_DENIED
    return OK if target in c.handlers else Code.FAILED_PRECONDITION


def expect_recuse(p, c, target, target_unit):
    """Issue 14 Build 3: the user themselves, or a LEADER of the user's unit, the owner unit or
    the case's lead room; never an AUDITOR. Any state; FAILED_PRECONDITION if already recused.
    The staff of a unit overseeing the clue (the owner's liaison room, the case's lead room, the
    pending proposal's reviewer; not the owner) only by themselves or their own unit's LEADER."""
    r = refusal(p, "clue", sees(p, c))
    if r:
        return r
    if p.role == "AUDITOR":
        return Code.PERMISSION_DENIED
    own = p.user.id == target or (p.staff and p.role == "LEADER" and p.unit == target_unit)
    if not (own or (p.staff and p.role == "LEADER" and may_assign(p, c))):
        return Code.PERMISSION_DENIED
    overseers = {c.liaison, c.case.lead if c.case else None, c.reviewer} - {None, c.owner}
    if not own and target_unit in overseers:
        return Code.PERMISSION_DENIED
    return Code.FAILED_PRECONDITION if target in c.recused else OK


def expect_list_recusals(p, c, user_unit):
    """ListRecusals(clue_id): LEADERs and AUDITORs only; an AUDITOR every recusal of the clue, a
    LEADER those of its unit's users and all of a clue it sees; none of a clue the caller is
    recused from. user_unit: recused user -> unit."""
    if not p.active:
        return Code.UNAUTHENTICATED
    if not (p.role == "AUDITOR" or (p.staff and p.role == "LEADER")):
        return Code.PERMISSION_DENIED
    if c is None or p.user.id in c.recused:  # a clue its caller is recused from: none
        return set()
    if p.role == "AUDITOR" or sees(p, c):
        return set(c.recused)
    return {u for u in c.recused if user_unit[u] == p.unit}


def expect_list_assignments(p, c, handler_unit):
    """ListAssignments(clue_id): an AUDITOR every handler of the clue; staff the handlers of a
    clue they see, themselves, and a LEADER its unit's users; nobody else any, and nobody
    recused from the clue."""
    if not p.active:
        return Code.UNAUTHENTICATED
    if c is None or p.user.id in c.recused:  # a clue its caller is recused from: none
        return set()
    if p.role == "AUDITOR" or sees(p, c):
        return set(c.handlers)
    if not p.staff:
        return set()
    return {u for u in c.handlers if u == p.user.id or (p.role == "LEADER" and handler_unit[u] == p.unit)}


def expect_whole_trail(p):
    """§4, issue 12: the Merkle tree's checkpoints, proofs and export, and the chain check, are
    the whole trail's: an AUDITOR's and an ADMIN's, nobody else's."""
    if not p.active:
        return Code.UNAUTHENTICATED
    return OK if p.role in ("AUDITOR", "ADMIN") else Code.PERMISSION_DENIED


def expect_own_tokens(p):
    """TokenService: every active user, whatever the role, lists, issues and revokes their own
    tokens; another user's token answers exactly as a missing one."""
    return Code.UNAUTHENTICATED if not p.active else OK


def expect_revoke_token(p, own):
    if not p.active:
        return Code.UNAUTHENTICATED
    return OK if own else (Code.NOT_FOUND, "token N not found")


# ---- the world ---------------------------------------------------------------------------------


class Proposal:
    def __init__(self, clue, reviewer, proposer, proposer_unit, pending, id):
        self.clue, self.reviewer, self.proposer, self.proposer_unit, self.pending = (
            clue, reviewer, proposer, proposer_unit, pending)
        self.id = id


class Matrix:
    def __init__(self, srv):
        self.srv = srv
        self.w = w = world.build(srv)
        self.units = {code: u.id for code, u in w.units.items()}
        self.K = Case("K", self.units["R2"], [self.units["G1"], self.units["X1"]])
        self.K2 = Case("K2", self.units["R1"], [self.units["X1"]])
        self.cells = self.passed = 0
        self.failures = []
        self.changed_expected = set()

        def mk(name, code, role, user=None, active=True):
            unit = w.units[code]
            return P(name, user or getattr(unit, role.lower()), unit.id, unit.kind, role, active)

        disabled = w.new_user("G1", "LEADER", "G1-disabled")
        w.admin.admin.DisableUser(ad.DisableUserRequest(user_id=disabled.id, reason="调离"), timeout=20)
        revoked = w.new_user("G1", "LEADER", "G1-revoked")
        tokens = w.admin.admin.IssueToken(ad.IssueTokenRequest(user_id=revoked.id, note="to revoke"), timeout=20)
        revoked_user = world.User(w.addr, revoked.id, "G1-revoked-token", "LEADER", w.G1, tokens.token)
        w.users.append(revoked_user)
        w.admin.admin.RevokeToken(ad.RevokeTokenRequest(token_id=tokens.token_id), timeout=20)
        principals = [
            mk("G1.leader (owner)", "G1", "LEADER"), mk("G1.member (owner)", "G1", "MEMBER"),
            mk("R1.leader (liaison, K2 lead)", "R1", "LEADER"), mk("R1.member (liaison)", "R1", "MEMBER"),
            mk("R2.leader (K lead, other room)", "R2", "LEADER"), mk("R2.member (K lead)", "R2", "MEMBER"),
            mk("X1.leader (region, participant)", "X1", "LEADER"), mk("G3.leader (unrelated)", "G3", "LEADER"),
            P("auditor", w.auditor, w.admin_unit.id, "ADMIN", "AUDITOR"),
            P("admin", w.admin, w.admin_unit.id, "ADMIN", "ADMIN"),
            P("disabled user", disabled, w.G1.id, "GROUP", "LEADER", active=False),
            P("revoked token", revoked_user, w.G1.id, "GROUP", "LEADER", active=False),
        ]
        # Issue 14: G3's member is the handler of clue "assigned"; a second G1 leader is recused
        # from clue "recused".
        self.handler = w.G3.member
        self.recused_leader = w.new_user("G1", "LEADER", "G1-leader-recused")
        principals += [mk("G3.member (handler of 'assigned')", "G3", "MEMBER"),
                       mk("G1.leader2 (recused from 'recused')", "G1", "LEADER", user=self.recused_leader)]
        self.user_unit = {self.recused_leader.id: w.G1.id}
        self.handler_unit = {self.handler.id: w.G3.id}
        # An enrollment token (issued by the admin, not yet exchanged), where the world has them.
        enrollment = getattr(w.G1.leader, "enrollment_token", None)
        if enrollment:
            eu = world.User(w.addr, w.G1.leader.id, "G1-leader-enrollment", "LEADER", w.G1, enrollment)
            w.users.append(eu)
            principals.insert(1, P("G1.leader (enrollment token)", eu, w.G1.id, "GROUP", "LEADER",
                                   enrollment=True))
        self.principals = principals
        # Unrevoked tokens of two users, for "another user's token" (each principal gets one
        # that is not its own).
        def live_token(user):
            return next(t.id for t in user.tokens.ListMyTokens(tk.ListMyTokensRequest(), timeout=20).tokens
                        if t.current)
        self.foreign_token_user = w.G3.leader.id
        self.foreign_token = live_token(w.G3.leader)
        self.foreign_token_2 = live_token(w.G2.leader)
        # The cases.
        for k, lead in ((self.K, w.R2.leader), (self.K2, w.R1.leader)):
            parts = sorted(k.participants)
            k.id = lead.case.CreateJointCase(cs.CreateJointCaseRequest(
                title=k.name, participant_unit_ids=parts, request_id=new_request_id()), timeout=20).id
        # The clues and proposals; first_seq: where their events start.
        self.first_seq = self.latest_seq() + 1
        self.clues = {kind: self.make(kind) for kind in ("acc", "pre", "pend", "filed", "closed", "incase", "x1own",
                                                          "x1pend", "assigned", "recused")}
        self.clues["missing"] = None
        self.proposals = {"pending": self.pending_proposal(self.clues["pend"]), "decided": self.decided_proposal(),
                          "region's, named R2": self.pending_proposal(self.clues["x1pend"]), "missing": None}
        self.items = {kind: self.make_item(kind) for kind in (OPN, PLN, SUB, VER, REO, "in case K", RECUSED_ITEM)}
        self.items["missing"] = None
        self.snapshot = self.state()

    # ---- making objects

    def make_item(self, kind):
        """A fresh rectification item supervised by G1: from a G1 clue in the state named, or
        (kind "in case K") found in joint case K, OPEN, or (RECUSED_ITEM) SUBMITTED from clue
        "recused", which G1's second leader is recused from."""
        L, M = self.w.G1.leader, self.w.G1.member
        case = self.K if kind == "in case K" else None
        source_clue = self.clues["recused"] if kind == RECUSED_ITEM else None
        state = SUB if source_clue else kind
        if case:
            req = rp.CreateItemRequest(source=rp.RECTIFICATION_SOURCE_CASE, source_case_id=case.id)
        else:
            req = rp.CreateItemRequest(source=rp.RECTIFICATION_SOURCE_CLUE,
                                       source_clue_id=(source_clue or self.submit(M)).id)
        req.host_unit, req.description, req.category = "市发展改革委", "矩阵问题", "矩阵"
        req.deadline_ms, req.request_id = int(time.time() * 1000) + 30 * 86400000, new_request_id()
        x = L.rect.CreateItem(req, timeout=20)

        def mv(fn, reqtype, **kw):
            return fn(reqtype(item_id=x.id, expected_version=x.version, request_id=new_request_id(), **kw),
                      timeout=20)

        if state in (PLN, SUB, VER, REO):
            x = mv(M.rect.RecordPlan, rp.RecordPlanRequest, plan="方案")
        if state in (SUB, VER, REO):
            x = mv(M.rect.Submit, rp.SubmitRequest, evidence="材料")
        if state == VER:
            x = mv(L.rect.Verify, rp.VerifyRequest)
        if state == REO:
            x = mv(L.rect.Reopen, rp.ReopenRequest, reason="不足")
        it = Item(kind, self.units["G1"], self.units["R1"], OPN if case else state, case,
                  source_clue.recused if source_clue else ())
        it.id, it.version = x.id, x.version
        return it

    def g(self, user, clue_id):
        return user.clue.GetClue(pb.GetClueRequest(clue_id=clue_id), timeout=20)

    def submit(self, user, reporter=None):
        return user.clue.SubmitClue(pb.SubmitClueRequest(
            request_id=new_request_id(), title="矩阵线索", summary="s", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
            subject=pb.SubjectPerson(name="某某"), host_unit="某单位", reporter=reporter), timeout=20)

    def move(self, user, clue, target, **details):
        return user.clue.RequestTransition(pb.RequestTransitionRequest(
            clue_id=clue.id, expected_version=clue.version, target=STATE[target], reason="r",
            details=pb.TransitionDetails(**details), request_id=new_request_id()), timeout=20)

    def make(self, kind):
        """A fresh object of the kind, as Clue with id and version set."""
        w, G1 = self.w, self.w.G1
        owner, liaison = self.units["G1"], self.units["R1"]
        if kind == "x1own":
            x = self.submit(w.X1.member)
            c = Clue(kind, self.units["X1"], None, ACC)
        elif kind == "x1pend":
            # A region's own clue under review by the room it named, R2: R2 sees it meanwhile.
            x = self.move(w.X1.leader, self.submit(w.X1.member), PRE).clue
            pid = self.move(w.X1.leader, x, FIL, reviewer_unit_id=w.R2.id).proposal.id
            x = self.g(w.X1.leader, x.id)
            c = Clue(kind, self.units["X1"], None, PRE, reviewer=self.units["R2"])
            c.props.append(Proposal(c, self.units["R2"], w.X1.leader.id, self.units["X1"], True, pid))
        else:
            # The ACCEPTED clue has a reporter's contact details.
            x = self.submit(G1.member, pb.ReporterContact(name="举报人", phone="13800000000") if kind == "acc" else None)
            state, case, reviewer, props = ACC, None, None, []
            if kind in ("pre", "pend", "filed", "incase", "assigned", "recused"):
                x = self.move(G1.leader, x, PRE).clue
                state = PRE
            if kind == "pend":
                props.append((self.move(G1.leader, x, FIL).proposal.id, True))
                x, reviewer = self.g(G1.leader, x.id), liaison
            if kind == "filed":
                p = self.move(G1.leader, x, FIL).proposal
                props.append((p.id, False))
                x = w.R1.leader.clue.ReviewProposal(pb.ReviewProposalRequest(
                    proposal_id=p.id, approve=True, comment="同意", request_id=new_request_id()), timeout=20).clue
                state = FIL
            if kind == "closed":
                x = self.move(G1.leader, x, CLO, disposal=pb.DISPOSAL_NO_FURTHER_ACTION).clue
                state = CLO
            if kind == "incase":
                G1.leader.case.AddClueToCase(cs.AddClueToCaseRequest(case_id=self.K.id, clue_id=x.id), timeout=20)
                x, case = self.g(G1.leader, x.id), self.K
            if kind == "assigned":
                x = G1.leader.clue.AssignHandler(pb.AssignHandlerRequest(
                    clue_id=x.id, user_id=self.handler.id, request_id=new_request_id()), timeout=20)
            if kind == "recused":
                G1.leader.clue.RecordRecusal(pb.RecordRecusalRequest(
                    clue_id=x.id, user_id=self.recused_leader.id, reason="亲属", request_id=new_request_id()),
                    timeout=20)
            c = Clue(kind, owner, liaison, state, case, reviewer)
            c.reporter = kind == "acc"
            if kind == "assigned":
                c.handlers.add(self.handler.id)
            if kind == "recused":
                c.recused.add(self.recused_leader.id)
            c.props = [Proposal(c, liaison, G1.leader.id, owner, pending, pid) for pid, pending in props]
        c.id, c.version = x.id, x.version
        return c

    def latest_seq(self):
        last, token = 0, ""
        while True:
            r = self.w.auditor.audit.ListAuditEvents(au.ListAuditEventsRequest(page_size=500, page_token=token),
                                                     timeout=20)
            if r.events:
                last = max(last, max(e.seq for e in r.events))
            if not r.next_page_token:
                return last
            token = r.next_page_token

    @staticmethod
    def pending_proposal(c):
        return [x for x in c.props if x.pending][0]

    def decided_proposal(self):
        c = self.make("pre")
        p = self.move(self.w.G1.leader, c, FIL).proposal
        self.w.R1.leader.clue.ReviewProposal(pb.ReviewProposalRequest(
            proposal_id=p.id, approve=False, comment="退回", request_id=new_request_id()), timeout=20)
        c.version = self.g(self.w.G1.leader, c.id).version
        pr = Proposal(c, self.units["R1"], self.w.G1.leader.id, self.units["G1"], False, p.id)
        c.props.append(pr)
        return pr

    def state(self):
        """What must not change under refusals: each shared clue's row and its audit events
        other than notes, and the cases' participants and clues."""
        out = {}
        for kind, c in self.clues.items():
            if c is None:
                continue
            x = self.g(self.w.auditor, c.id)
            events = [e.action for e in self.w.auditor.clue.GetHistory(pb.GetHistoryRequest(clue_id=c.id),
                                                                       timeout=20).events
                      if e.action not in ("note.add", "clue.reporter_read")]
            out[kind] = (x.version, x.state, x.owner_unit_id, x.joint_case_id, x.pending_proposal, tuple(events))
        for kind, it in getattr(self, "items", {}).items():
            if it is not None:
                x = self.w.auditor.rect.GetItem(rp.GetItemRequest(item_id=it.id), timeout=20)
                out["item " + kind] = (x.version, x.state)
        # Allowed calls add fresh clues to the cases; the shared ones must stay where they are.
        shared = {c.id for c in self.clues.values() if c is not None}
        for k in (self.K, self.K2):
            jc = self.w.auditor.case.GetJointCase(cs.GetJointCaseRequest(case_id=k.id), timeout=20)
            out[k.name] = (tuple(jc.participant_unit_ids), tuple(x.clue_id for x in jc.clues if x.clue_id in shared))
        return out

    # ---- running cells

    def call(self, fn):
        try:
            return OK, fn(), ""
        except grpc.RpcError as e:
            return e.code(), None, e.details()

    def check(self, rpc, p, obj, want, fn):
        """Run fn(); compare its code (and for NOT_FOUND the message of a missing object) with want."""
        self.cells += 1
        want_code, want_msg = want if isinstance(want, tuple) else (want, None)
        code, resp, msg = self.call(fn)
        if want_msg is not None:
            msg = re.sub(r"\d+", "N", msg)
        ok = code == want_code and (want_msg is None or msg == want_msg)
        if ok:
            self.passed += 1
        else:
            self.failures.append(f"{rpc} as {p} on {obj}: want {want_code.name}"
                                 f"{' ' + repr(want_msg) if want_msg else ''}, got {code.name} {msg!r}")
        return resp

    def tally(self, rpc, p, obj, want, got, msg=""):
        self.cells += 1
        if got == want:
            self.passed += 1
        else:
            self.failures.append(f"{rpc} as {p} on {obj}: want {want}, got {got} {msg!r}")

    def listed(self, u):
        """The shared clues ListClues shows, by kind."""
        ids, token = set(), ""
        while True:
            r = u.clue.ListClues(pb.ListCluesRequest(page_size=500, page_token=token), timeout=20)
            ids |= {x.id for x in r.clues}
            if not r.next_page_token:
                break
            token = r.next_page_token
        return {kind for kind, c in self.clues.items() if c is not None and c.id in ids}

    def listed_items(self, u):
        """The shared items ListItems shows, by kind."""
        ids, token = set(), ""
        while True:
            r = u.rect.ListItems(rp.ListItemsRequest(page_size=500, page_token=token), timeout=20)
            ids |= {x.id for x in r.items}
            if not r.next_page_token:
                break
            token = r.next_page_token
        return {k for k, it in self.items.items() if it is not None and it.id in ids}

    def streamed(self, p):
        """The shared clues whose events WatchEvents replays to p, by kind: watch from before the
        first shared clue until a marker event p sees, made after every other event."""
        w = self.w
        code_of = {u.id: code for code, u in w.units.items()}
        if p.staff:
            marker = self.submit(w.units[code_of[p.unit]].member)
        else:
            marker = self.submit(w.G2.member)
        mseq = max(e.seq for e in w.auditor.clue.GetHistory(pb.GetHistoryRequest(clue_id=marker.id),
                                                             timeout=20).events)
        ids = {c.id: kind for kind, c in self.clues.items() if c is not None}
        seen = set()
        stream = p.user.audit.WatchEvents(au.WatchEventsRequest(after_seq=self.first_seq - 1), timeout=60)
        try:
            for e in stream:
                if e.subject_type == "clue" and e.subject_id in ids:
                    seen.add(ids[e.subject_id])
                if e.seq >= mseq:
                    break
        finally:
            stream.cancel()
        return seen

    def trail_and_token_cells(self, p):
        """Calls about no clue: the whole trail's RPCs, and the caller's own tokens."""
        u = p.user
        want = expect_whole_trail(p)
        for rpc, fn in (
                ("GetCheckpoint", lambda: u.audit.GetCheckpoint(au.GetCheckpointRequest(), timeout=20)),
                ("GetInclusionProof", lambda: u.audit.GetInclusionProof(
                    au.GetInclusionProofRequest(seq=self.first_seq), timeout=20)),
                ("GetConsistencyProof", lambda: u.audit.GetConsistencyProof(
                    au.GetConsistencyProofRequest(old_size=1), timeout=20)),
                ("ExportAuditEvents", lambda: u.audit.ExportAuditEvents(
                    au.ExportAuditEventsRequest(page_size=1), timeout=20)),
                ("VerifyAuditChain", lambda: u.audit.VerifyAuditChain(au.VerifyAuditChainRequest(), timeout=60))):
            self.check(rpc, p, "the whole trail", want, fn)
        want = expect_own_tokens(p)
        code, resp, msg = self.call(lambda: u.tokens.ListMyTokens(tk.ListMyTokensRequest(include_revoked=True),
                                                                 timeout=20))
        got = code if code != OK else ("own" if resp.tokens and all(t.user_id == p.user.id for t in resp.tokens)
                                       and sum(t.current for t in resp.tokens) == 1 else "other")
        self.tally("ListMyTokens", p, "own tokens", want if want != OK else "own", got, msg)
        # GetCaller: the caller's own identity, as the server authenticated it, and nobody else's.
        code, resp, msg = self.call(lambda: u.tokens.GetCaller(tk.GetCallerRequest(), timeout=20))
        got = code if code != OK else (
            "self" if (resp.user_id, resp.unit_id, cm.Role.Name(resp.role), resp.enrollment)
            == (p.user.id, p.unit, "ROLE_" + p.role, p.enrollment) else "other")
        self.tally("GetCaller", p, "own identity", want if want != OK else "self", got, msg)
        issued = self.check("IssueMyToken", p, "own tokens", want,
                            lambda: u.tokens.IssueMyToken(tk.IssueMyTokenRequest(note="矩阵"), timeout=20))
        if issued is not None:
            self.check("RevokeMyToken(own)", p, "own tokens", expect_revoke_token(p, True),
                       lambda: u.tokens.RevokeMyToken(tk.RevokeMyTokenRequest(token_id=issued.token_id), timeout=20))
        other = self.foreign_token if p.user.id != self.foreign_token_user else self.foreign_token_2
        for name, tid in (("another user's token", other), ("missing token", MISSING)):
            self.check(f"RevokeMyToken({name})", p, name, expect_revoke_token(p, False),
                       lambda: u.tokens.RevokeMyToken(tk.RevokeMyTokenRequest(token_id=tid), timeout=20))

    def subject(self, kind, fresh):
        """The shared clue of a kind, or a fresh one for a call the rules allow."""
        if fresh and kind != "missing":
            return self.make(kind)
        return self.clues[kind]

    def run(self):
        w = self.w
        # The tree follows the log's tail: wait until it holds the shared objects' first event.
        harness.wait_for(lambda: self.call(lambda: w.auditor.audit.GetInclusionProof(
            au.GetInclusionProofRequest(seq=self.first_seq), timeout=20))[0] == OK, timeout=120,
            what="the audit tree to hold the first shared event")
        kinds = list(self.clues)
        for p in self.principals:
            u = p.user
            # One visibility: what a list shows and what a stream replays, as single reads.
            want = expect_visible_set(p, self.clues)
            code, got, msg = self.call(lambda: self.listed(u))
            self.tally("ListClues", p, "every clue", want if p.role != "ADMIN" else set(),
                       code if code != OK else got, msg)
            code, got, msg = self.call(lambda: self.streamed(p))
            want_stream = set(k for k, c in self.clues.items() if c is not None) if p.role == "ADMIN" else want
            self.tally("WatchEvents(replay)", p, "every clue", want_stream, code if code != OK else got, msg)
            self.trail_and_token_cells(p)
            for kind in kinds:
                c = self.clues[kind]
                cid = c.id if c else MISSING
                name = kind
                resp = self.check("GetClue", p, name, expect_read(p, c),
                                  lambda: u.clue.GetClue(pb.GetClueRequest(clue_id=cid), timeout=20))
                if resp is not None:
                    self.tally("GetClue(reporter shown)", p, name, expect_reporter(p, c), resp.HasField("reporter"))
                    self.tally("GetClue(reporter_on_file)", p, name, c.reporter, resp.reporter_on_file)
                # Whoever sees a clue reads all of its events and notes, as the AUDITOR does: the
                # query reads them only under the caller's sight in SQL, which must agree.
                resp = self.check("GetHistory", p, name, expect_read(p, c),
                                  lambda: u.clue.GetHistory(pb.GetHistoryRequest(clue_id=cid), timeout=20))
                if resp is not None:
                    self.tally("GetHistory(events shown)", p, name, [e.seq for e in self.w.auditor.clue.GetHistory(
                        pb.GetHistoryRequest(clue_id=cid), timeout=20).events], [e.seq for e in resp.events])
                resp = self.check("ListNotes", p, name, expect_read(p, c),
                                  lambda: u.clue.ListNotes(pb.ListNotesRequest(clue_id=cid), timeout=20))
                if resp is not None:
                    self.tally("ListNotes(notes shown)", p, name, [x.id for x in self.w.auditor.clue.ListNotes(
                        pb.ListNotesRequest(clue_id=cid), timeout=20).notes], [x.id for x in resp.notes])
                self.check("AddNote", p, name, expect_note(p, c),
                           lambda: u.clue.AddNote(pb.AddNoteRequest(clue_id=cid, kind=pb.NOTE_KIND_OTHER, text="矩阵",
                                                                    request_id=new_request_id()), timeout=20))
                want = expect_listed_proposals(p, c.props if c else [])
                code, resp, msg = self.call(lambda: u.clue.ListProposals(pb.ListProposalsRequest(
                    clue_id=cid, include_decided=True), timeout=20))
                got = code if code != OK else {x.id for x in resp.proposals}
                self.tally("ListProposals(clue_id)", p, name, want, got, msg)
                want = expect_audit(p, c)
                code, resp, msg = self.call(lambda: u.audit.ListAuditEvents(au.ListAuditEventsRequest(
                    subject_type="clue", subject_id=cid), timeout=20))
                got = code if code != OK else ("events" if len(resp.events) else "none")
                self.tally("ListAuditEvents(subject)", p, name, want, got, msg)
                # Moves, handover, extension: a stale version, then the clue's own version.
                for target in (PRE, FIL, CLO, TRA):
                    for stale in (True, False):
                        want = expect_move(p, c, target, stale)
                        x = self.subject(kind, want == OK)
                        xid, ver = (x.id, x.version) if x else (MISSING, 1)
                        resp = self.check(f"RequestTransition({target}{', stale' if stale else ''})", p, name, want,
                                          lambda: u.clue.RequestTransition(pb.RequestTransitionRequest(
                                              clue_id=xid, expected_version=ver + 5 if stale else ver,
                                              target=STATE[target], reason="r",
                                              details=pb.TransitionDetails(
                                                  disposal=pb.DISPOSAL_SHELVED, finding="f", sanction_kind="警告",
                                                  persons_disciplined=1, receiving_organ="检察院"),
                                              request_id=new_request_id()), timeout=20))
                        if want == OK and resp is not None and MOVES[(x.state, target)]:
                            self.cells += 1
                            if resp.pending and resp.proposal.reviewer_unit_id == reviewer_of(x):
                                self.passed += 1
                            else:
                                self.failures.append(f"co-review of {name} to {target}: reviewer "
                                                     f"{resp.proposal.reviewer_unit_id}, want {reviewer_of(x)}")
                for stale in (True, False):
                    want = expect_handover(p, c, stale)
                    x = self.subject(kind, want == OK)
                    xid, ver = (x.id, x.version) if x else (MISSING, 1)
                    self.check(f"HandOver{'(stale)' if stale else ''}", p, name, want,
                               lambda: u.clue.HandOver(pb.HandOverRequest(
                                   clue_id=xid, expected_version=ver + 5 if stale else ver, to_unit_id=w.G2.id,
                                   reason="移交", request_id=new_request_id()), timeout=20))
                    want = expect_extend(p, c, stale)
                    x = self.subject(kind, want == OK)
                    xid, ver = (x.id, x.version) if x else (MISSING, 1)
                    self.check(f"ExtendDeadline{'(stale)' if stale else ''}", p, name, want,
                               lambda: u.clue.ExtendDeadline(pb.ExtendDeadlineRequest(
                                   clue_id=xid, expected_version=ver + 5 if stale else ver, days=10, reason="延期",
                                   request_id=new_request_id()), timeout=20))
                # Joint cases and this clue.
                for k in (self.K, self.K2):
                    want = expect_add_clue(p, k, c)
                    x = self.subject(kind, want == OK)
                    xid = x.id if x else MISSING
                    self.check(f"AddClueToCase({k.name})", p, name, want,
                               lambda: u.case.AddClueToCase(cs.AddClueToCaseRequest(case_id=k.id, clue_id=xid),
                                                            timeout=20))
                    want = expect_remove_clue(p, k, c)
                    x = self.subject(kind, want == OK)
                    xid = x.id if x else MISSING
                    self.check(f"RemoveClueFromCase({k.name})", p, name, want,
                               lambda: u.case.RemoveClueFromCase(cs.RemoveClueFromCaseRequest(
                                   case_id=k.id, clue_id=xid, reason="收回"), timeout=20))
                want = expect_create_item(p, c)
                x = self.subject(kind, want == OK)
                xid = x.id if x else MISSING
                self.check("CreateItem(source clue)", p, name, want,
                           lambda: u.rect.CreateItem(rp.CreateItemRequest(
                               host_unit="市发展改革委", description="d", category="c",
                               source=rp.RECTIFICATION_SOURCE_CLUE, source_clue_id=xid,
                               deadline_ms=int(time.time() * 1000) + 86400000, request_id=new_request_id()),
                               timeout=20))
                want = expect_create_case(p, c)
                x = self.subject(kind, want == OK)
                xid = x.id if x else MISSING
                self.check("CreateJointCase(clue_ids)", p, name, want,
                           lambda: u.case.CreateJointCase(cs.CreateJointCaseRequest(
                               title="矩阵案件", clue_ids=[xid], request_id=new_request_id()), timeout=20))
                # Issue 14: handlers and recusals. The targets: X1's member (assign), G3's member
                # (unassign: the handler of "assigned"), R1's member (recusal).
                tgt = w.X1.member.id
                want = expect_assign(p, c, tgt) if c else refusal(p, "clue", False)
                x = self.subject(kind, want == OK)
                xid = x.id if x else MISSING
                self.check("AssignHandler", p, name, want,
                           lambda: u.clue.AssignHandler(pb.AssignHandlerRequest(
                               clue_id=xid, user_id=tgt, request_id=new_request_id()), timeout=20))
                tgt = self.handler.id
                want = expect_unassign(p, c, tgt) if c else refusal(p, "clue", False)
                x = self.subject(kind, want == OK)
                xid = x.id if x else MISSING
                self.check("UnassignHandler", p, name, want,
                           lambda: u.clue.UnassignHandler(pb.UnassignHandlerRequest(
                               clue_id=xid, user_id=tgt, request_id=new_request_id()), timeout=20))
                tgt = w.R1.member.id
                want = expect_recuse(p, c, tgt, w.R1.id) if c else refusal(p, "clue", False)
                x = self.subject(kind, want == OK)
                xid = x.id if x else MISSING
                self.check("RecordRecusal(R1.member)", p, name, want,
                           lambda: u.clue.RecordRecusal(pb.RecordRecusalRequest(
                               clue_id=xid, user_id=tgt, reason="矩阵", request_id=new_request_id()), timeout=20))
                want = expect_list_recusals(p, c, self.user_unit)
                code, resp, msg = self.call(lambda: u.clue.ListRecusals(pb.ListRecusalsRequest(clue_id=cid),
                                                                        timeout=20))
                got = code if code != OK else {x.user_id for x in resp.recusals}
                self.tally("ListRecusals(clue_id)", p, name, want, got, msg)
                want = expect_list_assignments(p, c, self.handler_unit)
                code, resp, msg = self.call(lambda: u.clue.ListAssignments(pb.ListAssignmentsRequest(clue_id=cid),
                                                                           timeout=20))
                got = code if code != OK else {x.handler.user_id for x in resp.assignments}
                self.tally("ListAssignments(clue_id)", p, name, want, got, msg)
            # Rectification items: one visibility for reads and lists, then every move.
            want = {k for k, it in self.items.items() if it is not None and sees_item(p, it)} if p.active \
                else Code.UNAUTHENTICATED
            code, got, msg = self.call(lambda: self.listed_items(u))
            self.tally("ListItems", p, "every item", want, code if code != OK else got, msg)
            item_rpcs = {PLN: (lambda x: x.rect.RecordPlan, rp.RecordPlanRequest, {"plan": "方案"}),
                         SUB: (lambda x: x.rect.Submit, rp.SubmitRequest, {"evidence": "材料"}),
                         VER: (lambda x: x.rect.Verify, rp.VerifyRequest, {}),
                         REO: (lambda x: x.rect.Reopen, rp.ReopenRequest, {"reason": "不足"})}
            for ik, it in self.items.items():
                iid = it.id if it else MISSING
                resp = self.check("GetItem", p, "item " + ik, expect_item_read(p, it),
                                  lambda: u.rect.GetItem(rp.GetItemRequest(item_id=iid), timeout=20))
                if resp is not None:  # its texts, read under the caller's sight in SQL, as the AUDITOR's
                    self.tally("GetItem(texts shown)", p, "item " + ik,
                               w.auditor.rect.GetItem(rp.GetItemRequest(item_id=iid), timeout=20), resp)
                for target, (fn, reqtype, extra) in item_rpcs.items():
                    for stale in (True, False):
                        want = expect_item_move(p, it, target, stale)
                        x = self.make_item(ik) if want == OK else it
                        xid, ver = (x.id, x.version) if x else (MISSING, 1)
                        self.check(f"{reqtype.__name__[:-7]}{'(stale)' if stale else ''}", p, "item " + ik, want,
                                   lambda: fn(u)(reqtype(item_id=xid, expected_version=ver + 5 if stale else ver,
                                                         request_id=new_request_id(), **extra), timeout=20))
            # The cases themselves, and a missing one.
            for k in (self.K, self.K2, None):
                kid, name = (k.id, k.name) if k else (MISSING, "missing case")
                resp = self.check("GetJointCase", p, name, expect_get_case(p, k),
                                  lambda: u.case.GetJointCase(cs.GetJointCaseRequest(case_id=kid), timeout=20))
                if resp is not None:
                    # Every member clue, as the AUDITOR sees them, but those p is recused from.
                    recused = {x.clue_id for x in w.auditor.clue.ListRecusals(pb.ListRecusalsRequest(
                        user_id=p.user.id), timeout=20).recusals}
                    self.tally("GetJointCase(clues shown)", p, name,
                               [x.clue_id for x in w.auditor.case.GetJointCase(cs.GetJointCaseRequest(
                                   case_id=kid), timeout=20).clues if x.clue_id not in recused],
                               [x.clue_id for x in resp.clues])
                self.check("AddParticipant(X1, already in)", p, name,
                           expect_participant(p, k, Code.ALREADY_EXISTS) if k else refusal(p, "case", False),
                           lambda: u.case.AddParticipant(cs.AddParticipantRequest(case_id=kid, unit_id=w.X1.id),
                                                         timeout=20))
                self.check("RemoveParticipant(G3, not in)", p, name,
                           expect_participant(p, k, Code.FAILED_PRECONDITION) if k else refusal(p, "case", False),
                           lambda: u.case.RemoveParticipant(cs.RemoveParticipantRequest(
                               case_id=kid, unit_id=w.G3.id, reason="r"), timeout=20))
            # Proposals.
            for pk, prop in self.proposals.items():
                want = expect_review(p, prop)
                if want == OK:
                    prop = self.pending_proposal(self.make(prop.clue.kind))
                pid = prop.id if prop else MISSING
                self.check("ReviewProposal(reject)", p, pk, want,
                           lambda: u.clue.ReviewProposal(pb.ReviewProposalRequest(
                               proposal_id=pid, approve=False, comment="c", request_id=new_request_id()), timeout=20))

    def close(self):
        self.w.close()


def main():
    pg = harness.Postgres.get()
    # With a signing key, so that the tree's checkpoints and proofs exist to be refused.
    tmp = tempfile.mkdtemp(prefix="clued-matrix-")
    key = os.path.join(tmp, "audit.key")
    subprocess.run([harness.CLUED, "keygen", "--name", "clued.test/matrix", "--out", key], check=True,
                   capture_output=True)
    srv = harness.Clued(pg.url(pg.new_database("matrix")),
                        args=["--audit-signing-key", key, "--checkpoint-interval", "300ms"]).start()
    m = None
    try:
        m = Matrix(srv)
        m.run()
        after = m.state()
        m.cells += 1
        if after == m.snapshot:
            m.passed += 1
        else:
            for key in m.snapshot:
                if after.get(key) != m.snapshot[key]:
                    m.failures.append(f"shared object {key} changed: {m.snapshot[key]} -> {after.get(key)}")
        for f in m.failures:
            print("MISMATCH", f, flush=True)
        print(f"authorization matrix: {m.cells} cells, {m.passed} passed, "
              f"{len(m.principals)} principals, {len(m.clues)} clues, 3 cases, {len(m.proposals)} proposals, "
              f"{len(m.items)} rectification items", flush=True)
    finally:
        if m is not None:
            m.close()
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if m is not None and not m.failures else 1)


if __name__ == "__main__":
    main()
