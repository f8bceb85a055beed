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
from typing import Any

from llamasup._version import __version__
from llamasup.errors import LlamasupError
from llamasup.profiles.types import http_url
from llamasup.proxy.asgi import Receive, Scope, Send, read_body, send_json
from llamasup.reconcile.pool import Origin
from llamasup.service.api_errors import ApiError, send_bytes
from llamasup.service.api_logs import DEFAULT_LINES, LogSource, stream_sources
from llamasup.service.host import ControlHost
from llamasup.service.routes import Route
from llamasup.sidecars.proclog import ProcessLog

logger = logging.getLogger(__name__)


class CompatRoutes:
    def __init__(self, host: ControlHost, own_log: ProcessLog | None) -> None:
        self._host = host
        self._own_log = own_log
        self._loads: set[asyncio.Task[None]] = set()

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/running", self._running_route),
            Route("GET", "/unload", self._unload_route),
            Route("POST", "/unload", self._unload_route),
            Route("POST", "/api/models/unload", self._api_unload_all),
            Route("POST", "/api/models/unload/", self._api_unload_model, prefix=True),
            Route("GET", "/logs", self._logs_history),
            Route("GET", "/logs/stream", self._logs_stream),
            Route("GET", "/logs/stream/", self._logs_stream, prefix=True),
            Route("POST", "/models/load", self._models_load),
            Route("POST", "/models/unload", self._models_unload),
            Route("GET", "/props", self._props_route),
        ]

    async def _running_route(self, scope: Scope, receive: Receive, send: Send, tail: str) -> None:
        await send_json(send, 200, {"running": self._running()})

    async def _unload_route(self, scope: Scope, receive: Receive, send: Send, tail: str) -> None:
        await self._unload_all()
        await send_bytes(send, 200, b"OK", "text/plain; charset=utf-8")

    async def _api_unload_all(self, scope: Scope, receive: Receive, send: Send, tail: str) -> None:
        await self._unload_all()
        await send_json(send, 200, {"msg": "ok"})

    async def _api_unload_model(
        self, scope: Scope, receive: Receive, send: Send, tail: str
    ) -> None:
        if self._host.profiles.find_model(tail) is None:
            raise ApiError(404, "unknown_model", f"model not found: {tail!r}")
        await self._unload_model(tail)
        await send_bytes(send, 200, b"OK", "text/plain; charset=utf-8")

    async def _logs_history(self, scope: Scope, receive: Receive, send: Send, tail: str) -> None:
        await self._logs(None, scope, receive, send, follow=False)

    async def _logs_stream(self, scope: Scope, receive: Receive, send: Send, tail: str) -> None:
        await self._logs(tail or None, scope, receive, send, follow=True)

    async def _models_load(self, scope: Scope, receive: Receive, send: Send, tail: str) -> None:
        await send_json(send, *self._load(await self._model_field(scope, receive)))

    async def _models_unload(self, scope: Scope, receive: Receive, send: Send, tail: str) -> None:
        name = await self._model_field(scope, receive)
        await send_json(send, *(await self._router_unload(name)))

    async def _props_route(self, scope: Scope, receive: Receive, send: Send, tail: str) -> None:
        await send_json(send, 200, self._props())

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

    async def _model_field(self, scope: Scope, receive: Receive) -> str:
        stall = self._host.profiles.server.client_timeouts.body
        body = await read_body(receive, None, 1 << 16, stall)
        try:
            data = json.loads(body or b"{}")
        except (ValueError, RecursionError) as exc:
            raise ApiError(400, "bad_json", f"request body is not JSON: {exc}") from exc
        model = data.get("model") if isinstance(data, dict) else None
        if not isinstance(model, str) or not model:
            raise ApiError(400, "bad_request", 'give {"model": "NAME"}')
        return model

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
