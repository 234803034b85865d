"""Helpers for end-to-end tests: start `core-api serve` (real Granian processes), find
its workers, read what it printed."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from support import clean_env, core_api_command

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
