"""Bad input is a 422 naming the field, never a 5xx, and commits nothing; whatever is
stored always reads back. One test per class of input from the adversarial probe
(found by an adversarial probe of the running service), on both storage backends."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from conftest import Api
from core_api.clock import MAX_MS, iso
from core_api.web.bodies import MAX_BODY_DEPTH, MAX_SETTINGS_BYTES, MAX_SETTINGS_DEPTH
from core_api.web.listing import MAX_PAGE, MAX_TERMS
from support import KEYS, WS, read_back

LISTS = [WS, KEYS]


def nested(depth: int) -> dict[str, Any]:
    """A JSON object ``depth`` levels deep (the object itself is level 1)."""
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


def assert_422(result: Any, field: str) -> None:
    assert result.status == 422, (field, result.status, result.json)
    assert result.json["error"] == "validation_failed"
    assert field in result.json["errors"], (field, result.json)


async def test_deep_settings_are_422_and_not_committed(api: Api, boot: dict[str, Any]) -> None:
    path = f"{WS}/{boot['workspace']['id']}"
    before = await read_back(api)
    for depth in (MAX_SETTINGS_DEPTH + 1, 253, 255, 1000):
        # Written by hand: the encoders of the test client stop at a few hundred levels.
        raw = b'{"settings":' + b'{"n":' * (depth - 1) + b'{"leaf":1}' + b"}" * depth
        patched = await api.patch(path, body=raw, headers={"Content-Type": "application/json"})
        assert_422(patched, "settings")
    # Any body: deeper than the global limit is a 422 for the field that holds it ...
    deep_body = await api.post(WS, json={"name": "deep", "extra": nested(MAX_BODY_DEPTH)})
    assert_422(deep_body, "extra")
    # ... and beyond orjson's own parser limit (1024) it is a malformed body.
    raw = b'{"settings":' + b"[" * 1100 + b"]" * 1100 + b"}"
    too_deep = await api.patch(path, body=raw, headers={"Content-Type": "application/json"})
    assert_422(too_deep, "body")
    assert await read_back(api) == before
    fits = await api.patch(path, json={"settings": {"tree": nested(MAX_SETTINGS_DEPTH - 1)}})
    assert fits.status == 200, fits.json
    assert (await api.get(path)).json["data"]["settings"]["tree"] == nested(MAX_SETTINGS_DEPTH - 1)
    await read_back(api)


async def test_settings_cap_applies_to_the_merged_result(api: Api, boot: dict[str, Any]) -> None:
    path = f"{WS}/{boot['workspace']['id']}"
    chunk = "x" * (MAX_SETTINGS_BYTES // 2)
    first = await api.patch(path, json={"settings": {"a": chunk}})
    assert first.status == 200, first.json
    for name in "bcdefgh":  # each alone is under the cap; merged they are not
        assert_422(await api.patch(path, json={"settings": {name: chunk}}), "settings")
    stored = (await api.get(path)).json["data"]["settings"]
    assert set(stored) == {"timezone", "locale", "a"}
    assert len(orjson.dumps(stored)) <= MAX_SETTINGS_BYTES
    # Removing a key (null) makes room again.
    swapped = await api.patch(path, json={"settings": {"a": None, "b": chunk}})
    assert swapped.status == 200 and "a" not in swapped.json["data"]["settings"]


async def test_dates_out_of_range_are_422(api: Api) -> None:
    before = await read_back(api)
    for text in (
        "9999-12-31T23:59:59-23:59",  # year 10000 in UTC
        "1969-12-31T23:59:59Z",
        "0001-01-01T00:00:00+01:00",
        "\u0662\u0660\u0663\u0660-01-01T00:00:00Z",  # Arabic-Indic digits
        "2030-01-01T00:00:00+24:00",
        "2030-01-01T00:00:00Z" + " " * 100,
    ):
        created = await api.post(KEYS, json={"name": "far", "expires_at": text})
        assert_422(created, "expires_at")
        for path in LISTS:
            for name in ("created_after", "created_before", "updated_before"):
                assert_422(await api.get(path, params={name: text}), name)
    assert await read_back(api) == before
    # The last instant of the range is stored, presented, listed and rotated.
    latest = await api.post(KEYS, json={"name": "latest", "expires_at": iso(MAX_MS)})
    assert latest.status == 201, latest.json
    assert latest.json["data"]["expires_at"] == "9999-12-31T23:59:59Z"
    rotated = await api.post(f"{KEYS}/{latest.json['data']['id']}/rotate", json={})
    assert rotated.status == 200, rotated.json
    await read_back(api)


@pytest.mark.parametrize("path", LISTS)
async def test_integer_query_parameters_are_bounded_and_ascii(api: Api, path: str) -> None:
    for params, name in (
        ({"page": "922337203685477581"}, "page"),
        ({"page": str(MAX_PAGE + 1)}, "page"),
        ({"page": "9" * 5000}, "page"),  # beyond int()'s digit limit
        ({"per_page": "922337203685477581"}, "per_page"),
        ({"page": "\u00b2"}, "page"),  # '²'.isdigit() is True
        ({"per_page": "\u0661\u0660"}, "per_page"),  # Arabic-Indic 10: int() accepts it
        ({"page": "+1"}, "page"),
        ({"page": " 1"}, "page"),
    ):
        assert_422(await api.get(path, params=params), name)
    last = await api.get(path, params={"page": str(MAX_PAGE), "per_page": "100"})
    assert last.status == 200 and last.json["data"] == []


@pytest.mark.parametrize("value", ["\u00b2", "\u00b9\u00b2", "99999999999999999999", "-1", ""])
async def test_workspace_header_must_be_an_ascii_id(api: Api, value: str) -> None:
    assert_422(await api.get(KEYS, headers={"X-Workspace-ID": value}), "X-Workspace-ID")
    created = await api.post(KEYS, json={"name": "k"}, headers={"X-Workspace-ID": value})
    assert_422(created, "X-Workspace-ID")


async def test_nul_characters_are_422_everywhere(api: Api, boot: dict[str, Any]) -> None:
    path = f"{WS}/{boot['workspace']['id']}"
    before = await read_back(api)
    for method, target, body, field in (
        ("POST", WS, {"name": "a\x00b"}, "name"),
        ("POST", WS, {"name": "ok", "slug": "\x00"}, "slug"),
        ("POST", WS, {"name": "ok", "tier": "pro\x00"}, "tier"),
        ("PATCH", path, {"name": "a\x00b"}, "name"),
        ("PATCH", path, {"settings": {"k\x00": 1}}, "settings"),
        ("PATCH", path, {"settings": {"k": ["deep", {"v": "\x00"}]}}, "settings"),
        ("POST", KEYS, {"name": "a\x00b"}, "name"),
        ("POST", KEYS, {"name": "k", "scopes": ["read\x00"]}, "scopes"),
        ("POST", KEYS, {"name": "k", "expires_at": "2030-01-01\x00"}, "expires_at"),
        ("POST", WS, {"name": "ok", "\x00": 1}, "body"),
    ):
        assert_422(await api.request(method, target, json=body), field)
    for target in LISTS:
        for name in ("search", "sort", "fields", "include", "created_after"):
            assert_422(await api.get(target, params={name: "a\x00"}), name)
    assert_422(await api.get(KEYS, params={"status": "\x00"}), "status")
    assert await read_back(api) == before


@pytest.mark.parametrize("path", LISTS)
async def test_term_counts_and_lengths_are_capped(api: Api, path: str) -> None:
    for params, name in (
        ({"sort": ",".join(["id"] * 2500)}, "sort"),
        ({"sort": ",".join(["-id"] * (MAX_TERMS + 1))}, "sort"),
        ({"fields": ",".join(["id"] * (MAX_TERMS + 1))}, "fields"),
        ({"include": ",".join(["x"] * 5000)}, "include"),
        ({"search": "s" * 256}, "search"),
        ({"sort": "id," * 5000}, "sort"),
    ):
        assert_422(await api.get(path, params=params), name)
    at_cap = await api.get(path, params={"sort": ",".join(["-id"] * MAX_TERMS)})
    assert at_cap.status == 200, at_cap.json


async def test_body_integers_and_strings_are_bounded(api: Api, boot: dict[str, Any]) -> None:
    key_id = boot["api_key"]["id"]
    rotate = f"{KEYS}/{key_id}/rotate"
    before = await read_back(api)
    for hours in (2**63, 2**64 - 1, -(2**63) - 1, 10**30, 1.5, True, "24"):
        assert_422(await api.post(rotate, json={"grace_period_hours": hours}), "grace_period_hours")
    ws = f"{WS}/{boot['workspace']['id']}"
    for big in (2**63, 2**64 - 1):
        assert_422(await api.patch(ws, json={"settings": {"n": big}}), "settings")
    assert_422(await api.post(WS, json={"name": "x" * 256}), "name")
    assert_422(await api.post(KEYS, json={"name": "k", "scopes": ["a" * 81]}), "scopes")
    assert_422(await api.post(KEYS, json={"name": "k", "scopes": ["read"] * 65}), "scopes")
    # Lone surrogates and invalid UTF-8 are malformed JSON.
    for raw in (b'{"name": "\\ud800"}', b'{"name": "\xff"}', b'{"name": "\xed\xa0\x80"}'):
        bad = await api.post(WS, body=raw, headers={"Content-Type": "application/json"})
        assert_422(bad, "body")
    assert await read_back(api) == before
    fits = await api.patch(ws, json={"settings": {"n": 2**63 - 1, "m": -(2**63)}})
    assert fits.status == 200, fits.json
    await read_back(api)
