"""Ingest background work, per process (only this process holds its buffer)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..jobs import Job, Kind

if TYPE_CHECKING:
    from ..runtime import Runtime

FLUSH = "pixel.flush"
# Seconds between checks; a flush runs when CORE_API_PIXEL_FLUSH_MS (default 500) has
# passed, so with the write itself an event is durable within about a second.
FLUSH_TICK = 0.1
SALTS_INTERVAL = 60.0  # tomorrow's salt exists a day ahead, so a minute is plenty


async def flush(runtime: Runtime) -> None:
    """Write what is due of the buffer and the bot counters. A graceful stop writes the
    rest: Runtime.close calls PixelIngest.shutdown after the jobs have stopped."""
    await runtime.pixel_ingest.flush(due_only=True)


async def maintain(runtime: Runtime) -> str | None:
    return await runtime.pixel_ingest.maintain()


JOBS = (
    Job(FLUSH, FLUSH_TICK, flush, Kind.PER_PROCESS),
    Job("pixel.salts", SALTS_INTERVAL, maintain, Kind.PER_PROCESS),
)
