// The console at its edges (docs/CONSOLE.md): a statistics period longer than the chart, pages
// that cannot load, texts longer than the server takes in UTF-8 bytes, the state machine's
// labels in both languages, audit tabs in the background over HTTP/1.1, and a live feed behind
// a connection that goes silent. tests/e2e/test_console.py runs it with a JSON config.
//
//   node console_edges.mjs CONFIG.json
import net from "node:net";
import path from "node:path";
import { assert, browser, cfg, finish, go, scenario, signedIn } from "./scenarios.mjs";

const UNAVAILABLE = "服务器暂不可用，请稍后重试。";

async function mainText(page) {
  return (await page.locator("main").innerText()).replace(/\s+/g, " ");
}

/** A note on clue id by page (signed in as staff): one new audit event. */
async function addNote(page, clueId, text) {
  await go(page, `#/clue/${clueId}`);
  const form = page.getByTestId("note-form");
  await form.getByLabel("内容").fill(text);
  await form.getByRole("button", { name: "添加" }).click();
  await page.locator("main").getByText(text).first().waitFor();
}

await scenario("a period longer than 24 months charts the latest 24 and says which are left out", async () => {
  const page = await signedIn(cfg.tokens.auditor);
  await go(page, "#/stats");
  await page.getByTestId("stats-from").fill("2024-01-01");
  await page.getByTestId("stats-to").fill("2026-12-31");
  await page.getByRole("button", { name: "查询" }).click();
  await page.getByTestId("stats-months-cut").waitFor();
  const shown = await page.getByTestId("stats-months").innerText();
  assert(shown.includes("2025-01") && shown.includes("2026-12") && shown.includes("24"), `the chart's months: ${shown}`);
  const cut = await page.getByTestId("stats-months-cut").innerText();
  assert(cut.includes("2024-01") && cut.includes("2024-12") && cut.includes("12"), `the months left out: ${cut}`);
  await page.locator("summary", { hasText: "逐月趋势" }).click();
  const rows = await page.locator("table", { has: page.locator("caption", { hasText: "逐月趋势" }) }).locator("tbody tr").allInnerTexts();
  assert(rows.length === 24 && rows[0].startsWith("2025-01") && rows[23].startsWith("2026-12"), `the chart's table: ${rows[0]} .. ${rows.at(-1)} (${rows.length})`);
  // A period within 24 months is charted whole, and says nothing is left out.
  await page.getByTestId("stats-from").fill("2025-03-15");
  await page.getByTestId("stats-to").fill("2025-05-02");
  await page.getByRole("button", { name: "查询" }).click();
  await page.getByTestId("stats-months").filter({ hasText: "2025-03" }).waitFor();
  assert((await page.getByTestId("stats-months").innerText()).includes("2025-05"), "the short period's months");
  assert((await page.getByTestId("stats-months-cut").count()) === 0, "a short period says months are left out");
  await page.screenshot({ path: path.join(cfg.shots, "stats-long-period.png"), fullPage: true });
  await page.context().close();
});

await scenario("a page that cannot load says the server is unavailable, without loading, and retries", async () => {
  const page = await signedIn(cfg.tokens.g1_leader);
  await go(page, "#/stats");
  const down = (url) => new URL(url).pathname.startsWith("/clue.v1.");
  await page.route(down, (route) => route.abort("connectionrefused"));
  for (const hash of ["#/queue", "#/cases", `#/cases/${cfg.case}`, "#/ledger", `#/clue/${cfg.clue}`]) {
    await go(page, hash);
    await page.getByTestId("error").first().waitFor();
    const text = await mainText(page);
    assert(text.includes(UNAVAILABLE), `${hash}: ${text}`);
    assert(!text.includes("加载中") && !/failed to fetch/i.test(text), `${hash} keeps loading or the browser's words: ${text}`);
    assert((await page.getByRole("button", { name: "重试" }).count()) === 1, `${hash}: no retry button`);
  }
  await page.screenshot({ path: path.join(cfg.shots, "clue-unavailable.png"), fullPage: true });
  // The server is back: retry shows the page.
  await go(page, "#/ledger");
  await page.getByTestId("error").waitFor();
  await page.unroute(down);
  await page.getByRole("button", { name: "重试" }).click();
  await page.getByTestId("ledger-count").waitFor();
  assert((await page.getByTestId("error").count()) === 0, "the error stays after a retry that worked");
  // A case that is not there (or hidden: the same answer) says so, without loading.
  await go(page, "#/cases/987654321");
  await page.getByTestId("error").waitFor();
  const text = await mainText(page);
  assert(text.includes("不存在或无权查看。") && !text.includes("加载中"), `a missing case: ${text}`);
  await page.context().close();
});

await scenario("texts are limited in UTF-8 bytes as the server limits them, with a live count", async () => {
  const page = await signedIn(cfg.tokens.g1_leader);
  const sent = [];
  page.on("request", (r) => {
    if (/SubmitClue|RequestTransition|AddNote/.test(r.url())) sent.push(r.url());
  });
  await go(page, "#/queue");
  await page.getByText("登记线索").click();
  const form = page.getByTestId("submit-form");
  const summary = form.getByLabel("摘要");
  await summary.fill("腐".repeat(6666));
  let count = await form.getByTestId("bytes").innerText();
  assert(count.includes("19998") && count.includes("20000"), `the count at 6,666 characters: ${count}`);
  assert(await summary.evaluate((el) => el.validity.valid), "19,998 bytes refused");
  await summary.fill("腐".repeat(7000));
  count = await form.getByTestId("bytes").innerText();
  assert(count.includes("21000") && count.includes("内容过长"), `the count at 7,000 characters: ${count}`);
  const why = await summary.evaluate((el) => el.validationMessage);
  assert(why.includes("21000") && why.includes("20000"), `the field's message: ${why}`);
  await form.getByLabel("标题").fill("过长的摘要");
  for (const input of await form.locator("input[required]").all()) if (!(await input.inputValue())) await input.fill("市发展改革委");
  await form.getByRole("button", { name: "登记", exact: true }).click();
  await page.waitForTimeout(500);
  assert(sent.length === 0, `a summary the server refuses was sent: ${sent}`);
  // A move's reason: 1,500 characters are 4,500 bytes, past the 4,096 a reason may hold.
  await go(page, `#/clue/${cfg.clue}`);
  const move = page.getByTestId("move-form");
  await move.getByLabel("理由").fill("查".repeat(1500));
  assert((await move.getByTestId("bytes").first().innerText()).includes("4500"), "the reason's count");
  await move.getByRole("button", { name: "提交变更" }).click();
  await page.waitForTimeout(500);
  assert(sent.length === 0, `a reason the server refuses was sent: ${sent}`);
  await move.getByLabel("理由").fill("查".repeat(1365)); // 4,095 bytes: sent, whatever the server then says
  assert(await move.getByLabel("理由").evaluate((el) => el.validity.valid), "4,095 bytes refused");
  const note = page.getByTestId("note-form");
  await note.getByLabel("内容").fill("记".repeat(21846)); // 65,538 bytes
  assert(!(await note.getByLabel("内容").evaluate((el) => el.validity.valid)), "a note past 64 KiB is not refused");
  await page.context().close();
});

await scenario("every state's label fits its box in the state machine, in Chinese and English", async () => {
  const page = await signedIn(cfg.tokens.g1_leader);
  const check = async (lang) => {
    await go(page, `#/clue/${cfg.clue}`);
    const bad = await page.evaluate(() => {
      const svg = document.querySelector("main svg.machine");
      return [...svg.querySelectorAll("g.node")].flatMap((g) => {
        const box = g.querySelector("rect").getBoundingClientRect();
        const t = g.querySelector("text").getBoundingClientRect();
        return t.left < box.left || t.right > box.right || t.top < box.top || t.bottom > box.bottom ? [g.textContent] : [];
      });
    });
    assert(bad.length === 0, `${lang}: labels outside their boxes: ${bad}`);
  };
  await check("zh");
  await page.getByRole("button", { name: /English/ }).click();
  await page.locator("main .page-title").first().waitFor();
  await check("en");
  assert((await page.locator("main svg.machine").innerHTML()).includes("judicial organs"), "no English labels");
  await page.locator("main svg.machine").screenshot({ path: path.join(cfg.shots, "machine-en.png") });
  await page.evaluate(() => localStorage.clear());
  await page.context().close();
});

/** Tell the page it is hidden (or shown), as the browser does when its tab goes to the back. */
async function setHidden(page, hidden) {
  await page.evaluate((hidden) => {
    Object.defineProperty(document, "visibilityState", { value: hidden ? "hidden" : "visible", configurable: true });
    Object.defineProperty(document, "hidden", { value: hidden, configurable: true });
    document.dispatchEvent(new Event("visibilitychange"));
  }, hidden);
}

await scenario("audit tabs in the background close their feed: a seventh tab loads over HTTP/1.1, and none misses an event", async () => {
  const ctx = await browser.newContext({ timezoneId: cfg.timezone, locale: "zh-CN", viewport: { width: 1280, height: 900 } });
  const tabs = [];
  for (let i = 0; i < 6; i++) {
    const p = await ctx.newPage();
    p.setDefaultTimeout(15000);
    await p.goto(cfg.base);
    await p.getByLabel("访问令牌").fill(cfg.tokens.auditor);
    await p.getByRole("button", { name: "登录" }).click();
    await p.locator("header nav").waitFor();
    await go(p, "#/audit");
    await p.getByTestId("feed-status").filter({ hasText: "已连接" }).waitFor();
    if (i > 0) {
      await setHidden(p, true);
      await p.getByTestId("feed-status").filter({ hasText: "已暂停" }).waitFor();
    }
    tabs.push(p);
  }
  const before = Number(await tabs[1].getByTestId("feed").getAttribute("data-last-seq"));
  const extra = await ctx.newPage();
  extra.setDefaultTimeout(10000);
  await extra.goto(cfg.base);
  await extra.getByLabel("访问令牌").fill(cfg.tokens.g1_leader);
  await extra.getByRole("button", { name: "登录" }).click();
  await extra.locator("header nav").waitFor();
  const text = `后台标签页期间的备注 ${Date.now()}`;
  await addNote(extra, cfg.clue, text);
  // Shown again, a tab resumes after its last seq: the note's event once, nothing twice.
  await setHidden(tabs[1], false);
  await tabs[1].waitForFunction(
    ({ clue }) => [...document.querySelectorAll('[data-testid="feed"] tbody tr')].some((tr) => tr.textContent.includes("note.add") && tr.textContent.includes(`clue #${clue}`)),
    { clue: cfg.clue },
  );
  const seqs = await tabs[1].$$eval('[data-testid="feed"] tbody tr', (rows) => rows.map((r) => Number(r.dataset.seq)));
  assert(new Set(seqs).size === seqs.length, "an event appears twice");
  assert(seqs.every((s, i) => i === 0 || s < seqs[i - 1]), "the feed is out of order");
  assert(seqs.some((s) => s > before), "nothing after the pause");
  await ctx.close();
});

await scenario("a live feed behind a connection that goes silent reconnects (heartbeat) and misses nothing", async () => {
  const [host, port] = new URL(cfg.base).host.split(":");
  let silent = false;
  const pairs = new Set();
  const proxy = net.createServer((c) => {
    if (silent) return c.destroy();
    const s = net.connect(Number(port), host);
    const pair = { c, s };
    pairs.add(pair);
    c.on("data", (d) => silent || s.write(d));
    s.on("data", (d) => silent || c.write(d));
    const end = () => {
      c.destroy();
      s.destroy();
      pairs.delete(pair);
    };
    for (const x of [c, s]) x.on("error", end).on("close", end);
  });
  await new Promise((r) => proxy.listen(0, "127.0.0.1", r));
  const ctx = await browser.newContext({ timezoneId: cfg.timezone, locale: "zh-CN" });
  const page = await ctx.newPage();
  page.setDefaultTimeout(15000);
  const base = `http://127.0.0.1:${proxy.address().port}/`;
  await page.goto(base);
  await page.getByLabel("访问令牌").fill(cfg.tokens.auditor);
  await page.getByRole("button", { name: "登录" }).click();
  await page.locator("header nav").waitFor();
  await page.goto(`${base}#/audit`);
  await page.getByTestId("feed-status").filter({ hasText: "已连接" }).waitFor();
  await page.waitForTimeout(1000);
  // The connection goes silent: nothing forwarded either way, nothing closed; new ones refused.
  silent = true;
  const writer = await signedIn(cfg.tokens.g1_leader);
  const text = `静默断网期间的备注 ${Date.now()}`;
  await addNote(writer, cfg.clue, text);
  // 2.5 heartbeats (25 s) without a message: the page takes the connection for dead.
  await page.waitForFunction(() => Number(document.querySelector('[data-testid="feed"]').dataset.silent ?? 0) >= 1, null, { timeout: 40000, polling: 200 });
  assert((await page.getByTestId("feed-status").innerText()).includes("连接中断"), "the status still says connected");
  silent = false; // a new path: what the old connections held is gone with them
  for (const { c, s } of pairs) {
    c.destroy();
    s.destroy();
  }
  await page.waitForFunction(
    ({ clue }) => [...document.querySelectorAll('[data-testid="feed"] tbody tr')].some((tr) => tr.textContent.includes("note.add") && tr.textContent.includes(`clue #${clue}`)),
    { clue: cfg.clue },
    { timeout: 30000 },
  );
  await page.getByTestId("feed-status").filter({ hasText: "已连接" }).waitFor();
  const seqs = await page.$$eval('[data-testid="feed"] tbody tr', (rows) => rows.map((r) => Number(r.dataset.seq)));
  assert(new Set(seqs).size === seqs.length, "an event appears twice");
  await writer.context().close();
  await ctx.close();
  for (const { c, s } of pairs) {
    c.destroy();
    s.destroy();
  }
  proxy.close();
});

await scenario("the reviewer sees the receiving organ of the transfer it is asked to approve", async () => {
  const page = await signedIn(cfg.tokens.r1_leader);
  await go(page, "#/queue");
  const toReview = page.locator("section", { has: page.getByRole("heading", { name: "待我审核的提议" }) });
  const row = toReview.locator("tr", { has: page.locator(`a[href="#/clue/${cfg.transfer.clue}"]`) });
  await row.waitFor();
  assert((await row.innerText()).includes(cfg.transfer.organ), `the queue's row does not name the organ: ${await row.innerText()}`);
  await go(page, `#/clue/${cfg.transfer.clue}`);
  const outcome = page.locator("li.proposal").getByTestId("outcome");
  await outcome.waitFor();
  const text = await outcome.innerText();
  assert(text.includes("接收机关") && text.includes(cfg.transfer.organ), `the proposal's outcome: ${text}`);
  assert((await page.locator('[data-testid^="review-"]').count()) === 1, "no review form beside it");
  await page.context().close();
});

await scenario("a success message shows above its own clue only, not above the next one opened", async () => {
  const page = await signedIn(cfg.tokens.g1_leader);
  await go(page, `#/clue/${cfg.handover.clue}`);
  const form = page.getByTestId("handover-form");
  await form.getByLabel("接收单位 id").fill(String(cfg.handover.to));
  await form.getByLabel("理由").fill("属 G2 管辖");
  await form.getByRole("button", { name: "移交" }).click();
  // The clue is G2's now: its page, loaded again, is refused; no message of the handover stays.
  await page.getByRole("alert").first().waitFor();
  await go(page, `#/clue/${cfg.clue}`);
  await page.getByTestId("clue-state").waitFor();
  assert((await page.getByRole("status").filter({ hasText: "已移交" }).count()) === 0, "the handover's message above another clue");
  await page.context().close();
});

await finish();
