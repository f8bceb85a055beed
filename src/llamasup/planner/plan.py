"""The pure planner: desired sidecars + observed sidecars + limits + now -> ordered actions.

``plan()`` does no I/O, reads no clock, logs nothing and draws no random numbers. Inputs are
indexed and sorted by key before any decision, so the same sets in any order give the same plan.

Rules, in the order they are applied:

1. **Removal.** A key made by a request's ad-hoc flags (``Want.transient``) that failed or
   waits to be restarted, with no request waiting for it, is removed: nobody asked for it.
   An observed key that is not desired is stopped, drained: reason ``changed``
   when its model still has some desired key (its load-time flags changed), else ``removed``.
   Nothing replaces a ``changed`` sidecar proactively: one model has many keys (one per agent
   overlay) and the planner cannot tell which one took its place; pinned, preload and demand
   start the new keys. A ``stopped``/``failed`` record that is no longer desired gets a Stop too,
   which tells the supervisor to forget it.
2. **Idle TTL.** A desired, ready, unpinned sidecar with no request in flight and no demand,
   idle for ``ttl`` seconds or more, is stopped (``idle-ttl``); a request's ``keep_alive``
   (``Have.keep_until``) replaces the ttl (``keep-alive``; 0 unloads it as soon as it is
   idle). ``Plan.wake_at`` says when the next one would expire, so the reconciler can set a
   timer instead of polling.
3. **Over the limits** (limits lowered by a reload): least-recently-used idle sidecars are
   evicted until the running set fits again; busy and pinned ones are left alone, with a note.
4. **Starts**, candidates in this order: pinned (by key), then demanded (highest effective
   priority first: ``Demand.priority`` plus one per ``Scheduling.aging`` seconds waited; then
   first come first served: by ``Demand.since``, then key), then preload (by key). For each:
   - already starting/ready/backoff: nothing to do; ``failed``: Refuse with the failure;
     ``stopping``: Wait until it has exited.
   - it can never fit, because it exceeds the memory budget on its own or because pinned
     sidecars hold the count, memory or group room it needs: Refuse, naming the numbers.
   - otherwise it is started if it fits after evicting *cold* sidecars: least recently used
     first, not pinned, nothing in flight, no demand, not just started, not kept by a
     ``keep_alive``, and idle longer than their *linger* (their load time, within
     ``max_wait``: an idle gap between two requests of an agent is not a reason to swap).
     Other members of its group are stopped to make room in the group: idle ones at once,
     busy ones drained.
   - if it only fits once busy (or warm, or kept) sidecars are gone, it Waits, reserves its
     room so later candidates cannot take it, and evicts nothing yet. Once a demand has
     waited ``Scheduling.max_wait`` it *drains* what it needs (``contention``): lowest
     priority, then least recently used, first; only sidecars past their minimum residency
     (``Scheduling.residency``: twice their load time) that do not outrank the demand's
     effective priority. A drained sidecar admits no new request, finishes the ones in
     flight, and stops; the demand starts on a later pass. Without ``max_wait`` (the default
     ``Scheduling()``) a demand waits until the sidecars go idle on their own.
     ``Plan.wake_at`` asks for the pass at which a held sidecar cools down or may be drained.
   - a preload never evicts and never waits: it starts only into free room, and only if the
     key was never observed. The supervisor keeps ``stopped`` records of sidecars it stopped,
     which is how an evicted or idle-stopped preload sidecar stays stopped until demanded.

A swap never cuts a request in flight: every drain but a profile change's or an unload's
(``Stop.bounded``) waits for the last request.

Accounting: a sidecar holds its memory, a count slot and a group slot while it is starting,
ready, in backoff or stopping (until its process is gone). A Stop of a sidecar with nothing in
flight frees its room within this plan; the executor must let those stops finish before it runs
the starts. A drained Stop of a busy sidecar keeps its room counted; starts never depend on it.
Unknown memory (``None``) counts as 0, with a note. For a desired key the Want's pinned and
group settings apply (a reload may change them without changing the key); the Have's
settings only matter for keys that are no longer desired.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from operator import attrgetter
from typing import TypeVar

from llamasup.core.units import format_bytes
from llamasup.planner.ledger import DrainFilter, Ledger, Occupant, Room, find_room, placement
from llamasup.planner.types import (
    RUNNING_STATES,
    Demand,
    Have,
    Limits,
    Plan,
    Refuse,
    Start,
    StartReason,
    Stop,
    StopReason,
    Usage,
    Wait,
    Want,
)


def plan(
    desired: Iterable[Want] | Mapping[str, Want],
    observed: Iterable[Have],
    limits: Limits,
    now: float,
) -> Plan:
    """Decide what to stop and start so that the running set serves the desired one.

    ``desired`` may be a mapping of key -> Want that the caller keeps between passes; it is
    used as is (not copied, not re-indexed), which saves most of the time on large sets.
    """
    wants = desired if isinstance(desired, Mapping) else _index(desired)
    return _Planner(wants, _index(observed), limits, now).run()


_Keyed = TypeVar("_Keyed", Want, Have)


def _index(items: Iterable[_Keyed]) -> dict[str, _Keyed]:
    listed = list(items)
    indexed = {item.key: item for item in listed}
    if len(indexed) != len(listed):
        seen: set[str] = set()
        for item in listed:
            if item.key in seen:
                raise ValueError(f"duplicate sidecar key {item.key!r} in planner input")
            seen.add(item.key)
    return indexed


class _Planner:
    def __init__(
        self, wants: Mapping[str, Want], haves: dict[str, Have], limits: Limits, now: float
    ) -> None:
        self.wants = wants
        self.haves = haves
        self.limits = limits
        self.now = now
        self.ledger = Ledger(limits)
        self.permanent = Ledger(limits)  # room held by pinned sidecars: never freed
        self.occupants: dict[str, Occupant] = {}
        self.stops: list[Stop] = []
        self.starts: list[Start] = []
        self.later: list[Wait | Refuse] = []
        self.notes: list[str] = []
        self.wake_at: float | None = None
        self._desired_models: set[str] | None = None

    def run(self) -> Plan:
        for key in sorted(self.haves):
            self._observe(self.haves[key])
        self._fit_lowered_limits()
        for want, reason in self._candidates():
            self._admit(want, reason)
        return Plan(
            actions=(*self.stops, *self.starts, *self.later),
            usage=Usage(self.ledger.count, self.ledger.memory),
            notes=tuple(self.notes),
            wake_at=self.wake_at,
        )

    # -- rules 1 and 2: what is running, what goes away -------------------------------------

    def _observe(self, have: Have) -> None:
        want = self.wants.get(have.key)
        if want is None:
            self._remove(have)
            return
        if have.state in ("failed", "backoff") and want.transient and want.demand is None:
            # a request's ad-hoc flags that do not start: nobody waits for it, so it is not
            # retried, and its record goes (a client cannot grow the registry without bound)
            detail = f"{want.model}: ad-hoc flags failed to start and no request waits"
            self.stops.append(Stop(have.key, "removed", False, 0, detail))
            return
        if have.state not in RUNNING_STATES and have.state != "stopping":
            return
        if have.state == "ready" and self._ttl_expired(want, have):
            if have.keep_until is not None:
                stop = Stop(have.key, "keep-alive", False, 0, f"{want.model}: past its keep_alive")
            else:
                stop = Stop(have.key, "idle-ttl", False, 0, f"{want.model}: idle past its ttl")
            self.stops.append(stop)
            return
        self._occupy(have, want.pinned, want.group, want, leaving=have.state == "stopping")

    def _remove(self, have: Have) -> None:
        if have.state == "stopping":
            self._occupy(have, have.pinned, have.group, None, leaving=True)
            return
        reason: StopReason = "changed" if have.model in self._models() else "removed"
        detail = (
            f"{have.model}: load-time settings changed"
            if reason == "changed"
            else f"{have.model}: no longer in the profiles"
        )
        self.stops.append(Stop(have.key, reason, True, have.in_flight, detail))
        if have.state in RUNNING_STATES and have.in_flight > 0:
            self._occupy(have, have.pinned, have.group, None, leaving=True)

    def _models(self) -> set[str]:
        if self._desired_models is None:
            self._desired_models = set(map(attrgetter("model"), self.wants.values()))
        return self._desired_models

    def _ttl_expired(self, want: Want, have: Have) -> bool:
        if want.pinned:
            return False
        if have.keep_until is not None:  # a request's keep_alive overrides the profile's ttl
            idle_for = max(0.0, have.keep_until - have.last_used)
        elif want.ttl is not None:
            idle_for = want.ttl
        else:
            return False
        if have.in_flight > 0 or want.demand is not None:
            # busy or wanted right now: the earliest it can expire is ttl after it becomes idle,
            # which is not before now (a waiting client may also leave without a request)
            self._wake(self.now + idle_for)
            return False
        expires = have.last_used + idle_for
        if self.now >= expires:
            return True
        self._wake(expires)
        return False

    def _wake(self, at: float) -> None:
        if self.wake_at is None or at < self.wake_at:
            self.wake_at = at

    def _occupy(
        self, have: Have, pinned: bool, group: str | None, want: Want | None, *, leaving: bool
    ) -> None:
        memory = have.memory
        if memory is None and want is not None:
            memory = want.memory
        if memory is None:
            self.notes.append(f"{have.model} ({have.key}): memory unknown, counted as 0")
            memory = 0
        scheduling = self.limits.scheduling
        residency = scheduling.residency(have.load_time)
        idle = have.in_flight == 0 and have.state == "ready"
        occupant = Occupant(
            key=have.key,
            model=have.model,
            memory=memory,
            group=group,
            pinned=pinned,
            last_used=have.last_used,
            in_flight=have.in_flight,
            demanded=want is not None and want.demand is not None,
            leaving=leaving,
            kept=have.keep_until is not None and have.keep_until > self.now,
            warm=idle and self.now < have.last_used + scheduling.warmth(have.load_time),
            cold_at=have.last_used + scheduling.warmth(have.load_time),
            priority=0 if want is None else want.priority,
            resident_until=(have.ready_at + residency) if have.ready_at is not None else self.now,
            placement=dict(have.devices or (want.devices if want is not None else None) or {}),
        )
        self.occupants[have.key] = occupant
        self.ledger.add(occupant.memory, occupant.group, occupant.placement)
        if pinned and not leaving:
            self.permanent.add(occupant.memory, occupant.group, occupant.placement)

    # -- rule 3: limits lowered under a running set ------------------------------------------

    def _fit_lowered_limits(self) -> None:
        """Evict idle sidecars while the running set is over limits lowered by a reload.

        Only what stays counts here: a sidecar that is already stopping is on its way out, and
        evicting others because of it would stop more than needed. Warmth (recent use) is a
        reason for a demand to wait, not for the running set to stay over its limits.
        """
        staying = [replace(o, warm=False) for o in self.occupants.values() if not o.leaving]
        steady = Ledger(self.limits)
        for occupant in staying:
            steady.add(occupant.memory, occupant.group, occupant.placement)
        over_groups = [
            group
            for group, members in sorted(steady.groups.items())
            if members > self.limits.group_limit(group)
        ]
        for group in (None, *over_groups):
            room = find_room(steady, staying, group=group, memory=0, slots=0)
            for occupant, reason in room.victims:
                self._evict(occupant, reason, "because the running set is over the limits")
                steady.remove(occupant.memory, occupant.group, occupant.placement)
                staying.remove(occupant)
            if room.blocked or room.drains:
                busy = ", ".join(o.model for o in room.drains)
                why = "; ".join(room.blocked) or f"busy group members: {busy}"
                self.notes.append(f"over the limits, left as is: {why}")

    # -- rule 4: starts --------------------------------------------------------------------------

    def _candidates(self) -> list[tuple[Want, StartReason]]:
        pinned: list[Want] = []
        demanded: list[Want] = []
        preload: list[Want] = []
        # one cheap pass over what may be tens of thousands of keys; the rest is per candidate
        interesting = [
            w for w in self.wants.values() if w.pinned or w.preload or w.demand is not None
        ]
        for want in interesting:
            if want.pinned:
                pinned.append(want)
            elif want.demand is not None:
                demanded.append(want)
            elif want.preload and want.key not in self.haves:
                preload.append(want)
        pinned.sort(key=lambda w: (w.model, w.key))  # profile (id) order, not hash order
        demanded.sort(key=self._demand_order)
        preload.sort(key=lambda w: (w.model, w.key))
        return [
            *((w, "pinned") for w in pinned),
            *((w, "demand") for w in demanded),
            *((w, "preload") for w in preload),
        ]

    def _admit(self, want: Want, reason: StartReason) -> None:
        have = self.haves.get(want.key)
        if have is not None:
            if have.state in RUNNING_STATES:
                return
            if have.state == "failed":
                self.later.append(
                    Refuse(want.key, f"{want.model} failed and waits for a reset: {have.failure}")
                )
                return
            if have.state == "stopping":
                self.later.append(Wait(want.key, f"{want.model} is still stopping"))
                return
        memory = want.memory
        if memory is None:
            self.notes.append(f"{want.model} ({want.key}): memory unknown, counted as 0")
            memory = 0
        never = self._never_fits(want, memory)
        if never:
            self.later.append(Refuse(want.key, f"{want.model}: {never}"))
            return
        room = find_room(
            self.ledger,
            self.occupants.values(),
            group=want.group,
            memory=memory,
            slots=1,
            may_drain=self._drain_filter(want) if reason == "demand" else None,
            devices=want.devices,
        )
        if reason == "preload":
            if room.victims or room.drains or room.displaced or room.blocked:
                self.notes.append(f"preload of {want.model} ({want.key}) deferred: no free room")
                return
        elif not room.blocked and not room.drains and not room.displaced:
            for occupant, stop_reason in room.victims:
                self._evict(occupant, stop_reason, f"to make room for {want.model}")
        else:
            self._wait_for_room(want, room, memory)
            return
        started = Occupant(
            key=want.key,
            model=want.model,
            memory=memory,
            group=want.group,
            pinned=want.pinned,
            last_used=self.now,
            fresh=True,
            placement=dict(want.devices or {}),
        )
        self.occupants[want.key] = started
        self.ledger.add(memory, want.group, want.devices)
        if want.pinned:
            self.permanent.add(memory, want.group, want.devices)
        self.starts.append(Start(want.key, reason, _start_detail(want, reason, want.memory)))

    def _wait_for_room(self, want: Want, room: Room, memory: int) -> None:
        """The demand waits: busy group members and displaced sidecars drain (finishing their
        requests in flight, admitting no new ones), its room is reserved so later candidates
        cannot take it, and a pass is asked for when a held sidecar may be drained."""
        for occupant in room.drains:
            occupant.leaving = True
            self.stops.append(
                Stop(
                    occupant.key,
                    "group",
                    True,
                    occupant.in_flight,
                    f"{occupant.model}: group {want.group} makes room for {want.model}",
                )
            )
        if not room.blocked:
            # the room is made once the drains are done: idle victims go now
            for occupant, stop_reason in room.victims:
                self._evict(occupant, stop_reason, f"to make room for {want.model}")
        if room.displaced and not room.blocked:
            why = self._drain_reason(want)
            for occupant in room.displaced:
                occupant.leaving = True
                self.stops.append(
                    Stop(
                        occupant.key,
                        "contention",
                        True,
                        occupant.in_flight,
                        f"{occupant.model}: drained for {want.model} ({why})",
                    )
                )
        self.ledger.reserve(memory, want.group, want.devices)
        blockers = [*room.blocked]
        if room.drains or room.displaced:
            draining = [o.model for o in (*room.drains, *room.displaced)]
            blockers.append("draining " + ", ".join(draining))
        if room.blocked and room.held:
            self._wake_for_held(want, room.held)
        self.later.append(Wait(want.key, f"{want.model}: " + "; ".join(blockers)))

    def _drain_filter(self, want: Want) -> DrainFilter | None:
        """Which busy sidecars ``want``'s demand may drain now: none before it has waited
        ``max_wait``; then those past their minimum residency that it does not rank below."""
        scheduling = self.limits.scheduling
        demand = want.demand
        if scheduling.max_wait is None or demand is None:
            return None
        if self.now - demand.since < scheduling.max_wait:
            return lambda occupant: False
        rank = self._effective_priority(demand)
        now = self.now

        def may_drain(occupant: Occupant) -> bool:
            return now >= occupant.resident_until and rank >= occupant.priority

        return may_drain

    def _wake_for_held(self, want: Want, held: list[Occupant]) -> None:
        """Ask for a pass when the first held sidecar can make room for ``want``: a warm one
        once it has idled long enough to be evicted, any once ``want`` may drain it."""
        scheduling = self.limits.scheduling
        demand = want.demand
        if scheduling.max_wait is None or demand is None:
            return
        times: list[float] = []
        for occupant in held:
            if occupant.warm:
                times.append(occupant.cold_at)
            at = max(demand.since + scheduling.max_wait, occupant.resident_until)
            gap = occupant.priority - demand.priority
            if gap > 0:
                if scheduling.aging is None:
                    continue  # it outranks the demand for good
                at = max(at, demand.since + gap * scheduling.aging)
            times.append(at)
        later = [at for at in times if at > self.now]
        if later:
            self._wake(min(later))

    def _drain_reason(self, want: Want) -> str:
        demand = want.demand
        assert demand is not None
        return (
            f"it waited {self.now - demand.since:.1f}s; "
            f"max_wait {self.limits.scheduling.max_wait:g}s"
        )

    def _effective_priority(self, demand: Demand) -> int:
        aging = self.limits.scheduling.aging
        if not aging:
            return demand.priority
        return demand.priority + int(max(0.0, self.now - demand.since) // aging)

    def _demand_order(self, want: Want) -> tuple[int, float, str]:
        """Highest effective priority first, then first come first served."""
        assert want.demand is not None
        return (-self._effective_priority(want.demand), want.demand.since, want.key)

    def _never_fits(self, want: Want, memory: int) -> str:
        limits, held = self.limits, self.permanent
        budget = limits.memory_budget
        if budget is not None:
            if memory > budget:
                return f"needs {format_bytes(memory)}, budget {format_bytes(budget)}"
            if held.memory + memory > budget:
                return (
                    f"needs {format_bytes(memory)}, budget {format_bytes(budget)} of which "
                    f"pinned sidecars hold {format_bytes(held.memory)}"
                )
        for device, device_budget in sorted(limits.device_budgets.items()):
            need = placement(memory, want.devices).get(device, 0)
            if need > device_budget:
                return (
                    f"needs {format_bytes(need)} on {device}, whose budget is "
                    f"{format_bytes(device_budget)}"
                )
            pinned = held.devices.get(device, 0)
            if pinned + need > device_budget:
                return (
                    f"needs {format_bytes(need)} on {device}, budget "
                    f"{format_bytes(device_budget)} of which pinned sidecars hold "
                    f"{format_bytes(pinned)}"
                )
        if limits.max_sidecars is not None and held.count + 1 > limits.max_sidecars:
            return f"all {limits.max_sidecars} sidecar slots (max_sidecars) are held by pinned ones"
        if want.group is not None and want.group in limits.exclusive:
            for occupant in self.occupants.values():
                outside = occupant.group != want.group
                if occupant.pinned and outside and occupant.group not in limits.persistent:
                    return f"group {want.group} is exclusive and pinned {occupant.model} runs"
        if want.group is not None:
            allowed = limits.group_limit(want.group)
            if held.groups.get(want.group, 0) + 1 > allowed:
                return f"group {want.group} allows {allowed} running, held by pinned sidecars"
        return ""

    def _evict(self, occupant: Occupant, reason: StopReason, why: str) -> None:
        del self.occupants[occupant.key]
        self.ledger.remove(occupant.memory, occupant.group, occupant.placement)
        drain = reason == "group"
        self.stops.append(Stop(occupant.key, reason, drain, 0, f"{occupant.model}: evicted {why}"))


def _start_detail(want: Want, reason: StartReason, memory: int | None) -> str:
    size = "memory not estimated yet" if memory is None else format_bytes(memory)
    if reason == "demand" and want.demand is not None:
        return f"{want.model}: {want.demand.waiting} request(s) waiting; {size}"
    return f"{want.model}: {reason}; {size}"
