// The console in a real browser: Debian's Chromium driven by Playwright, signing in against
// the loopback OpenID provider (oidc.mjs). Run by tests/it/console.rs, which starts both
// gateways and the provider and passes their addresses:
//
//   node tests/console/browser.mjs '{"gateway": "...", "down_gateway": "...", "issuer": "...",
//                                    "agent_key": "...", "shots": "target/console-screenshots"}'
//
// Every step is logged; a screenshot of each screen goes to `shots`. Only loopback is
// reached: any other request is aborted, and one made by a console page fails the test.
import { checkLabels, keyboardReaches } from "./a11y.mjs";
import { Agent } from "./agent.mjs";
import { check, newContext as contextOn, runSteps, screenshot, signIn as signInOn } from "./harness.mjs";
import fs from "node:fs";
import path from "node:path";

const cfg = JSON.parse(process.argv[2]);
const GW = cfg.gateway;
const agent = new Agent(GW, cfg.agent_key);

async function newContext(browser) {
  return contextOn(browser, GW);
}

/** Signs `login` in through the provider; returns the page, on the console. */
async function signIn(browser, login, { shots = false } = {}) {
  const before = shots
    ? async (page, name) => {
      if (name === "sign-in") await checkLabels(page, "sign-in page");
      await screenshot(page, name);
    }
    : undefined;
  return signInOn(browser, GW, login, { before });
}

async function waitForCard(page) {
  await page.locator(".card", { hasText: "delete_record" }).first().waitFor();
  return page;
}

/** The approval id on the request page. */
async function approvalId(page) {
  return (await page.locator("dt:text('Request id') + dd code").textContent()).trim();
}

const steps = [];
function step(name, run) {
  steps.push({ name, run });
}

const s = {}; // shared between steps

step("alice signs in through the identity provider; her inbox is empty", async (browser) => {
  Object.assign(s, { alice: await signIn(browser, "alice", { shots: true }) });
  const { page } = s.alice;
  check(page.url().endsWith("/console/inbox"), `alice landed on ${page.url()}`);
  check((await page.textContent("#inbox")).includes("Nothing waits for you"), "the inbox is not empty");
  await screenshot(page, "inbox-empty");
});

step("an agent's call appears in the inbox live, without a reload", async () => {
  const { page } = s.alice;
  await page.evaluate(() => { window.stillThisPage = "yes"; });
  s.call1 = agent.call("echo__delete_record", { record_id: "rec-1", secret: "hunter2-SECRET", note: "<script>alert(1)</script>" });
  await waitForCard(page);
  check(await page.evaluate(() => window.stillThisPage) === "yes", "the page was reloaded");
  const card = await page.textContent(".card");
  for (const want of ["[CONFIDENTIAL]", "delete_record on echo", "ci-bot", "dana", "0 of 2 approvals", "expires in"]) {
    check(card.includes(want), `the card lacks ${want}: ${card}`);
  }
  await page.getByText("Rule, policy version and arguments").click();
  const more = await page.textContent(".card details");
  for (const want of ["Deleting a record needs two operators", "Policy version", "rec-1", "[redacted]"]) {
    check(more.includes(want), `the card's details lack ${want}: ${more}`);
  }
  check(!more.includes("hunter2") && !more.includes("hmac-sha256"), "the card shows a redacted value");
  await screenshot(page, "inbox-live");
});

step("the request shows every argument, redacted where the rule says, and its rule", async () => {
  const { page } = s.alice;
  await page.locator(".card h2 a").first().click();
  await page.waitForURL(/\/console\/approvals\//);
  s.id1 = await approvalId(page);
  const text = await page.textContent("main");
  for (const want of ["rec-1", "[redacted]", "<script>alert(1)</script>", "Deleting a record needs two operators", "Policy version", "dana"]) {
    check(text.includes(want), `the request page lacks ${want}`);
  }
  for (const never of ["hunter2", "hmac-sha256"]) check(!text.includes(never), `the page shows ${never}`);
  await checkLabels(page, "request page");
  await keyboardReaches(page, ["Approve", "Reason for denying (required)", "Deny", "Sign out"]);
  await screenshot(page, "request");
});

step("a POST without the CSRF token, or with a forged one, is refused and decides nothing", async () => {
  const { context, page } = s.alice;
  const url = `/console/approvals/${s.id1}/vote`;
  for (const form of [{ decision: "approve" }, { decision: "approve", csrf: "forged-token" }]) {
    const response = await context.request.post(url, { form, maxRedirects: 0 });
    check(response.status() === 403, `a vote with ${JSON.stringify(form)} got ${response.status()}`);
  }
  await page.reload();
  check((await page.textContent("main")).includes("0 of 2 approvals"), "a refused POST counted");
});

step("alice approves: 1 of 2", async () => {
  const { page } = s.alice;
  await page.getByRole("button", { name: "Approve", exact: true }).click();
  await page.getByText("Your approval is counted: 1 of 2.").waitFor();
  await screenshot(page, "approved-one-of-two");
});

step("bob, in another browser, sees alice's vote and decides with the second approval", async (browser) => {
  s.bob = await signIn(browser, "bob");
  const { page } = s.bob;
  await waitForCard(page);
  check((await page.textContent(".card")).includes("1 of 2 approvals (alice)"), "bob does not see alice's vote");
  await screenshot(page, "second-approver-inbox");
  await page.locator(".card h2 a").first().click();
  await page.getByRole("button", { name: "Approve", exact: true }).click();
  await page.getByText("Your vote decided the request: approved.").waitFor();
  await screenshot(page, "decided-approved");
  const answer = await s.call1;
  check(!answer.isError, `the approved call failed: ${JSON.stringify(answer)}`);
});

step("deny needs a reason, and the reason reaches the agent", async () => {
  const { page } = s.alice;
  await page.goto("/console/inbox");
  const call = agent.call("echo__delete_record", { record_id: "rec-2" });
  await waitForCard(page);
  await page.locator(".card h2 a").first().click();
  await page.waitForURL(/\/console\/approvals\//);
  const here = page.url();
  await page.getByRole("button", { name: "Deny" }).click();
  check(page.url() === here, "a deny without a reason was sent");
  await page.getByLabel("Reason for denying (required)").fill("not during the change freeze");
  await page.getByRole("button", { name: "Deny" }).click();
  await page.getByText("Your vote decided the request: denied.").waitFor();
  await screenshot(page, "denied");
  const answer = await call;
  check(answer.isError && answer.text.includes("not during the change freeze"), `the agent read: ${answer.text}`);
});

step("someone else already decided: a vote that loses the race says so", async () => {
  const call = agent.call("echo__delete_record", { record_id: "rec-3" });
  for (const who of [s.alice, s.bob]) {
    await who.page.goto("/console/inbox");
    await waitForCard(who.page);
    await who.page.locator(".card h2 a").first().click();
    await who.page.waitForURL(/\/console\/approvals\//);
  }
  await s.bob.page.getByLabel("Reason for denying (required)").fill("duplicate of rec-2");
  await s.bob.page.getByRole("button", { name: "Deny" }).click();
  await s.bob.page.getByText("Your vote decided the request: denied.").waitFor();
  await s.alice.page.getByRole("button", { name: "Approve", exact: true }).click();
  await s.alice.page.getByText("Someone else already decided").waitFor();
  check((await s.alice.page.textContent("main")).includes("denied by bob"), "the race page does not say who");
  await screenshot(s.alice.page, "someone-else-decided");
  await call;
});

step("break-glass where the rule allows it: alice approves alone with a justification", async () => {
  const { page } = s.alice;
  await page.goto("/console/inbox");
  const call = agent.call("echo__add", { a: 2, b: 3 });
  await page.locator(".card", { hasText: "add on echo" }).waitFor();
  await page.locator(".card", { hasText: "add on echo" }).locator("h2 a").click();
  await page.getByLabel(/Break-glass justification/).fill("INC-7: checkout is down and this fixes the totals");
  await screenshot(page, "break-glass-form");
  await page.getByRole("button", { name: "Break glass and approve" }).click();
  await page.getByText("Your vote decided the request: approved.").waitFor();
  await screenshot(page, "break-glass");
  const answer = await call;
  check(!answer.isError && answer.text.includes("5"), `the break-glass call: ${answer.text}`);
});

step("the outsider sees nothing and may decide nothing", async (browser) => {
  const call = agent.call("echo__delete_record", { record_id: "rec-4" });
  await s.alice.page.goto("/console/inbox");
  await waitForCard(s.alice.page);
  await s.alice.page.locator(".card h2 a").first().click();
  s.pendingId = await approvalId(s.alice.page);
  s.pendingCall = call;
  const eve = await signIn(browser, "eve");
  const text = await eve.page.textContent("main");
  check(text.includes("not an approver here") && !text.includes("rec-4"), "the outsider's inbox shows something");
  await screenshot(eve.page, "outsider");
  for (const url of [`/console/approvals/${s.pendingId}`, "/console/audit", "/console/inbox/list", "/console/audit/export?format=csv"]) {
    const response = await eve.context.request.get(url, { maxRedirects: 0 });
    check(response.status() === 403, `the outsider got ${response.status()} for ${url}`);
  }
  const csrf = await eve.page.locator("form.logout input[name=csrf]").getAttribute("value");
  const vote = await eve.context.request.post(`/console/approvals/${s.pendingId}/vote`, { form: { csrf, decision: "approve" }, maxRedirects: 0 });
  check(vote.status() === 403, `the outsider's vote got ${vote.status()}`);
  await eve.context.close();
});

step("a vote cast elsewhere (the approver API, as chat and the CLI do) shows in the inbox at once", async () => {
  const { page } = s.alice;
  await page.goto("/console/inbox");
  await waitForCard(page);
  await page.evaluate(() => { window.stillThisPage = "yes"; });
  const response = await fetch(`${GW}/approvals/${s.pendingId}/approve`, { method: "POST", headers: { authorization: "Bearer carol-token" } });
  check(response.ok, `carol's API vote: ${response.status}`);
  await page.locator(".card", { hasText: "1 of 2 approvals (carol)" }).waitFor();
  check(await page.evaluate(() => window.stillThisPage) === "yes", "the page was reloaded");
  await screenshot(page, "inbox-vote-from-elsewhere");
});

step("a tampered session cookie is refused", async (browser) => {
  const cookies = await s.alice.context.cookies();
  const session = cookies.find((c) => c.name === "countersign-session");
  check(session, "no session cookie");
  const flipped = session.value.slice(0, -1) + (session.value.endsWith("A") ? "B" : "A");
  const context = await newContext(browser);
  await context.addCookies([{ name: "countersign-session", value: flipped, url: GW }]);
  const page = await context.newPage();
  await page.goto("/console/inbox");
  check(new URL(page.url()).pathname === "/console/login", `a tampered cookie reached ${page.url()}`);
  await context.close();
});

step("the auditor finds the call, reads its timeline and exports CSV", async (browser) => {
  s.audrey = await signIn(browser, "audrey");
  const { page } = s.audrey;
  check(page.url().endsWith("/console/audit"), `audrey landed on ${page.url()}`);
  await page.getByLabel("Tool").fill("delete_record");
  await page.getByLabel("Event kind").fill("approval.decided");
  await page.getByLabel("Outcome").fill("approved");
  await page.getByLabel("Since").fill("1h");
  await page.getByRole("button", { name: "Search" }).click();
  await page.waitForURL(/tool=delete_record/);
  await checkLabels(page, "audit page");
  await keyboardReaches(page, ["Agent", "Tool", "Search", "CSV"]);
  await screenshot(page, "audit-search");
  await page.locator("a", { hasText: "timeline" }).first().click();
  await page.waitForURL(/\/console\/audit\/calls\//);
  const timeline = await page.textContent("main");
  for (const want of ["ci-bot asked for delete_record", "rule two-person-delete", "alice voted approve via console",
    `issuer ${cfg.issuer}`, "subject alice", "seen by alice via console (opened)", "forwarded to echo", "result digest",
    "Waiting for humans", "The tool itself"]) {
    check(timeline.includes(want), `the timeline lacks ${want}`);
  }
  await screenshot(page, "timeline");
  await page.goBack();
  const [download] = await Promise.all([page.waitForEvent("download"), page.getByRole("link", { name: "CSV" }).click()]);
  const file = path.join(cfg.shots, "audit-export.csv");
  await download.saveAs(file);
  const lines = fs.readFileSync(file, "utf8").trim().split("\r\n");
  check(lines[0].startsWith("seq,at,kind,call_id,actor,agent,on_behalf_of,server,tool,rule"), `CSV header: ${lines[0]}`);
  check(lines.length > 1 && lines.slice(1).every((l) => /^\d+,\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z,/.test(l)), "CSV rows lack RFC 3339 times");
  await page.goto("/console/audit?kind=audit.read&since=1h");
  const reads = await page.textContent("table.events");
  check(reads.includes("via=console") && reads.includes("route=/console/audit/export"), "the audit of audit reads is not visible");
  await screenshot(page, "audit-reads");
});

step("the auditor verifies the chain from the page and sees its status", async () => {
  const { page } = s.audrey;
  await page.goto("/console/audit");
  check((await page.textContent("main")).includes("not verified since the gateway started"), "a verify status before any verify");
  await page.getByRole("button", { name: "Verify the chain now" }).click();
  await page.getByText("The chain holds.").waitFor();
  await screenshot(page, "verify");
  await page.goto("/console/audit");
  check((await page.textContent("main")).includes("holds"), "the audit page does not show the last verify");
});

step("the auditor reads the insights: rates, times to decide, votes per approver", async () => {
  const { page } = s.audrey;
  await page.getByRole("link", { name: "Insights" }).click();
  await page.waitForURL(/\/console\/insights/);
  const text = await page.textContent("main");
  for (const want of ["two-person-delete", "sums-break-glass", "echo/delete_record", "Votes per approver", "alice", "bob"]) {
    check(text.includes(want), `the insights lack ${want}`);
  }
  await checkLabels(page, "insights page");
  await screenshot(page, "insights");
});

step("an identity provider that is down gives a page that says so", async (browser) => {
  const context = await newContext(browser);
  const page = await context.newPage();
  const response = await page.goto(`${cfg.down_gateway}/console/login/oidc`);
  check(response.status() === 502, `the IdP-down page has status ${response.status()}`);
  const text = await page.textContent("main");
  check(text.includes("The identity provider is unavailable") && text.includes("cannot be reached"), `the IdP-down page says: ${text}`);
  await screenshot(page, "idp-down");
  await context.close();
});

step("sign-out ends the session", async () => {
  const { page } = s.alice;
  await page.goto("/console/inbox");
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByText("You are signed out").waitFor();
  await screenshot(page, "signed-out");
  await page.goto("/console/inbox");
  check(new URL(page.url()).pathname === "/console/login", "the session outlived sign-out");
});

runSteps(cfg, steps, [GW]);
