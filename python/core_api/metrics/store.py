"""Per-process snapshot files in one shared directory, and their merge.

Every serving process writes ``<pid>-<start>.json`` (its counters, histograms and
gauges) about once a second and once more when it stops. ``GET /metrics``, answered by
whichever process the connection reached, merges its own fresh numbers with every other
live process's file. The file of a process that is gone is folded into ``dead.json``
(counters and histograms only, under a lock) and removed, so totals never go backwards
when a worker is restarted; its gauges die with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

DEAD = "dead.json"
LOCK = ".lock"

# How each gauge merges across processes.
GAUGE_MERGE: dict[str, str] = {
    "core_api_pixel_buffer_events": "sum",
    "core_api_pixel_buffer_capacity": "sum",
    "core_api_usage_pending_units": "sum",
    "core_api_usage_flush_lag_seconds": "max",
}


def process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22): with
    the pid it names one process, even after the pid is reused. "" off Linux."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, start: str) -> bool:
    if start:
        return process_start(pid) == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SnapshotStore:
    def __init__(self, directory: str | Path, pid: int | None = None) -> None:
        self.directory = Path(directory)
        self.pid = pid or os.getpid()
        self.start = process_start(self.pid)
        self.name = f"{self.pid}-{self.start}.json"

    def ensure(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def write(self, snapshot: dict[str, Any]) -> None:
        """Replace this process's file (written aside, then renamed: readers never see
        half a file)."""
        self.ensure()
        scratch = self.directory / f".{self.name}.tmp"
        scratch.write_bytes(orjson.dumps({**snapshot, "pid": self.pid, "time": time.time()}))
        os.replace(scratch, self.directory / self.name)

    def collect(self, own: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """(live snapshots: ``own`` first, then every other live process's file; the
        folded totals of dead processes)."""
        self.ensure()
        live = [own]
        dead: list[Path] = []
        for path in self.directory.glob("*-*.json"):
            if path.name == self.name:
                continue
            pid_text, _, start = path.stem.partition("-")
            if not pid_text.isdigit():
                continue
            if _alive(int(pid_text), start):
                with contextlib.suppress(OSError, orjson.JSONDecodeError):
                    live.append(orjson.loads(path.read_bytes()))
            else:
                dead.append(path)
        with self._locked():
            folded = self._read(self.directory / DEAD) or {"counters": [], "histograms": []}
            changed = False
            for path in dead:
                snapshot = self._read(path)
                if snapshot is None:  # another scrape folded it meanwhile
                    continue
                folded = merge_totals([folded, snapshot])
                changed = True
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            if changed:
                scratch = self.directory / f".{DEAD}.tmp"
                scratch.write_bytes(orjson.dumps(folded))
                os.replace(scratch, self.directory / DEAD)
        return live, folded

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.directory / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = orjson.loads(path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None
        return data


def _key(name: str, labels: list[list[str]]) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple((k, v) for k, v in labels)


def merge_totals(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """Counters and histograms added up (gauges left out)."""
    counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    histograms: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = {}
    for snapshot in snapshots:
        for name, labels, value in snapshot.get("counters", ()):
            key = _key(name, labels)
            counters[key] = counters.get(key, 0) + value
        for name, labels, row in snapshot.get("histograms", ()):
            key = _key(name, labels)
            merged = histograms.get(key)
            if merged is None or len(merged) != len(row):
                histograms[key] = list(row)
            else:
                for i, value in enumerate(row):
                    merged[i] += value
    return {
        "counters": [[n, [list(p) for p in ls], v] for (n, ls), v in counters.items()],
        "histograms": [[n, [list(p) for p in ls], row] for (n, ls), row in histograms.items()],
    }


def merge_gauges(
    snapshots: list[dict[str, Any]],
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    merged: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for snapshot in snapshots:
        for name, labels, value in snapshot.get("gauges", ()):
            key = _key(name, labels)
            if key not in merged:
                merged[key] = value
            elif GAUGE_MERGE.get(name, "sum") == "max":
                merged[key] = max(merged[key], value)
            else:
                merged[key] += value
    return merged
