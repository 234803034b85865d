"""The event outbox: events and the delivery rows their fan-out writes. SQL only here."""

from __future__ import annotations

from dataclasses import dataclass

from ..storage.base import Executor

_ROWS_PER_INSERT = 200  # deliveries per INSERT statement (bounded parameter count)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    row_id: int
    public_id: str
    workspace_id: int
    type: str
    payload: str
    created_at: int


async def insert(
    tx: Executor,
    *,
    public_id: str,
    workspace_id: int,
    event_type: str,
    payload: str,
    dedup_key: str | None,
    now: int,
) -> int | None:
    """The new event's row id; None when ``dedup_key`` was already used in the workspace."""
    values = (public_id, workspace_id, event_type, payload, dedup_key, now)
    sql = (
        "INSERT INTO events (public_id, workspace_id, type, payload, dedup_key, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)"
    )
    if dedup_key is not None:
        # The partial unique index judges a concurrent duplicate; PostgreSQL waits for the
        # other transaction and then does nothing.
        sql += " ON CONFLICT (workspace_id, dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING"
    row = await tx.fetch_one(sql + " RETURNING id", values)
    return None if row is None else int(row["id"])


async def find_by_dedup(tx: Executor, workspace_id: int, dedup_key: str) -> StoredEvent | None:
    row = await tx.fetch_one(
        "SELECT id, public_id, workspace_id, type, payload, created_at FROM events "
        "WHERE workspace_id = ? AND dedup_key = ?",
        (workspace_id, dedup_key),
    )
    if row is None:
        return None
    return StoredEvent(
        row["id"],
        row["public_id"],
        row["workspace_id"],
        row["type"],
        row["payload"],
        row["created_at"],
    )


async def active_endpoints(tx: Executor, workspace_id: int) -> list[tuple[int, str]]:
    """(id, events JSON) of the workspace's active endpoints, in id order."""
    rows = await tx.fetch_all(
        "SELECT id, events FROM webhook_endpoints WHERE workspace_id = ? AND is_active = 1 "
        "ORDER BY id",
        (workspace_id,),
    )
    return [(int(r["id"]), str(r["events"])) for r in rows]


async def insert_deliveries(
    tx: Executor, event_row_id: int, endpoint_ids: list[int], now: int
) -> None:
    """One pending delivery per endpoint, due now (multi-row INSERTs, no per-row trip)."""
    for start in range(0, len(endpoint_ids), _ROWS_PER_INSERT):
        chunk = endpoint_ids[start : start + _ROWS_PER_INSERT]
        params: list[int] = []
        for endpoint_id in chunk:
            params += (endpoint_id, event_row_id, now, now, now)
        await tx.execute(
            "INSERT INTO webhook_deliveries (endpoint_id, event_id, status, next_attempt_at, "  # noqa: S608
            "created_at, updated_at) VALUES "
            + ", ".join(["(?, ?, 'pending', ?, ?, ?)"] * len(chunk)),
            params,
        )
