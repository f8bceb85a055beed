"""API keys: where their values come from, and the ASGI gate that checks them.

Keys are declared in ``server.api_keys`` with a scope; their values come from an environment
variable or a key file, never from the profile text. With no key configured every route is
open (the front binds loopback by default, and ``serve`` refuses a non-loopback address
without keys unless told otherwise). With keys:

* ``GET /health`` stays open (liveness probes carry no secrets);
* the control API (``/api/...``, ``/sidecars...``) and llama-swap's operations routes
  (``/running``, ``/unload``, ``/logs...``) need an ``admin`` key;
* ``/metrics`` needs a ``metrics`` or an ``admin`` key, or nothing with
  ``server.open_metrics`` (a Prometheus scrape by annotation carries no key);
* everything else (the inference routes, the router's ``/models/load|unload``) needs an
  ``inference`` or an ``admin`` key. A ``metrics`` key opens nothing but ``/metrics``.

A key is accepted from ``Authorization: Bearer KEY`` or ``x-api-key: KEY`` (what OpenAI and
Anthropic clients send) and compared in constant time against every configured key. The
dashboard's own page presents no key: :mod:`llamasup.service.ui_session` vouches for its
session (:data:`SESSION_SCOPE`), and ``/ui/`` itself (static files and the login) is open.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from llamasup.errors import LlamasupError
from llamasup.profiles.types import ApiKeyConfig
from llamasup.proxy.asgi import ASGIApp, Receive, Scope, Send
from llamasup.proxy.envelope import LLAMASUP_ERROR_HEADER

ADMIN_PREFIXES = ("/api/", "/sidecars", "/running", "/unload", "/logs")
METRICS_PATH = "/metrics"
#: what a web page may never call, even from a listed origin
CONTROL_PREFIXES = (*ADMIN_PREFIXES, METRICS_PATH)
OPEN_PATHS = frozenset({"/health"})
#: the dashboard: static files and its login, open (they hold no data; the login checks a key)
UI_PREFIX = "/ui"
#: set by the browser gate on a request from a page of this very origin
PAGE = "llamasup.page"
#: set by the session gate on such a request with a live dashboard session: its key's scope
SESSION_SCOPE = "llamasup.session_scope"
#: the scopes a request needs, and the key scopes that satisfy each
ACCEPTED = {
    "admin": frozenset({"admin"}),
    "metrics": frozenset({"metrics", "admin"}),
    "inference": frozenset({"inference", "admin"}),
}


class ApiKeyError(LlamasupError):
    """A configured key whose value cannot be read (or clashes with another's)."""

    def __init__(self, config: ApiKeyConfig, detail: str) -> None:
        #: where the key is declared, and what is wrong with it
        self.source = config.source
        self.detail = detail
        super().__init__(f"{config.source}: {detail}")


@dataclass(frozen=True)
class ApiKey:
    name: str
    scope: str
    secret: bytes

    def __repr__(self) -> str:  # never print a secret
        return f"ApiKey(name={self.name!r}, scope={self.scope!r})"


def load_keys(configs: Sequence[ApiKeyConfig], environ: Mapping[str, str]) -> tuple[ApiKey, ...]:
    """Read every key's value; raises ApiKeyError naming the key and where it was declared."""
    keys: list[ApiKey] = []
    for config in configs:
        if config.env is not None:
            where = f"environment variable {config.env}"
            if config.env not in environ:
                raise ApiKeyError(config, f"api key {config.name!r}: {where} is not set")
            value = environ[config.env]
        elif config.file is not None:
            where = f"key file {config.file}"
            try:
                text = Path(config.file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise ApiKeyError(
                    config, f"api key {config.name!r}: cannot read {where}: {reason}"
                ) from exc
            value = text.splitlines()[0] if text else ""  # the key is the first line
        else:  # pragma: no cover - the schema requires one of the two
            raise ApiKeyError(config, f"api key {config.name!r} has no env or file")
        lines = value.strip().splitlines()  # a key file holds the key on its first line
        secret = lines[0].strip() if lines else ""
        if not secret:
            raise ApiKeyError(config, f"api key {config.name!r}: {where} is empty")
        for other in keys:
            if hmac.compare_digest(other.secret, secret.encode()):
                raise ApiKeyError(
                    config,
                    f"api keys {other.name!r} and {config.name!r} have the same value; a "
                    "request could not tell which key it presents: give each its own",
                )
        keys.append(ApiKey(config.name, config.scope, secret.encode()))
    return tuple(keys)


def required_scope(path: str, *, open_metrics: bool = False) -> str | None:
    """``"admin"``, ``"metrics"``, ``"inference"``, or None for an open path."""
    if path in OPEN_PATHS or is_ui_path(path):
        return None
    if path == METRICS_PATH:
        return None if open_metrics else "metrics"
    if path.startswith(ADMIN_PREFIXES):
        return "admin"
    return "inference"


def is_ui_path(path: str) -> bool:
    return path == UI_PREFIX or path.startswith(UI_PREFIX + "/")


def presented_key(headers: Sequence[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and value.strip():
            return value.strip()
    return None


def match(keys: Sequence[ApiKey], token: bytes) -> ApiKey | None:
    """The key equal to ``token``; every key is compared, in constant time each."""
    found: ApiKey | None = None
    for key in keys:
        if hmac.compare_digest(key.secret, token):
            found = key
    return found


class AuthGate:
    """ASGI middleware: answers 401/403 itself, passes allowed requests to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        keys: Callable[[], Sequence[ApiKey]],
        open_metrics: Callable[[], bool] = lambda: False,
    ) -> None:
        self._app = app
        self._keys = keys
        self._open_metrics = open_metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        keys = self._keys()
        path = scope["path"]
        needed = (
            required_scope(path, open_metrics=path == METRICS_PATH and self._open_metrics())
            if keys
            else None
        )
        if needed is None:
            await self._app(scope, receive, send)
            return
        token = presented_key(scope["headers"])
        session_scope = scope.get(SESSION_SCOPE)
        if token is None and isinstance(session_scope, str):
            if session_scope not in ACCEPTED[needed]:
                await _deny(send, path, 403, f"this session's key lacks the {needed} scope")
                return
            await self._app(scope, receive, send)
            return
        if token is None:
            await _deny(send, scope["path"], 401, "missing API key (Authorization: Bearer ...)")
            return
        key = match(keys, token)
        if key is None:
            await _deny(send, scope["path"], 401, "invalid API key")
            return
        if key.scope not in ACCEPTED[needed]:
            await _deny(send, scope["path"], 403, f"key {key.name!r} lacks the {needed} scope")
            return
        await self._app(scope, receive, send)


async def _deny(send: Send, path: str, status: int, message: str) -> None:
    code = "invalid_api_key" if status == 401 else "insufficient_scope"
    payload: dict[str, object]
    if path.startswith("/v1/messages"):
        kind = "authentication_error" if status == 401 else "permission_error"
        payload = {"type": "error", "error": {"type": kind, "message": message}}
    else:
        kind = "authentication_error" if status == 401 else "permission_error"
        payload = {"error": {"message": message, "type": kind, "code": code}}
    body = json.dumps(payload).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        LLAMASUP_ERROR_HEADER,
    ]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="llamasup"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
