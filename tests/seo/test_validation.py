"""POST /api/v1/seo/report refuses bad input with one 422 naming each bad field, and
writes nothing (no report, issue, counter or event)."""

from __future__ import annotations

from typing import Any

from seo_support import HISTORY, REPORT, REPORTS, issues_path, report_body, row_counts

from conftest import Api
from core_api.runtime import Runtime

ISSUE = {"type": "missing_alt", "severity": "warning", "element": "img"}
SCORES = {"seo": 90}


def body(**changes: Any) -> dict[str, Any]:
    return {"url": "https://example.com/", "scores": SCORES, "issues": [ISSUE], **changes}


def issue(**changes: Any) -> dict[str, Any]:
    return body(issues=[ISSUE, {**ISSUE, **changes}])


CASES: list[tuple[Any, str]] = [
    # url
    ({"scores": SCORES}, "url"),
    (body(url=None), "url"),
    (body(url=""), "url"),
    (body(url=42), "url"),
    (body(url="example.com/page"), "url"),
    (body(url="/page"), "url"),
    (body(url="ftp://example.com/"), "url"),
    (body(url="javascript:alert(1)"), "url"),
    (body(url="https://"), "url"),
    (body(url="https://user:pw@example.com/"), "url"),
    (body(url="https://exa mple.com/"), "url"),
    (body(url="https://example.com/a b"), "url"),
    (body(url="https://example.com:99999/"), "url"),
    (body(url="https://[::1/"), "url"),
    (body(url="https://exa$mple.com/"), "url"),
    (body(url="https://example.com/" + "a" * 2048), "url"),
    (body(url=["https://example.com/"]), "url"),
    # scores
    ({"url": "https://example.com/"}, "scores"),
    (body(scores={}), "scores"),
    (body(scores={"seo": None}), "scores"),
    (body(scores=[90]), "scores"),
    (body(scores=90), "scores"),
    (body(scores={"seo": 101}), "scores.seo"),
    (body(scores={"seo": -1}), "scores.seo"),
    (body(scores={"seo": 90.0}), "scores.seo"),
    (body(scores={"seo": 90.5}), "scores.seo"),
    (body(scores={"seo": "90"}), "scores.seo"),
    (body(scores={"seo": True}), "scores.seo"),
    (body(scores={"performance": False}), "scores.performance"),
    (body(scores={"seo": 90, "speed": 50}), "scores.speed"),
    (body(scores={"seo": 2**70}), "scores.seo"),  # orjson reads it as a float
    # issues
    (body(issues={"type": "x"}), "issues"),
    (body(issues="none"), "issues"),
    (body(issues=[ISSUE] * 1001), "issues"),
    (body(issues=[ISSUE, "missing_alt"]), "issues.1"),
    (body(issues=[ISSUE, None]), "issues.1"),
    (issue(type=None), "issues.1.type"),
    (issue(type=""), "issues.1.type"),
    (issue(type=7), "issues.1.type"),
    (issue(type="has space"), "issues.1.type"),
    (issue(type="-leading"), "issues.1.type"),
    (issue(type="x" * 101), "issues.1.type"),
    (body(issues=[{"severity": "error", "element": "img"}]), "issues.0.type"),
    (issue(severity="critical"), "issues.1.severity"),
    (issue(severity="Error"), "issues.1.severity"),
    (issue(severity=None), "issues.1.severity"),
    (issue(severity=3), "issues.1.severity"),
    (issue(severity=["error"]), "issues.1.severity"),
    (issue(severity={"level": "error"}), "issues.1.severity"),
    (issue(element=None), "issues.1.element"),
    (issue(element=""), "issues.1.element"),
    (issue(element="   "), "issues.1.element"),
    (issue(element=["img"]), "issues.1.element"),
    (issue(element="a" * 1025), "issues.1.element"),
    (issue(details="no"), "issues.1.details"),
    (issue(details=[1, 2]), "issues.1.details"),
    (issue(details={"text": "x" * 5000}), "issues.1.details"),
    (issue(details={"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {}}}}}}}}}), "issues.1.details"),
    (issue(details={"bad": "a\x00b"}), "issues"),  # NUL: refused for the whole field
    (issue(message="extra"), "issues.1.message"),
    # the body itself
    (body(extra=1), "extra"),
    ([], "body"),
    ("report", "body"),
]


async def test_bad_reports_are_refused(api: Api, runtime: Runtime) -> None:
    # One app for every case (a runtime per case would cost a migration each).
    for payload, field in CASES:
        refused = await api.post(REPORT, json=payload)
        assert refused.status == 422, (payload, refused.json)
        assert refused.json["error"] == "validation_failed"
        assert field in refused.json["errors"], (payload, refused.json["errors"])
        assert all(m for messages in refused.json["errors"].values() for m in messages)
    assert set((await row_counts(runtime)).values()) == {0}


async def test_every_problem_is_named_at_once(api: Api, runtime: Runtime) -> None:
    refused = await api.post(
        REPORT,
        json={
            "url": "nope",
            "scores": {"seo": 200, "performance": "fast"},
            "issues": [ISSUE, {"type": "x", "severity": "bad", "element": ""}],
        },
    )
    assert refused.status == 422
    assert set(refused.json["errors"]) == {
        "url",
        "scores.seo",
        "scores.performance",
        "issues.1.severity",
        "issues.1.element",
    }
    assert set((await row_counts(runtime)).values()) == {0}


async def test_malformed_and_empty_bodies(api: Api, runtime: Runtime) -> None:
    broken = await api.post(REPORT, body=b'{"url": ', headers={"Content-Type": "application/json"})
    assert broken.status == 422 and "body" in broken.json["errors"]
    empty = await api.post(REPORT, body=b"", headers={"Content-Type": "application/json"})
    assert empty.status == 422 and "body" in empty.json["errors"]
    text = await api.post(REPORT, body=b"url=x", headers={"Content-Type": "text/plain"})
    assert text.status == 415
    assert set((await row_counts(runtime)).values()) == {0}


async def test_valid_edges_are_accepted(api: Api) -> None:
    edge = body(
        url="http://localhost:3000/" + "p" * 2000,
        scores={"performance": 0, "accessibility": 100},
        issues=[
            {**ISSUE, "type": "x" * 100, "element": "e" * 1024, "severity": severity}
            for severity in ("error", "warning", "info", "notice")
        ]
        + [{**ISSUE, "type": "lighthouse:image-alt.v2", "details": {"a": {"b": [1, 2.5, None]}}}],
    )
    made = await api.post(REPORT, json=edge)
    assert made.status == 201, made.json
    counts = made.json["data"]["issues_by_severity"]
    assert counts == {"error": 1, "warning": 2, "notice": 1, "info": 1}


QUERY_CASES: list[tuple[str, dict[str, str], str]] = [
    ("issues", {"severity": "critical"}, "severity"),
    ("issues", {"severity": ""}, "severity"),
    ("issues", {"issue_type": "a b"}, "issue_type"),
    ("issues", {"issue_type": ",".join(f"t{i}" for i in range(21))}, "issue_type"),
    ("issues", {"url": "not a url"}, "url"),
    ("issues", {"sort": "element"}, "sort"),
    ("issues", {"created_after": "yesterday"}, "created_after"),
    ("issues", {"updated_after": "2026-01-01"}, "updated_after"),
    ("issues", {"per_page": "101"}, "per_page"),
    ("issues", {"status": "open"}, "status"),
    ("issues", {"fields": "id,secret"}, "fields"),
    ("reports", {"severity": "error"}, "severity"),
    ("reports", {"url": "ftp://x/"}, "url"),
    ("reports", {"sort": "seo"}, "sort"),
    ("history", {}, "url"),
    ("history", {"url": "https://example.com/", "sort": "url"}, "sort"),
]


async def test_bad_list_parameters(api: Api, boot: dict[str, Any]) -> None:
    paths = {"issues": issues_path(boot["workspace"]["id"]), "reports": REPORTS, "history": HISTORY}
    for which, params, field in QUERY_CASES:
        refused = await api.get(paths[which], params=params)
        assert refused.status == 422, (which, params, refused.json)
        assert field in refused.json["errors"], (which, params, refused.json["errors"])


async def test_list_and_filter_errors_come_together(api: Api, boot: dict[str, Any]) -> None:
    refused = await api.get(
        issues_path(boot["workspace"]["id"]), params={"severity": "bad", "page": "0"}
    )
    assert refused.status == 422
    assert set(refused.json["errors"]) == {"severity", "page"}


async def test_repeated_filter_is_refused(api: Api, boot: dict[str, Any]) -> None:
    path = issues_path(boot["workspace"]["id"]) + "?severity=error&severity=warning"
    refused = await api.get(path)
    assert refused.status == 422 and "severity" in refused.json["errors"]


async def test_a_valid_report_after_refusals(api: Api) -> None:
    assert (await api.post(REPORT, json=report_body())).status == 201
