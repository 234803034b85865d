"""The built-in ``core`` server: this service's own operations as MCP tools.

A tool is one in-process request to the documented REST endpoint, made with the caller's
own bearer key and workspace: authentication, scopes, tenancy, rate limits and usage are
exactly those of the endpoint, with no second copy of its rules. (So a core tool call
also counts as one API request under the key.) A tool whose endpoint is not served by
this build (SEO, for instance) is left out of the catalogue.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import mcp_types as types
import orjson

from ..errors import ApiError
from .backends import Caller, Catalogue, ToolResult, structured
from .registry import ServerSpec

_PAGE = {
    "page": {"type": "integer", "minimum": 1, "description": "Page number (default 1)"},
    "per_page": {"type": "integer", "minimum": 1, "maximum": 100, "description": "Page size"},
}
_DATE = {"type": "string", "description": "An ISO 8601 time"}


@dataclass(frozen=True, slots=True)
class CoreTool:
    name: str
    description: str
    properties: Mapping[str, Any]
    required: tuple[str, ...]
    path: Callable[[Mapping[str, Any], int], str]  # (arguments, workspace) -> path
    query: tuple[str, ...]  # arguments sent as query parameters
    probe: str  # a path the endpoint is routed at, to tell whether it is served

    def schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": dict(self.properties),
            "required": list(self.required),
            "additionalProperties": False,
        }


TOOLS = (
    CoreTool(
        "list_workspaces",
        "List the workspaces the key's user is a member of (scope workspaces:read)",
        {**_PAGE, "sort": {"type": "string"}},
        (),
        lambda a, w: "/api/v1/workspaces",
        ("page", "per_page", "sort"),
        "/api/v1/workspaces",
    ),
    CoreTool(
        "check_entitlement",
        "Check whether the workspace may use a feature, and how much is left "
        "(scope entitlements:read)",
        {
            "feature": {"type": "string", "minLength": 1, "maxLength": 64},
            "quantity": {"type": "integer", "minimum": 1},
        },
        ("feature",),
        lambda a, w: "/api/v1/entitlements/check",
        ("feature", "quantity"),
        "/api/v1/entitlements/check",
    ),
    CoreTool(
        "list_webhook_deliveries",
        "List a webhook endpoint's deliveries, newest first (scope webhooks:read)",
        {
            "endpoint_id": {"type": "integer", "minimum": 1},
            "status": {"type": "string"},
            **_PAGE,
        },
        ("endpoint_id",),
        lambda a, w: f"/api/v1/webhooks/{int(a['endpoint_id'])}/deliveries",
        ("status", "page", "per_page"),
        "/api/v1/webhooks/1/deliveries",
    ),
    CoreTool(
        "query_seo_issues",
        "Query the SEO issues of the workspace (scope seo:read)",
        {
            "severity": {"type": "string", "enum": ["error", "warning", "info", "notice"]},
            "issue_type": {"type": "string"},
            "url": {"type": "string"},
            "created_after": _DATE,
            "created_before": _DATE,
            "sort": {"type": "string"},
            **_PAGE,
        },
        (),
        lambda a, w: f"/api/v1/seo/issues/{w}",
        (
            "severity",
            "issue_type",
            "url",
            "created_after",
            "created_before",
            "sort",
            "page",
            "per_page",
        ),
        "/api/v1/seo/issues/1",
    ),
    CoreTool(
        "pixel_stats",
        "Pixel analytics for a site: visitors, pageviews, top pages and sources (scope pixel:read)",
        {
            "site_id": {"type": "integer", "minimum": 1},
            "from": {"type": "string", "description": "First local date, YYYY-MM-DD"},
            "to": {"type": "string", "description": "Last local date, YYYY-MM-DD"},
            "interval": {"type": "string", "enum": ["hour", "day"]},
            "limit": {"type": "integer", "minimum": 1, "maximum": 100},
        },
        ("site_id",),
        lambda a, w: "/api/v1/pixel/stats",
        ("site_id", "from", "to", "interval", "limit"),
        "/api/v1/pixel/stats",
    ),
)


class EndpointError(ApiError):
    """The endpoint behind a core tool refused the call: its own status and body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(str(body.get("message", "")))
        self.status, self.code = status, str(body.get("error", "error"))
        self._body = body

    def body(self) -> dict[str, Any]:
        return dict(self._body)


class CoreServer:
    available = True

    def __init__(self, spec: ServerSpec, app: Any) -> None:
        self.spec, self.app = spec, app
        self._tools: dict[str, CoreTool] | None = None
        self._catalogue: Catalogue | None = None

    def served(self) -> dict[str, CoreTool]:
        if self._tools is None:  # routes are all added by now (first use is a request)
            router = self.app._router
            self._tools = {t.name: t for t in TOOLS if router.find(t.probe) is not None}
        return self._tools

    async def catalogue(self) -> Catalogue:
        return self.cached()

    def cached(self) -> Catalogue:
        if self._catalogue is None:
            tools = [
                types.Tool(name=t.name, description=t.description, input_schema=t.schema())
                for t in self.served().values()
            ]
            self._catalogue = Catalogue(tools=tools)
        return self._catalogue

    async def call(
        self, tool: str, arguments: Mapping[str, Any], caller: Caller, seconds: float
    ) -> ToolResult:
        spec = self.served()[tool]
        query = {
            k: str(arguments[k]).lower() if isinstance(arguments[k], bool) else str(arguments[k])
            for k in spec.query
            if k in arguments
        }
        status, body = await self.request(spec.path(arguments, caller.workspace_id), query, caller)
        if status >= 400:
            raise EndpointError(status, body if isinstance(body, dict) else {"error": "error"})
        return structured(body)

    async def request(self, path: str, query: Mapping[str, str], caller: Caller) -> tuple[int, Any]:
        """One GET through the whole app (gateway middleware included), in process."""
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": quote(path),
            "raw_path": quote(path).encode(),
            "query_string": urlencode(query).encode(),
            "root_path": "",
            "headers": [
                (b"authorization", b"Bearer " + caller.token.encode()),
                (b"x-workspace-id", str(caller.workspace_id).encode()),
                (b"host", b"core-api.internal"),
            ],
            "client": ("127.0.0.1", 0),
            "server": ("core-api.internal", 80),
        }
        chunks: list[bytes] = []
        status = 500

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        raw = b"".join(chunks)
        return status, orjson.loads(raw) if raw else None

    async def read(self, uri: str, caller: Caller, seconds: float) -> types.ReadResourceResult:
        from ..errors import NotFound

        raise NotFound()

    async def close(self) -> None:
        return None
