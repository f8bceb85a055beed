"""From an incoming request to a resolved sidecar and the body to send it.

Pure functions and one small cache; no I/O. The ASGI layer (``app.py``) calls them in order:
:func:`scan_headers`, :func:`~llamasup.proxy.body.parse_body`, :func:`pick_target`,
:meth:`TargetResolver.resolve`, :func:`prepare_body`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from llamasup.core.units import parse_duration
from llamasup.errors import FlagError, ResolveError, UnknownAgentError, UnknownModelError
from llamasup.flags.flagset import parse_header
from llamasup.profiles.types import ServerConfig
from llamasup.proxy.body import RequestBody, edit_body
from llamasup.proxy.envelope import Dialect, ProxyError
from llamasup.proxy.loading import HEADER_LOADING_STATE
from llamasup.spec.resolve import Resolved, Resolver, split_target


@dataclass(frozen=True, slots=True)
class RouteInfo:
    """A forwarded inference route."""

    path: str
    dialect: Dialect
    #: whether an agent's sampling defaults apply (generation routes only)
    generation: bool
    #: llama-server serves the route only when started with one of these switches
    requires: tuple[str, ...] = ()


def _routes() -> dict[str, RouteInfo]:
    openai_gen = (
        "/v1/chat/completions",
        "/chat/completions",
        "/v1/completions",
        "/completions",
        "/v1/responses",
        "/completion",
        "/infill",
    )
    openai_other = (
        "/v1/embeddings",
        "/embeddings",
        "/v1/rerank",
        "/rerank",
        "/tokenize",
        "/detokenize",
        "/apply-template",
    )
    table = {p: RouteInfo(p, Dialect.OPENAI, True) for p in openai_gen}
    table.update({p: RouteInfo(p, Dialect.OPENAI, False) for p in openai_other})
    for path in ("/v1/embeddings", "/embeddings"):
        table[path] = RouteInfo(path, Dialect.OPENAI, False, ("--embeddings", "--reranking"))
    for path in ("/v1/rerank", "/rerank"):
        table[path] = RouteInfo(path, Dialect.OPENAI, False, ("--reranking",))
    table["/v1/messages"] = RouteInfo("/v1/messages", Dialect.ANTHROPIC, True)
    table["/v1/messages/count_tokens"] = RouteInfo(
        "/v1/messages/count_tokens", Dialect.ANTHROPIC, False
    )
    return table


ROUTES: Mapping[str, RouteInfo] = _routes()

_NO_DEFAULTS: Mapping[str, Any] = {}

HEADER_MODEL = b"x-model-id"
HEADER_AGENT = b"x-agent"
HEADER_AGENT_FLAGS = b"x-agent-flags"
#: how long the request's sidecar should stay loaded once idle (like the body's
#: ``keep_alive``, ollama's field: seconds or a duration; 0 unloads; negative: the maximum)
HEADER_KEEP_ALIVE = b"x-llamasup-keep-alive"

#: request headers never forwarded to a sidecar: hop-by-hop ones, ones the upstream client
#: sets itself, llamasup's own routing headers, and the client's credentials for llamasup
_DROPPED_REQUEST_HEADERS = frozenset(
    {
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-connection",
        b"proxy-authorization",
        b"expect",
        b"accept-encoding",
        b"authorization",
        b"x-api-key",
        HEADER_MODEL,
        HEADER_AGENT,
        HEADER_AGENT_FLAGS,
        HEADER_KEEP_ALIVE,
        HEADER_LOADING_STATE,
    }
)

#: a default for the key is skipped when the client set any of these instead; llama-server
#: lets n_predict override max_tokens, so an agent's n_predict must never beat the client's
SYNONYMS: Mapping[str, tuple[str, ...]] = {
    "n_predict": ("max_tokens", "max_completion_tokens", "max_output_tokens"),
    "stop": ("stop_sequences",),
    "json_schema": ("response_format", "grammar"),
    "grammar": ("json_schema", "response_format"),
}


@dataclass(slots=True)
class RequestHeaders:
    forward: list[tuple[bytes, bytes]]
    model: str | None = None
    agent: str | None = None
    agent_flags: str | None = None
    keep_alive: str | None = None
    loading_state: str | None = None
    content_length: int | None = None


def scan_headers(headers: Iterable[tuple[bytes, bytes]]) -> RequestHeaders:
    """One pass over the request headers: routing headers out, the rest to forward."""
    result = RequestHeaders([])
    forward = result.forward
    for name, value in headers:
        if name not in _DROPPED_REQUEST_HEADERS:
            forward.append((name, value))
        elif name == HEADER_MODEL:
            result.model = value.decode("latin-1").strip() or None
        elif name == HEADER_AGENT:
            result.agent = value.decode("latin-1").strip() or None
        elif name == HEADER_AGENT_FLAGS:
            result.agent_flags = value.decode("latin-1")
        elif name == HEADER_KEEP_ALIVE:
            result.keep_alive = value.decode("latin-1").strip() or None
        elif name == HEADER_LOADING_STATE:
            result.loading_state = value.decode("latin-1")
        elif name == b"content-length":
            try:
                result.content_length = int(value)
            except ValueError:
                raise ProxyError(
                    400, "invalid_content_length", "malformed Content-Length"
                ) from None
    return result


def keep_alive_of(body_value: object, header_value: str | None, limit: float) -> float | None:
    """Seconds a request asks its sidecar to stay loaded once idle; the header wins over the
    body's ``keep_alive``. Negative means as long as allowed; everything is clamped to
    ``limit`` (``server.scheduling.max_keep_alive``). None: the request asks nothing."""
    value = header_value if header_value is not None else body_value
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("-"):
            return limit
        try:
            seconds = parse_duration(float(text) if _NUMBER.match(text) else text)
        except ValueError as exc:
            raise ProxyError(400, "invalid_keep_alive", f"keep_alive: {exc}") from exc
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = limit if value < 0 else float(value)
    else:
        raise ProxyError(
            400, "invalid_keep_alive", f"keep_alive must be seconds or a duration, not {value!r}"
        )
    return min(seconds, limit)


_NUMBER = re.compile(r"^\d+(\.\d+)?$")


def pick_target(
    body_model: object, header_model: str | None, header_agent: str | None
) -> tuple[str | None, str | None]:
    """(model, agent) from ``X-Model-Id`` (wins), else body ``model``; ``X-Agent`` adds agent."""
    name = header_model
    if name is None:
        if body_model is not None and not isinstance(body_model, str):
            raise ProxyError(400, "invalid_model", '"model" must be a string', param="model")
        name = body_model or None
    model, agent = split_target(name) if name else (None, None)
    if header_agent is not None:
        if agent and agent != header_agent:
            raise ProxyError(
                400,
                "agent_conflict",
                f"model {name!r} names agent {agent!r} but X-Agent says {header_agent!r}; "
                "send one or make them agree",
                param="model",
            )
        agent = header_agent
    return model or None, agent or None


class TargetResolver:
    """Resolves (model, agent, X-Agent-Flags) against the profiles in force.

    Plain (model, agent) lookups are memoised by :class:`Resolver` itself; this adds a small
    cache for header overlays, since an agent tends to send the same header every time.
    """

    _MAX_CACHED = 256

    def __init__(self) -> None:
        self._owner: Resolver | None = None
        self._with_flags: dict[tuple[str | None, str | None, str], Resolved] = {}

    def resolve(
        self,
        resolver: Resolver,
        model: str | None,
        agent: str | None,
        agent_flags: str | None,
        server: ServerConfig,
    ) -> Resolved:
        try:
            if agent_flags is None:
                return resolver.resolve(model, agent)
            return self._resolve_with_flags(resolver, model, agent, agent_flags, server)
        except ResolveError as exc:
            raise resolve_error(exc) from exc

    def _resolve_with_flags(
        self,
        resolver: Resolver,
        model: str | None,
        agent: str | None,
        header: str,
        server: ServerConfig,
    ) -> Resolved:
        if not server.agent_flags_enabled:
            raise ProxyError(
                400,
                "agent_flags_disabled",
                "X-Agent-Flags is not accepted by this server (set server.agent_flags.enabled "
                "in the profiles to allow it)",
                param="X-Agent-Flags",
            )
        if self._owner is not resolver:  # profiles were reloaded
            self._owner = resolver
            self._with_flags = {}
        key = (model, agent, header)
        hit = self._with_flags.get(key)
        if hit is not None:
            return hit
        try:
            extra = parse_header(header, allow_load=server.agent_flags_allow_load)
        except FlagError as exc:
            raise ProxyError(
                400, "invalid_agent_flags", f"X-Agent-Flags: {exc}", param="X-Agent-Flags"
            ) from exc
        resolved = resolver.resolve(model, agent, extra=extra)
        if len(self._with_flags) >= self._MAX_CACHED:
            self._with_flags.clear()
        self._with_flags[key] = resolved
        return resolved


def resolve_error(exc: ResolveError) -> ProxyError:
    if isinstance(exc, UnknownModelError):
        if exc.agent is not None:
            return ProxyError(400, "model_required", str(exc), param="model")
        if not exc.name:
            listing = ", ".join(exc.known) or "(none defined)"
            return ProxyError(
                400,
                "model_required",
                f'the request names no model (set "model" or X-Model-Id); valid models: {listing}',
                param="model",
            )
        return ProxyError(404, "model_not_found", str(exc), param="model")
    if isinstance(exc, UnknownAgentError):
        return ProxyError(404, "agent_not_found", str(exc), param="model")
    return ProxyError(400, "unresolvable", str(exc), param="model")


def prepare_body(body: RequestBody, resolved: Resolved, route: RouteInfo) -> bytes:
    """The body for the sidecar: ``model`` set to the served name, agent defaults added
    (generation routes only; the client's own values win), and the profile's ``request``
    rules applied on every route (forced values win over the client's; stripped keys go)."""
    defaults = resolved.request_defaults if route.generation else _NO_DEFAULTS
    return edit_body(
        body,
        model=resolved.spec.served_name,
        defaults=defaults,
        synonyms=SYNONYMS,
        force=resolved.request_force,
        strip=resolved.request_strip,
    )


_SWITCH_ENV = {"--embeddings": "LLAMA_ARG_EMBEDDINGS", "--reranking": "LLAMA_ARG_RERANKING"}


def check_route_enabled(route: RouteInfo, resolved: Resolved) -> None:
    """Refuse, with the fix, a route the model's llama-server was not started to serve
    (llama-server would answer 501, which SDKs retry)."""
    spec = resolved.spec
    if not route.requires or spec.kind != "llama-server":
        return
    env = dict(spec.env)
    for switch in route.requires:
        if spec.load_flags.value(switch) is True:
            return
        if env.get(_SWITCH_ENV[switch], "").lower() in ("1", "true", "on", "yes", "enabled"):
            return
    model = resolved.model.id
    raise ProxyError(
        400,
        "endpoint_not_enabled",
        f"model {model!r} is not started with {route.requires[0]}, which {route.path} needs: "
        f"add it to models.{model}.args (or to an agent's flags)",
        param="model",
    )
