"""Tenant isolation on every endpoint: a key of another user and workspace (the attacker)
can read, list, change or delete nothing of the victim's workspace.

One table, one row per endpoint and method. Each row runs twice with the attacker's own
``*`` key on the enterprise tier: as is, and with ``X-Workspace-ID`` naming the victim's
workspace (which the attacker's user is not a member of, so the header is ignored and the
home workspace is used: docs/api.md, Tenancy). Expectations:

- ``HIDDEN``: ``404 not_found`` with the standard body; the service hides that the victim's
  resource exists (never a 403);
- ``OWN``: the request succeeds in the attacker's own workspace, and its answer contains
  nothing of the victim's (every victim resource carries ``MARK`` in a name, URL, domain or
  payload, and the answer must not);
- a callable: the row's own check.

After every row the victim's rows in the database (every table that holds workspace data,
volatile ``last_used_at`` aside) and the victim's MCP file must be exactly as before.

To cover a new endpoint, add a line to ``ROWS``; ``test_routes_have_rows``
fails when a route has none.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import falcon.testing
import orjson
import pytest
from security_support import routes

from conftest import Api, Result, make_settings, served_app
from core_api.api_keys.service import bootstrap
from core_api.app import create_app
from core_api.clock import ManualClock
from core_api.config import Settings
from core_api.runtime import Runtime

MARK = "victim7f3a"
VICTIM_WS = 1  # the first bootstrap of a fresh database (sequences restart per test)

REGISTRY = """
[gateway]
call_timeout_seconds = 5
connect_timeout_seconds = 30

[builtin.filesystem]
root = "{root}"
max_file_bytes = 4096

[builtin.core]
workspaces = [{victim}]   # a server only the victim's workspace may use
"""


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    config = tmp_path / "mcp.toml"
    config.write_text(REGISTRY.format(root=tmp_path / "files", victim=VICTIM_WS))
    return make_settings(
        database_url,
        tmp_path,
        mcp_config=str(config),
        webhook_allow_private_networks=True,
        webhook_require_https=False,
        entitlements_metering=False,  # api_calls would otherwise move with every request
    )


@dataclass
class World:
    api: Api
    runtime: Runtime
    victim: dict[str, Any]  # ids of the victim's resources
    attacker_key: str
    attacker: dict[str, Any]  # ids of the attacker's own resources
    files: Path


async def ok(result: Result, status: int = 200) -> Any:
    assert result.status == status, (result.status, result.json)
    return result.json


@pytest.fixture
async def world(runtime: Runtime, settings: Settings, clock: ManualClock, tmp_path: Path) -> Any:
    victim_boot = await bootstrap(
        runtime.db, runtime.keys, runtime.plans, clock,
        name=f"Victim {MARK}", tier="enterprise", email=f"owner@{MARK}.test",
    )  # fmt: skip
    attacker_boot = await bootstrap(
        runtime.db, runtime.keys, runtime.plans, clock,
        name="Attacker", tier="enterprise", email="evil@attacker.test",
    )  # fmt: skip
    assert victim_boot["workspace"]["id"] == VICTIM_WS
    app = served_app(settings, runtime)
    async with falcon.testing.ASGIConductor(app) as conductor:
        api = Api(conductor, victim_boot["api_key"]["key"])
        v: dict[str, Any] = {
            "ws": VICTIM_WS,
            "user": victim_boot["user"]["id"],
            "key": victim_boot["api_key"]["id"],
        }
        extra = await ok(await api.post("/api/v1/api-keys", json={"name": f"k-{MARK}"}), 201)
        v["extra_key"] = extra["data"]["id"]
        hook = await ok(
            await api.post(
                "/api/v1/webhooks",
                json={"url": f"http://127.0.0.1:9/{MARK}", "events": ["*"]},
            ),
            201,
        )
        v["hook"] = hook["data"]["id"]
        published = await ok(
            await api.post("/api/v1/events", json={"type": "order.created", "data": {"m": MARK}}),
            202,
        )
        assert published["data"]["deliveries"] == 1
        deliveries = await ok(await api.get(f"/api/v1/webhooks/{v['hook']}/deliveries"))
        v["delivery"] = deliveries["data"][0]["id"]
        await ok(
            await api.post("/api/v1/entitlements/usage", json={"feature": "posts", "quantity": 7})
        )
        report = await ok(
            await api.post(
                "/api/v1/seo/report",
                json={
                    "url": f"https://{MARK}.example/page",
                    "scores": {"seo": 50},
                    "issues": [{"type": "missing_alt", "severity": "error", "element": MARK}],
                },
            ),
            201,
        )
        v["report"] = report["data"]["id"]
        site = await ok(
            await api.post(
                "/api/v1/pixel/sites", json={"domain": f"{MARK}.example", "name": f"s-{MARK}"}
            ),
            201,
        )
        v["site"] = site["data"]["id"]
        wrote = await api.post(
            "/api/v1/mcp/tools/call",
            json={
                "server": "filesystem",
                "tool": "write_file",
                "arguments": {"path": "notes.txt", "content": MARK},
            },
        )
        await ok(wrote)
        await ok(await api.get("/api/v1/mcp/servers/core"))

        # The victim reads every list and summary first, so that per-process page, total
        # and cache entries exist for the attacker's requests to (wrongly) hit.
        for path in (
            "/api/v1/workspaces", "/api/v1/api-keys", "/api/v1/webhooks",
            f"/api/v1/webhooks/{v['hook']}/deliveries", "/api/v1/seo/reports",
            f"/api/v1/seo/issues/{VICTIM_WS}", "/api/v1/pixel/sites", "/api/v1/mcp/audit",
            "/api/v1/mcp/servers", "/api/v1/entitlements/summary",
            f"/api/v1/pixel/stats?site_id={v['site']}",
        ):  # fmt: skip
            await ok(await api.get(path))

        # The attacker's own webhook (for paths mixing its endpoint with the victim's delivery).
        attacker_key = attacker_boot["api_key"]["key"]
        own = await ok(
            await api.post(
                "/api/v1/webhooks",
                key=attacker_key,
                json={"url": "http://127.0.0.1:9/attacker", "events": ["*"]},
            ),
            201,
        )
        a = {"ws": attacker_boot["workspace"]["id"], "hook": own["data"]["id"]}
        yield World(api, runtime, v, attacker_key, a, tmp_path / "files")


# -- expectations --------------------------------------------------------------------


HIDDEN = "hidden"
OWN = "own"
Check = Callable[[Result, World], Awaitable[None] | None]


def _texts(result: Result) -> str:
    return orjson.dumps(result.json).decode() if result.json is not None else ""


def filesystem_miss(result: Result, world: World) -> None:
    """The victim's file does not exist for the attacker."""
    assert result.status == 422, (result.status, result.json)
    assert MARK not in _texts(result)


def no_victim_data(result: Result, world: World) -> None:
    assert 200 <= result.status < 300 or result.status == 404, (result.status, result.json)
    assert MARK not in _texts(result)


def summary_is_attackers(result: Result, world: World) -> None:
    assert result.status == 200, result.json
    summary = result.json["data"]
    assert summary["workspace_id"] == world.attacker["ws"]
    assert summary["entitlements"]["posts"]["used"] == 0  # the victim's is 7


def check_is_attackers(result: Result, world: World) -> None:
    assert result.status == 200, result.json
    assert result.json["allowed"] is True and result.json["current_usage"] == 0


def audit_is_attackers(result: Result, world: World) -> None:
    assert result.status == 200, result.json
    # The victim's write_file is in the victim's log only.
    assert all(row["tool"] != "write_file" for row in result.json["data"])


def empty_page(result: Result, world: World) -> None:
    """A list filtered by the victim's value (echoed in ``url`` and ``links``): no rows."""
    assert result.status == 200, result.json
    assert result.json["data"] == [] and result.json["meta"]["total"] == 0


def event_in_own_workspace(result: Result, world: World) -> None:
    assert result.status == 202, result.json
    assert result.json["data"]["workspace_id"] == world.attacker["ws"]


def created_in_own_workspace(status: int) -> Check:
    def check(result: Result, world: World) -> None:
        assert result.status == status, (result.status, result.json)
        assert MARK not in _texts(result)

    return check


# -- the table -----------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    method: str
    path: str  # formatted with the victim's ids (v) and the attacker's (a)
    expect: str | Check
    body: Any = None
    params: dict[str, str] | None = None
    route: str | None = None  # the route template, when ``path`` names a literal segment

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


def tool(server: str, name: str, **arguments: Any) -> dict[str, Any]:
    return {"server": server, "tool": name, "arguments": arguments}


ROWS = [
    # workspaces
    Row("GET", "/api/v1/workspaces", OWN),
    Row("POST", "/api/v1/workspaces", created_in_own_workspace(201), {"name": "mine"}),
    Row("GET", "/api/v1/workspaces/{v[ws]}", HIDDEN),
    Row("PATCH", "/api/v1/workspaces/{v[ws]}", HIDDEN, {"name": "pwned"}),
    Row("DELETE", "/api/v1/workspaces/{v[ws]}", HIDDEN),
    # api keys
    Row("GET", "/api/v1/api-keys", OWN),
    Row("POST", "/api/v1/api-keys", created_in_own_workspace(201), {"name": "mine"}),
    Row("GET", "/api/v1/api-keys/{v[key]}", HIDDEN),
    Row("GET", "/api/v1/api-keys/{v[extra_key]}", HIDDEN),
    Row("DELETE", "/api/v1/api-keys/{v[extra_key]}", HIDDEN),
    Row("POST", "/api/v1/api-keys/{v[extra_key]}/rotate", HIDDEN),
    Row("POST", "/api/v1/api-keys/{v[key]}/rotate", HIDDEN, {"grace_period_hours": 0}),
    # webhooks and deliveries
    Row("GET", "/api/v1/webhooks", OWN),
    Row("GET", "/api/v1/webhooks/event-types", OWN),
    Row(
        "POST",
        "/api/v1/webhooks",
        created_in_own_workspace(201),
        {"url": "http://127.0.0.1:9/mine", "events": ["*"]},
    ),
    Row("GET", "/api/v1/webhooks/{v[hook]}", HIDDEN),
    Row("PATCH", "/api/v1/webhooks/{v[hook]}", HIDDEN, {"is_active": False}),
    Row("PATCH", "/api/v1/webhooks/{v[hook]}", HIDDEN, {"url": "http://127.0.0.1:9/stolen"}),
    Row("DELETE", "/api/v1/webhooks/{v[hook]}", HIDDEN),
    Row("POST", "/api/v1/webhooks/{v[hook]}/test", HIDDEN),
    Row("POST", "/api/v1/webhooks/{v[hook]}/secret/rotate", HIDDEN),
    Row("GET", "/api/v1/webhooks/{v[hook]}/deliveries", HIDDEN),
    Row("GET", "/api/v1/webhooks/{v[hook]}/deliveries/{v[delivery]}", HIDDEN),
    Row("POST", "/api/v1/webhooks/{v[hook]}/deliveries/{v[delivery]}/retry", HIDDEN),
    # the attacker's own endpoint with the victim's delivery id
    Row("GET", "/api/v1/webhooks/{a[hook]}/deliveries/{v[delivery]}", HIDDEN),
    Row("POST", "/api/v1/webhooks/{a[hook]}/deliveries/{v[delivery]}/retry", HIDDEN),
    # events: always published into the caller's own workspace
    Row("POST", "/api/v1/events", event_in_own_workspace, {"type": "order.created", "data": {}}),
    # entitlements
    Row("GET", "/api/v1/entitlements/check", check_is_attackers, params={"feature": "posts"}),
    Row("GET", "/api/v1/entitlements/summary", summary_is_attackers),
    Row(
        "POST",
        "/api/v1/entitlements/usage",
        created_in_own_workspace(200),
        {"feature": "posts", "quantity": 1},
    ),
    # seo
    Row("GET", "/api/v1/seo/reports", OWN),
    Row("GET", "/api/v1/seo/reports/{v[report]}", HIDDEN),
    Row("GET", "/api/v1/seo/issues/{v[ws]}", HIDDEN),
    Row("GET", "/api/v1/seo/issues/{a[ws]}", OWN),
    Row("GET", "/api/v1/seo/history", empty_page, params={"url": f"https://{MARK}.example/page"}),
    Row(
        "POST",
        "/api/v1/seo/report",
        created_in_own_workspace(201),
        {"url": "https://mine.example/", "scores": {"seo": 1}, "issues": []},
    ),
    # pixel
    Row("GET", "/api/v1/pixel/sites", OWN),
    Row("GET", "/api/v1/pixel/sites/{v[site]}", HIDDEN),
    Row("PATCH", "/api/v1/pixel/sites/{v[site]}", HIDDEN, {"enabled": False}),
    Row("DELETE", "/api/v1/pixel/sites/{v[site]}", HIDDEN),
    Row("GET", "/api/v1/pixel/stats", HIDDEN, params={"site_id": "{v[site]}"}),
    # mcp: the registry lets only the victim's workspace use `core`
    Row("GET", "/api/v1/mcp/servers", no_victim_data),
    Row("GET", "/api/v1/mcp/servers/core", HIDDEN, route="/api/v1/mcp/servers/{id}"),
    Row("GET", "/api/v1/mcp/servers/core/tools", HIDDEN, route="/api/v1/mcp/servers/{id}/tools"),
    Row("POST", "/api/v1/mcp/tools/call", HIDDEN, tool("core", "list_workspaces")),
    Row("GET", "/api/v1/mcp/audit", audit_is_attackers),
    # the built-in filesystem keeps one tree per workspace
    Row("POST", "/api/v1/mcp/tools/call", filesystem_miss, tool("filesystem", "read_file", path="notes.txt")),  # noqa: E501
    Row("POST", "/api/v1/mcp/tools/call", no_victim_data, tool("filesystem", "list_directory", path="/")),  # noqa: E501
    Row("GET", "/api/v1/mcp/resources/filesystem://notes.txt", filesystem_miss),
    Row(
        "POST",
        "/api/v1/mcp/tools/call",
        no_victim_data,
        tool("filesystem", "write_file", path="notes.txt", content="pwned"),
    ),
]  # fmt: skip

# Routes whose whole answer is public or the caller's own, covered elsewhere:
# the pixel ingest and config (no key), /health, and /api/v1/mcp (JSON-RPC; its tools are
# the REST ones above, tested through it in tests/mcp/test_endpoint.py).
NOT_TENANT_DATA = {
    "/health",
    "/api/v1/pixel/config",
    "/api/v1/pixel/pixel.js",
    "/api/v1/pixel/track",
    "/api/v1/pixel/track.gif",
    "/api/v1/mcp",
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1/openapi.json",
    "/api/docs",
    "/api/docs/{asset}",
}


async def victim_state(world: World) -> dict[str, Any]:
    """Every row of the victim's workspace, in every table that holds workspace data."""
    db, ws = world.runtime.db, world.victim["ws"]
    state: dict[str, Any] = {}
    by_workspace = [
        "workspace_members", "api_keys", "webhook_endpoints", "events", "pixel_sites",
        "entitlement_usage", "entitlement_events", "entitlement_overrides", "seo_reports",
        "seo_issues", "seo_totals", "seo_days", "seo_issue_counts", "mcp_audit",
    ]  # fmt: skip
    # The audit log is written in batches: the victim's own read of it writes what is pending.
    assert (await world.api.get("/api/v1/mcp/audit")).status == 200
    state["workspaces"] = await db.fetch_all("SELECT * FROM workspaces WHERE id = ?", (ws,))
    for table in by_workspace:
        rows = await db.fetch_all(f"SELECT * FROM {table} WHERE workspace_id = ?", (ws,))
        state[table] = sorted(
            ({k: v for k, v in row.items() if k != "last_used_at"} for row in rows),
            key=repr,
        )
    endpoints = "SELECT id FROM webhook_endpoints WHERE workspace_id = ?"
    state["webhook_deliveries"] = await db.fetch_all(
        f"SELECT * FROM webhook_deliveries WHERE endpoint_id IN ({endpoints}) ORDER BY id", (ws,)
    )
    tree = world.files / str(ws)  # the victim's tree (docs/mcp.md)
    state["files"] = sorted(
        (str(p.relative_to(tree)), p.read_bytes() if p.is_file() else None) for p in tree.rglob("*")
    )
    return state


def _format(value: Any, world: World) -> Any:
    if isinstance(value, str):
        return value.format(v=world.victim, a=world.attacker)
    if isinstance(value, dict):
        return {k: _format(item, world) for k, item in value.items()}
    return value


@pytest.mark.parametrize("spoof", [False, True], ids=["home", "x-workspace-id"])
async def test_no_endpoint_reaches_another_tenant(world: World, spoof: bool) -> None:
    before = await victim_state(world)
    assert before["files"], "the victim's MCP file was written"
    headers = {"X-Workspace-ID": str(world.victim["ws"])} if spoof else {}
    for row in ROWS:
        path = _format(row.path, world)
        result = await world.api.request(
            row.method,
            path,
            key=world.attacker_key,
            json=row.body,
            params=_format(row.params, world),
            headers=headers,
        )
        where = f"{row.method} {path} {row.body or ''}"
        if row.expect == HIDDEN:
            assert result.status == 404, (where, result.status, result.json)
            assert result.json["error"] == "not_found", where
        elif row.expect == OWN:
            assert result.status == 200, (where, result.status, result.json)
            assert MARK not in _texts(result), where
        else:
            assert callable(row.expect)
            try:
                outcome = row.expect(result, world)
                if outcome is not None:
                    await outcome
            except AssertionError as exc:
                raise AssertionError(f"{where}: {exc}") from exc
        assert await victim_state(world) == before, f"{where} changed the victim's data"
    # The victim's key and extra key still work; its webhook still answers it.
    assert (await world.api.get(f"/api/v1/webhooks/{world.victim['hook']}")).status == 200
    assert (await world.api.get(f"/api/v1/api-keys/{world.victim['extra_key']}")).status == 200


def _normalise(path: str) -> str:
    import re

    return re.sub(r"\{[^}]*\}", "{}", path.split("?")[0])


async def test_routes_have_rows(runtime: Runtime, settings: Settings) -> None:
    """Every route the app serves has a row in ROWS, or is listed as public/own-only."""
    app = create_app(settings, runtime)
    found = {_normalise(template) for template, _ in routes(app)}
    covered = {_normalise(row.route or row.path) for row in ROWS}
    covered |= {_normalise(p) for p in NOT_TENANT_DATA}
    # The resource route takes any URI: the filesystem row stands for it.
    covered.add("/api/v1/mcp/resources/{}")
    missing = sorted(found - covered)
    assert not missing, f"routes without a tenant-isolation row: {missing}"
