"""Files a node keeps on its own disk, created by the CLI and the runtime (never by reading
the configuration): the embedded secret key and the private shared-memory directory."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import secrets
import tempfile
from pathlib import Path

from .config import PREFIX, ConfigError, Settings, secret_key_file


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


def shared_memory_path(settings: Settings) -> str:
    """All workers serving one database on one host share one shared-memory file.

    It lives in a directory only this user can enter, so another local user cannot
    pre-create or read it (the rate-limit state and invalidation counter are ours alone).
    """
    if settings.shm_path:
        return settings.shm_path
    digest = hashlib.sha256(settings.database_url.encode()).hexdigest()[:16]
    shm = Path("/dev/shm")  # noqa: S108 - a private 0700 directory is made inside
    root = shm if shm.is_dir() else Path(tempfile.gettempdir())
    private = root / f"core-api-{os.getuid()}"
    private.mkdir(mode=0o700, exist_ok=True)
    info = private.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ConfigError(
            f"{PREFIX}SHM_PATH: {private} is not a private directory of this user; set the variable"
        )
    return str(private / f"core-api-{digest}")
