"""Redis going away degrades to local limiting (logged, never a 500) and recovers;
an Idempotency-Key still runs once, whichever side of the outage its retry lands on."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import falcon.testing
import pytest
import redis as sync_redis

from conftest import Api, make_settings, open_app, serving
from core_api.api_keys.service import bootstrap
from core_api.clock import ManualClock

pytestmark = pytest.mark.redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A throw-away redis-server we are allowed to kill (not the shared one)."""

    def __init__(self, port: int) -> None:
        self.port, self.proc = port, None

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(  # type: ignore[assignment]
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with sync_redis.Redis(port=self.port) as client:
                    if client.ping():
                        return
            except sync_redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()  # type: ignore[unreachable]
            self.proc.wait(timeout=10)
            self.proc = None

    def keys(self, pattern: str) -> list[bytes]:
        with sync_redis.Redis(port=self.port) as client:
            return list(client.scan_iter(match=pattern))


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis(free_port())
    server.start()
    yield server
    server.stop()


async def test_redis_killed_mid_test_degrades_and_recovers(
    private_redis: PrivateRedis,
    tmp_path: Path,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(
        f"sqlite:///{tmp_path}/db.sqlite",
        tmp_path,
        redis_url=f"redis://127.0.0.1:{private_redis.port}/0",
        redis_prefix="outage:",
    )
    runtime, app = await open_app(settings, clock)
    try:
        boot = await bootstrap(
            runtime.db, runtime.keys, runtime.plans, clock, name="A", tier="starter", email=None
        )
        api_key = boot["api_key"]
        path = f"/api/v1/workspaces/{boot['workspace']['id']}"
        async with falcon.testing.ASGIConductor(app) as conductor:
            api = Api(conductor, api_key["key"])
            assert (await api.get(path)).status == 200
            assert private_redis.keys(f"outage:rl:key:{api_key['id']}") != []

            private_redis.stop()
            caplog.set_level(logging.WARNING, logger="core_api")
            during = [await api.get(path) for _ in range(5)]
            assert [r.status for r in during] == [200] * 5
            assert all(r.header("X-RateLimit-Remaining") is not None for r in during)
            assert "Redis unavailable for rate limiting" in caplog.text

            private_redis.start()
            clock.advance(1.5)  # past the retry window
            assert (await api.get(path)).status == 200
            assert "Redis is back" in caplog.text
            assert private_redis.keys(f"outage:rl:key:{api_key['id']}") != []
    finally:
        await runtime.close()


async def test_limits_stay_exact_without_redis_after_failover(
    private_redis: PrivateRedis, tmp_path: Path, clock: ManualClock
) -> None:
    """While Redis is down the local shared-memory buckets still enforce the tier."""
    settings = make_settings(
        f"sqlite:///{tmp_path}/db.sqlite",
        tmp_path,
        redis_url=f"redis://127.0.0.1:{private_redis.port}/0",
        redis_prefix="outage2:",
    )
    runtime, app = await open_app(replace(settings), clock)
    try:
        boot = await bootstrap(
            runtime.db, runtime.keys, runtime.plans, clock, name="B", tier="free", email=None
        )
        path = f"/api/v1/workspaces/{boot['workspace']['id']}"
        private_redis.stop()
        async with falcon.testing.ASGIConductor(app) as conductor:
            api = Api(conductor, boot["api_key"]["key"])
            statuses = [(await api.get(path)).status for _ in range(61)]
        assert statuses.count(200) == 60 and statuses[-1] == 429
    finally:
        await runtime.close()


async def test_an_idempotency_key_runs_once_across_a_redis_outage(
    private_redis: PrivateRedis, database_url: str, tmp_path: Path, clock: ManualClock
) -> None:
    """Up then down, and down then up: each key creates exactly one workspace."""
    settings = make_settings(
        database_url,
        tmp_path,
        redis_url=f"redis://127.0.0.1:{private_redis.port}/0",
        redis_prefix="outage3:",
    )
    async with serving(settings, clock) as (runtime, api):
        boot = await bootstrap(
            runtime.db, runtime.keys, runtime.plans, clock, name="C", tier="pro", email=None
        )
        api.key = boot["api_key"]["key"]

        async def create(key: str) -> Any:
            return await api.post(
                "/api/v1/workspaces", json={"name": key}, headers={"Idempotency-Key": key}
            )

        async def total() -> int:
            return int((await api.get("/api/v1/workspaces")).json["meta"]["total"])

        first = await create("before-outage")  # Redis up
        assert first.status == 201 and await total() == 2
        private_redis.stop()
        retry = await create("before-outage")  # Redis down
        assert retry.status == 201 and retry.header("Idempotent-Replayed") == "true"
        assert retry.json == first.json and await total() == 2

        during = await create("during-outage")  # Redis still down
        assert during.status == 201 and await total() == 3
        private_redis.start()
        clock.advance(1.5)  # past the limiter's Redis retry window
        after = await create("during-outage")  # Redis back
        assert after.status == 201 and after.header("Idempotent-Replayed") == "true"
        assert after.json == during.json and await total() == 3
