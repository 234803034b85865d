"""Settings: read once from ``CORE_API_*`` environment variables (CLI flags map onto them).

Invalid values stop start-up with a one-line :class:`ConfigError` naming the variable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import os
import secrets
import tempfile
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

PREFIX = "CORE_API_"
DEFAULT_DATABASE_URL = "sqlite:///data/core-api.db"


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    redis_prefix: str = "core-api:"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    secret_key: bytes = dataclasses.field(default=b"", repr=False)  # never in logs or reprs
    shm_path: str = ""
    public_url: str | None = None
    max_body_bytes: int = 1_048_576
    key_cache_size: int = 100_000
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    pixel_rate_limit: int = 300
    auth_failure_limit: int = 30
    webhook_retry_schedule: tuple[int, ...] = (5, 300, 1800, 7200, 18000, 36000)
    webhook_allow_private_networks: bool = False
    webhook_require_https: bool = True
    mcp_config: str | None = None
    plans_file: str | None = None
    pg_pool_size: int = 10
    log_level: str = "INFO"
    embedded_worker: bool = True
    idempotency_ttl_seconds: int = 86_400

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from the environment; ``overrides`` (CLI flags) win."""
        env = os.environ if env is None else env
        reader = _Reader(env)
        values: dict[str, object] = {
            "database_url": reader.database_url("DATABASE_URL", DEFAULT_DATABASE_URL),
            "redis_url": reader.redis_url("REDIS_URL"),
            "redis_prefix": reader.text("REDIS_PREFIX", "core-api:"),
            "host": reader.text("HOST", "127.0.0.1"),
            "port": reader.integer("PORT", 8000, low=1, high=65535),
            "workers": reader.integer("WORKERS", 1, low=1, high=256),
            "public_url": reader.public_url("PUBLIC_URL"),
            "max_body_bytes": reader.integer("MAX_BODY_BYTES", 1_048_576, low=1024),
            "key_cache_size": reader.integer("KEY_CACHE_SIZE", 100_000, low=16),
            "trusted_proxies": reader.networks("TRUSTED_PROXIES"),
            "pixel_rate_limit": reader.integer("PIXEL_RATE_LIMIT", 300, low=0),
            "auth_failure_limit": reader.integer("AUTH_FAILURE_LIMIT", 30, low=0),
            "webhook_retry_schedule": reader.schedule(
                "WEBHOOK_RETRY_SCHEDULE", (5, 300, 1800, 7200, 18000, 36000)
            ),
            "webhook_allow_private_networks": reader.boolean(
                "WEBHOOK_ALLOW_PRIVATE_NETWORKS", False
            ),
            "webhook_require_https": reader.boolean("WEBHOOK_REQUIRE_HTTPS", True),
            "mcp_config": reader.path("MCP_CONFIG"),
            "plans_file": reader.path("PLANS_FILE"),
            "embedded_worker": reader.boolean("EMBEDDED_WORKER", True),
            "pg_pool_size": reader.integer("PG_POOL_SIZE", 10, low=1, high=1000),
            "log_level": reader.choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
            "idempotency_ttl_seconds": reader.integer("IDEMPOTENCY_TTL_SECONDS", 86_400, low=60),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        database_url = str(values["database_url"])
        values["secret_key"] = reader.secret_key(database_url)
        values["shm_path"] = reader.text("SHM_PATH", "") or default_shm_path(database_url)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite:")


def sqlite_path(url: str) -> Path:
    """``sqlite:///rel.db`` is relative to the working directory; ``sqlite:////abs.db`` is not."""
    rest = url.removeprefix("sqlite:///")
    return Path(rest).resolve() if not rest.startswith("/") else Path(rest)


def default_shm_path(database_url: str) -> str:
    """All workers serving one database on one host share one shared-memory file.

    It lives in a directory only this user can enter, so another local user cannot
    pre-create or read it (the rate-limit state and invalidation counter are ours alone).
    """
    digest = hashlib.sha256(database_url.encode()).hexdigest()[:16]
    shm = Path("/dev/shm")  # noqa: S108 - a private 0700 directory is made inside
    root = shm if shm.is_dir() else Path(tempfile.gettempdir())
    private = root / f"core-api-{os.getuid()}"
    private.mkdir(mode=0o700, exist_ok=True)
    info = private.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ConfigError(
            f"{PREFIX}SHM_PATH: {private} is not a private directory of this user; set the variable"
        )
    return str(private / f"core-api-{digest}")


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def raw(self, name: str) -> str | None:
        value = self.env.get(PREFIX + name)
        return None if value is None or value.strip() == "" else value.strip()

    def fail(self, name: str, why: str) -> ConfigError:
        return ConfigError(f"{PREFIX}{name}: {why}")

    def text(self, name: str, default: str) -> str:
        return self.raw(name) or default

    def path(self, name: str) -> str | None:
        value = self.raw(name)
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

    def choice(self, name: str, default: str, options: tuple[str, ...]) -> str:
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

    def networks(self, name: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        value = self.raw(name)
        if value is None:
            return ()
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

    def public_url(self, name: str) -> str | None:
        value = self.raw(name)
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise self.fail(
                name, f"expected an http(s) URL like https://api.example.com, got {value!r}"
            )
        return value.rstrip("/")

    def redis_url(self, name: str) -> str | None:
        value = self.raw(name)
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise self.fail(name, f"expected redis://, rediss:// or unix://, got {value!r}")
        return value

    def secret_key(self, database_url: str) -> bytes:
        """The pepper for API-key hashes. Set it explicitly on every node in production;
        for the embedded default it is generated once next to the SQLite file."""
        value = self.raw("SECRET_KEY")
        if value is not None:
            if len(value) < 32:
                raise self.fail("SECRET_KEY", "must be at least 32 characters")
            return value.encode()
        if not database_url.startswith("sqlite:"):
            raise self.fail("SECRET_KEY", "required when DATABASE_URL is PostgreSQL")
        key_file = sqlite_path(database_url).parent / "secret_key"
        key_file.parent.mkdir(parents=True, exist_ok=True)
        if not key_file.exists():
            # Written aside then linked into place: concurrent first starts agree on one key.
            scratch = key_file.with_name(f".secret_key.{os.getpid()}")
            fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
            try:
                os.link(scratch, key_file)
            except FileExistsError:
                pass
            finally:
                scratch.unlink()
        return key_file.read_text().strip().encode()
