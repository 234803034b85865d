"""Pixel sites CRUD: shapes, validation, scopes, tenant isolation, list conventions, the
per-tier cap (exact under concurrent creates) and the purge of a deleted site's events."""

from __future__ import annotations

import asyncio
from typing import Any

from pixel_sites_support import SITES, Event, events_table, insert_events, other_tenant

from conftest import Api
from core_api.clock import ManualClock
from core_api.pixel import maintenance
from core_api.runtime import Runtime


async def test_create_get_list_patch_delete(api: Api) -> None:
    created = await api.post(SITES, json={"domain": "Example.COM", "name": "Marketing"})
    assert created.status == 201, created.json
    assert created.json["message"] == "Pixel site created successfully."
    site = created.json["data"]
    assert site["domain"] == "example.com"
    assert site["name"] == "Marketing"
    assert site["enabled"] is True
    assert site["features"] == {"pageviews": True, "events": True, "sessions": True}
    assert site["sample_rate"] == 1.0
    assert site["allowed_origins"] == [] and site["excluded_paths"] == []
    assert site["honor_dnt"] is True
    assert 'data-site="example.com"' in site["snippet"]
    assert "/api/v1/pixel/pixel.js" in site["snippet"]

    got = await api.get(f"{SITES}/{site['id']}")
    assert got.status == 200 and got.json["data"] == site

    listed = await api.get(SITES)
    assert listed.status == 200
    assert [s["id"] for s in listed.json["data"]] == [site["id"]]
    assert listed.json["meta"]["total"] == 1

    patched = await api.patch(
        f"{SITES}/{site['id']}",
        json={
            "enabled": False,
            "features": {"events": False},
            "sample_rate": 0.25,
            "allowed_origins": ["*.example.org", "Shop.Example.net"],
            "honor_dnt": False,
            "excluded_paths": ["/admin", "/preview/*"],
        },
    )
    assert patched.status == 200, patched.json
    data = patched.json["data"]
    assert data["enabled"] is False
    assert data["features"] == {"pageviews": True, "events": False, "sessions": True}
    assert data["sample_rate"] == 0.25
    assert data["allowed_origins"] == ["*.example.org", "shop.example.net"]
    assert data["honor_dnt"] is False
    assert data["excluded_paths"] == ["/admin", "/preview/*"]
    assert data["name"] == "Marketing" and data["domain"] == "example.com"

    assert (await api.delete(f"{SITES}/{site['id']}")).status == 204
    assert (await api.get(f"{SITES}/{site['id']}")).status == 404
    assert (await api.delete(f"{SITES}/{site['id']}")).status == 404
    assert (await api.get(SITES)).json["meta"]["total"] == 0


async def test_name_defaults_to_domain(api: Api) -> None:
    created = await api.post(SITES, json={"domain": "blog.example.com"})
    assert created.json["data"]["name"] == "blog.example.com"


async def test_validation_errors_write_nothing(api: Api) -> None:
    cases: list[tuple[Any, str]] = [
        ({}, "domain"),
        ({"domain": ""}, "domain"),
        ({"domain": "https://example.com"}, "domain"),
        ({"domain": "example.com:8080"}, "domain"),
        ({"domain": "example.com/path"}, "domain"),
        ({"domain": "localhost"}, "domain"),
        ({"domain": "192.168.1.10"}, "domain"),
        ({"domain": "-bad-.com"}, "domain"),
        ({"domain": "exa mple.com"}, "domain"),
        ({"domain": "x" * 300 + ".com"}, "domain"),
        ({"domain": 7}, "domain"),
        ({"domain": "a.com", "name": ""}, "name"),
        ({"domain": "a.com", "enabled": "yes"}, "enabled"),
        ({"domain": "a.com", "features": {"clicks": True}}, "features"),
        ({"domain": "a.com", "features": {"events": 1}}, "features"),
        ({"domain": "a.com", "features": []}, "features"),
        ({"domain": "a.com", "sample_rate": 1.5}, "sample_rate"),
        ({"domain": "a.com", "sample_rate": -0.1}, "sample_rate"),
        ({"domain": "a.com", "sample_rate": "1"}, "sample_rate"),
        ({"domain": "a.com", "sample_rate": True}, "sample_rate"),
        ({"domain": "a.com", "allowed_origins": "b.com"}, "allowed_origins"),
        ({"domain": "a.com", "allowed_origins": ["http://b.com"]}, "allowed_origins"),
        ({"domain": "a.com", "allowed_origins": ["*"]}, "allowed_origins"),
        (
            {"domain": "a.com", "allowed_origins": [f"h{i}.com" for i in range(51)]},
            "allowed_origins",
        ),
        ({"domain": "a.com", "honor_dnt": None, "excluded_paths": ["admin"]}, "excluded_paths"),
        ({"domain": "a.com", "excluded_paths": ["/a b"]}, "excluded_paths"),
        ({"domain": "a.com", "excluded_paths": ["/admin\n"]}, "excluded_paths"),
        ({"domain": "a.com", "excluded_paths": ["/" + "a" * 300]}, "excluded_paths"),
        ({"domain": "a.com", "owner": 1}, "owner"),
    ]
    for body, field in cases:
        result = await api.post(SITES, json=body)
        assert result.status == 422, (body, result.json)
        assert result.json["error"] == "validation_failed"
        assert field in result.json["errors"], (body, result.json)
    assert (
        await api.post(SITES, body=b"{not json", headers={"Content-Type": "application/json"})
    ).status in (400, 422)
    assert (await api.get(SITES)).json["meta"]["total"] == 0


async def test_patch_validation_and_unknown_site(api: Api) -> None:
    site = (await api.post(SITES, json={"domain": "example.com"})).json["data"]
    bad = await api.patch(f"{SITES}/{site['id']}", json={"sample_rate": 2, "domain": "nope"})
    assert bad.status == 422 and {"sample_rate", "domain"} <= set(bad.json["errors"])
    assert (await api.get(f"{SITES}/{site['id']}")).json["data"] == site
    assert (await api.patch(f"{SITES}/999999", json={"name": "x"})).status == 404


async def test_domain_unique_across_workspaces(
    api: Api, runtime: Runtime, clock: ManualClock
) -> None:
    assert (await api.post(SITES, json={"domain": "example.com"})).status == 201
    again = await api.post(SITES, json={"domain": "EXAMPLE.com"})
    assert again.status == 422 and "domain" in again.json["errors"]
    other = await other_tenant(runtime, clock, "enterprise")
    theirs = await api.post(SITES, json={"domain": "example.com"}, key=other["api_key"]["key"])
    assert theirs.status == 422
    second = (await api.post(SITES, json={"domain": "example.org"})).json["data"]
    moved = await api.patch(f"{SITES}/{second['id']}", json={"domain": "example.com"})
    assert moved.status == 422 and "domain" in moved.json["errors"]


async def test_scopes(api: Api) -> None:
    async def key(scopes: list[str]) -> str:
        made = await api.post("/api/v1/api-keys", json={"name": "k", "scopes": scopes})
        return str(made.json["data"]["key"])

    reader, writer = await key(["pixel:read"]), await key(["pixel:write"])
    assert (await api.post(SITES, json={"domain": "a.com"}, key=reader)).status == 403
    created = await api.post(SITES, json={"domain": "a.com"}, key=writer)
    assert created.status == 201
    site_id = created.json["data"]["id"]
    assert (await api.get(SITES, key=writer)).status == 403
    assert (await api.get(SITES, key=reader)).status == 200
    assert (await api.get(f"{SITES}/{site_id}", key=reader)).status == 200
    assert (await api.patch(f"{SITES}/{site_id}", json={"name": "b"}, key=reader)).status == 403
    assert (await api.patch(f"{SITES}/{site_id}", json={"name": "b"}, key=writer)).status == 200
    denied = await api.delete(f"{SITES}/{site_id}", key=writer)
    assert denied.status == 403 and denied.json["error"] == "access_denied"
    assert (await api.get(f"/api/v1/pixel/stats?site_id={site_id}", key=writer)).status == 403
    assert (await api.get(SITES, auth=False)).status == 401


async def test_other_tenant_sees_404(api: Api, runtime: Runtime, clock: ManualClock) -> None:
    site = (await api.post(SITES, json={"domain": "example.com"})).json["data"]
    other = (await other_tenant(runtime, clock))["api_key"]["key"]
    path = f"{SITES}/{site['id']}"
    assert (await api.get(path, key=other)).status == 404
    assert (await api.patch(path, json={"name": "x"}, key=other)).status == 404
    assert (await api.delete(path, key=other)).status == 404
    assert (await api.get(f"/api/v1/pixel/stats?site_id={site['id']}", key=other)).status == 404
    listed = await api.get(SITES, key=other)
    assert listed.json["data"] == [] and listed.json["meta"]["total"] == 0
    assert (await api.get(path)).json["data"]["name"] == "example.com"


async def test_list_conventions(api: Api) -> None:
    for i, name in enumerate(["Charlie", "alpha", "Bravo", "delta"]):
        made = await api.post(SITES, json={"domain": f"site{i}.example.com", "name": name})
        assert made.status == 201
    ids = [s["id"] for s in (await api.get(SITES)).json["data"]]
    await api.patch(f"{SITES}/{ids[3]}", json={"enabled": False})

    by_name = await api.get(SITES, params={"sort": "name"})
    assert [s["name"] for s in by_name.json["data"]] == ["alpha", "Bravo", "Charlie", "delta"]
    desc = await api.get(SITES, params={"sort": "-name"})
    assert desc.json["data"][0]["name"] == "delta"
    page = await api.get(SITES, params={"per_page": "2", "page": "2"})
    assert [s["id"] for s in page.json["data"]] == ids[2:]
    assert page.json["meta"]["total"] == 4
    # The cached total follows creates and deletes.
    fifth = (await api.post(SITES, json={"domain": "site4.example.com", "name": "echo"})).json
    page = await api.get(SITES, params={"per_page": "2", "page": "2"})
    assert page.json["meta"]["total"] == 5
    await api.delete(f"{SITES}/{fifth['data']['id']}")
    page = await api.get(SITES, params={"per_page": "2", "page": "2"})
    assert page.json["meta"]["total"] == 4
    disabled = await api.get(SITES, params={"status": "disabled"})
    assert [s["name"] for s in disabled.json["data"]] == ["delta"]
    enabled = await api.get(SITES, params={"status": "enabled"})
    assert enabled.json["meta"]["total"] == 3
    found = await api.get(SITES, params={"search": "site2"})
    assert [s["name"] for s in found.json["data"]] == ["Bravo"]
    found = await api.get(SITES, params={"search": "CHAR"})
    assert [s["name"] for s in found.json["data"]] == ["Charlie"]
    fields = await api.get(SITES, params={"fields": "id,domain"})
    assert set(fields.json["data"][0]) == {"id", "domain"}
    included = await api.get(SITES, params={"include": "workspace", "fields": "id"})
    assert included.json["data"][0]["workspace"]["name"] == "Acme Corporation"
    for params in ({"sort": "bogus"}, {"status": "on"}, {"per_page": "500"}, {"color": "x"}):
        assert (await api.get(SITES, params=params)).status == 422, params


async def test_tier_cap(api: Api, runtime: Runtime, clock: ManualClock) -> None:
    free = (await other_tenant(runtime, clock, "free"))["api_key"]["key"]
    assert (await api.post(SITES, json={"domain": "one.com"}, key=free)).status == 201
    refused = await api.post(SITES, json={"domain": "two.com"}, key=free)
    assert refused.status == 403
    assert refused.json["error"] == "feature_limit_reached"
    assert refused.json["feature"] == "pixel_sites"
    assert refused.json["upgrade_url"] == runtime.settings.upgrade_url
    listed = await api.get(SITES, key=free)
    assert [s["domain"] for s in listed.json["data"]] == ["one.com"]
    # The cap counts what exists: after a delete there is room again.
    await api.delete(f"{SITES}/{listed.json['data'][0]['id']}", key=free)
    assert (await api.post(SITES, json={"domain": "two.com"}, key=free)).status == 201


async def test_tier_cap_exact_under_concurrency(
    api: Api, runtime: Runtime, clock: ManualClock
) -> None:
    starter = (await other_tenant(runtime, clock, "starter"))["api_key"]["key"]
    limit = runtime.plans.limit("starter", "pixel_sites")
    results = await asyncio.gather(
        *(api.post(SITES, json={"domain": f"s{i}.example.com"}, key=starter) for i in range(12))
    )
    statuses = sorted(r.status for r in results)
    assert statuses.count(201) == limit, statuses
    assert statuses.count(403) == 12 - limit, statuses
    assert (await api.get(SITES, key=starter)).json["meta"]["total"] == limit


async def test_deleted_site_events_are_purged(api: Api, runtime: Runtime) -> None:
    await events_table(runtime)
    keep = (await api.post(SITES, json={"domain": "keep.com"})).json["data"]["id"]
    gone = (await api.post(SITES, json={"domain": "gone.com"})).json["data"]["id"]
    now = runtime.clock.now_ms()
    await insert_events(runtime, keep, [Event(ts=now - i) for i in range(5)])
    await insert_events(runtime, gone, [Event(ts=now - i) for i in range(25)])
    assert (await api.delete(f"{SITES}/{gone}")).status == 204
    queued = await runtime.db.fetch_all("SELECT site_id FROM pixel_site_purges")
    assert [r["site_id"] for r in queued] == [gone]
    old_batch = maintenance.PURGE_BATCH
    maintenance.PURGE_BATCH = 10  # several bounded batches
    try:
        message = await maintenance.purge_deleted_sites(runtime)
    finally:
        maintenance.PURGE_BATCH = old_batch
    assert message == "purged 25 event(s) of deleted pixel sites"
    left = await runtime.db.fetch_all(
        "SELECT site_id, COUNT(*) AS n FROM pixel_events GROUP BY site_id"
    )
    assert [(r["site_id"], r["n"]) for r in left] == [(keep, 5)]
    assert await runtime.db.fetch_all("SELECT site_id FROM pixel_site_purges") == []
    assert await maintenance.purge_deleted_sites(runtime) is None


async def test_workspace_delete_queues_its_sites_for_purge(
    api: Api, boot: dict[str, Any], runtime: Runtime
) -> None:
    site = (await api.post(SITES, json={"domain": "example.com"})).json["data"]["id"]
    await runtime.db.execute("DELETE FROM workspaces WHERE id = ?", (boot["workspace"]["id"],))
    queued = await runtime.db.fetch_all("SELECT site_id FROM pixel_site_purges")
    assert [r["site_id"] for r in queued] == [site]
