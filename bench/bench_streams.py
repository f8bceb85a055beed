"""Many slow streams held open at once: errors, time to the first event, the front's CPU.

    python bench/bench_streams.py [--streams 1000] [--tokens 20] [--delay 0.5]
                                  [--targets direct,llamasup,naive] [--nofile 1024]

Every target serves the fake llama-server (``llamasup.testing.fake_server``: a thread per
connection and no ``select``, so it holds thousands of streams), answering each chat
completion with ``--tokens`` events ``--delay`` seconds apart:

  direct   the fake itself
  llamasup ``llamasup serve`` with a one-model profile whose binary is the fake (its
           ``--threads-http`` set above the stream count, so llamasup's per-sidecar
           connection cap, sized from a real server's HTTP threads, does not queue them)
  naive    ``bench/naive_proxy.py`` (Starlette + httpx) in front of its own fake

Each front starts with its soft open-files limit at ``--nofile`` (1024 by default: a common
``ulimit -n``) and its hard limit as it is; a front that does not raise its soft limit runs
out of descriptors at ~500 streams (two per stream). The load generator (this process,
uvloop, raw sockets) opens all streams at once, then reads each to its end. Reported per
target: streams that failed (connection refused or reset, a status other than 200, or a
stream that ended without ``data: [DONE]``), time to the first event (p50, p99), the wall
time of the whole run, and the front's CPU time (its CPU-time clock, exited threads
included) and peak RSS over the run. Targets run one after the other, ``--runs`` rounds,
the order rotated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop
from bench_peers import HOST, MODEL, _stop, cpu_ns, loadavg

from llamasup.service.front_limits import raise_open_files_limit
from llamasup.testing.fake_server import write_fake_binary
from llamasup.testing.process import free_port
from llamasup.testing.tiny_model import tiny_model_path

HERE = Path(__file__).resolve().parent
TARGETS = ("direct", "llamasup", "naive")


@dataclass
class Front:
    name: str
    port: int
    #: the process whose CPU and RSS are the front's (for direct: the fake itself)
    pid: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)


def _limited(nofile: int) -> Any:
    def apply() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        soft = nofile if hard == resource.RLIM_INFINITY else min(nofile, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


def _spawn(argv: list[str], nofile: int | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=None if nofile is None else _limited(nofile),  # noqa: PLW1509 - a bench
    )


@contextlib.contextmanager
def started(name: str, fake: Path, work: Path, nofile: int, streams: int) -> Iterator[Front]:
    model = tiny_model_path()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if name == "direct":
            port = free_port()
            procs.append(_spawn([str(fake), "-m", str(model), "--port", str(port)]))
            front = Front(name, port, procs[0].pid, procs)
        elif name == "llamasup":
            port = free_port()
            first = 30000 + port % 1000 * 10
            directory = work / f"profile-{port}"
            directory.mkdir()
            profile = directory / "llamasup.yaml"
            profile.write_text(
                "version: 1\nserver:\n"
                f"  binary: {fake}\n  state_dir: {work / f'state-{port}'}\n"
                f"  listen: {HOST}:{port}\n  ports: {first}-{first + 9}\n"
                f"models:\n  {MODEL}:\n    path: {model}\n"
                f"    args: [--threads-http, {streams + 16}]\n    pinned: true\n"
            )
            cli = "import sys; from llamasup.cli.main import main; sys.exit(main(sys.argv[1:]))"
            procs.append(_spawn([sys.executable, "-c", cli, "serve", str(profile)], nofile))
            front = Front(name, port, procs[0].pid, procs)
        else:
            upstream = free_port()
            procs.append(_spawn([str(fake), "-m", str(model), "--port", str(upstream)]))
            port = free_port()
            procs.append(
                _spawn(
                    [
                        sys.executable,
                        str(HERE / "naive_proxy.py"),
                        "--port",
                        str(port),
                        "--upstream",
                        f"http://{HOST}:{upstream}",
                    ],
                    nofile,
                )
            )
            front = Front(name, port, procs[1].pid, procs)
        asyncio.run(_warm(front.port))
        yield front
    finally:
        for proc in reversed(procs):
            _stop(proc)


def _request(tokens: int) -> bytes:
    body = json.dumps(
        {
            "model": MODEL,
            "stream": True,
            "max_tokens": tokens,
            "messages": [{"role": "user", "content": "hi"}],
        }
    ).encode()
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: %s\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (HOST.encode(), len(body), body)
    )


async def _warm(port: int, within: float = 60) -> None:
    """Until one short stream comes back whole (llamasup starts its sidecar on demand)."""
    deadline = time.monotonic() + within
    while True:
        outcome = await _one(port, _request(1), time.perf_counter())
        if outcome[0] is None:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {port} did not stream within {within} s: {outcome[0]}")
        await asyncio.sleep(0.2)


async def _one(port: int, request: bytes, t0: float) -> tuple[str | None, float]:
    """(what went wrong or None, seconds from ``t0`` to the first event)."""
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
    except OSError as exc:
        return f"connect: {exc.__class__.__name__}", 0.0
    first = 0.0
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            return f"status {head[9:12].decode(errors='replace')}", 0.0
        seen = b""
        while chunk := await reader.read(65536):
            if not first and b"data: " in chunk:
                first = time.perf_counter() - t0
            seen = (seen + chunk)[-64:]
            if seen.endswith(b"0\r\n\r\n") and b"[DONE]" in seen:
                return None, first
        return "ended without [DONE]", first
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        return f"read: {exc.__class__.__name__}", first
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _rss_kb(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def _load(front: Front, streams: int, tokens: int) -> dict[str, Any]:
    request = _request(tokens)
    peak = _rss_kb(front.pid)
    cpu0, t0 = cpu_ns(front.pid), time.perf_counter()
    tasks = [asyncio.ensure_future(_one(front.port, request, t0)) for _ in range(streams)]
    pending: set[asyncio.Future[tuple[str | None, float]]] = set(tasks)
    while pending:
        _, pending = await asyncio.wait(pending, timeout=0.25)
        peak = max(peak, _rss_kb(front.pid))
    wall = time.perf_counter() - t0
    cpu = (cpu_ns(front.pid) - cpu0) / 1e9
    results = [task.result() for task in tasks]
    errors: dict[str, int] = {}
    for error, _ in results:
        if error is not None:
            errors[error] = errors.get(error, 0) + 1
    firsts = sorted(first for error, first in results if error is None)
    return {
        "errors": errors,
        "failed": sum(errors.values()),
        "ttfb_p50_ms": statistics.median(firsts) * 1000 if firsts else None,
        "ttfb_p99_ms": firsts[int(len(firsts) * 0.99)] * 1000 if firsts else None,
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_mb": peak / 1024,
    }


def _cell(value: float | None, fmt: str) -> str:
    return "—" if value is None else fmt.format(value)


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"{args.streams} streams of {args.tokens} events {args.delay} s apart, fronts at soft "
        f"`ulimit -n` {args.nofile}",
        "",
        "| target | run | failed | first event p50 | p99 | wall | front CPU | front peak RSS |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        failed = str(row["failed"]) + (f" {row['errors']}" if row["errors"] else "")
        lines.append(
            f"| {row['target']} | {row['run']} | {failed} | "
            f"{_cell(row['ttfb_p50_ms'], '{:.0f} ms')} | {_cell(row['ttfb_p99_ms'], '{:.0f} ms')}"
            f" | {row['wall_s']:.1f} s | {row['cpu_s']:.2f} s | {row['peak_rss_mb']:.0f} MB |"
        )
    lines.append("")
    lines.append(f"load average at the end: {loadavg()}")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--tokens", type=int, default=20, help="events per stream")
    ap.add_argument("--delay", type=float, default=0.5, help="seconds between events")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--nofile", type=int, default=1024, help="the fronts' soft open-files limit")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    names = [n for n in args.targets.split(",") if n]
    if unknown := sorted(set(names) - set(TARGETS)):
        sys.exit(f"unknown targets {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    if "naive" in names and importlib.util.find_spec("starlette") is None:
        sys.exit("the naive target needs Starlette: pip install starlette (or leave out naive)")
    for name, value, least in (("--streams", args.streams, 1), ("--tokens", args.tokens, 1)):
        if value < least:
            sys.exit(f"{name} must be at least {least}, not {value}")
    if args.delay < 0 or args.nofile < 64:
        sys.exit("--delay must be >= 0 and --nofile >= 64")
    # the load generator holds one descriptor per stream, as llamasup's front raises it
    _, allowed = raise_open_files_limit()
    if allowed < args.streams + 64:
        sys.exit(
            f"{args.streams} streams need ~{args.streams + 64} open files; the limit is {allowed}"
        )
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-streams-") as tmp:
        work = Path(tmp)
        fake = write_fake_binary(
            work / "bin",
            env={
                "FAKE_LLAMA_TOKENS": str(args.tokens),
                "FAKE_LLAMA_STREAM_DELAY": str(args.delay),
            },
        )
        order = list(names)
        for run in range(1, args.runs + 1):
            for name in order:
                with started(name, fake, work, args.nofile, args.streams) as front:
                    result = uvloop.run(_load(front, args.streams, args.tokens))
                row = {"target": name, "run": run, **result}
                rows.append(row)
                print(f"  {name} run {run}: {result} (load {loadavg()})", flush=True)
            order = order[1:] + order[:1]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    print()
    print(report(rows, args))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main(sys.argv[1:])
