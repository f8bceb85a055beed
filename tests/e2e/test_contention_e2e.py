"""Contention with real llama-server sidecars and the tiny model, default scheduling settings:
two models kept busy by open-loop clients never starve a third one, and 200 concurrent streams
over three models with room for two all complete, each answered by the model it asked for."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
from service_helpers import port_range, running_service

from llamasup.core import defaults
from llamasup.testing.poll import wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _profile(binary: Path, model: Path, state: Path) -> str:
    models = "\n".join(f"  {name}:\n    path: {model}" for name in ("a", "b", "c"))
    return f"""
version: 1
server:
  binary: {binary}
  ports: {port_range()}
  state_dir: {state}
  max_sidecars: 2
  start_timeout: 120s
  base_args: [--ctx-size, 256, --parallel, 2, --threads, 1]
models:
{models}
"""


def _body(model: str, tokens: int, *, stream: bool = False) -> dict[str, object]:
    # ignore_eos: the random tiny model may end early; the tests count requests, not words
    return {
        "model": model,
        "messages": [{"role": "user", "content": "go"}],
        "max_tokens": tokens,
        "ignore_eos": True,
        "stream": stream,
    }


async def test_two_busy_models_never_starve_a_third(
    tmp_path: Path, llama_server_bin: Path, tiny_model: Path
) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text(_profile(llama_server_bin, tiny_model, tmp_path / "state"))
    async with running_service(path, watch=False) as running:
        client = httpx.AsyncClient(base_url=running.url, timeout=120)
        stop = asyncio.Event()
        served = {"a": 0, "b": 0}

        async def keep_busy(model: str) -> None:
            """An open-loop client: a new request every 50 ms, whatever came back."""
            sent: list[asyncio.Task[httpx.Response]] = []
            while not stop.is_set():
                body = _body(model, 48)
                sent.append(asyncio.create_task(client.post("/v1/chat/completions", json=body)))
                await asyncio.sleep(0.05)  # the arrival rate of the workload, not a wait
            for reply in await asyncio.gather(*sent):
                assert reply.status_code == 200, reply.text
                assert reply.json()["model"] == model
                served[model] += 1

        loads = [asyncio.create_task(keep_busy(model)) for model in ("a", "b")]
        try:
            for model in ("a", "b"):  # both resident and busy before c asks
                reply = await client.post("/v1/chat/completions", json=_body(model, 4))
                assert reply.status_code == 200
            waits: list[float] = []
            for _ in range(2):
                # a and b are both back and busy: c must take room from one of them again
                await wait_for(
                    lambda: {"a", "b"} <= set(running.ready_pids()), timeout=60, what="a, b back"
                )
                began = time.monotonic()
                reply = await client.post("/v1/chat/completions", json=_body("c", 4))
                waits.append(time.monotonic() - began)
                assert reply.status_code == 200, reply.text
                assert reply.json()["model"] == "c"
        finally:
            stop.set()
            await asyncio.gather(*loads)
            await client.aclose()
        # max_wait, then the busy sidecar's requests in flight finish (a few short answers),
        # then c loads (well under a second): a generous margin for a loaded 2-core machine
        bound = defaults.MAX_WAIT + 15.0
        assert max(waits) < bound, waits
        assert served["a"] > 10 and served["b"] > 10, served
        stops = [
            action.reason
            for record in running.service.reconciler.status.recent
            for action in record.plan.stops
        ]
        assert "contention" in stops or "evicted-lru" in stops


async def test_two_hundred_streams_over_three_models_all_complete_from_their_model(
    tmp_path: Path, llama_server_bin: Path, tiny_model: Path
) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text(_profile(llama_server_bin, tiny_model, tmp_path / "state"))
    async with running_service(path, watch=False) as running:
        limits = httpx.Limits(max_connections=250, max_keepalive_connections=250)
        client = httpx.AsyncClient(base_url=running.url, timeout=300, limits=limits)

        async def stream(model: str) -> tuple[str, set[str], bool]:
            seen: set[str] = set()
            done = False
            body = _body(model, 8, stream=True)
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if line == "data: [DONE]":
                        done = True
                    elif line.startswith("data: "):
                        chunk = json.loads(line.removeprefix("data: "))
                        assert "error" not in chunk, chunk
                        seen.add(chunk["model"])
            return model, seen, done

        try:
            results = await asyncio.gather(*(stream(("a", "b", "c")[i % 3]) for i in range(200)))
        finally:
            await client.aclose()
        assert len(results) == 200
        for model, seen, done in results:
            assert done, model
            assert seen == {model}
        assert running.service.supervisor.statuses(), "sidecars still resident"
        assert len(running.service.supervisor.statuses()) <= 2
