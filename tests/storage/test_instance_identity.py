"""The shared-memory state (rate-limit buckets, invalidation counter) belongs to a database,
not to a spelling of its URL: named after the id the first migration stores in it.

These tests use the default shared-memory location (no CORE_API_SHM_PATH) and remove the
files they made there afterwards.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import make_settings, open_app, serving
from core_api.api_keys.service import bootstrap
from core_api.clock import ManualClock
from core_api.config import Settings, sqlite_path
from core_api.local_files import shared_memory_path
from core_api.runtime import Runtime
from core_api.storage import DatabaseUnavailable, open_database
from core_api.storage.migrate import migrate
from support import Launcher, Server, clean_env, fresh_database, printed_key

BUDGET = 3  # requests per minute of the only tier, no burst: a clock held still never refills
PLANS = f'default_tier = "free"\n[tiers.free]\nrequests_per_minute = {BUDGET}\nburst = 0.0\n'


@pytest.fixture
def plans_file(tmp_path: Path) -> str:
    path = tmp_path / "plans.toml"
    path.write_text(PLANS)
    return str(path)


@pytest.fixture
def shm_files() -> Iterator[list[str]]:
    """Shared-memory files a test made in the default location; removed afterwards."""
    made: list[str] = []
    yield made
    for path in made:
        for name in (path, path + ".lock"):
            Path(name).unlink(missing_ok=True)


def default_settings(url: str, tmp_path: Path, plans_file: str) -> Settings:
    return make_settings(url, tmp_path, shm_path="", plans_file=plans_file)


def sqlite_instance_id(url: str) -> str:
    conn = sqlite3.connect(sqlite_path(url))
    try:
        return str(conn.execute("SELECT id FROM instance").fetchone()[0])
    finally:
        conn.close()


def default_shm_of(instance_id: str) -> str:
    return shared_memory_path(Settings(shm_path=""), instance_id)


async def free_key(runtime: Runtime, clock: ManualClock) -> dict[str, Any]:
    return await bootstrap(
        runtime.db, runtime.keys, runtime.plans, clock, name="Acme", tier="free", email=None
    )


def remove_sqlite(url: str) -> None:
    path = sqlite_path(url)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def test_two_urls_spelling_one_sqlite_file_share_one_budget(
    tmp_path: Path,
    plans_file: str,
    clock: ManualClock,
    shm_files: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = default_settings("sqlite:///data/one.db", tmp_path, plans_file)
    absolute = default_settings(f"sqlite:///{tmp_path}/data/one.db", tmp_path, plans_file)
    assert absolute.database_url.startswith("sqlite:////")
    async with serving(relative, clock) as (rt_a, api_a):
        shm_files.append(rt_a.shm_path)
        made = await free_key(rt_a, clock)
        path = f"/api/v1/workspaces/{made['workspace']['id']}"
        key = made["api_key"]["key"]
        async with serving(absolute, clock, key) as (rt_b, api_b):
            assert rt_b.shm_path == rt_a.shm_path
            for _ in range(BUDGET - 1):
                assert (await api_a.get(path, key=key)).status == 200
            assert (await api_b.get(path)).status == 200  # the last token, spent via B
            assert (await api_a.get(path, key=key)).status == 429
            assert (await api_b.get(path)).status == 429
    instance_id = sqlite_instance_id(relative.database_url)
    assert rt_a.shm_path == default_shm_of(instance_id)


async def test_a_recreated_database_starts_with_full_buckets(
    tmp_path: Path, plans_file: str, clock: ManualClock, shm_files: list[str]
) -> None:
    settings = default_settings(f"sqlite:///{tmp_path}/db/core.db", tmp_path, plans_file)
    async with serving(settings, clock) as (first_rt, api):
        shm_files.append(first_rt.shm_path)
        made = await free_key(first_rt, clock)
        path = f"/api/v1/workspaces/{made['workspace']['id']}"
        statuses = [(await api.get(path, key=made["api_key"]["key"])).status for _ in range(4)]
        assert statuses == [200] * BUDGET + [429]
    remove_sqlite(settings.database_url)
    async with serving(settings, clock) as (second_rt, api):
        shm_files.append(second_rt.shm_path)
        again = await free_key(second_rt, clock)
        assert again["api_key"]["id"] == made["api_key"]["id"]  # the same bucket id as before
        result = await api.get(path, key=again["api_key"]["key"])
        assert result.status == 200
        assert result.header("X-RateLimit-Remaining") == str(BUDGET - 1)
        assert second_rt.shm_path != first_rt.shm_path


@pytest.mark.postgres
async def test_postgres_databases_never_share_and_one_database_shares_across_spellings(
    tmp_path: Path, plans_file: str, clock: ManualClock, shm_files: list[str]
) -> None:
    paths = []
    for tag in ("ida", "idb"):
        with fresh_database(tag) as url:
            settings = default_settings(url, tmp_path, plans_file)
            runtime, _ = await open_app(settings, clock)
            other = url.replace("127.0.0.1", "localhost")
            assert other != url
            spelled, _ = await open_app(default_settings(other, tmp_path, plans_file), clock)
            try:
                paths.append(runtime.shm_path)
                shm_files.append(paths[-1])
                assert spelled.shm_path == runtime.shm_path
            finally:
                await spelled.close()
                await runtime.close()
    assert paths[0] != paths[1]


@pytest.mark.postgres
async def test_concurrent_first_migrations_agree_on_one_id(tmp_path: Path) -> None:
    with fresh_database("idrace") as pg:
        for url in (f"sqlite:///{tmp_path}/race.db", pg):
            dbs = [await open_database(url) for _ in range(4)]
            try:
                await asyncio.wait_for(asyncio.gather(*(migrate(db) for db in dbs)), timeout=60)
                rows = await dbs[0].fetch_all("SELECT id FROM instance")
            finally:
                for db in dbs:
                    await db.close()
            assert len(rows) == 1, url
            assert len(str(rows[0]["id"])) == 32


async def test_an_unmigrated_database_is_refused_with_a_clear_error(
    tmp_path: Path, plans_file: str, clock: ManualClock
) -> None:
    settings = default_settings(f"sqlite:///{tmp_path}/empty.db", tmp_path, plans_file)
    runtime = Runtime.build(settings, clock=clock)
    try:
        with pytest.raises(DatabaseUnavailable, match="core-api migrate"):
            await runtime.start()
    finally:
        await runtime.close()


async def test_an_explicit_shm_path_wins(
    tmp_path: Path, plans_file: str, clock: ManualClock
) -> None:
    explicit = tmp_path / "mine" / "state"
    settings = default_settings(f"sqlite:///{tmp_path}/x.db", tmp_path, plans_file)
    async with serving(replace(settings, shm_path=str(explicit)), clock) as (runtime, _):
        assert runtime.shm_path == str(explicit)
        assert explicit.is_file()


# --- two real servers, default configuration, two working directories --------------------


def test_two_servers_from_two_directories_have_independent_budgets(
    tmp_path: Path, plans_file: str, shm_files: list[str]
) -> None:
    """As a new user would: `core-api serve --first-run-bootstrap` with no database setting,
    from two directories; both first keys have id 1, so equal URLs would mean one bucket."""
    homes = [tmp_path / "a", tmp_path / "b"]
    launchers = [Launcher(home) for home in homes]

    def start(launcher: Launcher) -> Server:
        launcher.tmp_path.mkdir()
        env = clean_env(launcher.tmp_path, plans_file=plans_file, log_level="WARNING")
        del env["CORE_API_SHM_PATH"]  # the default location, named after the database
        return launcher.start(env, 1, "--first-run-bootstrap")

    try:
        with ThreadPoolExecutor(2) as pool:  # both start at once: half the wait
            servers = list(pool.map(start, launchers))
        databases = [f"sqlite:///{home}/data/core-api.db" for home in homes]  # the default
        shm_files.extend(default_shm_of(sqlite_instance_id(url)) for url in databases)
        assert shm_files[0] != shm_files[1]
        firsts = [sqlite_first_key_and_workspace(url) for url in databases]
        assert firsts[0] == firsts[1]  # the same key id and workspace id on both
        path = f"/api/v1/workspaces/{firsts[0][1]}"

        def get(server: Server) -> httpx.Response:
            auth = {"Authorization": f"Bearer {printed_key(server)}"}
            return httpx.get(server.base + path, headers=auth, timeout=10)

        a, b = servers
        assert [get(a).status_code for _ in range(BUDGET + 1)] == [200] * BUDGET + [429]
        reply = get(b)
        assert reply.status_code == 200
        assert reply.headers["X-RateLimit-Remaining"] == str(BUDGET - 1)
    finally:
        for launcher in launchers:
            launcher.stop_all()


def sqlite_first_key_and_workspace(url: str) -> tuple[int, int]:
    conn = sqlite3.connect(sqlite_path(url))
    try:
        key, workspace = conn.execute("SELECT id, workspace_id FROM api_keys").fetchone()
        return int(key), int(workspace)
    finally:
        conn.close()
