"""Proxy overhead: the same upstream measured directly and through the proxy, in one run.

    python bench/bench_proxy.py [--upstream fake|real] [--clients lean,httpx] [--quick]

Three processes: the upstream (the fast fake from tests/proxy, or a real llama-server with a
tiny model), the proxy (uvicorn + httptools + uvloop, a static one-sidecar pool), and this
load generator (uvloop and llamasup's own lean HTTP client, so the generator costs as little
as possible). On a 2-core machine they are pinned (``--layout``):

  proxy-alone     generator + upstream on CPU 0, proxy on CPU 1 (default with the fake)
  upstream-alone  upstream on CPU 0, generator + proxy on CPU 1 (default with a real
                  llama-server: its generation is CPU-bound, and sharing its core would
                  count the proxy's per-event work as lost generation speed)
  none            let the kernel place them

"direct" and "proxy" runs use the same generator, upstream and placement, so the difference
is what the proxy adds.

``--clients`` picks the proxy's upstream client: ``lean`` (llamasup.proxy.upstream) and/or
``httpx`` (an adapter over httpx.AsyncClient, to compare).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import uvloop
from bench_peers import latency

from llamasup.profiles.load import load_profiles
from llamasup.proxy.app import create_proxy_app
from llamasup.proxy.upstream import UpstreamClient, UpstreamError
from llamasup.reconcile.pool import UpstreamAddress
from llamasup.runtime.locate import resolve_binary
from llamasup.service.uvicorn_settings import uvicorn_config
from llamasup.spec.resolve import Resolver

ROOT = Path(__file__).resolve().parent.parent
FAKE = ROOT / "tests" / "proxy" / "fake_upstream.py"
HOST = "127.0.0.1"
CHAT = b"/v1/chat/completions"


# -- the proxy process ----------------------------------------------------------------------
class StaticPool:
    """One sidecar, always ready; counts in-flight requests like a real pool would."""

    def __init__(self, port: int) -> None:
        self.address = UpstreamAddress("bench", HOST, port)
        self.in_flight = 0

    def lease(self, spec: Any, *, timeout: float, origin: Any = None, terms: Any = None) -> Any:
        return _Lease(self)

    def state(self, key: str) -> str | None:
        return "ready"

    def progress(self, key: str) -> str | None:
        return None


class _Lease:
    __slots__ = ("pool",)

    def __init__(self, pool: StaticPool) -> None:
        self.pool = pool

    async def __aenter__(self) -> Any:
        self.pool.in_flight += 1
        return self.pool.address

    async def __aexit__(self, *exc: object) -> None:
        self.pool.in_flight -= 1


class HttpxUpstreamClient:
    """The proxy's upstream client interface over httpx, for comparison only."""

    def __init__(self) -> None:
        self._client = httpx.AsyncClient(
            timeout=None, limits=httpx.Limits(max_connections=None, max_keepalive_connections=64)
        )

    async def request(
        self,
        method: str,
        host: str,
        port: int,
        target: bytes,
        *,
        headers: Any = (),
        body: bytes = b"",
        max_connections: int | None = None,  # the proxy's per-sidecar cap: httpx pools alone
    ) -> Any:
        req = self._client.build_request(
            method, f"http://{host}:{port}{target.decode()}", headers=list(headers), content=body
        )
        return _HttpxResponse(await self._client.send(req, stream=True))

    async def aclose(self) -> None:
        await self._client.aclose()


class _HttpxResponse:
    def __init__(self, response: Any) -> None:
        self._response = response
        self.status = response.status_code
        self.headers = response.headers.raw
        self._iter = response.aiter_raw()
        self.complete = False

    async def read(self) -> bytes:
        try:
            return bytes(await self._iter.__anext__())
        except StopAsyncIteration:
            self.complete = True
            return b""

    def divert(self, sink: Any) -> None:
        """No shortcut: every piece comes through ``read`` (the relay's fallback path)."""

    async def body(self) -> bytes:
        return b"".join([piece async for piece in self._iter])

    def header(self, name: bytes) -> bytes | None:
        value = self._response.headers.get(name.decode("latin-1"))
        return None if value is None else str(value).encode("latin-1")

    def release(self) -> None:
        _pending.add(task := asyncio.ensure_future(self._response.aclose()))
        task.add_done_callback(_pending.discard)


_pending: set[asyncio.Future[None]] = set()


def serve_proxy(upstream_port: int, port: int, client_kind: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        profile = Path(tmp) / "bench.yaml"
        profile.write_text("version: 1\nmodels:\n  bench:\n    path: /dev/null\n")
        resolver = Resolver(load_profiles(profile, {}))
    client = HttpxUpstreamClient() if client_kind == "httpx" else None
    app = create_proxy_app(lambda: resolver, StaticPool(upstream_port), client=client)  # type: ignore[arg-type]
    uvicorn.Server(uvicorn_config(app, host=HOST, port=port, lifespan="off")).run()


# -- process management ---------------------------------------------------------------------
def _pin(pid: int, cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > cpu:
        os.sched_setaffinity(pid, {cpu})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


async def _wait_ready(port: int, path: bytes = b"/health", within: float = 60) -> None:
    client = UpstreamClient()
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            response = await client.request("GET", HOST, port, path)
            await response.body()
            response.release()
            if response.status == 200:
                await client.aclose()
                return
        except UpstreamError:
            pass
        await asyncio.sleep(0.02)
    raise RuntimeError(f"nothing ready on port {port} after {within}s")


def start_upstream(
    kind: str, model: str | None, cpu: int | None
) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    if kind == "fake":
        cmd = [sys.executable, str(FAKE), "--port", str(port), "--no-echo", "--tokens", "8"]
    else:
        cmd = [
            str(resolve_binary(None, os.environ).path),
            "-m",
            _real_model(model),
            "--host",
            HOST,
            "--port",
            str(port),
            "-c",
            "4096",
            "-np",
            "4",
            "--no-webui",
            "-t",
            "1",
        ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _pin(proc.pid, cpu)
    return proc, port


def _real_model(model: str | None) -> str:
    if model:
        return model
    try:
        tiny = importlib.import_module("llamasup.testing.tiny_model")
        return str(tiny.tiny_model_path())
    except (ImportError, AttributeError):
        cached = sorted(Path("~/.cache/llamasup/models").expanduser().glob("llamasup-tiny-*.gguf"))
        if cached:
            return str(cached[-1])
        raise SystemExit(
            "--upstream real needs --model PATH (or llamasup.testing.tiny_model)"
        ) from None


def start_proxy(
    upstream_port: int, client_kind: str, cpu: int | None
) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    cmd = [
        sys.executable,
        __file__,
        "--serve-proxy",
        str(upstream_port),
        str(port),
        "--clients",
        client_kind,
    ]
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    _pin(proc.pid, cpu)
    return proc, port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- measurements ---------------------------------------------------------------------------
def _chat_body(kind: str, *, stream: bool, tokens: int, rate: float = 0.0) -> bytes:
    body: dict[str, Any] = {
        "model": "bench",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": tokens,
        "stream": stream,
    }
    if kind == "fake":
        body["x_fake_ctl"] = {"tokens": tokens}
        if rate:
            body["x_fake_ctl"]["rate"] = rate
    else:
        body["ignore_eos"] = True
        body["temperature"] = 0.0
    return json.dumps(body).encode()


HEADERS = [(b"content-type", b"application/json")]
LAYOUTS: dict[str, dict[str, int | None]] = {
    "proxy-alone": {"generator": 0, "upstream": 0, "proxy": 1},
    "upstream-alone": {"generator": 1, "upstream": 0, "proxy": 1},
    "none": {"generator": None, "upstream": None, "proxy": None},
}


async def ttfb(port: int, body: bytes, total: int) -> list[float]:
    """Time from sending a streaming request to its first body byte."""
    client = UpstreamClient()
    samples = []
    for _ in range(total):
        t0 = time.perf_counter()
        response = await client.request("POST", HOST, port, CHAT, headers=HEADERS, body=body)
        await response.read()
        samples.append(time.perf_counter() - t0)
        await response.body()
        response.release()
    await client.aclose()
    return samples


async def stream_rate(port: int, body: bytes) -> tuple[float, int]:
    """Events per second seen by the client over one stream (first to last event)."""
    client = UpstreamClient()
    response = await client.request("POST", HOST, port, CHAT, headers=HEADERS, body=body)
    events, first, last, tail, at_first = 0, 0.0, 0.0, b"", 0
    while chunk := await response.read():
        now = time.perf_counter()
        events += chunk.count(b"\n\n") + (tail == b"\n" and chunk[:1] == b"\n")
        tail = chunk[-1:]
        if not first:  # the events of the first read came before the clock started
            first, at_first = now, events
        last = now
    response.release()
    await client.aclose()
    return (events - at_first) / (last - first) if last > first else 0.0, events


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def measure(port: int, kind: str, quick: bool) -> dict[str, Any]:
    n1, n32 = (500, 2000) if quick else (3000, 12000)
    small = _chat_body(kind, stream=False, tokens=8)
    await latency(port, small, 8, 400)  # warm-up: connections, caches, JIT-free but still
    result: dict[str, Any] = {}
    for conc, total in ((1, n1), (32, n32)):
        samples = await latency(port, small, conc, total)
        result[f"c{conc}"] = {
            "p50": _pct(samples, 0.5),
            "p99": _pct(samples, 0.99),
            "rps": len(samples) / sum(samples) * conc,
        }
    first = await ttfb(port, _chat_body(kind, stream=True, tokens=4), 200 if quick else 1000)
    result["ttfb"] = {"p50": _pct(first, 0.5), "p99": _pct(first, 0.99)}
    rates: dict[str, Any] = {}
    if kind == "fake":
        plan = [
            ("max", 20000, 0.0),
            ("20000/s", 20000, 20000.0),
            ("5000/s", 10000, 5000.0),
            ("50/s", 100, 50.0),
        ]
    else:
        plan = [("max", 2000 if quick else 4000, 0.0)]
    for label, tokens, rate in plan:
        body = _chat_body(kind, stream=True, tokens=tokens, rate=rate)
        runs = [await stream_rate(port, body) for _ in range(3)]
        eps, events = sorted(runs)[1]  # the median of three
        rates[label] = {"events_per_s": eps, "events": events}
    result["stream"] = rates
    return result


def _run(coro: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro())


def report(results: dict[str, dict[str, Any]]) -> str:
    direct = results["direct"]
    lines = [
        "| target | c1 p50 | c1 p99 | c32 p50 | c32 p99 | c32 req/s | TTFB p50 | TTFB p99 | "
        + " | ".join(f"stream {k} ev/s" for k in direct["stream"])
        + " |"
    ]
    lines.append("|" + " --- |" * (8 + len(direct["stream"])))
    for name, r in results.items():
        row = [
            name,
            *(f"{r[c][m]:.3f}" for c in ("c1", "c32") for m in ("p50", "p99")),
            f"{r['c32']['rps']:.0f}",
            f"{r['ttfb']['p50']:.3f}",
            f"{r['ttfb']['p99']:.3f}",
        ]
        for k, s in r["stream"].items():
            ratio = s["events_per_s"] / direct["stream"][k]["events_per_s"]
            shown = f"{s['events_per_s']:.0f}"
            row.append(shown if name == "direct" else f"{shown} ({ratio:.2f}x)")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    for name, r in results.items():
        if name == "direct":
            continue
        added = [r[c]["p50"] - direct[c]["p50"] for c in ("c1", "c32")]
        lines.append(
            f"- {name}: added p50 {added[0]:+.3f} ms (c1), {added[1]:+.3f} ms (c32); "
            f"added TTFB p50 {r['ttfb']['p50'] - direct['ttfb']['p50']:+.3f} ms"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--upstream", choices=("fake", "real"), default="fake")
    ap.add_argument("--model", help="GGUF for --upstream real (default: the tiny test model)")
    ap.add_argument("--clients", default="lean,httpx")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--layout", choices=tuple(LAYOUTS))
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--serve-proxy",
        nargs=2,
        type=int,
        metavar=("UPSTREAM_PORT", "PORT"),
        help=argparse.SUPPRESS,
    )
    ns = ap.parse_args(argv)
    if ns.serve_proxy:
        upstream_port, port = ns.serve_proxy
        serve_proxy(upstream_port, port, ns.clients)
        return
    layout = ns.layout or ("proxy-alone" if ns.upstream == "fake" else "upstream-alone")
    cpus = LAYOUTS[layout]
    _pin(os.getpid(), cpus["generator"])
    upstream, up_port = start_upstream(ns.upstream, ns.model, cpus["upstream"])
    results: dict[str, dict[str, Any]] = {}
    try:
        _run(lambda: _wait_ready(up_port))
        results["direct"] = _run(lambda: measure(up_port, ns.upstream, ns.quick))
        for kind in ns.clients.split(","):
            proxy, port = start_proxy(up_port, kind, cpus["proxy"])
            try:
                _run(lambda p=port: _wait_ready(p))  # type: ignore[misc]
                results[f"proxy ({kind})"] = _run(
                    lambda p=port: measure(p, ns.upstream, ns.quick)  # type: ignore[misc]
                )
            finally:
                _stop(proxy)
    finally:
        _stop(upstream)
    print(f"upstream={ns.upstream}, {os.cpu_count()} CPUs, layout {layout}; latencies in ms\n")
    print(report(results))
    if ns.json:
        ns.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main(sys.argv[1:])
