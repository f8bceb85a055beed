"""The fake llama-server behaves like the real one where llamasup looks, and as scripted."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol

import httpx
import openai
import pytest

from llamasup.runtime.devices import list_devices, parse_list_devices
from llamasup.runtime.locate import binary_version
from llamasup.testing.fake_server import parse_args, write_fake_binary
from llamasup.testing.fake_state import FakeUsageError
from llamasup.testing.poll import poll_until
from llamasup.testing.process import ServerProcess, free_port

LOADING_BODY = {"error": {"message": "Loading model", "type": "unavailable_error", "code": 503}}


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    return path


class Spawn(Protocol):
    def __call__(self, *args: str, env: Mapping[str, str] | None = None) -> ServerProcess: ...


@pytest.fixture
def spawn(fake_server_bin: Path) -> Iterator[Spawn]:
    """Start fakes with a clean environment; every one is killed and reaped afterwards."""
    started: list[ServerProcess] = []

    def start(*args: str, env: Mapping[str, str] | None = None) -> ServerProcess:
        clean = {
            k: v for k, v in os.environ.items() if not k.startswith(("FAKE_LLAMA_", "LLAMA_ARG_"))
        }
        proc = ServerProcess([str(fake_server_bin), *args], {**clean, **(env or {})})
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.close()


def _response(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.TransportError:
        return None


def _status(url: str) -> int | None:
    response = _response(url)
    return None if response is None else response.status_code


def _ready(spawn: Spawn, *args: str, env: Mapping[str, str] | None = None) -> ServerProcess:
    proc = spawn(*args, "--port", "0", env=env)
    proc.wait_listening()
    return proc


# --- command line -----------------------------------------------------------------------------


def test_parse_args_honours_known_flags_and_skips_others() -> None:
    options = parse_args(
        [
            "-m",
            "m.gguf",
            "-ngl",
            "-1",
            "--jinja",
            "--temp",
            "0.2",
            "--alias",
            "b,a,b",
            "--port=0",
            "-fa",
            "on",
            "--metrics",
            "--host",
            "::1",
        ],
        {},
    )
    assert options.model == "m.gguf"
    assert options.model_id == "a"
    assert options.aliases == ("a", "b")
    assert options.port == 0
    assert options.host == "::1"
    assert options.metrics
    assert not options.embeddings


def test_parse_args_env_defaults_and_flag_precedence() -> None:
    env = {
        "LLAMA_ARG_MODEL": "env.gguf",
        "LLAMA_ARG_PORT": "9000",
        "LLAMA_ARG_ENDPOINT_METRICS": "1",
    }
    options = parse_args(["--port", "9001"], env)
    assert (options.model, options.port, options.metrics) == ("env.gguf", 9001, True)
    assert options.model_id == "env.gguf"  # no alias: the -m string as given


def test_parse_args_mimics_real_port_quirks() -> None:
    assert parse_args(["--port", "70000"], {}).port == 70000 & 0xFFFF
    with pytest.raises(FakeUsageError, match="stoi"):
        parse_args(["--port", "abc"], {})
    with pytest.raises(FakeUsageError, match="expected value"):
        parse_args(["-m"], {})


def test_launcher_is_a_shebang_script_for_this_interpreter(tmp_path: Path) -> None:
    path = write_fake_binary(tmp_path, env={"FAKE_LLAMA_TOKENS": "3"})
    assert path.read_text().splitlines()[0] == f"#!{sys.executable} -S"
    assert os.access(path, os.X_OK)
    assert binary_version(path) == "b11434-fake"


def test_list_devices_is_a_cpu_build_unless_told_otherwise(tmp_path: Path) -> None:
    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "list-devices"
    cpu = write_fake_binary(tmp_path / "cpu")
    assert list_devices(cpu) == []
    recorded = fixtures / "cpu-b11434.txt"  # what the real CPU build printed
    assert parse_list_devices(recorded.read_text()) == []
    cuda = write_fake_binary(
        tmp_path / "cuda", env={"FAKE_LLAMA_DEVICES": str(fixtures / "cuda-two.txt")}
    )
    assert [device.name for device in list_devices(cuda) or []] == ["CUDA0", "CUDA1"]


# --- lifecycle --------------------------------------------------------------------------------


def test_logs_like_the_real_server_and_becomes_healthy(spawn: Spawn, model: Path) -> None:
    proc = _ready(spawn, "-m", str(model))
    text = proc.stderr_text
    assert f"srv    load_model: loading model '{model}'" in text
    assert text.index("llama_server: model loaded") < text.index("llama_server: listening on")
    response = httpx.get(f"{proc.base_url}/health")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_health_is_503_while_loading_then_200(spawn: Spawn, model: Path) -> None:
    port = free_port()
    proc = spawn(
        "-m",
        str(model),
        "--port",
        str(port),
        # long enough that the first answer comes while loading on a loaded machine too
        env={"FAKE_LLAMA_LOAD_DELAY": "2", "FAKE_LLAMA_PROGRESS_INTERVAL": "0.1"},
    )
    url = f"http://127.0.0.1:{port}/health"
    loading = poll_until(lambda: _response(url), timeout=5, what="the fake to listen")
    assert (loading.status_code, loading.json()) == (503, LOADING_BODY)
    poll_until(lambda: True if _status(url) == 200 else None, timeout=10, what="ready")
    proc.wait_listening()
    progress = [line for line in proc.lines if "fake progress" in line]
    assert len(progress) >= 2
    assert proc.stderr_text.index("fake progress") < proc.stderr_text.index("model loaded")


def test_hang_load_never_gets_ready_and_sigterm_kills_it(spawn: Spawn, model: Path) -> None:
    port = free_port()
    proc = spawn("-m", str(model), "--port", str(port), env={"FAKE_LLAMA_HANG_LOAD": "1"})
    proc.wait_for_line("loading model", timeout=5)
    url = f"http://127.0.0.1:{port}/health"
    assert poll_until(lambda: _status(url), timeout=5) == 503
    # every endpoint is refused while loading, like the real server's middleware
    assert _status(f"http://127.0.0.1:{port}/v1/models") == 503
    # no handler is installed during load, exactly like llama-server: the signal kills it
    proc.signal(signal.SIGTERM)
    assert proc.wait_exit() == -signal.SIGTERM
    assert "model loaded" not in proc.stderr_text


def test_missing_model_exits_1_with_the_real_message(spawn: Spawn, tmp_path: Path) -> None:
    proc = spawn("-m", str(tmp_path / "absent.gguf"), "--port", "0")
    assert proc.wait_exit() == 1
    assert "exiting due to model loading error" in proc.stderr_text


def test_port_in_use_exits_1_with_the_real_message(spawn: Spawn, model: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = spawn("-m", str(model), "--port", str(taken.getsockname()[1]))
        assert proc.wait_exit() == 1
    assert "couldn't bind HTTP server socket" in proc.stderr_text


@pytest.mark.parametrize("code", [3, -signal.SIGSEGV])
def test_crash_at_start(spawn: Spawn, model: Path, code: int) -> None:
    proc = spawn("-m", str(model), env={"FAKE_LLAMA_CRASH_AT_START": str(code)})
    assert proc.wait_exit() == code
    assert proc.lines, "a crash happens right after a log line"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_when_ready_exits_0(spawn: Spawn, model: Path, signum: int) -> None:
    proc = _ready(spawn, "-m", str(model))
    proc.signal(signum)
    assert proc.wait_exit(timeout=5) == 0
    assert "cleaning up before exit" in proc.stderr_text


def test_ignore_sigterm_needs_sigkill(spawn: Spawn, model: Path) -> None:
    proc = _ready(spawn, "-m", str(model), env={"FAKE_LLAMA_IGNORE_SIGTERM": "1"})
    proc.signal(signal.SIGTERM)
    proc.signal(signal.SIGINT)
    # an ignored signal is discarded on delivery: an answer afterwards proves it survived
    assert httpx.get(f"{proc.base_url}/health").status_code == 200
    assert proc.process.poll() is None
    proc.signal(signal.SIGKILL)
    assert proc.wait_exit() == -signal.SIGKILL


def test_argv_log_records_argv_and_llama_env(spawn: Spawn, model: Path, tmp_path: Path) -> None:
    log = tmp_path / "argv.jsonl"
    env = {
        "FAKE_LLAMA_ARGV_LOG": str(log),
        "LLAMA_ARG_CTX_SIZE": "512",
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
    }
    first = _ready(spawn, "-m", str(model), "-c", "1024", env=env)
    second = _ready(spawn, "-m", str(model), env=env)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["pid"] for r in records] == [first.process.pid, second.process.pid]
    assert records[0]["argv"] == ["-m", str(model), "-c", "1024", "--port", "0"]
    assert records[0]["env"] == {"LLAMA_ARG_CTX_SIZE": "512"}
    assert records[0]["XDG_CONFIG_HOME"] == str(tmp_path / "xdg")


def test_fail_health_after(spawn: Spawn, model: Path) -> None:
    proc = _ready(spawn, "-m", str(model), env={"FAKE_LLAMA_FAIL_HEALTH_AFTER": "0.2"})
    url = f"{proc.base_url}/health"
    assert poll_until(lambda: 500 if _status(url) == 500 else None, timeout=5) == 500


def test_log_spam_is_written_at_start_and_per_request(spawn: Spawn, model: Path) -> None:
    proc = _ready(spawn, "-m", str(model), env={"FAKE_LLAMA_LOG_SPAM": "300000"})
    at_start = len(proc.stderr_text)
    assert at_start >= 300_000
    httpx.get(f"{proc.base_url}/health")
    poll_until(
        lambda: True if len(proc.stderr_text) >= at_start + 290_000 else None,
        timeout=5,
        what="per-request spam",
    )


# --- endpoints --------------------------------------------------------------------------------


def test_models_lists_the_smallest_alias_like_the_real_server(spawn: Spawn, model: Path) -> None:
    proc = _ready(spawn, "-m", str(model), "--alias", "tiny,other")
    body = httpx.get(f"{proc.base_url}/v1/models").json()
    assert body["object"] == "list"
    assert body["data"][0]["id"] == "other"
    assert body["data"][0]["aliases"] == ["other", "tiny"]
    assert httpx.get(f"{proc.base_url}/models").json()["data"][0]["id"] == "other"
    reply = httpx.post(f"{proc.base_url}/completion", json={"prompt": "x", "model": "tiny"})
    assert reply.json()["model"] == "other"  # the server's own id, not the requested name
    plain = _ready(spawn, "-m", str(model))
    assert httpx.get(f"{plain.base_url}/v1/models").json()["data"][0]["id"] == str(model)


def test_chat_with_the_openai_client_echoes_the_request(spawn: Spawn, model: Path) -> None:
    proc = _ready(spawn, "-m", str(model), "--alias", "tiny", env={"FAKE_LLAMA_TOKENS": "4"})
    client = openai.OpenAI(base_url=f"{proc.base_url}/v1", api_key="sk-test")
    reply = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-agent": "coder", "x-request-id": "r1"},
    )
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens == 4
    x_fake = (reply.model_extra or {})["x_fake"]
    assert x_fake["pid"] == proc.process.pid
    assert x_fake["request"]["messages"] == [{"role": "user", "content": "hi"}]
    assert x_fake["headers"] == {
        "authorization": "Bearer sk-test",
        "x-agent": "coder",
        "x-request-id": "r1",
    }
    capped = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert capped.choices[0].finish_reason == "length"


def test_each_inference_request_logs_its_slot_task_like_the_real_server(
    spawn: Spawn, model: Path
) -> None:
    proc = _ready(spawn, "-m", str(model), env={"FAKE_LLAMA_TOKENS": "2"})
    before = len(proc.lines)
    httpx.post(f"{proc.base_url}/completion", json={"prompt": "abc"})
    httpx.post(
        f"{proc.base_url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "x"}]},
    )
    new = poll_until(
        lambda: proc.lines[before:] if len(proc.lines) >= before + 4 else None, timeout=5
    )
    assert [line.split(" ", 2)[2] for line in new] == [
        "slot launch_slot_: id  0 | task 0 | processing task",
        "slot      release: id  0 | task 0 | stop processing: n_past = 5, truncated = 0",
        "slot launch_slot_: id  0 | task 1 | processing task",
        "slot      release: id  0 | task 1 | stop processing: n_past = 3, truncated = 0",
    ]


def test_chat_stream_shape(spawn: Spawn, model: Path) -> None:
    proc = _ready(spawn, "-m", str(model), env={"FAKE_LLAMA_TOKENS": "3"})
    client = openai.OpenAI(base_url=f"{proc.base_url}/v1", api_key="x")
    chunks = list(
        client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].delta.content for c in chunks[1:4]] == ["t0 ", "t1 ", "t2 "]
    assert chunks[4].choices[0].finish_reason == "stop"
    assert chunks[5].choices == [] and chunks[5].usage is not None
    assert chunks[5].usage.completion_tokens == 3
    with httpx.stream(
        "POST",
        f"{proc.base_url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "x"}], "stream": True},
    ) as response:
        assert response.headers["content-type"] == "text/event-stream"
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]"


def test_completions_native_and_messages(spawn: Spawn, model: Path) -> None:
    proc = _ready(spawn, "-m", str(model), env={"FAKE_LLAMA_TOKENS": "2"})
    client = openai.OpenAI(base_url=f"{proc.base_url}/v1", api_key="x")
    assert client.completions.create(model="m", prompt="hi").choices[0].text == "t0 t1 "
    streamed = client.completions.create(model="m", prompt="hi", stream=True)
    assert "".join(c.choices[0].text for c in streamed) == "t0 t1 "

    native = httpx.post(f"{proc.base_url}/completion", json={"prompt": "hi"}).json()
    assert (native["content"], native["stop"]) == ("t0 t1 ", True)

    messages = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
    reply = httpx.post(f"{proc.base_url}/v1/messages", json=messages).json()
    assert reply["type"] == "message"
    assert reply["content"] == [{"type": "text", "text": "t0 "}]
    assert reply["stop_reason"] == "max_tokens"
    with httpx.stream(
        "POST", f"{proc.base_url}/v1/messages", json={**messages, "stream": True}
    ) as response:
        kinds = [
            line.removeprefix("event: ")
            for line in response.iter_lines()
            if line.startswith("event: ")
        ]
    assert kinds == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_embeddings_need_the_flag_like_the_real_server(spawn: Spawn, model: Path) -> None:
    plain = _ready(spawn, "-m", str(model))
    assert httpx.post(f"{plain.base_url}/v1/embeddings", json={"input": "a"}).status_code == 501
    proc = _ready(spawn, "-m", str(model), "--embeddings")
    client = openai.OpenAI(base_url=f"{proc.base_url}/v1", api_key="x")
    result = client.embeddings.create(model="m", input=["a", "b"])  # base64 by default
    assert len(result.data) == 2 and len(result.data[0].embedding) == 8


def test_tokenize_roundtrip(spawn: Spawn, model: Path) -> None:
    proc = _ready(spawn, "-m", str(model))
    tokens = httpx.post(f"{proc.base_url}/tokenize", json={"content": "héllo"}).json()["tokens"]
    text = httpx.post(f"{proc.base_url}/detokenize", json={"tokens": tokens}).json()["content"]
    assert text == "héllo"


def test_metrics_only_with_the_flag(spawn: Spawn, model: Path) -> None:
    plain = _ready(spawn, "-m", str(model))
    refused = httpx.get(f"{plain.base_url}/metrics")
    assert refused.status_code == 501
    assert refused.json()["error"]["type"] == "not_supported_error"
    proc = _ready(spawn, "-m", str(model), "--metrics")
    httpx.post(f"{proc.base_url}/completion", json={"prompt": "abc"})
    text = httpx.get(f"{proc.base_url}/metrics").text
    assert "# TYPE llamacpp:prompt_tokens_total counter" in text
    assert "llamacpp:prompt_tokens_total 3" in text
    assert "llamacpp:requests_processing 0" in text


def test_api_key_guards_everything_but_health(spawn: Spawn, model: Path) -> None:
    proc = _ready(spawn, "-m", str(model), "--api-key", "k1")
    assert httpx.get(f"{proc.base_url}/health").status_code == 200
    assert httpx.get(f"{proc.base_url}/v1/models").status_code == 401
    ok = httpx.get(f"{proc.base_url}/v1/models", headers={"Authorization": "Bearer k1"})
    assert ok.status_code == 200


def test_unknown_path_is_404(spawn: Spawn, model: Path) -> None:
    proc = _ready(spawn, "-m", str(model))
    response = httpx.get(f"{proc.base_url}/nope")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


# --- stats, cancellation, crashes ------------------------------------------------------------


def _stats(proc: ServerProcess) -> dict[str, int]:
    result: dict[str, int] = httpx.get(f"{proc.base_url}/x-fake/stats").json()
    return result


def test_client_disconnect_is_counted_as_cancelled(spawn: Spawn, model: Path) -> None:
    proc = _ready(
        spawn, "-m", str(model), env={"FAKE_LLAMA_TOKENS": "200", "FAKE_LLAMA_STREAM_DELAY": "0.02"}
    )
    body = {"messages": [{"role": "user", "content": "x"}], "stream": True}
    with httpx.stream("POST", f"{proc.base_url}/v1/chat/completions", json=body) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        assert _stats(proc) == {"requests": 1, "active": 1, "cancelled": 0}
    poll_until(
        lambda: True if _stats(proc)["cancelled"] == 1 else None,
        timeout=5,
        what="the fake to notice the disconnect",
    )
    assert _stats(proc) == {"requests": 1, "active": 0, "cancelled": 1}


#: more streams than ``select`` can watch (FD_SETSIZE is 1024)
MANY_STREAMS = 1100


def test_holds_more_streams_than_select_can_watch(spawn: Spawn, model: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < MANY_STREAMS + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    proc = _ready(
        spawn,
        "-m",
        str(model),
        # one event a second per stream: 1100 streams stay open for ten minutes at ~1100
        # wake-ups a second in all. At 0.05 s (22,000 a second) a loaded 2-core CI runner
        # could not answer the last connections within the test's timeout.
        env={"FAKE_LLAMA_TOKENS": "600", "FAKE_LLAMA_STREAM_DELAY": "1.0"},
    )
    assert proc.port is not None
    body = b'{"messages":[{"role":"user","content":"x"}],"stream":true}'
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )
    streams: list[socket.socket] = []
    try:
        for _ in range(MANY_STREAMS):
            sock = socket.create_connection(("127.0.0.1", proc.port), timeout=30)
            sock.sendall(request)
            streams.append(sock)
        for sock in streams:  # every stream is answered and flowing
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        assert _stats(proc)["active"] == MANY_STREAMS
        streams.pop().close()  # the fake's descriptor for this one is past 1024
        poll_until(
            lambda: True if _stats(proc)["cancelled"] == 1 else None,
            timeout=30,
            what="the fake to notice the disconnect at its next event",
        )
    finally:
        for sock in streams:
            sock.close()


def test_crash_after_requests(spawn: Spawn, model: Path) -> None:
    proc = _ready(spawn, "-m", str(model), env={"FAKE_LLAMA_CRASH_AFTER_REQUESTS": "2"})
    body = {"prompt": "x"}
    assert httpx.post(f"{proc.base_url}/completion", json=body).status_code == 200
    assert httpx.post(f"{proc.base_url}/completion", json=body).status_code == 200
    assert proc.wait_exit() == -signal.SIGKILL


def test_crash_mid_stream(spawn: Spawn, model: Path) -> None:
    proc = _ready(
        spawn,
        "-m",
        str(model),
        env={"FAKE_LLAMA_CRASH_AFTER_REQUESTS": "1", "FAKE_LLAMA_CRASH_MID_STREAM": "1"},
    )
    body = {"messages": [{"role": "user", "content": "x"}], "stream": True}
    received: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", f"{proc.base_url}/v1/chat/completions", json=body) as response,
    ):
        received.extend(line for line in response.iter_lines() if line)
    assert received, "the stream started before the crash"
    assert "data: [DONE]" not in received
    assert proc.wait_exit() == -signal.SIGKILL


def test_chunked_request_bodies_are_read(spawn: Spawn, model: Path) -> None:
    # a proxy that streams the client's body upstream sends it chunked
    proc = _ready(spawn, "-m", str(model))
    payload = json.dumps({"prompt": "chunked"}).encode()

    def pieces() -> Iterator[bytes]:
        yield payload[:5]
        yield payload[5:]

    with httpx.Client() as client:
        response = client.post(f"{proc.base_url}/completion", content=pieces())
        assert response.json()["x_fake"]["request"] == {"prompt": "chunked"}
        # the keep-alive connection is still in step for a following request
        assert client.get(f"{proc.base_url}/health").status_code == 200
