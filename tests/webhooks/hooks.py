"""Helpers for the webhook API and delivery tests, imported by the test modules: settings
that let deliveries reach loopback receivers over plain HTTP (fixture ``settings``), real
aiohttp receivers on 127.0.0.1 (``receiver``), a running delivery worker (``worker``,
the same Dispatcher `core-api worker` runs) and API shorthands (``endpoint``, ``emit``,
``deliveries``, ``statuses``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from conftest import Api, make_settings
from core_api.config import Settings
from core_api.runtime import Runtime
from core_api.webhooks.delivery import Dispatcher
from core_api.webhooks.secrets import SecretBox

HOOKS = "/api/v1/webhooks"


async def endpoint(api: Api, url: str, events: list[str] | None = None, **body: Any) -> Any:
    got = await api.post(HOOKS, json={"url": url, "events": events or ["*"], **body})
    assert got.status == 201, got.json
    return got.json["data"]


async def emit(api: Api, event_type: str = "post.created", **data: Any) -> str:
    got = await api.post("/api/v1/events", json={"type": event_type, "data": data})
    assert got.status == 202, got.json
    return str(got.json["data"]["id"])


async def deliveries(api: Api, hook_id: int, **params: str) -> list[dict[str, Any]]:
    got = await api.get(f"{HOOKS}/{hook_id}/deliveries", params={"per_page": "100", **params})
    assert got.status == 200, got.json
    return list(got.json["data"])


async def statuses(api: Api, hook_id: int) -> list[str]:
    return [d["status"] for d in await deliveries(api, hook_id)]


def webhook_settings(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "webhook_allow_private_networks": True,
        "webhook_require_https": False,
        "webhook_timeout_seconds": 5,
    }
    return make_settings(database_url, tmp_path, **{**base, **overrides})


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return webhook_settings(database_url, tmp_path)


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    peer_port: int = 0  # the client's port: which process sent it


@dataclass
class Reply:
    status: int = 200
    body: str = '{"received": true}'
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class Receiver:
    """An aiohttp server on 127.0.0.1 recording every request. Each path answers from its
    script of replies in turn (the last one repeats), 200 ``{"received": true}`` by default."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.scripts: dict[str, list[Reply]] = {}
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.active: Counter[str] = Counter()  # requests being answered, per path
        self.peak: Counter[str] = Counter()  # the most at once, per path ("" = all paths)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def script(self, path: str, *replies: Reply) -> str:
        self.scripts[path] = list(replies)
        return self.url(path)

    def on(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        port = int(peer[1]) if peer else 0
        self.hits.append(Hit(request.path, dict(request.headers), body, time.monotonic(), port))
        script = self.scripts.get(request.path) or [Reply()]
        reply = script.pop(0) if len(script) > 1 else script[0]
        self.active[request.path] += 1
        self.active[""] += 1
        for key in (request.path, ""):
            self.peak[key] = max(self.peak[key], self.active[key])
        try:
            if reply.delay:
                await asyncio.sleep(reply.delay)
        finally:
            self.active[request.path] -= 1
            self.active[""] -= 1
        return web.Response(
            status=reply.status,
            text=reply.body,
            headers=reply.headers,
            content_type="application/json",
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    await hook.start()
    yield hook
    await hook.stop()


class Worker:
    """A Dispatcher running in this event loop, as `core-api worker` runs it."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.dispatcher: Dispatcher | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self, **overrides: Any) -> Dispatcher:
        settings = self.runtime.settings
        if overrides:
            from dataclasses import replace

            settings = replace(settings, **overrides)
        self.dispatcher = Dispatcher(
            self.runtime.db,
            self.runtime.clock,
            settings,
            self.runtime.events,
            SecretBox(settings.secret_key),
        )
        self.task = asyncio.create_task(self.dispatcher.run())
        return self.dispatcher

    async def stop(self) -> None:
        if self.task is not None:
            if self.task.done() and not self.task.cancelled():
                self.task.result()  # a worker that died surfaces its error here
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None


@pytest.fixture
async def worker(runtime: Runtime) -> AsyncIterator[Worker]:
    running = Worker(runtime)
    yield running
    await running.stop()


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool], within: float = 10.0
) -> None:
    """Wait until ``check()`` is true (polling every 20 ms), or fail after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.02)
