"""Body editing: the splice path (large bodies) must mean exactly what re-serialising means."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llamasup.proxy.body import SPLICE_FROM, edit_body, parse_body
from llamasup.proxy.envelope import ProxyError
from llamasup.proxy.request import SYNONYMS

DEFAULTS = {"temperature": 0.2, "top_k": 20, "n_predict": 64, "stop": ["\n\n"]}
FILLER = [{"role": "user", "content": "café ☕ " * 40}] * 40  # non-ASCII and large


def edited(body: dict[str, Any] | bytes, *, large: bool, model: str = "alpha") -> dict[str, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    if large and isinstance(body, dict):
        raw = json.dumps({**body, "messages": FILLER}, ensure_ascii=False, indent=1).encode()
    assert (len(raw) >= SPLICE_FROM) == large
    parsed = parse_body(raw)
    out = edit_body(parsed, model=model, defaults=DEFAULTS, synonyms=SYNONYMS)
    result: dict[str, Any] = json.loads(out)
    if large:
        assert result.pop("messages") == FILLER
    return result


CASES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    (
        {"model": "alpha@coder"},
        {"model": "alpha", "temperature": 0.2, "top_k": 20, "n_predict": 64, "stop": ["\n\n"]},
    ),
    (
        {"temperature": 0.9, "max_tokens": 5, "stop_sequences": ["x"]},
        {
            "model": "alpha",
            "temperature": 0.9,
            "max_tokens": 5,
            "stop_sequences": ["x"],
            "top_k": 20,
        },
    ),
    (
        {"model": None, "top_k": None, "max_completion_tokens": None},
        {
            "model": "alpha",
            "top_k": 20,
            "max_completion_tokens": None,
            "temperature": 0.2,
            "n_predict": 64,
            "stop": ["\n\n"],
        },
    ),
    (
        {"model": "alpha", "temperature": 1, "top_k": 1, "n_predict": 2, "stop": []},
        {"model": "alpha", "temperature": 1, "top_k": 1, "n_predict": 2, "stop": []},
    ),
]


@pytest.mark.parametrize("large", [False, True], ids=["reserialised", "spliced"])
@pytest.mark.parametrize(("body", "expected"), CASES)
def test_edits(body: dict[str, Any], expected: dict[str, Any], large: bool) -> None:
    assert edited(body, large=large) == expected


def test_unchanged_large_body_is_the_same_bytes() -> None:
    raw = json.dumps(
        {
            "model": "alpha",
            "messages": FILLER,
            "temperature": 0.1,
            "top_k": 1,
            "max_tokens": 3,
            "stop": None,
        },
        indent=2,
    ).encode()
    parsed = parse_body(raw)
    defaults = {"temperature": 0.2, "top_k": 20, "n_predict": 64}
    assert edit_body(parsed, model="alpha", defaults=defaults, synonyms=SYNONYMS) is raw


def test_empty_object_and_empty_body() -> None:
    assert edited(b"{}", large=False) == {
        "model": "alpha",
        "temperature": 0.2,
        "top_k": 20,
        "n_predict": 64,
        "stop": ["\n\n"],
    }
    assert json.loads(edit_body(parse_body(b""), model="m", defaults={}, synonyms={})) == {
        "model": "m"
    }


@pytest.mark.parametrize("tail", [",}", "} x", "", ',"a" 1}', ',"a":}', ',"a":[1}', ",1:2}"])
def test_malformed_large_bodies(tail: str) -> None:
    head = json.dumps({"messages": FILLER})[:-1]
    with pytest.raises(ProxyError) as caught:
        parse_body((head + tail).encode())
    assert caught.value.status == 400 and caught.value.code == "invalid_json"


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"text"', b"null", b"\xff\xfe", b"{", b"{}}"])
def test_not_an_object(raw: bytes) -> None:
    for body in (raw, raw + b" " * SPLICE_FROM):
        with pytest.raises(ProxyError) as caught:
            parse_body(body)
        assert caught.value.code == "invalid_json"


def _sized(members: bytes, *, large: bool) -> bytes:
    """``{members}``, padded past :data:`SPLICE_FROM` when ``large``."""
    pad = b',"pad":"' + b"x" * SPLICE_FROM + b'"' if large else b""
    raw = b"{" + members + pad + b"}"
    assert (len(raw) >= SPLICE_FROM) == large
    return raw


@pytest.mark.parametrize("large", [False, True], ids=["reserialised", "spliced"])
def test_deep_nesting_is_invalid_json_not_a_crash(large: bool) -> None:
    nested = b"[" * 1400 + b"]" * 1400  # past Python's recursion limit, below SPLICE_FROM
    for raw in (_sized(b'"model":"alpha","messages":' + nested, large=large), nested):
        with pytest.raises(ProxyError) as caught:
            parse_body(raw + (b" " * SPLICE_FROM if large else b""))
        assert (caught.value.status, caught.value.code) == (400, "invalid_json")
        assert "nested too deeply" in caught.value.message


@pytest.mark.parametrize("large", [False, True], ids=["reserialised", "spliced"])
def test_a_repeated_key_means_its_last_value_on_both_paths(large: bool) -> None:
    raw = _sized(b'"model":"beta","temperature":null,"model":"alpha@coder","temperature":0.5',
                 large=large)  # fmt: skip
    parsed = parse_body(raw)
    assert parsed.get("model") == "alpha@coder"
    assert parsed.get("temperature") == 0.5
    out = edit_body(parsed, model="alpha", defaults=DEFAULTS, synonyms=SYNONYMS)

    def first_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        kept: dict[str, Any] = {}
        for key, value in pairs:
            kept.setdefault(key, value)
        return kept

    # whatever the sidecar's parser does with duplicates, it reads what llamasup decided
    sent_first = json.loads(out, object_pairs_hook=first_wins)
    sent_last = json.loads(out)
    assert sent_first == sent_last
    assert sent_last["model"] == "alpha"
    assert sent_last["temperature"] == 0.5  # the client's (last) value, not the default
