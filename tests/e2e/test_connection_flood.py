"""Connection flood through real Granian: one client holding thousands of idle and slow
connections does not stop the service answering everyone else, and slow bodies end.

One worker (the harder case). The idle sockets send a request head without its blank
line; the slow ones are valid, authorised POSTs that declare 100 bytes and send 9.
Sockets are opened one after another (a connect completes in the kernel's backlog), so
that what is tested is the server holding them, not the listen queue overflowing.
"""

from __future__ import annotations

import contextlib
import json
import resource
import selectors
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support import Launcher, Server, core_api_command, sqlite_env

pytestmark = pytest.mark.e2e

IDLE, SLOW = 5000, 1000
BODY_TIMEOUT = 8  # seconds; the slow bodies are all still held while we probe
IDLE_HEAD = b"GET / HTTP/1.1\r\nHost: x\r\n"
SLOW_REQUEST = (
    "POST /api/v1/workspaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
    'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"name":'
)


def raise_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < needed:
        pytest.skip(f"needs {needed} open files; the hard limit is {hard}")


@contextlib.contextmanager
def held(port: int, head: bytes, count: int) -> Iterator[list[socket.socket]]:
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sockets.append(sock)
            sock.sendall(head)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def answered(sockets: list[socket.socket], wait: float) -> dict[socket.socket, bytes]:
    """The sockets on which the server answered or hung up within ``wait`` seconds, with
    the first bytes it sent (b"" for a hang-up)."""
    found: dict[socket.socket, bytes] = {}
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ, sock)
        deadline = time.monotonic() + wait
        while len(found) < len(sockets):
            ready = selector.select(max(0.0, deadline - time.monotonic()))
            for key, _ in ready:
                sock = key.data
                with contextlib.suppress(OSError):
                    found[sock] = sock.recv(64)
                found.setdefault(sock, b"")
                selector.unregister(sock)
            if not ready and time.monotonic() >= deadline:
                break
    return found


def hung_up(sock: socket.socket) -> bool:
    """Whether the server closes the connection (after what it still had to send)."""
    sock.settimeout(5)
    try:
        while sock.recv(65536):
            pass
    except OSError:
        return False
    return True


def enterprise_key(env: dict[str, str], cwd: Path) -> str:
    """A key whose budget (100,000/min) lets every slow POST through to the body read."""
    done = subprocess.run(
        [*core_api_command(), "bootstrap", "--name", "flood", "--tier", "enterprise"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return str(json.loads(done.stdout)["api_key"]["key"])


def probe(server: Server, path: str = "/health", key: str | None = None) -> float:
    """Seconds for one request on a new connection; fails the test if it is not a 200."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    started = time.monotonic()
    response = httpx.get(f"{server.base}{path}", headers=headers, timeout=5.0)
    assert response.status_code == 200, response.text
    return time.monotonic() - started


def test_service_answers_while_one_client_holds_idle_and_slow_connections(
    launcher: Launcher, tmp_path: Path
) -> None:
    raise_nofile(IDLE + SLOW + 1000)
    env = sqlite_env(tmp_path)
    env["CORE_API_BODY_READ_TIMEOUT"] = str(BODY_TIMEOUT)
    env["CORE_API_HEADER_READ_TIMEOUT"] = "60"  # the idle sockets stay held all along
    key = enterprise_key(env, tmp_path)
    server = launcher.start(env, 1)
    slow_head = SLOW_REQUEST.format(key=key).encode()
    with held(server.port, IDLE_HEAD, IDLE) as idle, held(server.port, slow_head, SLOW) as slow:
        sent = time.monotonic()
        latencies = [probe(server) for _ in range(5)]
        latencies.append(probe(server, "/api/v1/workspaces", key))
        # Everything was held meanwhile: no idle socket dropped, no slow body answered.
        assert answered(idle + slow, 0) == {}
        assert max(latencies) < 1.0, latencies  # liveness, not performance

        # Each slow body ends with a 408 and a closed connection, after the body timeout.
        assert answered(slow, BODY_TIMEOUT - 2 - (time.monotonic() - sent)) == {}
        ended = answered(slow, 20)
        assert len(ended) == SLOW
        assert {head[:12] for head in ended.values()} == {b"HTTP/1.1 408"}
        assert all(hung_up(sock) for sock in ended)
        assert probe(server) < 1.0
