"""/health, /healthz and /readyz: unauthenticated, never rate-limited, and /readyz names
what is not ready within its bounded checks, even when PostgreSQL and Redis hang."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import falcon.testing
import pytest

from conftest import REDIS_URL, Api, make_settings
from core_api.app import create_app
from core_api.runtime import Runtime


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


async def test_probes_answer_without_a_key_or_a_limit(api: Api) -> None:
    public = Api(api.conductor)  # no key
    for path in ("/health", "/healthz"):
        got = await public.get(path)
        assert got.status == 200 and got.json == {"status": "ok"}, (path, got.json)
        assert got.header("X-RateLimit-Limit") is None
    ready = await public.get("/readyz")
    assert ready.status == 200, ready.json
    assert ready.json["status"] == "ready"
    checks = ready.json["checks"]
    assert checks["database"] == {"ok": True}
    assert checks["migrations"]["ok"] is True
    assert checks["migrations"]["applied"] == checks["migrations"]["expected"] > 0
    assert "redis" not in checks  # not configured here
    assert ready.header("X-RateLimit-Limit") is None


async def test_readyz_checks_redis_when_configured(tmp_path: Path, redis_prefix: str) -> None:
    settings = make_settings(
        f"sqlite:///{tmp_path}/db.sqlite", tmp_path, redis_url=REDIS_URL, redis_prefix=redis_prefix
    )
    runtime = await Runtime.open(settings, run_migrations=True)
    try:
        async with falcon.testing.ASGIConductor(create_app(settings, runtime)) as conductor:
            got = await Api(conductor).get("/readyz")
        assert got.status == 200, got.json
        assert got.json["checks"]["redis"] == {"ok": True}
    finally:
        await runtime.close()


async def test_readyz_names_a_schema_behind_this_build(api: Api, runtime: Runtime) -> None:
    latest = await runtime.db.fetch_one("SELECT MAX(version) AS v FROM schema_migrations")
    assert latest is not None
    version = int(latest["v"])
    # As if the last migration were not applied yet (put back afterwards: the PostgreSQL
    # test database is shared by the session).
    await runtime.db.execute(
        "UPDATE schema_migrations SET version = ? WHERE version = ?", (-version, version)
    )
    try:
        got = await Api(api.conductor).get("/readyz")
    finally:
        await runtime.db.execute(
            "UPDATE schema_migrations SET version = ? WHERE version = ?", (version, -version)
        )
    assert got.status == 503, got.json
    assert got.json["status"] == "unavailable"
    migrations = got.json["checks"]["migrations"]
    assert migrations["ok"] is False and migrations["expected"] == version
    assert migrations["applied"] == version - 1
    assert "core-api migrate" in migrations["error"]
    assert got.json["checks"]["database"] == {"ok": True}
    assert (await Api(api.conductor).get("/healthz")).status == 200  # alive all the same


async def test_readyz_answers_503_when_the_database_and_redis_hang(
    tmp_path: Path, blackhole: int
) -> None:
    """Both servers accept the connection and never answer: each check gives up after its
    bound and the answer names them (no host or port in the public body)."""
    settings = make_settings(
        f"postgresql://127.0.0.1:{blackhole}/nowhere",
        tmp_path,
        redis_url=f"redis://127.0.0.1:{blackhole}/0",
        pg_connect_timeout=30,
    )
    runtime = Runtime.build(settings)  # never started: the database cannot be reached
    try:
        async with falcon.testing.ASGIConductor(create_app(settings, runtime)) as conductor:
            api = Api(conductor)
            got = await api.get("/readyz")
            live = await api.get("/healthz")
        assert live.status == 200
        assert got.status == 503, got.json
        checks: dict[str, Any] = got.json["checks"]
        assert {name for name, check in checks.items() if not check["ok"]} == {
            "database",
            "migrations",
            "redis",
        }
        for check in checks.values():
            assert str(blackhole) not in check["error"] and "127.0.0.1" not in check["error"]
    finally:
        await runtime.close()


async def test_readyz_answers_503_when_the_database_refuses(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = make_settings(f"postgresql://127.0.0.1:{port}/nowhere", tmp_path)
    runtime = Runtime.build(settings)
    try:
        async with falcon.testing.ASGIConductor(create_app(settings, runtime)) as conductor:
            got = await Api(conductor).get("/readyz")
        assert got.status == 503
        assert got.json["checks"]["database"] == {"ok": False, "error": "unreachable"}
    finally:
        await runtime.close()
