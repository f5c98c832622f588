// What every browser test script shares: its JSON config (the script's first argument),
// axe-core's source, Debian's Chromium launched headless through playwright-core, and
// scenarios that each print PASS or FAIL, counted for the exit status.
import fs from "node:fs";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);
export const AXE = fs.readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
export const cfg = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const count = { passed: 0, failed: 0 };

export function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}

export async function scenario(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    count.passed++;
    console.log(`PASS ${name} (${((Date.now() - t0) / 1000).toFixed(1)}s)`);
  } catch (e) {
    count.failed++;
    console.log(`FAIL ${name}: ${e.stack || e}`);
  }
}

export const browser = await chromium.launch({
  executablePath: cfg.chromium,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});

/** Close the browser, print the counts and exit: 1 if a scenario failed. */
export async function finish() {
  await browser.close();
  console.log(`${count.passed} passed, ${count.failed} failed`);
  process.exit(count.failed ? 1 : 0);
}

/** A fresh browser profile, signed in to the console with token; its page. */
export async function signedIn(token, timeout = 15000) {
  const ctx = await browser.newContext({
    timezoneId: cfg.timezone,
    locale: "zh-CN",
    viewport: { width: 1280, height: 900 },
    acceptDownloads: true,
  });
  const page = await ctx.newPage();
  page.setDefaultTimeout(timeout);
  await page.goto(cfg.base);
  await page.getByLabel("访问令牌").fill(token);
  await page.getByRole("button", { name: "登录" }).click();
  await page.locator("header nav").waitFor();
  return page;
}

/** The console's view at hash (#/clue/17), once its title shows. */
export async function go(page, hash) {
  await page.goto(new URL(hash, cfg.base).href);
  await page.locator("main .page-title").first().waitFor();
}
