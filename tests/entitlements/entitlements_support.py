"""Helpers for the entitlements tests: a small plans file (limits low enough to reach),
a runtime and client on it, and a second tenant."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from conftest import Api, serving
from core_api.api_keys.service import bootstrap
from core_api.clock import ManualClock
from core_api.config import Settings
from core_api.runtime import Runtime

CHECK = "/api/v1/entitlements/check"
USAGE = "/api/v1/entitlements/usage"
SUMMARY = "/api/v1/entitlements/summary"

PLANS = """
default_tier = "small"

[features.workspaces]
kind = "limit"
[features.api_keys]
kind = "limit"
[features.webhooks]
kind = "limit"
[features.pixel_sites]
kind = "limit"
[features.posts]
kind = "limit"
[features.api_calls]
kind = "metered"
period = "month"
enforcement = "soft"
[features.mcp_calls]
kind = "metered"
period = "month"
[features.storage]
kind = "quantity"
unit = "bytes"
[features.custom_domains]
kind = "boolean"

[tiers.small]
requests_per_minute = 100000
burst = 1.0
[tiers.small.limits]
workspaces = 2
api_keys = 3
webhooks = 1
pixel_sites = 1
posts = 10
api_calls = 5
mcp_calls = 10
storage = 1000
custom_domains = false

[tiers.big]
requests_per_minute = 200000
burst = 1.0
[tiers.big.limits]
workspaces = -1
api_keys = -1
webhooks = -1
pixel_sites = -1
posts = -1
api_calls = -1
mcp_calls = { limit = 10, enforcement = "soft" }
storage = -1
custom_domains = true
"""


def plans_file(tmp_path: Path, text: str = PLANS) -> str:
    path = tmp_path / "plans.toml"
    path.write_text(text)
    return str(path)


def with_plans(settings: Settings, tmp_path: Path) -> Settings:
    return replace(settings, plans_file=plans_file(tmp_path), upgrade_url="https://up.test/go")


async def tenant(runtime: Runtime, clock: ManualClock, name: str, tier: str = "small") -> Any:
    return await bootstrap(
        runtime.db,
        runtime.keys,
        runtime.plans,
        clock,
        name=name,
        tier=tier,
        email=f"{name.lower()}@example.test",
    )


@asynccontextmanager
async def small_tenant(
    settings: Settings, clock: ManualClock, tmp_path: Path, tier: str = "small"
) -> AsyncIterator[tuple[Runtime, Api, Any]]:
    """A runtime on the test plans and a client for a fresh workspace on ``tier``."""
    async with serving(with_plans(settings, tmp_path), clock) as (runtime, api):
        boot = await tenant(runtime, clock, "Acme", tier)
        api.key = boot["api_key"]["key"]
        yield runtime, api, boot


async def published(runtime: Runtime, workspace_id: int) -> list[dict[str, Any]]:
    """The entitlement events published for a workspace, oldest first."""
    rows = await runtime.db.fetch_all(
        "SELECT payload FROM events WHERE workspace_id = ? AND type LIKE 'entitlement.%' "
        "ORDER BY id",
        (workspace_id,),
    )
    return [orjson.loads(r["payload"]) for r in rows]
