"""The MCP gateway: a registry of MCP servers (built in and upstream), REST endpoints
under /api/v1/mcp, and /api/v1/mcp itself as a Streamable HTTP MCP server (docs/mcp.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..jobs import Job, Kind
from .audit import AuditLog
from .registry import load_registry
from .service import McpGateway

if TYPE_CHECKING:
    from ..config import Settings
    from ..runtime import Runtime

__all__ = ["JOBS", "McpGateway", "register"]

AUDIT_RETENTION_DAYS = 30
DAY_MS = 86_400_000


async def _purge_audit(runtime: Runtime) -> int:
    from . import repo

    before = runtime.clock.now_ms() - AUDIT_RETENTION_DAYS * DAY_MS
    return await repo.purge_audit(runtime.db, before, 10_000)


JOBS: tuple[Job, ...] = (Job("mcp.audit_purge", 3600.0, _purge_audit, Kind.CLUSTER),)


class _Lifespan:
    """Starts upstream sessions on the ASGI lifespan start-up; closes the gateway on
    shutdown, before the runtime (middleware shut down in reverse order): upstream
    sessions end, pending audit rows are written."""

    def __init__(self, gw: McpGateway, *closers: Any) -> None:
        self.gw, self.closers = gw, closers

    async def process_startup(self, scope: Any, event: Any) -> None:
        self.gw.warm_up()

    async def process_shutdown(self, scope: Any, event: Any) -> None:
        for closer in self.closers:
            await closer.close()


def register(app: Any, runtime: Runtime, settings: Settings) -> McpGateway:
    from .endpoint import McpEndpoint
    from .resources import (
        AuditCollection,
        Resource,
        ServerCollection,
        ServerItem,
        ServerTools,
        ToolCall,
    )

    registry = load_registry(settings.mcp_config)
    meter = runtime.entitlements.meter if settings.entitlements_metering else None
    audit = AuditLog(runtime.db, runtime.clock, runtime.events)
    gw = McpGateway(
        registry, runtime.db, runtime.clock, runtime.limiter, meter, audit,
        runtime.invalidator, app, runtime.entitlements,
    )  # fmt: skip
    args = (settings, runtime.workspaces, gw)
    endpoint = McpEndpoint(*args)
    app.add_route("/api/v1/mcp", endpoint)
    app.add_route("/api/v1/mcp/servers", ServerCollection(*args))
    app.add_route("/api/v1/mcp/servers/{server_id}", ServerItem(*args))
    app.add_route("/api/v1/mcp/servers/{server_id}/tools", ServerTools(*args))
    app.add_route("/api/v1/mcp/tools/call", ToolCall(*args))
    app.add_route("/api/v1/mcp/resources/{uri:path}", Resource(*args))
    app.add_route("/api/v1/mcp/audit", AuditCollection(*args))
    app.add_middleware(_Lifespan(gw, endpoint, gw))
    return gw
