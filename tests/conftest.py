"""Shared fixtures: both storage backends, a manual clock, the app under falcon.testing.

PostgreSQL tests create their own database (dropped at the end of the session) on the
server named by CORE_API_TEST_DATABASE_URL; Redis tests use a random key prefix on
CORE_API_TEST_REDIS_URL and delete what they wrote.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import falcon.testing
import psycopg
import pytest

import openapi_check
from core_api.api_keys.service import bootstrap
from core_api.app import create_app
from core_api.clock import ManualClock
from core_api.config import Settings
from core_api.features import front
from core_api.runtime import Runtime

ADMIN_URL = os.environ.get("CORE_API_TEST_DATABASE_URL", "postgresql://127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CORE_API_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = b"test-secret-key-that-is-long-enough-0123456789"
TABLES = [
    "mcp_audit",
    "seo_issue_counts",
    "seo_totals",
    "seo_days",
    "seo_issues",
    "seo_reports",
    "entitlement_usage",
    "entitlement_events",
    "entitlement_notices",
    "entitlement_overrides",
    "pixel_events",
    "pixel_salts",
    "pixel_bot_counts",
    "pixel_site_purges",
    "pixel_stats_days",
    "pixel_sites",
    "webhook_attempts",
    "webhook_deliveries",
    "events",
    "webhook_endpoints",
    "job_leases",
    "idempotency_records",
    "api_keys",
    "workspace_members",
    "workspaces",
    "users",
    "workspace_member_counts",  # after workspace_members: its triggers write here
]


# Empty every table (children first; the pixel_sites delete trigger refills
# pixel_site_purges, so it is emptied again last) and restart every sequence: what
# TRUNCATE ... RESTART IDENTITY CASCADE did, at 4 ms instead of 140-240 ms per test
# (TRUNCATE swaps the files of every table, empty or not).
RESET = (
    "DO $$ DECLARE t text; BEGIN FOREACH t IN ARRAY ARRAY["
    + ", ".join(f"'{table}'" for table in [*TABLES, "pixel_site_purges"])
    + "] LOOP EXECUTE format('DELETE FROM %I', t); END LOOP; "
    "PERFORM setval(c.oid, 1, false) FROM pg_class c WHERE c.relkind = 'S'; END $$"
)


def _swap_dbname(url: str, name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    name = f"core_api_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _swap_dbname(ADMIN_URL, name)
    # libpq key=value strings are accepted by psycopg; the app expects postgresql:// URLs.
    info = psycopg.conninfo.conninfo_to_dict(url)
    host, port = info.get("host", "127.0.0.1"), info.get("port", "5432")
    user = info.get("user")
    auth = f"{user}@" if user else ""
    yield f"postgresql://{auth}{host}:{port}/{name}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_settings(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    base = Settings(
        database_url=database_url,
        secret_key=SECRET,
        shm_path=str(tmp_path / "shm"),
        auth_failure_limit=1000,
    )
    return replace(base, **overrides)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/core-api.db"
    url: str = request.getfixturevalue("pg_url")
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('public.users') IS NOT NULL").fetchone()
        if exists and exists[0]:
            conn.execute(RESET)
    return url


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path)


@pytest.fixture
async def runtime(settings: Settings, clock: ManualClock) -> AsyncIterator[Runtime]:
    rt = await Runtime.open(settings, clock=clock, run_migrations=True)
    yield rt
    await rt.close()


@dataclass
class Result:
    status: int
    json: Any
    headers: dict[str, str]

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class Api:
    """Thin async client over falcon.testing with the bootstrap key by default."""

    def __init__(self, conductor: falcon.testing.ASGIConductor, key: str | None = None) -> None:
        self.conductor, self.key = conductor, key

    async def request(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        params: dict[str, str] | None = None,
        auth: bool = True,
    ) -> Result:
        all_headers = dict(headers or {})
        token = key or self.key
        if auth and token and "Authorization" not in all_headers:
            all_headers["Authorization"] = f"Bearer {token}"
        kwargs: dict[str, Any] = {"headers": all_headers, "params": params}
        if json is not None:
            kwargs["json"] = json
        if body is not None:
            kwargs["body"] = body
        result = await self.conductor.simulate_request(method, path, **kwargs)
        # Every response of a documented operation must match the OpenAPI document.
        openapi_check.verify(method, path, result.status_code, result.headers, result.content)
        return Result(
            result.status_code,
            result.json if result.content else None,
            {k.lower(): v for k, v in result.headers.items()},
        )

    async def get(self, path: str, **kw: Any) -> Result:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> Result:
        return await self.request("POST", path, **kw)

    async def patch(self, path: str, **kw: Any) -> Result:
        return await self.request("PATCH", path, **kw)

    async def delete(self, path: str, **kw: Any) -> Result:
        return await self.request("DELETE", path, **kw)


@pytest.fixture
async def boot(runtime: Runtime, clock: ManualClock) -> dict[str, Any]:
    """A user, workspace (enterprise tier, so limits stay out of the way) and a '*' key."""
    return await bootstrap(
        runtime.db,
        runtime.keys,
        runtime.plans,
        clock,
        name="Acme Corporation",
        tier="enterprise",
        email="owner@acme.test",
    )


def served_app(settings: Settings, runtime: Runtime) -> Any:
    """The app as ``core_api.asgi`` serves it: Falcon behind the fast paths."""
    return front(create_app(settings, runtime), runtime, settings)


@pytest.fixture
async def api(runtime: Runtime, settings: Settings, boot: dict[str, Any]) -> AsyncIterator[Api]:
    app = served_app(settings, runtime)
    async with falcon.testing.ASGIConductor(app) as conductor:
        yield Api(conductor, boot["api_key"]["key"])


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A private Redis keyspace (random prefix), deleted afterwards."""
    import redis as sync_redis

    prefix = f"core-api-test:{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = sync_redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(params=["local", "redis"])
def limiter_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def mode_settings(
    limiter_mode: str, database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Settings:
    """Settings without Redis, or with Redis under a private prefix."""
    if limiter_mode == "local":
        return make_settings(database_url, tmp_path)
    prefix = request.getfixturevalue("redis_prefix")
    return make_settings(database_url, tmp_path, redis_url=REDIS_URL, redis_prefix=prefix)


async def open_app(settings: Settings, clock: ManualClock) -> tuple[Runtime, Any]:
    runtime = await Runtime.open(settings, clock=clock, run_migrations=True)
    return runtime, served_app(settings, runtime)


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Any]:
    """Starts `core-api serve` processes for one test; all stopped afterwards."""
    from support import Launcher

    launch = Launcher(tmp_path)
    try:
        yield launch
    finally:
        launch.stop_all()


@asynccontextmanager
async def serving(
    settings: Settings, clock: ManualClock, key: str | None = None
) -> AsyncIterator[tuple[Runtime, Api]]:
    """An opened runtime and a client for its app; closed on exit."""
    runtime, app = await open_app(settings, clock)
    try:
        async with falcon.testing.ASGIConductor(app) as conductor:
            yield runtime, Api(conductor, key)
    finally:
        await runtime.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark what needs a server, so `pytest -m "not postgres"` runs without PostgreSQL:
    every case parametrised onto PostgreSQL or Redis, and every test using ``pg_url``."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        fixtures = getattr(item, "fixturenames", ())
        if "postgresql" in params.values() or "pg_url" in fixtures:
            item.add_marker(pytest.mark.postgres)
        if "redis" in params.values() or "redis_prefix" in fixtures:
            item.add_marker(pytest.mark.redis)
