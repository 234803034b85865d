"""Request-pipeline background work."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..jobs import Job, Kind
from . import idempotency_repo

if TYPE_CHECKING:
    from ..runtime import Runtime

PURGE_INTERVAL_SECONDS = 60.0


async def purge_idempotency_records(runtime: Runtime) -> str | None:
    """Expired idempotency records; cluster-wide, so one worker does it per interval."""
    purged = await idempotency_repo.purge_expired(runtime.db, runtime.clock.now_ms())
    return f"purged {purged} expired idempotency record(s)" if purged else None


JOBS = (Job("idempotency.purge", PURGE_INTERVAL_SECONDS, purge_idempotency_records, Kind.CLUSTER),)
