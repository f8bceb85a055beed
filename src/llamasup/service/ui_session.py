"""Sessions of the web dashboard (``/ui/``): how llamasup's own page is let into the control API.

The control API refuses every other web page (see :mod:`llamasup.service.browser_gate`). Its
own page gets in through a session, never through a key kept in the page:

* ``POST /ui/session`` (a same-origin page only) takes ``{"key": "..."}`` (nothing when no
  key is configured), checks it like the key gate would, and answers with an ``HttpOnly``,
  ``SameSite=Strict`` cookie holding a random session id, and, in the JSON body, an anti-CSRF
  token bound to that session. The key itself is forgotten: the session keeps the key's name
  and a hash of its value, so a rotated or removed key ends its sessions at once.
* A same-origin page's request that carries the cookie is authenticated with the session's
  scope (admin or inference). A request that changes something (any method but GET, HEAD,
  OPTIONS) must also carry the token in ``X-Llamasup-CSRF``. A page's request to the control
  API without a live session is refused (401 ``login_required``), keys or not.
* Only requests the browser gate marked as coming from a page of this very origin are looked
  at here; tools (no ``Origin``, no ``Sec-Fetch-Site``) go on to the key gate as before, and a
  cookie that arrives on any other request is ignored.

Sessions live in memory (a restart logs everyone out), at most :data:`MAX_SESSIONS` (the
oldest goes first) for at most :data:`SESSION_SECONDS` each. Wrong keys are rate-limited: after
:data:`MAX_FAILED_LOGINS` failures within :data:`FAILED_LOGIN_WINDOW` seconds, logins are refused
(429 ``too_many_logins``, no key tested) until the oldest failure leaves the window, so the
page cannot be used to guess keys quickly.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llamasup.proxy.asgi import ASGIApp, Receive, Scope, Send
from llamasup.service.api_errors import ApiError, send_api_error
from llamasup.service.auth import CONTROL_PREFIXES, PAGE, SESSION_SCOPE, ApiKey, match

COOKIE = "llamasup-session"
CSRF_HEADER = b"x-llamasup-csrf"
SESSION_PATH = "/ui/session"
#: set here on a page request with a live session (the dashboard's routes read it)
SESSION = "llamasup.session"
MAX_SESSIONS = 64
SESSION_SECONDS = 12 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_FAILED_LOGINS = 10
FAILED_LOGIN_WINDOW = 60.0


def _digest(secret: bytes) -> bytes:
    return hashlib.sha256(secret).digest()


@dataclass(frozen=True)
class Session:
    sid_hash: bytes
    csrf: str
    #: None: made while no key was configured (every route was open)
    key_name: str | None
    key_digest: bytes
    scope: str
    expires: float

    def as_dict(self) -> dict[str, object]:
        return {"authenticated": True, "scope": self.scope, "key": self.key_name}


class SessionBook:
    """The live sessions; ids are kept only as hashes (a leaked dump cannot be replayed)."""

    def __init__(
        self,
        keys: Callable[[], Sequence[ApiKey]],
        *,
        clock: Callable[[], float] = time.time,
        limit: int = MAX_SESSIONS,
        lifetime: float = SESSION_SECONDS,
    ) -> None:
        self._keys = keys
        self._clock = clock
        self._limit = limit
        self._lifetime = lifetime
        self._sessions: OrderedDict[bytes, Session] = OrderedDict()
        #: times of recent failed logins (wrong or missing key), oldest first
        self._failures: deque[float] = deque()

    @property
    def keyed(self) -> bool:
        return bool(self._keys())

    def login(self, token: str | None) -> tuple[str, Session]:
        """A new session for ``token`` (None or "" when no key is configured), and its id.

        Raises ApiError 401 for a missing or wrong key."""
        keys = self._keys()
        if keys:
            self._check_failures()
            key = match(keys, token.encode()) if token else None
            if key is None:
                self._failures.append(self._clock())
                message = "invalid API key" if token else "this llamasup needs an API key"
                raise ApiError(401, "invalid_api_key", message)
            name, digest, scope = key.name, _digest(key.secret), key.scope
        else:
            name, digest, scope = None, b"", "admin"
        now = self._clock()
        self._expire(now)
        while len(self._sessions) >= self._limit:
            self._sessions.popitem(last=False)
        sid = secrets.token_urlsafe(32)
        session = Session(
            _digest(sid.encode()), secrets.token_urlsafe(32), name, digest, scope,
            now + self._lifetime,
        )  # fmt: skip
        self._sessions[session.sid_hash] = session
        return sid, session

    def _check_failures(self) -> None:
        now = self._clock()
        while self._failures and self._failures[0] <= now - FAILED_LOGIN_WINDOW:
            self._failures.popleft()
        if len(self._failures) >= MAX_FAILED_LOGINS:
            wait = max(1, math.ceil(self._failures[0] + FAILED_LOGIN_WINDOW - now))
            raise ApiError(
                429,
                "too_many_logins",
                f"{len(self._failures)} failed logins in the last {FAILED_LOGIN_WINDOW:.0f} s; "
                f"try again in {wait} s",
                headers=[(b"retry-after", str(wait).encode())],
            )

    def find(self, sid: str | None) -> Session | None:
        """The live session of a cookie value, if its key still exists with the same value."""
        if not sid:
            return None
        session = self._sessions.get(_digest(sid.encode()))
        if session is None:
            return None
        if session.expires <= self._clock() or not self._key_stands(session):
            self._sessions.pop(session.sid_hash, None)
            return None
        return session

    def logout(self, session: Session) -> None:
        self._sessions.pop(session.sid_hash, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _key_stands(self, session: Session) -> bool:
        keys = self._keys()
        if session.key_name is None:
            return not keys
        for key in keys:
            if (
                key.name == session.key_name
                and key.scope == session.scope
                and hmac.compare_digest(_digest(key.secret), session.key_digest)
            ):
                return True
        return False

    def _expire(self, now: float) -> None:
        for sid_hash in [h for h, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[sid_hash]


def cookie_value(headers: Sequence[tuple[bytes, bytes]], name: str = COOKIE) -> str | None:
    """The value of cookie ``name``; None when absent or sent twice (a tossed cookie from a
    sibling port beside the real one: neither is trusted)."""
    found: list[str] = []
    prefix = name + "="
    for header, value in headers:
        if header != b"cookie":
            continue
        for raw in value.decode("latin-1").split(";"):
            part = raw.strip()
            if part.startswith(prefix):
                found.append(part[len(prefix) :])
    return found[0] if len(found) == 1 else None


def set_cookie(sid: str, *, secure: bool, max_age: int = SESSION_SECONDS) -> bytes:
    attributes = [f"{COOKIE}={sid}", "Path=/", "HttpOnly", "SameSite=Strict", f"Max-Age={max_age}"]
    if secure:
        attributes.append("Secure")
    return "; ".join(attributes).encode()


def clear_cookie(*, secure: bool) -> bytes:
    return set_cookie("", secure=secure, max_age=0)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class SessionGate:
    """ASGI middleware between the browser gate and the key gate (see the module docstring)."""

    def __init__(self, app: ASGIApp, book: SessionBook) -> None:
        self._app = app
        self._book = book

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get(PAGE):
            await self._app(scope, receive, send)
            return
        path: str = scope["path"]
        session = self._book.find(cookie_value(scope["headers"]))
        if session is None:
            if path.startswith(CONTROL_PREFIXES):
                await send_api_error(
                    send,
                    ApiError(
                        401,
                        "login_required",
                        "a web page reaches the control API only through a dashboard "
                        "session: log in on /ui/",
                    ),
                )
                return
            await self._app(scope, receive, send)
            return
        login = path == SESSION_PATH and scope["method"] == "POST"
        if scope["method"] not in SAFE_METHODS and not login:
            token = _header(scope, CSRF_HEADER)
            if token is None or not hmac.compare_digest(token, session.csrf.encode()):
                await send_api_error(
                    send,
                    ApiError(
                        403,
                        "csrf_token_invalid",
                        f"a change from the dashboard needs its session's token in "
                        f"{CSRF_HEADER.decode()}",
                    ),
                )
                return
        scope[SESSION] = session
        scope[SESSION_SCOPE] = session.scope
        await self._app(scope, receive, send)
