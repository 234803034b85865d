"""Every route the app serves is in the OpenAPI document, and every documented operation
is a route the app serves (auto OPTIONS/HEAD responders aside); each operation's
``x-required-scopes`` and ``security`` are what the gateway enforces."""

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


def responders(app: Any) -> dict[tuple[str, str], Any]:
    """(METHOD, template) -> resource, for each responder a resource defines, templates as
    OpenAPI writes them (``{id:id}`` -> ``{id}``)."""
    found: dict[tuple[str, str], Any] = {}

    def walk(nodes: list[Any]) -> None:
        for node in nodes:
            if node.resource is not None and node.method_map:
                template = re.sub(r"\{(\w+)(?::[^}]*)?\}", r"{\1}", node.uri_template)
                for method, responder in node.method_map.items():
                    # Falcon's own responders (OPTIONS, 405 for the rest) are plain functions.
                    if getattr(responder, "__self__", None) is node.resource:
                        found[(method, template)] = node.resource
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
    # Default settings: every optional route (metrics) is on.
    settings = make_settings(f"sqlite:///{tmp_path}/core-api.db", tmp_path)
    runtime = await Runtime.open(settings, run_migrations=True)
    try:
        yield create_app(settings, runtime)
    finally:
        await runtime.close()


async def test_every_route_is_documented_and_every_operation_served(app: Any) -> None:
    served = set(responders(app))
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


async def test_documented_scopes_and_security_are_the_gateways(app: Any) -> None:
    problems = []
    for (method, template), resource in sorted(responders(app).items()):
        op = document()["paths"].get(template, {}).get(method.lower())
        if op is None:
            continue  # the parity test reports it
        public = getattr(resource, "public", False)
        scope = getattr(resource, "scopes", {}).get(method)
        scopes = [] if public or scope is None else [scope]
        if op.get("x-required-scopes") != scopes:
            problems.append(
                f"{method} {template}: x-required-scopes {op.get('x-required-scopes')},"
                f" the gateway requires {scopes}"
            )
        if public != (op.get("security") == []):
            problems.append(f"{method} {template}: public={public}, security={op.get('security')}")
    assert not problems, "\n".join(problems)


def test_documented_path_parameters_match_the_template() -> None:
    problems = []
    for path, item in document()["paths"].items():
        names = set(re.findall(r"\{(\w+)\}", path))
        shared = item.get("parameters", [])
        for method, op in item.items():
            if method not in DOC_METHODS:
                continue
            declared = set()
            for param in [*shared, *op.get("parameters", [])]:
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
