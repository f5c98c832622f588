// The unit figures as CSV, byte for byte what `cluectl stats --csv` prints for the same
// GetStatistics answer (client/cli/cmd_stats.c): RFC 4180, CRLF line ends, %g medians.
import type { GetStatisticsResponse, UnitStats } from "../gen/clue/v1/stats_pb";

// A text field as table_csv_field() in client/cli/table.c writes it: led by a single quote
// when a spreadsheet would take it for a formula (= + - @, a tab or a CR first), quoted when
// it holds a comma, a quote or a line break, or a semicolon or a tab (the separators of other
// locales, which would start a cell inside it). Numbers never go through it.
function field(s: string): string {
  const text = /^[=+\-@\t\r]/.test(s) ? `'${s}` : s;
  return /[,;\t"\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/**
 * C's printf("%g") as glibc writes it: 6 significant digits, trailing zeros dropped, exponent
 * form outside 1e-4 <= |v| < 1e6 (judged after rounding). glibc rounds the double's exact
 * binary value in the current rounding mode, by default to nearest with an exact tie to even
 * (10.03125 gives 10.0312, 1024.125 gives 1024.12); toFixed and toExponential round a tie up,
 * so the digits are taken from the exact value here instead.
 */
export function fmtG(v: number): string {
  const P = 6;
  if (Number.isNaN(v)) return "nan";
  if (!isFinite(v)) return v > 0 ? "inf" : "-inf";
  const sign = v < 0 || Object.is(v, -0) ? "-" : "";
  if (v === 0) return `${sign}0`;
  const [all, scale] = exactDigits(Math.abs(v)); // |v| = all × 10^-scale
  let x = all.length - 1 - scale; // the decimal exponent of the first digit
  let head = BigInt(all.slice(0, P).padEnd(P, "0"));
  const rest = all.slice(P);
  if (rest !== "" && (rest[0] > "5" || (rest[0] === "5" && (/[1-9]/.test(rest.slice(1)) || head % 2n === 1n)))) {
    head += 1n;
    if (head === 10n ** BigInt(P)) {
      head /= 10n;
      x += 1;
    }
  }
  const digits = head.toString();
  const point = (int: string, frac: string) => (frac === "" ? int : `${int}.${frac}`);
  if (x < -4 || x >= P) {
    const mant = point(digits[0], digits.slice(1).replace(/0+$/, ""));
    return `${sign}${mant}e${x < 0 ? "-" : "+"}${String(Math.abs(x)).padStart(2, "0")}`;
  }
  if (x >= 0) return sign + point(digits.slice(0, x + 1), digits.slice(x + 1).replace(/0+$/, ""));
  return sign + point("0", ("0".repeat(-x - 1) + digits).replace(/0+$/, ""));
}

/** The decimal digits of finite v > 0 exactly, without leading zeros, and how many of them
 * follow the decimal point: v = mantissa × 2^e, and for e < 0 that is mantissa × 5^-e / 10^-e. */
function exactDigits(v: number): [string, number] {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, v);
  const bits = view.getBigUint64(0);
  const biased = Number((bits >> 52n) & 0x7ffn);
  const fraction = bits & ((1n << 52n) - 1n);
  const mant = biased === 0 ? fraction : fraction | (1n << 52n); // subnormal: no implicit 1
  const e = biased === 0 ? -1074 : biased - 1075;
  return e >= 0 ? [(mant << BigInt(e)).toString(), 0] : [(mant * 5n ** BigInt(-e)).toString(), -e];
}

function disposalKinds(r: GetStatisticsResponse): string[] {
  const kinds: string[] = [];
  for (const u of r.units) for (const d of u.closedByDisposal) if (!kinds.includes(d.disposal)) kinds.push(d.disposal);
  return kinds;
}

function disposalCount(u: UnitStats, kind: string): bigint {
  return u.closedByDisposal.find((d) => d.disposal === kind)?.count ?? 0n;
}

// A median, or an empty cell where there is none (0: no clue left the stage), as the table's "-".
function median(v: number): string {
  return v > 0 ? fmtG(v) : "";
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
          String(u.unitId),
          field(u.unitCode),
          field(u.unitName),
          String(u.received),
          String(u.preliminaryChecksStarted),
          String(u.filed),
          String(u.closed),
          String(u.transferredToJudicial),
          String(u.overdueNow),
          median(u.medianDaysAccepted),
          median(u.medianDaysPreliminaryCheck),
          median(u.medianDaysFiled),
          zero.has(u.unitId) ? "yes" : "no",
          ...kinds.map((k) => String(disposalCount(u, k))),
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
