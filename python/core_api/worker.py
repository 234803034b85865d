"""Background work that no request waits for.

Today: purging expired idempotency records. Webhook delivery, pixel and usage flushes join
here as they land. ``core-api worker`` runs these jobs on their own; ``core-api serve``
also runs them inside each API process unless ``CORE_API_EMBEDDED_WORKER=false`` (set
that on API nodes when dedicated workers run).
"""

from __future__ import annotations

import asyncio
import logging
import signal

from .config import Settings
from .runtime import Runtime

log = logging.getLogger("core_api.worker")
PURGE_INTERVAL_SECONDS = 60.0


async def purge_expired(runtime: Runtime) -> int:
    now = runtime.clock.now_ms()
    return await runtime.db.execute("DELETE FROM idempotency_records WHERE expires_at < ?", (now,))


async def run_jobs(runtime: Runtime) -> None:
    """Run every job on its interval until cancelled; a failing job is logged and retried."""
    while True:
        try:
            purged = await purge_expired(runtime)
            if purged:
                log.info("purged %d expired idempotency records", purged)
        except Exception:
            log.exception("idempotency purge failed; will retry")
        await asyncio.sleep(PURGE_INTERVAL_SECONDS)


async def run_worker(settings: Settings) -> None:
    runtime = await Runtime.open(settings, run_migrations=False)
    jobs = asyncio.create_task(run_jobs(runtime))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, jobs.cancel)
    log.info("worker started")
    try:
        await jobs
    except asyncio.CancelledError:
        pass
    finally:
        await runtime.close()
        log.info("worker stopped")
