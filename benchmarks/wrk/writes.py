"""Write-path throughput: ``POST /api/v1/workspaces`` and ``POST /api/v1/api-keys``, each
request with a unique body and a unique ``Idempotency-Key`` (``post_unique.lua``), on one
Granian worker, on SQLite and on a fresh PostgreSQL database (created and dropped here).

Usage::

    python -m benchmarks.wrk.writes [--seconds 10] [--stores sqlite,postgres]
                                    [--endpoints workspaces,api-keys] [--profile]

``--profile`` runs py-spy (``record --format raw``) on the worker during a second wrk run
per endpoint and prints the top frames by self time; the stacks stay in ``results/``.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import time
from pathlib import Path

from .. import common
from ..common import HOST, RESULTS, log

LUA = Path(__file__).with_name("post_unique.lua")
REQUESTS = re.compile(r"(\d+) requests in")
ENDPOINTS = {"workspaces": "/api/v1/workspaces", "api-keys": "/api/v1/api-keys"}


def wrk(port: int, path: str, key: str, seconds: int, prefix: str) -> str:
    argv = ["wrk", "-t1", "-c32", f"-d{seconds}s", "-s", str(LUA), f"http://{HOST}:{port}"]
    argv += ["--", path, key, prefix]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True)
    return out.stdout


def summary(output: str) -> str:
    keep = ("Requests/sec", "Non-2xx", "errors:", "Latency ")
    return " | ".join(line.strip() for line in output.splitlines() if line.strip().startswith(keep))


def top_frames(raw: Path, n: int = 25) -> str:
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        frames = stack.split(";")
        total += samples
        self_time[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    lines = [f"{total} samples; self:"]
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in self_time.most_common(n)]
    lines.append("inclusive:")
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in inclusive.most_common(n)]
    return "\n".join(lines)


def run(store_name: str, args: argparse.Namespace, work: Path) -> None:
    store = common.postgres_store(work) if store_name == "postgres" else common.sqlite_store(work)
    try:
        creds = common.bootstrap(store.env, "bench writes", common.BENCH_TIER)
        server = common.service_server(store, work)
        server.start()
        try:
            headers = {"Authorization": f"Bearer {creds.key}"}
            server.wait_ready(f"/api/v1/workspaces/{creds.workspace_id}", headers)
            for name in args.endpoints.split(","):
                path = ENDPOINTS[name]
                wrk(server.port, path, creds.key, 2, "warm")
                cpu0, t0 = server.cpu_seconds(), time.monotonic()
                out = wrk(server.port, path, creds.key, args.seconds, "bench")
                cpu = server.cpu_seconds() - cpu0
                elapsed = time.monotonic() - t0
                requests = int(m.group(1)) if (m := REQUESTS.search(out)) else 0
                per_request = 1000 * cpu / max(requests, 1)
                log(
                    f"[writes] {store_name:8} POST {path}: {summary(out)} | "
                    f"server cpu {cpu / elapsed:.2f} cores, {per_request:.2f} ms/request"
                )
                if args.profile:
                    raw = RESULTS / f"writes-{store_name}-{name}-{common.timestamp()}.txt"
                    RESULTS.mkdir(parents=True, exist_ok=True)
                    pid = max(server.worker_pids())
                    spy = subprocess.Popen(
                        ["py-spy", "record", "--format", "raw", "--rate", "200", "--pid",
                         str(pid), "--duration", str(args.seconds), "--output", str(raw),
                         "--nonblocking"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )  # fmt: skip
                    wrk(server.port, path, creds.key, args.seconds, "prof")
                    spy.wait(timeout=args.seconds + 30)
                    print(f"== profile {store_name} POST {path} ({raw})\n{top_frames(raw)}")
        finally:
            server.stop()
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--endpoints", default="workspaces,api-keys")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with common.workdir() as work:
        for store_name in args.stores.split(","):
            run(store_name, args, work)


if __name__ == "__main__":
    main()
