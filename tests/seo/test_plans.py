"""Each SEO list query walks an index in the order it returns rows: a page costs the same
at 100 and 10 million issues. Checked on both backends with the repository's own SQL:
SQLite's plan has no temporary sort; PostgreSQL's, with sequential scans and sorts
priced out, still has no Sort node (a sort it could not avoid would remain)."""

from __future__ import annotations

from typing import Any

from core_api.runtime import Runtime
from core_api.seo import repo
from core_api.seo.validation import IssueFilter
from core_api.storage.base import Executor, Params, Row
from core_api.web.listing import parse_list_query

ISSUE_CASES: list[tuple[dict[str, str], IssueFilter, str]] = [
    ({}, IssueFilter(), "seo_issues_workspace_created"),
    ({"created_after": "2026-01-01"}, IssueFilter(), "seo_issues_workspace_created"),
    ({"sort": "-severity"}, IssueFilter(), "seo_issues_workspace_severity"),
    ({"sort": "severity"}, IssueFilter(), "seo_issues_workspace_severity"),
    ({}, IssueFilter(severities=(4,)), "seo_issues_workspace_severity"),
    ({"sort": "issue_type"}, IssueFilter(), "seo_issues_workspace_type"),
    ({}, IssueFilter(issue_types=("missing_alt",)), "seo_issues_workspace_type"),
    ({"sort": "url"}, IssueFilter(), "seo_issues_workspace_url"),
    ({}, IssueFilter(url="https://example.com/"), "seo_issues_workspace_url"),
]
REPORT_CASES: list[tuple[dict[str, str], str | None, str]] = [
    ({}, None, "seo_reports_workspace_created"),
    ({"created_before": "2026-01-01"}, None, "seo_reports_workspace_created"),
    ({}, "https://example.com/", "seo_reports_workspace_url"),
    ({"sort": "url"}, None, "seo_reports_workspace_url"),
]


class Explainer:
    """An executor that returns the plan of each page query instead of running it."""

    def __init__(self, tx: Executor, dialect: str) -> None:
        self.tx, self.dialect = tx, dialect
        self.plans: list[str] = []

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        prefix = "EXPLAIN QUERY PLAN " if self.dialect == "sqlite" else "EXPLAIN "
        rows = await self.tx.fetch_all(prefix + sql, params)
        self.plans.append("\n".join(str(list(r.values())[-1]) for r in rows))
        return []

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        raise AssertionError("not a page query")

    async def execute(self, sql: str, params: Params = ()) -> int:
        raise AssertionError("not a page query")


def check(plan: str, dialect: str, index: str, case: Any) -> None:
    assert index in plan, (case, plan)
    if dialect == "sqlite":
        assert "TEMP B-TREE" not in plan, (case, plan)
    else:
        assert "Sort" not in plan, (case, plan)


async def test_list_pages_walk_an_index(runtime: Runtime) -> None:
    dialect = runtime.db.dialect
    async with runtime.db.transaction() as tx:
        if dialect == "postgresql":
            for knob in ("enable_seqscan", "enable_sort", "enable_bitmapscan"):
                await tx.execute(f"SET LOCAL {knob} = off")
        explainer = Explainer(tx, dialect)
        for params, filters, index in ISSUE_CASES:
            query = repo.with_time_order(parse_list_query(params, repo.ISSUE_SPEC))
            await repo.page_issues(explainer, 1, filters, query)
            check(explainer.plans[-1], dialect, index, (params, filters))
        for params, url, index in REPORT_CASES:
            query = repo.with_time_order(parse_list_query(params, repo.REPORT_SPEC))
            await repo.page_reports(explainer, 1, url, query, repo.REPORT_SPEC)
            check(explainer.plans[-1], dialect, index, (params, url))
