"""Targeted invalidation: a change evicts what depends on it, in every process and node,
and nothing else; a process that may have missed changes flushes everything."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import falcon.testing
import pytest
import redis.asyncio as aioredis
from test_redis_outage import PrivateRedis, private_redis  # noqa: F401 - fixture

from conftest import Api, ManualClock, open_app, serving
from core_api import _native
from core_api.api_keys.service import bootstrap
from core_api.config import Settings
from core_api.gateway.invalidation import Invalidator, decode, encode
from core_api.runtime import Runtime

KEYS, WORKSPACES = "/api/v1/api-keys", "/api/v1/workspaces"


async def tenant(runtime: Runtime, clock: ManualClock, name: str) -> dict[str, Any]:
    return await bootstrap(
        runtime.db, runtime.keys, runtime.plans, clock, name=name, tier="enterprise", email=None
    )


def counts(runtime: Runtime) -> dict[str, tuple[int, int]]:
    stats = runtime.cache_stats()
    return {
        name: (stats[name]["hits"], stats[name]["misses"])
        for name in ("key_cache", "workspace_access", "api_key_get")
    }


async def test_another_tenants_writes_leave_cached_entries_valid(
    mode_settings: Settings, clock: ManualClock
) -> None:
    async with serving(mode_settings, clock) as (runtime, api):
        a, b = await tenant(runtime, clock, "Tenant A"), await tenant(runtime, clock, "Tenant B")
        b_reads = [f"{WORKSPACES}/{b['workspace']['id']}", f"{KEYS}/{b['api_key']['id']}"]
        for path in b_reads:  # warm B's entries
            assert (await api.get(path, key=b["api_key"]["key"])).status == 200
        applied = runtime.invalidator.targets_applied
        for i in range(3):
            made = await api.post(WORKSPACES, key=a["api_key"]["key"], json={"name": f"A {i}"})
            assert made.status == 201, made.json
            key = await api.post(KEYS, key=a["api_key"]["key"], json={"name": f"k{i}"})
            assert key.status == 201, key.json
        assert runtime.invalidator.targets_applied > applied  # A's writes were logged
        assert runtime.invalidator.epoch == 0  # ... as targets, never as a flush
        before = counts(runtime)
        for path in b_reads:
            assert (await api.get(path, key=b["api_key"]["key"])).status == 200
        after = counts(runtime)
        # B's two requests after A's writes: principal, workspace and key record all hits.
        assert after["key_cache"] == (before["key_cache"][0] + 2, before["key_cache"][1])
        assert after["workspace_access"][1] == before["workspace_access"][1]
        assert after["api_key_get"] == (before["api_key_get"][0] + 1, before["api_key_get"][1])
        # A's own entries survive its creates too: a create changes list totals only.
        a_ws = f"{WORKSPACES}/{a['workspace']['id']}"
        assert (await api.get(a_ws, key=a["api_key"]["key"])).status == 200
        warm = counts(runtime)
        made = await api.post(WORKSPACES, key=a["api_key"]["key"], json={"name": "A more"})
        assert made.status == 201
        assert (await api.post(KEYS, key=a["api_key"]["key"], json={"name": "k"})).status == 201
        mid = counts(runtime)
        assert (await api.get(a_ws, key=a["api_key"]["key"])).status == 200
        end = counts(runtime)
        assert end["key_cache"] == (mid["key_cache"][0] + 1, mid["key_cache"][1])
        assert end["workspace_access"][1] == mid["workspace_access"][1]
        assert mid["key_cache"][1] == warm["key_cache"][1]  # the creates missed nothing
        # ... while the totals of A's lists moved at once.
        listed = await api.get(WORKSPACES, key=a["api_key"]["key"])
        assert listed.json["meta"]["total"] == 5


async def test_revocation_is_immediate_in_another_process_of_the_host(
    database_url: str, settings: Settings, clock: ManualClock
) -> None:
    """Two runtimes on one shared-memory file stand in for two workers of one host."""
    first, app_a = await open_app(settings, clock)
    second, app_b = await open_app(settings, clock)
    try:
        boot = await tenant(first, clock, "Acme")
        other = await tenant(first, clock, "Other")
        async with (
            falcon.testing.ASGIConductor(app_a) as ca,
            falcon.testing.ASGIConductor(app_b) as cb,
        ):
            a, b = Api(ca, boot["api_key"]["key"]), Api(cb, boot["api_key"]["key"])
            made = await a.post(KEYS, json={"name": "doomed", "scopes": ["*"]})
            doomed = made.json["data"]
            ws = f"{WORKSPACES}/{boot['workspace']['id']}"
            other_ws = f"{WORKSPACES}/{other['workspace']['id']}"
            assert (await b.get(ws, key=doomed["key"])).status == 200  # cached in B
            assert (await b.get(other_ws, key=other["api_key"]["key"])).status == 200
            assert (await a.delete(f"{KEYS}/{doomed['id']}")).status == 204
            assert (await b.get(ws, key=doomed["key"])).status == 401  # the very next request
            hits = second.auth.cache.stats()[0]
            assert (await b.get(other_ws, key=other["api_key"]["key"])).status == 200
            assert second.auth.cache.stats()[0] == hits + 1  # the other tenant: still cached
    finally:
        await first.close()
        await second.close()


def test_falling_behind_the_ring_flushes_everything(tmp_path: Path) -> None:
    path = tmp_path / "state.shm"
    inv, other = Invalidator(_native.SharedState(path)), _native.SharedState(path)
    seen: list[tuple[str, int]] = []
    flushes: list[bool] = []
    for kind in ("key", "workspace", "user"):
        inv.subscribe(kind, lambda id_, kind=kind: seen.append((kind, id_)))  # type: ignore[misc]
    inv.subscribe_flush(lambda: flushes.append(True))
    inv.sync()
    other.log_append([("key", 1), ("user", 2)])
    inv.sync()
    assert seen == [("key", 1), ("user", 2)] and not flushes
    other.log_append([("workspace", i) for i in range(_native.SharedState.log_len + 1)])
    inv.sync()
    assert seen == [("key", 1), ("user", 2)] and flushes == [True]
    other.log_flush()  # changed() without targets elsewhere on the host
    inv.sync()
    assert flushes == [True, True] and inv.epoch == 2
    with pytest.raises(ValueError, match="target kind"):
        other.log_append([("team", 1)])


def test_untouched_guards_inserts_against_changes_during_a_read(tmp_path: Path) -> None:
    inv = Invalidator(_native.SharedState(tmp_path / "state.shm"))
    mark = inv.mark()
    assert inv.untouched(mark, ("key", 1), ("workspace", 2))
    inv.shared.log_append([("key", 3), ("user", 1)])
    assert inv.untouched(mark, ("key", 1), ("workspace", 2))  # other targets only
    inv.shared.log_append([("workspace", 2)])
    assert not inv.untouched(mark, ("key", 1), ("workspace", 2))
    assert inv.untouched(inv.mark(), ("workspace", 2))
    late = inv.mark()
    inv.shared.log_flush()
    assert not inv.untouched(late, ("key", 1))


def test_wire_format_round_trips() -> None:
    targets = (
        ("key", 12),
        ("workspace", 3),
        ("user", 7),
        ("key_list", 3),
        ("workspace_list", 7),
        ("pixel_site", 9),
    )
    assert encode(targets) == "k12,w3,u7,l3,m7,p9"  # type: ignore[arg-type]
    assert decode("k12,w3,u7,l3,m7,p9") == list(targets)
    assert encode(()) == "*" and decode("*") is None
    assert decode("") is None and decode("x1") is None and decode("k-1") is None
    assert decode("k\u00b2") is None  # a Unicode digit is not an id (int() would raise)


def test_key_cache_evicts_by_key_workspace_and_user() -> None:
    cache = _native.KeyCache(b"pepper", 100)
    keys = [_native.generate_key() for _ in range(4)]
    owners = [(10, 100), (10, 200), (20, 100), (30, 300)]
    for i, (key, (user, ws)) in enumerate(zip(keys, owners, strict=True)):
        key_hash, _ = cache.lookup(key, 0, 0)
        cache.insert(key_hash, i, f"v{i}", 0, user_id=user, workspace_id=ws)
    assert len(cache) == 4
    assert cache.evict_workspace(100) == 2
    assert cache.evict_user(10) == 1
    assert cache.evict_key(3) and not cache.evict_key(3)
    assert len(cache) == 0 and cache.stats() == (0, 4)


def synced(node: Invalidator) -> Invalidator:
    node.sync()
    return node


async def _until(predicate: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


@pytest.mark.redis
async def test_targets_reach_another_node_and_a_reconnect_flushes(
    tmp_path: Path,
    private_redis: PrivateRedis,  # noqa: F811 - the imported fixture
) -> None:
    url = f"redis://127.0.0.1:{private_redis.port}/0"
    clients = [aioredis.from_url(url, socket_timeout=2) for _ in range(2)]
    node_a = Invalidator(_native.SharedState(tmp_path / "a.shm"), clients[0], "t:")
    node_b = Invalidator(_native.SharedState(tmp_path / "b.shm"), clients[1], "t:")
    got: list[int] = []
    node_b.subscribe("key", got.append)
    node_b.sync()
    listener = asyncio.create_task(node_b.listen())
    try:
        await _until(lambda: synced(node_b).epoch == 1)  # subscribed: one flush
        await node_a.changed(("key", 7))
        await _until(lambda: synced(node_b) and got == [7])
        assert node_b.epoch == 1  # a target, not a flush
        private_redis.stop()
        private_redis.start()  # the listener reconnects: it may have missed changes
        await _until(lambda: synced(node_b).epoch == 2)
        await node_a.changed()
        await _until(lambda: synced(node_b).epoch == 3)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        for client in clients:
            await client.aclose()


async def test_redis_mode_sees_targets_from_its_own_host(
    mode_settings: Settings, clock: ManualClock, tmp_path: Path
) -> None:
    """With or without Redis, a second runtime on the same file applies the targets."""
    first, _ = await open_app(mode_settings, clock)
    second, _ = await open_app(replace(mode_settings), clock)
    try:
        got: list[int] = []
        second.invalidator.subscribe("workspace", got.append)
        second.invalidator.sync()
        await first.invalidator.changed(("workspace", 41))
        second.invalidator.sync()
        assert got == [41] and second.invalidator.epoch == 0
    finally:
        await first.close()
        await second.close()
