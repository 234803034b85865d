"""Rotating CORE_API_SECRET_KEY (F4 in docs/security.md; procedure in docs/production.md):
with CORE_API_SECRET_KEY_PREVIOUS set, API keys hashed under the previous secret still
authenticate and their rows move to the current hash on first use; webhook secrets sealed
under it still open (deliveries keep their signatures) until `core-api secrets reseal`
seals them under the current one, after which the previous secret can go."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import falcon.testing
import httpx
import pytest
from cryptography.exceptions import InvalidTag

from conftest import SECRET, Api, make_settings, open_app
from core_api import _native, logs
from core_api.api_keys import repo as keys_repo
from core_api.clock import ManualClock
from core_api.config import ConfigError, Settings
from core_api.gateway.auth import CacheMiss
from core_api.runtime import Runtime
from core_api.storage import Database
from core_api.webhooks import repo as hooks_repo
from core_api.webhooks import signing
from core_api.webhooks.reseal import reseal_all
from core_api.webhooks.secrets import SecretBox
from core_api.webhooks.service import live_keys
from core_api.webhooks.verify import verify
from support import HookReceiver, hook_receiver

OLD = SECRET  # what conftest's runtimes run with
NEW = b"the-next-server-secret-key-also-long-enough-4242"
OTHER = b"a-third-secret-key-nobody-configured-here-0000000"
RECEIVER = "http://127.0.0.1:9/hook"  # never called: these tests only store endpoints


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # Loopback webhook URLs are accepted (no delivery is attempted in-process).
    return make_settings(
        database_url, tmp_path, webhook_allow_private_networks=True, webhook_require_https=False
    )


def _switched(settings: Settings, tmp_path: Path, name: str, previous: bytes | None) -> Settings:
    """The same database under the new secret (its own shared state, like a restart)."""
    return replace(
        settings,
        secret_key=NEW,
        secret_key_previous=previous,
        shm_path=str(tmp_path / f"shm-{name}"),
    )


async def _stored_hash(db: Database, key_id: int) -> str:
    row = await db.fetch_one("SELECT key_hash FROM api_keys WHERE id = ?", (key_id,))
    assert row is not None
    return str(row["key_hash"])


async def _status(app: Any, key: str, path: str) -> int:
    async with falcon.testing.ASGIConductor(app) as conductor:
        return (await Api(conductor, key).get(path)).status


@pytest.fixture
async def restarted(settings: Settings, clock: ManualClock) -> AsyncIterator[Any]:
    """Opens more runtimes on the test's database; closes them all afterwards."""
    opened: list[Runtime] = []

    async def start(new_settings: Settings) -> tuple[Runtime, Any]:
        runtime, app = await open_app(new_settings, clock)
        opened.append(runtime)
        return runtime, app

    yield start
    for runtime in opened:
        await runtime.close()


# -- API keys --------------------------------------------------------------------------


async def test_a_key_hashed_under_the_previous_secret_works_and_moves(
    api: Api,
    runtime: Runtime,
    boot: dict[str, Any],
    settings: Settings,
    tmp_path: Path,
    restarted: Any,
) -> None:
    key, key_id = boot["api_key"]["key"], boot["api_key"]["id"]
    path = f"/api/v1/workspaces/{boot['workspace']['id']}"
    unused = await api.post("/api/v1/api-keys", json={"name": "unused", "scopes": ["*"]})
    assert unused.status == 201, unused.json
    assert await _stored_hash(runtime.db, key_id) == _native.hash_key(OLD, key).hex()

    # The new secret alone: every key made under the old one is refused.
    _, alone = await restarted(_switched(settings, tmp_path, "alone", None))
    assert await _status(alone, key, path) == 401

    # With the previous secret: the key works, and its row now holds the current hash.
    switched, app = await restarted(_switched(settings, tmp_path, "both", OLD))
    assert await _status(app, key, path) == 200
    assert await _stored_hash(runtime.db, key_id) == _native.hash_key(NEW, key).hex()
    assert switched.auth.migrated == 1
    assert await _status(app, key, path) == 200  # a cache hit now
    assert switched.auth.migrated == 1

    # Once moved, it needs the previous secret no more; a key never used meanwhile does.
    _, after = await restarted(_switched(settings, tmp_path, "after", None))
    assert await _status(after, key, path) == 200
    assert await _status(after, unused.json["data"]["key"], path) == 401


async def test_a_rolling_restart_in_two_passes_keeps_keys_and_secrets_working(
    api: Api, boot: dict[str, Any], settings: Settings, tmp_path: Path, restarted: Any
) -> None:
    """docs/production.md: first pass old+new as previous, second pass new+old. Nodes of
    either pass serve a key whichever hash its row has now, and open either seal."""
    key, key_id = boot["api_key"]["key"], boot["api_key"]["id"]
    path = f"/api/v1/workspaces/{boot['workspace']['id']}"
    first_pass = replace(settings, secret_key_previous=NEW, shm_path=str(tmp_path / "shm-first"))
    old_node, old_app = await restarted(first_pass)
    new_node, new_app = await restarted(_switched(settings, tmp_path, "second", OLD))
    assert await _status(new_app, key, path) == 200  # moved to the new hash
    assert await _stored_hash(new_node.db, key_id) == _native.hash_key(NEW, key).hex()
    assert await _status(old_app, key, path) == 200  # moved back on the other node's miss
    assert await _stored_hash(old_node.db, key_id) == _native.hash_key(OLD, key).hex()
    new_node.auth.cache.clear()
    assert await _status(new_app, key, path) == 200
    assert await _stored_hash(new_node.db, key_id) == _native.hash_key(NEW, key).hex()
    # A secret sealed on a node of the second pass opens on one of the first.
    sealed = new_node.webhooks.box.seal(3, "whsec_new")
    assert old_node.webhooks.box.open(3, sealed) == "whsec_new"


async def test_concurrent_first_uses_move_the_row_once(
    runtime: Runtime, boot: dict[str, Any], settings: Settings, tmp_path: Path, restarted: Any
) -> None:
    key, key_id = boot["api_key"]["key"], boot["api_key"]["id"]
    switched, _ = await restarted(_switched(settings, tmp_path, "both", OLD))
    generation = switched.invalidator.epoch
    misses = [switched.auth.cached(key, generation) for _ in range(4)]
    assert all(isinstance(miss, CacheMiss) for miss in misses)
    found = await asyncio.gather(*(switched.auth.load(m, generation) for m in misses))  # type: ignore[arg-type]
    assert {p.key_id for p in found if p is not None} == {key_id}
    assert switched.auth.migrated == 1  # one conditional update won; the others re-read
    assert await _stored_hash(switched.db, key_id) == _native.hash_key(NEW, key).hex()
    assert await keys_repo.get_live_by_hash(switched.db, _native.hash_key(OLD, key).hex()) is None


async def test_unknown_keys_are_refused_and_still_counted_as_failures(
    boot: dict[str, Any], settings: Settings, tmp_path: Path, restarted: Any
) -> None:
    strict = replace(_switched(settings, tmp_path, "strict", OLD), auth_failure_limit=2)
    runtime, app = await restarted(strict)
    path = f"/api/v1/workspaces/{boot['workspace']['id']}"
    statuses = [await _status(app, _native.generate_key(), path) for _ in range(3)]
    assert statuses == [401, 401, 429]
    assert runtime.auth.migrated == 0


async def test_a_revoked_key_stays_refused_under_the_previous_secret(
    api: Api, boot: dict[str, Any], settings: Settings, tmp_path: Path, restarted: Any
) -> None:
    made = await api.post("/api/v1/api-keys", json={"name": "gone", "scopes": ["*"]})
    assert (await api.delete(f"/api/v1/api-keys/{made.json['data']['id']}")).status == 204
    _, app = await restarted(_switched(settings, tmp_path, "both", OLD))
    path = f"/api/v1/workspaces/{boot['workspace']['id']}"
    assert await _status(app, made.json["data"]["key"], path) == 401


# -- idempotency records ---------------------------------------------------------------


async def test_idempotent_responses_recorded_under_the_previous_secret_replay(
    api: Api, boot: dict[str, Any], settings: Settings, tmp_path: Path, restarted: Any
) -> None:
    key = boot["api_key"]["key"]
    body = {"url": RECEIVER, "events": ["a.*"]}
    once = {"Idempotency-Key": "rotation-1"}
    first = await api.post("/api/v1/webhooks", json=body, headers=once)
    assert first.status == 201

    _, app = await restarted(_switched(settings, tmp_path, "both", OLD))
    async with falcon.testing.ASGIConductor(app) as conductor:
        client = Api(conductor, key)
        again = await client.post("/api/v1/webhooks", json=body, headers=once)
        assert again.status == 201
        assert again.header("Idempotent-Replayed") == "true"
        assert again.json == first.json
        other = await client.post(
            "/api/v1/webhooks", json={**body, "events": ["b.*"]}, headers=once
        )
        assert other.status == 422

    # Without the previous secret the record is not found: the request runs again.
    _, alone = await restarted(_switched(settings, tmp_path, "alone", None))
    async with falcon.testing.ASGIConductor(alone) as conductor:
        rerun = await Api(conductor, key).post("/api/v1/webhooks", json=body, headers=once)
        assert rerun.status == 201
        assert rerun.header("Idempotent-Replayed") is None
        assert rerun.json["data"]["id"] != first.json["data"]["id"]


# -- sealed webhook secrets ------------------------------------------------------------


def test_the_box_opens_what_the_previous_secret_sealed() -> None:
    sealed = SecretBox(OLD).seal(7, "whsec_plain")
    box = SecretBox(NEW, OLD)
    assert box.open(7, sealed) == "whsec_plain"
    assert box.open_checked(7, sealed) == ("whsec_plain", False)
    assert box.open_checked(7, box.seal(7, "whsec_new")) == ("whsec_new", True)
    with pytest.raises(InvalidTag):  # still bound to its workspace
        box.open(8, sealed)
    with pytest.raises(InvalidTag):  # the new secret alone cannot
        SecretBox(NEW).open(7, sealed)
    with pytest.raises(InvalidTag):  # nor another one
        SecretBox(OTHER, NEW).open(7, sealed)


async def test_reseal_moves_every_secret_and_is_idempotent(
    api: Api, runtime: Runtime, boot: dict[str, Any]
) -> None:
    first = await api.post("/api/v1/webhooks", json={"url": RECEIVER, "events": ["a.*"]})
    second = await api.post("/api/v1/webhooks", json={"url": RECEIVER, "events": ["b.*"]})
    assert first.status == second.status == 201
    rotated = await api.post(f"/api/v1/webhooks/{second.json['data']['id']}/secret/rotate")
    assert rotated.status == 200, rotated.json
    plain = {
        first.json["data"]["id"]: [first.json["data"]["secret"]],
        second.json["data"]["id"]: [rotated.json["data"]["secret"], second.json["data"]["secret"]],
    }
    workspace = boot["workspace"]["id"]
    lost = await hooks_repo.create_endpoint(
        runtime.db,
        workspace_id=workspace,
        url=RECEIVER,
        events=["c.*"],
        secret_sealed=SecretBox(OTHER).seal(workspace, "whsec_x"),  # sealed under neither
        now=1,
    )

    box = SecretBox(NEW, OLD)
    # During the transition deliveries sign with the endpoint's own secrets, as before.
    for endpoint_id, secrets in plain.items():
        endpoint = await hooks_repo.get_endpoint(runtime.db, workspace, endpoint_id)
        assert endpoint is not None
        keys = live_keys(
            box,
            workspace,
            endpoint.secret_sealed,
            endpoint.previous_secret_sealed,
            endpoint.previous_secret_expires_at,
            runtime.clock.now_ms(),
        )
        assert keys == [signing.decode_secret(s) for s in secrets]

    report = await reseal_all(runtime.db, box, batch_size=2)
    assert report.as_dict() == {
        "examined": 3,
        "resealed": 2,
        "already_current": 0,
        "unreadable": 1,
        "unreadable_endpoint_ids": [lost.id],
        "changed_meanwhile": 0,
    }
    again = await reseal_all(runtime.db, box, batch_size=2)
    assert (again.resealed, again.already_current, again.unreadable) == (0, 2, [lost.id])

    alone = SecretBox(NEW)  # the previous secret is no longer needed
    for endpoint_id, secrets in plain.items():
        endpoint = await hooks_repo.get_endpoint(runtime.db, workspace, endpoint_id)
        assert endpoint is not None
        opened = [alone.open(workspace, endpoint.secret_sealed)]
        if endpoint.previous_secret_sealed is not None:
            opened.append(alone.open(workspace, endpoint.previous_secret_sealed))
        assert opened == secrets


async def test_reseal_does_not_overwrite_a_rotation_made_meanwhile(
    api: Api, runtime: Runtime, boot: dict[str, Any]
) -> None:
    made = await api.post("/api/v1/webhooks", json={"url": RECEIVER, "events": ["a.*"]})
    endpoint_id = made.json["data"]["id"]
    seen = await hooks_repo.get_sealed_secrets(runtime.db, endpoint_id)
    assert seen is not None
    rotated = await api.post(f"/api/v1/webhooks/{endpoint_id}/secret/rotate")
    box = SecretBox(NEW, OLD)
    stale = box.seal(seen.workspace_id, made.json["data"]["secret"])
    assert not await hooks_repo.replace_sealed(runtime.db, seen, stale, None)
    now = await hooks_repo.get_sealed_secrets(runtime.db, endpoint_id)
    assert now is not None
    assert box.open(now.workspace_id, now.secret_sealed) == rotated.json["data"]["secret"]


# -- settings --------------------------------------------------------------------------


def test_the_previous_secret_setting() -> None:
    base = {"CORE_API_DATABASE_URL": "postgresql://db/x", "CORE_API_SECRET_KEY": OLD.decode()}
    assert Settings.from_env(base).secret_key_previous is None
    both = Settings.from_env({**base, "CORE_API_SECRET_KEY_PREVIOUS": NEW.decode()})
    assert both.secret_key_previous == NEW
    assert NEW.decode() not in repr(both)
    assert NEW.decode() in logs.secrets_of(both)  # redacted from log lines like the key
    with pytest.raises(ConfigError, match="CORE_API_SECRET_KEY_PREVIOUS: must be at least 32"):
        Settings.from_env({**base, "CORE_API_SECRET_KEY_PREVIOUS": "short"})
    with pytest.raises(ConfigError, match="CORE_API_SECRET_KEY_PREVIOUS: must differ"):
        Settings.from_env({**base, "CORE_API_SECRET_KEY_PREVIOUS": OLD.decode()})


# -- a real server, restarted under a new secret -----------------------------------------


@pytest.fixture
def hooks() -> Iterator[HookReceiver]:
    with hook_receiver() as receiver:
        yield receiver


def _delivered(hooks: HookReceiver, count: int) -> list[tuple[dict[str, str], bytes]]:
    import time

    deadline = time.monotonic() + 30
    while len(hooks.hits) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(hooks.hits) >= count, hooks.hits
    return hooks.hits[:count]


def _reseal(env: dict[str, str], tmp_path: Path) -> dict[str, Any]:
    from support import core_api_command

    done = subprocess.run(
        [*core_api_command(), "secrets", "reseal", "--batch-size", "1"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return dict(json.loads(done.stdout)["webhook_endpoints"])


def test_a_server_restarted_under_a_new_secret(
    tmp_path: Path, hooks: HookReceiver, launcher: Any
) -> None:
    from support import clean_env, printed_key

    db_file = tmp_path / "core-api.db"
    base = {
        "database_url": f"sqlite:///{db_file}",
        "webhook_allow_private_networks": "true",
        "webhook_require_https": "false",
        "log_level": "WARNING",
    }
    env_old = clean_env(tmp_path, **base, secret_key=OLD.decode())
    env_both = clean_env(
        tmp_path, **base, secret_key=NEW.decode(), secret_key_previous=OLD.decode()
    )
    env_new = clean_env(tmp_path, **base, secret_key=NEW.decode())

    def publish(server: Any, key: str, n: int) -> None:
        sent = httpx.post(
            f"{server.base}/api/v1/events",
            json={"type": "rotation.tested", "data": {"n": n}},
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert sent.status_code == 202, sent.text

    def key_hash(key_id: int) -> str:
        with sqlite3.connect(db_file) as conn:
            return str(
                conn.execute("SELECT key_hash FROM api_keys WHERE id = ?", (key_id,)).fetchone()[0]
            )

    # Under the old secret: a key and an endpoint.
    server = launcher.start(env_old, 1, "--first-run-bootstrap")
    key = printed_key(server)
    auth = {"Authorization": f"Bearer {key}"}
    made = httpx.post(
        f"{server.base}/api/v1/webhooks",
        json={"url": hooks.url, "events": ["rotation.*"]},
        headers=auth,
        timeout=10,
    )
    assert made.status_code == 201, made.text
    secret = made.json()["data"]["secret"]
    publish(server, key, 0)
    headers, body = _delivered(hooks, 1)[0]
    verify(secret, headers, body)
    me = httpx.get(f"{server.base}/api/v1/api-keys", headers=auth, timeout=10).json()
    key_id = me["data"][0]["id"]
    assert key_hash(key_id) == _native.hash_key(OLD, key).hex()
    server.stop()

    # New secret, previous set: the key works and moves; deliveries still verify.
    server = launcher.start(env_both, 1)
    got = httpx.get(f"{server.base}/api/v1/api-keys", headers=auth, timeout=10)
    assert got.status_code == 200, got.text
    assert key_hash(key_id) == _native.hash_key(NEW, key).hex()
    publish(server, key, 1)
    headers, body = _delivered(hooks, 2)[1]
    verify(secret, headers, body)
    assert json.loads(body)["data"] == {"n": 1}
    assert _reseal(env_both, tmp_path) == {
        "examined": 1,
        "resealed": 1,
        "already_current": 0,
        "unreadable": 0,
        "unreadable_endpoint_ids": [],
        "changed_meanwhile": 0,
    }
    server.stop()

    # The previous secret removed: the key and the endpoint's secret still work.
    server = launcher.start(env_new, 1)
    assert httpx.get(f"{server.base}/api/v1/api-keys", headers=auth, timeout=10).status_code == 200
    publish(server, key, 2)
    headers, body = _delivered(hooks, 3)[2]
    verify(secret, headers, body)
    assert json.loads(body)["data"] == {"n": 2}
    assert _reseal(env_new, tmp_path)["already_current"] == 1
