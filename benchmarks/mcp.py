"""The MCP gateway on one worker (SQLite store), in tool calls per second.

| target  | what                                                                     |
|---------|--------------------------------------------------------------------------|
| builtin | POST /api/v1/mcp/tools/call, filesystem read_file (wrk)  -- >= 1,000/s   |
| stdio   | the same to the external stdio echo server (tests/mcp/echo_server.py)    |
| jsonrpc | the same built-in call as a raw 2026-07-28 tools/call POST to /api/v1/mcp (wrk) |
| sdk     | /api/v1/mcp tools/call through the SDK's Client (2026-07-28), N in flight |
| baseline| bare Falcon returning a fixed JSON body, same machine and run, for scale  |

Every call is validated, rate-limited, audited and metered (audit rows are written in
batches; the workspace has no webhook endpoint, so no mcp.tool.executed events). For
comparison, IBM ContextForge publishes about 250-400 MCP requests/s per pod with 16-24
workers.

Usage::

    python -m benchmarks.mcp [--seconds 5] [--connections 32] [--sdk-concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from . import common, endpoints
from .common import BENCH_TIER, HOST
from .endpoints import Target, wrk

ECHO = common.ROOT / "tests" / "mcp" / "echo_server.py"
CONTEXTFORGE = "250-400 MCP requests/s per pod (16-24 workers), IBM ContextForge docs"


def registry(root: Path) -> str:
    return (
        f'[builtin.filesystem]\nroot = "{root}"\nper_workspace = false\n\n'
        f'[[servers]]\nid = "echo"\nname = "Echo"\n[servers.transport]\ntype = "stdio"\n'
        f'command = "{sys.executable}"\nargs = ["{ECHO}"]\n'
    )


def lua(path: Path, body: dict[str, Any]) -> Path:
    text = json.dumps(json.dumps(body))  # a Lua-compatible double-quoted string literal
    path.write_text(
        f'wrk.method = "POST"\nwrk.body = {text}\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    return path


async def sdk_calls(port: int, key: str, seconds: float, concurrency: int) -> dict[str, Any]:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    from mcp import Client

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30)
    url = f"http://{HOST}:{port}/api/v1/mcp"
    transport = streamable_http_client(url, http_client=http)
    done = errors = 0
    async with Client(transport, mode="2026-07-28", cache=None) as client:
        await client.list_tools()
        stop = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal done, errors
            while time.monotonic() < stop:
                result = await client.call_tool("filesystem__read_file", {"path": "hello.txt"})
                done += 1
                errors += bool(result.is_error)

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    await http.aclose()
    return {"rps": done / elapsed, "calls": done, "errors": errors}


def run(args: Any) -> dict[str, Any]:
    load_before = os.getloadavg()
    with common.workdir("core-api-mcp-") as workdir, contextlib.ExitStack() as stack:
        root = workdir / "files"
        root.mkdir()
        (root / "hello.txt").write_text("hello from the gateway\n")
        (workdir / "mcp.toml").write_text(registry(root))
        store = common.sqlite_store(workdir)
        stack.callback(store.close)
        store.env["CORE_API_MCP_CONFIG"] = str(workdir / "mcp.toml")
        creds = common.bootstrap(store.env, "MCP bench", BENCH_TIER)
        auth = {"Authorization": f"Bearer {creds.key}"}
        server = common.service_server(store, workdir, workers=1)
        server.start()
        stack.callback(server.stop)
        server.wait_ready("/api/v1/mcp/servers/echo/tools", auth, timeout=60)
        call = "/api/v1/mcp/tools/call"
        builtin = {"server": "filesystem", "tool": "read_file", "arguments": {"path": "hello.txt"}}
        echo = {"server": "echo", "tool": "echo", "arguments": {"message": "hi"}}
        results: dict[str, Any] = {}
        rpc = {
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "filesystem__read_file", "arguments": {"path": "hello.txt"},
                       "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                 "io.modelcontextprotocol/clientCapabilities": {}}},
        }  # fmt: skip
        rpc_headers = {
            **auth, "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call",
            "Mcp-Name": "filesystem__read_file",
        }  # fmt: skip
        baseline = common.baseline_server(workdir)
        baseline.start()
        stack.callback(baseline.stop)
        baseline.wait_ready("/api/v1/workspaces/1", {})
        common.log("[mcp] baseline")
        base = Target("baseline", baseline, "/api/v1/workspaces/1")
        wrk(base, 1, args.connections)
        results["baseline"] = wrk(base, args.seconds, args.connections)
        for name, path, headers, body in (
            ("builtin", call, auth, builtin),
            ("stdio", call, auth, echo),
            ("jsonrpc", "/api/v1/mcp", rpc_headers, rpc),
        ):
            target = Target(name, server, path, headers, script=["-"])
            common.log(f"[mcp] {name}")
            saved, endpoints.LUA = endpoints.LUA, lua(workdir / f"{name}.lua", body)
            try:
                wrk(target, 1, args.connections)  # warm-up
                results[name] = wrk(target, args.seconds, args.connections)
            finally:
                endpoints.LUA = saved
        common.log("[mcp] sdk")
        results["sdk"] = asyncio.run(
            sdk_calls(server.port, creds.key, args.seconds, args.sdk_concurrency)
        )
    return {
        **common.report_header("mcp", load_before),
        "settings": {"seconds": args.seconds, "connections": args.connections, "workers": 1,
                     "store": "sqlite", "sdk_concurrency": args.sdk_concurrency},
        "targets": results,
        "reference": CONTEXTFORGE,
        "verdicts": [{"figure": "builtin calls/s (1 worker)",
                      "value": round(results["builtin"]["rps"]), "budget": ">= 1000",
                      "pass": results["builtin"]["rps"] >= 1000},
                     {"figure": "builtin / bare Falcon",
                      "value": round(results["builtin"]["rps"] / results["baseline"]["rps"], 3),
                      "budget": "", "pass": True}],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.mcp", description=__doc__)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--sdk-concurrency", type=int, default=16)
    args = p.parse_args(argv)
    report = run(args)
    path = common.write_json(f"mcp-{report['timestamp']}.json", report)
    print("\nMCP gateway (1 worker, SQLite; every call validated, audited, metered)")
    for name, t in report["targets"].items():
        errors = t.get("non_2xx", 0) + t.get("socket_errors", 0) + t.get("errors", 0)
        print(f"{name:<8} {t['rps']:>8.0f} calls/s  errors {errors}")
    print(f"reference: {CONTEXTFORGE}")
    for v in report["verdicts"]:
        print(
            f"  {v['figure']:<28} {v['value']:>7} {v['budget']} {'PASS' if v['pass'] else 'MISS'}"
        )
    print(f"results: {path}")
    return report


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
