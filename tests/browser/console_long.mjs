// The console's lists longer than one page of clued (docs/CONSOLE.md, "Long lists"), in
// Debian's Chromium through playwright-core. tests/e2e/test_console.py makes the data, checks
// that the server cuts each list into pages, and runs this with a JSON config; every scenario
// prints PASS or FAIL; the ledger's "show more" is pictured in cfg.shots.
//
//   node console_long.mjs CONFIG.json
import path from "node:path";
import { AXE, assert, cfg, finish, go, scenario, signedIn } from "./scenarios.mjs";

/** The section of the page whose heading is name. */
function sectionOf(page, name) {
  return page.locator("section", { has: page.getByRole("heading", { name, exact: true }) });
}

const g1 = await signedIn(cfg.tokens.g1_leader, 30000);
const auditor = await signedIn(cfg.tokens.auditor, 30000);

await scenario("a clue's history, notes and proposals past one page are shown whole", async () => {
  await go(g1, `#/clue/${cfg.long_clue.id}`);
  await sectionOf(g1, "历史").waitFor();
  const events = await g1.locator("ol.timeline > li").count();
  const notes = await g1.locator("ul.notes > li").count();
  const proposals = sectionOf(g1, "提议").locator("li.proposal");
  assert(events === cfg.long_clue.events, `${events} events shown of ${cfg.long_clue.events}`);
  assert(notes === cfg.long_clue.notes, `${notes} notes shown of ${cfg.long_clue.notes}`);
  assert((await proposals.count()) === cfg.long_clue.proposals, `${await proposals.count()} proposals shown of ${cfg.long_clue.proposals}`);
  // The oldest, from the last page, is last.
  assert((await proposals.last().locator("strong").textContent()).startsWith(`#${cfg.long_clue.oldest_proposal} `), "the oldest proposal is not last");
  // The newest of each, from the last page, is there.
  assert((await g1.locator("ul.notes > li").last().textContent()).includes(`会商${cfg.long_clue.notes}`), "the last note is missing");
  assert((await g1.getByTestId("list-partial").count()) === 0, "a whole list is said to be cut short");
});

await scenario("the joint cases past the first page are listed", async () => {
  await go(auditor, "#/cases");
  await sectionOf(auditor, `#${cfg.cases.oldest} ${cfg.cases.title}`).waitFor();
  const cards = await auditor.locator("main section.card").count();
  assert(cards === cfg.cases.count, `${cards} cases shown of ${cfg.cases.count}`);
  assert((await auditor.getByTestId("list-partial").count()) === 0, "a whole list is said to be cut short");
});

await scenario("the statistics list the joint cases past their first page", async () => {
  await go(auditor, "#/stats");
  await auditor.getByTestId("stats-from").fill(cfg.period[0]);
  await auditor.getByTestId("stats-to").fill(cfg.period[1]);
  await auditor.getByRole("button", { name: "查询" }).click();
  const rows = sectionOf(auditor, "联合案件").locator("tbody tr");
  await rows.first().waitFor();
  assert((await rows.count()) === cfg.stats_cases.count, `${await rows.count()} cases shown of ${cfg.stats_cases.count}`);
  assert((await rows.last().locator("td").first().textContent()) === String(cfg.stats_cases.last), "the last case is not last");
  assert((await auditor.getByTestId("list-partial").count()) === 0, "a whole list is said to be cut short");
});

await scenario("the queue's overdue clue from the second page comes first, in red", async () => {
  await go(g1, "#/queue");
  const rows = sectionOf(g1, "可办理的线索").locator("tbody tr");
  await rows.first().waitFor();
  assert((await rows.count()) === cfg.queue.count, `${await rows.count()} clues shown of ${cfg.queue.count}`);
  const first = rows.first();
  assert((await first.locator(`a[href="#/clue/${cfg.queue.overdue}"]`).count()) === 1, "the overdue clue is not first");
  assert((await first.getAttribute("class")) === "row-overdue", "the overdue clue is not in red");
});

await scenario("the ledger shows its newest items and the rest after show more", async () => {
  await go(g1, "#/ledger");
  const items = sectionOf(g1, "整改事项");
  const rows = items.locator("tbody tr");
  await rows.first().waitFor();
  assert((await rows.count()) === 500, `${await rows.count()} items on the first page`);
  assert((await g1.getByTestId("ledger-count").textContent()).includes("500"), "the count does not say 500");
  await g1.evaluate(AXE);
  const axe = await g1.evaluate(() =>
    window.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } }),
  );
  assert(axe.violations.length === 0, `axe: ${axe.violations.map((v) => `${v.id}: ${v.help}`).join("; ")}`);
  await g1.getByRole("button", { name: "显示更多" }).scrollIntoViewIfNeeded();
  await g1.screenshot({ path: path.join(cfg.shots, "ledger-more.png") });
  await g1.getByRole("button", { name: "显示更多" }).click();
  await g1.getByTestId("ledger-count").filter({ hasText: `已显示全部 ${cfg.items.count} 项` }).waitFor();
  assert((await rows.count()) === cfg.items.count, `${await rows.count()} items shown of ${cfg.items.count}`);
  assert((await rows.last().locator("td").first().textContent()) === String(cfg.items.oldest), "the oldest item is not last");
  assert(!(await g1.getByRole("button", { name: "显示更多" }).isVisible()), "show more stays after the last page");
});

await scenario("the ledger's figures past one page are shown whole, with the total", async () => {
  await go(auditor, "#/ledger");
  const figures = sectionOf(auditor, "各驻在单位");
  const lines = figures.locator("tbody tr");
  await figures.getByRole("cell", { name: cfg.ledger.last, exact: true }).waitFor();
  assert((await lines.count()) === cfg.ledger.lines, `${await lines.count()} host units shown of ${cfg.ledger.lines}`);
  const total = await auditor.getByTestId("ledger-total").textContent();
  assert(total.includes(`发现 ${cfg.ledger.found} 项`), `the total says ${total}`);
  assert((await auditor.getByTestId("list-partial").count()) === 0, "a whole list is said to be cut short");
});

await finish();
