// A real OpenID provider (oidc-provider) on loopback for the console's browser test.
//
//   node tests/console/oidc.mjs '{"redirect_uris": ["..."], "client_secret": "..."}'
//
// Prints one JSON line {"issuer": "http://127.0.0.1:PORT"} once it listens, then serves until
// its standard input closes (the test that started it ended) or it gets SIGTERM. Accounts:
// alice (approver, mapped by subject), bob (approver, mapped by email), audrey (auditor,
// mapped by the group claim), gina (in no configuration, but her group `payments-team` may
// stand for an approver group) and eve (an outsider nobody mapped, in the unmapped group
// `contractors`). Sign-in uses the provider's
// own development login form (any password); consent is granted without a prompt.
import http from "node:http";
import Provider from "oidc-provider";

const settings = JSON.parse(process.argv[2] ?? "{}");
const ACCOUNTS = {
  alice: { email: "alice@example.org", email_verified: true, name: "Alice Approver", groups: ["payments"] },
  bob: { email: "bob@example.org", email_verified: true, name: "Bob Second", groups: ["payments"] },
  audrey: { email: "audrey@example.org", email_verified: true, name: "Audrey Auditor", groups: ["auditors"] },
  gina: { email: "gina@example.org", email_verified: true, name: "Gina Groupmember", groups: ["staff", "payments-team"] },
  // An unverified email that a mapping names must not count.
  eve: { email: "carol@example.org", email_verified: false, name: "Eve Outsider", groups: ["contractors"] },
};

const server = http.createServer();
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: "countersign",
    client_secret: settings.client_secret,
    redirect_uris: settings.redirect_uris ?? [settings.redirect_uri],
    grant_types: ["authorization_code"],
    response_types: ["code"],
    token_endpoint_auth_method: "client_secret_basic",
  }],
  claims: {
    openid: ["sub"],
    email: ["email", "email_verified"],
    profile: ["name"],
    groups: ["groups"],
  },
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  cookies: { keys: ["countersign-console-test-only"] },
  async findAccount(ctx, id) {
    const account = ACCOUNTS[id];
    if (!account) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...account }) };
  },
  // First-party client: consent is implied.
  async loadExistingGrant(ctx) {
    const { client, session } = ctx.oidc;
    const id = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
    if (id) return ctx.oidc.provider.Grant.find(id);
    const grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
    grant.addOIDCScope("openid email profile groups");
    await grant.save();
    return grant;
  },
});
server.on("request", provider.callback());
process.stdout.write(JSON.stringify({ issuer }) + "\n");
// The test reads only that line: everything else the provider says goes to stderr.
process.stdout.on("error", () => {});
for (const level of ["log", "info", "warn"]) console[level] = (...args) => console.error(...args);

const stop = () => server.close(() => process.exit(0));
process.stdin.on("end", stop);
process.stdin.resume();
process.on("SIGTERM", stop);
