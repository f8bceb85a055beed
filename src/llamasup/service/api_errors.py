"""Errors of the control API, in the same envelope as the proxy's (marked as llamasup's)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from llamasup.proxy.asgi import Send
from llamasup.proxy.envelope import LLAMASUP_ERROR_HEADER


class ApiError(Exception):
    """An error answer: ``extra`` goes into the JSON body, ``headers`` into the response."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Sequence[tuple[bytes, bytes]] = (),
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = tuple(headers)
        self.extra = extra


async def send_api_error(send: Send, exc: ApiError) -> None:
    payload: dict[str, Any] = {
        "error": {"message": exc.message, "type": "llamasup_error", "code": exc.code}
    }
    payload.update(exc.extra)
    body = json.dumps(payload, ensure_ascii=False).encode()
    await send_bytes(
        send, exc.status, body, "application/json", error=True, extra_headers=exc.headers
    )


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    *,
    error: bool = False,
    extra_headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        *extra_headers,
    ]
    if error:
        headers.append(LLAMASUP_ERROR_HEADER)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
