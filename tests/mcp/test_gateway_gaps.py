"""What the gateway's other tests leave out: the catalogue TTL against a real stdio server
whose tool list changes, the `core` server's SEO and pixel tools under a key's scopes and
workspace, `audit_arguments` on and off, the registry's per-server limit, the key's tier
limit and `mcp_calls` metering (the limits with and without Redis), and which webhook
subscriptions make `mcp.tool.executed` rows (the same rule as every other event)."""
# ruff: noqa: F811 - pytest fixtures imported from gwsupport are redefined as parameters

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from gwsupport import (  # noqa: F401 - fixtures
    call,
    fs_root,
    jsonrpc_call,
    mcp_extra,
    registry_text,
    settings,
)

from conftest import REDIS_URL, Api, serving
from core_api.clock import ManualClock
from core_api.config import Settings
from core_api.runtime import Runtime
from core_api.storage.base import fetch_value
from entitlements.entitlements_support import SUMMARY, plans_file, tenant
from pixel.ingest_support import close_ingest, event, ingest, make_site, track
from seo.seo_support import other_tenant, report_body, submit

__all__ = ["close_ingest"]  # a fixture, used by the core tools test


@asynccontextmanager
async def gateway(
    settings: Settings,
    clock: ManualClock,
    fs_root: Path,
    *,
    plans: str | None = None,
    tier: str = "enterprise",
    extra: str = "",
    **registry: Any,
) -> AsyncIterator[tuple[Runtime, Api, dict[str, Any]]]:
    """An app on the test registry with [gateway] overrides, ``extra`` server tables (and
    a plans file), and a client for a fresh workspace on ``tier``."""
    config = fs_root.parent / "mcp-custom.toml"
    config.write_text(registry_text(fs_root, extra, **registry))
    changed = replace(settings, mcp_config=str(config))
    if plans is not None:
        changed = replace(changed, plans_file=plans_file(fs_root.parent, plans))
    async with serving(changed, clock) as (runtime, api):
        boot = await tenant(runtime, clock, "Acme", tier)
        api.key = boot["api_key"]["key"]
        yield runtime, api, boot


def with_limiter(settings: Settings, limiter_mode: str, request: pytest.FixtureRequest) -> Settings:
    """``settings`` as they are (the local limiter), or with Redis under a private prefix."""
    if limiter_mode == "local":
        return settings
    prefix = request.getfixturevalue("redis_prefix")
    return replace(settings, redis_url=REDIS_URL, redis_prefix=prefix)


async def new_key(api: Api, scopes: list[str], **fields: Any) -> str:
    made = await api.post("/api/v1/api-keys", json={"name": "k", "scopes": scopes, **fields})
    assert made.status == 201, made.json
    return str(made.json["data"]["key"])


async def audit(api: Api, **params: str) -> list[dict[str, Any]]:
    got = await api.get("/api/v1/mcp/audit", params=params)
    assert got.status == 200, got.json
    return list(got.json["data"])


async def event_rows(runtime: Runtime, event_type: str) -> int:
    found = await fetch_value(
        runtime.db, "SELECT COUNT(*) FROM events WHERE type = ?", (event_type,)
    )
    return int(found)


# -- 1. the catalogue TTL ----------------------------------------------------------------

TTL = 1.0


async def test_catalogue_is_reused_within_the_ttl_and_fetched_again_after_it(
    settings: Settings, clock: ManualClock, fs_root: Path
) -> None:
    async def listed(api: Api) -> set[str]:
        got = await api.get("/api/v1/mcp/servers/echo/tools")
        assert got.status == 200, got.json
        return {t["name"] for t in got.json["data"]}

    async with gateway(settings, clock, fs_root, catalogue_ttl_seconds=TTL) as (_, api, _):
        assert "grow" in await listed(api)  # the session starts; the catalogue is fetched
        fetched = time.monotonic()  # at or after the fetch
        r = await call(api, "echo", "grow", {"name": "late"})
        assert r.status == 200, r.json  # the upstream's catalogue now has "late"
        names, r = await listed(api), await call(api, "echo", "late", {})
        assert time.monotonic() - fetched < TTL, "too slow to observe the TTL window"
        # Within the TTL the cached catalogue is used: "late" is neither listed nor callable.
        assert "late" not in names
        assert r.status == 422, r.json
        assert list(r.json["errors"]) == ["tool"]

        await asyncio.sleep(TTL + 0.1 - (time.monotonic() - fetched))
        assert "late" in await listed(api)
        r = await call(api, "echo", "late", {})
        assert r.status == 200, r.json
        assert r.json["result"] == {"content": "late"}  # a text-only answer


# -- 2. the core server's SEO and pixel tools --------------------------------------------


async def seo_and_pixel(api: Api, domain: str, issues: list[dict[str, Any]]) -> int:
    """A report with ``issues`` and one pageview on a new site of ``domain``: its id."""
    await submit(api, report_body(f"https://{domain}/page", issues=issues))
    site = await make_site(api, domain)
    tracked = await track(api, event(f"https://{domain}/page"))
    assert tracked.status == 200, tracked.json
    return int(site["id"])


def issue(issue_type: str, severity: str) -> dict[str, Any]:
    return {"type": issue_type, "severity": severity, "element": "div"}


@pytest.mark.usefixtures("close_ingest")
async def test_core_seo_and_pixel_tools_under_the_callers_key_and_workspace(
    api: Api, runtime: Runtime, clock: ManualClock
) -> None:
    ours = [issue("missing_alt", "warning"), issue("meta-description", "error")]
    site = await seo_and_pixel(api, "example.com", ours)
    other = await other_tenant(runtime, clock)
    theirs = Api(api.conductor, other["api_key"]["key"])
    their_site = await seo_and_pixel(theirs, "other.test", [issue("secret-issue", "error")])
    assert (await track(theirs, event("https://other.test/two"))).status == 200
    await ingest(runtime).flush()

    r = await call(api, "core", "query_seo_issues", {})
    assert r.status == 200, r.json
    found = r.json["result"]["data"]
    assert sorted((i["issue_type"], i["url"]) for i in found) == [
        ("meta-description", "https://example.com/page"),
        ("missing_alt", "https://example.com/page"),
    ]
    r = await call(api, "core", "query_seo_issues", {"severity": "error"})
    assert [i["issue_type"] for i in r.json["result"]["data"]] == ["meta-description"]
    r = await call(theirs, "core", "query_seo_issues", {})
    assert [i["issue_type"] for i in r.json["result"]["data"]] == ["secret-issue"]

    r = await call(api, "core", "pixel_stats", {"site_id": site})
    assert r.status == 200, r.json
    assert r.json["result"]["data"]["site"] == {"id": site, "domain": "example.com"}
    assert r.json["result"]["data"]["totals"]["pageviews"] == 1
    r = await call(theirs, "core", "pixel_stats", {"site_id": their_site})
    assert r.json["result"]["data"]["totals"]["pageviews"] == 2
    # Another workspace's site is the endpoint's own 404, with nothing of its figures.
    r = await call(api, "core", "pixel_stats", {"site_id": their_site})
    assert r.status == 404, r.json
    assert r.json["error"] == "not_found"
    assert "totals" not in r.json
    # Nor by naming it: a workspace the user is not a member of means the home one.
    elsewhere = {"X-Workspace-ID": str(other["workspace"]["id"])}
    r = await call(api, "core", "query_seo_issues", {}, headers=elsewhere)
    assert r.status == 200, r.json
    assert {i["issue_type"] for i in r.json["result"]["data"]} == {
        "missing_alt",
        "meta-description",
    }

    # Scopes: the endpoint's own, refused with its status and body.
    no_seo = await new_key(api, ["mcp:read", "mcp:write", "pixel:read"])
    r = await call(api, "core", "query_seo_issues", {}, key=no_seo)
    assert r.status == 403, r.json
    assert r.json["error"] == "access_denied"
    assert r.json["message"] == "Insufficient permissions. Required scope: seo:read"
    assert (await call(api, "core", "pixel_stats", {"site_id": site}, key=no_seo)).status == 200
    no_pixel = await new_key(api, ["mcp:read", "mcp:write", "seo:read"])
    r = await call(api, "core", "pixel_stats", {"site_id": site}, key=no_pixel)
    assert r.status == 403, r.json
    assert r.json["message"] == "Insufficient permissions. Required scope: pixel:read"
    assert (await call(api, "core", "query_seo_issues", {}, key=no_pixel)).status == 200
    refused = await audit(api, server="core", outcome="refused")
    assert sorted(a["tool"] for a in refused) == ["pixel_stats", "pixel_stats", "query_seo_issues"]


# -- 3. audit_arguments --------------------------------------------------------------------


@pytest.mark.parametrize("kept", [True, False])
async def test_audit_keeps_arguments_only_when_configured(
    settings: Settings, clock: ManualClock, fs_root: Path, kept: bool
) -> None:
    (fs_root / "notes.txt").write_text("hello")
    arguments = {"path": "notes.txt"}
    async with gateway(settings, clock, fs_root, audit_arguments=kept) as (runtime, api, _):
        assert (await call(api, "filesystem", "read_file", arguments)).status == 200
        r = await jsonrpc_call(api, "filesystem__read_file", arguments)
        assert r.status == 200 and r.json["result"]["isError"] is False, r.json
        refused = {"path": "../secret-name.txt"}
        assert (await call(api, "filesystem", "read_file", refused)).status == 422
        rows = await audit(api)
        assert [(a["transport"], a["outcome"]) for a in rows] == [
            ("rest", "refused"),
            ("mcp", "ok"),
            ("rest", "ok"),
        ]
        expected = [refused, arguments, arguments] if kept else [None, None, None]
        assert [a["arguments"] for a in rows] == expected
        stored = await fetch_value(
            runtime.db, "SELECT COUNT(*) FROM mcp_audit WHERE arguments IS NOT NULL"
        )
        assert int(stored) == (3 if kept else 0)  # not stored, not only hidden
        # A value the tool echoes in its error is an argument too.
        missing = {"path": "nodir/customer-42.txt"}
        r = await call(api, "filesystem", "read_file", missing)
        assert r.status == 422 and "customer-42" in str(r.json["errors"]), r.json
        row = (await audit(api, outcome="refused"))[0]  # newest first
        assert ("customer-42" in row["error"]) is kept, row["error"]
        assert kept or "[argument]" in row["error"]


# -- 4. limits and metering -----------------------------------------------------------------


async def test_per_server_rate_limit(
    settings: Settings,
    clock: ManualClock,
    fs_root: Path,
    limiter_mode: str,
    request: pytest.FixtureRequest,
) -> None:
    limited = with_limiter(settings, limiter_mode, request)
    extra = "[builtin.core]\nrate_limit = 3\n"
    async with gateway(limited, clock, fs_root, extra=extra) as (_, api, _):
        tools = [("list_workspaces", {}), ("check_entitlement", {"feature": "mcp_calls"})] * 2
        codes = [(await call(api, "core", tool, args)).status for tool, args in tools[:3]]
        assert codes == [200, 200, 200]  # the limit is the server's, whichever tool
        r = await call(api, "core", *tools[3])
        assert r.status == 429, r.json
        assert r.json["error"] == "rate_limit_exceeded"
        assert (r.json["limit"], r.json["remaining"]) == (3, 0)
        assert r.json["retry_after"] == 20  # one call in 60 / 3 s (the manual clock stands still)
        assert r.json["reset_at"] == "2026-01-01T00:01:00Z"
        assert r.headers["retry-after"] == "20"
        # The headers are the server limit's, as the body's: not the key tier's.
        assert (r.headers["x-ratelimit-limit"], r.headers["x-ratelimit-remaining"]) == ("3", "0")
        assert r.headers["ratelimit-policy"].startswith('"mcp-core";q=3;')
        ok = await call(api, "filesystem", "list_directory", {})  # another server: the tier's
        assert int(ok.headers["x-ratelimit-limit"]) > 3
        # Other servers and other keys are not charged.
        assert (await call(api, "filesystem", "list_directory", {})).status == 200
        other = await new_key(api, ["*"])
        assert (await call(api, "core", "list_workspaces", {}, key=other)).status == 200
        [row] = await audit(api, outcome="rate_limited")
        assert (row["server"], row["tool"]) == ("core", "check_entitlement")


PLANS = """
default_tier = "roomy"

[features.mcp_calls]
kind = "metered"
period = "month"
enforcement = "soft"

[tiers.tiny]
requests_per_minute = 4
burst = 0.0
[tiers.tiny.limits]
mcp_calls = 3

[tiers.roomy]
requests_per_minute = 100000
burst = 1.0
[tiers.roomy.limits]
mcp_calls = 3
"""


async def test_tier_rate_limit_and_mcp_calls_metering(
    settings: Settings,
    clock: ManualClock,
    fs_root: Path,
    limiter_mode: str,
    request: pytest.FixtureRequest,
) -> None:
    limited = with_limiter(settings, limiter_mode, request)
    async with gateway(limited, clock, fs_root, plans=PLANS, tier="roomy") as (runtime, api, _):
        tiny = await new_key(api, ["mcp:read", "mcp:write"], rate_limit_tier="tiny")
        # The key's tier limit applies to MCP calls like any request (4/min, no burst).
        calls = [("filesystem", "list_directory", {}), ("echo", "echo", {"message": "x"})] * 2
        answers = [await call(api, *server_tool_args, key=tiny) for server_tool_args in calls]
        assert [a.status for a in answers] == [200, 200, 200, 200]
        last = answers[-1]
        assert last.headers["x-ratelimit-limit"] == "4"
        assert last.headers["x-ratelimit-remaining"] == "0"
        r = await call(api, "filesystem", "list_directory", {}, key=tiny)
        assert r.status == 429, r.json
        assert (r.json["error"], r.json["limit"]) == ("rate_limit_exceeded", 4)
        assert (r.headers["retry-after"], r.json["retry_after"]) == ("15", 15)  # 60 / 4 s
        assert r.headers["x-ratelimit-limit"] == "4"

        # mcp_calls (3 a month, soft as shipped): counted, never refused.
        for _ in range(2):
            assert (await call(api, "filesystem", "list_directory", {})).status == 200
        assert (await call(api, "filesystem", "read_file", {"path": "../x"})).status == 422
        await runtime.entitlements.flush()
        summary = await api.get(SUMMARY)
        assert summary.status == 200, summary.json
        mcp = summary.json["data"]["entitlements"]["mcp_calls"]
        assert (mcp["used"], mcp["limit"], mcp["overage"]) == (6, 3, 3)  # 4 + 2 that ran
        check = await api.get("/api/v1/entitlements/check", params={"feature": "mcp_calls"})
        assert check.json["allowed"] is True and check.json["overage"] == 4, check.json


# -- 5. mcp.tool.executed follows the same rule as every event -----------------------------


@pytest.mark.parametrize(
    ("patterns", "active", "written"),
    [
        (["workspace.*"], True, {"workspace.created": 1, "mcp.tool.executed": 0}),
        (["mcp.tool.executed"], True, {"workspace.created": 0, "mcp.tool.executed": 1}),
        (["*"], True, {"workspace.created": 1, "mcp.tool.executed": 1}),
        (["*"], False, {"workspace.created": 0, "mcp.tool.executed": 0}),
    ],
)
async def test_events_are_written_only_where_an_active_endpoint_subscribes(
    api: Api, runtime: Runtime, patterns: list[str], active: bool, written: dict[str, int]
) -> None:
    hook = await api.post(
        "/api/v1/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": patterns}
    )
    assert hook.status == 201, hook.json
    if not active:
        r = await api.patch(
            f"/api/v1/webhooks/{hook.json['data']['id']}", json={"is_active": False}
        )
        assert r.status == 200, r.json
    assert (await api.post("/api/v1/workspaces", json={"name": "Second"})).status == 201
    assert (await call(api, "filesystem", "list_directory", {})).status == 200
    assert len(await audit(api)) == 1  # the audit read writes the pending batch first
    assert {t: await event_rows(runtime, t) for t in written} == written


HARD_PLANS = PLANS.replace('enforcement = "soft"', 'enforcement = "hard"')


async def test_a_hard_mcp_calls_limit_refuses_exactly_beyond_it(
    settings: Settings,
    clock: ManualClock,
    fs_root: Path,
    limiter_mode: str,
    request: pytest.FixtureRequest,
) -> None:
    """A hard mcp_calls limit is checked and recorded atomically before each call (as
    POST /entitlements/usage does): of 8 concurrent calls against a limit of 3, exactly 3
    run; the rest are 403 feature_limit_reached, audited, and run nothing. Counted once:
    the in-memory meter does not count the recorded calls again at its flush."""
    limited = with_limiter(settings, limiter_mode, request)
    async with gateway(limited, clock, fs_root, plans=HARD_PLANS, tier="roomy") as (
        runtime,
        api,
        _,
    ):
        answers = await asyncio.gather(
            *(call(api, "filesystem", "list_directory", {}) for _ in range(8))
        )
        assert sorted(a.status for a in answers) == [200] * 3 + [403] * 5
        refused = next(a for a in answers if a.status == 403)
        assert refused.json["error"] == "feature_limit_reached"
        assert refused.json["feature"] == "mcp_calls" and refused.json["upgrade_url"]
        r = await jsonrpc_call(api, "filesystem__list_directory", {})
        assert r.status == 200 and r.json["result"]["isError"] is True, r.json
        await runtime.entitlements.flush()
        mcp = (await api.get(SUMMARY)).json["data"]["entitlements"]["mcp_calls"]
        assert (mcp["used"], mcp["limit"], mcp["available"]) == (3, 3, 0)
        outcomes = sorted(a["outcome"] for a in await audit(api))
        assert outcomes == ["ok"] * 3 + ["refused"] * 6
