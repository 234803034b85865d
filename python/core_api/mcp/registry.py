"""The MCP server registry: ``CORE_API_MCP_CONFIG`` (TOML), read once at start-up.

Without a file, the two built-in servers (``filesystem`` under ``./data/mcp-files`` and
``core``) are enabled. ``${NAME}`` in a transport's ``env`` or ``headers`` values is
replaced by that environment variable, so tokens need not be written into the file.
Every mistake stops start-up with one :class:`~core_api.config.ConfigError` line naming
the entry (docs/mcp.md describes the format).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError

ID_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
BUILTIN = ("filesystem", "core")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class StdioTransport:
    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None


@dataclass(frozen=True, slots=True)
class HttpTransport:
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ServerSpec:
    id: str
    name: str
    description: str
    transport: StdioTransport | HttpTransport | None  # None: built in
    workspaces: frozenset[int] | None = None  # None: every workspace
    rate_limit: int = 0  # calls per minute per key on this server; 0 = none
    tool_limits: Mapping[str, int] = field(default_factory=dict)  # tool -> calls/minute/key
    resource_scheme: str | None = None  # upstream URI scheme for {id}://path (default: id)

    def allows_workspace(self, workspace_id: int) -> bool:
        return self.workspaces is None or workspace_id in self.workspaces


@dataclass(frozen=True, slots=True)
class Registry:
    servers: Mapping[str, ServerSpec]
    call_timeout: float = 30.0  # seconds, per tool call or resource read
    catalogue_ttl: float = 60.0  # seconds a server's tool/resource catalogue is reused
    connect_timeout: float = 10.0  # seconds to start or reach an upstream server
    audit_arguments: bool = False  # keep call arguments in the audit log
    allowed_origins: frozenset[str] = frozenset()  # for /api/v1/mcp (besides no Origin)
    filesystem_root: str = "data/mcp-files"
    filesystem_max_bytes: int = 1_048_576
    # One tree per workspace under the root (False: the root, shared by every workspace).
    filesystem_per_workspace: bool = True


def load_registry(path: str | None, env: Mapping[str, str] | None = None) -> Registry:
    env = os.environ if env is None else env
    if path is None:
        return _build({}, "defaults", env)
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"CORE_API_MCP_CONFIG: {path}: {exc}") from None
    return _build(data, path, env)


def _fail(where: str, why: str) -> ConfigError:
    return ConfigError(f"CORE_API_MCP_CONFIG {where}: {why}")


def _number(table: Mapping[str, Any], name: str, default: float, where: str, low: float) -> float:
    value = table.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
        raise _fail(where, f"{name} must be a number >= {low}")
    return float(value)


def _strings(value: Any, what: str, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _fail(where, f"{what} must be a table of strings")
    return dict(value)


def _expand(values: dict[str, str], env: Mapping[str, str], where: str) -> dict[str, str]:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise _fail(where, f"environment variable {name} is not set")
        return env[name]

    return {k: _ENV_REF.sub(one, v) for k, v in values.items()}


def _limit(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(where, "a rate limit is a whole number of calls per minute (0 = none)")
    return value


def _build(data: Mapping[str, Any], source: str, env: Mapping[str, str]) -> Registry:
    gateway = data.get("gateway", {})
    builtin = data.get("builtin", {})
    if not isinstance(gateway, dict) or not isinstance(builtin, dict):
        raise _fail(source, "[gateway] and [builtin] must be tables")
    origins = gateway.get("allowed_origins", [])
    if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
        raise _fail("[gateway]", "allowed_origins must be a list of origins")
    servers: dict[str, ServerSpec] = {}
    fs = builtin.get("filesystem", {})
    core = builtin.get("core", {})
    if fs.get("enabled", True):
        servers["filesystem"] = _spec(
            {"name": "Filesystem Server", "description": "File and directory operations", **fs},
            "filesystem",
            None,
        )
    if core.get("enabled", True):
        servers["core"] = _spec(
            {
                "name": "Core API",
                "description": "This service's own operations, under the caller's key",
                **core,
            },
            "core",
            None,
        )
    entries = data.get("servers", [])
    if not isinstance(entries, list):
        raise _fail(source, "[[servers]] must be an array of tables")
    for index, entry in enumerate(entries):
        where = f"servers[{index}]"
        if not isinstance(entry, dict):
            raise _fail(where, "must be a table")
        server_id = entry.get("id")
        if not isinstance(server_id, str) or not ID_PATTERN.match(server_id):
            raise _fail(where, "id must be lower-case letters, digits, - or _ (max 32)")
        if server_id in servers:
            raise _fail(where, f"duplicate server id {server_id!r}")
        servers[server_id] = _spec(entry, server_id, _transport(entry, where, env))
    return Registry(
        servers=servers,
        call_timeout=_number(gateway, "call_timeout_seconds", 30, "[gateway]", 0.01),
        catalogue_ttl=_number(gateway, "catalogue_ttl_seconds", 60, "[gateway]", 0),
        connect_timeout=_number(gateway, "connect_timeout_seconds", 10, "[gateway]", 0.1),
        audit_arguments=bool(gateway.get("audit_arguments", False)),
        allowed_origins=frozenset(o.rstrip("/") for o in origins),
        filesystem_root=str(fs.get("root", "data/mcp-files")),
        filesystem_max_bytes=int(
            _number(fs, "max_file_bytes", 1_048_576, "[builtin.filesystem]", 1)
        ),
        filesystem_per_workspace=_per_workspace(fs),
    )


def _per_workspace(fs: Mapping[str, Any]) -> bool:
    value = fs.get("per_workspace", True)
    if not isinstance(value, bool):
        raise _fail("[builtin.filesystem]", "per_workspace must be true or false")
    return value


def _spec(
    entry: Mapping[str, Any], server_id: str, transport: StdioTransport | HttpTransport | None
) -> ServerSpec:
    where = f"server {server_id!r}"
    workspaces = entry.get("workspaces", ["*"])
    allowed: frozenset[int] | None
    if workspaces == ["*"] or workspaces == "*":
        allowed = None
    elif isinstance(workspaces, list) and all(
        isinstance(w, int) and not isinstance(w, bool) for w in workspaces
    ):
        allowed = frozenset(workspaces)
    else:
        raise _fail(where, 'workspaces must be ["*"] or a list of workspace ids')
    tool_limits = entry.get("tool_limits", {})
    if not isinstance(tool_limits, dict):
        raise _fail(where, "tool_limits must be a table of tool = calls per minute")
    scheme = entry.get("resource_scheme")
    if scheme is not None and not isinstance(scheme, str):
        raise _fail(where, "resource_scheme must be a string")
    name, description = entry.get("name", server_id), entry.get("description", "")
    if not isinstance(name, str) or not isinstance(description, str):
        raise _fail(where, "name and description must be strings")
    return ServerSpec(
        id=server_id,
        name=name,
        description=description,
        transport=transport,
        workspaces=allowed,
        rate_limit=_limit(entry.get("rate_limit", 0), where),
        tool_limits={str(k): _limit(v, where) for k, v in tool_limits.items()},
        resource_scheme=scheme,
    )


def _transport(
    entry: Mapping[str, Any], where: str, env: Mapping[str, str]
) -> StdioTransport | HttpTransport:
    transport = entry.get("transport")
    if not isinstance(transport, dict):
        raise _fail(where, "needs a [servers.transport] table (type = stdio or http)")
    kind = transport.get("type")
    if kind == "stdio":
        command, args = transport.get("command"), transport.get("args", [])
        if not isinstance(command, str) or not command:
            raise _fail(where, "a stdio transport needs a command")
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise _fail(where, "args must be a list of strings")
        cwd = transport.get("cwd")
        if cwd is not None and not isinstance(cwd, str):
            raise _fail(where, "cwd must be a string")
        variables = _expand(_strings(transport.get("env", {}), "env", where), env, where)
        return StdioTransport(command, tuple(args), variables, cwd)
    if kind == "http":
        url = transport.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise _fail(where, "an http transport needs an http(s) url")
        headers = _expand(_strings(transport.get("headers", {}), "headers", where), env, where)
        return HttpTransport(url, headers)
    raise _fail(where, "transport type must be stdio or http")
