"""What one process reports (its registry plus its gauges), and where the snapshots live."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .registry import REGISTRY
from .store import SnapshotStore

if TYPE_CHECKING:
    from ..runtime import Runtime

_STORES: dict[str, SnapshotStore] = {}


def directory_of(runtime: Runtime) -> str | None:
    """``CORE_API_METRICS_DIR``, else beside the shared-memory file (a private directory),
    one per port: the processes of one server share it, two servers never do."""
    settings = runtime.settings
    if settings.metrics_dir:
        return settings.metrics_dir
    if not runtime.shm_path:
        return None  # not started: nothing to share yet
    return f"{runtime.shm_path}.metrics-{settings.port}"


def store_for(runtime: Runtime) -> SnapshotStore | None:
    directory = directory_of(runtime)
    if directory is None:
        return None
    store = _STORES.get(directory)
    if store is None:
        store = _STORES[directory] = SnapshotStore(directory)
    return store


def process_snapshot(runtime: Runtime) -> dict[str, Any]:
    """This process's counters, histograms and gauges, now."""
    snapshot = REGISTRY.snapshot()
    queue = runtime.pixel_ingest.queue
    buffer = queue.buffer
    snapshot["counters"] += [
        ["core_api_pixel_events_written_total", [], queue.written],
        ["core_api_pixel_events_refused_total", [], queue.refused],
    ]
    pending = runtime.entitlements.meter.pending()
    lag = max(0.0, time.time() - REGISTRY.usage_flushed_at) if pending else 0.0
    snapshot["gauges"] = [
        ["core_api_pixel_buffer_events", [["state", "pending"]], buffer.pending],
        ["core_api_pixel_buffer_events", [["state", "in_flight"]], buffer.in_flight],
        ["core_api_pixel_buffer_capacity", [], buffer.capacity],
        ["core_api_usage_pending_units", [], pending],
        ["core_api_usage_flush_lag_seconds", [], round(lag, 3)],
    ]
    return snapshot
