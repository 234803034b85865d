"""The bare-client baseline for the webhook delivery benchmark.

A loop of aiohttp (the client library the delivery transport uses) posting the same
bodies, with the same header sizes, to the same loopback receiver, over keep-alive
connections, and nothing else: no database, no signing, no SSRF guard. The webhook
delivery benchmark divides its deliveries/s by this figure, measured in the same run.

Usage::

    python -m benchmarks.webhook_baseline [--seconds 3] [--concurrency 64] [--body-bytes 400]
    python -m benchmarks.webhook_baseline --serve PORT   # the receiver alone

From Python (the receiver runs in its own process, so it competes with the client for
the CPU the same way in both measurements)::

    from benchmarks.webhook_baseline import bare_loop, receiver_process, sample_bodies

    with receiver_process() as receiver:
        result = bare_loop(receiver.url, sample_bodies(1000), concurrency=64, seconds=3)
        print(result["per_second"], receiver.count())

The receiver answers ``POST`` on any path with 200 and a 2-byte body, and
``GET /_count`` with the number of POSTs it has received (``DELETE /_count`` resets it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks import common

# Header values as long as real ones (signing is the delivery's own work, not the wire's).
STATIC_HEADERS = {
    "Content-Type": "application/json",
    "webhook-id": "evt_" + "0" * 26,
    "webhook-timestamp": "1750000000",
    "webhook-signature": "v1," + "A" * 43 + "=",
}


# --------------------------------------------------------------------------- receiver


def serve(port: int) -> None:
    """Run the receiver on 127.0.0.1:``port`` until killed (uvloop when installed)."""
    from aiohttp import web

    received = 0

    async def post(request: web.Request) -> web.Response:
        nonlocal received
        await request.read()
        received += 1
        return web.Response(body=b"ok")

    async def count(request: web.Request) -> web.Response:
        nonlocal received
        if request.method == "DELETE":
            received = 0
        return web.Response(text=str(received))

    app = web.Application()
    app.router.add_route("GET", "/_count", count)
    app.router.add_route("DELETE", "/_count", count)
    app.router.add_route("POST", "/{tail:.*}", post)
    loop = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop = uvloop.new_event_loop()
    web.run_app(app, host=common.HOST, port=port, access_log=None, print=None, loop=loop)


@dataclass
class Receiver:
    url: str
    pid: int

    def count(self) -> int:
        """POSTs received so far."""
        with urllib.request.urlopen(self.url + "_count", timeout=5) as r:  # loopback only
            return int(r.read())

    def reset(self) -> None:
        request = urllib.request.Request(self.url + "_count", method="DELETE")
        with urllib.request.urlopen(request, timeout=5):
            pass


@contextlib.contextmanager
def receiver_process(port: int | None = None) -> Iterator[Receiver]:
    """The receiver in a child process; yields once it accepts connections."""
    port = port or common.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.webhook_baseline", "--serve", str(port)],
        cwd=str(common.ROOT),
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection((common.HOST, port), 0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"webhook receiver did not start (exit {proc.poll()})")
            time.sleep(0.05)
        yield Receiver(f"http://{common.HOST}:{port}/", proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- client


def sample_bodies(n: int, size: int = 400) -> list[bytes]:
    """``n`` distinct event envelopes of about ``size`` bytes (JSON)."""
    bodies = []
    for i in range(n):
        envelope: dict[str, Any] = {
            "id": f"evt_{i:026d}",
            "type": "post.created",
            "timestamp": "2026-01-01T00:00:00Z",
            "workspace_id": "ws_1",
            "data": {"id": i, "title": ""},
        }
        pad = max(0, size - len(json.dumps(envelope, separators=(",", ":"))))
        envelope["data"]["title"] = "x" * pad
        bodies.append(json.dumps(envelope, separators=(",", ":")).encode())
    return bodies


async def _bare_loop(
    url: str,
    bodies: Sequence[bytes],
    concurrency: int,
    seconds: float | None,
    total: int | None,
    client: str,
) -> dict[str, Any]:
    import aiohttp

    sent = errors = 0
    deadline = None if seconds is None else time.perf_counter() + seconds

    async def worker(session: aiohttp.ClientSession, start: int) -> None:
        nonlocal sent, errors
        i = start
        while (total is None or sent + errors < total) and (
            deadline is None or time.perf_counter() < deadline
        ):
            body = bodies[i % len(bodies)]
            i += concurrency
            try:
                async with session.post(url, data=body, headers=STATIC_HEADERS) as response:
                    await response.read()
                    if 200 <= response.status < 300:
                        sent += 1
                    else:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1

    async def via_transport(transport: Any, start: int) -> None:
        nonlocal sent, errors
        i = start
        while (total is None or sent + errors < total) and (
            deadline is None or time.perf_counter() < deadline
        ):
            body = bodies[i % len(bodies)]
            i += concurrency
            outcome = await transport.post(url, dict(STATIC_HEADERS), body, 15)
            if outcome.ok:
                sent += 1
            else:
                errors += 1

    started = time.perf_counter()
    if client == "transport":
        from core_api.config import Settings
        from core_api.webhooks.transport import Transport

        # Loopback needs private networks allowed: the URL is still checked per post.
        settings = Settings(webhook_allow_private_networks=True, webhook_require_https=False)
        transport = Transport(settings, max_connections=concurrency, per_host=concurrency)
        try:
            started = time.perf_counter()
            deadline = None if seconds is None else started + seconds
            await asyncio.gather(*(via_transport(transport, k) for k in range(concurrency)))
        finally:
            elapsed = time.perf_counter() - started
            await transport.close()
    else:
        connector = aiohttp.TCPConnector(limit=concurrency)
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            started = time.perf_counter()
            deadline = None if seconds is None else started + seconds
            await asyncio.gather(*(worker(session, k) for k in range(concurrency)))
            elapsed = time.perf_counter() - started
    return {
        "posts": sent,
        "errors": errors,
        "seconds": round(elapsed, 3),
        "per_second": round(sent / elapsed, 1) if elapsed > 0 else 0.0,
        "concurrency": concurrency,
        "client": client,
        "body_bytes": round(sum(map(len, bodies)) / len(bodies)),
    }


def bare_loop(
    url: str,
    bodies: Sequence[bytes],
    *,
    concurrency: int = 64,
    seconds: float | None = 3.0,
    total: int | None = None,
    loop: str = "asyncio",
    client: str = "aiohttp",
) -> dict[str, Any]:
    """POST ``bodies`` round-robin to ``url`` from ``concurrency`` tasks on one event loop
    in this process, for ``seconds`` or until ``total`` responses; ``loop`` is
    ``asyncio`` (what ``core-api worker`` runs) or ``uvloop``. ``client="transport"``
    posts through core_api's webhook Transport instead of a bare session (its cost)."""
    if seconds is None and total is None:
        raise ValueError("give seconds or total")
    run = _bare_loop(url, bodies, concurrency, seconds, total, client)
    if loop == "uvloop":
        import uvloop

        return uvloop.run(run)
    return asyncio.run(run)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=int, metavar="PORT", help="run only the receiver")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--body-bytes", type=int, default=400)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument(
        "--client",
        choices=("aiohttp", "transport"),
        default="aiohttp",
        help="a bare aiohttp session (the baseline) or core_api's webhook Transport",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    opts = parser.parse_args(argv)
    if opts.serve:
        serve(opts.serve)
        return 0
    load_before = os.getloadavg()
    with receiver_process() as receiver:
        result = bare_loop(
            receiver.url,
            sample_bodies(1000, opts.body_bytes),
            concurrency=opts.concurrency,
            seconds=opts.seconds,
            loop=opts.loop,
            client=opts.client,
        )
        result["received"] = receiver.count()
    result = {**common.report_header("webhook_baseline", load_before), **result}
    if opts.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{opts.client} loop: {result['per_second']:,.0f} posts/s "
            f"({result['posts']} in {result['seconds']} s, {result['errors']} errors, "
            f"concurrency {result['concurrency']}, {result['body_bytes']} B bodies, "
            f"{opts.loop}; receiver counted {result['received']})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
