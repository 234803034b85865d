"""MCP gateway test fixtures (imported by the test modules): a registry file with a
temporary filesystem root and the real stdio echo server (echo_server.py, on the SDK)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import make_settings
from core_api.config import Settings

ECHO = Path(__file__).with_name("echo_server.py")


GATEWAY: dict[str, Any] = {
    "call_timeout_seconds": 2,
    "catalogue_ttl_seconds": 60,
    "connect_timeout_seconds": 30,  # a loaded CI machine takes seconds to import the SDK
    "audit_arguments": True,
}


def registry_text(root: Path, extra: str = "", **gateway: Any) -> str:
    """The test registry; ``gateway`` overrides the [gateway] values of GATEWAY."""
    settings = "\n".join(
        f"{name} = {str(value).lower() if isinstance(value, bool) else value}"
        for name, value in {**GATEWAY, **gateway}.items()
    )
    return f"""
[gateway]
{settings}
allowed_origins = ["https://app.example.com"]

[builtin.filesystem]
root = "{root}"
max_file_bytes = 1024
per_workspace = false  # one shared tree: the tests put files straight into fs_root

[[servers]]
id = "echo"
name = "Echo"
description = "The test echo server"
tool_limits = {{ echo = 100000 }}
[servers.transport]
type = "stdio"
command = "{sys.executable}"
args = ["{ECHO}"]

[[servers]]
id = "broken"
name = "Broken"
description = "Exits at once"
[servers.transport]
type = "stdio"
command = "{sys.executable}"
args = ["-c", "raise SystemExit(2)"]  # before importing anything: fails fast
{extra}
"""


@pytest.fixture
def fs_root(tmp_path: Path) -> Path:
    root = tmp_path / "files"
    root.mkdir()
    return root


@pytest.fixture
def mcp_extra() -> str:
    return ""


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fs_root: Path, mcp_extra: str) -> Settings:
    config = tmp_path / "mcp.toml"
    config.write_text(registry_text(fs_root, mcp_extra))
    return make_settings(
        database_url,
        tmp_path,
        mcp_config=str(config),
        webhook_allow_private_networks=True,  # a loopback endpoint subscribes to events
        webhook_require_https=False,
    )


async def call(api: Any, server: str, tool: str, arguments: Any = None, **kw: Any) -> Any:
    body: dict[str, Any] = {"server": server, "tool": tool}
    if arguments is not None:
        body["arguments"] = arguments
    return await api.post("/api/v1/mcp/tools/call", json=body, **kw)


JSON_RPC = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


async def jsonrpc_call(api: Any, name: str, arguments: Any) -> Any:
    """``tools/call`` of ``name`` (``server__tool``) through ``/api/v1/mcp``, raw JSON-RPC."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }
    return await api.post("/api/v1/mcp", json=body, headers=JSON_RPC)
