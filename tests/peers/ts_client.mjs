// Scripted MCP client on the TypeScript SDK v2 (@modelcontextprotocol/client 2.4.0), used by
// Countersign's integration tests. Same step format and output as py_client.py.
//
//   node .peers/scripts/ts_client.mjs TARGET [MODE] [SCRIPT]
//
//   TARGET  Streamable HTTP URL or "stdio:<command line>" (split on spaces).
//   MODE    auto (default) | legacy | 2026-07-28 (versionNegotiation {pin}). Note the SDK's own
//           default is legacy; this script defaults to auto like py_client.py.
//   SCRIPT  JSON array of steps or "@path"; default [{"op":"list_tools"}].
//
// Run it from .peers/scripts (setup.sh copies it there) so '@modelcontextprotocol/client'
// resolves from .peers/node_modules. Node 20 or 22.
//
// Environment: MCP_BEARER -> "Authorization: Bearer $MCP_BEARER" on every HTTP request
// (StreamableHTTPClientTransport requestInit.headers); PEER_CLIENT_TIMEOUT overall seconds (60).
//
// Steps (each may carry "allow_error": true and "timeout_s" (default 30)):
//   {"op":"list_tools"}                          -> "tools": [names], "raw"
//   {"op":"call_tool","name":N,"args":{}}        -> "is_error", "text", "progress", "logs", "raw"
//        optional "request_timeout_s" (the SDK's request timeout) and "reset_on_progress"
//        (resetTimeoutOnProgress: each progress notification restarts that timeout)
//   {"op":"read_resource","uri":U}               -> "text", "raw"
//   {"op":"get_prompt","name":N,"args":{}}       -> "text", "raw"
//   {"op":"list_resources"}                      -> "resources": [uris], "raw"
//   {"op":"list_prompts"}                        -> "prompts": [names], "raw"
//   {"op":"cancel","name":N,"args":{},"after_progress":1,"after_ms":null}
//        callTool with an AbortSignal, aborted after `after_progress` progress notifications
//        (default 1) or after "after_ms" ms. The SDK sends notifications/cancelled (legacy) /
//        aborts the POST (2026-07-28 HTTP). -> "cancelled", "progress", "elapsed_ms"
//        (+ "is_error"/"text"/"raw" if the call finished first)
//   {"op":"sleep","ms":N}
// Output: one JSON line {"ok","sdk":"ts-client-2.4.0","mode","protocol_version","server_info","steps":[...]}
// with step entries {"op","ok":true,...} or {"op","ok":false,"error","code"}.
// Exit code 0 all ok, 1 a step failed, 2 usage/connection/timeout error.
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import { readFileSync } from 'node:fs';

const SDK = 'ts-client-2.4.0';
const [target, mode = 'auto', rawScript = '[{"op":"list_tools"}]'] = process.argv.slice(2);
const report = { ok: false, sdk: SDK, mode, protocol_version: null, server_info: null, steps: [] };

function finish(code, error) {
  if (error !== undefined) {
    report.error = error instanceof Error ? error.message : String(error);
    if (error && typeof error.code === 'number') report.code = error.code;
    process.stderr.write(`ts_client: ${report.error}\n`);
  }
  process.stdout.write(JSON.stringify(report) + '\n', () => process.exit(code));
}

if (!target || target === '-h' || target === '--help') {
  process.stderr.write('usage: ts_client.mjs TARGET [legacy|auto|2026-07-28] [SCRIPT_JSON|@file]\n');
  process.exit(2);
}

const overall = setTimeout(() => finish(2, new Error('overall timeout')),
  Number(process.env.PEER_CLIENT_TIMEOUT || 60) * 1000);

const texts = (items) => (items || []).filter((c) => typeof c?.text === 'string').map((c) => c.text).join('\n');
const errEntry = (op, e) => ({ op, ok: false, error: e?.message ?? String(e), code: typeof e?.code === 'number' ? e.code : null });
const withTimeout = (p, s) => new Promise((resolve, reject) => {
  const t = setTimeout(() => reject(new Error('step timed out')), s * 1000);
  p.then((v) => { clearTimeout(t); resolve(v); }, (e) => { clearTimeout(t); reject(e); });
});

const logs = [];

async function callTool(client, step) {
  const progress = [];
  const mark = logs.length;
  const res = await client.callTool({ name: step.name, arguments: step.args || {} }, {
    onprogress: (p) => progress.push({ progress: p.progress, total: p.total ?? null, message: p.message ?? null }),
    timeout: (step.request_timeout_s ?? step.timeout_s ?? 30) * 1000,
    resetTimeoutOnProgress: !!step.reset_on_progress,
  });
  return { is_error: !!res.isError, text: texts(res.content), progress, logs: logs.slice(mark), raw: res };
}

async function cancel(client, step) {
  const progress = [];
  const need = step.after_progress ?? 1;
  const ac = new AbortController();
  const started = Date.now();
  let timer;
  if (step.after_ms != null) timer = setTimeout(() => ac.abort('cancelled by ts_client'), step.after_ms);
  const out = { progress };
  try {
    const res = await client.callTool({ name: step.name, arguments: step.args || {} }, {
      signal: ac.signal,
      timeout: (step.timeout_s ?? 30) * 1000,
      onprogress: (p) => {
        progress.push({ progress: p.progress, total: p.total ?? null, message: p.message ?? null });
        if (step.after_ms == null && progress.length >= need) ac.abort('cancelled by ts_client');
      },
    });
    Object.assign(out, { cancelled: false, is_error: !!res.isError, text: texts(res.content), raw: res });
  } catch (e) {
    if (!ac.signal.aborted) throw e;
    out.cancelled = true;
  } finally {
    clearTimeout(timer);
  }
  out.elapsed_ms = Date.now() - started;
  return out;
}

async function runStep(client, step) {
  switch (step.op) {
    case 'list_tools': { const r = await client.listTools(); return { tools: r.tools.map((t) => t.name), raw: r }; }
    case 'call_tool': return callTool(client, step);
    case 'cancel': return cancel(client, step);
    case 'read_resource': { const r = await client.readResource({ uri: step.uri }); return { text: texts(r.contents), raw: r }; }
    case 'get_prompt': {
      const r = await client.getPrompt({ name: step.name, arguments: step.args || {} });
      return { text: texts(r.messages.map((m) => m.content)), raw: r };
    }
    case 'list_resources': { const r = await client.listResources(); return { resources: r.resources.map((x) => x.uri), raw: r }; }
    case 'list_prompts': { const r = await client.listPrompts(); return { prompts: r.prompts.map((p) => p.name), raw: r }; }
    case 'sleep': await new Promise((r) => setTimeout(r, step.ms || 0)); return {};
    default: throw new Error(`unknown op ${JSON.stringify(step.op)}`);
  }
}

async function main() {
  const script = JSON.parse(rawScript.startsWith('@') ? readFileSync(rawScript.slice(1), 'utf8') : rawScript);
  if (!Array.isArray(script)) throw new Error('SCRIPT must be a JSON array of steps');
  const versionNegotiation = { mode: mode === 'legacy' || mode === 'auto' ? mode : { pin: mode } };
  const client = new Client({ name: 'countersign-ts-client', version: '0.0.1' }, { capabilities: {}, versionNegotiation });
  client.setNotificationHandler('notifications/message', (n) => {
    logs.push({ level: n.params?.level ?? null, data: n.params?.data ?? null });
  });
  let transport;
  if (target.startsWith('stdio:')) {
    const [command, ...args] = target.slice(6).split(' ').filter(Boolean);
    transport = new StdioClientTransport({ command, args });
  } else {
    const opts = {};
    if (process.env.MCP_BEARER) opts.requestInit = { headers: { Authorization: `Bearer ${process.env.MCP_BEARER}` } };
    transport = new StreamableHTTPClientTransport(new URL(target), opts);
  }
  await client.connect(transport);
  report.protocol_version = client.getNegotiatedProtocolVersion() ?? null;
  const info = client.getServerVersion();
  report.server_info = info ? { name: info.name, version: info.version } : null;
  for (const step of script) {
    let entry;
    try {
      entry = { op: step.op, ok: true, ...(await withTimeout(runStep(client, step), (step.timeout_s ?? 30) + 1)) };
    } catch (e) {
      entry = errEntry(step.op, e);
    }
    if (step.allow_error) entry.allow_error = true;
    report.steps.push(entry);
  }
  await Promise.race([client.close().catch(() => {}), new Promise((r) => setTimeout(r, 2000))]);
  clearTimeout(overall);
  report.ok = report.steps.every((s) => s.ok || s.allow_error);
  finish(report.ok ? 0 : 1);
}

main().catch((e) => { clearTimeout(overall); finish(2, e); });
