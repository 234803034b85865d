"""Single-endpoint throughput on one worker, PostgreSQL store, against bare Falcon.

The single-endpoint goals: every endpoint below as a ratio to the bare Falcon baseline measured in
the same run (interleaved wrk slices, as ``peak.py`` does), and the two POSTs in absolute
req/s. The service runs ``core-api serve --workers 1`` on a fresh PostgreSQL database.

Seeding: a reader user (``bootstrap``) with 30 workspaces and 30 API keys in its home
workspace, so that each list answers a full page of 25; ``--writers`` more users with
their own keys (default 200): the POSTs (``wrk_post.lua``) rotate over them, so writes are
spread over many users and workspaces, each with a unique ``Idempotency-Key`` and body.

| target      | request                                   | budget              |
|-------------|-------------------------------------------|---------------------|
| baseline    | bare Falcon, fixed JSON body              |                     |
| ws_get      | GET /api/v1/workspaces/{id}               | >= 0.60 of baseline |
| key_get     | GET /api/v1/api-keys/{id}                 | >= 0.60 of baseline |
| ws_list     | GET /api/v1/workspaces?per_page=25        | >= 0.20 of baseline |
| key_list    | GET /api/v1/api-keys?per_page=25          | >= 0.20 of baseline |
| ws_post     | POST /api/v1/workspaces (Idempotency-Key) | >= 2,000 req/s      |
| key_post    | POST /api/v1/api-keys (Idempotency-Key)   | >= 2,000 req/s      |

Usage::

    python -m benchmarks.endpoints [--seconds 8] [--slices 4] [--writers 200]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import common
from .common import HOST, Server, log
from .peak import parse_wrk

LUA = Path(__file__).resolve().parent / "wrk_post.lua"

# target: (kind, minimum); kind "ratio" = req/s over baseline's, "rps" = absolute req/s
BUDGETS: dict[str, tuple[str, float]] = {
    "ws_get": ("ratio", 0.60),
    "key_get": ("ratio", 0.60),
    "ws_list": ("ratio", 0.20),
    "key_list": ("ratio", 0.20),
    "ws_post": ("rps", 2000.0),
    "key_post": ("rps", 2000.0),
}
NON_2XX_TOLERANCE = 0.001  # more than 0.1% errors makes a figure a MISS whatever its speed


@dataclass
class Target:
    name: str
    server: Server
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    script: list[str] = field(default_factory=list)  # wrk -s LUA -- ARGS
    slices: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server.port}{self.path}"


def wrk(target: Target, seconds: float, connections: int) -> dict[str, Any]:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    argv += ["--timeout", "5s"]
    for name, value in target.headers.items():
        argv += ["-H", f"{name}: {value}"]
    if target.script:
        argv += ["-s", str(LUA), target.url, "--", *target.script]
        # a fresh token per slice: every Idempotency-Key and name stays unique
        argv[-1] = f"{target.script[-1]}{secrets.token_hex(3)}"
    else:
        argv.append(target.url)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    return parse_wrk(out.stdout)


def interleave(
    targets: list[Target], seconds: float, slices: int, connections: int, warmup: float, tag: str
) -> dict[str, dict[str, Any]]:
    """Warm every target, then measure them in interleaved slices (A B C A B C ...), so that
    background load on a shared machine hits every target alike. Returns per target: req/s
    over all slices, median p50/p99 of the slices, non-2xx and socket errors."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found (apt-get install -y wrk)")
    for t in targets:
        if warmup > 0:
            wrk(t, warmup, connections)
    per_slice = max(1.0, seconds / max(1, slices))
    for i in range(max(1, slices)):
        for t in targets:
            t.slices.append(wrk(t, per_slice, connections))
        text = ", ".join(f"{t.name} {t.slices[-1]['rps']:.0f}" for t in targets)
        log(f"[{tag}] slice {i + 1}/{slices}: {text} req/s")
    results = {}
    for t in targets:
        requests = sum(s.get("requests", 0) for s in t.slices)
        duration = sum(s.get("duration_ms", 0.0) for s in t.slices) / 1e3
        r: dict[str, Any] = {
            "path": t.path,
            "rps": round(requests / duration, 1) if duration else 0.0,
            "requests": requests,
            "rps_slices": [s["rps"] for s in t.slices],
            "non_2xx": sum(s["non_2xx"] for s in t.slices),
            "socket_errors": sum(s["socket_errors"] for s in t.slices),
        }
        for key in ("p50_ms", "p99_ms"):
            values = [s[key] for s in t.slices if key in s]
            if values:
                r[key] = round(statistics.median(values), 3)
        r["error_rate"] = (r["non_2xx"] + r["socket_errors"]) / max(1, requests)
        results[t.name] = r
    return results


def run(args: Any) -> dict[str, Any]:
    load_before = os.getloadavg()
    with common.workdir("core-api-endpoints-") as workdir, contextlib.ExitStack() as stack:
        store = common.postgres_store(workdir)
        stack.callback(store.close)
        log(f"[endpoints] seeding a reader and {args.writers} writers on PostgreSQL ...")
        reader = common.populate(store.env, "users", "--count", "1")[0]
        uid, wid = str(reader["user_id"]), str(reader["workspace_id"])
        common.populate(store.env, "workspaces", "--user-id", uid, "--count", "29")
        common.populate(store.env, "keys", "--user-id", uid, "--workspace-id", wid, "--count", "29")
        writers = common.populate(store.env, "users", "--count", str(args.writers))
        keys_file = workdir / "writer-keys.txt"
        keys_file.write_text("".join(w["key"] + "\n" for w in writers))
        service = common.service_server(store, workdir, workers=1)
        baseline = common.baseline_server(workdir)
        auth = {"Authorization": f"Bearer {reader['key']}"}
        for server, path, headers in (
            (service, f"/api/v1/workspaces/{wid}", auth),
            (baseline, "/api/v1/workspaces/1", {}),
        ):
            server.start()
            stack.callback(server.stop)
            server.wait_ready(path, headers)
        token = secrets.token_hex(3)
        targets = [
            Target("baseline", baseline, "/api/v1/workspaces/1"),
            Target("ws_get", service, f"/api/v1/workspaces/{wid}", auth),
            Target("key_get", service, f"/api/v1/api-keys/{reader['key_id']}", auth),
            Target("ws_list", service, "/api/v1/workspaces?per_page=25", auth),
            Target("key_list", service, "/api/v1/api-keys?per_page=25", auth),
            Target("ws_post", service, "/api/v1/workspaces",
                   script=[str(keys_file), "/api/v1/workspaces", "workspace", f"w{token}"]),
            Target("key_post", service, "/api/v1/api-keys",
                   script=[str(keys_file), "/api/v1/api-keys", "api-key", f"k{token}"]),
        ]  # fmt: skip
        targets = [t for t in targets if t.name in args.targets or t.name == "baseline"]
        results = interleave(
            targets, args.seconds, args.slices, args.connections, args.warmup, "endpoints"
        )
        if service.proc is not None and service.proc.poll() is not None:
            raise RuntimeError(f"service exited early:\n{service.tail()}")
    return {
        **common.report_header("endpoints", load_before),
        "settings": {
            "seconds": args.seconds,
            "slices": args.slices,
            "connections": args.connections,
            "workers": 1,
            "store": "postgres",
            "writers": args.writers,
        },
        "targets": results,
        "verdicts": verdicts(results),
    }


def verdicts(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    base = results.get("baseline", {}).get("rps") or 0.0
    out = []
    for name, (kind, minimum) in BUDGETS.items():
        r = results.get(name)
        if r is None:
            continue
        value = r["rps"] / base if kind == "ratio" and base else r["rps"]
        clean = r["error_rate"] <= NON_2XX_TOLERANCE
        out.append(
            {
                "figure": f"{name} {'/ baseline' if kind == 'ratio' else 'req/s'}",
                "value": round(value, 3),
                "budget": minimum,
                "errors": r["non_2xx"] + r["socket_errors"],
                "pass": value >= minimum and clean,
            }
        )
    return out


def print_report(report: dict[str, Any]) -> None:
    s = report["settings"]
    print(
        f"\nSingle endpoints (wrk -t1 -c{s['connections']}, {s['seconds']:g}s each in "
        f"{s['slices']} interleaved slices, 1 worker, PostgreSQL, load avg before "
        f"{report['loadavg_before'][0]})"
    )
    print(f"{'target':<10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}  path")
    for name, t in report["targets"].items():
        print(
            f"{name:<10} {t['rps']:>9.0f} {t.get('p50_ms', 0):>8.2f} {t.get('p99_ms', 0):>8.2f}"
            f" {t['non_2xx'] + t['socket_errors']:>8}  {t['path']}"
        )
    for v in report["verdicts"]:
        print(f"  {v['figure']:<24} {v['value']:>9.3f} (>= {v['budget']:g}) "
              f"{'PASS' if v['pass'] else 'MISS'}")  # fmt: skip


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.endpoints", description=__doc__)
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per target")
    p.add_argument("--slices", type=int, default=4)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--writers", type=int, default=200, help="seeded users the POSTs rotate over")
    p.add_argument("--targets", default=",".join(BUDGETS), help="subset of " + ",".join(BUDGETS))
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    args.targets = set(args.targets.split(","))
    started = time.monotonic()
    report = run(args)
    report["wall_s"] = round(time.monotonic() - started, 1)
    path = common.write_json(f"endpoints-{report['timestamp']}.json", report)
    print_report(report)
    print(f"results: {path}")
    return report


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
