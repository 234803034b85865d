"""Bulk seeding for list-size benchmarks: 100,000 rows in one statement per table.

Rows are generated inside the database (``generate_series`` on PostgreSQL, a recursive CTE
on SQLite), so seeding 100k workspaces or keys takes about a second rather than 100k API
calls. Seeded rows are ordinary rows: they list, sort, count and cascade like any other.
Seeded keys have unusable hashes (``seed-...``): they list but never authenticate.

    from benchmarks.seed import seed_workspaces, seed_api_keys
    await seed_workspaces(runtime.db, user_id, 100_000, now_ms)
    await seed_api_keys(runtime.db, user_id, workspace_id, 100_000, now_ms)

or from a shell: ``python -m benchmarks.seed DATABASE_URL --user 1 --workspaces 100000
--keys-in 1 --keys 100000`` (the database must be migrated; ``core-api migrate``).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time

from core_api.storage import Database, Executor, open_database

MAX_ROWS = 5_000_000


def _series(db: Database, count: int) -> str:
    """A row source ``s(i)`` for i in 1..count (count is an int checked by the caller)."""
    if db.dialect == "postgresql":
        return f"generate_series(1, {count}) AS s(i)"
    return (
        f"(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) "
        "SELECT i FROM n) AS s"
    )


def _check(count: int) -> int:
    if not isinstance(count, int) or not 0 <= count <= MAX_ROWS:
        raise ValueError(f"count must be an int in 0..{MAX_ROWS}")
    return count


async def seed_workspaces(
    db: Database, user_id: int, count: int, now: int, *, role: str = "owner"
) -> str:
    """``count`` workspaces owned by ``user_id`` with their memberships. Names are spread
    (``Seed <permuted number>``) so that name sorts do real work. Returns the slug prefix."""
    count = _check(count)
    tag = f"seed-{secrets.token_hex(4)}"
    async with db.transaction() as tx:
        await _no_timeout(db, tx)
        await tx.execute(
            "INSERT INTO workspaces (name, slug, tier, settings, owner_id, created_at, "
            "updated_at) "
            f"SELECT 'Seed ' || ((i * 7919) % {count + 1}), '{tag}-' || i, 'free', "
            f"'{{}}', ?, CAST(? AS BIGINT) + i, CAST(? AS BIGINT) + i FROM {_series(db, count)}",
            (user_id, now, now),
        )
        await tx.execute(
            "INSERT INTO workspace_members (workspace_id, user_id, role, created_at) "
            "SELECT id, ?, ?, created_at FROM workspaces WHERE slug LIKE ?",
            (user_id, role, f"{tag}-%"),
        )
    await analyze(db)
    return tag


async def seed_api_keys(db: Database, user_id: int, workspace_id: int, count: int, now: int) -> str:
    """``count`` live keys of ``user_id`` in ``workspace_id``. Returns the hash prefix."""
    count = _check(count)
    tag = f"seed-{secrets.token_hex(4)}"
    async with db.transaction() as tx:
        await _no_timeout(db, tx)
        await tx.execute(
            "INSERT INTO api_keys (user_id, workspace_id, name, prefix, key_hash, scopes, "
            "created_at, updated_at) "
            f"SELECT ?, ?, 'Seed key ' || ((i * 7919) % {count + 1}), 'sk_seed', "
            f"'{tag}-' || i, '[\"read\"]', CAST(? AS BIGINT) + i, CAST(? AS BIGINT) + i "
            f"FROM {_series(db, count)}",
            (user_id, workspace_id, now, now),
        )
    await analyze(db)
    return tag


async def _no_timeout(db: Database, tx: Executor) -> None:
    """A bulk insert may outlast the service's per-statement timeout."""
    if db.dialect == "postgresql":
        await tx.execute("SET LOCAL statement_timeout = 0")


async def analyze(db: Database) -> None:
    """Fresh planner statistics, as autovacuum (PostgreSQL) would give them soon anyway."""
    await db.execute("ANALYZE")


async def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("database_url")
    parser.add_argument("--user", type=int, required=True)
    parser.add_argument("--workspaces", type=int, default=0)
    parser.add_argument("--keys", type=int, default=0)
    parser.add_argument("--keys-in", type=int, help="the workspace that gets the keys")
    args = parser.parse_args()
    db = await open_database(args.database_url)
    try:
        now = int(time.time() * 1000)
        started = time.perf_counter()
        if args.workspaces:
            await seed_workspaces(db, args.user, args.workspaces, now)
        if args.keys:
            if args.keys_in is None:
                parser.error("--keys needs --keys-in WORKSPACE_ID")
            await seed_api_keys(db, args.user, args.keys_in, args.keys, now)
        print(f"seeded in {time.perf_counter() - started:.2f} s")
    finally:
        await db.close()


if __name__ == "__main__":
    asyncio.run(_main())
