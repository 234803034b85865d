"""Exact under concurrency: 50 concurrent usage calls against a limit of 10 record exactly
10 and refuse 40 — in one process on both backends with and without Redis, and across the
two worker processes of a real server (SQLite and PostgreSQL, with and without Redis)."""

from __future__ import annotations

import asyncio
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from entitlements_support import CHECK, USAGE, plans_file, small_tenant

from conftest import REDIS_URL
from core_api.clock import ManualClock
from core_api.config import Settings
from support import (
    Launcher,
    Server,
    clean_env,
    fresh_connection_client,
    fresh_database,
    printed_key,
)

CALLS, LIMIT = 50, 10  # mcp_calls is a hard 10 a month on the test plans


async def test_fifty_concurrent_calls_record_exactly_the_limit(
    mode_settings: Settings, clock: ManualClock, tmp_path: Path
) -> None:
    async with small_tenant(mode_settings, clock, tmp_path) as (runtime, api, _):
        results = await asyncio.gather(
            *(api.post(USAGE, json={"feature": "mcp_calls"}) for _ in range(CALLS))
        )
        assert Counter(r.status for r in results) == {200: LIMIT, 403: CALLS - LIMIT}
        # Each success saw a distinct total: 1..10, no lost or doubled update.
        totals = sorted(r.json["current_usage"] for r in results if r.status == 200)
        assert totals == list(range(1, LIMIT + 1))
        used = await runtime.db.fetch_all("SELECT used FROM entitlement_usage")
        assert used == [{"used": LIMIT}]
        ledger = await runtime.db.fetch_all("SELECT id FROM entitlement_events")
        assert len(ledger) == LIMIT
        # The refusals' check agrees: the limit is reached, nothing available.
        got = (await api.get(CHECK, params={"feature": "mcp_calls"})).json
        assert (got["allowed"], got["current_usage"], got["available"]) == (False, LIMIT, 0)


async def test_concurrent_duplicates_of_one_event_count_once(
    mode_settings: Settings, clock: ManualClock, tmp_path: Path
) -> None:
    async with small_tenant(mode_settings, clock, tmp_path, tier="big") as (runtime, api, _):
        bodies = [{"feature": "posts", "event_id": f"e{i % 5}"} for i in range(CALLS)]
        results = await asyncio.gather(*(api.post(USAGE, json=b) for b in bodies))
        assert {r.status for r in results} == {200}
        assert sum(r.header("Idempotent-Replayed") == "true" for r in results) == CALLS - 5
        used = await runtime.db.fetch_all("SELECT used FROM entitlement_usage")
        assert used == [{"used": 5}]
        # Every copy of an event got that event's own first result.
        by_event: dict[str, set[int]] = {}
        for body, result in zip(bodies, results, strict=True):
            by_event.setdefault(body["event_id"], set()).add(result.json["current_usage"])
        assert all(len(seen) == 1 for seen in by_event.values())
        assert sorted(next(iter(s)) for s in by_event.values()) == [1, 2, 3, 4, 5]


def _two_workers_scenario(server: Server, key: str) -> None:
    def call(_: int) -> httpx.Response:
        with fresh_connection_client(server, key) as client:
            return client.post(USAGE, json={"feature": "mcp_calls"})

    with ThreadPoolExecutor(CALLS) as pool:
        responses = list(pool.map(call, range(CALLS)))
    assert Counter(r.status_code for r in responses) == {200: LIMIT, 403: CALLS - LIMIT}
    processes = {r.headers["X-Request-ID"][:16] for r in responses}
    assert len(processes) == 2, processes  # both worker processes answered
    with fresh_connection_client(server, key) as client:
        got = client.get(CHECK, params={"feature": "mcp_calls"}).json()
    assert got["current_usage"] == LIMIT and got["allowed"] is False


@pytest.mark.parametrize("redis", [False, True], ids=["local", "redis"])
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_across_two_worker_processes(
    launcher: Launcher, tmp_path: Path, backend: str, redis: bool, request: pytest.FixtureRequest
) -> None:
    extra = {"plans_file": plans_file(tmp_path), "log_level": "WARNING"}
    if redis:
        extra |= {"redis_url": REDIS_URL, "redis_prefix": request.getfixturevalue("redis_prefix")}
    if backend == "sqlite":
        env = clean_env(tmp_path, database_url=f"sqlite:///{tmp_path}/db.sqlite", **extra)
        server = launcher.start(env, 2, "--first-run-bootstrap")
        _two_workers_scenario(server, printed_key(server))
        return
    with fresh_database("ent") as url:
        env = clean_env(
            tmp_path, database_url=url, secret_key="entitlements-secret-0123456789abcdef", **extra
        )
        server = launcher.start(env, 2, "--first-run-bootstrap")
        try:
            _two_workers_scenario(server, printed_key(server))
        finally:
            server.stop()  # before the database is dropped
