"""``core-api worker``: background work that no request waits for.

Today: purging expired idempotency records. Webhook delivery, pixel and usage flushes join
here as they land. ``core-api serve`` runs the same loops inside each API process for a
single node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from .config import Settings
from .runtime import Runtime

log = logging.getLogger("core_api.worker")
PURGE_INTERVAL_SECONDS = 60.0


async def purge_expired(runtime: Runtime) -> int:
    now = runtime.clock.now_ms()
    return await runtime.db.execute("DELETE FROM idempotency_records WHERE expires_at < ?", (now,))


async def run_worker(settings: Settings) -> None:
    runtime = await Runtime.open(settings, run_migrations=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker started")
    try:
        while not stop.is_set():
            try:
                purged = await purge_expired(runtime)
                if purged:
                    log.info("purged %d expired idempotency records", purged)
            except Exception:
                log.exception("idempotency purge failed; will retry")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PURGE_INTERVAL_SECONDS)
    finally:
        await runtime.close()
        log.info("worker stopped")
