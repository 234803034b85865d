"""The built-in ``filesystem`` server: read_file, write_file, list_directory, confined to
one directory per workspace, ``<root>/<workspace id>`` (``[builtin.filesystem] root``), so
that no workspace reads or writes another's files; ``per_workspace = false`` shares one
tree, the root itself, among every workspace the registry lets use the server.

Every path is taken relative to the root (a leading ``/`` means the root). ``..``
components, NUL bytes and anything that resolves outside the root (a symlink pointing
out, at any depth) are refused; files are opened with ``O_NOFOLLOW`` so a symlink swapped
in after the check is refused too. Files over ``max_file_bytes`` are refused both ways.
Reads and writes are small (bounded by that limit) and run on the event loop.
"""

from __future__ import annotations

import base64
import errno
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mcp_types as types

from .backends import Caller, Catalogue, ToolRefused, ToolResult, structured
from .registry import ServerSpec

MAX_ENTRIES = 1000
_PATH = {"type": "string", "description": "Path relative to the server's root", "maxLength": 1024}

TOOLS = [
    types.Tool(
        name="read_file",
        description="Read contents of a file",
        input_schema={
            "type": "object",
            "properties": {"path": {**_PATH, "description": "File path to read"}},
            "required": ["path"],
            "additionalProperties": False,
        },
    ),
    types.Tool(
        name="write_file",
        description="Write a file (created or replaced), creating parent directories",
        input_schema={
            "type": "object",
            "properties": {
                "path": {**_PATH, "description": "File path to write"},
                "content": {"type": "string", "description": "The text to write (UTF-8)"},
            },
            "required": ["path", "content"],
            "additionalProperties": False,
        },
    ),
    types.Tool(
        name="list_directory",
        description="List a directory's entries (name, type, size)",
        input_schema={
            "type": "object",
            "properties": {"path": {**_PATH, "description": "Directory path (default: root)"}},
            "additionalProperties": False,
        },
    ),
]


class FilesystemServer:
    """The server: one :class:`Tree` per workspace (``root/<workspace id>``), or one tree
    shared by every workspace allowed to use it when ``per_workspace`` is off."""

    available = True

    def __init__(
        self, spec: ServerSpec, root: str, max_bytes: int, *, per_workspace: bool = True
    ) -> None:
        self.spec, self.max_bytes, self.per_workspace = spec, max_bytes, per_workspace
        self.root_path = Path(root)
        self._trees: dict[int, Tree] = {}
        template = types.ResourceTemplate(
            name="file",
            uri_template="filesystem://{path}",
            description="A file under the root, by path",
        )
        self._catalogue = Catalogue(tools=list(TOOLS), templates=[template])

    def tree(self, workspace_id: int) -> Tree:
        """The caller's tree: a workspace never reaches another's files."""
        slot = workspace_id if self.per_workspace else 0
        tree = self._trees.get(slot)
        if tree is None:
            path = self.root_path / str(workspace_id) if self.per_workspace else self.root_path
            tree = self._trees[slot] = Tree(path, self.max_bytes)
        return tree

    async def catalogue(self) -> Catalogue:
        return self._catalogue

    def cached(self) -> Catalogue:
        return self._catalogue

    async def call(
        self, tool: str, arguments: Mapping[str, Any], caller: Caller, seconds: float
    ) -> ToolResult:
        tree = self.tree(caller.workspace_id)
        if tool == "read_file":
            return structured(tree.read_file(str(arguments["path"])))
        if tool == "write_file":
            return structured(tree.write_file(str(arguments["path"]), str(arguments["content"])))
        return structured(tree.list_directory(str(arguments.get("path", "/"))))

    async def read(self, uri: str, caller: Caller, seconds: float) -> types.ReadResourceResult:
        path = uri.split("://", 1)[1] if "://" in uri else uri
        found = self.tree(caller.workspace_id).read_file(path)
        contents: types.TextResourceContents | types.BlobResourceContents
        if found.get("encoding") == "base64":
            contents = types.BlobResourceContents(uri=uri, blob=found["content"])
        else:
            contents = types.TextResourceContents(
                uri=uri, text=found["content"], mime_type="text/plain"
            )
        return types.ReadResourceResult(contents=[contents])

    async def close(self) -> None:
        return None


class Tree:
    """One directory tree: every path is confined below ``root``."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root_path, self.max_bytes = root, max_bytes
        self._root: Path | None = None

    @property
    def root(self) -> Path:
        if self._root is None:  # created on first use, not at import or start-up
            self.root_path.mkdir(parents=True, exist_ok=True)
            self._root = self.root_path.resolve(strict=True)
        return self._root

    def resolve(self, raw: str, *, must_exist: bool) -> Path:
        """The absolute path of ``raw`` under the root, or ToolRefused.

        The root is resolved once; below it, only the directories on the way are
        checked (one ``lstat`` each) and a symlink among them sends the path through a
        full ``realpath``. The last component is opened with ``O_NOFOLLOW`` by the
        callers, so a symlink there is resolved and checked by :meth:`_follow`."""
        if "\x00" in raw:
            raise ToolRefused("path", "The path may not contain NUL characters.")
        parts = [p for p in raw.replace("\\", "/").split("/") if p not in ("", ".")]
        if ".." in parts:
            raise ToolRefused("path", "The path may not contain '..' components.")
        root = self.root
        path = root.joinpath(*parts)
        current = str(root)
        for part in parts[:-1]:
            current = os.path.join(current, part)
            try:
                mode = os.lstat(current).st_mode
            except FileNotFoundError:
                if must_exist:
                    raise ToolRefused("path", f"No such file or directory: {raw}") from None
                return path  # created below a checked directory by write_file
            except OSError:
                raise ToolRefused("path", f"The path cannot be resolved: {raw}") from None
            if stat.S_ISLNK(mode):
                return self._follow(path, raw, must_exist)
        return path

    def _follow(self, path: Path, raw: str, must_exist: bool) -> Path:
        """A path with a symlink in it: fully resolved, and refused outside the root."""
        try:
            resolved = path.resolve(strict=must_exist)
        except FileNotFoundError:
            raise ToolRefused("path", f"No such file or directory: {raw}") from None
        except (OSError, RuntimeError):  # a symlink loop
            raise ToolRefused("path", f"The path cannot be resolved: {raw}") from None
        if resolved != self.root and not resolved.is_relative_to(self.root):
            raise ToolRefused("path", "The path resolves outside the server's root directory.")
        return resolved

    def relative(self, path: Path) -> str:
        return "/" + path.relative_to(self.root).as_posix() if path != self.root else "/"

    def _open(self, path: Path, flags: int, raw: str) -> tuple[int, Path]:
        """Open without following a final symlink; a symlink there is resolved, checked
        against the root, and its target opened the same way."""
        flags |= os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            return os.open(path, flags, 0o644), path
        except IsADirectoryError:
            raise ToolRefused("path", "The path is a directory.") from None
        except FileNotFoundError:
            raise ToolRefused("path", "No such file.") from None
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise ToolRefused("path", f"The file cannot be opened: {exc.strerror}.") from None
        target = self._follow(path, raw, must_exist=True)
        try:
            return os.open(target, flags, 0o644), target
        except OSError as exc:  # a symlink swapped in after the check
            raise ToolRefused("path", f"The file cannot be opened: {exc.strerror}.") from None

    def read_file(self, raw: str) -> dict[str, Any]:
        fd, path = self._open(self.resolve(raw, must_exist=True), os.O_RDONLY, raw)
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ToolRefused("path", "The path is not a regular file.")
            if info.st_size > self.max_bytes:
                raise ToolRefused("path", f"The file is larger than {self.max_bytes} bytes.")
            data = handle.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise ToolRefused("path", f"The file is larger than {self.max_bytes} bytes.")
        result: dict[str, Any] = {"path": self.relative(path), "size": len(data)}
        try:
            result["content"] = data.decode()
        except UnicodeDecodeError:
            result["content"], result["encoding"] = base64.b64encode(data).decode(), "base64"
        return result

    def write_file(self, raw: str, content: str) -> dict[str, Any]:
        data = content.encode()
        if len(data) > self.max_bytes:
            raise ToolRefused("content", f"The content is larger than {self.max_bytes} bytes.")
        target = self.resolve(raw, must_exist=False)
        if target == self.root:
            raise ToolRefused("path", "The path names the root directory.")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file where a directory should be
            raise ToolRefused("path", f"The directory cannot be made: {exc.strerror}.") from None
        target = self.resolve(raw, must_exist=True)  # what was made or found: still no link out
        fd, target = self._open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, raw)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return {"path": self.relative(target), "size": len(data), "written": True}

    def list_directory(self, raw: str) -> dict[str, Any]:
        path = self.resolve(raw, must_exist=True)
        if not os.path.lexists(path):
            raise ToolRefused("path", f"No such file or directory: {raw}")
        if os.path.islink(path):
            path = self._follow(path, raw, must_exist=True)
        if not path.is_dir():
            raise ToolRefused("path", "The path is not a directory.")
        entries = []
        with os.scandir(path) as found:
            for entry in sorted(found, key=lambda e: e.name)[:MAX_ENTRIES]:
                kind = (
                    "symlink" if entry.is_symlink() else "directory" if entry.is_dir() else "file"
                )
                size = entry.stat(follow_symlinks=False).st_size if kind == "file" else None
                entries.append({"name": entry.name, "type": kind, "size": size})
        return {"path": self.relative(path), "entries": entries}
