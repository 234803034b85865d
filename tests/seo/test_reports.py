"""SEO reports: storage and read-back on both backends, the outbox event written in the
same transaction, URL normalisation, scopes and tenant isolation."""

from __future__ import annotations

from typing import Any

from seo_support import (
    HISTORY,
    REPORT,
    REPORTS,
    issues_path,
    other_tenant,
    report_body,
    row_counts,
    seo_events,
    submit,
)

from conftest import Api
from core_api.clock import ManualClock
from core_api.runtime import Runtime
from support import listen_for


async def test_submit_stores_and_reads_back(
    api: Api, runtime: Runtime, boot: dict[str, Any]
) -> None:
    made = await api.post(REPORT, json=report_body())
    assert made.status == 201, made.json
    assert made.json["message"] == "SEO report stored."
    report = made.json["data"]
    assert report["url"] == "https://example.com/page"
    assert report["scores"] == {
        "performance": 85,
        "accessibility": 92,
        "best_practices": 88,
        "seo": 95,
    }
    assert report["issues_count"] == 2
    assert report["issues_by_severity"] == {"error": 1, "warning": 1, "notice": 0, "info": 0}
    assert report["created_at"] == "2026-01-01T00:00:00Z"
    first, second = report["issues"]
    assert first["issue_type"] == "missing_alt" and first["severity"] == "warning"
    assert first["element"] == "img.hero-image" and first["details"] is None
    assert second["details"] == {"message": "No meta description", "length": 0}
    assert first["report_id"] == report["id"] and first["url"] == report["url"]
    assert first["id"] < second["id"]

    got = await api.get(f"{REPORTS}/{report['id']}")
    assert got.status == 200 and got.json["data"] == report

    listed = await api.get(REPORTS)
    assert listed.status == 200
    summary = {k: v for k, v in report.items() if k != "issues"}
    assert listed.json["data"] == [summary]
    assert listed.json["meta"]["total"] == 1

    issues = await api.get(issues_path(boot["workspace"]["id"]))
    assert issues.status == 200
    # Newest first; within one report (same time) the later issue first.
    assert issues.json["data"] == [second, first]
    assert set(first) == {
        "id",
        "report_id",
        "url",
        "issue_type",
        "severity",
        "element",
        "details",
        "created_at",
    }


async def test_the_event_is_published_with_the_report(
    api: Api, runtime: Runtime, boot: dict[str, Any]
) -> None:
    await listen_for(runtime, boot["workspace"]["id"], "seo.*")
    report = await submit(api, report_body())
    events = await seo_events(runtime, boot["workspace"]["id"])
    assert len(events) == 1
    event = events[0]
    assert event["type"] == "seo.report.created"
    assert event["workspace_id"] == boot["workspace"]["id"]
    assert event["data"]["report"] == {k: v for k, v in report.items() if k != "issues"}


async def test_partial_scores_and_no_issues(api: Api) -> None:
    report = await submit(api, {"url": "https://example.com/", "scores": {"seo": 0}})
    assert report["scores"] == {
        "performance": None,
        "accessibility": None,
        "best_practices": None,
        "seo": 0,
    }
    assert report["issues"] == [] and report["issues_count"] == 0
    nulls = await submit(
        api, {"url": "https://example.com/", "scores": {"seo": 100, "performance": None}}
    )
    assert nulls["scores"]["performance"] is None and nulls["scores"]["seo"] == 100


async def test_urls_are_normalised(api: Api) -> None:
    cases = {
        "HTTPS://Example.COM": "https://example.com/",
        "https://example.com:443/a?b=1#frag": "https://example.com/a?b=1",
        "http://example.com:80/": "http://example.com/",
        "http://example.com:8080/x": "http://example.com:8080/x",
        "https://bücher.example/café?q=ü": "https://xn--bcher-kva.example/caf%C3%A9?q=%C3%BC",
        "https://[2001:DB8::1]/": "https://[2001:db8::1]/",
        "https://example.com/a%20b": "https://example.com/a%20b",
    }
    for given, stored in cases.items():
        report = await submit(api, report_body(given, issues=[]))
        assert report["url"] == stored, given
    # One URL, one history, whatever its spelling.
    history = await api.get(HISTORY, params={"url": "https://EXAMPLE.com"})
    assert history.status == 200 and history.json["meta"]["total"] == 1


async def test_max_issues_are_stored(api: Api, runtime: Runtime, boot: dict[str, Any]) -> None:
    issues = [
        {"type": f"type-{i % 7}", "severity": "info", "element": f"#e{i}"} for i in range(1000)
    ]
    report = await submit(api, report_body(issues=issues))
    assert report["issues_count"] == 1000
    assert [i["element"] for i in report["issues"]] == [f"#e{i}" for i in range(1000)]
    got = await api.get(f"{REPORTS}/{report['id']}")
    assert got.json["data"]["issues"] == report["issues"]
    listed = await api.get(issues_path(boot["workspace"]["id"]), params={"per_page": "100"})
    assert listed.json["meta"]["total"] == 1000 and len(listed.json["data"]) == 100
    assert (await row_counts(runtime))["seo_issues"] == 1000


async def test_scopes(api: Api, boot: dict[str, Any]) -> None:
    async def key(scopes: list[str]) -> str:
        made = await api.post("/api/v1/api-keys", json={"name": "k", "scopes": scopes})
        assert made.status == 201, made.json
        return str(made.json["data"]["key"])

    reader, writer = await key(["seo:read"]), await key(["seo:write"])
    other = await key(["workspaces:read"])
    denied = await api.post(REPORT, json=report_body(), key=reader)
    assert denied.status == 403 and denied.json["error"] == "access_denied"
    assert "seo:write" in denied.json["message"]
    report = await submit(api, report_body(), key=writer)
    workspace = boot["workspace"]["id"]
    for path in (REPORTS, f"{REPORTS}/{report['id']}", issues_path(workspace)):
        assert (await api.get(path, key=writer)).status == 403, path
        assert (await api.get(path, key=other)).status == 403, path
        assert (await api.get(path, key=reader)).status == 200, path
    assert (await api.get(HISTORY, params={"url": report["url"]}, key=reader)).status == 200
    assert (await api.get(HISTORY, params={"url": report["url"]}, key=other)).status == 403


async def test_other_tenants_see_404_and_nothing(
    api: Api, runtime: Runtime, clock: ManualClock, boot: dict[str, Any]
) -> None:
    await listen_for(runtime, boot["workspace"]["id"], "seo.*")
    mine = await submit(api, report_body())
    other = await other_tenant(runtime, clock)
    key = other["api_key"]["key"]
    theirs = await submit(api, report_body("https://other.example/"), key=key)

    assert (await api.get(f"{REPORTS}/{mine['id']}", key=key)).status == 404
    assert (await api.get(f"{REPORTS}/{theirs['id']}")).status == 404
    missing = await api.get(issues_path(boot["workspace"]["id"]), key=key)
    assert missing.status == 404 and missing.json["error"] == "not_found"
    assert (await api.get(issues_path(other["workspace"]["id"]))).status == 404
    assert (await api.get(issues_path(10**12))).status == 404
    assert (await api.get("/api/v1/seo/issues/abc")).status == 404

    listed = await api.get(REPORTS, key=key)
    assert [r["id"] for r in listed.json["data"]] == [theirs["id"]]
    assert listed.json["meta"]["total"] == 1
    own = await api.get(issues_path(other["workspace"]["id"]), key=key)
    assert {i["report_id"] for i in own.json["data"]} == {theirs["id"]}
    assert own.json["meta"]["total"] == 2
    history = await api.get(HISTORY, params={"url": mine["url"]}, key=key)
    assert history.json["data"] == [] and history.json["meta"]["total"] == 0
    # X-Workspace-ID naming a workspace the user is not in falls back to the home one.
    foreign = {"X-Workspace-ID": str(boot["workspace"]["id"])}
    posted = await submit(api, report_body(), key=key, headers=foreign)
    assert (await api.get(f"{REPORTS}/{posted['id']}", key=key)).status == 200
    assert (await api.get(f"{REPORTS}/{posted['id']}")).status == 404
    assert len(await seo_events(runtime, boot["workspace"]["id"])) == 1


async def test_a_second_workspace_of_the_same_user(api: Api, boot: dict[str, Any]) -> None:
    made = await api.post("/api/v1/workspaces", json={"name": "Second"})
    assert made.status == 201, made.json
    second = made.json["data"]["id"]
    header = {"X-Workspace-ID": str(second)}
    report = await submit(api, report_body(), headers=header)
    home = boot["workspace"]["id"]
    assert (await api.get(issues_path(home))).json["data"] == []
    there = await api.get(issues_path(second))
    assert there.status == 200 and len(there.json["data"]) == 2
    assert (await api.get(f"{REPORTS}/{report['id']}")).status == 404
    assert (await api.get(f"{REPORTS}/{report['id']}", headers=header)).status == 200


async def test_idempotent_submit_stores_once(api: Api, runtime: Runtime) -> None:
    headers = {"Idempotency-Key": "seo-1"}
    first = await api.post(REPORT, json=report_body(), headers=headers)
    again = await api.post(REPORT, json=report_body(), headers=headers)
    assert first.status == again.status == 201
    assert again.header("Idempotent-Replayed") == "true"
    assert again.json == first.json
    assert (await row_counts(runtime))["seo_reports"] == 1


async def test_a_workspace_deleted_meanwhile_is_a_404(
    api: Api, runtime: Runtime, clock: ManualClock, boot: dict[str, Any]
) -> None:
    """A report for a workspace deleted after the request resolved it stores nothing."""
    import pytest

    from core_api.errors import NotFound
    from core_api.seo.service import SeoService
    from core_api.seo.validation import report_input

    made = await api.post("/api/v1/workspaces", json={"name": "Gone"})
    gone = made.json["data"]["id"]
    assert (await api.delete(f"/api/v1/workspaces/{gone}")).status == 204
    service = SeoService(runtime.db, clock, runtime.events)
    before = await seo_events(runtime, gone)
    with pytest.raises(NotFound):
        await service.submit(gone, report_input(report_body()))
    counts = await row_counts(runtime)
    assert {counts[t] for t in counts if t.startswith("seo_")} == {0}
    assert await seo_events(runtime, gone) == before == []
