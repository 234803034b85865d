"""`core-api migrate` and `core-api bootstrap` as a user runs them: real processes, a real
SQLite file and a PostgreSQL database of our own."""

from __future__ import annotations

import json
import re
import resource
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from core_api import _native
from core_api.storage.migrate import available
from support import clean_env, core_api_command, fresh_database

KEY = re.compile(r"^sk_live_[0-9A-Za-z]{38}$")
SECRET = "cli-test-secret-key-0123456789abcdef"
MIGRATIONS = [m.name for m in available("sqlite")]


@dataclass
class Target:
    """One database the CLI is pointed at, and a way to query it from the test."""

    dialect: str
    url: str
    env: dict[str, str]
    cwd: Path

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*core_api_command(), *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.dialect == "sqlite":
            conn = sqlite3.connect(self.url.removeprefix("sqlite:///"))
            try:
                return conn.execute(sql, params).fetchall()
            finally:
                conn.close()
        with psycopg.connect(self.url) as conn:
            return conn.execute(sql.replace("?", "%s"), params).fetchall()

    def secret(self) -> bytes:
        if self.dialect == "sqlite":
            return (
                (Path(self.url.removeprefix("sqlite:///")).parent / "secret_key")
                .read_text()
                .strip()
                .encode()
            )
        return SECRET.encode()


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    work = tmp_path / "cwd"
    work.mkdir()
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/db/x.db"  # sqlite:////abs/... : four slashes, absolute
        assert url.startswith("sqlite:////")
        yield Target("sqlite", url, clean_env(tmp_path, database_url=url), work)
        return
    with fresh_database("cli") as url:
        yield Target(
            "postgresql", url, clean_env(tmp_path, database_url=url, secret_key=SECRET), work
        )


def test_migrate_applies_then_applies_nothing(target: Target) -> None:
    first = target.run("migrate")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        f"applied {len(MIGRATIONS)} migration(s): {', '.join(MIGRATIONS)}"
    ]
    second = target.run("migrate")
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == ["applied 0 migration(s)"]
    versions = target.query("SELECT version FROM schema_migrations ORDER BY version")
    assert [int(v) for (v,) in versions] == [m.version for m in available("sqlite")]
    if target.dialect == "sqlite":
        assert Path(target.url.removeprefix("sqlite:///")).is_file()


def test_bootstrap_prints_one_json_object_with_a_working_key(target: Target) -> None:
    proc = target.run("bootstrap", "--name", "Acme", "--tier", "pro", "--email", "a@b.c")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip()
    assert out.startswith("{") and out.endswith("}")
    result = json.loads(out)  # the whole of stdout is exactly one JSON document
    assert isinstance(result, dict)
    assert set(result) == {"user", "workspace", "api_key"}

    user, workspace, key = result["user"], result["workspace"], result["api_key"]
    assert user["name"] == "Acme" and user["email"] == "a@b.c" and isinstance(user["id"], int)
    assert workspace["name"] == "Acme" and workspace["slug"] == "acme"
    assert workspace["tier"] == "pro"
    assert workspace["settings"] == {"timezone": "UTC", "locale": "en_GB"}
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", workspace["created_at"])
    assert KEY.match(key["key"]), key["key"]
    assert key["prefix"] == key["key"][:11]
    assert key["scopes"] == ["*"]
    assert key["rate_limit_tier"] == "pro"
    assert key["expires_at"] is None

    # Stored as the peppered hash of the printed key, never the key itself.
    rows = target.query("SELECT key_hash, user_id, workspace_id FROM api_keys")
    assert rows == [
        (_native.hash_key(target.secret(), key["key"]).hex(), user["id"], workspace["id"])
    ]
    if target.dialect == "sqlite":
        raw = b"".join(
            p.read_bytes() for p in Path(target.url.removeprefix("sqlite:///")).parent.glob("x.db*")
        )
        assert key["key"].encode() not in raw
    members = target.query(
        "SELECT user_id, role FROM workspace_members WHERE workspace_id = ?", (workspace["id"],)
    )
    assert members == [(user["id"], "owner")]

    # A second bootstrap with the same name gets its own slug and its own key.
    again = target.run("bootstrap", "--name", "Acme")
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["workspace"]["slug"] == "acme-2"
    assert second["workspace"]["tier"] == "free"  # the plans file's default tier
    assert second["api_key"]["key"] != key["key"]
    assert KEY.match(second["api_key"]["key"])


def test_bootstrap_with_unknown_tier_exits_2_and_creates_nothing(target: Target) -> None:
    proc = target.run("bootstrap", "--name", "Acme", "--tier", "platinum")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "platinum" in lines[0] and "Traceback" not in proc.stderr
    for table in ("users", "workspaces", "api_keys"):
        assert target.query(f"SELECT COUNT(*) FROM {table}") == [(0,)], table


def test_bootstrap_requires_a_name(target: Target) -> None:
    proc = target.run("bootstrap", "--tier", "pro")
    assert proc.returncode == 2
    assert "--name" in proc.stderr


def test_relative_sqlite_url_resolves_against_the_working_directory(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*core_api_command(), "migrate"],
        env=clean_env(tmp_path, database_url="sqlite:///rel/dir/x.db"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "rel" / "dir" / "x.db").is_file()
    assert (tmp_path / "rel" / "dir" / "secret_key").is_file()


@pytest.mark.postgres
def test_postgresql_database_that_does_not_exist_is_a_clean_error(tmp_path: Path) -> None:
    """Not a configuration error: one line saying why, exit 1, no traceback, no hang."""
    with fresh_database("gone") as url:
        pass  # created and dropped: the URL now names a missing database
    proc = subprocess.run(
        [*core_api_command(), "migrate"],
        env=clean_env(tmp_path, database_url=url, secret_key=SECRET),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.strip().startswith("core-api: cannot connect to PostgreSQL:")
    assert "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_serve_passes_the_connection_limits_to_granian() -> None:
    from core_api.cli import FD_RESERVE, granian_argv
    from core_api.config import Settings

    s = Settings.from_env(
        env={
            "CORE_API_BACKLOG": "8192",
            "CORE_API_HEADER_READ_TIMEOUT": "7",
            "CORE_API_KEEP_ALIVE": "no",
            "CORE_API_HTTP1_BUFFER_SIZE": "16384",
        }
    )
    argv = granian_argv(s, 20_000, uvloop=True)
    flags = {flag: argv[i + 1] for i, flag in enumerate(argv[:-1]) if flag.startswith("--")}
    assert argv[:2] == ["-m", "granian"] and argv[-1] == "core_api.asgi:app"
    assert flags["--backlog"] == "8192"
    assert flags["--http"] == "1"
    assert flags["--http1-header-read-timeout"] == "7000"  # milliseconds
    assert flags["--http1-buffer-size"] == "16384"
    assert "--no-http1-keep-alive" in argv
    # Backpressure defaults to what the descriptors allow, and never exceeds it.
    assert flags["--backpressure"] == str(20_000 - FD_RESERVE - s.pg_pool_size)
    small = Settings.from_env(env={"CORE_API_BACKPRESSURE": "300"})
    argv = granian_argv(small, 20_000, uvloop=False)
    assert argv[argv.index("--backpressure") + 1] == "300"
    big = Settings.from_env(env={"CORE_API_BACKPRESSURE": "50000"})
    argv = granian_argv(big, 1024, uvloop=False)
    assert argv[argv.index("--backpressure") + 1] == str(1024 - FD_RESERVE - 10)


def test_serve_raises_the_open_file_limit_to_the_hard_limit() -> None:
    code = (
        "import resource; from core_api.cli import raise_nofile_limit; "
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE); "
        "print(soft, raise_nofile_limit(), hard)"
    )

    def lower() -> None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    done = subprocess.run(
        [sys.executable, "-c", code], preexec_fn=lower, capture_output=True, text=True, check=True
    )
    before, after, hard = (int(x) for x in done.stdout.split())
    assert before == 256
    assert after == hard
