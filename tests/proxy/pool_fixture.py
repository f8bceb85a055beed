"""A small but honest SidecarPool for the proxy's tests, and a real uvicorn to run the proxy.

``FakeSidecarPool`` spawns one ``fake_upstream.py`` process per spec key on a free port, shares
one start between concurrent leases, counts leases in flight, withdraws the demand of a
cancelled wait, and lets a test evict a sidecar (which waits for in-flight requests).
``ProxyServer`` runs the proxy app under uvicorn (httptools + uvloop) in a thread, on an
ephemeral port, with that pool living in the server's event loop. Its front is llamasup's
own (the guarded protocol, which offers the direct body shortcut for streams) unless
``front="plain"`` asks for uvicorn's protocol as it comes (the ASGI-only path).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
import uvloop

from llamasup.profiles.types import ServerConfig
from llamasup.proxy.app import ProxyApp, create_proxy_app
from llamasup.proxy.asgi import ASGIApp
from llamasup.proxy.hooks import ProxyObserver
from llamasup.proxy.upstream import UpstreamClient, UpstreamError
from llamasup.reconcile.pool import DEFAULT_TERMS, Origin, Terms, Upstream, UpstreamAddress
from llamasup.service.front_limits import front_limits, open_files_limit
from llamasup.service.front_protocol import guarded_protocol
from llamasup.spec.resolve import Resolver, SidecarSpec
from llamasup.testing.poll import poll_until

FAKE_UPSTREAM = Path(__file__).with_name("fake_upstream.py")
T = TypeVar("T")


class _Sidecar:
    def __init__(self, key: str, proc: asyncio.subprocess.Process, port: int) -> None:
        self.key = key
        self.proc = proc
        self.port = port
        self.ready = False

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None


class FakeSidecarPool:
    """Runs ``fake_upstream.py`` per spec key, or with ``run_specs`` the spec's own command
    line (``spec.command_line``: the runtime branch's fake llama-server or the real one)."""

    def __init__(self, *, load_delay: float = 0.0, run_specs: bool = False) -> None:
        self.load_delay = load_delay
        self.run_specs = run_specs
        self.starts: Counter[str] = Counter()
        self.in_flight: Counter[str] = Counter()
        self.waiting: Counter[str] = Counter()
        self.withdrawn: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self.last_used: dict[str, float] = {}
        self.origins: dict[str, Origin | None] = {}
        self.terms: dict[str, Terms] = {}
        self._sidecars: dict[str, _Sidecar] = {}
        self._starting: dict[str, asyncio.Task[_Sidecar]] = {}
        self._idle: asyncio.Condition | None = None
        self._client = UpstreamClient()

    # -- the SidecarPool protocol ----------------------------------------------------------
    def lease(
        self,
        spec: SidecarSpec,
        *,
        timeout: float,
        origin: Origin | None = None,
        terms: Terms = DEFAULT_TERMS,
    ) -> contextlib.AbstractAsyncContextManager[Upstream]:
        self.origins[spec.key] = origin
        self.terms[spec.key] = terms
        return self._lease(spec, timeout)

    def progress(self, key: str) -> str | None:
        return "loading tensors" if key in self._starting else None

    def state(self, key: str) -> str | None:
        sidecar = self._sidecars.get(key)
        if sidecar is not None and sidecar.alive:
            return "ready"
        if key in self._starting:
            return "starting"
        return None

    # -- test helpers ----------------------------------------------------------------------
    def sidecar(self, key: str) -> _Sidecar | None:
        return self._sidecars.get(key)

    async def evict(self, key: str) -> None:
        """Stop a sidecar once no request is in flight on it (like the reconciler)."""
        idle = self._condition()
        async with idle:
            await idle.wait_for(lambda: self.in_flight[key] == 0)
            sidecar = self._sidecars.pop(key, None)
        if sidecar is not None:
            await _stop(sidecar.proc)

    async def aclose(self) -> None:
        starting = list(self._starting.values())
        for task in starting:
            task.cancel()
        await asyncio.gather(*starting, return_exceptions=True)
        for sidecar in self._sidecars.values():
            await _stop(sidecar.proc)
        self._sidecars.clear()
        await self._client.aclose()

    # -- internals -------------------------------------------------------------------------
    def _condition(self) -> asyncio.Condition:
        if self._idle is None:
            self._idle = asyncio.Condition()
        return self._idle

    @contextlib.asynccontextmanager
    async def _lease(self, spec: SidecarSpec, timeout: float) -> AsyncIterator[Upstream]:
        key = spec.key
        self.waiting[key] += 1
        try:
            async with asyncio.timeout(timeout):
                sidecar = await asyncio.shield(self._ensure(spec))
        except asyncio.CancelledError:
            self.withdrawn[key] += 1
            raise
        finally:
            self.waiting[key] -= 1
        self.in_flight[key] += 1
        self.max_in_flight[key] = max(self.max_in_flight[key], self.in_flight[key])
        try:
            yield UpstreamAddress(key, "127.0.0.1", sidecar.port)
        finally:
            self.in_flight[key] -= 1
            self.last_used[key] = time.monotonic()
            idle = self._condition()
            async with idle:
                idle.notify_all()

    async def _ensure(self, spec: SidecarSpec) -> _Sidecar:
        sidecar = self._sidecars.get(spec.key)
        if sidecar is not None and sidecar.alive:
            return sidecar
        task = self._starting.get(spec.key)
        if task is None:
            task = asyncio.ensure_future(self._start(spec))
            self._starting[spec.key] = task
            task.add_done_callback(lambda _: self._starting.pop(spec.key, None))
        return await task

    async def _start(self, spec: SidecarSpec) -> _Sidecar:
        self.starts[spec.key] += 1
        if self.run_specs:
            port = free_port()
            argv = spec.command_line(spec.binary, "127.0.0.1", port)
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env={**os.environ, **spec.env_map},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        else:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(FAKE_UPSTREAM),
                "--port",
                "0",
                "--alias",
                spec.served_name,
                "--load-delay",
                str(self.load_delay),
                stdout=asyncio.subprocess.PIPE,
            )
        try:
            if not self.run_specs:
                port = await self._read_port(proc)
            await self._wait_healthy(proc, port)
        except BaseException:  # cancelled (nobody waits any more) or failed: no orphans
            await asyncio.shield(_stop(proc))
            raise
        sidecar = _Sidecar(spec.key, proc, port)
        sidecar.ready = True
        self._sidecars[spec.key] = sidecar
        return sidecar

    @staticmethod
    async def _read_port(proc: asyncio.subprocess.Process) -> int:
        assert proc.stdout is not None
        line = (await proc.stdout.readline()).decode()
        if "listening on" not in line:
            raise RuntimeError(f"fake upstream did not start: {line!r}")
        return int(line.rsplit(":", 1)[1])

    async def _wait_healthy(self, proc: asyncio.subprocess.Process, port: int) -> None:
        while True:  # bounded by the lease's timeout
            if proc.returncode is not None:
                raise RuntimeError(f"sidecar exited with {proc.returncode} while starting")
            try:
                response = await self._client.request("GET", "127.0.0.1", port, b"/health")
                await response.body()
                response.release()
                if response.status == 200:
                    return
            except UpstreamError:
                pass
            await asyncio.sleep(0.01)  # the fake pool's health probe interval, like a supervisor's


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(5):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


class ProxyServer:
    """The proxy under a real uvicorn, in a thread with its own uvloop event loop."""

    def __init__(
        self,
        resolver: Resolver,
        pool: FakeSidecarPool,
        *,
        observer: ProxyObserver | None = None,
        fallback: ASGIApp | None = None,
        front: str = "llamasup",
        wrap: Callable[[ASGIApp], ASGIApp] | None = None,
    ) -> None:
        self.resolver = resolver
        self.pool = pool
        self.app: ProxyApp = create_proxy_app(
            lambda: self.resolver, pool, observer=observer, fallback=fallback
        )
        if front == "llamasup":
            limits = front_limits(ServerConfig(), open_files_limit())
            http: Any = guarded_protocol(lambda: limits)
        else:
            http = "httptools"
        served: ASGIApp = self.app if wrap is None else wrap(self.app)
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            served, http=http, lifespan="off", access_log=False, log_level="warning"
        )
        self._server = uvicorn.Server(config)
        self._loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True, name="proxy")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._server.serve(sockets=[self._sock]))
        self._loop.run_until_complete(self.pool.aclose())
        self._loop.run_until_complete(self.app.aclose())

    def start(self) -> ProxyServer:
        self._thread.start()
        poll_until(lambda: self._server.started, what="uvicorn started")
        return self

    def call(self, factory: Callable[[], Coroutine[Any, Any, T]], timeout: float = 30) -> T:
        """Run a coroutine in the server's loop (where the pool lives) and return its result."""
        return asyncio.run_coroutine_threadsafe(factory(), self._loop).result(timeout)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(20)
        self._sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
