"""Idle cost of the front: CPU, wake-ups and memory of a ``llamasup serve`` that serves nobody.

Starts ``python -m llamasup serve`` on a copy of the default profile set (``profiles/``; only
the listen address and the state directory differ), waits until its preloaded sidecars are
ready and the front has settled, then reads, over ``--seconds`` seconds with no request:

* CPU: ``utime + stime`` from ``/proc/PID/stat`` (10 ms ticks), and the exact run time summed
  over the front's threads from ``/proc/PID/task/*/schedstat`` (ns);
* wake-ups: voluntary context switches summed over the threads (each is a sleep that ended);
* memory: ``VmRSS`` of the front (sidecars are separate processes, not counted);
* the event loop and the thread count the front reports / has.

Several source trees can be compared in one run, interleaved (``--tree NAME=SRC``: the child
gets ``SRC`` first on ``PYTHONPATH``; default: this checkout). The figures are for the front
process only. Usage:
``python bench/bench_idle.py [--seconds 60] [--rounds 2] [--tree before=/tmp/base/src ...]``
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from llamasup.testing.process import free_port

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    ticks_ms: float
    run_ms: float
    wakeups: int
    rss_mb: float
    threads: int
    loop: str


def _profile(work: Path, port: int) -> Path:
    text = (ROOT / "profiles" / "llamasup.yaml").read_text()
    text = text.replace("listen: 127.0.0.1:8402", f"listen: 127.0.0.1:{port}")
    text = text.replace("server:\n", f"server:\n  state_dir: {work / 'state'}\n", 1)
    target = work / "profiles" / "llamasup.yaml"
    target.parent.mkdir(parents=True)
    target.write_text(text)
    return target


def _cpu(pid: int) -> tuple[float, float, int]:
    """(utime+stime in ms, run time of all threads in ms, voluntary switches of all threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = (int(fields[11]) + int(fields[12])) * 1000 / TICK
    run_ns = 0
    switches = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            run_ns += int((task / "schedstat").read_text().split()[0])
            status = (task / "status").read_text()
        except OSError:
            continue
        found = re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M)
        switches += int(found.group(1)) if found else 0
    return ticks, run_ns / 1e6, switches


def _status_field(pid: int, name: str) -> str:
    found = re.search(rf"^{name}:\s+(.*)$", Path(f"/proc/{pid}/status").read_text(), re.M)
    return found.group(1).strip() if found else ""


def measure(src: Path | None, seconds: float, settle: float) -> Sample:
    work = Path(tempfile.mkdtemp(prefix="llamasup-idle-"))
    port = free_port()
    profile = _profile(work, port)
    env = dict(os.environ)
    env.pop("LLAMASUP_PROFILES", None)
    if src is not None:
        env["PYTHONPATH"] = f"{src}{os.pathsep}{env.get('PYTHONPATH', '')}"
    argv = [sys.executable, "-m", "llamasup", "serve", str(profile)]
    log = (work / "serve.log").open("w")
    process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        status: dict[str, object] = {}
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError((work / "serve.log").read_text()[-3000:])
            try:
                status = httpx.get(f"{url}/api/status", timeout=5, trust_env=False).json()
            except httpx.HTTPError:
                time.sleep(0.1)
                continue
            rows = status.get("sidecars") or []
            assert isinstance(rows, list)
            if rows and all(row.get("state") == "ready" for row in rows):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("the sidecars did not become ready")
        info = status.get("process")
        loop = str(info.get("event_loop", "?")) if isinstance(info, dict) else "?"
        time.sleep(settle)  # let start-up work (imports, first passes, GC) finish
        ticks0, run0, switches0 = _cpu(process.pid)
        began = time.monotonic()
        time.sleep(seconds)
        ticks1, run1, switches1 = _cpu(process.pid)
        elapsed = time.monotonic() - began
        rss = int(_status_field(process.pid, "VmRSS").split()[0]) / 1024
        threads = int(_status_field(process.pid, "Threads"))
        per_minute = 60 / elapsed
        return Sample(
            (ticks1 - ticks0) * per_minute,
            (run1 - run0) * per_minute,
            round((switches1 - switches0) * per_minute),
            rss,
            threads,
            loop,
        )
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tree", action="append", default=[], help="NAME=SRC (repeatable)")
    args = parser.parse_args()
    trees: list[tuple[str, Path | None]] = [
        (name, Path(src)) for name, _, src in (t.partition("=") for t in args.tree)
    ] or [("this", None)]
    results: dict[str, list[Sample]] = {name: [] for name, _ in trees}
    print(f"load average before: {Path('/proc/loadavg').read_text().strip()}", flush=True)
    for round_ in range(args.rounds):
        for name, src in trees:
            sample = measure(src, args.seconds, args.settle)
            results[name].append(sample)
            print(f"round {round_ + 1} {name}: {sample}", flush=True)
    print(f"load average after: {Path('/proc/loadavg').read_text().strip()}")
    print(
        "\n| tree | event loop | CPU per idle minute (utime+stime) | run time per minute "
        "(schedstat) | wake-ups per minute | VmRSS | threads |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, samples in results.items():
        print(
            f"| {name} | {samples[0].loop} "
            f"| {statistics.median(s.ticks_ms for s in samples):.0f} ms "
            f"| {statistics.median(s.run_ms for s in samples):.1f} ms "
            f"| {statistics.median(s.wakeups for s in samples):.0f} "
            f"| {statistics.median(s.rss_mb for s in samples):.1f} MB "
            f"| {samples[0].threads} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
