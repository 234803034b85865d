"""API Keys endpoints: documented shapes, escalation rules, rotation, revocation, expiry."""

from __future__ import annotations

import re
from typing import Any

from conftest import Api
from core_api.clock import ManualClock
from core_api.runtime import Runtime

KEYS = "/api/v1/api-keys"
KEY_FORMAT = re.compile(r"^sk_live_[0-9A-Za-z]{38}$")


async def test_create_returns_key_once(api: Api, boot: dict[str, Any]) -> None:
    created = await api.post(
        KEYS,
        json={
            "name": "Mobile App Key",
            "scopes": ["posts:read", "users:read"],
            "rate_limit_tier": "pro",
            "expires_at": "2027-01-01T00:00:00Z",
        },
    )
    assert created.status == 201
    assert created.json["message"] == "API key created successfully."
    data = created.json["data"]
    assert KEY_FORMAT.match(data["key"])
    assert data["scopes"] == ["posts:read", "users:read"]
    assert data["rate_limit_tier"] == "pro"
    assert data["expires_at"] == "2027-01-01T00:00:00Z"
    assert {"id", "name", "key", "scopes", "rate_limit_tier", "expires_at", "created_at"} <= set(
        data
    )
    got = await api.get(f"{KEYS}/{data['id']}")
    assert got.status == 200
    assert "key" not in got.json["data"]
    assert got.json["data"]["prefix"] == data["key"][:11]
    assert {
        "id",
        "name",
        "prefix",
        "scopes",
        "rate_limit_tier",
        "last_used_at",
        "expires_at",
        "created_at",
    } <= set(got.json["data"])
    listed = await api.get(KEYS)
    assert all("key" not in item for item in listed.json["data"])
    assert len(listed.json["data"]) == 2


async def test_defaults(api: Api) -> None:
    created = await api.post(KEYS, json={"name": "defaults"})
    assert created.json["data"]["scopes"] == ["read", "write"]
    assert created.json["data"]["rate_limit_tier"] == "enterprise"  # from the workspace
    assert created.json["data"]["expires_at"] is None


async def test_validation_errors_change_nothing(api: Api) -> None:
    cases: list[tuple[Any, str]] = [
        ({}, "name"),
        ({"name": "x" * 256}, "name"),
        ({"name": "k", "scopes": "read"}, "scopes"),
        ({"name": "k", "scopes": ["posts:publish"]}, "scopes"),
        ({"name": "k", "scopes": ["Posts:read"]}, "scopes"),
        ({"name": "k", "rate_limit_tier": "gold"}, "rate_limit_tier"),
        ({"name": "k", "expires_at": "tomorrow"}, "expires_at"),
        ({"name": "k", "expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "k", "extra": True}, "extra"),
    ]
    for body, field in cases:
        result = await api.post(KEYS, json=body)
        assert result.status == 422, (body, result.json)
        assert field in result.json["errors"], (body, result.json)
    assert (await api.get(KEYS)).json["meta"]["total"] == 1


async def test_no_scope_escalation(api: Api) -> None:
    limited = (
        await api.post(KEYS, json={"name": "l", "scopes": ["api-keys:write", "posts:read"]})
    ).json["data"]["key"]
    ok = await api.post(KEYS, key=limited, json={"name": "sub", "scopes": ["posts:read"]})
    assert ok.status == 201
    for scopes in (["posts:write"], ["*"], ["posts:*"], ["read"], ["api-keys:*"], ["users:read"]):
        refused = await api.post(KEYS, key=limited, json={"name": "sub", "scopes": scopes})
        assert refused.status == 422, scopes
        assert "broader" in refused.json["errors"]["scopes"][0]
    # The default scopes (read, write) are broader too.
    assert (await api.post(KEYS, key=limited, json={"name": "sub"})).status == 422
    wide = (await api.post(KEYS, json={"name": "w", "scopes": ["posts:*", "api-keys:write"]})).json[
        "data"
    ]["key"]
    assert (
        await api.post(KEYS, key=wide, json={"name": "s", "scopes": ["posts:read", "posts:delete"]})
    ).status == 201
    assert (await api.post(KEYS, key=wide, json={"name": "s", "scopes": ["*:read"]})).status == 422


async def test_key_tier_cannot_exceed_workspace(api: Api) -> None:
    ws = (await api.post("/api/v1/workspaces", json={"name": "Small", "tier": "starter"})).json[
        "data"
    ]
    refused = await api.post(
        KEYS,
        json={"name": "k", "rate_limit_tier": "pro"},
        headers={"X-Workspace-ID": str(ws["id"])},
    )
    assert refused.status == 422 and "rate_limit_tier" in refused.json["errors"]
    ok = await api.post(
        KEYS,
        json={"name": "k", "rate_limit_tier": "free"},
        headers={"X-Workspace-ID": str(ws["id"])},
    )
    assert ok.status == 201


async def test_revoked_key_fails_on_next_request(api: Api, boot: dict[str, Any]) -> None:
    created = (await api.post(KEYS, json={"name": "doomed", "scopes": ["*"]})).json["data"]
    ws = f"/api/v1/workspaces/{boot['workspace']['id']}"
    assert (await api.get(ws, key=created["key"])).status == 200  # now cached
    assert (await api.delete(f"{KEYS}/{created['id']}")).status == 204
    assert (await api.get(ws, key=created["key"])).status == 401
    assert (await api.get(f"{KEYS}/{created['id']}")).status == 404
    assert (await api.delete(f"{KEYS}/{created['id']}")).status == 404


async def test_rotation_grace_period(api: Api, boot: dict[str, Any], clock: ManualClock) -> None:
    old = (
        await api.post(
            KEYS, json={"name": "Mobile App Key", "scopes": ["workspaces:read", "api-keys:read"]}
        )
    ).json["data"]
    ws = f"/api/v1/workspaces/{boot['workspace']['id']}"
    assert (await api.get(ws, key=old["key"])).status == 200
    rotated = await api.post(f"{KEYS}/{old['id']}/rotate", json={"grace_period_hours": 2})
    assert rotated.status == 200
    assert rotated.json["message"] == "API key rotated successfully."
    new = rotated.json["data"]
    assert new["id"] != old["id"] and new["key"] != old["key"]
    assert new["scopes"] == ["workspaces:read", "api-keys:read"]
    assert new["grace_period_ends_at"] == "2026-01-01T02:00:00Z"
    assert (await api.get(ws, key=old["key"])).status == 200
    assert (await api.get(ws, key=new["key"])).status == 200
    clock.advance(2 * 3600 - 1)
    assert (await api.get(ws, key=old["key"])).status == 200
    clock.advance(1)
    assert (await api.get(ws, key=old["key"])).status == 401
    assert (await api.get(ws, key=new["key"])).status == 200
    again = await api.post(f"{KEYS}/{old['id']}/rotate")
    assert again.status == 422


async def test_rotation_default_grace_and_validation(api: Api) -> None:
    old = (await api.post(KEYS, json={"name": "k"})).json["data"]
    bad = await api.post(f"{KEYS}/{old['id']}/rotate", json={"grace_period_hours": "soon"})
    assert bad.status == 422 and "grace_period_hours" in bad.json["errors"]
    negative = await api.post(f"{KEYS}/{old['id']}/rotate", json={"grace_period_hours": -1})
    assert negative.status == 422
    rotated = await api.post(f"{KEYS}/{old['id']}/rotate")
    assert rotated.status == 200
    assert rotated.json["data"]["grace_period_ends_at"] == "2026-01-02T00:00:00Z"
    assert (await api.post(f"{KEYS}/999999/rotate")).status == 404


async def test_expired_key_fails(api: Api, boot: dict[str, Any], clock: ManualClock) -> None:
    created = (
        await api.post(
            KEYS, json={"name": "short", "scopes": ["*"], "expires_at": "2026-01-01T01:00:00Z"}
        )
    ).json["data"]
    ws = f"/api/v1/workspaces/{boot['workspace']['id']}"
    assert (await api.get(ws, key=created["key"])).status == 200
    clock.advance(3600)
    assert (await api.get(ws, key=created["key"])).status == 401
    expired = await api.get(KEYS, params={"status": "expired"})
    assert [k["id"] for k in expired.json["data"]] == [created["id"]]


async def test_last_used_at_is_batched(
    api: Api, runtime: Runtime, boot: dict[str, Any], clock: ManualClock
) -> None:
    key_id = boot["api_key"]["id"]
    before = await api.get(f"{KEYS}/{key_id}")
    assert before.json["data"]["last_used_at"] is None
    clock.advance(60)
    await api.get(f"{KEYS}/{key_id}")
    assert await runtime.auth.flush_last_used() >= 1
    after = await api.get(f"{KEYS}/{key_id}")
    assert after.json["data"]["last_used_at"] == "2026-01-01T00:01:00Z"
    assert await runtime.auth.flush_last_used() == 1  # the GET just above
    assert await runtime.auth.flush_last_used() == 0


async def test_other_users_keys_need_manager_role(
    api: Api, runtime: Runtime, boot: dict[str, Any], clock: ManualClock
) -> None:
    from core_api.api_keys.service import bootstrap
    from core_api.workspaces import repo as ws_repo

    other = await bootstrap(
        runtime.db, runtime.keys, runtime.plans, clock, name="Other", tier="pro", email=None
    )
    ws_id = boot["workspace"]["id"]
    await ws_repo.add_member(runtime.db, ws_id, other["user"]["id"], "member", clock.now_ms())
    await runtime.invalidator.changed()
    headers = {"X-Workspace-ID": str(ws_id)}
    visible = await api.get(KEYS, key=other["api_key"]["key"], headers=headers)
    assert visible.status == 200 and visible.json["meta"]["total"] == 1
    owner_key = boot["api_key"]["id"]
    refused = await api.delete(f"{KEYS}/{owner_key}", key=other["api_key"]["key"], headers=headers)
    assert refused.status == 403
    assert (await api.get(f"/api/v1/workspaces/{ws_id}")).status == 200


async def test_concurrent_rotations_make_exactly_one_successor(api: Api) -> None:
    import asyncio

    old = (await api.post(KEYS, json={"name": "contended"})).json["data"]
    results = await asyncio.gather(*(api.post(f"{KEYS}/{old['id']}/rotate") for _ in range(6)))
    assert sorted(r.status for r in results) == [200] + [422] * 5
    listed = await api.get(KEYS, params={"search": "contended"})
    assert listed.json["meta"]["total"] == 2  # the old key (rotating) and one successor
