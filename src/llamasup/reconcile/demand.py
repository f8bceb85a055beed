"""Requests waiting for a sidecar that is not ready yet, as the planner sees them.

A demand exists while at least one request waits for its key; the first waiter's arrival time
and the highest waiting priority order demands (the planner adds aging). A waiter that gives up
(timeout, client gone) withdraws its share of the demand on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from llamasup.planner.types import Demand


@dataclass
class WaitingDemand:
    key: str
    since: float
    waiters: int = 0
    refused: str | None = None
    reason: str | None = None
    #: waiting requests by priority (a count each), for the highest
    priorities: dict[int, int] = field(default_factory=dict)
    _wakeups: list[asyncio.Future[None]] = field(default_factory=list)

    @property
    def priority(self) -> int:
        return max(self.priorities, default=0)

    async def changed(self, at_most: float) -> None:
        """Wait until something about this key changed, or ``at_most`` seconds passed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._wakeups.append(future)
        try:
            await asyncio.wait_for(asyncio.shield(future), at_most)
        except TimeoutError:
            pass
        finally:
            if future in self._wakeups:
                self._wakeups.remove(future)

    def wake(self) -> None:
        wakeups, self._wakeups = self._wakeups, []
        for future in wakeups:
            if not future.done():
                future.set_result(None)


class DemandBook:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._demands: dict[str, WaitingDemand] = {}

    @contextlib.contextmanager
    def waiting(self, key: str, priority: int = 0) -> Iterator[WaitingDemand]:
        demand = self._demands.get(key)
        if demand is None:
            demand = self._demands[key] = WaitingDemand(key, self._clock())
        demand.waiters += 1
        demand.priorities[priority] = demand.priorities.get(priority, 0) + 1
        try:
            yield demand
        finally:
            demand.waiters -= 1
            left = demand.priorities[priority] - 1
            if left:
                demand.priorities[priority] = left
            else:
                del demand.priorities[priority]
            if demand.waiters == 0 and self._demands.get(key) is demand:
                del self._demands[key]

    def planner_demand(self, key: str) -> Demand | None:
        demand = self._demands.get(key)
        if demand is None or demand.refused is not None:
            return None
        return Demand(waiting=demand.waiters, since=demand.since, priority=demand.priority)

    def notify(self, key: str) -> None:
        demand = self._demands.get(key)
        if demand is not None:
            demand.wake()

    def refuse(self, key: str, reason: str) -> None:
        demand = self._demands.get(key)
        if demand is not None:
            demand.refused = reason
            demand.wake()

    def note_wait(self, key: str, reason: str) -> None:
        demand = self._demands.get(key)
        if demand is not None:
            demand.reason = reason

    def waiting_keys(self) -> list[str]:
        return list(self._demands)

    def waiting_count(self, key: str) -> int:
        demand = self._demands.get(key)
        return 0 if demand is None else demand.waiters

    def waiting_since(self, key: str) -> float | None:
        """When the oldest request still waiting for ``key`` arrived."""
        demand = self._demands.get(key)
        return None if demand is None else demand.since
