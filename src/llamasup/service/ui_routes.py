"""The dashboard's routes: its static files under ``/ui/`` and its session (login, logout).

The files ship inside the package (``service/webui/``) and are read once: no CDN, no build
step, nothing fetched at run time. Every answer carries a Content-Security-Policy without
``unsafe-inline`` (scripts and styles only from the files themselves, connections only to
this origin, Trusted Types required for any HTML sink), ``X-Frame-Options: DENY`` and
``frame-ancestors 'none'`` against clickjacking, and no caching of the session answers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

from llamasup.proxy.asgi import Receive, Scope, Send, read_body
from llamasup.service.api_errors import ApiError, send_bytes
from llamasup.service.auth import PAGE
from llamasup.service.routes import Route
from llamasup.service.ui_session import (
    SESSION,
    SESSION_PATH,
    Session,
    SessionBook,
    clear_cookie,
    set_cookie,
)

MAX_LOGIN_BODY = 16 * 1024

#: the files of the dashboard and their types (nothing else under /ui/ is served)
_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    ]
)

#: on every /ui answer
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
)
_NO_STORE = (b"cache-control", b"no-store")


def _load_files() -> dict[str, bytes]:
    folder = resources.files("llamasup.service").joinpath("webui")
    return {name: folder.joinpath(name).read_bytes() for name in _FILES}


class Dashboard:
    def __init__(self, book: SessionBook) -> None:
        self._book = book
        self._files = _load_files()

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/ui", self._redirect),
            Route("GET", "/ui/", self._index),
            Route("GET", SESSION_PATH, self._session),
            Route("POST", SESSION_PATH, self._login),
            Route("DELETE", SESSION_PATH, self._logout),
            Route("GET", "/ui/", self._file, prefix=True),
        ]

    async def _redirect(self, scope: Scope, receive: Receive, send: Send, tail: str) -> None:
        headers = [(b"location", b"/ui/"), *SECURITY_HEADERS]
        await send_bytes(send, 308, b"", "text/plain", extra_headers=headers)

    async def _index(self, scope: Scope, receive: Receive, send: Send, tail: str) -> None:
        await self._file(scope, receive, send, "index.html")

    async def _file(self, scope: Scope, receive: Receive, send: Send, tail: str) -> None:
        body = self._files.get(tail)
        if body is None:
            raise ApiError(404, "not_found", f"no dashboard file {tail!r}")
        headers = [*SECURITY_HEADERS, (b"cache-control", b"no-cache")]
        await send_bytes(send, 200, body, _FILES[tail], extra_headers=headers)

    async def _session(self, scope: Scope, receive: Receive, send: Send, tail: str) -> None:
        session = scope.get(SESSION)
        if not isinstance(session, Session):
            await self._answer(send, {"authenticated": False, "keys": self._book.keyed})
            return
        await self._answer(send, self._described(session))

    async def _login(self, scope: Scope, receive: Receive, send: Send, tail: str) -> None:
        if not scope.get(PAGE):
            # only the dashboard logs in (a tool sends its key with each request)
            raise ApiError(
                403, "forbidden_origin", "log in from the dashboard page (same origin only)"
            )
        body = await read_body(receive, None, MAX_LOGIN_BODY, 30.0)
        key = _login_key(body)
        old = scope.get(SESSION)
        if isinstance(old, Session):  # a new login replaces the session (no fixation)
            self._book.logout(old)
        sid, session = self._book.login(key)
        cookie = set_cookie(sid, secure=scope.get("scheme") == "https")
        await self._answer(send, self._described(session), cookie=cookie)

    async def _logout(self, scope: Scope, receive: Receive, send: Send, tail: str) -> None:
        session = scope.get(SESSION)
        if isinstance(session, Session):
            self._book.logout(session)
        cookie = clear_cookie(secure=scope.get("scheme") == "https")
        await self._answer(send, {"authenticated": False, "keys": self._book.keyed}, cookie=cookie)

    def _described(self, session: Session) -> dict[str, Any]:
        return {**session.as_dict(), "keys": self._book.keyed, "csrf": session.csrf}

    async def _answer(
        self, send: Send, payload: Mapping[str, Any], *, cookie: bytes | None = None
    ) -> None:
        headers = [*SECURITY_HEADERS, _NO_STORE]
        if cookie is not None:
            headers.append((b"set-cookie", cookie))
        body = json.dumps(payload).encode()
        await send_bytes(send, 200, body, "application/json", extra_headers=headers)


def _login_key(body: bytes) -> str | None:
    if not body.strip():
        return None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "bad_json", f"login body is not JSON: {exc}") from exc
    key = data.get("key") if isinstance(data, dict) else None
    if key is not None and not isinstance(key, str):
        raise ApiError(400, "bad_json", 'give {"key": "..."}')
    return key
