// The server's text with Unicode's bidirectional controls in it (docs/CONSOLE.md, "Text from
// the server"), in Debian's Chromium through playwright-core. tests/e2e/test_console.py
// stores names and titles that end in an unterminated U+202E RIGHT-TO-LEFT OVERRIDE (old
// rows) and a note with one (free text), and runs this with a JSON config; every scenario
// prints PASS or FAIL. Where Chromium draws the text is measured: what follows such a value on
// its line must stay where its order puts it.
//
//   node console_bidi.mjs CONFIG.json
import path from "node:path";
import { AXE, assert, cfg, finish, go, scenario, signedIn } from "./scenarios.mjs";

const RLO = "\u202e";
const NAMED = "<U+202E>";

/**
 * parts, found one after the other in the element's text, must be drawn in that order from
 * left to right on one line (the page is left to right): an override before them that is not
 * contained would draw them reversed, the later ones to the left.
 */
async function drawnInOrder(locator, parts) {
  const got = await locator.evaluate((el, parts) => {
    const nodes = [];
    let text = "";
    const walk = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    for (let n = walk.nextNode(); n; n = walk.nextNode()) {
      nodes.push([n, text.length]);
      text += n.data;
    }
    const at = (i) => {
      let k = nodes.length - 1;
      while (k > 0 && nodes[k][1] > i) k--;
      return [nodes[k][0], i - nodes[k][1]];
    };
    const boxes = [];
    let from = 0;
    for (const p of parts) {
      const i = text.indexOf(p, from);
      if (i < 0) return { error: `"${p}" is not in "${text}" after ${from}` };
      const r = document.createRange();
      r.setStart(...at(i));
      r.setEnd(...at(i + p.length));
      const b = r.getBoundingClientRect();
      boxes.push({ p, left: b.left, right: b.right, top: b.top, bottom: b.bottom });
      from = i + p.length;
    }
    return { text, boxes };
  }, parts);
  assert(!got.error, got.error);
  const b = got.boxes;
  for (let i = 1; i < b.length; i++) {
    const line = b[i].top < b[i - 1].bottom && b[i - 1].top < b[i].bottom;
    assert(line && b[i - 1].right <= b[i].left + 0.5, `"${b[i].p}" is drawn before "${b[i - 1].p}" in "${got.text}": ${JSON.stringify(b)}`);
  }
}

/** The value's text is in an element that isolates it: no override inside reaches out. */
async function isolated(locator, value) {
  const how = await locator.evaluate((el, value) => {
    const walk = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    for (let n = walk.nextNode(); n; n = walk.nextNode()) {
      if (!n.data.includes(value)) continue;
      for (let e = n.parentElement; e && e !== el.parentElement; e = e.parentElement) {
        const u = getComputedStyle(e).unicodeBidi;
        if (u === "isolate" || u === "plaintext" || u === "isolate-override") return u;
        if (getComputedStyle(e).display !== "inline") break; // a block ends the paragraph: too late
      }
      return "not isolated";
    }
    return `"${value}" is not in "${el.textContent}"`;
  }, value);
  assert(how === "isolate" || how === "plaintext", `${JSON.stringify(value)}: ${how}`);
}

await scenario("a clue's names and title show U+202E by name and reorder nothing after them; its note keeps it, isolated", async () => {
  const g1 = await signedIn(cfg.tokens.g1_leader);
  await go(g1, `#/clue/${cfg.clue}`);
  await g1.locator("ol.timeline > li").first().waitFor();
  // The user's name in the header: unit and role stay after it.
  const who = g1.locator("header .who");
  assert((await who.textContent()).includes(`G1-leader${NAMED}甲乙`), `header: ${await who.textContent()}`);
  await drawnInOrder(who, ["G1-leader", "甲乙", "G1"]);
  // The title in the heading, after the registration number.
  const title = g1.locator("main h2.page-title");
  const heading = await title.textContent();
  assert(heading.includes(`双向控制符${NAMED}庚辛`) && !heading.includes(RLO), `heading: ${heading}`);
  await drawnInOrder(title, ["·", "双向控制符", "庚辛"]);
  // The person's name, then their position.
  const subject = g1.locator("dl.facts dd").filter({ hasText: "副处长" });
  assert((await subject.textContent()).includes(`王某${NAMED}壬癸`), `subject: ${await subject.textContent()}`);
  await drawnInOrder(subject, ["壬癸", "副处长"]);
  // The note's byline and the history's: the unit and the seq after the author's name.
  const note = g1.locator("ul.notes > li").last();
  await drawnInOrder(note.locator("div.muted"), ["甲乙", "G1"]);
  await drawnInOrder(g1.locator("ol.timeline > li").first().locator("div.muted"), ["甲乙", "G1", "seq"]);
  // Free text keeps its control as stored, in an element that isolates it; so does the summary.
  assert((await note.textContent()).includes(`会商${RLO}子丑`), `note: ${await note.textContent()}`);
  await isolated(note, "子丑");
  const summary = g1.locator("dl.facts dd").filter({ hasText: "摘要" });
  assert((await summary.textContent()) === `摘要${RLO}正文`, `summary: ${await summary.textContent()}`);
  await isolated(summary, "正文");
  // The names shown keep WCAG AA contrast, in the header too.
  await g1.evaluate(AXE);
  const axe = await g1.evaluate(() =>
    window.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } }),
  );
  assert(axe.violations.length === 0, `axe: ${axe.violations.map((v) => `${v.id}: ${v.help}`).join("; ")}`);
  await g1.screenshot({ path: path.join(cfg.shots, "clue-bidi.png"), fullPage: true });
  await g1.context().close();
});

await scenario("a joint case's title shows U+202E by name", async () => {
  const r1 = await signedIn(cfg.tokens.r1_leader);
  await go(r1, `#/cases/${cfg.case}`);
  const heading = r1.locator("main section.card h2").first();
  await heading.waitFor();
  const text = await heading.textContent();
  assert(text.includes(`${NAMED}戊己`) && !text.includes(RLO), `case heading: ${text}`);
  await drawnInOrder(heading, [`#${cfg.case}`, "戊己"]);
  await r1.context().close();
});

await scenario("statistics show a unit's name with U+202E by name; the CSV keeps it", async () => {
  const auditor = await signedIn(cfg.tokens.auditor);
  await go(auditor, "#/stats");
  await auditor.getByTestId("stats-from").fill(cfg.period[0]);
  await auditor.getByTestId("stats-to").fill(cfg.period[1]);
  await auditor.getByRole("button", { name: "查询" }).click();
  await auditor.getByTestId("stats-csv").waitFor();
  const cell = auditor.locator("section table tbody tr td:first-child").filter({ hasText: "丙丁" });
  const text = await cell.textContent();
  assert(text.startsWith("X1 ") && text.includes(`${NAMED}丙丁`) && !text.includes(RLO), `unit cell: ${text}`);
  await drawnInOrder(cell, ["X1", "丙丁"]);
  const zero = auditor.getByTestId("zero-units").locator("li").filter({ hasText: "丙丁" });
  assert((await zero.textContent()).includes(`${NAMED}丙丁`), `zero-disposal list: ${await zero.textContent()}`);
  const [download] = await Promise.all([auditor.waitForEvent("download"), auditor.getByTestId("stats-csv").click()]);
  await download.saveAs(cfg.download);
  await auditor.context().close();
});

await finish();
