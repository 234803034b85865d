"""List totals come from a per-process cache invalidated by writes (web/totals.py): they stay
exact after creates and deletes in this process and in another one on the host, and a
cached page reads no COUNT. Pages of ``per_page=1`` keep the total out of the page itself."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from conftest import Api, serving
from core_api.clock import ManualClock
from core_api.config import Settings
from core_api.runtime import Runtime

WORKSPACES = "/api/v1/workspaces"
KEYS = "/api/v1/api-keys"


async def total(api: Api, path: str, **params: str) -> int:
    result = await api.get(path, params={"per_page": "1", **params})
    assert result.status == 200, result.json
    value: int = result.json["meta"]["total"]
    assert result.json["meta"]["last_page"] == max(1, value)
    return value


def count_statements(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every SQL statement the runtime's database runs from now on (the real database)."""
    seen: list[str] = []
    for name in ("fetch_one", "fetch_all"):
        method: Callable[..., Awaitable[Any]] = getattr(runtime.db, name)

        async def spy(sql: str, params: Any = (), _method: Any = method) -> Any:
            seen.append(sql)
            return await _method(sql, params)

        monkeypatch.setattr(runtime.db, name, spy)
    return seen


async def test_totals_exact_after_creates_and_deletes(api: Api) -> None:
    assert await total(api, WORKSPACES) == 1
    created = [
        (await api.post(WORKSPACES, json={"name": f"Team {i}"})).json["data"]["id"]
        for i in range(3)
    ]
    assert await total(api, WORKSPACES) == 4
    assert await total(api, WORKSPACES) == 4  # served from the cache, still exact
    await api.delete(f"{WORKSPACES}/{created[0]}")
    assert await total(api, WORKSPACES) == 3

    assert await total(api, KEYS) == 1
    keys = [(await api.post(KEYS, json={"name": f"k{i}"})).json["data"]["id"] for i in range(2)]
    assert await total(api, KEYS) == 3
    await api.delete(f"{KEYS}/{keys[0]}")
    assert await total(api, KEYS) == 2
    await api.post(f"{KEYS}/{keys[1]}/rotate", json={})  # the successor lists beside it
    assert await total(api, KEYS) == 3
    # Filtered totals are counted, never cached.
    assert await total(api, WORKSPACES, search="team") == 2
    await api.post(WORKSPACES, json={"name": "Team 9"})
    assert await total(api, WORKSPACES, search="team") == 3


async def test_another_process_sees_a_new_row_at_once(
    settings: Settings, clock: ManualClock, boot: dict[str, Any], tmp_path: Path
) -> None:
    """Two runtimes on one database and one shared-memory file, as `serve --workers 2`."""
    key = boot["api_key"]["key"]
    other_settings = replace(settings)  # same database_url and shm_path
    async with (
        serving(settings, clock, key) as (_, first),
        serving(other_settings, clock, key) as (_, second),
    ):
        assert await total(first, WORKSPACES) == 1
        assert await total(first, KEYS) == 1
        made = (await second.post(WORKSPACES, json={"name": "Elsewhere"})).json["data"]["id"]
        assert await total(first, WORKSPACES) == 2
        extra = (await second.post(KEYS, json={"name": "elsewhere"})).json["data"]["id"]
        assert await total(first, KEYS) == 2
        await second.delete(f"{KEYS}/{extra}")
        assert await total(first, KEYS) == 1
        await second.delete(f"{WORKSPACES}/{made}")
        assert await total(first, WORKSPACES) == 1
        # And the other way round.
        await first.post(WORKSPACES, json={"name": "Back"})
        assert await total(second, WORKSPACES) == 2


async def test_a_cached_page_reads_no_count(
    api: Api, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(3):
        await api.post(WORKSPACES, json={"name": f"W{i}"})
    await total(api, WORKSPACES)  # fills the cache
    seen = count_statements(runtime, monkeypatch)
    assert await total(api, WORKSPACES) == 4
    # A page shorter than per_page gives its own total.
    assert (await api.get(KEYS)).json["meta"]["total"] == 1
    assert [s for s in seen if "COUNT(" in s.upper()] == []
    await api.post(WORKSPACES, json={"name": "W9"})
    assert await total(api, WORKSPACES) == 5
    # The write dropped the cached total: read again once, from the maintained count.
    assert [s for s in seen if "COUNT(" in s.upper()] == []
    assert len([s for s in seen if "workspace_member_counts" in s]) == 1


async def test_a_count_overtaken_by_a_write_is_not_kept(runtime: Runtime, api: Api) -> None:
    totals = runtime.workspaces.totals
    user_id = 42
    await api.get(WORKSPACES)  # a request syncs this process with the host first

    async def stale_count() -> int:
        # A write to this scope commits while the count is in flight.
        await runtime.invalidator.changed(("user", user_id))
        return 7

    assert await totals.total("workspaces", user_id, stale_count) == 7
    assert len(totals) == 0  # not cached: the next read counts again

    async def fresh_count() -> int:
        return 8

    assert await totals.total("workspaces", user_id, fresh_count) == 8
    assert await totals.total("workspaces", user_id, stale_count) == 8  # cached now
    await runtime.invalidator.changed()  # a full flush empties it
    assert len(totals) == 0


async def test_workspace_includes_are_not_n_plus_one(
    api: Api, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(6):
        await api.post(WORKSPACES, json={"name": f"I{i}"})
    params = {"include": "owner,members", "per_page": "2"}
    await api.get(WORKSPACES)  # warms authentication, not these pages
    seen = count_statements(runtime, monkeypatch)
    small = await api.get(WORKSPACES, params=params)
    few = len(seen)
    seen.clear()
    large = await api.get(WORKSPACES, params={**params, "per_page": "7"})
    assert len(small.json["data"]) == 2 and len(large.json["data"]) == 7
    assert all(item["members"] and item["owner"] for item in large.json["data"])
    assert len(seen) <= few  # one query per include, whatever the page size
