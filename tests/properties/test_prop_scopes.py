"""Scope matching (gateway/scopes.py) against a small model of the rules in docs/api.md.

A scope is ``resource:action`` (action read, write, delete), with the wildcards ``*``,
``resource:*``, ``*:action`` and the bare actions meaning ``*:action``. The model
expands a scope into a predicate over concrete ``(resource, action)`` pairs; a set of
scopes grants the union. Resources are unbounded, so "covers" is checked over every
resource any scope names plus one that none names (every unnamed resource behaves
alike), which makes the finite check exact.
"""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core_api.gateway import scopes

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
ACTIONS = ("read", "write", "delete")
NAME_FIRST = string.ascii_lowercase
NAME_REST = string.ascii_lowercase + string.digits + "_-"
FRESH = "zz-never-named"  # longer than any generated name: never named by a scope


# ---------------------------------------------------------------- the model


def model_valid(scope: str) -> bool:
    if scope in ("*", *ACTIONS):
        return True
    parts = scope.split(":")
    if len(parts) != 2:
        return False
    resource, action = parts
    resource_ok = resource == "*" or (
        1 <= len(resource) <= 64
        and resource[0] in NAME_FIRST
        and all(c in NAME_REST for c in resource[1:])
    )
    return resource_ok and action in ("*", *ACTIONS)


def model_grants_one(scope: str, resource: str, action: str) -> bool:
    if scope == "*":
        return True
    if scope in ACTIONS:
        return action == scope
    res, _, act = scope.partition(":")
    return res in ("*", resource) and act in ("*", action)


def model_grants(granted: list[str], resource: str, action: str) -> bool:
    return any(model_grants_one(s, resource, action) for s in granted)


def named(scope_lists: list[list[str]]) -> set[str]:
    out = {FRESH}
    for lst in scope_lists:
        for s in lst:
            res, sep, _ = s.partition(":")
            if sep and res != "*":
                out.add(res)
    return out


def model_covers(granted: list[str], requested: str) -> bool:
    """Every concrete permission of ``requested`` is granted."""
    return all(
        model_grants(granted, r, a)
        for r in named([granted, [requested]])
        for a in ACTIONS
        if model_grants_one(requested, r, a)
    )


# ---------------------------------------------------------------- strategies

names = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(NAME_FIRST),
    st.text(alphabet=NAME_REST, max_size=6),
)
# A few resources, so that scopes of one example often name the same one.
resources = st.one_of(st.sampled_from(["posts", "api-keys", "workspaces", "x"]), names)
actions = st.sampled_from(ACTIONS)
valid_scopes = st.one_of(
    st.just("*"),
    actions,
    st.builds(lambda a: f"*:{a}", st.sampled_from((*ACTIONS, "*"))),
    st.builds(lambda r, a: f"{r}:{a}", resources, st.sampled_from((*ACTIONS, "*"))),
)
scope_sets = st.lists(valid_scopes, max_size=6)


def _mutate(scope: str, data: st.DataObject) -> str:
    kind = data.draw(st.sampled_from(["append", "prepend", "replace", "upper", "double"]))
    junk = data.draw(
        st.sampled_from(["\n", " ", "\t", ":", "*", "X", "\x00", "é", "\U0001d52d", ".", "a"])
    )
    if kind == "append":
        return scope + junk
    if kind == "prepend":
        return junk + scope
    if kind == "upper":
        return scope.upper()
    if kind == "double":
        return f"{scope}:{scope}"
    i = data.draw(st.integers(0, max(len(scope) - 1, 0)))
    return scope[:i] + junk + scope[i + 1 :]


# ---------------------------------------------------------------- properties


@SETTINGS
@given(scope=st.one_of(valid_scopes, st.text(max_size=20), st.text("*:abrdeltwiX-_9\n ")))
def test_validity_matches_the_grammar(scope: str) -> None:
    assert scopes.is_valid(scope) is model_valid(scope)


@SETTINGS
@given(scope=valid_scopes, data=st.data())
def test_mutated_scopes_are_refused_consistently(scope: str, data: st.DataObject) -> None:
    mutated = _mutate(scope, data)
    assert scopes.is_valid(mutated) is model_valid(mutated)
    # A trailing newline or space never sneaks past the grammar.
    assert not scopes.is_valid(scope + "\n")
    assert not scopes.is_valid(" " + scope)


@SETTINGS
@given(granted=scope_sets, resource=resources, action=actions)
def test_grants_matches_the_model(granted: list[str], resource: str, action: str) -> None:
    required = f"{resource}:{action}"
    got = scopes.grants(scopes.normalised_set(granted), required)
    assert got is model_grants(granted, resource, action)


@SETTINGS
@given(resource=resources, action=actions, rest=scope_sets)
def test_star_grants_everything(resource: str, action: str, rest: list[str]) -> None:
    for star in (["*"], ["*:*"], ["read", "write", "delete"]):
        granted = scopes.normalised_set(star + rest)
        assert scopes.grants(granted, f"{resource}:{action}")
        assert scopes.covers(granted, "*")
        assert scopes.covers(granted, f"{resource}:*")


@SETTINGS
@given(own=resources, other=resources, action=actions)
def test_resource_wildcard_grants_its_resource_and_nothing_else(
    own: str, other: str, action: str
) -> None:
    granted = scopes.normalised_set([f"{own}:*"])
    assert scopes.grants(granted, f"{own}:{action}")
    assert scopes.grants(granted, f"{other}:{action}") is (other == own)
    assert scopes.covers(granted, f"{own}:*")
    assert not scopes.covers(granted, f"*:{action}")
    assert not scopes.covers(granted, action)


@SETTINGS
@given(resource=resources, action=actions, other_resource=resources, other_action=actions)
def test_exact_scope_grants_exactly_itself(
    resource: str, action: str, other_resource: str, other_action: str
) -> None:
    granted = scopes.normalised_set([f"{resource}:{action}"])
    same = (other_resource, other_action) == (resource, action)
    assert scopes.grants(granted, f"{other_resource}:{other_action}") is same
    assert not scopes.covers(granted, f"{resource}:*")


@SETTINGS
@given(granted=scope_sets, extra=scope_sets, resource=resources, action=actions)
def test_adding_scopes_never_removes_a_permission(
    granted: list[str], extra: list[str], resource: str, action: str
) -> None:
    small = scopes.normalised_set(granted)
    large = scopes.normalised_set(granted + extra)
    if scopes.grants(small, f"{resource}:{action}"):
        assert scopes.grants(large, f"{resource}:{action}")
    for requested in [*granted, *extra, f"{resource}:*", f"*:{action}", "*"]:
        if scopes.covers(small, requested):
            assert scopes.covers(large, requested)


@SETTINGS
@given(granted=scope_sets, requested=valid_scopes)
def test_covers_matches_the_model(granted: list[str], requested: str) -> None:
    assert scopes.covers(scopes.normalised_set(granted), requested) is model_covers(
        granted, requested
    )


@SETTINGS
@given(granted=scope_sets, requested=st.lists(valid_scopes, max_size=4))
def test_a_set_covers_itself_and_covers_all_is_the_conjunction(
    granted: list[str], requested: list[str]
) -> None:
    held = scopes.normalised_set(granted)
    assert scopes.covers_all(held, granted)  # a key may always re-grant what it holds
    assert scopes.covers_all(held, requested) is all(model_covers(granted, r) for r in requested)
