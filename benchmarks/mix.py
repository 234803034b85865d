"""The mixed load: ``core-api serve --workers 2`` under locust at a constant rate.

The mix (``MixUser`` in ``locustfile.py``): 40 % GET /workspaces/{id}, 20 % list
workspaces, 20 % list API keys, 15 % POST /workspaces with an Idempotency-Key (10 % of them
replays), 5 % GET /pixel/config. Two scenarios, each on SQLite and on PostgreSQL + Redis:

- ``spread``: ``--users`` seeded users (default 200), each with its own bench-tier key;
  every locust user takes one of them, so writes spread over many users and workspaces;
- ``tenant``: one user in ``--tenant-rows`` workspaces (default 20,000) shared by every
  locust user (GETs pick any of its workspaces; lists page over all of them).

The locust user count equals the seeded users (one tenant: ``--users`` users on its one
key), each paced at ``rate / users`` req/s from a random phase (``paced`` in the
locustfile). The pixel per-IP
limit is lifted (all load comes from one loopback address).

Figures per run, with their targets:

- achieved req/s >= 1,500 (``--rate``, the offered rate, defaults to 1,575: a user
  whose request runs late skips ahead rather than bursting to catch up, so a run achieves
  a little under the offered rate), 0 failures and p99 < 25 ms over the
  whole run;
- drift: p99 over the last minute within 20 % of p99 over the first minute (a third of the
  run each for runs shorter than three minutes);
- cache hit rates (key cache, workspace access cache, GET /api-keys/{id} cache) from the
  ``cache stats {...}`` line each serving process logs at INFO when it stops.

Each measured run follows ``--warmup`` seconds (20) of the same load on the same server:
the first seconds fill 200 users' key and access caches and the connection pools, and
counted as "drift" they would compare a cold first minute with a warm last one. The
warm-up's p99 is printed apart, as are the load generator's own GC pauses.

Usage::

    python -m benchmarks.mix [--seconds 300] [--rate 1500] [--stores sqlite,postgres+redis]
                             [--scenarios spread,tenant] [--users 200] [--tenant-rows 20000]
                             [--warmup 20] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from . import common, locust_run
from .common import HOST, log

P99_MAX_MS = 25.0
DRIFT_MAX = 0.20
GOAL_RPS = 1500.0
# a late user skips ahead rather than bursting to catch up: offer 5 % more than the goal
HEADROOM = 1.05
SCENARIOS = ("spread", "tenant")
STORES = ("sqlite", "postgres+redis")


def cache_stats(log_text: str) -> dict[str, Any] | None:
    """Hit rates from the ``cache stats {...}`` line each serving process logs at INFO when
    it stops (targeted invalidation), summed over the processes. None when the tree logs none."""
    totals: dict[str, dict[str, int]] = {}
    processes = 0
    for line in log_text.splitlines():
        if line.startswith("{"):  # CORE_API_LOG_FORMAT=json (the default): the message field
            try:
                line = str(json.loads(line).get("message", ""))
            except ValueError:
                continue
        _, marker, payload = line.partition("cache stats ")
        if not marker:
            continue
        try:
            stats = json.loads(payload)
        except ValueError:
            continue
        processes += 1
        for cache, counts in stats.items():
            into = totals.setdefault(cache, {})
            for name, n in counts.items():
                if isinstance(n, int):
                    into[name] = into.get(name, 0) + n
    if not processes:
        return None
    out: dict[str, Any] = {"processes": processes}
    for cache, counts in totals.items():
        if "hits" in counts:
            looked = counts["hits"] + counts.get("misses", 0)
            counts_out: dict[str, Any] = dict(counts)
            counts_out["hit_rate"] = round(counts["hits"] / looked, 4) if looked else None
            out[cache] = counts_out
        else:
            out[cache] = counts
    return out


def cache_text(stats: dict[str, Any] | None) -> str:
    if not stats:
        return "TODO: the service logged no cache stats (no hit/miss counters in this tree)"
    parts = [
        f"{name} {v['hit_rate']:.1%} of {v['hits'] + v['misses']:,}"
        for name, v in stats.items()
        if isinstance(v, dict) and v.get("hit_rate") is not None
    ]
    extra = stats.get("invalidation")
    if extra:
        parts.append(", ".join(f"{k} {v:,}" for k, v in extra.items()))
    return f"hit rate ({stats['processes']} processes): " + "; ".join(parts)


def run_one(scenario: str, store_name: str, args: Any, out_dir: Path) -> dict[str, Any]:
    label = f"mix-{scenario}-{store_name.replace('+', '-')}"
    with common.workdir("core-api-mix-") as workdir, contextlib.ExitStack() as stack:
        store = common.STORES[store_name](workdir)
        stack.callback(store.close)
        # the pixel limit is per client IP; every locust user shares 127.0.0.1
        store.env["CORE_API_PIXEL_RATE_LIMIT"] = "1000000000"
        # INFO, for the cache stats line each process logs when it stops
        store.env["CORE_API_LOG_LEVEL"] = "INFO"
        started = time.monotonic()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CORE_API_")}
        if scenario == "spread":
            log(f"[mix] {label}: seeding {args.users} users ...")
            users = common.populate(store.env, "users", "--count", str(args.users))
        else:
            log(f"[mix] {label}: seeding one tenant with {args.tenant_rows:,} workspaces ...")
            users = common.populate(store.env, "users", "--count", "1")
            uid, rows = str(users[0]["user_id"]), str(args.tenant_rows - 1)
            bulk = common.populate(store.env, "workspaces", "--user-id", uid, "--count", rows)
            env["BENCH_TENANT_IDS"] = f"{bulk['first_id']}-{bulk['last_id']}"
        seed_s = round(time.monotonic() - started, 1)
        env = common.locust_env(workdir, users, env)
        server = common.start_service(store, workdir, stack, users[0], workers=2)
        host = f"http://{HOST}:{server.port}"
        settle(args.settle)
        load_before = os.getloadavg()
        seconds = args.seconds if scenario == "spread" else args.tenant_seconds
        warmup = None
        if args.warmup > 0:
            log(f"[mix] {label}: warm-up, {args.rate:g} req/s for {args.warmup:g}s ...")
            warm = locust_run.run_scenario(
                "mix", host, env, out_dir, args.warmup, args.users, args.rate / args.users,
                f"{label}-warmup",
            )  # fmt: skip
            warmup = {
                "seconds": args.warmup,
                "p99_ms": (warm.get("timeline") or {}).get("p99_all_ms"),
                "failures": (warm.get("aggregate") or {}).get("failures"),
            }
        log(f"[mix] {label}: {args.rate:g} req/s for {seconds:g}s ...")
        cpu_before = server.cpu_seconds()
        result = locust_run.run_scenario(
            "mix", host, env, out_dir, seconds, args.users, args.rate / args.users, label
        )
        answered = (result.get("aggregate") or {}).get("requests") or 0
        # The service's CPU (both workers and Granian's main process) per answered request.
        service_cpu = server.cpu_seconds() - cpu_before
        result["service_cpu_us_per_request"] = (
            round(service_cpu / answered * 1e6) if answered else None
        )
        result["warmup"] = warmup
        if server.proc is not None and server.proc.poll() is not None:
            raise RuntimeError(f"service exited early:\n{server.tail()}")
        server.stop()  # graceful: each worker logs its cache stats on the way out
        result["cache"] = cache_stats(server.log_path.read_text(errors="replace"))
    result.update(
        {
            "store": store_name,
            "mix_scenario": scenario,
            "target_rps": args.rate,
            "seed_s": seed_s,
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        }
    )
    result["verdicts"] = verdicts(result, args.rate)
    return result


def settle(limit_s: float, quiet: float = 1.0) -> None:
    """Wait (up to ``limit_s``) until the 1-minute load average is under ``quiet``: runs
    back to back began at load 3-5 with the last run's PostgreSQL work still going, and
    on 2 cores that alone moved a p99 by tens of milliseconds."""
    deadline = time.monotonic() + limit_s
    while os.getloadavg()[0] >= quiet and time.monotonic() < deadline:
        time.sleep(2.0)


def verdicts(result: dict[str, Any], rate: float) -> list[dict[str, Any]]:
    tl = result.get("timeline") or {}
    agg = result.get("aggregate") or {}
    tag = f"{result['mix_scenario']} {result['store']}"
    failures = int(agg.get("failures", 0))
    rps = float(tl.get("rps") or agg.get("rps") or 0.0)
    p99 = tl.get("p99_all_ms") or agg.get("p99_ms") or 0.0
    first, last = tl.get("p99_first_ms"), tl.get("p99_last_ms")
    drift = (last / first - 1.0) if first and last else None
    goal = min(GOAL_RPS, rate / HEADROOM)
    held = rps >= goal and failures == 0 and p99 < P99_MAX_MS
    return [
        {
            "figure": f"mix {tag}: p99 < {P99_MAX_MS:g} ms, 0 failures at >= {goal:g} req/s",
            "value": f"{rps:.0f} req/s, p99 {p99:.1f} ms, {failures} failures",
            "pass": held,
        },
        {
            "figure": f"mix {tag}: p99 last/first {tl.get('window_s', 0):g}s within 20%",
            "value": f"{first} -> {last} ms" + (f" ({drift:+.0%})" if drift is not None else ""),
            "pass": drift is not None and abs(drift) <= DRIFT_MAX,
        },
    ]


def run(args: Any) -> dict[str, Any]:
    stamp = common.timestamp()
    out_dir = common.RESULTS / f"mix-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    runs, errors = [], {}
    for scenario in args.scenarios:
        for store_name in args.stores:
            try:
                runs.append(run_one(scenario, store_name, args, out_dir))
            except Exception as exc:
                errors[f"{scenario} {store_name}"] = f"{type(exc).__name__}: {exc}"
                log(f"[mix] {scenario} {store_name} FAILED: {exc}")
    return {
        "kind": "mix",
        "timestamp": stamp,
        "machine": common.machine_info(),
        "settings": {
            "seconds": args.seconds,
            "tenant_seconds": args.tenant_seconds,
            "rate": args.rate,
            "users": args.users,
            "tenant_rows": args.tenant_rows,
            "warmup": args.warmup,
            "workers": 2,
        },
        "csv_dir": str(out_dir),
        "runs": runs,
        "verdicts": [v for r in runs for v in r["verdicts"]],
        "errors": errors,
    }


def print_report(report: dict[str, Any]) -> None:
    s = report["settings"]
    print(
        f"\nMixed load (locust MixUser, {s['rate']:g} req/s target, {s['users']} users, "
        f"core-api serve --workers 2)"
    )
    for r in report["runs"]:
        tl, agg = r.get("timeline") or {}, r.get("aggregate") or {}
        print(
            f"{r['mix_scenario']} on {r['store']} ({r['seconds']:g}s, load avg before "
            f"{r['loadavg_before'][0]}): {tl.get('rps', 0):.0f} req/s, "
            f"{agg.get('failures', 0)}/{agg.get('requests', 0)} failures, "
            f"p99 {tl.get('p99_all_ms')} ms; p99 per {tl.get('bucket_s', 10):g}s: "
            f"{tl.get('p99_per_bucket_ms')}"
        )
        drift_by_name = tl.get("p99_first_last_by_name_ms") or {}
        for ep in r["endpoints"]:
            codes = r["status_codes"].get(ep["name"], {})
            code_text = " ".join(f"{k}:{v}" for k, v in sorted(codes.items()))
            first, last = drift_by_name.get(ep["name"]) or (None, None)
            print(
                f"  {ep['name'][:44]:<44} {ep['requests']:>7} {ep['failures']:>5} "
                f"p50 {ep['p50_ms']:>4.0f} p99 {ep['p99_ms']:>4.0f} ms "
                f"(first/last window {first}/{last})  {code_text}"
            )
        for failure in r["failures"][:5]:
            print(f"    failure x{failure['occurrences']}: {failure['name']}: {failure['error']}")
        print(f"  cache {cache_text(r.get('cache'))}")
        print(f"  service CPU per request: {r.get('service_cpu_us_per_request')} us")
        warm, gen_gc = r.get("warmup"), r.get("load_generator_gc") or {}
        if warm:
            print(
                f"  warm-up before it (not in the figures): {warm['seconds']:g}s, "
                f"p99 {warm['p99_ms']} ms, {warm['failures']} failures"
            )
        if gen_gc:
            print(
                f"  load generator GC: {gen_gc.get('collections')} collections, "
                f"{gen_gc.get('total_ms')} ms in all, longest {gen_gc.get('max_ms')} ms"
            )
    for v in report["verdicts"]:
        print(f"  {v['figure']:<66} {v['value']}  {'PASS' if v['pass'] else 'MISS'}")
    for name, error in report["errors"].items():
        print(f"  {name}: ERROR {error[:300]}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.mix", description=__doc__)
    p.add_argument("--seconds", type=float, default=300.0, help="run time of a spread run")
    p.add_argument("--tenant-seconds", type=float, default=120.0, help="of a tenant run")
    p.add_argument("--quick", action="store_true", help="60 s spread runs, 30 s tenant runs")
    p.add_argument(
        "--rate",
        type=float,
        default=GOAL_RPS * HEADROOM,
        help="offered req/s (constant); the goal is 1,500 or rate/1.05 when lower",
    )
    p.add_argument(
        "--warmup",
        type=float,
        default=20.0,
        help="seconds of the same load before the measured run (0: none); reported apart",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=90.0,
        help="at most this long before each run, wait for a 1-minute load average under 1",
    )
    p.add_argument("--users", type=int, default=200, help="locust users (= seeded users)")
    p.add_argument("--tenant-rows", type=int, default=20_000)
    p.add_argument("--stores", default=",".join(STORES), help=", ".join(STORES))
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=", ".join(SCENARIOS))
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    if args.quick:
        args.seconds, args.tenant_seconds = min(args.seconds, 60.0), min(args.tenant_seconds, 30.0)
    args.stores = [x for x in args.stores.split(",") if x]
    args.scenarios = [x for x in args.scenarios.split(",") if x]
    if set(args.stores) - set(common.STORES) or set(args.scenarios) - set(SCENARIOS):
        raise SystemExit(f"mix: stores from {list(common.STORES)}, scenarios from {SCENARIOS}")
    report = run(args)
    path = common.write_json(f"mix-{report['timestamp']}.json", report)
    print_report(report)
    print(f"results: {path} (CSV in {report['csv_dir']})")
    return report


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
