// Joint cases (室组地联合办案): the lead room, the participants, the member clues and their states;
// the list is every case the caller sees, read page by page.
import { h, append, prose, joined } from "../dom";
import { t, tName, fmtTime, fmtDeadline } from "../i18n";
import { cases, stateName } from "../api";
import type { JointCase } from "../../gen/clue/v1/case_pb";
import { section, table, loading, partialNote } from "../ui";
import { allPages } from "../paging";

function caseCard(jc: JointCase): HTMLElement {
  const participants = jc.participantUnitIds.map((id, i) => jc.participantUnitCodes[i] || `#${id}`);
  return section(
    [`#${jc.id}`, " ", jc.title],
    h(
      "dl",
      { class: "facts" },
      h("dt", null, t("caseLead")),
      h("dd", null, jc.leadUnitCode, " ", jc.leadUnitName),
      h("dt", null, t("caseParticipants")),
      h("dd", null, participants.length ? joined(participants, "、") : t("none")),
      h("dt", null, t("caseOpenedBy")),
      h("dd", null, jc.createdByName, ` · ${fmtTime(jc.createdAtMs)}`),
      jc.basis ? [h("dt", null, t("caseBasis")), h("dd", null, prose(jc.basis))] : null,
    ),
    h("h3", null, t("caseClues")),
    table(
      `${t("caseClues")} #${jc.id}`,
      [t("colRegNo"), t("colTitle"), t("colState"), t("colOwner"), t("colDeadline")],
      jc.clues.map((c) => [h("a", { href: `#/clue/${c.clueId}` }, c.registrationNumber), c.title, tName(stateName(c.state)), c.ownerUnitCode, fmtDeadline(c.stageDeadlineMs)]),
    ),
  );
}

export async function casesPage(main: HTMLElement, arg: string | undefined, signal: AbortSignal): Promise<void> {
  main.append(h("h2", { class: "page-title" }, t("casesTitle")));
  const wait = loading();
  main.append(wait);
  if (arg && /^\d+$/.test(arg)) {
    const jc = await cases.getJointCase({ caseId: BigInt(arg) }, { signal });
    wait.remove();
    main.append(caseCard(jc), h("p", null, h("a", { href: "#/cases" }, t("casesTitle"))));
    return;
  }
  // Every case the caller sees, newest first: a page holds at most 500 (fewer when large).
  const list = await allPages(async (pageToken) => {
    const r = await cases.listJointCases({ pageToken }, { signal });
    return { rows: r.cases, next: r.nextPageToken };
  });
  wait.remove();
  append(main, [partialNote(list)]);
  if (list.rows.length === 0) main.append(h("p", { class: "muted" }, t("casesEmpty")));
  for (const jc of list.rows) main.append(caseCard(jc));
}
