// Pieces the pages share: messages, error display, tables, deadline badges.
import { h, uid, type Child } from "./dom";
import { t, fmtDate } from "./i18n";
import { Code, ConnectError, errorCode } from "./api";
import type { Gathered } from "./paging";

/** What a failed call means to a person; ABORTED is always "changed meanwhile, reload". The
 * server's message is a child of its own, isolated from the words around it (dom.ts). */
export function errorText(e: unknown): Child[] {
  switch (errorCode(e)) {
    case Code.Aborted:
      return [t("changedMeanwhile")];
    case Code.NotFound:
      return [t("notFound")];
    case Code.PermissionDenied:
      return [t("denied"), " ", (e as ConnectError).rawMessage];
    case Code.Unauthenticated:
      return [t("unauthenticated")];
    case Code.Unavailable:
      return [t("unavailable")];
    default:
      return [`${t("error")}: `, e instanceof ConnectError ? e.rawMessage : String(e)];
  }
}

/** An alert for a failed call; with a reload button when the data changed meanwhile. */
export function errorBox(e: unknown, reload?: () => void): HTMLElement {
  const aborted = errorCode(e) === Code.Aborted;
  return h(
    "div",
    { class: aborted ? "alert alert-warn" : "alert alert-error", role: "alert" },
    errorText(e),
    aborted && reload ? [" ", h("button", { type: "button", class: "btn", onclick: () => reload() }, t("reload"))] : null,
  );
}

export function okBox(text: Child): HTMLElement {
  return h("div", { class: "alert alert-ok", role: "status" }, text);
}

export function loading(): HTMLElement {
  return h("p", { class: "muted", role: "status" }, t("loading"));
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
  if (overdue) return h("span", { class: "badge badge-overdue" }, `${fmtDate(deadlineMs)} · ${t("overdue")} · ${t("daysOver", -daysLeft)}`);
  if (daysLeft <= SOON_DAYS) return h("span", { class: "badge badge-soon" }, `${fmtDate(deadlineMs)} · ${t("dueSoon")} · ${t("daysLeft", daysLeft)}`);
  return h("span", { class: "badge" }, `${fmtDate(deadlineMs)} · ${t("daysLeft", daysLeft)}`);
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
