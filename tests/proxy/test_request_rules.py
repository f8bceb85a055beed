"""``request: {force, strip}``: values a profile forces beat the client's, stripped keys
never reach the sidecar, on every route and for small and large (spliced) bodies alike."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from llamasup.errors import ProfileError
from llamasup.proxy.body import SPLICE_FROM, edit_body, parse_body
from llamasup.proxy.request import SYNONYMS
from proxy.pool_fixture import ProxyServer
from proxy.proxy_profiles import ProfileLoader, ProxyFactory

RULES = """
version: 1
models:
  strict:
    path: /models/strict.gguf
    args: [--embeddings]
    aliases: [s]
    request:
      force: {temperature: 0.1, chat_template_kwargs: {enable_thinking: false}}
      strip: [top_k, seed]
agents:
  hot:
    model: strict
    flags: --top-p 0.5 --min-p 0.1
    request: {force: {temperature: 1.5, provider: {order: [local]}}, strip: [min_p]}
  loose: --top-k 20
"""

FILLER = [{"role": "user", "content": "café ☕ " * 40}] * 40  # non-ASCII and large


def forwarded(proxy: ProxyServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(proxy.url + path, content=json.dumps(body).encode(), timeout=30)
    assert response.status_code == 200, response.text
    sent: dict[str, Any] = response.json()["x_fake"]["body"]
    return sent


@pytest.mark.parametrize("large", [False, True], ids=["reserialised", "spliced"])
def test_forced_values_beat_the_clients_and_stripped_keys_never_arrive(
    make_proxy: ProxyFactory, large: bool
) -> None:
    proxy = make_proxy(RULES)
    client = {
        "model": "s",
        "temperature": 0.9,
        "top_k": 5,
        "seed": 7,
        "chat_template_kwargs": {"enable_thinking": True, "other": 1},
        "max_tokens": 9,
    }
    if large:
        client["messages"] = FILLER
    body = forwarded(proxy, "/v1/chat/completions", client)
    assert body.pop("messages", None) == (FILLER if large else None)
    assert body == {
        "model": "strict",
        "temperature": 0.1,
        "chat_template_kwargs": {"enable_thinking": False},
        "max_tokens": 9,
    }


def test_an_agent_forces_over_its_model_and_strips_its_own_defaults(
    make_proxy: ProxyFactory,
) -> None:
    proxy = make_proxy(RULES)
    body = forwarded(proxy, "/v1/completions", {"model": "strict@hot", "min_p": 0.3, "top_k": 1})
    assert body == {
        "model": "strict",
        "temperature": 1.5,  # the agent's forced value over the model's
        "chat_template_kwargs": {"enable_thinking": False},
        "provider": {"order": ["local"]},
        "top_p": 0.5,  # an agent default still applies where nothing forbids it
    }
    # an agent without rules keeps its model's, and its defaults never bring back a stripped key
    body = forwarded(proxy, "/v1/completions", {"model": "strict@loose"})
    assert "top_k" not in body and body["temperature"] == 0.1


def test_rules_apply_on_every_route(make_proxy: ProxyFactory) -> None:
    proxy = make_proxy(RULES)
    body = forwarded(proxy, "/v1/embeddings", {"model": "strict", "input": "x", "seed": 1})
    assert body == {
        "model": "strict",
        "input": "x",
        "temperature": 0.1,
        "chat_template_kwargs": {"enable_thinking": False},
    }


def spliced(raw: str, **rules: Any) -> dict[str, Any]:
    text = raw.replace("FILL", json.dumps("x" * SPLICE_FROM))
    out = edit_body(parse_body(text.encode()), model="m", defaults={}, synonyms=SYNONYMS, **rules)
    result: dict[str, Any] = json.loads(out)
    return result


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"a": FILL, "s": 1, "b": 2}', ["a", "b"]),  # a run in the middle
        ('{"s": 1, "t": 2, "a": FILL}', ["a"]),  # a run at the start
        ('{"a": FILL, "s": 1, "t": 2}', ["a"]),  # a run at the end
        ('{"s": FILL, "a": 1, "s": 2}', ["a"]),  # a duplicate key: every copy goes
        ('{ "s" : FILL ,"t":1 }', []),  # everything
    ],
)
def test_splice_removes_members_and_their_commas(raw: str, expected: list[str]) -> None:
    body = spliced(raw, strip=("s", "t"))
    assert sorted(k for k in body if k != "model") == expected
    assert body["model"] == "m"


def test_splice_forces_a_key_sent_twice_once() -> None:
    body = spliced('{"temperature": 1, "a": FILL, "temperature": 2}', force={"temperature": 0.5})
    assert body["temperature"] == 0.5 and sorted(body) == ["a", "model", "temperature"]
    assert spliced('{"a": FILL}', force={"top_k": 3})["top_k"] == 3


def test_model_can_be_neither_forced_nor_stripped(load_text: ProfileLoader) -> None:
    bad = RULES.replace("strip: [top_k, seed]", "strip: [top_k, model]")
    with pytest.raises(ProfileError, match=r"model cannot be stripped"):
        load_text(bad)
    bad = RULES.replace("force: {temperature: 0.1,", "force: {model: other, temperature: 0.1,")
    with pytest.raises(ProfileError, match=r"llamasup sets model"):
        load_text(bad)
    bad = RULES.replace("force: {temperature: 0.1,", "force: {when: 2024-01-01, temperature: 0.1,")
    with pytest.raises(ProfileError, match=r"not a JSON value"):
        load_text(bad)
