"""Pixel ingest benchmarks, one run, five parts (``--parts cpu,track,writer,rss,micro``):

| part   | what                                                               | budget        |
|--------|--------------------------------------------------------------------|---------------|
| track  | POST /api/v1/pixel/track, ``core-api serve`` on 1 worker           | >= 0.70       |
|        | (PostgreSQL), vs bare Falcon's GET, interleaved wrk slices in one  |               |
|        | run. Context: the Falcon route without the ASGI fast path          |               |
|        | (``pixel_app``), and a bare ASGI app answering the same POST with  |               |
|        | the same headers (``post_floor_app``: the floor for any handler)   |               |
| writer | the batch writer alone: binary COPY batches into PostgreSQL        | >= 100k ev/s  |
| rss    | a burst of 1M events through the ingest service (in process, real  | flat: after - |
|        | PostgreSQL writes): RSS before, peak and after                     | before < 64MB |
| micro  | Rust COPY encoder and visitor hash vs their pure-Python twins      | >= 3x         |
| cpu    | CPU time per request, apps called in process (no server, no        | (context)     |
|        | network): bare Falcon, authenticated GET, track, track fast path    |               |

``track``: the service runs ``core-api serve --workers 1`` on a fresh PostgreSQL database
with a per-IP pixel limit of 10^9/min (the limiter is consulted and debited on every
request, never refuses); wrk posts a pageview JSON body with a browser user agent, as the
snippet's ``fetch`` does. Every event is written (the report gives the rows counted after
the server stopped, which must equal the 200 answers).

Usage::

    python -m benchmarks.pixel [--seconds 8] [--slices 4] [--parts cpu,track,writer,rss,micro]
                               [--events 300000] [--burst 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import os
import secrets
import shutil
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson

from . import common
from .common import HOST, log
from .peak import parse_wrk

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
TRACK_BODY = (
    '{"event":"pageview","url":"https://bench.example/blog/post-1",'
    '"referrer":"https://www.google.com/","properties":{"title":"Post 1"}}'
)
LUA = f"""
wrk.method = "POST"
wrk.body = '{TRACK_BODY}'
wrk.headers["Content-Type"] = "text/plain;charset=UTF-8"
wrk.headers["User-Agent"] = "{CHROME}"
wrk.headers["Origin"] = "https://bench.example"
"""
BUDGETS = {"track/baseline": 0.70, "writer_events_per_s": 100_000.0, "micro_min_speedup": 3.0}
RSS_GROWTH_BUDGET_MB = 64.0


# ----------------------------------------------------------------------------- track


def wrk(url: str, seconds: float, connections: int, script: Path | None) -> dict[str, Any]:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    argv += ["--timeout", "5s"]
    if script is not None:
        argv += ["-s", str(script)]
    argv.append(url)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    return parse_wrk(out.stdout)


def count_events(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM pixel_events").fetchone()
        return int(row[0]) if row else 0


def run_track(args: Any, workdir: Path, stack: contextlib.ExitStack) -> dict[str, Any]:
    import httpx

    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found (apt-get install -y wrk)")
    store = common.postgres_store(workdir)
    stack.callback(store.close)
    store.env["CORE_API_PIXEL_RATE_LIMIT"] = "1000000000"
    creds = common.bootstrap(store.env, "pixel-bench", "enterprise")
    service = common.service_server(store, workdir, workers=1)
    baseline = common.baseline_server(workdir)
    route_env = {
        **store.env,
        "PYTHONPATH": str(common.ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    route_port = common.free_port()
    route = common.Server(
        "service-falcon-route", common.granian_argv("benchmarks.pixel_app:app", route_port),
        route_port, route_env, workdir / "route.log",
    )  # fmt: skip
    floor_port = common.free_port()
    floor = common.Server(
        "asgi_post_floor", common.granian_argv("benchmarks.post_floor_app:app", floor_port),
        floor_port, route_env, workdir / "floor.log",
    )  # fmt: skip
    for server, path in (
        (service, "/health"), (route, "/health"), (baseline, "/api/v1/workspaces/1"),
        (floor, "/"),
    ):  # fmt: skip
        server.start()
        stack.callback(server.stop)
        server.wait_ready(path, {})
    made = httpx.post(
        f"http://{HOST}:{service.port}/api/v1/pixel/sites",
        json={"domain": "bench.example", "name": "bench"},
        headers={"Authorization": f"Bearer {creds.key}"},
        timeout=10,
    )
    if made.status_code != 201:
        raise RuntimeError(f"site create failed: {made.status_code} {made.text}")
    script = workdir / "track.lua"
    script.write_text(LUA)
    targets = {
        "baseline": (f"http://{HOST}:{baseline.port}/api/v1/workspaces/1", None),
        "track": (f"http://{HOST}:{service.port}/api/v1/pixel/track", script),
        "track_falcon_route": (f"http://{HOST}:{route_port}/api/v1/pixel/track", script),
        "asgi_post_floor": (f"http://{HOST}:{floor_port}/api/v1/pixel/track", script),
    }
    slices: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    answered = 0  # 2xx answers of every wrk run, warm-up included
    for name, (url, lua) in targets.items():
        warm = wrk(url, args.warmup, args.connections, lua)
        if name in ("track", "track_falcon_route"):
            answered += warm.get("requests", 0) - warm["non_2xx"]
    per_slice = max(1.0, args.seconds / max(1, args.slices))
    servers = {"baseline": baseline, "track": service, "track_falcon_route": route,
               "asgi_post_floor": floor}  # fmt: skip
    cpu_s = dict.fromkeys(targets, 0.0)  # server CPU spent during each target's slices
    for i in range(max(1, args.slices)):
        for name, (url, lua) in targets.items():
            before = servers[name].cpu_seconds()
            slices[name].append(wrk(url, per_slice, args.connections, lua))
            cpu_s[name] += servers[name].cpu_seconds() - before
        text = ", ".join(f"{n} {s[-1]['rps']:.0f}" for n, s in slices.items())
        log(f"[pixel] slice {i + 1}/{args.slices}: {text} req/s")
    results: dict[str, Any] = {}
    for name, runs in slices.items():
        requests = sum(r.get("requests", 0) for r in runs)
        duration = sum(r.get("duration_ms", 0.0) for r in runs) / 1e3
        results[name] = {
            "rps": round(requests / duration, 1) if duration else 0.0,
            "requests": requests,
            "rps_slices": [r["rps"] for r in runs],
            "p50_ms": sorted(r.get("p50_ms", 0) for r in runs)[len(runs) // 2],
            "p99_ms": sorted(r.get("p99_ms", 0) for r in runs)[len(runs) // 2],
            "non_2xx": sum(r["non_2xx"] for r in runs),
            "socket_errors": sum(r["socket_errors"] for r in runs),
            # server CPU per answered request (all its processes): steadier than req/s
            # when the machine is shared, since time lost to other processes is not in it
            "cpu_us_per_request": round(cpu_s[name] / requests * 1e6, 1) if requests else None,
        }
    service.stop()  # SIGINT: graceful, the final flush writes what is buffered
    route.stop()
    for name in ("track", "track_falcon_route"):
        answered += results[name]["requests"] - results[name]["non_2xx"]
    stored = count_events(store.env["CORE_API_DATABASE_URL"])
    ratio = results["track"]["rps"] / results["baseline"]["rps"]
    route_ratio = results["track_falcon_route"]["rps"] / results["baseline"]["rps"]
    floor_rps = results["asgi_post_floor"]["rps"]
    return {
        "targets": results,
        "ratio": round(ratio, 3),
        "falcon_route_ratio": round(route_ratio, 3),
        # What the POST itself allows: the floor app against the GET baseline, and the
        # share of the floor's throughput the service keeps (context, no budget).
        "floor_ratio": round(floor_rps / results["baseline"]["rps"], 3),
        # the same comparison in server CPU per request (baseline's / track's)
        "cpu_ratio": _cpu_ratio(results["baseline"], results["track"]),
        "track_of_floor": round(results["track"]["rps"] / floor_rps, 3) if floor_rps else 0.0,
        "events_stored": stored,
        # wrk counts answers read before its clock stopped; a request already sent when
        # it stopped may still be tracked, so stored can exceed answered by a few.
        "track_answered_200": answered,
        "all_written": stored >= answered,
    }


def _cpu_ratio(baseline: dict[str, Any], target: dict[str, Any]) -> float | None:
    base, other = baseline.get("cpu_us_per_request"), target.get("cpu_us_per_request")
    return round(base / other, 3) if base and other else None


# ----------------------------------------------------------------------------- writer


def make_events(n: int) -> list[tuple[Any, ...]]:
    paths = [f"/blog/post-{i}" for i in range(500)]
    refs = [None, "google.com", "news.ycombinator.com", "twitter.com"]
    return [
        (
            1 + i % 7,
            1_767_225_600_000 + i,
            "pageview" if i % 10 else "Signup",
            paths[i % 500],
            refs[i % 4],
            (i * 0x9E3779B97F4A7C15) % (2**63),
            (i * 0xBF58476D1CE4E5B9) % (2**63) if i % 5 else None,
            "Chrome" if i % 3 else "Firefox",
            "desktop" if i % 4 else "mobile",
            '{"title":"Post"}' if i % 8 == 0 else None,
        )
        for i in range(n)
    ]


async def run_writer(args: Any, workdir: Path, stack: contextlib.ExitStack) -> dict[str, Any]:
    from core_api import _native
    from core_api.config import Settings
    from core_api.pixel.writer import PostgresWriter
    from core_api.storage import open_database
    from core_api.storage.migrate import migrate

    store = common.postgres_store(workdir)
    stack.callback(store.close)
    url = store.env["CORE_API_DATABASE_URL"]
    db = await open_database(url)
    await migrate(db)
    await db.close()
    settings = Settings(database_url=url, secret_key=b"x" * 40, pg_statement_timeout=0)
    writer = PostgresWriter(settings)
    events = make_events(args.events)
    buffer = _native.PixelBuffer(len(events))
    for e in events:
        buffer.push(*e)
    await writer.ping()  # connected before the clock starts
    batch_size = args.batch
    started = time.perf_counter()
    encode_s = 0.0
    while buffer.pending:
        batch = buffer.take(batch_size)
        t0 = time.perf_counter()
        batch.copy_binary()  # timed apart: the share of encoding in the write
        encode_s += time.perf_counter() - t0
        await writer.write(batch)
        buffer.commit(batch)
    elapsed = time.perf_counter() - started - encode_s  # write() encodes once more itself
    await writer.close()
    stored = count_events(url)
    return {
        "events": len(events),
        "batch_size": batch_size,
        "seconds": round(elapsed, 3),
        "events_per_s": round(len(events) / elapsed),
        "encode_share": round(encode_s / (elapsed + encode_s), 3),
        "stored": stored,
    }


# ----------------------------------------------------------------------------- rss


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def run_rss(args: Any, workdir: Path, stack: contextlib.ExitStack) -> dict[str, Any]:
    from core_api.api_keys.service import bootstrap
    from core_api.config import Settings
    from core_api.pixel import service as site_service
    from core_api.pixel.ingest import Client, PixelIngest, parse_hit
    from core_api.runtime import Runtime
    from core_api.web.bodies import Fields

    store = common.postgres_store(workdir)
    stack.callback(store.close)
    url = store.env["CORE_API_DATABASE_URL"]
    settings = Settings(
        database_url=url,
        secret_key=b"x" * 40,
        shm_path=str(workdir / "rss-shm"),
        pixel_buffer_size=100_000,
    )
    runtime = await Runtime.open(settings, run_migrations=True)
    try:
        boot = await bootstrap(
            runtime.db, runtime.keys, runtime.plans, runtime.clock,
            name="rss", tier="enterprise", email=None,
        )  # fmt: skip
        sites = site_service.PixelSiteService(
            runtime.db, runtime.plans, runtime.clock, runtime.invalidator, runtime.entitlements
        )
        workspace = await runtime.workspaces.get(boot["user"]["id"], boot["workspace"]["id"])
        await sites.create(
            workspace, Fields({"domain": "bench.example", "name": "b"}, {"domain", "name"})
        )
        ingest = PixelIngest(settings, runtime.db, runtime.clock, runtime.pixel_sites)
        hits = [
            parse_hit({"event": "pageview", "url": f"https://bench.example/p/{i}"})
            for i in range(1000)
        ]
        stop = asyncio.Event()

        async def flusher() -> None:
            while not stop.is_set():
                await ingest.flush()
                await asyncio.sleep(0.05)

        async def burst(n: int, offset: int) -> int:
            refused = 0
            for i in range(n):
                client = Client(f"10.{(offset + i) >> 16 & 255}.{(offset + i) >> 8 & 255}."
                                f"{(offset + i) & 255}", CHROME, None, None, None)  # fmt: skip
                while True:
                    try:
                        await ingest.track(hits[i % 1000], client)
                        break
                    except Exception as exc:  # 503 (buffer full): yield to the writer
                        if getattr(exc, "status", 0) != 503:
                            raise
                        refused += 1
                        await asyncio.sleep(0.01)
                if i % 2000 == 0:
                    await asyncio.sleep(0)
            return refused

        task = asyncio.create_task(flusher())
        await burst(20_000, 0)  # warm: caches, salts, allocator arenas
        gc.collect()
        before = rss_mb()
        peak = before
        started = time.perf_counter()
        refused = 0
        step = 50_000
        series = []  # RSS after each step: it levels off once the session table is full
        for done in range(0, args.burst, step):
            refused += await burst(min(step, args.burst - done), 20_000 + done)
            series.append(round(rss_mb(), 1))
            peak = max(peak, series[-1])
        tracked_s = time.perf_counter() - started
        stop.set()
        await task
        await ingest.flush()
        await ingest.close()
        gc.collect()
        after = rss_mb()
        stored = int(
            (await runtime.db.fetch_one("SELECT count(*) AS n FROM pixel_events") or {"n": 0})["n"]
        )
    finally:
        await runtime.close()
    return {
        "events": args.burst,
        "seconds": round(tracked_s, 1),
        "events_per_s": round(args.burst / tracked_s),
        "rss_before_mb": round(before, 1),
        "rss_peak_mb": round(peak, 1),
        "rss_after_mb": round(after, 1),
        "growth_mb": round(after - before, 1),
        "rss_series_mb": series,
        "sessions_in_table": len(ingest.sessions),
        "refused_503_retried": refused,
        "stored": stored,
        "expected_stored": args.burst + 20_000,
    }


# ----------------------------------------------------------------------------- cpu


async def _asgi(app: Any, scope: dict[str, Any], body: bytes) -> int:
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def run_cpu(args: Any, workdir: Path) -> dict[str, Any]:
    """CPU time per request with no server and no network (the apps called as ASGI
    callables in this process, on uvloop): far less sensitive to a loaded machine than
    throughput, and it shows where the time goes. SQLite store; writes included."""
    from benchmarks.baseline_app import app as baseline
    from core_api.api_keys.service import bootstrap
    from core_api.app import create_app
    from core_api.config import Settings
    from core_api.pixel import service as site_service
    from core_api.pixel.fastpath import wrap
    from core_api.pixel.ingest import ingest_of
    from core_api.runtime import Runtime
    from core_api.web.bodies import Fields

    settings = Settings(
        database_url=f"sqlite:///{workdir}/cpu.db",
        secret_key=b"x" * 40,
        shm_path=str(workdir / "cpu-shm"),
        pixel_rate_limit=1_000_000_000,
    )
    runtime = await Runtime.open(settings, run_migrations=True)
    try:
        boot = await bootstrap(
            runtime.db, runtime.keys, runtime.plans, runtime.clock,
            name="cpu", tier="enterprise", email=None,
        )  # fmt: skip
        sites = site_service.PixelSiteService(
            runtime.db, runtime.plans, runtime.clock, runtime.invalidator, runtime.entitlements
        )
        workspace = await runtime.workspaces.get(boot["user"]["id"], boot["workspace"]["id"])
        await sites.create(
            workspace, Fields({"domain": "bench.example", "name": "b"}, {"domain", "name"})
        )
        app = create_app(settings, runtime)
        fast = wrap(app, runtime, settings)
        ingest = ingest_of(runtime)
        body = TRACK_BODY.encode()

        def scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
            return {
                "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
                "query_string": b"", "root_path": "", "headers": [(b"host", b"x"), *headers],
                "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80),
            }  # fmt: skip

        key = boot["api_key"]["key"].encode()
        ws = f"/api/v1/workspaces/{boot['workspace']['id']}"
        track_headers = [
            (b"content-type", b"text/plain;charset=UTF-8"),
            (b"user-agent", CHROME.encode()),
            (b"origin", b"https://bench.example"),
            (b"content-length", str(len(body)).encode()),
        ]
        targets = {
            "baseline": (baseline, scope("GET", "/api/v1/workspaces/1", []), b""),
            "ws_get": (app, scope("GET", ws, [(b"authorization", b"Bearer " + key)]), b""),
            "track": (app, scope("POST", "/api/v1/pixel/track", track_headers), body),
            "track_fast": (fast, scope("POST", "/api/v1/pixel/track", track_headers), body),
        }
        results: dict[str, Any] = {}
        for name, (target, sc, payload) in targets.items():
            for _ in range(500):  # warm
                assert await _asgi(target, sc, payload) == 200, name
            started = time.process_time()
            for i in range(args.cpu_requests):
                await _asgi(target, sc, payload)
                if i % 5000 == 4999:
                    await ingest.flush()
            results[name] = round((time.process_time() - started) / args.cpu_requests * 1e6, 1)
        await ingest.flush()
        await ingest.close()
    finally:
        await runtime.close()
    return {"us_per_request": results, "requests": args.cpu_requests}


# ----------------------------------------------------------------------------- micro


def py_copy_binary(events: list[tuple[Any, ...]]) -> bytes:
    """The obvious pure-Python twin of PixelBatch.copy_binary."""
    out = [b"PGCOPY\n\xff\r\n\x00", struct.pack("!ii", 0, 0)]
    i64 = struct.Struct("!iq").pack
    for e in events:
        out.append(b"\x00\x0a")
        for j, v in enumerate(e):
            if v is None:
                out.append(b"\xff\xff\xff\xff")
            elif j in (0, 1, 5, 6):
                out.append(i64(8, v))
            else:
                data = v.encode()
                out.append(struct.pack("!i", len(data)) + data)
    out.append(b"\xff\xff")
    return b"".join(out)


def best(fn: Any, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def run_micro(args: Any) -> dict[str, Any]:
    from core_api import _native

    events = make_events(5000)
    buffer = _native.PixelBuffer(len(events))
    for e in events:
        buffer.push(*e)
    batch = buffer.take(len(events))
    assert batch.copy_binary() == py_copy_binary(events), "twins disagree"
    rust_encode = best(batch.copy_binary)
    py_encode = best(lambda: py_copy_binary(events))

    key = secrets.token_bytes(16)
    inputs = [(1, f"10.0.{i >> 8 & 255}.{i & 255}", CHROME) for i in range(20_000)]
    sessions = _native.PixelSessions(100_000)

    def rust_hash() -> None:
        h = _native.pixel_visitor_hash
        for site, ip, ua in inputs:
            h(key, site, ip, ua)

    def py_hash() -> None:
        # The obvious Python keyed hash: BLAKE2b (C) with a key, 8-byte digest.
        b2 = hashlib.blake2b
        for site, ip, ua in inputs:
            int.from_bytes(
                b2(f"{site}\x00{ip}\x00{ua}".encode(), key=key, digest_size=8).digest(),
                "little",
                signed=True,
            )

    def rust_identify() -> None:
        ident = sessions.identify
        for site, ip, ua in inputs:
            ident(key, None, site, ip, ua, 1000)

    py_sessions: dict[int, tuple[int, int]] = {}

    def py_identify() -> None:
        b2 = hashlib.blake2b
        for site, ip, ua in inputs:
            v = int.from_bytes(
                b2(f"{site}\x00{ip}\x00{ua}".encode(), key=key, digest_size=8).digest(), "little"
            )
            found = py_sessions.get(v)
            if found is None or 1000 - found[1] > 1_800_000:
                sid = int.from_bytes(
                    b2(f"s{v}:1000".encode(), key=key, digest_size=8).digest(), "little"
                )
                found = (sid, 1000)
            py_sessions[v] = (found[0], 1000)

    # The track body: 20,000 distinct bodies (pages, referrers, titles) through the Rust
    # twin as the fast path calls it (``pixel_hit``: the event stays in Rust for the
    # gate), and through what it replaces, orjson.loads + parse_hit (URL cache warm).
    from core_api.pixel.ingest import parse_hit

    bodies = [
        orjson.dumps(
            {"event": "pageview", "url": f"https://bench.example/blog/post-{i % 2000}",
             "referrer": ["https://www.google.com/", "", "https://news.example/x"][i % 3],
             "properties": {"title": f"Post {i}"}}
        )
        for i in range(20_000)
    ]  # fmt: skip
    parse = _native.pixel_hit
    assert all(parse(b) is not None for b in bodies), "the twin must answer these"

    def rust_parse() -> None:
        for body in bodies:
            parse(body)

    def py_parse() -> None:
        loads = orjson.loads
        for body in bodies:
            parse_hit(loads(body))

    py_parse()  # the URL cache warm, as in a running process

    results = {
        "copy_encode_5000": {"rust_s": rust_encode, "python_s": py_encode},
        "parse_hit_20000": {"rust_s": best(rust_parse), "python_s": best(py_parse)},
        "visitor_hash_20000": {"rust_s": best(rust_hash), "python_s": best(py_hash)},
        "identify_20000": {"rust_s": best(rust_identify), "python_s": best(py_identify)},
    }
    for r in results.values():
        r["speedup"] = round(r["python_s"] / r["rust_s"], 2)
        r["rust_s"] = round(r["rust_s"], 6)
        r["python_s"] = round(r["python_s"], 6)
    return results


def uvloop_run(coro: Any) -> Any:
    import uvloop  # what Granian serves with

    return uvloop.run(coro)


# ----------------------------------------------------------------------------- report


def verdicts(report: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    if "track" in report:
        t = report["track"]
        clean = t["targets"]["track"]["non_2xx"] + t["targets"]["track"]["socket_errors"] == 0
        out.append(
            {"figure": "track / baseline (core-api serve)", "value": t["ratio"], "budget": 0.70,
             "pass": t["ratio"] >= 0.70 and clean and t["all_written"]}
        )  # fmt: skip
    if "writer" in report:
        w = report["writer"]
        out.append(
            {"figure": "writer events/s (PostgreSQL)", "value": w["events_per_s"],
             "budget": 100_000, "pass": w["events_per_s"] >= 100_000 and w["stored"] == w["events"]}
        )  # fmt: skip
    if "rss" in report:
        r = report["rss"]
        out.append(
            {"figure": "RSS growth over the burst (MB)", "value": r["growth_mb"],
             "budget": f"< {RSS_GROWTH_BUDGET_MB:g}",
             "pass": r["growth_mb"] < RSS_GROWTH_BUDGET_MB and r["stored"] == r["expected_stored"]}
        )  # fmt: skip
    if "micro" in report:
        for name, m in report["micro"].items():
            out.append(
                {"figure": f"{name} Rust speed-up", "value": m["speedup"], "budget": 3.0,
                 "pass": m["speedup"] >= 3.0}
            )  # fmt: skip
    return out


def print_report(report: dict[str, Any]) -> None:
    print(f"\nPixel ingest (load avg before {report['loadavg_before'][0]})")
    if "track" in report:
        for name, t in report["track"]["targets"].items():
            print(
                f"  {name:<15} {t['rps']:>9.0f} req/s  p50 {t['p50_ms']:.2f} ms  p99 "
                f"{t['p99_ms']:.2f} ms  errors {t['non_2xx'] + t['socket_errors']}"
            )
        print(f"  events stored after stop: {report['track']['events_stored']}")
        t = report["track"]
        cpu = ", ".join(
            f"{n} {v['cpu_us_per_request']} us" for n, v in report["track"]["targets"].items()
        )
        print(f"  server CPU per request: {cpu}; track / baseline in CPU: {t.get('cpu_ratio')}")
        print(f"  floor (a bare ASGI answer to the same POST): {t['floor_ratio']} of the GET "
              f"baseline; the service keeps {t['track_of_floor']} of the floor")  # fmt: skip
    if "writer" in report:
        w = report["writer"]
        share = f"{w['encode_share']:.0%}"
        print(f"  writer: {w['events']} events in {w['seconds']} s = {w['events_per_s']}/s "
              f"(batches of {w['batch_size']}, encoding {share} of it)")  # fmt: skip
    if "rss" in report:
        r = report["rss"]
        print(f"  burst: {r['events']} events in {r['seconds']} s; RSS before "
              f"{r['rss_before_mb']} MB, peak {r['rss_peak_mb']} MB, after {r['rss_after_mb']} MB; "
              f"stored {r['stored']}/{r['expected_stored']}")  # fmt: skip
        print(f"  RSS every 50k events (MB): {r['rss_series_mb']}")
    if "cpu" in report:
        text = ", ".join(f"{k} {v} us" for k, v in report["cpu"]["us_per_request"].items())
        print(f"  CPU per request (in process): {text}")
    if "micro" in report:
        for name, m in report["micro"].items():
            print(f"  {name}: Rust {m['rust_s'] * 1e3:.2f} ms, Python {m['python_s'] * 1e3:.2f} ms,"
                  f" x{m['speedup']}")  # fmt: skip
    for v in report["verdicts"]:
        print(f"  {v['figure']:<34} {v['value']!s:>10} (budget {v['budget']}) "
              f"{'PASS' if v['pass'] else 'MISS'}")  # fmt: skip


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pixel", description=__doc__)
    p.add_argument("--parts", default="cpu,track,writer,rss,micro")
    p.add_argument("--cpu-requests", type=int, default=20_000, help="requests per cpu target")
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per target")
    p.add_argument("--slices", type=int, default=4)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--events", type=int, default=300_000, help="events for the writer part")
    p.add_argument("--batch", type=int, default=5_000, help="rows per COPY in the writer part")
    p.add_argument("--burst", type=int, default=1_000_000, help="events in the RSS burst")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    parts = set(args.parts.split(","))
    load_before = os.getloadavg()
    started = time.monotonic()
    report: dict[str, Any] = common.report_header("pixel", load_before)
    report["settings"] = {k: v for k, v in vars(args).items()}
    with common.workdir("core-api-pixel-") as workdir, contextlib.ExitStack() as stack:
        if "cpu" in parts:
            log("[pixel] cpu: CPU time per request, in process ...")
            report["cpu"] = uvloop_run(run_cpu(args, workdir))
        if "micro" in parts:
            log("[pixel] micro: Rust vs pure Python ...")
            report["micro"] = run_micro(args)
        if "writer" in parts:
            log(f"[pixel] writer: {args.events} events into PostgreSQL ...")
            report["writer"] = asyncio.run(run_writer(args, workdir, stack))
        if "rss" in parts:
            log(f"[pixel] rss: a burst of {args.burst} events ...")
            report["rss"] = asyncio.run(run_rss(args, workdir, stack))
        if "track" in parts:
            log("[pixel] track vs bare Falcon ...")
            report["track"] = run_track(args, workdir, stack)
    report["verdicts"] = verdicts(report)
    report["wall_s"] = round(time.monotonic() - started, 1)
    path = common.write_json(f"pixel-{report['timestamp']}.json", report)
    print_report(report)
    print(f"results: {path}")
    return report


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
