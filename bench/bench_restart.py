"""Restart to first request: a planned restart (sidecars kept) against a full one (reload).

``llamasup serve`` runs two pinned models on the real llama-server; a client sends one short
chat completion after another over a keep-alive connection the whole time (it retries a
refused connection at once, and counts it). Each round restarts llamasup and measures, on the
host's monotonic clock:

* **planned** (``POST /api/restart``, what ``llamasup restart`` and SIGUSR2 do, after their
  preflight): from the restart request being accepted to the first answer the new llamasup
  image sends (the first completed after its front served again), and the steps the image
  reports (drain, start = exec + Python start-up + profile load, adopt, serve);
* **full** (SIGTERM, then a new ``llamasup serve``, what ``systemctl restart`` does): from the
  SIGTERM to the first answer of the new process, which must load both models again.

Both count the requests that failed (refused connections included). Python start-up alone
(``python -c "import llamasup.cli.serve"``, the imports ``serve`` needs) is measured for
reference.

Usage: ``python bench/bench_restart.py [--rounds N] [--models tiny,gemma] [--write]``; with
``--write`` the results replace the ``## Planned restart`` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from results_file import write_section

from llamasup.cli.quickstart import ensure_quickstart_model, models_dir
from llamasup.runtime.locate import resolve_binary
from llamasup.testing import tiny_model_path
from llamasup.testing.process import ServerProcess, free_port

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADING = "## Planned restart"
MODELS = ("first", "second")


@dataclass
class Client:
    """One request after another, each answer's completion time kept; errors counted."""

    url: str
    answers: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._lock = threading.Lock()

    def __enter__(self) -> Client:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def first_answer_after(self, moment: float) -> float | None:
        with self._lock:
            return next((t for t in self.answers if t >= moment), None)

    def _run(self) -> None:
        body = {
            "model": MODELS[0],
            "max_tokens": 1,
            "messages": [{"role": "user", "content": "hi"}],
        }
        client = httpx.Client(base_url=self.url, timeout=120, trust_env=False)
        while not self._stop.is_set():
            try:
                reply = client.post("/v1/chat/completions", json=body)
                ok = reply.status_code == 200
                detail = f"HTTP {reply.status_code}"
            except httpx.HTTPError as exc:
                ok, detail = False, f"{type(exc).__name__}: {exc}"
                client.close()
                client = httpx.Client(base_url=self.url, timeout=120, trust_env=False)
            with self._lock:
                if ok:
                    self.answers.append(time.monotonic())
                else:
                    self.errors.append(detail)
        client.close()


def poll(what: str, probe: Callable[[], Any], timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(0.005)
    raise TimeoutError(what)


def status(url: str) -> dict[str, Any] | None:
    try:
        reply = httpx.get(f"{url}/api/status", timeout=30, trust_env=False)
    except httpx.HTTPError:
        return None
    return reply.json() if reply.status_code == 200 else None


def both_ready(url: str) -> bool:
    doc = status(url)
    return doc is not None and sum(r["state"] == "ready" for r in doc["sidecars"]) == len(MODELS)


def serve(profile: Path, port: int) -> ServerProcess:
    env = {k: v for k, v in os.environ.items() if k != "LLAMASUP_PROFILES"}
    argv = [
        sys.executable,
        "-m",
        "llamasup",
        "serve",
        str(profile),
        "--listen",
        f"127.0.0.1:{port}",
    ]
    process = ServerProcess(argv, env)
    process.wait_for_line("llamasup: serving", 120)
    return process


@dataclass(frozen=True)
class Planned:
    first_answer_ms: float
    steps: dict[str, float]
    errors: int


@dataclass(frozen=True)
class Full:
    first_answer_ms: float
    errors: int


def planned_round(url: str, client: Client) -> Planned:
    before = status(url)
    assert before is not None
    errors = len(client.errors)
    reply = httpx.post(f"{url}/api/restart", timeout=120, trust_env=False)
    assert reply.status_code == 202, reply.text
    after = poll(
        "the new image",
        lambda: (
            (doc := status(url))
            and doc["process"]["started_at"] != before["process"]["started_at"]
            and doc
        ),
    )
    report = after["process"]["last_restart"]
    outcomes = {item["result"] for item in report["sidecars"]}
    assert outcomes == {"adopted"}, report
    moments = report["monotonic"]
    first = poll(
        "an answer from the new image", lambda: client.first_answer_after(moments["serving"])
    )
    poll("both ready", lambda: both_ready(url))
    return Planned(
        (first - moments["requested"]) * 1000,
        {k: v for k, v in report["timeline_ms"].items() if v is not None},
        len(client.errors) - errors,
    )


def full_round(
    process: ServerProcess, profile: Path, port: int, client: Client
) -> tuple[Full, ServerProcess]:
    url = f"http://127.0.0.1:{port}"
    errors = len(client.errors)
    asked = time.monotonic()
    process.signal(signal.SIGTERM)
    process.wait_exit(60)
    gone = time.monotonic()  # every answer from now on is the new process's
    process.close()
    fresh = serve(profile, port)
    first = poll("an answer from the new process", lambda: client.first_answer_after(gone))
    # the first answer needs only its own model: wait for both before the next round
    poll("both ready", lambda: both_ready(url))
    return Full((first - asked) * 1000, len(client.errors) - errors), fresh


def python_start_ms(runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import llamasup.cli.serve"], check=True)
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def write_profile(root: Path, binary: Path, model: Path) -> Path:
    profile = root / "llamasup.yaml"
    models = "".join(f"  {name}:\n    path: {model}\n    pinned: true\n" for name in MODELS)
    profile.write_text(
        f"""\
version: 1
server:
  binary: {binary}
  ports: 27100-27199
  state_dir: {root / "state"}
  base_args: [--ctx-size, 512, --parallel, 1]
models:
{models}"""
    )
    return profile


def run(name: str, model: Path, rounds: int) -> tuple[list[Planned], list[Full]]:
    binary = resolve_binary(None, os.environ).path
    with tempfile.TemporaryDirectory(prefix="llamasup-bench-restart-") as tmp:
        profile = write_profile(Path(tmp), binary, model)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = serve(profile, port)
        try:
            poll("both ready", lambda: both_ready(url))
            planned: list[Planned] = []
            full: list[Full] = []
            with Client(url) as client:
                poll("answers", lambda: len(client.answers) >= 3)
                for index in range(rounds):
                    result = planned_round(url, client)
                    planned.append(result)
                    print(f"{name} planned {index + 1}: {result}", flush=True)
                for index in range(rounds):
                    done, process = full_round(process, profile, port, client)
                    full.append(done)
                    print(f"{name} full {index + 1}: {done}", flush=True)
            return planned, full
        finally:
            process.signal(signal.SIGTERM)
            process.wait_exit(60)
            process.close()


def median(values: list[float]) -> str:
    return f"{statistics.median(values):.0f}"


def span(values: list[float]) -> str:
    return f"{min(values):.0f}-{max(values):.0f}"


def report(
    results: dict[str, tuple[list[Planned], list[Full]]], rounds: int, python_ms: float
) -> str:
    lines = [
        HEADING,
        "",
        f"`python bench/bench_restart.py --rounds {rounds} --models {','.join(results)} --write` "
        f"on {platform.system()} {platform.machine()}, Python {platform.python_version()}, "
        f"{os.cpu_count() or 0} CPUs (no GPU), load average {os.getloadavg()[0]:.2f} at the end. "
        "`llamasup serve` runs two pinned models (`--ctx-size 512 --parallel 1`) on the real "
        "llama-server; one client sends a 1-token chat completion after another over a "
        "keep-alive connection the whole time (a refused connection is retried at once and "
        "counted as an error). **Planned**: `POST /api/restart` (what `llamasup restart` and "
        "SIGUSR2 do after their preflight), timed from the request being accepted to the first "
        "answer completed after the new image's front served again. **Full**: SIGTERM and a "
        "new `llamasup serve` (what `systemctl restart` does), timed from the SIGTERM to the "
        f"first answer of the new process. Python start-up with the imports `serve` needs "
        f"(`python -c 'import llamasup.cli.serve'`): {python_ms:.0f} ms (median of 5).",
        "",
        "| model | restart | to first answer, ms (median, range) | failed requests | "
        "drain | start | adopt | serve (ms, medians) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, (planned, full) in results.items():
        steps = {
            k: statistics.median([p.steps.get(k, 0.0) for p in planned])
            for k in ("drain", "start", "adopt", "serve")
        }
        lines.append(
            f"| {name} | planned | {median([p.first_answer_ms for p in planned])} "
            f"({span([p.first_answer_ms for p in planned])}) | "
            f"{sum(p.errors for p in planned)} | {steps['drain']:.0f} | {steps['start']:.0f} | "
            f"{steps['adopt']:.0f} | {steps['serve']:.0f} |"
        )
        lines.append(
            f"| {name} | full | {median([f.first_answer_ms for f in full])} "
            f"({span([f.first_answer_ms for f in full])}) | {sum(f.errors for f in full)} | | | | |"
        )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", default="tiny,gemma", help="comma-separated: tiny, gemma")
    parser.add_argument("--write", action="store_true", help=f"update {RESULTS}")
    args = parser.parse_args()
    paths = {
        "tiny": tiny_model_path,
        "gemma": lambda: ensure_quickstart_model(models_dir()),
    }
    python_ms = python_start_ms()
    results = {name: run(name, paths[name](), args.rounds) for name in args.models.split(",")}
    section = report(results, args.rounds, python_ms)
    print()
    print(section)
    if args.write:
        write_section(HEADING, section, RESULTS)


if __name__ == "__main__":
    main()
