"""Timing-safe comparisons (docs/security.md, "Timing").

Wall-clock timing tests are flaky by nature, so the guarantee is checked where it lives:

- a source audit: no ``==`` / ``!=`` in the service's Python on anything named like a
  secret, hash, MAC, signature or token (so a new one fails here), and the Rust key code
  compares hashes only through ``subtle``'s ``ConstantTimeEq``;
- the primitives: ``_native.constant_time_eq`` (the key-hash check after the database
  lookup) and the receiver-side ``verify``, which compares every candidate signature with
  ``hmac.compare_digest`` and never stops at the first match.
"""

from __future__ import annotations

import ast
import hmac
import re
import time
from pathlib import Path
from typing import Any

import pytest

import core_api
from core_api import _native
from core_api.webhooks import verify as verify_module
from core_api.webhooks.signing import decode_secret, generate_secret, sign

PACKAGE = Path(core_api.__file__).parent
RUST = Path(__file__).resolve().parents[2] / "rust"
SECRET_LIKE = re.compile(
    r"(secret|signature|digest|hash|fingerprint|token|mac|pepper|password|sealed|salt)", re.I
)


def _names(node: ast.AST) -> list[str]:
    found = []
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            found.append(n.id)
        elif isinstance(n, ast.Attribute):
            found.append(n.attr)
    return found


def _public(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return True
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "len"


def test_no_equality_on_secret_like_values_in_the_service() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            if not any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
                continue
            sides = [node.left, *node.comparators]
            if any(_public(side) for side in sides):
                continue  # against a literal, None or a length: nothing secret compared
            if any(SECRET_LIKE.search(name) for name in _names(node)):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {ast.unparse(node)}")
    assert not offenders, "compare secrets with hmac.compare_digest:\n" + "\n".join(offenders)


def test_the_auth_path_checks_the_key_hash_in_constant_time() -> None:
    source = (PACKAGE / "gateway" / "auth.py").read_text()
    assert "_native.constant_time_eq(" in source
    keys = (RUST / "keys.rs").read_text()
    assert "use subtle::ConstantTimeEq;" in keys and "a.ct_eq(b).into()" in keys
    cache = (RUST / "keycache.rs").read_text()
    assert "ct_eq(&e.hash, hash)" in cache
    # No plain == on hashes or secrets in the Rust key code.
    for name in ("keys.rs", "keycache.rs", "webhooks.rs"):
        for number, line in enumerate((RUST / name).read_text().splitlines(), 1):
            code = line.split("//", 1)[0]
            if re.search(r"\b\w*(hash|secret|signature|mac)\w*\s*[!=]=", code, re.I):
                if "#[cfg(test)]" in code or "assert" in code:
                    continue
                pytest.fail(f"rust/{name}:{number}: {line.strip()}")


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (b"", b"", True),
        (b"\x00" * 32, b"\x00" * 32, True),
        (bytes(range(32)), bytes(range(32)), True),
        (bytes(range(32)), bytes(range(31)) + b"\xff", False),
        (b"\x01" + bytes(31), bytes(32), False),
        (bytes(32), bytes(31), False),
        (b"abc", b"abcd", False),
    ],
)
def test_native_constant_time_eq(a: bytes, b: bytes, equal: bool) -> None:
    assert _native.constant_time_eq(a, b) is equal


def test_verify_compares_every_signature_with_compare_digest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = generate_secret()
    body, msg_id, stamp = b'{"a":1}', "msg_1", int(time.time())
    good = sign([decode_secret(secret)], msg_id, stamp, body)
    other = sign([decode_secret(generate_secret())], msg_id, stamp, body)
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(verify_module.hmac, "compare_digest", spy)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": f"{good} {other} {other}",  # the match comes first
    }
    verify_module.verify(secret, headers, body)
    assert len(calls) == 3  # no early exit after the first match
    calls.clear()
    headers["webhook-signature"] = f"{other} {other}"
    with pytest.raises(verify_module.WebhookVerificationError):
        verify_module.verify(secret, headers, body)
    assert len(calls) == 2
