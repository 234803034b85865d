"""Webhook endpoints, deliveries and attempts: the only place their SQL lives."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..storage.base import Database, Executor, Row, fetch_value
from ..web.listing import ListQuery, ListSpec

_CHUNK = 200  # ids or rows per statement (bounded parameter counts on both backends)
PENDING = ("pending", "retrying")

ENDPOINT_COLUMNS = (
    "id, workspace_id, url, events, secret_sealed, previous_secret_sealed, "
    "previous_secret_expires_at, is_active, disabled_reason, success_count, failure_count, "
    "consecutive_failures, failing_since, last_delivery_at, created_at, updated_at"
)

ENDPOINT_LIST = ListSpec(
    sortable={
        "id": "id",
        "url": "url",
        "created_at": "created_at",
        "updated_at": "updated_at",
        "last_delivery_at": "last_delivery_at",
    },
    default_sort="id",
    fields=frozenset(
        {
            "id",
            "url",
            "events",
            "is_active",
            "success_count",
            "failure_count",
            "consecutive_failures",
            "last_delivery_at",
            "disabled_reason",
            "created_at",
            "updated_at",
        }
    ),
    statuses=frozenset({"active", "inactive"}),
    searchable=True,
    text_sorts=frozenset({"url"}),
)

DELIVERY_LIST = ListSpec(
    sortable={"id": "id", "created_at": "created_at", "updated_at": "updated_at"},
    default_sort="-id",
    fields=frozenset(
        {
            "id",
            "event_id",
            "event_type",
            "status",
            "response_code",
            "attempt",
            "delivered_at",
            "next_retry_at",
            "created_at",
            "updated_at",
        }
    ),
    statuses=frozenset({"pending", "success", "failed", "retrying"}),
    text_sorts=frozenset(),
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: int
    workspace_id: int
    url: str
    events: tuple[str, ...]
    secret_sealed: bytes
    previous_secret_sealed: bytes | None
    previous_secret_expires_at: int | None
    is_active: bool
    disabled_reason: str | None
    success_count: int
    failure_count: int
    consecutive_failures: int
    failing_since: int | None
    last_delivery_at: int | None
    created_at: int
    updated_at: int


def _endpoint(row: Row) -> Endpoint:
    previous = row["previous_secret_sealed"]
    return Endpoint(
        **{
            **row,
            "events": tuple(orjson.loads(row["events"])),
            "secret_sealed": bytes(row["secret_sealed"]),
            "previous_secret_sealed": None if previous is None else bytes(previous),
            "is_active": bool(row["is_active"]),
        }
    )


async def lock_workspace(tx: Executor, workspace_id: int, dialect: str) -> None:
    """Serialise endpoint creation per workspace, so the cap is exact: PostgreSQL locks
    the workspace row; SQLite's BEGIN IMMEDIATE already serialises every writer."""
    if dialect == "postgresql":
        await tx.fetch_one("SELECT id FROM workspaces WHERE id = ? FOR UPDATE", (workspace_id,))


async def count_endpoints(db: Executor, workspace_id: int) -> int:
    value = await fetch_value(
        db, "SELECT COUNT(*) AS n FROM webhook_endpoints WHERE workspace_id = ?", (workspace_id,)
    )
    return int(value or 0)


async def create_endpoint(
    tx: Executor,
    *,
    workspace_id: int,
    url: str,
    events: list[str],
    secret_sealed: bytes,
    now: int,
) -> Endpoint:
    row = await tx.fetch_one(
        "INSERT INTO webhook_endpoints (workspace_id, url, events, secret_sealed, "  # noqa: S608
        f"created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING {ENDPOINT_COLUMNS}",
        (workspace_id, url, orjson.dumps(events).decode(), secret_sealed, now, now),
    )
    assert row is not None
    return _endpoint(row)


async def get_endpoint(db: Executor, workspace_id: int, endpoint_id: int) -> Endpoint | None:
    row = await db.fetch_one(
        f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints "  # noqa: S608
        "WHERE id = ? AND workspace_id = ?",
        (endpoint_id, workspace_id),
    )
    return None if row is None else _endpoint(row)


def _endpoint_scope(workspace_id: int, query: ListQuery) -> tuple[str, list[Any]]:
    conditions, params = query.where()
    conditions[:0] = ["workspace_id = ?"]
    params[:0] = [workspace_id]
    if query.status is not None:
        conditions.append("is_active = ?")
        params.append(1 if query.status == "active" else 0)
    if query.search:
        conditions.append("LOWER(url) LIKE ?")
        params.append(query.search_pattern)
    return "WHERE " + " AND ".join(f"({c})" for c in conditions), params


async def page_endpoints(db: Executor, workspace_id: int, query: ListQuery) -> list[Endpoint]:
    where, params = _endpoint_scope(workspace_id, query)
    rows = await db.fetch_all(
        f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints {where} "  # noqa: S608
        f"ORDER BY {query.order_by(ENDPOINT_LIST)} LIMIT ? OFFSET ?",
        [*params, query.per_page, query.offset],
    )
    return [_endpoint(r) for r in rows]


async def count_endpoints_matching(db: Executor, workspace_id: int, query: ListQuery) -> int:
    where, params = _endpoint_scope(workspace_id, query)
    value = await fetch_value(db, f"SELECT COUNT(*) AS n FROM webhook_endpoints {where}", params)  # noqa: S608
    return int(value or 0)


async def update_endpoint(
    db: Executor,
    workspace_id: int,
    endpoint_id: int,
    *,
    url: str | None,
    events: list[str] | None,
    is_active: bool | None,
    now: int,
) -> Endpoint | None:
    sets: list[str] = ["updated_at = ?"]
    params: list[Any] = [now]
    if url is not None:
        sets.append("url = ?")
        params.append(url)
    if events is not None:
        sets.append("events = ?")
        params.append(orjson.dumps(events).decode())
    if is_active is not None:
        sets.append("is_active = ?")
        params.append(1 if is_active else 0)
        if is_active:  # re-enabling starts the failure run afresh
            sets += ["disabled_reason = NULL", "consecutive_failures = 0", "failing_since = NULL"]
        else:
            sets.append("disabled_reason = 'disabled by a user'")
    row = await db.fetch_one(
        f"UPDATE webhook_endpoints SET {', '.join(sets)} "  # noqa: S608
        f"WHERE id = ? AND workspace_id = ? RETURNING {ENDPOINT_COLUMNS}",
        [*params, endpoint_id, workspace_id],
    )
    return None if row is None else _endpoint(row)


async def delete_endpoint(db: Executor, workspace_id: int, endpoint_id: int) -> bool:
    changed = await db.execute(
        "DELETE FROM webhook_endpoints WHERE id = ? AND workspace_id = ?",
        (endpoint_id, workspace_id),
    )
    return changed == 1


async def rotate_secret(
    db: Executor,
    workspace_id: int,
    endpoint_id: int,
    *,
    new_sealed: bytes,
    previous_sealed: bytes,
    previous_expires_at: int,
    expected_sealed: bytes,
    now: int,
) -> bool:
    """Swap secrets unless another rotation won meanwhile (``expected_sealed`` changed)."""
    changed = await db.execute(
        "UPDATE webhook_endpoints SET secret_sealed = ?, previous_secret_sealed = ?, "
        "previous_secret_expires_at = ?, updated_at = ? "
        "WHERE id = ? AND workspace_id = ? AND secret_sealed = ?",
        (
            new_sealed,
            previous_sealed,
            previous_expires_at,
            now,
            endpoint_id,
            workspace_id,
            expected_sealed,
        ),
    )
    return changed == 1


# ---------------------------------------------------------------------------------------
# Deliveries (the API's view)
# ---------------------------------------------------------------------------------------

DELIVERY_COLUMNS = (
    "d.id, d.endpoint_id, e.public_id AS event_id, e.type AS event_type, d.status, d.attempt, "
    "d.manual_retries, d.response_code, d.next_attempt_at, d.locked_until, d.delivered_at, "
    "d.created_at, d.updated_at"
)


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    endpoint_id: int
    event_id: str
    event_type: str
    status: str
    attempt: int
    manual_retries: int
    response_code: int | None
    next_attempt_at: int
    locked_until: int | None
    delivered_at: int | None
    created_at: int
    updated_at: int


@dataclass(frozen=True, slots=True)
class Attempt:
    attempt: int
    status_code: int | None
    response_body: str | None
    error: str | None
    duration_ms: int
    created_at: int


def _delivery_scope(endpoint_id: int, query: ListQuery) -> tuple[str, list[Any]]:
    conditions, params = query.where("d")
    conditions[:0] = ["d.endpoint_id = ?"]
    params[:0] = [endpoint_id]
    if query.status is not None:
        conditions.append("d.status = ?")
        params.append(query.status)
    return "WHERE " + " AND ".join(f"({c})" for c in conditions), params


async def page_deliveries(db: Executor, endpoint_id: int, query: ListQuery) -> list[Delivery]:
    where, params = _delivery_scope(endpoint_id, query)
    rows = await db.fetch_all(
        f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d "  # noqa: S608
        f"JOIN events e ON e.id = d.event_id {where} "
        f"ORDER BY {query.order_by(DELIVERY_LIST, 'd')} LIMIT ? OFFSET ?",
        [*params, query.per_page, query.offset],
    )
    return [Delivery(**r) for r in rows]


async def count_deliveries(db: Executor, endpoint_id: int, query: ListQuery) -> int:
    where, params = _delivery_scope(endpoint_id, query)
    value = await fetch_value(
        db,
        f"SELECT COUNT(*) AS n FROM webhook_deliveries d {where}",  # noqa: S608
        params,
    )
    return int(value or 0)


async def get_delivery(db: Executor, endpoint_id: int, delivery_id: int) -> Delivery | None:
    row = await db.fetch_one(
        f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d "  # noqa: S608
        "JOIN events e ON e.id = d.event_id WHERE d.id = ? AND d.endpoint_id = ?",
        (delivery_id, endpoint_id),
    )
    return None if row is None else Delivery(**row)


async def attempts_of(db: Executor, delivery_id: int) -> list[Attempt]:
    rows = await db.fetch_all(
        "SELECT attempt, status_code, response_body, error, duration_ms, created_at "
        "FROM webhook_attempts WHERE delivery_id = ? ORDER BY attempt, id",
        (delivery_id,),
    )
    return [Attempt(**r) for r in rows]


async def requeue(
    db: Executor, endpoint_id: int, delivery_id: int, now: int, lease_now: int, max_manual: int
) -> Row | None:
    """A manual retry: due now, unless it succeeded, is queued, is being sent (leased at
    wall-clock ``lease_now``), or used up its manual retries (None: the caller reads the
    row to say which)."""
    return await db.fetch_one(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = ?, "
        "manual_retries = manual_retries + 1, updated_at = ? "
        "WHERE id = ? AND endpoint_id = ? AND status IN ('failed', 'retrying') "
        "AND manual_retries < ? AND (locked_until IS NULL OR locked_until < ?) "
        "RETURNING id, status, attempt",
        (now, now, delivery_id, endpoint_id, max_manual, lease_now),
    )


# ---------------------------------------------------------------------------------------
# The delivery worker's claims and outcomes
# ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class Claimed:
    """A leased delivery with what sending it needs."""

    id: int
    endpoint_id: int
    attempt: int  # attempts made before this one
    next_attempt_at: int
    event_id: str
    event_type: str
    payload: bytes
    workspace_id: int
    url: str
    is_active: bool
    secret_sealed: bytes
    previous_secret_sealed: bytes | None
    previous_secret_expires_at: int | None


def _ids(ids: Sequence[int]) -> str:
    return ", ".join("?" * len(ids))


def _id_in(db: Executor, column: str, ids: Sequence[int]) -> tuple[str, list[Any]]:
    """``column`` in a batch of ids, and its parameters. PostgreSQL: one array parameter
    (``= ANY``), so the statement's text is the same whatever the batch size and stays
    prepared in the connection's statement cache; with one placeholder per id, every
    batch size was a new statement to parse and plan, at every claim and outcome flush.
    SQLite binds each id (no arrays)."""
    if db.dialect == "postgresql":
        return f"{column} = ANY(CAST(? AS BIGINT[]))", [list(ids)]
    return f"{column} IN ({_ids(ids)})", list(ids)


async def claim(
    db: Database,
    *,
    holder: str,
    now: int,
    lease_now: int,
    lease_until: int,
    limit: int,
    exclude: Sequence[int],
) -> list[Claimed]:
    """Lease up to ``limit`` deliveries due at ``now`` (the service clock, oldest due
    first) to ``holder``. Leases are wall-clock times (``lease_now``): they coordinate
    processes, whatever clock the schedule runs on. PostgreSQL
    skips rows another worker is claiming (FOR UPDATE SKIP LOCKED); SQLite runs the one
    statement under its write lock. Either way no two workers lease one row."""
    skip_locked = " FOR UPDATE SKIP LOCKED" if db.dialect == "postgresql" else ""
    excluded = f" AND endpoint_id NOT IN ({_ids(exclude)})" if exclude else ""
    rows = await db.fetch_all(
        "UPDATE webhook_deliveries SET locked_until = ?, locked_by = ? WHERE id IN ("  # noqa: S608
        "SELECT id FROM webhook_deliveries WHERE status IN ('pending', 'retrying') "
        "AND next_attempt_at <= ? AND (locked_until IS NULL OR locked_until < ?)"
        f"{excluded} ORDER BY next_attempt_at, id LIMIT ?{skip_locked}) RETURNING id",
        [lease_until, holder, now, lease_now, *exclude, limit],
    )
    ids = [int(r["id"]) for r in rows]
    claimed: list[Claimed] = []
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        among, params = _id_in(db, "d.id", chunk)
        loaded = await db.fetch_all(
            "SELECT d.id, d.endpoint_id, d.attempt, d.next_attempt_at, e.public_id AS event_id, "  # noqa: S608
            "e.type AS event_type, e.payload, p.workspace_id, p.url, p.is_active, "
            "p.secret_sealed, p.previous_secret_sealed, p.previous_secret_expires_at "
            "FROM webhook_deliveries d JOIN events e ON e.id = d.event_id "
            f"JOIN webhook_endpoints p ON p.id = d.endpoint_id WHERE {among}",
            params,
        )
        for r in loaded:
            previous = r["previous_secret_sealed"]
            claimed.append(
                Claimed(
                    id=r["id"],
                    endpoint_id=r["endpoint_id"],
                    attempt=r["attempt"],
                    next_attempt_at=r["next_attempt_at"],
                    event_id=r["event_id"],
                    event_type=r["event_type"],
                    payload=r["payload"].encode(),
                    workspace_id=r["workspace_id"],
                    url=r["url"],
                    is_active=bool(r["is_active"]),
                    secret_sealed=bytes(r["secret_sealed"]),
                    previous_secret_sealed=None if previous is None else bytes(previous),
                    previous_secret_expires_at=r["previous_secret_expires_at"],
                )
            )
    claimed.sort(key=lambda c: (c.next_attempt_at, c.id))
    return claimed


async def extend_leases(db: Database, ids: Sequence[int], holder: str, until: int) -> None:
    for start in range(0, len(ids), _CHUNK):
        among, params = _id_in(db, "id", ids[start : start + _CHUNK])
        await db.execute(
            f"UPDATE webhook_deliveries SET locked_until = ? WHERE {among} AND locked_by = ?",  # noqa: S608
            [until, *params, holder],
        )


async def release(db: Executor, ids: Sequence[int], holder: str) -> None:
    """Give leases back unsent (a graceful stop, or more than this worker will hold)."""
    for start in range(0, len(ids), _CHUNK):
        among, params = _id_in(db, "id", ids[start : start + _CHUNK])
        await db.execute(
            "UPDATE webhook_deliveries SET locked_until = NULL, locked_by = NULL "  # noqa: S608
            f"WHERE {among} AND locked_by = ?",
            [*params, holder],
        )


async def release_holder(db: Executor, holder: str) -> int:
    """Give back every lease ``holder`` still has (a graceful stop): also those of a claim
    cancelled after its UPDATE ran but before its rows were read back."""
    return await db.execute(
        "UPDATE webhook_deliveries SET locked_until = NULL, locked_by = NULL "
        "WHERE status IN ('pending', 'retrying') AND locked_by = ?",
        (holder,),
    )


async def mark_succeeded(
    tx: Executor, ids: Sequence[int], holder: str, code: int, now: int
) -> None:
    for start in range(0, len(ids), _CHUNK):
        among, params = _id_in(tx, "id", ids[start : start + _CHUNK])
        await tx.execute(
            "UPDATE webhook_deliveries SET status = 'success', attempt = attempt + 1, "  # noqa: S608
            "response_code = ?, delivered_at = ?, locked_until = NULL, locked_by = NULL, "
            f"updated_at = ? WHERE {among} AND locked_by = ?",
            [code, now, now, *params, holder],
        )


async def mark_failed_attempt(
    tx: Executor,
    delivery_id: int,
    holder: str,
    *,
    code: int | None,
    retry_at: int | None,
    now: int,
) -> None:
    """One failed attempt: ``retrying`` until ``retry_at``, or ``failed`` when None."""
    status = "failed" if retry_at is None else "retrying"
    await tx.execute(
        "UPDATE webhook_deliveries SET status = ?, attempt = attempt + 1, response_code = ?, "
        "next_attempt_at = ?, locked_until = NULL, locked_by = NULL, updated_at = ? "
        "WHERE id = ? AND locked_by = ?",
        (status, code, retry_at if retry_at is not None else now, now, delivery_id, holder),
    )


async def mark_skipped(tx: Executor, ids: Sequence[int], holder: str, now: int) -> None:
    """Claimed deliveries of an endpoint found inactive: failed without an attempt."""
    for start in range(0, len(ids), _CHUNK):
        among, params = _id_in(tx, "id", ids[start : start + _CHUNK])
        await tx.execute(
            "UPDATE webhook_deliveries SET status = 'failed', locked_until = NULL, "  # noqa: S608
            f"locked_by = NULL, updated_at = ? WHERE {among} AND locked_by = ?",
            [now, *params, holder],
        )


# Typed placeholders: VALUES gives PostgreSQL no column to infer a parameter's type from.
_ATTEMPT_ROW = (
    "(CAST(? AS BIGINT), CAST(? AS INTEGER), CAST(? AS INTEGER), CAST(? AS TEXT), "
    "CAST(? AS TEXT), CAST(? AS INTEGER), CAST(? AS BIGINT))"
)


_ATTEMPTS_UNNEST = (
    "INSERT INTO webhook_attempts (delivery_id, attempt, status_code, response_body, error, "
    "duration_ms, created_at) SELECT v.delivery_id, v.attempt, v.status_code, "
    "v.response_body, v.error, v.duration_ms, v.created_at FROM unnest(CAST(? AS BIGINT[]), "
    "CAST(? AS INTEGER[]), CAST(? AS INTEGER[]), CAST(? AS TEXT[]), CAST(? AS TEXT[]), "
    "CAST(? AS INTEGER[]), CAST(? AS BIGINT[])) AS v(delivery_id, attempt, status_code, "
    "response_body, error, duration_ms, created_at) WHERE EXISTS (SELECT 1 FROM "
    "webhook_deliveries d WHERE d.id = v.delivery_id)"
)


async def insert_attempts(tx: Executor, rows: Sequence[tuple[Any, ...]]) -> None:
    """(delivery_id, attempt, status_code, response_body, error, duration_ms, created_at).
    Rows whose delivery was deleted meanwhile (its endpoint removed) are skipped, not an
    error that would roll the other outcomes back. VALUES columns are column1..7 on both."""
    if tx.dialect == "postgresql":  # one array per column: one prepared statement
        for start in range(0, len(rows), _CHUNK):
            columns = [list(column) for column in zip(*rows[start : start + _CHUNK], strict=True)]
            await tx.execute(_ATTEMPTS_UNNEST, columns)
        return
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        params: list[Any] = [value for row in chunk for value in row]
        await tx.execute(
            "INSERT INTO webhook_attempts (delivery_id, attempt, status_code, response_body, "  # noqa: S608
            "error, duration_ms, created_at) SELECT CAST(v.column1 AS BIGINT), "
            "CAST(v.column2 AS INTEGER), CAST(v.column3 AS INTEGER), v.column4, v.column5, "
            "CAST(v.column6 AS INTEGER), CAST(v.column7 AS BIGINT) FROM (VALUES "
            + ", ".join([_ATTEMPT_ROW] * len(chunk))
            + ") AS v WHERE EXISTS (SELECT 1 FROM webhook_deliveries d "
            "WHERE d.id = CAST(v.column1 AS BIGINT))",
            params,
        )


async def record_successes(tx: Executor, endpoint_id: int, count: int, now: int) -> None:
    """Counters move by single relative UPDATEs: exact under concurrent workers."""
    await tx.execute(
        "UPDATE webhook_endpoints SET success_count = success_count + ?, "
        "consecutive_failures = 0, failing_since = NULL, last_delivery_at = ? WHERE id = ?",
        (count, now, endpoint_id),
    )


async def record_success_runs(tx: Executor, counts: dict[int, int], now: int) -> None:
    """:func:`record_successes` for many endpoints in one statement (a flush's common case:
    only successes), chunked."""
    items = list(counts.items())
    if tx.dialect == "postgresql":  # arrays: one prepared statement whatever the count
        for start in range(0, len(items), _CHUNK):
            endpoints, added = zip(*items[start : start + _CHUNK], strict=True)
            await tx.execute(
                "UPDATE webhook_endpoints p SET success_count = p.success_count + v.added, "
                "consecutive_failures = 0, failing_since = NULL, last_delivery_at = ? "
                "FROM unnest(CAST(? AS BIGINT[]), CAST(? AS BIGINT[])) AS v(id, added) "
                "WHERE p.id = v.id",
                [now, list(endpoints), list(added)],
            )
        return
    for start in range(0, len(items), _CHUNK):
        chunk = items[start : start + _CHUNK]
        cases = " ".join("WHEN ? THEN ?" for _ in chunk)
        params: list[Any] = [value for pair in chunk for value in pair]
        ids = [endpoint_id for endpoint_id, _ in chunk]
        await tx.execute(
            "UPDATE webhook_endpoints SET success_count = success_count + "  # noqa: S608
            f"CASE id {cases} ELSE 0 END, consecutive_failures = 0, failing_since = NULL, "
            f"last_delivery_at = ? WHERE id IN ({_ids(ids)})",
            [*params, now, *ids],
        )


async def record_failure(tx: Executor, endpoint_id: int, now: int) -> Row | None:
    """One failed attempt; returns the run so far (consecutive_failures, failing_since)."""
    return await tx.fetch_one(
        "UPDATE webhook_endpoints SET failure_count = failure_count + 1, "
        "consecutive_failures = consecutive_failures + 1, "
        "failing_since = COALESCE(failing_since, ?), last_delivery_at = ? WHERE id = ? "
        "RETURNING workspace_id, url, consecutive_failures, failing_since, is_active",
        (now, now, endpoint_id),
    )


async def fail_queued(tx: Executor, endpoint_id: int, now: int) -> None:
    """An endpoint stopped taking deliveries: what is queued for it fails (a lease a worker
    holds is dropped with it, so that worker's outcome write changes nothing)."""
    await tx.execute(
        "UPDATE webhook_deliveries SET status = 'failed', locked_until = NULL, locked_by = NULL, "
        "updated_at = ? WHERE endpoint_id = ? AND status IN ('pending', 'retrying')",
        (now, endpoint_id),
    )


async def disable(tx: Executor, endpoint_id: int, reason: str, now: int) -> bool:
    """Disable an active endpoint and fail its queued deliveries; False if it was not active."""
    changed = await tx.execute(
        "UPDATE webhook_endpoints SET is_active = 0, disabled_reason = ?, updated_at = ? "
        "WHERE id = ? AND is_active = 1",
        (reason, now, endpoint_id),
    )
    if changed != 1:
        return False
    await fail_queued(tx, endpoint_id, now)
    return True


# ---------------------------------------------------------------------------------------
# Retention
# ---------------------------------------------------------------------------------------


async def purge_events(db: Database, before: int, batch: int) -> int:
    """Delete up to ``batch`` events created before ``before`` whose deliveries are all
    settled; their deliveries and attempts go with them (ON DELETE CASCADE). Anything
    still queued is kept until it settles, however old."""
    return await db.execute(
        "DELETE FROM events WHERE id IN (SELECT e.id FROM events e WHERE e.created_at < ? "
        "AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id "
        "AND d.status IN ('pending', 'retrying')) ORDER BY e.id LIMIT ?)",
        (before, batch),
    )


async def purge_orphan_endpoints(db: Database) -> int:
    """Endpoints of deleted workspaces, once nothing queued is left for them."""
    return await db.execute(
        "DELETE FROM webhook_endpoints WHERE NOT EXISTS "
        "(SELECT 1 FROM workspaces w WHERE w.id = webhook_endpoints.workspace_id) "
        "AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d "
        "WHERE d.endpoint_id = webhook_endpoints.id AND d.status IN ('pending', 'retrying'))"
    )


# -- resealing under a new server secret (core-api secrets reseal) ----------------------


@dataclass(frozen=True, slots=True)
class SealedSecrets:
    id: int
    workspace_id: int
    secret_sealed: bytes
    previous_secret_sealed: bytes | None


_SEALED = "SELECT id, workspace_id, secret_sealed, previous_secret_sealed FROM webhook_endpoints "


def _sealed(row: Row) -> SealedSecrets:
    previous = row["previous_secret_sealed"]
    return SealedSecrets(
        row["id"],
        row["workspace_id"],
        bytes(row["secret_sealed"]),
        None if previous is None else bytes(previous),
    )


async def sealed_secrets_after(db: Executor, after_id: int, limit: int) -> list[SealedSecrets]:
    """The next ``limit`` endpoints' sealed secrets by id (a keyset walk of the table)."""
    rows = await db.fetch_all(_SEALED + "WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit))
    return [_sealed(r) for r in rows]


async def get_sealed_secrets(db: Executor, endpoint_id: int) -> SealedSecrets | None:
    found = await db.fetch_one(_SEALED + "WHERE id = ?", (endpoint_id,))
    return None if found is None else _sealed(found)


async def replace_sealed(
    db: Executor, seen: SealedSecrets, secret_sealed: bytes, previous_secret_sealed: bytes | None
) -> bool:
    """Write the same secrets sealed anew, unless the row changed since it was read (a
    rotation meanwhile). ``updated_at`` stays: the endpoint itself did not change."""
    params: tuple[bytes, ...] = ()
    same_previous = "previous_secret_sealed IS NULL"
    if seen.previous_secret_sealed is not None:
        same_previous, params = "previous_secret_sealed = ?", (seen.previous_secret_sealed,)
    changed = await db.execute(
        "UPDATE webhook_endpoints SET secret_sealed = ?, previous_secret_sealed = ? "  # noqa: S608
        f"WHERE id = ? AND secret_sealed = ? AND {same_previous}",
        (secret_sealed, previous_secret_sealed, seen.id, seen.secret_sealed, *params),
    )
    return changed == 1
