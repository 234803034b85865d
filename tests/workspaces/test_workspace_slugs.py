"""Generated workspace slugs under concurrency: every create gets a distinct slug, never a
422, on both backends (PostgreSQL once refused 163 of 300 same-name creates)."""

from __future__ import annotations

import asyncio

from conftest import Api
from core_api.workspaces.service import SLUG

WORKSPACES = "/api/v1/workspaces"


async def test_concurrent_same_name_creates_all_get_distinct_slugs(api: Api) -> None:
    results = await asyncio.gather(
        *(api.post(WORKSPACES, json={"name": "Race Corp"}) for _ in range(60))
    )
    assert [r.status for r in results] == [201] * 60, [r.json for r in results if r.status != 201]
    slugs = [r.json["data"]["slug"] for r in results]
    assert len(set(slugs)) == 60
    assert "race-corp" in slugs
    assert all(s.startswith("race-corp") and SLUG.match(s) for s in slugs)
    listed = await api.get(WORKSPACES, params={"search": "race-corp", "per_page": "100"})
    assert listed.json["meta"]["total"] == 60


async def test_explicit_slug_race_has_one_winner(api: Api) -> None:
    results = await asyncio.gather(
        *(api.post(WORKSPACES, json={"name": "Mine", "slug": "mine"}) for _ in range(10))
    )
    assert sorted(r.status for r in results) == [201] + [422] * 9
    refused = next(r for r in results if r.status == 422)
    assert refused.json["errors"]["slug"] == ["The slug has already been taken."]
