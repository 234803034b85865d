"""Fuzz every route of the app with a valid ``*`` key (Hypothesis, bounded, derandomised).

For each route Falcon reports (``falcon.inspect``), Hypothesis generates requests: the
route's methods and a few it does not have, ids that are huge, negative, signed or made
of Unicode digits, list parameters (page, sort, fields, include, search, status, dates)
with valid and hostile values, ``X-Workspace-ID`` and ``Idempotency-Key`` headers, and
JSON bodies with arbitrary nesting, strings (NUL included), integers beyond 64 bits, or
no valid JSON at all. Every response must be below 500, JSON, and in the documented error
shape when it is a 4xx. After each route's run every stored workspace and key must still
read back. The database accumulates across routes, so later routes read what earlier
ones wrote.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import falcon.inspect
import falcon.testing
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Api, make_settings
from core_api.api_keys import repo as keys_repo
from core_api.api_keys.service import bootstrap
from core_api.clock import ManualClock
from core_api.web.listing import ListSpec
from core_api.workspaces import repo as workspaces_repo
from support import read_back

# Bounded: about 20 s per backend. Public routes and unsupported methods need fewer.
EXAMPLES_PER_ENDPOINT = 100  # lists and writes: where hostile values reach SQL and storage
EXAMPLES_BY_ID = 50  # GET or DELETE of one item: only the id and headers vary
EXAMPLES_OTHER = 12
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    report_multiple_bugs=False,
    suppress_health_check=list(HealthCheck),
)
LIST_SPECS = {
    "/api/v1/workspaces": workspaces_repo.LIST_SPEC,
    "/api/v1/api-keys": keys_repo.LIST_SPEC,
}
TIERS = ["free", "starter", "pro", "agency", "enterprise"]
SCOPES = ["*", "read", "write", "delete", "workspaces:read", "api-keys:*", "*:write", "x:y"]
LIST_TERMS = [
    "id", "-id", "name", "-name", "slug", "tier", "created_at", "-updated_at", "last_used_at",
    "expires_at", "settings", "role", "prefix", "scopes", "owner", "members", "workspace",
    "user", "key_hash", "", " ", "\x00",
]  # fmt: skip


# --- values -------------------------------------------------------------------------------

ODD_INTEGERS = [
    "0", "-1", "+1", " 1", "01", "1e3", "0x10", "1.5", "\u00b2", "\u0661", "\uff11", "",
    "9223372036854775807", "9223372036854775808", "922337203685477581", "9" * 5000,
]  # fmt: skip
integer_text = st.one_of(
    st.sampled_from(ODD_INTEGERS),
    st.integers(2**58, 2**70).map(str),  # pages whose OFFSET leaves 64 bits
    st.integers(-3, 120).map(str),
)
offsets = st.integers(-1439, 1439).map(lambda m: timezone(timedelta(minutes=m)))
# Known-hostile values first (a curated catalogue finds the known classes within the
# example budget), then generated ones.
date_text = st.one_of(
    st.sampled_from(
        [
            "9999-12-31T23:59:59-23:59",
            "9999-12-31T23:59:59Z",
            "0001-01-01T00:00:00+01:00",
            "1969-12-31T23:59:59+00:00",
            "2030-01-01T00:00:00+24:00",
            "\u0662\u0660\u0663\u0660-01-01",
            "2030-01-01\x00",
            "",
        ]
    ),
    st.datetimes(timezones=st.none() | offsets).map(lambda d: d.isoformat()),
    st.dates().map(lambda d: d.isoformat()),
    st.text(max_size=12),
)
term_list = st.one_of(
    st.sampled_from([5, 21, 1000, 2500, 10_000]).map(lambda n: ",".join(["id"] * n)),
    st.lists(st.sampled_from(LIST_TERMS), max_size=6).map(",".join),
)
# Long values cost Hypothesis little when built from a length.
long_text = st.tuples(st.integers(200, 5000), st.sampled_from(["s", "\u00e9", "\x00", "%"])).map(
    lambda t: t[1] * t[0]
)
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=40,
)
HOSTILE_QUERY: dict[str, st.SearchStrategy[str]] = {
    "page": integer_text,
    "per_page": integer_text,
    "sort": term_list,
    "fields": term_list,
    "include": term_list,
    "search": st.sampled_from(["\x00", "a\x00b", "%", "_", "\\", "s" * 256])
    | st.text(max_size=12)
    | long_text,
    "status": st.text(max_size=10),
    "created_after": date_text,
    "created_before": date_text,
    "updated_after": date_text,
    "updated_before": date_text,
}
DATE_FILTERS = ("created_after", "created_before", "updated_after", "updated_before")
_valid_date = st.datetimes(datetime(1971, 1, 1), datetime(9998, 1, 1), timezones=offsets)


def _valid_terms(names: frozenset[str] | dict[str, str], signed: bool) -> st.SearchStrategy[str]:
    term = st.sampled_from(sorted(names))
    if signed:
        term = term.flatmap(lambda name: st.sampled_from([name, f"-{name}"]))
    return st.lists(term, min_size=1, max_size=3).map(",".join)


def queries(spec: ListSpec | None) -> st.SearchStrategy[list[tuple[str, str]]]:
    """Mostly valid list parameters with at most one hostile value (a request with many
    bad values stops at validation and tests nothing behind it)."""
    named = st.sampled_from(sorted(HOSTILE_QUERY)).flatmap(
        lambda name: st.tuples(st.just(name), HOSTILE_QUERY[name])
    )
    hostile = st.one_of(named, named, named, st.tuples(st.text(max_size=8), st.text(max_size=20)))
    if spec is None:  # the route takes no parameters: all are ignored or refused
        return st.lists(hostile, max_size=2)
    valid: dict[str, st.SearchStrategy[str]] = {
        "page": st.integers(1, 3).map(str),
        "per_page": st.integers(1, 100).map(str),
        "sort": _valid_terms(spec.sortable, True),
        "fields": _valid_terms(spec.fields, False),
        "search": st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8),
        **{name: _valid_date.map(lambda d: d.isoformat()) for name in DATE_FILTERS},
    }
    if spec.includes:
        valid["include"] = _valid_terms(spec.includes, False)
    if spec.statuses:
        valid["status"] = st.sampled_from(sorted(spec.statuses))
    base = st.lists(st.sampled_from(sorted(valid)), unique=True, max_size=3).flatmap(
        lambda names: st.tuples(*(st.tuples(st.just(n), valid[n]) for n in names))
    )

    def merge(
        pairs: tuple[tuple[str, str], ...], bad: tuple[str, str] | None
    ) -> list[tuple[str, str]]:
        kept = [pair for pair in pairs if bad is None or pair[0] != bad[0]]
        return kept if bad is None else [*kept, bad]

    # Hostile first: Hypothesis starts from the first branch of a one_of.
    return st.builds(merge, base, st.one_of(hostile, hostile, hostile, st.none()))


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


# Routes whose success is not JSON: the health probe, the metrics exposition and static
# assets (pixel.js, the GIF, the API docs page and its scripts).
NON_JSON_OK = frozenset(
    {"/health", "/metrics", "/api/v1/pixel/pixel.js", "/api/v1/pixel/track.gif", "/api/docs"}
)
NON_JSON_PREFIXES = ("/api/docs/",)


@dataclass(frozen=True)
class Deep:
    """A value nested ``depth`` levels, spliced into the encoded body by hand: the JSON
    encoders at hand stop at a few hundred levels."""

    depth: int
    array: bool

    def encode(self) -> bytes:
        opening, closing = (b"[", b"]") if self.array else (b'{"a":', b"}")
        return opening * self.depth + (b"" if self.array else b"1") + closing * self.depth


deep = st.builds(
    Deep, st.sampled_from([31, 32, 33, 62, 63, 64, 65, 253, 254, 255, 1000, 1100]), st.booleans()
)
_DEEP_MARK = "\ufdd0deep\ufdd0"

FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "name": st.text(max_size=12) | long_text | json_values,
    "slug": st.from_regex(r"\A[a-z0-9]{1,12}(-[a-z0-9]{1,6}){0,2}\Z") | st.text(max_size=20),
    "tier": st.sampled_from(TIERS) | st.text(max_size=12),
    "settings": st.dictionaries(st.text(max_size=8), json_values, max_size=4)
    | st.dictionaries(st.sampled_from("abcdefgh"), long_text, max_size=6)
    | deep
    | json_values,
    "scopes": st.lists(st.sampled_from(SCOPES) | st.text(max_size=12), max_size=4)
    | st.integers(60, 70).map(lambda n: ["read"] * n)
    | long_text.map(lambda text: [text])
    | json_values,
    "rate_limit_tier": st.sampled_from(TIERS) | json_values,
    "expires_at": date_text | json_values,
    "grace_period_hours": st.integers(-(2**70), 2**70) | json_values,
}
# Fields of the later features: hostile values of any JSON shape, long text and deep nesting.
for _field in (
    "url", "scores", "issues", "events", "secret", "type", "data", "id", "feature",
    "quantity", "event_id", "metadata", "domain",
):  # fmt: skip
    FIELDS[_field] = json_values | long_text | deep | st.integers(-(2**70), 2**70)


def hostile_field(names: list[str]) -> st.SearchStrategy[tuple[str, Any]]:
    """A hostile value, mostly for a field the route reads."""
    named = st.sampled_from(names or sorted(FIELDS)).flatmap(
        lambda n: st.tuples(st.just(n), FIELDS[n] | deep)
    )
    anywhere = st.tuples(st.sampled_from(sorted(FIELDS)) | st.text(max_size=6), json_values | deep)
    return st.one_of(named, named, named, anywhere)


# Bodies each route accepts when their values are right, so that runs reach past validation.
_name = st.text(min_size=1, max_size=40)
PLAUSIBLE: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "/api/v1/workspaces": st.fixed_dictionaries(
        {"name": _name}, optional={"slug": FIELDS["slug"], "tier": st.sampled_from(TIERS)}
    ),
    "/api/v1/workspaces/{id}": st.fixed_dictionaries(
        {},
        optional={
            "name": _name,
            "tier": st.sampled_from(TIERS),
            "settings": st.dictionaries(st.text(max_size=8), json_values, max_size=4),
        },
    ),
    "/api/v1/api-keys": st.fixed_dictionaries(
        {"name": _name},
        optional={
            "scopes": st.lists(st.sampled_from(SCOPES), max_size=4),
            "rate_limit_tier": st.sampled_from(TIERS),
            "expires_at": _valid_date.map(lambda d: d.isoformat()),
        },
    ),
    "/api/v1/api-keys/{id}/rotate": st.fixed_dictionaries(
        {}, optional={"grace_period_hours": st.integers(0, 720)}
    ),
    "/api/v1/seo/report": st.fixed_dictionaries(
        {"url": st.sampled_from(["https://example.com/", "https://example.com/a?b=1"])},
        optional={
            "scores": st.fixed_dictionaries(
                {}, optional={"seo": st.integers(-1, 101), "performance": st.integers(0, 100)}
            ),
            "issues": st.lists(
                st.fixed_dictionaries(
                    {
                        "type": st.sampled_from(["missing_alt", "x.y", ""]),
                        "severity": st.sampled_from(["error", "warning", "info", "bad"]),
                        "element": _name,
                    },
                    optional={"details": st.dictionaries(st.text(max_size=5), json_values)},
                ),
                max_size=3,
            ),
        },
    ),
    "/api/v1/webhooks": st.fixed_dictionaries(
        {
            "url": st.sampled_from(["https://example.com/hook", "http://127.0.0.1/x", "ftp://a"]),
            "events": st.lists(st.sampled_from(["post.created", "post.*", "*", ""]), max_size=3),
        },
        optional={"secret": st.sampled_from(["whsec_" + "A" * 44, "short"])},
    ),
    "/api/v1/events": st.fixed_dictionaries(
        {"type": st.sampled_from(["post.created", "workspace.created", "a"]), "data": json_values},
        optional={"id": st.text(max_size=20)},
    ),
    "/api/v1/entitlements/usage": st.fixed_dictionaries(
        {
            "feature": st.sampled_from(["posts", "api_calls", "storage", "nope"]),
            "quantity": st.integers(-2, 5),
        },
        optional={"event_id": st.text(max_size=12), "metadata": json_values},
    ),
    "/api/v1/pixel/sites": st.fixed_dictionaries(
        {"domain": st.sampled_from(["example.com", "sub.example.org", "localhost", ""])},
        optional={"name": _name, "sample_rate": st.floats(-1, 2)},
    ),
}

ROUTE_FIELDS = {
    "/api/v1/workspaces": ["name", "slug", "tier"],
    "/api/v1/workspaces/{id}": ["name", "tier", "settings"],
    "/api/v1/api-keys": ["name", "scopes", "rate_limit_tier", "expires_at"],
    "/api/v1/api-keys/{id}/rotate": ["grace_period_hours"],
    "/api/v1/seo/report": ["url", "scores", "issues"],
    "/api/v1/webhooks": ["url", "events", "secret"],
    "/api/v1/events": ["type", "data", "id"],
    "/api/v1/entitlements/usage": ["feature", "quantity", "event_id", "metadata"],
    "/api/v1/pixel/sites": ["domain", "name"],
}


def _encode(body: Any, ascii_only: bool) -> bytes:
    """JSON bytes, with any :class:`Deep` value written out by hand."""
    found: list[Deep] = []

    def mark(value: Any) -> Any:
        if isinstance(value, Deep):
            found.append(value)
            return _DEEP_MARK
        if isinstance(value, dict):
            return {k: mark(v) for k, v in value.items()}
        return value

    raw = json.dumps(mark(body), ensure_ascii=ascii_only).encode("utf-8")
    marker = json.dumps(_DEEP_MARK, ensure_ascii=ascii_only).encode("utf-8")
    for value in found:
        raw = raw.replace(marker, value.encode(), 1)
    return raw


def bodies(template: str | None) -> st.SearchStrategy[bytes | None]:
    """Mostly a body the route accepts with at most one hostile field; else anything."""
    plausible = PLAUSIBLE.get(template or "", st.just({}))
    names = ROUTE_FIELDS.get(template or "", [])

    def mutate(body: dict[str, Any], bad: tuple[str, Any] | None, ascii_only: bool) -> bytes:
        return _encode(body if bad is None else {**body, bad[0]: bad[1]}, ascii_only)

    anything = st.one_of(
        st.none(),
        st.tuples(st.fixed_dictionaries({}, optional=FIELDS), st.booleans()).map(
            lambda t: _encode(*t)
        ),
        st.tuples(json_values | deep, st.booleans()).map(lambda t: _encode(*t)),
        st.binary(max_size=60),
        st.sampled_from([b'{"name": "\\ud800"}', b'{"name": "\xff"}', b"{", b"[]", b"null"]),
    )
    bad = hostile_field(names)
    mutated = st.builds(mutate, plausible, st.one_of(bad, bad, bad, st.none()), st.booleans())
    return st.one_of(mutated, mutated, anything)


# --- requests -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    template: str
    methods: tuple[str, ...]


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes | None


_FIELD = re.compile(r"\{[^}]+\}")
OTHER_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def routes_of(app: Any) -> list[Route]:
    """The Falcon app's routes (behind the served front: its fast paths answer some of
    them, and are fuzzed with them)."""
    found = []
    for info in falcon.inspect.inspect_routes(getattr(app, "app", app)):
        methods = tuple(m.method for m in info.methods if not m.internal)
        found.append(Route(re.sub(r"\{(\w+)[^}]*\}", r"{\1}", info.path), methods))
    return found


def calls(
    route: Route, methods: tuple[str, ...], ids: st.SearchStrategy[str]
) -> st.SearchStrategy[Call]:
    fields = len(_FIELD.findall(route.template))

    def build(
        method: str,
        values: list[str],
        pairs: list[tuple[str, str]],
        headers: dict[str, str],
        body: bytes | None,
    ) -> Call:
        path = route.template
        for value in values:
            path = _FIELD.sub(quote(value, safe=""), path, count=1)
        return Call(method, path, urlencode(pairs, quote_via=quote), headers, body)

    extra_headers = st.fixed_dictionaries(
        {},
        optional={
            # A server sees header bytes as latin-1: what UTF-8 digits look like there.
            "X-Workspace-ID": ids.map(lambda v: v.encode().decode("latin-1")) | header_text,
            "Idempotency-Key": st.sampled_from(["k1", "k2", "k3"]) | header_text,
            "Content-Type": st.sampled_from(["application/json", "text/plain", ""]),
            "X-Request-ID": header_text,
        },
    )
    # Vary what the endpoint reads; other dimensions only now and then.
    reads_body = any(m in ("POST", "PATCH", "PUT") for m in methods)
    body = bodies(route.template) if reads_body else st.none() | bodies(None)
    return st.builds(
        build,
        st.sampled_from(methods),
        st.lists(ids, min_size=fields, max_size=fields),
        queries(LIST_SPECS.get(route.template)),
        st.one_of(st.just({}), st.just({}), extra_headers),
        body,
    )


def id_strategy(existing: int) -> st.SearchStrategy[str]:
    """Mostly an id that may exist, else a hostile one."""
    hostile = st.one_of(
        st.integers(-(2**70), 2**70).map(str),
        st.sampled_from(ODD_INTEGERS),
        st.text(st.characters(codec="utf-8", exclude_characters="/?#%"), min_size=1, max_size=6),
    )
    valid = st.integers(1, existing).map(str)
    return st.one_of(hostile, valid, valid, valid)


def unknown_routes() -> st.SearchStrategy[Call]:
    segment = st.text(
        alphabet=st.characters(codec="utf-8", exclude_characters="/?#%"), min_size=1, max_size=8
    )
    paths = st.lists(segment, min_size=1, max_size=3).flatmap(
        lambda parts: st.sampled_from(["/api/v1/", "/api/", "/"]).map(
            lambda prefix: prefix + "/".join(quote(p, safe="") for p in parts)
        )
    )
    return st.builds(
        lambda method, path, pairs, body: Call(method, path, urlencode(pairs), {}, body),
        st.sampled_from(OTHER_METHODS),
        paths,
        queries(None),
        bodies(None),
    )


# --- the run ------------------------------------------------------------------------------


class Harness:
    """An opened runtime with a ``*`` key of its own (so that revoking or rotating the
    bootstrap key, or down-tiering its workspace, does not stop the run)."""

    def __init__(self, database_url: str, tmp_path: Path) -> None:
        self.settings = make_settings(database_url, tmp_path)
        self.clock = ManualClock()
        self.statuses: Counter[tuple[str, str, int]] = Counter()

    async def open(self) -> None:
        from conftest import open_app

        self.runtime, self.app = await open_app(self.settings, self.clock)
        boot = await bootstrap(
            self.runtime.db,
            self.runtime.keys,
            self.runtime.plans,
            self.clock,
            name="Fuzz",
            tier="enterprise",
            email="fuzz@example.test",
        )
        self.conductor = falcon.testing.ASGIConductor(self.app)
        await self.conductor.__aenter__()
        api = Api(self.conductor, boot["api_key"]["key"])
        own = await api.post(
            "/api/v1/api-keys",
            json={"name": "fuzzer", "scopes": ["*"], "rate_limit_tier": "enterprise"},
        )
        assert own.status == 201, own.json
        self.api = Api(self.conductor, own.json["data"]["key"])
        self.key_id = int(own.json["data"]["id"])
        self.home_id = int(boot["workspace"]["id"])

    async def close(self) -> None:
        """Also after a failed ``open()``: whatever it opened is closed."""
        try:
            if hasattr(self, "conductor"):
                await self.conductor.__aexit__(None, None, None)
        finally:
            if hasattr(self, "runtime"):
                await self.runtime.close()

    def protect(self, call: Call, route: Route) -> Call:
        """Never delete or rotate the fuzzer's own key, nor delete its home workspace
        (ids reach the router through ``int()``, so ``01`` or an Arabic-Indic 1 is the same id)."""
        if call.method not in ("DELETE", "POST"):
            return call
        protected = self.key_id if "api-keys" in route.template else self.home_id
        segment = call.path.rstrip("/").split("/")[-2 if call.path.endswith("rotate") else -1]
        try:
            hits = int(falcon.uri.decode(segment)) == protected
        except ValueError:
            hits = False
        return (
            Call(call.method, "/api/v1/unknown", call.query, call.headers, call.body)
            if hits
            else call
        )

    async def send(self, call: Call, group: str) -> None:
        headers = {"Authorization": f"Bearer {self.api.key}", **call.headers}
        result = await self.conductor.simulate_request(
            call.method, call.path, query_string=call.query, headers=headers, body=call.body
        )
        status = result.status_code
        self.statuses[(group, call.method, status)] += 1
        where = (call, status, result.text[:500])
        assert status < 500, where
        non_json = call.path in NON_JSON_OK or call.path.startswith(NON_JSON_PREFIXES)
        if status == 204 or (status == 200 and non_json):
            return
        assert result.headers.get("content-type", "").startswith("application/json"), where
        body = orjson.loads(result.content)
        if call.path == "/api/v1/mcp" and "jsonrpc" in body:  # MCP answers JSON-RPC errors
            assert body["jsonrpc"] == "2.0" and isinstance(body["error"]["message"], str), where
            return
        if status >= 400:
            assert isinstance(body.get("error"), str), where
            assert isinstance(body.get("message"), str), where
        if status == 422:
            errors = body["errors"]
            assert errors and isinstance(errors, dict), where
            assert all(
                isinstance(v, list) and all(isinstance(m, str) for m in v) for v in errors.values()
            ), where


def fuzz(
    harness: Harness,
    loop: asyncio.AbstractEventLoop,
    route: Route | None,
    methods: tuple[str, ...],
    examples: int,
) -> None:
    """One bounded Hypothesis run against some methods of one route (None: routes that
    do not exist)."""
    group = route.template if route is not None else "unknown"
    strategy = calls(route, methods, id_strategy(8)) if route is not None else unknown_routes()

    @settings(FUZZ, max_examples=examples)
    @given(call=strategy)
    def run(call: Call) -> None:
        if route is not None:
            call = harness.protect(call, route)
        loop.run_until_complete(harness.send(call, group))

    run()


def endpoints(routes: list[Route]) -> list[tuple[Route | None, tuple[str, ...], int]]:
    """Each method of each API route on its own (focused runs find more), then the
    methods each route lacks, then routes that do not exist."""
    runs: list[tuple[Route | None, tuple[str, ...], int]] = []
    for route in routes:
        api = route.template.startswith("/api/v1/") and "pixel" not in route.template
        for method in route.methods:
            by_id = "{" in route.template and method in ("GET", "DELETE")
            examples = EXAMPLES_BY_ID if by_id else EXAMPLES_PER_ENDPOINT
            runs.append((route, (method,), examples if api else EXAMPLES_OTHER))
        others = tuple(m for m in OTHER_METHODS if m not in route.methods)
        runs.append((route, others, EXAMPLES_OTHER))
    runs.append((None, OTHER_METHODS, EXAMPLES_OTHER))
    return runs


def test_fuzz_every_route(database_url: str, tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    harness = Harness(database_url, tmp_path)
    try:
        loop.run_until_complete(harness.open())
        routes = routes_of(harness.app)
        assert {r.template for r in routes} >= {
            "/api/v1/workspaces",
            "/api/v1/workspaces/{id}",
            "/api/v1/api-keys",
            "/api/v1/api-keys/{id}",
            "/api/v1/api-keys/{id}/rotate",
        }
        for route, methods, examples in endpoints(routes):
            fuzz(harness, loop, route, methods, examples)
            loop.run_until_complete(read_back(harness.api))
        # The generators reach past validation: things were created, changed and removed.
        made = harness.statuses
        assert made[("/api/v1/workspaces", "POST", 201)] > 0, made
        assert made[("/api/v1/api-keys", "POST", 201)] > 0, made
        assert made[("/api/v1/workspaces/{id}", "PATCH", 200)] > 0, made
        assert sum(n for (_, m, s), n in made.items() if m == "GET" and s == 200) > 50, made
        assert sum(n for (_, _, s), n in made.items() if s == 422) > 100, made
    finally:
        try:
            loop.run_until_complete(harness.close())
        finally:
            loop.close()
