"""Storage: one connector per dialect, one repository module per resource."""

from __future__ import annotations

from ..config import sqlite_path
from .base import Database, DatabaseUnavailable, Executor, IntegrityError, Row, fetch_value
from .postgres import PostgresDatabase, Timeouts
from .sqlite import SQLiteDatabase

__all__ = [
    "Database",
    "DatabaseUnavailable",
    "Executor",
    "IntegrityError",
    "Row",
    "Timeouts",
    "create_database",
    "fetch_value",
    "open_database",
]


def create_database(url: str, pool_size: int = 10, timeouts: Timeouts | None = None) -> Database:
    """A connector, not yet connected for PostgreSQL (``await db.open()``)."""
    if url.startswith("sqlite:"):
        return SQLiteDatabase(sqlite_path(url))
    return PostgresDatabase(url, pool_size, timeouts)


async def open_database(
    url: str, pool_size: int = 10, timeouts: Timeouts | None = None
) -> Database:
    db = create_database(url, pool_size, timeouts)
    await db.open()
    return db
