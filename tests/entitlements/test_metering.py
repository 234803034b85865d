"""api_calls (and other per-process counts) without a database write per request: added
in memory, flushed by the per-process job every FLUSH_SECONDS and on a graceful stop."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from entitlements_support import (
    CHECK,
    SUMMARY,
    plans_file,
    published,
    small_tenant,
)

from conftest import make_settings, serving
from core_api.clock import ManualClock
from core_api.config import Settings
from core_api.entitlements.meter import FLUSH_SECONDS
from support import (
    Launcher,
    clean_env,
    fresh_connection_client,
    fresh_database,
    listen_for,
    printed_key,
)


async def test_requests_count_in_memory_then_flush(
    settings: Settings, clock: ManualClock, tmp_path: Path
) -> None:
    async with small_tenant(settings, clock, tmp_path, tier="big") as (runtime, api, boot):
        ws = boot["workspace"]["id"]
        for _ in range(7):
            assert (await api.get(CHECK, params={"feature": "posts"})).status == 200
        assert (await api.get(CHECK, auth=False)).status == 401  # not authenticated: free
        # Nothing written per request: the counts wait in this process's meter.
        assert await runtime.db.fetch_all("SELECT used FROM entitlement_usage") == []
        assert runtime.entitlements.meter.pending() == 7
        runtime.entitlements.meter.add(ws, "mcp_calls", 3)
        assert await runtime.entitlements.flush() == 10
        assert runtime.entitlements.meter.pending() == 0
        items = (await api.get(SUMMARY)).json["data"]["entitlements"]
        assert items["api_calls"]["used"] == 7  # the summary request itself is not flushed
        assert items["mcp_calls"]["used"] == 3
        assert await runtime.entitlements.flush() == 1  # ... until the next flush


async def test_flush_publishes_thresholds_and_skips_deleted_workspaces(
    settings: Settings, clock: ManualClock, tmp_path: Path
) -> None:
    async with small_tenant(settings, clock, tmp_path) as (runtime, _api, boot):
        ws, meter = boot["workspace"]["id"], runtime.entitlements.meter
        await listen_for(runtime, ws, "entitlement.*")
        for _ in range(4):
            meter.record_api_call(ws)  # api_calls: a soft 5 on "small"
        meter.record_api_call(987_654)  # a workspace that no longer exists
        assert await runtime.entitlements.flush() == 4
        for _ in range(3):
            meter.record_api_call(ws)
        await runtime.entitlements.flush()
        events = await published(runtime, ws)
        assert [(e["type"], e["data"]["used"]) for e in events] == [
            ("entitlement.threshold_reached", 4),
            ("entitlement.limit_reached", 7),
        ]
        assert events[1]["data"]["enforcement"] == "soft"


async def test_metering_can_be_switched_off(clock: ManualClock, tmp_path: Path) -> None:
    settings = make_settings(
        f"sqlite:///{tmp_path}/db.sqlite", tmp_path, entitlements_metering=False
    )
    async with small_tenant(settings, clock, tmp_path) as (runtime, api, _boot):
        await api.get(CHECK, params={"feature": "posts"})
        assert runtime.entitlements.meter.pending() == 0


_USED = "SELECT COALESCE(SUM(used), 0) FROM entitlement_usage WHERE feature = 'api_calls'"


def _used(url: str) -> int:
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            row = conn.execute(_USED).fetchone()
    else:
        with psycopg.connect(url) as pg:
            row = pg.execute(_USED).fetchone()
    assert row is not None
    return int(row[0])


@contextlib.contextmanager
def _database(kind: str, tmp_path: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path}/db.sqlite"
        return
    with fresh_database("metering_restart") as url:
        yield url


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_api_calls_equal_requests_after_the_flush_and_a_graceful_restart(
    kind: str, launcher: Launcher, tmp_path: Path
) -> None:
    with _database(kind, tmp_path) as url:
        env = clean_env(
            tmp_path,
            database_url=url,
            plans_file=plans_file(tmp_path),
            log_level="WARNING",
            secret_key="metering-secret-key-0123456789abcdefghij",
        )
        server = launcher.start(env, 2, "--first-run-bootstrap")
        key = printed_key(server)
        with fresh_connection_client(server, key) as client:  # spread over both workers
            answers = {
                client.get(CHECK, params={"feature": "posts"}).status_code for _ in range(40)
            }
            assert answers == {200}
        time.sleep(FLUSH_SECONDS + 1.5)  # the documented bound: within one flush interval
        assert _used(url) == 40
        with fresh_connection_client(server, key) as client:
            summary = client.get(SUMMARY).json()["data"]["entitlements"]["api_calls"]
            assert summary["used"] == 40  # (this request is still in memory)
            for _ in range(24):
                client.get(CHECK, params={"feature": "posts"})
        server.stop()  # SIGTERM: each worker's final flush writes what it still holds
        assert _used(url) == 40 + 1 + 24
        again = launcher.start(env, 1)
        with fresh_connection_client(again, key) as client:
            summary = client.get(SUMMARY).json()["data"]["entitlements"]["api_calls"]
        assert summary["used"] == 65
        again.stop()  # before its database is dropped


async def test_two_processes_flushes_add_up(
    settings: Settings, clock: ManualClock, tmp_path: Path
) -> None:
    async with small_tenant(settings, clock, tmp_path, tier="big") as (runtime, _api, boot):
        ws, meter = boot["workspace"]["id"], runtime.entitlements.meter
        for _ in range(1000):
            meter.record_api_call(ws)
        assert await runtime.entitlements.flush() == 1000
        async with serving(runtime.settings, clock) as (other, _):  # a second process's flush
            for _ in range(500):
                other.entitlements.meter.record_api_call(ws)
            await other.entitlements.flush()
        rows = await runtime.db.fetch_all(
            "SELECT used FROM entitlement_usage WHERE workspace_id = ?", (ws,)
        )
        assert rows == [{"used": 1500}]
