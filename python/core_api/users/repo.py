"""Users: created by ``core-api bootstrap``; members of workspaces, owners of API keys."""

from __future__ import annotations

from ..storage.base import Executor, Row


async def create(db: Executor, name: str, email: str | None, now: int) -> Row:
    row = await db.fetch_one(
        "INSERT INTO users (name, email, created_at, updated_at) VALUES (?, ?, ?, ?) "
        "RETURNING id, name, email, created_at, updated_at",
        (name, email, now, now),
    )
    assert row is not None
    return row


async def get_by_email(db: Executor, email: str) -> Row | None:
    return await db.fetch_one(
        "SELECT id, name, email, created_at, updated_at FROM users WHERE email = ?", (email,)
    )


async def get_many(db: Executor, ids: list[int]) -> dict[int, Row]:
    if not ids:
        return {}
    marks = ", ".join("?" for _ in ids)
    rows = await db.fetch_all(
        f"SELECT id, name, email, created_at FROM users WHERE id IN ({marks})",  # noqa: S608
        ids,
    )
    return {int(r["id"]): r for r in rows}
