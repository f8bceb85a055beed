"""Run a whole llamasup ``Service`` (proxy, control API, reconciler, watcher) on a real
socket inside the test's event loop, with the fake llama-server as every sidecar's binary.

    async with running_service(profile_dir) as running:
        response = await running.client.get("/api/status")
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from port_slices import PortSlices

from llamasup.profiles.load import load_profiles
from llamasup.reconcile.reconciler import Reconciler
from llamasup.service.app import Service
from llamasup.service.front_server import FrontServer
from llamasup.service.uvicorn_settings import uvicorn_config
from llamasup.testing.poll import wait_for
from llamasup.testing.process import free_port

#: 23100-24099: sidecar port slices private to these tests (see port_slices), away from the
#: sidecar tests' 22100-23059 and the defaults
_PORTS = PortSlices(23100, 10, 100)


def port_range() -> str:
    first, last = _PORTS.next()
    return f"{first}-{last}"


def fake_profile(
    fake_bin: Path,
    state_dir: Path,
    models: Mapping[str, str],
    *,
    server_extra: str = "",
    agents: str = "",
    ports: str | None = None,
    stop_grace: str = "2s",
) -> str:
    """A profile text: ``models`` maps id -> extra YAML lines of that model (indented by the
    caller's convention: plain ``key: value`` lines, indented here). Pass ``ports`` (from
    ``port_range()``) to keep the server section identical across edits of one profile."""
    lines = [
        "version: 1",
        "server:",
        f"  binary: {fake_bin}",
        f"  ports: {ports or port_range()}",
        f"  state_dir: {state_dir}",
        f"  stop_grace: {stop_grace}",
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


async def reconcile_passes(reconciler: Reconciler, count: int = 2) -> None:
    """Ask for ``count`` reconcile passes, one after the other, and wait until they are done.

    Passes never overlap, so of two the second began after this call: whatever that call's
    caller did before (an edit, a dry run, a refused request) has been seen by a whole pass.
    What a test then finds NOT to have happened did not happen in that pass, which is the
    proof a fixed sleep ("by now it would have...") only hopes for.
    """
    for number in range(count):
        passed = _passes_beyond(reconciler, reconciler.status.passes)
        reconciler.trigger()
        await wait_for(passed, what=f"reconcile pass {number + 1} of {count}")


def _passes_beyond(reconciler: Reconciler, done: int) -> Callable[[], bool]:
    return lambda: reconciler.status.passes > done


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (the supervisor reaps its children)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process reused the pid
        return True
    return True


def write_model_files(directory: Path, model_ids: list[str]) -> None:
    for model_id in model_ids:
        (directory / f"{model_id}.gguf").write_bytes(b"GGUF fake model")


@dataclass
class ProfileWriter:
    """One profile file of a test, rewritten as the test edits its models.

    ``write`` is a plain in-place write (truncate + write, like most programs);
    ``replace`` saves by rename (temp file + ``os.replace``, like many editors).
    """

    fake_bin: Path
    root: Path
    target: Path
    server_extra: str = ""
    ports: str = field(default_factory=port_range)
    stop_grace: str = "2s"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def text(self, models: Mapping[str, str]) -> str:
        write_model_files(self.root, list(models))
        return fake_profile(
            self.fake_bin,
            self.state_dir,
            models,
            server_extra=self.server_extra,
            ports=self.ports,
            stop_grace=self.stop_grace,
        )

    def write(self, models: Mapping[str, str]) -> None:
        self.target.write_text(self.text(models))

    def replace(self, models: Mapping[str, str]) -> None:
        temp = self.target.with_name(f".{self.target.name}.swp")
        temp.write_text(self.text(models))
        os.replace(temp, self.target)


async def chat(
    client: httpx.AsyncClient,
    model: str,
    *,
    max_tokens: int = 2,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One short non-streaming chat completion that must succeed; returns the answer's JSON.

    Short because the fake answers as slowly as its stream would (see FAKE_LLAMA_STREAM_DELAY).
    """
    body = {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "hi"}],
    }
    reply = await client.post("/v1/chat/completions", json=body, headers=headers)
    assert reply.status_code == 200, reply.text
    data: dict[str, Any] = reply.json()
    return data


def served_by(answer: Mapping[str, object]) -> int:
    """The pid of the fake llama-server that produced ``answer``."""
    x_fake = answer["x_fake"]
    assert isinstance(x_fake, dict)
    pid = x_fake["pid"]
    assert isinstance(pid, int)
    return pid


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

    def ready_pids(self) -> dict[str, int]:
        """Model id -> pid, for models whose only sidecar is ready (none draining beside it)."""
        by_model: dict[str, list[tuple[str, int | None]]] = {}
        for status in self.service.supervisor.statuses():
            sidecar = status.sidecar
            by_model.setdefault(sidecar.model, []).append((str(sidecar.state), sidecar.pid))
        return {
            model: rows[0][1]
            for model, rows in by_model.items()
            if len(rows) == 1 and rows[0][0] == "ready" and rows[0][1] is not None
        }

    def sidecar_pids(self, model: str) -> list[int]:
        """Every spawned process of ``model`` the supervisor holds (old and new during a swap)."""
        return [
            s.sidecar.pid
            for s in self.service.supervisor.statuses()
            if s.sidecar.model == model and s.sidecar.pid is not None
        ]


@asynccontextmanager
async def running_service(
    path: Path,
    *,
    watch: bool = True,
    environ: Mapping[str, str] | None = None,
    shutdown_timeout: float = 10.0,
    listen: tuple[str, int] | None = None,
    allow_public: bool = False,
) -> AsyncIterator[RunningService]:
    """``listen`` is the address the service believes it serves on (what ``--listen`` sets);
    the test server itself always binds 127.0.0.1."""
    env = dict(os.environ if environ is None else environ)
    service = Service(
        path,
        load_profiles(path, env),
        environ=env,
        watch=watch,
        listen=listen,
        allow_public=allow_public,
    )
    port = free_port()
    config = uvicorn_config(
        service.asgi,
        host="127.0.0.1",
        port=port,
        limits=lambda: service.front_limits,
        lifespan="off",
    )
    server = FrontServer(config)
    await service.start()
    serving = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: server.started or serving.done(), what="uvicorn to start")
        if not server.started:
            raise RuntimeError(f"uvicorn did not start on port {port}")
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=30.0, trust_env=False) as client:
            yield RunningService(service, url, client)
    finally:
        server.should_exit = True
        await service.close(shutdown_timeout)
        await asyncio.wait_for(serving, 15.0)
