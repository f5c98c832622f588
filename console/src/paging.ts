// Lists that come in pages. clued ends a list reply at a row count or at about 2 MiB, whichever
// comes first, with a token for the rest (docs/CONSOLE.md, "Long lists"): a view that shows a
// whole list asks again with each token until the last page, within bounds, and says so on the
// page when it stops short (partialNote in ui.ts). Nothing of the DOM here: node tests it.

/** Pages a view that shows a whole list reads at most: up to 10,000 clues, cases or notes, or
 * 20,000 events of a clue's history (pages that end by size hold fewer). */
export const MAX_PAGES = 20;

/** One page: its rows and the token for the next one ("" on the last page). */
export interface Page<T> {
  rows: T[];
  next: string;
}

/** The rows of every page read; complete is false when the reading stopped before the last. */
export interface Gathered<T> {
  rows: T[];
  complete: boolean;
  pages: number;
  /** Why it stopped short: the page cap, or a token that came back a second time. */
  cut?: "cap" | "loop";
}

/**
 * Reads the pages of one list in order, from the first (token "") to the one without a next
 * token, and at most maxPages of them: a token already sent (a server that went round in a
 * circle, or one that answered "more" without a row to go on from) ends the reading as well,
 * so that no list makes the page call the server without end.
 */
export async function allPages<T>(page: (token: string) => Promise<Page<T>>, maxPages = MAX_PAGES): Promise<Gathered<T>> {
  const rows: T[] = [];
  const sent = new Set<string>();
  let token = "";
  for (let pages = 1; ; pages++) {
    sent.add(token);
    const p = await page(token);
    for (const r of p.rows) rows.push(r);
    if (!p.next) return { rows, complete: true, pages };
    if (sent.has(p.next)) return { rows, complete: false, pages, cut: "loop" };
    if (pages >= maxPages) return { rows, complete: false, pages, cut: "cap" };
    token = p.next;
  }
}
