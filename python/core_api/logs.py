"""Log lines: JSON objects (``CORE_API_LOG_FORMAT=json``, the default) or text, each
carrying the request id when written while a request is served, and never a secret.

- **Request id.** The gateway puts the request in :data:`CURRENT_REQUEST`, a context
  variable (one ``set`` per request; each request runs in its own task, so it never leaks
  into another). The pixel fast path sets it only when it must wait for the database
  (nothing on its common path logs; its own error lines name the id explicitly). The
  formatter asks for the id only when a line is actually written.
- **Redaction.** Every formatted line (message, arguments and traceback) passes through
  :func:`redact`: API keys (``sk_live_...``), webhook secrets (``whsec_...``), bearer
  tokens, ``Authorization`` values and passwords in URLs are replaced, and so are the
  configured secret key and database/Redis passwords, wherever they appear.
- **Granian.** Its own loggers (``_granian``, ``granian.access``) are routed through the
  same formatter in every worker, and through :func:`granian_config` in its main process;
  access lines become ``{"logger": "granian.access", "method", "path", "status",
  "duration_ms", "client"}`` (the query string is left out: it may carry anything).
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .config import ConfigError, Settings

CURRENT_REQUEST: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "core_api_request", default=None
)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
MASK = "[REDACTED]"
_PATTERNS = (
    (re.compile(r"sk_live_[0-9A-Za-z]+"), "sk_live_" + MASK),
    (re.compile(r"whsec_[0-9A-Za-z+/=_\-]+"), "whsec_" + MASK),
    (re.compile(r"(?i)\b(bearer|basic)\s+[^\s,;\"']+"), r"\1 " + MASK),
    (
        re.compile(
            r"(?i)((?:proxy-)?authorization['\"]?\s*[:=]\s*['\"]?)(?!bearer\b|basic\b)[^\s,;\"']+"
        ),
        r"\1" + MASK,
    ),
    (re.compile(r"(?i)\b(x-api-key['\"]?\s*[:=]\s*['\"]?)[^\s,;\"']+"), r"\1" + MASK),
    # scheme://user:password@host
    (re.compile(r"([a-z][a-z0-9+.\-]*://[^\s:/@]*:)[^\s@/]+@"), r"\1" + MASK + "@"),
)
_ACCESS_FIELDS = (("method", "method"), ("path", "path"), ("status", "status"))


def redact(text: str, literals: tuple[str, ...] = ()) -> str:
    for literal in literals:
        if literal in text:
            text = text.replace(literal, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def current_request_id() -> str | None:
    """The id of the request being served in this task, if any."""
    req = CURRENT_REQUEST.get()
    if req is None:
        return None
    from .gateway.request_ids import request_id  # lazily: no Falcon import for the CLI

    try:
        return request_id(req)
    except Exception:  # a request object half torn down: log the line anyway
        return None


class _Redacting(logging.Formatter):
    literals: tuple[str, ...] = ()

    def redacted(self, record: logging.LogRecord) -> tuple[str, str | None]:
        """(the message, the traceback text), both redacted."""
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: the raw message, as logging would show it
            message = f"{record.msg!r} {record.args!r}"
        extra = None
        if record.exc_info:
            extra = self.formatException(record.exc_info)
        elif record.exc_text:
            extra = record.exc_text
        if record.stack_info:
            extra = (extra + "\n" if extra else "") + self.formatStack(record.stack_info)
        return redact(message, self.literals), (redact(extra, self.literals) if extra else None)


class TextFormatter(_Redacting):
    """``time LEVEL logger message [request_id=...]``, redacted."""

    def __init__(self, literals: tuple[str, ...] = ()) -> None:
        super().__init__(TEXT_FORMAT)
        self.literals = literals

    def format(self, record: logging.LogRecord) -> str:
        message, extra = self.redacted(record)
        if record.name == "granian.access" and isinstance(record.args, dict):
            message = redact(_access_text(record.args), self.literals)
        line = f"{self.formatTime(record)} {record.levelname} {record.name} {message}"
        rid = current_request_id()
        if rid is not None:
            line += f" request_id={rid}"
        return line + ("\n" + extra if extra else "")


class JsonFormatter(_Redacting):
    """One JSON object per line: ``ts`` (UTC, ms), ``level``, ``logger``, ``message``,
    ``pid``, ``request_id`` (in a request), ``exception`` (a traceback), redacted."""

    def __init__(self, literals: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.literals = literals

    def format(self, record: logging.LogRecord) -> str:
        message, extra = self.redacted(record)
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": message,
            "pid": record.process,
        }
        if record.name == "granian.access" and isinstance(record.args, dict):
            entry.update(_access_fields(record.args, self.literals))
            entry["message"] = f"{entry['method']} {entry['path']} {entry['status']}"
        rid = current_request_id()
        if rid is not None:
            entry["request_id"] = rid
        if extra:
            entry["exception"] = extra
        return json.dumps(entry, ensure_ascii=False, default=str)


def _access_fields(args: dict[str, Any], literals: tuple[str, ...]) -> dict[str, Any]:
    fields = {name: args.get(key) for name, key in _ACCESS_FIELDS}
    fields["path"] = redact(str(fields["path"]), literals)
    fields["client"] = args.get("addr")
    dt = args.get("dt_ms")
    fields["duration_ms"] = round(dt, 3) if isinstance(dt, (int, float)) else dt
    return fields


def _access_text(args: dict[str, Any]) -> str:
    dt = args.get("dt_ms")
    took = f"{dt:.3f}" if isinstance(dt, (int, float)) else "-"
    request = f"{args.get('method')} {args.get('path')}"
    return f'{args.get("addr")} "{request}" {args.get("status")} {took}ms'


def secrets_of(settings: Settings) -> tuple[str, ...]:
    """Values never to be written, wherever they turn up: the secret key (and the previous
    one during a rotation) and passwords of the database and Redis URLs (at least 6
    characters: shorter ones would mask words)."""
    found = [settings.secret_key.decode(errors="replace")]
    previous = getattr(settings, "secret_key_previous", None)  # during a key rotation
    if previous:
        found.append(previous.decode(errors="replace"))
    for url in (settings.database_url, settings.redis_url):
        if url:
            password = urlsplit(url).password
            if password:
                found.append(password)
    return tuple(s for s in found if len(s) >= 6)


def formatter_for(settings: Settings) -> logging.Formatter:
    literals = secrets_of(settings)
    if settings.log_format == "TEXT":
        return TextFormatter(literals)
    return JsonFormatter(literals)


def configure(settings: Settings) -> None:
    """The process's logging: one stderr handler at ``log_level`` with the chosen format;
    Granian's own loggers (in a worker process) go through it too."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter_for(settings))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    for name in ("_granian", "granian.access"):
        granian = logging.getLogger(name)
        for old in list(granian.handlers):
            granian.removeHandler(old)
        granian.propagate = True


def granian_config(settings: Settings) -> dict[str, Any]:
    """Granian's ``--log-config`` (a logging dictConfig) for its main process: the same
    formatter, on stderr. Secrets given as literals are re-read in the process."""
    formatter = (
        "core_api.logs.TextFormatter"
        if settings.log_format == "TEXT"
        else ("core_api.logs.JsonFormatter")
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"core_api": {"()": formatter}},
        "handlers": {
            "core_api": {
                "class": "logging.StreamHandler",
                "formatter": "core_api",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "_granian": {"handlers": ["core_api"], "level": "INFO", "propagate": False},
            "granian.access": {"handlers": ["core_api"], "level": "INFO", "propagate": False},
        },
    }


def write_granian_config(settings: Settings) -> str | None:
    """The file ``--log-config`` names, in a directory only this user can enter (0700),
    rewritten on every start; None (Granian keeps its own format) when it cannot be
    written there."""
    directory = Path(tempfile.gettempdir()) / f"core-api-{os.getuid()}"
    try:
        directory.mkdir(mode=0o700, exist_ok=True)
        info = directory.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise ConfigError(f"{directory} is not a private directory of this user")
        path = directory / f"granian-logging-{settings.port}.json"
        scratch = directory / f".granian-logging-{settings.port}.{os.getpid()}"
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(granian_config(settings), handle)
        os.replace(scratch, path)
    except (OSError, ConfigError) as exc:
        logging.getLogger("core_api.cli").warning(
            "Granian's own log lines keep its format: %s", exc
        )
        return None
    return str(path)
