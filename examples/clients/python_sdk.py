"""Calling tools through Countersign with the official MCP Python SDK (`pip install mcp`, 2.x).

    python examples/clients/python_sdk.py [URL]          # default http://127.0.0.1:8931/mcp

The gateway wants the agent's API key as a bearer token: give the SDK an httpx2 client (the
HTTP library SDK 2.x is built on) that sends it on every request. COUNTERSIGN_API_KEY holds the key (the quick start's is demo-key).
"""

import os
import sys

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


async def main(url: str) -> None:
    key = os.environ.get("COUNTERSIGN_API_KEY", "demo-key")
    headers = {"Authorization": f"Bearer {key}"}
    # No read timeout: a call held for approval answers when the humans have decided.
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=None)) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            tools = await client.list_tools()
            print("tools:", ", ".join(tool.name for tool in tools.tools))
            result = await client.call_tool("echo__echo", {"message": "hi"})
            print("echo__echo:", result.content[0].text)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8931/mcp")
