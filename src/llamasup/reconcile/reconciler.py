"""The reconciler: the parts that drive the supervisor towards the desired set, put together.

- :class:`~llamasup.reconcile.registry.Registry`: what is known of each key (spec, names,
  agents, stopped records);
- :class:`~llamasup.reconcile.leases.Leases`: ready sidecars handed to requests, in flight;
- :class:`~llamasup.reconcile.inputs.PlanInputs`: the planner's inputs, built in one place;
- :class:`~llamasup.reconcile.executor.Executor`: the plan carried out, through the narrow
  :class:`Effects` this module implements;
- :class:`~llamasup.reconcile.loop.ReconcileLoop`: coalesced triggers, timers, retries.

The reconciler is the ``SidecarPool`` the proxy leases from and the read model status and
metrics take snapshots of.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable

from llamasup.memory.cache import MemoryEstimates
from llamasup.planner.plan import plan
from llamasup.planner.types import Plan, Stop, StopReason
from llamasup.profiles.types import Profiles
from llamasup.reconcile.demand import DemandBook
from llamasup.reconcile.executor import Executor
from llamasup.reconcile.history import ReconcileStatus
from llamasup.reconcile.inputs import PlanInputs, limits_of
from llamasup.reconcile.leases import Lease, Leases
from llamasup.reconcile.loop import ReconcileLoop
from llamasup.reconcile.pool import DEFAULT_TERMS, Origin, Terms
from llamasup.reconcile.registry import Registry
from llamasup.reconcile.snapshot import SidecarView, argv_of
from llamasup.sidecars.handover import ProcessHandle
from llamasup.sidecars.proclog import LogLine
from llamasup.sidecars.supervisor import SupervisedStatus, Supervisor, SupervisorEvent
from llamasup.sidecars.types import SidecarState
from llamasup.spec.resolve import Resolver, SidecarSpec

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


class Reconciler:
    """Owns the desired set and drives the supervisor towards it."""

    def __init__(
        self,
        profiles: Profiles,
        supervisor: Supervisor,
        *,
        clock: Clock = time.time,
        memory: MemoryEstimates | None = None,
    ) -> None:
        self.supervisor = supervisor
        self._clock = clock
        self.loop = ReconcileLoop(self.plan_now, self._act, clock)
        self.registry = Registry(profiles, memory or MemoryEstimates(), self.loop.trigger)
        self.demands = DemandBook(clock)
        self._executor = Executor(_Effects(self))
        self.leases = Leases(
            supervisor,
            self.demands,
            clock,
            closing=self._executor.closing,
            state=self.state,
            wanted=self.loop.trigger,
            released=self._released,
        )
        self.inputs = PlanInputs(
            self.registry,
            self.leases,
            self.demands,
            supervisor,
            closing=self._executor.closing,
            closing_models=self._executor.closing_models,
        )
        #: told every stop of a running sidecar (and its model) as it begins, planned or an
        #: unload (metrics)
        self.stop_listeners: list[Callable[[Stop, str], None]] = []
        self._unsubscribe: Callable[[], None] = supervisor.subscribe(self._on_supervisor_event)

    # -- the profiles ----------------------------------------------------------------------

    @property
    def resolver(self) -> Resolver:
        return self.registry.resolver

    @property
    def profiles(self) -> Profiles:
        return self.registry.profiles

    @property
    def status(self) -> ReconcileStatus:
        """The history of passes."""
        return self.loop.history

    def set_profiles(self, profiles: Profiles) -> None:
        """Adopt a new valid profile set; sidecars whose key changed will be replaced."""
        self.registry.adopt(profiles, self._live)
        self.trigger()

    def trigger(self) -> None:
        self.loop.trigger()

    # -- the pool contract -----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lease(
        self,
        spec: SidecarSpec,
        *,
        timeout: float,  # noqa: ASYNC109 - the pool contract: a wait budget, checked per step
        origin: Origin | None = None,
        terms: Terms = DEFAULT_TERMS,
    ) -> AsyncIterator[Lease]:
        """A ready sidecar for ``spec``, held in flight for the duration of the block."""
        self.registry.remember(spec, origin or Origin(spec.model, None))
        async with self.leases.lease(spec, timeout, terms) as lease:
            yield lease

    def state(self, key: str) -> str | None:
        sidecar = self.supervisor.get(key)
        if sidecar is not None:
            return str(sidecar.state)
        tomb = next((t for t in self.registry.tombstones() if t.key == key), None)
        return None if tomb is None else tomb.state

    def progress(self, key: str) -> str | None:
        sidecar = self.supervisor.get(key)
        if sidecar is None or sidecar.state is not SidecarState.STARTING:
            return None
        return sidecar.log.last_child_line()

    def draining(self, key: str) -> bool:
        """Whether ``key`` is being stopped: new requests go elsewhere, its own finish first."""
        return self._executor.closing(key)

    async def unload(self, key: str, detail: str = "unloaded by an operator") -> bool:
        """Stop one sidecar now (after its in-flight requests, bounded by ``stop_grace``).

        A pinned model's sidecar comes back on the next pass; a preload one stays stopped
        until a request asks for it; anything else is forgotten. False: nothing to stop.
        """
        return await self._executor.stop_now(key, "unloaded", detail)

    # -- a planned restart -------------------------------------------------------------------

    def resolves_to(self, origin: Origin, key: str) -> SidecarSpec | None:
        """The spec ``origin`` names under the current profiles if its key is still ``key``
        (a sidecar handed over by the llamasup before is wanted as it is), else None."""
        spec = self.registry.resolve_origin(origin)
        return spec if spec is not None and spec.key == key else None

    async def adopt(
        self,
        spec: SidecarSpec,
        origin: Origin,
        handle: ProcessHandle,
        *,
        adopted_from: int,
        agents: Iterable[str] = (),
        last_used: float | None = None,
    ) -> None:
        """Take over a ready process handed over by the llamasup before this one (checked
        with ``handover.inspect``; ``spec`` from ``resolves_to``)."""
        self.registry.remember(spec, origin)
        self.registry.note_agents(spec.key, agents)
        self.leases.adopted(spec.key, last_used)
        await self.supervisor.adopt(spec, handle, adopted_from=adopted_from)

    async def settle(self) -> None:
        """Let the stops under way finish (call with the loop stopped: before a hand-over)."""
        await self._executor.settle()

    # -- passes ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Pass whenever dirty, forever (cancel to stop; ``run`` again to go on: a restart
        that did not happen does)."""
        await self.loop.run()

    def close(self) -> None:
        """Stop hearing the supervisor's events (the reconciler is done for good)."""
        unsubscribe, self._unsubscribe = self._unsubscribe, lambda: None
        unsubscribe()

    async def reconcile_once(self) -> Plan:
        """One pass now (the loop's passes and an apply's pass never overlap)."""
        return await self.loop.once()

    def plan_now(self) -> Plan:
        """The plan for this pass (records the specs of the profile's models)."""
        inputs = self.inputs
        return plan(
            inputs.wants(self.resolver), inputs.haves(), limits_of(self.profiles), self._clock()
        )

    async def _act(self, decided: Plan) -> None:
        await self._executor.execute(decided)

    def preview(self, profiles: Profiles | None = None) -> Plan:
        """What a pass would do now under ``profiles`` (default: the current ones).

        Changes nothing: ``GET /api/plan`` and dry-run applies use it.
        """
        resolver = self.resolver if profiles is None else Resolver(profiles)
        wants = self.inputs.wants(resolver, record=False)
        haves = self.inputs.haves()
        if profiles is not None:
            # a running sidecar whose key holds takes the candidate's settings (what
            # set_profiles would give it), so a raised memory override shows its evictions
            fresh = {want.key: want for want in wants}
            haves = [
                have.with_settings(fresh[have.key])
                if have.key in fresh and have.state != "stopped"
                else have
                for have in haves
            ]
        return plan(wants, haves, limits_of(resolver.profiles), self._clock())

    def desired_keys(self, profiles: Profiles) -> dict[str, str]:
        """Model id -> the key of its profile sidecar (no agent) under ``profiles``."""
        return self.registry.desired_keys(profiles)

    # -- the read model ----------------------------------------------------------------------

    def snapshot(self) -> list[SidecarView]:
        """Every key status shows: processes, stopped preload records, keys requests wait for,
        and pinned models the last pass refused; sorted by model, then key."""
        rows = [self._process_view(s) for s in self.supervisor.statuses()]
        known = {row.key for row in rows}
        for tomb in self.registry.tombstones():
            if tomb.key not in known:
                rows.append(self._idle_view(tomb.key, tomb.model, "stopped"))
                known.add(tomb.key)
        for key in self.demands.waiting_keys():
            if key not in known:
                spec = self.registry.spec_for(key)
                rows.append(self._idle_view(key, "" if spec is None else spec.model, "waiting"))
                known.add(key)
        last = self.status.last
        for refusal in last.plan.refusals if last is not None else ():
            # a pinned model the limits cannot hold: the planner refuses it on every pass
            spec = self.registry.spec_for(refusal.key)
            if refusal.key not in known and spec is not None:
                rows.append(self._idle_view(refusal.key, spec.model, "refused", refusal.reason))
        rows.sort(key=lambda row: (row.model, row.key))
        return rows

    def waiting_keys(self) -> list[str]:
        return self.demands.waiting_keys()

    def _oldest_wait(self, key: str) -> float | None:
        since = self.demands.waiting_since(key)
        return None if since is None else round(max(0.0, self._clock() - since), 3)

    def _process_view(self, status: SupervisedStatus) -> SidecarView:
        key = status.key
        sidecar = status.sidecar
        spec = self.registry.spec_for(key)
        ready = sidecar.state is SidecarState.READY
        return SidecarView(
            key=key,
            model=sidecar.model,
            agents=tuple(self.registry.agents(key)),
            state="draining" if ready and self.draining(key) else str(sidecar.state),
            supervised=True,
            pid=sidecar.pid,
            port=sidecar.port,
            started_at=sidecar.started_at,
            ready_at=sidecar.ready_at,
            restarts=sidecar.restarts,
            failures=status.failures,
            gave_up=status.gave_up,
            retry_in=status.retry_in,
            last_used=self.leases.last_used(key),
            in_flight=self.leases.in_flight(key),
            waiting=self.demands.waiting_count(key),
            oldest_wait=self._oldest_wait(key),
            drain=self._executor.why(key),
            progress=self.progress(key),
            memory=None if spec is None else self.registry.memory_estimate(spec),
            memory_devices=None if spec is None else self.registry.memory_split(spec),
            memory_reported=self.registry.memory_reported(key),
            pinned=spec is not None and spec.pinned,
            last_error=sidecar.last_error,
            exit_code=sidecar.exit_code,
            argv=argv_of(spec),
            adopted_at=sidecar.adopted_at,
            adopted_from=sidecar.adopted_from,
        )

    def _idle_view(self, key: str, model: str, state: str, error: str | None = None) -> SidecarView:
        spec = self.registry.spec_for(key)
        return SidecarView(
            key=key,
            model=model,
            agents=tuple(self.registry.agents(key)),
            state=state,
            supervised=False,
            pid=None,
            port=None,
            started_at=None,
            ready_at=None,
            restarts=0,
            failures=0,
            gave_up=False,
            retry_in=None,
            last_used=self.leases.last_used(key),
            in_flight=0,
            waiting=self.demands.waiting_count(key),
            oldest_wait=self._oldest_wait(key),
            drain=self._executor.why(key),
            progress=None,
            memory=None if spec is None else self.registry.memory_estimate(spec),
            memory_devices=None if spec is None else self.registry.memory_split(spec),
            pinned=spec is not None and spec.pinned,
            last_error=error,
            exit_code=None,
            argv=argv_of(spec),
        )

    # -- events ------------------------------------------------------------------------------

    def _on_supervisor_event(self, event: SupervisorEvent) -> None:
        if event.status.state is SidecarState.READY:
            self.leases.ready(event.key)
            sidecar = self.supervisor.get(event.key)
            if sidecar is not None:
                self.registry.loaded(event.key, load_output(sidecar.log.recent()))
        self.demands.notify(event.key)
        self.trigger()

    def _released(self, spec: SidecarSpec) -> None:
        """The last request in flight of ``spec``'s key ended."""
        key = spec.key
        self._executor.idle(key)
        last_used = self.leases.last_used(key)
        keep_until = self.leases.keep_until(key)
        expires = keep_until if keep_until is not None else None
        if expires is None and spec.ttl and last_used is not None:
            expires = last_used + spec.ttl
        if expires is not None and not spec.pinned:
            # idle from now on: a pass must come when its ttl (or the keep_alive a request
            # asked for) expires, even if nothing else happens
            self.loop.wake_by(expires)
        if self.demands.waiting_keys() or self._over_limits():
            # a waiting demand may have been held back by this busy sidecar (a Wait), or a
            # lowered limit left it running because it was busy: now that it is idle the
            # planner can evict it, so ask for a pass
            self.trigger()

    def _over_limits(self) -> bool:
        last = self.status.last
        return last is not None and any(n.startswith("over the limits") for n in last.plan.notes)

    def _live(self, key: str) -> bool:
        return self.supervisor.get(key) is not None or key in self.demands.waiting_keys()

    def _forget(self, key: str) -> None:
        if self.registry.forget(key, self._live):
            self.leases.forget(key)


class _Effects:
    """The reconciler's side of the executor's :class:`~llamasup.reconcile.executor.Effects`."""

    def __init__(self, reconciler: Reconciler) -> None:
        self._r = reconciler

    def running_model(self, key: str) -> str | None:
        sidecar = self._r.supervisor.get(key)
        return None if sidecar is None else sidecar.status().model

    def in_flight(self, key: str) -> int:
        return self._r.leases.in_flight(key)

    def stop_grace(self) -> float:
        return self._r.profiles.server.stop_grace

    def start(self, key: str, detail: str) -> None:
        r = self._r
        spec = r.registry.spec_for(key)
        if spec is None:  # pragma: no cover - the planner only starts wanted keys
            logger.error("no spec for key %s; cannot start it", key)
            return
        logger.info("starting %s (%s): %s", spec.model, key, detail)
        r.supervisor.start(spec)
        r.registry.started(key)
        r.leases.started(key)

    async def stop(self, key: str, model: str, reason: StopReason, grace: float) -> None:
        self._r.registry.stopping(key, model, reason)
        await self._r.supervisor.stop(key, reason=reason, grace=grace)

    def stop_begins(self, stop: Stop, model: str) -> None:
        for listener in self._r.stop_listeners:
            listener(stop, model)

    def stop_ends(self, stop: Stop, model: str) -> None:
        r = self._r
        if r.registry.stopped(stop.key, model, stop.reason, r._live):
            r.leases.forget(stop.key)

    def forget(self, key: str) -> None:
        self._r._forget(key)

    def waits(self, key: str, reason: str) -> None:
        self._r.demands.note_wait(key, reason)

    def refused(self, key: str, reason: str) -> None:
        self._r.demands.refuse(key, reason)

    def changed(self) -> None:
        self._r.trigger()


def load_output(lines: list[LogLine]) -> list[str]:
    """What the process printed since its last start (the ring also holds earlier runs)."""
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index]
        if line.stream == "llamasup" and line.text.startswith("[llamasup] started pid"):
            return [line.text for line in lines[index + 1 :]]
    return [line.text for line in lines]
