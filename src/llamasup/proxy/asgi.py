"""The bits of ASGI the proxy uses: types, reading a bounded body, sending small answers.

Nothing here knows an API's error format: a body over its limit raises
:class:`BodyTooLargeError`, a body that stalls :class:`BodyTimeoutError`, and each front
answers them in its own envelope.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: the scope extension under which llamasup's own front offers a :class:`DirectBody`
DIRECT_BODY = "llamasup.direct_body"


class DirectBody(Protocol):
    """A shortcut for the body of a response already started through ``send``: bytes written
    here go to the client's connection at once, framed as ``send`` would frame them, without
    an ASGI message and a task switch per piece (the relay of an event stream calls it from
    the upstream connection's callback). llamasup's front offers it per request in
    ``scope["extensions"][DIRECT_BODY]``; other servers do not, and everything works
    without it. The response still ends through ``send`` (``more_body: False``)."""

    def writable(self) -> bool:
        """True when :meth:`write` can take bytes now: the response is started, not ended,
        framed in chunks, its client is connected and its connection is not paused for a
        full write buffer. Checked before each write; while False use ``send``, which waits."""
        ...

    def write(self, data: bytes) -> None:
        """Send ``data`` (not empty) as the next piece of the body; only after
        :meth:`writable` said True in the same callback."""
        ...


def direct_body(scope: Scope) -> DirectBody | None:
    """The front's :class:`DirectBody` for this request, if it offers one."""
    extensions = scope.get("extensions")
    if not extensions:
        return None
    found: DirectBody | None = extensions.get(DIRECT_BODY)
    return found


class ClientGoneError(Exception):
    """The client disconnected before its request body was complete."""


class BodyTooLargeError(Exception):
    """The request body exceeds ``limit`` bytes (known from its length or while reading)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes (server.max_request_body)")
        self.limit = limit


class BodyTimeoutError(Exception):
    """The client sent no body data for ``timeout`` seconds."""

    def __init__(self, timeout: float) -> None:
        super().__init__(
            f"request body stalled: nothing received for {timeout:g} s "
            "(server.client_timeouts.body)"
        )
        self.timeout = timeout


async def read_body(receive: Receive, declared: int | None, limit: int, stall: float) -> bytes:
    """The whole request body, refusing (413) as soon as it is known to exceed ``limit``,
    and giving up (:class:`BodyTimeoutError`) when nothing arrives for ``stall`` seconds
    (a bound per chunk, not on the whole body, which a caller's timeout could be)."""
    if declared is not None and declared > limit:
        raise BodyTooLargeError(limit)
    # one deadline for the whole read, pushed back at each chunk: a body that arrived with
    # its head (the usual case) costs one timer
    try:
        async with asyncio.timeout(stall) as deadline:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGoneError
            body: bytes = message.get("body", b"")
            if not message.get("more_body", False):
                if len(body) > limit:
                    raise BodyTooLargeError(limit)
                return body
            parts = [body]
            size = len(body)
            loop = asyncio.get_running_loop()
            while True:
                deadline.reschedule(loop.time() + stall)
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGoneError
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise BodyTooLargeError(limit)
                parts.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(parts)
    except TimeoutError as exc:
        raise BodyTimeoutError(stall) from exc


async def send_json(send: Send, status: int, payload: object) -> None:
    body = json.dumps(payload, ensure_ascii=False).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
