"""Count limits inside the service: creating a workspace, an API key, a webhook endpoint or
a pixel site beyond the tier's count is 403 feature_limit_reached (with the feature and
upgrade_url), exact under concurrency, and an operator's grant raises the count."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from entitlements_support import SUMMARY, published, small_tenant

from conftest import Api
from core_api.clock import ManualClock
from core_api.config import Settings
from support import listen_for

UPGRADE = "https://up.test/go"


def refused(feature: str) -> dict[str, str]:
    return {
        "error": "feature_limit_reached",
        "message": "You have reached your limit for this feature.",
        "feature": feature,
        "upgrade_url": UPGRADE,
    }


async def make_key(api: Api, n: int) -> tuple[int, object]:
    got = await api.post("/api/v1/api-keys", json={"name": f"k{n}", "scopes": ["read"]})
    return got.status, got.json


async def test_api_keys_limit_revocation_frees_a_slot_and_a_grant_adds_one(
    settings: Settings, clock: ManualClock, tmp_path: Path
) -> None:
    async with small_tenant(settings, clock, tmp_path) as (runtime, api, boot):
        ws = boot["workspace"]["id"]
        await listen_for(runtime, ws, "entitlement.*")
        assert (await make_key(api, 1))[0] == 201  # the bootstrap key is the first of 3
        status, body = await make_key(api, 2)
        assert status == 201
        assert await make_key(api, 3) == (403, refused("api_keys"))
        removed = await api.delete(f"/api/v1/api-keys/{body['data']['id']}")  # type: ignore[index]
        assert removed.status == 204
        assert (await make_key(api, 4))[0] == 201
        await runtime.entitlements.add_override(ws, "api_keys", "grant", 1, None)
        assert (await make_key(api, 5))[0] == 201
        assert (await make_key(api, 6))[0] == 403
        items = (await api.get(SUMMARY)).json["data"]["entitlements"]
        assert items["api_keys"] == {"used": 4, "limit": 4, "available": 0, "percentage": 100}
        # A set override (expiring) replaces the tier's 3: the grant still adds one.
        await runtime.entitlements.add_override(
            ws, "api_keys", "set", 5, clock.now_ms() + 3_600_000
        )
        assert (await make_key(api, 7))[0] == 201
        assert (await make_key(api, 8))[0] == 201
        assert (await make_key(api, 9))[0] == 403  # 6 live keys = 5 + 1
        clock.advance(3600)
        assert (await make_key(api, 10))[0] == 403  # back to 3 + 1, with 6 live
        kinds = [(e["type"], e["data"]["feature"]) for e in await published(runtime, ws)]
        assert ("entitlement.threshold_reached", "api_keys") in kinds
        assert ("entitlement.limit_reached", "api_keys") in kinds


async def test_concurrent_key_creation_stops_exactly_at_the_limit(
    settings: Settings, clock: ManualClock, tmp_path: Path
) -> None:
    async with small_tenant(settings, clock, tmp_path) as (runtime, api, boot):
        results = await asyncio.gather(*(make_key(api, n) for n in range(12)))
        assert sorted(status for status, _ in results) == [201, 201] + [403] * 10
        live = await runtime.db.fetch_all(
            "SELECT id FROM api_keys WHERE workspace_id = ? AND revoked_at IS NULL",
            (boot["workspace"]["id"],),
        )
        assert len(live) == 3


async def test_workspaces_limit_counts_the_owners_workspaces(
    settings: Settings, clock: ManualClock, tmp_path: Path
) -> None:
    async with small_tenant(settings, clock, tmp_path) as (_, api, _boot):
        results = await asyncio.gather(
            *(api.post("/api/v1/workspaces", json={"name": f"W{n}"}) for n in range(5))
        )
        assert sorted(r.status for r in results) == [201] + [403] * 4  # 1 + 1 = the limit 2
        assert next(r.json for r in results if r.status == 403) == refused("workspaces")
        items = (await api.get(SUMMARY)).json["data"]["entitlements"]
        assert items["workspaces"]["used"] == 2 and items["workspaces"]["available"] == 0


async def test_webhooks_and_pixel_sites_limits(
    settings: Settings, clock: ManualClock, tmp_path: Path
) -> None:
    settings = replace(settings, webhook_allow_private_networks=True, webhook_require_https=False)
    async with small_tenant(settings, clock, tmp_path) as (_, api, _boot):
        hook = {"url": "http://127.0.0.1:9/hook", "events": ["*"]}
        assert (await api.post("/api/v1/webhooks", json=hook)).status == 201
        got = await api.post("/api/v1/webhooks", json=hook)
        assert (got.status, got.json) == (403, refused("webhooks"))
        sites = "/api/v1/pixel/sites"
        assert (await api.post(sites, json={"domain": "a.example.com"})).status == 201
        got = await api.post(sites, json={"domain": "b.example.com"})
        assert (got.status, got.json) == (403, refused("pixel_sites"))
        items = (await api.get(SUMMARY)).json["data"]["entitlements"]
        assert items["webhooks"]["used"] == 1 and items["pixel_sites"]["used"] == 1
