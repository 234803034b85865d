"""Leases for cluster jobs: the one place their SQL lives.

A lease row per job name; a worker may run the job only while it holds the row's lease.
On PostgreSQL the row is read ``FOR UPDATE SKIP LOCKED``, so a worker never waits on
another that is claiming the same job; SQLite's ``BEGIN IMMEDIATE`` transactions are
already serialised, which is the same guarantee on one host.
"""

from __future__ import annotations

from .base import Database


async def claim(db: Database, name: str, holder: str, now_ms: int, lease_ms: int) -> bool:
    """Take the lease of ``name`` until ``now_ms + lease_ms`` if nobody holds it now."""
    skip_locked = " FOR UPDATE SKIP LOCKED" if db.dialect == "postgresql" else ""
    async with db.transaction() as tx:
        await tx.execute(
            "INSERT INTO job_leases (name, holder, expires_at) VALUES (?, '', 0) "
            "ON CONFLICT (name) DO NOTHING",
            (name,),
        )
        row = await tx.fetch_one(
            f"SELECT holder, expires_at FROM job_leases WHERE name = ?{skip_locked}",  # noqa: S608
            (name,),
        )
        if row is None or int(row["expires_at"]) > now_ms:
            return False
        await tx.execute(
            "UPDATE job_leases SET holder = ?, expires_at = ? WHERE name = ?",
            (holder, now_ms + lease_ms, name),
        )
    return True


async def release(db: Database, names: list[str], holder: str) -> None:
    """Give this holder's leases back (a graceful stop), so the next process need not wait
    out the interval; a crashed holder's lease simply expires."""
    for name in names:
        await db.execute(
            "UPDATE job_leases SET expires_at = 0 WHERE name = ? AND holder = ?", (name, holder)
        )
