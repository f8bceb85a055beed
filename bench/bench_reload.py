"""Edit-to-action latency: from writing a profile file to llamasup acting on it.

A ``Service`` (reconciler + profile watcher, no HTTP front: a reload never goes through it)
runs three preloaded models on the fake llama-server. Each round rewrites the profile with
a new ``--ctx-size`` for one model and measures, from just before the write:

* adopted: the reload that carries the new revision is recorded (``ProfileStore`` listener);
* spawned: the replacement sidecar has a process (its pid appears; polled every 1 ms);
* ready: the replacement is ready (the supervisor's READY event).

Each round waits until the world has settled (new sidecar ready, old one stopped, watcher
quiet) before the next edit, so rounds do not overlap. Goal: <= 250 ms median for adopted
and spawned. ``--mode write`` edits in place (truncate + write), ``rename`` saves by rename
(temp file + ``os.replace``), like many editors.

Usage: ``python bench/bench_reload.py [--rounds N] [--modes write,rename] [--write]``; with
``--write`` the results replace the ``## Edit-to-action latency`` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from results_file import write_section

from llamasup.profiles.load import load_profiles
from llamasup.profiles.store import ReloadResult
from llamasup.service.app import Service
from llamasup.service.watch import DEBOUNCE_MS, STEP_MS
from llamasup.sidecars.supervisor import SupervisorEvent
from llamasup.sidecars.types import SidecarEventKind
from llamasup.testing import write_fake_binary

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADING = "## Edit-to-action latency"
MODELS = ("alpha", "beta", "gamma")
EDITED = "beta"
PORTS = "23900-23919"


@dataclass(frozen=True)
class Round:
    adopted_ms: float
    spawned_ms: float
    ready_ms: float


def profile_text(root: Path, fake_bin: Path, ctx_size: int) -> str:
    lines = [
        "version: 1",
        "server:",
        f"  binary: {fake_bin}",
        f"  ports: {PORTS}",
        f"  state_dir: {root / 'state'}",
        "  stop_grace: 5s",
        "models:",
    ]
    for model in MODELS:
        lines += [f"  {model}:", f"    path: {root / (model + '.gguf')}", "    preload: true"]
        if model == EDITED:
            lines.append(f"    args: [--ctx-size, {ctx_size}]")
    return "\n".join(lines) + "\n"


def write_profile(path: Path, text: str, mode: str) -> None:
    if mode == "write":
        path.write_text(text)
    else:
        temp = path.with_name(f".{path.name}.tmp")
        temp.write_text(text)
        os.replace(temp, path)


class Observer:
    """Stamps (perf_counter) when the service adopts a revision and when a key gets ready."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.adopted: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        service.store.listeners.append(self._on_reload)
        service.supervisor.subscribe(self._on_event)

    def _on_reload(self, result: ReloadResult) -> None:
        if result.result == "ok" and result.revision is not None:
            self.adopted.setdefault(result.revision, time.perf_counter())

    def _on_event(self, event: SupervisorEvent) -> None:
        if event.kind is SidecarEventKind.READY:
            self.ready.setdefault(event.key, time.perf_counter())

    def edited_key(self) -> str | None:
        keys = [s.key for s in self.service.supervisor.statuses() if s.sidecar.model == EDITED]
        return keys[0] if len(keys) == 1 else None


async def until(predicate: Callable[[], bool], limit: float = 30.0, step: float = 0.001) -> None:
    deadline = time.perf_counter() + limit
    while not predicate():
        if time.perf_counter() > deadline:
            raise TimeoutError("benchmark condition not reached")
        await asyncio.sleep(step)


async def one_round(
    service: Service, observer: Observer, profile: Path, text: str, mode: str
) -> Round:
    revision_before = service.store.current.revision
    old_key = observer.edited_key()
    t0 = time.perf_counter()
    write_profile(profile, text, mode)
    spawned: list[float] = []

    def new_pid() -> bool:
        for status in service.supervisor.statuses():
            sidecar = status.sidecar
            if sidecar.model == EDITED and status.key != old_key and sidecar.pid is not None:
                spawned.append(time.perf_counter())
                return True
        return False

    await until(new_pid)
    revision = service.store.current.revision
    assert revision != revision_before, "a new sidecar without a new revision"
    new_key = next(
        s.key
        for s in service.supervisor.statuses()
        if s.sidecar.model == EDITED and s.key != old_key
    )
    await until(lambda: new_key in observer.ready, step=0.005)
    # settle: old process gone, nothing left to do, watcher quiet
    await until(lambda: observer.edited_key() == new_key, step=0.005)
    await asyncio.sleep(0.3)
    return Round(
        adopted_ms=(observer.adopted[revision] - t0) * 1000,
        spawned_ms=(spawned[0] - t0) * 1000,
        ready_ms=(observer.ready[new_key] - t0) * 1000,
    )


async def run(mode: str, rounds: int, warmup: int) -> list[Round]:
    with tempfile.TemporaryDirectory(prefix="llamasup-bench-reload-") as tmp:
        root = Path(tmp)
        fake_bin = write_fake_binary(root / "bin")
        for model in MODELS:
            (root / f"{model}.gguf").write_bytes(b"GGUF fake model")
        profiles = root / "profiles"
        profiles.mkdir()
        profile = profiles / "profiles.yaml"
        profile.write_text(profile_text(root, fake_bin, 1024))
        service = Service(profiles, load_profiles(profiles), watch=True)
        observer = Observer(service)
        await service.start()
        try:
            await until(lambda: len(observer.ready) == len(MODELS), step=0.01)
            await asyncio.sleep(0.3)  # the watcher is armed and quiet
            results = []
            for index in range(warmup + rounds):
                text = profile_text(root, fake_bin, 2048 + index)
                result = await one_round(service, observer, profile, text, mode)
                label = "warm-up" if index < warmup else f"round {index - warmup + 1:3d}"
                print(
                    f"{mode} {label}: adopted {result.adopted_ms:6.1f} ms, "
                    f"spawned {result.spawned_ms:6.1f} ms, ready {result.ready_ms:6.1f} ms",
                    flush=True,
                )
                if index >= warmup:
                    results.append(result)
            return results
        finally:
            await service.close(10.0)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summarize(values: list[float]) -> str:
    return (
        f"{statistics.median(values):.1f} | {percentile(values, 0.9):.1f} | "
        f"{min(values):.1f} | {max(values):.1f}"
    )


def table(rounds: list[Round]) -> list[str]:
    rows = [
        ("write → reload adopted", [r.adopted_ms for r in rounds]),
        ("write → new sidecar spawned", [r.spawned_ms for r in rounds]),
        ("write → new sidecar ready", [r.ready_ms for r in rounds]),
    ]
    return [
        "| measure (ms) | median | p90 | min | max |",
        "| --- | --- | --- | --- | --- |",
        *(f"| {name} | {summarize(values)} |" for name, values in rows),
    ]


MODE_NAMES = {"write": "in-place write (truncate + write)", "rename": "save by rename"}


def report(results: dict[str, list[Round]]) -> str:
    rounds = len(next(iter(results.values())))
    modes = ",".join(results)
    lines = [
        HEADING,
        "",
        f"`python bench/bench_reload.py --rounds {rounds} --modes {modes} --write` on "
        f"{platform.system()} {platform.machine()}, Python {platform.python_version()}, "
        f"{os.cpu_count() or 0} CPUs, load average {os.getloadavg()[0]:.2f} at the end. "
        f"A `Service` (reconciler + watcher, debounce {DEBOUNCE_MS} ms, step {STEP_MS} ms) "
        "serves a profile directory with three preloaded models on the fake llama-server; "
        f"each round writes the profile with a new `--ctx-size` for one model and times, from "
        "just before the write: the reload adopting the new revision (store listener), the "
        "replacement's pid appearing (polled every 1 ms) and its READY event. Rounds wait for "
        "the old sidecar to be gone and 0.3 s of quiet before the next edit; one warm-up "
        "round is not counted.",
        "",
    ]
    for mode, mode_rounds in results.items():
        lines += [f"Edit: {MODE_NAMES[mode]}", "", *table(mode_rounds), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--modes", default="write,rename", help="comma-separated")
    parser.add_argument("--write", action="store_true", help=f"update {RESULTS}")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # the fake model files are not GGUF: every start would warn that memory is unknown
    logging.getLogger("llamasup.memory.cache").setLevel(logging.ERROR)
    results = {
        mode: asyncio.run(run(mode, args.rounds, args.warmup)) for mode in args.modes.split(",")
    }
    section = report(results)
    print()
    print(section)
    if args.write:
        write_section(HEADING, section, RESULTS)
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
