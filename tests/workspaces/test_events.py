"""Workspace and API-key changes publish their events through the outbox, in the same
transaction as the change: every change queues exactly its delivery, and a change that
fails after publishing leaves neither the change nor the event behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import Api, make_settings
from core_api.config import Settings
from core_api.runtime import Runtime
from core_api.storage import fetch_value

HOOKS = "/api/v1/webhooks"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Loopback plain-HTTP webhook targets allowed (nothing is sent in these tests)."""
    return make_settings(
        database_url, tmp_path, webhook_allow_private_networks=True, webhook_require_https=False
    )


WORKSPACES = "/api/v1/workspaces"
KEYS = "/api/v1/api-keys"


async def subscribe(api: Api, *patterns: str) -> int:
    made = await api.post(HOOKS, json={"url": "http://127.0.0.1:9/hook", "events": list(patterns)})
    assert made.status == 201, made.json
    endpoint_id: int = made.json["data"]["id"]
    return endpoint_id


async def delivered_types(
    api: Api, endpoint_id: int, headers: dict[str, str] | None = None
) -> list[str]:
    listed = await api.get(
        f"{HOOKS}/{endpoint_id}/deliveries", params={"per_page": "100"}, headers=headers
    )
    assert listed.status == 200, listed.json
    return sorted(d["event_type"] for d in listed.json["data"])


async def test_workspace_and_key_changes_are_published(
    api: Api, runtime: Runtime, boot: dict[str, Any]
) -> None:
    home = boot["workspace"]["id"]
    everything = await subscribe(api, "workspace.*", "api_key.*")
    keys_only = await subscribe(api, "api_key.created")

    # Created in the acting workspace (the key's home): the new one has no endpoints yet.
    made = (await api.post(WORKSPACES, json={"name": "Published"})).json["data"]
    # Updated and deleted in the workspace itself: switch into it to subscribe there.
    inside = {"X-Workspace-ID": str(made["id"])}
    there = await api.post(
        HOOKS,
        headers=inside,
        json={"url": "http://127.0.0.1:9/there", "events": ["workspace.*"]},
    )
    assert there.status == 201, there.json
    assert (await api.patch(f"{WORKSPACES}/{made['id']}", json={"name": "Renamed"})).status == 200
    assert (await api.patch(f"{WORKSPACES}/{made['id']}", json={})).status == 200  # no change
    key = (await api.post(KEYS, json={"name": "evented"})).json["data"]
    rotated = await api.post(f"{KEYS}/{key['id']}/rotate", json={})
    assert rotated.status in (200, 201), rotated.json
    assert (await api.delete(f"{KEYS}/{rotated.json['data']['id']}")).status == 204

    assert await delivered_types(api, everything) == [
        "api_key.created",
        "api_key.revoked",
        "api_key.rotated",
        "workspace.created",
    ]
    assert await delivered_types(api, keys_only) == ["api_key.created"]
    there_id = there.json["data"]["id"]
    assert await delivered_types(api, there_id, inside) == ["workspace.updated"]

    payloads = await runtime.db.fetch_all(
        "SELECT type, payload FROM events WHERE workspace_id = ? ORDER BY id", (home,)
    )
    created = next(p for p in payloads if p["type"] == "workspace.created")
    assert '"name":"Published"' in created["payload"]
    secrets = (key["key"], rotated.json["data"]["key"])
    for row in payloads:  # an api_key event never carries the key or its hash
        assert not any(s in row["payload"] for s in secrets) and "hash" not in row["payload"]


async def test_a_failure_after_publishing_rolls_back_change_and_event(
    api: Api, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await subscribe(api, "*")
    import core_api.workspaces.service as service

    real = service.publish

    async def publish_then_fail(*args: Any, **kwargs: Any) -> Any:
        await real(*args, **kwargs)
        raise RuntimeError("injected failure after the event was written")

    monkeypatch.setattr(service, "publish", publish_then_fail)
    failed = await api.post(WORKSPACES, json={"name": "Never"})
    assert failed.status == 500
    assert await fetch_value(runtime.db, "SELECT COUNT(*) FROM events") == 0
    assert await fetch_value(runtime.db, "SELECT COUNT(*) FROM webhook_deliveries") == 0
    names = await runtime.db.fetch_all("SELECT name FROM workspaces")
    assert "Never" not in [r["name"] for r in names]
