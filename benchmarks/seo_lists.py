"""SEO issue lists: does a page (with its exact total) cost the same at 2,000 issues as at
200,000? Repository level (the SQL a request runs, no HTTP), both backends.

Per backend it creates a fresh database, migrates it, and fills two workspaces with
issues spread over 50 types, 4 severities and 1,000 URLs, and their counters as
``SeoService.submit`` keeps them. Then, interleaving the two workspaces, it times
``page_issues`` + the total (``total_from_page`` or ``count_issues``) for each query shape
and prints the median per workspace and large/small. Close to 1 means the page cost does
not grow with the list (the budget for lists is within 2x).

Usage::

    python -m benchmarks.seo_lists [--backends sqlite,postgres] [--small 2000]
                                   [--large 200000] [--rounds 40]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from core_api.seo import repo
from core_api.seo.validation import IssueFilter
from core_api.storage import open_database
from core_api.storage.base import Database
from core_api.storage.migrate import migrate
from core_api.web.listing import parse_list_query

from .common import DEFAULT_PG_ADMIN_URL

CASES: list[tuple[str, dict[str, str], IssueFilter]] = [
    ("unfiltered", {}, IssueFilter()),
    ("sort=-severity", {"sort": "-severity"}, IssueFilter()),
    ("severity=error", {}, IssueFilter(severities=(4,))),
    ("issue_type=t3", {}, IssueFilter(issue_types=("t3",))),
    ("url=.../p7 (counted)", {}, IssueFilter(url="https://example.com/p7")),
    ("created_after=2030-01-01", {"created_after": "2030-01-01T06:00:00Z"}, IssueFilter()),
    (
        "+ severity=error",
        {"created_after": "2030-01-01T06:00:00Z"},
        IssueFilter(severities=(4,)),
    ),
    ("page=40", {"page": "40"}, IssueFilter()),
]
START_MS = 1_767_225_600_000
BATCH = 2_000


async def fill(db: Database, workspace_id: int, issues: int) -> None:
    report = await db.fetch_one(
        "INSERT INTO seo_reports (workspace_id, url, seo, created_at) "
        "VALUES (?, 'https://example.com/', 1, ?) RETURNING id",
        (workspace_id, START_MS),
    )
    assert report is not None
    for start in range(0, issues, BATCH):
        params: list[Any] = []
        rows = range(start, min(issues, start + BATCH))
        for i in rows:
            # Spread over time so that date filters select a recent slice.
            at = START_MS + i * (200_000_000_000 // issues)
            params += [
                report["id"],
                workspace_id,
                f"https://example.com/p{i % 1000}",
                f"t{i % 50}",
                1 + i % 4,
                "div",
                None,
                at,
            ]
        values = ", ".join("(?, ?, ?, ?, ?, ?, ?, ?)" for _ in rows)
        await db.execute(
            "INSERT INTO seo_issues (report_id, workspace_id, url, issue_type, severity, "
            f"element, details, created_at) VALUES {values}",
            params,
        )
    await db.execute(
        "INSERT INTO seo_totals (workspace_id, reports, issues) VALUES (?, 1, ?)",
        (workspace_id, issues),
    )
    await db.execute(
        "INSERT INTO seo_days (workspace_id, day, reports, errors, warnings, notices, infos) "
        "SELECT workspace_id, created_at - created_at % 86400000, 0, "
        "SUM(CASE WHEN severity = 4 THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN severity = 3 THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN severity = 2 THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN severity = 1 THEN 1 ELSE 0 END) "
        "FROM seo_issues WHERE workspace_id = ? GROUP BY 1, 2",
        (workspace_id,),
    )
    await db.execute(
        "INSERT INTO seo_issue_counts (workspace_id, issue_type, severity, issues) "
        "SELECT workspace_id, issue_type, severity, COUNT(*) FROM seo_issues "
        "WHERE workspace_id = ? GROUP BY workspace_id, issue_type, severity",
        (workspace_id,),
    )


async def page_and_total(db: Database, workspace_id: int, params: dict[str, str], f: Any) -> int:
    query = repo.with_time_order(parse_list_query(params, repo.ISSUE_SPEC))
    page = await repo.page_issues(db, workspace_id, f, query)
    total = query.total_from_page(len(page))
    if total is None:
        total = await repo.count_issues(db, workspace_id, f, query)
    return total


async def measure(url: str, small: int, large: int, rounds: int) -> None:
    db = await open_database(url)
    try:
        await migrate(db)
        await db.execute(
            "INSERT INTO users (name, email, created_at, updated_at) "
            "VALUES ('bench', 'bench@example.test', 0, 0)"
        )
        user = await db.fetch_one("SELECT id FROM users")
        assert user is not None
        ids = []
        for name in ("small", "large"):
            row = await db.fetch_one(
                "INSERT INTO workspaces (name, slug, tier, settings, owner_id, created_at, "
                "updated_at) VALUES (?, ?, 'free', '{}', ?, 0, 0) RETURNING id",
                (name, name, user["id"]),
            )
            assert row is not None
            ids.append(int(row["id"]))
        await fill(db, ids[0], small)
        await fill(db, ids[1], large)
        if db.dialect == "postgresql":
            await db.execute("ANALYZE")
        for name, params, f in CASES:
            times: dict[int, list[float]] = {ids[0]: [], ids[1]: []}
            totals = {}
            for _ in range(rounds):
                for wid in ids:
                    started = time.perf_counter()
                    totals[wid] = await page_and_total(db, wid, params, f)
                    times[wid].append(time.perf_counter() - started)
            a, b = (statistics.median(times[w]) * 1000 for w in ids)
            print(
                f"{db.dialect:10s} {name:24s} {totals[ids[0]]:>7} of {small}: {a:6.2f} ms"
                f"   {totals[ids[1]]:>7} of {large}: {b:6.2f} ms   ratio {b / a:4.2f}",
                flush=True,
            )
    finally:
        await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--small", type=int, default=2_000)
    parser.add_argument("--large", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--pg-admin-url", default=DEFAULT_PG_ADMIN_URL)
    args = parser.parse_args()
    for backend in args.backends.split(","):
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                url = f"sqlite:///{Path(tmp) / 'seo.db'}"
                asyncio.run(measure(url, args.small, args.large, args.rounds))
        else:
            name = f"core_api_bench_seo_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(args.pg_admin_url, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
            try:
                base = args.pg_admin_url.rsplit("/", 1)[0]
                asyncio.run(measure(f"{base}/{name}", args.small, args.large, args.rounds))
            finally:
                with psycopg.connect(args.pg_admin_url, autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
