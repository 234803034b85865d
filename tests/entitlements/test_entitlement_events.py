"""The threshold events go through the webhook fan-out: an endpoint subscribed to
``entitlement.*`` receives both, signed, from the real delivery worker."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from entitlements_support import USAGE, small_tenant

from core_api.clock import ManualClock
from core_api.config import Settings
from core_api.webhooks.delivery import Dispatcher
from core_api.webhooks.secrets import SecretBox


async def test_threshold_events_are_delivered_to_subscribed_endpoints(
    settings: Settings, clock: ManualClock, tmp_path: Path
) -> None:
    received: list[dict[str, Any]] = []
    both = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        assert request.headers["webhook-signature"].startswith("v1,")
        received.append(orjson.loads(await request.read()))
        if len(received) == 2:
            both.set()
        return web.json_response({"received": True})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    settings = replace(settings, webhook_allow_private_networks=True, webhook_require_https=False)
    try:
        async with small_tenant(settings, clock, tmp_path) as (runtime, api, _boot):
            url = f"http://127.0.0.1:{port}/hook"
            created = await api.post(
                "/api/v1/webhooks", json={"url": url, "events": ["entitlement.*"]}
            )
            assert created.status == 201, created.json
            for _ in range(10):  # mcp_calls: 8 of 10 crosses 80 %, 10 reaches the limit
                assert (await api.post(USAGE, json={"feature": "mcp_calls"})).status == 200
            dispatcher = Dispatcher(
                runtime.db, runtime.clock, settings, runtime.events, SecretBox(settings.secret_key)
            )
            task = asyncio.create_task(dispatcher.run())
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(both.wait(), 15)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        await runner.cleanup()
    got = sorted((e["type"], e["data"]["threshold"], e["data"]["used"]) for e in received)
    assert got == [("entitlement.limit_reached", 100, 10), ("entitlement.threshold_reached", 80, 8)]
