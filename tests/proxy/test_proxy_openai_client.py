"""The official ``openai`` client works against the proxy (chat, streaming, completions, models)."""

from __future__ import annotations

import openai
import pytest

from proxy.pool_fixture import ProxyServer


@pytest.fixture
def client(proxy: ProxyServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key="unused", max_retries=0)


def test_chat(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="alpha@coder", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "t0 t1 t2 t3 "
    assert completion.usage is not None and completion.usage.completion_tokens == 4


def test_streaming_chat(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="a", messages=[{"role": "user", "content": "hi"}], stream=True, max_tokens=5
    )
    pieces = [chunk.choices[0].delta.content for chunk in stream if chunk.choices]
    assert "".join(p or "" for p in pieces) == "t0 t1 t2 t3 t4 "


def test_completions(client: openai.OpenAI) -> None:
    completion = client.completions.create(model="alpha", prompt="x", max_tokens=3)
    assert completion.choices[0].text == "t0 t1 t2 "


def test_model_list(client: openai.OpenAI) -> None:
    ids = {model.id for model in client.models.list()}
    assert {"alpha", "a", "alpha@coder", "beta"} <= ids
    assert client.models.retrieve("alpha@coder").id == "alpha@coder"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_errors_map_to_client_exceptions(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-9", messages=[])
    assert caught.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="alpha", messages=[], extra_headers={"X-Agent-Flags": "--temp 1"}
        )
