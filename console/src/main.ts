// The console's shell: sign-in, the language switch, navigation and the hash router
// (#/queue, #/clue/17, #/cases, #/stats, #/audit, #/ledger). Pages follow the caller's rights
// as GetCaller tells them; the server decides every call all the same.
import "./style.css";
import { h, clear, named } from "./dom";
import { t, setLang, currentLang, type Key } from "./i18n";
import { tokens, storedToken, storeToken, forgetToken, setMe, me, roleName, isStaff, isAuditor, Code, errorCode } from "./api";
import { errorBox } from "./ui";
import { queuePage } from "./pages/queue";
import { cluePage } from "./pages/clue";
import { casesPage } from "./pages/cases";
import { statsPage } from "./pages/stats";
import { auditPage } from "./pages/audit";
import { ledgerPage } from "./pages/ledger";

export type Page = (main: HTMLElement, arg: string | undefined, signal: AbortSignal) => Promise<void> | void;

interface Route {
  path: string;
  label: Key;
  page: Page;
  nav: () => boolean;
}

const routes: Route[] = [
  { path: "queue", label: "navQueue", page: queuePage, nav: () => isStaff() },
  { path: "clue", label: "navClue", page: cluePage, nav: () => false },
  { path: "cases", label: "navCases", page: casesPage, nav: () => isStaff() || isAuditor() },
  { path: "stats", label: "navStats", page: statsPage, nav: () => true },
  { path: "audit", label: "navAudit", page: auditPage, nav: () => true },
  { path: "ledger", label: "navLedger", page: ledgerPage, nav: () => isStaff() || isAuditor() },
];

const app = document.getElementById("app")!;
let pageAbort: AbortController | null = null;

function defaultPath(): string {
  return isStaff() ? "queue" : "stats";
}

function parseHash(): [string, string | undefined] {
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  return [parts[0] || defaultPath(), parts[1]];
}

function langButton(): HTMLElement {
  return h(
    "button",
    {
      type: "button",
      class: "btn btn-quiet",
      lang: currentLang() === "zh" ? "en" : "zh-CN",
      "aria-label": t("switchLangLabel"),
      onclick: () => {
        setLang(currentLang() === "zh" ? "en" : "zh");
        render();
      },
    },
    t("switchLang"),
  );
}

function signIn(problem?: unknown): void {
  clear(app);
  const input = h("input", { type: "password", id: "token", name: "token", autocomplete: "off", spellcheck: "false", required: true });
  const status = h("div", { "aria-live": "assertive" });
  const form = h(
    "form",
    {
      class: "card signin",
      onsubmit: async (ev: Event) => {
        ev.preventDefault();
        const token = input.value.trim();
        if (!token) return;
        storeToken(token);
        input.value = "";
        try {
          setMe(await tokens.getCaller({}));
          if (!location.hash) location.hash = `#/${defaultPath()}`;
          render();
        } catch (e) {
          forgetToken();
          clear(status);
          status.append(errorCode(e) === Code.Unauthenticated ? h("div", { class: "alert alert-error", role: "alert" }, t("signInBad")) : errorBox(e));
          input.focus();
        }
      },
    },
    h("h2", null, t("signInTitle")),
    h("div", { class: "field" }, h("label", { for: "token" }, t("signInToken")), input, h("small", { id: "token-hint", class: "hint" }, t("signInHint"))),
    h("button", { type: "submit", class: "btn btn-primary" }, t("signInButton")),
    status,
  );
  input.setAttribute("aria-describedby", "token-hint");
  app.append(
    h("header", { class: "top" }, h("h1", null, t("appTitle")), h("div", { class: "top-tools" }, langButton())),
    h("main", { id: "main", tabindex: "-1" }, form),
  );
  if (problem) status.append(errorBox(problem));
  input.focus();
}

function shell(active: string): HTMLElement {
  const main = h("main", { id: "main", tabindex: "-1" });
  const nav = h(
    "nav",
    { "aria-label": t("appTitle") },
    h(
      "ul",
      null,
      routes
        .filter((r) => r.nav())
        .map((r) => h("li", null, h("a", { href: `#/${r.path}`, "aria-current": r.path === active ? "page" : null }, t(r.label)))),
    ),
  );
  const who = me ? [me.userName, " · ", me.unitCode, ` · ${t(roleName(me.role) as Key)}`] : [];
  app.append(
    h("a", { class: "skip", href: "#main", onclick: (ev: Event) => { ev.preventDefault(); main.focus(); } }, t("skip")),
    h(
      "header",
      { class: "top" },
      h("h1", null, t("appTitle")),
      nav,
      h(
        "div",
        { class: "top-tools" },
        h("span", { class: "who", "aria-label": `${t("signedInAs")}: ${named(who.join(""))}` }, who),
        langButton(),
        h("button", { type: "button", class: "btn btn-quiet", onclick: () => { forgetToken(); setMe(null); location.hash = ""; signIn(); } }, t("signOut")),
      ),
    ),
    main,
  );
  return main;
}

async function render(): Promise<void> {
  pageAbort?.abort();
  pageAbort = new AbortController();
  const signal = pageAbort.signal;
  clear(app);
  if (!storedToken()) return signIn();
  if (!me) {
    try {
      setMe(await tokens.getCaller({}, { signal }));
    } catch (e) {
      if (signal.aborted) return;
      if (errorCode(e) === Code.Unauthenticated) forgetToken();
      return signIn(e);
    }
    if (signal.aborted) return;
  }
  const [path, arg] = parseHash();
  const route = routes.find((r) => r.path === path) ?? routes.find((r) => r.path === defaultPath())!;
  const main = shell(route.path);
  document.title = `${t(route.label)}${arg ? ` ${arg}` : ""} · ${t("appTitle")}`;
  try {
    await route.page(main, arg, signal);
  } catch (e) {
    if (signal.aborted) return;
    if (errorCode(e) === Code.Unauthenticated) {
      forgetToken();
      setMe(null);
      return signIn(e);
    }
    // Whatever the page was waiting for will not come: no "loading" stays beside the error.
    for (const w of main.querySelectorAll("[data-loading]")) w.remove();
    main.append(errorBox(e, () => render(), () => render()));
  }
}

export function rerender(): void {
  void render();
}

setLang(currentLang());
window.addEventListener("hashchange", () => void render());
void render();
