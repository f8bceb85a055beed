"""Error responses the proxy itself produces, in the shape each API's clients understand.

OpenAI routes get ``{"error": {"message", "type", "code", "param"}}``; Anthropic routes
(``/v1/messages*``) get ``{"type": "error", "error": {"type", "message"}}``. Every response
llamasup (not a sidecar) produced carries the header ``X-Llamasup-Error: 1`` and a
machine-readable ``code`` naming the llamasup condition, so a client can tell "llamasup
refused" from "llama-server failed".

Errors after a stream has started cannot change the status line: they are sent as one last
SSE event in the route's dialect (:func:`stream_error_event`).
"""

from __future__ import annotations

import json
from enum import Enum

from llamasup.proxy.asgi import BodyTimeoutError, BodyTooLargeError, Send

LLAMASUP_ERROR_HEADER = (b"x-llamasup-error", b"1")


class Dialect(Enum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"


#: OpenAI error type by HTTP status (llama-server uses the same names)
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    431: "invalid_request_error",
    500: "server_error",
    502: "server_error",
    503: "unavailable_error",
    504: "timeout_error",
}

#: Anthropic error type by HTTP status, as its API documents them
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    431: "invalid_request_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
}


class ProxyError(Exception):
    """A request the proxy answers itself, with ``status`` and a llamasup ``code``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        param: str | None = None,
        *,
        allow: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        #: the methods a 405's path takes (the ``Allow`` header)
        self.allow = allow
        super().__init__(message)

    def body(self, dialect: Dialect) -> bytes:
        if dialect is Dialect.ANTHROPIC:
            kind = _ANTHROPIC_TYPES.get(self.status, "api_error")
            payload: dict[str, object] = {
                "type": "error",
                "error": {"type": kind, "message": self.message, "code": self.code},
            }
        else:
            payload = {
                "error": {
                    "message": self.message,
                    "type": _OPENAI_TYPES.get(self.status, "server_error"),
                    "code": self.code,
                    "param": self.param,
                }
            }
        return json.dumps(payload, ensure_ascii=False).encode()

    def headers(self, body_length: int) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(body_length).encode()),
            LLAMASUP_ERROR_HEADER,
        ]
        if self.status == 429:
            headers.append((b"retry-after", b"1"))
        elif self.status == 408:
            # the rest of the body may still be on its way: do not read it as a request
            headers.append((b"connection", b"close"))
        if self.allow is not None:
            headers.append((b"allow", self.allow.encode()))
        return headers


def stream_error_event(dialect: Dialect, message: str, code: str) -> bytes:
    """One SSE event reporting an error after the response has started.

    The message is prefixed with ``llamasup:`` because no header can mark it any more.
    """
    text = f"llamasup: {message}"
    if dialect is Dialect.ANTHROPIC:
        payload = {"type": "error", "error": {"type": "api_error", "message": text, "code": code}}
        data = json.dumps(payload, ensure_ascii=False).encode()
        return b"event: error\ndata: " + data + b"\n\n"
    payload2 = {"error": {"message": text, "type": "server_error", "code": code}}
    return b"data: " + json.dumps(payload2, ensure_ascii=False).encode() + b"\n\n"


def too_large(exc: BodyTooLargeError) -> ProxyError:
    """413 for a body over its limit."""
    return ProxyError(413, "request_too_large", str(exc))


def too_slow(exc: BodyTimeoutError) -> ProxyError:
    """408 for a body that stopped arriving (the connection is closed after it)."""
    return ProxyError(408, "request_timeout", str(exc))


async def send_error(send: Send, exc: ProxyError, dialect: Dialect) -> None:
    body = exc.body(dialect)
    await send(
        {"type": "http.response.start", "status": exc.status, "headers": exc.headers(len(body))}
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
