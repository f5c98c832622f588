// Bundled by esbuild for node. For tests/e2e/test_console_csv.py: allPages (console/src/paging.ts)
// against made-up servers; prints one JSON line per case with what it read and which tokens it
// sent, for the test to compare with what it expects.
import { allPages, type Page } from "../src/paging";

/** A server of n rows in pages of size; page k's token is "t<k>", "" after the last. */
function server(n: number, size: number, sent: string[]) {
  return async (token: string): Promise<Page<number>> => {
    sent.push(token);
    const k = token ? Number(token.slice(1)) : 0;
    const rows = Array.from({ length: Math.max(0, Math.min(size, n - k * size)) }, (_, i) => k * size + i);
    return { rows, next: (k + 1) * size < n ? `t${k + 1}` : "" };
  };
}

async function run(name: string, page: (sent: string[]) => (token: string) => Promise<Page<number>>, maxPages?: number) {
  const sent: string[] = [];
  const g = await allPages(page(sent), maxPages);
  console.log(JSON.stringify({ name, rows: g.rows.length, last: g.rows[g.rows.length - 1] ?? null, complete: g.complete, pages: g.pages, cut: g.cut ?? null, sent }));
}

await run("one page", (sent) => server(3, 500, sent));
await run("empty", (sent) => server(0, 500, sent));
await run("three pages", (sent) => server(1201, 500, sent));
await run("to the cap", (sent) => server(10000, 10, sent), 5);
await run("default cap", (sent) => server(100000, 1000, sent));
// A server going round in a circle: page 2 names page 1's token again.
await run("circle", (sent) => async (token) => {
  sent.push(token);
  return { rows: [sent.length], next: token === "a" ? "b" : "a" };
});
// "more" without a row, as ListNotes could answer: the same after-id comes back.
await run("no progress", (sent) => async (token) => {
  sent.push(token);
  return token === "" ? { rows: [1, 2], next: "2" } : { rows: [], next: token };
});
