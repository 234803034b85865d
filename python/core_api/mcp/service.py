"""The MCP gateway's rules, shared by the REST endpoints and ``/api/v1/mcp``.

- **Access**: a server is visible to a caller when the registry lets the caller's
  workspace use it (else 404, as for another tenant's resources) and the key's own
  server list, if it has one, names it (else 403). Scopes: ``mcp:read`` to list and read,
  ``mcp:write`` to call tools.
- **A call**: the arguments are validated against the tool's input schema first (422
  with one message per field), then the optional per-server and per-tool limits of the
  registry are charged (429), then the call runs under the registry's timeout (504).
- **Every call** is audited (who, server, tool, duration, outcome; arguments only if
  configured), counted as ``mcp_calls`` usage, and, when it ran, publishes
  ``mcp.tool.executed`` (audit.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

import mcp_types as types
import orjson
from mcp.shared.exceptions import MCPError

from ..clock import Clock
from ..entitlements.meter import Meter
from ..entitlements.service import EntitlementService
from ..errors import AccessDenied, ApiError, NotFound, ValidationFailed
from ..gateway.invalidation import Invalidator
from ..gateway.ratelimit import Limiter, per_minute_tier
from ..plans import Tier
from ..storage.base import Database
from . import repo
from .audit import AuditLog
from .backends import (
    Backend,
    Caller,
    Catalogue,
    ServerUnavailable,
    Structured,
    ToolRefused,
    ToolResult,
    ToolTimeout,
)
from .core import CoreServer
from .filesystem import FilesystemServer
from .registry import Registry, ServerSpec
from .schema import ArgumentValidator
from .upstream import UpstreamServer

RESOURCE_NOT_FOUND = -32002  # the spec's code for an unknown resource URI
KEY_CACHE_SECONDS = 30.0
MAX_ERROR_TEXT = 500


class ToolError(ApiError):
    """An upstream server answered the call with a JSON-RPC error (unknown tool, bad
    params it checked itself, a crash in its handler)."""

    status = 502
    code = "mcp_tool_error"

    def __init__(self, server: str, error: types.ErrorData) -> None:
        super().__init__(
            f"The MCP server {server} refused the call: {error.message}",
            server=server,
            mcp_error={"code": error.code, "message": error.message},
        )


class Refused(ValidationFailed):
    """A built-in tool refused schema-valid input (a path outside the root, a file too
    large): the same 422, audited as ``refused``."""


MAX_REDACTED_VALUES = 1000  # arguments are bounded by the request body; this bounds the work


class McpGateway:
    def __init__(
        self,
        registry: Registry,
        db: Database,
        clock: Clock,
        limiter: Limiter,
        meter: Meter | None,
        audit: AuditLog,
        invalidator: Invalidator,
        app: Any,
        entitlements: EntitlementService | None = None,
    ) -> None:
        self.registry, self.db, self.clock, self.limiter = registry, db, clock, limiter
        self.meter, self.audit, self.entitlements = meter, audit, entitlements
        self.backends: dict[str, Backend] = {}
        for spec in registry.servers.values():
            self.backends[spec.id] = self._backend(spec, app)
        self._validators: dict[tuple[str, str], tuple[int, ArgumentValidator]] = {}
        self._key_servers: dict[int, tuple[float, frozenset[str] | None]] = {}
        self._tiers: dict[tuple[str, str], Tier] = {}
        invalidator.subscribe("key", self._forget_key)
        invalidator.subscribe_flush(self._key_servers.clear)

    def _backend(self, spec: ServerSpec, app: Any) -> Backend:
        if spec.transport is not None:
            return UpstreamServer(spec, self.registry)
        if spec.id == "filesystem":
            root, limit = self.registry.filesystem_root, self.registry.filesystem_max_bytes
            per_workspace = self.registry.filesystem_per_workspace
            return FilesystemServer(spec, root, limit, per_workspace=per_workspace)
        return CoreServer(spec, app)

    def _forget_key(self, key_id: int) -> None:
        self._key_servers.pop(key_id, None)

    def warm_up(self) -> None:
        """Start every upstream session in the background (at process start-up), so the
        first call does not pay for a process start; failures only mark it unavailable."""
        for backend in self.backends.values():
            if isinstance(backend, UpstreamServer):
                backend.warm_up()

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self.backends.values()), return_exceptions=True)
        await self.audit.close()

    # -- access -------------------------------------------------------------------------

    async def key_servers(self, key_id: int) -> frozenset[str] | None:
        now = time.monotonic()
        hit = self._key_servers.get(key_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = await repo.key_servers(self.db, key_id)
        if len(self._key_servers) > 100_000:
            self._key_servers.clear()
        self._key_servers[key_id] = (now + KEY_CACHE_SECONDS, found)
        return found

    async def visible(self, caller: Caller) -> list[ServerSpec]:
        allowed = await self.key_servers(caller.principal.key_id)
        return [
            spec
            for spec in self.registry.servers.values()
            if spec.allows_workspace(caller.workspace_id)
            and (allowed is None or spec.id in allowed)
        ]

    async def backend(self, caller: Caller, server_id: str, field: str = "server") -> Backend:
        spec = self.registry.servers.get(server_id)
        if spec is None or not spec.allows_workspace(caller.workspace_id):
            raise NotFound(f"No MCP server {server_id!r} is available to this workspace.")
        allowed = await self.key_servers(caller.principal.key_id)
        if allowed is not None and server_id not in allowed:
            raise AccessDenied(message=f"This API key may not use the MCP server {server_id}.")
        return self.backends[server_id]

    # -- catalogue ----------------------------------------------------------------------

    async def describe(self, backend: Backend, *, wait: float | None = None) -> dict[str, Any]:
        spec = backend.spec
        body: dict[str, Any] = {
            "id": spec.id,
            "name": spec.name,
            "description": spec.description,
            "transport": "builtin"
            if spec.transport is None
            else type(spec.transport).__name__.removesuffix("Transport").lower(),
        }
        try:
            if not backend.available:
                raise ServerUnavailable(spec.id)
            catalogue = await asyncio.wait_for(backend.catalogue(), wait)
        except (ApiError, TimeoutError, MCPError, OSError):
            return {**body, "status": "unavailable", "tools": [], "resources": []}
        return {
            **body,
            "status": "available",
            "tools": [t.name for t in catalogue.tools],
            "resources": [r.uri for r in catalogue.resources]
            + [t.uri_template for t in catalogue.templates],
        }

    async def list_servers(self, caller: Caller) -> list[dict[str, Any]]:
        backends = [self.backends[s.id] for s in await self.visible(caller)]
        wait = self.registry.connect_timeout + 1  # a first start is slow; a failed one is not
        return list(await asyncio.gather(*(self.describe(b, wait=wait) for b in backends)))

    async def get_server(self, caller: Caller, server_id: str) -> dict[str, Any]:
        backend = await self.backend(caller, server_id)
        return await self.describe(backend, wait=self.registry.connect_timeout + 1)

    async def catalogue(self, caller: Caller, server_id: str) -> Catalogue:
        backend = await self.backend(caller, server_id)
        return await backend.catalogue()

    # -- calls --------------------------------------------------------------------------

    def validator(self, server: str, tool: types.Tool) -> ArgumentValidator:
        """Compiled once per tool and catalogue (a refreshed catalogue compiles again)."""
        key, marker = (server, tool.name), id(tool.input_schema)
        hit = self._validators.get(key)
        if hit is not None and hit[0] == marker:
            return hit[1]
        validator = ArgumentValidator(tool.input_schema)
        self._validators[key] = (marker, validator)
        return validator

    async def call(
        self,
        caller: Caller,
        server_id: str,
        tool_name: str,
        arguments: Mapping[str, Any],
        *,
        transport: str,
        request_id: str | None,
    ) -> ToolResult:
        started = time.perf_counter()
        outcome, error, counted = "ok", None, False
        try:
            backend = await self.backend(caller, server_id)
            catalogue = await backend.catalogue()
            tool = catalogue.tool(tool_name)
            if tool is None:
                raise ValidationFailed.field(
                    "tool", f"The MCP server {server_id} has no tool named {tool_name!r}."
                )
            problems = self.validator(server_id, tool).errors(arguments)
            if problems:
                raise ValidationFailed(problems)
            await self._charge(caller, backend.spec, tool_name)
            if self.entitlements is not None:  # a hard mcp_calls limit: recorded before
                counted = await self.entitlements.take_one(caller.workspace, "mcp_calls")
            try:
                result = await backend.call(
                    tool_name, arguments, caller, self.registry.call_timeout
                )
            except MCPError as exc:
                raise ToolError(server_id, exc.error) from None
            except ToolRefused as exc:
                raise Refused({f"arguments.{exc.field}": [exc.message]}) from None
            if result.is_error:
                outcome = "error"
                error = _text(result)
            return result
        except BaseException as exc:
            outcome, error = _outcome(exc)
            raise
        finally:
            self._record(
                caller, server_id, tool_name, "tool", transport, outcome, error,
                arguments, request_id, started, counted=counted,
            )  # fmt: skip

    async def read(
        self, caller: Caller, uri: str, *, transport: str, request_id: str | None
    ) -> types.ReadResourceResult:
        server_id, sep, path = uri.partition("://")
        if not sep or not server_id:
            raise ValidationFailed.field("uri", "The URI must look like {server}://{path}.")
        started = time.perf_counter()
        outcome, error = "ok", None
        try:
            backend = await self.backend(caller, server_id, "uri")
            scheme = backend.spec.resource_scheme or server_id
            try:
                return await backend.read(f"{scheme}://{path}", caller, self.registry.call_timeout)
            except MCPError as exc:
                if exc.error.code in (types.INVALID_PARAMS, RESOURCE_NOT_FOUND):
                    raise NotFound(f"No resource {uri}.") from None
                raise ToolError(server_id, exc.error) from None
            except ToolRefused as exc:
                raise Refused({"uri": [exc.message]}) from None
        except BaseException as exc:
            outcome, error = _outcome(exc)
            raise
        finally:
            self._record(
                caller, server_id, path, "resource", transport, outcome, error,
                None, request_id, started,
            )  # fmt: skip

    async def _charge(self, caller: Caller, spec: ServerSpec, tool: str) -> None:
        bucket = caller.principal.bucket
        for scope, limit in (("", spec.rate_limit), (tool, spec.tool_limits.get(tool, 0))):
            if not limit:
                continue
            tier = self._tiers.get((spec.id, scope))
            if tier is None:
                name = f"mcp-{spec.id}" + (f"-{scope}" if scope else "")
                tier = self._tiers[(spec.id, scope)] = per_minute_tier(name, limit)
            key = bucket + f"|mcp:{spec.id}:{scope}".encode()
            decision = self.limiter.check_now(key, tier) or await self.limiter.check(key, tier)
            if not decision.allowed:
                error = decision.error()
                error.headers.update(decision.headers())  # this limit's, not the key tier's
                raise error

    def _record(
        self,
        caller: Caller,
        server: str,
        tool: str,
        kind: str,
        transport: str,
        outcome: str,
        error: str | None,
        arguments: Mapping[str, Any] | None,
        request_id: str | None,
        started: float,
        *,
        counted: bool = False,
    ) -> None:
        """The audit row, and the call counted towards ``mcp_calls`` in memory unless
        ``take_one`` recorded it already (``counted``)."""
        principal = caller.principal
        kept = None
        if self.registry.audit_arguments and arguments is not None:
            kept = arguments_text(arguments)
        elif error and arguments:
            error = without_arguments(error, arguments)
        self.audit.record(
            repo.AuditRow(
                workspace_id=caller.workspace_id,
                key_id=principal.key_id,
                user_id=principal.user_id,
                server=server[:64],
                tool=tool[:256],
                kind=kind,
                transport=transport,
                outcome=outcome,
                duration_ms=(time.perf_counter() - started) * 1000,
                error=error[:MAX_ERROR_TEXT] if error else None,
                arguments=kept,
                request_id=request_id,
                created_at=self.clock.now_ms(),
            )
        )
        if counted or self.meter is None:
            return
        if kind == "tool" and outcome in ("ok", "error", "timeout"):
            self.meter.add(caller.workspace_id, "mcp_calls")


def without_arguments(text: str, arguments: Mapping[str, Any]) -> str:
    """``text`` with every argument value of 3 or more characters replaced: with
    ``audit_arguments`` off, a value a tool echoes in its error ("No such file or
    directory: customer-42.txt") stays out of the audit as well."""
    values: set[str] = set()
    stack: list[Any] = [arguments]
    while stack and len(values) < MAX_REDACTED_VALUES:
        item = stack.pop()
        if isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, str | int | float) and not isinstance(item, bool):
            value = str(item)
            if len(value) >= 3:
                values.add(value)
    for value in sorted(values, key=len, reverse=True):  # longest first: no partial leftovers
        text = text.replace(value, "[argument]")
    return text


def arguments_text(arguments: Mapping[str, Any]) -> str:
    """The arguments as JSON text for the audit log. A ``/api/v1/mcp`` body is the SDK's to
    parse, not checked like a REST body, so it may hold an integer beyond 64 bits: orjson
    refuses those, and the error replaced the call's own answer and lost its audit row."""
    try:
        return orjson.dumps(arguments).decode()
    except TypeError:
        return json.dumps(arguments, default=str)


def _text(result: ToolResult) -> str:
    if isinstance(result, Structured):
        return orjson.dumps(result.data).decode()[:MAX_ERROR_TEXT]
    texts = [b.text for b in result.content if isinstance(b, types.TextContent)]
    return " ".join(texts)[:MAX_ERROR_TEXT]


def _outcome(exc: BaseException) -> tuple[str, str | None]:
    if isinstance(exc, Refused):
        return "refused", orjson.dumps(exc.errors).decode()[:MAX_ERROR_TEXT]
    if isinstance(exc, ValidationFailed):
        return "invalid", orjson.dumps(exc.errors).decode()[:MAX_ERROR_TEXT]
    if isinstance(exc, ToolTimeout):
        return "timeout", exc.detail
    if isinstance(exc, ServerUnavailable):
        return "unavailable", exc.detail
    if isinstance(exc, NotFound | AccessDenied):
        return "denied", exc.detail
    if isinstance(exc, ApiError) and exc.status == 429:
        return "rate_limited", exc.detail
    if isinstance(exc, ApiError):
        return ("refused" if exc.status < 500 else "error"), exc.detail
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled", None
    return "error", type(exc).__name__
