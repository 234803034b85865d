"""Every route the app serves is in the OpenAPI document, and every documented operation
is a route the app serves (auto OPTIONS/HEAD responders aside)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from conftest import make_settings
from core_api.app import create_app
from core_api.openapi import document
from core_api.pixel import fastpath
from core_api.runtime import Runtime

DOC_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def served_routes(app: Any) -> set[tuple[str, str]]:
    """(METHOD, template) for each responder a resource defines, templates as OpenAPI
    writes them (``{id:id}`` -> ``{id}``)."""
    found: set[tuple[str, str]] = set()

    def walk(nodes: list[Any]) -> None:
        for node in nodes:
            if node.resource is not None and node.method_map:
                template = re.sub(r"\{(\w+)(?::[^}]*)?\}", r"{\1}", node.uri_template)
                for method, responder in node.method_map.items():
                    # Falcon's own responders (OPTIONS, 405 for the rest) are plain functions.
                    if getattr(responder, "__self__", None) is node.resource:
                        found.add((method, template))
            walk(node.children)

    walk(app._router._roots)
    return found


def documented() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document()["paths"].items()
        for method in item
        if method in DOC_METHODS
    }


@pytest.fixture
async def app(tmp_path: Path) -> Any:
    # Every optional route switched on (metrics), so the comparison sees all of them.
    settings = make_settings(f"sqlite:///{tmp_path}/core-api.db", tmp_path)
    runtime = await Runtime.open(settings, run_migrations=True)
    try:
        yield create_app(settings, runtime)
    finally:
        await runtime.close()


async def test_every_route_is_documented_and_every_operation_served(app: Any) -> None:
    served = served_routes(app)
    # The ASGI fast path in front of the app answers this route without the router.
    served.add(("POST", fastpath.PATH))
    assert ("GET", "/api/v1/workspaces") in served  # the walk sees the router
    missing = sorted(served - documented())
    extra = sorted(documented() - served)
    assert not missing, "routes without an operation in the document:\n" + "\n".join(
        f"  {m} {p}" for m, p in missing
    )
    assert not extra, "documented operations that no route serves:\n" + "\n".join(
        f"  {m} {p}" for m, p in extra
    )


def test_documented_path_parameters_match_the_template() -> None:
    problems = []
    for path, item in document()["paths"].items():
        names = set(re.findall(r"\{(\w+)\}", path))
        shared = item.get("parameters", [])
        for method, op in item.items():
            if method not in DOC_METHODS:
                continue
            params = [*shared, *op.get("parameters", [])]
            declared = set()
            for param in params:
                if "$ref" in param:
                    param = _resolve(param["$ref"])
                if param.get("in") == "path":
                    declared.add(param["name"])
            if declared != names:
                problems.append(f"{method.upper()} {path}: path parameters {sorted(declared)}")
    assert not problems, "\n".join(problems)


def _resolve(ref: str) -> dict[str, Any]:
    node: Any = document()
    for token in ref.removeprefix("#/").split("/"):
        node = node[token]
    return dict(node)
