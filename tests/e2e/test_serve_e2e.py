"""``llamasup serve`` as a real process in front of real llama-servers on the tiny model.

Everything goes through the front: the ``openai`` client for inference, ``/api/status`` for
which sidecars exist, ``/metrics`` for the re-exposed llama-server series, and signals for
shutdown. The model writes gibberish: assertions are on shapes and lifecycle, not content.
"""

from __future__ import annotations

import itertools
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from e2e.serve_process import Served, serving

pytestmark = pytest.mark.e2e

#: sidecar port slices for these tests (the service tests use 23100+, sidecar tests 22100+)
_PORTS = itertools.count(24100, 10)


def write_profile(
    path: Path,
    binary: Path,
    model: Path,
    state_dir: Path,
    *,
    two_args: str = "[]",
    base_args: str = "[--ctx-size, 512, --parallel, 1, --metrics]",
    server_extra: str = "",
) -> None:
    first = next(_PORTS)
    text = f"""\
version: 1
server:
  binary: {binary}
  ports: {first}-{first + 9}
  state_dir: {state_dir}
  start_timeout: 60s
  base_args: {base_args}
{server_extra}models:
  one:
    path: {model}
    preload: true
  two:
    path: {model}
    preload: true
    args: {two_args}
agents:
  greedy: --temp 0 --top-k 1 --seed 1
  bigctx: --ctx-size 1024
"""
    # write then rename: the watcher must never see a half-written file
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(text, encoding="utf-8")
    staging.replace(path)


def _ready(served: Served, model: str) -> list[dict[str, Any]] | None:
    rows = served.sidecars(model)
    return rows if rows and all(r["state"] == "ready" for r in rows) else None


def _flag_value(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def test_serve_routes_agents_hot_reloads_and_exits_cleanly(
    tmp_path: Path, llama_server_bin: Path, tiny_model: Path
) -> None:
    profile_dir = tmp_path / "profiles"
    profile_dir.mkdir()
    profile = profile_dir / "llamasup.yaml"
    state = tmp_path / "state"
    write_profile(profile, llama_server_bin, tiny_model, state)
    with serving(profile_dir) as served:
        # both preloaded sidecars come up without any request
        (first_one,) = served.wait_for("one ready", lambda: _ready(served, "one"))
        (first_two,) = served.wait_for("two ready", lambda: _ready(served, "two"))
        assert served.status()["listen"] == served.url

        client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="x", max_retries=0)
        messages: list[Any] = [{"role": "user", "content": "hello"}]

        reply = client.chat.completions.create(model="one", messages=messages, max_tokens=8)
        assert reply.object == "chat.completion"
        assert reply.model == "one"
        assert reply.choices[0].message.role == "assistant"
        assert isinstance(reply.choices[0].message.content, str)
        assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 8

        chunks = list(
            client.chat.completions.create(
                model="one",
                messages=messages,
                max_tokens=6,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        # llama-server does not always send a role-only first chunk (measured: ~1 in 8)
        assert all(c.choices[0].delta.role in (None, "assistant") for c in chunks if c.choices)
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in {"stop", "length"}
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert 0 < chunks[-1].usage.completion_tokens <= 6

        # request-time flags only: the same process, sampling folded into the request body
        greedy = [
            client.chat.completions.create(
                model="one@greedy", messages=messages, max_tokens=16
            ).choices[0]
            for _ in range(2)
        ]
        assert greedy[0].message.content == greedy[1].message.content
        assert greedy[0].finish_reason == greedy[1].finish_reason
        (shared,) = served.sidecars("one")
        assert (shared["key"], shared["pid"]) == (first_one["key"], first_one["pid"])
        assert "greedy" in shared["agents"]
        for sampling_flag in ("--temp", "--top-k", "--seed"):
            assert sampling_flag not in shared["argv"]

        # a load-time flag: a second sidecar of the same model
        big = client.chat.completions.create(model="one@bigctx", messages=messages, max_tokens=4)
        assert big.choices[0].message.role == "assistant"
        rows = {r["key"]: r for r in served.sidecars("one")}
        assert len(rows) == 2, rows
        (big_key,) = set(rows) - {first_one["key"]}
        assert rows[big_key]["agents"] == ["bigctx"]
        assert rows[big_key]["pid"] not in (first_one["pid"], first_two["pid"])
        assert _flag_value(rows[big_key]["argv"], "--ctx-size") == "1024"
        assert _flag_value(rows[first_one["key"]]["argv"], "--ctx-size") == "512"
        one_pids = {r["pid"] for r in rows.values()}

        # hot reload: only the edited model's sidecar is replaced
        write_profile(profile, llama_server_bin, tiny_model, state, two_args="[--ctx-size, 256]")

        def two_replaced() -> dict[str, Any] | None:
            rows = _ready(served, "two")
            if rows and len(rows) == 1 and rows[0]["pid"] != first_two["pid"]:
                return rows[0]
            return None

        new_two = served.wait_for("two's sidecar replaced", two_replaced)
        assert new_two["key"] != first_two["key"]
        assert _flag_value(new_two["argv"], "--ctx-size") == "256"
        assert {r["pid"] for r in served.sidecars("one")} == one_pids
        status = served.status()
        assert status["profiles"]["last_reload"]["result"] == "ok"
        assert status["profiles"]["last_reload"]["trigger"] != "startup"

        metrics = httpx.get(f"{served.url}/metrics", timeout=10, trust_env=False)
        assert metrics.status_code == 200
        llamacpp = [line for line in metrics.text.splitlines() if line.startswith("llamacpp:")]
        assert any('model="one"' in line for line in llamacpp), metrics.text[:2000]
        assert any(
            line.startswith("llamacpp:prompt_tokens_total{") and 'model="one"' in line
            for line in llamacpp
        )

        served.status()  # remember every sidecar pid before stopping
        assert len(served.seen_pids) >= 4  # one, one@bigctx, two, the replaced two
        stopped = served.stop(signal.SIGTERM, timeout=30)
        assert stopped.code == 0, served.stderr_tail()
        assert stopped.seconds < 30
        assert stopped.left == []
        assert "shutting down" in served.process.stderr_text


def test_second_signal_forces_a_shutdown_with_a_stream_in_flight(
    tmp_path: Path, llama_server_bin: Path, tiny_model: Path
) -> None:
    profile_dir = tmp_path / "profiles"
    profile_dir.mkdir()
    # context shift: generation goes on until max_tokens instead of ending at a full context;
    # a long stop_grace: with one signal the shutdown waits for the stream to drain (here
    # about 11 s, when uvicorn's graceful-shutdown timeout cancels it)
    write_profile(
        profile_dir / "llamasup.yaml",
        llama_server_bin,
        tiny_model,
        tmp_path / "state",
        base_args="[--ctx-size, 512, --parallel, 1, --context-shift]",
        server_extra="  stop_grace: 20s\n",
    )
    with serving(profile_dir) as served:
        served.wait_for("one ready", lambda: _ready(served, "one"))
        client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="x", max_retries=0)
        received = threading.Event()
        outcome: list[object] = []

        def stream() -> None:
            try:
                for chunk in client.chat.completions.create(
                    model="one",
                    messages=[{"role": "user", "content": "write forever"}],
                    max_tokens=1_000_000,
                    stream=True,
                    # random weights emit the end-of-text token now and then
                    extra_body={"ignore_eos": True},
                ):
                    if chunk.choices and chunk.choices[0].delta.content:
                        received.set()
                outcome.append("finished")
            except Exception as exc:  # the connection is cut by the forced shutdown
                outcome.append(exc)
            finally:
                received.set()

        reader = threading.Thread(target=stream, name="long-stream", daemon=True)
        reader.start()
        assert received.wait(30), served.stderr_tail()
        assert not outcome, f"the stream ended before the signals: {outcome}"
        served.status()
        stopped = served.stop(signal.SIGTERM, signal.SIGINT, gap=0.5, timeout=10)
        reader.join(10)
        assert not reader.is_alive()
        assert stopped.code == 0, served.stderr_tail()
        assert stopped.seconds < 5, served.stderr_tail()
        assert stopped.left == []
        assert len(outcome) == 1 and isinstance(outcome[0], openai.APIError), outcome
        text = served.process.stderr_text
        assert "shutting down" in text
        assert "second signal" in text
