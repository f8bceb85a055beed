"""``SidecarSpec``: everything needed to launch one sidecar, and its identity key."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from llamasup.errors import ResolveError, UnknownAgentError, UnknownModelError
from llamasup.flags.flagset import FlagSet, merge
from llamasup.flags.vocabulary import Kind
from llamasup.profiles.types import AgentConfig, ModelConfig, Profiles

SidecarKind = Literal["llama-server", "command"]

#: placeholders a ``command:`` model may use; llamasup substitutes them at spawn time
HOST_PLACEHOLDER = "${HOST}"
PORT_PLACEHOLDER = "${PORT}"


@dataclass(frozen=True)
class SidecarSpec:
    """One llama-server (or ``command:``) process as the profiles describe it.

    ``args`` never contains ``--host``/``--port``: llamasup owns them and adds them at spawn
    time (for ``command`` sidecars, through the ``${HOST}``/``${PORT}`` placeholders).
    """

    model: str
    kind: SidecarKind
    binary: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    health_path: str = "/health"
    model_path: str | None = None
    served_name: str = ""
    pinned: bool = False
    preload: bool = False
    ttl: float | None = None
    memory: int | None = None
    #: the profile's ``memory`` per device, when it gave one (not part of the key)
    memory_devices: tuple[tuple[str, int], ...] = ()
    group: str | None = None
    concurrency: int | None = None
    priority: int = 0
    load_flags: FlagSet = field(default_factory=FlagSet, compare=False, repr=False)
    key: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.identity_key())

    def identity_key(self) -> str:
        """A stable hash of what makes the process what it is.

        In: kind, binary as configured, the load-time argv (model path included), and the
        environment the profile sets. Out: the model id and everything that does not change the
        running process (pinned, ttl, group, memory override, priority, request-time
        defaults). Equal key means the running process is reused as is.
        """
        payload = {
            "kind": self.kind,
            "binary": self.binary,
            "args": list(self.args),
            "env": [list(pair) for pair in self.env],
        }
        encoded = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(encoded).hexdigest()[:16]

    def command_line(
        self, binary_path: str, host: str, port: int, args: Sequence[str] | None = None
    ) -> list[str]:
        """The argv to exec, with llamasup's own host and port; ``args``: the spec's args
        as the binary spells them (see :mod:`llamasup.flags.dialect`)."""
        own = self.args if args is None else args
        if self.kind == "command":
            return [
                part.replace(HOST_PLACEHOLDER, host).replace(PORT_PLACEHOLDER, str(port))
                for part in (binary_path, *own)
            ]
        return [binary_path, *own, "--host", host, "--port", str(port)]

    @property
    def env_map(self) -> Mapping[str, str]:
        return dict(self.env)


AGENT_SEPARATOR = "@"


@dataclass(frozen=True)
class Resolved:
    """What a (model, agent) pair means: the sidecar to use and the per-request defaults.

    ``request_force`` and ``request_strip`` are the model's ``request`` rules with the
    agent's over them: values set and keys removed in every request body, whatever the
    client sent.
    """

    spec: SidecarSpec
    model: ModelConfig
    agent: AgentConfig | None
    request_defaults: Mapping[str, Any]
    request_force: Mapping[str, Any] = field(default_factory=dict)
    request_strip: tuple[str, ...] = ()

    @property
    def upstream_model(self) -> str:
        return self.spec.served_name

    @property
    def priority(self) -> int:
        """The priority of a request for this pair: the agent's, else the model's."""
        if self.agent is not None and self.agent.priority is not None:
            return self.agent.priority
        return self.model.priority


def split_target(name: str) -> tuple[str, str | None]:
    """``model@agent`` → (model, agent); a plain name has no agent."""
    model, sep, agent = name.partition(AGENT_SEPARATOR)
    return model, (agent if sep else None)


def missing_model_file(spec: SidecarSpec) -> str | None:
    """Why a llama-server spec's model file cannot be loaded, checked before anything starts
    (llama-server itself only says "model loading error"); None when it is there."""
    path = spec.model_path
    if spec.kind != "llama-server" or path is None:
        return None
    if not os.path.exists(path):
        return f"the model file {path} does not exist"
    if not os.access(path, os.R_OK):
        return f"the model file {path} is not readable"
    return None


class Resolver:
    """Resolves (model, agent) against one immutable ``Profiles``; results are memoised."""

    def __init__(self, profiles: Profiles) -> None:
        self.profiles = profiles
        self._cache: dict[tuple[str | None, str | None], Resolved] = {}

    def resolve(
        self, model: str | None, agent: str | None = None, *, extra: FlagSet | None = None
    ) -> Resolved:
        if extra is None or len(extra) == 0:
            key = (model, agent)
            hit = self._cache.get(key)
            if hit is None:
                hit = self._cache[key] = resolve(self.profiles, model, agent)
            return hit
        return resolve(self.profiles, model, agent, extra=extra)


def resolve(
    profiles: Profiles, model: str | None, agent: str | None = None, *, extra: FlagSet | None = None
) -> Resolved:
    """The sidecar spec and request defaults for ``model`` with ``agent``'s overlay.

    ``extra`` is an ad-hoc overlay (the ``X-Agent-Flags`` header) applied after the agent.
    Only load-time flags reach the process (and its key): an overlay's request-time flags are
    folded into per-request defaults, so agents that differ only in sampling share a sidecar.
    """
    agent_config = _agent(profiles, agent)
    model_name = model or (agent_config.model if agent_config else None)
    if not model_name:
        lacking = agent_config.name if agent_config is not None else None
        raise UnknownModelError("", _listed_models(profiles), agent=lacking)
    model_config = profiles.find_model(model_name)
    if model_config is None and agent_config is None:
        # a bare agent name stands for the agent on its own model (what a llama-swap client
        # sends for a setParamsByID variant, which ``import llama-swap`` turns into an agent)
        named = profiles.agents.get(model_name)
        if named is not None:
            if not named.model:
                raise UnknownModelError(model_name, _listed_models(profiles), agent=named.name)
            agent_config, model_config = named, profiles.find_model(named.model)
    if model_config is None:
        raise UnknownModelError(model_name, _listed_models(profiles))
    overlays = [f for f in (agent_config.flags if agent_config else None, extra) if f is not None]
    request_defaults: dict[str, Any] = {}
    for overlay in overlays:
        request_defaults.update(overlay.request_defaults())
    load_overlay = merge(*(o.without_kind(Kind.REQUEST) for o in overlays))
    spec = _spec(profiles, model_config, load_overlay, agent_config)
    rules = [model_config.request, *([agent_config.request] if agent_config else [])]
    force = {key: value for rule in rules for key, value in rule.force.items()}
    strip = tuple(dict.fromkeys(key for rule in rules for key in rule.strip))
    return Resolved(spec, model_config, agent_config, request_defaults, force, strip)


def _agent(profiles: Profiles, name: str | None) -> AgentConfig | None:
    if name is None or name == "":
        return None
    agent = profiles.agents.get(name)
    if agent is None:
        raise UnknownAgentError(name, sorted(profiles.agents))
    return agent


def _listed_models(profiles: Profiles) -> list[str]:
    """Listed model ids for a message, each with its aliases: ``gemma (or default)``."""
    return [
        f"{m.id} (or {', '.join(m.aliases)})" if m.aliases else m.id
        for m in sorted(profiles.models.values(), key=lambda m: m.id)
        if not m.unlisted
    ]


def _spec(
    profiles: Profiles, model: ModelConfig, overlay: FlagSet, agent: AgentConfig | None
) -> SidecarSpec:
    server = profiles.server
    env = dict(server.env)
    env.update(model.env)
    if model.command is not None:
        if len(overlay):
            who = f"agent {agent.name!r}" if agent else "the request"
            raise ResolveError(
                f"{who} sets load-time flags ({' '.join(overlay.argv())}), which cannot apply "
                f"to {model.id!r}: it is a command model, not a llama-server"
            )
        kind: SidecarKind = "command"
        binary, args = model.command[0], model.command[1:]
        flags = FlagSet()
    else:
        kind = "llama-server"
        binary = model.binary or server.binary or ""
        flags = merge(server.base_args, model.args, overlay)
        head = ("--model", str(model.path)) if model.path is not None else ()
        args = (*head, *flags.argv(), "--alias", model.id)
    return SidecarSpec(
        model=model.id,
        kind=kind,
        binary=binary,
        args=tuple(args),
        env=tuple(sorted(env.items())),
        health_path=model.health if kind == "command" else "/health",
        model_path=None if model.path is None else str(model.path),
        served_name=model.upstream_model or model.id,
        pinned=model.pinned,
        preload=model.preload,
        ttl=model.ttl,
        memory=model.memory,
        memory_devices=model.memory_devices,
        group=model.group,
        concurrency=model.concurrency,
        priority=model.priority,
        load_flags=flags,
    )
