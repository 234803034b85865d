"""Webhook background work: the delivery worker (long-running, every worker process) and
the retention purge (cluster: one worker per interval)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..jobs import Job, Kind
from . import repo

if TYPE_CHECKING:
    from ..runtime import Runtime

PURGE_SECONDS = 300.0
_PURGE_BATCH = 1000
_PURGE_MAX_BATCHES = 100  # per run: a huge backlog is worked off over several runs


async def deliver(runtime: Runtime) -> None:
    from .delivery import Dispatcher  # here: the worker's HTTP client only where it runs

    await Dispatcher.for_runtime(runtime).run()


async def purge(runtime: Runtime) -> str | None:
    """Events older than the retention go, with their deliveries and attempts; then the
    endpoints of deleted workspaces once nothing is queued for them."""
    before = runtime.clock.now_ms() - runtime.settings.webhook_retention_days * 86_400_000
    events = 0
    for _ in range(_PURGE_MAX_BATCHES):
        deleted = await repo.purge_events(runtime.db, before, _PURGE_BATCH)
        events += deleted
        if deleted < _PURGE_BATCH:
            break
    endpoints = await repo.purge_orphan_endpoints(runtime.db)
    if events or endpoints:
        return f"purged {events} event(s) with their deliveries, {endpoints} orphaned endpoint(s)"
    return None


JOBS = (
    Job("webhooks.deliver", 1.0, deliver, Kind.WORKER),
    Job("webhooks.purge", PURGE_SECONDS, purge, Kind.CLUSTER),
)
