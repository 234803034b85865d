"""End to end through real Granian processes: one rate-limit budget per key across worker
processes (shared memory) and across nodes (Redis), and idempotency across workers."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis as sync_redis

from conftest import REDIS_URL
from support import Launcher, Server, children, fresh_connection_client, printed_key, sqlite_env

pytestmark = pytest.mark.e2e

FREE_PER_SECOND = 1.0  # free tier: 60/min, no burst


def hammer(server: Server, key: str, path: str, n: int) -> tuple[list[int], float]:
    started = time.monotonic()
    with fresh_connection_client(server, key) as client:
        statuses = [client.get(path).status_code for _ in range(n)]
    return statuses, time.monotonic() - started


def assert_one_budget(statuses: list[int], elapsed: float) -> None:
    """60 requests in a burst, plus at most what refilled while we were sending."""
    assert set(statuses) <= {200, 429}, statuses
    allowed = statuses.count(200)
    assert 60 <= allowed <= 60 + int(elapsed * FREE_PER_SECOND) + 1, (allowed, elapsed)


@pytest.fixture
def redis_env_prefix() -> object:
    prefix = f"core-api-e2e:{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = sync_redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)


@pytest.mark.parametrize("with_redis", [False, True], ids=["shared-memory", "redis"])
def test_two_workers_share_one_budget(
    launcher: Launcher, tmp_path: Path, with_redis: bool, request: pytest.FixtureRequest
) -> None:
    env = sqlite_env(tmp_path)
    if with_redis:
        env["CORE_API_REDIS_URL"] = REDIS_URL
        env["CORE_API_REDIS_PREFIX"] = str(request.getfixturevalue("redis_env_prefix"))
    server = launcher.start(env, 2, "--first-run-bootstrap")
    assert len(children(server.proc.pid)) == 2
    statuses, elapsed = hammer(server, printed_key(server), "/api/v1/workspaces/1", 75)
    assert_one_budget(statuses, elapsed)


def test_two_nodes_share_one_budget_through_redis(
    launcher: Launcher, tmp_path: Path, redis_env_prefix: str
) -> None:
    """Two servers with separate shared memory (two hosts, as far as they know), one Redis."""
    env = sqlite_env(tmp_path)
    env.update({"CORE_API_REDIS_URL": REDIS_URL, "CORE_API_REDIS_PREFIX": redis_env_prefix})
    first = launcher.start(env, 1, "--first-run-bootstrap")
    key = printed_key(first)
    second = launcher.start({**env, "CORE_API_SHM_PATH": str(tmp_path / "shm-node-b")}, 1)
    started = time.monotonic()
    statuses: list[int] = []
    with fresh_connection_client(first, key) as a, fresh_connection_client(second, key) as b:
        for i in range(80):
            statuses.append((a if i % 2 else b).get("/api/v1/workspaces/1").status_code)
    assert_one_budget(statuses, time.monotonic() - started)


def test_idempotency_across_workers(launcher: Launcher, tmp_path: Path) -> None:
    env = sqlite_env(tmp_path)
    server = launcher.start(env, 2, "--first-run-bootstrap")
    key = printed_key(server)
    headers = {"Idempotency-Key": str(uuid.uuid4())}

    def post(_: int) -> httpx.Response:
        with fresh_connection_client(server, key) as client:
            return client.post("/api/v1/workspaces", json={"name": "Once"}, headers=headers)

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(post, range(16)))
    assert {r.status_code for r in responses} <= {201, 409}
    originals = [
        r for r in responses if r.status_code == 201 and "idempotent-replayed" not in r.headers
    ]
    assert len(originals) == 1
    with fresh_connection_client(server, key) as client:
        listed = client.get("/api/v1/workspaces", params={"search": "once"}).json()
        assert listed["meta"]["total"] == 1
        replay = client.post("/api/v1/workspaces", json={"name": "Once"}, headers=headers)
    assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == originals[0].json()
