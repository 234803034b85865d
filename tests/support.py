"""Shared test helpers: throw-away PostgreSQL databases, the core-api command and a clean
environment, real `core-api serve` servers (Granian processes), a loopback webhook receiver
and a read-back of every stored resource through the API."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from conftest import ADMIN_URL, SECRET, Api


def url_for(name: str) -> str:
    """A ``postgresql://`` URL (what the app accepts) for database ``name`` on the test server."""
    info = psycopg.conninfo.conninfo_to_dict(ADMIN_URL)
    host, port = info.get("host", "127.0.0.1"), info.get("port", "5432")
    user = info.get("user")
    auth = f"{user}@" if user else ""
    return f"postgresql://{auth}{host}:{port}/{name}"


@contextmanager
def fresh_database(tag: str = "t") -> Iterator[str]:
    """Create an empty database, yield its URL, drop it (even if connections linger)."""
    name = f"core_api_{tag}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url_for(name)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def core_api_command() -> list[str]:
    """The ``core-api`` console script, or the same entry point through this interpreter
    when the virtualenv was set up without scripts (a ``.pth`` development install)."""
    script = Path(sys.executable).parent / "core-api"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from core_api.cli import main; sys.exit(main())"]


def clean_env(tmp: Path, **core_api: str) -> dict[str, str]:
    """A minimal environment: no CORE_API_* leaks in from the developer's shell."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp), "LANG": "C.UTF-8"}
    # Shared memory inside the test's own folder, not /dev/shm (nothing left behind).
    env["CORE_API_SHM_PATH"] = str(tmp / "shm")
    env.update({f"CORE_API_{k.upper()}": v for k, v in core_api.items()})
    return env


def served_env(tmp_path: Path, database_url: str, **core_api: str) -> dict[str, str]:
    """``clean_env`` for a server a test drives: ``database_url``, the tests' secret key,
    WARNING logs, and webhooks allowed to a loopback receiver over plain HTTP."""
    settings = {
        "secret_key": SECRET.decode(),
        "log_level": "WARNING",
        "webhook_allow_private_networks": "true",
        "webhook_require_https": "false",
        **core_api,
    }
    return clean_env(tmp_path, database_url=database_url, **settings)


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
        if workers > 1:
            wait_for_workers(server, workers)
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()


def wait_for_workers(server: Server, count: int = 2, within: float = 30.0) -> None:
    """Returns once ``count`` worker processes have answered (request ids carry a per-process
    prefix). A server reports healthy when its first worker answers; a test about several
    workers must not start while the others are still starting (seen on a loaded CI host)."""
    seen: set[str] = set()
    deadline = time.monotonic() + within
    with httpx.Client(
        base_url=server.base, timeout=2.0, limits=httpx.Limits(max_keepalive_connections=0)
    ) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                seen.add(client.get("/health").headers.get("x-request-id", "")[:16])
            if len(seen) >= count:
                return
            time.sleep(0.02)
    raise AssertionError(f"only {len(seen)} of {count} workers answered within {within} s")


def fresh_connection_client(server: Server, key: str) -> httpx.Client:
    """Every request on a new TCP connection, so the kernel spreads them over the workers."""
    return httpx.Client(
        base_url=server.base,
        headers={"Authorization": f"Bearer {key}"},
        limits=httpx.Limits(max_keepalive_connections=0),
        timeout=10.0,
    )


class HookReceiver:
    """A webhook receiver on 127.0.0.1 (threads, for tests that drive a real server):
    records each request (``hits``: lower-cased headers and body) and its event id
    (``received``), and answers 200 after ``delay`` seconds. ``arrived`` is set when the
    first request has come in (so a test knows a send is in flight)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.received: list[str] = []
        self.hits: list[tuple[dict[str, str], bytes]] = []
        self.arrived = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.arrived.set()
                time.sleep(receiver.delay)
                receiver.hits.append(({k.lower(): v for k, v in self.headers.items()}, body))
                receiver.received.append(json.loads(body)["id"])
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def hook_receiver(delay: float = 0.0) -> Iterator[HookReceiver]:
    receiver = HookReceiver(delay)
    try:
        yield receiver
    finally:
        receiver.close()


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


WS = "/api/v1/workspaces"
KEYS = "/api/v1/api-keys"
MAX_PAGES = 200


async def _all_pages(
    api: Api, path: str, headers: dict[str, str], include: str
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in range(1, MAX_PAGES + 1):
        params = {"page": str(page), "per_page": "100", "include": include}
        got = await api.get(path, params=params, headers=headers)
        assert got.status == 200, (path, page, headers, got.json)
        items += got.json["data"]
        if got.json["links"]["next"] is None:
            return items
    raise AssertionError(f"{path} has more than {MAX_PAGES} pages")


async def read_back(api: Api) -> dict[str, dict[int, Any]]:
    """``{"workspaces": {id: item}, "keys": {id: item}}`` as GET by id returns them."""
    snapshot: dict[str, dict[int, Any]] = {"workspaces": {}, "keys": {}}
    for workspace in await _all_pages(api, WS, {}, "owner,members"):
        got = await api.get(f"{WS}/{workspace['id']}")
        assert got.status == 200, (workspace["id"], got.json)
        snapshot["workspaces"][workspace["id"]] = got.json["data"]
        acting = {"X-Workspace-ID": str(workspace["id"])}
        for key in await _all_pages(api, KEYS, acting, "workspace,user"):
            got = await api.get(f"{KEYS}/{key['id']}", headers=acting)
            assert got.status == 200, (key["id"], got.json)
            snapshot["keys"][key["id"]] = got.json["data"]
    return snapshot


async def listen_for(runtime: Any, workspace_id: int, pattern: str) -> None:
    """A webhook endpoint of ``workspace_id`` subscribed to ``pattern``: events are stored
    only when some endpoint will receive them. Inserted directly, so the endpoint is neither
    counted against the tier's webhooks nor announced with events of its own."""
    from core_api.webhooks import repo as webhooks_repo

    async with runtime.db.transaction() as tx:
        await webhooks_repo.create_endpoint(
            tx,
            workspace_id=workspace_id,
            url="https://127.0.0.1:9/listen",
            events=[pattern],
            secret_sealed=b"unused",
            now=runtime.clock.now_ms(),
        )
