"""The documented 500: request_id in the body and header, traceback only in the log."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from conftest import Api
from core_api.runtime import Runtime


async def test_database_failure_is_documented_500(
    api: Api, runtime: Runtime, boot: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    assert (await api.get("/api/v1/workspaces")).status == 200  # key now cached
    await runtime.db.close()
    caplog.set_level(logging.ERROR, logger="core_api")
    failed = await api.get(  # a filtered page: never served from the page cache
        "/api/v1/workspaces", params={"search": "acme"}, headers={"X-Request-ID": "trace-me-1"}
    )
    assert failed.status == 500
    assert failed.json == {
        "error": "server_error",
        "message": "An unexpected error occurred.",
        "request_id": "trace-me-1",
    }
    assert failed.header("X-Request-ID") == "trace-me-1"
    assert "Traceback" not in str(failed.json)
    assert "trace-me-1" in caplog.text and "Traceback" in caplog.text


def test_a_request_id_with_a_trailing_newline_is_not_echoed() -> None:
    """``re.match`` with ``$`` accepts "id\\n"; an echoed newline would split the header."""
    from core_api.gateway.request_ids import from_header

    assert from_header("abc-123") == "abc-123"
    for bad in ("abc\n", "abc\r\n", "a\r\nSet-Cookie: x", "x" * 129, ""):
        assert from_header(bad).startswith("req_"), repr(bad)
