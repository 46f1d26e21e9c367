#!/usr/bin/env python3
"""Scripted MCP client on the Python SDK (`mcp` 2.3.0), used by Countersign's integration tests.

Usage:
    py_client.py TARGET [MODE] [SCRIPT]

    TARGET  Streamable HTTP URL (http://127.0.0.1:PORT/mcp) or "stdio:<command line>".
    MODE    auto (default: probe server/discover, fall back to initialize) | legacy | 2026-07-28 (pin).
    SCRIPT  JSON array of steps, or "@path" to read it from a file; default [{"op":"list_tools"}].

Environment:
    MCP_BEARER           if set and TARGET is HTTP, every request carries "Authorization: Bearer $MCP_BEARER".
    PEER_CLIENT_TIMEOUT  overall time limit in seconds (default 60); each step is also bounded by
                         its "timeout_s" (default 30).

Steps (same format in ts_client.mjs). Every step may carry "allow_error": true, which keeps an
error in that step from failing the run (exit code); "timeout_s" bounds the step.
    {"op":"list_tools"}                                  -> "tools": [names], "raw": ListToolsResult
    {"op":"call_tool","name":N,"args":{...}}             -> "is_error", "text", "progress", "logs", "raw"
        optional "read_timeout_s": the SDK's own per-request read timeout (seconds)
    {"op":"read_resource","uri":U}                       -> "text" (text contents joined), "raw"
    {"op":"get_prompt","name":N,"args":{...}}            -> "text" (text messages joined), "raw"
    {"op":"list_resources"}                              -> "resources": [uris], "raw"
    {"op":"list_prompts"}                                -> "prompts": [names], "raw"
    {"op":"cancel","name":N,"args":{...},"after_progress":1,"after_ms":null}
        starts call_tool N and abandons it after `after_progress` progress notifications arrived
        (default 1) or, if "after_ms" is given, after that many ms. Abandoning the call makes the
        SDK send notifications/cancelled (legacy era / stdio) or abort the request's POST stream
        (2026-07-28 HTTP). -> "cancelled": true if the call was still running when abandoned,
        false if it finished first (then "raw"/"is_error"/"text" hold the result), plus "progress".
    {"op":"sleep","ms":N}

Output: exactly one JSON object on stdout (one line):
    {"ok": bool, "sdk": "python-mcp-2.3.0", "mode": MODE, "protocol_version": "2026-07-28"|"2025-11-25"|...,
     "server_info": {"name":..,"version":..}|null, "steps": [STEP_RESULT, ...], "error": "..." (only on failure)}
    STEP_RESULT = {"op": OP, "ok": true, ...fields above...}
                | {"op": OP, "ok": false, "error": "message", "code": JSON-RPC error code or null}
    "text" joins the text items with "\\n". "progress" is a list of {"progress","total","message"}.
    "raw" is the result as JSON with wire (camelCase) field names.
Exit code: 0 all steps ok (or allow_error); 1 some step failed; 2 usage / connection / timeout error
(a JSON object with "ok": false and "error" is still printed, with the steps done so far).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

SDK = "python-mcp-2.3.0"


def dump(model: Any) -> Any:
    if model is None:
        return None
    if hasattr(model, "model_dump"):
        return model.model_dump(by_alias=True, exclude_none=True, mode="json")
    return model


def texts(items: Any) -> str:
    out = []
    for it in items or []:
        t = getattr(it, "text", None)
        if isinstance(t, str):
            out.append(t)
    return "\n".join(out)


def error_entry(op: str, e: BaseException) -> dict[str, Any]:
    if isinstance(e, MCPError):
        return {"op": op, "ok": False, "error": e.message, "code": e.code}
    if isinstance(e, TimeoutError):
        return {"op": op, "ok": False, "error": "step timed out", "code": None}
    msg = str(e) or type(e).__name__
    # anyio/ExceptionGroup wrappers: report the first leaf
    while hasattr(e, "exceptions") and getattr(e, "exceptions"):
        e = e.exceptions[0]  # type: ignore[attr-defined]
        if isinstance(e, MCPError):
            return {"op": op, "ok": False, "error": e.message, "code": e.code}
        msg = str(e) or type(e).__name__
    return {"op": op, "ok": False, "error": f"{type(e).__name__}: {msg}", "code": None}


class Runner:
    def __init__(self, client: Client, logs: list[dict[str, Any]]) -> None:
        self.c = client
        self.logs = logs

    async def call_tool(self, step: dict[str, Any]) -> dict[str, Any]:
        progress: list[dict[str, Any]] = []

        async def on_progress(p: float, total: float | None, message: str | None) -> None:
            progress.append({"progress": p, "total": total, "message": message})

        mark = len(self.logs)
        read_timeout = step.get("read_timeout_s")
        res = await self.c.call_tool(
            step["name"], step.get("args") or {}, read_timeout_seconds=read_timeout, progress_callback=on_progress
        )
        return {"is_error": bool(res.is_error), "text": texts(res.content), "progress": progress,
                "logs": self.logs[mark:], "raw": dump(res)}

    async def cancel(self, step: dict[str, Any]) -> dict[str, Any]:
        progress: list[dict[str, Any]] = []
        need = int(step.get("after_progress", 1))
        after_ms = step.get("after_ms")
        trigger = anyio.Event()
        outcome: dict[str, Any] = {}

        async def on_progress(p: float, total: float | None, message: str | None) -> None:
            progress.append({"progress": p, "total": total, "message": message})
            if after_ms is None and len(progress) >= need:
                trigger.set()

        async def run_call() -> None:
            try:
                res = await self.c.call_tool(step["name"], step.get("args") or {}, progress_callback=on_progress)
                outcome["result"] = res
            except Exception as e:  # noqa: BLE001
                outcome["error"] = e
            trigger.set()

        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_call)
            if after_ms is not None:
                with anyio.move_on_after(float(after_ms) / 1000):
                    await trigger.wait()
            else:
                await trigger.wait()
            tg.cancel_scope.cancel()
        out: dict[str, Any] = {"progress": progress, "elapsed_ms": int((time.monotonic() - started) * 1000)}
        if "error" in outcome:
            raise outcome["error"]
        if "result" in outcome:
            res = outcome["result"]
            out.update(cancelled=False, is_error=bool(res.is_error), text=texts(res.content), raw=dump(res))
        else:
            out["cancelled"] = True
        return out

    async def step(self, step: dict[str, Any]) -> dict[str, Any]:
        op = step.get("op")
        c = self.c
        if op == "list_tools":
            r = await c.list_tools()
            return {"tools": [t.name for t in r.tools], "raw": dump(r)}
        if op == "call_tool":
            return await self.call_tool(step)
        if op == "cancel":
            return await self.cancel(step)
        if op == "read_resource":
            r = await c.read_resource(step["uri"])
            return {"text": texts(r.contents), "raw": dump(r)}
        if op == "get_prompt":
            r = await c.get_prompt(step["name"], step.get("args") or {})
            return {"text": "\n".join(texts([m.content]) for m in r.messages if texts([m.content])), "raw": dump(r)}
        if op == "list_resources":
            r = await c.list_resources()
            return {"resources": [str(x.uri) for x in r.resources], "raw": dump(r)}
        if op == "list_prompts":
            r = await c.list_prompts()
            return {"prompts": [p.name for p in r.prompts], "raw": dump(r)}
        if op == "sleep":
            await anyio.sleep(float(step.get("ms", 0)) / 1000)
            return {}
        raise ValueError(f"unknown op {op!r}")


async def run(target: str, mode: str, script: list[dict[str, Any]], report: dict[str, Any]) -> None:
    logs: list[dict[str, Any]] = []

    async def on_log(params: Any) -> None:
        logs.append({"level": getattr(params, "level", None), "data": dump(getattr(params, "data", None))})

    kwargs: dict[str, Any] = {"mode": mode, "logging_callback": on_log}

    async def session(server: Any) -> None:
        async with Client(server, **kwargs) as client:
            report["protocol_version"] = client.protocol_version
            info = client.server_info
            report["server_info"] = {"name": info.name, "version": info.version} if info else None
            runner = Runner(client, logs)
            for step in script:
                try:
                    with anyio.fail_after(float(step.get("timeout_s", 30))):
                        entry = {"op": step.get("op"), "ok": True, **(await runner.step(step))}
                except Exception as e:  # noqa: BLE001
                    entry = error_entry(str(step.get("op")), e)
                if step.get("allow_error"):
                    entry["allow_error"] = True
                report["steps"].append(entry)

    if target.startswith("stdio:"):
        cmd = shlex.split(target[len("stdio:"):])
        await session(StdioServerParameters(command=cmd[0], args=cmd[1:]))
        return
    bearer = os.environ.get("MCP_BEARER")
    if not bearer:
        await session(target)
        return
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {bearer}"}) as http:
        await session(streamable_http_client(target, http_client=http))


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        return 2
    target = sys.argv[1]
    mode = sys.argv[2] if len(sys.argv) > 2 else "auto"
    report: dict[str, Any] = {"ok": False, "sdk": SDK, "mode": mode, "protocol_version": None,
                              "server_info": None, "steps": []}
    try:
        raw = sys.argv[3] if len(sys.argv) > 3 else '[{"op":"list_tools"}]'
        if raw.startswith("@"):
            raw = open(raw[1:], encoding="utf-8").read()
        script = json.loads(raw)
        if not isinstance(script, list):
            raise ValueError("SCRIPT must be a JSON array of steps")
        limit = float(os.environ.get("PEER_CLIENT_TIMEOUT", "60"))

        async def bounded() -> None:
            with anyio.fail_after(limit):
                await run(target, mode, script, report)

        anyio.run(bounded)
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, KeyboardInterrupt):
            raise
        err = error_entry("connect", e)
        report["error"] = err["error"]
        if err.get("code") is not None:
            report["code"] = err["code"]
        print(json.dumps(report))
        print(f"py_client: {report['error']}", file=sys.stderr)
        return 2
    report["ok"] = all(s["ok"] or s.get("allow_error") for s in report["steps"])
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
