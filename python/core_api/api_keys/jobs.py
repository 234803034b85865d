"""API-key background work."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..jobs import Job, Kind

if TYPE_CHECKING:
    from ..runtime import Runtime

LAST_USED_FLUSH_SECONDS = 5.0


async def flush_last_used(runtime: Runtime) -> str | None:
    """The key cache's last-used times, one transaction per flush (no write per request);
    per-process, because only this process's cache holds them."""
    flushed = await runtime.auth.flush_last_used()
    return f"{flushed} last_used_at update(s)" if flushed else None


JOBS = (
    Job("api_keys.flush_last_used", LAST_USED_FLUSH_SECONDS, flush_last_used, Kind.PER_PROCESS),
)
