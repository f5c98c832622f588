// Pieces the pages share: messages, error display, tables, deadline badges.
import { h, uid, field, prose, type Child } from "./dom";
import { t, tName, fmtDeadline } from "./i18n";
import { Disposal, type TransitionDetails } from "../gen/clue/v1/clue_pb";
import { Code, ConnectError, errorCode } from "./api";
import type { Gathered } from "./paging";

/** The call never reached the server or its answer never came back: the browser's fetch
 * failed (server down, network gone), which connect-web reports as UNKNOWN with the
 * browser's own words ("Failed to fetch"), or the server said UNAVAILABLE. */
export function unreachable(e: unknown): boolean {
  if (!(e instanceof ConnectError)) return e instanceof TypeError;
  return e.code === Code.Unavailable || (e.code === Code.Unknown && e.cause instanceof TypeError);
}

/** What a failed call means to a person; ABORTED is always "changed meanwhile, reload". The
 * server's message is a child of its own, isolated from the words around it (dom.ts). */
export function errorText(e: unknown): Child[] {
  if (unreachable(e)) return [t("unavailable")];
  switch (errorCode(e)) {
    case Code.Aborted:
      return [t("changedMeanwhile")];
    case Code.NotFound:
      return [t("notFound")];
    case Code.PermissionDenied:
      return [t("denied"), " ", (e as ConnectError).rawMessage];
    case Code.Unauthenticated:
      return [t("unauthenticated")];
    default:
      return [`${t("error")}: `, e instanceof ConnectError ? e.rawMessage : String(e)];
  }
}

/** An alert for a failed call; with a reload button when the data changed meanwhile, and
 * with a retry button when retry is given (a page that could not load). */
export function errorBox(e: unknown, reload?: () => void, retry?: () => void): HTMLElement {
  const aborted = errorCode(e) === Code.Aborted;
  return h(
    "div",
    { class: aborted ? "alert alert-warn" : "alert alert-error", role: "alert", "data-testid": "error" },
    errorText(e),
    aborted && reload ? [" ", h("button", { type: "button", class: "btn", onclick: () => reload() }, t("reload"))] : null,
    !aborted && retry ? [" ", h("button", { type: "button", class: "btn", onclick: () => retry() }, t("retry"))] : null,
  );
}

export function okBox(text: Child): HTMLElement {
  return h("div", { class: "alert alert-ok", role: "status" }, text);
}

/** The server's limits of free texts, in UTF-8 bytes (server/domain/validate.h). */
export const SUMMARY_MAX_BYTES = 20000;
export const NOTE_MAX_BYTES = 65536;
export const REASON_MAX_BYTES = 4096; // reasons, review comments, findings

const utf8 = new TextEncoder();

/** How the server counts a free text against its limit: UTF-8 bytes of the text without the
 * white space around it (README, "Texts are checked..."). */
export function utf8Bytes(s: string): number {
  return utf8.encode(s.trim()).length;
}

/**
 * A free-text field that the server limits in UTF-8 bytes (domain/validate.h), not in
 * characters as maxlength counts: a live count under it, and past the limit a message in the
 * count and as the control's validity, so the form is not sent (a Chinese character is 3 bytes).
 */
export function bytesField(label: string, control: HTMLInputElement | HTMLTextAreaElement, max: number): HTMLElement {
  control.maxLength = max; // never fewer characters than bytes: a stop only for what is surely too long
  const f = field(label, control, " ");
  const hint = f.querySelector(".hint")!;
  hint.setAttribute("data-testid", "bytes");
  const sync = () => {
    const n = utf8Bytes(control.value);
    const over = n > max ? t("bytesOver", n, max, Math.floor(max / 3)) : "";
    hint.textContent = over || t("bytesUsed", n, max);
    hint.classList.toggle("hint-over", over !== "");
    control.setCustomValidity(over);
  };
  control.addEventListener("input", sync);
  sync();
  return f;
}

/** "Loading…": a page that fails takes every one of these away with it (main.ts). */
export function loading(): HTMLElement {
  return h("p", { class: "muted", role: "status", "data-loading": "" }, t("loading"));
}

/** A table with a caption, column headers and rows; the empty text when there are none. */
export function table(caption: string, cols: string[], rows: Child[][], opts: { rowClass?: (i: number) => string; empty?: string } = {}): HTMLElement {
  if (rows.length === 0) return h("p", { class: "muted" }, opts.empty ?? t("queueEmpty"));
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      null,
      h("caption", { class: "sr-only" }, caption),
      h("thead", null, h("tr", null, cols.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", null, rows.map((r, i) => h("tr", { class: opts.rowClass?.(i) ?? null }, r.map((c) => h("td", null, c))))),
    ),
  );
}

const SOON_DAYS = 7;

/** The stage deadline: red when overdue, amber within a week; words as well as colour. */
export function deadlineBadge(deadlineMs: bigint, daysLeft: number, overdue: boolean): HTMLElement {
  if (!deadlineMs) return h("span", { class: "muted" }, "—");
  if (overdue) return h("span", { class: "badge badge-overdue" }, `${fmtDeadline(deadlineMs)} · ${t("overdue")} · ${t("daysOver", -daysLeft)}`);
  if (daysLeft <= SOON_DAYS) return h("span", { class: "badge badge-soon" }, `${fmtDeadline(deadlineMs)} · ${t("dueSoon")} · ${t("daysLeft", daysLeft)}`);
  return h("span", { class: "badge" }, `${fmtDeadline(deadlineMs)} · ${t("daysLeft", daysLeft)}`);
}

export function section(title: Child, ...children: Child[]): HTMLElement {
  const id = uid("sec");
  return h("section", { "aria-labelledby": id, class: "card" }, h("h2", { id }, title), ...children);
}

/** A person and their unit's code, "张三 (G1)", each a child of its own. */
export function person(name: string, unitCode: string): Child[] {
  return [name, " (", unitCode, ")"];
}

/** What the page says above a list read short (allPages stopped early); null for a whole one. */
export function partialNote<T>(g: Gathered<T>): HTMLElement | null {
  if (g.complete) return null;
  return h(
    "p",
    { class: "alert alert-warn", role: "status", "data-testid": "list-partial" },
    g.cut === "loop" ? t("listLoop", g.rows.length) : t("listCapped", g.rows.length, g.pages),
  );
}

/** The outcome a move or a proposal carries (disposal, finding, sanction, organ), as the
 * reviewer must see what it approves; null when it carries none. */
export function outcome(d: TransitionDetails | undefined): HTMLElement | null {
  if (!d) return null;
  const parts: Child[][] = [];
  if (d.disposal !== Disposal.UNSPECIFIED) parts.push([`${t("moveDisposal")}: `, tName(`DISPOSAL_${Disposal[d.disposal]}`)]);
  if (d.finding) parts.push([`${t("moveFinding")}: `, prose(d.finding)]);
  if (d.sanctionKind) parts.push([`${t("moveSanction")}: `, prose(d.sanctionKind)]);
  if (d.personsDisciplined) parts.push([`${t("movePersons")}: `, String(d.personsDisciplined)]);
  if (d.receivingOrgan) parts.push([`${t("moveOrgan")}: `, prose(d.receivingOrgan)]);
  if (parts.length === 0) return null;
  return h("div", { class: "outcome", "data-testid": "outcome" }, ...parts.flatMap((x, i) => (i ? [" · ", ...x] : x)));
}
