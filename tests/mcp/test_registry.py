"""The registry file: defaults, the format, ${NAME} expansion and its refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from core_api.config import ConfigError
from core_api.mcp.registry import HttpTransport, StdioTransport, load_registry


def test_defaults_enable_the_builtin_servers() -> None:
    registry = load_registry(None)
    assert list(registry.servers) == ["filesystem", "core"]
    assert registry.servers["filesystem"].transport is None
    assert registry.filesystem_root == "data/mcp-files"
    assert registry.audit_arguments is False


def test_full_entry(tmp_path: Path) -> None:
    path = tmp_path / "mcp.toml"
    path.write_text(
        """
[gateway]
call_timeout_seconds = 3
audit_arguments = true
allowed_origins = ["https://a.example/"]
[builtin.core]
enabled = false
[[servers]]
id = "docs"
name = "Docs"
workspaces = [1, 2]
rate_limit = 10
tool_limits = { search = 2 }
[servers.transport]
type = "stdio"
command = "docs-mcp"
args = ["-v"]
env = { TOKEN = "${DOCS_TOKEN}" }
[[servers]]
id = "remote"
[servers.transport]
type = "http"
url = "https://mcp.example/mcp"
headers = { Authorization = "Bearer ${REMOTE}" }
"""
    )
    registry = load_registry(str(path), {"DOCS_TOKEN": "t1", "REMOTE": "t2"})
    assert list(registry.servers) == ["filesystem", "docs", "remote"]
    docs = registry.servers["docs"]
    assert docs.transport == StdioTransport("docs-mcp", ("-v",), {"TOKEN": "t1"}, None)
    assert docs.workspaces == frozenset({1, 2}) and docs.allows_workspace(2)
    assert not docs.allows_workspace(3)
    assert (docs.rate_limit, dict(docs.tool_limits)) == (10, {"search": 2})
    remote = registry.servers["remote"].transport
    assert remote == HttpTransport("https://mcp.example/mcp", {"Authorization": "Bearer t2"})
    assert registry.call_timeout == 3 and registry.audit_arguments
    assert registry.allowed_origins == frozenset({"https://a.example"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[servers]]\nid = 'Bad Id'", "id must be"),
        (
            "[[servers]]\nid = 'filesystem'\n[servers.transport]\ntype='stdio'\ncommand='x'",
            "duplicate",
        ),
        ("[[servers]]\nid = 'a'", "needs a [servers.transport]"),
        ("[[servers]]\nid = 'a'\n[servers.transport]\ntype = 'ws'", "stdio or http"),
        ("[[servers]]\nid = 'a'\n[servers.transport]\ntype = 'http'\nurl = 'ftp://x'", "http(s)"),
        (
            "[[servers]]\nid = 'a'\nworkspaces = ['x']\n[servers.transport]\ntype='stdio'\n"
            "command='x'",
            "workspaces",
        ),
        (
            "[[servers]]\nid = 'a'\nrate_limit = -1\n[servers.transport]\ntype='stdio'\n"
            "command='x'",
            "rate limit",
        ),
        (
            "[[servers]]\nid = 'a'\n[servers.transport]\ntype='stdio'\ncommand='x'\n"
            "env = { A = '${UNSET_VARIABLE}' }",
            "UNSET_VARIABLE is not set",
        ),
        ("[gateway]\ncall_timeout_seconds = 0", "call_timeout_seconds"),
        ("not toml [", "CORE_API_MCP_CONFIG"),
    ],
)
def test_mistakes_stop_start_up(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "mcp.toml"
    path.write_text(text)
    with pytest.raises(
        ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
    ):
        load_registry(str(path), {})
