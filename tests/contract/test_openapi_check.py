"""The response check the in-process test client runs (tests/openapi_check.py) catches what
it should: an undocumented status, content type or body, and matches literal paths first."""

from __future__ import annotations

from typing import Any

import orjson

from openapi_check import Contract

JSON = {"content-type": "application/json"}


def _doc() -> dict[str, Any]:
    ok = {
        "description": "ok",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {
            "/things/{id}": {
                "get": {
                    "responses": {
                        "200": ok,
                        "404": {"$ref": "#/components/responses/NotFound"},
                        "304": {"description": "not modified"},
                    }
                },
                "delete": {"responses": {"204": {"description": "gone"}}},
            },
            "/things/special": {
                "get": {
                    "responses": {"200": {"description": "text", "content": {"text/plain": {}}}}
                }
            },
            "/files/{uri}": {"get": {"responses": {"200": ok}}},
        },
        "components": {
            "schemas": {
                "Thing": {
                    "type": "object",
                    "required": ["id", "at"],
                    "properties": {
                        "id": {"type": "integer"},
                        "at": {"type": "string", "format": "date-time"},
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                },
            },
            "responses": {
                "NotFound": {
                    "description": "nf",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
            },
        },
    }


def problems(method: str, path: str, status: int, body: Any, headers: Any = JSON) -> list[str]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    generic = {
        "description": "Unexpected error",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    contract = Contract({**_doc(), "x-core-api-generic-500": generic})
    return contract.problems(method, path, status, headers, raw)


def test_a_matching_response_passes() -> None:
    assert problems("GET", "/things/1", 200, {"id": 1, "at": "2026-01-01T00:00:00Z"}) == []
    assert problems("GET", "/things/1?x=1", 404, {"error": "not_found", "message": "m"}) == []
    assert problems("GET", "/things/1/", 304, b"") == []  # the app strips a trailing slash
    assert problems("DELETE", "/things/1", 204, b"") == []


def test_mismatches_are_reported() -> None:
    (wrong_type,) = problems("GET", "/things/1", 200, {"id": "1", "at": "2026-01-01T00:00:00Z"})
    assert "at id" in wrong_type and "is not of type 'integer'" in wrong_type
    (bad_format,) = problems("GET", "/things/1", 200, {"id": 1, "at": "yesterday"})
    assert "is not a 'date-time'" in bad_format
    (missing,) = problems("GET", "/things/1", 200, {"id": 1})
    assert "'at' is a required property" in missing
    (status,) = problems("GET", "/things/1", 409, {"error": "x", "message": "y"})
    assert "status 409 is not documented" in status
    (media,) = problems("GET", "/things/1", 200, b"<html>", {"content-type": "text/html"})
    assert "content type 'text/html' is not documented" in media
    (body,) = problems("DELETE", "/things/1", 204, b"{}")
    assert "no body" in body


def test_literal_paths_win_and_rest_of_path_parameters() -> None:
    assert problems("GET", "/things/special", 200, b"hi", {"content-type": "text/plain"}) == []
    assert problems("GET", "/files/a/b/c", 200, {"id": 1, "at": "2026-01-01T00:00:00Z"}) == []


def test_undocumented_routes_and_methods_are_left_to_the_parity_test() -> None:
    assert problems("GET", "/nowhere", 418, b"") == []
    assert problems("PUT", "/things/1", 405, {"error": "method_not_allowed"}) == []


def test_a_500_is_checked_against_the_error_body_only() -> None:
    assert problems("GET", "/things/1", 500, {"error": "server_error", "message": "m"}) == []
    (shape,) = problems("GET", "/things/1", 500, {"oops": True})
    assert "'error' is a required property" in shape
