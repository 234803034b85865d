"""/api/v1/mcp with the SDK's own client, on both protocol revisions."""
# ruff: noqa: F811 - pytest fixtures imported from gwsupport are redefined as parameters

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import falcon.testing
import httpx2
import mcp_types as types
import orjson
import pytest
from gwsupport import fs_root, mcp_extra, settings  # noqa: F401 - fixtures
from mcp.client.streamable_http import streamable_http_client

from conftest import Api
from core_api.app import create_app
from core_api.config import Settings
from core_api.runtime import Runtime
from mcp import Client

URL = "http://testserver/api/v1/mcp"
REVISIONS = ["legacy", "2026-07-28"]  # legacy = the 2025-11-25 initialize handshake


@pytest.fixture
async def conductor(
    runtime: Runtime, settings: Settings
) -> AsyncIterator[falcon.testing.ASGIConductor]:
    async with falcon.testing.ASGIConductor(create_app(settings, runtime)) as conductor:
        yield conductor  # the lifespan (start-up, shutdown) runs around the test


@pytest.fixture
def app(conductor: falcon.testing.ASGIConductor) -> Any:
    return conductor.app


@pytest.fixture
def api(conductor: falcon.testing.ASGIConductor, boot: dict[str, Any]) -> Api:
    """The REST client over the same app (one process): each app has its own MCP gateway
    and audit buffer, and an audit read writes only its own app's pending records first."""
    return Api(conductor, boot["api_key"]["key"])


def client(app: Any, key: str, mode: str, **headers: str) -> Client:
    http = httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app),
        headers={"Authorization": f"Bearer {key}", **headers},
    )
    return Client(streamable_http_client(URL, http_client=http), mode=mode, cache=None)


@pytest.mark.parametrize("mode", REVISIONS)
async def test_sdk_client_lists_and_calls_tools(
    app: Any, boot: dict[str, Any], fs_root: Path, mode: str
) -> None:
    (fs_root / "hello.txt").write_text("hi there")
    async with client(app, boot["api_key"]["key"], mode) as mcp:
        expected = "2025-11-25" if mode == "legacy" else "2026-07-28"
        assert mcp.protocol_version == expected
        tools = {t.name: t for t in (await mcp.list_tools()).tools}
        assert {"filesystem__read_file", "echo__echo", "core__list_workspaces"} <= set(tools)
        assert not any(name.startswith("broken__") for name in tools)  # unavailable
        assert tools["filesystem__read_file"].input_schema["required"] == ["path"]
        result = await mcp.call_tool("filesystem__read_file", {"path": "hello.txt"})
        assert not result.is_error
        assert result.structured_content == {"path": "/hello.txt", "size": 8, "content": "hi there"}
        result = await mcp.call_tool("echo__echo", {"message": "ab", "times": 3})
        assert result.structured_content == {"result": "ababab"}
        # Bad arguments come back as a tool error the model can read and correct.
        result = await mcp.call_tool("filesystem__read_file", {"path": "../etc/passwd"})
        assert result.is_error
        body = orjson.loads(result.content[0].text)  # type: ignore[union-attr]
        assert body["error"] == "validation_failed"
        assert "arguments.path" in body["errors"]


@pytest.mark.parametrize("mode", REVISIONS)
async def test_write_scope_and_server_list_apply(
    app: Any, api: Api, boot: dict[str, Any], mode: str
) -> None:
    r = await api.post("/api/v1/api-keys", json={"name": "ro", "scopes": ["mcp:read"]})
    reader = r.json["data"]["key"]
    async with client(app, reader, mode) as mcp:
        assert (await mcp.list_tools()).tools
        result = await mcp.call_tool("filesystem__list_directory", {})
        assert result.is_error
        body = orjson.loads(result.content[0].text)  # type: ignore[union-attr]
        assert body["message"] == "Insufficient permissions. Required scope: mcp:write"


async def test_authentication_and_origin(app: Any, boot: dict[str, Any]) -> None:
    key = boot["api_key"]["key"]
    request = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-11-25",
    }
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as http:
        r = await http.post("/api/v1/mcp", json=request, headers=headers)
        assert r.status_code == 401
        auth = {**headers, "Authorization": f"Bearer {key}"}
        r = await http.post("/api/v1/mcp", json=request, headers=auth)
        assert r.status_code == 200, r.text
        assert r.json()["result"]["tools"]
        r = await http.post(
            "/api/v1/mcp", json=request, headers={**auth, "Origin": "https://evil.example"}
        )
        assert r.status_code == 403
        for origin in ("https://app.example.com", "http://testserver"):
            r = await http.post("/api/v1/mcp", json=request, headers={**auth, "Origin": origin})
            assert r.status_code == 200, origin
        # No session, so no GET stream; the transport's refusals keep the documented shape.
        r = await http.get("/api/v1/mcp", headers=auth)
        assert r.status_code == 405
        assert r.headers["allow"] == "POST"
        assert r.json()["error"] == "method_not_allowed"
        r = await http.post("/api/v1/mcp", json=request, headers={**auth, "Accept": "text/html"})
        assert r.status_code == 406
        assert r.json()["error"]["code"] == types.INVALID_REQUEST  # the SDK's JSON-RPC error


async def test_mcp_calls_are_audited_as_mcp(app: Any, api: Api, boot: dict[str, Any]) -> None:
    async with client(app, boot["api_key"]["key"], "2026-07-28") as mcp:
        result = await mcp.call_tool("filesystem__list_directory", {})
        assert isinstance(result, types.CallToolResult) and not result.is_error
    r = await api.get("/api/v1/mcp/audit")
    assert [(a["tool"], a["transport"], a["outcome"]) for a in r.json["data"]] == [
        ("list_directory", "mcp", "ok")
    ]
