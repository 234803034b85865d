"""``make bench``: every part below, then one summary with each budget marked PASS/MISS.

Usage::

    python -m benchmarks.run [--only micro,peak,locust,endpoints,lists,mix,capacity,
                              entitlements,pixel] [--seconds N]
                             [--mix-seconds N] [--quick] [--strict]

``--seconds`` is the measured time per wrk target and per locust scenario (default 8).
``--mix-seconds`` is the run time of each mixed-load run on each store (default 300, the
large-tenant runs take 120; the full run then takes about 20 minutes on 2 cores).
``--quick`` is a development run (2 s per wrk target, 60 s mix runs, 30 s tenant runs,
quick micro-benchmarks). ``--strict`` exits 1 when a budget is missed. Every part writes
JSON under ``benchmarks/results/``; this writes ``run-<timestamp>.json`` tying them
together.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import capacity, common, endpoints, entitlements, lists, locust_run, mix, peak, pixel

PARTS = (
    "micro",
    "peak",
    "locust",
    "endpoints",
    "lists",
    "mix",
    "capacity",
    "entitlements",
    "pixel",
)
GOAL_PARTS = ("endpoints", "lists", "mix", "capacity", "entitlements", "pixel")
MICRO = Path(__file__).resolve().parent / "micro" / "bench_native.py"
MICRO_MIN_SPEEDUP = {"rate_check": 10.0}  # budget: the limiter check >= 10x pure Python
MICRO_DEFAULT_MIN = 3.0  # budget: each Rust hot path >= 3x the obvious Python


def run_micro(quick: bool, stamp: str) -> dict[str, Any]:
    if not MICRO.exists():
        return {"skipped": f"{MICRO.relative_to(common.ROOT)} not present"}
    out = common.RESULTS / f"micro-{stamp}.json"
    argv = [sys.executable, str(MICRO), "--json", str(out)] + (["--quick"] if quick else [])
    proc = subprocess.run(argv, cwd=str(common.ROOT), timeout=300, check=False)
    if proc.returncode != 0 or not out.exists():
        return {"error": f"bench_native.py exited with {proc.returncode}"}
    data: dict[str, Any] = json.loads(out.read_text())
    data["file"] = str(out)
    return data


def _guarded(part: Any, argv: list[str]) -> dict[str, Any]:
    """Run a part; a crash becomes an error entry in the summary, not a lost run."""
    try:
        result: dict[str, Any] = part(argv)
        return result
    except Exception as exc:
        common.log(f"[bench] {part.__module__} failed: {exc}")
        return {"verdicts": [], "errors": {"run": f"{type(exc).__name__}: {exc}"}}


def micro_budget(case: str) -> float:
    for prefix, minimum in MICRO_MIN_SPEEDUP.items():
        if case.startswith(prefix):
            return minimum
    return MICRO_DEFAULT_MIN


def summarise(summary: dict[str, Any]) -> list[str]:
    """The final summary; returns the list of missed budgets."""
    missed: list[str] = []
    print("\n" + "=" * 78)
    print("Benchmark summary")
    m = common.machine_info()
    print(f"machine: {m.get('cpu', '?')}, {m.get('cpus')} CPUs, Python {m.get('python')}")
    micro = summary.get("micro")
    if micro is not None:
        print("\nmicro (Rust vs pure Python, best of rounds):")
        if "results" in micro:
            for r in micro["results"]:
                minimum = micro_budget(r["case"])
                ok = r["speedup"] >= minimum
                if not ok and "tuned" not in r["case"]:
                    missed.append(f"micro {r['case']}: {r['speedup']:.1f}x < {minimum:g}x")
                verdict = "PASS" if ok else ("info" if "tuned" in r["case"] else "MISS")
                print(
                    f"  {r['case']:<36} {r['rust_ns']:>8.0f} ns vs {r['python_ns']:>8.0f} ns"
                    f"  {r['speedup']:>6.1f}x  (>= {minimum:g}x) {verdict}"
                )
        else:
            print(f"  {micro.get('skipped') or micro.get('error')}")
    pk = summary.get("peak")
    if pk is not None:
        print("\npeak (wrk, GET /api/v1/workspaces/{id}, 1 worker):")
        for name in peak.TARGETS:
            t = pk["targets"].get(name)
            if t:
                print(
                    f"  {name:<10} {t['rps']:>9.0f} req/s  p50 {t.get('p50_ms', 0):.2f} ms"
                    f"  p99 {t.get('p99_ms', 0):.2f} ms  non-2xx {t['non_2xx']}"
                )
            elif name in pk["errors"]:
                print(f"  {name:<10} ERROR {pk['errors'][name][:100]}")
                missed.append(f"peak {name}: error")
        for name, r in pk["ratios"].items():
            verdict = "PASS" if r["pass"] else f"MISS by {r['shortfall_pct_points']} points"
            if not r["pass"]:
                missed.append(f"peak {name}: {r['ratio']:.2f} < {r['budget']:.2f}")
            print(f"  {name:<20} {r['ratio']:.3f} (>= {r['budget']:.2f}) {verdict}")
    lc = summary.get("locust")
    if lc is not None:
        print(f"\nlocust (service on {lc['store']}):")
        for sc in lc["scenarios"]:
            agg = sc["aggregate"] or {}
            codes: dict[str, int] = {}
            for per in sc["status_codes"].values():
                for code, n in per.items():
                    codes[code] = codes.get(code, 0) + n
            code_text = " ".join(f"{k}:{v}" for k, v in sorted(codes.items()))
            print(
                f"  {sc['scenario']:<11} {agg.get('rps', 0):>8.1f} req/s  "
                f"fail {agg.get('failures', 0)}/{agg.get('requests', 0)}  "
                f"p50 {agg.get('p50_ms', 0):.0f} p95 {agg.get('p95_ms', 0):.0f} "
                f"p99 {agg.get('p99_ms', 0):.0f} ms  [{code_text}]"
            )
            if agg.get("failures"):
                missed.append(f"locust {sc['scenario']}: {agg['failures']} failures")
        for name, error in lc["errors"].items():
            print(f"  {name}: ERROR {error[:200]}")
            missed.append(f"locust {name}: error")
    goals = [v for part in GOAL_PARTS for v in summary.get(part, {}).get("verdicts", [])]
    if goals:
        print("\ngoals (single endpoints, list size, mixed load, entitlements, pixel):")
        for v in goals:
            value = v["value"] if isinstance(v["value"], str) else f"{v['value']:.3f}"
            budget = v.get("budget", "")
            if budget != "":
                budget = f" ({budget})" if isinstance(budget, str) else f" (>= {budget:g})"
            print(f"  {v['figure']:<66} {value}{budget}  {'PASS' if v['pass'] else 'MISS'}")
            if not v["pass"]:
                missed.append(f"{v['figure']}: {value}")
        for part in GOAL_PARTS:
            for name, error in summary.get(part, {}).get("errors", {}).items():
                print(f"  {part} {name}: ERROR {error[:200]}")
                missed.append(f"{part} {name}: error")
    for r in summary.get("mix", {}).get("runs", []):
        tag = f"{r['mix_scenario']} {r['store']}"
        print(f"  cache under the mix, {tag}: {mix.cache_text(r.get('cache'))}")
    print("\n" + ("all budgets met" if not missed else "missed: " + "; ".join(missed)))
    return missed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    p.add_argument("--only", default=",".join(PARTS), help="comma-separated: " + ",".join(PARTS))
    p.add_argument("--mix-seconds", type=float, default=None, help="each mix run (300)")
    p.add_argument("--seconds", type=float, default=None, help="seconds per target/scenario")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 s each, quick micro")
    p.add_argument("--profile", default="", help="peak targets to profile with py-spy")
    p.add_argument("--strict", action="store_true", help="exit 1 when a budget is missed")
    args = p.parse_args(argv)
    parts = [x for x in args.only.split(",") if x]
    if set(parts) - set(PARTS):
        p.error(f"--only takes {', '.join(PARTS)}")
    seconds = args.seconds or (2.0 if args.quick else 8.0)
    stamp = common.timestamp()
    started = time.monotonic()
    summary: dict[str, Any] = {"timestamp": stamp, "machine": common.machine_info()}
    if "micro" in parts:
        common.log("[bench] micro-benchmarks ...")
        summary["micro"] = run_micro(args.quick, stamp)
    if "peak" in parts:
        common.log("[bench] peak throughput ...")
        peak_argv = ["--seconds", str(seconds), "--warmup", "1" if args.quick else "2"]
        if args.profile:
            peak_argv += ["--profile", args.profile]
        summary["peak"] = peak.main(peak_argv)
    if "locust" in parts:
        common.log("[bench] locust scenarios ...")
        summary["locust"] = locust_run.main(["--seconds", str(seconds)])
    if "endpoints" in parts:
        common.log("[bench] single endpoints (PostgreSQL, 1 worker) ...")
        summary["endpoints"] = _guarded(endpoints.main, ["--seconds", str(seconds)])
    if "lists" in parts:
        common.log("[bench] list size ...")
        summary["lists"] = _guarded(lists.main, ["--seconds", str(seconds)])
    if "mix" in parts:
        common.log("[bench] mixed load ...")
        mix_argv = ["--quick"] if args.quick else []
        if args.mix_seconds:
            mix_argv += ["--seconds", str(args.mix_seconds)]
            mix_argv += ["--tenant-seconds", str(min(args.mix_seconds, 120.0))]
        summary["mix"] = _guarded(mix.main, mix_argv)
    if "capacity" in parts:
        common.log("[bench] capacity mix (PostgreSQL + Redis, 2 workers) ...")
        summary["capacity"] = _guarded(capacity.main, ["--quick"] if args.quick else [])
    if "entitlements" in parts:
        common.log("[bench] entitlements (PostgreSQL, 1 worker) ...")
        summary["entitlements"] = _guarded(entitlements.main, ["--seconds", str(seconds)])
    if "pixel" in parts:
        common.log("[bench] pixel ingest ...")
        pixel_argv = ["--seconds", str(seconds)]
        if args.quick:
            pixel_argv += ["--events", "100000", "--burst", "100000"]
        summary["pixel"] = _guarded(pixel.main, pixel_argv)
    missed = summarise(summary)
    summary["missed"] = missed
    summary["wall_s"] = round(time.monotonic() - started, 1)
    path = common.write_json(f"run-{stamp}.json", summary)
    print(f"total {summary['wall_s']:.0f}s; results: {path}")
    return 1 if (args.strict and missed) else 0


if __name__ == "__main__":
    raise SystemExit(main())
