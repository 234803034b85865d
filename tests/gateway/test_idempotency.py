"""Idempotency-Key: both storage backends, with and without Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import falcon.testing
import orjson
import pytest

from conftest import Api, serving
from core_api.api_keys.service import bootstrap
from core_api.app import create_app
from core_api.clock import ManualClock
from core_api.config import Settings
from core_api.gateway import idempotency_repo as records
from core_api.runtime import Runtime
from core_api.storage import open_database
from core_api.storage.migrate import migrate

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
async def test_records_are_in_the_database_even_with_redis(
    node: tuple[Runtime, Any], mode_settings: Settings
) -> None:
    """Redis is never the record: an outage there cannot make a key run twice."""
    runtime, api = node
    assert (
        await api.post(WS, json={"name": "T"}, headers={"Idempotency-Key": "ttl"})
    ).status == 201
    rows = await runtime.db.fetch_all(
        "SELECT status, expires_at, created_at FROM idempotency_records"
    )
    assert [(r["status"], r["expires_at"] - r["created_at"]) for r in rows] == [(201, 86_400_000)]
    assert [
        k async for k in runtime.redis.scan_iter(match=f"{mode_settings.redis_prefix}idem:*")
    ] == []


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
    from core_api.gateway.idempotency import Response, Store, Ticket

    runtime, api = node

    class BrokenOnComplete(Store):
        async def complete(self, ticket: Ticket, response: Response, now: int) -> None:
            await self.db.execute("UPDATE no_such_table SET x = 1")  # a real database error

    runtime.idempotency = BrokenOnComplete(runtime.db, 86_400_000, runtime.settings.secret_key)
    app = create_app(runtime.settings, runtime)
    async with falcon.testing.ASGIConductor(app) as conductor:
        api = Api(conductor, api.key)
        created = await api.post(WS, json={"name": "Kept"}, headers={"Idempotency-Key": "k1"})
    assert created.status == 201
    assert "could not record the idempotent response" in caplog.text


async def _everything_at_rest(runtime: Runtime, settings: Settings) -> bytes:
    """Every column of every idempotency row, and every Redis value under our prefix."""
    blob = bytearray()
    for row in await runtime.db.fetch_all("SELECT * FROM idempotency_records"):
        for value in row.values():
            blob += value if isinstance(value, bytes | memoryview) else str(value).encode()
            blob += b"\0"
    if runtime.redis is not None:
        async for name in runtime.redis.scan_iter(match=f"{settings.redis_prefix}*"):
            kind = (await runtime.redis.type(name)).decode()
            if kind == "string":
                blob += await runtime.redis.get(name)
            elif kind == "hash":
                for field, value in (await runtime.redis.hgetall(name)).items():
                    blob += field + b"\0" + value
    return bytes(blob)


async def test_no_secret_or_idempotency_key_at_rest(
    node: tuple[Runtime, Any], mode_settings: Settings
) -> None:
    runtime, api = node
    created_headers = {"Idempotency-Key": "create-key-7f3a9c"}
    body = {"name": "ci", "scopes": ["*"]}
    created = await api.post("/api/v1/api-keys", json=body, headers=created_headers)
    assert created.status == 201
    secret, key_id = created.json["data"]["key"], created.json["data"]["id"]
    rotate_headers = {"Idempotency-Key": "rotate-key-51bd02"}
    rotated = await api.post(
        f"/api/v1/api-keys/{key_id}/rotate",
        json={"grace_period_hours": 1},
        headers=rotate_headers,
    )
    assert rotated.status == 200
    successor = rotated.json["data"]["key"]
    assert secret.startswith("sk_live_") and successor.startswith("sk_live_")

    at_rest = await _everything_at_rest(runtime, mode_settings)
    assert len(at_rest) > 0
    for needle in (secret, successor, api.key, "create-key-7f3a9c", "rotate-key-51bd02"):
        assert needle.encode() not in at_rest, needle
    assert b"sk_live_" not in at_rest

    replay = await api.post("/api/v1/api-keys", json=body, headers=created_headers)
    assert replay.header("Idempotent-Replayed") == "true"
    assert replay.json["data"]["key"] == secret
    assert replay.header("Location") == created.header("Location")
    again = await api.post(
        f"/api/v1/api-keys/{key_id}/rotate", json={"grace_period_hours": 1}, headers=rotate_headers
    )
    assert again.header("Idempotent-Replayed") == "true" and again.json == rotated.json


@pytest.mark.parametrize("limiter_mode", ["local"], indirect=True)
async def test_another_caller_cannot_open_a_stored_response(node: tuple[Runtime, Any]) -> None:
    from cryptography.exceptions import InvalidTag

    from core_api.gateway.idempotency import Response, root_key, ticket_for

    runtime, api = node
    other = (await api.post("/api/v1/api-keys", json={"name": "o", "scopes": ["*"]})).json["data"]
    headers = {"Idempotency-Key": "mine"}
    body = {"name": "secret-bearer", "scopes": ["*"]}
    first = await api.post("/api/v1/api-keys", json=body, headers=headers)
    assert first.status == 201

    # The same Idempotency-Key from the other key: its own request, never the first response.
    theirs = await api.post("/api/v1/api-keys", key=other["key"], json=body, headers=headers)
    assert theirs.status == 201 and theirs.header("Idempotent-Replayed") is None
    assert theirs.json["data"]["key"] != first.json["data"]["key"]

    # A row copied under the other key's id: its hash does not match, nor does the cipher open it.
    row = await runtime.db.fetch_one(
        "SELECT api_key_id, idempotency_key, status, body FROM idempotency_records "
        "WHERE body IS NOT NULL AND status = 201 AND api_key_id <> ?",  # the first caller's
        (other["id"],),
    )
    assert row is not None
    req = falcon.testing.create_asgi_req(method="POST", path="/api/v1/api-keys")
    root = root_key(runtime.settings.secret_key)
    mine = ticket_for(root, api.key, row["api_key_id"], "mine", req, b"")
    assert mine.key == row["idempotency_key"]
    assert mine.open(201, bytes(row["body"])).body == orjson.dumps(first.json)
    thief = ticket_for(
        runtime.settings.secret_key, other["key"], row["api_key_id"], "mine", req, b""
    )
    assert thief.key != row["idempotency_key"]
    with pytest.raises(InvalidTag):
        thief.open(201, bytes(row["body"]))
    with pytest.raises(InvalidTag):  # bound to its status: a tampered status does not open
        mine.open(200, bytes(row["body"]))
    assert isinstance(mine.seal(Response(201, {}, b"x")), bytes)


async def test_workspace_header_is_part_of_the_request(node: tuple[Runtime, Any]) -> None:
    _, api = node
    second = (await api.post(WS, json={"name": "Second"})).json["data"]["id"]
    (home,) = [w["id"] for w in (await api.get(WS)).json["data"] if w["id"] != second]
    headers = {"Idempotency-Key": "per-workspace"}
    body = {"name": "k", "scopes": ["workspaces:read"]}
    first = await api.post(
        "/api/v1/api-keys", json=body, headers={**headers, "X-Workspace-ID": str(home)}
    )
    assert first.status == 201
    for selection in ({"X-Workspace-ID": str(second)}, {}):
        other = await api.post("/api/v1/api-keys", json=body, headers={**headers, **selection})
        assert other.status == 422, selection
        assert "Idempotency-Key" in other.json["errors"]
    same = await api.post(
        "/api/v1/api-keys", json=body, headers={**headers, "X-Workspace-ID": str(home)}
    )
    assert same.header("Idempotent-Replayed") == "true"
    listed = await api.get("/api/v1/api-keys", headers={"X-Workspace-ID": str(second)})
    assert all(k["name"] != "k" for k in listed.json["data"])


@pytest.mark.parametrize("limiter_mode", ["local"], indirect=True)
async def test_unreachable_records_refuse_with_503_and_run_nothing(
    node: tuple[Runtime, Any],
) -> None:
    """A real database error on the claim (the table is gone): 503, the write never runs."""
    runtime, api = node
    headers = {"Idempotency-Key": "no-record"}
    await runtime.db.execute("ALTER TABLE idempotency_records RENAME TO idempotency_away")
    try:
        refused = await api.post(WS, json={"name": "Unguarded"}, headers=headers)
    finally:
        await runtime.db.execute("ALTER TABLE idempotency_away RENAME TO idempotency_records")
    assert refused.status == 503
    assert refused.json["error"] == "service_unavailable"
    assert int(refused.header("Retry-After") or 0) == refused.json["retry_after"] > 0
    assert await total_workspaces(api) == 1
    retried = await api.post(WS, json={"name": "Unguarded"}, headers=headers)
    assert retried.status == 201 and await total_workspaces(api) == 2


async def test_records_repository(database_url: str) -> None:
    """The table's operations on both backends: a conflicting claim is an answer, not an
    error; a takeover needs the lock value it saw; a purge keeps what expires at ``now``."""
    db = await open_database(database_url)
    try:
        await migrate(db)
        claim = {"locked_until": 10, "expires_at": 100, "now": 0}
        assert await records.insert(db, 1, "k", "h", **claim)
        assert not await records.insert(db, 1, "k", "other", **claim)
        assert await records.insert(db, 2, "k", "h2", **claim)  # another API key's scope
        assert await records.get(db, 1, "k") == records.Record("h", None, None, 10, 100)
        assert await records.get(db, 1, "nope") is None

        assert not await records.take_over(db, 1, "k", seen_locked_until=9, locked_until=20)
        assert await records.take_over(db, 1, "k", seen_locked_until=10, locked_until=20)
        assert not await records.take_over(db, 1, "k", seen_locked_until=10, locked_until=30)

        await records.complete(db, 1, "k", 201, b"\x00sealed\xff")
        done = await records.get(db, 1, "k")
        assert done == records.Record("h", 201, b"\x00sealed\xff", 20, 100)
        assert isinstance(done.body, bytes)
        await records.release(db, 1, "k")  # a stored response is never released
        await records.release(db, 2, "k")
        assert await records.get(db, 1, "k") is not None and await records.get(db, 2, "k") is None

        await records.delete_expired(db, 1, "k", 99)
        assert await records.get(db, 1, "k") is not None
        assert await records.purge_expired(db, 100) == 0
        assert await records.purge_expired(db, 101) == 1
        assert await records.get(db, 1, "k") is None
    finally:
        await db.close()


async def test_first_response_and_replay_are_the_same_json(api: Api) -> None:
    """The recorded bytes are the bytes sent (serialised once), with their content type."""
    headers = {"Idempotency-Key": "same-bytes"}
    first = await api.post("/api/v1/workspaces", json={"name": "Bytes"}, headers=headers)
    again = await api.post("/api/v1/workspaces", json={"name": "Bytes"}, headers=headers)
    assert first.status == again.status == 201
    assert first.header("content-type") == again.header("content-type") == "application/json"
    assert again.header("Idempotent-Replayed") == "true" and again.json == first.json
