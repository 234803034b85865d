"""seo.report.created reaches a webhook endpoint subscribed to ``seo.*``: a real loopback
receiver and the delivery worker `core-api worker` runs; a refused report sends nothing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from seo_support import REPORT, report_body, submit

from conftest import Api, make_settings
from core_api.config import Settings
from core_api.runtime import Runtime
from core_api.webhooks.delivery import Dispatcher
from core_api.webhooks.secrets import SecretBox


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url,
        tmp_path,
        webhook_allow_private_networks=True,
        webhook_require_https=False,
        webhook_timeout_seconds=5,
    )


@pytest.fixture
async def received() -> AsyncIterator[tuple[str, list[dict[str, Any]], asyncio.Event]]:
    """A receiver on 127.0.0.1: its URL, the JSON bodies it got, set on each arrival."""
    bodies: list[dict[str, Any]] = []
    arrived = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        bodies.append(orjson.loads(await request.read()))
        arrived.set()
        return web.json_response({"received": True})

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert site._server is not None
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/hook", bodies, arrived
    await runner.cleanup()


@pytest.fixture
async def worker(runtime: Runtime) -> AsyncIterator[None]:
    dispatcher = Dispatcher(
        runtime.db,
        runtime.clock,
        runtime.settings,
        runtime.events,
        SecretBox(runtime.settings.secret_key),
    )
    task = asyncio.create_task(dispatcher.run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_report_event_is_delivered(
    api: Api,
    received: tuple[str, list[dict[str, Any]], asyncio.Event],
    worker: None,
    boot: dict[str, Any],
) -> None:
    url, bodies, arrived = received
    made = await api.post("/api/v1/webhooks", json={"url": url, "events": ["seo.*"]})
    assert made.status == 201, made.json
    assert (await api.post(REPORT, json={"url": "nope"})).status == 422
    report = await submit(api, report_body())
    await asyncio.wait_for(arrived.wait(), timeout=10)
    assert len(bodies) == 1, bodies
    event = bodies[0]
    assert event["type"] == "seo.report.created"
    assert event["workspace_id"] == boot["workspace"]["id"]
    assert event["data"] == {"report": {k: v for k, v in report.items() if k != "issues"}}
    await asyncio.sleep(0.2)
    assert len(bodies) == 1  # the refused report published nothing
