"""uvicorn's httptools protocol with the limits it lacks: connections, head size, head time.

uvicorn hands every connection to this protocol (``uvicorn.Config(http=...)`` accepts a
class). On top of what uvicorn does it:

- answers a connection past ``max_connections`` with ``503 too_many_connections`` (as soon
  as its request head arrives, or closes it if none does within a second) instead of
  holding it: uvicorn's ``limit_concurrency`` also counts connections but lets idle ones
  stay, which is what exhausts the descriptors;
- bounds a request head (request line and headers) to ``max_head_bytes`` and
  ``max_headers``: httptools has no limit of its own and buffers a header until it ends,
  so ten clients sending 50 MB headers cost half a gigabyte. Past either bound the answer
  is ``431 request_header_too_large`` and the connection is closed;
- closes a connection whose request head is not complete ``head_timeout`` seconds after it
  opened or after the request began: silently if nothing was sent, else with ``408``.
  uvicorn only times out idle keep-alive connections (``idle_timeout`` here), never a new
  one that sends nothing or a head that trickles in.

Each answer is llamasup's error envelope with ``X-Llamasup-Error: 1`` and ``connection:
close``. The per-request cost is a timer per head and a few additions per header; response
bodies are not touched.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, ClassVar, cast

import httptools
from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from llamasup.proxy.asgi import DIRECT_BODY
from llamasup.proxy.envelope import Dialect, ProxyError
from llamasup.service.front_direct import CycleBody
from llamasup.service.front_limits import FrontLimits

logger = logging.getLogger(__name__)

#: seconds a connection past the cap may take to send the request it is refused
REFUSAL_WAIT = 1.0
#: seconds a refused connection is read (and the data dropped) after the answer: closing
#: with unread data makes the kernel reset the connection, and a reset can destroy the
#: answer before the client reads it
LINGER = 2.0


class _HeadRefused(Exception):
    """Raised in a parser callback to stop parsing a head that is over a limit."""


class GuardedHttpProtocol(HttpToolsProtocol):
    """Build one bound to the live limits with :func:`guarded_protocol`."""

    limits_source: ClassVar[Callable[[], FrontLimits]]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # read once per connection: a reload changes the limits of the next connections
        self.limits = type(self).limits_source()
        # uvicorn's idle keep-alive timer (typed int there; call_later takes any seconds)
        self.timeout_keep_alive = self.limits.idle_timeout  # type: ignore[assignment]
        self._head_timer: asyncio.TimerHandle | None = None
        #: between two requests or inside a head (not in a body or a response)
        self._in_head = True
        self._head_started = False
        #: bytes received while the current head is incomplete
        self._head_received = 0
        #: bytes of the current head parsed so far (URL, names and values, 4 per header)
        self._head_size = 0
        self._head_fields = 0
        self._refusal: ProxyError | None = None
        #: answered and closing: what still arrives is dropped
        self._lingering = False
        #: past the connection cap: refused, never handed over
        self._over_capacity = False
        #: set during a planned restart: takes this connection's socket once it is idle
        self._hand_over_to: Callable[[int], None] | None = None

    # -- connection ------------------------------------------------------------------------
    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        self.transport = cast(asyncio.Transport, _HeadWithBody(transport, self.loop))
        wait = self.limits.head_timeout
        if len(self.connections) > self.limits.max_connections:
            self._over_capacity = True
            self.app = _over_capacity(len(self.connections), self.limits.max_connections)
            wait = min(wait, REFUSAL_WAIT)
        self._arm_head_timer(wait)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's data_received, with the head limits: a refusal raised in a parser
        # callback is answered here, a head still incomplete is measured after each read
        if self._lingering:
            return
        if self._in_head:
            self._head_received += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._refuse(self._refusal)
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        if self._in_head and self._head_received > self.limits.max_head_bytes:
            self._refuse(self._head_too_large())

    # -- parser callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_started = True
        self._head_size = 0
        self._head_fields = 0
        if self._head_timer is None:  # the next request of a kept-alive connection
            self._arm_head_timer(self.limits.head_timeout)

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        if self._head_size > self.limits.max_head_bytes:
            self._stop(self._head_too_large())
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_fields += 1
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self.limits.max_head_bytes:
            self._stop(self._head_too_large())
        if self._head_fields > self.limits.max_headers:
            self._stop(
                ProxyError(
                    431,
                    "request_header_too_large",
                    f"request has more than {self.limits.max_headers} header fields",
                )
            )
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        scope = self.scope
        body = CycleBody()
        # an ASGI extension entry is typed as a dict; the proxy reads it as a DirectBody
        scope["extensions"] = {DIRECT_BODY: body}  # type: ignore[dict-item]
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is scope:  # not an upgrade uvicorn took over
            body.cycle = cycle

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_started = False
        self._head_received = 0

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._hand_over_to is not None and self._hand_over_if_idle():
            return
        if self.transport.is_closing() or not (self._in_head and self._head_started):
            return
        # the next head began arriving during the response: its own timeout applies (it
        # answers 408), not the idle one uvicorn has just armed
        self._unset_keepalive_if_required()
        if self._head_timer is None:
            self._arm_head_timer(self.limits.head_timeout)

    # -- a planned restart ------------------------------------------------------------------
    def hand_over(self, give: Callable[[int], None]) -> None:
        """Give this connection to the next llamasup image as soon as it is between requests
        (now, or when its response ends): ``give(fd)`` receives an inheritable duplicate of
        its socket and this image lets go of it without closing the TCP connection. The
        client sees nothing: its next request is read by the next image (from the socket's
        buffer, if it is already there). Closing an idle keep-alive connection instead races
        with a request the client may be sending at that moment, which would get a reset."""
        self._hand_over_to = give
        self._hand_over_if_idle()

    def _hand_over_if_idle(self) -> bool:
        give = self._hand_over_to
        transport = self.transport
        if give is None or transport.is_closing() or self._lingering or self._over_capacity:
            return False
        if self.cycle is not None and not self.cycle.response_complete:
            return False  # a response under way
        if self.pipeline or not self._in_head or self._head_started or self._head_received:
            return False  # something of the next request was read: it is answered here
        sock = transport.get_extra_info("socket")
        if sock is None:
            return False
        transport.pause_reading()
        duplicate = os.dup(sock.fileno())
        os.set_inheritable(duplicate, True)
        self._hand_over_to = None
        self._cancel_head_timer()
        # closes only this descriptor (after the rest of the response is written): the
        # connection itself lives on in the duplicate
        transport.close()
        give(duplicate)
        return True

    # -- refusals --------------------------------------------------------------------------
    def _head_too_large(self) -> ProxyError:
        return ProxyError(
            431,
            "request_header_too_large",
            f"request line and headers exceed {self.limits.max_head_bytes} bytes",
        )

    def _stop(self, refusal: ProxyError) -> None:
        self._refusal = refusal
        raise _HeadRefused(refusal.message)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._in_head:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a head arriving behind a response: timed from the response's end
        if not self._head_started:  # nothing sent: nobody to tell
            self.transport.close()
            return
        seconds = self.limits.head_timeout
        self._refuse(
            ProxyError(
                408,
                "request_timeout",
                f"request head not complete within {seconds:g} s (server.client_timeouts.head)",
            )
        )

    def _refuse(self, error: ProxyError) -> None:
        """Answer ``error`` and end the connection: the answer, our end shut, then whatever
        the client still sends is read and dropped until it closes too (or LINGER)."""
        self._cancel_head_timer()
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(_raw_answer(error))
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._lingering = True
        self.flow.resume_reading()
        self.loop.call_later(LINGER, transport.close)

    def _arm_head_timer(self, seconds: float) -> None:
        self._head_timer = self.loop.call_later(seconds, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None


class _HeadWithBody:
    """The connection's transport, sending a response head together with what follows it.

    uvicorn writes a response's head and its body in two ``write`` calls, two syscalls per
    response. A head is held until the next write or the end of the event loop's current
    turn, whichever comes first: a body sent at once goes out with it in one write, and a
    head whose body comes later (a stream) is not delayed past the current turn.
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        # uvicorn writes bytes; per stream chunk this is one prefix test, no copy
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif data.startswith(b"HTTP/1.1 "):
            self._held = data
            self._loop.call_soon(self._flush)
        else:
            self._transport.write(data)

    def _flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def is_closing(self) -> bool:  # asked per streamed event (front_direct): no __getattr__
        return self._transport.is_closing()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def guarded_protocol(limits: Callable[[], FrontLimits]) -> type[GuardedHttpProtocol]:
    """The protocol class for uvicorn's ``http=``, reading ``limits()`` per connection."""

    class Bound(GuardedHttpProtocol):
        limits_source = staticmethod(limits)

    return Bound


def _raw_answer(error: ProxyError) -> bytes:
    """A whole HTTP response for ``error`` that ends the connection."""
    body = error.body(Dialect.OPENAI)
    status = HTTPStatus(error.status)
    lines = [b"HTTP/1.1 %d %s" % (status.value, status.phrase.encode())]
    headers = error.headers(len(body))
    lines += [name + b": " + value for name, value in headers if name != b"connection"]
    lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _over_capacity(open_now: int, limit: int) -> ASGI3Application:
    """The app a connection past the cap gets instead of llamasup's: one 503, then close."""
    logger.warning(
        "refusing client connections: %d open, the limit is %d "
        "(server.max_connections, and what the open files limit allows)",
        open_now,
        limit,
    )
    error = ProxyError(
        503,
        "too_many_connections",
        f"llamasup has {limit} client connections open, its limit (server.max_connections, "
        "and what its open files limit allows); retry shortly",
    )
    body = error.body(Dialect.OPENAI)
    headers = [*error.headers(len(body)), (b"retry-after", b"1"), (b"connection", b"close")]

    async def refuse(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return cast(ASGI3Application, refuse)
