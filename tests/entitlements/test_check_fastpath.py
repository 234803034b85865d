"""The ASGI fast path of GET /api/v1/entitlements/check answers exactly as the Falcon route
behind the gateway: same statuses, bodies and headers, the same api_calls count and rate
limit charge per request, on both backends and with and without Redis. Each request is
sent once through each app, with a key of its own per app (so both start from the same
bucket), over one runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import falcon.testing
import pytest
from entitlements_support import CHECK, USAGE, plans_file, tenant

from conftest import REDIS_URL, Api, make_settings
from core_api.app import create_app
from core_api.clock import ManualClock
from core_api.config import Settings
from core_api.entitlements.fastpath import FastCheck
from core_api.features import front
from core_api.runtime import Runtime

SLOW_RPM = 12  # the "slow" tier: low enough to reach 429 within a test


@dataclass
class Pair:
    runtime: Runtime
    falcon: Api
    fast: Api
    keys: dict[str, tuple[str, str]]  # name -> (key for falcon, key for fast)
    workspace_id: int
    owner_key: str


@pytest.fixture
async def pair(
    database_url: str,
    tmp_path: Path,
    clock: ManualClock,
    limiter_mode: str,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Pair]:
    from entitlements_support import PLANS

    small_limits = PLANS.split("[tiers.small.limits]")[1].split("[tiers.big]")[0]
    plans = PLANS.replace("api_keys = 3", "api_keys = 20") + (
        f"\n[tiers.slow]\nrequests_per_minute = {SLOW_RPM}\nburst = 0.0\n"
        f"[tiers.slow.limits]{small_limits}"
    )
    redis: dict[str, Any] = {}
    if limiter_mode == "redis":
        redis = {"redis_url": REDIS_URL, "redis_prefix": request.getfixturevalue("redis_prefix")}
    settings: Settings = make_settings(
        database_url,
        tmp_path,
        plans_file=plans_file(tmp_path, plans),
        upgrade_url="https://up.test/go",
        **redis,
    )
    runtime = await Runtime.open(settings, clock=clock, run_migrations=True)
    try:
        served = front(create_app(settings, runtime), runtime, settings)
        assert isinstance(served.routes["GET", CHECK], FastCheck)
        async with (
            falcon.testing.ASGIConductor(create_app(settings, runtime)) as slow_conductor,
            falcon.testing.ASGIConductor(served) as fast_conductor,  # type: ignore[arg-type]
        ):
            boot = await tenant(runtime, clock, "Acme")
            owner = Api(slow_conductor, boot["api_key"]["key"])
            keys: dict[str, tuple[str, str]] = {}
            for name, scopes, tier in (
                ("read", ["entitlements:read"], None),
                ("other_scope", ["workspaces:read"], None),
                ("slow", ["entitlements:read"], "slow"),
            ):
                made = []
                for _ in range(2):
                    body: dict[str, Any] = {"name": name, "scopes": scopes}
                    if tier:
                        body["rate_limit_tier"] = tier
                    got = await owner.post("/api/v1/api-keys", json=body)
                    assert got.status == 201, got.json
                    made.append(got.json["data"]["key"])
                keys[name] = (made[0], made[1])
            yield Pair(
                runtime,
                Api(slow_conductor),
                Api(fast_conductor),
                keys,
                boot["workspace"]["id"],
                boot["api_key"]["key"],
            )
    finally:
        await runtime.close()


UNTIMED = ("x-ratelimit-reset", "ratelimit", "x-request-id", "date")


async def both(
    pair: Pair, key: str = "read", query: str | None = "feature=posts", **headers: str
) -> tuple[Any, Any]:
    """The same request through Falcon, then through the fast path; their answers must be
    equal and each must have counted the same api_calls."""
    answers = []
    for i, client in enumerate((pair.falcon, pair.fast)):
        before = pair.runtime.entitlements.meter.pending()
        path = CHECK if query is None else f"{CHECK}?{query}"
        token = pair.keys[key][i]
        sent = {"Authorization": f"Bearer {token}", **headers}
        got = await client.get(path, headers={k: v for k, v in sent.items() if v != ""})
        answers.append((got, pair.runtime.entitlements.meter.pending() - before))
    (slow, slow_calls), (quick, quick_calls) = answers
    assert quick.status == slow.status, (query, headers, quick.json, slow.json)
    assert quick.json == slow.json, (query, headers)
    assert quick_calls == slow_calls, (query, headers)
    same = {k: v for k, v in slow.headers.items() if k not in UNTIMED}
    if slow.status == 401:  # one per-IP auth-failure bucket for both: one taken since
        same["x-ratelimit-remaining"] = str(int(same["x-ratelimit-remaining"]) - 1)
    assert {k: v for k, v in quick.headers.items() if k not in UNTIMED} == same, query
    for name in UNTIMED[:3]:
        assert (name in quick.headers) == (name in slow.headers), name
    return slow, quick


async def test_answers_match_the_falcon_route(pair: Pair) -> None:
    _, quick = await both(pair)  # the caches are cold: the awaited path
    assert quick.status == 200 and quick.json["current_usage"] == 0
    assert quick.header("x-ratelimit-limit") and quick.header("x-request-id")
    await both(pair)  # warm: answered from memory
    got = await pair.fast.post(USAGE, json={"feature": "posts", "quantity": 4}, key=pair.owner_key)
    assert got.status == 200
    _, quick = await both(pair)
    assert quick.json["current_usage"] == 4  # this process's write is seen at once
    cases: list[tuple[str | None, dict[str, str]]] = [
        ("feature=posts&quantity=7", {}),  # LIMIT_EXCEEDED
        ("feature=posts&quantity=6", {}),
        ("feature=custom_domains", {}),  # a boolean that is off: NOT_INCLUDED
        ("feature=api_calls", {}),  # metered, soft, with reset_at
        ("feature=storage&quantity=1000", {}),
        ("feature=nope", {}),  # 422 unknown feature
        ("feature=posts&quantity=-1", {}),
        ("feature=posts&quantity=abc", {}),
        ("feature=posts&quantity=1%30", {}),  # decoded by Falcon's parser
        ("feature=posts&quantity=\u0661", {}),  # a Unicode digit
        ("feature=posts&quantity=\u00b2", {}),
        ("feature=posts&quantity=99999999999999999", {}),
        ("feature=posts&extra=1", {}),
        ("feature=posts&feature=storage", {}),  # repeated: Falcon's parser
        ("feature=", {}),
        ("feature", {}),
        ("", {}),
        (None, {}),
        ("feature=po%73ts", {}),  # encoded: Falcon's parser
        ("feature=posts", {"X-Request-ID": "client-id-1"}),
        ("feature=posts", {"X-Request-ID": "bad id\t"}),
        ("feature=posts", {"X-Workspace-ID": "abc"}),  # 422
        ("feature=posts", {"X-Workspace-ID": "999999"}),  # not a member: the home workspace
        ("feature=posts", {"X-Workspace-ID": str(pair.workspace_id)}),
        ("feature=posts", {"X-Workspace-ID": "\u00b2"}),  # isdigit(), not a number
        ("feature=posts", {"Authorization": ""}),  # 401, nothing charged
        ("feature=posts", {"Authorization": "Basic abc"}),
        ("feature=posts", {"Authorization": "Bearer sk_live_notakey"}),
        ("feature=posts", {"Authorization": "Bearer " + "x" * 300}),
    ]
    for query, headers in cases:
        await both(pair, query=query, **headers)
    await both(pair, key="other_scope")  # 403, api_calls counted as by the gateway
    await both(pair, key="other_scope", query="feature=nope")  # the scope decides first


async def test_a_second_workspace_by_header(pair: Pair) -> None:
    made = await pair.falcon.post("/api/v1/workspaces", json={"name": "Second"}, key=pair.owner_key)
    assert made.status == 201, made.json
    _, quick = await both(pair, **{"X-Workspace-ID": str(made.json["data"]["id"])})
    assert quick.status == 200  # the owner's keys act in every workspace of the owner


async def test_the_rate_limit_counts_each_request_once(pair: Pair) -> None:
    statuses: list[tuple[int, int]] = []
    for i in range(SLOW_RPM + 2):
        query = "feature=nope" if i % 3 == 0 else "feature=posts"  # 422s are charged too
        slow, quick = await both(pair, key="slow", query=query)
        statuses.append((slow.status, quick.status))
    # Both keys' buckets hold SLOW_RPM (a refill during the test may add one request).
    assert all(s != 429 for s, _ in statuses[:SLOW_RPM])
    assert statuses[-1] == (429, 429), statuses
    assert quick.json["error"] == "rate_limit_exceeded" and quick.header("retry-after")


async def test_usage_recorded_elsewhere_shows_in_the_next_check(
    pair: Pair, clock: ManualClock
) -> None:
    """The fast path's memory is the service's: a usage recorded through the API is in
    the next check of this process at once."""
    runtime = pair.runtime
    boot_key = (await tenant(runtime, clock, "Beta"))["api_key"]["key"]
    writer = pair.fast
    first = await writer.get(f"{CHECK}?feature=posts", key=boot_key)
    assert first.json["current_usage"] == 0
    got = await writer.post(USAGE, json={"feature": "posts", "quantity": 3}, key=boot_key)
    assert got.status == 200
    again = await writer.get(f"{CHECK}?feature=posts", key=boot_key)
    assert again.json["current_usage"] == 3 and again.json["available"] == 7


async def test_a_revoked_or_expired_key_is_refused_at_once(pair: Pair, clock: ManualClock) -> None:
    """The fast path reads the key cache after the same invalidation sync as the gateway:
    a key revoked (or past its expiry) is a 401 on its very next check."""
    owner = pair.owner_key
    for expiry in (None, "2026-01-01T00:10:00Z"):
        body: dict[str, Any] = {"name": "short-lived", "scopes": ["entitlements:read"]}
        if expiry:
            body["expires_at"] = expiry
        made = await pair.fast.post("/api/v1/api-keys", json=body, key=owner)
        assert made.status == 201, made.json
        key = made.json["data"]["key"]
        assert (await pair.fast.get(f"{CHECK}?feature=posts", key=key)).status == 200  # cached
        if expiry is None:
            gone = await pair.fast.delete(f"/api/v1/api-keys/{made.json['data']['id']}", key=owner)
            assert gone.status == 204
        else:
            clock.advance(11 * 60)
        refused = await pair.fast.get(f"{CHECK}?feature=posts", key=key)
        assert refused.status == 401, refused.json
        assert refused.json["error"] == "unauthorized"
