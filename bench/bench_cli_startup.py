"""Start-up of the command line: wall time of a whole ``llamasup --version`` process.

``--version``, ``--help`` and a usage error should answer at once: building the parser imports
only the argument definitions (``llamasup.cli.commands``), never the service. This starts the
command RUNS times after WARMUP uncounted runs and prints min, median, p90 and max wall time,
the load average before and after, and how many modules the command imports (from
``python -X importtime -m llamasup ...``, the same interpreter).

Usage: ``python bench/bench_cli_startup.py [--runs N] [--warmup N] [-- ARG ...]`` (default
arguments ``--version``). To time another source tree, put its ``src`` first on
``PYTHONPATH``: the child processes inherit it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _script() -> str:
    beside = Path(sys.executable).with_name("llamasup")
    if beside.exists():
        return str(beside)
    found = shutil.which("llamasup")
    if found is None:
        sys.exit("no llamasup script beside this Python or on PATH: pip install -e .")
    return found


def _wall(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def _imported(args: list[str]) -> tuple[int, int]:
    """(all modules, llamasup modules) a fresh ``python -m llamasup ARGS`` imports."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "llamasup", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    names = [
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "imported package" not in line
    ]
    return len(names), sum(1 for n in names if n == "llamasup" or n.startswith("llamasup."))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("args", nargs="*", default=["--version"])
    options = parser.parse_args()
    argv = [_script(), *options.args]
    for _ in range(options.warmup):
        _wall(argv)
    load_before = os.getloadavg()
    times = sorted(_wall(argv) for _ in range(options.runs))
    load_after = os.getloadavg()
    total, ours = _imported(options.args)
    p90 = times[min(len(times) - 1, round(0.9 * (len(times) - 1)))]
    print(f"command: {' '.join(argv)}  (PYTHONPATH={os.environ.get('PYTHONPATH', '')!r})")
    print(f"runs: {options.runs} after {options.warmup} warm-up")
    print(
        f"wall ms: min {times[0] * 1e3:.1f}  median {statistics.median(times) * 1e3:.1f}  "
        f"p90 {p90 * 1e3:.1f}  max {times[-1] * 1e3:.1f}"
    )
    print(f"modules imported: {total} ({ours} of llamasup)")
    print(
        "load average (1/5/15 min): before "
        + "/".join(f"{x:.2f}" for x in load_before)
        + ", after "
        + "/".join(f"{x:.2f}" for x in load_after)
    )


if __name__ == "__main__":
    main()
