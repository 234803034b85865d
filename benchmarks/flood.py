"""Connection flood: does ``/health`` keep answering while one client holds many idle or
slow connections?

Opens ``--idle`` sockets that send only a partial request head (``GET / HTTP/1.1`` and a
``Host`` line, never the blank line) and ``--slow`` POSTs that declare a body of 100 bytes
and send 9. Give ``--key`` a valid key whose tier admits that many requests (for example
``core-api bootstrap --name flood --tier enterprise``); without one, the service answers
the POSTs 401 as soon as their head arrives. While the sockets are held, a separate thread
probes ``/health`` on fresh connections. At the end it reports the probe latencies, how
many idle sockets the server dropped (header read timeout) and how the slow bodies ended
(408 after the body read timeout). ``--reopen`` reopens dropped idle sockets, as an
attacker would.

Run it only against a server you operate. Every count and duration is bounded::

    python benchmarks/flood.py --port 8000 --idle 5000 --slow 1000 --key sk_live_... --hold 40

Exit status 1 when a probe failed or took longer than ``--max-latency``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import socket
import sys
import threading
import time
from dataclasses import dataclass, field

IDLE_HEAD = b"GET / HTTP/1.1\r\nHost: x\r\n"  # no blank line: the head never completes
SLOW_HEAD = (
    "POST /api/v1/workspaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
    "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
)
SLOW_BODY = b'{"name":"'  # 9 bytes of the declared 100
CONNECTS_IN_FLIGHT = 100  # so that the listen backlog is not what is measured


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit: each held socket is a descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class Flood:
    host: str
    port: int
    key: str | None
    opened: int = 0
    connect_failures: int = 0
    idle_dropped: int = 0
    slow: dict[str, list[float]] = field(default_factory=dict)  # outcome -> seconds taken
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def _open(
        self, gate: asyncio.Semaphore, head: bytes
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        async with gate:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), 10
                )
                writer.write(head)
                await writer.drain()
            except (OSError, TimeoutError):
                self.connect_failures += 1
                return None
        self.opened += 1
        self.writers.append(writer)
        return reader, writer

    async def idle(self, gate: asyncio.Semaphore, stop: asyncio.Event, reopen: bool) -> None:
        while not stop.is_set():
            opened = await self._open(gate, IDLE_HEAD)
            if opened is None:
                return
            with contextlib.suppress(OSError):
                await opened[0].read()  # returns when the server drops the socket
            if stop.is_set():
                return
            self.idle_dropped += 1
            if not reopen:
                return

    async def slow_body(self, gate: asyncio.Semaphore) -> None:
        head = SLOW_HEAD.format(key=self.key or "none").encode() + SLOW_BODY
        opened = await self._open(gate, head)
        if opened is None:
            return
        sent, line = time.monotonic(), b""
        with contextlib.suppress(OSError):
            line = await opened[0].readline()
        parts = line.split() if line.startswith(b"HTTP/") else []
        outcome = parts[1].decode() if len(parts) > 1 else "closed"
        self.slow.setdefault(outcome, []).append(time.monotonic() - sent)

    def abort_all(self) -> None:
        for writer in self.writers:
            writer.transport.abort()


def probe(host: str, port: int, timeout: float) -> float:
    """Seconds for one ``GET /health`` on a fresh connection (``inf`` when it failed)."""
    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            status = sock.recv(64)
    except OSError:
        return float("inf")
    return time.monotonic() - started if status.startswith(b"HTTP/1.1 200") else float("inf")


def probe_until(stop: threading.Event, args: argparse.Namespace, out: list[float]) -> None:
    while not stop.wait(args.probe_interval):
        out.append(probe(args.host, args.port, args.max_latency * 5))


async def run(args: argparse.Namespace) -> dict[str, object]:
    flood = Flood(args.host, args.port, args.key)
    gate, stop = asyncio.Semaphore(CONNECTS_IN_FLIGHT), asyncio.Event()
    began = time.monotonic()
    tasks = [asyncio.create_task(flood.idle(gate, stop, args.reopen)) for _ in range(args.idle)]
    tasks += [asyncio.create_task(flood.slow_body(gate)) for _ in range(args.slow)]
    while flood.opened + flood.connect_failures < args.idle + args.slow:
        if time.monotonic() - began > 120:
            break
        await asyncio.sleep(0.05)
    opening = time.monotonic() - began
    # Probes run on their own thread, with blocking sockets: this loop's own work does
    # not delay them.
    latencies: list[float] = []
    probes_stop = threading.Event()
    prober = threading.Thread(target=probe_until, args=(probes_stop, args, latencies))
    prober.start()
    await asyncio.sleep(args.hold)
    probes_stop.set()
    await asyncio.to_thread(prober.join)
    stop.set()
    flood.abort_all()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    finite = sorted(x for x in latencies if x != float("inf"))
    return {
        "sockets_opened": flood.opened,
        "connect_failures": flood.connect_failures,
        "opening_s": round(opening, 2),
        "idle_dropped_by_server": flood.idle_dropped,
        "probes": len(latencies),
        "probe_failures": len(latencies) - len(finite),
        "probe_median_s": round(finite[len(finite) // 2], 3) if finite else None,
        "probe_max_s": round(max(latencies), 3) if latencies else None,
        "slow_bodies": {
            outcome: {"count": len(took), "after_s": [round(min(took), 1), round(max(took), 1)]}
            for outcome, took in flood.slow.items()
        },
        "slow_bodies_still_held": args.slow - sum(len(t) for t in flood.slow.values()),
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--idle", type=int, default=5000, help="partial-head sockets")
    parser.add_argument("--slow", type=int, default=1000, help="slow-body POSTs")
    parser.add_argument("--key", help="a valid API key for the slow POSTs")
    parser.add_argument("--hold", type=float, default=15.0, help="seconds to hold and probe")
    parser.add_argument("--probe-interval", type=float, default=0.25)
    parser.add_argument("--max-latency", type=float, default=1.0)
    parser.add_argument("--reopen", action="store_true", help="reopen dropped idle sockets")
    args = parser.parse_args(argv)
    if not 0 <= args.idle + args.slow <= 60_000 or not 0 < args.hold <= 600:
        parser.error("at most 60,000 sockets and 600 s")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    limit = raise_nofile()
    if limit < args.idle + args.slow + 64:
        print(f"RLIMIT_NOFILE is {limit}: too low for {args.idle + args.slow} sockets")
        return 2
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    failed = result["probe_failures"] or (result["probe_max_s"] or 0) > args.max_latency
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
