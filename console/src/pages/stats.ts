// Statistics: per unit the funnel received → preliminary check → filed → closed or
// transferred, a month-by-month chart, zero-disposal units (零通报) highlighted, the joint
// cases, and the CSV that `cluectl stats --csv` prints for the same period. Periods are local
// dates, the end date taken whole, as cluectl reads --from and --to. The joint cases come in
// pages of 1,000 (each page with the unit figures whole): the table reads them all, within
// allPages' bounds; the chart's months ask for no case at all.
import { Chart, BarController, BarElement, CategoryScale, LinearScale, Legend, Tooltip } from "chart.js";
import { h, field, clear } from "../dom";
import { t } from "../i18n";
import { stats } from "../api";
import type { CaseStats, GetStatisticsResponse, UnitStats } from "../../gen/clue/v1/stats_pb";
import { section, table, loading, errorBox, partialNote } from "../ui";
import { allPages, type Gathered } from "../paging";
import { unitsCsv } from "../csv";

Chart.register(BarController, BarElement, CategoryScale, LinearScale, Legend, Tooltip);

const MAX_MONTHS = 24;

/** A YYYY-MM-DD as local midnight; endOfDay: the midnight after it. */
function localMs(s: string, endOfDay: boolean): number {
  const [y, m, d] = s.split("-").map(Number);
  return new Date(y, m - 1, d + (endOfDay ? 1 : 0)).getTime();
}

function funnelBar(u: UnitStats): HTMLElement {
  const steps: [string, bigint, string][] = [
    [t("colReceived"), u.received, "f-received"],
    [t("colPrelim"), u.preliminaryChecksStarted, "f-prelim"],
    [t("colFiled"), u.filed, "f-filed"],
    [`${t("colClosed")}/${t("colTransferred")}`, u.closed + u.transferredToJudicial, "f-closed"],
  ];
  const max = Number(steps.reduce((a, s) => (s[1] > a ? s[1] : a), 0n)) || 1;
  return h(
    "div",
    { class: "funnel", "aria-hidden": "true" },
    steps.map(([label, n, cls]) => {
      const bar = h("span", { class: `funnel-bar ${cls}`, title: `${label}: ${n}` });
      bar.style.width = `${Math.max(2, (Number(n) / max) * 100)}%`;
      return bar;
    }),
  );
}

let chart: Chart | null = null;

interface Months {
  labels: string[];
  rows: number[][];
  left: string[]; // the period's earlier months the chart leaves out (MAX_MONTHS), oldest first
}

const monthLabel = (d: Date) => `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}`;

/** The period's months, the latest MAX_MONTHS of them with their figures (the ones a reader
 * of a long period cares about); the earlier ones are named in `left`. */
async function monthly(fromMs: number, toMs: number, signal: AbortSignal): Promise<Months> {
  const all: { label: string; range: [number, number] }[] = [];
  const start = new Date(fromMs);
  for (let d = new Date(start.getFullYear(), start.getMonth(), 1); d.getTime() < toMs; ) {
    const next = new Date(d.getFullYear(), d.getMonth() + 1, 1);
    all.push({ label: monthLabel(d), range: [Math.max(d.getTime(), fromMs), Math.min(next.getTime(), toMs)] });
    d = next;
  }
  const shown = all.slice(-MAX_MONTHS);
  const answers = await Promise.all(
    shown.map(({ range: [f, to] }) => stats.getStatistics({ fromMs: BigInt(f), toMs: BigInt(to), omitCases: true }, { signal })),
  );
  const sum = (r: GetStatisticsResponse, pick: (u: UnitStats) => bigint) => Number(r.units.reduce((a, u) => a + pick(u), 0n));
  return {
    labels: shown.map((m) => m.label),
    rows: answers.map((r) => [sum(r, (u) => u.received), sum(r, (u) => u.preliminaryChecksStarted), sum(r, (u) => u.filed), sum(r, (u) => u.closed + u.transferredToJudicial)]),
    left: all.slice(0, all.length - shown.length).map((m) => m.label),
  };
}

/** The period's figures, and its joint cases from every page: the unit figures are the first
 * page's (every page carries them whole). */
async function figures(fromMs: number, toMs: number, signal: AbortSignal): Promise<{ r: GetStatisticsResponse; cases: Gathered<CaseStats> }> {
  let first: GetStatisticsResponse | undefined;
  const cases = await allPages(async (casePageToken) => {
    const page = await stats.getStatistics({ fromMs: BigInt(fromMs), toMs: BigInt(toMs), casePageToken }, { signal });
    first ??= page;
    return { rows: page.cases, next: page.nextCasePageToken };
  });
  return { r: first!, cases };
}

export async function statsPage(main: HTMLElement, _arg: string | undefined, signal: AbortSignal): Promise<void> {
  const now = new Date();
  const from = h("input", { type: "date", required: true, value: `${now.getFullYear()}-01-01`, "data-testid": "stats-from" });
  const to = h("input", { type: "date", required: true, value: `${now.getFullYear()}-12-31`, "data-testid": "stats-to" });
  const out = h("div");
  main.append(
    h("h2", { class: "page-title" }, t("statsTitle")),
    h(
      "form",
      {
        class: "inline-form card",
        onsubmit: (ev: Event) => {
          ev.preventDefault();
          void show();
        },
      },
      field(t("statsFrom"), from),
      field(t("statsTo"), to),
      h("button", { type: "submit", class: "btn btn-primary" }, t("statsRun")),
    ),
    out,
  );

  // The page's first figures and a submitted form may be under way at once: only the last
  // one asked for is shown (an earlier answer arriving later would add a second set).
  let asked = 0;
  async function show(): Promise<void> {
    const mine = ++asked;
    clear(out);
    chart?.destroy();
    chart = null;
    const fromMs = localMs(from.value, false);
    const toMs = localMs(to.value, true);
    const wait = loading();
    out.append(wait);
    let r: GetStatisticsResponse;
    let cases: Gathered<CaseStats>;
    let m: Months;
    try {
      [{ r, cases }, m] = await Promise.all([figures(fromMs, toMs, signal), monthly(fromMs, toMs, signal)]);
    } catch (e) {
      if (mine !== asked) return;
      wait.remove();
      out.append(errorBox(e, undefined, () => void show()));
      return;
    }
    if (mine !== asked) return;
    wait.remove();
    const zero = new Set(r.zeroDisposalUnits.map((z) => z.unitId));
    const csv = unitsCsv(r);
    const download = h("a", { class: "btn", download: `stats-${from.value}-${to.value}.csv`, "data-testid": "stats-csv" }, t("statsCsv"));
    download.href = URL.createObjectURL(new Blob([csv], { type: "text/csv;charset=utf-8" }));
    out.append(
      section(
        t("statsFunnel"),
        h("p", null, download),
        table(
          t("statsFunnel"),
          [t("colUnit"), t("colReceived"), t("colPrelim"), t("colFiled"), t("colClosed"), t("colTransferred"), t("colOverdueNow"), t("colZero"), t("colFunnel")],
          r.units.map((u) => [
            [u.unitCode, " ", u.unitName],
            String(u.received),
            String(u.preliminaryChecksStarted),
            String(u.filed),
            String(u.closed),
            String(u.transferredToJudicial),
            u.overdueNow ? h("span", { class: "badge badge-overdue" }, String(u.overdueNow)) : "0",
            zero.has(u.unitId) ? h("span", { class: "badge badge-zero" }, t("yes")) : t("no"),
            funnelBar(u),
          ]),
          { rowClass: (i) => (zero.has(r.units[i].unitId) ? "row-zero" : "") },
        ),
      ),
      section(
        t("statsZero"),
        r.zeroDisposalUnits.length
          ? h("ul", { class: "zero-list", "data-testid": "zero-units" }, r.zeroDisposalUnits.map((z) => h("li", null, h("span", { class: "badge badge-zero" }, z.unitCode), " ", z.unitName)))
          : h("p", { class: "muted" }, t("statsZeroNone")),
      ),
    );
    const canvas = h("canvas", { role: "img", "aria-label": t("chartLabel"), height: "260" });
    const seriesNames = [t("colReceived"), t("colPrelim"), t("colFiled"), `${t("colClosed")}/${t("colTransferred")}`];
    out.append(
      section(
        t("statsMonthly"),
        m.labels.length ? h("p", { class: "muted", "data-testid": "stats-months" }, t("statsMonthsShown", m.labels[0], m.labels[m.labels.length - 1], m.labels.length)) : null,
        m.left.length
          ? h("p", { class: "alert alert-warn", role: "status", "data-testid": "stats-months-cut" }, t("statsMonthsCut", MAX_MONTHS, m.left.length, m.left[0], m.left[m.left.length - 1]))
          : null,
        h("div", { class: "chart" }, canvas),
        h(
          "details",
          null,
          h("summary", null, t("statsMonthly")),
          table(t("statsMonthly"), ["", ...seriesNames], m.labels.map((l, i) => [l, ...m.rows[i].map(String)])),
        ),
      ),
    );
    const colors = ["#1d4ed8", "#b45309", "#7c3aed", "#047857"];
    chart = new Chart(canvas, {
      type: "bar",
      data: { labels: m.labels, datasets: seriesNames.map((label, k) => ({ label, data: m.rows.map((row) => row[k]), backgroundColor: colors[k] })) },
      options: { animation: false, responsive: true, maintainAspectRatio: false, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
    });
    if (cases.rows.length) {
      out.append(
        section(
          t("statsCases"),
          partialNote(cases),
          table(
            t("statsCases"),
            ["#", t("colTitle"), t("colClues"), t("colClosed"), t("colTransferred"), t("colOverdueNow")],
            cases.rows.map((c) => [h("a", { href: `#/cases/${c.caseId}` }, String(c.caseId)), c.title, String(c.clues), String(c.closed), String(c.transferredToJudicial), String(c.overdueNow)]),
          ),
        ),
      );
    }
  }
  await show();
}
