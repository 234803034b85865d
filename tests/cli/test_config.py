"""Settings.from_env: defaults, every invalid value refused with a one-line error naming the
variable, and the CLI turning such an error into exit code 2 with one line on stderr."""

from __future__ import annotations

import ipaddress
import os
import stat
import subprocess
from pathlib import Path

import pytest

from core_api.config import DEFAULT_DATABASE_URL, ConfigError, Settings, sqlite_path
from core_api.local_files import ensure_secret_key
from support import clean_env, core_api_command

SECRET = "s" * 32


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The default database (and its generated secret key) live under ./data/.
    monkeypatch.chdir(tmp_path)


def test_defaults(tmp_path: Path) -> None:
    s = Settings.from_env(env={})
    assert s == Settings()  # each default is written once, on the field
    assert s.database_url == DEFAULT_DATABASE_URL == "sqlite:///data/core-api.db"
    assert s.is_sqlite
    assert sqlite_path(s.database_url) == tmp_path / "data" / "core-api.db"
    assert s.redis_url is None
    assert (s.host, s.port, s.workers) == ("127.0.0.1", 8000, 1)
    assert s.webhook_retry_schedule == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert s.webhook_allow_private_networks is False
    assert s.webhook_require_https is True
    assert s.webhook_timeout_seconds == 15  # one delivery attempt in all (issue 9)
    assert (s.webhook_disable_after_failures, s.webhook_disable_after_hours) == (10, 24)
    assert s.pixel_rate_limit == 300
    assert s.mcp_config is None and s.plans_file is None
    assert s.log_level == "INFO"
    assert s.trusted_proxies == ()
    assert s.max_body_bytes == 1_048_576
    assert (s.backlog, s.backpressure, s.keep_alive) == (4096, 0, True)
    assert (s.header_read_timeout, s.body_read_timeout, s.http1_buffer_size) == (10, 30, 65_536)


def test_connection_limits_are_read() -> None:
    s = Settings.from_env(
        env={
            "CORE_API_BACKLOG": "8192",
            "CORE_API_BACKPRESSURE": "5000",
            "CORE_API_HEADER_READ_TIMEOUT": "5",
            "CORE_API_BODY_READ_TIMEOUT": "2",
            "CORE_API_KEEP_ALIVE": "off",
            "CORE_API_HTTP1_BUFFER_SIZE": "16384",
        }
    )
    assert (s.backlog, s.backpressure, s.header_read_timeout) == (8192, 5000, 5)
    assert (s.body_read_timeout, s.keep_alive, s.http1_buffer_size) == (2, False, 16384)


def test_postgresql_timeouts_are_read_with_fail_fast_defaults() -> None:
    s = Settings.from_env(env={})
    assert (s.pg_connect_timeout, s.pg_statement_timeout, s.pg_pool_timeout) == (3, 5, 5)
    s = Settings.from_env(
        env={
            "CORE_API_PG_CONNECT_TIMEOUT": "10",
            "CORE_API_PG_STATEMENT_TIMEOUT": "0",
            "CORE_API_PG_POOL_TIMEOUT": "2",
        }
    )
    assert (s.pg_connect_timeout, s.pg_statement_timeout, s.pg_pool_timeout) == (10, 0, 2)


def test_reading_the_config_creates_no_file(tmp_path: Path) -> None:
    s = Settings.from_env(env={})
    assert s.secret_key == b""  # none yet: the CLI or the runtime creates it on first start
    assert s.shm_path == ""  # derived from the database's identity when the runtime starts
    assert list(tmp_path.iterdir()) == []


def test_embedded_secret_key_is_generated_once_and_private(tmp_path: Path) -> None:
    first = ensure_secret_key(Settings.from_env(env={}))
    key_file = tmp_path / "data" / "secret_key"
    assert key_file.is_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(first.secret_key) >= 32
    # Read back by the config alone, and kept by a second start.
    assert Settings.from_env(env={}).secret_key == first.secret_key
    assert ensure_secret_key(Settings.from_env(env={})).secret_key == first.secret_key
    assert [p.name for p in key_file.parent.iterdir() if p.name.startswith(".secret_key")] == []


def test_an_explicit_secret_key_writes_no_file(tmp_path: Path) -> None:
    s = ensure_secret_key(Settings.from_env(env={"CORE_API_SECRET_KEY": SECRET}))
    assert s.secret_key == SECRET.encode()
    assert list(tmp_path.iterdir()) == []


def test_shm_path_is_overridable() -> None:
    assert Settings.from_env(env={"CORE_API_SHM_PATH": "/tmp/x-shm"}).shm_path == "/tmp/x-shm"


def test_every_value_is_read(tmp_path: Path) -> None:
    plans = tmp_path / "plans.toml"
    plans.write_text('default_tier = "free"\n[tiers.free]\nrequests_per_minute = 60\nburst = 0.0\n')
    mcp = tmp_path / "mcp.toml"
    mcp.write_text("")
    s = Settings.from_env(
        env={
            "CORE_API_DATABASE_URL": "postgresql://db.internal:5432/core",
            "CORE_API_SECRET_KEY": SECRET,
            "CORE_API_REDIS_URL": "redis://cache:6379/1",
            "CORE_API_HOST": "0.0.0.0",
            "CORE_API_PORT": "9000",
            "CORE_API_WORKERS": "4",
            "CORE_API_WEBHOOK_RETRY_SCHEDULE": "1, 2,3",
            "CORE_API_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "yes",
            "CORE_API_WEBHOOK_REQUIRE_HTTPS": "off",
            "CORE_API_PIXEL_RATE_LIMIT": "0",
            "CORE_API_MCP_CONFIG": str(mcp),
            "CORE_API_PLANS_FILE": str(plans),
            "CORE_API_LOG_LEVEL": "debug",
            "CORE_API_TRUSTED_PROXIES": "10.0.0.0/8, ::1",
        }
    )
    assert s.database_url == "postgresql://db.internal:5432/core" and not s.is_sqlite
    assert s.secret_key == SECRET.encode()
    assert s.redis_url == "redis://cache:6379/1"
    assert (s.host, s.port, s.workers) == ("0.0.0.0", 9000, 4)
    assert s.webhook_retry_schedule == (1, 2, 3)
    assert s.webhook_allow_private_networks is True and s.webhook_require_https is False
    assert s.pixel_rate_limit == 0
    assert s.mcp_config == str(mcp) and s.plans_file == str(plans)
    assert s.log_level == "DEBUG"
    assert s.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1"))
    # The PostgreSQL store never writes a local secret file.
    assert not (tmp_path / "data").exists()


def test_overrides_win_and_blank_means_default() -> None:
    s = Settings.from_env(env={"CORE_API_PORT": "9000", "CORE_API_HOST": "  "}, port=9100)
    assert s.port == 9100 and s.host == "127.0.0.1"


INVALID = [
    ("PORT", "0"),
    ("PORT", "65536"),
    ("PORT", "80a"),
    ("PORT", "-1"),
    ("WORKERS", "two"),
    ("WORKERS", "0"),
    ("WORKERS", "1.5"),
    ("PIXEL_RATE_LIMIT", "-5"),
    ("MAX_BODY_BYTES", "lots"),
    ("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "maybe"),
    ("WEBHOOK_REQUIRE_HTTPS", "2"),
    ("DATABASE_URL", "mysql://localhost/db"),
    ("DATABASE_URL", "sqlite:///"),
    ("DATABASE_URL", "sqlite://relative.db"),
    ("DATABASE_URL", "data/core-api.db"),
    ("REDIS_URL", "http://localhost:6379"),
    ("REDIS_URL", "localhost:6379"),
    ("SECRET_KEY", "too-short"),
    ("PLANS_FILE", "/nonexistent/plans.toml"),
    ("MCP_CONFIG", "/nonexistent/mcp.toml"),
    ("WEBHOOK_RETRY_SCHEDULE", "5,ten,60"),
    ("WEBHOOK_RETRY_SCHEDULE", "5,-1"),
    ("WEBHOOK_RETRY_SCHEDULE", "5,,60"),
    ("WEBHOOK_RETRY_SCHEDULE", "1.5"),
    ("LOG_LEVEL", "chatty"),
    ("TRUSTED_PROXIES", "10.0.0.0/8,not-an-ip"),
    ("PUBLIC_URL", "api.example.com"),
    ("PUBLIC_URL", "ftp://api.example.com"),
    ("PUBLIC_URL", "https://api.example.com/?x=1"),
    ("BACKLOG", "64"),
    ("BACKPRESSURE", "-1"),
    ("HEADER_READ_TIMEOUT", "0"),
    ("HEADER_READ_TIMEOUT", "61"),  # Granian's maximum is 60 s
    ("BODY_READ_TIMEOUT", "0"),
    ("KEEP_ALIVE", "sometimes"),
    ("HTTP1_BUFFER_SIZE", "4096"),  # below Granian's minimum of 8 KiB
    ("PG_CONNECT_TIMEOUT", "1"),  # libpq's minimum is 2 s
    ("PG_CONNECT_TIMEOUT", "1.5"),
    ("PG_STATEMENT_TIMEOUT", "-1"),
    ("PG_POOL_TIMEOUT", "0"),
    ("WEBHOOK_TIMEOUT_SECONDS", "0"),
    ("WEBHOOK_TIMEOUT_SECONDS", "31"),  # one attempt may take at most 30 s
]


@pytest.mark.parametrize(("name", "value"), INVALID, ids=[f"{n}={v}" for n, v in INVALID])
def test_invalid_values_raise_config_error_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env={f"CORE_API_{name}": value})
    message = str(info.value)
    assert message.startswith(f"CORE_API_{name}:"), message
    assert "\n" not in message
    assert isinstance(info.value, ValueError)


def test_postgresql_url_requires_a_secret_key(tmp_path: Path) -> None:
    for url in ("postgresql://127.0.0.1/core", "postgres://127.0.0.1/core"):
        with pytest.raises(ConfigError) as info:
            Settings.from_env(env={"CORE_API_DATABASE_URL": url})
        assert str(info.value).startswith("CORE_API_SECRET_KEY:")
        assert "\n" not in str(info.value)
    assert not (tmp_path / "data").exists()


def test_sqlite_url_forms(tmp_path: Path) -> None:
    rel = Settings.from_env(env={"CORE_API_DATABASE_URL": "sqlite:///sub/dir.db"})
    assert sqlite_path(rel.database_url) == tmp_path / "sub" / "dir.db"
    absolute = Settings.from_env(env={"CORE_API_DATABASE_URL": f"sqlite:///{tmp_path}/abs.db"})
    assert sqlite_path(absolute.database_url) == tmp_path / "abs.db"


# --- through the CLI ---------------------------------------------------------------------

CLI_INVALID = [
    ({"PORT": "http"}, [], "CORE_API_PORT"),
    ({"WORKERS": "many"}, [], "CORE_API_WORKERS"),
    ({"WEBHOOK_REQUIRE_HTTPS": "sometimes"}, [], "CORE_API_WEBHOOK_REQUIRE_HTTPS"),
    ({"DATABASE_URL": "mysql://x/y"}, [], "CORE_API_DATABASE_URL"),
    ({"REDIS_URL": "memcached://x"}, [], "CORE_API_REDIS_URL"),
    ({"SECRET_KEY": "short"}, [], "CORE_API_SECRET_KEY"),
    ({"DATABASE_URL": "postgresql://127.0.0.1:5432/test"}, [], "CORE_API_SECRET_KEY"),
    ({"PLANS_FILE": "/nonexistent/plans.toml"}, [], "CORE_API_PLANS_FILE"),
    ({"WEBHOOK_RETRY_SCHEDULE": "soon"}, [], "CORE_API_WEBHOOK_RETRY_SCHEDULE"),
]


@pytest.mark.parametrize(
    ("env", "extra", "variable"),
    CLI_INVALID,
    ids=[v + ":" + next(iter(e)) for e, _, v in CLI_INVALID],
)
def test_cli_exits_2_with_one_line_naming_the_variable(
    tmp_path: Path, env: dict[str, str], extra: list[str], variable: str
) -> None:
    base = {"DATABASE_URL": f"sqlite:///{tmp_path}/cli.db"}
    proc = subprocess.run(
        [*core_api_command(), "migrate", *extra],
        env=clean_env(tmp_path, **{**base, **env}),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert variable in lines[0]
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert not (tmp_path / "cli.db").exists()


def test_invalid_plans_file_content_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "plans.toml"
    bad.write_text("this is [not toml")
    proc = subprocess.run(
        [*core_api_command(), "migrate"],
        env=clean_env(tmp_path, database_url=f"sqlite:///{tmp_path}/x.db", plans_file=str(bad)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and "CORE_API_PLANS_FILE" in proc.stderr


@pytest.mark.parametrize(
    ("flag", "variable"),
    [
        (["--port", "70000"], "CORE_API_PORT"),
        (["--workers", "0"], "CORE_API_WORKERS"),
    ],
)
def test_serve_flags_are_validated_like_the_variables(
    tmp_path: Path, flag: list[str], variable: str
) -> None:
    proc = subprocess.run(
        [*core_api_command(), "serve", *flag],
        env=clean_env(tmp_path, database_url=f"sqlite:///{tmp_path}/x.db"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert len(proc.stderr.splitlines()) == 1 and variable in proc.stderr


def test_cli_reads_the_process_environment_not_a_stale_one(tmp_path: Path) -> None:
    """A valid environment gets past configuration (control for the exit-2 tests)."""
    proc = subprocess.run(
        [*core_api_command(), "migrate"],
        env=clean_env(tmp_path, database_url=f"sqlite:///{tmp_path}/ok.db", port="8080"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "ok.db").exists()
    assert os.environ.get("CORE_API_PORT") != "8080"  # the test process is untouched


def test_the_secret_key_never_appears_in_the_settings_repr(tmp_path: Path) -> None:
    secret = "s3cret-pepper-value-that-is-long-enough-1234"
    settings = Settings.from_env(
        env={"CORE_API_SECRET_KEY": secret, "CORE_API_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}
    )
    assert settings.secret_key == secret.encode()
    assert secret not in repr(settings) and secret not in str(settings)
