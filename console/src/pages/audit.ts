// Audit: the live feed through WatchEvents, which resumes after a dropped stream from the last
// seq received (the server replays what came after it: nothing missed, nothing twice); the
// verification of every hash chain and the Merkle tree; the latest signed checkpoint.
import { h, clear, prose } from "../dom";
import { t, tx, tName, tAction, fmtTime } from "../i18n";
import { audit, seesAllAudit, stateName, Code, errorCode } from "../api";
import type { AuditEvent } from "../../gen/clue/v1/common_pb";
import { BrokenLink_Problem } from "../../gen/clue/v1/audit_pb";
import { section, errorBox, loading, person } from "../ui";

const KEEP = 200; // rows kept on the page; older ones scroll away
const BACKOFF_MAX_MS = 10000;
// The server sends a heartbeat after HEARTBEAT_S without a message (WatchEventsRequest); a
// stream silent for 2.5 of those is taken for a connection dropped without a word (a proxy or
// NAT that forgot it) and is called again from the last seq.
const HEARTBEAT_S = 10;
const SILENT_MS = HEARTBEAT_S * 2500;

function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function eventRow(e: AuditEvent): HTMLElement {
  const subject = e.subjectType === "clue" ? h("a", { href: `#/clue/${e.subjectId}` }, `clue #${e.subjectId}`) : [e.subjectType, ` #${e.subjectId}`];
  return h(
    "tr",
    { "data-seq": String(e.seq) },
    h("td", null, String(e.seq)),
    h("td", null, fmtTime(e.atMs)),
    h("td", null, tAction(e.action), e.toState ? ` → ${tName(stateName(e.toState))}` : ""),
    h("td", null, subject),
    h("td", null, e.actorUserName ? person(e.actorUserName, e.actorUnitCode) : "—"),
  );
}

async function verification(box: HTMLElement, signal: AbortSignal): Promise<void> {
  clear(box);
  box.append(loading());
  try {
    const v = await audit.verifyAuditChain({}, { signal });
    clear(box);
    if (v.ok && !v.treeProblem) {
      box.append(h("div", { class: "alert alert-ok", role: "status", "data-testid": "verify-status" }, t("auditVerifyOk", v.subjectsChecked, v.eventsChecked), v.checkpointSize ? ` ${t("treeSize")} ${v.checkpointSize}` : ""));
    } else {
      const b = v.broken;
      box.append(
        h(
          "div",
          { class: "alert alert-error", role: "alert", "data-testid": "verify-status" },
          b ? tx("auditVerifyBad", b.subjectType, String(b.subjectId), String(b.seq), [BrokenLink_Problem[b.problem], " ", b.detail]) : v.treeProblem,
        ),
      );
    }
  } catch (e) {
    clear(box);
    box.append(errorBox(e));
  }
}

async function checkpoint(box: HTMLElement, signal: AbortSignal): Promise<void> {
  try {
    const c = await audit.getCheckpoint({}, { signal });
    box.append(
      h(
        "dl",
        { class: "facts", "data-testid": "checkpoint" },
        h("dt", null, t("treeSize")),
        h("dd", null, String(c.treeSize)),
        h("dt", null, t("rootHash")),
        h("dd", { class: "mono" }, hex(c.rootHash)),
        h("dt", null, t("publishedAt")),
        h("dd", null, fmtTime(c.publishedMs)),
      ),
      h("pre", { class: "mono note", tabindex: "0", "aria-label": t("auditCheckpoint") }, prose(c.note)),
    );
  } catch (e) {
    const code = errorCode(e);
    if (code === Code.NotFound || code === Code.FailedPrecondition || code === Code.OutOfRange) box.append(h("p", { class: "muted" }, t("auditNoCheckpoint")));
    else box.append(errorBox(e));
  }
}

/**
 * Where the feed starts: just before the first event of the last day (else of the last month,
 * else of the last year), so that opening the page replays what is recent and not the whole
 * log; 0 (from the beginning) when nothing that recent is visible.
 */
async function startAfter(signal: AbortSignal): Promise<bigint> {
  for (const days of [1, 30, 365]) {
    try {
      const r = await audit.listAuditEvents({ fromMs: BigInt(Date.now() - days * 86400000), pageSize: 1 }, { signal });
      if (r.events.length) return r.events[0].seq - 1n;
    } catch {
      break; // the feed itself will say what is wrong
    }
  }
  return 0n;
}

export async function auditPage(main: HTMLElement, _arg: string | undefined, signal: AbortSignal): Promise<void> {
  main.append(h("h2", { class: "page-title" }, t("auditTitle")));
  if (seesAllAudit()) {
    const verifyBox = h("div");
    const cpBox = h("div");
    main.append(
      section(t("auditVerify"), verifyBox, h("button", { type: "button", class: "btn", onclick: () => void verification(verifyBox, signal) }, t("auditVerifyRun"))),
      section(t("auditCheckpoint"), cpBox),
    );
    void verification(verifyBox, signal);
    void checkpoint(cpBox, signal);
  }

  const status = h("p", { class: "feed-status", role: "status", "data-testid": "feed-status" }, t("loading"));
  const body = h("tbody");
  const feed = h(
    "div",
    { class: "table-wrap feed", "data-testid": "feed", "data-last-seq": "0", "data-reconnects": "0" },
    h(
      "table",
      null,
      h("caption", { class: "sr-only" }, t("auditFeed")),
      h("thead", null, h("tr", null, [t("colSeq"), t("colWhen"), t("colAction"), t("colSubject"), t("colActor")].map((c) => h("th", { scope: "col" }, c)))),
      body,
    ),
  );
  main.append(section(t("auditFeed"), status, feed));

  let last = await startAfter(signal);
  let reconnects = 0;
  let pending: AuditEvent[] = [];
  let scheduled = false;
  // Rows are added in batches (a replay of many events stays smooth), by a timer rather than
  // an animation frame, which a background tab would hold back.
  const flush = () => {
    scheduled = false;
    const batch = pending.slice(-KEEP);
    pending = [];
    for (const e of batch) body.prepend(eventRow(e));
    while (body.childElementCount > KEEP) body.lastElementChild!.remove();
    feed.dataset.lastSeq = String(last);
  };

  // Hidden, the page holds no stream: over HTTP/1.1 a browser opens at most six connections
  // to a host, and every open feed holds one, so six background tabs would leave none for a
  // seventh. Shown again, it resumes after the last seq as after any other end of the stream.
  const hidden = () => document.visibilityState === "hidden";
  const shown = () =>
    new Promise<void>((resolve) => {
      const on = () => {
        if (hidden() && !signal.aborted) return;
        document.removeEventListener("visibilitychange", on);
        signal.removeEventListener("abort", on);
        resolve();
      };
      document.addEventListener("visibilitychange", on);
      signal.addEventListener("abort", on);
    });
  const live = () => {
    status.textContent = `${t("auditStatus")}: ${t("auditLive")} · ${t("auditLastSeq")} ${last}`;
    status.className = "feed-status live";
  };

  void (async () => {
    let backoff = 500;
    while (!signal.aborted) {
      if (hidden()) {
        status.textContent = t("auditPaused", last);
        status.className = "feed-status paused";
        feed.dataset.paused = "1";
        await shown();
        delete feed.dataset.paused;
        continue;
      }
      // One stream: ended by the page going away, by the tab being hidden, or by silence
      // (no event and no heartbeat for SILENT_MS: a connection dropped without a word).
      const stream = new AbortController();
      let why: "hidden" | "silent" | null = null;
      const stop = () => stream.abort();
      const onHide = () => {
        if (!hidden()) return;
        why = "hidden";
        stream.abort();
      };
      let quiet = 0;
      const silence = () => {
        clearTimeout(quiet);
        quiet = window.setTimeout(() => {
          why = "silent";
          stream.abort();
        }, SILENT_MS);
      };
      signal.addEventListener("abort", stop);
      document.addEventListener("visibilitychange", onHide);
      silence();
      try {
        const events = audit.watchEvents({ afterSeq: last, heartbeatSeconds: HEARTBEAT_S }, { signal: stream.signal });
        live();
        for await (const e of events) {
          silence();
          if (e.seq <= last) continue; // never twice, whatever the server sends
          last = e.seq;
          backoff = 500;
          if (!e.action) {
            // A heartbeat: nothing to show, but every event up to its seq has been sent.
            feed.dataset.lastSeq = String(last);
            live();
            continue;
          }
          pending.push(e);
          if (!scheduled) {
            scheduled = true;
            setTimeout(flush, 30);
          }
          live();
        }
      } catch (e) {
        if (signal.aborted) return;
        const code = errorCode(e);
        if (why === null && (code === Code.PermissionDenied || code === Code.Unauthenticated)) {
          status.replaceWith(errorBox(e));
          return;
        }
      } finally {
        clearTimeout(quiet);
        signal.removeEventListener("abort", stop);
        document.removeEventListener("visibilitychange", onHide);
      }
      if (signal.aborted) return;
      if (why === "hidden") continue; // no backoff: the loop pauses until shown
      // The stream ended (server shutdown, stream age, a dropped or silent connection):
      // resume after `last`.
      reconnects++;
      feed.dataset.reconnects = String(reconnects);
      if (why === "silent") feed.dataset.silent = String(Number(feed.dataset.silent ?? 0) + 1);
      status.textContent = t("auditReconnecting", last);
      status.className = "feed-status reconnecting";
      await new Promise((r) => setTimeout(r, backoff));
      backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    }
  })();
}
