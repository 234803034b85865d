"""Helpers for the SEO tests: paths, a valid report, a second tenant, raw row counts."""

from __future__ import annotations

from typing import Any

import orjson

from conftest import Api
from core_api.api_keys.service import bootstrap
from core_api.clock import ManualClock
from core_api.runtime import Runtime

REPORT = "/api/v1/seo/report"
REPORTS = "/api/v1/seo/reports"
HISTORY = "/api/v1/seo/history"
SEO_TABLES = ("seo_reports", "seo_issues", "seo_totals", "seo_days", "seo_issue_counts", "events")


def issues_path(workspace_id: int) -> str:
    return f"/api/v1/seo/issues/{workspace_id}"


def report_body(url: str = "https://example.com/page", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "url": url,
        "scores": {"performance": 85, "accessibility": 92, "best_practices": 88, "seo": 95},
        "issues": [
            {"type": "missing_alt", "severity": "warning", "element": "img.hero-image"},
            {
                "type": "meta-description",
                "severity": "error",
                "element": "head",
                "details": {"message": "No meta description", "length": 0},
            },
        ],
    }
    body.update(changes)
    return body


async def submit(api: Api, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    made = await api.post(REPORT, json=body, **kw)
    assert made.status == 201, made.json
    data: dict[str, Any] = made.json["data"]
    return data


async def other_tenant(runtime: Runtime, clock: ManualClock) -> dict[str, Any]:
    """A second user with their own workspace and a '*' key."""
    return await bootstrap(
        runtime.db,
        runtime.keys,
        runtime.plans,
        clock,
        name="Other Co",
        tier="enterprise",
        email="other@example.test",
    )


async def row_counts(runtime: Runtime) -> dict[str, int]:
    counts = {}
    for table in SEO_TABLES:
        row = await runtime.db.fetch_one(f"SELECT COUNT(*) AS n FROM {table}")
        assert row is not None
        counts[table] = int(row["n"])
    return counts


async def seo_events(runtime: Runtime, workspace_id: int) -> list[dict[str, Any]]:
    rows = await runtime.db.fetch_all(
        "SELECT payload FROM events WHERE workspace_id = ? AND type = 'seo.report.created' "
        "ORDER BY id",
        (workspace_id,),
    )
    return [orjson.loads(r["payload"]) for r in rows]
