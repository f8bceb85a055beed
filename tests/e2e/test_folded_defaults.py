"""Request-time flags folded into the body give the same output as the same flags given to
llama-server at load time: the proof that agents differing only in sampling may share one
sidecar. Real llama-server, tiny model, the official openai client, the whole service."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from service_helpers import port_range, running_service

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _profile(binary: Path, model: Path, state: Path) -> str:
    return f"""
version: 1
server:
  binary: {binary}
  ports: {port_range()}
  state_dir: {state}
  base_args: [--ctx-size, 512, --parallel, 1]
models:
  loaded:
    path: {model}
    args: [--temp, 0, --top-k, 1, --seed, 7]
  fold:
    path: {model}
agents:
  greedy: --temp 0 --top-k 1 --seed 7
  creative: --temp 1.5 --seed 3
"""


async def test_folded_and_load_time_greedy_agree(
    tmp_path: Path, llama_server_bin: Path, tiny_model: Path
) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text(_profile(llama_server_bin, tiny_model, tmp_path / "state"))
    async with running_service(path, watch=False) as running:
        client = openai.AsyncOpenAI(base_url=f"{running.url}/v1", api_key="unused")
        prompt: list[ChatCompletionMessageParam] = [
            {"role": "user", "content": "Count: one two three"}
        ]

        async def ask(model: str) -> str:
            reply = await client.chat.completions.create(
                model=model,
                messages=prompt,
                max_tokens=24,
                # greedy output is a fixed function of the weights, but whether the first pick is
                # end-of-text (an empty answer) may differ between CPUs' float rounding
                extra_body={"ignore_eos": True},
            )
            return reply.choices[0].message.content or ""

        load_time = await ask("loaded")
        folded = await ask("fold@greedy")
        assert folded == load_time
        assert len(load_time) > 0  # the tiny random model may answer in whitespace only
        # a second agent that differs only in sampling shares the folded one's sidecar
        await ask("fold@creative")  # its lease (and the agent it records) began before the reply
        statuses = running.service.supervisor.statuses()
        by_model: dict[str, list[str]] = {}
        for status in statuses:
            by_model.setdefault(status.sidecar.model, []).append(status.key)
        assert len(by_model["fold"]) == 1
        assert running.service.reconciler.registry.agents(by_model["fold"][0]) == [
            "creative",
            "greedy",
        ]
        assert len(by_model["loaded"]) == 1
        await client.close()
