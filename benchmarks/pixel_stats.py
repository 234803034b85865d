"""Pixel stats latency for a site with 1M events (budget: < 100 ms).

Seeds ``--events`` events (default 1,000,000) over the last 30 days into ``pixel_events``
inside the database (``generate_series`` / a recursive CTE; sessions of 5 consecutive
events, 2 sessions per visitor, 50 pages, 5% custom events), then times
``GET /api/v1/pixel/stats`` through the whole app (auth, rate limit, responder, orjson;
in process, no socket) with falcon's ASGI test client:

- ``cold``: the first 30-day query, which computes and stores the 29 finished days;
- ``30d``: the same query again (stored days + today's events live), ``--repeat`` times;
- ``today-hourly``: today's hourly series (today's events only, all live);
- ``7d-hourly``: a week by hour (6 stored days + today);
- ``full-day-stored``: one whole day aggregated by the database (how a finished day is
  computed before it is stored);
- ``full-day-live``: one whole day folded from its events (what "today" costs, at the end
  of a day, in a process that does not keep today's state yet).

    python -m benchmarks.pixel_stats [--backends sqlite,postgres] [--events 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import falcon.testing
import psycopg

from benchmarks import common
from core_api.api_keys.service import bootstrap
from core_api.app import create_app
from core_api.config import Settings
from core_api.pixel.stats import compute_day, fold_day
from core_api.runtime import Runtime

BUDGET_MS = 100.0
DAY_MS = 86_400_000
SECRET = b"pixel-stats-benchmark-secret-0123456789abcdef"


def seed_sql(dialect: str, site_id: int, events: int, end: int, span_ms: int) -> str:
    """One INSERT ... SELECT generating every event in the database."""
    step = span_ms / events
    if dialect == "postgresql":
        source = f"generate_series(0, {events - 1}) AS s(i)"
    else:
        source = (
            "(WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n "
            f"WHERE i < {events - 1}) SELECT i FROM n) AS s"
        )
    start = end - span_ms
    return (
        "INSERT INTO pixel_events (site_id, ts, name, path, referrer_source, visitor_id, "
        "session_id, browser, device, props) SELECT "
        f"{site_id}, {start} + CAST(i * {step} AS BIGINT), "
        "CASE WHEN i % 20 = 19 THEN 'Signup' ELSE 'pageview' END, "
        "'/p' || CAST(i % 50 AS TEXT), "
        "CASE WHEN i % 5 <> 0 THEN NULL WHEN i % 15 = 0 THEN 'google.com' "
        "WHEN i % 15 = 5 THEN 'news.ycombinator.com' ELSE NULL END, "
        "i / 10, i / 5, "
        "CASE i % 4 WHEN 0 THEN 'Chrome' WHEN 1 THEN 'Firefox' WHEN 2 THEN 'Safari' "
        "ELSE 'Edge' END, "
        "CASE i % 3 WHEN 0 THEN 'desktop' WHEN 1 THEN 'mobile' ELSE 'tablet' END, NULL "
        f"FROM {source}"
    )


async def measure(conductor: Any, key: str, params: dict[str, str], repeat: int) -> dict[str, Any]:
    times = []
    body: dict[str, Any] = {}
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = await conductor.simulate_get(
            "/api/v1/pixel/stats", params=params, headers={"Authorization": f"Bearer {key}"}
        )
        times.append((time.perf_counter() - t0) * 1000)
        assert result.status_code == 200, result.text
        body = result.json["data"]
    times.sort()
    return {
        "runs": repeat,
        "p50_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[min(len(times) - 1, int(len(times) * 0.95))], 2),
        "max_ms": round(times[-1], 2),
        "pageviews": body["totals"]["pageviews"],
        "events": body["totals"]["events"],
    }


async def run_backend(backend: str, url: str, args: Any, workdir: Path) -> dict[str, Any]:
    settings = Settings(
        database_url=url,
        secret_key=SECRET,
        shm_path=str(workdir / "shm"),
        pg_statement_timeout=300.0,  # the one-statement seed of 1M rows
    )
    runtime = await Runtime.open(settings, run_migrations=True)
    try:
        boot = await bootstrap(
            runtime.db, runtime.keys, runtime.plans, runtime.clock,
            name="Bench", tier="enterprise", email=None,
        )  # fmt: skip
        key = boot["api_key"]["key"]
        app = create_app(settings, runtime)
        async with falcon.testing.ASGIConductor(app) as conductor:
            made = await conductor.simulate_post(
                "/api/v1/pixel/sites",
                json={"domain": "bench.example"},
                headers={"Authorization": f"Bearer {key}"},
            )
            site_id = made.json["data"]["id"]
            end = runtime.clock.now_ms()
            t0 = time.perf_counter()
            await runtime.db.execute(
                seed_sql(runtime.db.dialect, site_id, args.events, end, 30 * DAY_MS)
            )
            # The site has existed as long as its history (stats skip days before it).
            await runtime.db.execute(
                "UPDATE pixel_sites SET created_at = ? WHERE id = ?",
                (end - 31 * DAY_MS, site_id),
            )
            if runtime.db.dialect == "postgresql":
                await runtime.db.execute("ANALYZE pixel_events")
            seed_s = round(time.perf_counter() - t0, 1)
            common.log(f"[pixel_stats] {backend}: seeded {args.events} events in {seed_s}s")
            today = time.strftime("%Y-%m-%d", time.gmtime(end / 1000))
            week = time.strftime("%Y-%m-%d", time.gmtime(end / 1000 - 6 * 86400))
            targets = {
                "cold": await measure(conductor, key, {"site_id": str(site_id)}, 1),
                "30d": await measure(conductor, key, {"site_id": str(site_id)}, args.repeat),
                "today-hourly": await measure(
                    conductor, key, {"site_id": str(site_id), "from": today}, args.repeat
                ),
                "7d-hourly": await measure(
                    conductor,
                    key,
                    {"site_id": str(site_id), "from": week, "interval": "hour"},
                    args.repeat,
                ),
            }
            # A whole day: aggregated by the database (how a finished day is stored) and
            # folded from its events (what today costs a process that does not keep it yet).
            yesterday = dt.datetime.fromtimestamp(end / 1000, dt.UTC).date() - dt.timedelta(days=1)
            for name, compute in (("full-day-stored", compute_day), ("full-day-live", fold_day)):
                times = []
                for _ in range(max(1, args.repeat // 4)):
                    t0 = time.perf_counter()
                    await compute(runtime.db, site_id, yesterday, ZoneInfo("UTC"))
                    times.append((time.perf_counter() - t0) * 1000)
                times.sort()
                targets[name] = {
                    "runs": len(times),
                    "p50_ms": round(statistics.median(times), 2),
                    "p95_ms": round(times[-1], 2),
                    "max_ms": round(times[-1], 2),
                    "pageviews": targets["30d"]["pageviews"] // 30,
                    "events": 0,
                }
        verdicts = [
            {
                "figure": f"{backend} stats 30 days, {args.events:,} events, p95 ms",
                "value": targets["30d"]["p95_ms"],
                "budget": f"< {BUDGET_MS:g}",
                "pass": targets["30d"]["p95_ms"] < BUDGET_MS,
            },
            {
                "figure": f"{backend} stats today hourly, p95 ms",
                "value": targets["today-hourly"]["p95_ms"],
                "budget": f"< {BUDGET_MS:g}",
                "pass": targets["today-hourly"]["p95_ms"] < BUDGET_MS,
            },
        ]
        return {"backend": backend, "seed_s": seed_s, "targets": targets, "verdicts": verdicts}
    finally:
        await runtime.close()


@contextlib.contextmanager
def database(backend: str, workdir: Path) -> Any:
    if backend == "sqlite":
        yield f"sqlite:///{workdir}/pixel-stats.db"
        return
    admin_url = os.environ.get("CORE_API_TEST_DATABASE_URL", common.DEFAULT_PG_ADMIN_URL)
    name = f"core_api_pixel_stats_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        info = psycopg.conninfo.conninfo_to_dict(admin_url)
        user = f"{info['user']}@" if info.get("user") else ""
        yield f"postgresql://{user}{info.get('host', '127.0.0.1')}:{info.get('port', 5432)}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(args: Any) -> dict[str, Any]:
    load_before = os.getloadavg()
    backends, errors = [], {}
    for backend in args.backends:
        with tempfile.TemporaryDirectory() as tmp, database(backend, Path(tmp)) as url:
            try:
                backends.append(asyncio.run(run_backend(backend, url, args, Path(tmp))))
            except Exception as exc:
                errors[backend] = f"{type(exc).__name__}: {exc}"
                common.log(f"[pixel_stats] {backend} FAILED: {errors[backend]}")
    return {
        **common.report_header("pixel_stats", load_before),
        "settings": {"events": args.events, "repeat": args.repeat, "days": 30},
        "backends": backends,
        "verdicts": [v for b in backends for v in b["verdicts"]],
        "errors": errors,
    }


def print_report(report: dict[str, Any]) -> None:
    s = report["settings"]
    print(
        f"\nPixel stats ({s['events']:,} events over {s['days']} days, {s['repeat']} runs each, "
        f"in process through the app; load avg before {report['loadavg_before'][0]})"
    )
    for b in report["backends"]:
        print(f"  {b['backend']}: seeded in {b['seed_s']} s")
        for name, t in b["targets"].items():
            print(
                f"    {name:<13} p50 {t['p50_ms']:>8.2f}  p95 {t['p95_ms']:>8.2f}  "
                f"max {t['max_ms']:>8.2f} ms  ({t['runs']} runs, {t['pageviews']:,} pageviews)"
            )
    for v in report["verdicts"]:
        print(f"  {v['figure']:<52} {v['value']:.2f} ({v['budget']}) "
              f"{'PASS' if v['pass'] else 'MISS'}")  # fmt: skip
    for name, error in report["errors"].items():
        print(f"  {name}: ERROR {error[:300]}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pixel_stats", description=__doc__)
    p.add_argument("--backends", default="sqlite,postgres")
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=20)
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    args.backends = ["postgresql" if b == "postgres" else b for b in args.backends.split(",") if b]
    unknown = set(args.backends) - {"sqlite", "postgresql"}
    if unknown:
        raise SystemExit(f"pixel_stats: unknown backends {sorted(unknown)}")
    report = run(args)
    path = common.write_json(f"pixel_stats-{report['timestamp']}.json", report)
    print_report(report)
    print(f"results: {path}")
    return report


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
