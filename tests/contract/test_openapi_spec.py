"""The OpenAPI document validates, follows the conventions of /work's OPENAPI contract
(operation ids, tags, scopes, errors), and its assembler refuses clashes."""

from __future__ import annotations

import re
from typing import Any

import pytest
from openapi_spec_validator import validate

from core_api.openapi import DocumentError, assemble, document
from core_api.openapi.document import load_yaml, merge

METHODS = ("get", "put", "post", "delete", "patch")


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, item in document()["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def test_document_validates() -> None:
    validate(document())  # OpenAPI 3.1 schema + JSON Schema 2020-12 of every schema
    assert document()["openapi"].startswith("3.1.")


def test_assembled_twice_is_the_same() -> None:
    assert assemble() == document()


def test_every_operation_is_complete() -> None:
    doc = document()
    tags = {tag["name"] for tag in doc["tags"]}
    ids: dict[str, str] = {}
    problems = []
    for path, method, op in operations():
        where = f"{method.upper()} {path}"
        op_id = op.get("operationId", "")
        if not re.fullmatch(r"[a-z][A-Za-z0-9]*", op_id):
            problems.append(f"{where}: operationId {op_id!r} is not camelCase")
        if op_id in ids:
            problems.append(f"{where}: operationId {op_id} is also {ids[op_id]}")
        ids[op_id] = where
        if not op.get("tags") or not set(op["tags"]) <= tags:
            problems.append(f"{where}: tags {op.get('tags')} not among the declared {sorted(tags)}")
        if not op.get("summary"):
            problems.append(f"{where}: no summary")
        if "x-required-scopes" not in op:
            problems.append(f"{where}: no x-required-scopes")
        responses = op.get("responses", {})
        public = op.get("security") == []
        if not public:
            for status in ("401", "429"):
                if status not in responses:
                    problems.append(f"{where}: authenticated, but no {status} response")
    assert not problems, "\n".join(problems)


def test_components_of_base_are_there() -> None:
    components = document()["components"]
    for name in ("Error", "ValidationError", "ListMeta", "ListLinks", "Timestamp"):
        assert name in components["schemas"]
    for name in ("Page", "PerPage", "Sort", "Search", "CreatedAfter", "CreatedBefore"):
        assert name in components["parameters"]
    for name in ("IdempotencyKey", "WorkspaceHeader", "IdPath"):
        assert name in components["parameters"]
    for name in (
        "BadRequest",
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "Conflict",
        "PayloadTooLarge",
        "UnsupportedMediaType",
        "ValidationFailed",
        "RateLimited",
        "ServiceUnavailable",
    ):
        assert name in components["responses"]
    assert components["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert document()["security"] == [{"bearerAuth": []}]


BASE = {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {}}


def test_merge_refuses_a_path_twice() -> None:
    one = {"paths": {"/a": {"get": {"responses": {}}}}}
    with pytest.raises(DocumentError, match=r"b\.yaml: path /a is already defined by a\.yaml"):
        merge(BASE, [("a.yaml", one), ("b.yaml", one)])


def test_merge_refuses_a_component_twice() -> None:
    base = {**BASE, "components": {"schemas": {"Error": {}}}}
    clash = {"components": {"schemas": {"Error": {"type": "object"}}}}
    with pytest.raises(DocumentError, match=r"components\.schemas\.Error .* base\.yaml"):
        merge(base, [("x.yaml", clash)])


def test_merge_refuses_what_only_the_base_sets() -> None:
    with pytest.raises(DocumentError, match="unknown top-level keys"):
        merge(BASE, [("x.yaml", {"info": {}})])
    with pytest.raises(DocumentError, match="securitySchemes may not be set"):
        merge(BASE, [("x.yaml", {"components": {"securitySchemes": {"x": {}}}})])


def test_merge_leaves_the_base_alone() -> None:
    merged = merge(BASE, [("x.yaml", {"paths": {"/x": {}}})])
    assert merged["paths"] == {"/x": {}}
    assert BASE["paths"] == {}


def test_yaml_refuses_a_repeated_key() -> None:
    with pytest.raises(DocumentError, match="duplicate key '/a' at line 3"):
        load_yaml("paths:\n  /a: {}\n  /a: {}\n", "f.yaml")


def test_yaml_keys_and_dates_are_json() -> None:
    loaded = load_yaml("responses:\n  200: {description: ok}\nwhen: 2026-01-01\n", "f.yaml")
    assert loaded == {"responses": {"200": {"description": "ok"}}, "when": "2026-01-01"}


def test_a_feature_without_a_fragment_adds_nothing() -> None:
    doc = assemble(["core_api.storage"])  # a package without openapi.yaml
    assert doc["paths"] == {}
