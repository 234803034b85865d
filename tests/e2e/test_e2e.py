"""End to end: `core-api serve` as a user starts it (a real Granian process with several
workers), driven over real TCP connections with httpx.

The headline check: a key that every worker process has seen and cached is refused by
all of them on the very next request after it is revoked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core_api.storage.migrate import available
from support import (
    ISO,
    Launcher,
    Server,
    children,
    clean_env,
    fresh_connection_client,
    fresh_database,
    printed_key,
    read_syscalls,
    sqlite_env,
)

pytestmark = pytest.mark.e2e


def revocation_scenario(server: Server, workers: int) -> None:
    key = printed_key(server)
    # The README's first request: the printed key reads the printed workspace.
    url_match = re.search(r"http://\S+/api/v1/workspaces/(\d+)", server.stdout())
    assert url_match, server.stdout()
    workspace_id = int(url_match.group(1))
    with httpx.Client(
        base_url=server.base, headers={"Authorization": f"Bearer {key}"}, timeout=10.0
    ) as admin:
        got = admin.get(f"/api/v1/workspaces/{workspace_id}")
        assert got.status_code == 200, got.text
        assert got.headers["content-type"].startswith("application/json")
        assert got.headers.get("x-request-id")
        assert got.headers.get("x-ratelimit-limit")
        body = got.json()
        assert set(body) == {"data"}
        data = body["data"]
        assert set(data) == {"id", "name", "slug", "tier", "settings", "created_at", "updated_at"}
        # As the README shows it for a fresh deployment.
        assert (data["id"], data["name"], data["slug"], data["tier"]) == (
            1,
            "Default",
            "default",
            "free",
        )
        assert workspace_id == 1
        assert data["settings"] == {"timezone": "UTC", "locale": "en_GB"}
        assert ISO.match(data["created_at"]) and ISO.match(data["updated_at"])

        assert admin.get("/api/v1/workspaces/999999").status_code == 404
        assert (
            httpx.get(f"{server.base}/api/v1/workspaces/{workspace_id}", timeout=5).status_code
            == 401
        )

        created = admin.post(
            "/api/v1/api-keys", json={"name": "e2e", "scopes": ["workspaces:read"]}
        )
        assert created.status_code == 201, created.text
        new = created.json()["data"]
        assert re.match(r"^sk_live_[0-9A-Za-z]{38}$", new["key"])

        workers_pids = children(server.proc.pid)
        assert len(workers_pids) == workers, workers_pids
        before = {pid: read_syscalls(pid) for pid in workers_pids}

        with fresh_connection_client(server, new["key"]) as client:
            statuses = [
                client.get(f"/api/v1/workspaces/{workspace_id}").status_code for _ in range(40)
            ]
        assert statuses == [200] * 40
        # The key's own scope is enforced too (it may read workspaces, not list keys).
        with fresh_connection_client(server, new["key"]) as client:
            denied = client.get("/api/v1/api-keys")
        assert denied.status_code == 403 and denied.json()["error"] == "access_denied"

        # Every worker took part in serving those requests (so every worker cached the key).
        after = {pid: read_syscalls(pid) for pid in workers_pids}
        busy = [pid for pid in workers_pids if after[pid] - before[pid] >= 5]
        assert busy == workers_pids, (before, after)

        revoked = admin.delete(f"/api/v1/api-keys/{new['id']}")
        assert revoked.status_code == 204 and revoked.content == b""

    with fresh_connection_client(server, new["key"]) as client:
        after_revoke = [client.get(f"/api/v1/workspaces/{workspace_id}") for _ in range(40)]
    assert [r.status_code for r in after_revoke] == [401] * 40
    assert after_revoke[0].json()["error"] == "unauthorized"
    # The bootstrap key is unaffected, still on fresh connections to every worker.
    with fresh_connection_client(server, key) as client:
        assert {
            client.get(f"/api/v1/workspaces/{workspace_id}").status_code for _ in range(10)
        } == {200}
    # The worker processes are still the same ones (nothing crashed and restarted).
    assert children(server.proc.pid) == workers_pids


def test_revoked_key_fails_on_the_next_request_in_every_worker(
    launcher: Launcher, tmp_path: Path
) -> None:
    server = launcher.start(sqlite_env(tmp_path), 2, "--first-run-bootstrap")
    applied = len(available("sqlite"))
    assert f"applied {applied} migration(s)" in server.stdout()
    revocation_scenario(server, workers=2)


def test_first_run_bootstrap_happens_once(launcher: Launcher, tmp_path: Path) -> None:
    env = sqlite_env(tmp_path)
    first = launcher.start(env, 1, "--first-run-bootstrap")
    key = printed_key(first)
    first.stop()
    second = launcher.start(env, 1, "--first-run-bootstrap")
    out = second.stdout()
    assert "sk_live_" not in out, out
    assert "applied 0 migration(s)" in out
    # The first key survives the restart (the secret pepper is stable on disk).
    got = httpx.get(
        f"{second.base}/api/v1/workspaces", headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    assert got.status_code == 200 and len(got.json()["data"]) == 1


@pytest.mark.postgres
def test_serve_on_postgresql(launcher: Launcher, tmp_path: Path) -> None:
    with fresh_database("e2e") as url:
        env = clean_env(
            tmp_path,
            database_url=url,
            secret_key="e2e-secret-key-0123456789abcdefghij",
            shm_path=str(tmp_path / "shm"),
            log_level="WARNING",
            auth_failure_limit="1000",
        )
        server = launcher.start(env, 2, "--first-run-bootstrap")
        try:
            revocation_scenario(server, workers=2)
        finally:
            server.stop()  # before the database is dropped


def test_revocation_reaches_another_node_through_redis(
    launcher: Launcher, tmp_path: Path, redis_prefix: str
) -> None:
    """Two nodes (separate shared memory) share one database and one Redis: a key revoked
    on one is refused by the other as soon as the pub/sub message lands."""
    import time

    from conftest import REDIS_URL

    env = sqlite_env(tmp_path)
    env.update({"CORE_API_REDIS_URL": REDIS_URL, "CORE_API_REDIS_PREFIX": redis_prefix})
    node_a = launcher.start(env, 1, "--first-run-bootstrap")
    node_b = launcher.start({**env, "CORE_API_SHM_PATH": str(tmp_path / "shm-b")}, 1)
    admin_key = printed_key(node_a)
    with httpx.Client(base_url=node_a.base, headers={"Authorization": f"Bearer {admin_key}"}) as a:
        doomed = a.post("/api/v1/api-keys", json={"name": "d", "scopes": ["*"]}).json()["data"]
    with fresh_connection_client(node_b, doomed["key"]) as b:
        assert b.get("/api/v1/workspaces/1").status_code == 200  # cached on node B
        with httpx.Client(
            base_url=node_a.base, headers={"Authorization": f"Bearer {admin_key}"}
        ) as a:
            assert a.delete(f"/api/v1/api-keys/{doomed['id']}").status_code == 204
        revoked_at = time.monotonic()
        while b.get("/api/v1/workspaces/1").status_code == 200:
            assert time.monotonic() - revoked_at < 1.0, "node B still accepts the revoked key"
            time.sleep(0.005)
        assert {b.get("/api/v1/workspaces/1").status_code for _ in range(5)} == {401}


def test_request_bodies_are_bounded_over_real_http(launcher: Launcher, tmp_path: Path) -> None:
    """A body over CORE_API_MAX_BODY_BYTES is refused whether or not it declares its length
    (chunked uploads are read only up to the limit), and nothing is created."""
    env = {**sqlite_env(tmp_path), "CORE_API_MAX_BODY_BYTES": "4096"}
    server = launcher.start(env, 1, "--first-run-bootstrap")
    key = printed_key(server)

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(64):
            yield b"x" * 1024
        yield b'"}'

    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    with httpx.Client(base_url=server.base, headers=headers, timeout=10) as client:
        declared = client.post("/api/v1/workspaces", content=b'{"name": "' + b"x" * 70_000 + b'"}')
        answers = [declared]
        try:
            chunked = client.post("/api/v1/workspaces", content=chunks())
            assert "content-length" not in chunked.request.headers
            answers.append(chunked)
        except (httpx.RemoteProtocolError, httpx.WriteError):
            # The server answered 413 after reading up to the limit and closed the
            # connection while the client was still sending the rest: the client may see
            # the close before it reads the answer (HTTP/1.1 allows either; seen under load).
            pass
        assert client.get("/api/v1/workspaces").json()["meta"]["total"] == 1
        malformed = client.post("/api/v1/workspaces", content=b'{"name": ')
    for response in answers:
        assert response.status_code == 413, response.text
        assert response.json() == {
            "error": "payload_too_large",
            "message": "The request body is too large.",
        }
    assert malformed.status_code == 422 and "body" in malformed.json()["errors"]
