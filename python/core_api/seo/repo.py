"""SEO reports and issues: the only place their SQL lives. Every read is scoped to one
workspace in SQL; list totals come from the counters kept with each write (seo_totals,
seo_days, seo_issue_counts) wherever they can answer."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..storage.base import Executor, Row, fetch_value
from ..web.listing import ListQuery, ListSpec
from .validation import IssueFilter, IssueInput, ReportInput

_REPORT = (
    "id, workspace_id, url, performance, accessibility, best_practices, seo, "
    "errors, warnings, notices, infos, created_at"
)
_ISSUE = "id, report_id, workspace_id, url, issue_type, severity, element, details, created_at"
ISSUE_ROWS_PER_INSERT = 250  # 2,000 bound values: far inside both backends' limits
DAY_MS = 86_400_000
_NO_END = 2**62  # later than any storable time (clock.MAX_MS)
_DAY_COLUMNS = {1: "infos", 2: "notices", 3: "warnings", 4: "errors"}  # seo_days, by level

ISSUE_SPEC = ListSpec(
    sortable={
        "created_at": "created_at",
        "severity": "severity",
        "issue_type": "issue_type",
        "url": "url",
    },
    default_sort="-created_at",
    fields=frozenset(
        {"id", "report_id", "url", "issue_type", "severity", "element", "details", "created_at"}
    ),
    text_sorts=frozenset(),
    has_updated_at=False,
)
REPORT_SPEC = ListSpec(
    sortable={"created_at": "created_at", "url": "url"},
    default_sort="-created_at",
    fields=frozenset({"id", "url", "scores", "issues_count", "issues_by_severity", "created_at"}),
    text_sorts=frozenset(),
    has_updated_at=False,
)
HISTORY_SPEC = ListSpec(
    sortable={"created_at": "created_at"},
    default_sort="-created_at",
    fields=frozenset({"report_id", "created_at", "scores", "issues_count"}),
    text_sorts=frozenset(),
    has_updated_at=False,
)


@dataclass(frozen=True, slots=True)
class ReportRecord:
    id: int
    workspace_id: int
    url: str
    performance: int | None
    accessibility: int | None
    best_practices: int | None
    seo: int | None
    errors: int
    warnings: int
    notices: int
    infos: int
    created_at: int


@dataclass(frozen=True, slots=True)
class IssueRecord:
    id: int
    report_id: int
    workspace_id: int
    url: str
    issue_type: str
    severity: int  # 1 info, 2 notice, 3 warning, 4 error
    element: str
    details: str | None  # JSON text
    created_at: int


def _report(row: Row) -> ReportRecord:
    return ReportRecord(**row)


def _issue(row: Row) -> IssueRecord:
    return IssueRecord(**row)


def with_time_order(query: ListQuery) -> ListQuery:
    """Sort ties broken by time (then id) in the same direction as the last term, so that
    ``sort=-severity`` walks the (workspace, severity, created_at, id) index backwards
    instead of sorting a whole severity."""
    if query.sort and query.sort[-1][0] != "created_at":
        query.sort.append(("created_at", query.sort[-1][1]))
    return query


# --- writes (one transaction per report, see SeoService.submit) ---------------------------


async def insert_report(
    tx: Executor, workspace_id: int, report: ReportInput, now: int
) -> ReportRecord:
    by_severity = Counter(issue.severity for issue in report.issues)
    row = await tx.fetch_one(
        "INSERT INTO seo_reports (workspace_id, url, performance, accessibility, "  # noqa: S608
        "best_practices, seo, errors, warnings, notices, infos, created_at) "
        f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {_REPORT}",
        (
            workspace_id,
            report.url,
            report.scores["performance"],
            report.scores["accessibility"],
            report.scores["best_practices"],
            report.scores["seo"],
            by_severity[4],
            by_severity[3],
            by_severity[2],
            by_severity[1],
            now,
        ),
    )
    assert row is not None
    return _report(row)


async def add_totals(tx: Executor, workspace_id: int, issues: int) -> None:
    """One more report and ``issues`` more issues. Called right after the report's insert:
    the workspace's counter row is the lock that queues its concurrent reports."""
    await tx.execute(
        "INSERT INTO seo_totals (workspace_id, reports, issues) VALUES (?, 1, ?) "
        "ON CONFLICT (workspace_id) DO UPDATE SET reports = seo_totals.reports + 1, "
        "issues = seo_totals.issues + excluded.issues",
        (workspace_id, issues),
    )


async def add_day(tx: Executor, report: ReportRecord) -> None:
    """The report and its issues by severity, on its UTC day's row."""
    await tx.execute(
        "INSERT INTO seo_days (workspace_id, day, reports, errors, warnings, notices, infos) "
        "VALUES (?, ?, 1, ?, ?, ?, ?) ON CONFLICT (workspace_id, day) DO UPDATE SET "
        "reports = seo_days.reports + 1, errors = seo_days.errors + excluded.errors, "
        "warnings = seo_days.warnings + excluded.warnings, "
        "notices = seo_days.notices + excluded.notices, infos = seo_days.infos + excluded.infos",
        (
            report.workspace_id,
            report.created_at - report.created_at % DAY_MS,
            report.errors,
            report.warnings,
            report.notices,
            report.infos,
        ),
    )


async def insert_issues(
    tx: Executor, report: ReportRecord, issues: tuple[IssueInput, ...]
) -> list[IssueRecord]:
    """The issues in the given order (ids ascending), in a few multi-row inserts."""
    stored: list[IssueRecord] = []
    for start in range(0, len(issues), ISSUE_ROWS_PER_INSERT):
        chunk = issues[start : start + ISSUE_ROWS_PER_INSERT]
        params: list[Any] = []
        for issue in chunk:
            params += [
                report.id,
                report.workspace_id,
                report.url,
                issue.issue_type,
                issue.severity,
                issue.element,
                issue.details,
                report.created_at,
            ]
        values = ", ".join("(?, ?, ?, ?, ?, ?, ?, ?)" for _ in chunk)
        rows = await tx.fetch_all(
            "INSERT INTO seo_issues (report_id, workspace_id, url, issue_type, severity, "  # noqa: S608
            f"element, details, created_at) VALUES {values} RETURNING {_ISSUE}",
            params,
        )
        # RETURNING order is unspecified (SQLite); ids follow the VALUES order.
        stored += sorted((_issue(r) for r in rows), key=lambda i: i.id)
    return stored


async def add_issue_counts(tx: Executor, workspace_id: int, issues: tuple[IssueInput, ...]) -> None:
    counts = Counter((issue.issue_type, issue.severity) for issue in issues)
    keys = sorted(counts)  # one lock order for every writer
    for start in range(0, len(keys), ISSUE_ROWS_PER_INSERT):
        chunk = keys[start : start + ISSUE_ROWS_PER_INSERT]
        params: list[Any] = []
        for issue_type, severity in chunk:
            params += [workspace_id, issue_type, severity, counts[(issue_type, severity)]]
        values = ", ".join("(?, ?, ?, ?)" for _ in chunk)
        await tx.execute(
            "INSERT INTO seo_issue_counts (workspace_id, issue_type, severity, issues) "  # noqa: S608
            f"VALUES {values} ON CONFLICT (workspace_id, issue_type, severity) "
            "DO UPDATE SET issues = seo_issue_counts.issues + excluded.issues",
            params,
        )


# --- reads -------------------------------------------------------------------------------


def _window(query: ListQuery) -> tuple[int, int]:
    """The created_at window (both ends exclusive) of ``created_after|before``."""
    low, high = -1, _NO_END
    for column, op, value in query.date_filters:
        assert column == "created_at"
        if op == ">":
            low = max(low, value)
        else:
            high = min(high, value)
    return low, high


async def _total_by_days(
    db: Executor,
    workspace_id: int,
    query: ListQuery,
    day_sum: str,
    edge_sql: str,
    edge_params: list[Any],
) -> int:
    """A date-range total: whole UTC days from seo_days (``day_sum`` of its columns), and
    the partial days at the two ends counted with ``edge_sql`` (``... created_at > ? AND
    created_at < ?`` over the base table, its other conditions bound by ``edge_params``).
    Costs the days in the range plus at most two days of rows, whatever the range holds."""
    low, high = _window(query)
    first = (low // DAY_MS + 1) * DAY_MS  # the first day that starts after ``low``
    last = high - high % DAY_MS  # the start of the day ``high`` falls in
    if first >= last:  # less than one whole day
        return await _count(db, edge_sql, [*edge_params, low, high])
    total = await _count(
        db,
        f"SELECT COALESCE(SUM({day_sum}), 0) AS n FROM seo_days "  # noqa: S608
        "WHERE workspace_id = ? AND day >= ? AND day < ?",
        [workspace_id, first, last],
    )
    if low + 1 < first:
        total += await _count(db, edge_sql, [*edge_params, low, first])
    if last < high:
        total += await _count(db, edge_sql, [*edge_params, last - 1, high])
    return total


async def _count(db: Executor, sql: str, params: list[Any]) -> int:
    return int(await fetch_value(db, sql, params) or 0)


async def get_report(db: Executor, workspace_id: int, report_id: int) -> ReportRecord | None:
    row = await db.fetch_one(
        f"SELECT {_REPORT} FROM seo_reports WHERE id = ? AND workspace_id = ?",  # noqa: S608
        (report_id, workspace_id),
    )
    return None if row is None else _report(row)


async def issues_of_report(db: Executor, report_id: int) -> list[IssueRecord]:
    rows = await db.fetch_all(
        f"SELECT {_ISSUE} FROM seo_issues WHERE report_id = ? ORDER BY id",  # noqa: S608
        (report_id,),
    )
    return [_issue(r) for r in rows]


def _report_scope(workspace_id: int, url: str | None, query: ListQuery) -> tuple[str, list[Any]]:
    conditions, params = query.where()
    conditions[:0] = ["workspace_id = ?"]
    params[:0] = [workspace_id]
    if url is not None:
        conditions.append("url = ?")
        params.append(url)
    return "WHERE " + " AND ".join(conditions), params


async def page_reports(
    db: Executor, workspace_id: int, url: str | None, query: ListQuery, spec: ListSpec
) -> list[ReportRecord]:
    where, params = _report_scope(workspace_id, url, query)
    rows = await db.fetch_all(
        f"SELECT {_REPORT} FROM seo_reports {where} "  # noqa: S608
        f"ORDER BY {query.order_by(spec)} LIMIT ? OFFSET ?",
        [*params, query.per_page, query.offset],
    )
    return [_report(r) for r in rows]


async def count_reports(db: Executor, workspace_id: int, url: str | None, query: ListQuery) -> int:
    if url is None and not query.date_filters:
        value = await fetch_value(
            db, "SELECT reports FROM seo_totals WHERE workspace_id = ?", (workspace_id,)
        )
    else:
        where, params = _report_scope(workspace_id, url, query)
        value = await fetch_value(db, f"SELECT COUNT(*) AS n FROM seo_reports {where}", params)  # noqa: S608
    return int(value or 0)


def _marks(values: tuple[Any, ...]) -> str:
    return ", ".join("?" for _ in values)


def _issue_scope(
    workspace_id: int, filters: IssueFilter, query: ListQuery
) -> tuple[str, list[Any]]:
    conditions, params = query.where()
    conditions[:0] = ["workspace_id = ?"]
    params[:0] = [workspace_id]
    if filters.severities:
        conditions.append(f"severity IN ({_marks(filters.severities)})")
        params += filters.severities
    if filters.issue_types:
        conditions.append(f"issue_type IN ({_marks(filters.issue_types)})")
        params += filters.issue_types
    if filters.url is not None:
        conditions.append("url = ?")
        params.append(filters.url)
    return "WHERE " + " AND ".join(conditions), params


async def page_issues(
    db: Executor, workspace_id: int, filters: IssueFilter, query: ListQuery
) -> list[IssueRecord]:
    where, params = _issue_scope(workspace_id, filters, query)
    rows = await db.fetch_all(
        f"SELECT {_ISSUE} FROM seo_issues {where} "  # noqa: S608
        f"ORDER BY {query.order_by(ISSUE_SPEC)} LIMIT ? OFFSET ?",
        [*params, query.per_page, query.offset],
    )
    return [_issue(r) for r in rows]


async def count_issues(
    db: Executor, workspace_id: int, filters: IssueFilter, query: ListQuery
) -> int:
    """From the counters whenever they answer: seo_totals (no filter), seo_issue_counts
    (severity and/or type: a sum over the workspace's distinct (type, severity) pairs),
    seo_days (a date range, with or without severity). A URL filter, or a type with a date
    range, is counted along that filter's index."""
    if filters.url is not None or (filters.issue_types and query.date_filters):
        where, params = _issue_scope(workspace_id, filters, query)
        return await _count(db, f"SELECT COUNT(*) AS n FROM seo_issues {where}", params)  # noqa: S608
    if query.date_filters:
        levels = filters.severities or tuple(_DAY_COLUMNS)
        day_sum = " + ".join(_DAY_COLUMNS[level] for level in levels)
        edge = "SELECT COUNT(*) AS n FROM seo_issues WHERE workspace_id = ?"
        if filters.severities:
            edge += f" AND severity IN ({_marks(filters.severities)})"
        edge += " AND created_at > ? AND created_at < ?"
        bound: list[Any] = [workspace_id, *filters.severities]
        return await _total_by_days(db, workspace_id, query, day_sum, edge, bound)
    if not filters.severities and not filters.issue_types:
        return await _count(
            db, "SELECT issues FROM seo_totals WHERE workspace_id = ?", [workspace_id]
        )
    conditions, params = ["workspace_id = ?"], [workspace_id]
    if filters.severities:
        conditions.append(f"severity IN ({_marks(filters.severities)})")
        params += filters.severities
    if filters.issue_types:
        conditions.append(f"issue_type IN ({_marks(filters.issue_types)})")
        params += filters.issue_types
    return await _count(
        db,
        "SELECT COALESCE(SUM(issues), 0) AS n FROM seo_issue_counts "  # noqa: S608
        f"WHERE {' AND '.join(conditions)}",
        params,
    )
