"""List pages come from a per-process cache (web/pages.py) that targeted invalidation keeps
exact: a page read twice costs one query; a write to the list's scope or to a row on the
page shows on the next read, in this process and in another one on the host; writes for
another tenant leave the page cached; a key page is re-read after the last-used flush interval."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_totals import count_statements

from conftest import Api, serving
from core_api.api_keys.service import RECORD_TTL_MS, bootstrap
from core_api.clock import ManualClock
from core_api.config import Settings
from core_api.runtime import Runtime
from core_api.web.listing import ListQuery

WORKSPACES = "/api/v1/workspaces"
KEYS = "/api/v1/api-keys"


def page_reads(seen: list[str], table: str) -> int:
    return len([s for s in seen if "LIMIT" in s.upper() and f"FROM {table}" in s])


async def names(api: Api, path: str, **params: str) -> list[str]:
    result = await api.get(path, params=params)
    assert result.status == 200, result.json
    return [item["name"] for item in result.json["data"]]


async def test_a_page_read_twice_costs_one_query(
    api: Api, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await api.post(WORKSPACES, json={"name": "Alpha"})
    seen = count_statements(runtime, monkeypatch)
    first = await names(api, WORKSPACES)
    assert await names(api, WORKSPACES) == first
    assert await names(api, KEYS) == await names(api, KEYS)
    assert page_reads(seen, "workspace_members") + page_reads(seen, "workspaces") == 1
    assert page_reads(seen, "api_keys") == 1
    # Another page, another sort, a filter: their own reads (filters are never cached).
    await names(api, WORKSPACES, sort="-name")
    await names(api, WORKSPACES, search="alp")
    await names(api, WORKSPACES, search="alp")
    total = page_reads(seen, "workspace_members") + page_reads(seen, "workspaces")
    assert total == 4


async def test_writes_show_on_the_next_read(api: Api) -> None:
    assert len(await names(api, WORKSPACES)) == 1
    made = (await api.post(WORKSPACES, json={"name": "Beta"})).json["data"]["id"]
    assert "Beta" in await names(api, WORKSPACES)
    await api.patch(f"{WORKSPACES}/{made}", json={"name": "Gamma"})
    assert "Gamma" in await names(api, WORKSPACES)  # a row's content: its id's target
    await api.delete(f"{WORKSPACES}/{made}")
    assert "Gamma" not in await names(api, WORKSPACES)

    key = (await api.post(KEYS, json={"name": "k1"})).json["data"]["id"]
    assert "k1" in await names(api, KEYS)
    await api.post(f"{KEYS}/{key}/rotate", json={})
    listed = (await api.get(KEYS)).json["data"]
    assert [k["grace_period_ends_at"] is not None for k in listed if k["id"] == key] == [True]
    await api.delete(f"{KEYS}/{key}")
    assert key not in [k["id"] for k in (await api.get(KEYS)).json["data"]]


async def test_another_tenants_writes_leave_the_page_cached(
    api: Api, runtime: Runtime, clock: ManualClock
) -> None:
    """Tenant B (its own user, workspace and key) creates workspaces and keys: tenant A's
    cached pages stay; A's own write drops only A's page."""
    boot_b = await bootstrap(
        runtime.db, runtime.keys, runtime.plans, clock, name="B", tier="pro", email=None
    )
    key_b = boot_b["api_key"]["key"]
    await names(api, WORKSPACES)
    await names(api, KEYS)
    pages = runtime.workspaces.pages
    key_pages = runtime.keys.pages
    assert len(pages) == 1 and len(key_pages) == 1
    for i in range(3):
        assert (await api.post(WORKSPACES, key=key_b, json={"name": f"B{i}"})).status == 201
        assert (await api.post(KEYS, key=key_b, json={"name": f"b{i}"})).status == 201
    hits, key_hits = pages.hits, key_pages.hits
    await names(api, WORKSPACES)
    await names(api, KEYS)
    assert pages.hits == hits + 1 and key_pages.hits == key_hits + 1
    await api.post(WORKSPACES, json={"name": "A2"})
    assert "A2" in await names(api, WORKSPACES)


async def test_another_process_sees_changes_at_once(
    settings: Settings, clock: ManualClock, boot: dict[str, Any], tmp_path: Path
) -> None:
    """Two runtimes on one database and one shared-memory file, as `serve --workers 2`."""
    key = boot["api_key"]["key"]
    async with (
        serving(settings, clock, key) as (_, first),
        serving(replace(settings), clock, key) as (_, second),
    ):
        assert len(await names(first, WORKSPACES)) == 1
        made = (await second.post(WORKSPACES, json={"name": "Elsewhere"})).json["data"]["id"]
        assert "Elsewhere" in await names(first, WORKSPACES)
        await second.patch(f"{WORKSPACES}/{made}", json={"name": "Renamed"})
        assert "Renamed" in await names(first, WORKSPACES)
        assert len(await names(first, KEYS)) == 1
        extra = (await second.post(KEYS, json={"name": "elsewhere"})).json["data"]["id"]
        assert "elsewhere" in await names(first, KEYS)
        await second.delete(f"{KEYS}/{extra}")
        assert "elsewhere" not in await names(first, KEYS)


async def test_a_key_page_shows_last_use_within_the_flush_interval(
    api: Api, runtime: Runtime, clock: ManualClock
) -> None:
    """last_used_at is flushed in batches without an invalidation: a cached page of keys
    is re-read after the record TTL, so it lags by no more than that."""
    made = (await api.post(KEYS, json={"name": "used"})).json["data"]
    listed = {k["name"]: k["last_used_at"] for k in (await api.get(KEYS)).json["data"]}
    assert listed["used"] is None
    await api.get(WORKSPACES, key=made["key"])
    await runtime.auth.flush_last_used()
    clock.advance(RECORD_TTL_MS / 1000 + 1)
    listed = {k["name"]: k["last_used_at"] for k in (await api.get(KEYS)).json["data"]}
    assert listed["used"] is not None


async def test_a_page_overtaken_by_a_write_is_not_kept(runtime: Runtime, api: Api) -> None:
    pages = runtime.workspaces.pages
    await api.get(WORKSPACES)  # a request syncs this process with the host first
    pages.clear()
    query = ListQuery()

    async def overtaken() -> list[Any]:
        await runtime.invalidator.changed(("workspace_list", 42))
        return []

    async def quiet() -> list[Any]:
        return []

    assert await pages.load(42, query, 0, overtaken) == []
    assert len(pages) == 0
    assert await pages.load(42, query, 0, quiet) == []
    assert len(pages) == 1
    await runtime.invalidator.changed()  # a full flush empties it
    assert len(pages) == 0
