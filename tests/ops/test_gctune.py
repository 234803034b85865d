"""A served process tunes its garbage collector once start-up is done (core_api/gctune.py):
full collections of a warm process paused its event loop for 56-91 ms under load."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import falcon.testing
import pytest

from core_api import gctune
from core_api.app import create_app
from core_api.config import Settings
from core_api.runtime import Runtime


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


async def test_the_served_app_freezes_its_start_up_heap_and_collects_rarely(
    settings: Settings, restored_gc: None
) -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    migrated = await Runtime.open(settings, run_migrations=True)  # as `core-api serve` does
    await migrated.close()
    runtime = Runtime.build(settings)  # as core_api.asgi builds it for Granian
    app = create_app(settings, runtime, manage_lifespan=True)
    async with falcon.testing.ASGIConductor(app) as conductor:  # runs the lifespan start-up
        assert gc.get_threshold() == gctune.THRESHOLDS
        assert gc.get_freeze_count() > 10_000  # the modules, plans and routes loaded so far
        frozen = gc.get_freeze_count()
        assert (await conductor.simulate_get("/healthz")).status_code == 200
        assert gc.get_freeze_count() <= frozen  # once, at start-up (frozen objects may be freed)


async def test_the_worker_tunes_its_collector_too(settings: Settings, restored_gc: None) -> None:
    """``core-api worker`` delivers webhooks for hours: the same start-up freeze."""
    import asyncio

    from core_api.worker import run_worker

    migrated = await Runtime.open(settings, run_migrations=True)
    await migrated.close()
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(settings, stop))
    for _ in range(1000):  # up to 10 s for the runtime to open
        if gc.get_threshold() == gctune.THRESHOLDS:
            break
        await asyncio.sleep(0.01)
    assert gc.get_threshold() == gctune.THRESHOLDS
    assert gc.get_freeze_count() > 10_000
    stop.set()
    async with asyncio.timeout(10):
        await task
