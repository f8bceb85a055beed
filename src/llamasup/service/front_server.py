"""The front's uvicorn server: serves on sockets it is given, notices a stop at once, drains
quickly, and can hand its idle client connections to the next llamasup image (a planned
restart) or take them over from the previous one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Iterator, Sequence
from email.utils import formatdate

import uvicorn
from uvicorn.server import ServerState

from llamasup.service.front_protocol import GuardedHttpProtocol

logger = logging.getLogger("llamasup")

#: how often a draining front looks whether its last connection closed
DRAIN_POLL = 0.005


class DatedServerState(ServerState):
    """uvicorn's shared server state, whose default response headers (``Date`` and the
    configured ones) are made when a request reads them, at most once a second, instead of
    by a timer that wakes the idle server ten times a second to keep them fresh."""

    def __init__(self, config: uvicorn.Config) -> None:
        self._config = config
        self._second = -1
        self._headers: list[tuple[bytes, bytes]] = []
        super().__init__()

    @property
    def default_headers(self) -> list[tuple[bytes, bytes]]:
        now = time.time()
        if int(now) != self._second:
            self._second = int(now)
            date = [(b"date", formatdate(now, usegmt=True).encode())]
            self._headers = (date if self._config.date_header else []) + list(
                self._config.encoded_headers
            )
        return self._headers

    @default_headers.setter
    def default_headers(self, _value: list[tuple[bytes, bytes]]) -> None:
        """uvicorn assigns them (at start, and on its tick): they are made on reading."""


class FrontServer(uvicorn.Server):
    """uvicorn without its own signal handling (``serve`` installs llamasup's), serving on
    sockets it is given, and quick to notice a stop and to drain: uvicorn checks for one every
    100 ms and then waits 100 ms more, which a planned restart would add to the time its
    clients wait. Idle, it does not wake at all: a stop is an event, the ``Date`` header is
    made when a response needs it (``DatedServerState``)."""

    def __init__(self, config: uvicorn.Config) -> None:
        self.exit_now = asyncio.Event()
        super().__init__(config)
        self.server_state = DatedServerState(config)
        #: during a planned restart: descriptors of the client connections handed over
        self.handed_over: list[int] | None = None

    @property
    def should_exit(self) -> bool:
        return self._should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        # whoever sets it (uvicorn itself, a test, a benchmark) ends the main loop at once
        self._should_exit = value
        if value:
            self.exit_now.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def request_exit(self, *, hand_over: bool = False) -> None:
        """Stop serving; ``hand_over``: keep the client connections for the next image."""
        if hand_over:
            self.handed_over = []
        self.should_exit = True

    async def adopt_connections(self, fds: Sequence[int]) -> None:
        """Serve client connections the previous image handed over, as if just accepted."""
        loop = asyncio.get_running_loop()
        config = self.config

        def protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config,
                server_state=self.server_state,
                app_state=self.lifespan.state,
                _loop=loop,
            )

        for fd in fds:
            try:
                sock = socket.socket(fileno=fd)
            except OSError:
                continue
            sock.set_inheritable(False)
            try:
                await loop.connect_accepted_socket(protocol, sock)
            except OSError:
                sock.close()

    async def main_loop(self) -> None:
        if self.config.callback_notify is not None or self.config.limit_max_requests:
            await super().main_loop()  # what uvicorn's tick is for: llamasup uses neither
            return
        await self.exit_now.wait()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # as uvicorn's: stop accepting, end idle connections and let the others finish their
        # response (bounded by timeout_graceful_shutdown), then cancel what is left
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        handed_over = self.handed_over
        for connection in list(self.server_state.connections):
            if handed_over is not None and isinstance(connection, GuardedHttpProtocol):
                connection.hand_over(handed_over.append)
            else:
                connection.shutdown()
        state = self.server_state
        try:
            async with asyncio.timeout(self.config.timeout_graceful_shutdown):
                # uvicorn's connection set tells nobody when it empties: look often
                while (state.connections or state.tasks) and not self.force_exit:  # noqa: ASYNC110
                    await asyncio.sleep(DRAIN_POLL)
        except TimeoutError:
            logger.error("cancelling %d requests still running after the grace", len(state.tasks))
            for task in state.tasks:
                task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        for server in self.servers:
            await server.wait_closed()
        if not self.force_exit:
            await self.lifespan.shutdown()
