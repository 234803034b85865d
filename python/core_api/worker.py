"""``core-api worker``: a node that runs the cluster jobs and serves nothing.

Every feature declares its jobs (``<feature>/jobs.py``); see :mod:`core_api.jobs`.
``core-api serve`` runs the same cluster jobs inside each API process unless
``CORE_API_EMBEDDED_WORKER=false`` (set that on API nodes when dedicated workers run);
leases keep one run per job and interval across every process and node.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from . import gctune
from .config import Settings
from .features import all_jobs
from .jobs import JobRunner, Kind
from .runtime import Runtime

log = logging.getLogger("core_api.worker")


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run the cluster and worker jobs until SIGINT or SIGTERM (or until ``stop`` is set,
    when given: tests)."""
    runtime = await Runtime.open(settings, run_migrations=False)
    runner = JobRunner(runtime, all_jobs(), Kind.CLUSTER)
    workers = JobRunner(runtime, all_jobs(), Kind.WORKER)  # webhook delivery
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    gctune.tune()  # as in a serving process: a full collection pauses every delivery
    runner.start()
    workers.start()
    names = [job.name for job in (*runner.jobs, *workers.jobs)]
    log.info("worker started: %s", ", ".join(names))
    try:
        await stop.wait()
    finally:
        await workers.stop()
        await runner.stop()
        await runtime.close()
        log.info("worker stopped")
