"""Helpers for the security tests: every route the app serves, with its resource."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def routes(app: Any) -> Iterator[tuple[str, Any]]:
    """``(uri_template, resource)`` of every route in the app's compiled router."""

    def walk(nodes: list[Any]) -> Iterator[Any]:
        for node in nodes:
            yield node
            yield from walk(node.children)

    for node in walk(app._router._roots):
        if node.resource is not None:
            yield node.uri_template, node.resource


def responders(resource: Any) -> list[str]:
    """The HTTP methods a resource answers itself (``on_get`` -> ``GET``)."""
    return sorted(
        name[3:].upper()
        for name in dir(resource)
        if name.startswith("on_") and "_" not in name[3:] and callable(getattr(resource, name))
    )
