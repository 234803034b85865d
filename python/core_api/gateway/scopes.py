"""Scopes: ``resource:action`` with actions read, write, delete.

Wildcards: ``*`` (everything), ``resource:*``, ``*:action``; the bare ``read``/``write``/
``delete`` mean ``*:read`` etc. Scopes are normalised to ``resource:action`` pairs once,
when a key is loaded, so the per-request check is a few set look-ups.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

ACTIONS = ("read", "write", "delete")
_SCOPE = re.compile(
    r"^(?:\*|read|write|delete|(?:\*|[a-z][a-z0-9_-]{0,63}):(?:\*|read|write|delete))$"
)


def is_valid(scope: str) -> bool:
    return bool(_SCOPE.fullmatch(scope))  # not match: `$` also matches before a final \n


def normalise(scope: str) -> str:
    if scope == "*":
        return "*:*"
    if scope in ACTIONS:
        return f"*:{scope}"
    return scope


def grants(granted: frozenset[str], required: str) -> bool:
    """Does a normalised scope set allow the concrete ``resource:action`` required?"""
    if required in granted or "*:*" in granted:
        return True
    resource, _, action = required.partition(":")
    return f"*:{action}" in granted or f"{resource}:*" in granted


def covers(granted: frozenset[str], requested: str) -> bool:
    """Is every permission of ``requested`` (possibly a wildcard) held by ``granted``?"""
    resource, _, action = normalise(requested).partition(":")
    actions = ACTIONS if action == "*" else (action,)
    for act in actions:
        if resource == "*":
            if "*:*" not in granted and f"*:{act}" not in granted:
                return False
        elif not grants(granted, f"{resource}:{act}"):
            return False
    return True


def covers_all(granted: frozenset[str], requested: Iterable[str]) -> bool:
    """Does ``granted`` hold every permission of every scope in ``requested``? The test for
    anything that hands out or takes away a credential (create, rotate, revoke)."""
    return all(covers(granted, scope) for scope in requested)


def normalised_set(scopes: list[str]) -> frozenset[str]:
    return frozenset(normalise(s) for s in scopes)
