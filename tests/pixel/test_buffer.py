"""The bounded buffer and its writes: back-pressure (503 + Retry-After, never a silent
drop) when the buffer is full or the database is down, recovery afterwards with every
accepted event written, and a SIGTERM that loses nothing with 2 workers."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from ingest_support import CHROME, SITES, TRACK, close_ingest, event, ingest, make_site, track

from conftest import ADMIN_URL, Api, make_settings, serving
from core_api import _native
from core_api.clock import ManualClock
from core_api.config import Settings
from core_api.runtime import Runtime
from core_api.storage import DatabaseUnavailable, fetch_value
from support import Launcher, clean_env, core_api_command, fresh_database

__all__ = ["close_ingest"]  # the fixture, used by the tests with a runtime


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    loopback = (ipaddress.ip_network("127.0.0.0/8"),)
    return make_settings(database_url, tmp_path, trusted_proxies=loopback, pixel_buffer_size=3)


def test_native_buffer_is_bounded_and_restores_in_order() -> None:
    buffer = _native.PixelBuffer(3)

    def push(i: int) -> bool:
        return buffer.push(1, i, "pageview", f"/{i}", None, i, None, "Chrome", "desktop", None)

    assert [push(i) for i in range(4)] == [True, True, True, False]
    batch = buffer.take(2)
    assert (len(batch), buffer.pending, buffer.in_flight) == (2, 1, 2)
    assert not push(9), "events being written still count"
    assert buffer.restore(batch) == 2 and len(batch) == 0
    everything = buffer.take(10)
    assert [row[1] for row in everything.rows()] == [0, 1, 2]
    assert buffer.commit(everything) == 3
    assert (buffer.pending, buffer.in_flight) == (0, 0)
    with pytest.raises(ValueError, match="capacity"):
        _native.PixelBuffer(0)


async def count(runtime: Runtime) -> int:
    return int(await fetch_value(runtime.db, "SELECT COUNT(*) FROM pixel_events"))


@pytest.mark.usefixtures("close_ingest")
async def test_a_full_buffer_is_a_503_until_written(api: Api, runtime: Runtime) -> None:
    await make_site(api)
    for i in range(3):
        assert (await track(api, event(f"https://example.com/{i}"))).status == 200
    refused = await track(api, event())
    assert refused.status == 503
    assert refused.header("retry-after") == "1"
    assert refused.json["error"] == "service_unavailable"
    assert refused.json["retry_after"] == 1
    assert await ingest(runtime).flush() == 3
    assert (await track(api, event("https://example.com/after"))).status == 200
    await ingest(runtime).flush()
    assert await count(runtime) == 4
    assert ingest(runtime).queue.refused == 1


@pytest.mark.usefixtures("close_ingest")
async def test_an_accepted_event_is_written_within_a_second(api: Api, runtime: Runtime) -> None:
    await make_site(api)
    runtime.start_background()  # the per-process jobs, as in a serving process
    assert (await track(api, event())).status == 200
    started = time.monotonic()
    while await count(runtime) == 0:
        assert time.monotonic() - started < 1.0, "not written within a second"
        await asyncio.sleep(0.02)


@pytest.mark.postgres
async def test_database_down_is_a_503_and_nothing_accepted_is_lost(tmp_path: Path) -> None:
    from storage.test_pg_outage import CuttableProxy

    info = psycopg.conninfo.conninfo_to_dict(ADMIN_URL)
    proxy = CuttableProxy(str(info.get("host", "127.0.0.1")), int(str(info.get("port", 5432))))
    try:
        with fresh_database("pixel_outage") as url:
            settings = make_settings(
                proxy.url(url),
                tmp_path,
                pg_connect_timeout=2,
                pg_pool_timeout=2,
                pixel_buffer_size=100,
            )
            clock = ManualClock()
            async with serving(settings, clock) as (runtime, api):
                from core_api.api_keys.service import bootstrap

                boot = await bootstrap(
                    runtime.db,
                    runtime.keys,
                    runtime.plans,
                    clock,
                    name="t",
                    tier="enterprise",
                    email=None,
                )
                api.key = boot["api_key"]["key"]
                await make_site(api)
                for i in range(2):
                    assert (await track(api, event(f"https://example.com/{i}"))).status == 200
                proxy.cut()
                with pytest.raises(DatabaseUnavailable):
                    await ingest(runtime).flush()
                assert ingest(runtime).queue.buffer.pending == 2, "kept for the retry"
                down = await track(api, event("https://example.com/refused"))
                assert down.status == 503 and down.header("retry-after") == "5", down.json
                with pytest.raises(DatabaseUnavailable):
                    await ingest(runtime).flush()  # still down: a ping fails too
                proxy.restore()
                assert await ingest(runtime).flush() == 2
                assert (await track(api, event("https://example.com/2"))).status == 200
                assert await ingest(runtime).flush() == 1
                await ingest(runtime).close()
            with psycopg.connect(url) as conn:
                rows = conn.execute("SELECT path FROM pixel_events ORDER BY ts, path").fetchall()
            assert [r[0] for r in rows] == ["/0", "/1", "/2"]
    finally:
        proxy.stop()


@contextlib.contextmanager
def backend(kind: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path}/db.sqlite"
        yield url, {}
        return
    with fresh_database("pixel_sigterm") as url:
        yield url, {"secret_key": "x" * 40}


def stored(kind: str, url: str) -> int:
    if kind == "sqlite":
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM pixel_events").fetchone()[0])
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT COUNT(*) FROM pixel_events").fetchone()
        assert row is not None
        return int(row[0])


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_sigterm_flushes_every_buffered_event_with_two_workers(
    kind: str, tmp_path: Path, launcher: Launcher
) -> None:
    n = 300
    with backend(kind, tmp_path) as (url, extra):
        env = clean_env(
            tmp_path,
            database_url=url,
            log_level="WARNING",
            pixel_rate_limit="0",
            pixel_flush_ms="60000",  # no write by time before the stop
            **extra,
        )
        key = bootstrap_key(env)  # migrates too
        server = launcher.start(env, 2)
        with httpx.Client(base_url=server.base, timeout=10) as admin:
            made = admin.post(
                SITES,
                json={"domain": "example.com", "name": "Example"},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert made.status_code == 201, made.text
        workers: set[str] = set()
        with httpx.Client(
            base_url=server.base, timeout=10, limits=httpx.Limits(max_keepalive_connections=0)
        ) as client:
            for i in range(n):
                got = client.post(
                    TRACK,
                    json=event(f"https://example.com/{i}"),
                    headers={"User-Agent": CHROME},
                )
                assert got.status_code == 200 and got.json() == {"tracked": True}, got.text
                workers.add(got.headers["x-request-id"][:16])  # req_ + the process's prefix
        assert len(workers) == 2, workers
        assert stored(kind, url) == 0, "still buffered: nothing written by time yet"
        os.killpg(server.proc.pid, signal.SIGTERM)
        server.proc.wait(timeout=30)
        assert stored(kind, url) == n, server.stderr()


def bootstrap_key(env: dict[str, str]) -> str:
    out = subprocess.run(
        [*core_api_command(), "bootstrap", "--name", "Pixel"],
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
    ).stdout
    return str(json.loads(out)["api_key"]["key"])
