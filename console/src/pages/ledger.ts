// The rectification ledger (督促整改台账, docs/LEDGER.md): the figures per host unit, over every
// item the caller sees, read page after page (1,000 host units a page, up to 20 pages), with
// the total over every host unit, which the server counts whether or not the lines are all
// read; and the items themselves, newest first, 500 at a time with "show more" for the next
// page (the ledger grows for years; the total already counts every item).
import { h, clear, prose } from "../dom";
import { t, tName, fmtDeadline } from "../i18n";
import { ledger } from "../api";
import { RectificationState, RectificationSource, type HostUnitLedger, type RectificationItem } from "../../gen/clue/v1/rectification_pb";
import { section, table, loading, errorBox, partialNote } from "../ui";
import { allPages } from "../paging";

const PAGE = 500;
const HOST_PAGE = 1000; // host units a GetLedgerStats page holds at most

function itemRow(it: RectificationItem): HTMLElement {
  const cells = [
    String(it.id),
    it.hostUnit,
    it.category,
    prose(it.description.length > 80 ? `${it.description.slice(0, 80)}…` : it.description),
    tName(`RECTIFICATION_STATE_${RectificationState[it.state]}`),
    it.overdue ? h("span", { class: "badge badge-overdue" }, `${fmtDeadline(it.deadlineMs)} · ${t("overdue")}`) : fmtDeadline(it.deadlineMs),
    it.source === RectificationSource.CLUE
      ? h("a", { href: `#/clue/${it.sourceClueId}` }, `${t("navClue")} #${it.sourceClueId}`)
      : it.source === RectificationSource.CASE
        ? h("a", { href: `#/cases/${it.sourceCaseId}` }, `${t("navCases")} #${it.sourceCaseId}`)
        : RectificationSource[it.source],
  ];
  return h("tr", { class: it.overdue ? "row-overdue" : null }, cells.map((c) => h("td", null, c)));
}

export async function ledgerPage(main: HTMLElement, _arg: string | undefined, signal: AbortSignal): Promise<void> {
  main.append(h("h2", { class: "page-title" }, t("ledgerTitle")));
  const wait = loading();
  main.append(wait);
  let total: HostUnitLedger | undefined; // the last page's: every page carries it
  const [items, lines] = await Promise.all([
    ledger.listItems({ pageSize: PAGE }, { signal }),
    allPages(async (pageToken) => {
      const r = await ledger.getLedgerStats({ pageSize: HOST_PAGE, pageToken }, { signal });
      total = r.total;
      return { rows: r.hostUnits, next: r.nextPageToken };
    }),
  ]);
  wait.remove();
  const sum = { found: total?.found ?? 0n, rectified: total?.rectified ?? 0n, overdue: total?.overdue ?? 0n, cleared: total?.cleared ?? false };
  main.append(
    section(
      t("ledgerHostUnits"),
      h("p", { role: "status", "data-testid": "ledger-total" }, t("ledgerTotal", sum.found, sum.rectified, sum.overdue, sum.cleared ? t("ledgerCleared") : t("ledgerNotCleared"))),
      partialNote(lines),
      table(
        t("ledgerHostUnits"),
        [t("colHostUnit"), t("colFound"), t("colRectified"), t("colOverdue"), t("colCleared")],
        lines.rows.map((u) => [u.hostUnit, String(u.found), String(u.rectified), u.overdue ? h("span", { class: "badge badge-overdue" }, String(u.overdue)) : "0", u.cleared ? t("yes") : t("no")]),
        { empty: t("ledgerEmpty") },
      ),
    ),
  );
  if (items.items.length === 0) {
    main.append(section(t("ledgerItems"), h("p", { class: "muted" }, t("ledgerEmpty"))));
    return;
  }

  const cols = ["#", t("colHostUnit"), t("colCategory"), t("colDescription"), t("colState"), t("colDeadline"), t("clueSource")];
  const body = h("tbody", null, items.items.map(itemRow));
  const count = h("p", { class: "muted", role: "status", "data-testid": "ledger-count" });
  const status = h("div", { "aria-live": "polite" });
  const more = h("button", { type: "button", class: "btn", "data-testid": "ledger-more" }, t("ledgerMore"));
  const moreBox = h("p", null, more); // hidden as a whole: .btn's display would show a hidden button
  let shown = items.items.length;
  let next = items.nextPageToken;
  const asked = new Set<string>([""]); // a token sent before would only show those rows again
  const sync = () => {
    const loop = next !== "" && asked.has(next);
    count.textContent = !next ? t("ledgerAll", shown) : loop ? t("listLoop", shown) : t("ledgerShown", shown);
    moreBox.hidden = !next || loop;
  };
  more.addEventListener("click", async () => {
    more.disabled = true;
    clear(status);
    try {
      asked.add(next);
      const r = await ledger.listItems({ pageSize: PAGE, pageToken: next }, { signal });
      for (const it of r.items) body.append(itemRow(it));
      shown += r.items.length;
      next = r.nextPageToken;
    } catch (e) {
      asked.delete(next); // the same page may be asked for again
      status.append(errorBox(e));
    }
    more.disabled = false;
    sync();
  });
  sync();
  main.append(
    section(
      t("ledgerItems"),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          null,
          h("caption", { class: "sr-only" }, t("ledgerItems")),
          h("thead", null, h("tr", null, cols.map((c) => h("th", { scope: "col" }, c)))),
          body,
        ),
      ),
      count,
      moreBox,
      status,
    ),
  );
}
