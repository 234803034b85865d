"""The ASGI fast path of POST /api/v1/pixel/track answers exactly as the Falcon route
does: same bodies, statuses and headers (rate limits, request id, CORS), errors handed to
the Falcon app with the body replayed, nothing charged or stored twice."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import falcon.testing
import orjson
import pytest
from ingest_support import CHROME, TRACK, close_ingest, event, flushed_rows, make_site

from conftest import REDIS_URL, Api, make_settings
from core_api.app import create_app
from core_api.config import Settings
from core_api.pixel.fastpath import wrap
from core_api.runtime import Runtime
from core_api.web.front import Front

pytestmark = pytest.mark.usefixtures("close_ingest")
__all__ = ["close_ingest"]  # the fixture, imported for its use above


@pytest.fixture
def settings(
    database_url: str, tmp_path: Path, limiter_mode: str, request: pytest.FixtureRequest
) -> Settings:
    """Each test runs with the local limiter and with the Redis one."""
    loopback = (ipaddress.ip_network("127.0.0.0/8"),)
    redis: dict[str, Any] = {}
    if limiter_mode == "redis":
        redis = {"redis_url": REDIS_URL, "redis_prefix": request.getfixturevalue("redis_prefix")}
    return make_settings(
        database_url,
        tmp_path,
        trusted_proxies=loopback,
        pixel_buffer_size=5,
        pixel_rate_limit=8,
        **redis,
    )


@pytest.fixture
async def fast(runtime: Runtime, settings: Settings, api: Api) -> AsyncIterator[Api]:
    app = wrap(create_app(settings, runtime), runtime, settings)
    assert isinstance(app, Front)
    async with falcon.testing.ASGIConductor(app) as conductor:  # type: ignore[arg-type]
        yield Api(conductor)


def post(client: Api, body: Any, ip: str, **headers: str) -> Any:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post(
        TRACK,
        body=raw,
        headers={
            "Content-Type": "text/plain;charset=UTF-8",
            "User-Agent": CHROME,
            "X-Forwarded-For": ip,
            **headers,
        },
        auth=False,
    )


SAME = (
    "content-type",
    "cache-control",
    "access-control-allow-origin",
    "vary",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "ratelimit-policy",
    "retry-after",
)


async def test_answers_match_the_falcon_route(api: Api, fast: Api, runtime: Runtime) -> None:
    await make_site(api)
    origin = {"Origin": "https://example.com"}
    cases: list[tuple[Any, dict[str, str]]] = [
        (event(), origin),  # tracked
        (event(), {"DNT": "1"}),  # not tracked (site honours DNT by default)
        (event("https://unknown.test/"), {}),  # 404
        (event(), {"Origin": "https://evil.test"}),  # 403
        (event(extra=1), {}),  # 422 (Falcon, replayed)
        (b"{nope", {}),  # 422 (Falcon, replayed)
        (event(), {"Content-Type": "application/xml"}),  # 415 (Falcon)
        (orjson.dumps(event(properties={"t": "x" * 9000})), {}),  # 413 (Falcon)
    ]
    for i, (body, headers) in enumerate(cases):
        slow = await post(api, body, f"10.0.0.{i}", **headers)
        quick = await post(fast, body, f"10.0.1.{i}", **headers)
        assert quick.status == slow.status, (i, quick.json, slow.json)
        assert quick.json == slow.json, i
        for name in SAME:
            assert quick.header(name) == slow.header(name), (i, name)
        assert (quick.header("x-request-id") or "").startswith("req_")
    rows = await flushed_rows(runtime)
    assert len(rows) == 2  # one tracked event per path


async def test_the_per_ip_limit_counts_each_request_once(api: Api, fast: Api) -> None:
    await make_site(api)
    statuses = []
    for i in range(9):
        body = event(extra=1) if i == 0 else event()  # a 422 goes through Falcon once
        # DNT: answered, not buffered (the buffer holds 5 here)
        statuses.append((await post(fast, body, "10.5.5.5", DNT="1")).status)
    assert statuses == [422] + [200] * 7 + [429]
    refused = await post(fast, event(), "10.5.5.5")
    assert refused.json["error"] == "rate_limit_exceeded"
    assert refused.header("retry-after") and refused.header("x-ratelimit-remaining") == "0"


async def test_back_pressure_and_recovery(api: Api, fast: Api, runtime: Runtime) -> None:
    await make_site(api)
    for i in range(5):
        assert (await post(fast, event(), f"10.6.0.{i}")).status == 200
    full = await post(fast, event(), "10.6.0.9")
    assert full.status == 503 and full.header("retry-after") == "1"
    assert full.json["error"] == "service_unavailable" and full.json["request_id"]
    assert len(await flushed_rows(runtime)) == 5
    assert (await post(fast, event(), "10.6.0.9")).status == 200


async def test_other_requests_pass_through(fast: Api) -> None:
    assert (await fast.get("/health", auth=False)).status == 200
    assert (await fast.get(TRACK, auth=False)).status == 405


async def test_a_body_that_never_arrives_is_a_408(
    runtime: Runtime, settings: Settings, api: Api
) -> None:
    from dataclasses import replace

    quick = replace(settings, body_read_timeout=1)
    app = wrap(create_app(quick, runtime), runtime, quick)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(30)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": "POST", "path": TRACK, "headers": [
            (b"content-type", b"text/plain"), (b"content-length", b"100")
        ], "client": ("127.0.0.1", 1), "query_string": b"", "http_version": "1.1",
    }  # fmt: skip
    async with asyncio.timeout(10):
        await app(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 408
    assert orjson.loads(sent[1]["body"])["error"] == "request_timeout"


async def test_the_answer_does_not_wait_for_the_last_empty_body_message(
    runtime: Runtime, settings: Settings, api: Api
) -> None:
    """Granian sends a body with ``more_body`` and then an empty last message; once the
    declared Content-Length is in, the event is decided without waiting for that one
    (waiting cost a loop round trip per event). A shorter first part is read on."""
    await make_site(api)
    app = wrap(create_app(settings, runtime), runtime, settings)
    body = orjson.dumps(event())

    async def answer(parts: list[bytes]) -> list[dict[str, Any]]:
        pending = [{"type": "http.request", "body": p, "more_body": True} for p in parts]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            if pending:
                return pending.pop(0)
            await asyncio.sleep(30)  # the last empty message, held back
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http", "method": "POST", "path": TRACK, "headers": [
                (b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body)),
                (b"user-agent", CHROME.encode()),
            ], "client": ("127.0.0.1", 1), "query_string": b"", "http_version": "1.1",
        }  # fmt: skip
        async with asyncio.timeout(5):
            await app(scope, receive, send)  # type: ignore[arg-type]
        return sent

    whole = await answer([body])
    assert whole[0]["status"] == 200 and orjson.loads(whole[1]["body"]) == {"tracked": True}
    split = await answer([body[:10], body[10:]])
    assert split[0]["status"] == 200 and orjson.loads(split[1]["body"]) == {"tracked": True}
    assert len(await flushed_rows(runtime)) == 2


async def test_read_deadlines_cancel_only_late_reads() -> None:
    """One timer for every read in flight: a late read is cancelled and reported as
    expired; a read that finishes in time, or a task cancelled for another reason (the
    client went away), is not; the timer stops when nothing is being read."""
    from core_api.pixel.fastpath import ReadDeadlines

    deadlines = ReadDeadlines(timeout=0.2)
    deadlines.TICK_S = 0.05
    outcomes: dict[str, str] = {}

    async def reader(name: str, seconds: float) -> None:
        task = deadlines.watch()
        try:
            await asyncio.sleep(seconds)
            outcomes[name] = "read"
        except asyncio.CancelledError:
            if deadlines.expired(task):
                outcomes[name] = "timed out"
                return
            outcomes[name] = "cancelled"
            raise
        finally:
            deadlines.done(task)

    quick = asyncio.create_task(reader("quick", 0.05))
    slow = asyncio.create_task(reader("slow", 5))
    gone = asyncio.create_task(reader("gone", 5))
    await asyncio.sleep(0.01)
    gone.cancel()
    async with asyncio.timeout(3):
        await asyncio.gather(quick, slow, gone, return_exceptions=True)
    assert outcomes == {"quick": "read", "slow": "timed out", "gone": "cancelled"}
    assert not deadlines.reading and not deadlines._expired
    await asyncio.sleep(0.15)
    assert deadlines._loop is None  # idle: no timer left running
    assert slow.done() and not slow.cancelled()  # the timeout was handled, not propagated
