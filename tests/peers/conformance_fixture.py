#!/usr/bin/env python3
"""Countersign's project-owned conformance fixture upstream (Python `mcp` 2.3.0, dual-era).

It exposes the tool / resource / prompt names that the server scenarios of
`@modelcontextprotocol/conformance` 0.1.16 and 0.2.0-alpha.12 call (the suite's own
"everything-server" fixture is not published), so the suite can run in server mode
either directly against this process or against Countersign placed in front of it.

Usage (from the repo root, with the .peers venv):
    .peers/venv/bin/python tests/peers/conformance_fixture.py http PORT   # 127.0.0.1:PORT/mcp
    .peers/venv/bin/python tests/peers/conformance_fixture.py stdio

The `tasks-*` extension scenarios are not implemented (the suite reports them as extension,
not scored by `--requirements 2026-07-28`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sys
from typing import Annotated, Any

from pydantic import BaseModel, Field

from mcp.server import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer, RequestStateSecurity
from mcp.server.mcpserver.prompts.base import Prompt, UserMessage
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.shared.exceptions import MCPError
from mcp_types import (
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    AudioContent,
    Completion,
    CompletionArgument,
    CompletionContext,
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    InputRequest,
    InputRequiredResult,
    JSONRPCMessage,
    ListRootsRequest,
    ListRootsResult,
    PromptReference,
    ResourceTemplateReference,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)

log = logging.getLogger("conformance_fixture")

# 1x1 PNG and a tiny WAV header: the suite only checks type/mimeType/base64 shape.
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
WAV_B64 = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="


class MemoryEventStore(EventStore):
    """Unbounded-enough in-memory event store so SSE streams are resumable (Last-Event-ID)."""

    def __init__(self, limit: int = 10_000) -> None:
        self._events: list[tuple[str, str, JSONRPCMessage | None]] = []
        self._next = 0
        self._limit = limit

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        self._next += 1
        self._events.append((stream_id, str(self._next), message))
        if len(self._events) > self._limit:
            del self._events[: len(self._events) - self._limit]
        return str(self._next)

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        stream = next((s for s, e, _ in self._events if e == last_event_id), None)
        if stream is None:
            return None
        after = int(last_event_id)
        for s, e, msg in list(self._events):
            if s == stream and int(e) > after and msg is not None:
                await send_callback(EventMessage(msg, e))
        return stream


mcp = MCPServer(
    name="countersign-conformance-fixture",
    version="0.1.0",
    # MRTR requestState is sealed by the SDK; a fixed key keeps it valid across restarts.
    request_state_security=RequestStateSecurity(keys=[b"countersign-conformance-fixture-request-state-key-0001"]),
)
subscriptions: set[str] = set()


# ---------------------------------------------------------------- content tools
@mcp.tool()
def test_simple_text() -> str:
    """Returns a single text content block."""
    return "This is a simple text response for testing."


@mcp.tool()
def test_image_content() -> list[ImageContent]:
    """Returns a single image content block."""
    return [ImageContent(type="image", data=PNG_B64, mime_type="image/png")]


@mcp.tool()
def test_audio_content() -> list[AudioContent]:
    """Returns a single audio content block."""
    return [AudioContent(type="audio", data=WAV_B64, mime_type="audio/wav")]


@mcp.tool()
def test_embedded_resource() -> list[EmbeddedResource]:
    """Returns an embedded text resource."""
    res = TextResourceContents(uri="test://embedded-resource", mime_type="text/plain",
                               text="This is an embedded resource content.")
    return [EmbeddedResource(type="resource", resource=res)]


@mcp.tool()
def test_multiple_content_types() -> list[TextContent | ImageContent | EmbeddedResource]:
    """Returns text, image and embedded resource content together."""
    res = TextResourceContents(uri="test://mixed-content-resource", mime_type="application/json",
                               text='{"test": "data", "value": 123}')
    return [
        TextContent(type="text", text="Multiple content types test:"),
        ImageContent(type="image", data=PNG_B64, mime_type="image/png"),
        EmbeddedResource(type="resource", resource=res),
    ]


@mcp.tool()
def test_error_handling() -> str:
    """Always fails; the SDK turns the exception into an isError result."""
    raise RuntimeError("This tool intentionally returns an error for testing")


# ------------------------------------------------------- notifications tools
@mcp.tool()
async def test_tool_with_logging(ctx: Context) -> str:
    """Emits three log notifications while running."""
    for msg in ("Tool execution started", "Tool processing data", "Tool execution completed"):
        await ctx.info(msg)
        await asyncio.sleep(0.05)
    return "Tool with logging executed successfully"


@mcp.tool()
async def test_logging_tool(ctx: Context) -> str:
    """Logs a message; on 2026-07-28 the SDK drops it unless the request opted in via _meta logLevel."""
    await ctx.info("test_logging_tool log message")
    return "logged"


@mcp.tool()
async def test_tool_with_progress(ctx: Context) -> str:
    """Reports progress 0, 50, 100 of 100."""
    for step in (0, 50, 100):
        await ctx.report_progress(progress=step, total=100, message=f"Completed step {step} of 100")
        if step < 100:
            await asyncio.sleep(0.05)
    meta = ctx.request_context.meta if ctx.request_context else None
    token = meta.get("progress_token") if isinstance(meta, dict) else getattr(meta, "progress_token", None)
    return str(token if token is not None else 0)


@mcp.tool()
async def test_reconnection(ctx: Context) -> str:
    """Closes the SSE response stream mid-call so the client has to resume (SEP-1699)."""
    await ctx.info("Before disconnect")
    await ctx.close_sse_stream()
    await asyncio.sleep(0.2)
    await ctx.info("After reconnect")
    return "Reconnection test completed"


# ------------------------------------------------ server-to-client requests
@mcp.tool()
async def test_sampling(prompt: str, ctx: Context) -> str:
    """Asks the client for an LLM completion (legacy-era sampling/createMessage)."""
    try:
        result = await ctx.session.create_message(
            messages=[SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
            max_tokens=100,
            related_request_id=ctx.request_id,
        )
        text = result.content.text if getattr(result.content, "type", None) == "text" else "No response"
        return f"LLM response: {text}"
    except Exception as e:  # noqa: BLE001
        return f"Sampling not supported or error: {e}"


class _Answer(BaseModel):
    response: str = Field(description="User's response")


async def _elicit_text(ctx: Context, message: str, schema: type[BaseModel], label: str) -> str:
    try:
        result = await ctx.elicit(message=message, schema=schema)
        content = result.data.model_dump_json() if result.action == "accept" else "{}"
        return f"{label}: action={result.action}, content={content}"
    except Exception as e:  # noqa: BLE001
        return f"Elicitation not supported or error: {e}"


@mcp.tool()
async def test_elicitation(message: str, ctx: Context) -> str:
    """Asks the client for user input (elicitation/create)."""
    return await _elicit_text(ctx, message, _Answer, "User response")


class _Defaults(BaseModel):
    name: str = Field(default="John Doe", description="User name")
    age: int = Field(default=30, description="User age")
    score: float = Field(default=95.5, description="User score")
    status: str = Field(default="active", description="User status",
                        json_schema_extra={"enum": ["active", "inactive", "pending"]})
    verified: bool = Field(default=True, description="Verification status")


@mcp.tool()
async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
    """Elicitation whose schema carries defaults for every primitive type (SEP-1034)."""
    return await _elicit_text(ctx, "Please provide user information", _Defaults, "Elicitation result")


class _Enums(BaseModel):
    untitledSingle: str = Field(description="Simple enum without titles",
                                json_schema_extra={"enum": ["active", "inactive", "pending"]})
    titledSingle: str = Field(description="Enum with titled options (oneOf)", json_schema_extra={"oneOf": [
        {"const": "low", "title": "Low Priority"},
        {"const": "medium", "title": "Medium Priority"},
        {"const": "high", "title": "High Priority"}]})
    untitledMulti: list[str] = Field(description="Multi-select without titles",
                                     json_schema_extra={"items": {"type": "string",
                                                                  "enum": ["read", "write", "execute"]}})
    titledMulti: list[str] = Field(description="Multi-select with titled options", json_schema_extra={"items": {
        "anyOf": [{"const": "feature", "title": "New Feature"},
                  {"const": "bug", "title": "Bug Fix"},
                  {"const": "docs", "title": "Documentation"}]}})
    legacyEnum: str = Field(description="Legacy enum with enumNames", json_schema_extra={
        "enum": ["small", "medium", "large"], "enumNames": ["Small Size", "Medium Size", "Large Size"]})


@mcp.tool()
async def test_elicitation_sep1330_enums(ctx: Context) -> str:
    """Elicitation with the SEP-1330 enum schema variants."""
    return await _elicit_text(ctx, "Please select values using different enum schema types", _Enums,
                              "Elicitation completed")


@mcp.tool()
async def test_missing_capability(ctx: Context) -> str:
    """Needs the client `sampling` capability; without it fails with -32021 (MissingRequiredClientCapability)."""
    caps = ctx.session.client_capabilities
    if caps is None or caps.sampling is None:
        raise MCPError(code=MISSING_REQUIRED_CLIENT_CAPABILITY,
                       message="This tool requires the client 'sampling' capability",
                       data={"requiredCapabilities": {"sampling": {}}})
    return "sampling capability declared"


# ------------------------------------------- SEP-2322 InputRequiredResult (MRTR)
_NAME_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
_OK_SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}


def _ask(message: str, schema: dict[str, Any] | None = None) -> ElicitRequest:
    return ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=schema or _NAME_SCHEMA))


def _sample(text: str, max_tokens: int = 100) -> CreateMessageRequest:
    return CreateMessageRequest(params=CreateMessageRequestParams(
        messages=[SamplingMessage(role="user", content=TextContent(type="text", text=text))], max_tokens=max_tokens))


def _field(answer: Any, key: str, default: Any = None) -> Any:
    if isinstance(answer, ElicitResult) and answer.content:
        return answer.content.get(key, default)
    return default


@mcp.tool()
async def test_streaming_elicitation(ctx: Context) -> str | InputRequiredResult:
    """Needs user input; on 2026-07-28 asks for it through InputRequiredResult, never a stream request."""
    responses = ctx.input_responses or {}
    if "user_name" in responses:
        return f"Hello, {_field(responses['user_name'], 'name', 'stranger')}!"
    return InputRequiredResult(input_requests={"user_name": _ask("What is your name?")})


@mcp.tool()
async def test_input_required_result_elicitation(ctx: Context) -> str | InputRequiredResult:
    """One elicitation round, then greets the answer."""
    responses = ctx.input_responses or {}
    if "user_name" in responses:
        return f"Hello, {_field(responses['user_name'], 'name', 'stranger')}!"
    return InputRequiredResult(input_requests={"user_name": _ask("What is your name?")})


@mcp.tool()
async def test_input_required_result_sampling(ctx: Context) -> str | InputRequiredResult:
    """One sampling round."""
    responses = ctx.input_responses or {}
    if "capital_question" in responses:
        ans = responses["capital_question"]
        text = ans.content.text if isinstance(ans, CreateMessageResult) and ans.content.type == "text" else "?"
        return f"Model said: {text}"
    return InputRequiredResult(input_requests={"capital_question": _sample("What is the capital of France?")})


@mcp.tool()
async def test_input_required_result_list_roots(ctx: Context) -> str | InputRequiredResult:
    """One roots/list round."""
    responses = ctx.input_responses or {}
    if "client_roots" in responses:
        ans = responses["client_roots"]
        return f"Client exposed {len(ans.roots) if isinstance(ans, ListRootsResult) else 0} root(s)."
    return InputRequiredResult(input_requests={"client_roots": ListRootsRequest()})


@mcp.tool()
async def test_input_required_result_request_state(ctx: Context) -> str | InputRequiredResult:
    """Round-trips an opaque requestState."""
    responses = ctx.input_responses or {}
    if "confirm" in responses and ctx.request_state == "request-state-nonce":
        return "state-ok: confirmation received"
    return InputRequiredResult(input_requests={"confirm": _ask("Please confirm", _OK_SCHEMA)},
                               request_state="request-state-nonce")


@mcp.tool()
async def test_input_required_result_multiple_inputs(ctx: Context) -> str | InputRequiredResult:
    """Elicitation, sampling and roots requested together."""
    responses = ctx.input_responses or {}
    if {"user_name", "greeting", "client_roots"} <= set(responses):
        return "All inputs received."
    return InputRequiredResult(input_requests={
        "user_name": _ask("What is your name?"),
        "greeting": _sample("Generate a greeting", 50),
        "client_roots": ListRootsRequest(),
    }, request_state="multiple-inputs")


@mcp.tool()
async def test_input_required_result_multi_round(ctx: Context) -> str | InputRequiredResult:
    """Three rounds with an evolving requestState."""
    state = json.loads(ctx.request_state) if ctx.request_state else {"round": 0}
    responses = ctx.input_responses or {}
    if state.get("round") == 1 and "step1" in responses:
        color = {"type": "object", "properties": {"color": {"type": "string"}}, "required": ["color"]}
        return InputRequiredResult(
            input_requests={"step2": _ask("Step 2: What is your favorite color?", color)},
            request_state=json.dumps({"round": 2, "name": _field(responses["step1"], "name")}))
    if state.get("round") == 2 and "step2" in responses:
        return f"{state.get('name')} likes {_field(responses['step2'], 'color')}."
    return InputRequiredResult(input_requests={"step1": _ask("Step 1: What is your name?")},
                               request_state=json.dumps({"round": 1}))


@mcp.tool()
async def test_input_required_result_tampered_state(ctx: Context) -> str | InputRequiredResult:
    """Issues a requestState; the SDK's sealed-state boundary rejects a tampered echo."""
    if ctx.request_state is None:
        return InputRequiredResult(input_requests={"confirm": _ask("Please confirm", _OK_SCHEMA)},
                                   request_state="round-1")
    return f"state-ok: {ctx.request_state}"


@mcp.tool()
async def test_input_required_result_capabilities(ctx: Context) -> InputRequiredResult:
    """Only asks for input kinds the client declared."""
    caps = ctx.client_capabilities
    requests: dict[str, InputRequest] = {}
    if caps is None or caps.sampling is not None:
        requests["sample"] = _sample("Say hello", 50)
    if caps is None or caps.elicitation is not None:
        requests["ask"] = _ask("What is your name?")
    return InputRequiredResult(input_requests=requests, request_state="capability-gated")


# ------------------------------------------------------------ schema / headers
_SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {"address": {"$anchor": "addressDef", "type": "object",
                          "properties": {"street": {"type": "string"}, "city": {"type": "string"}}}},
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


@mcp.tool(name="json_schema_2020_12_tool")
def json_schema_2020_12_tool() -> str:
    """Carries a JSON Schema 2020-12 inputSchema (json-schema-2020-12 scenario)."""
    return "json_schema_2020_12_tool"


# No public input_schema override in MCPServer.tool(); patch the registered tool.
mcp._tool_manager._tools["json_schema_2020_12_tool"].parameters = _SCHEMA_2020_12  # noqa: SLF001


@mcp.tool()
def test_custom_headers(
    region: Annotated[str, Field(description="Mirrored into the Mcp-Param-Region header",
                                 json_schema_extra={"x-mcp-header": "Region"})] = "<none>",
) -> str:
    """Has an x-mcp-header parameter (http-custom-header-server-validation, SEP-2243)."""
    return f"region={region}"


# ------------------------------------------------------- list_changed triggers
def _ephemeral_tool() -> str:
    """Added and removed again by test_trigger_tool_change."""
    return "dynamic"


def _ephemeral_prompt() -> str:
    """Added and removed again by test_trigger_prompt_change."""
    return "dynamic"


@mcp.tool()
async def test_trigger_tool_change(ctx: Context) -> str:
    """Changes the tool list and announces it (notifications/tools/list_changed)."""
    mcp.add_tool(_ephemeral_tool, name="test_dynamic_tool")
    mcp.remove_tool("test_dynamic_tool")
    await ctx.notify_tools_changed()
    return "tool list changed"


@mcp.tool()
async def test_trigger_prompt_change(ctx: Context) -> str:
    """Changes the prompt list and announces it (notifications/prompts/list_changed)."""
    mcp.add_prompt(Prompt.from_function(_ephemeral_prompt, name="test_dynamic_prompt", description="dynamic"))
    mcp.remove_prompt("test_dynamic_prompt")
    await ctx.notify_prompts_changed()
    return "prompt list changed"


# ------------------------------------------------------------------ resources
@mcp.resource("test://static-text")
def static_text() -> str:
    """A static text resource."""
    return "This is the content of the static text resource."


@mcp.resource("test://static-binary")
def static_binary() -> bytes:
    """A static binary resource (PNG)."""
    return base64.b64decode(PNG_B64)


@mcp.resource("test://template/{id}/data")
def template_data(id: str) -> str:  # noqa: A002
    """Resource template with one parameter."""
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


@mcp.resource("test://watched-resource")
def watched() -> str:
    """A resource clients may subscribe to."""
    return "Watched resource content"


# -------------------------------------------------------------------- prompts
@mcp.prompt()
def test_simple_prompt() -> list[UserMessage]:
    """A prompt without arguments."""
    return [UserMessage(role="user", content=TextContent(type="text", text="This is a simple prompt for testing."))]


@mcp.prompt()
def test_prompt_with_arguments(arg1: str, arg2: str) -> list[UserMessage]:
    """A prompt with two required arguments."""
    text = f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"
    return [UserMessage(role="user", content=TextContent(type="text", text=text))]


@mcp.prompt()
def test_prompt_with_embedded_resource(resourceUri: str) -> list[UserMessage]:  # noqa: N803
    """A prompt that embeds a resource."""
    res = TextResourceContents(uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing.")
    return [
        UserMessage(role="user", content=EmbeddedResource(type="resource", resource=res)),
        UserMessage(role="user", content=TextContent(type="text", text="Please process the embedded resource above.")),
    ]


@mcp.prompt()
def test_prompt_with_image() -> list[UserMessage]:
    """A prompt with image content."""
    return [
        UserMessage(role="user", content=ImageContent(type="image", data=PNG_B64, mime_type="image/png")),
        UserMessage(role="user", content=TextContent(type="text", text="Please analyze the image above.")),
    ]


@mcp.prompt()
async def test_input_required_result_prompt(ctx: Context) -> list[UserMessage] | InputRequiredResult:
    """prompts/get that needs input first (SEP-2322 on a non-tool request)."""
    responses = ctx.input_responses or {}
    if "user_context" in responses:
        text = _field(responses["user_context"], "context", "?")
        return [UserMessage(role="user", content=TextContent(type="text", text=f"Use the following context: {text}"))]
    schema = {"type": "object", "properties": {"context": {"type": "string"}}, "required": ["context"]}
    return InputRequiredResult(input_requests={"user_context": _ask("What context should the prompt use?", schema)})


# ------------------------------------------- logging / subscribe / completion
async def _set_level(ctx: ServerRequestContext, params: SetLevelRequestParams) -> EmptyResult:
    log.info("log level set to %s", params.level)
    return EmptyResult()


async def _subscribe(ctx: ServerRequestContext, params: SubscribeRequestParams) -> EmptyResult:
    subscriptions.add(str(params.uri))
    return EmptyResult()


async def _unsubscribe(ctx: ServerRequestContext, params: UnsubscribeRequestParams) -> EmptyResult:
    subscriptions.discard(str(params.uri))
    return EmptyResult()


_low = mcp._lowlevel_server  # noqa: SLF001
_low.add_request_handler("logging/setLevel", SetLevelRequestParams, _set_level)
_low.add_request_handler("resources/subscribe", SubscribeRequestParams, _subscribe)
_low.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, _unsubscribe)


@mcp.completion()
async def _complete(ref: PromptReference | ResourceTemplateReference, argument: CompletionArgument,
                    context: CompletionContext | None) -> Completion:
    options = {"arg1": ["paris", "park", "party"], "arg2": ["alpha", "beta"], "id": ["1", "2", "123"]}
    values = [v for v in options.get(argument.name, []) if v.startswith(argument.value or "")]
    return Completion(values=values, total=len(values), has_more=False)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    mode = argv[1] if len(argv) > 1 else "stdio"
    if mode == "stdio":
        mcp.run("stdio")
    elif mode == "http":
        port = int(argv[2]) if len(argv) > 2 else 3905
        mcp.run("streamable-http", host="127.0.0.1", port=port, event_store=MemoryEventStore(), retry_interval=100)
    else:
        print(f"usage: {argv[0]} http PORT | stdio", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
