"""``llamasup serve``: run a :class:`~llamasup.service.app.Service` on uvicorn until a signal.

Signals: SIGINT/SIGTERM begin a clean shutdown (stop accepting, let requests in flight
finish within ``server.stop_grace``, then stop every sidecar in parallel within
``SHUTDOWN_TIMEOUT``); a second one forces it (SIGKILL to the sidecars,
connections dropped). SIGHUP reloads the profiles. Under systemd ``Type=notify`` the service
reports ``READY=1`` once it listens and ``STOPPING=1`` when it begins to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from llamasup.errors import LlamasupError
from llamasup.profiles.types import Profiles, is_loopback
from llamasup.service.app import Service
from llamasup.service.front_limits import log_open_files, raise_open_files_limit
from llamasup.service.log_limits import limit_repeats
from llamasup.service.uvicorn_settings import uvicorn_config

logger = logging.getLogger("llamasup")

SHUTDOWN_TIMEOUT = 30.0


class ServeError(LlamasupError):
    """llamasup cannot serve as configured (the message says why and what to do)."""


@dataclass(frozen=True)
class ServeOptions:
    path: Path
    host: str
    port: int
    allow_public: bool = False


def check_exposure(profiles: Profiles, host: str, *, allow_public: bool) -> None:
    """A front on a non-loopback address needs API keys, or an explicit opt-out."""
    if is_loopback(host) or profiles.server.api_keys:
        return
    if allow_public or profiles.server.allow_public_listen:
        logger.warning("listening on %s without API keys: anyone who can reach it may use it", host)
        return
    raise ServeError(
        f"refusing to listen on {host} without API keys: anyone on the network could run "
        "models and change profiles. Add server.api_keys (see README, 'API keys'), listen on "
        "127.0.0.1, or pass --allow-public (server.allow_public_listen: true) if that is intended."
    )


def sd_notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Tell systemd ``state`` when started with ``Type=notify``; a no-op otherwise."""
    address = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        logger.warning("sd_notify(%s) failed: %s", state, exc)
        return False
    return True


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: ``serve`` installs llamasup's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run(options: ServeOptions, profiles: Profiles) -> int:
    # before anything opens a descriptor: every client connection needs one
    before, after = raise_open_files_limit()
    limit_repeats()  # a flood (descriptors gone, a failing route) logs a count, not a torrent
    service = Service(
        options.path,
        profiles,
        listen=(options.host, options.port),
        allow_public=options.allow_public,
    )
    log_open_files(before, after, service.front_limits)
    # connections get as long to finish as a drained sidecar stop (server.stop_grace)
    config = uvicorn_config(
        service.asgi,
        host=options.host,
        port=options.port,
        limits=lambda: service.front_limits,
        lifespan="off",
        timeout_graceful_shutdown=max(1.0, profiles.server.stop_grace),
    )
    server = _Server(config)
    stopping = asyncio.Event()
    signals = _Signals(service, server, stopping)
    # handlers go in before anything starts: a SIGTERM while preload sidecars are still
    # loading is a clean shutdown too, not Python's default exit
    with signals.installed():
        # the front binds first: a port already taken (a second llamasup started by mistake)
        # ends here, before any pinned or preload model spends memory loading
        serving = asyncio.create_task(_serve(server), name="uvicorn")
        try:
            while not server.started and not stopping.is_set():
                if serving.done():
                    break
                await asyncio.sleep(0.01)
            if not server.started and not stopping.is_set():
                await service.close(SHUTDOWN_TIMEOUT)
                print(
                    f"llamasup: cannot listen on {options.host}:{options.port} (is another "
                    "llamasup running? `llamasup status` asks it); choose another address "
                    "with server.listen or --listen",
                    file=sys.stderr,
                )
                return 1
            if not stopping.is_set():
                await service.start()
                url = service.listen_url
                print(
                    f"llamasup: serving {len(profiles.models)} models from {options.path} "
                    f"(revision {service.profiles.revision}) on {url}; OpenAI API at {url}/v1, "
                    f"status at {url}/api/status",
                    file=sys.stderr,
                    flush=True,
                )
                sd_notify("READY=1")
                await asyncio.wait(
                    {serving, asyncio.create_task(stopping.wait())},
                    return_when=asyncio.FIRST_COMPLETED,
                )
            sd_notify("STOPPING=1")
            print(
                "llamasup: shutting down (a second signal forces it)", file=sys.stderr, flush=True
            )
            # stop accepting and let requests in flight finish (uvicorn bounds that by
            # stop_grace; a second signal cuts it short), then stop every sidecar
            service.hub.close()  # event streams end now: an open dashboard holds nothing up
            server.should_exit = True
            await asyncio.wait({serving}, timeout=profiles.server.stop_grace + 5.0)
            await service.close(SHUTDOWN_TIMEOUT)
        finally:
            if not serving.done():
                serving.cancel()
    return 0


async def _serve(server: uvicorn.Server) -> None:
    try:
        await server.serve()
    except SystemExit:  # uvicorn exits when it cannot bind
        return


class _Signals:
    def __init__(self, service: Service, server: uvicorn.Server, stopping: asyncio.Event) -> None:
        self._service = service
        self._server = server
        self._stopping = stopping
        self._reloads: set[asyncio.Task[object]] = set()

    def _stop(self) -> None:
        if self._stopping.is_set():
            logger.warning("second signal: killing sidecars and exiting now")
            self._server.force_exit = True
            self._service.force_stop()
            return
        self._stopping.set()

    def _reload(self) -> None:
        task: asyncio.Task[object] = asyncio.ensure_future(self._service.reload("sighup"))
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        handled = [(signal.SIGINT, self._stop), (signal.SIGTERM, self._stop)]
        if hasattr(signal, "SIGHUP"):
            handled.append((signal.SIGHUP, self._reload))
        for signum, handler in handled:
            loop.add_signal_handler(signum, handler)
        try:
            yield
        finally:
            for signum, _ in handled:
                loop.remove_signal_handler(signum)
