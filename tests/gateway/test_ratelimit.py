"""Rate limits through the real app, with and without Redis (injectable clock, no sleeps)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import falcon.testing
import pytest

from conftest import Api, open_app, serving
from core_api.api_keys.service import bootstrap
from core_api.clock import ManualClock
from core_api.config import Settings
from core_api.runtime import Runtime


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    # Limits do not touch the database; SQLite keeps these tests quick. Storage is
    # covered on both backends elsewhere.
    return f"sqlite:///{tmp_path}/core-api.db"


@pytest.fixture
async def node(mode_settings: Settings, clock: ManualClock) -> AsyncIterator[tuple[Runtime, Api]]:
    async with serving(mode_settings, clock) as served:
        yield served


async def key_for(
    runtime: Runtime, clock: ManualClock, tier: str, name: str = "Tenant"
) -> dict[str, Any]:
    return await bootstrap(
        runtime.db, runtime.keys, runtime.plans, clock, name=name, tier=tier, email=None
    )


async def count_ok(api: Api, path: str, key: str, n: int) -> int:
    statuses = [(await api.get(path, key=key)).status for _ in range(n)]
    assert set(statuses) <= {200, 429}, statuses
    return statuses.count(200)


async def test_free_tier_exactly_60_then_429(node: tuple[Runtime, Api], clock: ManualClock) -> None:
    runtime, api = node
    boot = await key_for(runtime, clock, "free")
    path, key = f"/api/v1/workspaces/{boot['workspace']['id']}", boot["api_key"]["key"]
    assert await count_ok(api, path, key, 60) == 60
    refused = await api.get(path, key=key)
    assert refused.status == 429
    assert refused.json["error"] == "rate_limit_exceeded"
    assert refused.json["limit"] == 60 and refused.json["remaining"] == 0
    assert refused.json["retry_after"] == 1
    assert refused.json["message"] == "Too many requests. Please retry after 1 seconds."
    assert refused.json["reset_at"] == "2026-01-01T00:01:00Z"
    assert refused.header("Retry-After") == "1"
    clock.advance(1)
    assert await count_ok(api, path, key, 2) == 1


async def test_starter_burst_1200_then_refills_1000_per_minute(
    node: tuple[Runtime, Api], clock: ManualClock
) -> None:
    runtime, api = node
    boot = await key_for(runtime, clock, "starter")
    path, key = f"/api/v1/workspaces/{boot['workspace']['id']}", boot["api_key"]["key"]
    assert await count_ok(api, path, key, 1201) == 1200
    clock.advance(6)  # 1000/min -> 100 tokens
    assert await count_ok(api, path, key, 101) == 100
    clock.advance(60)
    assert await count_ok(api, path, key, 1001) == 1000


async def test_headers_on_every_status(node: tuple[Runtime, Api], clock: ManualClock) -> None:
    runtime, api = node
    boot = await key_for(runtime, clock, "free")
    key = boot["api_key"]["key"]
    ws = f"/api/v1/workspaces/{boot['workspace']['id']}"
    reader = await api.post(
        "/api/v1/api-keys", key=key, json={"name": "r", "scopes": ["api-keys:read"]}
    )
    responses = {
        200: await api.get(ws, key=key),
        201: reader,
        403: await api.get(ws, key=reader.json["data"]["key"]),
        404: await api.get("/api/v1/workspaces/999999", key=key),
        422: await api.post("/api/v1/workspaces", key=key, json={}),
        401: await api.get(ws, key="sk_live_nope"),
    }
    for status, result in responses.items():
        assert result.status == status, (status, result.json)
        for name in (
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            "X-RateLimit-Reset",
            "RateLimit-Policy",
            "RateLimit",
            "X-Request-ID",
        ):
            assert result.header(name) is not None, (status, name)
    ok = responses[200]
    assert ok.header("X-RateLimit-Limit") == "60"
    assert ok.header("X-RateLimit-Remaining") == "58"  # the POST above spent one
    assert ok.header("RateLimit-Policy") == '"free";q=60;w=60'
    assert ok.header("RateLimit") == '"free";r=58;t=2'
    assert int(ok.header("X-RateLimit-Reset")) == clock.now_ms() // 1000 + 2
    while (last := await api.get(ws, key=key)).status != 429:
        pass
    for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After"):
        assert last.header(name) is not None
    assert last.header("X-RateLimit-Remaining") == "0"


async def test_parallel_requests_against_one_limit(
    node: tuple[Runtime, Api], clock: ManualClock
) -> None:
    runtime, api = node
    boot = await key_for(runtime, clock, "free")
    path, key = f"/api/v1/workspaces/{boot['workspace']['id']}", boot["api_key"]["key"]
    results = await asyncio.gather(*(api.get(path, key=key) for _ in range(150)))
    assert sorted({r.status for r in results}) == [200, 429]
    assert sum(r.status == 200 for r in results) == 60


async def test_two_processes_share_one_budget(
    mode_settings: Settings, clock: ManualClock, tmp_path: Path
) -> None:
    """Two runtimes stand in for two worker processes (same host: same shared memory) or,
    with Redis, two nodes (separate shared memory, one Redis)."""
    first, app_a = await open_app(mode_settings, clock)
    other_shm = (
        mode_settings.shm_path if mode_settings.redis_url is None else str(tmp_path / "shm-b")
    )
    second, app_b = await open_app(replace(mode_settings, shm_path=other_shm), clock)
    try:
        boot = await key_for(first, clock, "free")
        path, key = f"/api/v1/workspaces/{boot['workspace']['id']}", boot["api_key"]["key"]
        async with (
            falcon.testing.ASGIConductor(app_a) as a,
            falcon.testing.ASGIConductor(app_b) as b,
        ):
            apis = [Api(a), Api(b)]
            statuses = [(await apis[i % 2].get(path, key=key)).status for i in range(80)]
        assert statuses.count(200) == 60, statuses
        assert set(statuses[60:]) == {429}
    finally:
        await first.close()
        await second.close()


async def test_failed_authentication_is_limited_per_ip(
    mode_settings: Settings, clock: ManualClock
) -> None:
    async with serving(replace(mode_settings, auth_failure_limit=3), clock) as (_, api):
        statuses = [
            (await api.get("/api/v1/workspaces", key="sk_live_bad")).status for _ in range(5)
        ]
        assert statuses == [401, 401, 401, 429, 429]
        clock.advance(20)
        assert (await api.get("/api/v1/workspaces", key="sk_live_bad")).status == 401


async def test_pixel_limit_per_client_ip(mode_settings: Settings, clock: ManualClock) -> None:
    import ipaddress

    settings = replace(
        mode_settings, pixel_rate_limit=5, trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),)
    )
    async with serving(settings, clock) as (_, api):

        async def hit(ip: str) -> int:
            result = await api.get(
                "/api/v1/pixel/config", auth=False, headers={"X-Forwarded-For": f"{ip}, 127.0.0.1"}
            )
            return result.status

        first = [await hit("203.0.113.7") for _ in range(6)]
        assert first == [200] * 5 + [429]
        assert await hit("203.0.113.8") == 200  # another client has its own budget


async def test_untrusted_forwarded_for_is_ignored(
    mode_settings: Settings, clock: ManualClock
) -> None:
    async with serving(replace(mode_settings, pixel_rate_limit=2), clock) as (_, api):
        statuses = []
        for i in range(3):
            spoofed = {"X-Forwarded-For": f"198.51.100.{i}"}
            statuses.append(
                (await api.get("/api/v1/pixel/config", auth=False, headers=spoofed)).status
            )
        assert statuses == [200, 200, 429]  # spoofed hops do not buy new budgets


async def test_zero_switches_ip_limits_off(mode_settings: Settings, clock: ManualClock) -> None:
    settings = replace(mode_settings, pixel_rate_limit=0, auth_failure_limit=0)
    async with serving(settings, clock) as (_, api):
        pixel = [(await api.get("/api/v1/pixel/config", auth=False)) for _ in range(400)]
        assert {r.status for r in pixel} == {200}
        assert pixel[0].header("X-RateLimit-Limit") is None  # no limit, no limit headers
        failures = [
            (await api.get("/api/v1/workspaces", key="sk_live_x")).status for _ in range(50)
        ]
        assert set(failures) == {401}


async def test_rotation_does_not_refill_the_budget(
    node: tuple[Runtime, Api], clock: ManualClock
) -> None:
    runtime, api = node
    boot = await key_for(runtime, clock, "free")
    admin = boot["api_key"]["key"]
    ws = boot["workspace"]["id"]
    created = await api.post("/api/v1/api-keys", key=admin, json={"name": "spent", "scopes": ["*"]})
    spent = created.json["data"]
    path = f"/api/v1/workspaces/{ws}"
    assert await count_ok(api, path, spent["key"], 61) == 60
    rotated = await api.post(f"/api/v1/api-keys/{spent['id']}/rotate", key=admin)
    successor = rotated.json["data"]["key"]
    assert (await api.get(path, key=successor)).status == 429  # same bucket as its predecessor
    clock.advance(1)
    assert await count_ok(api, path, successor, 2) == 1
    again = await api.post(f"/api/v1/api-keys/{rotated.json['data']['id']}/rotate", key=admin)
    assert (await api.get(path, key=again.json["data"]["key"])).status == 429  # whole chain


@pytest.mark.redis
async def test_concurrent_waiters_share_one_lease_refill(redis_prefix: str, tmp_path: Path) -> None:
    """A hot key with many requests waiting at once: they join one Redis refill instead of
    each taking a lease, so the key's global bucket is not drained into leases that expire
    unspent (which used to end in 429s far below the key's limit)."""
    import redis.asyncio as aioredis

    from conftest import REDIS_URL
    from core_api import _native
    from core_api.clock import Clock
    from core_api.gateway.ratelimit import LocalLimiter, RedisLimiter
    from core_api.plans import Tier

    redis = aioredis.from_url(REDIS_URL)
    try:
        shared = _native.SharedState(str(tmp_path / "shm"))
        limiter = RedisLimiter(redis, redis_prefix, LocalLimiter(shared, Clock()), Clock())
        tier = Tier("hot", 600_000, 0.0)  # 10,000/s: a lease is 500 tokens, the bucket 600,000

        async def one() -> bool:
            decision = limiter.check_now(b"key:hot", tier) or await limiter.check(b"key:hot", tier)
            return decision.allowed

        allowed = [await asyncio.gather(*(one() for _ in range(200))) for _ in range(5)]
        assert all(all(batch) for batch in allowed)
        left = float(await redis.hget(f"{redis_prefix}rl:key:hot", "t") or 0)
        assert left >= tier.capacity - 5 * 500 - 1000  # a few leases taken, not 1,000
    finally:
        await redis.aclose()


def test_raw_headers_are_the_headers_as_asgi_pairs() -> None:
    """The pixel fast path sends ``raw_headers()``; the gateway sends ``headers()``."""
    from core_api.gateway.ratelimit import Decision, per_minute_tier
    from core_api.plans import Tier

    for tier in (per_minute_tier("pixel", 300), Tier("starter", 1000, 200.0)):
        for remaining, reset_after, now_s in ((299, 0.2, 1_767_225_600.5), (0, 59.99, 1.0)):
            decision = Decision(remaining > 0, tier, remaining, reset_after, 0.0, now_s)
            expected = [(k.lower().encode(), v.encode()) for k, v in decision.headers()]
            assert decision.raw_headers() == expected


def test_take_headers_is_check_now_and_its_headers_in_one_call(tmp_path: Path) -> None:
    """The fast paths' ``take_headers`` against ``check_now`` + ``raw_headers`` on twin
    buckets of one table, over a run that empties, refuses and refills: the same headers
    while allowed, None exactly when refused, and nothing taken by a refusal."""
    from core_api import _native
    from core_api.gateway.ratelimit import LocalLimiter, per_minute_tier
    from core_api.plans import Tier

    clock = ManualClock()
    limiter = LocalLimiter(_native.SharedState(str(tmp_path / "shm")), clock)
    for tier in (per_minute_tier("pixel", 5), Tier("burst", 10, 0.5)):
        fast, slow = b"fast:" + tier.name.encode(), b"slow:" + tier.name.encode()
        refused = 0
        for step in range(40):
            clock.advance(0.3 if step % 7 == 0 else 0.0)
            decision = limiter.check_now(slow, tier)
            headers = limiter.take_headers(fast, tier)
            if decision.allowed:
                assert headers == decision.raw_headers(), step
            else:
                refused += 1
                assert headers is None, step
        assert refused > 10  # the run reached the refusals and the refills
