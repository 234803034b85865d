"""Users: created by ``core-api bootstrap``; members of workspaces, owners of API keys."""

from __future__ import annotations

from dataclasses import dataclass

from ..storage.base import Executor

COLUMNS = "id, name, email, created_at, updated_at"


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    email: str | None
    created_at: int
    updated_at: int


async def create(db: Executor, name: str, email: str | None, now: int) -> User:
    row = await db.fetch_one(
        "INSERT INTO users (name, email, created_at, updated_at) VALUES (?, ?, ?, ?) "
        "RETURNING id, name, email, created_at, updated_at",
        (name, email, now, now),
    )
    assert row is not None
    return User(**row)


async def get_by_email(db: Executor, email: str) -> User | None:
    row = await db.fetch_one(f"SELECT {COLUMNS} FROM users WHERE email = ?", (email,))  # noqa: S608
    return None if row is None else User(**row)


async def get_many(db: Executor, ids: list[int]) -> dict[int, User]:
    if not ids:
        return {}
    marks = ", ".join("?" for _ in ids)
    rows = await db.fetch_all(f"SELECT {COLUMNS} FROM users WHERE id IN ({marks})", ids)  # noqa: S608
    return {user.id: user for user in (User(**r) for r in rows)}


async def any_user(db: Executor) -> bool:
    """Whether any user exists yet (``bootstrap --only-if-empty``)."""
    return await db.fetch_one("SELECT id FROM users LIMIT 1") is not None
