"""Database work per write request, counted exactly (no timing, so a busy machine does
not blur it): statements sent to PostgreSQL and SQLite calls (each a hop to the database
thread), BEGIN/COMMIT included. In process, through the ASGI app, on fresh databases.

Usage::

    python -m benchmarks.wrk.roundtrips [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
from pathlib import Path
from typing import Any

import asyncpg
import falcon.testing
import psycopg

from core_api.api_keys.service import bootstrap
from core_api.app import create_app
from core_api.clock import Clock
from core_api.config import Settings
from core_api.runtime import Runtime
from core_api.storage import sqlite

from ..common import DEFAULT_PG_ADMIN_URL

counts = {"pg": 0, "sqlite": 0}


def _count_pg() -> None:
    """Every statement the connector sends: asyncpg's execute (simple or prepared),
    fetch and fetchrow (BEGIN, COMMIT and ROLLBACK are executes)."""
    for name in ("execute", "fetch", "fetchrow"):
        original = getattr(asyncpg.Connection, name)

        def counted(original: Any) -> Any:
            async def call(self: Any, *args: Any, **kwargs: Any) -> Any:
                counts["pg"] += 1
                return await original(self, *args, **kwargs)

            return call

        setattr(asyncpg.Connection, name, counted(original))
    run = sqlite._Connection.run  # the writer's and the reader's hops alike

    async def counted_run(self: Any, fn: Any) -> Any:
        counts["sqlite"] += 1
        return await run(self, fn)

    sqlite._Connection.run = counted_run  # type: ignore[method-assign]


async def measure(url: str, tmp: Path, n: int) -> None:
    settings = Settings(database_url=url, secret_key=b"x" * 32, shm_path=str(tmp / "shm"))
    runtime = await Runtime.open(settings, clock=Clock(), run_migrations=True)
    try:
        boot = await bootstrap(
            runtime.db, runtime.keys, runtime.plans, Clock(),
            name="Round trips", tier="enterprise", email=None,
        )  # fmt: skip
        headers = {"Authorization": f"Bearer {boot['api_key']['key']}"}
        app = create_app(settings, runtime)
        async with falcon.testing.ASGIConductor(app) as conductor:
            for path in ("/api/v1/workspaces", "/api/v1/api-keys"):
                for idempotent in (False, True):
                    # warm the caches the first request fills (key, access)
                    await conductor.simulate_post(path, json={"name": "warm"}, headers=headers)
                    pg0, lite0 = counts["pg"], counts["sqlite"]
                    for i in range(n):
                        extra = {"Idempotency-Key": secrets.token_hex(8)} if idempotent else {}
                        result = await conductor.simulate_post(
                            path,
                            json={"name": f"rt {idempotent} {i}"},
                            headers={**headers, **extra},
                        )
                        assert result.status_code == 201, result.text
                    label = f"{path} {'with' if idempotent else 'without'} Idempotency-Key"
                    if url.startswith("postgresql"):
                        print(f"postgresql {label}: {(counts['pg'] - pg0) / n:.2f} statements")
                    else:
                        print(f"sqlite     {label}: {(counts['sqlite'] - lite0) / n:.2f} calls")
    finally:
        await runtime.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    _count_pg()
    admin = DEFAULT_PG_ADMIN_URL
    name = f"core_api_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(measure(f"sqlite:///{tmp}/rt.db", Path(tmp), args.requests))
            asyncio.run(measure(f"{admin.rsplit('/', 1)[0]}/{name}", Path(tmp), args.requests))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
