"""llama-server's ``-t`` on a small CPU-only host: generation speed and short-request latency.

    python bench/bench_threads.py [--model PATH] [--runs 3] [--settings unset,1,2]

One llama-server per setting (``-c 4096 -np 4``; ``unset`` passes no ``-t``, so llama.cpp
picks its default), started once, then measured in turn, the order rotated between runs:

  c1     p50 latency of a small chat completion (8 tokens), one client (``--requests``)
  gen    tokens/s of a 256-token stream (``ignore_eos``), first to last event
  cpu    the server's CPU per c1 request (its CPU-time clock, every thread it ever had):
         what its OpenMP workers spin after each request shows here

Default model: the tiny test model; ``--model`` takes a real one (the quickstart's Gemma 3
270M is in ``~/.cache/llamasup/models`` after ``llamasup quickstart``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
from pathlib import Path

from bench_peers import (
    HOST,
    _body,
    _free_port,
    _run,
    _spawn,
    _stop,
    _warm,
    cpu_ns,
    latency,
    loadavg,
    stream,
)

from llamasup.runtime.locate import resolve_binary
from llamasup.testing.tiny_model import tiny_model_path


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--settings", default="unset,1,2")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--requests", type=int, default=500, help="c1 requests per measure")
    ns = ap.parse_args(argv)
    binary = str(resolve_binary(None, os.environ).path)
    model = str(ns.model or tiny_model_path())
    settings = ns.settings.split(",")
    servers = {}
    try:
        for s in settings:
            port = _free_port()
            extra = [] if s == "unset" else ["-t", s]
            proc = _spawn(
                [
                    binary,
                    "-m",
                    model,
                    "--host",
                    HOST,
                    "--port",
                    str(port),
                    "-c",
                    "4096",
                    "-np",
                    "4",
                    "--no-webui",
                    "--alias",
                    "bench",
                    *extra,
                ]
            )
            servers[s] = (proc, port)
        for _, port in servers.values():
            _run(lambda p=port: _warm(p))  # type: ignore[misc]
        results: dict[str, dict[str, list[float]]] = {
            s: {"c1": [], "gen": [], "cpu": []} for s in settings
        }
        loads = [loadavg()]
        order = list(settings)
        for _ in range(ns.runs):
            for s in order:
                proc, port = servers[s]
                c0 = cpu_ns(proc.pid)
                samples = _run(lambda p=port: latency(p, _body(8, stream=False), 1, ns.requests))  # type: ignore[misc]
                results[s]["cpu"].append((cpu_ns(proc.pid) - c0) / ns.requests / 1000)
                results[s]["c1"].append(statistics.median(samples) * 1000)
                rate = _run(lambda p=port: stream(p, ns.tokens))[0]  # type: ignore[misc]
                results[s]["gen"].append(rate)
            order = order[1:] + order[:1]
            loads.append(loadavg())
    finally:
        for proc, _ in servers.values():
            _stop(proc)
    print(f"model {Path(model).name}, {os.cpu_count()} CPUs, medians of {ns.runs} runs")
    print("| -t | c1 p50 | server CPU per c1 request | generation tokens/s |")
    print("| --- | --- | --- | --- |")
    for s in settings:
        r = results[s]
        print(
            f"| {s} | {statistics.median(r['c1']):.2f} ms | {statistics.median(r['cpu']):.0f} µs "
            f"| {statistics.median(r['gen']):.0f} |"
        )
    print(f"load average: {loads}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    with contextlib.suppress(KeyboardInterrupt):
        main(sys.argv[1:])
