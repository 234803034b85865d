"""/api/v1/mcp: servers, tools, tool calls, resources and the audit log (REST)."""

from __future__ import annotations

from typing import Any

import falcon.asgi
import mcp_types as types

from ..config import Settings
from ..gateway.auth import bearer_token
from ..gateway.request_ids import request_id
from ..web.bodies import Fields, read_json
from ..web.context import context_workspace, principal_of
from ..web.listing import MAX_PARAM_LENGTH, ascii_integer
from ..workspaces.service import WorkspaceService
from . import repo
from .backends import Caller, Structured, ToolResult
from .service import McpGateway

AUDIT_OUTCOMES = (
    "ok", "error", "timeout", "unavailable", "invalid", "refused", "denied", "rate_limited",
    "cancelled",
)  # fmt: skip


async def caller_of(req: falcon.asgi.Request, workspaces: WorkspaceService) -> Caller:
    workspace = await context_workspace(req, workspaces)
    token = bearer_token(req.get_header("Authorization")) or ""
    return Caller(principal_of(req), workspace, token)


def parameters(schema: dict[str, Any]) -> dict[str, Any]:
    """The documented per-parameter view of an input schema."""
    required = set(schema.get("required", []))
    out: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        entry = dict(prop) if isinstance(prop, dict) else {}
        entry.pop("title", None)
        entry["required"] = name in required
        out[name] = entry
    return out


def present_tool(tool: types.Tool) -> dict[str, Any]:
    schema = dict(tool.input_schema)
    return {
        "name": tool.name,
        "description": tool.description or "",
        "parameters": parameters(schema),
        "input_schema": schema,
    }


def present_result(result: ToolResult) -> dict[str, Any]:
    """``result``: the structured content when the tool gave one, else the text."""
    if isinstance(result, Structured):
        return {"result": result.payload, "is_error": result.is_error}
    blocks = [
        {"type": "text", "text": b.text}
        if type(b) is types.TextContent and b.annotations is None and b.meta is None
        else b.model_dump(mode="json", by_alias=True, exclude_none=True)
        for b in result.content
    ]
    if result.structured_content is not None:
        value: Any = result.structured_content
    else:
        texts = [b.text for b in result.content if isinstance(b, types.TextContent)]
        value = {"content": texts[0] if len(texts) == 1 else blocks}
    return {"result": value, "is_error": bool(result.is_error), "content": blocks}


class Base:
    def __init__(self, settings: Settings, workspaces: WorkspaceService, gw: McpGateway) -> None:
        self.settings, self.workspaces, self.gw = settings, workspaces, gw


class ServerCollection(Base):
    scopes = {"GET": "mcp:read"}

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = {"data": await self.gw.list_servers(await caller_of(req, self.workspaces))}


class ServerItem(Base):
    scopes = {"GET": "mcp:read"}

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, server_id: str
    ) -> None:
        caller = await caller_of(req, self.workspaces)
        resp.media = {"data": await self.gw.get_server(caller, server_id)}


class ServerTools(Base):
    scopes = {"GET": "mcp:read"}

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, server_id: str
    ) -> None:
        caller = await caller_of(req, self.workspaces)
        catalogue = await self.gw.catalogue(caller, server_id)
        resp.media = {"data": [present_tool(t) for t in catalogue.tools]}


class ToolCall(Base):
    scopes = {"POST": "mcp:write"}

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = Fields(await read_json(req, self.settings), {"server", "tool", "arguments"})
        server = body.string("server", required=True, max_length=64)
        tool = body.string("tool", required=True, max_length=128)
        arguments = body.media.get("arguments")
        if arguments is None:
            arguments = {}
        elif not isinstance(arguments, dict):
            body.fail("arguments", "The arguments must be an object.")
        body.done()
        assert server is not None and tool is not None
        caller = await caller_of(req, self.workspaces)
        result = await self.gw.call(
            caller, server, tool, arguments, transport="rest", request_id=request_id(req)
        )
        resp.media = present_result(result)


class Resource(Base):
    scopes = {"GET": "mcp:read"}

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, uri: str) -> None:
        caller = await caller_of(req, self.workspaces)
        found = await self.gw.read(caller, uri, transport="rest", request_id=request_id(req))
        contents = [
            c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in found.contents
        ]
        resp.media = {"data": {"uri": uri, "contents": contents}}


class AuditCollection(Base):
    """``GET /api/v1/mcp/audit``: the workspace's audit log, newest first."""

    scopes = {"GET": "mcp:read"}

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        errors: dict[str, list[str]] = {}
        params: dict[str, str] = {}
        for name, value in req.params.items():
            if name not in {"page", "per_page", "server", "tool", "outcome"}:
                errors[name] = [f"The {name} parameter is not supported here."]
            elif not isinstance(value, str):
                errors[name] = [f"The {name} parameter may be given only once."]
            elif "\x00" in value:  # PostgreSQL text cannot hold one: it matches nothing
                errors[name] = [f"The {name} may not contain NUL characters."]
            elif len(value) > MAX_PARAM_LENGTH:
                errors[name] = [f"The {name} may not be longer than {MAX_PARAM_LENGTH} characters."]
            else:
                params[name] = value
        page = ascii_integer(params.get("page", "1"), 1, 10_000_000)
        per_page = ascii_integer(params.get("per_page", "25"), 1, 100)
        if page is None:
            errors["page"] = ["The page must be a positive integer."]
        if per_page is None:
            errors["per_page"] = ["The per_page must be an integer between 1 and 100."]
        outcome = params.get("outcome")
        if outcome is not None and outcome not in AUDIT_OUTCOMES:
            errors["outcome"] = [f"The outcome must be one of {', '.join(AUDIT_OUTCOMES)}."]
        if errors:
            from ..errors import ValidationFailed

            raise ValidationFailed(errors)
        assert page is not None and per_page is not None
        workspace = await context_workspace(req, self.workspaces)
        await self.gw.audit.flush()  # this process's pending records first
        rows, total = await repo.page_audit(
            self.gw.db,
            workspace.id,
            server=params.get("server"),
            tool=params.get("tool"),
            outcome=outcome,
            limit=per_page,
            offset=(page - 1) * per_page,
        )
        resp.media = {
            "data": [present_audit(r) for r in rows],
            "meta": {"current_page": page, "per_page": per_page, "total": total},
        }


def present_audit(stored: repo.StoredAudit) -> dict[str, Any]:
    import orjson

    from ..clock import iso

    r = stored.row
    return {
        "id": stored.id,
        "server": r.server,
        "tool": r.tool,
        "kind": r.kind,
        "transport": r.transport,
        "outcome": r.outcome,
        "duration_ms": round(r.duration_ms, 3),
        "error": r.error,
        "arguments": orjson.loads(r.arguments) if r.arguments else None,
        "api_key_id": r.key_id,
        "user_id": r.user_id,
        "request_id": r.request_id,
        "created_at": iso(r.created_at),
    }
