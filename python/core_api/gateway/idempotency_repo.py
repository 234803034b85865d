"""The ``idempotency_records`` table: one row per (API key, keyed hash of the
Idempotency-Key). What the rows mean, and how they are sealed, is in idempotency.py."""

from __future__ import annotations

from dataclasses import dataclass

from ..storage.base import Executor


@dataclass(frozen=True, slots=True)
class Record:
    request_hash: str
    status: int | None  # None while the first request is still in flight
    body: bytes | None  # the sealed response, once complete
    locked_until: int
    expires_at: int


async def insert(
    db: Executor,
    api_key_id: int,
    key: str,
    request_hash: str,
    *,
    locked_until: int,
    expires_at: int,
    now: int,
) -> bool:
    """Claim the key with a new in-flight record; False when a record holds it already."""
    inserted = await db.execute(
        "INSERT INTO idempotency_records (api_key_id, idempotency_key, request_hash, "
        "locked_until, expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (api_key_id, idempotency_key) DO NOTHING",
        (api_key_id, key, request_hash, locked_until, expires_at, now),
    )
    return inserted == 1


async def get(db: Executor, api_key_id: int, key: str) -> Record | None:
    row = await db.fetch_one(
        "SELECT request_hash, status, body, locked_until, expires_at "
        "FROM idempotency_records WHERE api_key_id = ? AND idempotency_key = ?",
        (api_key_id, key),
    )
    if row is None:
        return None
    body = row["body"]
    return Record(**{**row, "body": None if body is None else bytes(body)})


async def delete_expired(db: Executor, api_key_id: int, key: str, now: int) -> None:
    await db.execute(
        "DELETE FROM idempotency_records WHERE api_key_id = ? "
        "AND idempotency_key = ? AND expires_at <= ?",
        (api_key_id, key, now),
    )


async def take_over(
    db: Executor, api_key_id: int, key: str, *, seen_locked_until: int, locked_until: int
) -> bool:
    """Take an abandoned in-flight claim; False when another request took it first."""
    taken = await db.execute(
        "UPDATE idempotency_records SET locked_until = ? WHERE api_key_id = ? "
        "AND idempotency_key = ? AND status IS NULL AND locked_until = ?",
        (locked_until, api_key_id, key, seen_locked_until),
    )
    return taken == 1


async def complete(db: Executor, api_key_id: int, key: str, status: int, sealed: bytes) -> None:
    await db.execute(
        "UPDATE idempotency_records SET status = ?, headers = NULL, body = ? "
        "WHERE api_key_id = ? AND idempotency_key = ?",
        (status, sealed, api_key_id, key),
    )


async def release(db: Executor, api_key_id: int, key: str) -> None:
    """Drop an in-flight claim (the request failed with a 5xx), never a stored response."""
    await db.execute(
        "DELETE FROM idempotency_records WHERE api_key_id = ? AND idempotency_key = ? "
        "AND status IS NULL",
        (api_key_id, key),
    )


async def purge_expired(db: Executor, now: int) -> int:
    """Delete every record past its expiry; the number deleted."""
    return await db.execute("DELETE FROM idempotency_records WHERE expires_at < ?", (now,))
