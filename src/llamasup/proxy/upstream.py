"""A small keep-alive HTTP/1.1 client for talking to sidecars on loopback.

Why not httpx: measured in ``bench/RESULTS.md`` (``## Proxy overhead``), httpx's per-request
and per-chunk costs alone exceed the proxy's budget on a 2-core machine. Sidecars speak plain
HTTP/1.1 on loopback (cpp-httplib in llama-server), so this client needs very little: one
protocol object per connection, the response parsed by ``httptools`` (already installed with
``uvicorn[standard]``), body chunks handed over as they arrive, idle connections reused.

What it deliberately does not do: TLS, proxies, redirects, cookies, HTTP/2, request
streaming (bodies are bounded by ``server.max_request_body`` and already in memory).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import cast

import httptools

#: pause reading from a sidecar once this much body is waiting for a slow client
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024


class UpstreamError(Exception):
    """The sidecar could not be reached, or broke the connection before the response ended."""

    def __init__(self, message: str, *, response_started: bool) -> None:
        self.response_started = response_started
        super().__init__(message)


class _Connection(asyncio.Protocol):
    """One TCP connection to a sidecar, carrying one request at a time."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        self._loop = asyncio.get_running_loop()
        self._parser: httptools.HttpResponseParser | None = None
        self._head: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._complete = False
        self._got_bytes = False
        self._error: BaseException | None = None
        self._head_only = False
        self._framed = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = False
        #: called once when the connection is gone (its host's open count goes down)
        self.on_gone: Callable[[], None] | None = None
        #: takes body bytes straight from the parser (see ``UpstreamResponse.divert``)
        self._sink: Callable[[bytes], bool] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # bytes nobody asked for: the connection cannot be trusted
            self._abort()
            return
        self._got_bytes = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(
                UpstreamError("sidecar tried to upgrade the connection", response_started=True)
            )
        except httptools.HttpParserError as exc:
            self._fail(
                UpstreamError(f"malformed response from sidecar: {exc}", response_started=True)
            )

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._gone()
        if self._parser is None or self._complete:
            return
        head = self._head
        if head is not None and head.done() and not self._framed:
            # no Content-Length and not chunked: the body ends at EOF
            self._complete = True
            self._wake()
            return
        reason = f": {exc}" if exc else ""
        self._fail(
            UpstreamError(
                f"sidecar closed the connection{reason}",
                response_started=head is not None and head.done(),
            )
        )

    def pause_writing(self) -> None:
        pass  # request bodies are bounded and already in memory

    def resume_writing(self) -> None:
        pass

    # -- httptools callbacks ---------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None
        self.status = parser.get_status_code()
        self.keep_alive = parser.should_keep_alive()
        self._framed = any(
            n.lower() in (b"content-length", b"transfer-encoding") for n, _ in self.headers
        )
        if self.status == 100:  # interim response: forget it, the real head follows
            self.headers = []
            return
        if self._head_only or self.status in (204, 304):
            self._complete = True
            self._framed = True
        head = self._head
        if head is not None and not head.done():
            head.set_result(None)

    def on_body(self, body: bytes) -> None:
        sink = self._sink
        if sink is not None and not self._chunks:
            if sink(body):
                return
            self._sink = None  # refused: this and what follows wait for read()
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status == 100:
            return
        self._complete = True
        self._wake()

    # -- the client side -------------------------------------------------------------------
    def start(self, request: bytes, *, head_only: bool) -> asyncio.Future[None]:
        assert self.transport is not None
        self._parser = httptools.HttpResponseParser(self)
        self._head = self._loop.create_future()
        self._waiter = None
        self._chunks.clear()
        self._buffered = 0
        self._complete = False
        self._got_bytes = False
        self._error = None
        self._framed = False
        self._head_only = head_only
        self._sink = None
        self.status = 0
        self.headers = []
        self.transport.write(request)
        return self._head

    @property
    def got_bytes(self) -> bool:
        return self._got_bytes

    @property
    def complete(self) -> bool:
        return self._complete and not self._chunks

    async def read(self) -> bytes:
        """The body bytes received so far (joined), waiting if none; ``b""`` at the end."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._complete:
                return b""
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunks = self._chunks
        if len(chunks) == 1:
            data = chunks.popleft()
        else:
            data = b"".join(chunks)
            chunks.clear()
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        head = self._head
        if head is not None and not head.done():
            head.set_exception(error)
            head.exception()  # retrieved here so an abandoned request logs no warning
        self._wake()
        self._abort()

    def _abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self._gone()

    def _gone(self) -> None:
        on_gone, self.on_gone = self.on_gone, None
        if on_gone is not None:
            on_gone()

    def reusable(self) -> bool:
        return self._complete and self.keep_alive and not self.closed and self._error is None

    def close(self) -> None:
        self._abort()


class UpstreamResponse:
    """A response being received; read it to the end, then :meth:`release` it (always)."""

    __slots__ = ("_client", "_conn", "headers", "status")

    def __init__(self, client: UpstreamClient, conn: _Connection) -> None:
        self._client = client
        self._conn = conn
        self.status = conn.status
        self.headers = conn.headers

    async def read(self) -> bytes:
        """Next body bytes; ``b""`` once the body is complete.

        Raises :class:`UpstreamError` if the sidecar breaks the connection first.
        """
        return await self._conn.read()

    @property
    def complete(self) -> bool:
        """True when every body byte has been read (the next :meth:`read` returns ``b""``)."""
        return self._conn.complete

    def divert(self, sink: Callable[[bytes], bool] | None) -> None:
        """Hand body bytes to ``sink`` as the parser produces them, in the connection's own
        callback, instead of buffering them for :meth:`read` and waking its reader.

        ``sink`` returns False to refuse a piece (its consumer cannot take it now): that
        piece and everything after it is buffered for :meth:`read` as usual, and the
        diversion ends. It is also skipped while bytes are buffered, so order is kept.
        :meth:`read` still reports the end of the body and any error. ``None`` ends it.
        """
        self._conn._sink = sink

    async def body(self) -> bytes:
        parts = []
        while chunk := await self.read():
            parts.append(chunk)
        return b"".join(parts)

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def release(self) -> None:
        """Give the connection back for reuse if the response ended cleanly, else close it.

        Closing mid-response is how a cancelled request reaches the sidecar: llama-server
        stops generating when its client goes away.
        """
        self._client._release(self._conn)


class _Host:
    """One sidecar address: its idle connections, how many are open, who waits for one."""

    __slots__ = ("idle", "open", "waiters")

    def __init__(self) -> None:
        self.idle: list[_Connection] = []
        self.open = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    def wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class UpstreamClient:
    """Keep-alive connections to sidecars, shared by every request of the proxy.

    ``max_connections`` (per request, for its sidecar) caps the connections open to one
    address, idle ones included: llama-server serves each connection on a thread of its pool
    for as long as it stays open (kept-alive idle time included), and a connection that
    arrives when the fixed threads are all held can wait for a keep-alive to lapse (5 s,
    measured in bench/RESULTS.md). Over the cap a request waits here for a connection.
    """

    def __init__(
        self,
        *,
        connect_timeout: float = 10.0,
        max_idle_per_host: int = 64,
        idle_timeout: float = 4.0,
    ) -> None:
        # idle_timeout stays below cpp-httplib's 5 s keep-alive so a reused connection is
        # rarely one the sidecar is closing at that very moment
        self.connect_timeout = connect_timeout
        self.max_idle_per_host = max_idle_per_host
        self.idle_timeout = idle_timeout
        self._hosts: dict[tuple[str, int], _Host] = {}

    async def request(
        self,
        method: str,
        host: str,
        port: int,
        target: bytes,
        *,
        headers: Iterable[tuple[bytes, bytes]] = (),
        body: bytes = b"",
        max_connections: int | None = None,
    ) -> UpstreamResponse:
        """Send a request and return once the response head has arrived.

        ``headers`` must not contain Host, Content-Length, Transfer-Encoding or Connection:
        the client sets them. A reused connection that the sidecar closed before answering
        is retried once on a fresh one; nothing else is retried.
        """
        head = _request_head(method, f"{host}:{port}", target, headers, len(body))
        request = head + body if len(body) < 65536 else b"".join((head, body))
        head_only = method == "HEAD"
        address = (host, port)
        conn = await self._acquire(address, max_connections)
        try:
            await conn.start(request, head_only=head_only)
        except UpstreamError:
            conn.close()
            if not (conn.reused and not conn.got_bytes):
                raise
            conn = await self._acquire(address, max_connections, reuse=False)
            try:
                await conn.start(request, head_only=head_only)
            except BaseException:
                conn.close()
                raise
        except BaseException:
            conn.close()
            raise
        return UpstreamResponse(self, conn)

    async def _acquire(
        self, address: tuple[str, int], limit: int | None, *, reuse: bool = True
    ) -> _Connection:
        state = self._hosts.get(address)
        if state is None:
            state = self._hosts[address] = _Host()
        while True:
            if reuse:
                conn = self._reusable(state)
                if conn is not None:
                    return conn
            if limit is None or state.open < limit:
                return await self._connect(address, state)
            if state.idle:  # at the cap with idle ones (reuse=False): make room
                state.idle.pop(0).close()
                continue
            waiter = asyncio.get_running_loop().create_future()
            state.waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    state.wake_one()  # it was this one's turn: pass it on
                raise

    def _reusable(self, state: _Host) -> _Connection | None:
        idle = state.idle
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue
            if now - conn.idle_since > self.idle_timeout:
                conn.close()
                continue
            conn.reused = True
            return conn
        return None

    async def _connect(self, address: tuple[str, int], state: _Host) -> _Connection:
        loop = asyncio.get_running_loop()
        state.open += 1
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(address), address[0], address[1]
                )
        except BaseException as exc:
            state.open -= 1
            state.wake_one()
            if isinstance(exc, OSError | TimeoutError):
                raise UpstreamError(
                    f"cannot connect to sidecar at {address[0]}:{address[1]}: {exc or 'timed out'}",
                    response_started=False,
                ) from exc
            raise

        def gone() -> None:
            state.open -= 1
            state.wake_one()

        if protocol.closed:  # lost between connecting and here
            gone()
        else:
            protocol.on_gone = gone
        return protocol

    def _release(self, conn: _Connection) -> None:
        conn._sink = None
        if not conn.reusable():
            conn.close()
            return
        conn._parser = None
        state = self._hosts.get(conn.address)
        if state is None or len(state.idle) >= self.max_idle_per_host:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        state.idle.append(conn)
        state.wake_one()

    def idle_connections(self, host: str, port: int) -> int:
        state = self._hosts.get((host, port))
        return 0 if state is None else sum(1 for c in state.idle if not c.closed)

    def open_connections(self, host: str, port: int) -> int:
        """Connections open to ``host:port`` now, in use or idle."""
        state = self._hosts.get((host, port))
        return 0 if state is None else state.open

    async def aclose(self) -> None:
        for state in self._hosts.values():
            for conn in state.idle:
                conn.close()
            state.idle.clear()


def _request_head(
    method: str, authority: str, target: bytes, headers: Iterable[tuple[bytes, bytes]], length: int
) -> bytes:
    lines = [method.encode("ascii"), b" ", target, f" HTTP/1.1\r\nhost: {authority}\r\n".encode()]
    for name, value in headers:
        lines += (name, b": ", value, b"\r\n")
    if length or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
        lines.append(b"content-length: %d\r\n\r\n" % length)
    else:
        lines.append(b"\r\n")
    return b"".join(lines)
