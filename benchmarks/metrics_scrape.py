"""/metrics during a locust run: every listed series shows, from both worker processes.

The capacity setting (``benchmarks/capacity.py``): ``core-api serve --workers 2`` on
PostgreSQL and Redis, seeded users each with a webhook endpoint on a loopback receiver, a
pixel site, and locust's ``CapacityUser`` mix (reads, idempotent writes, pixel bursts,
usage records, webhook publishes). While locust runs, ``/metrics`` is scraped every
second; a burst of requests with a wrong key meets the per-IP failed-authentication limit,
so rate-limit refusals show too. Checks that every series of the catalogue
(``core_api.metrics.exposition.SERIES``) appeared, that the request counts grew between
scrapes, that two processes reported, and prints one mid-run scrape's figures; the last
scrape is written to ``benchmarks/results/metrics-<timestamp>.txt``. Exits 1 when a series
is missing.

    python -m benchmarks.metrics_scrape [--seconds 20] [--rate 200] [--users 20]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import threading
import time
from typing import Any

import httpx

from core_api.metrics.exposition import SERIES

from . import common, locust_run
from .capacity import start_service
from .common import log

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$")


def _names(text: str) -> dict[str, float]:
    """Series base name -> sum of its samples (histograms by their _count)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, _, value = match.groups()
        if name.endswith("_bucket") or name.endswith("_sum"):
            continue
        base = name.removesuffix("_count")
        out[base] = out.get(base, 0.0) + float(value)
    return out


def _scrape_loop(base: str, stop: threading.Event, scrapes: list[tuple[float, str]]) -> None:
    with httpx.Client(base_url=base, timeout=5) as client:
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                got = client.get("/metrics")
                if got.status_code == 200:
                    scrapes.append((time.monotonic(), got.text))
            stop.wait(1.0)


def run(opts: argparse.Namespace) -> dict[str, Any]:
    stamp = common.timestamp()
    out_dir = common.RESULTS / f"metrics-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    with common.workdir("core-api-metrics-") as workdir, contextlib.ExitStack() as stack:
        service = start_service(workdir, stack, opts.users)
        base, env = service.host, service.env
        scrapes: list[tuple[float, str]] = []
        stop = threading.Event()
        scraper = threading.Thread(target=_scrape_loop, args=(base, stop, scrapes))
        scraper.start()
        try:
            # Wrong keys from one IP: past the failed-authentication limit, 429s.
            with httpx.Client(base_url=base, timeout=5) as client:
                for _ in range(40):
                    client.get(
                        "/api/v1/workspaces/1", headers={"Authorization": "Bearer sk_live_x"}
                    )
            log(f"[metrics] locust capacity mix, {opts.rate:g} req/s for {opts.seconds:g}s ...")
            result = locust_run.run_scenario(
                "capacity", base, env, out_dir, opts.seconds, opts.users,
                opts.rate / opts.users, "metrics",
            )  # fmt: skip
            time.sleep(2)  # the last snapshots and deliveries
        finally:
            stop.set()
            scraper.join(10)
    if len(scrapes) < 3:
        raise RuntimeError(f"only {len(scrapes)} scrapes")
    mid_at, mid = scrapes[len(scrapes) // 2]
    last_at, last = scrapes[-1]
    (common.RESULTS / f"metrics-{stamp}.txt").write_text(last)
    seen: set[str] = set()
    for _, text in scrapes:
        seen |= set(_names(text))
    missing = sorted(set(SERIES) - seen)
    first = _names(scrapes[0][1]).get("core_api_http_requests_total", 0.0)
    mid_names, last_names = _names(mid), _names(last)
    return {
        "scrapes": len(scrapes),
        "locust_requests": (result.get("aggregate") or {}).get("requests"),
        "locust_rps": (result.get("aggregate") or {}).get("rps"),
        "missing_series": missing,
        "processes": last_names.get("core_api_processes"),
        "requests_total_first_mid_last": [
            first,
            mid_names.get("core_api_http_requests_total"),
            last_names.get("core_api_http_requests_total"),
        ],
        "mid_run": {name: mid_names.get(name) for name in sorted(SERIES)},
        "mid_run_at_s": round(mid_at - scrapes[0][0], 1),
        "last_at_s": round(last_at - scrapes[0][0], 1),
        "last_scrape_file": str(common.RESULTS / f"metrics-{stamp}.txt"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.metrics_scrape", description=__doc__)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--rate", type=float, default=200.0, help="offered req/s")
    p.add_argument("--users", type=int, default=20)
    opts = p.parse_args(argv)
    report = run(opts)
    print(json.dumps(report, indent=2))
    if report["missing_series"] or report["processes"] != 2:
        print(f"missing: {report['missing_series']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
