"""The planner's inputs, built in one place: what the profiles want, what is running, limits.

Reads the registry (specs, names, stopped records), the leases (in flight, last use), the
demand book, the supervisor's processes and the executor's stops under way; decides nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from llamasup.errors import ResolveError
from llamasup.planner.types import Have, HaveState, Limits, Scheduling, Want
from llamasup.profiles.types import Profiles
from llamasup.reconcile.demand import DemandBook
from llamasup.reconcile.leases import Leases
from llamasup.reconcile.pool import Origin
from llamasup.reconcile.registry import Registry
from llamasup.sidecars.supervisor import SupervisedStatus, Supervisor
from llamasup.sidecars.types import SidecarState
from llamasup.spec.resolve import Resolver, SidecarSpec

logger = logging.getLogger(__name__)


def limits_of(profiles: Profiles) -> Limits:
    server = profiles.server
    groups = {name: group.max_running for name, group in profiles.groups.items()}
    config = server.scheduling
    scheduling = Scheduling(
        max_wait=config.max_wait, min_resident=config.min_resident, aging=config.aging_step
    )
    return Limits(
        server.max_sidecars,
        server.memory_budget,
        groups,
        scheduling,
        exclusive=frozenset(name for name, g in profiles.groups.items() if g.exclusive),
        persistent=frozenset(name for name, g in profiles.groups.items() if g.persistent),
        device_budgets=dict(server.device_budgets),
    )


class PlanInputs:
    def __init__(
        self,
        registry: Registry,
        leases: Leases,
        demands: DemandBook,
        supervisor: Supervisor,
        *,
        closing: Callable[[str], bool],
        closing_models: Callable[[], Mapping[str, str]],
    ) -> None:
        self._registry = registry
        self._leases = leases
        self._demands = demands
        self._supervisor = supervisor
        self._closing = closing
        self._closing_models = closing_models

    def wants(self, resolver: Resolver, *, record: bool = True) -> list[Want]:
        """The desired set under ``resolver``'s profiles; ``record`` False changes nothing."""
        registry = self._registry
        wants: dict[str, Want] = {}
        profiles = resolver.profiles
        for model in profiles.models.values():
            try:
                spec = resolver.resolve(model.id).spec
            except ResolveError as exc:
                logger.warning("model %s does not resolve: %s", model.id, exc)
                continue
            if record:
                registry.remember(spec, Origin(model.id, None))
            wants[spec.key] = self._want(spec, profiles, pinned=model.pinned, preload=model.preload)
        for key, origin in registry.origins():
            if key in wants:
                continue
            fresh = registry.resolve_origin(origin, resolver)
            if fresh is None or fresh.key != key:
                continue
            wants[key] = self._want(
                fresh, profiles, pinned=False, preload=False, transient=bool(origin.extra)
            )
        return list(wants.values())

    def _want(
        self,
        spec: SidecarSpec,
        profiles: Profiles,
        *,
        pinned: bool,
        preload: bool,
        transient: bool = False,
    ) -> Want:
        # under a memory budget, nothing starts before its estimate is known (a header read,
        # tens of ms; its arrival triggers a pass): a demand waits, a pinned or preload model
        # not yet running is not a start candidate for this pass
        registry = self._registry
        held = profiles.server.budgeted and registry.memory_pending(spec)
        if held and self._supervisor.get(spec.key) is None:
            pinned = preload = False
        return Want(
            key=spec.key,
            model=spec.model,
            memory=registry.memory_estimate(spec),
            devices=registry.memory_split(spec),
            pinned=pinned,
            preload=preload,
            ttl=None if pinned else spec.ttl,
            group=spec.group,
            demand=None if held else self._demands.planner_demand(spec.key),
            priority=spec.priority,
            transient=transient,
        )

    def haves(self) -> list[Have]:
        registry = self._registry
        haves: dict[str, Have] = {have.key: have for have in registry.tombstones()}
        for status in self._supervisor.statuses():
            haves[status.key] = self._have(status)
        for key, model in self._closing_models().items():
            # its process is still exiting: it holds its room until gone (over a tombstone)
            if key not in haves or haves[key].state == "stopped":
                spec = registry.spec_for(key)
                haves[key] = Have(
                    key=key,
                    model=model,
                    state="stopping",
                    memory=None if spec is None else registry.memory_estimate(spec),
                    devices=None if spec is None else registry.memory_split(spec),
                    pinned=False if spec is None else spec.pinned,
                    group=None if spec is None else spec.group,
                )
        return list(haves.values())

    def _have(self, status: SupervisedStatus) -> Have:
        key = status.key
        spec = self._registry.spec_for(key)
        last_used = self._leases.last_used(key)
        sidecar = status.sidecar
        ready = sidecar.state is SidecarState.READY
        return Have(
            key=key,
            model=status.sidecar.model,
            state=self._planner_state(status),
            in_flight=self._leases.in_flight(key),
            last_used=last_used if last_used is not None else status.sidecar.ready_at or 0.0,
            memory=None if spec is None else self._registry.memory_estimate(spec),
            devices=None if spec is None else self._registry.memory_split(spec),
            pinned=False if spec is None else spec.pinned,
            group=None if spec is None else spec.group,
            failure=status.sidecar.last_error or "" if status.gave_up else "",
            ready_at=sidecar.ready_at if ready else None,
            load_time=status.load_time,
            keep_until=self._leases.keep_until(key),
        )

    def _planner_state(self, status: SupervisedStatus) -> HaveState:
        state = status.sidecar.state
        if self._closing(status.key) or state is SidecarState.STOPPING:
            return "stopping"
        if state is SidecarState.READY:
            return "ready"
        if state is SidecarState.FAILED:
            return "failed" if status.gave_up else "backoff"
        return "starting"
