"""The ingest path's SQL: event batches, daily salts, dropped-bot counters.

Events go in through the writer's own connection (``writer.py``): binary COPY on
PostgreSQL, ``executemany`` on SQLite. Salts go through the shared connector; the same
SQL runs on both dialects.
"""

from __future__ import annotations

from .. import _native
from ..storage import Executor

COLUMNS = tuple(_native.PIXEL_COLUMNS)
_COLUMN_LIST = ", ".join(COLUMNS)
TABLE_EVENTS = "pixel_events"  # PostgreSQL: one binary COPY of COLUMNS per batch
# The statement that COPY is (the writer has asyncpg's copy_to_table build it from
# TABLE_EVENTS and COLUMNS); tests decode encoded batches through it.
COPY_EVENTS = f"COPY {TABLE_EVENTS} ({_COLUMN_LIST}) FROM STDIN (FORMAT BINARY)"
_PLACEHOLDERS = ", ".join("?" * len(COLUMNS))
# Built from constants only (the extension's column list).
INSERT_EVENT = f"INSERT INTO pixel_events ({_COLUMN_LIST}) VALUES ({_PLACEHOLDERS})"  # noqa: S608
ADD_BOTS = (
    "INSERT INTO pixel_bot_counts (site_id, day, count) VALUES (?, ?, ?) "
    "ON CONFLICT (site_id, day) DO UPDATE SET count = pixel_bot_counts.count + excluded.count"
)


async def insert_salt_if_missing(db: Executor, day: int, salt_hex: str, now_ms: int) -> None:
    """Several processes race to make a day's salt: the first insert wins, all read it."""
    await db.execute(
        "INSERT INTO pixel_salts (day, salt, created_at) VALUES (?, ?, ?) "
        "ON CONFLICT (day) DO NOTHING",
        (day, salt_hex, now_ms),
    )


async def delete_salts_before(db: Executor, day: int) -> int:
    return await db.execute("DELETE FROM pixel_salts WHERE day < ?", (day,))


async def salts_from(db: Executor, day: int) -> dict[int, str]:
    rows = await db.fetch_all("SELECT day, salt FROM pixel_salts WHERE day >= ?", (day,))
    return {int(r["day"]): str(r["salt"]) for r in rows}


async def bot_count(db: Executor, site_id: int, day: int) -> int:
    row = await db.fetch_one(
        "SELECT count FROM pixel_bot_counts WHERE site_id = ? AND day = ?", (site_id, day)
    )
    return 0 if row is None else int(row["count"])
