"""docs/api-reference.md is written by hand: every operation of the served OpenAPI
document has its entry there, every entry there is an operation of the document, and
each entry names the scope (or the absence of authentication) the document states.

The reference writes an entry as a title line, then ``http`` and the request line on the
next line, then ``Required scope: <scope>`` or ``Authentication: Not required``::

    List Workspaces

    http
    GET /api/v1/workspaces

    Required scope: workspaces:read

The same ``http`` + request line also introduces a few illustrations of the conventions
(``GET /api/v1/resources?sort=...``); those are listed in ``ILLUSTRATIONS``, so that a
request line the parser does not count as an entry is an error, never silently skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import Api

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "api-reference.md"
METHODS = ("GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE")
REQUEST_LINE = re.compile(rf"^(?:{'|'.join(METHODS)}) /\S*$")
ACCESS_LINE = re.compile(r"^(?:Required scope: (\S+)|Authentication: Not required)$")
# Request lines that show a convention on a made-up resource, not an operation.
ILLUSTRATIONS = {
    "GET /api/v1/resources?sort=-created_at,name",
    "GET /api/v1/resources?fields=id,name,created_at",
    "GET /api/v1/resources?include=owner,tags",
    "POST /api/v1/posts",
}


@dataclass(frozen=True)
class Entry:
    line: int  # 1-based, for the messages
    method: str
    path: str
    scopes: tuple[str, ...] | None  # None: no access line under the request line


def entries(text: str) -> list[Entry]:
    """Every request line under an ``http`` line (a fenced ```` ```http ```` block too),
    illustrations left out, with the access line that follows it."""
    lines = text.splitlines()
    found = []
    for n, line in enumerate(lines[:-1]):
        request = lines[n + 1].strip()
        if line.strip() not in ("http", "```http") or not REQUEST_LINE.match(request):
            continue
        if request in ILLUSTRATIONS:
            continue
        method, path = request.split(" ")
        rest = [s.strip() for s in lines[n + 2 :] if s.strip() and s.strip() != "```"]
        access = ACCESS_LINE.match(rest[0]) if rest else None
        scopes = None if access is None else ((access[1],) if access[1] else ())
        found.append(Entry(n + 2, method, path, scopes))
    return found


@pytest.fixture
def database_url(tmp_path: Path) -> str:  # the document needs no database: SQLite is enough
    return f"sqlite:///{tmp_path}/core-api.db"


@pytest.fixture
async def served(api: Api) -> dict[str, Any]:
    """The OpenAPI document as ``GET /api/v1/openapi.json`` serves it."""
    got = await api.conductor.simulate_get("/api/v1/openapi.json")
    assert got.status_code == 200
    document: dict[str, Any] = orjson.loads(got.content)
    return document


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): op
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method.upper() in METHODS
    }


def _listing(pairs: list[tuple[str, str]]) -> str:
    return "\n".join(f"  {method} {path}" for method, path in pairs)


def test_the_parser_reads_the_reference_as_it_is_written() -> None:
    text = REFERENCE.read_text()
    found = entries(text)
    read = {(e.method, e.path, e.scopes) for e in found}
    assert ("GET", "/api/v1/workspaces", ("workspaces:read",)) in read
    assert len(found) > 30
    # Every request line of the reference is an entry or a listed illustration.
    requests = [s.strip() for s in text.splitlines() if REQUEST_LINE.match(s.strip())]
    assert sorted(requests) == sorted([*(f"{e.method} {e.path}" for e in found), *ILLUSTRATIONS])
    # The parser is not tied to the bare ``http`` line: a fenced block reads the same.
    fenced = "Title\n\n```http\nGET /api/v1/x/{id}\n```\n\nAuthentication: Not required\n"
    assert entries(fenced) == [Entry(4, "GET", "/api/v1/x/{id}", ())]


async def test_every_operation_is_in_the_reference_and_every_entry_is_served(
    served: dict[str, Any],
) -> None:
    found = entries(REFERENCE.read_text())
    documented = {(e.method, e.path) for e in found}
    ops = set(operations(served))
    missing = sorted(ops - documented)
    extra = sorted(documented - ops)
    pairs = [(e.method, e.path) for e in found]
    twice = sorted({pair for pair in pairs if pairs.count(pair) > 1})
    assert not missing, "operations of the served document without an entry:\n" + _listing(missing)
    assert not extra, "entries that are no operation of the served document:\n" + _listing(extra)
    assert not twice, f"entries written twice: {twice}"


async def test_each_entry_names_the_documented_scope(served: dict[str, Any]) -> None:
    ops = operations(served)
    problems = []
    for entry in entries(REFERENCE.read_text()):
        op = ops.get((entry.method, entry.path))
        if op is None:
            continue  # the parity test names it
        public = op.get("security") == []
        wanted = () if public else tuple(op.get("x-required-scopes", []))
        if entry.scopes != wanted:
            problems.append(
                f"line {entry.line}: {entry.method} {entry.path} says"
                f" {entry.scopes}, the document {wanted}"
            )
    assert not problems, "\n".join(problems)
