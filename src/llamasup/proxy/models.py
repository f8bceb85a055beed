"""``GET /v1/models``: every name a client may send, with the state of its sidecar.

Listed: each model id, each alias, and ``model@agent`` for every agent that applies to the
model (an agent bound to a model applies to that one only). Unlisted models are hidden, as
are combinations the profiles cannot resolve (load-time flags on a ``command:`` model).
"""

from __future__ import annotations

from typing import Any

from llamasup.errors import ResolveError
from llamasup.reconcile.pool import SidecarPool
from llamasup.spec.resolve import AGENT_SEPARATOR, Resolver, SidecarSpec


def model_listing(resolver: Resolver, pool: SidecarPool) -> dict[str, Any]:
    profiles = resolver.profiles
    data: list[dict[str, Any]] = []
    for model in profiles.models.values():
        if model.unlisted:
            continue
        try:
            base = resolver.resolve(model.id)
        except ResolveError:
            continue
        base_state = pool.state(base.spec.key) or "stopped"
        base_argv = _argv(base.spec)
        names = [(model.id, None), *((alias, model.id) for alias in model.aliases)]
        for name, alias_of in names:
            data.append(
                _entry(
                    name,
                    model=model.id,
                    agent=None,
                    alias_of=alias_of,
                    state=base_state,
                    key=base.spec.key,
                    description=model.description,
                    aliases=model.aliases if alias_of is None else (),
                    argv=base_argv,
                )
            )
        for agent in profiles.agents.values():
            if agent.model is not None and agent.model != model.id:
                continue
            try:
                resolved = resolver.resolve(model.id, agent.name)
            except ResolveError:
                continue
            key = resolved.spec.key
            state = base_state if key == base.spec.key else (pool.state(key) or "stopped")
            name = f"{model.id}{AGENT_SEPARATOR}{agent.name}"
            data.append(
                _entry(
                    name,
                    model=model.id,
                    agent=agent.name,
                    alias_of=None,
                    state=state,
                    key=key,
                    description=agent.description or model.description,
                    aliases=(),
                    argv=_argv(resolved.spec),
                )
            )
    return {
        "object": "list",
        "data": data,
        # Anthropic's list shape, beside OpenAI's
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


#: llamasup's states as the router names them (it knows loading, loaded and unloaded)
_ROUTER_STATES = {"starting": "loading", "ready": "loaded", "stopping": "loaded"}


def _argv(spec: SidecarSpec) -> list[str]:
    return [spec.binary or "llama-server", *spec.args]


def _entry(
    name: str,
    *,
    model: str,
    agent: str | None,
    alias_of: str | None,
    state: str,
    key: str,
    description: str,
    aliases: tuple[str, ...],
    argv: list[str],
) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": 0,
        "owned_by": "llamasup",
        # what llama.cpp's router lists, for its web UI and the tools written for it
        "aliases": list(aliases),
        "tags": [],
        "status": {"value": _ROUTER_STATES.get(state, "unloaded"), "args": argv},
        # what Anthropic clients read from a model entry
        "type": "model",
        "display_name": name,
        "created_at": "1970-01-01T00:00:00Z",
        "llamasup": {
            "model": model,
            "agent": agent,
            "alias_of": alias_of,
            "state": state,
            "sidecar": key,
            "description": description,
        },
    }
