"""Helpers for tests: throw-away PostgreSQL databases, the core-api command, a clean env."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from conftest import ADMIN_URL


def url_for(name: str) -> str:
    """A ``postgresql://`` URL (what the app accepts) for database ``name`` on the test server."""
    info = psycopg.conninfo.conninfo_to_dict(ADMIN_URL)
    host, port = info.get("host", "127.0.0.1"), info.get("port", "5432")
    user = info.get("user")
    auth = f"{user}@" if user else ""
    return f"postgresql://{auth}{host}:{port}/{name}"


@contextmanager
def fresh_database(tag: str = "t") -> Iterator[str]:
    """Create an empty database, yield its URL, drop it (even if connections linger)."""
    name = f"core_api_{tag}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url_for(name)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def core_api_command() -> list[str]:
    """The ``core-api`` console script, or the same entry point through this interpreter
    when the virtualenv was set up without scripts (a ``.pth`` development install)."""
    script = Path(sys.executable).parent / "core-api"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from core_api.cli import main; sys.exit(main())"]


def clean_env(tmp: Path, **core_api: str) -> dict[str, str]:
    """A minimal environment: no CORE_API_* leaks in from the developer's shell."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp), "LANG": "C.UTF-8"}
    # Shared memory inside the test's own folder, not /dev/shm (nothing left behind).
    env["CORE_API_SHM_PATH"] = str(tmp / "shm")
    env.update({f"CORE_API_{k.upper()}": v for k, v in core_api.items()})
    return env
