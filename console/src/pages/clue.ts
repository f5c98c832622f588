// One clue: its facts, the state machine with the current state and the moves allowed, the
// move, handover and extend forms (each sends the version shown and its request id; a stale
// version comes back ABORTED: "changed meanwhile, reload"), proposals with approve and reject
// for the reviewing unit's leader, notes, and the history as a timeline.
//
// Every form keeps one request id per filled-in form, as the submit form of the queue does:
// sent again when the form is sent again, so that a retry after an answer lost on the way back
// is the same request (the server answers with what the first one did, and stores nothing
// twice), and replaced by a new one once the form succeeded or its content changed.
import { h, field, clear, prose, joined, type Child } from "../dom";
import { t, tx, tName, tAction, fmtTime } from "../i18n";
import { clues, me, isLeader, isStaff, stateName, requestId } from "../api";
import { ClueState, UnitKind } from "../../gen/clue/v1/common_pb";
import { Disposal, NoteKind, ProposalStatus, SourceChannel, type Clue, type Proposal } from "../../gen/clue/v1/clue_pb";
import { drawMachine, movesFrom, isTerminal } from "../machine";
import { section, deadlineBadge, errorBox, okBox, loading, partialNote, person, bytesField, outcome, NOTE_MAX_BYTES, REASON_MAX_BYTES } from "../ui";
import { allPages } from "../paging";

function idPicker(): HTMLElement {
  const input = h("input", { type: "number", min: "1", step: "1", required: true, inputmode: "numeric" });
  return section(
    t("navClue"),
    h(
      "form",
      {
        class: "inline-form",
        onsubmit: (ev: Event) => {
          ev.preventDefault();
          if (input.value) location.hash = `#/clue/${input.value}`;
        },
      },
      field(t("clueIdLabel"), input),
      h("button", { type: "submit", class: "btn" }, t("clueOpen")),
    ),
  );
}

function dl(pairs: [string, Child][]): HTMLElement {
  return h("dl", { class: "facts" }, pairs.map(([k, v]) => [h("dt", null, k), h("dd", null, v)]));
}

/** A form that calls fn with the form's request id on submit, shows what came back, and
 * reloads the page on success. The id stays while the content does (a retry is the same
 * request); any change of a control, or a success, makes a new one. */
function actionForm(legend: string, controls: Child[], submitLabel: string, fn: (rid: string) => Promise<Child>, reload: () => void, testid: string): HTMLElement {
  const status = h("div", { "aria-live": "polite" });
  const button = h("button", { type: "submit", class: "btn btn-primary" }, submitLabel);
  let rid = requestId();
  const changed = () => {
    rid = requestId();
  };
  return h(
    "form",
    {
      class: "action",
      "data-testid": testid,
      oninput: changed,
      onchange: changed,
      onsubmit: async (ev: Event) => {
        ev.preventDefault();
        button.disabled = true;
        clear(status);
        try {
          const done = await fn(rid);
          rid = requestId();
          reload();
          flash = { clueId: pageClue, text: done };
        } catch (e) {
          status.append(errorBox(e, reload));
          button.disabled = false;
        }
      },
    },
    h("fieldset", null, h("legend", null, legend), ...controls, button, status),
  );
}

// What the last action said, shown once above the clue it was done on when the page comes
// back: not above another clue, nor for the next user, when that reload fails.
let flash: { clueId: bigint; text: Child } | null = null;
let pageClue = 0n;


function enumOptions<E extends Record<string, string | number>>(e: E, prefix: string, skip = 0): HTMLOptionElement[] {
  return Object.entries(e)
    .filter(([k, v]) => typeof v === "number" && v !== skip && isNaN(Number(k)))
    .map(([k, v]) => h("option", { value: String(v) }, tName(`${prefix}_${k}`)));
}

function moveForm(c: Clue, reload: () => void): HTMLElement {
  const moves = movesFrom(c.state);
  const target = h("select", { required: true }, moves.map((m) => h("option", { value: String(m.to) }, tName(ClueState[m.to]) + (m.coReview ? " (会商 co-review)" : ""))));
  const reason = h("textarea", { required: true, rows: 2 });
  const disposal = h("select", null, enumOptions(Disposal, "DISPOSAL"));
  const finding = h("input", { type: "text" });
  const sanction = h("input", { type: "text", maxlength: "100" });
  const persons = h("input", { type: "number", min: "0", step: "1", value: "1" });
  const organ = h("input", { type: "text", maxlength: "100" });
  const reviewer = h("input", { type: "number", min: "1", step: "1" });
  const extras = {
    disposal: field(t("moveDisposal"), disposal),
    finding: bytesField(t("moveFinding"), finding, REASON_MAX_BYTES),
    sanction: field(t("moveSanction"), sanction),
    persons: field(t("movePersons"), persons),
    organ: field(t("moveOrgan"), organ),
    reviewer: field(t("moveReviewer"), reviewer),
  };
  const ownRoomOrRegion = me!.unitKind === UnitKind.ROOM || me!.unitKind === UnitKind.REGION;
  const sync = () => {
    const to = Number(target.value) as ClueState;
    const m = moves.find((x) => x.to === to);
    extras.disposal.hidden = !(c.state === ClueState.ACCEPTED && to === ClueState.CLOSED);
    extras.finding.hidden = !(c.state === ClueState.PRELIMINARY_CHECK && to === ClueState.CLOSED);
    extras.sanction.hidden = extras.persons.hidden = !(c.state === ClueState.FILED && to === ClueState.CLOSED);
    extras.organ.hidden = to !== ClueState.TRANSFERRED_TO_JUDICIAL;
    extras.reviewer.hidden = !(m?.coReview && ownRoomOrRegion);
  };
  target.addEventListener("change", sync);
  sync();
  const version = c.version;
  return actionForm(
    `${t("moveTitle")} · ${t("clueVersion")} ${version}`,
    [field(t("moveTarget"), target), bytesField(t("moveReason"), reason, REASON_MAX_BYTES), ...Object.values(extras)],
    t("moveSubmit"),
    async (rid) => {
      const to = Number(target.value) as ClueState;
      const r = await clues.requestTransition({
        clueId: c.id,
        expectedVersion: version,
        target: to,
        reason: reason.value,
        requestId: rid,
        details: {
          disposal: extras.disposal.hidden ? Disposal.UNSPECIFIED : (Number(disposal.value) as Disposal),
          finding: extras.finding.hidden ? "" : finding.value,
          sanctionKind: extras.sanction.hidden ? "" : sanction.value,
          personsDisciplined: extras.persons.hidden ? 0 : Number(persons.value || 0),
          receivingOrgan: extras.organ.hidden ? "" : organ.value,
          reviewerUnitId: extras.reviewer.hidden || !reviewer.value ? 0n : BigInt(reviewer.value),
        },
      });
      return r.pending ? tx("movePending", r.proposal?.reviewerUnitCode || String(r.proposal?.reviewerUnitId ?? "")) : t("moveDone", tName(stateName(to)));
    },
    reload,
    "move-form",
  );
}

function handoverForm(c: Clue, reload: () => void): HTMLElement {
  const unit = h("input", { type: "number", min: "1", step: "1", required: true });
  const reason = h("textarea", { required: true, rows: 2 });
  const version = c.version;
  return actionForm(
    t("handoverTitle"),
    [field(t("handoverUnit"), unit), bytesField(t("moveReason"), reason, REASON_MAX_BYTES)],
    t("handoverSubmit"),
    async (rid) => {
      await clues.handOver({ clueId: c.id, expectedVersion: version, toUnitId: BigInt(unit.value), reason: reason.value, requestId: rid });
      return t("handoverDone");
    },
    reload,
    "handover-form",
  );
}

function extendForm(c: Clue, reload: () => void): HTMLElement {
  const days = h("input", { type: "number", min: "1", max: "365", step: "1", value: "30", required: true });
  const reason = h("textarea", { required: true, rows: 2 });
  const version = c.version;
  return actionForm(
    t("extendTitle"),
    [field(t("extendDays"), days), bytesField(t("moveReason"), reason, REASON_MAX_BYTES)],
    t("extendSubmit"),
    async (rid) => {
      await clues.extendDeadline({ clueId: c.id, expectedVersion: version, days: Number(days.value), reason: reason.value, requestId: rid });
      return t("extendDone");
    },
    reload,
    "extend-form",
  );
}

function noteForm(c: Clue, reload: () => void): HTMLElement {
  const kind = h("select", { required: true }, enumOptions(NoteKind, "NOTE_KIND"));
  const text = h("textarea", { required: true, rows: 3 });
  return actionForm(
    t("noteTitle"),
    [field(t("noteKind"), kind), bytesField(t("noteText"), text, NOTE_MAX_BYTES)],
    t("noteSubmit"),
    async (rid) => {
      await clues.addNote({ clueId: c.id, kind: Number(kind.value) as NoteKind, text: text.value, requestId: rid });
      return t("noteTitle");
    },
    reload,
    "note-form",
  );
}

function proposalItem(p: Proposal, reload: () => void): HTMLElement {
  const canReview = p.status === ProposalStatus.PENDING && isLeader() && p.reviewerUnitId === me!.unitId;
  const item = h(
    "li",
    { class: "proposal" },
    h("strong", null, `#${p.id} ${tName(stateName(p.fromState))} → ${tName(stateName(p.target))}`),
    " · ",
    h("span", { class: `badge badge-${ProposalStatus[p.status].toLowerCase()}` }, tName(`PROPOSAL_STATUS_${ProposalStatus[p.status]}`)),
    h("div", null, `${t("colProposer")}: `, person(p.proposerUserName, p.proposerUnitCode), ` · ${t("colReviewer")}: `, p.reviewerUnitCode, " ", p.reviewerUnitName, ` · ${fmtTime(p.createdAtMs)}`),
    h("div", null, `${t("colReason")}: `, prose(p.reason)),
    outcome(p.details),
    p.reviewComment ? h("div", null, `${t("reviewComment")}: `, prose(p.reviewComment)) : null,
  );
  if (canReview) {
    const comment = h("input", { type: "text" });
    const status = h("div", { "aria-live": "polite" });
    // One request id per decision and comment: approving again after a lost answer is the
    // same request; rejecting after it is another one (which the server then refuses: the
    // proposal was decided).
    const rids = new Map<boolean, string>();
    const changed = () => rids.clear();
    comment.addEventListener("input", changed);
    comment.addEventListener("change", changed);
    const decide = (approve: boolean) => async () => {
      clear(status);
      if (!comment.reportValidity()) return; // longer than the server takes (bytesField)
      if (!rids.has(approve)) rids.set(approve, requestId());
      try {
        await clues.reviewProposal({ proposalId: p.id, approve, comment: comment.value, requestId: rids.get(approve)! });
        rids.clear();
        flash = { clueId: p.clueId, text: t("reviewDone") };
        reload();
      } catch (e) {
        status.append(errorBox(e, reload));
      }
    };
    item.append(
      h(
        "div",
        { class: "review", "data-testid": `review-${p.id}` },
        bytesField(t("reviewComment"), comment, REASON_MAX_BYTES),
        h("button", { type: "button", class: "btn btn-primary", onclick: decide(true) }, t("approve")),
        " ",
        h("button", { type: "button", class: "btn btn-danger", onclick: decide(false) }, t("reject")),
        status,
      ),
    );
  }
  return item;
}

export async function cluePage(main: HTMLElement, arg: string | undefined, signal: AbortSignal): Promise<void> {
  if (!arg || !/^\d+$/.test(arg)) {
    main.append(h("h2", { class: "page-title" }, t("navClue")), idPicker());
    return;
  }
  const clueId = BigInt(arg);
  pageClue = clueId;
  const body = h("div");
  main.append(body);
  const reload = () => void load();

  // A reload asked for while one is under way: only the last one asked for is shown.
  let asked = 0;
  async function load(): Promise<void> {
    const mine = ++asked;
    clear(body);
    const wait = loading();
    body.append(wait);
    let c: Clue;
    try {
      c = await clues.getClue({ clueId }, { signal });
    } catch (e) {
      if (mine !== asked) return;
      flash = null;
      wait.remove();
      body.append(h("h2", { class: "page-title" }, t("clueTitle", arg!)), errorBox(e, reload, reload), idPicker());
      return;
    }
    // The whole history, every note and every proposal, page by page (a history page holds at
    // most 1,000 events, a notes page 500 notes, a proposals page 1,000 proposals, any of them
    // fewer past about 2 MiB).
    const [hist, notes, props] = await Promise.all([
      allPages(async (pageToken) => {
        const r = await clues.getHistory({ clueId, pageToken }, { signal });
        return { rows: r.events, next: r.nextPageToken };
      }),
      allPages(async (after) => {
        const r = await clues.listNotes({ clueId, afterNoteId: after ? BigInt(after) : 0n, pageSize: 500 }, { signal });
        // ListNotes goes on from the last note's id; "more" without a note repeats the token.
        return { rows: r.notes, next: r.more ? String(r.notes[r.notes.length - 1]?.id ?? (after || "0")) : "" };
      }),
      allPages(async (pageToken) => {
        const r = await clues.listProposals({ clueId, includeDecided: true, pageToken }, { signal });
        return { rows: r.proposals, next: r.nextPageToken };
      }),
    ]);
    if (mine !== asked) return;
    wait.remove();
    const owner = isLeader() && c.ownerUnitId === me!.unitId;
    const active = !isTerminal(c.state);

    body.append(h("h2", { class: "page-title" }, c.registrationNumber, " · ", c.title));
    if (flash && flash.clueId === clueId) body.append(okBox(flash.text));
    flash = null;
    body.append(
      section(
        tx("clueTitle", c.registrationNumber),
        dl(([
          [t("colState"), h("span", { class: "badge badge-state", "data-testid": "clue-state" }, tName(stateName(c.state)))],
          [t("clueVersion"), h("span", { "data-testid": "clue-version" }, String(c.version))],
          [t("colOwner"), [c.ownerUnitCode, " ", c.ownerUnitName]],
          [t("colDeadline"), deadlineBadge(c.stageDeadlineMs, c.daysLeft, c.overdue)],
          [t("clueSubject"), [c.subject?.name, " ", c.subject?.position]],
          [t("clueHostUnit"), c.hostUnit],
          [t("clueSource"), tName(`SOURCE_CHANNEL_${SourceChannel[c.source]}`)],
          [t("clueSummary"), prose(c.summary)],
          [t("clueHandlers"), c.handlers.length ? joined(c.handlers.map((x) => person(x.userName, x.unitCode)), "、") : t("none")],
          c.jointCaseId ? [t("clueCase"), h("a", { href: `#/cases/${c.jointCaseId}` }, `#${c.jointCaseId}`)] : [t("clueCase"), t("none")],
          c.pendingProposal ? [t("cluePending"), t("yes")] : [t("cluePending"), t("no")],
          c.reporter ? [t("clueReporter"), joined([c.reporter.name, c.reporter.phone, c.reporter.email, c.reporter.address], " ")] : null,
        ] as ([string, Child] | null)[]).filter((x): x is [string, Child] => x !== null)),
      ),
      section(t("stateMachine"), drawMachine(c.state, owner && active && !c.pendingProposal)),
    );

    // Forms only for what this caller may do; the server checks every one of them again.
    const forms: HTMLElement[] = [];
    if (owner && active && !c.pendingProposal) forms.push(moveForm(c, reload));
    if (owner && (c.state === ClueState.ACCEPTED || c.state === ClueState.PRELIMINARY_CHECK)) forms.push(handoverForm(c, reload));
    if (owner && active && !c.pendingProposal) forms.push(c.deadlineExtended ? h("p", { class: "muted" }, t("extendUsed")) : extendForm(c, reload));
    if (forms.length) body.append(section(t("moveTitle"), h("div", { class: "forms" }, forms)));

    body.append(
      section(
        t("proposals"),
        partialNote(props),
        props.rows.length ? h("ul", { class: "plain" }, props.rows.map((p) => proposalItem(p, reload))) : h("p", { class: "muted" }, t("proposalsEmpty")),
      ),
    );
    body.append(
      section(
        t("notes"),
        partialNote(notes),
        notes.rows.length
          ? h("ul", { class: "plain notes" }, notes.rows.map((n) => h("li", null, h("div", { class: "muted" }, `${tName(`NOTE_KIND_${NoteKind[n.kind]}`)} · `, person(n.authorUserName, n.authorUnitCode), ` · ${fmtTime(n.createdAtMs)}`), h("p", { class: "note-text" }, prose(n.text)))))
          : h("p", { class: "muted" }, t("notesEmpty")),
        isStaff() ? noteForm(c, reload) : null,
      ),
    );
    body.append(
      section(
        t("history"),
        partialNote(hist),
        h(
          "ol",
          { class: "timeline" },
          hist.rows.map((e) =>
            h(
              "li",
              null,
              h("time", null, fmtTime(e.atMs)),
              " ",
              h("strong", null, tAction(e.action)),
              e.toState ? ` ${e.fromState ? tName(stateName(e.fromState)) + " → " : ""}${tName(stateName(e.toState))}` : "",
              h("div", { class: "muted" }, person(e.actorUserName, e.actorUnitCode), ` · seq ${e.seq}`),
              e.reason ? h("div", null, prose(e.reason)) : null,
            ),
          ),
        ),
      ),
    );
  }
  await load();
}
