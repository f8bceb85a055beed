"""Cold-start overhead: what llamasup adds to a request that has to start its sidecar.

For each round the model's sidecar is unloaded, then one streamed chat request (max_tokens 1)
goes through the whole service (auth gate, proxy, reconciler demand, planner pass, supervisor
start, readiness polling, relay). Reported per round:

* cold TTFB: request sent -> first response byte, through llamasup;
* spawn -> ready: the sidecar's own start (process spawned -> llamasup saw ``/health`` 200),
  from its status;
* warm TTFB direct: the same request sent straight to the now-ready sidecar (the generation
  part of the cold request);
* overhead = cold TTFB - spawn->ready - warm direct TTFB (goal: <= 50 ms median).

Runs the real llama-server on the tiny generated model. Usage:
``python bench/bench_coldstart.py [--rounds N] [--binary PATH] [--write]``; ``--write`` replaces
the ``## Cold-start overhead`` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from llamasup.profiles.load import load_profiles
from llamasup.runtime.locate import resolve_binary
from llamasup.service.app import Service
from llamasup.service.front_server import FrontServer
from llamasup.service.uvicorn_settings import uvicorn_config
from llamasup.testing.process import free_port
from llamasup.testing.tiny_model import tiny_model_path

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADING = "## Cold-start overhead"
BODY = {
    "model": "tiny",
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 1,
    "stream": True,
}


async def _ttfb(
    client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None
) -> float:
    began = time.perf_counter()
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


async def measure(binary: Path, rounds: int) -> list[tuple[float, float, float]]:
    work = Path(tempfile.mkdtemp(prefix="llamasup-coldstart-"))
    (work / "profiles.yaml").write_text(
        "version: 1\n"
        "server:\n"
        f"  binary: {binary}\n"
        "  ports: 24100-24120\n"
        f"  state_dir: {work / 'state'}\n"
        "  base_args: [--ctx-size, 512, --parallel, 1]\n"
        "models:\n"
        f"  tiny: {{path: {tiny_model_path()}}}\n"
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
    try:
        async with httpx.AsyncClient(timeout=60, trust_env=False) as client:
            front = f"http://127.0.0.1:{port}"
            await _ttfb(client, f"{front}/v1/chat/completions")  # warm imports and caches
            for _ in range(rounds):
                for sidecar in service.supervisor.sidecars():
                    await service.reconciler.unload(sidecar.key)
                await asyncio.sleep(0.2)
                cold = await _ttfb(client, f"{front}/v1/chat/completions")
                status = service.supervisor.statuses()[0].sidecar
                assert status.started_at is not None and status.ready_at is not None
                spawn_to_ready = status.ready_at - status.started_at
                direct = f"http://127.0.0.1:{status.port}/v1/chat/completions"
                [sidecar] = service.supervisor.sidecars()
                key = {k.decode(): v.decode() for k, v in sidecar.auth_headers}
                warm = statistics.median([await _ttfb(client, direct, key) for _ in range(3)])
                results.append((cold, spawn_to_ready, warm))
    finally:
        server.should_exit = True
        await service.close(10)
        await serving
    return results


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return f"{statistics.median(values) * 1000:.1f} ms (p90 {p90 * 1000:.1f})"


def report(results: list[tuple[float, float, float]], binary: Path, rounds: int) -> str:
    cold = [r[0] for r in results]
    spawn = [r[1] for r in results]
    warm = [r[2] for r in results]
    overhead = [c - s - w for c, s, w in results]
    load = os.getloadavg()[0]
    return (
        f"{HEADING}\n\n"
        f"`python bench/bench_coldstart.py --rounds {rounds} --write` on {platform.system()} "
        f"{platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"load average {load:.2f} at the end; real llama-server (`{binary}`), tiny generated "
        "model, `-c 512 -np 1`. Each round unloads the sidecar, then sends one streamed chat "
        "request (`max_tokens: 1`) through the whole service.\n\n"
        "| measure | median (p90) |\n| --- | --- |\n"
        f"| cold request, sent -> first byte | {_ms(cold)} |\n"
        f"| sidecar spawn -> ready (its own start) | {_ms(spawn)} |\n"
        f"| warm request direct to the sidecar, first byte | {_ms(warm)} |\n"
        f"| **llamasup overhead** = cold - spawn->ready - warm direct | **{_ms(overhead)}** |\n\n"
        "The overhead is demand registration, one planner pass, the supervisor's start path "
        "(port pick, spawn from the reaper thread), the readiness poll's lag and the proxy's "
        "relay; the goal is <= 50 ms.\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--binary", type=Path)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    binary = args.binary or resolve_binary(None, os.environ).path
    results = asyncio.run(measure(binary, args.rounds))
    text = report(results, binary, args.rounds)
    print(text)
    if args.write:
        current = RESULTS.read_text()
        if HEADING in current:
            head, _, rest = current.partition(HEADING)
            tail = rest.partition("\n## ")
            current = head + text + (("\n## " + tail[2]) if tail[1] else "")
        else:
            current = current.rstrip("\n") + "\n\n" + text
        RESULTS.write_text(current)
    return 0


if __name__ == "__main__":
    sys.exit(main())
