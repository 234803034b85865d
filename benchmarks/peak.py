"""Peak-throughput runner: the bare Falcon baseline and the real service, in one run.

For each target it starts the server (one Granian worker, the flags ``core-api serve``
uses), waits until the measured URL answers 200, warms up, then drives
``wrk -t1 -c32 -d{N}s --latency`` with a bearer key at
``GET /api/v1/workspaces/{id}``. Targets:

- ``baseline``: ``benchmarks.baseline_app`` (fixed JSON body, no auth, no limits);
- ``sqlite``: the service on the embedded default store;
- ``postgres``: the service on a fresh PostgreSQL database (created and dropped here);
- ``redis``: the service on SQLite with ``CORE_API_REDIS_URL`` set (unique key prefix,
  purged afterwards).

The bench key's tier (from a temporary plans file) allows 10^9 requests/minute, so the
limiter is consulted and debited on every request but never refuses. Any non-2xx answer
makes a target's figure suspect and is reported.

Usage::

    python -m benchmarks.peak [--seconds 8] [--targets baseline,sqlite,postgres,redis]
                              [--profile sqlite] [--slices 4]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import common
from .common import HOST, Server, Store, log

TARGETS = ("baseline", "sqlite", "postgres", "redis")
BUDGETS = {
    # ratio name: (numerator, denominator, minimum)
    "service/baseline": ("sqlite", "baseline", 0.70),
    "postgres/baseline": ("postgres", "baseline", 0.50),
    "redis/local": ("redis", "sqlite", 0.85),
}

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"unparsable latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests/sec, latency percentiles, request count, errors from ``wrk --latency``."""
    result: dict[str, Any] = {"non_2xx": 0, "socket_errors": 0}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", output):
        result["rps"] = float(m.group(1))
    if m := re.search(r"(\d+) requests in ([\d.]+\w+)", output):
        result["requests"] = int(m.group(1))
        result["duration_ms"] = _ms(m.group(2))
    for pct, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", output, re.M):
        result[f"p{pct}_ms"] = round(_ms(value), 3)
    if m := re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", output):
        result["avg_ms"] = round(_ms(m.group(1)), 3)
        result["max_ms"] = round(_ms(m.group(3)), 3)
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output):
        result["non_2xx"] = int(m.group(1))
    if m := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    ):
        result["socket_errors"] = sum(int(g) for g in m.groups())
    if "rps" not in result:
        raise RuntimeError(f"could not parse wrk output:\n{output}")
    return result


def wrk(
    url: str, headers: dict[str, str], seconds: float, connections: int, threads: int
) -> dict[str, Any]:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    argv += ["--latency", "--timeout", "5s"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(url)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    return parse_wrk(out.stdout)


def probe(url: str, headers: dict[str, str]) -> dict[str, Any]:
    """One request: status, body size and the rate-limit headers (is the limiter on?)."""
    import urllib.request

    req = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(req, timeout=5) as resp:
        body = resp.read()
        return {
            "status": resp.status,
            "body_bytes": len(body),
            "x_ratelimit_limit": resp.headers.get("X-RateLimit-Limit"),
            "x_ratelimit_remaining": resp.headers.get("X-RateLimit-Remaining"),
        }


# --------------------------------------------------------------------------- profiling


def profile(
    name: str,
    server: Server,
    url: str,
    headers: dict[str, str],
    seconds: float,
    out_dir: Path,
    args: Any,
) -> dict[str, Any]:
    """py-spy record (collapsed stacks) on the worker during a separate wrk run."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        log("[peak] py-spy not found (pip install py-spy); skipping the profile")
        return {}
    pid = server.worker_pids()[-1]
    out_dir.mkdir(parents=True, exist_ok=True)
    collapsed = out_dir / f"profile-{name}-{common.timestamp()}.txt"
    spy = subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--duration", str(round(seconds)),
         "--rate", "250", "--format", "raw", "--output", str(collapsed), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(0.5)
    loaded = wrk(url, headers, seconds, args.connections, args.threads)
    try:
        _, err = spy.communicate(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        spy.kill()
        _, err = spy.communicate()
    if not collapsed.exists():
        log(f"[peak] py-spy produced no profile: {err.strip()[-500:]}")
        return {}
    summary = summarise_collapsed(collapsed)
    summary["file"] = str(collapsed)
    summary["rps_while_profiled"] = loaded["rps"]
    return summary


def _frame_label(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"
    match = re.match(r"(.*?) \((.*?)(?::\d+)?\)$", frame)
    if not match:
        return frame
    func, path = match.groups()
    for marker in ("site-packages/", "python/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{func} ({path})"


# Frames of process start-up (Granian's supervisor forking its worker): a stack that ends
# in these is the worker's main thread inside Granian's Rust runtime / the event loop.
_ROOT_CHAIN = ("granian/", "multiprocessing/", "click/", "<frozen runpy>", "runpy")
NATIVE = "<server: Granian runtime + event loop (native)>"


def summarise_collapsed(path: Path, top: int = 20) -> dict[str, Any]:
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = native_threads = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        if not stack.strip():  # threads with no Python frame (Granian's Rust threads)
            native_threads += int(count_text)
            continue
        count = int(count_text)
        frames = [_frame_label(f) for f in stack.split(";") if f]
        while frames and any(m in frames[0] for m in _ROOT_CHAIN):
            frames.pop(0)
        frames = frames or [NATIVE]
        total += count
        self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count

    def table(counter: collections.Counter[str]) -> list[dict[str, Any]]:
        return [
            {"frame": frame, "samples": n, "pct": round(100 * n / total, 1)}
            for frame, n in counter.most_common(top)
        ]

    return {
        "samples": total,
        "samples_without_python_frames": native_threads,
        "self": table(self_time),
        "inclusive": table(inclusive),
    }


# --------------------------------------------------------------------------- targets


def _make_store(target: str, workdir: Path) -> Store:
    if target == "sqlite":
        return common.sqlite_store(workdir)
    if target == "postgres":
        return common.postgres_store(workdir)
    if target == "redis":
        return common.redis_store(workdir)
    raise ValueError(target)


@dataclass
class Live:
    """A started, warmed-up target."""

    target: str
    server: Server
    url: str
    headers: dict[str, str]
    info: dict[str, Any]
    slices: list[dict[str, Any]] = field(default_factory=list)


def start_target(target: str, workdir: Path, stack: contextlib.ExitStack, args: Any) -> Live:
    if target == "baseline":
        server = common.baseline_server(workdir)
        path, headers = "/api/v1/workspaces/1", {}
    else:
        store = _make_store(target, workdir)
        stack.callback(store.close)
        creds = common.bootstrap(store.env, f"bench-{target}", common.BENCH_TIER)
        server = common.service_server(store, workdir)
        path = f"/api/v1/workspaces/{creds.workspace_id}"
        headers = {"Authorization": f"Bearer {creds.key}"}
    started = time.monotonic()
    server.start()
    stack.callback(server.stop)
    server.wait_ready(path, headers)
    url = f"http://{HOST}:{server.port}{path}"
    info: dict[str, Any] = {"target": target, "url_path": path}
    info["startup_s"] = round(time.monotonic() - started, 2)
    info["probe"] = probe(url, headers)
    if args.warmup > 0:
        wrk(url, headers, args.warmup, args.connections, args.threads)
    return Live(target, server, url, headers, info)


def combine(live: Live) -> dict[str, Any]:
    """Aggregate the slices: req/s over all slices, median of the slices' percentiles."""
    slices = live.slices
    result = dict(live.info)
    requests = sum(s.get("requests", 0) for s in slices)
    duration_s = sum(s.get("duration_ms", 0.0) for s in slices) / 1e3
    result["rps"] = round(requests / duration_s, 1) if duration_s else 0.0
    result["requests"] = requests
    result["duration_s"] = round(duration_s, 2)
    result["rps_slices"] = [s["rps"] for s in slices]
    for key in ("p50_ms", "p75_ms", "p90_ms", "p99_ms", "avg_ms"):
        values = [s[key] for s in slices if key in s]
        if values:
            result[key] = round(statistics.median(values), 3)
    result["max_ms"] = max((s.get("max_ms", 0.0) for s in slices), default=0.0)
    cpu = sum(s.get("cpu_s", 0.0) for s in slices)
    result["server_cpu_s"] = round(cpu, 2)
    result["cpu_us_per_req"] = round(cpu / requests * 1e6, 1) if requests else None
    result["non_2xx"] = sum(s["non_2xx"] for s in slices)
    result["socket_errors"] = sum(s["socket_errors"] for s in slices)
    return result


def run(args: Any) -> dict[str, Any]:
    """Start every target, then measure them in interleaved slices (A B C D A B C D ...).

    The machine is shared (2 cores, other work may come and go): interleaving short slices
    exposes every target to the same background noise, so the ratios hold even when the
    absolute figures drift. Idle servers cost next to nothing while another is measured.
    """
    if shutil.which("wrk") is None:
        raise SystemExit("peak: wrk not found (apt-get install -y wrk)")
    errors: dict[str, str] = {}
    lives: list[Live] = []
    load_before = os.getloadavg()
    with common.workdir("core-api-peak-") as workdir, contextlib.ExitStack() as stack:
        for target in args.targets:
            log(f"[peak] starting {target} ...")
            try:
                lives.append(start_target(target, workdir, stack, args))
            except Exception as exc:
                errors[target] = f"{type(exc).__name__}: {exc}"
                log(f"[peak]   {target} FAILED to start: {errors[target]}")
        n = max(1, args.slices)
        per_slice = max(1.0, args.seconds / n)
        for i in range(n):
            for live in lives:
                if live.target in errors:
                    continue
                try:
                    cpu_before = live.server.cpu_seconds()
                    measured = wrk(
                        live.url, live.headers, per_slice, args.connections, args.threads
                    )
                    measured["cpu_s"] = live.server.cpu_seconds() - cpu_before
                    live.slices.append(measured)
                except Exception as exc:
                    errors[live.target] = f"{type(exc).__name__}: {exc}"
                    log(f"[peak]   {live.target} FAILED: {errors[live.target]}")
            summary = ", ".join(
                f"{lv.target} {lv.slices[-1]['rps']:.0f}" for lv in lives if lv.slices
            )
            log(f"[peak] slice {i + 1}/{n} ({per_slice:.0f}s each): {summary} req/s")
        results: dict[str, Any] = {}
        for live in lives:
            if live.slices and live.target not in errors:
                results[live.target] = combine(live)
        for live in lives:
            if live.target in args.profile and live.target in results:
                log(f"[peak] profiling {live.target} with py-spy ...")
                results[live.target]["profile"] = profile(
                    live.target, live.server, live.url, live.headers, args.profile_seconds,
                    args.profile_dir, args,
                )  # fmt: skip
    ratios = {}
    for name, (num, den, minimum) in BUDGETS.items():
        if num in results and den in results:
            value = results[num]["rps"] / results[den]["rps"]
            ratios[name] = {
                "ratio": round(value, 3),
                "budget": minimum,
                "pass": value >= minimum,
                "shortfall_pct_points": round(max(0.0, minimum - value) * 100, 1),
            }
    # The same comparisons in server CPU time per request: far less sensitive to other
    # load on a shared machine than req/s (informational; the budgets are on req/s).
    cpu_ratios = {}
    for name, (num, den, _) in BUDGETS.items():
        a, b = results.get(num, {}), results.get(den, {})
        if a.get("cpu_us_per_req") and b.get("cpu_us_per_req"):
            cpu_ratios[name] = round(b["cpu_us_per_req"] / a["cpu_us_per_req"], 3)
    return {
        **common.report_header("peak", load_before),
        "settings": {
            "seconds": args.seconds,
            "slices": n,
            "warmup": args.warmup,
            "connections": args.connections,
            "threads": args.threads,
            "workers": 1,
            "tool": "wrk",
            "path": "GET /api/v1/workspaces/{id}",
        },
        "targets": results,
        "ratios": ratios,
        "cpu_ratios": cpu_ratios,
        "errors": errors,
    }


def print_report(report: dict[str, Any]) -> None:
    targets, ratios = report["targets"], report["ratios"]
    s = report["settings"]
    print(
        f"\nPeak throughput, GET /api/v1/workspaces/{{id}} (wrk -t{s['threads']} "
        f"-c{s['connections']}, {s['seconds']:g}s per target in {s['slices']} interleaved "
        f"slices, 1 Granian worker, {report['machine'].get('cpus')} CPUs, "
        f"load avg before {report['loadavg_before'][0]})"
    )
    print(
        f"{'target':<10} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} "
        f"{'cpu us/req':>10}  ratio"
    )
    base = targets.get("baseline", {}).get("rps")
    for name in TARGETS:
        if name not in targets:
            if name in report["errors"]:
                print(f"{name:<10} {'error':>10}  {report['errors'][name][:80]}")
            continue
        t = targets[name]
        ratio = f"{t['rps'] / base:.2f}x baseline" if base else ""
        print(
            f"{name:<10} {t['rps']:>10.0f} {t.get('p50_ms', 0):>8.2f} {t.get('p99_ms', 0):>8.2f} "
            f"{t['non_2xx']:>8} {t.get('cpu_us_per_req') or 0:>10.1f}  {ratio}"
        )
    if ratios:
        print(f"\n{'budget':<20} {'ratio':>7} {'min':>6}  verdict  (cpu-per-request ratio)")
        for name, r in ratios.items():
            verdict = "PASS" if r["pass"] else f"MISS by {r['shortfall_pct_points']} points"
            cpu = report.get("cpu_ratios", {}).get(name)
            cpu_text = f"  (cpu {cpu:.3f})" if cpu else ""
            print(f"{name:<20} {r['ratio']:>7.3f} {r['budget']:>6.2f}  {verdict}{cpu_text}")
    for name, t in targets.items():
        prof = t.get("profile")
        if prof and prof.get("samples"):
            print(f"\nprofile[{name}] ({prof['samples']} samples, {prof['file']})")
            print("  top self time:")
            for row in prof["self"][:12]:
                print(f"    {row['pct']:>5.1f}%  {row['frame']}")
            print("  top inclusive:")
            for row in prof["inclusive"][:16]:
                print(f"    {row['pct']:>5.1f}%  {row['frame']}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.peak", description=__doc__)
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per target")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per target")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--slices", type=int, default=4, help="interleaved wrk runs per target (seconds split)"
    )
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument(
        "--profile",
        default="",
        help="comma-separated targets to profile with py-spy after measuring (e.g. sqlite)",
    )
    p.add_argument("--profile-seconds", type=float, default=6.0)
    p.add_argument("--profile-dir", type=Path, default=common.RESULTS)
    p.add_argument("--json", action="store_true", help="print the JSON report to stdout")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    args.targets = [t for t in args.targets.split(",") if t]
    args.profile = {t for t in args.profile.split(",") if t}
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        raise SystemExit(f"peak: unknown targets {sorted(unknown)}; choose from {TARGETS}")
    report = run(args)
    path = common.write_json(f"peak-{report['timestamp']}.json", report)
    if args.json:
        import json

        print(json.dumps(report, indent=2))
    else:
        print_report(report)
        print(f"\nresults: {path}")
    return report


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
