"""The SQLite database and its -wal/-shm files are readable by their owner only."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from core_api.storage.sqlite import SQLiteDatabase


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """The common default (022) would give 0644 files unless the code asks for less."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def modes(path: Path) -> dict[str, int]:
    files = (path, Path(f"{path}-wal"), Path(f"{path}-shm"))
    return {f.name: stat.S_IMODE(f.stat().st_mode) for f in files}


async def test_a_new_database_is_owner_only(tmp_path: Path, permissive_umask: None) -> None:
    path = tmp_path / "data" / "core-api.db"
    db = SQLiteDatabase(path)
    try:
        await db.execute("CREATE TABLE t (x INTEGER)")
        await db.execute("INSERT INTO t VALUES (1)")  # WAL mode: -wal and -shm now exist
        assert set(modes(path).values()) == {0o600}, modes(path)
    finally:
        await db.close()


async def test_an_existing_world_readable_database_is_tightened(
    tmp_path: Path, permissive_umask: None
) -> None:
    path = tmp_path / "core-api.db"
    db = SQLiteDatabase(path)
    await db.execute("CREATE TABLE t (x INTEGER)")
    await db.execute("INSERT INTO t VALUES (1)")
    for name in modes(path):
        (tmp_path / name).chmod(0o644)  # as an older version left them
    reopened = SQLiteDatabase(path)
    try:
        assert set(modes(path).values()) == {0o600}, modes(path)
        assert await reopened.fetch_one("SELECT x FROM t") == {"x": 1}
    finally:
        await reopened.close()
        await db.close()
