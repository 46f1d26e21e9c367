#!/usr/bin/env python3
"""A small MCP tool server on stdio, standard library only: the quick start's example upstream.

Speaks both protocol eras: `initialize` (legacy) or `server/discover` plus per-request `_meta`
(2026-07-28). Tools: `echo` (read-only), `add` (read-only), `slow_count` (progress
notifications), `delete_record` (destructive, does nothing real). One resource, one prompt.
"""
import json
import sys
import threading
import time

TOOLS = [
    {"name": "echo", "description": "Echo a message back.",
     "inputSchema": {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]},
     "annotations": {"readOnlyHint": True, "openWorldHint": False}},
    {"name": "add", "description": "Add two integers.",
     "inputSchema": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                     "required": ["a", "b"]},
     "annotations": {"readOnlyHint": True, "openWorldHint": False}},
    {"name": "slow_count", "description": "Count to n, one progress notification per step.",
     "inputSchema": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 50}},
                     "required": ["n"]}},
    {"name": "delete_record", "description": "Pretend to delete a record (destructive).",
     "inputSchema": {"type": "object", "properties": {"record_id": {"type": "string"}}, "required": ["record_id"]},
     "annotations": {"readOnlyHint": False, "destructiveHint": True}},
]
RESOURCES = [{"uri": "echo://readme", "name": "readme", "mimeType": "text/plain"}]
PROMPTS = [{"name": "greet", "description": "Greet someone.", "arguments": [{"name": "who", "required": True}]}]
CAPABILITIES = {"tools": {"listChanged": False}, "resources": {}, "prompts": {}}
INFO = {"name": "echo-upstream", "version": "1.0.0"}
LEGACY = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"]

out_lock = threading.Lock()
cancelled = set()


def send(message):
    with out_lock:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


def text(t, error=False):
    return {"content": [{"type": "text", "text": t}], "isError": error}


def call_tool(params, progress_token, request_id):
    name, args = params.get("name"), params.get("arguments") or {}
    if name == "echo":
        return text(str(args.get("message", "")))
    if name == "add":
        return text(str(int(args["a"]) + int(args["b"])))
    if name == "delete_record":
        return text(f"deleted {args.get('record_id')}")
    if name == "slow_count":
        n = int(args.get("n", 1))
        for i in range(1, n + 1):
            if request_id in cancelled:
                return None
            if progress_token is not None:
                send({"jsonrpc": "2.0", "method": "notifications/progress",
                      "params": {"progressToken": progress_token, "progress": i, "total": n, "message": f"step {i}/{n}"}})
            time.sleep(0.1)
        return text(f"counted to {n}")
    raise LookupError(f"Unknown tool: {name}")


def answer(method, params, request_id):
    meta = params.get("_meta") or {}
    if method == "initialize":
        asked = params.get("protocolVersion")
        return {"protocolVersion": asked if asked in LEGACY else LEGACY[-1], "capabilities": CAPABILITIES, "serverInfo": INFO}
    if method == "server/discover":
        return {"supportedVersions": ["2026-07-28"], "capabilities": CAPABILITIES, "serverInfo": INFO, "resultType": "complete"}
    if method == "ping":
        return {}
    if method == "tools/list":
        return {"tools": TOOLS}
    if method == "tools/call":
        return call_tool(params, meta.get("progressToken"), request_id)
    if method == "resources/list":
        return {"resources": RESOURCES}
    if method == "resources/read":
        return {"contents": [{"uri": params.get("uri"), "mimeType": "text/plain", "text": "Countersign echo upstream."}]}
    if method == "prompts/list":
        return {"prompts": PROMPTS}
    if method == "prompts/get":
        who = (params.get("arguments") or {}).get("who", "world")
        return {"messages": [{"role": "user", "content": {"type": "text", "text": f"Say hello to {who}."}}]}
    raise NotImplementedError(method)


def handle(message):
    request_id, method, params = message.get("id"), message.get("method"), message.get("params") or {}
    try:
        result = answer(method, params, request_id)
        if result is not None:
            send({"jsonrpc": "2.0", "id": request_id, "result": result})
    except NotImplementedError:
        send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": f"Method not found: {method}"}})
    except (LookupError, KeyError, ValueError) as e:
        send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32602, "message": str(e)}})


def main():
    for line in sys.stdin:
        if not line.strip():
            continue
        message = json.loads(line)
        if "method" not in message:
            continue
        if "id" not in message:
            if message["method"] == "notifications/cancelled":
                cancelled.add((message.get("params") or {}).get("requestId"))
            continue
        threading.Thread(target=handle, args=(message,), daemon=True).start()


if __name__ == "__main__":
    main()
