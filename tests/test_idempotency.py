"""Idempotency-Key: both storage backends, with and without Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import falcon.testing
import pytest

from conftest import Api, serving
from core_api.app import create_app
from core_api.clock import ManualClock
from core_api.config import Settings
from core_api.runtime import Runtime
from core_api.services.api_keys import bootstrap

WS = "/api/v1/workspaces"


@pytest.fixture
async def node(mode_settings: Settings, clock: ManualClock) -> AsyncIterator[tuple[Runtime, Api]]:
    async with serving(mode_settings, clock) as (runtime, api):
        boot = await bootstrap(
            runtime.db,
            runtime.keys,
            runtime.plans,
            clock,
            name="Acme",
            tier="enterprise",
            email=None,
        )
        api.key = boot["api_key"]["key"]
        yield runtime, api


async def total_workspaces(api: Api) -> int:
    return int((await api.get(WS)).json["meta"]["total"])


async def test_replay_returns_first_response(node: tuple[Runtime, Any]) -> None:
    _, api = node
    headers = {"Idempotency-Key": "550e8400-e29b-41d4-a716-446655440000"}
    first = await api.post(WS, json={"name": "Once"}, headers=headers)
    assert first.status == 201 and first.header("Idempotent-Replayed") is None
    again = await api.post(WS, json={"name": "Once"}, headers=headers)
    assert again.status == 201
    assert again.json == first.json
    assert again.header("Idempotent-Replayed") == "true"
    assert again.header("Content-Type").startswith("application/json")
    assert again.header("X-RateLimit-Remaining") is not None
    assert await total_workspaces(api) == 2  # bootstrap + one


async def test_different_body_is_422_and_changes_nothing(node: tuple[Runtime, Any]) -> None:
    _, api = node
    headers = {"Idempotency-Key": "key-1"}
    assert (await api.post(WS, json={"name": "A"}, headers=headers)).status == 201
    mismatch = await api.post(WS, json={"name": "B"}, headers=headers)
    assert mismatch.status == 422
    assert mismatch.json["error"] == "validation_failed"
    assert "Idempotency-Key" in mismatch.json["errors"]
    other_path = await api.post("/api/v1/api-keys", json={"name": "A"}, headers=headers)
    assert other_path.status == 422
    assert await total_workspaces(api) == 2


async def test_keys_are_scoped_to_the_api_key(node: tuple[Runtime, Any]) -> None:
    _, api = node
    other = (await api.post("/api/v1/api-keys", json={"name": "other", "scopes": ["*"]})).json[
        "data"
    ]["key"]
    headers = {"Idempotency-Key": "shared"}
    assert (await api.post(WS, json={"name": "A"}, headers=headers)).status == 201
    second = await api.post(WS, key=other, json={"name": "A"}, headers=headers)
    assert second.status == 201 and second.header("Idempotent-Replayed") is None
    assert await total_workspaces(api) == 3


async def test_concurrent_duplicates_create_exactly_one(node: tuple[Runtime, Any]) -> None:
    _, api = node
    headers = {"Idempotency-Key": "burst"}
    results = await asyncio.gather(
        *(api.post(WS, json={"name": "Burst"}, headers=headers) for _ in range(12))
    )
    statuses = [r.status for r in results]
    assert set(statuses) <= {201, 409}, statuses
    originals = [r for r in results if r.status == 201 and r.header("Idempotent-Replayed") is None]
    assert len(originals) == 1
    for conflict in (r for r in results if r.status == 409):
        assert conflict.json["error"] == "idempotency_key_in_use"
    assert await total_workspaces(api) == 2
    replay = await api.post(WS, json={"name": "Burst"}, headers=headers)
    assert replay.status == 201 and replay.json == originals[0].json


async def test_invalid_keys_are_rejected(node: tuple[Runtime, Any]) -> None:
    _, api = node
    for bad in ("x" * 256, "has space", "caf\u00e9"):
        result = await api.post(
            WS,
            json={"name": "A"},
            headers={"Idempotency-Key": bad.encode("utf-8").decode("latin-1")},
        )
        assert result.status == 422 and "Idempotency-Key" in result.json["errors"]
    assert await total_workspaces(api) == 1


async def test_delete_replays_204(node: tuple[Runtime, Any]) -> None:
    _, api = node
    ws_id = (await api.post(WS, json={"name": "Gone"})).json["data"]["id"]
    headers = {"Idempotency-Key": "del-1"}
    assert (await api.delete(f"{WS}/{ws_id}", headers=headers)).status == 204
    replay = await api.delete(f"{WS}/{ws_id}", headers=headers)
    assert replay.status == 204 and replay.header("Idempotent-Replayed") == "true"
    assert (await api.delete(f"{WS}/{ws_id}")).status == 404


@pytest.mark.parametrize("limiter_mode", ["local"], indirect=True)
async def test_records_expire_after_24_hours(node: tuple[Runtime, Any], clock: ManualClock) -> None:
    """Database records expire on the app's clock; Redis ones by TTL (next test)."""
    _, api = node
    headers = {"Idempotency-Key": "daily"}
    assert (await api.post(WS, json={"name": "D"}, headers=headers)).status == 201
    clock.advance(24 * 3600 - 1)
    assert (await api.post(WS, json={"name": "D"}, headers=headers)).header(
        "Idempotent-Replayed"
    ) == "true"
    clock.advance(2)
    fresh = await api.post(WS, json={"name": "D"}, headers=headers)
    assert fresh.status == 201 and fresh.header("Idempotent-Replayed") is None
    assert await total_workspaces(api) == 3


@pytest.mark.parametrize("limiter_mode", ["redis"], indirect=True)
async def test_redis_record_ttl(node: tuple[Runtime, Any], mode_settings: Settings) -> None:
    runtime, api = node
    assert (
        await api.post(WS, json={"name": "T"}, headers={"Idempotency-Key": "ttl"})
    ).status == 201
    keys = [k async for k in runtime.redis.scan_iter(match=f"{mode_settings.redis_prefix}idem:*")]
    assert len(keys) == 1
    ttl_ms = await runtime.redis.pttl(keys[0])
    assert 24 * 3600 * 1000 - 60_000 < ttl_ms <= 24 * 3600 * 1000


async def test_validation_failure_is_replayed_not_reexecuted(node: tuple[Runtime, Any]) -> None:
    _, api = node
    headers = {"Idempotency-Key": "bad-body"}
    first = await api.post(WS, json={"name": ""}, headers=headers)
    assert first.status == 422
    again = await api.post(WS, json={"name": ""}, headers=headers)
    assert again.status == 422 and again.header("Idempotent-Replayed") == "true"


@pytest.mark.parametrize("limiter_mode", ["local"], indirect=True)
async def test_a_failing_record_store_does_not_turn_the_response_into_a_500(
    node: tuple[Runtime, Any], caplog: pytest.LogCaptureFixture
) -> None:
    from core_api.idempotency import DatabaseStore, Stored

    runtime, api = node

    class BrokenOnComplete(DatabaseStore):
        async def complete(self, scope: int, key: str, stored: Stored, now: int) -> None:
            await self.db.execute("UPDATE no_such_table SET x = 1")  # a real database error

    runtime.idempotency = BrokenOnComplete(runtime.db, 86_400_000)
    app = create_app(runtime.settings, runtime)
    async with falcon.testing.ASGIConductor(app) as conductor:
        api = Api(conductor, api.key)
        created = await api.post(WS, json={"name": "Kept"}, headers={"Idempotency-Key": "k1"})
    assert created.status == 201
    assert "could not record the idempotent response" in caplog.text
