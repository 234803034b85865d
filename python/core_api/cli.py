"""``core-api``: serve | worker | migrate | bootstrap | entitlements | secrets.

Flags map onto ``CORE_API_*`` variables, so Granian's worker processes, which read the
environment, see exactly what the parent validated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import resource
import sys
from typing import Any

import orjson

from . import logs
from .clock import Clock
from .config import ConfigError, Settings
from .entitlements import cli as entitlements_cli
from .errors import ValidationFailed
from .local_files import ensure_secret_key
from .plans import load_plans
from .storage import DatabaseUnavailable, open_database
from .storage.migrate import migrate
from .webhooks import reseal as secrets_cli

log = logging.getLogger("core_api.cli")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="core-api", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the API with Granian")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    serve.add_argument(
        "--no-migrate", action="store_true", help="do not apply pending migrations first"
    )
    serve.add_argument(
        "--first-run-bootstrap",
        action="store_true",
        help="on an empty database, create a first workspace and key and print them once",
    )

    commands.add_parser("worker", help="run background work (webhooks, flushes, clean-up)")
    commands.add_parser("migrate", help="apply pending database migrations")

    boot = commands.add_parser(
        "bootstrap", help="create a user, a workspace and a '*' key; print JSON"
    )
    boot.add_argument("--name", required=True)
    boot.add_argument("--tier")
    boot.add_argument("--email")
    entitlements_cli.add_parser(commands)
    secrets_cli.add_parser(commands)

    args = parser.parse_args(argv)
    for flag in ("host", "port", "workers"):
        value = getattr(args, flag, None)
        if value is not None:
            os.environ[f"CORE_API_{flag.upper()}"] = str(value)
    try:
        settings = Settings.from_env()
        load_plans(settings.plans_file)
    except ConfigError as exc:
        print(f"core-api: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logs.configure(settings)
    handler = {
        "serve": _serve,
        "worker": _worker,
        "migrate": _migrate,
        "bootstrap": _bootstrap,
        "entitlements": entitlements_cli.run,
        "secrets": secrets_cli.run,
    }
    settings = ensure_secret_key(settings)  # first start of an embedded (SQLite) node
    try:
        handler[args.command](settings, args)
    except DatabaseUnavailable as exc:
        print(f"core-api: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def _migrate(settings: Settings, args: argparse.Namespace) -> None:
    async def run() -> list[str]:
        db = await open_database(settings.database_url)
        try:
            return await migrate(db)
        finally:
            await db.close()

    applied = asyncio.run(run())
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))


async def bootstrap_json(
    settings: Settings, name: str, tier: str | None, email: str | None, only_if_empty: bool = False
) -> dict[str, Any] | None:
    from .api_keys.service import bootstrap
    from .runtime import Runtime
    from .users.repo import any_user

    runtime = await Runtime.open(settings, run_migrations=True)
    try:
        if only_if_empty and await any_user(runtime.db):
            return None
        return await bootstrap(
            runtime.db, runtime.keys, runtime.plans, Clock(), name=name, tier=tier, email=email
        )
    finally:
        await runtime.close()


def _bootstrap(settings: Settings, args: argparse.Namespace) -> None:
    try:
        result = asyncio.run(bootstrap_json(settings, args.name, args.tier, args.email))
    except ValidationFailed as exc:
        print(
            f"core-api: {'; '.join(m for ms in exc.errors.values() for m in ms)}", file=sys.stderr
        )
        raise SystemExit(2) from None
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


def _serve(settings: Settings, args: argparse.Namespace) -> None:
    if not args.no_migrate:
        _migrate(settings, args)
    if args.first_run_bootstrap:
        first = asyncio.run(bootstrap_json(settings, "Default", None, None, only_if_empty=True))
        if first is not None:
            print("\nFirst start: created a workspace and a full-access API key.")
            print("The key is shown once; store it now:\n")
            print(f"    {first['api_key']['key']}\n")
            print(
                f"Try: curl -H 'Authorization: Bearer {first['api_key']['key']}' "
                f"http://{settings.host}:{settings.port}/api/v1/workspaces/{first['workspace']['id']}\n",
                flush=True,
            )
    nofile = raise_nofile_limit()
    argv = granian_argv(
        settings, nofile, uvloop=_has_uvloop(), log_config=logs.write_granian_config(settings)
    )
    log.info("serving with %s", " ".join(argv[argv.index("--backlog") : -1]))
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, *argv])  # noqa: S606 - fixed argv, no shell


# Descriptors kept free in each worker beyond its connections: the database pool, Redis,
# the shared-memory file, logs, imports.
FD_RESERVE = 256


def raise_nofile_limit() -> int:
    """Raise the soft open-file limit to the hard one (Granian and its workers inherit it):
    every held connection is a descriptor. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def backpressure(settings: Settings, nofile: int) -> int:
    """Connections per worker. Granian holds one slot per open connection, idle or
    half-sent ones included, so a small value lets one client lock everyone out; the real
    bound is the descriptors a worker has. An explicit value is capped by them too, so
    that the database and Redis never fail to open a socket."""
    available = max(1, nofile - FD_RESERVE - settings.pg_pool_size)
    return min(settings.backpressure or available, available)


def granian_argv(
    settings: Settings, nofile: int, *, uvloop: bool, log_config: str | None = None
) -> list[str]:
    """``python -m granian ...`` for these settings; the limits are chosen in config.py."""
    return [
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--workers",
        str(settings.workers),
        "--loop",
        "uvloop" if uvloop else "asyncio",
        "--no-ws",
        # HTTP/1.1 only: the header read timeout below is an HTTP/1 limit; cleartext HTTP/2
        # (prior knowledge) is not needed behind a proxy and is left out of reach.
        "--http",
        "1",
        "--backlog",
        str(settings.backlog),
        "--backpressure",
        str(backpressure(settings, nofile)),
        "--http1-header-read-timeout",
        str(settings.header_read_timeout * 1000),
        "--http1-keep-alive" if settings.keep_alive else "--no-http1-keep-alive",
        "--http1-buffer-size",
        str(settings.http1_buffer_size),
        # A worker that dies (say, it started while the database was unreachable) comes back
        # instead of taking the whole server down with it.
        "--respawn-failed-workers",
        "--log-level",
        settings.log_level.lower(),
        # Granian's own lines in the service's format (core_api/logs.py); its access log
        # (one line per request) only when asked for.
        *(["--log-config", log_config] if log_config else []),
        "--access-log" if settings.access_log else "--no-access-log",
        "core_api.asgi:app",
    ]


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _worker(settings: Settings, args: argparse.Namespace) -> None:
    from .worker import run_worker

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_worker(settings))
