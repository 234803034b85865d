"""The floor of any Python ASGI answer to ``POST /api/v1/pixel/track`` on Granian: read
the body, send the same status, body and header set as the fast path (fixed values),
nothing else. ``benchmarks/pixel.py`` measures it beside bare Falcon's GET, so the report
shows how much of the gap to the GET baseline a POST with a body costs before any work.
"""

from __future__ import annotations

from typing import Any

_BODY = b'{"tracked":true}'
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", b"16"),
    (b"access-control-allow-origin", b"https://bench.example"),
    (b"vary", b"Origin"),
    (b"cache-control", b"no-store"),
    (b"x-ratelimit-limit", b"1000000000"),
    (b"x-ratelimit-remaining", b"999999999"),
    (b"x-ratelimit-reset", b"1767225601"),
    (b"ratelimit-policy", b'"pixel";q=1000000000;w=60'),
    (b"ratelimit", b'"pixel";r=999999999;t=1'),
    (b"x-request-id", b"req_000000000000000000000001"),
]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})
