"""The real llama-server on the tiny model does what llamasup and the fake assume it does.

The model's output is gibberish: these tests check shapes and lifecycle, never content.
"""

from __future__ import annotations

import http.client
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from llamasup.testing.process import ServerProcess, free_port

pytestmark = pytest.mark.e2e

LOADING_BODY = {"error": {"message": "Loading model", "type": "unavailable_error", "code": 503}}


def _sse_events(port: int | None, path: str, body: dict[str, object]) -> list[str]:
    """The ``data:`` payloads of one streamed response, read raw so ``[DONE]`` stays visible
    (the openai client swallows it, and would end just the same on a cut-off stream)."""
    assert port is not None
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = {"content-type": "application/json"}
        connection.request("POST", path, json.dumps(body), headers)
        response = connection.getresponse()
        assert response.status == 200
        text = response.read().decode("utf-8", errors="replace")
    finally:
        connection.close()
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


def _health(port: int) -> tuple[int, object] | None:
    """One raw /health probe; None while nothing listens yet."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/health")
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    except OSError:
        return None
    finally:
        connection.close()


@pytest.fixture
def server(llama_server_bin: Path, tiny_model: Path) -> Iterator[ServerProcess]:
    port = free_port()
    # a large single-slot context makes loading (KV cache allocation, warm-up) last long
    # enough for a tight poll to see the 503 phase even on a fast machine
    argv = [
        str(llama_server_bin),
        "-m",
        str(tiny_model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "-c",
        "65536",
        "-np",
        "1",
        "--alias",
        "tiny",
    ]
    with ServerProcess(argv) as proc:
        proc.port = port
        yield proc


def test_health_goes_from_503_to_200_and_stays(server: ServerProcess) -> None:
    assert server.port is not None
    seen: list[tuple[int, object]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answer = _health(server.port)
        if answer is not None:
            seen.append(answer)
            if answer[0] == 200:
                break
        assert server.process.poll() is None, server.stderr_text
    assert seen and seen[-1] == (200, {"status": "ok"}), seen[-5:]
    assert all(answer == (503, LOADING_BODY) for answer in seen[:-1]), seen
    assert len(seen) > 1, "the loading phase (503) was never observed"
    assert _health(server.port) == (200, {"status": "ok"})
    server.wait_listening(timeout=5)
    text = server.stderr_text
    assert "llama_server: model loaded" in text
    assert text.index("model loaded") < text.index(f"listening on http://127.0.0.1:{server.port}")


def test_chat_completion_has_the_openai_shape_and_sigterm_exits_0(server: ServerProcess) -> None:
    server.wait_listening(timeout=30)
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused")
    assert [m.id for m in client.models.list().data] == ["tiny"]

    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=8
    )
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert isinstance(reply.choices[0].message.content, str)
    assert reply.choices[0].finish_reason in {"stop", "length"}
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 8

    events = _sse_events(
        server.port,
        "/v1/chat/completions",
        {
            "model": "tiny",
            "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": 4,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    # What is always true. Not that the first chunk carries the role: llama-server sometimes
    # sends no role chunk, and now and then no content chunk either, only the final one
    # (of 60 streams of this request: 8 without a role, 1 without content).
    assert events[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(event) for event in events[:-1]]
    assert chunks and all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    with_choices = [chunk.choices[0] for chunk in chunks if chunk.choices]
    assert all(choice.delta.role in {None, "assistant"} for choice in with_choices)
    finish_reasons = [choice.finish_reason for choice in with_choices if choice.finish_reason]
    assert len(finish_reasons) == 1 and finish_reasons[0] in {"stop", "length"}
    assert with_choices[-1].finish_reason == finish_reasons[0]  # nothing generated after it
    usage = chunks[-1].usage  # include_usage: a last chunk with no choices
    assert chunks[-1].choices == [] and usage is not None and 0 < usage.completion_tokens <= 4

    server.signal(signal.SIGTERM)
    assert server.wait_exit(timeout=10) == 0
