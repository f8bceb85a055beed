"""What a sidecar spawn costs the event loop: how long every other task (every proxied stream)
waits while ``llamasup.sidecars.process.spawn`` starts a child.

In a process that has imported the whole service (so the heap a ``fork()`` must copy is the
front's), each round spawns the real llama-server (``--version``: it exits at once) through
``spawn`` and measures:

* stall: from the call to the moment the loop runs its next callback (the loop is blocked
  for all of it: fork or vfork, and the wait until the child has exec'd);
* exists: from the call until the transport reports the child (``connection_made``).

Ways, interleaved round by round: ``setpriv`` (``setpriv --pdeathsig KILL -- argv``, no
preexec_fn: vfork / libuv spawn), ``preexec`` (a preexec_fn calling prctl: forces fork) and
``bare`` (no PDEATHSIG at all: the floor). Both event loops. Usage:
``python bench/bench_spawn.py [--rounds 200] [--binary PATH]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import uvloop

import llamasup.service.serve  # noqa: F401 - the front's heap, as a fork copies it
from llamasup.runtime.locate import resolve_binary
from llamasup.sidecars import process


class _Child(asyncio.SubprocessProtocol):
    def __init__(self, began: float) -> None:
        self.began = began
        self.exists = 0.0
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.exists = time.perf_counter() - self.began

    def process_exited(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _once(argv: list[str], way: str) -> tuple[float, float]:
    loop = asyncio.get_running_loop()
    stalled: list[float] = []
    began = time.perf_counter()
    loop.call_soon(lambda: stalled.append(time.perf_counter() - began))
    process.PREFER_SETPRIV = way == "setpriv"
    if way == "bare":
        child = _Child(began)
        transport, _ = await loop.subprocess_exec(
            lambda: child, *argv, stdout=-3, stderr=-3, start_new_session=True
        )
    else:
        child = _Child(began)
        transport, _ = await process.spawn(argv, os.environ, lambda: child)
    await child.done
    transport.close()
    return stalled[0], child.exists


async def _measure(argv: list[str], rounds: int) -> dict[str, list[tuple[float, float]]]:
    ways = ["setpriv", "preexec", "bare"]
    results: dict[str, list[tuple[float, float]]] = {way: [] for way in ways}
    for way in ways:  # warm-up: the setpriv check, first imports
        await _once(argv, way)
    for index in range(rounds):
        for way in ways[index % 3 :] + ways[: index % 3]:
            results[way].append(await _once(argv, way))
    return results


def _row(loop: str, way: str, samples: list[tuple[float, float]]) -> str:
    stall = sorted(s for s, _ in samples)
    exists = sorted(e for _, e in samples)
    p90 = stall[int(len(stall) * 0.9)]
    return (
        f"| {loop} | {way} | {statistics.median(stall) * 1000:.2f} ms | {p90 * 1000:.2f} ms "
        f"| {statistics.median(exists) * 1000:.2f} ms |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--binary", type=Path)
    args = parser.parse_args()
    binary = args.binary or resolve_binary(None, os.environ).path
    argv = [str(binary), "--version"]
    print(f"load average before: {Path('/proc/loadavg').read_text().strip()}")
    print(f"VmRSS of this process: {_rss()} (the front's imports)")
    rows = []
    for loop in ("asyncio", "uvloop"):
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop if loop == "uvloop" else None)
        with runner:
            results = runner.run(_measure(argv, args.rounds))
        rows += [_row(loop, way, samples) for way, samples in results.items()]
    print(f"load average after: {Path('/proc/loadavg').read_text().strip()}")
    print("\n| loop | way | loop stall per spawn (median) | p90 | child exists after |")
    print("| --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    return 0


def _rss() -> str:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return line.split(":", 1)[1].strip()
    return "?"


if __name__ == "__main__":
    sys.exit(main())
