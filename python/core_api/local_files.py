"""Files a node keeps on its own disk, created by the CLI and the runtime (never by reading
the configuration): the embedded secret key and the shared-memory file's path."""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import NoReturn, cast

from . import _native
from .config import PREFIX, ConfigError, Settings, secret_key_file

_INSTANCE_ID = re.compile(r"[0-9a-f]{32}")


def ensure_secret_key(settings: Settings) -> Settings:
    """Settings with a secret key: for SQLite without one, generate the file beside the
    database once (0600). Concurrent first starts agree on one key."""
    if settings.secret_key:
        return settings
    key_file = secret_key_file(settings.database_url)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    if not key_file.exists():
        # Written aside then linked into place: the first link wins, the others read it.
        scratch = key_file.with_name(f".{key_file.name}.{os.getpid()}")
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
        try:
            os.link(scratch, key_file)
        except FileExistsError:
            pass
        finally:
            scratch.unlink()
    return dataclasses.replace(settings, secret_key=key_file.read_text().strip().encode())


def shared_memory_path(settings: Settings, instance_id: str) -> str:
    """``CORE_API_SHM_PATH``, or a file named after the database's own id: every worker
    serving one database on one host shares it, however the URL spells the database;
    two databases never do, and a recreated database (a new id) starts clean.

    It lives in a directory only this user can enter, so another local user cannot
    pre-create or read it (the rate-limit state and invalidation counter are ours alone).
    """
    if settings.shm_path:
        return settings.shm_path
    if not _INSTANCE_ID.fullmatch(instance_id):
        raise ValueError(f"unexpected database instance id {instance_id!r}")
    shm = Path("/dev/shm")  # noqa: S108 - a private 0700 directory is made inside
    root = shm if shm.is_dir() else Path(tempfile.gettempdir())
    private = root / f"core-api-{os.getuid()}"
    private.mkdir(mode=0o700, exist_ok=True)
    info = private.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ConfigError(
            f"{PREFIX}SHM_PATH: {private} is not a private directory of this user; set the variable"
        )
    return str(private / f"core-api-{instance_id}")


class _NotOpened:
    """Stands in for the shared state until the runtime has read the database's identity."""

    def __getattr__(self, name: str) -> NoReturn:
        raise RuntimeError("the shared state opens in Runtime.start()")


def not_opened_yet() -> _native.SharedState:
    return cast(_native.SharedState, _NotOpened())
