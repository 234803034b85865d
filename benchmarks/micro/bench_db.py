"""Micro-benchmark: the PostgreSQL connector's cost per statement, through the Database
interface (``core_api.storage``), whichever driver the installed build uses.

Usage: python benchmarks/micro/bench_db.py [--n 20000] [--rounds 5] [--admin-url URL]

Runs against a fresh database (created and dropped here) on the event loop the service
uses (uvloop), one statement at a time, so the figures are the client's own cost plus one
loopback round trip:

- ``select_by_id``: ``fetch_one`` of a workspace by primary key (the GET path's query);
- ``write_tx``: a transaction of BEGIN, an INSERT ... RETURNING, an UPDATE, a by-id
  SELECT and COMMIT (the shape of an idempotent create), per transaction.

Reported per operation: wall time and this process's user and system CPU time, each the
best of ``--rounds``. CPU time is the figure that matters on a CPU-bound worker; the server's
own CPU is not in it. Compare two builds back to back (the machine may be loaded), e.g.
the psycopg build and the asyncpg build, each from its own virtualenv.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import secrets
import sys
import time
from typing import Any

import psycopg

from core_api.storage import Database, open_database
from core_api.storage.migrate import migrate

DEFAULT_ADMIN_URL = "postgresql://127.0.0.1:5432/test"
NOW = 1_767_225_600_000
SELECT = (
    "SELECT w.id, w.name, w.slug, w.tier, w.settings, w.owner_id, w.created_at, w.updated_at "
    "FROM workspaces w WHERE w.id = ?"
)


async def _measure(n: int, rounds: int, op: Any) -> dict[str, float]:
    """Best of ``rounds``, in microseconds per operation: wall, user CPU, system CPU."""
    best = {"wall_us": float("inf"), "user_us": float("inf"), "sys_us": float("inf")}
    for _ in range(rounds):
        w0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        for i in range(n):
            await op(i)
        w1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        seconds = {
            "wall_us": w1 - w0,
            "user_us": r1.ru_utime - r0.ru_utime,
            "sys_us": r1.ru_stime - r0.ru_stime,
        }
        for key, value in seconds.items():
            best[key] = min(best[key], value * 1e6 / n)
    return {key: round(value, 1) for key, value in best.items()}


async def run(url: str, n: int, rounds: int) -> dict[str, Any]:
    db: Database = await open_database(url, pool_size=2)
    try:
        await migrate(db)
        user = await db.fetch_one(
            "INSERT INTO users (name, email, created_at, updated_at) VALUES (?, ?, ?, ?) "
            "RETURNING id",
            ("bench", "bench@example.com", NOW, NOW),
        )
        assert user is not None
        owner = int(user["id"])
        row = await db.fetch_one(
            "INSERT INTO workspaces (name, slug, tier, settings, owner_id, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            ("Bench", "bench", "free", "{}", owner, NOW, NOW),
        )
        assert row is not None
        ws_id = int(row["id"])

        async def select_by_id(_: int) -> None:
            found = await db.fetch_one(SELECT, (ws_id,))
            assert found is not None

        tag = secrets.token_hex(3)
        serial = itertools.count()

        async def write_tx(_: int) -> None:
            i = next(serial)
            async with db.transaction() as tx:
                created = await tx.fetch_one(
                    "INSERT INTO workspaces (name, slug, tier, settings, owner_id, created_at, "
                    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    ("W", f"w-{tag}-{i}", "free", "{}", owner, NOW, NOW),
                )
                assert created is not None
                await tx.execute(
                    "UPDATE workspaces SET updated_at = ? WHERE id = ?", (NOW + 1, created["id"])
                )
                await tx.fetch_one(SELECT, (created["id"],))

        await _measure(min(n, 2000), 1, select_by_id)  # warm: connection, caches
        results = {"select_by_id": await _measure(n, rounds, select_by_id)}
        await _measure(min(n // 4, 500), 1, write_tx)
        results["write_tx"] = await _measure(max(1, n // 4), rounds, write_tx)
        return results
    finally:
        await db.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="statements per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--admin-url", default=os.environ.get("BENCH_PG_ADMIN_URL", DEFAULT_ADMIN_URL)
    )
    args = parser.parse_args(argv)
    name = f"core_api_bench_db_{secrets.token_hex(4)}"
    with psycopg.connect(args.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        base, _, last = args.admin_url.rpartition("/")
        query = last.partition("?")[2]  # e.g. sslmode=disable
        url = f"{base}/{name}" + (f"?{query}" if query else "")
        try:
            import uvloop

            runner: Any = uvloop.run
        except ImportError:  # pragma: no cover - the service needs uvloop on Linux
            runner = asyncio.run
        results = runner(run(url, args.n, args.rounds))
    finally:
        with psycopg.connect(args.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    driver = "asyncpg" if "asyncpg" in sys.modules else "psycopg"
    print(json.dumps({"driver": driver, "n": args.n, **results}))


if __name__ == "__main__":
    main()
