"""Room accounting for the planner: who holds what, and what would have to go to make room.

Split out of ``plan.py`` so the rules there read as rules; everything here is pure too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from llamasup.core.units import format_bytes
from llamasup.planner.types import HOST

if TYPE_CHECKING:
    from llamasup.planner.types import Limits

EvictReason = Literal["evicted-lru", "evicted-memory", "group"]


@dataclass(slots=True)
class Occupant:
    """A sidecar holding room: starting, ready, in backoff, stopping, or started by this plan.

    ``demanded``: requests wait for it; ``fresh``: started by this plan; ``leaving``: it is
    stopping (or being drained by this plan) and gives its room back once gone; ``kept``: a
    request asked to keep it (``keep_alive``), so only a drain takes it, never an eviction;
    ``warm``: idle, but used so recently that it is treated like a busy one.
    ``resident_until``: it may not be drained for another before then (minimum residency).
    """

    key: str
    model: str
    memory: int
    group: str | None
    pinned: bool
    last_used: float
    in_flight: int = 0
    demanded: bool = False
    fresh: bool = False
    leaving: bool = False
    kept: bool = False
    warm: bool = False
    #: when a warm sidecar stops counting as in use (idle since then: evictable)
    cold_at: float = 0.0
    priority: int = 0
    resident_until: float = 0.0
    #: device -> bytes it holds there (empty: all of ``memory`` on the host)
    placement: Mapping[str, int] = field(default_factory=dict)

    @property
    def where(self) -> Mapping[str, int]:
        return placement(self.memory, self.placement)

    @property
    def protected(self) -> bool:
        return self.in_flight > 0 or self.demanded or self.fresh or self.kept or self.warm

    @property
    def evictable(self) -> bool:
        return not (self.pinned or self.protected or self.leaving)

    @property
    def drainable(self) -> bool:
        """Busy only with requests in flight (or kept): it can be asked to finish them and go.

        Waiting requests (or a start in this plan) came first, so it keeps its turn."""
        return (self.in_flight > 0 or self.kept or self.warm) and not (
            self.demanded or self.fresh or self.pinned or self.leaving
        )


def placement(memory: int, devices: Mapping[str, int] | None) -> Mapping[str, int]:
    """Where a sidecar's memory sits: its split by device, or all of it on the host."""
    return devices if devices else {HOST: memory}


def _shift(totals: dict[str, int], where: Mapping[str, int], sign: int) -> None:
    for device, amount in where.items():
        totals[device] = totals.get(device, 0) + sign * amount


class Ledger:
    """Count, memory (in all and per device) and group members held, plus room reserved by
    waiting candidates."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.count = 0
        self.memory = 0
        self.groups: dict[str, int] = {}
        self.devices: dict[str, int] = {}
        self.reserved_count = 0
        self.reserved_memory = 0
        self.reserved_groups: dict[str, int] = {}
        self.reserved_devices: dict[str, int] = {}

    def add(self, memory: int, group: str | None, devices: Mapping[str, int] | None = None) -> None:
        self.count += 1
        self.memory += memory
        _shift(self.devices, placement(memory, devices), 1)
        if group is not None:
            self.groups[group] = self.groups.get(group, 0) + 1

    def remove(
        self, memory: int, group: str | None, devices: Mapping[str, int] | None = None
    ) -> None:
        self.count -= 1
        self.memory -= memory
        _shift(self.devices, placement(memory, devices), -1)
        if group is not None:
            self.groups[group] -= 1

    def reserve(
        self, memory: int, group: str | None, devices: Mapping[str, int] | None = None
    ) -> None:
        self.reserved_count += 1
        self.reserved_memory += memory
        _shift(self.reserved_devices, placement(memory, devices), 1)
        if group is not None:
            self.reserved_groups[group] = self.reserved_groups.get(group, 0) + 1

    def group_total(self, group: str) -> int:
        return self.groups.get(group, 0) + self.reserved_groups.get(group, 0)


@dataclass
class Room:
    """What making room takes, and why it cannot happen yet (empty ``blocked``: it fits once
    the victims, drains and displaced sidecars are gone).

    ``victims``: idle sidecars to stop now; ``drains``: busy group members to drain;
    ``displaced``: busy sidecars drained for count or memory room (contention); ``held``:
    busy sidecars that would make room if the demand could drain them (it has not waited
    long enough, they are not resident long enough, or they outrank it)."""

    victims: list[tuple[Occupant, EvictReason]] = field(default_factory=list)
    drains: list[Occupant] = field(default_factory=list)
    displaced: list[Occupant] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    held: list[Occupant] = field(default_factory=list)


def _lru(occupant: Occupant) -> tuple[float, str]:
    return (occupant.last_used, occupant.key)


def _group_order(occupant: Occupant) -> tuple[int, float, str]:
    rank = 0 if occupant.evictable else 1 if occupant.drainable else 2
    return (rank, occupant.last_used, occupant.key)


def _drain_order(occupant: Occupant) -> tuple[int, float, str]:
    """Lowest priority first, then least recently used."""
    return (occupant.priority, occupant.last_used, occupant.key)


#: which busy sidecars a demand may drain for count and memory room (None: none of them)
DrainFilter = Callable[[Occupant], bool]


def find_room(
    ledger: Ledger,
    occupants: Iterable[Occupant],
    *,
    group: str | None,
    memory: int,
    slots: int,
    may_drain: DrainFilter | None = None,
    devices: Mapping[str, int] | None = None,
) -> Room:
    """Pick what to stop so that ``slots`` more sidecars using ``memory`` fit (in ``group``).

    Group members go first (idle ones least recently used first, then busy ones to drain);
    then least-recently-used idle sidecars until the count and the memory fit; then, if idle
    ones are not enough, busy ones that ``may_drain`` allows (lowest priority, then least
    recently used, first). Victims that turn out unnecessary (a later, bigger one freed
    enough) are kept running.
    """
    limits = ledger.limits
    # members of a persistent group are not stopped for a model outside it
    movable = [
        o
        for o in occupants
        if o.group is None or o.group not in limits.persistent or o.group == group
    ]
    search = _Search(
        ledger, movable, memory, slots, may_drain=may_drain, need=placement(memory, devices)
    )
    if group is not None:
        if group in limits.exclusive:
            search.make_exclusive_room(group)
        search.make_group_room(group)
    search.make_count_and_memory_room()
    return search.room


class _Search:
    def __init__(
        self,
        ledger: Ledger,
        everyone: list[Occupant],
        memory: int,
        slots: int,
        *,
        may_drain: DrainFilter | None,
        need: Mapping[str, int],
    ) -> None:
        self.limits = ledger.limits
        self.need = need
        self.device_used = dict(ledger.devices)
        _shift(self.device_used, ledger.reserved_devices, 1)
        self.ledger = ledger
        self.everyone = everyone
        self.memory = memory
        self.slots = slots
        self.may_drain = may_drain
        self.count = ledger.count + ledger.reserved_count
        self.used = ledger.memory + ledger.reserved_memory
        self.chosen: set[str] = set()
        self.room = Room()

    def _take(self, occupant: Occupant) -> None:
        self.chosen.add(occupant.key)
        self.count -= 1
        self.used -= occupant.memory
        _shift(self.device_used, occupant.where, -1)

    def make_group_room(self, group: str) -> None:
        allowed = self.limits.group_limit(group)
        excess = self.ledger.group_total(group) + self.slots - allowed
        if excess <= 0:
            return
        members = sorted(
            (o for o in self.everyone if o.group == group and not (o.leaving or o.pinned)),
            key=_group_order,
        )
        for occupant in members[:excess]:
            if occupant.evictable:
                self.room.victims.append((occupant, "group"))
                self._take(occupant)
                excess -= 1
            elif occupant.drainable:
                # it leaves once its requests are done: its room counts as made, and
                # nothing after this (count, memory, devices) may pick it again
                self.room.drains.append(occupant)
                self._take(occupant)
                excess -= 1
        if excess > 0:
            self.room.blocked.append(
                f"group {group} allows {allowed} running; waiting for a member to go"
            )

    def make_exclusive_room(self, group: str) -> None:
        """An exclusive group's member runs alone: everything outside the group goes (idle
        ones now, busy ones drained), but what cannot be stopped (pinned) holds it back."""
        for occupant in sorted(self.everyone, key=_lru):
            if occupant.group == group or occupant.leaving or occupant.key in self.chosen:
                continue
            if occupant.pinned:
                self.room.blocked.append(
                    f"group {group} is exclusive and pinned {occupant.model} runs"
                )
            elif occupant.evictable:
                self.room.victims.append((occupant, "group"))
                self._take(occupant)
            elif occupant.drainable:
                self.room.drains.append(occupant)
                self.chosen.add(occupant.key)
            else:  # starting, or requests wait for it: it keeps its turn
                self.room.blocked.append(
                    f"group {group} is exclusive; waiting for {occupant.model} to go"
                )

    def make_count_and_memory_room(self) -> None:
        idle = sorted(
            (o for o in self.everyone if o.evictable and o.key not in self.chosen), key=_lru
        )
        busy = sorted(
            (o for o in self.everyone if o.drainable and o.key not in self.chosen),
            key=_drain_order,
        )
        victims: list[tuple[Occupant, EvictReason]] = []
        drains: list[Occupant] = []
        held: list[Occupant] = []
        spares = iter(idle)
        drainable = iter(busy)

        def next_spare() -> Occupant | None:
            spare = next(spares, None)
            if spare is not None:
                return spare
            for candidate in drainable:
                if self.may_drain is not None and self.may_drain(candidate):
                    drains.append(candidate)
                    return candidate
                held.append(candidate)
            return None

        max_sidecars, budget = self.limits.max_sidecars, self.limits.memory_budget
        while max_sidecars is not None and self.count + self.slots > max_sidecars:
            spare = next_spare()
            if spare is None:
                self.room.blocked.append(
                    f"{self.count} of max {max_sidecars} sidecars are busy, stopping or reserved"
                )
                break
            if spare not in drains:
                victims.append((spare, "evicted-lru"))
            self._take(spare)
        while budget is not None and self.used + self.memory > budget:
            spare = next_spare()
            if spare is None:
                free = format_bytes(max(budget - self.used, 0))
                self.room.blocked.append(
                    f"needs {format_bytes(self.memory)}, only {free} of the "
                    f"{format_bytes(budget)} budget can be made free now "
                    "(the rest is busy, stopping or reserved)"
                )
                break
            if spare not in drains:
                victims.append((spare, "evicted-memory"))
            self._take(spare)
        for device, device_budget in sorted(self.limits.device_budgets.items()):
            while self._over(device, device_budget):
                spare = self._device_spare(device, idle, busy, drains, held)
                if spare is None:
                    free = format_bytes(max(device_budget - self.device_used.get(device, 0), 0))
                    self.room.blocked.append(
                        f"needs {format_bytes(self.need.get(device, 0))} on {device}, only "
                        f"{free} of its {format_bytes(device_budget)} budget can be made free now"
                    )
                    break
                if spare not in drains:
                    victims.append((spare, "evicted-memory"))
                self._take(spare)
        if not self.room.blocked:
            victims = self._keep_unneeded(victims)
            self.room.displaced.extend(drains)
        else:
            # what would have freed room had the demand been allowed to drain it
            held.extend(o for o in drainable)
            self.room.held.extend(held)
        self.room.victims.extend(victims)

    def _over(self, device: str, budget: int) -> bool:
        return self.device_used.get(device, 0) + self.need.get(device, 0) > budget

    def _device_spare(
        self,
        device: str,
        idle: list[Occupant],
        busy: list[Occupant],
        drains: list[Occupant],
        held: list[Occupant],
    ) -> Occupant | None:
        """The next sidecar to stop that holds memory on ``device``: an idle one, least
        recently used first, else one ``may_drain`` allows."""
        for occupant in idle:
            if occupant.key not in self.chosen and occupant.where.get(device, 0) > 0:
                return occupant
        for occupant in busy:
            if occupant.key in self.chosen or occupant.where.get(device, 0) <= 0:
                continue
            if self.may_drain is not None and self.may_drain(occupant):
                drains.append(occupant)
                return occupant
            if occupant not in held:
                held.append(occupant)
        return None

    def _keep_unneeded(
        self, victims: list[tuple[Occupant, EvictReason]]
    ) -> list[tuple[Occupant, EvictReason]]:
        """Give back victims, most recently used first, while everything still fits."""
        max_sidecars, budget = self.limits.max_sidecars, self.limits.memory_budget
        kept: list[tuple[Occupant, EvictReason]] = []
        for victim in reversed(victims):
            occupant = victim[0]
            count_ok = max_sidecars is None or self.count + 1 + self.slots <= max_sidecars
            memory_ok = budget is None or self.used + occupant.memory + self.memory <= budget
            devices_ok = all(
                self.device_used.get(device, 0)
                + occupant.where.get(device, 0)
                + self.need.get(device, 0)
                <= device_budget
                for device, device_budget in self.limits.device_budgets.items()
            )
            if count_ok and memory_ok and devices_ok:
                self.count += 1
                self.used += occupant.memory
                _shift(self.device_used, occupant.where, 1)
            else:
                kept.append(victim)
        kept.reverse()
        return kept
