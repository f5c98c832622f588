// The server: gRPC-Web to the origin that served the page (clued serves both), with the
// signed-in user's bearer token on every call. The token lives in sessionStorage only: never
// in a URL, never logged.
import { createClient, ConnectError, Code, type Interceptor, type Client } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { ClueService } from "../gen/clue/v1/clue_pb";
import { CaseService } from "../gen/clue/v1/case_pb";
import { StatsService } from "../gen/clue/v1/stats_pb";
import { AuditService } from "../gen/clue/v1/audit_pb";
import { RectificationService } from "../gen/clue/v1/rectification_pb";
import { TokenService, type GetCallerResponse } from "../gen/clue/v1/token_pb";
import { Role, UnitKind, ClueState } from "../gen/clue/v1/common_pb";

const TOKEN_KEY = "clued.token";

export function storedToken(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function storeToken(token: string): void {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function forgetToken(): void {
  sessionStorage.removeItem(TOKEN_KEY);
}

const auth: Interceptor = (next) => async (req) => {
  const token = storedToken();
  if (token) req.header.set("authorization", `Bearer ${token}`);
  return next(req);
};

const transport = createGrpcWebTransport({
  baseUrl: location.origin,
  useBinaryFormat: true,
  interceptors: [auth],
});

export const clues: Client<typeof ClueService> = createClient(ClueService, transport);
export const cases: Client<typeof CaseService> = createClient(CaseService, transport);
export const stats: Client<typeof StatsService> = createClient(StatsService, transport);
export const audit: Client<typeof AuditService> = createClient(AuditService, transport);
export const ledger: Client<typeof RectificationService> = createClient(RectificationService, transport);
export const tokens: Client<typeof TokenService> = createClient(TokenService, transport);

/** Who is signed in, as the server answered GetCaller; null before sign-in. */
export let me: GetCallerResponse | null = null;

export function setMe(m: GetCallerResponse | null): void {
  me = m;
}

export const isLeader = (): boolean => me?.role === Role.LEADER;
export const isAuditor = (): boolean => me?.role === Role.AUDITOR;
export const isAdmin = (): boolean => me?.role === Role.ADMIN;
/** MEMBERs and LEADERs of a GROUP, ROOM or REGION: those who work on clues. */
export const isStaff = (): boolean => me?.role === Role.LEADER || me?.role === Role.MEMBER;
export const seesAllAudit = (): boolean => isAuditor() || isAdmin();

export function roleName(r: Role): string {
  return `ROLE_${Role[r]}`;
}
export function unitKindName(k: UnitKind): string {
  return `UNIT_KIND_${UnitKind[k]}`;
}
export function stateName(s: ClueState): string {
  return ClueState[s] ?? "UNSPECIFIED";
}

/** A UUID for request_id (crypto.randomUUID needs a secure context; this does not). */
export function requestId(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export function errorCode(e: unknown): Code | null {
  return e instanceof ConnectError ? e.code : null;
}

export { Code, ConnectError };
