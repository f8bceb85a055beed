"""Carrying out a plan: the one place where the planner's decisions touch processes.

Stops run first. A stop of an idle sidecar is awaited before any start, so its memory is free
when the next model loads; a stop of a busy one drains in the background (new requests for
its key wait for the replacement). A swap's drain waits for the last request in flight; the
drain of a profile change or an operator's unload is bounded by ``server.stop_grace``. Starts
only ask for the process to begin: readiness is awaited by the requests that need it, not by
the pass.

The executor reaches the world only through :class:`Effects`, so it can be tested with a
recording fake and read without the reconciler (as llama-swap's router keeps its swap policy
apart from its effects).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from llamasup.planner.types import Plan, Stop, StopReason

logger = logging.getLogger(__name__)


class Effects(Protocol):
    """What carrying out a plan may ask of the world."""

    def running_model(self, key: str) -> str | None:
        """The model of ``key``'s sidecar process, or None when it has none."""
        ...

    def in_flight(self, key: str) -> int: ...

    def stop_grace(self) -> float:
        """How long a drain may wait for requests in flight, and SIGTERM for an exit."""
        ...

    def start(self, key: str, detail: str) -> None:
        """Begin starting the sidecar recorded for ``key`` (returns at once)."""
        ...

    async def stop(self, key: str, model: str, reason: StopReason, grace: float) -> None:
        """Stop ``key``'s process (SIGTERM, then SIGKILL after ``grace``)."""
        ...

    def stop_begins(self, stop: Stop, model: str) -> None:
        """A running sidecar is about to be drained and stopped."""
        ...

    def stop_ends(self, stop: Stop, model: str) -> None:
        """Its process is gone."""
        ...

    def forget(self, key: str) -> None:
        """A record of a stopped sidecar that is no longer wanted."""
        ...

    def waits(self, key: str, reason: str) -> None:
        """Requests for ``key`` keep waiting, for this reason."""
        ...

    def refused(self, key: str, reason: str) -> None:
        """Requests waiting for ``key`` fail with this reason."""
        ...

    def changed(self) -> None:
        """Something the planner reads changed: ask for another pass."""
        ...


class Executor:
    def __init__(self, effects: Effects) -> None:
        self._effects = effects
        self._closing: dict[str, asyncio.Task[None]] = {}
        self._closing_models: dict[str, str] = {}
        self._why: dict[str, str] = {}
        self._idle: dict[str, asyncio.Event] = {}

    def closing(self, key: str) -> bool:
        return key in self._closing

    def why(self, key: str) -> str | None:
        """The detail of the stop under way for ``key`` (None: none)."""
        return self._why.get(key)

    def closing_models(self) -> dict[str, str]:
        """Key -> model of every sidecar being stopped.

        The supervisor forgets a key as soon as its stop begins, while the process may take up
        to ``stop_grace`` to exit; the reconciler reports these as ``stopping`` so the planner
        neither starts a preload one again nor counts its memory as free.
        """
        return {key: self._closing_models.get(key, "") for key in self._closing}

    def idle(self, key: str) -> None:
        """The last in-flight request of ``key`` ended."""
        event = self._idle.get(key)
        if event is not None:
            event.set()

    async def execute(self, plan: Plan) -> None:
        effects = self._effects
        freeing: list[asyncio.Task[None]] = []
        for stop in plan.stops:
            if effects.running_model(stop.key) is None:
                effects.forget(stop.key)  # a record of a stopped sidecar, nothing to kill
                continue
            if stop.key in self._closing:
                continue
            task = self._begin_stop(stop)
            if stop.in_flight == 0:
                freeing.append(task)
        if freeing:
            await asyncio.wait(freeing)
        for start in plan.starts:
            effects.start(start.key, start.detail)
        for wait in plan.waits:
            effects.waits(wait.key, wait.reason)
        for refusal in plan.refusals:
            effects.refused(refusal.key, refusal.reason)

    async def settle(self) -> None:
        """Wait for every stop under way to finish (each is bounded by ``stop_grace``)."""
        while self._closing:
            await asyncio.wait(list(self._closing.values()))

    async def stop_now(self, key: str, reason: StopReason, detail: str) -> bool:
        """Stop ``key`` outside a plan (an operator's unload); drains like a planned stop.

        Returns False when there was nothing to stop. A stop already under way is awaited.
        """
        task = self._closing.get(key)
        if task is None:
            if self._effects.running_model(key) is None:
                return False
            task = self._begin_stop(Stop(key, reason, True, self._effects.in_flight(key), detail))
        await asyncio.shield(task)
        return True

    def _begin_stop(self, stop: Stop) -> asyncio.Task[None]:
        # the model is known from the moment the stop is decided, not from when its task
        # first runs: a pass in between must see what is stopping
        self._closing_models[stop.key] = self._effects.running_model(stop.key) or ""
        self._why[stop.key] = stop.detail
        task = asyncio.create_task(self._stop(stop), name=f"stop-{stop.key}")
        self._closing[stop.key] = task
        return task

    async def _stop(self, stop: Stop) -> None:
        key = stop.key
        effects = self._effects
        grace = effects.stop_grace()
        model = self._closing_models[key]
        try:
            effects.stop_begins(stop, model)
            if effects.in_flight(key) > 0:
                event = self._idle.setdefault(key, asyncio.Event())
                logger.info("draining %s before stopping it (%s)", key, stop.reason)
                # a swap waits for the last request; a profile change or an unload is bounded
                bound = grace if stop.bounded else None
                try:
                    await asyncio.wait_for(event.wait(), bound)
                except TimeoutError:
                    logger.warning(
                        "%s still has %d requests after %.1fs; stopping anyway",
                        key, effects.in_flight(key), grace,
                    )  # fmt: skip
            logger.info("stopping %s (%s): %s", key, stop.reason, stop.detail)
            await effects.stop(key, model, stop.reason, grace)
            effects.stop_ends(stop, model)
        except Exception:
            logger.exception("stopping %s failed", key)
        finally:
            self._idle.pop(key, None)
            self._closing.pop(key, None)
            self._closing_models.pop(key, None)
            self._why.pop(key, None)
            effects.changed()
