"""API keys: create, list, get, rotate, revoke. Routes under /api/v1/api-keys."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..web.routing import ID
from .jobs import JOBS

if TYPE_CHECKING:
    from ..config import Settings
    from ..runtime import Runtime

__all__ = ["JOBS", "register"]


def register(app: Any, runtime: Runtime, settings: Settings) -> None:
    from .resources import (  # here: importing a repo must not pull in HTTP
        ApiKeyCollection,
        ApiKeyItem,
        ApiKeyRotation,
    )

    workspaces, keys = runtime.workspaces, runtime.keys
    app.add_route("/api/v1/api-keys", ApiKeyCollection(settings, workspaces, keys))
    app.add_route(f"/api/v1/api-keys/{ID}", ApiKeyItem(workspaces, keys))
    app.add_route(f"/api/v1/api-keys/{ID}/rotate", ApiKeyRotation(settings, workspaces, keys))
