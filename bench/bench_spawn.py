"""What a sidecar spawn costs the event loop: how long every other task (every proxied stream)
waits while ``llamasup.sidecars.process.spawn`` starts a child.

In a process that has imported the whole service (so the heap a ``fork()`` must copy is the
front's), each round spawns the real llama-server (``--version``: it exits at once) through
``spawn`` and measures:

* stall: from the call to the moment the loop runs its next callback (the loop is blocked
  for all of it: fork or vfork, and the wait until the child has exec'd);
* exists: from the call until the transport reports the child (``connection_made``).

Ways, interleaved round by round (rotated), on both event loops:

* ``popen+setpriv``: the default on Linux: ``subprocess.Popen`` on the loop thread (vfork, no
  ``preexec_fn``), ``setpriv --pdeathsig KILL --`` in front, pipes and a pidfd on the loop;
* ``loop+setpriv``: the same child through ``loop.subprocess_exec`` (before: libuv's spawn,
  which forks, under uvloop);
* ``popen+preexec``: the fallback without setpriv (a ``preexec_fn`` forces a fork);
* ``loop+bare``: ``loop.subprocess_exec`` with no PDEATHSIG at all (the loop's own floor).

Usage: ``python bench/bench_spawn.py [--rounds 200] [--binary PATH]``
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
    spawner, method = way.split("+")
    process.PREFER_POPEN = spawner == "popen"
    process.PREFER_SETPRIV = method == "setpriv"
    child = _Child(time.perf_counter())
    stalled: list[float] = []
    loop.call_soon(lambda: stalled.append(time.perf_counter() - child.began))
    if method == "bare":
        transport, _ = await loop.subprocess_exec(
            lambda: child, *argv, stdout=-3, stderr=-3, start_new_session=True
        )
    else:
        transport, _ = await process.spawn(argv, os.environ, lambda: child)
    await child.done
    transport.close()
    return stalled[0], child.exists


WAYS = ["popen+setpriv", "loop+setpriv", "popen+preexec", "loop+bare"]


async def _measure(argv: list[str], rounds: int) -> dict[str, list[tuple[float, float]]]:
    results: dict[str, list[tuple[float, float]]] = {way: [] for way in WAYS}
    for way in WAYS:  # warm-up: the setpriv check, first imports
        await _once(argv, way)
    for index in range(rounds):
        turn = index % len(WAYS)
        for way in WAYS[turn:] + WAYS[:turn]:
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
