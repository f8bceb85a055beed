"""The browser guard: a web page must not be able to drive llamasup.

llamasup listens on loopback without keys by default, and a browser will happily send a
"simple" cross-origin POST (``text/plain``, no preflight) from any page the user visits to
``http://127.0.0.1:8402``. Through ``/api/apply`` that is a ``command:`` model, which is any
program. So, before the key check:

* a request that carries an ``Origin`` header (browsers add it to cross-origin requests, and to
  every POST) is refused, unless the origin is listed in ``server.cors_origins`` and the route
  is an inference route; the control API, ``/sidecars`` and ``/metrics`` never answer a page;
* while the front listens on a loopback address, a ``Host`` header that is not a loopback
  name (or listed in ``server.allowed_hosts``, for a reverse proxy on the same machine) is
  refused: a DNS-rebinding page reaches 127.0.0.1 under its own host name;
* allowed origins get CORS: preflights are answered here, responses carry
  ``Access-Control-Allow-Origin`` for that origin (a sidecar's own CORS headers are dropped
  by the relay, so llama-server's reflect-any-origin never reaches a browser).

Tools (curl, SDKs, the CLI) send no ``Origin`` and a loopback ``Host``: nothing changes for them.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Collection

from llamasup.asgi import ASGIApp, Message, Receive, Scope, Send
from llamasup.auth import ADMIN_PREFIXES
from llamasup.openai_errors import LLAMASUP_ERROR_HEADER

_PREFLIGHT_MAX_AGE = b"600"
_ALLOWED_METHODS = b"GET, POST, OPTIONS"


def host_name(host_header: bytes) -> str:
    """The name in a ``Host`` header: lower case, no port, no brackets, no final dot."""
    host = host_header.decode("latin-1").strip().lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def loopback_host(host_header: bytes) -> bool:
    """Whether a ``Host`` header names this machine's loopback (any port)."""
    host = host_name(host_header)
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BrowserGate:
    """ASGI middleware in front of everything (auth included); see the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        loopback: Callable[[], bool],
        origins: Callable[[], Collection[str]],
        hosts: Callable[[], Collection[str]] = tuple,
    ) -> None:
        self._app = app
        self._loopback = loopback
        self._origins = origins
        self._hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        origin: bytes | None = None
        host: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value
            elif name == b"host":
                host = value
        if (
            host is not None
            and self._loopback()
            and not loopback_host(host)
            and host_name(host) not in self._hosts()
        ):
            shown = host.decode("latin-1")
            message = (
                f"Host {shown!r} is not a loopback name this llamasup answers to (behind a "
                "reverse proxy on this machine, list its host name in server.allowed_hosts)"
            )
            await _refuse(send, scope["path"], message)
            return
        if origin is None:
            await self._app(scope, receive, send)
            return
        path: str = scope["path"]
        text = origin.decode("latin-1").strip().lower()
        if path.startswith(ADMIN_PREFIXES):
            await _refuse(send, path, f"the control API does not answer web pages (Origin {text})")
            return
        if text not in self._origins():
            await _refuse(
                send,
                path,
                f"requests from web pages are refused (Origin {text}); list the origin in "
                "server.cors_origins to let a browser app call the inference routes",
            )
            return
        if scope["method"] == "OPTIONS":
            await _preflight(scope, send, origin)
            return
        await self._app(scope, receive, _with_cors(send, origin))


def _with_cors(send: Send, origin: bytes) -> Send:
    async def send_with_cors(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [h for h in message.get("headers", []) if h[0] != b"vary"]
            headers += [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]
            message = {**message, "headers": headers}
        await send(message)

    return send_with_cors


async def _preflight(scope: Scope, send: Send, origin: bytes) -> None:
    requested = next(
        (v for n, v in scope["headers"] if n == b"access-control-request-headers"), b""
    )
    headers = [
        (b"access-control-allow-origin", origin),
        (b"access-control-allow-methods", _ALLOWED_METHODS),
        (b"access-control-max-age", _PREFLIGHT_MAX_AGE),
        (b"vary", b"Origin"),
        (b"content-length", b"0"),
    ]
    if requested:
        headers.append((b"access-control-allow-headers", requested))
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _refuse(send: Send, path: str, message: str) -> None:
    payload: dict[str, object]
    if path.startswith("/v1/messages"):  # Anthropic clients read their own error shape
        payload = {"type": "error", "error": {"type": "permission_error", "message": message}}
    else:
        error = {"message": message, "type": "permission_error", "code": "forbidden_origin"}
        payload = {"error": error}
    body = json.dumps(payload).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        LLAMASUP_ERROR_HEADER,
    ]
    await send({"type": "http.response.start", "status": 403, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
