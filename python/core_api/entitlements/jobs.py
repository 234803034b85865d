"""Entitlements background work: the metering flush (per process) and the ledger purge."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..jobs import Job, Kind
from ..metrics.registry import usage_flush_failed, usage_flushed
from .meter import FLUSH_SECONDS

if TYPE_CHECKING:
    from ..runtime import Runtime

PURGE_INTERVAL_SECONDS = 300.0


async def flush_usage(runtime: Runtime) -> str | None:
    """This process's in-memory counts (api_calls, ...): per-process, because only this
    process holds them; run once more when the process stops, so a graceful stop loses
    nothing."""
    started = time.perf_counter()
    try:
        flushed = await runtime.entitlements.flush()
    except BaseException:
        usage_flush_failed()  # metrics: the lag keeps growing until one succeeds
        raise
    usage_flushed(time.perf_counter() - started, flushed)
    return f"{flushed} metered unit(s) flushed" if flushed else None


async def purge_ledger(runtime: Runtime) -> str | None:
    """Usage ledger rows past their period (event_id deduplication no longer needs them)."""
    purged = await runtime.entitlements.purge()
    return f"purged {purged} usage ledger row(s)" if purged else None


JOBS = (
    Job("entitlements.flush", FLUSH_SECONDS, flush_usage, Kind.PER_PROCESS),
    Job("entitlements.purge", PURGE_INTERVAL_SECONDS, purge_ledger, Kind.CLUSTER),
)
