"""SEO reports: store a validated report with its issues and publish it; read reports,
issues and a URL's score history back, always within one workspace."""

from __future__ import annotations

from typing import Any

import orjson

from ..clock import Clock, iso
from ..errors import NotFound
from ..events import Notifier, publish
from ..storage import Database, IntegrityError
from ..web.listing import ListQuery
from . import repo
from .repo import IssueRecord, ReportRecord
from .validation import SCORES, SEVERITY_NAMES, IssueFilter, ReportInput

EVENT_TYPE = "seo.report.created"


def scores(report: ReportRecord) -> dict[str, int | None]:
    return {name: getattr(report, name) for name in SCORES}


def issues_count(report: ReportRecord) -> int:
    return report.errors + report.warnings + report.notices + report.infos


def present_report(report: ReportRecord) -> dict[str, Any]:
    """A report without its issues (lists, the event)."""
    return {
        "id": report.id,
        "url": report.url,
        "scores": scores(report),
        "issues_count": issues_count(report),
        "issues_by_severity": {
            "error": report.errors,
            "warning": report.warnings,
            "notice": report.notices,
            "info": report.infos,
        },
        "created_at": iso(report.created_at),
    }


def present_issue(issue: IssueRecord) -> dict[str, Any]:
    return {
        "id": issue.id,
        "report_id": issue.report_id,
        "url": issue.url,
        "issue_type": issue.issue_type,
        "severity": SEVERITY_NAMES[issue.severity],
        "element": issue.element,
        "details": None if issue.details is None else orjson.loads(issue.details),
        "created_at": iso(issue.created_at),
    }


def present_detail(report: ReportRecord, issues: list[IssueRecord]) -> dict[str, Any]:
    return {**present_report(report), "issues": [present_issue(i) for i in issues]}


def present_point(report: ReportRecord) -> dict[str, Any]:
    """One entry of a URL's score history."""
    return {
        "report_id": report.id,
        "created_at": iso(report.created_at),
        "scores": scores(report),
        "issues_count": issues_count(report),
    }


class SeoService:
    def __init__(self, db: Database, clock: Clock, events: Notifier) -> None:
        self.db, self.clock, self.events = db, clock, events

    async def submit(
        self, workspace_id: int, report: ReportInput
    ) -> tuple[ReportRecord, list[IssueRecord]]:
        """The report, its issues, the list counters and ``seo.report.created``, in one
        transaction: a report is stored and announced, or neither."""
        now = self.clock.now_ms()
        try:
            async with self.db.transaction() as tx:
                stored = await repo.insert_report(tx, workspace_id, report, now)
                await repo.add_totals(tx, workspace_id, len(report.issues))
                await repo.add_day(tx, stored)
                issues = await repo.insert_issues(tx, stored, report.issues)
                await repo.add_issue_counts(tx, workspace_id, report.issues)
                await publish(
                    tx,
                    workspace_id=workspace_id,
                    type=EVENT_TYPE,
                    data={"report": present_report(stored)},
                    now=now,
                )
        except IntegrityError:
            # The workspace was deleted after the request resolved it: nothing was stored.
            raise NotFound() from None
        self.events.notify()
        return stored, issues

    async def report(
        self, workspace_id: int, report_id: int
    ) -> tuple[ReportRecord, list[IssueRecord]]:
        found = await repo.get_report(self.db, workspace_id, report_id)
        if found is None:
            raise NotFound()
        return found, await repo.issues_of_report(self.db, found.id)

    async def reports_page(
        self, workspace_id: int, url: str | None, query: ListQuery, history: bool = False
    ) -> tuple[list[ReportRecord], int]:
        spec = repo.HISTORY_SPEC if history else repo.REPORT_SPEC
        page = await repo.page_reports(
            self.db, workspace_id, url, repo.with_time_order(query), spec
        )
        total = query.total_from_page(len(page))
        if total is None:
            total = await repo.count_reports(self.db, workspace_id, url, query)
        return page, total

    async def issues_page(
        self, workspace_id: int, filters: IssueFilter, query: ListQuery
    ) -> tuple[list[IssueRecord], int]:
        page = await repo.page_issues(self.db, workspace_id, filters, repo.with_time_order(query))
        total = query.total_from_page(len(page))
        if total is None:
            total = await repo.count_issues(self.db, workspace_id, filters, query)
        return page, total
