"""Background jobs: expired idempotency records are purged, by `core-api worker` and
inside serve's processes."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from conftest import Api
from core_api.clock import ManualClock
from core_api.runtime import Runtime
from core_api.worker import purge_expired
from support import clean_env, core_api_command


async def test_purge_removes_only_expired_records(
    api: Api, runtime: Runtime, clock: ManualClock
) -> None:
    await api.post("/api/v1/workspaces", json={"name": "Old"}, headers={"Idempotency-Key": "old"})
    clock.advance(12 * 3600)
    new_at = clock.now_ms()
    await api.post("/api/v1/workspaces", json={"name": "New"}, headers={"Idempotency-Key": "new"})
    clock.advance(12 * 3600 + 1)
    assert await purge_expired(runtime) == 1
    left = await runtime.db.fetch_all("SELECT created_at FROM idempotency_records")
    assert [r["created_at"] for r in left] == [new_at]  # keys are stored only as hashes
    assert await purge_expired(runtime) == 0


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
