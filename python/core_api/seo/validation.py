"""What an SEO report may hold, and the issue-list filters: strict, every problem named.

A report is ``url`` (an absolute http(s) URL), ``scores`` (``performance``,
``accessibility``, ``best_practices``, ``seo``: integers 0..100, each optional, at least one
given) and ``issues`` (at most :data:`MAX_ISSUES` objects with ``type``, ``severity``,
``element`` and optional ``details``). Errors are keyed by their path (``scores.seo``,
``issues.3.severity``), all of them in one 422, and nothing is stored.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from ..errors import ValidationFailed
from ..web.bodies import json_problem

SCORES = ("performance", "accessibility", "best_practices", "seo")
SEVERITIES = {"info": 1, "notice": 2, "warning": 3, "error": 4}  # stored as these levels
SEVERITY_NAMES = {level: name for name, level in SEVERITIES.items()}
MAX_ISSUES = 1000
MAX_URL_LENGTH = 2048
MAX_TYPE_LENGTH = 100
MAX_ELEMENT_LENGTH = 1024
MAX_DETAILS_BYTES = 4096
MAX_DETAILS_DEPTH = 8
MAX_FILTER_TERMS = 20
REPORT_FIELDS = frozenset({"url", "scores", "issues"})
ISSUE_FIELDS = frozenset({"type", "severity", "element", "details"})
_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?$")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 3986 characters kept as they are; anything else (spaces excepted: refused) is
# percent-encoded, so the stored URL is ASCII.
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"
URL_RULE = (
    "must be an absolute http or https URL with a host, without credentials or spaces, "
    f"at most {MAX_URL_LENGTH} characters"
)


@dataclass(frozen=True, slots=True)
class IssueInput:
    issue_type: str
    severity: int
    element: str
    details: str | None  # JSON text


@dataclass(frozen=True, slots=True)
class ReportInput:
    url: str
    scores: dict[str, int | None]
    issues: tuple[IssueInput, ...]


def normalize_url(raw: str) -> str | None:
    """The URL in one canonical form (scheme and host lower-case, IDNA host, no default
    port, no fragment, ``/`` for an empty path, non-ASCII percent-encoded), or None.
    Reports of ``HTTPS://Example.com`` and ``https://example.com/`` share one history."""
    text = raw.strip()
    if not text or len(text) > MAX_URL_LENGTH or any(ord(c) < 0x21 or c == "\x7f" for c in text):
        return None
    try:
        parts = urlsplit(text)
        port = parts.port
        host = parts.hostname
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not host or "@" in parts.netloc:
        return None
    host = _host(host)
    if host is None:
        return None
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    url = f"{scheme}://{netloc}{quote(parts.path or '/', safe=_PATH_SAFE)}"
    if parts.query:
        url += "?" + quote(parts.query, safe=_QUERY_SAFE)
    return url if len(url) <= MAX_URL_LENGTH else None


def _host(host: str) -> str | None:
    if ":" in host:  # an IPv6 literal (urlsplit removed the brackets)
        try:
            return f"[{ipaddress.IPv6Address(host).compressed}]"
        except ValueError:
            return None
    try:
        host = host.encode("idna").decode("ascii").lower().rstrip(".")
    except UnicodeError:
        return None
    labels = host.split(".")
    if len(host) > 253 or not all(len(label) <= 63 and _LABEL.match(label) for label in labels):
        return None
    return host


def _scores(media: dict[str, Any], errors: dict[str, list[str]]) -> dict[str, int | None]:
    scores: dict[str, int | None] = dict.fromkeys(SCORES)
    value = media.get("scores")
    if value is None:
        errors.setdefault("scores", []).append("The scores field is required.")
        return scores
    if not isinstance(value, dict):
        errors.setdefault("scores", []).append(
            "The scores must be an object of performance, accessibility, best_practices, seo."
        )
        return scores
    for name, score in value.items():
        if name not in SCORES:
            errors.setdefault(f"scores.{name}", []).append(
                f"The scores.{name} score is not recognised; scores: {', '.join(SCORES)}."
            )
        elif score is None:
            continue
        elif isinstance(score, bool) or not isinstance(score, int):
            errors.setdefault(f"scores.{name}", []).append(
                f"The scores.{name} must be an integer between 0 and 100."
            )
        elif not 0 <= score <= 100:
            errors.setdefault(f"scores.{name}", []).append(
                f"The scores.{name} must be between 0 and 100."
            )
        else:
            scores[name] = score
    if all(v is None for v in scores.values()) and not any(
        key.startswith("scores.") for key in errors
    ):
        errors.setdefault("scores", []).append(
            f"At least one score must be given: {', '.join(SCORES)}."
        )
    return scores


def _issue(index: int, item: Any, errors: dict[str, list[str]]) -> IssueInput | None:
    at = f"issues.{index}"
    bad = False

    def fail(name: str, message: str) -> None:
        nonlocal bad
        bad = True
        errors.setdefault(f"{at}.{name}" if name else at, []).append(message)

    if not isinstance(item, dict):
        fail("", f"The {at} must be an object with type, severity, element and details.")
        return None
    for name in item:
        if name not in ISSUE_FIELDS:
            fail(name, f"The {at}.{name} field is not recognised.")
    issue_type, severity, element = item.get("type"), item.get("severity"), item.get("element")
    if not isinstance(issue_type, str) or not issue_type:
        fail("type", f"The {at}.type field is required and must be a string.")
    elif len(issue_type) > MAX_TYPE_LENGTH or not _TYPE.match(issue_type):
        fail(
            "type",
            f"The {at}.type must be 1 to {MAX_TYPE_LENGTH} letters, digits, '_', '-', '.' or "
            "':', starting with a letter or digit.",
        )
    if not isinstance(severity, str) or severity not in SEVERITIES:
        fail("severity", f"The {at}.severity must be one of: error, warning, info, notice.")
    if not isinstance(element, str) or not element.strip():
        fail("element", f"The {at}.element field is required and must be a non-empty string.")
    elif len(element) > MAX_ELEMENT_LENGTH:
        fail("element", f"The {at}.element may not be longer than {MAX_ELEMENT_LENGTH} characters.")
    details = item.get("details")
    details_text = None
    if details is not None:
        if not isinstance(details, dict):
            fail("details", f"The {at}.details must be an object.")
        elif problem := json_problem(details, MAX_DETAILS_DEPTH):
            fail("details", f"The {at}.details {problem}.")
        else:
            details_text = orjson.dumps(details).decode()
            if len(details_text) > MAX_DETAILS_BYTES:
                fail(
                    "details", f"The {at}.details may not be larger than {MAX_DETAILS_BYTES} bytes."
                )
    if bad:
        return None
    assert isinstance(issue_type, str) and isinstance(severity, str) and isinstance(element, str)
    return IssueInput(issue_type, SEVERITIES[severity], element, details_text)


def report_input(media: Any) -> ReportInput:
    """The report in ``media`` (a parsed JSON body), or ValidationFailed naming every
    problem."""
    if not isinstance(media, dict):
        raise ValidationFailed.field("body", "The request body must be a JSON object.")
    errors: dict[str, list[str]] = {}
    for name in media:
        if name not in REPORT_FIELDS:
            errors.setdefault(name, []).append(f"The {name} field is not recognised.")
    raw_url = media.get("url")
    url = None
    if raw_url is None:
        errors.setdefault("url", []).append("The url field is required.")
    elif not isinstance(raw_url, str) or (url := normalize_url(raw_url)) is None:
        errors.setdefault("url", []).append(f"The url {URL_RULE}.")
    scores = _scores(media, errors)
    issues: list[IssueInput] = []
    raw_issues = media.get("issues")
    if raw_issues is not None:
        if not isinstance(raw_issues, list):
            errors.setdefault("issues", []).append("The issues must be an array.")
        elif len(raw_issues) > MAX_ISSUES:
            errors.setdefault("issues", []).append(
                f"The issues may not have more than {MAX_ISSUES} items."
            )
        else:
            for index, item in enumerate(raw_issues):
                issue = _issue(index, item, errors)
                if issue is not None:
                    issues.append(issue)
    if errors:
        raise ValidationFailed(errors)
    assert url is not None
    return ReportInput(url, scores, tuple(issues))


@dataclass(frozen=True, slots=True)
class IssueFilter:
    severities: tuple[int, ...] = ()
    issue_types: tuple[str, ...] = ()
    url: str | None = None


def _terms(raw: str) -> list[str]:
    return [t.strip() for t in raw.split(",") if t.strip()]


def url_param(raw: Any, errors: dict[str, list[str]]) -> str | None:
    url = normalize_url(raw) if isinstance(raw, str) else None
    if url is None:
        errors.setdefault("url", []).append(f"The url {URL_RULE}.")
    return url


def take_filters(
    params: dict[str, Any], names: frozenset[str], errors: dict[str, list[str]]
) -> tuple[IssueFilter, dict[str, Any]]:
    """The SEO filters among ``params`` (those in ``names``: severity, issue_type, url),
    and the remaining parameters for the shared list conventions; problems go to
    ``errors``. Comma-separated values of severity and issue_type match any of them."""
    rest = {k: v for k, v in params.items() if k not in names}
    severities: list[int] = []
    types: list[str] = []
    url = None
    for name in names & params.keys():
        raw = params[name]
        if not isinstance(raw, str):
            errors.setdefault(name, []).append(f"The {name} parameter may be given only once.")
            continue
        if name == "url":
            url = url_param(raw, errors)
            continue
        terms = _terms(raw)
        if not terms or len(terms) > MAX_FILTER_TERMS:
            errors.setdefault(name, []).append(
                f"The {name} must be 1 to {MAX_FILTER_TERMS} comma-separated values."
            )
        elif name == "severity":
            if any(t not in SEVERITIES for t in terms):
                errors.setdefault(name, []).append(
                    "The severity must be one or more of: error, warning, info, notice."
                )
            severities = sorted({SEVERITIES[t] for t in terms if t in SEVERITIES})
        elif any(len(t) > MAX_TYPE_LENGTH or not _TYPE.match(t) for t in terms):
            errors.setdefault(name, []).append(
                f"Each issue_type must be 1 to {MAX_TYPE_LENGTH} letters, digits, '_', '-', "
                "'.' or ':'."
            )
        else:
            types = sorted(set(terms))
    return IssueFilter(tuple(severities), tuple(types), url), rest
