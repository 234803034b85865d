"""SSRF through the API with the default guard (private networks refused): what the
transport tests (tests/webhooks/test_transport.py: every internal address form, DNS
rebinding at resolve and connect time, no redirects) check on the client, here checked
end to end for the paths a tenant controls.

- ``PATCH`` cannot move an endpoint to an internal target (``POST`` is covered in
  tests/webhooks/test_webhooks_api.py);
- an endpoint whose stored URL points inside (written while the guard was off, or by an
  older version) is refused again when ``POST /webhooks/{id}/test`` sends, and nothing
  reaches the internal receiver.

MCP upstream URLs come from the operator's registry file, never from a tenant, so they
are not a tenant-reachable SSRF (docs/security.md).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from conftest import Api, make_settings
from core_api.config import Settings
from core_api.runtime import Runtime

HOOKS = "/api/v1/webhooks"
PUBLIC = "https://93.184.216.34/hook"  # an IP literal: accepted without DNS


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # The guard's defaults (private networks refused); plain http allowed so that the
    # only reason to refuse the loopback receiver below is its address.
    return make_settings(database_url, tmp_path, webhook_require_https=False)


@pytest.fixture
def internal_receiver() -> Iterator[list[str]]:
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hits.append(f"http://127.0.0.1:{server.server_address[1]}/internal")
    yield hits  # hits[0] is the URL; the rest are requests received
    server.shutdown()
    server.server_close()


INTERNAL = [
    "http://127.0.0.1/hook",
    "http://localhost/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://10.0.0.5/hook",
    "http://192.168.1.10/hook",
    "http://100.64.0.1/hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[fd00::1]/hook",
    "http://0.0.0.0/hook",
    "http://2130706433/hook",  # 127.0.0.1 as one number
    "http://0x7f.1/hook",
]


async def test_patch_cannot_point_an_endpoint_inside(api: Api) -> None:
    made = await api.post(HOOKS, json={"url": PUBLIC, "events": ["*"]})
    assert made.status == 201, made.json
    hook_id = made.json["data"]["id"]
    for url in INTERNAL:
        got = await api.patch(f"{HOOKS}/{hook_id}", json={"url": url})
        assert got.status == 422, (url, got.json)
        assert "url" in got.json["errors"], url
        created = await api.post(HOOKS, json={"url": url, "events": ["*"]})
        assert created.status == 422, (url, created.json)
    assert (await api.get(f"{HOOKS}/{hook_id}")).json["data"]["url"] == PUBLIC


async def test_a_stored_internal_url_is_refused_when_sending(
    api: Api, runtime: Runtime, internal_receiver: list[str]
) -> None:
    url = internal_receiver[0]
    made = await api.post(HOOKS, json={"url": PUBLIC, "events": ["*"]})
    hook_id = made.json["data"]["id"]
    await runtime.db.execute("UPDATE webhook_endpoints SET url = ? WHERE id = ?", (url, hook_id))
    sent = await api.post(f"{HOOKS}/{hook_id}/test")
    assert sent.status == 200, sent.json
    body = sent.json.get("data", sent.json)
    assert body["success"] is False and body["status_code"] is None, body
    assert "127.0.0.1" in body["error"] or "internal" in body["error"], body
    assert internal_receiver[1:] == []  # nothing reached it
