"""The database's identity: a random id stored by the migration that made the table."""

from __future__ import annotations

from .base import Database, fetch_value


async def get_id(db: Database) -> str | None:
    """The id, or None while the database is not migrated yet."""
    if db.dialect == "sqlite":
        exists = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'instance'"
    else:
        exists = "SELECT 1 WHERE to_regclass('instance') IS NOT NULL"
    if await fetch_value(db, exists) is None:
        return None
    found = await fetch_value(db, "SELECT id FROM instance")
    return None if found is None else str(found)
