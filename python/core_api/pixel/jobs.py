"""Ingest background work, per process (only this process holds its buffer)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..jobs import Job, Kind
from .ingest import ingest_of

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger("core_api.pixel")

FLUSH = "pixel.flush"
# Seconds between checks; a flush runs when CORE_API_PIXEL_FLUSH_MS (default 500) has
# passed, so with the write itself an event is durable within about a second.
FLUSH_TICK = 0.1
SALTS_INTERVAL = 60.0  # tomorrow's salt exists a day ahead, so a minute is plenty


async def flush(runtime: Runtime) -> None:
    """Write the buffer and the bot counters. The run after the job stopped (the runtime
    is closing; no loop task of its own) is the last: it writes everything, then closes
    the writer, so a graceful stop loses nothing."""
    ingest = ingest_of(runtime)
    task = asyncio.current_task()
    final = task is None or task.get_name() != FLUSH
    try:
        await ingest.flush(due_only=not final)
    finally:
        if final:
            left = ingest.queue.buffer.pending + ingest.queue.buffer.in_flight
            if left:  # the database is unavailable at shutdown: say what is lost
                log.error("pixel: %d buffered event(s) lost at shutdown", left)
            await ingest.close()


async def maintain(runtime: Runtime) -> str | None:
    return await ingest_of(runtime).maintain()


JOBS = (
    Job(FLUSH, FLUSH_TICK, flush, Kind.PER_PROCESS),
    Job("pixel.salts", SALTS_INTERVAL, maintain, Kind.PER_PROCESS),
)
