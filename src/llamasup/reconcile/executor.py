"""Carrying out a plan: the one place where the planner's decisions touch processes.

Stops run first. A stop of an idle sidecar is awaited before any start, so its memory is free
when the next model loads; a stop of a busy one drains in the background (new requests for
its key wait for the replacement) and is bounded by ``server.stop_grace``. Starts only ask the
supervisor to begin: readiness is awaited by the requests that need it, not by the pass.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from llamasup.planner.plan import Plan, Stop
from llamasup.planner.types import StopReason

if TYPE_CHECKING:
    from llamasup.reconcile.reconciler import Reconciler
    from llamasup.sidecars.supervisor import Supervisor

logger = logging.getLogger(__name__)


class Executor:
    def __init__(self, reconciler: Reconciler, supervisor: Supervisor) -> None:
        self._reconciler = reconciler
        self._supervisor = supervisor
        self._closing: dict[str, asyncio.Task[None]] = {}
        self._closing_models: dict[str, str] = {}
        self._idle: dict[str, asyncio.Event] = {}

    def closing(self, key: str) -> bool:
        return key in self._closing

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
        reconciler = self._reconciler
        freeing: list[asyncio.Task[None]] = []
        for stop in plan.stops:
            if self._supervisor.get(stop.key) is None:
                reconciler.forget(stop.key)  # a record of a stopped sidecar, nothing to kill
                continue
            if stop.key in self._closing:
                continue
            task = asyncio.create_task(self._stop(stop), name=f"stop-{stop.key}")
            self._closing[stop.key] = task
            if stop.in_flight == 0:
                freeing.append(task)
        if freeing:
            await asyncio.wait(freeing)
        for start in plan.starts:
            spec = reconciler.spec_for(start.key)
            if spec is None:  # pragma: no cover - the planner only starts wanted keys
                logger.error("no spec for key %s; cannot start it", start.key)
                continue
            logger.info("starting %s (%s): %s", spec.model, start.key, start.detail)
            self._supervisor.start(spec)
            reconciler.started(start.key)
        for wait in plan.waits:
            reconciler.demands.note_wait(wait.key, wait.reason)
        for refusal in plan.refusals:
            reconciler.refuse(refusal.key, refusal.reason)

    async def stop_now(self, key: str, reason: StopReason, detail: str) -> bool:
        """Stop ``key`` outside a plan (an operator's unload); drains like a planned stop.

        Returns False when there was nothing to stop. A stop already under way is awaited.
        """
        task = self._closing.get(key)
        if task is None:
            if self._supervisor.get(key) is None:
                return False
            stop = Stop(key, reason, True, self._reconciler.in_flight(key), detail)
            task = asyncio.create_task(self._stop(stop), name=f"stop-{key}")
            self._closing[key] = task
        await asyncio.shield(task)
        return True

    async def _stop(self, stop: Stop) -> None:
        key = stop.key
        reconciler = self._reconciler
        grace = reconciler.profiles.server.stop_grace
        sidecar = self._supervisor.get(key)
        model = sidecar.status().model if sidecar is not None else ""
        self._closing_models[key] = model
        for listener in reconciler.stop_listeners:
            listener(stop)
        try:
            if reconciler.in_flight(key) > 0:
                event = self._idle.setdefault(key, asyncio.Event())
                logger.info("draining %s before stopping it (%s)", key, stop.reason)
                try:
                    await asyncio.wait_for(event.wait(), grace)
                except TimeoutError:
                    logger.warning(
                        "%s still has %d requests after %.1fs; stopping anyway",
                        key, reconciler.in_flight(key), grace,
                    )  # fmt: skip
            logger.info("stopping %s (%s): %s", key, stop.reason, stop.detail)
            reconciler.note_stopping(key, model, stop.reason)
            await self._supervisor.stop(key, reason=stop.reason, grace=grace)
            reconciler.note_stopped(key, model, stop.reason)
        except Exception:
            logger.exception("stopping %s failed", key)
        finally:
            self._idle.pop(key, None)
            self._closing.pop(key, None)
            self._closing_models.pop(key, None)
            reconciler.trigger()
