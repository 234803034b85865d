"""Seed a benchmark database: many users with their own keys, and bulk rows for big tenants.

Runs as its own process with the store's ``CORE_API_*`` environment (so the parent's
environment stays clean) and prints JSON on stdout::

    python -m benchmarks.populate users --count 200 --tier bench
        -> [{"user_id": 1, "workspace_id": 1, "key_id": 1, "key": "sk_live_..."}, ...]
    python -m benchmarks.populate workspaces --user-id 1 --count 100000
    python -m benchmarks.populate keys --user-id 1 --workspace-id 1 --count 100000

Users go through the same ``bootstrap`` the CLI uses (real keys that authenticate), many
in one process. Bulk workspaces and keys come from ``benchmarks/seed.py`` (one
``INSERT ... SELECT`` per table, then ``ANALYZE``): 100,000 rows take a few seconds. Bulk
keys get hashes that no secret maps to; they exist only to be listed.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from typing import Any

import orjson


async def _runtime() -> Any:
    from core_api.config import Settings
    from core_api.runtime import Runtime

    return await Runtime.open(Settings.from_env(), run_migrations=True)


async def users(count: int, tier: str) -> list[dict[str, Any]]:
    from core_api.api_keys.service import bootstrap
    from core_api.clock import Clock

    runtime = await _runtime()
    token = secrets.token_hex(3)
    out = []
    try:
        for i in range(count):
            made = await bootstrap(
                runtime.db, runtime.keys, runtime.plans, Clock(),
                name=f"bench {token} {i}", tier=tier, email=None,
            )  # fmt: skip
            out.append(
                {
                    "user_id": made["user"]["id"],
                    "workspace_id": made["workspace"]["id"],
                    "key_id": made["api_key"]["id"],
                    "key": made["api_key"]["key"],
                }
            )
    finally:
        await runtime.close()
    return out


async def workspaces(user_id: int, count: int) -> dict[str, Any]:
    from core_api.clock import Clock

    from .seed import seed_workspaces

    runtime = await _runtime()
    try:
        tag = await seed_workspaces(runtime.db, user_id, count, Clock().now_ms())
        row = await runtime.db.fetch_one(
            "SELECT MIN(id) AS lo, MAX(id) AS hi FROM workspaces WHERE slug LIKE ?",
            (tag + "-%",),
        )
    finally:
        await runtime.close()
    assert row is not None
    return {"user_id": user_id, "count": count, "first_id": row["lo"], "last_id": row["hi"]}


async def keys(user_id: int, workspace_id: int, count: int) -> dict[str, Any]:
    from core_api.clock import Clock

    from .seed import seed_api_keys

    runtime = await _runtime()
    try:
        await seed_api_keys(runtime.db, user_id, workspace_id, count, Clock().now_ms())
    finally:
        await runtime.close()
    return {"user_id": user_id, "workspace_id": workspace_id, "count": count}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.populate", description=__doc__)
    sub = p.add_subparsers(dest="what", required=True)
    u = sub.add_parser("users")
    u.add_argument("--count", type=int, required=True)
    u.add_argument("--tier", default="bench")
    w = sub.add_parser("workspaces")
    w.add_argument("--user-id", type=int, required=True)
    w.add_argument("--count", type=int, required=True)
    k = sub.add_parser("keys")
    k.add_argument("--user-id", type=int, required=True)
    k.add_argument("--workspace-id", type=int, required=True)
    k.add_argument("--count", type=int, required=True)
    args = p.parse_args(argv)
    if not 0 < args.count <= 1_000_000:
        p.error("--count must be 1..1000000")
    if args.what == "users":
        result: Any = asyncio.run(users(args.count, args.tier))
    elif args.what == "workspaces":
        result = asyncio.run(workspaces(args.user_id, args.count))
    else:
        result = asyncio.run(keys(args.user_id, args.workspace_id, args.count))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
