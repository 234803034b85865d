"""No key obtains, through any endpoint, a permission it does not hold itself: rotation,
revocation, key creation and workspace tiers. Both backends."""

from __future__ import annotations

from typing import Any

from conftest import Api
from core_api.api_keys.service import bootstrap
from core_api.clock import ManualClock
from core_api.runtime import Runtime
from core_api.workspaces import repo as ws_repo

KEYS = "/api/v1/api-keys"
WORKSPACES = "/api/v1/workspaces"


async def _key(api: Api, scopes: list[str], **extra: Any) -> dict[str, Any]:
    created = await api.post(KEYS, json={"name": "k", "scopes": scopes, **extra})
    assert created.status == 201, created.json
    data: dict[str, Any] = created.json["data"]
    return data


async def _key_rows(runtime: Runtime) -> list[dict[str, Any]]:
    return await runtime.db.fetch_all(
        "SELECT id, rotated_to_id, grace_period_ends_at, revoked_at FROM api_keys ORDER BY id"
    )


async def test_rotate_escalation_refused_and_nothing_committed(
    api: Api, runtime: Runtime, boot: dict[str, Any]
) -> None:
    limited = await _key(api, ["api-keys:write"])
    star = boot["api_key"]
    before = await _key_rows(runtime)
    refused = await api.post(
        f"{KEYS}/{star['id']}/rotate", key=limited["key"], json={"grace_period_hours": 0}
    )
    assert refused.status == 403
    assert refused.json["error"] == "access_denied"
    assert "rotate" in refused.json["message"] and "data" not in refused.json
    assert await _key_rows(runtime) == before  # no successor, the '*' key untouched
    assert (await api.get(f"{WORKSPACES}/{boot['workspace']['id']}")).status == 200
    # Narrower than '*' but still one permission beyond the caller: refused as well.
    reader = await _key(api, ["api-keys:write", "posts:read"])
    writer = await _key(api, ["posts:read", "posts:write"])
    assert (await api.post(f"{KEYS}/{writer['id']}/rotate", key=reader["key"])).status == 403
    assert len(await _key_rows(runtime)) == len(before) + 2


async def test_revoke_of_broader_key_refused(
    api: Api, runtime: Runtime, boot: dict[str, Any]
) -> None:
    deleter = await _key(api, ["api-keys:delete"])
    refused = await api.delete(f"{KEYS}/{boot['api_key']['id']}", key=deleter["key"])
    assert refused.status == 403 and refused.json["error"] == "access_denied"
    assert "revoke" in refused.json["message"]
    assert (await api.get(f"{WORKSPACES}/{boot['workspace']['id']}")).status == 200
    narrow = await _key(api, ["api-keys:delete", "posts:read"])
    wider = await _key(api, ["posts:read", "posts:write"])
    assert (await api.delete(f"{KEYS}/{wider['id']}", key=narrow["key"])).status == 403
    assert all(row["revoked_at"] is None for row in await _key_rows(runtime))


async def test_self_rotate_and_self_revoke_allowed(api: Api, boot: dict[str, Any]) -> None:
    me = await _key(api, ["api-keys:write"])
    rotated = await api.post(f"{KEYS}/{me['id']}/rotate", key=me["key"])
    assert rotated.status == 200
    assert rotated.json["data"]["scopes"] == ["api-keys:write"]
    gone = await _key(api, ["api-keys:delete"])
    assert (await api.delete(f"{KEYS}/{gone['id']}", key=gone["key"])).status == 204
    assert (await api.get(KEYS, key=gone["key"])).status == 401


async def test_covered_keys_can_be_rotated_and_revoked(api: Api) -> None:
    caller = await _key(api, ["api-keys:write", "api-keys:delete", "posts:*"])
    target = await _key(api, ["posts:read", "posts:delete"])
    rotated = await api.post(f"{KEYS}/{target['id']}/rotate", key=caller["key"])
    assert rotated.status == 200
    assert rotated.json["data"]["scopes"] == ["posts:read", "posts:delete"]
    successor = rotated.json["data"]["id"]
    assert (await api.delete(f"{KEYS}/{successor}", key=caller["key"])).status == 204
    assert (await api.get(f"{KEYS}/{successor}")).status == 404


async def test_wildcard_edge_cases(api: Api) -> None:
    # (caller scopes, target scopes, may rotate); rotation is also refused for the
    # wildcard cases the caller only partly holds.
    cases = [
        (["*:write"], ["api-keys:write"], True),
        (["*:write"], ["posts:write", "users:write"], True),
        (["api-keys:write"], ["*:write"], False),
        (["api-keys:write", "posts:*"], ["posts:read", "posts:write", "posts:delete"], True),
        (["api-keys:write", "posts:read", "posts:write"], ["posts:*"], False),
        (["api-keys:*", "posts:*"], ["posts:*", "api-keys:read"], True),
        (["api-keys:write", "posts:*"], ["*:read"], False),
        (["write"], ["posts:write", "api-keys:write"], True),
        (["write"], ["read"], False),
        (["read", "write"], ["posts:read", "write"], True),
        (["read", "write"], ["*"], False),
        (["read", "write", "delete"], ["*"], True),
    ]
    outcomes = []
    for caller_scopes, target_scopes, _ in cases:
        caller = await _key(api, caller_scopes)
        target = await _key(api, target_scopes)
        result = await api.post(f"{KEYS}/{target['id']}/rotate", key=caller["key"])
        outcomes.append(result.status)
    assert outcomes == [200 if allowed else 403 for *_, allowed in cases]


async def test_revoke_wildcards(api: Api) -> None:
    caller = await _key(api, ["*:delete"])
    peer = await _key(api, ["api-keys:delete"])
    broader = await _key(api, ["api-keys:*"])
    assert (await api.delete(f"{KEYS}/{broader['id']}", key=caller["key"])).status == 403
    assert (await api.delete(f"{KEYS}/{peer['id']}", key=caller["key"])).status == 204


async def test_rotate_refused_for_a_higher_tier_key(api: Api, runtime: Runtime) -> None:
    free_star = await _key(api, ["*"], rate_limit_tier="free")
    pro = await _key(api, ["posts:read"], rate_limit_tier="pro")
    inherits = await _key(api, ["posts:read"])  # the workspace's tier: enterprise
    before = await _key_rows(runtime)
    for target in (pro, inherits):
        refused = await api.post(f"{KEYS}/{target['id']}/rotate", key=free_star["key"])
        assert refused.status == 403 and "rate_limit_tier" in refused.json["message"]
    assert await _key_rows(runtime) == before
    same = await _key(api, ["posts:read"], rate_limit_tier="free")
    assert (await api.post(f"{KEYS}/{same['id']}/rotate", key=free_star["key"])).status == 200


async def test_create_never_exceeds_the_callers_tier(api: Api, boot: dict[str, Any]) -> None:
    free_star = await _key(api, ["*"], rate_limit_tier="free")
    refused = await api.post(
        KEYS, key=free_star["key"], json={"name": "up", "rate_limit_tier": "pro"}
    )
    assert refused.status == 422
    assert (
        "tier of the key making the request (free)" in refused.json["errors"]["rate_limit_tier"][0]
    )
    # Omitting the tier would inherit the workspace's (enterprise): pinned to the caller's.
    pinned = await api.post(KEYS, key=free_star["key"], json={"name": "default"})
    assert pinned.status == 201 and pinned.json["data"]["rate_limit_tier"] == "free"
    got = await api.get(f"{KEYS}/{pinned.json['data']['id']}")
    assert got.json["data"]["rate_limit_tier"] == "free"
    # Nor through a workspace: creating one, or raising one, above the caller's tier.
    made = await api.post(
        WORKSPACES, key=free_star["key"], json={"name": "Up", "tier": "enterprise"}
    )
    assert made.status == 422 and "tier" in made.json["errors"]
    small = await api.post(WORKSPACES, key=free_star["key"], json={"name": "Small"})
    assert small.status == 201 and small.json["data"]["tier"] == "free"
    raised = await api.patch(
        f"{WORKSPACES}/{small.json['data']['id']}", key=free_star["key"], json={"tier": "pro"}
    )
    assert raised.status == 422 and "tier" in raised.json["errors"]
    # The '*' bootstrap key (enterprise) still may.
    assert (await api.post(KEYS, json={"name": "e", "rate_limit_tier": "enterprise"})).status == 201


async def test_workspace_selection_grants_no_higher_tier(
    api: Api, runtime: Runtime, boot: dict[str, Any], clock: ManualClock
) -> None:
    """A free-tier user who is a member of an enterprise workspace cannot, by selecting
    it with X-Workspace-ID, mint an enterprise workspace or key."""
    other = await bootstrap(
        runtime.db, runtime.keys, runtime.plans, clock, name="Free", tier="free", email=None
    )
    ws_id = boot["workspace"]["id"]
    await ws_repo.add_member(runtime.db, ws_id, other["user"]["id"], "member", clock.now_ms())
    await runtime.invalidator.changed()
    key, headers = other["api_key"]["key"], {"X-Workspace-ID": str(ws_id)}
    made = await api.post(
        WORKSPACES, key=key, headers=headers, json={"name": "Mine", "tier": "enterprise"}
    )
    assert made.status == 422 and "tier" in made.json["errors"]
    created = await api.post(KEYS, key=key, headers=headers, json={"name": "there"})
    assert created.status == 201 and created.json["data"]["rate_limit_tier"] == "free"


async def test_other_users_keys_cannot_be_rotated_even_by_the_owner(
    api: Api, runtime: Runtime, boot: dict[str, Any], clock: ManualClock
) -> None:
    """Rotation hands the successor's secret to the caller; a key of another user would
    act as that user in all of that user's workspaces. Owners and admins may revoke it."""
    other = await bootstrap(
        runtime.db, runtime.keys, runtime.plans, clock, name="Other", tier="pro", email=None
    )
    ws_id = boot["workspace"]["id"]
    await ws_repo.add_member(runtime.db, ws_id, other["user"]["id"], "member", clock.now_ms())
    await runtime.invalidator.changed()
    headers = {"X-Workspace-ID": str(ws_id)}
    theirs = await api.post(
        KEYS,
        key=other["api_key"]["key"],
        headers=headers,
        json={"name": "theirs", "scopes": ["posts:read"]},
    )
    assert theirs.status == 201
    target = theirs.json["data"]["id"]
    before = await _key_rows(runtime)
    refused = await api.post(f"{KEYS}/{target}/rotate")  # the workspace owner's '*' key
    assert refused.status == 403 and "own user" in refused.json["message"]
    assert await _key_rows(runtime) == before
    assert (await api.delete(f"{KEYS}/{target}")).status == 204


async def test_no_secret_is_ever_readable_back(api: Api, boot: dict[str, Any]) -> None:
    created = await _key(api, ["posts:read"])
    rotated = (await api.post(f"{KEYS}/{created['id']}/rotate")).json["data"]
    secrets = [boot["api_key"]["key"], created["key"], rotated["key"]]
    fields = (
        "id,name,prefix,scopes,rate_limit_tier,last_used_at,expires_at,"
        "grace_period_ends_at,created_at,updated_at"
    )
    reads = [
        await api.get(KEYS),
        await api.get(KEYS, params={"fields": fields, "include": "user,workspace"}),
        await api.get(KEYS, params={"status": "rotating"}),
        *[await api.get(f"{KEYS}/{i}") for i in (created["id"], rotated["id"])],
    ]
    for read in reads:
        assert read.status == 200
        text = str(read.json)
        assert not any(secret in text or secret[11:] in text for secret in secrets)
        items = read.json["data"] if isinstance(read.json["data"], list) else [read.json["data"]]
        assert items and all(not {"key", "key_hash"} & set(item) for item in items)
    for hidden in ("key", "key_hash"):
        refused = await api.get(KEYS, params={"fields": hidden})
        assert refused.status == 422 and "fields" in refused.json["errors"]
