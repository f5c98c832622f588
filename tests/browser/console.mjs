// Drives Debian's Chromium (headless, through playwright-core) through the console as the
// people of tests/e2e/world.py. tests/e2e/test_console.py builds the data, starts clued and
// runs this with a JSON config; every scenario prints PASS or FAIL, results go to a JSON file
// for the server-side checks that follow, screenshots to cfg.shots.
//
//   node console.mjs CONFIG.json
import fs from "node:fs";
import path from "node:path";
import { AXE, assert, browser, cfg, finish, scenario } from "./scenarios.mjs";

const TOKENS = Object.values(cfg.tokens);
const results = {};
const leaks = []; // a token seen in a URL or a console message
const axePages = []; // the pages axe-core checked, as they were shown
let axeRules = 0; // rules that passed, summed over the pages

/** A fresh browser profile (its own sessionStorage) with one page, watched for token leaks. */
async function newPage(label) {
  const ctx = await browser.newContext({
    timezoneId: cfg.timezone,
    locale: "zh-CN",
    viewport: { width: 1280, height: 900 },
    acceptDownloads: true,
  });
  const page = await ctx.newPage();
  page.setDefaultTimeout(15000);
  const watch = (what, text) => {
    for (const tok of TOKENS) if (text.includes(tok)) leaks.push(`${label}: token in ${what}: ${text.slice(0, 120)}`);
  };
  page.on("request", (r) => watch("a request URL", r.url()));
  page.on("framenavigated", (f) => watch("the page URL", f.url()));
  page.on("console", (m) => watch("the console", m.text()));
  page.on("pageerror", (e) => watch("a page error", String(e)));
  return page;
}

async function signIn(page, token) {
  await page.goto(cfg.base);
  await page.getByLabel("访问令牌").fill(token);
  await page.getByRole("button", { name: "登录" }).click();
  await page.locator("header nav").waitFor();
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(cfg.shots, `${name}.png`), fullPage: true });
}

const axeFindings = [];
async function runAxe(name, page) {
  await page.evaluate(AXE);
  const r = await page.evaluate(() =>
    window.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } }),
  );
  for (const v of r.violations) {
    axeFindings.push(`${name}: ${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(" ")).slice(0, 3).join("; ")}`);
  }
  return r.passes.length;
}

// The focus ring against the ground it is drawn on, outside the control (outline-offset), for
// every control of the page: WCAG 2.1 SC 1.4.11 (non-text contrast) asks 3:1, which axe-core
// does not check.
const focusFindings = [];
let focusChecked = 0;
async function focusContrast(name, page) {
  const r = await page.evaluate(() => {
    const rgb = (c) => c.match(/[\d.]+/g).map(Number);
    const lum = ([r, g, b]) => {
      const f = (v) => ((v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const ratio = (a, b) => {
      const [x, y] = [lum(a), lum(b)].sort((m, n) => n - m);
      return (x + 0.05) / (y + 0.05);
    };
    const ground = (el) => {
      for (; el; el = el.parentElement) {
        const c = rgb(getComputedStyle(el).backgroundColor);
        if (c.length < 4 || c[3] > 0) return c.slice(0, 3);
      }
      return [255, 255, 255];
    };
    const bad = [];
    const els = [...document.querySelectorAll("a[href], button, input, select, textarea, summary")].filter((e) => e.offsetParent !== null);
    const was = document.activeElement;
    for (const el of els) {
      el.focus({ focusVisible: true });
      if (document.activeElement !== el) continue;
      const cs = getComputedStyle(el);
      if (cs.outlineStyle === "none" || parseFloat(cs.outlineWidth) === 0) {
        bad.push(`${el.outerHTML.slice(0, 60)}: no focus ring`);
        continue;
      }
      const cr = ratio(rgb(cs.outlineColor).slice(0, 3), ground(el.parentElement));
      if (cr < 3) bad.push(`${el.outerHTML.slice(0, 60)}: ring ${cs.outlineColor} ${cr.toFixed(2)}:1`);
    }
    was?.focus?.();
    return { checked: els.length, bad };
  });
  focusChecked += r.checked;
  for (const b of r.bad) focusFindings.push(`${name}: ${b}`);
}

/** A screenshot, and axe-core's checks of the page as it is shown now. */
async function shotAndCheck(page, name) {
  await shot(page, name);
  axeRules += await runAxe(name, page);
  await focusContrast(name, page);
  axePages.push(name);
}

async function go(page, hash) {
  await page.goto(new URL(hash, cfg.base).href);
  await page.locator("main .page-title").first().waitFor();
}

async function clueState(page) {
  return (await page.getByTestId("clue-state").textContent()).trim();
}

async function clueVersion(page) {
  return Number((await page.getByTestId("clue-version").textContent()).trim());
}

async function waitClueState(page, text) {
  await page.getByTestId("clue-state").filter({ hasText: text }).waitFor();
}

/** RequestTransition sent by hand as gRPC-Web from the page, with the page's own token. */
async function rawMove(page, clueId, version, target) {
  return page.evaluate(
    async ({ clueId, version, target }) => {
      const bytes = [];
      const varint = (v) => {
        let n = BigInt(v);
        while (n > 127n) {
          bytes.push(Number(n & 127n) | 128);
          n >>= 7n;
        }
        bytes.push(Number(n));
      };
      const str = (field, s) => {
        const b = new TextEncoder().encode(s);
        varint((field << 3) | 2);
        varint(b.length);
        bytes.push(...b);
      };
      varint((1 << 3) | 0);
      varint(clueId); // clue_id
      varint((2 << 3) | 0);
      varint(version); // expected_version
      varint((3 << 3) | 0);
      varint(target); // target
      str(4, "成员越权变更"); // reason
      // details: sanction_kind (3) and persons_disciplined (4), what FILED -> CLOSED carries
      const det = new TextEncoder().encode("警告");
      varint((5 << 3) | 2);
      varint(2 + det.length + 2);
      bytes.push((3 << 3) | 2, det.length, ...det, (4 << 3) | 0, 1);
      str(6, crypto.randomUUID()); // request_id
      const body = new Uint8Array(5 + bytes.length);
      new DataView(body.buffer).setUint32(1, bytes.length);
      body.set(bytes, 5);
      const res = await fetch("/clue.v1.ClueService/RequestTransition", {
        method: "POST",
        headers: {
          "content-type": "application/grpc-web+proto",
          "x-grpc-web": "1",
          authorization: `Bearer ${sessionStorage.getItem("clued.token")}`,
        },
        body,
      });
      const buf = new Uint8Array(await res.arrayBuffer());
      let status = res.headers.get("grpc-status");
      let message = res.headers.get("grpc-message");
      let messages = 0;
      for (let i = 0; i + 5 <= buf.length; ) {
        const len = new DataView(buf.buffer, buf.byteOffset + i + 1, 4).getUint32(0);
        const chunk = buf.subarray(i + 5, i + 5 + len);
        if (buf[i] & 0x80) {
          for (const line of new TextDecoder().decode(chunk).split("\r\n")) {
            const s = line.match(/^grpc-status:\s*(\d+)/i);
            if (s) status = s[1];
            const m = line.match(/^grpc-message:\s*(.*)$/i);
            if (m) message = decodeURIComponent(m[1]);
          }
        } else messages++;
        i += 5 + len;
      }
      return { http: res.status, status, message, messages };
    },
    { clueId, version, target },
  );
}

// States and their labels (Chinese first).
const ACCEPTED = "受理";
const PRELIM = "初核";
const FILED = "立案";

const g1 = await newPage("G1 leader");
let r1;
let auditor;
let member;

await scenario("sign-in refuses a bad token, keeps a good one in sessionStorage only", async () => {
  const page = await newPage("sign-in");
  await page.goto(cfg.base);
  await page.getByLabel("访问令牌").waitFor();
  await shotAndCheck(page, "signin");
  await page.getByLabel("访问令牌").fill(`ct_${"0".repeat(64)}`);
  await page.getByRole("button", { name: "登录" }).click();
  await page.getByRole("alert").filter({ hasText: "令牌无效或已撤销" }).waitFor();
  assert((await page.evaluate(() => sessionStorage.getItem("clued.token"))) === null, "a refused token stays in sessionStorage");
  await signIn(g1, cfg.tokens.g1_leader);
  const kept = await g1.evaluate(() => ({
    session: sessionStorage.getItem("clued.token"),
    local: JSON.stringify(Object.assign({}, localStorage)),
    cookie: document.cookie,
    url: location.href,
  }));
  assert(kept.session === cfg.tokens.g1_leader, "the token is not in sessionStorage");
  assert(!kept.local.includes(cfg.tokens.g1_leader) && kept.cookie === "" && !kept.url.includes("ct_"), `token elsewhere: ${JSON.stringify(kept)}`);
  assert((await g1.locator("header .who").textContent()).includes("G1-leader"), "the header does not name the user");
});

await scenario("the queue shows overdue and soon-due deadlines and a handover arrival", async () => {
  await go(g1, "#/queue");
  const overdue = g1.locator("tr.row-overdue", { has: g1.locator(`a[href="#/clue/${cfg.overdue_clue}"]`) });
  await overdue.waitFor();
  assert((await overdue.textContent()).includes("已逾期"), "the overdue row does not say so");
  assert((await overdue.locator(".badge-overdue").count()) === 1, "no red badge");
  // A stage falls due at the time of day it began: the badge shows that time, not a date alone.
  const badge = await overdue.locator(".badge-overdue").textContent();
  assert(/\d{4}\/\d{1,2}\/\d{1,2} \d{1,2}:\d\d:\d\d/.test(badge), `the deadline has no time of day: ${badge}`);
  const soon = g1.locator("tr.row-soon");
  assert((await soon.count()) >= 1 && (await soon.first().textContent()).includes("即将到期"), "no soon-due row");
  const arrivals = g1.locator("section", { has: g1.getByRole("heading", { name: "移交来的线索" }) });
  await arrivals.locator(`a[href="#/clue/${cfg.handed_clue}"]`).waitFor();
  assert((await arrivals.textContent()).includes("G2"), "the arrival does not name the unit it came from");
  await shotAndCheck(g1, "queue");
});

await scenario("a group leader submits a clue and moves it to preliminary check", async () => {
  await g1.getByText("登记线索").click();
  const form = g1.getByTestId("submit-form");
  results.clue_title = `浏览器登记的线索 ${Date.now()}`;
  await form.getByLabel("标题").fill(results.clue_title);
  await form.getByLabel("摘要").fill("反映某局处长违规接受宴请");
  await form.getByLabel("来源").selectOption({ label: "审计移交" });
  await form.getByLabel("被反映人姓名").fill("赵某");
  await form.getByLabel("职务").fill("处长");
  await form.getByLabel("驻在单位").fill("市发展改革委");
  await form.getByRole("button", { name: "登记" }).click();
  await g1.waitForURL(/#\/clue\/\d+$/);
  results.clue_id = Number(g1.url().split("/").pop());
  await waitClueState(g1, ACCEPTED);
  const move = g1.getByTestId("move-form");
  await move.getByLabel("变更为").selectOption({ label: PRELIM });
  await move.getByLabel("理由").fill("线索具有可查性，开展初核");
  await move.getByRole("button", { name: "提交变更" }).click();
  await waitClueState(g1, PRELIM);
  await g1.getByRole("status").filter({ hasText: `已变更为 ${PRELIM}` }).waitFor();
});

await scenario("the group proposes filing; the liaison room's leader sees it in the queue and approves", async () => {
  const move = g1.getByTestId("move-form");
  await move.getByLabel("变更为").selectOption({ label: `${FILED} (会商 co-review)` });
  await move.getByLabel("理由").fill("初核发现违纪事实，拟立案");
  await move.getByRole("button", { name: "提交变更" }).click();
  await g1.getByRole("status").filter({ hasText: "待 R1 审核" }).waitFor();
  await waitClueState(g1, PRELIM);
  assert((await g1.getByTestId("move-form").count()) === 0, "the move form stays while a proposal is pending");

  r1 = await newPage("R1 leader");
  await signIn(r1, cfg.tokens.r1_leader);
  await go(r1, "#/queue");
  const toReview = r1.locator("section", { has: r1.getByRole("heading", { name: "待我审核的提议" }) });
  const link = toReview.locator(`a[href="#/clue/${results.clue_id}"]`);
  await link.waitFor();
  assert((await toReview.textContent()).includes("G1-leader"), "the proposal does not name who raised it");
  await shotAndCheck(r1, "review");
  await link.click();
  await waitClueState(r1, PRELIM);
  const review = r1.locator('[data-testid^="review-"]');
  await review.getByLabel("审核意见").fill("同意立案");
  await review.getByRole("button", { name: "同意" }).click();
  await waitClueState(r1, FILED);
  // The group's page, reloaded, shows the approval.
  await g1.reload();
  await waitClueState(g1, FILED);
  assert((await g1.locator(".badge-approved").count()) === 1, "the proposal is not shown approved");
});

await scenario("a move with a stale version shows changed meanwhile, reload", async () => {
  await go(g1, `#/clue/${results.clue_id}`);
  const before = await clueVersion(g1);
  // The same leader in another window extends the deadline: the version moves on.
  const other = await newPage("G1 leader, second window");
  await signIn(other, cfg.tokens.g1_leader);
  await go(other, `#/clue/${results.clue_id}`);
  const extend = other.getByTestId("extend-form");
  await extend.getByLabel("延长天数").fill("15");
  await extend.getByLabel("理由").fill("需调取银行流水");
  await extend.getByRole("button", { name: "延期" }).click();
  await other.getByText("本阶段已延期过一次。").waitFor();
  results.version_after_extend = await clueVersion(other);
  assert(results.version_after_extend === before + 1, `version ${before} -> ${results.version_after_extend}`);
  // The first window still shows the old version and sends it.
  const move = g1.getByTestId("move-form");
  await move.getByLabel("变更为").selectOption({ label: "了结/结案" });
  await move.getByLabel("理由").fill("审理终结");
  await move.getByLabel("处分种类").fill("党内警告");
  await move.getByRole("button", { name: "提交变更" }).click();
  const alert = g1.getByRole("alert").filter({ hasText: "已被他人修改，请刷新" });
  await alert.waitFor();
  await shotAndCheck(g1, "clue-stale");
  await alert.getByRole("button", { name: "刷新" }).click();
  await g1.getByTestId("clue-version").filter({ hasText: String(results.version_after_extend) }).waitFor();
  await waitClueState(g1, FILED);
  await shotAndCheck(g1, "clue");
  await other.context().close();
});

await scenario("a member sees no move form, and the server refuses the move the page sends anyway", async () => {
  member = await newPage("G1 member");
  await signIn(member, cfg.tokens.g1_member);
  // The member's queue lists the clue they handle; its page names them.
  await go(member, "#/queue");
  const assigned = member.locator("section", { has: member.getByRole("heading", { name: "指派给我的线索（承办人）" }) });
  await assigned.locator(`a[href="#/clue/${cfg.assigned_clue}"]`).click();
  await member.locator("dl.facts dd").filter({ hasText: /^G1-member \(G1\)$/ }).waitFor();
  await go(member, `#/clue/${results.clue_id}`);
  await waitClueState(member, FILED);
  for (const form of ["move-form", "handover-form", "extend-form"]) {
    assert((await member.getByTestId(form).count()) === 0, `a member sees the ${form}`);
  }
  assert((await member.getByTestId("note-form").count()) === 1, "a member may add notes");
  assert((await member.locator('[data-testid^="review-"]').count()) === 0, "a member sees review buttons");
  await shotAndCheck(member, "clue-member");
  const r = await rawMove(member, results.clue_id, results.version_after_extend, 4);
  results.member_move = r;
  assert(r.status === "7", `the server answered ${JSON.stringify(r)}, not PERMISSION_DENIED (7)`);
  assert(r.messages === 0, "a refused move answered with a message");
  await member.reload();
  await waitClueState(member, FILED);
  assert((await clueVersion(member)) === results.version_after_extend, "the refused move changed the version");
});

await scenario("the auditor's live feed shows new events, resumes after the stream ends, verifies the chain", async () => {
  auditor = await newPage("auditor");
  await signIn(auditor, cfg.tokens.auditor);
  await go(auditor, "#/audit");
  await auditor.getByTestId("verify-status").filter({ hasText: "校验通过" }).waitFor();
  await auditor.getByTestId("checkpoint").waitFor();
  const feed = auditor.getByTestId("feed");
  await auditor.waitForFunction(() => Number(document.querySelector('[data-testid="feed"]').dataset.lastSeq) > 0);
  const noteAndSee = async (text) => {
    await go(g1, `#/clue/${results.clue_id}`);
    const form = g1.getByTestId("note-form");
    await form.getByLabel("备注类型").selectOption({ label: "问题会商记录" });
    await form.getByLabel("内容").fill(text);
    const last = Number(await feed.getAttribute("data-last-seq"));
    const t0 = Date.now();
    await form.getByRole("button", { name: "添加" }).click();
    await auditor.waitForFunction(
      ({ last, clue }) =>
        [...document.querySelectorAll('[data-testid="feed"] tbody tr')].some(
          (tr) => Number(tr.dataset.seq) > last && tr.textContent.includes("note.add") && tr.textContent.includes(`clue #${clue}`),
        ),
      { last, clue: results.clue_id },
      { timeout: 10000, polling: 20 },
    );
    return Date.now() - t0;
  };
  results.feed_latency_ms = [await noteAndSee("第一次会商：同意立案审查")];
  // --max-stream-age ends the stream every few seconds; the page resumes after its last seq.
  await auditor.waitForFunction(() => Number(document.querySelector('[data-testid="feed"]').dataset.reconnects) >= 1, null, { timeout: 20000 });
  await auditor.getByTestId("feed-status").filter({ hasText: "已连接" }).waitFor();
  results.feed_latency_ms.push(await noteAndSee("第二次会商：补充证据"));
  const seqs = await auditor.$$eval('[data-testid="feed"] tbody tr', (rows) => rows.map((r) => Number(r.dataset.seq)));
  assert(new Set(seqs).size === seqs.length, "an event appears twice in the feed");
  assert(seqs.every((s, i) => i === 0 || s < seqs[i - 1]), "the feed is not in seq order");
  results.feed_reconnects = Number(await feed.getAttribute("data-reconnects"));
  for (const ms of results.feed_latency_ms) assert(ms < 5000, `an event took ${ms} ms to reach the feed`);
  await shotAndCheck(auditor, "audit");
});

await scenario("statistics show the generated counts and zero-disposal units, and download the CSV", async () => {
  // What the data set made, plus what the browser did: G1 received one more clue, moved it to
  // preliminary check and had it filed.
  const want = structuredClone(cfg.want);
  want.G1.received += 1;
  want.G1.preliminary_checks_started += 1;
  want.G1.filed += 1;
  await go(auditor, "#/stats");
  await auditor.getByTestId("stats-from").fill(cfg.period[0]);
  await auditor.getByTestId("stats-to").fill(cfg.period[1]);
  await auditor.getByRole("button", { name: "查询" }).click();
  await auditor.getByTestId("stats-csv").waitFor();
  const rows = await auditor.$$eval("section table tbody tr", (trs) =>
    trs.map((tr) => ({ cells: [...tr.children].map((td) => td.textContent.trim()), zero: tr.classList.contains("row-zero") })),
  );
  for (const [code, fig] of Object.entries(want)) {
    const row = rows.find((r) => r.cells[0].startsWith(`${code} `));
    assert(row, `no row for ${code}`);
    const got = row.cells.slice(1, 6).map(Number);
    const exp = [fig.received, fig.preliminary_checks_started, fig.filed, fig.closed, fig.transferred_to_judicial];
    assert(JSON.stringify(got) === JSON.stringify(exp), `${code}: ${got} != ${exp}`);
  }
  const zero = rows.filter((r) => r.zero).map((r) => r.cells[0].split(" ")[0]).sort();
  assert(JSON.stringify(zero) === JSON.stringify([...cfg.zero].sort()), `zero-disposal rows ${zero}`);
  const listed = (await auditor.getByTestId("zero-units").textContent()) ?? "";
  for (const code of cfg.zero) assert(listed.includes(code), `${code} not in the zero-disposal list`);
  assert((await auditor.locator("canvas[role=img]").count()) === 1, "no month-by-month chart");
  const [download] = await Promise.all([auditor.waitForEvent("download"), auditor.getByTestId("stats-csv").click()]);
  await download.saveAs(cfg.download);
  await shotAndCheck(auditor, "stats");
  // The auditor's stats page stays as it was for the axe check; nothing changes data from here on.
});

await scenario("joint cases show the lead room, participants and member clues", async () => {
  await go(r1, "#/cases");
  const card = r1.locator("section", { has: r1.getByRole("heading", { name: cfg.case.title }) });
  await card.waitFor();
  const text = await card.textContent();
  assert(text.includes("R1") && text.includes("G1") && text.includes("X1"), `participants missing: ${text}`);
  assert((await card.locator("tbody tr").count()) === 1, "the member clue is not listed");
  assert(text.includes(ACCEPTED), "the member clue's state is not shown");
  await shotAndCheck(r1, "cases");
});

await scenario("the rectification ledger shows the item and its host unit's figures", async () => {
  await go(g1, "#/ledger");
  await g1.getByRole("cell", { name: cfg.item.category }).waitFor();
  const text = await g1.locator("main").textContent();
  assert(text.includes("市发展改革委") && text.includes("待整改"), "the ledger does not show the item");
  // A deadline given as a day (the midnight ending it) shows as that day, not the next one.
  const day = new Date(cfg.item.deadlineMs - 1).toLocaleDateString("zh-CN", { timeZone: cfg.timezone });
  assert(text.includes(`${day}（日终）`), `the item's deadline is not shown as ${day}（日终）: ${text}`);
  await shotAndCheck(g1, "ledger");
});

await scenario("English is one click away and the choice stays", async () => {
  await go(g1, "#/queue");
  await g1.getByRole("button", { name: "Switch to English" }).click();
  await g1.getByRole("link", { name: "My queue" }).waitFor();
  assert((await g1.evaluate(() => document.documentElement.lang)) === "en", "html lang is not en");
  await g1.reload();
  await g1.getByRole("heading", { name: "Clues you can act on" }).waitFor();
  await shotAndCheck(g1, "queue-en");
  await g1.getByRole("button", { name: "切换到中文" }).click();
  await g1.getByRole("link", { name: "我的待办" }).waitFor();
});

await scenario("every page passes axe-core's WCAG 2 A and AA checks, contrast included, and focus rings 3:1", async () => {
  assert(axePages.length >= 11, `only ${axePages.length} pages were checked: ${axePages}`);
  assert(axeFindings.length === 0, `axe found:\n${axeFindings.join("\n")}`);
  assert(focusChecked > 50, `only ${focusChecked} controls' focus rings were checked`);
  assert(focusFindings.length === 0, `focus rings under 3:1:\n${focusFindings.slice(0, 20).join("\n")}`);
  results.axe_pages = axePages;
  results.axe_rules_passed = axeRules;
});

await scenario("the keyboard alone: skip link, navigation and the sign-in form", async () => {
  const page = await newPage("keyboard");
  await page.goto(cfg.base);
  // The token field has the focus; type and press Enter.
  await page.keyboard.type(cfg.tokens.auditor);
  await page.keyboard.press("Enter");
  await page.locator("header nav").waitFor();
  await page.keyboard.press("Tab");
  assert((await page.evaluate(() => document.activeElement.textContent)) === "跳到正文", "Tab does not reach the skip link first");
  // On from the skip link, through the navigation.
  let reached = false;
  for (let i = 0; i < 15 && !reached; i++) {
    await page.keyboard.press("Tab");
    reached = (await page.evaluate(() => document.activeElement.textContent)) === "审计";
  }
  assert(reached, "Tab never reaches the 审计 link");
  await page.keyboard.press("Enter");
  await page.waitForURL(/#\/audit$/);
  await page.getByRole("heading", { name: "实时事件" }).waitFor();
  // The skip link takes the focus past the navigation to the page's content.
  await page.reload();
  await page.getByRole("heading", { name: "实时事件" }).waitFor();
  await page.keyboard.press("Tab");
  await page.keyboard.press("Enter");
  assert((await page.evaluate(() => document.activeElement.id)) === "main", "the skip link does not move the focus to the content");
  // Every control on the page has an accessible name.
  const unnamed = await page.$$eval("input, select, textarea, button", (els) =>
    els.filter((e) => !(e.labels?.length || e.getAttribute("aria-label") || e.textContent.trim())).map((e) => e.outerHTML),
  );
  assert(unnamed.length === 0, `controls without a name: ${unnamed}`);
  await page.context().close();
});

await scenario("a page of another origin cannot show the console in a frame (clickjacking)", async () => {
  // The attacker's page, from another origin (another port of the same host: an intranet page
  // framing the intranet console), frames the console and, as a control, a page of its own.
  const http = await import("node:http");
  const evil = http.createServer((q, r) => {
    r.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    r.end(q.url === "/own"
      ? "<!doctype html><title>own</title><p id=own>own frame</p>"
      : `<!doctype html><title>prize</title>
<iframe id=own src="/own"></iframe>
<iframe id=console src="${cfg.base}#/queue" style="opacity:0.0001;width:1200px;height:800px"
  onload="document.body.dataset.loaded = 1"></iframe>`);
  });
  await new Promise((ok) => evil.listen(0, "127.0.0.1", ok));
  const page = await newPage("framing");
  try {
    const refused = [];
    page.on("console", (m) => { if (/frame-ancestors|X-Frame-Options/.test(m.text())) refused.push(m.text()); });
    await page.goto(`http://127.0.0.1:${evil.address().port}/`);
    assert(new URL(page.url()).origin !== new URL(cfg.base).origin, "the attacker's page has the console's origin");
    await page.locator("body[data-loaded]").waitFor({ state: "attached" });
    await page.frameLocator("#own").locator("#own").waitFor(); // framing as such works on that page
    const frame = await (await page.locator("#console").elementHandle()).contentFrame();
    await page.waitForTimeout(500); // what a framed console would need to start drawing
    const shown = frame.url().startsWith(cfg.base) ? await frame.locator("#app, #token, header nav").count() : 0;
    assert(shown === 0, `the console is shown in a frame of ${page.url()} (${frame.url()})`);
    console.log(`  the frame holds ${frame.url()}${refused.length ? `; Chromium: ${refused[0].trim().slice(0, 160)}` : ""}`);
  } finally {
    await page.context().close();
    evil.close();
  }
});

await scenario("the token is never in a URL, a cookie, localStorage or the console; sign-out forgets it", async () => {
  assert(leaks.length === 0, leaks.join("\n"));
  for (const page of [g1, r1, member, auditor]) {
    const s = await page.evaluate(() => JSON.stringify(Object.assign({}, localStorage)) + document.cookie);
    for (const tok of TOKENS) assert(!s.includes(tok), "a token in localStorage or a cookie");
  }
  await member.getByRole("button", { name: "退出" }).click();
  await member.getByLabel("访问令牌").waitFor();
  assert((await member.evaluate(() => sessionStorage.getItem("clued.token"))) === null, "sign-out kept the token");
});

fs.writeFileSync(cfg.results, JSON.stringify(results, null, 2));
await finish();
