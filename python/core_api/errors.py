"""API errors and the one place they become the documented JSON bodies."""

from __future__ import annotations

import logging
from typing import Any

import falcon
import falcon.asgi

from .gateway.request_ids import request_id
from .storage.base import DatabaseUnavailable

log = logging.getLogger("core_api.errors")


class ApiError(Exception):
    """An error with a documented status, code and body."""

    status = 400
    code = "bad_request"
    message = "The request could not be processed."

    def __init__(self, message: str | None = None, **extra: Any) -> None:
        super().__init__(message or self.message)
        self.detail = message or self.message
        self.extra = extra
        self.headers: dict[str, str] = {}

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.detail, **self.extra}


class ValidationFailed(ApiError):
    status = 422
    code = "validation_failed"
    message = "The given data was invalid."

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(errors=errors)
        self.errors = errors

    @classmethod
    def field(cls, name: str, message: str) -> ValidationFailed:
        return cls({name: [message]})


class NotFound(ApiError):
    status = 404
    code = "not_found"
    message = "Resource not found."


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"
    message = "Invalid or missing API key."


class AccessDenied(ApiError):
    status = 403
    code = "access_denied"

    def __init__(self, scope: str | None = None, message: str | None = None) -> None:
        super().__init__(message or f"Insufficient permissions. Required scope: {scope}")


class FeatureLimitReached(ApiError):
    """A tier's count limit (plans file ``[tiers.<tier>.limits]``) would be exceeded."""

    status = 403
    code = "feature_limit_reached"
    message = "You have reached your limit for this feature."

    def __init__(self, feature: str, upgrade_url: str) -> None:
        super().__init__(feature=feature, upgrade_url=upgrade_url)


class RateLimited(ApiError):
    status = 429
    code = "rate_limit_exceeded"


class RequestTimeout(ApiError):
    """The request body did not arrive in time; the connection is closed after the answer."""

    status = 408
    code = "request_timeout"
    message = "The request body was not received in time."

    def __init__(self) -> None:
        super().__init__()
        self.headers["Connection"] = "close"


class ServerError(ApiError):
    status = 500
    code = "server_error"
    message = "An unexpected error occurred."


class ServiceUnavailable(ApiError):
    """A store the request needs (the database) cannot be reached; nothing was committed."""

    status = 503
    code = "service_unavailable"
    retry_after = 5  # seconds; a restarting PostgreSQL is usually back within this

    def __init__(self, retry_after: int | None = None) -> None:
        wait = retry_after or self.retry_after
        super().__init__(
            f"The service is temporarily unavailable. Please retry after {wait} seconds.",
            retry_after=wait,
        )
        self.headers["Retry-After"] = str(wait)


# Falcon's own errors (routing, media, body size) mapped onto the documented shapes.
_HTTP_CODES = {
    400: ("bad_request", "The request could not be processed."),
    404: (NotFound.code, NotFound.message),
    405: ("method_not_allowed", "The method is not allowed for this resource."),
    411: ("length_required", "A Content-Length is required."),
    413: ("payload_too_large", "The request body is too large."),
    415: ("unsupported_media_type", "The request body must be application/json."),
}


def _write(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, status: int, body: dict[str, Any]
) -> None:
    resp.status = status
    resp.media = body
    resp.complete = True


async def handle_api_error(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: ApiError, params: Any
) -> None:
    for name, value in ex.headers.items():
        resp.set_header(name, value)
    body = ex.body()
    if ex.status >= 500:
        body["request_id"] = request_id(req)
    _write(req, resp, ex.status, body)


async def handle_unavailable(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: DatabaseUnavailable, params: Any
) -> None:
    # One line, no traceback: an outage would otherwise flood the log with identical stacks.
    rid = request_id(req)
    log.warning("storage unavailable request_id=%s %s %s: %s", rid, req.method, req.path, ex)
    await handle_api_error(req, resp, ServiceUnavailable(), params)


async def handle_http_error(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: falcon.HTTPError, params: Any
) -> None:
    status = ex.status_code
    if isinstance(ex, falcon.MediaMalformedError | falcon.MediaNotFoundError):
        body = ValidationFailed.field("body", "The request body must be a valid JSON document.")
        _write(req, resp, 422, body.body())
        return
    code, message = _HTTP_CODES.get(status, ("http_error", ex.title or "Request failed."))
    allow = dict(ex.headers or {}).get("Allow")
    if status == 405 and allow:
        resp.set_header("Allow", allow)
    _write(req, resp, status, {"error": code, "message": message})


async def handle_unexpected(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: Exception, params: Any
) -> None:
    rid = request_id(req)
    log.error("unhandled error request_id=%s %s %s", rid, req.method, req.path, exc_info=ex)
    _write(req, resp, 500, {**ServerError().body(), "request_id": rid})


def install(app: falcon.asgi.App[Any, Any]) -> None:
    # Falcon picks the most specific registered handler for an exception's type.
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(falcon.HTTPError, handle_http_error)
    app.add_error_handler(ApiError, handle_api_error)
    app.add_error_handler(DatabaseUnavailable, handle_unavailable)
