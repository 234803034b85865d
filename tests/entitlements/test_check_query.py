"""The check's own query reader (``simple_params``) answers exactly as falcon's parser, or
hands the query to it: a differential property over query strings made of the characters
that matter (separators, encodings, repeats, blanks)."""

from __future__ import annotations

import falcon.asgi
import falcon.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from core_api.entitlements.resources import simple_params

QUERY = st.text(alphabet="fq=&%+2Fa.-_ 9", max_size=24) | st.sampled_from(
    ["feature=posts", "feature=posts&quantity=3", "feature=a=b", "quantity=&feature=x"]
)


async def _never() -> dict[str, object]:
    raise AssertionError("the body is not read")


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(QUERY)
def test_simple_params_equal_falcons_or_defer(query: str) -> None:
    fast = simple_params(query)
    if fast is None:
        return
    scope = falcon.testing.create_scope(path="/api/v1/entitlements/check", query_string=query)
    assert fast == dict(falcon.asgi.Request(scope, _never).params)


def test_simple_params_read_the_common_forms_and_defer_the_rest() -> None:
    assert simple_params("feature=posts&quantity=2") == {"feature": "posts", "quantity": "2"}
    assert simple_params("feature=") == {"feature": ""}
    for deferred in ("feature=a&feature=b", "feature", "feature=p%6Fsts", "f=a+b", "", "a&&b=1"):
        assert simple_params(deferred) is None
