// My queue: the clues the caller's unit can act on (deadline overdue in red, due soon in
// amber), the proposals waiting for the unit's review, those it raised, and clues handed over
// to it; each list whole, read page by page.
import { h, field, clear, prose } from "../dom";
import { t, tName, fmtTime } from "../i18n";
import { clues, audit, me, stateName, requestId } from "../api";
import { ClueState } from "../../gen/clue/v1/common_pb";
import { ListProposalsRequest_Scope, SourceChannel, type Proposal } from "../../gen/clue/v1/clue_pb";
import { table, deadlineBadge, section, loading, errorBox, partialNote, person, bytesField, outcome, SUMMARY_MAX_BYTES } from "../ui";
import { allPages } from "../paging";

const ACTIVE = [ClueState.ACCEPTED, ClueState.PRELIMINARY_CHECK, ClueState.FILED];
const ARRIVALS_DAYS = 90;

function clueLink(id: bigint, text: string): HTMLElement {
  return h("a", { href: `#/clue/${id}` }, text);
}

function proposalRows(list: Proposal[]) {
  return list.map((p) => [
    clueLink(p.clueId, `#${p.clueId}`),
    `${tName(stateName(p.fromState))} → ${tName(stateName(p.target))}`,
    person(p.proposerUserName, p.proposerUnitCode),
    p.reviewerUnitCode || String(p.reviewerUnitId),
    h("span", null, prose(p.reason), outcome(p.details)),
    fmtTime(p.createdAtMs),
  ]);
}

/** 登记线索: any MEMBER or LEADER of a working unit submits; the clue opens once submitted. */
function submitForm(): HTMLElement {
  const title = h("input", { type: "text", required: true, maxlength: "200" });
  const summary = h("textarea", { required: true, rows: 3 });
  const source = h(
    "select",
    { required: true },
    Object.entries(SourceChannel)
      .filter(([k, v]) => typeof v === "number" && v !== 0 && isNaN(Number(k)))
      .map(([k, v]) => h("option", { value: String(v) }, tName(`SOURCE_CHANNEL_${k}`))),
  );
  const name = h("input", { type: "text", required: true, maxlength: "100" });
  const position = h("input", { type: "text", maxlength: "100" });
  const host = h("input", { type: "text", required: true, maxlength: "100" });
  const status = h("div", { "aria-live": "polite" });
  const button = h("button", { type: "submit", class: "btn btn-primary" }, t("submitButton"));
  const rid = requestId(); // one id per filled-in form: a resubmission after a lost answer is the same clue
  return h(
    "details",
    { class: "card" },
    h("summary", null, t("submitTitle")),
    h(
      "form",
      {
        "data-testid": "submit-form",
        onsubmit: async (ev: Event) => {
          ev.preventDefault();
          button.disabled = true;
          clear(status);
          try {
            const c = await clues.submitClue({
              title: title.value,
              summary: summary.value,
              source: Number(source.value) as SourceChannel,
              subject: { name: name.value, position: position.value },
              hostUnit: host.value,
              requestId: rid,
            });
            location.hash = `#/clue/${c.id}`;
          } catch (e) {
            status.append(errorBox(e));
            button.disabled = false;
          }
        },
      },
      field(t("colTitle"), title),
      bytesField(t("submitSummary"), summary, SUMMARY_MAX_BYTES),
      field(t("clueSource"), source),
      field(t("submitSubjectName"), name),
      field(t("submitSubjectPosition"), position),
      field(t("submitHostUnit"), host),
      button,
      status,
    ),
  );
}

export async function queuePage(main: HTMLElement, _arg: string | undefined, signal: AbortSignal): Promise<void> {
  main.append(h("h2", { class: "page-title" }, t("queueTitle")), submitForm());
  const wait = loading();
  main.append(wait);
  const unit = me!.unitId;
  // Whole lists, page by page: the most urgent clue may be the oldest, on the last page.
  const arrivedFrom = BigInt(Date.now() - ARRIVALS_DAYS * 86400000);
  const [list, assigned, toReview, raised, handovers] = await Promise.all([
    allPages(async (pageToken) => {
      const r = await clues.listClues({ states: ACTIVE, ownerUnitId: unit, pageSize: 500, pageToken }, { signal });
      return { rows: r.clues, next: r.nextPageToken };
    }),
    allPages(async (pageToken) => {
      const r = await clues.listClues({ assignedToMe: true, pageSize: 500, pageToken }, { signal });
      return { rows: r.clues, next: r.nextPageToken };
    }),
    allPages(async (pageToken) => {
      const r = await clues.listProposals({ scope: ListProposalsRequest_Scope.TO_REVIEW, pageToken }, { signal });
      return { rows: r.proposals, next: r.nextPageToken };
    }),
    allPages(async (pageToken) => {
      const r = await clues.listProposals({ scope: ListProposalsRequest_Scope.RAISED, pageToken }, { signal });
      return { rows: r.proposals, next: r.nextPageToken };
    }),
    allPages(async (pageToken) => {
      const r = await audit.listAuditEvents({ subjectType: "clue", action: "clue.handover", fromMs: arrivedFrom, pageSize: 500, pageToken }, { signal });
      return { rows: r.events, next: r.nextPageToken };
    }),
  ]);
  wait.remove();

  // Most urgent first: overdue, then by deadline.
  const mine = list.rows.slice().sort((a, b) => Number(a.stageDeadlineMs || BigInt(8.64e15)) - Number(b.stageDeadlineMs || BigInt(8.64e15)));
  main.append(
    section(
      t("queueClues"),
      partialNote(list),
      table(
        t("queueClues"),
        [t("colRegNo"), t("colTitle"), t("colState"), t("colDeadline")],
        mine.map((c) => [clueLink(c.id, c.registrationNumber), c.title, tName(stateName(c.state)), deadlineBadge(c.stageDeadlineMs, c.daysLeft, c.overdue)]),
        { rowClass: (i) => (mine[i].overdue ? "row-overdue" : mine[i].daysLeft <= 7 && mine[i].stageDeadlineMs ? "row-soon" : "") },
      ),
    ),
  );
  // Clues of any unit this user is an assigned handler of (承办人).
  main.append(
    section(
      t("queueAssigned"),
      partialNote(assigned),
      table(
        t("queueAssigned"),
        [t("colRegNo"), t("colTitle"), t("colState"), t("colOwner"), t("colDeadline")],
        assigned.rows.map((c) => [clueLink(c.id, c.registrationNumber), c.title, tName(stateName(c.state)), c.ownerUnitCode, deadlineBadge(c.stageDeadlineMs, c.daysLeft, c.overdue)]),
      ),
    ),
  );
  const cols = [t("colClue"), t("colMove"), t("colProposer"), t("colReviewer"), t("colReason"), t("colWhen")];
  main.append(section(t("queueProposals"), partialNote(toReview), table(t("queueProposals"), cols, proposalRows(toReview.rows))));
  main.append(section(t("queueRaised"), partialNote(raised), table(t("queueRaised"), cols, proposalRows(raised.rows))));

  // Handovers whose receiver is this unit and whose clue it still owns.
  const owned = new Set(mine.map((c) => c.id));
  const arrivals = handovers.rows
    .filter((e) => {
      try {
        return BigInt(JSON.parse(e.detailsJson || "{}").to_unit_id ?? 0) === unit && owned.has(e.subjectId);
      } catch {
        return false;
      }
    })
    .reverse();
  const byId = new Map(mine.map((c) => [c.id, c]));
  main.append(
    section(
      t("queueArrivals"),
      partialNote(handovers),
      table(
        t("queueArrivals"),
        [t("colClue"), t("colTitle"), t("colFrom"), t("colReason"), t("colWhen")],
        arrivals.map((e) => [clueLink(e.subjectId, byId.get(e.subjectId)?.registrationNumber ?? `#${e.subjectId}`), byId.get(e.subjectId)?.title ?? "", person(e.actorUserName, e.actorUnitCode), prose(e.reason), fmtTime(e.atMs)]),
      ),
    ),
  );
}
