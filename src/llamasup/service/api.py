"""The control API (JSON under ``/api``), llama-sidecar's routes, and ``/metrics``.

It is the proxy's fallback app: one listener serves inference and control, and ``AuthGate``
in front decides who may call what. The documents it returns are described in
``docs/control-api.md``; ``status_view.py`` builds them.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, unquote

from llamasup.errors import ProfileError
from llamasup.profiles.persist import PersistError
from llamasup.profiles.store import ApplyError, FileNameTooLongError
from llamasup.proxy.asgi import (
    BodyTimeoutError,
    BodyTooLargeError,
    ClientGoneError,
    Receive,
    Scope,
    Send,
    read_body,
    send_json,
)
from llamasup.service import status_view
from llamasup.service.api_apply import apply_request, current_files, parse_files
from llamasup.service.api_errors import ApiError, send_api_error, send_bytes
from llamasup.service.api_logs import send_logs
from llamasup.service.compat import CompatRoutes
from llamasup.service.events import stream_events
from llamasup.service.host import ControlHost
from llamasup.service.restart import RestartError
from llamasup.service.routes import Route, RouteTable
from llamasup.service.ui_routes import Dashboard

logger = logging.getLogger(__name__)

MAX_APPLY_BODY = 8 * 2**20


class ControlApi:
    def __init__(
        self, host: ControlHost, compat: CompatRoutes, dashboard: Dashboard | None = None
    ) -> None:
        self._host = host
        self._compat = compat
        self._dashboard = dashboard
        self._routes = self._table()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            await self._route(scope, receive, send)
        except ApiError as exc:
            await send_api_error(send, exc)
        except BodyTooLargeError as exc:
            await send_api_error(send, ApiError(413, "request_too_large", str(exc)))
        except BodyTimeoutError as exc:
            closing = [(b"connection", b"close")]  # the rest of the body may still come
            await send_api_error(send, ApiError(408, "request_timeout", str(exc), headers=closing))
        except ClientGoneError:
            return
        except Exception:
            # a bug: still answer in llamasup's envelope (clients tell it from another server)
            logger.exception("control API: %s %s failed", scope.get("method"), scope.get("path"))
            with contextlib.suppress(Exception):  # the answer may already have begun
                await send_api_error(
                    send, ApiError(500, "internal_error", "llamasup failed; see its log")
                )

    def _table(self) -> RouteTable:
        return RouteTable(
            [
                Route("GET", "/api/status", self._status),
                Route("GET", "/api/events", self._events),
                Route("GET", "/api/profiles", self._profiles),
                Route("GET", "/api/plan", self._plan),
                Route("POST", "/api/apply", self._apply_route),
                Route("POST", "/api/reload", self._reload),
                Route("POST", "/api/restart", self._restart),
                Route("POST", "/api/unload", self._unload_route),
                Route("GET", "/api/logs/", self._logs, prefix=True),
                Route("GET", "/sidecars", self._sidecars),
                Route("DELETE", "/sidecars/", self._delete_sidecar, prefix=True),
                Route("GET", "/metrics", self._metrics),
                *self._compat.routes(),
                *(self._dashboard.routes() if self._dashboard is not None else ()),
            ]
        )

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        path: str = scope["path"]
        found = self._routes.match(method, path)
        if found.handler is not None:
            await found.handler(scope, receive, send, found.tail)
        elif found.allowed:
            allowed = ", ".join(found.allowed)
            raise ApiError(
                405,
                "method_not_allowed",
                f"{method} is not allowed on {path} (use {allowed})",
                headers=[(b"allow", allowed.encode())],
            )
        else:
            raise ApiError(404, "not_found", f"no route for {path}")

    async def _status(self, scope: Scope, receive: Receive, send: Send, tail: str) -> None:
        await send_json(send, 200, status_view.status(self._host))

    async def _events(self, scope: Scope, receive: Receive, send: Send, tail: str) -> None:
        await stream_events(self._host.hub, lambda: status_view.status(self._host), receive, send)

    async def _profiles(self, scope: Scope, receive: Receive, send: Send, tail: str) -> None:
        await send_json(send, 200, await current_files(self._host.store))

    async def _plan(self, scope: Scope, receive: Receive, send: Send, tail: str) -> None:
        plan = self._host.reconciler.preview()
        await send_json(send, 200, status_view.plan_dict(plan, status_view.key_models(self._host)))

    async def _apply_route(self, scope: Scope, receive: Receive, send: Send, tail: str) -> None:
        await self._apply(scope, receive, send, dry_run=_flag(_query(scope), "dry_run"))

    async def _reload(self, scope: Scope, receive: Receive, send: Send, tail: str) -> None:
        result = await self._host.reload("api")
        rejected = result.result == "error"  # then llamasup's own error answer (marked)
        answer = json.dumps(result.as_dict(), ensure_ascii=False).encode()
        await send_bytes(send, 422 if rejected else 200, answer, "application/json", error=rejected)

    async def _restart(self, scope: Scope, receive: Receive, send: Send, tail: str) -> None:
        try:
            answer = await self._host.restart("api")
        except RestartError as exc:
            raise ApiError(exc.status, exc.code, str(exc)) from exc
        # the restart begins once this answer is sent (the front drains its requests first)
        await send_json(send, 202, answer)

    async def _unload_route(self, scope: Scope, receive: Receive, send: Send, tail: str) -> None:
        body = await _json_body(scope, receive, self._body_timeout())
        await send_json(send, 200, await self._unload(body))

    async def _logs(self, scope: Scope, receive: Receive, send: Send, tail: str) -> None:
        await send_logs(self._host, unquote(tail), _query(scope), receive, send)

    async def _sidecars(self, scope: Scope, receive: Receive, send: Send, tail: str) -> None:
        await send_json(send, 200, status_view.sidecars(self._host))

    async def _delete_sidecar(self, scope: Scope, receive: Receive, send: Send, tail: str) -> None:
        await send_json(send, 200, await self._unload({"key": unquote(tail)}))

    async def _metrics(self, scope: Scope, receive: Receive, send: Send, tail: str) -> None:
        exposition, content_type = await self._host.render_metrics()
        await send_bytes(send, 200, exposition, content_type)

    async def _apply(self, scope: Scope, receive: Receive, send: Send, *, dry_run: bool) -> None:
        body = await read_body(
            receive, _content_length(scope), MAX_APPLY_BODY, self._body_timeout()
        )
        try:
            files = parse_files(body, _header(scope, b"content-type"), self._host.store)
            result = await apply_request(self._host, files, dry_run=dry_run)
        except ProfileError as exc:
            raise ApiError(
                422,
                "invalid_profiles",
                f"the profile set is invalid ({_count(len(exc.issues), 'error')}); "
                "nothing was changed",
                errors=[issue.as_dict() for issue in exc.issues],
            ) from exc
        except PersistError as exc:
            raise ApiError(500, "persist_failed", str(exc)) from exc
        except FileNameTooLongError as exc:
            raise ApiError(422, "file_name_too_long", str(exc)) from exc
        except (ApplyError, ValueError) as exc:
            raise ApiError(400, "bad_apply", str(exc)) from exc
        await send_json(send, 200, result)

    def _body_timeout(self) -> float:
        return self._host.profiles.server.client_timeouts.body

    async def _unload(self, body: Mapping[str, Any]) -> dict[str, Any]:
        reconciler = self._host.reconciler
        statuses = self._host.reconciler.supervisor.statuses()
        if body.get("all") is True:
            targets = [(s.key, s.sidecar.model) for s in statuses]
        elif isinstance(key := body.get("key"), str):
            targets = [(s.key, s.sidecar.model) for s in statuses if s.key == key]
            if not targets:
                raise ApiError(404, "unknown_sidecar", f"no running sidecar with key {key!r}")
        elif isinstance(name := body.get("model"), str):
            model = self._host.profiles.find_model(name)
            if model is None:
                raise ApiError(404, "unknown_model", f"no model or alias {name!r}")
            targets = [(s.key, s.sidecar.model) for s in statuses if s.sidecar.model == model.id]
        else:
            raise ApiError(400, "bad_unload", 'give {"model": ID}, {"key": KEY} or {"all": true}')
        stopped: list[dict[str, str]] = []
        skipped: list[dict[str, str]] = []
        for key, model_id in targets:
            config = self._host.profiles.models.get(model_id)
            if config is not None and config.pinned and body.get("all") is True:
                skipped.append({"key": key, "model": model_id, "reason": "pinned"})
                continue
            if await reconciler.unload(key):
                stopped.append({"key": key, "model": model_id})
        reconciler.trigger()
        return {"stopped": stopped, "skipped": skipped}


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _query(scope: Scope) -> dict[str, list[str]]:
    raw: bytes = scope.get("query_string", b"")
    return parse_qs(raw.decode("latin-1"), keep_blank_values=True)


def _flag(query: Mapping[str, list[str]], name: str) -> bool:
    values = query.get(name) or []
    return bool(values) and values[-1].lower() in ("1", "true", "yes", "")


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def _content_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    return int(value) if value.isdigit() else None


async def _json_body(scope: Scope, receive: Receive, stall: float) -> dict[str, Any]:
    body = await read_body(receive, _content_length(scope), 1 << 20, stall)
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
        raise ApiError(400, "bad_json", f"request body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "bad_json", "request body must be a JSON object")
    return data


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
