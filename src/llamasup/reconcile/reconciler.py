"""The reconciler: coalesced triggers → observe → plan → execute, one pass at a time.

Level-triggered: every pass reads the whole world (profiles, demands, sidecars) and asks the
pure planner what to do; any trigger (a profile reload, a demand, a sidecar event, an idle-TTL
timer) marks it dirty, and a trigger that arrives during a pass causes exactly one more pass,
never a lost one.

It is also the ``SidecarPool`` the proxy leases sidecars from: a lease registers demand, waits
for the planner to start the sidecar and for it to become ready, and counts the request as in
flight until it ends, so nothing evicts a sidecar mid-request.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from llamasup.errors import (
    CapacityError,
    LlamasupError,
    ResolveError,
    SidecarError,
    SidecarStartError,
)
from llamasup.flags.flagset import parse_header
from llamasup.memory.cache import MemoryEstimates
from llamasup.planner.plan import Have, Limits, Plan, Stop, Want, plan
from llamasup.planner.types import StopReason
from llamasup.profiles.load import Profiles
from llamasup.reconcile.demand import DemandBook
from llamasup.reconcile.executor import Executor
from llamasup.reconcile.history import PassRecord, ReconcileStatus
from llamasup.reconcile.pool import Origin
from llamasup.sidecars.supervisor import SupervisedStatus, Supervisor, SupervisorEvent
from llamasup.sidecars.types import SidecarState
from llamasup.spec.resolve import Resolver, SidecarSpec, missing_model_file

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True)
class Lease:
    key: str
    host: str
    port: int
    #: the sidecar's credentials, for every request sent to it
    headers: tuple[tuple[bytes, bytes], ...] = ()


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
        self._resolver = Resolver(profiles)
        self._memory = memory or MemoryEstimates()
        self._specs: dict[str, SidecarSpec] = {}
        self._origins: dict[str, Origin] = {}
        self._agents: dict[str, set[str]] = {}
        self.demands = DemandBook(clock)
        self._in_flight: dict[str, int] = {}
        self._last_used: dict[str, float] = {}
        #: keys started by a plan and not yet ready (their idle time starts at READY)
        self._fresh: set[str] = set()
        self._tombstones: dict[str, Have] = {}
        self._executor = Executor(self, supervisor)
        self._dirty = asyncio.Event()
        self._pass_lock = asyncio.Lock()
        self._wake: asyncio.TimerHandle | None = None
        self._wake_at: float | None = None
        self.status = ReconcileStatus()
        #: told every stop of a running sidecar as it begins, planned or an unload (metrics)
        self.stop_listeners: list[Callable[[Stop], None]] = []
        self._unsubscribe = supervisor.subscribe(self._on_supervisor_event)

    # -- what the rest of llamasup sees ------------------------------------------------------

    @property
    def resolver(self) -> Resolver:
        return self._resolver

    @property
    def profiles(self) -> Profiles:
        return self._resolver.profiles

    def set_profiles(self, profiles: Profiles) -> None:
        """Adopt a new valid profile set; sidecars whose key changed will be replaced."""
        self._resolver = Resolver(profiles)
        for key, origin in list(self._origins.items()):
            spec = self._resolve_origin(origin)
            if spec is not None and spec.key == key:
                # same process, maybe new settings (memory, pinned, ttl, group): keep them
                self._specs[key] = spec
                self._memory.request(spec, on_ready=self.trigger)
                continue
            self._origins.pop(key, None)
            if key not in self._live_keys():
                self._specs.pop(key, None)
        self.trigger()

    def trigger(self) -> None:
        """Ask for a pass; any number of triggers before it starts coalesce into one."""
        self._dirty.set()

    def draining(self, key: str) -> bool:
        """Whether ``key`` is being stopped: new requests go elsewhere, its own finish first."""
        return self._executor.closing(key)

    def in_flight(self, key: str) -> int:
        return self._in_flight.get(key, 0)

    def last_used(self, key: str) -> float | None:
        return self._last_used.get(key)

    def state(self, key: str) -> str | None:
        sidecar = self.supervisor.get(key)
        if sidecar is not None:
            return str(sidecar.state)
        tomb = self._tombstones.get(key)
        return None if tomb is None else tomb.state

    def memory_estimate(self, spec: SidecarSpec) -> int | None:
        return self._memory.get(spec)

    def spec_for(self, key: str) -> SidecarSpec | None:
        return self._specs.get(key)

    def remember(self, spec: SidecarSpec, origin: Origin) -> None:
        """Record a spec a request resolved to, so the planner can want and start it."""
        # the latest spec: settings outside the key may have changed (a dropped memory
        # override then needs an estimate; request() is a no-op when known or under way)
        self._memory.request(spec, on_ready=self.trigger)
        self._specs[spec.key] = spec
        self._origins.setdefault(spec.key, origin)
        if origin.agent is not None:
            self._agents.setdefault(spec.key, set()).add(origin.agent)

    def agents(self, key: str) -> list[str]:
        """The agents whose requests resolved to ``key`` (sorted)."""
        return sorted(self._agents.get(key, ()))

    def tombstones(self) -> list[Have]:
        """Stopped preload sidecars the planner leaves stopped until demanded."""
        return list(self._tombstones.values())

    def waiting_keys(self) -> list[str]:
        return self.demands.keys()

    @contextlib.asynccontextmanager
    async def lease(
        self,
        spec: SidecarSpec,
        *,
        timeout: float,  # noqa: ASYNC109 - the pool contract: a wait budget, checked per step
        origin: Origin | None = None,
    ) -> AsyncIterator[Lease]:
        """A ready sidecar for ``spec``, held in flight for the duration of the block."""
        self.remember(spec, origin or Origin(spec.model, None))
        key = spec.key
        if not self._usable(key):
            missing = missing_model_file(spec)
            if missing is not None:
                # refused before it becomes a demand: a start that cannot succeed must not
                # evict a sidecar that works
                raise SidecarStartError(f"{spec.model}: {missing}", None, ())
            await self._wait_until_ready(spec, timeout)
        sidecar = self.supervisor.get(key)
        port = sidecar.port if sidecar is not None else None
        if sidecar is None or port is None:  # pragma: no cover - guarded by _usable
            raise SidecarError(f"{spec.model}: sidecar {key} went away before the request")
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            yield Lease(key, self.supervisor.settings.host, port, sidecar.auth_headers)
        finally:
            # the count is per key and outlives a sidecar stopped under it (a drain that ran
            # past stop_grace): a lease of the key's next sidecar is counted on top, and this
            # one ending takes away only its own request
            remaining = max(self._in_flight.get(key, 0) - 1, 0)
            self._last_used[key] = self._clock()
            if remaining:
                self._in_flight[key] = remaining
            else:
                self._in_flight.pop(key, None)
                self._executor.idle(key)
                ttl = spec.ttl
                if ttl:  # idle from now on: a pass must come when it expires, even if
                    # nothing else happens (the pass that started it saw it demanded)
                    self._wake_by(self._last_used[key] + ttl)
                if self.demands.keys() or self._over_limits():
                    # a waiting demand may have been held back by this busy sidecar (a Wait),
                    # or a lowered limit left it running because it was busy: now that it is
                    # idle the planner can evict it, so ask for a pass
                    self.trigger()

    def _over_limits(self) -> bool:
        last = self.status.last
        return last is not None and any(n.startswith("over the limits") for n in last.plan.notes)

    def _usable(self, key: str) -> bool:
        sidecar = self.supervisor.get(key)
        return (
            sidecar is not None
            and sidecar.state is SidecarState.READY
            and not self._executor.closing(key)
        )

    async def _wait_until_ready(self, spec: SidecarSpec, budget: float) -> None:
        key = spec.key
        deadline = asyncio.get_running_loop().time() + budget
        with self.demands.waiting(key) as demand:
            self.trigger()
            while not self._usable(key):
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{spec.model}: sidecar not ready within {budget:g}s "
                        f"({demand.reason or self.state(key) or 'waiting to start'})"
                    )
                if demand.refused is not None:
                    raise CapacityError(demand.refused)
                sidecar = self.supervisor.get(key)
                if sidecar is not None and not self._executor.closing(key):
                    await asyncio.wait_for(sidecar.ensure_ready(), remaining)
                else:
                    await demand.changed(remaining)

    async def unload(self, key: str, detail: str = "unloaded by an operator") -> bool:
        """Stop one sidecar now (after its in-flight requests, bounded by ``stop_grace``).

        A pinned model's sidecar comes back on the next pass; a preload one stays stopped
        until a request asks for it; anything else is forgotten. False: nothing to stop.
        """
        return await self._executor.stop_now(key, "unloaded", detail)

    # -- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Pass whenever dirty, forever (cancel to stop)."""
        try:
            while True:
                await self._dirty.wait()
                self._dirty.clear()
                await self.reconcile_once()
        finally:
            self._unsubscribe()
            if self._wake is not None:
                self._wake.cancel()

    async def reconcile_once(self) -> Plan:
        """One pass now (the loop's passes and an apply's pass never overlap)."""
        async with self._pass_lock:
            return await self._pass()

    async def _pass(self) -> Plan:
        started = self._clock()
        began = time.perf_counter()
        decided = self.plan_now()
        if decided.actions:
            logger.info("plan: %s", "; ".join(_describe(a) for a in decided.actions))
        error: str | None = None
        try:
            await self._executor.execute(decided)
        except Exception as exc:  # one bad pass must not stop the loop
            logger.exception("executing the plan failed")
            error = f"{type(exc).__name__}: {exc}"
        self._schedule_wake(decided.wake_at)
        self.status.record(PassRecord(started, time.perf_counter() - began, decided, error))
        return decided

    def plan_now(self) -> Plan:
        """The plan for this pass (records the specs of the profile's models)."""
        return plan(
            self._wants(self._resolver), self._haves(), self._limits(self.profiles), self._clock()
        )

    def preview(self, profiles: Profiles | None = None) -> Plan:
        """What a pass would do now under ``profiles`` (default: the current ones).

        Changes nothing: ``GET /api/plan`` and dry-run applies use it.
        """
        resolver = self._resolver if profiles is None else Resolver(profiles)
        wants = self._wants(resolver, record=False)
        haves = self._haves()
        if profiles is not None:
            # a running sidecar whose key holds takes the candidate's settings (what
            # set_profiles would give it), so a raised memory override shows its evictions
            fresh = {want.key: want for want in wants}
            haves = [
                dataclasses.replace(
                    have,
                    memory=fresh[have.key].memory,
                    pinned=fresh[have.key].pinned,
                    group=fresh[have.key].group,
                )
                if have.key in fresh and have.state != "stopped"
                else have
                for have in haves
            ]
        return plan(wants, haves, self._limits(resolver.profiles), self._clock())

    def desired_keys(self, profiles: Profiles) -> dict[str, str]:
        """Model id -> the key of its profile sidecar (no agent) under ``profiles``."""
        resolver = Resolver(profiles)
        keys: dict[str, str] = {}
        for model in profiles.models.values():
            with contextlib.suppress(ResolveError):
                keys[model.id] = resolver.resolve(model.id).spec.key
        return keys

    def _schedule_wake(self, wake_at: float | None) -> None:
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        self._wake_at = wake_at
        if wake_at is not None:
            delay = max(0.0, wake_at - self._clock()) + 0.01
            self._wake = asyncio.get_running_loop().call_later(delay, self.trigger)

    def _wake_by(self, at: float) -> None:
        """Make sure a pass runs at ``at`` (keeps an earlier wake-up)."""
        if self._wake_at is None or at < self._wake_at:
            self._schedule_wake(at)

    def _on_supervisor_event(self, event: SupervisorEvent) -> None:
        if event.status.state is SidecarState.READY:
            if event.key in self._fresh:
                self._fresh.discard(event.key)
                self._last_used[event.key] = self._clock()
            else:  # ready again after a restart: idle since its last request
                self._last_used.setdefault(event.key, self._clock())
        self.demands.notify(event.key)
        self.trigger()

    # -- observe ---------------------------------------------------------------------------

    def _limits(self, profiles: Profiles) -> Limits:
        groups = {name: group.max_running for name, group in profiles.groups.items()}
        return Limits(profiles.server.max_sidecars, profiles.server.memory_budget, groups)

    def _wants(self, resolver: Resolver, *, record: bool = True) -> list[Want]:
        """The desired set under ``resolver``'s profiles; ``record`` False changes nothing."""
        wants: dict[str, Want] = {}
        profiles = resolver.profiles
        for model in profiles.models.values():
            try:
                spec = resolver.resolve(model.id).spec
            except ResolveError as exc:
                logger.warning("model %s does not resolve: %s", model.id, exc)
                continue
            if record:
                self.remember(spec, Origin(model.id, None))
            wants[spec.key] = self._want(spec, profiles, pinned=model.pinned, preload=model.preload)
        for key, origin in self._origins.items():
            if key in wants:
                continue
            fresh = self._resolve_origin(origin, resolver)
            if fresh is None or fresh.key != key:
                continue
            wants[key] = self._want(fresh, profiles, pinned=False, preload=False)
        return list(wants.values())

    def _want(self, spec: SidecarSpec, profiles: Profiles, *, pinned: bool, preload: bool) -> Want:
        # under a memory budget, nothing starts before its estimate is known (a header read,
        # tens of ms; its arrival triggers a pass): a demand waits, a pinned or preload model
        # not yet running is not a start candidate for this pass
        held = profiles.server.memory_budget is not None and self._memory.pending(spec)
        if held and self.supervisor.get(spec.key) is None:
            pinned = preload = False
        return Want(
            key=spec.key,
            model=spec.model,
            memory=self._memory.get(spec),
            pinned=pinned,
            preload=preload,
            ttl=None if pinned else spec.ttl,
            group=spec.group,
            demand=None if held else self.demands.planner_demand(spec.key),
        )

    def _resolve_origin(
        self, origin: Origin, resolver: Resolver | None = None
    ) -> SidecarSpec | None:
        resolver = resolver or self._resolver
        try:
            extra = None
            if origin.extra:
                allow = resolver.profiles.server.agent_flags_allow_load
                extra = parse_header(" ".join(origin.extra), allow_load=allow)
            return resolver.resolve(origin.model, origin.agent, extra=extra).spec
        except LlamasupError:
            return None

    def _haves(self) -> list[Have]:
        haves: dict[str, Have] = dict(self._tombstones)
        for status in self.supervisor.statuses():
            haves[status.key] = self._have(status)
        for key, model in self._executor.closing_models().items():
            # its process is still exiting: it holds its room until gone (over a tombstone)
            if key not in haves or haves[key].state == "stopped":
                spec = self._specs.get(key)
                haves[key] = Have(
                    key=key,
                    model=model,
                    state="stopping",
                    memory=None if spec is None else self._memory.get(spec),
                    pinned=False if spec is None else spec.pinned,
                    group=None if spec is None else spec.group,
                )
        return list(haves.values())

    def _have(self, status: SupervisedStatus) -> Have:
        key = status.key
        spec = self._specs.get(key)
        state = status.sidecar.state
        if self._executor.closing(key) or state is SidecarState.STOPPING:
            planner_state = "stopping"
        elif state is SidecarState.READY:
            planner_state = "ready"
        elif state is SidecarState.FAILED:
            planner_state = "failed" if status.gave_up else "backoff"
        else:
            planner_state = "starting"
        return Have(
            key=key,
            model=status.sidecar.model,
            state=planner_state,  # type: ignore[arg-type]
            in_flight=self._in_flight.get(key, 0),
            last_used=self._last_used.get(key, status.sidecar.ready_at or 0.0),
            memory=None if spec is None else self._memory.get(spec),
            pinned=False if spec is None else spec.pinned,
            group=None if spec is None else spec.group,
            failure=status.sidecar.last_error or "" if status.gave_up else "",
        )

    def _live_keys(self) -> set[str]:
        return set(self.supervisor.keys()) | set(self.demands.keys())

    # -- bookkeeping the executor asks for -------------------------------------------------

    def _keeps_record(self, key: str, reason: StopReason) -> bool:
        """A preload sidecar stopped while still wanted (evicted, idled out, unloaded) keeps a
        ``stopped`` record, so the planner leaves it stopped until demanded. One whose key
        left the profiles (``removed``/``changed``) has nothing to remember."""
        spec = self._specs.get(key)
        return spec is not None and spec.preload and reason not in ("removed", "changed")

    def note_stopping(self, key: str, model: str, reason: StopReason) -> None:
        """A sidecar is about to stop: the supervisor forgets it at once, but its process takes
        a while to exit. A preload sidecar is recorded as stopped now, or a pass in between
        sees a preload with no sidecar and starts it again."""
        if self._keeps_record(key, reason):
            self._tombstones[key] = Have(key=key, model=model, state="stopped")

    def note_stopped(self, key: str, model: str, reason: StopReason) -> None:
        """A sidecar the plan stopped: a preload one still wanted keeps its record (see
        ``_keeps_record``); anything else is forgotten and comes back when asked for."""
        if self._keeps_record(key, reason):
            self._tombstones[key] = Have(key=key, model=model, state="stopped")
            return
        self._origins.pop(key, None)
        self.forget(key)

    def forget(self, key: str) -> None:
        self._tombstones.pop(key, None)
        if key not in self._origins and key not in self._live_keys():
            self._specs.pop(key, None)
            self._last_used.pop(key, None)
            self._fresh.discard(key)
            self._agents.pop(key, None)

    def refuse(self, key: str, reason: str) -> None:
        self.demands.refuse(key, reason)

    def started(self, key: str) -> None:
        self._tombstones.pop(key, None)
        # a new process starts its idle time when it is ready, whatever an earlier sidecar of
        # the key (or a lease that outlived it, even one ending while this one loads) left
        self._fresh.add(key)
        self.demands.notify(key)


def _describe(action: object) -> str:
    name = type(action).__name__.lower()
    key = getattr(action, "key", "?")
    reason = getattr(action, "reason", "")
    return f"{name} {key} ({reason})"
