"""The reconcile loop: coalesced triggers, one pass at a time, timers, retries.

Level-triggered: a pass reads the whole world, so any number of triggers before a pass begins
coalesce into it, and a trigger that arrives during a pass causes exactly one more pass, never
a lost one. A pass that raises is recorded and retried with exponential backoff (as
controller-runtime requeues a failed reconcile), so a passing fault cannot stop the loop and a
lasting one cannot spin it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from llamasup.planner.types import Action, Plan, Usage
from llamasup.reconcile.history import PassRecord, ReconcileStatus

logger = logging.getLogger(__name__)

Clock = Callable[[], float]

RETRY_FIRST = 0.1
RETRY_MAX = 30.0


class ReconcileLoop:
    def __init__(
        self,
        decide: Callable[[], Plan],
        act: Callable[[Plan], Awaitable[None]],
        clock: Clock,
        *,
        retry_first: float = RETRY_FIRST,
        retry_max: float = RETRY_MAX,
    ) -> None:
        self._decide = decide
        self._act = act
        self._clock = clock
        self._retry_first = retry_first
        self._retry_max = retry_max
        self._retry_delay = 0.0
        self._dirty = asyncio.Event()
        self._lock = asyncio.Lock()
        self._wake: asyncio.TimerHandle | None = None
        self._wake_at: float | None = None
        self._retry: asyncio.TimerHandle | None = None
        self.history = ReconcileStatus()

    def trigger(self) -> None:
        """Ask for a pass; any number of triggers before it starts coalesce into one."""
        self._dirty.set()

    async def run(self) -> None:
        """Pass whenever dirty, forever (cancel to stop)."""
        try:
            while True:
                await self._dirty.wait()
                self._dirty.clear()
                await self.once()
        finally:
            for handle in (self._wake, self._retry):
                if handle is not None:
                    handle.cancel()

    async def once(self) -> Plan:
        """One pass now (the loop's passes and an apply's pass never overlap).

        A pass that raises is recorded with its error (and the plan, when deciding worked)
        and retried after a backoff; the plan it got to is returned.
        """
        async with self._lock:
            started = self._clock()
            began = time.perf_counter()
            decided = _EMPTY
            error: str | None = None
            try:
                decided = self._decide()
                if decided.actions:
                    logger.info("plan: %s", "; ".join(_describe(a) for a in decided.actions))
                await self._act(decided)
            except Exception as exc:  # one bad pass must not stop the loop
                logger.exception("reconcile pass failed")
                error = f"{type(exc).__name__}: {exc}"
            self.schedule_wake(decided.wake_at)
            if error is None:
                self._retry_delay = 0.0
            else:
                self._schedule_retry()
            self.history.record(PassRecord(started, time.perf_counter() - began, decided, error))
            return decided

    def _schedule_retry(self) -> None:
        self._retry_delay = min(
            self._retry_max, self._retry_delay * 2 if self._retry_delay else self._retry_first
        )
        if self._retry is not None:
            self._retry.cancel()
        logger.warning("retrying the reconcile pass in %.1fs", self._retry_delay)
        self._retry = asyncio.get_running_loop().call_later(self._retry_delay, self.trigger)

    def schedule_wake(self, wake_at: float | None) -> None:
        """The next pass the planner asked for by time (an idle TTL expiring, a wait ending)."""
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        self._wake_at = wake_at
        if wake_at is not None:
            delay = max(0.0, wake_at - self._clock()) + 0.01
            self._wake = asyncio.get_running_loop().call_later(delay, self.trigger)

    def wake_by(self, at: float) -> None:
        """Make sure a pass runs at ``at`` (keeps an earlier wake-up)."""
        if self._wake_at is None or at < self._wake_at:
            self.schedule_wake(at)


_EMPTY = Plan(actions=(), usage=Usage(0, 0))


def _describe(action: Action) -> str:
    return f"{type(action).__name__.lower()} {action.key} ({action.reason})"
