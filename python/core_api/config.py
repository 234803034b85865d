"""Settings: read once from ``CORE_API_*`` environment variables (CLI flags map onto them).

Each setting is declared once, as a field of :class:`Settings` with its default and the
reader that validates it; its variable is ``CORE_API_`` + the field name in capitals.
Invalid values stop start-up with a one-line :class:`ConfigError` naming the variable.
Reading has no side effects: files (the embedded secret key, the shared-memory file) are
created by the CLI and the runtime, see :mod:`core_api.local_files`.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

PREFIX = "CORE_API_"
DEFAULT_DATABASE_URL = "sqlite:///data/core-api.db"
SECRET_KEY_FILE = "secret_key"  # noqa: S105 - a file name, not a secret

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


class _Reader:
    """One method per kind of value: ``(name, default, **limits)`` -> the validated value."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def raw(self, name: str) -> str | None:
        value = self.env.get(PREFIX + name)
        return None if value is None or value.strip() == "" else value.strip()

    def fail(self, name: str, why: str) -> ConfigError:
        return ConfigError(f"{PREFIX}{name}: {why}")

    def text(self, name: str, default: str) -> str:
        return self.raw(name) or default

    def path(self, name: str, default: str | None) -> str | None:
        value = self.raw(name) or default
        if value is not None and not Path(value).is_file():
            raise self.fail(name, f"file not found: {value}")
        return value

    def integer(self, name: str, default: int, *, low: int, high: int | None = None) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise self.fail(name, f"expected an integer, got {value!r}") from None
        if number < low or (high is not None and number > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            raise self.fail(name, f"must be {bound}, got {number}")
        return number

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise self.fail(name, f"expected true or false, got {value!r}")

    def choice(self, name: str, default: str, *, options: tuple[str, ...]) -> str:
        value = (self.raw(name) or default).upper()
        if value not in options:
            raise self.fail(name, f"expected one of {', '.join(options)}, got {value!r}")
        return value

    def schedule(self, name: str, default: tuple[int, ...]) -> tuple[int, ...]:
        value = self.raw(name)
        if value is None:
            return default
        try:
            seconds = tuple(int(part) for part in value.split(","))
        except ValueError:
            raise self.fail(name, f"expected comma-separated seconds, got {value!r}") from None
        if not seconds or any(s < 0 for s in seconds):
            raise self.fail(name, "expected one or more non-negative numbers of seconds")
        return seconds

    def networks(
        self, name: str, default: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    ) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in value.split(","))
        except ValueError as exc:
            raise self.fail(name, str(exc)) from None

    def database_url(self, name: str, default: str) -> str:
        value = self.raw(name) or default
        if value.startswith(("postgresql://", "postgres://")):
            return value
        if value.startswith("sqlite:///") and len(value) > len("sqlite:///"):
            return value
        raise self.fail(
            name, "expected postgresql://... or sqlite:///relative.db or sqlite:////abs.db"
        )

    def public_url(self, name: str, default: str | None) -> str | None:
        value = self.raw(name) or default
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise self.fail(
                name, f"expected an http(s) URL like https://api.example.com, got {value!r}"
            )
        return value.rstrip("/")

    def redis_url(self, name: str, default: str | None) -> str | None:
        value = self.raw(name) or default
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise self.fail(name, f"expected redis://, rediss:// or unix://, got {value!r}")
        return value

    def secret_key(self, database_url: str) -> bytes:
        """The pepper for API-key hashes. Set it explicitly on every node in production;
        with SQLite it defaults to the file beside the database (empty until the CLI or the
        runtime creates it on first start)."""
        value = self.raw("SECRET_KEY")
        if value is not None:
            if len(value) < 32:
                raise self.fail("SECRET_KEY", "must be at least 32 characters")
            return value.encode()
        if not database_url.startswith("sqlite:"):
            raise self.fail("SECRET_KEY", "required when DATABASE_URL is PostgreSQL")
        try:
            return secret_key_file(database_url).read_text().strip().encode()
        except FileNotFoundError:
            return b""

    def previous_secret(self, name: str, default: bytes | None) -> bytes | None:
        """The secret key before the last change, during a rotation (docs/production.md):
        API-key hashes and sealed webhook secrets made under it are still accepted."""
        value = self.raw(name)
        if value is None:
            return default
        if len(value) < 32:
            raise self.fail(name, "must be at least 32 characters")
        return value.encode()


def _var(default: T, read: Callable[..., T], **limits: Any) -> T:
    """A setting read from ``CORE_API_<FIELD NAME>`` by ``read`` (a :class:`_Reader` method)."""
    return dataclasses.field(default=default, metadata={"read": read, "limits": limits})


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = _var(DEFAULT_DATABASE_URL, _Reader.database_url)
    redis_url: str | None = _var(None, _Reader.redis_url)
    redis_prefix: str = _var("core-api:", _Reader.text)
    host: str = _var("127.0.0.1", _Reader.text)
    port: int = _var(8000, _Reader.integer, low=1, high=65535)
    workers: int = _var(1, _Reader.integer, low=1, high=256)
    # Explicit, or read from the file beside the SQLite database; never in logs or reprs.
    secret_key: bytes = dataclasses.field(default=b"", repr=False)
    # During a rotation of the secret key, the one before it (never in logs or reprs):
    # API keys and sealed secrets made under it still work, and move to the current one.
    secret_key_previous: bytes | None = dataclasses.field(
        default=None, repr=False, metadata={"read": _Reader.previous_secret, "limits": {}}
    )
    # Explicit, or "" for the default derived from the database's identity at start.
    shm_path: str = _var("", _Reader.text)
    public_url: str | None = _var(None, _Reader.public_url)
    # Where feature_limit_reached bodies send the user to upgrade.
    upgrade_url: str = _var("https://example.com/upgrade", _Reader.text)
    # Count every authenticated request towards api_calls (in memory, flushed every 2 s).
    entitlements_metering: bool = _var(True, _Reader.boolean)
    max_body_bytes: int = _var(1_048_576, _Reader.integer, low=1024)
    key_cache_size: int = _var(100_000, _Reader.integer, low=16)
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = _var(
        (), _Reader.networks
    )
    pixel_rate_limit: int = _var(300, _Reader.integer, low=0)
    # Pixel ingest, per worker process (docs/pixel.md): events held before a 503 (buffered
    # plus being written), rows per write (COPY / executemany), and the longest an event
    # waits for its write to start (ms; a full batch is written at once).
    pixel_buffer_size: int = _var(100_000, _Reader.integer, low=1, high=10_000_000)
    pixel_batch_size: int = _var(5_000, _Reader.integer, low=1, high=1_000_000)
    pixel_flush_ms: int = _var(500, _Reader.integer, low=10, high=60_000)
    auth_failure_limit: int = _var(30, _Reader.integer, low=0)
    # Seconds before each retry (Standard Webhooks / Svix): 8 attempts in all, +-20 % jitter.
    webhook_retry_schedule: tuple[int, ...] = _var(
        (5, 300, 1800, 7200, 18000, 36000, 36000), _Reader.schedule
    )
    webhook_allow_private_networks: bool = _var(False, _Reader.boolean)
    webhook_require_https: bool = _var(True, _Reader.boolean)
    # Webhook delivery (docs/webhooks.md): a Retry-After longer than the cap is cut to it;
    # an endpoint is disabled after N consecutive failed attempts spanning >= H hours;
    # deliveries and events are purged after the retention; an event's envelope is capped.
    webhook_retry_after_max_seconds: int = _var(3600, _Reader.integer, low=0, high=86_400)
    webhook_disable_after_failures: int = _var(10, _Reader.integer, low=1)
    webhook_disable_after_hours: int = _var(24, _Reader.integer, low=0)
    webhook_retention_days: int = _var(30, _Reader.integer, low=1)
    webhook_max_payload_bytes: int = _var(65_536, _Reader.integer, low=1024, high=1_048_576)
    # Requests in flight per worker process, and per endpoint (1 keeps each endpoint's
    # deliveries in creation order; more trades order for one endpoint's throughput).
    webhook_max_in_flight: int = _var(256, _Reader.integer, low=1, high=10_000)
    webhook_endpoint_concurrency: int = _var(1, _Reader.integer, low=1, high=64)
    # Seconds a claimed delivery stays leased; renewed while held, so only a dead worker's
    # deliveries wait this long before another worker takes them.
    webhook_lease_seconds: int = _var(30, _Reader.integer, low=2, high=3600)
    # Seconds one webhook delivery attempt may take in all (connect, send, response).
    webhook_timeout_seconds: int = _var(15, _Reader.integer, low=1, high=30)
    mcp_config: str | None = _var(None, _Reader.path)
    plans_file: str | None = _var(None, _Reader.path)
    pg_pool_size: int = _var(10, _Reader.integer, low=1, high=1000)
    # Seconds. Fail fast when PostgreSQL is unreachable or stuck (503, never a long hang):
    # connecting (libpq's minimum is 2), one statement (0 = no limit), waiting for a free
    # pooled connection when all pg_pool_size are busy.
    pg_connect_timeout: int = _var(3, _Reader.integer, low=2, high=600)
    pg_statement_timeout: int = _var(5, _Reader.integer, low=0, high=86_400)
    pg_pool_timeout: int = _var(5, _Reader.integer, low=1, high=600)
    log_level: str = _var("INFO", _Reader.choice, options=("DEBUG", "INFO", "WARNING", "ERROR"))
    # Operations (docs/operations.md): log lines as JSON objects (one per line, with the
    # request id) or as text; Granian's access log (one line per request) in that format;
    # GET /metrics, and where each process writes its metrics snapshot ("" = beside the
    # shared-memory file).
    log_format: str = _var("JSON", _Reader.choice, options=("JSON", "TEXT"))
    access_log: bool = _var(False, _Reader.boolean)
    metrics_enabled: bool = _var(True, _Reader.boolean)
    metrics_dir: str = _var("", _Reader.text)
    embedded_worker: bool = _var(True, _Reader.boolean)
    idempotency_ttl_seconds: int = _var(86_400, _Reader.integer, low=60)
    # Connection limits of `core-api serve` (Granian), see docs/operations.md. Granian holds
    # one backpressure slot per open connection, idle ones included: 0 sizes it per worker
    # to the open-file limit minus a reserve. The header read timeout (seconds) is also
    # the keep-alive idle timeout; the body read timeout (seconds) bounds a whole body.
    backlog: int = _var(4096, _Reader.integer, low=128, high=65_535)
    backpressure: int = _var(0, _Reader.integer, low=0, high=1_000_000)
    header_read_timeout: int = _var(10, _Reader.integer, low=1, high=60)
    body_read_timeout: int = _var(30, _Reader.integer, low=1, high=3600)
    keep_alive: bool = _var(True, _Reader.boolean)
    http1_buffer_size: int = _var(65_536, _Reader.integer, low=8192, high=16_777_216)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from the environment; ``overrides`` (CLI flags) win."""
        reader = _Reader(os.environ if env is None else env)
        values: dict[str, object] = {}
        for spec in dataclasses.fields(cls):
            if "read" in spec.metadata:
                read = spec.metadata["read"]
                values[spec.name] = read(
                    reader, spec.name.upper(), spec.default, **spec.metadata["limits"]
                )
        values.update({k: v for k, v in overrides.items() if v is not None})
        current = values["secret_key"] = reader.secret_key(str(values["database_url"]))
        previous = values["secret_key_previous"]
        if isinstance(previous, bytes) and hmac.compare_digest(previous, current):
            raise reader.fail("SECRET_KEY_PREVIOUS", f"must differ from {PREFIX}SECRET_KEY")
        return cls(**values)  # type: ignore[arg-type]

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite:")


def sqlite_path(url: str) -> Path:
    """``sqlite:///rel.db`` is relative to the working directory; ``sqlite:////abs.db`` is not."""
    rest = url.removeprefix("sqlite:///")
    return Path(rest).resolve() if not rest.startswith("/") else Path(rest)


def secret_key_file(database_url: str) -> Path:
    """Where the embedded (SQLite) deployment keeps its generated secret key."""
    return sqlite_path(database_url).parent / SECRET_KEY_FILE
