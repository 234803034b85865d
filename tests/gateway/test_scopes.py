"""Scope grammar and matching: wildcards, bare actions, and 'no broader than your own'."""

from __future__ import annotations

import pytest

from core_api.gateway import scopes


@pytest.mark.parametrize(
    "scope",
    [
        "*",
        "read",
        "write",
        "delete",
        "posts:read",
        "api-keys:write",
        "posts:*",
        "*:delete",
        "*:*",
        "seo_reports:read",
    ],
)
def test_valid(scope: str) -> None:
    assert scopes.is_valid(scope)


@pytest.mark.parametrize(
    "scope",
    [
        "",
        "posts",
        "posts:publish",
        "Posts:read",
        "posts:read:x",
        ":read",
        "posts:",
        "**",
        "posts :read",
        "1posts:read",
        "p" * 65 + ":read",
    ],
)
def test_invalid(scope: str) -> None:
    assert not scopes.is_valid(scope)


@pytest.mark.parametrize(
    ("granted", "required", "allowed"),
    [
        (["*"], "posts:delete", True),
        (["read"], "posts:read", True),
        (["read"], "posts:write", False),
        (["posts:*"], "posts:delete", True),
        (["posts:*"], "users:read", False),
        (["*:write"], "users:write", True),
        (["posts:read", "posts:write"], "posts:delete", False),
        ([], "posts:read", False),
    ],
)
def test_grants(granted: list[str], required: str, allowed: bool) -> None:
    assert scopes.grants(scopes.normalised_set(granted), required) is allowed


@pytest.mark.parametrize(
    ("granted", "requested", "covered"),
    [
        (["*"], "*", True),
        (["*"], "posts:*", True),
        (["posts:*"], "posts:read", True),
        (["posts:read", "posts:write", "posts:delete"], "posts:*", True),
        (["posts:read", "posts:write"], "posts:*", False),
        (["posts:*"], "*:read", False),
        (["read"], "*:read", True),
        (["read"], "posts:read", True),
        (["read", "write", "delete"], "*", True),
        (["read", "write"], "*", False),
        (["posts:read"], "read", False),
        (["*:read", "*:write"], "posts:*", False),
        (["*:read", "*:write", "*:delete"], "posts:*", True),
    ],
)
def test_covers(granted: list[str], requested: str, covered: bool) -> None:
    assert scopes.covers(scopes.normalised_set(granted), requested) is covered


@pytest.mark.parametrize(
    ("granted", "requested", "covered"),
    [
        (["*"], ["*"], True),
        (["*:write"], ["api-keys:write", "posts:write"], True),
        (["api-keys:write"], ["*:write"], False),
        (["api-keys:write"], ["api-keys:write", "posts:read"], False),
        (["posts:*"], ["posts:read", "posts:delete"], True),
        (["write"], ["api-keys:write"], True),
        (["api-keys:*"], [], True),
    ],
)
def test_covers_all(granted: list[str], requested: list[str], covered: bool) -> None:
    assert scopes.covers_all(scopes.normalised_set(granted), requested) is covered
