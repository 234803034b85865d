"""GET /entitlements/check, POST /entitlements/usage, GET /entitlements/summary on both
backends: every feature kind, hard and soft limits, both documented bodies, event_id
deduplication, overrides and grants with expiry, period rollover on an injected clock,
threshold events, validation and tenant isolation."""

from __future__ import annotations

from pathlib import Path

import pytest
from entitlements_support import (
    CHECK,
    SUMMARY,
    USAGE,
    published,
    small_tenant,
    tenant,
)

from conftest import Api
from core_api.clock import ManualClock
from core_api.config import Settings
from support import listen_for

UPGRADE = "https://up.test/go"
FEB_1 = 1_769_904_000_000  # 2026-02-01T00:00:00Z (the manual clock starts on 2026-01-01)


async def check(api: Api, feature: str, quantity: int | None = None) -> dict[str, object]:
    params = {"feature": feature} | ({} if quantity is None else {"quantity": str(quantity)})
    got = await api.get(CHECK, params=params)
    assert got.status == 200, got.json
    return dict(got.json)


async def use(api: Api, feature: str, quantity: int = 1, **extra: object) -> tuple[int, object]:
    got = await api.post(USAGE, json={"feature": feature, "quantity": quantity, **extra})
    return got.status, got.json


async def test_count_recorded_through_usage_both_bodies_and_hard_limit(
    settings: Settings, clock: ManualClock, tmp_path: Path
) -> None:
    async with small_tenant(settings, clock, tmp_path) as (runtime, api, _boot):
        assert await check(api, "posts") == {
            "allowed": True,
            "feature": "posts",
            "current_usage": 0,
            "limit": 10,
            "available": 10,
        }
        status, body = await use(api, "posts", 4, metadata={"endpoint": "/api/v1/posts"})
        assert (status, body) == (
            200,
            {"recorded": True, "feature": "posts", "current_usage": 4, "limit": 10},
        )
        ledger = await runtime.db.fetch_all(
            "SELECT quantity, used_after, limit_value, metadata, event_id FROM entitlement_events"
        )
        assert ledger == [
            {
                "quantity": 4,
                "used_after": 4,
                "limit_value": 10,
                "metadata": '{"endpoint":"/api/v1/posts"}',
                "event_id": None,
            }
        ]
        assert await check(api, "posts", 7) == {
            "allowed": False,
            "feature": "posts",
            "reason": "LIMIT_EXCEEDED",
            "message": "Post limit exceeded. Used: 4, Limit: 10",
            "current_usage": 4,
            "limit": 10,
            "available": 6,
            "upgrade_url": UPGRADE,
        }
        assert await use(api, "posts", 7) == (
            403,
            {
                "error": "feature_limit_reached",
                "message": "You have reached your limit for this feature.",
                "feature": "posts",
                "upgrade_url": UPGRADE,
            },
        )
        assert (await check(api, "posts"))["current_usage"] == 4  # the refusal wrote nothing
        assert (await use(api, "posts", 6))[0] == 200  # exactly up to the limit
        assert (await use(api, "posts", 1))[0] == 403
        status, body = await use(api, "posts", -3)  # a post deleted: counts release
        assert status == 200 and body["current_usage"] == 7  # type: ignore[index]
        status, body = await use(api, "posts", -100)  # never below zero
        assert status == 200 and body["current_usage"] == 0  # type: ignore[index]


async def test_soft_limit_allows_and_reports_the_overage(
    settings: Settings, clock: ManualClock, tmp_path: Path
) -> None:
    async with small_tenant(settings, clock, tmp_path) as (_, api, _boot):
        status, body = await use(api, "api_calls", 7, event_id="soft-1")
        assert status == 200
        assert body == {
            "recorded": True,
            "feature": "api_calls",
            "current_usage": 7,
            "limit": 5,
            "overage": 2,
        }
        assert await use(api, "api_calls", 7, event_id="soft-1") == (200, body)  # replayed
        got = await check(api, "api_calls")
        assert got["allowed"] is True and got["overage"] == 3 and got["available"] == 0
        summary = (await api.get(SUMMARY)).json["data"]["entitlements"]["api_calls"]
        assert summary == {
            "used": 7,
            "limit": 5,
            "available": 0,
            "percentage": 140,
            "overage": 2,
            "reset_at": "2026-02-01T00:00:00Z",
        }


async def test_quantity_boolean_and_unlimited(
    settings: Settings, clock: ManualClock, tmp_path: Path
) -> None:
    async with small_tenant(settings, clock, tmp_path) as (runtime, api, _boot):
        assert (await use(api, "storage", 600))[0] == 200
        assert (await use(api, "storage", 401))[0] == 403
        assert (await use(api, "storage", -100))[0] == 200
        data = (await api.get(SUMMARY)).json["data"]
        assert data["tier"] == "small"
        assert data["entitlements"]["storage"] == {
            "used": 500,
            "limit": 1000,
            "available": 500,
            "percentage": 50,
            "unit": "bytes",
        }
        assert data["entitlements"]["custom_domains"] == {"enabled": False}
        refused = await check(api, "custom_domains")
        assert refused["allowed"] is False and refused["reason"] == "NOT_INCLUDED"
        assert refused["upgrade_url"] == UPGRADE
        big = await tenant(runtime, clock, "Big", "big")
        api.key = big["api_key"]["key"]
        assert await check(api, "custom_domains") == {
            "allowed": True,
            "feature": "custom_domains",
            "enabled": True,
        }
        assert await check(api, "posts", 10**9) == {
            "allowed": True,
            "feature": "posts",
            "current_usage": 0,
            "limit": None,
            "available": None,
        }
        # mcp_calls on "big" is { limit = 10, enforcement = "soft" }: the tier's own choice.
        status, body = await use(api, "mcp_calls", 12)
        assert status == 200 and body["overage"] == 2  # type: ignore[index]


async def test_summary_lists_every_feature_with_its_shape(
    settings: Settings, clock: ManualClock, tmp_path: Path
) -> None:
    async with small_tenant(settings, clock, tmp_path) as (_, api, boot):
        await use(api, "mcp_calls", 3)
        got = await api.get(SUMMARY)
        assert got.status == 200
        data = got.json["data"]
        assert data["workspace_id"] == boot["workspace"]["id"]
        items = data["entitlements"]
        assert list(items) == [
            "workspaces",
            "api_keys",
            "webhooks",
            "pixel_sites",
            "posts",
            "api_calls",
            "mcp_calls",
            "storage",
            "custom_domains",
        ]
        assert items["mcp_calls"] == {
            "used": 3,
            "limit": 10,
            "available": 7,
            "percentage": 30,
            "reset_at": "2026-02-01T00:00:00Z",
        }
        # Counted by core-api itself: the bootstrap made one workspace and one key.
        assert items["workspaces"]["used"] == 1 and items["api_keys"]["used"] == 1
        assert items["api_keys"]["percentage"] == 33.33


async def test_event_id_counts_once_for_the_whole_period(
    settings: Settings, clock: ManualClock, tmp_path: Path
) -> None:
    async with small_tenant(settings, clock, tmp_path) as (runtime, api, _boot):
        first = await api.post(USAGE, json={"feature": "mcp_calls", "event_id": "evt-1"})
        assert first.status == 200 and first.json["current_usage"] == 1
        await use(api, "mcp_calls", 9)  # now at the limit
        clock.advance(20 * 86_400)  # days later, past any idempotency window, same month
        again = await api.post(USAGE, json={"feature": "mcp_calls", "event_id": "evt-1"})
        assert again.status == 200
        assert again.json == first.json  # the first result, not a 403 nor a second count
        assert again.header("Idempotent-Replayed") == "true"
        assert (await check(api, "mcp_calls"))["current_usage"] == 10
        rows = await runtime.db.fetch_all(
            "SELECT quantity FROM entitlement_events WHERE event_id = ?", ("evt-1",)
        )
        assert len(rows) == 1
        # A refused event is not remembered: it may be retried once there is room.
        assert (await use(api, "mcp_calls", 1, event_id="evt-2"))[0] == 403
        clock.advance((FEB_1 - clock.now_ms()) / 1000)
        status, body = await use(api, "mcp_calls", 1, event_id="evt-2")
        assert status == 200 and body["current_usage"] == 1  # type: ignore[index]
        # A new period is a new dedup window: evt-1 counts again there.
        status, body = await use(api, "mcp_calls", 1, event_id="evt-1")
        assert status == 200 and body["current_usage"] == 2  # type: ignore[index]


async def test_period_rolls_over_at_reset_at_without_a_job(
    settings: Settings, clock: ManualClock, tmp_path: Path
) -> None:
    async with small_tenant(settings, clock, tmp_path) as (runtime, api, _boot):
        assert (await use(api, "mcp_calls", 10))[0] == 200
        assert (await use(api, "mcp_calls", 1))[0] == 403
        got = await check(api, "mcp_calls")
        assert got["reset_at"] == "2026-02-01T00:00:00Z"
        clock.advance((FEB_1 - 1 - clock.now_ms()) / 1000)  # one ms before the reset
        runtime.entitlements.forget()
        assert (await use(api, "mcp_calls", 1))[0] == 403
        clock.advance(0.001)
        status, body = await use(api, "mcp_calls", 1)
        assert status == 200 and body["current_usage"] == 1  # type: ignore[index]
        got = await check(api, "mcp_calls")
        assert got["current_usage"] == 1 and got["reset_at"] == "2026-03-01T00:00:00Z"
        summary = (await api.get(SUMMARY)).json["data"]["entitlements"]["mcp_calls"]
        assert summary["used"] == 1 and summary["reset_at"] == "2026-03-01T00:00:00Z"


async def test_overrides_set_grant_and_expiry(
    settings: Settings, clock: ManualClock, tmp_path: Path
) -> None:
    async with small_tenant(settings, clock, tmp_path) as (runtime, api, boot):
        ws = boot["workspace"]["id"]
        service = runtime.entitlements
        now = clock.now_ms()
        await service.add_override(ws, "posts", "grant", 5, now + 3_600_000, "trial")
        assert (await check(api, "posts"))["limit"] == 15
        assert (await use(api, "posts", 15))[0] == 200
        assert (await use(api, "posts", 1))[0] == 403
        clock.advance(3600)  # the grant expired: back to the tier's 10 (15 used, hard)
        service.forget()
        got = await check(api, "posts")
        assert got["limit"] == 10 and got["allowed"] is False
        await service.add_override(ws, "posts", "set", 100, None, "custom deal")
        await service.add_override(ws, "posts", "grant", 1, None)
        assert (await check(api, "posts"))["limit"] == 101
        await service.add_override(ws, "posts", "set", -1, None)  # the newest set wins
        assert (await check(api, "posts"))["limit"] is None
        await service.add_override(ws, "custom_domains", "set", 1, now + 7_200_000)
        assert (await check(api, "custom_domains"))["allowed"] is True
        assert await service.clear_overrides(ws, "posts") == 4
        assert (await check(api, "posts"))["limit"] == 10
        shown = await service.show(ws)
        assert [o["feature"] for o in shown["overrides"]] == ["custom_domains"]
        assert shown["overrides"][0]["expired"] is False
        clock.advance(3600)
        assert (await service.show(ws))["overrides"][0]["expired"] is True
        service.forget()
        assert (await check(api, "custom_domains"))["allowed"] is False
        with pytest.raises(Exception, match="invalid"):
            await service.add_override(ws, "gadgets", "set", 1, None)


async def test_threshold_events_once_per_period(
    settings: Settings, clock: ManualClock, tmp_path: Path
) -> None:
    async with small_tenant(settings, clock, tmp_path) as (runtime, api, boot):
        ws = boot["workspace"]["id"]
        await listen_for(runtime, ws, "entitlement.*")
        await use(api, "mcp_calls", 7)
        assert await published(runtime, ws) == []
        await use(api, "mcp_calls", 1)  # 8 of 10: 80 %
        await use(api, "mcp_calls", 1)
        await use(api, "mcp_calls", 1)  # 10 of 10: 100 %
        assert (await use(api, "mcp_calls", 1))[0] == 403
        events = await published(runtime, ws)
        assert [(e["type"], e["data"]["threshold"], e["data"]["used"]) for e in events] == [
            ("entitlement.threshold_reached", 80, 8),
            ("entitlement.limit_reached", 100, 10),
        ]
        assert events[0]["data"]["reset_at"] == "2026-02-01T00:00:00Z"
        # posts (no period): down and up again within the month is not a second crossing.
        await use(api, "posts", 8)
        await use(api, "posts", -8)
        await use(api, "posts", 8)
        types = [e["type"] for e in await published(runtime, ws)]
        assert types.count("entitlement.threshold_reached") == 2
        # A hard refusal before 100 % is reached counts as reaching it (once).
        assert (await use(api, "posts", 5))[0] == 403
        assert (await use(api, "posts", 5))[0] == 403
        limit_events = [e for e in await published(runtime, ws) if e["data"]["feature"] == "posts"]
        assert [e["data"]["threshold"] for e in limit_events] == [80, 100]
        # The next period notifies again.
        clock.advance((FEB_1 - clock.now_ms()) / 1000)
        await use(api, "mcp_calls", 8)
        assert len(await published(runtime, ws)) == 5


async def test_validation_errors_write_nothing(
    settings: Settings, clock: ManualClock, tmp_path: Path
) -> None:
    async with small_tenant(settings, clock, tmp_path) as (runtime, api, _boot):
        cases = [
            ({"feature": "gadgets"}, "feature"),
            ({"feature": "custom_domains"}, "feature"),  # boolean: no usage
            ({"feature": "api_keys"}, "feature"),  # counted by core-api
            ({"feature": "mcp_calls", "quantity": 0}, "quantity"),
            ({"feature": "mcp_calls", "quantity": -1}, "quantity"),
            ({"feature": "posts", "quantity": "3"}, "quantity"),
            ({"feature": "posts", "quantity": 1.5}, "quantity"),
            ({"feature": "posts", "metadata": "x"}, "metadata"),
            ({"feature": "posts", "event_id": 7}, "event_id"),
            ({"feature": "posts", "colour": 1}, "colour"),
            ({"quantity": 1}, "feature"),
        ]
        for body, field in cases:
            got = await api.post(USAGE, json=body)
            assert got.status == 422, (body, got.json)
            assert got.json["error"] == "validation_failed"
            assert field in got.json["errors"], (body, got.json)
        for params, field in [
            ({"feature": "gadgets"}, "feature"),
            ({}, "feature"),
            ({"feature": "posts", "quantity": "-1"}, "quantity"),
            ({"feature": "posts", "quantity": "\u0661"}, "quantity"),
            ({"feature": "posts", "quantity": str(10**15 + 1)}, "quantity"),  # the message's bound
            ({"feature": "posts", "quantity": "9" * 16}, "quantity"),
            ({"feature": "posts", "colour": "red"}, "colour"),
        ]:
            got = await api.get(CHECK, params=params)
            assert got.status == 422 and field in got.json["errors"], (params, got.json)
        got = await api.get(CHECK, params={"feature": "posts", "quantity": str(10**15)})
        assert got.status == 200 and got.json["allowed"] is False, got.json
        assert "Valid features: workspaces, api_keys" in str(
            (await api.get(CHECK, params={"feature": "nope"})).json
        )
        assert await runtime.db.fetch_all("SELECT * FROM entitlement_usage") == []
        assert await runtime.db.fetch_all("SELECT * FROM entitlement_events") == []


async def test_scopes_and_tenant_isolation(
    settings: Settings, clock: ManualClock, tmp_path: Path
) -> None:
    async with small_tenant(settings, clock, tmp_path) as (runtime, api, boot):
        other = await tenant(runtime, clock, "Other")
        await use(api, "posts", 3)
        # X-Workspace-ID of a workspace the user is not a member of: its own home is used.
        foreign = {"X-Workspace-ID": str(other["workspace"]["id"])}
        got = await api.get(SUMMARY, headers=foreign)
        assert got.json["data"]["workspace_id"] == boot["workspace"]["id"]
        await api.post(USAGE, json={"feature": "posts", "quantity": 2}, headers=foreign)
        api.key = other["api_key"]["key"]
        assert (await check(api, "posts"))["current_usage"] == 0
        api.key = boot["api_key"]["key"]
        assert (await check(api, "posts"))["current_usage"] == 5
        created = await api.post(
            "/api/v1/api-keys", json={"name": "reader", "scopes": ["entitlements:read"]}
        )
        reader = created.json["data"]["key"]
        assert (await api.get(CHECK, params={"feature": "posts"}, key=reader)).status == 200
        denied = await api.post(USAGE, json={"feature": "posts"}, key=reader)
        assert denied.status == 403 and denied.json["error"] == "access_denied"
        assert (await api.get(SUMMARY, auth=False)).status == 401


async def test_ledger_purge_keeps_rows_while_they_deduplicate(
    settings: Settings, clock: ManualClock, tmp_path: Path
) -> None:
    async with small_tenant(settings, clock, tmp_path) as (runtime, api, _boot):
        await use(api, "mcp_calls", 1, event_id="m1")  # kept until the period ends (Feb 1)
        await use(api, "posts", 1, event_id="p1")  # no period: kept 35 days
        service = runtime.entitlements
        assert await service.purge() == 0
        clock.advance((FEB_1 - clock.now_ms()) / 1000 + 1)
        assert await service.purge() == 1
        # p1 still deduplicates; m1's period is over, so it counts in the new one anyway.
        status, body = await use(api, "posts", 1, event_id="p1")
        assert status == 200 and body["current_usage"] == 1  # type: ignore[index]
        clock.advance(35 * 86_400)
        assert await service.purge() == 1
        rows = await runtime.db.fetch_all("SELECT id FROM entitlement_events")
        assert rows == []
