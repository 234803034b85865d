"""Strict tenant isolation: another tenant's workspace, keys and anything else are 404."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import Api
from core_api.api_keys.service import bootstrap
from core_api.clock import ManualClock
from core_api.runtime import Runtime
from core_api.workspaces import repo as ws_repo


@pytest.fixture
async def intruder(runtime: Runtime, clock: ManualClock, boot: dict[str, Any]) -> dict[str, Any]:
    return await bootstrap(
        runtime.db,
        runtime.keys,
        runtime.plans,
        clock,
        name="Intruder Inc",
        tier="enterprise",
        email="evil@intruder.test",
    )


async def test_cannot_touch_another_tenants_workspace(
    api: Api, boot: dict[str, Any], intruder: dict[str, Any]
) -> None:
    victim_ws = boot["workspace"]["id"]
    key = intruder["api_key"]["key"]
    for method, body in (("GET", None), ("PATCH", {"name": "pwned"}), ("DELETE", None)):
        result = await api.request(method, f"/api/v1/workspaces/{victim_ws}", key=key, json=body)
        assert result.status == 404, method
        assert result.json == {"error": "not_found", "message": "Resource not found."}
    listed = await api.get("/api/v1/workspaces", key=key)
    assert [w["id"] for w in listed.json["data"]] == [intruder["workspace"]["id"]]
    unchanged = await api.get(f"/api/v1/workspaces/{victim_ws}")
    assert unchanged.json["data"]["name"] == "Acme Corporation"


async def test_cannot_touch_another_tenants_keys(
    api: Api, boot: dict[str, Any], intruder: dict[str, Any]
) -> None:
    victim_key = boot["api_key"]["id"]
    key = intruder["api_key"]["key"]
    assert (await api.get(f"/api/v1/api-keys/{victim_key}", key=key)).status == 404
    assert (await api.post(f"/api/v1/api-keys/{victim_key}/rotate", key=key)).status == 404
    assert (await api.delete(f"/api/v1/api-keys/{victim_key}", key=key)).status == 404
    # Selecting the victim's workspace by header falls back to the intruder's own.
    spoofed = await api.get(
        "/api/v1/api-keys", key=key, headers={"X-Workspace-ID": str(boot["workspace"]["id"])}
    )
    assert [k["id"] for k in spoofed.json["data"]] == [intruder["api_key"]["id"]]
    created = await api.post(
        "/api/v1/api-keys",
        key=key,
        json={"name": "x"},
        headers={"X-Workspace-ID": str(boot["workspace"]["id"])},
    )
    assert created.status == 201
    mine = await api.get("/api/v1/api-keys")
    assert [k["id"] for k in mine.json["data"]] == [victim_key]
    assert (await api.get(f"/api/v1/workspaces/{boot['workspace']['id']}")).status == 200


async def test_membership_grants_access_and_roles_apply(
    api: Api, runtime: Runtime, clock: ManualClock, boot: dict[str, Any], intruder: dict[str, Any]
) -> None:
    ws_id = boot["workspace"]["id"]
    key = intruder["api_key"]["key"]
    assert (
        await api.get(f"/api/v1/workspaces/{ws_id}", key=key)
    ).status == 404  # cached as "not a member"
    await ws_repo.add_member(runtime.db, ws_id, intruder["user"]["id"], "member", clock.now_ms())
    await runtime.invalidator.changed()
    assert (await api.get(f"/api/v1/workspaces/{ws_id}", key=key)).status == 200
    patch = await api.patch(f"/api/v1/workspaces/{ws_id}", key=key, json={"name": "x"})
    assert patch.status == 403 and patch.json["error"] == "access_denied"
    assert (await api.delete(f"/api/v1/workspaces/{ws_id}", key=key)).status == 403


async def test_malformed_workspace_header(api: Api) -> None:
    result = await api.get("/api/v1/api-keys", headers={"X-Workspace-ID": "abc"})
    assert result.status == 422 and "X-Workspace-ID" in result.json["errors"]
