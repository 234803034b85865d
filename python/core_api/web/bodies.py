"""Request bodies: bounded reads, strict JSON, typed fields, one 422 listing every problem.

Every body is checked as a whole before any field is read: nesting depth, NUL characters
(PostgreSQL text cannot hold them) and 64-bit integers. Whatever passes can be stored on
both backends and encoded again on every later read (orjson refuses more than 254 levels).
"""

from __future__ import annotations

import asyncio
from typing import Any

import falcon
import falcon.asgi
import orjson

from ..clock import DATE_RANGE, parse_iso
from ..config import Settings
from ..errors import ApiError, RequestTimeout, ValidationFailed

_MISSING = object()
MAX_BODY_DEPTH = 64  # arrays/objects, the body itself being level 1
MAX_SETTINGS_DEPTH = 32  # a stored JSON object (workspace settings) is level 1
MAX_SETTINGS_BYTES = 16_384
_INT64 = (-(2**63), 2**63 - 1)


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"
    message = "The request body is too large."


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"
    message = "The request body must be application/json."


async def read_raw(req: falcon.asgi.Request, settings: Settings) -> bytes:
    """The raw body, read once per request (idempotency fingerprints it before the
    responder parses it). Never buffers more than ``max_body_bytes``, never waits longer
    than ``body_read_timeout`` in all: Granian has no body timeout, and a client that
    declares a length and stops sending would hold its request for ever."""
    max_bytes = settings.max_body_bytes
    cached: bytes | None = req.context.get("raw_body")
    if cached is not None:
        return cached
    if req.content_length is not None and req.content_length > max_bytes:
        raise PayloadTooLarge()
    try:
        async with asyncio.timeout(settings.body_read_timeout):
            raw: bytes = await req.bounded_stream.read(max_bytes + 1)
    except TimeoutError:
        raise RequestTimeout() from None
    if len(raw) > max_bytes:
        raise PayloadTooLarge()
    req.context.raw_body = raw
    return raw


async def read_json(req: falcon.asgi.Request, settings: Settings) -> Any:
    """The JSON body, or None when there is none."""
    raw = await read_raw(req, settings)
    if not raw.strip():
        return None
    content_type = (req.content_type or "application/json").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise UnsupportedMediaType()
    try:
        media = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValidationFailed.field(
            "body", "The request body must be a valid JSON document."
        ) from None
    check_body(media)
    return media


def check_body(media: Any) -> None:
    """One 422 naming each top-level field (or ``body``) that holds something no backend
    can store or no response can encode."""
    errors: dict[str, list[str]] = {}
    if isinstance(media, dict):
        for name, value in media.items():
            problem = (
                "may not contain NUL characters"
                if "\x00" in name
                else json_problem(value, MAX_BODY_DEPTH - 1)
            )
            if problem:
                field = name if "\x00" not in name else "body"
                errors.setdefault(field, []).append(f"The {field} {problem}.")
    elif problem := json_problem(media, MAX_BODY_DEPTH):
        errors["body"] = [f"The body {problem}."]
    if errors:
        raise ValidationFailed(errors)


def json_problem(value: Any, max_depth: int) -> str | None:
    """What makes a parsed JSON value unstorable, or None: containers nested more than
    ``max_depth`` levels (``value`` itself is level 1), a NUL character in a string or
    key, an integer outside 64 bits. Iterative, so depth cannot exhaust the stack."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                return f"may not be nested more than {max_depth} levels deep"
            if isinstance(item, dict):
                if any("\x00" in key for key in item):
                    return "may not contain NUL characters"
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, str):
            if "\x00" in item:
                return "may not contain NUL characters"
        elif isinstance(item, int) and not _INT64[0] <= item <= _INT64[1]:
            return "may not hold integers outside the 64-bit range"
    return None


def settings_problem(value: dict[str, Any]) -> str | None:
    """Why a settings object may not be stored: too deep, or too large once encoded."""
    problem = json_problem(value, MAX_SETTINGS_DEPTH)
    if problem is None and len(orjson.dumps(value)) > MAX_SETTINGS_BYTES:
        problem = f"may not be larger than {MAX_SETTINGS_BYTES} bytes"
    return problem


class Fields:
    """Typed access to a JSON object body; collects every error before raising once."""

    def __init__(self, media: Any, allowed: set[str], *, required: bool = True) -> None:
        self.errors: dict[str, list[str]] = {}
        if media is None and not required:
            media = {}
        if not isinstance(media, dict):
            raise ValidationFailed.field("body", "The request body must be a JSON object.")
        self.media: dict[str, Any] = media
        for name in media:
            if name not in allowed:
                self.fail(name, f"The {name} field is not recognised.")

    def fail(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)

    def has(self, name: str) -> bool:
        return name in self.media

    def string(self, name: str, *, required: bool = False, max_length: int = 255) -> str | None:
        value = self.media.get(name, _MISSING)
        if value is _MISSING or value is None:
            if required:
                self.fail(name, f"The {name} field is required.")
            return None
        if not isinstance(value, str):
            self.fail(name, f"The {name} must be a string.")
            return None
        value = str(value).strip()
        if required and not value:
            self.fail(name, f"The {name} field is required.")
        elif len(value) > max_length:
            self.fail(name, f"The {name} may not be greater than {max_length} characters.")
        return str(value)

    def integer(self, name: str, *, low: int, high: int) -> int | None:
        value = self.media.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(name, f"The {name} must be an integer.")
            return None
        if not low <= value <= high:
            self.fail(name, f"The {name} must be between {low} and {high}.")
            return None
        return value

    def boolean(self, name: str) -> bool | None:
        value = self.media.get(name)
        if value is not None and not isinstance(value, bool):
            self.fail(name, f"The {name} field must be true or false.")
            return None
        return value

    def string_list(
        self, name: str, *, max_items: int = 100, max_length: int = 255
    ) -> list[str] | None:
        value = self.media.get(name)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(name, f"The {name} must be an array of strings.")
            return None
        if len(value) > max_items:
            self.fail(name, f"The {name} may not have more than {max_items} items.")
        if any(len(v) > max_length for v in value):
            self.fail(name, f"Each {name} item may not be greater than {max_length} characters.")
        return list(dict.fromkeys(value))

    def settings(self, name: str) -> dict[str, Any] | None:
        """A JSON object within the settings limits (depth and encoded size)."""
        value = self.media.get(name)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.fail(name, f"The {name} must be an object.")
            return None
        if problem := settings_problem(value):
            self.fail(name, f"The {name} {problem}.")
        return value

    def timestamp(self, name: str) -> int | None:
        value = self.media.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            self.fail(name, f"The {name} must be an ISO 8601 date-time string.")
            return None
        try:
            return parse_iso(value)
        except ValueError:
            self.fail(name, f"The {name} must be an ISO 8601 date-time {DATE_RANGE}.")
            return None

    def done(self) -> None:
        if self.errors:
            raise ValidationFailed(self.errors)
