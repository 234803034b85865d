"""Upstream transports: a Streamable HTTP server (the echo server served by the SDK over
HTTP in its own process), and a stdio server's env from ${NAME} expansion."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from gwsupport import ECHO, call, fs_root, settings  # noqa: F401 - fixtures

from conftest import Api
from support import free_port


@pytest.fixture
def http_echo() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ECHO), "--http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # listening is enough: the gateway retries
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def mcp_extra(http_echo: int, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MCP_TEST_SECRET", "s3cret")
    return f"""
[[servers]]
id = "remote"
name = "Remote echo"
[servers.transport]
type = "http"
url = "http://127.0.0.1:{http_echo}/mcp"
headers = {{ Authorization = "Bearer ${{MCP_TEST_SECRET}}" }}

[[servers]]
id = "withenv"
[servers.transport]
type = "stdio"
command = "{sys.executable}"
args = ["{ECHO}"]
env = {{ ECHO_TOKEN = "${{MCP_TEST_SECRET}}" }}
"""


async def test_streamable_http_upstream(api: Api) -> None:
    r = await api.get("/api/v1/mcp/servers/remote")
    assert r.status == 200, r.json
    assert r.json["data"]["status"] == "available"
    assert r.json["data"]["transport"] == "http"
    r = await call(api, "remote", "echo", {"message": "over http", "times": 1})
    assert r.status == 200, r.json
    assert r.json["result"] == {"result": "over http"}
    r = await call(api, "remote", "echo", {"message": 1})
    assert r.status == 422
    pid = (await call(api, "remote", "pid", {})).json["result"]["result"]
    assert (await call(api, "remote", "pid", {})).json["result"]["result"] == pid


async def test_stdio_env_expansion(api: Api) -> None:
    r = await call(api, "withenv", "env", {"name": "ECHO_TOKEN"})
    assert r.status == 200, r.json
    assert r.json["result"] == {"result": "s3cret"}
