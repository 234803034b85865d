"""What every MCP server behind the gateway offers, built in or upstream: a catalogue
(tools with their input schemas, resources), tool calls and resource reads."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import mcp_types as types
import orjson

from ..errors import ApiError
from ..gateway.auth import Principal
from ..workspaces.repo import Workspace
from .registry import ServerSpec


class ServerUnavailable(ApiError):
    """The server could not be started or reached (or is waiting to be restarted)."""

    status = 503
    code = "mcp_server_unavailable"
    message = "The MCP server is unavailable."

    def __init__(self, server_id: str, why: str = "") -> None:
        text = f"The MCP server {server_id} is unavailable" + (f": {why}" if why else ".")
        super().__init__(text, server=server_id, retry_after=5)
        self.headers["Retry-After"] = "5"


class ToolTimeout(ApiError):
    status = 504
    code = "mcp_timeout"
    message = "The MCP tool call did not finish in time."

    def __init__(self, seconds: float) -> None:
        super().__init__(f"The MCP call did not finish within {seconds:g} seconds.")


class ToolRefused(Exception):
    """A built-in tool refuses its (schema-valid) input: path outside the root, file too
    large. REST answers 422 on ``arguments.<field>``; MCP clients get an error result."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the key, the workspace it acts in, and its bearer token (the
    ``core`` server calls this service's own endpoints with it)."""

    principal: Principal
    workspace: Workspace
    token: str

    @property
    def workspace_id(self) -> int:
        return self.workspace.id


@dataclass(slots=True)
class Catalogue:
    tools: list[types.Tool]
    resources: list[types.Resource] = field(default_factory=list)
    templates: list[types.ResourceTemplate] = field(default_factory=list)
    fetched_at: float = field(default_factory=time.monotonic)

    def tool(self, name: str) -> types.Tool | None:
        for tool in self.tools:
            if tool.name == name:
                return tool
        return None


class Backend(Protocol):
    spec: ServerSpec

    @property
    def available(self) -> bool:
        """False while the server is known to be down (failed start, backing off)."""

    async def catalogue(self) -> Catalogue: ...

    def cached(self) -> Catalogue | None:
        """The catalogue if known now, without waiting (None otherwise)."""

    async def call(
        self, tool: str, arguments: Mapping[str, Any], caller: Caller, seconds: float
    ) -> ToolResult: ...

    async def read(self, uri: str, caller: Caller, seconds: float) -> types.ReadResourceResult: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Structured:
    """A built-in tool's JSON result. REST returns ``data`` as it is; the MCP endpoint
    turns it into a CallToolResult (:meth:`to_mcp`), so the REST path never builds
    pydantic models."""

    data: Any
    is_error: bool = False

    @property
    def payload(self) -> dict[str, Any]:
        return self.data if isinstance(self.data, dict) else {"result": self.data}

    def to_mcp(self) -> types.CallToolResult:
        text = orjson.dumps(self.data).decode()
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text)],
            structured_content=self.payload,
            is_error=self.is_error,
        )


ToolResult = types.CallToolResult | Structured


def structured(data: Any, *, error: bool = False) -> Structured:
    return Structured(data, error)
