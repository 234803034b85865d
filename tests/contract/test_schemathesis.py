"""Schemathesis against a live server: every documented operation, a key holding every
scope, a bounded number of generated requests per operation. No answer may be a 500, and
every answer must match the document (status, content type, body schema).

The server is a real ``core-api serve`` (Granian) on a fresh PostgreSQL database with
Redis, like production. The document is the one the server itself serves.

Knobs (environment):

- ``CORE_API_FUZZ_TAGS=webhooks,events``: only the operations with these tags
  (``-k`` does not apply: this is one test, so that one server serves every operation);
- ``CORE_API_FUZZ_EXAMPLES``: generated requests per operation and mode (default 10);
- ``CORE_API_FUZZ_MODES``: ``positive`` (valid requests), ``negative`` (requests the
  document forbids: they must be refused with a documented 4xx), default both;
- ``CORE_API_FUZZ_SEED``: a fixed Hypothesis seed (default: derandomized, the same
  requests on every run, so CI is repeatable).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
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
EXAMPLES = int(os.environ.get("CORE_API_FUZZ_EXAMPLES", "10"))
TAGS = [t.strip() for t in os.environ.get("CORE_API_FUZZ_TAGS", "").split(",") if t.strip()]
SEED = os.environ.get("CORE_API_FUZZ_SEED")
MODES = [
    GenerationMode(m.strip())
    for m in os.environ.get("CORE_API_FUZZ_MODES", "positive,negative").split(",")
    if m.strip()
]


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


# Writes that would take the fuzzing key away (or lower its workspace's tier) if they hit
# its own ids: the key's home workspace, the key itself. They are sent to the next id.
PROTECTED = {
    ("PATCH", "/api/v1/workspaces/{id}"): "workspace",
    ("DELETE", "/api/v1/workspaces/{id}"): "workspace",
    ("DELETE", "/api/v1/api-keys/{id}"): "key",
    ("POST", "/api/v1/api-keys/{id}/rotate"): "key",
}
# Generated ids are mostly far beyond the rows the run creates; folding the middle range
# onto 1..16 makes reads and writes reach real rows, while the boundary values (1, 2^31
# and beyond, 2^63-1) stay as generated.
FOLD_LOW, FOLD_HIGH, FOLD_TO = 16, 2**31, 16
SAMPLES: dict[tuple[str, str, int], str] = {}
_SERIAL = itertools.count(1)  # the first refusal's body, printed with -s


def _aim(case: Any, own: dict[str, int]) -> None:
    params = case.path_parameters or {}
    for name, value in params.items():
        if isinstance(value, int) and not isinstance(value, bool) and FOLD_LOW < value < FOLD_HIGH:
            params[name] = 1 + value % FOLD_TO
    kind = PROTECTED.get((case.method.upper(), case.operation.path))
    if kind is not None and params.get("id") == own[kind]:
        params["id"] = own[kind] + 1
    # Hypothesis draws the same few Idempotency-Keys again and again: made unique, a valid
    # one starts a new request instead of replaying (or refusing, 422) an earlier one.
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and re.fullmatch(r"[!-~]{1,255}", key):
        suffix = f"-{next(_SERIAL)}"
        headers["Idempotency-Key"] = key[: 255 - len(suffix)] + suffix


def _run_operation(
    operation: Any,
    base_url: str,
    headers: dict[str, str],
    mode: GenerationMode,
    statuses: Counter[tuple[str, str, int]],
    own: dict[str, int],
) -> list[str]:
    """Generated requests for one operation; the failures found (at most three)."""
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
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        _aim(case, own)
        try:
            response = case.call(base_url=base_url, headers=headers, timeout=15)
            counted = (operation.label, mode.value, response.status_code)
            statuses[counted] += 1
            if statuses[counted] == 1 and response.status_code >= 400:
                SAMPLES[counted] = response.text[:160]
            case.validate_response(response, checks=CHECKS, headers=headers)
        except (AssertionError, BaseExceptionGroup) as exc:  # a FailureGroup: every check failed
            text = _describe(exc)
            if len(failures) < 3 and text not in failures:
                failures.append(f"{operation.label} ({mode.value}):\n{text}")

    if SEED is not None:
        run = seed(int(SEED))(run)
    try:
        run()
    except Unsatisfiable:  # nothing to break: an operation without parameters or body
        assert mode is GenerationMode.NEGATIVE, operation.label
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
        statuses: Counter[tuple[str, str, int]] = Counter()
        own = {"workspace": boot["workspace"]["id"], "key": boot["api_key"]["id"]}
        # Deletions last, so that the other operations find the rows the run created.
        operations = sorted(
            (result.ok() for result in schema.get_all_operations()),
            key=lambda op: op.method.upper() == "DELETE",
        )
        for operation in operations:
            labels.append(operation.label)
            for mode in MODES:
                failures += _run_operation(operation, server.base, headers, mode, statuses, own)
            alive = httpx.get(f"{server.base}/api/v1/workspaces", headers=headers, timeout=10)
            assert alive.status_code == 200, f"{operation.label} took the key away: {alive.text}"
        assert labels, f"no operation has the tags {TAGS}"
        print("\nrequests by operation, mode and status:")  # shown with -s or on failure
        for (label, mode, status), count in sorted(statuses.items()):
            sample = SAMPLES.get((label, mode, status))
            print(f"  {label:60} {mode:8} {status} x{count}" + (f"  {sample}" if sample else ""))
        # The key is valid: a 401 on a valid request means the run lost its key and tested
        # the gateway's refusal instead of the operations (negative mode breaks the
        # Authorization header on purpose).
        refused = {k: n for k, n in statuses.items() if k[2] == 401 and k[1] == "positive"}
        assert not refused, refused
        if not TAGS or "workspaces" in TAGS:
            assert statuses[("GET /api/v1/workspaces", "positive", 200)] > 0
        assert not failures, f"{len(failures)} failure(s):\n\n" + "\n\n".join(failures)
        assert "Traceback" not in server.stderr(), server.stderr()[-5000:]
