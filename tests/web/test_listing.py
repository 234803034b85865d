"""List conventions on every list endpoint: pagination, filters, sort, fields, include."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import Api
from core_api.clock import ManualClock

LISTS = ["/api/v1/workspaces", "/api/v1/api-keys"]


async def seed(api: Api, clock: ManualClock, count: int) -> None:
    for i in range(count):
        clock.advance(60)
        await api.post("/api/v1/workspaces", json={"name": f"Team {i:02d}"})
        await api.post("/api/v1/api-keys", json={"name": f"Key {i:02d}"})


@pytest.mark.parametrize("path", LISTS)
async def test_pagination_envelope_and_links(api: Api, clock: ManualClock, path: str) -> None:
    await seed(api, clock, 6)  # 7 of each with the bootstrap ones
    page = await api.get(path, params={"per_page": "3", "page": "2", "sort": "id"})
    assert page.status == 200
    meta, links = page.json["meta"], page.json["links"]
    assert meta == {
        "current_page": 2,
        "from": 4,
        "last_page": 3,
        "per_page": 3,
        "to": 6,
        "total": 7,
    }
    assert links["first"].startswith("http") and "page=1" in links["first"]
    assert (
        "per_page=3" in links["next"] and "sort=id" in links["next"] and "page=3" in links["next"]
    )
    assert "page=1" in links["prev"] and "page=3" in links["last"]
    last = await api.get(path, params={"per_page": "3", "page": "3"})
    assert last.json["links"]["next"] is None and len(last.json["data"]) == 1
    beyond = await api.get(path, params={"page": "9"})
    assert beyond.json["data"] == [] and beyond.json["meta"]["from"] is None
    default = await api.get(path)
    assert default.json["meta"]["per_page"] == 25


@pytest.mark.parametrize("path", LISTS)
async def test_bad_list_parameters_are_422(api: Api, path: str) -> None:
    for params, name in (
        ({"per_page": "101"}, "per_page"),
        ({"per_page": "0"}, "per_page"),
        ({"page": "-1"}, "page"),
        ({"page": "x"}, "page"),
        ({"sort": "secret"}, "sort"),
        ({"fields": "id,key_hash"}, "fields"),
        ({"include": "everything"}, "include"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"colour": "red"}, "colour"),
        ({"status": "weird"}, "status"),
    ):
        result = await api.get(path, params=params)
        if path.endswith("workspaces") and name == "status":
            assert result.status == 422 and "status" in result.json["errors"]
            continue
        assert result.status == 422, (params, result.json)
        assert name in result.json["errors"], (params, result.json)


@pytest.mark.parametrize("path", LISTS)
async def test_sort_fields_search_and_dates(api: Api, clock: ManualClock, path: str) -> None:
    await seed(api, clock, 3)
    desc = await api.get(path, params={"sort": "-created_at,name", "fields": "id,name"})
    names = [item["name"] for item in desc.json["data"]]
    assert names[0].endswith("02") and all(
        set(item) == {"id", "name"} for item in desc.json["data"]
    )
    by_name = await api.get(path, params={"sort": "name"})
    assert [i["name"] for i in by_name.json["data"]] == sorted(
        i["name"] for i in by_name.json["data"]
    )
    found = await api.get(path, params={"search": "01"})
    assert [i["name"] for i in found.json["data"]] == [
        ("Team 01" if "workspaces" in path else "Key 01")
    ]
    after = await api.get(path, params={"created_after": "2026-01-01T00:01:30Z"})
    assert after.json["meta"]["total"] == 2
    before = await api.get(path, params={"created_before": "2026-01-01T00:01:30Z"})
    assert before.json["meta"]["total"] == 2
    updated = await api.get(path, params={"updated_after": "2030-01-01"})
    assert updated.json["meta"]["total"] == 0


async def test_workspace_includes(api: Api, boot: dict[str, Any]) -> None:
    result = await api.get("/api/v1/workspaces", params={"include": "owner,members"})
    item = result.json["data"][0]
    assert item["owner"]["email"] == "owner@acme.test"
    assert item["members"][0]["role"] == "owner"


async def test_api_key_includes_and_status(api: Api, clock: ManualClock) -> None:
    await api.post("/api/v1/api-keys", json={"name": "soon", "expires_at": "2026-01-01T00:10:00Z"})
    result = await api.get("/api/v1/api-keys", params={"include": "workspace,user", "fields": "id"})
    item = result.json["data"][0]
    assert set(item) == {"id", "workspace", "user"}
    assert item["workspace"]["name"] == "Acme Corporation"
    clock.advance(900)
    active = await api.get("/api/v1/api-keys", params={"status": "active"})
    assert active.json["meta"]["total"] == 1
    expired = await api.get("/api/v1/api-keys", params={"status": "expired"})
    assert expired.json["meta"]["total"] == 1


async def test_name_sort_is_case_insensitive_on_both_backends(api: Api) -> None:
    for name in ("beta", "Alpha", "gamma", "Delta"):
        await api.post("/api/v1/workspaces", json={"name": name})
    result = await api.get("/api/v1/workspaces", params={"sort": "name", "fields": "name"})
    assert [w["name"] for w in result.json["data"]] == [
        "Acme Corporation",
        "Alpha",
        "beta",
        "Delta",
        "gamma",
    ]


async def test_links_use_the_public_url_when_configured(
    runtime: Any, settings: Any, boot: dict[str, Any]
) -> None:
    from dataclasses import replace

    import falcon.testing

    from core_api.app import create_app

    app = create_app(replace(settings, public_url="https://api.example.com"), runtime)
    async with falcon.testing.ASGIConductor(app) as conductor:
        result = await Api(conductor, boot["api_key"]["key"]).get(
            "/api/v1/workspaces", params={"per_page": "5"}
        )
    assert (
        result.json["links"]["first"]
        == "https://api.example.com/api/v1/workspaces?per_page=5&page=1"
    )
