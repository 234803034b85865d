"""Shared plumbing for the benchmark runners: servers, stores, keys, clean-up.

Everything here is loopback-only and bounded: servers run in their own process group and
are stopped by that group's id; temporary PostgreSQL databases, Redis key prefixes,
shared-memory files and SQLite files are created per run and removed afterwards.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
PYTHON = sys.executable
HOST = "127.0.0.1"

DEFAULT_PG_ADMIN_URL = "postgresql://127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

# A tier so generous the limiter never refuses during a run: throughput then measures the
# full path with rate limiting active (the bucket is still checked and debited every time).
BENCH_TIER = "bench"
PLANS_TOML = f"""\
# Written by benchmarks/common.py: the shipped tiers plus a '{BENCH_TIER}' tier whose
# limit the load generators cannot reach in a short run.
default_tier = "free"

[tiers.free]
requests_per_minute = 60
burst = 0.0

[tiers.starter]
requests_per_minute = 1000
burst = 0.2

[tiers.pro]
requests_per_minute = 5000
burst = 0.3

[tiers.agency]
requests_per_minute = 20000
burst = 0.5

[tiers.enterprise]
requests_per_minute = 100000
burst = 1.0

[tiers.{BENCH_TIER}]
requests_per_minute = 1000000000
burst = 1.0
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def core_api_command() -> list[str]:
    """``.venv/bin/core-api`` when installed as a script, else the same entry point."""
    script = Path(PYTHON).with_name("core-api")
    if script.exists():
        return [str(script)]
    return [PYTHON, "-c", "from core_api.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def report_header(kind: str, load_before: tuple[float, ...]) -> dict[str, Any]:
    """The fields every benchmark report starts with: what, when, where, and the load."""
    return {
        "kind": kind,
        "timestamp": timestamp(),
        "machine": machine_info(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["mem_kb"] = int(line.split()[1])
                break
    info["platform"] = sys.platform
    with contextlib.suppress(Exception):
        info["kernel"] = os.uname().release
    return info


def write_json(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


# --------------------------------------------------------------------------- servers


@dataclass
class Server:
    """A server process in its own session; stopped by process-group id."""

    name: str
    argv: list[str]
    port: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=str(ROOT),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def wait_ready(self, path: str, headers: dict[str, str], timeout: float = 30.0) -> None:
        """Poll ``path`` until it answers 200 (the app's lifespan start-up has finished)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        url = f"http://{HOST}:{self.port}{path}"
        last: object = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name}: server exited with {self.proc.returncode}:\n{self.tail()}"
                )
            try:
                req = urllib.request.Request(url, headers=headers)
                with urllib.request.urlopen(req, timeout=2) as resp:
                    if resp.status == 200:
                        return
                    last = resp.status
            except urllib.error.HTTPError as exc:
                last = exc.code
            except (OSError, urllib.error.URLError) as exc:
                last = exc
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: not ready after {timeout}s ({last}):\n{self.tail()}")

    def worker_pids(self) -> list[int]:
        """Granian's worker processes: descendants of the server process."""
        assert self.proc is not None
        pids, frontier = [], [self.proc.pid]
        while frontier:
            pid = frontier.pop()
            with contextlib.suppress(OSError):
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                for child in map(int, children):
                    pids.append(child)
                    frontier.append(child)
        return pids or [self.proc.pid]

    def cpu_seconds(self) -> float:
        """User + system CPU of the server and all its workers so far (from /proc)."""
        assert self.proc is not None
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in {self.proc.pid, *self.worker_pids()}:
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/{pid}/stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / ticks

    def tail(self, n: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        # Granian workers share the group; make sure none outlives the parent.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()
        self.proc = None


# --------------------------------------------------------------------------- stores


@dataclass
class Store:
    """One service configuration: env vars plus the clean-up they need."""

    label: str
    env: dict[str, str]
    cleanups: list[Any] = field(default_factory=list)

    def close(self) -> None:
        for cleanup in reversed(self.cleanups):
            try:
                cleanup()
            except Exception as exc:
                log(f"[bench] clean-up for {self.label} failed: {exc}")
        self.cleanups.clear()


def base_env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORE_API_")}
    plans = workdir / "plans.toml"
    if not plans.exists():
        plans.write_text(PLANS_TOML)
    env.update(
        {
            "CORE_API_PLANS_FILE": str(plans),
            "CORE_API_LOG_LEVEL": "WARNING",
            "CORE_API_SECRET_KEY": "bench-secret-" + secrets.token_hex(16),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _shm_cleanup(shm: str) -> None:
    for path in glob.glob(shm + "*"):
        with contextlib.suppress(OSError):
            if os.path.isdir(path):  # <shm>.metrics-<port>/: the workers' metrics snapshots
                shutil.rmtree(path)
            else:
                os.unlink(path)


def sqlite_store(workdir: Path, label: str = "sqlite") -> Store:
    env = base_env(workdir)
    token = secrets.token_hex(4)
    db = workdir / f"{label}-{token}.db"
    shm = f"/dev/shm/core-api-bench-{label}-{token}"
    env["CORE_API_DATABASE_URL"] = f"sqlite:///{db}"  # absolute path: sqlite:////...
    env["CORE_API_SHM_PATH"] = shm
    store = Store(label, env)
    store.cleanups.append(lambda: _shm_cleanup(shm))
    return store


def postgres_store(workdir: Path, admin_url: str | None = None) -> Store:
    import psycopg

    admin = admin_url or os.environ.get("BENCH_PG_ADMIN_URL", DEFAULT_PG_ADMIN_URL)
    name = f"core_api_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0]
    env = base_env(workdir)
    shm = f"/dev/shm/core-api-bench-pg-{secrets.token_hex(4)}"
    env["CORE_API_DATABASE_URL"] = f"{base}/{name}"
    env["CORE_API_SHM_PATH"] = shm
    store = Store("postgres", env)

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    store.cleanups.append(drop)
    store.cleanups.append(lambda: _shm_cleanup(shm))
    return store


def with_redis(store: Store, redis_url: str | None = None) -> Store:
    """``store`` with ``CORE_API_REDIS_URL`` set under a fresh key prefix, purged afterwards."""
    import redis

    url = redis_url or os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL)
    prefix = f"core-api-bench-{secrets.token_hex(4)}:"
    store.env["CORE_API_REDIS_URL"] = url
    store.env["CORE_API_REDIS_PREFIX"] = prefix
    client = redis.Redis.from_url(url, socket_timeout=2)
    client.ping()

    def purge() -> None:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        client.close()

    store.cleanups.append(purge)
    return store


def redis_store(workdir: Path, redis_url: str | None = None) -> Store:
    return with_redis(sqlite_store(workdir, "redis"), redis_url)


def postgres_redis_store(workdir: Path) -> Store:
    """PostgreSQL store with ``CORE_API_REDIS_URL`` set: the multi-node configuration."""
    store = postgres_store(workdir)
    store.label = "postgres+redis"
    return with_redis(store)


STORES = {
    "sqlite": sqlite_store,
    "postgres": postgres_store,
    "redis": redis_store,
    "postgres+redis": postgres_redis_store,
}


# --------------------------------------------------------------------------- service


def populate(env: dict[str, str], *args: str, timeout: float = 600) -> Any:
    """``python -m benchmarks.populate ARGS`` with the store's environment; its JSON."""
    out = subprocess.run(
        [PYTHON, "-m", "benchmarks.populate", *args],
        env={**env, "CORE_API_PG_STATEMENT_TIMEOUT": "0"},  # bulk inserts run long
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"populate {' '.join(args)} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


@dataclass
class Credentials:
    key: str
    workspace_id: int


def bootstrap(env: dict[str, str], name: str, tier: str) -> Credentials:
    """``core-api bootstrap`` (runs migrations) and return the key and workspace id."""
    out = subprocess.run(
        [*core_api_command(), "bootstrap", "--name", name, "--tier", tier],
        env=env,
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"bootstrap failed ({out.returncode}): {out.stderr or out.stdout}")
    data = json.loads(out.stdout)
    return Credentials(data["api_key"]["key"], int(data["workspace"]["id"]))


def service_server(store: Store, workdir: Path, workers: int = 1) -> Server:
    port = free_port()
    argv = [*core_api_command(), "serve", "--host", HOST, "--port", str(port)]
    argv += ["--workers", str(workers)]
    log_path = workdir / f"{store.label}.log"
    return Server(f"service[{store.label}]", argv, port, dict(store.env), log_path)


def locust_env(
    workdir: Path, users: list[dict[str, Any]], env: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of a locust run over seeded users: ``env`` (by default this
    process's, without ``CORE_API_*``) plus ``BENCH_USERS_FILE`` naming them."""
    if env is None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CORE_API_")}
    users_file = workdir / "users.json"
    users_file.write_text(json.dumps(users))
    return {**env, "BENCH_USERS_FILE": str(users_file)}


def start_service(
    store: Store, workdir: Path, stack: contextlib.ExitStack, user: dict[str, Any], workers: int
) -> Server:
    """``core-api serve`` on ``store``, stopped with ``stack``; returns once ``user``'s key
    reads its own workspace."""
    server = service_server(store, workdir, workers=workers)
    server.start()
    stack.callback(server.stop)
    server.wait_ready(
        f"/api/v1/workspaces/{user['workspace_id']}",
        {"Authorization": f"Bearer {user['key']}"},
        timeout=60,
    )
    return server


def granian_argv(module: str, port: int, workers: int = 1) -> list[str]:
    """The same Granian flags ``core-api serve`` uses."""
    return [
        PYTHON, "-m", "granian", "--interface", "asgi", "--host", HOST, "--port", str(port),
        "--workers", str(workers), "--loop", "uvloop", "--no-ws", "--log-level", "warning",
        module,
    ]  # fmt: skip


def baseline_server(workdir: Path, workers: int = 1) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORE_API_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    argv = granian_argv("benchmarks.baseline_app:app", port, workers)
    return Server("baseline", argv, port, env, workdir / "baseline.log")


@contextlib.contextmanager
def workdir(prefix: str = "core-api-bench-") -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if os.environ.get("BENCH_KEEP_WORKDIR"):
            log(f"[bench] kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)
