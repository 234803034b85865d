"""Header injection and request-size limits over raw TCP, against `core-api serve` (one
Granian worker): what a client can put on the wire, not what an HTTP library lets it.

- CR, LF, NUL and obsolete line folding in header values that the service echoes into
  response headers (``X-Request-ID``; ``Origin`` in the pixel CORS answers) never produce
  an injected response header: the server refuses the request (400), or a bare LF ends the
  line (the rest is another request header) and CRLF CRLF ends the head.
- Percent-encoded CRLF in the path stays in the path.
- The request head (URL and headers) is bounded: 414 for a URL over 64 KiB, 431 for a head
  well over ``CORE_API_HTTP1_BUFFER_SIZE`` (64 KiB) or too many large headers. The server
  answers the next request as before.

Bodies (413, also chunked), slow heads and bodies, and idle connections: see
tests/e2e/test_e2e.py (request bodies over real HTTP) and
tests/e2e/test_connection_flood.py. JSON depth, NUL and integer bounds: tests/web/.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest

from support import Launcher, Server, sqlite_env

pytestmark = pytest.mark.e2e

HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module: every case here leaves it as it found it."""
    tmp = tmp_path_factory.mktemp("http-edges")
    launch = Launcher(tmp)
    try:
        yield launch.start(sqlite_env(tmp), 1)
    finally:
        launch.stop_all()


def exchange(server: Server, data: bytes) -> bytes:
    """Send ``data`` (a whole request) on a fresh connection; everything the server sent
    back before closing it."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        # Refused while we still sent: whatever it answered is read below.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.sendall(data)
        chunks = []
        while True:
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def head_of(response: bytes) -> tuple[int, dict[str, list[str]]]:
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines = head.split("\r\n")
    status = int(lines[0].split(" ")[1])
    fields: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields.setdefault(name.strip().lower(), []).append(value.strip())
    return status, fields


def still_serving(server: Server) -> None:
    status, _ = head_of(exchange(server, HEALTH + b"\r\n"))
    assert status == 200


INJECTIONS = {
    "obs-fold": b"abc\r\n Set-Cookie: injected=1",
    "bare CR": b"abc\rSet-Cookie: injected=1",
    "NUL": b"abc\x00Set-Cookie: injected=1",
    "bare LF": b"abc\nSet-Cookie: injected=1",
    "CR LF CR LF": b"abc\r\n\r\nHTTP/1.1 200 OK\r\nSet-Cookie: injected=1",
}


@pytest.mark.parametrize("value", INJECTIONS.values(), ids=INJECTIONS.keys())
@pytest.mark.parametrize(
    ("request_line", "header"),
    [
        (b"GET /health", b"X-Request-ID"),
        (b"GET /api/v1/workspaces", b"X-Request-ID"),  # a 401 with the error body
        (b"OPTIONS /api/v1/pixel/track", b"Origin"),  # CORS preflight echoes Origin
        (b"GET /api/v1/pixel/config", b"Origin"),
        (b"POST /api/v1/pixel/track", b"Origin"),
    ],
)
def test_no_header_injection(
    server: Server, request_line: bytes, header: bytes, value: bytes
) -> None:
    request = (
        request_line + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n"
        + header + b": " + value + b"\r\n\r\n"
    )  # fmt: skip
    response = exchange(server, request)
    assert response, "no answer"
    status, fields = head_of(response)
    assert "set-cookie" not in fields, response[:500]
    assert response.count(b"HTTP/1.1 ") == 1  # no second, injected response
    for values in fields.values():
        for v in values:
            assert "injected" not in v and "\r" not in v and "\n" not in v
    if value in (INJECTIONS["bare LF"], INJECTIONS["CR LF CR LF"]):
        # The line (or the head) ends there: the rest is another header, or bytes after a
        # request on a connection that closes; the echoed value is what came before.
        if header == b"X-Request-ID":
            assert fields["x-request-id"] == ["abc"]
    else:
        assert status == 400, response[:300]
    still_serving(server)


def test_percent_encoded_crlf_stays_in_the_path(server: Server) -> None:
    response = exchange(
        server, b"GET /api/v1/nope%0d%0aSet-Cookie:%20injected=1 HTTP/1.1\r\nHost: x\r\n"
        b"Connection: close\r\n\r\n"
    )  # fmt: skip
    status, fields = head_of(response)
    assert status == 404 and "set-cookie" not in fields


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /health?x=" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (HEALTH + b"X-Big: " + b"a" * 256 * 1024 + b"\r\n\r\n", 431),
        (HEALTH + b"X-Big: " + b"a" * 4 * 1024 * 1024 + b"\r\n\r\n", 431),
        (HEALTH + b"".join(b"X-H%d: %s\r\n" % (i, b"a" * 20_000) for i in range(10)) + b"\r\n", 431),  # noqa: E501
        (HEALTH + b"".join(b"X-H%d: v\r\n" % i for i in range(500)) + b"\r\n", 431),
    ],
    ids=["url-70KiB", "header-256KiB", "header-4MiB", "10-headers-of-20KiB", "500-headers"],
)  # fmt: skip
def test_request_heads_are_bounded(server: Server, raw: bytes, status: int) -> None:
    response = exchange(server, raw)
    assert head_of(response)[0] == status, response[:200]
    still_serving(server)


def test_a_head_within_the_buffer_is_served(server: Server) -> None:
    response = exchange(server, HEALTH + b"X-Big: " + b"a" * 32 * 1024 + b"\r\n\r\n")
    assert head_of(response)[0] == 200
