"""List conventions shared by every list endpoint.

``page``/``per_page``, ``status``, ``created_after|before``, ``updated_after|before``,
``search``, ``sort``, ``fields`` and ``include`` are parsed against a per-resource
:class:`ListSpec`; anything unknown or malformed is one 422 naming every bad parameter.
Every value is bounded before it reaches SQL: integers in range, ASCII digits only, no NUL
characters, a capped length and a capped number of comma-separated terms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from ..clock import DATE_RANGE, parse_iso
from ..errors import ValidationFailed

MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 25
MAX_PAGE = 1_000_000  # keeps OFFSET far inside 64 bits on every backend
MAX_TERMS = 20  # sort, fields, include: comma-separated terms per parameter
MAX_SEARCH_LENGTH = 255
MAX_PARAM_LENGTH = 1024
_DATE_FILTERS = {
    "created_after": ("created_at", ">"),
    "created_before": ("created_at", "<"),
    "updated_after": ("updated_at", ">"),
    "updated_before": ("updated_at", "<"),
}
_COMMON = frozenset({"page", "per_page", "sort", "fields", "include", *_DATE_FILTERS})


@dataclass(frozen=True, slots=True)
class ListSpec:
    """What one list endpoint supports. ``sortable`` maps public names to SQL columns."""

    sortable: dict[str, str]
    default_sort: str
    fields: frozenset[str]
    includes: frozenset[str] = frozenset()
    statuses: frozenset[str] = frozenset()
    searchable: bool = False
    text_sorts: frozenset[str] = frozenset({"name", "slug"})
    has_updated_at: bool = True


@dataclass(slots=True)
class ListQuery:
    page: int = 1
    per_page: int = DEFAULT_PER_PAGE
    sort: list[tuple[str, bool]] = field(default_factory=list)  # (column, descending)
    fields: list[str] | None = None
    includes: list[str] = field(default_factory=list)
    status: str | None = None
    search: str | None = None
    date_filters: list[tuple[str, str, int]] = field(default_factory=list)

    @property
    def search_pattern(self) -> str:
        """A case-insensitive substring LIKE pattern for ``search``. LIKE wildcards typed
        by the client are dropped rather than escaped: ESCAPE differs between dialects."""
        text = (self.search or "").lower()
        return "%" + text.replace("\\", "").replace("%", "").replace("_", "") + "%"

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page

    @property
    def filtered(self) -> bool:
        """Whether any filter narrows the scope (such totals are counted, never cached)."""
        return bool(self.status or self.search or self.date_filters)

    def total_from_page(self, rows: int) -> int | None:
        """The exact total when the page itself shows it (a short page that is not past
        the end), so small collections and narrow filters need no COUNT at all."""
        if rows < self.per_page and (rows or self.offset == 0):
            return self.offset + rows
        return None

    def where(self, alias: str = "") -> tuple[list[str], list[Any]]:
        """SQL conditions for the date filters (column names are from a fixed table)."""
        prefix = f"{alias}." if alias else ""
        return (
            [f"{prefix}{col} {op} ?" for col, op, _ in self.date_filters],
            [value for _, _, value in self.date_filters],
        )

    def order_by(self, spec: ListSpec, alias: str = "", id_column: str | None = None) -> str:
        """``id_column`` names another column equal to the row's id that an index walks in
        order (a membership's ``m.workspace_id``): SQLite's planner does not carry an
        ``ORDER BY`` through a join's equality by itself."""
        prefix = f"{alias}." if alias else ""
        row_id = id_column or f"{prefix}id"
        terms = []
        for name, desc in self.sort:
            column = row_id if spec.sortable[name] == "id" else f"{prefix}{spec.sortable[name]}"
            # Text sorts case-insensitively and identically on both dialects, whatever the
            # PostgreSQL collation.
            expression = f"LOWER({column})" if name in spec.text_sorts else column
            terms.append(f"{expression} {'DESC' if desc else 'ASC'}")
        # A unique tie-breaker keeps pages stable when sort keys repeat.
        if not self.sort or spec.sortable[self.sort[-1][0]] != "id":
            terms.append(f"{row_id} {'DESC' if self.sort and self.sort[-1][1] else 'ASC'}")
        return ", ".join(terms)


def parse_list_query(params: dict[str, Any], spec: ListSpec) -> ListQuery:
    errors: dict[str, list[str]] = {}
    query = ListQuery()
    allowed = (
        _COMMON
        | ({"status"} if spec.statuses else set())
        | ({"search"} if spec.searchable else set())
    )
    if not spec.has_updated_at:
        allowed = allowed - {"updated_after", "updated_before"}
    for name, value in params.items():
        if name not in allowed:
            errors.setdefault(name, []).append(f"The {name} parameter is not supported here.")
        elif not isinstance(value, str):
            errors.setdefault(name, []).append(f"The {name} parameter may be given only once.")
        elif "\x00" in value:
            errors.setdefault(name, []).append(f"The {name} may not contain NUL characters.")
        elif len(value) > MAX_PARAM_LENGTH:
            errors.setdefault(name, []).append(
                f"The {name} may not be longer than {MAX_PARAM_LENGTH} characters."
            )
    if errors:
        raise ValidationFailed(errors)

    query.page = _integer(params, "page", 1, 1, MAX_PAGE, errors)
    query.per_page = _integer(params, "per_page", DEFAULT_PER_PAGE, 1, MAX_PER_PAGE, errors)
    for name, (column, op) in _DATE_FILTERS.items():
        if name in params:
            try:
                query.date_filters.append((column, op, parse_iso(params[name])))
            except ValueError:
                errors.setdefault(name, []).append(
                    f"The {name} must be an ISO 8601 date or date-time {DATE_RANGE}."
                )
    if "status" in params:
        if params["status"] not in spec.statuses:
            options = ", ".join(sorted(spec.statuses))
            errors.setdefault("status", []).append(f"The status must be one of: {options}.")
        query.status = params["status"]
    if "search" in params:
        if len(params["search"]) > MAX_SEARCH_LENGTH:
            errors.setdefault("search", []).append(
                f"The search may not be longer than {MAX_SEARCH_LENGTH} characters."
            )
        query.search = params["search"] or None
    query.sort = _sort(params.get("sort", spec.default_sort), spec, errors)
    query.fields = _listing(params, "fields", spec.fields, errors) if "fields" in params else None
    query.includes = (
        _listing(params, "include", spec.includes, errors) if "include" in params else []
    )
    if errors:
        raise ValidationFailed(errors)
    return query


def ascii_integer(raw: str, low: int, high: int) -> int | None:
    """``raw`` as an integer in ``low..high``, or None. Only ASCII digits (``str.isdigit``
    accepts ``²``, ``int()`` accepts Arabic-Indic digits); length is checked before ``int()``."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(high)) + 2:
        return None
    value = int(raw)
    return value if low <= value <= high else None


def _integer(
    params: dict[str, Any],
    name: str,
    default: int,
    low: int,
    high: int,
    errors: dict[str, list[str]],
) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    value = ascii_integer(raw, low, high)
    if value is None:
        errors.setdefault(name, []).append(
            f"The {name} must be an integer between {low} and {high}."
        )
        return default
    return value


def _terms(raw: str, name: str, errors: dict[str, list[str]]) -> list[str]:
    terms = raw.split(",")
    if len(terms) > MAX_TERMS:
        errors.setdefault(name, []).append(f"The {name} may not have more than {MAX_TERMS} terms.")
        return []
    return terms


def _sort(raw: str, spec: ListSpec, errors: dict[str, list[str]]) -> list[tuple[str, bool]]:
    terms = []
    for term in _terms(raw, "sort", errors):
        name = term.strip().removeprefix("-")
        if name not in spec.sortable:
            options = ", ".join(sorted(spec.sortable))
            errors.setdefault("sort", []).append(
                f"Cannot sort by {name!r}; sortable fields: {options}."
            )
            continue
        terms.append((name, term.strip().startswith("-")))
    return terms


def _listing(
    params: dict[str, Any], name: str, allowed: frozenset[str], errors: dict[str, list[str]]
) -> list[str]:
    terms = _terms(params[name], name, errors)
    if not terms:
        return []
    values = [v.strip() for v in terms if v.strip()]
    unknown = [v for v in values if v not in allowed]
    if unknown or not values:
        options = ", ".join(sorted(allowed)) or "none"
        errors.setdefault(name, []).append(
            f"Unknown {name} value(s): {', '.join(unknown) or '(empty)'}; allowed: {options}."
        )
    return values


def project(item: dict[str, Any], fields: list[str] | None) -> dict[str, Any]:
    return item if fields is None else {k: item[k] for k in fields if k in item}


def envelope(
    data: list[dict[str, Any]], total: int, query: ListQuery, base_url: str, params: dict[str, Any]
) -> dict[str, Any]:
    """The documented ``data``/``meta``/``links`` envelope with absolute links."""
    last_page = max(1, math.ceil(total / query.per_page))

    def link(page: int) -> str:
        return f"{base_url}?{urlencode({**params, 'page': page})}"

    start = query.offset + 1
    return {
        "data": data,
        "meta": {
            "current_page": query.page,
            "from": start if data else None,
            "last_page": last_page,
            "per_page": query.per_page,
            "to": query.offset + len(data) if data else None,
            "total": total,
        },
        "links": {
            "first": link(1),
            "last": link(last_page),
            "prev": link(query.page - 1) if 1 < query.page <= last_page + 1 else None,
            "next": link(query.page + 1) if query.page < last_page else None,
        },
    }
