"""Leases: a ready sidecar handed to a request, counted in flight until the request ends.

A lease registers demand for its key, waits for the planner to start the sidecar and for it to
become ready, and counts the request as in flight while it runs, so nothing evicts a sidecar
mid-request. A sidecar being drained (stopped after its requests) admits no new lease: those
requests wait as demand for their key like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from llamasup.errors import CapacityError, SidecarError, SidecarStartError
from llamasup.reconcile.demand import DemandBook
from llamasup.reconcile.pool import DEFAULT_TERMS, Terms
from llamasup.sidecars.supervisor import Supervisor
from llamasup.sidecars.types import SidecarState
from llamasup.spec.resolve import SidecarSpec, missing_model_file

Clock = Callable[[], float]


@dataclass(frozen=True)
class Lease:
    key: str
    host: str
    port: int
    #: the sidecar's credentials, for every request sent to it
    headers: tuple[tuple[bytes, bytes], ...] = ()


class Leases:
    def __init__(
        self,
        supervisor: Supervisor,
        demands: DemandBook,
        clock: Clock,
        *,
        closing: Callable[[str], bool],
        state: Callable[[str], str | None],
        wanted: Callable[[], None],
        released: Callable[[SidecarSpec], None],
    ) -> None:
        self._supervisor = supervisor
        self.demands = demands
        self._clock = clock
        #: whether a key is being stopped (the executor knows)
        self._closing = closing
        #: the key's state as status shows it, for a timeout's message
        self._state = state
        #: asks for a reconcile pass
        self._wanted = wanted
        #: told when a key's last request in flight ended
        self._released = released
        self._in_flight: dict[str, int] = {}
        self._last_used: dict[str, float] = {}
        #: keys started by a plan and not yet ready (their idle time starts at READY)
        self._fresh: set[str] = set()
        #: until when a request asked a key's sidecar to stay loaded (``keep_alive``)
        self._keep_until: dict[str, float] = {}

    def in_flight(self, key: str) -> int:
        return self._in_flight.get(key, 0)

    def last_used(self, key: str) -> float | None:
        return self._last_used.get(key)

    def keep_until(self, key: str) -> float | None:
        return self._keep_until.get(key)

    def usable(self, key: str) -> bool:
        """Ready and not being drained: a new request may be sent to it now."""
        sidecar = self._supervisor.get(key)
        return (
            sidecar is not None and sidecar.state is SidecarState.READY and not self._closing(key)
        )

    # -- what the sidecar's life tells the leases -------------------------------------------

    def started(self, key: str) -> None:
        # a keep_alive was asked of the process that ran before, not of this one
        self._keep_until.pop(key, None)
        # a new process starts its idle time when it is ready, whatever an earlier sidecar of
        # the key (or a lease that outlived it, even one ending while this one loads) left
        self._fresh.add(key)
        self.demands.notify(key)

    def ready(self, key: str) -> None:
        if key in self._fresh:
            self._fresh.discard(key)
            self._last_used[key] = self._clock()
        else:  # ready again after a restart: idle since its last request
            self._last_used.setdefault(key, self._clock())

    def adopted(self, key: str, last_used: float | None) -> None:
        """A sidecar taken over from the llamasup before: it was last used then (its idle
        time goes on, it does not start again at adoption)."""
        if last_used is not None:
            self._last_used[key] = last_used

    def forget(self, key: str) -> None:
        self._last_used.pop(key, None)
        self._fresh.discard(key)
        self._keep_until.pop(key, None)

    # -- the lease -----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lease(
        self,
        spec: SidecarSpec,
        timeout: float,  # noqa: ASYNC109 - a wait budget, checked per step
        terms: Terms = DEFAULT_TERMS,
    ) -> AsyncIterator[Lease]:
        """A ready sidecar for ``spec``, held in flight for the duration of the block."""
        key = spec.key
        if not self.usable(key):
            missing = missing_model_file(spec)
            if missing is not None:
                # refused before it becomes a demand: a start that cannot succeed must not
                # evict a sidecar that works
                raise SidecarStartError(f"{spec.model}: {missing}", None, ())
            await self._wait_until_ready(spec, timeout, terms.priority)
        sidecar = self._supervisor.get(key)
        port = sidecar.port if sidecar is not None else None
        if sidecar is None or port is None:  # pragma: no cover - guarded by usable()
            raise SidecarError(f"{spec.model}: sidecar {key} went away before the request")
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            yield Lease(key, self._supervisor.settings.host, port, sidecar.auth_headers)
        finally:
            # the count is per key and outlives a sidecar stopped under it (a drain that ran
            # past stop_grace): a lease of the key's next sidecar is counted on top, and this
            # one ending takes away only its own request
            remaining = max(self._in_flight.get(key, 0) - 1, 0)
            now = self._last_used[key] = self._clock()
            if terms.keep_alive is not None:
                # the latest request that asked says how long the sidecar stays once idle
                self._keep_until[key] = now + terms.keep_alive
            if remaining:
                self._in_flight[key] = remaining
            else:
                self._in_flight.pop(key, None)
                self._released(spec)

    async def _wait_until_ready(self, spec: SidecarSpec, budget: float, priority: int) -> None:
        key = spec.key
        deadline = asyncio.get_running_loop().time() + budget
        with self.demands.waiting(key, priority) as demand:
            self._wanted()
            while not self.usable(key):
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{spec.model}: sidecar not ready within {budget:g}s "
                        f"({demand.reason or self._state(key) or 'waiting to start'})"
                    )
                if demand.refused is not None:
                    raise CapacityError(demand.refused)
                sidecar = self._supervisor.get(key)
                if sidecar is not None and not self._closing(key):
                    await asyncio.wait_for(sidecar.ensure_ready(), remaining)
                else:
                    await demand.changed(remaining)
