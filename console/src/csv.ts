// The unit figures as CSV, byte for byte what `cluectl stats --csv` prints for the same
// GetStatistics answer (client/cli/cmd_stats.c): RFC 4180, CRLF line ends, %g medians.
import type { GetStatisticsResponse, UnitStats } from "../gen/clue/v1/stats_pb";

// A text field as table_csv_field() in client/cli/table.c writes it: led by a single quote
// when a spreadsheet would take it for a formula (= + - @, a tab or a CR first), quoted when
// it holds a comma, a quote or a line break. Numbers never go through it.
function field(s: string): string {
  const text = /^[=+\-@\t\r]/.test(s) ? `'${s}` : s;
  return /[,"\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/** C's printf("%g"): 6 significant digits, trailing zeros dropped, exponent form outside 1e-4..1e6. */
export function fmtG(v: number): string {
  if (v === 0) return "0";
  if (!isFinite(v)) return isNaN(v) ? "nan" : v > 0 ? "inf" : "-inf";
  const [mant, e] = v.toExponential(5).split("e"); // the exponent after rounding to 6 digits
  const x = Number(e);
  if (x < -4 || x >= 6) {
    return `${mant.replace(/\.?0+$/, "")}e${x < 0 ? "-" : "+"}${String(Math.abs(x)).padStart(2, "0")}`;
  }
  return v.toFixed(5 - x).replace(/\.0+$|(\.\d*?)0+$/, "$1");
}

function disposalKinds(r: GetStatisticsResponse): string[] {
  const kinds: string[] = [];
  for (const u of r.units) for (const d of u.closedByDisposal) if (!kinds.includes(d.disposal)) kinds.push(d.disposal);
  return kinds;
}

function disposalCount(u: UnitStats, kind: string): bigint {
  return u.closedByDisposal.find((d) => d.disposal === kind)?.count ?? 0n;
}

export function unitsCsv(r: GetStatisticsResponse): string {
  const kinds = disposalKinds(r);
  const zero = new Set(r.zeroDisposalUnits.map((z) => z.unitId));
  const cols = [
    "unit_id", "unit_code", "unit_name", "received", "preliminary_checks_started", "filed", "closed",
    "transferred_to_judicial", "overdue_now", "median_days_accepted", "median_days_preliminary_check",
    "median_days_filed", "zero_disposal", ...kinds.map((k) => `closed_${k}`),
  ];
  const lines = [cols.map(field).join(",")];
  for (const u of r.units) {
    lines.push(
      [
        String(u.unitId), field(u.unitCode), field(u.unitName), String(u.received), String(u.preliminaryChecksStarted),
        String(u.filed), String(u.closed), String(u.transferredToJudicial), String(u.overdueNow),
        fmtG(u.medianDaysAccepted), fmtG(u.medianDaysPreliminaryCheck), fmtG(u.medianDaysFiled),
        zero.has(u.unitId) ? "yes" : "no", ...kinds.map((k) => String(disposalCount(u, k))),
      ].join(","),
    );
  }
  const has = new Set(r.units.map((u) => u.unitId));
  for (const z of r.zeroDisposalUnits) {
    if (has.has(z.unitId)) continue;
    lines.push(`${z.unitId},${field(z.unitCode)},${field(z.unitName)},,,,,,,,,,yes${",".repeat(kinds.length)}`);
  }
  return lines.map((l) => `${l}\r\n`).join("");
}
