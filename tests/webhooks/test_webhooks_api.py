"""The webhook endpoints API: CRUD and its field rules, the per-tier cap (exact under
concurrency), secret rotation, the event-type catalogue and POST /api/v1/events."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hooks import settings  # noqa: F401 - fixture: loopback receivers allowed

from conftest import Api
from core_api.api_keys.service import bootstrap
from core_api.clock import ManualClock
from core_api.runtime import Runtime

HOOKS = "/api/v1/webhooks"


async def create(api: Api, url: str = "http://127.0.0.1:9/hook", **body: Any) -> Any:
    got = await api.post(HOOKS, json={"url": url, "events": ["post.created"], **body})
    assert got.status == 201, got.json
    return got.json["data"]


async def test_create_get_list_update_delete(api: Api) -> None:
    created = await api.post(
        HOOKS, json={"url": "http://127.0.0.1:9/a", "events": ["post.created", "post.updated"]}
    )
    assert created.status == 201
    assert created.json["message"] == "Webhook endpoint created successfully."
    data = created.json["data"]
    assert set(data) == {"id", "url", "events", "secret", "is_active", "created_at"}
    assert data["secret"].startswith("whsec_") and data["is_active"] is True
    assert data["events"] == ["post.created", "post.updated"]

    got = await api.get(f"{HOOKS}/{data['id']}")
    assert got.status == 200
    item = got.json["data"]
    assert "secret" not in item and "secret_sealed" not in item
    assert item["success_count"] == 0 and item["failure_count"] == 0
    assert item["consecutive_failures"] == 0 and item["last_delivery_at"] is None

    second = await create(api, "http://127.0.0.1:9/b", events=["*"])
    listed = await api.get(HOOKS)
    assert [w["id"] for w in listed.json["data"]] == [data["id"], second["id"]]
    assert listed.json["meta"]["total"] == 2
    searched = await api.get(HOOKS, params={"search": "/B"})
    assert [w["id"] for w in searched.json["data"]] == [second["id"]]

    patched = await api.patch(
        f"{HOOKS}/{data['id']}", json={"events": ["post.*"], "is_active": False}
    )
    assert patched.status == 200, patched.json
    assert patched.json["data"]["events"] == ["post.*"]
    assert patched.json["data"]["is_active"] is False
    inactive = await api.get(HOOKS, params={"status": "inactive"})
    assert [w["id"] for w in inactive.json["data"]] == [data["id"]]
    active = await api.get(HOOKS, params={"status": "active"})
    assert [w["id"] for w in active.json["data"]] == [second["id"]]

    assert (await api.delete(f"{HOOKS}/{data['id']}")).status == 204
    assert (await api.get(f"{HOOKS}/{data['id']}")).status == 404
    assert (await api.delete(f"{HOOKS}/{data['id']}")).status == 404


async def test_given_secret_is_kept_and_shown_once(api: Api) -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    data = await create(api, secret=secret)
    assert data["secret"] == secret
    assert "secret" not in (await api.get(f"{HOOKS}/{data['id']}")).json["data"]


async def test_secrets_are_sealed_at_rest(api: Api, runtime: Runtime) -> None:
    data = await create(api)
    row = await runtime.db.fetch_one(
        "SELECT secret_sealed FROM webhook_endpoints WHERE id = ?", (data["id"],)
    )
    assert row is not None
    stored = bytes(row["secret_sealed"])
    assert data["secret"].encode() not in stored
    assert data["secret"].removeprefix("whsec_").encode() not in stored


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"events": ["a.b"]}, "url"),
        ({"url": "http://127.0.0.1:9/x"}, "events"),
        ({"url": "http://127.0.0.1:9/x", "events": []}, "events"),
        ({"url": "http://127.0.0.1:9/x", "events": None}, "events"),
        ({"url": None, "events": ["a.b"]}, "url"),
        ({"url": "http://127.0.0.1:9/x", "events": ["Post Created"]}, "events"),
        ({"url": "http://127.0.0.1:9/x", "events": ["post.**"]}, "events"),
        ({"url": "http://127.0.0.1:9/x", "events": ["post.created\n"]}, "events"),
        ({"url": "http://127.0.0.1:9/x", "events": "post.created"}, "events"),
        ({"url": "ftp://example.com/x", "events": ["a.b"]}, "url"),
        ({"url": "http://user:pw@example.com/x", "events": ["a.b"]}, "url"),
        ({"url": "http://127.0.0.1:9/x", "events": ["a.b"], "secret": "nope"}, "secret"),
        ({"url": "http://127.0.0.1:9/x", "events": ["a.b"], "extra": 1}, "extra"),
    ],
)
async def test_create_refuses_bad_fields_and_writes_nothing(
    api: Api, body: dict[str, Any], field: str
) -> None:
    got = await api.post(HOOKS, json=body)
    assert got.status == 422, got.json
    assert got.json["error"] == "validation_failed"
    assert field in got.json["errors"]
    assert (await api.get(HOOKS)).json["meta"]["total"] == 0


async def test_https_required_and_private_targets_refused_by_default(
    api: Api, runtime: Runtime
) -> None:
    strict = runtime.webhooks.settings.__class__(
        **{
            **{f: getattr(runtime.webhooks.settings, f) for f in ("database_url", "secret_key")},
        }
    )
    runtime.webhooks.settings = strict  # the defaults: https only, private networks refused
    for url, words in (
        ("http://example.com/hook", "https"),
        ("https://127.0.0.1/hook", "private"),
        ("https://localhost/hook", "internal"),
        ("https://169.254.169.254/latest", "private"),
        ("https://10.1.2.3/hook", "private"),
        ("https://[fd00::1]/hook", "private"),
    ):
        got = await api.post(HOOKS, json={"url": url, "events": ["a.b"]})
        assert got.status == 422, (url, got.json)
        assert words in got.json["errors"]["url"][0], (url, got.json)


async def test_patch_validates_and_404s(api: Api) -> None:
    data = await create(api)
    bad = await api.patch(f"{HOOKS}/{data['id']}", json={"events": [], "url": "gopher://x"})
    assert bad.status == 422
    assert set(bad.json["errors"]) == {"events", "url"}
    assert (await api.patch(f"{HOOKS}/999999", json={"is_active": True})).status == 404
    typed = await api.patch(f"{HOOKS}/{data['id']}", json={"is_active": "yes"})
    assert typed.status == 422


async def test_tier_cap_is_403_and_exact_under_concurrency(
    api: Api, runtime: Runtime, clock: ManualClock
) -> None:
    free = await bootstrap(
        runtime.db, runtime.keys, runtime.plans, clock, name="Small", tier="free", email=None
    )
    key = free["api_key"]["key"]
    limit = runtime.plans.limit("free", "webhooks")
    assert limit == 2

    async def one(n: int) -> int:
        got = await api.post(
            HOOKS, key=key, json={"url": f"http://127.0.0.1:9/{n}", "events": ["*"]}
        )
        return got.status

    statuses = await asyncio.gather(*(one(n) for n in range(12)))
    assert sorted(statuses) == [201] * limit + [403] * (12 - limit)
    refused = await api.post(HOOKS, key=key, json={"url": "http://127.0.0.1:9/z", "events": ["*"]})
    assert refused.status == 403
    assert refused.json["error"] == "feature_limit_reached"
    assert refused.json["feature"] == "webhooks"
    assert (await api.get(HOOKS, key=key)).json["meta"]["total"] == limit


async def test_an_entitlement_grant_raises_the_cap(
    api: Api, runtime: Runtime, clock: ManualClock
) -> None:
    free = await bootstrap(
        runtime.db, runtime.keys, runtime.plans, clock, name="Granted", tier="free", email=None
    )
    key, workspace_id = free["api_key"]["key"], free["workspace"]["id"]
    await runtime.entitlements.add_override(workspace_id, "webhooks", "grant", 1, None)
    statuses = []
    for n in range(4):
        got = await api.post(
            HOOKS, key=key, json={"url": f"http://127.0.0.1:9/{n}", "events": ["*"]}
        )
        statuses.append(got.status)
    assert statuses == [201, 201, 201, 403]  # the free tier's 2, plus 1 granted


async def test_rotation_returns_a_new_secret_once(api: Api) -> None:
    data = await create(api)
    rotated = await api.post(f"{HOOKS}/{data['id']}/secret/rotate", json={"grace_period_hours": 2})
    assert rotated.status == 200, rotated.json
    assert rotated.json["data"]["secret"].startswith("whsec_")
    assert rotated.json["data"]["secret"] != data["secret"]
    assert rotated.json["data"]["previous_secret_expires_at"] == "2026-01-01T02:00:00Z"
    bad = await api.post(f"{HOOKS}/{data['id']}/secret/rotate", json={"grace_period_hours": -1})
    assert bad.status == 422
    assert (await api.post(f"{HOOKS}/424242/secret/rotate")).status == 404


async def test_event_type_catalogue(api: Api) -> None:
    got = await api.get(f"{HOOKS}/event-types")
    assert got.status == 200
    types = {t["type"]: t for t in got.json["data"]}
    for name in (
        "workspace.created",
        "workspace.updated",
        "workspace.deleted",
        "api_key.created",
        "api_key.rotated",
        "api_key.revoked",
        "webhook.endpoint.disabled",
        "webhook.test",
        "seo.report.created",
        "mcp.tool.executed",
        "entitlement.threshold_reached",
        "entitlement.limit_reached",
    ):
        assert name in types
        assert types[name]["description"]
        assert types[name]["source"] == "core-api"  # reserved: POST /events refuses it
    for forged in ("seo.report.created", "mcp.tool.executed", "entitlement.limit_reached"):
        refused = await api.post("/api/v1/events", json={"type": forged, "data": {}})
        assert refused.status == 422, refused.json


async def test_scopes_are_enforced(api: Api, runtime: Runtime) -> None:
    created = await api.post("/api/v1/api-keys", json={"name": "ro", "scopes": ["webhooks:read"]})
    key = created.json["data"]["key"]
    assert (await api.get(HOOKS, key=key)).status == 200
    denied = await api.post(HOOKS, key=key, json={"url": "http://127.0.0.1:9/", "events": ["*"]})
    assert denied.status == 403 and denied.json["error"] == "access_denied"
    events = await api.post("/api/v1/events", key=key, json={"type": "post.created"})
    assert events.status == 403


async def test_another_tenants_endpoints_and_deliveries_are_404(
    api: Api, runtime: Runtime, clock: ManualClock
) -> None:
    data = await create(api)
    await api.post("/api/v1/events", json={"type": "post.created", "data": {"n": 1}})
    deliveries = await api.get(f"{HOOKS}/{data['id']}/deliveries")
    delivery_id = deliveries.json["data"][0]["id"]
    other = await bootstrap(
        runtime.db, runtime.keys, runtime.plans, clock, name="Other", tier="enterprise", email=None
    )
    key = other["api_key"]["key"]
    base = f"{HOOKS}/{data['id']}"
    for method, path, body in (
        ("GET", base, None),
        ("PATCH", base, {"is_active": False}),
        ("DELETE", base, None),
        ("POST", f"{base}/test", None),
        ("POST", f"{base}/secret/rotate", None),
        ("GET", f"{base}/deliveries", None),
        ("GET", f"{base}/deliveries/{delivery_id}", None),
        ("POST", f"{base}/deliveries/{delivery_id}/retry", None),
    ):
        got = await api.request(method, path, key=key, json=body)
        assert got.status == 404, (method, path, got.json)
        # Naming the victim's workspace in the header changes nothing.
        spoofed = await api.request(
            method,
            path,
            key=key,
            json=body,
            headers={"X-Workspace-ID": str(data["id"])},
        )
        assert spoofed.status == 404
    assert (await api.get(HOOKS, key=key)).json["data"] == []
    # Another tenant's events never reach this workspace's endpoints.
    await api.post("/api/v1/events", key=key, json={"type": "post.created"})
    after = await api.get(f"{base}/deliveries")
    assert after.json["meta"]["total"] == 1
    assert (await api.get(base)).json["data"]["is_active"] is True


async def test_publish_event_fan_out_dedup_and_limits(api: Api, runtime: Runtime) -> None:
    exact = await create(api, "http://127.0.0.1:9/exact", events=["post.created"])
    prefix = await create(api, "http://127.0.0.1:9/prefix", events=["post.*"])
    everything = await create(api, "http://127.0.0.1:9/all", events=["*"])
    other = await create(api, "http://127.0.0.1:9/other", events=["user.created"])
    off = await create(api, "http://127.0.0.1:9/off", events=["*"])
    await api.patch(f"{HOOKS}/{off['id']}", json={"is_active": False})

    got = await api.post("/api/v1/events", json={"type": "post.created", "data": {"id": 1}})
    assert got.status == 202, got.json
    event = got.json["data"]
    assert event["id"].startswith("evt_") and event["deliveries"] == 3
    assert event["type"] == "post.created" and event["duplicate"] is False
    nested = await api.post("/api/v1/events", json={"type": "post.comment.added"})
    assert nested.json["data"]["deliveries"] == 2  # post.* and *
    counts = {}
    for hook in (exact, prefix, everything, other, off):
        listed = await api.get(f"{HOOKS}/{hook['id']}/deliveries")
        counts[hook["url"].rsplit("/", 1)[1]] = listed.json["meta"]["total"]
    assert counts == {"exact": 1, "prefix": 2, "all": 2, "other": 0, "off": 0}
    first = (await api.get(f"{HOOKS}/{exact['id']}/deliveries")).json["data"][0]
    assert first["event_id"] == event["id"] and first["status"] == "pending"
    assert first["attempt"] == 0 and first["event_type"] == "post.created"

    # The publisher's id deduplicates: same event back, nothing queued again.
    once = await api.post("/api/v1/events", json={"type": "post.created", "id": "order-42"})
    again = await api.post("/api/v1/events", json={"type": "post.created", "id": "order-42"})
    assert once.status == 202 and again.status == 200
    assert again.json["data"]["id"] == once.json["data"]["id"]
    assert again.json["data"]["duplicate"] is True and again.json["data"]["deliveries"] == 0
    listed = await api.get(f"{HOOKS}/{exact['id']}/deliveries")
    assert listed.json["meta"]["total"] == 2

    mcp = await api.post("/api/v1/events", json={"type": "mcp.tool.executed"})
    assert mcp.status == 422 and "mcp." in mcp.json["errors"]["type"][0], mcp.json
    for body, field in (
        ({"type": "workspace.deleted"}, "type"),
        ({"type": "api_key.created"}, "type"),
        ({"type": "Post Created"}, "type"),
        ({"type": "post.created", "data": [1]}, "data"),
        ({"type": "post.created", "id": "has space"}, "id"),
        ({"data": {}}, "type"),
        ({"type": "post.created", "data": {"blob": "x" * 70_000}}, "data"),
    ):
        refused = await api.post("/api/v1/events", json=body)
        assert refused.status == 422, (body, refused.json)
        assert field in refused.json["errors"], (body, refused.json)
    assert (await api.get(f"{HOOKS}/{exact['id']}/deliveries")).json["meta"]["total"] == 2


async def test_list_pages_and_date_filters(api: Api, clock: ManualClock) -> None:
    """The usual list conventions on webhook endpoints: pages with ``meta`` totals, and
    ``created_after`` / ``created_before`` (exclusive) on the creation time."""
    made = []
    for name in ("a", "b", "c"):
        made.append(await create(api, f"http://127.0.0.1:9/{name}"))
        clock.advance(86_400)  # a day between creations
    ids = [m["id"] for m in made]
    first = await api.get(HOOKS, params={"per_page": 2})
    assert [w["id"] for w in first.json["data"]] == ids[:2]
    assert (first.json["meta"]["total"], first.json["meta"]["last_page"]) == (3, 2)
    second = await api.get(HOOKS, params={"per_page": 2, "page": 2})
    assert [w["id"] for w in second.json["data"]] == ids[2:]
    middle = made[1]["created_at"]
    after = await api.get(HOOKS, params={"created_after": middle})
    assert [w["id"] for w in after.json["data"]] == ids[2:]
    before = await api.get(HOOKS, params={"created_before": middle})
    assert [w["id"] for w in before.json["data"]] == ids[:1]
    bad = await api.get(HOOKS, params={"created_after": "yesterday"})
    assert bad.status == 422, bad.json
