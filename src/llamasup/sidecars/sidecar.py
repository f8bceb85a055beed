"""``Sidecar``: the single owner of one llama-server (or ``command:``) process and its state.

Nothing outside changes a sidecar's state; callers ask: ``await ensure_ready()`` (start it,
or join the start already under way), ``await stop()``, ``status()``, ``log``. The sidecar
tells its listener (the supervisor) what happened through ``SidecarEvent``s, and consults an
optional *start gate* before each start, which is how the supervisor's restart policy
(backoff, start limit) applies to every start, whoever asked for it.

One object lives across several *runs* (process incarnations): a restart is a new run of the
same sidecar, so its log ring, restart count and last error carry over.

Everything here runs on the event-loop thread, which must live as long as the supervisor
(see ``process.py`` on PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from llamasup.errors import (
    FlagError,
    LlamasupError,
    SidecarError,
    SidecarFailedError,
    SidecarStartError,
)
from llamasup.flags.dialect import binary_flags, for_binary
from llamasup.runtime.binary_info import binary_info, remembered_binary_info
from llamasup.sidecars.adopted import AdoptedRun
from llamasup.sidecars.handover import ProcessHandle
from llamasup.sidecars.orphans import MARKER, marker_value
from llamasup.sidecars.ports import PortAllocator
from llamasup.sidecars.probes import BindFailed, wait_until_ready, watch_health
from llamasup.sidecars.process import spawn
from llamasup.sidecars.procfs import start_time
from llamasup.sidecars.proclog import LogFollower, LogLine, ProcessLog
from llamasup.sidecars.run import Run, bounded, retrieve
from llamasup.sidecars.types import (
    Drain,
    EventListener,
    SidecarEvent,
    SidecarEventKind,
    SidecarSettings,
    SidecarState,
    SidecarStatus,
    StartGate,
)
from llamasup.spec.childenv import child_environment
from llamasup.spec.resolve import SidecarSpec, missing_model_file

__all__ = [
    "Drain",
    "Sidecar",
    "SidecarEvent",
    "SidecarEventKind",
    "SidecarSettings",
    "SidecarState",
    "SidecarStatus",
    "StartGate",
]

logger = logging.getLogger(__name__)


class Sidecar:
    def __init__(
        self,
        spec: SidecarSpec,
        binary_path: str | Callable[[], str],
        settings: SidecarSettings,
        ports: PortAllocator,
        *,
        on_event: EventListener | None = None,
        start_gate: StartGate | None = None,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self.spec = spec
        self.key = spec.key
        self.binary_path = binary_path
        self.settings = settings
        self._ports = ports
        self._on_event = on_event
        self._start_gate = start_gate
        self._base_env = dict(os.environ if base_env is None else base_env)
        #: inherited by everything the sidecar starts: how a later llamasup finds leftovers
        self._marker = marker_value(settings.state_dir)
        self.log = ProcessLog(
            settings.log_dir / f"{spec.key}.log",
            ring_lines=settings.log_ring_lines,
            max_file_bytes=settings.log_file_max_bytes,
            backups=settings.log_file_backups,
        )
        self._state = SidecarState.STOPPED
        self._run: Run | None = None
        #: the current start's key as the header requests carry (``SidecarSettings.keyed``);
        #: made once per start, never logged or shown
        self._auth: tuple[tuple[bytes, bytes], ...] = ()
        self._start_task: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._monitor_task: asyncio.Task[None] | None = None
        self._closed = False
        self._starts = 0
        self._last_error: str | None = None
        self._exit_code: int | None = None
        self._started_at: float | None = None
        self._ready_at: float | None = None
        #: monotonic time at which the current run was marked ready (benchmarks use it)
        self.ready_monotonic: float | None = None
        #: when and from which llamasup pid the current run was taken over (planned restart)
        self._adopted: tuple[float, int] | None = None

    # -- asking --------------------------------------------------------------------------

    @property
    def state(self) -> SidecarState:
        return self._state

    @property
    def port(self) -> int | None:
        """The current run's port (also while starting); None without a process."""
        return self._run.port if self._run is not None else None

    @property
    def auth_headers(self) -> tuple[tuple[bytes, bytes], ...]:
        """What every request to the current process must carry (its key), or nothing."""
        return self._auth

    @property
    def base_url(self) -> str | None:
        """Where to forward requests while ready."""
        if self._state is not SidecarState.READY or self._run is None:
            return None
        return f"http://{self.settings.host}:{self._run.port}"

    def status(self) -> SidecarStatus:
        run = self._run
        return SidecarStatus(
            key=self.key,
            model=self.spec.model,
            state=self._state,
            pid=run.pid if run is not None and not run.exited.is_set() else None,
            port=run.port if run is not None else None,
            started_at=self._started_at,
            ready_at=self._ready_at,
            restarts=max(0, self._starts - 1),
            last_error=self._last_error,
            exit_code=self._exit_code,
            log_tail=self.log.tail(self.settings.log_tail_lines),
            adopted_at=None if self._adopted is None else self._adopted[0],
            adopted_from=None if self._adopted is None else self._adopted[1],
        )

    def recent_logs(self, limit: int | None = None) -> list[LogLine]:
        return self.log.recent(limit)

    def follow_logs(self, *, backlog: int = 0) -> LogFollower:
        """New output lines as they come (``async for``); call ``aclose()`` when done."""
        return self.log.follow(backlog=backlog)

    # -- starting ------------------------------------------------------------------------

    def start(self) -> None:
        """Begin starting unless running or starting already; returns at once."""
        if self._closed:
            raise SidecarError(f"sidecar {self.key} ({self.spec.model}) was removed")
        if self._state in (SidecarState.READY, SidecarState.STOPPING):
            return
        self._start_task_or_new()

    async def ensure_ready(self) -> None:
        """Return once ready, starting it if needed; every concurrent caller shares one start.

        Raises SidecarStartError / SidecarTimeoutError when this start fails,
        SidecarFailedError when the start gate refuses, SidecarError when stopped meanwhile.
        A caller that is cancelled does not cancel the shared start.
        """
        while True:
            if self._closed:
                raise SidecarError(f"sidecar {self.key} ({self.spec.model}) was removed")
            if self._state is SidecarState.READY:
                return
            if self._state is SidecarState.STOPPING:
                assert self._stop_task is not None  # see _begin_stop
                await asyncio.shield(self._stop_task)
                continue
            task = self._start_task_or_new()
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if task.cancelled() and (current is None or not current.cancelling()):
                    raise SidecarError(
                        f"sidecar {self.key} ({self.spec.model}) was stopped while starting"
                    ) from None
                raise
            return

    def _start_task_or_new(self) -> asyncio.Task[None]:
        if self._start_task is None or self._start_task.done():
            self._start_task = asyncio.create_task(
                self._start_sequence(), name=f"sidecar-start-{self.key}"
            )
            # failures reach callers through ensure_ready and the listener; don't warn twice
            self._start_task.add_done_callback(retrieve)
        return self._start_task

    async def _start_sequence(self) -> None:
        self._state = SidecarState.STARTING
        if self._start_gate is not None:
            try:
                await self._start_gate()
            except SidecarFailedError as exc:
                self._fail(str(exc), SidecarEventKind.REFUSED, exc)
                raise
        self._starts += 1
        avoid: set[int] = set()
        try:
            for _attempt in range(self.settings.bind_retries + 1):
                run = await self._launch(frozenset(avoid))
                try:
                    await wait_until_ready(
                        run,
                        model=self.spec.model,
                        health_path=self.spec.health_path,
                        settings=self.settings,
                        log=self.log,
                        # only llama-server prints the ready line this waits for
                        ready_line=self.spec.kind == "llama-server",
                    )
                except BindFailed:
                    self.log.note(f"port {run.port} is taken; retrying on another port")
                    avoid.add(run.port)
                    await self._end_run(run, grace=0.0)
                    continue
                self._mark_ready(run)
                return
            raise SidecarStartError(
                f"{self.spec.model}: could not bind a port after "
                f"{self.settings.bind_retries + 1} attempts (tried {sorted(avoid)})",
                self._exit_code,
                self.log.tail(self.settings.log_tail_lines),
            )
        except Exception as exc:
            # anything else (state dir unwritable, a bug) must still end in 'failed', not
            # leave the sidecar 'starting' forever
            error = (
                exc
                if isinstance(exc, SidecarError)
                else SidecarStartError(
                    f"{self.spec.model}: cannot start: {type(exc).__name__}: {exc}",
                    None,
                    self.log.tail(self.settings.log_tail_lines),
                )
            )
            missing = missing_model_file(self.spec)
            if isinstance(error, SidecarStartError) and error.exit_code is not None and missing:
                # llama-server only says "model loading error": name the cause when it is ours
                error = SidecarStartError(f"{error} ({missing})", error.exit_code, error.log_tail)
            if self._run is not None:
                await self._end_run(self._run, grace=0.0)
            self._fail(str(error), SidecarEventKind.START_FAILED, error)
            if error is exc:
                raise
            raise error from exc
        except asyncio.CancelledError:
            # stop() cancels us and ends the run itself; anyone else (loop shutdown) gets a
            # SIGKILL so no process outlives its owner
            if self._state is not SidecarState.STOPPING and self._run is not None:
                self._run.abandon()
            raise

    async def _args_for(self, binary: str) -> list[str] | None:
        """The spec's args as this binary spells them (an older build has other names for
        some flags); None: as they are. Asks the binary once (cached), off the event loop;
        what this process knows already is taken on it (a thread hop costs a cold start
        ~1 ms on a busy host)."""
        if self.spec.kind != "llama-server":
            return None
        known, info = remembered_binary_info(Path(binary))
        if not known:
            info = await asyncio.to_thread(binary_info, Path(binary))
        if info is None:
            return None
        return for_binary(self.spec.args, binary_flags(info))

    async def _launch(self, avoid: frozenset[int]) -> Run:
        try:
            # a resolver is asked on every launch: a binary installed later is picked up
            binary = self.binary_path if isinstance(self.binary_path, str) else self.binary_path()
        except LlamasupError as exc:
            raise SidecarStartError(f"{self.spec.model}: {exc}", None, ()) from exc
        self.settings.config_home.mkdir(parents=True, exist_ok=True)
        env = child_environment(self._base_env, self.spec.env_map, self.settings.config_home)
        env[MARKER] = self._marker
        self._auth = ()
        if self.settings.keyed and self.spec.kind == "llama-server":
            # one per start: a key seen by whatever took this port after a crash opens nothing
            key = secrets.token_urlsafe(32)
            env["LLAMA_API_KEY"] = key  # not argv: `ps` shows argv to every user
            self._auth = ((b"authorization", b"Bearer " + key.encode()),)
        try:
            port = self._ports.acquire(avoid=avoid)
        except OSError as exc:
            raise SidecarStartError(f"{self.spec.model}: {exc}", None, ()) from exc
        try:
            args = await self._args_for(binary)
        except FlagError as exc:
            self._ports.release(port)
            raise SidecarStartError(f"{self.spec.model}: {exc}", None, ()) from exc
        argv = self.spec.command_line(binary, self.settings.host, port, args)
        self._exit_code = None
        run = Run(port, self.log, lambda pid: f"started pid {pid} on port {port}: {' '.join(argv)}")
        try:
            await spawn(argv, env, lambda: run)
        except OSError as exc:
            self._ports.release(port)
            self.log.note(f"cannot execute {argv[0]}: {exc}")
            raise SidecarStartError(
                f"{self.spec.model}: cannot execute {argv[0]!r}: {exc}",
                None,
                self.log.tail(self.settings.log_tail_lines),
            ) from exc
        except BaseException:
            # cancelled mid-spawn: asyncio has already killed the child it made
            self._ports.release(port)
            raise
        self._run = run
        self._started_at = time.time()
        self._ready_at = None
        self.ready_monotonic = None
        self._adopted = None
        return run

    def _mark_ready(self, run: Run) -> None:
        run.settled()
        self._state = SidecarState.READY
        self.ready_monotonic = time.monotonic()
        self._ready_at = time.time()
        self._last_error = None
        self.log.note(f"ready on port {run.port}")
        self._monitor_task = asyncio.create_task(
            self._monitor(run), name=f"sidecar-monitor-{self.key}"
        )
        self._monitor_task.add_done_callback(retrieve)
        self._emit(SidecarEventKind.READY)

    # -- while ready ---------------------------------------------------------------------

    async def _monitor(self, run: Run) -> None:
        """While ready: a crash fails the sidecar at once; unhealthiness stops it, then fails."""
        failed_checks = await watch_health(
            run, health_path=self.spec.health_path, settings=self.settings
        )
        self._monitor_task = None
        if failed_checks:
            message = f"{self.spec.model}: unhealthy: {failed_checks} health checks failed in a row"
            self._begin_stop(message, self.settings.stop_grace, None, SidecarEventKind.UNHEALTHY)
            return
        self._exit_code = run.returncode
        await self._end_run(run, grace=0.0)
        self._fail(
            f"{self.spec.model}: exited unexpectedly with code {run.returncode}",
            SidecarEventKind.EXITED,
            SidecarStartError(
                f"{self.spec.model}: exited with code {run.returncode}; "
                f"last output: {self.log.last_child_line() or '(none)'}",
                run.returncode,
                self.log.tail(self.settings.log_tail_lines),
            ),
        )

    # -- a planned restart: handing over, taking over ------------------------------------

    def detach(self) -> ProcessHandle | None:
        """For a hand-over to the next llamasup image: if ready, stop watching the process and
        reading its output, and describe it; None (nothing handed over) otherwise.

        The process keeps running and serving. Call right before ``execve``; if that fails,
        ``resume`` puts things back.
        """
        run = self._run
        if self._state is not SidecarState.READY or run is None or run.exited.is_set():
            return None
        started = start_time(run.pid)
        if started is None:
            return None
        if self._monitor_task is not None:
            self._monitor_task.cancel()
            self._monitor_task = None
        pipes = run.detach()
        partial = {1: self.log.take_partial("stdout"), 2: self.log.take_partial("stderr")}
        auth_key = None
        for name, value in self._auth:
            if name == b"authorization" and value.startswith(b"Bearer "):
                auth_key = value[len(b"Bearer ") :].decode()
        self.log.note(f"handing pid {run.pid} over to the next llamasup")
        return ProcessHandle(
            pid=run.pid,
            start_time=started,
            port=run.port,
            pipes=pipes,
            partial={fd: data for fd, data in partial.items() if data},
            auth_key=auth_key,
            started_at=self._started_at,
            ready_at=self._ready_at,
            restarts=max(0, self._starts - 1),
        )

    def resume(self) -> None:
        """The hand-over did not happen: read the output and watch the process again."""
        run = self._run
        if run is None or self._state is not SidecarState.READY:
            return
        run.reattach()
        self.log.note("hand-over cancelled: this llamasup keeps the process")
        if self._monitor_task is None:
            self._monitor_task = asyncio.create_task(
                self._monitor(run), name=f"sidecar-monitor-{self.key}"
            )
            self._monitor_task.add_done_callback(retrieve)

    async def adopt(self, handle: ProcessHandle, *, adopted_from: int) -> None:
        """Take over a ready process the previous llamasup handed over (``inspect`` said
        ``adopt``): from now on it is this sidecar's run, as if it had started it."""
        if self._state is not SidecarState.STOPPED or self._run is not None:
            raise SidecarError(f"sidecar {self.key} ({self.spec.model}) already has a process")
        self.log.recall()
        run = await AdoptedRun.attach(
            handle.port,
            self.log,
            handle.pid,
            handle.pipes,
            {fd: data for fd, data in handle.partial.items() if fd in (1, 2)},
        )
        run.settled()
        self._ports.hold(handle.port)
        self._run = run
        self._auth = handle.auth_headers
        self._starts = handle.restarts + 1
        self._exit_code = None
        self._started_at = handle.started_at
        self._ready_at = handle.ready_at
        self._adopted = (time.time(), adopted_from)
        self.log.note(
            f"adopted pid {handle.pid} on port {handle.port} from llamasup pid {adopted_from}"
        )
        self._state = SidecarState.READY
        self.ready_monotonic = time.monotonic()
        self._last_error = None
        self._monitor_task = asyncio.create_task(
            self._monitor(run), name=f"sidecar-monitor-{self.key}"
        )
        self._monitor_task.add_done_callback(retrieve)
        self._emit(SidecarEventKind.ADOPTED)

    # -- stopping ------------------------------------------------------------------------

    async def stop(
        self,
        *,
        reason: str = "stop requested",
        grace: float | None = None,
        drain: Drain | None = None,
    ) -> None:
        """Stop the process (also while loading); idempotent, concurrent calls share one stop.

        ``drain``, if given, is awaited first (bounded by ``settings.drain_timeout``) while the
        state already says ``stopping``, so the caller can let its in-flight requests finish
        before the signal. Then SIGTERM to the process group, ``grace`` seconds (default
        ``settings.stop_grace``), SIGKILL to the group; the child is always reaped.
        """
        if self._stop_task is None or self._stop_task.done():
            idle = self._run is None and (self._start_task is None or self._start_task.done())
            if idle and self._monitor_task is None:
                if self._state is SidecarState.FAILED:
                    self._state = SidecarState.STOPPED
                return
            self._begin_stop(reason, self.settings.stop_grace if grace is None else grace, drain)
        assert self._stop_task is not None
        await asyncio.shield(self._stop_task)
        if self._state is SidecarState.FAILED and self._run is None:
            self._state = SidecarState.STOPPED  # it was asked to stop, whatever ended it first

    def _begin_stop(
        self,
        reason: str,
        grace: float,
        drain: Drain | None,
        failure: SidecarEventKind | None = None,
    ) -> None:
        """The one way into ``stopping``: whoever finds that state can await ``_stop_task``."""
        self._state = SidecarState.STOPPING
        self._stop_task = asyncio.create_task(
            self._stop_sequence(reason, grace, drain, failure), name=f"sidecar-stop-{self.key}"
        )
        self._stop_task.add_done_callback(retrieve)

    async def close(self, *, reason: str = "removed", grace: float | None = None) -> None:
        """Stop for good: later ``ensure_ready`` calls raise. Used when a spec is retired."""
        self._closed = True
        await self.stop(reason=reason, grace=grace)
        self.log.close()

    def abandon(self) -> None:
        """Emergency, synchronous: SIGKILL the process group now without waiting.

        For a shutdown that ran out of time; the child watcher still reaps the child.
        """
        if self._run is not None:
            self._run.abandon()

    async def _stop_sequence(
        self, reason: str, grace: float, drain: Drain | None, failure: SidecarEventKind | None
    ) -> None:
        self.log.note(f"stopping: {reason}")
        if drain is not None and not await bounded(drain(), self.settings.drain_timeout):
            self.log.note(f"drain did not finish in {self.settings.drain_timeout:g}s")
        for task in (self._start_task, self._monitor_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self._monitor_task = None
        if self._run is not None:
            await self._end_run(self._run, grace=grace)
        if failure is not None:
            self._fail(reason, failure, None)
            return
        self._state = SidecarState.STOPPED
        self._emit(SidecarEventKind.STOPPED)

    async def _end_run(self, run: Run, *, grace: float) -> None:
        """Make sure ``run`` is over: SIGTERM, grace, SIGKILL, reaped; its port released."""
        if not run.exited.is_set():
            await run.terminate(grace)
        if run.returncode is not None:
            self._exit_code = run.returncode
        self.log.note(f"pid {run.pid} exited with code {run.returncode}")
        self._ports.release(run.port)
        if self._run is run:
            self._run = None

    # -- bookkeeping ---------------------------------------------------------------------

    def _fail(self, message: str, kind: SidecarEventKind, error: SidecarError | None) -> None:
        self._state = SidecarState.FAILED
        self._last_error = message
        self._monitor_task = None
        self.log.note(f"failed: {message}")
        self._emit(kind, error)

    def _emit(self, kind: SidecarEventKind, error: SidecarError | None = None) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(SidecarEvent(self.key, kind, self.status(), error))
        except Exception:
            logger.exception("sidecar %s: event listener failed on %s", self.key, kind)
