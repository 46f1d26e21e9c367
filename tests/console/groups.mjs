// The console in a real browser, part two: identity-provider groups standing for approver
// groups, and session timeouts. Run by tests/it/console_groups.rs, which starts the provider
// (oidc.mjs) and two gateways: `gateway`, where the provider's group `payments-team` stands
// for the approver group `payments`, and `short_gateway`, whose sessions end after
// `idle_ms` idle and `max_ms` in all:
//
//   node tests/console/groups.mjs '{"gateway": "...", "short_gateway": "...", "agent_key": "...",
//                                   "idle_ms": 2000, "max_ms": 4000, "shots": "..."}'
import { Agent } from "./agent.mjs";
import { check, newContext, onConsole, providerLogin, runSteps, screenshot, signIn } from "./harness.mjs";

const cfg = JSON.parse(process.argv[2]);
const GW = cfg.gateway;
const SHORT = cfg.short_gateway;
const agent = new Agent(GW, cfg.agent_key);
const steps = [];
const step = (name, run) => steps.push({ name, run });
const s = {};

const card = (page) => page.locator(".card", { hasText: "delete_record" }).first();

step("gina, in no configuration but in the provider's group payments-team, signs in to an empty inbox", async (browser) => {
  s.gina = await signIn(browser, GW, "gina");
  const { page } = s.gina;
  check(page.url().endsWith("/console/inbox"), `gina landed on ${page.url()}`);
  check((await page.textContent("#inbox")).includes("Nothing waits for you"), "gina's inbox is not empty");
});

step("a call the payments group must approve reaches gina's inbox; she approves: 1 of 2", async () => {
  const { page } = s.gina;
  s.call = agent.call("echo__delete_record", { record_id: "rec-g1" });
  await card(page).waitFor();
  await card(page).locator("h2 a").click();
  await page.waitForURL(/\/console\/approvals\//);
  s.id = (await page.locator("dt:text('Request id') + dd code").textContent()).trim();
  await page.getByRole("button", { name: "Approve", exact: true }).click();
  await page.getByText("Your approval is counted: 1 of 2.").waitFor();
  await screenshot(page, "group-member-approved");
});

step("eve, whose only group stands for nothing, sees nothing and may decide nothing", async (browser) => {
  const eve = await signIn(browser, GW, "eve");
  const text = await eve.page.textContent("main");
  check(text.includes("not an approver here") && !text.includes("rec-g1"), "eve's inbox shows something");
  for (const url of [`/console/approvals/${s.id}`, "/console/inbox/list"]) {
    const response = await eve.context.request.get(url, { maxRedirects: 0 });
    check(response.status() === 403, `eve got ${response.status()} for ${url}`);
  }
  const csrf = await eve.page.locator("form.logout input[name=csrf]").getAttribute("value");
  const vote = await eve.context.request.post(`/console/approvals/${s.id}/vote`, { form: { csrf, decision: "approve" }, maxRedirects: 0 });
  check(vote.status() === 403, `eve's vote got ${vote.status()}`);
  await eve.context.close();
});

step("alice, a configured approver in payments, sees gina's vote and decides: the call runs", async (browser) => {
  s.alice = await signIn(browser, GW, "alice");
  const { page } = s.alice;
  await card(page).waitFor();
  check((await card(page).textContent()).includes("1 of 2 approvals (idp:"), "alice does not see gina's vote");
  await card(page).locator("h2 a").click();
  await page.getByRole("button", { name: "Approve", exact: true }).click();
  await page.getByText("Your vote decided the request: approved.").waitFor();
  const answer = await s.call;
  check(!answer.isError && answer.text.includes("rec-g1"), `the approved call: ${JSON.stringify(answer)}`);
  await s.gina.page.goto(`/console/approvals/${s.id}`);
  check((await s.gina.page.textContent("main")).includes("approved"), "gina cannot see how it ended");
});

step("the auditor's timeline says through which group gina was eligible", async (browser) => {
  const audrey = await signIn(browser, GW, "audrey");
  await audrey.page.goto("/console/audit?kind=approval.decided&since=1h");
  await audrey.page.locator("a", { hasText: "timeline" }).first().click();
  await audrey.page.waitForURL(/\/console\/audit\/calls\//);
  const timeline = await audrey.page.textContent("main");
  for (const want of ["via console (counted); signed in by openid connect", "subject gina",
    "eligible through the identity provider's groups payments-team", "alice voted approve via console (decided)"]) {
    check(timeline.includes(want), `the timeline lacks ${want}`);
  }
  await screenshot(audrey.page, "timeline-group-vote");
  await audrey.context.close();
});

/** The session cookie's value in `context`. */
async function session(context) {
  return (await context.cookies()).find((c) => c.name === "countersign-session")?.value;
}

/** From the sign-in page, back through the provider (which still knows the browser) to the inbox. */
async function signInAgain(page, who) {
  check(new URL(page.url()).pathname === "/console/login", `not on the sign-in page: ${page.url()}`);
  await page.getByRole("link", { name: "Sign in with your organisation's account" }).click();
  const form = page.locator("input[name=login]");
  await page.waitForURL((u) => /\/console\/(inbox|audit)$/.test(u.pathname) || u.pathname.startsWith("/interaction"));
  if (await form.count()) await providerLogin(page, who);
  await onConsole(page, who);
}

step("idle: a session left alone past idle_secs is over; the next page load signs in again through the provider", async (browser) => {
  s.short = await signIn(browser, SHORT, "alice");
  const { context, page } = s.short;
  const first = await session(context);
  // The open inbox makes no request of its own; its event stream says when the session ended.
  const idleFrom = Date.now();
  await page.waitForURL((u) => u.pathname === "/console/login", { timeout: cfg.idle_ms + 5000 });
  const idle = Date.now() - idleFrom;
  check(idle >= cfg.idle_ms - 500, `signed out after only ${idle} ms idle`);
  await page.goto("/console/inbox");
  await screenshot(page, "idle-timeout");
  // Bounds on the new session's age: at least since `after`, at most since `before`.
  s.before = Date.now();
  await signInAgain(page, "alice");
  s.after = Date.now();
  const second = await session(context);
  check(first && second && first !== second, "the re-login did not start a new session");
});

step("absolute: a busy session still ends at max_secs; the next page load signs in again", async () => {
  const { context, page } = s.short;
  // No live inbox meanwhile: it would leave for the sign-in page by itself.
  await page.goto("about:blank");
  let pastIdle = false;
  for (;;) {
    const response = await context.request.get("/console/inbox/list", { maxRedirects: 0 });
    const [least, most] = [Date.now() - s.after, Date.now() - s.before];
    if (response.status() === 303) {
      check(response.headers().location === "/console/login", `ended towards ${response.headers().location}`);
      check(pastIdle, "the session ended before it had outlived one idle period");
      check(most >= cfg.max_ms, `the busy session ended after only ${most} ms`);
      break;
    }
    check(response.status() === 200, `the busy session got ${response.status()} at ${least} ms`);
    check(least < cfg.max_ms, `the session outlived max_secs: ${least} ms`);
    pastIdle ||= least > cfg.idle_ms;
    // Busy: a request every half idle period keeps it from going idle.
    await page.waitForTimeout(cfg.idle_ms / 2);
  }
  await page.goto("/console/inbox");
  await screenshot(page, "absolute-timeout");
  await signInAgain(page, "alice");
  check(page.url().endsWith("/console/inbox"), `after the re-login: ${page.url()}`);
});

runSteps(cfg, steps, [GW, SHORT]);
