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
from .metrics import JOBS as METRICS_JOBS
from .runtime import Runtime

log = logging.getLogger("core_api.worker")


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run the cluster and worker jobs until SIGINT or SIGTERM (or until ``stop`` is set,
    when given: tests)."""
    runtime = await Runtime.open(settings, run_migrations=False)
    runner = JobRunner(runtime, all_jobs(), Kind.CLUSTER)
    workers = JobRunner(runtime, all_jobs(), Kind.WORKER)  # webhook delivery
    # Its counters (deliveries by outcome) join the /metrics of the server on this host
    # that shares its metrics directory (same CORE_API_PORT, or CORE_API_METRICS_DIR).
    snapshots = JobRunner(
        runtime, METRICS_JOBS if settings.metrics_enabled else (), Kind.PER_PROCESS
    )
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    gctune.tune()  # as in a serving process: a full collection pauses every delivery
    runner.start()
    workers.start()
    snapshots.start()
    names = [job.name for job in (*runner.jobs, *workers.jobs, *snapshots.jobs)]
    log.info("worker started: %s", ", ".join(names))
    try:
        await stop.wait()
    finally:
        await workers.stop()
        await runner.stop()
        await snapshots.stop()  # the last snapshot counts the last outcomes written
        await runtime.close()
        log.info("worker stopped")
