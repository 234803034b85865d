"""The feature packages, in route-registration order. Adding a feature is one line here:
its package exposes ``register(app, runtime, settings)`` (routes) and ``JOBS`` (background work),
and may expose ``fast_paths(front, runtime, settings)`` (routes answered in front of Falcon)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import (
    api_keys,
    entitlements,
    events,
    gateway,
    health,
    mcp,
    metrics,
    openapi,
    pixel,
    seo,
    webhooks,
    workspaces,
)
from .jobs import Job
from .web.front import Front

if TYPE_CHECKING:
    from .config import Settings
    from .runtime import Runtime

FEATURES = (
    health,
    pixel,
    workspaces,
    api_keys,
    events,
    webhooks,
    entitlements,
    seo,
    mcp,
    openapi,
    metrics,  # last: its final snapshot on a graceful stop follows every other flush
)


def all_jobs() -> tuple[Job, ...]:
    return gateway.JOBS + tuple(job for feature in FEATURES for job in feature.JOBS)


def front(app: Any, runtime: Runtime, settings: Settings) -> Front:
    """The ASGI app to serve: the Falcon ``app`` behind every feature's fast paths."""
    served = Front(app)
    for feature in FEATURES:
        install = getattr(feature, "fast_paths", None)
        if install is not None:
            install(served, runtime, settings)
    return served
