"""What the reconciler knows of each sidecar key besides its process.

For every key it has seen: the spec it runs (the latest one, since settings outside the key may
change on a reload), how requests named it (so a reload can re-resolve the name and see whether
the key still holds), which agents used it, and the ``stopped`` records of preload sidecars that
were stopped while still wanted (the planner leaves those stopped until demanded).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping

from llamasup.errors import LlamasupError, ResolveError
from llamasup.flags.flagset import parse_header
from llamasup.memory.cache import MemoryEstimates
from llamasup.planner.types import Have, StopReason
from llamasup.profiles.types import Profiles
from llamasup.reconcile.pool import Origin
from llamasup.spec.resolve import Resolver, SidecarSpec

#: whether a key still has a process or waiting requests (then its spec must be kept)
LiveKey = Callable[[str], bool]


class Registry:
    def __init__(
        self, profiles: Profiles, memory: MemoryEstimates, on_estimate: Callable[[], None]
    ) -> None:
        self._resolver = Resolver(profiles)
        self._memory = memory
        #: called when an estimate asked for arrives (a pass may now start what waited on it)
        self._on_estimate = on_estimate
        self._specs: dict[str, SidecarSpec] = {}
        self._origins: dict[str, Origin] = {}
        self._agents: dict[str, set[str]] = {}
        self._tombstones: dict[str, Have] = {}
        #: buffers llama-server reported at its last load, by device (``-lv 4`` only)
        self._reported: dict[str, Mapping[str, int]] = {}

    @property
    def resolver(self) -> Resolver:
        return self._resolver

    @property
    def profiles(self) -> Profiles:
        return self._resolver.profiles

    def adopt(self, profiles: Profiles, live: LiveKey) -> None:
        """Take a new profile set: a key whose name still resolves to it keeps its process and
        takes the new settings; any other is forgotten once it has no process left."""
        self._resolver = Resolver(profiles)
        for key, origin in list(self._origins.items()):
            spec = self.resolve_origin(origin)
            if spec is not None and spec.key == key:
                # same process, maybe new settings (memory, pinned, ttl, group): keep them
                self._specs[key] = spec
                self._memory.request(spec, on_ready=self._on_estimate)
                continue
            self._origins.pop(key, None)
            if not live(key):
                self._specs.pop(key, None)

    def remember(self, spec: SidecarSpec, origin: Origin) -> None:
        """Record a spec a request (or the profiles) resolved to, so the planner can want it."""
        # the latest spec: settings outside the key may have changed (a dropped memory
        # override then needs an estimate; request() is a no-op when known or under way)
        self._memory.request(spec, on_ready=self._on_estimate)
        self._specs[spec.key] = spec
        self._origins.setdefault(spec.key, origin)
        if origin.agent is not None:
            self._agents.setdefault(spec.key, set()).add(origin.agent)

    def origin(self, key: str) -> Origin | None:
        """How ``key`` was first named (a model, maybe an agent and ad-hoc flags)."""
        return self._origins.get(key)

    def note_agents(self, key: str, agents: Iterable[str]) -> None:
        """Agents whose requests used ``key`` (carried over a restart)."""
        self._agents.setdefault(key, set()).update(agents)

    def spec_for(self, key: str) -> SidecarSpec | None:
        return self._specs.get(key)

    def agents(self, key: str) -> list[str]:
        """The agents whose requests resolved to ``key`` (sorted)."""
        return sorted(self._agents.get(key, ()))

    def origins(self) -> Iterator[tuple[str, Origin]]:
        return iter(list(self._origins.items()))

    def tombstones(self) -> list[Have]:
        """Stopped preload sidecars the planner leaves stopped until demanded."""
        return list(self._tombstones.values())

    def memory_estimate(self, spec: SidecarSpec) -> int | None:
        return self._memory.get(spec)

    def memory_split(self, spec: SidecarSpec) -> dict[str, int] | None:
        """Its estimate by device over the profiles' budgeted GPUs (None: all on the host)."""
        server = self.profiles.server
        return self._memory.split(spec, server.gpus, dict(server.device_budgets))

    def loaded(self, key: str, lines: Iterable[str]) -> None:
        """``key`` became ready after printing ``lines``: keep the buffers llama-server
        reported, if it did, and log the estimate's error against them."""
        spec = self._specs.get(key)
        if spec is None:
            return
        server = self.profiles.server
        found = self._memory.compare(spec, lines, server.gpus, dict(server.device_budgets))
        if found is None:
            self._reported.pop(key, None)
        else:
            self._reported[key] = found.devices

    def memory_reported(self, key: str) -> Mapping[str, int] | None:
        return self._reported.get(key)

    def memory_pending(self, spec: SidecarSpec) -> bool:
        return self._memory.pending(spec)

    def resolve_origin(
        self, origin: Origin, resolver: Resolver | None = None
    ) -> SidecarSpec | None:
        """The spec ``origin`` names under ``resolver`` (default: the current profiles)."""
        resolver = resolver or self._resolver
        try:
            extra = None
            if origin.extra:
                allow = resolver.profiles.server.agent_flags_allow_load
                extra = parse_header(" ".join(origin.extra), allow_load=allow)
            return resolver.resolve(origin.model, origin.agent, extra=extra).spec
        except LlamasupError:
            return None

    def desired_keys(self, profiles: Profiles) -> dict[str, str]:
        """Model id -> the key of its profile sidecar (no agent) under ``profiles``."""
        resolver = Resolver(profiles)
        keys: dict[str, str] = {}
        for model in profiles.models.values():
            with contextlib.suppress(ResolveError):
                keys[model.id] = resolver.resolve(model.id).spec.key
        return keys

    # -- a stop's bookkeeping ----------------------------------------------------------------

    def _keeps_record(self, key: str, reason: StopReason) -> bool:
        """A preload sidecar stopped while still wanted (evicted, idled out, unloaded) keeps a
        ``stopped`` record, so the planner leaves it stopped until demanded. One whose key
        left the profiles (``removed``/``changed``) has nothing to remember."""
        spec = self._specs.get(key)
        return spec is not None and spec.preload and reason not in ("removed", "changed")

    def stopping(self, key: str, model: str, reason: StopReason) -> None:
        """A sidecar is about to stop: the supervisor forgets it at once, but its process takes
        a while to exit. A preload sidecar is recorded as stopped now, or a pass in between
        sees a preload with no sidecar and starts it again."""
        if self._keeps_record(key, reason):
            self._tombstones[key] = Have(key=key, model=model, state="stopped")

    def stopped(self, key: str, model: str, reason: StopReason, live: LiveKey) -> bool:
        """A sidecar the plan stopped: a preload one still wanted keeps its record; anything
        else is forgotten and comes back when asked for. True when it was forgotten."""
        if self._keeps_record(key, reason):
            self._tombstones[key] = Have(key=key, model=model, state="stopped")
            return False
        self._origins.pop(key, None)
        return self.forget(key, live)

    def forget(self, key: str, live: LiveKey) -> bool:
        """Drop ``key``'s record; its spec too unless a name or a process still holds it.
        True when the spec went (the caller drops its own per-key state then)."""
        self._tombstones.pop(key, None)
        if key in self._origins or live(key):
            return False
        self._specs.pop(key, None)
        self._agents.pop(key, None)
        self._reported.pop(key, None)
        return True

    def started(self, key: str) -> None:
        self._tombstones.pop(key, None)
