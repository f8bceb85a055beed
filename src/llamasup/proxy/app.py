"""The ASGI inference front: route, resolve, lease a sidecar, forward, stream back.

A raw ASGI app (no framework): the per-request work is a dict lookup for the route, one pass
over the headers, one JSON parse (and a re-serialisation only when the body must change), a
lease from the pool, and a relay loop that hands each upstream chunk to the server as it
arrives. ``bench/RESULTS.md`` (``## Proxy overhead``) has the numbers behind these choices.

Unknown paths fall through to ``fallback`` (the control API) when one is given, so both can
share one listener.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from time import perf_counter
from urllib.parse import unquote

from llamasup.errors import CapacityError, LlamasupError
from llamasup.profiles.types import ServerConfig
from llamasup.proxy.asgi import (
    ASGIApp,
    BodyTimeoutError,
    BodyTooLargeError,
    ClientGoneError,
    DirectBody,
    Receive,
    Scope,
    Send,
    direct_body,
    read_body,
    send_json,
)
from llamasup.proxy.body import parse_body
from llamasup.proxy.envelope import (
    Dialect,
    ProxyError,
    send_error,
    stream_error_event,
    too_large,
    too_slow,
)
from llamasup.proxy.hooks import ProxyObserver, RequestRecord, token_counts
from llamasup.proxy.limits import ConcurrencyGates
from llamasup.proxy.loading import LoadingStream, wants_loading_state
from llamasup.proxy.models import model_listing
from llamasup.proxy.relay import Exchange, relay
from llamasup.proxy.request import (
    ROUTES,
    RouteInfo,
    TargetResolver,
    check_route_enabled,
    keep_alive_of,
    pick_target,
    prepare_body,
    scan_headers,
)
from llamasup.proxy.upstream import UpstreamClient, UpstreamError
from llamasup.reconcile.pool import DEFAULT_TERMS, Origin, ResolverSource, SidecarPool, Terms
from llamasup.spec.connections import max_connections
from llamasup.spec.resolve import Resolved, SidecarSpec

UPSTREAM_PREFIX = "/upstream/"


class _Outbound:
    """What goes to the sidecar."""

    __slots__ = (
        "direct",
        "headers",
        "loading",
        "method",
        "origin",
        "payload",
        "start_timeout",
        "target",
        "terms",
    )

    def __init__(
        self,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        payload: bytes,
        start_timeout: float,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.payload = payload
        self.start_timeout = start_timeout
        self.origin: Origin | None = None
        self.terms = DEFAULT_TERMS
        #: progress while the sidecar loads (a streamed chat that opted in)
        self.loading = False
        #: the front's shortcut for a streamed body, when it offers one
        self.direct: DirectBody | None = None


class ProxyApp:
    """The ASGI application; build it with :func:`create_proxy_app`."""

    def __init__(
        self,
        resolver: ResolverSource,
        pool: SidecarPool,
        *,
        observer: ProxyObserver | None = None,
        fallback: ASGIApp | None = None,
        client: UpstreamClient | None = None,
    ) -> None:
        self._resolver = resolver
        self._pool = pool
        self._observer = observer
        self._fallback = fallback
        self.client = client or UpstreamClient()
        #: connection cap per sidecar key (from its --parallel / --threads-http)
        self._caps: dict[str, int | None] = {}
        self._targets = TargetResolver()
        self._limits = ConcurrencyGates()

    async def aclose(self) -> None:
        """Close idle sidecar connections (call on shutdown)."""
        await self.client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if self._fallback is not None:
                await self._fallback(scope, receive, send)
            elif scope["type"] == "lifespan":
                await self._lifespan(receive, send)
            return
        path: str = scope["path"]
        route = ROUTES.get(path)
        if route is not None:
            if scope["method"] == "POST":
                await self._inference(route, scope, receive, send)
            else:
                await _wrong_method(send, path, "POST", route.dialect)
        elif path.startswith(UPSTREAM_PREFIX):
            await self._passthrough(scope, receive, send)
        elif path in _READ_ROUTES or (
            path.startswith(_MODEL_PREFIXES) and path not in _FALLBACK_MODEL_ROUTES
        ):
            if scope["method"] not in ("GET", "HEAD"):
                await _wrong_method(send, path, "GET, HEAD", Dialect.OPENAI)
            elif path == "/health":
                await send_json(send, 200, {"status": "ok"})
            elif path in ("/v1/models", "/models"):
                await send_json(send, 200, model_listing(self._resolver(), self._pool))
            else:
                await self._one_model(path, send)
        elif self._fallback is not None:
            await self._fallback(scope, receive, send)
        else:
            await send_error(
                send, ProxyError(404, "not_found", f"no route for {path}"), Dialect.OPENAI
            )

    async def _one_model(self, path: str, send: Send) -> None:
        """``GET /v1/models/{id}``: the entry ``/v1/models`` lists for an id, alias or
        ``model@agent`` (what SDKs' ``models.retrieve`` asks for)."""
        name = path.split("/models/", 1)[1]  # the ASGI path is already percent-decoded
        listing = model_listing(self._resolver(), self._pool)
        entry = next((e for e in listing["data"] if e["id"] == name), None)
        if entry is None:
            known = sorted(e["id"] for e in listing["data"])
            error = ProxyError(
                404, "model_not_found", f"unknown model {name!r}; listed: {', '.join(known)}"
            )
            await send_error(send, error, Dialect.OPENAI)
            return
        await send_json(send, 200, entry)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- the two forwarding entry points ----------------------------------------------------
    async def _inference(
        self, route: RouteInfo, scope: Scope, receive: Receive, send: Send
    ) -> None:
        ex = Exchange(route.path, route.dialect, self._observer is not None)
        await self._answer(ex, send, self._forward_inference(ex, route, scope, receive, send))

    async def _forward_inference(
        self, ex: Exchange, route: RouteInfo, scope: Scope, receive: Receive, send: Send
    ) -> None:
        resolver = self._resolver()
        server = resolver.profiles.server
        headers = scan_headers(scope["headers"])
        raw = await read_body(
            receive, headers.content_length, server.max_request_body, server.client_timeouts.body
        )
        body = parse_body(raw)
        model, agent = pick_target(body.get("model"), headers.model, headers.agent)
        resolved = self._targets.resolve(resolver, model, agent, headers.agent_flags, server)
        check_route_enabled(route, resolved)
        payload = prepare_body(body, resolved, route)
        target = route.path.encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        out = _Outbound("POST", target, headers.forward, payload, server.start_timeout)
        out.origin = _origin(resolved, headers.agent_flags)
        out.direct = direct_body(scope)
        keep = keep_alive_of(body.get("keep_alive"), headers.keep_alive, _keep_limit(server))
        out.terms = _terms(resolved, keep)
        default = resolved.model.send_loading_state
        out.loading = wants_loading_state(
            route.path,
            body.get("stream"),
            headers.loading_state,
            server.send_loading_state if default is None else default,
        )
        await self._forward(ex, receive, send, resolved, out)

    async def _passthrough(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``/upstream/{model}/{path}``: any method, body and path untouched."""
        ex = Exchange("/upstream", Dialect.OPENAI, self._observer is not None)
        await self._answer(ex, send, self._forward_passthrough(ex, scope, receive, send))

    async def _forward_passthrough(
        self, ex: Exchange, scope: Scope, receive: Receive, send: Send
    ) -> None:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        parts = raw_path.split(b"/", 3)
        name = unquote(parts[2].decode("latin-1")) if len(parts) > 2 else ""
        if not name:
            raise ProxyError(404, "not_found", "use /upstream/{model}/{path}")
        target = b"/" + (parts[3] if len(parts) > 3 else b"")
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        resolver = self._resolver()
        server = resolver.profiles.server
        headers = scan_headers(scope["headers"])
        raw = await read_body(
            receive, headers.content_length, server.max_request_body, server.client_timeouts.body
        )
        model, agent = pick_target(None, name, headers.agent)
        resolved = self._targets.resolve(resolver, model, agent, headers.agent_flags, server)
        out = _Outbound(scope["method"], target, headers.forward, raw, server.start_timeout)
        out.origin = _origin(resolved, headers.agent_flags)
        out.direct = direct_body(scope)
        out.terms = _terms(resolved, keep_alive_of(None, headers.keep_alive, _keep_limit(server)))
        await self._forward(ex, receive, send, resolved, out)

    async def _answer(self, ex: Exchange, send: Send, work: Awaitable[None]) -> None:
        """Run one exchange: llamasup's own refusals in the route's envelope, always observed."""
        try:
            await work
        except ProxyError as exc:
            await self._refuse(ex, send, exc, ex.dialect)
        except BodyTooLargeError as exc:
            await self._refuse(ex, send, too_large(exc), ex.dialect)
        except BodyTimeoutError as exc:
            await self._refuse(ex, send, too_slow(exc), ex.dialect)
        except ClientGoneError:
            ex.status, ex.error = 499, "client_disconnected"
        finally:
            self._observe(ex)

    # -- forwarding --------------------------------------------------------------------------
    async def _forward(
        self, ex: Exchange, receive: Receive, send: Send, resolved: Resolved, out: _Outbound
    ) -> None:
        ex.model = resolved.model.id
        ex.agent = resolved.agent.name if resolved.agent is not None else ""
        observer = self._observer
        if observer is not None:
            observer.request_started(ex.route, ex.model, ex.agent)
            ex.started = True
        task = asyncio.current_task()
        assert task is not None
        # The body has been read, so the next receive() completes only when the client
        # disconnects (or the response is complete): then cancel whatever we are waiting for
        # (a queue slot, the sidecar's start, the upstream) so demand is withdrawn and the
        # sidecar sees its client go away.
        watcher = asyncio.ensure_future(receive())

        def client_left(_: object) -> None:
            if not ex.finished and not watcher.cancelled():
                ex.client_gone = True
                task.cancel()

        watcher.add_done_callback(client_left)
        gate = self._limits.gate(resolved.model)
        try:
            if gate is not None:
                await gate.acquire()
            try:
                await self._leased(ex, send, resolved, out)
            finally:
                if gate is not None:
                    gate.release()
        except asyncio.CancelledError:
            if not ex.client_gone:
                raise
            task.uncancel()
            ex.status = 499
            ex.error = "client_disconnected"
        finally:
            ex.finished = True
            if not watcher.done():
                watcher.remove_done_callback(client_left)
                watcher.cancel()

    async def _leased(self, ex: Exchange, send: Send, resolved: Resolved, out: _Outbound) -> None:
        entered = False
        key = resolved.spec.key
        loader: LoadingStream | None = None
        if out.loading and self._pool.state(key) != "ready":
            loader = LoadingStream(send, resolved.model.id, lambda: self._pool.progress(key))
            await loader.begin()
            ex.response_started = ex.streamed = True
            ex.status = 200
        try:
            lease = self._pool.lease(
                resolved.spec, timeout=out.start_timeout, origin=out.origin, terms=out.terms
            )
            async with lease as upstream:
                entered = True
                ex.key = upstream.key
                if loader is not None:
                    await loader.end(ready=True)
                if self._observer is not None:
                    ex.wait = perf_counter() - ex.t0
                try:
                    response = await self.client.request(
                        out.method,
                        upstream.host,
                        upstream.port,
                        out.target,
                        headers=[*out.headers, *upstream.headers],
                        body=out.payload,
                        max_connections=self._connection_cap(resolved.spec),
                    )
                except UpstreamError as exc:
                    raise ProxyError(
                        502, "upstream_unreachable", f"sidecar for {resolved.model.id!r}: {exc}"
                    ) from exc
                try:
                    await relay(ex, response, send, head_sent=loader is not None, direct=out.direct)
                finally:
                    response.release()
        except (TimeoutError, LlamasupError) as exc:
            if entered:
                raise
            raise _lease_error(exc, resolved, out.start_timeout) from exc
        finally:
            if loader is not None and not entered:
                await loader.end(ready=False)
            if not entered and self._observer is not None:
                # no sidecar came (refused, timed out, the client left): the wait still counts
                ex.wait = perf_counter() - ex.t0

    def _connection_cap(self, spec: SidecarSpec) -> int | None:
        """Connections to keep open to ``spec``'s sidecar (see ``spec.connections``)."""
        caps = self._caps
        key = spec.key
        if key not in caps:
            if len(caps) >= 4096:  # ever new X-Agent-Flags keys must not grow it forever
                caps.clear()
            caps[key] = max_connections(spec)
        return caps[key]

    # -- answers of our own ------------------------------------------------------------------
    async def _refuse(self, ex: Exchange, send: Send, exc: ProxyError, dialect: Dialect) -> None:
        ex.status = exc.status
        ex.error = exc.code
        ex.finished = True
        if ex.response_started:
            # a loading stream has begun (200 sent): the refusal goes in-band, last event
            event = stream_error_event(dialect, exc.message, exc.code)
            await send({"type": "http.response.body", "body": event, "more_body": False})
            return
        await send_error(send, exc, dialect)

    def _observe(self, ex: Exchange) -> None:
        observer = self._observer
        if observer is None:
            return
        tokens_in, tokens_out = token_counts(ex.before + ex.tail) if ex.tail else (None, None)
        observer.request_finished(
            RequestRecord(
                route=ex.route,
                model=ex.model,
                agent=ex.agent,
                status=ex.status,
                duration=perf_counter() - ex.t0,
                ttfb=ex.ttfb,
                wait=ex.wait,
                streamed=ex.streamed,
                error=ex.error,
                started=ex.started,
                key=ex.key,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
            )
        )


def create_proxy_app(
    resolver: ResolverSource,
    pool: SidecarPool,
    *,
    observer: ProxyObserver | None = None,
    fallback: ASGIApp | None = None,
    client: UpstreamClient | None = None,
) -> ProxyApp:
    """The inference front as an ASGI app.

    ``resolver`` is called once per request and must return the resolver of the profiles in
    force (so hot reloads apply to the next request). ``pool`` gives leases on ready
    sidecars. ``observer`` receives metrics events. ``fallback`` gets every path the proxy
    does not serve (and lifespan events); without it those answer 404 and the proxy handles
    lifespan itself. ``client`` lets tests or the app share an :class:`UpstreamClient`.
    """
    return ProxyApp(resolver, pool, observer=observer, fallback=fallback, client=client)


_READ_ROUTES = frozenset({"/v1/models", "/models", "/health"})
_MODEL_PREFIXES = ("/v1/models/", "/models/")
#: llama.cpp router's model management, answered by the control API (the fallback)
_FALLBACK_MODEL_ROUTES = frozenset({"/models/load", "/models/unload"})


async def _wrong_method(send: Send, path: str, allow: str, dialect: Dialect) -> None:
    error = ProxyError(405, "method_not_allowed", f"{path} accepts {allow}", allow=allow)
    await send_error(send, error, dialect)


def _origin(resolved: Resolved, agent_flags: str | None) -> Origin:
    agent = resolved.agent.name if resolved.agent is not None else None
    return Origin(resolved.model.id, agent, () if agent_flags is None else (agent_flags,))


def _keep_limit(server: ServerConfig) -> float:
    return server.scheduling.max_keep_alive


def _terms(resolved: Resolved, keep_alive: float | None) -> Terms:
    priority = resolved.priority
    if priority == 0 and keep_alive is None:
        return DEFAULT_TERMS  # the common case allocates nothing
    return Terms(priority, keep_alive)


def _lease_error(exc: Exception, resolved: Resolved, timeout: float) -> ProxyError:
    model = resolved.model.id
    if isinstance(exc, CapacityError):
        return ProxyError(503, "insufficient_capacity", f"model {model!r} cannot run here: {exc}")
    if isinstance(exc, LlamasupError):  # SidecarError and whatever else the pool reports
        return ProxyError(503, "sidecar_unavailable", f"model {model!r} could not start: {exc}")
    return ProxyError(
        504,
        "sidecar_start_timeout",
        f"model {model!r} was not ready within {timeout:g} s (server.start_timeout)",
    )
