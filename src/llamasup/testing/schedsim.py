"""A discrete-event simulation of sidecars under contention, driven by the real planner.

Models load for a given time and serve requests with a given number of parallel slots
(llama-server's ``-np``; further admitted requests queue inside the server). Requests arrive
from a trace (open loop) or from agents that send the next request a think time after the last
answer (closed loop). A *policy* decides swaps: :class:`PlannerPolicy` runs the real
:func:`~llamasup.planner.plan.plan` on a virtual clock with the reconciler's semantics (a
draining sidecar admits no new request, a swap never cuts one in flight); :class:`FifoPolicy`
is llama-swap's swap-on-arrival, one swap at a time in arrival order. The scheduling tests
and ``bench/bench_scheduling.py`` use it.
"""

from __future__ import annotations

import heapq
import itertools
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from llamasup.planner.plan import plan
from llamasup.planner.types import Demand, Have, Limits, Want

#: spawn-to-exit of a stopped process, while it still holds its room
STOP_TIME = 0.05


@dataclass(frozen=True)
class SimModel:
    name: str
    load_time: float
    slots: int = 1
    priority: int = 0
    memory: int = 1
    #: most requests in flight (llamasup's ``concurrency``); None: every waiting one is sent
    #: and queues inside the server
    concurrency: int | None = None


@dataclass(frozen=True)
class Arrival:
    at: float
    model: str
    work: float
    priority: int | None = None


@dataclass(frozen=True)
class Agent:
    """A closed loop: ask ``models`` in turn, ``count`` times, ``think`` seconds apart."""

    name: str
    models: tuple[str, ...]
    work: float
    think: float
    count: int
    start: float = 0.0
    priority: int | None = None


@dataclass
class Request:
    id: int
    model: str
    arrived: float
    work: float
    priority: int
    agent: Agent | None = None
    turn: int = 0
    admitted: float | None = None
    began: float | None = None
    finished: float | None = None
    aborted: bool = False

    @property
    def wait(self) -> float:
        assert self.admitted is not None
        return self.admitted - self.arrived


@dataclass
class Sidecar:
    model: str
    started: float
    spawned: bool = False
    ready_at: float | None = None
    draining: bool = False
    stopping: bool = False
    last_used: float = 0.0
    queue: list[Request] = field(default_factory=list)
    running: list[Request] = field(default_factory=list)

    @property
    def in_flight(self) -> int:
        return len(self.queue) + len(self.running)

    @property
    def admits(self) -> bool:
        return self.ready_at is not None and not (self.draining or self.stopping)


class Policy(Protocol):
    name: str

    def step(self, sim: Simulation) -> None:
        """Look at the world and start, stop or drain sidecars through ``sim``."""
        ...


class Simulation:
    def __init__(self, models: Iterable[SimModel], max_sidecars: int, policy: Policy) -> None:
        self.models = {m.name: m for m in models}
        self.max_sidecars = max_sidecars
        self.policy = policy
        self.now = 0.0
        self.sidecars: dict[str, Sidecar] = {}
        self.waiting: list[Request] = []
        self.requests: list[Request] = []
        self.swaps = 0
        self.starts = 0
        self.peak_running = 0
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._ids = itertools.count()

    # -- the clock ---------------------------------------------------------------------------

    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._events, (max(when, self.now), next(self._seq), action))

    def run(self, until: float = 1e9) -> SimResult:
        while self._events and self._events[0][0] <= until:
            self.now = self._events[0][0]
            while self._events and self._events[0][0] == self.now:
                heapq.heappop(self._events)[2]()
            self._settle()
        return SimResult(self.policy.name, self.requests, self.swaps, self.starts, self.now)

    def _settle(self) -> None:
        for _ in range(8):  # a step's instant effects (idle stops) may free room at once
            self._admit()  # a ready sidecar takes its waiting requests before any decision
            before = self._state()
            self.policy.step(self)
            self._admit()
            if self._state() == before:
                return

    def _state(self) -> tuple[object, ...]:
        return (
            tuple(
                sorted((k, s.draining, s.stopping, s.in_flight) for k, s in self.sidecars.items())
            ),
            len(self.waiting),
        )

    # -- requests ----------------------------------------------------------------------------

    def add(self, arrivals: Iterable[Arrival]) -> None:
        for arrival in arrivals:
            priority = self._priority(arrival.model, arrival.priority)
            self.at(
                arrival.at, partial(self._arrive, arrival.model, arrival.work, priority, None, 0)
            )

    def add_agents(self, agents: Iterable[Agent]) -> None:
        for agent in agents:
            self.at(agent.start, partial(self._next_turn, agent, 0))

    def _priority(self, model: str, explicit: int | None) -> int:
        return self.models[model].priority if explicit is None else explicit

    def _next_turn(self, agent: Agent, turn: int) -> None:
        if turn >= agent.count:
            return
        model = agent.models[turn % len(agent.models)]
        self._arrive(model, agent.work, self._priority(model, agent.priority), agent, turn)

    def _arrive(
        self, model: str, work: float, priority: int, agent: Agent | None, turn: int
    ) -> None:
        request = Request(next(self._ids), model, self.now, work, priority, agent, turn)
        self.requests.append(request)
        self.waiting.append(request)

    def _admit(self) -> None:
        still: list[Request] = []
        for request in self.waiting:
            sidecar = self.sidecars.get(request.model)
            limit = self.models[request.model].concurrency
            if (
                sidecar is not None
                and sidecar.admits
                and (limit is None or sidecar.in_flight < limit)
            ):
                request.admitted = self.now
                sidecar.queue.append(request)
                self._serve(request.model)
            else:
                still.append(request)
        self.waiting = still

    def _serve(self, key: str) -> None:
        sidecar = self.sidecars[key]
        slots = self.models[key].slots
        while sidecar.queue and len(sidecar.running) < slots:
            request = sidecar.queue.pop(0)
            request.began = self.now
            sidecar.running.append(request)
            self.at(self.now + request.work, partial(self._finish, sidecar, request))

    def _finish(self, sidecar: Sidecar, request: Request) -> None:
        if request not in sidecar.running:
            return  # its sidecar was killed under it (counted as aborted)
        sidecar.running.remove(request)
        request.finished = self.now
        sidecar.last_used = self.now
        if self.sidecars.get(request.model) is sidecar:
            self._serve(request.model)
        if sidecar.draining and sidecar.in_flight == 0:
            self._exit(request.model, sidecar)
        agent = request.agent
        if agent is not None:
            self.at(self.now + agent.think, partial(self._next_turn, agent, request.turn + 1))

    # -- what a policy may do ----------------------------------------------------------------

    def start(self, key: str, after: float = 0.0) -> None:
        """Spawn ``key`` after ``after`` seconds (the reconciler first awaits idle stops)."""
        sidecar = Sidecar(key, self.now + after, last_used=self.now)
        self.sidecars[key] = sidecar
        self.starts += 1
        self.at(self.now + after, partial(self._spawn, sidecar))

    def _spawn(self, sidecar: Sidecar) -> None:
        sidecar.spawned = True
        alive = sum(1 for s in self.sidecars.values() if s.spawned)
        self.peak_running = max(self.peak_running, alive)
        self.at(self.now + self.models[sidecar.model].load_time, partial(self._loaded, sidecar))

    def _loaded(self, sidecar: Sidecar) -> None:
        if self.sidecars.get(sidecar.model) is sidecar and not sidecar.stopping:
            sidecar.ready_at = self.now
            sidecar.last_used = self.now

    def stop(self, key: str, *, swap: bool) -> None:
        """Drain ``key``: no new requests; once its last one ends it exits (never cut)."""
        sidecar = self.sidecars[key]
        if sidecar.draining or sidecar.stopping:
            return
        if swap:
            self.swaps += 1
        sidecar.draining = True
        if sidecar.in_flight == 0:
            self._exit(key, sidecar)

    def _exit(self, key: str, sidecar: Sidecar) -> None:
        if sidecar.stopping:
            return
        sidecar.stopping = True
        for request in sidecar.running + sidecar.queue:  # cannot happen after a drain
            request.aborted = True
        self.at(self.now + STOP_TIME, partial(self._gone, key, sidecar))

    def _gone(self, key: str, sidecar: Sidecar) -> None:
        if self.sidecars.get(key) is sidecar:
            del self.sidecars[key]


@dataclass(frozen=True)
class SimResult:
    policy: str
    requests: Sequence[Request]
    swaps: int
    starts: int
    makespan: float

    @property
    def served(self) -> list[Request]:
        return [r for r in self.requests if r.finished is not None and not r.aborted]

    @property
    def aborted(self) -> int:
        return sum(1 for r in self.requests if r.aborted)

    @property
    def unserved(self) -> int:
        return sum(1 for r in self.requests if r.admitted is None)

    def waits(self, model: str | None = None) -> list[float]:
        return sorted(
            r.wait for r in self.requests if r.admitted is not None and model in (None, r.model)
        )

    def over(self, bound: Callable[[Request], float]) -> int:
        """Requests that waited longer than ``bound(request)`` (or were never admitted)."""
        return sum(1 for r in self.requests if r.admitted is None or r.wait > bound(r))


def quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, int(q * 100) - 1)]


class PlannerPolicy:
    """The real planner on the simulation's clock, with the reconciler's semantics."""

    def __init__(self, name: str, limits: Limits) -> None:
        self.name = name
        self.limits = limits
        self._wake: float | None = None

    def step(self, sim: Simulation) -> None:
        waiting: dict[str, list[Request]] = {}
        for request in sim.waiting:
            sidecar = sim.sidecars.get(request.model)
            if sidecar is None or not sidecar.admits:  # queued for a concurrency slot: no demand
                waiting.setdefault(request.model, []).append(request)
        wants = [
            Want(
                key=model.name,
                model=model.name,
                memory=model.memory,
                priority=model.priority,
                demand=None
                if not waiting.get(model.name)
                else Demand(
                    waiting=len(waiting[model.name]),
                    since=min(r.arrived for r in waiting[model.name]),
                    priority=max(r.priority for r in waiting[model.name]),
                ),
            )
            for model in sim.models.values()
        ]
        haves = [
            Have(
                key=key,
                model=key,
                state="stopping"
                if sidecar.stopping or sidecar.draining
                else "ready"
                if sidecar.ready_at is not None
                else "starting",
                in_flight=sidecar.in_flight,
                last_used=sidecar.last_used,
                memory=sim.models[key].memory,
                ready_at=sidecar.ready_at,
                load_time=None if sidecar.ready_at is None else sidecar.ready_at - sidecar.started,
            )
            for key, sidecar in sim.sidecars.items()
        ]
        decided = plan(wants, haves, self.limits, sim.now)
        freeing = False
        for stop in decided.stops:
            if stop.key in sim.sidecars:
                swap = stop.reason in ("evicted-lru", "evicted-memory", "group", "contention")
                freeing = freeing or sim.sidecars[stop.key].in_flight == 0
                sim.stop(stop.key, swap=swap)
        for start in decided.starts:
            # the executor awaits the idle stops before it starts anything
            sim.start(start.key, after=STOP_TIME if freeing else 0.0)
        if decided.wake_at is not None and decided.wake_at != self._wake:
            self._wake = decided.wake_at
            sim.at(decided.wake_at, lambda: None)


class FifoPolicy:
    """llama-swap's policy: a request for a model that is not loaded swaps it in on arrival,
    one swap at a time in arrival order; the least recently used model makes room after
    finishing its requests in flight (it is never cut)."""

    name = "fifo-swap"

    def step(self, sim: Simulation) -> None:
        if any(s.ready_at is None or s.draining or s.stopping for s in sim.sidecars.values()):
            return  # one swap at a time: the head of the line waits for it to finish
        head = next((r for r in sim.waiting if r.model not in sim.sidecars), None)
        if head is None:
            return
        if len(sim.sidecars) >= sim.max_sidecars:
            victim = min(sim.sidecars.values(), key=lambda s: s.last_used)
            sim.stop(victim.model, swap=True)
            return
        sim.start(head.model)
