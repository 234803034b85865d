"""Workspaces and their members. Every read is scoped to a member user: tenant isolation
is enforced here, in SQL, not by callers remembering to check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..storage.base import Executor, fetch_value
from ..web.listing import ListQuery, ListSpec

COLUMNS = "w.id, w.name, w.slug, w.tier, w.settings, w.owner_id, w.created_at, w.updated_at"

LIST_SPEC = ListSpec(
    sortable={
        "id": "id",
        "name": "name",
        "slug": "slug",
        "tier": "tier",
        "created_at": "created_at",
        "updated_at": "updated_at",
    },
    default_sort="id",
    fields=frozenset(
        {"id", "name", "slug", "tier", "settings", "role", "created_at", "updated_at"}
    ),
    includes=frozenset({"owner", "members"}),
    statuses=frozenset(),
    searchable=True,
)


@dataclass(frozen=True, slots=True)
class Workspace:
    """A workspace as one member sees it: ``role`` is that member's role in it.
    ``settings`` is the stored JSON object text, decoded only when presented (records are
    shared through the access cache, so they hold nothing mutable)."""

    id: int
    name: str
    slug: str
    tier: str
    settings: str
    owner_id: int
    created_at: int
    updated_at: int
    role: str


@dataclass(frozen=True, slots=True)
class Member:
    workspace_id: int
    user_id: int
    role: str
    created_at: int
    name: str
    email: str | None


_INSERT = (
    "INSERT INTO workspaces (name, slug, tier, settings, owner_id, created_at, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) "
    "RETURNING id, name, slug, tier, settings, owner_id, created_at, updated_at"
)


async def create(
    db: Executor, *, name: str, slug: str, tier: str, settings: str, owner_id: int, now: int
) -> Workspace:
    """The workspace and its owner's membership, in the caller's transaction; raises
    IntegrityError when the slug is taken. RETURNING gives the whole row: no re-read."""
    row = await db.fetch_one(_INSERT, (name, slug, tier, settings, owner_id, now, now))
    assert row is not None
    await add_member(db, row["id"], owner_id, "owner", now)
    return Workspace(**row, role="owner")


async def create_owned(
    tx: Executor,
    dialect: str,
    *,
    name: str,
    slug: str,
    tier: str,
    settings: str,
    owner_id: int,
    now: int,
) -> Workspace:
    """As :func:`create`, in the caller's transaction, in as few round trips as the
    dialect allows: PostgreSQL inserts both rows in one statement (a data-modifying CTE);
    SQLite, which has no INSERT in a CTE, in two."""
    if dialect != "postgresql":
        return await create(
            tx, name=name, slug=slug, tier=tier, settings=settings, owner_id=owner_id, now=now
        )
    row = await tx.fetch_one(
        f"WITH w AS ({_INSERT}), m AS ("  # noqa: S608 - constant SQL
        "INSERT INTO workspace_members (workspace_id, user_id, role, created_at) "
        "SELECT id, owner_id, 'owner', created_at FROM w) "
        "SELECT id, name, slug, tier, settings, owner_id, created_at, updated_at FROM w",
        (name, slug, tier, settings, owner_id, now, now),
    )
    assert row is not None
    return Workspace(**row, role="owner")


async def add_member(db: Executor, workspace_id: int, user_id: int, role: str, now: int) -> None:
    await db.execute(
        "INSERT INTO workspace_members (workspace_id, user_id, role, created_at) "
        "VALUES (?, ?, ?, ?)",
        (workspace_id, user_id, role, now),
    )


async def slug_exists(db: Executor, slug: str) -> bool:
    return await db.fetch_one("SELECT 1 AS one FROM workspaces WHERE slug = ?", (slug,)) is not None


async def slugs_like(db: Executor, base: str) -> set[str]:
    rows = await db.fetch_all(
        "SELECT slug FROM workspaces WHERE slug = ? OR slug LIKE ?", (base, f"{base}-%")
    )
    return {r["slug"] for r in rows}


async def get_for_user(db: Executor, user_id: int, workspace_id: int) -> Workspace | None:
    row = await db.fetch_one(
        f"SELECT {COLUMNS}, m.role FROM workspaces w "  # noqa: S608
        "JOIN workspace_members m ON m.workspace_id = w.id AND m.user_id = ? WHERE w.id = ?",
        (user_id, workspace_id),
    )
    return None if row is None else Workspace(**row)


def _scope(user_id: int, query: ListQuery) -> tuple[str, list[Any]]:
    """FROM ... WHERE for a user's workspaces with the query's filters."""
    conditions, params = query.where("w")
    conditions.insert(0, "m.user_id = ?")
    params.insert(0, user_id)
    if query.search:
        conditions.append("(LOWER(w.name) LIKE ? OR LOWER(w.slug) LIKE ?)")
        pattern = query.search_pattern
        params += [pattern, pattern]
    where = " AND ".join(f"({c})" for c in conditions)
    return (
        f"FROM workspace_members m JOIN workspaces w ON w.id = m.workspace_id WHERE {where}",
        params,
    )


async def page_for_user(db: Executor, user_id: int, query: ListQuery) -> list[Workspace]:
    """One page, walked in the (user_id, workspace_id) index when sorted by id: its cost
    is the page's, not the user's number of workspaces."""
    base, params = _scope(user_id, query)
    order = query.order_by(LIST_SPEC, "w", id_column="m.workspace_id")
    rows = await db.fetch_all(
        f"SELECT {COLUMNS}, m.role {base} ORDER BY {order} LIMIT ? OFFSET ?",
        [*params, query.per_page, query.offset],
    )
    return [Workspace(**r) for r in rows]


async def count_for_user(db: Executor, user_id: int, query: ListQuery) -> int:
    if not query.filtered:  # kept by triggers on workspace_members (migration 0012)
        value = await fetch_value(
            db, "SELECT n FROM workspace_member_counts WHERE user_id = ?", (user_id,)
        )
    else:
        base, params = _scope(user_id, query)
        value = await fetch_value(db, f"SELECT COUNT(*) AS n {base}", params)
    return int(value or 0)


async def update(db: Executor, workspace_id: int, changes: dict[str, Any], now: int) -> None:
    # Column names come from the service's fixed allow-list, never from the request.
    assignments = ", ".join(f"{column} = ?" for column in changes)
    await db.execute(
        f"UPDATE workspaces SET {assignments}, updated_at = ? WHERE id = ?",  # noqa: S608
        [*changes.values(), now, workspace_id],
    )


async def delete(db: Executor, workspace_id: int) -> int:
    return await db.execute("DELETE FROM workspaces WHERE id = ?", (workspace_id,))


async def members_of(db: Executor, workspace_ids: list[int]) -> dict[int, list[Member]]:
    if not workspace_ids:
        return {}
    marks = ", ".join("?" for _ in workspace_ids)
    rows = await db.fetch_all(
        "SELECT m.workspace_id, m.user_id, m.role, m.created_at, u.name, u.email "  # noqa: S608
        "FROM workspace_members m JOIN users u ON u.id = m.user_id "
        f"WHERE m.workspace_id IN ({marks}) "
        "ORDER BY m.workspace_id, m.user_id",
        workspace_ids,
    )
    grouped: dict[int, list[Member]] = {}
    for row in rows:
        member = Member(**row)
        grouped.setdefault(member.workspace_id, []).append(member)
    return grouped
