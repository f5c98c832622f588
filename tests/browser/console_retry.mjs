// A form sent again after its answer was lost on the way back (docs/CONSOLE.md, "Who sees
// what"): the call reached clued, which did what it asked and answered, but the browser got a
// reset instead; the page says the server is unavailable and keeps the form filled. Sent
// again, the form is the same request (the same request id), which clued answers with what the
// first call did: one note, not two; the move that happened, not "changed meanwhile". A form
// whose content changed after the lost answer is another request. tests/e2e/test_console.py
// runs it with a JSON config and then counts the notes and moves on the server's side.
//
//   node console_retry.mjs CONFIG.json
import { assert, cfg, finish, go, scenario, signedIn } from "./scenarios.mjs";

const UNAVAILABLE = "服务器暂不可用，请稍后重试。";
const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g;

/** Lose the answer of the first call of ClueService's method on page: the call reaches clued,
 * which answers it, and the browser gets a connection reset instead. The calls after it pass.
 * Returns the request ids the calls carried, in order, filled in as they are sent. */
async function loseFirstAnswer(page, method) {
  const ids = [];
  await page.route(`**/clue.v1.ClueService/${method}`, async (route) => {
    const found = route.request().postDataBuffer().toString("latin1").match(UUID) ?? [];
    assert(found.length === 1, `${method} carries ${found.length} request ids`);
    ids.push(found[0]);
    if (ids.length > 1) return route.continue();
    const answer = await route.fetch();
    assert(answer.status() === 200 && (answer.headers()["grpc-status"] ?? "0") === "0", `the first ${method}: HTTP ${answer.status()}`);
    await route.abort("connectionreset");
  });
  return ids;
}

/** The form's error shows that the server is unavailable. */
async function unavailable(form) {
  const text = await form.getByTestId("error").innerText();
  assert(text.includes(UNAVAILABLE), `the lost answer shows: ${text}`);
}

/** G1's leader adds a note of text whose answer is lost: the page, its note form, and the
 * request ids AddNote is sent with. */
async function noteAnswerLost(text) {
  const page = await signedIn(cfg.tokens.g1_leader);
  await go(page, `#/clue/${cfg.note.clue}`);
  const ids = await loseFirstAnswer(page, "AddNote");
  const form = page.getByTestId("note-form");
  await form.getByLabel("内容").fill(text);
  await form.getByRole("button", { name: "添加" }).click();
  await unavailable(form);
  return { page, form, ids };
}

await scenario("a note sent again after its answer was lost is stored once", async () => {
  const { page, form, ids } = await noteAnswerLost(cfg.note.text);
  assert((await form.getByLabel("内容").inputValue()) === cfg.note.text, "the form lost its text");
  await form.getByRole("button", { name: "添加" }).click();
  await page.getByRole("status").filter({ hasText: "添加备注" }).waitFor();
  const shown = await page.locator("main .note-text", { hasText: cfg.note.text }).count();
  assert(shown === 1, `the note is shown ${shown} times`);
  assert(ids.length === 2 && ids[0] === ids[1], `the retry's request id: ${ids}`);
  await page.context().close();
});

await scenario("a note changed after its answer was lost is another request", async () => {
  const { page, form, ids } = await noteAnswerLost(cfg.note.first);
  await form.getByLabel("内容").fill(cfg.note.changed);
  await form.getByRole("button", { name: "添加" }).click();
  await page.getByRole("status").filter({ hasText: "添加备注" }).waitFor();
  assert(ids.length === 2 && ids[0] !== ids[1], `the changed note's request id: ${ids}`);
  for (const text of [cfg.note.first, cfg.note.changed]) {
    const shown = await page.locator("main .note-text", { hasText: text }).count();
    assert(shown === 1, `${text} is shown ${shown} times`);
  }
  await page.context().close();
});

await scenario("a move sent again after its answer was lost answers the move, not changed meanwhile", async () => {
  const page = await signedIn(cfg.tokens.g1_leader);
  await go(page, `#/clue/${cfg.move.clue}`);
  await page.getByTestId("clue-state").filter({ hasText: "受理" }).waitFor();
  const ids = await loseFirstAnswer(page, "RequestTransition");
  const form = page.getByTestId("move-form");
  await form.getByLabel("变更为").selectOption({ label: "初核" });
  await form.getByLabel("理由").fill(cfg.move.reason);
  await form.getByRole("button", { name: "提交变更" }).click();
  await unavailable(form);
  await form.getByRole("button", { name: "提交变更" }).click();
  const said = page.getByRole("status").filter({ hasText: "已变更" }).or(page.getByRole("alert"));
  await said.first().waitFor();
  const text = await said.first().innerText();
  assert(text.includes("已变更为 初核"), `the retry shows: ${text}`);
  assert(ids.length === 2 && ids[0] === ids[1], `the retry's request id: ${ids}`);
  await page.getByTestId("clue-state").filter({ hasText: "初核" }).waitFor();
  assert((await page.getByTestId("clue-version").innerText()) === String(cfg.move.version + 1), "the version after one move");
  await page.context().close();
});

await finish();
