"""Workspaces: the tenant boundary. Routes under /api/v1/workspaces."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..web.routing import ID

if TYPE_CHECKING:
    from ..config import Settings
    from ..jobs import Job
    from ..runtime import Runtime

JOBS: tuple[Job, ...] = ()


def register(app: Any, runtime: Runtime, settings: Settings) -> None:
    from .resources import (  # here: importing a repo must not pull in HTTP
        WorkspaceCollection,
        WorkspaceItem,
    )

    workspaces = runtime.workspaces
    app.add_route("/api/v1/workspaces", WorkspaceCollection(settings, workspaces))
    app.add_route(f"/api/v1/workspaces/{ID}", WorkspaceItem(settings, workspaces))
