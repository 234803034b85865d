"""Capacity: the operations mix on one host, ``core-api serve --workers 2``, PostgreSQL and
Redis, stepped up in rate until it no longer holds p99 < 25 ms with 0 failures.

The mix (``CapacityUser`` in ``locustfile.py``), per 100 requests: 30 GET /workspaces/{id},
10 list workspaces, 10 list API keys, 10 idempotent POST /workspaces (10 % replays), 20
pixel hits (bursts of 4), 15 usage records (unique event_id each) and 5 event publishes.
Every seeded user's workspace has a webhook endpoint subscribed to ``post.*`` on a
loopback receiver (its own process), so each publish is also a signed delivery made by the
serving processes; one pixel site takes the pixel hits.

Each step is a fresh locust run at a constant offered rate (``--users`` users paced at
``rate / users``) on the same server, so rows accumulate as they would. A step holds when
it achieves at least 95 % of the offered rate with 0 failures and p99 < 25 ms. Stepping
stops at the first step that does not hold; when locust itself cannot reach the offered
rate the report says so (the load generator, sharing the 2 cores, is then the limit).

Users: 20 by default (20 tenants, each a locust user on its own keep-alive connection).
With 200 users each sending about 1.5 requests/s, latency here was once dominated by
about 40 ms waits on most requests whatever the rate. The causes were locust's lock-step
pacing and GC pauses and the service's GC, since fixed; ``benchmarks.mix`` is the
200-user scenario. See docs/benchmarks.md ("Mixed load with 200 users: causes found").

Usage::

    python -m benchmarks.capacity [--rates 400,600,800,1000,1200,1400] [--step-seconds 60]
                                  [--users 20]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from . import common, entitlements, locust_run
from .common import HOST, log
from .webhook_baseline import receiver_process

P99_MAX_MS = 25.0
DRIVEN_MIN = 0.95  # achieved / offered below this: locust could not drive the rate
# Requests per task: locust paces tasks, and a pixel burst (5 of 85 task weights) is 4.
REQUESTS_PER_TASK = 100 / 85
PIXEL_DOMAIN = "capacity.example"


def _prepare(base: str, users: list[dict[str, Any]], receiver_url: str) -> None:
    """A post.* webhook endpoint per user's workspace and one pixel site, through the API."""
    with httpx.Client(base_url=base, timeout=30) as client:
        for i, user in enumerate(users):
            auth = {"Authorization": f"Bearer {user['key']}"}
            made = client.post(
                "/api/v1/webhooks",
                json={"url": f"{receiver_url}u{i}", "events": ["post.*"]},
                headers=auth,
            )
            if made.status_code != 201:
                raise RuntimeError(f"webhook endpoint: {made.status_code} {made.text}")
        site = client.post(
            "/api/v1/pixel/sites",
            json={"domain": PIXEL_DOMAIN, "name": "Capacity"},
            headers={"Authorization": f"Bearer {users[0]['key']}"},
        )
        if site.status_code != 201:
            raise RuntimeError(f"pixel site: {site.status_code} {site.text}")


@dataclass
class Service:
    """The serving side of the capacity mix, ready for locust."""

    server: common.Server
    host: str
    users: list[dict[str, Any]]
    env: dict[str, str]  # locust's environment (CapacityUser reads it)
    receiver: Any  # the loopback webhook receiver


def start_service(workdir: Path, stack: contextlib.ExitStack, users: int) -> Service:
    """``core-api serve --workers 2`` on PostgreSQL + Redis with ``users`` seeded tenants,
    each with a webhook endpoint on a loopback receiver, and the pixel site; everything is
    stopped with ``stack``. Also used by ``benchmarks.metrics_scrape``."""
    # The shipped plans plus a bench tier whose limits the run cannot reach (posts counts
    # the usage records); base_env keeps an existing file.
    (workdir / "plans.toml").write_text(entitlements.plans_text())
    store = common.postgres_redis_store(workdir)
    stack.callback(store.close)
    store.env |= {
        "CORE_API_PIXEL_RATE_LIMIT": "1000000000",  # every locust user is one loopback IP
        "CORE_API_TRUSTED_PROXIES": "127.0.0.1/32",  # pixel visitors from X-Forwarded-For
        "CORE_API_WEBHOOK_REQUIRE_HTTPS": "false",
        "CORE_API_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",  # the loopback receiver
    }
    receiver = stack.enter_context(receiver_process())
    log(f"[capacity] seeding {users} users ...")
    seeded = common.populate(store.env, "users", "--count", str(users))
    env = common.locust_env(workdir, seeded)
    env["BENCH_PIXEL_ORIGIN"] = f"https://{PIXEL_DOMAIN}"
    server = common.start_service(store, workdir, stack, seeded[0], workers=2)
    host = f"http://{HOST}:{server.port}"
    _prepare(host, seeded, receiver.url)
    return Service(server, host, seeded, env, receiver)


def _step_verdict(result: dict[str, Any], rate: float) -> dict[str, Any]:
    tl, agg = result.get("timeline") or {}, result.get("aggregate") or {}
    achieved = float(tl.get("rps") or agg.get("rps") or 0.0)
    p99 = float(tl.get("p99_all_ms") or agg.get("p99_ms") or 0.0)
    failures = int(agg.get("failures", 0))
    driven = achieved >= DRIVEN_MIN * rate
    within = failures == 0 and p99 < P99_MAX_MS
    return {
        "offered_rps": rate,
        "achieved_rps": round(achieved, 1),
        "p50_ms": agg.get("p50_ms"),
        "p99_ms": p99,
        "failures": failures,
        "requests": int(agg.get("requests", 0)),
        "driven": driven,
        "held": driven and within,
        # locust (on the same 2 cores) could not offer the rate, and the service still held
        # the latency at what it could offer: the generator, not the service, is the limit.
        "held_at_generator_limit": not driven and within,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    stamp = common.timestamp()
    out_dir = common.RESULTS / f"capacity-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    steps: list[dict[str, Any]] = []
    with common.workdir("core-api-capacity-") as workdir, contextlib.ExitStack() as stack:
        service = start_service(workdir, stack, args.users)
        server, host, env, receiver = service.server, service.host, service.env, service.receiver
        warm: dict[str, Any] = {"endpoints": []}
        if args.warmup:  # connections, caches and plans warm before the first step
            warm = locust_run.run_scenario(
                "capacity", host, env, out_dir, args.warmup, args.users,
                args.rates[0] / args.users / REQUESTS_PER_TASK, "capacity-warmup",
            )  # fmt: skip
        for rate in args.rates:
            load_before = os.getloadavg()
            log(f"[capacity] {rate:g} req/s for {args.step_seconds:g}s ...")
            result = locust_run.run_scenario(
                "capacity", host, env, out_dir, args.step_seconds, args.users,
                rate / args.users / REQUESTS_PER_TASK, f"capacity-{rate:g}",
            )  # fmt: skip
            if server.proc is not None and server.proc.poll() is not None:
                raise RuntimeError(f"service exited early:\n{server.tail()}")
            step = _step_verdict(result, rate)
            step["loadavg_before"] = round(load_before[0], 2)
            step["endpoints"] = [
                {k: e[k] for k in ("name", "requests", "failures", "p50_ms", "p99_ms")}
                for e in result["endpoints"]
            ]
            step["failure_samples"] = result["failures"][:5]
            steps.append(step)
            log(
                f"[capacity] {rate:g}: {step['achieved_rps']:.0f} req/s, p50 {step['p50_ms']} "
                f"p99 {step['p99_ms']} ms, {step['failures']} failures -> "
                f"{'held' if step['held'] else 'not held'}"
            )
            if not step["held"]:
                break
            time.sleep(2)  # let the delivery workers and flushers settle between steps
        published = sum(
            e["requests"] - e["failures"]
            for e in [*warm["endpoints"], *(e for st in steps for e in st["endpoints"])]
            if e["name"] == "POST /api/v1/events"
        )
        deadline = time.monotonic() + 30
        while receiver.count() < published and time.monotonic() < deadline:
            time.sleep(0.5)  # deliveries still in flight
        delivered = receiver.count()
    held = [s for s in steps if s["held"] or s["held_at_generator_limit"]]
    best = held[-1] if held else None
    return {
        "kind": "capacity",
        "timestamp": stamp,
        "machine": common.machine_info(),
        "settings": {
            "rates": args.rates,
            "step_seconds": args.step_seconds,
            "users": args.users,
            "workers": 2,
            "store": "postgres+redis",
        },
        "steps": steps,
        "highest_held": best,
        "generator_limited": bool(steps) and not steps[-1]["driven"],
        "verdicts": [
            {
                "figure": f"capacity mix: p99 < {P99_MAX_MS:g} ms, 0 failures (highest rate held)",
                "value": (
                    f"{best['achieved_rps']:.0f} req/s, p50 {best['p50_ms']} ms, "
                    f"p99 {best['p99_ms']} ms"
                    if best
                    else "no step held"
                ),
                "pass": best is not None,
            }
        ],
        "events_accepted": published,
        "deliveries_received": delivered,
        "csv_dir": str(out_dir),
    }


def print_report(report: dict[str, Any]) -> None:
    s = report["settings"]
    print(
        f"\nCapacity mix (locust CapacityUser, {s['users']} users, core-api serve --workers 2,"
        f" PostgreSQL + Redis, {s['step_seconds']:g} s per step)"
    )
    print(f"{'offered':>8} {'achieved':>9} {'p50':>6} {'p99':>7} {'failures':>9}  verdict")
    for st in report["steps"]:
        if st["held"]:
            verdict = "held"
        elif st["held_at_generator_limit"]:
            verdict = "held at the most locust could offer"
        else:
            verdict = "locust short" if not st["driven"] else "not held"
        print(
            f"{st['offered_rps']:>8g} {st['achieved_rps']:>9.0f} {st['p50_ms']:>6} "
            f"{st['p99_ms']:>7.1f} {st['failures']:>9}  {verdict}"
        )
    best = report["highest_held"]
    if best:
        print(
            f"highest rate held (p99 < {P99_MAX_MS:g} ms, 0 failures): "
            f"{best['achieved_rps']:.0f} req/s, p50 {best['p50_ms']} ms, p99 {best['p99_ms']} ms"
        )
    else:
        print("no step held")
    print(
        f"webhook deliveries received {report['deliveries_received']:,} of "
        f"{report['events_accepted']:,} events accepted"
    )
    if report["generator_limited"]:
        print("the last step was limited by the load generator (locust could not offer it)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.capacity", description=__doc__)
    p.add_argument("--rates", default="600,1000,1400,1800,2200,2600,3000")
    p.add_argument("--step-seconds", type=float, default=60.0)
    p.add_argument("--users", type=int, default=20, help="locust users = seeded tenants")
    p.add_argument("--warmup", type=float, default=10.0, help="unmeasured seconds first")
    p.add_argument("--quick", action="store_true", help="20 s steps")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    args.rates = [float(x) for x in args.rates.split(",") if x]
    if args.quick:
        args.step_seconds = min(args.step_seconds, 20.0)
    report = run(args)
    path: Path = common.write_json(f"capacity-{report['timestamp']}.json", report)
    print_report(report)
    print(f"results: {path} (CSV in {report['csv_dir']})")
    return report


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
