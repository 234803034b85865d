"""API keys. Only the HMAC of a key is stored; ``prefix`` is kept for display."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ..storage.base import Executor, Row, fetch_value
from ..web.listing import ListQuery, ListSpec

COLUMNS = (
    "k.id, k.user_id, k.workspace_id, k.name, k.prefix, k.scopes, k.rate_limit_tier, "
    "k.expires_at, k.last_used_at, k.grace_period_ends_at, k.rotated_to_id, k.rate_bucket_id, "
    "k.created_at, "
    "k.updated_at, k.mcp_servers"
)
RETURNED = COLUMNS.replace("k.", "")

LIST_SPEC = ListSpec(
    sortable={
        "id": "id",
        "name": "name",
        "created_at": "created_at",
        "updated_at": "updated_at",
        "last_used_at": "last_used_at",
        "expires_at": "expires_at",
    },
    default_sort="id",
    fields=frozenset(
        {
            "id",
            "name",
            "prefix",
            "scopes",
            "rate_limit_tier",
            "last_used_at",
            "expires_at",
            "grace_period_ends_at",
            "mcp_servers",
            "created_at",
            "updated_at",
        }
    ),
    includes=frozenset({"workspace", "user"}),
    statuses=frozenset({"active", "expired", "rotating"}),
    searchable=True,
)


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """A live (unrevoked) key with its workspace's tier; ``rate_limit_tier`` None means
    "the workspace's". Never holds the key itself nor its hash (see :class:`LiveKey`)."""

    id: int
    user_id: int
    workspace_id: int
    name: str
    prefix: str
    scopes: tuple[str, ...]
    rate_limit_tier: str | None
    expires_at: int | None
    last_used_at: int | None
    grace_period_ends_at: int | None
    rotated_to_id: int | None
    rate_bucket_id: int | None
    created_at: int
    updated_at: int
    mcp_servers: tuple[str, ...] | None  # the MCP servers it may use; None: every one
    workspace_tier: str


@dataclass(frozen=True, slots=True)
class LiveKey(ApiKeyRecord):
    """What authentication reads: the record and the stored HMAC it matched."""

    key_hash: str


def _fields(row: Row) -> Row:
    servers = row["mcp_servers"]
    return {
        **row,
        "scopes": tuple(orjson.loads(row["scopes"])),
        "mcp_servers": None if servers is None else tuple(orjson.loads(servers)),
    }


async def create(
    db: Executor,
    *,
    user_id: int,
    workspace_id: int,
    workspace_tier: str,
    name: str,
    prefix: str,
    key_hash: str,
    scopes: list[str],
    rate_limit_tier: str | None,
    expires_at: int | None,
    now: int,
    rate_bucket_id: int | None = None,
    mcp_servers: tuple[str, ...] | None = None,
) -> ApiKeyRecord:
    """Insert a key and return its record from the same statement (RETURNING): one round
    trip, no re-read. ``workspace_tier`` is the caller's, as it read the workspace."""
    row = await db.fetch_one(
        "INSERT INTO api_keys (user_id, workspace_id, name, prefix, key_hash, scopes, "  # noqa: S608
        "rate_limit_tier, expires_at, created_at, updated_at, rate_bucket_id, mcp_servers) "
        f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {RETURNED}",
        (
            user_id,
            workspace_id,
            name,
            prefix,
            key_hash,
            orjson.dumps(scopes).decode(),
            rate_limit_tier,
            expires_at,
            now,
            now,
            rate_bucket_id,
            None if mcp_servers is None else orjson.dumps(sorted(mcp_servers)).decode(),
        ),
    )
    assert row is not None
    return ApiKeyRecord(**_fields(row), workspace_tier=workspace_tier)


async def get_live_by_hash(db: Executor, key_hash: str) -> LiveKey | None:
    """The key behind a hash, with its workspace's tier, unless revoked."""
    row = await db.fetch_one(
        f"SELECT {COLUMNS}, k.key_hash, w.tier AS workspace_tier FROM api_keys k "  # noqa: S608
        "JOIN workspaces w ON w.id = k.workspace_id WHERE k.key_hash = ? AND k.revoked_at IS NULL",
        (key_hash,),
    )
    return None if row is None else LiveKey(**_fields(row))


async def rehash(db: Executor, key_id: int, old_hash: str, new_hash: str) -> bool:
    """Move a key to its hash under the current server secret, unless another request did
    first (the row no longer has ``old_hash``). The key itself is unchanged, so nothing
    cached about it needs evicting."""
    changed = await db.execute(
        "UPDATE api_keys SET key_hash = ? WHERE id = ? AND key_hash = ?",
        (new_hash, key_id, old_hash),
    )
    return changed == 1


async def get(db: Executor, workspace_id: int, key_id: int) -> ApiKeyRecord | None:
    row = await db.fetch_one(
        f"SELECT {COLUMNS}, w.tier AS workspace_tier FROM api_keys k "  # noqa: S608
        "JOIN workspaces w ON w.id = k.workspace_id "
        "WHERE k.id = ? AND k.workspace_id = ? AND k.revoked_at IS NULL",
        (key_id, workspace_id),
    )
    return None if row is None else ApiKeyRecord(**_fields(row))


def _scope(workspace_id: int, query: ListQuery, now: int) -> tuple[str, list[Any]]:
    """WHERE for a workspace's live keys with the query's filters."""
    conditions, params = query.where("k")
    conditions[:0] = ["k.workspace_id = ?", "k.revoked_at IS NULL"]
    params[:0] = [workspace_id]
    if query.status == "active":
        conditions.append(
            "(k.expires_at IS NULL OR k.expires_at > ?) AND k.grace_period_ends_at IS NULL"
        )
        params.append(now)
    elif query.status == "expired":
        conditions.append("(k.expires_at <= ? OR k.grace_period_ends_at <= ?)")
        params += [now, now]
    elif query.status == "rotating":
        conditions.append("k.grace_period_ends_at > ?")
        params.append(now)
    if query.search:
        conditions.append("LOWER(k.name) LIKE ?")
        params.append(query.search_pattern)
    return "WHERE " + " AND ".join(f"({c})" for c in conditions), params


async def page_in_workspace(
    db: Executor, workspace_id: int, query: ListQuery, now: int
) -> list[ApiKeyRecord]:
    """One page, walked in a live-keys index for the id and name sorts."""
    where, params = _scope(workspace_id, query, now)
    rows = await db.fetch_all(
        f"SELECT {COLUMNS}, w.tier AS workspace_tier "  # noqa: S608
        f"FROM api_keys k JOIN workspaces w ON w.id = k.workspace_id {where} "
        f"ORDER BY {query.order_by(LIST_SPEC, 'k')} LIMIT ? OFFSET ?",
        [*params, query.per_page, query.offset],
    )
    return [ApiKeyRecord(**_fields(r)) for r in rows]


async def count_in_workspace(db: Executor, workspace_id: int, query: ListQuery, now: int) -> int:
    where, params = _scope(workspace_id, query, now)
    value = await fetch_value(db, f"SELECT COUNT(*) AS n FROM api_keys k {where}", params)  # noqa: S608
    return int(value or 0)


async def revoke(db: Executor, key_id: int, now: int) -> int:
    return await db.execute(
        "UPDATE api_keys SET revoked_at = ?, updated_at = ? WHERE id = ? AND revoked_at IS NULL",
        (now, now, key_id),
    )


async def mark_rotated(
    db: Executor, key_id: int, successor_id: int, grace_ends: int, now: int
) -> bool:
    """False when the key was rotated or revoked meanwhile (the caller rolls back)."""
    changed = await db.execute(
        "UPDATE api_keys SET rotated_to_id = ?, grace_period_ends_at = ?, updated_at = ? "
        "WHERE id = ? AND rotated_to_id IS NULL AND revoked_at IS NULL",
        (successor_id, grace_ends, now, key_id),
    )
    return changed == 1


async def record_last_used(db: Executor, uses: list[tuple[int, int]]) -> None:
    """Batched ``last_used_at`` writes from the key cache (never one write per request)."""
    for key_id, used_at in uses:
        await db.execute(
            "UPDATE api_keys SET last_used_at = ? WHERE id = ? "
            "AND (last_used_at IS NULL OR last_used_at < ?)",
            (used_at, key_id, used_at),
        )
