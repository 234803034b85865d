"""Tool arguments against a tool's input schema: 422 field errors before any call.

Most tools have flat object schemas (typed properties, ``required``, bounds, ``enum``).
Those are checked by a compiled fast path (a few dict lookups; jsonschema costs ~30 us a
call). Any schema using another keyword goes to jsonschema (Draft 2020-12, MCP's
default dialect), which also writes the messages whenever the fast path finds a problem,
so both give the same answers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from jsonschema.exceptions import SchemaError  # type: ignore[import-untyped]

MAX_MESSAGE = 500
_ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$comment"}
_PROPERTY_KEYS = _ANNOTATIONS | {"type", "minLength", "maxLength", "minimum", "maximum", "enum"}
_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
    ),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
}

Check = Callable[[Any], bool]


def _property_check(prop: Any) -> Check | None:
    if not isinstance(prop, dict) or not set(prop) <= _PROPERTY_KEYS:
        return None
    kind = prop.get("type")
    if kind not in _TYPES:
        return None
    is_type = _TYPES[kind]
    low_len, high_len = prop.get("minLength"), prop.get("maxLength")
    low, high = prop.get("minimum"), prop.get("maximum")
    enum = prop.get("enum")
    if enum is not None and not isinstance(enum, list):
        return None

    def check(value: Any) -> bool:
        if not is_type(value):
            return False
        if low_len is not None and len(value) < low_len:  # counts code points, as jsonschema
            return False
        if high_len is not None and len(value) > high_len:
            return False
        if low is not None and value < low:
            return False
        if high is not None and value > high:
            return False
        return enum is None or value in enum

    return check


def compile_fast(schema: Mapping[str, Any]) -> Check | None:
    """A predicate that is True exactly when ``schema`` accepts the value, or None when
    the schema uses anything the fast path does not cover."""
    allowed = _ANNOTATIONS | {"type", "properties", "required", "additionalProperties"}
    if schema.get("type") != "object" or not set(schema) <= allowed:
        return None
    props = schema.get("properties", {})
    required = schema.get("required", [])
    extra = schema.get("additionalProperties", True)
    if not isinstance(props, dict) or not isinstance(required, list) or extra not in (True, False):
        return None
    checks = {}
    for name, prop in props.items():
        check = _property_check(prop)
        if check is None:
            return None
        checks[name] = check
    names = frozenset(checks)
    must = tuple(required)

    def valid(value: Any) -> bool:
        if not isinstance(value, dict):
            return False
        for name in must:
            if name not in value:
                return False
        for name, item in value.items():
            check = checks.get(name)
            if check is None:
                if not extra and name not in names:
                    return False
            elif not check(item):
                return False
        return True

    return valid


class ArgumentValidator:
    def __init__(self, schema: Mapping[str, Any]) -> None:
        try:
            Draft202012Validator.check_schema(schema)
            self.full: Draft202012Validator | None = Draft202012Validator(schema)
        except SchemaError:  # an upstream's broken schema: the upstream judges its input
            self.full = None
        self.fast = compile_fast(schema) if self.full is not None else None

    def errors(self, arguments: Any) -> dict[str, list[str]]:
        if self.full is None or (self.fast is not None and self.fast(arguments)):
            return {}
        return field_errors(self.full, arguments)


def field_errors(validator: Draft202012Validator, arguments: Any) -> dict[str, list[str]]:
    """One human message per failing field, keyed ``arguments.<path>``."""
    errors: dict[str, list[str]] = {}
    for error in sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(p) for p in error.absolute_path)
        name = f"arguments.{path}" if path else "arguments"
        if error.validator == "required" and isinstance(error.validator_value, list):
            present = error.instance if isinstance(error.instance, dict) else {}
            for missing in error.validator_value:
                if missing not in present:
                    errors.setdefault(f"{name}.{missing}", []).append(
                        f"The {missing} field is required."
                    )
            continue
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = set(error.schema.get("properties", {}))
            for extra in sorted(set(error.instance) - known):
                errors.setdefault(f"{name}.{extra}", []).append(
                    f"The {extra} field is not allowed."
                )
            continue
        errors.setdefault(name, []).append(error.message[:MAX_MESSAGE])
    return errors
