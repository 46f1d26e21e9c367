// The agent of the console's browser test: MCP tools/call over Streamable HTTP (2026-07-28),
// held by the gateway until the humans decide.
let nextId = 1;

export class Agent {
  constructor(gateway, key) {
    this.url = `${gateway}/mcp`;
    this.key = key;
  }

  /** Calls `name`; resolves once the gateway answers, to {isError, text}. */
  async call(name, args) {
    const id = nextId++;
    const body = {
      jsonrpc: "2.0", id, method: "tools/call",
      params: {
        name, arguments: args,
        _meta: { "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {} },
      },
    };
    const response = await fetch(this.url, {
      method: "POST",
      headers: {
        authorization: `Bearer ${this.key}`, "content-type": "application/json",
        accept: "application/json, text/event-stream", "mcp-protocol-version": "2026-07-28",
        "mcp-method": "tools/call", "mcp-name": name,
      },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(120000),
    });
    const raw = await response.text();
    const messages = raw.trimStart().startsWith("{")
      ? [JSON.parse(raw)]
      : raw.split("\n").filter((l) => l.startsWith("data:")).map((l) => JSON.parse(l.slice(5)));
    const answer = messages.find((m) => m.id === id);
    if (!answer) throw new Error(`no answer to ${name}: ${raw.slice(0, 500)}`);
    if (answer.error) return { isError: true, text: answer.error.message };
    const text = (answer.result.content ?? []).map((c) => c.text ?? "").join("\n");
    return { isError: Boolean(answer.result.isError), text };
  }
}
