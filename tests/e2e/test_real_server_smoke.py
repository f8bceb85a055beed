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

from llamasup.testing.process import ServerProcess, free_port

pytestmark = pytest.mark.e2e

LOADING_BODY = {"error": {"message": "Loading model", "type": "unavailable_error", "code": 503}}


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

    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None

    server.signal(signal.SIGTERM)
    assert server.wait_exit(timeout=10) == 0
