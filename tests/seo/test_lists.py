"""The SEO lists on both backends: issue filters (severity, issue_type, url, dates),
sorting, pagination and totals (from the counters and counted), reports by URL and date,
and a URL's score history."""

from __future__ import annotations

from typing import Any

from seo_support import HISTORY, REPORTS, issues_path, submit

from conftest import Api
from core_api.clock import ManualClock
from core_api.runtime import Runtime

HOME = "https://example.com/"
BLOG = "https://example.com/blog"


def issue(issue_type: str, severity: str, element: str = "div") -> dict[str, Any]:
    return {"type": issue_type, "severity": severity, "element": element}


async def seed(api: Api, clock: ManualClock) -> list[dict[str, Any]]:
    """Three reports a day apart: 2026-01-01 (HOME), 01-02 (BLOG), 01-03 (HOME)."""
    reports = []
    plans = [
        (HOME, {"seo": 70, "performance": 50}, [issue("missing_alt", "warning", "img.a")]),
        (
            BLOG,
            {"seo": 80},
            [issue("missing_alt", "error", "img.b"), issue("slow-lcp", "notice", "main")],
        ),
        (
            HOME,
            {"seo": 90, "performance": 60},
            [
                issue("missing_alt", "warning", "img.c"),
                issue("meta-description", "error", "head"),
                issue("h1", "info", "body"),
            ],
        ),
    ]
    for url, scores, issues in plans:
        reports.append(await submit(api, {"url": url, "scores": scores, "issues": issues}))
        clock.advance(86_400)
    return reports


def elements(result: Any) -> list[str]:
    return [i["element"] for i in result.json["data"]]


async def test_issue_filters_and_totals(api: Api, clock: ManualClock, boot: dict[str, Any]) -> None:
    await seed(api, clock)
    path = issues_path(boot["workspace"]["id"])

    async def listed(**params: str) -> Any:
        result = await api.get(path, params=params)
        assert result.status == 200, result.json
        return result

    everything = await listed()
    assert elements(everything) == ["body", "head", "img.c", "main", "img.b", "img.a"]
    assert everything.json["meta"]["total"] == 6

    errors = await listed(severity="error")
    assert elements(errors) == ["head", "img.b"]
    assert [i["severity"] for i in errors.json["data"]] == ["error", "error"]
    assert elements(await listed(severity="error,notice")) == ["head", "main", "img.b"]
    assert elements(await listed(issue_type="missing_alt")) == ["img.c", "img.b", "img.a"]
    assert elements(await listed(issue_type="h1,slow-lcp")) == ["body", "main"]
    assert elements(await listed(issue_type="missing_alt", severity="warning")) == [
        "img.c",
        "img.a",
    ]
    assert elements(await listed(issue_type="nothing-like-it")) == []
    assert elements(await listed(url=BLOG)) == ["main", "img.b"]
    assert elements(await listed(url="HTTPS://EXAMPLE.COM")) == ["body", "head", "img.c", "img.a"]
    assert elements(await listed(created_after="2026-01-01T12:00:00Z")) == [
        "body",
        "head",
        "img.c",
        "main",
        "img.b",
    ]
    assert elements(await listed(created_before="2026-01-02T12:00:00Z", url=HOME)) == ["img.a"]

    # Totals past a full page: from the counters (severity/type) or counted (url/dates).
    async def total(**params: str) -> int:
        result = await listed(per_page="1", **params)
        assert len(result.json["data"]) == 1
        return int(result.json["meta"]["total"])

    assert await total() == 6
    assert await total(severity="warning") == 2
    assert await total(severity="error,warning") == 4
    assert await total(issue_type="missing_alt") == 3
    assert await total(issue_type="missing_alt", severity="error") == 1
    assert await total(url=HOME) == 4
    assert await total(created_after="2026-01-02T00:00:00Z") == 3  # strictly after
    assert await total(url=HOME, severity="warning") == 2


async def test_issue_sorting_and_pages(api: Api, clock: ManualClock, boot: dict[str, Any]) -> None:
    await seed(api, clock)
    path = issues_path(boot["workspace"]["id"])

    async def order(sort: str) -> list[str]:
        result = await api.get(path, params={"sort": sort})
        assert result.status == 200, result.json
        return elements(result)

    # Ties go by time (then id) in the direction of the last term.
    assert await order("-severity") == ["head", "img.b", "img.c", "img.a", "main", "body"]
    assert await order("severity") == ["body", "main", "img.a", "img.c", "img.b", "head"]
    assert await order("created_at") == ["img.a", "img.b", "main", "img.c", "head", "body"]
    assert await order("issue_type") == ["body", "head", "img.a", "img.b", "img.c", "main"]
    assert await order("url,-created_at") == ["body", "head", "img.c", "img.a", "main", "img.b"]

    seen: list[str] = []
    for page in (1, 2, 3):
        result = await api.get(path, params={"per_page": "2", "page": str(page)})
        meta, links = result.json["meta"], result.json["links"]
        assert meta["total"] == 6 and meta["last_page"] == 3 and meta["current_page"] == page
        assert (links["next"] is None) == (page == 3)
        seen += elements(result)
    assert seen == ["body", "head", "img.c", "main", "img.b", "img.a"]
    beyond = await api.get(path, params={"per_page": "2", "page": "4"})
    assert beyond.json["data"] == [] and beyond.json["meta"]["total"] == 6

    projected = await api.get(path, params={"fields": "id,severity", "per_page": "1"})
    assert set(projected.json["data"][0]) == {"id", "severity"}


async def test_reports_list_by_url_and_dates(
    api: Api, clock: ManualClock, boot: dict[str, Any]
) -> None:
    first, second, third = await seed(api, clock)

    async def ids(**params: str) -> list[int]:
        result = await api.get(REPORTS, params=params)
        assert result.status == 200, result.json
        return [r["id"] for r in result.json["data"]]

    assert await ids() == [third["id"], second["id"], first["id"]]
    assert await ids(url=HOME) == [third["id"], first["id"]]
    assert await ids(url=BLOG) == [second["id"]]
    assert await ids(url="https://example.com/nothing") == []
    assert await ids(created_after="2026-01-01T12:00:00Z") == [third["id"], second["id"]]
    assert await ids(created_before="2026-01-02", url=HOME) == [first["id"]]
    assert await ids(sort="created_at") == [first["id"], second["id"], third["id"]]
    assert await ids(sort="url") == [first["id"], third["id"], second["id"]]
    paged = await api.get(REPORTS, params={"per_page": "1", "page": "2"})
    assert [r["id"] for r in paged.json["data"]] == [second["id"]]
    assert paged.json["meta"]["total"] == 3
    by_url = await api.get(REPORTS, params={"per_page": "1", "url": HOME})
    assert by_url.json["meta"]["total"] == 2
    listed = (await api.get(REPORTS, params={"per_page": "1"})).json["data"][0]
    assert listed["scores"] == {
        "performance": 60,
        "accessibility": None,
        "best_practices": None,
        "seo": 90,
    }
    assert listed["issues_count"] == 3 and "issues" not in listed


async def test_score_history(api: Api, clock: ManualClock) -> None:
    first, _, third = await seed(api, clock)
    result = await api.get(HISTORY, params={"url": "https://Example.com"})
    assert result.status == 200, result.json
    assert result.json["url"] == HOME
    assert result.json["data"] == [
        {
            "report_id": third["id"],
            "created_at": "2026-01-03T00:00:00Z",
            "scores": {"performance": 60, "accessibility": None, "best_practices": None, "seo": 90},
            "issues_count": 3,
        },
        {
            "report_id": first["id"],
            "created_at": "2026-01-01T00:00:00Z",
            "scores": {"performance": 50, "accessibility": None, "best_practices": None, "seo": 70},
            "issues_count": 1,
        },
    ]
    assert result.json["meta"]["total"] == 2
    oldest = await api.get(HISTORY, params={"url": HOME, "sort": "created_at", "per_page": "1"})
    assert [p["report_id"] for p in oldest.json["data"]] == [first["id"]]
    assert oldest.json["meta"]["total"] == 2
    since = await api.get(HISTORY, params={"url": HOME, "created_after": "2026-01-02"})
    assert [p["report_id"] for p in since.json["data"]] == [third["id"]]
    unknown = await api.get(HISTORY, params={"url": "https://example.com/never"})
    assert unknown.json["data"] == [] and unknown.json["meta"]["total"] == 0


async def test_counters_follow_concurrent_reports(
    api: Api, runtime: Runtime, boot: dict[str, Any]
) -> None:
    """Reports submitted at once all count: the counter rows are upserted under one lock
    order, never lost nor deadlocked."""
    import asyncio

    bodies = [
        {
            "url": f"https://example.com/{n}",
            "scores": {"seo": n},
            "issues": [issue("b", "error"), issue("a", "warning"), issue("a", "error")],
        }
        for n in range(12)
    ]
    made = await asyncio.gather(*(api.post("/api/v1/seo/report", json=b) for b in bodies))
    assert {m.status for m in made} == {201}
    path = issues_path(boot["workspace"]["id"])
    result = await api.get(path, params={"per_page": "1"})
    assert result.json["meta"]["total"] == 36
    errors = await api.get(path, params={"per_page": "1", "severity": "error"})
    assert errors.json["meta"]["total"] == 24
    reports = await api.get(REPORTS, params={"per_page": "1"})
    assert reports.json["meta"]["total"] == 12
    rows = await runtime.db.fetch_all(
        "SELECT issue_type, severity, issues FROM seo_issue_counts ORDER BY issue_type, severity"
    )
    assert [(r["issue_type"], r["severity"], r["issues"]) for r in rows] == [
        ("a", 3, 12),
        ("a", 4, 12),
        ("b", 4, 12),
    ]


async def test_workspace_deletion_removes_its_reports(
    api: Api, runtime: Runtime, boot: dict[str, Any]
) -> None:
    made = await api.post("/api/v1/workspaces", json={"name": "Temp"})
    temp = made.json["data"]["id"]
    header = {"X-Workspace-ID": str(temp)}
    await submit(
        api,
        {"url": HOME, "scores": {"seo": 1}, "issues": [issue("x", "info")]},
        headers=header,
    )
    assert (await api.delete(f"/api/v1/workspaces/{temp}")).status == 204
    for table in ("seo_reports", "seo_issues", "seo_totals", "seo_days", "seo_issue_counts"):
        row = await runtime.db.fetch_one(f"SELECT COUNT(*) AS n FROM {table}")
        assert row is not None and row["n"] == 0, table


async def test_date_range_totals_match_a_count(
    api: Api, runtime: Runtime, clock: ManualClock, boot: dict[str, Any]
) -> None:
    """Date-range totals come from whole days plus the partial days at the ends: equal to
    a plain COUNT for ranges inside a day, across midnight, on exact day boundaries and
    open-ended, with and without a severity filter."""
    import random
    from datetime import UTC, datetime

    rng = random.Random(7)
    severities = ["error", "warning", "notice", "info"]
    for _ in range(40):
        clock.advance(rng.randint(1, 40) * 1800 + rng.randint(0, 999) / 1000)
        issues = [
            issue(f"t{rng.randint(0, 3)}", rng.choice(severities)) for _ in range(rng.randint(0, 4))
        ]
        await submit(api, {"url": HOME, "scores": {"seo": 1}, "issues": issues})
    start, end = 1_767_225_600_000, clock.now_ms()
    day = 86_400_000
    points = [start - 1, start, start + day, start + 2 * day, end, end + 1]
    points += [rng.randint(start, end) for _ in range(14)]
    points += [start + 3 * day - 1, start + 3 * day + 1]
    path = issues_path(boot["workspace"]["id"])

    def stamp(ms: int) -> str:
        moment = datetime.fromtimestamp(ms / 1000, UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"

    async def truth(table: str, low: int | None, high: int | None, levels: str) -> int:
        sql = f"SELECT COUNT(*) AS n FROM {table} WHERE workspace_id = ?"
        params: list[Any] = [boot["workspace"]["id"]]
        if low is not None:
            sql, params = sql + " AND created_at > ?", [*params, low]
        if high is not None:
            sql, params = sql + " AND created_at < ?", [*params, high]
        if levels:
            sql += f" AND severity IN ({levels})"
        row = await runtime.db.fetch_one(sql, params)
        assert row is not None
        return int(row["n"])

    checked = 0
    for low in [None, *points]:
        for high in [None, *rng.sample(points, 6)]:
            if low is None and high is None:
                continue
            params = {"per_page": "1"}
            if low is not None:
                params["created_after"] = stamp(low)
            if high is not None:
                params["created_before"] = stamp(high)
            for severity, levels in (("", ""), ("error", "4"), ("warning,info", "3, 1")):
                query = {**params, "severity": severity} if severity else params
                got = await api.get(path, params=query)
                assert got.status == 200, got.json
                expected = await truth("seo_issues", low, high, levels)
                assert got.json["meta"]["total"] == expected, (query, expected)
                checked += 1
            reports = await api.get(REPORTS, params=params)
            assert reports.json["meta"]["total"] == await truth("seo_reports", low, high, "")
    assert checked > 300
