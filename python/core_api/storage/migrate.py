"""Forward-only numbered migrations, one directory per dialect (``NNNN_name.sql``)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from importlib import resources

from .base import Database

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def available(dialect: str) -> list[Migration]:
    folder = resources.files("core_api.storage") / "migrations" / dialect
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text()))
    return sorted(found, key=lambda m: m.version)


async def migrate(db: Database) -> list[str]:
    """Apply pending migrations under a lock (safe when several nodes start at once).

    Returns the names applied.
    """
    applied_names = []
    async with db.migration_lock() as tx:
        # Created under the lock: concurrent CREATE TABLE IF NOT EXISTS races on PostgreSQL.
        await tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version BIGINT NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
        )
        rows = await tx.fetch_all("SELECT version FROM schema_migrations")
        done = {int(r["version"]) for r in rows}
        for migration in available(db.dialect):
            if migration.version in done:
                continue
            for statement in _statements(migration.sql):
                await tx.execute(statement)
            await tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, int(time.time() * 1000)),
            )
            applied_names.append(migration.name)
    return applied_names


def _statements(script: str) -> list[str]:
    """Split on semicolons that end a line; migrations keep one statement per such line."""
    lines = [ln for ln in script.splitlines() if not ln.strip().startswith("--")]
    parts = "\n".join(lines).split(";\n")
    return [p.strip().rstrip(";") for p in parts if p.strip().rstrip(";").strip()]
