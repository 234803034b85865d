"""The REST endpoints against the built-in servers and the real stdio echo server."""
# ruff: noqa: F811 - pytest fixtures imported from gwsupport are redefined as parameters

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from gwsupport import call, fs_root, mcp_extra, settings  # noqa: F401 - fixtures

from conftest import Api
from core_api.mcp import repo
from core_api.runtime import Runtime
from core_api.storage.base import fetch_value
from support import children


async def new_key(api: Api, scopes: list[str]) -> dict[str, Any]:
    r = await api.post("/api/v1/api-keys", json={"name": "limited", "scopes": scopes})
    assert r.status == 201, r.json
    return dict(r.json["data"])


# -- catalogue ------------------------------------------------------------------------


async def test_list_servers_shows_tools_and_unavailable(api: Api) -> None:
    r = await api.get("/api/v1/mcp/servers")
    assert r.status == 200, r.json
    by_id = {s["id"]: s for s in r.json["data"]}
    assert set(by_id) == {"filesystem", "core", "echo", "broken"}
    fs = by_id["filesystem"]
    assert fs["tools"] == ["read_file", "write_file", "list_directory"]
    assert (fs["name"], fs["description"]) == ("Filesystem Server", "File and directory operations")
    assert by_id["echo"]["status"] == "available"
    assert {"echo", "pid", "slow", "crash"} <= set(by_id["echo"]["tools"])
    assert "echo://notes/{name}" in by_id["echo"]["resources"]
    # A server that cannot start is listed as unavailable, never a 500 for the list.
    assert by_id["broken"]["status"] == "unavailable"
    assert by_id["broken"]["tools"] == []
    assert "list_workspaces" in by_id["core"]["tools"]


async def test_get_server_and_tools(api: Api) -> None:
    r = await api.get("/api/v1/mcp/servers/filesystem")
    assert r.status == 200
    assert r.json["data"]["id"] == "filesystem"
    r = await api.get("/api/v1/mcp/servers/filesystem/tools")
    assert r.status == 200
    read = next(t for t in r.json["data"] if t["name"] == "read_file")
    assert read["description"] == "Read contents of a file"
    assert read["parameters"]["path"]["type"] == "string"
    assert read["parameters"]["path"]["required"] is True
    assert read["input_schema"]["required"] == ["path"]
    r = await api.get("/api/v1/mcp/servers/echo/tools")
    echo = next(t for t in r.json["data"] if t["name"] == "echo")
    assert echo["parameters"]["times"]["required"] is False
    assert (await api.get("/api/v1/mcp/servers/nope")).status == 404
    assert (await api.get("/api/v1/mcp/servers/nope/tools")).status == 404
    r = await api.get("/api/v1/mcp/servers/broken/tools")
    assert r.status == 503
    assert r.json["error"] == "mcp_server_unavailable"


# -- filesystem -----------------------------------------------------------------------


async def test_filesystem_read_write_list(api: Api, fs_root: Path) -> None:
    r = await call(api, "filesystem", "write_file", {"path": "docs/a.txt", "content": "héllo"})
    assert r.status == 200, r.json
    assert r.json["result"] == {"path": "/docs/a.txt", "size": 6, "written": True}
    assert (fs_root / "docs" / "a.txt").read_text() == "héllo"
    r = await call(api, "filesystem", "read_file", {"path": "/docs/a.txt"})
    assert r.json["result"] == {"path": "/docs/a.txt", "size": 6, "content": "héllo"}
    assert r.json["is_error"] is False
    r = await call(api, "filesystem", "list_directory", {"path": "docs"})
    assert r.json["result"]["entries"] == [{"name": "a.txt", "type": "file", "size": 6}]
    r = await call(api, "filesystem", "list_directory", {})
    assert r.json["result"]["entries"][0]["type"] == "directory"


@pytest.mark.parametrize(
    "path",
    ["../secret.txt", "/../secret.txt", "docs/../../secret.txt", "..", "a/\x00b"],
)
async def test_filesystem_traversal_refused(
    api: Api, fs_root: Path, tmp_path: Path, path: str
) -> None:
    (tmp_path / "secret.txt").write_text("top secret")
    r = await call(api, "filesystem", "read_file", {"path": path})
    assert r.status == 422, r.json
    assert list(r.json["errors"]) in (["arguments.path"], ["arguments"])  # NUL: the body check
    r = await call(api, "filesystem", "write_file", {"path": path, "content": "x"})
    assert r.status == 422
    assert (tmp_path / "secret.txt").read_text() == "top secret"


async def test_filesystem_symlink_escape_refused(api: Api, fs_root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret")
    (fs_root / "link.txt").symlink_to(outside / "secret.txt")
    (fs_root / "linkdir").symlink_to(outside)
    (fs_root / "inside.txt").write_text("fine")
    (fs_root / "ok-link.txt").symlink_to(fs_root / "inside.txt")
    for path in ("link.txt", "linkdir/secret.txt", "linkdir"):
        r = await call(api, "filesystem", "read_file", {"path": path})
        assert r.status == 422, (path, r.json)
        assert "outside" in r.json["errors"]["arguments.path"][0]
    r = await call(api, "filesystem", "list_directory", {"path": "linkdir"})
    assert r.status == 422
    r = await call(api, "filesystem", "write_file", {"path": "linkdir/new.txt", "content": "x"})
    assert r.status == 422
    r = await call(api, "filesystem", "write_file", {"path": "link.txt", "content": "x"})
    assert r.status == 422
    assert not (outside / "new.txt").exists()
    assert (outside / "secret.txt").read_text() == "top secret"
    # A symlink that stays inside the root is followed.
    r = await call(api, "filesystem", "read_file", {"path": "ok-link.txt"})
    assert r.json["result"]["content"] == "fine"


async def test_filesystem_size_limits(api: Api, fs_root: Path) -> None:
    (fs_root / "big.bin").write_bytes(b"x" * 1025)  # the registry's limit is 1024
    r = await call(api, "filesystem", "read_file", {"path": "big.bin"})
    assert r.status == 422
    assert "larger than 1024" in r.json["errors"]["arguments.path"][0]
    r = await call(api, "filesystem", "write_file", {"path": "new.txt", "content": "y" * 1025})
    assert r.status == 422
    assert list(r.json["errors"]) == ["arguments.content"]
    assert not (fs_root / "new.txt").exists()


async def test_resources_by_uri(api: Api, fs_root: Path) -> None:
    (fs_root / "dir").mkdir()
    (fs_root / "dir" / "n.txt").write_text("note")
    for path in (
        "/api/v1/mcp/resources/filesystem://dir/n.txt",
        "/api/v1/mcp/resources/filesystem%3A%2F%2Fdir%2Fn.txt",
    ):
        r = await api.get(path)
        assert r.status == 200, (path, r.json)
        assert r.json["data"]["uri"] == "filesystem://dir/n.txt"
        assert r.json["data"]["contents"][0]["text"] == "note"
    r = await api.get("/api/v1/mcp/resources/echo://notes/abc")
    assert r.status == 200, r.json
    assert r.json["data"]["contents"][0]["text"] == "note abc"
    assert (await api.get("/api/v1/mcp/resources/filesystem://../x")).status == 422
    assert (await api.get("/api/v1/mcp/resources/nope://x")).status == 404
    assert (await api.get("/api/v1/mcp/resources/no-scheme")).status == 422


# -- validation -----------------------------------------------------------------------


async def test_arguments_validated_against_the_schema(api: Api) -> None:
    r = await call(api, "filesystem", "read_file", {})
    assert r.status == 422
    assert r.json["error"] == "validation_failed"
    assert r.json["errors"] == {"arguments.path": ["The path field is required."]}
    r = await call(api, "filesystem", "read_file", {"path": 5, "mode": "x"})
    assert r.status == 422
    assert set(r.json["errors"]) == {"arguments.path", "arguments.mode"}
    assert r.json["errors"]["arguments.mode"] == ["The mode field is not allowed."]
    r = await call(api, "echo", "echo", {"message": "x", "times": "two"})
    assert r.status == 422
    assert list(r.json["errors"]) == ["arguments.times"]
    r = await call(api, "echo", "nope", {})
    assert r.status == 422
    assert list(r.json["errors"]) == ["tool"]
    r = await api.post("/api/v1/mcp/tools/call", json={"tool": "x", "arguments": []})
    assert r.status == 422
    assert set(r.json["errors"]) == {"server", "arguments"}
    r = await api.post(
        "/api/v1/mcp/tools/call", body=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert r.status == 422
    assert (await call(api, "nope", "x", {})).status == 404


# -- the external stdio server ---------------------------------------------------------


def echo_processes() -> list[int]:
    found = []
    for pid in children(os.getpid()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"echo_server.py" in cmdline and b"--fail" not in cmdline:
            found.append(pid)
    return found


async def test_stdio_server_is_launched_once_for_100_calls(api: Api) -> None:
    first = await call(api, "echo", "pid", {})
    assert first.status == 200, first.json
    pid = first.json["result"]["result"]
    results = await asyncio.gather(
        *(call(api, "echo", "echo", {"message": f"m{i}"}) for i in range(100))
    )
    assert [r.json["result"]["result"] for r in results] == [f"m{i}" for i in range(100)]
    last = await call(api, "echo", "pid", {})
    assert last.json["result"]["result"] == pid
    assert echo_processes() == [pid]


async def test_crashed_stdio_server_restarts_with_backoff(api: Api) -> None:
    pid = (await call(api, "echo", "pid", {})).json["result"]["result"]
    r = await call(api, "echo", "crash", {})
    assert r.status == 503, r.json
    assert r.json["error"] == "mcp_server_unavailable"
    assert r.headers["retry-after"] == "5"
    r = await call(api, "echo", "pid", {})  # within the first backoff (0.5 s)
    assert r.status == 503
    await asyncio.sleep(0.6)
    r = await call(api, "echo", "pid", {})
    assert r.status == 200, r.json
    assert r.json["result"]["result"] != pid
    assert echo_processes() == [r.json["result"]["result"]]


async def test_call_timeout(api: Api) -> None:
    r = await call(api, "echo", "slow", {"seconds": 5})  # the registry's timeout is 2 s
    assert r.status == 504
    assert r.json["error"] == "mcp_timeout"
    r = await call(api, "echo", "echo", {"message": "still alive"})
    assert r.json["result"]["result"] == "still alive"


# -- access ---------------------------------------------------------------------------


async def test_scopes_refused(api: Api) -> None:
    reader = await new_key(api, ["mcp:read"])
    r = await call(api, "filesystem", "list_directory", {}, key=reader["key"])
    assert r.status == 403
    assert r.json["message"] == "Insufficient permissions. Required scope: mcp:write"
    assert (await api.get("/api/v1/mcp/servers", key=reader["key"])).status == 200
    other = await new_key(api, ["workspaces:read"])
    assert (await api.get("/api/v1/mcp/servers", key=other["key"])).status == 403
    assert (await api.get("/api/v1/mcp/servers")).status == 200


async def test_key_server_list_refused(api: Api, runtime: Runtime) -> None:
    limited = await new_key(api, ["mcp:read", "mcp:write"])
    await repo.set_key_servers(runtime.db, limited["id"], ["filesystem"])
    await runtime.invalidator.changed(("key", limited["id"]))
    r = await api.get("/api/v1/mcp/servers", key=limited["key"])
    assert [s["id"] for s in r.json["data"]] == ["filesystem"]
    r = await call(api, "echo", "echo", {"message": "x"}, key=limited["key"])
    assert r.status == 403
    assert "may not use the MCP server echo" in r.json["message"]
    assert (await api.get("/api/v1/mcp/servers/echo", key=limited["key"])).status == 403
    r = await call(api, "filesystem", "list_directory", {}, key=limited["key"])
    assert r.status == 200


@pytest.mark.parametrize(
    "mcp_extra",
    [
        '[[servers]]\nid = "private"\nworkspaces = [987654]\n'
        '[servers.transport]\ntype = "http"\nurl = "http://127.0.0.1:9/mcp"\n'
    ],
)
async def test_server_of_other_workspaces_is_not_found(api: Api) -> None:
    r = await api.get("/api/v1/mcp/servers")
    assert "private" not in {s["id"] for s in r.json["data"]}
    assert (await api.get("/api/v1/mcp/servers/private")).status == 404
    assert (await call(api, "private", "x", {})).status == 404


@pytest.mark.parametrize(
    "mcp_extra",
    [
        '[[servers]]\nid = "limited"\nrate_limit = 1000\ntool_limits = { echo = 3 }\n'
        f'[servers.transport]\ntype = "stdio"\ncommand = "{sys.executable}"\n'
        f'args = ["{Path(__file__).with_name("echo_server.py")}"]\n'
    ],
)
async def test_per_tool_rate_limit(api: Api) -> None:
    codes = [(await call(api, "limited", "echo", {"message": "x"})).status for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    assert (await call(api, "limited", "pid", {})).status == 200  # another tool


# -- core -----------------------------------------------------------------------------


async def test_core_tools_run_under_the_callers_key(api: Api, boot: dict[str, Any]) -> None:
    r = await call(api, "core", "list_workspaces", {"per_page": 5})
    assert r.status == 200, r.json
    assert [w["id"] for w in r.json["result"]["data"]] == [boot["workspace"]["id"]]
    r = await call(api, "core", "check_entitlement", {"feature": "mcp_calls"})
    assert r.status == 200, r.json
    assert "allowed" in r.json["result"]
    narrow = await new_key(api, ["mcp:read", "mcp:write"])
    r = await call(api, "core", "list_workspaces", {}, key=narrow["key"])
    assert r.status == 403
    assert r.json["message"] == "Insufficient permissions. Required scope: workspaces:read"
    r = await call(api, "core", "list_webhook_deliveries", {"endpoint_id": 999})
    assert r.status == 404


# -- audit, events, usage --------------------------------------------------------------


async def test_calls_are_audited_published_and_counted(
    api: Api, runtime: Runtime, boot: dict[str, Any]
) -> None:
    async def executed_events() -> int:
        value = await fetch_value(
            runtime.db, "SELECT COUNT(*) FROM events WHERE type = ?", ("mcp.tool.executed",)
        )
        return int(value)

    # Without a subscribed endpoint the call is audited but no event is written.
    assert (await call(api, "filesystem", "list_directory", {})).status == 200
    assert (await api.get("/api/v1/mcp/audit")).json["meta"]["total"] == 1
    assert await executed_events() == 0
    await runtime.db.execute("DELETE FROM mcp_audit")
    runtime.entitlements.meter.drain()
    hook = {"url": "http://127.0.0.1:9/hook", "events": ["mcp.*"]}
    r = await api.post("/api/v1/webhooks", json=hook)
    assert r.status == 201, r.json

    before = runtime.entitlements.meter.pending()
    assert (await call(api, "filesystem", "list_directory", {"path": "/"})).status == 200
    assert (await call(api, "echo", "echo", {"message": "hi"})).status == 200
    assert (await call(api, "filesystem", "read_file", {})).status == 422
    assert (await call(api, "filesystem", "read_file", {"path": "../x"})).status == 422
    r = await api.get("/api/v1/mcp/audit")
    assert r.status == 200, r.json
    rows = r.json["data"]
    assert [(a["server"], a["tool"], a["outcome"]) for a in rows] == [
        ("filesystem", "read_file", "refused"),
        ("filesystem", "read_file", "invalid"),
        ("echo", "echo", "ok"),
        ("filesystem", "list_directory", "ok"),
    ]
    assert rows[2]["arguments"] == {"message": "hi"}  # the test registry keeps arguments
    assert rows[2]["api_key_id"] == boot["api_key"]["id"]
    assert rows[2]["transport"] == "rest"
    assert rows[2]["duration_ms"] > 0
    assert r.json["meta"]["total"] == 4
    r = await api.get("/api/v1/mcp/audit", params={"outcome": "ok", "server": "echo"})
    assert [a["tool"] for a in r.json["data"]] == ["echo"]
    assert (await api.get("/api/v1/mcp/audit", params={"outcome": "nope"})).status == 422
    assert await executed_events() == 2  # the two calls that ran
    deliveries = await fetch_value(runtime.db, "SELECT COUNT(*) FROM webhook_deliveries")
    assert deliveries == 2
    assert runtime.entitlements.meter.pending() - before >= 2
    drained = runtime.entitlements.meter.drain()
    assert drained[(boot["workspace"]["id"], "mcp_calls")] == 2


async def test_key_server_list_set_through_the_api_never_widens(api: Api) -> None:
    """POST /api-keys takes mcp_servers; a restricted key's keys inherit its list, cannot
    widen it (422), and rotation keeps it."""
    made = await api.post(
        "/api/v1/api-keys",
        json={"name": "fs only", "scopes": ["*"], "mcp_servers": ["filesystem"]},
    )
    assert made.status == 201, made.json
    limited = made.json["data"]
    assert limited["mcp_servers"] == ["filesystem"]
    got = await api.get(f"/api/v1/api-keys/{limited['id']}")
    assert got.json["data"]["mcp_servers"] == ["filesystem"]
    assert (await call(api, "core", "list_workspaces", {}, key=limited["key"])).status == 403
    assert (await call(api, "filesystem", "list_directory", {}, key=limited["key"])).status == 200

    child = await api.post("/api/v1/api-keys", key=limited["key"], json={"name": "child"})
    assert child.status == 201, child.json
    assert child.json["data"]["mcp_servers"] == ["filesystem"]  # inherited, not "all"
    wider = await api.post(
        "/api/v1/api-keys", key=limited["key"], json={"name": "w", "mcp_servers": ["core"]}
    )
    assert wider.status == 422 and "mcp_servers" in wider.json["errors"]
    for bad in (["Bad Id"], "filesystem", [1], ["x" * 40]):
        refused = await api.post("/api/v1/api-keys", json={"name": "b", "mcp_servers": bad})
        assert refused.status == 422 and "mcp_servers" in refused.json["errors"], bad

    rotated = await api.post(f"/api/v1/api-keys/{limited['id']}/rotate", json={})
    successor = rotated.json["data"]["id"]
    got = await api.get(f"/api/v1/api-keys/{successor}")
    assert got.json["data"]["mcp_servers"] == ["filesystem"]
