// The clue state machine of DESIGN.md §2, as data for drawing and for the move form. The
// server holds the real table and refuses any other move (FAILED_PRECONDITION).
import { s } from "./dom";
import { t, tName } from "./i18n";
import { ClueState } from "../gen/clue/v1/common_pb";

export interface Move {
  from: ClueState;
  to: ClueState;
  coReview: boolean;
}

export const MOVES: Move[] = [
  { from: ClueState.ACCEPTED, to: ClueState.PRELIMINARY_CHECK, coReview: false },
  { from: ClueState.ACCEPTED, to: ClueState.CLOSED, coReview: false },
  { from: ClueState.PRELIMINARY_CHECK, to: ClueState.FILED, coReview: true },
  { from: ClueState.PRELIMINARY_CHECK, to: ClueState.CLOSED, coReview: false },
  { from: ClueState.FILED, to: ClueState.CLOSED, coReview: false },
  { from: ClueState.FILED, to: ClueState.TRANSFERRED_TO_JUDICIAL, coReview: true },
];

export function movesFrom(state: ClueState): Move[] {
  return MOVES.filter((m) => m.from === state);
}

export function isTerminal(state: ClueState): boolean {
  return state === ClueState.CLOSED || state === ClueState.TRANSFERRED_TO_JUDICIAL;
}

const W = 130;
const H = 40;
const POS: Record<number, [number, number]> = {
  [ClueState.ACCEPTED]: [80, 120],
  [ClueState.PRELIMINARY_CHECK]: [250, 120],
  [ClueState.FILED]: [420, 120],
  [ClueState.CLOSED]: [600, 45],
  [ClueState.TRANSFERRED_TO_JUDICIAL]: [600, 195],
};

function edgePath(m: Move): string {
  const [x1, y1] = POS[m.from];
  const [x2, y2] = POS[m.to];
  if (m.to === ClueState.CLOSED && m.from !== ClueState.FILED) {
    // Over the top of the row, to the left side of CLOSED.
    const sy = y1 - H / 2;
    const cx = (x1 + x2) / 2 - 40;
    return `M ${x1} ${sy} Q ${cx} ${m.from === ClueState.ACCEPTED ? -30 : 10} ${x2 - W / 2} ${y2}`;
  }
  if (y1 === y2) return `M ${x1 + W / 2} ${y1} L ${x2 - W / 2} ${y2}`;
  return `M ${x1 + W / 2} ${y1} L ${x2 - W / 2} ${y2 + (y2 < y1 ? 8 : -8)}`;
}

// A label wider than about this many characters of Latin text at 14px does not fit in a box
// W wide: it goes on two lines, split at the space nearest its middle.
const LINE_CHARS = 15;

/** A state's name centred in its box; on two lines when it is too long for one. */
function label(x: number, y: number, text: string): SVGElement {
  const mid = text.length / 2;
  let cut = -1;
  if (text.length > LINE_CHARS)
    for (let i = 0; i < text.length; i++) if (text[i] === " " && (cut < 0 || Math.abs(i - mid) < Math.abs(cut - mid))) cut = i;
  if (cut < 0) return s("text", { x, y: y + 5, "text-anchor": "middle" }, text);
  return s(
    "text",
    { x, y: y - 3, "text-anchor": "middle", class: "two-lines" },
    s("tspan", { x, dy: "0" }, text.slice(0, cut)),
    s("tspan", { x, dy: "15" }, text.slice(cut + 1)),
  );
}

/** The machine with the current state filled and the moves allowed from it drawn strong. */
export function drawMachine(current: ClueState, allowedForCaller: boolean): SVGElement {
  const allowed = movesFrom(current);
  const names = allowed.map((m) => tName(ClueState[m.to]) + (m.coReview ? " (会商/co-review)" : ""));
  const desc = t("stateMachineDesc", tName(ClueState[current]), names.length ? names.join("、") : t("none"));
  const svg = s(
    "svg",
    { viewBox: "0 0 700 240", class: "machine", role: "img", "aria-label": desc },
    s("title", null, desc),
    s(
      "defs",
      null,
      s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" }, s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow-dim" })),
      s("marker", { id: "arrow-on", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" }, s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow-on" })),
    ),
  );
  for (const m of MOVES) {
    const on = m.from === current;
    svg.append(
      s("path", {
        d: edgePath(m),
        class: `edge${on ? " edge-on" : ""}${m.coReview ? " edge-review" : ""}${on && !allowedForCaller ? " edge-other" : ""}`,
        "marker-end": on ? "url(#arrow-on)" : "url(#arrow)",
      }),
    );
  }
  for (const st of [ClueState.ACCEPTED, ClueState.PRELIMINARY_CHECK, ClueState.FILED, ClueState.CLOSED, ClueState.TRANSFERRED_TO_JUDICIAL]) {
    const [x, y] = POS[st];
    const cur = st === current;
    const next = allowed.some((m) => m.to === st);
    svg.append(
      s(
        "g",
        { class: `node${cur ? " node-current" : ""}${next ? " node-next" : ""}` },
        s("rect", { x: x - W / 2, y: y - H / 2, width: W, height: H, rx: 8 }),
        label(x, y, tName(ClueState[st])),
      ),
    );
  }
  return svg;
}
