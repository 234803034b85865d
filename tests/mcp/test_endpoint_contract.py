"""/api/v1/mcp answers as its OpenAPI fragment says: every status the transport gives,
through the test client that checks each response against the document."""
# ruff: noqa: F811 - pytest fixtures imported from gwsupport are redefined as parameters

from __future__ import annotations

from typing import Any

import orjson
from gwsupport import fs_root, mcp_extra, settings  # noqa: F401 - fixtures

from conftest import Api
from core_api.config import Settings

URL = "/api/v1/mcp"
JSON = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def rpc(method: str, id_: Any = 1, **params: Any) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": id_, "method": method, "params": params})


async def test_every_documented_answer(api: Api, settings: Settings) -> None:
    r = await api.post(URL, body=rpc("tools/list"), headers=JSON)
    assert r.status == 200 and r.json["result"]["tools"], r.json
    r = await api.post(URL, body=rpc("ping", "a"), headers=JSON)
    assert r.status == 200 and r.json == {"jsonrpc": "2.0", "id": "a", "result": {}}
    r = await api.post(URL, body=rpc("nope"), headers=JSON)
    assert r.status == 200 and r.json["error"]["code"] == -32601
    r = await api.post(
        URL, body=rpc("tools/call", name="filesystem__list_directory", arguments={}), headers=JSON
    )
    assert r.status == 200 and r.json["result"]["isError"] is False, r.json
    notification = orjson.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
    r = await api.post(URL, body=notification, headers=JSON)
    assert r.status == 202 and r.json is None
    for body in (b"not json", b"{}", b"[]", b""):
        r = await api.post(URL, body=body, headers=JSON)
        assert r.status == 400 and r.json["jsonrpc"] == "2.0", (body, r.json)
    r = await api.post(URL, body=rpc("ping"), headers={**JSON, "Content-Type": "text/plain"})
    assert r.status == 400 and r.json["error"] == "bad_request"
    r = await api.post(URL, body=rpc("ping"), headers={**JSON, "MCP-Protocol-Version": "1999"})
    assert r.status == 400 and "error" in r.json
    r = await api.post(URL, body=rpc("ping"), headers={**JSON, "Accept": "text/html"})
    assert r.status == 406 and r.json["error"]["code"] == -32600
    r = await api.post(URL, body=rpc("ping"), headers={**JSON, "Origin": "https://evil.example"})
    assert r.status == 403 and r.json["error"] == "access_denied"
    r = await api.post(URL, body=rpc("ping"), headers={**JSON, "X-Workspace-ID": "x"})
    assert r.status == 422 and "X-Workspace-ID" in r.json["errors"]
    r = await api.post(URL, body=b" " * (settings.max_body_bytes + 1), headers=JSON)
    assert r.status == 413 and r.json["error"] == "payload_too_large"
    r = await api.post(URL, body=rpc("ping"), headers=JSON, auth=False)
    assert r.status == 401
    for method in ("GET", "DELETE"):
        r = await api.request(method, URL)
        assert r.status == 405 and r.header("Allow") == "POST", method
        assert r.json["error"] == "method_not_allowed"
