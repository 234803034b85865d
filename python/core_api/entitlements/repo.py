"""Entitlements SQL: usage counters, the usage ledger, notices and overrides.

Recording usage is one statement on the counter row (see :func:`add_usage`): the limit
is part of the write's own condition, so concurrent callers cannot both take the last
unit, whatever the number of processes or nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..storage.base import Executor, fetch_value

# Stands in for "no limit" in the conditional upsert (soft or unlimited features).
NO_LIMIT = 2**62


@dataclass(frozen=True, slots=True)
class Override:
    id: int
    workspace_id: int
    feature: str
    kind: str  # "set" | "grant"
    amount: int
    expires_at: int | None
    note: str
    created_at: int


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    quantity: int
    used_after: int
    limit_value: int


async def add_usage(
    db: Executor,
    workspace_id: int,
    feature: str,
    period_start: int,
    quantity: int,
    limit: int,
    now: int,
) -> int | None:
    """Add ``quantity`` to the counter if the result stays within ``limit`` (a negative
    quantity always applies, never below zero); the new total, or None when refused.
    One atomic statement: the check is the upsert's own WHERE."""
    first = max(quantity, 0)
    row = await db.fetch_one(
        "INSERT INTO entitlement_usage (workspace_id, feature, period_start, used, updated_at) "
        "SELECT ?, ?, ?, ?, ? WHERE CAST(? AS BIGINT) <= CAST(? AS BIGINT) "
        "ON CONFLICT (workspace_id, feature, period_start) DO UPDATE SET "
        "used = CASE WHEN entitlement_usage.used + ? < 0 THEN 0 "
        "ELSE entitlement_usage.used + ? END, updated_at = excluded.updated_at "
        "WHERE CAST(? AS BIGINT) <= 0 OR entitlement_usage.used + ? <= ? "
        "RETURNING used",
        (
            workspace_id,
            feature,
            period_start,
            first,
            now,
            first,
            limit,
            quantity,
            quantity,
            quantity,
            quantity,
            limit,
        ),
    )
    return None if row is None else int(row["used"])


async def add_counts(
    tx: Executor, counts: list[tuple[int, str, int, int]], now: int
) -> list[tuple[int, str, int, int]]:
    """Unconditional additions (metering flushes): ``(workspace, feature, period, n)`` in,
    ``(workspace, feature, n, new total)`` out."""
    totals = []
    for workspace_id, feature, period_start, n in counts:
        used = await fetch_value(
            tx,
            "INSERT INTO entitlement_usage (workspace_id, feature, period_start, used, "
            "updated_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (workspace_id, feature, period_start) DO UPDATE SET "
            "used = entitlement_usage.used + excluded.used, updated_at = excluded.updated_at "
            "RETURNING used",
            (workspace_id, feature, period_start, n, now),
        )
        totals.append((workspace_id, feature, n, int(used)))
    return totals


async def used(db: Executor, workspace_id: int, feature: str, period_start: int) -> int:
    value = await fetch_value(
        db,
        "SELECT used FROM entitlement_usage "
        "WHERE workspace_id = ? AND feature = ? AND period_start = ?",
        (workspace_id, feature, period_start),
    )
    return int(value or 0)


async def usage_rows(db: Executor, workspace_id: int) -> dict[tuple[str, int], int]:
    rows = await db.fetch_all(
        "SELECT feature, period_start, used FROM entitlement_usage WHERE workspace_id = ?",
        (workspace_id,),
    )
    return {(r["feature"], int(r["period_start"])): int(r["used"]) for r in rows}


@dataclass(frozen=True, slots=True)
class Entry:
    """One usage to record: the ledger row's values and the counter's ceiling."""

    workspace_id: int
    feature: str
    period_start: int
    event_id: str | None
    quantity: int
    limit_value: int  # the limit it was judged against (-1 unlimited), kept for replays
    ceiling: int  # the counter may not exceed this (NO_LIMIT when soft or unlimited)
    metadata: str
    expires_at: int
    now: int


_LEDGER = (
    "INSERT INTO entitlement_events (workspace_id, feature, period_start, event_id, "
    "quantity, used_after, limit_value, metadata, expires_at, created_at) "
)


async def insert_event(tx: Executor, e: Entry, used_after: int) -> bool:
    """The ledger row; False when ``event_id`` was already recorded in this period."""
    row = await tx.fetch_one(
        _LEDGER + "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (workspace_id, feature, period_start, event_id) "
        "WHERE event_id IS NOT NULL DO NOTHING RETURNING id",
        (
            e.workspace_id,
            e.feature,
            e.period_start,
            e.event_id,
            e.quantity,
            used_after,
            e.limit_value,
            e.metadata,
            e.expires_at,
            e.now,
        ),
    )
    return row is not None


async def record_at_once(db: Executor, e: Entry) -> tuple[int | None, bool]:
    """PostgreSQL: :func:`add_usage` and the ledger row in one statement (a data-modifying
    CTE): ``(new total or None when refused, ledger row written)``. A total without a row
    means ``event_id`` was recorded already: the caller rolls its transaction back. Without
    an event_id there is nothing to roll back, so no transaction is needed."""
    first = max(e.quantity, 0)
    row = await db.fetch_one(
        "WITH u AS (INSERT INTO entitlement_usage (workspace_id, feature, period_start, used, "  # noqa: S608
        "updated_at) SELECT ?, ?, ?, ?, ? WHERE CAST(? AS BIGINT) <= CAST(? AS BIGINT) "
        "ON CONFLICT (workspace_id, feature, period_start) DO UPDATE SET "
        "used = CASE WHEN entitlement_usage.used + ? < 0 THEN 0 "
        "ELSE entitlement_usage.used + ? END, updated_at = excluded.updated_at "
        "WHERE CAST(? AS BIGINT) <= 0 OR entitlement_usage.used + ? <= ? RETURNING used), "
        "e AS (" + _LEDGER + "SELECT ?, ?, ?, ?, ?, u.used, ?, ?, ?, ? FROM u "
        "ON CONFLICT (workspace_id, feature, period_start, event_id) "
        "WHERE event_id IS NOT NULL DO NOTHING RETURNING id) "
        "SELECT (SELECT used FROM u) AS used, (SELECT id FROM e) AS ledger_id",
        (
            e.workspace_id,
            e.feature,
            e.period_start,
            first,
            e.now,
            first,
            e.ceiling,
            e.quantity,
            e.quantity,
            e.quantity,
            e.quantity,
            e.ceiling,
            e.workspace_id,
            e.feature,
            e.period_start,
            e.event_id,
            e.quantity,
            e.limit_value,
            e.metadata,
            e.expires_at,
            e.now,
        ),
    )
    assert row is not None
    used = row["used"]
    return (None if used is None else int(used)), row["ledger_id"] is not None


async def find_event(
    db: Executor, workspace_id: int, feature: str, period_start: int, event_id: str
) -> LedgerEntry | None:
    row = await db.fetch_one(
        "SELECT quantity, used_after, limit_value FROM entitlement_events "
        "WHERE workspace_id = ? AND feature = ? AND period_start = ? AND event_id = ?",
        (workspace_id, feature, period_start, event_id),
    )
    return None if row is None else LedgerEntry(**row)


async def purge_events(db: Executor, now: int, batch: int) -> int:
    return await db.execute(
        "DELETE FROM entitlement_events WHERE id IN "
        "(SELECT id FROM entitlement_events WHERE expires_at < ? LIMIT ?)",
        (now, batch),
    )


async def add_notice(
    tx: Executor, workspace_id: int, feature: str, period_start: int, level: int, now: int
) -> bool:
    """True for the one caller that records this notice (and so publishes it)."""
    row = await tx.fetch_one(
        "INSERT INTO entitlement_notices (workspace_id, feature, period_start, level, "
        "created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING level",
        (workspace_id, feature, period_start, level, now),
    )
    return row is not None


async def overrides(db: Executor, workspace_id: int) -> list[Override]:
    rows = await db.fetch_all(
        "SELECT id, workspace_id, feature, kind, amount, expires_at, note, created_at "
        "FROM entitlement_overrides WHERE workspace_id = ? ORDER BY id",
        (workspace_id,),
    )
    return [Override(**r) for r in rows]


async def add_override(
    tx: Executor,
    *,
    workspace_id: int,
    feature: str,
    kind: str,
    amount: int,
    expires_at: int | None,
    note: str,
    now: int,
) -> Override:
    row = await tx.fetch_one(
        "INSERT INTO entitlement_overrides (workspace_id, feature, kind, amount, expires_at, "
        "note, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
        "RETURNING id, workspace_id, feature, kind, amount, expires_at, note, created_at",
        (workspace_id, feature, kind, amount, expires_at, note, now),
    )
    assert row is not None
    return Override(**row)


async def delete_overrides(db: Executor, workspace_id: int, feature: str) -> int:
    return await db.execute(
        "DELETE FROM entitlement_overrides WHERE workspace_id = ? AND feature = ?",
        (workspace_id, feature),
    )


async def workspace_tiers(db: Executor, ids: list[int]) -> dict[int, str]:
    if not ids:
        return {}
    marks = ", ".join("?" for _ in ids)
    rows = await db.fetch_all(
        f"SELECT id, tier FROM workspaces WHERE id IN ({marks})",  # noqa: S608
        tuple(ids),
    )
    return {int(r["id"]): str(r["tier"]) for r in rows}


async def workspace_row(db: Executor, workspace_id: int) -> dict[str, Any] | None:
    return await db.fetch_one(
        "SELECT id, tier, owner_id FROM workspaces WHERE id = ?", (workspace_id,)
    )


# Counts of the resources core-api itself limits ("limit" features it counts).
_COUNTS = {
    "api_keys": (
        "SELECT COUNT(*) FROM api_keys WHERE workspace_id = ? AND revoked_at IS NULL "
        "AND (expires_at IS NULL OR expires_at > ?) "
        "AND (grace_period_ends_at IS NULL OR grace_period_ends_at > ?)"
    ),
    "webhooks": "SELECT COUNT(*) FROM webhook_endpoints WHERE workspace_id = ?",
    "pixel_sites": "SELECT COUNT(*) FROM pixel_sites WHERE workspace_id = ?",
    # The subject is the owner (a user): how many workspaces they own.
    "workspaces": "SELECT COUNT(*) FROM workspaces WHERE owner_id = ?",
}
COUNTED = frozenset(_COUNTS)


async def count(db: Executor, feature: str, subject_id: int, now: int) -> int:
    """The feature's count for a workspace (for ``workspaces``: for an owner's user id)."""
    sql = _COUNTS[feature]
    params: tuple[int, ...] = (subject_id, now, now) if feature == "api_keys" else (subject_id,)
    return int(await fetch_value(db, sql, params) or 0)


@dataclass(frozen=True, slots=True)
class Counted:
    n: int  # the current count
    set_amount: int | None  # the newest live ``set`` override, if any
    granted: int  # the sum of live grants


async def count_with_overrides(
    tx: Executor, feature: str, subject_id: int, workspace_id: int, now: int
) -> Counted:
    """The count and the workspace's live overrides of the feature, in one statement."""
    params: tuple[int, ...] = (subject_id, now, now) if feature == "api_keys" else (subject_id,)
    live = "workspace_id = ? AND feature = ? AND (expires_at IS NULL OR expires_at > ?)"
    row = await tx.fetch_one(
        f"SELECT ({_COUNTS[feature]}) AS n, "  # noqa: S608 - constant SQL
        f"(SELECT amount FROM entitlement_overrides WHERE {live} AND kind = 'set' "
        "ORDER BY id DESC LIMIT 1) AS set_amount, "
        f"(SELECT COALESCE(SUM(amount), 0) FROM entitlement_overrides WHERE {live} "
        "AND kind = 'grant') AS granted",
        (*params, workspace_id, feature, now, workspace_id, feature, now),
    )
    assert row is not None
    set_amount = row["set_amount"]
    return Counted(
        int(row["n"]), None if set_amount is None else int(set_amount), int(row["granted"])
    )


async def lock_workspace(tx: Executor, workspace_id: int, dialect: str) -> dict[str, Any] | None:
    """The workspace's tier and owner, its row locked on PostgreSQL so that creations
    counted against it are serialised (SQLite's BEGIN IMMEDIATE serialises every writer)."""
    lock = " FOR UPDATE" if dialect == "postgresql" else ""
    return await tx.fetch_one(
        f"SELECT id, tier, owner_id FROM workspaces WHERE id = ?{lock}",  # noqa: S608
        (workspace_id,),
    )


async def lock_user(tx: Executor, user_id: int, dialect: str) -> None:
    if dialect == "postgresql":
        await tx.fetch_one("SELECT id FROM users WHERE id = ? FOR UPDATE", (user_id,))
