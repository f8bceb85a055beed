"""The dashboard is the first page the browser gate lets in: only llamasup's own page, only
with a session made by a login POST, only with that session's anti-CSRF token for changes.

These are the review's findings as tests, at the HTTP level (headers exactly as browsers
send them); ``test_dashboard_browser.py`` repeats the cross-origin attack in a real browser.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from service_helpers import RunningService, fake_profile, running_service, write_model_files

from llamasup.service.api_errors import ApiError
from llamasup.service.auth import ApiKey
from llamasup.service.ui_routes import CONTENT_SECURITY_POLICY
from llamasup.service.ui_session import (
    FAILED_LOGIN_WINDOW,
    MAX_FAILED_LOGINS,
    SessionBook,
    cookie_value,
)
from llamasup.testing.poll import wait_for

pytestmark = pytest.mark.anyio

EVIL = "http://evil.example"
APP = "http://localhost:3000"
ADMIN_KEY = "admin-secret-0123456789"
APP_KEY = "inference-secret-0123456789"
KEYS = (
    "api_keys:\n"
    "  - {name: ops, env: UI_ADMIN_KEY, scope: admin}\n"
    "  - {name: app, env: UI_APP_KEY, scope: inference}"
)


def _profile(tmp_path: Path, fake_bin: Path, server_extra: str = "") -> Path:
    write_model_files(tmp_path, ["alpha"])
    profile = tmp_path / "p.yaml"
    profile.write_text(
        fake_profile(
            fake_bin, tmp_path / "state", {"alpha": "pinned: true"}, server_extra=server_extra
        )
    )
    return profile


def _environ(admin: str = ADMIN_KEY) -> dict[str, str]:
    return {**os.environ, "UI_ADMIN_KEY": admin, "UI_APP_KEY": APP_KEY}


def page(running: RunningService, **extra: str) -> dict[str, str]:
    """The headers Chromium sends on a same-origin fetch that is not a GET."""
    return {"origin": running.url, "sec-fetch-site": "same-origin", **extra}


GET_FROM_PAGE = {"sec-fetch-site": "same-origin", "sec-fetch-mode": "cors"}


async def login(running: RunningService, key: str | None = None) -> tuple[str, str]:
    """Log in like the page does; returns (cookie value, csrf token)."""
    body = {} if key is None else {"key": key}
    reply = await running.client.post("/ui/session", json=body, headers=page(running))
    assert reply.status_code == 200, reply.text
    cookie = reply.headers["set-cookie"]
    attributes = [part.strip() for part in cookie.split(";")]
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(attributes)
    assert "Max-Age=43200" in attributes
    if key is not None:
        assert key not in cookie and key not in reply.text
    sid = attributes[0].split("=", 1)[1]
    running.client.cookies.clear()  # each request below says which cookie it sends
    return sid, reply.json()["csrf"]


async def ready(running: RunningService) -> int:
    """The pid of alpha's sidecar (pinned: started with the service) once it is ready."""
    await wait_for(lambda: "alpha" in running.ready_pids(), what="alpha ready")
    return running.ready_pids()["alpha"]


def _cookie(sid: str) -> dict[str, str]:
    return {"cookie": f"llamasup-session={sid}"}


async def test_the_page_is_served_with_a_strict_policy(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    profile = _profile(tmp_path, fake_server_bin, KEYS)
    async with running_service(profile, watch=False, environ=_environ()) as running:
        client = running.client
        index = await client.get("/ui/")  # no key: the page holds no data
        assert index.status_code == 200
        assert index.headers["content-type"] == "text/html; charset=utf-8"
        csp = index.headers["content-security-policy"]
        assert csp == CONTENT_SECURITY_POLICY
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        assert index.headers["x-frame-options"] == "DENY"
        assert index.headers["x-content-type-options"] == "nosniff"
        assert "<script" in index.text and "<script>" not in index.text  # no inline script
        assert "style=" not in index.text
        for name in ("app.js", "app.css", "icon.svg"):
            asset = await client.get(f"/ui/{name}")
            assert asset.status_code == 200
            assert asset.headers["x-frame-options"] == "DENY"
        script = (await client.get("/ui/app.js")).text
        assert not re.search(r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write", script)
        moved = await client.get("/ui")
        assert (moved.status_code, moved.headers["location"]) == (308, "/ui/")
        assert (await client.get("/ui/../api/status")).status_code in (401, 404)
        assert (await client.get("/ui/secrets.txt")).status_code == 404
        # the session answer: nobody is logged in, and keys are required
        session = (await client.get("/ui/session", headers=GET_FROM_PAGE)).json()
        assert session == {"authenticated": False, "keys": True}


async def test_a_foreign_origin_cannot_read_or_change_anything(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    """Even a listed CORS origin, even holding the victim's session cookie and token."""
    extra = f"cors_origins: ['{APP}']"
    profile = _profile(tmp_path, fake_server_bin, extra)
    original = profile.read_text()
    async with running_service(profile, watch=False) as running:
        client = running.client
        sid, csrf = await login(running)
        pid = await ready(running)
        stolen = {**_cookie(sid), "x-llamasup-csrf": csrf}
        for origin in (EVIL, APP, "null"):
            foreign = {"origin": origin, "sec-fetch-site": "cross-site", **stolen}
            for method, path, body in (
                ("POST", "/api/unload", b'{"all": true}'),
                ("POST", "/api/apply", original.encode() + b"  evil:\n    command: [sh]\n"),
                ("POST", "/api/reload", b""),
                ("POST", "/ui/session", b"{}"),
                ("DELETE", "/ui/session", b""),
                ("GET", "/api/status", b""),
                ("GET", "/api/events", b""),
                ("GET", "/api/profiles", b""),
                ("GET", "/ui/session", b""),
                ("OPTIONS", "/api/unload", b""),
            ):
                reply = await client.request(method, path, content=body, headers=foreign)
                assert reply.status_code == 403, (origin, method, path, reply.text)
                assert reply.json()["error"]["code"] == "forbidden_origin"
                assert "access-control-allow-origin" not in reply.headers
                assert csrf not in reply.text
            # a same-site page (another port of this host) sends the cookie: refused too
            sibling = {"sec-fetch-site": "same-site", **stolen}
            assert (await client.get("/api/status", headers=sibling)).status_code == 403
        assert running.pids()["alpha"] == pid
        assert profile.read_text() == original


async def test_dns_rebinding_is_still_refused(tmp_path: Path, fake_server_bin: Path) -> None:
    """A rebinding page is "same origin" with itself: its Host gives it away first."""
    profile = _profile(tmp_path, fake_server_bin)
    async with running_service(profile, watch=False) as running:
        rebound = {
            "host": "evil.example:8402",
            "origin": "http://evil.example:8402",
            "sec-fetch-site": "same-origin",
        }
        for method, path in (("POST", "/ui/session"), ("GET", "/ui/"), ("GET", "/api/events")):
            reply = await running.client.request(method, path, headers=rebound, content=b"{}")
            assert reply.status_code == 403, reply.text
            assert "not a name this llamasup answers to" in reply.json()["error"]["message"]


async def test_the_page_needs_its_session_and_token_to_change_anything(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    profile = _profile(tmp_path, fake_server_bin)
    async with running_service(profile, watch=False) as running:
        client = running.client
        # no session: a page of this origin reads nothing of the control API, keys or not
        refused = await client.get("/api/status", headers=GET_FROM_PAGE)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "login_required"
        blind = await client.post("/api/unload", json={"all": True}, headers=page(running))
        assert blind.status_code == 401
        # a tool cannot log in (it sends its key with each request instead)
        tool = await client.post("/ui/session", json={})
        assert tool.status_code == 403
        sid, csrf = await login(running)
        pid = await ready(running)
        ok = await client.get("/api/status", headers={**GET_FROM_PAGE, **_cookie(sid)})
        assert ok.status_code == 200
        pid = await ready(running)
        unload = {"key": ok.json()["sidecars"][0]["key"]}
        for token in (None, "", "wrong", csrf[:-1]):
            headers = page(running, **_cookie(sid))
            if token is not None:
                headers["x-llamasup-csrf"] = token
            reply = await client.post("/api/unload", json=unload, headers=headers)
            assert reply.status_code == 403, token
            assert reply.json()["error"]["code"] == "csrf_token_invalid"
        assert running.pids()["alpha"] == pid
        # a token of another session does not do either
        _other_sid, other_csrf = await login(running)
        headers = page(running, **_cookie(sid), **{"x-llamasup-csrf": other_csrf})
        assert (await client.post("/api/unload", json=unload, headers=headers)).status_code == 403
        # state changes are never on GET
        assert (await client.get("/api/unload", headers=_cookie(sid))).status_code == 405
        headers = page(running, **_cookie(sid), **{"x-llamasup-csrf": csrf})
        done = await client.post("/api/unload", json=unload, headers=headers)
        assert done.status_code == 200, done.text
        assert [row["model"] for row in done.json()["stopped"]] == ["alpha"]
        # two cookies of that name (one tossed in from a sibling port): neither is trusted
        tossed = {**GET_FROM_PAGE, "cookie": f"llamasup-session={sid}; llamasup-session=x"}
        assert (await client.get("/api/status", headers=tossed)).status_code == 401
        # logout ends the session
        out = await client.delete("/ui/session", headers=headers)
        assert out.status_code == 200 and "Max-Age=0" in out.headers["set-cookie"]
        after = await client.get("/api/status", headers={**GET_FROM_PAGE, **_cookie(sid)})
        assert after.status_code == 401


async def test_with_keys_the_page_logs_in_with_a_key_and_gets_its_scope(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    profile = _profile(tmp_path, fake_server_bin, KEYS)
    async with running_service(profile, watch=False, environ=_environ()) as running:
        client = running.client
        for body in ({}, {"key": "wrong"}, {"key": ""}):
            reply = await client.post("/ui/session", json=body, headers=page(running))
            assert reply.status_code == 401, body
            assert "set-cookie" not in reply.headers
        app_sid, app_csrf = await login(running, APP_KEY)
        app = {**GET_FROM_PAGE, **_cookie(app_sid)}
        assert (await client.get("/ui/session", headers=app)).json()["scope"] == "inference"
        assert (await client.get("/v1/models", headers=app)).status_code == 200
        assert (await client.get("/api/status", headers=app)).status_code == 403
        chat = {"model": "alpha", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}
        no_token = page(running, **_cookie(app_sid))
        reply = await client.post("/v1/chat/completions", json=chat, headers=no_token)
        assert reply.status_code == 403
        with_token = page(running, **_cookie(app_sid), **{"x-llamasup-csrf": app_csrf})
        reply = await client.post("/v1/chat/completions", json=chat, headers=with_token)
        assert reply.status_code == 200
        admin_sid, _ = await login(running, ADMIN_KEY)
        admin = {**GET_FROM_PAGE, **_cookie(admin_sid)}
        assert (await client.get("/api/status", headers=admin)).status_code == 200
        # the cookie means nothing to a tool (no Origin, no Sec-Fetch-Site)
        assert (await client.get("/api/status", headers=_cookie(admin_sid))).status_code == 401
        # a rotated key ends its sessions at the next reload
        served_env = running.service.environ  # what the service reads keys from
        assert isinstance(served_env, dict)
        served_env["UI_ADMIN_KEY"] = "rotated-admin-secret-000"
        reload = await client.post("/api/reload", headers={"authorization": "Bearer " + ADMIN_KEY})
        assert reload.status_code == 200
        gone = await client.get("/api/status", headers=admin)
        assert gone.status_code == 401
        assert gone.json()["error"]["code"] == "login_required"
        assert (await client.get("/v1/models", headers=app)).status_code == 200


async def test_sidecar_keys_never_reach_the_page(tmp_path: Path, fake_server_bin: Path) -> None:
    """The per-start secret of each sidecar stays between llamasup and the sidecar."""
    profile = _profile(tmp_path, fake_server_bin, KEYS)
    async with running_service(profile, watch=False, environ=_environ()) as running:
        client = running.client
        sid, _csrf = await login(running, ADMIN_KEY)
        await ready(running)
        sidecar = running.service.supervisor.sidecars()[0]
        secret = dict(sidecar.auth_headers)[b"authorization"].split(b" ", 1)[1].decode()
        assert len(secret) > 20
        seen: list[str] = []
        headers = {**GET_FROM_PAGE, **_cookie(sid)}
        for path in (
            "/ui/",
            "/ui/app.js",
            "/ui/session",
            "/api/status",
            "/api/profiles",
            "/api/plan",
            "/sidecars",
            "/v1/models",
            f"/api/logs/{sidecar.key}?lines=1000",
        ):
            reply = await client.get(path, headers=headers)
            assert reply.status_code == 200, (path, reply.text)
            seen.append(reply.text)
        async with client.stream("GET", "/api/events", headers=headers) as events:
            text = ""
            async for chunk in events.aiter_text():
                text += chunk
                if "event: status" in text:
                    break
            seen.append(text)
        # (inference answers are the sidecar's own; the fake echoes its request headers, so
        # they are not checked here: llama-server does not)
        for text in seen:
            assert secret not in text
            assert ADMIN_KEY not in text and APP_KEY not in text
        assert "LLAMA_API_KEY" not in json.dumps(seen)


async def test_sessions_are_bounded_and_a_new_login_replaces_the_old(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    profile = _profile(tmp_path, fake_server_bin)
    async with running_service(profile, watch=False) as running:
        book = running.service.sessions
        first, _ = await login(running)
        reply = await running.client.post(
            "/ui/session", json={}, headers=page(running, **_cookie(first))
        )
        assert reply.status_code == 200
        assert book.find(first) is None  # no session fixation: the old id is dead
        for _ in range(70):
            await login(running)
        assert len(book) == 64


def test_cookie_parsing() -> None:
    assert cookie_value([(b"cookie", b"a=1; llamasup-session=abc; b=2")]) == "abc"
    assert cookie_value([(b"cookie", b"llamasup-session=abc"), (b"cookie", b"x=1")]) == "abc"
    assert cookie_value([(b"cookie", b"xllamasup-session=abc")]) is None
    assert cookie_value([(b"cookie", b"llamasup-session=a; llamasup-session=b")]) is None
    assert cookie_value([]) is None


def test_wrong_keys_are_rate_limited_and_the_limit_passes_with_time() -> None:
    now = [1000.0]
    keys = [ApiKey("ops", "admin", ADMIN_KEY.encode())]
    book = SessionBook(lambda: keys, clock=lambda: now[0])
    for attempt in range(MAX_FAILED_LOGINS):
        with pytest.raises(ApiError) as wrong:
            book.login("" if attempt == 0 else f"guess-{attempt}")
        assert wrong.value.status == 401
        now[0] += 1.0
    # locked: even the right key is not tested now (a guess would learn nothing from it)
    with pytest.raises(ApiError) as locked:
        book.login(ADMIN_KEY)
    assert locked.value.status == 429 and locked.value.code == "too_many_logins"
    retry = dict(locked.value.headers)[b"retry-after"]
    assert int(retry) == FAILED_LOGIN_WINDOW - MAX_FAILED_LOGINS  # until the oldest leaves
    now[0] = 1000.0 + FAILED_LOGIN_WINDOW  # the first failure leaves the window
    _, session = book.login(ADMIN_KEY)
    assert session.scope == "admin"
    # without keys there is nothing to guess and nothing is counted
    open_book = SessionBook(list, clock=lambda: now[0])
    for _ in range(2 * MAX_FAILED_LOGINS):
        open_book.login(None)


async def test_the_page_sees_the_limit_as_429(tmp_path: Path, fake_server_bin: Path) -> None:
    profile = _profile(tmp_path, fake_server_bin, KEYS)
    async with running_service(profile, watch=False, environ=_environ()) as running:
        for _ in range(MAX_FAILED_LOGINS):
            reply = await running.client.post(
                "/ui/session", json={"key": "wrong"}, headers=page(running)
            )
            assert reply.status_code == 401
        reply = await running.client.post(
            "/ui/session", json={"key": ADMIN_KEY}, headers=page(running)
        )
        assert reply.status_code == 429
        assert reply.json()["error"]["code"] == "too_many_logins"
        assert "set-cookie" not in reply.headers
