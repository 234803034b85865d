"""The MCP gateway's SQL: the audit log and a key's allowed servers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from ..storage.base import Executor

_COLUMNS = (
    "workspace_id, key_id, user_id, server, tool, kind, transport, outcome, duration_ms, "
    "error, arguments, request_id, created_at"
)
_ROWS_PER_INSERT = 100  # 13 parameters each: well under both backends' limits


@dataclass(frozen=True, slots=True)
class AuditRow:
    workspace_id: int
    key_id: int | None
    user_id: int | None
    server: str
    tool: str
    kind: str  # tool | resource
    transport: str  # rest | mcp
    outcome: str  # ok | error | timeout | unavailable | invalid | refused | denied | rate_limited
    duration_ms: float
    error: str | None
    arguments: str | None
    request_id: str | None
    created_at: int


@dataclass(frozen=True, slots=True)
class StoredAudit:
    id: int
    row: AuditRow


async def insert_audit(tx: Executor, rows: Sequence[AuditRow]) -> None:
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        marks = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
        values: list[object] = []
        for r in chunk:
            values += [
                r.workspace_id, r.key_id, r.user_id, r.server, r.tool, r.kind, r.transport,
                r.outcome, r.duration_ms, r.error, r.arguments, r.request_id, r.created_at,
            ]  # fmt: skip
        sql = f"INSERT INTO mcp_audit ({_COLUMNS}) VALUES {marks}"  # noqa: S608 - constant SQL
        await tx.execute(sql, values)


async def page_audit(
    db: Executor,
    workspace_id: int,
    *,
    server: str | None,
    tool: str | None,
    outcome: str | None,
    limit: int,
    offset: int,
) -> tuple[list[StoredAudit], int]:
    where, params = ["workspace_id = ?"], [workspace_id]
    for column, value in (("server", server), ("tool", tool), ("outcome", outcome)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)  # type: ignore[arg-type]
    clause = " AND ".join(where)
    rows = await db.fetch_all(
        f"SELECT id, {_COLUMNS} FROM mcp_audit WHERE {clause} "  # noqa: S608 - constant SQL
        "ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
        [*params, limit, offset],
    )
    count = f"SELECT COUNT(*) AS n FROM mcp_audit WHERE {clause}"  # noqa: S608 - constant SQL
    total = await db.fetch_one(count, params)
    found = [
        StoredAudit(
            int(r["id"]),
            AuditRow(**{k: r[k] for k in AuditRow.__dataclass_fields__}),
        )
        for r in rows
    ]
    return found, int(total["n"]) if total else 0


async def purge_audit(db: Executor, before: int, batch: int) -> int:
    return await db.execute(
        "DELETE FROM mcp_audit WHERE id IN "
        "(SELECT id FROM mcp_audit WHERE created_at < ? ORDER BY id LIMIT ?)",
        (before, batch),
    )


async def key_servers(db: Executor, key_id: int) -> frozenset[str] | None:
    """The server ids the key may use, or None for no restriction."""
    row = await db.fetch_one("SELECT mcp_servers FROM api_keys WHERE id = ?", (key_id,))
    if row is None or row["mcp_servers"] is None:
        return None
    return frozenset(str(s) for s in orjson.loads(row["mcp_servers"]))


async def set_key_servers(db: Executor, key_id: int, servers: Sequence[str] | None) -> int:
    text = None if servers is None else orjson.dumps(sorted(set(servers))).decode()
    return await db.execute("UPDATE api_keys SET mcp_servers = ? WHERE id = ?", (text, key_id))
