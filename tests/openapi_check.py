"""Responses checked against the OpenAPI document (python/core_api/openapi).

``verify(method, path, status, headers, body)`` finds the documented operation for a
request (the most literal path template first, so ``/webhooks/event-types`` wins over
``/webhooks/{id}``) and raises ``AssertionError`` when the response's status, content type
or JSON body does not match it. Requests to a path or method the document does not have
are not checked here (the parity test in tests/contract finds those). Validators are
compiled once per process and per response schema.

``CORE_API_OPENAPI_VALIDATE=0`` switches the check off (to see a test's own failure first).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from core_api.openapi import document

URI = "urn:core-api:openapi"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# Path parameters that take the rest of the path (Falcon's ``{name:path}`` converter).
REST_OF_PATH = frozenset({"uri"})
ENABLED = os.environ.get("CORE_API_OPENAPI_VALIDATE", "1") != "0"


@dataclass(frozen=True, slots=True)
class Route:
    template: str
    pattern: re.Pattern[str]
    literal: int  # characters outside {variables}: more is more specific


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def pointer(*tokens: str) -> str:
    return "".join("/" + _escape(t) for t in tokens)


def template_regex(template: str) -> re.Pattern[str]:
    out, pos = [], 0
    for m in re.finditer(r"\{([^}/]+)\}", template):
        out.append(re.escape(template[pos : m.start()]))
        out.append(".+" if m.group(1) in REST_OF_PATH else "[^/]+")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out) + r"\Z")


class Contract:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.registry: Registry[Any] = Registry().with_resource(
            URI, Resource.from_contents(doc, default_specification=DRAFT202012)
        )
        routes = [
            Route(t, template_regex(t), len(re.sub(r"\{[^}]*\}", "", t))) for t in doc["paths"]
        ]
        self.routes = sorted(routes, key=lambda r: (r.template.count("{"), -r.literal))
        self._validators: dict[str, Draft202012Validator] = {}

    def route(self, path: str) -> str | None:
        for route in self.routes:
            if route.pattern.match(path):
                return route.template
        return None

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]] | None:
        template = self.route(path)
        if template is None:
            return None
        op = self.doc["paths"][template].get(method.lower())
        return None if op is None else (template, op)

    def _deref(self, obj: dict[str, Any], where: str) -> tuple[dict[str, Any], str]:
        while "$ref" in obj:
            ref = obj["$ref"]
            assert ref.startswith("#/"), f"only local $refs are supported: {ref}"
            where = ref[1:]
            obj = self.doc
            for token in ref[2:].split("/"):
                obj = obj[token.replace("~1", "/").replace("~0", "~")]
        return obj, where

    def validator(self, location: str) -> Draft202012Validator:
        found = self._validators.get(location)
        if found is None:
            found = Draft202012Validator(
                {"$ref": f"{URI}#{location}"},
                registry=self.registry,
                format_checker=Draft202012Validator.FORMAT_CHECKER,
            )
            self._validators[location] = found
        return found

    def problems(
        self, method: str, path: str, status: int, headers: Mapping[str, str], body: bytes
    ) -> list[str]:
        """What is wrong with this response, or [] (also when it is not documented)."""
        path = path.split("?", 1)[0]
        if len(path) > 1:
            path = path.rstrip("/")  # the app strips a trailing slash too
        found = self.operation(method, path)
        if found is None:
            return []
        template, op = found
        where = f"{method.upper()} {template} -> {status}"
        responses = op.get("responses", {})
        for key in (str(status), f"{str(status)[0]}XX", "default"):
            if key in responses:
                response, location = self._deref(
                    responses[key], pointer("paths", template, method.lower(), "responses", key)
                )
                break
        else:
            if status != 500:
                documented = sorted(responses)
                return [f"{where}: status {status} is not documented (documented: {documented})"]
            # An unexpected error is in no operation (schemathesis fails on any 500); tests
            # that provoke one on purpose still get the documented error body checked.
            response, location = GENERIC_500, pointer("x-core-api-generic-500")
        content: dict[str, Any] = response.get("content") or {}
        lowered = {k.lower(): v for k, v in headers.items()}
        if not content:
            if body:
                return [f"{where}: the document says no body, got {body[:200]!r}"]
            return []
        if not body and status in (204, 304):
            return []
        media = lowered.get("content-type", "").split(";", 1)[0].strip().lower()
        chosen = _media_match(media, content)
        if chosen is None:
            return [f"{where}: content type {media!r} is not documented ({sorted(content)})"]
        if not _is_json(media):
            return []
        schema_at = content[chosen].get("schema")
        if schema_at is None:
            return []
        try:
            instance = orjson.loads(body)
        except orjson.JSONDecodeError:
            return [f"{where}: the body is not JSON: {body[:200]!r}"]
        validator = self.validator(location + pointer("content", chosen, "schema"))
        error = best_match(validator.iter_errors(instance))
        if error is None:
            return []
        at = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return [
            f"{where}: body does not match the document at {at}: {error.message}\n"
            f"  schema path: {'/'.join(str(p) for p in error.absolute_schema_path)}\n"
            f"  body: {body[:500].decode(errors='replace')}"
        ]


def _is_json(media: str) -> bool:
    return media == "application/json" or media.endswith("+json")


def _media_match(media: str, content: dict[str, Any]) -> str | None:
    if media in content:
        return media
    kind = media.split("/", 1)[0]
    for candidate in (f"{kind}/*", "*/*"):
        if candidate in content:
            return candidate
    return None


GENERIC_500 = {
    "description": "Unexpected error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}


@functools.cache
def contract() -> Contract:
    return Contract({**document(), "x-core-api-generic-500": GENERIC_500})


def verify(method: str, path: str, status: int, headers: Mapping[str, str], body: bytes) -> None:
    """Raise AssertionError when a documented operation's response does not match."""
    if not ENABLED:
        return
    found = contract().problems(method, path, status, headers, body)
    if found:
        raise AssertionError("response does not match the OpenAPI document:\n" + "\n".join(found))
