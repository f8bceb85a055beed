"""The planner's vocabulary: its inputs (Want, Have, Limits) and outputs (actions, Plan).

Frozen records only; the rules that connect them live in ``plan.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

HaveState = Literal["starting", "ready", "backoff", "stopping", "stopped", "failed"]
StopReason = Literal[
    "removed",
    "changed",
    "evicted-lru",
    "evicted-memory",
    "group",
    "idle-ttl",
    "unloaded",
    "contention",
    "keep-alive",
]
StartReason = Literal["pinned", "preload", "demand"]

#: states in which a process exists or is about to (backoff: the supervisor restarts it)
RUNNING_STATES: frozenset[str] = frozenset({"starting", "ready", "backoff"})


#: the device name of system memory in per-device budgets and splits (GPUs go by
#: llama-server's names: ``CUDA0``, ``Vulkan1``, ``ROCm0``, ``Metal``)
HOST = "host"


@dataclass(frozen=True, slots=True)
class Demand:
    """Requests waiting for a sidecar that is not ready.

    ``since`` is the oldest waiter's arrival; ``priority`` the highest among the waiters.
    Demands are served by effective priority (``priority`` plus aging), then oldest first.
    """

    waiting: int
    since: float
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Want:
    """A sidecar the profiles define (every resolvable key, not only the running ones)."""

    key: str
    model: str
    memory: int | None = None
    pinned: bool = False
    preload: bool = False
    ttl: float | None = None
    group: str | None = None
    demand: Demand | None = None
    #: from the model or agent: a higher one is served first and drained last
    priority: int = 0
    #: made by a request's ad-hoc flags, not by the profiles: wanted only while used
    transient: bool = False
    #: ``memory`` split by device (``host`` and GPUs); None: all of it on the host
    devices: Mapping[str, int] | None = None


@dataclass(frozen=True, slots=True)
class Have:
    """A sidecar the supervisor knows about.

    ``stopped`` is a sidecar that ran and was stopped (evicted, idle, or exited cleanly);
    ``failed`` one that hit its start limit and waits for a reset (``failure`` says why).
    ``last_used`` is when its last request finished, or when it became ready.
    """

    key: str
    model: str
    state: HaveState
    in_flight: int = 0
    last_used: float = 0.0
    memory: int | None = None
    pinned: bool = False
    group: str | None = None
    failure: str = ""
    #: when the running process became ready (None: not ready yet)
    ready_at: float | None = None
    #: how long its last start took from spawn to ready (None: unknown)
    load_time: float | None = None
    #: a request asked to keep it until then (``keep_alive``); at or before ``last_used``:
    #: unload it as soon as it is idle. Overrides ``ttl``; never past limits or pinning.
    keep_until: float | None = None
    #: ``memory`` split by device; None: the Want's split, else all on the host
    devices: Mapping[str, int] | None = None

    def with_settings(self, want: Want) -> Have:
        """This sidecar under ``want``'s settings outside the key (memory, pinned, group)."""
        return replace(
            self, memory=want.memory, pinned=want.pinned, group=want.group, devices=want.devices
        )


@dataclass(frozen=True)
class Scheduling:
    """How waiting demands win room from busy sidecars (see ``plan.py``, rule 4).

    ``max_wait``: a demand that has waited this long may drain busy sidecars (they finish
    their requests in flight, admit no new ones, then stop); ``None`` never drains for a
    demand (it waits for them to go idle on their own). ``min_resident``: a sidecar is not
    drained for another before it has been ready this long (``None``: twice its measured load
    time, at least ``MIN_RESIDENT_FLOOR``). ``aging``: each this many
    seconds of waiting raises a demand's priority by one (``None``: no aging).
    """

    max_wait: float | None = None
    min_resident: float | None = None
    aging: float | None = None
    linger: float | None = None

    def warmth(self, load_time: float | None) -> float:
        """How long after its last request an idle sidecar still counts as in use: a demand
        then waits (up to ``max_wait``) instead of evicting it at once. ``linger`` None: its
        measured load time (reloading it would cost that much), at least ``MIN_RESIDENT_FLOOR``
        and at most ``max_wait``; without
        ``max_wait``, 0 (an idle sidecar is evicted at once)."""
        if self.max_wait is None:
            return 0.0
        if self.linger is not None:
            return self.linger
        return min(self.max_wait, max(MIN_RESIDENT_FLOOR, load_time or 0.0))

    def residency(self, load_time: float | None) -> float:
        """How long a ready sidecar serves before a demand may drain it: a model that took
        30 s to load is not swapped out after 2 (that is thrash, whatever ``max_wait`` says)."""
        if self.min_resident is not None:
            return self.min_resident
        return max(MIN_RESIDENT_FLOOR, RESIDENCY_FACTOR * (load_time or 0.0))


#: the least automatic minimum residency: a sidecar that loads in 25 ms still serves a while
MIN_RESIDENT_FLOOR = 1.0
RESIDENCY_FACTOR = 2.0


@dataclass(frozen=True)
class Limits:
    """``None`` means unlimited. A group not listed in ``groups`` allows one member at a time."""

    max_sidecars: int | None = None
    memory_budget: int | None = None
    groups: Mapping[str, int] = field(default_factory=dict)
    scheduling: Scheduling = field(default_factory=Scheduling)
    #: groups whose member starting stops everything outside the group
    exclusive: frozenset[str] = frozenset()
    #: groups whose members are never stopped for a model outside the group
    persistent: frozenset[str] = frozenset()
    #: bytes allowed per device (``host`` for system memory); a device not listed is not
    #: limited. Sidecars without a split by device count all their memory on ``host``.
    device_budgets: Mapping[str, int] = field(default_factory=dict)

    def group_limit(self, group: str) -> int:
        return self.groups.get(group, 1)


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop a sidecar. ``drain``: let in-flight requests finish first (the executor bounds it).

    ``in_flight`` is the count at plan time: a stop with 0 frees its room in this plan, so the
    executor finishes it before any Start; a busy one may drain in the background.
    """

    key: str
    reason: StopReason
    drain: bool
    in_flight: int
    detail: str

    @property
    def bounded(self) -> bool:
        """Whether requests in flight may be cut after ``stop_grace``: only for a profile change
        or an operator's unload. A swap (eviction, contention, group, idle, keep-alive) never
        cuts a request; its drain waits for the last one."""
        return self.reason in ("changed", "removed", "unloaded")


@dataclass(frozen=True, slots=True)
class Start:
    key: str
    reason: StartReason
    detail: str


@dataclass(frozen=True, slots=True)
class Wait:
    """The sidecar should start but has to wait (busy sidecars, a drain, an earlier demand)."""

    key: str
    reason: str


@dataclass(frozen=True, slots=True)
class Refuse:
    """The sidecar cannot start under the current limits or state; waiting requests should fail."""

    key: str
    reason: str


Action = Stop | Start | Wait | Refuse


@dataclass(frozen=True, slots=True)
class Usage:
    sidecars: int
    memory: int


@dataclass(frozen=True)
class Plan:
    """Stops first, then starts, then waits and refusals.

    ``usage`` is what the running set holds once the plan is carried out (busy drains still
    counted); ``wake_at`` the earliest time an idle TTL may expire (None: no timer needed).
    """

    actions: tuple[Action, ...]
    usage: Usage
    notes: tuple[str, ...] = ()
    wake_at: float | None = None

    @property
    def stops(self) -> tuple[Stop, ...]:
        return tuple(a for a in self.actions if isinstance(a, Stop))

    @property
    def starts(self) -> tuple[Start, ...]:
        return tuple(a for a in self.actions if isinstance(a, Start))

    @property
    def waits(self) -> tuple[Wait, ...]:
        return tuple(a for a in self.actions if isinstance(a, Wait))

    @property
    def refusals(self) -> tuple[Refuse, ...]:
        return tuple(a for a in self.actions if isinstance(a, Refuse))

    def summary(self) -> dict[str, object]:
        """A JSON-ready digest for the reconciler's status."""
        return {
            "stops": len(self.stops),
            "starts": len(self.starts),
            "waits": len(self.waits),
            "refusals": len(self.refusals),
            "sidecars": self.usage.sidecars,
            "memory": self.usage.memory,
            "wake_at": self.wake_at,
            "notes": list(self.notes),
        }
