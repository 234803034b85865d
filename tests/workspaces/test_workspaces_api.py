"""Workspaces endpoints, on both storage backends, through the real app."""

from __future__ import annotations

from typing import Any

from conftest import Api

WS = "/api/v1/workspaces"


async def make_key(api: Api, scopes: list[str], **extra: Any) -> str:
    created = await api.post("/api/v1/api-keys", json={"name": "k", "scopes": scopes, **extra})
    assert created.status == 201, created.json
    return str(created.json["data"]["key"])


async def test_get_workspace_documented_shape(api: Api, boot: dict[str, Any]) -> None:
    ws_id = boot["workspace"]["id"]
    got = await api.get(f"{WS}/{ws_id}")
    assert got.status == 200
    data = got.json["data"]
    assert set(data) == {"id", "name", "slug", "tier", "settings", "created_at", "updated_at"}
    assert data["name"] == "Acme Corporation"
    assert data["slug"] == "acme-corporation"
    assert data["settings"] == {"timezone": "UTC", "locale": "en_GB"}
    assert data["created_at"].endswith("Z") and "T" in data["created_at"]
    assert got.header(
        "X-Request-ID",
    ).startswith("req_")


async def test_create_workspace_201_and_slug_generation(api: Api) -> None:
    first = await api.post(WS, json={"name": "New Workspace", "tier": "pro"})
    assert first.status == 201
    assert first.json["message"] == "Workspace created successfully."
    assert set(first.json["data"]) == {"id", "name", "slug", "tier", "created_at"}
    assert first.json["data"]["slug"] == "new-workspace"
    assert first.json["data"]["tier"] == "pro"
    second = await api.post(WS, json={"name": "New  Workspace!"})
    assert second.json["data"]["slug"] == "new-workspace-2"
    assert second.json["data"]["tier"] == "free"
    explicit = await api.post(WS, json={"name": "X", "slug": "my-slug"})
    assert explicit.json["data"]["slug"] == "my-slug"


async def test_create_workspace_validation(api: Api) -> None:
    cases: list[tuple[Any, str]] = [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 256}, "name"),
        ({"name": 42}, "name"),
        ({"name": "ok", "tier": "platinum"}, "tier"),
        ({"name": "ok", "slug": "Bad Slug"}, "slug"),
        ({"name": "ok", "unknown": 1}, "unknown"),
    ]
    for body, field in cases:
        result = await api.post(WS, json=body)
        assert result.status == 422, (body, result.json)
        assert result.json["error"] == "validation_failed"
        assert result.json["message"] == "The given data was invalid."
        assert field in result.json["errors"], (body, result.json)
    taken = await api.post(WS, json={"name": "ok", "slug": "acme-corporation"})
    assert taken.status == 422 and taken.json["errors"]["slug"] == [
        "The slug has already been taken."
    ]
    listed = await api.get(WS)
    assert listed.json["meta"]["total"] == 1  # nothing was created by bad input


async def test_malformed_and_wrong_type_bodies(api: Api) -> None:
    bad_json = await api.post(WS, body=b"{not json", headers={"Content-Type": "application/json"})
    assert bad_json.status == 422 and "body" in bad_json.json["errors"]
    array = await api.post(WS, json=[1, 2])
    assert array.status == 422 and "body" in array.json["errors"]
    wrong_type = await api.post(
        WS, body=b"name=x", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert wrong_type.status == 415 and wrong_type.json["error"] == "unsupported_media_type"
    huge = await api.post(WS, json={"name": "x" * 2_000_000})
    assert huge.status == 413 and huge.json["error"] == "payload_too_large"


async def test_tier_may_not_exceed_callers_tier(api: Api, runtime: Any) -> None:
    free = await api.post(WS, json={"name": "Small", "tier": "free"})
    free_id = free.json["data"]["id"]
    key = await make_key(api, ["*"])
    # Acting in the free workspace, a new workspace cannot be made enterprise.
    refused = await api.post(
        WS,
        key=key,
        json={"name": "Big", "tier": "enterprise"},
        headers={"X-Workspace-ID": str(free_id)},
    )
    assert refused.status == 422 and "tier" in refused.json["errors"]


async def test_update_merges_settings(api: Api, boot: dict[str, Any]) -> None:
    ws_id = boot["workspace"]["id"]
    updated = await api.patch(
        f"{WS}/{ws_id}",
        json={"name": "Updated Name", "settings": {"timezone": "Europe/London", "theme": "dark"}},
    )
    assert updated.status == 200
    assert updated.json["message"] == "Workspace updated successfully."
    assert updated.json["data"]["name"] == "Updated Name"
    assert updated.json["data"]["settings"] == {
        "timezone": "Europe/London",
        "locale": "en_GB",
        "theme": "dark",
    }
    removed = await api.patch(f"{WS}/{ws_id}", json={"settings": {"theme": None}})
    assert removed.json["data"]["settings"] == {"timezone": "Europe/London", "locale": "en_GB"}
    again = await api.get(f"{WS}/{ws_id}")
    assert again.json["data"]["name"] == "Updated Name"
    bad = await api.patch(f"{WS}/{ws_id}", json={"settings": "dark"})
    assert bad.status == 422 and "settings" in bad.json["errors"]
    empty_name = await api.patch(f"{WS}/{ws_id}", json={"name": ""})
    assert empty_name.status == 422


async def test_delete_workspace(api: Api) -> None:
    created = await api.post(WS, json={"name": "Temp"})
    ws_id = created.json["data"]["id"]
    deleted = await api.delete(f"{WS}/{ws_id}")
    assert deleted.status == 204 and deleted.json is None
    assert (await api.get(f"{WS}/{ws_id}")).status == 404
    assert (await api.delete(f"{WS}/{ws_id}")).status == 404


async def test_scopes_enforced_with_documented_403(api: Api, boot: dict[str, Any]) -> None:
    ws_id = boot["workspace"]["id"]
    reader = await make_key(api, ["workspaces:read"])
    assert (await api.get(f"{WS}/{ws_id}", key=reader)).status == 200
    denied = await api.patch(f"{WS}/{ws_id}", key=reader, json={"name": "x"})
    assert denied.status == 403
    assert denied.json == {
        "error": "access_denied",
        "message": "Insufficient permissions. Required scope: workspaces:write",
    }
    denied_delete = await api.delete(f"{WS}/{ws_id}", key=reader)
    assert denied_delete.json["message"].endswith("Required scope: workspaces:delete")
    bare = await make_key(api, ["read"])
    assert (await api.get(f"{WS}/{ws_id}", key=bare)).status == 200
    assert (await api.post(WS, key=bare, json={"name": "n"})).status == 403
    star_action = await make_key(api, ["*:write"])
    assert (await api.post(WS, key=star_action, json={"name": "n"})).status == 201
    assert (await api.get(WS, key=star_action)).status == 403


async def test_401_shapes(api: Api, boot: dict[str, Any]) -> None:
    ws = f"{WS}/{boot['workspace']['id']}"
    expected = {"error": "unauthorized", "message": "Invalid or missing API key."}
    for headers in (
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer sk_live_" + "A" * 38},
    ):
        result = await api.get(ws, headers=headers, auth=False)
        assert result.status == 401 and result.json == expected, headers
    tampered = boot["api_key"]["key"][:-1] + ("A" if boot["api_key"]["key"][-1] != "A" else "B")
    assert (await api.get(ws, key=tampered)).status == 401


async def test_unknown_route_and_method(api: Api) -> None:
    missing = await api.get("/api/v1/nothing-here")
    assert missing.status == 404 and missing.json == {
        "error": "not_found",
        "message": "Resource not found.",
    }
    not_int = await api.get(f"{WS}/abc")
    assert not_int.status == 404
    method = await api.request("PUT", WS, json={})
    assert method.status == 405 and method.json["error"] == "method_not_allowed"
    assert missing.header("X-Request-ID")


async def test_request_id_echo(api: Api, boot: dict[str, Any]) -> None:
    echoed = await api.get(f"{WS}/{boot['workspace']['id']}", headers={"X-Request-ID": "abc-123"})
    assert echoed.header("X-Request-ID") == "abc-123"
    junk = await api.get(
        f"{WS}/{boot['workspace']['id']}", headers={"X-Request-ID": "bad id\u00e9" * 20}
    )
    assert junk.header("X-Request-ID").startswith("req_")


async def test_probing_an_id_before_it_exists_does_not_hide_it(
    api: Api, boot: dict[str, Any]
) -> None:
    next_id = boot["workspace"]["id"] + 1
    assert (await api.get(f"{WS}/{next_id}")).status == 404  # remembered as "not a member"
    created = await api.post(WS, json={"name": "Later"})
    assert created.json["data"]["id"] == next_id
    assert (await api.get(f"{WS}/{next_id}")).status == 200
