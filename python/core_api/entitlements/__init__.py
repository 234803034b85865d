"""Entitlements and usage metering: /api/v1/entitlements/check, /usage, /summary.

Other features use ``runtime.entitlements``: ``enforce_count(tx, feature, workspace_id)``
inside a creating transaction, and ``meter.record_api_call(workspace_id)`` /
``meter.add(workspace_id, feature, n)`` for counts flushed in the background."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .jobs import JOBS
from .service import EntitlementService

if TYPE_CHECKING:
    from ..config import Settings
    from ..runtime import Runtime
    from ..web.front import Front

__all__ = ["JOBS", "EntitlementService", "register"]


def register(app: Any, runtime: Runtime, settings: Settings) -> None:
    from .resources import Check, Summary, Usage

    service, workspaces = runtime.entitlements, runtime.workspaces
    service.watch(runtime.invalidator)  # overrides changed by `core-api entitlements`
    app.add_route("/api/v1/entitlements/check", Check(service, workspaces))
    app.add_route("/api/v1/entitlements/usage", Usage(settings, service, workspaces))
    app.add_route("/api/v1/entitlements/summary", Summary(service, workspaces))


def fast_paths(front: Front, runtime: Runtime, settings: Settings) -> None:
    """``GET /api/v1/entitlements/check`` in front of Falcon (fastpath.py)."""
    from .fastpath import install

    install(front, runtime, settings)
