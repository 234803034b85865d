"""The audit log stores whatever names a request carries: a NUL in a resource path or a
JSON-RPC tool name once failed the whole batch on PostgreSQL, for good (it stayed first in
the queue), and every audit read became a 500."""
# ruff: noqa: F811 - pytest fixtures imported from gwsupport are redefined as parameters

from __future__ import annotations

from pathlib import Path
from typing import Any

from gwsupport import fs_root, jsonrpc_call, mcp_extra, settings  # noqa: F401 - fixtures

from conftest import Api
from core_api.mcp.audit import clean_text


def test_clean_text() -> None:
    assert clean_text("read_file") == "read_file"
    assert clean_text("caf\u00e9") == "caf\u00e9"
    assert clean_text("a\x00b") == "a\ufffdb"
    assert clean_text("a\udcffb") == "a?b"


async def test_nul_in_names_is_audited_and_readable(api: Api, fs_root: Path) -> None:
    r = await api.get("/api/v1/mcp/resources/filesystem://a%00b.txt")
    assert r.status == 422, r.json
    r = await api.get("/api/v1/mcp/resources/fi%00le://x")
    assert r.status == 404, r.json
    r = await jsonrpc_call(api, "no\u0000pe__to\u0000ol", {})
    assert r.status == 200, r.json
    assert r.json["result"]["isError"] is True
    r = await api.get("/api/v1/mcp/audit")
    assert r.status == 200, r.json
    rows: list[dict[str, Any]] = r.json["data"]
    assert [(a["server"], a["tool"], a["transport"], a["outcome"]) for a in rows] == [
        ("no\ufffdpe", "to\ufffdol", "mcp", "denied"),
        ("fi\ufffdle", "x", "rest", "denied"),
        ("filesystem", "a\ufffdb.txt", "rest", "refused"),
    ]
    # The log keeps working afterwards.
    assert (
        await api.post(
            "/api/v1/mcp/tools/call", json={"server": "filesystem", "tool": "list_directory"}
        )
    ).status == 200
    r = await api.get("/api/v1/mcp/audit", params={"tool": "list_directory"})
    assert r.status == 200 and r.json["meta"]["total"] == 1, r.json


async def test_audit_filters_refuse_nul_and_long_values(api: Api) -> None:
    for params in ({"server": "a\x00b"}, {"tool": "\x00"}, {"server": "s" * 1025}):
        r = await api.get("/api/v1/mcp/audit", params=params)
        assert r.status == 422, (params, r.json)
        assert list(r.json["errors"]) == list(params)
    r = await api.get("/api/v1/mcp/audit", params={"server": "s" * 1024})
    assert r.status == 200 and r.json["data"] == []


async def test_jsonrpc_arguments_beyond_64_bits_are_audited(api: Api) -> None:
    """The registry keeps arguments (gwsupport: audit_arguments = true); a JSON-RPC body may
    carry an integer orjson cannot encode: the call still answers and is audited."""
    r = await jsonrpc_call(api, "filesystem__list_directory", {"path": "/", "n": 10**30})
    assert r.status == 200, r.json
    assert r.json["result"]["isError"] is True  # n is not in the schema: a validation error
    assert "arguments.n" in r.json["result"]["content"][0]["text"]
    r = await api.get("/api/v1/mcp/audit")
    [row] = r.json["data"]
    assert (row["tool"], row["outcome"]) == ("list_directory", "invalid")
    assert row["arguments"] == {"path": "/", "n": 1e30}
