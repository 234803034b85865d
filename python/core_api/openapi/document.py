"""The OpenAPI 3.1 document, assembled once per process from YAML fragments.

``base.yaml`` (this package) holds ``info``, the security scheme, tags and the components
every feature shares. Each feature package may ship an ``openapi.yaml`` with ``paths:`` and
``components:`` (its own, feature-prefixed names). :func:`assemble` merges them and refuses,
at start-up, a path or component name defined twice (also a key repeated inside one file:
YAML would silently keep the last one), an unknown top-level key, and a fragment that tries
to change what only the base may set (``info``, ``security``, ``securitySchemes``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from importlib import resources
from typing import Any

import orjson
import yaml

FRAGMENT = "openapi.yaml"
FRAGMENT_KEYS = frozenset({"paths", "components"})
# Component kinds a fragment may add to; securitySchemes stay the base's alone.
FRAGMENT_COMPONENTS = frozenset(
    {"schemas", "parameters", "responses", "headers", "requestBodies", "examples"}
)


class DocumentError(ValueError):
    """A fragment that cannot be merged (the message names the file and the key)."""


_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x


class _UniqueKeyLoader(_Loader):  # type: ignore[valid-type,misc]
    """SafeLoader that refuses a mapping key given twice."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise DocumentError(
                f"duplicate key {key!r} at line {key_node.start_mark.line + 1}"
                f" of {node.start_mark.name}"
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def load_yaml(text: str, name: str) -> dict[str, Any]:
    """One YAML mapping (``name`` appears in error messages)."""
    loader = _UniqueKeyLoader(text)
    loader.name = name
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise DocumentError(f"{name}: {exc}") from exc
    finally:
        loader.dispose()
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DocumentError(f"{name}: the top level must be a mapping")
    # JSON types only: unquoted status codes (200:) become "200", YAML dates ISO strings.
    normal: dict[str, Any] = orjson.loads(orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS))
    return normal


def merge(base: dict[str, Any], fragments: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """``base`` with every fragment's paths and components added; ``fragments`` are
    (name, content) pairs. Raises :class:`DocumentError` on any clash."""
    document: dict[str, Any] = orjson.loads(orjson.dumps(base))  # a deep copy, not aliased
    paths: dict[str, Any] = document.setdefault("paths", {}) or {}
    document["paths"] = paths
    components: dict[str, Any] = document.setdefault("components", {})
    origin: dict[tuple[str, str], str] = {}
    for kind, items in components.items():
        for item in items or {}:
            origin[(kind, item)] = "base.yaml"
    for path in paths:
        origin[("paths", path)] = "base.yaml"
    for name, fragment in fragments:
        unknown = set(fragment) - FRAGMENT_KEYS
        if unknown:
            raise DocumentError(f"{name}: unknown top-level keys {sorted(unknown)}")
        for path, item in (fragment.get("paths") or {}).items():
            if not isinstance(path, str) or not path.startswith("/"):
                raise DocumentError(f"{name}: path {path!r} must start with '/'")
            if ("paths", path) in origin:
                raise DocumentError(
                    f"{name}: path {path} is already defined by {origin[('paths', path)]}"
                )
            origin[("paths", path)] = name
            paths[path] = item
        for kind, items in (fragment.get("components") or {}).items():
            if kind not in FRAGMENT_COMPONENTS:
                raise DocumentError(f"{name}: components.{kind} may not be set by a fragment")
            target = components.setdefault(kind, {})
            for item, value in (items or {}).items():
                if (kind, item) in origin:
                    raise DocumentError(
                        f"{name}: components.{kind}.{item} is already defined by"
                        f" {origin[(kind, item)]}"
                    )
                origin[(kind, item)] = name
                target[item] = value
    return document


def feature_packages() -> tuple[str, ...]:
    """The packages whose fragments make the document: every feature (this one included)."""
    from ..features import FEATURES  # here: features imports this package

    return tuple(feature.__name__ for feature in FEATURES)


def _read(package: str, name: str) -> str | None:
    path = resources.files(package) / name
    return path.read_text(encoding="utf-8") if path.is_file() else None


def assemble(packages: Iterable[str] | None = None) -> dict[str, Any]:
    """The whole document. A feature without a fragment contributes nothing."""
    package = __package__ or "core_api.openapi"
    base_text = _read(package, "base.yaml")
    if base_text is None:
        raise DocumentError(f"{package}/base.yaml is missing from the installation")
    base = load_yaml(base_text, f"{package}/base.yaml")
    fragments = []
    for name in feature_packages() if packages is None else packages:
        text = _read(name, FRAGMENT)
        if text is not None:
            label = f"{name.replace('.', '/')}/{FRAGMENT}"
            fragments.append((label, load_yaml(text, label)))
    return merge(base, fragments)


@functools.cache
def document() -> dict[str, Any]:
    """The assembled document, built once per process (do not mutate it)."""
    return assemble()


@functools.cache
def document_bytes() -> bytes:
    """The document serialized once, as served."""
    return orjson.dumps(document())
