"""Event types and the subscription patterns that match them.

A type is dot-separated lower-case words (``post.created``, ``seo.report.created``). An
endpoint subscribes with exact types, ``prefix.*`` (every type under ``prefix.``, at any
depth) or ``*`` (everything). Matching is a set intersection: a type's candidate patterns
(``*``, ``seo.*``, ``seo.report.*``, ``seo.report.created``) against the endpoint's.
"""

from __future__ import annotations

import functools
import re

import orjson

MAX_TYPE_LENGTH = 128
MAX_PATTERNS = 100
# \Z, not $: "$" also matches before a final newline ("post.created\n" was a type).
_TYPE = re.compile(r"^[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)*\Z")


def type_problem(name: str) -> str | None:
    """Why ``name`` is not an event type, or None."""
    if len(name) > MAX_TYPE_LENGTH:
        return f"may not be longer than {MAX_TYPE_LENGTH} characters"
    if not _TYPE.match(name):
        return "must be dot-separated lower-case words, like post.created"
    return None


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a subscription pattern (type, ``prefix.*`` or ``*``), or None."""
    if pattern == "*":
        return None
    base = pattern.removesuffix(".*")
    if type_problem(base) is None:
        return None
    return "must be an event type (post.created), a prefix pattern (post.*) or *"


@functools.lru_cache(maxsize=4096)
def candidates(event_type: str) -> frozenset[str]:
    """Every pattern that matches ``event_type``."""
    parts = event_type.split(".")
    found = {"*", event_type}
    found.update(".".join(parts[:n]) + ".*" for n in range(1, len(parts)))
    return frozenset(found)


@functools.lru_cache(maxsize=65_536)
def parse_stored(events_json: str) -> frozenset[str]:
    """An endpoint's stored ``events`` column (JSON text), parsed once per distinct value."""
    return frozenset(orjson.loads(events_json))


def matches(patterns: frozenset[str], event_type: str) -> bool:
    return not patterns.isdisjoint(candidates(event_type))
