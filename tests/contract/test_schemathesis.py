"""Schemathesis against a live server: every documented operation, a key holding every
scope, a bounded number of generated requests per operation. No answer may be a 500, and
every answer must match the document (status, content type, body schema).

The server is a real ``core-api serve`` (Granian) on a fresh PostgreSQL database with
Redis, like production. The document is the one the server itself serves.

Knobs (environment):

- ``CORE_API_FUZZ_TAGS=webhooks,events``: only the operations with these tags
  (``-k`` does not apply: this is one test, so that one server serves every operation);
- ``CORE_API_FUZZ_EXAMPLES``: generated requests per operation (default 12);
- ``CORE_API_FUZZ_SEED``: a fixed Hypothesis seed (default: derandomized, the same
  requests on every run, so CI is repeatable).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import REDIS_URL
from support import Launcher, clean_env, core_api_command, fresh_database

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = int(os.environ.get("CORE_API_FUZZ_EXAMPLES", "12"))
TAGS = [t.strip() for t in os.environ.get("CORE_API_FUZZ_TAGS", "").split(",") if t.strip()]
SEED = os.environ.get("CORE_API_FUZZ_SEED")


def _bootstrap(env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """A user, an enterprise workspace (its limits stay out of the way) and a '*' key."""
    out = subprocess.run(
        [*core_api_command(), "bootstrap", "--name", "Fuzz", "--tier", "enterprise"],
        env=env,
        cwd=cwd,
        capture_output=True,
        check=True,
        timeout=60,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "\n".join(_describe(inner) for inner in exc.exceptions) or str(exc)
    return str(exc)


def _run_operation(operation: Any, base_url: str, headers: dict[str, str]) -> list[str]:
    """Generated requests for one operation; the failures found (at most one per kind)."""
    failures: list[str] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=SEED is None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        try:
            case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=15)
        except (AssertionError, BaseExceptionGroup) as exc:  # a FailureGroup: every check failed
            text = _describe(exc)
            if len(failures) < 3 and text not in failures:
                failures.append(f"{operation.label}:\n{text}")

    if SEED is not None:
        run = seed(int(SEED))(run)
    run()
    return failures


@pytest.mark.timeout(600)
def test_schemathesis(launcher: Launcher, tmp_path: Path, redis_prefix: str) -> None:
    with fresh_database("fuzz") as url:
        env = clean_env(
            tmp_path,
            database_url=url,
            redis_url=REDIS_URL,
            redis_prefix=redis_prefix,
            secret_key="fuzz-secret-key-0123456789abcdefghijkl",
            log_level="WARNING",
            auth_failure_limit="0",
        )
        boot = _bootstrap(env, tmp_path)
        server = launcher.start(env, 1)
        key = boot["api_key"]["key"]
        document = httpx.get(f"{server.base}/api/v1/openapi.json", timeout=10).json()
        schema = schemathesis.openapi.from_dict(document)
        if TAGS:
            schema = schema.include(tag=TAGS)
        headers = {"Authorization": f"Bearer {key}"}
        failures: list[str] = []
        labels = []
        for result in schema.get_all_operations():
            operation = result.ok()
            labels.append(operation.label)
            failures += _run_operation(operation, server.base, headers)
        assert labels, f"no operation has the tags {TAGS}"
        assert not failures, f"{len(failures)} failure(s):\n\n" + "\n\n".join(failures)
        assert "Traceback" not in server.stderr(), server.stderr()[-5000:]
