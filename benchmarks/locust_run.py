"""Run the locust scenarios headless against a service started here, and summarise them.

Starts ``core-api serve --workers 1`` on a fresh SQLite database (or ``--store postgres``
/ ``redis``), bootstraps a bench-tier key and a free-tier key, then runs each scenario as a
separate, time-bounded locust process::

    locust -f benchmarks/locustfile.py --headless -u N -r N --run-time 8s --csv ... UserClass

CSV files land in ``benchmarks/results/locust-<timestamp>/``; the summary (req/s,
failures, p50/p95/p99 per endpoint, status-code counts) is printed and written to
``benchmarks/results/locust-<timestamp>.json``. The summary's figures come from the
locustfile's own exit report (locust's last periodic CSV write can miss the final second);
the CSV is the fallback.

Usage::

    python -m benchmarks.locust_run [--seconds 8] [--scenarios reads,writes,pixel,saturation]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import common
from .common import HOST, log

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"

# name: (user classes, users, per-user paced rate for read/write users)
SCENARIOS: dict[str, tuple[list[str], int, float]] = {
    "reads": (["ReadUser"], 20, 25.0),  # ~500 req/s paced
    "writes": (["WriteUser"], 10, 20.0),  # ~100 writes/s, 10% replays
    "pixel": (["PixelUser"], 10, 0.0),  # bursts of 20, unauthenticated
    "saturation": (["SaturationUser"], 4, 0.0),  # free tier, unpaced, until 429s
    "mixed": (["ReadUser", "WriteUser", "PixelUser"], 27, 10.0),
    "mix": (["MixUser"], 200, 7.5),  # the mixed load (benchmarks/mix.py seeds and runs it)
    "capacity": (["CapacityUser"], 200, 5.0),  # benchmarks/capacity.py seeds and steps it
}
DEFAULT_SCENARIOS = ("reads", "writes", "pixel", "saturation")


def _float(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return 0.0


def read_stats(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows.append(
                {
                    "type": row["Type"],
                    "name": row["Name"],
                    "requests": int(row["Request Count"]),
                    "failures": int(row["Failure Count"]),
                    "rps": round(_float(row["Requests/s"]), 1),
                    "p50_ms": _float(row["50%"]),
                    "p95_ms": _float(row["95%"]),
                    "p99_ms": _float(row["99%"]),
                    "max_ms": round(_float(row["Max Response Time"]), 1),
                }
            )
    return rows


def read_failures(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [
            {"name": r["Name"], "error": r["Error"], "occurrences": int(r["Occurrences"])}
            for r in csv.DictReader(f)
        ]


def run_scenario(
    name: str,
    host: str,
    env: dict[str, str],
    out_dir: Path,
    seconds: float,
    users_override: int | None,
    rate_override: float | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    classes, users, rate = SCENARIOS[name]
    users = users_override or users
    rate = rate_override or rate
    name = label or name
    prefix = out_dir / name
    status_file = out_dir / f"{name}_status.json"
    run_env = dict(env)
    run_env["BENCH_USER_RPS"] = str(rate or 10.0)
    run_env["BENCH_STATUS_FILE"] = str(status_file)
    locust = str(Path(sys.executable).with_name("locust"))
    argv = [
        locust, "-f", str(LOCUSTFILE), "--headless", "-u", str(users), "-r", str(users),
        "--run-time", f"{max(1, round(seconds))}s", "--stop-timeout", "2",
        "--csv", str(prefix), "-H", host, "--only-summary", "--loglevel", "WARNING",
        *classes,
    ]  # fmt: skip
    started = time.monotonic()
    with open(out_dir / f"{name}.log", "w") as logf:
        proc = subprocess.run(
            argv,
            env=run_env,
            cwd=str(common.ROOT),
            stdout=logf,
            stderr=subprocess.STDOUT,
            timeout=seconds + 60,
            check=False,
        )
    stats_path = Path(f"{prefix}_stats.csv")
    if not stats_path.exists():
        tail = (out_dir / f"{name}.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"locust produced no stats (rc {proc.returncode}):\n{tail}")
    rows = read_stats(stats_path)
    status: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        status = json.loads(status_file.read_text())
    return {
        "scenario": name,
        "user_classes": classes,
        "users": users,
        "paced_rps_per_user": rate or None,
        "seconds": seconds,
        "wall_s": round(time.monotonic() - started, 1),
        "locust_exit_code": proc.returncode,
        "endpoints": status.get("endpoints") or [r for r in rows if r["name"] != "Aggregated"],
        "aggregate": status.get("aggregate")
        or next((r for r in rows if r["name"] == "Aggregated"), None),
        "failures": read_failures(Path(f"{prefix}_failures.csv")),
        "status_codes": status.get("status", {}),
        "extra": status.get("extra", {}),
        "load_generator_gc": status.get("load_generator_gc", {}),
        "timeline": status.get("timeline", {}),
    }


def run(args: Any) -> dict[str, Any]:
    stamp = common.timestamp()
    out_dir = common.RESULTS / f"locust-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    with common.workdir("core-api-locust-") as workdir, contextlib.ExitStack() as stack:
        store = {
            "sqlite": common.sqlite_store,
            "postgres": common.postgres_store,
            "redis": common.redis_store,
        }[args.store](workdir)
        stack.callback(store.close)
        main_key = common.bootstrap(store.env, "bench-locust", common.BENCH_TIER)
        free_key = common.bootstrap(store.env, "bench-free", "free")
        server = common.service_server(store, workdir)
        server.start()
        stack.callback(server.stop)
        server.wait_ready(
            f"/api/v1/workspaces/{main_key.workspace_id}",
            {"Authorization": f"Bearer {main_key.key}"},
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("CORE_API_")}
        env.update(
            {
                "BENCH_KEY": main_key.key,
                "BENCH_WORKSPACE_ID": str(main_key.workspace_id),
                "BENCH_FREE_KEY": free_key.key,
                "BENCH_FREE_WORKSPACE_ID": str(free_key.workspace_id),
            }
        )
        host = f"http://{HOST}:{server.port}"
        for name in args.scenarios:
            log(f"[locust] {name} ({args.seconds:g}s) ...")
            try:
                results.append(run_scenario(name, host, env, out_dir, args.seconds, args.users))
                agg = results[-1]["aggregate"] or {}
                log(
                    f"[locust]   {name}: {agg.get('rps', 0)} req/s, "
                    f"{agg.get('failures', 0)} failures / {agg.get('requests', 0)}"
                )
            except Exception as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
                log(f"[locust]   {name} FAILED: {errors[name]}")
        if server.proc is not None and server.proc.poll() is not None:
            errors["server"] = f"service exited early:\n{server.tail()}"
    return {
        "kind": "locust",
        "timestamp": stamp,
        "machine": common.machine_info(),
        "store": args.store,
        "csv_dir": str(out_dir),
        "scenarios": results,
        "errors": errors,
    }


def print_report(report: dict[str, Any]) -> None:
    print(f"\nLocust scenarios (service on {report['store']}, 1 Granian worker, FastHttpUser)")
    header = f"{'scenario / endpoint':<48} {'reqs':>7} {'fail':>5} {'req/s':>8}"
    print(header + f" {'p50':>6} {'p95':>6} {'p99':>6}  status codes")
    for sc in report["scenarios"]:
        print(f"{sc['scenario']} ({sc['users']} users, {', '.join(sc['user_classes'])})")
        for ep in sc["endpoints"]:
            codes = sc["status_codes"].get(ep["name"], {})
            code_text = " ".join(f"{k}:{v}" for k, v in sorted(codes.items()))
            print(
                f"  {ep['name'][:46]:<46} {ep['requests']:>7} {ep['failures']:>5} "
                f"{ep['rps']:>8.1f} {ep['p50_ms']:>6.0f} {ep['p95_ms']:>6.0f} "
                f"{ep['p99_ms']:>6.0f}  {code_text}"
            )
        for failure in sc["failures"][:5]:
            print(f"    failure x{failure['occurrences']}: {failure['name']}: {failure['error']}")
        if sc["extra"]:
            print(f"    {sc['extra']}")
    for name, error in report["errors"].items():
        print(f"  {name}: ERROR {error[:300]}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.locust_run", description=__doc__)
    p.add_argument("--seconds", type=float, default=8.0, help="run time per scenario")
    p.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS), help=", ".join(SCENARIOS))
    p.add_argument("--users", type=int, default=None, help="override users per scenario")
    p.add_argument("--store", choices=("sqlite", "postgres", "redis"), default="sqlite")
    p.add_argument("--json", action="store_true", help="print the JSON report to stdout")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"locust_run: unknown scenarios {sorted(unknown)}")
    report = run(args)
    path = common.write_json(f"locust-{report['timestamp']}.json", report)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
        print(f"\nresults: {path} (CSV in {report['csv_dir']})")
    return report


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
