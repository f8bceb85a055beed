"""The routes llama-swap and llama.cpp's router answer, so the tools that manage them work here.

llama-swap (tray apps, status scripts): ``GET /running``, ``GET|POST /unload``,
``POST /api/models/unload[/MODEL]``, ``GET /logs``, ``GET /logs/stream[/proxy|/upstream|/MODEL]``.
llama.cpp's router (its web UI, Open WebUI): ``POST /models/load``, ``POST /models/unload`` and
``GET /props`` (``GET /models`` with per-model ``status`` is the proxy's listing). The shapes
follow what those servers answer; docs/control-api.md has each with an example.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from llamasup._version import __version__
from llamasup.errors import LlamasupError
from llamasup.profiles.types import http_url
from llamasup.proxy.asgi import Receive, Scope, Send, read_body, send_json
from llamasup.reconcile.pool import Origin
from llamasup.service.api_errors import ApiError, send_bytes
from llamasup.service.api_logs import DEFAULT_LINES, LogSource, stream_sources
from llamasup.service.host import ControlHost
from llamasup.sidecars.proclog import ProcessLog

logger = logging.getLogger(__name__)

#: what each exact route accepts (for 405 answers)
EXACT_ROUTES: Mapping[str, tuple[str, ...]] = {
    "/running": ("GET",),
    "/unload": ("GET", "POST"),
    "/api/models/unload": ("POST",),
    "/logs": ("GET",),
    "/logs/stream": ("GET",),
    "/models/load": ("POST",),
    "/models/unload": ("POST",),
    "/props": ("GET",),
}
PREFIX_ROUTES: Mapping[str, tuple[str, ...]] = {
    "/api/models/unload/": ("POST",),
    "/logs/stream/": ("GET",),
}


class CompatRoutes:
    def __init__(self, host: ControlHost, own_log: ProcessLog | None) -> None:
        self._host = host
        self._own_log = own_log
        self._loads: set[asyncio.Task[None]] = set()

    def allowed(self, path: str) -> tuple[str, ...]:
        if path in EXACT_ROUTES:
            return EXACT_ROUTES[path]
        for prefix, methods in PREFIX_ROUTES.items():
            if path.startswith(prefix) and len(path) > len(prefix):
                return methods
        return ()

    async def dispatch(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer a compatible route; False: not one of them (or the wrong method)."""
        path: str = scope["path"]
        method: str = scope["method"]
        if method not in self.allowed(path):
            return False
        if path == "/running":
            await send_json(send, 200, {"running": self._running()})
        elif path == "/unload":
            await self._unload_all()
            await send_bytes(send, 200, b"OK", "text/plain; charset=utf-8")
        elif path == "/api/models/unload":
            await self._unload_all()
            await send_json(send, 200, {"msg": "ok"})
        elif path.startswith("/api/models/unload/"):
            name = path[len("/api/models/unload/") :]
            if self._host.profiles.find_model(name) is None:
                raise ApiError(404, "unknown_model", f"model not found: {name!r}")
            await self._unload_model(name)
            await send_bytes(send, 200, b"OK", "text/plain; charset=utf-8")
        elif path == "/logs":
            await self._logs(None, scope, receive, send, follow=False)
        elif path == "/logs/stream" or path.startswith("/logs/stream/"):
            which = path[len("/logs/stream/") :] if path.startswith("/logs/stream/") else None
            await self._logs(which, scope, receive, send, follow=True)
        elif path == "/models/load":
            await send_json(send, *self._load(await _model_field(scope, receive)))
        elif path == "/models/unload":
            await send_json(send, *(await self._router_unload(await _model_field(scope, receive))))
        elif path == "/props":
            await send_json(send, 200, self._props())
        return True

    async def aclose(self) -> None:
        for task in list(self._loads):
            task.cancel()
        for task in list(self._loads):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- llama-swap ----------------------------------------------------------------------------

    def _running(self) -> list[dict[str, Any]]:
        profiles = self._host.profiles
        host = self._host.reconciler.supervisor.settings.host
        rows: list[dict[str, Any]] = []
        for view in self._host.reconciler.snapshot():
            if not view.running:
                continue
            model = profiles.models.get(view.model)
            state = {"draining": "stopping"}.get(view.state, view.state)
            rows.append(
                {
                    "model": view.model,
                    "state": state,
                    "cmd": " ".join(view.argv or ()),
                    "proxy": http_url(host, view.port) if view.port is not None else "",
                    "ttl": int(model.ttl or 0) if model is not None else 0,
                    "name": view.model,
                    "description": model.description if model is not None else "",
                }
            )
        rows.sort(key=lambda row: str(row["model"]))
        return rows

    async def _unload_all(self) -> None:
        reconciler = self._host.reconciler
        keys = [view.key for view in reconciler.snapshot() if view.running]
        await asyncio.gather(*(reconciler.unload(key) for key in keys))
        reconciler.trigger()

    async def _unload_model(self, name: str) -> bool:
        model = self._host.profiles.find_model(name)
        if model is None:
            return False
        reconciler = self._host.reconciler
        keys = [v.key for v in reconciler.snapshot() if v.running and v.model == model.id]
        stopped = await asyncio.gather(*(reconciler.unload(key) for key in keys))
        reconciler.trigger()
        return any(stopped)

    async def _logs(
        self, which: str | None, scope: Scope, receive: Receive, send: Send, *, follow: bool
    ) -> None:
        query = scope.get("query_string", b"").decode("latin-1")
        skip_history = "no-history" in query.split("&")
        sources: list[LogSource] = []
        if which in (None, "proxy") and self._own_log is not None:
            sources.append(LogSource.of_log(self._own_log, "[llamasup] "))
        sidecars = self._host.reconciler.supervisor.sidecars()
        if which not in (None, "proxy", "upstream"):
            model = self._host.profiles.find_model(which)
            if model is None:
                raise ApiError(
                    400,
                    "unknown_log",
                    f"invalid logger {which!r}: use 'proxy', 'upstream' or a model's id",
                )
            sidecars = [s for s in sidecars if s.spec.model == model.id]
        if which != "proxy":
            sources.extend(LogSource.of_sidecar(s, f"[{s.spec.model}] ") for s in sidecars)
        lines = 0 if skip_history else DEFAULT_LINES * 10
        await stream_sources(sources, [], lines, follow=follow, receive=receive, send=send)

    # -- llama.cpp's router ----------------------------------------------------------------------

    def _load(self, name: str) -> tuple[int, dict[str, Any]]:
        """Start the model's sidecar now, as a request for it would, without waiting."""
        model = self._host.profiles.find_model(name)
        if model is None:
            return _router_error("model is not found")
        reconciler = self._host.reconciler
        try:
            spec = reconciler.resolver.resolve(model.id).spec
        except LlamasupError as exc:
            return _router_error(str(exc))
        timeout = self._host.profiles.server.start_timeout

        async def load() -> None:
            try:
                async with reconciler.lease(spec, timeout=timeout, origin=Origin(model.id, None)):
                    pass
            except (LlamasupError, TimeoutError) as exc:
                logger.warning("loading %s (POST /models/load) failed: %s", model.id, exc)

        task = asyncio.create_task(load(), name=f"load-{model.id}")
        self._loads.add(task)
        task.add_done_callback(self._loads.discard)
        return 200, {"success": True}

    async def _router_unload(self, name: str) -> tuple[int, dict[str, Any]]:
        if self._host.profiles.find_model(name) is None:
            return _router_error("model is not found")
        if not await self._unload_model(name):
            return _router_error("model is not running")
        return 200, {"success": True}

    def _props(self) -> dict[str, Any]:
        server = self._host.profiles.server
        return {
            "role": "router",
            "max_instances": server.max_sidecars,
            "models_autoload": True,
            "model_alias": "llamasup",
            "model_path": "none",
            "build_info": f"llamasup {__version__}",
        }


def _router_error(message: str) -> tuple[int, dict[str, Any]]:
    """The router's error shape (it is not llamasup's envelope: its clients read this one)."""
    return 400, {"error": {"code": 400, "message": message, "type": "invalid_request_error"}}


async def _model_field(scope: Scope, receive: Receive) -> str:
    body = await read_body(receive, None, 1 << 16)
    try:
        data = json.loads(body or b"{}")
    except ValueError as exc:
        raise ApiError(400, "bad_json", f"request body is not JSON: {exc}") from exc
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, str) or not model:
        raise ApiError(400, "bad_request", 'give {"model": "NAME"}')
    return model
