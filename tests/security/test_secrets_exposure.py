"""Secrets are shown once and never logged, against a real `core-api serve` (Granian, two
workers, the embedded delivery worker, DEBUG logs and the access log on).

The scenario makes, uses, rotates, replays and revokes every kind of secret the API hands
out (API keys, webhook signing secrets), delivers signed webhooks to a local receiver,
and provokes the error paths (401 with unknown and revoked keys, 404, 422). Then:

- each secret appeared in exactly one API response: the one that created it (an
  ``Idempotency-Key`` replay to the same API key is that same response, documented; the
  same ``Idempotency-Key`` from another key is a new request and gets a new secret);
- no secret, nor its random part, is in the server's stdout or stderr, nor in the SQLite
  database files (keys are stored as HMACs, webhook secrets sealed).
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core_api.webhooks.verify import verify
from support import HookReceiver, Launcher, clean_env, core_api_command, hook_receiver

pytestmark = pytest.mark.e2e


@pytest.fixture
def receiver() -> Iterator[HookReceiver]:
    with hook_receiver() as r:
        yield r


def wait_for(predicate: Any, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def forms(secret: str) -> list[str]:
    """The secret and the parts of it that are secret on their own."""
    found = [secret]
    if secret.startswith("sk_live_"):
        found.append(secret[8:40])  # the random part, without prefix and checksum
    if secret.startswith("whsec_"):
        raw = secret.removeprefix("whsec_")
        found += [raw, base64.b64decode(raw).hex()]
    return found


def test_secrets_are_shown_once_and_never_logged(
    launcher: Launcher, tmp_path: Path, receiver: HookReceiver
) -> None:
    env = clean_env(
        tmp_path,
        database_url=f"sqlite:///{tmp_path}/db.sqlite",
        log_level="DEBUG",
        access_log="true",
        auth_failure_limit="1000",
        webhook_allow_private_networks="true",
        webhook_require_https="false",
        webhook_retry_schedule="1",
    )
    made = subprocess.run(
        [*core_api_command(), "bootstrap", "--name", "Sec", "--tier", "enterprise"],
        env=env, cwd=tmp_path, capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    boot = json.loads(made.stdout)
    root_key = boot["api_key"]["key"]
    server = launcher.start(env, 2)

    responses: list[tuple[str, str]] = []  # (what, body text) of every answer
    secrets: dict[str, str] = {}  # name -> secret

    def call(method: str, path: str, key: str | None = root_key, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", {})
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        r = client.request(method, path, headers=headers, **kw)
        responses.append((f"{method} {path} {headers.get('Idempotency-Key', '')}", r.text))
        return r

    with httpx.Client(base_url=server.base, timeout=15.0) as client:
        # API keys: create, use, read back, rotate, use both, replay, revoke.
        created = call("POST", "/api/v1/api-keys", json={"name": "k1", "scopes": ["*"]})
        assert created.status_code == 201, created.text
        k1, k1_id = created.json()["data"]["key"], created.json()["data"]["id"]
        secrets["k1"] = k1
        assert call("GET", "/api/v1/workspaces", key=k1).status_code == 200
        rotated = call("POST", f"/api/v1/api-keys/{k1_id}/rotate", key=k1)
        assert rotated.status_code == 200, rotated.text
        k2, k2_id = rotated.json()["data"]["key"], rotated.json()["data"]["id"]
        secrets["k2"] = k2
        assert call("GET", "/api/v1/workspaces", key=k1).status_code == 200  # grace period
        assert call("GET", "/api/v1/workspaces", key=k2).status_code == 200
        for key_id in (k1_id, k2_id, boot["api_key"]["id"]):
            assert call("GET", f"/api/v1/api-keys/{key_id}").status_code == 200
        assert call("GET", "/api/v1/api-keys", params={"per_page": "100"}).status_code == 200

        idem = {"Idempotency-Key": "create-k3"}
        first = call("POST", "/api/v1/api-keys", json={"name": "k3"}, headers=dict(idem))
        k3 = first.json()["data"]["key"]
        secrets["k3"] = k3
        replay = call("POST", "/api/v1/api-keys", json={"name": "k3"}, headers=dict(idem))
        assert replay.headers.get("idempotent-replayed") == "true"
        assert replay.json() == first.json()  # the same caller gets its own response again
        other = call("POST", "/api/v1/api-keys", key=k2, json={"name": "k3"}, headers=dict(idem))
        assert other.status_code == 201 and "idempotent-replayed" not in other.headers
        k4 = other.json()["data"]["key"]
        secrets["k4"] = k4
        assert k4 != k3  # another caller's Idempotency-Key never replays k3

        # Webhooks: create, rotate the secret, read back, deliver signed messages.
        hook = call("POST", "/api/v1/webhooks", json={"url": receiver.url, "events": ["order.*"]})
        assert hook.status_code == 201, hook.text
        hook_id, whsec1 = hook.json()["data"]["id"], hook.json()["data"]["secret"]
        secrets["whsec1"] = whsec1
        rotated_hook = call("POST", f"/api/v1/webhooks/{hook_id}/secret/rotate")
        assert rotated_hook.status_code == 200, rotated_hook.text
        whsec2 = rotated_hook.json()["data"]["secret"]
        secrets["whsec2"] = whsec2
        assert whsec1 != whsec2
        tested = call("POST", f"/api/v1/webhooks/{hook_id}/test")
        assert tested.status_code == 200, tested.text
        published = call("POST", "/api/v1/events", json={"type": "order.paid", "data": {"n": 1}})
        assert published.status_code == 202, published.text
        wait_for(lambda: len(receiver.hits) >= 2)
        for headers, body in receiver.hits:
            verify(whsec2, headers, body)  # signed with the new secret...
            verify(whsec1, headers, body)  # ...and the old one, during its grace period
        assert call("GET", f"/api/v1/webhooks/{hook_id}").status_code == 200
        assert call("GET", "/api/v1/webhooks").status_code == 200
        deliveries = call("GET", f"/api/v1/webhooks/{hook_id}/deliveries")
        for item in deliveries.json()["data"]:
            call("GET", f"/api/v1/webhooks/{hook_id}/deliveries/{item['id']}")

        # A secret of the caller's own choosing: shown back once, and never logged, also
        # when refused (too short).
        chosen = "whsec_" + base64.b64encode(b"chosen-secret-0123456789abcdef").decode()
        secrets["chosen"] = chosen
        own = call("POST", f"/api/v1/webhooks/{hook_id}/secret/rotate", json={"secret": chosen})
        assert own.status_code == 200 and own.json()["data"]["secret"] == chosen, own.text
        weak = "whsec_" + base64.b64encode(b"too-short").decode()
        secrets["weak"] = weak
        refused = call(
            "POST", "/api/v1/webhooks", json={"url": receiver.url, "events": ["*"], "secret": weak}
        )
        assert refused.status_code == 422, refused.text

        # Error paths with secrets in hand.
        assert call("DELETE", f"/api/v1/api-keys/{k2_id}", key=k2).status_code == 204
        assert call("GET", "/api/v1/workspaces", key=k2).status_code == 401  # revoked
        unknown = k1[:-6] + "000000"  # well-formed prefix, wrong checksum
        assert call("GET", "/api/v1/workspaces", key=unknown).status_code == 401
        assert call("GET", "/api/v1/nope", key=k3).status_code == 404
        assert call("POST", "/api/v1/api-keys", key=k3, json={"nope": 1}).status_code == 422

    server.stop()  # flush every log line (shutdown logs included)

    for name, secret in secrets.items():
        shown = [what for what, text in responses if secret in text]
        if name == "weak":  # refused: in no response at all
            assert shown == [], shown
            continue
        assert len(shown) == 1 or (name == "k3" and len(shown) == 2), (name, shown)
    logs = server.stdout() + server.stderr()
    assert logs.strip(), "the server logged nothing at DEBUG"
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("db.sqlite*"))
    for name, secret in {**secrets, "root": root_key}.items():
        for form in forms(secret):
            assert form not in logs, f"{name} is in the server's output"
            assert form.encode() not in stored, f"{name} is stored in the clear"
