"""A request's keep_alive (ollama's body field, or the X-Llamasup-Keep-Alive header)."""

from __future__ import annotations

import pytest

from llamasup.proxy.envelope import ProxyError
from llamasup.proxy.request import keep_alive_of

LIMIT = 3600.0


@pytest.mark.parametrize(
    ("body", "header", "expected"),
    [
        (None, None, None),
        (0, None, 0.0),
        (300, None, 300.0),
        ("5m", None, 300.0),
        ("90", None, 90.0),
        (-1, None, LIMIT),
        ("-1", None, LIMIT),
        ("24h", None, LIMIT),
        (10**9, None, LIMIT),
        ("5m", "0", 0.0),
        (None, "30s", 30.0),
    ],
)
def test_keep_alive_is_seconds_clamped_to_the_profile_limit(
    body: object, header: str | None, expected: float | None
) -> None:
    assert keep_alive_of(body, header, LIMIT) == expected


@pytest.mark.parametrize("value", ["soon", True, [5], {"s": 1}, "5 fortnights"])
def test_anything_else_is_a_400_naming_the_field(value: object) -> None:
    with pytest.raises(ProxyError) as caught:
        keep_alive_of(value, None, LIMIT)
    assert caught.value.status == 400
    assert caught.value.code == "invalid_keep_alive"
