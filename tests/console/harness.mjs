// What the console's browser tests share: a browser context that reaches only loopback, the
// sign-in through the loopback OpenID provider, screenshots, and the step runner.
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";

/** Requests to other hosts, aborted: {url, from}. */
export const external = [];
let shots = ".";
let shot = 0;

export function check(condition, message) {
  if (!condition) throw new Error(message);
}

export async function screenshot(page, name) {
  shot += 1;
  const file = path.join(shots, `${String(shot).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
}

/** A browser context on `base` that reaches only loopback (anything else is aborted). */
export async function newContext(browser, base) {
  const context = await browser.newContext({ baseURL: base, acceptDownloads: true });
  context.setDefaultTimeout(15000);
  await context.route("**/*", (route) => {
    const url = new URL(route.request().url());
    if (url.hostname === "127.0.0.1" || url.hostname === "localhost") return route.continue();
    const from = route.request().frame()?.url() ?? "";
    external.push({ url: url.href, from });
    return route.abort();
  });
  return context;
}

/** Fills the provider's development login form as `login` (any password). */
export async function providerLogin(page, login) {
  await page.locator("input[name=login]").fill(login);
  await page.locator("input[name=password]").fill("any password");
  await page.getByRole("button", { name: "Sign-in" }).click();
}

/** Waits until the page is on the console, signed in. */
export async function onConsole(page, who) {
  await page.waitForURL((u) => /\/console\/(inbox|audit)$/.test(u.pathname));
  check((await page.textContent("header")).includes("Signed in as"), `${who} is not signed in`);
}

/** Signs `login` in on `base` through the provider; returns {context, page}, on the console. */
export async function signIn(browser, base, login, { before } = {}) {
  const context = await newContext(browser, base);
  const page = await context.newPage();
  await page.goto("/console/login");
  if (before) await before(page, "sign-in");
  await page.getByRole("link", { name: "Sign in with your organisation's account" }).click();
  await page.locator("input[name=login]").waitFor();
  if (before) await before(page, "identity-provider");
  await providerLogin(page, login);
  await onConsole(page, login);
  return { context, page };
}

/** Runs `steps` ({name, run(browser)}) in order, stopping at the first failure; exits. */
export async function runSteps(cfg, steps, consoles) {
  shots = cfg.shots;
  fs.mkdirSync(shots, { recursive: true });
  const browser = await chromium.launch({ executablePath: cfg.chromium ?? "/usr/bin/chromium", args: ["--no-sandbox"] });
  let failed = 0;
  let passed = 0;
  const started = Date.now();
  for (const { name, run } of steps) {
    const t = Date.now();
    try {
      await run(browser);
      passed += 1;
      console.log(`ok   ${name} (${Date.now() - t} ms)`);
    } catch (e) {
      failed += 1;
      console.log(`FAIL ${name}: ${e.stack ?? e}`);
      await showPages(browser);
      break;
    }
  }
  const fromConsole = external.filter((r) => consoles.some((c) => r.from.startsWith(c)));
  if (fromConsole.length) {
    failed += 1;
    console.log(`FAIL the console requested other hosts: ${JSON.stringify(fromConsole)}`);
  }
  await browser.close();
  console.log(`browser: ${Date.now() - started} ms`);
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

/** After a failure: where every page is, what it says, and a screenshot of it. */
async function showPages(browser) {
  let n = 0;
  for (const context of browser.contexts()) {
    for (const page of context.pages()) {
      n += 1;
      const text = (await page.textContent("body").catch(() => "")) ?? "";
      console.log(`  page ${n}: ${page.url()}\n    ${text.replace(/\s+/g, " ").slice(0, 400)}`);
      await page.screenshot({ path: path.join(shots, `FAILED-page-${n}.png`) }).catch(() => {});
    }
  }
}
