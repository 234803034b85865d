"""Background work, declared per feature as a tuple of :class:`Job` in its ``jobs.py``.

Two kinds:

- **per-process** jobs flush state only the process holding it can flush (the key
  cache's ``last_used_at`` today; pixel buffers and usage counters later). They run in
  every serving process, and once more when the process shuts down, so nothing is lost.
- **cluster** jobs do work that exactly one worker should do (purges today, webhook
  deliveries later). A run takes the job's lease first (:mod:`core_api.storage.leases`),
  so several workers on several nodes never run the same job in the same interval. They
  run in ``core-api worker``, and inside ``core-api serve`` unless
  ``CORE_API_EMBEDDED_WORKER=false``.

A failing run is logged and retried on the next interval; a database outage is one
warning line, not a traceback every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .storage import DatabaseUnavailable, leases

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("core_api.jobs")


class Kind(enum.Enum):
    PER_PROCESS = "per-process"
    CLUSTER = "cluster"
    # Long-running work every worker process runs at once (webhook delivery), coordinated
    # per item by row leases rather than by a job lease; restarted after ``interval`` if
    # it ever returns or fails. Runs where cluster jobs run.
    WORKER = "worker"


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    interval: float  # seconds between runs
    run: Callable[[Runtime], Awaitable[object]]
    kind: Kind


def holder_id() -> str:
    """Who holds a lease, for operators reading ``job_leases``: host, pid, and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class JobRunner:
    """Runs one kind of job for a runtime, each on its own interval, until stopped."""

    def __init__(self, runtime: Runtime, jobs: Iterable[Job], kind: Kind) -> None:
        self.runtime, self.kind = runtime, kind
        self.jobs = tuple(job for job in jobs if job.kind is kind)
        self.holder = holder_id()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._loop(job), name=job.name) for job in self.jobs]

    async def stop(self) -> None:
        """Cancel the loops; per-process jobs then run once more (flush on shutdown)."""
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks = []
        if self.kind is Kind.PER_PROCESS:
            for job in self.jobs:
                await self.run_once(job)
        elif self.kind is Kind.CLUSTER and self.jobs:
            with contextlib.suppress(DatabaseUnavailable):
                await leases.release(self.runtime.db, [j.name for j in self.jobs], self.holder)

    async def _loop(self, job: Job) -> None:
        while True:  # first run at start: a worker that just came up catches up at once
            if self.kind is not Kind.CLUSTER or await self._claim(job):
                await self.run_once(job)
            await asyncio.sleep(job.interval)

    async def _claim(self, job: Job) -> bool:
        lease_ms = int(job.interval * 1000)
        now_ms = int(time.time() * 1000)  # leases coordinate real processes: wall time
        try:
            return await leases.claim(self.runtime.db, job.name, self.holder, now_ms, lease_ms)
        except DatabaseUnavailable as exc:
            log.warning("job %s: cannot take its lease: %s", job.name, exc)
            return False

    async def run_once(self, job: Job) -> None:
        try:
            result = await job.run(self.runtime)
        except DatabaseUnavailable as exc:
            log.warning("job %s: database unavailable, will retry: %s", job.name, exc)
        except Exception:
            log.exception("job %s failed; will retry", job.name)
        else:
            if result:
                log.info("job %s: %s", job.name, result)
