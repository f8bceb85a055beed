"""Run a whole llamasup ``Service`` (proxy, control API, reconciler, watcher) on a real
socket inside the test's event loop, with the fake llama-server as every sidecar's binary.

    async with running_service(profile_dir) as running:
        response = await running.client.get("/api/status")
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from llamasup.app import Service
from llamasup.profiles import load_profiles
from llamasup.proxy_server import uvicorn_config
from llamasup.serve import _Server
from llamasup.testing.process import free_port

#: sidecar port slices private to these tests (below the ephemeral range, away from the
#: sidecar tests' 22100+ and the defaults)
_BASE_PORT = 23100
_SLICE = 10
_slices = itertools.count()


def port_range() -> str:
    first = _BASE_PORT + (next(_slices) % 80) * _SLICE
    return f"{first}-{first + _SLICE - 1}"


def fake_profile(
    fake_bin: Path,
    state_dir: Path,
    models: Mapping[str, str],
    *,
    server_extra: str = "",
    agents: str = "",
    ports: str | None = None,
) -> str:
    """A profile text: ``models`` maps id -> extra YAML lines of that model (indented by the
    caller's convention: plain ``key: value`` lines, indented here). Pass the ``ports`` of an
    earlier text to write an edit that changes only the models."""
    lines = [
        "version: 1",
        "server:",
        f"  binary: {fake_bin}",
        f"  ports: {ports or port_range()}",
        f"  state_dir: {state_dir}",
        "  stop_grace: 2s",
        "  start_timeout: 20s",
    ]
    lines += [f"  {line}" for line in server_extra.splitlines() if line.strip()]
    lines.append(models_yaml(state_dir, models).rstrip("\n"))
    if agents.strip():
        lines.append("agents:")
        lines += [f"  {line}" for line in agents.splitlines() if line.strip()]
    return "\n".join(lines) + "\n"


def models_yaml(state_dir: Path, models: Mapping[str, str]) -> str:
    """A ``models:`` section (a whole file of a profile directory, or part of one)."""
    lines = ["models:"]
    for model_id, body in models.items():
        lines.append(f"  {model_id}:")
        lines.append(f"    path: {state_dir.parent / (model_id + '.gguf')}")
        lines += [f"    {line}" for line in body.splitlines() if line.strip()]
    return "\n".join(lines) + "\n"


def write_model_files(directory: Path, model_ids: list[str]) -> None:
    for model_id in model_ids:
        (directory / f"{model_id}.gguf").write_bytes(b"GGUF fake model")


@dataclass
class RunningService:
    service: Service
    url: str
    client: httpx.AsyncClient

    async def status(self) -> dict[str, Any]:
        response = await self.client.get("/api/status")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def pids(self) -> dict[str, int | None]:
        """Model id -> pid of its (single) sidecar, for models with a running one."""
        return {s.sidecar.model: s.sidecar.pid for s in self.service.supervisor.statuses()}


@asynccontextmanager
async def running_service(
    path: Path,
    *,
    watch: bool = True,
    environ: Mapping[str, str] | None = None,
    shutdown_timeout: float = 10.0,
) -> AsyncIterator[RunningService]:
    env = dict(os.environ if environ is None else environ)
    service = Service(path, load_profiles(path, env), environ=env, watch=watch)
    port = free_port()
    server = _Server(uvicorn_config(service.asgi, host="127.0.0.1", port=port, lifespan="off"))
    await service.start()
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                raise RuntimeError(f"uvicorn did not start on port {port}")
            await asyncio.sleep(0.01)
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=30.0, trust_env=False) as client:
            yield RunningService(service, url, client)
    finally:
        server.should_exit = True
        await service.close(shutdown_timeout)
        await asyncio.wait_for(serving, 15.0)


async def wait_for(predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``predicate`` (every 20 ms) until it is truthy; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not reached within {timeout:g}s: {what or predicate}")
        await asyncio.sleep(0.02)


async def chat(client: httpx.AsyncClient, model: str, **headers: str) -> dict[str, Any]:
    """One chat completion through the front; asserts it answered 200."""
    reply = await client.post(
        "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        headers=headers,
    )
    assert reply.status_code == 200, reply.text
    data: dict[str, Any] = reply.json()
    return data
