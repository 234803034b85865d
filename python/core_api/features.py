"""The feature packages, in route-registration order. Adding a feature is one line here:
its package exposes ``register(app, runtime, settings)`` (routes) and ``JOBS`` (background work)."""

from __future__ import annotations

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
