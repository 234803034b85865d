"""The built-in MCP filesystem server keeps one tree per workspace (the cross-tenant read
and write found by the security review, docs/security.md): a workspace's paths, symlinks
included, never reach another's files. Through the API: test_tenant_isolation.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from core_api.config import ConfigError
from core_api.mcp.backends import ToolRefused
from core_api.mcp.filesystem import FilesystemServer
from core_api.mcp.registry import load_registry


def server(root: Path, *, per_workspace: bool = True) -> FilesystemServer:
    spec = load_registry(None).servers["filesystem"]
    return FilesystemServer(spec, str(root), 1024, per_workspace=per_workspace)


def test_each_workspace_has_its_own_tree(tmp_path: Path) -> None:
    fs = server(tmp_path)
    fs.tree(1).write_file("a.txt", "one")
    fs.tree(2).write_file("a.txt", "two")
    assert fs.tree(1).read_file("a.txt")["content"] == "one"
    assert fs.tree(2).read_file("/a.txt")["content"] == "two"
    assert (tmp_path / "1" / "a.txt").read_text() == "one"
    assert [e["name"] for e in fs.tree(3).list_directory("/")["entries"]] == []
    with pytest.raises(ToolRefused):
        fs.tree(3).read_file("a.txt")


@pytest.mark.parametrize("path", ["../1/a.txt", "/../1/a.txt", "..\\1\\a.txt"])
def test_dot_dot_cannot_climb_into_another_tree(tmp_path: Path, path: str) -> None:
    fs = server(tmp_path)
    fs.tree(1).write_file("a.txt", "one")
    with pytest.raises(ToolRefused):
        fs.tree(2).read_file(path)


def test_a_symlink_into_another_tree_is_refused(tmp_path: Path) -> None:
    fs = server(tmp_path)
    fs.tree(1).write_file("secret.txt", "one")
    fs.tree(2).list_directory("/")  # creates tree 2
    (tmp_path / "2" / "link.txt").symlink_to(tmp_path / "1" / "secret.txt")
    (tmp_path / "2" / "dir").symlink_to(tmp_path / "1")
    for path in ("link.txt", "dir/secret.txt"):
        with pytest.raises(ToolRefused, match="outside"):
            fs.tree(2).read_file(path)
    with pytest.raises(ToolRefused):
        fs.tree(2).write_file("dir/new.txt", "x")
    assert not (tmp_path / "1" / "new.txt").exists()


def test_shared_tree_only_when_configured(tmp_path: Path) -> None:
    fs = server(tmp_path, per_workspace=False)
    fs.tree(1).write_file("a.txt", "shared")
    assert fs.tree(2).read_file("a.txt")["content"] == "shared"
    assert (tmp_path / "a.txt").exists()


def test_registry_default_is_per_workspace(tmp_path: Path) -> None:
    assert load_registry(None).filesystem_per_workspace is True
    config = tmp_path / "mcp.toml"
    config.write_text("[builtin.filesystem]\nper_workspace = false\n")
    assert load_registry(str(config)).filesystem_per_workspace is False
    config.write_text('[builtin.filesystem]\nper_workspace = "no"\n')
    with pytest.raises(ConfigError, match="per_workspace"):
        load_registry(str(config))
