"""``/api/v1/mcp``: the gateway served as one Streamable HTTP MCP server (the SDK's).

Every tool the key may use is listed as ``{server}__{tool}``. The endpoint is a Falcon
route like any other, so the gateway middleware authenticates the bearer key, applies
its rate limit and the ``mcp:read`` scope first (``mcp:write`` is checked per tool
call); the request is then handed to the SDK's ``StreamableHTTPSessionManager`` in
stateless JSON mode, which answers both protocol revisions: 2025-11-25 (``initialize``,
no session id kept) and 2026-07-28 (``server/discover``, one self-contained POST). No
state outlives a request, so any worker or node can serve any request.

``Origin`` is checked before anything else: absent (not a browser), the request's own
origin, or one of ``[gateway] allowed_origins``; anything else is 403 (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import MutableMapping
from typing import Any

import falcon
import falcon.asgi
import mcp_types as types
import orjson
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError

from ..config import Settings
from ..errors import AccessDenied, ApiError
from ..gateway.request_ids import request_id
from ..web.bodies import read_raw
from ..workspaces.service import WorkspaceService
from .backends import Caller, Structured
from .resources import caller_of
from .service import McpGateway

SEPARATOR = "__"
_CALLER, _REQUEST_ID = "core_api.mcp.caller", "core_api.mcp.request_id"
_HTTP_ERRORS = {
    400: ("bad_request", "The request could not be processed."),
    404: ("not_found", "Resource not found."),
    406: ("not_acceptable", "Accept must include application/json and text/event-stream."),
    413: ("payload_too_large", "The request body is too large."),
    415: ("unsupported_media_type", "The request body must be application/json."),
}
_PASSED_HEADERS = {b"content-type", b"mcp-session-id", b"mcp-protocol-version", b"allow"}


def _context(ctx: ServerRequestContext[Any, Any]) -> tuple[Caller, str | None]:
    scope = ctx.request.scope if ctx.request is not None else {}
    caller = scope.get(_CALLER)
    if not isinstance(caller, Caller):  # only reachable through the Falcon route
        raise MCPError(code=types.INVALID_REQUEST, message="Not authenticated.")
    return caller, scope.get(_REQUEST_ID)


def _error_result(exc: ApiError) -> types.CallToolResult:
    body = exc.body()
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=orjson.dumps(body).decode())],
        is_error=True,
    )


def build_server(gw: McpGateway) -> Server[Any]:
    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        caller, _ = _context(ctx)
        specs = await gw.visible(caller)
        wait = gw.registry.connect_timeout + 1  # a first start is slow; a failed one is not

        async def one(server_id: str) -> list[types.Tool]:
            try:
                catalogue = await asyncio.wait_for(gw.backends[server_id].catalogue(), wait)
            except (ApiError, TimeoutError, MCPError, OSError):
                return []  # an unavailable server lists no tools; the others still do
            return [
                t.model_copy(update={"name": f"{server_id}{SEPARATOR}{t.name}"})
                for t in catalogue.tools
            ]

        found = await asyncio.gather(*(one(s.id) for s in specs))
        return types.ListToolsResult(tools=[t for tools in found for t in tools])

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        caller, rid = _context(ctx)
        server_id, sep, tool = params.name.partition(SEPARATOR)
        if not sep or not tool:
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {params.name}")
        if not caller.principal.allows("mcp:write"):
            return _error_result(AccessDenied("mcp:write"))
        try:
            result = await gw.call(
                caller, server_id, tool, params.arguments or {}, transport="mcp", request_id=rid
            )
        except ApiError as exc:
            return _error_result(exc)
        return result.to_mcp() if isinstance(result, Structured) else result

    def input_schema(name: str) -> dict[str, Any] | None:
        """For the SDK's Mcp-Param header check: from the cached catalogues, so that a
        tools/call does not list every server's tools first."""
        server_id, _, tool_name = name.partition(SEPARATOR)
        backend = gw.backends.get(server_id)
        catalogue = backend.cached() if backend is not None else None
        tool = catalogue.tool(tool_name) if catalogue is not None else None
        return dict(tool.input_schema) if tool is not None else None

    return Server(
        "core-api",
        get_tool_input_schema=input_schema,
        version="1",
        instructions="core-api's MCP gateway: tools are named {server}__{tool}.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


class McpEndpoint:
    """The Falcon route in front of the SDK's session manager (stateless, JSON)."""

    scopes = {"POST": "mcp:read", "GET": "mcp:read", "DELETE": "mcp:read"}

    def __init__(self, settings: Settings, workspaces: WorkspaceService, gw: McpGateway) -> None:
        self.settings, self.workspaces, self.gw = settings, workspaces, gw
        self.origins = gw.registry.allowed_origins
        self.manager: StreamableHTTPSessionManager | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def _started(self) -> StreamableHTTPSessionManager:
        if self.manager is not None:
            return self.manager
        manager = StreamableHTTPSessionManager(
            build_server(self.gw),
            json_response=True,
            stateless=True,
            max_request_body_size=self.settings.max_body_bytes,
        )
        ready = asyncio.Event()

        async def run() -> None:  # the manager's task group lives as long as the process
            async with manager.run():
                ready.set()
                await self._stop.wait()

        self._runner = asyncio.create_task(run(), name="mcp:endpoint")
        await ready.wait()
        self.manager = manager
        return manager

    async def close(self) -> None:
        self._stop.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            with contextlib.suppress(Exception):
                await runner

    def _check_origin(self, req: falcon.asgi.Request) -> None:
        origin = req.get_header("Origin")
        if origin is None:
            return
        origin = origin.rstrip("/")
        if origin in self.origins or origin == f"{req.scheme}://{req.host}" + (
            f":{req.port}" if req.port not in (80, 443) else ""
        ):
            return
        raise AccessDenied(message="The Origin of this request is not allowed.")

    async def _serve(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        self._check_origin(req)
        manager = await self._started()
        body = await read_raw(req, self.settings) if req.method == "POST" else b""
        caller = await caller_of(req, self.workspaces)
        scope = dict(req.scope)
        # Rebuilt from Falcon's parsed headers: the scope's own may be a consumed iterator.
        scope["headers"] = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in req.headers.items()
        ]
        scope["path"], scope["raw_path"], scope["root_path"] = "/", b"/", ""
        scope[_CALLER], scope[_REQUEST_ID] = caller, request_id(req)
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()  # a disconnect never comes: the POST is complete
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        status, headers, chunks = 500, [], []

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status, headers = message["status"], message.get("headers", [])
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await manager.handle_request(scope, receive, send)
        resp.status = status
        data = b"".join(chunks)
        passed = {k.lower(): v for k, v in headers if k.lower() in _PASSED_HEADERS}
        if status >= 400 and not passed.get(b"content-type", b"").startswith(b"application/json"):
            # The transport's own refusals (406, 413, ...) in the documented error shape.
            code, message = _HTTP_ERRORS.get(status, ("http_error", "The request was refused."))
            detail = data.decode("utf-8", "replace").strip()[:200]
            resp.media = {"error": code, "message": detail or message}
            return
        for name, value in passed.items():
            resp.set_header(name.decode("latin-1"), value.decode("latin-1"))
        resp.data = data

    on_post = _serve

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """No server-initiated stream: this endpoint keeps no session (stateless)."""
        self._check_origin(req)
        raise falcon.HTTPMethodNotAllowed(["POST"])

    on_delete = on_get
