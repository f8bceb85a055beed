"""llamasup next to its peers: the same llama-server build and model behind four fronts.

    python bench/bench_peers.py [--threads unset,1] [--cores shared,pinned] [--runs 3]
                                [--targets ...] [--measures c1,c16,stream,ttfb]
                                [--streams N] [--json F]

Targets, all serving the tiny test model (``llamasup.testing.tiny_model``) with the
llama-server llamasup resolves (``llamasup runtime install``), ``-c 4096 -np 4``:

  direct   llama-server itself
  llamasup ``llamasup serve`` with a one-model profile (the sidecar is its child)
  router   llama.cpp's router mode, ``llama-server --models-dir DIR`` (routes by ``model``)
  naive    ``bench/naive_proxy.py`` (Starlette + httpx) in front of the direct server

For each layout, threads (``unset``: no ``-t`` anywhere, each front's own default applies;
``1``: ``-t 1``) times cores (``shared``: nothing pinned; ``pinned``: once started, every
llama-server process, the router's and llamasup's children included, on CPU 0, the fronts
and this load generator on CPU 1), every target is started, then each measure is taken on
every target in turn, the order rotated between runs (interleaved), ``--runs`` times:

  c1       p50 latency of a small chat completion (8 tokens), one client
  c16      requests/s with 16 clients on the server's 4 slots
  stream   events/s of a 1000-token stream (``ignore_eos``, ``n_predict``), first to last
  ttfb     time to the first body byte of a streamed request
  front CPU per c1 request and per streamed event: the front process only (its CPU-time
           clock, in ns, which counts threads that have exited too; /proc/PID/stat counts
           the same time in 10 ms ticks), read around the c1 and stream measures

The load generator is this process (uvloop and llamasup's own HTTP client: the cheapest
client available). ``--uvloop`` runs ``llamasup serve`` on uvloop (``uvloop.install()``
before the CLI starts), for comparing with a release whose ``serve`` does not yet.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop

from llamasup.proxy.upstream import UpstreamClient, UpstreamError
from llamasup.runtime.locate import resolve_binary
from llamasup.testing.tiny_model import tiny_model_path

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
CHAT = b"/v1/chat/completions"
HEADERS = [(b"content-type", b"application/json")]
MODEL = "bench"
TARGETS = ("direct", "llamasup", "router", "naive")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _body(tokens: int, *, stream: bool) -> bytes:
    return json.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "n_predict": tokens,
            "max_tokens": tokens,
            "ignore_eos": True,
            "temperature": 0.0,
            "stream": stream,
        }
    ).encode()


# -- CPU of one process -----------------------------------------------------------------------
def cpu_ns(pid: int) -> int:
    """CPU time of ``pid`` so far, every thread it ever had, in nanoseconds.

    The process's CPU-time clock (``clock_getcpuclockid``: ``CPUCLOCK_SCHED`` of the thread
    group, ``(~pid << 3) | 2``), which also counts threads that have exited. Summing
    ``/proc/PID/task/*/schedstat`` does not: it missed the router's short-lived threads and
    counted ~380 of its ~600 µs per request.
    """
    try:
        return time.clock_gettime_ns(((~pid) << 3) | 2)
    except OSError:  # not Linux: the live threads, which is what is left
        total = 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                total += int((task / "schedstat").read_text().split()[0])
        return total


def cpu_ticks_s(pid: int) -> float:
    """utime + stime from /proc/PID/stat, in seconds (10 ms resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the targets ------------------------------------------------------------------------------
@dataclass
class Target:
    name: str
    port: int
    #: the process whose CPU is the front's (None: no front, llama-server itself)
    front: int | None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)


def _server_args(threads: str) -> list[str]:
    args = ["-c", "4096", "-np", "4", "--no-webui"]
    return args if threads == "unset" else [*args, "-t", threads]


def _spawn(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )


@contextlib.contextmanager
def started(names: list[str], threads: str, use_uvloop: bool) -> Iterator[dict[str, Target]]:
    binary = str(resolve_binary(None, os.environ).path)
    model = tiny_model_path()
    targets: dict[str, Target] = {}
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        work = Path(tmp)
        try:
            port = _free_port()
            direct = _spawn(
                [
                    binary,
                    "-m",
                    str(model),
                    "--host",
                    HOST,
                    "--port",
                    str(port),
                    "--alias",
                    MODEL,
                    *_server_args(threads),
                ]
            )
            targets["direct"] = Target("direct", port, None, [direct])
            if "llamasup" in names:
                targets["llamasup"] = _start_llamasup(work, binary, model, threads, use_uvloop)
            if "router" in names:
                models = work / "models"
                models.mkdir()
                (models / f"{MODEL}.gguf").symlink_to(model)
                port = _free_port()
                router = _spawn(
                    [
                        binary,
                        "--models-dir",
                        str(models),
                        "--host",
                        HOST,
                        "--port",
                        str(port),
                        *_server_args(threads),
                    ]
                )
                targets["router"] = Target("router", port, router.pid, [router])
            if "naive" in names:
                port = _free_port()
                naive = _spawn(
                    [
                        sys.executable,
                        str(HERE / "naive_proxy.py"),
                        "--port",
                        str(port),
                        "--upstream",
                        f"http://{HOST}:{targets['direct'].port}",
                    ]
                )
                targets["naive"] = Target("naive", port, naive.pid, [naive])
            for target in targets.values():
                _run(lambda t=target: _warm(t.port))  # type: ignore[misc]
            yield {n: targets[n] for n in names}
        finally:
            for target in targets.values():
                for proc in target.procs:
                    _stop(proc)


def _start_llamasup(work: Path, binary: str, model: Path, threads: str, use_uvloop: bool) -> Target:
    port = _free_port()
    first = 30000 + port % 1000 * 10  # sidecar ports nobody else's run picks
    args = ", ".join(_server_args(threads))
    # the profile in a directory of its own: llamasup watches the profile's directory, and a
    # state directory inside it (sidecar logs written at every request) would wake the
    # watcher at every request
    (work / "profile").mkdir()
    profile = work / "profile" / "llamasup.yaml"
    profile.write_text(
        "version: 1\nserver:\n"
        f"  binary: {binary}\n  state_dir: {work / 'state'}\n  listen: {HOST}:{port}\n"
        f"  ports: {first}-{first + 9}\n"
        f"models:\n  {MODEL}:\n    path: {model}\n    args: [{args}]\n    pinned: true\n"
    )
    cli = "import sys; from llamasup.cli.main import main; sys.exit(main(sys.argv[1:]))"
    if use_uvloop:
        cli = "import uvloop; uvloop.install(); " + cli
    proc = _spawn([sys.executable, "-c", cli, "serve", str(profile)])
    return Target("llamasup", port, proc.pid, [proc])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


async def _warm(port: int, within: float = 120) -> None:
    """Wait until a chat completion answers 200 (the router and llamasup load on demand)."""
    client = UpstreamClient()
    deadline = time.monotonic() + within
    body = _body(8, stream=False)
    while True:
        try:
            response = await client.request("POST", HOST, port, CHAT, headers=HEADERS, body=body)
            await response.body()
            response.release()
            if response.status == 200:
                break
        except UpstreamError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {port} never answered a chat completion")
        await asyncio.sleep(0.1)
    await latency(port, body, 4, 100)
    await client.aclose()


# -- measures ---------------------------------------------------------------------------------
async def latency(
    port: int, body: bytes, concurrency: int, total: int, shared: UpstreamClient | None = None
) -> list[float]:
    client = shared or UpstreamClient(max_idle_per_host=concurrency * 2)
    samples: list[float] = []
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            response = await client.request("POST", HOST, port, CHAT, headers=HEADERS, body=body)
            await response.body()
            response.release()
            samples.append(time.perf_counter() - t0)
            if response.status != 200:
                raise RuntimeError(f"port {port} answered {response.status}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if shared is None:
        await client.aclose()
    return samples


async def stream(port: int, tokens: int) -> tuple[float, int, float]:
    """(events/s from the first to the last event, events, seconds to the first byte)."""
    client = UpstreamClient()
    t0 = time.perf_counter()
    response = await client.request(
        "POST", HOST, port, CHAT, headers=HEADERS, body=_body(tokens, stream=True)
    )
    events, first, last, at_first = 0, 0.0, 0.0, 0
    while chunk := await response.read():
        now = time.perf_counter()
        events += chunk.count(b"data: ")
        if not first:
            # the rate counts the events that came after the first read: several can
            # arrive in it (a late reader), and counting them would inflate the rate
            first, at_first = now, events
        last = now
    response.release()
    await client.aclose()
    rate = (events - at_first) / (last - first) if last > first else 0.0
    return rate, events, first - t0


def _measure_c1(t: Target, n: int) -> dict[str, float]:
    before = (cpu_ns(t.front), cpu_ticks_s(t.front)) if t.front else (0, 0.0)
    samples = _run(lambda: latency(t.port, _body(8, stream=False), 1, n))
    out = {"p50_ms": statistics.median(samples) * 1000}
    if t.front:
        out["cpu_us"] = (cpu_ns(t.front) - before[0]) / n / 1000
        out["cpu_us_ticks"] = (cpu_ticks_s(t.front) - before[1]) / n * 1e6
    return out


def _measure_c16(t: Target, n: int) -> dict[str, float]:
    async def go() -> tuple[float, list[float]]:
        body = _body(8, stream=False)
        # the same client warms its 16 connections first: a llama-server holds an HTTP thread
        # per kept-alive connection, and one opened past its threads can wait for another to
        # time out (5 s), which would measure the server's thread pool, not the front
        client = UpstreamClient(max_idle_per_host=32)
        await latency(t.port, body, 16, 64, client)
        t0 = time.perf_counter()
        samples = await latency(t.port, body, 16, n, client)
        elapsed = time.perf_counter() - t0
        await client.aclose()
        return elapsed, samples

    elapsed, samples = _run(go)
    samples.sort()
    return {"rps": n / elapsed, "p99_ms": samples[int(len(samples) * 0.99)] * 1000}


def _measure_stream(t: Target, streams: int) -> dict[str, float]:
    before = cpu_ns(t.front) if t.front else 0
    results = [_run(lambda: stream(t.port, 1000)) for _ in range(streams)]
    events = sum(r[1] for r in results)
    out = {"ev_s": statistics.mean(r[0] for r in results), "events": events}
    if t.front:
        out["cpu_us_event"] = (cpu_ns(t.front) - before) / events / 1000
    return out


def _measure_ttfb(t: Target, n: int) -> dict[str, float]:
    samples = [_run(lambda: stream(t.port, 2))[2] for _ in range(n)]
    return {"p50_ms": statistics.median(samples) * 1000}


MEASURES: dict[str, Callable[[Target, int], dict[str, float]]] = {
    "c1": _measure_c1,
    "c16": _measure_c16,
    "stream": _measure_stream,
    "ttfb": _measure_ttfb,
}


def _run(coro: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro())


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc/PID/task/*/children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            for child in task.read_text().split():
                found += [int(child), *_children(int(child))]
    return found


def _pin(pid: int, cpu: int) -> None:
    """Every thread of ``pid`` on ``cpu`` (threads started later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task.name), {cpu})


def pin_cores(targets: dict[str, Target]) -> None:
    """The pinned layout: every llama-server on CPU 0; the fronts and this load generator
    on CPU 1, so a front's work per request or event is never taken from generation."""
    for target in targets.values():
        servers = [p.pid for p in target.procs if p.pid != target.front]
        if target.front is not None:
            _pin(target.front, 1)
            servers += _children(target.front)
        for pid in servers:
            _pin(pid, 0)
    os.sched_setaffinity(0, {1})


def run_layout(
    names: list[str],
    threads: str,
    runs: int,
    sizes: dict[str, int],
    use_uvloop: bool,
    *,
    cores: str = "shared",
    measures: list[str] | None = None,
) -> dict[str, Any]:
    chosen = list(MEASURES) if measures is None else measures
    results: dict[str, Any] = {
        "threads": threads,
        "cores": cores,
        "measures": chosen,
        "load": [],
        "runs": [],
    }
    everywhere = os.sched_getaffinity(0)
    with started(names, threads, use_uvloop) as targets:
        if cores == "pinned":
            pin_cores(targets)
        order = list(targets)
        for run in range(runs):
            results["load"].append(loadavg())
            this: dict[str, dict[str, Any]] = {n: {} for n in order}
            for measure in chosen:
                for name in order:
                    this[name][measure] = MEASURES[measure](targets[name], sizes[measure])
            results["runs"].append(this)
            order = order[1:] + order[:1]  # rotate: nobody always goes first
            print(
                f"  threads={threads} {cores} run {run + 1}/{runs} done (load {loadavg()})",
                flush=True,
            )
        results["load"].append(loadavg())
    os.sched_setaffinity(0, everywhere)
    return results


def _med(layout: dict[str, Any], name: str, measure: str, key: str) -> float | None:
    values = [r[name][measure].get(key) for r in layout["runs"] if measure in r.get(name, {})]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def report(layouts: list[dict[str, Any]], names: list[str]) -> str:
    lines = ["| measure | threads, cores | " + " | ".join(names) + " |"]
    lines.append("| --- | --- |" + " --- |" * len(names))

    def row(measure: str, label: str, lay: dict[str, Any], cell: Callable[[str], str]) -> None:
        if measure not in lay.get("measures", MEASURES):
            return  # not measured in this run
        layout = f"{lay['threads']}, {lay.get('cores', 'shared')}"
        lines.append(f"| {label} | {layout} | " + " | ".join(cell(n) for n in names) + " |")

    for lay in layouts:
        base = {
            m: _med(lay, "direct", m, k)
            for m, k in (("c1", "p50_ms"), ("c16", "rps"), ("stream", "ev_s"), ("ttfb", "p50_ms"))
        }

        def added(n: str, m: str, lay: dict[str, Any] = lay, base: dict[str, Any] = base) -> str:
            v = _med(lay, n, m, "p50_ms")
            if v is None or base[m] is None:
                return "—"
            return f"{v:.2f} ms" if n == "direct" else f"{v - base[m]:+.2f}"

        def ratio(
            n: str, m: str, k: str, lay: dict[str, Any] = lay, base: dict[str, Any] = base
        ) -> str:
            v = _med(lay, n, m, k)
            if v is None or not base[m]:
                return "—"
            return f"{v:.0f}/s" if n == "direct" else f"{v / base[m]:.2f}x"

        def cpu(n: str, m: str, k: str, lay: dict[str, Any] = lay) -> str:
            v = _med(lay, n, m, k)
            return "—" if v is None else f"{v:.0f} µs"

        rows: list[tuple[str, str, Callable[[str], str]]] = [
            ("c1", "c1 p50 (added)", lambda n: added(n, "c1")),
            ("c16", "c16 req/s (vs direct)", lambda n: ratio(n, "c16", "rps")),
            ("stream", "1000-token stream ev/s (vs direct)", lambda n: ratio(n, "stream", "ev_s")),
            ("ttfb", "stream TTFB p50 (added)", lambda n: added(n, "ttfb")),
            ("c1", "front CPU per c1 request", lambda n: cpu(n, "c1", "cpu_us")),
            ("stream", "front CPU per streamed event", lambda n: cpu(n, "stream", "cpu_us_event")),
        ]
        for measure, label, cell in rows:
            row(measure, label, lay, cell)
    lines.append("")
    for lay in layouts:
        layout = f"threads={lay['threads']} {lay.get('cores', 'shared')}"
        ones = [float(load.split()[0]) for load in lay["load"]]
        lines.append(
            f"- {layout}: 1-minute load average {min(ones):.2f}-{max(ones):.2f} over the runs"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", default="unset,1", help="layouts: unset and/or a -t value")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer requests per measure")
    ap.add_argument("--measures", default=",".join(MEASURES), help="a subset of the measures")
    ap.add_argument(
        "--streams", type=int, help="1000-token streams per target in each run (default 2)"
    )
    ap.add_argument(
        "--cores",
        default="shared",
        help="shared (nothing pinned) and/or pinned (servers on CPU 0, fronts and load on 1)",
    )
    ap.add_argument("--uvloop", action="store_true", help="run llamasup serve on uvloop")
    ap.add_argument("--json", type=Path)
    ns = ap.parse_args(argv)
    names = [n for n in ns.targets.split(",") if n]
    if "direct" not in names:
        names.insert(0, "direct")
    if "naive" in names and importlib.util.find_spec("starlette") is None:
        # said now, not as a front that never answers its warm-up two minutes later
        sys.exit("the naive target needs Starlette: pip install starlette (or leave out naive)")
    sizes = {"c1": 500, "c16": 1000, "stream": 2, "ttfb": 60}
    if ns.quick:
        sizes = {"c1": 150, "c16": 300, "stream": 1, "ttfb": 20}
    if ns.streams is not None:
        sizes["stream"] = ns.streams
    measures = [m for m in ns.measures.split(",") if m]
    if unknown := sorted(set(measures) - set(MEASURES)):
        sys.exit(f"unknown measures {', '.join(unknown)}; known: {', '.join(MEASURES)}")
    if unknown := sorted(set(ns.cores.split(",")) - {"shared", "pinned"}):
        sys.exit(f"unknown --cores {', '.join(unknown)}; known: shared, pinned")
    if bad := [t for t in ns.threads.split(",") if t != "unset" and not t.isdigit()]:
        sys.exit(f"--threads takes unset or a number of threads, not {', '.join(bad)}")
    layouts = []
    for cores in ns.cores.split(","):
        for threads in ns.threads.split(","):
            if cores == "pinned" and threads == "unset":
                # llama-server sizes its thread pool from the CPUs it sees when it starts:
                # pinned to one core afterwards, its spinning workers wait on each other
                # (measured: a run of this layout did not finish in ten minutes)
                print("  threads=unset pinned: skipped (pinned needs a -t)", flush=True)
                continue
            layouts.append(
                run_layout(
                    names, threads, ns.runs, sizes, ns.uvloop, cores=cores, measures=measures
                )
            )
    print(f"\n{os.cpu_count()} CPUs; medians of {ns.runs} interleaved runs\n")
    if ns.json:  # first: a report that fails loses no run
        ns.json.write_text(json.dumps(layouts, indent=2))
    print(report(layouts, names))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main(sys.argv[1:])
