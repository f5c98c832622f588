// The rectification ledger (督促整改台账, docs/LEDGER.md): the items the caller sees and the
// figures per host unit.
import { h } from "../dom";
import { t, tName, fmtDate } from "../i18n";
import { ledger } from "../api";
import { RectificationState, RectificationSource } from "../../gen/clue/v1/rectification_pb";
import { section, table, loading } from "../ui";

export async function ledgerPage(main: HTMLElement, _arg: string | undefined, signal: AbortSignal): Promise<void> {
  main.append(h("h2", { class: "page-title" }, t("ledgerTitle")));
  const wait = loading();
  main.append(wait);
  const [items, st] = await Promise.all([ledger.listItems({ pageSize: 500 }, { signal }), ledger.getLedgerStats({}, { signal })]);
  wait.remove();
  main.append(
    section(
      t("ledgerHostUnits"),
      table(
        t("ledgerHostUnits"),
        [t("colHostUnit"), t("colFound"), t("colRectified"), t("colOverdue"), t("colCleared")],
        st.hostUnits.map((u) => [u.hostUnit, String(u.found), String(u.rectified), u.overdue ? h("span", { class: "badge badge-overdue" }, String(u.overdue)) : "0", u.cleared ? t("yes") : t("no")]),
        { empty: t("ledgerEmpty") },
      ),
    ),
    section(
      t("ledgerItems"),
      table(
        t("ledgerItems"),
        ["#", t("colHostUnit"), t("colCategory"), t("colDescription"), t("colState"), t("colDeadline"), t("clueSource")],
        items.items.map((it) => [
          String(it.id),
          it.hostUnit,
          it.category,
          it.description.length > 80 ? `${it.description.slice(0, 80)}…` : it.description,
          tName(`RECTIFICATION_STATE_${RectificationState[it.state]}`),
          it.overdue ? h("span", { class: "badge badge-overdue" }, `${fmtDate(it.deadlineMs)} · ${t("overdue")}`) : fmtDate(it.deadlineMs),
          it.source === RectificationSource.CLUE
            ? h("a", { href: `#/clue/${it.sourceClueId}` }, `${t("navClue")} #${it.sourceClueId}`)
            : it.source === RectificationSource.CASE
              ? h("a", { href: `#/cases/${it.sourceCaseId}` }, `${t("navCases")} #${it.sourceCaseId}`)
              : RectificationSource[it.source],
        ]),
        { empty: t("ledgerEmpty"), rowClass: (i) => (items.items[i].overdue ? "row-overdue" : "") },
      ),
    ),
  );
}
