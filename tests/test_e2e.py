"""End to end: `core-api serve` as a user starts it (a real Granian process with several
workers), driven over real TCP connections with httpx.

The headline check: a key that every worker process has seen and cached is refused by
all of them on the very next request after it is revoked.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from support import clean_env, core_api_command, fresh_database

pytestmark = pytest.mark.e2e

START_TIMEOUT = 30.0
KEY_LINE = re.compile(r"^\s+(sk_live_[0-9A-Za-z]{38})\s*$", re.MULTILINE)
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (from /proc/*/stat)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ..." - comm may contain spaces/parentheses.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return sorted(found)


def read_syscalls(pid: int) -> int:
    """Read-type system calls the process has made so far (/proc/PID/io ``syscr``)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("syscr:"):
            return int(line.split()[1])
    raise AssertionError(f"no syscr for {pid}")


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    stdout_path: Path
    stderr_path: Path
    logs: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"server exited with {self.proc.returncode}\nstdout:\n{self.stdout()}\n"
                    f"stderr:\n{self.stderr()}"
                )
            try:
                if httpx.get(f"{self.base}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not healthy after {START_TIMEOUT}s\n{self.stderr()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=15)
        # Whatever is left of the group (workers included) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)


class Launcher:
    """Starts servers for one test and guarantees they are all stopped afterwards."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.servers: list[Server] = []

    def start(self, env: dict[str, str], workers: int, *extra: str) -> Server:
        port = free_port()
        n = len(self.servers)
        out_path = self.tmp_path / f"server{n}.out"
        err_path = self.tmp_path / f"server{n}.err"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                [
                    *core_api_command(),
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--workers",
                    str(workers),
                    *extra,
                ],
                env=env,
                cwd=self.tmp_path,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: one killpg stops every worker
            )
        server = Server(proc, port, out_path, err_path)
        self.servers.append(server)
        server.wait_healthy()
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    launch = Launcher(tmp_path)
    try:
        yield launch
    finally:
        launch.stop_all()


def fresh_connection_client(server: Server, key: str) -> httpx.Client:
    """Every request on a new TCP connection, so the kernel spreads them over the workers."""
    return httpx.Client(
        base_url=server.base,
        headers={"Authorization": f"Bearer {key}"},
        limits=httpx.Limits(max_keepalive_connections=0),
        timeout=10.0,
    )


def sqlite_env(tmp_path: Path) -> dict[str, str]:
    return clean_env(
        tmp_path,
        database_url=f"sqlite:///{tmp_path}/db.sqlite",
        shm_path=str(tmp_path / "shm"),
        log_level="WARNING",
        # 40 requests with a revoked key from one IP must all be 401, not throttled to 429
        # by the (separately tested) per-IP auth-failure limiter.
        auth_failure_limit="1000",
    )


def printed_key(server: Server) -> str:
    matches = KEY_LINE.findall(server.stdout())
    assert len(matches) == 1, server.stdout()
    return str(matches[0])


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
    assert "applied 1 migration(s)" in server.stdout()
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
