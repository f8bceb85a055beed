"""``Supervisor``: the set of desired sidecars, and what happens when one of them fails.

A sidecar is in the supervisor from ``start(spec)`` until ``stop(key)``: that is the
desired set as the planner last decided it. The planner's Start/Stop actions map one to one
onto ``start`` and ``stop`` (a thin ``execute()`` calls them); the reconciler learns about
exits, failures and readiness through ``subscribe``.

Restart policy (see ``restart.py``): when a desired sidecar fails to start, crashes or
turns unhealthy, it is restarted after an exponential backoff with jitter; after
``start_limit`` failures within ``start_window`` it is given up on (state failed, reason
kept) until ``reset(key)`` or a spec change, which comes in under a new key. The policy is
enforced by the sidecar's start gate, so an on-demand ``ensure_ready()`` from the proxy
obeys it too: it waits out the backoff, or gets SidecarFailedError.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from llamasup.errors import SidecarFailedError
from llamasup.planner.restart import RestartDecision, RestartPolicy, RestartTracker
from llamasup.profiles.types import ServerConfig
from llamasup.runtime.locate import resolve_binary
from llamasup.sidecars.adopted import AdoptedRun
from llamasup.sidecars.exitwatch import reap
from llamasup.sidecars.handover import ProcessHandle
from llamasup.sidecars.orphans import Orphan, find_leftovers, kill_tree, reap_orphans
from llamasup.sidecars.ports import PortAllocator
from llamasup.sidecars.procfs import stat
from llamasup.sidecars.proclog import ProcessLog
from llamasup.sidecars.sidecar import Sidecar
from llamasup.sidecars.types import (
    Drain,
    SidecarEvent,
    SidecarEventKind,
    SidecarSettings,
    SidecarState,
    SidecarStatus,
    StartGate,
)
from llamasup.spec.resolve import SidecarSpec

logger = logging.getLogger(__name__)

_FAILURES = frozenset(
    {SidecarEventKind.START_FAILED, SidecarEventKind.EXITED, SidecarEventKind.UNHEALTHY}
)


@dataclass(frozen=True)
class SupervisedStatus:
    """A sidecar's own status plus what the restart policy thinks of it."""

    sidecar: SidecarStatus
    failures: int  # failures within the start window
    gave_up: bool  # start limit reached: no retry until reset or spec change
    retry_in: float | None  # seconds until the scheduled restart, if one is scheduled

    @property
    def key(self) -> str:
        return self.sidecar.key

    @property
    def load_time(self) -> float | None:
        """Spawn to ready of the current run (None until it is ready)."""
        started, ready = self.sidecar.started_at, self.sidecar.ready_at
        return None if started is None or ready is None else max(0.0, ready - started)

    def as_dict(self) -> dict[str, object]:
        data = self.sidecar.as_dict()
        data.update(failures=self.failures, gave_up=self.gave_up, retry_in=self.retry_in)
        return data


@dataclass(frozen=True)
class SupervisorEvent:
    """What the reconciler hears: a sidecar event and the policy's reaction to it."""

    key: str
    kind: SidecarEventKind
    status: SidecarStatus
    decision: RestartDecision | None  # set for failures of a desired sidecar
    event: SidecarEvent


Listener = Callable[[SupervisorEvent], None]
BinaryResolver = Callable[[SidecarSpec], str]


def default_binary(spec: SidecarSpec) -> str:
    """A ``command:`` runs its own first word; llama-server goes through runtime resolution.

    Raises RuntimeNotFoundError when there is no usable llama-server.
    """
    if spec.kind == "command":
        return spec.binary
    return str(resolve_binary(spec.binary or None, os.environ).path)


class _Entry:
    def __init__(self, sidecar: Sidecar, tracker: RestartTracker) -> None:
        self.sidecar = sidecar
        self.tracker = tracker
        self.retry_task: asyncio.Task[None] | None = None

    def cancel_retry(self) -> None:
        if self.retry_task is not None:
            self.retry_task.cancel()
            self.retry_task = None


class Supervisor:
    """Owns every sidecar of one llamasup; lives on the event-loop thread."""

    def __init__(
        self,
        settings: SidecarSettings,
        *,
        policy: RestartPolicy | None = None,
        resolve_binary: BinaryResolver | None = None,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.policy = policy or RestartPolicy()
        self.ports = PortAllocator(*settings.port_range, host=settings.host)
        self._resolve_binary = resolve_binary or default_binary
        self._jitter = jitter
        self._clock = clock
        self._base_env = base_env
        self._entries: dict[str, _Entry] = {}
        self._listeners: list[Listener] = []
        #: between a hand-over and the exec: failures are not restarted
        self._handing_over = False

    @classmethod
    def for_server(cls, server: ServerConfig) -> Supervisor:
        """A supervisor with the sidecar settings and restart policy of a profile's ``server``."""
        restart = server.restart
        policy = RestartPolicy(
            backoff_initial=restart.backoff,
            backoff_max=max(restart.backoff, restart.backoff_max),
            start_limit=restart.max_failures,
            start_window=restart.window,
        )
        return cls(SidecarSettings.from_server(server), policy=policy)

    def reap_orphans(self, keep: frozenset[int] = frozenset()) -> list[Orphan]:
        """Kill what sidecars of a llamasup that died before us left running (see
        :mod:`llamasup.sidecars.orphans`); call once, after adopting and before starting any
        sidecar. ``keep``: adopted pids (their groups and sessions are spared too)."""
        return reap_orphans(self.settings.state_dir, keep=keep)

    async def stop_leftovers(self, keep: frozenset[int], timeout: float = 5.0) -> list[Orphan]:  # noqa: ASYNC109
        """Kill sidecar processes of this very llamasup that it did not adopt after a re-exec
        (their hand-over record was lost or unreadable), and reap them."""
        leftovers = find_leftovers(self.settings.state_dir, keep)
        for leftover in leftovers:
            logger.warning(
                "stopping pid %d (%s): a sidecar of this llamasup before it restarted, not adopted",
                leftover.pid,
                leftover.argv,
            )
            kill_tree(leftover.pid)
        deadline = asyncio.get_running_loop().time() + timeout
        waiting = {leftover.pid for leftover in leftovers}
        while waiting and asyncio.get_running_loop().time() < deadline:
            for pid in list(waiting):
                if reap(pid) is not None or not _is_child(pid):
                    waiting.discard(pid)
            if waiting:
                await asyncio.sleep(0.01)
        return leftovers

    # -- the planner's actions -----------------------------------------------------------

    def start(self, spec: SidecarSpec) -> Sidecar:
        """Make ``spec`` desired and begin starting it; returns at once (idempotent).

        Await ``sidecar.ensure_ready()`` on the result to wait for readiness. A key that hit
        its start limit is left alone until ``reset``. The binary is resolved at each launch;
        none found is a start failure like any other (status, backoff, start limit).
        """
        entry = self._entries.get(spec.key) or self._new_entry(spec)
        if not entry.tracker.gave_up and entry.retry_task is None:
            entry.sidecar.start()
        return entry.sidecar

    def _new_entry(self, spec: SidecarSpec) -> _Entry:
        tracker = RestartTracker(self.policy)
        sidecar = Sidecar(
            spec,
            lambda: self._resolve_binary(spec),
            self.settings,
            self.ports,
            on_event=self._on_sidecar_event,
            start_gate=self._gate_for(tracker, spec),
            base_env=self._base_env,
        )
        entry = self._entries[spec.key] = _Entry(sidecar, tracker)
        return entry

    # -- a planned restart -----------------------------------------------------------------

    async def adopt(
        self, spec: SidecarSpec, handle: ProcessHandle, *, adopted_from: int
    ) -> Sidecar:
        """Make ``spec`` desired with the ready process ``handle`` as its run (handed over by
        the llamasup before this one, and found fit by ``handover.inspect``)."""
        if spec.key in self._entries:
            raise ValueError(f"sidecar {spec.key} ({spec.model}) is already supervised")
        entry = self._new_entry(spec)
        try:
            await entry.sidecar.adopt(handle, adopted_from=adopted_from)
        except BaseException:
            self._entries.pop(spec.key, None)
            raise
        return entry.sidecar

    async def dismiss(
        self, key: str, handle: ProcessHandle, *, reason: str, child: bool = True
    ) -> None:
        """Stop a handed-over process that is not adopted (ours, but no longer wanted or not
        fit): SIGTERM to its group, ``stop_grace``, SIGKILL, reaped; its last words go to its
        log file. ``child`` False: not our child (its llamasup died), so it is only killed."""
        log = ProcessLog(
            self.settings.log_dir / f"{key}.log",
            ring_lines=self.settings.log_ring_lines,
            max_file_bytes=self.settings.log_file_max_bytes,
            backups=self.settings.log_file_backups,
        )
        try:
            log.note(f"not adopted after a restart: {reason}; stopping pid {handle.pid}")
            if not child:
                handle.close_pipes()
                kill_tree(handle.pid)
                return
            run = await AdoptedRun.attach(
                handle.port, log, handle.pid, handle.pipes, handle.partial
            )
            await run.terminate(self.settings.stop_grace)
            log.note(f"pid {handle.pid} exited with code {run.returncode}")
        finally:
            log.close()

    def hand_over(self) -> dict[str, ProcessHandle]:
        """Detach every ready sidecar for the next llamasup image (see ``Sidecar.detach``);
        from now on failures are not restarted. Sidecars that are not ready are not handed
        over: stop them (``stop``) before the exec."""
        self._handing_over = True
        handles: dict[str, ProcessHandle] = {}
        for key, entry in self._entries.items():
            entry.cancel_retry()
            handle = entry.sidecar.detach()
            if handle is not None:
                handles[key] = handle
        return handles

    def resume(self) -> None:
        """The exec did not happen: back to supervising everything as before."""
        self._handing_over = False
        for entry in self._entries.values():
            entry.sidecar.resume()

    async def stop(
        self, key: str, *, reason: str, grace: float | None = None, drain: Drain | None = None
    ) -> None:
        """No longer desired: stop the process and forget the key (unknown key: no-op)."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        entry.cancel_retry()
        if drain is not None:
            await entry.sidecar.stop(reason=reason, grace=grace, drain=drain)
        await entry.sidecar.close(reason=reason, grace=grace)

    async def stop_all(self, timeout: float) -> None:  # noqa: ASYNC109 - a budget, not a cancel
        """Stop every sidecar in parallel, all done (reaped) within about ``timeout`` s."""
        entries = list(self._entries.values())
        self._entries.clear()
        for entry in entries:
            entry.cancel_retry()
        grace = min(self.settings.stop_grace, timeout / 2)
        closes = [
            asyncio.ensure_future(entry.sidecar.close(reason="shutdown", grace=grace))
            for entry in entries
        ]
        if not closes:
            return
        _done, pending = await asyncio.wait(closes, timeout=timeout)
        if pending:
            logger.warning("%d sidecars did not stop in %.1fs: SIGKILL", len(pending), timeout)
            for entry in entries:
                entry.sidecar.abandon()
            await asyncio.wait(pending, timeout=max(1.0, timeout / 2))
        for task in closes:
            if task.done() and not task.cancelled() and task.exception() is not None:
                logger.error("stopping a sidecar failed", exc_info=task.exception())

    async def reset(self, key: str) -> None:
        """Operator reset: forget past failures and, if it is failed, start it again now."""
        entry = self._entries.get(key)
        if entry is None:
            raise KeyError(key)
        entry.cancel_retry()
        entry.tracker.reset()
        if entry.sidecar.state in (SidecarState.FAILED, SidecarState.STOPPED):
            entry.sidecar.start()

    # -- observing -----------------------------------------------------------------------

    def get(self, key: str) -> Sidecar | None:
        entry = self._entries.get(key)
        return entry.sidecar if entry is not None else None

    def keys(self) -> list[str]:
        return list(self._entries)

    def sidecars(self) -> list[Sidecar]:
        return [entry.sidecar for entry in self._entries.values()]

    def statuses(self) -> list[SupervisedStatus]:
        now = self._clock()
        result = []
        for entry in self._entries.values():
            tracker = entry.tracker
            retry_in = None
            if entry.retry_task is not None and tracker.retry_at is not None:
                retry_in = max(0.0, tracker.retry_at - now)
            result.append(
                SupervisedStatus(
                    entry.sidecar.status(), tracker.failures(now), tracker.gave_up, retry_in
                )
            )
        return result

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` (synchronously, keep it quick) on every event; returns unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # -- policy --------------------------------------------------------------------------

    def _gate_for(self, tracker: RestartTracker, spec: SidecarSpec) -> StartGate:
        async def gate() -> None:
            if tracker.gave_up:
                raise SidecarFailedError(
                    f"{spec.model} (sidecar {spec.key}): start limit reached "
                    f"({self.policy.start_limit} failures within {self.policy.start_window:g}s), "
                    "not restarting until reset (`llamasup unload "
                    f"{spec.model}` resets it, as does a profile change to it); "
                    f"last failure: {tracker.last_failure}"
                )
            wait = tracker.wait_before_start(self._clock())
            if wait > 0:
                await asyncio.sleep(wait)

        return gate

    def _on_sidecar_event(self, event: SidecarEvent) -> None:
        entry = self._entries.get(event.key)
        decision = None
        if entry is not None and event.kind in _FAILURES and not self._handing_over:
            reason = event.status.last_error or str(event.kind)
            decision = entry.tracker.record_failure(self._clock(), self._jitter(), reason)
            entry.cancel_retry()
            if decision.give_up:
                logger.error(
                    "%s: giving up after %d failures: %s", event.key, decision.failures, reason
                )
            else:
                logger.warning("%s: %s; restarting in %.2fs", event.key, reason, decision.delay)
                entry.retry_task = asyncio.get_running_loop().create_task(
                    self._restart_later(entry, decision.delay), name=f"restart-{event.key}"
                )
        for listener in list(self._listeners):
            try:
                listener(SupervisorEvent(event.key, event.kind, event.status, decision, event))
            except Exception:
                logger.exception("supervisor listener failed on %s", event.kind)

    async def _restart_later(self, entry: _Entry, delay: float) -> None:
        await asyncio.sleep(delay)
        entry.retry_task = None
        if self._entries.get(entry.sidecar.key) is entry:
            with contextlib.suppress(Exception):
                entry.sidecar.start()


def _is_child(pid: int) -> bool:
    found = stat(pid)
    return found is not None and found.ppid == os.getpid()
