"""Background jobs: cluster jobs run once per interval across processes (leases), by
`core-api worker` and inside serve's processes; per-process jobs flush on shutdown."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import falcon.testing

from conftest import Api
from core_api.api_keys.service import bootstrap
from core_api.app import create_app
from core_api.clock import ManualClock
from core_api.config import Settings
from core_api.gateway.jobs import purge_idempotency_records
from core_api.runtime import Runtime
from core_api.storage import create_database, leases
from support import clean_env, core_api_command


async def test_purge_removes_only_expired_records(
    api: Api, runtime: Runtime, clock: ManualClock
) -> None:
    await api.post("/api/v1/workspaces", json={"name": "Old"}, headers={"Idempotency-Key": "old"})
    clock.advance(12 * 3600)
    new_at = clock.now_ms()
    await api.post("/api/v1/workspaces", json={"name": "New"}, headers={"Idempotency-Key": "new"})
    clock.advance(12 * 3600 + 1)
    assert await purge_idempotency_records(runtime) == "purged 1 expired idempotency record(s)"
    left = await runtime.db.fetch_all("SELECT created_at FROM idempotency_records")
    assert [r["created_at"] for r in left] == [new_at]  # keys are stored only as hashes
    assert await purge_idempotency_records(runtime) is None


async def test_one_claimant_per_interval_among_concurrent_processes(
    runtime: Runtime, settings: Settings
) -> None:
    """Twenty claims at once from two connectors (two processes' pools): exactly one wins,
    nobody else until the lease expires, then exactly one again."""
    other = create_database(settings.database_url)
    await other.open()
    try:
        now = 1_000_000
        claims = [
            leases.claim(db, "purge", f"holder-{i}", now, 60_000)
            for i, db in enumerate([runtime.db, other] * 10)
        ]
        assert sorted(await asyncio.gather(*claims)) == [False] * 19 + [True]
        assert not await leases.claim(other, "purge", "late", now + 59_999, 60_000)
        later = [
            leases.claim(db, "purge", f"next-{i}", now + 60_000, 60_000)
            for i, db in enumerate([other, runtime.db] * 5)
        ]
        assert sorted(await asyncio.gather(*later)) == [False] * 9 + [True]
        assert await leases.claim(runtime.db, "other-job", "x", now, 60_000)  # per job name
    finally:
        await other.close()


async def test_release_gives_back_only_the_holders_own_lease(runtime: Runtime) -> None:
    now = 5_000_000
    assert await leases.claim(runtime.db, "job", "a", now, 60_000)
    await leases.release(runtime.db, ["job"], "b")  # not b's: nothing changes
    assert not await leases.claim(runtime.db, "job", "b", now + 1, 60_000)
    await leases.release(runtime.db, ["job"], "a")
    assert await leases.claim(runtime.db, "job", "b", now + 1, 60_000)


async def test_per_process_jobs_flush_when_the_process_stops(
    settings: Settings, clock: ManualClock
) -> None:
    """last_used_at lives in this process's key cache until a flush; stopping the
    process flushes it, although the 5 s interval never came round."""
    rt = await Runtime.open(settings, clock=clock, run_migrations=True)
    try:
        boot = await bootstrap(
            rt.db, rt.keys, rt.plans, clock, name="Flush", tier="pro", email=None
        )
        rt.start_background()
        await asyncio.sleep(0.05)  # the first (empty) flush runs at start
        async with falcon.testing.ASGIConductor(create_app(settings, rt)) as conductor:
            api = Api(conductor, boot["api_key"]["key"])
            assert (await api.get("/api/v1/workspaces")).status == 200
        before = await rt.db.fetch_all("SELECT last_used_at FROM api_keys")
        assert [r["last_used_at"] for r in before] == [None]
    finally:
        await rt.close()
    db = create_database(settings.database_url)
    await db.open()
    try:
        after = await db.fetch_all("SELECT last_used_at FROM api_keys")
    finally:
        await db.close()
    assert [r["last_used_at"] for r in after] == [clock.now_ms()]


def test_worker_command_purges_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = clean_env(tmp_path, database_url=f"sqlite:///{tmp_path}/db.sqlite", log_level="INFO")
    subprocess.run(
        [*core_api_command(), "migrate"],
        env=env,
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=60,
    )
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        db.execute(
            "INSERT INTO idempotency_records (api_key_id, idempotency_key, request_hash, "
            "locked_until, expires_at, created_at) VALUES (1, 'stale', 'x', 0, 1, 0)"
        )
    proc = subprocess.Popen(
        [*core_api_command(), "worker"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        remaining: Any = 1
        while time.monotonic() < deadline and remaining:
            time.sleep(0.2)
            with sqlite3.connect(tmp_path / "db.sqlite") as db:
                remaining = db.execute("SELECT COUNT(*) FROM idempotency_records").fetchone()[0]
        assert remaining == 0
        assert proc.poll() is None  # still running: it loops
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "worker started" in err and "worker stopped" in err


def test_serve_runs_the_jobs_unless_told_not_to(launcher: Any, tmp_path: Path) -> None:
    from support import sqlite_env

    def stale_rows_after_start(env: dict[str, str]) -> int:
        with sqlite3.connect(tmp_path / "db.sqlite") as db:
            db.execute(
                "INSERT OR REPLACE INTO idempotency_records (api_key_id, idempotency_key, "
                "request_hash, locked_until, expires_at, created_at) VALUES (1, 's', 'x', 0, 1, 0)"
            )
        server = launcher.start(env, 1)
        time.sleep(1.0)
        server.stop()
        with sqlite3.connect(tmp_path / "db.sqlite") as db:
            return int(db.execute("SELECT COUNT(*) FROM idempotency_records").fetchone()[0])

    env = sqlite_env(tmp_path)
    launcher.start(env, 1).stop()  # creates and migrates the database
    assert stale_rows_after_start({**env, "CORE_API_EMBEDDED_WORKER": "false"}) == 1
    assert stale_rows_after_start(env) == 0
