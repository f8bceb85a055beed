"""``llamasup serve``: run a :class:`~llamasup.service.app.Service` on uvicorn until a signal.

Signals: SIGINT/SIGTERM begin a clean shutdown (stop accepting, let requests in flight
finish within ``server.stop_grace``, then stop every sidecar in parallel within
``SHUTDOWN_TIMEOUT``); a second one forces it (SIGKILL to the sidecars,
connections dropped). SIGHUP reloads the profiles. SIGUSR2 (and ``POST /api/restart``) is a
planned restart: llamasup re-executes itself and keeps its sidecars, its listening sockets and
its idle client connections (see ``restart.py``). Under systemd ``Type=notify`` the service
reports ``READY=1`` once it listens (again after a restart), ``RELOADING=1`` when a restart
begins and ``STOPPING=1`` when it begins to stop.

The listening sockets are bound here (``listeners.py``), taken from systemd (socket
activation) or handed over by the previous image, and given to uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Coroutine, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from llamasup.errors import LlamasupError
from llamasup.profiles.types import Profiles, is_loopback
from llamasup.service import event_loop, handover_file, listeners
from llamasup.service.app import Service
from llamasup.service.front_limits import log_open_files, raise_open_files_limit
from llamasup.service.front_server import FrontServer
from llamasup.service.log_limits import limit_repeats
from llamasup.service.restart import Restarter, RestartError, execute, program
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


async def run(options: ServeOptions, profiles: Profiles) -> int:
    # before anything opens a descriptor: every client connection needs one
    before, after = raise_open_files_limit()
    limit_repeats()  # a flood (descriptors gone, a failing route) logs a count, not a torrent
    handover_path, handover = _find_handover(profiles)
    sockets = _front_sockets(options, profiles, handover)
    if sockets is None:
        return 1
    host, port = listeners.address_of(sockets[0])
    service = Service(
        options.path, profiles, listen=(host, port), allow_public=options.allow_public
    )
    service.restarter = Restarter(program())
    log_open_files(before, after, service.front_limits)
    if handover is not None:
        # before the front serves: a request for an adopted model goes straight to it
        await service.take_over(handover_path, handover)
    # connections get as long to finish as a drained sidecar stop (server.stop_grace)
    config = uvicorn_config(
        service.asgi,
        host=host,
        port=port,
        limits=lambda: service.front_limits,
        lifespan="off",
        timeout_graceful_shutdown=max(1.0, profiles.server.stop_grace),
    )
    stopping = asyncio.Event()
    signals = _Signals(service, stopping)
    # handlers go in before anything starts: a SIGTERM while preload sidecars are still
    # loading is a clean shutdown too, not Python's default exit
    with signals.installed():
        first = True
        taken_back: list[int] = []  # client connections of a restart that did not happen
        while True:
            server = FrontServer(config)
            signals.server = server
            serving = asyncio.create_task(_serve(server, sockets), name="uvicorn")
            try:
                if not await _started(server, serving, stopping):
                    await service.close(SHUTDOWN_TIMEOUT)
                    print(f"llamasup: cannot serve on {host}:{port}", file=sys.stderr)
                    return 1
                if first and handover is not None and handover_file.written_here(handover):
                    if service.last_restart is not None:
                        service.last_restart.serving_monotonic = time.monotonic()
                    await server.adopt_connections(handover.connection_fds)
                await server.adopt_connections(taken_back)
                taken_back = []
                if first and not stopping.is_set():
                    first = False
                    await service.start()
                    _announce(service, options, profiles)
                sd_notify("READY=1")
                if await _until_stop_or_restart(serving, stopping, service):
                    sockets, taken_back = await _restart(
                        service, server, serving, sockets, stopping
                    )
                    continue  # no exec: serve again on the same sockets (or stop)
                await _shut_down(service, server, serving)
            finally:
                if not serving.done():
                    serving.cancel()
            return 0


async def _started(
    server: FrontServer, serving: asyncio.Task[None], stopping: asyncio.Event
) -> bool:
    """Wait until the front listens; False if it could not (a stop request counts as True)."""
    while not server.started and not stopping.is_set():
        if serving.done():
            break
        await asyncio.sleep(0.001)
    return server.started or stopping.is_set()


async def _shut_down(service: Service, server: FrontServer, serving: asyncio.Task[None]) -> None:
    sd_notify("STOPPING=1")
    print("llamasup: shutting down (a second signal forces it)", file=sys.stderr, flush=True)
    # stop accepting and let requests in flight finish (uvicorn bounds that by stop_grace; a
    # second signal cuts it short), then stop every sidecar
    service.hub.close()  # event streams end now: an open dashboard holds nothing up
    server.request_exit()
    await asyncio.wait({serving}, timeout=service.profiles.server.stop_grace + 5.0)
    await service.close(SHUTDOWN_TIMEOUT)


def _front_sockets(
    options: ServeOptions, profiles: Profiles, handover: handover_file.Handover | None
) -> list[socket.socket] | None:
    """The front's listening sockets, checked for exposure; None (said why) if there are none."""
    try:
        sockets = _listen(options, handover)
    except OSError as exc:
        print(
            f"llamasup: cannot listen on {options.host}:{options.port} ({exc}; is another "
            "llamasup running? `llamasup status` asks it); choose another address "
            "with server.listen or --listen",
            file=sys.stderr,
        )
        return None
    try:
        for sock in sockets:
            host = listeners.address_of(sock)[0]
            check_exposure(profiles, host, allow_public=options.allow_public)
    except ServeError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _find_handover(profiles: Profiles) -> tuple[Path, handover_file.Handover | None]:
    """The hand-over file this start must act on, if any: the one the previous image named
    (a planned restart), else one left in the state directory (a crash during a restart)."""
    named = os.environ.pop(handover_file.ENV, None)
    path = Path(named) if named else handover_file.path_in(profiles.server.state_dir)
    if not named and not path.exists():
        return path, None
    try:
        return path, handover_file.read(path)
    except handover_file.HandoverFileError as exc:
        # its sidecars, if any are ours, are stopped as leftovers when the service starts
        logger.error("restart: %s; nothing is adopted", exc)
        handover_file.remove(path)
        return path, None


def _listen(options: ServeOptions, handover: handover_file.Handover | None) -> list[socket.socket]:
    """The front's sockets: handed over by the previous image (if they still listen where
    this one should), passed by systemd (socket activation), else bound now."""
    if handover is not None and handover.listen_fds and handover_file.written_here(handover):
        try:
            inherited = listeners.from_fds(handover.listen_fds)
        except OSError as exc:
            logger.error("restart: the front's sockets were not handed over (%s)", exc)
        else:
            if listeners.serves(inherited, options.host, options.port):
                return inherited
            try:
                bound = listeners.bind(options.host, options.port)
            except OSError as exc:
                where = ", ".join("{}:{}".format(*listeners.address_of(sock)) for sock in inherited)
                logger.error(
                    "restart: cannot listen on %s:%d (%s); still listening on %s",
                    options.host, options.port, exc, where,
                )  # fmt: skip
                return inherited
            for sock in inherited:
                sock.close()
            return bound
    activated = listeners.from_systemd(os.environ)
    if activated:
        return activated
    return listeners.bind(options.host, options.port)


def _announce(service: Service, options: ServeOptions, profiles: Profiles) -> None:
    url = service.listen_url
    report = service.last_restart
    if report is not None and report.in_place:
        steps = report.timeline_ms() or {}
        took = ", ".join(f"{name} {value:.0f} ms" for name, value in steps.items() if value)
        print(
            f"llamasup: restarted in place (pid {os.getpid()}, restart {report.restarts}; "
            f"{took}); sidecars: {report.summary()}",
            file=sys.stderr,
            flush=True,
        )
    print(
        f"llamasup: serving {len(profiles.models)} models from {options.path} "
        f"(revision {service.profiles.revision}) on {url}; OpenAI API at {url}/v1, "
        f"status at {url}/api/status (event loop: {event_loop.loop_name()})",
        file=sys.stderr,
        flush=True,
    )


async def _until_stop_or_restart(
    serving: asyncio.Task[None], stopping: asyncio.Event, service: Service
) -> bool:
    """Wait until a stop (False) or an accepted restart request (True)."""
    assert service.restarter is not None
    waits = {
        asyncio.create_task(stopping.wait()),
        asyncio.create_task(service.restarter.requested.wait()),
    }
    try:
        await asyncio.wait({serving, *waits}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    return service.restarter.requested.is_set() and not stopping.is_set() and not serving.done()


async def _restart(
    service: Service,
    server: FrontServer,
    serving: asyncio.Task[None],
    sockets: list[socket.socket],
    stopping: asyncio.Event,
) -> tuple[list[socket.socket], list[int]]:
    """Drain, hand over and exec. Returns only if that failed (or a stop came meanwhile): the
    sockets to serve on again and the client connections to take back."""
    restarter = service.restarter
    assert restarter is not None
    kept = listeners.keep_for_exec(sockets)
    sd_notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
    # stop accepting (connections wait in the listen queue, which the kept duplicates hold
    # open) and let the requests in flight finish, bounded by stop_grace; event streams end
    # now (an open dashboard must not hold the drain up; it reconnects to the new program)
    service.hub.close()
    server.request_exit(hand_over=True)
    await asyncio.wait({serving}, timeout=service.profiles.server.stop_grace + 5.0)
    drained = time.monotonic()
    connections = server.handed_over or []
    path: Path | None = None
    try:
        path = await service.hand_over(kept, connections, restarter.requested_at)
        logger.warning(
            "restart: drained in %.0f ms, handing %d sidecars over; exec %s",
            (drained - restarter.requested_at) * 1000,
            len(service.supervisor.keys()),
            " ".join(restarter.argv),
        )
        if stopping.is_set():
            # a stop came during the drain: it wins (the new program would not know of it)
            logger.warning("restart: a stop was asked for meanwhile; stopping instead")
        else:
            execute(restarter.argv, path)
    except Exception:
        logger.exception("restart failed; this llamasup keeps serving with its sidecars")
    service.resume(path)
    restarter.cancelled()
    return listeners.from_fds(kept), connections


async def _serve(server: uvicorn.Server, sockets: list[socket.socket]) -> None:
    try:
        await server.serve(sockets=sockets)
    except SystemExit:  # uvicorn exits when it cannot serve
        return


class _Signals:
    def __init__(self, service: Service, stopping: asyncio.Event) -> None:
        self._service = service
        self.server: uvicorn.Server | None = None
        self._stopping = stopping
        self._tasks: set[asyncio.Task[object]] = set()

    def _stop(self) -> None:
        if self._stopping.is_set():
            logger.warning("second signal: killing sidecars and exiting now")
            if self.server is not None:
                self.server.force_exit = True
            self._service.force_stop()
            return
        self._stopping.set()

    def _reload(self) -> None:
        self._spawn(self._service.reload("sighup"))

    def _restart(self) -> None:
        self._spawn(self._restart_quietly())

    async def _restart_quietly(self) -> None:
        with contextlib.suppress(RestartError):  # refused: logged by the restarter
            await self._service.restart("sigusr2")

    def _spawn(self, work: Coroutine[Any, Any, object]) -> None:
        task: asyncio.Task[object] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        handled = [(signal.SIGINT, self._stop), (signal.SIGTERM, self._stop)]
        if hasattr(signal, "SIGHUP"):
            handled.append((signal.SIGHUP, self._reload))
        if hasattr(signal, "SIGUSR2"):
            handled.append((signal.SIGUSR2, self._restart))
        for signum, handler in handled:
            loop.add_signal_handler(signum, handler)
        try:
            yield
        finally:
            for signum, _ in handled:
                loop.remove_signal_handler(signum)
