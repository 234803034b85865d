"""Prometheus metrics: ``GET /metrics`` (text format), correct with several worker
processes. Each process counts in memory (``registry.py``), writes a snapshot file every
second (the per-process job below, and once more on a graceful stop), and the process
that answers a scrape merges every live process's snapshot (``store.py``) with the
gauges read at scrape time. See docs/operations.md for every series."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..jobs import Job, Kind

if TYPE_CHECKING:
    from ..config import Settings
    from ..runtime import Runtime

SNAPSHOT_SECONDS = 1.0


async def write_snapshot(runtime: Runtime) -> None:
    from .collect import process_snapshot, store_for

    store = store_for(runtime)
    if store is not None:
        store.write(process_snapshot(runtime))


JOBS: tuple[Job, ...] = (
    Job("metrics.snapshot", SNAPSHOT_SECONDS, write_snapshot, Kind.PER_PROCESS),
)


def register(app: Any, runtime: Runtime, settings: Settings) -> None:
    if not settings.metrics_enabled:
        return
    from .resources import Metrics

    app.add_route("/metrics", Metrics(runtime))
