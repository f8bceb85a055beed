"""Cold-start overhead: what llamasup adds to a request that has to start its sidecar, against
a hand-made floor.

Rounds alternate (order rotated) between:

* **llamasup**: the model's sidecar is unloaded, then one streamed chat request
  (``max_tokens: 1``) goes through the whole service on uvloop, as ``serve`` runs it (auth
  gate, proxy, reconciler demand, planner pass, supervisor start, readiness, relay);
* **floor**: what a person would write by hand: spawn the same llama-server with the same
  model and arguments (``subprocess.Popen``, output discarded), poll ``GET /health`` every
  5 ms until 200, then send the same request to it directly.

Each is timed from its first action (request sent / ``Popen`` called) to the first response
byte, by the same client on the same event loop. Reported: both distributions and the
median of the per-pair difference (llamasup minus the floor of the same pair); llamasup's
own spawn -> ready from its status. Runs the real llama-server on the tiny generated model.

Usage: ``python bench/bench_coldstart.py [--rounds N] [--binary PATH]``. To measure
another checkout of llamasup with this bench, put its ``src`` first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

import llamasup
from llamasup.profiles.load import load_profiles
from llamasup.runtime.locate import resolve_binary
from llamasup.service import event_loop
from llamasup.service.app import Service
from llamasup.service.front_server import FrontServer
from llamasup.service.uvicorn_settings import uvicorn_config
from llamasup.testing.process import free_port
from llamasup.testing.tiny_model import tiny_model_path

ARGS = ["--ctx-size", "512", "--parallel", "1"]
BODY = {
    "model": "tiny",
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 1,
    "stream": True,
}
#: the hand-made script's poll interval
FLOOR_POLL = 0.005


async def _first_byte(
    client: httpx.AsyncClient, url: str, began: float, headers: dict[str, str] | None = None
) -> float:
    """Send the request; seconds from ``began`` to its first response byte."""
    async with client.stream("POST", url, json=BODY, headers=headers) as response:
        chunks = response.aiter_raw()
        try:
            await anext(chunks)
        except StopAsyncIteration:
            raise RuntimeError(f"empty response ({response.status_code})") from None
        first = time.perf_counter() - began
        async for _chunk in chunks:
            pass
    if response.status_code != 200:
        raise RuntimeError(f"status {response.status_code}")
    return first


async def _health(port: int) -> int | None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return None
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        line = await reader.readline()
    finally:
        writer.close()
    parts = line.split()
    return int(parts[1]) if len(parts) > 1 else None


async def floor_round(client: httpx.AsyncClient, binary: Path, model: Path) -> float:
    """The hand-made floor: spawn, poll /health every 5 ms, request."""
    port = free_port()
    argv = [str(binary), "-m", str(model), *ARGS, "--host", "127.0.0.1", "--port", str(port)]
    began = time.perf_counter()
    child = subprocess.Popen(  # noqa: ASYNC220 - the hand-made script's spawn, timed
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while await _health(port) != 200:
            if child.poll() is not None:
                raise RuntimeError(f"the floor's server exited with {child.returncode}")
            await asyncio.sleep(FLOOR_POLL)
        return await _first_byte(client, f"http://127.0.0.1:{port}/v1/chat/completions", began)
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(child.wait, 10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


async def _unload(service: Service) -> None:
    sidecars = service.supervisor.sidecars()
    for sidecar in sidecars:
        await service.reconciler.unload(sidecar.key)  # returns once the process is reaped
    if any(sidecar.status().pid is not None for sidecar in service.supervisor.sidecars()):
        raise RuntimeError("a sidecar process outlived its unload")


async def measure(binary: Path, rounds: int) -> list[tuple[float, float, float]]:
    """Per round: (llamasup cold first byte, its spawn -> ready, floor cold first byte)."""
    work = Path(tempfile.mkdtemp(prefix="llamasup-coldstart-"))
    model = tiny_model_path()
    (work / "profiles.yaml").write_text(
        "version: 1\n"
        "server:\n"
        f"  binary: {binary}\n"
        "  ports: 24100-24120\n"
        f"  state_dir: {work / 'state'}\n"
        f"  base_args: [{', '.join(ARGS)}]\n"
        "models:\n"
        f"  tiny: {{path: {model}}}\n"
    )
    path = work / "profiles.yaml"
    service = Service(path, load_profiles(path, os.environ), watch=False)
    port = free_port()
    server = FrontServer(uvicorn_config(service.asgi, host="127.0.0.1", port=port, lifespan="off"))
    await service.start()
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            raise RuntimeError("uvicorn did not start")
        await asyncio.sleep(0.01)
    results: list[tuple[float, float, float]] = []
    front = f"http://127.0.0.1:{port}/v1/chat/completions"
    try:
        async with httpx.AsyncClient(timeout=60, trust_env=False) as client:
            # warm imports, caches, the binary's page cache and the client's connection
            await _first_byte(client, front, time.perf_counter())
            await floor_round(client, binary, model)
            for index in range(rounds):
                await _unload(service)
                pair: dict[str, float] = {}

                async def llamasup_round(pair: dict[str, float] = pair) -> None:
                    pair["cold"] = await _first_byte(client, front, time.perf_counter())
                    status = service.supervisor.statuses()[0].sidecar
                    assert status.started_at is not None and status.ready_at is not None
                    pair["spawn"] = status.ready_at - status.started_at

                async def floor(pair: dict[str, float] = pair) -> None:
                    pair["floor"] = await floor_round(client, binary, model)

                order = [llamasup_round, floor] if index % 2 == 0 else [floor, llamasup_round]
                for step in order:
                    await step()
                results.append((pair["cold"], pair["spawn"], pair["floor"]))
    finally:
        server.should_exit = True
        await service.close(10)
        with contextlib.suppress(Exception):
            await serving
    return results


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return f"{statistics.median(values) * 1000:.1f} ms (p90 {p90 * 1000:.1f})"


def _signed(values: list[float]) -> str:
    ordered = sorted(values)
    low, high = ordered[len(ordered) // 4], ordered[(3 * len(ordered)) // 4]
    return (
        f"{statistics.median(values) * 1000:+.1f} ms "
        f"(quartiles {low * 1000:+.1f} .. {high * 1000:+.1f})"
    )


def report(results: list[tuple[float, float, float]], binary: Path, loads: list[str]) -> str:
    cold = [r[0] for r in results]
    spawn = [r[1] for r in results]
    floor = [r[2] for r in results]
    overhead = [c - f for c, _, f in results]
    return (
        f"| measure | median |\n| --- | --- |\n"
        f"| llamasup: cold request, sent -> first byte | {_ms(cold)} |\n"
        f"| floor: Popen -> 5 ms /health poll -> request -> first byte | {_ms(floor)} |\n"
        f"| **llamasup minus the floor, per pair** | **{_signed(overhead)}** |\n"
        f"| llamasup's sidecar spawn -> ready (its status) | {_ms(spawn)} |\n\n"
        f"{len(results)} pairs; llamasup from `{Path(llamasup.__file__).parent}`; "
        f"`{binary}`; {platform.system()} {platform.machine()}, Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs; /proc/loadavg before "
        f"`{loads[0]}`, after `{loads[1]}`.\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--binary", type=Path)
    args = parser.parse_args()
    binary = args.binary or resolve_binary(None, os.environ).path
    loads = [Path("/proc/loadavg").read_text().strip()]
    with event_loop.runner() as runner:
        print(f"event loop: {runner.run(_loop_name())}")
        results = runner.run(measure(binary, args.rounds))
    loads.append(Path("/proc/loadavg").read_text().strip())
    print(report(results, binary, loads))
    return 0


async def _loop_name() -> str:
    return event_loop.loop_name()


if __name__ == "__main__":
    sys.exit(main())
