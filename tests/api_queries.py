"""Any query string a client may send the REST API, for hypothesis tests: the
parameters an endpoint reads, and one it does not, with values that are
text, huge numbers, NaN and infinities."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

query_values = (
    st.text(max_size=30)
    | st.integers(-(10**16), 10**16).map(str)
    | st.floats(allow_nan=True, allow_infinity=True).map(str)
)


def any_query(*names: str) -> st.SearchStrategy[dict[str, str]]:
    """Queries of some of ``names`` and an unknown parameter, each with any value."""
    return st.dictionaries(
        st.sampled_from([*names, "other"]), query_values, max_size=len(names) + 1
    )


def answered_or_refused(response: Any) -> dict[str, Any] | None:
    """The JSON body of a test client's 200, or None for a 400 that says why;
    anything else fails."""
    assert response.status_code in (200, 400), response.content
    body: dict[str, Any] = response.json()
    if response.status_code == 400:
        assert body["error"]
        return None
    return body
