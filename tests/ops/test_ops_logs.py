"""Log lines: JSON (or text) with the request id, and never a secret, in unit and in the
captured output of a real server that was sent its own key in every place a client might
put it."""

from __future__ import annotations

import json
import logging
import pydoc
import subprocess
import sys
from pathlib import Path

import httpx

from core_api.config import Settings
from core_api.logs import (
    CURRENT_REQUEST,
    JsonFormatter,
    TextFormatter,
    granian_config,
    redact,
    secrets_of,
)
from support import Launcher, clean_env, core_api_command

KEY = "sk_live_" + "A1b2C3d4" * 4 + "xyzABC"
WHSEC = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="


class _Request:
    """What the formatter reads from a request: its context and headers."""

    def __init__(self, rid: str) -> None:
        self.context = {"request_id": rid}

    def get_header(self, name: str) -> str | None:
        return None


def _record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError(f"boom with {KEY}")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("core_api.test", logging.WARNING, __file__, 1, msg, args, exc_info)


def test_patterns_are_redacted() -> None:
    for text in (
        f"key {KEY} seen",
        f"Authorization: Bearer {KEY[:20]}",
        "headers {'authorization': 'Basic dXNlcjpwYXNz'}",
        f"secret {WHSEC}",
        "postgresql://core:hunter2-password@db.internal:5432/core",
        "x-api-key: abcdef123456",
    ):
        out = redact(text)
        assert "[REDACTED]" in out, (text, out)
        for secret in (
            KEY,
            KEY[:20],
            "dXNlcjpwYXNz",
            WHSEC[6:],
            "hunter2-password",
            "abcdef123456",
        ):
            assert secret not in out, (text, out)
    assert redact("GET /api/v1/workspaces 200") == "GET /api/v1/workspaces 200"


def test_json_lines_carry_the_request_id_and_never_a_secret() -> None:
    settings = Settings(
        database_url="postgresql://core:s3cret-pass@localhost/core",
        secret_key=b"the-pepper-that-must-never-be-logged-0123",
    )
    formatter = JsonFormatter(secrets_of(settings))
    token = CURRENT_REQUEST.set(_Request("req_test_1"))
    try:
        line = formatter.format(
            _record(
                "auth %s failed; pepper %s pass %s",
                KEY,
                "the-pepper-that-must-never-be-logged-0123",
                "s3cret-pass",
                exc=True,
            )
        )
    finally:
        CURRENT_REQUEST.reset(token)
    entry = json.loads(line)
    assert entry["request_id"] == "req_test_1"
    assert entry["level"] == "WARNING" and entry["logger"] == "core_api.test"
    assert entry["ts"].endswith("Z") and "ValueError" in entry["exception"]
    for secret in (KEY, "the-pepper-that-must-never-be-logged-0123", "s3cret-pass"):
        assert secret not in line
    outside = json.loads(formatter.format(_record("no request here")))
    assert "request_id" not in outside


def test_text_lines_carry_the_request_id_too() -> None:
    token = CURRENT_REQUEST.set(_Request("req_text_1"))
    try:
        line = TextFormatter().format(_record("saw %s", KEY))
    finally:
        CURRENT_REQUEST.reset(token)
    assert line.endswith("request_id=req_text_1") and KEY not in line
    assert " WARNING core_api.test saw sk_live_[REDACTED]" in line


def test_a_real_server_never_logs_the_key_it_was_sent(tmp_path: Path) -> None:
    """DEBUG level and the access log on; the key in the header, a wrong key, the path
    and the query; a webhook secret in a body. The captured output is JSON lines, the
    request's access line carries the id the client sent, and no secret is anywhere."""
    env = clean_env(
        tmp_path,
        database_url=f"sqlite:///{tmp_path}/db.sqlite",
        log_level="DEBUG",
        access_log="true",
        webhook_allow_private_networks="true",
        webhook_require_https="false",
    )
    boot = subprocess.run(
        [*core_api_command(), "bootstrap", "--name", "Logs"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    key = json.loads(boot.stdout)["api_key"]["key"]
    secret_key = (tmp_path / "secret_key").read_text().strip()
    launcher = Launcher(tmp_path)
    try:
        server = launcher.start(env, 1)
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=server.base, timeout=10) as client:
            got = client.get("/api/v1/workspaces/1", headers={**auth, "X-Request-ID": "ops-logs-1"})
            assert got.status_code == 200
            client.get("/api/v1/workspaces/1", headers={"Authorization": f"Bearer {key[:-1]}x"})
            client.get(f"/api/v1/{key}", headers=auth)
            client.get(f"/api/v1/workspaces?api_key={key}", headers=auth)
            client.get("/api/v1/workspaces/1", headers={"Authorization": key})
            made = client.post(
                "/api/v1/webhooks",
                headers=auth,
                json={"url": "http://127.0.0.1:9/hook", "events": ["*"], "secret": WHSEC},
            )
            assert made.status_code == 201, made.text
            made = client.post(
                "/api/v1/webhooks",
                headers=auth,
                json={"url": "http://127.0.0.1:9/x", "events": ["*"]},
            )
            generated = made.json()["data"]["secret"]
    finally:
        launcher.stop_all()
    out, err = server.stdout(), server.stderr()
    for secret in (
        key,
        key[:-1] + "x",
        key[8:],
        WHSEC,
        WHSEC[6:],
        generated,
        generated[6:],
        secret_key,
    ):
        assert secret not in out and secret not in err, secret[:12]
    entries = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert entries, err
    for entry in entries:
        assert {"ts", "level", "logger", "message", "pid"} <= set(entry), entry
    access = [e for e in entries if e["logger"] == "granian.access"]
    mine = [e for e in access if e.get("request_id") == "ops-logs-1"]
    assert len(mine) == 1, access
    assert mine[0]["path"] == "/api/v1/workspaces/1" and mine[0]["status"] == 200
    assert any(e["path"].startswith("/api/v1/sk_live_[REDACTED]") for e in access), access


def test_granian_lines_use_the_same_format() -> None:
    """The main process's --log-config names this formatter; an access record (Granian
    passes a dict) becomes method, path (redacted, no query), status and duration."""
    config = granian_config(Settings())
    factory = pydoc.locate(config["formatters"]["core_api"]["()"])
    assert factory is JsonFormatter
    assert set(config["loggers"]) == {"_granian", "granian.access"}
    record = logging.LogRecord("granian.access", logging.INFO, __file__, 1, "%(path)s", None, None)
    record.args = {
        "addr": "127.0.0.1",
        "method": "GET",
        "path": f"/api/v1/{KEY}",
        "query_string": f"key={KEY}",
        "status": 404,
        "dt_ms": 0.4321,
    }
    entry = json.loads(JsonFormatter().format(record))
    assert entry["method"] == "GET" and entry["status"] == 404 and entry["duration_ms"] == 0.432
    assert entry["path"] == "/api/v1/sk_live_[REDACTED]" and KEY not in json.dumps(entry)
    text = TextFormatter(("nothing-secret",)).format(record)
    assert '"GET /api/v1/sk_live_[REDACTED]" 404 0.432ms' in text
