"""The frozen records a loaded profile set consists of."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llamasup.core import defaults
from llamasup.core.paths import default_state_dir
from llamasup.errors import ProfileIssue
from llamasup.flags.flagset import FlagSet
from llamasup.planner.types import HOST as HOST_DEVICE

#: what an API key may call: the inference routes, or everything
KeyScope = Literal["inference", "admin", "metrics"]


@dataclass(frozen=True)
class Source:
    file: str
    line: int | None

    def __str__(self) -> str:
        return self.file if self.line is None else f"{self.file}:{self.line}"


@dataclass(frozen=True)
class ApiKeyConfig:
    name: str
    scope: KeyScope
    env: str | None
    file: Path | None
    source: Source


@dataclass(frozen=True)
class RestartConfig:
    """``server.restart`` as written; the supervisor's ``RestartPolicy`` is made from it."""

    backoff: float = defaults.RESTART_BACKOFF
    backoff_max: float = defaults.RESTART_BACKOFF_MAX
    max_failures: int = defaults.RESTART_MAX_FAILURES
    window: float = defaults.RESTART_WINDOW


@dataclass(frozen=True)
class SchedulingConfig:
    """``server.scheduling``: how requests for models that do not fit take turns.

    ``max_wait`` None: never drain a busy sidecar for a waiting one. ``min_resident`` None:
    automatic (twice the measured load time, 1 s to ``max_wait``). ``aging`` None: one priority
    step per ``max_wait`` waited.
    """

    max_wait: float | None = defaults.MAX_WAIT
    min_resident: float | None = None
    aging: float | None = None
    max_keep_alive: float = defaults.MAX_KEEP_ALIVE

    @property
    def aging_step(self) -> float | None:
        return self.aging if self.aging is not None else self.max_wait or None


@dataclass(frozen=True)
class ClientTimeouts:
    """``server.client_timeouts``: how long the front waits on a client (seconds)."""

    #: a connection idle between requests is closed
    idle: float = defaults.CLIENT_IDLE_TIMEOUT
    #: a connection whose request head is not complete is answered 408 and closed
    head: float = defaults.CLIENT_HEAD_TIMEOUT
    #: a request whose body sends nothing for this long is answered 408
    body: float = defaults.CLIENT_BODY_TIMEOUT


@dataclass(frozen=True)
class ServerConfig:
    listen_host: str = defaults.LISTEN_HOST
    listen_port: int = defaults.LISTEN_PORT
    allow_public_listen: bool = False
    #: web page origins that may call the inference routes from a browser
    cors_origins: tuple[str, ...] = ()
    #: Host names accepted besides loopback ones while listening on loopback
    allowed_hosts: tuple[str, ...] = ()
    binary: str | None = None
    ports: tuple[int, int] = defaults.PORTS
    max_sidecars: int | None = None
    memory_budget: int | None = None
    #: ``memory_budget`` given per device: ``(("CUDA0", bytes), ("host", bytes))``, by name
    device_budgets: tuple[tuple[str, int], ...] = ()
    base_args: FlagSet = field(default_factory=FlagSet)
    env: tuple[tuple[str, str], ...] = ()
    health_timeout: float = defaults.HEALTH_TIMEOUT
    health_interval: float = defaults.HEALTH_INTERVAL
    unhealthy_after: int = defaults.UNHEALTHY_AFTER
    idle_ttl: float | None = None
    stop_grace: float = defaults.STOP_GRACE
    start_timeout: float = defaults.START_TIMEOUT
    state_dir: Path = field(default_factory=lambda: default_state_dir(os.environ))
    log_level: str = "info"
    max_request_body: int = 64 * 2**20
    #: client connections open at once; None: as many as the open files limit allows
    max_connections: int | None = None
    client_timeouts: ClientTimeouts = field(default_factory=ClientTimeouts)
    api_keys: tuple[ApiKeyConfig, ...] = ()
    #: ``/metrics`` without a key even when keys are configured (a scrape by annotation)
    open_metrics: bool = False
    #: stream progress to chat clients while their model loads (models may override)
    send_loading_state: bool = False
    #: one line per request at info: ``text``, ``json`` (JSON lines) or ``off``
    request_log: str = "text"
    agent_flags_enabled: bool = False
    agent_flags_allow_load: frozenset[str] = frozenset()
    restart: RestartConfig = field(default_factory=RestartConfig)
    scheduling: SchedulingConfig = field(default_factory=SchedulingConfig)

    @property
    def listen_url(self) -> str:
        return http_url(self.listen_host, self.listen_port)

    @property
    def budgeted(self) -> bool:
        """Memory is limited, in all or on some device (so estimates gate starts)."""
        return self.memory_budget is not None or bool(self.device_budgets)

    @property
    def gpus(self) -> tuple[str, ...]:
        """The GPUs given a budget, in llama-server's order (``CUDA0`` before ``CUDA1``, as
        ``--tensor-split`` counts them): what a memory split without ``--device`` is over."""
        names = (name for name, _ in self.device_budgets if name != HOST_DEVICE)
        return tuple(sorted(names, key=_device_order))

    @property
    def listen_is_loopback(self) -> bool:
        return is_loopback(self.listen_host)


@dataclass(frozen=True)
class RequestRules:
    """``request:`` of a model or agent: edits the proxy makes to every request body.

    ``force`` values replace whatever the client sent (llama-swap's ``setParams``);
    ``strip`` keys never reach the sidecar (``stripParams``). Both are top-level body keys;
    ``model`` is never one of them.
    """

    force: Mapping[str, Any] = field(default_factory=dict, hash=False)
    strip: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.force or self.strip)


@dataclass(frozen=True)
class ModelConfig:
    id: str
    source: Source
    path: Path | None = None
    command: tuple[str, ...] | None = None
    health: str = "/health"
    binary: str | None = None
    args: FlagSet = field(default_factory=FlagSet)
    aliases: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    pinned: bool = False
    preload: bool = False
    ttl: float | None = None
    memory: int | None = None
    #: ``memory`` given per device: ``(("CUDA0", bytes), ("host", bytes))``; ``memory`` is the sum
    memory_devices: tuple[tuple[str, int], ...] = ()
    group: str | None = None
    description: str = ""
    concurrency: int | None = None
    queue: int = 100
    unlisted: bool = False
    upstream_model: str | None = None
    #: higher: its requests are served first and its sidecar drained last
    priority: int = 0
    request: RequestRules = field(default_factory=RequestRules)
    #: stream progress to chat clients while it loads (None: ``server.send_loading_state``)
    send_loading_state: bool | None = None

    @property
    def is_command(self) -> bool:
        return self.command is not None


@dataclass(frozen=True)
class AgentConfig:
    name: str
    source: Source
    flags: FlagSet = field(default_factory=FlagSet)
    model: str | None = None
    description: str = ""
    #: the priority of this agent's requests (None: the model's)
    priority: int | None = None
    request: RequestRules = field(default_factory=RequestRules)


@dataclass(frozen=True)
class GroupConfig:
    name: str
    max_running: int = 1
    description: str = ""
    source: Source | None = None
    #: a member starting stops every sidecar outside the group (but persistent groups')
    exclusive: bool = False
    #: its members are never stopped to make room for a model outside the group
    persistent: bool = False


@dataclass(frozen=True)
class Profiles:
    server: ServerConfig
    models: Mapping[str, ModelConfig]
    agents: Mapping[str, AgentConfig]
    groups: Mapping[str, GroupConfig]
    source: str
    files: tuple[str, ...]
    revision: str
    warnings: tuple[ProfileIssue, ...] = ()
    #: where keys a check after loading may need to point at were written: every
    #: ``("server", KEY)`` and each model's ``path``, ``binary`` and ``command``
    sources: Mapping[tuple[str, ...], Source] = field(default_factory=dict, compare=False)

    def source_of(self, *path: str) -> Source | None:
        """Where the key at ``path`` (``"server", "binary"``) was written, if recorded."""
        return self.sources.get(path)

    def find_model(self, name: str) -> ModelConfig | None:
        """A model by id or alias."""
        model = self.models.get(name)
        if model is not None:
            return model
        for candidate in self.models.values():
            if name in candidate.aliases:
                return candidate
        return None

    def group_limit(self, name: str) -> int:
        group = self.groups.get(name)
        return 1 if group is None else group.max_running


def http_url(host: str, port: int) -> str:
    """``http://HOST:PORT``, an IPv6 host in brackets."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _device_order(name: str) -> tuple[str, int]:
    """``CUDA10`` after ``CUDA9``: the backend, then the device's number."""
    stem = name.rstrip("0123456789")
    return (stem, int(name[len(stem) :] or -1))
