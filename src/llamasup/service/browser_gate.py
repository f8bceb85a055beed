"""The browser guard: a web page must not be able to drive llamasup.

llamasup listens on loopback without keys by default, and a browser will happily send a
"simple" cross-origin POST (``text/plain``, no preflight) from any page the user visits to
``http://127.0.0.1:8402``. Through ``/api/apply`` that is a ``command:`` model, which is any
program. So, before the key check:

* a request with an ``Origin`` header (browsers add it to cross-origin requests and to every
  POST) passes only from a page llamasup served itself (same origin: the dashboard under
  ``/ui/``, a sidecar's UI through ``/upstream``), marked as a page (``PAGE`` in the scope)
  so that the session gate (:mod:`llamasup.service.ui_session`) lets it reach the control
  API only with a dashboard session and its anti-CSRF token; or, on the inference routes
  only, from an origin listed in ``server.cors_origins`` (then with CORS, and never on the
  ``/upstream`` passthrough). Any other origin is refused on the control API, ``/sidecars``,
  ``/metrics`` and ``/ui``, always;
* a request a browser marks ``Sec-Fetch-Site: cross-site``/``same-site`` without an allowed
  ``Origin`` (an ``<img>``, a ``<script>``, a navigation) is refused;
* while the front listens on loopback, or has no key, a ``Host`` must be an address,
  ``localhost`` or in ``server.allowed_hosts``: a DNS-rebinding page reaches llamasup under a
  name of its own;
* a second ``Host`` or ``Origin`` header, and any WebSocket upgrade, are refused.

A sidecar's own CORS headers are dropped by the relay, and every llama-server sidecar needs
a key of its own start that only llamasup holds, so a page cannot go around the front either. Tools
(curl, SDKs, the CLI) send no ``Origin`` and a loopback ``Host``: nothing changes for them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection
from functools import lru_cache

from llamasup.profiles.types import is_loopback
from llamasup.proxy.app import UPSTREAM_PREFIX
from llamasup.proxy.asgi import ASGIApp, Message, Receive, Scope, Send
from llamasup.proxy.envelope import Dialect, ProxyError, send_error
from llamasup.service.auth import CONTROL_PREFIXES, PAGE, is_ui_path

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
    return is_loopback(host_name(host_header))


@lru_cache(maxsize=256)
def _rebinding_safe(host_header: bytes, allowed: tuple[str, ...]) -> bool:
    """Whether a ``Host`` cannot be a DNS-rebinding page's name: an address, ``localhost``,
    or a listed name. Cached: a front sees a handful of Host values, parse each once."""
    name = host_name(host_header)
    if name == "localhost" or name in allowed:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class BrowserGate:
    """ASGI middleware in front of everything (auth included); see the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        loopback: bool,
        origins: Callable[[], Collection[str]],
        hosts: Callable[[], tuple[str, ...]] = tuple,
        keyed: Callable[[], bool] = bool,
    ) -> None:
        self._app = app
        self._loopback = loopback
        self._origins = origins
        self._hosts = hosts
        self._keyed = keyed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":  # no route speaks it; never let an upgrade past the gates
            await send({"type": "websocket.close", "code": 1008})
            return
        if kind != "http":
            await self._app(scope, receive, send)
            return
        origin: bytes | None = None
        host: bytes | None = None
        site = b""
        origins = hosts = 0
        for name, value in scope["headers"]:
            if name == b"origin":
                origin, origins = value, origins + 1
            elif name == b"host":
                host, hosts = value, hosts + 1
            elif name == b"sec-fetch-site":
                site = value.strip().lower()
        path: str = scope["path"]
        if origins > 1 or hosts > 1:  # the last one would win, in one reader or another
            await _refuse(send, path, "more than one Host or Origin header")
            return
        problem = self._host_problem(host)
        if problem is not None:
            await _refuse(send, path, problem)
            return
        if origin is None:
            if site in (b"cross-site", b"same-site"):
                # a page's GET (an image, a script, a navigation) carries no Origin, but
                # browsers say where it comes from
                await _refuse(send, path, "requests from other web sites are refused")
                return
            if site == b"same-origin":  # a page of this origin: its GETs carry no Origin
                scope[PAGE] = True
            await self._app(scope, receive, send)
            return
        text = origin.decode("latin-1").strip().lower()
        if host is not None and text in _own_origins(host) and site in (b"", b"same-origin"):
            # a page llamasup itself served: the dashboard (which reaches the control API
            # only with its session, see ui_session), or a sidecar's UI through /upstream
            scope[PAGE] = True
            await self._app(scope, receive, send)
            return
        if path.startswith(CONTROL_PREFIXES) or is_ui_path(path):
            await _refuse(
                send, path, f"the control API does not answer other web pages (Origin {text})"
            )
            return
        if path.startswith(UPSTREAM_PREFIX):
            await _refuse(
                send, path, f"the /upstream passthrough does not answer web pages (Origin {text})"
            )
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

    def _host_problem(self, host: bytes | None) -> str | None:
        """Why a ``Host`` is refused: on loopback, or with no key, only names that cannot be
        a DNS-rebinding page's (an address, ``localhost``, ``server.allowed_hosts``) pass."""
        if host is None or not (self._loopback or not self._keyed()):
            return None
        if _rebinding_safe(host, self._hosts()):
            return None
        shown = host.decode("latin-1")
        return (
            f"Host {shown!r} is not a name this llamasup answers to: list it in "
            "server.allowed_hosts (a LAN name, a reverse proxy's), or use an address"
        )


def _own_origins(host: bytes) -> tuple[str, str]:
    shown = host.decode("latin-1").strip().lower()
    return f"http://{shown}", f"https://{shown}"


def _with_cors(send: Send, origin: bytes) -> Send:
    async def send_with_cors(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
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
    anthropic = path.startswith("/v1/messages")  # Anthropic clients read their own shape
    error = ProxyError(403, "forbidden_origin", message)
    await send_error(send, error, Dialect.ANTHROPIC if anthropic else Dialect.OPENAI)
