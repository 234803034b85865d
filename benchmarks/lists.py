"""List size: does one page of 25 cost the same from 100 rows as from 100,000 rows?

The list-size goal, on both backends (SQLite and PostgreSQL, one worker each). Per backend it
seeds two tenants: ``small`` (a user in 100 workspaces, 100 API keys in its home
workspace) and ``large`` (100,000 of each, written in bulk by ``benchmarks.populate``),
then measures in interleaved wrk slices::

    GET /api/v1/workspaces?per_page=25   small vs large
    GET /api/v1/api-keys?per_page=25     small vs large

The figure is large req/s over small req/s: PASS when it is at least 0.5 (within 2x).

Usage::

    python -m benchmarks.lists [--seconds 8] [--slices 4] [--backends sqlite,postgres]
                               [--small 100] [--large 100000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from typing import Any

from . import common
from .common import log
from .endpoints import NON_2XX_TOLERANCE, Target, interleave

MIN_RATIO = 0.5  # within 2x
LISTS = {"workspaces": "/api/v1/workspaces?per_page=25", "api-keys": "/api/v1/api-keys?per_page=25"}


def seed_tenant(env: dict[str, str], rows: int) -> dict[str, Any]:
    """A user owning ``rows`` workspaces (home included) with ``rows`` keys at home."""
    user = common.populate(env, "users", "--count", "1")[0]
    uid, wid = str(user["user_id"]), str(user["workspace_id"])
    if rows > 1:
        common.populate(env, "workspaces", "--user-id", uid, "--count", str(rows - 1))
        common.populate(env, "keys", "--user-id", uid, "--workspace-id", wid,
                        "--count", str(rows - 1))  # fmt: skip
    return user


def run_backend(backend: str, args: Any) -> dict[str, Any]:
    with common.workdir("core-api-lists-") as workdir, contextlib.ExitStack() as stack:
        store = common.STORES[backend](workdir)
        stack.callback(store.close)
        started = time.monotonic()
        log(f"[lists] {backend}: seeding {args.small:,} and {args.large:,} rows ...")
        tenants = {"small": seed_tenant(store.env, args.small),
                   "large": seed_tenant(store.env, args.large)}  # fmt: skip
        seed_s = round(time.monotonic() - started, 1)
        server = common.service_server(store, workdir, workers=1)
        server.start()
        stack.callback(server.stop)
        small = {"Authorization": f"Bearer {tenants['small']['key']}"}
        server.wait_ready(LISTS["workspaces"], small, timeout=60)
        targets = [
            Target(f"{what}:{size}", server, path,
                   {"Authorization": f"Bearer {tenants[size]['key']}"})
            for what, path in LISTS.items()
            for size in ("small", "large")
        ]  # fmt: skip
        results = interleave(
            targets, args.seconds, args.slices, args.connections, args.warmup, f"lists {backend}"
        )
    figures = []
    for what in LISTS:
        s, big = results[f"{what}:small"], results[f"{what}:large"]
        ratio = big["rps"] / s["rps"] if s["rps"] else 0.0
        clean = max(s["error_rate"], big["error_rate"]) <= NON_2XX_TOLERANCE
        figures.append(
            {
                "figure": f"list {what} {args.large:,} / {args.small:,} rows ({backend})",
                "small_rps": s["rps"],
                "large_rps": big["rps"],
                "value": round(ratio, 3),
                "budget": MIN_RATIO,
                "errors": s["non_2xx"] + big["non_2xx"] + s["socket_errors"] + big["socket_errors"],
                "pass": ratio >= MIN_RATIO and clean,
            }
        )
    return {"backend": backend, "seed_s": seed_s, "targets": results, "verdicts": figures}


def run(args: Any) -> dict[str, Any]:
    load_before = os.getloadavg()
    backends, errors = [], {}
    for backend in args.backends:
        try:
            backends.append(run_backend(backend, args))
        except Exception as exc:
            errors[backend] = f"{type(exc).__name__}: {exc}"
            log(f"[lists] {backend} FAILED: {errors[backend]}")
    return {
        **common.report_header("lists", load_before),
        "settings": {
            "seconds": args.seconds,
            "slices": args.slices,
            "connections": args.connections,
            "small": args.small,
            "large": args.large,
            "workers": 1,
        },
        "backends": backends,
        "verdicts": [v for b in backends for v in b["verdicts"]],
        "errors": errors,
    }


def print_report(report: dict[str, Any]) -> None:
    s = report["settings"]
    print(
        f"\nList size (one page of 25; wrk -t1 -c{s['connections']}, {s['seconds']:g}s each in "
        f"{s['slices']} slices, 1 worker, load avg before {report['loadavg_before'][0]})"
    )
    for b in report["backends"]:
        for name, t in b["targets"].items():
            print(
                f"  {b['backend']:<9} {name:<18} {t['rps']:>8.0f} req/s  p50 "
                f"{t.get('p50_ms', 0):.2f}  p99 {t.get('p99_ms', 0):.2f} ms  "
                f"errors {t['non_2xx'] + t['socket_errors']}"
            )
    for v in report["verdicts"]:
        print(f"  {v['figure']:<48} {v['value']:.3f} (>= {v['budget']}) "
              f"{'PASS' if v['pass'] else 'MISS'}")  # fmt: skip
    for name, error in report["errors"].items():
        print(f"  {name}: ERROR {error[:300]}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.lists", description=__doc__)
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per target")
    p.add_argument("--slices", type=int, default=4)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--backends", default="sqlite,postgres")
    p.add_argument("--small", type=int, default=100)
    p.add_argument("--large", type=int, default=100_000)
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    args.backends = [b for b in args.backends.split(",") if b]
    unknown = set(args.backends) - set(common.STORES)
    if unknown:
        raise SystemExit(f"lists: unknown backends {sorted(unknown)}")
    report = run(args)
    path = common.write_json(f"lists-{report['timestamp']}.json", report)
    print_report(report)
    print(f"results: {path}")
    return report


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
