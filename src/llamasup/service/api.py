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
from llamasup.profiles.store import ApplyError
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
from llamasup.service.api_apply import apply_request, parse_files
from llamasup.service.api_errors import ApiError, send_api_error, send_bytes
from llamasup.service.api_logs import send_logs
from llamasup.service.host import ControlHost

logger = logging.getLogger(__name__)

MAX_APPLY_BODY = 8 * 2**20


class ControlApi:
    def __init__(self, host: ControlHost) -> None:
        self._host = host

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

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        path: str = scope["path"]
        query = _query(scope)
        host = self._host
        if path == "/api/status" and method == "GET":
            await send_json(send, 200, status_view.status(host))
        elif path == "/api/plan" and method == "GET":
            plan = host.reconciler.preview()
            await send_json(send, 200, status_view.plan_dict(plan, status_view.key_models(host)))
        elif path == "/api/apply" and method == "POST":
            await self._apply(scope, receive, send, dry_run=_flag(query, "dry_run"))
        elif path == "/api/reload" and method == "POST":
            result = await host.reload("api")
            rejected = result.result == "error"  # then llamasup's own error answer (marked)
            answer = json.dumps(result.as_dict(), ensure_ascii=False).encode()
            await send_bytes(
                send, 422 if rejected else 200, answer, "application/json", error=rejected
            )
        elif path == "/api/unload" and method == "POST":
            body = await _json_body(scope, receive, self._body_timeout())
            await send_json(send, 200, await self._unload(body))
        elif path.startswith("/api/logs/") and method == "GET":
            name = unquote(path[len("/api/logs/") :])
            await send_logs(host, name, query, receive, send)
        elif path == "/sidecars" and method == "GET":
            await send_json(send, 200, status_view.sidecars(host))
        elif path.startswith("/sidecars/") and method == "DELETE":
            key = unquote(path[len("/sidecars/") :])
            await send_json(send, 200, await self._unload({"key": key}))
        elif path == "/metrics" and method == "GET":
            exposition, content_type = await host.render_metrics()
            await send_bytes(send, 200, exposition, content_type)
        elif allowed := _allowed_methods(path):
            raise ApiError(
                405,
                "method_not_allowed",
                f"{method} is not allowed on {path} (use {', '.join(allowed)})",
                headers=[(b"allow", ", ".join(allowed).encode())],
            )
        else:
            raise ApiError(404, "not_found", f"no route for {path}")

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


_EXACT_ROUTES = {
    "/api/status": ("GET",),
    "/api/plan": ("GET",),
    "/api/apply": ("POST",),
    "/api/reload": ("POST",),
    "/api/unload": ("POST",),
    "/sidecars": ("GET",),
    "/metrics": ("GET",),
}


def _allowed_methods(path: str) -> tuple[str, ...]:
    """The methods a known route accepts; () for a path no route serves."""
    if path in _EXACT_ROUTES:
        return _EXACT_ROUTES[path]
    if path.startswith("/api/logs/") and len(path) > len("/api/logs/"):
        return ("GET",)
    if path.startswith("/sidecars/") and len(path) > len("/sidecars/"):
        return ("DELETE",)
    return ()


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
