"""The planner's vocabulary: its inputs (Want, Have, Limits) and outputs (actions, Plan).

Frozen records only; the rules that connect them live in ``plan.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

HaveState = Literal["starting", "ready", "backoff", "stopping", "stopped", "failed"]
StopReason = Literal[
    "removed", "changed", "evicted-lru", "evicted-memory", "group", "idle-ttl", "unloaded"
]
StartReason = Literal["pinned", "preload", "demand"]

#: states in which a process exists or is about to (backoff: the supervisor restarts it)
RUNNING_STATES: frozenset[str] = frozenset({"starting", "ready", "backoff"})


@dataclass(frozen=True, slots=True)
class Demand:
    """Requests waiting for a sidecar that is not ready; ``since`` orders demands FIFO."""

    waiting: int
    since: float


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

    def with_settings(self, want: Want) -> Have:
        """This sidecar under ``want``'s settings outside the key (memory, pinned, group)."""
        return replace(self, memory=want.memory, pinned=want.pinned, group=want.group)


@dataclass(frozen=True)
class Limits:
    """``None`` means unlimited. A group not listed in ``groups`` allows one member at a time."""

    max_sidecars: int | None = None
    memory_budget: int | None = None
    groups: Mapping[str, int] = field(default_factory=dict)

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
