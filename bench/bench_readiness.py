"""Sidecar readiness benchmark: how late does llamasup notice that llama-server is ready?

For each round a fresh sidecar is started on a known port while an independent poller, in
its own process, hammers ``GET /health`` in a tight loop and records the monotonic time of
the server's first 200. Reported per round:

* readiness lag: llamasup marking the sidecar ready minus that first 200 (goal: <= 20 ms
  median). CLOCK_MONOTONIC is system-wide on Linux, so the two processes' clocks agree.
* start-to-ready: from ``ensure_ready()`` being called to llamasup marking it ready.
* server start-to-200: from the same call to the poller's first 200 (the server's own part).

Usage: ``python bench/bench_readiness.py [--rounds N] [--binary PATH] [--write]``; with
``--write`` the results replace the ``## Sidecar readiness`` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from results_file import write_section

from llamasup.runtime.locate import resolve_binary
from llamasup.sidecars.ports import PortAllocator, port_is_free
from llamasup.sidecars.sidecar import Sidecar
from llamasup.sidecars.types import SidecarSettings
from llamasup.spec.resolve import SidecarSpec
from llamasup.testing.tiny_model import tiny_model_path

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADING = "## Sidecar readiness"

# stdlib only, started before the sidecar: prints "armed", then the monotonic time of the
# first 200 it sees; sleeps 0.2 ms between attempts so it does not starve the server
POLLER = textwrap.dedent(
    """
    import socket, sys, time
    port = int(sys.argv[1])
    request = b"GET /health HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n"
    print("armed", flush=True)
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(request)
                head = sock.recv(64)
                seen = time.monotonic()
                if head.startswith(b"HTTP/1.1 200"):
                    print(repr(seen), flush=True)
                    break
        except OSError:
            pass
        time.sleep(0.0002)
    """
)


@dataclass(frozen=True)
class Round:
    lag_ms: float
    start_to_ready_ms: float
    server_start_to_200_ms: float


def free_port() -> int:
    for port in range(22900, 22999):
        if port_is_free("127.0.0.1", port):
            return port
    raise RuntimeError("no free port in 22900-22998")


async def one_round(binary: Path, model: Path, state_dir: Path, port: int) -> Round:
    settings = SidecarSettings(state_dir=state_dir, port_range=(port, port))
    spec = SidecarSpec(
        model="tiny",
        kind="llama-server",
        binary="llama-server",
        args=("-m", str(model), "-c", "512", "-np", "1"),
    )
    sidecar = Sidecar(spec, str(binary), settings, PortAllocator(port, port))
    poller = await asyncio.create_subprocess_exec(
        sys.executable, "-c", POLLER, str(port), stdout=subprocess.PIPE
    )
    assert poller.stdout is not None
    try:
        assert (await poller.stdout.readline()).strip() == b"armed"
        called = time.monotonic()
        await sidecar.ensure_ready()
        first_200 = float((await asyncio.wait_for(poller.stdout.readline(), 10)).decode())
        ready = sidecar.ready_monotonic
        assert ready is not None
        return Round(
            lag_ms=(ready - first_200) * 1000,
            start_to_ready_ms=(ready - called) * 1000,
            server_start_to_200_ms=(first_200 - called) * 1000,
        )
    finally:
        # not poller.kill(): Popen.send_signal polls first and so reaps behind the watcher
        try:
            await asyncio.wait_for(poller.wait(), 2.0)
        except TimeoutError:
            os.kill(poller.pid, signal.SIGKILL)
            await poller.wait()
        await sidecar.close()


def summarize(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"{statistics.median(values):.1f} | {p90:.1f} | {min(values):.1f} | {max(values):.1f}"


def table(rounds: list[Round]) -> list[str]:
    rows = [
        ("readiness lag (llamasup ready minus server's first 200)", [r.lag_ms for r in rounds]),
        ("start-to-ready (ensure_ready() → ready)", [r.start_to_ready_ms for r in rounds]),
        (
            "server start-to-200 (ensure_ready() → first 200)",
            [r.server_start_to_200_ms for r in rounds],
        ),
    ]
    return [
        "| measure (ms) | median | p90 | min | max |",
        "| --- | --- | --- | --- | --- |",
        *(f"| {name} | {summarize(values)} |" for name, values in rows),
    ]


def report(results: dict[str, list[Round]], binary: Path) -> str:
    rounds = len(next(iter(results.values())))
    lines = [
        HEADING,
        "",
        f"`python bench/bench_readiness.py --rounds {rounds} --write` on "
        f"{platform.system()} {platform.machine()}, Python {platform.python_version()}, "
        f"{_cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end; "
        f"real llama-server (`{binary}`), tiny generated model "
        "(`llamasup.testing.tiny_model`, `-c 512 -np 1`). The server's first 200 on `/health` "
        "is seen by an independent poller process (raw socket, 0.2 ms between attempts); "
        "times are CLOCK_MONOTONIC, shared by both processes.",
        "",
    ]
    for loop, loop_rounds in results.items():
        lines += [f"Event loop: {loop}", "", *table(loop_rounds), ""]
    lines += [
        "The poller stamps its first 200 when the answer arrives, so on a busy 2-core machine "
        "(server, poller and llamasup competing) either side can be a few ms late: a negative "
        "lag means llamasup's answer came back before the poller's.",
        "",
    ]
    return "\n".join(lines)


def _cpu_count() -> int:
    return os.cpu_count() or 0


async def run_rounds(count: int, binary: Path, model: Path, state_dir: Path) -> list[Round]:
    rounds = []
    for index in range(count):
        result = await one_round(binary, model, state_dir, free_port())
        rounds.append(result)
        print(
            f"round {index + 1:3d}: lag {result.lag_ms:6.2f} ms, "
            f"start-to-ready {result.start_to_ready_ms:6.1f} ms",
            flush=True,
        )
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument(
        "--binary", type=Path, help="llama-server (default: the one llamasup resolves)"
    )
    parser.add_argument("--loops", default="asyncio,uvloop", help="comma-separated")
    parser.add_argument("--write", action="store_true", help=f"update {RESULTS}")
    args = parser.parse_args()
    binary: Path = args.binary or resolve_binary(None, os.environ).path
    model = tiny_model_path()
    results: dict[str, list[Round]] = {}
    with tempfile.TemporaryDirectory(prefix="llamasup-bench-") as tmp:
        for loop in args.loops.split(","):
            print(f"-- {loop}")
            work = run_rounds(args.rounds, binary, model, Path(tmp) / "state")
            if loop == "uvloop":
                import uvloop  # noqa: PLC0415 - optional, only when asked for

                results[loop] = uvloop.run(work)
            else:
                results[loop] = asyncio.run(work)
    section = report(results, binary)
    print()
    print(section)
    if args.write:
        write_section(HEADING, section, RESULTS)
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
