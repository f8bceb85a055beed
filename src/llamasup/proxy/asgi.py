"""The bits of ASGI the proxy uses: types, reading a bounded body, sending small answers.

Nothing here knows an API's error format: a body over its limit raises
:class:`BodyTooLargeError`, and each front answers it in its own envelope.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ClientGoneError(Exception):
    """The client disconnected before its request body was complete."""


class BodyTooLargeError(Exception):
    """The request body exceeds ``limit`` bytes (known from its length or while reading)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes (server.max_request_body)")
        self.limit = limit


async def read_body(receive: Receive, declared: int | None, limit: int) -> bytes:
    """The whole request body, refusing (413) as soon as it is known to exceed ``limit``."""
    if declared is not None and declared > limit:
        raise BodyTooLargeError(limit)
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
    while True:
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
